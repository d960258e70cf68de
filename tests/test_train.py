"""orthoref train / orthoref.train.fit: accuracy, atomic checkpoints, exact resume, divergence guard."""
import json
import os

import numpy as np
import pytest

from orthoref import cli, train
from orthoref.data import write_idx
from orthoref.ortho import orthogonality_error_rms
from orthoref.train import CheckpointError, DivergenceError, TrainConfig, fit


def _quiet(**kw):
    kw.setdefault("progress", False)
    return TrainConfig(**kw)


def _weights(result):
    return {k: np.array(v) for k, v in result["model"].state_dict().items()}


def test_default_mlp_reaches_97_percent(tmp_path):
    res = fit(_quiet(out=str(tmp_path)), log=None)
    assert len(res["history"]) == 20
    assert res["history"][-1]["test_acc"] >= 0.97
    hist = json.loads((tmp_path / "metrics.json").read_text())
    assert [h["epoch"] for h in hist] == list(range(1, 21))
    for key in ("loss", "train_acc", "test_acc", "seconds"):
        assert key in hist[0]
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,loss,train_acc,test_acc,seconds") and len(lines) == 21
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


@pytest.mark.slow
def test_cnn_reaches_98_percent(tmp_path):
    res = fit(_quiet(model="cnn", out=str(tmp_path), epochs=30), log=None)
    assert res["history"][-1]["test_acc"] >= 0.98


def test_same_seed_is_bit_identical(tmp_path):
    a = fit(_quiet(hidden=(32,), epochs=2, out=str(tmp_path / "a")), log=None)
    b = fit(_quiet(hidden=(32,), epochs=2, out=str(tmp_path / "b")), log=None)
    for k, v in _weights(a).items():
        assert np.array_equal(v, _weights(b)[k]), k


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_resume_is_bit_identical_in_float64(tmp_path, optimizer):
    cfg = dict(hidden=(32, 16), dtype="float64", optimizer=optimizer, batch_size=100)
    full = fit(_quiet(epochs=4, out=str(tmp_path / "full"), **cfg), log=None)
    fit(_quiet(epochs=2, out=str(tmp_path / "part"), **cfg), log=None)
    resumed = fit(TrainConfig(epochs=4, progress=False), resume=str(tmp_path / "part" / "checkpoint.npz"),
                  log=None)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3, 4]
    wf, wr = _weights(full), _weights(resumed)
    assert wf.keys() == wr.keys()
    for k in wf:
        assert np.array_equal(wf[k], wr[k]), f"{k} differs after resume"
    assert resumed["history"][-1]["loss"] == full["history"][-1]["loss"]


def test_failed_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    out = tmp_path / "run"
    fit(_quiet(hidden=(16,), epochs=1, out=str(out)), log=None)
    ckpt = out / "checkpoint.npz"
    before = ckpt.read_bytes()

    real_savez = np.savez

    def failing_savez(f, **arrays):
        real_savez(f, **arrays)
        f.truncate(100)              # part of the file is written ...
        raise OSError("disk full")   # ... then the write fails

    monkeypatch.setattr(train.np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        fit(TrainConfig(epochs=2, progress=False), resume=str(ckpt), log=None)
    assert ckpt.read_bytes() == before
    assert not [f for f in os.listdir(out) if ".tmp" in f]
    monkeypatch.undo()
    meta = train.load_checkpoint(str(ckpt))[0]
    assert meta["epoch"] == 1


def test_divergence_guard_names_epoch_step_and_keeps_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    fit(_quiet(hidden=(16,), epochs=1, out=str(out)), log=None)
    ckpt = out / "checkpoint.npz"
    before = ckpt.read_bytes()
    original = train.OPTIMIZERS["adam"]

    class Exploding(original):
        """Adam, then every weight blown up to Inf: the next forward pass must be stopped."""
        def step(self):
            super().step()
            for group in self.param_groups:
                for p in group["params"]:
                    p.data *= np.float32(np.inf)

    monkeypatch.setitem(train.OPTIMIZERS, "adam", Exploding)
    with np.errstate(all="ignore"):
        with pytest.raises(DivergenceError, match=r"epoch 2, step 2: parameter '0\.weight' holds NaN/Inf"):
            fit(TrainConfig(epochs=3, progress=False), resume=str(ckpt), log=None)
    assert ckpt.read_bytes() == before


def test_nan_gradient_names_the_parameter(tmp_path, monkeypatch):
    import orthoref.train as t
    real = t.cross_entropy

    def poisoned(logits, labels):
        loss, g = real(logits, labels)
        g[0, 0] = np.nan
        return loss, g
    monkeypatch.setattr(t, "cross_entropy", poisoned)
    # the NaN is stopped where it enters the backward pass (Linear.backward checks grad_out) or, failing
    # that, in the parameter gradients
    with pytest.raises(DivergenceError, match=r"gradient (of '\d\.(weight|bias)' has NaN/Inf )?at epoch 1, "
                                              r"step 1"):
        fit(_quiet(hidden=(8,), epochs=1, out=str(tmp_path)), log=None)
    assert not (tmp_path / "checkpoint.npz").exists()


def test_checkpoint_of_another_model_is_refused(tmp_path):
    a = fit(_quiet(hidden=(16,), epochs=1, out=str(tmp_path / "a")), log=None)
    b = fit(_quiet(hidden=(24,), epochs=1, out=str(tmp_path / "b")), log=None)
    model, before = b["model"], _weights(b)
    opt = train.OPTIMIZERS["adam"](model.parameters(), lr=1e-3)
    with pytest.raises(CheckpointError, match=r"0\.weight.*shape \(16, 64\).*\(24, 64\)"):
        train._restore(a["checkpoint"], model, opt, np.random.default_rng(0))
    for k, v in _weights(b).items():
        assert np.array_equal(v, before[k]), "a refused checkpoint must not be half-loaded"


def test_garbage_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "checkpoint.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match="not a readable orthoref checkpoint"):
        train.load_checkpoint(str(bad))


def test_existing_out_is_not_overwritten(tmp_path):
    fit(_quiet(hidden=(8,), epochs=1, out=str(tmp_path)), log=None)
    with pytest.raises(FileExistsError, match="--resume"):
        fit(_quiet(hidden=(8,), epochs=1, out=str(tmp_path)), log=None)
    fit(_quiet(hidden=(8,), epochs=1, out=str(tmp_path)), log=None, overwrite=True)


def _write_idx_dir(d, n_train=120, n_test=40, side=28, seed=0):
    rng = np.random.default_rng(seed)
    d.mkdir()
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = rng.integers(0, 40, size=(n, side, side)).astype(np.uint8)
        for k in range(n):   # a learnable pattern: a bright bar whose row encodes the label
            images[k, 2 + 2 * labels[k], :] = 255
        suffix = ".gz" if prefix == "train" else ""
        write_idx(d / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(d / f"{prefix}-labels-idx1-ubyte{suffix}", labels)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_idx_directory_28x28(tmp_path, model):
    _write_idx_dir(tmp_path / "mnist")
    res = fit(_quiet(model=model, data=f"idx:{tmp_path / 'mnist'}", epochs=3, hidden=(32,), batch_size=20,
                     out=str(tmp_path / "run")), log=None)
    assert res["history"][-1]["test_acc"] >= 0.9


def test_cli_train_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--epochs", "1", "--hidden", "16", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "epoch   1/1" in text and "test" in text and "|G-I|" in text
    ckpt = str(out / "checkpoint.npz")
    assert cli.main(["train", "--resume", ckpt, "--epochs", "2", "--no-progress"]) == 0
    assert json.loads((out / "metrics.json").read_text())[-1]["epoch"] == 2
    assert cli.main(["train", "--resume", ckpt, "--model", "cnn"]) == 2
    assert "only --epochs and --out" in capsys.readouterr().err
    assert cli.main(["train", "--out", str(out), "--epochs", "1"]) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--lr", "-1"], "lr must be"),
    (["--hidden", "a,b"], "--hidden"),
    (["--data", "idx:/nonexistent/dir"], "nonexistent"),
    (["--init", "nope"], "init must be"),
])
def test_cli_train_bad_options(tmp_path, capsys, args, message):
    assert cli.main(["train", "--out", str(tmp_path / "r"), "--no-progress"] + args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("have_tqdm", [True, False])
def test_progress_bar_with_and_without_tqdm(tmp_path, capsys, monkeypatch, have_tqdm):
    import io
    import sys
    if not have_tqdm:
        monkeypatch.setitem(sys.modules, "tqdm", None)
    else:
        pytest.importorskip("tqdm")
    fit(TrainConfig(hidden=(8,), epochs=1, out=str(tmp_path / "a"), progress=True), log=None)
    assert capsys.readouterr().err == ""                # stderr is not a terminal here: no bar

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(sys, "stderr", Terminal())
    fit(TrainConfig(hidden=(8,), epochs=1, out=str(tmp_path / "b"), progress=True), log=None)
    assert "epoch 1/1" in sys.stderr.getvalue()


def test_cli_train_cupy_missing_says_how_to_install(tmp_path, capsys):
    from orthoref import backend
    if backend.cupy_available():
        pytest.skip("CuPy with a GPU is available here")
    assert cli.main(["train", "--backend", "cupy", "--epochs", "1", "--out", str(tmp_path / "r")]) == 2
    assert "pip install" in capsys.readouterr().err


def test_init_option_builds_orthogonal_weights(tmp_path):
    assert TrainConfig().init == "orthogonal"
    model = train.build_model(_quiet(hidden=(16,), dtype="float64").validate(), (64,), 10)
    w = model[0].weight.data
    np.testing.assert_allclose(w @ w.T, np.eye(16), atol=1e-12)
    cnn = train.build_model(_quiet(model="cnn", init="delta_orthogonal", dtype="float64").validate(),
                            (1, 8, 8), 10)
    centre = cnn[0].weight.data[:, :, 1, 1]
    np.testing.assert_allclose(centre.T @ centre, np.eye(1), atol=1e-12)
    lin = cnn[-1].weight.data                       # the Linear layer falls back to "orthogonal"
    np.testing.assert_allclose(lin @ lin.T, np.eye(10), atol=1e-12)


def test_conv_only_init_refused_for_mlp(tmp_path, capsys):
    assert cli.main(["train", "--init", "delta_orthogonal", "--out", str(tmp_path / "r")]) == 2
    assert "convolution kernels" in capsys.readouterr().err


def test_reg_lowers_orthogonality_error_and_is_logged(tmp_path):
    base = fit(_quiet(hidden=(32,), epochs=3, out=str(tmp_path / "none")), log=None)
    so = fit(_quiet(hidden=(32,), epochs=3, out=str(tmp_path / "so"), reg=("so:1e-1",), reg_skip=("last",)),
             log=None)
    err = lambda r: orthogonality_error_rms(r["model"][0].weight.data)  # noqa: E731
    assert err(so) < err(base) / 2
    assert "reg" in so["history"][-1] and so["history"][-1]["reg"] > 0
    assert "reg" not in base["history"][-1]
    # the last layer was skipped: identical regularization terms never touched it
    assert "reg" in (tmp_path / "so" / "metrics.csv").read_text().splitlines()[0]


def test_som_hook_and_srip_resume_exactly(tmp_path):
    cfg = dict(hidden=(16,), dtype="float64", reg=("srip:1e-2", "som:1e-4"), batch_size=200)
    full = fit(_quiet(epochs=2, out=str(tmp_path / "full"), **cfg), log=None)
    fit(_quiet(epochs=1, out=str(tmp_path / "part"), **cfg), log=None)
    resumed = fit(TrainConfig(epochs=2, progress=False), resume=str(tmp_path / "part" / "checkpoint.npz"),
                  log=None)
    assert resumed["config"].reg == ("srip:1e-2", "som:1e-4")
    for k, v in _weights(full).items():
        assert np.array_equal(v, _weights(resumed)[k]), k
    assert full["history"][-1]["reg"] == resumed["history"][-1]["reg"]


def test_som_gradient_reaches_the_weights(tmp_path):
    a = fit(_quiet(hidden=(16,), epochs=1, out=str(tmp_path / "a")), log=None)
    b = fit(_quiet(hidden=(16,), epochs=1, out=str(tmp_path / "b"), reg=("som:1e-2",)), log=None)
    assert not np.array_equal(a["model"][0].weight.data, b["model"][0].weight.data)


def test_penalty_table_and_srip_rng_bound_at_parse():
    from orthoref import regularizers as R
    assert {n: train.Penalty.parse(n).target for n in train.REGULARIZERS} == \
        {short: target for _, short, target in R.PENALTIES.values()}
    assert train.Penalty.parse("so:0.5").fn is R.soft_orthogonality
    W = np.random.default_rng(0).standard_normal((8, 5))
    pen = train.Penalty.parse("srip:1e-2", np.random.default_rng(7))
    ref = np.random.default_rng(7)
    for _ in range(2):                      # the same stream, draw after draw
        value, grad = pen(W)
        want_value, want_grad = R.srip(W, weight=1e-2, rng=ref)
        assert value == want_value and np.array_equal(grad, want_grad)
    Y = np.random.default_rng(1).standard_normal((6, 4))
    som_value, som_grad = train.Penalty.parse("som:1e-3")(Y)
    assert som_value == float(R.self_orthogonality(Y)[0]) * 1e-3
    assert np.array_equal(som_grad, R.self_orthogonality(Y)[1] * 1e-3)
    assert not train.Penalty.parse("ocnn:1").acts_on(W) and train.Penalty.parse("so:1").acts_on(W)


def test_regularization_finds_layers_by_object_and_sums_every_term():
    from orthoref import regularizers as R
    cfg = _quiet(hidden=(12, 8), dtype="float64", reg=("so:1e-2", "som:1e-3", "srip:1e-2"),
                 reg_skip=("first",)).validate()
    model = train.build_model(cfg, (64,), 10)
    reg = train.Regularization(model, cfg, np.random.default_rng(3))
    assert [n for n, _ in reg.targets] == ["2.weight", "4.weight"]
    assert [(i, layer) for i, layer in train.holding_layers(model, reg.targets)] == [(2, model[2]), (4, model[4])]
    assert sorted(reg.hooked) == [2, 4] and reg.active
    x = np.random.default_rng(4).standard_normal((5, 64))
    model.zero_grad()
    model.forward(x)
    total = reg.apply()
    h, outputs = x, 0.0
    for i, layer in enumerate(model):
        h = layer.forward(h)
        if i in (2, 4):
            outputs += float(R.self_orthogonality(h)[0]) * 1e-3
    ref = np.random.default_rng(3)
    want = outputs
    for name, kw in (("soft_orthogonality", {}), ("srip", {"rng": ref})):
        for _, p in reg.targets:
            value, grad = getattr(R, name)(p.data, weight=1e-2, **kw)
            want += float(value)
    assert total == want
    assert model[0].weight.grad is None and model[2].weight.grad is not None     # 0.weight skipped


def test_regularization_without_terms_is_inactive():
    cfg = _quiet(hidden=(8,), reg=("som:1e-3",), reg_skip=("first", "last")).validate()
    model = train.build_model(cfg, (64,), 10)
    reg = train.Regularization(model, cfg, None)
    assert reg.targets == [] and not reg.hooked and not reg.active


@pytest.mark.parametrize("args, message", [
    (["--reg", "nope:1"], "unknown regularizer"),
    (["--reg", "so:abc"], "must be a number"),
    (["--reg", "so:-1"], ">= 0"),
    (["--reg", "ocnn:1e-2"], "convolution kernels"),
    (["--reg", "so:1e-3", "--reg-skip", "9.weight"], "name no weight"),
    (["--reg", "so:1e-2,gram=diag"], "gram must be one of"),
    (["--reg", "so:1e-2,foo=1"], "KEY one of ['gram']"),
    (["--reg", "so:1e-2,gram"], "is not KEY=VALUE"),
    (["--reg", "so:1e-2,gram=cols,gram=rows"], "gram is given twice"),
    (["--reg", "srip:1e-2,n_iter=0"], "n_iter must be an int >= 1"),
    (["--reg", "dso:1e-2,gram=rows"], "KEY one of none"),
])
def test_cli_reg_bad_options(tmp_path, capsys, args, message):
    assert cli.main(["train", "--out", str(tmp_path / "r"), "--no-progress", "--epochs", "1"] + args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("optimizer", ["riemannian_sgd", "riemannian_adam", "cayley_sgd"])
def test_stiefel_optimizers_keep_hidden_weights_orthogonal(tmp_path, optimizer):
    res = fit(_quiet(hidden=(32, 16), epochs=2, dtype="float64", optimizer=optimizer, out=str(tmp_path)),
              log=None)
    for name in ("0.weight", "2.weight"):
        assert orthogonality_error_rms(dict(res["model"].named_parameters())[name].data) < 1e-10, name
    assert res["history"][-1]["loss"] < res["history"][0]["loss"]        # and it learns


def test_muon_trains_and_stiefel_optimizer_needs_orthogonal_init(tmp_path, capsys):
    res = fit(_quiet(hidden=(32,), epochs=2, optimizer="muon", out=str(tmp_path / "m")), log=None)
    assert res["history"][-1]["test_acc"] > 0.8
    assert cli.main(["train", "--optimizer", "cayley_sgd", "--init", "default", "--out", str(tmp_path / "c")]) == 2
    assert "orthogonal initializer" in capsys.readouterr().err


def test_cli_train_rnn_adding(tmp_path, capsys):
    assert cli.main(["train", "--model", "rnn", "--task", "adding", "--T", "8", "--steps", "20",
                     "--init", "orthogonal", "--out", str(tmp_path)]) == 0
    assert "adding problem T=8, init orthogonal" in capsys.readouterr().out
    assert json.loads((tmp_path / "metrics.json").read_text())
    assert cli.main(["train", "--task", "adding"]) == 2
    assert cli.main(["train", "--model", "rnn", "--task", "adding", "--hidden", "8"]) == 2
    assert cli.main(["train", "--model", "rnn", "--task", "adding", "--init", "bogus", "--steps", "1"]) == 2


def test_two_output_penalties_on_one_layer_add_up():
    """``--reg som:a --reg som:b`` acts as one penalty of weight a + b on every hooked layer (no silent drop)."""
    from orthoref.models import mlp
    from orthoref.regularizers import self_orthogonality
    cfg = TrainConfig(reg=("som:1e-3", "som:2e-3"), hidden=(6,)).validate()
    model = mlp((5, 6, 3), rng=0, dtype="float64")
    reg = train.Regularization(model, cfg, np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((7, 5))
    model.forward(x)
    values = model.hook_values()
    assert set(values) == set(reg.hooked) and len(values) == 2
    h = x
    for i, layer in enumerate(model):
        h = layer.forward(h)
        if i in values:
            v, _ = self_orthogonality(h)
            assert values[i] == pytest.approx(3e-3 * float(v), rel=1e-12)


def test_readme_idx_command_as_printed_expands_home(tmp_path, monkeypatch, capsys):
    """The README's ``orthoref train --data idx:~/mnist --model cnn`` works as printed: the shell does not
    expand ``~`` after ``idx:``, so the CLI does (and ``$VARS`` and ``~`` in every path option)."""
    import re
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    line = re.search(r"^orthoref (train --data idx:~/mnist[^#\n]*?)\s*#", readme, re.M).group(1).split()
    home = tmp_path / "home"
    home.mkdir()
    _write_idx_dir(home / "mnist", n_train=40, n_test=20)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(line + ["--epochs", "1", "--no-progress", "--out", "$RUNS/first"]) == 0
    assert (tmp_path / "runs" / "first" / "checkpoint.npz").exists()
    assert cli.main(["train", "--resume", "~/../runs/first/checkpoint.npz", "--epochs", "2", "--no-progress"]) == 0


def test_cli_train_messages(tmp_path, monkeypatch, capsys):
    """Options the chosen model cannot use are refused by name (no silent ignore, no circular hint); one
    epoch is "1 epoch"; a resumed run says what it resumes, with the path as typed."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--steps", "5"]) == 2
    assert "--steps is for --model rnn --task adding; --model mlp trains for --epochs" in capsys.readouterr().err
    assert cli.main(["train", "--model", "rnn"]) == 2
    assert "--model rnn needs a sequence task: add --task adding" in capsys.readouterr().err
    assert cli.main(["train", "--task", "adding"]) == 2
    assert "--task adding trains a recurrent network: add --model rnn" in capsys.readouterr().err
    assert cli.main(["train", "--epochs", "1", "--hidden", "8", "--no-progress", "--out", "r"]) == 0
    out = capsys.readouterr().out
    assert ", 1 epoch, " in out and "after 1 epoch; checkpoint and metrics in r" in out
    assert cli.main(["train", "--resume", "r/checkpoint.npz", "--epochs", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("orthoref train: resuming r/checkpoint.npz to epoch 2") and "after 2 epochs" in out


def test_reg_keyword_options_reach_the_function_and_the_run(tmp_path):
    from orthoref import regularizers as R
    assert train.parse_reg("so:1e-2,gram=cols") == ("so", 1e-2, {"gram": "cols"})
    assert train.parse_reg("ocnn:1,stride=2,padding=none,squared=false") == \
        ("ocnn", 1.0, {"stride": 2, "padding": None, "squared": False})
    assert train.reg_options("srip") == ("n_iter", "method", "gram") and train.reg_options("dso") == ()
    W = np.random.default_rng(0).standard_normal((8, 5))
    for spec, kw in (("so:1e-2,gram=cols", {"gram": "cols"}), ("mc:0.5,gram=rows", {"gram": "rows"})):
        name, weight, _ = train.parse_reg(spec)
        fn = R.PENALTIES[train.REGULARIZERS[name][0]][0]
        value, grad = train.Penalty.parse(spec)(W)
        want_value, want_grad = fn(W, weight=weight, **kw)
        assert value == want_value and np.array_equal(grad, want_grad)
    # the Gram side changes the penalty on a non-square weight: the option is not ignored
    assert train.Penalty.parse("so:1,gram=cols")(W)[0] != train.Penalty.parse("so:1,gram=rows")(W)[0]
    pen = train.Penalty.parse("srip:1e-2,method=exact")
    assert pen(W)[0] == R.srip(W, weight=1e-2, method="exact")[0]
    # a run keeps the spec as given, and resumes with it
    out = tmp_path / "r"
    assert cli.main(["train", "--hidden", "16", "--epochs", "1", "--no-progress", "--out", str(out),
                     "--reg", "so:1e-2,gram=cols"]) == 0
    res = fit(TrainConfig(epochs=2, progress=False), resume=str(out / "checkpoint.npz"), log=None)
    assert res["config"].reg == ("so:1e-2,gram=cols",)


def test_twin_train_refuses_reg_options():
    from orthoref.oracle import twin_train
    with pytest.raises(ValueError, match="takes NAME:WEIGHT only"):
        twin_train.parse_reg("so:1e-2,gram=cols")


@pytest.mark.parametrize("args, message", [
    (["--optimizer", "muon,scale=wrong"], "scale must be one of"),
    (["--optimizer", "adam,betas=0.9"], "KEY one of ['eps', 'weight_decay', 'amsgrad', 'decoupled_weight_decay']"),
    (["--optimizer", "sgd,lr=0.1"], "is not KEY=VALUE"),
    (["--optimizer", "sgd,momentum=-1"], "momentum"),
    (["--optimizer", "nope"], "optimizer must be one of"),
    (["--optimizer", "sgd,nesterov=true"], "nesterov"),             # Nesterov needs momentum > 0
    (["--model", "rnn", "--task", "adding", "--optimizer", "adam,eps=1e-6"], "without options"),
])
def test_cli_optimizer_bad_options(tmp_path, capsys, args, message):
    epochs = [] if "rnn" in args else ["--epochs", "1"]
    assert cli.main(["train", "--out", str(tmp_path / "r"), "--no-progress"] + epochs + args) == 2
    assert message in capsys.readouterr().err


def test_optimizer_keyword_options_reach_the_optimizer_and_survive_resume(tmp_path, capsys):
    assert train.optimizer_kwargs("muon", ("scale=moonlight", "ns_steps=6")) == {"scale": "moonlight", "ns_steps": 6}
    assert "betas" not in train.optimizer_options("adam") and "lr" not in train.optimizer_options("sgd")
    runs = {}
    for name, opt in (("plain", "sgd"), ("momentum", "sgd,momentum=0.9,nesterov=true")):
        out = tmp_path / name
        assert cli.main(["train", "--hidden", "16", "--epochs", "1", "--no-progress", "--dtype", "float64",
                         "--optimizer", opt, "--out", str(out)]) == 0
        runs[name] = out
    assert "sgd,momentum=0.9,nesterov=true" in capsys.readouterr().out
    w = {k: np.load(v / "checkpoint.npz")["model/0.weight"] for k, v in runs.items()}
    assert not np.array_equal(w["plain"], w["momentum"])            # the options changed the update
    res = fit(TrainConfig(epochs=2, progress=False), resume=str(runs["momentum"] / "checkpoint.npz"), log=None)
    assert res["config"].optimizer_options == ("momentum=0.9", "nesterov=true")
    # a checkpoint written before the field existed still loads, with no options
    d = TrainConfig(hidden=(16,)).validate().to_json()
    del d["optimizer_options"]
    assert TrainConfig.from_json(d).optimizer_options == ()
