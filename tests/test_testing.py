"""orthoref.testing (check / assert_conforms on a user's implementation) and the pytest plugin
(orthoref.pytest_plugin); the README's examples are run exactly as printed."""
import doctest
import json
import re
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest

from orthoref import testing
from orthoref.oracle.registry import Sample

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]

# The README's examples: each is run below exactly as written here, and, once the README holds it under its
# marker, exactly as written there.
TORCH_EXAMPLE = '''\
import torch, orthoref.testing
def soft_orthogonality(W, weight=1.0, gram="auto"):    # yours: λ‖G − I‖²_F, G the smaller Gram matrix
    M = W.reshape(len(W), -1); G = M @ M.T if gram == "rows" or (gram == "auto" and len(M) <= M.shape[1]) else M.T @ M
    return weight * ((G - torch.eye(len(G), dtype=W.dtype)) ** 2).sum()
orthoref.testing.assert_conforms("soft_orthogonality", soft_orthogonality, framework="torch")
'''
JAX_EXAMPLE = '''\
import jax.numpy as jnp, orthoref.testing
def soft_orthogonality(W, weight=1.0, gram="auto"):    # yours: λ‖G − I‖²_F, G the smaller Gram matrix
    M = W.reshape(len(W), -1); G = M @ M.T if gram == "rows" or (gram == "auto" and len(M) <= M.shape[1]) else M.T @ M
    return weight * ((G - jnp.eye(len(G), dtype=W.dtype)) ** 2).sum()
orthoref.testing.assert_conforms("soft_orthogonality", soft_orthogonality, framework="jax")
'''
PLUGIN_EXAMPLE = '''\
import pytest                                          # test_kernels.py: one test per sample and dtype
from my_kernels import soft_orthogonality
@pytest.mark.orthoref("soft_orthogonality")
def test_soft_orthogonality(orthoref_sample):
    orthoref_sample.check(soft_orthogonality, framework="torch")
'''

# A correct and a planted-bug torch soft orthogonality (the autograd.Function with the gradient
# factor 2 instead of 4), as module sources so that pytester can import them too.
TORCH_KERNELS = '''
import torch


def _gram(W, gram):
    M = W.reshape(W.shape[0], -1)
    rows = gram == "rows" or (gram == "auto" and M.shape[0] <= M.shape[1])
    G = M @ M.T if rows else M.T @ M
    return G - torch.eye(G.shape[0], dtype=W.dtype), M, rows


def soft_orthogonality(W, weight=1.0, gram="auto"):
    N, _, _ = _gram(W, gram)
    return weight * (N ** 2).sum()


class _SO(torch.autograd.Function):
    @staticmethod
    def forward(ctx, W, weight, gram):
        N, M, rows = _gram(W, gram)
        ctx.save_for_backward(N, M)
        ctx.rows, ctx.weight, ctx.shape = rows, weight, W.shape
        return weight * (N ** 2).sum()

    @staticmethod
    def backward(ctx, g):
        N, M = ctx.saved_tensors
        dM = 2 * ctx.weight * (N @ M if ctx.rows else M @ N)      # planted bug: the factor is 4
        return (g * dM).reshape(ctx.shape), None, None


def buggy_soft_orthogonality(W, weight=1.0, gram="auto"):
    return _SO.apply(W, weight, gram)
'''


@pytest.fixture(scope="module")
def kernels():
    pytest.importorskip("torch")
    namespace = {}
    exec(compile(TORCH_KERNELS, "torch_kernels", "exec"), namespace)
    return namespace


# ------------------------------------------------------------------------------------------------- torch

def test_correct_torch_implementation_passes_in_float64_and_float32(kernels):
    report = testing.check("soft_orthogonality", kernels["soft_orthogonality"], framework="torch")
    assert report.passed, str(report)
    n = len(testing.cases("soft_orthogonality", dtypes=("float64",)))
    assert [r.dtype for r in report.rows] == ["float64", "float32"] * n
    for row in report.rows:
        assert row.value_error is not None and len(row.grad_errors) == 1
        if row.dtype == "float64":
            assert row.why == "float64: op torch_rtol"
        elif not row.label.startswith("stress"):                        # a standard sample: the fixed floor
            assert row.why == "float32: FLOAT32_RTOL"
    text = str(report)
    assert "PASS" in text and "0-wide" in text and "tolerance" in text
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data and data["passed"] is True
    assert {"value_error", "grad_errors", "rtol", "tolerance", "passed", "error"} <= set(data["rows"][0])


def test_planted_bug_fails_with_a_table_naming_the_samples(kernels):
    report = testing.check("soft_orthogonality", kernels["buggy_soft_orthogonality"], framework="torch")
    assert not report.passed
    assert all(not r.passed for r in report.rows)
    assert all(r.value_error < r.rtol for r in report.rows)                # the value is right,
    assert all(abs(r.grad_errors[0] - 0.5) < 1e-3 for r in report.rows)    # the gradient half of the truth
    with pytest.raises(AssertionError) as info:
        testing.assert_conforms("soft_orthogonality", kernels["buggy_soft_orthogonality"], framework="torch",
                                dtypes=("float32",))
    message = str(info.value)
    rows = len(testing.cases("soft_orthogonality", dtypes=("float32",)))
    assert f"FAIL ({rows} of {rows} rows)" in message
    for label in ("0-wide", "2-square", "4-tall_rows"):
        assert re.search(rf"{label}\s+float32\s+\S+\s+5\.0e-01.*FAIL", message), message


def test_the_cotangent_is_random_and_the_one_of_oracle_check():
    """The vjp gets the random cotangent ``orthoref oracle check`` uses for the sample (rounded to the
    dtype), and compare uses the same one: a backward pass that ignores it (the gradient of the sum) fails."""
    seen = []

    def linear(x, w, b):
        return x @ w.T + b

    def vjp(inputs, output, dy):
        seen.append(dy)
        x, w, _ = inputs
        dy2, x2 = dy.reshape(-1, dy.shape[-1]), x.reshape(-1, x.shape[-1])
        return dy @ w, dy2.T @ x2, dy2.sum(0)
    assert testing.check("linear", linear, vjp=vjp).passed
    gen = np.random.default_rng(zlib.crc32(b"linear/0/cotangent"))
    np.testing.assert_array_equal(seen[0], gen.standard_normal(seen[0].shape))
    assert seen[1].dtype == np.float32

    def vjp_of_the_sum(inputs, output, dy):
        return vjp(inputs, output, np.ones_like(dy))
    assert not any(r.passed for r in testing.check("linear", linear, vjp=vjp_of_the_sum).rows)


def test_value_only_with_grad_false(kernels):
    report = testing.check("soft_orthogonality", kernels["buggy_soft_orthogonality"], framework="torch",
                           grad=False)
    assert report.passed and all(r.grad_errors == [] for r in report.rows)


# --------------------------------------------------------------------------------------------- numpy + vjp

def _np_so(W, weight=1.0, gram="auto"):
    M = W.reshape(len(W), -1)
    rows = gram == "rows" or (gram == "auto" and M.shape[0] <= M.shape[1])
    G = M @ M.T if rows else M.T @ M
    return weight * ((G - np.eye(len(G), dtype=W.dtype)) ** 2).sum()


def _np_so_vjp(factor):
    def vjp(inputs, output, cotangent, weight=1.0, gram="auto"):      # fn's keywords come along
        (W,) = inputs
        M = W.reshape(len(W), -1)
        rows = gram == "rows" or (gram == "auto" and M.shape[0] <= M.shape[1])
        N = (M @ M.T if rows else M.T @ M) - np.eye(M.shape[0] if rows else M.shape[1], dtype=W.dtype)
        return ((cotangent * factor * weight * (N @ M if rows else M @ N)).reshape(W.shape),)
    return vjp


def test_numpy_implementation_with_a_user_vjp():
    report = testing.check("soft_orthogonality", _np_so, framework="numpy", vjp=_np_so_vjp(4))
    assert report.passed, str(report)
    assert all(r.grad_errors[0] < 1e-14 for r in report.rows if r.dtype == "float64")
    assert all(r.grad_errors[0] <= r.rtol for r in report.rows)
    for case in testing.cases("soft_orthogonality", dtypes=("float32",)):
        assert case.check(_np_so, vjp=_np_so_vjp(4)).passed
    bad = testing.check("soft_orthogonality", _np_so, framework="numpy", vjp=_np_so_vjp(2))
    assert not bad.passed and all(not r.passed for r in bad.rows)
    with pytest.raises(AssertionError, match="(?s)0-wide.*FAIL"):
        testing.cases("soft_orthogonality")[0].check(_np_so, vjp=_np_so_vjp(2))


def test_numpy_needs_a_vjp_for_gradients():
    with pytest.raises(ValueError, match="framework='numpy' has no autograd: grad=True needs vjp"):
        testing.check("soft_orthogonality", _np_so)
    assert testing.check("soft_orthogonality", _np_so, grad=False).passed


# ------------------------------------------------------------------------------------------------ kwargs

def test_kwargs_map_renames_and_callables(kernels):
    so = kernels["soft_orthogonality"]

    def renamed(W, lam=1.0, side="auto"):
        return so(W, lam, side)
    assert testing.check("soft_orthogonality", renamed, framework="torch",
                         kwargs_map={"weight": "lam", "gram": "side"}).passed
    assert testing.check("soft_orthogonality", lambda W, opts: so(W, *opts), framework="torch",
                         kwargs_map=lambda kw: {"opts": (kw.get("weight", 1.0), kw.get("gram", "auto"))}).passed
    with pytest.raises(TypeError, match="kwargs_map must be a dict"):
        testing.check("soft_orthogonality", renamed, framework="torch", kwargs_map={"weight": 3})


def test_a_keyword_fn_lacks_is_an_error_only_where_the_sample_sets_it(kernels):
    so = kernels["soft_orthogonality"]
    report = testing.check("soft_orthogonality", lambda W, weight=1.0: so(W, weight), framework="torch")
    by_label = {r.label: r for r in report.rows}
    assert all(by_label[label].passed for label in ("wide", "tall", "square", "conv"))   # gram left at "auto"
    bad = by_label["tall rows"]
    assert not bad.passed
    assert "fn does not take orthoref's keyword 'gram', which this sample sets to 'rows' (the default is " \
           "'auto')" in bad.error
    assert "kwargs_map={'gram': ...}" in str(report)


# -------------------------------------------------------------------------------------- failures, errors

def test_wrong_shape_exception_and_nan_are_failed_rows_not_crashes(kernels):
    torch = pytest.importorskip("torch")
    so = kernels["soft_orthogonality"]
    wrong = testing.check("soft_orthogonality", lambda W, weight=1.0, gram="auto": W.sum(0),
                          framework="torch", dtypes=("float64",))
    assert not wrong.passed
    assert "wrong output: ValueError: fn's output 0 has shape (5,), soft_orthogonality's has ()" in str(wrong)

    def boom(W, weight=1.0, gram="auto"):
        raise RuntimeError("kernel exploded")
    report = testing.check("soft_orthogonality", boom, framework="torch")
    assert not report.passed and all("fn raised: RuntimeError: kernel exploded" in r.error for r in report.rows)

    nan = testing.check("soft_orthogonality", lambda W, weight=1.0, gram="auto": so(W, weight, gram) * torch.nan,
                        framework="torch", dtypes=("float32",))
    assert not nan.passed and all(r.value_error == float("inf") for r in nan.rows)

    wrong_grads = testing.check("soft_orthogonality", _np_so, framework="numpy",
                                vjp=lambda inputs, output, cot: (np.ones(3),))
    assert not wrong_grads.passed and "their_grads[0] must have input 0's shape" in str(wrong_grads)
    raising_vjp = testing.check("soft_orthogonality", _np_so, framework="numpy",
                                vjp=lambda inputs, output, cot: 1 / 0)
    assert all(r.error.startswith("vjp raised: ZeroDivisionError") for r in raising_vjp.rows)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match=r"check: no registered op named 'soft_orthogonalty' \(argument name\); "
                                         r"close names: "
                                         r"soft_orthogonality"):
        testing.check("soft_orthogonalty", _np_so, grad=False)
    with pytest.raises(ValueError, match="no stress samples registered for kernel_slice_orthogonality"):
        testing.check("kernel_slice_orthogonality", _np_so, grad=False, samples="stress")
    with pytest.raises(ValueError, match="samples must be one of all, standard, stress"):
        testing.check("soft_orthogonality", _np_so, grad=False, samples="hard")
    with pytest.raises(ValueError, match="framework must be one of numpy, torch, jax, cupy"):
        testing.check("soft_orthogonality", _np_so, framework="tensorflow")
    with pytest.raises(ValueError, match="dtypes must be"):
        testing.check("soft_orthogonality", _np_so, grad=False, dtypes=("float16",))
    with pytest.raises(TypeError, match="fn must be callable"):
        testing.check("soft_orthogonality", None, grad=False)
    assert testing.check("soft_orthogonality", _np_so, grad=False, samples="standard").passed


def test_stress_selection_uses_the_label(monkeypatch):
    from orthoref.oracle.registry import get
    spec = get("soft_orthogonality")
    original = spec.sample

    def with_stress(rng, dtype):
        W = np.eye(4) + 1e-3 * rng.standard_normal((4, 4))
        return original(rng, dtype) + [Sample((W.astype(dtype),), {}, "stress near-orthogonal")]
    monkeypatch.setattr(spec, "sample", with_stress)
    monkeypatch.setattr(spec, "stress", None)                       # only the label marks the stress sample
    stress = testing.cases("soft_orthogonality", samples="stress")
    assert [c.id for c in stress] == ["soft_orthogonality-float64-6-stress_near-orthogonal",
                                      "soft_orthogonality-float32-6-stress_near-orthogonal"]
    assert all(c.stress for c in stress)
    assert not any(c.stress for c in testing.cases("soft_orthogonality", samples="standard"))
    assert len(testing.cases("soft_orthogonality")) == 14


def test_cases_are_the_samples_rounded_to_each_dtype():
    c64, c32 = testing.cases("srip", dtypes=("float64", "float32"))[:2]
    assert (c64.index, c64.label) == (c32.index, c32.label) and c64.id == "srip-float64-0-wide_n_iter=1"
    assert c32.inputs[0].dtype == np.float32 and c32.kwargs["v0"].dtype == np.float32
    np.testing.assert_array_equal(c32.inputs[0], c64.inputs[0].astype(np.float32))


def test_the_docstring_example_runs():
    pytest.importorskip("torch")
    result = doctest.testmod(testing, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 1 and result.failed == 0


# ------------------------------------------------------------------------------------------------- JAX

def test_jax_implementation_passes_and_a_bug_fails():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy

    def so(W, weight=1.0, gram="auto"):
        M = W.reshape(W.shape[0], -1)
        rows = gram == "rows" or (gram == "auto" and M.shape[0] <= M.shape[1])
        G = M @ M.T if rows else M.T @ M
        return weight * ((G - jnp.eye(G.shape[0], dtype=W.dtype)) ** 2).sum()
    report = testing.check("soft_orthogonality", so, framework="jax")
    assert report.passed, str(report)
    assert {r.dtype for r in report.rows} == {"float64", "float32"}
    assert report.rows[0].value_error < 1e-14          # float64 really ran in float64 (x64 enabled)

    @jax.custom_vjp
    def buggy(W):
        return so(W)

    def fwd(W):
        return so(W), W

    def bwd(W, g):
        M = W.reshape(W.shape[0], -1)
        N = M @ M.T - jnp.eye(M.shape[0], dtype=W.dtype)
        return ((2 * g * N @ M).reshape(W.shape),)      # planted bug: the factor is 4 (rows Gram)
    buggy.defvjp(fwd, bwd)
    bad = testing.check("soft_orthogonality", lambda W, weight=1.0: weight * buggy(W), framework="jax",
                        dtypes=("float64",))
    assert not bad.passed


# ---------------------------------------------------------------------------------------- README examples

def _readme_block(marker):
    """The Python block that follows ``<!-- MARKER -->`` in the README (``None`` while it has none)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- {marker} -->\s*```python\n(.*?)```", readme, re.S)
    return match.group(1) if match else None


@pytest.mark.parametrize("marker,example,module", [("testing-example-torch", TORCH_EXAMPLE, "torch"),
                                                   ("testing-example-jax", JAX_EXAMPLE, "jax")])
def test_readme_example_runs_as_printed(marker, example, module):
    pytest.importorskip(module)
    block = _readme_block(marker)
    if block is not None:
        assert block == example, f"the README's {marker} block differs from the example tested here"
    exec(compile(block or example, "README.md", "exec"), {})
    assert all(len(line) <= 120 for line in example.splitlines()) and len(example.splitlines()) == 5


# ----------------------------------------------------------------------------------------- pytest plugin

def _plugin_run(pytester, test_source, *args):
    pytester.makepyfile(my_kernels=TORCH_KERNELS, test_kernels=test_source)
    pytester.syspathinsert()
    return _runpytest(pytester, "-p", "no:cacheprovider", "-v", *args)


@pytest.fixture(autouse=True)
def _no_plugin_autoload(request, monkeypatch):
    """The inner pytest of ``pytester`` loads the plugin by name and nothing else automatically (where orthoref
    is installed, its entry point would load it a second time)."""
    if "pytester" in request.fixturenames:
        monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def _runpytest(pytester, *args):
    return pytester.runpytest("-p", "orthoref.pytest_plugin", *args)


def test_plugin_entry_point_is_declared():
    """``pip install orthoref`` makes pytest load the plugin (``pytest11`` entry point in pyproject.toml)."""
    import pathlib
    tomllib = pytest.importorskip("tomllib")
    meta = tomllib.loads((pathlib.Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["pytest11"] == {"orthoref": "orthoref.pytest_plugin"}


def test_plugin_marker_makes_one_test_per_sample(pytester):
    pytest.importorskip("torch")
    result = _plugin_run(pytester, PLUGIN_EXAMPLE)
    result.assert_outcomes(passed=len(testing.cases("soft_orthogonality")))
    result.stdout.fnmatch_lines(["*test_soft_orthogonality?soft_orthogonality-float64-0-wide? PASSED*",
                                 "*test_soft_orthogonality?soft_orthogonality-float32-4-tall_rows? PASSED*"])


def test_plugin_planted_bug_fails_each_sample(pytester):
    pytest.importorskip("torch")
    source = PLUGIN_EXAMPLE.replace("import soft_orthogonality", "import buggy_soft_orthogonality") \
        .replace("check(soft_orthogonality", "check(buggy_soft_orthogonality")
    result = _plugin_run(pytester, source)
    result.assert_outcomes(failed=len(testing.cases("soft_orthogonality")))
    result.stdout.fnmatch_lines(["*AssertionError*", "*2-square*float32*5.0e-01*FAIL*"])
    result.stdout.fnmatch_lines(["FAILED test_kernels.py::test_soft_orthogonality"
                                 "?soft_orthogonality-float32-2-square?*"])


def test_plugin_orthoref_cases_and_fixture_contents(pytester):
    pytest.importorskip("torch")
    source = textwrap.dedent('''
        import numpy as np
        import pytest
        from orthoref.pytest_plugin import orthoref_cases
        from my_kernels import soft_orthogonality

        @pytest.mark.parametrize("case", orthoref_cases("soft_orthogonality", dtypes=("float32",)))
        def test_cases(case):
            case.check(soft_orthogonality, framework="torch")

        @pytest.mark.orthoref("double_soft_orthogonality", dtypes=("float64",))
        def test_fixture(orthoref_sample):
            assert orthoref_sample.inputs[0].dtype == np.float64 and orthoref_sample.kwargs == {"weight": 0.7}

        def test_fixture_without_marker(orthoref_sample):
            pass
    ''')
    result = _plugin_run(pytester, source)
    expected = (len(testing.cases("soft_orthogonality", dtypes=("float32",)))
                + len(testing.cases("double_soft_orthogonality", dtypes=("float64",))))
    result.assert_outcomes(passed=expected, errors=1)
    result.stdout.fnmatch_lines(["*test_cases?soft_orthogonality-float32-5-wide_cols? PASSED*",
                                 "*test_fixture?double_soft_orthogonality-float64-3-conv? PASSED*",
                                 "*orthoref_sample needs @pytest.mark.orthoref*"])
    marker = _runpytest(pytester, "--markers")
    marker.stdout.fnmatch_lines(["@pytest.mark.orthoref(name, *"])
