"""The layout of the package: no module reaches into another's private names, and the architecture notes
name only modules that exist.

A name with a leading underscore is private to its module. What several modules share lives under a
public name, in a module whose name says what it is (an underscore module such as ``orthoref/_io.py`` or
``orthoref/ops/_window.py`` is private to the package, not to itself: ``from .._io import atomic_write``
is the intended pattern).
"""
from __future__ import annotations

import ast
import glob
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "orthoref"


def _private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(path):
    return path.name == "__init__.py"


def _resolve(path, node):
    """The absolute dotted name ``node`` (an ``ImportFrom``) imports from."""
    if not node.level:
        return node.module
    base = _module_name(path).split(".")
    if not _is_package(path):
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_module(dotted):
    """Whether ``dotted`` (``orthoref.x.y``) is a module or package of this source tree."""
    target = ROOT.joinpath(*dotted.split("."))
    return target.with_suffix(".py").is_file() or (target / "__init__.py").is_file()


def violations(path, tree):
    """``(line, statement)`` for every import in ``tree`` (the source of ``path``) of a private name of an
    orthoref module. The imported name counts, not the alias: ``from . import x as _x`` is fine."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            source = _resolve(path, node)
            if not source or source.split(".")[0] != "orthoref":
                continue
            for alias in node.names:
                if _private(alias.name) and not _is_module(f"{source}.{alias.name}"):
                    yield node.lineno, f"from {'.' * node.level}{node.module or ''} import {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                # a private module is fine (`import orthoref.ops._window`); a private name in a module is not
                if parts[0] == "orthoref" and any(_private(part) and not _is_module(".".join(parts[:k + 1]))
                                                  for k, part in enumerate(parts)):
                    yield node.lineno, f"import {alias.name}"


def private_imports():
    """``file:line: statement`` for every import of another orthoref module's private name."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        found += [f"{path.relative_to(ROOT).as_posix()}:{line}: {text}" for line, text in violations(path, tree)]
    return found


def test_no_module_imports_another_modules_private_name():
    found = private_imports()
    assert not found, ("private names imported across modules (give them a public name in a module that "
                       "says what it is):\n" + "\n".join(found))


def test_the_private_import_check_sees_what_it_must():
    """The checker itself on a fixed source: relative and absolute forms, modules and names, aliases,
    imports inside functions, other packages' private names (not this test's business)."""
    source = """
from __future__ import annotations
from . import _io, train
from ._io import atomic_write
from .train import _atomic_write
from .ops._window import pair
from .ops.conv import _pair as pair2
from .ops import conv as _conv
from .ops import _window
from orthoref.ops.conv import _conv_geometry
from numpy.lib import _private_thing
import orthoref._io
import orthoref.ops._window
import orthoref.train._atomic_write
from .train import __version__
def f():
    from .plots import _grid
"""
    found = sorted(violations(PACKAGE / "studies.py", ast.parse(source)))
    assert found == [(5, "from .train import _atomic_write"), (7, "from .ops.conv import _pair"),
                     (10, "from orthoref.ops.conv import _conv_geometry"),
                     (14, "import orthoref.train._atomic_write"), (17, "from .plots import _grid")]
    assert _resolve(PACKAGE / "ops" / "pool.py", ast.parse("from .._checks import x").body[0]) == "orthoref._checks"
    assert _resolve(PACKAGE / "ops" / "__init__.py", ast.parse("from .conv import x").body[0]) == "orthoref.ops.conv"


# ---------------------------------------------------------------------------------------------------------
# docs/ARCHITECTURE.md names only modules that exist

ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
_PATH = re.compile(r"(?<![\w/.-])orthoref/[\w/*.-]*")


def architecture_paths(text):
    """The ``orthoref/...`` paths (files, folders, globs) that ``text`` names."""
    return sorted({m.group(0).rstrip(".") for m in _PATH.finditer(text)})


def test_architecture_names_only_modules_that_exist():
    assert ARCHITECTURE.is_file(), f"{ARCHITECTURE.relative_to(ROOT)} is missing (the floors of the house)"
    paths = architecture_paths(ARCHITECTURE.read_text(encoding="utf-8"))
    assert any(p.endswith(".py") for p in paths), "docs/ARCHITECTURE.md names no orthoref/...py module"
    missing = [p for p in paths
               if not (glob.glob(str(ROOT / p)) if "*" in p else (ROOT / p).exists())]
    assert not missing, f"docs/ARCHITECTURE.md names paths that do not exist: {missing}"


def test_architecture_path_pattern():
    text = ("The floors: orthoref/backend.py, then `orthoref/ops/_window.py`. Samples in orthoref/oracle/samples/ "
            "(orthoref/oracle/samples/*.py). See https://x.org/orthoref/blob.py and orthoref/ops/conv.py.")
    assert architecture_paths(text) == ["orthoref/backend.py", "orthoref/ops/_window.py", "orthoref/ops/conv.py",
                                        "orthoref/oracle/samples/", "orthoref/oracle/samples/*.py"]
