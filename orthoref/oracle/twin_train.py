"""Whole training runs twice: the same model trained by orthoref and by PyTorch, float64, step by step.

:func:`twin_train` builds a model with orthoref (float64), copies its initial weights into a PyTorch twin,
and trains both on the same batches -- one host ``numpy.random.Generator`` draws the index order, both
sides read the same rows -- with the same loss, the same orthogonality penalties and the same optimizer:

=========  =============================================================================================
model      ``"mlp"``: :func:`~orthoref.models.mlp` ``64-32-16-10`` on the digits (8x8 flattened);
           ``"cnn"``: :func:`~orthoref.models.small_cnn` ``(1, 8, 10, channels=(4, 8))`` on the digits
           (1x8x8); both with cross-entropy. ``"rnn"``: :class:`~orthoref.nn.RNN` ``(2, 16)`` and a
           ``Linear(16, 1)`` head on the last output of the adding problem
           (:func:`~orthoref.tasks.adding_problem`, ``T = 16``, 1024 sequences), with the MSE.
optimizer  ``"sgd"``: :class:`~orthoref.optim.SGD` (momentum 0.9) against ``torch.optim.SGD``;
           ``"adam"``: :class:`~orthoref.optim.Adam` against ``torch.optim.Adam``;
           ``"muon"``: :class:`~orthoref.optim.Muon` against its formula written in PyTorch
           (:func:`torch_muon_step`, the ``ndim < 2`` parameters through ``torch.optim.Adam`` with Muon's
           auxiliary betas and eps), or, with ``muon="torch"``, against ``torch.optim.Muon`` itself.
reg        ``--reg`` specs ``NAME:WEIGHT`` (the short names of
           :data:`orthoref.regularizers.PENALTIES`): every weight with ``ndim >= 2`` (4-D only for the
           conv penalties) gets ``fn(W, weight=λ)``'s gradient added to its ``.grad`` after the backward
           pass; the PyTorch side adds the penalty's formula (:mod:`orthoref.oracle.torch_twins`) to the
           loss and lets autograd differentiate it. SRIP's power-iteration start ``v0`` is drawn once per
           weight and step from a second host generator and given to both sides.
=========  =============================================================================================

Each step records the relative difference of the loss (data loss plus penalties, computed before the
update) and, after the update, of every parameter: ``‖θ_orthoref − θ_torch‖_∞ / ‖θ_torch‖_∞``.

**Muon and ``torch.optim.Muon``** (PyTorch 2.13): the PyTorch optimizer runs its Newton–Schulz iteration
in **bfloat16** (``grad.bfloat16()``), divides by ``‖u‖.clamp(min=eps)`` instead of ``‖u‖ + eps``, and
refuses parameters that are not 2-D (conv kernels); the momentum (``lerp``), Nesterov blend and the
``"original"`` scale ``√max(1, A/B)`` are orthoref's. A float64 twin of Muon is therefore the formula
written in PyTorch (:func:`torch_muon_step`); ``muon="torch"`` measures the built-in one (2-D models only),
whose difference is the bfloat16 rounding of the update, not a bug of either side.

**Runs that never settle.** Where the training run amplifies rounding (a positive Lyapunov exponent:
Muon at ``lr = 0.02``, whose update has a fixed spectral norm so the weights keep moving; SGD with momentum
at the edge of stability on the RNN), the two sides drift apart by about ten times every 50-100 steps,
exactly as fast as orthoref drifts from itself started one ulp away (:func:`ulp_divergence`): the gap is
the run's conditioning, not a difference of conventions, and no two implementations that round
differently agree more closely. At a smaller learning rate the same configurations stay near 1e-14.
"""
from __future__ import annotations

import time

import numpy as np

from .._checks import check_choice, check_int, check_real
from .._io import atomic_write, strict_json
from ..regularizers import PENALTIES
from ..train import parse_reg as train_parse_reg
from .torch_twins import TORCH_TWINS, torch_newton_schulz

__all__ = ["MODELS", "OPTIMIZERS", "DEFAULT_LR", "twin_train", "ulp_divergence", "torch_muon_step", "format_result", "run",
           "main", "plot_errors"]

MODELS = ("mlp", "cnn", "rnn")
OPTIMIZERS = ("sgd", "adam", "muon")
#: Learning rates when ``lr`` is None (those of ``orthoref train``).
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "muon": 0.02}
SGD_MOMENTUM = 0.9
RNN_T, RNN_HIDDEN, RNN_SEQUENCES = 16, 16, 1024
# --reg short name -> (registry name, target), from regularizers.PENALTIES; "outputs" penalties (SOM) act
# through a layer's output hook, which the PyTorch twin does not model.
_REGS = {short: (name, target) for name, (_, short, target) in PENALTIES.items() if target != "outputs"}


def parse_reg(spec):
    """``"so:1e-2"`` -> ``("soft_orthogonality", 1e-2, target)``: ``orthoref train``'s ``--reg`` syntax
    (:func:`orthoref.train.parse_reg`); ``ValueError`` naming the problem, or an output penalty (SOM)."""
    try:
        short, w, options = train_parse_reg(spec)
    except ValueError as exc:
        raise ValueError(f"twin_train: {exc}") from None
    if options:
        raise ValueError(f"twin_train: reg {spec!r}: the PyTorch twin takes NAME:WEIGHT only (each penalty at its "
                         f"defaults), got the options {sorted(options)}")
    if short not in _REGS:
        raise ValueError(f"twin_train: reg {spec!r}: {short!r} acts on layer outputs, which the PyTorch twin does "
                         f"not model; choose from {sorted(_REGS)}")
    return _REGS[short][0], w, _REGS[short][1]


# ---------------------------------------------------------------------------------------------------------
# The two models and the data

class _RNNModel:
    """``RNN(2, H)`` then ``Linear(H, 1)`` on the last output (the adding problem's regressor)."""

    def __init__(self, gen):
        from ..nn import RNN, Linear
        self.rnn = RNN(2, RNN_HIDDEN, rng=gen, dtype=np.float64)
        self.head = Linear(RNN_HIDDEN, 1, rng=gen, dtype=np.float64)

    def named_parameters(self):
        return ([(f"rnn.{n}", p) for n, p in self.rnn.named_parameters()]
                + [(f"head.{n}", p) for n, p in self.head.named_parameters()])

    def forward(self, x):
        self._out = self.rnn.forward(x)
        return self.head.forward(self._out[-1])

    def backward(self, grad):
        grad_out = np.zeros_like(self._out)
        grad_out[-1] = self.head.backward(grad)
        self.rnn.backward(grad_out, input_grad=False)


def _build(model, seed):
    """``(orthoref model, parameters by name, X, y, loss)``: float64, weights drawn from ``seed``."""
    from ..data import load_digits
    from ..models import mlp, small_cnn
    from ..nn import cross_entropy, mse
    from ..tasks import adding_problem
    gen = np.random.default_rng(seed)
    if model == "rnn":
        net = _RNNModel(gen)
        X, y = adding_problem(RNN_SEQUENCES, RNN_T, rng=gen, dtype=np.float64)
        return net, dict(net.named_parameters()), X, y, mse
    X, y = load_digits("train", dtype=np.float64, flatten=model == "mlp")
    net = (mlp((64, 32, 16, 10), rng=gen, dtype=np.float64) if model == "mlp"
           else small_cnn(1, 8, 10, channels=(4, 8), rng=gen, dtype=np.float64))
    return net, dict(net.named_parameters()), X, y, cross_entropy


def _torch_model(model, net):
    """The PyTorch twin of ``net`` with a copy of its weights, and its forward ``f(x)``."""
    import torch
    if model != "rnn":
        from ..bench import torch_twin
        t = torch_twin(net).double()
        return t, t
    rnn = torch.nn.RNN(2, RNN_HIDDEN, dtype=torch.float64)
    head = torch.nn.Linear(RNN_HIDDEN, 1, dtype=torch.float64)
    for name, p in net.rnn.named_parameters():
        getattr(rnn, name).data = torch.from_numpy(p.data.copy())
    for name, p in net.head.named_parameters():
        getattr(head, name).data = torch.from_numpy(p.data.copy())
    t = torch.nn.ModuleDict({"rnn": rnn, "head": head})
    return t, lambda x: head(rnn(x)[0][-1])


def _torch_params(model, t):
    """The twin's parameters by orthoref's names."""
    return {n: p for n, p in t.named_parameters()} if model == "rnn" else dict(t.named_parameters())


# ---------------------------------------------------------------------------------------------------------
# The optimizers

def _ours_optimizer(optimizer, params, lr):
    from ..optim import SGD, Adam, Muon
    if optimizer == "sgd":
        return SGD(params, lr=lr, momentum=SGD_MOMENTUM)
    if optimizer == "adam":
        return Adam(params, lr=lr)
    return Muon(params, lr=lr)


def _muon_defaults():
    """orthoref's Muon hyper-parameters (its constructor's defaults)."""
    import inspect

    from ..optim import Muon
    return {k: v.default for k, v in inspect.signature(Muon).parameters.items() if k not in ("self", "params")}


def torch_muon_step(params, buffers, *, lr, momentum=0.95, nesterov=True, ns_steps=5, coefficients="jordan",
                    weight_decay=0.0, scale="jordan"):
    r"""One Muon step on PyTorch matrices (``ndim >= 2``), the formula of :class:`orthoref.optim.Muon`:

    ``m ← β m + (1−β) g``, ``u = (1−β) g + β m`` (Nesterov) or ``m``, ``O = NS_k(u)`` on
    ``M = u.reshape(out, −1)`` with ``X₀ = M / (‖M‖_F + 10⁻⁷)``, ``W ← (1 − γλ) W − γ s O`` with
    ``s = √max(1, rows/cols)`` ("jordan") or ``0.2 √max(rows, cols)`` ("moonlight").

    Parameters
    ----------
    params : list of torch.Tensor
        Matrices with ``.grad`` set; updated in place.
    buffers : dict
        ``id(param) -> momentum buffer``, filled on the first step.
    lr, momentum, nesterov, ns_steps, coefficients, weight_decay, scale
        As :class:`orthoref.optim.Muon`.
    """
    import torch
    with torch.no_grad():
        for p in params:
            g = p.grad
            m = buffers.setdefault(id(p), torch.zeros_like(p))
            m.mul_(momentum).add_(g, alpha=1.0 - momentum)
            u = (1.0 - momentum) * g + momentum * m if nesterov else m
            M = u.reshape(p.shape[0], -1)
            rows, cols = M.shape
            (O,) = torch_newton_schulz(M, steps=ns_steps, coefficients=coefficients)
            s = max(1.0, rows / cols) ** 0.5 if scale == "jordan" else 0.2 * float(max(rows, cols)) ** 0.5
            if weight_decay:
                p.mul_(1.0 - lr * weight_decay)
            p.sub_(O.reshape(p.shape), alpha=lr * s)


class _TorchOptimizer:
    """The PyTorch side's optimizer: ``step()`` after ``backward()``; ``zero_grad()``."""

    def __init__(self, optimizer, params, lr, muon):
        import torch
        self.params = list(params)
        self.muon = None
        if optimizer == "sgd":
            self.opts = [torch.optim.SGD(self.params, lr=lr, momentum=SGD_MOMENTUM)]
        elif optimizer == "adam":
            self.opts = [torch.optim.Adam(self.params, lr=lr)]
        else:
            d = _muon_defaults()
            mats = [p for p in self.params if p.ndim >= 2]
            rest = [p for p in self.params if p.ndim < 2]
            self.opts = [torch.optim.Adam(rest, lr=d["adam_lr"], betas=d["adam_betas"], eps=d["adam_eps"])]
            if muon == "torch":
                if any(p.ndim != 2 for p in mats):
                    raise ValueError("twin_train: torch.optim.Muon takes 2-D parameters only; use "
                                     "muon='formula' for a CNN")
                self.opts.append(torch.optim.Muon(mats, lr=lr, weight_decay=0.0, momentum=d["momentum"],
                                                  nesterov=d["nesterov"], ns_steps=d["ns_steps"]))
            else:
                self.muon = (mats, {}, dict(lr=lr, momentum=d["momentum"], nesterov=d["nesterov"],
                                            ns_steps=d["ns_steps"], coefficients=d["coefficients"],
                                            weight_decay=d["weight_decay"], scale=d["scale"]))

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        for opt in self.opts:
            opt.step()
        if self.muon is not None:
            mats, buffers, hyper = self.muon
            torch_muon_step(mats, buffers, **hyper)


# ---------------------------------------------------------------------------------------------------------
# The run

def _rel(a, b):
    """``‖a − b‖_∞ / ‖b‖_∞`` (0 when both are 0)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    diff = float(np.max(np.abs(a - b))) if b.size else 0.0
    return diff / scale if scale > 0 else diff


def _validate(model, optimizer, reg, steps, seed, batch_size, lr, muon):
    who = "twin_train"
    check_choice(who, "model", model, MODELS)
    check_choice(who, "optimizer", optimizer, OPTIMIZERS)
    check_choice(who, "muon", muon, ("formula", "torch"))
    steps = check_int(who, "steps", steps, 1)
    seed = check_int(who, "seed", seed, 0)
    batch_size = check_int(who, "batch_size", batch_size, 1)
    lr = DEFAULT_LR[optimizer] if lr is None else check_real(who, "lr", lr, 0.0)
    if isinstance(reg, str):
        reg = (reg,)
    terms = [parse_reg(r) for r in reg]
    if model != "cnn" and any(t == "conv" for _, _, t in terms):
        raise ValueError(f"twin_train: the conv penalties act on 4-D kernels; model {model!r} has none")
    return steps, seed, batch_size, lr, tuple(str(r) for r in reg), terms


def twin_train(model="mlp", optimizer="adam", reg=(), steps=100, seed=0, batch_size=64, lr=None, *,
               muon="formula", threads=1, plot=None):
    """Train one model in orthoref and in PyTorch, float64, and measure how far apart they drift.

    Parameters
    ----------
    model : {"mlp", "cnn", "rnn"}
        The network and its task (the module docstring's table).
    optimizer : {"sgd", "adam", "muon"}
    reg : sequence of str
        Orthogonality penalties ``"NAME:WEIGHT"`` (``"so:1e-2"``, ``"srip:1e-3"``; not the output
        penalty ``som``) on every weight with ``ndim >= 2``.
    steps : int
        Training steps (one mini-batch each).
    seed : int
        Seeds the initial weights (and the adding problem's sequences), the batch order (``seed + 1``) and
        SRIP's ``v0`` draws (``seed + 2``).
    batch_size : int
    lr : float or None
        None: :data:`DEFAULT_LR` of the optimizer. Muon's auxiliary Adam keeps its own ``adam_lr``.
    muon : {"formula", "torch"}
        The PyTorch side of Muon: :func:`torch_muon_step` (orthoref's formula, float64) or
        ``torch.optim.Muon`` (bfloat16 Newton–Schulz; MLP and RNN only).
    threads : int
        BLAS/OpenMP threads of both sides while training (``orthoref.bench.same_threads``): the models are
        small, and on a shared machine more threads than free cores make both sides many times slower.
    plot : str or None
        Also save a figure of the per-step errors there (:func:`plot_errors`).

    Returns
    -------
    dict
        ``steps`` (1..N), ``loss_rel_diff`` and ``param_rel_diff`` (per step; the parameter one is the
        maximum over parameters), ``params`` (name -> per-step series), ``max_rel_diff`` (the largest
        entry of both series), ``loss`` (orthoref's per-step loss), ``seconds`` and ``config``.

    Raises
    ------
    ImportError
        Without PyTorch.
    ValueError, TypeError
        For an unknown model, optimizer or penalty, or an argument out of range.
    """
    steps, seed, batch_size, lr, reg, terms = _validate(model, optimizer, reg, steps, seed, batch_size, lr,
                                                        muon)
    threads = check_int("twin_train", "threads", threads, 1)
    import torch

    from ..bench import same_threads
    t0 = time.perf_counter()
    with same_threads(threads):
        series = _train(model, optimizer, terms, steps, seed, batch_size, lr, muon)
    result = dict(series, max_rel_diff=max(max(series["loss_rel_diff"]), max(series["param_rel_diff"])),
                  seconds=time.perf_counter() - t0,
                  config={"against": "torch", "torch": torch.__version__, "model": model,
                          "optimizer": optimizer, "reg": list(reg), "steps": steps, "seed": seed,
                          "batch_size": batch_size, "lr": lr, "muon": muon, "dtype": "float64",
                          "threads": threads})
    if plot:
        plot_errors(result, plot)
    return result


def _draw_v0(terms, params, regularized, rng):
    """SRIP's power-iteration starts of this step, ``(penalty, weight name) -> v0``, one draw per weight."""
    sizes = {name: min(params[name].data.shape[0], params[name].data[0].size) for name in regularized}
    return {(fn_name, name): rng.standard_normal(sizes[name])
            for fn_name, _, _ in terms if fn_name == "srip" for name in regularized}


def _ours_step(model, net, params, loss_fn, terms, regularized, opt, xb, yb, v0s):
    """One orthoref step: forward, loss, backward, the penalties' gradients, optimizer; the total loss."""
    for p in params.values():
        p.grad = None
    value, dout = loss_fn(net.forward(xb), yb)
    net.backward(dout) if model == "rnn" else net.backward(dout, input_grad=False)
    loss = float(value)
    for fn_name, w, target in terms:
        fn = PENALTIES[fn_name][0]
        for name in regularized:
            p = params[name]
            if target == "conv" and p.data.ndim != 4:
                continue
            kw = {"v0": v0s[fn_name, name]} if fn_name == "srip" else {}
            pv, pg = fn(p.data, weight=w, **kw)
            p.accumulate(pg)
            loss += float(pv)
    opt.step()
    return loss


def _batches(model, X, y, steps, batch_size, rng):
    """``(idx, x, y)`` of each step: the rows of one permutation after another (``rng``)."""
    n = X.shape[1] if model == "rnn" else X.shape[0]
    order, pos = rng.permutation(n), 0
    for _ in range(steps):
        if pos + batch_size > n:
            order, pos = rng.permutation(n), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        yield idx, *((X[:, idx], y[idx]) if model == "rnn" else (X[idx], y[idx]))


def ulp_divergence(model="mlp", optimizer="adam", reg=(), steps=100, seed=0, batch_size=64, lr=None, *,
                   threads=1):
    """How fast the training run itself amplifies rounding: orthoref against orthoref started from weights
    moved by one ulp (``numpy.nextafter`` towards +inf), same batches and penalties.

    Where this grows like :func:`twin_train`'s difference, the gap between orthoref and PyTorch is the
    run's own sensitivity (a positive Lyapunov exponent: an oscillating or chaotic run), not a convention
    difference: no two implementations that round differently can agree more closely.

    Parameters and the checks: as :func:`twin_train` (without PyTorch).

    Returns
    -------
    dict
        ``steps`` and ``param_rel_diff`` (per step, the maximum over parameters of
        ``‖θ − θ'‖_∞ / ‖θ'‖_∞``), ``max_rel_diff`` and ``config``.
    """
    steps, seed, batch_size, lr, reg, terms = _validate(model, optimizer, reg, steps, seed, batch_size, lr,
                                                        "formula")
    threads = check_int("ulp_divergence", "threads", threads, 1)
    from ..bench import same_threads
    runs = []
    for nudge in (False, True):
        net, params, X, y, loss_fn = _build(model, seed)
        if nudge:
            for p in params.values():
                p.data[...] = np.nextafter(p.data, np.inf)
        runs.append((net, params, _ours_optimizer(optimizer, list(params.values()), lr)))
    regularized = [n for n, p in runs[0][1].items() if p.data.ndim >= 2]
    v0_rng, diffs = np.random.default_rng([seed, 2]), []
    with same_threads(threads):
        for _, xb, yb in _batches(model, X, y, steps, batch_size, np.random.default_rng([seed, 1])):
            v0s = _draw_v0(terms, runs[0][1], regularized, v0_rng)
            for net, params, opt in runs:
                _ours_step(model, net, params, loss_fn, terms, regularized, opt, xb, yb, v0s)
            diffs.append(max(_rel(p.data, runs[1][1][n].data) for n, p in runs[0][1].items()))
    return {"steps": list(range(1, steps + 1)), "param_rel_diff": diffs, "max_rel_diff": max(diffs),
            "config": {"model": model, "optimizer": optimizer, "reg": list(reg), "steps": steps, "seed": seed,
                       "batch_size": batch_size, "lr": lr, "dtype": "float64"}}


def _train(model, optimizer, terms, steps, seed, batch_size, lr, muon):
    """The per-step series of :func:`twin_train` (its arguments validated)."""
    import torch
    net, params, X, y, loss_fn = _build(model, seed)
    tnet, tforward = _torch_model(model, net)
    tparams = _torch_params(model, tnet)
    if list(tparams) != list(params):
        raise RuntimeError(f"twin_train: parameter names differ: {list(params)} vs {list(tparams)}")
    opt = _ours_optimizer(optimizer, list(params.values()), lr)
    topt = _TorchOptimizer(optimizer, tparams.values(), lr, muon)
    regularized = [n for n, p in params.items() if p.data.ndim >= 2]
    batch_rng, v0_rng = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2])
    tX, ty = torch.from_numpy(X), torch.from_numpy(y)
    loss_rel, param_rel, losses = [], [], []
    per_param = {name: [] for name in params}
    for idx, xb, yb in _batches(model, X, y, steps, batch_size, batch_rng):
        tidx = torch.from_numpy(idx)
        txb, tyb = (tX[:, tidx], ty[tidx]) if model == "rnn" else (tX[tidx], ty[tidx])

        v0s = _draw_v0(terms, params, regularized, v0_rng)
        loss = _ours_step(model, net, params, loss_fn, terms, regularized, opt, xb, yb, v0s)

        # PyTorch: the same loss with the penalties' formulas, autograd, step
        topt.zero_grad()
        out = tforward(txb)
        total = (torch.nn.functional.mse_loss(out, tyb) if model == "rnn"
                 else torch.nn.functional.cross_entropy(out, tyb))
        for fn_name, w, target in terms:
            for name in regularized:
                p = tparams[name]
                if target == "conv" and p.ndim != 4:
                    continue
                kw = {"v0": v0s[fn_name, name]} if fn_name == "srip" else {}
                total = total + TORCH_TWINS[fn_name](p, weight=w, **kw)[0]
        total.backward()
        topt.step()

        losses.append(loss)
        loss_rel.append(_rel(loss, total.item()))
        worst = 0.0
        for name, p in params.items():
            r = _rel(p.data, tparams[name].detach().numpy())
            per_param[name].append(r)
            worst = max(worst, r)
        param_rel.append(worst)
    return {"steps": list(range(1, steps + 1)), "loss_rel_diff": loss_rel, "param_rel_diff": param_rel,
            "params": per_param, "loss": losses}


def plot_errors(result, path):
    """Save the per-step relative differences (loss and parameters, log scale) of a :func:`twin_train`
    result to ``path`` (matplotlib, imported here)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    c = result["config"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    floor = np.finfo(np.float64).tiny
    ax.semilogy(result["steps"], np.maximum(result["param_rel_diff"], floor), label="parameters (max)")
    ax.semilogy(result["steps"], np.maximum(result["loss_rel_diff"], floor), label="loss", alpha=0.7)
    ax.axhline(1e-9, color="k", lw=0.8, ls="--", label="1e-9")
    ax.set_xlabel("step")
    ax.set_ylabel("relative difference, orthoref vs torch")
    reg = " ".join(c["reg"]) or "no penalty"
    ax.set_title(f"{c['model']} / {c['optimizer']} / {reg} (float64)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_result(result):
    """One line: the configuration, the steps, the worst relative difference and the time."""
    c = result["config"]
    reg = ",".join(c["reg"]) or "-"
    return (f"twin-train {c['model']:>3} {c['optimizer']:<4} reg={reg:<10} steps={c['steps']:<5} "
            f"max_rel_diff={result['max_rel_diff']:.2e} (loss {max(result['loss_rel_diff']):.2e}, "
            f"params {max(result['param_rel_diff']):.2e}) {result['seconds']:.1f} s")


def run(model="mlp", optimizer="adam", reg=(), steps=100, seed=0, batch_size=64, lr=None, *, muon="formula",
        threads=1, json_path=None, plot=None, tol=1e-9):
    """:func:`twin_train`, its line printed, the result written to ``json_path`` (atomically) if given;
    returns ``(result, exit code)``: 0 when ``max_rel_diff <= tol``, else 1."""
    result = twin_train(model, optimizer, reg, steps, seed, batch_size, lr, muon=muon, threads=threads,
                        plot=plot)
    print(format_result(result))
    if json_path:
        text = strict_json(result, indent=1).encode()
        atomic_write(json_path, lambda f: f.write(text))
    return result, 0 if result["max_rel_diff"] <= tol else 1


def main(args):
    """The handler of ``orthoref oracle twin-train``: ``args`` from its argparse parser; an exit code."""
    import sys
    if args.against != "torch":
        print("orthoref oracle twin-train: only --against torch is supported", file=sys.stderr)
        return 2
    try:
        _, code = run(args.model, args.optimizer, tuple(args.reg or ()), args.steps, args.seed,
                      args.batch_size, args.lr, muon=args.muon, threads=args.threads, json_path=args.json or None,
                      plot=args.plot or None, tol=args.tol)
    except (ValueError, TypeError, ImportError) as exc:
        print(f"orthoref oracle twin-train: {exc}", file=sys.stderr)
        return 2
    return code
