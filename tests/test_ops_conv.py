"""Tests of orthoref/ops/conv.py: the fast conv2d kernel against its loop reference, padding, dtypes, layouts
and errors (gradient checks and PyTorch conformance of the registered samples run in test_registry.py)."""
import numpy as np
import pytest

from orthoref.ops.conv import conv2d_backward, conv2d_forward, conv2d_naive, conv2d_naive_backward


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def out_size(n, k, s, p_total, d):
    return (n + p_total - d * (k - 1) - 1) // s + 1


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
