"""Sweeps: many seeded cells — :func:`orthoref.train.fit` runs or study grid points — on a Dask cluster, with
their results in SQLite.

``orthoref sweep SPEC --out DIR`` computes every cell of the sweep described by the TOML file ``SPEC`` and
records one row per cell in ``DIR/results.sqlite``; ``orthoref sweep report DIR [--csv FILE]`` aggregates
the rows over seeds. In Python: :func:`run_sweep` and :func:`report`.

The spec
--------
A table ``[base]`` of :class:`orthoref.train.TrainConfig` fields shared by every cell, and a table
``[axes]`` whose every entry is a non-empty list of values of one field; the cells are the Cartesian
product of the axes (in the order they are written). An entry of an axis is one cell's whole value of the
field, so the axes of sequence fields hold lists (``hidden = [[8], [16, 8]]``, ``reg = [[], ["so:1e-3"]]``,
``optimizer_options = [[], ["momentum=0.9"]]``)::

    [base]
    hidden = [8]
    epochs = 1
    data = "digits"

    [axes]
    init = ["orthogonal", "default"]
    seed = [0, 1]

Two optional top-level keys: ``seeds = N`` is the axis ``seed = [0, 1, ..., N-1]``, added as the last
axis (so more seeds are one number; ``seed`` may then not appear in ``[base]`` or ``[axes]``), and
``kind`` names the kind of cell (below; default ``"train"``).

Every cell is validated (:meth:`~orthoref.train.TrainConfig.validate`) before anything runs: an unknown
field, a bad value, an empty or repeated axis value, ``out`` or ``progress`` (set by the sweep) raise
``ValueError`` naming the file and the key (``base.lr``, ``axes.init[2]``, or the cell). TOML is read with
the standard library's ``tomllib`` (Python 3.11+), else with the ``tomli`` package.

Kinds of cell
-------------
A cell is one call of a registered cell function with the cell's configuration. ``kind = "train"`` (the
default) is one :func:`~orthoref.train.fit` of a ``TrainConfig``; ``kind = "study:NAME"`` is one grid point
of the study ``NAME`` of :mod:`orthoref.studies` for one seed (``sweeps/study-NAME.toml`` holds each study's
grid: ``orthoref sweep sweeps/study-rnn.toml --out DIR`` runs the RNN study on Dask and ``orthoref sweep
report DIR`` prints its tables, mean ± spread over the seeds). A kind (:class:`CellKind`, registered with
:func:`register_kind`) says which fields a cell has and how to validate them, how to compute a cell, and how
to aggregate its rows over seeds and print them. One folder holds cells of one kind.

Cells, resumption and faults
----------------------------
A cell's id is the first 12 hex digits of the SHA-256 of its configuration as canonical JSON (every
``TrainConfig`` field but ``out`` and ``progress``, keys sorted; for another kind its name and a newline
first; :func:`cell_id`), and its run folder is ``DIR/cells/<id>/``. A sweep run again computes only the
cells without a ``done`` row (failed cells are tried again); a cell whose folder holds a checkpoint resumes
from it (``fit(resume=...)``, bit-identical to an uninterrupted run; the study cells that train do the
same through :func:`fit_cell` or ``fit_adding(resume=...)``), so a cell interrupted by Ctrl-C, a dead worker
or a lost machine loses at most its current epoch (or evaluation interval).

Each cell runs on a Dask worker (:func:`run_cell`, one cell at a time per worker) with its BLAS pools
limited to ``threads_per_worker`` threads (``threadpoolctl`` inside the task; a :class:`LocalCluster
<distributed.LocalCluster>` also starts its workers with ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and
``MKL_NUM_THREADS`` set to it); the threads in effect are recorded in each row. A worker that dies while
running a cell makes the scheduler run the cell again on another worker, from its checkpoint (up to
``distributed.scheduler.allowed-failures`` deaths, then the cell is recorded as failed with Dask's
``KilledWorker``); an exception other than ``TypeError``/``ValueError``/:class:`~orthoref.train.DivergenceError`
(an ``OSError`` of a shared file system, say) is retried ``retries`` times (``retries=`` of
``Client.submit``). Since cells are seeded, a cell's final weights are bit-identical whether it ran
serially, on a cluster, or was killed and resumed elsewhere (on the same kind of machine and BLAS).

Results
-------
The client writes ``DIR/results.sqlite`` as cells finish, one committed transaction per row, so the file
never holds half a row. Table ``cells``, one row per cell (the columns of :data:`RESULT_COLUMNS`):
``cell_id``, ``config`` (the canonical JSON), ``status`` (``done``/``failed``), ``epoch`` (the last one
trained), ``test_acc``, ``loss``, ``train_acc`` (that epoch's; ``loss`` is the training loss), ``seconds``
(wall-clock time of the attempt that finished), ``resumed_from`` (the checkpoint's epoch that attempt
started from; 0: from scratch), ``worker`` (its address), ``blas_threads``, ``orthoref_version``,
``numpy_version``, ``error`` (the failure, for failed cells), ``finished`` (UTC), ``kind`` (of the cell) and
``result`` (what the cell function returned, strict JSON: NaN/±Inf as ``null``; for ``train`` cells the
epoch and the three metrics again). Table ``runs`` has one row per invocation (spec, cluster, threads per
worker, cells computed, status). A results file of the first schema (before ``kind`` and ``result``) is
read as ``train`` cells and upgraded in place when a sweep writes to it.

Deployment
----------
Every worker must import the same orthoref (``pip install "orthoref[sweep]"`` in the workers' environment
or image) and see ``DIR`` at the same absolute path (a shared file system: the workers write the cell
folders, the client writes ``results.sqlite``). Start workers with one thread each (``dask worker ...
--nthreads 1``; BLAS threads come from ``--threads-per-worker``) and pass the scheduler's address:

- on a batch system with `dask-jobqueue <https://jobqueue.dask.org>`_::

      from dask_jobqueue import SLURMCluster          # or PBSCluster, SGECluster, LSFCluster, ...
      cluster = SLURMCluster(cores=1, processes=1, memory="4GB", walltime="04:00:00",
                             job_script_prologue=["source /path/to/venv/bin/activate"])
      cluster.scale(jobs=32)
      run_sweep("sweeps/smoke.toml", "/shared/sweeps/smoke", scheduler=cluster)

  (or print ``cluster.scheduler_address`` and run ``orthoref sweep SPEC --out DIR --scheduler ADDRESS``
  while the cluster object lives);
- on Kubernetes with `dask-kubernetes <https://kubernetes.dask.org>`_'s operator: ``KubeCluster(name=
  "orthoref", image=IMAGE, n_workers=32, resources={"requests": {"cpu": "1"}})``, ``IMAGE`` holding
  orthoref, and ``DIR`` on a ``ReadWriteMany`` volume mounted at the same path in the workers and the
  client's pod; then as above;
- by hand: ``dask scheduler`` on one machine and ``dask worker tcp://HOST:8786 --nthreads 1`` on each of
  the others.

The client must stay up for the whole sweep (it records the results); if it stops, run the same command
again. A cell still running on a worker the client left behind finishes on its own; the next run picks
its checkpoint up.
"""
from __future__ import annotations

import contextlib
import csv
import datetime
import hashlib
import io
import itertools
import json
import logging
import math
import os
import signal
import sqlite3
import threading
import time
import warnings
from dataclasses import dataclass, fields
from typing import Callable

import numpy as np

from ._checks import check_bool, check_int
from ._checkpoint import read_json
from ._io import (CheckpointError, RunInterrupted, atomic_write, claim_run_dir, interruptible, loads_strict, read_npz,
                  strict_json)
from ._progress import Progress
from .train import DivergenceError, TrainConfig, fit

__all__ = ["Cell", "CellKind", "Spec", "RESULT_COLUMNS", "load_spec", "parse_spec", "cell_id", "cell_config",
           "register_kind", "cell_kind", "kinds", "run_cell", "fit_cell", "run_sweep", "read_results", "report",
           "format_report", "write_csv", "mean_ci", "seed_groups", "without_timings"]

#: ``TrainConfig`` fields a spec may not set: the sweep chooses the run folder and hides progress bars.
SWEEP_FIELDS = ("out", "progress")
#: Sequence fields: an axis of one of them lists one whole sequence per cell.
_SEQUENCE_FIELDS = ("hidden", "reg", "reg_skip", "optimizer_options")
#: The most cells one spec may describe.
MAX_CELLS = 100_000
#: The metrics of the last epoch that each row holds and the report aggregates.
METRICS = ("test_acc", "loss", "train_acc")

#: Columns of table ``cells`` of ``results.sqlite``: ``(name, SQLite type)``.
RESULT_COLUMNS = (
    ("cell_id", "TEXT PRIMARY KEY"),
    ("config", "TEXT NOT NULL"),
    ("status", "TEXT NOT NULL CHECK (status IN ('done', 'failed'))"),
    ("epoch", "INTEGER"),
    ("test_acc", "REAL"),
    ("loss", "REAL"),
    ("train_acc", "REAL"),
    ("seconds", "REAL"),
    ("resumed_from", "INTEGER"),
    ("worker", "TEXT"),
    ("blas_threads", "INTEGER"),
    ("orthoref_version", "TEXT"),
    ("numpy_version", "TEXT"),
    ("error", "TEXT"),
    ("finished", "TEXT"),
    ("kind", "TEXT NOT NULL DEFAULT 'train'"),
    ("result", "TEXT"),
)
#: The columns of the first schema (before kinds of cell): such a file holds ``train`` cells.
_V1_COLUMNS = tuple(n for n, _ in RESULT_COLUMNS[:-2])
_RUN_COLUMNS = (
    ("run", "INTEGER PRIMARY KEY AUTOINCREMENT"),
    ("started", "TEXT"),
    ("finished", "TEXT"),
    ("spec", "TEXT"),
    ("spec_text", "TEXT"),
    ("cluster", "TEXT"),
    ("threads_per_worker", "INTEGER"),
    ("cells", "INTEGER"),
    ("computed", "INTEGER"),
    ("done", "INTEGER"),
    ("failed", "INTEGER"),
    ("status", "TEXT"),
)
_SCHEMA_VERSION = 2
RESULTS_NAME = "results.sqlite"
_INSTALL = "pip install 'orthoref[sweep]'"


# ---------------------------------------------------------------------------------------------------------
# The spec

def _config_fields():
    return [f.name for f in fields(TrainConfig) if f.name not in SWEEP_FIELDS]


def without_timings(result):
    """A cell's result without its timings (every key ``seconds``, at any depth of dicts and lists): what a
    seeded cell reproduces bit for bit wherever it runs (tests and ``tools/sweep_scaling.py`` compare it)."""
    if isinstance(result, dict):
        return {k: without_timings(v) for k, v in result.items() if k != "seconds"}
    if isinstance(result, list):
        return [without_timings(v) for v in result]
    return result


def cell_config(config, who="cell_config"):
    """The canonical configuration of a cell: a dict of every ``TrainConfig`` field but ``out`` and
    ``progress``, validated and normalised (sequences as lists, ``lr`` resolved to the optimizer's default
    and made a float).

    Parameters
    ----------
    config : TrainConfig or dict
        A configuration, or a dict of ``TrainConfig`` fields (missing ones take their defaults).
    who : str
        The name that error messages start with.

    Returns
    -------
    dict
        JSON-ready: what :func:`cell_id` hashes and ``results.sqlite`` stores.

    Raises
    ------
    TypeError
        ``config`` is neither a ``TrainConfig`` nor a dict.
    ValueError
        An unknown field, ``out``/``progress`` in a dict, or a value ``TrainConfig.validate`` refuses.
    """
    if isinstance(config, TrainConfig):
        given = {k: v for k, v in config.to_json().items() if k not in SWEEP_FIELDS}
    elif isinstance(config, dict):
        given = dict(config)
        unknown = sorted(set(given) - set(_config_fields()), key=str)
        if unknown:
            raise ValueError(f"{who}: unknown or sweep-controlled field(s) {unknown}; a cell takes "
                             f"{', '.join(_config_fields())}")
    else:
        raise TypeError(f"{who}: config must be a TrainConfig or a dict of its fields, got "
                        f"{type(config).__name__}")
    try:
        cfg = TrainConfig(**given).validate(who=who)
    except (TypeError, ValueError) as exc:
        raise ValueError(_prefixed(who, exc)) from None
    out = {k: v for k, v in cfg.to_json().items()
           if k not in SWEEP_FIELDS and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
    out["lr"] = float(out["lr"])
    return out


#: ``TrainConfig`` fields added after sweeps existed, with their defaults: a cell's configuration leaves them
#: out at their default, so that the ids of cells computed before they existed stay the same.
LATER_FIELDS = {"norm": "none", "sv_bound": None}


def _prefixed(where, exc):
    text = " ".join(str(exc).split())
    return text if text.startswith(where) else f"{where}: {text}"


def _canonical(config):
    return json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _hash(kind, config):
    text = _canonical(config) if kind == "train" else f"{kind}\n{_canonical(config)}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cell_id(config, kind="train"):
    """The id of a cell: the first 12 hex digits of the SHA-256 of its canonical configuration's JSON
    (preceded by the kind's name and a newline for a kind other than ``"train"``).

    Parameters
    ----------
    config : TrainConfig or dict
        As :func:`cell_config` takes it (``out`` and ``progress`` of a ``TrainConfig`` do not count), or a
        dict of the fields of ``kind``.
    kind : str
        The kind of cell (:func:`kinds`), ``"train"`` by default.

    Returns
    -------
    str
        12 lowercase hex digits, the name of the cell's folder ``DIR/cells/<id>``.
    """
    spec = cell_kind(kind, "cell_id")
    return _hash(spec.name, spec.canonical(config, "cell_id"))


@dataclass(frozen=True)
class Cell:
    """One cell of a sweep: an id, its canonical configuration, the values of the axes that made it and its
    kind.

    ``id`` is :func:`cell_id` of ``config``; ``config`` is the kind's canonical dict (:func:`cell_config` for
    ``"train"``); ``axes`` maps each axis of the spec to this cell's value (in the spec's order); ``kind`` names
    the :class:`CellKind`.
    """
    id: str
    config: dict
    axes: dict
    kind: str = "train"

    def describe(self):
        """``init=orthogonal seed=1``: the cell's axis values, as a short line."""
        return " ".join(f"{k}={_shown_value(v)}" for k, v in self.axes.items()) or "(one cell)"


@dataclass(frozen=True)
class Spec:
    """A validated sweep: where it came from, its base and axes, its cells in product order and their kind.

    ``source`` names the file (or what the dict came from); ``text`` is the file's content (kept in
    ``results.sqlite``'s ``runs`` table); ``base`` and ``axes`` are the spec's tables (``axes`` with the
    ``seed`` axis that ``seeds = N`` makes); ``cells`` is a tuple of :class:`Cell`; ``kind`` names their
    :class:`CellKind`.
    """
    source: str
    text: str
    base: dict
    axes: dict
    cells: tuple
    kind: str = "train"


# ---------------------------------------------------------------------------------------------------------
# Kinds of cell

@dataclass(frozen=True)
class CellKind:
    """One kind of cell: its fields, how a configuration is validated, how a cell is computed, and how the
    rows of a folder of such cells are aggregated over seeds and printed.

    Parameters
    ----------
    name : str
        ``"train"``, or ``"study:NAME"`` for a study (:mod:`orthoref.studies` registers one per study); what a
        spec's top-level ``kind`` names.
    fields : tuple of str
        The configuration fields a spec may set in ``[base]`` and ``[axes]`` (``seed`` among them).
    sequence_fields : tuple of str
        Fields whose value is a list: an axis of one lists one whole list per cell.
    canonical : callable
        ``canonical(config, who) -> dict``: the configuration validated, with every field (defaults filled
        in), JSON-ready; ``ValueError``/``TypeError`` starting with ``who`` and naming the field otherwise.
    run : callable
        ``run(config, cell_dir) -> dict``: computes the cell for a canonical ``config`` (``cell_dir`` exists;
        a cell may keep files there, a checkpoint to resume from, say) and returns its results: JSON-ready
        (NumPy scalars and arrays are converted), timings under keys named ``seconds`` (the only values that
        differ between runs), ``resumed_from`` (an int: the step or epoch a checkpoint gave) optional.
    summary : callable
        ``summary(result) -> str``: a cell's result on its progress line.
    report : callable
        ``report(rows) -> dict``: the rows of :func:`read_results` aggregated over seeds; the dict holds
        ``kind`` (this name) and ``groups`` (a list, one entry per combination of the other axes).
    format : callable
        ``format(report) -> str``: what ``orthoref sweep report DIR`` prints.
    """
    name: str
    fields: tuple
    sequence_fields: tuple
    canonical: Callable
    run: Callable
    summary: Callable
    report: Callable
    format: Callable


_KINDS = {}


def register_kind(kind):
    """Register a :class:`CellKind` (replacing one of the same name): specs may then name it in ``kind``.

    Parameters
    ----------
    kind : CellKind

    Returns
    -------
    CellKind
        ``kind``.

    Raises
    ------
    TypeError
        ``kind`` is not a ``CellKind``, or one of its functions is not callable.
    ValueError
        Its name is not ``"train"`` or ``"study:NAME"``, or its fields lack ``seed``.
    """
    if not isinstance(kind, CellKind):
        raise TypeError(f"register_kind: kind must be a CellKind, got {type(kind).__name__}")
    if not isinstance(kind.name, str) or not (kind.name == "train" or kind.name.startswith("study:")
                                              and len(kind.name) > 6 and kind.name[6:].isidentifier()):
        raise ValueError(f"register_kind: name must be 'train' or 'study:NAME' (NAME an identifier), got "
                         f"{kind.name!r}")
    if "seed" not in kind.fields:
        raise ValueError(f"register_kind: kind {kind.name}: fields must include seed, got {kind.fields}")
    for part in ("canonical", "run", "summary", "report", "format"):
        if not callable(getattr(kind, part)):
            raise TypeError(f"register_kind: kind {kind.name}: {part} must be callable, got "
                            f"{type(getattr(kind, part)).__name__}")
    _KINDS[kind.name] = kind
    return kind


def kinds():
    """The names of the registered kinds of cell (the studies' included), in order of registration.

    Returns
    -------
    tuple of str
    """
    _load_studies()
    return tuple(_KINDS)


def _load_studies():
    # orthoref.studies registers a kind "study:NAME" per study when imported (on a Dask worker too)
    from . import studies  # noqa: F401


def cell_kind(name, who="cell_kind"):
    """The registered :class:`CellKind` called ``name``.

    Parameters
    ----------
    name : str
        ``"train"`` or ``"study:NAME"``.
    who : str
        The name that error messages start with.

    Returns
    -------
    CellKind

    Raises
    ------
    ValueError
        No kind of that name (the message lists them); ``TypeError`` for a non-string.
    """
    if not isinstance(name, str):
        raise TypeError(f"{who}: kind must be a string such as 'train' or 'study:rnn', got "
                        f"{type(name).__name__} {name!r}")
    if name not in _KINDS:
        _load_studies()
    if name not in _KINDS:
        raise ValueError(f"{who}: kind must be one of {', '.join(map(repr, _KINDS))}, got {name!r}")
    return _KINDS[name]


def _read_toml(path):
    try:
        import tomllib
    except ImportError:                       # Python < 3.11
        try:
            import tomli as tomllib
        except ImportError:
            raise ImportError(f"load_spec: reading {path} needs a TOML parser: Python 3.11+ has tomllib, "
                              f"older Pythons need the tomli package (pip install tomli, or {_INSTALL})") \
                from None
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
        return tomllib.loads(text), text
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None


def load_spec(path):
    """Read and validate the sweep spec ``path`` (TOML); see the module's description of the format.

    Parameters
    ----------
    path : str or os.PathLike
        A TOML file with the tables ``[base]`` and ``[axes]``.

    Returns
    -------
    Spec
        With every cell built and validated.

    Raises
    ------
    TypeError
        ``path`` is not a path.
    FileNotFoundError
        No such file.
    ValueError
        Not TOML, or a bad spec: the message names the file and the key.
    ImportError
        Python < 3.11 without the ``tomli`` package.
    """
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"load_spec: path must be a file path (str or os.PathLike), got {type(path).__name__} "
                        f"{path!r}")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a folder, not a sweep spec (a TOML file)")
    data, text = _read_toml(path)
    return parse_spec(data, source=path, text=text)


def parse_spec(data, source="spec", text=""):
    """Validate a spec given as a dict (the parsed TOML) and build its cells.

    Parameters
    ----------
    data : dict
        ``{"base": {...}, "axes": {...}}``, optionally with ``"kind"`` (default ``"train"``) and ``"seeds"`` (an
        int N: the last axis ``seed = [0, ..., N-1]``); every key is optional (no axes: one cell).
    source : str
        What error messages name as the file.
    text : str
        The spec's text, kept in :attr:`Spec.text`.

    Returns
    -------
    Spec

    Raises
    ------
    ValueError
        Naming ``source`` and the key: a table or key other than ``base``/``axes``/``kind``/``seeds``, an
        unknown kind or field, ``out`` or ``progress``, a field in both tables, an axis that is not a
        non-empty list or repeats a value, ``seeds`` that is not a positive int or comes with a ``seed``
        field, a value the kind refuses (alone or in a combination: then the message names the cell), two
        cells with the same configuration, more than ``MAX_CELLS`` cells.
    """
    source = str(source)
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a sweep spec must be a table, got {type(data).__name__}")
    extra = sorted(set(data) - {"base", "axes", "kind", "seeds"}, key=str)
    if extra:
        raise ValueError(f"{source}: unknown table(s) or key(s) {extra}; a sweep spec has [base] (TrainConfig "
                         f"fields shared by every cell) and [axes] (a list of values per field), and optionally "
                         f"kind = \"train\" | \"study:NAME\" and seeds = N")
    try:
        kind = cell_kind(data.get("kind", "train"), f"{source}: kind")
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    base, axes = data.get("base", {}), data.get("axes", {})
    for name, table in (("base", base), ("axes", axes)):
        if not isinstance(table, dict):
            raise ValueError(f"{source}: {name} must be a table ([{name}]), got {type(table).__name__}")
        for key in table:
            _check_field(source, f"{name}.{key}", key, kind)
    both = sorted(set(base) & set(axes))
    if both:
        raise ValueError(f"{source}: axes.{both[0]}: {both[0]} is given in both [base] and [axes]; keep one")
    if "seeds" in data:
        axes = _seed_axis(source, data["seeds"], base, axes)
    _canonical_as(kind, base, f"{source}: base")
    for key, values in axes.items():
        where = f"{source}: axes.{key}"
        if not isinstance(values, list):
            raise ValueError(f"{where} must be a list of values (one per cell), got {type(values).__name__} "
                             f"{values!r}")
        if not values:
            raise ValueError(f"{where} is empty; an axis needs at least one value")
        seen = []
        for i, value in enumerate(values):
            if key in kind.sequence_fields and not isinstance(value, list):
                example = "[[8], [16, 8]]" if key == "hidden" else '[[], ["so:1e-3"]]'
                raise ValueError(f"{where}[{i}] must be a list: each entry of this axis is one cell's whole "
                                 f"{key} (e.g. {key} = {example}), got {value!r}")
            canonical = _canonical_as(kind, dict(base, **{key: value}), f"{where}[{i}]")[key]
            if canonical in seen:
                raise ValueError(f"{where}[{i}] repeats the value {value!r} (axes.{key}[{seen.index(canonical)}])")
            seen.append(canonical)
    sizes = [len(v) for v in axes.values()]
    if math.prod(sizes) > MAX_CELLS:
        raise ValueError(f"{source}: the axes make {math.prod(sizes)} cells ({' x '.join(map(str, sizes))}), more "
                         f"than {MAX_CELLS}")
    cells, ids = [], {}
    for combo in itertools.product(*axes.values()):
        values = dict(zip(axes, combo))
        desc = " ".join(f"{k}={_shown_value(v)}" for k, v in values.items())
        config = _canonical_as(kind, dict(base, **values), f"{source}: cell {desc}" if desc else f"{source}: base")
        cid = _hash(kind.name, config)
        if cid in ids:
            raise ValueError(f"{source}: cells {ids[cid]} and {desc} have the same configuration")
        ids[cid] = desc
        cells.append(Cell(cid, config, values, kind.name))
    return Spec(source, str(text), dict(base), dict(axes), tuple(cells), kind.name)


def _canonical_as(kind, config, who):
    try:
        return kind.canonical(config, who)
    except TypeError as exc:                   # a value of the wrong type: a bad spec like any other
        raise ValueError(_prefixed(who, exc)) from None


def _seed_axis(source, seeds, base, axes):
    """``axes`` with the last axis ``seed = [0, ..., seeds - 1]`` (``seeds = N`` of a spec)."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_CELLS:
        raise ValueError(f"{source}: seeds must be a positive int N (the axis seed = [0, ..., N-1]), got "
                         f"{type(seeds).__name__} {seeds!r}")
    if "seed" in base or "seed" in axes:
        table = "base" if "seed" in base else "axes"
        raise ValueError(f"{source}: {table}.seed: the seeds are given by seeds = {seeds}; remove {table}.seed "
                         f"(or seeds)")
    return dict(axes, seed=list(range(seeds)))


def _check_field(source, where, key, kind):
    if kind.name == "train" and key in SWEEP_FIELDS:
        raise ValueError(f"{source}: {where}: {key} is set by the sweep (the cell's folder DIR/cells/<id>, no "
                         f"progress bars); remove it")
    if key not in kind.fields:
        what = "TrainConfig fields" if kind.name == "train" else f"the fields of {kind.name} cells"
        raise ValueError(f"{source}: {where}: unknown field {key!r}; {what}: {', '.join(kind.fields)}")


def _shown_value(v):
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v)) if v else "[]"
    return str(v)


# ---------------------------------------------------------------------------------------------------------
# One cell

def _versions():
    from . import __version__
    return __version__, np.__version__


def _worker_address():
    try:
        from distributed import get_worker
        return get_worker().address
    except (ImportError, ValueError):
        return "in-process"


def _checkpoint_config(path):
    """``(config, epoch)`` declared by the checkpoint ``path``'s ``meta`` (nothing else is read)."""
    with read_npz(path) as z:
        if "meta" not in z.members:
            raise CheckpointError(f"{path}: not an orthoref checkpoint (no 'meta' entry)")
        meta = read_json(path, z.members["meta"], "meta")
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) or "epoch" not in meta:
        raise CheckpointError(f"{path}: meta must hold the configuration and the epoch")
    return meta["config"], meta["epoch"]


def fit_cell(config, cell_dir):
    """Train the ``TrainConfig`` fields ``config`` with ``cell_dir`` as the run folder, resuming from
    ``cell_dir/checkpoint.npz`` when it exists (bit-identical to an uninterrupted run).

    The training of a ``train`` cell, and of the study cells that train a model (their cell functions call
    it, so they resume too).

    Parameters
    ----------
    config : TrainConfig or dict
        As :func:`cell_config` takes it.
    cell_dir : str or os.PathLike
        The run folder (created when missing; claimed while training).

    Returns
    -------
    tuple
        ``(result, resumed_from)``: what :func:`orthoref.train.fit` returned (``history``, ``model``,
        ``config``) and the checkpoint's epoch the training started from (0: from scratch).

    Raises
    ------
    orthoref.train.CheckpointError
        ``cell_dir`` holds a checkpoint of another configuration.
    TypeError, ValueError, orthoref.train.DivergenceError, OSError, orthoref.RunDirBusy
        As :func:`orthoref.train.fit`.
    """
    who = "fit_cell"
    config = cell_config(config, who)
    cell_dir = _cell_folder(who, cell_dir)
    ckpt = os.path.join(cell_dir, "checkpoint.npz")
    if not os.path.exists(ckpt):
        return fit(TrainConfig(**config, out=cell_dir, progress=False), log=None), 0
    saved, epoch = _checkpoint_config(ckpt)
    cid = _hash("train", config)
    try:
        saved_id = cell_id({k: v for k, v in saved.items() if k not in SWEEP_FIELDS})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{ckpt}: its configuration is not a cell's: {exc}") from None
    if saved_id != cid:
        raise CheckpointError(f"{ckpt}: a checkpoint of cell {saved_id}, not of this cell {cid}; remove "
                              f"the folder {cell_dir} to train the cell from scratch")
    return fit(resume=ckpt, out=cell_dir, progress=False, log=None), int(epoch)


def _cell_folder(who, cell_dir):
    if isinstance(cell_dir, bool) or not isinstance(cell_dir, (str, os.PathLike)):
        raise TypeError(f"{who}: cell_dir must be a folder path, got {type(cell_dir).__name__} {cell_dir!r}")
    cell_dir = os.fspath(cell_dir)
    if not cell_dir:
        raise ValueError(f"{who}: cell_dir must be a folder path, got ''")
    return cell_dir


def _train_run(config, cell_dir):
    result, resumed_from = fit_cell(config, cell_dir)
    last = result["history"][-1]
    return {"epoch": int(last["epoch"]), **{m: float(last[m]) for m in METRICS}, "resumed_from": resumed_from}


def _train_summary(result):
    return f"test_acc {result['test_acc']:.4f}  loss {result['loss']:.4f}"


def _plain(value):
    """``value`` with NumPy scalars and arrays made Python numbers and lists, tuples made lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return value


def run_cell(config, cell_dir, *, threads=1, kind="train"):
    """Compute one cell in this process (no Dask): train it (``kind="train"``, resuming from
    ``cell_dir/checkpoint.npz`` when it exists) or call the cell function of its kind.

    What every sweep task runs, and the serial reference a distributed result is compared with: the
    result is the same whether the cell ran here, on a worker, or was interrupted and resumed (timings
    aside).

    Parameters
    ----------
    config : TrainConfig or dict
        The cell's configuration (see :func:`cell_config`; ``out``/``progress`` of a ``TrainConfig`` are
        ignored), or a dict of the fields of ``kind``.
    cell_dir : str or os.PathLike
        The cell's folder (created when missing).
    threads : int
        BLAS threads while computing (``threadpoolctl``), 1 by default.
    kind : str
        The kind of cell (:func:`kinds`), ``"train"`` by default.

    Returns
    -------
    dict
        ``cell_id``, ``kind``, ``status`` ("done"), ``epoch`` (the last), ``test_acc``, ``loss``, ``train_acc``
        (that epoch's; None for other kinds), ``result`` (what the cell function returned, as
        ``results.sqlite`` stores it: strict JSON types, NaN as None), ``seconds`` (wall-clock),
        ``resumed_from`` (the checkpoint's epoch or step; 0: from scratch), ``worker`` (the Dask worker's
        address, or "in-process"), ``blas_threads`` (in effect, or None without a BLAS library threadpoolctl
        knows), ``orthoref_version``, ``numpy_version``, ``error`` (None).

    Raises
    ------
    TypeError, ValueError
        A bad argument; a checkpoint in ``cell_dir`` of another configuration
        (:class:`~orthoref.train.CheckpointError`).
    ImportError
        ``threadpoolctl`` is missing.
    orthoref.train.DivergenceError, OSError, orthoref.RunDirBusy
        As :func:`orthoref.train.fit` (or the kind's cell function).
    """
    who = "run_cell"
    spec = cell_kind(kind, who)
    config = spec.canonical(config, who)
    cell_dir = _cell_folder(who, cell_dir)
    threads = check_int(who, "threads", threads, 1, 4096)
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        raise ImportError(f"{who}: limiting the BLAS threads needs threadpoolctl ({_INSTALL})") from None
    cid = _hash(spec.name, config)
    t0 = time.perf_counter()
    with threadpool_limits(limits=threads):
        pools = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
        if spec.name != "train":
            os.makedirs(cell_dir, exist_ok=True)
        result = spec.run(config, cell_dir)
    if not isinstance(result, dict):
        raise TypeError(f"{who}: the cell function of {spec.name} must return a dict, got {type(result).__name__}")
    result = json.loads(strict_json(_plain(result)))       # what results.sqlite will hold, exactly
    resumed_from = result.pop("resumed_from", 0) or 0
    version, np_version = _versions()
    metrics = {m: result[m] if spec.name == "train" else None for m in ("epoch",) + METRICS}
    return {"cell_id": cid, "kind": spec.name, "status": "done", **metrics, "result": result,
            "seconds": time.perf_counter() - t0, "resumed_from": int(resumed_from), "worker": _worker_address(),
            "blas_threads": max(pools) if pools else None, "orthoref_version": version,
            "numpy_version": np_version, "error": None}


#: Failures that would happen again on any worker: recorded at once, not retried.
_DETERMINISTIC = (TypeError, ValueError, DivergenceError)


def _failed(cid, kind, exc, seconds=None, worker=None):
    version, np_version = _versions()
    text = f"{type(exc).__name__}: {exc}".strip()
    return {"cell_id": cid, "kind": kind, "status": "failed", "epoch": None, **{m: None for m in METRICS},
            "result": None, "seconds": seconds, "resumed_from": None, "worker": worker, "blas_threads": None,
            "orthoref_version": version, "numpy_version": np_version, "error": text}


def _task(cid, kind, config, cell_dir, threads, catch=_DETERMINISTIC):
    """The Dask task of one cell: :func:`run_cell`, with a deterministic failure returned as a failed row
    (any other exception propagates, for Dask to retry)."""
    t0 = time.perf_counter()
    try:
        return run_cell(config, cell_dir, threads=threads, kind=kind)
    except catch as exc:
        return _failed(cid, kind, exc, time.perf_counter() - t0, _worker_address())


register_kind(CellKind("train", tuple(_config_fields()), _SEQUENCE_FIELDS, cell_config, _train_run, _train_summary,
                       lambda rows: _train_report(rows), lambda rep: _format_train_report(rep)))


# ---------------------------------------------------------------------------------------------------------
# results.sqlite

def _utc_now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class _Results:
    """``DIR/results.sqlite``: opened (created with the schema when missing) and checked; a file of the first
    schema is read as ``train`` cells, and upgraded in place when opened for writing."""

    def __init__(self, path, create):
        self.path = path
        self.names = [n for n, _ in RESULT_COLUMNS]
        if not create and not os.path.isfile(path):
            raise FileNotFoundError(2, f"no sweep results here (run orthoref sweep SPEC --out "
                                       f"{os.path.dirname(path) or '.'} first)", path)
        try:
            if create:
                self.db = sqlite3.connect(path, timeout=60)
            else:
                self.db = sqlite3.connect(f"file:{_uri_path(path)}?mode=ro", uri=True, timeout=60)
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if create and not tables:
                with self.db:
                    self.db.execute(f"CREATE TABLE cells ({', '.join(f'{n} {t}' for n, t in RESULT_COLUMNS)})")
                    self.db.execute(f"CREATE TABLE runs ({', '.join(f'{n} {t}' for n, t in _RUN_COLUMNS)})")
                    self.db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
                return
            columns = [r[1] for r in self.db.execute("PRAGMA table_info(cells)")]
            if version == 1 and tuple(columns) == _V1_COLUMNS:
                if create:
                    with self.db:
                        for name, kind in RESULT_COLUMNS[len(_V1_COLUMNS):]:
                            self.db.execute(f"ALTER TABLE cells ADD COLUMN {name} {kind}")
                        self.db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
                    return
                self.names = list(_V1_COLUMNS)
                return
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{path}: not a sweep results file ({exc})") from None
        except sqlite3.Error as exc:
            raise OSError(f"{path}: {exc}") from None
        if version != _SCHEMA_VERSION or columns != [n for n, _ in RESULT_COLUMNS]:
            self.close()
            raise ValueError(f"{path}: not a sweep results file of this orthoref (schema {version}, table cells "
                             f"with columns {columns}; expected schema {_SCHEMA_VERSION} with "
                             f"{[n for n, _ in RESULT_COLUMNS]})")

    def _do(self, sql, args=()):
        try:
            with self.db:                       # one committed transaction
                return self.db.execute(sql, args)
        except sqlite3.Error as exc:
            raise OSError(f"{self.path}: {exc}") from None

    def record(self, row):
        row = dict(row, finished=_utc_now())
        if row.get("result") is not None:
            row["result"] = strict_json(row["result"])
        names = [n for n, _ in RESULT_COLUMNS]
        self._do(f"INSERT OR REPLACE INTO cells ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                 [row.get(n) for n in names])

    def _query(self, sql):
        try:
            return self.db.execute(sql).fetchall()
        except sqlite3.Error as exc:
            raise OSError(f"{self.path}: {exc}") from None

    def statuses(self):
        return dict(self._query("SELECT cell_id, status FROM cells"))

    def kinds(self):
        """The kinds of the cells recorded (``train`` for a file of the first schema)."""
        if "kind" not in self.names:
            return {"train"} if self._query("SELECT COUNT(*) FROM cells")[0][0] else set()
        return {r[0] for r in self._query("SELECT DISTINCT kind FROM cells")}

    def rows(self):
        found = self._query(f"SELECT {', '.join(self.names)} FROM cells ORDER BY finished, cell_id")
        return [dict({"kind": "train", "result": None}, **dict(zip(self.names, r))) for r in found]

    def start_run(self, **values):
        cur = self._do(f"INSERT INTO runs ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                       list(values.values()))
        return cur.lastrowid

    def end_run(self, run, **values):
        self._do(f"UPDATE runs SET {', '.join(f'{k} = ?' for k in values)} WHERE run = ?",
                 list(values.values()) + [run])

    def close(self):
        self.db.close()


def _uri_path(path):
    from urllib.parse import quote
    return quote(os.path.abspath(path))


def read_results(out):
    """The rows of ``out/results.sqlite``, one dict per cell (keys: :data:`RESULT_COLUMNS`), ``config`` and
    ``result`` parsed from their JSON.

    Parameters
    ----------
    out : str or os.PathLike
        A sweep's folder (``--out``).

    Returns
    -------
    list of dict

    Raises
    ------
    TypeError
        ``out`` is not a path.
    FileNotFoundError
        No ``results.sqlite`` in ``out``.
    ValueError
        The file is not a sweep results file (naming it).
    """
    out = _folder("read_results", out)
    results = _Results(os.path.join(out, RESULTS_NAME), create=False)
    try:
        rows = results.rows()
    finally:
        results.close()
    for row in rows:
        try:
            row["config"] = json.loads(row["config"])
        except ValueError:
            raise ValueError(f"{results.path}: cell {row['cell_id']}: config is not JSON") from None
        if not isinstance(row["config"], dict):
            raise ValueError(f"{results.path}: cell {row['cell_id']}: config is not a JSON object")
        if row["result"] is not None:
            try:
                row["result"] = loads_strict(row["result"])
            except ValueError as exc:
                raise ValueError(f"{results.path}: cell {row['cell_id']}: result is not strict JSON: {exc}") \
                    from None
    return rows


def _folder(who, out):
    if isinstance(out, bool) or not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"{who}: out must be a folder path, got {type(out).__name__} {out!r}")
    out = os.fspath(out)
    if not out:
        raise ValueError(f"{who}: out must be a folder path, got ''")
    return out


# ---------------------------------------------------------------------------------------------------------
# The sweep

def run_sweep(spec, out, *, scheduler=None, workers=2, threads_per_worker=1, retries=2, progress=True,
              log=print, dashboard_address=":8787", stop_on_failure=False):
    """Run every cell of ``spec`` that ``out/results.sqlite`` does not hold as done, on Dask.

    Parameters
    ----------
    spec : str, os.PathLike or Spec
        A TOML spec file (:func:`load_spec`) or a parsed :class:`Spec`.
    out : str or os.PathLike
        The sweep's folder: ``results.sqlite`` and ``cells/<id>/`` (created when missing; claimed with a lock
        file, so two sweeps cannot write it at once).
    scheduler : str, distributed.Client, a Dask cluster object or None
        An existing scheduler's address (``tcp://host:8786``), a connected ``Client`` or a cluster object
        (``SLURMCluster``, ``KubeCluster``, ...); None starts a ``LocalCluster`` of ``workers`` processes.
    workers : int
        Worker processes of the ``LocalCluster`` (default 2; each runs one cell at a time). ``0`` runs the
        cells one after the other in this process, without Dask.
    threads_per_worker : int
        BLAS threads of every cell (default 1).
    retries : int
        How often Dask retries a cell whose task raised an exception other than ``TypeError``,
        ``ValueError`` or ``DivergenceError`` (default 2). A worker's death is not counted here: the
        scheduler reruns the cell elsewhere.
    progress : bool
        A bar of the cells on a terminal (stderr).
    log : callable or None
        Where the lines about the sweep and each finished cell go (default ``print``).
    dashboard_address : str or None
        Of the ``LocalCluster``'s dashboard (default ``:8787``; ``:0`` picks a free port).
    stop_on_failure : bool
        Stop at the first cell that fails instead of recording it and going on: in this process
        (``workers=0``) the cell's own exception propagates (what ``orthoref study`` wants); on Dask a
        ``ValueError`` naming the cell and its error (the failed row is recorded first). Default False.

    Returns
    -------
    dict
        ``cells`` (in the spec), ``skipped`` (already done), ``computed``, ``done`` and ``failed`` (of those
        computed), ``failed_cells`` (their ids), ``results`` (the path of ``results.sqlite``), ``dashboard``
        (the link, or None).

    Raises
    ------
    TypeError, ValueError
        A bad argument or spec (before anything runs); ``out`` holding cells of another kind.
    ImportError
        Dask's ``distributed`` or ``threadpoolctl`` missing.
    orthoref.RunDirBusy
        Another sweep holds ``out``.
    orthoref.RunInterrupted
        SIGINT (Ctrl-C) or SIGTERM: the finished cells are recorded, the cluster is shut down, and the same
        call later goes on where this one stopped.
    """
    who = "run_sweep"
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    out = _folder(who, out)
    workers = check_int(who, "workers", workers, 0, 10_000)
    threads = check_int(who, "threads_per_worker", threads_per_worker, 1, 4096)
    retries = check_int(who, "retries", retries, 0, 100)
    progress = check_bool(who, "progress", progress)
    stop_on_failure = check_bool(who, "stop_on_failure", stop_on_failure)
    if log is not None and not callable(log):
        raise TypeError(f"{who}: log must be callable or None, got {log!r}")
    if scheduler is not None and not isinstance(scheduler, str) and not hasattr(scheduler, "scheduler_address") \
            and not hasattr(scheduler, "submit"):
        raise TypeError(f"{who}: scheduler must be an address (tcp://host:port), a distributed.Client, a Dask "
                        f"cluster or None, got {type(scheduler).__name__}")
    if isinstance(scheduler, str) and not scheduler.strip():
        raise ValueError(f"{who}: scheduler must be an address like tcp://host:8786, got ''")
    if dashboard_address is not None and not isinstance(dashboard_address, str):
        raise TypeError(f"{who}: dashboard_address must be a string like ':8787' or None, got "
                        f"{dashboard_address!r}")
    try:
        import threadpoolctl  # noqa: F401  (run_cell needs it; say so before starting anything)
    except ImportError:
        raise ImportError(f"{who}: limiting each cell's BLAS threads needs threadpoolctl ({_INSTALL})") from None
    if scheduler is not None or workers > 0:
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise ImportError(f"{who}: running cells on Dask needs dask.distributed ({_INSTALL}); or run them "
                              f"one after the other in this process with workers=0 (--workers 0)") from None
    say = log or (lambda text: None)
    out_abs = os.path.abspath(out)
    with interruptible():
        claim = claim_run_dir(out_abs, who="orthoref sweep")
        try:
            results = _Results(os.path.join(out_abs, RESULTS_NAME), create=True)
            try:
                held = results.kinds() - {spec.kind}
                if held:
                    raise ValueError(f"{who}: {out_abs} holds cells of kind {', '.join(sorted(held))}, and the "
                                     f"cells of {spec.source} are of kind {spec.kind}; give this sweep a folder "
                                     f"of its own")
                return _sweep(spec, out_abs, results, scheduler, workers, threads, retries, progress, say,
                              dashboard_address, stop_on_failure)
            finally:
                results.close()
        finally:
            claim.release()


def _cluster_text(scheduler, workers, threads):
    if scheduler is None and workers == 0:
        return f"this process (no Dask), {threads} BLAS thread{'s' * (threads > 1)}"
    if scheduler is None:
        return f"a LocalCluster of {workers} worker{'s' * (workers > 1)} x {threads} BLAS thread{'s' * (threads > 1)}"
    address = scheduler if isinstance(scheduler, str) else getattr(scheduler, "scheduler_address", None) \
        or type(scheduler).__name__
    return f"the scheduler at {address}, {threads} BLAS thread{'s' * (threads > 1)} per cell"


def _sweep(spec, out, results, scheduler, workers, threads, retries, progress, say, dashboard_address,
           stop_on_failure):
    statuses = results.statuses()
    todo = [c for c in spec.cells if statuses.get(c.id) != "done"]
    cluster_text = _cluster_text(scheduler, workers, threads)
    n_cells = len(spec.cells)
    say(f"sweep {spec.source}: {n_cells} cell{'s' * (n_cells != 1)}, {n_cells - len(todo)} already done, "
        f"{len(todo)} to compute on {cluster_text}; results in {os.path.join(out, RESULTS_NAME)}")
    run = results.start_run(started=_utc_now(), spec=spec.source, spec_text=spec.text, cluster=cluster_text,
                            threads_per_worker=threads, cells=n_cells, computed=0, done=0, failed=0,
                            status="running")
    tally = {"computed": 0, "done": 0, "failed": 0, "failed_cells": [], "dashboard": None}
    status = "error"
    try:
        if todo:
            bar = Progress(len(todo), "sweep", progress, unit="cell")
            try:
                record = _recorder(results, bar, say, tally, len(todo))
                if scheduler is None and workers == 0:
                    catch = () if stop_on_failure else Exception
                    for cell in todo:
                        record(cell, _task(cell.id, cell.kind, cell.config, _cell_dir(out, cell), threads, catch))
                else:
                    _on_dask(todo, out, scheduler, workers, threads, retries, say, record, tally, dashboard_address,
                             stop_on_failure)
            finally:
                bar.close()
        status = "completed"
    except KeyboardInterrupt as exc:
        status = "interrupted"
        left = len(todo) - tally["computed"]
        raise RunInterrupted(getattr(exc, "signum", 2),
                             f"interrupted: {tally['computed']} of {len(todo)} cells recorded in "
                             f"{os.path.join(out, RESULTS_NAME)}, {left} left; run the same command again to "
                             f"compute them (cells resume from their checkpoints)") from None
    finally:
        try:
            results.end_run(run, finished=_utc_now(), computed=tally["computed"], done=tally["done"],
                            failed=tally["failed"], status=status)
        except OSError:
            pass
    say(f"sweep {spec.source}: {tally['done']} done, {tally['failed']} failed, {n_cells - len(todo)} already done "
        f"before; results in {os.path.join(out, RESULTS_NAME)}")
    return {"cells": n_cells, "skipped": n_cells - len(todo), "computed": tally["computed"], "done": tally["done"],
            "failed": tally["failed"], "failed_cells": tally["failed_cells"],
            "results": os.path.join(out, RESULTS_NAME), "dashboard": tally["dashboard"]}


def _cell_dir(out, cell):
    return os.path.join(out, "cells", cell.id)


def _recorder(results, bar, say, tally, total):
    def write(text):
        if bar.bar is not None:
            bar.bar.write(text)
        else:
            say(text)

    def record(cell, row):
        row = dict(row, cell_id=cell.id, kind=cell.kind, config=_canonical(cell.config))
        results.record(row)
        tally["computed"] += 1
        tally[row["status"]] += 1
        if row["status"] == "failed":
            tally["failed_cells"].append(cell.id)
            first = (row["error"] or "").splitlines()[0] if row["error"] else ""
            write(f"[{tally['computed']}/{total}] {cell.id} FAILED  {cell.describe()}: {first[:300]}")
        else:
            resumed = ("" if not row["resumed_from"] else
                       f", resumed from its checkpoint at {row['resumed_from']}" if cell.kind != "train" else
                       ", trained before (read from its checkpoint)" if row["resumed_from"] == row["epoch"] else
                       f", resumed at epoch {row['resumed_from']}")
            summary = cell_kind(cell.kind, "run_sweep").summary(row["result"])
            write(f"[{tally['computed']}/{total}] {cell.id} done  {cell.describe()}  {summary}  "
                  f"{row['seconds']:.1f}s  {row['worker']}{resumed}")
        bar.update(done=tally["done"], failed=tally["failed"])
    return record


def _on_dask(todo, out, scheduler, workers, threads, retries, say, record, tally, dashboard_address,
             stop_on_failure):
    import dask
    from distributed import Client, LocalCluster, as_completed

    cluster = client = None
    futures = []
    try:
        if scheduler is None:
            blas = {f"distributed.nanny.pre-spawn-environ.{name}": threads
                    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
            with dask.config.set(blas), warnings.catch_warnings(), _workers_ignore_sigint():
                warnings.simplefilter("ignore")         # "Port 8787 is already in use", no bokeh, ...
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=dashboard_address, silence_logs=logging.ERROR)
            client = Client(cluster)
        elif isinstance(scheduler, str) or hasattr(scheduler, "scheduler_address"):
            client = Client(scheduler)
        else:
            client = scheduler
        tally["dashboard"] = _dashboard(client)
        if tally["dashboard"]:
            say(f"dashboard: {tally['dashboard']}")
        token = hashlib.sha256(f"{out}-{time.time_ns()}-{os.getpid()}".encode()).hexdigest()[:8]
        by_key = {}
        for cell in todo:
            fut = client.submit(_task, cell.id, cell.kind, cell.config, _cell_dir(out, cell), threads,
                                key=f"cell-{cell.id}-{token}", retries=retries, pure=False)
            by_key[fut.key] = cell
            futures.append(fut)
        for fut in as_completed(futures):
            cell = by_key[fut.key]
            try:
                row = fut.result()
            except Exception as exc:                 # KilledWorker, an exception retried `retries` times
                row = _failed(cell.id, cell.kind, exc)
            record(cell, row)
            if stop_on_failure and row["status"] == "failed":
                raise ValueError(f"run_sweep: cell {cell.id} ({cell.describe()}) failed: {row['error']}")
    finally:
        with contextlib.suppress(Exception):      # shutting down after Ctrl-C: not the user's concern
            if client is not None and futures:
                client.cancel(futures)
            if client is not None and client is not scheduler:
                client.close()
            if cluster is not None:
                cluster.close()


@contextlib.contextmanager
def _workers_ignore_sigint():
    """While the ``LocalCluster`` spawns its workers, SIGINT is ignored, a disposition the worker processes
    inherit: Ctrl-C in a terminal (sent to the whole process group) then stops the client alone, which shuts
    the cluster down in order, instead of every worker printing its own traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


def _dashboard(client):
    try:
        link = client.dashboard_link
    except Exception:                               # no dashboard service on that scheduler
        return None
    if not link:
        return None
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return f"{link} (needs bokeh>=3.1 where the scheduler runs: pip install bokeh)"
    return link


# ---------------------------------------------------------------------------------------------------------
# The report

def mean_ci(values):
    """Mean, spread and 95% confidence interval of the mean of ``values`` (one per seed).

    Parameters
    ----------
    values : sequence of float
        None entries (NaN in ``results.sqlite``) count as NaN.

    Returns
    -------
    dict
        ``n``, ``mean``, ``std`` (ddof=1), ``ci_low``, ``ci_high`` (the mean ∓ t₀.₉₇₅,ₙ₋₁ · std/√n, Student's t with
        n − 1 degrees of freedom); NaN where n is too small (std and the interval need two values).
    """
    from scipy import stats
    a = np.asarray([math.nan if v is None else v for v in values], dtype=np.float64)
    n = len(a)
    out = {"n": n, "mean": math.nan, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    if n == 0:
        return out
    out["mean"] = float(a.mean())
    if n == 1:
        return out
    std = float(a.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return dict(out, std=std, ci_low=out["mean"] - half, ci_high=out["mean"] + half)


def _sort_key(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, json.dumps(value, sort_keys=True))


def seed_groups(rows):
    """The rows of :func:`read_results` grouped over seeds: one group per configuration but the seed.

    Parameters
    ----------
    rows : list of dict
        As :func:`read_results` returns them.

    Returns
    -------
    tuple
        ``(axes, groups)``: ``axes`` lists the fields that differ between cells, seed left out (sorted);
        ``groups`` one dict per group, sorted by those fields, with ``values`` (``{field: value}`` over
        ``axes``), ``config`` (the configuration of its first cell, ``seed`` left out), ``done`` (its done
        rows, by seed), ``n`` (their number), ``failed`` (failed cells), ``seeds`` (of the done cells) and
        ``cells`` (every cell id).
    """
    keys = sorted({k for r in rows for k in r["config"]})
    varying = [k for k in keys if k != "seed"
               and len({json.dumps(r["config"].get(k), sort_keys=True) for r in rows}) > 1]
    by_config = {}
    for r in rows:
        key = json.dumps({k: v for k, v in r["config"].items() if k != "seed"}, sort_keys=True)
        by_config.setdefault(key, []).append(r)
    groups = []
    for members in by_config.values():
        done = sorted((r for r in members if r["status"] == "done"), key=lambda r: _sort_key(r["config"].get("seed")))
        groups.append({"values": {k: members[0]["config"].get(k) for k in varying},
                       "config": {k: v for k, v in members[0]["config"].items() if k != "seed"},
                       "done": done, "n": len(done), "failed": len(members) - len(done),
                       "seeds": [r["config"].get("seed") for r in done],
                       "cells": sorted(r["cell_id"] for r in members)})
    groups.sort(key=lambda g: [_sort_key(g["values"][k]) for k in varying])
    return varying, groups


def report(out):
    """Aggregate a sweep's cells over seeds: one group per configuration but the seed.

    Parameters
    ----------
    out : str or os.PathLike
        The sweep's folder.

    Returns
    -------
    dict
        For ``train`` cells: ``kind`` ("train"), ``axes``: the fields that differ between cells, seed left
        out (the group columns); ``groups``: one dict per group, sorted by those fields, with ``values``
        (``{field: value}`` over ``axes``), ``n`` (done cells), ``failed`` (failed cells), ``seeds`` (of the
        done cells), ``cells`` (every cell id) and, per metric of ``test_acc``, ``loss``, ``train_acc``, a
        dict ``mean``, ``std`` (ddof=1), ``ci_low``, ``ci_high`` (95% interval of the mean, Student's t with
        ``n - 1`` degrees of freedom; NaN below two cells: :func:`mean_ci`). For another kind, what its
        ``report`` returns (a study's tables: :mod:`orthoref.studies`), with ``kind`` and ``groups``.

    Raises
    ------
    FileNotFoundError, ValueError, TypeError
        As :func:`read_results`; ``ValueError`` for a folder holding cells of several kinds or of a kind
        not registered.
    """
    rows = read_results(out)
    held = sorted({r["kind"] for r in rows})
    if len(held) > 1:
        raise ValueError(f"report: {os.fspath(out)} holds cells of several kinds ({', '.join(held)}); a report "
                         f"aggregates one")
    return cell_kind(held[0] if held else "train", "report").report(rows)


def _train_report(rows):
    varying, groups = seed_groups(rows)
    result = []
    for g in groups:
        group = {k: g[k] for k in ("values", "n", "failed", "seeds", "cells")}
        for m in METRICS:
            group[m] = {k: v for k, v in mean_ci([r[m] for r in g["done"]]).items() if k != "n"}
        result.append(group)
    return {"kind": "train", "axes": varying, "groups": result}


def _num(x, fmt=".4f"):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def format_report(rep):
    """The text of :func:`report`'s result. For ``train`` cells, a table with a row per group: its axis
    values, n, failed cells, test accuracy (mean, std, 95% CI), mean loss and mean train accuracy; for
    another kind, what its ``format`` writes (a study's tables).

    Parameters
    ----------
    rep : dict
        What :func:`report` returned.

    Returns
    -------
    str
    """
    if not isinstance(rep, dict) or "groups" not in rep:
        raise TypeError(f"format_report: rep must be the dict report() returns, got {type(rep).__name__}")
    return cell_kind(rep.get("kind", "train"), "format_report").format(rep)


def _format_train_report(rep):
    if "axes" not in rep:
        raise TypeError(f"format_report: rep must be the dict report() returns, got {type(rep).__name__}")
    head = list(rep["axes"]) + ["n", "failed", "test_acc", "std", "95% CI", "loss", "train_acc"]
    lines = []
    for g in rep["groups"]:
        t = g["test_acc"]
        ci = "-" if math.isnan(t["ci_low"]) else f"[{t['ci_low']:.4f}, {t['ci_high']:.4f}]"
        lines.append([_shown_value(g["values"][k]) for k in rep["axes"]]
                     + [str(g["n"]), str(g["failed"]), _num(t["mean"]), _num(t["std"]), ci,
                        _num(g["loss"]["mean"]), _num(g["train_acc"]["mean"])])
    widths = [max([len(h)] + [len(row[i]) for row in lines]) for i, h in enumerate(head)]
    text = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    text += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in lines]
    n_cells = sum(g["n"] + g["failed"] for g in rep["groups"])
    text.append(f"{len(rep['groups'])} group{'s' * (len(rep['groups']) != 1)} of {n_cells} cell"
                f"{'s' * (n_cells != 1)}; mean over seeds, std with ddof=1, 95% CI of the mean (Student's t)")
    return "\n".join(text)


def write_csv(out, path):
    """Write one CSV row per cell of the sweep ``out`` to ``path`` (atomically).

    Columns: ``cell_id``, ``status``, every configuration field (sequences as JSON), the metrics and the
    other columns of :data:`RESULT_COLUMNS` (``result`` as JSON), and ``config`` (the whole JSON).

    Parameters
    ----------
    out : str or os.PathLike
        The sweep's folder.
    path : str or os.PathLike
        The CSV file to write.

    Returns
    -------
    int
        The number of rows written.

    Raises
    ------
    FileNotFoundError, ValueError, TypeError
        As :func:`read_results`; ``TypeError`` for a ``path`` that is not one.
    OSError
        ``path`` cannot be written.
    """
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise TypeError(f"write_csv: path must be a file path, got {type(path).__name__} {path!r}")
    rows = read_results(out)
    order = []
    for kind in sorted({r["kind"] for r in rows}):
        with contextlib.suppress(ValueError):            # a kind not registered here: its fields sorted
            order += cell_kind(kind, "write_csv").fields
    fields_ = [k for k in dict.fromkeys(order or _config_fields()) if any(k in r["config"] for r in rows)]
    fields_ += sorted({k for r in rows for k in r["config"]} - set(fields_))
    rest = [n for n, _ in RESULT_COLUMNS if n not in ("cell_id", "status", "config")]
    header = ["cell_id", "status"] + fields_ + rest + ["config"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for r in rows:
        cfg = r["config"]
        writer.writerow([r["cell_id"], r["status"]]
                        + [json.dumps(cfg[k]) if isinstance(cfg.get(k), (list, dict)) else cfg.get(k, "")
                           for k in fields_]
                        + ["" if r[k] is None else strict_json(r[k]) if k == "result" else r[k] for k in rest]
                        + [_canonical(cfg)])

    def write(f):
        f.write(buf.getvalue().encode())
    atomic_write(os.fspath(path), write)
    return len(rows)

