"""Cayley map, matrix exponential and Stiefel retractions (orthoref.ortho.stiefel) on NumPy/SciPy.

``cayley`` and ``expm_skew`` map a skew ``(n, n)`` matrix; the retractions and ``cayley_iterative`` (two
iterations, the paper's setting) move ``W`` of shape ``(n, n // 4)`` along a tangent step of Frobenius norm
0.1. ``track_orthogonality_drift`` walks 100 random steps in float64 and reports ``‖WᵀW - I‖_F`` at the
end (for ``cayley`` / ``expm_skew`` the walk is multiplicative on O(n): ``Q ← Q map(Ω)``).
"""
import numpy as np

from orthoref.ortho import stiefel

NAMES = ["cayley", "expm_skew", "retract_qr", "retract_polar", "retract_cayley", "retract_exp",
         "cayley_iterative"]
SIZES = [64, 256, 1024]
DTYPES = ["float32", "float64"]
STEP = 0.1


def _skew(rng, n, dtype, norm=STEP):
    A = rng.standard_normal((n, n))
    A = A - A.T
    return (A * (norm / np.linalg.norm(A))).astype(dtype)


def _point(rng, n, dtype):
    """``W`` (n, n // 4) with orthonormal columns and a tangent step ``Z`` of norm ``STEP``."""
    Q, R = np.linalg.qr(rng.standard_normal((n, max(n // 4, 1))))
    W = (Q * np.sign(np.diag(R))).astype(dtype)
    Z = stiefel.project_tangent(W, rng.standard_normal(W.shape).astype(dtype))
    return W, (Z * (STEP / np.linalg.norm(Z))).astype(dtype)


def _step(name):
    """``step(W, Z)``: one forward evaluation from the state ``W`` (also the drift walk's step)."""
    if name == "cayley":
        return lambda W, Z: W @ stiefel.cayley(Z)
    if name == "expm_skew":
        return lambda W, Z: W @ stiefel.expm_skew(Z)
    if name == "cayley_iterative":
        return lambda W, Z: stiefel.cayley_iterative(W, Z, 1.0, iterations=2, check=False)
    method = name[len("retract_"):]
    return lambda W, Z: stiefel.retract(W, Z, method, check=False)


class Stiefel:
    """One forward evaluation: ``cayley(A)`` / ``expm_skew(A)`` for skew ``A`` (n, n); a retraction
    ``retract(W, Z, method)`` / ``cayley_iterative(W, Z, 1.0)`` for ``W`` (n, n // 4)."""
    params = (NAMES, SIZES, DTYPES)
    param_names = ["name", "n", "dtype"]
    timeout = 120

    def setup(self, name, n, dtype):
        if name not in NAMES:
            raise NotImplementedError(f"{name} is not a Stiefel benchmark")
        # Every combination runs in about a second or less at n = 1024 on a laptop core; nothing is skipped.
        rng = np.random.default_rng(0)
        if name in ("cayley", "expm_skew"):
            A = _skew(rng, n, dtype)
            fn = stiefel.cayley if name == "cayley" else stiefel.expm_skew
            self.call = lambda: fn(A)
        else:
            W, Z = _point(rng, n, dtype)
            step = _step(name)
            self.call = lambda: step(W, Z)
        self.call()

    def time_forward(self, name, n, dtype):
        self.call()


class StiefelDrift:
    """``‖WᵀW - I‖_F`` after 100 steps of random tangent steps (norm 0.1), float64, no re-orthonormalization.
    ``cayley_iterative`` (two iterations) is not an exact retraction: its drift is the truncation error."""
    params = (NAMES, [64, 256])
    param_names = ["name", "n"]
    unit = "‖WᵀW - I‖_F"
    timeout = 300

    def setup(self, name, n):
        if name not in NAMES:
            raise NotImplementedError(f"{name} is not a Stiefel benchmark")

    def track_orthogonality_drift(self, name, n):
        rng = np.random.default_rng(1)
        step = _step(name)
        if name in ("cayley", "expm_skew"):
            W = np.eye(n)
            for _ in range(100):
                W = step(W, _skew(rng, n, np.float64))
        else:
            W, _ = _point(rng, n, np.float64)
            for _ in range(100):
                Z = stiefel.project_tangent(W, rng.standard_normal(W.shape), check=False)
                W = step(W, Z * (STEP / np.linalg.norm(Z)))
        return stiefel.orthonormality_error(W)
