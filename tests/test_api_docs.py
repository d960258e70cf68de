"""The API reference (docs/api, Sphinx + numpydoc): it builds with warnings as errors, documents every name
of every documented module's ``__all__`` and every public module of the package, and its search page works
in a real headless browser (Chromium, as CI installs it)."""
import importlib
import importlib.util
import pathlib
import pkgutil
import re
import subprocess
import sys

import pytest

import orthoref

ROOT = pathlib.Path(__file__).resolve().parents[1]
SRC = ROOT / "docs" / "api"
#: Modules a user does not import: the command line, the pytest plugin and the oracle's sample tables.
NOT_DOCUMENTED = {"orthoref.cli", "orthoref.pytest_plugin"}


def _documented():
    return re.findall(r"^\.\. automodule:: (\S+)$", (SRC / "index.rst").read_text(), re.M)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    pytest.importorskip("sphinx")
    pytest.importorskip("numpydoc")
    out = tmp_path_factory.mktemp("api")
    res = subprocess.run([sys.executable, "-m", "sphinx", "-q", "-W", "--keep-going", "-b", "html", str(SRC),
                          str(out)], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-5000:]
    return out


def test_builds_with_warnings_as_errors_and_lists_every_public_name(built):
    from sphinx.util.inventory import InventoryFile
    with open(built / "objects.inv", "rb") as f:
        inventory = InventoryFile.load(f, "", lambda base, uri: uri)
    data = inventory.data if hasattr(inventory, "data") else inventory
    names = set().union(*(set(v) for v in data.values()))
    missing = [f"{m}.{n}" for m in _documented() for n in getattr(importlib.import_module(m), "__all__", ())
               if f"{m}.{n}" not in names]
    assert not missing, missing
    assert len(names) > 300


def test_every_public_module_is_documented():
    top = {m.name for m in pkgutil.iter_modules(orthoref.__path__, "orthoref.") if not m.name.split(".")[-1].startswith("_")}
    assert top - NOT_DOCUMENTED <= set(_documented()) | {"orthoref.ops", "orthoref.ortho"}, \
        sorted(top - NOT_DOCUMENTED - set(_documented()))


def test_a_page_renders_in_a_headless_browser(built):
    spec = importlib.util.spec_from_file_location("asv_dashboard_check", ROOT / "tools" / "asv_dashboard_check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    chromium = check.find_chromium()
    if chromium is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install -y chromium)")
    dom = check.dump_dom((built / "index.html").as_uri(), chromium, budget_ms=3000)
    for text in ("orthoref API reference", "soft_orthogonality", "newton_schulz", "class orthoref.nn.Linear"):
        assert text in re.sub(r"<[^>]+>", "", dom) or text in dom, text
