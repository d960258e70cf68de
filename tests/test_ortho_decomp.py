"""orthoref.ortho.decomp: Gram–Schmidt, QR, polar, Householder products -- orthogonality, agreement between
the maps, gradients (random and tangent directions), errors, the κ table, dtypes, LAPACK/PyTorch."""
import numpy as np
import pytest
import scipy.linalg

from orthoref.oracle import check_backward
from orthoref.oracle.samples import decomp as decomp_samples
from orthoref.ortho.decomp import (gram_schmidt, gram_schmidt_table, gram_schmidt_vjp, householder_product,
                                   householder_product_vjp, polar, polar_vjp,
                                   qr_orthogonalize, qr_orthogonalize_vjp)
from orthoref.ortho.metrics import orthogonality_error_2

U64 = np.finfo(np.float64).eps / 2        # unit roundoff
SHAPES = {"square": (6, 6), "tall": (9, 4), "wide": (3, 7), "batched": (2, 3, 7, 4)}
GS_METHODS = ["mgs", "cgs", "cgs2"]


def _draw(rng, shape, lo=0.5, hi=2.0, dtype=np.float64):
    return decomp_samples.well_conditioned(rng, shape, dtype, lo, hi)


def _gram_err(Q):
    return orthogonality_error_2(Q)


def _map(f, f_vjp, **kw):
    return lambda A: ((f(A, **kw),), lambda cts: (f_vjp(A, cts[0], **kw),))


# ---------------------------------------------------------------------------------------------------------
# Orthogonality and agreement.

@pytest.mark.parametrize("kind", list(SHAPES))
@pytest.mark.parametrize("fn", ["qr", "polar"])
def test_output_orthonormal(fn, kind, rng):
    A = _draw(rng, SHAPES[kind])
    Q = qr_orthogonalize(A) if fn == "qr" else polar(A)
    assert Q.shape == A.shape and Q.dtype == np.float64
    assert _gram_err(Q) <= 1e-12


@pytest.mark.parametrize("kind", ["square", "tall", "batched"])
@pytest.mark.parametrize("method", GS_METHODS)
def test_gram_schmidt_orthonormal_and_equals_qr(method, kind, rng):
    A = _draw(rng, SHAPES[kind])
    Q, R = gram_schmidt(A, method=method, return_r=True)
    assert _gram_err(Q) <= 1e-12
    np.testing.assert_allclose(Q, qr_orthogonalize(A), rtol=0, atol=1e-12)
    np.testing.assert_allclose(Q @ R, A, rtol=0, atol=1e-12)
    assert np.all(np.tril(R, -1) == 0) and np.all(np.diagonal(R, axis1=-2, axis2=-1) > 0)


def test_qr_positive_diagonal_and_reconstruction(rng):
    A = _draw(rng, (8, 5))
    Q = qr_orthogonalize(A)
    R = Q.T @ A
    np.testing.assert_allclose(np.tril(R, -1), 0, atol=1e-13)
    assert np.all(np.diag(R) > 0)
    # a matrix with columns of alternating sign: LAPACK's raw Q differs, ours is fixed
    Q2 = qr_orthogonalize(A * np.array([1, -1, 1, -1, 1]))
    np.testing.assert_allclose(Q2, Q * np.array([1, -1, 1, -1, 1]), atol=1e-13)


def test_wide_is_transposition(rng):
    A = _draw(rng, (3, 7))
    np.testing.assert_allclose(qr_orthogonalize(A), qr_orthogonalize(A.T).T, atol=1e-15)
    np.testing.assert_allclose(polar(A), polar(A.T).T, atol=1e-13)
    G = rng.standard_normal(A.shape)
    np.testing.assert_allclose(qr_orthogonalize_vjp(A, G), qr_orthogonalize_vjp(A.T, G.T).T, atol=1e-13)
    np.testing.assert_allclose(polar_vjp(A, G), polar_vjp(A.T, G.T).T, atol=1e-13)


def test_batched_matches_loop(rng):
    A = _draw(rng, (2, 3, 6, 4))
    G = rng.standard_normal(A.shape)
    for f, fv in [(qr_orthogonalize, qr_orthogonalize_vjp), (polar, polar_vjp)]:
        Q, gA = f(A), fv(A, G)
        for idx in np.ndindex(2, 3):
            np.testing.assert_allclose(Q[idx], f(A[idx]), atol=1e-13)
            np.testing.assert_allclose(gA[idx], fv(A[idx], G[idx]), atol=1e-12)


def test_polar_of_orthogonal_is_itself(rng):
    for shape in [(5, 5), (8, 3), (3, 8)]:
        Q = qr_orthogonalize(rng.standard_normal(shape))
        np.testing.assert_allclose(polar(Q), Q, atol=1e-13)


@pytest.mark.parametrize("shape", [(6, 6), (9, 4)])
def test_polar_is_nearest_orthogonal(shape, rng):
    A = _draw(rng, shape)
    Q = polar(A)
    Qs, H = scipy.linalg.polar(A)                  # A = Qs H, H symmetric positive semi-definite
    np.testing.assert_allclose(Q, Qs, atol=1e-13)
    np.testing.assert_allclose(Q @ (Q.T @ A), A, atol=1e-12)
    best = np.linalg.norm(Q - A)
    for _ in range(20):                            # no other orthonormal-column matrix is closer
        W = qr_orthogonalize(rng.standard_normal(shape))
        assert np.linalg.norm(W - A) >= best
    W = polar(Q + 1e-3 * rng.standard_normal(shape))    # nor a nearby one
    assert np.linalg.norm(W - A) >= best


# ---------------------------------------------------------------------------------------------------------
# Gradients: random directions (and element-wise on small shapes), tangent directions.

@pytest.mark.parametrize("kind", list(SHAPES))
@pytest.mark.parametrize("fn", ["qr", "polar"])
def test_gradient_random_directions(fn, kind, rng):
    A = _draw(rng, SHAPES[kind])
    f = _map(qr_orthogonalize, qr_orthogonalize_vjp) if fn == "qr" else _map(polar, polar_vjp)
    check_backward(f, [A], rtol=1e-8, n_directions=4, rng=7, elementwise=kind != "batched", names=["A"])


@pytest.mark.parametrize("method", GS_METHODS)
def test_gradient_gram_schmidt(method, rng):
    A = _draw(rng, (7, 4))
    check_backward(_map(gram_schmidt, gram_schmidt_vjp, method=method), [A], rtol=1e-8, n_directions=4,
                   elementwise=True, rng=8, names=["A"])


def _tangent_check(f, f_vjp, A, D, rng, eps=1e-3, rtol=1e-8):
    """Directional check along a given direction ``D`` (check_backward draws its own directions)."""
    G = rng.standard_normal(A.shape)
    phi = [float((G * f(A + t * eps * D)).sum()) for t in (2, 1, -1, -2)]
    numeric = (-phi[0] + 8 * phi[1] - 8 * phi[2] + phi[3]) / (12 * eps)
    analytic = float((f_vjp(A, G) * D).sum())
    scale = float(np.abs(f_vjp(A, G) * D).sum())
    assert abs(numeric - analytic) <= rtol * scale, (numeric, analytic)
    return analytic


@pytest.mark.parametrize("shape", [(5, 5), (8, 3)])
def test_gradient_tangent_directions(shape, rng):
    """At an orthonormal ``A`` the tangent space of the Stiefel manifold splits the input space: along a
    tangent direction ``D = A Ω + (I − AAᵀ) K`` (Ω skew) the polar factor moves like the projection (its
    differential is the identity on skew parts of the tangent: dQ = A Ω for ``K = 0``), and along a normal
    direction ``D = A S`` (S symmetric) it does not move at all."""
    A = qr_orthogonalize(rng.standard_normal(shape))
    n, k = shape
    W = rng.standard_normal((k, k))
    Omega = W - W.T
    S = W + W.T
    K = rng.standard_normal(shape)
    K -= A @ (A.T @ K)
    # polar: dQ = A Ω + (I − AAᵀ) K along the tangent, 0 along the normal
    G = rng.standard_normal(shape)
    gA = polar_vjp(A, G)
    np.testing.assert_allclose(float((gA * (A @ Omega + K)).sum()), float((G * (A @ Omega + K)).sum()),
                               rtol=1e-12)
    assert abs(float((gA * (A @ S)).sum())) <= 1e-12 * np.abs(gA).sum() * np.abs(S).max()
    # finite differences along tangent and normal directions, for polar, QR and MGS
    for f, fv in [(polar, polar_vjp), (qr_orthogonalize, qr_orthogonalize_vjp),
                  (lambda X: gram_schmidt(X, "mgs"), lambda X, g: gram_schmidt_vjp(X, g, "mgs"))]:
        for D in (A @ Omega + K, A @ S):
            _tangent_check(f, fv, A, D / np.abs(D).max(), rng)
    # QR at an orthonormal A is the identity along upper-triangular "normal" moves A (I + εU): Q stays A
    Up = np.triu(rng.uniform(0.5, 1.0, (k, k)))
    assert abs(_tangent_check(qr_orthogonalize, qr_orthogonalize_vjp, A, A @ Up, rng)) <= 1e-10


# ---------------------------------------------------------------------------------------------------------
# Householder products.

def _hh(rng, shape, p=None):
    return decomp_samples.householder_inputs(rng, shape, p=p)


@pytest.mark.parametrize("shape,p", [((7, 4), None), ((5, 5), None), ((7, 4), 2)])
def test_householder_matches_lapack_and_wy(shape, p, rng):
    V, tau = _hh(rng, shape, p)
    Q = householder_product(V, tau)
    ref, _, info = scipy.linalg.lapack.dorgqr(V, tau)
    assert info == 0
    np.testing.assert_allclose(Q, ref, atol=1e-14)
    # the batched path (compact WY) on a batch of one gives the same
    np.testing.assert_allclose(householder_product(V[None], tau[None])[0], ref, atol=1e-13)
    # the product of the reflectors, written out
    n, k = shape
    H = np.eye(n)
    for i in range(tau.shape[0]):
        v = np.concatenate([np.zeros(i), [1.0], V[i + 1:, i]])
        H = H @ (np.eye(n) - tau[i] * np.outer(v, v))
    np.testing.assert_allclose(Q, H[:, :k], atol=1e-13)


def test_householder_from_geqrf_is_qr(rng):
    A = _draw(rng, (9, 5))
    qr, tau, _, _ = scipy.linalg.lapack.dgeqrf(A)
    Q = householder_product(qr, tau)
    assert _gram_err(Q) <= 1e-13
    np.testing.assert_allclose(np.abs(Q), np.abs(qr_orthogonalize(A)), atol=1e-13)


def test_householder_gradients(rng):
    for shape, p in [((6, 4), None), ((2, 5, 3), None), ((6, 4), 2)]:
        V, tau = _hh(rng, shape, p)
        tau = tau.copy()
        if len(shape) == 2:
            tau[0] = 0.0                                # τ = 0 is allowed (no division by τ)
        f = lambda V, tau: ((householder_product(V, tau),),
                            lambda cts: householder_product_vjp(V, tau, cts[0]))
        check_backward(f, [V, tau], rtol=1e-8, n_directions=4, rng=9, elementwise=len(shape) == 2,
                       names=["V", "tau"])
        gV, _ = householder_product_vjp(V, tau, rng.standard_normal(V.shape))
        assert np.all(np.triu(gV) == 0)                # only the strictly lower part is read


@pytest.mark.torch
def test_householder_vs_torch(rng):
    torch = pytest.importorskip("torch")
    V, tau = _hh(rng, (2, 7, 4))
    G = rng.standard_normal(V.shape)
    tV = torch.tensor(V, requires_grad=True)
    tt = torch.tensor(tau, requires_grad=True)
    tQ = torch.linalg.householder_product(tV, tt)
    tQ.backward(torch.from_numpy(G))
    np.testing.assert_allclose(householder_product(V, tau), tQ.detach().numpy(), atol=1e-13)
    gV, gt = householder_product_vjp(V, tau, G)
    np.testing.assert_allclose(gV, tV.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(gt, tt.grad.numpy(), atol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# Errors.

def test_rank_deficiency_names_the_column(rng):
    A = _draw(rng, (8, 5))
    A[:, 3] = A[:, 0] - 2 * A[:, 1]                 # column 3 in the span of columns 0, 1
    for method in GS_METHODS:
        with pytest.raises(ValueError, match="column 3"):
            gram_schmidt(A, method=method)
    with pytest.raises(ValueError, match=r"column 3"):
        qr_orthogonalize_vjp(A, rng.standard_normal(A.shape))
    assert _gram_err(qr_orthogonalize(A)) <= 1e-12  # Householder's forward pass does not raise
    B = np.stack([_draw(rng, (6, 4)), A[:6, :4]])
    B[1, :, 2] = 0.0
    with pytest.raises(ValueError, match=r"column 2 \(batch index \(1,\)\)"):
        gram_schmidt(B)


def test_polar_singular_raises(rng):
    for shape in [(5, 5), (7, 4), (4, 7)]:
        A = _draw(rng, shape)
        U, s, Vh = np.linalg.svd(A, full_matrices=False)
        s[-1] = 1e-18
        A = (U * s) @ Vh
        with pytest.raises(ValueError, match="σ_min"):
            polar(A)
        with pytest.raises(ValueError, match="σ_min"):
            polar_vjp(A, np.ones(shape))


@pytest.mark.parametrize("f", [gram_schmidt, qr_orthogonalize, polar])
def test_bad_input(f):
    with pytest.raises(ValueError, match="A must have at least 2 dimensions"):
        f(np.ones(4))
    with pytest.raises(TypeError, match="A must be a float32 or float64 array"):
        f(np.ones((4, 3), dtype=np.int64))
    with pytest.raises(TypeError, match="A must be"):
        f([[1.0, 0.0], [0.0, 1.0]])
    bad = np.eye(4)[:, :3].copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="A must be finite"):
        f(bad)
    with pytest.raises(ValueError, match="empty"):
        f(np.ones((0, 3)))


def test_bad_arguments(rng):
    A = _draw(rng, (6, 4))
    with pytest.raises(ValueError, match="method must be one of"):
        gram_schmidt(A, method="householder")
    with pytest.raises(ValueError, match="A must be tall"):
        gram_schmidt(A.T)
    with pytest.raises(ValueError, match="grad_out must have shape"):
        polar_vjp(A, np.ones((4, 6)))
    with pytest.raises(ValueError, match="grad_out must be finite"):
        qr_orthogonalize_vjp(A, np.full(A.shape, np.inf))
    V, tau = _hh(rng, (6, 4))
    with pytest.raises(ValueError, match="tau must have shape"):
        householder_product(V, np.ones(5))
    with pytest.raises(TypeError, match="tau must have V's dtype"):
        householder_product(V, tau.astype(np.float32))
    with pytest.raises(ValueError, match="V must be tall"):
        householder_product(V.T.copy(), tau[:2])


# ---------------------------------------------------------------------------------------------------------
# The κ table and float32.

def test_gram_schmidt_table_scaling():
    rows = gram_schmidt_table()
    assert [r["kappa"] for r in rows] == [1e2, 1e4, 1e6, 1e8, 1e10, 1e12]
    for r in rows:
        kappa = r["kappa"]
        assert r["mgs"] <= 1e3 * kappa * U64                  # MGS ~ κu
        assert r["cgs2"] <= 1e2 * U64 and r["qr"] <= 1e2 * U64  # CGS2, Householder ~ u
        if kappa ** 2 * U64 < 1e-2:
            assert r["cgs"] <= 1e3 * kappa ** 2 * U64         # CGS ~ κ²u before it breaks down
        if kappa >= 1e4:
            assert r["cgs"] >= 10 * r["mgs"]                  # CGS clearly worse than MGS
            assert r["mgs"] >= 1e-3 * kappa * U64             # ... and MGS really does degrade with κ
    by = {r["kappa"]: r for r in rows}
    assert by[1e8]["cgs"] >= 1e-2 and by[1e12]["cgs"] >= 1.0  # CGS breaks down at κ ~ 1e8
    assert by[1e12]["mgs"] >= 1e3 * by[1e6]["mgs"]            # MGS: linear growth in κ


@pytest.mark.parametrize("name", ["qr", "polar", "gs_mgs", "gs_cgs2", "householder"])
def test_float32_stays_float32(name, rng):
    A64 = _draw(rng, (2, 9, 5))
    A = A64.astype(np.float32)
    G = rng.standard_normal(A.shape).astype(np.float32)
    if name == "householder":
        V, tau = _hh(rng, (9, 5))
        V, tau = V.astype(np.float32), tau.astype(np.float32)
        Q = householder_product(V, tau)
        gV, gt = householder_product_vjp(V, tau, G[0])
        assert Q.dtype == gV.dtype == gt.dtype == np.float32
        assert np.abs(Q - householder_product(V.astype(np.float64), tau.astype(np.float64))).max() <= 1e-5
        return
    f, fv = {"qr": (qr_orthogonalize, qr_orthogonalize_vjp), "polar": (polar, polar_vjp),
             "gs_mgs": (gram_schmidt, gram_schmidt_vjp),
             "gs_cgs2": (lambda X: gram_schmidt(X, "cgs2"), lambda X, g: gram_schmidt_vjp(X, g, "cgs2"))}[name]
    Q, gA = f(A), fv(A, G)
    assert Q.dtype == np.float32 and gA.dtype == np.float32
    np.testing.assert_allclose(Q, f(A64), atol=1e-5)
    np.testing.assert_allclose(gA, fv(A64, G.astype(np.float64)), atol=1e-4)
    assert _gram_err(Q) <= 1e-5
    # 2-D float32 goes through the SciPy (true float32 LAPACK) path
    assert f(A[0]).dtype == np.float32 and fv(A[0], G[0]).dtype == np.float32


@pytest.mark.torch
@pytest.mark.parametrize("fn", ["qr", "polar"])
def test_vs_torch_autograd(fn, rng):
    torch = pytest.importorskip("torch")
    from orthoref.oracle.torch_twins import torch_polar, torch_qr_orthogonalize
    for shape in [(6, 6), (9, 4), (3, 7), (2, 5, 3)]:
        A = _draw(rng, shape)
        G = rng.standard_normal(shape)
        tA = torch.tensor(A, requires_grad=True)
        (tQ,) = (torch_qr_orthogonalize if fn == "qr" else torch_polar)(tA)
        tQ.backward(torch.from_numpy(G))
        f, fv = (qr_orthogonalize, qr_orthogonalize_vjp) if fn == "qr" else (polar, polar_vjp)
        np.testing.assert_allclose(f(A), tQ.detach().numpy(), atol=1e-13)
        np.testing.assert_allclose(fv(A, G), tA.grad.numpy(), atol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# The polar decomposition: both factors, both sides (scipy.linalg.polar).

def _polar_p_cases():
    from orthoref.oracle.registry import get
    spec = get("polar_p")
    for dtype in (np.float64, np.float32):
        for sample in spec.sample(np.random.default_rng(18), dtype):
            yield pytest.param(sample, id=f"{np.dtype(dtype).name}-{sample.label}")


@pytest.mark.parametrize("sample", list(_polar_p_cases()))
def test_polar_factors_match_scipy_on_every_registered_sample(sample):
    """U and P against scipy.linalg.polar itself (per matrix of a batch), both sides."""
    (A,), side = sample.inputs, sample.kwargs["side"]
    Q, P = polar(A, side=side, return_p=True)
    assert Q.dtype == P.dtype == A.dtype and Q.shape == A.shape
    n, k = A.shape[-2:]
    assert P.shape == A.shape[:-2] + ((k, k) if side == "right" else (n, n))
    tol = 1e-5 if A.dtype == np.float32 else 1e-13
    for idx in np.ndindex(*A.shape[:-2]):
        u, p = scipy.linalg.polar(A[idx].astype(np.float64), side=side)
        np.testing.assert_allclose(Q[idx], u, atol=tol)
        np.testing.assert_allclose(P[idx], p, atol=tol * 4)
        np.testing.assert_array_equal(P[idx], P[idx].T)                     # exactly symmetric
        assert np.linalg.eigvalsh(P[idx].astype(np.float64)).min() >= -tol   # positive semi-definite
        np.testing.assert_allclose(Q[idx] @ P[idx] if side == "right" else P[idx] @ Q[idx], A[idx], atol=tol * 4)


def test_polar_default_is_unchanged_and_q_is_side_independent(rng):
    A = _draw(rng, (7, 4))
    Q = polar(A)
    assert isinstance(Q, np.ndarray)
    np.testing.assert_array_equal(Q, polar(A, side="left"))
    np.testing.assert_array_equal(Q, polar(A, return_p=True)[0])
    np.testing.assert_array_equal(polar_vjp(A, A), polar_vjp(A, A, side="left"))


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("shape", [(6, 6), (7, 4), (3, 6), (2, 5, 3)])
def test_polar_p_gradient(side, shape, rng):
    A = _draw(rng, shape)

    def apply(X):
        Q, P = polar(X, side=side, return_p=True)
        return (Q, P), lambda cts: (polar_vjp(X, tuple(cts), side=side, return_p=True),)
    check_backward(apply, (A,), rtol=1e-8, n_directions=4, elementwise=A.size <= 36, rng=1)


def test_polar_p_gradient_is_the_square_root_s(rng):
    """Closed form: for square A, P (right) = (AᵀA)^{1/2}; its derivative in direction D is the solution X of
    the Sylvester equation P X + X P = d(AᵀA) = DᵀA + AᵀD (scipy.linalg.solve_sylvester)."""
    A = _draw(rng, (5, 5))
    D = rng.standard_normal((5, 5))
    gP = rng.standard_normal((5, 5))
    _, P = polar(A, return_p=True)
    X = scipy.linalg.solve_sylvester(P, P, D.T @ A + A.T @ D)
    grad = polar_vjp(A, (np.zeros_like(A), gP), return_p=True)
    assert float((grad * D).sum()) == pytest.approx(float((gP * X).sum()), rel=1e-10)


def test_polar_p_at_any_scale(rng):
    A = _draw(rng, (6, 4))
    gQ, gP = rng.standard_normal((6, 4)), rng.standard_normal((4, 4))
    Q, P = polar(A, return_p=True)
    for e in (-1000, -300, 300, 1000):
        Qs, Ps = polar(np.ldexp(A, e), return_p=True)
        np.testing.assert_allclose(Qs, Q, atol=1e-14)
        np.testing.assert_allclose(np.ldexp(Ps, -e), P, rtol=1e-13, atol=1e-14)
        # the Q̄ part scales as 1/s, the P̄ part not at all
        g = polar_vjp(np.ldexp(A, e), (gQ, gP), return_p=True)
        ref = np.ldexp(polar_vjp(A, gQ), -e) + polar_vjp(A, (np.zeros_like(gQ), gP), return_p=True)
        np.testing.assert_allclose(g, ref, rtol=1e-12, atol=1e-14 * np.abs(ref).max())


@pytest.mark.torch
@pytest.mark.parametrize("side", ["right", "left"])
def test_polar_p_vs_torch_autograd(side, rng):
    torch = pytest.importorskip("torch")
    from orthoref.oracle.torch_twins import torch_polar
    for shape in [(6, 6), (9, 4), (3, 7), (2, 5, 3)]:
        A = _draw(rng, shape)
        tA = torch.tensor(A, requires_grad=True)
        tQ, tP = torch_polar(tA, side=side, return_p=True)
        gQ, gP = rng.standard_normal(tQ.shape), rng.standard_normal(tP.shape)
        torch.autograd.backward((tQ, tP), (torch.from_numpy(gQ), torch.from_numpy(gP)))
        Q, P = polar(A, side=side, return_p=True)
        np.testing.assert_allclose(P, tP.detach().numpy(), atol=1e-13)
        np.testing.assert_allclose(polar_vjp(A, (gQ, gP), side=side, return_p=True), tA.grad.numpy(), atol=1e-12)


def test_householder_stress_samples_are_orthogonal_reflectors():
    """The stress reflectors keep τ = 2/‖v‖² at every scale: H_1 ⋯ H_p stays orthogonal (LAPACK orgqr)."""
    from orthoref.oracle.registry import get
    for sample in get("householder_product").stress(np.random.default_rng(4), np.float64):
        V, tau = sample.inputs
        Q = householder_product(V, tau)
        if "tau near 0" in sample.label:
            np.testing.assert_allclose(Q, np.eye(*V.shape), atol=1e-5)       # H_i ≈ I
        elif "kappa" not in sample.label and "aspect" not in sample.label and "single" not in sample.label:
            assert orthogonality_error_2(Q) <= 1e-13, sample.label
