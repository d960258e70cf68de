"""Optimizers (every class of ``orthoref.optim``): one step on a Stiefel weight -- Muon (Newton–Schulz; and
the exact polar factor), the Riemannian and Cayley optimizers of ``orthoref.optim.riemannian``, and the
Euclidean ones as baselines; and the orthogonality of the weight after ``k`` Stiefel steps (``track_*``).

The weight is ``W = orthogonal((n, n // 2))`` (orthonormal columns, seed 0) with a fixed Gaussian gradient
(norm ≈ 1, seed 1); the optimizers never modify ``.grad``, so repeated steps see the same gradient.
"""
import numpy as np

from orthoref import backend, init, optim
from orthoref.nn import Parameter
from orthoref.optim import riemannian

from .common import BACKENDS, DTYPES, Benchmark, device, gaussian, gram_error, grid, require, sizes, sync

#: keyword arguments where a class has no default (``lr``) or a setting is worth its own line
SETTINGS = {"RiemannianSGD": dict(lr=0.05, momentum=0.9), "CayleySGD": dict(lr=0.05), "CayleyAdam": dict(lr=1e-3),
            "OGD": dict(lr=0.05)}
#: name -> (class, keyword arguments): every optimizer of ``orthoref.optim.__all__``, and Muon with the
#: exact polar factor
OPTIMIZERS = {name: (getattr(optim, name), SETTINGS.get(name, {})) for name in optim.__all__ if name != "Optimizer"}
OPTIMIZERS["Muon(coefficients=svd)"] = (optim.Muon, dict(coefficients="svd"))
#: the optimizers that keep a weight on the Stiefel manifold
STIEFEL = [name for name in riemannian.__all__ if name in OPTIMIZERS]


def _make(name, params):
    cls, kwargs = OPTIMIZERS[name]
    return cls(params, **kwargs)


def _weight(n, dtype, backend_name):
    with backend.using(backend_name):
        return init.orthogonal((n, n // 2), rng=0, dtype=np.dtype(dtype))


class Optimizers(Benchmark):
    """``opt.step()`` on one ``(n, n // 2)`` weight."""
    params, param_names = grid(optimizer=list(OPTIMIZERS), n=sizes([64, 128]), dtype=DTYPES, backend=BACKENDS)

    def setup(self, name, n, dtype, backend_name):
        require(backend_name)
        W = _weight(n, dtype, backend_name)
        p = Parameter(W)
        p.grad = device(backend_name, gaussian(W.shape, dtype, 1, 1.0 / np.sqrt(W.size)))
        self.opt = _make(name, [p])
        self.opt.step()                            # creates the state (and checks feasibility)

    def time_step(self, name, n, dtype, backend_name):
        self.opt.step()
        sync(backend_name)


class StiefelOptimizerDrift(Benchmark):
    """``‖WᵀW − I‖_F`` of a ``(64, 32)`` weight after ``k`` = 100 steps of a Stiefel optimizer, a fresh
    Gaussian gradient (seed 1) each step. The optimizers' drift guard restores ``W`` by QR above 1e-12
    (float64) / 1e-6 (float32), so the number stays below those; a rise means the step or the guard broke."""
    params, param_names = grid(optimizer=STIEFEL, dtype=DTYPES, backend=BACKENDS)
    unit = "‖WᵀW − I‖_F"
    steps = 100

    def setup(self, name, dtype, backend_name):
        require(backend_name)
        if name not in OPTIMIZERS:
            raise NotImplementedError(f"{name} is not benchmarked")

    def track_orthogonality_after_steps(self, name, dtype, backend_name):
        p = Parameter(_weight(64, dtype, backend_name))
        opt = _make(name, [p])
        rng = np.random.default_rng(1)
        for _ in range(self.steps):
            p.grad = device(backend_name, (rng.standard_normal(p.shape) / 8).astype(dtype))
            opt.step()
        return gram_error(p.data, "fro")
