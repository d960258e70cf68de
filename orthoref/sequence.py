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
"""
from __future__ import annotations

import math
import os
import time

import numpy as np

from ._checks import MAX_ITERATIONS, check_int, check_real
from .backend import to_numpy
from .nn.linear import Linear
from .nn.rnn import RNN
from .ops.loss import mse
from .optim import SGD, Adam, RiemannianAdam, RiemannianSGD
from .tasks import adding_baseline_mse, adding_problem

__all__ = ["ADDING_INITS", "fit_adding", "adding_table", "format_adding_table", "DEFAULT_TABLE_STEPS"]

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


def _int(v, name, minimum=1):
    return check_int("fit_adding", name, v, minimum, MAX_ITERATIONS if name == "steps" else None)


def _pos_real(v, name):
    return check_real("fit_adding", name, v, 0.0, lo_open=True)


def _check_args(T, hidden, init, steps, batch_size, lr, optimizer, seed, dtype, target_mse, eval_every):
    T = _int(T, "T", 2)
    hidden = _int(hidden, "hidden")
    if init not in ADDING_INITS:
        raise ValueError(f"fit_adding: init must be one of {ADDING_INITS}, got {init!r}")
    steps = _int(steps, "steps")
    batch_size = _int(batch_size, "batch_size")
    lr = _pos_real(lr, "lr")
    if optimizer not in OPTIMIZER_NAMES:
        raise ValueError(f"fit_adding: optimizer must be one of {OPTIMIZER_NAMES}, got {optimizer!r}")
    seed = _int(seed, "seed", 0)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"fit_adding: dtype must be 'float32' or 'float64', got {dtype!r}")
    target_mse = _pos_real(target_mse, "target_mse")
    eval_every = _int(eval_every, "eval_every")
    return T, hidden, steps, batch_size, lr, seed, dt, target_mse, eval_every


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


def _atomic_write_json(path, obj):
    """Strict JSON (a NaN/Inf value, such as the MSE of a diverged run, is written as null), atomically."""
    from ._io import atomic_write, strict_json
    atomic_write(path, lambda f: f.write(strict_json(obj, indent=2).encode()))


def _claim(out, overwrite):
    """Claim the run folder ``out`` (lock, stale temporary files) and refuse another run's files there."""
    from ._io import claim_run_dir
    from .train import RUN_FILES
    run = claim_run_dir(out, who="fit_adding")
    present = [f for f in RUN_FILES if os.path.exists(os.path.join(out, f))]
    if present and not overwrite:
        run.release()
        raise FileExistsError(f"fit_adding: {out} already holds another run's {', '.join(present)}; choose "
                              f"another out, or pass overwrite=True (--overwrite)")
    return run


def fit_adding(T=100, hidden=128, init="orthogonal", steps=2000, batch_size=50, lr=1e-3, optimizer="adam",
               seed=0, dtype="float32", target_mse=0.01, eval_every=50, log=print, out=None, overwrite=False):
    """Train an Elman RNN on the adding problem of length ``T``; see the module docstring.

    The baseline of predicting 1 has MSE ``1/6 ≈ 0.167``.

    Returns a dict ``{"init", "T", "hidden", "nonlinearity", "steps", "steps_to_target", "final_mse",
    "baseline_mse", "history": [(step, eval_mse), ...], "seconds"}``; ``steps_to_target`` is the first
    evaluated step with held-out MSE < ``target_mse`` (None if never), ``final_mse`` the held-out MSE after
    the last step. ``history`` starts with step 0 (before training). With ``out`` (a directory, created if
    needed) the dict is written atomically to ``out/metrics.json`` (strict JSON: a NaN MSE is ``null``);
    the folder is claimed for the run (a lock file; a second run on it is refused with
    ``orthoref._io.RunDirBusy``) and one holding another run's files is refused unless ``overwrite``.
    ``log`` (``print`` or None) gets one line per evaluation. Raises ``ValueError`` naming the argument on
    a bad one.
    """
    T, hidden, steps, batch_size, lr, seed, dt, target_mse, eval_every = _check_args(
        T, hidden, init, steps, batch_size, lr, optimizer, seed, dtype, target_mse, eval_every)
    if log is not None and not callable(log):
        raise ValueError(f"fit_adding: log must be callable or None, got {log!r}")
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise ValueError(f"fit_adding: out must be a directory path or None, got {out!r}")
    if not isinstance(overwrite, (bool, np.bool_)):
        raise ValueError(f"fit_adding: overwrite must be True or False, got {overwrite!r}")
    if out is None:
        return _fit_adding(T, hidden, init, steps, batch_size, lr, optimizer, seed, dt, target_mse,
                           eval_every, log)
    from ._io import interruptible
    out = os.fspath(out)
    with interruptible():
        run = _claim(out, overwrite)
        try:
            result = _fit_adding(T, hidden, init, steps, batch_size, lr, optimizer, seed, dt, target_mse,
                                 eval_every, log)
            _atomic_write_json(os.path.join(out, "metrics.json"),
                               dict(result, history=[list(h) for h in result["history"]]))
        finally:
            run.release()
    return result


def _fit_adding(T, hidden, init, steps, batch_size, lr, optimizer, seed, dt, target_mse, eval_every, log):
    t0 = time.perf_counter()
    rnn, head = build_adding_model(hidden, init, seed, dt)
    param = _ExpmParametrization(rnn) if init == "expm" else None
    params = _params(rnn, head)
    opt = _make_optimizer(rnn, head, init, optimizer, lr, extra=[param.raw] if param else ())
    if param is not None:
        params = [p for p in params if p is not rnn.weight_hh_l0] + [param.raw]
    data_rng = np.random.default_rng([seed, 2])
    x_eval, y_eval = adding_problem(EVAL_SIZE, T, rng=seed + 1, dtype=dt)

    history, steps_to_target = [], None

    def evaluate(step):
        nonlocal steps_to_target
        if param is not None:
            param.apply()
        loss, _ = mse(_predict(rnn, head, x_eval), y_eval)
        value = float(to_numpy(loss))
        history.append((step, value))
        if steps_to_target is None and value < target_mse:
            steps_to_target = step
        if log is not None:
            log(f"adding T={T} init={init} step {step}: eval mse {value:.5f}")
        return value

    evaluate(0)
    grad_out = np.zeros((T, batch_size, hidden), dtype=dt)
    for step in range(1, steps + 1):
        x, y = adding_problem(batch_size, T, rng=data_rng, dtype=dt)
        opt.zero_grad()
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
        norm = _clip_global_norm(params, CLIP_NORM)
        if not math.isfinite(norm):
            if log is not None:
                log(f"adding T={T} init={init} step {step}: non-finite gradient, stopping")
            history.append((step, float("nan")))
            break
        opt.step()
        if step % eval_every == 0 or step == steps:
            evaluate(step)

    result = {"init": init, "T": T, "hidden": hidden, "nonlinearity": rnn.nonlinearity, "steps": steps,
              "steps_to_target": steps_to_target, "final_mse": history[-1][1], "baseline_mse": adding_baseline_mse(),
              "history": history, "seconds": time.perf_counter() - t0}
    return result


def adding_table(T=100, steps=DEFAULT_TABLE_STEPS, inits=ADDING_INITS, seed=0, log=None, **kw):
    """One :func:`fit_adding` run per name in ``inits`` (same ``T``, ``steps``, ``seed``); returns the rows.

    Extra keyword arguments go to :func:`fit_adding`. The baseline (predict 1) has MSE ``1/6 ≈ 0.167``.
    """
    if isinstance(inits, str) or not inits:
        raise ValueError(f"adding_table: inits must be a non-empty sequence of names, got {inits!r}")
    for name in inits:
        if name not in ADDING_INITS:
            raise ValueError(f"adding_table: inits must hold names from {ADDING_INITS}, got {name!r}")
    return [fit_adding(T=T, steps=steps, init=name, seed=seed, log=log, **kw) for name in inits]


def format_adding_table(rows, target_mse=0.01):
    """Markdown table: init, steps to MSE < ``target_mse`` (or "not reached"), final MSE, seconds."""
    lines = [f"| init | steps to MSE<{target_mse:g} | final MSE | seconds |", "|---|---:|---:|---:|"]
    for r in rows:
        reached = "not reached" if r["steps_to_target"] is None else str(r["steps_to_target"])
        name = r["init"] + (" (relu, IRNN)" if r.get("nonlinearity") == "relu" else "")
        lines.append(f"| {name} | {reached} | {r['final_mse']:.4f} | {r['seconds']:.1f} |")
    lines.append(f"\nBaseline (predict 1): MSE {adding_baseline_mse():.3f}.")
    return "\n".join(lines)
