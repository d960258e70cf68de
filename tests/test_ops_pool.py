"""Tests of orthoref/ops/pool.py: max, average and global average pooling against loop references and
written-down values, dtypes, layouts, flatten and errors."""
import math

import numpy as np
import pytest

from orthoref.ops.conv import conv2d_forward
from orthoref.ops.pool import (
    avg_pool2d_backward, avg_pool2d_forward, flatten_backward, flatten_forward, global_avg_pool2d_backward,
    global_avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward,
)


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def naive_max_pool(x, k, s, p):
    """Loops; the gradient goes to the first strict maximum in row-major order."""
    N, C, H, W = x.shape
    Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    y = np.empty((N, C, Ho, Wo))
    where = {}
    for n in range(N):
        for c in range(C):
            for oh in range(Ho):
                for ow in range(Wo):
                    best, at = -math.inf, None
                    for i in range(k):
                        for j in range(k):
                            h, w = oh * s - p + i, ow * s - p + j
                            if 0 <= h < H and 0 <= w < W and (at is None or x[n, c, h, w] > best):
                                best, at = x[n, c, h, w], (h, w)
                    y[n, c, oh, ow], where[n, c, oh, ow] = best, at
    return y, where


def naive_avg_pool(x, k, s, p, count_include_pad):
    N, C, H, W = x.shape
    Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    y, members = np.zeros((N, C, Ho, Wo)), {}
    for oh in range(Ho):
        for ow in range(Wo):
            cells = [(oh * s - p + i, ow * s - p + j) for i in range(k) for j in range(k)]
            inside = [(h, w) for h, w in cells if 0 <= h < H and 0 <= w < W]
            div = len(cells) if count_include_pad else len(inside)
            members[oh, ow] = (inside, div)
            for h, w in inside:
                y[:, :, oh, ow] += x[:, :, h, w] / div
    return y, members


@pytest.mark.parametrize("k,s,p,shape", [
    (2, 2, 0, (2, 3, 7, 8)), (3, 2, 1, (2, 3, 7, 8)), (3, 1, 1, (2, 3, 7, 8)), (2, 1, 0, (2, 3, 7, 8)),
    (3, 3, 0, (2, 3, 7, 8)), (4, 2, 2, (2, 3, 7, 8)),
    (2, 2, 0, (2, 3, 8, 6)), (2, 2, 1, (1, 2, 6, 8)),                 # windows tile the (padded) input
])
def test_max_pool_matches_loops(k, s, p, shape):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape)
    x[0, 0, :4, :4] = 0.5                                            # ties too
    y, cache = max_pool2d_forward(x, k, s, p)
    y_ref, where = naive_max_pool(x, k, s, p)
    assert np.array_equal(y, y_ref)
    dy = rng.standard_normal(y.shape)
    dx_ref = np.zeros_like(x)
    for (n, c, oh, ow), (h, w) in where.items():
        dx_ref[n, c, h, w] += dy[n, c, oh, ow]
    assert rel(max_pool2d_backward(dy, cache), dx_ref) < 1e-15


def test_max_pool_tie_goes_to_first_in_row_major_order():
    x = np.array([[[[1.0, 3.0],
                    [3.0, 0.0]]]], dtype=np.float32)
    y, cache = max_pool2d_forward(x, 2)
    assert y.dtype == np.float32 and y.item() == 3.0
    dx = max_pool2d_backward(np.full((1, 1, 1, 1), 2.0, np.float32), cache)
    assert np.array_equal(dx, np.array([[[[0.0, 2.0], [0.0, 0.0]]]]))
    # overlapping windows on a constant image: every window sends its gradient to its top-left element
    x = np.ones((1, 1, 3, 4))
    y, cache = max_pool2d_forward(x, 2, stride=1)
    dy = np.arange(1.0, 7.0).reshape(1, 1, 2, 3)
    dx = max_pool2d_backward(dy, cache)
    expected = np.zeros((1, 1, 3, 4))
    expected[0, 0, :2, :3] = dy[0, 0]
    assert np.array_equal(dx, expected)


def test_max_pool_tie_rule_agrees_with_torch():
    torch = pytest.importorskip("torch")
    x = np.array([[[[1.0, 3.0, 3.0], [3.0, 0.0, 3.0], [2.0, 3.0, 3.0]]]])
    dy = np.array([[[[1.0, 10.0], [100.0, 1000.0]]]])
    y, cache = max_pool2d_forward(x, 2, stride=1)
    tx = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(tx, 2, stride=1).backward(torch.tensor(dy))
    assert np.array_equal(max_pool2d_backward(dy, cache), tx.grad.numpy())


def test_max_pool_refuses_nan_and_inf():
    for bad in (np.nan, np.inf, -np.inf):                 # PyTorch propagates a NaN; the oracle refuses it
        x = np.array([[[[1.0, bad, 2.0, 0.5], [0.0, 3.0, 1.0, 4.0]]]])
        with pytest.raises(ValueError, match="max_pool2d: x must be finite"):
            max_pool2d_forward(x, 2)


def test_max_pool_padding_is_minus_infinity():
    x = -np.arange(1.0, 10.0).reshape(1, 1, 3, 3)                   # all negative: zero padding would win
    y, _ = max_pool2d_forward(x, 3, stride=1, padding=1)
    assert np.array_equal(y[0, 0], [[-1, -1, -2], [-1, -1, -2], [-4, -4, -5]])


@pytest.mark.parametrize("include", [True, False])
@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 1, 1), (3, 2, 1), (2, 1, 1), (4, 3, 2)])
def test_avg_pool_matches_loops(k, s, p, include):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 2, 7, 6))
    y, cache = avg_pool2d_forward(x, k, s, p, count_include_pad=include)
    y_ref, members = naive_avg_pool(x, k, s, p, include)
    assert rel(y, y_ref) < 1e-14
    dy = rng.standard_normal(y.shape)
    dx_ref = np.zeros_like(x)
    for (oh, ow), (inside, div) in members.items():
        for h, w in inside:
            dx_ref[:, :, h, w] += dy[:, :, oh, ow] / div
    assert rel(avg_pool2d_backward(dy, cache), dx_ref) < 1e-14


def test_avg_pool_count_include_pad_values():
    x = np.ones((1, 1, 3, 3))
    y_in, _ = avg_pool2d_forward(x, 3, stride=1, padding=1, count_include_pad=True)
    y_ex, _ = avg_pool2d_forward(x, 3, stride=1, padding=1, count_include_pad=False)
    assert np.allclose(y_in[0, 0], np.array([[4, 6, 4], [6, 9, 6], [4, 6, 4]]) / 9, rtol=0, atol=1e-15)
    assert np.allclose(y_ex, 1.0, rtol=0, atol=1e-15)
    y_ov, _ = avg_pool2d_forward(x, 3, stride=1, padding=1, divisor_override=2)
    assert np.allclose(y_ov[0, 0], np.array([[4, 6, 4], [6, 9, 6], [4, 6, 4]]) / 2, rtol=0, atol=1e-15)


def test_pools_float32_and_layouts():
    """float32 in, float32 out; a conv output (a batch-last view) pools like its contiguous copy, and a
    C-contiguous dy gives the same gradients as one in the input's layout."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 3, 8, 8), dtype=np.float32)
    w = rng.standard_normal((5, 3, 3, 3), dtype=np.float32)
    h, _ = conv2d_forward(x, w, padding=1)
    assert not h.flags.c_contiguous
    hc = np.ascontiguousarray(h)
    for fwd, bwd, kw in [(max_pool2d_forward, max_pool2d_backward, dict(kernel_size=2)),
                         (max_pool2d_forward, max_pool2d_backward, dict(kernel_size=3, stride=2, padding=1)),
                         (avg_pool2d_forward, avg_pool2d_backward, dict(kernel_size=3, stride=2, padding=1))]:
        y, cache = fwd(h, **kw)
        yc, cache_c = fwd(hc, **kw)
        assert y.dtype == np.float32 and np.array_equal(y, yc)
        dy = rng.standard_normal(y.shape, dtype=np.float32)
        dx = bwd(dy, cache)
        assert dx.dtype == np.float32
        assert np.array_equal(dx, bwd(dy, cache_c))
        assert np.array_equal(dx, bwd(np.asfortranarray(dy), cache))
    g, cache = global_avg_pool2d_forward(h)
    assert g.dtype == np.float32 and g.shape == (4, 5)
    assert rel(g, hc.astype(np.float64).mean(axis=(2, 3))) < 1e-6
    dg = rng.standard_normal(g.shape, dtype=np.float32)
    dx = global_avg_pool2d_backward(dg, cache)
    assert dx.dtype == np.float32 and dx.shape == h.shape
    assert np.allclose(dx, dg[:, :, None, None] / 64, rtol=1e-6, atol=0)


def test_pool_op_errors():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="half"):
        max_pool2d_forward(x, 2, padding=2)
    with pytest.raises(ValueError, match="half"):
        avg_pool2d_forward(x, 3, padding=2)
    with pytest.raises(ValueError, match="smaller than"):
        max_pool2d_forward(x, 5)
    with pytest.raises(ValueError, match="4-D"):
        avg_pool2d_forward(np.zeros((4, 4)), 2)
    with pytest.raises(ValueError, match="kernel_size"):
        max_pool2d_forward(x, 0)
    with pytest.raises(ValueError, match="divisor_override"):
        avg_pool2d_forward(x, 2, divisor_override=0)
    with pytest.raises(ValueError, match="3-D or 4-D"):
        global_avg_pool2d_forward(np.zeros((2, 3)))


def test_flatten():
    x = np.arange(120.0).reshape(2, 3, 4, 5)
    cases = {(1, -1): (2, 60), (0, 1): (6, 4, 5), (-2, -1): (2, 3, 20), (2, 2): (2, 3, 4, 5)}
    for (s, e), shape in cases.items():
        y, cache = flatten_forward(x, s, e)
        assert y.shape == shape and np.array_equal(y.ravel(), x.ravel())
        assert flatten_backward(y, cache).shape == x.shape
    with pytest.raises(ValueError, match="comes after"):
        flatten_forward(x, 2, 1)
    with pytest.raises(ValueError, match="out of range"):
        flatten_forward(x, 4)
