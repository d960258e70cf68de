"""Samples of valid inputs and registry entries: element-wise activations and dropout (ops and layers)."""
from __future__ import annotations

import numpy as np

from ...nn.activation import GELU, Dropout, LeakyReLU, ReLU, Sigmoid, Tanh
from ...ops.activation import (
    dropout_backward, dropout_forward, gelu_backward, gelu_forward, leaky_relu_backward, leaky_relu_forward,
    relu_backward, relu_forward, sigmoid_backward, sigmoid_forward, tanh_backward, tanh_forward,
)
from ..registry import OpSpec, Sample, from_layer, from_pair
from ..torch_twins import torch_gelu, torch_leaky_relu, torch_relu, torch_sigmoid, torch_tanh


def _away_from_zero(rng, shape, dtype, low=0.05):
    """Standard normal draws with ``|x| >= low`` (off ReLU's kink by more than the checker's 2e-3 step)."""
    x = rng.standard_normal(shape)
    return (np.where(x >= 0, 1.0, -1.0) * np.maximum(np.abs(x), low)).astype(dtype)


def _samples_kink(rng, dtype):
    return [
        Sample((_away_from_zero(rng, (4, 9), dtype),), label="2-D"),
        Sample((_away_from_zero(rng, (2, 3, 4, 5), dtype),), label="4-D"),
    ]


def _samples_smooth(rng, dtype):
    return [
        Sample(((2.0 * rng.standard_normal((5, 8))).astype(dtype),), label="2-D"),
        Sample((rng.standard_normal((2, 3, 4, 4)).astype(dtype),), label="4-D"),
    ]


def _samples_leaky(rng, dtype):
    return [
        Sample((_away_from_zero(rng, (4, 9), dtype),), label="default slope"),
        Sample((_away_from_zero(rng, (2, 3, 5), dtype),), {"negative_slope": 0.2}, label="slope 0.2"),
    ]


def _samples_gelu(rng, dtype):
    return [
        Sample(((2.0 * rng.standard_normal((5, 8))).astype(dtype),), label="exact"),
        Sample((rng.standard_normal((2, 3, 4, 4)).astype(dtype),), {"approximate": "none"}, label="exact 4-D"),
    ]


def _samples_gelu_tanh(rng, dtype):
    return [
        Sample(((2.0 * rng.standard_normal((5, 8))).astype(dtype),), {"approximate": "tanh"}, label="tanh"),
    ]


def _samples_gelu_both(rng, dtype):
    return _samples_gelu(rng, dtype) + _samples_gelu_tanh(rng, dtype)


def _samples_dropout(rng, dtype):
    return [
        Sample((rng.standard_normal((6, 10)).astype(dtype),), {"p": 0.3, "rng": 1234}, label="p=0.3"),
        Sample((rng.standard_normal((2, 3, 4, 4)).astype(dtype),), {"p": 0.5, "rng": 7}, label="p=0.5 4-D"),
        Sample((rng.standard_normal((4, 5)).astype(dtype),), {"p": 0.5, "rng": 7, "training": False},
               label="eval"),
    ]


# Stress samples (OpSpec.stress): the kinks themselves (ReLU and LeakyReLU at exactly 0, where PyTorch's
# convention -- derivative 0, resp. negative_slope -- is what the twin checks; finite differences cannot,
# tests/test_stress_samples.py skips them), saturation (tanh, sigmoid, GELU far out, where a naive formula
# overflows an intermediate: exp(-x) of sigmoid, x³ of GELU's tanh form, or underflows Φ), tiny and huge
# scales, a batch of one and extreme aspect ratios.
def _with_zeros(rng, shape, dtype):
    """Draws off the kink with every third entry exactly 0."""
    x = _away_from_zero(rng, shape, np.float64)
    x.reshape(-1)[::3] = 0.0
    return x.astype(dtype)


def _shapes_stress(rng, dtype, draw):
    return [Sample((draw(rng, (1, 7)),), label="stress: batch of one"),
            Sample((draw(rng, (2, 300)),), label="stress: aspect 2x300"),
            Sample((draw(rng, (200, 1)),), label="stress: aspect 200x1")]


def _kink_stress(kwargs):
    def samples(rng, dtype):
        draw = lambda r, shape: _away_from_zero(r, shape, dtype)     # noqa: E731
        out = [Sample((_with_zeros(rng, (4, 9), dtype),), dict(kwargs), "stress: ties at the kink x = 0")]
        for scale in (1e-30, 1e30):
            out.append(Sample(((scale * _away_from_zero(rng, (3, 5), np.float64)).astype(dtype),), dict(kwargs),
                              f"stress: scale {scale:g}"))
        return out + [Sample(s.inputs, dict(kwargs), s.label) for s in _shapes_stress(rng, dtype, draw)]
    return samples


def _saturating_stress(kwargs, far=(20.0, 40.0, 1e3)):
    """Saturated inputs ``±far`` (each sample mixes signs), the scales 1e-30 and 1e+30, shapes."""
    def samples(rng, dtype):
        draw = lambda r, shape: r.standard_normal(shape).astype(dtype)     # noqa: E731
        out = []
        for v in far:
            x = v * np.where(rng.standard_normal((3, 6)) >= 0, 1.0, -1.0) + 0.5 * rng.standard_normal((3, 6))
            out.append(Sample((x.astype(dtype),), dict(kwargs), f"stress: saturated |x| ~ {v:g}"))
        for scale in (1e-30, 1e30):
            out.append(Sample(((scale * rng.standard_normal((3, 5))).astype(dtype),), dict(kwargs),
                              f"stress: scale {scale:g}"))
        return out + [Sample(s.inputs, dict(kwargs), s.label) for s in _shapes_stress(rng, dtype, draw)]
    return samples


def _builder(cls):
    def build(**kwargs):
        return cls(**kwargs), []
    return build


def _build_dropout(p=0.5, rng=0, training=True):
    layer = Dropout(p, rng=rng)        # a fresh Generator from the int seed: the same mask on every call
    layer.train(training)
    return layer, []


OPS = [
    OpSpec("relu", from_pair(relu_forward, relu_backward), _samples_kink, torch=torch_relu,
           doc="y = max(x, 0)", complex_step=True, stress=_kink_stress({})),
    OpSpec("leaky_relu", from_pair(leaky_relu_forward, leaky_relu_backward), _samples_leaky,
           torch=torch_leaky_relu, doc="y = x if x > 0 else negative_slope * x", complex_step=True,
           stress=_kink_stress({"negative_slope": 0.2})),
    OpSpec("tanh", from_pair(tanh_forward, tanh_backward), _samples_smooth, torch=torch_tanh,
           doc="y = tanh(x)", complex_step=True, stress=_saturating_stress({})),
    OpSpec("sigmoid", from_pair(sigmoid_forward, sigmoid_backward), _samples_smooth,
           torch=torch_sigmoid, doc="y = 1 / (1 + exp(-x))",
           stress=_saturating_stress({})),
    OpSpec("gelu", from_pair(gelu_forward, gelu_backward), _samples_gelu, torch=torch_gelu,
           doc="y = x Phi(x) (erf form)", complex_step=True, stress=_saturating_stress({})),
    OpSpec("gelu_tanh", from_pair(gelu_forward, gelu_backward), _samples_gelu_tanh, torch=torch_gelu,
           doc="y = x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2", complex_step=True,
           stress=_saturating_stress({"approximate": "tanh"})),
    OpSpec("dropout", from_pair(dropout_forward, dropout_backward), _samples_dropout, torch=None,
           doc="inverted dropout; the registry's samples fix the mask with an int seed", complex_step=True),
]

LAYERS = [
    OpSpec("nn.ReLU", from_layer(_builder(ReLU)), _samples_kink, torch=torch_relu, kind="layer"),
    OpSpec("nn.LeakyReLU", from_layer(_builder(LeakyReLU)), _samples_leaky, torch=torch_leaky_relu,
           kind="layer"),
    OpSpec("nn.Tanh", from_layer(_builder(Tanh)), _samples_smooth, torch=torch_tanh, kind="layer"),
    OpSpec("nn.Sigmoid", from_layer(_builder(Sigmoid)), _samples_smooth, torch=torch_sigmoid, kind="layer"),
    OpSpec("nn.GELU", from_layer(_builder(GELU)), _samples_gelu_both, torch=torch_gelu, kind="layer"),
    OpSpec("nn.Dropout", from_layer(_build_dropout), _samples_dropout, torch=None, kind="layer",
           doc="training mode with a fixed seed per call, and eval mode"),
]
