"""orthoref.analysis: every quantity against an independent computation (NumPy, SciPy, PyTorch), bad input,
the Jacobian against finite differences and torch.autograd, and analyze_checkpoint's files."""
import json
import math
import sys

import numpy as np
import pytest
from scipy.spatial.distance import pdist
from scipy.stats import entropy

from orthoref import analysis as A
from orthoref import nn, train
from orthoref.init import orthogonal
from orthoref.models import mlp
from orthoref.ortho import orthogonality_error_rms

SHAPES = [(7, 5), (5, 7), (6, 6), (8, 3, 2, 2), (4, 3, 3, 3)]


def _w(shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _mat(W):
    return np.asarray(W, dtype=np.float64).reshape(W.shape[0], -1)


# ---------------------------------------------------------------------------------------------------------
# Spectra and ranks

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_singular_values_match_numpy(shape, dtype):
    W = _w(shape, dtype=dtype)
    s = A.singular_values(W)
    assert s.dtype == np.float64 and s.shape == (min(_mat(W).shape),)
    np.testing.assert_allclose(s, np.linalg.svd(_mat(W), compute_uv=False), rtol=1e-12)
    assert np.all(np.diff(s) <= 0)


def test_singular_values_match_torch():
    torch = pytest.importorskip("torch")
    W = _w((6, 2, 3, 3), seed=1)
    ref = torch.linalg.svdvals(torch.from_numpy(W).reshape(6, -1)).numpy()
    np.testing.assert_allclose(A.singular_values(W), ref, rtol=1e-12)


def _rms_ref(W):
    """‖G − I‖_F/√k with G the smaller Gram of M = W.reshape(out, -1), written out in NumPy."""
    M = _mat(W)
    G = M @ M.T if M.shape[0] <= M.shape[1] else M.T @ M
    return np.linalg.norm(G - np.eye(len(G))) / math.sqrt(len(G))


@pytest.mark.parametrize("shape", SHAPES)
def test_orthogonality_error_auto_is_the_smaller_gram(shape):
    W = _w(shape, seed=2)
    assert orthogonality_error_rms(W) == pytest.approx(_rms_ref(W), rel=1e-13)
    assert orthogonality_error_rms(W.astype(np.float32)) == pytest.approx(_rms_ref(W.astype(np.float32)),
                                                                           rel=1e-13)   # computed in float64


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gram", ["rows", "cols"])
def test_orthogonality_error_forced_gram(shape, gram):
    M = _mat(_w(shape, seed=3))
    G = M @ M.T if gram == "rows" else M.T @ M
    ref = np.linalg.norm(G - np.eye(len(G))) / math.sqrt(len(G))
    assert orthogonality_error_rms(_w(shape, seed=3), gram=gram) == pytest.approx(ref, rel=1e-12)


def test_orthogonality_error_of_orthogonal_and_scaled():
    Q = orthogonal((16, 40), rng=0, dtype=np.float64)
    assert orthogonality_error_rms(Q) < 1e-14
    assert orthogonality_error_rms(3.0 * Q) == pytest.approx(8.0, rel=1e-12)
    # the larger (40x40) Gram has 24 zero eigenvalues: sqrt(24/40) at least
    assert orthogonality_error_rms(Q, gram="cols") == pytest.approx(math.sqrt(24 / 40), rel=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_effective_rank_matches_scipy_entropy(shape):
    W = _w(shape, seed=4)
    s = np.linalg.svd(_mat(W), compute_uv=False)
    assert A.effective_rank(W) == pytest.approx(math.exp(entropy(s)), rel=1e-12)


def test_effective_rank_extremes():
    assert A.effective_rank(orthogonal((5, 9), rng=1, dtype=np.float64)) == pytest.approx(5.0, rel=1e-12)
    u, v = _w((6, 1), 5), _w((1, 4), 6)
    assert A.effective_rank(u @ v) == pytest.approx(1.0, abs=1e-6)
    assert A.effective_rank(np.zeros((3, 4))) == 0.0


@pytest.mark.parametrize("shape", SHAPES)
def test_stable_rank_and_condition_match_numpy(shape):
    W = _w(shape, seed=7)
    M = _mat(W)
    assert A.stable_rank(W) == pytest.approx(np.linalg.norm(M, "fro") ** 2 / np.linalg.norm(M, 2) ** 2,
                                             rel=1e-12)
    assert A.condition_number(W) == pytest.approx(np.linalg.cond(M), rel=1e-10)


def test_condition_number_rank_deficient_is_inf():
    W = np.zeros((4, 4))
    W[0, 0] = 1.0
    assert A.condition_number(W) == math.inf
    assert A.condition_number(np.zeros((3, 5))) == math.inf
    assert A.stable_rank(np.zeros((3, 5))) == 0.0
    assert A.condition_number(orthogonal((6, 6), rng=2, dtype=np.float64)) == pytest.approx(1.0, abs=1e-13)


@pytest.mark.parametrize("shape", SHAPES)
def test_filter_angles_match_scipy_cosine_distance(shape):
    W = _w(shape, seed=8)
    ref = np.degrees(np.arccos(np.clip(1.0 - pdist(_mat(W), "cosine"), -1, 1)))
    theta = A.filter_angles(W)
    assert theta.shape == (shape[0] * (shape[0] - 1) // 2,)
    np.testing.assert_allclose(theta, ref, rtol=1e-10, atol=1e-9)


def test_filter_angles_orthogonal_and_zero_filters():
    np.testing.assert_allclose(A.filter_angles(orthogonal((6, 10), rng=3, dtype=np.float64)), 90.0, atol=1e-12)
    W = np.array([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.0]])
    with pytest.raises(ValueError, match=r"filter_angles: W has all-zero filters \(rows \[1\]"):
        A.filter_angles(W)           # a zero filter has no direction: no NaN angle comes back
    assert A.filter_angles(W[[0, 2]]) == pytest.approx([180.0])
    assert A.filter_angles(np.ones((1, 3))).shape == (0,)


# ---------------------------------------------------------------------------------------------------------
# Jacobians

def _small_mlp(seed=0):
    return mlp((5, 7, 6, 3), rng=seed, dtype=np.float64)


def _fd_jacobian(model, x, eps=1e-6):
    model.eval()
    n, n_in = x.shape[0], int(np.prod(x.shape[1:]))
    out = model.forward(x).reshape(n, -1)
    J = np.empty((n, out.shape[1], n_in))
    flat = x.reshape(n, n_in)
    for i in range(n_in):
        xp_, xm = flat.copy(), flat.copy()
        xp_[:, i] += eps
        xm[:, i] -= eps
        fp = model.forward(xp_.reshape(x.shape)).reshape(n, -1)
        fm = model.forward(xm.reshape(x.shape)).reshape(n, -1)
        J[:, :, i] = (fp - fm) / (2 * eps)
    return J


def test_jacobian_matches_finite_differences_mlp():
    model = _small_mlp()
    x = np.random.default_rng(1).standard_normal((4, 5))
    np.testing.assert_allclose(A.jacobian(model, x), _fd_jacobian(model, x), rtol=1e-7, atol=1e-8)


def test_jacobian_matches_finite_differences_cnn():
    rng = np.random.default_rng(2)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, rng=0, dtype=np.float64), nn.Tanh(),
                          nn.AvgPool2d(2), nn.Flatten(), nn.Linear(3 * 2 * 2, 4, rng=1, dtype=np.float64))
    x = rng.standard_normal((3, 2, 4, 4))
    J = A.jacobian(model, x)
    assert J.shape == (3, 4, 32)
    np.testing.assert_allclose(J, _fd_jacobian(model, x), rtol=1e-7, atol=1e-9)
    s = A.jacobian_singular_values(model, x)
    assert s.shape == (3, 4)
    np.testing.assert_allclose(s, np.linalg.svd(J, compute_uv=False), rtol=1e-12)


def test_jacobian_matches_torch_autograd_twin():
    torch = pytest.importorskip("torch")
    model = _small_mlp(seed=3)
    layers = [m for m in model if isinstance(m, nn.Linear)]
    twin = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 6), torch.nn.ReLU(),
                               torch.nn.Linear(6, 3)).double()
    with torch.no_grad():
        for ours, theirs in zip(layers, [twin[0], twin[2], twin[4]]):
            theirs.weight.copy_(torch.from_numpy(ours.weight.data))
            theirs.bias.copy_(torch.from_numpy(ours.bias.data))
    x = np.random.default_rng(4).standard_normal((5, 5))
    ref = np.stack([torch.autograd.functional.jacobian(twin, torch.from_numpy(xi)).numpy() for xi in x])
    np.testing.assert_allclose(A.jacobian(model, x), ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(A.jacobian_singular_values(model, x),
                               torch.linalg.svdvals(torch.from_numpy(ref)).numpy(), rtol=1e-10, atol=1e-14)


def test_jacobian_restores_grads_and_mode():
    model = _small_mlp()
    g0 = np.full(model[0].weight.shape, 7.0)
    model[0].weight.grad = g0
    model.train()
    A.jacobian(model, np.ones((2, 5)))
    assert model.training
    assert model[0].weight.grad is g0 and np.all(g0 == 7.0)
    assert model[2].weight.grad is None


def test_jacobian_bad_input():
    with pytest.raises(TypeError, match="jacobian: model"):
        A.jacobian(lambda x: x, np.ones((2, 5)))
    with pytest.raises(ValueError, match="jacobian: x must be a non-empty batch"):
        A.jacobian(_small_mlp(), np.ones(5))
    with pytest.raises(TypeError, match="jacobian: x"):
        A.jacobian(_small_mlp(), np.ones((2, 5), dtype=np.int64))


# ---------------------------------------------------------------------------------------------------------
# Low rank and PCA

@pytest.mark.parametrize("shape", SHAPES)
def test_low_rank_is_exact_at_full_rank(shape):
    W = _w(shape, seed=9)
    k = min(_mat(W).shape)
    Af, Bf, r = A.low_rank(W, rank=k)
    assert r == k and Af.shape == (shape[0], k) and Bf.shape == (k, _mat(W).shape[1])
    np.testing.assert_allclose(Af @ Bf, _mat(W), atol=1e-12)
    # energy=1 keeps the numerical rank, also exact
    Ae, Be, re = A.low_rank(W, energy=1.0)
    assert re == k
    np.testing.assert_allclose(Ae @ Be, _mat(W), atol=1e-12)


@pytest.mark.parametrize("shape", [(9, 7), (6, 4, 2, 2)])
@pytest.mark.parametrize("rank", [1, 3])
def test_low_rank_eckart_young(shape, rank):
    W = _w(shape, seed=10)
    s = np.linalg.svd(_mat(W), compute_uv=False)
    Af, Bf, _r = A.low_rank(W, rank=rank)
    E = _mat(W) - Af @ Bf
    assert np.linalg.matrix_rank(Af @ Bf) == rank
    assert np.linalg.norm(E, "fro") ** 2 == pytest.approx(np.sum(s[rank:] ** 2), rel=1e-10)
    assert np.linalg.norm(E, 2) == pytest.approx(s[rank], rel=1e-10)
    # the split is balanced: both factors carry sqrt(sigma)
    np.testing.assert_allclose(np.linalg.svd(Af, compute_uv=False), np.sqrt(s[:rank]), rtol=1e-10)
    np.testing.assert_allclose(np.linalg.svd(Bf, compute_uv=False), np.sqrt(s[:rank]), rtol=1e-10)


@pytest.mark.parametrize("energy", [0.3, 0.9, 0.99])
def test_low_rank_energy_picks_smallest_rank(energy):
    W = _w((12, 10), seed=11)
    s2 = np.linalg.svd(W, compute_uv=False) ** 2
    ratio = np.cumsum(s2) / s2.sum()
    _, _, r = A.low_rank(W, energy=energy)
    assert ratio[r - 1] >= energy and (r == 1 or ratio[r - 2] < energy)


def test_low_rank_keeps_dtype_and_finds_numerical_rank():
    W = _w((8, 2)) @ _w((2, 6), 1)
    Af, Bf, r = A.low_rank(W, energy=1.0)
    assert r == 2
    np.testing.assert_allclose(Af @ Bf, W, atol=1e-12)
    A32, B32, _ = A.low_rank(W.astype(np.float32), rank=2)
    assert A32.dtype == B32.dtype == np.float32
    np.testing.assert_allclose(A32 @ B32, W, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, err, match", [
    ({}, ValueError, "exactly one of rank and energy"),
    ({"rank": 2, "energy": 0.5}, ValueError, "exactly one of rank and energy"),
    ({"rank": 0}, ValueError, r"rank must be an int >= 1 and <= 5, got 0"),
    ({"rank": 6}, ValueError, r"rank must be an int >= 1 and <= 5, got 6"),
    ({"rank": 2.0}, TypeError, "rank must be an int"),
    ({"rank": True}, TypeError, "rank must be an int"),
    ({"energy": 0.0}, ValueError, r"energy must be a finite number > 0 and <= 1, got 0.0"),
    ({"energy": 1.5}, ValueError, r"energy must be a finite number > 0 and <= 1, got 1.5"),
    ({"energy": "all"}, TypeError, "energy must be a real number"),
])
def test_low_rank_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        A.low_rank(_w((5, 7)), **kwargs)


def _covariance_pca(X, k):
    """Independent reference: eigendecomposition of the sample covariance."""
    C = np.cov(X, rowvar=False)
    lam, V = np.linalg.eigh(C)
    order = np.argsort(lam)[::-1][:k]
    return lam[order], V[:, order].T


@pytest.mark.parametrize("n, d, k", [(40, 6, 3), (5, 9, 4), (30, 4, 4)])
def test_pca_matches_covariance_eigendecomposition(n, d, k):
    rng = np.random.default_rng(12)
    X = rng.standard_normal((n, d)) * np.linspace(3, 0.5, d) + 2.0
    comps, var, Z, mean = A.pca(X, k)
    lam, V = _covariance_pca(X, k)
    np.testing.assert_allclose(var, lam, rtol=1e-10)
    np.testing.assert_allclose(np.abs(comps @ V.T), np.eye(k), atol=1e-8)        # same axes up to sign
    np.testing.assert_allclose(mean, X.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(Z, (X - X.mean(axis=0)) @ comps.T, atol=1e-12)
    np.testing.assert_allclose(comps @ comps.T, np.eye(k), atol=1e-12)
    # scikit-learn >= 1.5 signs: each component's largest-magnitude entry is positive
    assert np.all(comps[np.arange(k), np.abs(comps).argmax(axis=1)] > 0)


def test_pca_whiten_gives_unit_variance():
    X = np.random.default_rng(13).standard_normal((50, 5)) @ _w((5, 5), 14)
    _comps, var, Z, _ = A.pca(X, 3, whiten=True)
    np.testing.assert_allclose(Z.var(axis=0, ddof=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(Z * np.sqrt(var), A.pca(X, 3).projected, atol=1e-12)


def test_pca_bad_input():
    with pytest.raises(ValueError, match="pca: X must be 2-D"):
        A.pca(np.ones(4), 1)
    with pytest.raises(ValueError, match="pca: X needs at least 2 samples"):
        A.pca(np.ones((1, 4)), 1)
    with pytest.raises(ValueError, match=r"pca: k must be an int >= 1 and <= 3, got 4"):
        A.pca(_w((3, 5)), 4)
    with pytest.raises(ValueError, match="zero variance"):
        A.pca(np.c_[_w((6, 2)), np.zeros(6)], 3, whiten=True)


# ---------------------------------------------------------------------------------------------------------
# Bad input, shared by the weight functions

WEIGHT_FUNCS = [A.singular_values, orthogonality_error_rms, A.effective_rank, A.stable_rank, A.condition_number,
                A.filter_angles, lambda W: A.low_rank(W, rank=1)]


@pytest.mark.parametrize("fn", WEIGHT_FUNCS)
def test_weight_functions_reject_bad_input(fn):
    with pytest.raises(ValueError, match="W must have at least 2 dimensions"):
        fn(np.ones(4))
    with pytest.raises(TypeError, match="W must be a float32 or float64 array"):
        fn(np.ones((3, 3), dtype=np.int64))
    with pytest.raises(TypeError, match="W must be a float32 or float64 array"):
        fn([[1.0, 0.0], [0.0, 1.0]])
    bad = np.ones((3, 3))
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="W must be finite"):
        fn(bad)
    with pytest.raises(ValueError, match="must not be empty"):
        fn(np.ones((0, 3)))


def test_orthogonality_error_bad_gram():
    with pytest.raises(ValueError, match="orthogonality_error_rms: gram must be one of"):
        orthogonality_error_rms(_w((3, 4)), gram="filters")


# ---------------------------------------------------------------------------------------------------------
# Tables and checkpoints

def test_layer_table_agrees_with_functions():
    model = mlp((6, 5, 3), rng=0, dtype=np.float64)
    rows = A.layer_table(model)
    assert [r["name"] for r in rows] == ["0.weight", "2.weight"]
    for row, (_, W) in zip(rows, A.weights(model)):
        assert row["shape"] == list(W.shape)
        assert row["sigma_max"] == pytest.approx(np.linalg.norm(W, 2), rel=1e-12)
        assert row["condition"] == pytest.approx(A.condition_number(W), rel=1e-12)
        assert row["stable_rank"] == pytest.approx(A.stable_rank(W), rel=1e-12)
        assert row["effective_rank"] == pytest.approx(A.effective_rank(W), rel=1e-12)
        assert row["orthogonality"] == pytest.approx(_rms_ref(W), rel=1e-12)
    text = A.format_layer_table(rows)
    assert text.count("\n") == 3 and "| 0.weight | 5×6 |" in text and "effective rank" in text
    with pytest.raises(TypeError, match="layer_table: model"):
        A.layer_table([np.ones((2, 2))])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    res = train.fit(train.TrainConfig(hidden=(16,), epochs=1, dtype="float64", out=str(out), progress=False),
                    log=None)
    return res


def test_load_model_reproduces_trained_model(checkpoint):
    model, config, meta = A.load_model(checkpoint["checkpoint"])
    assert config.hidden == (16,) and meta["epoch"] == 1 and not model.training
    X = train.load_digits("test", dtype="float64")[0][:20]
    checkpoint["model"].eval()
    np.testing.assert_array_equal(model.forward(X), checkpoint["model"].forward(X))


def test_load_model_cnn_infers_image_size(tmp_path):
    from orthoref.optim import Adam
    config = train.TrainConfig(model="cnn", dtype="float64", progress=False).validate()
    model = train.build_model(config, (1, 8, 8), 10)
    train.save_checkpoint(str(tmp_path / "c.npz"), model, Adam(model.parameters()), np.random.default_rng(0),
                          0, config, [])
    loaded, _, _ = A.load_model(str(tmp_path / "c.npz"))
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8))
    np.testing.assert_array_equal(loaded.forward(x), model.eval().forward(x))


def test_analyze_checkpoint_writes_table(checkpoint, tmp_path):
    out = tmp_path / "analysis"
    rows = A.analyze_checkpoint(checkpoint["checkpoint"], str(out), figures=False, jacobian_examples=8)
    assert [r["name"] for r in rows] == ["0.weight", "2.weight"]
    assert json.loads((out / "layers.json").read_text()) == rows
    md = (out / "layers.md").read_text()
    assert A.format_layer_table(rows) in md and "Jacobian at 8 test examples" in md
    assert sorted(p.name for p in out.iterdir()) == ["layers.json", "layers.md"]


def test_analyze_checkpoint_figures(checkpoint, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "analysis"
    A.analyze_checkpoint(checkpoint["checkpoint"], str(out), figures=True, jacobian_examples=4)
    for name in ("spectra.png", "filter_angles.png", "jacobian.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_analyze_checkpoint_without_matplotlib(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)           # import matplotlib now fails
    with pytest.warns(UserWarning, match="matplotlib is not installed"):
        A.analyze_checkpoint(checkpoint["checkpoint"], str(tmp_path / "a"), jacobian_examples=0)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["layers.json", "layers.md"]
    with pytest.raises(ImportError, match=r"pip install 'orthoref\[plot\]'"):
        A.analyze_checkpoint(checkpoint["checkpoint"], str(tmp_path / "b"), figures=True, jacobian_examples=0)


def test_analyze_checkpoint_bad_arguments(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="figures must be"):
        A.analyze_checkpoint(checkpoint["checkpoint"], str(tmp_path), figures="yes")
    with pytest.raises(train.CheckpointError):
        (tmp_path / "junk.npz").write_bytes(b"not a zip")
        A.analyze_checkpoint(str(tmp_path / "junk.npz"), str(tmp_path / "o"))


@pytest.mark.skipif(not hasattr(__import__("orthoref.cli").cli, "_analyze"), reason="no `orthoref analyze` yet")
def test_cli_analyze(checkpoint, tmp_path, capsys):
    from orthoref import cli
    out = tmp_path / "a"
    assert cli.main(["analyze", checkpoint["checkpoint"], "--out", str(out), "--no-figures",
                     "--jacobian-examples", "4"]) == 0
    printed = capsys.readouterr().out
    assert "| 0.weight | 16×64 |" in printed and "layers.md" in printed
    assert (out / "layers.json").exists()
    assert cli.main(["analyze", str(tmp_path / "missing.npz")]) == 2
    assert "orthoref analyze:" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# Checkpoints of orthoref train --model rnn (orthoref.sequence.fit_adding)

@pytest.fixture(scope="module")
def rnn_checkpoint(tmp_path_factory):
    from orthoref.sequence import fit_adding
    out = tmp_path_factory.mktemp("rnn")
    fit_adding(T=6, hidden=8, steps=20, batch_size=10, eval_every=10, dtype="float64", log=None, out=str(out))
    return str(out / "checkpoint.npz")


def test_analyze_rnn_checkpoint_table(rnn_checkpoint, tmp_path):
    from orthoref.sequence import load_adding_model
    out = tmp_path / "analysis"
    rows = A.analyze_checkpoint(rnn_checkpoint, str(out), figures=False, jacobian_examples=5)
    assert [r["name"] for r in rows] == ["rnn.weight_ih_l0", "rnn.weight_hh_l0", "head.weight"]
    model, _, _ = load_adding_model(rnn_checkpoint)
    for row, W in zip(rows, (model.rnn.weight_ih_l0.data, model.rnn.weight_hh_l0.data, model.head.weight.data)):
        assert row["shape"] == list(W.shape)
        assert row["sigma_max"] == pytest.approx(np.linalg.norm(W, 2), rel=1e-12)
        assert row["condition"] == pytest.approx(np.linalg.cond(W), rel=1e-10)
        assert row["orthogonality"] == pytest.approx(_rms_ref(W), rel=1e-12)
    assert json.loads((out / "layers.json").read_text()) == rows
    md = (out / "layers.md").read_text()
    assert A.format_layer_table(rows) in md and "init orthogonal, adam, step 20" in md
    assert "Hidden-state Jacobian ∂h_T/∂h_0 at 5 held-out sequences (8 singular values each)" in md
    assert sorted(p.name for p in out.iterdir()) == ["layers.json", "layers.md"]
    with pytest.raises(train.CheckpointError, match="load_adding_model"):
        A.load_model(rnn_checkpoint)                 # so orthoref compress refuses it by name, too


def test_analyze_rnn_checkpoint_figures(rnn_checkpoint, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "analysis"
    A.analyze_checkpoint(rnn_checkpoint, str(out), figures=True, jacobian_examples=3)
    for name in ("spectra.png", "filter_angles.png", "jacobian.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_hidden_state_jacobian_matches_finite_differences():
    from orthoref.tasks import adding_problem
    rnn = nn.RNN(2, 5, rng=0, dtype=np.float64)
    x, _ = adding_problem(3, 7, rng=1, dtype=np.float64)
    got = A._hidden_state_jacobian_sv(rnn, x)
    eps = 1e-6
    J = np.empty((3, 5, 5))
    for i in range(5):
        d = np.zeros((3, 5))
        d[:, i] = eps
        rnn.forward(x, d)
        plus = rnn.h_n.copy()
        rnn.forward(x, -d)
        J[:, :, i] = (plus - rnn.h_n) / (2 * eps)
    np.testing.assert_allclose(got, np.linalg.svd(J, compute_uv=False), rtol=1e-7, atol=1e-9)
    assert all(p.grad is None for p in rnn.parameters())


def test_cli_analyze_rnn_checkpoint(rnn_checkpoint, tmp_path, capsys):
    from orthoref import cli
    assert cli.main(["analyze", rnn_checkpoint, "--out", str(tmp_path / "a"), "--no-figures",
                     "--jacobian-examples", "2"]) == 0
    assert "| rnn.weight_hh_l0 | 8×8 |" in capsys.readouterr().out


def _dense_circular_operator(K, n, m):
    """The (c_out·n·m) × (c_in·n·m) matrix of circular cross-correlation with K (PyTorch's conv2d layout),
    built column by column from basis images."""
    c_out, c_in, kh, kw = K.shape
    D = np.zeros((c_out * n * m, c_in * n * m))
    for col in range(c_in * n * m):
        x = np.zeros(c_in * n * m)
        x[col] = 1.0
        x = x.reshape(c_in, n, m)
        y = sum(np.einsum("oc,cij->oij", K[:, :, a, b], np.roll(x, (-a, -b), axis=(1, 2)))
                for a in range(kh) for b in range(kw))
        D[:, col] = y.ravel()
    return D


@pytest.mark.parametrize("shape,image", [((3, 2, 3, 3), (5, 4)), ((2, 4, 2, 3), (3, 6)), ((4, 4, 1, 1), (2, 2))])
def test_conv_singular_values_are_those_of_the_dense_operator(shape, image):
    from orthoref.analysis import conv_singular_values
    K = np.random.default_rng(sum(shape)).standard_normal(shape)
    dense = np.linalg.svd(_dense_circular_operator(K, *image), compute_uv=False)
    ours = conv_singular_values(K, image)
    assert ours.shape == (min(shape[:2]) * image[0] * image[1],)
    np.testing.assert_allclose(ours, dense[:len(ours)], rtol=0, atol=1e-12 * dense[0])
    # the filter matrix (out, in·kh·kw) has other singular values (the same for a 1x1 kernel: I ⊗ K)
    assert np.allclose(ours[0], A.singular_values(K)[0]) == (shape[2] * shape[3] == 1)


def test_conv_singular_values_of_a_delta_orthogonal_kernel_are_one():
    from orthoref.analysis import conv_singular_values
    from orthoref import init
    K = init.delta_orthogonal((4, 4, 3, 3), rng=0, dtype=np.float64)
    np.testing.assert_allclose(conv_singular_values(K, (6, 6)), 1.0, atol=1e-12)


@pytest.mark.parametrize("args,exc,words", [
    ((np.ones((3, 3)), (4, 4)), ValueError, "K must"),
    ((np.ones((2, 2, 3, 3)), (2, 4)), ValueError, "input_shape[0]"),
    ((np.ones((2, 2, 3, 3)), 4), TypeError, "input_shape must be a pair of ints"),
    ((np.ones((2, 2, 3, 3)), (4.0, 4)), TypeError, "input_shape[0] must be an int"),
    ((np.ones((64, 64, 3, 3)), (10 ** 4, 10 ** 4)), ValueError, "more than"),
    ((np.full((2, 2, 3, 3), np.nan), (4, 4)), ValueError, "K must be finite"),
])
def test_conv_singular_values_bad_input(args, exc, words):
    from orthoref.analysis import conv_singular_values
    import re
    with pytest.raises(exc, match=re.escape(words)) as info:
        conv_singular_values(*args)
    assert str(info.value).startswith("conv_singular_values")


def test_analyze_reports_the_conv_operators_beside_the_filter_matrices(tmp_path):
    res = train.fit(train.TrainConfig(model="cnn", epochs=1, dtype="float64", out=str(tmp_path / "r"),
                                      progress=False), log=None)
    rows = A.analyze_checkpoint(res["checkpoint"], str(tmp_path / "an"), figures=False, jacobian_examples=0)
    conv = {r["name"]: r for r in rows if len(r["shape"]) == 4}
    assert set(conv) == {"0.weight", "3.weight"}
    model = res["model"]
    for name, size in (("0.weight", (8, 8)), ("3.weight", (4, 4))):             # the digits: 8x8, pooled 4x4
        w = dict(model.named_parameters())[name].data
        assert conv[name]["operator_sigma_max"] == pytest.approx(A.conv_singular_values(w, size)[0], rel=1e-12)
    text = (tmp_path / "an" / "layers.md").read_text()
    assert "0.weight on 8×8 images: σ_max" in text and "filter matrix" in text
    assert json.loads((tmp_path / "an" / "layers.json").read_text())[0]["operator_sigma_max"] > 0
