"""Golden fixtures of the optimizers and the orthogonal initializer: k-step float64 reference trajectories
and orthogonal factors of Gaussian draws, as plain ``.npz`` files plus a ``manifest.json``, so that another
framework checks its optimizer or initializer without running orthoref (``data/golden/optimizers``).

:func:`export` writes them (:func:`~orthoref.oracle.trajectories.optimizer_trajectory` and
:func:`~orthoref.oracle.trajectories.orthogonal_factor` on seeded problems); :func:`check_dir` recomputes
every file from its own inputs and reports the ones that differ -- the test-suite runs it on the shipped
directory, so a numerical change to an optimizer shows up until the directory is re-exported on purpose.

Layout (schema 1)::

    manifest.json
    <case>.npz                      one optimizer trajectory
    orthogonal/<method>-<rows>x<cols>.npz

A trajectory ``.npz`` holds, for parameters ``i = 0, 1, ...`` and steps ``t``:

``param0_<i>``
    the initial parameter (float64);
``grad_<t>_<i>``
    the gradient given before step ``t`` (``t = 0, ..., k-1``);
``theta_<t>_<i>``
    the parameter after ``t`` steps (``t = 1, ..., k``): the reference.
``direction_<j>``
    (OGD only) the stored directions, handed to ``store_directions`` before the first step.

An orthogonal-factor ``.npz`` holds ``draw`` (the Gaussian matrix ``A``) and ``factor`` (its orthogonal
factor by ``method``: ``"qr"`` as PyTorch's ``orthogonal_``, ``"svd"`` the polar factor ``UVᵀ``).

``manifest.json``: ``schema`` (1), ``orthoref``, ``numpy`` (the writer's versions), ``trajectories``: a list of
``{"file", "sha256", "case", "optimizer", "hyper", "stiefel", "steps", "shapes"}`` (``hyper``: the constructor's
keyword arguments as JSON; ``stiefel``: one bool per parameter for the Stiefel optimizers, each parameter
its own group, else null), and ``factors``: a list of ``{"file", "sha256", "method", "shape"}``.

An implementation passes a trajectory when every ``theta_<t>_<i>`` it computes has
``max|theirs − ref| / max|ref| <= t · rtol`` (``rtol`` 1e-12 for float64; a float32 implementation: t · 5e-6,
as :func:`orthoref.testing.check_optimizer`), and a factor at ``rtol`` (float32: 1e-5).
"""
from __future__ import annotations

import hashlib
import json
import os
import zlib

import numpy as np

from .. import __version__
from .._io import atomic_write, loads_strict, read_npz
from .fixtures import write_fixture
from .trajectories import OPTIMIZERS, optimizer_trajectory, orthogonal_factor

__all__ = ["CASES", "FACTORS", "SCHEMA", "STEPS", "check_dir", "export", "load_manifest"]

#: The manifest schema of an optimizer-fixture directory (see the module docstring).
SCHEMA = 1
#: The steps of every trajectory.
STEPS = 10
#: ``(case, optimizer, hyper-parameters)``: every optimizer of :data:`~orthoref.oracle.trajectories.OPTIMIZERS`
#: at least once, and the options that change the update formula (momentum, Nesterov, decay, AMSGrad).
CASES = (
    ("sgd", "SGD", {"lr": 0.1}),
    ("sgd_momentum", "SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.1}),
    ("sgd_nesterov_decay", "SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2}),
    ("adam", "Adam", {"lr": 1e-2}),
    ("adam_amsgrad_decay", "Adam", {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.1}),
    ("adamw", "AdamW", {"lr": 1e-2, "weight_decay": 0.1}),
    ("muon", "Muon", {"lr": 0.02}),
    ("riemannian_sgd", "RiemannianSGD", {"lr": 1e-2, "momentum": 0.9}),
    ("riemannian_adam", "RiemannianAdam", {"lr": 1e-2}),
    ("cayley_sgd", "CayleySGD", {"lr": 1e-2}),
    ("cayley_adam", "CayleyAdam", {"lr": 1e-2}),
    ("ogd", "OGD", {"lr": 0.1}),
)
#: ``(method, (rows, cols))`` of the orthogonal factors: tall, wide and square draws.
FACTORS = (("qr", (6, 4)), ("qr", (4, 6)), ("qr", (5, 5)), ("svd", (6, 4)), ("svd", (4, 6)))


def _problem(case, optimizer, steps):
    """``(param0, grads, stiefel, directions)`` of ``case``: :func:`orthoref.testing.default_optimizer_problem`
    seeded by the case's name; OGD also stores two orthonormal directions of the flattened parameters."""
    from ..testing import default_optimizer_problem
    param0, grads, stiefel = default_optimizer_problem(optimizer, steps=steps, seed=zlib.crc32(case.encode()))
    directions = None
    if optimizer == "OGD":
        n = sum(p.size for p in param0)
        gen = np.random.default_rng(zlib.crc32((case + "/directions").encode()))
        directions = list(np.linalg.qr(gen.standard_normal((n, 2)))[0].T)
    return param0, grads, stiefel, directions


def _run(optimizer, hyper, param0, grads, stiefel, directions):
    extra = {} if stiefel is None else {"stiefel": list(stiefel)}
    if directions is not None:
        extra["directions"] = list(directions)
    return optimizer_trajectory(optimizer, list(param0), list(grads), **hyper, **extra)


def export(directory, steps=STEPS) -> dict:
    """Write every trajectory of :data:`CASES` (``steps`` steps) and every factor of :data:`FACTORS` to
    ``directory``; return the manifest. Deterministic: the problems are seeded by the case names."""
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"export: directory must be a str or os.PathLike, got {type(directory).__name__}")
    os.makedirs(directory, exist_ok=True)
    trajectories, factors = [], []
    for case, optimizer, hyper in CASES:
        param0, grads, stiefel, directions = _problem(case, optimizer, steps)
        thetas = _run(optimizer, hyper, param0, grads, stiefel, directions)
        arrays = {f"param0_{i}": p for i, p in enumerate(param0)}
        arrays.update({f"grad_{t}_{i}": g for t, gs in enumerate(grads) for i, g in enumerate(gs)})
        arrays.update({f"theta_{t}_{i}": p for t in range(1, steps + 1) for i, p in enumerate(thetas[t])})
        arrays.update({f"direction_{j}": d for j, d in enumerate(directions or ())})
        trajectories.append(write_fixture(directory, arrays, {
            "file": f"{case}.npz", "case": case, "optimizer": optimizer, "hyper": hyper, "steps": steps,
            "stiefel": stiefel, "shapes": [list(p.shape) for p in param0]}))
    for method, shape in FACTORS:
        gen = np.random.default_rng(_seed(method, shape))
        draw = gen.standard_normal(shape)
        factors.append(write_fixture(directory, {"draw": draw, "factor": orthogonal_factor(draw, method)}, {
            "file": f"orthogonal/{method}-{shape[0]}x{shape[1]}.npz", "method": method, "shape": list(shape)}))
    manifest = {"schema": SCHEMA, "orthoref": __version__, "numpy": np.__version__,
                "trajectories": trajectories, "factors": factors}
    text = json.dumps(manifest, indent=1, sort_keys=True, allow_nan=False) + "\n"
    atomic_write(os.path.join(directory, "manifest.json"), lambda f: f.write(text.encode()))
    return manifest


def _seed(method, shape):
    return zlib.crc32(f"orthogonal/{method}/{shape[0]}x{shape[1]}".encode())


def _load(directory, entry):
    """The arrays of ``entry``'s file, after checking its ``sha256``; ``ValueError`` naming the file."""
    path = os.path.join(directory, entry["file"])
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != entry["sha256"]:
        raise ValueError(f"{path}: sha256 {digest} does not match the manifest's {entry['sha256']}")
    with read_npz(path, "optimizer fixture", error=ValueError) as archive:
        return archive.read_all()


def _check_trajectory(directory, entry, rtol):
    """The failure of one trajectory file (the first step that differs), or ``[]``."""
    a = _load(directory, entry)
    n, k = len(entry["shapes"]), entry["steps"]
    param0 = [a[f"param0_{i}"] for i in range(n)]
    grads = [[a[f"grad_{t}_{i}"] for i in range(n)] for t in range(k)]
    directions = [a[key] for key in sorted(a) if key.startswith("direction_")] or None
    thetas = _run(entry["optimizer"], entry["hyper"], param0, grads, entry["stiefel"], directions)
    for t in range(1, k + 1):
        err = max(_rel(thetas[t][i], a[f"theta_{t}_{i}"]) for i in range(n))
        if not err <= t * rtol:
            return [f"{entry['file']}: step {t}: relative error {err:.3g} > {t} · {rtol:g}"]
    return []


def _rel(a, ref):
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    return float(np.max(np.abs(a - ref))) / scale if scale > 0 else float(np.max(np.abs(a), initial=0.0))


_FIELDS = {"trajectories": {"file": str, "sha256": str, "case": str, "optimizer": str, "hyper": dict,
                            "steps": int, "stiefel": (list, type(None)), "shapes": list},
           "factors": {"file": str, "sha256": str, "method": str, "shape": list}}


def load_manifest(directory) -> dict:
    """The checked ``manifest.json`` of ``directory``: ``TypeError`` for a ``directory`` that is not a path,
    ``ValueError`` naming the file and the field for a missing or broken manifest, another schema, a missing
    or mistyped field, a ``file`` that leaves the directory."""
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"load_manifest: directory must be a str or os.PathLike, got {type(directory).__name__}")
    path = os.path.join(directory, "manifest.json")
    try:
        with open(path, "rb") as f:
            manifest = loads_strict(f.read())
    except FileNotFoundError:
        raise ValueError(f"{directory}: no manifest.json (not an optimizer fixture directory)") from None
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        got = manifest.get("schema") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValueError(f"{path}: schema must be {SCHEMA}, got {got!r}")
    for key, fields in _FIELDS.items():
        entries = manifest.get(key)
        if not isinstance(entries, list):
            raise ValueError(f"{path}: {key} must be a list, got {type(entries).__name__}")
        for i, entry in enumerate(entries):
            bad = [f for f, t in fields.items() if not isinstance(entry, dict) or not isinstance(entry.get(f), t)
                   or (t is int and isinstance(entry.get(f), bool))]
            if bad:
                raise ValueError(f"{path}: {key}[{i}] lacks or mistypes {', '.join(bad)}")
            name = os.path.normpath(entry["file"])
            if os.path.isabs(name) or name.startswith(".."):
                raise ValueError(f"{path}: {key}[{i}].file {entry['file']!r} leaves the directory")
    return manifest


def check_dir(directory, rtol=1e-12) -> list:
    """Recompute every trajectory and factor of ``directory`` from its own inputs; return one line per
    failure (an empty list when all pass): a step ``t`` whose parameter differs by more than ``t · rtol``
    (max-relative), a factor by more than ``rtol``, an optimizer or method this orthoref does not have,
    a file whose ``sha256`` differs from the manifest's. A broken manifest raises (:func:`load_manifest`)."""
    manifest = load_manifest(directory)
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)):
        raise TypeError(f"check_dir: rtol must be a number, got {type(rtol).__name__} {rtol!r}")
    if not 0 < rtol < 1:
        raise ValueError(f"check_dir: rtol must lie in (0, 1), got {rtol!r}")
    failures = []
    for entry in manifest["trajectories"]:
        if entry["optimizer"] not in OPTIMIZERS:
            failures.append(f"{entry['file']}: no optimizer {entry['optimizer']!r} in this orthoref")
            continue
        try:
            failures += _check_trajectory(directory, entry, rtol)
        except KeyError as exc:
            failures.append(f"{entry['file']}: lacks the array {exc}")
        except (ValueError, TypeError, OSError) as exc:                 # a damaged file, shapes that differ
            failures.append(f"{entry['file']}: {exc}")
    for entry in manifest["factors"]:
        if entry["method"] not in ("qr", "svd"):
            failures.append(f"{entry['file']}: no method {entry['method']!r} in this orthoref")
            continue
        try:
            a = _load(directory, entry)
            err = _rel(orthogonal_factor(a["draw"], entry["method"]), a["factor"])
        except KeyError as exc:
            failures.append(f"{entry['file']}: lacks the array {exc}")
            continue
        except (ValueError, TypeError, OSError) as exc:
            failures.append(f"{entry['file']}: {exc}")
            continue
        if not err <= rtol:
            failures.append(f"{entry['file']}: relative error {err:.3g} > {rtol:g}")
    return failures
