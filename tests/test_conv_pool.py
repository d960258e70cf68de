"""Convolution and pooling: the fast conv kernel against its loop reference, pooling against loop references
and hand-computed values, dtypes, layouts, layers and their errors. (Gradient checks and PyTorch
conformance of the registered samples run in test_registry.py.)"""
import math

import numpy as np
import pytest

from orthoref.nn import AvgPool2d, Conv2d, Flatten, GlobalAvgPool2d, MaxPool2d
from orthoref.oracle import check_layer
from orthoref.ops.conv import conv2d_backward, conv2d_forward, conv2d_naive, conv2d_naive_backward
from orthoref.ops.pool import (
    avg_pool2d_backward, avg_pool2d_forward, flatten_backward, flatten_forward, global_avg_pool2d_backward,
    global_avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward,
)


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def out_size(n, k, s, p_total, d):
    return (n + p_total - d * (k - 1) - 1) // s + 1


# --------------------------------------------------------------------------------------------------------
# conv2d: fast kernel vs loop reference

CONV_CASES = [
    # x shape, w shape, kwargs
    ((2, 3, 7, 6), (4, 3, 3, 3), {}),
    ((2, 3, 7, 6), (4, 3, 3, 3), dict(stride=2, padding=1)),
    ((1, 2, 9, 8), (3, 2, 3, 2), dict(dilation=2)),
    ((2, 4, 6, 7), (6, 2, 3, 3), dict(groups=2, padding=1)),
    ((1, 6, 5, 5), (6, 1, 3, 3), dict(groups=6, padding=1)),                     # depthwise
    ((2, 2, 6, 9), (3, 2, 2, 4), dict(padding=(1, 2))),                          # asymmetric pair
    ((2, 2, 8, 7), (3, 2, 3, 1), dict(stride=(2, 1), padding=(0, 2), dilation=(1, 3))),
    ((1, 3, 6, 6), (2, 3, 4, 2), dict(padding="same")),                          # even kernel: extra bottom
    ((1, 3, 7, 6), (2, 3, 3, 2), dict(padding="same", dilation=(2, 1))),
    ((2, 3, 5, 5), (4, 3, 1, 1), dict(padding="valid")),
    ((1, 2, 5, 5), (2, 2, 5, 5), {}),                                            # kernel = input
    ((3, 1, 4, 10), (2, 1, 2, 3), dict(stride=(1, 3), padding=(1, 0))),
    ((1, 4, 7, 7), (4, 2, 2, 2), dict(groups=2, stride=3, dilation=2, padding=2)),
]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("x_shape,w_shape,kw", CONV_CASES)
def test_conv_fast_matches_naive(x_shape, w_shape, kw, bias):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0]) if bias else None
    y, cache = conv2d_forward(x, w, b, **kw)
    y_ref = conv2d_naive(x, w, b, **kw)
    assert y.shape == y_ref.shape
    assert rel(y, y_ref) < 1e-13
    dy = rng.standard_normal(y.shape)
    dx, dw, db = conv2d_backward(dy, cache)
    dx_ref, dw_ref, db_ref = conv2d_naive_backward(dy, x, w, b, **kw)
    assert rel(dx, dx_ref) < 1e-13 and rel(dw, dw_ref) < 1e-13
    if bias:
        assert rel(db, db_ref) < 1e-13
    else:
        assert db is None and db_ref is None


def test_conv_random_configs_match_naive():
    """Random small geometries (hypothesis): kernel, stride, dilation, padding, groups, batch."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=60, deadline=None, derandomize=True)
    @hypothesis.given(n=st.integers(1, 2), groups=st.integers(1, 3), cg=st.integers(1, 2),
                      og=st.integers(1, 2),
                      kh=st.integers(1, 3), kw=st.integers(1, 3), sh=st.integers(1, 3), sw=st.integers(1, 3),
                      dh=st.integers(1, 2), dw=st.integers(1, 2), ph=st.integers(0, 2), pw=st.integers(0, 2),
                      extra_h=st.integers(0, 4), extra_w=st.integers(0, 4), bias=st.booleans(),
                      seed=st.integers(0, 2**16))
    def check(n, groups, cg, og, kh, kw, sh, sw, dh, dw, ph, pw, extra_h, extra_w, bias, seed):
        rng = np.random.default_rng(seed)
        H = max(1, dh * (kh - 1) + 1 - 2 * ph + extra_h)
        W = max(1, dw * (kw - 1) + 1 - 2 * pw + extra_w)
        x = rng.standard_normal((n, groups * cg, H, W))
        w = rng.standard_normal((groups * og, cg, kh, kw))
        b = rng.standard_normal(groups * og) if bias else None
        kwargs = dict(stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), groups=groups)
        y, cache = conv2d_forward(x, w, b, **kwargs)
        assert y.shape == (n, groups * og, out_size(H, kh, sh, 2 * ph, dh), out_size(W, kw, sw, 2 * pw, dw))
        assert rel(y, conv2d_naive(x, w, b, **kwargs)) < 1e-12
        dy = rng.standard_normal(y.shape)
        for got, ref in zip(conv2d_backward(dy, cache), conv2d_naive_backward(dy, x, w, b, **kwargs)):
            if ref is None:
                assert got is None
            else:
                assert rel(got, ref) < 1e-12

    check()


def test_conv_naive_is_a_correlation():
    """The reference itself, on a case small enough to write down: a 1x1 image patch times a kernel."""
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    w = np.array([[[[1.0, 0.0], [0.0, -1.0]]]])                     # y = x[h, w] - x[h+1, w+1]
    expected = np.full((1, 1, 2, 2), -4.0)
    assert np.array_equal(conv2d_naive(x, w), expected)
    y, _ = conv2d_forward(x, w)
    assert np.array_equal(y, expected)


def test_padding_same_is_explicit_asymmetric_padding():
    """'same' pads d(k-1) in total per axis, the odd element at the bottom/right (PyTorch's rule)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 6, 7))
    w = rng.standard_normal((4, 3, 4, 3))                            # kh=4: 3 rows of padding, 1 top 2 bottom
    y, cache = conv2d_forward(x, w, padding="same", dilation=(1, 2))  # kw=3, d=2: 2 left 2 right
    xp = np.pad(x, ((0, 0), (0, 0), (1, 2), (2, 2)))
    y_ref, cache_ref = conv2d_forward(xp, w, padding="valid", dilation=(1, 2))
    assert y.shape == (2, 4, 6, 7)
    assert rel(y, y_ref) < 1e-14
    dy = rng.standard_normal(y.shape)
    dx = conv2d_backward(dy, cache)[0]
    dxp = conv2d_backward(dy, cache_ref)[0]
    assert rel(dx, dxp[:, :, 1:7, 2:9]) < 1e-14


def test_conv_float32_stays_float32():
    rng = np.random.default_rng(2)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((3, 4, 9, 8), (6, 2, 3, 3), (6,)))
    y, cache = conv2d_forward(x, w, b, padding=1, groups=2)
    assert cache.cols.dtype == np.float32                             # the column matrix too
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw, db = conv2d_backward(dy, cache)
    assert y.dtype == dx.dtype == dw.dtype == db.dtype == np.float32
    y64, c64 = conv2d_forward(*(a.astype(np.float64) for a in (x, w, b)), padding=1, groups=2)
    g64 = conv2d_backward(dy.astype(np.float64), c64)
    assert rel(y, y64) < 1e-5
    for g, r in zip((dx, dw, db), g64):
        assert rel(g, r) < 1e-5


def test_conv_need_dx_false():
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    y, cache = conv2d_forward(x, w, b, stride=2)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = conv2d_backward(dy, cache, need_dx=False)
    assert dx is None
    _, dw_ref, db_ref = conv2d_naive_backward(dy, x, w, b, stride=2)
    assert rel(dw, dw_ref) < 1e-13 and rel(db, db_ref) < 1e-13


@pytest.mark.parametrize("w_shape,kw", [((3, 4, 3, 3), dict(padding=1)), ((3, 4, 1, 1), {}),
                                         ((3, 4, 5, 4), {}), ((3, 4, 1, 2), dict(padding=(0, 1)))])
def test_conv_backward_twice_and_input_untouched(w_shape, kw):
    """The backward writes X̄_col over the cached column matrix: it must never write into x (even when the
    columns could be a view of it), and a second backward on the same cache must give the same result."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((4, 5, 4, 2)).transpose(3, 0, 1, 2)     # (2, 4, 5, 4), batch-last in memory
    x_before = x.copy()
    w = rng.standard_normal(w_shape)
    y, cache = conv2d_forward(x, w, **kw)
    dy = rng.standard_normal(y.shape[1:] + y.shape[:1]).transpose(3, 0, 1, 2)
    first = conv2d_backward(dy, cache)
    assert np.array_equal(x, x_before)
    second = conv2d_backward(dy, cache)
    ref = conv2d_naive_backward(dy, x_before, w, **kw)
    for a, b, r in zip(first[:2], second[:2], ref[:2]):
        assert rel(a, r) < 1e-13 and np.array_equal(a, b)


def test_conv_accepts_strided_views_and_unbatched():
    rng = np.random.default_rng(4)
    base = rng.standard_normal((3, 2, 7, 8))
    x = base[:, :, ::-1, 1::2].transpose(0, 1, 3, 2)                # negative and doubled strides, transposed
    w = rng.standard_normal((2, 2, 2, 3))
    for kw in ({}, dict(padding=1)):
        y, cache = conv2d_forward(x, w, **kw)
        y_ref = conv2d_naive(np.ascontiguousarray(x), w, **kw)
        assert rel(y, y_ref) < 1e-13
        dy = rng.standard_normal(y.shape)
        dx_ref = conv2d_naive_backward(dy, np.ascontiguousarray(x), w, **kw)[0]
        assert rel(conv2d_backward(dy, cache)[0], dx_ref) < 1e-13
    y1, c1 = conv2d_forward(x[1], w, padding=1)
    yb, cb = conv2d_forward(x[1:2], w, padding=1)
    assert y1.shape == yb.shape[1:] and rel(y1, yb[0]) < 1e-15
    dy = rng.standard_normal(y1.shape)
    dx1, dw1, _ = conv2d_backward(dy, c1)
    dxb, dwb, _ = conv2d_backward(dy[None], cb)
    assert dx1.shape == x[1].shape and rel(dx1, dxb[0]) < 1e-15 and rel(dw1, dwb) < 1e-15


@pytest.mark.parametrize("bad,err,match", [
    (dict(x=(2, 3, 5)), ValueError, "channels"),                    # unbatched with the wrong channel count
    (dict(x=(2, 4, 5, 5)), ValueError, "channels"),
    (dict(x=(5, 5)), ValueError, "3-D"),
    (dict(w=(4, 3, 3)), ValueError, "4-D weight"),
    (dict(groups=2), ValueError, "groups"),
    (dict(x=(1, 3, 2, 2)), ValueError, "smaller than"),
    (dict(padding="full"), ValueError, "padding"),
    (dict(padding="same", stride=2), ValueError, "strided"),
    (dict(padding=-1), ValueError, "padding"),
    (dict(stride=0), ValueError, "stride"),
    (dict(dilation=(1, 2, 3)), TypeError, "dilation"),
    (dict(b=(3,)), ValueError, "bias"),
    (dict(w_dtype=np.float32), TypeError, "dtype"),
])
def test_conv_op_errors(bad, err, match):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(bad.pop("x", (2, 3, 5, 5)))
    w = rng.standard_normal(bad.pop("w", (4, 3, 3, 3))).astype(bad.pop("w_dtype", np.float64))
    b = rng.standard_normal(bad.pop("b")) if "b" in bad else None
    with pytest.raises(err, match=match):
        conv2d_forward(x, w, b, **bad)


# --------------------------------------------------------------------------------------------------------
# Pooling against loop references and written-down values

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


# --------------------------------------------------------------------------------------------------------
# Layers

def test_conv2d_default_init_bound():
    """U(-1/√fan_in, 1/√fan_in) with fan_in = in/groups · kh · kw, for weight and bias (PyTorch's default)."""
    layer = Conv2d(8, 32, (3, 5), groups=4, rng=0)
    bound = 1 / math.sqrt(2 * 3 * 5)
    assert layer.weight.shape == (32, 2, 3, 5) and layer.weight.dtype == np.float32
    w, b = np.abs(layer.weight.data), np.abs(layer.bias.data)
    assert w.max() <= bound and w.max() > 0.97 * bound               # 960 draws reach the bound
    assert b.max() <= bound and abs(float(layer.weight.data.mean())) < 0.1 * bound
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    t = torch.nn.Conv2d(8, 32, (3, 5), groups=4)                       # the bound PyTorch really uses
    tw = t.weight.detach().abs().max().item()
    assert 0.97 * bound < tw <= bound * (1 + 1e-6)


def test_conv2d_layer_matches_op_and_accumulates():
    rng = np.random.default_rng(8)
    layer = Conv2d(4, 6, 3, stride=2, padding=1, groups=2, dtype=np.float64, rng=1)
    x = rng.standard_normal((2, 4, 7, 7))
    y = layer(x)
    y_ref = conv2d_naive(x, layer.weight.data, layer.bias.data, stride=2, padding=1, groups=2)
    assert y.dtype == np.float64 and rel(y, y_ref) < 1e-13
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    dx_ref, dw_ref, db_ref = conv2d_naive_backward(dy, x, layer.weight.data, layer.bias.data, stride=2,
                                                   padding=1, groups=2)
    assert rel(dx, dx_ref) < 1e-13
    assert rel(layer.weight.grad, dw_ref) < 1e-13 and rel(layer.bias.grad, db_ref) < 1e-13
    assert layer.backward(dy, input_grad=False) is None
    assert rel(layer.weight.grad, 2 * dw_ref) < 1e-13 and rel(layer.bias.grad, 2 * db_ref) < 1e-13
    assert "groups=2" in repr(layer) and "stride=(2, 2)" in repr(layer)


@pytest.mark.parametrize("make,shape", [
    (lambda: Conv2d(2, 3, (2, 3), padding="same", bias=False, dtype=np.float64, rng=0), (2, 2, 5, 4)),
    (lambda: Conv2d(2, 2, 3, dilation=2, groups=2, dtype=np.float64, rng=0), (1, 2, 6, 6)),
    (lambda: MaxPool2d(3, stride=2, padding=1), (1, 2, 5, 6)),
    (lambda: AvgPool2d(2, stride=1, padding=1, count_include_pad=False), (1, 2, 4, 3)),
    (lambda: GlobalAvgPool2d(), (2, 3, 3, 4)),
    (lambda: Flatten(), (2, 3, 2, 2)),
])
def test_layers_float64_gradcheck(make, shape):
    rng = np.random.default_rng(9)
    n = math.prod(shape)
    x = ((rng.permutation(n) - n / 2) * 0.1 + rng.uniform(-0.01, 0.01, n)).reshape(shape)   # distinct values
    layer = make()
    assert layer(x).dtype == np.float64
    check_layer(layer, x, rtol=1e-8, n_directions=3)


@pytest.mark.parametrize("make,x,err,match", [
    (lambda: Conv2d(3, 4, 3), np.zeros((2, 3, 5, 5)), TypeError, r"Conv2d.*float64.*float32"),
    (lambda: Conv2d(3, 4, 3), np.zeros((2, 3, 5, 5), np.int32), TypeError, "Conv2d"),
    (lambda: Conv2d(3, 4, 3), np.zeros((2, 4, 5, 5), np.float32), ValueError,
     r"Conv2d.*3 channels.*\(2, 4, 5, 5\)"),
    (lambda: Conv2d(3, 4, 3), np.zeros((3, 5), np.float32), ValueError, r"Conv2d.*3-D or 4-D.*\(3, 5\)"),
    (lambda: Conv2d(3, 4, 3), np.zeros((1, 3, 2, 9), np.float32), ValueError, "Conv2d.*smaller than"),
    (lambda: Conv2d(3, 4, 3), [[1.0]], TypeError, "Conv2d.*array"),
    (lambda: MaxPool2d(3), np.zeros((1, 1, 2, 2)), ValueError, "MaxPool2d.*smaller than"),
    (lambda: MaxPool2d(2), np.zeros((1, 1, 1, 2, 2)), ValueError, r"MaxPool2d.*\(1, 1, 1, 2, 2\)"),
    (lambda: AvgPool2d(2), np.zeros((4, 4)), ValueError, "AvgPool2d.*3-D or 4-D"),
    (lambda: AvgPool2d(2), np.zeros((1, 1, 4, 4), np.int64), TypeError, "AvgPool2d"),
    (lambda: AvgPool2d(4), np.zeros((1, 1, 3, 8)), ValueError, "AvgPool2d.*smaller than"),
    (lambda: GlobalAvgPool2d(), np.zeros((2, 3)), ValueError, "GlobalAvgPool2d"),
    (lambda: Flatten(2, 5), np.zeros((2, 3, 4)), ValueError, "Flatten.*out of range"),
])
def test_layer_bad_input(make, x, err, match):
    with pytest.raises(err, match=match):
        make()(x)


@pytest.mark.parametrize("make,match", [
    (lambda: Conv2d(3, 4, 3, groups=2), "divisible by groups"),
    (lambda: Conv2d(4, 3, 3, groups=2), "divisible by groups"),
    (lambda: Conv2d(0, 4, 3), "in_channels"),
    (lambda: Conv2d(3, 4, 0), "kernel_size"),
    (lambda: Conv2d(3, 4, 3, stride=0), "stride"),
    (lambda: Conv2d(3, 4, 3, padding=-1), "padding"),
    (lambda: Conv2d(3, 4, 3, padding="same", stride=2), "strided"),
    (lambda: Conv2d(3, 4, 3, padding="full"), "padding"),
    (lambda: Conv2d(3, 4, 3, dtype=np.int32), "float32 or float64"),
    (lambda: MaxPool2d(2, padding=2), "half"),
    (lambda: MaxPool2d((2, 2, 2)), "kernel_size"),
    (lambda: AvgPool2d(3, stride=0), "stride"),
    (lambda: AvgPool2d(2, divisor_override=-1), "divisor_override"),
    (lambda: Flatten(1.5), "start_dim"),
])
def test_layer_bad_arguments(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_pool_layers_input_grad_false_and_backward_before_forward():
    pool = MaxPool2d(2)
    with pytest.raises(RuntimeError, match="before forward"):
        pool.backward(np.zeros((1, 1, 1, 1)))
    y = pool(np.arange(16.0).reshape(1, 1, 4, 4))
    assert pool.backward(np.ones_like(y), input_grad=False) is None
    assert np.array_equal(y[0, 0], [[5, 7], [13, 15]])
