"""Samples of valid inputs and registry entries: orthogonally parametrized layers (nn.orthogonal).

Finite differences in float64 and the PyTorch twins (the formula of ``parametrizations.orthogonal``) of
:mod:`orthoref.oracle.torch_twins`."""
from __future__ import annotations

import numpy as np

from ..._checks import check_ndim
from ...nn.orthogonal import OrthogonalConv2d, OrthogonalLinear
from ...ortho._linalg import haar
from ..torch_twins import torch_orthogonal_conv2d, torch_orthogonal_linear
from ..registry import OpSpec, Sample, from_layer


def _build(cls, raw, bias, base, map, steps, coefficients, eps, conv):
    check_ndim(f"nn.{cls.__name__}", "raw", raw, (4,) if conv and conv.get("view") == "slices" else (2,))
    if cls is OrthogonalLinear:
        layer = cls(raw.shape[1], raw.shape[0], bias=bias is not None, map=map,
                    trivialization=base is not None, steps=steps, coefficients=coefficients, eps=eps,
                    rng=0, dtype=raw.dtype)
    else:
        layer = cls(conv["in_channels"], raw.shape[0], conv["kernel_size"], conv.get("stride", 1),
                    conv.get("padding", 0), bias=bias is not None, map=map, trivialization=base is not None,
                    steps=steps, coefficients=coefficients, eps=eps, rng=0, dtype=raw.dtype,
                    view=conv.get("view", "matrix"))
    layer.raw.data = raw
    if base is not None:
        layer.base = base
    if bias is not None:
        layer.bias.data = bias
    return layer, [p for p in (layer.raw, layer.bias) if p is not None]


def _build_linear(raw, bias=None, *, map="matrix_exp", base=None, steps=5, coefficients="jordan", eps=1e-7):
    return _build(OrthogonalLinear, raw, bias, base, map, steps, coefficients, eps, None)


def _build_conv(raw, bias=None, *, map="matrix_exp", base=None, steps=5, coefficients="jordan", eps=1e-7,
                in_channels=1, kernel_size=1, stride=1, padding=0, view="matrix"):
    conv = dict(in_channels=in_channels, kernel_size=kernel_size, stride=stride, padding=padding, view=view)
    return _build(OrthogonalConv2d, raw, bias, base, map, steps, coefficients, eps, conv)


def sample_raw(rng, out, m, map, dtype):
    """A raw parameter kept off the kinks: Householder diagonal at ±1.5 (``trunc`` = ±1, away from the
    integer jumps of PyTorch's ``.int()``); polar/NS inputs well conditioned."""
    X = rng.standard_normal((max(out, m), min(out, m)))
    if map in ("matrix_exp", "cayley", "householder"):
        X *= 0.5
    if map == "householder":
        k = X.shape[1]
        X[np.arange(k), np.arange(k)] = 1.5 * rng.choice([-1.0, 1.0], size=k)
    if map in ("polar", "newton_schulz"):
        U, _, Vt = np.linalg.svd(X, full_matrices=False)
        X = (U * rng.uniform(0.6, 1.0, size=X.shape[1])) @ Vt
        if map == "newton_schulz":
            X *= 3.0                        # NS normalizes by ‖X‖_F: a larger scale keeps the FD step small
    return (X.T if out < m else X).astype(dtype)


# (map, out, in, trivialization): wide and tall, with and without the base.
_LINEAR_CASES = (("matrix_exp", 3, 4, True), ("cayley", 4, 3, True), ("householder", 3, 4, True),
                 ("polar", 4, 3, False), ("newton_schulz", 3, 4, True))


def _linear_samples(rng, dtype):
    out = []
    for k, (map, o, i, triv) in enumerate(_LINEAR_CASES):
        kw = {"map": map, "base": haar(rng, max(o, i), np.float64).astype(dtype) if triv else None}
        if map == "newton_schulz":
            kw["steps"] = 3
        inputs = (rng.standard_normal((2, i)).astype(dtype), sample_raw(rng, o, i, map, dtype))
        if k != 1:                                              # one case without bias
            inputs += (rng.standard_normal(o).astype(dtype),)
        out.append(Sample(inputs, kw, label=f"{map} {o}x{i}{' triv' if triv else ''}"))
    return out


_CONV_CASES = (("matrix_exp", 2, 1, 2, 1, 0, True), ("householder", 3, 2, 2, 1, 1, False),
               ("polar", 2, 2, 2, 2, 1, True))


def _conv_samples(rng, dtype):
    out = []
    for map, o, c, kk, stride, pad, triv in _CONV_CASES:
        m = c * kk * kk
        kw = {"map": map, "base": haar(rng, max(o, m), np.float64).astype(dtype) if triv else None,
              "in_channels": c, "kernel_size": kk, "stride": stride, "padding": pad}
        inputs = (rng.standard_normal((2, c, 4, 4)).astype(dtype), sample_raw(rng, o, m, map, dtype),
                  rng.standard_normal(o).astype(dtype))
        out.append(Sample(inputs, kw, label=f"{map} {o}x{m}"))
    return out


# (map, out, in, kh, kw, trivialization): the slice view, kh x kw slices wide, tall and square.
_SLICE_CASES = (("matrix_exp", 2, 2, 3, 2, True), ("householder", 3, 1, 2, 3, False),
                ("polar", 2, 2, 2, 2, True), ("newton_schulz", 2, 1, 3, 2, False))


def _slice_samples(rng, dtype):
    out = []
    for map, o, c, kh, kw, triv in _SLICE_CASES:
        n = max(kh, kw)
        kwargs = {"map": map, "in_channels": c, "kernel_size": (kh, kw), "padding": 1, "view": "slices",
                  "base": (np.stack([haar(rng, n, np.float64) for _ in range(o * c)]).reshape(o, c, n, n)
                           .astype(dtype) if triv else None)}
        if map == "newton_schulz":
            kwargs["steps"] = 3
        raw = np.stack([sample_raw(rng, kh, kw, map, np.float64) for _ in range(o * c)]).reshape(o, c, kh, kw)
        inputs = (rng.standard_normal((2, c, 4, 4)).astype(dtype), raw.astype(dtype),
                  rng.standard_normal(o).astype(dtype))
        out.append(Sample(inputs, kwargs, label=f"{map} {o}x{c}x{kh}x{kw} slices{' triv' if triv else ''}"))
    return out


OPS: list = []
LAYERS = [
    OpSpec("nn.OrthogonalLinear", from_layer(_build_linear), _linear_samples, torch=torch_orthogonal_linear,
           kind="layer", rtol=1e-8,
           doc="Linear with W = base @ map(raw) orthogonal (torch parametrizations.orthogonal)"),
    OpSpec("nn.OrthogonalConv2d", from_layer(_build_conv), _conv_samples, torch=torch_orthogonal_conv2d,
           kind="layer", rtol=1e-8, doc="Conv2d whose flattened kernel is orthogonal"),
    OpSpec("nn.OrthogonalConv2d_slices", from_layer(_build_conv), _slice_samples, torch=torch_orthogonal_conv2d,
           kind="layer", rtol=1e-8,
           doc="Conv2d whose every kh x kw kernel slice is orthogonal (view='slices': PyTorch's view)"),
]
