"""How far a matrix is from orthogonal: the orthogonality metrics of the package, one per norm.

Each name says its norm; every other module (training logs, analysis, the maps' own checks, the Stiefel
optimizers, studies, benchmarks) calls these.

=================================  =====================================================  ==========  ======
function                           quantity                                               Gram        dtype
=================================  =====================================================  ==========  ======
:func:`orthogonality_error_2`      :math:`\\lVert Q^\\top Q - I\\rVert_2` (spectral norm)    smaller     float64
:func:`orthogonality_error_fro`    :math:`\\lVert W^\\top W - I\\rVert_F`                     columns     W's
:func:`orthogonality_error_rms`    :math:`\\lVert G - I_k\\rVert_F / \\sqrt{k}`               smaller     float64
=================================  =====================================================  ==========  ======

``_2`` and ``_fro`` take arrays of rank >= 2 (a batch of matrices: the largest error over the batch);
``_rms`` takes a weight ``(out, in, ...)`` seen as ``M = W.reshape(out, -1)`` (rows are the filters, the
README's "Layouts and flattening"), with ``gram="auto"`` the smaller Gram matrix (``M Mᵀ`` when
``out <= fan_in``, as the regularizers do). The RMS form is the one the training log records per epoch:
``e = 0`` exactly for orthonormal rows (or columns), and an orthogonal weight scaled by ``c`` has
``e = |c² − 1|``, whatever its size.

Failure model: a non-float, non-finite, empty or too-low-rank argument is a ``TypeError``/``ValueError``
naming the function; an error that overflows float64 (or ``W``'s dtype for ``_fro``) is a
:class:`~orthoref._checks.NonFiniteError`, except where the docstring says the result is rescaled.
"""
from __future__ import annotations

import math

import numpy as np

from .._checks import NonFiniteError, all_finite, check_array, check_choice, check_result
from ._common import float_ldexp, linalg_errors, pow2_rescale
from ._linalg import GRAMS, gram_matrix, mT, minus_identity, use_rows

__all__ = ["orthogonality_error_2", "orthogonality_error_fro", "orthogonality_error_rms"]


def orthogonality_error_2(Q) -> float:
    """``‖QᵀQ − I‖_2`` (spectral norm; the smaller Gram for wide ``Q``), computed in float64; the maximum
    over a batch.

    ``Q``: a finite float32/float64 array of at least 2 dimensions (``TypeError``/``ValueError``
    otherwise); ``NonFiniteError`` when the error overflows float64 (``|Q|`` beyond about 1e154).
    """
    who = "orthogonality_error_2"
    xp = check_array(who, Q, "Q")
    Q = Q.astype(xp.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        G = mT(Q) @ Q if Q.shape[-2] >= Q.shape[-1] else Q @ mT(Q)
        G = G - xp.eye(G.shape[-1])
        check_result(who, G, "QᵀQ", hint="rescale Q")
        with linalg_errors(who, "the SVD of QᵀQ − I did not converge (Q is too badly scaled)"):
            return float(xp.linalg.norm(G, ord=2, axis=(-2, -1)).max())


def orthogonality_error_fro(W) -> float:
    """``‖WᵀW − I‖_F`` (the largest over a batch), in ``W``'s dtype, as a Python float: the distance of a
    Stiefel point ``W`` (``(..., n, p)``, orthonormal columns) from the manifold.

    ``W``: a finite float32/float64 array of at least 2 dimensions (``TypeError``/``ValueError``);
    ``NonFiniteError`` when the error overflows ``W``'s dtype (``|W|`` near the square root of its maximum).
    """
    who = "orthogonality_error_fro"
    xp = check_array(who, W, "W")
    return fro_error(who, xp, W)


def fro_error(who, xp, W) -> float:
    """:func:`orthogonality_error_fro` of a checked ``W``, errors naming ``who`` (the Stiefel maps' own
    checks of their inputs)."""
    with np.errstate(over="ignore", invalid="ignore"):
        E = mT(W) @ W - xp.eye(W.shape[-1], dtype=W.dtype)
        err = xp.sqrt((E * E).sum(axis=(-2, -1))).max()
    return float(check_result(who, err, "‖WᵀW - I‖_F", hint="use float64 or rescale W"))


def orthogonality_error_rms(W, gram="auto") -> float:
    """``‖G − I‖_F / √k``: how far the weight is from having orthonormal rows (or columns).

    .. math::  e(W) = \\frac{\\lVert G - I_k \\rVert_F}{\\sqrt{k}}, \\qquad
               G = \\begin{cases} M M^\\top & \\text{rows} \\\\ M^\\top M & \\text{cols} \\end{cases}

    with ``M = W.reshape(out, -1)`` in float64. ``gram="auto"`` takes the smaller Gram matrix (``M Mᵀ`` when
    ``out <= fan_in``, as the regularizers do); it is the quantity :func:`orthoref.train.fit` logs per epoch.
    ``"rows"`` / ``"cols"`` force one Gram matrix; the larger one has ``k_big − k_small`` zero eigenvalues,
    so then ``e >= √(1 − k_small/k_big)``. ``e = 0`` exactly for a weight with orthonormal rows
    (``out <= fan_in``) or columns; an orthogonal weight scaled by ``c`` has ``e = |c² − 1|``. Where
    ``Σ (G − I)²`` overflows float64 but ``G`` does not, ``G − I`` is rescaled by a power of two first.

    Parameters
    ----------
    W : float array of rank >= 2
    gram : {"auto", "rows", "cols"}

    Returns
    -------
    float

    References
    ----------
    Bansal, Chen & Wang, "Can We Gain More from Orthogonality Regularizations in Training Deep CNNs?",
    NeurIPS 2018 (the soft-orthogonality penalty ``‖G − I‖²_F``).
    """
    who = "orthogonality_error_rms"
    xp = check_array(who, W, "W", min_ndim=2, what="(a weight (out, in, ...))")
    M = W.reshape(W.shape[0], -1).astype(xp.float64, copy=False)
    check_choice(who, "gram", gram, GRAMS)
    rows = use_rows(M, gram)
    with np.errstate(over="ignore", invalid="ignore"):
        G = minus_identity(gram_matrix(M, rows))
        e = float(xp.linalg.norm(G)) / math.sqrt(G.shape[0])
    if not math.isfinite(e):                        # ‖G − I‖² overflowed: try again with G − I rescaled
        e = _scaled_rms(who, xp, M, rows)
    return e


def _scaled_rms(who, xp, M, rows):
    """``‖G − I‖_F / √k`` where ``Σ (G − I)²`` overflows but ``G`` itself does not; ``NonFiniteError`` when
    ``G`` or the result overflows float64."""
    with np.errstate(over="ignore", invalid="ignore"):
        G = gram_matrix(M, rows)
    if not all_finite(xp, xp.diagonal(G)):         # |G_ij| <= max G_ii: the diagonal tells
        raise NonFiniteError(f"{who}: the Gram matrix of W overflows float64 (max |W| = "
                             f"{float(abs(M).max()):.3g}); rescale W")
    N, e = pow2_rescale(xp, minus_identity(G), 0, 0)
    r = float_ldexp(float(xp.sqrt((N * N).sum())) / math.sqrt(N.shape[0]), e)
    if not math.isfinite(r):
        raise NonFiniteError(f"{who}: ‖G − I‖_F overflows float64; rescale W")
    return r
