"""Tests of orthoref/nn/rnn.py: the RNN layer against torch.nn.RNN and finite differences, initialization,
float32 and bad input."""
import numpy as np
import pytest

from orthoref.nn.rnn import RNN
from orthoref.oracle import check_layer
from orthoref.oracle.samples.rnn import draw, draw_relu, preacts


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


@pytest.mark.torch
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_h0", [True, False])
def test_torch_nn_rnn_conformance(nonlinearity, bias, with_h0):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    sampler = draw_relu if nonlinearity == "relu" else draw
    arrays = sampler(rng, np.float64, T=6, N=3, I=4, H=5, bias=bias)
    x, h0 = arrays[:2]
    if not with_h0:
        h0 = np.zeros_like(h0)      # h0=None in both frameworks below
    layer = RNN(4, 5, nonlinearity=nonlinearity, bias=bias, dtype=np.float64, rng=0)
    ref = torch.nn.RNN(4, 5, nonlinearity=nonlinearity, bias=bias).double()
    params = dict(zip(["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"], arrays[2:]))
    with torch.no_grad():
        for k, v in params.items():
            getattr(ref, k).copy_(torch.from_numpy(v))
            getattr(layer, k).data = v.copy()
    assert set(layer.state_dict()) == set(ref.state_dict())

    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    th0 = torch.from_numpy(h0.copy())[None].requires_grad_(True) if with_h0 else None
    t_out, t_hn = ref(tx, th0)
    g_out, g_hn = rng.standard_normal(t_out.shape), rng.standard_normal((3, 5))
    torch.autograd.backward([t_out, t_hn], [torch.from_numpy(g_out), torch.from_numpy(g_hn[None])])

    out = layer.forward(x, h0 if with_h0 else None)
    dx = layer.backward(g_out, grad_h_n=g_hn)
    assert _rel(out, t_out.detach().numpy()) <= 1e-10
    assert _rel(layer.h_n, t_hn.detach().numpy()[0]) <= 1e-10
    assert _rel(dx, tx.grad.numpy()) <= 1e-10
    if with_h0:
        assert _rel(layer.h0_grad, th0.grad.numpy()[0]) <= 1e-10
    for k in params:
        assert _rel(getattr(layer, k).grad, getattr(ref, k).grad.numpy()) <= 1e-10, k


@pytest.mark.torch
def test_default_init_matches_torch_bounds():
    layer = RNN(3, 16, rng=0)
    bound = 1 / 4.0
    for _, p in layer.named_parameters():
        assert p.dtype == np.float32
        assert np.abs(p.data).max() <= bound and np.abs(p.data).max() > 0.8 * bound
    assert [k for k, _ in layer.named_parameters()] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0",
                                                        "bias_hh_l0"]
    assert RNN(3, 4, bias=False, rng=0).parameters().__len__() == 2


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_layer_gradcheck(nonlinearity):
    rng = np.random.default_rng(2)
    layer = RNN(2, 3, nonlinearity=nonlinearity, dtype=np.float64, rng=1)
    if nonlinearity == "relu":
        x, _, w_ih, w_hh, b_ih, b_hh = draw_relu(rng, np.float64)
        h0 = np.zeros((3, 3))
        while np.abs(preacts(x, h0, w_ih, w_hh, b_ih, b_hh)).min() < 0.05:
            x, _, w_ih, w_hh, b_ih, b_hh = draw(rng, np.float64)
        for k, v in zip(["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"], [w_ih, w_hh, b_ih, b_hh]):
            getattr(layer, k).data = v
    else:
        x = rng.standard_normal((4, 3, 2))
    check_layer(layer, x, rtol=1e-8, elementwise=True, rng=0)


def test_layer_accumulates_and_input_grad_flag():
    rng = np.random.default_rng(4)
    layer = RNN(2, 3, dtype=np.float64, rng=0)
    x, g = rng.standard_normal((5, 2, 2)), rng.standard_normal((5, 2, 3))
    layer.forward(x)
    assert layer.backward(g, input_grad=False) is None
    first = layer.weight_hh_l0.grad.copy()
    layer.forward(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.weight_hh_l0.grad, 2 * first, rtol=1e-14)


def test_hidden_init_orthogonal_and_identity():
    orth = RNN(4, 6, hidden_init="orthogonal", rng=0, dtype=np.float64)
    w = orth.weight_hh_l0.data
    assert w.shape == (6, 6)
    np.testing.assert_allclose(w @ w.T, np.eye(6), atol=1e-12)
    assert orth.weight_ih_l0.data.shape == (6, 4)
    irnn = RNN(4, 6, nonlinearity="relu", hidden_init="identity", weight_init="orthogonal", rng=0)
    np.testing.assert_array_equal(irnn.weight_hh_l0.data, np.eye(6, dtype=np.float32))
    wi = irnn.weight_ih_l0.data.astype(np.float64)
    np.testing.assert_allclose(wi.T @ wi, np.eye(4), atol=1e-5)     # (6, 4): orthonormal columns
    custom = RNN(2, 3, hidden_init=lambda shape, rng=None, dtype=np.float32: np.full(shape, 0.5, dtype), rng=0)
    assert np.all(custom.weight_hh_l0.data == 0.5)
    with pytest.raises(ValueError, match="unknown initializer"):
        RNN(2, 3, hidden_init="nope")


def test_seeded_init_is_deterministic():
    a, b = RNN(3, 5, rng=42).state_dict(), RNN(3, 5, rng=42).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_float32_stays_float32():
    rng = np.random.default_rng(0)
    layer = RNN(3, 4, rng=0)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    out = layer.forward(x, np.zeros((2, 4), np.float32))
    assert out.dtype == np.float32 and layer.h_n.dtype == np.float32
    dx = layer.backward(rng.standard_normal((5, 2, 4)).astype(np.float32))
    assert dx.dtype == np.float32 and layer.h0_grad.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in layer.parameters())
    ref = RNN(3, 4, rng=0, dtype=np.float64)
    assert _rel(out, ref.forward(x.astype(np.float64))) < 1e-5


def test_layer_bad_input():
    layer = RNN(3, 4, rng=0)
    with pytest.raises(ValueError, match=r"RNN.*\(T, N, input_size"):
        layer.forward(np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match=r"RNN.*input_size=3"):
        layer.forward(np.zeros((5, 2, 4), np.float32))
    with pytest.raises(TypeError, match="RNN"):
        layer.forward(np.zeros((5, 2, 3), np.float64))
    with pytest.raises(ValueError, match="RNN.*h0"):
        layer.forward(np.zeros((5, 2, 3), np.float32), np.zeros((3, 4), np.float32))
    with pytest.raises(RuntimeError, match="before forward"):
        RNN(3, 4, rng=0).backward(np.zeros((5, 2, 4), np.float32))
    with pytest.raises(ValueError, match="nonlinearity"):
        RNN(3, 4, nonlinearity="gelu")
