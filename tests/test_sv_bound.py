"""Singular value bounding in training (Jia et al. 2017): ``orthoref train --sv-bound EPS[,EVERY]``,
``train.bound_singular_values`` and ``train.parse_sv_bound``."""
import numpy as np
import pytest

from orthoref import nn
from orthoref.analysis import load_model
from orthoref.cli import main
from orthoref.train import TrainConfig, bound_singular_values, fit, parse_sv_bound


def _numpy_bound(W, eps):
    """The bound written with NumPy's SVD: σ clipped into [1/(1+ε), 1+ε] on W.reshape(out, -1)."""
    U, s, Vt = np.linalg.svd(W.reshape(W.shape[0], -1), full_matrices=False)
    return ((U * np.clip(s, 1 / (1 + eps), 1 + eps)) @ Vt).reshape(W.shape)


def test_bound_singular_values_clips_every_weight_matrix_in_place():
    model = nn.Sequential(nn.Conv2d(2, 4, 3, rng=0, dtype=np.float64), nn.ReLU(), nn.Flatten(),
                          nn.Linear(36, 5, rng=1, dtype=np.float64))
    for p in model.parameters():
        p.data *= 3.0                                        # spectra well outside the bounds
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    arrays = {n: p.data for n, p in model.named_parameters()}
    bound_singular_values(model, 0.1)
    for n, p in model.named_parameters():
        assert p.data is arrays[n]                           # in place
        if p.data.ndim >= 2:
            np.testing.assert_allclose(p.data, _numpy_bound(before[n], 0.1), rtol=0, atol=1e-12)
            s = np.linalg.svd(p.data.reshape(p.data.shape[0], -1), compute_uv=False)
            assert s.min() >= 1 / 1.1 - 1e-12 and s.max() <= 1.1 + 1e-12
        else:
            np.testing.assert_array_equal(p.data, before[n])  # biases untouched


@pytest.mark.parametrize("text,expected", [("0.05", (0.05, 1)), ("0.5,10", (0.5, 10)), ("1e-3,1", (1e-3, 1))])
def test_parse(text, expected):
    assert parse_sv_bound(text) == expected


@pytest.mark.parametrize("text,exc,words", [
    ("0", ValueError, ["sv_bound's EPS", "> 0"]), ("-1,2", ValueError, ["EPS"]),
    ("0.1,0", ValueError, ["sv_bound's EVERY", ">= 1"]), ("0.1,2.5", ValueError, ["'EPS' or 'EPS,EVERY'"]),
    ("nan", ValueError, ["EPS"]), ("0.1,2,3", ValueError, ["'EPS' or 'EPS,EVERY'"]), ("", ValueError, ["sv_bound"]),
    (0.1, TypeError, ["sv_bound must be a string"]),
])
def test_bad_values_are_refused_naming_the_field(text, exc, words):
    with pytest.raises(exc) as info:
        TrainConfig(sv_bound=text).validate()
    assert all(w in str(info.value) for w in words), str(info.value)


def test_training_keeps_every_spectrum_in_the_band_and_resumes_bit_identically(tmp_path):
    """digits: 1438 training images, batch 64: 23 steps an epoch; EVERY = 23 bounds after each epoch's last
    step, so the saved weights are in the band exactly; a resumed run matches an uninterrupted one."""
    kw = dict(hidden=(32,), epochs=2, dtype="float64", sv_bound="0.05,23", progress=False)
    fit(TrainConfig(out=str(tmp_path / "full"), **kw), log=None)
    model, config, _ = load_model(str(tmp_path / "full" / "checkpoint.npz"))
    assert config.sv_bound == "0.05,23"
    for name, p in model.named_parameters():
        if p.data.ndim >= 2:
            s = np.linalg.svd(p.data, compute_uv=False)
            assert s.min() >= 1 / 1.05 - 1e-12 and s.max() <= 1.05 + 1e-12, (name, s.min(), s.max())
    fit(TrainConfig(out=str(tmp_path / "half"), **{**kw, "epochs": 1}), log=None)
    fit(TrainConfig(epochs=2, out=str(tmp_path / "resumed")), resume=str(tmp_path / "half" / "checkpoint.npz"),
        log=None)
    a = load_model(str(tmp_path / "full" / "checkpoint.npz"))[0].state_dict()
    b = load_model(str(tmp_path / "resumed" / "checkpoint.npz"))[0].state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_cli_option(tmp_path, capsys):
    assert main(["train", "--sv-bound", "0.2,5", "--epochs", "1", "--hidden", "16", "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 0
    assert load_model(str(tmp_path / "r" / "checkpoint.npz"))[1].sv_bound == "0.2,5"
    with pytest.raises(SystemExit):
        main(["train", "--sv-bound"])
    capsys.readouterr()
    assert main(["train", "--sv-bound", "0", "--epochs", "1", "--out", str(tmp_path / "bad")]) == 2
    assert "sv_bound's EPS" in capsys.readouterr().err
