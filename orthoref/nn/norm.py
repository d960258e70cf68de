"""Batch normalization layers (PyTorch's ``nn.BatchNorm1d`` / ``nn.BatchNorm2d``) and the whitening layers
``DecorrelatedBatchNorm`` (Huang et al. 2018) and ``IterNorm`` (Huang et al. 2019)."""
from __future__ import annotations

import numpy as np

from .._checks import (MAX_ITERATIONS, check_bool, check_finite, check_floats, check_int, check_real, check_result,
                       float_dtype)
from ..backend import get_array_module, get_backend
from ..decorrelation import group_whitening_backward_as, group_whitening_forward_as
from ..ops._contract import check_grad_meta, check_grads, check_output, check_same_dtype, check_size, memory_checked
from ..ops.norm import batch_norm_backward_as, batch_norm_forward_as
from .module import Module, Parameter, check_input

__all__ = ["BatchNorm1d", "BatchNorm2d", "DecorrelatedBatchNorm", "IterNorm"]


class _BatchNorm(Module):
    """Shared implementation; subclasses set ``_ranks`` (accepted input ranks)."""

    _ranks: tuple = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, *,
                 dtype=np.float32):
        name = type(self).__name__
        self.num_features = check_int(name, "num_features", num_features, 1)
        self.eps = check_real(name, "eps", eps, 0.0, lo_open=True)
        self.momentum = None if momentum is None else check_real(
            name, "momentum (a number in [0, 1], or None for the cumulative average)", momentum, 0.0, 1.0)
        self.affine = check_bool(name, "affine", affine)
        self.track_running_stats = check_bool(name, "track_running_stats", track_running_stats)
        dt = float_dtype(name, dtype)
        check_size(name, f"num_features={num_features}", (self.num_features,))
        with memory_checked(name, f"num_features={num_features}"):
            self._allocate(dt)
        self._cache = None

    def _allocate(self, dt):
        xp = get_backend()
        C = self.num_features
        self.weight = Parameter(xp.ones(C, dtype=dt)) if self.affine else None
        self.bias = Parameter(xp.zeros(C, dtype=dt)) if self.affine else None
        if self.track_running_stats:
            self.running_mean = xp.zeros(C, dtype=dt)
            self.running_var = xp.ones(C, dtype=dt)
            self.num_batches_tracked = xp.zeros((), dtype=np.int64)
            self._buffer_names = ("running_mean", "running_var", "num_batches_tracked")
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None
            self._buffer_names = ()
        self._cache = None

    def _dtype(self):
        if self.weight is not None:
            return self.weight.dtype
        if self.running_mean is not None:
            return self.running_mean.dtype
        return None

    def reset_running_stats(self):
        """Running mean 0, running variance 1, ``num_batches_tracked`` 0."""
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def forward(self, x):
        name = type(self).__name__
        check_input(name, x, ndim=self._ranks, channels=self.num_features, channel_axis=1, dtype=self._dtype())
        # PyTorch: batch statistics in training mode, and always when there are no running statistics.
        bn_training = self.training or not self.track_running_stats
        if bn_training and x.size // self.num_features <= 1:
            raise ValueError(f"{name}: expected more than 1 value per channel when training, "
                             f"got input shape {tuple(x.shape)}")
        factor = 0.0 if self.momentum is None else self.momentum
        update = self.training and self.track_running_stats
        if update and self.momentum is None:                 # cumulative moving average
            factor = 1.0 / float(self.num_batches_tracked + 1)
        y, self._cache = batch_norm_forward_as(
            x, None if self.weight is None else self.weight.data, None if self.bias is None else self.bias.data,
            self.running_mean if (update or not bn_training) else None,
            self.running_var if (update or not bn_training) else None,
            bn_training, factor, self.eps, name)
        if update:                                           # counted once the op accepted the batch
            self.num_batches_tracked += 1
        return y

    def backward(self, grad_out, input_grad=True):
        """Gradient w.r.t. the input (None unless ``input_grad``); accumulates ``weight.grad``/``bias.grad``.
        ``grad_out``: exactly the last output's shape and dtype, finite; nothing accumulates on error."""
        dx, dgamma, dbeta = batch_norm_backward_as(grad_out, self._cached(), input_grad, self._who(), "grad_out")
        if self.weight is not None:
            self.weight.accumulate(dgamma)
            self.bias.accumulate(dbeta)
        return dx

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalization over ``(N, C)`` or ``(N, C, L)`` inputs (statistics per channel ``C``).

    .. math::  y = \\frac{x - \\mathrm{E}[x]}{\\sqrt{\\mathrm{Var}[x] + \\epsilon}} \\gamma + \\beta

    Training mode uses the batch mean and biased variance and updates ``running_mean`` and
    ``running_var`` (with the unbiased variance) as
    ``running = (1 - momentum) * running + momentum * batch``; ``momentum=None`` gives the cumulative
    average ``1 / num_batches_tracked``. Eval mode normalizes with the running statistics, unless
    ``track_running_stats=False`` (then batch statistics are used in both modes and there are no buffers).

    Parameters
    ----------
    num_features : int
        ``C``.
    eps : float
    momentum : float or None
    affine : bool
        Learnable ``weight`` (ones) and ``bias`` (zeros) of shape ``(C,)``.
    track_running_stats : bool
    dtype : float32 or float64
    """
    _ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalization over ``(N, C, H, W)`` inputs (statistics per channel over ``N, H, W``); see
    :class:`BatchNorm1d` for the formula, the parameters and the train/eval behaviour."""
    _ranks = (4,)


# ---------------------------------------------------------------------------------------------------------
# Whitening layers: Decorrelated Batch Normalization and IterNorm.

def _rows(x):
    """``(N, C)`` as it is, ``(N, C, H, W)`` as ``(N·H·W, C)`` (every position a sample)."""
    return x if x.ndim == 2 else x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])


def _unrows(xp, y, shape):
    if len(shape) == 2:
        return y
    n, c, h, w = shape
    return xp.ascontiguousarray(y.reshape(n, h, w, c).transpose(0, 3, 1, 2))


class _Whitening(Module):
    """Shared implementation; subclasses set ``_method`` (``orthoref.decorrelation.WHITENING_METHODS``)."""

    _method = ""
    _buffer_names = ("running_mean", "running_wm")

    def __init__(self, num_features, groups, eps, momentum, affine, iterations, dtype):
        name = type(self).__name__
        self.num_features = check_int(name, "num_features", num_features, 1)
        self.groups = check_int(name, "groups", groups, 1)
        self.iterations = None if iterations is None else check_int(name, "iterations", iterations, 1,
                                                                    MAX_ITERATIONS)
        self.eps = check_real(name, "eps", eps, 0.0, lo_open=True)
        self.momentum = check_real(name, "momentum", momentum, 0.0, 1.0)
        self.affine = check_bool(name, "affine", affine)
        dt = float_dtype(name, dtype)
        C = self.num_features
        check_size(name, f"num_features={num_features}", (C, C))
        with memory_checked(name, f"num_features={num_features}"):
            xp = get_backend()
            self.weight = Parameter(xp.ones(C, dtype=dt)) if self.affine else None
            self.bias = Parameter(xp.zeros(C, dtype=dt)) if self.affine else None
            self.running_mean = xp.zeros(C, dtype=dt)
            self.running_wm = xp.eye(C, dtype=dt)
        self._cache = None

    def _affine(self, name, x):
        """``(γ, β)`` (``None`` without an affine map), checked: float arrays of shape ``(C,)`` and ``x``'s
        dtype (their finiteness is read off the output)."""
        g = None if self.weight is None else self.weight.data
        b = None if self.bias is None else self.bias.data
        check_floats(name, ("weight", g), ("bias", b), finite=False)
        check_same_dtype(name, ("x (input)", x), ("weight", g), ("bias", b))
        for what, a in (("weight", g), ("bias", b)):
            if a is not None and tuple(a.shape) != (self.num_features,):
                raise ValueError(f"{name}: {what} must have shape ({self.num_features},), got {tuple(a.shape)}")
        return g, b

    def reset_running_stats(self):
        """Running mean 0, running whitening matrix ``I``."""
        self.running_mean[...] = 0
        self.running_wm[...] = get_array_module(self.running_wm).eye(self.num_features)

    def forward(self, x):
        name = type(self).__name__
        check_input(name, x, ndim=(2, 4), channels=self.num_features, channel_axis=1,
                    dtype=self.running_mean.dtype)
        g, b = self._affine(name, x)
        xp = get_array_module(x)
        x2 = _rows(x)
        if self.training:
            if x2.shape[0] < 2:
                raise ValueError(f"{name}: expected more than 1 value per channel when training, got input "
                                 f"shape {tuple(x.shape)}")
            xhat, whitening = group_whitening_forward_as(x2, self._method, self.groups, self.eps, self.iterations,
                                                         name, "x (input)")
        else:
            whitening = self.running_wm
            with np.errstate(over="ignore", invalid="ignore"):      # NaN/Inf/overflow: check_output below
                xhat = (x2 - self.running_mean) @ whitening
        with np.errstate(over="ignore", invalid="ignore"):
            y2 = xhat if g is None else xhat * g + b
        stats = () if self.training else (("running_mean", self.running_mean), ("running_wm", whitening))
        check_output(name, y2, ("x (input)", x2), ("weight", g), ("bias", b), *stats)
        if self.training:                                    # the running statistics change once all is well
            m = self.momentum
            self.running_mean *= 1 - m
            self.running_mean += m * whitening.mean
            self.running_wm *= 1 - m
            self.running_wm += m * whitening.matrix
        self._cache = (xhat, whitening, g, self.training, x.shape)
        return _unrows(xp, y2, x.shape)

    def backward(self, grad_out, input_grad=True):
        """Gradient w.r.t. the input (None unless ``input_grad``); accumulates ``weight.grad``/``bias.grad``.
        ``grad_out``: exactly the last output's shape and dtype, finite; nothing accumulates on error."""
        xhat, whitening, g, batch_stats, shape = self._cached()
        who = self._who()
        check_grad_meta(who, "grad_out", grad_out, shape, xhat.dtype)
        check_finite(who, "grad_out", grad_out)
        xp = get_array_module(grad_out)
        with np.errstate(over="ignore", invalid="ignore"):          # overflow: check_result / check_grads
            dy2 = _rows(grad_out)
            dgamma = dbeta = dx = None
            if g is not None:
                dgamma = (dy2 * xhat).sum(axis=0)
                dbeta = dy2.sum(axis=0)
            if input_grad:
                dxhat = dy2 if g is None else dy2 * g
                check_result(who, dxhat, "the gradient", "use float64 or rescale the input")
                if batch_stats:                              # through the batch's mean and whitening
                    dx = group_whitening_backward_as(dxhat, whitening, who, "grad_out")
                else:                                        # the running statistics are constants
                    dx = dxhat @ whitening.T
                dx = _unrows(xp, dx, shape)
        check_grads(who, "grad_out", grad_out, dbeta, dgamma, dx)
        if g is not None:
            self.weight.accumulate(dgamma)
            self.bias.accumulate(dbeta)
        return dx

    def extra_repr(self):
        its = "" if self.iterations is None else f", iterations={self.iterations}"
        return (f"{self.num_features}, groups={self.groups}{its}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}")


class DecorrelatedBatchNorm(_Whitening):
    """Decorrelated Batch Normalization (Huang, Yang, Lang & Deng 2018, "Decorrelated Batch Normalization",
    CVPR): batch normalization with the standardization replaced by group-wise ZCA whitening.

    Over ``(N, C)`` or ``(N, C, H, W)`` inputs (the latter read as ``N·H·W`` samples of ``C`` channels), with
    ``X`` the ``(m, C)`` samples:

    .. math::  \\hat X = X_c W, \\qquad
               y = \\hat x \\odot \\gamma + \\beta

    ``W`` block diagonal, each block ``Σ_g^{-1/2}`` of one group of ``groups`` channels
    (:func:`orthoref.decorrelation.group_zca_whitening`, whose backward pass this layer uses). Training mode
    whitens with the batch statistics and updates ``running_mean`` (``(C,)``) and ``running_wm`` (the
    ``(C, C)`` whitening matrix) as ``running = (1 − momentum)·running + momentum·batch``; eval mode
    computes ``(x − running_mean) running_wm``, then the affine map. This is the paper's code
    (``DecorelateBN_Advance.lua``: running mean and running projection matrix, momentum 0.1, ``W`` averaged
    rather than ``Σ``; its ``ε`` is ``1e-7``, added to the eigenvalues, which is the same ``Σ``).

    Parameters
    ----------
    num_features : int
        ``C``.
    groups : int
        Channels per group (the paper's group size, default 16 as in its residual-network experiments); the
        last group is smaller when it does not divide ``C``, one group when ``groups >= C``.
    eps : float
        Added to each group's covariance.
    momentum : float in [0, 1]
        Weight of the batch in the running statistics (PyTorch's convention; no cumulative average).
    affine : bool
        Learnable ``weight`` ``γ`` (ones) and ``bias`` ``β`` (zeros) of shape ``(C,)``.
    dtype : float32 or float64

    Notes
    -----
    Training needs more samples per group than channels in it for a well-conditioned ``Σ_g``; with fewer,
    ``Σ_g``'s smallest eigenvalues are ``ε`` and, in float32, a group can be numerically singular
    (``ValueError`` naming the group; use float64 or a larger ``eps``).
    """
    _method = "zca"

    def __init__(self, num_features, groups=16, eps=1e-5, momentum=0.1, affine=True, *, dtype=np.float32):
        super().__init__(num_features, groups, eps, momentum, affine, None, dtype)


class IterNorm(_Whitening):
    """Iterative Normalization (Huang, Zhou, Zhu, Liu & Shao 2019, "Iterative Normalization: Beyond
    Standardization towards Efficient Whitening", CVPR): :class:`DecorrelatedBatchNorm` with each group's
    ``Σ_g^{-1/2}`` replaced by ``iterations`` Newton steps
    (:func:`orthoref.decorrelation.iternorm_whitening`): no eigendecomposition, and never singular.

    Same input layouts, running statistics (``running_mean``, ``running_wm``) and train/eval behaviour as
    :class:`DecorrelatedBatchNorm`, which are those of the official code (``IterNorm`` of
    ``huangleiBuaa/IterNorm-pytorch``: ``running_wm`` averages the whitening matrix ``P_T/√tr Σ``).

    Parameters
    ----------
    num_features : int
        ``C``.
    groups : int
        Channels per group (default 64, the official ImageNet runs' ``num_channels``); the last group is
        smaller when it does not divide ``C`` (the official code halves the group size until it divides
        ``C`` instead).
    iterations : int
        ``T``, Newton steps (the paper's 5).
    eps : float
        Added to each group's covariance before its trace normalisation.
    momentum : float in [0, 1]
    affine : bool
    dtype : float32 or float64
    """
    _method = "iternorm"

    def __init__(self, num_features, groups=64, iterations=5, eps=1e-5, momentum=0.1, affine=True, *,
                 dtype=np.float32):
        super().__init__(num_features, groups, eps, momentum, affine, iterations, dtype)
