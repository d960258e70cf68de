"""Cayley map, matrix exponential and Stiefel geometry (orthoref.ortho.stiefel).

The registry entries ("cayley", "expm_skew", "project_tangent", "project_tangent_wg", "retract_qr",
"retract_polar", "retract_cayley", "retract_exp", "cayley_iterative") get their general-direction finite
differences and PyTorch conformance in tests/test_registry.py; here: orthogonality, tangent directions, the
geometric properties, batching, float32 and errors."""
import numpy as np
import pytest
from scipy.linalg import expm

from orthoref.oracle import check_backward
from orthoref.ortho.metrics import orthogonality_error_fro
from orthoref.oracle.torch_twins import torch_cayley_iterative, torch_retract_exp
from orthoref.oracle.samples.stiefel import stiefel_point
from orthoref.ortho import stiefel as st

METHODS = st.RETRACTIONS
SHAPES = [(6, 3), (5, 5), (7, 4), (3, 6, 2)]          # tall, square, n < 2p, batched


def _stiefel(rng, shape, dtype=np.float64):
    return stiefel_point(rng, shape).astype(dtype)


def _skew(rng, shape, norm=1.0):
    A = rng.standard_normal(shape)
    A = A - np.swapaxes(A, -1, -2)
    return A * (norm / np.linalg.norm(A, 2, axis=(-2, -1), keepdims=True))


def _tangent(rng, W, norm=1.0):
    Z = st.project_tangent(W, rng.standard_normal(W.shape).astype(W.dtype))
    return Z * (norm / np.linalg.norm(Z, axis=(-2, -1), keepdims=True))


def _orth_err(Q):
    return orthogonality_error_fro(Q)


def _directional(f, x, d, eps=1e-3):
    """Fourth-order central difference of f along d."""
    return (-f(x + 2 * eps * d) + 8 * f(x + eps * d) - 8 * f(x - eps * d) + f(x - 2 * eps * d)) / (12 * eps)


# ---------------------------------------------------------------------------------------------------------
# Cayley map and exponential.

@pytest.mark.parametrize("fn", [st.cayley, st.expm_skew])
@pytest.mark.parametrize("shape", [(1, 1), (4, 4), (9, 9), (3, 5, 5)])
def test_skew_maps_are_orthogonal(fn, shape, rng):
    A = _skew(rng, shape, 3.0) if shape[-1] > 1 else np.zeros(shape)
    Q = fn(A, check_skew=True)
    assert Q.shape == shape and Q.dtype == np.float64
    assert _orth_err(Q) < 1e-12
    assert np.all(np.linalg.det(Q) > 0)                 # both maps land in SO(n)


def test_cayley_formula_and_inverse(rng):
    A = _skew(rng, (5, 5), 2.0)
    I = np.eye(5)
    Q = st.cayley(A)
    np.testing.assert_allclose(Q, (I + A / 2) @ np.linalg.inv(I - A / 2), atol=1e-14)   # factors commute
    np.testing.assert_allclose(2 * (Q - I) @ np.linalg.inv(Q + I), A, atol=1e-13)


def test_cayley_vjp_equals_the_derivation(rng):
    A = rng.standard_normal((4, 4)) * 0.3
    G = rng.standard_normal((4, 4))
    Minv_T = np.linalg.inv(np.eye(4) - A / 2).T
    Q = st.cayley(A)
    np.testing.assert_allclose(st.cayley_vjp(A, G), 0.5 * Minv_T @ G @ (Q + np.eye(4)).T, atol=1e-14)


@pytest.mark.parametrize("fn,vjp", [(st.cayley, st.cayley_vjp), (st.expm_skew, st.expm_skew_vjp)])
def test_batched_equals_loop(fn, vjp, rng):
    A = rng.standard_normal((2, 3, 4, 4)) * 0.4
    G = rng.standard_normal(A.shape)
    Q, g = fn(A), vjp(A, G)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(Q[i, j], fn(A[i, j]), atol=1e-15)
            np.testing.assert_allclose(g[i, j], vjp(A[i, j], G[i, j]), atol=1e-15)


def test_expm_skew_matches_scipy(rng):
    A = _skew(rng, (6, 6), 4.0)
    np.testing.assert_allclose(st.expm_skew(A), expm(A), atol=1e-14)


@pytest.mark.parametrize("fn,vjp", [(st.cayley, st.cayley_vjp), (st.expm_skew, st.expm_skew_vjp)])
@pytest.mark.parametrize("shape", [(5, 5), (2, 4, 4)])
def test_vjp_along_skew_directions(fn, vjp, shape, rng):
    """Finite differences along tangent (skew) directions at a skew point, where the map is orthogonal."""
    A = _skew(rng, shape, 1.5)
    G = rng.standard_normal(shape)
    gA = vjp(A, G)
    for _ in range(3):
        D = _skew(rng, shape)
        numeric = _directional(lambda X: float((G * fn(X)).sum()), A, D)
        analytic = float((gA * D).sum())
        assert abs(numeric - analytic) <= 1e-9 * np.abs(gA * D).sum()
    # the skew parametrization A = S - Sᵀ through the registry's checker: gradient (Ā - Āᵀ)
    check_backward(lambda S: ((fn(S - np.swapaxes(S, -1, -2)),),
                              lambda c: ((lambda g: g - np.swapaxes(g, -1, -2))(vjp(S - np.swapaxes(S, -1, -2),
                                                                                  c[0])),)),
                   [0.5 * A], rtol=1e-8, rng=4)


@pytest.mark.torch
@pytest.mark.parametrize("name", ["cayley", "expm"])
def test_skew_maps_vs_torch(name, rng):
    torch = pytest.importorskip("torch")
    fn, vjp = (st.cayley, st.cayley_vjp) if name == "cayley" else (st.expm_skew, st.expm_skew_vjp)
    A = _skew(rng, (3, 6, 6), 2.0)
    G = rng.standard_normal(A.shape)
    tA = torch.from_numpy(A.copy()).requires_grad_(True)
    if name == "cayley":
        I = torch.eye(6, dtype=torch.float64)
        tQ = torch.linalg.solve(I - 0.5 * tA, (I + 0.5 * tA).expand_as(tA))
    else:
        tQ = torch.linalg.matrix_exp(tA)
    (tg,) = torch.autograd.grad(tQ, tA, torch.from_numpy(G))
    Q = fn(A)
    assert np.abs(Q - tQ.detach().numpy()).max() <= 1e-12
    assert np.abs(vjp(A, G) - tg.numpy()).max() <= 1e-11 * np.abs(tg.numpy()).max()


@pytest.mark.torch
def test_matches_torch_parametrization_cayley(rng):
    """Same matrix as torch.nn.utils.parametrizations.orthogonal(orthogonal_map="cayley")."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.parametrizations import orthogonal
    lin = torch.nn.Linear(5, 5, bias=False).double()
    X = torch.from_numpy(rng.standard_normal((5, 5)))
    orthogonal(lin, orthogonal_map="cayley", use_trivialization=False)
    with torch.no_grad():
        lin.parametrizations.weight.original.copy_(X)
        W = lin.weight.numpy().copy()
    L = np.tril(X.numpy())
    A = L - L.T
    Q = st.cayley(A)
    assert np.allclose(W, Q, atol=1e-13) or np.allclose(W, Q.T, atol=1e-13)


# ---------------------------------------------------------------------------------------------------------
# Tangent projection.

@pytest.mark.parametrize("metric", st.METRICS)
@pytest.mark.parametrize("shape", SHAPES)
def test_projection_is_tangent_and_linear(metric, shape, rng):
    W = _stiefel(rng, shape)
    G, H = rng.standard_normal(shape), rng.standard_normal(shape)
    P = st.project_tangent(W, G, metric)
    S = np.swapaxes(W, -1, -2) @ P
    assert np.abs(S + np.swapaxes(S, -1, -2)).max() < 1e-13
    np.testing.assert_allclose(st.project_tangent(W, 2 * G - H, metric), 2 * P - st.project_tangent(W, H, metric),
                               atol=1e-13)
    # self-adjoint, so its vjp with respect to G is the same projection
    assert abs((H * P).sum() - (st.project_tangent(W, H, metric) * G).sum()) < 1e-12
    np.testing.assert_allclose(st.project_tangent_vjp(W, G, H, metric), st.project_tangent(W, H, metric),
                               atol=1e-15)


@pytest.mark.parametrize("shape", SHAPES)
def test_euclidean_projection_is_orthogonal_projection(shape, rng):
    W = _stiefel(rng, shape)
    G = rng.standard_normal(shape)
    P = st.project_tangent(W, G)
    np.testing.assert_allclose(st.project_tangent(W, P), P, atol=1e-14)          # idempotent
    # residual G - P is normal: orthogonal to every tangent vector (W·sym)
    xi = _tangent(rng, W)
    assert abs(((G - P) * xi).sum()) < 1e-13
    # a tangent vector is left unchanged
    np.testing.assert_allclose(st.project_tangent(W, xi), xi, atol=1e-14)


@pytest.mark.parametrize("shape", [(6, 3), (5, 5)])
def test_canonical_is_the_riemannian_gradient(shape, rng):
    """g_c(P, ξ) = tr Pᵀ(I - WWᵀ/2)ξ equals <G, ξ> for every tangent ξ."""
    W = _stiefel(rng, shape)
    G = rng.standard_normal(shape)
    P = st.project_tangent(W, G, "canonical")
    for _ in range(3):
        xi = _tangent(rng, W)
        gc = (P * (xi - 0.5 * W @ (W.T @ xi))).sum()
        assert abs(gc - (G * xi).sum()) < 1e-13


def test_project_tangent_vjp_wrt_W(rng):
    W = _stiefel(rng, (5, 3))
    G = rng.standard_normal((5, 3))
    for metric in st.METRICS:
        check_backward(lambda W_: ((st.project_tangent(W_, G, metric, check=False),),
                                   lambda c: (st.project_tangent_vjp(W_, G, c[0], metric, wrt="W", check=False),)),
                       [W], rtol=1e-8, rng=5)


# ---------------------------------------------------------------------------------------------------------
# Retractions.

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", SHAPES)
def test_retraction_is_orthonormal_and_centered(method, shape, rng):
    W = _stiefel(rng, shape)
    Z = _tangent(rng, W, 2.0)
    Y = st.retract(W, Z, method)
    assert Y.shape == shape and Y.dtype == np.float64
    assert _orth_err(Y) < 1e-12
    np.testing.assert_allclose(st.retract(W, np.zeros_like(W), method), W, atol=1e-14)
    # a non-tangent step still lands on the manifold
    assert _orth_err(st.retract(W, rng.standard_normal(shape), method)) < 1e-12


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", SHAPES)
def test_retraction_first_order(method, shape, rng):
    """‖R(W, tZ) - (W + tZ)‖ = O(t²): the ratio of the errors at t = 1e-3 and 1e-4 is about 100."""
    W = _stiefel(rng, shape)
    Z = _tangent(rng, W)
    e3, e4 = (np.linalg.norm(st.retract(W, t * Z, method) - (W + t * Z)) for t in (1e-3, 1e-4))
    assert e3 < 1e-5
    assert 80 < e3 / e4 < 120, (e3, e4)


def test_cayley_retraction_closed_forms(rng):
    W = _stiefel(rng, (7, 3))
    Z = _tangent(rng, W, 1.5)
    P = np.eye(7) - 0.5 * W @ W.T
    A = P @ Z @ W.T - W @ Z.T @ P
    np.testing.assert_allclose(A @ W, Z, atol=1e-14)                              # A W = Z for tangent Z
    np.testing.assert_allclose(st.retract(W, Z, "cayley"), st.cayley(A) @ W, atol=1e-13)   # Woodbury = n x n
    # the orthogonal group: W cayley(WᵀZ); and exp: W expm(WᵀZ)
    Wq = _stiefel(rng, (5, 5))
    Zq = _tangent(rng, Wq)
    np.testing.assert_allclose(st.retract(Wq, Zq, "cayley"), Wq @ st.cayley(Wq.T @ Zq), atol=1e-13)
    np.testing.assert_allclose(st.retract(Wq, Zq, "exp"), Wq @ expm(Wq.T @ Zq), atol=1e-13)


def test_polar_closed_form(rng):
    W = _stiefel(rng, (6, 3))
    Z = _tangent(rng, W)
    lam, V = np.linalg.eigh(np.eye(3) + Z.T @ Z)
    np.testing.assert_allclose(st.retract(W, Z, "polar"), (W + Z) @ (V / np.sqrt(lam)) @ V.T, atol=1e-13)


def test_qr_retraction_has_positive_diagonal(rng):
    W = _stiefel(rng, (6, 3))
    Z = _tangent(rng, W)
    Y = st.retract(W, Z, "qr")
    R = Y.T @ (W + Z)
    assert np.all(np.diag(R) > 0)
    np.testing.assert_allclose(np.tril(R, -1), 0, atol=1e-13)


@pytest.mark.parametrize("shape", [(7, 3), (6, 4)])
def test_exp_is_a_geodesic(shape, rng):
    """Y(1) = R(Y(½), ½ Y'(½)) with Y'(½) = [W, Q] expm(X/2) X [I; 0] -- the curve restarts from its midpoint."""
    W = _stiefel(rng, shape)
    Z = _tangent(rng, W, 1.2)
    n, p = shape
    A = W.T @ Z
    Q, R = np.linalg.qr(Z - W @ A)
    X = np.block([[A, -R.T], [R, np.zeros((p, p))]])
    E = expm(0.5 * X)
    Y_half = np.hstack([W, Q]) @ E[:, :p]
    V_half = np.hstack([W, Q]) @ (E @ X)[:, :p]
    np.testing.assert_allclose(st.retract(W, 0.5 * Z, "exp"), Y_half, atol=1e-13)
    np.testing.assert_allclose(st.retract(Y_half, 0.5 * V_half, "exp"), st.retract(W, Z, "exp"), atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(6, 3), (5, 5), (7, 4)])
def test_retract_vjp_along_tangent_directions(method, shape, rng):
    """The gradient with respect to Z restricted to tangent directions (W held on the manifold). For "exp"
    the shapes cover the QR path (6x3), n == p (5x5) and the rank-deficient n x n path (7x4, n < 2p)."""
    W = _stiefel(rng, shape)
    Z = _tangent(rng, W, 0.5)
    G = rng.standard_normal(W.shape)
    _, gZ = st.retract_vjp(W, Z, G, method)
    for _ in range(3):
        D = _tangent(rng, W)
        numeric = _directional(lambda X: float((G * st.retract(W, X, method)).sum()), Z, D)
        assert abs(numeric - (gZ * D).sum()) <= 1e-9 * np.abs(gZ * D).sum()


def _on_manifold_checks(W, Z, G, gW, gZ, rng, method="exp", tol=1e-9):
    """Z̄ along general directions (W fixed on the manifold) and W̄ along curves W(t) = qr-retract(W, tD)
    on the manifold (W'(0) = D tangent, Z held fixed)."""
    f = lambda W_, Z_: float((G * st.retract(W_, Z_, method, check=False)).sum())
    for _ in range(2):
        D = rng.standard_normal(W.shape)
        numeric = _directional(lambda X: f(W, X), Z, D)
        assert abs(numeric - (gZ * D).sum()) <= tol * np.abs(gZ * D).sum()
        T = _tangent(rng, W)
        numeric = _directional(lambda t: f(st.retract(W, t * T, "qr"), Z), 0.0, 1.0)
        assert abs(numeric - (gW * T).sum()) <= tol * np.abs(gW * T).sum()


@pytest.mark.parametrize("shape", [(7, 4), (5, 3), (2, 5, 3)])
def test_retract_exp_vjp_rank_deficient_on_manifold(shape, rng):
    """p < n < 2p: (I - WWᵀ)Z has rank n - p < p and the QR is not differentiable; the backward goes
    through the equal n x n form expm(W A Wᵀ + X Wᵀ - W Xᵀ) W. Exact for Z̄ (every direction) and for W̄
    along the manifold."""
    W = _stiefel(rng, shape)
    G = rng.standard_normal(shape)
    for Z in (_tangent(rng, W, 0.7), 0.3 * rng.standard_normal(shape)):    # tangent and non-tangent steps
        gW, gZ = st.retract_vjp(W, Z, G, "exp")
        assert np.all(np.isfinite(gW)) and np.all(np.isfinite(gZ))
        _on_manifold_checks(W, Z, G, gW, gZ, rng)


@pytest.mark.parametrize("shape", [(8, 3), (6, 3)])
def test_retract_exp_vjp_qr_path_equals_dense_form(shape, rng):
    """Where both apply (n >= 2p, W on the manifold) the QR backward and the n x n form agree on Z̄ and on
    the tangential part of W̄."""
    W = _stiefel(rng, shape)
    Z = _tangent(rng, W, 0.9)
    G = rng.standard_normal(shape)
    gW, gZ = st.retract_vjp(W, Z, G, "exp")
    S = W.T @ Z
    A = 0.5 * (S - S.T)
    dW, dZ = st._exp_retract_vjp_dense(W, Z, S, A, Z - W @ S, G)
    np.testing.assert_allclose(gZ, dZ, atol=1e-12)
    np.testing.assert_allclose(st.project_tangent(W, gW), st.project_tangent(W, dW), atol=1e-12)
    _on_manifold_checks(W, Z, G, gW, gZ, rng)


@pytest.mark.parametrize("shape", [(6, 2), (5, 3), (4, 4)])
def test_retract_exp_vjp_at_zero_step(shape, rng):
    """Z = 0 (rank-zero normal part): dY/dZ at 0 is D ↦ W skew(WᵀD) + (I - WWᵀ)D, W̄ = Ȳ along the manifold."""
    W = _stiefel(rng, shape)
    G = rng.standard_normal(shape)
    gW, gZ = st.retract_vjp(W, np.zeros_like(W), G, "exp")
    S = W.T @ G
    np.testing.assert_allclose(gZ, W @ (0.5 * (S - S.T)) + G - W @ S, atol=1e-13)
    np.testing.assert_allclose(st.project_tangent(W, gW), st.project_tangent(W, G), atol=1e-13)


@pytest.mark.parametrize("shape", [(6, 3), (4, 4), (2, 5, 2), (4, 1)])
def test_retract_exp_vjp_elementwise(shape, rng):
    """Every partial derivative (W off the manifold too: the forward's exact formula is differentiated)."""
    W = _stiefel(rng, shape)
    Z = _tangent(rng, W, 0.8) + 0.1 * rng.standard_normal(shape)            # not exactly tangent
    check_backward(lambda W_, Z_: ((st.retract(W_, Z_, "exp", check=False),),
                                   lambda c: st.retract_vjp(W_, Z_, c[0], "exp", check=False)),
                   [W, Z], rtol=1e-8, elementwise=True, n_directions=2, rng=6)


@pytest.mark.torch
@pytest.mark.parametrize("shape", [(9, 3), (5, 5), (3, 6, 2)])
def test_retract_exp_vs_torch(shape, rng):
    torch = pytest.importorskip("torch")
    W = _stiefel(rng, shape)
    Z = _tangent(rng, W, 1.3)
    G = rng.standard_normal(shape)
    tW, tZ = (torch.from_numpy(x.copy()).requires_grad_(True) for x in (W, Z))
    (tY,) = torch_retract_exp(tW, tZ)
    tgW, tgZ = torch.autograd.grad(tY, (tW, tZ), torch.from_numpy(G))
    assert np.abs(st.retract(W, Z, "exp") - tY.detach().numpy()).max() <= 1e-12
    gW, gZ = st.retract_vjp(W, Z, G, "exp")
    for g, tg in ((gW, tgW), (gZ, tgZ)):
        assert np.abs(g - tg.numpy()).max() <= 1e-10 * np.abs(tg.numpy()).max()


# ---------------------------------------------------------------------------------------------------------
# Iterative Cayley.

@pytest.mark.parametrize("shape", [(8, 3), (5, 5), (2, 6, 2)])
def test_cayley_iterative_converges_to_cayley(shape, rng):
    W = _stiefel(rng, shape)
    Z = _tangent(rng, W)
    alpha = 0.2
    exact = st.retract(W, alpha * Z, "cayley")
    np.testing.assert_allclose(st.cayley_iterative(W, Z, alpha, iterations=60), exact, atol=1e-12)
    errs = [np.abs(st.cayley_iterative(W, Z, alpha, iterations=k) - exact).max() for k in range(5)]
    assert all(b < 0.5 * a for a, b in zip(errs, errs[1:])), errs          # geometric convergence
    assert _orth_err(st.cayley_iterative(W, Z, alpha, iterations=2)) < 1e-3   # the paper's two iterations
    np.testing.assert_allclose(st.cayley_iterative(W, Z, 0.0), W, atol=0)


def test_cayley_iterative_start_is_their_Y0(rng):
    W = _stiefel(rng, (6, 2))
    Z = _tangent(rng, W)
    np.testing.assert_allclose(st.cayley_iterative(W, Z, 0.1, iterations=0), W + 0.1 * Z, atol=1e-15)


@pytest.mark.parametrize("shape,alpha,iterations", [((5, 3), 0.3, 2), ((4, 4), 0.5, 0), ((2, 6, 2), 0.4, 3),
                                                    ((4, 1), 0.7, 1)])
def test_cayley_iterative_vjp_elementwise(shape, alpha, iterations, rng):
    W = _stiefel(rng, shape)
    Z = rng.standard_normal(shape)                                          # any Z: A is built from it
    check_backward(lambda W_, Z_: ((st.cayley_iterative(W_, Z_, alpha, iterations, check=False),),
                                   lambda c: st.cayley_iterative_vjp(W_, Z_, alpha, c[0], iterations,
                                                                     check=False)),
                   [W, Z], rtol=1e-8, elementwise=True, n_directions=2, rng=7)


@pytest.mark.parametrize("iterations", [0, 2, 5])
def test_cayley_iterative_vjp_along_tangent_directions(iterations, rng):
    W = _stiefel(rng, (7, 3))
    Z = _tangent(rng, W)
    G = rng.standard_normal(W.shape)
    gW, gZ = st.cayley_iterative_vjp(W, Z, 0.3, G, iterations)
    f = lambda W_, Z_: float((G * st.cayley_iterative(W_, Z_, 0.3, iterations, check=False)).sum())
    for _ in range(3):
        D = _tangent(rng, W)
        numeric = _directional(lambda X: f(W, X), Z, D)
        assert abs(numeric - (gZ * D).sum()) <= 1e-9 * np.abs(gZ * D).sum()
        numeric = _directional(lambda t: f(st.retract(W, t * D, "qr"), Z), 0.0, 1.0)
        assert abs(numeric - (gW * D).sum()) <= 1e-9 * np.abs(gW * D).sum()


def test_cayley_iterative_vjp_converges_to_cayley_vjp(rng):
    """Many iterations: the unrolled gradient tends to the gradient of the fixed point retract(W, αZ)."""
    W = _stiefel(rng, (8, 3))
    Z = _tangent(rng, W)
    G = rng.standard_normal(W.shape)
    alpha = 0.2
    gW, gZ = st.cayley_iterative_vjp(W, Z, alpha, G, iterations=80)
    cW, cZ = st.retract_vjp(W, alpha * Z, G, "cayley")
    np.testing.assert_allclose(gW, cW, atol=1e-11)
    np.testing.assert_allclose(gZ, alpha * cZ, atol=1e-11)


@pytest.mark.torch
@pytest.mark.parametrize("iterations", [0, 2, 4])
def test_cayley_iterative_vs_torch(iterations, rng):
    torch = pytest.importorskip("torch")
    W = _stiefel(rng, (3, 7, 3))
    Z = _tangent(rng, W)
    G = rng.standard_normal(W.shape)
    tW, tZ = (torch.from_numpy(x.copy()).requires_grad_(True) for x in (W, Z))
    (tY,) = torch_cayley_iterative(tW, tZ, 0.4, iterations)
    tgW, tgZ = torch.autograd.grad(tY, (tW, tZ), torch.from_numpy(G))
    assert np.abs(st.cayley_iterative(W, Z, 0.4, iterations) - tY.detach().numpy()).max() <= 1e-13
    gW, gZ = st.cayley_iterative_vjp(W, Z, 0.4, G, iterations)
    for g, tg in ((gW, tgW), (gZ, tgZ)):
        assert np.abs(g - tg.numpy()).max() <= 1e-12 * np.abs(tg.numpy()).max()


# ---------------------------------------------------------------------------------------------------------
# float32 and errors.

def test_float32_stays_float32(rng):
    A = _skew(rng, (2, 5, 5)).astype(np.float32)
    G = rng.standard_normal(A.shape).astype(np.float32)
    for fn, vjp in ((st.cayley, st.cayley_vjp), (st.expm_skew, st.expm_skew_vjp)):
        assert fn(A).dtype == np.float32 and vjp(A, G).dtype == np.float32
        assert _orth_err(fn(A)) < 1e-5
    W = _stiefel(rng, (6, 3), np.float32)
    Z = _tangent(rng, W)
    for m in METHODS:
        Y = st.retract(W, Z, m)
        assert Y.dtype == np.float32 and _orth_err(Y) < 1e-5, m
    for m in METHODS:
        assert all(g.dtype == np.float32 for g in st.retract_vjp(W, Z, Z, m)), m
    W4 = _stiefel(rng, (7, 4), np.float32)                                  # the n x n exp backward
    assert all(g.dtype == np.float32 for g in st.retract_vjp(W4, _tangent(rng, W4), W4, "exp"))
    assert st.project_tangent(W, Z, "canonical").dtype == np.float32
    assert st.cayley_iterative(W, Z, 0.1).dtype == np.float32
    assert all(g.dtype == np.float32 for g in st.cayley_iterative_vjp(W, Z, 0.1, Z))


def test_errors(rng):
    W = _stiefel(rng, (5, 3))
    with pytest.raises(ValueError, match="A must be square"):
        st.cayley(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="A must be square"):
        st.expm_skew_vjp(np.zeros((3, 4)), np.zeros((3, 4)))
    with pytest.raises(TypeError, match="A must be a float32 or float64 array"):
        st.cayley(np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(TypeError, match="A must be"):
        st.expm_skew([[0.0]])
    with pytest.raises(ValueError, match="skew"):
        st.cayley(np.eye(3), check_skew=True)
    with pytest.raises(ValueError, match="grad_out must have shape"):
        st.cayley_vjp(np.zeros((3, 3)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"W must have orthonormal columns, got ‖WᵀW - I‖_F = 5\.196"):
        st.retract(2 * W, W)                                   # ‖4I₃ - I₃‖_F = 3√3
    with pytest.raises(ValueError, match="Z must have the shape of W"):
        st.retract(W, np.zeros((5, 2)))
    with pytest.raises(TypeError, match="Z must have the dtype of W"):
        st.retract(W, W.astype(np.float32))
    with pytest.raises(ValueError, match="method must be one of"):
        st.retract(W, W, "svd")
    with pytest.raises(ValueError, match="metric must be one of"):
        st.project_tangent(W, W, "riemannian")
    with pytest.raises(ValueError, match="n >= p"):
        st.retract(W.T, W.T)
    with pytest.raises(ValueError, match="W must have orthonormal columns"):
        st.project_tangent(W + 0.1, W)
    with pytest.raises(ValueError, match="alpha"):
        st.cayley_iterative(W, W, float("nan"))
    with pytest.raises(ValueError, match="iterations"):
        st.cayley_iterative(W, W, 0.1, iterations=-1)
    with pytest.raises(ValueError, match="alpha"):
        st.cayley_iterative_vjp(W, W, float("inf"), W)
    with pytest.raises(TypeError, match="iterations must be an int"):       # a float is the wrong kind
        st.cayley_iterative_vjp(W, W, 0.1, W, iterations=1.5)
    with pytest.raises(ValueError, match=r"grad_out must have shape \(5, 3\)"):
        st.cayley_iterative_vjp(W, W, 0.1, W[:, :2])
    with pytest.raises(ValueError, match="W must have orthonormal columns"):
        st.retract_vjp(2 * W, W, W, "exp")
    # check=False uses W as given
    st.retract(2 * W, W, "qr", check=False)
