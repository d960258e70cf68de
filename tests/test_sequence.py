"""orthoref.sequence: the adding problem with an Elman RNN (tiny runs, a few seconds in all)."""
import json

import numpy as np
import pytest

from orthoref.sequence import ADDING_INITS, adding_table, fit_adding, format_adding_table

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
    assert not [p for p in (tmp_path / "run").iterdir() if p.name != "metrics.json"]
    rows = adding_table(T=6, steps=5, inits=("orthogonal", "identity"), hidden=8, eval_every=5, target_mse=10.0)
    text = format_adding_table(rows)
    assert "| orthogonal | 0 |" in text and "identity (relu, IRNN)" in text and "0.167" in text
    rows[0]["steps_to_target"] = None
    assert "not reached" in format_adding_table(rows)


@pytest.mark.parametrize("name,value", [
    ("T", 1), ("hidden", 0), ("init", "xavier"), ("steps", 0), ("batch_size", -1),
    ("lr", 0.0), ("lr", float("nan")), ("optimizer", "rmsprop"), ("seed", -1), ("dtype", "float16"),
    ("target_mse", -1.0), ("eval_every", 0), ("log", 3), ("out", 5),
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
