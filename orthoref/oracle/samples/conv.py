"""Samples of valid inputs and registry entries: convolution (the fast kernel, its loop reference and the
layer)."""
from __future__ import annotations

from ..._checks import check_ndim
from ...nn.conv import Conv2d
from ...ops.conv import conv2d_backward, conv2d_forward, conv2d_naive, conv2d_naive_backward
from ..registry import OpSpec, Sample, from_layer
from ..torch_twins import torch_conv2d


def _conv_apply(x, w, b=None, **kwargs):
    y, cache = conv2d_forward(x, w, b, **kwargs)

    def vjp(cotangents):
        dx, dw, db = conv2d_backward(cotangents[0], cache)
        return (dx, dw) if b is None else (dx, dw, db)
    return (y,), vjp


def _conv_naive_apply(x, w, b=None, **kwargs):
    y = conv2d_naive(x, w, b, **kwargs)

    def vjp(cotangents):
        dx, dw, db = conv2d_naive_backward(cotangents[0], x, w, b, **kwargs)
        return (dx, dw) if b is None else (dx, dw, db)
    return (y,), vjp


def _conv_case(rng, dtype, x_shape, w_shape, bias=True, label="", **kwargs):
    arrays = [rng.standard_normal(x_shape), rng.standard_normal(w_shape)]
    if bias:
        arrays.append(rng.standard_normal(w_shape[0]))
    return Sample(tuple(a.astype(dtype) for a in arrays), kwargs, label)


def _samples(rng, dtype):
    return [
        _conv_case(rng, dtype, (2, 2, 5, 5), (3, 2, 3, 3), label="3x3"),
        _conv_case(rng, dtype, (2, 2, 6, 5), (3, 2, 3, 3), stride=2, padding=1, label="stride 2 pad 1"),
        _conv_case(rng, dtype, (1, 2, 7, 6), (2, 2, 2, 3), dilation=2, padding=(2, 1), label="dilation 2"),
        _conv_case(rng, dtype, (1, 4, 5, 5), (4, 2, 3, 2), groups=2, stride=(1, 2), label="groups 2"),
        _conv_case(rng, dtype, (2, 3, 4, 5), (2, 3, 2, 4), bias=False, padding="same", label="same, no bias"),
        _conv_case(rng, dtype, (2, 3, 4, 4), (4, 3, 1, 1), padding="valid", label="1x1"),
        _conv_case(rng, dtype, (3, 5, 5), (2, 3, 3, 3), padding=1, label="unbatched"),
    ]


def _samples_naive(rng, dtype):
    return [
        _conv_case(rng, dtype, (1, 2, 5, 4), (2, 2, 3, 2), stride=(2, 1), padding=(1, 0), label="stride pad"),
        _conv_case(rng, dtype, (1, 4, 5, 5), (2, 2, 2, 2), bias=False, groups=2, dilation=2, label="groups"),
    ]


def _build_conv(w, b=None, *, stride=1, padding=0, dilation=1, groups=1):
    check_ndim("nn.Conv2d", "weight", w, (4,))
    layer = Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride, padding, dilation, groups,
                   bias=b is not None, dtype=w.dtype, rng=0)
    layer.weight.data = w
    if b is not None:
        layer.bias.data = b
    return layer, [p for p in (layer.weight, layer.bias) if p is not None]


OPS = [
    OpSpec("conv2d", _conv_apply, _samples, torch=torch_conv2d,
           doc="PyTorch F.conv2d (im2col, one GEMM per group)", complex_step=True),
    OpSpec("conv2d_naive", _conv_naive_apply, _samples_naive, torch=torch_conv2d,
           doc="loop reference of conv2d", complex_step=True),
]

LAYERS = [
    OpSpec("nn.Conv2d", from_layer(_build_conv), _samples, torch=torch_conv2d, kind="layer"),
]
