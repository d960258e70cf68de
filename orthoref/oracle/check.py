"""``orthoref oracle check``: every registered op against PyTorch, JAX, CuPy or a fixture directory.

Each framework is a *runner* ``run(spec, inputs, kwargs, cotangents) -> (outputs, grads)`` evaluating the op
in the inputs' dtype; its results are compared with the float64 reference on the same inputs and cotangents,
against the op's tolerance for that dtype (:func:`orthoref.oracle.reference.tolerance`).

- ``torch``: the spec's PyTorch twin (library ops where PyTorch has them, our formula written in torch
  where it has not) and ``torch.autograd.grad``.
- ``jax``: the twin in :mod:`orthoref.oracle.jax_twins` and ``jax.vjp`` (float64 enabled).
- ``cupy``: orthoref itself on the GPU, against NumPy float64.
- a table ``{op name: fn}`` of someone's functions (a dict, or ``"MODULE:TABLE"`` naming one):
  :func:`orthoref.oracle.recording.table_runner`, in NumPy, PyTorch or JAX (``framework``); only the table's
  ops are checked, and a name the registry does not know is a failure.
"""
from __future__ import annotations

import os
import zlib
from collections.abc import Mapping

import numpy as np

from .._checks import check_int
from .registry import get
from .recording import load_table, selected, table_runner
from .reference import (CompareReport, cast_kwargs, check_patterns, error_budget, error_row, names, reference,
                        specs_matching, tolerance, unknown_op)

__all__ = ["RUNNERS", "check", "format_rows", "summary"]


def _torch_runner():
    try:
        import torch
    except ImportError:
        raise ImportError("--against torch needs PyTorch (pip install -e '.[torch]': the CPU build "
                          "torch==2.13.0)") from None

    def run(spec, inputs, kwargs, cotangents):
        if spec.torch is None:
            return None
        t_in = []
        for x in inputs:
            t = torch.from_numpy(np.array(x, copy=True))
            t_in.append(t.requires_grad_(True) if t.is_floating_point() else t)
        outs = spec.torch(*t_in, **kwargs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        diff = [t for t in t_in if t.requires_grad]
        cots = [torch.from_numpy(np.array(c)).to(o.dtype) for c, o in zip(cotangents, outs)]
        grads = iter(torch.autograd.grad(outs, diff, cots, allow_unused=True))
        return [o.detach().numpy() for o in outs], _scatter(t_in, grads, lambda g: g.numpy())
    return run


def _scatter(inputs, grads, convert):
    """One gradient per input from the gradients of the differentiable ones (zeros where unused)."""
    out = []
    for x in inputs:
        if not np.issubdtype(np.dtype(str(x.dtype).replace("torch.", "")), np.floating):
            out.append(None)
            continue
        g = next(grads)
        out.append(np.zeros(tuple(x.shape)) if g is None else convert(g))
    return out


def _jax_runner():
    from .jax_twins import JAX_TWINS, jax_available, value_and_vjp
    if not jax_available():
        raise ImportError("--against jax needs JAX (pip install -e '.[jax]')")

    def run(spec, inputs, kwargs, cotangents):
        if spec.name not in JAX_TWINS:
            return None
        return value_and_vjp(spec.name, inputs, kwargs, cotangents)
    return run


def _cupy_runner():
    from ..backend import asarray, cupy_available, to_numpy, using
    if not cupy_available():
        raise RuntimeError("--backend cupy needs CuPy and a GPU (pip install -e '.[gpu]')")

    def run(spec, inputs, kwargs, cotangents):
        with using("cupy"):
            dev = [asarray(x) for x in inputs]
            kw = {k: asarray(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
            outs, vjp = spec.apply(*dev, **kw)
            grads = vjp(tuple(asarray(c) for c in cotangents))
        return [to_numpy(o) for o in outs], [None if g is None else to_numpy(g) for g in grads]
    return run


RUNNERS = {"torch": _torch_runner, "jax": _jax_runner, "cupy": _cupy_runner}


def _compare_run(spec, index, sample, dtype, run):
    dt = np.dtype(dtype)
    inputs = tuple(x.astype(dt) if x.dtype.kind == "f" else x for x in sample.inputs)
    value, vjp = reference(spec.name, *inputs, **sample.kwargs)
    ours = value if isinstance(value, tuple) else (value,)
    gen = np.random.default_rng(zlib.crc32(f"{spec.name}/{index}/cotangent".encode()))
    cots = tuple(gen.standard_normal(np.shape(y)).astype(dt) for y in ours)
    theirs = run(spec, inputs, cast_kwargs(sample.kwargs, dt), cots)
    if theirs is None:
        return None
    t_out, t_grads = theirs
    tol = tolerance(spec, dt)
    report = CompareReport(spec.name, str(dt), note=sample.label)
    if len(t_out) != len(ours):
        report.note = f"{sample.label}: the twin returns {len(t_out)} output(s), the op {len(ours)}"
        report.rows.append(error_row("outputs", np.zeros(1), np.full(1, np.inf), tol))
        return report
    row = _verdict(spec, inputs, sample.kwargs, cots, dt, tol)
    for k, (o, t) in enumerate(zip(ours, t_out)):
        report.rows.append(row(f"value[{k}]", o, t))                # shapes must agree exactly
    for k, (g, t) in enumerate(zip(vjp(tuple(c.astype(np.float64) for c in cots)), t_grads)):
        if g is not None:
            report.rows.append(row(f"grad[{k}]", g, np.zeros_like(g) if t is None else t))
    return report


def _verdict(spec, inputs, kwargs, cots, dt, tol):
    """``row(what, ours, theirs)``: float64 against the op's fixed tolerance; float32 against the sample's
    condition-aware budget (:func:`orthoref.oracle.reference.error_budget`, never below ``tol``)."""
    if dt.itemsize >= 8:
        return lambda what, o, t: error_row(what, o, t, tol)
    return error_budget(spec, inputs, kwargs, cots).error_row


def check(against, ops="*", dtypes=("float64",), rng=0, framework=None):
    """Yield ``(spec_name, sample_label, report_or_None)``; ``None`` where the framework has no twin.

    ``against``: ``"torch"``, ``"jax"``, ``"cupy"``, a fixture directory (see
    :func:`orthoref.oracle.fixtures.check_dir`), or a table of someone's functions: a dict ``{op name: fn}``
    or ``"MODULE:TABLE"`` naming one (:mod:`orthoref.oracle.recording`), run in ``framework`` (``"numpy"``,
    the default, ``"torch"`` or ``"jax"``; only for a table), in ``dtypes`` (``None``: both). The arguments,
    and a fixture directory's ``manifest.json``, are checked when ``check`` is called, before anything is
    yielded: ``TypeError`` / ``ValueError`` naming the argument (or the manifest file and field); the CLI
    reports them with exit status 2. An op of a fixture or a table that is not registered (the note lists
    close names), a missing or corrupt fixture file, a crash of either framework: a failed row (exit
    status 1), never a skip.
    """
    who = "check"
    if not isinstance(against, (str, os.PathLike, Mapping)):
        raise TypeError(f"{who}: against must be one of {sorted(RUNNERS)}, a fixture directory or a table "
                        f"(MODULE:TABLE), got {type(against).__name__} {against!r}")
    check_patterns(ops, who, "ops")
    rng = check_int(who, "rng", rng, 0)
    table = isinstance(against, Mapping) or (against not in RUNNERS and not os.path.isdir(against)
                                             and ":" in os.fspath(against))
    if framework is not None and not table:
        raise ValueError(f"{who}: framework is for a table of functions (MODULE:TABLE), not {against!r}")
    if table:
        table = against if isinstance(against, Mapping) else load_table(os.fspath(against))
        run = table_runner(table, framework or "numpy")
        chosen = selected(table, ops, who)
        dtypes = ("float64", "float32") if dtypes is None else dtypes
    elif against not in RUNNERS:
        if not os.path.isdir(against):
            raise ValueError(f"{who}: against must be one of {sorted(RUNNERS)}, a fixture directory or a table "
                             f"MODULE:TABLE, got {against!r}")
        from .fixtures import check_dir
        reports = check_dir(against, ops=ops, dtypes=dtypes)
        return ((rep.name, os.path.basename(rep.note.split(":")[0]).rsplit(".", 2)[0], rep) for rep in reports)
    if isinstance(dtypes, str) or not isinstance(dtypes, (list, tuple)) or not dtypes \
            or any(d not in ("float64", "float32") for d in dtypes):
        raise ValueError(f"{who}: dtypes must be a non-empty list of 'float64' and/or 'float32', got {dtypes!r}")
    if table:
        return _check_table(run, chosen, dtypes, rng)
    return _check_framework(RUNNERS[against](), ops, dtypes, rng)


def _check_table(run, chosen, dtypes, rng):
    registered = set(names())
    for name in chosen:
        if name in registered:
            yield from _check_spec(get(name), run, dtypes, rng)
        else:
            rep = CompareReport(name, "-", note=f"table: {unknown_op(name)}")
            rep.rows.append(error_row("unknown", np.zeros(1), np.full(1, np.inf), 1.0))
            yield name, "-", rep


def _check_framework(run, ops, dtypes, rng):
    for spec in specs_matching(ops):
        yield from _check_spec(spec, run, dtypes, rng)


def _check_spec(spec, run, dtypes, rng):
    samples = spec.sample(np.random.default_rng(zlib.crc32(spec.name.encode()) + rng), np.float64)
    for index, sample in enumerate(samples):
        for dtype in dtypes:
            try:
                rep = _compare_run(spec, index, sample, dtype, run)
            except Exception as exc:  # a crash in either framework is a failure row, never swallowed
                rep = CompareReport(spec.name, dtype, note=f"{sample.label}: {type(exc).__name__}: {exc}")
                rep.rows.append(error_row("error", np.zeros(1), np.full(1, np.inf), tolerance(spec, dtype)))
            yield spec.name, sample.label, rep


def _worst(rep, prefix):
    vals = [r.max_rel for r in rep.rows if r.what.startswith(prefix)]
    return max(vals) if vals else None


def format_rows(rows, against):
    """The table printed by ``orthoref oracle check``."""
    head = (f"{'op':<26} {'sample':<16} {'dtype':<8} {'value rel.err':>13} {'grad rel.err':>12} "
            f"{'rtol':>7}  result")
    lines = [f"orthoref oracle check --against {against}", head, "-" * len(head)]
    for name, label, rep in rows:
        if rep is None:
            lines.append(f"{name:<26} {label[:16]:<16} {'':<8} {'':>13} {'':>12} {'':>7}  skip (no {against} twin)")
            continue
        v, g = _worst(rep, "value"), _worst(rep, "grad")
        fmt = (lambda e: "-" if e is None else f"{e:.1e}")
        tol = rep.rows[0].rtol if rep.rows else 0.0
        lines.append(f"{name:<26} {label[:16]:<16} {rep.dtype:<8} {fmt(v):>13} {fmt(g):>12} {tol:>7.0e}  "
                     f"{'PASS' if rep.passed else 'FAIL'}")
        if not rep.passed and (":" in rep.note):
            lines.append(f"    {rep.note}")
    return "\n".join(lines)


def summary(rows) -> dict:
    reports = [r for _, _, r in rows if r is not None]
    failed = [r for r in reports if not r.passed]
    return {"checked": len(reports), "failed": len(failed), "skipped": sum(r is None for _, _, r in rows),
            "ops": len({n for n, _, r in rows if r is not None}),
            "worst_rel_error": max((r.max_rel for r in reports), default=0.0)}
