"""Tests of orthoref/ops/norm.py: the batch-normalization op's errors and its need_dx=False path."""
import numpy as np
import pytest

from orthoref import nn
from orthoref.ops.norm import batch_norm_backward, batch_norm_forward


def test_batchnorm_op_errors_and_input_grad_false():
    x = np.random.default_rng(3).standard_normal((4, 3))
    with pytest.raises(ValueError, match="running_mean and running_var are required"):
        batch_norm_forward(x, None, None, None, None, training=False)
    with pytest.raises(TypeError, match="momentum"):
        batch_norm_forward(x, None, None, np.zeros(3), np.ones(3), training=True, momentum=None)
    with pytest.raises(ValueError, match=r"gamma \(weight\) must have shape \(3,\)"):
        batch_norm_forward(x, np.ones(4), None, None, None, training=True)
    y, cache = batch_norm_forward(x, np.ones(3), np.zeros(3), None, None, training=True)
    dx, dg, db = batch_norm_backward(np.ones_like(y), cache, need_dx=False)
    assert dx is None and dg.shape == db.shape == (3,)
    bn = nn.BatchNorm1d(3, dtype=np.float64)
    bn.forward(x)
    assert bn.backward(np.ones_like(x), input_grad=False) is None
    bn.backward(np.ones_like(x), input_grad=False)
    np.testing.assert_allclose(bn.bias.grad, 2 * 4 * np.ones(3))     # accumulated over two calls
