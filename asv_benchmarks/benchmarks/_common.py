"""Helpers shared by the benchmark modules (no benchmarks here).

Every benchmark class takes a ``backend`` parameter ("numpy" or "cupy"); ``require`` in ``setup`` raises
``NotImplementedError`` -- asv's "skipped" -- where CuPy or a GPU is missing. Inputs are drawn on the host
(seeded) and moved with ``orthoref.backend.asarray``; new arrays are created under
``orthoref.backend.using(name)``. A timed function on the GPU ends with ``sync(name)`` so that asv measures
the kernels and not only their launch.
"""
import os

import numpy as np

from orthoref import backend

#: ``ORTHOREF_ASV_PROFILE``: "regular" (default) is the full grid; "fast" (for CI's "does every benchmark
#: still run" check) keeps the smallest size, float32 only and the CuPy backend only where CuPy sees a GPU,
#: so every benchmark function and every method/regularizer/optimizer still runs once. Results of a
#: "fast" run are not comparable with the history: use it with ``--dry-run``.
PROFILE = os.environ.get("ORTHOREF_ASV_PROFILE", "regular").strip().lower() or "regular"
if PROFILE not in ("regular", "fast"):
    raise ValueError(f"ORTHOREF_ASV_PROFILE must be 'regular' or 'fast', got {PROFILE!r}")

DTYPES = ["float32"] if PROFILE == "fast" else ["float32", "float64"]
BACKENDS = ["numpy", "cupy"]
if PROFILE == "fast" and not backend.cupy_available():
    BACKENDS = ["numpy"]                 # "fast" runs what this machine can run, no parameter sets to skip


def sizes(values):
    """The size parameter ``values`` of a benchmark (only the first, the smallest, in the "fast" profile)."""
    return list(values[:1]) if PROFILE == "fast" else list(values)


def require(name):
    """``NotImplementedError`` (asv: skip this parameter set) unless backend ``name`` can run here."""
    if name not in BACKENDS:
        raise NotImplementedError(f"unknown backend {name!r}")
    if name == "cupy" and not backend.cupy_available():
        raise NotImplementedError("CuPy or a GPU is missing")


def sync(name):
    """Wait for the GPU work queued so far (nothing to do on NumPy)."""
    if name == "cupy":
        import cupy
        cupy.cuda.get_current_stream().synchronize()


def device(name, *host_arrays):
    """The host arrays as arrays of backend ``name`` (``None`` passes through); one array or a tuple."""
    with backend.using(name):
        out = tuple(None if a is None else backend.asarray(a) for a in host_arrays)
    return out[0] if len(out) == 1 else out


def host(a):
    """``a`` as a NumPy array (``.get()`` for a CuPy array)."""
    return backend.to_numpy(a)


def gaussian(shape, dtype, seed=0, scale=None):
    """A seeded Gaussian host array, scaled by ``1/sqrt(shape[-1])`` unless ``scale`` is given."""
    scale = 1.0 / np.sqrt(shape[-1]) if scale is None else scale
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)
