"""Helpers shared by the ``ortho`` modules (and ``regularizers``, ``init``, ``analysis``): exact power-of-two
rescaling for the scale-invariant maps and the translation of LAPACK failures into ``ValueError`` naming the
function and the argument.

Scale: a map with ``f(cA) = f(A)`` for every ``c > 0`` (QR, Gram–Schmidt, polar, Björck, Newton–Schulz with
``eps = 0``, spectral normalization) must work at any representable scale of ``A``. When ``max|A|`` lies
outside ``[2^-w, 2^w]`` (``w`` = :data:`_WINDOW`: 256 for float64, 32 for float32; their squares, sums of
squares and products stay normal there), the map runs on ``A·2^-e`` with ``max|A·2^-e|`` in ``[0.5, 1)``:
exact (a power of two, no rounding, subnormal inputs included), so the result is the one of ``A``. Inside
the window nothing is rescaled, so values on ordinary inputs are bit-identical to the unscaled code. The
VJP of a scale-invariant map scales as ``1/c``: it is computed on ``A·2^-e`` and multiplied by ``2^-e``
(:func:`unscale`), and a gradient that overflows then raises ``NonFiniteError``.

:func:`pow2_rescale` is the same exact rescaling with a window ``[2^lo, 2^hi]`` chosen by the caller
(the penalties, ``init``, ``analysis``); :func:`float_ldexp` scales a Python float back.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np

from .._checks import NonFiniteError, check_result

#: |log2 max|A|| beyond which a scale-invariant map rescales its input (per real dtype).
_WINDOW = {np.dtype(np.float32): 32, np.dtype(np.float64): 256}


def _real_dtype(a):
    return np.dtype(a.real.dtype) if np.dtype(a.dtype).kind == "c" else np.dtype(a.dtype)


def max_abs(xp, A) -> float:
    """``max|A|`` as a Python float (the modulus for complex ``A``, in complex-step mode). Real ``A``:
    ``max(A.max(), -A.min())``, two reductions without a temporary (3x faster than ``abs(A).max()``)."""
    if np.dtype(A.dtype).kind == "c":
        return float(xp.abs(A).max())
    return max(float(A.max()), -float(A.min()))


def scale_exponent(xp, A, floor=None, m=None) -> int:
    """``e`` with ``max|A·2^-e|`` in ``[0.5, 1)`` when ``max|A|`` is outside the window of ``A``'s dtype
    (or ``e`` is raised to ``floor``, for a map with an absolute ``eps``), else ``0`` (no rescaling).
    ``m``: ``max|A|`` when already known."""
    m = max_abs(xp, A) if m is None else m
    if m == 0.0:
        return 0
    e = math.frexp(m)[1]
    if floor is not None:
        e = max(e, floor)
    w = _WINDOW.get(_real_dtype(A), 256)
    return 0 if -w <= e <= w else e


def ldexp(xp, A, k):
    """``A·2^k`` exactly (up to the rounding of a subnormal result), in ``A``'s dtype; complex: by parts.
    Overflow gives ``inf`` silently: the caller checks its result."""
    if k == 0:
        return A
    with np.errstate(over="ignore", under="ignore"):
        if np.dtype(A.dtype).kind == "c":
            return xp.ldexp(A.real, k) + 1j * xp.ldexp(A.imag, k)
        return xp.ldexp(A, k).astype(A.dtype, copy=False)


def rescaled(xp, A, floor=None):
    """``(A·2^-e, e)`` (see :func:`scale_exponent`); ``(A, 0)`` inside the window."""
    e = scale_exponent(xp, A, floor)
    return (ldexp(xp, A, -e), e) if e else (A, 0)


def unscale_grad(who, xp, g, e, name="A"):
    """The gradient of a scale-invariant map at ``A`` from the one at ``A·2^-e``: ``g·2^-e``; then
    ``NonFiniteError`` when it (or ``g`` itself) is not finite."""
    g = ldexp(xp, g, -e)
    return check_result(who, g, "the gradient",
                        hint=f"it scales as 1/scale of {name}: use float64 or rescale {name} (and grad_out)")


def pow2_rescale(xp, A, lo=-400, hi=400):
    """``(A · 2**-e, e)`` with ``max |A · 2**-e|`` in ``[0.5, 1)`` when ``max |A|`` lies outside
    ``[2**lo, 2**hi]``, else ``(A, 0)`` untouched (so results on ordinary inputs stay bit-identical).

    Multiplying by a power of two is exact (no rounding; denormals scaled up are exact too), so a
    scale-invariant quantity computed from the rescaled array is the quantity of ``A`` itself, at any
    representable scale. A zero array and complex arrays (the complex-step mode) are returned as they are.
    Costs two reductions (``max``, ``min``), no temporary.
    """
    if A.dtype.kind == "c" or A.size == 0:
        return A, 0
    amax = max_abs(xp, A)
    if amax == 0.0 or math.ldexp(1.0, lo) <= amax <= math.ldexp(1.0, hi):
        return A, 0
    e = math.frexp(amax)[1]
    return xp.ldexp(A, -e), e


def float_ldexp(x, e):
    """``x · 2**e`` as a Python float, ``±inf`` on overflow (``math.ldexp`` raises instead)."""
    try:
        return math.ldexp(float(x), e)
    except OverflowError:
        return math.copysign(math.inf, float(x))


@contextlib.contextmanager
def linalg_errors(who, what):
    """Turn NumPy/SciPy's ``LinAlgError`` raised inside the block into ``ValueError(f"{who}: {what}")``:
    ``what`` names the argument and the failure (no LAPACK wording reaches the caller)."""
    try:
        yield
    except np.linalg.LinAlgError:
        raise ValueError(f"{who}: {what}") from None


__all__ = ["NonFiniteError", "float_ldexp", "ldexp", "linalg_errors", "max_abs", "pow2_rescale", "rescaled",
           "scale_exponent", "unscale_grad"]
