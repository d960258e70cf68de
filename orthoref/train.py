"""The training loop behind ``orthoref train``: data, model, optimizer, metrics, atomic checkpoints.

``fit(TrainConfig(...))`` trains, writes ``metrics.csv``/``metrics.json`` and ``checkpoint.npz`` in
``config.out`` after every epoch, and returns the history. A run stopped after epoch k and resumed from its
checkpoint ends bit-identical to an uninterrupted run (same machine and backend): the checkpoint holds the
parameters, the optimizer state, the shuffling RNG's state, the epoch, the history and the configuration.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, fields

import numpy as np

from ._checks import NonFiniteError, all_finite
from .backend import asarray, get_array_module, to_numpy, using
from .data import load_digits, load_idx_dir
from .models import mlp, small_cnn
from .nn import cross_entropy
from .optim import SGD, Adam, AdamW, CayleySGD, Muon, RiemannianAdam, RiemannianSGD

__all__ = ["TrainConfig", "fit", "evaluate", "orthogonality_error", "save_checkpoint", "load_checkpoint",
           "DivergenceError", "CheckpointError", "init_names", "OPTIMIZERS"]

CHECKPOINT_FORMAT = 1
OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "muon": Muon, "riemannian_sgd": RiemannianSGD,
              "riemannian_adam": RiemannianAdam, "cayley_sgd": CayleySGD}
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3, "muon": 0.02, "riemannian_sgd": 0.05,
              "riemannian_adam": 1e-3, "cayley_sgd": 0.05}
# Optimizers that keep weights on the Stiefel manifold: they need orthogonal weights to start from.
STIEFEL_OPTIMIZERS = ("riemannian_sgd", "riemannian_adam", "cayley_sgd")
# Initializers that only make sense for convolution kernels; a CNN's Linear layer gets "orthogonal" then.
CONV_ONLY_INITS = ("delta_orthogonal", "block_orthogonal")


# --reg NAME:WEIGHT -> (function of orthoref.regularizers, what it acts on). "weights": every Linear/Conv
# weight; "conv": 4-D (convolution) weights only; "outputs": the outputs of Linear/Conv layers (a hook).
REGULARIZERS = {
    "so": ("soft_orthogonality", "weights"),
    "dso": ("double_soft_orthogonality", "weights"),
    "mc": ("mutual_coherence", "weights"),
    "srip": ("srip", "weights"),
    "biggan": ("off_diagonal", "weights"),
    "l1": ("l1_orthogonality", "weights"),
    "spectral": ("spectral_penalty", "weights"),
    "kernel_slice": ("kernel_slice_orthogonality", "conv"),
    "ocnn": ("conv_orthogonality", "conv"),
    "som": ("self_orthogonality", "outputs"),
}


def parse_reg(spec):
    """``"so:1e-4"`` -> ``("so", 1e-4)``; raises ValueError naming the problem."""
    name, sep, weight = str(spec).partition(":")
    if name not in REGULARIZERS:
        raise ValueError(f"reg {spec!r}: unknown regularizer {name!r}; choose from {sorted(REGULARIZERS)}")
    try:
        w = float(weight) if sep else 1.0
    except ValueError:
        raise ValueError(f"reg {spec!r}: the weight after ':' must be a number, got {weight!r}") from None
    if not (math.isfinite(w) and w >= 0):
        raise ValueError(f"reg {spec!r}: the weight must be a finite number >= 0, got {w}")
    return name, w


def init_names():
    """Names accepted by ``--init``: ``orthoref.init.INITIALIZERS`` ("default" is PyTorch's default)."""
    from .init import INITIALIZERS
    return sorted(INITIALIZERS)


class DivergenceError(RuntimeError):
    """A NaN or Inf appeared in the loss or a gradient; the last good checkpoint is left in place."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into this model (names, shapes, or format disagree)."""


@dataclass
class TrainConfig:
    model: str = "mlp"
    hidden: tuple = (512, 256)
    init: str = "orthogonal"
    optimizer: str = "adam"
    lr: float = None            # None: the optimizer's default in DEFAULT_LR
    epochs: int = 20
    batch_size: int = 64
    seed: int = 0
    dtype: str = "float32"
    backend: str = "numpy"
    data: str = "digits"
    reg: tuple = ()             # ("so:1e-4", "srip:1e-2", ...)
    reg_skip: tuple = ()        # weight names ("0.weight") or "first" / "last"
    out: str = None             # None: a new directory runs/YYYYmmdd-HHMMSS
    progress: bool = True

    def validate(self):
        def bad(name, want):
            raise ValueError(f"{name} must be {want}, got {getattr(self, name)!r}")
        if self.model not in ("mlp", "cnn"):
            bad("model", "'mlp' or 'cnn'")
        self.hidden = tuple(int(h) for h in self.hidden)
        if any(h <= 0 for h in self.hidden):
            bad("hidden", "positive layer widths")
        if self.init not in init_names():
            bad("init", f"one of {init_names()}")
        if self.init in CONV_ONLY_INITS and self.model != "cnn":
            bad("init", f"an initializer for Linear weights with --model {self.model} ({self.init} is for "
                        f"convolution kernels)")
        if self.optimizer not in OPTIMIZERS:
            bad("optimizer", f"one of {sorted(OPTIMIZERS)}")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.optimizer]
        if self.optimizer in STIEFEL_OPTIMIZERS and self.init not in ("orthogonal", "orthogonal_svd",
                                                                       "delta_orthogonal", "block_orthogonal"):
            bad("init", f"an orthogonal initializer with --optimizer {self.optimizer} (it keeps the weights "
                        f"on the Stiefel manifold, so they must start there)")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            bad("lr", "a positive finite number")
        if int(self.epochs) < 1:
            bad("epochs", "at least 1")
        if int(self.batch_size) < 1:
            bad("batch_size", "at least 1")
        if self.dtype not in ("float32", "float64"):
            bad("dtype", "'float32' or 'float64'")
        if self.backend not in ("numpy", "cupy"):
            bad("backend", "'numpy' or 'cupy'")
        if not (self.data == "digits" or self.data.startswith("idx:")):
            bad("data", "'digits' or 'idx:DIR'")
        self.reg = tuple(str(r) for r in self.reg)
        regs = [parse_reg(r) for r in self.reg]
        if self.model != "cnn" and any(REGULARIZERS[n][1] == "conv" for n, _ in regs):
            bad("reg", f"regularizers for Linear weights with --model {self.model} (kernel_slice and ocnn "
                       f"act on convolution kernels)")
        self.reg_skip = tuple(str(r) for r in self.reg_skip)
        self.epochs, self.batch_size, self.seed = int(self.epochs), int(self.batch_size), int(self.seed)
        return self

    def to_json(self):
        d = asdict(self)
        for k in ("hidden", "reg", "reg_skip"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_json(cls, d):
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise CheckpointError(f"checkpoint configuration has unknown fields {sorted(unknown)}")
        return cls(**d).validate()


# ---------------------------------------------------------------------------------------------------------
# Data and model

def load_data(config):
    """(X_train, y_train, X_test, y_test) as host arrays of ``config.dtype``; images (N, 1, H, W) for the
    CNN, flattened (N, H*W) for the MLP."""
    flatten = config.model == "mlp"
    if config.data == "digits":
        X_tr, y_tr = load_digits("train", dtype=config.dtype, flatten=flatten)
        X_te, y_te = load_digits("test", dtype=config.dtype, flatten=flatten)
        return X_tr, y_tr, X_te, y_te
    return load_idx_dir(config.data[len("idx:"):], dtype=config.dtype, flatten=flatten)


def _weight_init(name):
    """``weight_init`` for the layers: None for PyTorch's default, else the initializer's name (the
    conv-only ones fall back to "orthogonal" for a CNN's 2-D Linear weight, see orthoref.init)."""
    return None if name == "default" else name


def build_model(config, sample_shape, n_classes):
    rng = np.random.default_rng(config.seed)
    init = dict(weight_init=_weight_init(config.init), rng=rng, dtype=config.dtype)
    with using(config.backend):
        if config.model == "mlp":
            return mlp((int(np.prod(sample_shape)),) + config.hidden + (n_classes,), **init)
        c, h, w = sample_shape
        if h != w:
            raise ValueError(f"--model cnn needs square images, got {h}x{w}")
        return small_cnn(c, h, n_classes, **init)


class Regularization:
    """The ``--reg`` terms of a model: weight penalties added to ``.grad`` after each backward, and
    Self-Orthogonality hooks on Linear/Conv outputs (their gradient enters the backward pass there)."""

    def __init__(self, model, config, rng):
        from . import regularizers as R
        self.rng = rng
        weights = [(n, p) for n, p in model.named_parameters() if n.endswith("weight") and p.data.ndim >= 2]
        skip = set(config.reg_skip)
        names = [n for n, _ in weights]
        unknown = skip - set(names) - {"first", "last"}
        if unknown:
            raise ValueError(f"reg_skip: {sorted(unknown)} name no weight of this model; weights: {names}")
        if "first" in skip and names:
            skip.add(names[0])
        if "last" in skip and names:
            skip.add(names[-1])
        self.targets = [(n, p) for n, p in weights if n not in skip]
        self.terms = []        # (name, function, weight, "weights" | "conv")
        for name, w in (parse_reg(r) for r in config.reg):
            fn_name, kind = REGULARIZERS[name]
            fn = getattr(R, fn_name)
            if kind == "outputs":
                for n, _ in self.targets:
                    index = int(n.split(".")[0])
                    model.set_output_hook(index, self._scaled(fn, w))
            else:
                self.terms.append((name, fn, w, kind))
        self.model = model

    @staticmethod
    def _scaled(fn, w):
        def hook(y):
            value, grad = fn(y)
            return float(value) * w, grad * w
        return hook

    def apply(self):
        """Add every weight penalty's gradient to ``.grad``; return the total penalty of this step."""
        total = sum(self.model.hook_values().values()) if hasattr(self.model, "hook_values") else 0.0
        for name, fn, w, kind in self.terms:
            for _, p in self.targets:
                if kind == "conv" and p.data.ndim != 4:
                    continue
                kwargs = {"rng": self.rng} if name == "srip" else {}
                value, grad = fn(p.data, weight=w, **kwargs)
                p.accumulate(grad)
                total += float(value)
        return total

    @property
    def active(self):
        return bool(self.terms) or bool(getattr(self.model, "_hooks", None))


def _param_groups(model, config):
    """All parameters; with a Stiefel optimizer the classifier (the last weight matrix) stays Euclidean,
    since ten orthonormal rows cap the logits' scale and with it how low the cross-entropy can go."""
    params = model.parameters()
    if config.optimizer not in STIEFEL_OPTIMIZERS:
        return params
    last = [p for n, p in model.named_parameters() if n.endswith("weight") and p.data.ndim >= 2][-1]
    return [{"params": [p for p in params if p is not last], "stiefel": True},
            {"params": [last], "stiefel": False}]


def orthogonality_error(w) -> float:
    """``‖G − I‖_F / √k`` for ``M = W.reshape(out, -1)`` and ``G`` the smaller Gram matrix (k x k)."""
    m = w.reshape(w.shape[0], -1)
    g = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    xp = get_array_module(g)
    k = g.shape[0]
    return float(xp.linalg.norm(g - xp.eye(k, dtype=g.dtype))) / math.sqrt(k)


def evaluate(model, X, y, batch_size=512):
    """Accuracy of ``model`` (in eval mode) on host arrays ``X``, ``y``."""
    was_training = model.training
    model.eval()
    correct = 0
    for s in range(0, len(X), batch_size):
        logits = to_numpy(model.forward(asarray(X[s:s + batch_size])))
        correct += int((logits.argmax(axis=1) == y[s:s + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(X), 1)


# ---------------------------------------------------------------------------------------------------------
# Atomic files and checkpoints

def _atomic_write(path, write):
    """Write through ``write(fileobj)`` to a temporary file in the same directory, flush, fsync, rename.
    A failure part-way leaves the previous file untouched and removes the temporary one."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _json_array(obj):
    return np.array(json.dumps(obj))


def save_checkpoint(path, model, optimizer, rng, epoch, config, history, reg_rng=None):
    """Write ``checkpoint.npz`` atomically: ``model/<name>`` arrays, ``optim/...`` state, JSON records."""
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    osd = optimizer.state_dict()
    for idx, st in osd["state"].items():
        for key, val in st.items():
            arrays[f"optim/state/{idx}/{key}"] = np.asarray(val)
    arrays["optim/param_groups"] = _json_array(osd["param_groups"])
    arrays["rng"] = _json_array(rng.bit_generator.state)
    meta = {"format": CHECKPOINT_FORMAT, "epoch": int(epoch), "config": config.to_json(), "history": history}
    if reg_rng is not None:
        meta["reg_rng"] = reg_rng.bit_generator.state
    arrays["meta"] = _json_array(meta)

    def write(f):
        np.savez(f, **arrays)
    _atomic_write(path, write)


def load_checkpoint(path):
    """Read a checkpoint into plain data: ``(meta, model_state, optimizer_state, rng_state)``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable orthoref checkpoint ({exc})") from exc
    for key in ("meta", "rng", "optim/param_groups"):
        if key not in files:
            raise CheckpointError(f"{path}: not an orthoref checkpoint (no {key!r} entry)")
    meta = json.loads(str(files["meta"]))
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format')}, expected {CHECKPOINT_FORMAT}")
    model_state = {k[len("model/"):]: v for k, v in files.items() if k.startswith("model/")}
    state = {}
    for k, v in files.items():
        if k.startswith("optim/state/"):
            _, _, idx, key = k.split("/", 3)
            state.setdefault(int(idx), {})[key] = int(v) if key == "step" else v
    optim_state = {"state": state, "param_groups": json.loads(str(files["optim/param_groups"]))}
    return meta, model_state, optim_state, json.loads(str(files["rng"]))


def _restore(path, model, optimizer, rng, reg_rng=None):
    meta, model_state, optim_state, rng_state = load_checkpoint(path)
    own = dict(model.named_parameters())
    own.update(dict(model.named_buffers()))
    for name, arr in model_state.items():
        if name not in own:
            raise CheckpointError(f"{path}: parameter {name!r} is not in this model (a checkpoint of another "
                                  f"model?); this model has {sorted(own)}")
        if tuple(arr.shape) != tuple(own[name].shape):
            raise CheckpointError(f"{path}: parameter {name!r} has shape {tuple(arr.shape)}, this model "
                                  f"expects {tuple(own[name].shape)}")
    missing = sorted(set(own) - set(model_state))
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    try:
        optimizer.load_state_dict(optim_state)
    except ValueError as exc:
        raise CheckpointError(f"{path}: optimizer state does not fit: {exc}") from exc
    model.load_state_dict(model_state)          # validated above, so this cannot stop half-way
    rng.bit_generator.state = rng_state
    if reg_rng is not None and "reg_rng" in meta:
        reg_rng.bit_generator.state = meta["reg_rng"]
    return meta


# ---------------------------------------------------------------------------------------------------------
# The loop

class _Progress:
    """tqdm when installed, else a one-line text bar on stderr; silent when disabled or not a TTY-ish."""

    def __init__(self, total, desc, enabled):
        self.enabled, self.total, self.desc, self.n = enabled, total, desc, 0
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc=desc, leave=False, unit="batch", dynamic_ncols=True)
            except ImportError:
                pass

    def update(self, loss, acc):
        self.n += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.3f}", refresh=False)
            self.bar.update(1)
        elif self.n == self.total or self.n % max(1, self.total // 20) == 0:
            filled = int(30 * self.n / self.total)
            sys.stderr.write(f"\r{self.desc} [{'#' * filled}{'.' * (30 - filled)}] {self.n}/{self.total} "
                             f"loss {loss:.4f} acc {acc:.3f}")
            sys.stderr.flush()

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


def _all_finite(a) -> bool:
    return all_finite(get_array_module(a), a)


def _forward(model, xb, epoch, step):
    """``model.forward(xb)``, with divergence in the forward pass (an op refusing a NaN/Inf parameter or
    activation, or NaN/Inf logits) reported as a DivergenceError naming the first parameter holding NaN/Inf,
    if any."""
    try:
        logits = model.forward(xb)
    except NonFiniteError as exc:
        _diverged(model, epoch, step, exc)
    if not _all_finite(logits):
        _diverged(model, epoch, step, None)
    return logits


def _diverged(model, epoch, step, cause):
    where = next((name for name, p in model.named_parameters() if not _all_finite(p.data)), None)
    culprit = f"parameter {where!r} holds NaN/Inf" if where else "no parameter holds NaN/Inf (overflow)"
    raise DivergenceError(f"model output has NaN/Inf at epoch {epoch}, step {step}: {culprit}; training "
                          f"stopped, the last good checkpoint is kept") from cause


def _check_grads(model, loss, epoch, step):
    if not math.isfinite(loss):
        raise DivergenceError(f"loss is {loss} at epoch {epoch}, step {step}; training stopped, the last "
                              f"good checkpoint is kept")
    for name, p in model.named_parameters():
        if p.grad is not None:
            if not _all_finite(p.grad):
                raise DivergenceError(f"gradient of {name!r} has NaN/Inf at epoch {epoch}, step {step}; "
                                      f"training stopped, the last good checkpoint is kept")


def _write_metrics(out, history):
    def write_json(f):
        f.write(json.dumps(history, indent=2).encode())

    def write_csv(f):
        buf = io.StringIO()
        keys = ["epoch", "loss", "train_acc", "test_acc", "seconds"]
        extra = sorted({k for h in history for k in h} - set(keys))
        writer = csv.DictWriter(buf, fieldnames=keys + extra)
        writer.writeheader()
        for h in history:
            writer.writerow(h)
        f.write(buf.getvalue().encode())
    _atomic_write(os.path.join(out, "metrics.json"), write_json)
    _atomic_write(os.path.join(out, "metrics.csv"), write_csv)


def _new_run_dir():
    base = os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
    path, k = base, 1
    while os.path.exists(path):
        k += 1
        path = f"{base}-{k}"
    return path


def fit(config: TrainConfig = None, resume: str = None, log=print, overwrite=False, **overrides):
    """Train as configured; return ``{"history": [...], "model": model, "config": config}``.

    ``resume`` is a checkpoint path: the configuration is read from it (``epochs``, ``out``, ``progress``
    may be overridden: ``epochs`` is the total number of epochs; ``out`` defaults to the checkpoint's
    directory). A fresh run refuses an ``out`` that already holds a checkpoint unless ``overwrite``.
    """
    if resume is not None:
        meta = load_checkpoint(resume)[0]
        saved = dict(meta["config"])
        allowed = {"epochs", "out", "progress"}
        given = dict(asdict(config)) if config is not None else {}
        given.update(overrides)
        for k, v in given.items():
            if k in allowed and v is not None:
                saved[k] = v
        if not given.get("out"):
            saved["out"] = os.path.dirname(os.path.abspath(resume))
        config = TrainConfig.from_json(saved)
    else:
        config = (config or TrainConfig())
        for k, v in overrides.items():
            if k not in {f.name for f in fields(TrainConfig)}:
                raise TypeError(f"fit: unknown option {k!r}")
            setattr(config, k, v)
        config.validate()
        if config.out is None:
            config.out = _new_run_dir()
        elif os.path.exists(os.path.join(config.out, "checkpoint.npz")) and not overwrite:
            raise FileExistsError(f"{config.out} already holds a checkpoint; resume it with --resume "
                                  f"{os.path.join(config.out, 'checkpoint.npz')}, choose another --out, or "
                                  f"pass --overwrite")

    X_tr, y_tr, X_te, y_te = load_data(config)
    n_classes = int(max(y_tr.max(), y_te.max())) + 1
    model = build_model(config, X_tr.shape[1:], n_classes)
    optimizer = OPTIMIZERS[config.optimizer](_param_groups(model, config), lr=config.lr)
    rng = np.random.default_rng(config.seed + 1)
    reg = Regularization(model, config, np.random.default_rng(config.seed + 2))
    history, start = [], 1
    if resume is not None:
        meta = _restore(resume, model, optimizer, rng, reg.rng)
        history, start = list(meta["history"]), int(meta["epoch"]) + 1
    os.makedirs(config.out, exist_ok=True)
    ckpt = os.path.join(config.out, "checkpoint.npz")
    n = len(X_tr)
    steps = -(-n // config.batch_size)
    for epoch in range(start, config.epochs + 1):
        t0 = time.perf_counter()
        order = rng.permutation(n)
        bar = _Progress(steps, f"epoch {epoch}/{config.epochs}", config.progress)
        loss_sum, reg_sum, correct, seen = 0.0, 0.0, 0, 0
        try:
            for step in range(steps):
                idx = order[step * config.batch_size:(step + 1) * config.batch_size]
                xb, yb = asarray(X_tr[idx]), asarray(y_tr[idx])
                logits = _forward(model, xb, epoch, step + 1)
                loss, dlogits = cross_entropy(logits, yb)
                loss = float(loss)
                optimizer.zero_grad()
                model.backward(dlogits, input_grad=False)
                if reg.active:
                    reg_sum += reg.apply()
                _check_grads(model, loss, epoch, step + 1)
                optimizer.step()
                loss_sum += loss * len(idx)
                correct += int((to_numpy(logits).argmax(axis=1) == y_tr[idx]).sum())
                seen += len(idx)
                bar.update(loss_sum / seen, correct / seen)
        finally:
            bar.close()
        record = {"epoch": epoch, "loss": loss_sum / seen, "train_acc": correct / seen,
                  "test_acc": evaluate(model, X_te, y_te), "seconds": time.perf_counter() - t0}
        if reg.active:
            record["reg"] = reg_sum / steps
        record["orthogonality"] = {name: orthogonality_error(p.data) for name, p in model.named_parameters()
                                   if p.data.ndim >= 2}
        history.append(record)
        save_checkpoint(ckpt, model, optimizer, rng, epoch, config, history, reg.rng)
        _write_metrics(config.out, [{k: v for k, v in h.items() if k != "orthogonality"} |
                                    {f"ortho[{k}]": e for k, e in h.get("orthogonality", {}).items()}
                                    for h in history])
        if log:
            ortho = " ".join(f"{k}:{e:.3f}" for k, e in record["orthogonality"].items())
            reg_text = f"  reg {record['reg']:.4g}" if "reg" in record else ""
            log(f"epoch {epoch:3d}/{config.epochs}  loss {record['loss']:.4f}{reg_text}  "
                f"train {record['train_acc']:.4f}  test {record['test_acc']:.4f}  {record['seconds']:.2f}s  "
                f"|G-I|/sqrt(k) {ortho}")
    return {"history": history, "model": model, "config": config, "checkpoint": ckpt}
