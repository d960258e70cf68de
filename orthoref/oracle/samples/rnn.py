"""Samples of valid inputs and registry entries: the Elman RNN (op and layer).

:func:`draw`, :func:`draw_relu` and :func:`preacts` are also the tests' source of inputs
(``tests/test_ops_rnn.py``, ``tests/test_nn_rnn.py``).
"""
from __future__ import annotations

import numpy as np

from ..._checks import check_ndim
from ...nn.rnn import RNN
from ...ops.rnn import rnn_backward, rnn_forward
from ..registry import OpSpec, Sample, from_layer, from_pair
from ..torch_twins import torch_nn_rnn, torch_rnn


def draw(rng, dtype, T=4, N=3, I=2, H=3, bias=True):
    """``[x, h0, w_ih, w_hh(, b_ih, b_hh)]`` in ``dtype``: standard normal ``x``, ``h0`` of scale 0.5,
    weights and biases uniform in twice PyTorch's default bound ``1/√H``."""
    x = rng.standard_normal((T, N, I))
    h0 = 0.5 * rng.standard_normal((N, H))
    bound = 1.0 / H ** 0.5
    w_ih = rng.uniform(-bound, bound, (H, I)) * 2
    w_hh = rng.uniform(-bound, bound, (H, H)) * 2
    bs = (rng.uniform(-bound, bound, H), rng.uniform(-bound, bound, H)) if bias else ()
    return [a.astype(dtype) for a in (x, h0, w_ih, w_hh) + bs]


def preacts(x, h0, w_ih, w_hh, b_ih=None, b_hh=None):
    """Every step's relu pre-activation, in float64 (for keeping samples off the kink)."""
    h = h0.astype(np.float64)
    pre = []
    for t in range(x.shape[0]):
        a = x[t].astype(np.float64) @ w_ih.T.astype(np.float64) + h @ w_hh.T.astype(np.float64)
        if b_ih is not None:
            a = a + b_ih + b_hh
        pre.append(a)
        h = np.maximum(a, 0)
    return np.stack(pre)


def draw_relu(rng, dtype, margin=0.05, **kw):
    """:func:`draw` again until every relu pre-activation is at least ``margin`` away from 0."""
    for _ in range(1000):
        arrays = draw(rng, dtype, **kw)
        if np.abs(preacts(*arrays)).min() >= margin:
            return arrays
    raise RuntimeError("rnn_relu sampler: no draw kept every pre-activation off 0")  # pragma: no cover


def _samples_tanh(rng, dtype):
    return [Sample(tuple(draw(rng, dtype)), {"nonlinearity": "tanh"}, label="T4 N3 I2 H3"),
            Sample(tuple(draw(rng, dtype, T=1, N=2, I=3, H=2)), {"nonlinearity": "tanh"}, label="T1")]


def _samples_relu(rng, dtype):
    return [Sample(tuple(draw_relu(rng, dtype)), {"nonlinearity": "relu"}, label="T4 N3 I2 H3")]


def _rnn_vjp(cotangents, cache):
    return rnn_backward(cotangents[0], cotangents[1], cache)


def _layer_samples(rng, dtype):
    x, _, w_ih, w_hh, b_ih, b_hh = draw(rng, dtype)
    return [Sample((x, w_ih, w_hh, b_ih, b_hh), label="T4 N3 I2 H3")]


# ---------------------------------------------------------------------------------------------------------
# Stress samples (OpSpec.stress): a batch of one, a long sequence through an orthogonal recurrent weight (the
# gradient travels back 50 steps), a hidden size of one.

def _orthogonal(rng, n):
    Q, R = np.linalg.qr(rng.standard_normal((n, n)))
    return Q * np.sign(np.diag(R))


def _stress_arrays(rng, dtype):
    """``(arrays, label)`` in the op's order ``x, h0, w_ih, w_hh, b_ih, b_hh``."""
    out = [(draw(rng, np.float64, T=4, N=1, I=3, H=3), "stress: batch of one")]
    arrays = draw(rng, np.float64, T=50, N=2, I=2, H=4)
    arrays[3] = _orthogonal(rng, 4)
    out.append((arrays, "stress: 50 steps, orthogonal w_hh"))
    out.append((draw(rng, np.float64, T=6, N=2, I=3, H=1), "stress: hidden size 1"))
    return [([a.astype(dtype) for a in arrays], label) for arrays, label in out]


def _stress_tanh(rng, dtype):
    return [Sample(tuple(arrays), {"nonlinearity": "tanh"}, label) for arrays, label in _stress_arrays(rng, dtype)]


def _layer_stress(rng, dtype):
    return [Sample((x, w_ih, w_hh, b_ih, b_hh), label=label)
            for (x, _, w_ih, w_hh, b_ih, b_hh), label in _stress_arrays(rng, dtype)]


def _build_rnn(w_ih, w_hh, b_ih, b_hh, **kw):
    check_ndim("nn.RNN", "weight_ih_l0", w_ih, (2,))
    layer = RNN(w_ih.shape[1], w_ih.shape[0], dtype=w_ih.dtype, rng=0, **kw)
    layer.weight_ih_l0.data, layer.weight_hh_l0.data = w_ih, w_hh
    layer.bias_ih_l0.data, layer.bias_hh_l0.data = b_ih, b_hh
    return layer, [layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0]


OPS = [
    OpSpec("rnn", from_pair(rnn_forward, _rnn_vjp, n_out=2), _samples_tanh, torch=torch_rnn,
           stress=_stress_tanh, complex_step=True,
           doc="Elman RNN, tanh: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)"),
    OpSpec("rnn_relu", from_pair(rnn_forward, _rnn_vjp, n_out=2), _samples_relu, torch=torch_rnn,
           doc="Elman RNN, relu: h_t = relu(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)", complex_step=True),
]

LAYERS = [
    OpSpec("nn.RNN", from_layer(_build_rnn), _layer_samples, torch=torch_nn_rnn, kind="layer", stress=_layer_stress,
           doc="Elman RNN layer (tanh), output of every step"),
]
