"""orthoref.init: orthogonality to 1e-12, Haar distribution (KS tests with a negative control), PyTorch
conformance (same Gaussian, same gains, fans and statistics), exact isometry of the delta- and
block-orthogonal convolutions, LSUV, the named-initializer registry and input checks."""
import math

import numpy as np
import pytest
from scipy import stats

from orthoref import backend, init
from orthoref.nn import Conv2d, Linear, ReLU, Sequential
from orthoref.ops.conv import conv2d_forward

SHAPES = [(6, 6), (9, 4), (4, 9), (1, 7), (7, 1), (1, 1), (8, 3, 3, 3), (3, 8, 3, 3), (5, 2, 3), (2, 3, 4, 5)]


def _matrix(w, convention):
    return w.reshape(w.shape[0], -1) if convention == "pytorch" else w.reshape(-1, w.shape[-1])


def _gram_error(m, gain):
    """‖G - gain² I‖_max of the smaller Gram matrix of ``m``."""
    g = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    return np.abs(g - gain ** 2 * np.eye(g.shape[0])).max()


def _torch():
    return pytest.importorskip("torch")


# ---------------------------------------------------------------------------------------------------------
# Orthogonality.

@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("method", ["qr", "svd"])
@pytest.mark.parametrize("convention", ["pytorch", "tensorflow"])
def test_orthogonal_gram_is_gain_squared_identity(shape, method, convention):
    gain = 1.7
    w = init.orthogonal(shape, gain=gain, rng=3, dtype=np.float64, method=method, convention=convention)
    assert w.shape == shape and w.dtype == np.float64 and w.flags.c_contiguous
    assert _gram_error(_matrix(w, convention), gain) < 1e-12


@pytest.mark.parametrize("method", ["qr", "svd"])
def test_orthogonal_float32(method):
    w = init.orthogonal((64, 48), rng=0, method=method)
    assert w.dtype == np.float32
    assert _gram_error(w.astype(np.float64), 1.0) < 2e-5


def test_conventions_agree_in_2d_and_differ_for_kernels():
    a = init.orthogonal((5, 8), rng=1, dtype=np.float64, convention="pytorch")
    b = init.orthogonal((5, 8), rng=1, dtype=np.float64, convention="tensorflow")
    np.testing.assert_array_equal(a, b)
    # The docstring's example: TF kernel (kh, kw, in, out) has orthonormal columns = filters.
    k = init.orthogonal((3, 3, 16, 32), rng=2, dtype=np.float64, convention="tensorflow")
    filters = k.reshape(-1, 32)                       # 144 x 32, columns are the filters
    np.testing.assert_allclose(filters.T @ filters, np.eye(32), atol=1e-12)
    w = k.transpose(3, 2, 0, 1)                       # to PyTorch layout, rows = filters
    m = w.reshape(32, -1)
    np.testing.assert_allclose(m @ m.T, np.eye(32), atol=1e-12)


def test_orthogonal_is_orthogonalize_gaussian_of_the_draw():
    for shape in [(6, 4), (4, 6), (5, 5), (4, 2, 3, 3), (30, 2, 2, 2)]:
        rows, cols = shape[0], math.prod(shape[1:])
        # the documented draw: the wide orientation, row by row
        wide = rows < cols
        a = np.random.default_rng(7).standard_normal((min(rows, cols), max(rows, cols)))
        a = a if wide else a.T
        q = init.orthogonalize_gaussian(a, gain=0.5).reshape(shape)
        np.testing.assert_array_equal(q, init.orthogonal(shape, gain=0.5, rng=7, dtype=np.float64))
        a32 = np.random.default_rng(7).standard_normal((min(rows, cols), max(rows, cols)), dtype=np.float32)
        a32 = a32 if wide else a32.T
        np.testing.assert_array_equal(init.orthogonalize_gaussian(a32).reshape(shape),
                                      init.orthogonal(shape, rng=7))


def test_orthogonalize_gaussian_does_not_modify_input_and_matches_numpy_qr():
    a = np.random.default_rng(0).standard_normal((700, 300))       # more than one ?geqrt block
    a0 = a.copy()
    q = init.orthogonalize_gaussian(a)
    np.testing.assert_array_equal(a, a0)
    q2, r = np.linalg.qr(a)
    np.testing.assert_allclose(q, q2 * np.sign(np.diag(r)), atol=1e-12)
    np.testing.assert_allclose(init.orthogonalize_gaussian(a.T), (q2 * np.sign(np.diag(r))).T, atol=1e-12)
    u, _, vt = np.linalg.svd(a, full_matrices=False)
    np.testing.assert_allclose(init.orthogonalize_gaussian(a, method="svd"), u @ vt, atol=1e-12)


def test_sign_of_zero_is_plus_one():
    # r_11 = 0 exactly: PyTorch would zero the column, we keep it (sign(0) = +1).
    a = np.array([[0.0, 1.0], [0.0, 2.0], [0.0, 0.5]])
    q = init.orthogonalize_gaussian(np.c_[np.zeros(3), a[:, 1]].T)    # wide: transposed internally
    assert np.all(np.isfinite(q)) and np.abs(q).sum() > 0
    a = np.array([[1.0, 0.0], [0.0, 0.0]])                          # R = [[1, 0], [0, 0]]
    q = init.orthogonalize_gaussian(a)
    assert np.count_nonzero(np.abs(q).sum(axis=0)) == 2


@pytest.mark.torch
@pytest.mark.parametrize("shape", [(5, 5), (7, 3), (3, 7), (1, 5), (5, 1), (8, 3, 3, 3), (4, 2, 5)], ids=str)
def test_orthogonalize_gaussian_equals_torch(shape):
    torch = _torch()
    rows, cols = shape[0], math.prod(shape[1:])
    seed, gain = 11, 1.3
    torch.manual_seed(seed)
    t = torch.empty(shape, dtype=torch.float64)
    torch.nn.init.orthogonal_(t, gain=gain)
    torch.manual_seed(seed)                            # orthogonal_ draws new_empty((rows, cols)).normal_(0, 1)
    a = torch.empty(rows, cols, dtype=torch.float64).normal_(0, 1).numpy()
    q = init.orthogonalize_gaussian(a, gain=gain).reshape(shape)
    np.testing.assert_allclose(q, t.numpy(), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# Distribution: Haar on O(n) and SO(n), against scipy.stats, with a test that is known to be able to fail.

N_DRAWS, DIM = 2000, 3


def _stats(mats):
    mats = np.asarray(mats)
    return mats[:, 0, 0], np.trace(mats, axis1=1, axis2=2)


def _ks(ours, ref):
    return [stats.ks_2samp(a, b).pvalue for a, b in zip(_stats(ours), _stats(ref))]


@pytest.fixture(scope="module")
def ortho_reference():
    return stats.ortho_group.rvs(DIM, size=N_DRAWS, random_state=np.random.default_rng(101))


@pytest.mark.parametrize("method", ["qr", "svd"])
def test_orthogonal_is_haar_on_O_n(method, ortho_reference):
    gen = np.random.default_rng(202)
    ours = [init.orthogonal((DIM, DIM), rng=gen, dtype=np.float64, method=method) for _ in range(N_DRAWS)]
    assert min(_ks(ours, ortho_reference)) > 0.01


def test_ks_rejects_qr_without_sign_fix(ortho_reference):
    gen = np.random.default_rng(202)
    raw = [np.linalg.qr(gen.standard_normal((DIM, DIM)))[0] for _ in range(N_DRAWS)]
    assert _ks(raw, ortho_reference)[0] < 0.01        # Q[0,0] of LAPACK's raw Q is always <= 0


def test_special_orthogonal_is_haar_on_SO_n():
    ref = stats.special_ortho_group.rvs(DIM, size=N_DRAWS, random_state=np.random.default_rng(303))
    gen = np.random.default_rng(404)
    ours = np.array([init.special_orthogonal((DIM, DIM), rng=gen, dtype=np.float64) for _ in range(N_DRAWS)])
    np.testing.assert_allclose(np.linalg.det(ours), 1.0, atol=1e-12)
    assert min(_ks(ours, ref)) > 0.01
    # negative control: Haar on O(n) (half the draws have det -1) is rejected by the trace test
    gen = np.random.default_rng(404)
    o_n = [init.orthogonal((DIM, DIM), rng=gen, dtype=np.float64) for _ in range(N_DRAWS)]
    assert _ks(o_n, ref)[1] < 0.01


def test_special_orthogonal_gain_and_errors():
    w = init.special_orthogonal((5, 5), gain=2.0, rng=0, dtype=np.float64)
    np.testing.assert_allclose(w.T @ w, 4 * np.eye(5), atol=1e-12)
    assert np.linalg.det(w / 2) == pytest.approx(1.0, abs=1e-12)
    for bad in [(3, 4), (2, 2, 2), (4,)]:
        with pytest.raises(ValueError):
            init.special_orthogonal(bad)


# ---------------------------------------------------------------------------------------------------------
# Convolution kernels: exact isometries.

def _conv(x, w, padding):
    return conv2d_forward(x, w, None, padding=padding)[0]


def _circular_conv(x, w):
    k = w.shape[-1]
    p = ((0, 0), (0, 0), (k // 2, (k - 1) - k // 2), (k // 2, (k - 1) - k // 2))
    return _conv(np.pad(x, p, mode="wrap"), w, 0)


def _operator_singular_values(w, n):
    """Singular values of the circular convolution on n x n inputs: union over frequencies of those of
    K̂(u, v) = Σ_ij W[:, :, i, j] e^{-2πi(ui + vj)/n}."""
    khat = np.fft.fft2(w, s=(n, n), axes=(2, 3)).transpose(2, 3, 0, 1)      # (n, n, out, in)
    return np.linalg.svd(khat, compute_uv=False).ravel()


@pytest.mark.parametrize("shape", [(4, 4, 3, 3), (6, 2, 3, 3), (5, 3, 1, 1), (4, 3, 2, 2), (3, 3, 4, 4),
                                   (8, 8, 5, 5)], ids=str)
def test_block_orthogonal_operator_singular_values_equal_gain(shape):
    gain = 1.3
    w = init.block_orthogonal_conv(shape, gain=gain, rng=5, dtype=np.float64)
    assert w.shape == shape
    for n in (shape[-1], 8, 11):
        sv = _operator_singular_values(w, n)
        assert sv.size == n * n * shape[1]
        np.testing.assert_allclose(sv, gain, rtol=0, atol=1e-10)


def test_fft_singular_values_match_the_dense_operator():
    """The frequency formula is right for our convolution: build the dense operator from conv2d_forward."""
    w = init.block_orthogonal_conv((3, 2, 3, 3), gain=0.7, rng=1, dtype=np.float64)
    n = 5
    basis = np.eye(2 * n * n).reshape(-1, 2, n, n)
    dense = np.ascontiguousarray(_circular_conv(basis, w)).reshape(len(basis), -1).T     # (3 n², 2 n²)
    sv_dense = np.linalg.svd(dense, compute_uv=False)
    np.testing.assert_allclose(np.sort(sv_dense), np.sort(_operator_singular_values(w, n)), atol=1e-12)
    np.testing.assert_allclose(sv_dense, 0.7, atol=1e-10)
    # and a random (non-orthogonal) kernel, so the agreement is not the trivial all-equal case
    r = np.random.default_rng(0).standard_normal((3, 2, 3, 3))
    dense = np.ascontiguousarray(_circular_conv(basis, r)).reshape(len(basis), -1).T
    np.testing.assert_allclose(np.sort(np.linalg.svd(dense, compute_uv=False)),
                               np.sort(_operator_singular_values(r, n)), atol=1e-10)


@pytest.mark.parametrize("shape", [(8, 4, 3, 3), (6, 6, 4, 4)], ids=str)
def test_block_orthogonal_preserves_norm_under_circular_padding(shape):
    gain = 2.0
    w = init.block_orthogonal_conv(shape, gain=gain, rng=9, dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((4, shape[1], 10, 10))
    y = _circular_conv(x, w)
    assert y.shape == (4, shape[0], 10, 10)
    np.testing.assert_allclose(np.linalg.norm(y.reshape(4, -1), axis=1),
                               gain * np.linalg.norm(x.reshape(4, -1), axis=1), rtol=1e-12)
    # the layer, on a wrapped input
    k = shape[-1]
    layer = Conv2d(shape[1], shape[0], k, bias=False, dtype=np.float64)
    layer.weight.data = w
    p = ((0, 0), (0, 0), (k // 2, k - 1 - k // 2), (k // 2, k - 1 - k // 2))
    y2 = layer(np.pad(x, p, mode="wrap"))
    np.testing.assert_allclose(y2, y, atol=1e-13)


def test_block_orthogonal_errors():
    with pytest.raises(ValueError, match="in_channels"):
        init.block_orthogonal_conv((2, 4, 3, 3))
    with pytest.raises(ValueError, match="square"):
        init.block_orthogonal_conv((4, 2, 3, 5))
    with pytest.raises(ValueError):
        init.block_orthogonal_conv((4, 2, 3))


@pytest.mark.parametrize("shape", [(8, 4, 3, 3), (5, 5, 5, 5), (6, 3, 1, 1), (4, 2, 3, 5)], ids=str)
def test_delta_orthogonal_structure_and_same_padding_isometry(shape):
    gain = 1.5
    w = init.delta_orthogonal(shape, gain=gain, rng=2, dtype=np.float64)
    c = (shape[2] // 2, shape[3] // 2)
    centre = w[:, :, c[0], c[1]]
    np.testing.assert_allclose(centre.T @ centre, gain ** 2 * np.eye(shape[1]), atol=1e-12)
    rest = w.copy()
    rest[:, :, c[0], c[1]] = 0
    assert not rest.any()
    x = np.random.default_rng(3).standard_normal((3, shape[1], 7, 6))
    y = _conv(x, w, (shape[2] // 2, shape[3] // 2))
    np.testing.assert_allclose(np.linalg.norm(y.reshape(3, -1), axis=1),
                               gain * np.linalg.norm(x.reshape(3, -1), axis=1), rtol=1e-12)
    if shape[2] == shape[3]:
        layer = Conv2d(shape[1], shape[0], shape[2], padding="same", bias=False, dtype=np.float64)
        layer.weight.data = w
        np.testing.assert_allclose(layer(x), y, atol=1e-13)


def test_delta_orthogonal_errors():
    with pytest.raises(ValueError, match="in_channels=4 > out_channels=2"):
        init.delta_orthogonal((2, 4, 3, 3))
    with pytest.raises(ValueError, match="odd"):
        init.delta_orthogonal((4, 2, 2, 2))
    with pytest.raises(ValueError):
        init.delta_orthogonal((4, 2))


# ---------------------------------------------------------------------------------------------------------
# identity, gains, fans, variance-scaling initializers against PyTorch.

def test_identity_2d_and_dirac():
    np.testing.assert_array_equal(init.identity((3, 5), gain=2.0, dtype=np.float64), 2 * np.eye(3, 5))
    torch = pytest.importorskip("torch")
    for shape in [(4, 3, 3, 3), (3, 4, 2, 2), (2, 2, 5), (2, 3, 3, 3, 3)]:
        t = torch.empty(shape, dtype=torch.float64)
        torch.nn.init.dirac_(t)
        np.testing.assert_array_equal(init.identity(shape, dtype=np.float64), t.numpy())
    w = init.identity((4, 4, 3, 3), dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 5))
    np.testing.assert_allclose(_conv(x, w, 1), x, atol=0)


NONLINEARITIES = [("linear", None), ("conv2d", None), ("conv_transpose3d", None), ("sigmoid", None),
                  ("tanh", None), ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", 3),
                  ("selu", None), ("relu", 7.0)]


@pytest.mark.torch
@pytest.mark.parametrize("name,param", NONLINEARITIES)
def test_calculate_gain_equals_torch(name, param):
    torch = _torch()
    assert init.calculate_gain(name, param) == torch.nn.init.calculate_gain(name, param)


@pytest.mark.torch
@pytest.mark.parametrize("name,param", [("swish", None), ("leaky_relu", True), ("leaky_relu", "0.1"),
                                        ("leaky_relu", np.float32(0.1))])
def test_calculate_gain_errors_like_torch(name, param):
    torch = _torch()
    with pytest.raises(ValueError) as theirs:
        torch.nn.init.calculate_gain(name, param)
    with pytest.raises(ValueError) as ours:
        init.calculate_gain(name, param)
    # PyTorch's wording is kept inside ours, which also names the function and the argument (README, "Failure model")
    assert str(theirs.value) in str(ours.value)
    assert str(ours.value).startswith("calculate_gain: " + ("nonlinearity" if name == "swish" else "param"))


@pytest.mark.torch
@pytest.mark.parametrize("shape", [(3, 5), (16, 3, 3, 3), (8, 4, 5), (2, 3, 2, 2, 2), (7, 1)], ids=str)
def test_fans_equal_torch(shape):
    torch = _torch()
    assert init.calculate_fan_in_and_fan_out(shape) == torch.nn.init._calculate_fan_in_and_fan_out(
        torch.empty(shape))
    with pytest.raises(ValueError):
        init.calculate_fan_in_and_fan_out((4,))


STAT_SHAPE = (128, 64, 3, 3)          # fan_in 576, fan_out 1152, 73 728 entries
FAN_IN, FAN_OUT = 576, 1152


def _variance_cases():
    g_lrelu = math.sqrt(2.0 / (1 + 0.0))
    return [
        ("xavier_uniform", dict(gain=1.2), 1.2 ** 2 * 2 / (FAN_IN + FAN_OUT), "uniform",
         lambda t, T: T.nn.init.xavier_uniform_(t, gain=1.2)),
        ("xavier_normal", dict(gain=0.8), 0.8 ** 2 * 2 / (FAN_IN + FAN_OUT), "normal",
         lambda t, T: T.nn.init.xavier_normal_(t, gain=0.8)),
        ("kaiming_uniform", {}, g_lrelu ** 2 / FAN_IN, "uniform", lambda t, T: T.nn.init.kaiming_uniform_(t)),
        ("kaiming_uniform", dict(a=math.sqrt(5)), 1 / 3 / FAN_IN, "uniform",
         lambda t, T: T.nn.init.kaiming_uniform_(t, a=math.sqrt(5))),
        ("kaiming_normal", dict(mode="fan_out", nonlinearity="relu"), 2 / FAN_OUT, "normal",
         lambda t, T: T.nn.init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu")),
        ("kaiming_normal", dict(a=0.3, nonlinearity="leaky_relu"), 2 / (1 + 0.09) / FAN_IN, "normal",
         lambda t, T: T.nn.init.kaiming_normal_(t, a=0.3)),
        ("lecun_normal", {}, 1 / FAN_IN, "normal",
         lambda t, T: T.nn.init.kaiming_normal_(t, nonlinearity="linear")),
    ]


@pytest.mark.parametrize("name,kw,var,kind,torch_fn", _variance_cases(), ids=lambda v: str(v)[:40])
def test_variance_scaling_statistics(name, kw, var, kind, torch_fn):
    w = getattr(init, name)(STAT_SHAPE, rng=0, dtype=np.float64, **kw)
    assert w.shape == STAT_SHAPE and w.dtype == np.float64
    n = w.size
    # sample variance within 5 standard errors (Var of s² is ≈ 2σ⁴/n for a normal, ≤ that for a uniform)
    assert abs(w.var() - var) < 5 * var * math.sqrt(2 / n)
    assert abs(w.mean()) < 5 * math.sqrt(var / n)
    if kind == "uniform":
        bound = math.sqrt(3 * var)
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.999 * bound
    else:
        assert stats.kstest(w.ravel() / math.sqrt(var), "norm").pvalue > 1e-3
    torch = pytest.importorskip("torch")
    t = torch.empty(STAT_SHAPE, dtype=torch.float64)
    torch.manual_seed(0)
    torch_fn(t, torch)
    t = t.numpy()
    assert abs(t.var() - w.var()) < 7 * var * math.sqrt(2 / n)
    if kind == "uniform":
        assert np.abs(t).max() <= math.sqrt(3 * var) * (1 + 1e-12)


def test_lecun_truncated():
    w = init.lecun_normal(STAT_SHAPE, rng=1, dtype=np.float64, truncated=True)
    std = 1 / math.sqrt(FAN_IN)
    assert np.abs(w).max() <= 2 * std / 0.87962566103423978 * (1 + 1e-12)
    assert abs(w.var() - std ** 2) < 5 * std ** 2 * math.sqrt(2 / w.size)


def test_kaiming_mode_error():
    with pytest.raises(ValueError, match="fan_avg"):
        init.kaiming_uniform((3, 4), mode="fan_avg")
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.kaiming_normal((3, 4), nonlinearity="swish")


def test_normal_uniform():
    w = init.normal((200, 300), mean=2.0, std=0.5, rng=0, dtype=np.float64)
    assert abs(w.mean() - 2.0) < 0.01 and abs(w.std() - 0.5) < 0.01
    u = init.uniform((200, 300), a=-1.0, b=3.0, rng=0)
    assert u.dtype == np.float32 and u.min() >= -1 and u.max() <= 3 and abs(u.mean() - 1.0) < 0.02
    assert init.normal((5,), rng=0).shape == (5,)
    with pytest.raises(ValueError):
        init.uniform((2, 2), a=1.0, b=0.0)
    with pytest.raises(ValueError):
        init.normal((2, 2), std=-1.0)


def test_pytorch_default_agrees_with_layers():
    from orthoref.nn.linear import kaiming_uniform_default

    w = init.pytorch_default((6, 4), rng=3, dtype=np.float64)
    ref = kaiming_uniform_default((6, 4), 4, np.random.default_rng(3), np.float64)
    np.testing.assert_array_equal(w, ref)
    np.testing.assert_array_equal(init.pytorch_default((5, 3), rng=4), Linear(3, 5, rng=4).weight.data)
    np.testing.assert_array_equal(init.pytorch_default((4, 2, 3, 3), rng=5),
                                  Conv2d(2, 4, 3, rng=5).weight.data)
    # the same law as kaiming_uniform(a=√5): the same bound 1/√fan_in
    big = init.pytorch_default(STAT_SHAPE, rng=0, dtype=np.float64)
    kb = init.kaiming_uniform(STAT_SHAPE, a=math.sqrt(5), rng=0, dtype=np.float64)
    np.testing.assert_allclose(big, kb, atol=1e-15)
    assert init.pytorch_default((3,), fan_in=4, rng=0).shape == (3,)


# ---------------------------------------------------------------------------------------------------------
# Input checks, zero-size shapes, determinism, backend.

ALL_SHAPE_FNS = [init.orthogonal, init.xavier_uniform, init.xavier_normal, init.kaiming_uniform,
                 init.kaiming_normal, init.lecun_normal, init.pytorch_default, init.identity]


@pytest.mark.parametrize("fn", ALL_SHAPE_FNS + [init.delta_orthogonal, init.block_orthogonal_conv,
                                                init.special_orthogonal], ids=lambda f: f.__name__)
def test_one_dimensional_shape_raises(fn):
    with pytest.raises(ValueError, match="2 or more dimensions|fewer than 2"):
        fn((5,))


@pytest.mark.parametrize("fn", ALL_SHAPE_FNS, ids=lambda f: f.__name__)
def test_bad_dtype_and_negative_dims(fn):
    for dt in (np.int32, np.float16, "complex128", "not-a-dtype"):
        with pytest.raises(TypeError):
            fn((3, 4), dtype=dt)
    with pytest.raises(ValueError, match="non-negative"):
        fn((3, -4))


@pytest.mark.parametrize("fn", [init.orthogonal, init.special_orthogonal, init.delta_orthogonal,
                                init.block_orthogonal_conv, init.identity, init.xavier_uniform,
                                init.xavier_normal, init.lecun_normal], ids=lambda f: f.__name__)
def test_gain_must_be_finite(fn):
    shape = (4, 4) if fn in (init.special_orthogonal,) else (4, 4, 3, 3)
    for g in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="gain"):
            fn(shape, gain=g)
    with pytest.raises(TypeError, match="gain"):
        fn(shape, gain="1")


def test_orthogonal_bad_method_convention():
    with pytest.raises(ValueError, match="method"):
        init.orthogonal((3, 3), method="lu")
    with pytest.raises(ValueError, match="convention"):
        init.orthogonal((3, 3), convention="jax")
    with pytest.raises(ValueError, match="2-D"):
        init.orthogonalize_gaussian(np.ones(3))


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 3, 3, 3), (4, 0, 3, 3), (0, 0)], ids=str)
@pytest.mark.parametrize("fn", [init.orthogonal, init.delta_orthogonal, init.block_orthogonal_conv,
                                init.xavier_uniform, init.xavier_normal, init.kaiming_uniform,
                                init.kaiming_normal, init.lecun_normal, init.identity],
                         ids=lambda f: f.__name__)
def test_zero_size_shapes_give_empty_arrays(fn, shape):
    if fn in (init.delta_orthogonal, init.block_orthogonal_conv) and len(shape) != 4:
        return
    if fn in (init.delta_orthogonal, init.block_orthogonal_conv) and shape[1] > shape[0]:
        return
    w = fn(shape, dtype=np.float64)
    assert w.shape == shape and w.size == 0 and w.dtype == np.float64


def test_zero_size_special_and_torch_noop():
    assert init.special_orthogonal((0, 0)).shape == (0, 0)
    assert init.orthogonalize_gaussian(np.zeros((0, 3))).shape == (0, 3)


@pytest.mark.parametrize("name", ["orthogonal", "orthogonal_svd", "delta_orthogonal", "block_orthogonal",
                                  "xavier_normal", "kaiming_uniform", "lecun_normal", "default"])
def test_determinism(name):
    f = init.get_initializer(name)
    a, b, c = f((8, 4, 3, 3), rng=42), f((8, 4, 3, 3), rng=42), f((8, 4, 3, 3), rng=43)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    gen = np.random.default_rng(42)
    np.testing.assert_array_equal(f((8, 4, 3, 3), rng=gen), a)         # a Generator is used as is ...
    assert not np.array_equal(f((8, 4, 3, 3), rng=gen), a)             # ... and advanced


def test_registry_and_get_initializer():
    expected = {"default", "orthogonal", "orthogonal_svd", "special_orthogonal", "delta_orthogonal",
                "block_orthogonal", "identity", "xavier_uniform", "xavier_normal", "kaiming_uniform",
                "kaiming_normal", "lecun_normal"}
    assert expected <= set(init.INITIALIZERS)
    xp = backend.get_backend()
    for name in expected:
        f = init.get_initializer(name)
        for shape in [(16, 16), (16, 8, 3, 3)]:
            if name == "special_orthogonal" and len(shape) != 2:
                with pytest.raises(ValueError):
                    f(shape, rng=0, dtype=np.float64)
                continue
            for dt in (np.float32, np.float64):
                w = f(shape, rng=0, dtype=dt)
                assert isinstance(w, xp.ndarray) and w.shape == shape and w.dtype == dt, name
    # orthogonal-family defaults have gain 1; conv-only names fall back to orthogonal for 2-D weights
    for name in ("orthogonal", "orthogonal_svd", "delta_orthogonal", "block_orthogonal", "special_orthogonal"):
        m = init.get_initializer(name)((6, 6), rng=1, dtype=np.float64)
        np.testing.assert_allclose(m @ m.T, np.eye(6), atol=1e-12)
    np.testing.assert_array_equal(init.get_initializer("delta_orthogonal")((6, 4), rng=1, dtype=np.float64),
                                  init.orthogonal((6, 4), rng=1, dtype=np.float64))

    def mine(shape, rng=None, dtype=np.float32):
        return np.zeros(shape, dtype)
    assert init.get_initializer(mine) is mine
    with pytest.raises(ValueError, match="valid names: .*orthogonal"):
        init.get_initializer("orthogonl")
    with pytest.raises(TypeError):
        init.get_initializer(3)


def test_returns_active_backend_arrays():
    xp = backend.get_backend()
    for w in (init.orthogonal((4, 3), rng=0), init.special_orthogonal((3, 3), rng=0),
              init.delta_orthogonal((4, 3, 3, 3), rng=0), init.block_orthogonal_conv((4, 3, 3, 3), rng=0),
              init.identity((3, 3)), init.xavier_uniform((3, 3), rng=0), init.lecun_normal((3, 3), rng=0),
              init.normal((3,), rng=0), init.uniform((3,), rng=0), init.pytorch_default((3, 3), rng=0)):
        assert type(w) is xp.ndarray


@pytest.mark.gpu
@pytest.mark.skipif(not backend.cupy_available(), reason="CuPy or a GPU is missing")
def test_cupy_matches_numpy():
    for name in ("orthogonal", "orthogonal_svd", "special_orthogonal", "block_orthogonal", "xavier_normal"):
        f = init.get_initializer(name)
        ref = f((16, 16), rng=5, dtype=np.float64)
        with backend.using("cupy"):
            w = f((16, 16), rng=5, dtype=np.float64)
        assert type(w).__module__.startswith("cupy")
        np.testing.assert_allclose(backend.to_numpy(w), ref, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# LSUV.

def _mlp():
    return Sequential(Linear(20, 64, rng=0, dtype=np.float64), ReLU(), Linear(64, 32, rng=1, dtype=np.float64),
                      ReLU(), Linear(32, 10, rng=2, dtype=np.float64))


def _cnn():
    from orthoref.nn import Flatten
    return Sequential(Conv2d(3, 8, 3, padding=1, rng=0, dtype=np.float64), ReLU(),
                      Conv2d(8, 16, 3, stride=2, rng=1, dtype=np.float64), ReLU(), Flatten(),
                      Linear(16 * 3 * 3, 10, rng=2, dtype=np.float64))


@pytest.mark.parametrize("make,xshape", [(_mlp, (256, 20)), (_cnn, (64, 3, 8, 8))], ids=["mlp", "cnn"])
def test_lsuv_unit_variance_and_orthogonal_weights(make, xshape):
    model = make()
    model.train()
    x = np.random.default_rng(0).standard_normal(xshape) * 3.0
    tol = 0.05
    out, report = init.lsuv(model, x, tol=tol, rng=0, return_report=True)
    assert out is model and model.training and all(m.training for _, m in model.children())
    layers = [m for m in model if hasattr(m, "weight")]
    assert list(report) == [str(i) for i, m in enumerate(model) if hasattr(m, "weight")]
    h = x
    for m in model:
        h = m(h)
        if hasattr(m, "weight"):
            assert abs(h.var() - 1) < tol
    for m in layers:
        w = m.weight.data.reshape(m.weight.shape[0], -1)
        g = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        np.testing.assert_allclose(g / g[0, 0], np.eye(len(g)), atol=1e-12)
    for var, steps in report.values():
        assert abs(var - 1) < tol and steps <= 10


def test_lsuv_errors():
    model = Sequential(Linear(4, 3, bias=False, dtype=np.float64), ReLU())
    with pytest.raises(ValueError, match="variance 0"):
        init.lsuv(model, np.zeros((8, 4)))
    with pytest.raises(ValueError, match="no layer"):
        init.lsuv(Sequential(ReLU()), np.ones((2, 2)))
    with pytest.raises(ValueError, match="tol"):
        init.lsuv(model, np.ones((2, 4)), tol=0)
    with pytest.raises(ValueError, match="max_iter"):
        init.lsuv(model, np.ones((2, 4)), max_iter=0)
    assert "forward" not in vars(model[0])          # hooks removed even after an error
    with pytest.warns(RuntimeWarning, match="max_iter=1"):
        big_bias = Sequential(Linear(4, 3, dtype=np.float64))
        big_bias[0].bias.data[:] = [10.0, -10.0, 0.0]
        init.lsuv(big_bias, np.random.default_rng(0).standard_normal((32, 4)), max_iter=1)
