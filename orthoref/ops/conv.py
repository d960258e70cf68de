"""2-D convolution (PyTorch's ``F.conv2d``: NCHW input, weight ``(out, in/groups, kh, kw)``).

The fast kernel is im2col with columns in ``(h, w, n)`` order: the (padded) input, seen as
``(C, H, W, N)``, is read by one ``as_strided`` view and copied once into the column matrix

.. math::  X_{\\mathrm{col}}[(c, i, j),\\, (h, w, n)] = x_p[n, c,\\, h s_h + i d_h,\\, w s_w + j d_w],
           \\qquad X_{\\mathrm{col}} \\in \\mathbb{R}^{C k_h k_w \\times H_o W_o N},

so that, with ``M = W.reshape(out, -1)`` (rows are the filters), the forward pass and both gradients
are single 2-D GEMMs per group, with transposes as views, never copies:

.. math::  Y = M X_{\\mathrm{col}} + b \\mathbf 1^\\top, \\qquad \\bar M = \\bar Y X_{\\mathrm{col}}^\\top,
           \\qquad \\bar X_{\\mathrm{col}} = M^\\top \\bar Y, \\qquad \\bar b = \\bar Y \\mathbf 1 .

``col2im`` scatters ``X̄_col`` back with one strided slice-add per kernel tap (both, and the window
geometry shared with pooling, live in :mod:`orthoref.ops._window`). With ``N`` innermost, the
copies and slice-adds move runs of ``Wo N`` contiguous elements (not ``Wo``), which is what makes them
cheap next to the GEMMs. Everything stays in the input's dtype (float32 stays float32).

Layout: ``y`` of ``conv2d_forward`` and ``dx`` of ``conv2d_backward`` are NCHW-shaped *views* of
``(C, H, W, N)`` buffers (``transpose(3, 0, 1, 2)``), a "batch-last" layout. Element-wise
ops and pooling keep that layout, and the next convolution reads it (and its ``dy``) without a
transposing copy. Call ``numpy.ascontiguousarray`` where a C-contiguous array is needed.

``conv2d_naive`` / ``conv2d_naive_backward`` are slow loop references kept beside the fast kernel and
tested against it.
"""
from __future__ import annotations

import math

import numpy as np

from .._checks import check_finite, check_floats, check_int, check_result
from ..backend import get_array_module
from ._contract import check_grad_meta, check_grads, check_same_dtype, check_size, memory_checked
from ._window import batch_last, col2im, conv_geometry, crop, im2col, pad

__all__ = ["conv2d_forward", "conv2d_backward", "conv2d_naive", "conv2d_naive_backward"]


# ---------------------------------------------------------------------------------------------------------
# Fast kernel.

def _grouped_matmul(a, b, groups, ta=False, tb=False, out=None):
    """Per-group product ``op(a_g) @ op(b_g)`` of row blocks ``a_g``, ``b_g`` (``op`` transposes when ``ta`` /
    ``tb``), stacked by rows: one 2-D GEMM when ``groups == 1``, else one batched matmul; transposes are
    views (BLAS reads them in place). ``out``: a C-contiguous array to write the result into."""
    xp = get_array_module(a, b)
    if groups == 1:
        return xp.matmul(a.T if ta else a, b.T if tb else b, out=out)
    ag = a.reshape(groups, a.shape[0] // groups, a.shape[-1])       # explicit sizes (no -1): one may be 0
    bg = b.reshape(groups, b.shape[0] // groups, b.shape[-1])
    res = xp.matmul(ag.transpose(0, 2, 1) if ta else ag, bg.transpose(0, 2, 1) if tb else bg,
                    out=None if out is None else out.reshape(groups, out.shape[0] // groups, out.shape[-1]))
    return res.reshape(res.shape[0] * res.shape[1], res.shape[-1])


class _ConvCache:
    """What ``conv2d_backward`` needs. ``cols`` is the column matrix; the backward that computes ``dx``
    writes ``X̄_col`` over it (it has the same shape and is no longer needed), saving the largest
    allocation of the step, and sets ``cols`` to None: a second backward rebuilds it from ``x``."""
    __slots__ = ("cols", "x", "w", "g", "groups", "has_bias", "unbatched")

    def __init__(self, cols, x, w, g, groups, has_bias, unbatched):
        self.cols, self.x, self.w, self.g = cols, x, w, g
        self.groups, self.has_bias, self.unbatched = groups, has_bias, unbatched


def _check_conv(x, w, b, groups, who, check_x=True):
    """Validate dtypes, ranks, channels, groups and finiteness (of ``x`` too unless ``check_x`` is False:
    :func:`_x_bound` reads it off ``x``'s extremes); returns True when ``x`` is unbatched (C, H, W)."""
    named = (("x", x), ("w (weight)", w), ("b (bias)", b))
    check_floats(who, *named, finite=False)
    check_same_dtype(who, *named)
    groups = check_int(who, "groups", groups, 1)
    if x.ndim not in (3, 4):
        raise ValueError(f"{who}: x must be a 3-D (C, H, W) or 4-D (N, C, H, W) array, "
                         f"got shape {tuple(x.shape)}")
    if w.ndim != 4 or min(w.shape[2:]) < 1:
        raise ValueError(f"{who}: w (weight) must be a 4-D weight (out, in/groups, kh, kw) with kh, kw >= 1, "
                         f"got shape {tuple(w.shape)}")
    if w.shape[0] % groups:
        raise ValueError(f"{who}: out channels {w.shape[0]} (weight shape {tuple(w.shape)}) not divisible "
                         f"by groups={groups}")
    C = x.shape[-3]
    if C != w.shape[1] * groups:
        raise ValueError(f"{who}: input has {C} channels (shape {tuple(x.shape)}) but the weight "
                         f"{tuple(w.shape)} with groups={groups} expects {w.shape[1] * groups}")
    if b is not None and tuple(b.shape) != (w.shape[0],):
        raise ValueError(f"{who}: b (bias) must have shape ({w.shape[0]},), got {tuple(b.shape)}")
    for name, a in named:
        if a is not None and (check_x or name != "x"):
            check_finite(who, name, a)
    return x.ndim == 3


def _x_bound(who, x):
    """``max |x|`` from ``x.min()`` and ``x.max()`` (NaN propagates through both, so this also checks that
    ``x`` is finite: ``NonFiniteError`` naming ``x`` otherwise); 0 for an empty ``x``."""
    if x.size == 0:
        return 0.0
    with np.errstate(invalid="ignore"):
        lo, hi = float(x.min().real), float(x.max().real)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        check_finite(who, "x", x)
    if get_array_module(x).iscomplexobj(x):          # complex-step mode: no bound, the output is checked
        return math.inf
    return max(-lo, hi)


def _may_overflow(x_bound, w, b, dtype):
    """False when ``|y| <= max|x| · max_o Σ|W[o]| + max|b|`` is far below the dtype's largest value, so
    that the output of the convolution cannot overflow (no pass over it is needed)."""
    xp = get_array_module(w)
    O = w.shape[0]
    if O == 0 or w.size == 0:
        return False
    with np.errstate(over="ignore", invalid="ignore"):
        w_bound = float(xp.abs(w.reshape(O, -1)).sum(axis=1).max())
        b_bound = float(xp.abs(b).max()) if b is not None and b.size else 0.0
    bound = x_bound * w_bound + b_bound
    return not bound <= float(np.finfo(dtype).max) / 4          # the margin covers rounding of the sums


def conv2d_forward(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation, exactly PyTorch's ``F.conv2d``.

    .. math::  y[n, o, h, w] = b_o + \\sum_{c \\in G(o)} \\sum_{i, j}
               W[o, c - c_0(o), i, j]\\; x_p[n, c,\\, h s_h + i d_h,\\, w s_w + j d_w]

    with ``x_p`` the zero-padded input and ``G(o)`` the ``in/groups`` input channels of ``o``'s group.

    Parameters
    ----------
    x : (N, C, H, W) or (C, H, W) array
    w : (O, C / groups, kh, kw) array, same dtype
    b : (O,) array or None
    stride, dilation : int or (int, int)
    padding : int, (int, int), ``"valid"`` or ``"same"``
        ``"same"`` (stride 1 only) puts the odd element of ``d (k - 1)`` on the bottom/right, as PyTorch.
    groups : int
        ``C`` and ``O`` must be divisible by it.

    Returns
    -------
    y : (N, O, Ho, Wo) array (a view of an (O, Ho, Wo, N) buffer),
        ``Ho = ⌊(H + p_t + p_b - d_h (k_h - 1) - 1) / s_h⌋ + 1``, likewise ``Wo``
    cache : the column matrix, ``x``, ``w`` and the geometry

    Raises
    ------
    TypeError, ValueError
        Non-float arrays or arrays of different dtypes, shapes or hyper-parameters that do not fit.
    NonFiniteError
        (a ValueError) NaN/Inf in ``x``, ``w`` or ``b``, or an output that overflows from finite inputs.
    """
    return conv2d_forward_as(x, w, b, stride, padding, dilation, groups, "conv2d")


def conv2d_forward_as(x, w, b, stride, padding, dilation, groups, who):
    """``conv2d_forward`` with the caller's names in error messages (the layers)."""
    unbatched = _check_conv(x, w, b, groups, who, check_x=False)
    x_bound = _x_bound(who, x)                         # also checks that x is finite
    groups = int(groups)
    if unbatched:
        x = x[None]
    g = conv_geometry(x.shape, w.shape, stride, padding, dilation, who)
    N, O = x.shape[0], w.shape[0]
    C = x.shape[1]
    what = f"padding={padding!r}, stride={stride!r}, dilation={dilation!r} on x of shape {tuple(x.shape)}"
    check_size(who, what, (C,) + g.padded + (N,))
    check_size(who, what, (C * g.kh * g.kw, g.Ho * g.Wo * N))
    with memory_checked(who, what):
        cols = im2col(x, g)
        with np.errstate(invalid="ignore", over="ignore"):      # an overflow: the ValueError below
            y2 = _grouped_matmul(w.reshape(O, math.prod(w.shape[1:])), cols, groups)           # (O, Ho Wo N)
            if b is not None:
                y2 += b[:, None]
    if _may_overflow(x_bound, w, b, x.dtype):          # rare: a pass over the output decides
        check_result(who, y2, "the output", "use float64 or rescale the input")
    y = y2.reshape(O, g.Ho, g.Wo, N).transpose(3, 0, 1, 2)
    return (y[0] if unbatched else y), _ConvCache(cols, x, w, g, groups, b is not None, unbatched)


def conv2d_backward(dy, cache, need_dx=True):
    """Gradients of ``conv2d_forward``.

    .. math::  \\bar M = \\bar Y X_{\\mathrm{col}}^\\top, \\qquad \\bar b_o = \\sum_{n,h,w} \\bar y[n,o,h,w],
               \\qquad \\bar x = \\mathrm{col2im}(M^\\top \\bar Y)

    per group, with ``Ȳ = dy`` as an ``(O, Ho Wo N)`` matrix and ``M = W.reshape(O, -1)``.

    Parameters
    ----------
    dy : array shaped like ``y``
    cache : from ``conv2d_forward``
    need_dx : bool
        False skips the input gradient (its GEMM and col2im), e.g. for a network's first layer.

    Returns
    -------
    dx : (N, C, H, W) array (a view of a (C, H, W, N) buffer) or None
    dw : (O, C / groups, kh, kw) array
    db : (O,) array, or None without bias

    Notes
    -----
    With ``need_dx`` the cached column matrix is overwritten by ``X̄_col`` (the step's largest buffer is
    reused rather than allocated again); a second backward on the same cache rebuilds it from ``x``.

    ``dy`` must have exactly the shape and dtype of the forward's ``y`` (``ValueError``/``TypeError``) and be
    finite (``NonFiniteError``, read off ``dw``); a gradient that overflows raises ``NonFiniteError``.
    """
    return conv2d_backward_as(dy, cache, need_dx, "conv2d_backward", "dy")


def conv2d_backward_as(dy, cache, need_dx, who, name):
    """``conv2d_backward`` with the caller's names in error messages (the layers)."""
    if not isinstance(cache, _ConvCache):
        raise TypeError(f"{who}: cache must be the cache returned by conv2d_forward, got "
                        f"{type(cache).__name__}")
    w, g, groups = cache.w, cache.g, cache.groups
    N, O = cache.x.shape[0], w.shape[0]
    y_shape = (N, O, g.Ho, g.Wo)
    check_grad_meta(who, name, dy, y_shape[1:] if cache.unbatched else y_shape, cache.x.dtype)
    cols = cache.cols if cache.cols is not None else im2col(cache.x, g)
    if cache.unbatched:
        dy = dy[None]
    dy2 = batch_last(dy).reshape(O, N * dy.shape[2] * dy.shape[3])   # (O, Ho Wo N); a view when dy is batch-last
    with np.errstate(invalid="ignore", over="ignore"):      # NaN/Inf/overflow: the ValueError below
        db = dy2.sum(axis=1) if cache.has_bias else None
        dw = _grouped_matmul(dy2, cols, groups, tb=True).reshape(w.shape)
    check_grads(who, name, dy, dw, db, covered=cols.shape[0] > 0)
    dx = None
    if need_dx:
        cache.cols = None                                          # its buffer now receives X̄_col
        with np.errstate(invalid="ignore", over="ignore"):                    # dcols: (C kh kw, Ho Wo N)
            dcols = _grouped_matmul(w.reshape(O, math.prod(w.shape[1:])), dy2, groups, ta=True, out=cols)
            dx = col2im(dcols, N, cache.x.shape[1], g)
        if cache.unbatched:
            dx = dx[0]
        check_grads(who, name, dy, dx)
    return dx, dw, db


# ---------------------------------------------------------------------------------------------------------
# Slow references: loops over output pixels and kernel taps.

def _naive_setup(x, w, b, stride, padding, dilation, groups, who="conv2d_naive"):
    _check_conv(x, w, b, groups, who)
    if x.ndim != 4:
        raise ValueError(f"{who}: x must be a 4-D array (N, C, H, W), got shape {tuple(x.shape)}")
    g = conv_geometry(x.shape, w.shape, stride, padding, dilation, who)
    check_size(who, f"padding={padding!r} on x of shape {tuple(x.shape)}", x.shape[:2] + g.padded)
    return g, x.shape[1] // groups, w.shape[0] // groups


def conv2d_naive(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """Loop reference of ``conv2d_forward`` (same arguments, 4-D input); returns ``y`` only.

    ``y[:, o, oh, ow] += x_p[:, c, oh s_h + i d_h, ow s_w + j d_w] · W[o, c, i, j]``, summed over the taps
    ``(i, j)`` and the group's channels, one output pixel at a time.
    """
    xp = get_array_module(x, w)
    g, Cg, Og = _naive_setup(x, w, b, stride, padding, dilation, groups)
    xpad = pad(x, g)
    y = xp.zeros((x.shape[0], w.shape[0], g.Ho, g.Wo), dtype=x.dtype)
    with np.errstate(invalid="ignore", over="ignore"):      # an overflow: the ValueError below
        for k in range(groups):
            cs, os_ = slice(k * Cg, (k + 1) * Cg), slice(k * Og, (k + 1) * Og)
            for oh in range(g.Ho):
                for ow in range(g.Wo):
                    for i in range(g.kh):
                        for j in range(g.kw):
                            patch = xpad[:, cs, oh * g.sh + i * g.dh, ow * g.sw + j * g.dw]     # (N, Cg)
                            y[:, os_, oh, ow] += patch @ w[os_, :, i, j].T
        if b is not None:
            y += b[None, :, None, None]
    return check_result("conv2d_naive", y, "the output", "use float64 or rescale the input")


def conv2d_naive_backward(dy, x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """Loop reference of ``conv2d_backward``: returns ``(dx, dw, db)`` (``db`` None when ``b`` is None).

    For each output pixel and tap: ``x̄_p[:, c, h, w] += ȳ[:, o] W[o, c, i, j]`` and
    ``W̄[o, c, i, j] += Σ_n ȳ[n, o] x_p[n, c, h, w]``; ``b̄_o = Σ ȳ[:, o]``.
    """
    who = "conv2d_naive_backward"
    xp = get_array_module(x, w)
    g, Cg, Og = _naive_setup(x, w, b, stride, padding, dilation, groups, who)
    check_grad_meta(who, "dy", dy, (x.shape[0], w.shape[0], g.Ho, g.Wo), x.dtype)
    check_finite(who, "dy", dy, xp)
    xpad = pad(x, g)
    dxpad = xp.zeros(xpad.shape, dtype=x.dtype)
    dw = xp.zeros(w.shape, dtype=w.dtype)
    with np.errstate(invalid="ignore", over="ignore"):      # an overflow: the ValueError below
        for k in range(groups):
            cs, os_ = slice(k * Cg, (k + 1) * Cg), slice(k * Og, (k + 1) * Og)
            for oh in range(g.Ho):
                for ow in range(g.Wo):
                    for i in range(g.kh):
                        for j in range(g.kw):
                            h, v = oh * g.sh + i * g.dh, ow * g.sw + j * g.dw
                            dyo = dy[:, os_, oh, ow]                                             # (N, Og)
                            dxpad[:, cs, h, v] += dyo @ w[os_, :, i, j]
                            dw[os_, :, i, j] += dyo.T @ xpad[:, cs, h, v]
        db = dy.sum(axis=(0, 2, 3)) if b is not None else None
    dx = crop(dxpad, g)
    check_grads(who, "dy", dy, dx, dw, db)
    return dx, dw, db
