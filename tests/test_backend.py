"""Backend switch, host RNG, and the check that every xp.<name> the package calls exists in CuPy."""
import ast
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from orthoref import backend

ROOT = pathlib.Path(__file__).resolve().parents[1]
NAMES_FILE = ROOT / "tests" / "data" / "cupy_namespace.txt"
SUBMODULES = {"linalg", "lib", "stride_tricks", "fft"}
CUPY_MISSING = not backend.cupy_available()


def _attribute_chain(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def xp_names_used():
    """Every ``xp.<name>`` / ``xp.<sub>.<name>`` (dotted after ``xp``) in the package's source."""
    used = {}
    for path in sorted((ROOT / "orthoref").rglob("*.py")):
        for name in xp_names_in(path.read_text()):
            used.setdefault(name, path.relative_to(ROOT))
    return used


def xp_names_in(source):
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            chain = _attribute_chain(node)
            if chain and chain[0] == "xp" and len(chain) >= 2:
                k = 2
                while k < len(chain) and chain[k - 1] in SUBMODULES:
                    k += 1
                names.add(".".join(chain[1:k]))
    return {n for n in names if n.split(".")[-1] not in SUBMODULES}


def cupy_names():
    lines = NAMES_FILE.read_text().splitlines()
    return {ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")}


def write_cupy_names():  # pragma: no cover - maintenance helper, needs CuPy
    import cupy
    mods = {"": cupy, "linalg.": cupy.linalg, "lib.stride_tricks.": cupy.lib.stride_tricks, "fft.": cupy.fft}
    names = sorted({p + n for p, m in mods.items() for n in dir(m) if not n.startswith("_")})
    head = NAMES_FILE.read_text().splitlines()[:3]
    NAMES_FILE.write_text("\n".join(head + names) + "\n")


def test_every_xp_name_exists_in_cupy():
    used = xp_names_used()
    assert used, "the scan found no xp.<name> at all: the scanner is broken"
    known = cupy_names()
    missing = {n: str(p) for n, p in used.items() if n not in known}
    assert not missing, f"xp names that CuPy lacks (name: first file): {missing}"


def test_every_xp_name_exists_in_live_cupy():
    cupy = pytest.importorskip("cupy")
    for name in xp_names_used():
        obj = cupy
        for part in name.split("."):
            assert hasattr(obj, part), f"cupy has no {name}"
            obj = getattr(obj, part)


def test_scanner_follows_submodules():
    src = "y = xp.linalg.qr(a)\nz = xp.lib.stride_tricks.as_strided(x)\nw = xp.maximum(x, 0).sum()\nnp.foo(x)\n"
    assert xp_names_in(src) == {"linalg.qr", "lib.stride_tricks.as_strided", "maximum"}


def test_default_backend_is_numpy():
    assert backend.active() in backend.BACKENDS
    assert backend.get_array_module(np.ones(2)) is np
    assert backend.get_array_module(np.ones(2), 3.0) is np


def test_use_rejects_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        backend.use("jax")


@pytest.mark.skipif(not CUPY_MISSING, reason="CuPy is installed with a GPU")
def test_asking_for_missing_cupy_says_how_to_install():
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy imports here; the missing-CuPy message cannot be shown")
    except ImportError:
        pass
    with pytest.raises(ImportError, match="pip install"):
        backend.use("cupy")
    assert backend.active() == "numpy"


def test_environment_variable_selects_backend():
    code = "import orthoref.backend as b; print(b.active())"
    env = dict(os.environ, ORTHOREF_BACKEND="numpy")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "numpy"
    env["ORTHOREF_BACKEND"] = "tensorflow"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "backend must be one of" in bad.stderr


def test_import_never_needs_cupy():
    code = ("import sys; sys.modules['cupy'] = None\n"
            "import orthoref, orthoref.nn, orthoref.optim, orthoref.oracle\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_using_restores_previous():
    with backend.using("numpy") as xp:
        assert xp is np
    assert backend.active() == "numpy"


def test_asarray_and_to_numpy():
    a = backend.asarray([1.0, 2.0], dtype=np.float32)
    assert isinstance(a, np.ndarray) and a.dtype == np.float32
    h = backend.to_numpy(a)
    assert isinstance(h, np.ndarray) and np.array_equal(h, [1.0, 2.0])


def test_host_rng():
    g = np.random.default_rng(3)
    assert backend.host_rng(g) is g
    assert backend.host_rng(7).integers(1 << 30) == np.random.default_rng(7).integers(1 << 30)
    assert isinstance(backend.host_rng(None), np.random.Generator)
    with pytest.raises(TypeError, match="rng"):
        backend.host_rng(np.random.RandomState(0))
    with pytest.raises(TypeError, match="rng"):
        backend.host_rng(1.5)


def test_erf_matches_scipy():
    from scipy.special import erf
    x = np.linspace(-3, 3, 7)
    np.testing.assert_array_equal(backend.erf(x), erf(x))
