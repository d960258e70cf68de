"""Decorrelation and whitening of a batch of features: ZCA, PCA and Cholesky whitening, group-wise ZCA
(Decorrelated Batch Normalization) and IterNorm, each with its exact backward pass ``NAME_vjp``, and the DeCov
penalty.

Every map ``Y = NAME(X, eps=1e-5)`` has ``NAME_vjp(X, grad_out, eps=1e-5)`` returning
``∂⟨grad_out, NAME(X)⟩/∂X`` (same shape and dtype as ``X``; float32 stays float32), the convention of
:mod:`orthoref.ortho`. The penalty :func:`decov` returns ``(value, grad)`` like those of
:mod:`orthoref.regularizers`.

Conventions
-----------
- ``X`` is ``(m, d)``: ``m >= 2`` samples (rows) of ``d`` features (columns), float32 or float64.
- Centring and covariance, shared by the three whitenings (and the definition of Decorrelated Batch
  Normalization, Huang, Yang, Lang & Deng 2018, "Decorrelated Batch Normalization", CVPR):

  .. math::  X_c = X - \\mathbf 1 \\mu^\\top, \\quad \\mu = \\tfrac1m X^\\top \\mathbf 1, \\qquad
             \\Sigma = \\tfrac1m X_c^\\top X_c + \\varepsilon I .

  The **biased** estimate ``1/m`` (batch normalization's batch variance), not ``numpy.cov`` /
  ``torch.cov``'s default ``1/(m - 1)``: with the latter every whitened output is smaller by
  ``sqrt((m - 1)/m)`` (ε aside). ``ε`` (``eps``, default ``1e-5``) sits *inside* ``Σ``; code that adds it
  to the eigenvalues of ``X_cᵀX_c/m`` after the decomposition computes the same ``Σ`` (same eigenvectors,
  eigenvalues ``λ + ε``).
- The group-wise maps (:func:`group_zca_whitening`, :func:`iternorm_whitening`) whiten consecutive groups of
  ``groups`` features separately, each with its own ``Σ_g`` (the last group smaller when ``groups`` does not
  divide ``d``); the layers :class:`orthoref.nn.DecorrelatedBatchNorm` and :class:`orthoref.nn.IterNorm` are
  built on them.
- Every whitened output has covariance ``YᵀY/m = I − ε Σ⁻¹`` (ZCA), ``I − ε Λ⁻¹`` (PCA) or
  ``I − ε L⁻¹L⁻ᵀ`` (Cholesky): the identity up to ``ε/λ_min``.
- The three whitenings differ by a rotation: ``Y_pca = Y_zca U`` and ``Y_chol = Y_zca Q`` with ``Q``
  orthogonal (Kessy, Lewin & Strimmer 2018, "Optimal Whitening and Decorrelation", The American
  Statistician 72(4)). ZCA is the whitening that changes ``X_c`` least (``E‖y − x_c‖²`` is minimal) and
  the only symmetric one. ZCA and Cholesky whitening are smooth functions of ``Σ``, repeated eigenvalues
  included; PCA whitening is not differentiable there.
- **Numerical singularity**: ``Σ`` is positive definite for ``ε > 0``, but in floating point an eigenvalue
  below ``d·eps_dtype·λ_max`` has no correct digit. The eigendecomposition maps raise ``ValueError`` when
  ``λ_min <= d·eps_dtype·λ_max``; :func:`cholesky_whitening` when LAPACK's Cholesky fails or a pivot
  ``L_jj² <= d·eps_dtype·max_j Σ_jj`` (``L_jj² >= λ_min``, so this catches a numerically rank-deficient
  ``Σ`` but not every ill-conditioned one). The message suggests a larger ``eps`` or float64: float32 with
  ``ε = 1e-5``, features of variance ~1e2 or more and collinear features (or ``m <= d``) is such a case.
- Bad input (not a 2-D float32/float64 array, fewer than 2 samples, NaN/Inf, an ``eps`` that is not a
  finite number > 0; a ``grad_out`` not of exactly ``X``'s shape and dtype, or not finite) raises
  ``TypeError``/``ValueError`` naming the function and the argument. LAPACK failures raise ``ValueError``
  naming the function. A covariance, output or gradient that overflows the dtype (``|X| ≈ 1e160`` in
  float64, ``1e19`` in float32) raises :class:`orthoref.NonFiniteError`. These maps are not
  scale-invariant (``ε`` sets a scale), so nothing is rescaled.

Each function is registered in :mod:`orthoref.oracle.registry` by
:mod:`orthoref.oracle.samples.decorrelation` (float64 finite differences, PyTorch and JAX twins).
"""
from __future__ import annotations

import contextlib
import functools
import math

import numpy as np

from ._checks import (MAX_ITERATIONS, NonFiniteError, all_finite, check_array, check_choice, check_cotangent,
                      check_int, check_real, check_result, float_dtype)
from .backend import get_array_module
from .ortho._common import linalg_errors

__all__ = ["zca_whitening", "zca_whitening_vjp", "pca_whitening", "pca_whitening_vjp", "pca_gap_tolerance",
           "cholesky_whitening", "cholesky_whitening_vjp", "group_zca_whitening", "group_zca_whitening_vjp",
           "iternorm_whitening", "iternorm_whitening_vjp", "decov"]


# ---------------------------------------------------------------------------------------------------------
# Validation, moments, overflow.

def _validate(who, X, eps, name="X"):
    """``X``: a finite 2-D float array with at least 2 rows; ``eps``: a finite number > 0. Returns
    ``(xp, eps)``."""
    xp = check_array(who, X, name, ndim=(2,))
    if X.shape[0] < 2:
        raise ValueError(f"{who}: {name} must have at least 2 samples (rows) to estimate a covariance, got "
                         f"shape {tuple(X.shape)}")
    return xp, check_real(who, "eps", eps, lo=0.0, lo_open=True)


def _validate_grad(who, X, grad_out):
    check_cotangent(who, "grad_out", grad_out, X.shape, X.dtype)


def _eps_of(dtype):
    return float(np.finfo(dtype).eps)


def _overflow(who, X, what, name="X"):
    dt = np.dtype(X.dtype)
    hint = f"use float64 or rescale {name}" if dt == np.float32 else f"rescale {name}"
    return NonFiniteError(f"{who}: {what} overflows {dt.name} (NaN or Inf) at this scale of {name} "
                          f"(max |{name}| = {float(abs(X).max()):.3g}); {hint}")


def _finite(who, xp, a, X, what):
    if not all_finite(xp, a):
        raise _overflow(who, X, what)
    return a


def _quiet(fn):
    """Run with NumPy's overflow/invalid/divide warnings off: every overflow is caught by a finiteness check
    and raised as ``NonFiniteError``, so the warning that would precede it is noise."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return fn(*args, **kwargs)
    return wrapper


def _centre(xp, X):
    """``X − 1μᵀ``, ``μ`` the column means (a fresh array)."""
    return X - X.mean(axis=0, keepdims=True)


def _moments(who, xp, X, eps):
    """``(X_c, Σ)`` with ``Σ = X_cᵀX_c/m + εI``; ``NonFiniteError`` when ``Σ`` overflows."""
    Xc = _centre(xp, X)
    return Xc, _covariance(who, xp, Xc, eps, X)


def _covariance(who, xp, Xc, eps, X):
    """``Σ = X_cᵀX_c/m + εI`` of centred data; ``NonFiniteError`` (sized by ``X``) when it overflows."""
    m, d = Xc.shape
    S = Xc.T @ Xc
    S /= m
    idx = xp.arange(d)
    S[idx, idx] += eps
    return _finite(who, xp, S, X, "the covariance Σ = X_cᵀX_c/m + eps·I")


def _uncentre(xp, G):
    """The backward pass of the centring: ``Ḡ − 1 (1ᵀḠ)/m`` (in place)."""
    G -= G.mean(axis=0, keepdims=True)
    return G


def _pull_sigma(Xc, Sbar2, m):
    """``X_c (Σ̄ + Σ̄ᵀ)/m``: the cotangent of ``X_c`` through ``Σ = X_cᵀX_c/m + εI`` (``Sbar2`` is
    ``Σ̄ + Σ̄ᵀ``)."""
    out = Xc @ Sbar2
    out /= m
    return out


def _singular(who, d, dtype, lmin, lmax):
    tol = d * _eps_of(dtype) * lmax
    return ValueError(f"{who}: the covariance Σ = X_cᵀX_c/m + eps·I is numerically singular in "
                      f"{np.dtype(dtype).name}: λ_min = {lmin:.3g} <= d·eps·λ_max = {tol:.3g}; increase eps "
                      f"(or use float64)")


def _eigh(who, xp, X, eps):
    """``(X_c, λ, U)``: ``Σ = U diag(λ) Uᵀ`` with ``λ`` ascending, after the singularity check."""
    Xc, S = _moments(who, xp, X, eps)
    return (Xc,) + _spectrum(who, xp, S)


def _spectrum(who, xp, S):
    """``(λ, U)``: ``Σ = U diag(λ) Uᵀ``, ``λ`` ascending, after the singularity check."""
    with linalg_errors(who, "the eigendecomposition (LAPACK eigh) of the covariance Σ did not converge"):
        lam, U = xp.linalg.eigh(S)
    d = S.shape[0]
    lmin, lmax = float(lam[0]), float(lam[-1])
    if not lmin > d * _eps_of(S.dtype) * lmax:
        raise _singular(who, d, S.dtype, lmin, lmax)
    return lam, U


# ---------------------------------------------------------------------------------------------------------
# ZCA whitening.

@_quiet
def zca_whitening(X, eps=1e-5):
    """ZCA (zero-phase, Mahalanobis) whitening: ``Y = X_c Σ^{-1/2}``.

    .. math::  \\Sigma = \\tfrac1m X_c^\\top X_c + \\varepsilon I = U \\Lambda U^\\top, \\qquad
               Y = X_c\\, \\Sigma^{-1/2} = X_c\\, U \\Lambda^{-1/2} U^\\top

    (``eigh``; the module docstring defines ``X_c`` and ``Σ``). ``Σ^{-1/2}`` is the unique symmetric
    positive-definite inverse square root, so ``Y`` does not depend on the choice of eigenvectors: ties in
    the spectrum are harmless here, unlike in :func:`pca_whitening`. Of all whitenings ``X_c W``
    (``WᵀΣW = I``) ZCA keeps ``Y`` closest to ``X_c`` (Kessy, Lewin & Strimmer 2018; Bell & Sejnowski 1997
    name it after its zero-phase filters); it is the whitening of Decorrelated Batch Normalization (Huang et
    al. 2018).

    Parameters
    ----------
    X : (m, d) float array
        ``m >= 2`` samples of ``d`` features, float32 or float64.
    eps : float > 0
        Added to the diagonal of the covariance.

    Returns
    -------
    Y : (m, d) array, dtype of ``X``
        ``YᵀY/m = I − εΣ⁻¹``; ``Y = X_c W`` with ``W = Σ^{-1/2}`` symmetric.

    Raises
    ------
    ValueError
        ``λ_min <= d·eps_dtype·λ_max`` (numerically singular ``Σ``), a LAPACK failure, or bad input
        (``TypeError`` for a non-float ``X``); ``NonFiniteError`` when ``Σ`` overflows.

    Notes
    -----
    PyTorch autograd through ``torch.linalg.eigh`` (the direct implementation; a backward pass derived
    through the eigendecomposition, as in Decorrelated BN, has the same terms) forms ``1/(λ_i − λ_j)``: its
    gradient is NaN or noise at repeated eigenvalues (``torch.linalg.eigh``'s documentation warns of it),
    e.g. for already-whitened data. :func:`zca_whitening_vjp` uses divided differences and has no such
    singularity.
    """
    who = "zca_whitening"
    xp, eps = _validate(who, X, eps)
    Xc, lam, U = _eigh(who, xp, X, eps)
    W = (U / xp.sqrt(lam)) @ U.T
    return _finite(who, xp, Xc @ W, X, "the output")


def _inv_sqrt_divided_differences(xp, lam):
    """``K_ij = f[λ_i, λ_j]`` for ``f(λ) = λ^{-1/2}``: ``(f(λ_i) − f(λ_j))/(λ_i − λ_j)
    = −1/(√λ_i √λ_j (√λ_i + √λ_j))``, which is ``f'(λ_i) = −½ λ_i^{-3/2}`` at ``i = j`` and is computed
    without a difference: exact (to rounding) for equal or close eigenvalues."""
    r = xp.sqrt(lam)
    return -1.0 / ((r[:, None] * r[None, :]) * (r[:, None] + r[None, :]))


@_quiet
def zca_whitening_vjp(X, grad_out, eps=1e-5):
    """Gradient of ``⟨grad_out, zca_whitening(X, eps)⟩`` with respect to ``X``.

    With ``W = Σ^{-1/2}``, ``Ȳ = grad_out`` and ``W̄ = X_cᵀȲ``, the Daleckii--Krein theorem (Daleckii &
    Krein 1965; Higham 2008, "Functions of Matrices", Ch. 3) gives the derivative of the matrix function
    ``f(Σ) = U f(Λ) Uᵀ`` as ``U (K ⊙ Uᵀ dΣ U) Uᵀ`` with the first divided differences
    ``K_ij = f[λ_i, λ_j]``; for ``f(λ) = λ^{-1/2}``

    .. math::  K_{ij} = \\frac{\\lambda_i^{-1/2} - \\lambda_j^{-1/2}}{\\lambda_i - \\lambda_j}
               = \\frac{-1}{\\sqrt{\\lambda_i}\\sqrt{\\lambda_j}(\\sqrt{\\lambda_i} + \\sqrt{\\lambda_j})},
               \\qquad K_{ii} = -\\tfrac12 \\lambda_i^{-3/2},

    so that

    .. math::  \\bar X_c = \\bar Y W + \\tfrac1m X_c\\, U \\big(K \\odot U^\\top (\\bar W + \\bar W^\\top) U\\big)
               U^\\top, \\qquad \\bar X = \\bar X_c - \\tfrac1m \\mathbf 1 \\mathbf 1^\\top \\bar X_c .

    The right-hand form of ``K`` has no difference of eigenvalues: equal and close eigenvalues (a whitened
    input, ``Σ = cI``) give the exact derivative, not ``0/0``. ``grad_out``: exactly ``X``'s shape and
    dtype, finite. Raises as :func:`zca_whitening`; ``NonFiniteError`` when the gradient overflows.
    """
    who = "zca_whitening_vjp"
    xp, eps = _validate(who, X, eps)
    _validate_grad(who, X, grad_out)
    Xc, lam, U = _eigh(who, xp, X, eps)
    Xcbar = _zca_pullback(xp, Xc, lam, U, (U / xp.sqrt(lam)) @ U.T, grad_out)
    return _finite(who, xp, _uncentre(xp, Xcbar), X, "the gradient")


def _zca_pullback(xp, Xc, lam, U, W, Ybar):
    """``X̄_c`` of ``Y = X_c W``, ``W = Σ^{-1/2} = U Λ^{-1/2} Uᵀ`` (before the centring's backward pass)."""
    Wbar = Xc.T @ Ybar
    Wbar += Wbar.T.copy()                                       # W̄ + W̄ᵀ
    B = U.T @ Wbar @ U
    B *= _inv_sqrt_divided_differences(xp, lam)
    Xcbar = Ybar @ W
    Xcbar += _pull_sigma(Xc, U @ B @ U.T, Xc.shape[0])
    return Xcbar


# ---------------------------------------------------------------------------------------------------------
# PCA whitening.

def _pca_basis(who, xp, X, eps):
    """``(X_c, λ, U)`` with ``λ`` descending and each column of ``U`` signed so that its entry of largest
    magnitude (the first such, on a tie) is positive."""
    Xc, lam, U = _eigh(who, xp, X, eps)
    lam, U = lam[::-1], U[:, ::-1]
    top = xp.take_along_axis(U, xp.argmax(xp.abs(U), axis=0)[None, :], axis=0)[0]
    U = U * xp.where(top < 0, -1.0, 1.0).astype(U.dtype)
    return Xc, lam, U


@_quiet
def pca_whitening(X, eps=1e-5):
    """PCA whitening: ``Y = X_c U Λ^{-1/2}``, the data in the principal axes of ``Σ``, each scaled to unit
    variance.

    .. math::  \\Sigma = \\tfrac1m X_c^\\top X_c + \\varepsilon I = U \\Lambda U^\\top, \\quad
               \\lambda_1 \\ge \\dots \\ge \\lambda_d, \\qquad Y = X_c\\, U \\Lambda^{-1/2}

    Column ``j`` of ``Y`` is the ``j``-th principal component. **Sign convention**: each eigenvector is
    signed so that its entry of largest magnitude is positive (the first such entry on an exact tie of
    magnitudes), as scikit-learn's ``svd_flip`` (``u_based_decision=False``) signs the principal axes; LAPACK's
    raw signs are arbitrary. ``Y = Y_zca U``: a rotation of the ZCA output.

    Parameters
    ----------
    X : (m, d) float array
        ``m >= 2`` samples of ``d`` features, float32 or float64.
    eps : float > 0
        Added to the diagonal of the covariance.

    Returns
    -------
    Y : (m, d) array, dtype of ``X``
        ``YᵀY/m = I − εΛ⁻¹`` (diagonal).

    Raises
    ------
    ValueError
        As :func:`zca_whitening`.

    Notes
    -----
    At a repeated eigenvalue the principal axes of that eigenspace are not unique: ``Y`` is *a* PCA
    whitening (any rotation within the eigenspace is one), deterministic for a given LAPACK, and has no
    derivative (:func:`pca_whitening_vjp` raises). Huang et al. 2018 (Decorrelated BN) call the resulting
    jumps of the axes between batches "stochastic axis swapping" and prefer ZCA.
    """
    who = "pca_whitening"
    xp, eps = _validate(who, X, eps)
    Xc, lam, U = _pca_basis(who, xp, X, eps)
    return _finite(who, xp, Xc @ (U / xp.sqrt(lam)), X, "the output")


def pca_gap_tolerance(dtype):
    """The smallest relative eigenvalue gap ``(λ_j − λ_{j+1})/λ_max`` at which :func:`pca_whitening_vjp`
    returns a gradient: ``√eps`` of ``dtype`` (1.5e-8 in float64, 3.5e-4 in float32); ``TypeError`` for a
    dtype other than float32/float64."""
    return math.sqrt(_eps_of(float_dtype("pca_gap_tolerance", dtype)))


@_quiet
def pca_whitening_vjp(X, grad_out, eps=1e-5):
    """Gradient of ``⟨grad_out, pca_whitening(X, eps)⟩`` with respect to ``X``.

    With ``P = U Λ^{-1/2}``, ``P̄ = X_cᵀȲ``, ``Ū = P̄ Λ^{-1/2}`` and ``λ̄_j = −½ λ_j^{-3/2} u_jᵀ p̄_j``, the
    symmetric-eigenproblem backward pass (Giles 2008, "An extended collection of matrix derivative results
    for forward and reverse mode AD"; Ionescu, Vantzos & Sminchisescu 2015, "Matrix backpropagation for deep
    networks with structured layers", ICCV) gives

    .. math::  \\bar\\Sigma = U \\big(\\operatorname{diag}(\\bar\\lambda) + F \\odot U^\\top \\bar U\\big)
               U^\\top, \\quad F_{ij} = \\frac{1}{\\lambda_j - \\lambda_i}\\ (i \\ne j),\\ F_{ii} = 0,

    .. math::  \\bar X_c = \\bar Y P^\\top + \\tfrac1m X_c (\\bar\\Sigma + \\bar\\Sigma^\\top), \\qquad
               \\bar X = \\bar X_c - \\tfrac1m \\mathbf 1 \\mathbf 1^\\top \\bar X_c .

    The sign convention and the descending order are locally constant and add nothing.

    Raises
    ------
    ValueError
        The derivative exists only for distinct eigenvalues: when a relative gap ``(λ_j − λ_{j+1})/λ_max``
        (descending) is at most :func:`pca_gap_tolerance` (``√eps`` of the dtype: below it the computed
        ``1/(λ_j − λ_{j+1})`` has lost more than half its digits, since the eigenvalues carry absolute
        errors ``~eps·λ_max``), the message names the pair and the gap; use :func:`zca_whitening` or
        :func:`cholesky_whitening`, whose gradients exist there. Otherwise as :func:`zca_whitening`, and for a
        ``grad_out`` not of ``X``'s shape and dtype or not finite. ``NonFiniteError`` when the gradient
        overflows.
    """
    who = "pca_whitening_vjp"
    xp, eps = _validate(who, X, eps)
    _validate_grad(who, X, grad_out)
    Xc, lam, U = _pca_basis(who, xp, X, eps)
    m, d = X.shape
    if d > 1:
        rel = (lam[:-1] - lam[1:]) / lam[0]
        j = int(xp.argmin(rel))
        gap, tol = float(rel[j]), pca_gap_tolerance(X.dtype)
        if not gap > tol:
            raise ValueError(f"{who}: eigenvalues {j} and {j + 1} of the covariance Σ (0-based, descending) are "
                             f"not distinct: relative gap (λ_{j} − λ_{j + 1})/λ_max = {gap:.3g} <= √eps = {tol:.3g} "
                             f"({np.dtype(X.dtype).name}); the PCA axes have no derivative at a repeated "
                             f"eigenvalue (use zca_whitening or cholesky_whitening)")
    r = xp.sqrt(lam)
    P = U / r
    Pbar = Xc.T @ grad_out
    Ubar = Pbar / r
    lambar = (U * Pbar).sum(axis=0) * (-0.5 / (lam * r))
    diff = lam[None, :] - lam[:, None]                          # λ_j − λ_i
    idx = xp.arange(d)
    diff[idx, idx] = 1
    inner = (U.T @ Ubar) / diff
    inner[idx, idx] = lambar
    Sbar = U @ inner @ U.T
    Sbar += Sbar.T.copy()
    Xcbar = grad_out @ P.T
    Xcbar += _pull_sigma(Xc, Sbar, m)
    return _finite(who, xp, _uncentre(xp, Xcbar), X, "the gradient")


# ---------------------------------------------------------------------------------------------------------
# Cholesky whitening.

def _solve_triangular(xp, L, B, trans=0):
    """``op(L)⁻¹ B`` for a lower-triangular 2-D ``L`` (``trans=1``: ``L⁻ᵀ B``); SciPy on the host (LAPACK
    ``?trtrs`` in the input's precision), cupyx on the GPU."""
    if xp is np:
        from scipy.linalg import solve_triangular
    else:                                                       # pragma: no cover - GPU only
        from cupyx.scipy.linalg import solve_triangular
    return solve_triangular(L, B, lower=True, trans=trans, check_finite=False)


def _cholesky(who, xp, X, eps):
    """``(X_c, L)``: ``Σ = LLᵀ``, ``L`` lower triangular with a positive diagonal, after the checks."""
    Xc, S = _moments(who, xp, X, eps)
    d = X.shape[1]
    try:
        L = xp.linalg.cholesky(S)
    except np.linalg.LinAlgError:
        raise ValueError(f"{who}: the covariance Σ = X_cᵀX_c/m + eps·I is not numerically positive definite "
                         f"in {np.dtype(X.dtype).name} (LAPACK Cholesky failed); increase eps (or use "
                         f"float64)") from None
    piv = xp.diagonal(L)
    pmin, smax = float((piv * piv).min()), float(xp.diagonal(S).max())
    if not pmin > d * _eps_of(X.dtype) * smax:
        raise ValueError(f"{who}: the covariance Σ = X_cᵀX_c/m + eps·I is numerically singular in "
                         f"{np.dtype(X.dtype).name}: min L_jj² = {pmin:.3g} <= d·eps·max Σ_jj = "
                         f"{d * _eps_of(X.dtype) * smax:.3g}; increase eps (or use float64)")
    return Xc, L


@_quiet
def cholesky_whitening(X, eps=1e-5):
    """Cholesky whitening: ``Y = X_c L^{-T}`` with ``Σ = L Lᵀ``.

    .. math::  \\Sigma = \\tfrac1m X_c^\\top X_c + \\varepsilon I = L L^\\top, \\qquad Y = X_c L^{-\\top}

    (``L`` lower triangular with a positive diagonal; one triangular solve). Feature ``j`` of ``Y`` depends
    only on features ``1..j`` of ``X_c``: ``Y = X_c L^{-T}`` with ``L^{-T}`` upper triangular -- a
    Gram--Schmidt of the features in their given order (Kessy, Lewin & Strimmer 2018, "CHOL" whitening).
    Its derivative exists at any positive-definite ``Σ``, repeated eigenvalues included.

    Parameters
    ----------
    X : (m, d) float array
        ``m >= 2`` samples of ``d`` features, float32 or float64.
    eps : float > 0
        Added to the diagonal of the covariance.

    Returns
    -------
    Y : (m, d) array, dtype of ``X``
        ``YᵀY/m = I − ε L⁻¹L⁻ᵀ``.

    Raises
    ------
    ValueError
        When LAPACK's Cholesky fails or ``min L_jj² <= d·eps_dtype·max Σ_jj`` (numerically singular ``Σ``;
        see the module docstring), or bad input; ``NonFiniteError`` when ``Σ`` overflows.
    """
    who = "cholesky_whitening"
    xp, eps = _validate(who, X, eps)
    Xc, L = _cholesky(who, xp, X, eps)
    Y = _solve_triangular(xp, L, Xc.T).T                        # L Yᵀ = X_cᵀ
    return _finite(who, xp, xp.ascontiguousarray(Y), X, "the output")


@_quiet
def cholesky_whitening_vjp(X, grad_out, eps=1e-5):
    """Gradient of ``⟨grad_out, cholesky_whitening(X, eps)⟩`` with respect to ``X``.

    From ``Y Lᵀ = X_c``: ``X̄_c = Ȳ L^{-1}`` and ``L̄ = −tril(L^{-T} ȲᵀY) = −tril(X̄_cᵀ Y)``. Then the
    backward pass of the Cholesky factor (Murray 2016, "Differentiation of the Cholesky decomposition",
    arXiv:1602.07527; the formula of PyTorch's ``cholesky_backward``):

    .. math::  \\bar\\Sigma = L^{-\\top} \\Phi(L^\\top \\bar L) L^{-1}, \\qquad
               \\Phi(A) = \\operatorname{tril}(A) - \\tfrac12 \\operatorname{diag}(A),

    (derivation: ``L⁻¹ dΣ L⁻ᵀ = L⁻¹dL + (L⁻¹dL)ᵀ`` with ``L⁻¹dL`` lower triangular, so ``dL = L Φ(L⁻¹ dΣ
    L⁻ᵀ)``; ``Φ`` is self-adjoint), and

    .. math::  \\bar X_c \\mathrel{+}= \\tfrac1m X_c (\\bar\\Sigma + \\bar\\Sigma^\\top), \\qquad
               \\bar X = \\bar X_c - \\tfrac1m \\mathbf 1 \\mathbf 1^\\top \\bar X_c .

    ``grad_out``: exactly ``X``'s shape and dtype, finite. Raises as :func:`cholesky_whitening`;
    ``NonFiniteError`` when the gradient overflows.
    """
    who = "cholesky_whitening_vjp"
    xp, eps = _validate(who, X, eps)
    _validate_grad(who, X, grad_out)
    Xc, L = _cholesky(who, xp, X, eps)
    m = X.shape[0]
    Y = _solve_triangular(xp, L, Xc.T).T                        # X_c L⁻ᵀ
    XcbarT = _solve_triangular(xp, L, grad_out.T, trans=1)      # (Ȳ L⁻¹)ᵀ = L⁻ᵀ Ȳᵀ
    Lbar = xp.tril(XcbarT @ Y)
    Lbar *= -1
    Phi = xp.tril(L.T @ Lbar)
    idx = xp.arange(X.shape[1])
    Phi[idx, idx] *= 0.5
    T = _solve_triangular(xp, L, Phi, trans=1)                  # L⁻ᵀ Φ
    Sbar = _solve_triangular(xp, L, T.T, trans=1).T             # (L⁻ᵀ Φ) L⁻¹
    Sbar = Sbar + Sbar.T
    Xcbar = xp.ascontiguousarray(XcbarT.T)
    Xcbar += _pull_sigma(Xc, Sbar, m)
    return _finite(who, xp, _uncentre(xp, Xcbar), X, "the gradient")


# ---------------------------------------------------------------------------------------------------------
# Group-wise whitening: Decorrelated Batch Normalization (ZCA per group) and IterNorm (Newton's iteration).

#: The whitening matrix of one group: ``"zca"`` (exact ``Σ^{-1/2}``) or ``"iternorm"`` (``T`` Newton steps).
WHITENING_METHODS = ("zca", "iternorm")


def _group_bounds(who, d, groups):
    """``[(start, stop)]``: consecutive groups of ``groups`` features, the last one smaller when ``groups``
    does not divide ``d``; ``None`` or ``groups >= d``: one group of all ``d`` features."""
    size = d if groups is None else min(check_int(who, "groups", groups, 1), d)
    return [(a, min(a + size, d)) for a in range(0, d, size)]


@contextlib.contextmanager
def _in_group(bounds, a, b):
    """A ``ValueError`` raised for one group of several says which features it holds."""
    try:
        yield
    except ValueError as exc:
        if len(bounds) == 1:
            raise
        raise type(exc)(f"{exc} (in the group of features {a}..{b - 1})") from None


def _newton_iterations(who, xp, S, T, X):
    """``(tr Σ, P_T, steps)``: IterNorm's ``P_T`` by the coupled form of its iteration (below),
    ``steps = [(R_k, P_k, M_k)]`` for the backward pass.

    ``R_0 = Σ_N = Σ / tr Σ``, ``P_0 = I``, ``M_k = (3I − P_k R_k)/2``, ``P_{k+1} = M_k P_k``,
    ``R_{k+1} = R_k M_k``: by induction ``R_k = Σ_N P_k`` and every iterate is a polynomial in ``Σ_N``, so
    ``P_{k+1} = (3P_k − P_k³ Σ_N)/2``, the paper's recursion, in exact arithmetic. In floating point the
    paper's uncoupled form amplifies rounding errors (near convergence by up to ``κ(Σ_N)/2`` a step: at
    ``κ = 100`` its ``P_20`` is garbage); the coupled form is stable (Higham 2008, "Functions of Matrices",
    Ch. 6, the coupled Newton--Schulz iteration)."""
    t = _finite(who, xp, xp.trace(S), X, "the trace of the covariance Σ")
    eye = xp.eye(S.shape[0], dtype=S.dtype)
    R, P = S / t, eye
    steps = []
    for _ in range(T):
        M = 1.5 * eye - 0.5 * (P @ R)
        steps.append((R, P, M))
        R, P = R @ M, M @ P
    return t, P, steps


def _iternorm_pullback(xp, Xc, t, steps, W, Ybar):
    """``X̄_c`` of ``Y = X_c W``, ``W = P_T / √(tr Σ)`` (before the centring's backward pass): reverse mode
    through each step of :func:`_newton_iterations`, ``Σ_N = Σ / tr Σ`` and ``Σ = X_cᵀX_c/m + εI``."""
    Wbar = Xc.T @ Ybar
    Xcbar = Ybar @ W.T
    Pbar = Wbar / xp.sqrt(t)
    tbar = -0.5 * (Wbar * W).sum() / t                          # ∂W/∂t = −½ W / t
    Rbar = None                                                 # R_T is not used
    for R, P, M in reversed(steps):                             # R' = R M, P' = M P, M = 1.5 I − 0.5 P R
        Mbar = Pbar @ P.T
        if Rbar is not None:
            Mbar += R.T @ Rbar
            Rbar = Rbar @ M.T
        Pbar = M.T @ Pbar
        Mbar *= -0.5
        Pbar += Mbar @ R.T
        Rbar = P.T @ Mbar if Rbar is None else Rbar + P.T @ Mbar
    A = steps[0][0]                                             # R_0 = Σ_N: Σ̄_N = R̄_0
    tbar -= (Rbar * A).sum() / t                                # Σ_N = Σ / t: ∂Σ_N/∂t = −Σ_N / t
    Sbar = Rbar / t
    idx = xp.arange(A.shape[0])
    Sbar[idx, idx] += tbar                                      # t = tr Σ
    Xcbar += _pull_sigma(Xc, Sbar + Sbar.T, Xc.shape[0])
    return Xcbar


class _GroupCache:
    """What :func:`group_whitening_backward_as` needs, and the statistics a layer keeps: ``mean`` (the
    batch mean, ``(d,)``) and ``matrix`` (the block-diagonal ``(d, d)`` whitening matrix, built on demand)."""

    __slots__ = ("method", "bounds", "parts", "mean", "shape", "dtype")

    def __init__(self, method, bounds, parts, mean, shape, dtype):
        self.method, self.bounds, self.parts, self.mean = method, bounds, parts, mean
        self.shape, self.dtype = shape, dtype

    @property
    def matrix(self):
        xp = get_array_module(self.mean)
        d = self.shape[1]
        M = xp.zeros((d, d), dtype=self.dtype)
        for (a, b), part in zip(self.bounds, self.parts):
            M[a:b, a:b] = part[-1]
        return M


def _group_whitening(who, xp, X, method, bounds, eps, T):
    """Forward pass of the validated input: ``(Y, cache)``."""
    mean = X.mean(axis=0)
    Xc_all = X - mean
    Y = xp.empty_like(X)
    parts = []
    for a, b in bounds:
        Xc = Xc_all[:, a:b]
        with _in_group(bounds, a, b):
            S = _covariance(who, xp, Xc, eps, X)
            if method == "zca":
                lam, U = _spectrum(who, xp, S)
                parts.append((Xc, lam, U, (U / xp.sqrt(lam)) @ U.T))
            else:
                t, P, steps = _newton_iterations(who, xp, S, T, X)
                parts.append((Xc, t, steps, P / xp.sqrt(t)))
        Y[:, a:b] = Xc @ parts[-1][-1]
    return _finite(who, xp, Y, X, "the output"), _GroupCache(method, bounds, parts, mean, X.shape, X.dtype)


@_quiet
def group_whitening_forward_as(X, method, groups, eps, iterations, who, name="X"):
    """``(Y, cache)`` of :func:`group_zca_whitening` (``method="zca"``) or :func:`iternorm_whitening`
    (``"iternorm"``) with the caller's names in error messages (the layers); ``cache.mean`` is the batch mean
    and ``cache.matrix`` the block-diagonal whitening matrix, for running statistics."""
    xp, eps = _validate(who, X, eps, name)
    method = check_choice(who, "method", method, WHITENING_METHODS)
    bounds = _group_bounds(who, X.shape[1], groups)
    T = check_int(who, "iterations", iterations, 1, MAX_ITERATIONS) if method == "iternorm" else None
    return _group_whitening(who, xp, X, method, bounds, eps, T)


@_quiet
def group_whitening_backward_as(grad_out, cache, who, name="grad_out"):
    """``X̄`` from ``grad_out`` and the ``cache`` of :func:`group_whitening_forward_as`; ``grad_out`` of
    exactly the output's shape and dtype, finite; ``NonFiniteError`` when the gradient overflows."""
    xp = check_cotangent(who, name, grad_out, cache.shape, cache.dtype, of="the output's")
    pullback = _zca_pullback if cache.method == "zca" else _iternorm_pullback
    Xbar = xp.empty_like(grad_out)
    for (a, b), part in zip(cache.bounds, cache.parts):
        Xbar[:, a:b] = _uncentre(xp, pullback(xp, *part, grad_out[:, a:b]))
    return check_result(who, Xbar, "the gradient", "use float64 or rescale the input")


def _group_vjp(who, method, X, grad_out, groups, eps, iterations):
    xp, eps = _validate(who, X, eps)
    _validate_grad(who, X, grad_out)
    bounds = _group_bounds(who, X.shape[1], groups)
    T = check_int(who, "iterations", iterations, 1, MAX_ITERATIONS) if method == "iternorm" else None
    _, cache = _group_whitening(who, xp, X, method, bounds, eps, T)
    return group_whitening_backward_as(grad_out, cache, who)


@_quiet
def group_zca_whitening(X, groups=None, eps=1e-5):
    """Group-wise ZCA whitening, the whitening of Decorrelated Batch Normalization (Huang, Yang, Lang &
    Deng 2018, "Decorrelated Batch Normalization", CVPR): the features are cut into consecutive groups of
    ``groups`` features and each group is whitened by :func:`zca_whitening` on its own.

    .. math::  X = [X_1, \\dots, X_G], \\qquad Y = [X_{1,c} \\Sigma_1^{-1/2}, \\dots, X_{G,c}
               \\Sigma_G^{-1/2}], \\qquad \\Sigma_g = \\tfrac1m X_{g,c}^\\top X_{g,c} + \\varepsilon I

    i.e. ``Y = X_c W`` with ``W`` block diagonal. Features in different groups stay correlated; a group of
    ``g`` features needs ``m > g`` samples for ``Σ_g`` to be well conditioned (else its smallest eigenvalues
    are ``ε``), which is why the paper whitens groups (``g = 16`` in its CNN experiments) rather than all
    ``d`` features of a convolution layer.

    Parameters
    ----------
    X : (m, d) float array
        ``m >= 2`` samples of ``d`` features, float32 or float64.
    groups : int >= 1 or None
        Features per group (the paper's group size, not the number of groups). When it does not divide
        ``d`` the last group holds the ``d mod groups`` remaining features, as in the paper's code
        (``DecorelateBN_Advance.lua``, ``m_perGroup``); ``None`` or a value ``>= d`` whitens all ``d``
        features together (:func:`zca_whitening`).
    eps : float > 0
        Added to the diagonal of each group's covariance.

    Returns
    -------
    Y : (m, d) array, dtype of ``X``
        Each group's block of ``YᵀY/m`` is ``I − εΣ_g⁻¹``.

    Raises
    ------
    ValueError
        A group's ``Σ_g`` numerically singular (the message names the group's features), a LAPACK failure,
        or bad input (``TypeError`` for a non-float ``X`` or a non-int ``groups``); ``NonFiniteError`` when a
        covariance overflows.

    Notes
    -----
    The paper's code adds ``ε`` to the eigenvalues of the biased covariance after ``torch.svd`` (the same
    ``Σ_g``) with a default ``ε = 1e-7``; ours is ``1e-5``. Its backward pass divides by ``λ_i − λ_j``
    (with ``1e-45`` added against ties); :func:`group_zca_whitening_vjp` uses the divided differences of
    :func:`zca_whitening_vjp`, exact at repeated eigenvalues.
    """
    who = "group_zca_whitening"
    xp, eps = _validate(who, X, eps)
    return _group_whitening(who, xp, X, "zca", _group_bounds(who, X.shape[1], groups), eps, None)[0]


@_quiet
def group_zca_whitening_vjp(X, grad_out, groups=None, eps=1e-5):
    """Gradient of ``⟨grad_out, group_zca_whitening(X, groups, eps)⟩`` with respect to ``X``: the
    backward pass of :func:`zca_whitening_vjp` on each group's columns (the groups share no input, so the
    gradient of group ``g`` is ``zca_whitening_vjp(X_g, grad_out_g)``).

    ``grad_out``: exactly ``X``'s shape and dtype, finite. Raises as :func:`group_zca_whitening`;
    ``NonFiniteError`` when the gradient overflows.
    """
    return _group_vjp("group_zca_whitening_vjp", "zca", X, grad_out, groups, eps, None)


@_quiet
def iternorm_whitening(X, groups=None, iterations=5, eps=1e-5):
    """Iterative Normalization (IterNorm) of Huang, Zhou, Zhu, Liu & Shao 2019, "Iterative Normalization:
    Beyond Standardization towards Efficient Whitening" (CVPR): whitening by ``T`` steps of Newton's
    iteration for ``Σ^{-1/2}``, group-wise as :func:`group_zca_whitening`.

    For each group (``Σ = X_cᵀX_c/m + εI`` of its features):

    .. math::  \\Sigma_N = \\Sigma / \\operatorname{tr}\\Sigma, \\quad P_0 = I, \\quad
               P_k = \\tfrac12 \\big(3 P_{k-1} - P_{k-1}^3 \\Sigma_N\\big), \\qquad
               Y = X_c \\, P_T / \\sqrt{\\operatorname{tr}\\Sigma}

    The trace normalisation puts the eigenvalues of ``Σ_N`` in ``(0, 1]``, where the iteration converges
    (monotonically, each eigenvalue ``p`` of ``P_k`` rising to ``λ^{-1/2}``), so ``P_T/√tr Σ → Σ^{-1/2}``
    and the output tends to :func:`group_zca_whitening`'s. With the paper's ``T = 5`` it stops early: the
    directions of small variance (``λ ≪ tr Σ``) are only partly whitened, which the paper argues is a useful
    middle ground between standardization and whitening. Only matrix products: no eigendecomposition, no
    singular case, and the map is polynomial in ``Σ_N``.

    Parameters
    ----------
    X : (m, d) float array
        ``m >= 2`` samples of ``d`` features, float32 or float64.
    groups : int >= 1 or None
        Features per group, as for :func:`group_zca_whitening` (the last group smaller when it does not
        divide ``d``; ``None``: one group).
    iterations : int in [1, MAX_ITERATIONS]
        ``T``, the number of Newton steps (the paper's default 5).
    eps : float > 0
        Added to the diagonal of each group's covariance, before the trace normalisation.

    Returns
    -------
    Y : (m, d) array, dtype of ``X``

    Raises
    ------
    TypeError, ValueError
        Bad input; ``NonFiniteError`` when a covariance, its trace or the output overflows.

    Notes
    -----
    The official code (``huangleiBuaa/IterNorm-pytorch``, ``iterative_normalization.py``) has the same
    conventions: the biased ``1/m`` covariance, ``ε`` added before the trace is taken, ``P_k`` as written
    (``P_{k−1}³`` times ``Σ_N``) and the whitening matrix ``P_T/√tr Σ``. It computes ``x̂ = W x_c`` on
    ``(d, m)`` data, i.e. ``Y = X_c Wᵀ``; ``P_T`` is a polynomial in ``Σ_N`` and so symmetric, and the two
    agree to rounding. Its groups must be equal: a group size that does not divide ``d`` is halved until it
    does (``num_channels``), where ours keeps the size and makes the last group smaller.
    """
    who = "iternorm_whitening"
    xp, eps = _validate(who, X, eps)
    bounds = _group_bounds(who, X.shape[1], groups)
    T = check_int(who, "iterations", iterations, 1, MAX_ITERATIONS)
    return _group_whitening(who, xp, X, "iternorm", bounds, eps, T)[0]


@_quiet
def iternorm_whitening_vjp(X, grad_out, groups=None, iterations=5, eps=1e-5):
    """Gradient of ``⟨grad_out, iternorm_whitening(X, groups, iterations, eps)⟩`` with respect to ``X``:
    the exact derivative of the ``T``-step map computed (not of its limit ``Σ^{-1/2}``).

    Per group, with ``W = P_T t^{-1/2}`` (``t = tr Σ``), ``Ȳ = grad_out``, ``W̄ = X_cᵀȲ``: ``P̄_T = W̄ t^{-1/2}``
    and ``t̄ = −½ ⟨W̄, W⟩ / t``; then backwards through ``P_k = (3B − B³Σ_N)/2``, ``B = P_{k−1}``:

    .. math::  \\bar\\Sigma_N \\mathrel{+}= -\\tfrac12 (B^3)^\\top \\bar P_k, \\qquad
               \\bar B = \\tfrac32 \\bar P_k + (B^2)^\\top \\bar C + \\bar C' B^\\top + B^\\top \\bar C',
               \\quad \\bar C = -\\tfrac12 \\bar P_k \\Sigma_N^\\top, \\ \\bar C' = \\bar C B^\\top

    (``C = B² B``, ``C̄'`` the cotangent of ``B²``), and ``P̄_{k−1} = B̄``; finally ``Σ̄ = Σ̄_N / t + t̄' I``
    with ``t̄' = t̄ − ⟨Σ̄_N, Σ_N⟩/t`` and, as for every whitening here,

    .. math::  \\bar X_c = \\bar Y W^\\top + \\tfrac1m X_c (\\bar\\Sigma + \\bar\\Sigma^\\top), \\qquad
               \\bar X = \\bar X_c - \\tfrac1m \\mathbf 1 \\mathbf 1^\\top \\bar X_c .

    The official code's hand-written backward pass (``iterative_normalization_py.backward``) runs the same
    recursion with ``P_k`` and ``Σ_N`` taken as symmetric. ``grad_out``: exactly ``X``'s shape and dtype,
    finite. Raises as :func:`iternorm_whitening`; ``NonFiniteError`` when the gradient overflows.
    """
    return _group_vjp("iternorm_whitening_vjp", "iternorm", X, grad_out, groups, eps, iterations)


# ---------------------------------------------------------------------------------------------------------
# DeCov.

@_quiet
def decov(H, weight=1.0):
    """The DeCov penalty of Cogswell, Ahmed, Girshick, Zitnick & Batra 2016, "Reducing Overfitting in Deep
    Networks by Decorrelating Representations" (ICLR): the squared off-diagonal batch covariances of a
    layer's activations.

    .. math::  H_c = H - \\mathbf 1 \\mu^\\top, \\quad C = \\tfrac1m H_c^\\top H_c, \\qquad
               R(H) = \\tfrac{\\lambda}{2} \\big(\\lVert C \\rVert_F^2 - \\lVert \\operatorname{diag} C
               \\rVert_2^2\\big), \\qquad
               \\frac{\\partial R}{\\partial H} = \\frac{2\\lambda}{m} H_c \\big(C - \\operatorname{diag}(C)\\big)

    (the gradient w.r.t. ``H_c`` has zero column means, so the centring adds nothing). **Normalisation**:
    ``C`` uses ``1/m``, the paper's Eq. 1 and batch normalization's biased batch statistics (and
    ``torch.cov(H.T, correction=0)``); a re-implementation with ``torch.cov``'s default ``correction=1``
    (``1/(m − 1)``) gives a value and gradient ``(m/(m − 1))²`` times ours.

    Parameters
    ----------
    H : (m, d) or (b, d, h, w) float array
        Activations: ``m >= 2`` samples of ``d`` units. A conv output ``(b, d, h, w)`` is read as
        ``(b·h·w, d)``: every spatial position is a sample, the channels are the units (as
        :func:`orthoref.regularizers.self_orthogonality` reads it).
    weight : float >= 0
        λ.

    Returns
    -------
    value : 0-d array, dtype of ``H``
    grad : array like ``H``
        The exact gradient of ``value`` w.r.t. ``H``; chain it into the layer's backward pass.

    Raises
    ------
    TypeError, ValueError
        Bad ``H`` (not float32/float64, not 2-D or 4-D, fewer than 2 samples, NaN/Inf) or ``weight``;
        ``NonFiniteError`` when the value or the gradient overflows (``|H| ≈ 1e77`` in float64, ``1e10`` in
        float32: the value is quartic in ``H``).
    """
    who = "decov"
    xp = check_array(who, H, "H", ndim=(2, 4))
    weight = check_real(who, "weight", weight, lo=0.0)
    d = H.shape[1]
    H2 = H if H.ndim == 2 else H.transpose(0, 2, 3, 1).reshape(-1, d)
    m = H2.shape[0]
    if m < 2:
        raise ValueError(f"{who}: H must have at least 2 samples to estimate a covariance, got shape "
                         f"{tuple(H.shape)}")
    Hc = _centre(xp, H2)
    C = Hc.T @ Hc
    C /= m
    idx = xp.arange(d)
    C[idx, idx] = 0                                             # C − diag(C)
    flat = C.ravel()
    value = (0.5 * weight) * xp.dot(flat, flat)                 # no conjugation: complex-step analytic
    a = float(abs(value))
    if not math.isfinite(a) or a > float(np.finfo(H.dtype).max):
        raise _overflow(who, H, "the penalty", name="H")
    grad = Hc @ C
    grad *= 2.0 * weight / m
    if not all_finite(xp, grad):
        raise _overflow(who, H, "the gradient", name="H")
    if H.ndim == 4:
        b, _, h, w = H.shape
        grad = xp.ascontiguousarray(grad.reshape(b, h, w, d).transpose(0, 3, 1, 2))
    return xp.asarray(value, dtype=H.dtype), grad
