"""orthoref.compress: the factored model computes the rank-r reconstruction exactly, parameter counts,
skipped layers, the self-describing file, and compress_checkpoint on a tiny trained MLP."""
import copy
import json

import numpy as np
import pytest

from orthoref import nn, train
from orthoref.analysis import load_model, low_rank
from orthoref.compress import (
    COMPRESSED_FORMAT,
    build,
    compress_checkpoint,
    compress_model,
    count_parameters,
    describe,
    format_compress_report,
    load_compressed,
    save_compressed,
)


def _cnn(dtype=np.float64):
    f = {"dtype": dtype}
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1, dilation=1, rng=0, **f), nn.ReLU(),
        nn.Conv2d(16, 12, (3, 2), padding=(2, 1), dilation=2, bias=False, rng=1, **f), nn.Tanh(),
        nn.Conv2d(12, 12, 3, padding="same", groups=3, rng=2, **f), nn.MaxPool2d(2), nn.Flatten(),
        nn.Sequential(nn.Linear(12 * 2 * 2, 40, rng=3, **f), nn.ReLU()), nn.Linear(40, 5, rng=4, **f))


def _reconstructed(model, ranks):
    """A copy of ``model`` whose Linear/Conv2d weights named in ``ranks`` are replaced by ``A @ B``."""
    ref = copy.deepcopy(model)
    for name, p in ref.named_parameters():
        layer = name.rsplit(".", 1)[0]
        if name.endswith("weight") and layer in ranks:
            Af, Bf, _ = low_rank(p.data, rank=ranks[layer])
            p.data = (Af @ Bf).reshape(p.shape)
    return ref


def test_compressed_cnn_equals_rank_r_reconstruction():
    model = _cnn()
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8))
    compressed, layers = compress_model(model, rank=3)
    by_name = {e["name"]: e for e in layers}
    assert set(by_name) == {"0", "2", "4", "7.0", "8"}
    assert by_name["4"]["compressed"] is False and "grouped" in by_name["4"]["note"]
    ranks = {n: e["rank"] for n, e in by_name.items() if e["compressed"]}
    assert ranks == {"0": 3, "2": 3, "7.0": 3, "8": 3}
    ref = _reconstructed(model, ranks).eval()
    y, y_ref = compressed.eval().forward(x), ref.forward(x)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12 * np.abs(y_ref).max())
    # the factored conv keeps stride / padding / dilation, the 1x1 conv carries the bias
    first, second = compressed[0]
    assert (first.stride, first.padding, first.dilation, first.bias) == ((2, 2), (1, 1), (1, 1), None)
    assert second.kernel_size == (1, 1) and second.bias is not None
    assert compressed[2][1].bias is None
    np.testing.assert_array_equal(second.bias.data, model[0].bias.data)


def test_parameter_counts_and_original_untouched():
    model = _cnn()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    compressed, layers = compress_model(model, rank=3)
    expected = {"0": 3 * (3 * 9 + 16) + 16, "2": 3 * (16 * 6 + 12), "7.0": 3 * (48 + 40) + 40,
                "8": 3 * (40 + 5) + 5}
    for e in layers:
        if e["compressed"]:
            assert e["params_after"] == expected[e["name"]], e
        assert e["params_before"] == int(np.prod(e["shape"])) + (0 if e["name"] == "2" else e["shape"][0])
    assert count_parameters(model) == sum(e["params_before"] for e in layers)
    assert count_parameters(compressed) == sum(e["params_after"] for e in layers)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    compressed[0][0].weight.data[...] = 0          # shares no arrays with the original
    np.testing.assert_array_equal(model[0].weight.data, before["0.weight"])


def test_layers_without_savings_are_kept():
    model = nn.Sequential(nn.Linear(6, 6, rng=0, dtype=np.float64), nn.ReLU(), nn.Linear(6, 2, rng=1,
                                                                                        dtype=np.float64))
    compressed, layers = compress_model(model, rank=3)     # 3 (6 + 6) = 36 >= 36: no saving
    assert [e["compressed"] for e in layers] == [False, False]
    assert "kept" in layers[0]["note"] and "36 weights >= 36" in layers[0]["note"]
    assert layers[1]["rank"] == 2                           # capped at the full rank
    assert count_parameters(compressed) == count_parameters(model)
    x = np.random.default_rng(1).standard_normal((3, 6))
    np.testing.assert_array_equal(compressed.forward(x), model.forward(x))


def test_energy_one_is_lossless():
    W = np.random.default_rng(2).standard_normal((30, 2)) @ np.random.default_rng(3).standard_normal((2, 20))
    lin = nn.Linear(20, 30, rng=0, dtype=np.float64)
    lin.weight.data = W
    model = nn.Sequential(lin)
    compressed, layers = compress_model(model, energy=1.0)
    assert layers[0]["rank"] == 2 and layers[0]["energy"] == pytest.approx(1.0)
    x = np.random.default_rng(4).standard_normal((5, 20))
    np.testing.assert_allclose(compressed.forward(x), model.forward(x), atol=1e-12)


def test_save_and_load_roundtrip(tmp_path):
    compressed, _ = compress_model(_cnn(), rank=2)
    path = save_compressed(str(tmp_path / "m.npz"), compressed, meta={"note": "x"})
    loaded, record = load_compressed(path, with_meta=True)
    assert record["format"] == COMPRESSED_FORMAT and record["meta"] == {"note": "x"}
    assert describe(loaded) == describe(compressed)
    x = np.random.default_rng(5).standard_normal((2, 3, 8, 8))
    np.testing.assert_array_equal(loaded.forward(x), compressed.eval().forward(x))
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_describe_build_roundtrip_of_every_supported_layer():
    model = nn.Sequential(nn.BatchNorm2d(3), nn.AvgPool2d(2, count_include_pad=False), nn.GlobalAvgPool2d(),
                          nn.Dropout(0.2), nn.LeakyReLU(0.1), nn.GELU("tanh"), nn.Sigmoid(), nn.BatchNorm1d(3),
                          nn.DecorrelatedBatchNorm(3, groups=2, eps=1e-4, momentum=0.2, affine=False),
                          nn.IterNorm(3, groups=2, iterations=3))
    spec = describe(model)
    assert describe(build(json.loads(json.dumps(spec)))) == spec
    with pytest.raises(TypeError, match="describe: cannot describe a RNN"):
        describe(nn.RNN(2, 3))
    with pytest.raises(ValueError, match="unknown layer type"):
        build({"type": "Transformer"})


def test_bad_arguments(tmp_path):
    model = _cnn()
    with pytest.raises(ValueError, match="exactly one of energy and rank"):
        compress_model(model)
    with pytest.raises(ValueError, match="exactly one of energy and rank"):
        compress_model(model, energy=0.9, rank=2)
    with pytest.raises(ValueError, match="compress_model: rank must be an int >= 1"):
        compress_model(model, rank=0)
    with pytest.raises(ValueError, match=r"compress_model: energy must be a finite number > 0 and <= 1"):
        compress_model(model, energy=1.2)
    with pytest.raises(TypeError, match="compress_model: energy must be a real number"):
        compress_model(model, energy="0.9")
    with pytest.raises(TypeError, match="must be an orthoref.nn.Sequential"):
        compress_model(model[0], rank=1)
    with pytest.raises(ValueError, match="exactly one of energy and rank"):
        compress_checkpoint("missing.npz", str(tmp_path))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    res = train.fit(train.TrainConfig(hidden=(24, 16), epochs=2, dtype="float64", out=str(out), progress=False),
                    log=None)
    return res


def test_compress_checkpoint(trained, tmp_path):
    ckpt = trained["checkpoint"]
    report = compress_checkpoint(ckpt, str(tmp_path / "c"), rank=4)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["compress.json", "compressed.npz"]
    assert json.loads((tmp_path / "c" / "compress.json").read_text()) == report
    # sizes 64-24-16-10: rank 4 saves on every layer (the last: 4 (16 + 10) = 104 < 160 weights)
    per = {e["name"]: e for e in report["layers"]}
    assert per["0"]["params_after"] == 4 * (64 + 24) + 24 and per["0"]["compressed"]
    assert per["2"]["params_after"] == 4 * (24 + 16) + 16
    assert per["4"]["params_after"] == 4 * (16 + 10) + 10
    assert report["params_before"] == 64 * 24 + 24 + 24 * 16 + 16 + 16 * 10 + 10
    assert report["params_after"] == sum(e["params_after"] for e in report["layers"])

    X, y = train.load_digits("test", dtype="float64")
    model, _, _ = load_model(ckpt)
    assert report["acc_before"] == train.evaluate(model, X, y) == trained["history"][-1]["test_acc"]
    loaded = load_compressed(report["path"])
    assert report["acc_after"] == train.evaluate(loaded, X, y)
    # the loaded file computes exactly the rank-4 reconstruction of the trained weights
    ref = _reconstructed(model, {"0": 4, "2": 4, "4": 4}).eval()
    np.testing.assert_allclose(loaded.forward(X), ref.forward(X), rtol=1e-12, atol=1e-12)
    compressed, _ = compress_model(model, rank=4)
    np.testing.assert_array_equal(loaded.forward(X), compressed.eval().forward(X))
    text = format_compress_report(report)
    assert "rank 4: parameters" in text and text.count("| Linear |") == 3


def test_compress_checkpoint_energy(trained, tmp_path):
    report = compress_checkpoint(trained["checkpoint"], str(tmp_path), energy=0.5)
    for e in report["layers"]:
        assert e["energy"] >= 0.5
    assert report["energy"] == 0.5 and report["rank"] is None
    assert load_compressed(report["path"], with_meta=True)[1]["meta"]["config"]["hidden"] == [24, 16]


def test_load_compressed_refuses_training_checkpoint(trained):
    with pytest.raises(train.CheckpointError, match="expected 'orthoref-compressed/1'"):
        load_compressed(trained["checkpoint"])


@pytest.mark.skipif(not hasattr(__import__("orthoref.cli").cli, "_compress"), reason="no `orthoref compress` yet")
def test_cli_compress(trained, tmp_path, capsys):
    from orthoref import cli
    out = tmp_path / "c"
    assert cli.main(["compress", trained["checkpoint"], "--rank", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "rank 4: parameters" in printed and "test accuracy" in printed
    assert load_compressed(str(out / "compressed.npz")) is not None
    assert cli.main(["compress", trained["checkpoint"], "--energy", "1.5", "--out", str(out)]) == 2
    assert "compress_checkpoint: energy must be a finite number > 0 and <= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["compress", trained["checkpoint"], "--energy", "0.9", "--rank", "2"])


@pytest.mark.parametrize("norm", ["dbn", "iternorm"])
def test_compress_a_cnn_with_whitening_layers(tmp_path, norm):
    """``orthoref train --model cnn --norm dbn|iternorm`` checkpoints compress, and the compressed file keeps
    the whitening layers' running mean and whitening matrix (eval mode gives the same outputs)."""
    from orthoref.train import TrainConfig, fit
    run = tmp_path / "run"
    fit(TrainConfig(model="cnn", norm=norm, epochs=1, dtype="float64", out=str(run), progress=False))
    report = compress_checkpoint(str(run / "checkpoint.npz"), str(tmp_path / "c"), rank=64)
    loaded = load_compressed(report["path"])
    assert any(type(m).__name__ == ("DecorrelatedBatchNorm" if norm == "dbn" else "IterNorm") for m in loaded)
    from orthoref.analysis import load_model
    original = load_model(str(run / "checkpoint.npz"))[0].eval()
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8))
    for a, b in zip(original, loaded):
        if hasattr(a, "running_wm"):
            np.testing.assert_array_equal(a.running_wm, b.running_wm)
            np.testing.assert_array_equal(a.running_mean, b.running_mean)
    assert report["acc_after"] == pytest.approx(report["acc_before"], abs=0.02)
    assert loaded.forward(x).shape == original.forward(x).shape == (3, 10)
