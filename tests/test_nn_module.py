"""Tests of orthoref/nn/module.py: Parameter, Module and Sequential (traversal, state_dict, train/eval,
output hooks, backward before forward)."""
import numpy as np
import pytest

from orthoref.nn import Linear, Module, Parameter, Sequential


def test_parameter_accumulates():
    p = Parameter(np.zeros(3))
    assert p.grad is None
    p.accumulate(np.ones(3))
    p.accumulate(np.full(3, 2.0))
    np.testing.assert_array_equal(p.grad, [3.0, 3.0, 3.0])


def test_backward_before_forward_is_an_error():
    with pytest.raises(RuntimeError, match="before forward"):
        Linear(2, 2).backward(np.ones((1, 2), np.float32))


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
