"""Golden fixtures: every registered op's samples, with a fixed cotangent, the float64 outputs and gradients,
written as plain ``.npz`` files plus a ``manifest.json`` — readable (and writable) without orthoref.

:func:`export` writes orthoref's own values; :func:`orthoref.oracle.recording.record` writes someone else's
(``orthoref oracle record``) in exactly the same schema, and ``orthoref oracle check --against DIR`` checks
either kind of directory the same way: every output and gradient of a file against the float64 reference
recomputed on the file's inputs, keyword arguments and cotangents.

Layout of a fixture directory::

    manifest.json
    <op name>/<sample index>-<label>.<dtype>.npz

Each ``.npz`` (a zip of ``.npy`` files, no pickles) holds

``input_<k>``
    the op's ``k``-th input, in the fixture's dtype (``float64`` or ``float32``); integer inputs (labels)
    stay ``int64``.
``kwarg_<name>``
    array-valued keyword arguments (a base point, a power-iteration start), kept in ``float64`` — an
    implementation computing in float32 casts them, as it would hold them. The other keyword arguments are
    the manifest's ``kwargs`` (JSON numbers, strings, booleans, null, lists for tuples).
``output_<k>``
    the ``k``-th output: the float64 reference for exactly those inputs (``export``), or the recorded
    implementation's output (any float dtype; ``record`` writes it as float64, losslessly).
``cotangent_<k>``
    the output cotangent of output ``k``: standard-normal draws of the output's shape from
    ``numpy.random.default_rng(zlib.crc32(b"<op>/<sample index>/cotangent"))``, rounded to the fixture's
    dtype; finite. Never ones, which hide transposed gradients.
``grad_<k>``
    the vector-Jacobian product for input ``k``, ``∑ cotangent ⊙ ∂output/∂input_k`` over the outputs, of
    the input's shape; absent for integer inputs, required for every floating one.

``manifest.json`` (schema 1): ``schema`` (1), ``orthoref``, ``numpy`` (version strings of the writer),
``fixtures``: a list of ``{"file", "sha256", "op", "kind", "sample", "label", "dtype", "kwargs",
"array_kwargs", "inputs": [{"name", "shape", "dtype", "differentiable"}], "outputs": [{"name", "shape"}],
"rtol"}`` (``sha256``: of the file's bytes, lowercase hex; ``rtol``: the tolerance the file is checked
against, :func:`orthoref.oracle.reference.tolerance`). A recorded manifest also has ``recorded``:
``{"framework", "impl"}``. Every other key is ignored. A fixture passes when every output and gradient has
``max|theirs − ref| / max|ref| <= rtol`` — for a float32 fixture, ``rtol`` raised to the sample's
condition-aware budget where the problem cancels digits (:func:`orthoref.oracle.reference.error_budget`);
a fixture of an op that this orthoref does not register fails.

Writing a directory without Python (C++, Julia, Rust): run ``orthoref oracle export DIR`` (it holds the
inputs, keyword arguments and cotangents of every sample, and a complete manifest), then for each file
read ``input_*``, ``kwarg_*`` and ``cotangent_*``, evaluate your op and its VJP with those cotangents,
write the same keys with your ``output_*`` and ``grad_*`` (any ``.npy`` writer, e.g. cnpy or NPZ.jl), and
set the entry's ``sha256`` to the new file's (``sha256sum``). Nothing else changes.

Nothing in either file depends on the time or the machine's state, so exporting twice with the same NumPy
and BLAS gives byte-identical files (another BLAS may differ in the last bit: the shipped set is checked to
1e-12, not bytes). Files of an earlier export that the new manifest does not list are left in place; export
into an empty directory.
"""
from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import math
import numbers
import os
import re
import zipfile
import zlib

import numpy as np

from .. import __version__
from .._checks import check_bool, check_real
from .._io import atomic_write, loads_strict, read_npz
from .reference import (CompareReport, check_patterns, error_budget, error_row, names, reference,
                        specs_matching, tolerance, unknown_op)

__all__ = ["SCHEMA", "export", "load_manifest", "load_fixture", "check_dir", "write_npz", "fixture",
           "fixture_samples", "write_fixture", "write_manifest", "check_dtypes"]

#: The manifest schema of a golden-fixture directory (see the module docstring).
SCHEMA = 1
_DTYPES = {"float64": np.float64, "float32": np.float32}


def _seed(*parts) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def write_npz(path, arrays: dict) -> None:
    """An ``np.load``-readable ``.npz`` whose bytes depend only on ``arrays`` (fixed zip timestamps,
    sorted keys, no compression), written to a temporary file and renamed into place. ``arrays``: a dict of
    str keys to numeric (bool, int, float) arrays; ``TypeError`` naming the key otherwise."""
    if not isinstance(arrays, dict):
        raise TypeError(f"write_npz: arrays must be a dict of name -> array, got {type(arrays).__name__}")
    for key, value in arrays.items():
        try:
            kind = np.asarray(value).dtype.kind
        except (TypeError, ValueError):
            kind = "O"
        if not isinstance(key, str) or kind not in "biuf":
            raise TypeError(f"write_npz: arrays[{key!r}] must be a bool, integer or float array under a str key, "
                            f"got {type(value).__name__}")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arrays[key], order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    atomic_write(path, lambda f: f.write(buf.getvalue()))


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


def fixture_samples(spec) -> list:
    """The samples of ``spec`` that fixtures hold: drawn with a generator seeded by the op's name
    (``zlib.crc32(name)``), so they are the same on every run."""
    return spec.sample(np.random.default_rng(_seed(spec.name)), np.float64)


def fixture(spec, index, sample, dtype):
    """``(arrays, entry)`` of sample ``index`` of ``spec`` in ``dtype`` (``"float64"`` / ``"float32"``): the
    ``.npz`` arrays with the reference outputs and gradients, and the manifest entry without its
    ``sha256`` (see the module docstring)."""
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


def check_dtypes(who, dtypes) -> tuple:
    """``dtypes`` as a tuple of fixture dtype names; ``TypeError`` / ``ValueError`` naming ``who``."""
    if isinstance(dtypes, str) or not isinstance(dtypes, (list, tuple)):
        raise TypeError(f"{who}: dtypes must be a list or tuple of dtype names, got {type(dtypes).__name__} "
                        f"{dtypes!r}")
    bad = [d for d in dtypes if not isinstance(d, str) or d not in _DTYPES]
    if bad or not dtypes:
        raise ValueError(f"{who}: dtypes must be among {sorted(_DTYPES)}, got {list(dtypes)}")
    return tuple(dtypes)


def write_fixture(directory, arrays, entry) -> dict:
    """Write ``arrays`` to ``directory/entry["file"]`` (:func:`write_npz`, its folder created) and return
    ``entry`` with the file's ``sha256``."""
    path = os.path.join(directory, entry["file"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_npz(path, arrays)
    with open(path, "rb") as f:
        return dict(entry, sha256=hashlib.sha256(f.read()).hexdigest())


def write_manifest(directory, entries, **extra) -> dict:
    """Write and return ``directory/manifest.json`` (schema :data:`SCHEMA`) listing ``entries``; ``extra``
    top-level keys (``recorded``) are added."""
    manifest = {"schema": SCHEMA, "orthoref": __version__, "numpy": np.__version__, "fixtures": list(entries),
                **extra}
    text = json.dumps(manifest, indent=1, sort_keys=True, allow_nan=False) + "\n"
    atomic_write(os.path.join(directory, "manifest.json"), lambda f: f.write(text.encode()))
    return manifest


def export(directory, ops="*", dtypes=("float64", "float32"), progress=None) -> dict:
    """Write the fixtures of every registered op matching ``ops`` (comma-separated shell patterns) in each
    of ``dtypes`` to ``directory``; return the manifest. Samples are drawn with a generator seeded by the op's
    name, so the files are the same on every run."""
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"export: directory must be a str or os.PathLike, got {type(directory).__name__}")
    dtypes = check_dtypes("export", dtypes)
    if progress is not None and not callable(progress):
        raise TypeError(f"export: progress must be a callable or None, got {type(progress).__name__}")
    specs = specs_matching(check_patterns(ops, "export", "ops"))
    if not specs:
        raise ValueError(f"export: ops: no registered op matches {ops!r}")
    os.makedirs(directory, exist_ok=True)
    entries = []
    for spec in specs:
        samples = fixture_samples(spec)
        os.makedirs(os.path.join(directory, spec.name), exist_ok=True)
        for index, sample in enumerate(samples):
            for dtype in dtypes:
                entries.append(write_fixture(directory, *fixture(spec, index, sample, dtype)))
        if progress:
            progress(spec.name, len(samples))
    return write_manifest(directory, entries)


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _shape_ok(v):
    return isinstance(v, list) and all(_is_int(d) and d >= 0 for d in v)


# field -> (test, what it must be); every documented field is required.
_ENTRY_FIELDS = {
    "file": (lambda v: isinstance(v, str) and v != "", "a non-empty relative path"),
    "sha256": (lambda v: v is None or isinstance(v, str) and _SHA256.fullmatch(v) is not None,
               "64 lowercase hex digits (or null: no hash, checked only with verify_hash=False)"),
    "op": (lambda v: isinstance(v, str), "a string"),
    "kind": (lambda v: isinstance(v, str), "a string"),
    "sample": (lambda v: _is_int(v) and v >= 0, "an int >= 0"),
    "label": (lambda v: isinstance(v, str), "a string"),
    "dtype": (lambda v: v in _DTYPES, "'float64' or 'float32'"),
    "kwargs": (lambda v: isinstance(v, dict), "an object"),
    "array_kwargs": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
    "inputs": (lambda v: isinstance(v, list), "a list"),
    "outputs": (lambda v: isinstance(v, list), "a list"),
    "rtol": (lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v > 0,
             "a finite number > 0"),
}
_ARRAY_FIELDS = {
    "name": (lambda v: isinstance(v, str), "a string"),
    "shape": (_shape_ok, "a list of ints >= 0"),
    "dtype": (lambda v: isinstance(v, str), "a string"),
    "differentiable": (lambda v: isinstance(v, bool), "true or false"),
}


def _check_fields(path, where, obj, fields):
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: {where} must be an object, got {type(obj).__name__}")
    for key, (ok, what) in fields.items():
        if key not in obj:
            raise ValueError(f"{path}: {where}.{key} is missing")
        if not ok(obj[key]):
            text = repr(obj[key])
            raise ValueError(f"{path}: {where}.{key} must be {what}, got {text[:60]}")


def _check_file_entry(path, where, directory, file):
    """``file`` must stay inside ``directory``: relative, no ``..``, no symlink leading out."""
    parts = re.split(r"[/\\]", file)
    if os.path.isabs(file) or file.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", file) or ".." in parts:
        raise ValueError(f"{path}: {where}.file must be a path inside the fixture directory (relative, without "
                         f"'..'), got {file!r}")
    root = os.path.realpath(directory)
    target = os.path.realpath(os.path.join(directory, file))
    if os.path.commonpath([root, target]) != root:
        raise ValueError(f"{path}: {where}.file {file!r} leads outside the fixture directory (a symbolic link "
                         f"to {target})")


def load_manifest(directory) -> dict:
    """The checked ``manifest.json`` of a fixture directory.

    Raises ``ValueError`` naming the file and the field for a missing or unreadable manifest, one that is
    not strict JSON (``NaN``/``Infinity`` are refused), another schema, a missing key or a value of the
    wrong type (see the module docstring for the schema), or a fixture ``file`` that leaves the directory
    (an absolute path, ``..``, a symbolic link pointing outside). ``TypeError`` for a ``directory`` that
    is not a path.
    """
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"load_manifest: directory must be a str or os.PathLike, got {type(directory).__name__}")
    path = os.path.join(directory, "manifest.json")
    try:
        with open(path, "rb") as f:
            manifest = loads_strict(f.read())
    except FileNotFoundError:
        raise ValueError(f"{directory}: no manifest.json (not a fixture directory)") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    except ValueError as exc:                         # broken JSON, not UTF-8, NaN/Infinity tokens
        raise ValueError(f"{path}: not valid strict JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: must hold a JSON object, got {type(manifest).__name__}")
    if manifest.get("schema") != SCHEMA or isinstance(manifest.get("schema"), bool):
        raise ValueError(f"{path}: schema {manifest.get('schema')!r}, this orthoref reads schema {SCHEMA}")
    for key in ("orthoref", "numpy"):
        if not isinstance(manifest.get(key), str):
            raise ValueError(f"{path}: field {key!r} must be a version string, got {manifest.get(key)!r}")
    fixtures = manifest.get("fixtures")
    if not isinstance(fixtures, list):
        raise ValueError(f"{path}: field 'fixtures' must be a list, got {type(fixtures).__name__}")
    for i, entry in enumerate(fixtures):
        where = f"fixtures[{i}]"
        _check_fields(path, where, entry, _ENTRY_FIELDS)
        for group in ("inputs", "outputs"):
            need = _ARRAY_FIELDS if group == "inputs" else {k: _ARRAY_FIELDS[k] for k in ("name", "shape")}
            for k, item in enumerate(entry[group]):
                _check_fields(path, f"{where}.{group}[{k}]", item, need)
        _check_file_entry(path, where, directory, entry["file"])
    return manifest


def _array(arrays, path, key):
    if key not in arrays:
        raise ValueError(f"{path}: array {key!r} is missing")
    return arrays[key]


def load_fixture(directory, entry, verify_hash=True):
    """(inputs, kwargs, outputs, cotangents, grads) of one manifest entry (checked by
    :func:`load_manifest`); grads has ``None`` for inputs without a gradient. With ``verify_hash`` a file
    whose sha256 differs from the manifest is refused. The ``.npz`` is read without pickles and without
    allocating more than it holds. ``ValueError`` naming the file for a hash mismatch, a missing array,
    an array whose shape or dtype differs from the manifest's, a NaN/Inf cotangent."""
    verify_hash = check_bool("load_fixture", "verify_hash", verify_hash)
    path = os.path.join(directory, entry["file"])
    with open(path, "rb") as f:
        data = f.read()
    if verify_hash and entry["sha256"] is None:
        raise ValueError(f"{path}: manifest.json gives no sha256 to verify it against (verify_hash=False skips "
                         f"the check)")
    if verify_hash and hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ValueError(f"{path}: sha256 differs from manifest.json (file changed or corrupt)")
    with read_npz(io.BytesIO(data), "orthoref fixture", name=path, error=ValueError) as npz:
        arrays = npz.read_all()
    n_in, n_out = len(entry["inputs"]), len(entry["outputs"])
    inputs = tuple(_array(arrays, path, f"input_{k}") for k in range(n_in))
    for k, (x, meta) in enumerate(zip(inputs, entry["inputs"])):
        if list(x.shape) != meta["shape"] or str(x.dtype) != meta["dtype"]:
            raise ValueError(f"{path}: array 'input_{k}' is {x.dtype} {x.shape}, manifest.json says "
                             f"{meta['dtype']} {tuple(meta['shape'])}")
        if x.dtype.kind not in "fiu":
            raise ValueError(f"{path}: array 'input_{k}' must be a float or integer array, got {x.dtype}")
    kwargs = {k: _tuples(v) for k, v in entry["kwargs"].items()}
    kwargs.update({k: _array(arrays, path, f"kwarg_{k}") for k in entry["array_kwargs"]})
    outputs = tuple(_array(arrays, path, f"output_{k}") for k in range(n_out))
    cots = tuple(_array(arrays, path, f"cotangent_{k}") for k in range(n_out))
    for k, (y, c, meta) in enumerate(zip(outputs, cots, entry["outputs"])):
        for name, a in ((f"output_{k}", y), (f"cotangent_{k}", c)):
            if list(a.shape) != meta["shape"] or a.dtype.kind != "f":
                raise ValueError(f"{path}: array {name!r} is {a.dtype} {a.shape}, manifest.json says a float "
                                 f"array of shape {tuple(meta['shape'])}")
        if not np.isfinite(c).all():
            raise ValueError(f"{path}: array 'cotangent_{k}' must be finite, got NaN or Inf")
    grads = tuple(arrays.get(f"grad_{k}") for k in range(n_in))
    return inputs, kwargs, outputs, cots, grads


def _failure(entry, tol, text):
    report = CompareReport(entry["op"], entry["dtype"], note=f"{entry['file']}: {text}")
    report.rows.append(error_row("load", np.zeros(1), np.full(1, np.inf), tol))
    return report


def check_dir(directory, ops="*", dtypes=None, rtol=None, verify_hash=True):
    """Yield a :class:`CompareReport` per fixture in ``directory`` whose op matches ``ops`` (and dtype is in
    ``dtypes``): the fixture's outputs and gradients — ours, or another framework's written in the same
    schema — against the reference recomputed on the fixture's inputs and cotangent. ``rtol``: override
    the manifest's tolerance (a finite number > 0).

    The manifest is checked first (:func:`load_manifest`: a malformed one raises ``ValueError`` naming the
    file and the field before anything is compared). A fixture whose op matches ``ops`` but is not
    registered, whose file is missing, corrupt or differs from its sha256, or whose values or gradients
    disagree is a failed report, never skipped."""
    who = "check_dir"
    pats = check_patterns(ops, who, "ops")
    if dtypes is not None and (isinstance(dtypes, str) or not isinstance(dtypes, (list, tuple, set))):
        raise TypeError(f"{who}: dtypes must be a list or tuple of dtype names or None, got {dtypes!r}")
    if rtol is not None:
        rtol = check_real(who, "rtol", rtol, 0, lo_open=True)
    verify_hash = check_bool(who, "verify_hash", verify_hash)
    manifest = load_manifest(directory)
    registered = set(names())
    return _check_entries(directory, manifest, pats, registered, dtypes, rtol, verify_hash)


def _check_entries(directory, manifest, pats, registered, dtypes, rtol, verify_hash):
    for entry in manifest["fixtures"]:
        if not any(fnmatch.fnmatchcase(entry["op"], p) for p in pats) or (dtypes and entry["dtype"] not in dtypes):
            continue
        tol = float(entry["rtol"] if rtol is None else rtol)
        if entry["op"] not in registered:
            yield _failure(entry, tol, unknown_op(entry["op"]))
            continue
        try:
            inputs, kwargs, outputs, cots, grads = load_fixture(directory, entry, verify_hash)
            value, vjp = reference(entry["op"], *inputs, **kwargs)
            ours = value if isinstance(value, tuple) else (value,)
            report = CompareReport(entry["op"], entry["dtype"], note=entry["file"])
            if len(outputs) != len(ours):
                raise ValueError(f"the fixture has {len(outputs)} output(s), the op {len(ours)}")
            budget = (error_budget(entry["op"], inputs, kwargs, cots)
                      if rtol is None and np.dtype(entry["dtype"]).itemsize < 8 else None)
            for k, (o, t) in enumerate(zip(ours, outputs)):
                report.rows.append(_row(f"value[{k}]", o, t, tol, budget))
            for k, (g, t) in enumerate(zip(vjp(tuple(c.astype(np.float64) for c in cots)), grads)):
                if g is not None and t is None:
                    raise ValueError(f"grad_{k} is missing (input {k} is differentiable)")
                if g is not None:
                    report.rows.append(_row(f"grad[{k}]", g, t, tol, budget))
        except (ValueError, TypeError, OSError, zipfile.BadZipFile) as exc:
            report = _failure(entry, tol, str(exc))
        yield report


def _row(what, ours, theirs, tol, budget=None):
    """The verdict of one array: against the manifest's ``tol``, or for a float32 fixture against the
    sample's condition-aware budget (never below ``tol``; :func:`orthoref.oracle.reference.error_budget`)."""
    if np.shape(ours) != np.shape(theirs):
        raise ValueError(f"{what}: fixture shape {np.shape(theirs)}, reference shape {np.shape(ours)}")
    return error_row(what, ours, theirs, tol) if budget is None else budget.error_row(what, ours, theirs)
