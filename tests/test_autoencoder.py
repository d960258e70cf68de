"""orthoref.autoencoder: the tied autoencoder's backward pass, principal angles, training against PCA and
the study "the linear autoencoder learns PCA".

References are never orthoref's own output: finite differences and the closed form of the tied gradient
(and PyTorch's autograd where installed); ``scipy.linalg.subspace_angles`` and subspaces built with known
angles; data built with a known spectrum, whose Eckart–Young error and principal subspace are taken from
the construction and from ``numpy.linalg.eigh``.
"""
import os

import numpy as np
import pytest
import scipy.linalg

from orthoref import autoencoder as ae
from orthoref.autoencoder import (TiedLinearAutoencoder, fit_linear_autoencoder, principal_angles,
                                  study_autoencoder, tied_linear_backward, tied_linear_forward)
from orthoref.nn import BackwardBeforeForwardError
from orthoref.oracle.gradcheck import check_backward, check_complex_step, check_layer
from orthoref.oracle.registry import from_pair

RNG = np.random.default_rng(20261208)


# ---------------------------------------------------------------------------------------------------------
# The tied autoencoder y = x Wᵀ W.

def _loss_and_grads(x, w, dy):
    y, cache = tied_linear_forward(x, w)
    dx, dw = tied_linear_backward(dy, cache)
    return float(np.sum(y * dy)), dx, dw


@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 7)])
def test_tied_gradient_by_central_differences(shape):
    """Every partial derivative of <ȳ, x Wᵀ W> against a central difference (step 1e-6, float64)."""
    x, w, dy = RNG.standard_normal(shape), RNG.standard_normal((3, 7)), RNG.standard_normal(shape)
    _, dx, dw = _loss_and_grads(x, w, dy)
    h = 1e-6
    for a, g in ((x, dx), (w, dw)):
        numeric = np.empty_like(a)
        for i in np.ndindex(a.shape):
            old = a[i]
            a[i] = old + h
            plus = _loss_and_grads(x, w, dy)[0]
            a[i] = old - h
            minus = _loss_and_grads(x, w, dy)[0]
            a[i] = old
            numeric[i] = (plus - minus) / (2 * h)
        np.testing.assert_allclose(g, numeric, rtol=1e-7, atol=1e-7 * np.abs(numeric).max())


def test_tied_gradient_sums_both_uses():
    """dW = W xᵀȳ + W ȳᵀx (decoder use + encoder use, batch summed); either term alone is wrong."""
    x, w, dy = RNG.standard_normal((6, 5)), RNG.standard_normal((2, 5)), RNG.standard_normal((6, 5))
    _, dx, dw = _loss_and_grads(x, w, dy)
    decoder_use, encoder_use = w @ x.T @ dy, w @ dy.T @ x
    np.testing.assert_allclose(dw, decoder_use + encoder_use, rtol=1e-13, atol=1e-13)
    assert np.abs(dw - decoder_use).max() > 0.1 and np.abs(dw - encoder_use).max() > 0.1
    np.testing.assert_allclose(dx, dy @ w.T @ w, rtol=1e-13, atol=1e-13)


def test_tied_gradient_with_the_oracle_checkers():
    """The registry's checkers, as the lead's OpSpec will run them: directional and element-wise finite
    differences, and the complex step (the op is real-analytic: two GEMMs)."""
    apply = from_pair(tied_linear_forward, tied_linear_backward)
    inputs = [RNG.standard_normal((4, 6)), RNG.standard_normal((3, 6))]
    check_backward(apply, inputs, rtol=1e-7, n_directions=4, rng=1)
    check_backward(apply, inputs, rtol=1e-7, n_directions=1, elementwise=True, rng=2)
    check_complex_step(apply, inputs, rng=3)


def test_tied_gradient_matches_torch_autograd():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    x, w, dy = RNG.standard_normal((5, 6)), RNG.standard_normal((3, 6)), RNG.standard_normal((5, 6))
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    yt = F.linear(F.linear(xt, wt), wt.t())
    yt.backward(torch.tensor(dy))
    y, cache = tied_linear_forward(x, w)
    dx, dw = tied_linear_backward(dy, cache)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_tied_layer():
    layer = TiedLinearAutoencoder(6, 3, rng=0, dtype=np.float64)
    check_layer(layer, RNG.standard_normal((4, 6)), rtol=1e-7)
    x, dy = RNG.standard_normal((4, 6)), RNG.standard_normal((4, 6))
    layer.zero_grad()
    y = layer.forward(x)
    dx = layer.backward(dy)
    W = layer.weight.data
    np.testing.assert_allclose(y, x @ W.T @ W, rtol=1e-13)
    np.testing.assert_allclose(layer.weight.grad, W @ x.T @ dy + W @ dy.T @ x, rtol=1e-12)
    np.testing.assert_allclose(dx, dy @ W.T @ W, rtol=1e-12)
    stiefel = TiedLinearAutoencoder(6, 3, weight_init="orthogonal", rng=1, dtype=np.float64)
    np.testing.assert_allclose(stiefel.weight.data @ stiefel.weight.data.T, np.eye(3), atol=1e-14)
    f32 = TiedLinearAutoencoder(6, 3, rng=0)
    assert f32.forward(x.astype(np.float32)).dtype == np.float32


def test_tied_bad_input():
    layer = TiedLinearAutoencoder(6, 3, rng=0, dtype=np.float64)
    with pytest.raises(BackwardBeforeForwardError, match="^TiedLinearAutoencoder.backward"):
        layer.backward(np.ones((2, 6)))
    layer.forward(np.ones((2, 6)))
    with pytest.raises(ValueError, match="^TiedLinearAutoencoder.backward: grad_out"):
        layer.backward(np.ones((1, 1)))
    with pytest.raises(TypeError, match="^TiedLinearAutoencoder"):
        layer.forward(np.ones((2, 6), np.float32))
    with pytest.raises(ValueError, match="^TiedLinearAutoencoder"):
        layer.forward(np.ones((2, 5)))
    with pytest.raises(ValueError, match="^TiedLinearAutoencoder"):
        layer.forward(np.full((2, 6), np.nan))
    with pytest.raises(ValueError, match="^TiedLinearAutoencoder: hidden"):
        TiedLinearAutoencoder(6, 0)
    with pytest.raises(ValueError, match="^tied_linear: x"):
        tied_linear_forward(np.ones((2, 5)), np.ones((3, 6)))
    with pytest.raises(TypeError, match="^tied_linear"):
        tied_linear_forward(np.ones((2, 6), np.float32), np.ones((3, 6)))
    _, cache = tied_linear_forward(np.ones((2, 6)), np.ones((3, 6)))
    with pytest.raises(ValueError, match="^tied_linear_backward: dy"):
        tied_linear_backward(np.ones((2, 5)), cache)
    with pytest.raises(ValueError, match="^tied_linear_backward: dy"):
        tied_linear_backward(np.full((2, 6), np.inf), cache)


# ---------------------------------------------------------------------------------------------------------
# Principal angles.

def _with_angles(theta, n=12, p=None, rng=RNG):
    """``(A, B)``: random bases (mixed by random invertible matrices) of two subspaces of R^n whose principal
    angles are ``theta`` (B has len(theta) columns; A has p >= len(theta), the extra ones orthogonal to B)."""
    theta = np.asarray(theta, dtype=np.float64)
    q = theta.size
    p = q if p is None else p
    Q = np.linalg.qr(rng.standard_normal((n, p + q)))[0]
    QA, perp = Q[:, :p], Q[:, p:]
    QB = QA[:, :q] * np.cos(theta) + perp * np.sin(theta)
    return QA @ rng.standard_normal((p, p)), QB @ rng.standard_normal((q, q))


@pytest.mark.parametrize("theta", [(1e-3, 2e-2, 0.3), (1e-8, 1e-6, 1e-4), (0.9, 1.2, np.pi / 2 - 1e-7)])
@pytest.mark.parametrize("p_extra", [0, 2])
def test_principal_angles_against_scipy(theta, p_extra):
    """Angles all below or all above 45° (where SciPy is accurate): ours, SciPy's and the construction."""
    A, B = _with_angles(theta, p=len(theta) + p_extra)
    ours = principal_angles(A, B)
    np.testing.assert_allclose(ours, scipy.linalg.subspace_angles(A, B), rtol=1e-7, atol=1e-15)
    np.testing.assert_allclose(ours, np.sort(theta)[::-1], rtol=1e-7, atol=1e-15)
    np.testing.assert_allclose(principal_angles(B, A), ours, rtol=1e-12, atol=1e-15)   # symmetric, p < q
    assert ours.shape == (len(theta),) and ours.dtype == np.float64


def test_principal_angles_random_subspaces_against_scipy():
    for p, q in ((3, 3), (4, 2), (2, 5)):
        A, B = RNG.standard_normal((9, p)), RNG.standard_normal((9, q))
        ref = scipy.linalg.subspace_angles(A, B)
        np.testing.assert_allclose(principal_angles(A, B), ref, rtol=1e-6, atol=1e-12)


def test_principal_angles_mixed_small_and_large():
    """An angle of 1e-9 beside one of 1.4 (SciPy 1.17.1 returns 0 for the small one: its sine/cosine mask is
    paired with the angles in reverse order): ours keeps both to full relative accuracy."""
    theta = np.array([1e-9, 0.3, 1.4, np.pi / 2 - 1e-9])
    A, B = _with_angles(theta)
    np.testing.assert_allclose(principal_angles(A, B), theta[::-1], rtol=1e-6)


def test_principal_angles_scale_dtype_and_identity():
    A, B = _with_angles((0.2, 0.5))
    ref = principal_angles(A, B)
    np.testing.assert_allclose(principal_angles(A * 1e300, B * 1e-300), ref, rtol=1e-12)
    np.testing.assert_allclose(principal_angles(A * 1e-310, B), ref, rtol=1e-12)
    f32 = principal_angles(A.astype(np.float32), B.astype(np.float32))
    assert f32.dtype == np.float32
    np.testing.assert_allclose(f32, principal_angles(A.astype(np.float32).astype(np.float64),
                                                     B.astype(np.float32).astype(np.float64)), rtol=1e-6)
    same = principal_angles(A, A @ RNG.standard_normal((2, 2)))
    assert np.all(same < 1e-14), same


def test_principal_angles_bad_input():
    A = RNG.standard_normal((6, 2))
    cases = [((A, np.column_stack([A[:, 0], 2 * A[:, 0]])), ValueError, "B must have full column rank"),
             ((np.zeros((6, 2)), A), ValueError, "A must have full column rank"),
             ((A, RNG.standard_normal((5, 2))), ValueError, "same number of rows"),
             ((A, A.astype(np.float32)), TypeError, "dtype of A"),
             ((A[:, 0], A), ValueError, "A must be 2-D"),
             ((A, np.full((6, 2), np.nan)), ValueError, "B must be finite"),
             ((A.astype(np.int64), A), TypeError, "A must be a float32 or float64 array"),
             ((RNG.standard_normal((2, 3)), A[:2]), ValueError, "A must have full column rank")]
    for args, exc, words in cases:
        with pytest.raises(exc, match=f"^principal_angles: .*{words}"):
            principal_angles(*args)


# ---------------------------------------------------------------------------------------------------------
# Training against PCA, on data with a known spectrum.

S = np.array([9.0, 7.0, 5.0, 2.0, 1.8, 1.5, 1.2, 1.0, 0.8, 0.6]) * 10     # singular values of X_c
N_SYN, K_SYN = 60, 3


def _known_spectrum(rng=np.random.default_rng(7)):
    """``(X, V)``: X_c = U diag(S) Vᵀ exactly (U orthonormal and orthogonal to the ones vector), a mean added."""
    d = S.size
    U = np.linalg.qr(np.column_stack([np.ones(N_SYN), rng.standard_normal((N_SYN, d))]))[0][:, 1:]
    V = np.linalg.qr(rng.standard_normal((d, d)))[0]
    return 0.5 + rng.standard_normal(d) + (U * S) @ V.T, V


@pytest.fixture(scope="module")
def known():
    X, V = _known_spectrum()
    n, d = X.shape
    Xc = X - X.mean(axis=0)
    lam = np.linalg.eigh(Xc.T @ Xc)[0][::-1]                        # = S², by numpy.linalg.eigh
    np.testing.assert_allclose(lam, S ** 2, rtol=1e-10)               # the construction holds
    bound = lam[K_SYN:].sum() / (n * d)                               # Eckart–Young: the discarded part
    return X, V[:, :K_SYN], bound


@pytest.mark.parametrize("variant,lr,decoder_lr", [("untied", 0.01, 0.05), ("tied", 0.02, None),
                                                     ("stiefel_tied", 0.05, None), ("stiefel_untied", 0.05, 0.05)])
def test_training_reaches_the_principal_subspace(known, variant, lr, decoder_lr):
    X, Vk, bound = known
    res = fit_linear_autoencoder(X, K_SYN, variant, lr=lr, decoder_lr=decoder_lr, steps=1500, rng=0,
                                 eval_every=100)
    angle = scipy.linalg.subspace_angles(res["decoder"], Vk).max()
    assert angle < 1e-8, (variant, angle)
    assert res["angle"][-1] == pytest.approx(angle, rel=1e-3, abs=1e-12)
    assert res["eckart_young_mse"] == pytest.approx(bound, rel=1e-12)
    assert abs(res["mse"][-1] / bound - 1) < 1e-10, res["mse"][-1] / bound - 1     # rounding: either sign
    assert res["angle"][0] > 0.1 and res["mse"][0] > 1.2 * bound        # it did learn something
    assert res["mse"].shape == (1501,) and res["angle_steps"][-1] == 1500
    if variant != "untied":
        E = res["encoder"]
        assert np.abs(E @ E.T - np.eye(K_SYN)).max() < 1e-8                # rows orthonormal at the minimum


@pytest.mark.parametrize("variant", ["stiefel_tied", "stiefel_untied"])
def test_stiefel_encoder_stays_orthonormal(known, variant):
    X = known[0]
    for steps in (1, 20, 400):
        E = fit_linear_autoencoder(X, K_SYN, variant, lr=0.05, steps=steps, rng=3)["encoder"]
        assert np.abs(E @ E.T - np.eye(K_SYN)).max() < 1e-10, (variant, steps)


def test_stiefel_tied_learns_a_rotation_of_the_components(known):
    """The rows span the principal subspace but are not the components (the loss is rotation invariant)."""
    X, Vk, _ = known
    E = fit_linear_autoencoder(X, K_SYN, "stiefel_tied", lr=0.05, steps=1500, rng=0)["encoder"]
    C = E @ Vk                                                       # cos(e_i, v_j)
    np.testing.assert_allclose(C @ C.T, np.eye(K_SYN), atol=1e-8)    # an orthogonal matrix: inside the span
    assert np.abs(C).max(axis=1).min() < 0.999, C                    # ... but not the components


def test_float32_training(known):
    X = known[0].astype(np.float32)
    res = fit_linear_autoencoder(X, K_SYN, "tied", lr=0.02, steps=300, rng=0)
    assert res["encoder"].dtype == np.float32 and res["decoder"].dtype == np.float32
    assert res["angle"][-1] < 1e-2


def test_fit_bad_input(known):
    X = known[0]
    cases = [(dict(variant="pca"), ValueError, "variant"), (dict(lr=0.0), ValueError, "lr"),
             (dict(lr=float("nan")), ValueError, "lr"), (dict(steps=10 ** 30), ValueError, "steps"),
             (dict(steps=2.0), TypeError, "steps"), (dict(k=11), ValueError, "k"),
             (dict(momentum=1.0), ValueError, "momentum"), (dict(decoder_lr=-1.0), ValueError, "decoder_lr"),
             (dict(eval_every=0), ValueError, "eval_every"), (dict(rng=-1), ValueError, "rng"),
             (dict(variant="tied", decoder_lr=0.1), ValueError, "decoder_lr applies to the untied"),
             (dict(X=X[:, 0]), ValueError, "X"), (dict(X=X[:1]), ValueError, "X"),
             (dict(X=np.full_like(X, np.inf)), ValueError, "X")]
    for override, exc, name in cases:
        kw = dict(X=X, k=K_SYN, variant="untied", lr=0.01, steps=3)
        kw.update(override)
        with pytest.raises(exc, match=f"^fit_linear_autoencoder: {name}"):
            fit_linear_autoencoder(**kw)
    with pytest.raises(ValueError, match="^fit_linear_autoencoder: training diverged at step .*lower lr"):
        fit_linear_autoencoder(X, K_SYN, "untied", lr=1e6, steps=200)
    with pytest.raises(ValueError, match="^fit_linear_autoencoder: the first forward pass overflows.*rescale X"):
        fit_linear_autoencoder((X * 1e19).astype(np.float32), K_SYN, "untied", lr=0.01, steps=2)


# ---------------------------------------------------------------------------------------------------------
# The study.

def _recording():
    """A MonkeyPatch context recording every matplotlib Figure saved (as tests/test_figures.py does)."""
    from matplotlib.figure import Figure
    saved, original = [], Figure.savefig

    def savefig(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        saved.append(self)
        return out
    mp = pytest.MonkeyPatch()
    mp.setattr(Figure, "savefig", savefig)
    return mp, saved


def _check_figures(paths, saved):
    """The checks of tests/test_figures.py on each figure: labelled axes, legends, curves in the frame,
    plain log ticks, no overlapping labels."""
    import test_figures as tf
    figures = {os.path.basename(p): f for p, f in zip(paths, saved)}
    for name in figures:
        for check in (tf.test_axes_are_labelled, tf.test_several_series_have_a_legend,
                      tf.test_curves_stay_in_the_frame, tf.test_log_ticks_are_plain_numbers,
                      tf.test_labels_do_not_overlap):
            check(figures, name)


def test_quick_study_without_mnist(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(ae, "_load_mnist", lambda n: None)
    mp, saved = _recording()
    try:
        res = study_autoencoder(str(tmp_path / "fig"), str(tmp_path / "md"), True, 0, None)
    finally:
        mp.undo()
    names = ["autoencoder_angles.png", "autoencoder_mse.png", "autoencoder_directions.png"]
    assert [os.path.basename(p) for p in res["figures"]] == names
    for p in res["figures"]:
        assert os.path.getsize(p) > 10_000 and os.path.dirname(p) == str(tmp_path / "fig")
    assert res["markdown"] == str(tmp_path / "md" / "autoencoder.md")
    text = open(res["markdown"], encoding="utf-8").read()
    assert "MNIST: skipped" in text and "../fig/autoencoder_angles.png" in text
    assert [r["variant"] for r in res["rows"]] == list(ae.VARIANTS) and res["mnist"] is None
    for r in res["rows"]:
        assert r["k"] == 4 and 0 <= r["angle"] < 0.01 and -1e-12 < r["excess"] < 1e-3
        assert np.isfinite([v for v in r.values() if isinstance(v, float)]).all()
    assert sorted(res["sweep"]) == [2, 4]
    assert res["rows"][2]["orthonormality"] < 1e-10 and res["rows"][3]["orthonormality"] < 1e-10
    _check_figures(res["figures"], saved)


def test_quick_study_with_mnist(tmp_path, monkeypatch):
    """The MNIST branch, on stand-in images (the real files are not needed to run its code)."""
    pytest.importorskip("matplotlib")
    images = np.random.default_rng(1).random((300, 784)) * (np.arange(784) % 28 > 3)
    asked = []
    monkeypatch.setattr(ae, "_load_mnist", lambda n: asked.append(n) or images[:n])
    mp, saved = _recording()
    try:
        res = study_autoencoder(tmp_path, tmp_path, True, 1, None)
    finally:
        mp.undo()
    assert asked == [300]
    assert len(res["mnist"]) == 4 and all(np.isfinite(r["angle"]) for r in res["mnist"])
    text = open(res["markdown"], encoding="utf-8").read()
    assert "MNIST, the first 300 training images" in text and "MNIST: skipped" not in text
    assert len([ax for ax in saved[1].axes if ax.get_visible()]) == 4        # MSE panels for both data sets
    _check_figures(res["figures"], saved)


def test_study_bad_arguments(tmp_path):
    for args, exc, name in (((3, str(tmp_path), True, 0, None), TypeError, "out_dir"),
                            ((str(tmp_path), None, True, 0, None), TypeError, "md_dir"),
                            ((str(tmp_path), str(tmp_path), "yes", 0, None), TypeError, "quick"),
                            ((str(tmp_path), str(tmp_path), True, -1, None), ValueError, "seed"),
                            ((str(tmp_path), str(tmp_path), True, 1.5, None), TypeError, "seed"),
                            ((str(tmp_path), str(tmp_path), True, 0, 3), TypeError, "log")):
        with pytest.raises(exc, match=f"^study_autoencoder: {name}"):
            study_autoencoder(*args)


# ---------------------------------------------------------------------------------------------------------
# The GPU path on the CPU (tests/strict_backend.py: a CuPy stand-in that refuses hidden host round trips).

def test_device_path_agrees_with_numpy(monkeypatch):
    import strict_backend as sb
    from orthoref import backend
    A, B = _with_angles((0.1, 0.7, 1.2), p=4)
    X = _known_spectrum()[0]
    ref_angles = principal_angles(A, B)
    ref = fit_linear_autoencoder(X, K_SYN, "stiefel_untied", lr=0.05, steps=20, rng=0)
    sb.install(monkeypatch)
    with backend.using("cupy"):
        angles = principal_angles(sb.to_device(A), sb.to_device(B))
        res = fit_linear_autoencoder(sb.to_device(X), K_SYN, "stiefel_untied", lr=0.05, steps=20, rng=0)
    assert isinstance(angles, sb.StrictArray) and isinstance(res["encoder"], sb.StrictArray)
    np.testing.assert_allclose(angles.get(), ref_angles, rtol=1e-12)
    np.testing.assert_allclose(res["mse"], ref["mse"], rtol=1e-12)
    np.testing.assert_allclose(res["angle"], ref["angle"], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(res["decoder"].get(), ref["decoder"], rtol=1e-12, atol=1e-12)


def test_tied_gradient_that_overflows_in_the_sum_of_its_two_uses_raises():
    """Found by the API sweep: each use's gradient finite, their sum past float64's maximum — a NonFiniteError
    naming the layer and nothing accumulated (it was accumulated as Inf, marked finite)."""
    from orthoref._checks import NonFiniteError
    from orthoref.autoencoder import TiedLinearAutoencoder
    layer = TiedLinearAutoencoder(4, 3, rng=0, dtype=np.float64)
    layer.weight.data = np.full((3, 4), 1.0)
    x = np.ones((2, 4))
    y = layer.forward(x)
    with pytest.raises(NonFiniteError, match="TiedLinearAutoencoder"):
        layer.backward(np.full(y.shape, 2e307), input_grad=False)   # each use 1.6e308, the sum 3.2e308
    assert layer.weight.grad is None
