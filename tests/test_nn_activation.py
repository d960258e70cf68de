"""Tests of orthoref/nn/activation.py: the activation and Dropout layers (train/eval, reproducible masks,
argument checks, float32)."""
import numpy as np
import pytest

from orthoref import nn
from orthoref.ops.activation import dropout_backward, dropout_forward


def test_dropout_eval_and_p0_are_identity():
    x = np.random.default_rng(4).standard_normal((5, 6))
    layer = nn.Dropout(0.7, rng=0).eval()
    assert layer.forward(x) is x
    dy = np.ones_like(x)
    assert layer.backward(dy) is dy
    y, cache = dropout_forward(x, 0.0, rng=0)
    assert y is x and dropout_backward(dy, cache) is dy
    y, _ = dropout_forward(x, 0.5, rng=0, training=False)
    assert y is x


def test_dropout_reproducible_and_fresh_masks():
    x = np.ones((50, 40))
    a, b = nn.Dropout(0.5, rng=42), nn.Dropout(0.5, rng=42)
    ya1, yb1 = a.forward(x), b.forward(x)
    ya2, yb2 = a.forward(x), b.forward(x)
    assert np.array_equal(ya1, yb1) and np.array_equal(ya2, yb2), "same seed, same masks"
    assert not np.array_equal(ya1, ya2), "each training forward draws a new mask"
    # an int seed to the op is a fixed mask; the same mask for float32 and float64
    m64 = dropout_forward(x, 0.3, rng=9)[0] != 0
    m32 = dropout_forward(x.astype(np.float32), 0.3, rng=9)[0] != 0
    assert np.array_equal(m64, m32) and np.array_equal(m64, dropout_forward(x, 0.3, rng=9)[0] != 0)
    gen = np.random.default_rng(9)
    assert not np.array_equal(dropout_forward(x, 0.3, rng=gen)[0], dropout_forward(x, 0.3, rng=gen)[0])


@pytest.mark.parametrize("p,exc", [(-0.1, ValueError), (1.0, ValueError), (1.5, ValueError),
                                   (float("nan"), ValueError), ("0.5", TypeError), (True, TypeError),
                                   (None, TypeError)])
def test_dropout_p_validation(p, exc):
    with pytest.raises(exc, match="dropout probability p"):
        nn.Dropout(p)
    with pytest.raises(exc, match="dropout probability p"):
        dropout_forward(np.ones(3), p, rng=0)


def test_dropout_rejects_legacy_random_state():
    with pytest.raises(TypeError, match="rng"):
        nn.Dropout(0.5, rng=np.random.RandomState(0))


@pytest.mark.parametrize("layer", [nn.ReLU(), nn.LeakyReLU(), nn.Tanh(), nn.Sigmoid(), nn.GELU(),
                                   nn.GELU("tanh"), nn.Dropout(0.5, rng=0), nn.BatchNorm1d(4), nn.BatchNorm2d(4)],
                         ids=lambda l: repr(l))
def test_layers_keep_float32(layer):
    shape = (3, 4, 2, 2) if isinstance(layer, nn.BatchNorm2d) else (3, 4)
    x = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    y = layer.forward(x)
    dx = layer.backward(np.ones_like(y))
    assert y.dtype == np.float32 and dx.dtype == np.float32
    for p in layer.parameters():
        assert p.grad.dtype == np.float32
    for _, b in layer.named_buffers():
        assert b.dtype in (np.float32, np.int64)
