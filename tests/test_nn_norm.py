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
