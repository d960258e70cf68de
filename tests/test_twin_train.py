"""Whole training runs: orthoref and PyTorch, float64, from the same weights on the same batches, stay
within 1e-9 of each other (orthoref.oracle.twin_train)."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from orthoref.oracle import twin_train as tt

torch = pytest.importorskip("torch")

STEPS = 30


@pytest.mark.parametrize("optimizer", tt.OPTIMIZERS)
@pytest.mark.parametrize("model", tt.MODELS)
@pytest.mark.parametrize("reg", [(), ("so:1e-2",)], ids=["plain", "so"])
def test_the_twins_agree_to_1e_9(model, optimizer, reg):
    r = tt.twin_train(model, optimizer, reg, steps=STEPS, batch_size=32)
    assert r["steps"] == list(range(1, STEPS + 1))
    assert len(r["loss_rel_diff"]) == len(r["param_rel_diff"]) == STEPS
    assert r["max_rel_diff"] <= 1e-9, tt.format_result(r)
    assert r["max_rel_diff"] == max(max(r["loss_rel_diff"]), max(r["param_rel_diff"]))
    assert np.isfinite(r["loss"]).all() and r["loss"][-1] < r["loss"][0]      # it trains


@pytest.mark.parametrize("model, optimizer, reg", [
    ("cnn", "sgd", ("ocnn:1e-3", "kernel_slice:1e-2")),
    ("mlp", "adam", ("srip:1e-2", "mc:1e-2")),
    ("rnn", "muon", ("dso:1e-3", "l1:1e-3", "spectral:1e-2")),
])
def test_other_penalties(model, optimizer, reg):
    r = tt.twin_train(model, optimizer, reg, steps=20, batch_size=32)
    assert r["max_rel_diff"] <= 1e-9, tt.format_result(r)


def test_the_difference_is_seen():
    """A twin that differs (another learning rate on the PyTorch side) is far from orthoref at once: the
    measure is not blind. Here: torch.optim.Muon, whose Newton–Schulz runs in bfloat16."""
    r = tt.twin_train("mlp", "muon", steps=5, muon="torch")
    assert r["max_rel_diff"] > 1e-4


def test_torch_muon_step_is_orthorefs_formula():
    from orthoref.nn import Parameter
    from orthoref.optim import Muon
    rng = np.random.default_rng(0)
    w0, grads = rng.standard_normal((6, 3, 2, 2)), rng.standard_normal((3, 6, 3, 2, 2))
    p = Parameter(w0.copy())
    opt = Muon([p], lr=0.1, weight_decay=0.01)
    t = torch.from_numpy(w0.copy())
    buffers = {}
    for g in grads:
        p.grad = g.copy()
        opt.step()
        t.grad = torch.from_numpy(g.copy())
        tt.torch_muon_step([t], buffers, lr=0.1, weight_decay=0.01)
    np.testing.assert_allclose(p.data, t.numpy(), rtol=0, atol=1e-13)


def test_bad_arguments():
    with pytest.raises(ValueError, match="model"):
        tt.twin_train("transformer")
    with pytest.raises(ValueError, match="optimizer"):
        tt.twin_train("mlp", "lbfgs")
    with pytest.raises(ValueError, match="som"):
        tt.twin_train("mlp", reg=("som:1e-2",))
    with pytest.raises(ValueError, match="4-D"):
        tt.twin_train("mlp", reg=("ocnn:1e-2",))
    with pytest.raises(ValueError, match="2-D"):
        tt.twin_train("cnn", "muon", steps=1, muon="torch")
    with pytest.raises(TypeError):
        tt.twin_train("mlp", steps=2.5)


def _args(**kw):
    base = dict(against="torch", model="mlp", optimizer="sgd", reg=[], steps=3, seed=0, batch_size=16, lr=None,
                muon="formula", threads=1, json="", plot="", tol=1e-9)
    return argparse.Namespace(**dict(base, **kw))


def test_main_writes_json_and_returns_the_verdict(tmp_path, capsys):
    out = tmp_path / "twin.json"
    assert tt.main(_args(json=str(out), reg=["so:1e-2"])) == 0
    data = json.loads(out.read_text())
    assert set(data) >= {"steps", "loss_rel_diff", "param_rel_diff", "max_rel_diff", "config"}
    assert data["config"]["reg"] == ["so:1e-2"] and data["steps"] == [1, 2, 3]
    assert "max_rel_diff=" in capsys.readouterr().out
    assert tt.main(_args(optimizer="muon", muon="torch")) == 1          # bfloat16 Newton–Schulz: > 1e-9
    assert tt.main(_args(against="jax")) == 2
    assert tt.main(_args(reg=["nope:1"])) == 2


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "err.png"
    tt.twin_train("mlp", "adam", steps=3, plot=str(path))
    assert path.stat().st_size > 0


def test_a_chaotic_run_drifts_as_fast_as_one_ulp():
    """Muon at lr 0.02 on the RNN never settles: orthoref against itself from weights one ulp apart drifts
    as fast as orthoref against PyTorch, so that drift is the run's, not a convention difference."""
    twin = tt.twin_train("rnn", "muon", steps=300)["param_rel_diff"][-1]
    ulp = tt.ulp_divergence("rnn", "muon", steps=300)["param_rel_diff"][-1]
    assert 1e-11 < twin < 100 * ulp and ulp < 100 * twin


def test_ulp_divergence_of_a_settled_run_stays_at_rounding():
    r = tt.ulp_divergence("cnn", "adam", ("so:1e-2",), steps=20, batch_size=32)
    assert 0 < r["max_rel_diff"] < 1e-13 and len(r["param_rel_diff"]) == 20
