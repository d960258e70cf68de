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


# ---------------------------------------------------------------------------------------------------------
# Stress samples (OpSpec.stress): a batch of one, extreme aspect ratios, kernels that barely fit, tiny and
# huge input scales (float32 keeps them finite: |y| <= 1e30 · Σ|w| is far below 3.4e38, 1e-30 is normal).

def _stress(rng, dtype):
    out = [
        _conv_case(rng, dtype, (1, 3, 5, 5), (4, 3, 3, 3), padding=1, label="stress: batch of one"),
        _conv_case(rng, dtype, (2, 2, 1, 64), (3, 2, 1, 5), stride=(1, 3), label="stress: aspect 1x64"),
        _conv_case(rng, dtype, (2, 2, 64, 1), (3, 2, 4, 1), dilation=(5, 1), label="stress: aspect 64x1"),
        _conv_case(rng, dtype, (1, 2, 1, 16), (3, 2, 3, 3), padding=1, label="stress: 1-pixel high, pad 1"),
        # the last window ends on the last row and column: stride 4 over 7 = 3 + 4
        _conv_case(rng, dtype, (1, 2, 7, 7), (3, 2, 3, 3), stride=4, label="stress: stride 4, kernel just fits"),
        # effective kernel 9x7 over 10x8 with stride 2: one output, the last row and column unused
        _conv_case(rng, dtype, (2, 2, 10, 8), (2, 2, 3, 3), stride=2, dilation=(4, 3),
                   label="stress: dilation (4, 3), kernel just fits"),
        _conv_case(rng, dtype, (2, 3, 4, 5), (2, 3, 4, 5), label="stress: kernel = image"),
    ]
    for scale in (1e-30, 1e30):
        x, w = rng.standard_normal((2, 2, 5, 4)), rng.standard_normal((3, 2, 3, 2))
        out.append(Sample(((scale * x).astype(dtype), w.astype(dtype)), {"padding": 1},
                          f"stress: scale {scale:g}"))
    return out


def _build_conv(w, b=None, *, stride=1, padding=0, dilation=1, groups=1):
    check_ndim("nn.Conv2d", "weight", w, (4,))
    layer = Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride, padding, dilation, groups,
                   bias=b is not None, dtype=w.dtype, rng=0)
    layer.weight.data = w
    if b is not None:
        layer.bias.data = b
    return layer, [p for p in (layer.weight, layer.bias) if p is not None]


OPS = [
    OpSpec("conv2d", _conv_apply, _samples, torch=torch_conv2d, stress=_stress,
           doc="PyTorch F.conv2d (im2col, one GEMM per group)", complex_step=True),
    OpSpec("conv2d_naive", _conv_naive_apply, _samples_naive, torch=torch_conv2d,
           doc="loop reference of conv2d", complex_step=True),
]

LAYERS = [
    OpSpec("nn.Conv2d", from_layer(_build_conv), _samples, torch=torch_conv2d, kind="layer", stress=_stress),
]
