"""Studies behind ``orthoref study NAME --out DIR``: seeded experiments, each a grid of cells over seeds, that
write figures and a summary.

Each study is three functions and a grid, registered in :data:`REGISTRY` (:class:`Study`):

- a **grid**: the fields of its cells, ``[base]`` values and ``[axes]`` (as a sweep spec,
  :mod:`orthoref.sweep`) and how many seeds; ``sweeps/study-NAME.toml`` holds the same grid;
- a **cell function**: one grid point for one seed (a training run, a map timed on one matrix, ...),
  returning its numbers;
- a **report**: the cells aggregated over seeds (mean ± std, 95% t-interval of the mean, the number of
  seeds stated) into the study's tables, figures and markdown summary.

``orthoref study NAME`` (:func:`run`) computes the cells one after the other in this process (the sweep's
serial path, no Dask needed) in a temporary folder, then writes the report: its PNG figure(s) into
``out_dir`` and the markdown summary ``NAME.md`` (the tables and what they show, including where the result
disagrees with the seed article's claim) into ``md_dir`` (default ``out_dir``), and returns its numbers.
``orthoref sweep sweeps/study-NAME.toml --out DIR`` computes the same cells on a Dask cluster (more seeds:
change ``seeds = 3`` there), ``orthoref sweep report DIR`` prints the tables, and :func:`report_sweep`
writes the figures and summary from ``DIR``. A seeded cell gives bit-identical numbers wherever it runs (on
the same kind of machine and BLAS); timings (the ``seconds`` of every cell, the whole projections study)
do not, and those of a sweep come from whichever worker ran each cell. ``quick=True`` shrinks every size,
step count and the seeds to one (the tests run all of them in seconds).

==================  ======================================================================================
``"depth"``         gradient norm per layer and the input–output Jacobian spectrum at initialization of
                    deep tanh / linear MLPs under orthogonal, Gaussian, Xavier and He initialization
                    (Saxe et al. 2014; Pennington et al. 2017)
``"regularizers"``  the orthogonality penalties of the README table on the digits: test accuracy per epoch,
                    final accuracy over seeds, orthogonality error, filter-angle histograms
``"projections"``   accuracy against time of every orthogonalization map and Newton–Schulz coefficient set
                    on an ill-conditioned matrix per seed, and the scalar polynomials ``p(σ)`` of the NS sets
``"compression"``   test accuracy against the kept rank (:func:`orthoref.compress.compress_model`) for MLPs
                    trained with and without orthogonality
``"rnn"``           the adding problem (:func:`orthoref.sequence.fit_adding`) under normal, orthogonal and
                    identity recurrent initialization, an orthogonal constraint and an expm parametrization
``"article"``       the source article's MNIST MLP (784-512-256-10, Adam, 10 epochs) under orthogonal,
                    PyTorch-default, Xavier and He init, trained by orthoref and by PyTorch from the same
                    weights and batches, and by orthoref one ulp away (:mod:`orthoref.study_article`, 5 seeds)
``"autoencoder"``   a linear autoencoder (untied, tied, Stiefel encoder) against orthoref.analysis.pca on the
                    digits (and MNIST when present): principal angles to the top-k subspace, the
                    Eckart–Young bound, learned directions (Baldi & Hornik 1989); one function
                    (:func:`orthoref.autoencoder.study_autoencoder`, :func:`register_runner`), one seed
==================  ======================================================================================

``run("all", out_dir)`` runs them in turn, but for those registered with ``in_all=False`` (the article's MNIST
study: run it by name or as a sweep) unless ``quick``. matplotlib is needed for the figures (``pip install
'orthoref[plot]'``). A further study joins with :func:`register` in its own module, named in
:data:`STUDY_MODULES`.
"""
from __future__ import annotations

import contextlib
import importlib
import math
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ._checks import check_choice, check_int, check_real
from ._io import atomic_write_text
from .plots import figure_grid, plain_log_ticks, require_matplotlib, save_png, shared_legend
from .sweep import CellKind, fit_cell, mean_ci, parse_spec, read_results, register_kind, run_sweep, seed_groups

__all__ = ["STUDIES", "STUDY_MODULES", "REGISTRY", "RUNNERS", "Study", "register", "register_runner", "study_spec",
           "run", "report_sweep"]

_DPI = 100


# ---------------------------------------------------------------------------------------------------------
# The registry.

@dataclass(frozen=True)
class Study:
    """One study: the fields of its cells, its grid, its cell function and its report.

    Parameters
    ----------
    name : str
        ``orthoref study NAME``; its cells are of the sweep kind ``"study:NAME"``.
    fields : dict
        Field name -> ``(default, check)``; ``check(who, name, value)`` returns the value validated (and made
        JSON-ready) or raises ``ValueError``/``TypeError`` starting with ``who`` and naming the field. ``seed``
        is one of them.
    grid : callable
        ``grid(quick) -> {"base": dict, "axes": dict, "seeds": int}``: the full grid (``sweeps/study-NAME.toml``
        holds the same) or, with ``quick``, the small one of the tests.
    cell : callable
        ``cell(config, cell_dir) -> dict``: one grid point for one seed (see :class:`orthoref.sweep.CellKind`).
    summary : callable
        ``summary(result) -> str``: a cell's result on its progress line.
    aggregate : callable
        ``aggregate(rows) -> dict``: the rows of :func:`orthoref.sweep.read_results` over seeds; holds
        ``groups`` (one per grid point but the seed) and the study's numbers.
    tables : callable
        ``tables(agg) -> str``: the markdown tables (``orthoref sweep report`` prints them; the summary
        holds them).
    write : callable
        ``write(agg, out_dir, md_dir) -> dict``: the figures and ``NAME.md``; returns the numbers with
        ``figures`` (paths) and ``markdown`` (path).
    sequence_fields : tuple of str
        Fields whose value is a list.
    in_all : bool
        Whether ``orthoref study all`` runs it at full size (``False``: a study that needs a downloaded data
        set or half an hour, run by name or as a sweep; ``--quick`` runs every study).
    """
    name: str
    fields: dict
    grid: Callable
    cell: Callable
    summary: Callable
    aggregate: Callable
    tables: Callable
    write: Callable
    sequence_fields: tuple = ()
    in_all: bool = True


#: name -> :class:`Study`, in the order ``orthoref study all`` runs them.
REGISTRY = {}
#: name -> ``runner(out_dir, md_dir, quick, seed, log)`` of the studies that are one function, not (yet) a
#: grid of cells (:func:`register_runner`).
RUNNERS = {}
#: The names of the registered studies (``orthoref study all``: every one, in this order).
STUDIES = ()


def register(study):
    """Add ``study`` to :data:`REGISTRY` and its cells to the sweep's kinds (``"study:NAME"``).

    A study in a module of its own calls this at import time and is named in :data:`STUDY_MODULES` (one
    line), so ``orthoref study NAME``, ``orthoref sweep`` and a Dask worker all find it.

    Parameters
    ----------
    study : Study

    Returns
    -------
    Study
        ``study``.

    Raises
    ------
    TypeError
        ``study`` is not a :class:`Study`.
    ValueError
        Its name is not an identifier, is ``"all"``, or its fields lack ``seed``.
    """
    if not isinstance(study, Study):
        raise TypeError(f"register: study must be a Study, got {type(study).__name__}")
    if not isinstance(study.name, str) or not study.name.isidentifier() or study.name == "all":
        raise ValueError(f"register: a study's name must be an identifier other than 'all', got {study.name!r}")
    if "seed" not in study.fields:
        raise ValueError(f"register: study {study.name}: its fields must include seed")
    register_kind(CellKind(
        f"study:{study.name}", tuple(study.fields), tuple(study.sequence_fields),
        lambda config, who, s=study: _canonical(s, config, who), study.cell, study.summary,
        lambda rows, s=study: dict(s.aggregate(rows), kind=f"study:{s.name}"),
        lambda agg, s=study: _format(s, agg)))
    REGISTRY[study.name] = study
    RUNNERS.pop(study.name, None)
    _names_changed()
    return study


def register_runner(name, runner):
    """Register a study that is one function, not a grid of cells: ``orthoref study NAME`` calls
    ``runner(out_dir, md_dir, quick, seed, log)`` in this process (folders claimed, one BLAS thread, the wall
    time appended to the markdown it returns), as every study ran before the grids. It has no sweep kind;
    a :class:`Study` (:func:`register`) runs on Dask and over seeds.

    Parameters
    ----------
    name : str
        An identifier other than ``"all"``.
    runner : callable or str
        The function, or ``"module:function"`` (imported when the study runs); it returns a dict with
        ``figures`` (paths) and ``markdown`` (the path of ``NAME.md``).

    Returns
    -------
    str
        ``name``.

    Raises
    ------
    TypeError, ValueError
        A bad name or runner.
    """
    if not isinstance(name, str) or not name.isidentifier() or name == "all":
        raise ValueError(f"register_runner: a study's name must be an identifier other than 'all', got {name!r}")
    if not callable(runner) and not (isinstance(runner, str) and runner.count(":") == 1):
        raise TypeError(f"register_runner: runner must be callable or 'module:function', got {runner!r}")
    RUNNERS[name] = runner
    REGISTRY.pop(name, None)
    _names_changed()
    return name


def _names_changed():
    global STUDIES
    STUDIES = tuple(dict.fromkeys(list(REGISTRY) + list(RUNNERS)))


def _canonical(study, config, who):
    """``config`` validated against the study's fields, every field present (defaults filled in)."""
    if not isinstance(config, dict):
        raise TypeError(f"{who}: the configuration of a study:{study.name} cell must be a dict of its fields, got "
                        f"{type(config).__name__}")
    unknown = sorted(set(config) - set(study.fields), key=str)
    if unknown:
        raise ValueError(f"{who}: unknown field(s) {unknown}; study:{study.name} cells take "
                         f"{', '.join(study.fields)}")
    return {name: check(who, name, config.get(name, default)) for name, (default, check) in study.fields.items()}


def _format(study, agg):
    n = sum(len(g["seeds"]) for g in agg["groups"])
    failed = sum(g["failed"] for g in agg["groups"])
    seeds = sorted({s for g in agg["groups"] for s in g["seeds"]})
    head = (f"study {study.name}: {len(agg['groups'])} grid points, {n} cells done"
            + (f", {failed} failed" if failed else "") + f"; seeds {_list(seeds)}; mean ± std over seeds "
            f"(ddof=1), 95% CI of the mean (Student's t)")
    return head + "\n\n" + study.tables(agg)


def study_spec(name, quick=False, seed=0, seeds=None):
    """The sweep spec of study ``name``: its grid with the seeds ``seed, seed + 1, ...``.

    Parameters
    ----------
    name : str
        A name of :data:`STUDIES`.
    quick : bool
        The small grid (one seed unless ``seeds`` says otherwise).
    seed : int
        The first seed.
    seeds : int or None
        How many seeds (default: the grid's: 3 for most full studies, 1 quick).

    Returns
    -------
    orthoref.sweep.Spec
        With the cells of kind ``"study:NAME"``; ``sweeps/study-NAME.toml`` describes the same cells as
        ``study_spec(NAME)``.

    Raises
    ------
    ValueError
        An unknown study or a bad seed or count.
    """
    study = _study(name, "study_spec")
    seed = check_int("study_spec", "seed", seed, 0, 2**63 - 1)
    grid = study.grid(bool(quick))
    count = grid["seeds"] if seeds is None else check_int("study_spec", "seeds", seeds, 1, 100_000)
    data = {"kind": f"study:{name}", "base": dict(grid["base"]),
            "axes": dict(grid["axes"], seed=[seed + i for i in range(count)])}
    return parse_spec(data, source=f"study {name}{' (quick)' if quick else ''}")


def _study(name, who):
    if not isinstance(name, str) or name not in REGISTRY:
        raise ValueError(f"{who}: unknown study {name!r}; choose from {', '.join(REGISTRY)} or all")
    return REGISTRY[name]


# Field checks: (who, name, value) -> value.

def _int(lo=1, hi=1_000_000):
    return lambda who, name, v: check_int(who, name, v, lo, hi)


def _real(lo=None, hi=None, lo_open=False):
    return lambda who, name, v: check_real(who, name, v, lo, hi, lo_open=lo_open)


def _choice(*choices):
    return lambda who, name, v: check_choice(who, name, v, choices)


def _ints(lo=1, hi=1_000_000, min_len=1):
    def check(who, name, v):
        if not isinstance(v, (list, tuple)) or len(v) < min_len:
            raise ValueError(f"{who}: {name} must be a list of at least {min_len} int{'s' * (min_len > 1)}, got "
                             f"{v!r}")
        return [check_int(who, f"{name}[{i}]", x, lo, hi) for i, x in enumerate(v)]
    return check


_SEED = (0, _int(0, 2**63 - 1))


# ---------------------------------------------------------------------------------------------------------
# Shared helpers.

def _rel(path, md_dir):
    return os.path.relpath(path, md_dir).replace(os.sep, "/")


def _img(path, md_dir, alt):
    return f"![{alt}]({_rel(path, md_dir)})"


def _finite(v):
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def _e(v, digits=2):
    return f"{v:.{digits}e}" if _finite(v) else "–"


def _f(v, digits=4):
    return f"{v:.{digits}f}" if _finite(v) else "–"


def _pm(stat, fmt=_f, digits=4):
    """``mean ± std`` of a :func:`orthoref.sweep.mean_ci` dict; the mean alone for one seed."""
    if stat["n"] < 2 or not _finite(stat["std"]):
        return fmt(stat["mean"], digits)
    return f"{fmt(stat['mean'], digits)} ± {fmt(stat['std'], digits)}"


def _ci(stat, fmt=_f, digits=4):
    return f"[{fmt(stat['ci_low'], digits)}, {fmt(stat['ci_high'], digits)}]" if _finite(stat["ci_low"]) else "–"


def _list(values):
    values = list(values)
    if len(values) > 2 and values == list(range(values[0], values[0] + len(values))):
        return f"{values[0]}–{values[-1]}"
    return ", ".join(map(str, values))


def _seeds_text(groups, which=True):
    """``3 seeds (0–2)`` (``which=False``: ``3 seeds``): the seeds of the groups' done cells (``2–3 seeds``
    where groups differ)."""
    counts = [g["n"] for g in groups] or [0]
    seeds = sorted({s for g in groups for s in g["seeds"]})
    lo, hi = min(counts), max(counts)
    n = f"{lo}" if lo == hi else f"{lo}–{hi}"
    return f"{n} seed{'s' * (hi != 1)}" + (f" ({_list(seeds)})" if which else "")


def _stat(values):
    return mean_ci([math.nan if v is None else v for v in values])


def _mean_curve(curves):
    """Element-wise mean (and min, max) of equally long curves, None read as NaN."""
    a = np.array([[math.nan if v is None else v for v in c] for c in curves], dtype=np.float64)
    return a.mean(axis=0), a.min(axis=0), a.max(axis=0)


def _groups(rows, order):
    """:func:`orthoref.sweep.seed_groups` of ``rows``, in the order ``order(config)`` gives (the grid's)."""
    _, groups = seed_groups(rows)
    return sorted(groups, key=lambda g: order(g["config"]))


def _index(values, v):
    return values.index(v) if v in values else len(values)


def _one_blas_thread():
    """Limit BLAS to one thread where threadpoolctl is installed (else a no-op). The RNN's 128x128 GEMMs
    gain nothing from threads, and on a busy 2-core machine OpenBLAS's spinning threads slowed
    ``fit_adding`` more than tenfold."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _poly_or_nan(p, x):
    """``p(x)`` element-wise, NaN (not drawn) where it overflows (``p`` raises ``NonFiniteError`` there)."""
    from ._checks import NonFiniteError
    try:
        return p(x)
    except NonFiniteError:
        out = np.full(x.shape, np.nan)
        for i, v in enumerate(x):
            try:
                out[i] = p(float(v))
            except NonFiniteError:
                pass
        return out


# ---------------------------------------------------------------------------------------------------------
# 1. depth: gradients and Jacobian spectra at initialization.

_DEPTH_INITS = ("orthogonal", "gaussian", "xavier", "he")
_ACTIVATIONS = ("linear", "tanh")


def _depth_inits():
    from .init import kaiming_normal, normal, orthogonal, xavier_uniform

    def gaussian(shape, rng=None, dtype=np.float64):
        return normal(shape, std=1.0 / math.sqrt(shape[1]), rng=rng, dtype=dtype)
    return {
        "orthogonal": lambda shape, rng=None, dtype=np.float64: orthogonal(shape, rng=rng, dtype=dtype),
        "gaussian": gaussian,
        "xavier": lambda shape, rng=None, dtype=np.float64: xavier_uniform(shape, rng=rng, dtype=dtype),
        "he": lambda shape, rng=None, dtype=np.float64: kaiming_normal(shape, nonlinearity="relu", rng=rng,
                                                                       dtype=dtype),
    }


def _deep_mlp(depth, width, activation, init, rng):
    from .nn import Linear, Sequential, Tanh
    layers = []
    for _ in range(depth):
        layers.append(Linear(width, width, bias=False, weight_init=init, rng=rng, dtype=np.float64))
        if activation == "tanh":
            layers.append(Tanh())
    return Sequential(*layers)


def _layer_gradients(model, x, g):
    """Per Linear layer, first to last: ``(‖∂L/∂W_l‖_F, mean_n ‖∂L/∂h_{l-1}^{(n)}‖)`` for ``L = Σ <g, f(x)>``."""
    for p in model.parameters():
        p.grad = None
    h = x
    for layer in model:
        h = layer.forward(h)
    weight_norms, input_norms = [], []
    for layer in reversed(list(model)):
        g = layer.backward(g, input_grad=True)
        if hasattr(layer, "weight"):
            weight_norms.append(float(np.linalg.norm(layer.weight.grad)))
            input_norms.append(float(np.linalg.norm(g, axis=1).mean()))
    return weight_norms[::-1], input_norms[::-1]


def _depth_grid(quick):
    return {"base": {"width": 16 if quick else 128, "n_grad": 8 if quick else 64, "n_jac": 2 if quick else 8},
            "axes": {"depth": [4, 6] if quick else [32, 64], "activation": list(_ACTIVATIONS),
                     "init": list(_DEPTH_INITS)},
            "seeds": 1 if quick else 3}


def _depth_cell(config, cell_dir):
    """One MLP at initialization: the loss L = Σ_n ⟨g_n, f(x_n)⟩ with x_n ~ N(0, I) and unit cotangents g_n
    (drawn from ``seed`` alone, shared by every cell of the seed), the weights from ``[seed, depth, k]``
    (k: the initialization's index in ``_DEPTH_INITS``); gradient norms per layer and the Jacobian's
    singular values at the first ``n_jac`` inputs."""
    from .analysis import jacobian_singular_values
    seed, depth, width = config["seed"], config["depth"], config["width"]
    if config["n_jac"] > config["n_grad"]:
        raise ValueError(f"study depth: n_jac must be at most n_grad (the Jacobian is taken at the first n_jac "
                         f"inputs), got n_jac={config['n_jac']} and n_grad={config['n_grad']}")
    gen = np.random.default_rng(seed)
    x = gen.standard_normal((config["n_grad"], width))
    g = gen.standard_normal((config["n_grad"], width))
    g /= np.linalg.norm(g, axis=1, keepdims=True)          # a unit cotangent per example
    k = _DEPTH_INITS.index(config["init"])
    model = _deep_mlp(depth, width, config["activation"], _depth_inits()[config["init"]],
                      np.random.default_rng([seed, depth, k]))
    wn, hn = _layer_gradients(model, x, g)
    sigma = np.asarray(jacobian_singular_values(model, x[:config["n_jac"]]))
    return {"grad_w": wn, "grad_h": hn, "sigma": sigma, "sigma_max": float(sigma.max()),
            "sigma_min": float(sigma.min()), "sigma_median": float(np.median(sigma)),
            "isometric_fraction": float(np.mean((sigma >= 0.5) & (sigma <= 2.0))),
            "ratio_first_last": hn[0] / hn[-1], "ratio_w_first_last": wn[0] / wn[-1] if wn[-1] > 0 else math.inf,
            "spread": max(max(v) / min(v) - 1 for v in (hn, wn))}


def _depth_summary(r):
    return f"‖∂L/∂h_0‖/‖∂L/∂h_(L-1)‖ = {r['ratio_first_last']:.3g}, σ median {r['sigma_median']:.3g}"


_DEPTH_STATS = ("grad_in", "grad_out", "ratio_w_first_last", "sigma_min", "sigma_median", "sigma_max",
                "isometric_fraction", "ratio_first_last")


def _depth_aggregate(rows):
    groups = _groups(rows, lambda c: (c["depth"], _index(_ACTIVATIONS, c["activation"]),
                                      _index(_DEPTH_INITS, c["init"])))
    out = []
    for g in groups:
        res = [r["result"] for r in g["done"]]
        row = {"depth": g["config"]["depth"], "activation": g["config"]["activation"], "init": g["config"]["init"],
               "width": g["config"]["width"], "n_grad": g["config"]["n_grad"], "n_jac": g["config"]["n_jac"],
               "n": g["n"], "seeds": g["seeds"], "failed": g["failed"], "stats": {}}
        if res:
            for key in ("grad_w", "grad_h"):
                row[key], row[key + "_min"], row[key + "_max"] = (c.tolist() for c in _mean_curve([r[key] for r in res]))
            row["sigma"] = np.concatenate([np.ravel(r["sigma"]) for r in res])    # pooled over seeds
            row["spread"] = max(r["spread"] for r in res)
            values = {"grad_in": [r["grad_h"][0] for r in res], "grad_out": [r["grad_h"][-1] for r in res]}
            values.update({k: [r[k] for r in res] for k in _DEPTH_STATS[2:]})
            for k, v in values.items():
                row["stats"][k] = _stat(v)
                row[k] = row["stats"][k]["mean"]
        out.append(row)
    return {"groups": groups, "rows": out}


def _depth_tables(agg):
    rows = [r for r in agg["rows"] if r["n"]]
    lines = [(f"Mean ± std over {_seeds_text(agg['groups'])}:" if any(r["n"] > 1 for r in rows) else ""),
             "",
             ("| depth | activation | init | ‖∂L/∂x‖ (input) | ‖∂L/∂h_(L−1)‖ | ‖∂L/∂W_1‖ / ‖∂L/∂W_L‖ | "
              "Jacobian σ_min | σ median | σ_max | σ in [½, 2] |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["stats"]
        frac = s["isometric_fraction"]
        frac_text = f"{frac['mean']:.0%}" + (f" ± {frac['std']:.0%}" if frac["n"] > 1 else "")
        lines.append(f"| {r['depth']} | {r['activation']} | {r['init']} | {_pm(s['grad_in'], _e, 2)} | "
                     f"{_pm(s['grad_out'], _e, 2)} | {_pm(s['ratio_w_first_last'], _e, 2)} | "
                     f"{_pm(s['sigma_min'], _e, 2)} | {_pm(s['sigma_median'], _e, 2)} | {_pm(s['sigma_max'], _e, 2)} | "
                     f"{frac_text} |")
    return "\n".join(lines if lines[0] else lines[2:])


def _depth_write(agg, out_dir, md_dir):
    rows = [r for r in agg["rows"] if r["n"]]
    depths = sorted({r["depth"] for r in rows})
    activations = [a for a in _ACTIVATIONS if any(r["activation"] == a for r in rows)]
    width, n_grad, n_jac = rows[0]["width"], rows[0]["n_grad"], rows[0]["n_jac"]
    seeds = _seeds_text(agg["groups"])
    several = any(r["n"] > 1 for r in rows)

    def find(d, a, i):
        found = [r for r in rows if r["depth"] == d and r["activation"] == a and r["init"] == i]
        if not found:
            raise ValueError(f"study depth: the summary compares the grid's rows and needs depth {d}, {a}, {i}; "
                             f"no cell of it is done")
        return found[0]
    D = depths[-1]
    find(D, "linear", "orthogonal")
    gl, hl = find(D, "linear", "gaussian"), find(D, "linear", "he")
    ot, gt = find(D, "tanh", "orthogonal"), find(D, "tanh", "gaussian")
    figs = []
    require_matplotlib()
    from matplotlib.ticker import MaxNLocator
    panels = [(d, a) for d in depths for a in activations]
    fig, axes = figure_grid(len(panels), width=4.2, height=3.0, max_cols=2)
    for ax, (d, a) in zip(axes, panels):
        for i, r in enumerate(x for x in rows if x["depth"] == d and x["activation"] == a):
            layers = np.arange(1, d + 1)
            ax.semilogy(layers, r["grad_h"], label=r["init"], lw=1.4, color=f"C{i}")
            if r["n"] > 1:
                ax.fill_between(layers, r["grad_h_min"], r["grad_h_max"], color=f"C{i}", alpha=0.2, lw=0,
                                label=f"{r['init']}: min–max over seeds")
        plain_log_ticks(ax)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{a}, {d} layers, width {width}", fontsize=9)
        ax.set_xlabel("layer l (1 = input side)")
        ax.set_ylabel("‖∂L/∂h_(l−1)‖ (mean over inputs)")
    shared_legend(fig, axes, title="initialization")
    fig.suptitle("Backpropagated gradient norm at the input of each layer, at initialization (unit cotangent at "
                 "the output" + (f"; mean of {seeds}, band: min–max)" if several else ")"), fontsize=10)
    figs.append(save_png(fig, os.path.join(out_dir, "depth_gradnorm.png"), dpi=_DPI))

    fig, axes = figure_grid(len(panels), width=4.2, height=3.0, max_cols=2)
    for ax, (d, a) in zip(axes, panels):
        for r in rows:
            if r["depth"] == d and r["activation"] == a:
                s = r["sigma"].ravel()
                s = np.log10(s[s > 0])
                ax.hist(s, bins=40, histtype="step", lw=1.4, label=r["init"])
        ax.axvline(0.0, color="gray", ls="--", lw=0.8, label="σ = 1 (isometry)")
        ax.set_title(f"{a}, {d} layers", fontsize=9)
        ax.set_xlabel("log10 σ of the Jacobian ∂f/∂x")
        ax.set_ylabel("count per bin")
    shared_legend(fig, axes, ncol=5)
    fig.suptitle(f"Input–output Jacobian singular values at initialization ({n_jac} inputs"
                 + (f" per seed, {seeds} pooled)" if several else ")"), fontsize=10)
    figs.append(save_png(fig, os.path.join(out_dir, "depth_jacobian.png"), dpi=_DPI))

    ortho_lin_spread = max(r["spread"] for r in rows if r["activation"] == "linear" and r["init"] == "orthogonal")
    ortho_lin_sigma = np.concatenate([r["sigma"] for r in rows if r["activation"] == "linear"
                                      and r["init"] == "orthogonal"])        # every depth and seed
    lines = [
        "# Study: depth — gradients and Jacobian spectra at initialization", "",
        (f"MLPs of {', '.join(map(str, depths))} square layers of width {width} (no biases), `linear` or `tanh` "
        f"after every layer, float64, {seeds}. Initializations: `orthogonal` (Haar, gain 1), `gaussian` "
        f"N(0, 1/n), `xavier` (Glorot uniform, variance 2/(n_in+n_out) = 1/n here) and `he` (Kaiming normal, "
        f"variance 2/n). The loss is L = Σ_n ⟨g_n, f(x_n)⟩ with x_n ~ N(0, I) ({n_grad} inputs) and unit "
        f"random cotangents g_n, so ‖∂L/∂h_L‖ = 1 at the output; ‖∂L/∂h_(l−1)‖ is the backpropagated "
        f"gradient at the input of layer l (mean over inputs; l = 1 is the network input) and ‖∂L/∂W_l‖_F "
        f"the weight gradient of layer l. The Jacobian ∂f/∂x is taken at {n_jac} inputs by "
        f"`orthoref.analysis.jacobian_singular_values`; \"σ in [½, 2]\" is the fraction of its singular "
        f"values within a factor 2 of 1 (dynamical isometry)."
        + (" Each seed draws new inputs and weights; the table gives mean ± std over the seeds (ddof=1), the "
           "gradient figure their mean (band: min–max) and the histograms pool them." if several else "")), "",
        _img(figs[0], md_dir, "gradient norm per layer"), "",
        _img(figs[1], md_dir, "Jacobian singular values"), "",
        _depth_tables(agg),
        "", "What it shows:", "",
        (f"- **Orthogonal linear networks preserve norms exactly** (Saxe et al. 2014): the backpropagated "
        f"gradient has norm 1 at every layer and every weight gradient the same norm (largest relative "
        f"spread over the layers {ortho_lin_spread:.1e}, rounding), and every Jacobian singular value is 1 "
        f"(here {ortho_lin_sigma.min():.12f} … {ortho_lin_sigma.max():.12f} at every depth"
        f"{' and seed' if several else ''}): dynamical isometry at any depth."),
        (f"- **Gaussian / Xavier scaling keeps the average norm but not the spectrum**: variance 1/n keeps "
        f"E‖∂L/∂x‖² = 1, and at {D} linear layers the mean gradient norm stays O(1) "
        f"({gl['grad_h'][0]:.2g} at the input), but the Jacobian's singular values spread from "
        f"{gl['sigma_min']:.1e} to {gl['sigma_max']:.1e} (median {gl['sigma_median']:.1e}; only "
        f"{gl['isometric_fraction']:.0%} within [½, 2]): the product of Gaussian matrices is "
        f"ill-conditioned, worse with depth, and most input directions are annihilated — Pennington et "
        f"al.'s point that the right *variance* is not enough, the *spectrum* must concentrate. (Xavier "
        f"equals `gaussian` in variance for square layers; only the distribution differs. Singular values "
        f"below ~1e-16·σ_max are at float64 rounding level: the measurable spread is that of σ_max to "
        f"1e-16·σ_max.)"),
        (f"- **He scaling explodes a network without ReLU**: variance 2/n doubles the squared norm per layer, "
        f"so the gradient reaching the input of {D} linear layers has norm {hl['grad_h'][0]:.2g} "
        f"(the squared norm grows by 2 in expectation through each of the {D} weight matrices, "
        f"2^(L/2) = {2 ** (D / 2):.2g}; a product of random matrices falls somewhat below its expectation); "
        f"it is meant for ReLU, which halves the variance back. "
        f"The *weight* gradients, though, stay equal across layers (ratio {hl['ratio_w_first_last']:.2g}): "
        f"‖∂L/∂W_l‖ = ‖∂L/∂h_l‖·‖h_(l−1)‖ for one input, and in a linear net the forward growth cancels the "
        f"backward growth, so the weight-gradient ratio alone hides the explosion."),
        (f"- **tanh**: with orthogonal weights the Jacobian is not exactly isometric (tanh′ < 1 away from 0): "
        f"gradient at the input {ot['grad_h'][0]:.2g}, median σ {ot['sigma_median']:.2g} and "
        f"{ot['isometric_fraction']:.0%} of σ within [½, 2] at {D} layers, against median "
        f"{gt['sigma_median']:.1e} and a spread {gt['sigma_min']:.1e} … {gt['sigma_max']:.1e} for Gaussian "
        f"weights, whose mean gradient norm ({gt['grad_h'][0]:.2g}) looks no worse. Pennington et al. reach "
        f"isometry for tanh with orthogonal weights *and* a tuned weight scale σ_w slightly above 1 with "
        f"small pre-activations; at gain 1 and unit-variance inputs (untuned) the orthogonal tanh net shows "
        f"a better-conditioned but not isometric Jacobian — consistent with their claim, not a full "
        f"reproduction of it."),
    ]
    keep = [{k: v for k, v in r.items() if k not in ("sigma",)} for r in rows]
    return {"rows": keep, "figures": figs,
            "markdown": atomic_write_text(os.path.join(md_dir, "depth.md"), "\n".join(lines) + "\n")}


register(Study("depth", {"depth": (32, _int(1, 10_000)), "activation": ("linear", _choice(*_ACTIVATIONS)),
                         "init": ("orthogonal", _choice(*_DEPTH_INITS)), "width": (128, _int(1, 4096)),
                         "n_grad": (64, _int(1, 100_000)), "n_jac": (8, _int(1, 100_000)), "seed": _SEED},
               _depth_grid, _depth_cell, _depth_summary, _depth_aggregate, _depth_tables, _depth_write))


# ---------------------------------------------------------------------------------------------------------
# 2. regularizers: the README table's penalties on the digits, over seeds.

# (model, --reg spec) as in tools/reg_table.py (the README's regularizer table), --reg-skip last.
REGULARIZER_ROWS = (
    ("mlp", None), ("mlp", "so:1e-1"), ("mlp", "dso:1e-1"), ("mlp", "mc:100"), ("mlp", "srip:1"),
    ("mlp", "biggan:1"), ("mlp", "l1:1e-2"), ("mlp", "som:1e-5"),
    ("cnn", None), ("cnn", "kernel_slice:10"), ("cnn", "ocnn:1e-1"),
)
_ROW_ORDER = [[m, s or "none"] for m, s in REGULARIZER_ROWS]
_ANGLE_LAYER = {"mlp": "2.weight", "cnn": "3.weight"}    # 256x512 (rows can be orthonormal), 64x288
_ANGLE_BINS = 60                                         # over [0°, 180°]


def _reg_targets(model, spec):
    """The weights a ``--reg-skip last`` run regularizes: every weight matrix but the last; conv-only
    penalties (target "conv" in ``regularizers.PENALTIES``) act on the 4-D ones."""
    from .train import Penalty, regularized_weights
    ws = regularized_weights(model, ("last",))
    if spec:
        penalty = Penalty.parse(spec)
        ws = [(n, p) for n, p in ws if penalty.acts_on(p.data)]
    return ws


def _reg_config(config):
    """The ``TrainConfig`` of a regularizers cell: its model and penalty on every weight but the last."""
    from .train import TrainConfig
    model, spec = config["row"]
    return TrainConfig(model=model, epochs=config["epochs"], seed=config["seed"], hidden=tuple(config["hidden"]),
                       reg=() if spec == "none" else (spec,), reg_skip=("last",))


def _check_reg_row(who, name, v):
    if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(isinstance(x, str) for x in v):
        raise ValueError(f"{who}: {name} must be a pair [model, reg] such as [\"mlp\", \"so:1e-1\"] or "
                         f"[\"cnn\", \"none\"], got {v!r}")
    model, spec = v
    try:
        _reg_config({"row": [model, spec], "epochs": 1, "seed": 0, "hidden": [8]}).validate(who=f"{who}: {name}")
    except (TypeError, ValueError) as exc:
        text = " ".join(str(exc).split())
        raise ValueError(text if text.startswith(who) else f"{who}: {name} {v!r}: {text}") from None
    return [model, spec]


def _regularizers_grid(quick):
    rows = _ROW_ORDER[:2] + _ROW_ORDER[8:10] if quick else _ROW_ORDER
    return {"base": {"epochs": 1 if quick else 20, "hidden": [32, 16] if quick else [512, 256]},
            "axes": {"row": [list(r) for r in rows]}, "seeds": 1 if quick else 3}


def _regularizers_cell(config, cell_dir):
    """One seeded training run with the row's penalty (Adam 1e-3, orthogonal init, batch 64): the test
    accuracy per epoch, ‖G − I‖_F/√k averaged over the regularized weights, and the histogram of the
    pairwise filter angles of one layer (``_ANGLE_LAYER``)."""
    from .analysis import filter_angles
    from .ortho.metrics import orthogonality_error_rms
    model_name, spec = config["row"]
    res, resumed_from = fit_cell(_reg_config(config), cell_dir)
    curve = [h["test_acc"] for h in res["history"]]
    targets = _reg_targets(res["model"], None if spec == "none" else spec)
    error = float(np.mean([orthogonality_error_rms(np.asarray(p.data, np.float64)) for _, p in targets]))
    angles = np.asarray(filter_angles(dict(res["model"].named_parameters())[_ANGLE_LAYER[model_name]].data))
    finite = angles[np.isfinite(angles)]
    counts, _ = np.histogram(finite, bins=_ANGLE_BINS, range=(0.0, 180.0))
    return {"curve": curve, "test_acc": curve[-1], "ortho_error": error, "angle_hist": counts,
            "angle_pairs": int(finite.size), "angle_mean": float(np.nanmean(angles)),
            "angle_std": float(np.nanstd(angles)), "resumed_from": resumed_from}


def _regularizers_summary(r):
    return f"acc {r['test_acc']:.4f}  ‖G−I‖ {r['ortho_error']:.3f}"


def _regularizers_aggregate(rows):
    groups = _groups(rows, lambda c: (_index(_ROW_ORDER, c["row"]), c["row"]))
    out = []
    for g in groups:
        res = [r["result"] for r in g["done"]]
        model, spec = g["config"]["row"]
        row = {"model": model, "reg": spec, "n": g["n"], "seeds": g["seeds"], "failed": g["failed"],
               "epochs": g["config"]["epochs"], "hidden": g["config"]["hidden"]}
        if res:
            first = res[0]                      # the lowest seed's run: its filter angles are drawn
            acc = _stat([r["test_acc"] for r in res])
            row.update({"curve": _mean_curve([r["curve"] for r in res])[0].tolist(),
                        "acc": [r["test_acc"] for r in res], "acc_stat": acc, "acc_mean": acc["mean"],
                        "acc_std": acc["std"] if acc["n"] > 1 else 0.0,
                        "ortho_error": float(np.mean([r["ortho_error"] for r in res])),
                        "seconds": float(sum(r["seconds"] or 0.0 for r in g["done"])),
                        "angle_mean": first["angle_mean"], "angle_std": first["angle_std"],
                        "angle_hist": first["angle_hist"], "angle_pairs": first["angle_pairs"],
                        "angle_seed": g["seeds"][0]})
        out.append(row)
    return {"groups": groups, "rows": out}


def _regularizers_tables(agg):
    rows = [r for r in agg["rows"] if r["n"]]
    base = {r["model"]: r for r in rows if r["reg"] == "none"}
    lines = [(f"| model | `--reg` | test acc. (mean ± std, {_seeds_text(agg['groups'], False)}) | 95% CI | Δ vs none | "
              f"‖G−I‖_F/√k | mean angle ± std (°) | seconds (all seeds) |"), "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        delta = (f"{r['acc_mean'] - base[r['model']]['acc_mean']:+.4f}" if r["reg"] != "none" and r["model"] in base
                 else "–")
        lines.append(f"| {r['model'].upper()} | {r['reg']} | {r['acc_mean']:.4f} ± {r['acc_std']:.4f} | "
                     f"{_ci(r['acc_stat'])} | {delta} | {r['ortho_error']:.3f} | "
                     f"{r['angle_mean']:.1f} ± {r['angle_std']:.1f} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def _angle_histograms(rows, path, title):
    """One panel per row: the histogram of its filter angles (counts over ``_ANGLE_BINS`` bins), 90° marked,
    as :func:`orthoref.plots.plot_filter_angles` draws raw angles."""
    fig, axes = figure_grid(len(rows))
    edges = np.linspace(0.0, 180.0, _ANGLE_BINS + 1)
    for ax, r in zip(axes, rows):
        ax.stairs(r["angle_hist"], edges, fill=True, color="tab:blue", label="pairs of filters")
        ax.axvline(90.0, color="gray", ls="--", lw=0.8, label="90° (orthogonal filters)")
        ax.set_title(f"{r['model']} {r['reg']} ({_ANGLE_LAYER[r['model']]})  ({r['angle_pairs']} pairs, mean "
                     f"{r['angle_mean']:.1f}°)", fontsize=9)
        ax.set_xlim(0, 180)
        ax.set_xlabel("angle (degrees)")
        ax.set_ylabel(f"pairs per {180 / _ANGLE_BINS:g}° bin")
    fig.suptitle(title, fontsize=10)
    shared_legend(fig, axes, ncol=2)
    return save_png(fig, path, dpi=_DPI)


def _regularizers_write(agg, out_dir, md_dir):
    rows = [r for r in agg["rows"] if r["n"]]
    seeds = _seeds_text(agg["groups"])
    epochs = rows[0]["epochs"]
    angle_seed = rows[0]["angle_seed"]
    figs = []
    require_matplotlib()
    from matplotlib.ticker import MaxNLocator
    fig, axes = figure_grid(3, width=4.6, height=3.4, max_cols=3)
    # One colour per penalty (black dashed: none), the same in the curves and in the scatter panel, where
    # the marker tells the model (circle MLP, square CNN); a legend names every point (no annotations).
    colors = {}
    for model_name in ("mlp", "cnn"):
        regs = [r["reg"] for r in rows if r["model"] == model_name and r["reg"] != "none"]
        colors.update({(model_name, reg): f"C{i}" for i, reg in enumerate(regs)})
        colors[model_name, "none"] = "black"
    for ax, model_name in zip(axes[:2], ("mlp", "cnn")):
        lo = 1.0
        for r in rows:
            if r["model"] == model_name:
                ax.plot(np.arange(1, len(r["curve"]) + 1), r["curve"], label=r["reg"], lw=1.3,
                        ls="--" if r["reg"] == "none" else "-", color=colors[model_name, r["reg"]],
                        marker="o" if len(r["curve"]) == 1 else None, ms=4)
                lo = min(lo, min(r["curve"]))
        ax.set_title(f"{model_name.upper()}: test accuracy (mean of {seeds})", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(math.floor(20 * lo - 0.1) / 20, 1.0)       # every curve inside, on a 0.05 grid
        ax.legend(fontsize=7, ncol=2)
    ax = axes[2]
    for r in rows:
        ax.errorbar(r["ortho_error"], r["acc_mean"], yerr=r["acc_std"], fmt="o" if r["model"] == "mlp" else "s",
                    ms=5, capsize=2, color=colors[r["model"], r["reg"]], label=f"{r['model'].upper()} {r['reg']}")
    ax.set_xscale("log")
    plain_log_ticks(ax)
    ax.set_xlabel("‖G − I‖_F/√k of the regularized weights")
    ax.set_ylabel(f"final test accuracy (± std, {seeds})")
    ax.set_title("accuracy vs orthogonality", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    figs.append(save_png(fig, os.path.join(out_dir, "regularizers_curves.png"), dpi=_DPI))
    figs.append(_angle_histograms(
        rows, os.path.join(out_dir, "regularizers_angles.png"),
        title=f"Pairwise filter angles after training (seed {angle_seed}): MLP 2.weight (256 rows in R^512), "
              f"CNN 3.weight (64 filters in R^288)"))

    base = {r["model"]: r for r in rows if r["reg"] == "none"}
    lines = [
        "# Study: regularizers — orthogonality penalties on the digits", "",
        (f"Each row of the README regularizer table (`tools/reg_table.py` weights: the penalty on every weight "
        f"but the 10-way classifier, `--reg-skip last`), trained by `orthoref.train.fit` for {epochs} epoch{'s' * (epochs != 1)} "
        f"(Adam 1e-3, orthogonal init, batch 64), {seeds}. MLP 64-{'-'.join(map(str, rows[0]['hidden']))}-10 "
        f"for the matrix penalties, the small CNN for kernel-slice and OCNN. Test accuracy: mean ± std over the "
        f"seeds (ddof=1) and the 95% t-interval of the mean; ‖G − I‖_F/√k is averaged over the regularized "
        f"weights and seeds; the filter angles are those of one layer in the seed-{angle_seed} run."),
        "", _img(figs[0], md_dir, "training curves"), "", _img(figs[1], md_dir, "filter angles"), "",
        _regularizers_tables(agg)]
    spread = {r["model"]: r["acc_std"] for r in rows if r["reg"] == "none"}
    better = [r for r in rows if r["reg"] != "none" and r["model"] in base
              and r["acc_mean"] - base[r["model"]]["acc_mean"] > max(r["acc_std"], spread[r["model"]])]
    worse = [r for r in rows if r["reg"] != "none" and r["model"] in base
             and base[r["model"]]["acc_mean"] - r["acc_mean"] > max(r["acc_std"], spread[r["model"]])]
    name = lambda r: f"{r['model'].upper()} {r['reg']}"
    lines += [
        "", "What it shows:", "",
        ("- Every penalty drives its weights toward orthogonality — the angle histograms narrow around 90° "
        "and ‖G − I‖ drops against the unregularized run — most of all SO, DSO, L1 and SRIP; MC, BigGAN, "
        "kernel-slice and OCNN measure something narrower and move ‖G − I‖ less (see the README table)."),
        ("- **Accuracy: no penalty beats the unregularized run by more than the seed spread** on these "
         "digits." if not better else
         f"- Penalties that beat the unregularized run by more than the seed spread: "
         f"{', '.join(name(r) for r in better)}."),
        (f"- Penalties that *lose* accuracy beyond the seed spread: {', '.join(name(r) for r in worse)}."
         if worse else "- No penalty loses accuracy beyond the seed spread."),
        ("- This contradicts the accuracy gains reported by the seed articles (Bansal et al. 2018 for "
        "SO/DSO/MC/SRIP on CIFAR ResNets/WideResNets; Wang et al. 2020 for OCNN; Zhang et al. 2020 for "
        "SOM) — at least in this setting: a small, shallow network on the 1,797-image 8x8 digits (359 test "
        "images, so one image is 0.28 points), orthogonal initialization already in place, weights taken "
        "from the README table and not tuned for accuracy. Those papers' gains are ~0.5–2 points on deep "
        "networks where conditioning matters; two or three weight layers give a penalty little to fix."),
    ]
    out_rows = [{k: v for k, v in r.items() if k != "angle_hist"} for r in rows]
    return {"rows": out_rows, "figures": figs,
            "markdown": atomic_write_text(os.path.join(md_dir, "regularizers.md"), "\n".join(lines) + "\n")}


register(Study("regularizers", {"row": (["mlp", "none"], _check_reg_row), "epochs": (20, _int(1, 100_000)),
                                "hidden": ([512, 256], _ints(1, 100_000)), "seed": _SEED},
               _regularizers_grid, _regularizers_cell, _regularizers_summary, _regularizers_aggregate,
               _regularizers_tables, _regularizers_write, sequence_fields=("row", "hidden")))


# ---------------------------------------------------------------------------------------------------------
# 3. projections: accuracy against time.

def _direct_methods():
    """The one-shot maps of ``orthoref.ortho.compare.methods`` (the iterative ones are run step by step)."""
    from .ortho.compare import methods
    return {name: fn for name, fn in methods().items() if not name.startswith(("newton_schulz", "bjorck"))}


def _iterative_maps():
    """Display name -> ``(map, keywords)`` of every Newton–Schulz coefficient set and Björck (β = ½)."""
    from .ortho import NS_COEFFICIENTS, bjorck, newton_schulz
    maps = {f"newton_schulz {c}": (newton_schulz, {"coefficients": c}) for c in NS_COEFFICIENTS}
    maps["bjorck (β = 1/2)"] = (bjorck, {"beta": 0.5})
    return maps


def _projection_methods():
    return tuple(_direct_methods()) + tuple(_iterative_maps())


def _time_it(fn, A, repeat, **kw):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        Q = fn(A, **kw)
        times.append(time.perf_counter() - t0)
    return Q, min(times)      # on a shared machine noise only adds time: the minimum is the stable estimate


def _errors(Q, reference):
    Q = np.asarray(Q, dtype=np.float64)
    n = Q.shape[1]
    return (float(np.linalg.norm(Q.T @ Q - np.eye(n), 2)),
            float(np.linalg.norm(Q - reference) / math.sqrt(n)))


def _projections_grid(quick):
    return {"base": {"n": 32 if quick else 256, "cond": 1e3, "repeat": 1 if quick else 5,
                     "max_steps": 4 if quick else 30},
            "axes": {"method": list(_projection_methods())}, "seeds": 1 if quick else 3}


def _projections_cell(config, cell_dir):
    """One map on the matrix of ``seed`` (``orthoref.ortho.compare.sample_matrix``): the fastest of ``repeat``
    runs and its errors against the polar factor; an iterative map for 1 … ``max_steps`` steps, each timed
    from scratch. The times are of whichever machine ran the cell (not reproducible); the errors are."""
    from .ortho import ns_worst_error, polar
    from .ortho.compare import sample_matrix
    A = sample_matrix(config["n"], np.float64, rng=config["seed"], cond=config["cond"])
    reference = polar(A)
    method, repeat = config["method"], config["repeat"]
    direct = _direct_methods()
    if method in direct:
        try:
            Q, sec = _time_it(direct[method], A, repeat)
        except ValueError as exc:
            return {"seconds": None, "orthogonality": None, "to_polar": None, "note": str(exc).split(";")[0][:60]}
        ortho, dist = _errors(Q, reference)
        return {"seconds": sec, "orthogonality": ortho, "to_polar": dist, "note": ""}
    fn, kw = _iterative_maps()[method]
    pts = []
    for k in range(1, config["max_steps"] + 1):
        Q, sec = _time_it(fn, A, repeat, steps=k, **kw)
        ortho, dist = _errors(Q, reference)
        pts.append({"steps": k, "seconds": sec, "orthogonality": ortho, "to_polar": dist})
    worst = ns_worst_error(kw["coefficients"]) if "coefficients" in kw else None
    return {"points": pts, "worst": worst}


def _projections_summary(r):
    if "points" in r:
        return f"{len(r['points'])} steps -> ‖QᵀQ−I‖_2 {_e(r['points'][-1]['orthogonality'])}"
    return f"‖QᵀQ−I‖_2 {_e(r['orthogonality'])}" + (f" ({r['note']})" if r["note"] else "")


def _projections_aggregate(rows):
    order = list(_projection_methods())
    groups = _groups(rows, lambda c: (_index(order, c["method"]), c["method"], c["n"], c["cond"]))
    direct, iterative, worst = [], {}, {}
    for g in groups:
        res = [r["result"] for r in g["done"]]
        method = g["config"]["method"]
        if not res:
            continue
        if "points" not in res[0]:
            timed = [r for r in res if r["seconds"] is not None]
            direct.append({"method": method, "n": g["n"], "seeds": g["seeds"],
                           "seconds_stat": _stat([r["seconds"] for r in timed]),
                           "seconds": float(np.mean([r["seconds"] for r in timed])) if timed else None,
                           "orthogonality": float(np.mean([r["orthogonality"] for r in timed])) if timed else None,
                           "to_polar": float(np.mean([r["to_polar"] for r in timed])) if timed else None,
                           "note": next((r["note"] for r in res if r["note"]), "")})
            continue
        steps = len(res[0]["points"])
        iterative[method] = [
            {"steps": k + 1, "seconds_stat": _stat([r["points"][k]["seconds"] for r in res]),
             **{key: float(np.mean([r["points"][k][key] for r in res]))
                for key in ("seconds", "orthogonality", "to_polar")}}
            for k in range(steps)]
        if res[0]["worst"] is not None:
            worst[method.split(" ", 1)[1]] = res[0]["worst"]
    config = groups[0]["config"] if groups else {}
    return {"groups": groups, "direct": direct, "iterative": iterative, "worst": worst,
            "n": config.get("n"), "cond": config.get("cond"), "repeat": config.get("repeat"),
            "max_steps": config.get("max_steps")}


_TOL = 1e-6


def _first_below(pts, tol):
    return next((p for p in pts if p["orthogonality"] < tol), None)


def _ms(stat_or_seconds):
    if isinstance(stat_or_seconds, dict):
        s = stat_or_seconds
        return _pm({"n": s["n"], "mean": s["mean"] * 1e3, "std": s["std"] * 1e3}, _f, 2)
    return _f(stat_or_seconds * 1e3, 2)


def _projections_tables(agg):
    max_steps = agg["max_steps"]
    several = any(g["n"] > 1 for g in agg["groups"])
    ms_head = f"ms (mean ± std, {_seeds_text(agg['groups'], False)})" if several else "ms"
    err = " (mean)" if several else ""
    lines = [f"| method | steps | {ms_head} | ‖QᵀQ − I‖_2{err} | ‖Q − polar(A)‖_F/√n{err} |", "|---|---|---|---|---|"]
    for r in agg["direct"]:
        if r["seconds"] is None:
            lines.append(f"| {r['method']} | – | – | {r['note']} | – |")
        else:
            lines.append(f"| {r['method']} | – | {_ms(r['seconds_stat'])} | {_e(r['orthogonality'], 1)} | "
                         f"{_e(r['to_polar'], 1)} |")
    marks = sorted({k for k in (5, 10, 20, max_steps) if k <= max_steps})
    for name, pts in agg["iterative"].items():
        for k in marks:
            p = pts[k - 1]
            lines.append(f"| {name} | {k} | {_ms(p['seconds_stat'])} | {_e(p['orthogonality'], 1)} | "
                         f"{_e(p['to_polar'], 1)} |")
    lines += ["", (f"Steps (and time) to ‖QᵀQ − I‖_2 < {_TOL:g}{' (of the mean error)' if several else ''}, and "
                   f"the worst |p(σ) − 1| over σ ∈ [1e-3, 1] of each set's default schedule (`ns_worst_error`):"),
              "", "| map | steps to < 1e-6 | ms | worst |p − 1| on [1e-3, 1] |", "|---|---|---|---|"]
    for name, pts in agg["iterative"].items():
        hit = _first_below(pts, _TOL)
        c = name.split(" ", 1)[1] if name.startswith("newton_schulz") else None
        steps_text = str(hit["steps"]) if hit else f"not within {max_steps}"
        ms_text = _ms(hit["seconds_stat"]) if hit else "–"
        lines.append(f"| {name} | {steps_text} | {ms_text} | {_e(agg['worst'][c], 2) if c in agg['worst'] else '–'} |")
    return "\n".join(lines)


def _projections_write(agg, out_dir, md_dir):
    from .ortho import NS_COEFFICIENTS, ns_polynomial
    direct, iterative = agg["direct"], agg["iterative"]
    n, cond, repeat, max_steps = agg["n"], agg["cond"], agg["repeat"], agg["max_steps"]
    seeds = _seeds_text(agg["groups"])
    several = any(g["n"] > 1 for g in agg["groups"])
    polar_row = [r for r in direct if r["method"] == "polar (SVD)" and r["seconds"] is not None]
    if not polar_row:
        raise ValueError("study projections: the summary compares every map with polar (SVD); no cell of it is done")
    figs = []
    require_matplotlib()
    fig, axes = figure_grid(2, width=5.0, height=3.8, max_cols=2)
    for ax, key, label in ((axes[0], "orthogonality", "‖QᵀQ − I‖_2"),
                           (axes[1], "to_polar", "‖Q − polar(A)‖_F / √n")):
        for name, pts in iterative.items():
            ax.loglog([p["seconds"] * 1e3 for p in pts], [max(p[key], 1e-17) for p in pts], marker=".", ms=4,
                      lw=1.2, label=name, ls=":" if name.startswith("bjorck") else "-")
        for r in direct:
            if r["seconds"] is not None:
                ax.loglog(r["seconds"] * 1e3, max(r[key], 1e-17), marker="*", ms=9, ls="none", label=r["method"])
        plain_log_ticks(ax)
        ax.set_xlabel(f"milliseconds (fastest of {repeat} run{'s' if repeat > 1 else ''}"
                      + (f", mean of {seeds})" if several else ")"))
        ax.set_ylabel(label)
        ax.set_title(f"{label} vs time (dots: 1..{max_steps} steps)", fontsize=9)
    shared_legend(fig, axes, ncol=4, fontsize=7)
    fig.suptitle(f"Orthogonalizing one {n}x{n} float64 matrix, singular values log-spaced in [1/{cond:g}, 1]"
                 + (f" (mean of {seeds})" if several else ""), fontsize=10)
    figs.append(save_png(fig, os.path.join(out_dir, "projections_tradeoff.png"), dpi=_DPI))

    fig, axes = figure_grid(2, width=5.0, height=3.6, max_cols=2)
    lin = np.linspace(0.0, 1.2, 1201)
    logs = np.geomspace(1e-4, 1.2, 1201)
    y_lo, y_hi = -0.1, 1.6
    cut = {}       # curves leaving [y_lo, y_hi] are not drawn outside it: name -> first σ outside

    def inside(y):
        return np.where((y >= y_lo) & (y <= y_hi), y, np.nan)
    for c in NS_COEFFICIENTS:
        p = ns_polynomial(c)
        ys, ys_log = _poly_or_nan(p, lin), _poly_or_nan(p, logs)  # NaN where p overflows
        outside = np.isnan(inside(ys))
        if outside.any():
            cut[c] = lin[np.argmax(outside)]
        steps = len(NS_COEFFICIENTS[c]) if len(NS_COEFFICIENTS[c]) > 1 else 5
        axes[0].plot(lin, inside(ys), lw=1.3, label=f"{c} ({steps} steps)")
        axes[1].semilogx(logs, inside(ys_log), lw=1.3, label=f"{c} ({steps} steps)")
    for ax in axes:
        ax.axhline(1.0, color="gray", ls="--", lw=0.8, label="p = 1 (σ mapped exactly to 1)")
        ax.set_xlabel("σ (singular value of the normalized input)")
        ax.set_ylabel("p(σ)")
        ax.set_ylim(y_lo, y_hi)
    plain_log_ticks(axes[1])
    axes[0].set_title("composed Newton–Schulz polynomial, σ ∈ [0, 1.2]", fontsize=9)
    axes[1].set_title("the same, log σ ∈ [1e-4, 1.2]", fontsize=9)
    if cut:
        fig.suptitle(f"y axis clipped to [{y_lo:g}, {y_hi:g}]; not drawn where p(σ) leaves it: "
                     + ", ".join(f"{c} from σ ≈ {x:.2f} on" for c, x in cut.items()), fontsize=9)
    shared_legend(fig, axes, ncol=5)
    figs.append(save_png(fig, os.path.join(out_dir, "projections_polynomials.png"), dpi=_DPI))

    lines = [
        "# Study: projections — accuracy against time", "",
        (f"A {n}x{n} float64 matrix `A = U diag(s) Vᵀ` (Haar U, V; s log-spaced from 1 to 1/{cond:g}; "
        f"`orthoref.ortho.compare.sample_matrix`) per seed, {seeds}; times are the fastest of {repeat} runs "
        f"with one BLAS thread (threadpoolctl) on the machine that ran the cell (the shared 2-core machine for "
        f"`orthoref study`; any worker of a sweep) — still noisy and not reproducible across machines: "
        "compare orders of magnitude, not digits"
        + (", and read the ± as the spread over seeds, matrices and moments together" if several else "")
        + ". Errors: ‖QᵀQ − I‖_2 and the distance ‖Q − polar(A)‖_F/√n to the nearest orthogonal matrix"
        + (" (mean over the seeds' matrices)" if several else "")
        + f". The iterative maps are run for 1 … {max_steps} steps (each step count timed from scratch); their "
        f"Frobenius normalization puts σ_min of the iterate at "
        f"{1 / cond / float(np.linalg.norm(np.geomspace(1, 1 / cond, n))):.1e}."), "",
        _img(figs[0], md_dir, "accuracy against time"), "", _img(figs[1], md_dir, "NS polynomials"), "",
        _projections_tables(agg)]
    fastest = min((r for r in direct if r["seconds"] is not None), key=lambda r: r["seconds"])
    polar_ms = polar_row[0]["seconds"] * 1e3
    hits = [(name, _first_below(pts, _TOL)) for name, pts in iterative.items()]
    hits = [(name, h) for name, h in hits if h is not None]
    if hits:
        name, h = min(hits, key=lambda nh: nh[1]["seconds"])
        pe_text = f"{name}, {h['steps']} steps, {h['seconds'] * 1e3:.1f} ms"
        cheaper = "is cheaper than" if h["seconds"] * 1e3 < 0.5 * polar_ms else "is no cheaper than"
    else:
        pe_text, cheaper = f"none reaches it within {max_steps} steps", "is no cheaper than"
    lines += [
        "", "What it shows:", "",
        (f"- The direct methods reach rounding level in one shot: QR/Gram–Schmidt give *an* orthonormal basis "
        f"(‖QᵀQ − I‖ small) but not the polar factor (distance ≈ 1); only `polar` (SVD) gives both. "
        f"Fastest here: {fastest['method']} ({fastest['seconds'] * 1e3:.2f} ms)."),
        ("- Newton–Schulz is a *cheap approximation*, not a projection: with Muon's five steps (`jordan`) "
        "‖QᵀQ − I‖_2 stays near 1 because the smallest normalized singular values are not lifted, and "
        "`jordan`'s polynomial never converges (its fixed band oscillates around 1, see the polynomial "
        "plot): that is by design (Jordan 2024), Muon only needs singular values in a band. The Polar "
        "Express table is the best of the NS sets per step on this matrix, as Amsel et al. 2025 claim; "
        "the cubic (= Björck with β = 1/2, the two curves coincide) needs the most steps but converges to "
        "the polar factor quadratically at the end. `you` stalls near 3e-3: past its six rows the last row "
        "is repeated, and that row has p(1) = 1021/1024, not 1; `jordan` stalls in its band (≈ 0.5)."),
        (f"- Cost: to reach ‖QᵀQ − I‖_2 < {_TOL:g} the fastest iteration ({pe_text}) {cheaper} the exact "
         f"polar factor by SVD ({polar_ms:.1f} ms) on this CPU in float64. Newton–Schulz pays off where "
         f"matrix products are far cheaper than an SVD — GPUs, bfloat16 — which this reference does not "
         f"measure."),
        ("- `polar (SVD)` is the reference of the distance column, so its distance is 0 by construction "
         "(drawn at 1e-17 on the log plot)."),
        ("- The polynomial plot shows the design choices: the cubic is monotone and slow near σ = 0; the "
        "quintic sets trade exactness at σ = 1 for a steep rise from 0."),
    ]
    return {"direct": direct, "iterative": iterative, "worst": agg["worst"], "figures": figs,
            "markdown": atomic_write_text(os.path.join(md_dir, "projections.md"), "\n".join(lines) + "\n")}


register(Study("projections", {"method": ("polar (SVD)", lambda who, name, v: check_choice(
                                   who, name, v, _projection_methods())),
                               "n": (256, _int(2, 4096)), "cond": (1e3, _real(1.0, 1e15)),
                               "repeat": (5, _int(1, 1000)), "max_steps": (30, _int(1, 1000)), "seed": _SEED},
               _projections_grid, _projections_cell, _projections_summary, _projections_aggregate,
               _projections_tables, _projections_write))


# ---------------------------------------------------------------------------------------------------------
# 4. compression: accuracy against kept rank.

#: variant -> (label, TrainConfig fields of the MLP's training).
_COMPRESSION_VARIANTS = {
    "default": ("default init, no penalty", {"init": "default"}),
    "orthogonal": ("orthogonal init, no penalty", {"init": "orthogonal"}),
    "so": ("orthogonal init + SO 1e-1", {"init": "orthogonal", "reg": ("so:1e-1",), "reg_skip": ("last",)}),
    "cayley": ("orthogonal init + Cayley SGD (Stiefel)", {"init": "orthogonal", "optimizer": "cayley_sgd"}),
}


def _compression_grid(quick):
    return {"base": {"epochs": 1 if quick else 20, "hidden": [32, 16] if quick else [512, 256],
                     "ranks": [2, 4] if quick else [2, 4, 8, 16, 32, 64]},
            "axes": {"variant": list(_COMPRESSION_VARIANTS)}, "seeds": 1 if quick else 3}


def _compression_cell(config, cell_dir):
    """One seeded training of the variant's MLP, then its test accuracy after ``compress_model(rank=r)`` for
    every kept rank r, the stable rank of its hidden weights and the spectrum of its second weight."""
    from .analysis import singular_values, stable_rank
    from .compress import compress_model, count_parameters
    from .train import TrainConfig, evaluate, load_data
    label, kw = _COMPRESSION_VARIANTS[config["variant"]]
    cfg = TrainConfig(model="mlp", hidden=tuple(config["hidden"]), epochs=config["epochs"], seed=config["seed"], **kw)
    res, resumed_from = fit_cell(cfg, cell_dir)
    model = res["model"]
    X_te, y_te = load_data(res["config"])[2:]
    ws = [p.data for n, p in model.named_parameters() if n.endswith("weight")]
    sv = np.asarray(singular_values(ws[1]))
    acc, params = [], []
    for r in config["ranks"]:
        small, _ = compress_model(model, rank=r)
        acc.append(evaluate(small, X_te, y_te))
        params.append(count_parameters(small))
    return {"full_acc": evaluate(model, X_te, y_te), "acc": acc, "params": params,
            "params_full": count_parameters(model),
            # the rank at which compress_model keeps every layer, i.e. the uncompressed model (figure only)
            "full_rank": max(min(p.data.shape) for n, p in model.named_parameters() if n.endswith("weight")),
            "stable_rank": float(np.mean([stable_rank(w) for w in ws[:-1]])), "spectrum": sv / sv[0],
            "resumed_from": resumed_from}


def _compression_summary(r):
    return f"full {r['full_acc']:.4f}, " + ", ".join(f"{a:.3f}" for a in r["acc"]) + " by rank"


def _compression_aggregate(rows):
    order = list(_COMPRESSION_VARIANTS)
    groups = _groups(rows, lambda c: (_index(order, c["variant"]), c["variant"], c["ranks"]))
    out = []
    for g in groups:
        res = [r["result"] for r in g["done"]]
        ranks = g["config"]["ranks"]
        row = {"key": g["config"]["variant"], "variant": _COMPRESSION_VARIANTS[g["config"]["variant"]][0],
               "n": g["n"], "seeds": g["seeds"], "failed": g["failed"], "ranks": ranks,
               "epochs": g["config"]["epochs"], "hidden": g["config"]["hidden"]}
        if res:
            full = _stat([r["full_acc"] for r in res])
            acc = {k: _stat([r["acc"][i] for r in res]) for i, k in enumerate(ranks)}
            srank = _stat([r["stable_rank"] for r in res])
            row.update({"full_stat": full, "full_acc": full["mean"], "full_std": full["std"] if full["n"] > 1 else 0.0,
                        "acc_stat": acc, "acc": {k: s["mean"] for k, s in acc.items()},
                        "acc_std": {k: s["std"] if s["n"] > 1 else 0.0 for k, s in acc.items()},
                        "params": dict(zip(ranks, res[0]["params"])), "params_full": res[0]["params_full"],
                        "full_rank": res[0]["full_rank"], "stable_rank_stat": srank, "stable_rank": srank["mean"],
                        "spectrum": np.asarray(res[0]["spectrum"]), "spectrum_seed": g["seeds"][0]})
        out.append(row)
    return {"groups": groups, "rows": out}


def _compression_tables(agg):
    rows = [r for r in agg["rows"] if r["n"]]
    ranks = rows[0]["ranks"]
    several = any(r["n"] > 1 for r in rows)
    head = " | ".join(f"rank {k}" for k in ranks)
    lines = ([f"Test accuracy, mean ± std over {_seeds_text(agg['groups'])} (95% CI of the uncompressed mean "
              f"in brackets):", ""] if several else [])
    lines += [f"| training | uncompressed | {head} | stable rank |", "|---|---|" + "---|" * len(ranks) + "---|"]
    for r in rows:
        cells = " | ".join(_pm(r["acc_stat"][k]) for k in ranks)
        full = _pm(r["full_stat"]) + (f" {_ci(r['full_stat'])}" if r["full_stat"]["n"] > 1 else "")
        lines.append(f"| {r['variant']} | {full} | {cells} | {_pm(r['stable_rank_stat'], _f, 1)} |")
    lines.append(f"| parameters | {rows[0]['params_full']:,} | "
                 + " | ".join(f"{rows[0]['params'][k]:,}" for k in ranks) + " | |")
    return "\n".join(lines)


def _compression_write(agg, out_dir, md_dir):
    rows = [r for r in agg["rows"] if r["n"]]
    ranks, epochs, hidden = rows[0]["ranks"], rows[0]["epochs"], rows[0]["hidden"]
    seeds = _seeds_text(agg["groups"])
    full_rank = rows[0]["full_rank"]
    by = {r["key"]: r for r in rows}
    missing = [k for k in ("default", "so", "cayley") if k not in by]
    if missing:
        raise ValueError(f"study compression: the summary compares the grid's variants and needs "
                         f"{', '.join(missing)}; no cell of {'it' if len(missing) == 1 else 'them'} is done")
    base, ortho, cayley = by["default"], by["so"], by["cayley"]
    figs = []
    require_matplotlib()
    from matplotlib.ticker import NullLocator
    fig, axes = figure_grid(2, width=5.0, height=3.6, max_cols=2)
    # One colour and marker per training; the uncompressed accuracy is the last point of each curve, at
    # the rank where compress_model keeps every layer as it is (no separate reference lines).
    xs = list(ranks) + [full_rank]
    for i, r in enumerate(rows):
        style = {"color": f"C{i}", "marker": "osD^"[i % 4], "label": r["variant"]}
        axes[0].errorbar(xs, [r["acc"][k] for k in ranks] + [r["full_acc"]],
                         yerr=[r["acc_std"][k] for k in ranks] + [r["full_std"]], ms=4, capsize=2, lw=1.3, **style)
        axes[1].semilogy(np.arange(1, len(r["spectrum"]) + 1), r["spectrum"], lw=1.3, markevery=0.1, ms=4,
                         **style)
    axes[0].set_xscale("log", base=2)
    axes[0].set_xticks(xs, [str(k) for k in ranks] + [f"{full_rank}\n(full)"])
    axes[0].xaxis.set_minor_locator(NullLocator())
    axes[0].set_xlabel("rank kept in every layer")
    axes[0].set_ylabel(f"test accuracy (mean ± std, {seeds})")
    axes[0].set_title(f"accuracy after truncated-SVD compression\n(rank {full_rank}: uncompressed)", fontsize=9)
    plain_log_ticks(axes[1])
    axes[1].set_xlabel("index i (1 = largest)")
    axes[1].set_ylabel("σ_i / σ_1 (log scale)")
    axes[1].set_title(f"singular values of the second weight ({hidden[1]}x{hidden[0]}), seed "
                      f"{rows[0]['spectrum_seed']}", fontsize=9)
    shared_legend(fig, axes, ncol=2)
    figs.append(save_png(fig, os.path.join(out_dir, "compression_rank.png"), dpi=_DPI))

    lines = [
        "# Study: compression — accuracy against kept rank", "",
        (f"MLP 64-{hidden[0]}-{hidden[1]}-10 on the digits, {epochs} epoch{'s' * (epochs != 1)} (Adam 1e-3 unless named; Cayley "
        f"SGD at 0.05 keeps the hidden weights orthonormal and the classifier Euclidean), {seeds}. "
        f"`orthoref.compress.compress_model(model, rank=r)` replaces every Linear by two thin ones of rank "
        f"min(r, full rank) (a layer is kept when that saves nothing). Accuracies and the stable rank "
        f"‖M‖²_F/‖M‖²_2 (averaged over the hidden weights) are the mean ± std over the seeds (ddof=1)."), "",
        _img(figs[0], md_dir, "accuracy against rank"), "",
        _compression_tables(agg)]
    low = ranks[min(2, len(ranks) - 1)]
    verdict = ("worse" if ortho["acc"][low] < base["acc"][low] - max(ortho["acc_std"][low], base["acc_std"][low])
               else "better" if ortho["acc"][low] > base["acc"][low] + max(ortho["acc_std"][low],
                                                                          base["acc_std"][low])
               else "about as well")
    lines += [
        "", "What it shows:", "",
        (f"- Orthogonality spreads the energy over all directions: the stable rank of the hidden weights is "
        f"{base['stable_rank']:.1f} with the default init and no penalty against {ortho['stable_rank']:.1f} "
        f"with SO and {cayley['stable_rank']:.1f} on the Stiefel manifold (a weight with orthonormal rows "
        f"has stable rank = its full rank). A flat spectrum is the opposite of what truncated SVD needs."),
        (f"- At rank {low} the SO-regularized network compresses {verdict} "
         f"({_pm(ortho['acc_stat'][low])} vs {_pm(base['acc_stat'][low])} for the default run"
         f"{', beyond or within the larger of the two seed spreads' if ortho['n'] > 1 else ''}). Orthogonality "
         f"imposed throughout training (SO, Stiefel) makes every direction carry the function about equally, "
         f"so dropping any of them costs accuracy; truncated SVD needs a decaying spectrum, which unconstrained "
         f"training produces (from the default or an orthogonal init alike: what is learned lives in a few "
         f"leading directions, and an orthogonal init's flat band carries weight norm but little of the "
         f"function — the README's energy-threshold table shows the same)."),
        "- Smallest rank within 0.01 of the uncompressed accuracy (means): " + "; ".join(
            f"{r['variant']}: " + str(next((k for k in ranks if r["acc"][k] >= r["full_acc"] - 0.01),
                                          f"none up to {ranks[-1]}")) for r in rows) + ".",
        ("- So orthogonality regularization and low-rank compression pull in opposite directions: a network "
        "meant to be compressed by SVD should not be trained with these penalties or constraints."),
    ]
    return {"rows": [{k: v for k, v in r.items() if k != "spectrum"} for r in rows], "figures": figs,
            "markdown": atomic_write_text(os.path.join(md_dir, "compression.md"), "\n".join(lines) + "\n")}


register(Study("compression", {"variant": ("default", _choice(*_COMPRESSION_VARIANTS)),
                               "epochs": (20, _int(1, 100_000)), "hidden": ([512, 256], _ints(1, 100_000, min_len=2)),
                               "ranks": ([2, 4, 8, 16, 32, 64], _ints(1, 100_000)), "seed": _SEED},
               _compression_grid, _compression_cell, _compression_summary, _compression_aggregate,
               _compression_tables, _compression_write, sequence_fields=("hidden", "ranks")))


# ---------------------------------------------------------------------------------------------------------
# 5. rnn: the adding problem.

_RNN_NAMES = {
    "normal": "normal (tanh)",
    "orthogonal": "orthogonal (tanh)",
    "identity": "identity (relu, IRNN)",
    "parametrized": "parametrized (tanh; orthogonal constraint: Riemannian Adam keeps W_hh on O(n))",
    "expm": "expm (tanh; orthogonal parametrization W_hh = base·expm(A))",
}


def _rnn_grid(quick):
    from .sequence import ADDING_INITS
    if quick:
        base = {"T": 5, "hidden": 8, "steps": 20, "eval_every": 10, "batch_size": 10}
    else:
        base = {"T": 100, "hidden": 128, "steps": 1500, "eval_every": 50, "batch_size": 50}
    return {"base": base, "axes": {"init": list(ADDING_INITS)}, "seeds": 1 if quick else 3}


def _rnn_cell(config, cell_dir):
    """One seeded :func:`orthoref.sequence.fit_adding` run (Adam 1e-3, float32) written into ``cell_dir``,
    resumed from its checkpoint when one is there."""
    from .sequence import fit_adding, load_adding_checkpoint
    kw = {k: config[k] for k in ("T", "hidden", "init", "steps", "batch_size", "eval_every", "seed")}
    ckpt = os.path.join(cell_dir, "checkpoint.npz")
    resumed_from = 0
    if os.path.exists(ckpt):
        resumed_from = int(load_adding_checkpoint(ckpt)[0]["step"])
        r = fit_adding(resume=ckpt, log=None, **kw)
    else:
        r = fit_adding(out=cell_dir, log=None, **kw)
    return {"history": r["history"], "final_mse": r["final_mse"], "steps_to_target": r["steps_to_target"],
            "target_mse": r["target_mse"], "baseline_mse": r["baseline_mse"], "nonlinearity": r["nonlinearity"],
            "seconds": r["seconds"], "resumed_from": resumed_from}


def _rnn_summary(r):
    reached = "not reached" if r["steps_to_target"] is None else f"MSE < {r['target_mse']:g} at {r['steps_to_target']}"
    return f"final mse {_f(r['final_mse'])} ({reached})"


def _rnn_aggregate(rows):
    from .sequence import ADDING_INITS
    groups = _groups(rows, lambda c: (c["T"], _index(list(ADDING_INITS), c["init"]), c["hidden"], c["steps"]))
    out = []
    for g in groups:
        res = [r["result"] for r in g["done"]]
        c = g["config"]
        row = {"init": c["init"], "name": _RNN_NAMES.get(c["init"], c["init"]), "T": c["T"], "hidden": c["hidden"],
               "steps": c["steps"], "batch_size": c["batch_size"], "eval_every": c["eval_every"], "n": g["n"],
               "seeds": g["seeds"], "failed": g["failed"]}
        if res:
            steps = [h[0] for h in res[0]["history"]]
            mean, lo, hi = _mean_curve([[h[1] for h in r["history"]] for r in res])
            stat = _stat([r["final_mse"] for r in res])
            reached = [r["steps_to_target"] for r in res]
            row.update({"nonlinearity": res[0]["nonlinearity"], "target_mse": res[0]["target_mse"],
                        "baseline_mse": res[0]["baseline_mse"],
                        "history": [[s, m] for s, m in zip(steps, mean.tolist())],
                        "history_min": lo.tolist(), "history_max": hi.tolist(),
                        "final_stat": stat, "final_mse": stat["mean"], "reached": reached,
                        "steps_to_target": reached[0] if len(reached) == 1 else None,
                        "seconds": float(np.mean([r["seconds"] for r in res]))})
        out.append(row)
    return {"groups": groups, "rows": out}


def _steps_text(r):
    hits = [s for s in r["reached"] if s is not None]
    if r["n"] == 1:
        return str(hits[0]) if hits else "not reached"
    return f"{len(hits)} of {r['n']} seeds" + (f", median {int(np.median(hits))}" if hits else "")


def _rnn_tables(agg):
    rows = [r for r in agg["rows"] if r["n"]]
    target = rows[0]["target_mse"]
    if not any(r["n"] > 1 for r in rows):
        lines = [f"| T | init | steps to MSE < {target:g} | final MSE | seconds |", "|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['T']} | {r['name']} | {_steps_text(r)} | {_f(r['final_mse'])} | {r['seconds']:.1f} |")
        return "\n".join(lines)
    lines = [(f"| T | init | steps to MSE < {target:g} | final MSE (mean ± std, {_seeds_text(agg['groups'], False)}) | "
              f"95% CI | seconds (mean per run) |"), "|---|---|---|---:|---|---:|"]
    for r in rows:
        lines.append(f"| {r['T']} | {r['name']} | {_steps_text(r)} | {_pm(r['final_stat'])} | {_ci(r['final_stat'])} | "
                     f"{r['seconds']:.1f} |")
    return "\n".join(lines)


def _rnn_write(agg, out_dir, md_dir):
    rows = [r for r in agg["rows"] if r["n"]]
    Ts = sorted({r["T"] for r in rows})
    first = rows[0]
    seeds = _seeds_text(agg["groups"])
    several = any(r["n"] > 1 for r in rows)
    base = first["baseline_mse"]
    figs = []
    require_matplotlib()
    fig, axes = figure_grid(len(Ts), width=5.0, height=3.5, max_cols=2)
    for ax, T in zip(axes, Ts):
        for i, r in enumerate(x for x in rows if x["T"] == T):
            h = np.asarray(r["history"], dtype=np.float64)
            label = r["init"] + (" (relu, IRNN)" if r["nonlinearity"] == "relu" else " (tanh)")
            ax.semilogy(h[:, 0], h[:, 1], lw=1.3, label=label, color=f"C{i}")
            if r["n"] > 1:
                ax.fill_between(h[:, 0], r["history_min"], r["history_max"], color=f"C{i}", alpha=0.15, lw=0,
                                label=f"{r['init']}: min–max over seeds")
        ax.axhline(base, color="gray", ls="--", lw=0.8, label="predict 1 (1/6)")
        ax.axhline(first["target_mse"], color="gray", ls=":", lw=0.8, label=f"MSE {first['target_mse']:g}")
        plain_log_ticks(ax)
        ax.set_title(f"adding problem, T = {T}, hidden {first['hidden']}"
                     + (f"\nmean of {seeds}, band: min–max" if several else ""), fontsize=9)
        ax.set_xlabel("training step")
        ax.set_ylabel("held-out MSE (log scale)")
        ax.legend(fontsize=7)
    figs.append(save_png(fig, os.path.join(out_dir, "rnn_adding.png"), dpi=_DPI))

    T_long = Ts[-1]
    at_long = [r for r in rows if r["T"] == T_long]
    solved = [r for r in at_long if all(s is not None for s in r["reached"])]
    some = [r for r in at_long if any(s is not None for s in r["reached"]) and r not in solved]
    never = [r for r in at_long if r not in solved and r not in some]
    tanh_solved = [r for r in solved + some if r["nonlinearity"] == "tanh"]
    by = {r["init"]: r for r in at_long}
    lines = [
        "# Study: rnn — the adding problem", "",
        (f"`orthoref.sequence.fit_adding` (Elman RNN, hidden {first['hidden']}, batch {first['batch_size']}, "
        f"Adam 1e-3, gradients clipped to global norm 1, {first['steps']} steps, float32), {seeds}; held-out MSE "
        f"on 500 sequences every {first['eval_every']} steps. Predicting 1 gives MSE {base:.3f}. `parametrized` "
        f"keeps W_hh orthogonal throughout training (Riemannian Adam on the orthogonal group, QR retraction), "
        f"`expm` parametrizes it as base·expm(A) with A skew (PyTorch's `orthogonal` parametrization)."
        + (" The final MSE is the mean ± std over the seeds (ddof=1) with the 95% t-interval of the mean; the "
           "figure shows the mean curve and the min–max band." if several else "")), "",
        _img(figs[0], md_dir, "adding problem MSE"), "",
        _rnn_tables(agg),
        "", "What it shows:", "",
        (f"- At T = {T_long}: solved (MSE < {first['target_mse']:g}) "
         + ("in every seed " if several else "") + f"by {', '.join(r['init'] for r in solved) or 'none'}"
         + (f"; in some seeds by {', '.join(r['init'] for r in some)}" if some else "")
         + f"; not by {', '.join(r['init'] for r in never) or 'none'}."),
        ("- The identity-initialized ReLU network (IRNN, Le, Jaitly & Hinton 2015) is the one that learns "
         "long-range addition here, as its paper reports." if "identity" in by and by["identity"] in solved + some
         else "- The identity-initialized ReLU network (IRNN) does not learn it within this budget here."),
        (("- None of the tanh networks learns it: an orthogonal *start* does no better than the Gaussian one, "
          "and neither does keeping W_hh exactly orthogonal throughout training (the constraint and the expm "
          "parametrization): tanh contracts the signal every step, so the Jacobian through "
          f"{T_long} steps still vanishes (compare the depth study's tanh rows). The unitary/orthogonal RNN "
          "papers (Arjovsky et al. 2016; Henaff et al. 2016) get long memory from an orthogonal W_hh *and* "
          "non-saturating nonlinearities (modReLU, or none at all in the linear memory tasks); orthogonality of "
          "W_hh alone is not enough with tanh, at least in this budget and without tuning.")
         if not tanh_solved else
         f"- tanh networks that learn it: {', '.join(r['init'] for r in tanh_solved)}."),
    ]
    if several and "normal" in by and "orthogonal" in by:
        a, b = by["normal"]["final_stat"], by["orthogonal"]["final_stat"]
        apart = abs(a["mean"] - b["mean"]) > max(a["std"], b["std"])
        lines.append(f"- normal vs orthogonal (tanh): final MSE {_pm(a)} vs {_pm(b)} over {seeds}: "
                     + ("apart by more than the seed spread." if apart else "within the seed spread, not ranked."))
    if "expm" in by:
        lines.append(f"- The expm parametrization is the slowest row: every step takes a {first['hidden']}x"
                     f"{first['hidden']} `expm` and its Fréchet derivative (`scipy.linalg.expm_frechet`).")
    return {"rows": rows, "figures": figs,
            "markdown": atomic_write_text(os.path.join(md_dir, "rnn.md"), "\n".join(lines) + "\n")}


def _rnn_fields():
    from .sequence import ADDING_INITS
    return {"T": (100, _int(1, 100_000)), "hidden": (128, _int(1, 4096)), "steps": (1500, _int(1, 10_000_000)),
            "eval_every": (50, _int(1, 10_000_000)), "batch_size": (50, _int(1, 100_000)),
            "init": ("orthogonal", _choice(*ADDING_INITS)), "seed": _SEED}


register(Study("rnn", _rnn_fields(), _rnn_grid, _rnn_cell, _rnn_summary, _rnn_aggregate, _rnn_tables, _rnn_write))
register_runner("autoencoder", "orthoref.autoencoder:study_autoencoder")


# ---------------------------------------------------------------------------------------------------------
# Entry points.

#: Modules that register further studies (:func:`register`), imported at the end of this module: a new
#: study module joins by adding its name here.
STUDY_MODULES = ("orthoref.study_article",)


def _rows_of(sweep_dir, spec):
    ids = {c.id for c in spec.cells}
    return [r for r in read_results(sweep_dir) if r["cell_id"] in ids]


def _compute(spec, sweep_dir, log):
    """The spec's cells in this process, one after the other (the sweep's serial path), in ``sweep_dir``
    (None: a temporary folder); the rows of the spec's cells."""
    with contextlib.ExitStack() as stack:
        if sweep_dir is None:
            sweep_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="orthoref-study-"))
            if log is not None:           # the cells' lines only: the sweep's name the folder about to vanish
                log = (lambda say: lambda line: None if line.startswith("sweep ") else say(line))(log)
        run_sweep(spec, sweep_dir, workers=0, progress=False, log=log, stop_on_failure=True)
        return _rows_of(sweep_dir, spec)


def _write_report(study, rows, out_dir, md_dir):
    require_matplotlib()
    agg = study.aggregate(rows)
    if not any(g["n"] for g in agg["groups"]):
        raise ValueError(f"study {study.name}: no cell is done; nothing to report")
    return study.write(agg, out_dir, md_dir)


def _folders(out_dir, md_dir, who="study"):
    if not isinstance(out_dir, (str, os.PathLike)) or (md_dir is not None
                                                       and not isinstance(md_dir, (str, os.PathLike))):
        raise TypeError(f"{who}: out_dir and md_dir must be folder paths, got {out_dir!r} and {md_dir!r}")
    out_dir = os.fspath(out_dir)
    return out_dir, out_dir if md_dir is None else os.fspath(md_dir)


@contextlib.contextmanager
def _claimed(out_dir, md_dir):
    from ._io import claim_run_dir, interruptible
    with interruptible(), contextlib.ExitStack() as claims:
        # one study at a time per folder: a second `orthoref study` on it is refused (RunDirBusy)
        claims.enter_context(claim_run_dir(out_dir, who="study"))
        if not (os.path.isdir(md_dir) and os.path.samefile(md_dir, out_dir)):
            claims.enter_context(claim_run_dir(md_dir, who="study"))
        yield


def _footer(path, text):
    with open(path, encoding="utf-8") as f:
        body = f.read()
    atomic_write_text(path, body + text)


def run(name, out_dir, quick=False, seed=0, md_dir=None, log=None, seeds=None, sweep_dir=None):
    """Run study ``name`` (one of :data:`STUDIES`, or ``"all"``) in this process, writing its figures into
    ``out_dir`` and its summary ``NAME.md`` into ``md_dir`` (default ``out_dir``); both are created if needed.

    The cells of :func:`study_spec` are computed one after the other by the sweep's serial path
    (:func:`orthoref.sweep.run_sweep` with ``workers=0``: no Dask), then aggregated over seeds and reported.

    Parameters
    ----------
    name : str
        ``"depth"``, ``"regularizers"``, ``"projections"``, ``"compression"``, ``"rnn"`` (or another registered
        study) or ``"all"``.
    out_dir : str or path
    quick : bool
        Shrink every size and step count and use one seed (seconds in all; for tests and smoke runs).
    seed : int
        The first seed; a study of n seeds uses ``seed, seed + 1, ..., seed + n - 1``.
    md_dir : str or path or None
        Where the markdown goes; its image links are relative to it.
    log : callable or None
        Gets one progress line per cell (``print`` for the CLI).
    seeds : int or None
        How many seeds (default: the study's, 3 for the full studies and 1 quick).
    sweep_dir : str or path or None
        Keep the cells in this sweep folder (``results.sqlite``, ``cells/<id>``) instead of a temporary one:
        cells already done there are not computed again (a study stopped half-way goes on), and ``orthoref
        sweep report`` reads it.

    Returns
    -------
    dict
        The study's numbers (aggregated over seeds), ``"figures"`` (PNG paths), ``"markdown"`` (path) and
        ``"seconds"`` (wall time); for ``"all"``, a dict name -> that.

    Raises
    ------
    ValueError
        For an unknown ``name`` (the message lists the names) or a bad ``seed``/``seeds``; a cell's own
        exception when it fails.
    ImportError
        matplotlib or threadpoolctl is missing.
    """
    if not isinstance(name, str) or (name not in STUDIES and name != "all"):
        raise ValueError(f"study: unknown study {name!r}; choose from {', '.join(STUDIES)} or all")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"study: seed must be a non-negative int, got {seed!r}")
    if seeds is not None:
        seeds = check_int("study", "seeds", seeds, 1, 100_000)
    if name == "all":
        return {n: run(n, out_dir, quick=quick, seed=seed, md_dir=md_dir, log=log, seeds=seeds,
                       sweep_dir=None if sweep_dir is None else os.path.join(os.fspath(sweep_dir), n))
                for n in STUDIES if quick or n not in REGISTRY or REGISTRY[n].in_all}
    require_matplotlib()
    out_dir, md_dir = _folders(out_dir, md_dir)
    if name in RUNNERS:
        return _run_runner(name, out_dir, md_dir, bool(quick), int(seed), log)
    spec = study_spec(name, quick=quick, seed=int(seed), seeds=seeds)
    with _claimed(out_dir, md_dir):
        t0 = time.perf_counter()
        rows = _compute(spec, None if sweep_dir is None else os.fspath(sweep_dir), log)
        with _one_blas_thread():
            result = _write_report(REGISTRY[name], rows, out_dir, md_dir)
        result["seconds"] = time.perf_counter() - t0
        mode = "quick mode, " if quick else ""
        first, n = spec.axes["seed"][0], len(spec.axes["seed"])
        seed_text = f"seed {first}" if n == 1 else f"seeds {first}–{first + n - 1}"
        _footer(result["markdown"], f"\nWall time: {result['seconds']:.1f} s ({mode}{seed_text}, {len(spec.cells)} "
                                    f"cells in one process; `orthoref study {name}`).\n")
    if log:
        log(f"study {name}: {result['seconds']:.1f} s -> {result['markdown']}")
    return result


def _run_runner(name, out_dir, md_dir, quick, seed, log):
    runner = RUNNERS[name]
    if isinstance(runner, str):
        module, function = runner.split(":")
        runner = getattr(importlib.import_module(module), function)
    with _claimed(out_dir, md_dir):
        t0 = time.perf_counter()
        with _one_blas_thread():   # small GEMMs; spinning BLAS threads on a busy 2-core machine cost >10x
            result = runner(out_dir, md_dir, quick, seed, log)
        result["seconds"] = time.perf_counter() - t0
        mode = "quick mode, " if quick else ""
        _footer(result["markdown"], f"\nWall time: {result['seconds']:.1f} s ({mode}seed {seed}; "
                                    f"`orthoref study {name}`).\n")
    if log:
        log(f"study {name}: {result['seconds']:.1f} s -> {result['markdown']}")
    return result


def report_sweep(sweep_dir, out_dir, md_dir=None, log=None):
    """Write the figures and summary of the study whose cells the sweep folder ``sweep_dir`` holds
    (``orthoref sweep sweeps/study-NAME.toml --out DIR`` on any cluster), over every seed done there.

    Parameters
    ----------
    sweep_dir : str or path
        A sweep folder of ``study:NAME`` cells.
    out_dir : str or path
        Where the figures go (created if needed).
    md_dir : str or path or None
        Where ``NAME.md`` goes (default ``out_dir``).
    log : callable or None
        Gets one line naming what was written.

    Returns
    -------
    dict
        As :func:`run` (``seconds``: the cells' compute time summed, as recorded).

    Raises
    ------
    FileNotFoundError, ValueError, TypeError
        As :func:`orthoref.sweep.read_results`; ``ValueError`` for a folder of another kind of cell or with no
        cell done.
    """
    rows = read_results(sweep_dir)
    held = sorted({r["kind"] for r in rows})
    if len(held) != 1 or not held[0].startswith("study:") or held[0][6:] not in REGISTRY:
        raise ValueError(f"report_sweep: {os.fspath(sweep_dir)} must hold the cells of one study "
                         f"(study:{'|'.join(REGISTRY)}), got kinds {held or 'none'}")
    name = held[0][6:]
    out_dir, md_dir = _folders(out_dir, md_dir, "report_sweep")
    with _claimed(out_dir, md_dir), _one_blas_thread():
        result = _write_report(REGISTRY[name], rows, out_dir, md_dir)
        result["seconds"] = float(sum(r["seconds"] or 0.0 for r in rows if r["status"] == "done"))
        done = sum(r["status"] == "done" for r in rows)
        _footer(result["markdown"], f"\nCompute time: {result['seconds']:.1f} s summed over {done} cells (a sweep: "
                                    f"`orthoref sweep`, reported by `orthoref.studies.report_sweep`).\n")
    if log:
        log(f"study {name}: {done} cells from {os.fspath(sweep_dir)} -> {result['markdown']}")
    return result


for _module in STUDY_MODULES:
    importlib.import_module(_module)
