"""NumPy / CuPy switch.

Array code takes its module from its arrays (CuPy's documented idiom)::

    xp = get_array_module(x)

and never calls a NumPy-only function where CuPy lacks one; what the two libraries do differently goes
through the small shims at the bottom of this file. The *active* backend (``use``, or the environment
variable ``ORTHOREF_BACKEND``) only decides where new arrays are created: parameters, initial states,
``asarray``. Random draws always happen on the host (``host_rng``) so NumPy and CuPy runs start identical.
"""
from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

__all__ = [
    "BACKENDS", "use", "using", "active", "get_backend", "get_array_module", "asarray", "to_numpy",
    "host_rng", "cupy_available", "on_host", "erf",
]

#: The array backends :func:`set_backend` accepts.
BACKENDS = ("numpy", "cupy")
_CUPY_HINT = ("CuPy is not installed (or cannot be imported). Install the extra that matches your CUDA, "
              "e.g. `pip install 'orthoref[gpu]'` (cupy-cuda12x) or `pip install cupy-cuda11x`")


def _import_cupy():
    try:
        import cupy  # noqa: F401
    except Exception as exc:  # ImportError, or a CUDA library failing to load
        raise ImportError(f"{_CUPY_HINT}; the import failed with: {exc!r}") from exc
    return cupy


def _check_name(name):
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


_active = _check_name(os.environ.get("ORTHOREF_BACKEND", "numpy").strip().lower() or "numpy")


def use(name: str) -> None:
    """Make ``name`` ("numpy" or "cupy") the backend where new arrays are created.

    Raises ``ImportError`` with install instructions when CuPy is asked for and missing.
    """
    global _active
    _check_name(name)
    if name == "cupy":
        _import_cupy()
    _active = name


@contextlib.contextmanager
def using(name: str):
    """Context manager: ``with using("cupy"): ...`` restores the previous backend on exit."""
    previous = _active
    use(name)
    try:
        yield get_backend()
    finally:
        use(previous)


def active() -> str:
    """Name of the active backend."""
    return _active


def get_backend():
    """The array module of the active backend (``numpy`` or ``cupy``)."""
    return _import_cupy() if _active == "cupy" else np


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    try:
        cupy = _import_cupy()
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def get_array_module(*arrays):
    """``cupy`` if any argument is a CuPy array, else ``numpy`` (never imports CuPy itself)."""
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        return cupy.get_array_module(*arrays)
    return np


def asarray(a, dtype=None):
    """``a`` as an array of the active backend (a copy crosses devices, none otherwise)."""
    return get_backend().asarray(a, dtype=dtype)


def to_numpy(a):
    """``a`` as a NumPy array on the host (``.get()`` for CuPy arrays)."""
    if get_array_module(a) is not np:
        return a.get()
    return np.asarray(a)


def on_host(fn, *arrays):
    """``fn(*arrays)`` computed on host copies of ``arrays``, its array result (or tuple of arrays) moved
    back to their device: the explicit host round trip for a routine CuPy lacks (SciPy's ``expm_frechet``,
    LAPACK's ``geqrf`` reflectors). NumPy arrays are passed through untouched, so NumPy results are exactly
    ``fn(*arrays)``."""
    xp = get_array_module(*arrays)
    if xp is np:
        return fn(*arrays)
    out = fn(*(to_numpy(a) for a in arrays))
    return tuple(xp.asarray(o) for o in out) if isinstance(out, tuple) else xp.asarray(out)


def host_rng(seed=None, who="host_rng") -> np.random.Generator:
    """A host ``numpy.random.Generator``: from ``None`` (fresh entropy), an int seed, or passed through.

    Global RNG state is never used. A legacy ``RandomState`` is refused so that draws stay reproducible
    across the two backends.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.default_rng()
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)):
        if seed < 0:
            raise ValueError(f"{who}: rng must be None, a non-negative int seed or a numpy.random.Generator, "
                             f"got {int(seed)}")
        return np.random.default_rng(int(seed))
    raise TypeError(f"{who}: rng must be None, an int seed or a numpy.random.Generator, got "
                    f"{type(seed).__name__}")


# ---------------------------------------------------------------------------------------------------------
# Shims: functions that live in different places (or do different things) in NumPy/SciPy and CuPy.

def erf(x):
    """Error function elementwise, on the backend of ``x``."""
    xp = get_array_module(x)
    if xp is np:
        from scipy.special import erf as _erf
    else:
        from cupyx.scipy.special import erf as _erf
    return _erf(x)
