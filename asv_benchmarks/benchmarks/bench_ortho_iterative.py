"""Iterative orthogonalization benchmarks: Newton–Schulz (Muon's quintic, the Polar Express) and Björck,
forward and unrolled backward, beside PyTorch CPU running Muon's loop; and the worst-case singular-value
error of each Newton–Schulz coefficient set (``track_*``).

Inputs are ``(n, n)`` Gaussian matrices drawn with seed 0 (scaled by ``1/√n``); Newton–Schulz runs its
default 5 steps, Björck its default 15.
"""
import numpy as np

from orthoref.ortho import iterative

METHODS = ["newton_schulz_jordan", "newton_schulz_polar_express", "bjorck"]
SIZES = [64, 256, 1024]
DTYPES = ["float32", "float64"]


def _case(method, n, dtype):
    A = (np.random.default_rng(0).standard_normal((n, n)) / np.sqrt(n)).astype(dtype)
    if method == "bjorck":
        return iterative.bjorck, iterative.bjorck_vjp, {}, A
    coefficients = method[len("newton_schulz_"):]
    return iterative.newton_schulz, iterative.newton_schulz_vjp, {"coefficients": coefficients}, A


class Iterative:
    """``Y = f(A)`` and ``f_vjp(A, Ȳ)`` (the iterates recomputed and stored, then the reverse pass)."""
    params = (METHODS, SIZES, DTYPES)
    param_names = ["method", "n", "dtype"]
    timeout = 180

    def setup(self, method, n, dtype):
        if method not in METHODS:
            raise NotImplementedError(f"{method} is not benchmarked")
        self.f, self.f_vjp, self.kw, self.A = _case(method, n, dtype)
        self.gbar = np.random.default_rng(1).standard_normal(self.A.shape).astype(dtype)
        self.f(self.A, **self.kw)

    def time_forward(self, method, n, dtype):
        self.f(self.A, **self.kw)

    def time_vjp(self, method, n, dtype):
        self.f_vjp(self.A, self.gbar, **self.kw)

    def peakmem_vjp(self, method, n, dtype):
        self.f_vjp(self.A, self.gbar, **self.kw)


class TorchNewtonSchulz:
    """Muon's ``zeropower_via_newtonschulz5`` loop in PyTorch CPU (in the benchmark's dtype, not bfloat16),
    the line to compare ``Iterative.time_forward("newton_schulz_jordan", ...)`` against."""
    params = (SIZES, DTYPES)
    param_names = ["n", "dtype"]
    timeout = 120

    def setup(self, n, dtype):
        try:
            import torch
        except ImportError:
            raise NotImplementedError("PyTorch is not installed")
        _, _, _, A = _case("newton_schulz_jordan", n, dtype)
        self.torch = torch
        self.A = torch.from_numpy(A)
        self.time_forward(n, dtype)

    def time_forward(self, n, dtype):
        a, b, c = (3.4445, -4.7750, 2.0315)
        with self.torch.no_grad():
            X = self.A / (self.A.norm() + 1e-7)
            for _ in range(5):
                G = X @ X.T
                B = b * G + c * G @ G
                X = a * X + B @ X


class NSCoefficients:
    """``max_{σ ∈ [1e-3, 1]} |p(σ) − 1|`` of each coefficient set over its default steps (5 for one-row
    sets, the table's length otherwise): Muon's quintic plateaus (~0.53 at 5 steps from 1e-3), the Polar
    Express reaches rounding level in its eight steps."""
    params = (["cubic", "jordan", "you", "polar_express"],)
    param_names = ["coefficients"]
    unit = "max |p(σ) - 1|"

    def track_ns_worst_error(self, name):
        return iterative.ns_worst_error(name)
