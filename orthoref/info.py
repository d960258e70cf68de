"""``orthoref info``: what a bug report or a benchmark needs to say about the machine it ran on.

Versions of orthoref and of every optional library it uses, the CPU model and core count, each BLAS/OpenMP
pool NumPy, SciPy and PyTorch load (library, version, kernel architecture, threads), the array backends
available (CuPy: whether it imports and sees a GPU, and if not why), the active backend and the data in use —
in the spirit of ``torch.utils.collect_env``. Nothing is timed and nothing is written.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import json
import os

from . import backend
from .bench import machine_info

__all__ = ["environment", "format_environment"]

#: Optional libraries orthoref uses, by distribution name (the extra that installs each in parentheses).
OPTIONAL = {"torch": "torch", "jax": "jax", "cupy-cuda12x": "gpu", "threadpoolctl": "bench/test",
            "tqdm": "progress", "matplotlib": "plot", "asv": "bench", "hypothesis": "test",
            "geoopt": "claims tests", "muon-optimizer": "claims tests"}


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cupy_status():
    """``"available (N GPU)"`` or why not."""
    try:
        cupy = importlib.import_module("cupy")
    except Exception as exc:                       # ImportError, or a CUDA library that fails to load
        return f"not importable ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"imported, but no GPU ({type(exc).__name__})"
    return f"available ({n} GPU{'s' if n != 1 else ''})" if n else "imported, but no GPU"


def _threads():
    """``[(library, internal API, version, architecture, threads)]`` of every loaded BLAS/OpenMP pool."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return [(os.path.basename(p.get("filepath", "")), p.get("internal_api"), p.get("version"),
             p.get("architecture"), p.get("num_threads")) for p in threadpool_info()]


def environment() -> dict:
    """The machine and the software orthoref runs with, as a JSON-ready dict."""
    info = machine_info(threads=None)
    info.pop("threads", None)
    info.pop("threads_enforced", None)
    info["blas"] = [dict(zip(("library", "internal_api", "version", "architecture", "threads"), row))
                    for row in (_threads() or [])]
    try:
        import torch
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    info["optional"] = {dist: _version(dist) for dist in OPTIONAL}
    info["backends"] = {"numpy": "available", "cupy": _cupy_status()}
    info["active_backend"] = backend.active()
    info["ORTHOREF_BACKEND"] = os.environ.get("ORTHOREF_BACKEND")
    from .datasets import DATASETS, data_dir
    folder = data_dir()
    present = [n for n in DATASETS if all((folder / n / f).is_file() or (folder / n / f[:-3]).is_file()
                                          for f in DATASETS[n]["files"])]
    info["data"] = (f"bundled UCI digits; data directory {folder} (ORTHOREF_DATA): "
                    f"{', '.join(present) if present else 'no data set'} present (orthoref data list); "
                    f"other data: --data idx:DIR")
    return info


def format_environment(info) -> str:
    """The dict of :func:`environment` as aligned text lines."""
    lines = [f"orthoref {info['orthoref']}, Python {info['python']}, {info['platform']}",
             f"CPU: {info['cpu']} ({info['cpu_count']} logical cores, {info['machine']})",
             f"NumPy {info['numpy']}, SciPy {info.get('scipy', 'missing')}"]
    if "torch" in info:
        tb = info.get("torch_blas") or {}
        lines.append(f"PyTorch {info['torch']} (BLAS {tb.get('blas', '?')}, CPU capability "
                     f"{tb.get('cpu_capability', '?')}, {info.get('torch_threads', '?')} threads)")
    lines.append("BLAS/OpenMP pools:" if info["blas"] else "BLAS/OpenMP pools: unknown (pip install threadpoolctl)")
    for b in info["blas"]:
        name = " ".join(str(x) for x in (b["internal_api"] or "?", b["version"], b["architecture"]) if x)
        lines.append(f"  {name} ({b['library']}): {b['threads']} threads")
    lines.append("optional: " + ", ".join(f"{k} {v}" if v else f"{k} missing ({OPTIONAL[k]})"
                                         for k, v in info["optional"].items()))
    lines.append("backends: " + ", ".join(f"{k} {v}" for k, v in info["backends"].items())
                 + f"; active: {info['active_backend']}")
    lines.append(f"data: {info['data']}")
    return "\n".join(lines)


def main(args) -> int:
    """``orthoref info [--json]``."""
    info = environment()
    print(json.dumps(info, indent=1, sort_keys=True) if args.json else format_environment(info))
    return 0
