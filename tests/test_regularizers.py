"""orthoref.regularizers: values against direct formulas, the Gram choice, the published-code relations
(BigGAN's factor 2, the VITA-Group SRIP loop, the OCNN code), zero penalty at orthogonality, bad input and
dtypes. The finite-difference and PyTorch checks of every sample run in tests/test_registry.py."""
import numpy as np
import pytest

from orthoref import regularizers as R
from orthoref.oracle.registry import all_specs

F64 = np.float64


def _M(W):
    return W.reshape(W.shape[0], -1)


def _orthonormal(rng, n, k):
    """(n, k) with orthonormal columns (n >= k)."""
    q, _ = np.linalg.qr(rng.standard_normal((n, k)))
    return q


# ---------------------------------------------------------------------------------------------------------
# Values against direct formulas; the Gram choice.

@pytest.mark.parametrize("shape", [(3, 7), (7, 3), (5, 5), (4, 2, 3, 3), (20, 2, 1, 1)])
def test_soft_orthogonality_value_and_gram_choice(rng, shape):
    W = rng.standard_normal(shape)
    M = _M(W)
    out, n = M.shape
    rows = sum((M[i] @ M[j] - (i == j)) ** 2 for i in range(out) for j in range(out))
    cols = np.linalg.norm(M.T @ M - np.eye(n)) ** 2
    v_rows, g_rows = R.soft_orthogonality(W, 0.3, gram="rows")
    v_cols, g_cols = R.soft_orthogonality(W, 0.3, gram="cols")
    v_auto, g_auto = R.soft_orthogonality(W, 0.3)
    np.testing.assert_allclose(v_rows, 0.3 * rows, rtol=1e-12)
    np.testing.assert_allclose(v_cols, 0.3 * cols, rtol=1e-12)
    np.testing.assert_allclose(v_auto, 0.3 * (rows if out <= n else cols), rtol=1e-12)
    # The Gram matrices differ by |out - in| zero eigenvalues: same gradient, values offset by λ(out - in).
    np.testing.assert_allclose(v_rows - v_cols, 0.3 * (out - n), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(g_rows, g_cols, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g_auto, g_rows, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g_rows, (4 * 0.3 * (M @ M.T - np.eye(out)) @ M).reshape(shape), rtol=1e-12)


@pytest.mark.parametrize("shape", [(3, 7), (7, 3), (5, 5), (4, 2, 3, 3)])
def test_double_soft_orthogonality_is_twice_so_plus_constant(rng, shape):
    W = rng.standard_normal(shape)
    M = _M(W)
    direct = (np.linalg.norm(M.T @ M - np.eye(M.shape[1])) ** 2 + np.linalg.norm(M @ M.T - np.eye(M.shape[0])) ** 2)
    v, g = R.double_soft_orthogonality(W, 0.5)
    np.testing.assert_allclose(v, 0.5 * direct, rtol=1e-12)
    v_so, g_so = R.soft_orthogonality(W, 0.5)
    np.testing.assert_allclose(v, 2 * v_so + 0.5 * abs(M.shape[0] - M.shape[1]), rtol=1e-12)
    np.testing.assert_allclose(g, 2 * g_so, rtol=1e-12)
    exact = 4 * 0.5 * (M @ (M.T @ M - np.eye(M.shape[1])) + (M @ M.T - np.eye(M.shape[0])) @ M)
    np.testing.assert_allclose(g, exact.reshape(shape), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("gram", ["auto", "rows", "cols"])
def test_mutual_coherence_and_l1_values(rng, gram):
    W = rng.standard_normal((4, 6))
    M = W
    G = M @ M.T if gram in ("auto", "rows") else M.T @ M
    N = G - np.eye(len(G))
    v, _ = R.mutual_coherence(W, 2.0, gram=gram)
    np.testing.assert_allclose(v, 2.0 * np.abs(N).max(), rtol=1e-12)
    v, g = R.l1_orthogonality(W, 2.0, gram=gram)
    np.testing.assert_allclose(v, 2.0 * np.abs(N).sum(), rtol=1e-12)
    S = np.sign(N)
    np.testing.assert_allclose(g, 4.0 * (S @ M if gram != "cols" else M @ S), rtol=1e-12)


def test_mutual_coherence_tie_rule():
    """Ties: the first arg-max in row-major order of the upper triangle; both symmetric entries count."""
    M = np.array([[1.0, 0.0, 0.5],
                  [0.0, 1.0, 0.5],
                  [0.5, 0.5, 0.0]])      # rows: m0·m2 = m1·m2 = 0.5, diagonals 1.25-1, 1.25-1, 0.5-1 = -0.5
    N = M @ M.T - np.eye(3)
    assert np.isclose(np.abs(N).max(), 0.5) and np.isclose(abs(N[2, 2]), 0.5)
    v, g = R.mutual_coherence(M, 1.0, gram="rows")
    expected = np.zeros_like(M)
    expected[0] += M[2]                   # first arg-max of triu(|N|) in row-major order: (0, 2)
    expected[2] += M[0]
    assert float(v) == pytest.approx(0.5)
    np.testing.assert_array_equal(g, expected)


def test_mutual_coherence_diagonal_argmax():
    W = np.diag([2.0, 1.2, 0.9]) + 0.01 * np.arange(9).reshape(3, 3)
    v, g = R.mutual_coherence(W, 1.0, gram="rows")
    N = W @ W.T - np.eye(3)
    assert np.unravel_index(np.argmax(np.abs(N)), N.shape) == (0, 0)
    expected = np.zeros_like(W)
    expected[0] = 2 * np.sign(N[0, 0]) * W[0]
    np.testing.assert_allclose(g, expected, rtol=1e-14)


def test_l1_sign_of_zero_is_zero():
    W = np.eye(4)
    v, g = R.l1_orthogonality(W)
    assert float(v) == 0.0 and not g.any()


def test_kernel_slice_orthogonality_loops(rng):
    W = rng.standard_normal((2, 3, 4, 3))
    expected = 0.0
    grad = np.zeros_like(W)
    for n in range(2):
        for c in range(3):
            S = W[n, c]
            O = S @ S.T * (1 - np.eye(4))
            expected += (O ** 2).sum()
            grad[n, c] = 4 * 0.2 * O @ S
    v, g = R.kernel_slice_orthogonality(W, 0.2)
    np.testing.assert_allclose(v, 0.2 * expected, rtol=1e-12)
    np.testing.assert_allclose(g, grad, rtol=1e-12)
    v_default, _ = R.kernel_slice_orthogonality(W)
    np.testing.assert_allclose(v_default, 1e-4 * expected, rtol=1e-12)


@pytest.mark.parametrize("shape", [(3, 7), (7, 3), (4, 2, 3, 3)])
def test_spectral_penalty_vs_svd(rng, shape):
    W = rng.standard_normal(shape)
    M = _M(W)
    U, s, Vt = np.linalg.svd(M)
    v, g = R.spectral_penalty(W, 0.6)
    np.testing.assert_allclose(v, 0.3 * np.linalg.norm(M, 2) ** 2, rtol=1e-12)
    np.testing.assert_allclose(g, (0.6 * s[0] * np.outer(U[:, 0], Vt[0])).reshape(shape), rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# Published code: BigGAN, VITA-Group SRIP, OCNN.

def test_biggan_update_is_half_the_exact_gradient(rng):
    """BigGAN's utils.ortho adds strength · 2 ((WWᵀ) ⊙ (1 - I)) W to param.grad: half our gradient."""
    W = rng.standard_normal((6, 2, 3, 3))
    strength = 1e-4
    w = W.reshape(6, -1)
    biggan = strength * (2 * (w @ w.T * (1.0 - np.eye(6))) @ w)
    _, g = R.off_diagonal(W, strength)
    np.testing.assert_allclose(biggan.reshape(W.shape), 0.5 * g, rtol=1e-12)
    _, g_half = R.off_diagonal(W, strength / 2)              # the documented way to reproduce it
    np.testing.assert_allclose(biggan.reshape(W.shape), g_half, rtol=1e-12)


def _vita_l2_reg_ortho(W, b_k, n_iter):
    """The VITA-Group loss (Wide-Resnet/train_n.py), on the CPU, with the start vector given."""
    import torch
    cols = W[0].numel()
    rows = W.shape[0]
    w1 = W.view(-1, cols)
    wt = torch.transpose(w1, 0, 1)
    if rows > cols:
        m = torch.matmul(wt, w1)
        ident = torch.eye(cols, cols, dtype=W.dtype)
    else:
        m = torch.matmul(w1, wt)
        ident = torch.eye(rows, rows, dtype=W.dtype)
    w_tmp = m - ident
    v2 = b_k
    for _ in range(n_iter):
        v1 = torch.matmul(w_tmp, v2)
        norm1 = torch.norm(v1, 2)
        v2 = torch.div(v1, norm1)
    v3 = torch.matmul(w_tmp, v2)
    return torch.norm(v3, 2) ** 2


@pytest.mark.torch
@pytest.mark.parametrize("shape", [(6, 10), (10, 6), (8, 2, 3, 3)])
@pytest.mark.parametrize("n_iter", [1, 2, 5])
def test_srip_power_matches_vita_autograd(rng, shape, n_iter):
    torch = pytest.importorskip("torch")
    W = rng.standard_normal(shape) * 0.4
    k = min(shape[0], int(np.prod(shape[1:])))
    b_k = rng.uniform(0, 1, (k, 1))
    Wt = torch.from_numpy(W.copy()).requires_grad_(True)
    loss = 0.3 * _vita_l2_reg_ortho(Wt, torch.from_numpy(b_k), n_iter)
    loss.backward()
    v, g = R.srip(W, 0.3, n_iter=n_iter, v0=b_k)
    np.testing.assert_allclose(v, loss.item(), rtol=1e-11)
    np.testing.assert_allclose(g, Wt.grad.numpy(), rtol=1e-9, atol=1e-11 * np.abs(g).max())
    v1, _ = R.srip(W, 0.3, n_iter=n_iter, v0=b_k.ravel())  # (k,) and (k, 1) are the same start
    assert float(v1) == pytest.approx(float(v), rel=1e-14)


def test_srip_rng_draws_uniform_start(rng):
    W = rng.standard_normal((5, 8))
    v0 = np.random.default_rng(7).uniform(0.0, 1.0, 5)
    a = R.srip(W, n_iter=2, rng=7)
    b = R.srip(W, n_iter=2, v0=v0)
    assert float(a[0]) == float(b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_srip_power_converges_to_exact(rng):
    W = rng.standard_normal((6, 9)) * 0.5
    N = W @ W.T - np.eye(6)
    sigma = np.linalg.svd(N, compute_uv=False)[0]
    v_exact, g_exact = R.srip(W, method="exact")
    np.testing.assert_allclose(v_exact, sigma ** 2, rtol=1e-12)
    v_pow, g_pow = R.srip(W, n_iter=300, rng=0)
    np.testing.assert_allclose(v_pow, v_exact, rtol=1e-8)
    np.testing.assert_allclose(g_pow, g_exact, rtol=1e-5, atol=1e-7 * np.abs(g_exact).max())


@pytest.mark.torch
@pytest.mark.parametrize("scale", [0.2, 1.5])      # 0.2: the dominant eigenvalue of G - I is negative
@pytest.mark.parametrize("shape", [(5, 7), (7, 5)])
def test_srip_exact_vs_svd_and_torch(rng, scale, shape):
    torch = pytest.importorskip("torch")
    W = rng.standard_normal(shape) * scale
    M = W
    G = M @ M.T if shape[0] <= shape[1] else M.T @ M
    N = G - np.eye(len(G))
    v, g = R.srip(W, 0.7, method="exact")
    np.testing.assert_allclose(v, 0.7 * np.linalg.svd(N, compute_uv=False)[0] ** 2, rtol=1e-12)
    Wt = torch.from_numpy(W.copy()).requires_grad_(True)
    Mt = Wt if shape[0] <= shape[1] else Wt.T
    loss = 0.7 * torch.linalg.matrix_norm(Mt @ Mt.T - torch.eye(len(G), dtype=Wt.dtype), ord=2) ** 2
    loss.backward()
    np.testing.assert_allclose(g, Wt.grad.numpy(), rtol=1e-9, atol=1e-12)


def _ocnn_public(kernel, stride=2, padding=1):
    """deconv_orth_dist of samaonline/Orthogonal-Convolutional-Neural-Networks, without .cuda()."""
    import torch
    o_c = kernel.shape[0]
    output = torch.conv2d(kernel, kernel, stride=stride, padding=padding)
    target = torch.zeros((o_c, o_c, output.shape[-2], output.shape[-1]), dtype=kernel.dtype)
    ct = int(np.floor(output.shape[-1] / 2))
    target[:, :, ct, ct] = torch.eye(o_c, dtype=kernel.dtype)
    return torch.norm(output - target)


@pytest.mark.torch
@pytest.mark.parametrize("shape", [(4, 3, 3, 3), (3, 5, 3, 3), (2, 2, 5, 5)])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv_orthogonality_vs_torch(rng, shape, stride):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    K = rng.standard_normal(shape) * 0.5
    k = shape[-1]
    P = (k - 1) // stride * stride
    Kt = torch.from_numpy(K.copy()).requires_grad_(True)
    Y = F.conv2d(Kt, Kt, stride=stride, padding=P)
    T = torch.zeros_like(Y)
    c = Y.shape[-1] // 2
    T[:, :, c, c] = torch.eye(shape[0], dtype=Kt.dtype)
    loss = 0.5 * ((Y - T) ** 2).sum()
    loss.backward()
    v, g = R.conv_orthogonality(K, 0.5, stride=stride)
    assert Y.shape[-1] == 2 * ((k - 1) // stride) + 1 and c * stride - P == 0    # centre = zero shift
    np.testing.assert_allclose(v, loss.item(), rtol=1e-12)
    np.testing.assert_allclose(g, Kt.grad.numpy(), rtol=1e-10, atol=1e-12)
    # The public code: padding 1, not squared.
    Kt.grad = None
    loss = _ocnn_public(Kt, stride=stride, padding=1)
    loss.backward()
    v, g = R.conv_orthogonality(K, stride=stride, padding=1, squared=False)
    np.testing.assert_allclose(v, loss.item(), rtol=1e-12)
    np.testing.assert_allclose(g, Kt.grad.numpy(), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# Self-Orthogonality Module.

def _som_direct(Y, lam1, lam2, gamma, eps):
    Z = np.tanh(gamma * Y)
    Zh = Z / np.sqrt((Z ** 2).sum(axis=0) + eps)
    k = Y.shape[1]
    T = np.array([[Zh[:, i] @ Zh[:, j] for j in range(k)] for i in range(k)])
    off = [T[i, j] for i in range(k) for j in range(k) if i != j]
    return lam1 * sum(off) ** 2 + lam2 * sum(t * t for t in off)


@pytest.mark.torch
def test_self_orthogonality_defaults_vs_direct_and_torch(rng):
    torch = pytest.importorskip("torch")
    Y = rng.standard_normal((16, 5)) * 0.2
    v, g = R.self_orthogonality(Y)
    np.testing.assert_allclose(v, _som_direct(Y, 100.0, 1.0, 10.0, 1e-8), rtol=1e-12)
    spec = [s for s in all_specs() if s.name == "self_orthogonality"][0]
    Yt = torch.from_numpy(Y.copy()).requires_grad_(True)
    (loss,) = spec.torch(Yt)
    loss.backward()
    np.testing.assert_allclose(v, loss.item(), rtol=1e-12)
    np.testing.assert_allclose(g, Yt.grad.numpy(), rtol=1e-10, atol=1e-12 * np.abs(g).max())


def test_self_orthogonality_conv_output_is_per_position(rng):
    Y = rng.standard_normal((2, 3, 4, 5))
    flat = Y.transpose(0, 2, 3, 1).reshape(-1, 3)
    v4, g4 = R.self_orthogonality(Y, gamma=2.0)
    v2, g2 = R.self_orthogonality(flat, gamma=2.0)
    np.testing.assert_allclose(v4, v2, rtol=1e-14)
    np.testing.assert_allclose(g4, g2.reshape(2, 4, 5, 3).transpose(0, 3, 1, 2), rtol=1e-14)
    assert g4.shape == Y.shape and g4.flags.c_contiguous


def test_self_orthogonality_dead_unit_is_finite(rng):
    Y = rng.standard_normal((8, 4))
    Y[:, 2] = 0.0                                      # a dead unit
    v, g = R.self_orthogonality(Y)
    assert np.isfinite(v) and np.isfinite(g).all()
    Y32 = np.zeros((8, 4), np.float32)                  # every unit dead
    v, g = R.self_orthogonality(Y32)
    assert float(v) == 0.0 and np.isfinite(g).all() and g.dtype == np.float32


# ---------------------------------------------------------------------------------------------------------
# Orthogonal weights: (near) zero penalty.

def test_orthogonal_weights_have_zero_penalty(rng):
    Q = _orthonormal(rng, 9, 4)                    # (9, 4), orthonormal columns
    tall, wide, square = Q, Q.T.copy(), _orthonormal(rng, 5, 5)
    for W in (tall, wide, square):
        assert float(R.soft_orthogonality(W)[0]) < 1e-28
        assert np.abs(R.soft_orthogonality(W)[1]).max() < 1e-14
        assert float(R.srip(W, method="exact")[0]) < 1e-28
        assert float(R.srip(W, rng=0)[0]) < 1e-28
        assert float(R.mutual_coherence(W)[0]) < 1e-14
    assert float(R.double_soft_orthogonality(square)[0]) < 1e-28
    # off_diagonal: orthogonal rows of any norms.
    assert float(R.off_diagonal(np.diag([1.0, 2.0, 3.0]) @ wide[:3])[0]) < 1e-28
    # kernel slices with orthogonal rows (of any norms).
    S = np.stack([np.diag([1.0, 2.0, 0.5]) @ _orthonormal(rng, 3, 3) for _ in range(6)]).reshape(2, 3, 3, 3)
    assert float(R.kernel_slice_orthogonality(S, 1.0)[0]) < 1e-28
    # OCNN: a delta-orthogonal kernel (one tap, orthonormal rows: out <= in) is an orthogonal convolution.
    for stride in (1, 2):
        K = np.zeros((3, 5, 3, 3))
        K[:, :, 1, 1] = _orthonormal(rng, 5, 3).T
        v, g = R.conv_orthogonality(K, stride=stride)
        assert float(v) < 1e-28 and np.abs(g).max() < 1e-14
        K2 = np.zeros((3, 5, 3, 3))
        K2[:, :, 0, 2] = _orthonormal(rng, 5, 3).T     # any single tap position
        assert float(R.conv_orthogonality(K2, stride=stride)[0]) < 1e-28


def test_srip_exactly_identity_gram_gives_zero_not_nan():
    v, g = R.srip(np.eye(4), rng=0)
    assert float(v) == 0.0 and not g.any()


# ---------------------------------------------------------------------------------------------------------
# Bad input, dtypes, registry.

ALL_WEIGHT_FUNCS = [R.soft_orthogonality, R.double_soft_orthogonality, R.mutual_coherence, R.srip,
                    R.off_diagonal, R.l1_orthogonality, R.spectral_penalty]
CONV_FUNCS = [R.kernel_slice_orthogonality, R.conv_orthogonality]


@pytest.mark.parametrize("fn", ALL_WEIGHT_FUNCS + CONV_FUNCS, ids=lambda f: f.__name__)
def test_bad_inputs(fn):
    good = np.ones((2, 3, 3, 3)) * 0.1
    with pytest.raises(ValueError, match=fn.__name__ + r".*(dimensions|4-D).*shape \(6,\)"):
        fn(np.ones(6))
    with pytest.raises(TypeError, match=fn.__name__ + r".*float32 or float64.*int64"):
        fn(np.ones((2, 3, 3, 3), dtype=np.int64))
    with pytest.raises(TypeError, match=fn.__name__ + r".*list"):
        fn([[1.0, 2.0]])
    for bad in (np.nan, np.inf, -np.inf):
        W = good.copy()
        W[1, 2, 0, 1] = bad
        with pytest.raises(ValueError, match=fn.__name__ + r".*finite.*NaN or Inf"):
            fn(W)
    with pytest.raises(ValueError, match=fn.__name__ + r".*weight.*>= 0.*-1.0"):
        fn(good, -1.0)
    with pytest.raises(ValueError, match=fn.__name__ + r".*weight"):
        fn(good, np.nan)
    with pytest.raises(TypeError, match=fn.__name__ + r".*weight.*real number"):
        fn(good, "1")


@pytest.mark.parametrize("fn", CONV_FUNCS, ids=lambda f: f.__name__)
def test_conv_penalties_refuse_matrices(fn):
    with pytest.raises(ValueError, match=fn.__name__ + r".*4-D.*2-D array of shape \(3, 4\)"):
        fn(np.ones((3, 4)))


@pytest.mark.parametrize("fn", [R.soft_orthogonality, R.mutual_coherence, R.l1_orthogonality, R.srip],
                         ids=lambda f: f.__name__)
def test_bad_gram(fn):
    with pytest.raises(ValueError, match=fn.__name__ + r".*gram must be one of 'auto', 'rows', 'cols', got 'row'"):
        fn(np.eye(3), gram="row")
    with pytest.raises(ValueError, match=fn.__name__ + r".*gram must be one of.*None"):
        fn(np.eye(3), gram=None)


def test_other_bad_arguments():
    W = np.eye(3) * 0.5
    with pytest.raises(ValueError, match=r"srip: n_iter must be an int >= 1 and <= 10000, got 0"):
        R.srip(W, n_iter=0)
    with pytest.raises(ValueError, match=r"srip: method must be one of 'power', 'exact', got"):
        R.srip(W, method="svd")
    with pytest.raises(ValueError, match=r"srip: v0 must be .* shape \(3,\) or \(3, 1\).*\(4,\)"):
        R.srip(W, v0=np.ones(4))
    with pytest.raises(ValueError, match=r"self_orthogonality: Y must be 2-D or 4-D, got 3-D"):
        R.self_orthogonality(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match=r"self_orthogonality: gamma must be a finite number > 0, got 0.0"):
        R.self_orthogonality(np.ones((2, 3)), gamma=0)
    with pytest.raises(ValueError, match=r"self_orthogonality: lam1 must be a finite number >= 0"):
        R.self_orthogonality(np.ones((2, 3)), lam1=-1)
    with pytest.raises(ValueError, match=r"conv_orthogonality: stride must be >= 1"):
        R.conv_orthogonality(np.ones((2, 2, 3, 3)), stride=0)
    with pytest.raises(TypeError, match=r"conv_orthogonality: squared must be True or False"):
        R.conv_orthogonality(np.ones((2, 2, 3, 3)), squared="yes")
    with pytest.raises(ValueError, match=r"soft_orthogonality: W must not be empty"):
        R.soft_orthogonality(np.ones((0, 3)))


CALLS = [(R.soft_orthogonality, (6, 4)), (R.double_soft_orthogonality, (4, 6)), (R.mutual_coherence, (5, 3)),
         (R.srip, (4, 6)), (R.off_diagonal, (3, 2, 2, 2)), (R.l1_orthogonality, (6, 4)),
         (R.kernel_slice_orthogonality, (2, 3, 3, 3)), (R.self_orthogonality, (8, 3)),
         (R.self_orthogonality, (2, 3, 2, 2)), (R.conv_orthogonality, (3, 2, 3, 3)),
         (R.spectral_penalty, (4, 6))]


@pytest.mark.parametrize("fn,shape", CALLS, ids=lambda x: getattr(x, "__name__", str(x)))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_in_dtype_out(rng, fn, shape, dtype):
    W = (0.5 * rng.standard_normal(shape)).astype(dtype)
    kw = {"rng": 0} if fn is R.srip else {}          # the same start vector for both precisions
    v, g = fn(W, **kw)
    assert isinstance(v, np.ndarray) and v.shape == () and v.dtype == dtype
    assert g.shape == W.shape and g.dtype == dtype
    if dtype == np.float32:
        v64, g64 = fn(W.astype(F64), **kw)
        np.testing.assert_allclose(v, v64, rtol=1e-4)
        np.testing.assert_allclose(g, g64, rtol=1e-3, atol=1e-4 * np.abs(g64).max())


def test_srip_exact_float32(rng):
    W = rng.standard_normal((4, 6)).astype(np.float32)
    v, g = R.srip(W, method="exact")
    assert v.dtype == np.float32 and g.dtype == np.float32


def test_every_regularizer_is_registered():
    names = {s.name for s in all_specs()}
    expected = set(R.REGULARIZERS) | {"srip_exact"}
    assert expected <= names
    assert set(R.REGULARIZERS) == {n for n in R.__all__ if n not in ("GRAMS", "REGULARIZERS", "PENALTIES")}
