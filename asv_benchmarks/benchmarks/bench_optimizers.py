"""Orthogonalized and manifold optimizers (``orthoref.optim``): one step of Muon (Newton–Schulz; and the
exact polar factor), Riemannian SGD / Adam and Cayley SGD / Adam on a Stiefel weight, with Adam as the
Euclidean baseline; and the orthogonality of the weight after ``k`` Stiefel steps (``track_*``).

The weight is ``W = orthogonal((n, n // 2))`` (orthonormal columns, seed 0) with a fixed Gaussian gradient
(norm ≈ 1, seed 1); the optimizers never modify ``.grad``, so repeated steps see the same gradient.
"""
import numpy as np

from orthoref import backend, init, optim
from orthoref.nn import Parameter
from orthoref.ortho import stiefel

try:
    from ._common import BACKENDS, DTYPES, device, gaussian, host, require, sizes, sync
except ImportError:  # loaded as a lone file (tests/test_cli_bench.py imports the modules by path)
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from _common import BACKENDS, DTYPES, device, gaussian, host, require, sizes, sync

SIZES = sizes([64, 128])

#: name -> factory(params): the optimizers timed and walked
OPTIMIZERS = {
    "adam": lambda ps: optim.Adam(ps, lr=1e-3),
    "muon": lambda ps: optim.Muon(ps, lr=0.02),
    "muon_svd": lambda ps: optim.Muon(ps, lr=0.02, coefficients="svd"),
    "riemannian_sgd": lambda ps: optim.RiemannianSGD(ps, lr=0.05, momentum=0.9),
    "riemannian_adam": lambda ps: optim.RiemannianAdam(ps, lr=1e-3),
    "cayley_sgd": lambda ps: optim.CayleySGD(ps, lr=0.05),
    "cayley_adam": lambda ps: optim.CayleyAdam(ps, lr=1e-3),
}
STIEFEL = ["riemannian_sgd", "riemannian_adam", "cayley_sgd", "cayley_adam"]


def _weight(n, dtype, backend_name):
    with backend.using(backend_name):
        return init.orthogonal((n, n // 2), rng=0, dtype=np.dtype(dtype))


class Optimizers:
    """``opt.step()`` on one ``(n, n // 2)`` weight."""
    params = (SIZES, DTYPES, BACKENDS)
    param_names = ["n", "dtype", "backend"]
    timeout = 120

    def setup(self, n, dtype, backend_name):
        require(backend_name)
        W = _weight(n, dtype, backend_name)
        grad = device(backend_name, gaussian(W.shape, dtype, 1, 1.0 / np.sqrt(W.size)))
        self.opts = {}
        for name, make in OPTIMIZERS.items():
            p = Parameter(W.copy())
            p.grad = grad
            self.opts[name] = make([p])
            self.opts[name].step()                 # creates the state (and checks feasibility)

    def _step(self, name, backend_name):
        self.opts[name].step()
        sync(backend_name)

    def time_adam_step(self, n, dtype, backend_name):
        self._step("adam", backend_name)

    def time_muon_step(self, n, dtype, backend_name):
        self._step("muon", backend_name)

    def time_muon_svd_step(self, n, dtype, backend_name):
        self._step("muon_svd", backend_name)

    def time_riemannian_sgd_step(self, n, dtype, backend_name):
        self._step("riemannian_sgd", backend_name)

    def time_riemannian_adam_step(self, n, dtype, backend_name):
        self._step("riemannian_adam", backend_name)

    def time_cayley_sgd_step(self, n, dtype, backend_name):
        self._step("cayley_sgd", backend_name)

    def time_cayley_adam_step(self, n, dtype, backend_name):
        self._step("cayley_adam", backend_name)


class StiefelOptimizerDrift:
    """``‖WᵀW − I‖_F`` of a ``(64, 32)`` weight after ``k`` = 100 steps of a Stiefel optimizer, a fresh
    Gaussian gradient (seed 1) each step. The optimizers' drift guard restores ``W`` by QR above 1e-12
    (float64) / 1e-6 (float32), so the number stays below those; a rise means the step or the guard broke."""
    params = (STIEFEL, DTYPES, BACKENDS)
    param_names = ["optimizer", "dtype", "backend"]
    unit = "‖WᵀW − I‖_F"
    timeout = 120
    steps = 100

    def setup(self, name, dtype, backend_name):
        require(backend_name)
        if name not in OPTIMIZERS:
            raise NotImplementedError(f"{name} is not benchmarked")

    def track_orthogonality_after_steps(self, name, dtype, backend_name):
        p = Parameter(_weight(64, dtype, backend_name))
        opt = OPTIMIZERS[name]([p])
        rng = np.random.default_rng(1)
        for _ in range(self.steps):
            p.grad = device(backend_name, (rng.standard_normal(p.shape) / 8).astype(dtype))
            opt.step()
        return stiefel.orthonormality_error(host(p.data).astype(np.float64))
