"""2-D convolution (PyTorch's ``F.conv2d``: NCHW input, weight ``(out, in/groups, kh, kw)``).

The fast kernel is im2col with columns in ``(h, w, n)`` order: the (padded) input, seen as
``(C, H, W, N)``, is read by one ``as_strided`` view and copied once into the column matrix

.. math::  X_{\\mathrm{col}}[(c, i, j),\\, (h, w, n)] = x_p[n, c,\\, h s_h + i d_h,\\, w s_w + j d_w],
           \\qquad X_{\\mathrm{col}} \\in \\mathbb{R}^{C k_h k_w \\times H_o W_o N},

so that, with ``M = W.reshape(out, -1)`` (rows are the filters), the forward pass and both gradients
are single 2-D GEMMs per group, with transposes as views, never copies:

.. math::  Y = M X_{\\mathrm{col}} + b \\mathbf 1^\\top, \\qquad \\bar M = \\bar Y X_{\\mathrm{col}}^\\top,
           \\qquad \\bar X_{\\mathrm{col}} = M^\\top \\bar Y, \\qquad \\bar b = \\bar Y \\mathbf 1 .

``col2im`` scatters ``X̄_col`` back with one strided slice-add per kernel tap. With ``N`` innermost, the
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
from typing import NamedTuple

import numpy as np

from .._checks import check_finite, check_floats, check_int, check_result
from ..backend import get_array_module
from ..oracle.registry import OpSpec, Sample, register
from ._contract import check_grad_meta, check_grads, check_same_dtype, check_size, memory_checked

__all__ = ["conv2d_forward", "conv2d_backward", "conv2d_naive", "conv2d_naive_backward"]


# ---------------------------------------------------------------------------------------------------------
# Geometry shared with pooling.

class Geometry(NamedTuple):
    """Sizes of a 2-D sliding-window op: input ``(H, W)``, kernel, stride, dilation, padding
    (top, bottom, left, right) and output ``(Ho, Wo)``."""
    H: int
    W: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pt: int
    pb: int
    pl: int
    pr: int
    Ho: int
    Wo: int

    @property
    def padded(self):
        return self.H + self.pt + self.pb, self.W + self.pl + self.pr

    @property
    def has_padding(self):
        return any((self.pt, self.pb, self.pl, self.pr))


def _pair(v, name, who, minimum=1):
    """``v`` (an int or a pair of ints) as a pair, each ``>= minimum``."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
        pair = (int(v), int(v))
    else:
        try:
            pair = tuple(v)
        except TypeError:
            pair = ()
        if len(pair) != 2 or not all(isinstance(p, (int, np.integer)) and not isinstance(p, (bool, np.bool_))
                                     for p in pair):
            raise TypeError(f"{who}: {name} must be an int or a pair of ints, got {v!r}")
        pair = (int(pair[0]), int(pair[1]))
    if min(pair) < minimum:
        raise ValueError(f"{who}: {name} must be >= {minimum}, got {v!r}")
    return pair


def _conv_padding(padding, kernel, stride, dilation, who):
    """``(top, bottom, left, right)`` from an int, a pair, ``"valid"`` or ``"same"``.

    ``"same"`` pads ``d (k - 1)`` in total per axis, the odd element on the bottom/right (PyTorch's rule);
    like PyTorch it is refused for strided convolutions.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"{who}: padding='same' is not supported for strided convolutions "
                                 f"(stride={stride})")
            th, tw = (d * (k - 1) for d, k in zip(dilation, kernel))
            return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        raise ValueError(f"{who}: padding must be an int, a pair of ints, 'valid' or 'same', got {padding!r}")
    ph, pw = _pair(padding, "padding", who, minimum=0)
    return (ph, ph, pw, pw)


def _geometry(spatial, kernel, stride, pads, dilation, who) -> Geometry:
    """Output size ``⌊(H + p_t + p_b - d (k - 1) - 1) / s⌋ + 1`` per axis; ValueError when the padded
    input is smaller than the dilated kernel."""
    (H, W), (kh, kw), (sh, sw), (dh, dw), (pt, pb, pl, pr) = spatial, kernel, stride, dilation, pads
    Hp, Wp = H + pt + pb, W + pl + pr
    ekh, ekw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if Hp < ekh or Wp < ekw:
        raise ValueError(f"{who}: x (input) spatial size ({H}, {W}) (padded: ({Hp}, {Wp})) is smaller than the "
                         f"(dilated) kernel size ({ekh}, {ekw})")
    # A stride beyond the padded size reads one window, as the padded size does; a dilation of a 1-wide
    # kernel reads nothing: clamped, so that byte strides stay small (no overflow in as_strided).
    sh, sw = min(sh, Hp), min(sw, Wp)
    dh, dw = (1 if kh == 1 else dh), (1 if kw == 1 else dw)
    return Geometry(H, W, kh, kw, sh, sw, dh, dw, pt, pb, pl, pr, (Hp - ekh) // sh + 1, (Wp - ekw) // sw + 1)


def _tap_slices(i, j, g: Geometry):
    """Row and column slices of a padded ``(Hp, Wp)`` grid read by kernel tap ``(i, j)`` (``Ho`` x ``Wo``)."""
    h0, w0 = i * g.dh, j * g.dw
    return slice(h0, h0 + g.sh * (g.Ho - 1) + 1, g.sh), slice(w0, w0 + g.sw * (g.Wo - 1) + 1, g.sw)


def _tap(a, i, j, g: Geometry):
    """View of the padded array ``a[..., Hp, Wp]`` read by kernel tap ``(i, j)``: shape ``(..., Ho, Wo)``."""
    hs, ws = _tap_slices(i, j, g)
    return a[..., hs, ws]


def _pad(x, g: Geometry, value=0.0):
    """``x[..., H, W]`` padded to ``(..., Hp, Wp)`` with ``value`` (no copy without padding)."""
    if not g.has_padding:
        return x
    xp = get_array_module(x)
    out = xp.full(x.shape[:-2] + g.padded, value, dtype=x.dtype)
    out[..., g.pt: g.pt + g.H, g.pl: g.pl + g.W] = x
    return out


def _crop(a, g: Geometry):
    """Inverse of ``_pad``: the interior ``(..., H, W)`` of a padded array (a view)."""
    return a[..., g.pt: g.pt + g.H, g.pl: g.pl + g.W]


def _as_strided(a, shape, strides):
    """``as_strided`` of the array's own module (NumPy's or CuPy's ``lib.stride_tricks``)."""
    xp = get_array_module(a)
    return xp.lib.stride_tricks.as_strided(a, shape=shape, strides=strides)


# ---------------------------------------------------------------------------------------------------------
# Fast kernel.

_BLOCK = 16


def _batch_last(a, out=None):
    """``a`` (N, ...) as (..., N): a view when ``a`` is batch-last in memory already, else a copy (into
    ``out`` if given). NumPy copies in blocks of 16 samples: a plain transposing copy reads with the stride
    of a whole sample and thrashes the cache (3.5 ms against 1.0 ms for a (64, 32, 28, 28) float32)."""
    xp = get_array_module(a)
    t = a.transpose(tuple(range(1, a.ndim)) + (0,))
    if out is None:
        if t.flags.c_contiguous:
            return t
        out = xp.empty(t.shape, dtype=a.dtype)
    if xp is not np or a.strides[0] <= a.itemsize:
        out[...] = t
    else:
        for i in range(0, a.shape[0], _BLOCK):
            out[..., i: i + _BLOCK] = t[..., i: i + _BLOCK]
    return out


def _im2col(x, g: Geometry):
    """Column matrix ``(C kh kw, Ho Wo N)`` of ``x`` (N, C, H, W): one strided view, one copy.

    The input is first seen as (C, H, W, N) (zero-padded when needed, which is the only other copy), so
    every tap's rows are runs of ``Wo N`` contiguous elements on both sides of the copy.
    """
    xp = get_array_module(x)
    N, C = x.shape[:2]
    if g.has_padding:
        xc = xp.zeros((C,) + g.padded + (N,), dtype=x.dtype)
        _batch_last(x, out=xc[:, g.pt: g.pt + g.H, g.pl: g.pl + g.W])
    else:
        xc = _batch_last(x)                                        # (C, H, W, N), a view if x is batch-last
    sC, sH, sW, sN = xc.strides
    win = _as_strided(xc, (C, g.kh, g.kw, g.Ho, g.Wo, N),
                      (sC, g.dh * sH, g.dw * sW, g.sh * sH, g.sw * sW, sN))
    cols = win.reshape(C * g.kh * g.kw, g.Ho * g.Wo * N)
    if xp.may_share_memory(cols, xc):      # reshape made a view (e.g. 1x1 kernels on batch-last input):
        cols = cols.copy()                  # copy, since the backward writes over the column matrix
    return cols


def _col2im(dcols, N, C, g: Geometry):
    """Adjoint of ``_im2col``: ``(C kh kw, Ho Wo N)`` -> (N, C, H, W) view of a (C, H, W, N) buffer,
    one strided slice-add per tap."""
    xp = get_array_module(dcols)
    d = dcols.reshape(C, g.kh, g.kw, g.Ho, g.Wo, N)
    dxc = xp.zeros((C,) + g.padded + (N,), dtype=dcols.dtype)
    for i in range(g.kh):
        for j in range(g.kw):
            hs, ws = _tap_slices(i, j, g)
            dxc[:, hs, ws] += d[:, i, j]
    return dxc[:, g.pt: g.pt + g.H, g.pl: g.pl + g.W].transpose(3, 0, 1, 2)


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


def _conv_geometry(x_shape, w_shape, stride, padding, dilation, who="conv2d") -> Geometry:
    kernel = tuple(int(k) for k in w_shape[2:])
    stride = _pair(stride, "stride", who)
    dilation = _pair(dilation, "dilation", who)
    pads = _conv_padding(padding, kernel, stride, dilation, who)
    return _geometry(tuple(x_shape[-2:]), kernel, stride, pads, dilation, who)


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
    return _conv2d_forward(x, w, b, stride, padding, dilation, groups, "conv2d")


def _conv2d_forward(x, w, b, stride, padding, dilation, groups, who):
    unbatched = _check_conv(x, w, b, groups, who, check_x=False)
    x_bound = _x_bound(who, x)                         # also checks that x is finite
    groups = int(groups)
    if unbatched:
        x = x[None]
    g = _conv_geometry(x.shape, w.shape, stride, padding, dilation, who)
    N, O = x.shape[0], w.shape[0]
    C = x.shape[1]
    what = f"padding={padding!r}, stride={stride!r}, dilation={dilation!r} on x of shape {tuple(x.shape)}"
    check_size(who, what, (C,) + g.padded + (N,))
    check_size(who, what, (C * g.kh * g.kw, g.Ho * g.Wo * N))
    with memory_checked(who, what):
        cols = _im2col(x, g)
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
    return _conv2d_backward(dy, cache, need_dx, "conv2d_backward", "dy")


def _conv2d_backward(dy, cache, need_dx, who, name):
    if not isinstance(cache, _ConvCache):
        raise TypeError(f"{who}: cache must be the cache returned by conv2d_forward, got "
                        f"{type(cache).__name__}")
    w, g, groups = cache.w, cache.g, cache.groups
    N, O = cache.x.shape[0], w.shape[0]
    y_shape = (N, O, g.Ho, g.Wo)
    check_grad_meta(who, name, dy, y_shape[1:] if cache.unbatched else y_shape, cache.x.dtype)
    cols = cache.cols if cache.cols is not None else _im2col(cache.x, g)
    if cache.unbatched:
        dy = dy[None]
    dy2 = _batch_last(dy).reshape(O, N * dy.shape[2] * dy.shape[3])   # (O, Ho Wo N); a view when dy is batch-last
    with np.errstate(invalid="ignore", over="ignore"):      # NaN/Inf/overflow: the ValueError below
        db = dy2.sum(axis=1) if cache.has_bias else None
        dw = _grouped_matmul(dy2, cols, groups, tb=True).reshape(w.shape)
    check_grads(who, name, dy, dw, db, covered=cols.shape[0] > 0)
    dx = None
    if need_dx:
        cache.cols = None                                          # its buffer now receives X̄_col
        with np.errstate(invalid="ignore", over="ignore"):                    # dcols: (C kh kw, Ho Wo N)
            dcols = _grouped_matmul(w.reshape(O, math.prod(w.shape[1:])), dy2, groups, ta=True, out=cols)
            dx = _col2im(dcols, N, cache.x.shape[1], g)
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
    g = _conv_geometry(x.shape, w.shape, stride, padding, dilation, who)
    check_size(who, f"padding={padding!r} on x of shape {tuple(x.shape)}", x.shape[:2] + g.padded)
    return g, x.shape[1] // groups, w.shape[0] // groups


def conv2d_naive(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """Loop reference of ``conv2d_forward`` (same arguments, 4-D input); returns ``y`` only.

    ``y[:, o, oh, ow] += x_p[:, c, oh s_h + i d_h, ow s_w + j d_w] · W[o, c, i, j]``, summed over the taps
    ``(i, j)`` and the group's channels, one output pixel at a time.
    """
    xp = get_array_module(x, w)
    g, Cg, Og = _naive_setup(x, w, b, stride, padding, dilation, groups)
    xpad = _pad(x, g)
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
    xpad = _pad(x, g)
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
    dx = _crop(dxpad, g)
    check_grads(who, "dy", dy, dx, dw, db)
    return dx, dw, db


# ---------------------------------------------------------------------------------------------------------
# Registry.

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


def _torch_conv2d(x, w, b=None, **kwargs):
    import warnings

    import torch.nn.functional as F
    with warnings.catch_warnings():         # padding="same" with an even kernel: a note about a copy
        warnings.simplefilter("ignore", UserWarning)
        return (F.conv2d(x, w, b, **kwargs),)


register(OpSpec("conv2d", _conv_apply, _samples, torch=_torch_conv2d,
                doc="PyTorch F.conv2d (im2col, one GEMM per group)", complex_step=True))
register(OpSpec("conv2d_naive", _conv_naive_apply, _samples_naive, torch=_torch_conv2d,
                doc="loop reference of conv2d", complex_step=True))
