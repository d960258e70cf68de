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
    # every init of fit_adding: the constraint (parametrized) and expm rows included
    assert [r["init"] for r in res["rows"]] == ["normal", "orthogonal", "identity", "parametrized", "expm"]
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


# ---------------------------------------------------------------------------------------------------------
# The studies as grids of cells over seeds (orthoref.sweep kinds "study:NAME")

def _md_table_lines(text):
    return [line for line in text.splitlines() if line.startswith("|")]


def test_several_seeds_are_reported_as_mean_and_spread(tmp_path):
    """Two seeds of the quick RNN and compression studies: the markdown states the seeds, and each row's
    mean ± std is numpy's over the cells stored in the study's sweep folder."""
    from orthoref import sweep
    for name, value, key in (("rnn", "final_mse", "final_stat"), ("compression", "full_acc", "full_stat")):
        res = studies.run(name, str(tmp_path / "fig"), quick=True, seeds=2, seed=3, sweep_dir=str(tmp_path / name))
        text = _read(res["markdown"])
        assert "2 seeds (3, 4)" in text and "seeds 3–4" in text
        rows = sweep.read_results(tmp_path / name)
        assert sorted({r["config"]["seed"] for r in rows}) == [3, 4]
        for r in res["rows"]:
            label = r["init"] if name == "rnn" else r["key"]
            field = "init" if name == "rnn" else "variant"
            stored = np.array([c["result"][value] for c in rows if c["config"][field] == label])
            assert len(stored) == 2
            assert r[key]["mean"] == pytest.approx(stored.mean(), rel=1e-12)
            assert r[key]["std"] == pytest.approx(stored.std(ddof=1), rel=1e-12)
            assert f"{stored.mean():.4f} ± {stored.std(ddof=1):.4f}" in text


def test_a_study_run_again_on_its_sweep_folder_computes_nothing(tmp_path):
    lines = []
    first = studies.run("depth", str(tmp_path / "a"), quick=True, sweep_dir=str(tmp_path / "cells"))
    again = studies.run("depth", str(tmp_path / "b"), quick=True, sweep_dir=str(tmp_path / "cells"), log=lines.append)
    assert any("16 cells, 16 already done, 0 to compute" in line for line in lines), lines
    assert first["rows"] == again["rows"]
    # the report of the sweep folder writes the same tables (no timing in the depth study's)
    from_sweep = studies.report_sweep(str(tmp_path / "cells"), str(tmp_path / "c"))
    assert _md_table_lines(_read(from_sweep["markdown"])) == _md_table_lines(_read(first["markdown"]))
    with pytest.raises(ValueError, match="must hold the cells of one study"):
        from orthoref import sweep
        spec = sweep.parse_spec({"base": {"hidden": [8], "epochs": 1}}, "train")
        sweep.run_sweep(spec, tmp_path / "train", workers=0, log=None)
        studies.report_sweep(str(tmp_path / "train"), str(tmp_path / "d"))


def test_an_interrupted_rnn_cell_resumes_from_its_checkpoint(tmp_path):
    """A study cell that trains keeps its checkpoint in the cell folder: a run stopped at step 10 goes on to
    step 20 and ends with the history of an uninterrupted run, bit for bit."""
    from orthoref import sweep
    from orthoref.sequence import fit_adding
    config = studies.study_spec("rnn", quick=True).cells[1].config              # orthogonal, seed 0
    fit_adding(**{k: config[k] for k in ("T", "hidden", "init", "batch_size", "eval_every", "seed")}, steps=10,
               out=str(tmp_path / "cell"), log=None)
    resumed = sweep.run_cell(config, tmp_path / "cell", kind="study:rnn")
    fresh = sweep.run_cell(config, tmp_path / "fresh", kind="study:rnn")
    assert resumed["resumed_from"] == 10 and fresh["resumed_from"] == 0
    assert resumed["result"]["history"] == fresh["result"]["history"]
    assert resumed["result"]["final_mse"] == fresh["result"]["final_mse"]


def test_a_new_study_joins_with_one_register_call(tmp_path, monkeypatch):
    """A toy study (one seeded number per cell) registered by a module of its own: `run`, the sweep's kinds
    and the report all find it."""
    from orthoref import sweep
    monkeypatch.setattr(studies, "REGISTRY", dict(studies.REGISTRY))
    monkeypatch.setattr(studies, "STUDIES", studies.STUDIES)
    monkeypatch.setattr(sweep, "_KINDS", dict(sweep._KINDS))

    def cell(config, cell_dir):
        return {"value": np.random.default_rng(config["seed"]).standard_normal(config["size"]).mean()}

    def aggregate(rows):
        _, groups = sweep.seed_groups(rows)
        return {"groups": groups, "stat": sweep.mean_ci([r["result"]["value"] for g in groups for r in g["done"]])}

    def write(agg, out_dir, md_dir):
        path = os.path.join(md_dir, "toy.md")
        with open(path, "w", encoding="utf-8") as f:
            f.write("# Study: toy\n\nWhat it shows\n\n" + tables(agg) + "\n")
        return {"mean": agg["stat"]["mean"], "figures": [], "markdown": path}

    def tables(agg):
        return f"|---|\n| {agg['stat']['mean']:.6f} |"

    studies.register(studies.Study("toy", {"size": (4, lambda who, name, v: v), "seed": (0, lambda who, name, v: v)},
                                   lambda quick: {"base": {"size": 3}, "axes": {}, "seeds": 2 if quick else 5},
                                   cell, lambda r: f"{r['value']:.3f}", aggregate, tables, write))
    assert "toy" in studies.STUDIES and "study:toy" in sweep.kinds()
    res = studies.run("toy", str(tmp_path), quick=True)
    expected = np.mean([np.random.default_rng(s).standard_normal(3).mean() for s in (0, 1)])
    assert res["mean"] == pytest.approx(expected, rel=1e-15)
    with pytest.raises(TypeError):
        studies.register("toy")
    with pytest.raises(ValueError, match="other than 'all'"):
        studies.register(studies.Study("all", {"seed": (0, None)}, None, None, None, None, None, None))


def test_orthoref_study_works_without_dask(tmp_path):
    """`orthoref study` runs its cells in-process: with dask and distributed unimportable it still works."""
    import subprocess
    import sys
    code = ("import sys; sys.modules['dask'] = None; sys.modules['distributed'] = None\n"
            "from orthoref import studies\n"
            f"res = studies.run('rnn', {str(tmp_path)!r}, quick=True)\n"
            "print(len(res['rows']), 'distributed' in sys.modules and sys.modules['distributed'] is not None)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["5", "False"]


def test_a_cell_of_a_bad_configuration_is_refused(tmp_path):
    from orthoref import sweep
    with pytest.raises(ValueError, match="n_jac must be at most n_grad"):
        sweep.run_cell({"n_jac": 9, "n_grad": 8, "width": 4, "depth": 2}, tmp_path / "a", kind="study:depth")
    with pytest.raises(ValueError, match="run_cell: unknown field"):
        sweep.run_cell({"epochs": 2}, tmp_path / "b", kind="study:rnn")
    assert not (tmp_path / "b").exists()


def test_a_study_that_is_one_function_joins_with_register_runner(tmp_path, monkeypatch):
    """A study written as one function (out_dir, md_dir, quick, seed, log) runs as every study did before
    the grids: folders claimed, the wall time appended; it is no sweep kind."""
    from orthoref import sweep
    monkeypatch.setattr(studies, "RUNNERS", dict(studies.RUNNERS))
    monkeypatch.setattr(studies, "STUDIES", studies.STUDIES)
    calls = []

    def whole(out_dir, md_dir, quick, seed, log):
        calls.append((quick, seed))
        path = os.path.join(md_dir, "whole.md")
        with open(path, "w", encoding="utf-8") as f:
            f.write("# Study: whole\n")
        return {"figures": [], "markdown": path}
    assert studies.register_runner("whole", whole) == "whole"
    assert studies.STUDIES[-1] == "whole" and "study:whole" not in sweep.kinds()
    res = studies.run("whole", str(tmp_path), quick=True, seed=4)
    assert calls == [(True, 4)] and "Wall time:" in _read(res["markdown"])
    with pytest.raises(TypeError, match="module:function"):
        studies.register_runner("other", "no colon")


def test_the_figures_of_several_seeds_name_every_series(tmp_path, monkeypatch):
    """With several seeds the curves get min–max bands: each is named in the legend (tests/test_figures.py
    checks the one-seed figures the same way)."""
    from test_figures import recording_figures
    with recording_figures() as saved:
        for name in ("depth", "rnn"):
            studies.run(name, str(tmp_path / name), quick=True, seeds=2)
    bands = 0
    for fig in saved:
        for ax in fig.axes:
            for artist in list(ax.collections) + list(ax.lines) + list(ax.patches):
                label = str(artist.get_label())
                assert label and not label.startswith("_"), (ax.get_title(), type(artist).__name__)
                bands += "min–max over seeds" in label
    assert bands == 4 * 4 + 5      # depth: 4 panels (2 depths x 2 activations) x 4 inits; rnn: 5 inits


def test_a_sweep_of_part_of_a_grid_is_reported_with_a_clear_error(tmp_path):
    """The summary compares the grid's rows: a sweep folder missing one says which, before any figure."""
    from orthoref import sweep
    spec = sweep.parse_spec({"kind": "study:depth", "base": {"width": 8, "n_grad": 4, "n_jac": 2},
                             "axes": {"depth": [3], "activation": ["linear"], "init": ["orthogonal", "he"]}}, "part")
    sweep.run_sweep(spec, tmp_path / "cells", workers=0, log=None)
    assert "| 3 | linear | he |" in sweep.format_report(sweep.report(tmp_path / "cells"))     # the table is fine
    with pytest.raises(ValueError, match="needs depth 3, linear, gaussian"):
        studies.report_sweep(str(tmp_path / "cells"), str(tmp_path / "fig"))
    assert not list((tmp_path / "fig").glob("*.png"))
