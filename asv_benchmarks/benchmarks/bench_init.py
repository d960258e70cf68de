"""Initializers (``orthoref.init.INITIALIZERS``, every one): the time to draw a weight, the orthogonality
error of the orthogonal ones (``track_*``); PyTorch's ``orthogonal_`` beside them.

A matrix initializer draws ``(n, n)``; the convolution-only ones (``orthoref.train.CONV_ONLY_INITS``:
delta-orthogonal, block-orthogonal) an ``(n, n // 2, 3, 3)`` kernel. Gaussians are drawn on the host
(seed 0), the result is created on ``backend``. The seconds-long 4096 x 4096 case against PyTorch is
``orthoref bench --cases init_orthogonal_4096``.
"""
import numpy as np

from orthoref import backend
from orthoref.init import INITIALIZERS
from orthoref.train import CONV_ONLY_INITS

from .common import BACKENDS, DTYPES, Benchmark, gram_error, grid, require, require_torch, sizes, sync

SIZES = sizes([64, 128])
#: the initializers whose (matrix) result has orthonormal rows or columns
ORTHOGONAL = [name for name in INITIALIZERS if "orthogonal" in name and name not in CONV_ONLY_INITS]


def _draw(name, n, dtype, backend_name):
    shape = (n, n // 2, 3, 3) if name in CONV_ONLY_INITS else (n, n)
    with backend.using(backend_name):
        out = INITIALIZERS[name](shape, rng=0, dtype=np.dtype(dtype))
    sync(backend_name)
    return out


class Init(Benchmark):
    """``INITIALIZERS[name](shape, rng=0, dtype=dtype)``."""
    params, param_names = grid(initializer=list(INITIALIZERS), n=SIZES, dtype=DTYPES, backend=BACKENDS)

    def setup(self, name, n, dtype, backend_name):
        require(backend_name)

    def time_init(self, name, n, dtype, backend_name):
        _draw(name, n, dtype, backend_name)


class InitOrthogonality(Benchmark):
    """``‖QᵀQ − I‖_2`` (float64) of the ``(n, n)`` draw of each orthogonal initializer."""
    params, param_names = grid(initializer=ORTHOGONAL, n=SIZES, dtype=DTYPES, backend=BACKENDS)

    def setup(self, name, n, dtype, backend_name):
        require(backend_name)

    def track_orthogonality_error(self, name, n, dtype, backend_name):
        return gram_error(_draw(name, n, dtype, backend_name))

    track_orthogonality_error.unit = "norm"


class TorchInit(Benchmark):
    """``torch.nn.init.orthogonal_`` on the CPU, the line to compare ``Init.time_init("orthogonal", ...)``
    with."""
    params, param_names = grid(n=SIZES, dtype=DTYPES)

    def setup(self, n, dtype):
        self.torch = require_torch()
        self.t = self.torch.empty(n, n, dtype=getattr(self.torch, dtype))

    def time_orthogonal(self, n, dtype):
        self.torch.nn.init.orthogonal_(self.t)
