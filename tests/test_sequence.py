"""orthoref.sequence: the adding problem with an Elman RNN (tiny runs, a few seconds in all)."""
import json
import os

import numpy as np
import pytest

from orthoref import _io, cli, train
from orthoref.sequence import (ADDING_INITS, adding_table, fit_adding, format_adding_table, load_adding_checkpoint,
                               load_adding_model)

TINY = dict(T=10, hidden=16, steps=60, batch_size=20, eval_every=20, log=None)
KEYS = {"init", "T", "steps_to_target", "final_mse", "history", "seconds"}


@pytest.mark.parametrize("init", ADDING_INITS)
def test_tiny_run_dict_shape(init):
    r = fit_adding(init=init, **TINY)
    assert KEYS <= set(r)
    assert r["init"] == init and r["T"] == 10
    assert [s for s, _ in r["history"]] == [0, 20, 40, 60]
    assert all(np.isfinite(m) for _, m in r["history"])
    assert r["final_mse"] == r["history"][-1][1]
    assert r["steps_to_target"] is None or r["steps_to_target"] in {s for s, _ in r["history"]}
    assert r["seconds"] > 0


def test_orthogonal_mse_decreases():
    r = fit_adding(init="orthogonal", lr=1e-2, **TINY)
    assert r["history"][-1][1] < r["history"][0][1]


def test_identity_is_irnn_relu():
    r = fit_adding(init="identity", **dict(TINY, steps=1))
    assert r["nonlinearity"] == "relu"
    assert fit_adding(init="orthogonal", **dict(TINY, steps=1))["nonlinearity"] == "tanh"


def test_parametrized_stays_orthogonal(monkeypatch):
    import orthoref.sequence as seq
    built = {}
    orig = seq.build_adding_model

    def spy(*a, **k):
        built["model"] = orig(*a, **k)
        return built["model"]

    monkeypatch.setattr(seq, "build_adding_model", spy)
    fit_adding(init="parametrized", dtype="float64", lr=1e-2, **TINY)
    W = built["model"][0].weight_hh_l0.data
    W0 = orig(16, "parametrized", 0, np.float64)[0].weight_hh_l0.data
    assert np.linalg.norm(W.T @ W - np.eye(16)) < 1e-8
    assert np.abs(W - W0).max() > 1e-4  # it did train


def test_deterministic_by_seed():
    a = fit_adding(init="parametrized", seed=3, **TINY)
    b = fit_adding(init="parametrized", seed=3, **TINY)
    c = fit_adding(init="parametrized", seed=4, **TINY)
    assert a["history"] == b["history"]
    assert a["history"] != c["history"]


def test_metrics_json_and_table(tmp_path):
    r = fit_adding(init="normal", out=str(tmp_path / "run"), **dict(TINY, steps=20))
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["final_mse"] == r["final_mse"] and saved["init"] == "normal"
    assert saved["history"] == [list(h) for h in r["history"]] and "checkpoint" not in saved
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.npz", "metrics.csv", "metrics.json"]
    assert r["checkpoint"] == str(tmp_path / "run" / "checkpoint.npz")
    rows = adding_table(T=6, steps=5, inits=("orthogonal", "identity"), hidden=8, eval_every=5, target_mse=10.0)
    text = format_adding_table(rows)
    assert "| orthogonal | 0 |" in text and "identity (relu, IRNN)" in text and "0.167" in text
    rows[0]["steps_to_target"] = None
    assert "not reached" in format_adding_table(rows)


@pytest.mark.parametrize("name,value", [
    ("T", 1), ("hidden", 0), ("init", "xavier"), ("steps", 0), ("batch_size", -1),
    ("lr", 0.0), ("lr", float("nan")), ("optimizer", "rmsprop"), ("seed", -1), ("dtype", "float16"),
    ("target_mse", -1.0), ("eval_every", 0), ("log", 3), ("out", 5), ("out", ""), ("dtype", None),
    ("overwrite", "yes"),
])
def test_bad_arguments(name, value):
    kw = dict(TINY)
    kw[name] = value
    with pytest.raises(ValueError, match=name):
        fit_adding(**kw)


@pytest.mark.parametrize("name,value", [("T", 2.5), ("hidden", True), ("lr", "0.1")])
def test_wrong_kind_arguments(name, value):
    kw = dict(TINY)
    kw[name] = value
    with pytest.raises(TypeError, match=f"fit_adding: {name} must be"):
        fit_adding(**kw)


def test_bad_table_inits():
    with pytest.raises(ValueError, match="inits"):
        adding_table(inits=("orthogonal", "bogus"))


def test_expm_parametrization_gradient_and_orthogonality():
    from orthoref.oracle import check_backward
    from orthoref.ops.loss import mse
    from orthoref.sequence import _ExpmParametrization, build_adding_model
    from orthoref.tasks import adding_problem
    rnn, head = build_adding_model(4, "expm", 0, np.float64)
    param = _ExpmParametrization(rnn)
    x, y = adding_problem(3, 5, rng=1, dtype=np.float64)

    def fn(raw):
        param.raw.data = raw
        param.apply()
        out = rnn.forward(x)
        pred = head.forward(out[-1])
        loss, dpred = mse(pred, y)

        def vjp(cts):
            rnn.zero_grad()
            head.zero_grad()
            g = np.zeros_like(out)
            g[-1] = head.backward(dpred * cts[0])
            rnn.backward(g, input_grad=False)
            param.pull_back()
            return (param.raw.grad,)
        return (loss,), vjp

    raw0 = np.tril(np.random.default_rng(2).standard_normal((4, 4)) * 0.3, -1)
    check_backward(fn, [raw0], elementwise=True)
    param.raw.data = raw0
    param.apply()
    w = rnn.weight_hh_l0.data
    np.testing.assert_allclose(w.T @ w, np.eye(4), atol=1e-12)


def test_expm_init_trains_and_stays_orthogonal():
    from orthoref.sequence import fit_adding
    res = fit_adding(T=6, hidden=8, init="expm", steps=30, eval_every=10, lr=1e-2, dtype="float64", log=None)
    assert res["final_mse"] < res["history"][0][1]


# ---------------------------------------------------------------------------------------------------------
# Run files, checkpoints and resume (issue 17: RNN runs are first-class)

SMALL = dict(T=6, hidden=8, steps=60, batch_size=10, eval_every=20, lr=1e-2)


def _stop_at(k):
    """A ``log`` that interrupts the run right after the evaluation (and checkpoint) of step ``k``."""
    def log(line):
        if f" step {k}: eval" in line:
            raise KeyboardInterrupt
    return log


def _same_checkpoints(a, b):
    """Two checkpoints hold the same parameters, optimizer state, RNG state, step and history, bit for bit."""
    (ma, sa, oa, ra), (mb, sb, ob, rb) = load_adding_checkpoint(a), load_adding_checkpoint(b)
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and np.array_equal(sa[k], sb[k]), k
    assert oa["param_groups"] == ob["param_groups"] and sorted(oa["state"]) == sorted(ob["state"])
    for i in oa["state"]:
        assert sorted(oa["state"][i]) == sorted(ob["state"][i])
        for key, v in oa["state"][i].items():
            assert np.array_equal(v, ob["state"][i][key]), (i, key)
    assert ra == rb and ma["step"] == mb["step"] and ma["history"] == mb["history"] and ma["config"] == mb["config"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("init", ["orthogonal", "expm"])
def test_resume_at_every_evaluation_is_bit_identical(tmp_path, init, dtype):
    kw = dict(SMALL, init=init, dtype=dtype)
    full = fit_adding(out=str(tmp_path / "full"), log=None, **kw)
    assert [s for s, _ in full["history"]] == [0, 20, 40, 60]
    for k in (0, 20, 40):
        run = tmp_path / f"stopped{k}"
        with pytest.raises(_io.RunInterrupted, match=rf"the last checkpoint \(step {k}\) is kept"):
            fit_adding(out=str(run), log=_stop_at(k), **kw)
        assert load_adding_checkpoint(str(run / "checkpoint.npz"))[0]["step"] == k
        assert not [p.name for p in run.iterdir() if p.name.startswith(".")]      # no lock, no temporary file
        res = fit_adding(resume=str(run / "checkpoint.npz"), steps=60, log=None)
        assert res["history"] == full["history"] and res["final_mse"] == full["final_mse"]
        assert res["steps_to_target"] == full["steps_to_target"]
        _same_checkpoints(str(tmp_path / "full" / "checkpoint.npz"), str(run / "checkpoint.npz"))
        assert (run / "metrics.csv").read_text() == (tmp_path / "full" / "metrics.csv").read_text()
        saved = json.loads((run / "metrics.json").read_text())
        assert saved["history"] == [list(h) for h in full["history"]] and saved["steps"] == 60


def test_resume_continues_past_the_saved_steps_into_another_folder(tmp_path):
    kw = dict(SMALL, init="parametrized", optimizer="sgd", dtype="float64")
    full = fit_adding(out=str(tmp_path / "full"), log=None, **kw)
    fit_adding(out=str(tmp_path / "short"), log=None, **dict(kw, steps=40))
    res = fit_adding(resume=str(tmp_path / "short" / "checkpoint.npz"), out=str(tmp_path / "more"), log=None,
                     **kw)                     # repeating the saved arguments is fine; steps: 60 in total
    assert res["history"] == full["history"]
    _same_checkpoints(str(tmp_path / "full" / "checkpoint.npz"), str(tmp_path / "more" / "checkpoint.npz"))
    assert load_adding_checkpoint(str(tmp_path / "short" / "checkpoint.npz"))[0]["step"] == 40   # untouched
    again = fit_adding(resume=str(tmp_path / "more" / "checkpoint.npz"), log=None)   # steps: the saved 60
    assert again["history"] == full["history"]


def test_resume_refuses_another_configuration_and_fewer_steps(tmp_path):
    fit_adding(out=str(tmp_path / "r"), log=None, **dict(SMALL, steps=40))
    ckpt = str(tmp_path / "r" / "checkpoint.npz")
    with pytest.raises(ValueError, match=r"fit_adding: a resumed run takes its configuration .*hidden=8.*hidden=16"):
        fit_adding(resume=ckpt, hidden=16, log=None)
    with pytest.raises(ValueError, match="steps must be at least the checkpoint's step 40"):
        fit_adding(resume=ckpt, steps=30, log=None)
    with pytest.raises(TypeError, match="fit_adding: resume must be a checkpoint path"):
        fit_adding(resume=5, log=None)
    with pytest.raises(FileNotFoundError):
        fit_adding(resume=str(tmp_path / "missing.npz"), log=None)
    with pytest.raises(FileExistsError, match=r"already holds another run's .*resume it with"):
        fit_adding(out=str(tmp_path / "r"), log=None, **SMALL)
    with _io.claim_run_dir(str(tmp_path / "r")):
        with pytest.raises(_io.RunDirBusy):
            fit_adding(resume=ckpt, steps=60, log=None)
    assert load_adding_checkpoint(ckpt)[0]["step"] == 40


def _rewrite(src, dst, change):
    """Copy the checkpoint ``src`` to ``dst`` with ``change(members)`` applied (members: name -> array)."""
    with np.load(src, allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    change(members)
    np.savez(dst, **members)
    return str(dst)


def _meta(change):
    def apply(members):
        meta = json.loads(str(members["meta"][()]))
        change(meta)
        members["meta"] = np.array(json.dumps(meta))
    return apply


@pytest.fixture(scope="module")
def rnn_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("rnn")
    fit_adding(out=str(out), log=None, **dict(SMALL, steps=20, dtype="float64"))
    return str(out / "checkpoint.npz")


@pytest.mark.parametrize("change,message", [
    (_meta(lambda m: m["config"].update(hidden=9)), r"model/rnn.weight_ih_l0 has shape \(8, 2\), the config"),
    (_meta(lambda m: m["config"].update(dtype="float32")), r"has dtype float64, the configuration's dtype is"),
    (_meta(lambda m: m["config"].update(init="expm")), r"optim/state/1/exp_avg has shape \(8, 8\), the config"),
    (_meta(lambda m: m["config"].update(init="parametrized")), r"optim/param_groups must be a list of 2 param"),
    (_meta(lambda m: m["config"].update(T=1.5)), r"config: T must be an int"),
    (_meta(lambda m: m["config"].pop("seed")), r"config: missing field\(s\) \['seed'\]"),
    (_meta(lambda m: m.update(step=30)), r"meta.step must be an int in \[0, 20\]"),
    (_meta(lambda m: m.update(kind="other")), r"not a checkpoint of fit_adding"),
    (_meta(lambda m: m["history"].append([20, 0.1])), r"meta.history\[2\]: the steps must rise"),
    (_meta(lambda m: m["history"].__setitem__(1, [20, None])), r"meta.history\[1\]: eval_mse must be a finite"),
    (lambda ms: ms.__setitem__("model/head.bias", np.array([np.nan])), r"model/head.bias holds NaN"),
    (lambda ms: ms.pop("rng"), r"no 'rng' entry"),
    (lambda ms: ms.pop("model/rnn.bias_hh_l0"), r"lacks model parameter\(s\) \['rnn.bias_hh_l0'\]"),
    (lambda ms: ms.__setitem__("extra", np.zeros(2)), r"unexpected entry 'extra'"),
    (lambda ms: ms.__setitem__("rng", np.array('{"bit_generator": "MT19937"}')), r"rng must be the state of a PCG64"),
])
def test_damaged_checkpoint_is_refused_naming_the_file(rnn_checkpoint, tmp_path, change, message):
    bad = _rewrite(rnn_checkpoint, tmp_path / "bad.npz", change)
    for call in (lambda: load_adding_checkpoint(bad), lambda: fit_adding(resume=bad, steps=40, log=None)):
        with pytest.raises(train.CheckpointError, match=message) as info:
            call()
        assert str(info.value).startswith(bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz"]           # nothing was written


def test_non_checkpoints_and_mlp_checkpoints_are_refused(rnn_checkpoint, tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(open(rnn_checkpoint, "rb").read()[:300])
    for path in (junk, truncated, tmp_path):
        with pytest.raises(train.CheckpointError, match=str(path)):
            fit_adding(resume=str(path), log=None)
    mlp = train.fit(train.TrainConfig(hidden=(8,), epochs=1, out=str(tmp_path / "mlp"), progress=False), log=None)
    with pytest.raises(train.CheckpointError, match=r"mlp/checkpoint.npz: a checkpoint of an MLP/CNN run"):
        fit_adding(resume=mlp["checkpoint"], log=None)
    with pytest.raises(train.CheckpointError, match="meta"):      # and the other way round
        train.fit(resume=rnn_checkpoint, log=None)
    with pytest.raises(TypeError, match="load_adding_checkpoint: path"):
        load_adding_checkpoint(3)
    from orthoref.sequence import is_adding_checkpoint
    assert is_adding_checkpoint(rnn_checkpoint)
    assert not any(is_adding_checkpoint(str(p)) for p in (junk, truncated, tmp_path, tmp_path / "no.npz"))
    assert not is_adding_checkpoint(mlp["checkpoint"])
    with pytest.raises(TypeError, match="is_adding_checkpoint: path"):
        is_adding_checkpoint(None)


def test_load_adding_model_predicts_like_the_run(tmp_path):
    import orthoref.sequence as seq
    fit_adding(out=str(tmp_path), log=None, **dict(SMALL, steps=20, init="expm", dtype="float64"))
    model, config, meta = load_adding_model(str(tmp_path / "checkpoint.npz"))
    assert config["init"] == "expm" and meta["step"] == 20
    x, y = seq.adding_problem(seq.EVAL_SIZE, 6, rng=config["seed"] + 1, dtype="float64")
    loss, _ = seq.mse(model.forward(x), y)
    assert float(loss) == meta["history"][-1][1]
    W = model.rnn.weight_hh_l0.data
    np.testing.assert_allclose(W.T @ W, np.eye(8), atol=1e-12)


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    import orthoref.sequence as seq
    clip = seq._clip_global_norm
    calls = []

    def clip_then_fail(params, max_norm):
        calls.append(1)
        return float("nan") if len(calls) == 25 else clip(params, max_norm)
    monkeypatch.setattr(seq, "_clip_global_norm", clip_then_fail)
    lines = []
    res = fit_adding(out=str(tmp_path / "d"), log=lines.append, **dict(SMALL, eval_every=10))
    assert np.isnan(res["final_mse"]) and res["history"][-1][0] == 25
    assert load_adding_checkpoint(res["checkpoint"])[0]["step"] == 20
    assert "non-finite gradient, stopping; the last checkpoint (step 20) is kept" in lines[-1]
    saved = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert saved["history"][-1] == [25, None] and saved["final_mse"] is None
    assert (tmp_path / "d" / "metrics.csv").read_text().splitlines()[-1] == "25,nan"
    calls.clear()
    assert cli.main(["train", "--model", "rnn", "--task", "adding", "--T", "6", "--steps", "40",
                     "--out", str(tmp_path / "c")]) == 3
    err = capsys.readouterr().err
    assert "diverged" in err and "step 25" in err and "the last good checkpoint is kept" in err


def test_cli_rnn_run_resume_and_refusals(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--model", "rnn", "--task", "adding", "--T", "6", "--steps", "20",
                     "--init", "expm"]) == 0
    out = capsys.readouterr().out
    (run,) = os.listdir("runs")                            # a new runs/YYYYmmdd-HHMMSS, as for the MLP
    assert f"checkpoint and metrics in {os.path.join('runs', run)}" in out
    assert sorted(os.listdir(os.path.join("runs", run))) == ["checkpoint.npz", "metrics.csv", "metrics.json"]
    ckpt = os.path.join("runs", run, "checkpoint.npz")
    assert cli.main(["train", "--model", "rnn", "--resume", ckpt, "--steps", "40"]) == 0
    out = capsys.readouterr().out
    assert f"resuming {ckpt} to step 40" in out and "adding problem T=6, init expm" in out
    meta = load_adding_checkpoint(ckpt)[0]
    assert meta["step"] == 40 and meta["config"]["steps"] == 40 and meta["config"]["init"] == "expm"
    assert cli.main(["train", "--resume", ckpt, "--steps", "45"]) == 0          # without --model rnn: the
    assert load_adding_checkpoint(ckpt)[0]["step"] == 45                         # checkpoint says its kind
    assert cli.main(["train", "--model", "rnn", "--task", "adding", "--resume", ckpt, "--steps", "50",
                     "--out", "more"]) == 0
    assert load_adding_checkpoint(os.path.join("more", "checkpoint.npz"))[0]["step"] == 50
    capsys.readouterr()
    for extra in (["--T", "8"], ["--init", "orthogonal"], ["--lr", "0.1"], ["--seed", "0"], ["--hidden", "4"]):
        assert cli.main(["train", "--model", "rnn", "--resume", ckpt] + extra) == 2
        assert "only --steps and --out may be given (got " + extra[0] in capsys.readouterr().err
    assert cli.main(["train", "--model", "rnn", "--task", "adding", "--init", "bogus", "--steps", "1"]) == 2
    assert "init must be one of" in capsys.readouterr().err
    assert os.listdir("runs") == [run]                     # a refused run leaves no folder behind
    mlp = train.fit(train.TrainConfig(hidden=(8,), epochs=1, out="mlp", progress=False), log=None)
    assert cli.main(["train", "--model", "rnn", "--resume", mlp["checkpoint"]]) == 2
    err = capsys.readouterr().err
    assert "mlp/checkpoint.npz: a checkpoint of an MLP/CNN run" in err and "Traceback" not in err
    assert cli.main(["train", "--model", "rnn", "--task", "adding", "--steps", "5", "--out", "more"]) == 2
    assert "resume it with" in capsys.readouterr().err


def test_train_help_says_what_rnn_runs_write(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--model rnn: every evaluation" in text and "counting those of a resumed run (default 2000)" in text
    assert "--steps with --model rnn" in text


def test_adding_table_over_seeds_reports_mean_and_spread():
    from orthoref.sequence import adding_table, format_adding_table
    rows = adding_table(T=6, steps=10, inits=("orthogonal", "identity"), seeds=(0, 1), eval_every=5, log=None)
    assert [r["init"] for r in rows] == ["orthogonal"] * 2 + ["identity"] * 2
    text = format_adding_table(rows)
    assert "final MSE (mean ± std, 2 seeds)" in text and "of 2 seeds" in text
    mse = [r["final_mse"] for r in rows if r["init"] == "orthogonal"]
    assert f"{np.mean(mse):.4f} ± {np.std(mse, ddof=1):.4f}" in text
    with pytest.raises(ValueError, match="seeds must be a non-empty sequence"):
        adding_table(T=6, steps=1, inits=("orthogonal",), seeds=[])
