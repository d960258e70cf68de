"""orthoref.decorrelation: ZCA, PCA and Cholesky whitening, group-wise ZCA (Decorrelated BN), IterNorm and
DeCov -- the whitening properties, the sign and ordering conventions, gradients by finite differences
(repeated eigenvalues, Σ = cI and λ_min = ε included), PyTorch (eigh, Newton–Schulz and Cholesky routes),
IterNorm against its closed form on the spectrum and the official code's backward pass, the PCA gap error
and bad input."""
import numpy as np
import pytest
import scipy.linalg

from orthoref import NonFiniteError
from orthoref import decorrelation as D
from orthoref.oracle import check_backward
from orthoref.oracle.samples.decorrelation import rank_deficient, with_spectrum

MAPS = {"zca": (D.zca_whitening, D.zca_whitening_vjp), "pca": (D.pca_whitening, D.pca_whitening_vjp),
        "cholesky": (D.cholesky_whitening, D.cholesky_whitening_vjp)}
GROUPED = {"zca": (D.group_zca_whitening, D.group_zca_whitening_vjp),
           "iternorm": (D.iternorm_whitening, D.iternorm_whitening_vjp)}
TIE_SAFE = ("zca", "cholesky")          # gradients defined at repeated eigenvalues


def _op(kind, **kw):
    f, f_vjp = MAPS[kind]
    return lambda X: ((f(X, **kw),), lambda cts: (f_vjp(X, cts[0], **kw),))


def _cov(X, eps=1e-5):
    Xc = X - X.mean(axis=0)
    return Xc, Xc.T @ Xc / X.shape[0] + eps * np.eye(X.shape[1])


def _sample(rng, m=12, var=(4.0, 2.5, 1.4, 0.5), dtype=np.float64):
    return with_spectrum(rng, m, var, dtype)


# ---------------------------------------------------------------------------------------------------------
# Whitening properties.

@pytest.mark.parametrize("kind", list(MAPS))
@pytest.mark.parametrize("eps", [1e-5, 0.3])
def test_output_covariance_is_identity_up_to_eps(kind, eps, rng):
    X = _sample(rng)
    Y = MAPS[kind][0](X, eps=eps)
    Xc, S = _cov(X, eps)
    C = Y.T @ Y / X.shape[0]
    if kind == "cholesky":
        Linv = np.linalg.inv(np.linalg.cholesky(S))
        want = np.eye(4) - eps * Linv @ Linv.T
    else:
        want = np.eye(4) - eps * np.linalg.inv(S)
        if kind == "pca":                                               # diagonal in the principal axes
            want = np.diag(1 - eps / np.linalg.eigvalsh(S)[::-1])
    np.testing.assert_allclose(C, want, atol=1e-13)
    assert np.abs(C - np.eye(4)).max() <= eps / np.linalg.eigvalsh(S)[0] * (1 + 1e-12)
    np.testing.assert_allclose(Y.mean(axis=0), 0, atol=1e-14)


def test_zca_is_the_symmetric_whitening_closest_to_the_centred_data(rng):
    X = _sample(rng)
    Xc, S = _cov(X)
    Y = D.zca_whitening(X)
    W = np.linalg.lstsq(Xc, Y, rcond=None)[0]
    np.testing.assert_allclose(W, W.T, atol=1e-12)
    np.testing.assert_allclose(W, np.linalg.inv(scipy.linalg.sqrtm(S).real), atol=1e-12)
    assert np.all(np.linalg.eigvalsh(W) > 0)
    # every other whitening is Y Q (Q orthogonal): PCA, Cholesky and random rotations are farther from X_c
    best = np.linalg.norm(Y - Xc)
    others = [D.pca_whitening(X), D.cholesky_whitening(X)]
    others += [Y @ np.linalg.qr(rng.standard_normal((4, 4)))[0] for _ in range(20)]
    for Z in others:
        assert np.abs(Z.T @ Z / 12 - np.eye(4)).max() <= 1e-5 / np.linalg.eigvalsh(S)[0]   # a whitening too
        assert np.linalg.norm(Z - Xc) > best


def test_pca_order_sign_convention_and_rotation_of_zca(rng):
    X = _sample(rng, var=(0.5, 4.0, 1.4, 2.5))
    Xc, S = _cov(X)
    Y = D.pca_whitening(X)
    P = np.linalg.lstsq(Xc, Y, rcond=None)[0]                           # U Λ^{-1/2}
    lam = 1.0 / (P * P).sum(axis=0)
    U = P * np.sqrt(lam)
    assert np.all(np.diff(lam) < 0), lam                                # descending
    np.testing.assert_allclose(lam, np.linalg.eigvalsh(S)[::-1], rtol=1e-12)
    top = U[np.argmax(np.abs(U), axis=0), np.arange(4)]
    assert np.all(top > 0)                                              # largest entry of each axis positive
    np.testing.assert_allclose(Y, D.zca_whitening(X) @ U, atol=1e-12)


def test_pca_sign_is_fixed_whatever_the_data_sign(rng):
    X = _sample(rng)
    Y = D.pca_whitening(X)
    Yneg = D.pca_whitening(-X)
    # -X has the same Σ and axes: the convention makes the output change sign, not the axes
    np.testing.assert_allclose(Yneg, -Y, atol=1e-12)


def test_cholesky_factor_is_lower_triangular_with_positive_diagonal(rng):
    X = _sample(rng)
    Xc, S = _cov(X)
    Y = D.cholesky_whitening(X)
    W = np.linalg.lstsq(Xc, Y, rcond=None)[0]                           # L^{-T}
    L = np.linalg.inv(W).T
    np.testing.assert_allclose(np.triu(L, 1), 0, atol=1e-12)
    assert np.all(np.diag(L) > 0)
    np.testing.assert_allclose(L @ L.T, S, rtol=1e-12, atol=1e-12)
    # feature j of Y depends only on features 0..j of X
    X2 = X.copy()
    X2[:, 3] += rng.standard_normal(X.shape[0])
    np.testing.assert_allclose(D.cholesky_whitening(X2)[:, :3], Y[:, :3], atol=1e-12)


@pytest.mark.parametrize("kind", list(MAPS))
def test_float32_in_float32_out_and_close_to_float64(kind, rng):
    X = _sample(rng)
    G = rng.standard_normal(X.shape)
    f, f_vjp = MAPS[kind]
    Y32, g32 = f(X.astype(np.float32)), f_vjp(X.astype(np.float32), G.astype(np.float32))
    assert Y32.dtype == np.float32 and g32.dtype == np.float32
    Y64, g64 = f(X.astype(np.float32).astype(np.float64)), f_vjp(X.astype(np.float32).astype(np.float64), G)
    assert np.abs(Y32 - Y64).max() <= 1e-5 * np.abs(Y64).max()
    assert np.abs(g32 - g64).max() <= 1e-4 * np.abs(g64).max()


def test_one_feature_is_standardisation(rng):
    X = rng.standard_normal((7, 1)) * 3 + 2
    want = (X - X.mean()) / np.sqrt(X.var() + 1e-5)
    for kind in MAPS:
        np.testing.assert_allclose(MAPS[kind][0](X), want, rtol=1e-13)


# ---------------------------------------------------------------------------------------------------------
# Gradients.

@pytest.mark.parametrize("kind", list(MAPS))
@pytest.mark.parametrize("eps", [1e-5, 0.3])
def test_gradient_finite_differences(kind, eps, rng):
    X = _sample(rng)
    rep = check_backward(_op(kind, eps=eps), [X], rtol=1e-8, n_directions=4, elementwise=True, rng=1)
    assert rep.max_rel_error <= 1e-8


TIES = {"(2, 1, 1, 1)": (10, (2.0, 1.0, 1.0, 1.0)), "Σ = (1 + eps) I": (9, (1.0, 1.0, 1.0)),
        "(3, 3, 1)": (8, (3.0, 3.0, 1.0))}


@pytest.mark.parametrize("kind", TIE_SAFE)
@pytest.mark.parametrize("tie", list(TIES))
def test_gradient_at_exactly_repeated_eigenvalues(kind, tie, rng):
    m, var = TIES[tie]
    X = with_spectrum(rng, m, var)
    lam = np.linalg.eigvalsh(_cov(X)[1])
    assert np.min(np.diff(lam)) < 1e-13 * lam[-1]                     # tied to rounding
    rep = check_backward(_op(kind), [X], rtol=1e-8, n_directions=6, elementwise=True, rng=2)
    assert rep.max_rel_error <= 1e-8


def test_zca_gradient_at_an_exactly_diagonal_covariance():
    """X_c with orthogonal columns of equal norm: Σ is cI to the last bit, eigh returns equal eigenvalues,
    and the divided differences are exactly f'(λ) (no 0/0)."""
    X = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]) + 0.5
    lam = np.linalg.eigvalsh(_cov(X)[1])
    assert lam[0] == lam[1]
    g = D.zca_whitening_vjp(X, np.eye(4, 2))
    assert np.isfinite(g).all()
    check_backward(_op("zca"), [X], rtol=1e-8, elementwise=True, rng=3)


@pytest.mark.parametrize("kind", list(MAPS))
def test_gradient_near_singular_lambda_min_is_eps(kind, rng):
    """m = d: X_c has rank d − 1, λ_min = ε = 1e-5 exactly (κ ≈ 2e5), the case of every batch with
    m <= d. (The registered stress sample of this kind uses ε = 0.01: the float32 budgets of
    tests/test_budgets.py; float64 finite differences resolve ε = 1e-5 at steps 1e-4 .. 1e-3.)"""
    X = rank_deficient(rng, 5)
    lam = np.linalg.eigvalsh(_cov(X)[1])
    assert lam[0] == pytest.approx(1e-5, rel=1e-6) and lam[-1] / lam[0] > 1e5
    rep = check_backward(_op(kind), [X], rtol=1e-8, eps=3e-4, n_directions=4, elementwise=True, rng=4)
    assert rep.max_rel_error <= 1e-8


def test_divided_differences_are_exact_at_close_eigenvalues():
    """(f(a) − f(b))/(a − b) for f = λ^{-1/2} against 50-digit decimal arithmetic: the stable form keeps
    full accuracy where the difference quotient of floats loses everything (gap 1e-13 .. 0)."""
    from decimal import Decimal, getcontext
    getcontext().prec = 50
    a = 1.0
    for gap in (1e-3, 1e-8, 1e-13, 1e-16, 0.0):
        b = a + gap
        K = D._inv_sqrt_divided_differences(np, np.array([a, b]))
        da, db = Decimal(a), Decimal(b)
        fa, fb = 1 / da.sqrt(), 1 / db.sqrt()
        exact = (fa - fb) / (da - db) if da != db else -Decimal(1) / (2 * da * da.sqrt())
        assert abs(float(Decimal(float(K[0, 1])) - exact) / float(exact)) <= 4e-16
        assert K[0, 0] == -0.5 * a ** -1.5


# ---------------------------------------------------------------------------------------------------------
# PyTorch.

torch_cases = pytest.mark.torch


def _torch_vjp(twin, X, G, **kw):
    import torch
    t = torch.from_numpy(X.copy()).requires_grad_(True)
    (y,) = twin(t, **kw)
    (g,) = torch.autograd.grad(y, t, torch.from_numpy(G))
    return y.detach().numpy(), g.numpy()


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@torch_cases
@pytest.mark.parametrize("kind,twin", [("zca", "torch_zca_whitening"), ("zca", "torch_zca_whitening_eigh"),
                                       ("pca", "torch_pca_whitening"),
                                       ("cholesky", "torch_cholesky_whitening")])
def test_matches_torch_at_distinct_eigenvalues(kind, twin, rng):
    pytest.importorskip("torch")
    from orthoref.oracle import torch_twins
    for eps, X in ((1e-5, _sample(rng)), (0.1, _sample(rng, m=6)), (1e-5, rank_deficient(rng, 5))):
        G = rng.standard_normal(X.shape)
        y, g = _torch_vjp(getattr(torch_twins, twin), X, G, eps=eps)
        f, f_vjp = MAPS[kind]
        assert _rel(f(X, eps=eps), y) <= 1e-10
        assert _rel(f_vjp(X, G, eps=eps), g) <= 1e-9                   # κ ≈ 2e5 for the rank-deficient X


@torch_cases
def test_torch_eigh_gradient_breaks_at_repeated_eigenvalues_ours_does_not(rng):
    """torch.linalg.eigh's backward divides by λ_i − λ_j: at a tie its ZCA gradient is NaN/Inf or noise
    (its documentation warns of it); ours agrees with finite differences and with autograd through the
    Newton–Schulz iteration, which has no such division."""
    pytest.importorskip("torch")
    from orthoref.oracle.torch_twins import torch_zca_whitening, torch_zca_whitening_eigh
    bad = 0
    for m, var in TIES.values():
        X = with_spectrum(rng, m, var)
        G = rng.standard_normal(X.shape)
        ours = D.zca_whitening_vjp(X, G)
        _, g_ns = _torch_vjp(torch_zca_whitening, X, G)
        assert _rel(ours, g_ns) <= 1e-12
        _, g_eigh = _torch_vjp(torch_zca_whitening_eigh, X, G)
        bad += not np.isfinite(g_eigh).all() or _rel(g_eigh, ours) > 1e-6
    assert bad >= 2


@torch_cases
def test_decov_matches_torch_cov_without_correction_and_states_the_factor(rng):
    torch = pytest.importorskip("torch")
    H = rng.standard_normal((6, 4)) + 1
    value, grad = D.decov(H, weight=0.3)
    t = torch.from_numpy(H).requires_grad_(True)
    C = torch.cov(t.T, correction=0)
    v = 0.15 * ((C - torch.diag(torch.diagonal(C))) ** 2).sum()
    v.backward()
    assert float(value) == pytest.approx(v.item(), rel=1e-14)
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-13)
    C1 = torch.cov(torch.from_numpy(H).T)                               # correction=1: 1/(m − 1)
    v1 = 0.15 * ((C1 - torch.diag(torch.diagonal(C1))) ** 2).sum()
    assert float(v1) == pytest.approx(float(value) * (6 / 5) ** 2, rel=1e-13)


# ---------------------------------------------------------------------------------------------------------
# DeCov.

def test_decov_value_gradient_and_layouts(rng):
    H = rng.standard_normal((10, 5))
    Hc = H - H.mean(axis=0)
    C = Hc.T @ Hc / 10
    value, grad = D.decov(H, weight=2.0)
    assert value.dtype == np.float64 and value.shape == ()
    assert float(value) == pytest.approx((np.sum(C ** 2) - np.sum(np.diag(C) ** 2)), rel=1e-13)
    check_backward(lambda h: ((D.decov(h)[0],), lambda c: (D.decov(h)[1] * c[0],)), [H], elementwise=True)
    H4 = rng.standard_normal((2, 3, 2, 2))
    v4, g4 = D.decov(H4, weight=0.5)
    v2, g2 = D.decov(H4.transpose(0, 2, 3, 1).reshape(-1, 3), weight=0.5)
    assert float(v4) == float(v2)
    np.testing.assert_array_equal(g4, g2.reshape(2, 2, 2, 3).transpose(0, 3, 1, 2))
    assert D.decov(H, weight=0.0)[0] == 0 and not D.decov(H, weight=0.0)[1].any()
    v32, g32 = D.decov(H.astype(np.float32))
    assert v32.dtype == np.float32 and g32.dtype == np.float32
    # a decorrelated batch costs nothing
    Hd = with_spectrum(rng, 9, (1.0, 2.0, 3.0), V=np.eye(3))
    assert float(D.decov(Hd)[0]) < 1e-25


# ---------------------------------------------------------------------------------------------------------
# Errors.

def test_pca_gradient_raises_at_a_repeated_eigenvalue_naming_the_gap(rng):
    X = with_spectrum(rng, 10, (2.0, 1.0, 1.0, 0.5))
    Y = D.pca_whitening(X)                                              # the forward pass still answers
    assert np.isfinite(Y).all()
    with pytest.raises(ValueError, match=r"pca_whitening_vjp: eigenvalues 1 and 2 .*relative gap .*<= √eps"):
        D.pca_whitening_vjp(X, np.ones_like(X))
    assert D.pca_gap_tolerance(np.float64) == pytest.approx(1.49e-8, rel=1e-2)
    assert D.pca_gap_tolerance("float32") == pytest.approx(3.45e-4, rel=1e-2)
    with pytest.raises(TypeError, match="pca_gap_tolerance: dtype"):
        D.pca_gap_tolerance(np.float16)
    # a gap of 1e-6 relative: fine in float64, refused in float32
    Xg = with_spectrum(rng, 10, (2.0, 1.0 + 2e-6, 1.0, 0.5))
    assert np.isfinite(D.pca_whitening_vjp(Xg, np.ones_like(Xg))).all()
    with pytest.raises(ValueError, match="pca_whitening_vjp: .*float32"):
        D.pca_whitening_vjp(Xg.astype(np.float32), np.ones(Xg.shape, np.float32))


WHO = ["zca_whitening", "pca_whitening", "cholesky_whitening", "group_zca_whitening", "iternorm_whitening"]


def _call(who, X, **kw):
    return getattr(D, who)(X, **kw)


def _call_vjp(who, X, G=None, **kw):
    return getattr(D, who + "_vjp")(X, np.ones_like(X) if G is None else G, **kw)


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("bad,exc,words", [
    (np.ones(5), ValueError, "X must be 2-D"),
    (np.ones((2, 3, 4)), ValueError, "X must be 2-D"),
    (np.ones((1, 3)), ValueError, "at least 2 samples"),
    (np.ones((0, 3)), ValueError, "must not be empty"),
    (np.ones((4, 0)), ValueError, "must not be empty"),
    (np.ones((4, 3), dtype=np.int64), TypeError, "float32 or float64"),
    (np.ones((4, 3), dtype=np.float16), TypeError, "float32 or float64"),
    ([[1.0, 2.0], [3.0, 4.0]], TypeError, "float32 or float64 array"),
    (np.array([[1.0, np.nan], [2.0, 3.0]]), NonFiniteError, "finite"),
    (np.array([[1.0, np.inf], [2.0, 3.0]]), NonFiniteError, "finite"),
])
def test_bad_x(who, bad, exc, words):
    for fn in (lambda X: _call(who, X), lambda X: getattr(D, who + "_vjp")(X, X)):
        with pytest.raises(exc, match=rf"^{who}(_vjp)?: .*{words}"):
            fn(bad)


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("eps,exc", [(0.0, ValueError), (-1e-5, ValueError), (np.nan, ValueError),
                                     (np.inf, ValueError), (True, TypeError), ("1e-5", TypeError),
                                     (np.ones(1), TypeError)])
def test_bad_eps(who, eps, exc, rng):
    X = _sample(rng)
    with pytest.raises(exc, match=rf"^{who}: eps must be"):
        _call(who, X, eps=eps)
    with pytest.raises(exc, match=rf"^{who}_vjp: eps must be"):
        _call_vjp(who, X, eps=eps)


@pytest.mark.parametrize("who", WHO)
def test_bad_grad_out(who, rng):
    X = _sample(rng)
    fn = getattr(D, who + "_vjp")
    for G, exc, words in ((np.ones((12, 5)), ValueError, "shape"), (np.ones((1, 1)), ValueError, "shape"),
                          (np.ones((12, 4), np.float32), TypeError, "dtype float64"),
                          (np.full((12, 4), np.nan), NonFiniteError, "finite")):
        with pytest.raises(exc, match=rf"^{who}_vjp: grad_out .*{words}"):
            fn(X, G)


@pytest.mark.parametrize("who", [w for w in WHO if w != "iternorm_whitening"])    # IterNorm: no singular case
def test_numerically_singular_covariance_is_refused(who, rng):
    """m <= d with ε negligible against the variances: λ_min has no correct digit."""
    X = 1e6 * rng.standard_normal((3, 5))
    with pytest.raises(ValueError, match=rf"^{who}: the covariance .*numerically (singular|positive)"):
        _call(who, X)
    with pytest.raises(ValueError, match=rf"^{who}_vjp: the covariance"):
        _call_vjp(who, X)
    # float32 at a moderate scale: ε = 1e-5 below float32's resolution of a spectrum of size ~1e2
    X32 = (30 * rank_deficient(rng, 5)).astype(np.float32)
    with pytest.raises(ValueError, match="numerically .* float32.* increase eps"):
        _call(who, X32)
    assert np.isfinite(_call(who, X32, eps=1.0)).all()                 # a larger eps is the remedy
    assert np.isfinite(_call(who, X32.astype(np.float64))).all()       # and so is float64


@pytest.mark.parametrize("who", WHO)
def test_overflow_is_a_non_finite_error(who, rng):
    X = _sample(rng)
    with pytest.raises(NonFiniteError, match=rf"^{who}: the covariance .* overflows float64"):
        _call(who, 1e160 * X)
    with pytest.raises(NonFiniteError, match=rf"^{who}: the covariance .* overflows float32 .*use float64"):
        _call(who, (1e19 * X).astype(np.float32))
    with pytest.raises(NonFiniteError, match=rf"^{who}_vjp: the gradient overflows"):
        _call_vjp(who, X, np.full(X.shape, 1e308))


def test_decov_bad_input(rng):
    H = rng.standard_normal((6, 3))
    for bad, exc, words in ((np.ones(4), ValueError, "H must be 2-D or 4-D"),
                            (np.ones((2, 3, 4)), ValueError, "H must be 2-D or 4-D"),
                            (np.ones((1, 3)), ValueError, "at least 2 samples"),
                            (np.ones((1, 3, 1, 1)), ValueError, "at least 2 samples"),
                            (np.ones((6, 3), np.int32), TypeError, "float32 or float64"),
                            (np.array([[np.nan, 1.0], [1.0, 2.0]]), NonFiniteError, "finite")):
        with pytest.raises(exc, match=f"^decov: .*{words}"):
            D.decov(bad)
    for w, exc in ((-1.0, ValueError), (np.nan, ValueError), (True, TypeError), ("1", TypeError)):
        with pytest.raises(exc, match="^decov: weight must be"):
            D.decov(H, weight=w)
    with pytest.raises(NonFiniteError, match="^decov: the penalty overflows float64"):
        D.decov(1e80 * H)
    with pytest.raises(NonFiniteError, match="^decov: the penalty overflows float32 .*use float64"):
        D.decov((1e10 * H).astype(np.float32))


def test_inputs_are_not_modified(rng):
    X = _sample(rng)
    G = rng.standard_normal(X.shape)
    X0, G0 = X.copy(), G.copy()
    for f, f_vjp in list(MAPS.values()) + [GROUPED["zca"], GROUPED["iternorm"]]:
        f(X), f_vjp(X, G)
    D.decov(X)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(G, G0)


# ---------------------------------------------------------------------------------------------------------
# Group-wise whitening: Decorrelated BN (ZCA per group) and IterNorm.

def _inv_sqrtm(S):
    return np.linalg.inv(scipy.linalg.sqrtm(S).real)


@pytest.mark.parametrize("groups,bounds", [(2, ((0, 2), (2, 4), (4, 5))), (3, ((0, 3), (3, 5))),
                                           (5, ((0, 5),)), (None, ((0, 5),)), (10 ** 30, ((0, 5),))])
def test_group_zca_is_zca_of_each_group_the_last_one_smaller(groups, bounds, rng):
    X = rng.standard_normal((20, 5)) @ rng.standard_normal((5, 5)) + 3.0
    Y = D.group_zca_whitening(X, groups=groups, eps=1e-3)
    Xc = X - X.mean(axis=0)
    assert len(bounds) == -(-5 // min(groups or 5, 5))
    for a, b in bounds:                                                 # SciPy's sqrtm, group by group
        S = Xc[:, a:b].T @ Xc[:, a:b] / 20 + 1e-3 * np.eye(b - a)
        np.testing.assert_allclose(Y[:, a:b], Xc[:, a:b] @ _inv_sqrtm(S), rtol=1e-11, atol=1e-12)
    if len(bounds) == 1:
        np.testing.assert_allclose(Y, D.zca_whitening(X, eps=1e-3), rtol=1e-13, atol=1e-14)


def _iternorm_closed_form(X, T, eps=1e-5):
    """``X_c p_T(Σ_N)/√tr Σ`` with ``p_T`` the paper's recursion run on each eigenvalue of ``Σ_N`` (a scalar
    recursion: no matrix rounding to amplify), in float64."""
    Xc = X - X.mean(axis=0)
    S = Xc.T @ Xc / len(X) + eps * np.eye(X.shape[1])
    t = np.trace(S)
    lam, U = np.linalg.eigh(S / t)
    p = np.ones_like(lam)
    for _ in range(T):
        p = 1.5 * p - 0.5 * p ** 3 * lam
    return Xc @ ((U * p) @ U.T) / np.sqrt(t)


def _iternorm_paper_recursion(X, T, eps=1e-5):
    """The official code's forward pass: ``P ← 1.5 P − 0.5 P³ Σ_N`` as matrices."""
    Xc = X - X.mean(axis=0)
    S = Xc.T @ Xc / len(X) + eps * np.eye(X.shape[1])
    t = np.trace(S)
    P = np.eye(X.shape[1])
    with np.errstate(over="ignore", invalid="ignore"):                  # it diverges at large T
        for _ in range(T):
            P = 1.5 * P - 0.5 * np.linalg.matrix_power(P, 3) @ (S / t)
        return Xc @ P / np.sqrt(t)


@pytest.mark.parametrize("T", [1, 2, 5, 10, 30])
def test_iternorm_is_the_papers_polynomial_in_sigma_n_computed_stably(T, rng):
    X = with_spectrum(rng, 30, (4.0, 1.0, 0.2, 0.04), mean=2.0)                 # κ(Σ_N) = 100
    Y = D.iternorm_whitening(X, iterations=T)
    want = _iternorm_closed_form(X, T)
    np.testing.assert_allclose(Y, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    paper = _iternorm_paper_recursion(X, T)
    err = np.abs(paper - want).max() / np.abs(want).max()
    if T <= 5:
        assert err < 1e-13                                              # the same map...
    elif T == 30:
        assert not err < 1e-2                                           # ...whose uncoupled form loses it


def test_iternorm_converges_to_group_zca_and_is_partial_at_t5(rng):
    X = rng.standard_normal((40, 6)) @ rng.standard_normal((6, 6)) + 1.0
    zca = D.group_zca_whitening(X, groups=3)
    np.testing.assert_allclose(D.iternorm_whitening(X, groups=3, iterations=60), zca, atol=1e-10)
    Y5 = D.iternorm_whitening(X, groups=3)
    for a in (0, 3):
        C = Y5[:, a:a + 3].T @ Y5[:, a:a + 3] / 40
        lam = np.linalg.eigvalsh(C)
        assert np.all(lam <= 1 + 1e-12) and lam[0] < 0.999              # shrunk towards, not at, I


def _official_iternorm_backward(X, G, T, eps=1e-5):
    """The hand-written backward pass of the official code (iterative_normalization_py.backward, one group),
    ported to NumPy on its (d, m) layout: an independent derivation that takes P_k and Σ_N as symmetric."""
    x = X.T
    d, m = x.shape
    xc = x - x.mean(axis=1, keepdims=True)
    I = np.eye(d)
    Sigma = eps * I + xc @ xc.T / m
    rTr = 1 / np.trace(Sigma)
    sn = Sigma * rTr
    P = [I]
    for _ in range(T):
        P.append(1.5 * P[-1] - 0.5 * np.linalg.matrix_power(P[-1], 3) @ sn)
    wm = P[T] * np.sqrt(rTr)
    g_ = G.T
    g_wm = g_ @ xc.T
    g_P = g_wm * np.sqrt(rTr)
    g_sn = 0
    for k in range(T, 1, -1):
        Pk = P[k - 1].T
        P2 = Pk @ Pk
        g_sn = g_sn + P2 @ Pk @ g_P
        g_tmp = g_P @ sn.T
        g_P = 1.5 * g_P - 0.5 * g_tmp @ P2 - 0.5 * P2 @ g_tmp - 0.5 * (Pk @ g_tmp) @ Pk
    g_sn = g_sn + g_P
    g_tr = ((-sn.T @ g_sn + g_wm.T @ wm) * I).sum() * I
    g_sigma = (g_sn + g_sn.T + 2.0 * g_tr) * (-0.5 / m * rTr)
    return (wm @ (g_ - g_.mean(axis=1, keepdims=True)) + g_sigma @ xc).T


@pytest.mark.parametrize("T", [1, 3, 5])
def test_iternorm_gradient_matches_the_official_backward_pass(T, rng):
    X = with_spectrum(rng, 16, (3.0, 1.5, 0.6, 0.2), mean=1.0)
    G = rng.standard_normal(X.shape)
    ours = D.iternorm_whitening_vjp(X, G, iterations=T)
    np.testing.assert_allclose(ours, _official_iternorm_backward(X, G, T), rtol=1e-10,
                               atol=1e-12 * np.abs(ours).max())


@pytest.mark.parametrize("kind", ["zca", "iternorm"])
@pytest.mark.parametrize("kw", [{"groups": 2}, {"groups": 3, "eps": 0.3}, {"groups": 4, "iterations": 30}],
                         ids=["groups2", "groups3-eps", "groups4-T30"])
def test_grouped_gradient_finite_differences(kind, kw, rng):
    if kind == "zca":
        kw = {k: v for k, v in kw.items() if k != "iterations"}
    f, f_vjp = GROUPED[kind]
    X = rng.standard_normal((15, 7)) @ rng.standard_normal((7, 7)) + 2.0
    op = lambda A: ((f(A, **kw),), lambda cts: (f_vjp(A, cts[0], **kw),))     # noqa: E731
    rep = check_backward(op, [X], rtol=1e-8, n_directions=4, elementwise=True, rng=1)
    assert rep.max_rel_error <= 1e-8


@pytest.mark.parametrize("kind", ["zca", "iternorm"])
def test_grouped_float32_in_float32_out(kind, rng):
    f, f_vjp = GROUPED[kind]
    X = rng.standard_normal((20, 6)) @ rng.standard_normal((6, 6))
    G = rng.standard_normal(X.shape)
    X32 = X.astype(np.float32)
    Y32, g32 = f(X32, groups=4), f_vjp(X32, G.astype(np.float32), groups=4)
    assert Y32.dtype == g32.dtype == np.float32
    Y64, g64 = f(X32.astype(np.float64), groups=4), f_vjp(X32.astype(np.float64), G, groups=4)
    assert np.abs(Y32 - Y64).max() <= 1e-4 * np.abs(Y64).max()
    assert np.abs(g32 - g64).max() <= 1e-3 * np.abs(g64).max()


_BAD_GROUPS = [("groups", 0, ValueError), ("groups", -2, ValueError), ("groups", 2.0, TypeError),
               ("groups", True, TypeError), ("groups", "2", TypeError)]
_BAD_ITERATIONS = [("iterations", 0, ValueError), ("iterations", 10 ** 30, ValueError),
                   ("iterations", 2.5, TypeError)]


@pytest.mark.parametrize("who,name,value,exc", [("group_zca_whitening",) + c for c in _BAD_GROUPS]
                         + [("iternorm_whitening",) + c for c in _BAD_GROUPS + _BAD_ITERATIONS])
def test_grouped_bad_hyper_parameters(who, name, value, exc, rng):
    X = _sample(rng)
    with pytest.raises(exc, match=rf"^{who}: {name} must be"):
        _call(who, X, **{name: value})
    with pytest.raises(exc, match=rf"^{who}_vjp: {name} must be"):
        _call_vjp(who, X, **{name: value})


def test_group_zca_singular_group_is_named(rng):
    X = np.hstack([rng.standard_normal((12, 3)),                       # features 3..5: rank one, variance 1e12
                   1e6 * np.outer(rng.standard_normal(12), np.ones(3))])
    with pytest.raises(ValueError, match=r"^group_zca_whitening: the covariance .*numerically singular.*"
                                         r"\(in the group of features 3\.\.5\)$"):
        D.group_zca_whitening(X, groups=3)
    assert np.isfinite(D.iternorm_whitening(X, groups=3)).all()
