"""Batch normalization layers (PyTorch's ``nn.BatchNorm1d`` / ``nn.BatchNorm2d``)."""
from __future__ import annotations

import numpy as np

from .._checks import check_bool, check_int, check_real, float_dtype
from ..backend import get_backend
from ..oracle.registry import OpSpec, Sample, from_layer, register
from ..ops._contract import check_size, memory_checked
from ..ops.norm import _batch_norm_backward, _batch_norm_forward, _bn_eval_samples, _bn_train_samples, \
    _torch_batch_norm
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
        y, self._cache = _batch_norm_forward(
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
        dx, dgamma, dbeta = _batch_norm_backward(grad_out, self._cached(), input_grad, self._who(), "grad_out")
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
def _make_builder(cls):
    def build(weight=None, bias=None, *, num_features, training=True, running_mean=None, running_var=None,
              momentum=0.1, eps=1e-5, track_running_stats=True, dtype="float64"):
        affine = weight is not None
        dtype = weight.dtype if affine else np.dtype(dtype)
        layer = cls(num_features, eps=eps, momentum=momentum, affine=affine,
                    track_running_stats=track_running_stats, dtype=dtype)
        if affine:
            layer.weight.data, layer.bias.data = weight, bias
        if running_mean is not None:
            layer.running_mean = get_backend().asarray(running_mean, dtype=dtype)
            layer.running_var = get_backend().asarray(running_var, dtype=dtype)
        layer.train(training)
        return layer, ([layer.weight, layer.bias] if affine else [])
    return build


def _with_num_features(samples):
    out = []
    for s in samples:
        kw = dict(s.kwargs)
        kw["num_features"] = s.inputs[0].shape[1]
        kw["dtype"] = s.inputs[0].dtype.name
        out.append(Sample(s.inputs, kw, s.label))
    return out


def _bn1d_samples(rng, dtype):
    train = [s for s in _bn_train_samples(rng, dtype) if s.inputs[0].ndim in (2, 3)]
    evals = [s for s in _bn_eval_samples(rng, dtype) if s.inputs[0].ndim in (2, 3)]
    no_stats = Sample((rng.standard_normal((5, 3)).astype(dtype), rng.uniform(0.5, 1.5, 3).astype(dtype),
                       rng.standard_normal(3).astype(dtype)),
                      {"training": False, "track_running_stats": False}, label="eval, no running stats")
    return _with_num_features(train + evals + [no_stats])


def _bn2d_samples(rng, dtype):
    C = 3
    affine = (rng.uniform(0.5, 1.5, C).astype(dtype), rng.standard_normal(C).astype(dtype))
    mean = tuple(float(v) for v in 0.5 * rng.standard_normal(C))
    var = tuple(float(v) for v in rng.uniform(0.5, 2.0, C))
    return _with_num_features([
        Sample((rng.standard_normal((2, C, 4, 3)).astype(dtype),) + affine, label="train"),
        Sample((rng.standard_normal((3, C, 2, 2)).astype(dtype),), label="train, no affine"),
        Sample((rng.standard_normal((2, C, 3, 3)).astype(dtype),) + affine,
               {"training": False, "running_mean": mean, "running_var": var}, label="eval"),
        Sample((rng.standard_normal((2, C, 2, 3)).astype(dtype),) + affine,
               {"training": False, "track_running_stats": False}, label="eval, no running stats"),
    ])


register(OpSpec("nn.BatchNorm1d", from_layer(_make_builder(BatchNorm1d)), _bn1d_samples,
                torch=_torch_batch_norm, kind="layer"))
register(OpSpec("nn.BatchNorm2d", from_layer(_make_builder(BatchNorm2d)), _bn2d_samples,
                torch=_torch_batch_norm, kind="layer"))
