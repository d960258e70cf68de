"""Riemannian optimizers on the Stiefel manifold (RiemannianSGD/Adam, CayleySGD/Adam) and OGD:
feasibility over 1000 steps, equality with the defining formulas (independent NumPy transcriptions of
geoopt's RiemannianSGD/RiemannianAdam on EuclideanStiefel and CanonicalStiefel; geoopt itself in
tests/test_claims.py), descent on the Rayleigh-quotient problem, non-Stiefel parameters, untouched
gradients, state dicts; OGD's projection, basis and memory cap."""
import numpy as np
import pytest

from orthoref import init
from orthoref.nn.module import Parameter
from orthoref.optim.ogd import OGD
from orthoref.optim.riemannian import CayleyAdam, CayleySGD, RiemannianAdam, RiemannianSGD, stiefel_view
from orthoref.ortho.metrics import orthogonality_error_fro
from orthoref.ortho.stiefel import RETRACTIONS, project_tangent, retract


def _stiefel_params(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return [Parameter(init.orthogonal((20, 5), rng=rng, dtype=dtype)),
            Parameter(init.orthogonal((8, 2, 3, 3), rng=rng, dtype=dtype)),
            Parameter(init.orthogonal((4, 6), rng=rng, dtype=dtype))]


def _err(p):
    return orthogonality_error_fro(stiefel_view(p.data)[0])


def _make(name, params, retraction="qr"):
    if name == "rsgd":
        return RiemannianSGD(params, lr=0.05, momentum=0.9, retraction=retraction)
    if name == "rsgd_nesterov_canonical":
        return RiemannianSGD(params, lr=0.05, momentum=0.5, nesterov=True, metric="canonical",
                             retraction=retraction)
    if name == "radam":
        return RiemannianAdam(params, lr=0.01, retraction=retraction)
    if name == "radam_elementwise":
        return RiemannianAdam(params, lr=0.01, retraction=retraction, second_moment="elementwise")
    if name == "radam_canonical":
        return RiemannianAdam(params, lr=0.01, retraction=retraction, metric="canonical")
    if name == "cayley_sgd":
        return CayleySGD(params, lr=0.2)
    if name == "cayley_adam":
        return CayleyAdam(params, lr=0.4)
    raise KeyError(name)


CASES = [(n, r) for n in ("rsgd", "radam") for r in RETRACTIONS + ("cayley_rotate",)] + \
        [("radam_elementwise", "qr"), ("radam_elementwise", "cayley"), ("radam_canonical", "cayley_rotate"),
         ("rsgd_nesterov_canonical", "cayley"), ("rsgd_nesterov_canonical", "exp"),
         ("rsgd_nesterov_canonical", "cayley_rotate"),
         ("cayley_sgd", None), ("cayley_adam", None)]


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-5)])
@pytest.mark.parametrize("name,retraction", CASES)
def test_feasibility_1000_steps(name, retraction, dtype, tol):
    params = _stiefel_params(dtype)
    opt = _make(name, params, retraction or "qr")
    rng = np.random.default_rng(1)
    for _ in range(1000):
        for p in params:
            p.grad = rng.standard_normal(p.shape).astype(dtype)
        opt.step()
    for p in params:
        assert p.data.dtype == dtype
        assert _err(p) <= tol, (name, retraction, p.shape, _err(p))


@pytest.mark.parametrize("retraction", RETRACTIONS)
@pytest.mark.parametrize("metric", ["euclidean", "canonical"])
def test_rsgd_no_momentum_is_retracted_riemannian_gradient(retraction, metric):
    params = _stiefel_params()
    rng = np.random.default_rng(2)
    opt = RiemannianSGD(params, lr=0.1, metric=metric, retraction=retraction)
    for _ in range(3):
        expect = []
        for p in params:
            p.grad = rng.standard_normal(p.shape)
            X, tr = stiefel_view(p.data)
            G = stiefel_view(p.grad)[0]
            Y = retract(X, -0.1 * project_tangent(X, G, metric), retraction)
            expect.append((Y.T if tr else Y).reshape(p.shape))
        opt.step()
        for p, e in zip(params, expect):
            np.testing.assert_allclose(p.data, e, rtol=0, atol=1e-13)


@pytest.mark.parametrize("metric", ["euclidean", "canonical"])
def test_riemannian_gradient_is_tangent(metric):
    rng = np.random.default_rng(3)
    X = init.orthogonal((12, 4), rng=rng, dtype=np.float64)
    r = project_tangent(X, rng.standard_normal(X.shape), metric)
    S = X.T @ r
    np.testing.assert_allclose(S + S.T, 0, atol=1e-13)
    # the momentum buffer after a step is tangent at the new point (transport by projection)
    p = Parameter(X.copy())
    opt = RiemannianSGD([p], lr=0.1, momentum=0.9, metric=metric)
    for _ in range(3):
        p.grad = rng.standard_normal(X.shape)
        opt.step()
        S = p.data.T @ opt.state[p]["momentum_buffer"]
        np.testing.assert_allclose(S + S.T, 0, atol=1e-12)


def _rayleigh(n=20, k=3, seed=4):
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    evals = np.concatenate([[5.0, 4.0, 3.0], np.linspace(1.0, 0.0, n - 3)])
    A = (Q * evals) @ Q.T
    W = init.orthogonal((n, k), rng=rng, dtype=np.float64)
    return A, W


def _top_subspace_error(A, W, k):
    U = np.linalg.eigh(A)[1][:, -k:]
    return np.linalg.norm(W @ W.T - U @ U.T)


@pytest.mark.parametrize("opt_fn", [
    lambda ps: RiemannianSGD(ps, lr=0.05, momentum=0.5),
    lambda ps: RiemannianSGD(ps, lr=0.05, retraction="cayley", metric="canonical"),
    lambda ps: RiemannianAdam(ps, lr=0.02),
    lambda ps: RiemannianAdam(ps, lr=0.02, second_moment="elementwise"),
    lambda ps: RiemannianSGD(ps, lr=0.05, momentum=0.5, metric="canonical", retraction="cayley_rotate"),
    lambda ps: RiemannianAdam(ps, lr=0.02, metric="canonical", retraction="cayley_rotate"),
])
def test_descent_to_top_eigenvectors(opt_fn):
    A, W = _rayleigh()
    p = Parameter(W)
    opt = opt_fn([p])
    for _ in range(800):
        p.grad = -2 * A @ p.data          # minimize -trace(WᵀAW)
        opt.step()
    assert _top_subspace_error(A, p.data, 3) < 1e-4
    np.testing.assert_allclose(np.trace(p.data.T @ A @ p.data), 12.0, rtol=1e-7)


@pytest.mark.parametrize("cls,lr", [(CayleySGD, 0.05), (CayleyAdam, 0.05)])
def test_cayley_decreases_objective(cls, lr):
    A, W = _rayleigh()
    p = Parameter(W)
    opt = cls([p], lr=lr)
    f0 = -np.trace(W.T @ A @ W)
    values = []
    for _ in range(400):
        p.grad = -2 * A @ p.data
        opt.step()
        values.append(-np.trace(p.data.T @ A @ p.data))
    assert values[-1] < f0
    assert values[-1] < -12.0 + 1e-2
    assert _top_subspace_error(A, p.data, 3) < 0.1
    assert orthogonality_error_fro(p.data) < 1e-10


def _geoopt_radam_reference(X, grads, lr, betas, eps, second_moment="matrix"):
    """geoopt 0.5.1's RiemannianAdam on EuclideanStiefel, transcribed from geoopt/optim/radam.py with NumPy
    (proju = x - x sym(xᵀu); retr = QR with sign fix; transp = proju at the new point; component_inner =
    inner(keepdim=True) = Σ g², one scalar per matrix). ``second_moment="elementwise"``: g ⊙ g instead,
    orthoref's earlier default (not geoopt's)."""
    def proju(x, u):
        s = x.T @ u
        return u - x @ (0.5 * (s + s.T))

    def retr(x, u):
        q, r = np.linalg.qr(x + u)
        return q * np.where(np.diag(r) < 0, -1.0, 1.0)

    m = np.zeros_like(X)
    v = np.zeros_like(X)
    out = []
    for t, g in enumerate(grads, 1):
        g = proju(X, g)
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * (np.sum(g * g) if second_moment == "matrix" else g * g)
        denom = np.sqrt(v / (1 - betas[1] ** t)) + eps
        direction = m / (1 - betas[0] ** t) / denom
        Xn = retr(X, -lr * direction)
        m = proju(Xn, m)
        X = Xn
        out.append(X)
    return out


@pytest.mark.parametrize("second_moment", ["matrix", "elementwise"])
def test_riemannian_adam_matches_geoopt_transcription(second_moment):
    rng = np.random.default_rng(5)
    W = init.orthogonal((9, 4), rng=rng, dtype=np.float64)
    grads = [rng.standard_normal(W.shape) for _ in range(6)]
    ref = _geoopt_radam_reference(W.copy(), grads, 0.05, (0.9, 0.99), 1e-8, second_moment)
    p = Parameter(W.copy())
    opt = RiemannianAdam([p], lr=0.05, betas=(0.9, 0.99), second_moment=second_moment)
    for g, r in zip(grads, ref):
        p.grad = g
        opt.step()
        np.testing.assert_allclose(p.data, r, rtol=0, atol=1e-12)


def test_riemannian_adam_default_second_moment_is_matrix():
    """The default is geoopt's: one second-moment scalar per matrix, a tangent step; the two settings
    differ after one step."""
    rng = np.random.default_rng(12)
    W = init.orthogonal((9, 4), rng=rng, dtype=np.float64)
    g = rng.standard_normal(W.shape)
    out = {}
    for sm in (None, "matrix", "elementwise"):
        p = Parameter(W.copy())
        opt = RiemannianAdam([p], lr=0.05) if sm is None else RiemannianAdam([p], lr=0.05, second_moment=sm)
        p.grad = g
        opt.step()
        out[sm] = p.data
        v = opt.state[p]["exp_avg_sq"]
        if sm != "elementwise":
            np.testing.assert_array_equal(v, np.full_like(v, v.flat[0]))
    np.testing.assert_array_equal(out[None], out["matrix"])
    assert np.abs(out["matrix"] - out["elementwise"]).max() > 1e-3
    with pytest.raises(ValueError, match="second_moment"):
        RiemannianAdam([Parameter(W.copy())], second_moment="diagonal")


def _cayley_rotate_reference(x, u, v):
    """geoopt's CanonicalStiefel._transp_follow_one, literally: an n x n solve."""
    a = u @ x.T - x @ u.T
    n = x.shape[0]
    return np.linalg.solve(np.eye(n) - 0.5 * a, x + 0.5 * a @ x), \
        np.linalg.solve(np.eye(n) - 0.5 * a, v + 0.5 * a @ v)


def test_canonical_stiefel_transcriptions():
    """RiemannianSGD (momentum) and RiemannianAdam with metric="canonical", retraction="cayley_rotate"
    against NumPy transcriptions of geoopt's CanonicalStiefel (egrad2rgrad = G - X GᵀX, retr_transp =
    the Cayley rotation of A = u xᵀ - x uᵀ, inner = Σ u² - ½ Σ (xᵀu)²)."""
    rng = np.random.default_rng(13)
    W = init.orthogonal((8, 3), rng=rng, dtype=np.float64)
    grads = [rng.standard_normal(W.shape) for _ in range(6)]
    # SGD with momentum
    p, X, buf = Parameter(W.copy()), W.copy(), None
    opt = RiemannianSGD([p], lr=0.1, momentum=0.9, metric="canonical", retraction="cayley_rotate")
    for g in grads:
        p.grad = g
        opt.step()
        r = g - X @ g.T @ X
        buf = g.copy() if buf is None else buf
        buf = 0.9 * buf + r
        X, buf = _cayley_rotate_reference(X, -0.1 * buf, buf)
        np.testing.assert_allclose(p.data, X, rtol=0, atol=1e-12)
    # Adam
    p, X = Parameter(W.copy()), W.copy()
    m, v = np.zeros_like(W), 0.0
    opt = RiemannianAdam([p], lr=0.05, betas=(0.9, 0.99), metric="canonical", retraction="cayley_rotate")
    for t, g in enumerate(grads, 1):
        p.grad = g
        opt.step()
        r = g - X @ g.T @ X
        m = 0.9 * m + 0.1 * r
        v = 0.99 * v + 0.01 * (np.sum(r * r) - 0.5 * np.sum((X.T @ r) ** 2))
        d = m / (1 - 0.9 ** t) / (np.sqrt(v / (1 - 0.99 ** t)) + 1e-8)
        X, m = _cayley_rotate_reference(X, -0.05 * d, m)
        np.testing.assert_allclose(p.data, X, rtol=0, atol=1e-12)


def test_riemannian_sgd_momentum_matches_geoopt_transcription():
    rng = np.random.default_rng(6)
    W = init.orthogonal((7, 3), rng=rng, dtype=np.float64)
    X, p = W.copy(), Parameter(W.copy())
    opt = RiemannianSGD([p], lr=0.1, momentum=0.9)
    buf = None
    for _ in range(5):
        g = rng.standard_normal(W.shape)
        p.grad = g
        opt.step()
        # geoopt rsgd.py: buf = grad.clone() on creation, then buf = mu*buf + rgrad; retr_transp
        r = project_tangent(X, g)
        buf = g.copy() if buf is None else buf
        buf = 0.9 * buf + r
        X = retract(X, -0.1 * buf)
        buf = project_tangent(X, buf)
        np.testing.assert_allclose(p.data, X, rtol=0, atol=1e-12)


def test_non_stiefel_params_get_plain_update():
    rng = np.random.default_rng(7)
    b = Parameter(rng.standard_normal(5))
    M = Parameter(rng.standard_normal((4, 3)))                  # not orthonormal: group stiefel=False
    W = Parameter(init.orthogonal((6, 3), rng=rng, dtype=np.float64))
    b0, M0 = b.data.copy(), M.data.copy()
    gb, gM, gW = rng.standard_normal(5), rng.standard_normal((4, 3)), rng.standard_normal((6, 3))
    for cls, kw in ((RiemannianSGD, {}), (CayleySGD, {"momentum": 0.0})):
        b.data[...], M.data[...] = b0, M0
        opt = cls([{"params": [W, b]}, {"params": [M], "stiefel": False}], lr=0.1, **kw)
        b.grad, M.grad, W.grad = gb, gM, gW
        opt.step()
        np.testing.assert_allclose(b.data, b0 - 0.1 * gb, atol=1e-15)
        np.testing.assert_allclose(M.data, M0 - 0.1 * gM, atol=1e-15)
    # RiemannianAdam on a Euclidean parameter is PyTorch's Adam: first step = -lr * g/(|g| + eps')
    b.data[...] = b0
    opt = RiemannianAdam([b], lr=0.01)
    b.grad = gb
    opt.step()
    np.testing.assert_allclose(b.data, b0 - 0.01 * gb / (np.abs(gb) + 1e-8), atol=1e-15)
    with pytest.raises(ValueError, match="orthoref.init.orthogonal"):
        o = RiemannianSGD([M], lr=0.1)
        o.step()


@pytest.mark.parametrize("name", ["rsgd", "radam", "radam_elementwise", "radam_canonical", "cayley_sgd",
                                  "cayley_adam"])
def test_grad_untouched_and_state_dict_round_trip(name):
    params = _stiefel_params(seed=8)
    twin = [Parameter(p.data.copy()) for p in params]
    opt = _make(name, params)
    rng = np.random.default_rng(9)
    grads = [[rng.standard_normal(p.shape) for p in params] for _ in range(6)]
    for gs in grads[:3]:
        for p, g in zip(params, gs):
            p.grad = g
        copies = [g.copy() for g in gs]
        opt.step()
        for p, c in zip(params, copies):
            np.testing.assert_array_equal(p.grad, c)
    for t, p in zip(twin, params):
        t.data[...] = p.data
    opt2 = _make(name, twin)
    opt2.load_state_dict(opt.state_dict())
    for gs in grads[3:]:
        for p, t, g in zip(params, twin, gs):
            p.grad, t.grad = g, g.copy()
        opt.step()
        opt2.step()
    for p, t in zip(params, twin):
        np.testing.assert_array_equal(p.data, t.data)


# ---------------------------------------------------------------------------------------------------------
# OGD

def _ogd_setup(seed=10, memory=100):
    rng = np.random.default_rng(seed)
    params = [Parameter(rng.standard_normal((4, 3))), Parameter(rng.standard_normal(5))]
    return rng, params, OGD(params, lr=0.1, memory=memory)


def test_ogd_update_orthogonal_to_stored_directions():
    rng, params, opt = _ogd_setup()
    dirs = [rng.standard_normal(17) for _ in range(4)]
    assert opt.store_directions(dirs[:2]) == 2
    assert opt.end_task([[d[:12].reshape(4, 3), d[12:]] for d in dirs[2:]]) == 2
    before = np.concatenate([p.data.ravel() for p in params])
    gs = [rng.standard_normal(p.shape) for p in params]
    for p, g in zip(params, gs):
        p.grad = g
    opt.step()
    for p, g in zip(params, gs):
        assert p.grad is g
    delta = np.concatenate([p.data.ravel() for p in params]) - before
    D = np.stack(dirs)
    np.testing.assert_allclose(D @ delta, 0, atol=1e-13)
    g = np.concatenate([g.ravel() for g in gs])
    B = opt.basis
    np.testing.assert_allclose(delta, -0.1 * (g - B.T @ (B @ g)), atol=1e-15)
    # with no basis OGD is plain SGD
    _, params2, opt2 = _ogd_setup(seed=11)
    d0 = [p.data.copy() for p in params2]
    for p, g in zip(params2, gs):
        p.grad = g
    opt2.step()
    for p, d, g in zip(params2, d0, gs):
        np.testing.assert_allclose(p.data, d - 0.1 * g, atol=1e-15)


def test_ogd_basis_orthonormal_drop_and_memory_cap():
    rng, params, opt = _ogd_setup(memory=5)
    a, b = rng.standard_normal(17), rng.standard_normal(17)
    assert opt.store_directions([a, b, 2 * a - 3 * b, np.zeros(17)]) == 2      # dependent and zero dropped
    np.testing.assert_allclose(opt.basis @ opt.basis.T, np.eye(2), atol=1e-14)
    more = [rng.standard_normal(17) for _ in range(6)]
    assert opt.store_directions(more[:3]) == 3
    B5 = opt.basis.copy()
    assert opt.store_directions(more[3:]) == 3
    assert opt.basis.shape == (5, 17)
    np.testing.assert_allclose(opt.basis @ opt.basis.T, np.eye(5), atol=1e-13)
    # FIFO: the three oldest rows were dropped, the others kept in order
    np.testing.assert_array_equal(opt.basis[:2], B5[3:])
    B = opt.basis
    # near-duplicate of a stored direction (ill-conditioned): still orthonormal after GS twice
    c = B[0] + 1e-9 * rng.standard_normal(17)
    opt.store_directions([c])
    np.testing.assert_allclose(opt.basis @ opt.basis.T, np.eye(opt.basis.shape[0]), atol=1e-12)
    with pytest.raises(ValueError, match="length 17"):
        opt.store_directions([np.zeros(16)])
    sd = opt.state_dict()
    _, params2, opt2 = _ogd_setup(memory=5)
    opt2.load_state_dict(sd)
    np.testing.assert_array_equal(opt2.basis, opt.basis)
