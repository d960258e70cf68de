"""orthoref train --model cnn --norm none|bn|dbn|iternorm: the CNN with a normalization layer after each
convolution trains, checkpoints its running statistics, resumes bit-identically, is rebuilt by
``analysis.load_model``; old checkpoints (without the field) still resume; bad combinations are refused."""
import json

import numpy as np
import pytest

from orthoref import cli, models, nn
from orthoref.analysis import load_model
from orthoref.train import CheckpointError, TrainConfig, fit, load_checkpoint


def _state(model):
    return {k: np.array(v) for k, v in model.state_dict().items()}


def _rewrite_meta(path, edit):
    """Rewrite the ``meta`` record of the checkpoint at ``path`` with ``edit(meta)`` (arrays unchanged)."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"][()]))
    edit(meta)
    arrays["meta"] = np.array(json.dumps(meta))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize("norm,layer", [("dbn", nn.DecorrelatedBatchNorm), ("iternorm", nn.IterNorm)])
def test_cli_cnn_with_whitening_trains_checkpoints_and_resumes_bit_identically(tmp_path, capsys, norm, layer):
    common = ["train", "--model", "cnn", "--norm", norm, "--dtype", "float64", "--batch-size", "256",
              "--no-progress"]
    assert cli.main(common + ["--epochs", "2", "--out", str(tmp_path / "full")]) == 0
    assert cli.main(common + ["--epochs", "1", "--out", str(tmp_path / "part")]) == 0
    capsys.readouterr()
    ckpt = str(tmp_path / "part" / "checkpoint.npz")
    assert cli.main(["train", "--resume", ckpt, "--epochs", "2", "--no-progress"]) == 0
    assert "epoch   2/2" in capsys.readouterr().out

    meta, full, _, _ = load_checkpoint(str(tmp_path / "full" / "checkpoint.npz"))
    _, resumed, _, _ = load_checkpoint(ckpt)
    assert meta["config"]["norm"] == norm
    assert list(full) == list(resumed) and {"1.running_mean", "1.running_wm", "5.running_wm"} <= set(full)
    for k in full:
        assert np.array_equal(full[k], resumed[k]), f"{k} differs after resume"
    assert not np.array_equal(full["5.running_wm"], np.eye(64)), "the running whitening matrix must move"
    assert json.loads((tmp_path / "part" / "metrics.json").read_text())[-1]["test_acc"] == \
        json.loads((tmp_path / "full" / "metrics.json").read_text())[-1]["test_acc"]

    model, config, _ = load_model(str(tmp_path / "full" / "checkpoint.npz"))
    assert config.norm == norm and isinstance(model[1], layer) and isinstance(model[5], layer)
    assert model[1].groups == models.NORM_GROUPS and not model.training
    for k, v in _state(model).items():
        assert np.array_equal(v, full[k]), k


def test_bn_cnn_checkpoint_holds_the_int64_batch_counter(tmp_path):
    res = fit(TrainConfig(model="cnn", norm="bn", epochs=1, batch_size=256, progress=False,
                          out=str(tmp_path)), log=None)
    _, state, _, _ = load_checkpoint(res["checkpoint"])
    assert state["1.num_batches_tracked"].dtype == np.int64 and int(state["1.num_batches_tracked"]) == 6
    assert state["1.running_var"].dtype == np.float32


def test_default_cnn_is_unchanged_and_old_checkpoints_resume(tmp_path):
    """norm="none" builds the CNN of before (same layers, same draws); a checkpoint written before the field
    existed (no "norm" in its configuration) resumes as norm="none"."""
    plain = models.small_cnn(1, 8, 10, rng=3, dtype=np.float64)
    assert [type(m).__name__ for m in plain] == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d",
                                                 "Flatten", "Linear"]
    normed = models.small_cnn(1, 8, 10, rng=3, dtype=np.float64, norm="dbn")
    for a, b in (("0", "0"), ("3", "4"), ("7", "9")):
        assert np.array_equal(plain.state_dict()[f"{a}.weight"], normed.state_dict()[f"{b}.weight"])
    res = fit(TrainConfig(model="cnn", epochs=1, batch_size=256, progress=False, out=str(tmp_path)), log=None)
    _rewrite_meta(res["checkpoint"], lambda meta: meta["config"].pop("norm"))
    meta, _, _, _ = load_checkpoint(res["checkpoint"])
    assert "norm" not in meta["config"]
    again = fit(TrainConfig(epochs=2, progress=False), resume=res["checkpoint"], log=None)
    assert again["config"].norm == "none" and len(again["history"]) == 2


def test_checkpoint_that_does_not_match_its_norm_is_refused(tmp_path):
    res = fit(TrainConfig(model="cnn", norm="iternorm", epochs=1, batch_size=256, progress=False,
                          out=str(tmp_path)), log=None)
    _rewrite_meta(res["checkpoint"], lambda meta: meta["config"].update(norm="dbn"))
    load_checkpoint(res["checkpoint"])                     # dbn and iternorm keep the same arrays
    _rewrite_meta(res["checkpoint"], lambda meta: meta["config"].update(norm="bn"))
    with pytest.raises(CheckpointError, match="running_wm.*not a parameter of the configured model .*norm bn"):
        load_checkpoint(res["checkpoint"])
    _rewrite_meta(res["checkpoint"], lambda meta: meta["config"].update(norm="none"))
    with pytest.raises(CheckpointError, match="model/7.weight is missing"):
        load_checkpoint(res["checkpoint"])
    _rewrite_meta(res["checkpoint"], lambda meta: meta["config"].update(norm="layer"))
    with pytest.raises(CheckpointError, match="norm must be one of"):
        load_checkpoint(res["checkpoint"])


def test_cli_norm_bad_options(tmp_path, capsys):
    assert cli.main(["train", "--norm", "dbn", "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "norm must be 'none' with --model mlp" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:                      # argparse's choices
        cli.main(["train", "--model", "cnn", "--norm", "zca", "--out", str(tmp_path / "r")])
    assert info.value.code == 2 and "invalid choice: 'zca'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_train_config_validates_norm():
    with pytest.raises(ValueError, match="^TrainConfig: norm must be one of 'none', 'bn', 'dbn', 'iternorm'"):
        TrainConfig(model="cnn", norm="BN").validate()
    with pytest.raises(ValueError, match="^TrainConfig: norm must be 'none' with --model mlp"):
        TrainConfig(norm="iternorm").validate()
    assert TrainConfig(model="cnn", norm="dbn").validate().to_json()["norm"] == "dbn"
    with pytest.raises(ValueError, match="small_cnn: norm must be one of"):
        models.small_cnn(norm="gn")
