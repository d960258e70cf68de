"""pytest-benchmark micro-benchmarks: soft orthogonality (value + gradient), Newton–Schulz, the polar
factor and orthogonal initialization, each checked for the property it promises.

Normal runs execute each body once (``--benchmark-disable`` in pyproject's ``addopts``); for numbers:
``pytest tests/bench --benchmark-enable --benchmark-autosave --benchmark-group-by=group``.
"""
import numpy as np
import pytest

from orthoref import init, ortho, regularizers

N = 512


def _conditioned(n, cond, dtype, seed=0):
    """``U diag(geomspace(1, 1/cond)) Vᵀ`` with Haar ``U``, ``V`` (float64 construction)."""
    gen = np.random.default_rng(seed)
    U = np.linalg.qr(gen.standard_normal((n, n)))[0]
    V = np.linalg.qr(gen.standard_normal((n, n)))[0]
    return ((U * np.geomspace(1.0, 1.0 / cond, n)) @ V.T).astype(dtype)


@pytest.mark.benchmark(group="regularizers")
def test_soft_orthogonality_value_and_grad(benchmark):
    """``soft_orthogonality(W)``, W (1024, 512) float64: the value is ‖MᵀM − I‖²_F and the gradient
    matches a central difference along a random direction."""
    gen = np.random.default_rng(2)
    W = gen.standard_normal((1024, 512)) / np.sqrt(1024)
    value, grad = benchmark(regularizers.soft_orthogonality, W)
    G = W.T @ W - np.eye(512)
    assert float(value) == pytest.approx(float(np.vdot(G, G)), rel=1e-12)
    V = gen.standard_normal(W.shape)
    h = 1e-6
    fd = (float(regularizers.soft_orthogonality(W + h * V)[0])
          - float(regularizers.soft_orthogonality(W - h * V)[0])) / (2 * h)
    assert float(np.vdot(grad, V)) == pytest.approx(fd, rel=1e-6)


@pytest.mark.benchmark(group="ortho")
def test_newton_schulz(benchmark):
    """Muon's 5 quintic steps on a 512² float32 matrix with condition number 10: every singular value of
    the result lands in the quintic's band around 1, and the singular vectors are the input's."""
    A = _conditioned(N, 10.0, np.float32)
    Q = benchmark(ortho.newton_schulz, A)
    assert Q.dtype == np.float32 and Q.shape == A.shape
    s = np.linalg.svd(Q.astype(np.float64), compute_uv=False)
    assert 0.6 < s.min() and s.max() < 1.25, (s.min(), s.max())
    H = Q.astype(np.float64).T @ A.astype(np.float64)      # = V f(Σ) Σ Vᵀ: symmetric positive definite
    assert np.abs(H - H.T).max() <= 1e-4 * np.abs(H).max()


@pytest.mark.benchmark(group="ortho")
def test_polar(benchmark):
    """``polar(A) = U Vᵀ`` of a 512² float32 Gaussian: orthogonal to float32 rounding, and ``QᵀA`` is the
    symmetric positive semi-definite factor."""
    A = (np.random.default_rng(3).standard_normal((N, N)) / np.sqrt(N)).astype(np.float32)
    Q = benchmark(ortho.polar, A)
    assert Q.dtype == np.float32
    assert ortho.orthogonality_error(Q) < 1e-4
    H = Q.astype(np.float64).T @ A.astype(np.float64)
    assert np.abs(H - H.T).max() <= 1e-4 * np.abs(H).max()
    assert np.linalg.eigvalsh((H + H.T) / 2).min() > -1e-4


@pytest.mark.benchmark(group="init")
def test_orthogonal_init(benchmark):
    """``init.orthogonal((512, 1024))`` float32: orthonormal rows (QR of a Gaussian with the sign fix)."""
    Q = benchmark(init.orthogonal, (N, 2 * N), rng=0, dtype=np.float32)
    assert Q.shape == (N, 2 * N) and Q.dtype == np.float32
    np.testing.assert_allclose(Q.astype(np.float64) @ Q.T.astype(np.float64), np.eye(N), atol=1e-5)
