"""Batch normalization (PyTorch's ``F.batch_norm``): ``y, cache = batch_norm_forward(...)``,
``dx, dgamma, dbeta = batch_norm_backward(dy, cache)``.

Channels are on axis 1; statistics are taken over every other axis, so ``(N, C)``, ``(N, C, L)`` and
``(N, C, H, W)`` inputs share one code path.
"""
from __future__ import annotations

import numbers

import numpy as np

from .._checks import NonFiniteError, all_finite, check_bool, check_finite, check_floats, check_real
from ..backend import get_array_module
from ._contract import check_grad_meta, check_grads, check_output, check_same_dtype

__all__ = ["batch_norm_forward", "batch_norm_backward"]


def stat_axes(x, who="batch_norm"):
    """The axes batch normalization reduces over: every axis but the channel axis 1 (ValueError naming
    ``who`` for fewer than 2 dimensions)."""
    if x.ndim < 2:
        raise ValueError(f"{who}: x must have shape (N, C, ...) with at least 2 dimensions, "
                         f"got shape {tuple(x.shape)}")
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(a, name, x, who="batch_norm"):
    """A ``(C,)`` vector as ``(1, C, 1, ...)`` for broadcasting against ``x``."""
    C = x.shape[1]
    if tuple(a.shape) != (C,):
        raise ValueError(f"{who}: {name} must have shape ({C},) for input shape {tuple(x.shape)}, "
                         f"got {tuple(a.shape)}")
    return a.reshape((1, C) + (1,) * (x.ndim - 2))


def _check_batch_norm(x, gamma, beta, running_mean, running_var, training, momentum, eps, who="batch_norm"):
    """The input contract of :func:`batch_norm_forward`; returns ``(training, momentum, eps)`` as Python
    values. Nothing is computed or updated before it has passed."""
    arrays = (("x", x), ("gamma (weight)", gamma), ("beta (bias)", beta), ("running_mean", running_mean),
              ("running_var", running_var))
    check_floats(who, *arrays, finite=False)
    check_same_dtype(who, *arrays)
    stat_axes(x, who)
    for name, a in arrays[1:]:
        if a is not None:
            _per_channel(a, name, x, who)
    training = check_bool(who, "training", training)
    eps = check_real(who, "eps", eps, 0.0, lo_open=True)
    if training:
        if momentum is None or isinstance(momentum, (bool, np.bool_)) or not isinstance(momentum, numbers.Real):
            raise TypeError(f"{who}: momentum must be a real number (for PyTorch's momentum=None pass "
                            f"1/num_batches_tracked, as the BatchNorm layers do), got {momentum!r}")
        momentum = check_real(who, "momentum", momentum, 0.0, 1.0)
        n = x.size // x.shape[1] if x.shape[1] else 0
        if n <= 1:
            raise ValueError(f"{who}: expected more than 1 value per channel when training, got input "
                             f"shape {tuple(x.shape)}")
    elif running_mean is None or running_var is None:
        raise ValueError(f"{who}: running_mean and running_var are required in eval mode (training=False)")
    xp = get_array_module(x)
    for name, a in arrays:
        if a is not None:
            check_finite(who, name, a, xp)
    if not training and running_var.size:
        lowest = float(running_var.min().real)          # .real: complex-step mode (real part ordered first)
        if lowest < 0:
            raise ValueError(f"{who}: running_var must be >= 0 (a variance), got a minimum of {lowest!r}")
    return training, momentum, eps


def batch_norm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    """Batch normalization over all axes but the channel axis 1, exactly as PyTorch.

    Training mode normalizes with the batch mean and the *biased* batch variance
    (:math:`n = N \\prod \\text{spatial}` values per channel):

    .. math::  \\mu = \\frac1n \\sum x, \\qquad \\sigma^2 = \\frac1n \\sum (x - \\mu)^2, \\qquad
               \\hat x = \\frac{x - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}}, \\qquad y = \\gamma \\hat x + \\beta

    and, when running buffers are given, updates them **in place** with the *unbiased* variance:

    .. math::  m \\leftarrow (1 - \\text{momentum})\\, m + \\text{momentum}\\, \\mu, \\qquad
               v \\leftarrow (1 - \\text{momentum})\\, v + \\text{momentum}\\, \\frac{n}{n-1} \\sigma^2

    Eval mode (``training=False``) normalizes with the running statistics instead.

    Parameters
    ----------
    x : (N, C, ...) float array
    gamma, beta : (C,) arrays or None
        Affine scale and shift (``None``: no affine transform, as ``affine=False``).
    running_mean, running_var : (C,) arrays or None
        Running statistics, updated in place in training mode; required in eval mode.
    training : bool
        Use (and update) batch statistics.
    momentum : float
        Weight of the new batch in the running averages. PyTorch's ``momentum=None`` (cumulative
        average) is the layer's business: it passes ``1 / num_batches_tracked`` here, as PyTorch does.
    eps : float
        Added to the variance.

    Returns
    -------
    y : (N, C, ...) array, dtype of ``x``
    cache : what ``batch_norm_backward`` needs (``x̂``, ``1/√(σ²+ε)``, ``γ``, mode)

    Raises
    ------
    TypeError
        A non-float ``x``, ``gamma``, ``beta`` or running statistic, arrays of different dtypes, a
        ``training`` that is not a bool, a ``momentum`` that is not a number.
    ValueError
        In training mode with a single value per channel (PyTorch's "Expected more than 1 value per
        channel when training"), on shape mismatches, NaN/Inf in any array argument
        (``NonFiniteError``), ``eps <= 0``, ``momentum`` outside ``[0, 1]``, in eval mode without running
        statistics or with a negative ``running_var``; ``NonFiniteError`` when the batch variance or the
        output overflows. Nothing is updated when an error is raised (checked by :func:`_check_batch_norm`
        before the math).

    Reference: Ioffe & Szegedy, "Batch normalization: accelerating deep network training by reducing
    internal covariate shift", ICML 2015.
    """
    return batch_norm_forward_as(x, gamma, beta, running_mean, running_var, training, momentum, eps, "batch_norm")


def batch_norm_forward_as(x, gamma, beta, running_mean, running_var, training, momentum, eps, who):
    """``batch_norm_forward`` with the caller's names in error messages (the layers)."""
    training, momentum, eps = _check_batch_norm(x, gamma, beta, running_mean, running_var, training,
                                                momentum, eps, who)
    axes = stat_axes(x)
    xp = get_array_module(x)
    C = x.shape[1]
    n = x.size // C if C else 0
    g = None if gamma is None else _per_channel(gamma, "gamma (weight)", x)
    b = None if beta is None else _per_channel(beta, "beta (bias)", x)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):   # overflow: the ValueError below
        if training:
            mean = x.mean(axis=axes, keepdims=True)
            xc = x - mean
            var = (xc * xc).mean(axis=axes, keepdims=True)          # biased
            if not all_finite(xp, var):                             # (C,): x - mean or its square overflows
                raise NonFiniteError(f"{who}: the batch variance overflows {x.dtype} (Inf); use float64 or "
                                     f"rescale the input")
            inv_std = 1 / xp.sqrt(var + eps)
            xhat = xc
            xhat *= inv_std
        else:
            rm = _per_channel(running_mean, "running_mean", x)
            rv = _per_channel(running_var, "running_var", x)
            inv_std = (1 / xp.sqrt(rv + eps)).astype(x.dtype, copy=False)
            xhat = (x - rm.astype(x.dtype, copy=False)) * inv_std
        if g is None:
            y = xhat if b is None else xhat + b
        else:
            y = xhat * g
            if b is not None:
                y += b
    check_output(who, y)                     # inputs are finite: only an overflow (or eps lost in float32)
    if training:                             # the running statistics change only once all is well
        m = momentum
        if running_mean is not None:
            running_mean *= 1 - m
            running_mean += m * mean.reshape(C).astype(running_mean.dtype, copy=False)
        if running_var is not None:
            unbiased = var.reshape(C) * (n / (n - 1))
            running_var *= 1 - m
            running_var += m * unbiased.astype(running_var.dtype, copy=False)
    return y, (xhat, inv_std, g, b is not None, training, axes, n)


def batch_norm_backward(dy, cache, need_dx=True):
    """Gradients of batch normalization.

    With :math:`\\bar\\beta = \\sum \\bar y` and :math:`\\bar\\gamma = \\sum \\bar y \\odot \\hat x`
    (sums over every axis but 1), training mode uses the compact closed form

    .. math::  \\bar x = \\frac{\\gamma}{\\sqrt{\\sigma^2 + \\epsilon}}
               \\left(\\bar y - \\frac{\\bar\\beta}{n} - \\hat x \\, \\frac{\\bar\\gamma}{n}\\right)

    and eval mode (constant statistics) the affine form
    :math:`\\bar x = \\bar y\\, \\gamma / \\sqrt{v + \\epsilon}`.

    Returns
    -------
    (dx, dgamma, dbeta)
        ``dgamma``/``dbeta`` are ``None`` without an affine transform; ``dx`` is ``None`` when
        ``need_dx`` is False.

    ``dy`` must have exactly the shape and dtype of ``y`` (``ValueError``/``TypeError``) and be finite
    (``NonFiniteError``, read off ``dbeta`` or ``dx``); a gradient that overflows raises ``NonFiniteError``.
    """
    return batch_norm_backward_as(dy, cache, need_dx, "batch_norm_backward", "dy")


def batch_norm_backward_as(dy, cache, need_dx, who, name):
    """``batch_norm_backward`` with the caller's names in error messages (the layers)."""
    xhat, inv_std, g, has_b, training, axes, n = cache
    check_grad_meta(who, name, dy, xhat.shape, xhat.dtype)
    C = xhat.shape[1]
    full = training and need_dx                       # the training-mode dx needs both sums
    with np.errstate(invalid="ignore", over="ignore"):      # NaN/Inf/overflow: the ValueError below
        dbeta = dy.sum(axis=axes, keepdims=True) if (has_b or full) else None
        dgamma = (dy * xhat).sum(axis=axes, keepdims=True) if (g is not None or full) else None
        dx = None
        if need_dx:
            scale = inv_std if g is None else g * inv_std
            if training:
                inv_n = 1.0 / n
                dx = dy - dbeta * inv_n
                dx -= xhat * (dgamma * inv_n)
                dx *= scale
            else:
                dx = dy * scale
    check_grads(who, name, dy, dbeta, dgamma, dx,           # each depends on every element of dy
                covered=any(r is not None for r in (dbeta, dgamma, dx)))
    return (dx,
            None if g is None else dgamma.reshape(C),
            dbeta.reshape(C) if has_b else None)
