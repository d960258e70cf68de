"""Elman RNN op and layer (finite differences, torch.nn.RNN conformance) and the sequence tasks."""
import numpy as np
import pytest

import orthoref.nn.rnn  # noqa: F401  (registers nn.RNN until orthoref.nn imports it)
from orthoref.nn.rnn import RNN
from orthoref.ops.rnn import _draw, _draw_relu, _preacts, rnn_backward, rnn_forward
from orthoref.oracle import check_backward, check_layer
from orthoref.oracle.registry import from_pair, get
from orthoref.tasks import adding_problem, copy_memory, copy_memory_baseline


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def _fn(nonlinearity, bias):
    def backward(ct, cache):
        g = rnn_backward(ct[0], ct[1], cache)
        return g if bias else g[:4]
    apply = from_pair(rnn_forward, backward, n_out=2)
    return lambda *a: apply(*a, nonlinearity=nonlinearity)


# -- the op ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_op_gradcheck_elementwise(nonlinearity, bias):
    rng = np.random.default_rng(7)
    draw = _draw_relu if nonlinearity == "relu" else _draw
    inputs = draw(rng, np.float64, bias=bias)
    check_backward(_fn(nonlinearity, bias), inputs, rtol=1e-8, elementwise=True, n_directions=3, rng=1,
                   names=["x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"][:len(inputs)])


def test_relu_sampler_off_kink():
    rng = np.random.default_rng(0)
    for _ in range(5):
        assert np.abs(_preacts(*_draw_relu(rng, np.float64))).min() >= 0.05


def test_registered_specs():
    for name in ("rnn", "rnn_relu", "nn.RNN"):
        spec = get(name)
        for s in spec.sample(np.random.default_rng(3), np.float64):
            check_backward(lambda *a, spec=spec, s=s: spec.apply(*a, **s.kwargs), s.inputs, rtol=spec.rtol,
                           rng=0)


def test_output_and_hT_cotangents_separately():
    """Gradients through h_T alone, and through the output alone, both against finite differences."""
    rng = np.random.default_rng(11)
    inputs = _draw(rng, np.float64)
    T, N, H = inputs[0].shape[0], inputs[0].shape[1], inputs[2].shape[0]
    fn = _fn("tanh", True)
    check_backward(fn, inputs, cotangents=[np.zeros((T, N, H)), rng.standard_normal((N, H))], rtol=1e-8)
    check_backward(fn, inputs, cotangents=[rng.standard_normal((T, N, H)), np.zeros((N, H))], rtol=1e-8)
    _, cache = rnn_forward(*inputs)
    g_none = rnn_backward(None, None, cache)
    assert all(np.all(g == 0) for g in g_none)


def test_h0_none_is_zeros():
    x, h0, w_ih, w_hh, b_ih, b_hh = _draw(np.random.default_rng(1), np.float64)
    (o1, h1), _ = rnn_forward(x, None, w_ih, w_hh, b_ih, b_hh)
    (o2, _), _ = rnn_forward(x, np.zeros_like(h0), w_ih, w_hh, b_ih, b_hh)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(h1, o1[-1])


def test_op_bad_arguments():
    x, h0, w_ih, w_hh, b_ih, _ = _draw(np.random.default_rng(1), np.float64)
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


# -- conformance with torch.nn.RNN itself ----------------------------------------------------------------
@pytest.mark.torch
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_h0", [True, False])
def test_torch_nn_rnn_conformance(nonlinearity, bias, with_h0):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    draw = _draw_relu if nonlinearity == "relu" else _draw
    arrays = draw(rng, np.float64, T=6, N=3, I=4, H=5, bias=bias)
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


# -- the layer -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_layer_gradcheck(nonlinearity):
    rng = np.random.default_rng(2)
    layer = RNN(2, 3, nonlinearity=nonlinearity, dtype=np.float64, rng=1)
    if nonlinearity == "relu":
        x, _, w_ih, w_hh, b_ih, b_hh = _draw_relu(rng, np.float64)
        h0 = np.zeros((3, 3))
        while np.abs(_preacts(x, h0, w_ih, w_hh, b_ih, b_hh)).min() < 0.05:
            x, _, w_ih, w_hh, b_ih, b_hh = _draw(rng, np.float64)
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


# -- tasks -----------------------------------------------------------------------------------------------
def test_adding_problem():
    x, y = adding_problem(50, 20, rng=0)
    assert x.shape == (20, 50, 2) and y.shape == (50, 1)
    assert x.dtype == np.float32 and y.dtype == np.float32
    m = x[:, :, 1]
    assert set(np.unique(m)) == {0.0, 1.0}
    assert np.all(m.sum(axis=0) == 2)
    assert np.all(m[:10].sum(axis=0) == 1) and np.all(m[10:].sum(axis=0) == 1)
    assert np.all((x[:, :, 0] >= 0) & (x[:, :, 0] < 1))
    np.testing.assert_allclose(y[:, 0], (x[:, :, 0] * m).sum(axis=0), rtol=1e-6)
    x2, y2 = adding_problem(50, 20, rng=0)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert not np.array_equal(x, adding_problem(50, 20, rng=1)[0])
    assert adding_problem(3, 5, rng=0, dtype=np.float64)[0].dtype == np.float64
    with pytest.raises(ValueError, match="T"):
        adding_problem(3, 1)


def test_copy_memory():
    T, mem, K = 15, 4, 6
    x, y = copy_memory(7, T, n_symbols=K, memory=mem, rng=0)
    L = T + 2 * mem
    assert x.shape == (L, 7, K + 2) and y.shape == (L, 7) and y.dtype == np.int64
    assert np.all(x.sum(axis=-1) == 1)
    seq = x.argmax(axis=-1)
    assert np.all((seq[:mem] >= 1) & (seq[:mem] <= K))
    assert np.all(seq[mem:mem + T - 1] == 0)
    assert np.all(seq[mem + T - 1] == K + 1)
    assert np.all(seq[mem + T:] == 0)
    assert np.all(y[:T + mem] == 0)
    np.testing.assert_array_equal(y[T + mem:], seq[:mem])
    x2, y2 = copy_memory(7, T, n_symbols=K, memory=mem, rng=0)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert copy_memory_baseline(100, 8, 10) == pytest.approx(10 * np.log(8) / 120)
    with pytest.raises(ValueError, match="memory"):
        copy_memory(2, 5, memory=0)
