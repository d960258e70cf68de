"""Losses: ``loss, grad = LOSS(prediction, target, reduction="mean")``.

The loss comes back as an array of the prediction's dtype: a 0-d array for ``reduction="mean"`` or
``"sum"`` (``float(loss)`` gives the Python number), shape ``(N,)`` / the input's shape for
``reduction="none"``. ``grad`` is the gradient of the *returned* loss (for ``"none"``: of the sum of the
per-element losses, i.e. every row is the gradient of its own loss) with respect to the prediction, with
the prediction's shape and dtype. Both are exported as ``orthoref.nn.cross_entropy`` / ``orthoref.nn.mse``.
"""
from __future__ import annotations

import math

import numpy as np

from .._checks import NonFiniteError, check_choice, check_finite, check_float, check_result, finite_sum_squares
from ..backend import get_array_module

__all__ = ["cross_entropy", "mse", "REDUCTIONS"]

REDUCTIONS = ("mean", "sum", "none")


_HINT = "use float64 or rescale the input"


def _check_reduction(who, reduction):
    check_choice(who, "reduction", reduction, REDUCTIONS)


def _check_cross_entropy(logits, labels):
    check_float("cross_entropy", "logits", logits)
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(f"cross_entropy: logits must have shape (N, C) with N, C >= 1, "
                         f"got shape {tuple(logits.shape)}")
    N, C = logits.shape
    if not hasattr(labels, "dtype") or not hasattr(labels, "shape") or isinstance(labels, np.generic):
        raise TypeError(f"cross_entropy: labels must be an integer array of shape ({N},), "
                        f"got {type(labels).__name__}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: labels must be an integer array of shape ({N},) holding class "
                        f"indices, got dtype {labels.dtype}")
    if tuple(labels.shape) != (N,):
        raise ValueError(f"cross_entropy: labels must have shape ({N},) for logits of shape ({N}, {C}), "
                         f"got shape {tuple(labels.shape)}")
    as_unsigned = labels.astype(f"u{labels.dtype.itemsize}", copy=False)    # negative labels wrap to >= C
    if int(as_unsigned.max()) >= C:
        lo, hi = int(labels.min()), int(labels.max())
        raise ValueError(f"cross_entropy: labels must lie in [0, {C - 1}] (C = {C} classes), "
                         f"got values in [{lo}, {hi}]")


def cross_entropy(logits, labels, reduction="mean"):
    """Softmax cross-entropy with integer class labels (PyTorch's ``F.cross_entropy`` without weights,
    ``ignore_index`` or label smoothing).

    .. math::  \\ell_n = \\log \\sum_c e^{z_{nc}} - z_{n y_n}
               = \\log \\sum_c e^{z_{nc} - m_n} - (z_{n y_n} - m_n), \\quad m_n = \\max_c z_{nc}

    .. math::  \\frac{\\partial \\ell_n}{\\partial z_{nc}} = \\operatorname{softmax}(z_n)_c - [c = y_n]

    Subtracting the row maximum keeps every exponent in :math:`(-\\infty, 0]`, so logits of any finite
    size (1e4, 1e30) give a finite loss and gradient.

    Parameters
    ----------
    logits : (N, C) float array
    labels : (N,) integer array
        Class indices in ``[0, C)``.
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    loss : 0-d array (``"mean"``, ``"sum"``) or (N,) array (``"none"``), dtype of ``logits``
    dlogits : (N, C) array
        Gradient of ``loss`` (of ``loss.sum()`` for ``"none"``) with respect to ``logits``.

    Raises
    ------
    TypeError, ValueError
        Non-float logits, non-integer labels, wrong shapes, labels out of range, NaN/Inf logits.
    NonFiniteError
        A loss that overflows (logits spanning more than the dtype's range, e.g. ±3e38 in float32).
    """
    _check_reduction("cross_entropy", reduction)
    _check_cross_entropy(logits, labels)
    xp = get_array_module(logits)
    N = logits.shape[0]
    rows = xp.arange(N)
    with np.errstate(over="ignore", invalid="ignore"):    # Inf - Inf, max - min beyond the dtype: below
        z = logits - logits.max(axis=1, keepdims=True)
    if finite_sum_squares(xp, z) is None:     # z is finite exactly when the logits are and nothing overflows
        check_finite("cross_entropy", "logits", logits)
        check_result("cross_entropy", z, "logits - max(logits)", _HINT)
    picked = z[rows, labels]
    e = xp.exp(z, out=z)                      # z <= 0 and max z = 0: 1 <= Σ e <= C, every ℓ_n finite
    s = e.sum(axis=1, keepdims=True)
    losses = xp.log(s[:, 0])
    losses -= picked
    if reduction == "none":
        e /= s
        e[rows, labels] -= 1
        return losses, e
    with np.errstate(over="ignore"):
        total = losses.sum()                  # N losses near the dtype's maximum: Inf, the ValueError below
    if not math.isfinite(abs(total)):          # abs: complex in the complex-step check
        raise NonFiniteError(f"cross_entropy: the loss overflows {np.dtype(total.dtype).name} (NaN or Inf); "
                             f"{_HINT}")
    if reduction == "mean":
        s *= N
        e /= s                                # softmax / N
        e[rows, labels] -= 1 / N
        return xp.asarray(total / N), e       # sum / N, as PyTorch's mean reduction
    e /= s
    e[rows, labels] -= 1
    return xp.asarray(total), e


def mse(pred, target, reduction="mean"):
    """Mean squared error (PyTorch's ``F.mse_loss``).

    .. math::  \\ell = \\frac1n \\sum_i (p_i - t_i)^2, \\qquad
               \\frac{\\partial \\ell}{\\partial p} = \\frac2n (p - t)

    (``"sum"``: without the :math:`1/n`; ``"none"``: the element-wise squares and :math:`2(p - t)`).

    Parameters
    ----------
    pred : (...) float array
    target : (...) float array
        Same shape and dtype as ``pred`` (no broadcasting, no silent up-casting).
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    loss : 0-d array (``"mean"``, ``"sum"``) or an array like ``pred`` (``"none"``), dtype of ``pred``
    dpred : array like ``pred``
        Gradient with respect to ``pred``; the gradient with respect to ``target`` is ``-dpred``.

    Raises
    ------
    TypeError, ValueError
        Non-float or empty arrays, a target of another shape or dtype, NaN/Inf in either.
    NonFiniteError
        A loss that overflows (``|pred - target| > 1.8e19`` in float32): use float64 or rescale.
    """
    _check_reduction("mse", reduction)
    check_float("mse", "pred", pred)
    check_float("mse", "target", target)
    if tuple(target.shape) != tuple(pred.shape):
        raise ValueError(f"mse: target must have the shape of pred {tuple(pred.shape)}, "
                         f"got shape {tuple(target.shape)}")
    if target.dtype != pred.dtype:
        raise TypeError(f"mse: target must have the dtype of pred ({pred.dtype}), got {target.dtype}; "
                        f"convert one of them with .astype")
    if pred.size == 0:
        raise ValueError(f"mse: pred must not be empty, got shape {tuple(pred.shape)}")
    check_finite("mse", "pred", pred)
    check_finite("mse", "target", target)
    xp = get_array_module(pred)
    with np.errstate(over="ignore"):          # an overflow: the ValueError below
        diff = pred - target
        sq = diff * diff
        if reduction == "none":
            check_result("mse", sq, "the loss", _HINT)
            diff *= 2
            return sq, diff
        total = sq.sum()
    check_result("mse", total, "the loss", _HINT)     # Inf if any square or the sum overflows
    if reduction == "mean":
        diff *= 2 / pred.size
        return xp.asarray(total / pred.size), diff
    diff *= 2
    return xp.asarray(total), diff
