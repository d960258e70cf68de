"""``orthoref compare-projections``: every orthogonalization of one input, side by side.

For a random ``n x n`` input with a spread of singular values (the same input for every method) it reports
each method's time (median of repeats), the orthogonality error ``‖QᵀQ − I‖_2`` and the distance
``‖Q − polar(A)‖_F / √n`` to the nearest orthogonal matrix.

Arguments are validated like everywhere else (``TypeError``/``ValueError`` naming the function and the
argument): ``n`` an int in ``[2, 4096]``, ``dtype`` float32 or float64, ``repeat`` an int in ``[1, 1000]``,
``rng`` None, an int >= 0 or a Generator, ``cond`` a finite number >= 1 (at most 1e12 for :func:`compare`,
whose float64 reference ``polar`` needs a numerically nonsingular input).
"""
from __future__ import annotations

import numbers
import statistics
import time
from collections.abc import Mapping

import numpy as np

from ..backend import host_rng
from .._checks import check_bool, check_int, check_real, float_dtype
from .._progress import progress as progress_bar

__all__ = ["compare", "format_table", "format_gram_schmidt_table", "mclip_table", "format_mclip_table",
           "sample_matrix"]

_MAX_N = 4096
_MAX_COND = 1e12
_MAX_REPEAT = 1000


def methods():
    """Name → ``f(A)`` of every orthogonalization the comparison times (polar, QR, Gram–Schmidt, Björck and
    Newton–Schulz with each coefficient set), in table order; not in ``__all__``."""
    from . import bjorck, gram_schmidt, newton_schulz, polar, qr_orthogonalize, NS_COEFFICIENTS
    out = {
        "polar (SVD)": polar,
        "qr_orthogonalize": qr_orthogonalize,
        "gram_schmidt cgs": lambda A: gram_schmidt(A, method="cgs"),
        "gram_schmidt mgs": lambda A: gram_schmidt(A, method="mgs"),
        "gram_schmidt cgs2": lambda A: gram_schmidt(A, method="cgs2"),
        "bjorck (15 steps)": bjorck,
    }
    for name, table in NS_COEFFICIENTS.items():
        out[f"newton_schulz {name} (5 steps)"] = (
            lambda name: lambda A: newton_schulz(A, coefficients=name))(name)
        if len(table) > 5:
            out[f"newton_schulz {name} ({len(table)} steps)"] = (
                lambda name: lambda A: newton_schulz(A, coefficients=name, steps=None))(name)
    return out


def _check_sample_args(who, n, dtype, rng, cond, max_cond=None):
    n = check_int(who, "n", n, 2, _MAX_N)
    dtype = float_dtype(who, dtype)
    cond = check_real(who, "cond", cond, 1.0, max_cond)
    return n, dtype, host_rng(rng, who=who), cond


def sample_matrix(n, dtype, rng=0, cond=1e3):
    """``U diag(s) Vᵀ`` with Haar U, V and singular values log-spaced from 1 down to 1/cond.

    ``n``: an int in ``[2, 4096]``; ``dtype``: float32 or float64; ``rng``: None, an int >= 0 or a
    Generator; ``cond``: a finite number >= 1. ``TypeError``/``ValueError`` naming the argument otherwise.
    """
    n, dtype, gen, cond = _check_sample_args("sample_matrix", n, dtype, rng, cond)
    return _sample_matrix(n, dtype, gen, cond)


def _sample_matrix(n, dtype, gen, cond):
    from scipy.stats import ortho_group
    u = ortho_group.rvs(n, random_state=gen)
    v = ortho_group.rvs(n, random_state=gen)
    s = np.geomspace(1.0, 1.0 / cond, n)
    return ((u * s) @ v.T).astype(dtype)


def compare(n=256, dtype="float32", repeat=3, rng=0, cond=1e3, progress=False):
    """One row per method: ``{"method", "seconds", "orthogonality", "to_polar", "note"}`` (errors in
    float64; a method that raises ``ValueError``, e.g. Gram–Schmidt declaring rank deficiency, gets
    ``None`` and the reason in ``note``). ``progress``: a bar on a terminal (stderr), one step per method.

    ``n`` an int in ``[2, 4096]``, ``dtype`` float32 or float64, ``repeat`` an int in ``[1, 1000]``, ``rng``
    None, an int >= 0 or a Generator, ``cond`` a finite number in ``[1, 1e12]``; ``TypeError``/
    ``ValueError`` naming the argument otherwise.
    """
    from . import polar
    who = "compare"
    n, dtype, gen, cond = _check_sample_args(who, n, dtype, rng, cond, _MAX_COND)
    repeat = check_int(who, "repeat", repeat, 1, _MAX_REPEAT)
    progress = check_bool(who, "progress", progress)
    A = _sample_matrix(n, dtype, gen, cond)
    reference = polar(A.astype(np.float64))
    rows = []
    for name, fn in progress_bar(methods().items(), desc="compare-projections", enabled=progress, unit="method"):
        try:
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                Q = fn(A)
                times.append(time.perf_counter() - t0)
        except ValueError as exc:                 # e.g. Gram–Schmidt declaring numerical rank deficiency
            rows.append({"method": name, "seconds": None, "orthogonality": None, "to_polar": None,
                         "note": str(exc).split(";")[0][:60]})
            continue
        Q64 = np.asarray(Q, dtype=np.float64)
        err = float(np.linalg.norm(Q64.T @ Q64 - np.eye(n), 2))
        dist = float(np.linalg.norm(Q64 - reference) / np.sqrt(n))
        rows.append({"method": name, "seconds": statistics.median(times), "orthogonality": err,
                     "to_polar": dist, "note": ""})
    return rows


def mclip_table(n=256, dtype="float32", repeat=3, rng=0, cond=1e3, steps=(4, 5, 6, 8)):
    """Singular-value clipping at 1 without an SVD, :func:`orthoref.ortho.mclip`, against the SVD route: one
    row per Newton–Schulz step count (Polar Express coefficients) and one for ``method="svd"``, ``{"method",
    "steps", "gemms", "seconds", "error"}``; ``error`` is ``max|mclip − clip_svd|`` in float64 against the
    float64 SVD route, ``gemms`` is ``6·steps + 2`` (``None`` for the SVD). The input is
    :func:`sample_matrix` times 2: singular values log-spaced in ``[2/cond, 2]``, half of them clipped.

    ``n``, ``dtype``, ``repeat``, ``rng`` and ``cond`` as :func:`compare`; ``steps`` ints in ``[1, 100]``.
    """
    from .singular import mclip
    who = "mclip_table"
    n, dtype, gen, cond = _check_sample_args(who, n, dtype, rng, cond, _MAX_COND)
    repeat = check_int(who, "repeat", repeat, 1, _MAX_REPEAT)
    if isinstance(steps, (str, bytes)) or not hasattr(steps, "__iter__"):
        raise TypeError(f"{who}: steps must be a sequence of ints, got {type(steps).__name__} {steps!r}")
    steps = [check_int(who, "steps", k, 1, 100) for k in steps]
    A = (2 * _sample_matrix(n, np.float64, gen, cond)).astype(dtype)
    reference = mclip(A.astype(np.float64), method="svd")
    rows = []
    for k in steps + [None]:
        kw = {"method": "svd"} if k is None else {"steps": k}
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            Y = mclip(A, **kw)
            times.append(time.perf_counter() - t0)
        rows.append({"method": "svd" if k is None else "newton_schulz", "steps": k,
                     "gemms": None if k is None else 6 * k + 2, "seconds": statistics.median(times),
                     "error": float(np.abs(np.asarray(Y, np.float64) - reference).max())})
    return rows


def format_mclip_table(rows, n, dtype, cond) -> str:
    """Markdown of :func:`mclip_table`'s rows (``rows``, then the ``n``, ``dtype`` and ``cond`` it was given)."""
    who = "format_mclip_table"
    _check_rows(who, rows, ("method", "steps", "gemms", "seconds", "error"), ("seconds", "error"))
    n = check_int(who, "n", n, 2, _MAX_N)
    dtype = float_dtype(who, dtype)
    cond = check_real(who, "cond", cond, 1.0)
    lines = [f"mclip: σ clipped at 1 without an SVD (two Newton–Schulz msigns, Polar Express), n = {n}, {dtype}, "
             f"singular values log-spaced in [2/{cond:g}, 2]; error against the float64 SVD route",
             "| route | steps | GEMMs | ms | max abs error |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['steps'] or '–'} | {r['gemms'] or '–'} | {r['seconds'] * 1e3:.1f} | "
                     f"{r['error']:.1e} |")
    return "\n".join(lines)


_COMPARE_KEYS = ("method", "seconds", "orthogonality", "to_polar", "note")
_GS_KEYS = ("kappa", "cgs", "mgs", "cgs2", "qr")


def _check_rows(who, rows, keys, numeric, optional=()):
    """``rows``: a list/tuple of mappings holding ``keys``; the ``numeric`` ones finite numbers (or None
    for those in ``optional``)."""
    if not isinstance(rows, (list, tuple)):
        raise TypeError(f"{who}: rows must be a list of dicts with keys {', '.join(keys)}, got "
                        f"{type(rows).__name__}")
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping):
            raise TypeError(f"{who}: rows[{i}] must be a dict with keys {', '.join(keys)}, got {type(r).__name__}")
        missing = [k for k in keys if k not in r]
        if missing:
            raise ValueError(f"{who}: rows[{i}] lacks the key(s) {', '.join(missing)} (expected {', '.join(keys)})")
        for k in numeric:
            v = r[k]
            if v is None and k in optional:
                continue
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) or not np.isfinite(v):
                raise ValueError(f"{who}: rows[{i}][{k!r}] must be a finite number, got {v!r}")


def format_table(rows, n, dtype, cond) -> str:
    """Markdown of :func:`compare`'s rows (``rows``, then the ``n``, ``dtype`` and ``cond`` it was given)."""
    who = "format_table"
    _check_rows(who, rows, _COMPARE_KEYS, ("seconds", "orthogonality", "to_polar"),
                optional=("seconds", "orthogonality", "to_polar"))
    n = check_int(who, "n", n, 2, _MAX_N)
    dtype = float_dtype(who, dtype)
    cond = check_real(who, "cond", cond, 1.0)
    lines = [f"n = {n}, {dtype}, singular values log-spaced in [1/{cond:g}, 1]; errors in float64",
             "| method | ms | ‖QᵀQ − I‖_2 | ‖Q − polar(A)‖_F/√n |", "|---|---|---|---|"]
    for r in rows:
        if r["seconds"] is None:
            lines.append(f"| {r['method']} | – | {r['note']} | – |")
        else:
            lines.append(f"| {r['method']} | {r['seconds'] * 1e3:.1f} | {r['orthogonality']:.1e} | "
                         f"{r['to_polar']:.1e} |")
    return "\n".join(lines)


def format_gram_schmidt_table(rows) -> str:
    """Markdown of ``gram_schmidt_table()``: ‖QᵀQ − I‖_2 against the condition number."""
    _check_rows("format_gram_schmidt_table", rows, _GS_KEYS, _GS_KEYS)
    lines = ["‖QᵀQ − I‖_2, A = U diag(geomspace(1, 1/κ)) Vᵀ, 200 x 50, float64",
             "| κ | CGS | MGS | CGS2 | QR (Householder) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['kappa']:.0e} | {r['cgs']:.1e} | {r['mgs']:.1e} | {r['cgs2']:.1e} | {r['qr']:.1e} |")
    return "\n".join(lines)


