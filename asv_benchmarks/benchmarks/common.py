"""The base class and helpers of the benchmark modules (SciPy's ``benchmarks/common.py``); no benchmarks here.

asv imports the suite as a package (``benchmarks``, this directory), so the modules import this one as
``from .common import ...``; the test suite imports them the same way (``tests/test_cli_bench.py``).

Every class of orthoref's own code takes ``dtype`` and ``backend`` ("numpy" or "cupy") as its last two
parameters; ``require`` in ``setup`` raises ``NotImplementedError`` -- asv's "skipped" -- where CuPy or a GPU
is missing. Inputs are drawn on the host (seeded) and moved with ``orthoref.backend.asarray``; new arrays are
created under ``orthoref.backend.using(name)``. A timed function on the GPU ends with ``sync(name)`` so that
asv measures the kernels and not only their launch. The ``Torch*`` classes time the same work in PyTorch CPU
(``require_torch``). Names of ops, maps, regularizers, optimizers and initializers come from the package's
own tables and its op registry (``registry_ops``), never from a list written here.
"""
import os

import numpy as np

from orthoref import backend
from orthoref.oracle.registry import all_specs

try:
    import torch                       # imported here so that asv's forkserver imports it once
except ImportError:                    # the Torch* comparison lines are then skipped
    torch = None

#: ``ORTHOREF_ASV_PROFILE``: "regular" (default) is the full grid; "fast" (for CI's "does every benchmark
#: still run" check) keeps the smallest size, float32 only and the CuPy backend only where CuPy sees a GPU,
#: so every benchmark function and every method/regularizer/optimizer still runs once. Results of a
#: "fast" run are not comparable with the history: use it with ``--dry-run``.
PROFILE = os.environ.get("ORTHOREF_ASV_PROFILE", "regular").strip().lower() or "regular"
if PROFILE not in ("regular", "fast"):
    raise ValueError(f"ORTHOREF_ASV_PROFILE must be 'regular' or 'fast', got {PROFILE!r}")

DTYPES = ["float32"] if PROFILE == "fast" else ["float32", "float64"]
BACKENDS = list(backend.BACKENDS)
if PROFILE == "fast" and not backend.cupy_available():
    BACKENDS = ["numpy"]                 # "fast" runs what this machine can run, no parameter sets to skip


class Benchmark:
    """Base of every benchmark class: asv's options shared by the suite. Subclasses declare their grid with
    ``params, param_names = grid(name=values, ...)``."""
    timeout = 120                        # seconds for one parameter set (setup, warm-up and repeats)


def grid(**axes):
    """``(params, param_names)`` of an asv parameter grid, the axes in the order given."""
    return tuple(list(values) for values in axes.values()), list(axes)


def sizes(values):
    """The size parameter ``values`` of a benchmark (only the first, the smallest, in the "fast" profile)."""
    return list(values[:1]) if PROFILE == "fast" else list(values)


def registry_ops(functions):
    """``{registry name: function name}`` of every registered op named after a key of ``functions`` -- the
    key itself or the key followed by ``_<variant>`` (``retract_qr`` → ``retract``, ``srip_exact`` → ``srip``;
    the longest key wins) -- in registry order."""
    out = {}
    for spec in all_specs():
        parts = spec.name.split("_")
        for k in range(len(parts), 0, -1):
            if "_".join(parts[:k]) in functions:
                out[spec.name] = "_".join(parts[:k])
                break
    return out


def require(name):
    """``NotImplementedError`` (asv: skip this parameter set) unless backend ``name`` can run here."""
    if name not in BACKENDS:
        raise NotImplementedError(f"unknown backend {name!r}")
    if name == "cupy" and not backend.cupy_available():
        raise NotImplementedError("CuPy or a GPU is missing")


def require_torch():
    """The ``torch`` module, or ``NotImplementedError`` (asv: skip) where PyTorch is not installed."""
    if torch is None:
        raise NotImplementedError("PyTorch is not installed")
    return torch


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


def gram_error(Q, ord=2):
    """``‖QᵀQ − I‖`` of the smaller Gram (``Q Qᵀ`` for a wide ``Q``), in float64 on the host: ``ord=2`` the
    spectral norm, ``"fro"`` the Frobenius norm. The yardstick of the ``track_*`` benchmarks, kept here so
    that it does not move with the library's own metrics."""
    Q = host(Q).astype(np.float64)
    G = Q.T @ Q if Q.shape[-2] >= Q.shape[-1] else Q @ Q.T
    return float(np.linalg.norm(G - np.eye(G.shape[-1]), ord=ord))
