r"""Cayley map, matrix exponential and Stiefel geometry, each map with its exact backward pass.

Maps of a square matrix (any batch shape ``(..., n, n)``), with ``NAME_vjp(A, grad_out, **kw)`` the
gradient with respect to ``A``:

- :func:`cayley` -- ``Q = (I - A/2)^{-1} (I + A/2)``, PyTorch's ``"cayley"`` map of
  ``torch.nn.utils.parametrizations.orthogonal`` (``torch.linalg.solve(I - A/2, I + A/2)``; its comment
  writes the same matrix as ``(I + A/2)(I - A/2)^{-1}``: the two factors commute).
- :func:`expm_skew` -- ``Q = exp(A)`` through :func:`scipy.linalg.expm`, PyTorch's ``"matrix_exp"`` map.

Both are orthogonal for a skew-symmetric ``A``. They are **defined on every square** ``A`` (the formulas
are), and ``A`` is used as given: skewness is checked only when asked (``check_skew=True``). The
finite-difference oracle may thus perturb ``A`` in any direction.

Stiefel geometry, for ``W`` of shape ``(..., n, p)`` with orthonormal columns (``n >= p``) and tangent
vectors ``Z`` (``WᵀZ`` skew):

- :func:`project_tangent` -- ``"euclidean"``: ``G - W sym(WᵀG)`` (the orthogonal projection onto the
  tangent space in the Frobenius metric); ``"canonical"``: ``G - W Gᵀ W`` (Edelman et al.'s Riemannian
  gradient for the canonical metric).
- :func:`retract` -- ``"qr"``, ``"polar"``, ``"cayley"`` (Wen & Yin 2013), ``"exp"`` (the canonical-metric
  geodesic, Edelman, Arias & Smith 1998).
- :func:`cayley_iterative` -- the fixed-point iteration of Li, Fuxin & Todorovic (ICLR 2020); its
  backward :func:`cayley_iterative_vjp` is unrolled through the iterations.

``retract_vjp`` and ``cayley_iterative_vjp`` return ``(W̄, Z̄)``. ``retract_vjp(..., "exp")`` differentiates
the forward's QR exactly when ``(I - WWᵀ)Z`` has full column rank (``n >= 2p``) or ``n == p``; otherwise
(``p < n < 2p``, ``Z = 0``) it differentiates the equal ``n x n`` form, exact along the manifold only.

Sign convention: every retraction satisfies ``retract(W, Z) = W + Z + O(‖Z‖²)`` for tangent ``Z`` (Wen &
Yin write ``Y(τ) = (I + τA/2)^{-1}(I - τA/2) W`` with ``A = G Wᵀ - W Gᵀ`` for a *gradient* ``G``, i.e.
a step along ``-G``; here the step ``Z`` enters with a plus sign, ``A = P Z Wᵀ - W Zᵀ P``,
``P = I - WWᵀ/2``, and ``Y = (I - A/2)^{-1}(I + A/2) W``, so ``A W = Z`` for tangent ``Z``).

Failure model: bad arguments raise ``TypeError``/``ValueError`` naming the function and the argument
(``grad_out`` must have exactly the output's shape and dtype and be finite; ``iterations`` is an int up to
``MAX_ITERATIONS``; flags are bools); LAPACK failures (a singular ``I - A/2``) raise ``ValueError``, never
``LinAlgError``; a result that overflows raises ``NonFiniteError`` suggesting float64 or rescaling, as does
a matrix exponential of a generator whose 1-norm exceeds ``2^-8/eps`` (no reliable digit there). The
``"qr"``/``"polar"`` retractions are scale-invariant in ``W + Z`` and work at any representable scale.

Backend: ``xp = get_array_module(A)``; ``solve``/``qr``/``svd`` broadcast on NumPy and CuPy. Host round
trip: CuPy has no ``expm_frechet`` (and no batched ``expm``), so the matrix exponential and its Fréchet
derivative (in :func:`expm_skew`, :func:`expm_skew_vjp`, ``retract``/``retract_vjp`` with
``method="exp"``) are SciPy's, computed on host copies and moved back to the input's device through
:func:`orthoref.backend.on_host`; everything around them stays on the device, and NumPy inputs take the
same SciPy path without a copy. float32 stays float32 (``scipy.linalg.expm_frechet`` computes in float64;
its result is cast back).
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module, on_host
from .._checks import MAX_ITERATIONS, NonFiniteError, check_array, check_bool, check_choice, check_cotangent, check_int, \
    check_real, check_result
from ._common import ldexp, linalg_errors, rescaled
from ._linalg import mT, sign_fix
from .metrics import fro_error

__all__ = [
    "cayley", "cayley_vjp", "expm_skew", "expm_skew_vjp", "METRICS", "project_tangent", "project_tangent_vjp",
    "RETRACTIONS", "retract", "retract_vjp", "cayley_iterative", "cayley_iterative_vjp",
]

METRICS = ("euclidean", "canonical")
RETRACTIONS = ("qr", "polar", "cayley", "exp")


# ---------------------------------------------------------------------------------------------------------
# Validation and small helpers.

def _check_array(who, name, A, square=False, tall=False):
    return check_array(who, A, name, square=square, tall=tall,
                       what="(..., n, n)" if square else "(..., n, p)")


def _check_same(who, name, B, ref_name, ref):
    _check_array(who, name, B)
    if tuple(B.shape) != tuple(ref.shape):
        raise ValueError(f"{who}: {name} must have the shape of {ref_name} {tuple(ref.shape)}, "
                         f"got {tuple(B.shape)}")
    if B.dtype != ref.dtype:
        raise TypeError(f"{who}: {name} must have the dtype of {ref_name} ({ref.dtype}), got {B.dtype}")


def _check_grad(who, grad_out, ref_name, ref):
    """A cotangent: exactly the output's shape (``ref``'s) and dtype, finite."""
    check_cotangent(who, "grad_out", grad_out, ref.shape, ref.dtype)


def _check_flags(who, check, tol):
    """``check`` a bool, ``tol`` None or a finite number > 0; returns them."""
    check = check_bool(who, "check", check)
    if tol is not None:
        tol = check_real(who, "tol", tol, 0.0, lo_open=True)
    return check, tol


def _result(who, Y, name="the result", args="the input"):
    """``NonFiniteError`` naming ``who`` when ``Y`` (from finite inputs) overflowed."""
    return check_result(who, Y, name, hint=f"use float64 or rescale {args}")


# ``expm`` of ``A`` has forward error of order ``‖A‖·eps``: past ``‖A‖_1 = 2^-8/eps`` (1.8e13 in float64,
# 32768 in float32) it has no reliable digit (scipy's float32 ``expm`` even returns NaN from about 1e5).
def _expm_bound(dtype):
    return 2.0 ** -8 / float(np.finfo(dtype).eps)


def _check_expm_norm(who, name, M, what):
    """``NonFiniteError`` (a ``ValueError``) when ``‖M‖_1`` (the largest over a batch) is beyond
    :func:`_expm_bound`: ``exp(M)`` would overflow (general ``M``) or have no correct digit (skew ``M``)."""
    dtype = np.dtype(M.real.dtype if np.dtype(M.dtype).kind == "c" else M.dtype)
    xp = get_array_module(M)
    with np.errstate(over="ignore"):
        norm = float(xp.abs(M).sum(axis=-2).max())
    bound = _expm_bound(dtype)
    if not norm <= bound:
        raise NonFiniteError(f"{who}: {name} is too large for the matrix exponential in {dtype.name}: {what} "
                             f"has 1-norm {norm:.3e} > {bound:.3e} (= 2^-8/eps), where exp overflows or has no "
                             f"reliable digit; use float64 or rescale {name}")


def _eye(xp, n, dtype):
    return xp.eye(n, dtype=dtype)


def _expm(M):
    """``exp(M)`` in ``M``'s dtype by :func:`scipy.linalg.expm` (batched). Host round trip: CuPy has no
    batched ``expm``; a device ``M`` is copied to the host and the result moved back (``on_host``)."""
    return on_host(_expm_host, M)


def _expm_host(M):
    from scipy.linalg import expm
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(expm(M), dtype=M.dtype)


def _check_orthonormal(who, W, tol):
    p = W.shape[-1]
    if tol is None:
        tol = float(np.sqrt(np.finfo(W.dtype).eps) * np.sqrt(p))
    err = fro_error(who, get_array_module(W), W)
    if not err <= tol:
        raise ValueError(f"{who}: W must have orthonormal columns, got ‖WᵀW - I‖_F = {err:.3e} > tol {tol:.1e} "
                         f"(pass check=False to use W as given)")


def _check_skew(who, A):
    xp = get_array_module(A)
    S = A + mT(A)
    err = float(xp.abs(S).max())
    scale = float(xp.abs(A).max())
    if err > 1e3 * np.finfo(A.dtype).eps * max(scale, 1.0):
        raise ValueError(f"{who}: A must be skew-symmetric (check_skew=True), got max|A + Aᵀ| = {err:.3e}")


# ---------------------------------------------------------------------------------------------------------
# Cayley map.

def cayley(A, check_skew=False):
    r"""The Cayley map ``Q = (I - A/2)^{-1} (I + A/2)``.

    Parameters
    ----------
    A : array (..., n, n)
        Used as given (any square matrix with ``I - A/2`` invertible); ``Q`` is orthogonal when ``A`` is
        skew-symmetric. ``check_skew=True`` raises ``ValueError`` unless ``A + Aᵀ ≈ 0``.

    Returns
    -------
    Q : array (..., n, n), the dtype of ``A``.

    Notes
    -----
    PyTorch's convention (``torch.nn.utils.parametrizations.orthogonal(..., orthogonal_map="cayley")``
    computes ``torch.linalg.solve(I - A/2, I + A/2)``). Its inverse is ``A = 2 (Q - I)(Q + I)^{-1}``.

    .. math:: Q = (I - A/2)^{-1}(I + A/2) = 2 (I - A/2)^{-1} - I

    Raises
    ------
    TypeError, ValueError
        A bad ``A`` or ``check_skew`` (a bool); ``ValueError`` when ``I - A/2`` is singular (``A`` has the
        eigenvalue 2; never for skew ``A``).
    NonFiniteError
        When ``Q`` overflows (``I - A/2`` nearly singular, ``A`` not skew).
    """
    who = "cayley"
    xp = _check_array(who, "A", A, square=True)
    if check_bool(who, "check_skew", check_skew):
        _check_skew(who, A)
    I = _eye(xp, A.shape[-1], A.dtype)
    with linalg_errors(who, "I - A/2 is singular (A has the eigenvalue 2); the Cayley map is undefined"), \
            np.errstate(over="ignore", invalid="ignore"):
        Q = xp.linalg.solve(I - 0.5 * A, xp.broadcast_to(I + 0.5 * A, A.shape))
    return _result(who, Q, args="A")


def cayley_vjp(A, grad_out, check_skew=False):
    r"""Gradient of ``<Ḡ, cayley(A)>`` with respect to ``A``.

    With ``M = I - A/2``, ``dQ = ½ M^{-1} dA (I + Q)`` and ``I + Q = 2 M^{-1}``, so

    .. math:: \bar A = ½ M^{-T} \bar G (I + Q)^T = M^{-T} \bar G M^{-T}.

    Parameters
    ----------
    A : array (..., n, n)
    grad_out : array (..., n, n), the cotangent ``Ḡ`` of ``Q``.
    """
    who = "cayley_vjp"
    xp = _check_array(who, "A", A, square=True)
    _check_grad(who, grad_out, "A", A)
    if check_bool(who, "check_skew", check_skew):
        _check_skew(who, A)
    M = _eye(xp, A.shape[-1], A.dtype) - 0.5 * A
    with linalg_errors(who, "I - A/2 is singular (A has the eigenvalue 2); the Cayley map is undefined"), \
            np.errstate(over="ignore", invalid="ignore"):
        X = xp.linalg.solve(mT(M), grad_out)                  # M^{-T} Ḡ
        g = mT(xp.linalg.solve(M, mT(X)))                    # (M^{-1} Xᵀ)ᵀ = X M^{-T}
    return _result(who, g, "the gradient", "A or grad_out")


# ---------------------------------------------------------------------------------------------------------
# Matrix exponential.

def expm_skew(A, check_skew=False):
    r"""``Q = exp(A)`` through :func:`scipy.linalg.expm` (scaling and squaring, Padé; batched).

    ``A`` (..., n, n) is used as given (orthogonal ``Q`` for skew ``A``; ``check_skew=True`` checks).
    PyTorch twin: ``torch.linalg.matrix_exp``. Host round trip on CuPy (SciPy's ``expm``, result moved
    back to ``A``'s device).

    Raises ``NonFiniteError`` (a ``ValueError``) when ``‖A‖_1 > 2^-8/eps`` (1.8e13 in float64, 32768 in
    float32): the computed exponential has forward error of order ``‖A‖·eps`` and no reliable digit
    beyond (for skew ``A`` it would not even be orthogonal), and when ``exp(A)`` overflows (``A`` not skew,
    with an eigenvalue beyond about 709 in float64, 88 in float32); ``TypeError``/``ValueError`` for a bad
    ``A`` or ``check_skew``.
    """
    who = "expm_skew"
    _check_array(who, "A", A, square=True)
    if check_bool(who, "check_skew", check_skew):
        _check_skew(who, A)
    _check_expm_norm(who, "A", A, "A")
    return _result(who, _expm(A), args="A")


def expm_skew_vjp(A, grad_out, check_skew=False):
    r"""Gradient of ``<Ḡ, exp(A)>`` with respect to ``A``: the Fréchet derivative of ``exp`` at ``Aᵀ`` in
    the direction ``Ḡ``,

    .. math:: \bar A = L_{\exp}(A^T, \bar G) = \int_0^1 e^{s A^T} \bar G e^{(1-s) A^T} ds,

    computed by :func:`scipy.linalg.expm_frechet` (Al-Mohy & Higham), one matrix at a time over a batch
    (``expm_frechet`` is not batched). Computed in float64, returned in the dtype of ``A``. Host round
    trip on CuPy (it has no ``expm_frechet``): computed on host copies, moved back to ``A``'s device.
    """
    who = "expm_skew_vjp"
    _check_array(who, "A", A, square=True)
    _check_grad(who, grad_out, "A", A)
    if check_bool(who, "check_skew", check_skew):
        _check_skew(who, A)
    _check_expm_norm(who, "A", A, "A")
    return _result(who, _expm_frechet_t(A, grad_out), "the gradient", "A or grad_out")


def _expm_frechet_t(A, grad_out):
    """``L_exp(Aᵀ, Ḡ)`` matrix by matrix (non-finite entries are left for the caller's check).

    ``L`` is linear in ``Ḡ``: a ``Ḡ`` far from 1 in magnitude is scaled by an exact power of two first and
    the result scaled back, so that SciPy's intermediate products cannot overflow where the result does not.
    Host round trip: CuPy has no ``expm_frechet``; device arrays are copied to the host and the result moved
    back (``on_host``)."""
    return on_host(_expm_frechet_t_host, A, grad_out)


def _expm_frechet_t_host(A, grad_out):
    from scipy.linalg import expm_frechet
    n = A.shape[-1]
    At = np.ascontiguousarray(mT(A)).reshape(-1, n, n)
    G, e = rescaled(np, np.asarray(grad_out).reshape(-1, n, n))
    out = np.empty(At.shape, dtype=A.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(At.shape[0]):
            out[k] = expm_frechet(At[k], G[k], compute_expm=False)
    return ldexp(np, out, e).reshape(A.shape)


# ---------------------------------------------------------------------------------------------------------
# Stiefel geometry: tangent projection.

def _sym(X):
    return 0.5 * (X + mT(X))


def project_tangent(W, G, metric="euclidean", check=True, tol=None):
    r"""Tangent vector at ``W`` from an ambient matrix ``G`` (a Euclidean gradient, a step).

    Parameters
    ----------
    W : array (..., n, p), orthonormal columns (``n >= p``).
    G : array (..., n, p)
    metric : ``"euclidean"`` or ``"canonical"``
        ``"euclidean"``: :math:`G - W\,\mathrm{sym}(W^TG)`, ``sym(X) = (X + Xᵀ)/2`` -- the orthogonal
        projection onto the tangent space in the Frobenius metric (idempotent, self-adjoint).
        ``"canonical"``: :math:`G - W G^T W` -- the Riemannian gradient of a function with Euclidean
        gradient ``G`` for the canonical metric ``g_c(ξ, η) = tr ξᵀ(I - WWᵀ/2)η`` (Edelman, Arias & Smith
        1998, eq. 2.53): tangent, and ``g_c(P, ξ) = <G, ξ>`` for every tangent ``ξ``; it is *not* a
        projection (it doubles the ``W WᵀG`` component of a tangent ``G``).
    check : bool
        Raise ``ValueError`` (with the measured ``‖WᵀW - I‖_F``) unless ``W`` is orthonormal to ``tol``
        (default ``sqrt(eps · p)``). With ``check=False`` the formula is applied to ``W`` as given.

    Returns
    -------
    P : array (..., n, p), ``WᵀP`` skew.

    Raises ``TypeError``/``ValueError`` for a bad ``W``, ``G``, ``metric``, ``check`` (a bool) or ``tol``
    (None or > 0), ``NonFiniteError`` when ``P`` overflows (``|G|`` near the float maximum).
    """
    who = "project_tangent"
    _check_array(who, "W", W, tall=True)
    _check_same(who, "G", G, "W", W)
    check_choice(who, "metric", metric, METRICS)
    check, tol = _check_flags(who, check, tol)
    if check:
        _check_orthonormal(who, W, tol)
    with np.errstate(over="ignore", invalid="ignore"):
        P = _project(W, G, metric)
    return _result(who, P, args="G")


def _project(W, G, metric):
    if metric == "euclidean":
        return G - W @ _sym(mT(W) @ G)
    return G - W @ (mT(G) @ W)


def project_tangent_vjp(W, G, grad_out, metric="euclidean", wrt="G", check=True, tol=None):
    r"""Backward of :func:`project_tangent`.

    The map is linear in ``G`` and self-adjoint for both metrics (``<Ḡ, G - WGᵀW> = <Ḡ - WḠᵀW, G>``), so
    the gradient with respect to ``G`` is ``project_tangent(W, Ḡ, metric)``. With respect to ``W``
    (``W`` used as given, any ``W``):

    - euclidean: ``W̄ = -½ (Ḡ GᵀW + G ḠᵀW + Ḡ WᵀG + G WᵀḠ)``
    - canonical: ``W̄ = -(Ḡ WᵀG + G WᵀḠ)``

    ``wrt``: ``"G"`` (default) returns ``Ḡ_G``; ``"W"`` returns ``W̄``; ``"both"`` returns ``(W̄, Ḡ_G)``.
    """
    who = "project_tangent_vjp"
    _check_array(who, "W", W, tall=True)
    _check_same(who, "G", G, "W", W)
    _check_grad(who, grad_out, "W", W)
    check_choice(who, "metric", metric, METRICS)
    check_choice(who, "wrt", wrt, ("G", "W", "both"))
    check, tol = _check_flags(who, check, tol)
    if check:
        _check_orthonormal(who, W, tol)
    Gb = grad_out
    gG = gW = None
    with np.errstate(over="ignore", invalid="ignore"):
        if wrt in ("G", "both"):
            gG = _result(who, _project(W, Gb, metric), "the gradient of G", "G or grad_out")
        if wrt in ("W", "both"):
            if metric == "euclidean":
                gW = -0.5 * (Gb @ (mT(G) @ W) + G @ (mT(Gb) @ W) + Gb @ (mT(W) @ G) + G @ (mT(W) @ Gb))
            else:
                gW = -(Gb @ (mT(W) @ G) + G @ (mT(W) @ Gb))
            gW = _result(who, gW, "the gradient of W", "G or grad_out")
    return {"G": gG, "W": gW}.get(wrt, (gW, gG))


# ---------------------------------------------------------------------------------------------------------
# Retractions.

def _cayley_factors(W, Z):
    """``PZ = Z - ½ W (WᵀZ)``: the skew generator is ``A = PZ Wᵀ - W PZᵀ`` (n x n, never formed)."""
    return Z - 0.5 * (W @ (mT(W) @ Z))


def _apply_A(W, PZ, X):
    """``A X`` for ``A = PZ Wᵀ - W PZᵀ``: O(n p k) flops."""
    return PZ @ (mT(W) @ X) - W @ (mT(PZ) @ X)


def _cayley_retract(W, Z):
    # Woodbury (Wen & Yin 2013, Lemma 4): A = U Vᵀ, U = [PZ, W], V = [W, -PZ] (n x 2p), then
    # Y = (I - A/2)^{-1}(I + A/2) W = W + U (I - ½ VᵀU)^{-1} VᵀW.
    xp = get_array_module(W)
    p = W.shape[-1]
    PZ = _cayley_factors(W, Z)
    U = xp.concatenate([PZ, W], axis=-1)
    V = xp.concatenate([W, -PZ], axis=-1)
    K = _eye(xp, 2 * p, W.dtype) - 0.5 * (mT(V) @ U)
    return W + U @ xp.linalg.solve(K, mT(V) @ W)


def _exp_retract(who, W, Z):
    # Edelman, Arias & Smith 1998, eq. 2.45: with A = skew(WᵀZ) (= WᵀZ for tangent Z) and QR = (I - WWᵀ)Z,
    # Y = [W, Q] expm([[A, -Rᵀ], [R, 0]]) [I; 0]; for n == p, Y = W expm(A).
    xp = get_array_module(W)
    n, p = W.shape[-2:]
    WtZ = mT(W) @ Z
    A = 0.5 * (WtZ - mT(WtZ))
    if n == p:
        _check_expm_norm(who, "Z", A, "skew(WᵀZ)")
        return W @ _expm(A)
    with linalg_errors(who, "the QR factorization of (I - WWᵀ)Z failed"):
        Q, R = xp.linalg.qr(Z - W @ WtZ)
    M = _geodesic_generator(xp, A, R)
    _check_expm_norm(who, "Z", M, "the geodesic's generator [[skew(WᵀZ), -Rᵀ], [R, 0]]")
    E = _expm(M)
    return W @ E[..., :p, :p] + Q @ E[..., p:, :p]


def _geodesic_generator(xp, A, R):
    """``M = [[A, -Rᵀ], [R, 0]]`` (Edelman, Arias & Smith's ``2p x 2p`` generator)."""
    top = xp.concatenate([A, -mT(R)], axis=-1)
    bottom = xp.concatenate([R, xp.zeros_like(R)], axis=-1)
    return xp.concatenate([top, bottom], axis=-2)


def retract(W, Z, method="qr", check=True, tol=None):
    r"""A retraction ``R_W(Z)`` on the Stiefel manifold: orthonormal columns, ``R_W(0) = W`` and
    ``R_W(tZ) = W + tZ + O(t²)`` for tangent ``Z``.

    Parameters
    ----------
    W : array (..., n, p), orthonormal columns (checked to ``tol`` unless ``check=False``; the measured
        ``‖WᵀW - I‖_F`` is in the message).
    Z : array (..., n, p), a tangent vector at ``W`` (``WᵀZ`` skew).
    method : ``"qr"``, ``"polar"``, ``"cayley"`` or ``"exp"``
        - ``"qr"``: the ``Q`` factor of ``W + Z`` with ``diag R > 0``.
        - ``"polar"``: the polar factor ``(W + Z)(I + ZᵀZ)^{-1/2}`` of ``W + Z`` (``U Vᵀ`` of its SVD).
        - ``"cayley"``: ``(I - A/2)^{-1}(I + A/2) W`` with ``A = P Z Wᵀ - W Zᵀ P``, ``P = I - WWᵀ/2``
          (Wen & Yin 2013 with the step ``+Z``: their ``A = G Wᵀ - W Gᵀ`` with a gradient ``G`` and the
          curve ``(I + τA/2)^{-1}(I - τA/2)W`` walk along ``-G``), computed by the Woodbury identity with a
          ``2p x 2p`` solve. ``A W = Z`` for tangent ``Z``.
        - ``"exp"``: the geodesic of the canonical metric (Edelman, Arias & Smith 1998):
          ``[W, Q] expm([[WᵀZ, -Rᵀ], [R, 0]]) [I; 0]`` with ``QR = (I - WWᵀ)Z``; ``W expm(WᵀZ)`` when
          ``n == p``. On CuPy the ``expm`` is a host round trip (SciPy's; CuPy has no batched one).

    A non-tangent ``Z`` is used as given: ``"cayley"`` and ``"exp"`` then move along its Euclidean tangent
    projection (``A W = Z - W sym(WᵀZ)``; ``"exp"`` uses ``skew(WᵀZ)``); ``"qr"`` and ``"polar"`` just
    orthonormalize ``W + Z``. Every method returns orthonormal columns.

    Raises
    ------
    TypeError, ValueError
        A bad ``W``, ``Z``, ``method``, ``check`` (a bool) or ``tol`` (None or > 0); ``ValueError`` also when
        ``W + Z`` is rank-deficient (``"polar"``: its polar factor is not unique), when a LAPACK
        factorization fails.
    NonFiniteError
        When the result overflows (``"cayley"`` with ``|Z|`` beyond about the square root of the dtype's
        maximum: its ``2p x 2p`` system is formed from products of ``Z``), or (``"exp"``) when ``Z`` is too
        large for the matrix exponential (1-norm of the generator beyond ``2^-8/eps``: no reliable digit).
    """
    who = "retract"
    xp = _check_array(who, "W", W, tall=True)
    _check_same(who, "Z", Z, "W", W)
    check_choice(who, "method", method, RETRACTIONS)
    check, tol = _check_flags(who, check, tol)
    if check:
        _check_orthonormal(who, W, tol)
    with np.errstate(over="ignore", invalid="ignore"):
        Y = _retract(who, xp, W, Z, method)
    return _result(who, Y, args="Z")


def _retract(who, xp, W, Z, method):
    with np.errstate(over="ignore", invalid="ignore"):
        X = W + Z
    if method in ("qr", "polar"):
        X, _ = rescaled(xp, _result(who, X, "W + Z", "Z"))      # scale-invariant in W + Z: any scale works
    if method == "qr":
        with linalg_errors(who, "the QR factorization of W + Z failed"):
            Q, R = xp.linalg.qr(X)
        return sign_fix(Q, R)[0]
    if method == "polar":
        with linalg_errors(who, "the SVD of W + Z did not converge"):
            U, s, Vt = xp.linalg.svd(X, full_matrices=False)
        _check_polar_rank(who, xp, s, X)
        return U @ Vt
    if method == "cayley":
        with linalg_errors(who, "the Cayley system I - ½VᵀU is singular (Z is far from tangent at W)"):
            return _cayley_retract(W, Z)
    return _exp_retract(who, W, Z)


def _check_polar_rank(who, xp, s, X):
    """``ValueError`` when ``W + Z`` is numerically rank-deficient: its polar factor is then not unique."""
    n, p = X.shape[-2:]
    if bool((s[..., -1] <= max(n, p) * float(np.finfo(X.dtype).eps) * s[..., 0]).any()):
        raise ValueError(f"{who}: W + Z is numerically rank deficient (σ_min <= max(n, p)·eps·σ_max); its "
                         f"polar factor is not unique (Z must not cancel W)")


def _qr_vjp(Q, R, gQ, gR=None):
    """Backward of the reduced QR ``X = QR`` (n >= p, full column rank):
    ``X̄ = (Q̄ + Q copyltu(M)) R^{-T}``, ``M = R R̄ᵀ - Q̄ᵀQ`` (``copyltu(M) = tril(M) + tril(M, -1)ᵀ``;
    ``R̄ = 0`` when ``gR`` is None). Valid for any sign convention of ``diag R`` (the factorization's own
    branch is differentiated: flipping a column of ``Q`` and the row of ``R`` flips the same terms)."""
    xp = get_array_module(Q)
    M = -(mT(gQ) @ Q)
    if gR is not None:
        M = M + R @ mT(gR)
    L = xp.tril(M)
    C = L + mT(xp.tril(M, -1))
    B = gQ + Q @ C
    # B R^{-T} = (R^{-1} Bᵀ)ᵀ
    return mT(xp.linalg.solve(R, mT(B)))


def _polar_vjp(who, X, gY):
    """Backward of ``Y = polar(X) = X (XᵀX)^{-1/2} = U Vᵀ`` (full column rank). With ``H = V S Vᵀ``:
    ``X̄ = (I - YYᵀ) Ȳ H^{-1} + 2 Y Γ``, ``Γ = V [(Vᵀ skew(YᵀȲ) V)_ij / (s_i + s_j)] Vᵀ``."""
    xp = get_array_module(X)
    with linalg_errors(who, "the SVD of W + Z did not converge"):
        U, s, Vt = xp.linalg.svd(X, full_matrices=False)
    _check_polar_rank(who, xp, s, X)
    V = mT(Vt)
    Y = U @ Vt
    M = mT(Y) @ gY
    Sk = 0.5 * (M - mT(M))
    C = Vt @ Sk @ V
    Gam = V @ (C / (s[..., :, None] + s[..., None, :])) @ Vt
    Hinv_V = V / s[..., None, :]
    T = gY @ (Hinv_V @ Vt)                                   # Ȳ H^{-1}
    return T - Y @ (mT(Y) @ T) + 2.0 * (Y @ Gam)


def retract_vjp(W, Z, grad_out, method="qr", check=True, tol=None):
    r"""Backward of :func:`retract`: returns ``(W̄, Z̄)``, the gradients of ``<Ȳ, retract(W, Z)>``.

    ``W`` and ``Z`` are used as given (``check=False`` lets ``W`` leave the manifold, as finite
    differences do). ``"qr"`` and ``"polar"`` depend on ``W + Z`` only, so ``W̄ = Z̄`` (the QR backward
    with ``R̄ = 0`` and the polar backward through the SVD). ``"cayley"`` goes through the ``n x n``
    generator ``A = PZ Wᵀ - W PZᵀ``: ``Ā = cayley_vjp(A, Ȳ Wᵀ)``, ``B̄ = Ā - Āᵀ`` for ``B = PZ Wᵀ``, then
    ``PZ = Z - ½WWᵀZ`` back to ``W`` and ``Z``.

    ``"qr"`` and ``"polar"`` are scale-invariant in ``W + Z`` (computed at any scale of ``Z``; their
    gradients scale as ``1/scale``). ``"exp"`` reverses the forward step by step: ``S = WᵀZ``, ``A = skew(S)``, ``X = (I - WWᵀ)Z = QR``
    (NumPy's QR, as in the forward; the output does not depend on the signs of ``diag R``), ``M = [[A,
    -Rᵀ], [R, 0]]``, ``E = expm(M)``, ``Y = W E₁₁ + Q E₂₁``; ``M̄ = expm_frechet(Mᵀ, Ē)`` (:func:`expm_skew_vjp`),
    the QR backward with both ``Q̄`` and ``R̄``, then ``X``, ``A`` and ``S`` back to ``W`` and ``Z``. For
    ``n == p``, ``Y = W expm(A)``. The QR of ``X`` is differentiable only when ``X`` has full column rank,
    which needs ``n >= 2p`` (and a step with a generic normal component). Where it is rank-deficient
    (always for ``p < n < 2p``; ``Z = 0``; ``Z = WΩ``) the gradient is taken of the equal ``n x n`` form
    ``Y = expm(W A Wᵀ + X Wᵀ - W Xᵀ) W`` (``O(n³)``): it agrees with the forward on the manifold, so
    ``Z̄`` and the tangential part of ``W̄`` are exact, but finite differences that move ``W`` off the
    manifold see a different (non-differentiable) function there. On CuPy ``expm``/``expm_frechet`` are a
    host round trip (CuPy has neither batched), the rest stays on the device.

    ``grad_out``: exactly ``W``'s shape and dtype, finite. Raises as :func:`retract`, and ``ValueError``
    when ``W + Z`` is rank-deficient (``"qr"``, ``"polar"``: the derivative does not exist there);
    ``NonFiniteError`` when a gradient overflows.
    """
    who = "retract_vjp"
    xp = _check_array(who, "W", W, tall=True)
    _check_same(who, "Z", Z, "W", W)
    _check_grad(who, grad_out, "W", W)
    check_choice(who, "method", method, RETRACTIONS)
    check, tol = _check_flags(who, check, tol)
    if check:
        _check_orthonormal(who, W, tol)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        gW, gZ = _retract_vjp(who, xp, W, Z, grad_out, method)
    hint = "W, Z or grad_out"
    return _result(who, gW, "the gradient of W", hint), _result(who, gZ, "the gradient of Z", hint)


def _retract_vjp(who, xp, W, Z, gY, method):
    e = 0
    if method in ("qr", "polar"):                                 # scale-invariant in X = W + Z: X̄ ∝ 1/scale
        X, e = rescaled(xp, _result(who, W + Z, "W + Z", "Z"))
    if method == "qr":
        with linalg_errors(who, "the QR factorization of W + Z failed"):
            Q, R = sign_fix(*xp.linalg.qr(X))
        d = xp.abs(xp.diagonal(R, axis1=-2, axis2=-1))
        if bool((d <= X.shape[-2] * float(np.finfo(X.dtype).eps) * d.max(axis=-1, keepdims=True)).any()):
            raise ValueError(f"{who}: W + Z is numerically rank deficient (|R_jj| <= n·eps·max|R_ii|); the "
                             f"derivative of its Q factor is unbounded")
        with linalg_errors(who, "W + Z is rank deficient; the derivative of its Q factor is unbounded"):
            g = ldexp(xp, _qr_vjp(Q, R, gY), -e)
        return g, g.copy()
    if method == "polar":
        g = ldexp(xp, _polar_vjp(who, X, gY), -e)
        return g, g.copy()
    if method == "cayley":
        n = W.shape[-2]
        PZ = _cayley_factors(W, Z)
        A = PZ @ mT(W) - W @ mT(PZ)
        M = _eye(xp, n, W.dtype) - 0.5 * A
        with linalg_errors(who, "I - A/2 is singular for the generator A of Z (Z is far from tangent at W)"):
            C = xp.linalg.solve(M, xp.broadcast_to(_eye(xp, n, W.dtype) + 0.5 * A, A.shape))
            Mt = mT(M)
            Ab = mT(xp.linalg.solve(M, mT(xp.linalg.solve(Mt, gY @ mT(W)))))   # cayley_vjp(A, ȲWᵀ)
        gW = mT(C) @ gY
        Bb = Ab - mT(Ab)
        gPZ = Bb @ W
        gW = gW + mT(Bb) @ PZ
        WtZ = mT(W) @ Z
        gZ = gPZ - 0.5 * (W @ (mT(W) @ gPZ))
        gW = gW - 0.5 * (gPZ @ mT(WtZ) + Z @ (mT(gPZ) @ W))
        return gW, gZ
    return _exp_retract_vjp(who, W, Z, gY)


def _exp_tail(W, Z, S, gS, gX=None):
    """Gradients through ``S = WᵀZ``, ``A = skew(S)`` (``gS`` is already ``S̄``) and ``X = Z - W S``."""
    gW = Z @ mT(gS)
    gZ = W @ gS
    if gX is not None:
        gZ = gZ + gX
        gW = gW - gX @ mT(S)
    return gW, gZ


def _exp_retract_vjp(who, W, Z, gY):
    # Reverse of _exp_retract, step by step (E = expm(M); Ē -> M̄ = L_exp(Mᵀ, Ē) by expm_frechet).
    xp = get_array_module(W)
    n, p = W.shape[-2:]
    S = mT(W) @ Z
    A = 0.5 * (S - mT(S))
    if n == p:
        _check_expm_norm(who, "Z", A, "skew(WᵀZ)")
        E = _expm(A)                                              # Y = W E
        gA = _expm_frechet_t(A, mT(W) @ gY)
        gW, gZ = _exp_tail(W, Z, S, 0.5 * (gA - mT(gA)))
        return gW + gY @ mT(E), gZ
    X = Z - W @ S
    with linalg_errors(who, "the QR factorization of (I - WWᵀ)Z failed"):
        Q, R = xp.linalg.qr(X)                                    # the forward's own factorization
    d = xp.abs(xp.diagonal(R, axis1=-2, axis2=-1))
    tiny = np.finfo(W.dtype).tiny
    singular = n < 2 * p or not bool(xp.all(d.min(axis=-1) > 1e-8 * xp.maximum(d.max(axis=-1), tiny)))
    M = _geodesic_generator(xp, A, R)
    _check_expm_norm(who, "Z", M, "the geodesic's generator [[skew(WᵀZ), -Rᵀ], [R, 0]]")
    if singular:
        return _exp_retract_vjp_dense(W, Z, S, A, X, gY)
    E = _expm(M)                                                  # Y = W E₁₁ + Q E₂₁
    gE = xp.zeros_like(M)
    gE[..., :p, :p] = mT(W) @ gY
    gE[..., p:, :p] = mT(Q) @ gY
    gM = _expm_frechet_t(M, gE)
    gA = gM[..., :p, :p]
    gR = gM[..., p:, :p] - mT(gM[..., :p, p:])
    with linalg_errors(who, "(I - WWᵀ)Z is rank deficient; the derivative of its QR is unbounded"):
        gX = _qr_vjp(Q, R, gY @ mT(E[..., p:, :p]), gR)
    gS = 0.5 * (gA - mT(gA)) - mT(W) @ gX
    gW, gZ = _exp_tail(W, Z, S, gS, gX)
    return gW + gY @ mT(E[..., :p, :p]), gZ


def _exp_retract_vjp_dense(W, Z, S, A, X, gY):
    # Rank-deficient (I - WWᵀ)Z (always when p < n < 2p, or a step with no normal component, e.g. Z = 0):
    # the QR is not differentiable there. Differentiate instead the n x n form of the same geodesic,
    # Y = expm(Ω) W with Ω = W A Wᵀ + X Wᵀ - W Xᵀ (Ω = [W, Q] [[A, -Rᵀ], [R, 0]] [W, Q]ᵀ), which equals
    # the forward whenever WᵀW = I and is smooth in (W, Z). Z̄ and W̄ along the manifold are exact; off the
    # manifold the two formulas differ, so W̄ in normal directions of the Stiefel manifold is that of
    # this smooth extension.
    Wt = mT(W)
    Om = W @ A @ Wt + X @ Wt - W @ mT(X)
    F = _expm(Om)
    gW = mT(F) @ gY
    gOm = _expm_frechet_t(Om, gY @ Wt)
    B = gOm - mT(gOm)
    gX = B @ W
    gW = gW - B @ X + gOm @ (W @ mT(A)) + mT(gOm) @ (W @ A)
    gA = Wt @ gOm @ W
    gS = 0.5 * (gA - mT(gA)) - Wt @ gX
    gW2, gZ = _exp_tail(W, Z, S, gS, gX)
    return gW + gW2, gZ


def cayley_iterative(W, Z, alpha, iterations=2, check=True, tol=None):
    r"""The iterative Cayley transform of Li, Fuxin & Todorovic (ICLR 2020, Algorithm 1).

    With the skew generator ``A = P Z Wᵀ - W Zᵀ P`` (``P = I - WWᵀ/2``; in their notation ``Ŵ = M Xᵀ -
    ½X(XᵀMXᵀ)``, ``W = Ŵ - Ŵᵀ`` with the momentum ``M`` in the place of ``Z``, and ``A W = Z`` for tangent
    ``Z``), start from ``Y₀ = W + α A W`` and iterate

    .. math:: Y_{i+1} = W + \frac{α}{2} A (W + Y_i), \qquad i < \mathrm{iterations}.

    The fixed point is the closed-form Cayley retraction ``retract(W, α Z, "cayley")``; the iteration
    contracts when ``α ‖A‖₂ / 2 < 1`` (error factor ``α‖A‖₂/2`` per step). ``A`` is applied in low rank
    (``O(n p²)`` per iteration). The result is orthonormal only up to the truncation error
    ``O((α‖A‖)^{iterations+2})`` -- the paper's point: two iterations suffice for a small step.

    Parameters
    ----------
    W : array (..., n, p), orthonormal columns (checked unless ``check=False``).
    Z : array (..., n, p), the step direction (tangent).
    alpha : float, the step size.
    iterations : int >= 0 (the paper uses 2).
    """
    who = "cayley_iterative"
    _check_array(who, "W", W, tall=True)
    _check_same(who, "Z", Z, "W", W)
    alpha, iterations = _check_alpha_iterations(who, alpha, iterations)
    check, tol = _check_flags(who, check, tol)
    if check:
        _check_orthonormal(who, W, tol)
    alpha = _alpha_in_dtype(who, alpha, W.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        PZ = _cayley_factors(W, Z)
        Y = W + alpha * _apply_A(W, PZ, W)
        for _ in range(iterations):
            Y = W + (alpha / 2) * _apply_A(W, PZ, W + Y)
    return _result(who, Y, args="alpha·Z")


def _check_alpha_iterations(who, alpha, iterations):
    """``alpha`` a finite number, ``iterations`` an int in ``[0, MAX_ITERATIONS]``."""
    return check_real(who, "alpha", alpha), check_int(who, "iterations", iterations, 0, MAX_ITERATIONS)


def _alpha_in_dtype(who, alpha, dtype):
    """``alpha`` as a scalar of ``dtype``; ``NonFiniteError`` when it overflows that dtype (1e300 in float32)."""
    with np.errstate(over="ignore"):
        a = np.dtype(dtype).type(alpha)
    if not np.isfinite(a):
        raise NonFiniteError(f"{who}: alpha = {alpha!r} overflows {np.dtype(dtype).name}; use float64 or a "
                             f"smaller alpha")
    return a


def _apply_A_vjp(W, PZ, X, gT):
    """Backward of ``T = A X = PZ (WᵀX) - W (PZᵀX)``: ``(W̄, P̄Z, X̄)``. With ``C = T̄Xᵀ - XT̄ᵀ``:
    ``X̄ = Aᵀ T̄ = -A T̄``, ``P̄Z = C W``, ``W̄ = -C PZ`` (all in low rank)."""
    gX = -_apply_A(W, PZ, gT)
    gPZ = gT @ (mT(X) @ W) - X @ (mT(gT) @ W)
    gW = X @ (mT(gT) @ PZ) - gT @ (mT(X) @ PZ)
    return gW, gPZ, gX


def cayley_iterative_vjp(W, Z, alpha, grad_out, iterations=2, check=True, tol=None):
    r"""Backward of :func:`cayley_iterative`: ``(W̄, Z̄)``, the gradients of ``<Ȳ, cayley_iterative(W, Z,
    alpha, iterations)>``, unrolled through the fixed number of iterations (not the implicit derivative
    of the fixed point: the truncated iterate is what the forward returns).

    ``A`` depends on ``W`` and ``Z`` through ``PZ = Z - ½W(WᵀZ)``, ``A = PZ Wᵀ - W PZᵀ``; each step
    ``T = A X`` sends ``T̄`` to ``X̄ = -A T̄``, ``P̄Z = (T̄Xᵀ - XT̄ᵀ) W`` and ``W̄ = -(T̄Xᵀ - XT̄ᵀ) PZ``.
    ``W`` and ``Z`` are used as given (``check=False`` skips the orthonormality check). Memory: the
    ``iterations`` intermediate iterates (``n x p`` each).
    """
    who = "cayley_iterative_vjp"
    _check_array(who, "W", W, tall=True)
    _check_same(who, "Z", Z, "W", W)
    _check_grad(who, grad_out, "W", W)
    alpha, iterations = _check_alpha_iterations(who, alpha, iterations)
    check, tol = _check_flags(who, check, tol)
    if check:
        _check_orthonormal(who, W, tol)
    with np.errstate(over="ignore", invalid="ignore"):
        gW, gZ = _cayley_iterative_vjp(W, Z, _alpha_in_dtype(who, alpha, W.dtype), grad_out, iterations)
    hint = "alpha·Z or grad_out"
    return _result(who, gW, "the gradient of W", hint), _result(who, gZ, "the gradient of Z", hint)


def _cayley_iterative_vjp(W, Z, alpha, grad_out, iterations):
    PZ = _cayley_factors(W, Z)
    Ys = [W + alpha * _apply_A(W, PZ, W)]                       # Y₀ ... Y_{k-1}: the inputs of the steps
    for _ in range(int(iterations) - 1):
        Ys.append(W + (alpha / 2) * _apply_A(W, PZ, W + Ys[-1]))
    gW = gPZ = 0 * W
    gY = grad_out
    for i in range(int(iterations) - 1, -1, -1):               # Y_{i+1} = W + (α/2) A (W + Y_i)
        gWi, gPZi, gX = _apply_A_vjp(W, PZ, W + Ys[i], (alpha / 2) * gY)
        gW = gW + gY + gWi + gX
        gPZ = gPZ + gPZi
        gY = gX                                                 # Ȳ_i
    gWi, gPZi, gX = _apply_A_vjp(W, PZ, W, alpha * gY)          # Y₀ = W + α A W
    gW = gW + gY + gWi + gX
    gPZ = gPZ + gPZi
    WtZ = mT(W) @ Z
    gZ = gPZ - 0.5 * (W @ (mT(W) @ gPZ))
    gW = gW - 0.5 * (gPZ @ mT(WtZ) + Z @ (mT(gPZ) @ W))
    return gW, gZ

