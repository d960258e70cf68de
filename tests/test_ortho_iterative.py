"""orthoref.ortho.iterative: Newton–Schulz (Muon / You / Polar Express), Björck, Parseval retraction and
spectral normalization. The registry (tests/test_registry.py) already runs finite differences and the
PyTorch twins on small samples; here: Muon's own code, convergence to the polar factor, the scalar
polynomial, worst-case errors, tangent-direction gradient checks, dtypes and bad input."""
import numpy as np
import pytest
import scipy.linalg

from orthoref.oracle import check_backward
from orthoref.oracle.torch_twins import torch_newton_schulz
from orthoref.oracle.registry import from_map
from orthoref.ortho.iterative import (NS_COEFFICIENTS, bjorck, bjorck_vjp, newton_schulz, newton_schulz_vjp,
                                      ns_polynomial, ns_worst_error, parseval_retraction,
                                      parseval_retraction_vjp, spectral_normalize, spectral_normalize_vjp)


def _orth(rng, n):
    Q, R = np.linalg.qr(rng.standard_normal((n, n)))
    return Q * np.sign(np.diag(R))


def _with_singular_values(rng, m, n, s):
    k = min(m, n)
    U, V = _orth(rng, m)[:, :k], _orth(rng, n)[:, :k]
    return (U * s) @ V.T, U, V


def _rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


# ---------------------------------------------------------------------------------------------------------
# Muon: Keller Jordan's zeropower_via_newtonschulz5, in float64 instead of bfloat16.

def _zeropower_via_newtonschulz5(G, steps=5, eps=1e-7):
    import torch
    assert len(G.shape) == 2
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G.double()
    X = X / (X.norm() + eps)
    if G.size(0) > G.size(1):
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * A @ A
        X = a * X + B @ X
    if G.size(0) > G.size(1):
        X = X.T
    return X


@pytest.mark.torch
@pytest.mark.parametrize("shape", [(6, 10), (10, 6), (8, 8)])
def test_reproduces_muon_zeropower_value_and_autograd(shape, rng):
    torch = pytest.importorskip("torch")
    G = rng.standard_normal(shape)
    gbar = rng.standard_normal(shape)
    t = torch.from_numpy(G.copy()).requires_grad_(True)
    ref = _zeropower_via_newtonschulz5(t)
    ref_grad, = torch.autograd.grad(ref, t, torch.from_numpy(gbar))
    ours = newton_schulz(G)                                   # defaults: 5 steps, "jordan", eps 1e-7
    assert _rel(ours, ref.detach().numpy()) <= 1e-12
    assert _rel(newton_schulz_vjp(G, gbar), ref_grad.numpy()) <= 1e-10


@pytest.mark.torch
def test_batched_matches_per_matrix_and_torch(rng):
    torch = pytest.importorskip("torch")
    A = rng.standard_normal((3, 2, 5, 4))
    gbar = rng.standard_normal(A.shape)
    for kw in ({"coefficients": "polar_express"}, {"coefficients": "you", "steps": 6}):
        Y, g = newton_schulz(A, **kw), newton_schulz_vjp(A, gbar, **kw)
        for idx in np.ndindex(3, 2):
            assert _rel(Y[idx], newton_schulz(A[idx], **kw)) <= 1e-13
            assert _rel(g[idx], newton_schulz_vjp(A[idx], gbar[idx], **kw)) <= 1e-12
        t = torch.from_numpy(A.copy()).requires_grad_(True)
        ref, = torch_newton_schulz(t, **kw)
        ref_grad, = torch.autograd.grad(ref, t, torch.from_numpy(gbar))
        assert _rel(Y, ref.detach().numpy()) <= 1e-12
        assert _rel(g, ref_grad.numpy()) <= 1e-10


def test_polar_express_table_and_normalization():
    pe = NS_COEFFICIENTS["polar_express"]
    assert len(pe) == 8 and pe[-1] == (1.875, -1.25, 0.375)
    assert pe[0] == pytest.approx((8.28721201814563 / 1.01, -23.595886519098837 / 1.01 ** 3,
                                   17.300387312530933 / 1.01 ** 5), rel=1e-15)
    assert NS_COEFFICIENTS["you"][0] == (3955 / 1024, -8306 / 1024, 5008 / 1024)
    # normalization ‖X‖_F · 1.01 + 1e-7: one step with the identity polynomial (1, 0, 0) is X itself.
    A = np.diag([3.0, 4.0])
    X = newton_schulz(A, steps=1, coefficients=[(1.0, 0.0, 0.0)], eps=0.0)
    np.testing.assert_allclose(X, A / 5.0, rtol=1e-15)


# ---------------------------------------------------------------------------------------------------------
# Convergence to the polar factor; the scalar polynomial.

@pytest.mark.parametrize("shape", [(5, 5), (4, 7), (7, 4), (2, 3, 5)])
def test_cubic_and_bjorck_converge_to_polar(shape, rng):
    m, n = shape[-2:]
    batch = shape[:-2]
    A = np.empty(shape)
    for idx in np.ndindex(*batch):
        A[idx], _, _ = _with_singular_values(rng, m, n, np.linspace(1.0, 8.0, min(m, n)))
    P = np.empty(shape)
    for idx in np.ndindex(*batch):
        P[idx] = scipy.linalg.polar(A[idx])[0]
    assert np.abs(newton_schulz(A, steps=40, coefficients="cubic") - P).max() <= 1e-12
    assert np.abs(bjorck(A, steps=40) - P).max() <= 1e-12
    assert np.abs(bjorck(A, steps=80, beta=0.3) - P).max() <= 1e-12
    # the Polar Express reaches float64 accuracy from [1e-3, 1] in about eight steps
    assert np.abs(newton_schulz(A, steps=10, coefficients="polar_express") - P).max() <= 1e-12


@pytest.mark.parametrize("name", ["cubic", "jordan", "you", "polar_express", "user"])
def test_ns_polynomial_is_the_action_on_singular_values(name, rng):
    coeffs = [(2.0, -1.5, 0.5), (1.7, -0.9, 0.2), (1.5, -0.5, 0.0)] if name == "user" else name
    kappa = 1.01 if name == "polar_express" else 1.0
    for steps in (1, 3, 5, 10):
        s = np.geomspace(0.02, 1.0, 4) * 7.0
        A, U, V = _with_singular_values(rng, 6, 4, s)
        p = ns_polynomial(coeffs, steps=steps)
        expected = (U * p(s / (kappa * np.linalg.norm(s) + 1e-7))) @ V.T
        assert np.abs(newton_schulz(A, steps=steps, coefficients=coeffs) - expected).max() <= 1e-11
        D = np.diag(s)                                           # exactly the σ map on a diagonal matrix
        np.testing.assert_allclose(np.diag(newton_schulz(D, steps=steps, coefficients=coeffs)),
                                   p(s / (kappa * np.linalg.norm(s) + 1e-7)), rtol=1e-12, atol=1e-14)


def test_steps_schedule():
    s = np.array([0.9, 0.3, 0.01])
    D = np.diag(s)
    x = s / (1.01 * np.linalg.norm(s) + 1e-7)
    # steps > rows: the last row repeats; steps=None: the table's length (5 for one-row sets)
    pe = NS_COEFFICIENTS["polar_express"]
    expected = ns_polynomial(pe + [pe[-1]] * 3)(x)
    np.testing.assert_allclose(np.diag(newton_schulz(D, steps=11, coefficients="polar_express")), expected,
                               rtol=1e-13)
    np.testing.assert_array_equal(newton_schulz(D, steps=None, coefficients="you"),
                                  newton_schulz(D, steps=6, coefficients="you"))
    np.testing.assert_array_equal(newton_schulz(D, steps=None), newton_schulz(D, steps=5))
    np.testing.assert_array_equal(ns_polynomial("jordan")(s), ns_polynomial("jordan", 5)(s))
    # a single (a, b, c) triple is a one-row table
    np.testing.assert_array_equal(newton_schulz(D, coefficients=(3.4445, -4.7750, 2.0315)), newton_schulz(D))


def test_ns_worst_error_values():
    jordan5 = ns_worst_error("jordan")                          # 5 steps over [1e-3, 1]
    assert 0.5 < jordan5 < 0.55                                  # 1e-3 · 3.4445⁵ ≈ 0.49 is still far from 1
    band = ns_worst_error("jordan", lo=0.05, steps=10)
    assert 0.30 < band < 0.33                                    # the Muon band, singular values in ~[0.68, 1.14]
    x = np.geomspace(0.05, 1.0, 2001)
    y = ns_polynomial("jordan", 10)(x)
    assert 0.67 < y.min() < 0.7 and 1.1 < y.max() < 1.15
    assert ns_worst_error("jordan", steps=6) == pytest.approx(band, rel=1e-6)
    you = ns_worst_error("you")                                  # its six steps
    pe5 = ns_worst_error("polar_express", steps=5)
    pe8 = ns_worst_error("polar_express")                        # its eight steps
    assert you < 0.15 and pe5 < 0.2 and pe8 < 1e-10
    assert pe5 < jordan5 and ns_worst_error("you", steps=5) < jordan5
    assert ns_worst_error("cubic") > 0.9                         # the cubic is slow from 1e-3
    # the refined maximum bounds the error everywhere on [lo, 1]
    r = np.random.default_rng(0).uniform(1e-3, 1.0, 100000)
    for name in ("jordan", "you", "polar_express"):
        assert np.abs(ns_polynomial(name)(r) - 1).max() <= ns_worst_error(name) * (1 + 1e-12)


# ---------------------------------------------------------------------------------------------------------
# Gradients: random directions (beyond the registry samples) and tangent directions.

def _fd_directional(f, A, D, gbar, h=1e-3):
    phi = [float(np.vdot(gbar, f(A + t * h * D))) for t in (2, 1, -1, -2)]
    return (-phi[0] + 8 * phi[1] - 8 * phi[2] + phi[3]) / (12 * h)


CASES = [
    ("ns jordan 5", newton_schulz, newton_schulz_vjp, {}),
    ("ns polar_express 5", newton_schulz, newton_schulz_vjp, {"coefficients": "polar_express"}),
    ("ns you 6", newton_schulz, newton_schulz_vjp, {"coefficients": "you", "steps": None}),
    ("bjorck 15", bjorck, bjorck_vjp, {}),
    ("parseval", parseval_retraction, parseval_retraction_vjp, {"beta": 0.05}),
]


@pytest.mark.parametrize("name,f,f_vjp,kw", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("shape", [(4, 6), (6, 4), (2, 3, 4)])
def test_gradient_random_directions(name, f, f_vjp, kw, shape, rng):
    # NS and Björck are scale invariant (up to eps): a large input makes the fixed step h = 1e-3 small
    # relative to it, so the truncation error of the stencil through five steep quintics stays < 1e-10.
    A = 50.0 * rng.standard_normal(shape) if name != "parseval" else 0.5 * rng.standard_normal(shape)
    check_backward(lambda X: from_map(f, f_vjp)(X, **kw), [A], rtol=1e-8, n_directions=3, rng=7)


@pytest.mark.parametrize("name,f,f_vjp,kw", CASES, ids=[c[0] for c in CASES])
def test_gradient_tangent_directions(name, f, f_vjp, kw, rng):
    """At a point Q of the Stiefel manifold (orthonormal rows), along tangent directions Q Ω (Ω skew) and
    the normal direction S Q (S symmetric): where these maps are flat or steep, the gradient must agree."""
    Q = _orth(rng, 5)[:3]                                       # 3 x 5, Q Qᵀ = I
    Q = Q + 0.05 * rng.standard_normal(Q.shape)                  # near, not on, the manifold
    if name != "parseval":
        Q *= 50.0                                                # scale invariant: see the test above
    gbar = rng.standard_normal(Q.shape)
    g = f_vjp(Q, gbar, **kw)
    for _ in range(3):
        W = rng.standard_normal((5, 5))
        Omega = W - W.T
        S = rng.standard_normal((3, 3))
        for D in (Q @ Omega, (S + S.T) @ Q):
            D = D / np.abs(D).max()                              # components of size <= 1, as check_backward
            numeric = _fd_directional(lambda X: f(X, **kw), Q, D, gbar)
            analytic = float(np.vdot(g, D))
            assert abs(numeric - analytic) <= 1e-8 * (np.abs(g * D).sum() + 1e-12), (numeric, analytic)


def test_spectral_normalize_gradient_is_pytorch_detached(rng):
    W = rng.standard_normal((4, 3, 2))
    u = rng.standard_normal(4)
    gbar = rng.standard_normal(W.shape)
    Y, u_new = spectral_normalize(W, u=u, n_iter=2)
    M = W.reshape(4, -1)
    uu = u / np.linalg.norm(u)                                   # Miyato's loop, written out
    for _ in range(2):
        v = M.T @ uu
        v /= np.linalg.norm(v)
        uu = M @ v
        uu /= np.linalg.norm(uu)
    np.testing.assert_allclose(u_new, uu, rtol=1e-14)
    sigma = uu @ M @ v
    np.testing.assert_allclose(Y, W / sigma, rtol=1e-14)
    expected = gbar / sigma - (np.vdot(gbar, W) / sigma ** 2) * np.outer(uu, v).reshape(W.shape)
    np.testing.assert_allclose(spectral_normalize_vjp(W, gbar, u=u, n_iter=2), expected, rtol=1e-12)


@pytest.mark.torch
def test_spectral_normalize_matches_torch_parametrization(rng):
    """``torch.nn.utils.parametrizations.spectral_norm`` in eval mode with its buffers set to our ``u, v``:
    the same W / σ̂ and the same gradient (u, v are buffers: constants to autograd)."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.parametrizations import spectral_norm
    W = rng.standard_normal((4, 3, 2, 2))
    u0 = rng.standard_normal(4)
    gbar = rng.standard_normal(W.shape)
    Y, u1 = spectral_normalize(W, u=u0, n_iter=1)
    M = W.reshape(4, -1)
    v1 = M.T @ (u0 / np.linalg.norm(u0))
    v1 /= np.linalg.norm(v1)
    conv = torch.nn.Conv2d(3, 4, 2, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(W))
    spectral_norm(conv)
    pm = conv.parametrizations.weight[0]
    with torch.no_grad():
        pm._u.copy_(torch.from_numpy(u1))
        pm._v.copy_(torch.from_numpy(v1))
    conv.eval()
    Yt = conv.weight
    (gt,) = torch.autograd.grad(Yt, conv.parametrizations.weight.original, torch.from_numpy(gbar))
    assert _rel(Y, Yt.detach().numpy()) <= 1e-13
    assert _rel(spectral_normalize_vjp(W, gbar, u=u0, n_iter=1), gt.numpy()) <= 1e-12


def test_spectral_normalize_converges_and_carries_u(rng):
    W, _, _ = _with_singular_values(rng, 5, 8, np.array([3.0, 1.0, 0.5, 0.2, 0.1]))
    Y, u = spectral_normalize(W, rng=0, n_iter=1)
    for _ in range(40):
        Y, u = spectral_normalize(W, u=u)                        # the persistent buffer, one step per call
    np.testing.assert_allclose(np.linalg.norm(Y, 2), 1.0, rtol=1e-12)
    Y1, u1 = spectral_normalize(W, rng=3)
    Y2, u2 = spectral_normalize(W, rng=3)
    np.testing.assert_array_equal(Y1, Y2)
    u3 = np.random.default_rng(3).standard_normal(5)           # u=None draws N(0, 1) from host_rng(rng)
    np.testing.assert_array_equal(Y1, spectral_normalize(W, u=u3)[0])
    np.testing.assert_array_equal(spectral_normalize_vjp(W, W, rng=3), spectral_normalize_vjp(W, W, u=u3))


def test_parseval_fixed_point_and_contraction(rng):
    Q = _orth(rng, 6)[:4]
    np.testing.assert_allclose(parseval_retraction(Q, beta=0.3), Q, atol=1e-15)
    A, _, _ = _with_singular_values(rng, 4, 6, np.array([1.3, 1.1, 0.9, 0.7]))
    s = np.linalg.svd(parseval_retraction(A, beta=0.1), compute_uv=False)
    assert np.all(np.abs(s - 1) < np.abs(np.array([1.3, 1.1, 0.9, 0.7]) - 1))


# ---------------------------------------------------------------------------------------------------------
# dtypes and bad input.

def test_float32_stays_float32(rng):
    A64 = rng.standard_normal((2, 6, 9))
    A = A64.astype(np.float32)
    g = rng.standard_normal(A.shape).astype(np.float32)
    for f, f_vjp, kw in [(newton_schulz, newton_schulz_vjp, {}),
                         (newton_schulz, newton_schulz_vjp, {"coefficients": "polar_express"}),
                         (bjorck, bjorck_vjp, {}), (parseval_retraction, parseval_retraction_vjp, {})]:
        Y, gA = f(A, **kw), f_vjp(A, g, **kw)
        assert Y.dtype == np.float32 and gA.dtype == np.float32 and Y.shape == A.shape
        assert _rel(Y, f(A.astype(np.float64), **kw)) < 1e-4
        assert _rel(gA, f_vjp(A.astype(np.float64), g.astype(np.float64), **kw)) < 1e-3
    W = A[0]
    Y, u = spectral_normalize(W, rng=0)
    assert Y.dtype == np.float32 and u.dtype == np.float32
    assert spectral_normalize_vjp(W, W, rng=0).dtype == np.float32


def test_tall_output_is_contiguous(rng):
    assert newton_schulz(rng.standard_normal((7, 3))).flags.c_contiguous


@pytest.mark.parametrize("call,exc,match", [
    (lambda: newton_schulz(np.ones(3)), ValueError, "A must have at least 2"),
    (lambda: newton_schulz(np.ones((2, 2), dtype=np.int64)), TypeError, "A must be a float32 or float64 array"),
    (lambda: newton_schulz(np.array([[1.0, np.nan]])), ValueError, "A must be finite"),
    (lambda: newton_schulz(np.zeros((0, 3))), ValueError, "A must not be empty"),
    (lambda: newton_schulz([[1.0]]), TypeError, "A must be a float32"),
    (lambda: newton_schulz(np.eye(2), coefficients="muon"), ValueError, "coefficients must be one of"),
    (lambda: newton_schulz(np.eye(2), coefficients=[(1.0, 2.0)]), ValueError, "coefficients must be"),
    (lambda: newton_schulz(np.eye(2), coefficients=[(1.0, 2.0, 3.0), (1.0,)]), ValueError, "coefficients"),
    (lambda: newton_schulz(np.eye(2), coefficients=[]), ValueError, "coefficients must be"),
    (lambda: newton_schulz(np.eye(2), coefficients=[(1.0, np.inf, 0.0)]), ValueError, "coefficients must be fin"),
    (lambda: newton_schulz(np.eye(2), steps=0), ValueError, "steps must be an int >= 1"),
    (lambda: newton_schulz(np.eye(2), steps=2.5), TypeError, "steps must be an int"),
    (lambda: newton_schulz(np.eye(2), eps=-1.0), ValueError, "eps must be"),
    (lambda: newton_schulz_vjp(np.eye(2), np.ones((3, 3))), ValueError, "grad_out must have shape"),
    (lambda: ns_polynomial("nope"), ValueError, "coefficients"),
    (lambda: ns_worst_error("jordan", lo=1.5), ValueError, "lo must lie in"),
    (lambda: ns_worst_error("jordan", lo=0.0), ValueError, "lo must be"),
    (lambda: bjorck(np.eye(2), beta=0.0), ValueError, "beta must be"),
    (lambda: bjorck(np.eye(2), steps=-1), ValueError, "steps"),
    (lambda: parseval_retraction(np.eye(2), beta=-0.1), ValueError, "beta must be"),
    (lambda: parseval_retraction(np.ones(2)), ValueError, "W must have at least 2"),
    (lambda: spectral_normalize(np.eye(3), u=np.ones(2)), ValueError, r"u must be a real vector of shape \(3,\)"),
    (lambda: spectral_normalize(np.eye(3), n_iter=0), ValueError, "n_iter"),
    (lambda: spectral_normalize_vjp(np.eye(3), np.eye(3)), ValueError, "pass the u"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_zero_matrix_gives_zeros():
    Z = np.zeros((3, 4))
    assert not newton_schulz(Z).any() and not bjorck(Z).any()
    assert np.isfinite(newton_schulz_vjp(Z, np.ones((3, 4)))).all()
