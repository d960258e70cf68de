"""Orthogonalization maps and Stiefel retractions (``orthoref.ortho``): every map's forward and backward
pass (``NAME_vjp``), the orthogonality of its result, the drift of ``k`` retraction steps and the worst-case
error of every Newton–Schulz coefficient set (``track_*``); PyTorch's routes beside them.

Inputs (seed 0): ``A`` Gaussian / √n of shape ``(n, n)`` for the square maps (a skew ``A`` of Frobenius norm
0.1 for ``cayley`` / ``expm_skew``; Householder vectors from ``geqrf`` of ``A``); for the Stiefel maps a
point ``W`` of shape ``(n, n // 4)`` and a tangent step ``Z`` of norm 0.1 (``cayley_iterative``: two
iterations, α = 1, the paper's setting); ``project_tangent`` projects a Gaussian ``G`` at ``W``.
Newton–Schulz runs its default 5 steps, Björck 15. ``check=False`` where a function offers it.
"""
import numpy as np

from orthoref.ortho import decomp, iterative, stiefel

try:
    import torch                       # imported here so that asv's forkserver imports it once
except ImportError:                    # the Torch* comparison lines are then skipped
    torch = None

try:
    from ._common import BACKENDS, DTYPES, device, host, require, sizes, sync
except ImportError:  # loaded as a lone file (tests/test_cli_bench.py imports the modules by path)
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from _common import BACKENDS, DTYPES, device, host, require, sizes, sync

SIZES = sizes([64, 128])
STEP = 0.1

#: maps whose result has orthonormal columns (or rows), exactly or approximately
ORTHOGONAL_MAPS = [
    "qr", "polar", "gram_schmidt_mgs", "gram_schmidt_cgs", "gram_schmidt_cgs2", "householder",
    "newton_schulz_jordan", "newton_schulz_polar_express", "newton_schulz_cubic", "newton_schulz_you",
    "bjorck", "cayley", "expm_skew", "retract_qr", "retract_polar", "retract_cayley", "retract_exp",
    "cayley_iterative",
]
#: every map: the orthogonal ones and the maps onto norm balls / tangent spaces
MAPS = ORTHOGONAL_MAPS + ["parseval_retraction", "spectral_normalize", "project_tangent"]
#: the maps walked by ``RetractionDrift``
RETRACTIONS = ["cayley", "expm_skew", "retract_qr", "retract_polar", "retract_cayley", "retract_exp",
               "cayley_iterative"]


def _square(n, dtype, seed=0):
    return (np.random.default_rng(seed).standard_normal((n, n)) / np.sqrt(n)).astype(dtype)


def _skew(rng, n, dtype, norm=STEP):
    A = rng.standard_normal((n, n))
    A = A - A.T
    return (A * (norm / np.linalg.norm(A))).astype(dtype)


def _point(rng, n, dtype):
    """``W`` (n, n // 4) with orthonormal columns and a tangent step ``Z`` at ``W`` of norm ``STEP``."""
    Q, R = np.linalg.qr(rng.standard_normal((n, max(n // 4, 1))))
    W = (Q * np.sign(np.diag(R))).astype(dtype)
    Z = stiefel.project_tangent(W, rng.standard_normal(W.shape).astype(dtype), check=False)
    return W, (Z * (STEP / np.linalg.norm(Z))).astype(dtype)


def _case(name, n, dtype):
    """``(forward, vjp, host_args)``: ``forward(*args)`` is the map's value, ``vjp(*args, ȳ)`` its
    backward pass."""
    if name in ("qr", "polar"):
        f, fv = {"qr": (decomp.qr_orthogonalize, decomp.qr_orthogonalize_vjp),
                 "polar": (decomp.polar, decomp.polar_vjp)}[name]
        return f, fv, (_square(n, dtype),)
    if name.startswith("gram_schmidt_"):
        m = name[len("gram_schmidt_"):]
        return (lambda a: decomp.gram_schmidt(a, method=m),
                lambda a, g: decomp.gram_schmidt_vjp(a, g, method=m), (_square(n, dtype),))
    if name == "householder":
        from scipy.linalg import lapack
        A = _square(n, dtype)
        qr, tau, _, _ = lapack.get_lapack_funcs("geqrf", (A,))(A)
        return decomp.householder_product, decomp.householder_product_vjp, (qr, tau)
    if name.startswith("newton_schulz_"):
        c = name[len("newton_schulz_"):]
        return (lambda a: iterative.newton_schulz(a, coefficients=c),
                lambda a, g: iterative.newton_schulz_vjp(a, g, coefficients=c), (_square(n, dtype),))
    if name == "bjorck":
        return iterative.bjorck, iterative.bjorck_vjp, (_square(n, dtype),)
    if name == "parseval_retraction":
        return iterative.parseval_retraction, iterative.parseval_retraction_vjp, (_square(n, dtype),)
    if name == "spectral_normalize":
        u = np.random.default_rng(1).standard_normal(n).astype(dtype)
        return (lambda a, u: iterative.spectral_normalize(a, u=u)[0],
                lambda a, u, g: iterative.spectral_normalize_vjp(a, g, u=u), (_square(n, dtype), u))
    rng = np.random.default_rng(0)
    if name in ("cayley", "expm_skew"):
        f, fv = {"cayley": (stiefel.cayley, stiefel.cayley_vjp),
                 "expm_skew": (stiefel.expm_skew, stiefel.expm_skew_vjp)}[name]
        return f, fv, (_skew(rng, n, dtype),)
    W, Z = _point(rng, n, dtype)
    if name.startswith("retract_"):
        m = name[len("retract_"):]
        return (lambda w, z: stiefel.retract(w, z, m, check=False),
                lambda w, z, g: stiefel.retract_vjp(w, z, g, m, check=False), (W, Z))
    if name == "cayley_iterative":
        return (lambda w, z: stiefel.cayley_iterative(w, z, 1.0, iterations=2, check=False),
                lambda w, z, g: stiefel.cayley_iterative_vjp(w, z, 1.0, g, iterations=2, check=False), (W, Z))
    if name == "project_tangent":
        G = np.random.default_rng(3).standard_normal(W.shape).astype(dtype)
        return (lambda w, g: stiefel.project_tangent(w, g, check=False),
                lambda w, g, gb: stiefel.project_tangent_vjp(w, g, gb, check=False), (W, G))
    raise NotImplementedError(f"{name} is not a benchmarked map")


def _prepare(obj, name, n, dtype, backend_name):
    """Shared setup: the case on ``backend_name``, one forward (a map the backend lacks, e.g. ``expm`` on
    CuPy, raises ``NotImplementedError`` here: asv skips it)."""
    require(backend_name)
    if name.startswith("gram_schmidt") and n > 256:
        raise NotImplementedError("column-by-column Gram–Schmidt is benchmarked up to n = 256")
    obj.forward, obj.vjp, host_args = _case(name, n, dtype)
    args = device(backend_name, *host_args)
    obj.args = args if isinstance(args, tuple) else (args,)
    return obj.forward(*obj.args)


class Projections:
    """``Y = f(A)`` and ``f_vjp(A, Ȳ)`` for every map (``method``; see the module docstring)."""
    params = (MAPS, SIZES, DTYPES, BACKENDS)
    param_names = ["method", "n", "dtype", "backend"]
    timeout = 180

    def setup(self, name, n, dtype, backend_name):
        Y = _prepare(self, name, n, dtype, backend_name)
        self.gbar = device(backend_name, np.random.default_rng(4).standard_normal(Y.shape).astype(dtype))

    def time_forward(self, name, n, dtype, backend_name):
        self.forward(*self.args)
        sync(backend_name)

    def time_vjp(self, name, n, dtype, backend_name):
        self.vjp(*self.args, self.gbar)
        sync(backend_name)

    def peakmem_vjp(self, name, n, dtype, backend_name):
        self.vjp(*self.args, self.gbar)


class ProjectionOrthogonality:
    """``‖QᵀQ − I‖_2`` (float64 evaluation) of the result of each map whose result is meant to be
    orthogonal (Newton–Schulz with 5 steps and Björck only approximately: a change is a numerical change)."""
    params = (ORTHOGONAL_MAPS, SIZES, DTYPES, BACKENDS)
    param_names = ["method", "n", "dtype", "backend"]
    timeout = 120

    def setup(self, name, n, dtype, backend_name):
        _prepare(self, name, n, dtype, backend_name)

    def track_orthogonality_error(self, name, n, dtype, backend_name):
        return decomp.orthogonality_error(host(self.forward(*self.args)))

    track_orthogonality_error.unit = "norm"


class RetractionDrift:
    """``‖WᵀW − I‖_F`` after ``k`` = 100 steps along random tangent directions of norm 0.1, float64, with no
    re-orthonormalization (``cayley`` / ``expm_skew`` walk multiplicatively on O(n): ``Q ← Q map(Ω)``).
    ``cayley_iterative`` (two iterations) is not an exact retraction: its drift is the truncation error."""
    params = (RETRACTIONS, sizes([32, 64]), BACKENDS)
    param_names = ["method", "n", "backend"]
    unit = "‖WᵀW − I‖_F"
    timeout = 300
    steps = 100

    def setup(self, name, n, backend_name):
        require(backend_name)
        if name not in RETRACTIONS:
            raise NotImplementedError(f"{name} is not a retraction")
        if backend_name == "cupy" and name in ("expm_skew", "retract_exp"):
            raise NotImplementedError(f"{name} is NumPy only")

    def track_orthogonality_drift(self, name, n, backend_name):
        rng = np.random.default_rng(1)
        if name in ("cayley", "expm_skew"):
            fn = stiefel.cayley if name == "cayley" else stiefel.expm_skew
            W = device(backend_name, np.eye(n))
            for _ in range(self.steps):
                W = W @ fn(device(backend_name, _skew(rng, n, np.float64)))
        else:
            W, _ = _point(rng, n, np.float64)
            W = device(backend_name, W)
            for _ in range(self.steps):
                Z = stiefel.project_tangent(W, device(backend_name, rng.standard_normal(W.shape)), check=False)
                Z = Z * (STEP / float(np.linalg.norm(host(Z))))
                if name == "cayley_iterative":
                    W = stiefel.cayley_iterative(W, Z, 1.0, iterations=2, check=False)
                else:
                    W = stiefel.retract(W, Z, name[len("retract_"):], check=False)
        return stiefel.orthonormality_error(host(W))


class NewtonSchulzCoefficients:
    """``max_{σ ∈ [1e-3, 1]} |p(σ) − 1|`` of every coefficient set of ``orthoref.ortho.NS_COEFFICIENTS`` over
    its default steps (5 for one-row sets, the table's length otherwise): Muon's quintic plateaus (~0.53 at
    5 steps from 1e-3), the Polar Express reaches rounding level in its eight steps."""
    params = (sorted(iterative.NS_COEFFICIENTS),)
    param_names = ["coefficients"]
    unit = "max |p(σ) − 1|"

    def setup(self, name):
        if name not in iterative.NS_COEFFICIENTS:
            raise NotImplementedError(f"{name} is not in NS_COEFFICIENTS at this commit")

    def track_worst_error(self, name):
        return iterative.ns_worst_error(name)


class TorchProjections:
    """PyTorch's routes (``torch.linalg.qr`` + sign fix; ``U @ Vh`` from ``torch.linalg.svd``;
    ``torch.linalg.householder_product``): forward, and forward + ``backward`` -- the lines to compare
    ``Projections`` against."""
    params = (["qr", "polar", "householder"], SIZES, DTYPES)
    param_names = ["method", "n", "dtype"]
    timeout = 120

    def setup(self, name, n, dtype):
        if torch is None:
            raise NotImplementedError("PyTorch is not installed")
        self.torch = torch
        A = _square(n, dtype)
        if name == "householder":
            _, _, (qr, tau) = _case("householder", n, dtype)
            self.inputs = [torch.from_numpy(qr), torch.from_numpy(tau)]
            self.fn = torch.linalg.householder_product
        else:
            self.inputs = [torch.from_numpy(A)]
            self.fn = {"qr": lambda X: decomp._torch_qr(X)[0], "polar": lambda X: decomp._torch_polar(X)[0]}[name]
        self.G = torch.from_numpy(np.random.default_rng(1).standard_normal((n, n)).astype(dtype))
        self.leaves = [x.clone().requires_grad_(True) for x in self.inputs]

    def time_forward(self, name, n, dtype):
        with self.torch.no_grad():
            self.fn(*self.inputs)

    def time_forward_backward(self, name, n, dtype):
        self.torch.autograd.grad(self.fn(*self.leaves), self.leaves, self.G)


class TorchNewtonSchulz:
    """Muon's ``zeropower_via_newtonschulz5`` loop in PyTorch CPU (in the benchmark's dtype, not bfloat16),
    the line to compare ``Projections.time_forward("newton_schulz_jordan", ...)`` against."""
    params = (SIZES, DTYPES)
    param_names = ["n", "dtype"]
    timeout = 120

    def setup(self, n, dtype):
        if torch is None:
            raise NotImplementedError("PyTorch is not installed")
        self.torch = torch
        self.A = torch.from_numpy(_square(n, dtype))
        self.time_forward(n, dtype)

    def time_forward(self, n, dtype):
        a, b, c = (3.4445, -4.7750, 2.0315)
        with self.torch.no_grad():
            X = self.A / (self.A.norm() + 1e-7)
            for _ in range(5):
                G = X @ X.T
                B = b * G + c * G @ G
                X = a * X + B @ X
