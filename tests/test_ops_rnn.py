"""Tests of orthoref/ops/rnn.py: the Elman RNN op against finite differences (both cotangents, tanh and ReLU),
its registry entries and its errors."""
import numpy as np
import pytest

from orthoref.ops.rnn import rnn_backward, rnn_forward
from orthoref.oracle import check_backward
from orthoref.oracle.registry import from_pair, get
from orthoref.oracle.samples.rnn import draw, draw_relu, preacts


def _fn(nonlinearity, bias):
    def backward(ct, cache):
        g = rnn_backward(ct[0], ct[1], cache)
        return g if bias else g[:4]
    apply = from_pair(rnn_forward, backward, n_out=2)
    return lambda *a: apply(*a, nonlinearity=nonlinearity)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_op_gradcheck_elementwise(nonlinearity, bias):
    rng = np.random.default_rng(7)
    sampler = draw_relu if nonlinearity == "relu" else draw
    inputs = sampler(rng, np.float64, bias=bias)
    check_backward(_fn(nonlinearity, bias), inputs, rtol=1e-8, elementwise=True, n_directions=3, rng=1,
                   names=["x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"][:len(inputs)])


def test_relu_sampler_off_kink():
    rng = np.random.default_rng(0)
    for _ in range(5):
        assert np.abs(preacts(*draw_relu(rng, np.float64))).min() >= 0.05


def test_registered_specs():
    for name in ("rnn", "rnn_relu", "nn.RNN"):
        spec = get(name)
        for s in spec.sample(np.random.default_rng(3), np.float64):
            check_backward(lambda *a, spec=spec, s=s: spec.apply(*a, **s.kwargs), s.inputs, rtol=spec.rtol,
                           rng=0)


def test_output_and_hT_cotangents_separately():
    """Gradients through h_T alone, and through the output alone, both against finite differences."""
    rng = np.random.default_rng(11)
    inputs = draw(rng, np.float64)
    T, N, H = inputs[0].shape[0], inputs[0].shape[1], inputs[2].shape[0]
    fn = _fn("tanh", True)
    check_backward(fn, inputs, cotangents=[np.zeros((T, N, H)), rng.standard_normal((N, H))], rtol=1e-8)
    check_backward(fn, inputs, cotangents=[rng.standard_normal((T, N, H)), np.zeros((N, H))], rtol=1e-8)
    _, cache = rnn_forward(*inputs)
    g_none = rnn_backward(None, None, cache)
    assert all(np.all(g == 0) for g in g_none)


def test_h0_none_is_zeros():
    x, h0, w_ih, w_hh, b_ih, b_hh = draw(np.random.default_rng(1), np.float64)
    (o1, h1), _ = rnn_forward(x, None, w_ih, w_hh, b_ih, b_hh)
    (o2, _), _ = rnn_forward(x, np.zeros_like(h0), w_ih, w_hh, b_ih, b_hh)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(h1, o1[-1])


def test_op_bad_arguments():
    x, h0, w_ih, w_hh, b_ih, _ = draw(np.random.default_rng(1), np.float64)
    with pytest.raises(ValueError, match="nonlinearity"):
        rnn_forward(x, h0, w_ih, w_hh, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match=r"\(T, N, input_size\)"):
        rnn_forward(x[0], h0, w_ih, w_hh)
    with pytest.raises(ValueError, match="h0"):
        rnn_forward(x, h0[:, :2], w_ih, w_hh)
    with pytest.raises(ValueError, match="w_hh"):
        rnn_forward(x, h0, w_ih, w_hh[:, :2])
    with pytest.raises(ValueError, match="both"):
        rnn_forward(x, h0, w_ih, w_hh, b_ih)
