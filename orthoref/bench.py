"""Side-by-side timing of orthoref and PyTorch CPU in one process (``orthoref bench --vs torch``).

Both sides get the same thread count (``threadpoolctl`` for NumPy's BLAS, ``torch.set_num_threads`` for
PyTorch), the same weights and the same batch. They are timed in blocks A B A B, each block warmed up first
(BLAS and OpenMP worker threads spin for a while after a call; interleaving single steps would make each
side pay for the other's spinning threads), and the median per-step time over all rounds is reported with
the ratio orthoref / PyTorch (below 1 means orthoref is faster).
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import time

import numpy as np

from . import __version__
from .backend import asarray, get_array_module, host_rng, to_numpy, using
from .models import mlp, small_cnn
from .nn import Conv2d, Flatten, Linear, MaxPool2d, ReLU, cross_entropy
from .optim import Adam

__all__ = ["CASES", "make_case", "run", "format_results", "train_step"]

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


CASES = {
    "mlp_train_step": dict(make=_train_case(lambda rng: mlp((784, 512, 256, 10), rng=rng), (784,), 128),
                           about="MLP 784-512-256-10, ReLU, cross-entropy, Adam, batch 128, float32"),
    "cnn_train_step": dict(make=_train_case(lambda rng: small_cnn(rng=rng), (1, 28, 28), 64),
                           about="CNN conv(1,32,3)-relu-pool2-conv(32,64,3)-relu-pool2-linear(3136,10), "
                                 "cross-entropy, Adam, batch 64, float32"),
    "soft_orthogonality_1024x512": dict(make=_soft_orthogonality_case((1024, 512)),
                                        about="soft orthogonality value + gradient, W 1024x512 float32, vs "
                                              "autograd of ||G - I||^2"),
    "newton_schulz_1024": dict(make=_projection_case("newton_schulz", 1024), slow=dict(repeat=10, number=1, warmup=2),
                               about="5 Newton-Schulz steps (Muon's coefficients), 1024x1024 float32, vs the same "
                                     "loop in PyTorch"),
    "polar_1024": dict(make=_projection_case("polar", 1024), slow=dict(repeat=10, number=1, warmup=2),
                       about="polar factor U V^T by SVD, 1024x1024 float32, vs torch.linalg.svd"),
    "init_orthogonal_4096": dict(make=_orthogonal_case(4096), slow=dict(repeat=6, number=1, warmup=1),
                                 about="orthogonal init of a 4096x4096 float32 matrix (QR of a Gaussian, "
                                       "sign fix) vs torch.nn.init.orthogonal_"),
}


def make_case(name, rng=0, backend="numpy"):
    """(orthoref closure, PyTorch closure or None, description) for one benchmark case. On the CuPy
    backend the orthoref closure synchronizes the device before returning, so it can be timed."""
    case = CASES[name]
    ours, theirs = case["make"](host_rng(rng), backend)
    return ours, theirs, case["about"]


@contextlib.contextmanager
def same_threads(threads):
    """Limit NumPy's BLAS (threadpoolctl) and PyTorch to ``threads`` threads."""
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


def _time(fn, number):
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def run(cases=None, threads=None, repeat=30, number=10, warmup=5, vs_torch=True, rng=0):
    """Time each case (default: all but the seconds-long ``slow`` ones); return a JSON-ready dict with
    medians (seconds per call) and ratios."""
    threads = int(threads or os.cpu_count() or 1)
    names = list(cases or [n for n, c in CASES.items() if not c.get("slow")])
    out = {"orthoref": __version__, "numpy": np.__version__, "python": platform.python_version(),
           "machine": platform.machine(), "threads": threads, "repeat": repeat, "number": number,
           "results": {}}
    try:
        import torch
        out["torch"] = torch.__version__
    except ImportError:
        vs_torch = False
    with same_threads(threads):
        for name in names:
            ours, theirs, about = make_case(name, rng)
            if not vs_torch:
                theirs = None
            slow = CASES[name].get("slow") or {}     # seconds-long cases: fewer, single-call rounds
            repeat_, number_, warmup_ = (min(repeat, slow["repeat"]), slow["number"], slow["warmup"]) if slow \
                else (repeat, number, warmup)
            t_ours, t_theirs = [], []
            for _ in range(2):  # blocks A B A B: drift hits both sides alike, and each block starts with
                for fn, times in ((ours, t_ours), (theirs, t_theirs)):  # a warm-up that lets the other
                    if fn is None:                                       # side's idle threads wind down
                        continue
                    for _ in range(warmup_):
                        fn()
                    times.extend(_time(fn, number_) for _ in range(max(1, repeat_ // 2)))
            row = {"about": about, "orthoref_s": statistics.median(t_ours), "orthoref_min_s": min(t_ours)}
            if t_theirs:
                row["torch_s"] = statistics.median(t_theirs)
                row["torch_min_s"] = min(t_theirs)
                row["ratio"] = row["orthoref_s"] / row["torch_s"]
                row["ratio_min"] = row["orthoref_min_s"] / row["torch_min_s"]
            out["results"][name] = row
    return out


def format_results(res) -> str:
    lines = [f"orthoref {res['orthoref']} vs torch {res.get('torch', '(not installed)')}, "
             f"{res['threads']} thread(s), median of {res['repeat']} rounds x {res['number']} steps"]
    lines.append(f"{'case':<18} {'orthoref ms':>12} {'torch ms':>10} {'ratio':>7} {'ratio of minima':>16}")
    for name, r in res["results"].items():
        torch_ms = f"{r['torch_s'] * 1e3:10.2f}" if "torch_s" in r else f"{'-':>10}"
        ratio = f"{r['ratio']:7.2f}" if "ratio" in r else f"{'-':>7}"
        ratio_min = f"{r['ratio_min']:16.2f}" if "ratio_min" in r else f"{'-':>16}"
        lines.append(f"{name:<18} {r['orthoref_s'] * 1e3:12.2f} {torch_ms} {ratio} {ratio_min}")
    return "\n".join(lines)


def write_json(res, path):
    """Write ``res`` atomically (a temporary file renamed into place)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(res, f, indent=2)
    os.replace(tmp, path)
