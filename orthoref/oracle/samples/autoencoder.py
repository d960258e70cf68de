"""Samples of valid inputs and registry entries: the tied linear autoencoder ``y = x Wᵀ W``
(orthoref.autoencoder)."""
from __future__ import annotations

import numpy as np

from ..._checks import check_ndim
from ...autoencoder import TiedLinearAutoencoder, tied_linear_backward, tied_linear_forward
from ..registry import OpSpec, Sample, from_layer, from_pair
from ..torch_twins import torch_tied_linear


def _samples(rng, dtype):
    return [
        Sample((rng.standard_normal((5, 7)).astype(dtype), rng.standard_normal((3, 7)).astype(dtype)),
               label="2-D"),
        Sample((rng.standard_normal((2, 3, 6)).astype(dtype), rng.standard_normal((4, 6)).astype(dtype)),
               label="3-D batch"),
    ]


def _stress(rng, dtype):
    """A batch of one, and a Stiefel point (orthonormal rows: the tied map is then a projection)."""
    Q = np.linalg.qr(rng.standard_normal((7, 3)))[0].T
    return [
        Sample((rng.standard_normal((1, 7)).astype(dtype), rng.standard_normal((3, 7)).astype(dtype)),
               label="stress: batch of one"),
        Sample((rng.standard_normal((4, 7)).astype(dtype), Q.astype(dtype)),
               label="stress: orthonormal rows (a projection)"),
    ]


def _build(w, **kw):
    check_ndim("autoencoder.TiedLinearAutoencoder", "weight", w, (2,))
    layer = TiedLinearAutoencoder(w.shape[1], w.shape[0], dtype=w.dtype, rng=0)
    layer.weight.data = w
    return layer, [layer.weight]


OPS = [
    OpSpec("tied_linear", from_pair(tied_linear_forward, tied_linear_backward), _samples, torch=torch_tied_linear,
           stress=_stress, doc="y = x W^T W (decoder = encoder^T)", complex_step=True),
]

LAYERS = [
    OpSpec("autoencoder.TiedLinearAutoencoder", from_layer(_build), _samples, torch=torch_tied_linear,
           kind="layer", stress=_stress),
]
