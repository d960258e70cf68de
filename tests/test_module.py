"""Module, Parameter, Sequential and Linear: traversal, state, train/eval, bad input."""
import numpy as np
import pytest

from orthoref.nn import Linear, Module, Parameter, Sequential


def test_parameter_accumulates():
    p = Parameter(np.zeros(3))
    assert p.grad is None
    p.accumulate(np.ones(3))
    p.accumulate(np.full(3, 2.0))
    np.testing.assert_array_equal(p.grad, [3.0, 3.0, 3.0])


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


def test_backward_before_forward_is_an_error():
    with pytest.raises(RuntimeError, match="before forward"):
        Linear(2, 2).backward(np.ones((1, 2), np.float32))


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


def test_sequential_names_state_dict_and_roundtrip():
    model = Sequential(Linear(4, 8, rng=0), Linear(8, 2, rng=1))
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias"]
    sd = model.state_dict()
    other = Sequential(Linear(4, 8, rng=5), Linear(8, 2, rng=6))
    other.load_state_dict(sd)
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.forward(x), other.forward(x))
    sd["0.weight"][:] = 0  # the state dict is a copy
    assert np.abs(model[0].weight.data).max() > 0


def test_load_state_dict_rejects_mismatch_without_partial_load():
    model = Sequential(Linear(4, 8, rng=0), Linear(8, 2, rng=1))
    before = model.state_dict()
    bad = dict(before)
    bad["1.weight"] = np.zeros((3, 8), np.float32)
    with pytest.raises(ValueError, match="1.weight"):
        model.load_state_dict(bad)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(ValueError, match="missing"):
        model.load_state_dict({"0.weight": before["0.weight"]})


def test_train_eval_propagate_and_zero_grad():
    model = Sequential(Linear(2, 2), Sequential(Linear(2, 2)))
    model.eval()
    assert not model.training and not model[1][0].training
    model.train()
    assert model[1][0].training
    x = np.ones((1, 2), np.float32)
    model.backward(model.forward(x))
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_sequential_first_layer_input_grad():
    model = Sequential(Linear(3, 4, rng=0), Linear(4, 2, rng=1))
    x = np.ones((2, 3), np.float32)
    model.forward(x)
    assert model.backward(np.ones((2, 2), np.float32), input_grad=False) is None
    model.forward(x)
    assert model.backward(np.ones((2, 2), np.float32)).shape == (2, 3)


def test_to_casts_parameters():
    model = Sequential(Linear(3, 4)).to(np.float64)
    assert all(p.dtype == np.float64 for p in model.parameters())


def test_sequential_rejects_non_modules():
    with pytest.raises(TypeError, match="argument 1"):
        Sequential(Linear(2, 2), lambda x: x)


def test_module_repr():
    assert "in_features=3" in repr(Sequential(Linear(3, 4)))
    assert isinstance(Module(), Module)


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


def test_conv_weight_init_delta_orthogonal():
    from orthoref.nn import Conv2d
    conv = Conv2d(3, 5, 3, padding=1, weight_init="delta_orthogonal", rng=0, dtype=np.float64)
    w = conv.weight.data
    centre = w[:, :, 1, 1]
    np.testing.assert_allclose(centre.T @ centre, np.eye(3), atol=1e-12)
    w[:, :, 1, 1] = 0
    assert not w.any()


def test_default_weight_init_is_unchanged_by_name_default():
    a = Linear(6, 4, rng=3)
    b = Linear(6, 4, weight_init="default", rng=3)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    np.testing.assert_array_equal(a.bias.data, b.bias.data)


def test_output_hook_gradient_enters_the_backward_pass():
    """A hook's loss term on a hidden output: the total gradient equals finite differences of the sum."""
    from orthoref.nn import ReLU
    from orthoref.oracle import check_backward
    rng = np.random.default_rng(0)
    model = Sequential(Linear(4, 5, rng=1, dtype=np.float64), ReLU(), Linear(5, 3, rng=2, dtype=np.float64))
    model.set_output_hook(0, lambda y: (float((y ** 2).sum()), 2 * y))
    params = model.parameters()

    def fn(x, *pdata):
        for p, d in zip(params, pdata):
            p.data = d
        y = model.forward(x)
        extra = model.hook_values()[0]
        total = np.array((y ** 2).sum() * 0.5 + extra)

        def vjp(cts):
            model.zero_grad()
            dx = model.backward(y * cts[0])
            return (dx,) + tuple(p.grad for p in params)
        return (total,), vjp

    x = rng.standard_normal((6, 4)) + 0.1
    check_backward(fn, [x] + [p.data for p in params], cotangents=[np.array(1.0)], elementwise=True)
    model.set_output_hook(0, None)
    model.forward(x)
    assert model.hook_values() == {}
    with pytest.raises(ValueError, match=r"Sequential.set_output_hook: index .* got 7"):   # was IndexError
        model.set_output_hook(7, lambda y: (0.0, y))
