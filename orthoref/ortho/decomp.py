"""Orthogonalization by decomposition: Gram–Schmidt, QR, polar and Householder products, each with its
exact backward pass ``NAME_vjp``.

Every map ``Q = f(A, **kw)`` has ``NAME_vjp(A, grad_out, **kw)`` returning ``∂⟨grad_out, f(A)⟩/∂A`` (same
shape and dtype as ``A``; float32 stays float32). Inputs may be batched, ``(..., n, k)``: the last two axes
are the matrix.

Conventions
-----------
- **Columns** are orthonormalized. A tall matrix (``n >= k``) gives ``Q`` with ``QᵀQ = I_k``.
- **Wide inputs** (``n < k``): :func:`qr_orthogonalize` and :func:`polar` work by transposition,
  ``f(A) = f(Aᵀ)ᵀ``, so the rows come out orthonormal (``QQᵀ = I_n``); for :func:`polar` this *is* the
  polar factor ``UVᵀ`` of the wide matrix. :func:`gram_schmidt` raises ``ValueError`` on wide input (the
  algorithms orthonormalize the columns of a tall matrix; transpose yourself if rows are meant).
- **Sign convention of QR**: ``R`` has a non-negative diagonal (multiply the columns of ``Q`` by
  ``sign(diag R)``, with ``sign(0) = +1``). This is the Haar-consistent choice and the unique QR of a
  full-rank matrix, hence the one Gram–Schmidt computes; ``gram_schmidt(A) == qr_orthogonalize(A)`` up to
  rounding for every method.
- **Rank deficiency**: Gram–Schmidt raises ``ValueError`` naming the column ``j`` whose remaining norm is
  ``<= n·eps·‖a_j‖``; :func:`qr_orthogonalize_vjp` raises naming the column whose ``|R_jj| <=
  n·eps·max|R_ii|`` (the forward pass of Householder QR stays orthonormal and does not raise);
  :func:`polar` and :func:`polar_vjp` raise when ``σ_min <= max(n, k)·eps·σ_max`` (the polar factor is
  then not unique and its derivative unbounded: ``1/(σ_i + σ_j)``, ``1/σ_i``).
- Bad input (fewer than 2 dimensions, empty, a dtype other than float32/float64, NaN/Inf, a non-array; a
  ``grad_out`` not of exactly the output's shape and the input's dtype, or not finite) raises
  ``TypeError``/``ValueError`` naming the function and the argument. LAPACK failures (an SVD that does not
  converge) raise ``ValueError`` naming the function, never ``LinAlgError``.
- **Scale**: QR, Gram–Schmidt and polar are scale-invariant and work at any representable scale of ``A``
  (subnormal to near the float maximum): outside ``max|A|`` in ``[2^-256, 2^256]`` (float64; ``2^±32`` for
  float32) they run on ``A`` times an exact power of two (``ortho._common``), so ordinary inputs are
  untouched and bit-identical. Their VJPs scale as ``1/scale``; a gradient that is not representable
  raises ``NonFiniteError``.
- **Speed** (CPU): the float32 LAPACK routines are called through :mod:`scipy.linalg` (``sgesdd``,
  ``sgeqrf``/``sorgqr``, ``sorgqr`` for Householder products) -- measured faster than ``numpy.linalg``,
  which in NumPy 2 also runs float32 in float32 but with extra copies (1024² float32 SVD, 2 threads:
  NumPy 0.53 s, SciPy 0.33 s, PyTorch 0.29 s). CuPy inputs go through ``cupy.linalg``.

Orthogonality of Gram–Schmidt (the textbook behaviour)
------------------------------------------------------
``‖QᵀQ − I‖_2`` for ``A = U diag(geomspace(1, 1/κ, k)) Vᵀ`` with Haar ``U`` (200 x 50), ``V`` (50 x 50),
float64 (u = 1.1e-16), seed 0 -- ``gram_schmidt_table()`` recomputes it:

========  ==========  ==========  ==========  ==========
κ         CGS         MGS         CGS2        QR (Householder)
========  ==========  ==========  ==========  ==========
1e+02     9.6e-14     7.3e-15     7.6e-16     1.1e-15
1e+04     5.7e-10     5.4e-13     1.2e-15     1.1e-15
1e+06     6.5e-06     7.2e-11     8.2e-16     1.2e-15
1e+08     5.8e-01     4.7e-09     9.2e-16     1.1e-15
1e+10     9.3e+00     2.8e-07     1.1e-15     1.1e-15
1e+12     1.6e+01     3.7e-05     1.1e-15     1.2e-15
========  ==========  ==========  ==========  ==========

CGS loses orthogonality like ``κ²u`` and breaks down (error O(1) and beyond) once ``κ²u ≳ 1``
(κ ≈ 1e8); MGS like ``κu``; CGS2 ("twice is enough", Giraud et al. 2005) and Householder QR stay at ``O(u)``.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module, host_rng
from .._checks import check_array, check_bool, check_choice, check_cotangent, check_finite, \
    check_float, check_int, check_real, check_result
from ._common import ldexp, linalg_errors, rescaled, unscale_grad
from ._linalg import mT, sign_fix
from .metrics import orthogonality_error_2

__all__ = [
    "GRAM_SCHMIDT_METHODS", "gram_schmidt", "gram_schmidt_vjp", "gram_schmidt_table",
    "qr_orthogonalize", "qr_orthogonalize_vjp", "polar", "polar_vjp", "procrustes", "procrustes_vjp",
    "householder_product", "householder_product_vjp",
]

GRAM_SCHMIDT_METHODS = ("cgs", "mgs", "cgs2")


# ---------------------------------------------------------------------------------------------------------
# Validation and small shims.

def _validate(who, A, name="A"):
    """Check a float array of at least 2 dimensions, non-empty and finite; return its array module."""
    return check_array(who, A, name)


def _validate_grad(who, A, grad_out, shape=None):
    """The cotangent: exactly the output's shape (``A``'s unless ``shape``), ``A``'s dtype, finite."""
    check_cotangent(who, "grad_out", grad_out, A.shape if shape is None else shape, A.dtype)


def _method(who, method):
    return check_choice(who, "method", method, GRAM_SCHMIDT_METHODS)


def _eps(dtype):
    return float(np.finfo(dtype).eps)


def _where(batch_shape, flat_index):
    """``' (batch index (i, j))'`` for a batched input, ``''`` for a single matrix."""
    if not batch_shape:
        return ""
    return f" (batch index {tuple(int(i) for i in np.unravel_index(int(flat_index), batch_shape))})"


def _solve_triangular(xp, a, b, lower=False, trans=0, unit_diagonal=False):
    """Batched triangular solve ``op(a) x = b`` (SciPy on the host, cupyx on the GPU)."""
    if xp is np:
        from scipy.linalg import solve_triangular
    else:                                                       # pragma: no cover - GPU only
        from cupyx.scipy.linalg import solve_triangular
        if a.ndim > 2:
            out = xp.empty(xp.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + b.shape[-2:], dtype=b.dtype)
            for idx in np.ndindex(*out.shape[:-2]):
                out[idx] = solve_triangular(a[idx], b[idx], lower=lower, trans=trans,
                                            unit_diagonal=unit_diagonal)
            return out
    return solve_triangular(a, b, lower=lower, trans=trans, unit_diagonal=unit_diagonal, check_finite=False)


def _thin_qr(xp, A):
    """Thin QR of a tall (batched) matrix with raw LAPACK signs."""
    if xp is np and A.ndim == 2:
        from scipy.linalg import qr
        return qr(A, mode="economic", check_finite=False)
    return xp.linalg.qr(A, mode="reduced")


def _thin_svd(xp, A, overwrite=False):
    """Thin SVD ``U, s, Vh`` (gesdd; SciPy on the host for true float32 LAPACK speed)."""
    if xp is np:
        from scipy.linalg import svd
        if A.ndim == 2 and A.flags.c_contiguous and not A.flags.f_contiguous:
            # LAPACK wants Fortran order: factor the F-ordered view Aᵀ = U' Σ V'ᵀ instead of letting f2py
            # make a transposed copy (measured ~1.3x faster at 1024² float32), and swap the factors.
            Ut, s, Vht = svd(A.T, full_matrices=False, lapack_driver="gesdd", check_finite=False,
                             overwrite_a=False)
            return Vht.T, s, Ut.T
        return svd(A, full_matrices=False, lapack_driver="gesdd", check_finite=False, overwrite_a=overwrite)
    return xp.linalg.svd(A, full_matrices=False)


def thin_svd(who, A, name="A"):
    """Thin SVD ``(U, s, Vh)`` of a (batched) ``A`` on its backend (``gesdd``; SciPy's float32 LAPACK on the
    host), ``s`` descending; a LAPACK failure is a ``ValueError`` naming ``who`` and ``name``. Shared with
    :mod:`orthoref.ortho.singular`; not in ``__all__``."""
    with linalg_errors(who, f"the SVD of {name} did not converge ({name} is too ill-conditioned)"):
        return _thin_svd(get_array_module(A), A)


# ---------------------------------------------------------------------------------------------------------
# QR with a positive diagonal.

_QR_BLOCK = 256   # block size of LAPACK ?geqrt (compact WY); the reference ?geqrf's nb=32 is slower
_TALL_VIA_GEMQRT = True


def _qr_host(a, overwrite, transposed=False):
    """Thin QR of a tall host matrix ``a`` (``m >= n``) in its own precision: ``(Q, diag R)``, or
    ``(Qᵀ, diag R)`` when ``transposed``.

    ``?geqrt`` (blocked Householder QR in compact-WY form, block size ``_QR_BLOCK``; the same reflectors
    as ``?geqrf``, faster than the reference ``?geqrf``'s nb=32 in OpenBLAS), then

    * ``Q``: ``?orgqr`` with ``tau = diag T`` (the diagonal of each block's ``T`` holds the Householder
      scalars); ``Q`` comes out column-major, so ``Qᵀ`` is C-contiguous;
    * ``Qᵀ``: ``?gemqrt`` applied from the right to ``[I 0]`` (``[I 0] H_n ⋯ H_1``); ``Qᵀ`` comes out
      column-major, so ``Q = (Qᵀ)ᵀ`` is C-contiguous.

    A column-major ``a`` is factorised without a copy (and overwritten when ``overwrite``).
    """
    from scipy.linalg import lapack

    m, n = a.shape
    a = np.asfortranarray(a)
    geqrt, orgqr, gemqrt = lapack.get_lapack_funcs(("geqrt", "orgqr", "gemqrt"), (a,))
    nb = min(_QR_BLOCK, n)
    r, t, info = geqrt(nb, a, overwrite_a=overwrite)
    if info != 0:
        raise np.linalg.LinAlgError(f"LAPACK ?geqrt failed with info={info}")
    d = np.array(np.diagonal(r), copy=True)
    if transposed:
        qt, info = gemqrt(r, t, np.eye(n, m, dtype=a.dtype, order="F"), side="R", trans="T",
                          overwrite_c=True)
        if info != 0:
            raise np.linalg.LinAlgError(f"LAPACK ?gemqrt failed with info={info}")
        return qt, d
    cols = np.arange(n)
    tau = np.ascontiguousarray(t[cols % nb, cols])
    work, info = orgqr(r, tau, lwork=-1)[1:]
    q, _, info = orgqr(r, tau, lwork=max(int(work[0]), 1), overwrite_a=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"LAPACK ?orgqr failed with info={info}")
    return q, d


def orthonormal_qr(a, overwrite=False):
    """Sign-fixed Q factor of a 2-D ``a`` in its own orientation (orthonormal columns if tall, rows if
    wide), on ``a``'s backend and in its dtype: ``Q diag(sign r_ii)`` with ``sign(0) = +1`` (Mezzadri 2007).
    On the host, ``_qr_host`` picks the orientation that comes out C-contiguous (Q for a wide ``a``, Qᵀ for
    a tall one); may overwrite ``a`` when ``overwrite``."""
    xp = get_array_module(a)
    rows, cols = a.shape
    wide = rows < cols
    tall = a.T if wide else a
    if xp is np:
        transposed = not wide and _TALL_VIA_GEMQRT
        q, d = _qr_host(tall, overwrite, transposed=transposed)
    else:
        q, r = xp.linalg.qr(tall, mode="reduced")
        d, transposed = xp.diagonal(r), False
    s = xp.where(d < 0, -1, 1).astype(q.dtype)
    if transposed:
        q *= s[:, None]
        return q.T
    q *= s
    return q.T if wide else q


def _qr_pos(xp, A):
    """``Q, R`` of a tall (batched) ``A`` with ``diag R >= 0`` (sign(0) = +1)."""
    return sign_fix(*_thin_qr(xp, A))


def qr_orthogonalize(A):
    """Orthonormal factor ``Q`` of the thin QR decomposition with a non-negative diagonal of ``R``.

    Parameters
    ----------
    A : array (..., n, k)
        Float32 or float64. Wide matrices (``n < k``) are handled by transposition:
        ``qr_orthogonalize(A) = qr_orthogonalize(Aᵀ)ᵀ`` (orthonormal rows).

    Returns
    -------
    Q : array (..., n, k)
        ``A = Q R`` (tall), ``QᵀQ = I``, ``R`` upper triangular with ``R_jj >= 0``; the same dtype.

    Notes
    -----
    Householder QR (``geqrf``/``orgqr``), then ``Q ← Q diag(sign R_jj)`` with ``sign(0) = +1``: the unique
    QR of a full-rank matrix and the Haar-consistent choice (QR of a Gaussian matrix gives Haar ``Q``).
    Matches ``torch.linalg.qr`` followed by the same sign fix.

    Rank-deficient ``A`` (a zero column, dependent columns, the zero matrix): ``Q`` is still orthonormal;
    its columns past the numerical rank complete an orthonormal basis and are not unique (the derivative
    does not exist there: :func:`qr_orthogonalize_vjp` raises). Scale-invariant: any representable scale
    of ``A`` (subnormal to near the float maximum) gives the ``Q`` of ``A`` (see ``ortho._common``).

    Raises ``TypeError``/``ValueError`` for a bad ``A`` (not a float32/float64 array, fewer than 2
    dimensions, empty, NaN/Inf).
    """
    who = "qr_orthogonalize"
    xp = _validate(who, A)
    A, _ = rescaled(xp, A)
    with linalg_errors(who, "the QR factorization of A failed"):
        return _qr_orthogonalize(xp, A)


def _qr_orthogonalize(xp, A):
    if A.ndim == 2:
        return orthonormal_qr(A)
    if A.shape[-2] < A.shape[-1]:
        return mT(_qr_orthogonalize(xp, mT(A)))
    return _qr_pos(xp, A)[0]


def _qr_backward(xp, Q, R, G, who):
    """``Ā = [Ḡ − Q (triu(M) + triu(M, 1)ᵀ)] R⁻ᵀ`` with ``M = QᵀḠ`` (cotangent of ``Q`` only, tall)."""
    n = Q.shape[-2]
    d = xp.abs(xp.diagonal(R, axis1=-2, axis2=-1))
    tol = n * _eps(R.dtype) * d.max(axis=-1, keepdims=True)
    bad = d <= tol
    if bool(bad.any()):
        flat = int(xp.argmax(bad.reshape(-1, bad.shape[-1]).any(axis=-1)))
        col = int(xp.argmax(bad.reshape(-1, bad.shape[-1])[flat]))
        raise ValueError(f"{who}: A is numerically rank deficient: |R[{col}, {col}]| <= n·eps·max|R_jj| "
                         f"at column {col}{_where(R.shape[:-2], flat)}; the derivative of Q is unbounded")
    M = mT(Q) @ G
    X = xp.triu(M)
    X = X + mT(xp.triu(M, 1))
    B = G - Q @ X
    # Ā = B R⁻ᵀ  <=>  R Āᵀ = Bᵀ
    return mT(_solve_triangular(xp, R, mT(B), lower=False)).astype(Q.dtype, copy=False)


def qr_orthogonalize_vjp(A, grad_out):
    """Gradient of ``⟨grad_out, qr_orthogonalize(A)⟩`` with respect to ``A``.

    .. math::  \\bar A = \\left[\\bar Q - Q\\,\\mathrm{copyutl}(Q^\\top \\bar Q)\\right] R^{-\\top}

    where ``copyutl(M) = triu(M) + triu(M, 1)ᵀ`` (the upper triangle mirrored). Derivation: ``dA = dQ R +
    Q dR`` gives ``QᵀdQ = Ω`` skew with ``tril(Ω, -1) = tril(Qᵀ dA R⁻¹, -1)`` and ``(I − QQᵀ) dQ = (I −
    QQᵀ) dA R⁻¹``; this is PyTorch's ``linalg_qr_backward`` (mode "reduced", ``m >= n``) with ``R̄ = 0``.
    Wide ``A``: by transposition. Raises ``ValueError`` naming the column when ``|R_jj| <= n·eps·max|R|``.

    ``grad_out`` must have exactly ``A``'s shape and dtype and be finite (``ValueError``/``TypeError``).
    The gradient scales as ``1/scale`` of ``A``: computed at any scale of ``A`` (exact power-of-two
    rescaling), ``NonFiniteError`` when it is not representable (``A`` subnormal and ``grad_out`` of order 1,
    say).
    """
    who = "qr_orthogonalize_vjp"
    xp = _validate(who, A)
    _validate_grad(who, A, grad_out)
    A, e = rescaled(xp, A)
    with np.errstate(over="ignore", invalid="ignore"):     # a grad_out near the float maximum: unscale_grad
        if A.shape[-2] < A.shape[-1]:
            return unscale_grad(who, xp, mT(_qr_vjp_tall(who, xp, mT(A), mT(grad_out))), e)
        return unscale_grad(who, xp, _qr_vjp_tall(who, xp, A, grad_out), e)


def _qr_vjp_tall(who, xp, A, G):
    with linalg_errors(who, "the QR factorization of A failed"):
        Q, R = _qr_pos(xp, A)
    return _qr_backward(xp, Q, R, G, who)


# ---------------------------------------------------------------------------------------------------------
# Gram–Schmidt.

def _gs_project(Q, R, V, j, method):
    """Orthogonalize the current column(s) ``V[..., :, j]`` against ``Q[..., :, :j]`` (CGS or CGS2)."""
    Qj = Q[..., :, :j]
    v = V[..., :, j]
    r = (mT(Qj) @ v[..., None])[..., 0]
    v = v - (Qj @ r[..., None])[..., 0]
    if method == "cgs2":
        r2 = (mT(Qj) @ v[..., None])[..., 0]
        v = v - (Qj @ r2[..., None])[..., 0]
        r = r + r2
    R[..., :j, j] = r
    return v


def gram_schmidt(A, method="mgs", return_r=False):
    """Orthonormalize the columns of a tall ``A`` by Gram–Schmidt.

    Parameters
    ----------
    A : array (..., n, k), n >= k
        Float32 or float64. Wide input raises ``ValueError`` (the algorithms orthonormalize columns of a
        tall matrix; pass ``Aᵀ`` and transpose the result for orthonormal rows).
    method : {"mgs", "cgs", "cgs2"}
        Modified (column-oriented, right-looking: mathematically and numerically the textbook MGS),
        classical, or classical applied twice ("twice is enough").
    return_r : bool
        Also return the upper-triangular ``R`` (``A = QR``, ``R_jj > 0``).

    Returns
    -------
    Q : array (..., n, k)
        In exact arithmetic the ``Q`` of the QR decomposition with a positive diagonal (see
        :func:`qr_orthogonalize`); in floating point ``‖QᵀQ − I‖`` grows like ``κ²u`` (CGS), ``κu`` (MGS),
        ``u`` (CGS2) -- see the module docstring and :func:`gram_schmidt_table`.

    Raises
    ------
    ValueError
        When the remaining norm of column ``j`` after orthogonalization is ``<= n·eps·‖a_j‖`` (numerical
        rank deficiency: a zero column, a column dependent on the previous ones); the message names the
        column (and the batch index). No ``Q`` is returned for a rank-deficient ``A``. Also for a bad
        ``A`` (wide, fewer than 2 dimensions, empty, NaN/Inf) or ``method``; ``TypeError`` for a non-float
        ``A`` or a non-bool ``return_r``. ``NonFiniteError`` when ``R`` overflows (``A`` near the float
        maximum with ``return_r=True``).

    Notes
    -----
    Scale-invariant (``Q``): any representable scale of ``A`` gives the ``Q`` of ``A``; ``R`` scales with
    ``A`` (see ``ortho._common``).
    """
    who = "gram_schmidt"
    xp = _validate(who, A)
    _method(who, method)
    return_r = check_bool(who, "return_r", return_r)
    n, k = A.shape[-2:]
    if n < k:
        raise ValueError(f"{who}: A must be tall (n >= k) to orthonormalize its k columns, got shape "
                         f"{tuple(A.shape)}; pass the transpose for orthonormal rows")
    A, e = rescaled(xp, A)
    Q, R = _gram_schmidt(who, xp, A, method)
    if not return_r:
        return Q
    if e:
        R = check_result(who, ldexp(xp, R, e), "R", hint="use float64 or rescale A")
    return Q, R


def _gram_schmidt(who, xp, A, method):
    n, k = A.shape[-2:]
    tol = n * _eps(A.dtype)
    norms = xp.sqrt((A * A).sum(axis=-2))                        # ‖a_j‖, (..., k)
    V = A.copy()
    Q = xp.empty_like(A)
    R = xp.zeros(A.shape[:-2] + (k, k), dtype=A.dtype)
    for j in range(k):
        v = V[..., :, j] if method == "mgs" else _gs_project(Q, R, V, j, method)
        rjj = xp.sqrt((v * v).sum(axis=-1))
        bad = rjj <= tol * norms[..., j]
        if bool(bad.any()):
            flat = int(xp.argmax(bad.reshape(-1)))
            raise ValueError(f"{who}: A is numerically rank deficient at column {j}{_where(A.shape[:-2], flat)}: "
                             f"its remaining norm after orthogonalization is <= n·eps·‖a_{j}‖ "
                             f"(method {method!r})")
        q = v / rjj[..., None]
        Q[..., :, j] = q
        R[..., j, j] = rjj
        if method == "mgs" and j + 1 < k:
            rest = V[..., :, j + 1:]
            r = (q[..., None, :] @ rest)[..., 0, :]               # q_jᵀ A[:, j+1:]
            rest -= q[..., :, None] * r[..., None, :]
            R[..., j, j + 1:] = r
    return Q, R


def gram_schmidt_vjp(A, grad_out, method="mgs"):
    """Gradient of ``⟨grad_out, gram_schmidt(A, method)⟩`` with respect to ``A``.

    In exact arithmetic every method computes the ``Q`` of the QR decomposition with a positive diagonal,
    so this is :func:`qr_orthogonalize_vjp`, evaluated with the Householder ``Q, R`` (orthonormal to
    ``O(u)`` whatever the method; the formula assumes ``QᵀQ = I``). ``method`` is validated and otherwise
    unused. Wide ``A`` raises ``ValueError`` as in the forward pass.
    """
    who = "gram_schmidt_vjp"
    xp = _validate(who, A)
    _method(who, method)
    if A.shape[-2] < A.shape[-1]:
        raise ValueError(f"{who}: A must be tall (n >= k), got shape {tuple(A.shape)}")
    _validate_grad(who, A, grad_out)
    A, e = rescaled(xp, A)
    with np.errstate(over="ignore", invalid="ignore"):     # a grad_out near the float maximum: unscale_grad
        return unscale_grad(who, xp, _qr_vjp_tall(who, xp, A, grad_out), e)


def gram_schmidt_table(n=200, k=50, kappas=(1e2, 1e4, 1e6, 1e8, 1e10, 1e12), rng=0):
    """``‖QᵀQ − I‖_2`` of CGS, MGS, CGS2 and Householder QR against the condition number (float64).

    ``A = U diag(geomspace(1, 1/κ, k)) Vᵀ`` with Haar-random ``U`` (n x k) and ``V`` (k x k), the same
    ``U, V`` for every κ. Returns a list of dicts ``{"kappa", "cgs", "mgs", "cgs2", "qr"}`` (one per κ),
    ready for a table (the module docstring shows the one for the defaults).

    ``n`` (<= 4096) and ``k`` (<= n) are positive ints, ``kappas`` a non-empty sequence of finite numbers
    >= 1, ``rng`` a seed or Generator; ``TypeError``/``ValueError`` naming the argument otherwise, and
    ``ValueError`` naming ``kappas`` when a κ makes ``A`` numerically rank deficient (beyond about
    ``1/(n·eps)``, where Gram–Schmidt raises).
    """
    who = "gram_schmidt_table"
    n = check_int(who, "n", n, 1, 4096)
    k = check_int(who, "k", k, 1, n)
    if isinstance(kappas, (str, bytes)) or not hasattr(kappas, "__len__") or len(kappas) == 0:
        raise TypeError(f"{who}: kappas must be a non-empty sequence of numbers >= 1, got {kappas!r}")
    kappas = [check_real(who, "kappas", c, 1.0) for c in kappas]
    gen = host_rng(rng, who=who)
    U = qr_orthogonalize(gen.standard_normal((n, k)))
    V = qr_orthogonalize(gen.standard_normal((k, k)))
    rows = []
    for kappa in kappas:
        A = (U * np.geomspace(1.0, 1.0 / kappa, k)) @ V.T
        row = {"kappa": float(kappa)}
        for m in GRAM_SCHMIDT_METHODS:
            try:
                row[m] = orthogonality_error_2(gram_schmidt(A, method=m))
            except ValueError:
                raise ValueError(f"{who}: kappas: κ = {kappa:g} makes A numerically rank deficient for "
                                 f"Gram–Schmidt ({m!r}) at n = {n} in float64; use κ below about 1/(n·eps)") from None
        row["qr"] = orthogonality_error_2(qr_orthogonalize(A))
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------------
# Polar factor and decomposition.

#: The sides of the polar decomposition: ``"right"`` (``A = U P``, ``P`` of the column space, ``scipy.linalg.polar``'s
#: default) and ``"left"`` (``A = P U``).
POLAR_SIDES = ("right", "left")


def _polar_svd(who, xp, A, overwrite=False, name="A"):
    """Thin SVD of a (batched) ``A`` after the near-singularity check (``name``: what the message calls it)."""
    with linalg_errors(who, f"the SVD of {name} did not converge ({name} is too ill-conditioned)"):
        U, s, Vh = _thin_svd(xp, A, overwrite=overwrite)
    n, k = A.shape[-2:]
    smax = s[..., :1]
    bad = s[..., -1:] <= max(n, k) * _eps(A.dtype) * smax
    if bool(bad.any()):
        flat = int(xp.argmax(bad.reshape(-1)))
        raise ValueError(f"{who}: {name} is numerically singular{_where(A.shape[:-2], flat)}: σ_min <= "
                         f"max(n, k)·eps·σ_max; its polar factor is not unique and the derivative is unbounded")
    return U, s, Vh


def _polar_args(who, side, return_p):
    return check_choice(who, "side", side, POLAR_SIDES), check_bool(who, "return_p", return_p)


def _p_factor(xp, U, s, Vh, side):
    """``P = V Σ Vᵀ`` (right) or ``U Σ Uᵀ`` (left) as ``BᵀB``, ``B = √Σ Vᵀ``, symmetrized: exactly symmetric."""
    B = xp.sqrt(s)[..., :, None] * (Vh if side == "right" else mT(U))
    P = mT(B) @ B
    P += mT(P)
    P *= 0.5
    return P


def polar(A, side="right", return_p=False):
    """Orthogonal polar factor ``Q = U Vᵀ`` of ``A = U Σ Vᵀ`` (thin SVD): the nearest matrix with
    orthonormal columns (rows, for wide ``A``) in the Frobenius norm, ``msign(A)``; with ``return_p``, the
    polar decomposition ``A = Q P`` (``side="right"``) or ``A = P Q`` (``side="left"``).

    Parameters
    ----------
    A : array (..., n, k)
        Float32 or float64, tall, square or wide (``polar(A) = polar(Aᵀ)ᵀ`` holds; the SVD route covers
        both at once).
    side : {"right", "left"}
        Which polar decomposition ``return_p`` gives: ``A = Q P`` with ``P = V Σ Vᵀ = (AᵀA)^{1/2}``
        (``(..., k, k)``) or ``A = P Q`` with ``P = U Σ Uᵀ = (AAᵀ)^{1/2}`` (``(..., n, n)``). ``Q`` is the same
        for both sides.
    return_p : bool
        Also return the symmetric positive semi-definite factor ``P`` (as ``scipy.linalg.polar``).

    Returns
    -------
    Q : array (..., n, k)
        The polar factor, same dtype (alone when ``return_p`` is False, the default).
    P : array (..., k, k) or (..., n, n)
        Only with ``return_p``: exactly symmetric, positive semi-definite (positive definite for square
        ``A``), same dtype; ``Q P`` (right) or ``P Q`` (left) reproduces ``A``.

    Raises
    ------
    ValueError
        When ``σ_min <= max(n, k)·eps·σ_max`` (rank-deficient or numerically singular ``A``, the zero matrix
        included: the polar factor is not unique; see :func:`polar_vjp`), when the SVD does not converge, or
        for a bad ``A``, ``side`` or ``return_p`` (``TypeError`` for a non-float ``A`` or a non-bool
        ``return_p``).
    NonFiniteError
        When ``P`` (which scales with ``A``) overflows.

    Notes
    -----
    One ``gesdd`` (``scipy.linalg.svd`` on the host: float32 LAPACK for float32 input) and one GEMM; the
    same route as ``U, S, Vh = torch.linalg.svd(A, full_matrices=False); U @ Vh``. ``P`` costs one more GEMM:
    ``P = BᵀB`` with ``B = Σ^{1/2} Vᵀ`` (right) or ``Σ^{1/2} Uᵀ`` (left), symmetrized. Scale-invariant
    (``Q``): any representable scale of ``A`` gives the polar factor of ``A`` (see ``ortho._common``); ``P``
    scales with ``A``.

    Where public code differs: ``scipy.linalg.polar(A, side)`` always returns ``(Q, P)``, takes 2-D input
    only and returns *a* polar factor of a singular ``A`` (one of many) where this raises; its ``P`` is
    ``V Σ Vᵀ`` formed directly (symmetric up to rounding). Our ``P`` agrees with it to rounding
    (``tests/test_ortho_decomp.py`` checks every registered sample against SciPy).
    """
    who = "polar"
    xp = _validate(who, A)
    side, return_p = _polar_args(who, side, return_p)
    A, e = rescaled(xp, A)
    U, s, Vh = _polar_svd(who, xp, A)
    Q = _host_gemm(U, Vh) if xp is np and A.ndim == 2 else U @ Vh
    if not return_p:
        return Q
    P = _p_factor(xp, U, s, Vh, side)
    if e:
        P = check_result(who, ldexp(xp, P, e), "P", hint="it scales with A: use float64 or rescale A")
    return Q, P


def _host_gemm(a, b):
    """``a @ b`` (C-ordered) through SciPy's BLAS, the library that just ran the SVD: NumPy ships its own
    OpenBLAS, and switching pools right after a LAPACK call leaves SciPy's worker threads spinning against
    NumPy's on 2 cores (measured 430 vs 354 ms for ``polar`` of a 1024² float32)."""
    from scipy.linalg.blas import get_blas_funcs
    gemm = get_blas_funcs("gemm", (a, b))
    return gemm(1.0, b, a, trans_a=True, trans_b=True).T        # (bᵀ aᵀ)ᵀ in F order = a b in C order


def _p_shape(A, side):
    n, k = A.shape[-2:]
    return tuple(A.shape[:-2]) + ((k, k) if side == "right" else (n, n))


def _pair_cotangent(who, A, grad_out, side):
    """``(grad_Q, grad_P)`` of ``polar(A, side, return_p=True)``: a pair of arrays of the outputs' shapes,
    ``A``'s dtype, finite."""
    if not isinstance(grad_out, (tuple, list)) or len(grad_out) != 2:
        raise TypeError(f"{who}: grad_out must be a pair (grad_Q, grad_P) when return_p is True, got "
                        f"{type(grad_out).__name__}")
    gQ, gP = grad_out
    check_cotangent(who, "grad_out[0]", gQ, A.shape, A.dtype)
    check_cotangent(who, "grad_out[1]", gP, _p_shape(A, side), A.dtype)
    return gQ, gP


def polar_vjp(A, grad_out, side="right", return_p=False):
    """Gradient of ``⟨grad_out, polar(A, side, return_p)⟩`` with respect to ``A``.

    For tall ``A = UΣVᵀ`` (thin; wide ``A`` by transposition) and ``X = Uᵀ Ḡ V``, the factor ``Q = UVᵀ``
    pulls ``Ḡ = grad_out`` back as

    .. math::  J_Q^\\top \\bar G = U \\left[\\frac{X - X^\\top}{\\sigma_i + \\sigma_j}\\right] V^\\top
               + (I - UU^\\top)\\, \\bar G\\, V \\Sigma^{-1} V^\\top .

    Derivation: ``Uᵀ dQ V = Ω`` is skew with ``Ω_ij = (C_ij − C_ji)/(σ_i + σ_j)``, ``C = Uᵀ dA V``, and
    ``(I − UUᵀ) dQ = (I − UUᵀ) dA V Σ⁻¹ Vᵀ``.

    With ``return_p``, ``grad_out = (Q̄, P̄)`` and ``P = QᵀA`` (right) or ``A Qᵀ`` (left) -- the same
    ``V Σ Vᵀ`` / ``U Σ Uᵀ``, written through ``Q`` -- so ``dP = dQᵀ A + Qᵀ dA`` and

    .. math::  \\bar A = J_Q^\\top(\\bar Q + A \\bar P^\\top) + Q \\bar P \\quad\\text{(right)}, \\qquad
               \\bar A = J_Q^\\top(\\bar Q + \\bar P^\\top A) + \\bar P Q \\quad\\text{(left)}.

    ``P`` is symmetric, so only the symmetric part of ``P̄`` acts (``P̄`` and ``P̄ᵀ`` give the same
    gradient). Raises ``ValueError`` when ``σ_min <= max(n, k)·eps·σ_max``.

    Parameters
    ----------
    A : array (..., n, k)
    grad_out : array (..., n, k), or a pair of arrays
        The cotangent of ``Q`` (exactly ``A``'s shape and dtype, finite); with ``return_p``, the pair
        ``(Q̄, P̄)``, ``P̄`` of ``P``'s shape (``(..., k, k)`` right, ``(..., n, n)`` left).
    side : {"right", "left"}
    return_p : bool
        As given to :func:`polar`.

    Returns
    -------
    grad_A : array (..., n, k), dtype of ``A``

    Raises
    ------
    TypeError, ValueError
        A bad ``A``, ``side``, ``return_p`` or ``grad_out`` (not a pair with ``return_p``), a singular ``A``.
    NonFiniteError
        When the gradient is not representable: the ``Q̄`` part scales as ``1/scale`` of ``A`` (computed at
        any scale by an exact rescaling), the ``P̄`` part not at all.
    """
    who = "polar_vjp"
    xp = _validate(who, A)
    side, return_p = _polar_args(who, side, return_p)
    if return_p:
        gQ, gP = _pair_cotangent(who, A, grad_out, side)
    else:
        _validate_grad(who, A, grad_out)
        gQ, gP = grad_out, None
    A, e = rescaled(xp, A)
    with np.errstate(over="ignore", invalid="ignore"):     # a grad_out near the float maximum: the checks below
        Q, pull = _polar_pullback(who, xp, A)
        if gP is None:
            return unscale_grad(who, xp, pull(gQ), e)
        through_q = mT(gP) @ A if side == "left" else A @ mT(gP)     # (Āᵀ-side of dQᵀA or A dQᵀ)
        direct = gP @ Q if side == "left" else Q @ gP
        if e:                                              # J_Q(A) = 2^-e J_Q(A·2^-e); P̄'s part is unscaled
            out = ldexp(xp, pull(gQ), -e) + pull(through_q) + direct
        else:
            out = pull(gQ + through_q) + direct
    return check_result(who, out, "the gradient", hint="use float64 or rescale A (and grad_out)")


def _polar_pullback(who, xp, A):
    """``(Q, pull)``: the polar factor of ``A`` and ``Ḡ ↦ J_Qᵀ Ḡ`` (one SVD; wide ``A`` by transposition)."""
    wide = A.shape[-2] < A.shape[-1]
    At = mT(A) if wide else A
    U, s, Vh = _polar_svd(who, xp, At)
    Q = U @ Vh

    def pull(G):
        return mT(_polar_backward(U, s, Vh, mT(G))) if wide else _polar_backward(U, s, Vh, G)
    return (mT(Q) if wide else Q), pull


def _polar_backward(U, s, Vh, G):
    """``J_Qᵀ Ḡ`` for tall ``A = U diag(s) Vh`` (the formula of :func:`polar_vjp`)."""
    V = mT(Vh)
    GV = G @ V
    X = mT(U) @ GV
    S = (X - mT(X)) / (s[..., :, None] + s[..., None, :])
    out = U @ (S @ Vh)
    if U.shape[-2] > U.shape[-1]:
        P = GV - U @ X                                          # (I − UUᵀ) Ḡ V
        out += (P / s[..., None, :]) @ Vh
    return out


# ---------------------------------------------------------------------------------------------------------
# Orthogonal Procrustes: the rotation between two point (or gradient) sets.

def _procrustes_inputs(who, A, B):
    xp = _validate(who, A, "A")
    _validate(who, B, "B")
    if tuple(A.shape) != tuple(B.shape):
        raise ValueError(f"{who}: A and B must have the same shape (..., m, n), got A {tuple(A.shape)} and "
                         f"B {tuple(B.shape)}")
    if A.dtype != B.dtype:
        raise TypeError(f"{who}: B must have A's dtype {A.dtype}, got {B.dtype}")
    A, a = rescaled(xp, A)
    B, b = rescaled(xp, B)
    return xp, A, a, B, b


def procrustes(A, B):
    """Orthogonal Procrustes: the orthogonal ``R`` that best maps the rows of ``A`` onto those of ``B``,

    .. math::  R = \\arg\\min_{R^\\top R = I} \\lVert A R - B \\rVert_F = \\operatorname{polar}(A^\\top B),
               \\qquad \\text{scale} = \\sum_i \\sigma_i(A^\\top B) = \\operatorname{tr}(R^\\top A^\\top B),

    ``scipy.linalg.orthogonal_procrustes``'s convention and return value (Schönemann 1966, "A generalized
    solution of the orthogonal Procrustes problem", Psychometrika 31).

    Parameters
    ----------
    A, B : array (..., m, n), m >= n
        Float32 or float64, the same shape and dtype: ``m`` points (rows) in ``R^n``, or a batch.

    Returns
    -------
    R : array (..., n, n)
        Orthogonal (``RᵀR = I``), same dtype.
    scale : float scalar or array (...)
        The nuclear norm of ``AᵀB`` (a NumPy scalar for 2-D input, as SciPy's): the largest ``tr(Rᵀ AᵀB)``,
        so the residual is ``‖AR − B‖²_F = ‖A‖²_F + ‖B‖²_F − 2·scale``.

    Raises
    ------
    ValueError
        When ``AᵀB`` is numerically singular (``σ_min <= n·eps·σ_max``: ``m < n``, a zero or
        rank-deficient ``A`` or ``B``): the minimizer is then not unique and its derivative unbounded. Also
        for shapes that differ or a bad ``A``/``B`` (``TypeError`` for a non-float one or different dtypes).
    NonFiniteError
        When ``scale`` (which scales with ``A`` and ``B``) overflows.

    Notes
    -----
    One GEMM ``AᵀB``, one SVD and one GEMM. ``R`` is invariant under positive scalings of ``A`` and of
    ``B`` and is computed at any representable scale of either (exact power-of-two rescaling,
    ``ortho._common``). Gradient: :func:`procrustes_vjp`.

    Where public code differs: SciPy returns an ``R`` for a singular ``AᵀB`` too (one of many minimizers)
    where this raises, takes 2-D input only and has no gradient; PyTorch has no Procrustes routine (its
    twin here is ``torch.linalg.svd`` of ``AᵀB``, ``tests/test_ortho_procrustes.py``).

    **Orthogonal gradients** (``Q g_in = g_out``): an orthogonal map preserves norms and inner products,
    ``⟨Q g_i, Q g_j⟩ = ⟨g_i, g_j⟩``. So a ``Q`` that maps every gradient ``g_in`` of a set onto its partner
    ``g_out`` exactly exists only when ``‖g_in‖ = ‖g_out‖`` for every pair *and* the Gram matrices agree,
    ``G_inᵀ G_in = G_outᵀ G_out`` (gradients as the columns of ``G``); it can rotate and reflect, never
    rescale or shear. Otherwise the best ``Q`` in the least-squares sense is the Procrustes rotation,
    ``Q = Rᵀ`` with ``R, scale = procrustes(G_inᵀ, G_outᵀ)``, and the residual ``‖Q G_in − G_out‖²_F =
    ‖G_in‖²_F + ‖G_out‖²_F − 2·scale`` is what no orthogonal map can remove. It takes at least as many
    pairs as dimensions (``m >= n``): fewer pairs fix ``Q`` on their span only, and ``procrustes`` raises
    (``AᵀB`` singular) rather than pick one of the many rotations. Five gradients in ``R³``:

    >>> import numpy as np
    >>> from orthoref.ortho import procrustes
    >>> rng = np.random.default_rng(0)
    >>> Q = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    >>> G_in = rng.standard_normal((3, 5))
    >>> R, scale = procrustes(G_in.T, (Q @ G_in).T)      # equal Gram matrices: mapped exactly
    >>> bool(np.allclose(R.T @ G_in, Q @ G_in))
    True
    >>> G_out = (Q @ G_in) * np.array([1.0, 1.0, 1.0, 1.0, 3.0])   # one pair with ‖g_out‖ = 3‖g_in‖
    >>> R, scale = procrustes(G_in.T, G_out.T)
    >>> residual = np.linalg.norm(R.T @ G_in - G_out) ** 2
    >>> bool(residual > 1.0)                             # no orthogonal map rescales a gradient
    True
    >>> bool(np.isclose(residual, (G_in ** 2).sum() + (G_out ** 2).sum() - 2 * scale))
    True
    >>> bool(np.allclose(np.linalg.norm(R.T @ G_in, axis=0), np.linalg.norm(G_in, axis=0)))
    True
    """
    who = "procrustes"
    xp, A, a, B, b = _procrustes_inputs(who, A, B)
    M = mT(A) @ B
    U, s, Vh = _polar_svd(who, xp, M, name="AᵀB")
    scale = s.sum(axis=-1)
    if a + b:
        scale = check_result(who, ldexp(xp, scale, a + b), "scale", hint="it scales with A and B: use float64")
    return U @ Vh, scale


def _grad_scale(who, A, grad_scale):
    """``grad_scale`` as an array of shape ``A.shape[:-2]`` (a real number for a single pair), or None."""
    if grad_scale is None:
        return None
    if A.ndim == 2 and not hasattr(grad_scale, "shape"):
        return check_real(who, "grad_scale", grad_scale)
    if A.ndim == 2 and isinstance(grad_scale, np.generic) and not isinstance(grad_scale, np.bool_):
        return check_real(who, "grad_scale", grad_scale)
    check_cotangent(who, "grad_scale", grad_scale, tuple(A.shape[:-2]), A.dtype)
    return grad_scale


def procrustes_vjp(A, B, grad_out, grad_scale=None):
    """Gradients ``(grad_A, grad_B)`` of ``⟨grad_out, R⟩ + grad_scale·scale`` for ``R, scale =
    procrustes(A, B)``.

    With ``M = AᵀB`` (``dM = dAᵀB + AᵀdB``), ``R = polar(M)`` and ``d scale = ⟨R, dM⟩`` (the gradient of
    the nuclear norm at a nonsingular ``M``):

    .. math::  \\bar M = J_{\\text{polar}}^\\top(M)\\,\\bar R + \\bar s\\, R, \\qquad
               \\bar A = B \\bar M^\\top, \\qquad \\bar B = A \\bar M,

    ``J_polarᵀ`` being :func:`polar_vjp`'s formula.

    Parameters
    ----------
    A, B : array (..., m, n)
        As given to :func:`procrustes`.
    grad_out : array (..., n, n)
        The cotangent of ``R``: exactly ``R``'s shape and ``A``'s dtype, finite.
    grad_scale : None, float or array (...)
        The cotangent of ``scale`` (None: scale's gradient is left out). A real number for a single pair
        (2-D input), else an array of shape ``A.shape[:-2]`` and ``A``'s dtype.

    Returns
    -------
    grad_A, grad_B : arrays (..., m, n), dtype of ``A``

    Raises
    ------
    TypeError, ValueError
        As :func:`procrustes`, and for a bad ``grad_out`` or ``grad_scale``.
    NonFiniteError
        When a gradient is not representable (``R``'s part scales as ``1/scale`` of the other input).
    """
    who = "procrustes_vjp"
    xp, A, a, B, b = _procrustes_inputs(who, A, B)
    n = A.shape[-1]
    check_cotangent(who, "grad_out", grad_out, tuple(A.shape[:-2]) + (n, n), A.dtype)
    gs = _grad_scale(who, A, grad_scale)
    with np.errstate(over="ignore", invalid="ignore"):
        M = mT(A) @ B
        U, s, Vh = _polar_svd(who, xp, M, name="AᵀB")
        Mbar = _polar_backward(U, s, Vh, grad_out)          # at M·2^-(a+b): the true one times 2^-(a+b)
        gA = ldexp(xp, B @ mT(Mbar), -a)                    # B̄·2^b M̄·2^-(a+b)
        gB = ldexp(xp, A @ Mbar, -b)
        if gs is not None:
            R = U @ Vh
            Rs = R * (gs if isinstance(gs, float) else gs[..., None, None])
            gA = gA + ldexp(xp, B @ mT(Rs), b)
            gB = gB + ldexp(xp, A @ Rs, a)
    hint = "use float64 or rescale A and B (and grad_out)"
    return (check_result(who, gA, "grad_A", hint).astype(A.dtype, copy=False),
            check_result(who, gB, "grad_B", hint).astype(A.dtype, copy=False))


# ---------------------------------------------------------------------------------------------------------
# Householder products (LAPACK orgqr, torch.linalg.householder_product).

def _validate_householder(who, V, tau):
    xp = _validate(who, V, "V")
    check_float(who, "tau", tau)
    n, k = V.shape[-2:]
    if n < k:
        raise ValueError(f"{who}: V must be tall (n >= k), got shape {tuple(V.shape)}")
    if tau.ndim != V.ndim - 1 or tuple(tau.shape[:-1]) != tuple(V.shape[:-2]) or tau.shape[-1] > k:
        raise ValueError(f"{who}: tau must have shape {tuple(V.shape[:-2])} + (p,) with p <= k = {k}, "
                         f"got {tuple(tau.shape)}")
    if tau.dtype != V.dtype:
        raise TypeError(f"{who}: tau must have V's dtype {V.dtype}, got {tau.dtype}")
    check_finite(who, "tau", tau, xp)
    return xp


def _unit_lower(xp, V, p):
    """The reflector vectors ``tril(V[..., :p], -1) + I`` (unit diagonal implied)."""
    Vp = xp.tril(V[..., :, :p], -1)
    d = xp.arange(p)
    Vp[..., d, d] = 1
    return Vp


def _wy_factors(xp, Vu, tau):
    """``L = (I + diag(τ) N)⁻¹`` and ``R = (I + N diag(τ))⁻¹`` with ``N = striu(VᵀV)``, so that the
    compact-WY ``T`` (``H_1 ⋯ H_p = I − V T Vᵀ``) is ``T = L diag(τ) = diag(τ) R`` -- no division by τ."""
    p = tau.shape[-1]
    N = xp.triu(mT(Vu) @ Vu, 1)
    eye = xp.broadcast_to(xp.eye(p, dtype=Vu.dtype), N.shape)
    L = _solve_triangular(xp, eye + tau[..., :, None] * N, eye, lower=False, unit_diagonal=True)
    return N, L


def householder_product(V, tau):
    """The first ``k`` columns of ``H_1 H_2 ⋯ H_p``, ``H_i = I − τ_i v_i v_iᵀ`` (LAPACK ``orgqr``,
    ``torch.linalg.householder_product``).

    Parameters
    ----------
    V : array (..., n, k), n >= k
        Reflector ``i`` is ``v_i = (0, …, 0, 1, V[i+1:, i])``: only the strictly lower part of the first
        ``p`` columns is read (unit diagonal implied; the rest is ignored).
    tau : array (..., p), p <= k
        Scale factors (any real values; ``2/‖v_i‖²`` gives orthogonal reflectors, as ``geqrf`` returns).

    Returns
    -------
    Q : array (..., n, k), same dtype.

    Raises
    ------
    TypeError, ValueError
        A bad ``V`` or ``tau`` (not float32/float64, wrong shapes, different dtypes, NaN/Inf).
    NonFiniteError
        When ``Q`` overflows (huge ``τ·‖v‖²``; ``Q`` is orthogonal only for ``τ_i = 2/‖v_i‖²`` or 0).

    Notes
    -----
    A single float32/float64 matrix on the host calls LAPACK ``?orgqr`` through SciPy; batched or CuPy
    inputs use the compact-WY form ``Q = E − V T V₁ᵀ`` (``E = I[:, :k]``, ``V₁`` the first k rows of V).
    """
    who = "householder_product"
    xp = _validate_householder(who, V, tau)
    with np.errstate(over="ignore", invalid="ignore"):
        Q = _householder_product(who, xp, V, tau)
    return check_result(who, Q, hint="use float64 or smaller tau / V")


def _householder_product(who, xp, V, tau):
    k = V.shape[-1]
    p = tau.shape[-1]
    if xp is np and V.ndim == 2:
        from scipy.linalg import lapack
        orgqr = lapack.get_lapack_funcs("orgqr", (V,))
        Q, _, info = orgqr(V, tau, lwork=max(1, 64 * k), overwrite_a=False)
        if info != 0:                                           # pragma: no cover - LAPACK argument error
            raise ValueError(f"{who}: the Householder product of V and tau failed (orgqr info={info})")
        return Q
    Vu = _unit_lower(xp, V, p)
    _, L = _wy_factors(xp, Vu, tau)
    T = L * tau[..., None, :]
    Q = -(Vu @ (T @ mT(Vu[..., :k, :])))
    d = xp.arange(k)
    Q[..., d, d] += 1
    return Q


def householder_product_vjp(V, tau, grad_out):
    """Gradients ``(grad_V, grad_tau)`` of ``⟨grad_out, householder_product(V, tau)⟩``.

    With ``Q = E − V T V₁ᵀ``, ``T⁻¹ = S = diag(1/τ) + striu(VᵀV)`` (compact WY), ``M = Vᵀ Ḡ V₁`` and
    ``Z = Tᵀ M Tᵀ``:

    .. math::  \\bar V = -\\bar G V_1 T^\\top - \\begin{bmatrix}\\bar G^\\top V T\\\\ 0\\end{bmatrix}
               + V(\\mathrm{striu}(Z) + \\mathrm{striu}(Z)^\\top), \\qquad
               \\bar\\tau_i = -(L^\\top M R^\\top)_{ii},

    restricted to the strictly lower part of the first ``p`` columns (the entries ``householder_product``
    reads; the rest of ``grad_V`` is zero, as in PyTorch). ``L = T diag(1/τ)``, ``R = diag(1/τ) T`` are
    unit upper triangular and computed without dividing by τ, so τ_i = 0 is fine.

    ``grad_out``: exactly ``V``'s shape and dtype, finite. ``NonFiniteError`` when a gradient overflows.
    """
    who = "householder_product_vjp"
    xp = _validate_householder(who, V, tau)
    _validate_grad(who, V, grad_out)
    with np.errstate(over="ignore", invalid="ignore"):
        grad_V, gtau = _householder_product_vjp(xp, V, tau, grad_out)
    hint = "use float64 or smaller tau / V / grad_out"
    return check_result(who, grad_V, "grad_V", hint), check_result(who, gtau, "grad_tau", hint)


def _householder_product_vjp(xp, V, tau, G):
    k = V.shape[-1]
    p = tau.shape[-1]
    Vu = _unit_lower(xp, V, p)
    V1 = Vu[..., :k, :]
    N, L = _wy_factors(xp, Vu, tau)
    eye = xp.broadcast_to(xp.eye(p, dtype=V.dtype), N.shape)
    Rm = _solve_triangular(xp, eye + N * tau[..., None, :], eye, lower=False, unit_diagonal=True)
    T = L * tau[..., None, :]
    M = mT(Vu) @ (G @ V1)
    Z = mT(T) @ M @ mT(T)
    Zu = xp.triu(Z, 1)
    gV = -(G @ (V1 @ mT(T)))
    gV[..., :k, :] -= mT(G) @ (Vu @ T)
    gV += Vu @ (Zu + mT(Zu))
    gtau = -(L * (M @ mT(Rm))).sum(axis=-2)
    grad_V = xp.zeros_like(V)
    grad_V[..., :, :p] = xp.tril(gV, -1)
    return grad_V, gtau.astype(V.dtype, copy=False)
