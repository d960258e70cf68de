"""Orthogonalization maps and Stiefel retractions: every op of ``orthoref.ortho`` in the op registry, its
forward and backward pass timed through the registry's ``apply`` (``Y, vjp = apply(*inputs)``; the
variants of ``gram_schmidt`` and ``newton_schulz`` from the package's ``GRAM_SCHMIDT_METHODS`` and
``NS_COEFFICIENTS``), the orthogonality of the result, the drift of ``k`` retraction steps and the
worst-case error of every Newton–Schulz coefficient set (``track_*``); PyTorch's routes beside them.

Inputs (seed 0): ``A`` Gaussian / √n of shape ``(n, n)`` for the square maps (a skew ``A`` of Frobenius norm
0.1 for ``cayley`` / ``expm_skew``; Householder vectors from ``geqrf`` of ``A``); for the Stiefel maps a
point ``W`` of shape ``(n, n // 4)`` and a tangent step ``Z`` of norm 0.1 (``cayley_iterative``: two
iterations, α = 1, the paper's setting); ``project_tangent`` projects a Gaussian ``G`` at ``W``;
``procrustes`` maps ``A`` onto a second such matrix; ``clip_singular_values`` clips into [0.5, 1.5]; ``mclip``
clips at 1 (Newton–Schulz and SVD routes); ``polar_p`` returns both polar factors (a cotangent for each).
Newton–Schulz runs its default 5 steps, Björck 15. ``check=False`` where a function offers it.
"""
import functools

import numpy as np

from orthoref import ortho
from orthoref.oracle.registry import get
from orthoref.ortho import decomp, iterative, stiefel

from .common import (BACKENDS, DTYPES, Benchmark, device, gram_error, grid, host, registry_ops, require,
                     require_torch, sizes, sync)

SIZES = sizes([64, 128])
STEP = 0.1

#: registry name -> function of ``orthoref.ortho`` it exercises ("retract_qr" -> "retract"), registry order
OPS = registry_ops(set(ortho.__all__))
#: registry ops timed once per value of a keyword: name -> (keyword, the package's table of its values)
VARIANTS = {"gram_schmidt": ("method", decomp.GRAM_SCHMIDT_METHODS),
            "newton_schulz": ("coefficients", tuple(iterative.NS_COEFFICIENTS))}
#: method (a benchmark parameter) -> (registry name, keyword arguments of the variant)
METHODS = {}
for _op in OPS:
    _kw, _values = VARIANTS.get(_op, (None, (None,)))
    for _v in _values:
        METHODS[_op if _v is None else f"{_op}_{_v}"] = (_op, {} if _v is None else {_kw: _v})
#: functions whose result is not meant to be orthogonal (maps onto norm balls and tangent spaces)
NOT_ORTHOGONAL = ("parseval_retraction", "spectral_normalize", "project_tangent", "clip_singular_values", "mclip")
ORTHOGONAL_MAPS = [m for m, (op, _) in METHODS.items() if OPS[op] not in NOT_ORTHOGONAL]
#: the maps walked by ``RetractionDrift``: the skew maps on O(n) and every retraction of the registry
RETRACTIONS = ["cayley", "expm_skew"] + [op for op, fn in OPS.items() if fn in ("retract", "cayley_iterative")]


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


def _householder(n, dtype):
    """``(qr, tau)``: the Householder vectors of ``geqrf`` of ``_square(n)``."""
    from scipy.linalg import lapack
    A = _square(n, dtype)
    qr, tau, _, _ = lapack.get_lapack_funcs("geqrf", (A,))(A)
    return qr, tau


def _inputs(op, n, dtype):
    """``(inputs, kwargs)`` on the host of the registry's ``apply`` of ``op`` (arrays among the keyword
    arguments too)."""
    fn = OPS[op]
    if fn == "householder_product":
        return _householder(n, dtype), {}
    if fn == "spectral_normalize":
        return (_square(n, dtype),), {"u": np.random.default_rng(1).standard_normal(n).astype(dtype)}
    if fn == "procrustes":
        return (_square(n, dtype), _square(n, dtype, seed=1)), {}
    if fn == "clip_singular_values":
        return (_square(n, dtype),), {"lo": 0.5, "hi": 1.5}
    if op in ("polar_p", "mclip_svd"):
        return (_square(n, dtype),), {"polar_p": {"return_p": True}, "mclip_svd": {"method": "svd"}}[op]
    rng = np.random.default_rng(0)
    if fn in ("cayley", "expm_skew"):
        return (_skew(rng, n, dtype),), {}
    if fn not in ("retract", "cayley_iterative", "project_tangent"):
        return (_square(n, dtype),), {}
    W, Z = _point(rng, n, dtype)
    if fn == "retract":
        return (W, Z), {"method": op[len("retract_"):], "check": False}
    if fn == "cayley_iterative":
        return (W, Z), {"alpha": 1.0, "iterations": 2, "check": False}
    G = np.random.default_rng(3).standard_normal(W.shape).astype(dtype)
    if op == "project_tangent":
        return (G,), {"W": W, "check": False}
    return (W, G), {"check": False}                          # project_tangent_wg: the vjp to W and G


def _prepare(obj, method, n, dtype, backend_name):
    """Shared setup: ``obj.forward()`` (the registry's ``apply`` of the method's op on its inputs, on
    ``backend_name``), run once; returns its ``(outputs, vjp)`` (a map the backend lacks, e.g. ``expm`` on
    CuPy, raises ``NotImplementedError`` here: asv skips it)."""
    require(backend_name)
    if method.startswith("gram_schmidt") and n > 256:
        raise NotImplementedError("column-by-column Gram–Schmidt is benchmarked up to n = 256")
    op, variant = METHODS[method]
    args, kwargs = _inputs(op, n, dtype)
    on = {k: device(backend_name, v) if isinstance(v, np.ndarray) else v for k, v in {**kwargs, **variant}.items()}
    args = device(backend_name, *args)
    obj.forward = functools.partial(get(op).apply, *(args if isinstance(args, tuple) else (args,)), **on)
    return obj.forward()


class Projections(Benchmark):
    """``Y, vjp = apply(*inputs)`` and ``vjp((Ȳ,))`` for every map (``method``; see the module docstring)."""
    params, param_names = grid(method=list(METHODS), n=SIZES, dtype=DTYPES, backend=BACKENDS)
    timeout = 180

    def setup(self, method, n, dtype, backend_name):
        outputs, self.vjp = _prepare(self, method, n, dtype, backend_name)
        gen = np.random.default_rng(4)
        self.gbar = tuple(device(backend_name, np.asarray(gen.standard_normal(y.shape), dtype)) for y in outputs)

    def time_forward(self, method, n, dtype, backend_name):
        self.forward()
        sync(backend_name)

    def time_vjp(self, method, n, dtype, backend_name):
        self.vjp(self.gbar)
        sync(backend_name)

    def peakmem_vjp(self, method, n, dtype, backend_name):
        self.vjp(self.gbar)


class ProjectionOrthogonality(Benchmark):
    """``‖QᵀQ − I‖_2`` (float64 evaluation) of the result of each map whose result is meant to be
    orthogonal (Newton–Schulz with 5 steps and Björck only approximately: a change is a numerical change)."""
    params, param_names = grid(method=ORTHOGONAL_MAPS, n=SIZES, dtype=DTYPES, backend=BACKENDS)

    def setup(self, method, n, dtype, backend_name):
        _prepare(self, method, n, dtype, backend_name)

    def track_orthogonality_error(self, method, n, dtype, backend_name):
        return gram_error(self.forward()[0][0])          # the orthogonal factor (polar_p: U; procrustes: R)

    track_orthogonality_error.unit = "norm"


class RetractionDrift(Benchmark):
    """``‖WᵀW − I‖_F`` after ``k`` = 100 steps along random tangent directions of norm 0.1, float64, with no
    re-orthonormalization (``cayley`` / ``expm_skew`` walk multiplicatively on O(n): ``Q ← Q map(Ω)``).
    ``cayley_iterative`` (two iterations) is not an exact retraction: its drift is the truncation error."""
    params, param_names = grid(method=RETRACTIONS, n=sizes([32, 64]), backend=BACKENDS)
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
            fn = getattr(stiefel, name)
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
        return gram_error(W, "fro")


class ConvOperatorClip(Benchmark):
    """The singular values of a convolution *operator* (circular padding) and their clip into ``[0, 1]`` then
    back to the 3x3 support (Sedghi et al. 2019): a 16 -> 16 channel 3x3 kernel on ``n x n`` images, one
    16 x 16 SVD per frequency."""
    params, param_names = grid(n=sizes([8, 16]), dtype=DTYPES)

    def setup(self, n, dtype):
        self.K = (np.random.default_rng(0).standard_normal((16, 16, 3, 3)) / 12).astype(dtype)

    def time_conv_singular_values(self, n, dtype):
        from orthoref.analysis import conv_singular_values
        conv_singular_values(self.K, (n, n))

    def time_clip_conv_singular_values(self, n, dtype):
        from orthoref.ortho import clip_conv_singular_values
        clip_conv_singular_values(self.K, (n, n), hi=1.0)


class NewtonSchulzCoefficients(Benchmark):
    """``max_{σ ∈ [1e-3, 1]} |p(σ) − 1|`` of every coefficient set of ``orthoref.ortho.NS_COEFFICIENTS`` over
    its default steps (5 for one-row sets, the table's length otherwise): Muon's quintic plateaus (~0.53 at
    5 steps from 1e-3), the Polar Express reaches rounding level in its eight steps."""
    params, param_names = grid(coefficients=sorted(iterative.NS_COEFFICIENTS))
    unit = "max |p(σ) − 1|"

    def setup(self, name):
        if name not in iterative.NS_COEFFICIENTS:
            raise NotImplementedError(f"{name} is not in NS_COEFFICIENTS at this commit")

    def track_worst_error(self, name):
        return iterative.ns_worst_error(name)


def _first_output(twin):
    """``twin`` returning its first output (a registry twin returns a tuple or one tensor)."""
    def fn(*tensors):
        out = twin(*tensors)
        return out[0] if isinstance(out, tuple) else out
    return fn


class TorchProjections(Benchmark):
    """PyTorch's routes, the registry's twins (``torch.linalg.qr`` + sign fix; ``U @ Vh`` from
    ``torch.linalg.svd``; ``torch.linalg.householder_product``): forward, and forward + ``backward`` -- the
    lines to compare ``Projections`` against."""
    params, param_names = grid(method=["qr_orthogonalize", "polar", "householder_product"], n=SIZES, dtype=DTYPES)

    def setup(self, name, n, dtype):
        self.torch = torch = require_torch()
        host_inputs = _householder(n, dtype) if name == "householder_product" else (_square(n, dtype),)
        self.inputs = [torch.from_numpy(a) for a in host_inputs]
        self.fn = _first_output(get(name).torch)
        self.G = torch.from_numpy(np.random.default_rng(1).standard_normal((n, n)).astype(dtype))
        self.leaves = [x.clone().requires_grad_(True) for x in self.inputs]

    def time_forward(self, name, n, dtype):
        with self.torch.no_grad():
            self.fn(*self.inputs)

    def time_forward_backward(self, name, n, dtype):
        self.torch.autograd.grad(self.fn(*self.leaves), self.leaves, self.G)


class TorchNewtonSchulz(Benchmark):
    """Muon's ``zeropower_via_newtonschulz5`` loop in PyTorch CPU (in the benchmark's dtype, not bfloat16),
    the line to compare ``Projections.time_forward("newton_schulz_jordan", ...)`` against."""
    params, param_names = grid(n=SIZES, dtype=DTYPES)

    def setup(self, n, dtype):
        self.torch = torch = require_torch()
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
