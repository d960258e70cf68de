"""Samples of valid inputs and registry entries: the affine map (op and layer)."""
from __future__ import annotations

from ..._checks import check_ndim
from ...nn.linear import Linear
from ...ops.linear import linear_backward, linear_forward
from ..registry import OpSpec, Sample, from_layer, from_pair
from ..torch_twins import torch_linear


def _samples(rng, dtype):
    return [
        Sample((rng.standard_normal((5, 7)).astype(dtype), rng.standard_normal((4, 7)).astype(dtype),
                rng.standard_normal(4).astype(dtype)), label="2-D"),
        Sample((rng.standard_normal((2, 3, 6)).astype(dtype), rng.standard_normal((5, 6)).astype(dtype),
                rng.standard_normal(5).astype(dtype)), label="3-D batch"),
    ]


def _stress(rng, dtype):
    """Batches of one (2-D and 3-D)."""
    return [
        Sample((rng.standard_normal((1, 7)).astype(dtype), rng.standard_normal((4, 7)).astype(dtype),
                rng.standard_normal(4).astype(dtype)), label="stress: batch of one"),
        Sample((rng.standard_normal((1, 1, 6)).astype(dtype), rng.standard_normal((5, 6)).astype(dtype),
                rng.standard_normal(5).astype(dtype)), label="stress: 3-D batch of one"),
    ]


def _samples_nobias(rng, dtype):
    return [Sample((rng.standard_normal((6, 3)).astype(dtype), rng.standard_normal((8, 3)).astype(dtype)))]


def _backward_nobias(dy, cache):
    return linear_backward(dy, cache)[:2]


def _build_linear(w, b, **kw):
    check_ndim("nn.Linear", "weight", w, (2,))
    layer = Linear(w.shape[1], w.shape[0], dtype=w.dtype, rng=0)
    layer.weight.data, layer.bias.data = w, b
    return layer, [layer.weight, layer.bias]


OPS = [
    OpSpec("linear", from_pair(linear_forward, linear_backward), _samples, torch=torch_linear, stress=_stress,
           doc="y = x W^T + b", complex_step=True),
    OpSpec("linear_nobias", from_pair(linear_forward, _backward_nobias), _samples_nobias, torch=torch_linear,
           doc="y = x W^T", complex_step=True),
]

LAYERS = [
    OpSpec("nn.Linear", from_layer(_build_linear), _samples, torch=torch_linear, kind="layer", stress=_stress),
]
