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
           doc="y = max(x, 0)", complex_step=True),
    OpSpec("leaky_relu", from_pair(leaky_relu_forward, leaky_relu_backward), _samples_leaky,
           torch=torch_leaky_relu, doc="y = x if x > 0 else negative_slope * x", complex_step=True),
    OpSpec("tanh", from_pair(tanh_forward, tanh_backward), _samples_smooth, torch=torch_tanh,
           doc="y = tanh(x)", complex_step=True),
    OpSpec("sigmoid", from_pair(sigmoid_forward, sigmoid_backward), _samples_smooth,
           torch=torch_sigmoid, doc="y = 1 / (1 + exp(-x))"),
    OpSpec("gelu", from_pair(gelu_forward, gelu_backward), _samples_gelu, torch=torch_gelu,
           doc="y = x Phi(x) (erf form)", complex_step=True),
    OpSpec("gelu_tanh", from_pair(gelu_forward, gelu_backward), _samples_gelu_tanh, torch=torch_gelu,
           doc="y = x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2", complex_step=True),
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
