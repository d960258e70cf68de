"""``orthoref compare-projections``: every orthogonalization of one input, side by side.

For a random ``n x n`` input with a spread of singular values (the same input for every method) it reports
each method's time (median of repeats), the orthogonality error ``‖QᵀQ − I‖_2`` and the distance
``‖Q − polar(A)‖_F / √n`` to the nearest orthogonal matrix.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

__all__ = ["compare", "format_table", "format_gram_schmidt_table", "sample_matrix"]


def _methods():
    from . import bjorck, gram_schmidt, newton_schulz, polar, qr_orthogonalize, NS_COEFFICIENTS
    methods = {
        "polar (SVD)": polar,
        "qr_orthogonalize": qr_orthogonalize,
        "gram_schmidt cgs": lambda A: gram_schmidt(A, method="cgs"),
        "gram_schmidt mgs": lambda A: gram_schmidt(A, method="mgs"),
        "gram_schmidt cgs2": lambda A: gram_schmidt(A, method="cgs2"),
        "bjorck (15 steps)": bjorck,
    }
    for name, table in NS_COEFFICIENTS.items():
        methods[f"newton_schulz {name} (5 steps)"] = (
            lambda name: lambda A: newton_schulz(A, coefficients=name))(name)
        if len(table) > 5:
            methods[f"newton_schulz {name} ({len(table)} steps)"] = (
                lambda name: lambda A: newton_schulz(A, coefficients=name, steps=None))(name)
    return methods


def sample_matrix(n, dtype, rng=0, cond=1e3):
    """``U diag(s) Vᵀ`` with Haar U, V and singular values log-spaced from 1 down to 1/cond."""
    from scipy.stats import ortho_group
    gen = np.random.default_rng(rng)
    u = ortho_group.rvs(n, random_state=gen)
    v = ortho_group.rvs(n, random_state=gen)
    s = np.geomspace(1.0, 1.0 / cond, n)
    return ((u * s) @ v.T).astype(dtype)


def compare(n=256, dtype="float32", repeat=3, rng=0, cond=1e3):
    """One row per method: ``{"method", "seconds", "orthogonality", "to_polar"}`` (errors in float64)."""
    from . import polar
    A = sample_matrix(n, dtype, rng, cond)
    reference = polar(A.astype(np.float64))
    rows = []
    for name, fn in _methods().items():
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


def format_table(rows, n, dtype, cond) -> str:
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
    lines = ["‖QᵀQ − I‖_2, A = U diag(geomspace(1, 1/κ)) Vᵀ, 200 x 50, float64",
             "| κ | CGS | MGS | CGS2 | QR (Householder) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['kappa']:.0e} | {r['cgs']:.1e} | {r['mgs']:.1e} | {r['cgs2']:.1e} | {r['qr']:.1e} |")
    return "\n".join(lines)
