"""Iterative orthogonalization: Newton–Schulz (Muon, You, Polar Express), Björck, the Parseval retraction
and spectral normalization, each with an unrolled backward pass ``NAME_vjp(A, grad_out, **kw)``; the design
of Newton–Schulz schedules (:func:`design_ns_coefficients`, the Polar Express construction).

Every map here acts on the **last two axes** (``(..., m, n)``, batched through ``@`` broadcasting) except
:func:`spectral_normalize`, which follows PyTorch and sees a weight as ``M = W.reshape(out, -1)``. The
iterations run on the *wide* orientation (``m <= n``; a tall input is transposed, iterated and transposed
back, as Muon and the Polar Express code do), so the Gram matrix ``X Xᵀ`` is the smaller one.

Backward passes are **unrolled**: the forward iterates are recomputed and stored, then the reverse pass
runs through every step, the normalization and the transposition -- the exact gradient of the map that
was computed (with a fixed number of steps), not the gradient of the polar factor it approximates.

Precision: the computation stays in the input's dtype (float32 in, float32 out). Muon and the Polar
Express code run the iteration in bfloat16 on the GPU; NumPy has no bfloat16 and this reference does not
emulate it, so float32/float64 results are what those codes would give in exact-ish arithmetic.

Bad input (fewer than two dimensions, an empty array, NaN/Inf, a dtype other than float32/float64, an
unknown coefficient name, a malformed coefficient table, a step count outside ``[1, MAX_ITERATIONS]``, a
``grad_out`` of another shape or dtype than the output or not finite) raises ``ValueError`` / ``TypeError``
naming the function and the argument. A result that overflows (a user table that diverges, ``|W|`` near
the float maximum in :func:`parseval_retraction`) raises ``NonFiniteError``.

Scale: :func:`bjorck`, :func:`spectral_normalize` and :func:`newton_schulz` with ``eps = 0`` are
scale-invariant and work at any representable scale of the input (subnormal to near the float maximum):
the normalization is computed on an exactly rescaled copy (a power of two; see ``ortho._common``), which
leaves ordinary inputs bit-identical. With ``eps > 0`` :func:`newton_schulz` computes its formula
``A / (κ‖A‖_F + ε)`` at any scale (for ``‖A‖_F ≪ ε`` that is ``≈ A/ε``, not an orthogonal matrix).
Gradients scale as ``1/scale`` and raise ``NonFiniteError`` when not representable.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module, host_rng
from .._checks import MAX_ITERATIONS, NonFiniteError, check_array, check_bool, check_choice, check_cotangent, \
    check_finite, check_float, check_int, check_real, check_result
from ._common import ldexp, max_abs, scale_exponent, unscale_grad
from ._linalg import NS_COEFFICIENTS, mT, ns_schedule

__all__ = [
    "NS_COEFFICIENTS", "newton_schulz", "newton_schulz_vjp", "ns_polynomial", "ns_worst_error",
    "design_ns_coefficients",
    "bjorck", "bjorck_vjp", "parseval_retraction", "parseval_retraction_vjp",
    "spectral_normalize", "spectral_normalize_vjp",
]

# The coefficient tables (NS_COEFFICIENTS, re-exported here) and their per-step schedule live in
# ortho._linalg (nn.orthogonal validates them too).


# ---------------------------------------------------------------------------------------------------------
# Validation.

def _check_array(who, A, name="A"):
    return check_array(who, A, name, what="(a matrix or a batch (..., m, n))")


def _check_grad(who, A, grad_out):
    """The cotangent of a map ``(..., m, n) -> (..., m, n)``: exactly ``A``'s shape and dtype, finite."""
    check_cotangent(who, "grad_out", grad_out, A.shape, A.dtype)
    return grad_out


def _check_steps(who, steps, name="steps"):
    return check_int(who, name, steps, 1, MAX_ITERATIONS)


def _overflow(who, Y, name="A"):
    """``NonFiniteError`` naming ``who`` when ``Y`` (computed from finite inputs) is not finite."""
    return check_result(who, Y, hint=f"use float64, rescale {name} or use coefficients that do not diverge")


# ---------------------------------------------------------------------------------------------------------
# The shared core: X ← aX + (b G + c G²) X, G = X Xᵀ, on the wide orientation.

def _is_tall(A):
    return A.shape[-2] > A.shape[-1]


def _iterate(X, rows, store=None):
    """Run the polynomial steps on the wide ``X`` (a fresh C-contiguous array, overwritten in place when
    ``store`` is None). With a list ``store``, every iterate before a step is appended (for the reverse
    pass) and no array is overwritten."""
    xp = get_array_module(X)
    m = X.shape[-2]
    gshape = X.shape[:-1] + (m,)
    G = xp.empty(gshape, dtype=X.dtype)
    H = xp.empty(gshape, dtype=X.dtype) if any(c != 0 for _, _, c in rows) else None
    Y = None if store is not None else xp.empty_like(X)
    for a, b, c in rows:
        if store is not None:
            store.append(X)
        xp.matmul(X, mT(X), out=G)                     # G = X Xᵀ (syrk for 2-D NumPy inputs)
        if c != 0:
            xp.matmul(G, mT(G), out=H)                 # G² = G Gᵀ (G symmetric: syrk again)
            H *= c
            G *= b
            H += G
            B = H
        else:
            G *= b
            B = G
        if store is not None:
            Xn = B @ X
            Xn += a * X
            X = Xn
        else:
            xp.matmul(B, X, out=Y)                     # X ← a X + B X, no temporaries
            X *= a
            X += Y
    return X


def _iterate_vjp(Xs, rows, Ybar):
    """Reverse pass of :func:`_iterate` through the stored iterates ``Xs``.

    One step ``Y = aX + BX``, ``B = bG + cG²``, ``G = XXᵀ`` pulls back as
    ``X̄ = aȲ + BȲ + (bP + c(PG + GP)) X`` with ``P = B̄ + B̄ᵀ``, ``B̄ = Ȳ Xᵀ``.
    """
    for X, (a, b, c) in zip(reversed(Xs), reversed(rows)):
        G = X @ mT(X)
        Bbar = Ybar @ mT(X)
        P = Bbar + mT(Bbar)
        if c != 0:
            B = G @ mT(G)
            B *= c
            B += b * G
            Q = P @ G
            S = Q + mT(Q)
            S *= c
            S += b * P
        else:
            B = b * G
            S = b * P
        Xbar = B @ Ybar
        Xbar += a * Ybar
        Xbar += S @ X
        Ybar = Xbar
    return Ybar


def _fro(xp, X):
    """Frobenius norm over the last two axes, keepdims, in ``X``'s dtype."""
    return xp.sqrt(xp.sum(X * X, axis=(-2, -1), keepdims=True))


def _norm_exponent(xp, Aw, eps):
    """The exponent ``e`` of the exact rescaling ``Aw·2^-e`` under which the normalization is computed
    (0: none, inside the window of ``ortho._common``). With ``eps > 0``, ``e >= log2(eps) − 64`` keeps
    ``eps·2^-e`` representable: the rescaled ``‖Aw‖_F`` is then either negligible next to it or normal."""
    floor = (np.frexp(eps)[1] - 64) if eps > 0 else None
    return scale_exponent(xp, Aw, floor)


def _normalized(xp, Aw, kappa, eps, e=0):
    """``(X0, s, n, Aw')``: ``X0 = Aw' / s``, ``s = κ ‖Aw'‖_F + eps·2^-e`` with ``Aw' = Aw·2^-e``
    (C-contiguous copy); the same ``X0`` as ``Aw / (κ‖Aw‖_F + eps)``, computed without under/overflow."""
    if e:
        Aw = ldexp(xp, Aw, -e)
        eps = float(np.ldexp(eps, -e))
    n = _fro(xp, Aw)
    s = n * kappa + eps
    X = xp.empty(Aw.shape, dtype=Aw.dtype)
    xp.divide(Aw, xp.where(s == 0, 1, s), out=X)
    return X, s, n, Aw


def _normalized_vjp(xp, Aw, s, n, X0bar, kappa):
    """Pull ``X̄0`` back through ``X0 = Aw / (κ‖Aw‖ + eps)``:
    ``Ā = X̄0 / s − κ <X̄0, Aw> / (s² ‖Aw‖) · Aw``. At ``Aw = 0`` the norm is not differentiable; the second
    term vanishes there (it carries ``Aw``) and ``X̄0 / s`` is returned (``X̄0 / 1`` when ``s = 0``)."""
    s_safe = xp.where(s == 0, 1, s)
    inner = xp.sum(X0bar * Aw, axis=(-2, -1), keepdims=True)
    coef = kappa * inner / (s_safe * s_safe * xp.where(n == 0, 1, n))
    g = X0bar / s_safe
    g -= coef * Aw
    return g


def _wide(A):
    tall = _is_tall(A)
    return (mT(A) if tall else A), tall


def _unwide(xp, X, tall):
    return xp.ascontiguousarray(mT(X)) if tall else X


# ---------------------------------------------------------------------------------------------------------
# Newton–Schulz.

def newton_schulz(A, steps=5, coefficients="jordan", eps=1e-7):
    """Newton–Schulz orthogonalization, the polar-factor approximation of Muon.

    .. math::  X_0 = \\frac{A}{\\kappa \\lVert A \\rVert_F + \\epsilon}, \\qquad
               X_{t+1} = a_t X_t + (b_t G_t + c_t G_t^2) X_t, \\quad G_t = X_t X_t^\\top,

    i.e. ``p_t(σ) = a_t σ + b_t σ³ + c_t σ⁵`` applied to every singular value:
    ``newton_schulz(U diag(s) Vᵀ) = U diag(p(s / (κ‖s‖ + ε))) Vᵀ`` with ``p`` = :func:`ns_polynomial`.
    A tall input (``m > n``) is transposed first and the result transposed back (as Muon's
    ``zeropower_via_newtonschulz5``), so ``G`` is always the smaller Gram matrix.

    Parameters
    ----------
    A : (..., m, n) float array
        A matrix or a batch of matrices (the last two axes).
    steps : int >= 1 or None
        Number of steps. Row ``t`` of the coefficient table is used at step ``t``; past the end of the
        table its last row is repeated (``"polar_express"``'s last row is the converged quintic
        ``(1.875, -1.25, 0.375)``); with fewer steps than rows only the first ``steps`` rows are used
        (the default 5 uses five of ``"you"``'s six rows and five of ``"polar_express"``'s eight, as the
        Polar Express code's ``coeffs_list[:steps]``). ``None``: the table's length (5 for one-row sets).
    coefficients : str or (m, 3) array_like
        A name of :data:`NS_COEFFICIENTS` (``"jordan"``, ``"cubic"``, ``"you"``, ``"polar_express"``) or a
        table of ``(a, b, c)`` rows (one row, or a flat triple: that row at every step).
    eps : float >= 0
        ε of the normalization. ``κ = 1.01`` for ``"polar_express"`` (their ``X.norm() * 1.01 + 1e-7``),
        ``κ = 1`` otherwise (Muon's ``X / (X.norm() + 1e-7)``); a user table gets ``κ = 1``.

    Returns
    -------
    (..., m, n) array, dtype of ``A``
        Computed in ``A``'s dtype (float32 stays float32). Muon runs it in bfloat16; we do not.

    Raises
    ------
    TypeError, ValueError
        A bad ``A``, ``steps`` (an int in ``[1, MAX_ITERATIONS]``), ``coefficients`` or ``eps``.
    NonFiniteError
        When the iteration overflows (a user table that diverges).

    Notes
    -----
    Three GEMMs per step (``XXᵀ`` as ``syrk``, ``G²``, ``BX``; two when ``c = 0``), updated in place.
    The normalization is computed at any scale of ``A`` (module docstring); with ``eps = 0`` the map is
    scale-invariant.
    """
    who = "newton_schulz"
    xp = _check_array(who, A)
    rows, kappa = ns_schedule(who, coefficients, steps)
    eps = check_real(who, "eps", eps, 0.0)
    Aw, tall = _wide(A)
    X, _, _, _ = _normalized(xp, Aw, kappa, eps, _norm_exponent(xp, Aw, eps))
    with np.errstate(over="ignore", invalid="ignore"):
        Y = _iterate(X, rows)
    return _unwide(xp, _overflow(who, Y), tall)


def newton_schulz_vjp(A, grad_out, steps=5, coefficients="jordan", eps=1e-7):
    """Gradient of ``<grad_out, newton_schulz(A, ...)>`` w.r.t. ``A``: the reverse pass unrolled through
    every step, the normalization (including the dependence of ``‖A‖_F`` on ``A``) and the transposition.

    Parameters
    ----------
    A : (..., m, n) float array
    grad_out : (..., m, n) float array
    steps, coefficients, eps
        As given to :func:`newton_schulz`.

    Returns
    -------
    (..., m, n) array, dtype of ``A``

    Raises
    ------
    TypeError, ValueError
        As :func:`newton_schulz`, and for a ``grad_out`` not of ``A``'s exact shape and dtype, or not finite.
    NonFiniteError
        When the gradient overflows (it scales as ``1/scale`` of ``A``).

    Notes
    -----
    Stores the ``steps`` iterates; costs about twice a forward pass (seven GEMMs per step).
    """
    who = "newton_schulz_vjp"
    xp = _check_array(who, A)
    gbar = _check_grad(who, A, grad_out)
    rows, kappa = ns_schedule(who, coefficients, steps)
    eps = check_real(who, "eps", eps, 0.0)
    return _unrolled_vjp(who, xp, A, gbar, rows, kappa, eps)


def _unrolled_vjp(who, xp, A, gbar, rows, kappa, eps):
    """Newton–Schulz / Björck backward: forward iterates stored, reverse pass, normalization, transposition;
    computed on ``A·2^-e`` (see :func:`_norm_exponent`) and scaled back by ``2^-e``."""
    Aw, tall = _wide(A)
    e = _norm_exponent(xp, Aw, eps)
    with np.errstate(over="ignore", invalid="ignore"):
        X0, s, n, Aw = _normalized(xp, Aw, kappa, eps, e)
        Xs = []
        _iterate(X0, rows, store=Xs)
        Ybar = mT(gbar) if tall else gbar
        X0bar = _iterate_vjp(Xs, rows, Ybar)
        g = _normalized_vjp(xp, Aw, s, n, X0bar, kappa)
    return unscale_grad(who, xp, _unwide(xp, g, tall).astype(A.dtype, copy=False), e)


def ns_polynomial(coefficients="jordan", steps=None):
    """The scalar map ``σ ↦ p(σ) = p_T(...p_1(σ))`` of the Newton–Schulz steps, ``p_t(σ) = a_tσ + b_tσ³ +
    c_tσ⁵``: what :func:`newton_schulz` does to each singular value of the *normalized* input.

    Parameters
    ----------
    coefficients : str or (m, 3) array_like
        As in :func:`newton_schulz`.
    steps : int >= 1 or None
        As in :func:`newton_schulz`; ``None`` (the default here): the table's length (5 for one-row sets).

    Returns
    -------
    callable
        ``p(sigma)`` for a real number (float64 result) or a float32/float64 array (element-wise, its
        dtype); ``TypeError`` for anything else (a list, an int/bool/complex array), ``ValueError`` for
        NaN/Inf, ``NonFiniteError`` when ``p(sigma)`` overflows (``|sigma|`` far outside ``[0, 1]``).
    """
    return _polynomial(ns_schedule("ns_polynomial", coefficients, steps)[0])


def _polynomial(rows):
    """``p`` of :func:`ns_polynomial` for validated ``rows``."""
    def p(sigma):
        who = "ns_polynomial"
        if hasattr(sigma, "dtype") and not isinstance(sigma, np.generic):
            check_float(who, "sigma", sigma)
            check_finite(who, "sigma", sigma)
            x = np.asarray(sigma)
        else:
            x = np.asarray(check_real(who, "sigma", sigma))
        with np.errstate(over="ignore", invalid="ignore"):
            for a, b, c in rows:
                x2 = x * x
                x = x * (a + x2 * (b + c * x2))
        return check_result(who, x, "p(sigma)", hint="evaluate p on [0, 1] or use float64")
    return p


def ns_worst_error(coefficients="jordan", lo=1e-3, steps=None):
    """``max_{σ ∈ [lo, 1]} |p(σ) − 1|`` for the Newton–Schulz map ``p`` = :func:`ns_polynomial`.

    Evaluated on 100001 log-spaced points of ``[lo, 1]`` (both ends included), then refined around the ten
    largest local maxima of the grid by two rounds of 2001-point grids on the neighbouring cells (the
    relative error of the maximum is then far below 1e-9 for these degree-5ᵀ compositions).

    Parameters
    ----------
    coefficients : str or (m, 3) array_like
    lo : float in (0, 1)
        Smallest normalized singular value considered (Muon's inputs are normalized by ``‖·‖_F``, so their
        singular values lie in ``(0, 1]``; the Polar Express designs for ``[1e-3, 1]``).
    steps : int or None
        As in :func:`ns_polynomial` (``None``: the table's length, 5 for one-row sets).

    Returns
    -------
    float
    """
    who = "ns_worst_error"
    lo = check_real(who, "lo", lo, 0.0, lo_open=True)
    if lo >= 1:
        raise ValueError(f"{who}: lo must lie in (0, 1), got {lo!r}")
    p = _polynomial(ns_schedule(who, coefficients, steps)[0])
    try:
        return _worst_error(p, lo)
    except NonFiniteError:
        raise NonFiniteError(f"{who}: the polynomial of coefficients overflows float64 on [lo, 1]") from None


def _worst_error(p, lo):
    x = np.geomspace(lo, 1.0, 100001)
    e = np.abs(p(x) - 1.0)
    best = float(e.max())
    interior = np.flatnonzero((e[1:-1] >= e[:-2]) & (e[1:-1] >= e[2:])) + 1
    for i in interior[np.argsort(e[interior])[::-1][:10]]:
        left, right = x[i - 1], x[i + 1]
        for _ in range(2):
            xs = np.linspace(left, right, 2001)
            es = np.abs(p(xs) - 1.0)
            j = int(np.argmax(es))
            best = max(best, float(es[j]))
            left, right = xs[max(j - 1, 0)], xs[min(j + 1, xs.size - 1)]
    return best


# ---------------------------------------------------------------------------------------------------------
# Designing a schedule: the Polar Express construction.

#: The cushion of the published Polar Express table (their ``cushion=0.02407327424182761``): the ℓ whose
#: minimax quintic on ``[ℓ, 1]`` has the error ``E = 9/11``, i.e. maps ``[ℓ, 1]`` onto an interval of ratio
#: ``(1 − E)/(1 + E) = 1/10`` (``tests/test_ns_design.py`` finds it as that root).
_PE_CUSHION = 0.02407327424182761

#: The safety factor of the published table: every row but the last is ``p_t(x / 1.01)``.
_PE_SAFETY = 1.01

#: ``(a, b, c)`` of ``p0(t) = (15t − 10t³ + 3t⁵)/8`` and ``(3t − t³)/2``: the odd polynomials with ``p0(1) = 1``
#: and as many vanishing derivatives at 1 as the degree allows, the minimax polynomials of ``[m(1 − k),
#: m(1 + k)]`` as ``k → 0`` (in ``x/m``).
_P0 = {3: (1.5, -0.5, 0.0), 5: (1.875, -1.25, 0.375)}

#: Below this relative half-width ``k`` of ``[ℓ, u]`` the minimax quintic and ``p0(x/m)`` differ by
#: ``O(k²)`` in each coefficient, below float64's resolution: the latter is used.
_K_LIMIT = 2.0 ** -27

_REMEZ_ITERATIONS = 50

#: The smallest ``sigma_min``: a subnormal one would be rounded to a few bits in ``p(σ_min)``.
_TINY = float(np.finfo(np.float64).tiny)

#: The smallest ``max(ℓ, cushion·u)/u`` of the first step: its minimax polynomial sends ``ℓ`` and ``u`` (cubic)
#: or ``ℓ`` and ``r`` (quintic) to ``1 − E``, a few times ``ℓ/u``, which must stay far above the rounding of
#: ``p`` (1e-16 times its coefficients), or the float64 table sends them to either sign.
_RATIO_MIN = 1e-10


def design_ns_coefficients(steps, sigma_min, sigma_max=1.0, degree=5, safety=None, cushion=None,
                           return_bound=False):
    """A Newton–Schulz schedule by the Polar Express construction (Amsel, Persson, Musco & Gower 2025,
    "The Polar Express: Optimal Matrix Sign Methods and Their Application to the Muon Algorithm",
    arXiv:2505.16932): step ``t`` is the odd polynomial of the given degree closest to 1 on the interval
    the singular values are known to lie in, and the next interval is its image.

    .. math::  p_t = \\arg\\min_{p \\text{ odd}, \\deg p \\le d} \\; \\max_{x \\in [\\ell_t, u_t]} |p(x) - 1|,
               \\qquad [\\ell_{t+1}, u_{t+1}] = p_t([\\ell_t, u_t]),
               \\qquad [\\ell_1, u_1] = [\\sigma_{\\min}, \\sigma_{\\max}]

    The greedy choice is optimal for the whole composition (their Theorem 4.1): no ``T`` odd polynomials of
    degree ``d`` map ``[σ_min, σ_max]`` closer to 1.

    **Equioscillation** (Chebyshev's theorem on the Haar space ``span{x, x³, ..., x^d}`` of ``(0, ∞)``, of
    dimension ``n = (d + 1)/2``): ``p`` is the minimax polynomial iff ``p − 1`` attains ``±E`` with
    alternating signs at ``n + 1`` points of ``[ℓ, u]`` -- for ``d = 5`` at ``ℓ`` (``p = 1 − E``), the two
    critical points ``q < r`` (``1 + E``, ``1 − E``) and ``u`` (``1 + E``); the image of ``[ℓ, u]`` is then
    ``[1 − E, 1 + E]``. The cubic (``d = 3``; ``ℓ, q, u``) has the closed form
    ``q² = (ℓ² + ℓu + u²)/3`` (from ``p(ℓ) = p(u)``), ``p(x) = β(3x/q − x³/q³)/2`` with
    ``β = 1 + E = 4/(2 + ℓu(ℓ + u)/q³)``; the quintic is found by the Remez exchange (solve for ``p`` and
    ``E`` on four reference points, move the inner two to the critical points of ``p``, repeat).

    **The published table's modifications** (for bfloat16; both reproduced by the defaults):

    - *cushion*: step ``t`` is designed on ``[max(ℓ_t, cushion·u_t), u_t]`` and, when the cushion is
      active, rescaled so that its image of ``[ℓ_t, u_t]`` is centred on 1 (``min + max = 2``). The minimax
      polynomial of a tiny ``ℓ_t`` sends ``ℓ_t`` and its inner minimum ``r`` to ``1 − E ≈ 0``, where
      rounding decides the sign; with the paper's cushion the minimum on ``[cushion·u, u]`` is a tenth of
      the maximum.
    - *safety*: every row but the last becomes ``p_t(x/s)``, i.e. ``(a/s, b/s³, c/s⁵)``, after the design
      (the intervals are those of the undivided polynomials), so that singular values a little above
      ``u_t`` (rounding) are not sent far above 1.

    ``design_ns_coefficients(8, 1e-3)`` is the paper's table (:data:`NS_COEFFICIENTS` ``["polar_express"]``):
    rows 1–6 and 8 to their printed digits (1e-14), row 7 to 3e-11 (their rounding, see Notes).

    Parameters
    ----------
    steps : int in [1, MAX_ITERATIONS]
        Number of rows (steps of the iteration).
    sigma_min : float in [2.2e-308, sigma_max)
        Smallest singular value to be mapped near 1 (a normal float64), of the *normalized* input
        (:func:`newton_schulz` divides by ``‖A‖_F``; its singular values lie in ``(0, 1]``). Below
        ``1e-10·sigma_max`` only with a cushion of at least 1e-10 (the default for degree 5): the first
        minimax polynomial would send points of the interval to ``1 − E ≈ 5·sigma_min/sigma_max``, which
        the rounding of its coefficients swamps (1e-16 of them, against ``5e-10`` here).
    sigma_max : float in (sigma_min, 1]
        Largest one (1: anything ``‖A‖_F`` normalizes).
    degree : {3, 5}
        Degree of each step's polynomial (``c = 0`` in every row for 3).
    safety : float >= 1 or None
        The factor ``s`` above; 1 turns it off. ``None``: the paper's 1.01 for ``degree=5``, 1 for
        ``degree=3`` (a converged cubic divided by ``s`` is off by ``1.5(1 − 1/s)²`` = 1.5e-4, which the last
        row only squares: 3.4e-8 would be the best bound).
    cushion : float in [0, 1) or None
        The relative floor above; 0 turns it off. ``None``: the paper's 0.02407327424182761 for
        ``degree=5``, 0 for ``degree=3`` (there is no published cubic table; see ``sigma_min``).
    return_bound : bool
        Also return the worst-case error.

    Returns
    -------
    table : (steps, 3) float64 ndarray
        Rows ``(a, b, c)``, ``p_t(x) = ax + bx³ + cx⁵``. Pass it as
        ``newton_schulz(A, steps=None, coefficients=table)``: ``steps=None`` runs every row (the default
        ``steps=5`` would run only the first five).
    bound : float
        Only with ``return_bound=True``: ``max |p(σ) − 1|`` over ``σ ∈ [sigma_min, sigma_max]`` for the
        composition ``p`` of the returned rows (safety included), computed exactly as the image of the
        interval under each step in turn (ends and critical points), to rounding (about 1e-16). For
        ``sigma_max = 1`` it is ``ns_worst_error(table, lo=sigma_min)`` (:func:`ns_worst_error` finds it on
        a grid).

    Raises
    ------
    TypeError, ValueError
        A bad ``steps``, ``sigma_min``, ``sigma_max``, ``degree``, ``safety``, ``cushion`` or ``return_bound``.
    NonFiniteError
        When the first row overflows float64 (``sigma_max`` below about 1e-61: its coefficients scale as
        ``1/sigma_max^(2j+1)``).

    Notes
    -----
    Where the authors' code (the paper's listing and https://github.com/NoahAmsel/PolarExpress) differs:

    - Their Remez solves for ``(a, b, c)`` directly; when ``ℓ/u → 1`` that 4 x 4 system has condition
      ``~1/(1 − ℓ/u)²`` and the error ``E ~ (1 − ℓ/u)³`` drowns in the rounding of ``p − 1``. Here the
      unknown is the correction to ``p0(x/m)`` (``m`` the centre of ``[ℓ, u]``, ``p0`` the limit polynomial
      ``(15t − 10t³ + 3t⁵)/8``) in the variable ``s ∈ [−1, 1]`` of the interval, with ``1 − p0`` in its
      factored form ``−τ³(20 + 15τ + 3τ²)/8``, ``τ = x/m − 1``: the coefficients are accurate to a few units
      of rounding at every width. Their printed row 7 (``ℓ/u = 0.9976``) differs from a 50-digit evaluation
      of the construction by up to 2.5e-11 (relative); ours by about 1e-15.
    - For ``ℓ/u ≥ 1 − 5e-6`` their code returns ``p0(x/u)``; here ``p0(x/m)``, and only for a relative
      half-width ``(u − ℓ)/(u + ℓ) ≤ 2^-27``, where it is the minimax polynomial to rounding. Their last row
      ``(1.875, −1.25, 0.375)`` is ``p0``.
    - They evaluate ``ℓ_{t+1} = p_t(ℓ_t)`` and take ``u_{t+1} = 2 − ℓ_{t+1}``; here ``[1 − E, 1 + E]`` with
      the exchange's ``E`` (``p_t(ℓ_t)`` where ``1 − E`` would cancel: ``E >= 1/2`` or a cushioned step), the
      same numbers in exact arithmetic. They recentre every step (the identity without the cushion); here
      only cushioned ones.
    - The repository's current ``optimal_composition`` applies the safety factor inside the loop (the next
      interval is the divided polynomial's ``p(ℓ)`` and ``2 − p(ℓ)``) and defaults to ``cushion=0.02``, 10
      steps; its README, ``polar_express/basic.py`` and the paper publish the table built as here (safety
      after the design, cushion 0.02407327424182761, 8 rows).

    :func:`newton_schulz` normalizes a table by ``‖A‖_F + eps`` (κ = 1), the named ``"polar_express"`` by
    ``1.01·‖A‖_F + eps`` (their code's margin for bfloat16's norm): with float32/float64 the singular values
    of the normalized input lie in ``(0, 1]`` either way.
    """
    who = "design_ns_coefficients"
    steps = _check_steps(who, steps)
    sigma_min = check_real(who, "sigma_min", sigma_min, _TINY)
    sigma_max = check_real(who, "sigma_max", sigma_max, 0.0, 1.0, lo_open=True)
    if sigma_min >= sigma_max:
        raise ValueError(f"{who}: sigma_min must be < sigma_max, got sigma_min={sigma_min!r} and "
                         f"sigma_max={sigma_max!r}")
    degree = check_choice(who, "degree", check_int(who, "degree", degree), (3, 5))
    if safety is None:
        safety = _PE_SAFETY if degree == 5 else 1.0
    safety = check_real(who, "safety", safety, 1.0)
    if cushion is None:
        cushion = _PE_CUSHION if degree == 5 else 0.0
    cushion = check_real(who, "cushion", cushion, 0.0, 1.0, hi_open=True)
    return_bound = check_bool(who, "return_bound", return_bound)
    if max(sigma_min, cushion * sigma_max) < _RATIO_MIN * sigma_max:
        raise ValueError(f"{who}: sigma_min / sigma_max must be >= {_RATIO_MIN:g} (or cushion >= it), got "
                         f"sigma_min={sigma_min!r}, sigma_max={sigma_max!r} and cushion={cushion!r} (the first "
                         f"polynomial would send part of the interval to 1 − E ~ sigma_min / sigma_max, "
                         f"below the rounding of its own coefficients)")

    rows = _composition(steps, sigma_min / sigma_max, degree, cushion)      # designed on [ℓ/u, 1]
    powers = np.array([1.0, 3.0, 5.0])
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        rows[0] /= sigma_max ** powers                                      # p_1(x / sigma_max)
        rows[:-1] /= safety ** powers                                       # p_t(x / s), as the paper
    if not np.isfinite(rows).all():
        raise NonFiniteError(f"{who}: the first row overflows float64 (its coefficients scale as "
                             f"1/sigma_max^(1, 3, 5)); sigma_max={sigma_max!r} is too small")
    if not return_bound:
        return rows
    lo, hi = sigma_min, sigma_max
    for row in rows:
        lo, hi = _image(row, lo, hi)
    return rows, max(1.0 - lo, hi - 1.0)


def _composition(steps, lo, degree, cushion):
    """The rows of :func:`design_ns_coefficients` on ``[lo, 1]`` before the safety factor. A step maps
    ``[ℓ, u]`` onto ``[1 − E, 1 + E]``, a cushioned one onto ``[p(ℓ), 1 + E]`` before it is centred; ``p`` is
    evaluated only where it does not cancel (``p(ℓ)`` for ``E >= 1/2``, never at ``u``)."""
    hi = 1.0
    rows = np.empty((steps, 3))
    for t in range(steps):
        cushioned = cushion * hi > lo
        row, E = _minimax(max(lo, cushion * hi), hi, degree)
        if cushioned or E >= 0.5:
            p_lo = lo * (row[0] + lo * lo * (row[1] + row[2] * lo * lo))
        else:
            p_lo = 1.0 - E
        centre = 2.0 / (p_lo + 1.0 + E) if cushioned else 1.0     # p([ℓ, u]) centred on 1
        rows[t] = row * centre
        lo, hi = p_lo * centre, (1.0 + E) * centre
    return rows


def _image(row, lo, hi):
    """``(min, max)`` of ``p(x) = ax + bx³ + cx⁵`` over ``[lo, hi]``: at the ends or where
    ``p'(x) = a + 3bx² + 5cx⁴ = 0``, ``x = ±√y``. The real part of a complex pair of roots ``y`` is taken
    too: an extra point of the interval cannot widen the range, and a near-double root is never missed."""
    a, b, c = row
    y = np.roots([5.0 * c, 3.0 * b, a]).real                # np.roots drops a leading zero (the cubic)
    r = np.sqrt(y[y > 0])
    x = np.concatenate([[lo, hi], r, -r])
    x = x[(x >= lo) & (x <= hi)]
    v = x * (a + x * x * (b + c * x * x))
    return float(v.min()), float(v.max())


def _minimax(lo, hi, degree):
    """``((a, b, c), E)``: the odd polynomial of ``degree`` (3 or 5) minimizing ``E = max |p − 1|`` on
    ``[lo, hi]``, ``0 <= lo < hi``, and that ``E``."""
    return _minimax_cubic(lo, hi) if degree == 3 else _minimax_quintic(lo, hi)


def _minimax_cubic(lo, hi):
    """The closed form: ``q² = (ℓ² + ℓu + u²)/3``, ``β = 1 + E = 4/(2 + z)`` with ``z = ℓu(ℓ + u)/q³``,
    ``p = β(3x/q − x³/q³)/2``."""
    alpha = 1.0 / np.sqrt((lo * lo + lo * hi + hi * hi) / 3.0)         # 1/q
    z = alpha ** 3 * lo * hi * (lo + hi)
    beta = 4.0 / (2.0 + z)
    return np.array([1.5 * alpha * beta, -0.5 * alpha ** 3 * beta, 0.0]), (2.0 - z) / (2.0 + z)


def _minimax_quintic(lo, hi):
    """The Remez exchange for ``p(x) = p0(x/m) + (x/m)(d0 + d1 w + d2 w²)`` on ``x = m(1 + ks)``,
    ``s ∈ [−1, 1]`` (``m, mk`` the centre and half-width, ``w = (x² − m²)/(2m²k)``): the unknowns
    ``d, E`` and the error ``p − 1 = Σ dⱼ (x/m) wʲ − (1 − p0(x/m))`` are small exactly when ``E`` is, so the
    exchange resolves them at every width (see Notes of :func:`design_ns_coefficients`)."""
    m, k = (lo + hi) / 2.0, (hi - lo) / (hi + lo)
    a0, b0, c0 = _P0[5]
    if k <= _K_LIMIT:                                            # |p0(x/m) − 1| <= its value at τ = k
        return np.array([a0 / m, b0 / m ** 3, c0 / m ** 5]), k ** 3 * (20.0 + 15.0 * k + 3.0 * k * k) / 8.0
    s = np.polynomial.Polynomial([0.0, 1.0])
    tau = k * s                                                  # x/m − 1
    w = s * (1.0 + 0.5 * k * s)                                  # (x² − m²)/(2m²k)
    basis = [(1.0 + tau) * w ** j for j in range(3)]             # (x/m) wʲ
    gap = -tau ** 3 * (20.0 + 15.0 * tau + 3.0 * tau ** 2) / 8.0  # 1 − p0(x/m)
    ref = np.array([-1.0, -0.5, 0.5, 1.0])                       # the extrema of T₃: exact as k → 0
    sign = np.array([1.0, -1.0, 1.0, -1.0])                      # p − 1 = −E at ℓ, +E at q, ...
    E_old = np.inf
    for _ in range(_REMEZ_ITERATIONS):
        V = np.column_stack([B(ref) for B in basis] + [sign])
        d0, d1, d2, E = np.linalg.solve(V, gap(ref))
        err = d0 * basis[0] + d1 * basis[1] + d2 * basis[2] - gap   # p − 1 in s
        crit = err.deriv().roots()
        crit = np.sort(crit[(crit.imag == 0) & (np.abs(crit.real) < 1.0)].real)
        if crit.size != 2:
            raise ValueError(f"design_ns_coefficients: the Remez exchange lost its reference on "
                             f"[{lo!r}, {hi!r}] ({crit.size} interior extrema)")
        ref = np.array([-1.0, crit[0], crit[1], 1.0])
        if abs(E - E_old) <= 4 * np.finfo(float).eps * abs(E):
            break
        E_old = E
    else:
        raise ValueError(f"design_ns_coefficients: the Remez exchange did not converge on [{lo!r}, {hi!r}]")
    g0 = d0 - d1 / (2 * k) + d2 / (4 * k * k)                    # (x/m)(g0 + g1 x² + g2 x⁴)
    g1 = (d1 - d2 / k) / (2 * m * m * k)
    g2 = d2 / (4 * m ** 4 * k * k)
    return np.array([(a0 + g0) / m, b0 / m ** 3 + g1 / m, c0 / m ** 5 + g2 / m]), abs(E)


# ---------------------------------------------------------------------------------------------------------
# Björck and the Parseval retraction.

def bjorck(A, steps=15, beta=0.5):
    """Björck–Bowie orthonormalization (Björck & Bowie 1971; the ``bjorck_orthonormalize`` of Anil, Lucas &
    Grosse 2019, "Sorting out Lipschitz function approximation"):

    .. math::  W_0 = \\frac{A}{\\lVert A \\rVert_F}, \\qquad
               W_{t+1} = (1 + \\beta) W_t - \\beta\\, W_t W_t^\\top W_t,

    which acts on each singular value as ``σ ↦ (1 + β)σ − βσ³`` and converges to the polar factor
    ``polar(A) = U Vᵀ`` for ``0 < β < 1`` (quadratically for β = 1/2, the ``"cubic"`` Newton–Schulz) when
    every singular value of ``W_0`` lies in ``(0, √((2 + β)/β))`` -- here ``(0, 1]``.

    Scaling: ``‖A‖_F`` bounds ``σ_max`` from above and is smooth (so the unrolled gradient is exact
    everywhere but at ``A = 0``); the tighter ``sqrt(‖AᵀA‖_1)`` is a max of absolute values, kinked, and not
    used. A zero matrix gives zeros. Wide inputs are iterated with ``W Wᵀ``, tall ones transposed (the
    smaller Gram matrix either way; the map is the same).

    Parameters
    ----------
    A : (..., m, n) float array
        Any representable scale (scale-invariant; module docstring).
    steps : int in [1, MAX_ITERATIONS]
    beta : float > 0

    Returns
    -------
    (..., m, n) array, dtype of ``A``

    Raises ``TypeError``/``ValueError`` for a bad argument, ``NonFiniteError`` when the iteration
    overflows (``β`` far beyond 1 makes it diverge).
    """
    who = "bjorck"
    xp = _check_array(who, A)
    steps = _check_steps(who, steps)
    beta = check_real(who, "beta", beta, 0.0, lo_open=True)
    Aw, tall = _wide(A)
    X, _, _, _ = _normalized(xp, Aw, 1.0, 0.0, _norm_exponent(xp, Aw, 0.0))
    with np.errstate(over="ignore", invalid="ignore"):
        Y = _iterate(X, [(1.0 + beta, -beta, 0.0)] * steps)
    return _unwide(xp, _overflow(who, Y), tall)


def bjorck_vjp(A, grad_out, steps=15, beta=0.5):
    """Gradient of ``<grad_out, bjorck(A, steps, beta)>`` w.r.t. ``A``, unrolled through every step and the
    ``‖A‖_F`` scaling.

    Parameters
    ----------
    A, grad_out : (..., m, n) float arrays
    steps, beta : as given to :func:`bjorck`

    Returns
    -------
    (..., m, n) array, dtype of ``A``
    """
    who = "bjorck_vjp"
    xp = _check_array(who, A)
    gbar = _check_grad(who, A, grad_out)
    steps = _check_steps(who, steps)
    beta = check_real(who, "beta", beta, 0.0, lo_open=True)
    return _unrolled_vjp(who, xp, A, gbar, [(1.0 + beta, -beta, 0.0)] * steps, 1.0, 0.0)


def parseval_retraction(W, beta=1e-3):
    """One Parseval-network retraction step (Cissé, Bojanowski, Grave, Dauphin & Usunier 2017, "Parseval
    Networks: Improving Robustness to Adversarial Examples"):

    .. math::  W \\leftarrow (1 + \\beta) W - \\beta\\, W W^\\top W

    applied after each gradient step; it pulls the singular values towards 1 without any normalization.
    The product is formed through the smaller Gram matrix (``(WWᵀ)W`` for wide, ``W(WᵀW)`` for tall).

    Parameters
    ----------
    W : (..., m, n) float array
        A matrix or a batch (last two axes). For a conv weight pass ``W.reshape(out, -1)`` (the paper's
        view: rows are the filters) and reshape the result back.
    beta : float >= 0
        The paper uses ``β = 3e-4`` to ``1e-3``.

    Returns
    -------
    (..., m, n) array, dtype of ``W``

    Raises ``TypeError``/``ValueError`` for a bad ``W`` or ``beta``; ``NonFiniteError`` when the result
    overflows (``β·σ_max³`` beyond the dtype's range: ``|W|`` near 1e100 in float64, 1e12 in float32 --
    the map is not scale-invariant).
    """
    who = "parseval_retraction"
    xp = _check_array(who, W, "W")
    beta = check_real(who, "beta", beta, 0.0)
    Ww, tall = _wide(W)
    X = xp.array(Ww, order="C", copy=True)
    with np.errstate(over="ignore", invalid="ignore"):
        Y = _unwide(xp, _iterate(X, [(1.0 + beta, -beta, 0.0)]), tall)
    if beta == 0.0 and not bool(xp.isfinite(Y).all()):
        return xp.array(W, copy=True)                          # (1 + 0)W − 0·WWᵀW = W; WWᵀ overflowed
    return _overflow(who, Y, "W")


def parseval_retraction_vjp(W, grad_out, beta=1e-3):
    """Gradient of ``<grad_out, parseval_retraction(W, beta)>`` w.r.t. ``W``:
    ``(1 + β)Ḡ − β(ḠWᵀW + WḠᵀW + WWᵀḠ)``.

    Returns
    -------
    (..., m, n) array, dtype of ``W``

    ``grad_out``: exactly ``W``'s shape and dtype, finite. ``NonFiniteError`` when the gradient overflows.
    """
    who = "parseval_retraction_vjp"
    xp = _check_array(who, W, "W")
    gbar = _check_grad(who, W, grad_out)
    beta = check_real(who, "beta", beta, 0.0)
    Ww, tall = _wide(W)
    with np.errstate(over="ignore", invalid="ignore"):
        g = _iterate_vjp([Ww], [(1.0 + beta, -beta, 0.0)], mT(gbar) if tall else gbar)
    if beta == 0.0 and not bool(xp.isfinite(g).all()):
        return xp.array(grad_out, copy=True)                   # the map is the identity
    return _overflow(who, _unwide(xp, g, tall).astype(W.dtype, copy=False), "W")


# ---------------------------------------------------------------------------------------------------------
# Spectral normalization.

def _power(xp, M, u, n_iter, eps):
    """Miyato's loop: ``v = normalize(Mᵀu)``, ``u = normalize(Mv)``, ``n_iter`` times (PyTorch's
    ``F.normalize``: ``x / max(‖x‖, eps)``; ``eps`` here is relative to ``max|M|``, see
    :func:`_spectral_setup`)."""
    v = None
    for _ in range(n_iter):
        v = M.T @ u
        v /= max(float(xp.sqrt(xp.vdot(v, v))), eps)
        u = M @ v
        u /= max(float(xp.sqrt(xp.vdot(u, u))), eps)
    return u, v


#: The largest ``eps`` of :func:`spectral_normalize`: a floor ``max(‖x‖, eps)`` above it would stop
#: normalizing the power iteration's vectors of an ordinary ``W`` (``max|W|`` ~ 1) and bias σ̂.
_SN_EPS_MAX = 1e-3


def _spectral_setup(who, W, u, n_iter, eps, rng, need_u=False, grad_out=None):
    """Validate, run the power iteration; ``(xp, W', M', u, v, σ̂')`` with ``W' = W·2^-e`` (``e = 0``, no
    copy, for ``max|W|`` inside the window of ``ortho._common``) and ``σ̂'`` its estimate, so that
    ``W / σ̂ = W' / σ̂'``, and ``e``.

    The map is scale-invariant: the floors ``max(‖x‖, eps)`` of the loop use ``eps·2^e`` (``2^e`` the power
    of two just above ``max|W|``), i.e. they are what PyTorch's would be on ``W / 2^e``; the input ``u`` is
    normalized with the plain ``eps``. For ``max|W|`` of order 1 this is PyTorch's loop; a tiny ``W`` (say
    ``1e-13``, below ``eps``) no longer stalls it."""
    xp = _check_array(who, W, "W")
    if grad_out is not None:
        _check_grad(who, W, grad_out)
    n_iter = _check_steps(who, n_iter, "n_iter")
    eps = check_real(who, "eps", eps, 0.0, _SN_EPS_MAX)
    seeded = isinstance(rng, (int, np.integer)) and not isinstance(rng, (bool, np.bool_))
    gen = host_rng(rng, who=who) if rng is not None else None   # validated even when u is given (unused)
    out = W.shape[0]
    if u is None:
        if need_u and not seeded:
            raise ValueError(f"{who}: pass the u given to spectral_normalize (or the same integer seed as "
                             f"rng); with u=None and rng={rng!r} a new random u would be drawn")
        u = (gen if gen is not None else host_rng(None, who=who)).standard_normal(out)
    else:
        check_float(who, "u", u)
        if tuple(u.shape) != (out,):
            raise ValueError(f"{who}: u must be a real vector of shape ({out},) (W.shape[0]), got shape "
                             f"{tuple(u.shape)} and dtype {u.dtype}")
        u = np.asarray(u.get() if hasattr(u, "get") else u)
        check_finite(who, "u", u, np)
    u = xp.asarray(u, dtype=W.dtype)
    u = u / max(float(xp.sqrt(xp.vdot(u, u))), eps)
    m = max_abs(xp, W)
    e = scale_exponent(xp, W, m=m)
    if e:
        W = ldexp(xp, W, -e)
        floor = eps
    else:
        with np.errstate(over="ignore"):
            floor = float(np.ldexp(eps, np.frexp(m)[1])) if m > 0 else eps
    M = W.reshape(out, -1)
    u, v = _power(xp, M, u, n_iter, floor)
    sigma = xp.vdot(u, M @ v)
    if not float(sigma) > 0.0:                  # = ‖M v‖ >= 0; 0 would give W / 0 = Inf or NaN
        raise ValueError(f"{who}: the power-iteration estimate of the spectral norm of W is 0 (W is zero, or u "
                         f"is zero or orthogonal to the column space of W.reshape(out, -1)); W / σ̂ is "
                         f"undefined")
    return xp, W, M, u, v, sigma, e


def spectral_normalize(W, u=None, n_iter=1, eps=1e-12, rng=None):
    """Spectral normalization (Miyato, Kataoka, Koyama & Yoshida 2018): ``W / σ̂`` with ``σ̂`` the
    power-iteration estimate of the largest singular value of ``M = W.reshape(out, -1)``.

    .. math::  v \\leftarrow \\frac{M^\\top u}{\\lVert M^\\top u \\rVert}, \\quad
               u \\leftarrow \\frac{M v}{\\lVert M v \\rVert} \\quad (n\\_iter \\text{ times}), \\qquad
               \\hat\\sigma = u^\\top M v

    Parameters
    ----------
    W : (out, ...) float array
        PyTorch layout (Linear ``(out, in)``, Conv2d ``(out, in, kh, kw)``), at least 2-D.
    u : (out,) array, optional
        The persistent left vector of the previous call; ``None`` draws ``N(0, 1)`` from ``host_rng(rng)``.
        Normalized before use (as PyTorch's buffer always is).
    n_iter : int in [1, MAX_ITERATIONS]
        Power iterations per call (PyTorch's ``n_power_iterations``, default 1).
    eps : float in [0, 1e-3]
        ``F.normalize``'s floor: ``x / max(‖x‖, eps)``, relative to ``max|W|`` (see Notes).
    rng : None, int >= 0 or numpy.random.Generator
        Only used when ``u`` is None (validated always).

    Returns
    -------
    W_sn : array like ``W``
    u_new : (out,) array, dtype of ``W``
        Pass it as ``u`` to the next call (the persistent buffer).

    Notes
    -----
    The loop order is Miyato's and the old ``torch.nn.utils.spectral_norm``'s (``v`` from ``u``, then
    ``u``); ``torch.nn.utils.parametrizations.spectral_norm`` keeps both buffers and updates ``u`` from
    the stored ``v`` first, so its σ̂ after one call differs until the iteration has converged.

    Scale-invariant: ``spectral_normalize(c·W) = spectral_normalize(W)`` for every representable scale
    ``c > 0`` (the loop's floors are relative to ``max|W|``: see :func:`_spectral_setup`; equal to
    PyTorch's for ``max|W|`` in ``[0.5, 1)``).

    Raises
    ------
    TypeError, ValueError
        A bad ``W``, ``u`` (a float32/float64 vector of shape ``(out,)``, finite), ``n_iter`` (an int in
        ``[1, MAX_ITERATIONS]``), ``eps`` or ``rng``; ``ValueError`` when ``σ̂ = 0`` (``W = 0``, or ``u``
        orthogonal to the column space of ``M``).
    NonFiniteError
        When ``W / σ̂`` overflows (``σ̂`` far below ``‖W‖``: an unconverged ``u`` nearly orthogonal to it).
    """
    who = "spectral_normalize"
    xp, W, M, u, v, sigma, _ = _spectral_setup(who, W, u, n_iter, eps, rng)
    with np.errstate(over="ignore"):
        Y = W / sigma
    return _overflow(who, Y, "W"), u


def spectral_normalize_vjp(W, grad_out, u=None, n_iter=1, eps=1e-12, rng=None):
    """Gradient of ``<grad_out, spectral_normalize(W, u, ...)[0]>`` w.r.t. ``W`` with ``u, v`` treated as
    constants, as PyTorch does in training mode (its ``_power_method`` runs under ``no_grad`` and the
    forward uses clones of the buffers):

    .. math::  \\bar W = \\frac{\\bar Y}{\\hat\\sigma} - \\frac{\\langle \\bar Y, W \\rangle}{\\hat\\sigma^2}\\,
               u v^\\top \\quad (\\text{reshaped to } W\\text{'s shape})

    This is the true derivative only where ``u, v`` are the exact top singular pair (the power iteration
    has converged); elsewhere it is PyTorch's (and Miyato's) surrogate, not the derivative through the
    loop.

    Parameters
    ----------
    W, grad_out : arrays like ``W``
    u, n_iter, eps, rng
        The same as given to :func:`spectral_normalize` (``u=None`` needs the same *integer* seed ``rng``).

    Returns
    -------
    array like ``W``
    """
    who = "spectral_normalize_vjp"
    xp, W, M, u, v, sigma, e = _spectral_setup(who, W, u, n_iter, eps, rng, need_u=True, grad_out=grad_out)
    gbar = grad_out
    with np.errstate(over="ignore", invalid="ignore"):
        coef = xp.vdot(gbar, W) / (sigma * sigma)
        g = gbar / sigma
        g -= (coef * xp.outer(u, v)).reshape(W.shape)
    return unscale_grad(who, xp, g.astype(W.dtype, copy=False), e, "W")

