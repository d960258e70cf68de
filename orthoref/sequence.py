"""The adding problem with an Elman RNN: how the recurrent initialization decides long-memory learning.

``fit_adding(T, hidden, init, ...)`` trains ``orthoref.nn.RNN`` (one layer) with a ``Linear(hidden, 1)`` head
on the **last** output on :func:`orthoref.tasks.adding_problem`, MSE loss, every gradient from our own
backward passes (``Linear.backward`` then ``RNN.backward`` with ``grad_out`` zero except at the last step).
``adding_table`` runs several initializations and ``format_adding_table`` prints them as markdown.

The baseline: predicting the constant 1 gives MSE ``1/6 ≈ 0.167`` (:func:`orthoref.tasks.adding_baseline_mse`);
a model that has learned the task goes well below it; the usual "solved" threshold is MSE < 0.01.

``init`` (the recurrent weight ``W_hh``; ``W_ih``, biases and the head keep PyTorch's default init):

``"normal"``
    ``W_hh ~ N(0, 1/hidden)`` (spectral radius ≈ 1, not norm preserving), tanh.
``"orthogonal"``
    ``W_hh`` Haar orthogonal (:func:`orthoref.init.orthogonal`), tanh.
``"identity"``
    ``W_hh = I`` with **relu**: the IRNN of Le, Jaitly & Hinton (2015).
``"parametrized"``
    Orthogonal constraint (Riemannian Adam on W_hh): ``W_hh`` starts Haar orthogonal and stays on the
    orthogonal group, each step projects the Euclidean gradient onto the tangent space and retracts (QR); all
    other parameters get the plain (Euclidean) Adam update of the same optimizer (``RiemannianAdam`` with two
    parameter groups, ``stiefel=True`` for ``W_hh`` and ``stiefel=False`` for the rest); tanh.
    (``optimizer="sgd"`` uses ``RiemannianSGD`` the same way.)
``"expm"``
    Orthogonal parametrization: ``W_hh = base · expm(A)``, ``A`` skew from the strict lower triangle of an
    unconstrained parameter trained by Adam/SGD through ``expm_skew_vjp`` (PyTorch's ``orthogonal``
    parametrization, matrix_exp map, trivialization); tanh.

Training: mini-batches of ``batch_size`` fresh sequences per step (one host RNG from ``seed``), gradients
clipped by their **global norm to 1.0** (all parameters together; keeps relu/IRNN and long ``T`` from
exploding), Adam (or SGD) at ``lr``. Every ``eval_every`` steps (and after the last) the MSE is measured
on one fixed held-out batch of 500 sequences drawn with ``seed + 1``.

Run files (``out=DIR``; ``orthoref train --model rnn --task adding``), as :mod:`orthoref.train` writes them:
the folder is claimed (``.orthoref.lock``, :func:`orthoref._io.claim_run_dir`), and at every evaluation
(step 0, every ``eval_every`` steps, the last step) three files are replaced atomically
(:func:`orthoref._io.atomic_write`): ``checkpoint.npz``, ``metrics.csv`` (``step,eval_mse``) and
``metrics.json`` (the result dict so far, strict JSON). A killed run leaves the last complete checkpoint;
``fit_adding(resume="DIR/checkpoint.npz", steps=N)`` continues it to ``N`` steps in total with its saved
configuration and ends bit-identical (parameters and history) to the uninterrupted run. A run that
diverges (a non-finite gradient or held-out MSE) stops; its last checkpoint is the last finite state.

``checkpoint.npz`` (read without pickles by :func:`load_adding_checkpoint`; the layout of
:func:`orthoref.train.save_checkpoint`):

``meta``
    strict JSON ``{"format": 1, "kind": "adding_rnn", "step", "config", "history", "seconds"}``;
    ``config`` holds ``T, hidden, init, steps, batch_size, lr, optimizer, seed, dtype, target_mse,
    eval_every``, ``history`` the ``[step, eval_mse]`` pairs so far.
``model/NAME``
    the parameters (``config["dtype"]``): ``rnn.weight_ih_l0``, ``rnn.weight_hh_l0``, ``rnn.bias_ih_l0``,
    ``rnn.bias_hh_l0``, ``head.weight``, ``head.bias``, and for ``init="expm"`` ``expm.weight_hh_raw`` (the
    parametrization's raw parameter).
``optim/state/I/KEY``, ``optim/none/I/KEY``, ``optim/param_groups``
    ``Optimizer.state_dict()`` (parameters numbered as the optimizer holds them).
``rng``
    the PCG64 state of the training-data generator (JSON).
"""
from __future__ import annotations

import csv
import inspect
import io
import math
import os
import signal
import time

import numpy as np

from ._checks import MAX_ITERATIONS, NonFiniteError, check_int, check_real
from ._io import CheckpointError, RunInterrupted, atomic_write, read_npz, signal_name, strict_json
from .backend import to_numpy
from .nn.linear import Linear
from .nn.module import Module
from .nn.rnn import RNN
from .ops.loss import mse
from .optim import SGD, Adam, RiemannianAdam, RiemannianSGD
from .tasks import adding_baseline_mse, adding_problem
# The checkpoint and run-folder helpers shared with orthoref.train (the same format and discipline as its runs).
from ._checkpoint import (check_param_groups, check_rng_state, is_int, is_number, json_array, read_json,
                          read_planned, same_dir, state_arrays)
from .train import RUN_FILES

__all__ = ["ADDING_INITS", "fit_adding", "adding_table", "format_adding_table", "DEFAULT_TABLE_STEPS",
           "is_adding_checkpoint", "load_adding_checkpoint", "load_adding_model"]

#: The ``init`` names of :func:`fit_adding` (the table in the module docstring).
ADDING_INITS = ("normal", "orthogonal", "identity", "parametrized", "expm")
OPTIMIZER_NAMES = ("adam", "sgd")
EVAL_SIZE = 500
CLIP_NORM = 1.0
# Measured on the 2-core host (T=100, hidden 128, batch 50, float32): 2000 steps take 20-26 s per init,
# the four-row table 95 s. At 4000 steps "normal" slowed ~10x in its second half (253 s vs 46-66 s for the
# others; cause not verified -- possibly subnormal float32 values), so keep 2000 to stay < 5 minutes.
#: The steps of each run of :func:`adding_table` by default (see the comment above).
DEFAULT_TABLE_STEPS = 2000


#: The steps of :func:`fit_adding` when ``steps`` is not given (and no run is resumed).
DEFAULT_STEPS = 2000
#: The configuration a checkpoint of :func:`fit_adding` stores (``meta.config``), in order.
CONFIG_KEYS = ("T", "hidden", "init", "steps", "batch_size", "lr", "optimizer", "seed", "dtype", "target_mse",
               "eval_every")
CHECKPOINT_KIND = "adding_rnn"      # meta.kind: what tells this checkpoint from one of orthoref.train.fit
CHECKPOINT_FORMAT = 1
_RAW = "expm.weight_hh_raw"         # the checkpoint name of the expm parametrization's raw parameter


def _int(who, v, name, minimum=1):
    return check_int(who, name, v, minimum, MAX_ITERATIONS if name == "steps" else None)


def _pos_real(who, v, name):
    return check_real(who, name, v, 0.0, lo_open=True)


def _config(given, who="fit_adding"):
    """The checked configuration of ``given`` (a dict with every key of :data:`CONFIG_KEYS`): ints, floats and
    the dtype's name, in :data:`CONFIG_KEYS` order. ``TypeError``/``ValueError`` starting with ``who``."""
    init, optimizer, dtype = given["init"], given["optimizer"], given["dtype"]
    if not isinstance(init, str) or init not in ADDING_INITS:
        raise ValueError(f"{who}: init must be one of {ADDING_INITS}, got {init!r}")
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZER_NAMES:
        raise ValueError(f"{who}: optimizer must be one of {OPTIMIZER_NAMES}, got {optimizer!r}")
    try:
        dt = None if dtype is None else np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in ("float32", "float64"):      # (np.dtype("float64") == None holds)
        raise ValueError(f"{who}: dtype must be 'float32' or 'float64', got {dtype!r}")
    return {"T": _int(who, given["T"], "T", 2), "hidden": _int(who, given["hidden"], "hidden"), "init": init,
            "steps": _int(who, given["steps"], "steps"), "batch_size": _int(who, given["batch_size"], "batch_size"),
            "lr": _pos_real(who, given["lr"], "lr"), "optimizer": optimizer,
            "seed": _int(who, given["seed"], "seed", 0), "dtype": dt.name,
            "target_mse": _pos_real(who, given["target_mse"], "target_mse"),
            "eval_every": _int(who, given["eval_every"], "eval_every")}


def build_adding_model(hidden, init, seed, dtype):
    """``(rnn, head)`` for :func:`fit_adding`: ``RNN(2, hidden)`` and ``Linear(hidden, 1)``, from ``seed``."""
    from .init import normal
    gen = np.random.default_rng(seed)
    nonlinearity = "relu" if init == "identity" else "tanh"
    if init == "normal":
        def hidden_init(shape, rng=None, dtype=np.float32):
            return normal(shape, std=1.0 / math.sqrt(shape[0]), rng=rng, dtype=dtype)
    elif init == "identity":
        hidden_init = "identity"
    else:  # "orthogonal", "parametrized" and "expm" all start Haar orthogonal
        hidden_init = "orthogonal"
    rnn = RNN(2, hidden, nonlinearity, hidden_init=hidden_init, rng=gen, dtype=dtype)
    head = Linear(hidden, 1, rng=gen, dtype=dtype)
    return rnn, head


class _ExpmParametrization:
    """``W_hh = base · expm(A)``, ``A = L − Lᵀ`` with ``L`` the strictly lower triangle of an unconstrained
    parameter (PyTorch's ``orthogonal`` parametrization with ``orthogonal_map="matrix_exp"`` and
    trivialization): ``base`` is the Haar-orthogonal initial ``W_hh`` and the parameter starts at zero. The
    gradient reaches the parameter through ``expm_skew_vjp`` (the Fréchet derivative)."""

    def __init__(self, rnn):
        from .nn import Parameter
        self.rnn = rnn
        self.base = rnn.weight_hh_l0.data.copy()
        self.raw = Parameter(np.zeros_like(self.base), name="weight_hh_raw")

    def _skew(self):
        low = np.tril(self.raw.data, -1)
        return low - low.T

    def apply(self):
        """Write ``base · expm(A)`` into the RNN's ``W_hh`` (before each forward)."""
        from .ortho import expm_skew
        self.rnn.weight_hh_l0.data = self.base @ expm_skew(self._skew())

    def pull_back(self):
        """``raw.grad`` from ``W_hh.grad``: ``Q̄ = baseᵀ W̄``, ``Ā = expm_skew_vjp(A, Q̄)``, then the
        adjoint of ``L ↦ L − Lᵀ`` restricted to the strict lower triangle."""
        from .ortho import expm_skew_vjp
        g = self.rnn.weight_hh_l0.grad
        if g is None:
            return
        ga = expm_skew_vjp(self._skew(), self.base.T @ g)
        self.raw.grad = np.tril(ga - ga.T, -1).astype(self.raw.data.dtype)


def _predict(rnn, head, x):
    out = rnn.forward(x)
    return head.forward(out[-1])


def _params(rnn, head):
    return list(rnn.parameters()) + list(head.parameters())


def _make_optimizer(rnn, head, init, optimizer, lr, extra=()):
    params = _params(rnn, head)
    if init == "expm":
        params = [p for p in params if p is not rnn.weight_hh_l0] + list(extra)
    if init == "parametrized":
        rest = [p for p in params if p is not rnn.weight_hh_l0]
        groups = [{"params": [rnn.weight_hh_l0], "stiefel": True}, {"params": rest, "stiefel": False}]
        return RiemannianAdam(groups, lr=lr) if optimizer == "adam" else RiemannianSGD(groups, lr=lr)
    return Adam(params, lr=lr) if optimizer == "adam" else SGD(params, lr=lr)


def _clip_global_norm(params, max_norm):
    """Scale all gradients in place so that their global L2 norm is at most ``max_norm``; returns the norm."""
    total = math.sqrt(sum(float((p.grad.astype(np.float64) ** 2).sum()) for p in params if p.grad is not None))
    if total > max_norm and math.isfinite(total):
        scale = max_norm / (total + 1e-12)
        for p in params:
            if p.grad is not None:
                p.grad *= p.grad.dtype.type(scale)
    return total


class _AddingNet(Module):
    """The RNN and its head as one Module: parameter names ``rnn.weight_ih_l0``, ..., ``head.bias`` (the
    checkpoint's ``model/`` entries, :func:`orthoref.analysis.layer_table`'s rows)."""

    def __init__(self, rnn, head):
        self.rnn = rnn
        self.head = head

    def forward(self, x):
        return _predict(self.rnn, self.head, x)


def _param_shapes(config):
    """The shape of every ``model/`` entry of a checkpoint of ``config`` (name -> shape)."""
    H = config["hidden"]
    shapes = {"rnn.weight_ih_l0": (H, 2), "rnn.weight_hh_l0": (H, H), "rnn.bias_ih_l0": (H,),
              "rnn.bias_hh_l0": (H,), "head.weight": (1, H), "head.bias": (1,)}
    if config["init"] == "expm":
        shapes[_RAW] = (H, H)
    return shapes


def _optim_groups(init, optimizer):
    """The names of the parameters of each group of :func:`_make_optimizer`'s optimizer for ``init`` and
    ``optimizer``, in its numbering (read off a model of hidden size 1, so it cannot drift from it)."""
    rnn, head = build_adding_model(1, init, 0, np.float64)
    names = {id(p): n for n, p in _AddingNet(rnn, head).named_parameters()}
    extra = ()
    if init == "expm":
        param = _ExpmParametrization(rnn)
        names[id(param.raw)], extra = _RAW, [param.raw]
    opt = _make_optimizer(rnn, head, init, optimizer, 1e-3, extra=extra)
    return [[names[id(p)] for p in g["params"]] for g in opt.param_groups]


# ---------------------------------------------------------------------------------------------------------
# Checkpoints

def _checkpoint_arrays(run, step, history, seconds):
    """The members of ``checkpoint.npz`` (see the module docstring); ``NonFiniteError`` for NaN/Inf state."""
    model_arrays = dict(run.net.state_dict())
    if run.param is not None:
        model_arrays[_RAW] = np.array(to_numpy(run.param.raw.data), copy=True)
    arrays = state_arrays("fit_adding", model_arrays, run.opt.state_dict())
    arrays["rng"] = json_array(run.data_rng.bit_generator.state)
    meta = {"format": CHECKPOINT_FORMAT, "kind": CHECKPOINT_KIND, "step": step, "config": dict(run.config),
            "history": [list(h) for h in history], "seconds": seconds}
    arrays["meta"] = json_array(meta)          # history and seconds are finite here (else: ValueError)
    return arrays


def _save_checkpoint(path, run, step, history, seconds):
    arrays = _checkpoint_arrays(run, step, history, seconds)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def is_adding_checkpoint(path):
    """Whether ``path`` is an ``.npz`` whose ``meta`` record says it is a checkpoint of :func:`fit_adding`.

    Only the kind is read (:func:`load_adding_checkpoint` checks the rest); a missing, unreadable or
    damaged file, or a checkpoint of ``orthoref.train.fit``, gives False. ``TypeError`` for a ``path`` that
    is not a str or ``os.PathLike``. ``orthoref analyze`` uses it to tell the two kinds of checkpoint apart.
    """
    if not isinstance(path, (str, os.PathLike)) or isinstance(path, bool):
        raise TypeError(f"is_adding_checkpoint: path must be a file path (str or os.PathLike), got "
                        f"{type(path).__name__} {path!r}")
    try:
        with read_npz(path) as z:
            m = z.members.get("meta")
            meta = read_json(path, m, "meta") if m is not None else None
    except (OSError, ValueError, TypeError):
        return False
    return isinstance(meta, dict) and meta.get("kind") == CHECKPOINT_KIND


def _check_history(path, history, step):
    if not isinstance(history, list) or not history:
        raise CheckpointError(f"{path}: meta.history must be a non-empty list of [step, eval_mse] pairs, got "
                              f"{str(history)[:60]!r}")
    previous = -1
    for i, pair in enumerate(history):
        where = f"{path}: meta.history[{i}]"
        if not isinstance(pair, list) or len(pair) != 2:
            raise CheckpointError(f"{where} must be a pair [step, eval_mse], got {str(pair)[:60]!r}")
        s, v = pair
        if not is_int(s) or s <= previous or s > step or (i == 0 and s != 0):
            raise CheckpointError(f"{where}: the steps must rise from 0 to meta.step ({step}), got {s!r} after "
                                  f"{previous if i else 'the start'}")
        if not is_number(v) or not math.isfinite(v) or v < 0:
            raise CheckpointError(f"{where}: eval_mse must be a finite number >= 0, got {v!r}")
        previous = s
    if previous != step:
        raise CheckpointError(f"{path}: meta.history must end at meta.step ({step}), ends at step {previous}")


def _check_meta(path, meta):
    """Validate ``meta``; returns the configuration."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: meta must be a JSON object, got {type(meta).__name__}")
    if meta.get("kind") != CHECKPOINT_KIND:
        if "epoch" in meta and isinstance(meta.get("config"), dict):
            model = meta["config"].get("model")
            raise CheckpointError(f"{path}: a checkpoint of an MLP/CNN run (orthoref.train.fit, model "
                                  f"{model!r}), not of the RNN of fit_adding; resume it with orthoref train "
                                  f"--resume without --model rnn (orthoref.train.fit(resume=...))")
        raise CheckpointError(f"{path}: not a checkpoint of fit_adding (meta.kind must be {CHECKPOINT_KIND!r}, "
                              f"got {meta.get('kind')!r})")
    keys = {"format", "kind", "step", "config", "history", "seconds"}
    missing, unknown = sorted(keys - set(meta)), sorted(set(meta) - keys, key=str)
    if missing or unknown:
        raise CheckpointError(f"{path}: meta is missing {missing}" if missing
                              else f"{path}: meta has unknown field(s) {unknown}")
    if not is_int(meta["format"]) or meta["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {meta['format']!r}, expected {CHECKPOINT_FORMAT}")
    given = meta["config"]
    if not isinstance(given, dict):
        raise CheckpointError(f"{path}: meta.config must be a JSON object, got {type(given).__name__}")
    missing, unknown = [k for k in CONFIG_KEYS if k not in given], sorted(set(given) - set(CONFIG_KEYS), key=str)
    if missing or unknown:
        raise CheckpointError(f"{path}: config: missing field(s) {missing}" if missing
                              else f"{path}: config: unknown field(s) {unknown}")
    try:
        config = _config(given, who=f"{path}: config")
    except (TypeError, ValueError) as exc:
        raise CheckpointError(str(exc)) from None
    step = meta["step"]
    if not is_int(step) or not 0 <= step <= config["steps"]:
        raise CheckpointError(f"{path}: meta.step must be an int in [0, {config['steps']}] (the configuration's "
                              f"steps), got {step!r}")
    _check_history(path, meta["history"], step)
    seconds = meta["seconds"]
    if not is_number(seconds) or not math.isfinite(seconds) or seconds < 0:
        raise CheckpointError(f"{path}: meta.seconds must be a finite number >= 0, got {seconds!r}")
    return config


def _check_members(path, config, members, shapes, order):
    """Names, dtypes and shapes of every array, from the headers; returns ``{key: (kind, idx, name)}``."""
    dtype = np.dtype(config["dtype"])
    described = f"init {config['init']}, hidden {config['hidden']}"
    plan = {}
    for key, m in members.items():
        if key in ("meta", "rng", "optim/param_groups"):
            continue
        parts = key.split("/")
        if parts[0] == "model" and len(parts) == 2:
            if parts[1] not in shapes:
                raise CheckpointError(f"{path}: {key} is not a parameter of the configured RNN ({described}): "
                                      f"{list(shapes)}")
            want, plan[key] = shapes[parts[1]], ("model", None, parts[1])
        elif parts[:2] in (["optim", "state"], ["optim", "none"]) and len(parts) == 4 \
                and parts[2].isdigit() and int(parts[2]) < len(order) and parts[3]:
            idx = int(parts[2])
            if parts[1] == "none":
                if m.shape != (0,):
                    raise CheckpointError(f"{path}: {key} must be an empty marker, got shape {m.shape}")
                plan[key] = ("none", idx, parts[3])
                continue
            if parts[3] == "step":
                if m.dtype.kind not in "iu" or m.shape != ():
                    raise CheckpointError(f"{path}: {key} must be an integer scalar, got dtype {m.dtype} and "
                                          f"shape {m.shape}")
                plan[key] = ("step", idx, parts[3])
                continue
            want, plan[key] = shapes[order[idx]], ("array", idx, parts[3])
        else:
            raise CheckpointError(f"{path}: unexpected entry {key!r} (not an entry of a fit_adding checkpoint)")
        if m.dtype != dtype:
            raise CheckpointError(f"{path}: {key} has dtype {m.dtype}, the configuration's dtype is "
                                  f"{config['dtype']}")
        if m.shape != tuple(want):
            raise CheckpointError(f"{path}: {key} has shape {m.shape}, the configuration ({described}) "
                                  f"declares {tuple(want)}")
    missing = [n for n in shapes if f"model/{n}" not in members]
    if missing:
        raise CheckpointError(f"{path}: the checkpoint lacks model parameter(s) {missing}")
    return plan


def load_adding_checkpoint(path):
    """Read a checkpoint of :func:`fit_adding` into plain data: ``(meta, model_state, optimizer_state,
    rng_state)``.

    ``meta`` is the checked JSON record (``step``, ``config``, ``history``, ``seconds``, ...);
    ``model_state`` maps ``rnn.weight_ih_l0``, ..., ``head.bias`` (and ``expm.weight_hh_raw`` for
    ``init="expm"``) to arrays; ``optimizer_state`` is an ``Optimizer.state_dict()``; ``rng_state`` the
    training-data generator's PCG64 state.

    Everything is checked before any array is read: the kind and format, every configuration field, the
    step, the history, the RNG state, the parameter groups, and every array's name, dtype (the
    configuration's) and shape (from ``hidden`` and ``init``); then each array is read and checked finite.
    No pickles. Raises ``TypeError`` for a ``path`` that is not one, ``FileNotFoundError``, and
    ``orthoref.train.CheckpointError`` (a ``ValueError``) naming the file and the field for anything else: a
    damaged file, a checkpoint of ``orthoref.train.fit`` (an MLP or CNN run), a configuration that disagrees
    with the arrays.
    """
    if not isinstance(path, (str, os.PathLike)) or isinstance(path, bool):
        raise TypeError(f"load_adding_checkpoint: path must be a checkpoint file path (str or os.PathLike), got "
                        f"{type(path).__name__} {path!r}")
    path = os.fspath(path)
    with read_npz(path) as z:
        members = z.members
        if "meta" not in members:
            raise CheckpointError(f"{path}: not an orthoref checkpoint (no 'meta' entry)")
        meta = read_json(path, members["meta"], "meta")
        config = _check_meta(path, meta)
        for key in ("rng", "optim/param_groups"):
            if key not in members:
                raise CheckpointError(f"{path}: not a complete fit_adding checkpoint (no {key!r} entry)")
        rng_state = read_json(path, members["rng"], "rng")
        check_rng_state(path, "rng", rng_state)
        groups = read_json(path, members["optim/param_groups"], "optim/param_groups")
        names = _optim_groups(config["init"], config["optimizer"])
        check_param_groups(path, groups, [len(g) for g in names])
        shapes = _param_shapes(config)
        plan = _check_members(path, config, members, shapes, [n for g in names for n in g])
        model_state, state = read_planned(path, members, plan)
    meta = dict(meta, config=config)
    model_state = {k: model_state[k] for k in shapes}
    return meta, model_state, {"state": dict(sorted(state.items())), "param_groups": groups}, rng_state


def load_adding_model(path):
    """The trained model of a :func:`fit_adding` checkpoint: ``(model, config, meta)``.

    ``model`` is a ``Module`` holding ``model.rnn`` (``orthoref.nn.RNN``) and ``model.head`` (``Linear``),
    parameters named ``rnn.weight_ih_l0``, ..., ``head.bias`` (``forward(x)``: the prediction at the last step
    of ``x (T, N, 2)``); ``config`` the checkpoint's configuration (a dict, :data:`CONFIG_KEYS`); ``meta``
    its record (step, history, ...). Raises as :func:`load_adding_checkpoint`.
    """
    loaded = load_adding_checkpoint(path)
    run = _Run(loaded[0]["config"], loaded, os.fspath(path))
    return run.net.eval(), dict(run.config), loaded[0]


# ---------------------------------------------------------------------------------------------------------
# Training

class _Run:
    """One run: model, optimizer, training-data generator, step and history (restored from ``loaded``, the
    checked contents of the checkpoint ``path``, when resumed)."""

    def __init__(self, config, loaded=None, path=None):
        self.config = config
        self.dtype = np.dtype(config["dtype"])
        self.rnn, self.head = build_adding_model(config["hidden"], config["init"], config["seed"], self.dtype)
        self.net = _AddingNet(self.rnn, self.head)
        self.param = _ExpmParametrization(self.rnn) if config["init"] == "expm" else None
        extra = [self.param.raw] if self.param is not None else ()
        self.opt = _make_optimizer(self.rnn, self.head, config["init"], config["optimizer"], config["lr"], extra)
        params = _params(self.rnn, self.head)
        if self.param is not None:
            params = [p for p in params if p is not self.rnn.weight_hh_l0] + [self.param.raw]
        self.params = params                  # what the gradient clipping scales
        self.data_rng = np.random.default_rng([config["seed"], 2])
        self.step, self.history, self.seconds = 0, [], 0.0
        if loaded is not None:
            self._restore(path, loaded)

    def _restore(self, path, loaded):
        meta, model_state, optim_state, rng_state = loaded
        model_state = dict(model_state)
        raw = model_state.pop(_RAW, None)
        try:                        # each checks everything before it assigns anything
            self.net.load_state_dict(model_state)
            self.opt.load_state_dict(optim_state)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        if self.param is not None:
            self.param.raw.data = np.array(raw, dtype=self.dtype, copy=True)
            self.param.apply()
        self.data_rng.bit_generator.state = rng_state
        self.step, self.seconds = int(meta["step"]), float(meta["seconds"])
        self.history = [(int(s), float(v)) for s, v in meta["history"]]

    def result(self, seconds, checkpoint):
        c, history = self.config, list(self.history)
        reached = next((s for s, v in history if v < c["target_mse"]), None)
        return {"init": c["init"], "T": c["T"], "hidden": c["hidden"], "nonlinearity": self.rnn.nonlinearity,
                "steps": c["steps"], "steps_to_target": reached, "final_mse": history[-1][1],
                "baseline_mse": adding_baseline_mse(), "target_mse": c["target_mse"], "history": history,
                "seconds": seconds, "checkpoint": checkpoint}

    def train(self, log, out, state):
        """Train from ``self.step`` to ``config["steps"]``; with ``out``, write the run files at every
        evaluation (``state["saved"]``: the last checkpoint kept, as ``(step, path)``). Returns the result."""
        c, rnn, head, param = self.config, self.rnn, self.head, self.param
        T, dt, init = c["T"], self.dtype, c["init"]
        t0, seconds0 = time.perf_counter(), self.seconds
        x_eval, y_eval = adding_problem(EVAL_SIZE, T, rng=c["seed"] + 1, dtype=dt)
        ckpt = os.path.join(out, "checkpoint.npz") if out is not None else None
        written = None                                  # the step of this call's last checkpoint

        def elapsed():
            return seconds0 + time.perf_counter() - t0

        def kept():
            return state["saved"][1] if state["saved"] else None

        def save(step):
            nonlocal written
            _save_checkpoint(ckpt, self, step, self.history, elapsed())
            state["saved"], written = (step, ckpt), step
            _write_metrics(out, self.result(elapsed(), ckpt))

        def evaluate(step):
            if param is not None:
                param.apply()
            value = float(to_numpy(mse(_predict(rnn, head, x_eval), y_eval)[0]))
            self.history.append((step, value))
            if not math.isfinite(value):
                return f"held-out MSE is {value}"
            if ckpt is not None:
                save(step)
            if log is not None:
                log(f"adding T={T} init={init} step {step}: eval mse {value:.5f}")
            return None

        diverged = evaluate(0) if not self.history else None
        grad_out = np.zeros((T, c["batch_size"], c["hidden"]), dtype=dt)
        for step in range(self.step + 1, c["steps"] + 1):
            if diverged:
                break
            state["step"] = step
            x, y = adding_problem(c["batch_size"], T, rng=self.data_rng, dtype=dt)
            try:
                self.opt.zero_grad()
                rnn.weight_hh_l0.grad = None
                if param is not None:
                    param.apply()
                out_seq = rnn.forward(x)
                pred = head.forward(out_seq[-1])
                _, dpred = mse(pred, y)
                grad_out[-1] = head.backward(dpred, input_grad=True)
                rnn.backward(grad_out, input_grad=False)
                if param is not None:
                    param.pull_back()
                norm = _clip_global_norm(self.params, CLIP_NORM)
                if math.isfinite(norm):
                    self.opt.step()
            except NonFiniteError as exc:
                norm, cause = float("nan"), f" ({exc})"
            else:
                cause = ""
            if not math.isfinite(norm):
                self.history.append((step, float("nan")))
                diverged = f"non-finite gradient{cause}"
                break
            self.step = step
            if step % c["eval_every"] == 0 or step == c["steps"]:
                diverged = evaluate(step)
        if ckpt is not None:
            if diverged:
                _write_metrics(out, self.result(elapsed(), kept()))
            elif written != self.step:          # resumed with nothing left to train, or into a new folder
                save(self.step)
        if diverged and log is not None:
            where = (f"the last checkpoint (step {state['saved'][0]}) is kept: {state['saved'][1]}"
                     if state["saved"] else "no checkpoint was written")
            log(f"adding T={T} init={init} step {self.history[-1][0]}: {diverged}, stopping; {where}")
        return self.result(elapsed(), kept())


def _write_metrics(out, result):
    """``metrics.json`` (the result without its checkpoint path; strict JSON: a NaN MSE is ``null``) and
    ``metrics.csv`` (``step,eval_mse``), atomically."""
    record = {k: v for k, v in result.items() if k != "checkpoint"}
    record["history"] = [list(h) for h in result["history"]]
    atomic_write(os.path.join(out, "metrics.json"), lambda f: f.write(strict_json(record, indent=2).encode()))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["step", "eval_mse"])
    writer.writerows(result["history"])
    atomic_write(os.path.join(out, "metrics.csv"), lambda f: f.write(buf.getvalue().encode()))


def _claim(out, overwrite, resume, new_run):
    """Claim the run folder ``out`` (a new ``runs/YYYYmmdd-HHMMSS[-k]`` with ``new_run``; lock, stale
    temporary files) and refuse another run's files there (the folder of the checkpoint resumed is this
    run's own). Returns ``(out, run)``."""
    from ._io import claim_run_dir, new_run_dir
    if new_run:
        out = new_run_dir("runs")
        run = claim_run_dir(out, who="fit_adding")
        run.created = True                 # removed again if the run ends before writing anything
        return out, run
    run = claim_run_dir(out, who="fit_adding")
    own = resume is not None and same_dir(os.path.dirname(os.path.abspath(resume)), out)
    present = [f for f in RUN_FILES if os.path.exists(os.path.join(out, f))]
    if present and not overwrite and not own:
        run.release()
        hint = (f"resume it with resume={os.path.join(out, 'checkpoint.npz')!r} (--resume), "
                if resume is None and "checkpoint.npz" in present else "")
        raise FileExistsError(f"fit_adding: {out} already holds another run's {', '.join(present)}; {hint}choose "
                              f"another out, or pass overwrite=True (--overwrite)")
    return out, run


def _resumed_config(path, saved, given, who="fit_adding"):
    """The checkpoint's configuration ``saved`` with ``given["steps"]`` (None: the saved steps). Another
    configuration argument may only repeat the saved value or keep its default (then the saved value is
    used); ``ValueError`` naming it otherwise."""
    mine = _config(dict(given, steps=given["steps"] if given["steps"] is not None else saved["steps"]), who)
    defaults = _config(dict(_DEFAULTS, steps=DEFAULT_STEPS), who)
    for k in CONFIG_KEYS:
        if k != "steps" and mine[k] != defaults[k] and mine[k] != saved[k]:
            raise ValueError(f"{who}: a resumed run takes its configuration from the checkpoint ({path} has "
                             f"{k}={saved[k]!r}); only steps and out may change, got {k}={mine[k]!r}")
    config = dict(saved, steps=mine["steps"])
    return config


def fit_adding(T=100, hidden=128, init="orthogonal", steps=None, batch_size=50, lr=1e-3, optimizer="adam",
               seed=0, dtype="float32", target_mse=0.01, eval_every=50, log=print, out=None, overwrite=False,
               resume=None):
    """Train an Elman RNN on the adding problem of length ``T``; see the module docstring.

    The baseline of predicting 1 has MSE ``1/6 ≈ 0.167``. ``steps`` defaults to :data:`DEFAULT_STEPS` (2000)
    and counts every step of the run, a resumed one included.

    Returns a dict ``{"init", "T", "hidden", "nonlinearity", "steps", "steps_to_target", "final_mse",
    "baseline_mse", "target_mse", "history": [(step, eval_mse), ...], "seconds", "checkpoint"}``;
    ``steps_to_target`` is the first evaluated step with held-out MSE < ``target_mse`` (None if never),
    ``final_mse`` the held-out MSE after the last step (NaN when the run diverged: a non-finite gradient stops
    it), ``checkpoint`` the path of the last checkpoint kept (None without ``out``). ``history`` starts with
    step 0 (before training); ``seconds`` counts the time of every session of a resumed run.

    With ``out`` (a directory, created if needed) every evaluation writes ``out/checkpoint.npz``,
    ``out/metrics.csv`` and ``out/metrics.json`` (the dict so far, without ``checkpoint``; strict JSON: a NaN
    MSE is ``null``) atomically; the folder is claimed for the run (a lock file; a second run on it is
    refused with ``orthoref._io.RunDirBusy``) and one holding another run's files is refused unless
    ``overwrite``. SIGTERM/SIGINT raise ``orthoref._io.RunInterrupted`` (a ``KeyboardInterrupt``) saying
    which checkpoint is kept.

    ``resume`` (a ``checkpoint.npz`` of this function) continues that run to ``steps`` in total with the
    checkpoint's configuration, writing into ``out`` (default: the checkpoint's folder); it ends
    bit-identical (parameters and history) to the run that was never stopped. The other configuration
    arguments may be left at their defaults or repeat the checkpoint's values; anything else is a
    ``ValueError``. A file that is no such checkpoint raises ``orthoref.train.CheckpointError`` (a
    ``ValueError``) naming it, before anything is written.

    ``log`` (``print`` or None) gets one line per evaluation. Raises ``ValueError`` (``TypeError`` for a
    value of the wrong kind) naming the argument on a bad one.
    """
    given = {"T": T, "hidden": hidden, "init": init, "steps": steps, "batch_size": batch_size, "lr": lr,
             "optimizer": optimizer, "seed": seed, "dtype": dtype, "target_mse": target_mse,
             "eval_every": eval_every}
    return _fit(given, log, out, overwrite, resume)


#: The configuration arguments of :func:`fit_adding` at their defaults.
_DEFAULTS = {k: p.default for k, p in inspect.signature(fit_adding).parameters.items() if k in CONFIG_KEYS}


def _fit(given, log, out, overwrite, resume, new_run=False):
    """:func:`fit_adding` of the configuration arguments ``given``; ``new_run`` (``orthoref train`` without
    ``--out``): write into a new ``runs/YYYYmmdd-HHMMSS`` folder, claimed after every check."""
    who = "fit_adding"
    if log is not None and not callable(log):
        raise ValueError(f"{who}: log must be callable or None, got {log!r}")
    if out is not None:
        if not isinstance(out, (str, os.PathLike)) or not os.fspath(out):
            raise ValueError(f"{who}: out must be a directory path or None, got {out!r}")
        out = os.fspath(out)
    if not isinstance(overwrite, (bool, np.bool_)):
        raise ValueError(f"{who}: overwrite must be True or False, got {overwrite!r}")
    if resume is None:
        config = _config(dict(given, steps=DEFAULT_STEPS if given["steps"] is None else given["steps"]), who)
        run = _Run(config)
    else:
        if not isinstance(resume, (str, os.PathLike)) or isinstance(resume, bool):
            raise TypeError(f"{who}: resume must be a checkpoint path (str or os.PathLike) or None, got "
                            f"{type(resume).__name__} {resume!r}")
        resume = os.fspath(resume)
        loaded = load_adding_checkpoint(resume)
        config = _resumed_config(resume, loaded[0]["config"], given, who)
        if config["steps"] < loaded[0]["step"]:
            raise ValueError(f"{who}: steps must be at least the checkpoint's step {loaded[0]['step']} (steps "
                             f"counts every step of the run), got {config['steps']}")
        run = _Run(config, loaded, resume)
        new_run = False
        if out is None:
            out = os.path.dirname(os.path.abspath(resume))
    state = {"step": run.step, "saved": (run.step, resume) if resume is not None else None}
    if out is None and not new_run:
        return run.train(log, None, state)
    from ._io import interruptible
    with interruptible():
        out, claimed = _claim(out, overwrite, resume, new_run)
        if log is not None and (claimed.took_over or claimed.stale_removed):
            log(f"{out}: took over the folder of a run that is gone"
                + (f"; removed its temporary file(s) {', '.join(claimed.stale_removed)}"
                   if claimed.stale_removed else ""))
        try:
            return run.train(log, out, state)
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            kept = (f"the last checkpoint (step {state['saved'][0]}) is kept: {state['saved'][1]}"
                    if state["saved"] else "no checkpoint was written")
            raise RunInterrupted(signum, f"fit_adding: interrupted by {signal_name(signum)} at step "
                                         f"{state['step']}; {kept}") from None
        finally:
            claimed.release()


def adding_table(T=100, steps=DEFAULT_TABLE_STEPS, inits=ADDING_INITS, seed=0, log=None, seeds=None, **kw):
    """One :func:`fit_adding` run per name in ``inits`` (same ``T``, ``steps``), for ``seed`` or for each of
    ``seeds`` (a sequence of seeds: one run per init and seed, in that order); returns the rows.

    Extra keyword arguments go to :func:`fit_adding`. The baseline (predict 1) has MSE ``1/6 ≈ 0.167``.
    Several seeds are what a comparison needs: a long recurrent run amplifies last-bit differences (another
    seed, or another BLAS kernel on another machine) into the result itself (README, "Reproducibility").
    """
    if isinstance(inits, str) or not inits:
        raise ValueError(f"adding_table: inits must be a non-empty sequence of names, got {inits!r}")
    for name in inits:
        if name not in ADDING_INITS:
            raise ValueError(f"adding_table: inits must hold names from {ADDING_INITS}, got {name!r}")
    if seeds is None:
        seeds = (seed,)
    elif isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__") or not list(seeds):
        raise ValueError(f"adding_table: seeds must be a non-empty sequence of seeds, got {seeds!r}")
    return [fit_adding(T=T, steps=steps, init=name, seed=s, log=log, **kw) for name in inits for s in seeds]


def format_adding_table(rows, target_mse=0.01):
    """Markdown table, one line per init: steps to MSE < ``target_mse`` (or "not reached"), final MSE and
    seconds. Rows of several seeds of one init are aggregated: the final MSE as mean ± standard deviation
    over the seeds (their number in the header), the steps as "k of n seeds, median S", the mean seconds."""
    groups = {}
    for r in rows:
        groups.setdefault(r["init"], []).append(r)
    n = max(len(g) for g in groups.values())
    mse_head = "final MSE" if n == 1 else f"final MSE (mean ± std, {n} seeds)"
    lines = [f"| init | steps to MSE<{target_mse:g} | {mse_head} | seconds |", "|---|---:|---:|---:|"]
    for init, g in groups.items():
        name = init + (" (relu, IRNN)" if g[0].get("nonlinearity") == "relu" else "")
        reached = [r["steps_to_target"] for r in g if r["steps_to_target"] is not None]
        mse = np.array([r["final_mse"] for r in g], dtype=float)
        seconds = float(np.mean([r["seconds"] for r in g]))
        if len(g) == 1:
            steps = str(reached[0]) if reached else "not reached"
            lines.append(f"| {name} | {steps} | {mse[0]:.4f} | {seconds:.1f} |")
            continue
        steps = f"{len(reached)} of {len(g)} seeds" + (f", median {int(np.median(reached))}" if reached else "")
        lines.append(f"| {name} | {steps} | {mse.mean():.4f} ± {mse.std(ddof=1):.4f} | {seconds:.1f} |")
    lines.append(f"\nBaseline (predict 1): MSE {adding_baseline_mse():.3f}.")
    return "\n".join(lines)