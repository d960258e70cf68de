"""orthoref.studies: every study in quick mode writes its figures and a consistent markdown summary."""
import os
import re

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from orthoref import studies

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    md = tmp_path_factory.mktemp("studies")
    return {name: studies.run(name, str(out), quick=True, seed=0, md_dir=str(md)) for name in studies.STUDIES}


@pytest.mark.parametrize("name", studies.STUDIES)
def test_writes_figures_and_markdown(results, name):
    res = results[name]
    assert res["figures"]
    for path in res["figures"]:
        assert path.endswith(".png")
        with open(path, "rb") as f:
            assert f.read(8) == PNG_MAGIC
        assert os.path.getsize(path) < 400_000
    md = res["markdown"]
    assert os.path.basename(md) == f"{name}.md"
    text = _read(md)
    assert text.startswith(f"# Study: {name}")
    assert "What it shows" in text and "|---|" in text and "Wall time:" in text
    # Every figure is linked relative to the markdown's directory, and the link resolves.
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == len(res["figures"])
    for link in links:
        assert not os.path.isabs(link)
        assert os.path.exists(os.path.join(os.path.dirname(md), link))
    assert res["seconds"] < 20


def test_depth_orthogonal_linear_preserves_norms(results):
    rows = results["depth"]["rows"]
    ortho = [r for r in rows if r["activation"] == "linear" and r["init"] == "orthogonal"]
    assert len(ortho) == 2
    for r in ortho:
        # Exact in exact arithmetic: unit output cotangents stay unit through orthogonal layers, and every
        # weight gradient has the same norm.
        np.testing.assert_allclose(r["grad_h"], 1.0, rtol=1e-10, atol=0)
        np.testing.assert_allclose(r["grad_w"], r["grad_w"][0], rtol=1e-10, atol=0)
        assert abs(r["sigma_max"] - 1) < 1e-10 and abs(r["sigma_min"] - 1) < 1e-10
        assert r["isometric_fraction"] == 1.0
    he = [r for r in rows if r["activation"] == "linear" and r["init"] == "he"]
    for r in he:     # variance 2/n: the backpropagated gradient grows toward the input
        assert r["grad_h"][0] > r["grad_h"][-1]


def test_depth_markdown_matches_numbers(results):
    text = _read(results["depth"]["markdown"])
    for r in results["depth"]["rows"]:
        row = (f"| {r['depth']} | {r['activation']} | {r['init']} | {r['grad_h'][0]:.2e} | "
               f"{r['grad_h'][-1]:.2e} |")
        assert row in text


def test_regularizers_markdown_matches_numbers(results):
    res = results["regularizers"]
    text = _read(res["markdown"])
    assert {r["reg"] for r in res["rows"]} >= {"none", "so:1e-1", "kernel_slice:10"}
    for r in res["rows"]:
        assert 0.0 <= r["acc_mean"] <= 1.0 and len(r["curve"]) == 1
        assert f"| {r['model'].upper()} | {r['reg']} | {r['acc_mean']:.4f} ± {r['acc_std']:.4f} |" in text
        assert f"{r['ortho_error']:.3f}" in text
    none = next(r for r in res["rows"] if r["model"] == "mlp" and r["reg"] == "none")
    so = next(r for r in res["rows"] if r["reg"] == "so:1e-1")
    assert so["ortho_error"] < none["ortho_error"]      # the penalty does what it measures


def test_projections_numbers(results):
    res = results["projections"]
    polar = next(r for r in res["direct"] if r["method"] == "polar (SVD)")
    assert polar["orthogonality"] < 1e-12 and polar["to_polar"] < 1e-12
    # Björck with β = 1/2 is the cubic Newton–Schulz: the same curve (up to the ε of NS's normalization).
    cubic, bjorck = res["iterative"]["newton_schulz cubic"], res["iterative"]["bjorck (β = 1/2)"]
    np.testing.assert_allclose([p["to_polar"] for p in bjorck], [p["to_polar"] for p in cubic], rtol=1e-5)
    text = _read(res["markdown"])
    assert f"| polar (SVD) | – | {polar['seconds'] * 1e3:.2f} | {polar['orthogonality']:.1e} |" in text
    assert set(res["worst"]) == {"cubic", "jordan", "you", "polar_express"}


def test_compression_numbers(results):
    res = results["compression"]
    text = _read(res["markdown"])
    for r in res["rows"]:
        assert set(r["acc"]) == {2, 4}
        assert r["params"][2] < r["params_full"]
        assert f"| {r['variant']} | {r['full_acc']:.4f} |" in text
    cayley = next(r for r in res["rows"] if "Cayley" in r["variant"])
    default = res["rows"][0]
    assert cayley["stable_rank"] > default["stable_rank"]     # orthonormal rows: a flat spectrum


def test_rnn_numbers(results):
    res = results["rnn"]
    assert [r["init"] for r in res["rows"]] == ["normal", "orthogonal", "identity"]
    text = _read(res["markdown"])
    for r in res["rows"]:
        assert r["history"][0][0] == 0 and r["history"][-1][0] == r["steps"]
        assert f"| {r['T']} | {r['init']}" in text and f"{r['final_mse']:.4f}" in text


def test_unknown_study_lists_the_names(tmp_path):
    with pytest.raises(ValueError) as info:
        studies.run("nope", str(tmp_path))
    for name in studies.STUDIES + ("all",):
        assert name in str(info.value)
    assert not os.listdir(tmp_path)


def test_bad_seed(tmp_path):
    with pytest.raises(ValueError, match="seed"):
        studies.run("depth", str(tmp_path), seed=-1)


def test_reg_targets_follow_the_penalty_table():
    from orthoref.train import TrainConfig, build_model
    cnn = build_model(TrainConfig(model="cnn").validate(), (1, 8, 8), 10)
    weights = [n for n, p in cnn.named_parameters() if n.endswith("weight") and p.data.ndim >= 2]
    assert [n for n, _ in studies._reg_targets(cnn, None)] == weights[:-1]
    assert [n for n, _ in studies._reg_targets(cnn, "so:1e-1")] == weights[:-1]
    conv = [n for n, p in cnn.named_parameters() if n in weights[:-1] and p.data.ndim == 4]
    for spec in ("kernel_slice:10", "ocnn:1e-1"):
        assert [n for n, _ in studies._reg_targets(cnn, spec)] == conv
    mlp = build_model(TrainConfig(hidden=(8, 8)).validate(), (64,), 10)
    assert [n for n, _ in studies._reg_targets(mlp, "som:1e-5")] == ["0.weight", "2.weight"]
    assert studies._reg_targets(mlp, "ocnn:1e-1") == []


def test_cli_study_writes_outside_the_committed_docs_by_default(tmp_path, monkeypatch):
    from orthoref.cli import main
    monkeypatch.chdir(tmp_path)
    assert main(["study", "depth", "--quick"]) == 0
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written and all(p.startswith("runs/studies/") for p in written), written
    assert "runs/studies/depth.md" in written
