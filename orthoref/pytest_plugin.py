"""pytest plugin: one test per registered sample of an orthoref op, for a framework's own test-suite.

Installed as the ``pytest11`` entry point ``orthoref`` (or loaded with ``-p orthoref.pytest_plugin``)::

    import pytest, torch

    @pytest.mark.orthoref("soft_orthogonality")            # dtypes=..., samples=... as orthoref.testing.cases
    def test_so(orthoref_sample):
        orthoref_sample.check(my_soft_orthogonality, framework="torch")

runs ``test_so`` once per sample and dtype, with ids such as ``soft_orthogonality-float64-2-square``.
Without the marker, :func:`orthoref_cases` gives the same cases to ``@pytest.mark.parametrize``::

    @pytest.mark.parametrize("case", orthoref_cases("soft_orthogonality", dtypes=("float32",)))
    def test_so32(case):
        case.check(my_soft_orthogonality, framework="torch")

Each case is an :class:`orthoref.testing.Case`: ``.inputs`` (NumPy, in the case's dtype), ``.kwargs``,
``.check(fn, framework=..., grad=True, vjp=None, kwargs_map=None)`` (asserts, the message holds the table).
"""
from __future__ import annotations

import pytest

from .testing import cases

__all__ = ["orthoref_cases", "orthoref_sample", "pytest_configure", "pytest_generate_tests"]

_MARKER = ("orthoref(name, dtypes=('float64', 'float32'), samples='all'): run the test once per registered "
           "sample of the orthoref op NAME, given as the fixture orthoref_sample")


def orthoref_cases(name, dtypes=("float64", "float32"), samples="all", seed=0) -> list:
    """The cases of :func:`orthoref.testing.cases` as ``pytest.param`` objects with readable ids, for
    ``@pytest.mark.parametrize("case", orthoref_cases("soft_orthogonality"))``.

    Parameters
    ----------
    name, dtypes, samples, seed
        As :func:`orthoref.testing.cases`.

    Returns
    -------
    list of pytest.param
        One per (sample, dtype), id ``NAME-DTYPE-INDEX-LABEL``.
    """
    return [pytest.param(case, id=case.id) for case in cases(name, dtypes, samples, seed)]


def pytest_configure(config):
    config.addinivalue_line("markers", _MARKER)


def pytest_generate_tests(metafunc):
    marker = metafunc.definition.get_closest_marker("orthoref")
    if marker is None:
        return
    if "orthoref_sample" not in metafunc.fixturenames:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: @pytest.mark.orthoref needs the test to take the "
                                f"fixture orthoref_sample")
    params = orthoref_cases(*marker.args, **marker.kwargs)
    metafunc.parametrize("orthoref_sample", [p.values[0] for p in params], ids=[p.id for p in params],
                         indirect=True)


@pytest.fixture
def orthoref_sample(request):
    """One registered sample of the op named by the test's ``@pytest.mark.orthoref("NAME")`` marker (an
    :class:`orthoref.testing.Case`)."""
    if not hasattr(request, "param"):
        raise pytest.UsageError(f"{request.node.nodeid}: the fixture orthoref_sample needs "
                                f"@pytest.mark.orthoref(\"OP NAME\") on the test")
    return request.param
