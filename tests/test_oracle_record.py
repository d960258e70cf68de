"""Recording and checking anyone's results (orthoref.oracle.recording): a table {op name: fn} of someone's
functions is recorded as a fixture directory, or checked directly, exactly as data/golden is checked."""
import hashlib
import json
import os
import sys

import numpy as np
import pytest

from orthoref.oracle.check import check, format_rows, summary
from orthoref.oracle.fixtures import check_dir, export, load_fixture, load_manifest
from orthoref.oracle.recording import load_table, record
from orthoref.oracle.registry import get

OPS = ("linear", "tanh", "soft_orthogonality", "cross_entropy", "mse", "polar", "spectral_normalize")


def _own(name, grad_factor=1.0):
    """orthoref's own function as a user's (fn, vjp) pair, its gradient optionally scaled (a planted bug)."""
    spec = get(name)

    def fn(*inputs, **kwargs):
        outs = spec.apply(*inputs, **kwargs)[0]
        return outs[0] if len(outs) == 1 else outs

    def vjp(inputs, outputs, cotangent, **kwargs):
        grads = spec.apply(*inputs, **kwargs)[1](cotangent if isinstance(cotangent, tuple) else (cotangent,))
        return tuple(None if g is None else grad_factor * g for g in grads)
    return fn, vjp


def _failed(rows):
    return [(name, label) for name, label, rep in rows if rep is not None and not rep.passed]


def test_recording_our_own_functions_passes_and_matches_an_export(tmp_path):
    table = {name: _own(name) for name in OPS}
    manifest = record(table, tmp_path / "rec")
    assert manifest["recorded"] == {"framework": "numpy", "impl": None}
    rows = list(check(str(tmp_path / "rec"), dtypes=None))
    assert not _failed(rows) and summary(rows)["ops"] == len(OPS)
    exported = export(tmp_path / "exp", ops=",".join(OPS))
    recorded = {e["file"]: e for e in manifest["fixtures"]}
    assert sorted(recorded) == sorted(e["file"] for e in exported["fixtures"])
    for ours in exported["fixtures"]:
        theirs = recorded[ours["file"]]
        assert {k: v for k, v in ours.items() if k != "sha256"} == {k: v for k, v in theirs.items() if k != "sha256"}
        a, b = load_fixture(tmp_path / "exp", ours), load_fixture(tmp_path / "rec", theirs)
        for x, y in zip(a[0] + a[3], b[0] + b[3]):           # the same inputs and cotangents, bit for bit
            assert x.dtype == y.dtype and np.array_equal(x, y)
        assert a[1].keys() == b[1].keys()


def test_a_table_is_checked_directly_with_the_same_report(tmp_path):
    table = {name: _own(name) for name in OPS}
    rows = list(check(table, dtypes=("float64", "float32")))
    assert not _failed(rows) and summary(rows)["checked"] == 2 * sum(len(get(n).sample(np.random.default_rng(0),
                                                                                       np.float64)) for n in OPS)
    assert format_rows(rows, "mine").splitlines()[0] == "orthoref oracle check --against mine"
    only = list(check(table, ops="tanh,cross_*"))
    assert {n for n, _, _ in only} == {"tanh", "cross_entropy"}


def test_a_planted_gradient_bug_fails_naming_the_op_and_its_samples(tmp_path):
    table = {name: _own(name, grad_factor=0.5 if name == "soft_orthogonality" else 1.0) for name in OPS}
    record(table, tmp_path / "rec", dtypes=("float64",))
    samples = [s.label for s in get("soft_orthogonality").sample(np.random.default_rng(0), np.float64)]
    for rows in (list(check(str(tmp_path / "rec"))), list(check(table, dtypes=("float64",)))):
        failed = _failed(rows)
        assert {n for n, _ in failed} == {"soft_orthogonality"} and len(failed) == len(samples)
        for _, _, rep in rows:
            if rep.name == "soft_orthogonality":
                assert [r.what for r in rep.rows if not r.passed] == ["grad[0]"]
                assert 0.49 < max(r.max_rel for r in rep.rows) < 0.51
        text = format_rows(rows, "rec")
        assert all(any("soft_orthogonality" in line and label.split()[0] in line and line.endswith("FAIL")
                       for line in text.splitlines()) for label in samples)


def test_an_unknown_op_is_a_failure_listing_close_names(tmp_path):
    table = {"tanh": _own("tanh"), "soft_orthogonalty": _own("soft_orthogonality")}
    rows = list(check(table))
    assert _failed(rows) == [("soft_orthogonalty", "-")]
    assert "close names: soft_orthogonality" in rows[-1][2].note
    assert "soft_orthogonalty" in format_rows(rows, "t") and "close names" in format_rows(rows, "t")
    with pytest.raises(ValueError, match="no registered op named 'soft_orthogonalty'; close names: soft_orthogonality"):
        record(table, tmp_path / "rec")
    assert not os.path.exists(tmp_path / "rec")
    export(tmp_path / "fx", ops="tanh", dtypes=("float64",))
    manifest = load_manifest(tmp_path / "fx")
    manifest["fixtures"][0]["op"] = "tanhh"
    (tmp_path / "fx" / "manifest.json").write_text(json.dumps(manifest))
    reps = list(check_dir(tmp_path / "fx"))
    assert not reps[0].passed and "no registered op named 'tanhh'" in reps[0].note and "close names: tanh" in reps[0].note
    assert all(r.passed for r in reps[1:])


KERNELS = '''
import numpy as np

def tanh(x):
    return np.tanh(x)

def tanh_vjp(inputs, output, cotangent):
    return cotangent * (1 - output ** 2)

def relu(x):
    return np.maximum(x, 0)

TABLE = {"tanh": (tanh, tanh_vjp), "relu": (relu, lambda inputs, y, c: (c * (inputs[0] > 0),))}
'''


def test_a_table_named_module_colon_name(tmp_path, monkeypatch):
    (tmp_path / "h14_kernels.py").write_text(KERNELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "h14_kernels", raising=False)
    manifest = record("h14_kernels:TABLE", tmp_path / "rec")
    assert manifest["recorded"] == {"framework": "numpy", "impl": "h14_kernels:TABLE"}
    assert {e["op"] for e in manifest["fixtures"]} == {"tanh", "relu"}
    assert not _failed(check(str(tmp_path / "rec"), dtypes=None))
    rows = list(check("h14_kernels:TABLE", dtypes=None))
    assert rows and not _failed(rows) and {r.dtype for _, _, r in rows} == {"float64", "float32"}
    assert set(load_table(f"{tmp_path / 'h14_kernels.py'}:TABLE")) == {"tanh", "relu"}
    with pytest.raises(ValueError, match="cannot import 'h14_nowhere'"):
        load_table("h14_nowhere:TABLE")
    with pytest.raises(ValueError, match="has no 'MISSING'"):
        check("h14_kernels:MISSING")
    with pytest.raises(ValueError, match="MODULE:TABLE"):
        load_table("h14_kernels")


def test_torch_autograd_tables(tmp_path):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional

    def soft_orthogonality(W, weight=1.0, gram="auto"):
        M = W.reshape(W.shape[0], -1)
        G = M @ M.T if gram == "rows" or (gram == "auto" and M.shape[0] <= M.shape[1]) else M.T @ M
        return weight * ((G - torch.eye(G.shape[0], dtype=W.dtype)) ** 2).sum()

    table = {"tanh": torch.tanh, "linear": F.linear, "soft_orthogonality": soft_orthogonality,
             "cross_entropy": lambda x, y, reduction="mean": F.cross_entropy(x, y, reduction=reduction)}
    manifest = record(table, tmp_path / "rec", framework="torch")
    assert manifest["recorded"]["framework"] == "torch"
    rows = list(check(str(tmp_path / "rec"), dtypes=None))
    assert not _failed(rows) and summary(rows)["ops"] == 4

    class Tanh(torch.autograd.Function):                # the gradient twice too large
        @staticmethod
        def forward(ctx, x):
            y = torch.tanh(x)
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, dy):
            (y,) = ctx.saved_tensors
            return 2 * dy * (1 - y ** 2)

    rows = list(check(dict(table, tanh=Tanh.apply), dtypes=None, framework="torch"))
    assert {n for n, _ in _failed(rows)} == {"tanh"} and len(_failed(rows)) == 4
    with pytest.raises(ValueError, match="framework is for a table"):
        check("torch", framework="torch")


def test_a_failing_function_leaves_no_directory_and_names_the_op_and_sample(tmp_path):
    def tanh(x):
        if x.ndim == 4:
            raise FloatingPointError("kernel exploded")
        return np.tanh(x)

    table = {"linear": _own("linear"), "tanh": (tanh, lambda inputs, y, c: c * (1 - y ** 2))}
    with pytest.raises(RuntimeError, match=r"tanh sample 1 \('4-D', float64\): FloatingPointError: kernel exploded"):
        record(table, tmp_path / "rec")
    assert os.listdir(tmp_path) == []
    (tmp_path / "empty").mkdir()
    record({"linear": _own("linear")}, tmp_path / "empty", dtypes=("float32",))
    assert sorted(os.listdir(tmp_path / "empty")) == ["linear", "manifest.json"]
    with pytest.raises(ValueError, match="exists and is not an empty directory"):
        record({"linear": _own("linear")}, tmp_path / "empty")
    rows = list(check(dict(table, tanh=(tanh, lambda inputs, y, c: c * (1 - y ** 2))), ops="tanh"))
    assert [lbl for lbl in _failed(rows)] == [("tanh", "4-D")]
    assert "FloatingPointError: kernel exploded" in format_rows(rows, "t")


def test_table_errors(tmp_path):
    with pytest.raises(TypeError, match="framework 'numpy' has no autograd"):
        record({"tanh": np.tanh}, tmp_path / "unused")
    with pytest.raises(TypeError, match=r"table\['tanh'\] must be a callable"):
        check({"tanh": 3})
    with pytest.raises(ValueError, match="framework must be one of"):
        check({"tanh": _own("tanh")}, framework="mxnet")
    with pytest.raises(ValueError, match="no entry of the table matches 'relu'"):
        record({"tanh": _own("tanh")}, tmp_path / "unused", ops="relu")
    assert os.listdir(tmp_path) == []


def test_a_directory_written_without_orthoref_as_the_schema_documents(tmp_path):
    """The recipe of the fixtures docstring for C++/Julia/Rust: export, replace outputs and gradients,
    rewrite each file's sha256 — written here with plain NumPy and hashlib."""
    export(tmp_path, ops="tanh,mse", dtypes=("float32",))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    for entry in manifest["fixtures"]:
        with np.load(tmp_path / entry["file"]) as z:
            arrays = {k: z[k] for k in z.files}
        x, c = arrays["input_0"], arrays["cotangent_0"]
        if entry["op"] == "tanh":
            y = np.tanh(x)
            arrays.update(output_0=y, grad_0=c * (1 - y ** 2))
        else:
            t, reduction = arrays["input_1"], entry["kwargs"].get("reduction", "mean")
            n = x.size if reduction == "mean" else 1
            y = (x - t) ** 2 if reduction == "none" else np.array(((x - t) ** 2).sum() / n)
            arrays.update(output_0=y, grad_0=c * 2 * (x - t) / n, grad_1=-c * 2 * (x - t) / n)
        np.savez(tmp_path / entry["file"], **arrays)
        entry["sha256"] = hashlib.sha256((tmp_path / entry["file"]).read_bytes()).hexdigest()
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    rows = list(check(str(tmp_path), dtypes=None))
    assert rows and not _failed(rows)


# ----------------------------------------------------------------------------------------------- the CLI

def test_cli_oracle_record_then_check(tmp_path, monkeypatch, capsys):
    from orthoref.cli import main
    (tmp_path / "h14_cli_kernels.py").write_text(KERNELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "h14_cli_kernels", raising=False)
    out = tmp_path / "rec"
    assert main(["oracle", "record", "--impl", "h14_cli_kernels:TABLE", "--out", str(out), "--ops", "tanh"]) == 0
    assert f"orthoref oracle check --against {out}" in capsys.readouterr().out
    assert main(["oracle", "check", "--against", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("4 passed, 0 failed")
    assert main(["oracle", "check", "--against", "h14_cli_kernels:TABLE", "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["checked"] == 8       # tanh, relu x 2 dtypes
    capsys.readouterr()
    assert main(["oracle", "record", "--impl", "h14_cli_kernels:TABLE", "--out", str(out)]) == 2
    assert main(["oracle", "record", "--impl", "h14_cli_kernels:NOPE", "--out", str(tmp_path / "x")]) == 2
    assert main(["oracle", "check", "--against", "torch", "--framework", "torch"]) == 2
    err = capsys.readouterr().err
    assert "not an empty directory" in err and "has no 'NOPE'" in err and "framework is for a table" in err
    assert not (tmp_path / "x").exists()


def test_check_against_torch_without_torch_gives_the_install_hint(monkeypatch):
    """As for JAX: a missing PyTorch is named with the command that installs it."""
    monkeypatch.setitem(sys.modules, "torch", None)              # import torch -> ImportError
    with pytest.raises(ImportError, match=r"--against torch needs PyTorch \(pip install -e '\.\[torch\]'"):
        list(check("torch", ops="relu"))
