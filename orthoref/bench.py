"""Side-by-side timing of orthoref and PyTorch CPU in one process (``orthoref bench --vs torch``).

Both sides get the same thread count (``threadpoolctl`` for NumPy's and SciPy's BLAS, ``torch.set_num_threads``
for PyTorch), the same weights and the same inputs. They are timed in blocks A B A B, each block warmed up
first (BLAS and OpenMP worker threads spin for a while after a call; interleaving single steps would make
each side pay for the other's spinning threads: on 2 cores that made PyTorch look 2x slower), and the median
per-call time over all rounds is reported with the ratio orthoref / PyTorch (below 1 means orthoref is
faster) and the case's goal (``target``: the largest acceptable ratio).

The same run measures the machine's GEMM rate (``n x n @ n x n`` with NumPy and PyTorch under the same thread
limit, best of a few; ``2 n³ / t``); the higher of the two per dtype is the *GEMM peak*. Every case carries
an estimated FLOP count (its ``flops`` entry, the formula in ``flops_formula``), so that each side's rate
(GFLOP/s) and its fraction of that peak are reported. The counts are nominal: the same count for both sides
(the work of the textbook algorithm), only GEMM-like work, element-wise work not counted; an implementation
that does less work (a ``syrk`` for a symmetric product, fewer squarings) can exceed 100 % of the peak.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import importlib
import json
import math
import os
import platform
import re
import statistics
import time

import numpy as np

from . import __version__
from ._checks import check_bool
from .backend import asarray, get_array_module, host_rng, to_numpy, using
from ._progress import Progress
from .models import mlp, small_cnn
from .nn import Conv2d, Flatten, Linear, MaxPool2d, ReLU, cross_entropy
from .optim import Adam

__all__ = ["CASES", "format_results", "gemm_rates", "machine_info", "make_case", "run", "train_step"]


def train_step(model, opt, x, labels):
    """One step: forward, cross-entropy, backward (no gradient for the data), optimizer update."""
    logits = model.forward(x)
    loss, dlogits = cross_entropy(logits, labels)
    opt.zero_grad()
    model.backward(dlogits, input_grad=False)
    opt.step()
    return loss


def torch_twin(model):
    """A ``torch.nn.Sequential`` with the same layers and a copy of the same weights."""
    import torch

    layers = []
    for layer in model:
        if isinstance(layer, Linear):
            t = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        elif isinstance(layer, Conv2d):
            t = torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                                layer.padding, layer.dilation, layer.groups, bias=layer.bias is not None)
        elif isinstance(layer, ReLU):
            t = torch.nn.ReLU()
        elif isinstance(layer, MaxPool2d):
            t = torch.nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding)
        elif isinstance(layer, Flatten):
            t = torch.nn.Flatten()
        else:
            raise TypeError(f"torch_twin: no PyTorch twin for {type(layer).__name__}")
        for name, p in layer.named_parameters():
            getattr(t, name).data = torch.from_numpy(np.array(to_numpy(p.data), copy=True))
        layers.append(t)
    return torch.nn.Sequential(*layers)


def _synchronized(fn, xp):
    """``fn`` followed by a device synchronization on CuPy, so that it can be timed."""
    if xp is np:
        return fn

    def timed():
        out = fn()
        xp.cuda.Device().synchronize()
        return out
    return timed


def _train_case(build, shape, batch):
    """A case timing one train step of ``build(rng)`` on a random batch, and its PyTorch twin."""
    def make(gen, backend):
        with using(backend):
            model = build(gen)
            x_host = gen.standard_normal((batch,) + shape).astype(np.float32)
            labels_host = gen.integers(0, 10, size=batch)
            x, labels = asarray(x_host), asarray(labels_host)
        opt = Adam(model.parameters(), lr=1e-3)
        ours = _synchronized(lambda: train_step(model, opt, x, labels), get_array_module(x))
        try:
            import torch
        except ImportError:
            return ours, None
        tmodel = torch_twin(model)
        topt = torch.optim.Adam(tmodel.parameters(), lr=1e-3)
        tx, tlabels = torch.from_numpy(x_host), torch.from_numpy(labels_host)

        def theirs():
            topt.zero_grad()
            loss = torch.nn.functional.cross_entropy(tmodel(tx), tlabels)
            loss.backward()
            topt.step()
            return loss
        return ours, theirs
    return make


def _orthogonal_case(n):
    """``orthoref.init.orthogonal((n, n), float32)`` against ``torch.nn.init.orthogonal_``."""
    def make(gen, backend):
        from .init import orthogonal
        seed = int(gen.integers(1 << 31))
        with using(backend) as xp:
            pass

        def draw():
            with using(backend):
                return orthogonal((n, n), rng=seed, dtype=np.float32)
        ours = _synchronized(draw, xp)
        try:
            import torch
        except ImportError:
            return ours, None
        t = torch.empty(n, n, dtype=torch.float32)
        return ours, lambda: torch.nn.init.orthogonal_(t)
    return make


def _soft_orthogonality_case(shape):
    """``soft_orthogonality(W)`` value and gradient against autograd of ``‖G − I‖²_F`` (smaller Gram)."""
    def make(gen, backend):
        from .regularizers import soft_orthogonality
        w_host = gen.standard_normal(shape).astype(np.float32) / np.sqrt(shape[1])
        with using(backend) as xp:
            w = asarray(w_host)
        ours = _synchronized(lambda: soft_orthogonality(w), xp)
        try:
            import torch
        except ImportError:
            return ours, None
        tw = torch.from_numpy(w_host).requires_grad_(True)
        eye = torch.eye(min(shape), dtype=torch.float32)

        def theirs():
            tw.grad = None
            g = tw @ tw.T if shape[0] <= shape[1] else tw.T @ tw
            value = ((g - eye) ** 2).sum()
            value.backward()
            return value
        return ours, theirs
    return make


def _projection_case(name, n):
    """``polar`` or 5-step Jordan ``newton_schulz`` of an n x n float32 matrix vs the same in PyTorch."""
    def make(gen, backend):
        from .ortho import newton_schulz, polar
        a_host = gen.standard_normal((n, n)).astype(np.float32)
        with using(backend) as xp:
            a = asarray(a_host)
        ours = _synchronized((lambda: polar(a)) if name == "polar" else (lambda: newton_schulz(a)), xp)
        try:
            import torch
        except ImportError:
            return ours, None
        ta = torch.from_numpy(a_host)

        def torch_polar():
            u, _, vh = torch.linalg.svd(ta, full_matrices=False)
            return u @ vh

        def torch_newton_schulz():              # Keller Jordan's zeropower_via_newtonschulz5, float32
            a_, b_, c_ = 3.4445, -4.7750, 2.0315
            x = ta / (ta.norm() + 1e-7)
            for _ in range(5):
                g = x @ x.T
                x = a_ * x + (b_ * g + c_ * g @ g) @ x
            return x
        return ours, torch_polar if name == "polar" else torch_newton_schulz
    return make


def _conv_case(batch, c_in, c_out, size, kernel, padding):
    """``conv2d_forward`` + ``conv2d_backward`` (input, weight and bias gradients) against ``F.conv2d`` and
    ``torch.autograd.grad`` with the same output cotangent. Both return ``(y, dx, dw, db)``."""
    def make(gen, backend):
        from .ops.conv import conv2d_backward, conv2d_forward
        x_host = gen.standard_normal((batch, c_in, size, size)).astype(np.float32)
        w_host = gen.standard_normal((c_out, c_in, kernel, kernel)) / np.sqrt(c_in * kernel * kernel)
        w_host = w_host.astype(np.float32)
        b_host = gen.standard_normal(c_out).astype(np.float32)
        side = size + 2 * padding - kernel + 1
        dy_host = gen.standard_normal((batch, c_out, side, side)).astype(np.float32)
        with using(backend) as xp:
            x, w, b, dy = (asarray(a) for a in (x_host, w_host, b_host, dy_host))

        def conv():
            y, cache = conv2d_forward(x, w, b, padding=padding)
            return (y,) + tuple(conv2d_backward(dy, cache))
        ours = _synchronized(conv, xp)
        try:
            import torch
        except ImportError:
            return ours, None
        tx, tw, tb = (torch.from_numpy(a).requires_grad_(True) for a in (x_host, w_host, b_host))
        tdy = torch.from_numpy(dy_host)

        def theirs():
            y = torch.nn.functional.conv2d(tx, tw, tb, padding=padding)
            return (y,) + torch.autograd.grad(y, (tx, tw, tb), tdy)
        return ours, theirs
    return make


def _qr_case(n):
    """``qr_orthogonalize`` (Householder QR, ``diag R >= 0``) of an n x n float32 Gaussian against
    ``torch.linalg.qr`` with the same sign fix."""
    def make(gen, backend):
        from .ortho import qr_orthogonalize
        a_host = gen.standard_normal((n, n)).astype(np.float32)
        with using(backend) as xp:
            a = asarray(a_host)
        ours = _synchronized(lambda: qr_orthogonalize(a), xp)
        try:
            import torch
        except ImportError:
            return ours, None
        ta = torch.from_numpy(a_host)

        def theirs():
            q, r = torch.linalg.qr(ta, mode="reduced")
            d = torch.diagonal(r)
            return q * torch.where(d < 0, -1.0, 1.0).to(q.dtype)
        return ours, theirs
    return make


EXPM_NORM1 = 20.0          # ‖A‖₁ of the expm/Cayley input: 2 squarings for Padé 13 (θ₁₃ = 5.37)


def _skew(gen, n):
    """A float32 skew-symmetric n x n matrix scaled to ``‖A‖₁ = EXPM_NORM1``."""
    g = gen.standard_normal((n, n))
    a = g - g.T
    return (a * (EXPM_NORM1 / np.abs(a).sum(axis=0).max())).astype(np.float32)


def _skew_map_case(name, n):
    """``cayley(A)`` (``(I - A/2)⁻¹ (I + A/2)``, a solve) against ``torch.linalg.solve(I - A/2, I + A/2)``, or
    ``expm_skew(A)`` (``scipy.linalg.expm``) against ``torch.linalg.matrix_exp``; A skew, float32."""
    def make(gen, backend):
        from .ortho import cayley, expm_skew
        a_host = _skew(gen, n)
        with using(backend) as xp:
            a = asarray(a_host)
        fn = cayley if name == "cayley" else expm_skew
        ours = _synchronized(lambda: fn(a), xp)
        try:
            import torch
        except ImportError:
            return ours, None
        ta = torch.from_numpy(a_host)
        eye = torch.eye(n, dtype=torch.float32)
        if name == "cayley":
            return ours, lambda: torch.linalg.solve(eye - 0.5 * ta, eye + 0.5 * ta)
        return ours, lambda: torch.linalg.matrix_exp(ta)
    return make


# ---------------------------------------------------------------------------------------------------------
# FLOP counts (nominal, GEMM-like work only; the same count for both sides).

def _layer_macs(build, shape):
    """Multiply-adds per sample of each Linear / Conv2d of ``build(rng)`` on one input of ``shape``
    (``in·out``; ``Ho·Wo·O·(C/groups)·kh·kw``), in order, from a forward pass on one zero sample."""
    with using("numpy"):
        model = build(host_rng(0))
        x = np.zeros((1,) + shape, np.float32)
        macs = []
        for layer in model:
            x = layer.forward(x)
            if isinstance(layer, Linear):
                macs.append(layer.in_features * layer.out_features)
            elif isinstance(layer, Conv2d):
                kh, kw = layer.kernel_size
                macs.append(x.shape[-2] * x.shape[-1] * layer.out_channels * layer.in_channels // layer.groups
                            * kh * kw)
    return macs


def _train_flops(build, shape, batch):
    """``2·B·(3·Σ m_l − m_0)``: forward, weight-gradient and input-gradient products of every layer, no input
    gradient for the first (neither side computes it)."""
    def flops():
        macs = _layer_macs(build, shape)
        return 2 * batch * (3 * sum(macs) - macs[0])
    return flops


def _expm_flops(n, norm1=EXPM_NORM1, theta13=5.371920351148152):
    """Higham's Padé 13 scaling and squaring: 6 products, ``s = ⌈log₂(‖A‖₁/θ₁₃)⌉`` squarings, one solve
    with n right-hand sides (LU 2/3 n³ + 2 n³)."""
    s = max(0, math.ceil(math.log2(norm1 / theta13)))
    return (6 + s) * 2 * n ** 3 + 8 * n ** 3 // 3


_TRAIN_FORMULA = ("2·B·(3·Σ_l m_l − m_0), m = in·out (Linear), Ho·Wo·O·(C/groups)·kh·kw (Conv2d): forward, "
                  "weight-gradient and input-gradient products, no input gradient for the first layer; "
                  "ReLU, pooling, loss and Adam not counted")
_QR_FORMULA = "8/3·n³: Householder geqrf (4/3 n³ for n x n) + forming Q, orgqr (4/3 n³); sign fix not counted"


def _build_mlp(rng):
    return mlp((784, 512, 256, 10), rng=rng)


def _build_cnn(rng):
    return small_cnn(rng=rng)


#: ``make``: factory (rng, backend) -> (orthoref closure, PyTorch closure or None). ``flops``: zero-argument
#: callable, the case's nominal FLOP count; ``flops_formula``: how. ``target``: the goal for the ratio
#: orthoref / PyTorch (None: no goal). ``budget``: caps on (repeat, number, warmup) for cases whose call
#: takes tens of milliseconds or more. ``slow``: not run by default (``--cases all`` or by name).
CASES = {
    "mlp_train_step": {
        "make": _train_case(_build_mlp, (784,), 128), "dtype": "float32", "target": 1.0,
        "flops": _train_flops(_build_mlp, (784,), 128), "flops_formula": _TRAIN_FORMULA,
        "about": "MLP 784-512-256-10, ReLU, cross-entropy, Adam, batch 128, float32"},
    "cnn_train_step": {
        "make": _train_case(_build_cnn, (1, 28, 28), 64), "dtype": "float32", "target": 1.5,
        "flops": _train_flops(_build_cnn, (1, 28, 28), 64), "flops_formula": _TRAIN_FORMULA,
        "about": ("CNN conv(1,32,3)-relu-pool2-conv(32,64,3)-relu-pool2-linear(3136,10), cross-entropy, "
                  "Adam, batch 64, float32")},
    "conv2d_fwd_bwd": {
        "make": _conv_case(64, 32, 64, 14, 3, 1), "dtype": "float32", "target": None,
        "budget": {"repeat": 20, "number": 5, "warmup": 3},
        "flops": lambda: 3 * 2 * 64 * 64 * 14 * 14 * 32 * 3 * 3,
        "flops_formula": "3·2·N·O·Ho·Wo·C·kh·kw: forward, weight gradient, input gradient (bias not counted)",
        "about": ("conv2d forward + backward (dx, dw, db), x 64x32x14x14, w 64x32x3x3, padding 1, float32, "
                  "vs F.conv2d + torch.autograd.grad")},
    "soft_orthogonality_1024x512": {
        "make": _soft_orthogonality_case((1024, 512)), "dtype": "float32", "target": 0.67,
        "budget": {"repeat": 20, "number": 5, "warmup": 3},
        "flops": lambda: 4 * 1024 * 512 ** 2,
        "flops_formula": ("4·m·n² (W m x n, m >= n): Gram WᵀW (2mn², as a full GEMM) + gradient "
                          "4 W (G − I) (2mn²)"),
        "about": "soft orthogonality value + gradient, W 1024x512 float32, vs autograd of ||G - I||^2"},
    "qr_1024": {
        "make": _qr_case(1024), "dtype": "float32", "target": 1.5,
        "budget": {"repeat": 10, "number": 2, "warmup": 2},
        "flops": lambda: 8 * 1024 ** 3 // 3, "flops_formula": _QR_FORMULA,
        "about": ("qr_orthogonalize (Householder QR, diag R >= 0), 1024x1024 float32, vs torch.linalg.qr + "
                  "the same sign fix")},
    "cayley_512": {
        "make": _skew_map_case("cayley", 512), "dtype": "float32", "target": None,
        "budget": {"repeat": 10, "number": 5, "warmup": 2},
        "flops": lambda: 8 * 512 ** 3 // 3,
        "flops_formula": "8/3·n³: LU of I − A/2 (2/3 n³) + solves for n right-hand sides (2 n³)",
        "about": "Cayley map (I - A/2)^-1 (I + A/2), A 512x512 skew float32, vs torch.linalg.solve"},
    "expm_512": {
        "make": _skew_map_case("expm", 512), "dtype": "float32", "target": None,
        "budget": {"repeat": 10, "number": 3, "warmup": 2},
        "flops": lambda: _expm_flops(512),
        "flops_formula": (f"(6 + s)·2n³ + 8/3·n³, s = ⌈log₂(‖A‖₁/θ₁₃)⌉ = 2 for ‖A‖₁ = {EXPM_NORM1:g}: "
                          "Higham's Padé 13 (6 products, s squarings, one solve); PyTorch's Taylor-based "
                          "matrix_exp may do fewer products"),
        "about": (f"expm_skew (scipy.linalg.expm), A 512x512 skew float32 with ||A||_1 = {EXPM_NORM1:g}, vs "
                  "torch.linalg.matrix_exp")},
    "newton_schulz_1024": {
        "make": _projection_case("newton_schulz", 1024), "dtype": "float32", "target": 1.0, "slow": True,
        "budget": {"repeat": 10, "number": 1, "warmup": 2},
        "flops": lambda: 5 * 3 * 2 * 1024 ** 3,
        "flops_formula": ("5 steps x 3 products x 2n³ = 30 n³ (X Xᵀ, G², (bG + cG²) X; X Xᵀ counted as a "
                          "full GEMM)"),
        "about": "5 Newton-Schulz steps (Muon's coefficients), 1024x1024 float32, vs the same loop in PyTorch"},
    "polar_1024": {
        "make": _projection_case("polar", 1024), "dtype": "float32", "target": 1.2, "slow": True,
        "budget": {"repeat": 10, "number": 1, "warmup": 2},
        "flops": lambda: 23 * 1024 ** 3,
        "flops_formula": ("23 n³: SVD with U and V ≈ 21 n³ (Golub-Van Loan's Golub-Kahan-Reinsch count for "
                          "n x n; gesdd differs) + U Vᵀ (2 n³)"),
        "about": "polar factor U V^T by SVD, 1024x1024 float32, vs torch.linalg.svd"},
    "init_orthogonal_4096": {
        "make": _orthogonal_case(4096), "dtype": "float32", "target": 1.2, "slow": True,
        "budget": {"repeat": 6, "number": 1, "warmup": 1},
        "flops": lambda: 8 * 4096 ** 3 // 3, "flops_formula": _QR_FORMULA + "; Gaussian draw not counted",
        "about": ("orthogonal init of a 4096x4096 float32 matrix (QR of a Gaussian, sign fix) vs "
                  "torch.nn.init.orthogonal_")},
}


def make_case(name, rng=0, backend="numpy"):
    """(orthoref closure, PyTorch closure or None, description) for one benchmark case. On the CuPy
    backend the orthoref closure synchronizes the device before returning, so it can be timed."""
    case = CASES[name]
    ours, theirs = case["make"](host_rng(rng), backend)
    return ours, theirs, case["about"]


def _load_blas_libraries():
    """Import SciPy's linear algebra (its own OpenBLAS) and PyTorch, where installed, so that threadpoolctl
    sees and limits their thread pools."""
    for mod in ("scipy.linalg", "torch"):
        with contextlib.suppress(ImportError):
            importlib.import_module(mod)


@contextlib.contextmanager
def same_threads(threads):
    """Limit NumPy's and SciPy's BLAS and OpenMP (threadpoolctl) and PyTorch to ``threads`` threads.

    threadpoolctl limits only the libraries loaded when the limit is set: SciPy's own OpenBLAS (QR, SVD,
    expm) is loaded first, or it would run with all cores."""
    _load_blas_libraries()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # still measured, but the report says the limit was not enforced
        limiter = contextlib.nullcontext()
    else:
        limiter = threadpool_limits(limits=threads)
    old = None
    try:
        import torch
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
    except ImportError:
        pass
    try:
        with limiter:
            yield
    finally:
        if old is not None:
            import torch
            torch.set_num_threads(old)


# ---------------------------------------------------------------------------------------------------------
# Machine description and GEMM peak.

def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _torch_blas():
    try:
        import torch
    except ImportError:
        return None
    config = torch.__config__.show()
    found = {k: re.search(rf"{k}=(\w+)", config) for k in ("BLAS_INFO", "LAPACK_INFO")}
    out = {k.split("_")[0].lower(): m.group(1) for k, m in found.items() if m}
    cap = re.search(r"CPU capability usage: (\S+)", config)
    if cap:
        out["cpu_capability"] = cap.group(1)
    return out


def machine_info(threads):
    """Date, platform, CPU model, core count, thread limit, library versions and BLAS libraries."""
    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "platform": platform.platform(), "machine": platform.machine(), "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(), "threads": threads, "python": platform.python_version(),
            "orthoref": __version__, "numpy": np.__version__}
    try:
        import scipy
        info["scipy"] = scipy.__version__
    except ImportError:
        pass
    _load_blas_libraries()
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        info["threads_enforced"] = False
        info["blas"] = []
    else:
        info["threads_enforced"] = True
        info["blas"] = [{"user_api": p.get("user_api"), "internal_api": p.get("internal_api"),
                         "version": p.get("version"), "architecture": p.get("architecture"),
                         "library": os.path.basename(p.get("filepath", ""))} for p in threadpool_info()]
    try:
        import torch
        info["torch"] = torch.__version__
        info["torch_blas"] = _torch_blas()
    except ImportError:
        pass
    return info


def gemm_rates(n=2048, rounds=3, vs_torch=True, dtypes=("float32", "float64")):
    """GFLOP/s of ``n x n @ n x n`` (``2 n³ / t``, best of ``rounds`` after one warm-up) per library and
    dtype, under the thread limit in force: ``{"numpy": {"float32": ...}, "torch": {...}}``."""
    gen = np.random.default_rng(0)
    libs = {"numpy": lambda a, c: np.matmul(a, a, out=c)}
    if vs_torch:
        try:
            import torch
        except ImportError:
            pass
        else:
            def torch_mm(a, c):
                return torch.mm(torch.from_numpy(a), torch.from_numpy(a), out=torch.from_numpy(c))
            libs["torch"] = torch_mm
    out = {}
    for lib, mm in libs.items():
        out[lib] = {}
        for dt in dtypes:
            a = gen.standard_normal((n, n)).astype(dt)
            c = np.empty_like(a)
            fn = functools.partial(mm, a, c)    # torch.from_numpy: zero-copy views, ~µs next to the product
            fn()
            best = min(_time(fn, 1) for _ in range(max(1, rounds)))
            out[lib][dt] = 2 * n ** 3 / best / 1e9
    return out


def _time(fn, number):
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def run(cases=None, threads=None, repeat=30, number=10, warmup=5, vs_torch=True, rng=0, gemm_n=2048,
        command=None, progress=False):
    """Time each case (default: all but the ``slow`` ones); return a JSON-ready dict: machine information,
    the GEMM peak, and per case medians (seconds per call), ratio, target, GFLOP/s and fraction of peak.
    ``progress``: a bar on a terminal (stderr), one step per case (:mod:`orthoref._progress`).

    A case's ``budget`` caps ``repeat``, ``number`` and ``warmup``. The GEMM peak is the best of
    ``min(3, repeat)`` rounds of ``gemm_n``-sized products."""
    threads = int(threads or os.cpu_count() or 1)
    names = list(cases or [n for n, c in CASES.items() if not c.get("slow")])
    progress = check_bool("bench.run", "progress", progress)
    try:
        import torch  # noqa: F401
    except ImportError:
        vs_torch = False
    out = machine_info(threads)
    if command:
        out["command"] = command
    out.update({"repeat": repeat, "number": number, "warmup": warmup, "gemm_n": gemm_n, "results": {}})
    with same_threads(threads), Progress(len(names) + 1, "orthoref bench", progress, unit="case") as bar:
        rates = gemm_rates(gemm_n, rounds=min(3, repeat), vs_torch=vs_torch)
        out["gemm_gflops"] = rates
        peak = {dt: max(r[dt] for r in rates.values()) for dt in rates["numpy"]}
        out["gemm_peak_gflops"] = peak
        bar.update(done="GEMM peak")
        for name in names:
            case = CASES[name]
            ours, theirs, about = make_case(name, rng)
            if not vs_torch:
                theirs = None
            budget = case.get("budget") or {}     # seconds-long cases: fewer, shorter rounds
            repeat_ = min(repeat, budget.get("repeat", repeat))
            number_ = min(number, budget.get("number", number))
            warmup_ = min(warmup, budget.get("warmup", warmup))
            t_ours, t_theirs = [], []
            for _ in range(2):  # blocks A B A B: drift hits both sides alike, and each block starts with
                for fn, times in ((ours, t_ours), (theirs, t_theirs)):  # a warm-up that lets the other
                    if fn is None:                                       # side's idle threads wind down
                        continue
                    for _ in range(warmup_):
                        fn()
                    times.extend(_time(fn, number_) for _ in range(max(1, repeat_ // 2)))
            flops = int(case["flops"]())
            peak_flops = peak[case["dtype"]] * 1e9
            row = {"about": about, "dtype": case["dtype"], "repeat": 2 * max(1, repeat_ // 2), "number": number_,
                   "warmup": warmup_, "flops": flops, "flops_formula": case["flops_formula"],
                   "target": case.get("target"), "orthoref_s": statistics.median(t_ours),
                   "orthoref_min_s": min(t_ours)}
            row["gflops"] = {"orthoref": flops / row["orthoref_s"] / 1e9}
            row["fraction_of_peak"] = {"orthoref": flops / row["orthoref_s"] / peak_flops}
            if t_theirs:
                row["torch_s"] = statistics.median(t_theirs)
                row["torch_min_s"] = min(t_theirs)
                row["ratio"] = row["orthoref_s"] / row["torch_s"]
                row["ratio_min"] = row["orthoref_min_s"] / row["torch_min_s"]
                per_round = sorted(a / b for a, b in zip(t_ours, t_theirs))      # round i of each side's block
                row["ratio_spread"] = [per_round[0], statistics.median(per_round), per_round[-1]]
                row["gflops"]["torch"] = flops / row["torch_s"] / 1e9
                row["fraction_of_peak"]["torch"] = flops / row["torch_s"] / peak_flops
                row["target_met"] = None if row["target"] is None else bool(row["ratio"] <= row["target"])
            out["results"][name] = row
            bar.update(done=name)
    return out


#: ``format_results`` warns when a case's largest per-round ratio exceeds its smallest by this factor.
SPREAD_WARNING = 1.5


def format_results(res) -> str:
    """The table ``orthoref bench`` prints for a result of :func:`run`: the machine (CPU, threads, each BLAS
    and its kernel, the GEMM peak), then per case both times, the ratio and its per-round spread, the
    target and the fraction of peak; a warning line for cases whose per-round ratio varied by more than
    :data:`SPREAD_WARNING`."""
    blas = ", ".join(f"{b['internal_api']} {b['version']} {b.get('architecture') or ''} ({b['library']})"
                     .replace("  ", " ") for b in res.get("blas", []) if b.get("user_api") == "blas") or "unknown"
    tblas = res.get("torch_blas") or {}
    peak = res["gemm_peak_gflops"]
    lines = [f"orthoref {res['orthoref']} vs torch {res.get('torch', '(not installed)')}, {res['date']}",
             (f"{res['cpu']}, {res['cpu_count']} cores, {res['threads']} thread(s)"
             f"{'' if res.get('threads_enforced') else ' (threadpoolctl missing: NumPy not limited)'}, "
             f"{res['platform']}"),
             f"BLAS: numpy/scipy {blas}; torch {tblas.get('blas', '?')}",
             f"GEMM peak ({res['gemm_n']}² @, best of numpy/torch): "
             + ", ".join(f"{dt} {v:.0f} GFLOP/s" for dt, v in peak.items()),
             (f"median of rounds x calls after warm-ups, blocks A B A B (at most {res['repeat']} rounds x "
             f"{res['number']} calls, fewer for long cases)")]
    width = max([4] + [len(n) for n in res["results"]])
    head = (f"{'case':<{width}} {'orthoref ms':>12} {'torch ms':>10} {'ratio':>6} {'min–max':>11} {'target':>7} "
            f"{'met':>4} {'%peak ours':>11} {'%peak torch':>12}")
    lines += [head, "-" * len(head)]
    met = total = 0
    noisy = []
    for name, r in res["results"].items():
        torch_ms = f"{r['torch_s'] * 1e3:10.2f}" if "torch_s" in r else f"{'-':>10}"
        ratio = f"{r['ratio']:6.2f}" if "ratio" in r else f"{'-':>6}"
        lo_hi = r.get("ratio_spread")
        spread = f"{lo_hi[0]:5.2f}–{lo_hi[2]:<5.2f}" if lo_hi else f"{'-':>11}"
        if lo_hi and lo_hi[2] > SPREAD_WARNING * lo_hi[0]:
            noisy.append(f"{name} ({lo_hi[0]:.2f} to {lo_hi[2]:.2f})")
        target = f"{'<= ' + format(r['target'], 'g'):>7}" if r.get("target") is not None else f"{'-':>7}"
        ok = r.get("target_met")
        if ok is not None:
            total += 1
            met += ok
        ok = f"{'-' if ok is None else 'yes' if ok else 'NO':>4}"
        frac = r["fraction_of_peak"]
        p_ours = f"{100 * frac['orthoref']:10.1f}%"
        p_torch = f"{100 * frac['torch']:11.1f}%" if "torch" in frac else f"{'-':>12}"
        lines.append(f"{name:<{width}} {r['orthoref_s'] * 1e3:12.2f} {torch_ms} {ratio} {spread} {target} {ok} "
                     f"{p_ours} {p_torch}")
    if total:
        lines.append(f"targets met: {met} of {total}")
    if noisy:
        lines.append(f"warning: the per-round ratio varied by more than {SPREAD_WARNING:g}x for {', '.join(noisy)}: "
                     f"the machine's speed changed during the run (other load?); rerun on a quiet machine or with "
                     f"a larger --repeat before trusting a verdict")
    return "\n".join(lines)


def write_json(res, path):
    """Write ``res`` atomically (a temporary file renamed into place)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(res, f, indent=2)
    os.replace(tmp, path)
