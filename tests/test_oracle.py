"""The oracle's public API (reference, compare), golden fixtures (export, determinism, the shipped set) and
``orthoref oracle check``; the README's PyTorch and JAX fixture consumers are run as written."""
import filecmp
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from orthoref import oracle
from orthoref.cli import main
from orthoref.oracle.reference import FLOAT32_RTOL
from orthoref.oracle.fixtures import check_dir, export, load_fixture, load_manifest
from orthoref.oracle.registry import all_specs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "data", "golden")


# --------------------------------------------------------------------------------------------- reference

def test_reference_matches_the_registered_apply(rng):
    x, w, b = rng.standard_normal((5, 7)), rng.standard_normal((4, 7)), rng.standard_normal(4)
    value, vjp = oracle.reference("linear", x, w, b)
    np.testing.assert_allclose(value, x @ w.T + b, rtol=1e-14)
    dy = rng.standard_normal((5, 4))
    dx, dw, db = vjp(dy)
    np.testing.assert_allclose(dx, dy @ w, rtol=1e-14)
    np.testing.assert_allclose(dw, dy.T @ x, rtol=1e-14)
    np.testing.assert_allclose(db, dy.sum(0), rtol=1e-14)


def test_reference_answers_in_float64_and_keeps_labels_integer(rng):
    logits = rng.standard_normal((4, 3)).astype(np.float32)
    value, vjp = oracle.reference("cross_entropy", logits, np.array([0, 2, 1, 1]))
    assert np.asarray(value).dtype == np.float64
    d_logits, d_labels = vjp(1.0)
    assert d_logits.dtype == np.float64 and d_labels is None


def test_reference_accepts_torch_tensors(rng):
    torch = pytest.importorskip("torch")
    W = rng.standard_normal((3, 5))
    v1, _ = oracle.reference("soft_orthogonality", torch.tensor(W, requires_grad=True))
    v2, _ = oracle.reference("soft_orthogonality", W)
    assert float(v1) == float(v2)


def test_reference_rejects_unknown_names_and_bad_cotangents(rng):
    with pytest.raises(ValueError, match="no registered op named 'nope'"):
        oracle.reference("nope", np.ones(3))
    _, vjp = oracle.reference("tanh", rng.standard_normal((2, 3)))
    with pytest.raises(ValueError, match=r"cotangent 0 must have the output's shape \(2, 3\)"):
        vjp(np.ones((3, 2)))
    with pytest.raises(TypeError, match="must be a real numeric array"):
        oracle.reference("tanh", np.array(["a", "b"]))


def test_names_cover_the_registry():
    assert oracle.names() == [s.name for s in all_specs()]
    assert "polar" in oracle.names() and "nn.Conv2d" in oracle.names()


# ----------------------------------------------------------------------------------------------- compare

def _so_torch_like(W):
    G = W @ W.T
    return float(((G - np.eye(3)) ** 2).sum()), 4 * (G - np.eye(3)) @ W


def test_compare_passes_a_correct_implementation_and_reports(rng):
    W = rng.standard_normal((3, 5))
    value, grad = _so_torch_like(W)
    rep = oracle.compare("soft_orthogonality", [W], value, their_grads=[grad])
    assert rep.passed and rep.max_rel < 1e-14
    assert [r.what for r in rep.rows] == ["value[0]", "grad[0]"]
    d = rep.to_dict()
    json.dumps(d)
    assert d["passed"] is True and d["rows"][1]["shape"] == [3, 5]
    assert "PASS" in str(rep) and "cotangent ones" in str(rep)


def test_compare_catches_a_transposed_gradient_with_a_random_cotangent(rng):
    x, w = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    y = x @ w.T
    cot = rng.standard_normal(y.shape)
    good = oracle.compare("linear_nobias", [x, w], y, their_grads=[cot @ w, cot.T @ x], cotangent=cot)
    bad = oracle.compare("linear_nobias", [x, w], y, their_grads=[cot @ w, (cot.T @ x).T], cotangent=cot)
    assert good.passed and not bad.passed
    assert not bad.rows[2].passed and bad.rows[1].passed
    assert "FAIL" in str(bad)


def test_compare_tolerance_follows_the_input_dtype(rng):
    W = rng.standard_normal((3, 5))
    value, _ = _so_torch_like(W)
    off = value * (1 + 1e-7)
    assert not oracle.compare("soft_orthogonality", [W], off).passed              # float64: 1e-10
    W32 = W.astype(np.float32)
    v32, _ = _so_torch_like(W32.astype(np.float64))
    rep = oracle.compare("soft_orthogonality", [W32], v32 * (1 + 1e-7))
    assert rep.passed and rep.dtype == "float32" and rep.rows[0].rtol == FLOAT32_RTOL
    assert not oracle.compare("soft_orthogonality", [W32], v32 * (1 + 1e-4)).passed
    assert oracle.compare("soft_orthogonality", [W], off, rtol=1e-6).passed


def test_compare_rejects_mismatched_shapes(rng):
    W = rng.standard_normal((3, 5))
    with pytest.raises(ValueError, match=r"their_value\[0\] must have shape \(\)"):
        oracle.compare("soft_orthogonality", [W], np.ones(2))
    with pytest.raises(ValueError, match=r"their_grads\[0\] must have input 0's shape \(3, 5\)"):
        oracle.compare("soft_orthogonality", [W], 1.0, their_grads=[np.ones((5, 3))])
    with pytest.raises(ValueError, match="one entry per input"):
        oracle.compare("soft_orthogonality", [W], 1.0, their_grads=[np.ones((3, 5)), None])


def test_compare_nan_never_passes(rng):
    x = rng.standard_normal((2, 3))
    y = np.tanh(x)
    y[0, 0] = np.nan
    assert not oracle.compare("tanh", [x], y).passed


# ---------------------------------------------------------------------------------------------- fixtures

def test_export_is_deterministic_and_hashed(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    m1 = export(a, ops="linear,conv2d,srip,nn.BatchNorm1d,newton_schulz,cross_entropy")
    export(b, ops="linear,conv2d,srip,nn.BatchNorm1d,newton_schulz,cross_entropy")
    cmp = filecmp.dircmp(a, b)
    files = [f["file"] for f in m1["fixtures"]] + ["manifest.json"]
    match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors and len(match) == len(files)
    assert not cmp.left_only and not cmp.right_only
    for entry in m1["fixtures"]:
        inputs, kwargs, outputs, cots, grads = load_fixture(a, entry)
        assert [list(x.shape) for x in inputs] == [i["shape"] for i in entry["inputs"]]
        assert all(o.dtype == np.float64 for o in outputs)
        assert all(c.dtype == np.dtype(entry["dtype"]) for c in cots)
        assert entry["rtol"] == (1e-10 if entry["dtype"] == "float64" else 1e-5)


def test_fixtures_are_plain_npz_and_json(tmp_path):
    export(tmp_path, ops="linear", dtypes=("float32",))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    entry = manifest["fixtures"][0]
    with np.load(tmp_path / entry["file"]) as z:
        assert sorted(z.files) == ["cotangent_0", "grad_0", "grad_1", "grad_2", "input_0", "input_1",
                                   "input_2", "output_0"]
        assert z["input_0"].dtype == np.float32 and z["output_0"].dtype == np.float64
        np.testing.assert_allclose(z["output_0"], z["input_0"].astype(np.float64) @ z["input_1"].T + z["input_2"],
                                   rtol=1e-14)


def test_check_dir_catches_changed_values_and_hashes(tmp_path):
    export(tmp_path, ops="tanh", dtypes=("float64",))
    assert all(r.passed for r in check_dir(tmp_path))
    manifest = load_manifest(tmp_path)
    entry = manifest["fixtures"][0]
    path = tmp_path / entry["file"]
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["grad_0"] = arrays["grad_0"] * (1 + 1e-8)
    np.savez(path, **arrays)
    reports = list(check_dir(tmp_path))
    assert not reports[0].passed and "sha256" in reports[0].note
    bad = [r for r in check_dir(tmp_path, ops="tanh") if not r.passed]
    assert len(bad) == 1
    entry["sha256"] = None
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    rep = next(iter(check_dir(tmp_path, verify_hash=False)))
    assert not rep.passed and not rep.rows[0].what == "load"
    assert [r.passed for r in rep.rows] == [True, False]


def test_load_manifest_refuses_other_directories_and_schemas(tmp_path):
    with pytest.raises(ValueError, match="no manifest.json"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": 99, "fixtures": []}))
    with pytest.raises(ValueError, match="schema 99"):
        load_manifest(tmp_path)


def test_export_rejects_unknown_dtypes_and_patterns(tmp_path):
    with pytest.raises(ValueError, match="dtypes must be among"):
        export(tmp_path, dtypes=("float16",))
    with pytest.raises(ValueError, match="no registered op matches 'zzz'"):
        export(tmp_path, ops="zzz")


# ------------------------------------------------------------------------------------ the shipped set

def test_shipped_fixtures_cover_every_registered_op():
    manifest = load_manifest(GOLDEN)
    shipped = {(e["op"], e["sample"], e["dtype"]) for e in manifest["fixtures"]}
    for spec in all_specs():
        n = len(spec.sample(np.random.default_rng(0), np.float64))
        for k in range(n):
            for dtype in ("float64", "float32"):
                assert (spec.name, k, dtype) in shipped, f"data/golden lacks {spec.name} sample {k} {dtype}: " \
                                                         f"re-run `orthoref oracle export data/golden`"


def test_shipped_fixtures_still_match_the_code():
    """A numerical change to any op shows up here: regenerate data/golden deliberately when it is meant."""
    failures = [str(r) for r in check_dir(GOLDEN, rtol=1e-12) if not r.passed]
    assert not failures, "\n".join(failures[:5])


def test_shipped_fixtures_are_small():
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(GOLDEN) for f in fs)
    assert total <= 5 * 2 ** 20


# ---------------------------------------------------------------------------------- README consumers

def _readme_block(marker):
    text = open(os.path.join(ROOT, "README.md")).read()
    m = re.search(rf"<!-- {marker} -->\s*```python\n(.*?)```", text, re.S)
    assert m, f"README lacks the {marker} block"
    return m.group(1)


@pytest.mark.parametrize("marker,module", [("fixture-consumer-torch", "torch"), ("fixture-consumer-jax", "jax")])
def test_readme_fixture_consumer_round_trips(marker, module, tmp_path):
    pytest.importorskip(module)
    code = _readme_block(marker)
    assert len(code.strip().splitlines()) <= 16
    shutil.copytree(GOLDEN, tmp_path / "data" / "golden")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) >= 10 and all(line.endswith("PASS") for line in lines), out.stdout


# ----------------------------------------------------------------------------------------------- the CLI

def test_cli_oracle_check_against_torch(capsys):
    pytest.importorskip("torch")
    assert main(["oracle", "check", "--against", "torch", "--ops", "linear,polar,dropout",
                 "--dtype", "float64,float32"]) == 0
    out = capsys.readouterr().out
    assert "polar" in out and "skip (no torch twin)" in out and "0 failed" in out


def test_cli_oracle_export_then_check(tmp_path, capsys):
    d = tmp_path / "fx"
    assert main(["oracle", "export", str(d), "--ops", "tanh,mse", "--dtype", "float32"]) == 0
    assert main(["oracle", "check", "--against", str(d), "--json", str(tmp_path / "r.json")]) == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["summary"]["failed"] == 0 and data["summary"]["checked"] == 5
    with np.load(d / "tanh" / "0-2-D.float32.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["output_0"] = arrays["output_0"] + 1e-3
    np.savez(d / "tanh" / "0-2-D.float32.npz", **arrays)
    assert main(["oracle", "check", "--against", str(d)]) == 1
    capsys.readouterr()


def test_cli_oracle_check_errors(capsys):
    assert main(["oracle", "check"]) == 2
    assert main(["oracle", "check", "--against", "nowhere"]) == 2
    assert main(["oracle", "check", "--against", "torch", "--dtype", "float16"]) == 2
    err = capsys.readouterr().err
    assert "give --against" in err and "fixture directory" in err and "--dtype takes" in err


def test_cli_oracle_check_backend_cupy_needs_a_gpu(capsys):
    from orthoref.backend import cupy_available
    if cupy_available():
        pytest.skip("CuPy and a GPU are present: the real check runs in the GPU suite")
    assert main(["oracle", "check", "--backend", "cupy", "--ops", "tanh"]) == 2
    assert "needs CuPy and a GPU" in capsys.readouterr().err


@pytest.mark.gpu
def test_oracle_check_on_cupy_matches_numpy():
    from orthoref.backend import cupy_available
    from orthoref.oracle.check import check, summary
    if not cupy_available():
        pytest.skip("CuPy or a GPU is missing")
    rows = list(check("cupy", dtypes=("float64",)))
    s = summary(rows)
    assert s["failed"] == 0 and s["checked"] > 200, s


# ------------------------------------------------------------------------------ negative controls (NaN, gaps)

def test_finite_difference_check_fails_a_nan_gradient(rng):
    from orthoref.oracle import check_backward
    from orthoref.oracle.registry import from_pair
    op = from_pair(lambda x: (x * x, x), lambda dy, x: (np.full_like(x, np.nan),))
    rep = check_backward(op, [rng.standard_normal(3)], raise_on_fail=False, elementwise=True)
    assert not rep.passed and rep.max_rel_error == np.inf


def test_rel_error_makes_nan_a_failure():
    from orthoref.oracle.conformance import rel_error
    assert rel_error(np.array([1.0, np.nan]), np.array([1.0, 2.0])) == np.inf
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, np.nan])) == np.inf
    assert rel_error(np.ones(2), np.ones(3)) == np.inf


def test_compare_notes_gradients_given_as_none_and_an_empty_report_fails(rng):
    x, w = rng.standard_normal((3, 4)), rng.standard_normal((2, 4))
    y = x @ w.T
    rep = oracle.compare("linear_nobias", [x, w], y, their_grads=[None, None])
    assert rep.passed and "gradients of inputs [0, 1] not compared" in rep.note
    assert not oracle.CompareReport("x", "float64").passed


def test_check_dir_fails_a_fixture_without_its_gradient(tmp_path):
    export(tmp_path, ops="tanh", dtypes=("float64",))
    manifest = load_manifest(tmp_path)
    entry = manifest["fixtures"][0]
    with np.load(tmp_path / entry["file"]) as z:
        arrays = {k: z[k] for k in z.files if k != "grad_0"}
    np.savez(tmp_path / entry["file"], **arrays)
    rep = next(iter(check_dir(tmp_path, verify_hash=False)))
    assert not rep.passed and "grad_0 is missing" in rep.note


def test_framework_check_fails_a_twin_with_the_wrong_outputs(monkeypatch):
    from orthoref.oracle import check as chk
    wrong = {"count": lambda spec, inputs, kw, cots: ([np.tanh(inputs[0])] * 2, [np.zeros(inputs[0].shape)]),
             "shape": lambda spec, inputs, kw, cots: ([np.tanh(inputs[0]).T], [np.zeros(inputs[0].shape)])}
    for kind, run in wrong.items():
        monkeypatch.setitem(chk.RUNNERS, "fake", lambda run=run: run)
        rows = list(chk.check("fake", ops="tanh"))
        assert rows and all(not r.passed for _, _, r in rows), kind
