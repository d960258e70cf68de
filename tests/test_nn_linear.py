"""Tests of orthoref/nn/linear.py: the Linear layer (default and named weight initialization, gradient
accumulation, bad input and arguments)."""
import numpy as np
import pytest

from orthoref.nn import Linear


def test_linear_default_init_matches_pytorch_bound():
    layer = Linear(50, 20, rng=0)
    bound = 1 / np.sqrt(50)
    assert layer.weight.shape == (20, 50) and layer.bias.shape == (20,)
    assert layer.weight.dtype == np.float32
    assert np.abs(layer.weight.data).max() <= bound and np.abs(layer.weight.data).max() > 0.9 * bound
    assert np.abs(layer.bias.data).max() <= bound


def test_linear_backward_accumulates_and_skips_dx():
    rng = np.random.default_rng(0)
    layer = Linear(4, 3, dtype=np.float64, rng=1)
    x, dy = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    layer.forward(x)
    assert layer.backward(dy, input_grad=False) is None
    g1 = layer.weight.grad.copy()
    layer.forward(x)
    dx = layer.backward(dy)
    np.testing.assert_allclose(layer.weight.grad, 2 * g1, rtol=1e-14)
    np.testing.assert_allclose(dx, dy @ layer.weight.data, rtol=1e-14)
    np.testing.assert_allclose(g1, dy.T @ x, rtol=1e-14)


@pytest.mark.parametrize("x, exc, match", [
    (np.ones((2, 5), np.float32), ValueError, r"Linear: .*got shape \(2, 5\)"),
    (np.ones((2, 4), np.float64), TypeError, "does not match"),
    (np.ones((2, 4), np.int64), TypeError, "float32 or float64"),
    ([[1.0] * 4], TypeError, "must be an array"),
])
def test_linear_bad_input(x, exc, match):
    with pytest.raises(exc, match=match):
        Linear(4, 3).forward(x)


def test_linear_bad_constructor():
    with pytest.raises(ValueError, match="Linear: in_features must be an int >= 1"):
        Linear(0, 3)
    with pytest.raises(TypeError, match="float32 or float64"):
        Linear(2, 3, dtype=np.int32)


def test_weight_init_by_name_and_callable():
    layer = Linear(8, 4, weight_init="orthogonal", rng=0, dtype=np.float64)
    m = layer.weight.data
    np.testing.assert_allclose(m @ m.T, np.eye(4), atol=1e-12)
    assert np.abs(layer.bias.data).max() <= 1 / np.sqrt(8)          # the bias keeps PyTorch's default
    seen = {}

    def init(shape, rng=None, dtype=np.float32):
        seen.update(shape=shape, dtype=dtype, rng=rng)
        return np.full(shape, 0.5, dtype=dtype)
    layer = Linear(3, 2, weight_init=init, rng=1)
    assert seen["shape"] == (2, 3) and seen["dtype"] == np.float32
    assert isinstance(seen["rng"], np.random.Generator)
    assert np.all(layer.weight.data == 0.5)


def test_weight_init_errors():
    with pytest.raises(ValueError, match="orthogonal"):
        Linear(3, 2, weight_init="no_such_init")
    with pytest.raises(ValueError, match=r"Linear: weight_init returned shape \(3, 2\)"):
        Linear(3, 2, weight_init=lambda shape, rng=None, dtype=np.float32: np.zeros((3, 2), dtype))


def test_default_weight_init_is_unchanged_by_name_default():
    a = Linear(6, 4, rng=3)
    b = Linear(6, 4, weight_init="default", rng=3)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    np.testing.assert_array_equal(a.bias.data, b.bias.data)
