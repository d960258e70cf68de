"""Linear-algebra helpers shared across modules (``ortho``, ``nn.orthogonal``, ``regularizers``, ``analysis``):
the matrix transpose of the last two axes, the sign fix of a QR, a Haar-orthogonal matrix, the Gram matrix of
a weight and the per-step coefficient schedule of Newton–Schulz.

A weight ``W`` (``(out, in, ...)``) is seen as the matrix ``M = W.reshape(out, -1)``; its Gram matrix is
``M Mᵀ`` (rows) or ``Mᵀ M`` (cols), ``gram="auto"`` taking the smaller one (see :mod:`orthoref.regularizers`).
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from .._checks import MAX_ITERATIONS, check_int

__all__ = ["mT", "sign_fix", "haar", "GRAMS", "use_rows", "gram_matrix", "minus_identity", "NS_COEFFICIENTS",
           "ns_schedule"]


# ---------------------------------------------------------------------------------------------------------
# Matrices.

def mT(A):
    """``Aᵀ`` of the last two axes (a view)."""
    return A.swapaxes(-1, -2)


def sign_fix(Q, R):
    """``Q D, D R`` with ``D = diag(sign(diag R))`` (sign 0 taken as +1): the QR with ``diag R >= 0``."""
    xp = get_array_module(Q)
    d = xp.diagonal(R, axis1=-2, axis2=-1)
    s = xp.where(d < 0, -1.0, 1.0).astype(Q.dtype)
    return Q * s[..., None, :], R * s[..., :, None]


def haar(gen, n, dtype):
    """A Haar-distributed ``n x n`` orthogonal matrix (QR of a Gaussian with ``diag R > 0``), host RNG."""
    Q, R = np.linalg.qr(gen.standard_normal((n, n)))
    d = np.sign(np.diag(R))
    d[d == 0] = 1.0
    return (Q * d).astype(dtype)


# ---------------------------------------------------------------------------------------------------------
# Gram matrices of a weight matrix M = W.reshape(out, -1).

#: The choices of ``gram``: the smaller Gram matrix, ``M Mᵀ`` or ``Mᵀ M``.
GRAMS = ("auto", "rows", "cols")


def use_rows(M, gram):
    """True for the rows Gram ``M Mᵀ``, False for the cols Gram ``Mᵀ M``."""
    if gram == "auto":
        return M.shape[0] <= M.shape[1]
    return gram == "rows"


def gram_matrix(M, rows):
    """The Gram matrix (``M Mᵀ`` or ``Mᵀ M``): one GEMM. NumPy recognises ``A @ A.T`` and calls ``syrk``,
    computing one triangle and mirroring it, so ``G`` is exactly symmetric."""
    return M @ M.T if rows else M.T @ M


def minus_identity(G):
    """``G - I`` in place (G is a fresh square array; indexing works for any memory layout)."""
    d = get_array_module(G).arange(G.shape[0])
    G[d, d] -= 1
    return G


# ---------------------------------------------------------------------------------------------------------
# Newton–Schulz coefficient schedules (ortho.iterative, nn.orthogonal).

_PE_RAW = [  # Amsel, Persson, Musco & Gower 2025, "The Polar Express", arXiv:2505.16932, Algorithm 1
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
]

#: Newton–Schulz coefficient tables: name -> list of ``(a, b, c)`` rows, step ``t`` applies
#: ``p_t(σ) = aσ + bσ³ + cσ⁵`` to the singular values. A one-row table is applied at every step; a table
#: with ``m`` rows applies row ``t`` at step ``t`` and repeats its last row when ``steps > m``.
#:
#: - ``"cubic"``: the classical Newton–Schulz (Björck–Bowie) cubic ``(3/2, -1/2, 0)``; converges to the
#:   polar factor for singular values in ``(0, √3)``.
#: - ``"jordan"``: Keller Jordan's quintic of Muon (``zeropower_via_newtonschulz5``), ``(3.4445, -4.7750,
#:   2.0315)`` every step; it does not converge, singular values land in a band around ``[0.7, 1.2]``.
#: - ``"you"``: Jiacheng You's six-step table (integers in units of 1/1024).
#: - ``"polar_express"``: the eight-row table of Amsel et al. 2025 (arXiv:2505.16932, Algorithm 1; code
#:   https://github.com/NoahAmsel/PolarExpress), every row but the last divided by ``(1.01, 1.01³, 1.01⁵)``
#:   (their safety factor), the input normalized by ``‖X‖_F · 1.01 + 1e-7`` (see
#:   :func:`orthoref.ortho.newton_schulz`).
NS_COEFFICIENTS = {
    "cubic": [(1.5, -0.5, 0.0)],
    "jordan": [(3.4445, -4.7750, 2.0315)],
    "you": [(a / 1024, b / 1024, c / 1024) for a, b, c in [
        (3955, -8306, 5008), (3735, -6681, 3463), (3799, -6499, 3211),
        (4019, -6385, 2906), (2677, -3029, 1162), (2172, -1833, 682)]],
    "polar_express": [(a / 1.01, b / 1.01 ** 3, c / 1.01 ** 5) for a, b, c in _PE_RAW[:-1]] + [_PE_RAW[-1]],
}

# Normalization X = A / (κ ‖A‖_F + eps): κ = 1.01 for the Polar Express (their code), 1 otherwise.
_NORM_SCALE = {"polar_express": 1.01}
_DEFAULT_STEPS = 5


def _table(who, coefficients):
    """``(rows, κ)``: the coefficient rows as a list of float triples and the normalization scale."""
    if isinstance(coefficients, str):
        if coefficients not in NS_COEFFICIENTS:
            raise ValueError(f"{who}: coefficients must be one of {sorted(NS_COEFFICIENTS)} or a table of "
                             f"(a, b, c) rows, got {coefficients!r}")
        return [tuple(map(float, r)) for r in NS_COEFFICIENTS[coefficients]], _NORM_SCALE.get(coefficients, 1.0)
    try:
        T = np.asarray(coefficients.get() if hasattr(coefficients, "get") else coefficients)
    except Exception as exc:  # ragged lists
        raise ValueError(f"{who}: coefficients must be a name or an (m, 3) table of (a, b, c) rows, "
                         f"got {coefficients!r} ({exc})") from None
    if T.ndim == 1 and T.shape == (3,):
        T = T[None]
    if T.ndim != 2 or T.shape[1] != 3 or T.shape[0] == 0 or T.dtype.kind not in "fiu":
        raise ValueError(f"{who}: coefficients must be a name or a non-empty (m, 3) real table of (a, b, c) "
                         f"rows, got shape {T.shape} and dtype {T.dtype}")
    if not np.isfinite(T).all():
        raise ValueError(f"{who}: coefficients must be finite, got NaN or Inf in the table")
    if T.shape[0] > MAX_ITERATIONS:
        raise ValueError(f"{who}: coefficients must have at most {MAX_ITERATIONS} rows, got {T.shape[0]}")
    return [tuple(map(float, r)) for r in T.astype(np.float64)], 1.0


def ns_schedule(who, coefficients, steps):
    """``(rows, κ)``: the per-step rows, ``steps`` of them (None: the table's length, 5 for a one-row set),
    and the normalization scale κ. ``coefficients``: a name of :data:`NS_COEFFICIENTS` or an ``(m, 3)``
    table; ``steps``: an int in ``[1, MAX_ITERATIONS]`` (``ValueError``/``TypeError`` naming ``who``)."""
    rows, kappa = _table(who, coefficients)
    if steps is None:
        steps = _DEFAULT_STEPS if len(rows) == 1 else len(rows)
    steps = check_int(who, "steps", steps, 1, MAX_ITERATIONS)
    return [rows[min(t, len(rows) - 1)] for t in range(steps)], kappa
