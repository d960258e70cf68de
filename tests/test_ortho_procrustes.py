"""orthoref.ortho.procrustes: the orthogonal Procrustes rotation and its scale against
scipy.linalg.orthogonal_procrustes itself, the optimality and the residual identity, gradients (finite
differences, the PyTorch twin), scale invariance, the docstring's worked example on orthogonal gradients."""
import doctest

import numpy as np
import pytest
import scipy.linalg

from orthoref.oracle import check_backward
from orthoref.oracle.registry import get
from orthoref.oracle.samples.decomp import procrustes_inputs
from orthoref.ortho import decomp, procrustes, procrustes_vjp


def _samples(dtype=np.float64):
    return get("procrustes").sample(np.random.default_rng(21), dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_scipy_on_every_registered_sample(dtype):
    for sample in _samples(dtype):
        A, B = sample.inputs
        R, scale = procrustes(A, B)
        assert R.dtype == np.asarray(scale).dtype == dtype
        tol = 1e-5 if dtype == np.float32 else 1e-13
        for idx in np.ndindex(*A.shape[:-2]):
            R0, s0 = scipy.linalg.orthogonal_procrustes(A[idx].astype(np.float64), B[idx].astype(np.float64))
            np.testing.assert_allclose(R[idx], R0, atol=tol)
            assert float(np.asarray(scale)[idx]) == pytest.approx(s0, rel=tol)


def test_2d_scale_is_a_numpy_scalar_like_scipys(rng):
    A, B = procrustes_inputs(rng, (6, 3))
    _, scale = procrustes(A, B)
    _, s0 = scipy.linalg.orthogonal_procrustes(A, B)
    assert type(scale) is type(s0) is np.float64


def test_optimal_and_the_residual_identity(rng):
    """No random orthogonal R beats it, and ‖AR − B‖² = ‖A‖² + ‖B‖² − 2·scale."""
    A, B = procrustes_inputs(rng, (10, 4), noise=1.0)
    R, scale = procrustes(A, B)
    best = np.linalg.norm(A @ R - B)
    assert best ** 2 == pytest.approx((A ** 2).sum() + (B ** 2).sum() - 2 * scale, rel=1e-12)
    for _ in range(200):
        Q = np.linalg.qr(rng.standard_normal((4, 4)))[0]
        assert np.linalg.norm(A @ Q - B) >= best - 1e-12
    assert np.abs(R.T @ R - np.eye(4)).max() <= 1e-14


def test_is_the_polar_factor_of_atb(rng):
    A, B = procrustes_inputs(rng, (2, 7, 3))
    R, scale = procrustes(A, B)
    M = np.swapaxes(A, -1, -2) @ B
    np.testing.assert_allclose(R, decomp.polar(M), atol=1e-14)
    np.testing.assert_allclose(scale, np.linalg.svd(M, compute_uv=False).sum(-1), rtol=1e-13)


def test_recovers_a_rotation_exactly(rng):
    A = rng.standard_normal((20, 5))
    Q = np.linalg.qr(rng.standard_normal((5, 5)))[0]
    R, scale = procrustes(A, A @ Q)
    np.testing.assert_allclose(R, Q, atol=1e-13)
    assert scale == pytest.approx((A ** 2).sum(), rel=1e-13)       # zero residual


def _apply(A, B):
    R, scale = procrustes(A, B)
    return (R, np.asarray(scale)), lambda cts: procrustes_vjp(A, B, cts[0], grad_scale=cts[1])


@pytest.mark.parametrize("shape", [(6, 3), (4, 4), (2, 5, 3)])
def test_gradient_finite_differences(shape, rng):
    A, B = procrustes_inputs(rng, shape)
    check_backward(_apply, (A, B), rtol=1e-8, n_directions=4, elementwise=A.size <= 18, rng=2)


def test_scale_gradient_is_the_nuclear_norm_gradient(rng):
    """d scale = ⟨R, d(AᵀB)⟩: grad_A = g·B Rᵀ, grad_B = g·A R (closed form), and grad_scale=None leaves it out."""
    A, B = procrustes_inputs(rng, (7, 3))
    R, _ = procrustes(A, B)
    zero = np.zeros((3, 3))
    gA, gB = procrustes_vjp(A, B, zero, grad_scale=0.5)
    np.testing.assert_allclose(gA, 0.5 * B @ R.T, rtol=1e-13)
    np.testing.assert_allclose(gB, 0.5 * A @ R, rtol=1e-13)
    G = rng.standard_normal((3, 3))
    both = procrustes_vjp(A, B, G, grad_scale=np.asarray(0.5))
    only_r = procrustes_vjp(A, B, G)
    for x, y, z in zip(both, only_r, (gA, gB)):
        np.testing.assert_allclose(x, y + z, rtol=1e-12, atol=1e-14)


@pytest.mark.torch
def test_gradient_vs_torch(rng):
    torch = pytest.importorskip("torch")
    from orthoref.oracle.torch_twins import torch_procrustes
    for shape in [(6, 3), (2, 5, 3)]:
        A, B = procrustes_inputs(rng, shape)
        tA, tB = torch.tensor(A, requires_grad=True), torch.tensor(B, requires_grad=True)
        tR, ts = torch_procrustes(tA, tB)
        gR, gs = rng.standard_normal(tR.shape), rng.standard_normal(ts.shape)
        torch.autograd.backward((tR, ts), (torch.from_numpy(gR), torch.from_numpy(np.asarray(gs))))
        gA, gB = procrustes_vjp(A, B, gR, grad_scale=np.asarray(gs) if shape[:-2] else float(gs))
        np.testing.assert_allclose(gA, tA.grad.numpy(), atol=1e-12)
        np.testing.assert_allclose(gB, tB.grad.numpy(), atol=1e-12)


def test_any_scale_of_either_input(rng):
    A, B = procrustes_inputs(rng, (6, 3))
    R, scale = procrustes(A, B)
    G = rng.standard_normal((3, 3))
    gA, gB = procrustes_vjp(A, B, G)
    for a, b in ((-600, 0), (0, 600), (500, -500), (-1000, 0), (1000, -1000)):
        As, Bs = np.ldexp(A, a), np.ldexp(B, b)
        Rs, ss = procrustes(As, Bs)
        np.testing.assert_allclose(Rs, R, atol=1e-13)
        assert np.ldexp(ss, -(a + b)) == pytest.approx(scale, rel=1e-12)
        gAs, gBs = procrustes_vjp(As, Bs, G)          # R's gradient scales as 1/scale of its own input
        np.testing.assert_allclose(np.ldexp(gAs, a), gA, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(np.ldexp(gBs, b), gB, rtol=1e-10, atol=1e-13)


def test_docstring_example_runs():
    """The 'orthogonal gradients' section of the docstring: a worked example that must hold."""
    finder = doctest.DocTestFinder()
    tests = finder.find(procrustes, "procrustes", globs={})
    assert tests and tests[0].examples
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for t in tests:
        runner.run(t)
    assert runner.failures == 0 and runner.tries >= 8


def test_orthogonal_gradients_what_an_orthogonal_map_can_do(rng):
    """Q G_in = G_out exactly iff the Gram matrices agree; else the Procrustes Q leaves a residual that no
    orthogonal matrix removes, and it preserves every norm and inner product of G_in."""
    d, p = 4, 6                                                    # at least as many pairs as dimensions
    G_in = rng.standard_normal((d, p))
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    R, _ = procrustes(G_in.T, (Q @ G_in).T)
    np.testing.assert_allclose(R.T @ G_in, Q @ G_in, atol=1e-13)
    G_out = Q @ G_in + 0.3 * rng.standard_normal((d, p))          # Gram matrices differ
    R, scale = procrustes(G_in.T, G_out.T)
    mapped = R.T @ G_in
    np.testing.assert_allclose(mapped.T @ mapped, G_in.T @ G_in, atol=1e-12)
    assert np.linalg.norm(mapped - G_out) > 0.1
    with pytest.raises(ValueError, match="AᵀB is numerically singular"):
        procrustes(G_in[:, :3].T, G_out[:, :3].T)                 # 3 pairs in R⁴: Q is not unique
