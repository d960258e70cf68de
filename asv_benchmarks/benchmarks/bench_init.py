"""Initializers (``orthoref.init``): orthogonal matrices by QR and by SVD, the delta-orthogonal and
block-orthogonal convolution kernels; the orthogonality error of the result (``track_*``); PyTorch's
``orthogonal_`` beside them.

The seconds-long 4096 x 4096 case against PyTorch is ``orthoref bench --cases init_orthogonal_4096``.
"""
import numpy as np

from orthoref import backend, init
from orthoref.ortho import orthogonality_error

try:
    import torch                       # imported here so that asv's forkserver imports it once
except ImportError:                    # the Torch* comparison lines are then skipped
    torch = None

try:
    from ._common import BACKENDS, DTYPES, host, require, sizes, sync
except ImportError:  # loaded as a lone file (tests/test_cli_bench.py imports the modules by path)
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from _common import BACKENDS, DTYPES, host, require, sizes, sync

SIZES = sizes([64, 128])


class Init:
    """``orthogonal((n, n))`` (QR with sign fix, PyTorch's route; or SVD ``U Vᵀ``), ``delta_orthogonal``
    and ``block_orthogonal_conv`` of an ``(n, n // 2, 3, 3)`` kernel; Gaussians drawn on the host (seed 0),
    the result created on ``backend``."""
    params = (SIZES, DTYPES, BACKENDS)
    param_names = ["n", "dtype", "backend"]
    timeout = 120

    def setup(self, n, dtype, backend_name):
        require(backend_name)
        self.dtype = np.dtype(dtype)
        self.conv_shape = (n, n // 2, 3, 3)

    def _draw(self, fn, shape, backend_name, **kw):
        with backend.using(backend_name):
            out = fn(shape, rng=0, dtype=self.dtype, **kw)
        sync(backend_name)
        return out

    def time_orthogonal(self, n, dtype, backend_name):
        self._draw(init.orthogonal, (n, n), backend_name)

    def time_orthogonal_svd(self, n, dtype, backend_name):
        self._draw(init.orthogonal, (n, n), backend_name, method="svd")

    def time_delta_orthogonal(self, n, dtype, backend_name):
        self._draw(init.delta_orthogonal, self.conv_shape, backend_name)

    def time_block_orthogonal(self, n, dtype, backend_name):
        self._draw(init.block_orthogonal_conv, self.conv_shape, backend_name)

    def track_orthogonality_error(self, n, dtype, backend_name):
        """``‖QᵀQ − I‖_2`` of ``orthogonal((n, n))`` (QR), evaluated in float64."""
        return orthogonality_error(host(self._draw(init.orthogonal, (n, n), backend_name)))

    track_orthogonality_error.unit = "norm"

    def track_orthogonality_error_svd(self, n, dtype, backend_name):
        """``‖QᵀQ − I‖_2`` of ``orthogonal((n, n), method="svd")``, evaluated in float64."""
        return orthogonality_error(host(self._draw(init.orthogonal, (n, n), backend_name, method="svd")))

    track_orthogonality_error_svd.unit = "norm"


class TorchInit:
    """``torch.nn.init.orthogonal_`` on the CPU, the line to compare ``Init.time_orthogonal`` with."""
    params = (SIZES, DTYPES)
    param_names = ["n", "dtype"]

    def setup(self, n, dtype):
        if torch is None:
            raise NotImplementedError("PyTorch is not installed")
        self.torch = torch
        self.t = torch.empty(n, n, dtype=getattr(torch, dtype))

    def time_orthogonal(self, n, dtype):
        self.torch.nn.init.orthogonal_(self.t)
