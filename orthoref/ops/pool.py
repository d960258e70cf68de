"""Pooling and flattening (PyTorch's ``F.max_pool2d``, ``F.avg_pool2d``, ``x.mean((-2, -1))``,
``torch.flatten``).

A pooling window is visited tap by tap: tap ``(i, j)`` of every window at once is the strided view
``x_p[..., i d_h :: s_h, j d_w :: s_w]`` of shape ``(..., Ho, Wo)`` (``x_p`` the padded input), so a pool
is ``kh kw`` vectorized element-wise steps and its backward ``kh kw`` strided slice-adds. (The window
geometry and the tap views live in :mod:`orthoref.ops._window`.) The views keep the
memory layout of the input (the convolutions hand over NCHW-shaped views of batch-last (C, H, W, N)
buffers).

Inputs are ``(N, C, H, W)`` or unbatched ``(C, H, W)``; outputs keep the input's dtype. Every forward
raises ``TypeError`` for a non-float input and ``ValueError`` for NaN/Inf in it, a wrong rank or an empty
spatial extent (an empty batch or channel axis gives an empty output). Every backward requires ``dy`` of
exactly the forward output's shape and dtype (``ValueError``/``TypeError``, no broadcasting) and finite
(``NonFiniteError``, read off ``dx``: every element of ``dy`` reaches ``dx``).
"""
from __future__ import annotations

import math

import numpy as np

from .._checks import check_bool, check_finite, check_floats, check_int, check_ndim, check_result
from ..backend import get_array_module
from ._contract import check_finite_handoff, check_grad_meta, check_grads
from ._window import Geometry, crop, pad, pool_geometry, tap

__all__ = [
    "max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward",
    "global_avg_pool2d_forward", "global_avg_pool2d_backward", "flatten_forward", "flatten_backward",
]


def _check_pool_input(x, who):
    """A finite float ``(N, C, H, W)`` or ``(C, H, W)`` input with ``H, W >= 1``."""
    check_floats(who, ("x", x), finite=False)
    check_ndim(who, "x", x, (3, 4))
    if x.shape[-1] * x.shape[-2] == 0:
        raise ValueError(f"{who}: x must not have an empty spatial extent, got shape {tuple(x.shape)}")
    check_finite_handoff(who, "x", x)


def _taps(g: Geometry):
    return [(i, j) for i in range(g.kh) for j in range(g.kw)]


def _zeros_like_padded(x, g: Geometry):
    """Zero gradient buffer for the padded input, in the memory layout of ``x`` when unpadded."""
    xp = get_array_module(x)
    if g.has_padding:
        return xp.zeros(x.shape[:-2] + g.padded, dtype=x.dtype)
    return xp.zeros_like(x)


def _in_layout_of(a, ref):
    """``a`` with its axes laid out in memory in the order of ``ref``'s (a copy only when they differ):
    element-wise steps that mix two layouts are several times slower than either."""
    def order(arr):
        return sorted(range(arr.ndim), key=lambda k: -abs(arr.strides[k]))
    want = order(ref)
    if order(a) == want:
        return a
    xp = get_array_module(a)
    inverse = tuple(int(k) for k in np.argsort(want))
    out = xp.empty([a.shape[k] for k in want], dtype=a.dtype).transpose(inverse)
    out[...] = a
    return out


def _disjoint(g: Geometry):
    """True when no input element lies in two windows (so the backward may assign instead of add)."""
    return g.sh >= g.dh * (g.kh - 1) + 1 and g.sw >= g.dw * (g.kw - 1) + 1


def _tiles(g: Geometry):
    """True when the windows tile the padded input exactly (each element in exactly one window)."""
    Hp, Wp = g.padded
    return ((g.kh == 1 or g.dh == 1) and (g.kw == 1 or g.dw == 1) and g.sh == g.kh and g.sw == g.kw
            and g.Ho * g.sh == Hp and g.Wo * g.sw == Wp)


# ---------------------------------------------------------------------------------------------------------
# Max pooling.

def max_pool2d_forward(x, kernel_size, stride=None, padding=0, dilation=1):
    """Max pooling, PyTorch's ``F.max_pool2d`` (``ceil_mode=False``).

    .. math::  y[\\dots, h, w] = \\max_{i < k_h,\\, j < k_w} x_p[\\dots,\\, h s_h + i d_h,\\, w s_w + j d_w]

    with ``x_p`` padded by ``-inf`` (padding at most half the dilated kernel, PyTorch's rule).

    Parameters
    ----------
    x : (N, C, H, W) or (C, H, W) array
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding, dilation : int or (int, int)

    Returns
    -------
    y : (N, C, Ho, Wo) array
    cache : the padded input and ``y`` (the backward finds each window's first maximum)

    Notes
    -----
    Ties: the gradient goes to the *first* maximal element of a window in row-major order, as PyTorch's
    CPU kernel (which replaces its running maximum only by a strictly greater value). NaN/Inf in ``x``
    raise ``ValueError`` (PyTorch propagates a NaN).
    """
    _check_pool_input(x, "max_pool2d")
    xp = get_array_module(x)
    g = pool_geometry(x.shape, kernel_size, stride, padding, dilation, "max_pool2d")
    xpad = pad(x, g, value=-np.inf)
    taps = [tap(xpad, i, j, g) for i, j in _taps(g)]
    y = xp.maximum(taps[0], taps[1]) if len(taps) > 1 else taps[0].copy(order="K")
    for t in taps[2:]:
        xp.maximum(y, t, out=y)
    return y, (g, xpad, y.copy(order="K"))                  # a copy: callers may modify y in place


def max_pool2d_backward(dy, cache):
    """Gradient of ``max_pool2d_forward``: ``dy`` routed to each window's first maximal element,

    .. math::  \\bar x_p[\\dots, h s_h + i d_h, w s_w + j d_w] \\mathrel{+}= \\bar y[\\dots, h, w]\\,
               [\\,(i, j) = \\min\\{(i', j') : x_p[\\dots, h s_h + i' d_h, w s_w + j' d_w] = y[\\dots, h, w]\\}\\,]

    (the minimum in row-major order). Returns ``dx`` shaped like ``x``.
    """
    return max_pool2d_backward_as(dy, cache, "max_pool2d_backward", "dy")


def max_pool2d_backward_as(dy, cache, who, name):
    """``max_pool2d_backward`` with the caller's names in error messages (the layers)."""
    g, xpad, y = cache
    check_grad_meta(who, name, dy, y.shape, y.dtype)
    if _disjoint(g):                   # each dx element is 0 or one dy element: check dy, the smaller one
        check_finite_handoff(who, name, dy)
        return _max_pool2d_grad(dy, g, xpad, y)
    with np.errstate(invalid="ignore", over="ignore"):      # NaN/Inf/overflow: the ValueError below
        dx = _max_pool2d_grad(dy, g, xpad, y)
    check_grads(who, name, dy, dx)
    return dx


def _max_pool2d_grad(dy, g, xpad, y):
    xp = get_array_module(dy)
    dy = _in_layout_of(dy, y)
    dxpad = xp.empty_like(xpad) if _tiles(g) else xp.zeros_like(xpad)    # every element written once
    disjoint = _disjoint(g)
    taps = _taps(g)
    taken = None                                   # windows whose maximum was found at an earlier tap
    for k, (i, j) in enumerate(taps):
        if k == 0:
            first = taken = tap(xpad, i, j, g) == y
        elif k < len(taps) - 1:
            first = xp.greater(tap(xpad, i, j, g) == y, taken)       # equal, and not taken before
            taken |= first
        else:
            first = ~taken                         # the last tap holds the maximum if no earlier one did
        view = tap(dxpad, i, j, g)
        if disjoint:
            xp.multiply(dy, first, out=view)
        else:
            view += dy * first
    return crop(dxpad, g)


# ---------------------------------------------------------------------------------------------------------
# Average pooling.

def _avg_divisor(x, g: Geometry, count_include_pad, divisor_override, who="avg_pool2d"):
    """Number each window's sum is divided by: ``kh kw``, the override, or (``count_include_pad=False``)
    the count of non-padding elements, an ``(Ho, Wo)`` array."""
    count_include_pad = check_bool(who, "count_include_pad", count_include_pad)
    if divisor_override is not None:
        return float(check_int(who, "divisor_override", divisor_override, 1))
    if count_include_pad or not g.has_padding:
        return float(g.kh * g.kw)
    xp = get_array_module(x)

    def counts(n_out, s, k, p, n):
        pos = np.arange(n_out)[:, None] * s + np.arange(k)[None, :]
        return ((pos >= p) & (pos < p + n)).sum(axis=1)
    ch = counts(g.Ho, g.sh, g.kh, g.pt, g.H)
    cw = counts(g.Wo, g.sw, g.kw, g.pl, g.W)
    return xp.asarray(np.outer(ch, cw).astype(x.dtype))


def avg_pool2d_forward(x, kernel_size, stride=None, padding=0, count_include_pad=True, divisor_override=None):
    """Average pooling, PyTorch's ``F.avg_pool2d`` (``ceil_mode=False``).

    .. math::  y[\\dots, h, w] = \\frac{1}{D_{hw}} \\sum_{i < k_h,\\, j < k_w} x_p[\\dots,\\, h s_h + i,\\, w s_w + j]

    with ``x_p`` zero-padded (padding at most half the kernel) and ``D = k_h k_w`` when
    ``count_include_pad``, else the number of window elements inside the unpadded input;
    ``divisor_override`` replaces ``D`` when given.

    Parameters
    ----------
    x : (N, C, H, W) or (C, H, W) array
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
    count_include_pad : bool
    divisor_override : int, optional

    Returns
    -------
    y : (N, C, Ho, Wo) array
    cache : the geometry, the divisor and the input's shape and dtype
    """
    _check_pool_input(x, "avg_pool2d")
    g = pool_geometry(x.shape, kernel_size, stride, padding, 1, "avg_pool2d")
    div = _avg_divisor(x, g, count_include_pad, divisor_override)
    xpad = pad(x, g, value=0.0)
    taps = _taps(g)
    y = tap(xpad, 0, 0, g).copy(order="K")
    with np.errstate(over="ignore", invalid="ignore"):      # a window sum that overflows: the error below
        for i, j in taps[1:]:
            y += tap(xpad, i, j, g)
        y /= div
    check_result("avg_pool2d", y, "the output", "use float64 or rescale the input")
    return y, (g, x, div)


def avg_pool2d_backward(dy, cache):
    """Gradient of ``avg_pool2d_forward``: every window element receives ``ȳ / D``,

    .. math::  \\bar x_p[\\dots, h s_h + i, w s_w + j] \\mathrel{+}= \\bar y[\\dots, h, w] / D_{hw} .

    Returns ``dx`` shaped like ``x``.
    """
    return avg_pool2d_backward_as(dy, cache, "avg_pool2d_backward", "dy")


def avg_pool2d_backward_as(dy, cache, who, name):
    """``avg_pool2d_backward`` with the caller's names in error messages (the layers)."""
    g, x, div = cache
    check_grad_meta(who, name, dy, x.shape[:-2] + (g.Ho, g.Wo), x.dtype)
    disjoint = _disjoint(g)
    if disjoint:                       # each dx element is 0 or dy / D (D >= 1): check dy, the smaller one
        check_finite_handoff(who, name, dy)
    with np.errstate(invalid="ignore", over="ignore"):      # NaN/Inf/overflow: the ValueError below
        share = _in_layout_of(dy, x) / div
        dxpad = _zeros_like_padded(x, g)
        for i, j in _taps(g):
            tap(dxpad, i, j, g)[...] += share
        dx = crop(dxpad, g)
    if not disjoint:
        check_grads(who, name, dy, dx)
    return dx


# ---------------------------------------------------------------------------------------------------------
# Global average pooling and flatten.

def global_avg_pool2d_forward(x):
    """Mean over the two spatial axes.

    .. math::  y[n, c] = \\frac{1}{HW} \\sum_{h, w} x[n, c, h, w]

    Parameters
    ----------
    x : (N, C, H, W) or (C, H, W) array

    Returns
    -------
    y : (N, C) or (C,) array
    cache : the input's shape
    """
    _check_pool_input(x, "global_avg_pool2d")
    with np.errstate(over="ignore", invalid="ignore"):      # a sum that overflows: the error below
        y = x.mean(axis=(-2, -1))
    check_result("global_avg_pool2d", y, "the output", "use float64 or rescale the input")    # (N, C): short
    return y, (x.shape, x.dtype)


def global_avg_pool2d_backward(dy, cache):
    """``x̄[n, c, h, w] = ȳ[n, c] / (H W)``; returns ``dx`` shaped like ``x``."""
    return global_avg_pool2d_backward_as(dy, cache, "global_avg_pool2d_backward", "dy")


def global_avg_pool2d_backward_as(dy, cache, who, name):
    """``global_avg_pool2d_backward`` with the caller's names in error messages (the layers)."""
    shape, dtype = cache
    check_grad_meta(who, name, dy, shape[:-2], dtype)
    xp = get_array_module(dy)
    check_finite(who, name, dy, xp)              # (N, C): smaller than dx
    dx = xp.empty(shape, dtype=dtype)
    dx[...] = (dy / (shape[-1] * shape[-2]))[..., None, None]
    return dx


def flatten_dims(ndim, start_dim, end_dim, who="flatten"):
    """The axes ``(s, e)`` that ``torch.flatten`` merges in a ``ndim``-D input (negatives count from the end);
    ValueError naming ``who`` when they are out of range or out of order."""
    if ndim == 0:
        raise ValueError(f"{who}: cannot flatten a 0-D array")
    s = start_dim + ndim if start_dim < 0 else start_dim
    e = end_dim + ndim if end_dim < 0 else end_dim
    if not (0 <= s < ndim and 0 <= e < ndim):
        raise ValueError(f"{who}: start_dim={start_dim}, end_dim={end_dim} out of range for a {ndim}-D input")
    if s > e:
        raise ValueError(f"{who}: start_dim={start_dim} comes after end_dim={end_dim} (for a {ndim}-D input)")
    return s, e


def flatten_forward(x, start_dim=1, end_dim=-1):
    """Merge axes ``start_dim..end_dim`` into one (``torch.flatten``; a copy only if the layout needs it).

    .. math::  y[n, (c, h, w)] = x[n, c, h, w] \\quad (\\text{row-major order of } (c, h, w))

    Returns ``y`` and the cache (the input's shape, the output's shape and the dtype).
    """
    check_floats("flatten", ("x", x), finite=False)
    check_finite_handoff("flatten", "x", x)
    start_dim = check_int("flatten", "start_dim", start_dim)
    end_dim = check_int("flatten", "end_dim", end_dim)
    s, e = flatten_dims(x.ndim, start_dim, end_dim)
    shape = tuple(x.shape)
    y = x.reshape(shape[:s] + (math.prod(shape[s: e + 1]),) + shape[e + 1:])
    return y, (shape, tuple(y.shape), x.dtype)


def flatten_backward(dy, cache):
    """``dx = dy.reshape(x.shape)``, ``dy`` of exactly the forward output's shape and dtype, finite."""
    return flatten_backward_as(dy, cache, "flatten_backward", "dy")


def flatten_backward_as(dy, cache, who, name):
    """``flatten_backward`` with the caller's names in error messages (the layers)."""
    shape, out_shape, dtype = cache
    check_grad_meta(who, name, dy, out_shape, dtype)
    check_finite_handoff(who, name, dy)
    return dy.reshape(shape)
