"""Tests of orthoref/nn/norm.py: BatchNorm1d/2d against torch.nn over several training steps and in eval,
running statistics, state_dict, float32 and bad input."""
import numpy as np
import pytest

from orthoref import nn


@pytest.fixture
def torch():
    """PyTorch, or a skip when it is missing (conftest.py already runs it on one thread)."""
    return pytest.importorskip("torch")


def _pair(torch, cls_name, C, rng, **kw):
    ours = getattr(nn, cls_name)(C, dtype=np.float64, **kw)
    ref = getattr(torch.nn, cls_name)(C, dtype=torch.float64, **kw)
    if ours.affine:
        w, b = rng.uniform(0.5, 1.5, C), rng.standard_normal(C)
        ours.weight.data, ours.bias.data = w.copy(), b.copy()
        with torch.no_grad():
            ref.weight.copy_(torch.tensor(w))
            ref.bias.copy_(torch.tensor(b))
    return ours, ref


def _assert_close(a, b, rtol=1e-12, atol=1e-13, what=""):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64),
                               rtol=rtol, atol=atol, err_msg=what)


@pytest.mark.parametrize("cls_name,shape", [("BatchNorm1d", (8, 4)), ("BatchNorm1d", (5, 4, 3)),
                                            ("BatchNorm2d", (3, 4, 5, 2))])
@pytest.mark.parametrize("kw", [{}, {"momentum": 0.3}, {"momentum": None}, {"affine": False},
                                {"track_running_stats": False}, {"eps": 1e-2}],
                         ids=["default", "momentum0.3", "cumulative", "no-affine", "no-running-stats", "eps"])
def test_batchnorm_matches_torch_over_training_steps(cls_name, shape, kw, torch):
    rng = np.random.default_rng(0)
    C = shape[1]
    ours, ref = _pair(torch, cls_name, C, rng, **kw)
    for step in range(4):
        # Shifted, scaled data so that the running statistics move far from (0, 1).
        x = 3.0 + 2.0 * rng.standard_normal(shape)
        dy = rng.standard_normal(shape)
        xt = torch.tensor(x, requires_grad=True)
        yt = ref(xt)
        yt.backward(torch.tensor(dy))
        ours.zero_grad()
        y = ours.forward(x)
        dx = ours.backward(dy)
        _assert_close(y, yt.detach().numpy(), what=f"output, step {step}")
        _assert_close(dx, xt.grad.numpy(), what=f"input gradient, step {step}")
        if ours.affine:
            _assert_close(ours.weight.grad, ref.weight.grad.numpy(), what="weight gradient")
            _assert_close(ours.bias.grad, ref.bias.grad.numpy(), what="bias gradient")
            ref.weight.grad = ref.bias.grad = None
        if ours.track_running_stats:
            _assert_close(ours.running_mean, ref.running_mean.numpy(), what=f"running_mean, step {step}")
            _assert_close(ours.running_var, ref.running_var.numpy(), what=f"running_var, step {step}")
            assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == step + 1
    ours.eval()
    ref.eval()
    x = 3.0 + 2.0 * rng.standard_normal(shape)
    dy = rng.standard_normal(shape)
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    yt.backward(torch.tensor(dy))
    y = ours.forward(x)
    dx = ours.backward(dy)
    _assert_close(y, yt.detach().numpy(), what="eval output")
    _assert_close(dx, xt.grad.numpy(), what="eval input gradient")
    if ours.track_running_stats:
        before = ours.running_mean.copy(), ours.running_var.copy(), int(ours.num_batches_tracked)
        ours.forward(x)
        assert np.array_equal(ours.running_mean, before[0]) and np.array_equal(ours.running_var, before[1])
        assert int(ours.num_batches_tracked) == before[2], "eval mode must not touch the running statistics"


def test_batchnorm_running_var_is_unbiased_and_momentum_is_pytorch_convention():
    """Independent of torch: one step from (0, 1) with momentum m gives m·mean and (1-m) + m·var_unbiased."""
    x = np.array([[1.0, 10.0], [2.0, 20.0], [4.0, 40.0], [9.0, 90.0]])
    bn = nn.BatchNorm1d(2, momentum=0.25, dtype=np.float64)
    y = bn.forward(x)
    mean = x.mean(axis=0)
    var_biased = ((x - mean) ** 2).sum(axis=0) / 4
    var_unbiased = ((x - mean) ** 2).sum(axis=0) / 3
    np.testing.assert_allclose(bn.running_mean, 0.25 * mean, rtol=1e-15)
    np.testing.assert_allclose(bn.running_var, 0.75 + 0.25 * var_unbiased, rtol=1e-15)
    # the output is normalized with the *biased* variance
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var_biased + 1e-5), rtol=1e-13)


def test_batchnorm_momentum_none_is_cumulative_average():
    rng = np.random.default_rng(1)
    bn = nn.BatchNorm1d(3, momentum=None, dtype=np.float64)
    batches = [rng.normal(5.0, 2.0, (6, 3)) for _ in range(5)]
    for b in batches:
        bn.forward(b)
    np.testing.assert_allclose(bn.running_mean, np.mean([b.mean(axis=0) for b in batches], axis=0), rtol=1e-13)
    np.testing.assert_allclose(bn.running_var, np.mean([b.var(axis=0, ddof=1) for b in batches], axis=0),
                               rtol=1e-13)


def test_batchnorm_state_dict_round_trip_and_torch_keys(torch):
    rng = np.random.default_rng(2)
    ours, ref = _pair(torch, "BatchNorm2d", 3, rng)
    for _ in range(3):
        x = rng.normal(1.0, 3.0, (4, 3, 2, 2))
        ours.forward(x)
        ref(torch.tensor(x))
    sd = ours.state_dict()
    assert list(sd) == list(ref.state_dict()), "state_dict keys must be PyTorch's"
    for k, v in ref.state_dict().items():
        _assert_close(sd[k], v.numpy(), what=k)
    assert sd["num_batches_tracked"].dtype == np.int64 and sd["num_batches_tracked"].shape == ()

    fresh = nn.BatchNorm2d(3, dtype=np.float64)
    fresh.load_state_dict(sd)
    x = rng.standard_normal((2, 3, 3, 3))
    ours.eval()
    fresh.eval()
    assert np.array_equal(fresh.forward(x), ours.forward(x))
    # the loaded buffers are copies, not views of the dict
    sd["running_mean"][:] = 123.0
    assert not np.any(fresh.running_mean == 123.0)

    # PyTorch's state_dict loads too
    other = nn.BatchNorm2d(3, dtype=np.float64).eval()
    other.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    ref.eval()
    _assert_close(other.forward(x), ref(torch.tensor(x)).detach().numpy())

    no_stats = nn.BatchNorm1d(3, track_running_stats=False)
    assert list(no_stats.state_dict()) == ["weight", "bias"]
    assert list(nn.BatchNorm1d(3, affine=False).state_dict()) == ["running_mean", "running_var",
                                                                  "num_batches_tracked"]


def test_batchnorm_batch_size_one():
    bn = nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn.forward(np.ones((1, 3), np.float32))
    assert int(bn.num_batches_tracked) == 0, "a rejected batch must not count"
    assert np.array_equal(bn.running_mean, np.zeros(3))
    bn.forward(np.arange(12, dtype=np.float32).reshape(1, 3, 4))     # 4 values per channel: fine
    bn.eval()
    assert bn.forward(np.ones((1, 3), np.float32)).shape == (1, 3)   # eval uses running statistics
    no_stats = nn.BatchNorm1d(3, track_running_stats=False).eval()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        no_stats.forward(np.ones((1, 3), np.float32))                 # batch statistics even in eval
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm2d(2).forward(np.ones((1, 2, 1, 1), np.float32))
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        torch.nn.BatchNorm1d(3)(torch.ones(1, 3))                    # the behaviour we copy


@pytest.mark.parametrize("factory,x,exc,words", [
    (lambda: nn.BatchNorm2d(3), np.zeros((4, 3, 5), np.float32), ValueError, ["BatchNorm2d", "4-D", "(4, 3, 5)"]),
    (lambda: nn.BatchNorm1d(3), np.zeros((4, 3, 2, 2), np.float32), ValueError, ["BatchNorm1d", "(4, 3, 2, 2)"]),
    (lambda: nn.BatchNorm2d(3), np.zeros((4, 5, 2, 2), np.float32), ValueError, ["BatchNorm2d", "3", "(4, 5, 2, 2)"]),
    (lambda: nn.BatchNorm1d(3), np.zeros((4, 3)), TypeError, ["BatchNorm1d", "float64", "float32"]),
    (lambda: nn.BatchNorm1d(3), [[1.0, 2.0, 3.0]], TypeError, ["BatchNorm1d", "list"]),
    (lambda: nn.ReLU(), np.zeros((2, 3), np.int64), TypeError, ["ReLU", "int64"]),
    (lambda: nn.Sigmoid(), "x", TypeError, ["Sigmoid", "str"]),
    (lambda: nn.Dropout(0.2), np.zeros(3, np.int32), TypeError, ["Dropout", "int32"]),
])
def test_layer_bad_input(factory, x, exc, words):
    with pytest.raises(exc) as info:
        factory().forward(x)
    for w in words:
        assert w in str(info.value), f"{w!r} not in {info.value}"


def test_layer_bad_arguments():
    with pytest.raises(ValueError, match="num_features"):
        nn.BatchNorm1d(0)
    with pytest.raises(TypeError, match="momentum"):
        nn.BatchNorm2d(3, momentum="0.1")
    with pytest.raises(ValueError, match="approximate"):
        nn.GELU("fast")
    with pytest.raises(TypeError, match="negative_slope"):
        nn.LeakyReLU("0.1")
    with pytest.raises(RuntimeError, match="before forward"):
        nn.Tanh().backward(np.ones(3))
    with pytest.raises(RuntimeError, match="before forward"):
        nn.BatchNorm1d(2).backward(np.ones((2, 2), np.float32))


def test_batchnorm_float32_matches_float64():
    rng = np.random.default_rng(8)
    x = rng.normal(2.0, 3.0, (16, 5, 3, 3))
    dy = rng.standard_normal(x.shape)
    outs = {}
    for dt in (np.float32, np.float64):
        bn = nn.BatchNorm2d(5, dtype=dt)
        y = bn.forward(x.astype(dt))
        dx = bn.backward(dy.astype(dt))
        outs[dt] = (y, dx, bn.running_var)
        assert y.dtype == dx.dtype == bn.running_mean.dtype == bn.running_var.dtype == dt
    for a, b in zip(outs[np.float32], outs[np.float64]):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


# ---------------------------------------------------------------------------------------------------------
# DecorrelatedBatchNorm and IterNorm against a PyTorch module written here from the papers' code:
# DecorelateBN_Advance.lua (princeton-vl/DecorrelatedBN: ZCA by an eigendecomposition of the biased
# covariance, groups of m_perGroup features, the last one smaller) and iterative_normalization.py
# (huangleiBuaa/IterNorm-pytorch: P ← 1.5 P − 0.5 P³ Σ_N, wm = P_T √(1/tr Σ), x̂ = wm x_c on (d, m) data);
# running mean and running whitening matrix as running ← (1 − momentum) running + momentum batch.

def _torch_whitening_module(torch, C, groups, method, T=5, eps=1e-5, momentum=0.1, affine=True):
    class Ref(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(C, dtype=torch.float64)) if affine else None
            self.bias = torch.nn.Parameter(torch.zeros(C, dtype=torch.float64)) if affine else None
            self.register_buffer("running_mean", torch.zeros(C, dtype=torch.float64))
            self.register_buffer("running_wm", torch.eye(C, dtype=torch.float64))

        def _matrix(self, xc):                        # xc: (g, m), the official codes' layout
            d, m = xc.shape
            S = xc @ xc.T / m + eps * torch.eye(d, dtype=xc.dtype)
            if method == "zca":
                lam, U = torch.linalg.eigh(S)
                return U @ torch.diag(lam.rsqrt()) @ U.T
            rTr = 1 / torch.trace(S)
            P = torch.eye(d, dtype=xc.dtype)
            for _ in range(T):
                P = 1.5 * P - 0.5 * torch.linalg.matrix_power(P, 3) @ (S * rTr)
            return P * rTr.sqrt()

        def forward(self, x):
            x2 = (x if x.ndim == 2 else x.permute(0, 2, 3, 1).reshape(-1, C)).T     # (C, m)
            if self.training:
                mean = x2.mean(dim=1, keepdim=True)
                xc = x2 - mean
                wm = torch.zeros(C, C, dtype=x.dtype)
                for a in range(0, C, groups):
                    b = min(a + groups, C)
                    wm[a:b, a:b] = self._matrix(xc[a:b])
                with torch.no_grad():
                    self.running_mean.mul_(1 - momentum).add_(momentum * mean[:, 0])
                    self.running_wm.mul_(1 - momentum).add_(momentum * wm)
            else:
                xc, wm = x2 - self.running_mean[:, None], self.running_wm
            y = (wm @ xc).T
            y = y if x.ndim == 2 else y.reshape(x.shape[0], x.shape[2], x.shape[3], C).permute(0, 3, 1, 2)
            if affine:
                shape = (1, C) + (1,) * (x.ndim - 2)
                y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
            return y
    return Ref()


WHITENING = [("DecorrelatedBatchNorm", "zca", {}), ("IterNorm", "iternorm", {}),
             ("IterNorm", "iternorm", {"iterations": 3})]


@pytest.mark.parametrize("cls_name,method,extra", WHITENING, ids=["dbn", "iternorm", "iternorm-T3"])
@pytest.mark.parametrize("shape,groups", [((32, 5), 2), ((4, 6, 3, 3), 4), ((40, 3), 16)],
                         ids=["2d-uneven-groups", "4d", "one-group"])
@pytest.mark.parametrize("kw", [{}, {"momentum": 0.3, "eps": 1e-3}, {"affine": False}],
                         ids=["default", "momentum-eps", "no-affine"])
def test_whitening_layers_match_torch_over_training_steps(cls_name, method, extra, shape, groups, kw, torch):
    rng = np.random.default_rng(0)
    C = shape[1]
    ours = getattr(nn, cls_name)(C, groups=groups, dtype=np.float64, **extra, **kw)
    ref = _torch_whitening_module(torch, C, groups, method, T=extra.get("iterations", 5), **kw)
    if ours.affine:
        w, b = rng.uniform(0.5, 1.5, C), rng.standard_normal(C)
        ours.weight.data, ours.bias.data = w.copy(), b.copy()
        with torch.no_grad():
            ref.weight.copy_(torch.tensor(w))
            ref.bias.copy_(torch.tensor(b))
    mix = rng.standard_normal((C, C))                  # correlated channels, so the whitening matters
    for step in range(4):
        x2 = 2.0 + rng.standard_normal((int(np.prod(shape)) // C, C)) @ mix
        x = x2 if len(shape) == 2 else x2.reshape(shape[0], shape[2], shape[3], C).transpose(0, 3, 1, 2).copy()
        dy = rng.standard_normal(shape)
        xt = torch.tensor(x, requires_grad=True)
        yt = ref(xt)
        yt.backward(torch.tensor(dy))
        ours.zero_grad()
        y = ours.forward(x)
        dx = ours.backward(dy)
        _assert_close(y, yt.detach().numpy(), rtol=1e-10, atol=1e-11, what=f"output, step {step}")
        _assert_close(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-10, what=f"input gradient, step {step}")
        if ours.affine:
            _assert_close(ours.weight.grad, ref.weight.grad.numpy(), rtol=1e-10, atol=1e-11, what="weight grad")
            _assert_close(ours.bias.grad, ref.bias.grad.numpy(), rtol=1e-12, what="bias gradient")
            ref.weight.grad = ref.bias.grad = None
        _assert_close(ours.running_mean, ref.running_mean.numpy(), what=f"running_mean, step {step}")
        _assert_close(ours.running_wm, ref.running_wm.numpy(), rtol=1e-10, atol=1e-11,
                      what=f"running_wm, step {step}")
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.eval()
    ref.eval()
    x = 2.0 + rng.standard_normal(shape)
    dy = rng.standard_normal(shape)
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    yt.backward(torch.tensor(dy))
    before = ours.running_mean.copy(), ours.running_wm.copy()
    _assert_close(ours.forward(x), yt.detach().numpy(), rtol=1e-10, atol=1e-11, what="eval output")
    _assert_close(ours.backward(dy), xt.grad.numpy(), rtol=1e-10, atol=1e-11, what="eval input gradient")
    assert np.array_equal(ours.running_mean, before[0]) and np.array_equal(ours.running_wm, before[1])


@pytest.mark.parametrize("cls_name", ["DecorrelatedBatchNorm", "IterNorm"])
def test_whitening_layer_whitens_each_group_and_momentum_one_makes_eval_equal_train(cls_name):
    rng = np.random.default_rng(3)
    x = 1.0 + rng.standard_normal((200, 7)) @ rng.standard_normal((7, 7))
    layer = getattr(nn, cls_name)(7, groups=3, momentum=1.0, dtype=np.float64,
                                  **({"iterations": 40} if cls_name == "IterNorm" else {}))
    y = layer.forward(x)
    cov = y.T @ y / 200
    for a, b in ((0, 3), (3, 6), (6, 7)):                              # groups (3, 3, 1): each one whitened
        np.testing.assert_allclose(cov[a:b, a:b], np.eye(b - a), atol=1e-4)
    assert np.abs(cov[:3, 3:]).max() > 0.05                            # ... but not across groups
    np.testing.assert_allclose(layer.running_mean, x.mean(axis=0), rtol=1e-14)
    W = layer.running_wm
    blocks = np.zeros((7, 7), bool)
    for a, b in ((0, 3), (3, 6), (6, 7)):
        blocks[a:b, a:b] = True
    assert np.all(W[~blocks] == 0) and np.all(W[blocks] != 0)          # block diagonal, one block per group
    layer.eval()
    np.testing.assert_allclose(layer.forward(x), y, atol=1e-12)       # momentum 1: the batch's statistics


@pytest.mark.parametrize("cls_name", ["DecorrelatedBatchNorm", "IterNorm"])
def test_whitening_layer_state_dict_round_trip_and_float32(cls_name):
    rng = np.random.default_rng(4)
    layer = getattr(nn, cls_name)(4, groups=2, dtype=np.float64)
    for _ in range(3):
        layer.forward(rng.normal(1.0, 2.0, (8, 4, 2, 2)))
    sd = layer.state_dict()
    assert list(sd) == ["weight", "bias", "running_mean", "running_wm"] and sd["running_wm"].shape == (4, 4)
    fresh = getattr(nn, cls_name)(4, groups=2, dtype=np.float64)
    fresh.load_state_dict(sd)
    x = rng.standard_normal((3, 4, 2, 2))
    assert np.array_equal(fresh.eval().forward(x), layer.eval().forward(x))
    sd["running_wm"][:] = 7.0
    assert not np.any(fresh.running_wm == 7.0)
    x = rng.normal(0.5, 2.0, (16, 4, 3, 3))
    dy = rng.standard_normal(x.shape)
    outs = {}
    for dt in (np.float32, np.float64):
        m = getattr(nn, cls_name)(4, groups=2, dtype=dt)
        y = m.forward(x.astype(dt))
        dx = m.backward(dy.astype(dt))
        assert y.dtype == dx.dtype == m.running_wm.dtype == m.weight.grad.dtype == dt
        outs[dt] = (y, dx, m.running_wm)
    for a, b in zip(outs[np.float32], outs[np.float64]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cls_name", ["DecorrelatedBatchNorm", "IterNorm"])
def test_whitening_layer_bad_input_names_the_layer(cls_name):
    cls = getattr(nn, cls_name)
    layer = cls(3, groups=2, dtype=np.float64)
    with pytest.raises(ValueError, match=f"{cls_name}: expected more than 1 value per channel"):
        layer.forward(np.ones((1, 3)))
    assert np.array_equal(layer.running_mean, np.zeros(3)) and np.array_equal(layer.running_wm, np.eye(3))
    with pytest.raises(ValueError, match=f"{cls_name}: x \\(input\\) must be a 2-D or 4-D"):
        layer.forward(np.ones((4, 3, 2)))
    with pytest.raises(ValueError, match=f"{cls_name}: x \\(input\\) must have 3 channels"):
        layer.forward(np.ones((4, 2)))
    with pytest.raises(TypeError, match=f"{cls_name}: x \\(input\\) dtype float32"):
        layer.forward(np.ones((4, 3), np.float32))
    x = np.random.default_rng(5).standard_normal((6, 3))
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match=f"{cls_name}: x \\(input\\) must be finite"):
        layer.forward(x)
    assert np.array_equal(layer.running_wm, np.eye(3)), "a refused batch must not move the running statistics"
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((6, 3)))
    y = layer.forward(np.random.default_rng(6).standard_normal((6, 3)))
    with pytest.raises(ValueError, match=f"{cls_name}.backward: grad_out must have shape"):
        layer.backward(np.ones((6, 4)))
    bad = np.ones_like(y)
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match=f"{cls_name}.backward: grad_out must be finite"):
        layer.backward(bad)
    assert layer.weight.grad is None
    for kw, exc, word in (({"groups": 0}, ValueError, "groups"), ({"groups": 2.0}, TypeError, "groups"),
                          ({"momentum": 1.5}, ValueError, "momentum"), ({"eps": 0.0}, ValueError, "eps"),
                          ({"affine": 1}, TypeError, "affine"), ({"dtype": np.float16}, TypeError, "dtype")):
        with pytest.raises(exc, match=f"{cls_name}: {word}"):
            cls(3, **kw)
    if cls_name == "IterNorm":
        with pytest.raises(ValueError, match="IterNorm: iterations"):
            cls(3, iterations=0)
        with pytest.raises(ValueError, match="IterNorm: iterations"):
            cls(3, iterations=10 ** 30)


def test_decorrelated_batch_norm_singular_group_in_float32_is_a_clear_error():
    """A group with fewer samples than channels and large variance: Σ_g is numerically singular in float32."""
    rng = np.random.default_rng(7)
    layer = nn.DecorrelatedBatchNorm(8, groups=4)
    x = (1e3 * rng.standard_normal((3, 8))).astype(np.float32)
    with pytest.raises(ValueError, match="DecorrelatedBatchNorm: the covariance .* numerically singular.*"
                                         "features 0..3"):
        layer.forward(x)
    assert nn.IterNorm(8, groups=4).forward(x).dtype == np.float32    # IterNorm has no singular case
