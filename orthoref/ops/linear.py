"""Affine map ``y = x Wᵀ + b`` (PyTorch's ``F.linear``; weight layout ``(out_features, in_features)``)."""
from __future__ import annotations

import math

import numpy as np

from .._checks import FLOAT_DTYPES, check_floats, check_ndim
from ..backend import get_array_module
from ._contract import (check_grad_meta, check_grads, check_output, check_same_dtype, finite_handoff_sq,
                        handoff_sq)

__all__ = ["linear_forward", "linear_backward"]


def linear_forward(x, w, b=None):
    """``y = x Wᵀ + b``.

    Parameters
    ----------
    x : (..., in_features) array
    w : (out_features, in_features) array
    b : (out_features,) array or None

    Returns
    -------
    y : (..., out_features) array
    cache : what ``linear_backward`` needs

    Raises
    ------
    TypeError, ValueError
        A non-float argument, arrays of different dtypes, shapes that do not fit, NaN/Inf in ``x``, ``w``
        or ``b`` (read off ``y``: one reduction over the output rather than one per input).
    NonFiniteError
        (a ValueError) NaN/Inf in an input, or an output that overflows from finite inputs.
    """
    return linear_forward_as(x, w, b, "linear")


def linear_forward_as(x, w, b, who):
    """``linear_forward`` with the caller's names in error messages (the layers)."""
    _check_linear(x, w, b, who)
    with np.errstate(invalid="ignore", over="ignore"):    # NaN/Inf/overflow: the ValueError below
        y = x @ w.T
        if b is not None:
            y += b
    check_output(who, y, ("x", x), ("w (weight)", w), ("b (bias)", b), note=True)
    return y, (x, w, b is not None, handoff_sq(x))        # handoff_sq: a bound on Σx² from Sequential


def _check_linear(x, w, b, who="linear"):
    if (type(x) is np.ndarray and type(w) is np.ndarray and x.dtype is w.dtype and x.dtype in FLOAT_DTYPES
            and w.ndim == 2 and x.ndim >= 1 and x.shape[-1] == w.shape[1]
            and (b is None or (type(b) is np.ndarray and b.dtype is w.dtype and b.shape == w.shape[:1]))):
        return                                      # the common case, without a call
    check_floats(who, ("x", x), ("w (weight)", w), ("b (bias)", b), finite=False)
    check_same_dtype(who, ("x", x), ("w (weight)", w), ("b (bias)", b))
    check_ndim(who, "w (weight)", w, (2,))
    if x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"{who}: x must have shape (..., in_features={w.shape[1]}) for w (weight) of shape "
                         f"{tuple(w.shape)}, got shape {tuple(x.shape)}")
    if b is not None and tuple(b.shape) != (w.shape[0],):
        raise ValueError(f"{who}: b (bias) must have shape ({w.shape[0]},) for w (weight) of shape "
                         f"{tuple(w.shape)}, got shape {tuple(b.shape)}")


def linear_backward(dy, cache, need_dx=True):
    """Gradients of ``y = x Wᵀ + b``.

    .. math::  \\bar x = \\bar y W, \\qquad \\bar W = \\bar y^\\top x, \\qquad \\bar b = \\textstyle\\sum_n \\bar y_n

    Returns ``(dx, dw, db)``; ``dx`` is ``None`` when ``need_dx`` is False, ``db`` when there is no bias.
    Leading batch axes of ``x`` are flattened for one GEMM each.

    Raises ``ValueError``/``TypeError`` unless ``dy`` has exactly the shape and dtype of the forward's ``y``,
    ``NonFiniteError`` for NaN/Inf in ``dy`` (read off ``dw``) or a gradient that overflows.
    """
    return linear_backward_as(dy, cache, need_dx, "linear_backward", "dy")


def linear_backward_as(dy, cache, need_dx, who, name):
    """``linear_backward`` with the caller's names in error messages (the layers: ``"Linear.backward"``,
    ``"grad_out"``)."""
    x, w, has_b, x_sq = cache
    check_grad_meta(who, name, dy, x.shape[:-1] + (w.shape[0],), x.dtype)
    rows = math.prod(dy.shape[:-1])                  # not -1: an empty axis makes -1 ambiguous
    dy2 = dy.reshape(rows, dy.shape[-1])
    x2 = x.reshape(rows, x.shape[-1])
    xp = get_array_module(dy)
    dy_sq = finite_handoff_sq(who, name, dy, xp)          # activation-sized: cheaper than reading it off dw
    with np.errstate(invalid="ignore", over="ignore"):    # overflow: the NonFiniteError below
        dw = dy2.T @ x2
        db = dy2.sum(axis=0) if has_b else None
        dx = (dy @ w) if need_dx else None
    to_read = (0 if _known(dy_sq) else dy2.size) + (0 if _known(x_sq) else x2.size)    # what the bound reads
    if to_read >= dw.size + (rows if has_b else 0) or not _below_overflow(xp, dy2, x2, dy_sq, x_sq, has_b):
        check_grads(who, name, dy, dw, db)
    if dx is not None:
        check_grads(who, name, dy, dx, note=True)
    return dx, dw, db


def _known(sq):
    return sq is not None and sq != math.inf


def _below_overflow(xp, dy2, x2, dy_sq=None, x_sq=None, has_b=True):
    """``dw = dyᵀx`` and ``db = Σ_n dy_n`` cannot overflow, and need no reduction of their own, when
    ``‖dy‖_F · max(‖x‖_F, √N)`` (``N`` rows) is below a quarter of the dtype's maximum (Cauchy–Schwarz:
    ``|dw_ij| <= ‖dy_{:i}‖ ‖x_{:j}‖``, ``|db_i| <= √N ‖dy_{:i}‖``, and so every partial sum of the GEMM and
    of the sum; the quarter leaves room for rounding). ``dy_sq``, ``x_sq``: upper bounds on ``Σ dy²`` and
    ``Σ x²`` already known (measured by a finiteness check, or handed on by ``Sequential``); a missing or
    infinite one is measured (BLAS dots, activation-sized)."""
    big = _QUARTER_MAX.get(dy2.dtype)
    if big is None:                                 # complex step: check the gradients themselves
        return False
    if not _known(dy_sq):
        dy_sq = float(xp.vdot(dy2, dy2)) if dy2.size else 0.0     # BLAS dots: no FP warnings to silence
    if not _known(x_sq):
        x_sq = float(xp.vdot(x2, x2)) if x2.size else 0.0
    return math.sqrt(dy_sq) * max(math.sqrt(x_sq), math.sqrt(dy2.shape[0]) if has_b else 0.0) < big


_QUARTER_MAX = {np.dtype(t): float(np.finfo(t).max) / 4 for t in (np.float32, np.float64)}
