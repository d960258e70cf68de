"""Singular-value maps: clip the spectrum of a weight, of a convolution operator, and ``σ ≤ 1`` without an
SVD (``mclip``), each differentiable map with its backward pass ``NAME_vjp``.

A weight ``W`` (``(out, in, ...)``, PyTorch layout) is seen as the matrix ``M = W.reshape(out, -1)``, as
everywhere in orthoref (:mod:`orthoref.regularizers`, :mod:`orthoref.analysis`): a conv kernel's singular
values are those of its filter matrix. :func:`clip_conv_singular_values` clips those of the convolution
*operator* instead (Sedghi, Gupta & Long 2019).

The clip ``g(σ) = min(max(σ, lo), hi)`` is applied to every singular value, ``F(M) = U g(Σ) Vᵀ``: a
spectral function. It is differentiable wherever ``g`` is differentiable at every ``σ_i`` (no ``σ_i`` on a
bound), repeated singular values included: its derivative is the divided-difference (Daleckii–Krein-type)
formula of :func:`clip_singular_values_vjp`, which needs no gap between singular values where ``g`` is
linear.

Uses: singular value bounding (Jia, Tao, Gao & Xu, CVPR 2017, "Improving training of deep neural networks via
Singular Value Bounding": after each epoch ``σ ∈ [1/(1+ε), 1+ε]``, ``clip_singular_values(W, 1/(1+ε),
1+ε)``), a Lipschitz bound ``σ ≤ 1`` on a GAN critic or any layer (``clip_singular_values(W, hi=1)`` or
:func:`mclip`), and the operator-norm clipping of convolutions.

Failure model as in :mod:`orthoref.ortho`: bad input raises ``TypeError``/``ValueError`` naming the function
and the argument, an overflow ``NonFiniteError``; a LAPACK failure is a ``ValueError``.
"""
from __future__ import annotations

import math

import numpy as np

from ..backend import get_array_module
from .._checks import NonFiniteError, all_finite, check_array, check_bool, check_choice, check_cotangent, \
    check_int, check_real, check_result
from ._common import float_ldexp, ldexp, rescaled
from ._linalg import mT, ns_schedule
from .decomp import thin_svd
from .iterative import newton_schulz, newton_schulz_vjp

__all__ = ["clip_singular_values", "clip_singular_values_vjp", "clip_conv_singular_values", "mclip", "mclip_vjp"]

#: The most frequencies times channel pairs :func:`transfer_matrices` accepts (``n·m·c_out·c_in``): the
#: bound of :func:`clip_conv_singular_values` and :func:`orthoref.analysis.conv_singular_values`.
MAX_CONV_OPERATOR = 1 << 28

#: The routes of :func:`mclip`.
MCLIP_METHODS = ("newton_schulz", "svd")

_WEIGHT = "(a weight (out, in, ...))"


# ---------------------------------------------------------------------------------------------------------
# Validation, the matrix view, the clip.

def _check_weight(who, W):
    return check_array(who, W, "W", what=_WEIGHT)


def _bounds(who, lo, hi):
    """``(lo, hi)`` as Python floats or None: ``lo >= 0``, ``hi > 0``, ``lo <= hi``."""
    lo = None if lo is None else check_real(who, "lo", lo, 0.0)
    hi = None if hi is None else check_real(who, "hi", hi, 0.0, lo_open=True)
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"{who}: lo must be <= hi, got lo = {lo!r} and hi = {hi!r}")
    return lo, hi


def _tall(A):
    """``(Aᵀ, True)`` for a wide ``A``, else ``(A, False)``: the clip commutes with the transpose."""
    return (A.T, True) if A.shape[0] < A.shape[1] else (A, False)


def _matrix(W):
    return _tall(W.reshape(W.shape[0], -1))


def _unmatrix(xp, Y, wide, shape):
    return xp.ascontiguousarray(Y.T if wide else Y).reshape(shape)


def _eps(dtype):
    return float(np.finfo(dtype).eps)


def _check_lift(who, M, s, lo, name="W"):
    """``lo > 0`` lifts the zero singular values of a rank-deficient ``M``: ``U g(Σ) Vᵀ`` then depends on the
    arbitrary singular vectors of the null space, so it is not a function of ``M``."""
    if lo and float(s[-1]) <= max(M.shape) * _eps(M.dtype) * float(s[0]):
        raise ValueError(f"{who}: {name} is numerically rank deficient (σ_min <= max(n, k)·eps·σ_max) and lo = "
                         f"{lo:g} > 0 would lift its zero singular values along arbitrary singular vectors: the "
                         f"result is not unique")


def _clipped(xp, s, e, lo, hi):
    """``(g·2^-f, f)`` with ``g = clip(s·2^e, lo, hi)``, in ``s``'s dtype, ``f`` chosen so that
    ``max g·2^-f`` is about 1: neither a huge ``σ`` nor a ``lo`` far above tiny ones overflows."""
    big = float(s[0])
    exps = [e + math.frexp(big)[1]] if big > 0 else []
    if lo:
        exps.append(math.frexp(lo)[1])
    f = max(exps) if exps else 0
    g = ldexp(xp, s, e - f)
    if lo:
        g = xp.maximum(g, float_ldexp(lo, -f))
    if hi is not None and float_ldexp(hi, -f) <= float(np.finfo(s.dtype).max):
        g = xp.minimum(g, float_ldexp(hi, -f))
    return g.astype(s.dtype, copy=False), f


def _clip_matrix(who, xp, M, lo, hi, name="W"):
    """``U clip(Σ) Vᵀ`` of a tall ``M`` at any representable scale (exact power-of-two rescaling)."""
    Ms, e = rescaled(xp, M)
    U, s, Vh = thin_svd(who, Ms, name)
    _check_lift(who, Ms, s, lo, name)
    g, f = _clipped(xp, s, e, lo, hi)
    with np.errstate(over="ignore"):
        Y = ldexp(xp, (U * g) @ Vh, f)
    return check_result(who, Y, hint="the clipped matrix is not representable in its dtype: use float64")


def clip_singular_values(W, lo=None, hi=None):
    """Clip the singular values of a weight into ``[lo, hi]``: ``U clip(Σ, lo, hi) Vᵀ`` for ``M = U Σ Vᵀ``,
    ``M = W.reshape(W.shape[0], -1)``, reshaped back.

    .. math::  F(M) = U \\operatorname{diag}\\big(\\min(\\max(\\sigma_i, lo), hi)\\big) V^\\top

    the nearest matrix (Frobenius and spectral norm) whose singular values lie in ``[lo, hi]``.

    Parameters
    ----------
    W : array (out, in, ...)
        Float32 or float64, at least 2-D (a Linear weight, a conv kernel ``(out, in, kh, kw)``, ...).
    lo : float >= 0 or None
        Lower bound (None: no lower bound; singular values below ``lo`` are raised to it).
    hi : float > 0 or None
        Upper bound (None: none), ``hi >= lo``. Both None: ``W`` itself (a copy, up to rounding).

    Returns
    -------
    array, the shape and dtype of ``W``

    Raises
    ------
    TypeError, ValueError
        A bad ``W``, ``lo``, ``hi`` (``lo > hi`` included); ``lo > 0`` with a numerically rank-deficient
        ``M`` (``σ_min <= max(n, k)·eps·σ_max``: lifting a zero singular value along an arbitrary singular
        vector is not a function of ``W``); an SVD that does not converge.
    NonFiniteError
        When the result is not representable (``W`` near the float maximum and ``hi`` None).

    Notes
    -----
    One ``gesdd`` and one GEMM. Computed at any representable scale of ``W`` (the SVD on ``W·2^-e``, the
    bounds scaled alike). Singular value bounding (Jia et al., CVPR 2017): ``clip_singular_values(W,
    1/(1+ε), 1+ε)``; their code clips the ``W`` of each layer after every epoch through its SVD, as here.
    PyTorch and SciPy have no routine; ``U, S, Vh = torch.linalg.svd(M, full_matrices=False);
    U @ diag(S.clamp(lo, hi)) @ Vh`` computes the same (the twin in :mod:`orthoref.oracle.torch_twins`), but its
    backward is NaN at repeated singular values, where :func:`clip_singular_values_vjp` is exact.
    """
    who = "clip_singular_values"
    xp = _check_weight(who, W)
    lo, hi = _bounds(who, lo, hi)
    M, wide = _matrix(W)
    return _unmatrix(xp, _clip_matrix(who, xp, M, lo, hi), wide, W.shape)


def _regions(who, s, e, lo, hi, shape):
    """``(g, below, above)`` in float64 units of ``s`` (``σ·2^-e``): the clipped values and which ``σ_i`` lie
    below ``lo`` / above ``hi``; ``ValueError`` when a ``σ_i`` is within ``max(n, k)·eps·σ_max`` of a bound."""
    xp = get_array_module(s)
    s64 = s.astype(xp.float64)
    tol = max(shape) * _eps(s.dtype) * float(s64[0])
    below = xp.zeros(s64.shape, dtype=bool)
    above = xp.zeros(s64.shape, dtype=bool)
    g = s64
    for name, b in (("lo", lo), ("hi", hi)):
        if b is None:
            continue
        be = float_ldexp(b, -e)
        near = xp.abs(s64 - be) <= tol
        if bool(near.any()):
            i = int(xp.argmax(near))
            raise ValueError(f"{who}: singular value σ_{i} of W lies on the clip bound {name} = {b:g} (within "
                             f"max(n, k)·eps·σ_max): the clip has no derivative there")
        if name == "lo":
            below = s64 < be
            g = xp.where(below, be, g)
        else:
            above = s64 > be
            g = xp.where(above, be, g)
    return s64, g, below, above


def _divided_differences(s64, g, below, above):
    """``D1_ij = (g_i − g_j)/(σ_i − σ_j)`` (the slope ``g'`` on the diagonal and between ``σ`` of one linear
    piece: no division, so ties are exact) and ``D2_ij = (g_i + g_j)/(σ_i + σ_j)`` (1 between two ``σ`` of
    the identity piece, zeros included)."""
    xp = get_array_module(s64)
    mid = ~(below | above)
    region = xp.where(below, 0, xp.where(above, 2, 1))
    same = region[:, None] == region[None, :]
    den = s64[:, None] - s64[None, :]
    D1 = xp.where(same, mid[:, None] * 1.0, (g[:, None] - g[None, :]) / xp.where(same, 1.0, den))
    both_mid = mid[:, None] & mid[None, :]
    tot = s64[:, None] + s64[None, :]
    D2 = xp.where(both_mid, 1.0, (g[:, None] + g[None, :]) / xp.where(both_mid | (tot == 0), 1.0, tot))
    return D1, D2


def _spectral_backward(U, Vh, G, D1, D2):
    """``M̄ = U [D1 ∘ sym(X) + D2 ∘ skew(X)] Vᵀ + (I − UUᵀ) Ḡ V diag(D2_ii) Vᵀ``, ``X = Uᵀ Ḡ V`` (tall ``M``)."""
    V = mT(Vh)
    GV = G @ V
    X = mT(U) @ GV
    core = D1 * (X + mT(X)) + D2 * (X - mT(X))
    core *= 0.5
    out = U @ (core @ Vh)
    if U.shape[-2] > U.shape[-1]:
        d = D2.diagonal()
        out += ((GV - U @ X) * d) @ Vh
    return out


def _clip_vjp_matrix(who, xp, M, G, lo, hi):
    Ms, e = rescaled(xp, M)
    U, s, Vh = thin_svd(who, Ms, "W")
    _check_lift(who, Ms, s, lo)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        s64, g, below, above = _regions(who, s, e, lo, hi, Ms.shape)
        D1, D2 = _divided_differences(s64, g, below, above)
        out = _spectral_backward(U, Vh, G, D1.astype(M.dtype), D2.astype(M.dtype))
    return check_result(who, out, "the gradient", hint="it grows like lo/σ_min: use float64 or rescale W")


def clip_singular_values_vjp(W, grad_out, lo=None, hi=None):
    """Gradient of ``⟨grad_out, clip_singular_values(W, lo, hi)⟩`` with respect to ``W``.

    For tall ``M = UΣVᵀ`` (thin; wide ``M`` by transposition), ``g`` the clip and ``X = Uᵀ Ḡ V``:

    .. math::  \\bar M = U \\big[D_1 \\circ \\tfrac{X + X^\\top}{2} + D_2 \\circ \\tfrac{X - X^\\top}{2}\\big] V^\\top
               + (I - UU^\\top)\\, \\bar G\\, V \\operatorname{diag}\\!\\big(g(\\sigma_i)/\\sigma_i\\big) V^\\top,

    .. math::  (D_1)_{ij} = \\frac{g(\\sigma_i) - g(\\sigma_j)}{\\sigma_i - \\sigma_j}, \\; (D_1)_{ii} = g'(\\sigma_i),
               \\qquad (D_2)_{ij} = \\frac{g(\\sigma_i) + g(\\sigma_j)}{\\sigma_i + \\sigma_j}.

    Derivation: with ``C = Uᵀ dM V``, the derivative of a spectral function ``U g(Σ) Vᵀ`` is ``Uᵀ dF V =
    D₁ ∘ sym(C) + D₂ ∘ skew(C)`` (the identity ``g(σ) = σ`` gives ``D₁ = D₂ = 1``, ``dF = dM``; ``g = 1``
    gives the polar factor's ``skew(C)·2/(σ_i + σ_j)``) plus ``(I − UUᵀ) dM V diag(g/σ) Vᵀ`` on the
    complement of ``U``; the map is self-adjoint in this form, so the VJP has the same coefficients.

    **Where the derivative exists.** ``g`` is piecewise linear (constant ``lo``, identity, constant ``hi``),
    so the divided differences of two ``σ`` in one piece are its slope (1 or 0) without a division: ties
    (repeated singular values, an orthogonal ``W``) are exact -- the derivative of a spectral function exists
    at repeated ``σ`` when ``g`` is smooth there. It does not exist where a ``σ_i`` sits on ``lo`` or ``hi``
    (``g`` has a kink); within ``max(n, k)·eps·σ_max`` of a bound the computed ``σ_i`` cannot tell the
    sides apart, and this raises ``ValueError``. ``lo > 0`` with a rank-deficient ``M`` raises as
    :func:`clip_singular_values` does.

    Parameters
    ----------
    W : array (out, in, ...)
    grad_out : array
        Exactly ``W``'s shape and dtype, finite.
    lo, hi : float or None
        As given to :func:`clip_singular_values`.

    Returns
    -------
    array, the shape and dtype of ``W``

    Raises
    ------
    TypeError, ValueError
        As :func:`clip_singular_values`, a bad ``grad_out``, a ``σ_i`` on a bound.
    NonFiniteError
        When the gradient is not representable (it grows like ``lo/σ_min``).

    Notes
    -----
    PyTorch's ``torch.linalg.svd`` backward forms ``1/(σ_i² − σ_j²)`` and returns NaN or garbage at repeated
    singular values even where the clip is smooth; JAX's likewise.
    """
    who = "clip_singular_values_vjp"
    xp = _check_weight(who, W)
    lo, hi = _bounds(who, lo, hi)
    check_cotangent(who, "grad_out", grad_out, W.shape, W.dtype)
    M, wide = _matrix(W)
    G = grad_out.reshape(M.shape[::-1] if wide else M.shape)
    G = G.T if wide else G
    return _unmatrix(xp, _clip_vjp_matrix(who, xp, M, G, lo, hi), wide, W.shape)


# ---------------------------------------------------------------------------------------------------------
# The convolution operator (Sedghi, Gupta & Long 2019).

def transfer_matrices(who, K, input_shape):
    """The transfer matrices ``P(u, v) = Σ_{a,b} K[:, :, a, b] ω_n^{ua} ω_m^{vb}`` of the circular
    convolution with kernel ``K`` (``(c_out, c_in, kh, kw)``) on ``n × m`` images: the 2-D DFT of ``K``
    zero-padded to ``(n, m)``, as a complex128 array ``(n, m, c_out, c_in)``; ``K`` and ``input_shape``
    validated for ``who``. Shared with :func:`orthoref.analysis.conv_singular_values`; not in ``__all__``."""
    xp = check_array(who, K, "K", ndim=(4,), what="(c_out, c_in, kh, kw)")
    if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__len__") or len(input_shape) != 2:
        raise TypeError(f"{who}: input_shape must be a pair of ints (n, m), got {input_shape!r}")
    c_out, c_in, kh, kw = K.shape
    n = check_int(who, "input_shape[0]", input_shape[0], kh)
    m = check_int(who, "input_shape[1]", input_shape[1], kw)
    if n * m * c_out * c_in > MAX_CONV_OPERATOR:
        raise ValueError(f"{who}: input_shape {(n, m)} with {c_out}x{c_in} channels asks for {n * m} SVDs of "
                         f"{c_out}x{c_in} matrices, more than {MAX_CONV_OPERATOR} entries in all")
    with np.errstate(over="ignore", invalid="ignore"):     # K near the float maximum: the check below
        P = xp.fft.fft2(K.astype(xp.float64, copy=False), s=(n, m), axes=(2, 3)).transpose(2, 3, 0, 1)
    if not all_finite(xp, P):
        raise NonFiniteError(f"{who}: the DFT of K overflows float64; rescale K")
    return P


def clip_conv_singular_values(K, input_shape, lo=None, hi=None, project=True):
    """Clip the singular values of the convolution *operator* of kernel ``K`` on ``n × m`` images (circular
    padding, stride 1) into ``[lo, hi]``, then project back onto the ``kh × kw`` support (Sedghi, Gupta &
    Long, ICLR 2019, "The Singular Values of Convolutional Layers", Section 4: clip, then project).

    .. math::  P(u, v) = U_{uv} \\Sigma_{uv} V_{uv}^H \\;\\mapsto\\; U_{uv}\\, \\operatorname{clip}(\\Sigma_{uv})\\,
               V_{uv}^H, \\qquad K' = \\operatorname{Re}\\,\\mathrm{IDFT}(P')\\big|_{k_h \\times k_w}

    Every singular value of the operator is a singular value of one ``c_out × c_in`` transfer matrix
    ``P(u, v)`` (the 2-D DFT of ``K`` zero-padded to ``n × m``; :func:`orthoref.analysis.conv_singular_values`
    lists them), so clipping each ``P(u, v)`` clips the operator exactly; its inverse DFT is a real kernel of
    full ``n × m`` support (the clipped spectrum keeps ``P(−u, −v) = conj P(u, v)``).

    Parameters
    ----------
    K : array (c_out, c_in, kh, kw)
        Float32 or float64 (PyTorch layout; cross-correlation and convolution have the same singular values
        and the same clipped kernel).
    input_shape : (int, int)
        The image size ``(n, m)``, ``n >= kh``, ``m >= kw``.
    lo : float >= 0 or None
    hi : float > 0 or None
        The bounds (``lo <= hi``); Sedghi et al. clip from above only (``hi``).
    project : bool
        True (default): the kernel restricted to the original ``kh × kw`` support (shape of ``K``), as the
        paper does after each clip. False: the full ``(c_out, c_in, n, m)`` kernel of the clipped operator,
        whose singular values lie in ``[lo, hi]`` exactly.

    Returns
    -------
    array (c_out, c_in, kh, kw), or (c_out, c_in, n, m) with ``project=False``; ``K``'s dtype

    Raises
    ------
    TypeError, ValueError
        A bad ``K``, ``input_shape`` (see :func:`orthoref.analysis.conv_singular_values`), bounds or
        ``project``; ``lo > 0`` with a transfer matrix that is numerically rank deficient (its lifted
        singular vectors would be arbitrary).
    NonFiniteError
        When the DFT or the result overflows.

    Notes
    -----
    **The projection moves the singular values again**: a kernel of ``kh × kw`` support is a projection of
    the clipped operator, not the clipped operator, and its singular values can leave ``[lo, hi]``. The
    paper alternates the two steps (clip, project) and reports that a few rounds bring the operator norm
    near the bound; ``tests/test_ortho_singular.py`` shows the operator's ``σ_max`` decreasing towards
    ``hi`` over repeated calls. Cost: ``n·m`` SVDs of ``c_out × c_in`` (complex) and two FFTs, in complex128
    whatever ``K``'s dtype (the result is cast back). Their code (TensorFlow layout ``(kh, kw, c_in,
    c_out)``, NumPy) uses ``np.fft.fft2(kernel, input_shape, axes=[0, 1])`` and ``np.minimum(D,
    clip_to)``; this is the same map in PyTorch layout with an optional lower bound. Zero padding (PyTorch's
    default) is a different operator at the borders; circular padding is the exact case. No VJP: the
    projection is a training-time proximal step, not a layer.
    """
    who = "clip_conv_singular_values"
    P = transfer_matrices(who, K, input_shape)
    lo, hi = _bounds(who, lo, hi)
    project = check_bool(who, "project", project)
    xp = get_array_module(P)
    U, s, Vh = thin_svd(who, P, "the transfer matrices of K")
    if lo:
        tol = max(P.shape[-2:]) * _eps(K.dtype) * s[..., :1]
        bad = s[..., -1:] <= tol
        if bool(bad.any()):
            u, v = (int(i) for i in np.unravel_index(int(xp.argmax(bad.reshape(-1))), P.shape[:2]))
            raise ValueError(f"{who}: the transfer matrix of K at frequency ({u}, {v}) is numerically rank "
                             f"deficient and lo = {lo:g} > 0 would lift its zero singular values along arbitrary "
                             f"singular vectors: the result is not unique")
    g = s
    if lo:
        g = xp.maximum(g, lo)
    if hi is not None:
        g = xp.minimum(g, hi)
    Pc = (U * g[..., None, :]) @ Vh
    full = xp.fft.ifft2(Pc.transpose(2, 3, 0, 1), axes=(2, 3)).real
    out = full[:, :, :K.shape[2], :K.shape[3]] if project else full
    with np.errstate(over="ignore"):
        out = xp.ascontiguousarray(out).astype(K.dtype)
    return check_result(who, out, hint="rescale K or use float64")


# ---------------------------------------------------------------------------------------------------------
# mclip: min(σ, 1) without an SVD.

def _mclip_args(who, W, method, steps, coefficients):
    xp = _check_weight(who, W)
    method = check_choice(who, "method", method, MCLIP_METHODS)
    ns_schedule(who, coefficients, steps)                  # validates both, naming who
    return xp, method


def _msign(who, A, steps, coefficients, grad_out=None):
    """``msign(A)`` by Newton–Schulz (``eps = 0``), or its unrolled VJP with ``grad_out``; an overflow is
    reported by ``who``."""
    try:
        if grad_out is None:
            return newton_schulz(A, steps=steps, coefficients=coefficients, eps=0.0)
        return newton_schulz_vjp(A, grad_out.astype(A.dtype, copy=False), steps=steps, coefficients=coefficients,
                                 eps=0.0)
    except NonFiniteError as exc:
        raise NonFiniteError(f"{who}: the Newton–Schulz iteration overflows ({exc}); use method='svd'") from None


def _gram_minus_identity(who, xp, M):
    """``MᵀM − I`` of a tall ``M`` (the smaller Gram matrix); ``NonFiniteError`` on overflow."""
    with np.errstate(over="ignore", invalid="ignore"):
        G = M.T @ M
    G = check_result(who, G, "the Gram matrix of W", hint="use method='svd', which works at any scale")
    d = xp.arange(G.shape[0])
    G[d, d] -= 1
    return G


#: ``eps·‖W‖_F`` beyond which the Newton–Schulz route of :func:`mclip` refuses: its absolute error grows like
#: ``eps·σ_max`` (``W`` and ``msign(W)`` cancel on the clipped directions) and would exceed 1% of the result.
_MCLIP_CANCELLATION = 1e-2


def _mclip_parts(who, xp, M, steps, coefficients):
    """``(Q, S, D, G)`` of a tall ``M``: ``Q = msign(M)``, ``G = MᵀM − I``, ``S = msign(G)``, ``D = M − Q``."""
    Ms, e = rescaled(xp, M)
    norm = float_ldexp(float(xp.linalg.norm(Ms)), e)             # ‖M‖_F without overflow
    if _eps(M.dtype) * norm > _MCLIP_CANCELLATION:
        raise ValueError(f"{who}: W is too large for method='newton_schulz' (‖W‖_F = {norm:.3g} in "
                         f"{np.dtype(M.dtype).name}): its error grows like eps·σ_max, W and msign(W) cancel on the "
                         f"clipped directions; use method='svd', which works at any scale")
    G = _gram_minus_identity(who, xp, M)
    S = _msign(who, G, steps, coefficients)
    Q = _msign(who, M, steps, coefficients)
    return Q, S, M - Q, G


def mclip(W, method="newton_schulz", steps=None, coefficients="polar_express"):
    """Clip the singular values of a weight at 1, ``U min(Σ, 1) Vᵀ`` (``M = W.reshape(out, -1)``), without
    an SVD: from two matrix signs (``msign``, the polar factor computed by Newton–Schulz).

    With ``M = U Σ Vᵀ``, ``Q = msign(M) = U Vᵀ`` and ``min(σ, 1) = ½(σ + 1 − |σ − 1|)``:

    .. math::  \\operatorname{mclip}(M) = \\tfrac12\\big[M + Q - (M - Q)\\, S\\big], \\qquad
               S = \\operatorname{msign}(M^\\top M - I)

    (a wide ``M`` is transposed first, so ``MᵀM`` is the smaller Gram matrix). Proof:
    ``M − Q = U (Σ − I) Vᵀ`` and ``MᵀM − I = V (Σ² − I) Vᵀ``, whose matrix sign is ``V sign(Σ − I) Vᵀ``
    (``σ ≥ 0``), so ``(M − Q) S = U |Σ − I| Vᵀ``. An equivalent form is ``(M − Q) msign(M − Q)ᵀ Q`` (Su's
    nested ``msign``); this one has a useful error structure: with an inexact ``Q = U p(Σ) Vᵀ`` and an exact
    sign, every ``σ < 1`` comes out exactly (``½(σ + p + σ − p) = σ``, up to rounding) and every ``σ > 1`` as
    ``p(σ)`` -- the error is that of the polar factor on the clipped directions only, plus that of the sign
    near ``σ = 1`` (where ``|σ − p(σ)|`` is small).

    Parameters
    ----------
    W : array (out, in, ...)
        Float32 or float64, at least 2-D.
    method : {"newton_schulz", "svd"}
        ``"newton_schulz"``: the formula above, each ``msign`` by :func:`orthoref.ortho.newton_schulz` with
        ``eps = 0`` (GEMMs only); ``"svd"``: ``clip_singular_values(W, hi=1)`` (exact).
    steps : int or None
        Newton–Schulz steps of each ``msign`` (None: the table's length, 8 for ``"polar_express"``).
    coefficients : str or (m, 3) array_like
        The Newton–Schulz table (:data:`orthoref.ortho.NS_COEFFICIENTS` or your own rows).

    Returns
    -------
    array, the shape and dtype of ``W``

    Raises
    ------
    TypeError, ValueError
        A bad ``W``, ``method``, ``steps`` or ``coefficients``.
        ``"newton_schulz"`` with ``eps·‖W‖_F > 1e-2`` (``‖W‖_F`` beyond about ``4e13`` in float64, ``8e4`` in
        float32: the cancellation described below; use ``"svd"``, which works at any scale).
    NonFiniteError
        ``"newton_schulz"`` when the iteration diverges (a user table).

    Notes
    -----
    Cost of ``"newton_schulz"``: ``6·steps + 2`` GEMMs for a quintic table (three per step and per
    ``msign``, the Gram matrix and the product with ``S``), every Gram matrix on the small side. Accuracy,
    ``max |mclip − mclip(method="svd")|`` for a 64 x 32 ``W`` with singular values spread over ``[0.1, 3]``, ``[0.01, 10]`` or
    ``[0.001, 3.2]`` (Polar Express coefficients; ``tests/test_ortho_singular.py`` prints the table):

    =====  =====  =================  =================
    steps  GEMMs  float64            float32
    =====  =====  =================  =================
    4      26     0.14 -- 0.37       0.14 -- 0.37
    5      32     2e-2 -- 7e-2       2e-2 -- 7e-2
    6      38     3e-4 -- 8e-4       3e-4 -- 8e-4
    8      50     1e-15 (rounding)   8e-7 (rounding)
    =====  =====  =================  =================

    8 steps, the table's length, is the default: from there on the result is the SVD route's to rounding,
    which here means an *absolute* error of about ``eps·max(1, σ_max)`` (``W`` and ``msign(W)``, both kept
    in the formula, cancel on the clipped directions; a ``W`` with ``eps·‖W‖_F > 1e-2`` is refused with a
    ``ValueError``: use ``"svd"``). Two limits of the iteration: the Frobenius normalization of each
    ``msign`` input (``‖·‖_F``, not ``σ_max``) sets how many steps a spread spectrum needs, and a ``σ`` so
    close to 1 that ``σ² − 1`` is below about ``1e-3·‖MᵀM − I‖_F`` has an unresolved sign: its error is at
    most ``|σ − 1|`` (``σ = 1.005`` next to ``σ_max = 6.5``: 7e-5 with 8 steps, 2e-15 with 12).

    Jianlin Su ("Computing singular value clipping mclip via msign", parts 1 and 2, kexue.fm 2025) and
    @leloykun derive ``msign``-based forms of the same map; Su's part 2 reports the numerical error of nested
    ``msign`` forms, which this one avoids (``S``'s input is ``MᵀM − I``, not the output of another
    iteration).
    """
    who = "mclip"
    xp, method = _mclip_args(who, W, method, steps, coefficients)
    M, wide = _matrix(W)
    if method == "svd":
        return _unmatrix(xp, _clip_matrix(who, xp, M, None, 1.0), wide, W.shape)
    Q, S, D, _ = _mclip_parts(who, xp, M, steps, coefficients)
    Y = M + Q
    Y -= D @ S
    Y *= 0.5
    return _unmatrix(xp, Y, wide, W.shape)


def mclip_vjp(W, grad_out, method="newton_schulz", steps=None, coefficients="polar_express"):
    """Gradient of ``⟨grad_out, mclip(W, method, steps, coefficients)⟩`` with respect to ``W``.

    ``"svd"``: :func:`clip_singular_values_vjp` with ``hi = 1`` (raises when a singular value is 1 within
    rounding: ``min(σ, 1)`` has a kink there). ``"newton_schulz"``: the exact gradient of the computed value,
    the chain rule through ``Y = ½[M + Q − (M − Q) S]`` (``Ȳ' = Ȳ/2``):

    .. math::  \\bar M = \\bar Y' - \\bar Y' S^\\top + J_Q^\\top(\\bar Y' + \\bar Y' S^\\top)
               + M(\\bar G + \\bar G^\\top), \\qquad \\bar G = J_S^\\top\\big(-(M - Q)^\\top \\bar Y'\\big)

    with ``J_Qᵀ``, ``J_Sᵀ`` the unrolled Newton–Schulz backward passes of :func:`orthoref.ortho.newton_schulz_vjp`
    (through every step and the normalization) and ``G = MᵀM − I`` (``M`` in its tall orientation).

    Parameters
    ----------
    W : array (out, in, ...)
    grad_out : array
        Exactly ``W``'s shape and dtype, finite.
    method, steps, coefficients
        As given to :func:`mclip`.

    Returns
    -------
    array, the shape and dtype of ``W``

    Raises
    ------
    TypeError, ValueError
        As :func:`mclip`, a bad ``grad_out``, a singular value on the kink (``"svd"``).
    NonFiniteError
        When the gradient overflows.
    """
    who = "mclip_vjp"
    xp, method = _mclip_args(who, W, method, steps, coefficients)
    check_cotangent(who, "grad_out", grad_out, W.shape, W.dtype)
    M, wide = _matrix(W)
    Gbar = grad_out.reshape(M.shape[::-1] if wide else M.shape)
    Gbar = Gbar.T if wide else Gbar
    if method == "svd":
        return _unmatrix(xp, _clip_vjp_matrix(who, xp, M, Gbar, None, 1.0), wide, W.shape)
    Q, S, D, G = _mclip_parts(who, xp, M, steps, coefficients)
    with np.errstate(over="ignore", invalid="ignore"):
        Yb = 0.5 * Gbar
        YS = Yb @ S.T
        Gb = _msign(who, G, steps, coefficients, grad_out=-(D.T @ Yb))
        out = Yb - YS
        out += _msign(who, M, steps, coefficients, grad_out=Yb + YS)
        out += M @ (Gb + Gb.T)
    out = check_result(who, out, "the gradient", hint="use float64 or rescale W")
    return _unmatrix(xp, out, wide, W.shape)
