"""Samples of valid inputs and registry entries: batch normalization (op and layers).

Running statistics travel as tuples of Python floats in ``Sample.kwargs`` (plain values that the PyTorch
side can read too); each call builds fresh buffers from them, so repeated finite-difference calls see the
same state.
"""
from __future__ import annotations

import numpy as np

from ..._checks import check_floats
from ...backend import get_array_module, get_backend
from ...nn.norm import BatchNorm1d, BatchNorm2d, DecorrelatedBatchNorm, IterNorm
from ...ops.norm import batch_norm_backward, batch_norm_forward, stat_axes
from ..torch_twins import torch_decorrelated_batch_norm, torch_iternorm_layer
from ..registry import OpSpec, Sample, from_layer
from ..torch_twins import torch_batch_norm
from .decorrelation import grouped


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
# Stress samples of the op (issue 16): the shapes and scales where batch normalization goes wrong.

def _bn_train_stress(rng, dtype):
    """Training mode: a batch of two (the fewest values per channel it accepts) and a batch of one with three
    positions; near-constant features, centred (variance 1e-12 ≪ ε) and on an offset of 3 (variance 1e-4 ≪
    ε = 1, where ``x − μ`` cancels); the scales 1e-10 and 1e+10 (variance 1e20, within float32's range); many
    features and few samples (3 x 128) and the reverse (512 x 2); channels of spread 1e4, 1 and 1e-4 side by
    side. The scaled samples have no affine map: a shift ``β ~ 1`` would bury an output of size 1e-7."""
    def x(shape, scale=1.0, offset=0.0):
        return (offset + scale * rng.standard_normal(shape)).astype(dtype)

    out = [Sample((x((2, 4)),) + _affine(rng, 4, dtype), label="stress: batch of two (2, 4)"),
           Sample((x((1, 3, 3)),) + _affine(rng, 3, dtype), label="stress: batch of one, three positions (1, 3, 3)"),
           Sample((x((6, 3), 1e-6),), label="stress: scale 1e-06, near-constant features (variance 1e-12 << eps)"),
           Sample((x((6, 3), 1e-2, 3.0),) + _affine(rng, 3, dtype), {"eps": 1.0},
                  label="stress: near-constant features on an offset (3 + 1e-2 noise, eps 1)")]
    for scale in (1e-10, 1e10):
        out.append(Sample((x((5, 3, 2), scale),), label=f"stress: scale {scale:g}"))
    out.append(Sample((x((3, 128)),) + _affine(rng, 128, dtype), label="stress: many features, few samples (3, 128)"))
    out.append(Sample((x((512, 2)),) + _affine(rng, 2, dtype), label="stress: many samples, few features (512, 2)"))
    mixed = x((8, 3))
    mixed[:, 0] *= 1e4
    mixed[:, 2] *= 1e-4
    out.append(Sample((mixed,) + _affine(rng, 3, dtype), {"eps": 1e-3},
                      label="stress: channel spreads 1e4, 1, 1e-4 (variances 1e8 to 1e-8 against eps 1e-3)"))
    return out


def _bn_eval_stress(rng, dtype):
    """Eval mode: a batch of one (fine: no batch statistics), a running variance far below ``ε`` (1e-12) and
    huge running statistics (mean 1e8, variance 1e12), many features and one sample."""
    C = 4
    mean, var = _running_stats(rng, C)
    return [
        Sample((rng.standard_normal((1, C)).astype(dtype),) + _affine(rng, C, dtype),
               {"training": False, "running_mean": mean, "running_var": var}, label="stress: eval batch of one"),
        Sample((rng.standard_normal((3, C, 2)).astype(dtype),) + _affine(rng, C, dtype),
               {"training": False, "running_mean": mean, "running_var": (1e-12,) * C},
               label="stress: eval running_var 1e-12 << eps"),
        Sample(((1e8 + 1e6 * rng.standard_normal((3, C))).astype(dtype),) + _affine(rng, C, dtype),
               {"training": False, "running_mean": (1e8,) * C, "running_var": (1e12,) * C},
               label="stress: eval huge statistics (mean 1e8, variance 1e12)"),
        Sample((rng.standard_normal((1, 256)).astype(dtype),) + _affine(rng, 256, dtype),
               {"training": False, "running_mean": (0.5,) * 256, "running_var": (2.0,) * 256},
               label="stress: eval one sample, 256 features"),
    ]


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


# ---------------------------------------------------------------------------------------------------------
# Whitening layers (DecorrelatedBatchNorm, IterNorm). Running statistics as tuples of floats (running_wm as a
# tuple of rows), like the BatchNorm samples'.

def _whitening_builder(cls):
    def build(weight=None, bias=None, *, num_features, training=True, running_mean=None, running_wm=None,
              dtype="float64", **kw):
        affine = weight is not None
        dtype = weight.dtype if affine else np.dtype(dtype)
        layer = cls(num_features, affine=affine, dtype=dtype, **kw)
        if affine:
            layer.weight.data, layer.bias.data = weight, bias
        if running_mean is not None:
            layer.running_mean = get_backend().asarray(running_mean, dtype=dtype)
            layer.running_wm = get_backend().asarray(running_wm, dtype=dtype)
        layer.train(training)
        return layer, ([layer.weight, layer.bias] if affine else [])
    return build


def _images(X, n, h, w):
    """``(n·h·w, C)`` samples as an ``(n, C, h, w)`` batch."""
    return np.ascontiguousarray(X.reshape(n, h, w, -1).transpose(0, 3, 1, 2))


def _running_wm(rng, C):
    """A running whitening matrix: the identity plus a small symmetric perturbation."""
    E = 0.2 * rng.standard_normal((C, C))
    return tuple(tuple(float(v) for v in row) for row in np.eye(C) + (E + E.T) / 2)


def _whitening_layer_samples(extra):
    def samples(rng, dtype):
        C = 5
        train = [
            Sample((grouped(rng, 12, ((3.0, 1.8), (2.5, 0.9), (1.2,)), dtype),) + _affine(rng, C, dtype),
                   {"groups": 2, **extra}, "train (N,C) groups=2"),
            Sample((_images(grouped(rng, 18, ((3.0, 1.6, 0.7), (2.0, 1.1)), dtype), 2, 3, 3),) + _affine(rng, C, dtype),
                   {"groups": 3, "momentum": 0.3, **extra}, "train (N,C,H,W) groups=3"),
            Sample((grouped(rng, 10, ((2.5, 1.5, 0.8, 0.3),), dtype),), {"groups": 16, "eps": 1e-3, **extra},
                   "train, no affine, one group"),
        ]
        evals = []
        for shape, label in (((6, C), "eval (N,C)"), ((2, C, 2, 3), "eval (N,C,H,W)")):
            mean = tuple(float(v) for v in 0.5 * rng.standard_normal(C))
            evals.append(Sample((rng.standard_normal(shape).astype(dtype),) + _affine(rng, C, dtype),
                                {"groups": 2, "training": False, "running_mean": mean,
                                 "running_wm": _running_wm(rng, C), **extra}, label))
        return _with_num_features(train + evals)
    return samples


OPS = [
    OpSpec("batch_norm", _bn_apply, _bn_train_samples, torch=torch_batch_norm, stress=_bn_train_stress,
           doc="batch normalization, training mode (batch statistics)", complex_step=True),
    OpSpec("batch_norm_eval", _bn_apply, _bn_eval_samples, torch=torch_batch_norm, stress=_bn_eval_stress,
           doc="batch normalization, eval mode (running statistics)", complex_step=True),
]

LAYERS = [
    OpSpec("nn.BatchNorm1d", from_layer(_make_builder(BatchNorm1d)), _bn1d_samples, torch=torch_batch_norm,
           kind="layer"),
    OpSpec("nn.BatchNorm2d", from_layer(_make_builder(BatchNorm2d)), _bn2d_samples, torch=torch_batch_norm,
           kind="layer"),
    OpSpec("nn.DecorrelatedBatchNorm", from_layer(_whitening_builder(DecorrelatedBatchNorm)),
           _whitening_layer_samples({}), torch=torch_decorrelated_batch_norm, kind="layer", rtol=1e-8,
           doc="group ZCA of the batch (running mean and whitening matrix in eval), then γ, β per channel"),
    OpSpec("nn.IterNorm", from_layer(_whitening_builder(IterNorm)), _whitening_layer_samples({"iterations": 5}),
           torch=torch_iternorm_layer, kind="layer", rtol=1e-8,
           doc="IterNorm whitening of the batch (running mean and whitening matrix in eval), then γ, β"),
]
