"""Golden fixtures: every registered op's samples, with a fixed cotangent, the float64 outputs and gradients,
written as plain ``.npz`` files plus a ``manifest.json`` — readable without orthoref.

Layout of a fixture directory::

    manifest.json
    <op name>/<sample index>-<label>.<dtype>.npz

Each ``.npz`` holds ``input_<k>`` (the inputs, in the fixture's dtype; integer labels stay int64),
``kwarg_<name>`` (array-valued keyword arguments such as a base point, kept in float64 — an
implementation computing in float32 casts them, as it would hold them; the other keyword arguments are in
the manifest), ``output_<k>`` (the float64 reference outputs for exactly those inputs), ``cotangent_<k>`` (a fixed random output cotangent,
rounded to the fixture's dtype) and ``grad_<k>`` (the float64 vector-Jacobian product for input ``k``; absent
for integer inputs). An implementation computing in the fixture's dtype passes when every output and
gradient has ``max|theirs − ref| / max|ref| <= rtol`` (the manifest's ``rtol``).

``manifest.json`` (schema 1): ``schema``, ``orthoref``, ``numpy``, ``fixtures``: a list of
``{"file", "sha256", "op", "kind", "sample", "label", "dtype", "kwargs", "array_kwargs", "inputs": [{"name",
"shape", "dtype", "differentiable"}], "outputs": [{"name", "shape"}], "rtol"}``. Nothing in either depends
on the time or the machine's state, so exporting twice with the same NumPy and BLAS gives byte-identical files
(another BLAS may differ in the last bit: the shipped set is checked to 1e-12, not bytes). Files of an
earlier export that the new manifest does not list are left in place; export into an empty directory.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
import zlib

import numpy as np

from .. import __version__
from .reference import CompareReport, error_row, reference, specs_matching, tolerance

__all__ = ["SCHEMA", "export", "load_manifest", "load_fixture", "check_dir", "write_npz"]

SCHEMA = 1
_DTYPES = {"float64": np.float64, "float32": np.float32}


def _seed(*parts) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def write_npz(path, arrays: dict) -> None:
    """An ``np.load``-readable ``.npz`` whose bytes depend only on ``arrays`` (fixed zip timestamps,
    sorted keys, no compression), written to a temporary file and renamed into place."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arrays[key], order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    _atomic_write(path, buf.getvalue())


def _atomic_write(path, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _jsonable(v):
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TypeError(f"keyword value {v!r} of type {type(v).__name__} cannot be written to a fixture")


def _tuples(v):
    """JSON lists back to the tuples the samplers use."""
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def _fixture(spec, index, sample, dtype):
    """(arrays, manifest entry) of one sample in one dtype."""
    dt = np.dtype(_DTYPES[dtype])
    inputs = tuple(x.astype(dt) if x.dtype.kind == "f" else x for x in sample.inputs)
    array_kwargs = {k: v for k, v in sample.kwargs.items() if isinstance(v, np.ndarray)}
    kwargs = {k: _jsonable(v) for k, v in sample.kwargs.items() if k not in array_kwargs}
    value, vjp = reference(spec.name, *inputs, **sample.kwargs)
    outputs = value if isinstance(value, tuple) else (value,)
    gen = np.random.default_rng(_seed(spec.name, index, "cotangent"))
    cots = tuple(gen.standard_normal(y.shape).astype(dt) for y in outputs)
    grads = vjp(tuple(c.astype(np.float64) for c in cots))
    arrays = {}
    for k, x in enumerate(inputs):
        arrays[f"input_{k}"] = x
    for k, v in array_kwargs.items():
        arrays[f"kwarg_{k}"] = v
    for k, (y, c) in enumerate(zip(outputs, cots)):
        arrays[f"output_{k}"] = np.asarray(y, dtype=np.float64)
        arrays[f"cotangent_{k}"] = c
    for k, g in enumerate(grads):
        if g is not None:
            arrays[f"grad_{k}"] = g
    label = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", sample.label) or "sample"
    entry = {"file": f"{spec.name}/{index}-{label}.{dtype}.npz", "op": spec.name, "kind": spec.kind,
             "sample": index, "label": sample.label, "dtype": dtype, "kwargs": kwargs,
             "array_kwargs": sorted(array_kwargs),
             "inputs": [{"name": f"input_{k}", "shape": list(x.shape), "dtype": str(x.dtype),
                         "differentiable": x.dtype.kind == "f"} for k, x in enumerate(inputs)],
             "outputs": [{"name": f"output_{k}", "shape": list(y.shape)} for k, y in enumerate(outputs)],
             "rtol": tolerance(spec, dt)}
    return arrays, entry


def export(directory, ops="*", dtypes=("float64", "float32"), progress=None) -> dict:
    """Write the fixtures of every registered op matching ``ops`` (comma-separated shell patterns) in each
    of ``dtypes`` to ``directory``; return the manifest. Samples are drawn with a generator seeded by the op's
    name, so the files are the same on every run."""
    bad = [d for d in dtypes if d not in _DTYPES]
    if bad:
        raise ValueError(f"dtypes must be among {sorted(_DTYPES)}, got {bad}")
    specs = specs_matching(ops)
    if not specs:
        raise ValueError(f"ops: no registered op matches {ops!r}")
    os.makedirs(directory, exist_ok=True)
    entries = []
    for spec in specs:
        samples = spec.sample(np.random.default_rng(_seed(spec.name)), np.float64)
        os.makedirs(os.path.join(directory, spec.name), exist_ok=True)
        for index, sample in enumerate(samples):
            for dtype in dtypes:
                arrays, entry = _fixture(spec, index, sample, dtype)
                path = os.path.join(directory, entry["file"])
                write_npz(path, arrays)
                with open(path, "rb") as f:
                    entry["sha256"] = hashlib.sha256(f.read()).hexdigest()
                entries.append(entry)
        if progress:
            progress(spec.name, len(samples))
    manifest = {"schema": SCHEMA, "orthoref": __version__, "numpy": np.__version__, "fixtures": entries}
    _atomic_write(os.path.join(directory, "manifest.json"),
                  (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    return manifest


def load_manifest(directory) -> dict:
    path = os.path.join(directory, "manifest.json")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{directory}: no manifest.json (not a fixture directory)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if manifest.get("schema") != SCHEMA:
        raise ValueError(f"{path}: schema {manifest.get('schema')!r}, this orthoref reads schema {SCHEMA}")
    return manifest


def load_fixture(directory, entry, verify_hash=True):
    """(inputs, kwargs, outputs, cotangents, grads) of one manifest entry; grads has ``None`` for inputs
    without a gradient. With ``verify_hash`` a file whose sha256 differs from the manifest is refused."""
    path = os.path.join(directory, entry["file"])
    with open(path, "rb") as f:
        data = f.read()
    if verify_hash and "sha256" in entry and hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ValueError(f"{path}: sha256 differs from manifest.json (file changed or corrupt)")
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    n_in, n_out = len(entry["inputs"]), len(entry["outputs"])
    inputs = tuple(arrays[f"input_{k}"] for k in range(n_in))
    kwargs = {k: _tuples(v) for k, v in entry["kwargs"].items()}
    kwargs.update({k: arrays[f"kwarg_{k}"] for k in entry.get("array_kwargs", [])})
    outputs = tuple(arrays[f"output_{k}"] for k in range(n_out))
    cots = tuple(arrays[f"cotangent_{k}"] for k in range(n_out))
    grads = tuple(arrays.get(f"grad_{k}") for k in range(n_in))
    return inputs, kwargs, outputs, cots, grads


def check_dir(directory, ops="*", dtypes=None, rtol=None, verify_hash=True):
    """Yield a :class:`CompareReport` per fixture in ``directory`` whose op matches ``ops`` (and dtype is in
    ``dtypes``): the fixture's outputs and gradients — ours, or another framework's written in the same
    schema — against the reference recomputed on the fixture's inputs and cotangent. ``rtol``: override
    the manifest's tolerance."""
    manifest = load_manifest(directory)
    wanted = {s.name for s in specs_matching(ops)}
    for entry in manifest["fixtures"]:
        if entry["op"] not in wanted or (dtypes and entry["dtype"] not in dtypes):
            continue
        tol = float(entry["rtol"] if rtol is None else rtol)
        try:
            inputs, kwargs, outputs, cots, grads = load_fixture(directory, entry, verify_hash)
            value, vjp = reference(entry["op"], *inputs, **kwargs)
            ours = value if isinstance(value, tuple) else (value,)
            report = CompareReport(entry["op"], entry["dtype"], note=entry["file"])
            if len(outputs) != len(ours):
                raise ValueError(f"the fixture has {len(outputs)} output(s), the op {len(ours)}")
            for k, (o, t) in enumerate(zip(ours, outputs)):
                report.rows.append(_row(f"value[{k}]", o, t, tol))
            for k, (g, t) in enumerate(zip(vjp(tuple(c.astype(np.float64) for c in cots)), grads)):
                if g is not None and t is None:
                    raise ValueError(f"grad_{k} is missing (input {k} is differentiable)")
                if g is not None:
                    report.rows.append(_row(f"grad[{k}]", g, t, tol))
        except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile) as exc:
            report = CompareReport(entry["op"], entry["dtype"], note=f"{entry['file']}: {exc}")
            report.rows.append(error_row("load", np.zeros(1), np.full(1, np.inf), tol))
        yield report


def _row(what, ours, theirs, tol):
    if np.shape(ours) != np.shape(theirs):
        raise ValueError(f"{what}: fixture shape {np.shape(theirs)}, reference shape {np.shape(ours)}")
    return error_row(what, ours, theirs, tol)
