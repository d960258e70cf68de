"""Valid inputs for every registered op, one module per family, and their registration.

Each family module holds its samplers (``sample(rng, dtype) -> list[Sample]``, kept away from kinks so that
finite differences are exact) and two lists of :class:`~orthoref.oracle.registry.OpSpec`: ``OPS`` (functions)
and ``LAYERS`` (``nn`` modules). The PyTorch twins live in :mod:`orthoref.oracle.torch_twins`, the JAX twins in
:mod:`orthoref.oracle.jax_twins`; the library modules hold only the math. Importing this package registers every
spec, in the order of ``_ORDER`` (the registry's order: ops, then layers, then the orthogonality maps and
singular-value clipping, the orthogonal layers, the regularizers, the decorrelation and whitening maps and the
tied linear autoencoder).
"""
from __future__ import annotations

from ..registry import register
from . import (activation, autoencoder, conv, decomp, decorrelation, iterative, linear, loss, norm, orthogonal, pool,
               regularizers, rnn, singular, stiefel)

_ORDER = (
    (activation, "OPS"), (conv, "OPS"), (linear, "OPS"), (loss, "OPS"), (norm, "OPS"), (pool, "OPS"), (rnn, "OPS"),
    (linear, "LAYERS"), (conv, "LAYERS"), (pool, "LAYERS"), (activation, "LAYERS"), (norm, "LAYERS"),
    (rnn, "LAYERS"),
    (decomp, "OPS"), (iterative, "OPS"), (stiefel, "OPS"), (singular, "OPS"), (orthogonal, "LAYERS"),
    (regularizers, "OPS"),
    (decorrelation, "OPS"),
    (autoencoder, "OPS"), (autoencoder, "LAYERS"),
)

for _family, _kind in _ORDER:
    for _spec in getattr(_family, _kind):
        register(_spec)
