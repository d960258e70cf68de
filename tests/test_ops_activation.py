"""Tests of orthoref/ops/activation.py: activations at extreme values and against their exact definitions,
dropout masks, float32."""
import warnings

import numpy as np
import pytest

from orthoref.ops.activation import (dropout_backward, dropout_forward, gelu_backward, gelu_forward,
                                     leaky_relu_backward, leaky_relu_forward, relu_backward, relu_forward,
                                     sigmoid_backward, sigmoid_forward, tanh_backward, tanh_forward)


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
