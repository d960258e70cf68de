"""Samples of valid inputs and registry entries: batch normalization (op and layers).

Running statistics travel as tuples of Python floats in ``Sample.kwargs`` (plain values that the PyTorch
side can read too); each call builds fresh buffers from them, so repeated finite-difference calls see the
same state.
"""
from __future__ import annotations

import numpy as np

from ..._checks import check_floats
from ...backend import get_array_module, get_backend
from ...nn.norm import BatchNorm1d, BatchNorm2d
from ...ops.norm import batch_norm_backward, batch_norm_forward, stat_axes
from ..registry import OpSpec, Sample, from_layer
from ..torch_twins import torch_batch_norm


def _bn_apply(x, gamma=None, beta=None, *, training=True, running_mean=None, running_var=None,
              momentum=0.1, eps=1e-5):
    check_floats("batch_norm", ("x", x), finite=False)
    stat_axes(x)
    xp = get_array_module(x)
    C = x.shape[1]
    rm = xp.zeros(C, x.dtype) if running_mean is None else xp.asarray(running_mean, dtype=x.dtype)
    rv = xp.ones(C, x.dtype) if running_var is None else xp.asarray(running_var, dtype=x.dtype)
    y, cache = batch_norm_forward(x, gamma, beta, rm, rv, training, momentum, eps)

    def vjp(cotangents):
        dx, dg, db = batch_norm_backward(cotangents[0], cache)
        return (dx,) if gamma is None else (dx, dg, db)
    return (y,), vjp


def _running_stats(rng, C):
    mean = tuple(float(v) for v in 0.5 * rng.standard_normal(C))
    var = tuple(float(v) for v in rng.uniform(0.5, 2.0, C))
    return mean, var


def _affine(rng, C, dtype):
    return (rng.uniform(0.5, 1.5, C).astype(dtype), rng.standard_normal(C).astype(dtype))


def _bn_train_samples(rng, dtype):
    return [
        Sample((rng.standard_normal((6, 4)).astype(dtype),) + _affine(rng, 4, dtype), label="(N,C)"),
        Sample((rng.standard_normal((3, 4, 5)).astype(dtype),) + _affine(rng, 4, dtype), label="(N,C,L)"),
        Sample((rng.standard_normal((2, 3, 4, 5)).astype(dtype),) + _affine(rng, 3, dtype),
               {"eps": 1e-3}, label="(N,C,H,W)"),
        Sample((rng.standard_normal((5, 3, 4)).astype(dtype),), label="no affine"),
    ]


def _bn_eval_samples(rng, dtype):
    out = []
    for shape, label in (((5, 4), "eval (N,C)"), ((2, 3, 3, 4), "eval (N,C,H,W)")):
        C = shape[1]
        mean, var = _running_stats(rng, C)
        out.append(Sample((rng.standard_normal(shape).astype(dtype),) + _affine(rng, C, dtype),
                          {"training": False, "running_mean": mean, "running_var": var}, label=label))
    mean, var = _running_stats(rng, 3)
    out.append(Sample((rng.standard_normal((4, 3, 2)).astype(dtype),),
                      {"training": False, "running_mean": mean, "running_var": var}, label="eval, no affine"))
    return out


# ---------------------------------------------------------------------------------------------------------
# Layers
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


OPS = [
    OpSpec("batch_norm", _bn_apply, _bn_train_samples, torch=torch_batch_norm,
           doc="batch normalization, training mode (batch statistics)", complex_step=True),
    OpSpec("batch_norm_eval", _bn_apply, _bn_eval_samples, torch=torch_batch_norm,
           doc="batch normalization, eval mode (running statistics)", complex_step=True),
]

LAYERS = [
    OpSpec("nn.BatchNorm1d", from_layer(_make_builder(BatchNorm1d)), _bn1d_samples, torch=torch_batch_norm,
           kind="layer"),
    OpSpec("nn.BatchNorm2d", from_layer(_make_builder(BatchNorm2d)), _bn2d_samples, torch=torch_batch_norm,
           kind="layer"),
]
