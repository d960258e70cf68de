"""Decorrelation and whitening (``orthoref.decorrelation``): every map and penalty of the module in the op
registry, forward and backward through the registry's ``apply``, and the whitening layers
(``nn.DecorrelatedBatchNorm``, ``nn.IterNorm``) forward + backward in training mode.

Inputs (seed 0): a batch ``X (m, d)`` of ``m = 256`` samples with a spread of feature variances
(``X = Z diag(s)``, ``Z`` Gaussian, ``s`` from 1 down to 0.1) and a mean of 1; ``d`` the size parameter.
The group-wise maps use groups of ``d/4`` features, IterNorm its default 5 iterations. The layers see a
conv output ``(16, d, 4, 4)`` read as ``(256, d)``, groups of 16 channels (the paper's setting).
"""
import functools

import numpy as np

from orthoref import backend, decorrelation, nn
from orthoref.oracle.registry import get

from .common import BACKENDS, DTYPES, Benchmark, device, grid, registry_ops, require, sizes, sync

SIZES = sizes([32, 64])
#: registry name -> function of ``orthoref.decorrelation`` it exercises, registry order
OPS = registry_ops(set(decorrelation.__all__))
GROUPED = ("group_zca_whitening", "iternorm_whitening")
LAYERS = {"DecorrelatedBatchNorm": nn.DecorrelatedBatchNorm, "IterNorm": nn.IterNorm}


def _batch(m, d, dtype):
    """``X (m, d)``: Gaussian columns of standard deviations 1 … 0.1, mean 1."""
    s = np.logspace(0, -1, d)
    return (1.0 + np.random.default_rng(0).standard_normal((m, d)) * s).astype(dtype)


class Decorrelation(Benchmark):
    """``Y, vjp = apply(X)`` and ``vjp((Ȳ,))`` for every op of ``orthoref.decorrelation``."""
    params, param_names = grid(op=list(OPS), d=SIZES, dtype=DTYPES, backend=BACKENDS)

    def setup(self, op, d, dtype, backend_name):
        require(backend_name)
        kwargs = {"groups": d // 4} if op in GROUPED else {}
        X = device(backend_name, _batch(256, d, dtype))
        self.forward = functools.partial(get(op).apply, X, **kwargs)
        outputs, self.vjp = self.forward()
        gen = np.random.default_rng(4)
        self.gbar = tuple(device(backend_name, np.asarray(gen.standard_normal(y.shape), dtype)) for y in outputs)

    def time_forward(self, op, d, dtype, backend_name):
        self.forward()
        sync(backend_name)

    def time_vjp(self, op, d, dtype, backend_name):
        self.vjp(self.gbar)
        sync(backend_name)


class WhiteningLayers(Benchmark):
    """``layer.forward(x)`` then ``layer.backward(ȳ)`` in training mode (running statistics updated)."""
    params, param_names = grid(layer=list(LAYERS), channels=SIZES, dtype=DTYPES, backend=BACKENDS)

    def setup(self, layer, channels, dtype, backend_name):
        require(backend_name)
        x = _batch(256, channels, dtype).reshape(16, 4, 4, channels).transpose(0, 3, 1, 2)
        self.x = device(backend_name, np.ascontiguousarray(x))
        with backend.using(backend_name):                 # parameters and buffers on that backend
            self.layer = LAYERS[layer](channels, groups=16, dtype=np.dtype(dtype))
        self.gbar = device(backend_name, np.random.default_rng(4).standard_normal(self.x.shape).astype(dtype))

    def time_forward_backward(self, layer, channels, dtype, backend_name):
        self.layer.forward(self.x)
        self.layer.backward(self.gbar)
        sync(backend_name)
