"""Batch normalization layers (PyTorch's ``nn.BatchNorm1d`` / ``nn.BatchNorm2d``)."""
from __future__ import annotations

import numpy as np

from .._checks import check_bool, check_int, check_real, float_dtype
from ..backend import get_backend
from ..ops._contract import check_size, memory_checked
from ..ops.norm import batch_norm_backward_as, batch_norm_forward_as
from .module import Module, Parameter, check_input

__all__ = ["BatchNorm1d", "BatchNorm2d"]


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
