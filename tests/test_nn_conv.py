"""Tests of orthoref/nn/conv.py: the Conv2d, pooling and Flatten layers (initialization, agreement with the
op, gradient checks, errors)."""
import math

import numpy as np
import pytest

from orthoref.nn import AvgPool2d, Conv2d, Flatten, GlobalAvgPool2d, MaxPool2d
from orthoref.oracle import check_layer
from orthoref.ops.conv import conv2d_naive, conv2d_naive_backward


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def test_conv2d_default_init_bound():
    """U(-1/√fan_in, 1/√fan_in) with fan_in = in/groups · kh · kw, for weight and bias (PyTorch's default)."""
    layer = Conv2d(8, 32, (3, 5), groups=4, rng=0)
    bound = 1 / math.sqrt(2 * 3 * 5)
    assert layer.weight.shape == (32, 2, 3, 5) and layer.weight.dtype == np.float32
    w, b = np.abs(layer.weight.data), np.abs(layer.bias.data)
    assert w.max() <= bound and w.max() > 0.97 * bound               # 960 draws reach the bound
    assert b.max() <= bound and abs(float(layer.weight.data.mean())) < 0.1 * bound
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    t = torch.nn.Conv2d(8, 32, (3, 5), groups=4)                       # the bound PyTorch really uses
    tw = t.weight.detach().abs().max().item()
    assert 0.97 * bound < tw <= bound * (1 + 1e-6)


def test_conv2d_layer_matches_op_and_accumulates():
    rng = np.random.default_rng(8)
    layer = Conv2d(4, 6, 3, stride=2, padding=1, groups=2, dtype=np.float64, rng=1)
    x = rng.standard_normal((2, 4, 7, 7))
    y = layer(x)
    y_ref = conv2d_naive(x, layer.weight.data, layer.bias.data, stride=2, padding=1, groups=2)
    assert y.dtype == np.float64 and rel(y, y_ref) < 1e-13
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    dx_ref, dw_ref, db_ref = conv2d_naive_backward(dy, x, layer.weight.data, layer.bias.data, stride=2,
                                                   padding=1, groups=2)
    assert rel(dx, dx_ref) < 1e-13
    assert rel(layer.weight.grad, dw_ref) < 1e-13 and rel(layer.bias.grad, db_ref) < 1e-13
    assert layer.backward(dy, input_grad=False) is None
    assert rel(layer.weight.grad, 2 * dw_ref) < 1e-13 and rel(layer.bias.grad, 2 * db_ref) < 1e-13
    assert "groups=2" in repr(layer) and "stride=(2, 2)" in repr(layer)


@pytest.mark.parametrize("make,shape", [
    (lambda: Conv2d(2, 3, (2, 3), padding="same", bias=False, dtype=np.float64, rng=0), (2, 2, 5, 4)),
    (lambda: Conv2d(2, 2, 3, dilation=2, groups=2, dtype=np.float64, rng=0), (1, 2, 6, 6)),
    (lambda: MaxPool2d(3, stride=2, padding=1), (1, 2, 5, 6)),
    (lambda: AvgPool2d(2, stride=1, padding=1, count_include_pad=False), (1, 2, 4, 3)),
    (lambda: GlobalAvgPool2d(), (2, 3, 3, 4)),
    (lambda: Flatten(), (2, 3, 2, 2)),
])
def test_layers_float64_gradcheck(make, shape):
    rng = np.random.default_rng(9)
    n = math.prod(shape)
    x = ((rng.permutation(n) - n / 2) * 0.1 + rng.uniform(-0.01, 0.01, n)).reshape(shape)   # distinct values
    layer = make()
    assert layer(x).dtype == np.float64
    check_layer(layer, x, rtol=1e-8, n_directions=3)


@pytest.mark.parametrize("make,x,err,match", [
    (lambda: Conv2d(3, 4, 3), np.zeros((2, 3, 5, 5)), TypeError, r"Conv2d.*float64.*float32"),
    (lambda: Conv2d(3, 4, 3), np.zeros((2, 3, 5, 5), np.int32), TypeError, "Conv2d"),
    (lambda: Conv2d(3, 4, 3), np.zeros((2, 4, 5, 5), np.float32), ValueError,
     r"Conv2d.*3 channels.*\(2, 4, 5, 5\)"),
    (lambda: Conv2d(3, 4, 3), np.zeros((3, 5), np.float32), ValueError, r"Conv2d.*3-D or 4-D.*\(3, 5\)"),
    (lambda: Conv2d(3, 4, 3), np.zeros((1, 3, 2, 9), np.float32), ValueError, "Conv2d.*smaller than"),
    (lambda: Conv2d(3, 4, 3), [[1.0]], TypeError, "Conv2d.*array"),
    (lambda: MaxPool2d(3), np.zeros((1, 1, 2, 2)), ValueError, "MaxPool2d.*smaller than"),
    (lambda: MaxPool2d(2), np.zeros((1, 1, 1, 2, 2)), ValueError, r"MaxPool2d.*\(1, 1, 1, 2, 2\)"),
    (lambda: AvgPool2d(2), np.zeros((4, 4)), ValueError, "AvgPool2d.*3-D or 4-D"),
    (lambda: AvgPool2d(2), np.zeros((1, 1, 4, 4), np.int64), TypeError, "AvgPool2d"),
    (lambda: AvgPool2d(4), np.zeros((1, 1, 3, 8)), ValueError, "AvgPool2d.*smaller than"),
    (lambda: GlobalAvgPool2d(), np.zeros((2, 3)), ValueError, "GlobalAvgPool2d"),
    (lambda: Flatten(2, 5), np.zeros((2, 3, 4)), ValueError, "Flatten.*out of range"),
])
def test_layer_bad_input(make, x, err, match):
    with pytest.raises(err, match=match):
        make()(x)


@pytest.mark.parametrize("make,match", [
    (lambda: Conv2d(3, 4, 3, groups=2), "divisible by groups"),
    (lambda: Conv2d(4, 3, 3, groups=2), "divisible by groups"),
    (lambda: Conv2d(0, 4, 3), "in_channels"),
    (lambda: Conv2d(3, 4, 0), "kernel_size"),
    (lambda: Conv2d(3, 4, 3, stride=0), "stride"),
    (lambda: Conv2d(3, 4, 3, padding=-1), "padding"),
    (lambda: Conv2d(3, 4, 3, padding="same", stride=2), "strided"),
    (lambda: Conv2d(3, 4, 3, padding="full"), "padding"),
    (lambda: Conv2d(3, 4, 3, dtype=np.int32), "float32 or float64"),
    (lambda: MaxPool2d(2, padding=2), "half"),
    (lambda: MaxPool2d((2, 2, 2)), "kernel_size"),
    (lambda: AvgPool2d(3, stride=0), "stride"),
    (lambda: AvgPool2d(2, divisor_override=-1), "divisor_override"),
    (lambda: Flatten(1.5), "start_dim"),
])
def test_layer_bad_arguments(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_pool_layers_input_grad_false_and_backward_before_forward():
    pool = MaxPool2d(2)
    with pytest.raises(RuntimeError, match="before forward"):
        pool.backward(np.zeros((1, 1, 1, 1)))
    y = pool(np.arange(16.0).reshape(1, 1, 4, 4))
    assert pool.backward(np.ones_like(y), input_grad=False) is None
    assert np.array_equal(y[0, 0], [[5, 7], [13, 15]])


def test_conv_weight_init_delta_orthogonal():
    from orthoref.nn import Conv2d
    conv = Conv2d(3, 5, 3, padding=1, weight_init="delta_orthogonal", rng=0, dtype=np.float64)
    w = conv.weight.data
    centre = w[:, :, 1, 1]
    np.testing.assert_allclose(centre.T @ centre, np.eye(3), atol=1e-12)
    w[:, :, 1, 1] = 0
    assert not w.any()
