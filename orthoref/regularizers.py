"""Orthogonality penalties: ``value, grad = PENALTY(W, ...)``.

Every function returns the penalty ``value`` as a **0-d array of the input's dtype** (``float(value)``
gives the Python number) and ``grad``, the exact gradient of ``value`` with respect to the first argument,
with its shape and dtype (float32 stays float32). Where a function is not differentiable (a max, an
absolute value, a repeated eigenvalue) the docstring says which subgradient comes back.

Conventions (the README's "Conventions" section, "Layouts and flattening"):

- A weight is seen as the matrix ``M = W.reshape(out, -1)`` (PyTorch layout: Linear ``(out, in)``, Conv2d
  ``(out, in, kh, kw)``; rows are the filters). ``gram="auto"`` uses the smaller Gram matrix,
  ``G = M Mᵀ`` when ``out <= in`` (rows) else ``G = Mᵀ M`` (cols); ``"rows"`` / ``"cols"`` force one.
- TensorFlow/Keras store kernels with the filters on the *last* axis (Dense ``(in, out)``, Conv2D
  ``(kh, kw, in, out)``) and flatten to ``W.reshape(-1, out)``: their matrix is our ``Mᵀ`` with the
  fan-in entries in ``(kh, kw, in)`` order instead of ``(in, kh, kw)``. Their ``WᵀW`` is our rows Gram;
  the permutation of the fan-in axis changes neither Frobenius norms, maxima, sums of absolute values nor
  spectra, so the penalties agree once the transpose is accounted for.
- geotorch (``geotorch.orthogonal``) treats the *last two* axes as the matrix: for a Linear weight that is
  ``M`` itself, for a Conv2d weight it is the ``out · in`` slices of shape ``(kh, kw)`` -- the per-slice
  penalty :func:`kernel_slice_orthogonality`, not a penalty on the filters.
- ``weight`` (λ, β) multiplies the value and the gradient; it must be finite and ``>= 0``.
- Bad input (1-D weight, a conv penalty given a 2-D weight, NaN/Inf, a dtype other than float32/float64 --
  float16, integers, bools, complex, object arrays, Python lists --, an unknown ``gram``, a negative weight,
  an iteration count outside ``[1, MAX_ITERATIONS]``) raises ``ValueError`` / ``TypeError`` naming the
  function, the argument, what was expected and what came.
- A value or gradient that overflows the dtype (``|W| ≈ 1e300``, or a float32 weight of ``3e16`` in
  :func:`soft_orthogonality`) raises :class:`orthoref._checks.NonFiniteError` (a ``ValueError``) naming the
  function and suggesting float64 or a rescaled weight; no penalty returns NaN or Inf. Read off the scalar
  value and one pass over the gradient. A LAPACK failure (``eigh`` not converging) is a ``ValueError``
  naming the function.

Each function is registered in :mod:`orthoref.oracle.registry` by :mod:`orthoref.oracle.samples.regularizers`
(finite differences in float64 and a PyTorch autograd twin).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .backend import host_rng
from .decorrelation import decov
from ._checks import (MAX_ITERATIONS, NonFiniteError, all_finite, check_array, check_bool, check_choice,
                      check_finite, check_float, check_int, check_real)
from .ops._window import pair
from .ops.conv import conv2d_backward, conv2d_forward
from .ortho._common import float_ldexp, pow2_rescale
from .ortho._linalg import GRAMS, gram_matrix, minus_identity, use_rows

__all__ = [
    "GRAMS", "soft_orthogonality", "double_soft_orthogonality", "mutual_coherence", "srip",
    "off_diagonal", "l1_orthogonality", "kernel_slice_orthogonality", "self_orthogonality",
    "conv_orthogonality", "spectral_penalty", "decov", "REGULARIZERS", "PENALTIES",
]


# ---------------------------------------------------------------------------------------------------------
# The shared validator and the overflow check (the power-of-two rescaling: ortho._common; the Gram matrix:
# ortho._linalg).

_NO_GRAM = object()


def _validate(who, W, name="W", ndim=None, min_ndim=2, gram=_NO_GRAM, scalars=(), positive=()):
    """Check the array argument, ``gram`` and the non-negative scalars; return the array module.

    ``ndim``: a tuple of allowed ranks (e.g. ``(4,)`` for a conv penalty); otherwise at least ``min_ndim``.
    ``scalars``: ``(name, value)`` pairs that must be finite and ``>= 0`` (``> 0`` for names in
    ``positive``).
    """
    xp = check_array(who, W, name, min_ndim=min_ndim, ndim=ndim, what="(a weight (out, in, ...))")
    if gram is not _NO_GRAM:
        check_choice(who, "gram", gram, GRAMS)
    for sname, value in scalars:
        check_real(who, sname, value, lo=0.0, lo_open=sname in positive)
    return xp


def _overflow(who, W, what, name="W"):
    """The ``NonFiniteError`` of a result that overflowed although ``W`` is finite."""
    dt = np.dtype(W.dtype)
    hint = f"use float64 or rescale {name}" if dt == np.float32 else f"rescale {name}"
    return NonFiniteError(f"{who}: {what} overflows {dt.name} (NaN or Inf) at this scale of {name} "
                          f"(max |{name}| = {float(abs(W).max()):.3g}); {hint}")


def _done(who, xp, value, grad, W, name="W"):
    """``(value as a 0-d array of W's dtype, grad reshaped like W)``, or ``NonFiniteError`` when the value
    or the gradient overflowed (the inputs were checked finite): the scalar costs nothing, the gradient one
    reduction."""
    a = float(abs(value))
    if not math.isfinite(a) or a > float(np.finfo(W.dtype).max):
        raise _overflow(who, W, "the penalty", name)
    if not all_finite(xp, grad):
        raise _overflow(who, W, "the gradient", name)
    return _value(xp, value, W.dtype), grad.reshape(W.shape)


def _quiet(fn):
    """Run a penalty with NumPy's overflow/invalid warnings off: every overflow is caught by
    :func:`_done` (or the Gram/iteration checks) and raised as ``NonFiniteError``, so the warning that
    would precede it is noise."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with np.errstate(over="ignore", invalid="ignore"):
            return fn(*args, **kwargs)
    return wrapper


def _eigh(who, xp, S, name):
    """``xp.linalg.eigh(S)``; a LAPACK failure becomes a ``ValueError`` naming ``who``."""
    try:
        return xp.linalg.eigh(S)
    except np.linalg.LinAlgError:
        raise ValueError(f"{who}: the eigendecomposition (LAPACK eigh) of the Gram matrix of {name} did not "
                         f"converge; {name} may be too badly scaled") from None


def _matrix(W):
    """``M = W.reshape(out, -1)`` (a view for contiguous ``W``)."""
    return W.reshape(W.shape[0], -1)


def _dot(xp, a, b):
    """``Σ a ⊙ b`` over all elements (``vdot`` without its conjugation, so the penalties stay analytic for
    the complex-step check; the same BLAS dot for real arrays)."""
    return xp.dot(a.ravel(), b.ravel())


def _pull_back(S, M, rows, scale):
    """``scale · S M`` (rows) or ``scale · M S`` (cols) for a symmetric ``S``: the gradient of a function of
    ``G`` whose gradient w.r.t. ``G`` is ``scale/2 · S`` (``∂/∂M f(M Mᵀ) = (Ḡ + Ḡᵀ) M``)."""
    g = S @ M if rows else M @ S
    g *= scale
    return g


def _value(xp, v, dtype):
    return xp.asarray(v, dtype=dtype)


# ---------------------------------------------------------------------------------------------------------
# Frobenius penalties.

@_quiet
def soft_orthogonality(W, weight=1.0, gram="auto"):
    """Soft orthogonality (SO) of Bansal, Chen & Wang 2018, "Can We Gain More from Orthogonality
    Regularizations in Training Deep CNNs?" (NeurIPS).

    .. math::  R(W) = \\lambda \\lVert G - I \\rVert_F^2, \\qquad
               \\frac{\\partial R}{\\partial M} = 4 \\lambda (G - I) M \\;\\; (G = M M^\\top), \\quad
               4 \\lambda M (G - I) \\;\\; (G = M^\\top M)

    with ``M = W.reshape(out, -1)``: one GEMM for ``G`` (``syrk`` on the CPU), one for the gradient.

    Parameters
    ----------
    W : (out, in, ...) float array
    weight : float >= 0
        λ.
    gram : {"auto", "rows", "cols"}
        ``"auto"``: the smaller Gram matrix (``M Mᵀ`` when ``out <= in``), as the VITA-Group code
        (``l2_reg_ortho``) and the OCNN code's ``orth_dist``.

    Returns
    -------
    value : 0-d array, dtype of ``W``
    grad : array like ``W``

    Notes
    -----
    The two Gram matrices differ by ``|out - in|`` zero eigenvalues, so
    ``‖MMᵀ - I‖² = ‖MᵀM - I‖² + (out - in)``: "rows" and "cols" give the same gradient and values that
    differ by the constant ``λ (out - in)``. TensorFlow code (filters on the last axis) writes ``WᵀW`` for
    our rows Gram; see the module docstring.
    """
    who = "soft_orthogonality"
    xp = _validate(who, W, gram=gram, scalars=(("weight", weight),))
    M = _matrix(W)
    rows = use_rows(M, gram)
    N = minus_identity(gram_matrix(M, rows))
    value = weight * _dot(xp, N, N)
    grad = _pull_back(N, M, rows, 4.0 * weight)
    return _done(who, xp, value, grad, W)


@_quiet
def double_soft_orthogonality(W, weight=1.0):
    """Double soft orthogonality (DSO) of Bansal et al. 2018: both Gram matrices.

    .. math::  R(W) = \\lambda \\left( \\lVert M^\\top M - I \\rVert_F^2
               + \\lVert M M^\\top - I \\rVert_F^2 \\right)

    Computed from the smaller Gram matrix ``G`` (``k = min(out, in)``, ``K = max(out, in)``): the larger
    one has the same non-zero eigenvalues plus ``K - k`` zeros, so

    .. math::  R = \\lambda \\left( 2 \\lVert G - I_k \\rVert_F^2 + K - k \\right), \\qquad
               \\frac{\\partial R}{\\partial M} = 8 \\lambda (G - I) M \\;\\text{ or }\\;
               8 \\lambda M (G - I),

    i.e. DSO is exactly twice :func:`soft_orthogonality` plus the constant ``λ |out - in|``; it costs one
    small Gram matrix, not both.

    Parameters
    ----------
    W : (out, in, ...) float array
    weight : float >= 0

    Returns
    -------
    value : 0-d array, dtype of ``W``
    grad : array like ``W``
    """
    who = "double_soft_orthogonality"
    xp = _validate(who, W, scalars=(("weight", weight),))
    M = _matrix(W)
    rows = use_rows(M, "auto")
    N = minus_identity(gram_matrix(M, rows))
    value = weight * (2 * _dot(xp, N, N) + abs(M.shape[0] - M.shape[1]))
    grad = _pull_back(N, M, rows, 8.0 * weight)
    return _done(who, xp, value, grad, W)


@_quiet
def off_diagonal(W, weight=1.0):
    """The off-diagonal orthogonal regularization of BigGAN (Brock, Donahue & Simonyan 2019, "Large Scale
    GAN Training for High Fidelity Natural Image Synthesis").

    .. math::  R(W) = \\lambda \\lVert (M M^\\top) \\odot (\\mathbf 1 - I) \\rVert_F^2, \\qquad
               \\frac{\\partial R}{\\partial M} = 4 \\lambda \\,\\big((M M^\\top) \\odot (\\mathbf 1 - I)\\big) M

    Always the rows Gram (filters against filters; the norms of the filters are left free).

    Parameters
    ----------
    W : (out, in, ...) float array
    weight : float >= 0

    Returns
    -------
    value : 0-d array, dtype of ``W``
    grad : array like ``W``

    Notes
    -----
    BigGAN's ``utils.ortho`` never forms the penalty: it adds ``strength · 2 ((MMᵀ) ⊙ (1 - I)) M`` to
    ``param.grad`` directly -- **half** the exact gradient returned here, i.e. the gradient of
    ``(λ/2) ‖(MMᵀ) ⊙ (1 - I)‖²``. To reproduce BigGAN's update pass ``weight = strength / 2``; nothing is
    rescaled silently.
    """
    who = "off_diagonal"
    xp = _validate(who, W, scalars=(("weight", weight),))
    M = _matrix(W)
    O = gram_matrix(M, True)
    d = xp.arange(O.shape[0])
    O[d, d] = 0
    value = weight * _dot(xp, O, O)
    grad = _pull_back(O, M, True, 4.0 * weight)
    return _done(who, xp, value, grad, W)


@_quiet
def kernel_slice_orthogonality(W, weight=1e-4):
    """Row-orthogonality of every 2-D kernel slice of a conv weight.

    .. math::  R(W) = \\beta \\sum_{n, c} \\lVert (S S^\\top) \\odot (\\mathbf 1 - I_H) \\rVert_F^2,
               \\quad S = W[n, c] \\in \\mathbb R^{H \\times K}, \\qquad
               \\frac{\\partial R}{\\partial S} = 4 \\beta \\big((S S^\\top) \\odot (\\mathbf 1 - I_H)\\big) S

    The penalty of the seed article on conv kernels: each ``(H, K)`` slice (a kernel's rows) is pushed
    towards mutually orthogonal rows; the norms of the rows stay free. It is what a geotorch-style "last
    two axes" view of a conv weight penalises (see the module docstring), not an orthogonality of the
    filters. The article's code builds the ``1 - I`` mask with ``torch.eye`` on the CPU while ``W`` lives
    on the GPU (a device mismatch that fails, or forces a copy, at every step); here the mask is an
    in-place zeroing of the diagonal on ``W``'s own device.

    Parameters
    ----------
    W : (N, C, H, K) float array
        A conv weight; a 2-D (or other non-4-D) weight raises ``ValueError``.
    weight : float >= 0
        β (the article's default 1e-4).

    Returns
    -------
    value : 0-d array, dtype of ``W``
    grad : (N, C, H, K) array
    """
    who = "kernel_slice_orthogonality"
    xp = _validate(who, W, ndim=(4,), scalars=(("weight", weight),))
    O = W @ W.swapaxes(-1, -2)                                      # (N, C, H, H)
    H = W.shape[2]
    O[..., xp.arange(H), xp.arange(H)] = 0
    value = weight * _dot(xp, O, O)
    grad = O @ W
    grad *= 4.0 * weight
    return _done(who, xp, value, grad, W)


# ---------------------------------------------------------------------------------------------------------
# Entry-wise penalties (max, L1).

@_quiet
def mutual_coherence(W, weight=1.0, gram="auto"):
    """Mutual coherence (MC) of Bansal et al. 2018: the largest entry of ``|G - I|``.

    .. math::  R(W) = \\lambda \\max_{i, j} |(G - I)_{ij}|

    Subgradient: with ``(i, j)`` the **first** arg-max in row-major order of the upper triangle
    (diagonal included) and ``s = sign((G - I)_{ij})``, the gradient of ``λ s G_{ij}``:
    ``λ s (e_i m_jᵀ + e_j m_iᵀ)`` for the rows Gram (``m_i`` the rows of ``M``; ``2 λ s e_i m_iᵀ`` on the
    diagonal) -- the symmetric entries ``(i, j)`` and ``(j, i)`` are the same function of ``M``, so both
    are covered; the cols Gram is the same with columns. Where the arg-max is not unique the penalty is
    not differentiable and this is one element of the subdifferential (PyTorch's ``max`` spreads the
    gradient evenly over ties instead, which agrees for a symmetric pair and differs for distinct ties).

    Parameters
    ----------
    W : (out, in, ...) float array
    weight : float >= 0
    gram : {"auto", "rows", "cols"}
        The VITA-Group code (``torch.norm(w wᵀ - I, p=inf)``) always uses the rows Gram.

    Returns
    -------
    value : 0-d array, dtype of ``W``
    grad : array like ``W``
    """
    who = "mutual_coherence"
    xp = _validate(who, W, gram=gram, scalars=(("weight", weight),))
    M = _matrix(W)
    rows = use_rows(M, gram)
    N = minus_identity(gram_matrix(M, rows))
    k = N.shape[0]
    i, j = divmod(int(xp.argmax(xp.triu(xp.abs(N)))), k)
    nij = N[i, j]
    s = weight * float(xp.sign(nij))
    grad = xp.zeros_like(M)
    if rows:
        grad[i] += s * M[j]
        grad[j] += s * M[i]
    else:
        grad[:, i] += s * M[:, j]
        grad[:, j] += s * M[:, i]
    return _done(who, xp, weight * xp.abs(nij), grad, W)


@_quiet
def l1_orthogonality(W, weight=1.0, gram="auto"):
    """Entry-wise L1 orthogonality penalty (Brock, Lim, Ritchie & Weston 2017, "Neural Photo Editing with
    Introspective Adversarial Networks", their orthogonal regularization).

    .. math::  R(W) = \\lambda \\sum_{i, j} |(G - I)_{ij}|, \\qquad
               \\frac{\\partial R}{\\partial M} = 2 \\lambda \\operatorname{sign}(G - I) M \\;\\text{ (rows) or }\\;
               2 \\lambda M \\operatorname{sign}(G - I) \\;\\text{ (cols)}

    Subgradient: ``sign(0) = 0`` (NumPy's and PyTorch's ``sign``), the minimum-norm choice at a kink.

    Parameters
    ----------
    W : (out, in, ...) float array
    weight : float >= 0
    gram : {"auto", "rows", "cols"}
        Brock et al. write ``W Wᵀ`` over the filters (the rows Gram); ``"auto"`` picks the smaller one.

    Returns
    -------
    value : 0-d array, dtype of ``W``
    grad : array like ``W``
    """
    who = "l1_orthogonality"
    xp = _validate(who, W, gram=gram, scalars=(("weight", weight),))
    M = _matrix(W)
    rows = use_rows(M, gram)
    N = minus_identity(gram_matrix(M, rows))
    value = weight * xp.abs(N).sum()
    S = xp.sign(N, out=N)
    grad = _pull_back(S, M, rows, 2.0 * weight)
    return _done(who, xp, value, grad, W)


# ---------------------------------------------------------------------------------------------------------
# Spectral penalties.

def _v0_vector(xp, v0, k, dtype, rng, who):
    """The start vector of the power iteration, as a ``(k,)`` array of ``dtype`` on ``xp``.

    ``None``: ``U[0, 1)^k`` drawn from ``rng`` on the host. Otherwise a float32/float64 array of shape
    ``(k,)`` or ``(k, 1)``, finite and not zero (``TypeError`` / ``ValueError``). The iteration is
    invariant to the scale of ``v0`` (``v_1 = N v_0 / ‖N v_0‖``), so a ``v0`` far from 1 in magnitude is
    first multiplied by an exact power of two (bit-identical results, no underflow in the cast to float32).
    """
    if v0 is None:
        return xp.asarray(host_rng(rng, who=who).uniform(0.0, 1.0, size=k), dtype=dtype)
    check_float(who, "v0", v0)
    if tuple(v0.shape) not in ((k,), (k, 1)):
        raise ValueError(f"{who}: v0 must be a real array of shape ({k},) or ({k}, 1) (the size of the Gram "
                         f"matrix), got shape {tuple(v0.shape)} and dtype {v0.dtype}")
    v = np.asarray(v0.get() if hasattr(v0, "get") else v0).reshape(k)
    check_finite(who, "v0", v, np)
    if not np.any(v):
        raise ValueError(f"{who}: v0 must not be the zero vector (the power iteration from 0 gives 0 for every "
                         f"W), got {k} zeros")
    v, _ = pow2_rescale(np, v, -60, 60)
    return xp.asarray(v, dtype=dtype)


def _srip_power(xp, W, M, rows, n_iter, v0, weight):
    """Unrolled power iteration and its exact reverse pass (matrix-vector products with ``N = G - I``
    through ``M``, never forming ``G``)."""
    def nmul(u):
        return (M @ (M.T @ u) if rows else M.T @ (M @ u)) - u

    us, rs = [v0], []
    for _ in range(n_iter):
        w = nmul(us[-1])
        r = xp.sqrt(_dot(xp, w, w))
        if bool(r == 0):                            # N v = 0: σ̂ = 0 (VITA's code gives 0/0 = NaN)
            return _value(xp, 0.0, W.dtype), xp.zeros_like(W)
        if not all_finite(xp, r):                   # ‖N v‖² overflowed: v / r would be 0, not a unit vector
            raise _overflow("srip", W, "the power iteration ‖N v‖")
        rs.append(r)
        us.append(w / r)
    z = nmul(us[-1])
    value = weight * _dot(xp, z, z)
    # Reverse pass: N̄ = Σ a bᵀ (outer products); ū_t = N w̄ (N symmetric).
    zbar = (2.0 * weight) * z
    A, B = [zbar], [us[-1]]
    ubar = nmul(zbar)
    for t in range(n_iter, 0, -1):
        u, r = us[t], rs[t - 1]
        wbar = (ubar - u * _dot(xp, u, ubar)) / r
        A.append(wbar)
        B.append(us[t - 1])
        if t > 1:
            ubar = nmul(wbar)
    A, B = xp.stack(A, axis=1), xp.stack(B, axis=1)            # (k, n_iter + 1)
    if rows:                                                     # M̄ = (N̄ + N̄ᵀ) M
        grad = A @ (B.T @ M) + B @ (A.T @ M)
    else:                                                        # M̄ = M (N̄ + N̄ᵀ)
        grad = (M @ A) @ B.T + (M @ B) @ A.T
    return _done("srip", xp, value, grad.astype(W.dtype, copy=False), W)


def _gram_checked(who, xp, M, rows, W):
    """The Gram matrix, or ``NonFiniteError`` when it overflowed (its largest entries are on the diagonal,
    ``|G_ij| <= sqrt(G_ii G_jj)``, so reading the diagonal is enough)."""
    G = gram_matrix(M, rows)
    if not all_finite(xp, xp.diagonal(G)):
        raise _overflow(who, W, "the Gram matrix")
    return G


def _well_scaled(xp, G):
    """The Gram matrix ``G`` neither overflowed nor lies in the range where its entries lose precision
    (its largest entries are on the diagonal: ``|G_ij| <= sqrt(G_ii G_jj)``). A zero ``G`` does not count:
    it may have underflowed from a non-zero ``M``."""
    if G.dtype.kind == "c":
        return True
    fi = np.finfo(G.dtype)
    d = float(xp.diagonal(G).max())
    return float(fi.tiny) * 2.0 ** 60 <= d <= float(fi.max) * 2.0 ** -20


def _eig_ends(xp, S, both, who="", name="W"):
    """Eigenpairs ``(w, V)`` of the symmetric ``S`` at the top end (and the bottom end when ``both``),
    ascending, from the array module's own ``eigh``.

    On the CPU this is NumPy's LAPACK, deliberately not ``scipy.linalg.eigh(subset_by_index=...)``: SciPy
    bundles a second OpenBLAS whose spinning worker threads then fight NumPy's over 2 cores, which made the
    next Gram GEMM 200x slower (10 ms instead of 0.05 ms for a 512x64 float32 ``MᵀM``) inside a train step.
    """
    k = S.shape[0]
    w, V = _eigh(who, xp, S, name)
    idx = [0, k - 1] if both and k > 1 else [k - 1]
    return w[idx], V[:, idx]


def _srip_exact(xp, W, M, rows, weight):
    N = minus_identity(_gram_checked("srip", xp, M, rows, W))
    evals, evecs = _eig_ends(xp, N, both=True, who="srip")
    idx = 0 if float(abs(evals[0])) > float(abs(evals[-1])) else -1
    lam, u = evals[idx], evecs[:, idx]
    value = weight * lam * lam
    c = 4.0 * weight * lam                                       # M̄ = 2 N̄ M, N̄ = 2 λ_i u uᵀ
    grad = xp.outer(u, u @ M) if rows else xp.outer(M @ u, u)
    grad *= c
    return _done("srip", xp, value, grad, W)


@_quiet
def srip(W, weight=1.0, n_iter=1, rng=None, v0=None, method="power", gram="auto"):
    """Spectral restricted isometry property regularizer (SRIP) of Bansal et al. 2018.

    .. math::  R(W) = \\lambda\\, \\hat\\sigma^2, \\qquad \\hat\\sigma \\approx \\sigma_{\\max}(N),
               \\quad N = G - I

    ``method="power"`` is the VITA-Group PyTorch code (github.com/VITA-Group/Orthogonality-in-CNNs,
    ``l2_reg_ortho`` of ``Wide-Resnet/train_n.py``): the smaller Gram matrix of ``W.view(rows, -1)``
    (``WᵀW`` when ``rows > cols``, else ``WWᵀ`` -- our ``gram="auto"``), ``b_k = torch.rand(k, 1)``, then

    .. math::  v_0 = b_k, \\quad v_t = \\frac{N v_{t-1}}{\\lVert N v_{t-1} \\rVert} \\; (t = 1..T),
               \\quad \\hat\\sigma = \\lVert N v_T \\rVert, \\quad R = \\lambda \\hat\\sigma^2

    with ``T = n_iter`` (their code: ``T = 1``; the penalty is the *squared* norm ``‖v3‖²``). The
    gradient is the exact gradient of this unrolled computation, flowing through every occurrence of
    ``W`` including the normalisations, as autograd computes it for their code (``v0`` is a constant). It is
    not the gradient of ``σ_max²``: for small ``T`` the two differ. The products with ``N`` are taken as
    ``M (Mᵀ v) - v``, so ``G`` is never formed (O(T · out · in) work, not O(k² · n)).

    ``method="exact"``: ``σ = max |eig(N)|`` from ``eigh`` (``N`` is symmetric, so its spectral norm is its
    largest eigenvalue in absolute value), and with ``u`` the unit eigenvector of that eigenvalue ``μ``
    (``|μ| = σ``): ``∂R/∂N = 2 λ μ u uᵀ`` (note the sign of ``μ``: ``2 λ σ u uᵀ`` when ``μ > 0``, its
    negative when the largest-magnitude eigenvalue is negative), pulled back through ``G``:
    ``∂R/∂M = 4 λ μ u (uᵀ M)`` (rows) or ``4 λ μ (M u) uᵀ`` (cols). At a repeated top eigenvalue (or
    ``|μ_min| = |μ_max|``) ``σ`` is not differentiable: ``u`` is whichever eigenvector LAPACK returns
    (ties between ``|μ_min|`` and ``|μ_max|`` go to ``μ_max``), one subgradient, not continuous in ``W``.
    ``n_iter``, ``rng`` and ``v0`` are not used by ``"exact"`` (a ``v0`` given is still checked).

    Other public code: the Keras version of the same repository (``ResNet/resnet_cifar_new.py``) flattens
    ``(kh, kw, in, out)`` to ``(kh·kw·in, out)``, uses ``WᵀW`` (always the out x out Gram), returns the
    *unsquared* ``σ̂`` and adds ``w_rate · ‖W‖_F``. The repository's other PyTorch scripts (``SVHN/train.py``,
    and most copies of ``l2_reg_ortho`` in the wild) always use ``WᵀW`` of ``W.view(-1, cols)`` (our
    ``gram="cols"``, the larger Gram for a wide conv weight) and a spectral-norm style iteration
    ``u ~ N(0, 1)``, ``v = norm(Nᵀu)``, ``u = norm(N v)``, ``σ = uᵀ N v`` (squared); that is a different
    function of ``W`` (same limit ``σ_max²``) and is not reproduced here.

    Parameters
    ----------
    W : (out, in, ...) float array
    weight : float >= 0
    n_iter : int in [1, MAX_ITERATIONS]
        Number of normalised products ``v ← N v / ‖N v‖`` before the final ``‖N v‖`` (checked for both
        methods).
    rng : None, non-negative int or numpy.random.Generator
        Draws ``v0 ~ U[0, 1)^k`` on the host when ``v0`` is not given (checked even when unused).
    v0 : (k,) or (k, 1) float32/float64 array, optional
        Start vector (``k`` the size of the Gram matrix); same ``v0`` → same value as the PyTorch code.
        Finite and not zero (``ValueError``: from ``v0 = 0`` the iteration gives 0 for every ``W``); a
        list or an integer array is a ``TypeError``. Only its direction matters.
    method : {"power", "exact"}
    gram : {"auto", "rows", "cols"}

    Returns
    -------
    value : 0-d array, dtype of ``W``
    grad : array like ``W``

    Raises
    ------
    TypeError, ValueError
        Bad arguments (see the module docstring), a zero or non-finite ``v0``.
    NonFiniteError
        The Gram matrix, ``‖N v‖``, the value or the gradient overflows (``|W| ≈ 1e300``).

    Notes
    -----
    Where ``N v_{t}`` vanishes for a non-zero ``v0`` (``G = I`` exactly, or ``v0`` in the null space of
    ``N``) the VITA code divides 0 by 0 and returns NaN; here the value and the gradient are 0.
    """
    who = "srip"
    xp = _validate(who, W, gram=gram, scalars=(("weight", weight),))
    check_choice(who, "method", method, ("power", "exact"))
    n_iter = check_int(who, "n_iter", n_iter, 1, MAX_ITERATIONS)
    M = _matrix(W)
    rows = use_rows(M, gram)
    k = M.shape[0] if rows else M.shape[1]
    if rng is not None and (v0 is not None or method == "exact"):
        host_rng(rng, who=who)                  # unused here, but checked: a bad rng is a bug at the call site
    if method == "exact":
        if v0 is not None:                      # unused, but checked: a bad v0 is a bug at the call site
            _v0_vector(xp, v0, k, W.dtype, rng, who)
        return _srip_exact(xp, W, M, rows, weight)
    v = _v0_vector(xp, v0, k, W.dtype, rng, who)
    return _srip_power(xp, W, M, rows, n_iter, v, weight)


@_quiet
def spectral_penalty(W, weight=1.0):
    """Spectral norm regularization (Yoshida & Miyato 2017, "Spectral Norm Regularization for Improving
    the Generalizability of Deep Learning").

    .. math::  R(W) = \\frac{\\lambda}{2} \\sigma_{\\max}(M)^2, \\qquad
               \\frac{\\partial R}{\\partial M} = \\lambda \\sigma\\, u v^\\top = \\lambda\\, u u^\\top M

    ``σ² `` and ``u`` (or ``v``) are the top eigenpair of the smaller Gram matrix (``eigh``), so no SVD of
    ``M`` is needed; ``σ u vᵀ = u uᵀ M = M v vᵀ``. The paper estimates ``u, v`` with one power iteration
    per step (carried over between steps) and treats them as constants; this is the exact value and
    gradient. At a repeated top singular value the gradient is one subgradient (the eigenvector LAPACK
    returns).

    Parameters
    ----------
    W : (out, in, ...) float array
    weight : float >= 0

    Returns
    -------
    value : 0-d array, dtype of ``W``
    grad : array like ``W``

    The penalty is homogeneous (``σ_max(cW)² = c² σ_max(W)²``, ``u`` independent of ``c``): a weight whose
    Gram matrix would overflow or underflow is rescaled by an exact power of two first, so the gradient is
    right at any scale and the value whenever it is representable (``NonFiniteError`` otherwise).
    """
    who = "spectral_penalty"
    xp = _validate(who, W, scalars=(("weight", weight),))
    M = _matrix(W)
    rows = use_rows(M, "auto")
    G, e = gram_matrix(M, rows), 0
    if not _well_scaled(xp, G):                     # σ_max scales with M, u does not: rescale M exactly
        Ms, e = pow2_rescale(xp, M, 0, 0)
        G = gram_matrix(Ms, rows)
    evals, evecs = _eig_ends(xp, G, both=False, who=who)
    s2, u = evals[-1], evecs[:, -1]
    grad = xp.outer(u, u @ M) if rows else xp.outer(M @ u, u)
    grad *= weight
    return _done(who, xp, 0.5 * weight * float_ldexp(max(float(s2), 0.0), 2 * e), grad, W)


# ---------------------------------------------------------------------------------------------------------
# Penalties on activations and on convolutions.

@_quiet
def self_orthogonality(Y, lam1=100.0, lam2=1.0, gamma=10.0, eps=1e-8):
    """The Self-Orthogonality Module (SOM) of Zhang, Ma, Wu & Wang 2020, "Self-Orthogonality Module: A
    Network Architecture Plug-in for Learning Orthogonal Filters" (WACV).

    A penalty on a layer's *output* ``Y = X W`` that, through the LSH angle estimate
    ``P[sign(xᵀw_i) ≠ sign(xᵀw_j)] = θ_ij / π``, pushes the mean and the variance of the filter angles
    towards 90° and 0; ``sign`` is relaxed to ``tanh(γ ·)``:

    .. math::  Z = \\tanh(\\gamma Y), \\quad \\hat Z_{:j} = \\frac{Z_{:j}}{\\sqrt{\\lVert Z_{:j}
               \\rVert_2^2 + \\varepsilon}}, \\quad \\Theta = \\hat Z^\\top \\hat Z, \\qquad
               R = \\lambda_1 \\Big(\\sum_{i \\ne j} \\Theta_{ij}\\Big)^2
               + \\lambda_2 \\sum_{i \\ne j} \\Theta_{ij}^2

    (sums over ordered pairs, so each unordered pair counts twice). Normalisation: each column (unit) of
    ``Z`` is scaled to unit L2 norm over the batch, **not centred** (``Θ`` is then the cosine of the
    sign-pattern vectors, the LSH estimate of ``cos θ_ij``; centring would turn it into a correlation
    and is not in the paper's formulation). ``ε`` sits inside the square root, so a dead unit (a zero
    column) gives ``Ẑ_{:j} = 0``, a finite value and a finite gradient (of size up to ``γ/√ε`` times the
    cotangent) instead of 0/0; for live units the relative change is ``ε / ‖Z_{:j}‖²``.

    Gradient: ``Θ̄ = 2 λ_1 S (\\mathbf 1\\mathbf 1^\\top - I) + 2 λ_2 Θ ⊙ (\\mathbf 1 - I)`` with
    ``S = Σ_{i≠j} Θ_ij``; ``Ẑ̄ = 2 Ẑ Θ̄``; ``Z̄_{:j} = (Ẑ̄_{:j} - Ẑ_{:j} (Ẑ_{:j}ᵀ Ẑ̄_{:j})) / n_j``;
    ``Ȳ = γ (1 - Z²) ⊙ Z̄``.

    Parameters
    ----------
    Y : (b, k) or (b, k, h, w) float array
        The layer output; for a conv output every spatial position is a sample, i.e. ``Y`` is read as
        ``(b·h·w, k)`` (the ``k`` channels are the units).
    lam1, lam2 : float >= 0
        Weights of the squared mean term and of the second-moment term (paper defaults 100 and 1).
    gamma : float > 0
        Slope of the ``tanh`` relaxation of ``sign``.
    eps : float > 0
        Added to the squared column norms.

    Returns
    -------
    value : 0-d array, dtype of ``Y``
    grad : array like ``Y``
        The gradient w.r.t. ``Y``; chain it into the layer's backward pass (``dW = Xᵀ Ȳ`` for a Linear).
    """
    who = "self_orthogonality"
    xp = _validate(who, Y, name="Y", ndim=(2, 4),
                   scalars=(("lam1", lam1), ("lam2", lam2), ("gamma", gamma), ("eps", eps)),
                   positive=("gamma", "eps"))
    k = Y.shape[1]
    Y2 = Y if Y.ndim == 2 else Y.transpose(0, 2, 3, 1).reshape(-1, k)
    Z = xp.tanh(gamma * Y2)                         # γ Y = ±inf is fine (tanh(±inf) = ±1; @_quiet)
    n = xp.sqrt((Z * Z).sum(axis=0) + eps)                         # (k,)
    Zh = Z / n
    T = Zh.T @ Zh
    diag = xp.diagonal(T)
    S = T.sum() - diag.sum()
    Q = _dot(xp, T, T) - _dot(xp, diag, diag)
    value = lam1 * S * S + lam2 * Q
    # Θ̄ (symmetric), then Ẑ̄ = 2 Ẑ Θ̄ with Ẑ(11ᵀ - I) = (Ẑ1)1ᵀ - Ẑ.
    Toff = T.copy()
    Toff[xp.arange(k), xp.arange(k)] = 0
    Zbar = Zh @ Toff
    Zbar *= 4.0 * lam2
    Zbar += (4.0 * lam1 * S) * (Zh.sum(axis=1, keepdims=True) - Zh)
    Zbar -= Zh * (Zh * Zbar).sum(axis=0)
    Zbar /= n
    Zbar *= gamma * (1.0 - Z * Z)
    if Y.ndim == 4:
        b, _, h, w = Y.shape
        Zbar = xp.ascontiguousarray(Zbar.reshape(b, h, w, k).transpose(0, 3, 1, 2))
    return _done(who, xp, value, Zbar.astype(Y.dtype, copy=False), Y, name="Y")


@_quiet
def conv_orthogonality(K, weight=1.0, stride=1, padding=None, squared=True):
    """Orthogonal convolution penalty of OCNN (Wang, Chen, Chakraborty & Yu 2020, "Orthogonal
    Convolutional Neural Networks", CVPR).

    The convolution ``y = K * x`` is orthogonal (rows of its doubly block-Toeplitz matrix orthonormal)
    when ``K`` convolved with itself is a centred identity:

    .. math::  R(K) = \\lambda \\lVert \\operatorname{conv2d}(K, K; s, P) - T \\rVert_F^2, \\qquad
               T[a, b, i, j] = \\delta_{ab}\\, [i = \\lfloor h'/2 \\rfloor,\\, j = \\lfloor w'/2 \\rfloor]

    where ``conv2d(K, K)`` reads ``K`` (out, in, kh, kw) both as a batch of ``out`` images with ``in``
    channels and as the filter bank, giving ``(out, out, h', w')``: entry ``[a, b, i, j]`` is the inner
    product of filters ``a`` and ``b`` at the relative shift ``(i s - P, j s - P)``. The paper's padding
    ``P = ⌊(k - 1)/s⌋ s`` (the default, per axis) covers every overlapping shift that is a multiple of
    the stride and puts the zero shift exactly at the centre ``(h' // 2, w' // 2)``.

    Gradient: with ``Ȳ = 2 λ (Y - T)`` (or ``λ (Y - T) / ‖Y - T‖`` when not squared), ``K`` appears twice,
    so ``∂R/∂K = x̄ + w̄`` from :func:`orthoref.ops.conv2d_backward` (input and weight gradients).

    The public code (``deconv_orth_dist(kernel, stride=2, padding=1)`` in
    samaonline/Orthogonal-Convolutional-Neural-Networks, ``imagenet/utils.py``) returns the unsquared
    ``torch.norm(output - target)`` with ``padding=1`` and the identity at ``⌊w'/2⌋`` of the last axis:
    ``padding=1, squared=False`` reproduces it. For a 3x3 kernel at stride 2 that grid's centre sits at
    shift +1, not 0 (the zero shift is not on it), unlike the paper's padding.

    Parameters
    ----------
    K : (out, in, kh, kw) float array
        A conv weight; a 2-D weight raises ``ValueError`` (use :func:`soft_orthogonality`).
    weight : float >= 0
    stride : int or (int, int)
        Each in ``[1, 65536]``.
    padding : None, int or (int, int)
        None: ``⌊(k - 1)/s⌋ s`` per axis. Each at most ``k - 1 + s`` (a larger padding only adds shifts
        at which the kernels do not overlap, while the padded copy grows without bound).
    squared : bool
        False: the norm ``λ ‖Y - T‖`` (the public code); its gradient at ``Y = T`` is taken as 0.

    Returns
    -------
    value : 0-d array, dtype of ``K``
    grad : (out, in, kh, kw) array
    """
    who = "conv_orthogonality"
    xp = _validate(who, K, name="K", ndim=(4,), scalars=(("weight", weight),))
    s = pair(stride, "stride", who, 1)
    if any(si > 65536 for si in s):
        raise ValueError(f"{who}: stride must be <= 65536, got {stride!r}")
    if padding is None:
        p = tuple(((k - 1) // si) * si for k, si in zip(K.shape[2:], s))
    else:
        p = pair(padding, "padding", who, 0)
        if any(pi > k - 1 + si for pi, k, si in zip(p, K.shape[2:], s)):
            raise ValueError(f"{who}: padding must be at most kernel size - 1 + stride = "
                             f"{tuple(k - 1 + si for k, si in zip(K.shape[2:], s))} per axis, got {padding!r}")
    squared = check_bool(who, "squared", squared)
    try:
        Y, cache = conv2d_forward(K, K, None, stride=s, padding=p)
    except NonFiniteError:                  # K was checked finite: conv2d(K, K) overflowed
        raise _overflow(who, K, "conv2d(K, K)", name="K") from None
    D = Y                                   # (out, out, h', w'): a fresh buffer the backward does not need
    O, h, w = D.shape[0], D.shape[2], D.shape[3]
    ar = xp.arange(O)
    D[ar, ar, h // 2, w // 2] -= 1
    sq = _dot(xp, D, D)
    if squared:
        value = weight * sq
        D *= 2.0 * weight
    else:
        nrm = xp.sqrt(sq)
        value = weight * nrm
        D *= (weight / nrm) if bool(nrm != 0) else 0.0
    try:
        dx, dw, _ = conv2d_backward(D, cache)
    except NonFiniteError:                  # D and K are finite: the gradient overflowed
        raise _overflow(who, K, "the gradient", name="K") from None
    dw += dx                                # K is both the input and the filter bank
    return _done(who, xp, value, dw, K, name="K")


#: The penalties, one row each: name -> (function, ``--reg`` short name of ``orthoref train``, target).
#: Target "weights": every Linear/Conv weight; "conv": 4-D (convolution) weights only; "outputs": the
#: outputs of the Linear/Conv layers (an output hook). The one source of these names: ``REGULARIZERS``,
#: ``orthoref.train.REGULARIZERS``, the CLI's ``--reg`` help and the asv suite are derived from it.
PENALTIES = {
    "soft_orthogonality": (soft_orthogonality, "so", "weights"),
    "double_soft_orthogonality": (double_soft_orthogonality, "dso", "weights"),
    "mutual_coherence": (mutual_coherence, "mc", "weights"),
    "srip": (srip, "srip", "weights"),
    "off_diagonal": (off_diagonal, "biggan", "weights"),
    "l1_orthogonality": (l1_orthogonality, "l1", "weights"),
    "kernel_slice_orthogonality": (kernel_slice_orthogonality, "kernel_slice", "conv"),
    "self_orthogonality": (self_orthogonality, "som", "outputs"),
    "conv_orthogonality": (conv_orthogonality, "ocnn", "conv"),
    "spectral_penalty": (spectral_penalty, "spectral", "weights"),
    "decov": (decov, "decov", "outputs"),
}

REGULARIZERS = {name: fn for name, (fn, _, _) in PENALTIES.items()}
"""Name → function (the names of the registry entries; ``srip`` covers "srip" and "srip_exact")."""
