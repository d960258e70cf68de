"""Argument checks shared by the math modules (regularizers, ortho): one wording for one mistake."""
from __future__ import annotations

from .backend import get_array_module

__all__ = ["all_finite", "check_array"]


def all_finite(xp, a) -> bool:
    """No NaN/Inf in ``a``: one reduction in the common case, the element-wise test only when it fails."""
    if bool(xp.isfinite(a.sum())):
        return True
    return bool(xp.isfinite(a).all())


def check_array(who, A, name="A", *, min_ndim=2, ndim=None, square=False, tall=False, what="(..., n, k)"):
    """Check a non-empty, finite float32/float64 array; return its array module.

    ``ndim``: a tuple of allowed ranks, else at least ``min_ndim``; ``square`` / ``tall``: conditions on the
    last two axes. Errors are ``TypeError`` / ``ValueError`` naming ``who``, the argument, what was expected
    and what came.
    """
    if not hasattr(A, "shape") or not hasattr(A, "dtype"):
        raise TypeError(f"{who}: {name} must be a float32 or float64 array, got {type(A).__name__}")
    if A.dtype.kind != "f":
        raise TypeError(f"{who}: {name} must be a float32 or float64 array, got dtype {A.dtype}")
    if ndim is not None and A.ndim not in ndim:
        allowed = " or ".join(f"{d}-D" for d in ndim)
        raise ValueError(f"{who}: {name} must be {allowed}, got {A.ndim}-D array of shape {tuple(A.shape)}")
    if ndim is None and A.ndim < min_ndim:
        raise ValueError(f"{who}: {name} must have at least {min_ndim} dimensions {what}, got shape "
                         f"{tuple(A.shape)}")
    if square and A.shape[-1] != A.shape[-2]:
        raise ValueError(f"{who}: {name} must be square (..., n, n), got shape {tuple(A.shape)}")
    if tall and A.shape[-2] < A.shape[-1]:
        raise ValueError(f"{who}: {name} must have shape (..., n, p) with n >= p (orthonormal columns), "
                         f"got shape {tuple(A.shape)}")
    if A.size == 0:
        raise ValueError(f"{who}: {name} must not be empty, got shape {tuple(A.shape)}")
    xp = get_array_module(A)
    if not all_finite(xp, A):
        raise ValueError(f"{who}: {name} must be finite, got NaN or Inf")
    return xp
