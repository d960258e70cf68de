"""Initializer benchmarks: orthogonal weights by QR and by SVD, on NumPy/SciPy and CuPy, and the
orthogonality error of the result (``track_*``)."""
import numpy as np

from orthoref import backend, init


def _require(backend_name):
    if backend_name == "cupy" and not backend.cupy_available():
        raise NotImplementedError("CuPy or a GPU is missing")


def _sync(backend_name):
    if backend_name == "cupy":
        import cupy
        cupy.cuda.Stream.null.synchronize()


class Init:
    """``orthogonal((n, n))``: Gaussian drawn on the host, QR (PyTorch's route) or SVD (``U Vᵀ``)."""
    params = ([256, 1024, 4096], ["float32", "float64"], ["numpy", "cupy"])
    param_names = ["n", "dtype", "backend"]
    timeout = 300

    def setup(self, n, dtype, backend_name):
        _require(backend_name)
        if n > 1024 and dtype != "float32":
            raise NotImplementedError("4096 is timed in float32 only")
        self._previous = backend.active()
        backend.use(backend_name)
        self.dtype = np.dtype(dtype)

    def teardown(self, n, dtype, backend_name):
        backend.use(self._previous)

    def time_orthogonal(self, n, dtype, backend_name):
        init.orthogonal((n, n), rng=0, dtype=self.dtype)
        _sync(backend_name)

    def time_orthogonal_svd(self, n, dtype, backend_name):
        if n > 1024:
            raise NotImplementedError("the SVD route is timed up to 1024")
        init.orthogonal((n, n), rng=0, dtype=self.dtype, method="svd")
        _sync(backend_name)


class InitConv:
    """The convolution kernels: delta-orthogonal and Xiao et al.'s block-orthogonal construction."""
    params = ([(64, 64, 3, 3), (256, 128, 3, 3)],)
    param_names = ["shape"]

    def time_delta_orthogonal(self, shape):
        init.delta_orthogonal(shape, rng=0)

    def time_block_orthogonal(self, shape):
        init.block_orthogonal_conv(shape, rng=0)


class OrthogonalityError:
    """``max |QᵀQ - I|`` of ``orthogonal((n, n), dtype=float64)`` (drift would show a numerical bug)."""
    params = ([256, 1024], ["qr", "svd"], ["numpy", "cupy"])
    param_names = ["n", "method", "backend"]
    unit = "max abs error"

    def setup(self, n, method, backend_name):
        _require(backend_name)

    def track_orthogonality_error(self, n, method, backend_name):
        with backend.using(backend_name):
            q = backend.to_numpy(init.orthogonal((n, n), rng=0, dtype=np.float64, method=method))
        return float(np.abs(q.T @ q - np.eye(n)).max())


class TorchOrthogonal:
    """``torch.nn.init.orthogonal_`` on the CPU, the line to compare ``Init.time_orthogonal`` with."""
    params = ([256, 1024, 4096],)
    param_names = ["n"]
    timeout = 300

    def setup(self, n):
        try:
            import torch
        except ImportError:
            raise NotImplementedError("PyTorch is not installed")
        self.torch = torch

    def time_orthogonal_(self, n):
        self.torch.nn.init.orthogonal_(self.torch.empty(n, n))
