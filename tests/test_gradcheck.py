"""The gradient checker itself: it must catch wrong gradients and say where."""
import numpy as np
import pytest

from orthoref.oracle import GradientCheckError, check_backward, check_layer
from orthoref.nn import Linear


def _matmul(transpose_bug=False, scale=1.0):
    def fn(a, b):
        y = a @ b

        def vjp(cts):
            (dy,) = cts
            da = dy @ (b if transpose_bug else b.T)
            return da * scale, a.T @ dy
        return (y,), vjp
    return fn


def test_correct_gradient_passes(rng):
    a, b = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    rep = check_backward(_matmul(), [a, b], elementwise=True)
    assert rep.passed and rep.max_rel_error < 1e-9


def test_transposed_gradient_fails(rng):
    a, b = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    with pytest.raises(GradientCheckError, match="rtol"):
        check_backward(_matmul(transpose_bug=True), [a, b])


def test_small_scale_error_fails(rng):
    a, b = rng.standard_normal((4, 2)), rng.standard_normal((2, 5))
    with pytest.raises(GradientCheckError):
        check_backward(_matmul(scale=1.0 + 1e-6), [a, b])


def test_elementwise_names_the_wrong_element(rng):
    x = rng.standard_normal((2, 3))

    def fn(x):
        def vjp(cts):
            g = 2 * x * cts[0]
            g[1, 2] += 0.5
            return (g,)
        return (x ** 2,), vjp

    with pytest.raises(GradientCheckError, match=r"x\[1, 2\]"):
        check_backward(fn, [x], elementwise=True, names=["x"])


def test_wrong_gradient_shape_is_reported(rng):
    x = rng.standard_normal((2, 3))
    with pytest.raises(GradientCheckError, match="shape"):
        check_backward(lambda x: ((x * 2,), lambda c: (c[0].T,)), [x])


def test_float32_inputs_are_refused(rng):
    x = rng.standard_normal(3).astype(np.float32)
    with pytest.raises(TypeError, match="float64"):
        check_backward(lambda x: ((x,), lambda c: c), [x])


def test_integer_inputs_are_held_fixed(rng):
    x, idx = rng.standard_normal(5), np.array([0, 3])

    def fn(x, idx):
        def vjp(cts):
            g = np.zeros_like(x)
            np.add.at(g, idx, cts[0])
            return g, None
        return (x[idx] * 1.0,), vjp

    check_backward(fn, [x, idx], elementwise=True)


def test_check_layer_covers_parameters(rng):
    layer = Linear(4, 3, dtype=np.float64, rng=0)
    check_layer(layer, rng.standard_normal((5, 4)), elementwise=True)
    broken = Linear(4, 3, dtype=np.float64, rng=0)
    original = broken.backward

    def bad_backward(g, input_grad=True):
        dx = original(g, input_grad)
        broken.bias.grad = broken.bias.grad * 0.5
        return dx
    broken.backward = bad_backward
    with pytest.raises(GradientCheckError, match="bias"):
        check_layer(broken, rng.standard_normal((5, 4)), elementwise=True)
