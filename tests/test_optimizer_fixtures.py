"""data/golden/optimizers: the shipped optimizer trajectories and orthogonal factors still match the code,
cover every optimizer, are deterministic, catch a changed value, refuse broken manifests, and the README's
PyTorch consumer reproduces them as printed."""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from orthoref.oracle import optimizer_fixtures as F
from orthoref.oracle.fixtures import write_npz
from orthoref.oracle.trajectories import OPTIMIZERS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "data", "golden", "optimizers")


def test_shipped_fixtures_still_match_the_code():
    """A numerical change to an optimizer or the initializer shows up here: re-export on purpose."""
    assert F.check_dir(SHIPPED) == []


def test_every_optimizer_and_case_is_shipped():
    manifest = F.load_manifest(SHIPPED)
    assert {e["optimizer"] for e in manifest["trajectories"]} == set(OPTIMIZERS)
    assert [e["case"] for e in manifest["trajectories"]] == [c for c, _, _ in F.CASES]
    assert [(e["method"], tuple(e["shape"])) for e in manifest["factors"]] == list(F.FACTORS)
    assert all(e["steps"] == F.STEPS for e in manifest["trajectories"])


def test_export_is_deterministic_and_round_trips(tmp_path):
    a, b = F.export(tmp_path / "a"), F.export(tmp_path / "b")
    assert a == b and (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()
    assert F.check_dir(tmp_path / "a") == []
    shipped = F.load_manifest(SHIPPED)
    assert [e["file"] for e in a["trajectories"]] == [e["file"] for e in shipped["trajectories"]]


def _copy(tmp_path):
    d = tmp_path / "fx"
    shutil.copytree(SHIPPED, d)
    return d


def _rewrite(d, file, change):
    """Change arrays of ``file`` and update its sha256 in the manifest (a well-formed but wrong fixture)."""
    with np.load(d / file) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    write_npz(d / file, arrays)
    m = json.loads((d / "manifest.json").read_text())
    for e in m["trajectories"] + m["factors"]:
        if e["file"] == file:
            e["sha256"] = hashlib.sha256((d / file).read_bytes()).hexdigest()
    (d / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("file,key,step", [("adam.npz", "theta_7_2", 7), ("muon.npz", "theta_1_0", 1),
                                           ("cayley_sgd.npz", "theta_10_2", 10)])
def test_a_value_off_by_more_than_the_tolerance_is_reported_at_its_step(tmp_path, file, key, step):
    d = _copy(tmp_path)

    def bump(a):
        a[key] = a[key] + 1e-9 * np.abs(a[key]).max()

    _rewrite(d, file, bump)
    failures = F.check_dir(d)
    assert len(failures) == 1 and failures[0].startswith(f"{file}: step {step}:"), failures


def test_damaged_files_are_reported_not_raised(tmp_path):
    d = _copy(tmp_path)
    (d / "sgd.npz").write_bytes((d / "sgd.npz").read_bytes()[:-10])       # sha256 no longer matches
    _rewrite(d, "orthogonal/qr-5x5.npz", lambda a: a.pop("factor"))
    m = json.loads((d / "manifest.json").read_text())
    m["trajectories"][1]["optimizer"] = "Lion"
    (d / "manifest.json").write_text(json.dumps(m))
    failures = F.check_dir(d)
    assert any(f.startswith("sgd.npz: ") and "sha256" in f for f in failures), failures
    assert any(f.startswith("orthogonal/qr-5x5.npz: lacks the array 'factor'") for f in failures), failures
    assert any("no optimizer 'Lion'" in f for f in failures), failures


@pytest.mark.parametrize("edit,words", [
    (lambda m: m.update(schema=2), "schema must be 1"),
    (lambda m: m.pop("factors"), "factors must be a list"),
    (lambda m: m["trajectories"][0].pop("hyper"), r"trajectories\[0\] lacks or mistypes hyper"),
    (lambda m: m["trajectories"][0].update(steps=True), r"trajectories\[0\] lacks or mistypes steps"),
    (lambda m: m["factors"][0].update(file="../../x.npz"), "leaves the directory"),
])
def test_a_broken_manifest_is_a_clear_error(tmp_path, edit, words):
    d = _copy(tmp_path)
    m = json.loads((d / "manifest.json").read_text())
    edit(m)
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match=words):
        F.check_dir(d)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="no manifest.json"):
        F.check_dir(tmp_path)
    with pytest.raises(TypeError, match="directory must be a str or os.PathLike"):
        F.check_dir(3)
    with pytest.raises(TypeError, match="rtol must be a number"):
        F.check_dir(SHIPPED, rtol="tight")
    with pytest.raises(ValueError, match=r"rtol must lie in \(0, 1\)"):
        F.check_dir(SHIPPED, rtol=0.0)
    with pytest.raises(TypeError, match="export: directory"):
        F.export(None)


def test_readme_optimizer_consumer_round_trips(tmp_path):
    pytest.importorskip("torch")
    text = open(os.path.join(ROOT, "README.md")).read()
    code = re.search(r"<!-- optimizer-consumer-torch -->\s*```python\n(.*?)```", text, re.S).group(1)
    shutil.copytree(SHIPPED, tmp_path / "data" / "golden" / "optimizers")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 9 and all(line.endswith("PASS") for line in lines), out.stdout
