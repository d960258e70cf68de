"""Tests of orthoref/ops/loss.py: cross-entropy and MSE values, reductions, extreme logits, errors and
agreement with PyTorch."""
import warnings

import numpy as np
import pytest

from orthoref import nn
from orthoref._checks import NonFiniteError
from orthoref.ops.loss import cross_entropy, mse


@pytest.fixture
def torch():
    """PyTorch, or a skip when it is missing (conftest.py already runs it on one thread)."""
    return pytest.importorskip("torch")


def _ce_reference(logits, labels):
    """Cross-entropy in extended precision (np.longdouble) from the definition, one row at a time."""
    z = logits.astype(np.longdouble)
    out = []
    for row, k in zip(z, labels):
        m = row.max()
        out.append(m + np.log(np.sum(np.exp(row - m))) - row[k])
    return np.array(out, dtype=np.longdouble)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_cross_entropy_extreme_logits(dt):
    logits = np.array([[1e4, -1e4, 0.0, 5e3],
                       [1e4, 1e4 - 1.0, -1e4, 0.0],
                       [-1e4, -1e4, -1e4, -1e4],
                       [3.0, -2.0, 1e4, 9999.5]], dtype=dt)
    labels = np.array([1, 1, 2, 3])
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error")
        loss, grad = cross_entropy(logits, labels)
        losses, _ = cross_entropy(logits, labels, reduction="none")
    assert loss.shape == () and loss.dtype == dt and isinstance(float(loss), float)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(grad))
    ref = _ce_reference(logits, labels)
    rtol = 1e-6 if dt == np.float32 else 1e-14
    np.testing.assert_allclose(losses.astype(np.float64), ref.astype(np.float64), rtol=rtol)
    np.testing.assert_allclose(float(loss), float(ref.mean()), rtol=rtol)
    # each row of the gradient is (softmax - onehot) / N: sums to zero, -1/N + p at the label
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=10 * np.finfo(dt).eps)
    np.testing.assert_allclose(grad[2], [0.0625, 0.0625, 0.0625 - 0.25, 0.0625], rtol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_a_sum_of_finite_losses_that_overflows_is_an_error(reduction):
    # each loss is 3.3e38, finite in float32; 128 of them sum to Inf (it was returned, with NumPy's warning)
    logits = np.tile(np.array([[1.7e38, -1.6e38]], np.float32), (128, 1))
    labels = np.ones(128, np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(NonFiniteError, match=r"cross_entropy: the loss overflows float32"):
            cross_entropy(logits, labels, reduction=reduction)
        losses, grad = cross_entropy(logits, labels, reduction="none")     # each one is finite
    assert np.all(np.isfinite(losses)) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(losses.astype(np.float64), 1.7e38 + 1.6e38, rtol=1e-6)


def test_cross_entropy_reductions_and_gradient_against_longdouble():
    rng = np.random.default_rng(9)
    logits = 4 * rng.standard_normal((7, 5))
    labels = rng.integers(0, 5, 7)
    ref = _ce_reference(logits, labels)
    z = logits.astype(np.longdouble)
    soft = np.exp(z - z.max(axis=1, keepdims=True))
    soft /= soft.sum(axis=1, keepdims=True)
    onehot = np.eye(5)[labels]
    for reduction, value, scale in (("mean", ref.mean(), 1 / 7), ("sum", ref.sum(), 1.0), ("none", ref, 1.0)):
        loss, grad = cross_entropy(logits, labels, reduction=reduction)
        np.testing.assert_allclose(np.asarray(loss, np.float64), np.asarray(value, np.float64), rtol=1e-14)
        np.testing.assert_allclose(grad, ((soft - onehot) * scale).astype(np.float64), rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("logits,labels,exc,words", [
    (np.zeros((3, 4)), np.array([0.0, 1.0, 2.0]), TypeError, ["labels", "integer", "float64"]),
    (np.zeros((3, 4)), [0, 1, 2], TypeError, ["labels", "list"]),
    (np.zeros((3, 4)), np.array([0, 4, 1]), ValueError, ["labels", "[0, 3]", "[0, 4]"]),
    (np.zeros((3, 4)), np.array([0, -1, 1]), ValueError, ["labels", "[0, 3]", "[-1, 1]"]),
    (np.zeros((3, 4)), np.array([[0], [1], [2]]), ValueError, ["labels", "(3,)", "(3, 1)"]),
    (np.zeros((3, 4)), np.array([0, 1]), ValueError, ["labels", "(3,)", "(2,)"]),
    (np.zeros(4), np.array([0]), ValueError, ["logits", "(N, C)", "(4,)"]),
    (np.zeros((3, 4), np.int64), np.array([0, 1, 2]), TypeError, ["logits", "int64"]),
    (np.array([[0.0, np.nan], [1.0, 2.0]]), np.array([0, 1]), ValueError, ["logits", "NaN"]),
    (np.array([[0.0, -np.inf], [1.0, 2.0]]), np.array([0, 1]), ValueError, ["logits", "Inf"]),
])
def test_cross_entropy_bad_input(logits, labels, exc, words):
    with pytest.raises(exc) as info:
        cross_entropy(logits, labels)
    for w in words:
        assert w in str(info.value), f"{w!r} not in {info.value}"


def test_loss_reduction_validation_and_exports():
    with pytest.raises(ValueError, match="reduction"):
        cross_entropy(np.zeros((2, 3)), np.array([0, 1]), reduction="avg")
    with pytest.raises(ValueError, match="reduction"):
        mse(np.zeros(3), np.zeros(3), reduction="batchmean")
    assert nn.cross_entropy is cross_entropy and nn.mse is mse


def test_mse_values_and_errors():
    pred = np.array([[1.0, 2.0], [3.0, 5.0]])
    target = np.array([[0.0, 2.0], [1.0, 1.0]])
    loss, grad = mse(pred, target)
    assert loss.shape == () and float(loss) == (1 + 0 + 4 + 16) / 4
    np.testing.assert_array_equal(grad, [[0.5, 0.0], [1.0, 2.0]])
    loss, grad = mse(pred, target, reduction="sum")
    assert float(loss) == 21.0
    np.testing.assert_array_equal(grad, [[2.0, 0.0], [4.0, 8.0]])
    loss, grad = mse(pred, target, reduction="none")
    np.testing.assert_array_equal(loss, [[1.0, 0.0], [4.0, 16.0]])
    p32 = pred.astype(np.float32)
    l32, g32 = mse(p32, target.astype(np.float32))
    assert l32.dtype == g32.dtype == np.float32
    with pytest.raises(ValueError, match=r"target.*\(2, 2\).*\(4,\)"):
        mse(pred, target.reshape(4))
    with pytest.raises(TypeError, match="target.*float32.*float64"):
        mse(p32, target)
    with pytest.raises(TypeError, match="pred"):
        mse(np.array([1, 2]), np.array([1, 2]))


def test_losses_match_torch_float32(torch):
    import torch.nn.functional as F
    rng = np.random.default_rng(10)
    logits = (5 * rng.standard_normal((16, 7))).astype(np.float32)
    labels = rng.integers(0, 7, 16)
    zt = torch.tensor(logits, requires_grad=True)
    lt = F.cross_entropy(zt, torch.tensor(labels))
    lt.backward()
    loss, grad = cross_entropy(logits, labels)
    np.testing.assert_allclose(float(loss), lt.item(), rtol=1e-6)
    np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=1e-5, atol=1e-7)
