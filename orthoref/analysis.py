"""Spectra, ranks, filter angles, Jacobian spectra, low-rank factors and PCA of weights and models.

Conventions (the README's "Conventions" section, "Layouts and flattening"):

- A weight ``W`` (Linear ``(out, in)``, Conv2d ``(out, in/groups, kh, kw)``, PyTorch layout) is seen as the
  matrix ``M = W.reshape(out, -1)``: rows are the filters. TensorFlow kernels (filters on the last axis)
  must be transposed first (``W_tf.transpose(3, 2, 0, 1)``, Dense ``W_tf.T``); the order of the fan-in
  axis changes none of the quantities below except the *values* of the factor ``B`` of :func:`low_rank`.
- Spectral quantities are computed in float64 whatever the input dtype (float32 singular values of a
  float32 weight lose ``σ_min`` to rounding when ``σ_max/σ_min ≳ 10⁴``); they come back as float64 arrays on
  the input's backend, or Python floats.
- Every function runs on NumPy and CuPy arrays (``xp = get_array_module(W)``).
- Bad input (1-D weight, a dtype other than float32/float64 -- float16, integers, bools, complex, object
  arrays, Python lists --, NaN/Inf, a rank out of range) raises ``ValueError`` / ``TypeError`` naming the
  function, the argument, what was expected and what came; a LAPACK failure (an SVD that does not
  converge) is a ``ValueError`` naming the function.
- Scale-invariant quantities (:func:`stable_rank`, :func:`condition_number`, :func:`effective_rank`,
  :func:`filter_angles`, the factors' directions in :func:`low_rank` and :func:`pca`) are computed after an
  exact power-of-two rescaling of a weight far from 1 in magnitude, so they are right at any representable
  scale (``1e300`` or denormal). A quantity that is itself not representable (``σ_max`` of a ``1e308``
  matrix, the variance of ``1e300`` data) raises :class:`orthoref._checks.NonFiniteError`; nothing returns
  NaN or Inf except where documented (``condition_number`` of a singular weight is ``inf``, as in
  ``numpy.linalg.cond``).

:func:`analyze_checkpoint` (``orthoref analyze CHECKPOINT --out DIR``) writes the per-layer table and
figures of a checkpoint written by :func:`orthoref.train.fit` or, for ``orthoref train --model rnn``, by
:func:`orthoref.sequence.fit_adding`.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from typing import NamedTuple

import numpy as np

from ._checks import (NonFiniteError, all_finite, check_array, check_bool, check_finite, check_float, check_int,
                      check_real, check_result)
from .backend import asarray, get_array_module, to_numpy, using
from ._io import atomic_write_text
from .ortho._common import float_ldexp, pow2_rescale
from .ortho.metrics import orthogonality_error_rms
from .ortho.singular import transfer_matrices

__all__ = [
    "PCAResult",
    "analyze_checkpoint",
    "condition_number",
    "conv_singular_values",
    "effective_rank",
    "filter_angles",
    "format_layer_table",
    "jacobian",
    "jacobian_singular_values",
    "layer_table",
    "load_model",
    "low_rank",
    "pca",
    "singular_values",
    "stable_rank",
    "weights",
]

_WEIGHT = "(a weight (out, in, ...))"


def _matrix64(who, W, name="W"):
    """Validate ``W`` and return ``(xp, M)`` with ``M = W.reshape(out, -1)`` in float64."""
    xp = check_array(who, W, name, min_ndim=2, what=_WEIGHT)
    return xp, W.reshape(W.shape[0], -1).astype(xp.float64, copy=False)


def _svd(who, xp, M, name="W", **kwargs):
    """``xp.linalg.svd(M, **kwargs)``; a LAPACK failure becomes a ``ValueError`` naming ``who``."""
    try:
        return xp.linalg.svd(M, **kwargs)
    except np.linalg.LinAlgError:
        raise ValueError(f"{who}: the SVD (LAPACK) of {name} did not converge; {name} may be too badly scaled "
                         f"or ill-conditioned") from None


def _sv(W, who):
    """Singular values of ``W`` (``NonFiniteError`` when ``σ_max`` overflows float64)."""
    xp, M = _matrix64(who, W)
    return xp, check_result(who, _svd(who, xp, M, compute_uv=False), "the singular values", "rescale W")


def _svd_any_scale(who, xp, M, name="W", **kwargs):
    """``(svd(M · 2**-e), e)``. LAPACK scales internally, so ``e = 0`` (the plain SVD, bit-identical to
    it) unless ``M`` is denormal (its singular values would come back denormal, with few bits) or a
    singular value overflows; then ``M`` is multiplied by an exact power of two first."""
    Ms, e = pow2_rescale(xp, M, -1022, 1023)
    out = _svd(who, xp, Ms, name, **kwargs)
    s = out[1] if isinstance(out, tuple) else out
    if not all_finite(xp, s):
        Ms, e = pow2_rescale(xp, M, 0, 0)
        out = _svd(who, xp, Ms, name, **kwargs)
    return out, e


def _scaled_sv(W, who, name="W"):
    """``(s, e)``: the singular values of ``W · 2**-e`` (see :func:`_svd_any_scale`), for the
    scale-invariant quantities."""
    xp, M = _matrix64(who, W, name)
    return _svd_any_scale(who, xp, M, name, compute_uv=False)


def _unit_scale(s):
    """``s`` times an exact power of two that brings ``s[0]`` near 1 when ``s[0]`` lies outside
    ``[2**-500, 2**500]`` (where ``s[0]²`` or ``Σ s`` could over/underflow); else ``s`` itself."""
    s0 = float(s[0])
    if s0 == 0.0 or 2.0 ** -500 <= s0 <= 2.0 ** 500:
        return s
    return get_array_module(s).ldexp(s, -math.frexp(s0)[1])


# ---------------------------------------------------------------------------------------------------------
# Spectra and ranks of one weight.

def singular_values(W):
    """Singular values of the weight seen as a matrix, in descending order.

    .. math::  M = W.\\mathrm{reshape}(\\mathrm{out}, -1) = U \\operatorname{diag}(\\sigma) V^\\top, \\qquad
               \\sigma_1 \\ge \\sigma_2 \\ge \\dots \\ge \\sigma_k \\ge 0, \\quad k = \\min(\\mathrm{out}, \\mathrm{fan\\_in})

    Parameters
    ----------
    W : (out, in) or (out, in/groups, kh, kw) float array (any rank >= 2)

    Returns
    -------
    sigma : (k,) float64 array on the backend of ``W``

    Notes
    -----
    For a Conv2d weight these are the singular values of the filter matrix (what orthogonality
    regularizers act on), not those of the convolution operator on images (Sedghi et al. 2019).
    """
    return _sv(W, "singular_values")[1]


def conv_singular_values(K, input_shape):
    r"""Singular values of the convolution *operator* of kernel ``K`` on ``n × m`` images with circular
    padding, stride 1 (Sedghi, Gupta & Long, "The singular values of convolutional layers", ICLR 2019), in
    descending order; ``[0]`` is the operator's spectral norm (its Lipschitz constant in ℓ₂).

    .. math::  P(u, v) = \sum_{a, b} K_{:, :, a, b}\, \omega_n^{u a}\, \omega_m^{v b} \in \mathbb C^{c_o \times c_i},
               \qquad \sigma(\mathcal K) = \bigcup_{u < n,\, v < m} \sigma\big(P(u, v)\big)

    (the 2-D DFT of the kernel zero-padded to ``n × m``, one ``c_out × c_in`` SVD per frequency):
    ``min(c_out, c_in) · n · m`` values, those of the dense ``(c_out·n·m) × (c_in·n·m)`` matrix of the
    operator (PyTorch's cross-correlation and the true convolution share them).

    Parameters
    ----------
    K : (c_out, c_in, kh, kw) float array
    input_shape : (n, m) ints with ``n >= kh``, ``m >= kw``

    Returns
    -------
    sigma : (min(c_out, c_in)·n·m,) float64 array, descending

    Notes
    -----
    :func:`singular_values` of a conv weight gives those of the ``(out, in·kh·kw)`` filter matrix, which the
    orthogonality penalties act on; the operator's are different (an orthogonal filter matrix does not make
    an orthogonal operator: the delta-orthogonal kernels of :func:`orthoref.init.delta_orthogonal` do).
    Zero padding (PyTorch's) changes the operator at the borders; circular padding is the exact case.
    """
    who = "conv_singular_values"
    P = transfer_matrices(who, K, input_shape)                                 # (n, m, c_out, c_in)
    xp = get_array_module(P)
    sigma = _svd(who, xp, P, "K", compute_uv=False).reshape(-1)
    return check_result(who, xp.sort(sigma)[::-1], "the singular values", "rescale K")


def _effective_rank(s):
    """From singular values in any common scale (scale-invariant)."""
    xp = get_array_module(s)
    s = _unit_scale(s)
    total = s.sum()
    if float(total) == 0.0:
        return 0.0
    p = s / total
    plogp = xp.where(p > 0, p * xp.log(xp.where(p > 0, p, 1.0)), 0.0)
    return float(xp.exp(-plogp.sum()))


def _stable_rank(s):
    """From singular values in any common scale (scale-invariant)."""
    s = _unit_scale(s)
    smax = float(s[0])
    return 0.0 if smax == 0.0 else float((s * s).sum()) / (smax * smax)


def _condition(s):
    """``σ_1 / σ_k`` (scale-invariant); ``math.inf`` for ``σ_k = 0`` or a ratio beyond float64."""
    smin = float(s[-1])
    return math.inf if smin == 0.0 else float(s[0]) / smin


def effective_rank(W) -> float:
    """Effective rank of Roy & Vetterli: the exponential of the entropy of the normalized singular values.

    .. math::  p_i = \\frac{\\sigma_i}{\\sum_j \\sigma_j}, \\qquad
               \\operatorname{erank}(W) = \\exp\\Big(-\\sum_i p_i \\log p_i\\Big), \\quad 0 \\log 0 = 0

    ``1 <= erank <= rank(M)``; it equals ``k`` exactly when all singular values are equal (an orthogonal
    weight) and is ``0.0`` by convention for a zero weight. Scale-invariant, and computed so at any scale
    (``1e300`` or denormal weights).

    Parameters
    ----------
    W : float array of rank >= 2 (seen as ``M = W.reshape(out, -1)``)

    Returns
    -------
    float

    References
    ----------
    O. Roy and M. Vetterli, "The effective rank: a measure of effective dimensionality", EUSIPCO 2007.
    """
    return _effective_rank(_scaled_sv(W, "effective_rank")[0])


def stable_rank(W) -> float:
    """Stable (numerical) rank ``‖M‖²_F / ‖M‖²_2``.

    .. math::  \\operatorname{srank}(W) = \\frac{\\sum_i \\sigma_i^2}{\\sigma_1^2} \\in [1, \\operatorname{rank} M]

    ``0.0`` by convention for a zero weight. Scale-invariant, and computed so at any scale: a weight of
    ``1e155`` or more (whose ``σ²`` overflows) or a denormal one is rescaled by an exact power of two first.

    References
    ----------
    M. Rudelson and R. Vershynin, "Sampling from large matrices: an approach through geometric functional
    analysis", J. ACM 54(4), 2007.
    """
    return _stable_rank(_scaled_sv(W, "stable_rank")[0])


def condition_number(W) -> float:
    """``σ_max / σ_min`` of ``M = W.reshape(out, -1)`` over its ``k = min(out, fan_in)`` singular values.

    Returns ``math.inf`` when ``σ_min = 0`` (a rank-deficient or zero weight: the documented answer, not
    an error) or when ``σ_max / σ_min`` exceeds the float64 range. An orthogonal weight has condition
    number 1. Scale-invariant, and computed so at any scale (``1e300`` or denormal weights).
    """
    return _condition(_scaled_sv(W, "condition_number")[0])


def filter_angles(W):
    """Pairwise angles, in degrees, between the filters (rows of ``M = W.reshape(out, -1)``).

    .. math::  \\theta_{ij} = \\frac{180}{\\pi} \\arccos \\frac{\\langle m_i, m_j \\rangle}
               {\\lVert m_i \\rVert \\, \\lVert m_j \\rVert}, \\qquad i < j

    The histogram of these angles is what the Self-Orthogonality Module paper plots per layer: orthogonal
    filters pile up at 90°.

    Parameters
    ----------
    W : float array of rank >= 2

    Returns
    -------
    theta : (out (out − 1) / 2,) float64 array in [0, 180], the upper triangle in row-major order
        (``(0,1), (0,2), …, (1,2), …``). Near 0° and 180° the arccos loses accuracy
        (an error of ~``√eps`` rad, 1e-6° in float64). Angles do not depend on the filters' norms, and
        filters of any representable norm (``1e300``, denormal) are rescaled by exact powers of two
        first.

    References
    ----------
    Zhang, Jiao, Chen, Zhang & Xu, "Self-Orthogonality Module: A Network Architecture Plug-in for Learning
    Orthogonal Filters", WACV 2020.
    """
    xp, M = _matrix64("filter_angles", W)
    big = xp.abs(M).max(axis=1)
    if not bool(big.all()):
        zero = [int(r) for r in to_numpy(xp.flatnonzero(big == 0))]
        raise ValueError(f"filter_angles: W has all-zero filters (rows {zero[:10]}{' ...' if len(zero) > 10 else ''}"
                         f" of W.reshape(out, -1), shape {tuple(M.shape)}): a zero filter has no direction, so its "
                         f"angles are undefined; pass the non-zero filters, M[abs(M).max(axis=1) > 0]")
    if _far_from_one(big):                          # a filter's ‖m‖² would over- or underflow: rescale rows
        M = xp.ldexp(M, -xp.frexp(big)[1][:, None])
    norms = xp.sqrt((M * M).sum(axis=1))
    U = M / norms[:, None]
    i, j = xp.triu_indices(M.shape[0], k=1)
    cos = xp.clip((U @ U.T)[i, j], -1.0, 1.0)
    theta = xp.degrees(xp.arccos(cos))
    return theta


def _nonzero_filters(W):
    """The rows of ``M = W.reshape(out, -1)`` that are not all zero (a pruned or dead filter has no angle)."""
    M = W.reshape(W.shape[0], -1)
    return M[abs(M).max(axis=1) > 0]


def _far_from_one(big):
    """Some non-zero entry of ``big`` (the rows' largest magnitudes) lies outside ``[2**-500, 2**500]``,
    where squares of the row's entries (or their sum) over- or underflow float64."""
    nz = big[big > 0]
    return nz.size > 0 and (float(nz.min()) < 2.0 ** -500 or float(nz.max()) > 2.0 ** 500)


# ---------------------------------------------------------------------------------------------------------
# Model Jacobians.

def _check_model(who, model):
    from .nn import Module
    if not isinstance(model, Module):
        raise TypeError(f"{who}: model must be an orthoref.nn.Module (e.g. a Sequential), got "
                        f"{type(model).__name__}")


def jacobian(model, x):
    """Per-example input–output Jacobians of ``model`` at the batch ``x``, by its own backward pass.

    .. math::  J^{(n)}_{ji} = \\frac{\\partial f(x_n)_j}{\\partial (x_n)_i}

    The model runs once forward in eval mode; then one backward pass per output unit ``j`` with the
    cotangent ``e_j`` on every example gives row ``j`` of all ``N`` Jacobians (reverse mode; cheap when the
    output is small, e.g. 10 logits). Examples do not interact in eval mode (dropout is the identity,
    batch norm uses running statistics), so the batch is ``N`` independent Jacobians. Parameter
    gradients (``.grad``) and the train/eval mode are restored afterwards.

    Parameters
    ----------
    model : orthoref.nn.Module
        Anything with ``forward`` / ``backward(grad_out, input_grad=True)``, typically a Sequential.
    x : (N, ...) float array of the model's dtype and backend
        A batch; pass ``x[None]`` for one example.

    Returns
    -------
    J : (N, out, in) array of the model's dtype, ``out`` and ``in`` the flattened sizes of one example's
        output and input.
    """
    return _jacobian("jacobian", model, x)


def _jacobian(who, model, x):
    _check_model(who, model)
    check_float(who, "x", x)
    if x.ndim < 2 or x.size == 0:
        raise ValueError(f"{who}: x must be a non-empty batch (N, ...) with N >= 1, got shape {tuple(x.shape)}")
    xp = get_array_module(x)
    check_finite(who, "x", x, xp)
    was_training = model.training
    params = model.parameters()
    saved = [p.grad for p in params]
    model.eval()
    try:
        for p in params:
            p.grad = None          # backward accumulates in place: never into the caller's arrays
        y = model.forward(x)
        n, n_in = x.shape[0], int(np.prod(x.shape[1:]))
        n_out = int(np.prod(y.shape[1:]))
        J = xp.empty((n, n_out, n_in), dtype=y.dtype)
        for j in range(n_out):
            g = xp.zeros((n, n_out), dtype=y.dtype)
            g[:, j] = 1
            dx = model.backward(g.reshape(y.shape), input_grad=True)
            J[:, j, :] = dx.reshape(n, n_in)
    finally:
        for p, g in zip(params, saved):
            p.grad = g
        model.train(was_training)
    return check_result(who, J, "the Jacobian", "the model overflows at x; use float64 or rescale x")


def jacobian_singular_values(model, x):
    """Singular values of each example's input–output Jacobian (dynamical isometry).

    A network is dynamically isometric at ``x`` when all singular values of ``J = ∂f/∂x`` concentrate
    near 1 (Pennington et al.): signals and gradients then keep their norm through the depth.

    Parameters
    ----------
    model : orthoref.nn.Module (run in eval mode; see :func:`jacobian`)
    x : (N, ...) float array, a batch

    Returns
    -------
    sigma : (N, min(out, in)) float64 array, each row in descending order (the SVD of the Jacobian is taken
        in float64; the Jacobian itself in the model's dtype).

    References
    ----------
    J. Pennington, S. Schoenholz and S. Ganguli, "Resurrecting the sigmoid in deep learning through
    dynamical isometry: theory and practice", NeurIPS 2017.
    """
    J = _jacobian("jacobian_singular_values", model, x)
    xp = get_array_module(J)
    return _svd("jacobian_singular_values", xp, J.astype(xp.float64, copy=False), "the Jacobian", compute_uv=False)


# ---------------------------------------------------------------------------------------------------------
# Low-rank factors and PCA.

def _energy_rank(s, energy):
    """Smallest ``r`` with ``Σ_{i<=r} σ_i² / Σ σ_i² >= energy`` (1 for a zero matrix)."""
    s2 = to_numpy(s).astype(np.float64) ** 2
    cum = np.cumsum(s2)
    if cum[-1] == 0:
        return 1
    return min(int(np.searchsorted(cum / cum[-1], energy, side="left")) + 1, len(s2))


def low_rank(W, rank=None, energy=None):
    """Best rank-``r`` factorization ``M ≈ A B`` of ``M = W.reshape(out, -1)`` (truncated SVD).

    .. math::  M = U \\Sigma V^\\top, \\qquad A = U_r \\Sigma_r^{1/2}, \\qquad B = \\Sigma_r^{1/2} V_r^\\top

    By Eckart–Young–Mirsky, ``A B`` is the best rank-``r`` approximation in every unitarily invariant norm:
    ``‖M − AB‖²_F = Σ_{i>r} σ_i²`` and ``‖M − AB‖_2 = σ_{r+1}``. The square root of ``Σ`` is split evenly
    (both factors carry the singular values ``√σ_i``), the usual choice when the factors are trained further.

    Parameters
    ----------
    W : float array of rank >= 2, ``(out, ...)``
    rank : int in [1, k], k = min(out, fan_in)
        Keep this many singular values (``TypeError`` for a float or a bool).
    energy : finite float in (0, 1]
        Keep the smallest ``r`` with ``Σ_{i<=r} σ_i² / Σ_i σ_i² >= energy`` (the fraction of ``‖M‖²_F``
        kept). ``energy=1`` gives the numerical rank of ``M`` (zero singular values dropped). Exactly one of
        ``rank`` and ``energy`` must be given.

    Returns
    -------
    A : (out, r) array of ``W``'s dtype and backend
    B : (r, fan_in) array, ``fan_in = in · kh · kw`` for a conv weight
    r : int, the rank chosen

    Notes
    -----
    The SVD is computed in float64 (of ``M`` rescaled by an exact power of two when ``max |M|`` is far from
    1); the factors are then cast to ``W``'s dtype (``NonFiniteError`` if they overflow it).
    """
    who = "low_rank"
    xp, M = _matrix64(who, W)
    if (rank is None) == (energy is None):
        raise ValueError(f"{who}: give exactly one of rank and energy, got rank={rank!r}, energy={energy!r}")
    k = min(M.shape)
    if rank is not None:
        r = check_int(who, "rank", rank, 1, k)
    else:
        energy = check_real(who, "energy", energy, 0.0, 1.0, lo_open=True)
    (U, s, Vt), e = _svd_any_scale(who, xp, M, full_matrices=False)     # of M · 2**-e; factors get 2**e
    if energy is not None:
        r = _energy_rank(_unit_scale(s), energy)
    root = xp.sqrt(s[:r])
    A, B = U[:, :r] * root, root[:, None] * Vt[:r]
    with np.errstate(over="ignore"):
        if e:
            A, B = xp.ldexp(A, e // 2), xp.ldexp(B, e - e // 2)
        A, B = A.astype(W.dtype), B.astype(W.dtype)
    hint = "use float64 or rescale W" if W.dtype == np.float32 else "rescale W"
    return check_result(who, A, "the factor A", hint), check_result(who, B, "the factor B", hint), r


class PCAResult(NamedTuple):
    """What :func:`pca` returns (a tuple: ``components, variance, projected, mean = pca(X, k)``)."""
    components: object          # (k, d): principal axes, rows orthonormal
    explained_variance: object  # (k,): variance along each axis, S² / (n − 1), descending
    projected: object           # (n, k): (X − mean) @ components.T, divided by √variance if whitened
    mean: object                # (d,): the column means


def pca(X, k, whiten=False):
    """Principal component analysis by the SVD of the centred data.

    .. math::  X - \\mathbf{1}\\mu^\\top = U S V^\\top, \\qquad \\text{components} = V_{:k}^\\top, \\qquad
               \\lambda_i = \\frac{S_i^2}{n - 1}, \\qquad Z = (X - \\mathbf{1}\\mu^\\top) V_{:k} = U_{:k} S_{:k}

    and with ``whiten`` ``Z_{:, i} / √λ_i`` (unit sample variance per component).

    This is scikit-learn's ``PCA(n_components=k, whiten=whiten, svd_solver="full")``: ``components_``,
    ``explained_variance_`` (with ``n − 1``), ``fit_transform(X)`` and ``mean_`` agree, signs included:
    each component's entry of largest magnitude is made positive, as ``svd_flip(u_based_decision=False)``
    does since scikit-learn 1.5 (earlier versions fixed the signs from ``U`` instead, which can flip a
    component and its scores). No scikit-learn dependency.

    Parameters
    ----------
    X : (n, d) float array, n >= 2
    k : int in [1, min(n, d)]
    whiten : bool

    Returns
    -------
    PCAResult(components (k, d), explained_variance (k,), projected (n, k), mean (d,)), float64 arrays on the
    backend of ``X``.

    Raises
    ------
    ValueError
        For ``whiten=True`` when one of the ``k`` components has zero variance (lower ``k``); bad arguments.
    NonFiniteError
        When the mean, a variance or a projection overflows float64 (data near ``1e155`` and above: the
        SVD itself runs on ``X`` rescaled by an exact power of two, so the components are right at any
        scale, and so are the whitened projections).
    """
    who = "pca"
    xp = check_array(who, X, "X", ndim=(2,), what="(n, d)")
    n, d = X.shape
    if n < 2:
        raise ValueError(f"{who}: X needs at least 2 samples (rows) for a variance, got shape {tuple(X.shape)}")
    k = check_int(who, "k", k, 1, min(n, d))
    whiten = check_bool(who, "whiten", whiten)
    Xf, e = pow2_rescale(xp, X.astype(xp.float64, copy=False), -500, 1000)    # e = 0 but at the ends
    mean = Xf.mean(axis=0)
    U, S, Vt = _svd(who, xp, Xf - mean, "X", full_matrices=False)
    U, S, Vt = U[:, :k], S[:k], Vt[:k]
    big = xp.argmax(xp.abs(Vt), axis=1)
    signs = xp.where(Vt[xp.arange(k), big] < 0, -1.0, 1.0)
    Vt = Vt * signs[:, None]
    U = U * signs
    with np.errstate(over="ignore"):                # an overflow is reported below, by name
        variance = S * S / (n - 1)
    Z = U * S
    if whiten:
        if float(variance.min()) == 0.0:
            raise ValueError(f"{who}: whiten=True but component {int(xp.argmin(variance))} of k={k} has zero "
                             f"variance; lower k")
        Z = Z / xp.sqrt(variance)
    if e:                                           # back to the scale of X
        with np.errstate(over="ignore"):
            variance, mean = xp.ldexp(variance, 2 * e), xp.ldexp(mean, e)
            if not whiten:
                Z = xp.ldexp(Z, e)
    for name, a in (("mean", mean), ("explained variance", variance), ("projection", Z)):
        check_result(who, a, f"the {name}", "rescale X")
    return PCAResult(Vt, variance, Z, mean)


# ---------------------------------------------------------------------------------------------------------
# Tables of a model's weights.

def weights(model):
    """``[(name, array)]``: the weights of ``model`` seen by the analysis: its parameters of rank >= 2."""
    _check_model("weights", model)
    return [(n, p.data) for n, p in model.named_parameters() if p.data.ndim >= 2]


def _finite_or_none(v):
    return v if math.isfinite(v) else None


def layer_table(model):
    """One row per weight of ``model`` (its parameters of rank >= 2, in order): spectrum summary.

    Returns
    -------
    list of dict with keys ``name``, ``shape`` (list), ``sigma_max``, ``sigma_min``, ``condition``
    (``math.inf`` when ``σ_min = 0``), ``stable_rank``, ``effective_rank``, ``orthogonality``
    (:func:`orthoref.ortho.orthogonality_error_rms`, ``gram="auto"``). One SVD per weight.

    Raises
    ------
    TypeError
        ``model`` not a Module, a weight not float32/float64.
    ValueError
        A weight holding NaN/Inf (``NonFiniteError``, naming the parameter: a diverged model), or one whose
        ``σ_max`` or orthogonality error overflows float64.
    """
    who = "layer_table"
    _check_model(who, model)
    rows = []
    for name, w in weights(model):
        label = f"parameter {name!r}"
        try:
            s, e = _scaled_sv(w, who, label)
            sigma_max, sigma_min = float_ldexp(s[0], e), float_ldexp(s[-1], e)
            if not math.isfinite(sigma_max):
                raise NonFiniteError(f"{who}: σ_max of {label} overflows float64; rescale the weight")
            orth = orthogonality_error_rms(w)
        except NonFiniteError as exc:
            if str(exc).startswith(who):
                raise
            raise NonFiniteError(f"{who}: {label}: {exc}") from None
        rows.append({
            "name": name, "shape": [int(d) for d in w.shape], "sigma_max": sigma_max, "sigma_min": sigma_min,
            "condition": _condition(s), "stable_rank": _stable_rank(s), "effective_rank": _effective_rank(s),
            "orthogonality": orth,
        })
    return rows


_COLUMNS = (("name", "layer"), ("shape", "shape"), ("sigma_max", "σ_max"), ("sigma_min", "σ_min"),
            ("condition", "condition"), ("stable_rank", "stable rank"), ("effective_rank", "effective rank"),
            ("orthogonality", "‖G−I‖_F/√k"))


def _cell(key, v):
    if key == "name":
        return str(v)
    if key == "shape":
        return "" if v is None else "×".join(str(d) for d in v)
    if v is None or (isinstance(v, float) and math.isinf(v)):
        return "inf"
    return f"{v:.4g}"


def _conv_operator_norms(model, config, rows):
    """``[(name, (h, w), operator σ_max, filter-matrix σ_max)]`` of every Conv2d of ``model`` (a Sequential)
    at the size of the images it sees: one test image run through the layers; the operator's σ_max (circular
    padding) also goes into the weight's row as ``operator_sigma_max``."""
    from .nn import Conv2d
    from .train import load_data
    x = load_data(config)[2][:1]
    by_name = {r["name"]: r for r in rows}
    out = []
    with using(config.backend):
        x = asarray(x)
        for i, layer in enumerate(model):
            if isinstance(layer, Conv2d):
                name = f"{i}.weight"
                hw = tuple(int(d) for d in x.shape[-2:])
                op = float(conv_singular_values(to_numpy(layer.weight.data), hw)[0])
                by_name[name]["operator_sigma_max"] = op
                out.append((name, hw, op, by_name[name]["sigma_max"]))
            x = layer.forward(x)
    return out


def _check_rows(who, rows):
    """``rows``: a list or tuple of dicts with every column's key, the numeric ones holding real numbers or
    None (a ``null`` of ``layers.json``)."""
    if not isinstance(rows, (list, tuple)):
        raise TypeError(f"{who}: rows must be a list of dicts (as layer_table returns), got {type(rows).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise TypeError(f"{who}: rows[{i}] must be a dict, got {type(row).__name__}")
        missing = [key for key, _ in _COLUMNS if key not in row]
        if missing:
            raise ValueError(f"{who}: rows[{i}] lacks the key(s) {missing} (a row of layer_table has "
                             f"{[key for key, _ in _COLUMNS]})")
        shape = row.get("shape")
        if shape is not None and not isinstance(shape, (list, tuple)):
            raise TypeError(f"{who}: rows[{i}]['shape'] must be a list of ints, got {type(shape).__name__}")
        for key, _ in _COLUMNS[2:]:
            v = row.get(key)
            if v is not None and (isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.number))
                                  or isinstance(v, complex)):
                raise TypeError(f"{who}: rows[{i}][{key!r}] must be a real number or None, got "
                                f"{type(v).__name__} {v!r}")


def format_layer_table(rows):
    """The rows of :func:`layer_table` as a Markdown table (one line per weight); ``TypeError`` for rows that
    are not a list of such dicts, ``ValueError`` for a row without one of the columns. Infinite numbers
    (and ``None``, the ``null`` of ``layers.json``) print as ``inf``."""
    _check_rows("format_layer_table", rows)
    lines = ["| " + " | ".join(h for _, h in _COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(k, row.get(k)) for k, _ in _COLUMNS) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# Checkpoints.

def load_model(path):
    """Rebuild the model of a :func:`orthoref.train.fit` checkpoint with its trained parameters.

    The architecture comes from the checkpoint's configuration; input and class counts are read off the
    stored weight shapes (so no data set is needed). Returns ``(model, config, meta)``: the model on the
    configuration's backend and dtype, in eval mode; ``config`` a validated ``TrainConfig``; ``meta`` the
    checkpoint's record (epoch, history, ...). Raises ``orthoref.train.CheckpointError`` (a ValueError)
    for a file that is not such a checkpoint.
    """
    from .train import CheckpointError, TrainConfig, build_model, load_checkpoint

    _check_path("load_model", "path", path)
    if _is_rnn_checkpoint(path):
        raise CheckpointError(f"{path}: a checkpoint of the RNN of orthoref.sequence.fit_adding (orthoref train "
                              f"--model rnn), not of orthoref.train.fit; load it with "
                              f"orthoref.sequence.load_adding_model")
    meta, state, _, _ = load_checkpoint(path)
    config = TrainConfig.from_json(dict(meta["config"], progress=False))
    mats = [(k, v) for k, v in state.items() if k.endswith("weight") and v.ndim >= 2]
    if not mats:
        raise CheckpointError(f"{path}: the checkpoint holds no weight matrices")
    n_classes = int(mats[-1][1].shape[0])
    if config.model == "mlp":
        sample = (int(mats[0][1].shape[1]),)
    else:
        channels, last_conv = int(mats[0][1].shape[1]), int(mats[-2][1].shape[0])
        side = math.isqrt(int(mats[-1][1].shape[1]) // last_conv)
        if side * side * last_conv != int(mats[-1][1].shape[1]):
            raise CheckpointError(f"{path}: cannot infer the image size from the classifier weight "
                                  f"{tuple(mats[-1][1].shape)}")
        sample = (channels, 4 * side, 4 * side)
    model = build_model(config, sample, n_classes)
    try:
        model.load_state_dict(state)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    return model.eval(), config, meta


def _check_path(who, name, path):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{who}: {name} must be a file path (str or os.PathLike), got {type(path).__name__} "
                        f"{path!r}")


def _json_safe(obj):
    if isinstance(obj, float):
        return _finite_or_none(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


# What the Jacobian line of layers.md and jacobian.png say: (name, what it is taken at, what to look for,
# figure title or None for plots.plot_jacobian_spectrum's own).
_MLP_JACOBIAN = ("Input–output Jacobian", "test examples", "dynamical isometry: all near 1", None)
_RNN_JACOBIAN = ("Hidden-state Jacobian ∂h_T/∂h_0", "held-out sequences",
                 "long memory: all near 1; vanishing gradients: near 0",
                 "Singular values of the hidden-state Jacobian ∂h_T/∂h_0")


def _is_rnn_checkpoint(path):
    """Whether ``path`` is a checkpoint of :func:`orthoref.sequence.fit_adding` (``orthoref train --model rnn``)."""
    from .sequence import is_adding_checkpoint
    return is_adding_checkpoint(path)


def _hidden_state_jacobian_sv(rnn, x):
    """Singular values ``(N, hidden)`` of ``∂h_T/∂h_0`` of ``rnn`` (an ``orthoref.nn.RNN``, ``h_0 = 0``) at
    each sequence of ``x (T, N, input)``: one backward pass per hidden unit ``j`` with the cotangent ``e_j`` on
    ``h_T`` gives row ``j`` of every example's Jacobian. The parameters' ``.grad`` are restored afterwards."""
    who = "analyze_checkpoint"
    params = rnn.parameters()
    saved = [p.grad for p in params]
    try:
        for p in params:
            p.grad = None
        out = rnn.forward(x)
        n, h = x.shape[1], rnn.hidden_size
        zeros = np.zeros_like(out)
        J = np.empty((n, h, h), dtype=np.float64)
        for j in range(h):
            g = np.zeros((n, h), dtype=out.dtype)
            g[:, j] = 1
            rnn.backward(zeros, input_grad=False, grad_h_n=g)
            J[:, j, :] = to_numpy(rnn.h0_grad)
    finally:
        for p, g in zip(params, saved):
            p.grad = g
    return _svd(who, np, J, "the hidden-state Jacobian", compute_uv=False)


def _rnn_checkpoint_parts(path, jacobian_examples):
    """The RNN branch of :func:`analyze_checkpoint` (a checkpoint of :func:`orthoref.sequence.fit_adding`):
    ``(model, summary line, Jacobian singular values or None, _RNN_JACOBIAN)``; the model's weights are
    ``rnn.weight_ih_l0``, ``rnn.weight_hh_l0`` and ``head.weight``, the Jacobian is ``∂h_T/∂h_0`` at the first
    ``jacobian_examples`` (at most 500) sequences of the run's held-out set."""
    from .sequence import EVAL_SIZE, load_adding_model
    from .tasks import adding_problem
    model, config, meta = load_adding_model(path)
    jac = None
    if jacobian_examples:
        x = adding_problem(EVAL_SIZE, config["T"], rng=config["seed"] + 1, dtype=config["dtype"])[0]
        jac = _hidden_state_jacobian_sv(model.rnn, x[:, :jacobian_examples])
    summary = (f"rnn (Elman, {model.rnn.nonlinearity}) on the adding problem T={config['T']}, hidden "
               f"{config['hidden']}, init {config['init']}, {config['optimizer']}, step {meta['step']}, held-out "
               f"MSE {meta['history'][-1][1]:.4g}.")
    return model, summary, jac, _RNN_JACOBIAN


def analyze_checkpoint(path, out_dir, figures="auto", jacobian_examples=64, progress=False):
    """Analyse a training checkpoint: per-layer spectra table, Jacobian spectrum and figures.

    Writes into ``out_dir`` (created if needed; every file atomically):

    - ``layers.md``: a header (checkpoint, model, epoch, test accuracy), :func:`format_layer_table`, and the
      input–output Jacobian singular values at the first ``jacobian_examples`` test examples;
    - ``layers.json``: the rows of :func:`layer_table` (an infinite condition number is written as
      ``null``);
    - with matplotlib, via :mod:`orthoref.plots`: ``spectra.png`` (singular values of each weight),
      ``filter_angles.png`` (histograms of :func:`filter_angles` per weight) and ``jacobian.png``.

    Parameters
    ----------
    path : str, a ``checkpoint.npz`` of :func:`orthoref.train.fit` or of :func:`orthoref.sequence.fit_adding`
        (``orthoref train --model rnn``: the rows are its weights ``rnn.weight_ih_l0``, ``rnn.weight_hh_l0``
        and ``head.weight``, and the Jacobian is the hidden-state Jacobian ``∂h_T/∂h_0`` of the RNN, whose
        singular values near 1 mean long memory, at the run's held-out sequences)
    out_dir : str
    figures : "auto", True or False
        ``"auto"`` draws the figures when matplotlib is installed and warns otherwise; ``True`` raises
        ImportError without it; ``False`` draws none.
    jacobian_examples : int >= 0
        Test examples for the Jacobian spectrum (the configuration's data set; for an RNN checkpoint the
        first of its 500 held-out sequences; 0 skips it).
    progress : bool
        A bar over the stages (loading, Jacobian, spectra, figures) on stderr when it is a terminal
        (``orthoref analyze``; ``--no-progress`` turns it off).

    Returns
    -------
    rows : list of dict, as :func:`layer_table`
    """
    who = "analyze_checkpoint"
    if not (isinstance(figures, (bool, np.bool_)) or isinstance(figures, str) and figures == "auto"):
        raise ValueError(f"{who}: figures must be 'auto', True or False, got {figures!r}")
    figures = figures if isinstance(figures, str) else bool(figures)
    jacobian_examples = check_int(who, "jacobian_examples", jacobian_examples, 0, 1 << 30)
    _check_path(who, "path", path)
    _check_path(who, "out_dir", out_dir)
    progress = check_bool(who, "progress", progress)
    from ._progress import Progress
    with Progress(3, "analyze", progress, unit="stage") as bar:
        return _analyze(who, path, out_dir, figures, jacobian_examples, bar)


def _analyze(who, path, out_dir, figures, jacobian_examples, bar):
    """:func:`analyze_checkpoint` after its checks, advancing ``bar`` after each stage."""
    config = None                                    # an RNN checkpoint has its own configuration
    bar.update(0, stage="Jacobian" if jacobian_examples else "loading")
    if _is_rnn_checkpoint(path):
        model, summary, jac, jac_label = _rnn_checkpoint_parts(path, jacobian_examples)
    else:
        model, config, meta = load_model(path)
        jac, jac_label = None, _MLP_JACOBIAN
        if jacobian_examples:
            from .train import load_data
            X_te = load_data(config)[2][:jacobian_examples]
            with using(config.backend):
                jac = to_numpy(jacobian_singular_values(model, asarray(X_te)))
        history = meta.get("history") or []
        acc = f", test accuracy {history[-1]['test_acc']:.4f}" if history else ""
        hidden = f" {','.join(map(str, config.hidden))}" if config.model == "mlp" else ""
        summary = f"{config.model}{hidden}, init {config.init}, {config.optimizer}, epoch {meta.get('epoch')}{acc}."
    bar.update(stage="weight spectra")
    rows = layer_table(model)
    operators = _conv_operator_norms(model, config, rows) if config is not None and config.model == "cnn" else []
    os.makedirs(out_dir, exist_ok=True)

    lines = [f"# Layer analysis of {path}", "", summary,
             "", "Weights seen as M = W.reshape(out, -1); ‖G−I‖_F/√k with G the smaller Gram matrix.", "",
             format_layer_table(rows), ""]
    if operators:
        lines += ["The convolution operators themselves (circular padding, at each layer's input size; "
                  "conv_singular_values) are not the filter matrices above: "
                  + "; ".join(f"{name} on {h}×{w} images: σ_max {op:.4g} (filter matrix {mat:.4g})"
                              for name, (h, w), op, mat in operators) + ".", ""]
    if jac is not None:
        q = np.quantile(jac, [0.0, 0.5, 1.0])
        lines += [(f"{jac_label[0]} at {jac.shape[0]} {jac_label[1]} ({jac.shape[1]} singular values "
                   f"each): mean {jac.mean():.4g}, std {jac.std():.4g}, min {q[0]:.4g}, median {q[1]:.4g}, "
                   f"max {q[2]:.4g} ({jac_label[2]})."), ""]
    atomic_write_text(os.path.join(out_dir, "layers.md"), "\n".join(lines))
    atomic_write_text(os.path.join(out_dir, "layers.json"), json.dumps(_json_safe(rows), indent=1) + "\n")
    bar.update(stage="figures")

    if figures is False:
        return rows
    try:
        from . import plots
        plots.require_matplotlib()
    except ImportError:
        if figures is True:
            raise
        warnings.warn(f"{who}: matplotlib is not installed, so no figures were drawn (pip install "
                      f"'orthoref[plot]')", stacklevel=2)
        return rows
    ws = weights(model)
    plots.plot_spectra({n: to_numpy(singular_values(w)) for n, w in ws},
                       os.path.join(out_dir, "spectra.png"))
    nonzero = {n: _nonzero_filters(w) for n, w in ws}
    plots.plot_filter_angles({n: to_numpy(filter_angles(M)) for n, M in nonzero.items() if M.shape[0]},
                             os.path.join(out_dir, "filter_angles.png"))
    if jac is not None:
        title = {"title": jac_label[3]} if jac_label[3] else {}
        plots.plot_jacobian_spectrum(jac, os.path.join(out_dir, "jacobian.png"), **title)
    bar.update()
    return rows
