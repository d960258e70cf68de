"""Activations, dropout, batch normalization and losses: behaviour the registry's gradient and
conformance checks do not see (running statistics over several steps, train/eval switching, random masks,
extreme inputs, dtypes, error messages)."""
import warnings

import numpy as np
import pytest

from orthoref import nn
from orthoref.ops.activation import (dropout_backward, dropout_forward, gelu_backward, gelu_forward,
                                     leaky_relu_backward, leaky_relu_forward, relu_backward, relu_forward,
                                     sigmoid_backward, sigmoid_forward, tanh_backward, tanh_forward)
from orthoref.ops.loss import cross_entropy, mse
from orthoref.ops.norm import batch_norm_backward, batch_norm_forward


@pytest.fixture
def torch():
    """PyTorch on one thread for these tiny tensors (its pool made each call ~80 ms on a loaded 2-core
    machine), restored afterwards; skips when PyTorch is missing."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------------------
# Batch normalization against torch.nn.BatchNorm1d/2d over several training steps, then eval.

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


def test_batchnorm_op_errors_and_input_grad_false():
    x = np.random.default_rng(3).standard_normal((4, 3))
    with pytest.raises(ValueError, match="running_mean and running_var are required"):
        batch_norm_forward(x, None, None, None, None, training=False)
    with pytest.raises(TypeError, match="momentum"):
        batch_norm_forward(x, None, None, np.zeros(3), np.ones(3), training=True, momentum=None)
    with pytest.raises(ValueError, match=r"gamma \(weight\) must have shape \(3,\)"):
        batch_norm_forward(x, np.ones(4), None, None, None, training=True)
    y, cache = batch_norm_forward(x, np.ones(3), np.zeros(3), None, None, training=True)
    dx, dg, db = batch_norm_backward(np.ones_like(y), cache, need_dx=False)
    assert dx is None and dg.shape == db.shape == (3,)
    bn = nn.BatchNorm1d(3, dtype=np.float64)
    bn.forward(x)
    assert bn.backward(np.ones_like(x), input_grad=False) is None
    bn.backward(np.ones_like(x), input_grad=False)
    np.testing.assert_allclose(bn.bias.grad, 2 * 4 * np.ones(3))     # accumulated over two calls


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


# ---------------------------------------------------------------------------------------------------------
# Dropout

def test_dropout_eval_and_p0_are_identity():
    x = np.random.default_rng(4).standard_normal((5, 6))
    layer = nn.Dropout(0.7, rng=0).eval()
    assert layer.forward(x) is x
    dy = np.ones_like(x)
    assert layer.backward(dy) is dy
    y, cache = dropout_forward(x, 0.0, rng=0)
    assert y is x and dropout_backward(dy, cache) is dy
    y, _ = dropout_forward(x, 0.5, rng=0, training=False)
    assert y is x


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_mask_scaling_and_keep_rate(p):
    rng = np.random.default_rng(5)
    x = rng.uniform(1.0, 2.0, 200_000)                 # no zeros: y == 0 exactly where dropped
    y, cache = dropout_forward(x, p, rng=123)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-15)
    rate = kept.mean()
    sigma = np.sqrt(p * (1 - p) / x.size)
    assert abs(rate - (1 - p)) < 5 * sigma, f"keep rate {rate:.4f}, expected {1 - p} ± {5 * sigma:.4f}"
    # the expectation is preserved: Var(y_i) = x_i² p / (1 - p)
    assert abs(y.mean() - x.mean()) < 5 * np.sqrt(np.mean(x * x) * p / (1 - p) / x.size)
    dy = rng.standard_normal(x.shape)
    dx = dropout_backward(dy, cache)
    np.testing.assert_allclose(dx[kept], dy[kept] / (1 - p), rtol=1e-15)
    assert np.all(dx[~kept] == 0)


def test_dropout_reproducible_and_fresh_masks():
    x = np.ones((50, 40))
    a, b = nn.Dropout(0.5, rng=42), nn.Dropout(0.5, rng=42)
    ya1, yb1 = a.forward(x), b.forward(x)
    ya2, yb2 = a.forward(x), b.forward(x)
    assert np.array_equal(ya1, yb1) and np.array_equal(ya2, yb2), "same seed, same masks"
    assert not np.array_equal(ya1, ya2), "each training forward draws a new mask"
    # an int seed to the op is a fixed mask; the same mask for float32 and float64
    m64 = dropout_forward(x, 0.3, rng=9)[0] != 0
    m32 = dropout_forward(x.astype(np.float32), 0.3, rng=9)[0] != 0
    assert np.array_equal(m64, m32) and np.array_equal(m64, dropout_forward(x, 0.3, rng=9)[0] != 0)
    gen = np.random.default_rng(9)
    assert not np.array_equal(dropout_forward(x, 0.3, rng=gen)[0], dropout_forward(x, 0.3, rng=gen)[0])


@pytest.mark.parametrize("p,exc", [(-0.1, ValueError), (1.0, ValueError), (1.5, ValueError),
                                   (float("nan"), ValueError), ("0.5", TypeError), (True, TypeError),
                                   (None, TypeError)])
def test_dropout_p_validation(p, exc):
    with pytest.raises(exc, match="dropout probability p"):
        nn.Dropout(p)
    with pytest.raises(exc, match="dropout probability p"):
        dropout_forward(np.ones(3), p, rng=0)


def test_dropout_rejects_legacy_random_state():
    with pytest.raises(TypeError, match="rng"):
        nn.Dropout(0.5, rng=np.random.RandomState(0))


# ---------------------------------------------------------------------------------------------------------
# Activations: extreme values and exact definitions

def test_sigmoid_at_plus_minus_1000_without_warnings():
    for dt in (np.float32, np.float64):
        x = np.array([-1000.0, -100.0, 0.0, 100.0, 1000.0], dt)
        with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
            warnings.simplefilter("error")
            y, cache = sigmoid_forward(x)
            dx = sigmoid_backward(np.ones_like(x), cache)
        assert y.dtype == dt and dx.dtype == dt
        assert y[0] == 0.0 and y[-1] == 1.0 and y[2] == 0.5
        assert dx[0] == 0.0 and dx[-1] == 0.0 and dx[2] == 0.25
        assert 0 < y[1] < 1e-40 or (dt == np.float32 and y[1] == 0.0)


def test_sigmoid_tail_has_relative_accuracy():
    """1 - sigmoid-via-tanh would lose every digit at x = -30; the e^{-|x|} form keeps them."""
    x = np.array([-30.0, -12.5, -1.0, 0.3, 7.0, 30.0])
    ref = 1 / (1 + np.exp(-x.astype(np.longdouble)))
    np.testing.assert_allclose(sigmoid_forward(x)[0], ref.astype(np.float64), rtol=1e-15, atol=0)


def test_relu_and_leaky_relu_at_zero_and_refuse_infinities():
    x = np.array([-1e300, -2.0, 0.0, 3.0, 1e300])
    y, mask = relu_forward(x)
    np.testing.assert_array_equal(y, [0.0, 0.0, 0.0, 3.0, 1e300])
    np.testing.assert_array_equal(relu_backward(np.full(5, 2.0), mask), [0, 0, 0, 2, 2])   # 0 at x = 0
    y, cache = leaky_relu_forward(x, 0.1)
    np.testing.assert_array_equal(y, [-1e300 * 0.1, -2.0 * 0.1, 0.0, 3.0, 1e300])
    np.testing.assert_array_equal(leaky_relu_backward(np.full(5, 2.0), cache), [0.2, 0.2, 0.2, 2, 2])
    for bad in (np.inf, -np.inf, np.nan):                 # PyTorch propagates them; the oracle refuses them
        for op in (relu_forward, leaky_relu_forward):
            with pytest.raises(ValueError, match="x must be finite"):
                op(np.array([1.0, bad]))


def test_gelu_against_math_erf():
    import math
    xs = [-4.0, -1.3, -0.2, 0.0, 0.7, 2.5]
    y, cache = gelu_forward(np.array(xs))
    # Φ(x) = erfc(-x/√2)/2 has no cancellation for x << 0; PyTorch's (and our) 1 + erf(x/√2) loses
    # log10(1/Φ(x)) digits there (4.5 at x = -4), hence rtol 1e-11. The tanh form differs by ~1e-3.
    ref = [0.5 * v * math.erfc(-v / math.sqrt(2)) for v in xs]
    np.testing.assert_allclose(y, ref, rtol=1e-11, atol=1e-300)
    dref = [0.5 * math.erfc(-v / math.sqrt(2)) + v * math.exp(-v * v / 2) / math.sqrt(2 * math.pi) for v in xs]
    np.testing.assert_allclose(gelu_backward(np.ones(6), cache), dref, rtol=1e-13)
    yt, ct = gelu_forward(np.array(xs), approximate="tanh")
    u = [math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3) for v in xs]
    reft = [0.5 * v * (1 + math.tanh(w)) for v, w in zip(xs, u)]
    np.testing.assert_allclose(yt, reft, rtol=1e-11, atol=1e-300)
    dreft = [0.5 * (1 + math.tanh(w)) + 0.5 * v * (1 - math.tanh(w) ** 2) * math.sqrt(2 / math.pi)
             * (1 + 3 * 0.044715 * v * v) for v, w in zip(xs, u)]
    np.testing.assert_allclose(gelu_backward(np.ones(6), ct), dreft, rtol=1e-11)
    assert abs(yt[4] - y[4]) > 1e-5, "the two forms must differ"
    with pytest.raises(ValueError, match="approximate"):
        gelu_forward(np.ones(2), approximate="erf")


OPS = [
    ("relu", relu_forward, relu_backward, {}),
    ("leaky_relu", leaky_relu_forward, leaky_relu_backward, {"negative_slope": 0.2}),
    ("tanh", tanh_forward, tanh_backward, {}),
    ("sigmoid", sigmoid_forward, sigmoid_backward, {}),
    ("gelu", gelu_forward, gelu_backward, {}),
    ("gelu_tanh", gelu_forward, gelu_backward, {"approximate": "tanh"}),
    ("dropout", lambda x, **k: dropout_forward(x, 0.4, rng=0), dropout_backward, {}),
]


@pytest.mark.parametrize("name,fwd,bwd,kw", OPS, ids=[o[0] for o in OPS])
def test_ops_keep_float32(name, fwd, bwd, kw):
    x = np.random.default_rng(6).standard_normal((3, 4, 5)).astype(np.float32)
    y, cache = fwd(x, **kw)
    dx = bwd(np.ones_like(y), cache)
    assert y.dtype == np.float32 and dx.dtype == np.float32, (y.dtype, dx.dtype)
    assert y.shape == dx.shape == x.shape


@pytest.mark.parametrize("layer", [nn.ReLU(), nn.LeakyReLU(), nn.Tanh(), nn.Sigmoid(), nn.GELU(),
                                   nn.GELU("tanh"), nn.Dropout(0.5, rng=0), nn.BatchNorm1d(4), nn.BatchNorm2d(4)],
                         ids=lambda l: repr(l))
def test_layers_keep_float32(layer):
    shape = (3, 4, 2, 2) if isinstance(layer, nn.BatchNorm2d) else (3, 4)
    x = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    y = layer.forward(x)
    dx = layer.backward(np.ones_like(y))
    assert y.dtype == np.float32 and dx.dtype == np.float32
    for p in layer.parameters():
        assert p.grad.dtype == np.float32
    for _, b in layer.named_buffers():
        assert b.dtype in (np.float32, np.int64)


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
# Losses

def _ce_reference(logits, labels):
    """Cross-entropy in extended precision (np.longdouble) from the definition, one row at a time."""
    z = logits.astype(np.longdouble)
    out = []
    for row, k in zip(z, labels):
        m = row.max()
        out.append(m + np.log(np.sum(np.exp(row - m))) - row[k])
    return np.array(out, dtype=np.longdouble)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_cross_entropy_extreme_logits(dt):
    logits = np.array([[1e4, -1e4, 0.0, 5e3],
                       [1e4, 1e4 - 1.0, -1e4, 0.0],
                       [-1e4, -1e4, -1e4, -1e4],
                       [3.0, -2.0, 1e4, 9999.5]], dtype=dt)
    labels = np.array([1, 1, 2, 3])
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error")
        loss, grad = cross_entropy(logits, labels)
        losses, _ = cross_entropy(logits, labels, reduction="none")
    assert loss.shape == () and loss.dtype == dt and isinstance(float(loss), float)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(grad))
    ref = _ce_reference(logits, labels)
    rtol = 1e-6 if dt == np.float32 else 1e-14
    np.testing.assert_allclose(losses.astype(np.float64), ref.astype(np.float64), rtol=rtol)
    np.testing.assert_allclose(float(loss), float(ref.mean()), rtol=rtol)
    # each row of the gradient is (softmax - onehot) / N: sums to zero, -1/N + p at the label
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=10 * np.finfo(dt).eps)
    np.testing.assert_allclose(grad[2], [0.0625, 0.0625, 0.0625 - 0.25, 0.0625], rtol=1e-6)


def test_cross_entropy_reductions_and_gradient_against_longdouble():
    rng = np.random.default_rng(9)
    logits = 4 * rng.standard_normal((7, 5))
    labels = rng.integers(0, 5, 7)
    ref = _ce_reference(logits, labels)
    z = logits.astype(np.longdouble)
    soft = np.exp(z - z.max(axis=1, keepdims=True))
    soft /= soft.sum(axis=1, keepdims=True)
    onehot = np.eye(5)[labels]
    for reduction, value, scale in (("mean", ref.mean(), 1 / 7), ("sum", ref.sum(), 1.0), ("none", ref, 1.0)):
        loss, grad = cross_entropy(logits, labels, reduction=reduction)
        np.testing.assert_allclose(np.asarray(loss, np.float64), np.asarray(value, np.float64), rtol=1e-14)
        np.testing.assert_allclose(grad, ((soft - onehot) * scale).astype(np.float64), rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("logits,labels,exc,words", [
    (np.zeros((3, 4)), np.array([0.0, 1.0, 2.0]), TypeError, ["labels", "integer", "float64"]),
    (np.zeros((3, 4)), [0, 1, 2], TypeError, ["labels", "list"]),
    (np.zeros((3, 4)), np.array([0, 4, 1]), ValueError, ["labels", "[0, 3]", "[0, 4]"]),
    (np.zeros((3, 4)), np.array([0, -1, 1]), ValueError, ["labels", "[0, 3]", "[-1, 1]"]),
    (np.zeros((3, 4)), np.array([[0], [1], [2]]), ValueError, ["labels", "(3,)", "(3, 1)"]),
    (np.zeros((3, 4)), np.array([0, 1]), ValueError, ["labels", "(3,)", "(2,)"]),
    (np.zeros(4), np.array([0]), ValueError, ["logits", "(N, C)", "(4,)"]),
    (np.zeros((3, 4), np.int64), np.array([0, 1, 2]), TypeError, ["logits", "int64"]),
    (np.array([[0.0, np.nan], [1.0, 2.0]]), np.array([0, 1]), ValueError, ["logits", "NaN"]),
    (np.array([[0.0, -np.inf], [1.0, 2.0]]), np.array([0, 1]), ValueError, ["logits", "Inf"]),
])
def test_cross_entropy_bad_input(logits, labels, exc, words):
    with pytest.raises(exc) as info:
        cross_entropy(logits, labels)
    for w in words:
        assert w in str(info.value), f"{w!r} not in {info.value}"


def test_loss_reduction_validation_and_exports():
    with pytest.raises(ValueError, match="reduction"):
        cross_entropy(np.zeros((2, 3)), np.array([0, 1]), reduction="avg")
    with pytest.raises(ValueError, match="reduction"):
        mse(np.zeros(3), np.zeros(3), reduction="batchmean")
    assert nn.cross_entropy is cross_entropy and nn.mse is mse


def test_mse_values_and_errors():
    pred = np.array([[1.0, 2.0], [3.0, 5.0]])
    target = np.array([[0.0, 2.0], [1.0, 1.0]])
    loss, grad = mse(pred, target)
    assert loss.shape == () and float(loss) == (1 + 0 + 4 + 16) / 4
    np.testing.assert_array_equal(grad, [[0.5, 0.0], [1.0, 2.0]])
    loss, grad = mse(pred, target, reduction="sum")
    assert float(loss) == 21.0
    np.testing.assert_array_equal(grad, [[2.0, 0.0], [4.0, 8.0]])
    loss, grad = mse(pred, target, reduction="none")
    np.testing.assert_array_equal(loss, [[1.0, 0.0], [4.0, 16.0]])
    p32 = pred.astype(np.float32)
    l32, g32 = mse(p32, target.astype(np.float32))
    assert l32.dtype == g32.dtype == np.float32
    with pytest.raises(ValueError, match=r"target.*\(2, 2\).*\(4,\)"):
        mse(pred, target.reshape(4))
    with pytest.raises(TypeError, match="target.*float32.*float64"):
        mse(p32, target)
    with pytest.raises(TypeError, match="pred"):
        mse(np.array([1, 2]), np.array([1, 2]))


def test_losses_match_torch_float32(torch):
    import torch.nn.functional as F
    rng = np.random.default_rng(10)
    logits = (5 * rng.standard_normal((16, 7))).astype(np.float32)
    labels = rng.integers(0, 7, 16)
    zt = torch.tensor(logits, requires_grad=True)
    lt = F.cross_entropy(zt, torch.tensor(labels))
    lt.backward()
    loss, grad = cross_entropy(logits, labels)
    np.testing.assert_allclose(float(loss), lt.item(), rtol=1e-6)
    np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=1e-5, atol=1e-7)
