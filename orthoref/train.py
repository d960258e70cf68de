"""The training loop behind ``orthoref train``: data, model, optimizer, metrics, atomic checkpoints.

``fit(TrainConfig(...))`` trains, writes ``metrics.csv``/``metrics.json`` and ``checkpoint.npz`` in
``config.out`` after every epoch, and returns the history. A run stopped after epoch k and resumed from its
checkpoint ends bit-identical to an uninterrupted run (same machine and backend): the checkpoint holds the
parameters, the optimizer state, the shuffling RNG's state, the epoch, the history and the configuration.

Failure model of a run:

- the run folder is claimed before the data loads (:func:`orthoref._io.claim_run_dir`: a lock file
  ``.orthoref.lock`` holding PID and host); a second run on the same folder is refused
  (:class:`orthoref._io.RunDirBusy`, a ``FileExistsError``), a lock of a dead process is taken over, and
  temporary files of dead processes are removed; default folders ``runs/YYYYmmdd-HHMMSS[-k]`` are unique;
- a folder holding another run's files is never written into without ``overwrite`` (resuming into the
  checkpoint's own folder is fine);
- a checkpoint is written only after the epoch's parameters, test-set outputs and optimizer state are
  verified finite; divergence raises :class:`DivergenceError`, whose message says which checkpoint (if
  any) is kept;
- SIGTERM/SIGINT remove the temporary file and the lock and raise
  :class:`orthoref._io.RunInterrupted` (a ``KeyboardInterrupt``);
- ``metrics.json`` is strict JSON: a NaN or infinite value is written as ``null``;
- :func:`load_checkpoint` checks every field, dtype and declared shape before reading any array
  (:class:`CheckpointError` names the file and the field).
"""
from __future__ import annotations

import csv
import functools
import inspect
import io
import math
import numbers
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import numpy as np

from ._checks import MAX_ITERATIONS, NonFiniteError, all_finite, check_bool, check_choice, check_int, check_real
from ._io import (CheckpointError, RunDirBusy, RunInterrupted, atomic_write, claim_run_dir, interruptible,
                  new_run_dir, read_npz, signal_name, strict_json)
from ._checkpoint import (check_param_groups, check_rng_state, is_int, is_number, json_array, read_json,
                          read_planned, same_dir, state_arrays)
from ._progress import Progress
from .backend import asarray, get_array_module, to_numpy, using
from .data import load_digits, load_idx_dir
from .datasets import DATASETS
from .datasets import load as load_dataset
from .models import NORMS, mlp, mlp_shapes, small_cnn, small_cnn_buffers, small_cnn_shapes
from .nn import cross_entropy
from .optim import SGD, Adam, AdamW, CayleySGD, Muon, RiemannianAdam, RiemannianSGD
from .ortho.metrics import orthogonality_error_rms
from .ortho.singular import clip_singular_values
from .regularizers import PENALTIES

__all__ = ["TrainConfig", "fit", "evaluate", "save_checkpoint", "load_checkpoint", "bound_singular_values",
           "parse_sv_bound", "DivergenceError", "CheckpointError", "RunDirBusy", "RunInterrupted", "init_names",
           "OPTIMIZERS"]

CHECKPOINT_FORMAT = 1
#: ``--optimizer`` name -> optimizer class.
OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "muon": Muon, "riemannian_sgd": RiemannianSGD,
              "riemannian_adam": RiemannianAdam, "cayley_sgd": CayleySGD}
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3, "muon": 0.02, "riemannian_sgd": 0.05,
              "riemannian_adam": 1e-3, "cayley_sgd": 0.05}
# Optimizers that keep weights on the Stiefel manifold: they need orthogonal weights to start from.
STIEFEL_OPTIMIZERS = ("riemannian_sgd", "riemannian_adam", "cayley_sgd")
# Initializers that only make sense for convolution kernels; a CNN's Linear layer gets "orthogonal" then.
CONV_ONLY_INITS = ("delta_orthogonal", "block_orthogonal")


# --reg NAME:WEIGHT -> (function of orthoref.regularizers, what it acts on), from regularizers.PENALTIES.
REGULARIZERS = {short: (name, target) for name, (_, short, target) in PENALTIES.items()}


def parse_reg(spec):
    """``"so:1e-4"`` -> ``("so", 1e-4, {})``; ``"so:1e-2,gram=cols"`` -> ``("so", 1e-2, {"gram": "cols"})``.

    ``NAME[:WEIGHT][,KEY=VALUE]...``: the weight defaults to 1.0; each ``KEY`` must be a keyword argument of
    the regularizer's function (:data:`orthoref.regularizers.PENALTIES`) other than its input, ``weight``,
    ``rng`` and arrays; a ``VALUE`` reads as a bool (``true``/``false``), ``none``, an int, a float or else
    a string, and is checked by calling the function once on a small input. ``ValueError`` naming the
    problem (an unknown name or key, a bad weight, a value the function refuses, a repeated key)."""
    head, *items = str(spec).split(",")
    name, sep, weight = head.partition(":")
    if name not in REGULARIZERS:
        raise ValueError(f"reg {spec!r}: unknown regularizer {name!r}; choose from {sorted(REGULARIZERS)}")
    try:
        w = float(weight) if sep else 1.0
    except ValueError:
        raise ValueError(f"reg {spec!r}: the weight after ':' must be a number, got {weight!r}") from None
    if not (math.isfinite(w) and w >= 0):
        raise ValueError(f"reg {spec!r}: the weight must be a finite number >= 0, got {w}")
    options = _keyword_options(f"reg {spec!r}", items, reg_options(name), REGULARIZERS[name][0])
    if options:
        _probe(spec, name, options)
    return name, w, options


def reg_options(name):
    """The ``KEY=VALUE`` keys ``--reg NAME`` accepts: the keyword arguments of its function, less its input,
    ``weight``, ``rng`` (bound by the run) and array arguments (``v0``)."""
    fn = PENALTIES[REGULARIZERS[name][0]][0]
    params = list(inspect.signature(fn).parameters.values())[1:]
    return tuple(p.name for p in params if p.name not in ("weight", "rng", "v0"))


def optimizer_options(name):
    """The ``KEY=VALUE`` keys ``--optimizer NAME,...`` accepts: the optimizer's keyword arguments, less
    ``params``, ``lr`` (``--lr``), ``stiefel`` (set by the run), ``maximize`` and the tuples (``betas``)."""
    params = list(inspect.signature(OPTIMIZERS[name]).parameters.values())[1:]
    return tuple(p.name for p in params if p.name not in ("lr", "stiefel", "maximize")
                 and not isinstance(p.default, tuple))


def optimizer_kwargs(name, items, who="optimizer_kwargs"):
    """``("scale=moonlight", "ns_steps=6")`` -> ``{"scale": "moonlight", "ns_steps": 6}`` for optimizer
    ``name`` (a key of :data:`OPTIMIZERS`), checked against :func:`optimizer_options` and by building the
    optimizer once on a small parameter; ``ValueError`` naming ``who`` and the problem."""
    options = _keyword_options(f"{who}: optimizer {name!r}", items, optimizer_options(name),
                               OPTIMIZERS[name].__name__)
    if options:
        from .nn.module import Parameter
        try:
            OPTIMIZERS[name]([Parameter(np.eye(3, 2))], lr=1e-3, **options)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{who}: optimizer {name!r}: {exc}") from None
    return options


def _keyword_options(where, items, keys, owner):
    """``{key: value}`` of the ``"KEY=VALUE"`` strings ``items``, each ``KEY`` one of ``keys`` (the keyword
    arguments of ``owner``), once; values as :func:`_option_value` reads them."""
    options = {}
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or key not in keys:
            raise ValueError(f"{where}: {item!r} is not KEY=VALUE with KEY one of {list(keys) or 'none'} "
                             f"(the keyword arguments of {owner})")
        if key in options:
            raise ValueError(f"{where}: {key} is given twice")
        options[key] = _option_value(text.strip())
    return options


def _option_value(text):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _probe(spec, name, options):
    """Call ``name``'s function once with ``options`` on a small input of its target: the function's own
    checks (a ``gram`` that is not rows/cols/auto, a negative ``n_iter``) fail here, at parse time."""
    fn_name, target = REGULARIZERS[name]
    fn = PENALTIES[fn_name][0]
    x = np.random.default_rng(0).standard_normal((4, 2, 3, 3) if target == "conv" else (4, 6))
    extra = {"rng": np.random.default_rng(0)} if "rng" in inspect.signature(fn).parameters else {}
    try:
        fn(x, **options, **extra)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"reg {spec!r}: {exc}") from None


@dataclass(frozen=True)
class Penalty:
    """One ``--reg NAME:WEIGHT[,KEY=VALUE...]`` term: a function of :mod:`orthoref.regularizers`, its weight and its target.

    ``target`` comes from ``regularizers.PENALTIES``: "weights" (every regularized weight), "conv" (the
    4-D ones: convolution kernels) or "outputs" (the outputs of the layers holding them, through an output
    hook of the ``Sequential``). A function that draws random numbers (SRIP's power-iteration start) gets
    ``rng`` bound here, when the spec is parsed: every call draws from that one generator, in step order.

    ``penalty(x) -> (value, grad)``: the weighted penalty and its gradient at a weight ``W`` (``fn(W,
    weight=λ)``) or at a layer output ``Y`` (``λ · fn(Y)``, the hook of a Self-Orthogonality Module).
    """
    name: str           # the --reg short name ("so", "srip", "som", ...)
    fn: Callable
    weight: float
    target: str         # "weights" | "conv" | "outputs"

    @classmethod
    def parse(cls, spec, rng=None):
        """``"srip:1e-2"`` (or ``"so:1e-2,gram=cols"``) -> its Penalty, the options and ``rng`` (to a function
        that takes one) bound; ValueError as :func:`parse_reg`."""
        name, weight, options = parse_reg(spec)
        fn_name, target = REGULARIZERS[name]
        fn = PENALTIES[fn_name][0]
        if "rng" in inspect.signature(fn).parameters:
            options = dict(options, rng=rng)
        return cls(name, functools.partial(fn, **options) if options else fn, weight, target)

    def acts_on(self, W):
        """Whether this penalty regularizes the weight array ``W`` (a conv penalty: 4-D kernels only)."""
        return self.target != "conv" or W.ndim == 4

    def __call__(self, x):
        if self.target == "outputs":
            value, grad = self.fn(x)
            return float(value) * self.weight, grad * self.weight
        return self.fn(x, weight=self.weight)


def init_names():
    """Names accepted by ``--init``: ``orthoref.init.INITIALIZERS`` ("default" is PyTorch's default)."""
    from .init import INITIALIZERS
    return sorted(INITIALIZERS)


class DivergenceError(RuntimeError):
    """A NaN or Inf appeared in the loss, a gradient, a parameter or the model's output; the message says
    which checkpoint, if any, is kept (only checkpoints of finite parameters are ever written)."""


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
    optimizer_options: tuple = ()   # ("scale=moonlight", ...): the optimizer's keyword arguments
    norm: str = "none"          # the CNN's normalization after each convolution: none, bn, dbn, iternorm
    sv_bound: str = None        # "EPS[,EVERY]": singular value bounding every EVERY steps (bound_singular_values)
    out: str = None             # None: a new directory runs/YYYYmmdd-HHMMSS
    progress: bool = True

    def validate(self, who="TrainConfig"):
        """Check every field (types, ranges, combinations), normalise ``hidden``/``reg``/``reg_skip`` to
        tuples and ``lr=None`` to the optimizer's default; returns ``self``. ``TypeError`` for a value of
        the wrong kind, ``ValueError`` for one out of range; messages start with ``who``."""
        def bad(name, want):
            raise ValueError(f"{who}: {name} must be {want}, got {getattr(self, name)!r}")
        self.model = check_choice(who, "model", self.model, ("mlp", "cnn"))
        self.norm = check_choice(who, "norm", self.norm, NORMS)
        if self.norm != "none" and self.model != "cnn":
            bad("norm", f"'none' with --model {self.model} (the normalization layers bn, dbn and iternorm "
                        f"follow the convolutions of --model cnn)")
        self.hidden = _int_tuple(who, "hidden", self.hidden)
        self.init = check_choice(who, "init", self.init, tuple(init_names()))
        if self.init in CONV_ONLY_INITS and self.model != "cnn":
            bad("init", f"an initializer for Linear weights with --model {self.model} ({self.init} is for "
                        f"convolution kernels)")
        self.optimizer = check_choice(who, "optimizer", self.optimizer, tuple(sorted(OPTIMIZERS)))
        self.optimizer_options = _str_tuple(who, "optimizer_options", self.optimizer_options)
        optimizer_kwargs(self.optimizer, self.optimizer_options, who)
        if self.lr is None:
            self.lr = DEFAULT_LR[self.optimizer]
        if self.optimizer in STIEFEL_OPTIMIZERS and self.init not in ("orthogonal", "orthogonal_svd",
                                                                       "delta_orthogonal", "block_orthogonal"):
            bad("init", f"an orthogonal initializer with --optimizer {self.optimizer} (it keeps the weights "
                        f"on the Stiefel manifold, so they must start there)")
        check_real(who, "lr", self.lr, 0, lo_open=True)
        self.epochs = check_int(who, "epochs", self.epochs, 1, MAX_ITERATIONS)
        self.batch_size = check_int(who, "batch_size", self.batch_size, 1)
        self.seed = check_int(who, "seed", self.seed, 0, 2 ** 63 - 3)
        self.dtype = check_choice(who, "dtype", self.dtype, ("float32", "float64"))
        self.backend = check_choice(who, "backend", self.backend, ("numpy", "cupy"))
        if not isinstance(self.data, str):
            raise TypeError(f"{who}: data must be 'digits', 'idx:DIR' or one of {', '.join(DATASETS)}, got "
                            f"{type(self.data).__name__} {self.data!r}")
        if not (self.data in ("digits",) + tuple(DATASETS) or (self.data.startswith("idx:") and len(self.data) > 4)):
            bad("data", f"'digits', 'idx:DIR' or one of {', '.join(DATASETS)} (orthoref data list)")
        self.reg = _str_tuple(who, "reg", self.reg)
        penalties = [Penalty.parse(r) for r in self.reg]
        if self.model != "cnn" and any(pen.target == "conv" for pen in penalties):
            conv = " and ".join(n for n, (_, target) in REGULARIZERS.items() if target == "conv")
            bad("reg", f"regularizers for Linear weights with --model {self.model} ({conv} act on "
                       f"convolution kernels)")
        self.reg_skip = _str_tuple(who, "reg_skip", self.reg_skip)
        if self.sv_bound is not None:
            self.sv_bound = "{:g},{}".format(*parse_sv_bound(self.sv_bound, who))
        if self.out is not None:
            if not isinstance(self.out, (str, os.PathLike)):
                raise TypeError(f"{who}: out must be a folder path or None, got {type(self.out).__name__} "
                                f"{self.out!r}")
            self.out = os.fspath(self.out)
            if not self.out:
                bad("out", "a folder path or None")
        self.progress = check_bool(who, "progress", self.progress)
        return self

    def to_json(self):
        d = asdict(self)
        for k in ("hidden", "reg", "reg_skip", "optimizer_options"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_json(cls, d, source=None):
        """The configuration stored as ``d`` (a dict with every field), validated. ``CheckpointError``
        naming ``source`` (the checkpoint's path) and the field for anything missing, unknown or bad."""
        where = f"{source}: config" if source is not None else "TrainConfig.from_json"
        if not isinstance(d, dict):
            raise CheckpointError(f"{where}: expected a JSON object holding the training configuration, got "
                                  f"{type(d).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(names), key=str)
        missing = [n for n in names if n not in d and n not in _ADDED_FIELDS]
        if unknown:
            raise CheckpointError(f"{where}: unknown field(s) {unknown}")
        if missing:
            raise CheckpointError(f"{where}: missing field(s) {missing}")
        listed = [k for k in ("hidden", "reg", "reg_skip", "optimizer_options") if isinstance(d.get(k), str)]
        if listed:
            raise CheckpointError(f"{where}: {listed[0]} must be a list, got the string {d[listed[0]]!r}")
        try:
            return cls(**d).validate(who=where)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(str(exc)) from None


#: Fields added after checkpoints were first written: an older checkpoint without them takes the default.
_ADDED_FIELDS = ("optimizer_options", "norm", "sv_bound")


def parse_sv_bound(text, who="sv_bound"):
    """``"EPS[,EVERY]"`` → ``(eps, every)``: a finite ``eps > 0`` and an int ``every >= 1`` (default 1)."""
    if not isinstance(text, str):
        raise TypeError(f"{who}: sv_bound must be a string 'EPS[,EVERY]' or None, got {type(text).__name__} "
                        f"{text!r}")
    parts = text.split(",")
    try:
        eps, every = float(parts[0]), int(parts[1]) if len(parts) == 2 else 1
    except ValueError:
        parts = ()
    if len(parts) not in (1, 2):
        raise ValueError(f"{who}: sv_bound must be 'EPS' or 'EPS,EVERY' (a number > 0 and a step count >= 1), "
                         f"got {text!r}")
    return (check_real(who, "sv_bound's EPS", eps, 0.0, lo_open=True),
            check_int(who, "sv_bound's EVERY", every, 1, MAX_ITERATIONS))


def bound_singular_values(model, eps):
    r"""Singular value bounding (Jia, Tao, Gao & Xu, "Improving training of deep neural networks via
    singular value bounding", CVPR 2017): every weight matrix ``M = W.reshape(out, -1)`` of ``model``
    (Linear and Conv2d weights: the parameters of two or more axes) gets its singular values clipped into
    :math:`[1/(1+\varepsilon),\, 1+\varepsilon]`, in place (:func:`orthoref.ortho.clip_singular_values`).

    ``orthoref train --sv-bound EPS[,EVERY]`` calls it after every ``EVERY``-th optimizer step. The paper
    bounds every ``k`` iterations of SGD with momentum and keeps the momentum buffers as they are; so does
    this (the optimizer's state is not touched)."""
    lo, hi = 1.0 / (1.0 + eps), 1.0 + eps
    for _, p in model.named_parameters():
        if p.data.ndim >= 2:
            p.data[...] = clip_singular_values(p.data, lo=lo, hi=hi)


def _int_tuple(who, name, value):
    """A sequence of positive ints as a tuple; ``TypeError``/``ValueError`` naming ``name``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list, np.ndarray)):
        raise TypeError(f"{who}: {name} must be a sequence of positive ints, got {type(value).__name__} "
                        f"{value!r}")
    out = []
    for v in value:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{who}: {name} must be a sequence of positive ints, got {value!r}")
        if int(v) <= 0:
            raise ValueError(f"{who}: {name} must be positive layer widths, got {tuple(value)!r}")
        out.append(int(v))
    return tuple(out)


def _str_tuple(who, name, value):
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
        raise TypeError(f"{who}: {name} must be a sequence of strings, got {type(value).__name__} {value!r}")
    if not all(isinstance(v, str) for v in value):
        raise TypeError(f"{who}: {name} must be a sequence of strings, got {value!r}")
    return tuple(value)


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
    if config.data in DATASETS:                         # mnist, fashion-mnist, kmnist from the data directory
        return load_dataset(config.data, dtype=config.dtype, flatten=flatten)
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
        return small_cnn(c, h, n_classes, norm=config.norm, **init)


def regularized_weights(model, skip=()):
    """``[(name, parameter)]`` of the weights (``*weight``, at least 2-D) the ``--reg`` terms act on: all
    but those named in ``skip`` ("first" and "last" name the first and last one); ValueError for a name
    that is no weight of ``model``."""
    weights = [(n, p) for n, p in model.named_parameters() if n.endswith("weight") and p.data.ndim >= 2]
    skip = set(skip)
    names = [n for n, _ in weights]
    unknown = skip - set(names) - {"first", "last"}
    if unknown:
        raise ValueError(f"reg_skip: {sorted(unknown)} name no weight of this model; weights: {names}")
    if "first" in skip and names:
        skip.add(names[0])
    if "last" in skip and names:
        skip.add(names[-1])
    return [(n, p) for n, p in weights if n not in skip]


def holding_layers(model, weights):
    """``[(index, layer)]``: the layer of the ``Sequential`` ``model`` that holds each parameter of
    ``weights`` (``[(name, parameter)]``), found by identity, in the order of ``weights``."""
    layers = list(enumerate(model))
    return [next((i, layer) for i, layer in layers if any(q is p for q in layer.parameters()))
            for _, p in weights]


class Regularization:
    """The ``--reg`` terms of a model, one :class:`Penalty` each (SRIP's generator ``rng`` bound at parse
    time, kept here for checkpoints), acting on ``targets`` (:func:`regularized_weights`).

    Weight and conv penalties add their gradient to ``.grad`` in :meth:`apply`, after each backward; output
    penalties are installed once, here, as output hooks on the layers holding the targets (their gradient
    enters the backward pass there, their values are read back in :meth:`apply`). Several output penalties
    on one layer share its hook, which adds their values and gradients."""

    def __init__(self, model, config, rng):
        self.rng = rng
        self.model = model
        self.targets = regularized_weights(model, config.reg_skip)
        self.penalties = [Penalty.parse(spec, rng) for spec in config.reg]
        self.terms = [(pen, [p for _, p in self.targets if pen.acts_on(p.data)])
                      for pen in self.penalties if pen.target != "outputs"]
        outputs = [pen for pen in self.penalties if pen.target == "outputs"]
        self.hooked = {}        # layer index -> the output penalties hooked there
        if outputs:
            for index, _ in holding_layers(model, self.targets):
                self.hooked[index] = outputs
                model.set_output_hook(index, outputs[0] if len(outputs) == 1 else _summed(outputs))

    def apply(self):
        """Add every weight penalty's gradient to ``.grad``; return the total penalty of this step (the
        output penalties of the last forward pass first, then the weight penalties in ``--reg`` order)."""
        total = sum(self.model.hook_values().values()) if self.hooked else 0.0
        for pen, params in self.terms:
            for p in params:
                value, grad = pen(p.data)
                p.accumulate(grad)
                total += float(value)
        return total

    @property
    def active(self):
        return bool(self.terms) or bool(self.hooked)


def _summed(penalties):
    """One output hook for several output penalties: the sum of their values and of their gradients."""
    def hook(y):
        terms = [pen(y) for pen in penalties]
        return sum(v for v, _ in terms), sum(g for _, g in terms)
    return hook


def _param_groups(model, config):
    """All parameters; with a Stiefel optimizer the classifier (the last weight matrix) stays Euclidean,
    since ten orthonormal rows cap the logits' scale and with it how low the cross-entropy can go."""
    params = model.parameters()
    if config.optimizer not in STIEFEL_OPTIMIZERS:
        return params
    last = [p for n, p in model.named_parameters() if n.endswith("weight") and p.data.ndim >= 2][-1]
    return [{"params": [p for p in params if p is not last], "stiefel": True},
            {"params": [last], "stiefel": False}]


def evaluate(model, X, y, batch_size=512):
    """Accuracy of ``model`` (in eval mode) on host arrays ``X``, ``y``.

    Raises ``ValueError`` for an empty or mismatched ``X``/``y`` or a bad ``batch_size``, and
    ``NonFiniteError`` when the model's output holds NaN/Inf (an accuracy read off NaN logits would be
    meaningless)."""
    who = "evaluate"
    batch_size = check_int(who, "batch_size", batch_size, 1)
    if not hasattr(X, "shape") or not hasattr(y, "shape"):
        raise TypeError(f"{who}: X and y must be arrays, got {type(X).__name__} and {type(y).__name__}")
    if len(X) != len(y):
        raise ValueError(f"{who}: X and y must have the same length, got {len(X)} and {len(y)}")
    if len(X) == 0:
        raise ValueError(f"{who}: X must hold at least one example, got shape {tuple(X.shape)}")
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for s in range(0, len(X), batch_size):
            logits = model.forward(asarray(X[s:s + batch_size]))
            if not _all_finite(logits):
                raise NonFiniteError(f"{who}: the model's output holds NaN/Inf on examples {s}.."
                                     f"{min(s + batch_size, len(X)) - 1}")
            logits = to_numpy(logits)
            correct += int((logits.argmax(axis=1) == y[s:s + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / len(X)


# ---------------------------------------------------------------------------------------------------------
# Checkpoints

RUN_FILES = ("checkpoint.npz", "metrics.json", "metrics.csv")


def save_checkpoint(path, model, optimizer, rng, epoch, config, history, reg_rng=None):
    """Write ``checkpoint.npz`` atomically: ``model/<name>`` arrays, ``optim/...`` state, JSON records.

    Only finite state is written: a parameter or optimizer array holding NaN/Inf raises
    ``NonFiniteError`` naming it, and the previous checkpoint stays as it was."""
    who = "save_checkpoint"
    if not isinstance(config, TrainConfig):
        raise TypeError(f"{who}: config must be a TrainConfig, got {type(config).__name__}")
    epoch = check_int(who, "epoch", epoch, 0, config.epochs)
    if not isinstance(history, list):
        raise TypeError(f"{who}: history must be a list of epoch records, got {type(history).__name__}")
    arrays = state_arrays(who, model.state_dict(), optimizer.state_dict())
    arrays["rng"] = json_array(rng.bit_generator.state)
    meta = {"format": CHECKPOINT_FORMAT, "epoch": epoch, "config": config.to_json(), "history": history}
    if reg_rng is not None:
        meta["reg_rng"] = reg_rng.bit_generator.state
    arrays["meta"] = json_array(meta, safe=True)

    def write(f):
        np.savez(f, **arrays)
    atomic_write(path, write)


_HISTORY_KEYS = {"epoch", "loss", "train_acc", "test_acc", "seconds", "reg", "orthogonality"}


def _check_history(path, history, epoch):
    if not isinstance(history, list):
        raise CheckpointError(f"{path}: meta.history must be a list of epoch records, got "
                              f"{type(history).__name__} {str(history)[:60]!r}")
    if len(history) != epoch:
        raise CheckpointError(f"{path}: meta.history must hold one record per epoch ({epoch}), got "
                              f"{len(history)}")
    for i, rec in enumerate(history):
        where = f"{path}: meta.history[{i}]"
        if not isinstance(rec, dict):
            raise CheckpointError(f"{where} must be an object, got {type(rec).__name__}")
        missing = sorted({"epoch", "loss", "train_acc", "test_acc", "seconds"} - set(rec))
        unknown = sorted(set(rec) - _HISTORY_KEYS, key=str)
        if missing or unknown:
            raise CheckpointError(f"{where}: missing {missing}, unknown {unknown}")
        if not is_int(rec["epoch"]) or rec["epoch"] != i + 1:
            raise CheckpointError(f"{where}.epoch must be {i + 1}, got {rec['epoch']!r}")
        for key in ("loss", "train_acc", "test_acc", "seconds"):
            v = rec[key]
            if not is_number(v) or not math.isfinite(v) or v < 0 or (key.endswith("acc") and v > 1):
                raise CheckpointError(f"{where}.{key} must be a finite number"
                                      f"{' in [0, 1]' if key.endswith('acc') else ' >= 0'}, got {v!r}")
        if "reg" in rec and rec["reg"] is not None and not is_number(rec["reg"]):
            raise CheckpointError(f"{where}.reg must be a number or null, got {rec['reg']!r}")
        ortho = rec.get("orthogonality", {})
        if not isinstance(ortho, dict) or not all(isinstance(k, str) and (v is None or is_number(v))
                                                  for k, v in ortho.items()):
            raise CheckpointError(f"{where}.orthogonality must map weight names to numbers, got {ortho!r}")


def _check_meta(path, meta):
    """Validate the ``meta`` record; returns ``(config, epoch)``."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: meta must be a JSON object, got {type(meta).__name__}")
    missing = sorted({"format", "epoch", "config", "history"} - set(meta))
    unknown = sorted(set(meta) - {"format", "epoch", "config", "history", "reg_rng"}, key=str)
    if missing or unknown:
        raise CheckpointError(f"{path}: meta is missing {missing}" if missing
                              else f"{path}: meta has unknown field(s) {unknown}")
    if not is_int(meta["format"]) or meta["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {meta['format']!r}, expected {CHECKPOINT_FORMAT}")
    config = TrainConfig.from_json(meta["config"], source=path)
    epoch = meta["epoch"]
    if not is_int(epoch) or not 0 <= epoch <= config.epochs:
        raise CheckpointError(f"{path}: meta.epoch must be an int in [0, {config.epochs}] (the "
                              f"configuration's epochs), got {epoch!r}")
    _check_history(path, meta["history"], epoch)
    if "reg_rng" in meta:
        check_rng_state(path, "meta.reg_rng", meta["reg_rng"])
    return config, epoch


def _member_shape(path, members, name, ndim):
    m = members.get(f"model/{name}")
    if m is None:
        raise CheckpointError(f"{path}: model/{name} is missing")
    if len(m.shape) != ndim or 0 in m.shape:
        raise CheckpointError(f"{path}: model/{name} must be a non-empty {ndim}-D array, got shape {m.shape}")
    return m.shape


def expected_shapes(config, sample_shape, n_classes):
    """The parameter shapes (name -> shape, in ``named_parameters`` order) of :func:`build_model`
    ``(config, sample_shape, n_classes)``, computed without building anything."""
    if config.model == "mlp":
        return mlp_shapes((math.prod(sample_shape),) + tuple(config.hidden) + (n_classes,))
    c, h, w = sample_shape
    return small_cnn_shapes(c, h, n_classes, norm=config.norm)


def expected_buffers(config):
    """The buffers (running statistics) of :func:`build_model`'s model: ``{name: (shape, dtype)}`` in
    ``named_buffers`` order, ``dtype`` ``None`` for the configuration's float dtype; empty without
    normalization layers."""
    return {} if config.model == "mlp" else small_cnn_buffers(norm=config.norm)


def _classifier(config):
    """The name of the last Linear weight of the configured model."""
    if config.model == "mlp":
        return f"{2 * len(config.hidden)}.weight"
    return "7.weight" if config.norm == "none" else "9.weight"


def _declared_shapes(path, config, members):
    """The parameter shapes the configuration declares, with the input size and class count read off the
    stored first and last weights' headers (nothing is read or allocated)."""
    last = _classifier(config)
    if config.model == "mlp":
        n_in = _member_shape(path, members, "0.weight", 2)[1]
        n_classes = _member_shape(path, members, last, 2)[0]
        sample = (n_in,)
    else:
        channels = _member_shape(path, members, "0.weight", 4)[1]
        n_classes, flat = _member_shape(path, members, last, 2)
        side = math.isqrt(flat // 64)
        if side * side * 64 != flat:
            raise CheckpointError(f"{path}: model/{last} has {flat} inputs, not 64·s² for a square image")
        sample = (channels, 4 * side, 4 * side)
    return expected_shapes(config, sample, n_classes)


def _param_order(config, shapes):
    """Parameter names in the optimizer's numbering (see :func:`_param_groups`)."""
    names = list(shapes)
    if config.optimizer not in STIEFEL_OPTIMIZERS:
        return names, [len(names)]
    last = [n for n in names if n.endswith("weight") and len(shapes[n]) >= 2][-1]
    return [n for n in names if n != last] + [last], [len(names) - 1, 1]


def _check_members(path, config, members, shapes, buffers):
    """Names, dtypes and shapes of every array, from the headers; returns ``{key: (kind, idx, name)}``."""
    dtype = np.dtype(config.dtype)
    order, sizes = _param_order(config, shapes)
    plan = {}
    for key, m in members.items():
        if key in ("meta", "rng", "optim/param_groups"):
            continue
        parts = key.split("/")
        want_dtype = dtype
        if parts[0] == "model" and len(parts) == 2:
            name = parts[1]
            if name in buffers:
                want, kind = buffers[name]
                want_dtype = dtype if kind is None else np.dtype(kind)
            elif name not in shapes:
                raise CheckpointError(f"{path}: {key} is not a parameter of the configured model "
                                      f"({_described(config)}): {list(shapes) + list(buffers)}")
            else:
                want = shapes[name]
        elif parts[:2] in (["optim", "state"], ["optim", "none"]) and len(parts) == 4 \
                and parts[2].isdigit() and int(parts[2]) < len(order) and parts[3]:
            name = order[int(parts[2])]
            if parts[1] == "none":
                if m.shape != (0,):
                    raise CheckpointError(f"{path}: {key} must be an empty marker, got shape {m.shape}")
                plan[key] = ("none", int(parts[2]), parts[3])
                continue
            if parts[3] == "step":
                if m.dtype.kind not in "iu" or m.shape != ():
                    raise CheckpointError(f"{path}: {key} must be an integer scalar, got dtype {m.dtype} and "
                                          f"shape {m.shape}")
                plan[key] = ("step", int(parts[2]), parts[3])
                continue
            want = shapes[name]
        else:
            raise CheckpointError(f"{path}: unexpected entry {key!r} (not an orthoref checkpoint entry)")
        if m.dtype != want_dtype:
            buffer = "" if want_dtype == dtype else f" ({want_dtype} for this buffer)"
            raise CheckpointError(f"{path}: {key} has dtype {m.dtype}, the configuration's dtype is "
                                  f"{config.dtype}{buffer}")
        if m.shape != tuple(want):
            raise CheckpointError(f"{path}: {key} has shape {m.shape}, the configuration ({_described(config)}) "
                                  f"declares {tuple(want)}")
        plan[key] = ("model", None, parts[1]) if parts[0] == "model" else ("array", int(parts[2]), parts[3])
    missing = sorted((set(shapes) | set(buffers)) - {k[len("model/"):] for k in members if k.startswith("model/")})
    if missing:
        raise CheckpointError(f"{path}: the checkpoint lacks model parameter(s) or buffer(s) {missing} (of "
                              f"{_described(config)})")
    return plan, sizes


def _described(config):
    """The architecture a configuration declares, in words."""
    if config.model == "mlp":
        return f"model mlp, hidden {list(config.hidden)}"
    return f"model cnn, norm {config.norm}"


def load_checkpoint(path, *, who="load_checkpoint"):
    """Read a checkpoint into plain data: ``(meta, model_state, optimizer_state, rng_state)``.

    Everything is checked before any array is read: the format, every configuration field
    (:meth:`TrainConfig.from_json`), ``epoch`` (an int in [0, config.epochs]), the history's records, the
    RNG states, and every array's name, dtype (the configuration's) and shape (the architecture the
    configuration declares, computed arithmetically), then each array is read and checked finite. No
    pickles. Raises ``FileNotFoundError``, ``TypeError`` for a path that is not one (naming ``who``, for
    callers such as ``analysis.load_model``), and :class:`CheckpointError` naming the file and the field
    for anything else."""
    if not isinstance(path, (str, os.PathLike)) or isinstance(path, bool):
        raise TypeError(f"{who}: path must be a checkpoint file path (str or os.PathLike), got "
                        f"{type(path).__name__} {path!r}")
    path = os.fspath(path)
    with read_npz(path) as z:
        members = z.members
        for key in ("meta", "rng", "optim/param_groups"):
            if key not in members:
                raise CheckpointError(f"{path}: not an orthoref checkpoint (no {key!r} entry)")
        meta = read_json(path, members["meta"], "meta")
        config, epoch = _check_meta(path, meta)
        rng_state = read_json(path, members["rng"], "rng")
        check_rng_state(path, "rng", rng_state)
        groups = read_json(path, members["optim/param_groups"], "optim/param_groups")
        shapes = _declared_shapes(path, config, members)
        buffers = expected_buffers(config)
        plan, sizes = _check_members(path, config, members, shapes, buffers)
        check_param_groups(path, groups, sizes)
        model_state, state = read_planned(path, members, plan)
    model_state = {k: model_state[k] for k in list(shapes) + list(buffers)}
    optim_state = {"state": dict(sorted(state.items())), "param_groups": groups}
    return meta, model_state, optim_state, rng_state


def _restore(path, model, optimizer, rng, reg_rng=None, loaded=None):
    """Load checkpoint ``path`` (or its ``loaded`` contents) into ``model``, ``optimizer`` and the RNGs;
    everything is checked first, so a refused checkpoint changes nothing. Returns its ``meta``."""
    meta, model_state, optim_state, rng_state = loaded if loaded is not None else load_checkpoint(path)
    own = dict(model.named_parameters())
    own.update(dict(model.named_buffers()))
    for name, arr in model_state.items():
        if name not in own:
            raise CheckpointError(f"{path}: parameter {name!r} is not in this model (a checkpoint of another "
                                  f"model?); this model has {sorted(own)}")
        if tuple(arr.shape) != tuple(own[name].shape):
            raise CheckpointError(f"{path}: parameter {name!r} has shape {tuple(arr.shape)}, this model "
                                  f"expects {tuple(own[name].shape)}")
        if arr.dtype != own[name].dtype:
            raise CheckpointError(f"{path}: parameter {name!r} has dtype {arr.dtype}, this model's is "
                                  f"{own[name].dtype}")
    missing = sorted(set(own) - set(model_state))
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    try:
        optimizer.load_state_dict(optim_state)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise CheckpointError(f"{path}: optimizer state does not fit: {exc}") from exc
    try:
        model.load_state_dict(model_state)      # validated above, so this cannot stop half-way
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    rng.bit_generator.state = rng_state
    if reg_rng is not None and "reg_rng" in meta:
        reg_rng.bit_generator.state = meta["reg_rng"]
    return meta


# ---------------------------------------------------------------------------------------------------------
# The loop

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


def _culprit(model):
    """Which parameter holds NaN/Inf, or how large the (finite) weights have grown."""
    where = next((name for name, p in model.named_parameters() if not _all_finite(p.data)), None)
    if where:
        return f"parameter {where!r} holds NaN/Inf"
    big = max((float(abs(to_numpy(p.data)).max()) for p in model.parameters() if p.data.size), default=0.0)
    dtype = np.dtype(next((p.data.dtype for p in model.parameters()), np.float32))
    if big > float(np.finfo(dtype).max) ** 0.25:
        return (f"no parameter holds NaN/Inf, but they overflow {dtype.name} in the forward pass "
                f"(largest |w| = {big:.3g}); lower the learning rate or use float64")
    return f"no parameter holds NaN/Inf (largest |w| = {big:.3g})"


def _diverged(model, epoch, step, cause):
    raise DivergenceError(f"model output has NaN/Inf at epoch {epoch}, step {step}: {_culprit(model)}") \
        from cause


def _check_grads(model, loss, epoch, step):
    if not math.isfinite(loss):
        raise DivergenceError(f"loss is {loss} at epoch {epoch}, step {step}")
    for name, p in model.named_parameters():
        g = p._grad                         # not .grad, which would clear the mark the step() reads
        if g is not None and not p._grad_finite and not _all_finite(g):     # marked: proved finite
            raise DivergenceError(f"gradient of {name!r} has NaN/Inf at epoch {epoch}, step {step}")


def _check_params(model, epoch):
    """One reduction per parameter: all finite after the epoch's last step."""
    for name, p in model.named_parameters():
        if not _all_finite(p.data):
            raise DivergenceError(f"parameter {name!r} holds NaN/Inf after epoch {epoch}")


def _write_metrics(out, history):
    """``metrics.json`` (strict JSON: NaN/Inf values written as null) and ``metrics.csv``, atomically."""
    def write_json(f):
        f.write(strict_json(history, indent=2).encode())

    def write_csv(f):
        buf = io.StringIO()
        keys = ["epoch", "loss", "train_acc", "test_acc", "seconds"]
        extra = sorted({k for h in history for k in h} - set(keys))
        writer = csv.DictWriter(buf, fieldnames=keys + extra)
        writer.writeheader()
        for h in history:
            writer.writerow(h)
        f.write(buf.getvalue().encode())
    atomic_write(os.path.join(out, "metrics.json"), write_json)
    atomic_write(os.path.join(out, "metrics.csv"), write_csv)


def _new_run_dir():
    """A new, exclusively created ``runs/YYYYmmdd-HHMMSS[-k]`` (unique within the same second)."""
    return new_run_dir("runs")


def _check_out_free(out, resume, overwrite):
    """Refuse to write into a folder holding another run's files (unless ``overwrite``); the folder of
    the checkpoint being resumed is this run's own."""
    if overwrite or (resume is not None and same_dir(os.path.dirname(os.path.abspath(resume)), out)):
        return
    present = [f for f in RUN_FILES if os.path.exists(os.path.join(out, f))]
    if not present:
        return
    if resume is None and "checkpoint.npz" in present:
        raise FileExistsError(f"{out} already holds a checkpoint; resume it with --resume "
                              f"{os.path.join(out, 'checkpoint.npz')}, choose another --out, or pass "
                              f"--overwrite")
    what = f"resuming {resume} there" if resume is not None else "this run"
    raise FileExistsError(f"{out} already holds another run's {', '.join(present)}; {what} would replace "
                          f"them: choose another --out, or pass --overwrite")


def _claim_out(config, resume, overwrite):
    """Claim ``config.out`` (a new ``runs/...`` folder when None) before anything is loaded."""
    if config.out is None:
        config.out = _new_run_dir()
        run = claim_run_dir(config.out, who="fit")
        run.created = True               # removed again if the run ends before writing anything
        return run
    run = claim_run_dir(config.out, who="fit")
    try:
        _check_out_free(config.out, resume, overwrite)
    except BaseException:
        run.release()
        raise
    return run


def _resumed_config(resume, meta, config, overrides):
    """The checkpoint's configuration with the overrides a resumed run may take (epochs, out, progress)."""
    allowed = {"epochs", "out", "progress"}
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"fit: unknown option(s) {unknown}")
    fixed = sorted(set(overrides) - allowed)
    if fixed:
        raise ValueError(f"fit: a resumed run takes its configuration from the checkpoint; only epochs, out "
                         f"and progress may be given, got {fixed}")
    saved = dict(meta["config"])
    given = dict(asdict(config)) if config is not None else {}
    given.update(overrides)
    for k, v in given.items():
        if k in allowed and v is not None:
            saved[k] = v
    if not given.get("out"):
        saved["out"] = os.path.dirname(os.path.abspath(resume))
    saved["hidden"], saved["reg"], saved["reg_skip"] = (tuple(saved[k]) for k in ("hidden", "reg", "reg_skip"))
    config = TrainConfig(**saved).validate(who="fit")
    if config.epochs < meta["epoch"]:
        raise ValueError(f"fit: epochs must be at least the checkpoint's epoch {meta['epoch']} (epochs counts "
                         f"every epoch of the run), got {config.epochs}")
    return config


def _kept(state):
    if state["saved"] is None:
        return "no checkpoint was written by this run (no epoch ended with finite parameters)"
    epoch, path = state["saved"]
    return f"the last good checkpoint (epoch {epoch}) is kept: {path}"


def fit(config: TrainConfig = None, resume: str = None, log=print, overwrite=False, **overrides):
    """Train as configured; return ``{"history": [...], "model": model, "config": config}``.

    ``resume`` is a checkpoint path: the configuration is read from it (``epochs``, ``out``, ``progress``
    may be overridden: ``epochs`` is the total number of epochs; ``out`` defaults to the checkpoint's
    directory). A run refuses an ``out`` that holds another run's checkpoint or metrics unless
    ``overwrite``, and an ``out`` claimed by a live run always (``RunDirBusy``).

    Raises ``TypeError``/``ValueError`` for bad options, :class:`CheckpointError` for a bad checkpoint
    (before anything is trained), ``OSError`` for a folder that cannot be written (a full disk: the
    previous checkpoint is intact), :class:`DivergenceError` when training diverges, and
    :class:`RunInterrupted` on SIGTERM/SIGINT (temporary files and the lock removed).
    """
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"fit: config must be a TrainConfig or None, got {type(config).__name__}")
    if log is not None and not callable(log):
        raise TypeError(f"fit: log must be callable or None, got {log!r}")
    overwrite = check_bool("fit", "overwrite", overwrite)
    loaded = None
    if resume is not None:
        if not isinstance(resume, (str, os.PathLike)):
            raise TypeError(f"fit: resume must be a checkpoint path, got {type(resume).__name__}")
        resume = os.fspath(resume)
        loaded = load_checkpoint(resume)
        config = _resumed_config(resume, loaded[0], config, overrides)
    else:
        config = (config or TrainConfig())
        for k, v in overrides.items():
            if k not in {f.name for f in fields(TrainConfig)}:
                raise TypeError(f"fit: unknown option {k!r}")
            setattr(config, k, v)
        config.validate()
    state = {"epoch": None, "saved": None}
    with interruptible():
        run = _claim_out(config, resume, overwrite)
        if log and (run.took_over or run.stale_removed):
            log(f"{config.out}: took over the folder of a run that is gone"
                + (f"; removed its temporary file(s) {', '.join(run.stale_removed)}" if run.stale_removed else ""))
        try:
            return _fit_claimed(config, resume, loaded, log, state)
        except DivergenceError as exc:
            raise DivergenceError(f"{exc}; training stopped, {_kept(state)}") from exc.__cause__
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            when = f"during epoch {state['epoch']}" if state["epoch"] else "before the first epoch"
            raise RunInterrupted(signum, f"fit: interrupted by {signal_name(signum)} {when}; "
                                         f"{_kept(state)}") from None
        finally:
            run.release()


def _fit_claimed(config, resume, loaded, log, state):
    X_tr, y_tr, X_te, y_te = load_data(config)
    n_classes = int(max(y_tr.max(), y_te.max())) + 1
    model = build_model(config, X_tr.shape[1:], n_classes)
    optimizer = OPTIMIZERS[config.optimizer](_param_groups(model, config), lr=config.lr,
                                             **optimizer_kwargs(config.optimizer, config.optimizer_options))
    rng = np.random.default_rng(config.seed + 1)
    reg = Regularization(model, config, np.random.default_rng(config.seed + 2))
    history, start = [], 1
    if resume is not None:
        meta = _restore(resume, model, optimizer, rng, reg.rng, loaded=loaded)
        history, start = list(meta["history"]), int(meta["epoch"]) + 1
        state["saved"] = (int(meta["epoch"]), resume)
    ckpt = os.path.join(config.out, "checkpoint.npz")
    n = len(X_tr)
    steps = -(-n // config.batch_size)
    sv_bound = None if config.sv_bound is None else parse_sv_bound(config.sv_bound)
    for epoch in range(start, config.epochs + 1):
        state["epoch"] = epoch
        t0 = time.perf_counter()
        order = rng.permutation(n)
        bar = Progress(steps, f"epoch {epoch}/{config.epochs}", config.progress, unit="batch")
        loss_sum, reg_sum, correct, seen = 0.0, 0.0, 0, 0
        where = f"at epoch {epoch}"
        try:
            for step in range(steps):
                where = f"at epoch {epoch}, step {step + 1}"
                idx = order[step * config.batch_size:(step + 1) * config.batch_size]
                xb, yb = asarray(X_tr[idx]), asarray(y_tr[idx])
                logits = _forward(model, xb, epoch, step + 1)
                loss, dlogits = cross_entropy(logits, yb)
                loss = float(loss)
                optimizer.zero_grad()
                where = f"in a gradient at epoch {epoch}, step {step + 1} (backward pass)"
                model.backward(dlogits, input_grad=False)
                if reg.active:
                    reg_sum += reg.apply()
                _check_grads(model, loss, epoch, step + 1)
                where = f"at epoch {epoch}, step {step + 1} (optimizer step)"
                optimizer.step()
                if sv_bound and ((epoch - 1) * steps + step + 1) % sv_bound[1] == 0:
                    bound_singular_values(model, sv_bound[0])
                loss_sum += loss * len(idx)
                correct += int((to_numpy(logits).argmax(axis=1) == y_tr[idx]).sum())
                seen += len(idx)
                bar.update(loss=loss_sum / seen, acc=correct / seen)
            where = f"after epoch {epoch}"
            _check_params(model, epoch)
            record = {"epoch": epoch, "loss": loss_sum / seen, "train_acc": correct / seen,
                      "test_acc": evaluate(model, X_te, y_te), "seconds": time.perf_counter() - t0}
            if reg.active:
                record["reg"] = reg_sum / steps
            record["orthogonality"] = {name: orthogonality_error_rms(p.data) for name, p in model.named_parameters()
                                       if p.data.ndim >= 2}
            history.append(record)
            save_checkpoint(ckpt, model, optimizer, rng, epoch, config, history, reg.rng)
        except NonFiniteError as exc:
            raise DivergenceError(f"NaN/Inf {where}: {exc}; {_culprit(model)}") from exc
        finally:
            bar.close()
        state["saved"] = (epoch, ckpt)
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


