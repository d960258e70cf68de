"""Samples of valid inputs and registry entries: pooling and flatten (ops and layers). Small shapes (the
checker also runs element-wise), inputs off kinks."""
from __future__ import annotations

import math

import numpy as np

from ...nn.conv import AvgPool2d, Flatten, GlobalAvgPool2d, MaxPool2d
from ...ops.pool import (
    avg_pool2d_backward, avg_pool2d_forward, flatten_backward, flatten_forward, global_avg_pool2d_backward,
    global_avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward,
)
from ..registry import OpSpec, Sample, from_layer, from_pair
from ..torch_twins import torch_avg_pool2d, torch_flatten, torch_global_avg_pool2d, torch_max_pool2d


def _distinct_values(rng, shape, dtype, gap=0.1):
    """Values spaced at least ``0.6 gap`` apart (a shuffled grid plus small noise, centred): no ties, and no
    window maximum changes within a finite-difference step of ``< 0.2 gap``."""
    n = math.prod(shape)
    v = (rng.permutation(n) - (n - 1) / 2) * gap + rng.uniform(-0.2 * gap, 0.2 * gap, size=n)
    return v.reshape(shape).astype(dtype)


def _max_samples(rng, dtype):
    return [
        Sample((_distinct_values(rng, (2, 2, 4, 6), dtype),), {"kernel_size": 2}, "2x2"),
        Sample((_distinct_values(rng, (1, 2, 7, 6), dtype),), {"kernel_size": 3, "stride": 2, "padding": 1},
               "3x3 stride 2 pad 1 (overlap)"),
        Sample((_distinct_values(rng, (1, 3, 5, 7), dtype),), {"kernel_size": (2, 3), "stride": (1, 2)},
               "2x3 stride (1, 2)"),
        Sample((_distinct_values(rng, (1, 2, 7, 7), dtype),), {"kernel_size": 2, "stride": 1, "dilation": 2,
                                                            "padding": 1}, "dilation 2"),
        Sample((_distinct_values(rng, (2, 5, 5), dtype),), {"kernel_size": 2}, "unbatched, odd size"),
    ]


def _avg_samples(rng, dtype):
    def x(shape):
        return rng.standard_normal(shape).astype(dtype)
    return [
        Sample((x((2, 2, 4, 6)),), {"kernel_size": 2}, "2x2"),
        Sample((x((1, 2, 7, 6)),), {"kernel_size": 3, "stride": 2, "padding": 1}, "pad, include"),
        Sample((x((1, 2, 7, 6)),), {"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False},
               "pad, exclude"),
        Sample((x((1, 3, 5, 7)),), {"kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 0),
                                    "count_include_pad": False}, "2x3 exclude"),
        Sample((x((2, 5, 5)),), {"kernel_size": 3, "stride": 1, "padding": 1, "divisor_override": 5},
               "unbatched, divisor_override"),
    ]


# ---------------------------------------------------------------------------------------------------------
# Stress samples (OpSpec.stress). Ties are exact in float32 too (small integers); their gradient follows
# PyTorch's convention, the first maximum of the window in row-major order (tests/test_stress_samples.py
# checks it against the twin and leaves finite differences out: the max is not differentiable at a tie).

def _tied(rng, shape, dtype, levels=3):
    """Integers in ``[0, levels)``: every window of more than ``levels`` elements holds a tie, and most
    windows tie at their maximum."""
    return rng.integers(0, levels, size=shape).astype(dtype)


def _max_stress(rng, dtype):
    return [
        Sample((_tied(rng, (2, 2, 4, 6), dtype),), {"kernel_size": 2}, "stress: ties 2x2"),
        Sample((_tied(rng, (1, 2, 7, 6), dtype),), {"kernel_size": 3, "stride": 2, "padding": 1},
               "stress: ties 3x3 stride 2 pad 1 (overlap)"),
        Sample((_tied(rng, (1, 1, 6, 6), dtype, levels=2) - 3.0,), {"kernel_size": 3, "stride": 1, "padding": 1},
               "stress: ties, negative, pad 1 stride 1"),
        Sample((_tied(rng, (1, 2, 7, 7), dtype),), {"kernel_size": 2, "stride": 1, "dilation": 2, "padding": 1},
               "stress: ties, dilation 2"),
        Sample((np.full((1, 2, 3, 5), 1.5, dtype=dtype),), {"kernel_size": 2, "stride": 1},
               "stress: ties, constant image"),
        Sample((_tied(rng, (2, 3, 5), dtype),), {"kernel_size": (3, 5)}, "stress: ties, window = image"),
        Sample((_distinct_values(rng, (1, 3, 4, 6), dtype),), {"kernel_size": 2}, "stress: batch of one"),
        Sample((_distinct_values(rng, (2, 2, 5, 7), dtype),), {"kernel_size": (5, 7)}, "stress: window = image"),
        Sample((_distinct_values(rng, (1, 2, 1, 64), dtype),), {"kernel_size": (1, 4), "stride": (1, 3)},
               "stress: aspect 1x64"),
    ]


def _avg_stress(rng, dtype):
    def x(shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)
    return [
        Sample((x((1, 3, 4, 6)),), {"kernel_size": 2}, "stress: batch of one"),
        Sample((x((2, 2, 5, 7)),), {"kernel_size": (5, 7)}, "stress: window = image"),
        Sample((x((1, 2, 5, 7)),), {"kernel_size": (5, 7), "padding": (2, 3), "stride": (2, 3),
                                    "count_include_pad": False}, "stress: window = image, pad, exclude"),
        Sample((x((1, 2, 1, 64)),), {"kernel_size": (1, 4), "stride": (1, 3)}, "stress: aspect 1x64"),
        Sample((x((2, 2, 4, 6), 1e-30),), {"kernel_size": 2}, "stress: scale 1e-30"),
        Sample((x((2, 2, 4, 6), 1e30),), {"kernel_size": 3, "stride": 1, "padding": 1}, "stress: scale 1e+30"),
    ]


def _gap_samples(rng, dtype):
    return [Sample((rng.standard_normal((2, 3, 4, 5)).astype(dtype),), label="4-D"),
            Sample((rng.standard_normal((3, 2, 6)).astype(dtype),), label="unbatched")]


def _flatten_samples(rng, dtype):
    return [Sample((rng.standard_normal((2, 3, 4, 5)).astype(dtype),), label="default"),
            Sample((rng.standard_normal((2, 3, 4, 5)).astype(dtype),), {"start_dim": 0, "end_dim": 1},
                   "dims 0..1"),
            Sample((rng.standard_normal((2, 3, 4, 5)).astype(dtype),), {"start_dim": -2}, "start -2")]


def _stateless(cls):
    def build(**kwargs):
        return cls(**kwargs), []
    return build


OPS = [
    OpSpec("max_pool2d", from_pair(max_pool2d_forward, max_pool2d_backward), _max_samples,
           torch=torch_max_pool2d, stress=_max_stress, doc="max pooling, gradient to the first maximum",
           complex_step=True),
    OpSpec("avg_pool2d", from_pair(avg_pool2d_forward, avg_pool2d_backward), _avg_samples,
           torch=torch_avg_pool2d, stress=_avg_stress, doc="average pooling", complex_step=True),
    OpSpec("global_avg_pool2d", from_pair(global_avg_pool2d_forward, global_avg_pool2d_backward),
           _gap_samples, torch=torch_global_avg_pool2d, doc="mean over H, W", complex_step=True),
    OpSpec("flatten", from_pair(flatten_forward, flatten_backward), _flatten_samples,
           torch=torch_flatten, doc="torch.flatten", complex_step=True),
]

LAYERS = [
    OpSpec("nn.MaxPool2d", from_layer(_stateless(MaxPool2d)), _max_samples, torch=torch_max_pool2d,
           kind="layer", stress=_max_stress),
    OpSpec("nn.AvgPool2d", from_layer(_stateless(AvgPool2d)), _avg_samples, torch=torch_avg_pool2d,
           kind="layer", stress=_avg_stress),
    OpSpec("nn.GlobalAvgPool2d", from_layer(_stateless(GlobalAvgPool2d)), _gap_samples,
           torch=torch_global_avg_pool2d, kind="layer"),
    OpSpec("nn.Flatten", from_layer(_stateless(Flatten)), _flatten_samples, torch=torch_flatten,
           kind="layer"),
]
