"""Recording and checking anyone's results: a *table* ``{op name: fn}`` of someone's functions, run on every
registered sample of its ops.

``fn(*inputs, **kwargs)`` takes a sample's inputs and keyword arguments (as NumPy arrays, PyTorch tensors
or JAX arrays, per ``framework``) and returns the output (a tuple for several outputs). An entry may be a
pair ``(fn, vjp)`` with ``vjp(inputs, outputs, cotangent, **kwargs) -> grads``: one gradient per input
(``None`` for integer inputs; a bare array for a one-input op), ``cotangent`` a tuple for several
outputs. Without ``vjp`` the gradients come from ``torch.autograd.grad`` / ``jax.vjp``; ``numpy`` has no
autograd, so its entries must be pairs.

- :func:`record` writes the outputs and gradients as a fixture directory (the schema of
  :mod:`orthoref.oracle.fixtures`, the same cotangents as ``data/golden``), which ``orthoref oracle check
  --against DIR`` checks as it checks ``data/golden``. A C++, Julia or Rust implementation writes the same
  directory itself (see :mod:`orthoref.oracle.fixtures`).
- :func:`table_runner` is the runner ``orthoref oracle check --against MODULE:TABLE`` compares directly.
"""
from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping

import numpy as np

from .fixtures import check_dtypes, fixture, fixture_samples, write_fixture, write_manifest
from .reference import cast_kwargs, check_patterns, names, to_host, unknown_op
from .registry import get

__all__ = ["FRAMEWORKS", "load_table", "check_table", "table_runner", "selected", "record"]

FRAMEWORKS = ("numpy", "torch", "jax")


def load_table(impl) -> dict:
    """The table named by ``impl``, ``"MODULE:TABLE"``: ``MODULE`` a dotted module name (imported from the
    current directory or ``sys.path``) or a ``.py`` file, ``TABLE`` a name in it holding the dict.

    Raises ``ValueError`` naming ``impl`` for a string without ``:``, a module that cannot be imported, a
    missing name; ``TypeError`` for a table of the wrong form (:func:`check_table`)."""
    if not isinstance(impl, str) or impl.count(":") < 1:
        raise ValueError(f"load_table: impl must be 'MODULE:TABLE' (a module and the name of its dict "
                         f"{{op name: fn}}), got {impl!r}")
    module_name, _, attr = impl.rpartition(":")
    if not module_name or not attr.isidentifier():
        raise ValueError(f"load_table: impl must be 'MODULE:TABLE', got {impl!r}")
    try:
        module = _import(module_name)
    except Exception as exc:
        raise ValueError(f"load_table: cannot import {module_name!r} ({type(exc).__name__}: {exc})") from exc
    if not hasattr(module, attr):
        raise ValueError(f"load_table: module {module_name!r} has no {attr!r}")
    return check_table(getattr(module, attr), f"load_table: {impl}")


def _import(module_name):
    if module_name.endswith(".py"):
        spec = importlib.util.spec_from_file_location(os.path.basename(module_name)[:-3], module_name)
        if spec is None or not os.path.isfile(module_name):
            raise FileNotFoundError(f"no file {module_name}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    added = os.getcwd() not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    finally:
        if added:
            sys.path.remove(os.getcwd())


def check_table(table, who="check_table", framework=None) -> dict:
    """``{name: (fn, vjp or None)}`` from a table; ``TypeError`` naming ``who`` and the entry for a table
    that is not a mapping of str to a callable or a pair of callables, or (``framework="numpy"``) an entry
    without its ``vjp``."""
    if not isinstance(table, Mapping):
        raise TypeError(f"{who}: the table must be a dict {{op name: fn or (fn, vjp)}}, got "
                        f"{type(table).__name__}")
    out = {}
    for name, entry in table.items():
        pair = tuple(entry) if isinstance(entry, (tuple, list)) else (entry, None)
        if not isinstance(name, str) or len(pair) != 2 or not callable(pair[0]) \
                or not (pair[1] is None or callable(pair[1])):
            raise TypeError(f"{who}: table[{name!r}] must be a callable fn or a pair (fn, vjp) under a str op "
                            f"name, got {type(entry).__name__}")
        if framework == "numpy" and pair[1] is None:
            raise TypeError(f"{who}: table[{name!r}]: framework 'numpy' has no autograd: give a pair (fn, vjp) "
                            f"with vjp(inputs, outputs, cotangent, **kwargs) -> grads")
        out[name] = pair
    return out


def _tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _grads(grads, n):
    grads = grads if isinstance(grads, (tuple, list)) else (grads,) if n == 1 else grads
    if not isinstance(grads, (tuple, list)) or len(grads) != n:
        raise ValueError(f"vjp must return one gradient per input ({n}, None for integer inputs), got "
                         f"{type(grads).__name__}")
    return grads


def _numpy(fn, vjp, inputs, kwargs, cots):
    inputs = tuple(np.array(x, copy=True) for x in inputs)
    outs = fn(*inputs, **kwargs)
    cot = cots[0] if len(cots) == 1 else tuple(cots)
    return _tuple(outs), _grads(vjp(inputs, outs, cot, **kwargs), len(inputs))


def _torch(fn, vjp, inputs, kwargs, cots):
    import torch
    t_in = []
    for x in inputs:
        t = torch.from_numpy(np.array(x, copy=True))
        t_in.append(t.requires_grad_(True) if t.is_floating_point() else t)
    kw = {k: torch.from_numpy(v.copy()) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    outs = fn(*t_in, **kw)
    t_outs = _tuple(outs)
    t_cots = [torch.from_numpy(np.array(c)).to(o.dtype) for c, o in zip(cots, t_outs)]
    if vjp is not None:
        return t_outs, _grads(vjp(tuple(t_in), outs, t_cots[0] if len(cots) == 1 else tuple(t_cots), **kw),
                              len(inputs))
    diff = [t for t in t_in if t.requires_grad]
    grads = iter(torch.autograd.grad(t_outs, diff, t_cots, allow_unused=True))
    return t_outs, [(_zeros_if_none(next(grads), t) if t.requires_grad else None) for t in t_in]


def _zeros_if_none(g, t):
    return np.zeros(tuple(t.shape), dtype=str(t.dtype).replace("torch.", "")) if g is None else g


def _jax(fn, vjp, inputs, kwargs, cots):
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    j_in = [jnp.asarray(x) for x in inputs]
    kw = {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    j_cots = tuple(jnp.asarray(c) for c in cots)
    if vjp is not None:
        outs = fn(*j_in, **kw)
        return _tuple(outs), _grads(vjp(tuple(j_in), outs, j_cots[0] if len(cots) == 1 else j_cots, **kw),
                                    len(inputs))
    diff = [k for k, x in enumerate(inputs) if x.dtype.kind == "f"]

    def f(*d):
        args = list(j_in)
        for k, v in zip(diff, d):
            args[k] = v
        return _tuple(fn(*args, **kw))
    outs, pullback = jax.vjp(f, *(j_in[k] for k in diff))
    grads = iter(pullback(j_cots[:len(outs)]))
    return outs, [next(grads) if k in diff else None for k in range(len(inputs))]


_CALLS = {"numpy": _numpy, "torch": _torch, "jax": _jax}


def _check_framework(who, framework):
    if framework not in FRAMEWORKS:
        raise ValueError(f"{who}: framework must be one of {list(FRAMEWORKS)}, got {framework!r}")
    if framework != "numpy":
        try:
            importlib.import_module(framework)
        except ImportError:
            raise ImportError(f"{who}: framework {framework!r} is not installed") from None


def table_runner(table, framework="numpy"):
    """A runner ``run(spec, inputs, kwargs, cotangents) -> (outputs, grads)`` (host NumPy arrays; ``None``
    for the gradient of an integer input) calling ``table[spec.name]`` in ``framework``; see the module
    docstring for the table's form. ``ValueError`` / ``TypeError`` for a bad table or framework,
    ``ImportError`` when the framework is not installed."""
    who = "table_runner"
    _check_framework(who, framework)
    table = check_table(table, who, framework)
    call = _CALLS[framework]

    def run(spec, inputs, kwargs, cotangents):
        fn, vjp = table[spec.name]
        outs, grads = call(fn, vjp, inputs, kwargs, cotangents)
        outs = [to_host(o, f"{spec.name}: output {k}") for k, o in enumerate(outs)]
        return outs, [None if g is None else to_host(g, f"{spec.name}: gradient {k}") for k, g in enumerate(grads)]
    return run


def selected(table, ops="*", who="record") -> list:
    """The names of ``table`` matching ``ops`` (comma-separated shell patterns), in the table's order."""
    pats = check_patterns(ops, who, "ops")
    return [n for n in table if any(fnmatch.fnmatchcase(n, p) for p in pats)]


def _recorded(spec, index, sample, dtype, run):
    """(arrays, entry) of one sample with the implementation's outputs and gradients in place of ours."""
    arrays, entry = fixture(spec, index, sample, dtype)
    n_in, n_out = len(entry["inputs"]), len(entry["outputs"])
    inputs = tuple(arrays[f"input_{k}"] for k in range(n_in))
    cots = tuple(arrays[f"cotangent_{k}"] for k in range(n_out))
    outs, grads = run(spec, inputs, cast_kwargs(sample.kwargs, np.dtype(dtype)), cots)
    if len(outs) != n_out:
        raise ValueError(f"fn returned {len(outs)} output(s), the op has {n_out}")
    for k, (y, meta) in enumerate(zip(outs, entry["outputs"])):
        if list(y.shape) != meta["shape"]:
            raise ValueError(f"output {k} has shape {y.shape}, the op's is {tuple(meta['shape'])}")
        arrays[f"output_{k}"] = np.asarray(y, dtype=np.float64)
    for k, g in enumerate(grads):
        arrays.pop(f"grad_{k}", None)
        if g is not None and arrays[f"input_{k}"].dtype.kind == "f":
            arrays[f"grad_{k}"] = np.asarray(g, dtype=np.float64)
    return arrays, entry


def _into_new_dir(out, fill):
    """``fill(tmp)`` into a temporary directory beside ``out``, renamed to ``out`` when it returns; on any
    failure the temporary directory is removed and ``out`` is left as it was."""
    out = os.path.abspath(os.fspath(out))
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    try:
        result = fill(tmp)
        if os.path.isdir(out):
            os.rmdir(out)                              # empty (checked by the caller)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def record(table, out, *, ops="*", dtypes=("float64", "float32"), framework="numpy") -> dict:
    """Run someone's functions on every registered sample of their ops and write their outputs and
    gradients as a fixture directory, checked by ``orthoref oracle check --against out``.

    Parameters
    ----------
    table : dict or str
        ``{op name: fn or (fn, vjp)}`` (see the module docstring), or ``"MODULE:TABLE"`` naming one
        (:func:`load_table`).
    out : str or os.PathLike
        A new or empty directory. It is written in a temporary directory beside it and renamed into place
        at the end, so a failure leaves no partial directory.
    ops : str or list of str
        Comma-separated shell patterns selecting the table's entries (default all).
    dtypes : tuple of str
        ``"float64"`` and/or ``"float32"``: each sample's floating inputs are cast to each, and the
        functions called on them.
    framework : {"numpy", "torch", "jax"}
        The arrays the functions take and return, and where gradients come from (``numpy``: the table's
        ``vjp``; ``torch``/``jax``: the ``vjp`` if given, else autograd).

    Returns
    -------
    dict
        The manifest written (:mod:`orthoref.oracle.fixtures`), with ``recorded``:
        ``{"framework", "impl"}``.

    Raises
    ------
    ValueError
        An op of the table that is not registered (the message lists close names), no entry matching
        ``ops``, a bad ``dtypes``/``framework``, an ``out`` that is a file or a non-empty directory.
    TypeError
        A table of the wrong form, a ``numpy`` entry without ``vjp``.
    ImportError
        ``framework`` is not installed.
    RuntimeError
        A function raised or returned the wrong number or shapes of outputs or gradients: the message
        names the op, the sample and the dtype; nothing is written.
    """
    who = "record"
    impl = table if isinstance(table, str) else None
    if impl is not None:
        table = load_table(impl)
    dtypes = check_dtypes(who, dtypes)
    run = table_runner(table, framework)
    chosen = selected(table, ops, who)
    if not chosen:
        raise ValueError(f"{who}: ops: no entry of the table matches {ops!r} (entries: {list(table)})")
    unknown = [n for n in chosen if n not in set(names())]
    if unknown:
        raise ValueError(f"{who}: {'; '.join(unknown_op(n) for n in unknown)}")
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"{who}: out must be a str or os.PathLike, got {type(out).__name__}")
    if os.path.lexists(out) and not (os.path.isdir(out) and not os.listdir(out)):
        raise ValueError(f"{who}: out {os.fspath(out)!r} exists and is not an empty directory (record into a new "
                         f"one)")

    def fill(tmp):
        entries = []
        for name in chosen:
            spec = get(name)
            for index, sample in enumerate(fixture_samples(spec)):
                for dtype in dtypes:
                    try:
                        arrays, entry = _recorded(spec, index, sample, dtype, run)
                    except Exception as exc:
                        raise RuntimeError(f"{who}: {name} sample {index} ({sample.label!r}, {dtype}): "
                                           f"{type(exc).__name__}: {exc}") from exc
                    entries.append(write_fixture(tmp, arrays, entry))
        return write_manifest(tmp, entries, recorded={"framework": framework, "impl": impl})
    return _into_new_dir(out, fill)
