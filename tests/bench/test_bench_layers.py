"""pytest-benchmark micro-benchmarks: the linear and conv2d ops, forward + backward.

Normal runs execute each body once (``--benchmark-disable`` in pyproject's ``addopts``); for numbers:
``pytest tests/bench --benchmark-enable --benchmark-autosave --benchmark-group-by=group``. Each benchmark
checks its result with the adjoint identity of a linear map, ``<ȳ, y> = <x̄, x> + <b̄, b> = <W̄, W> + <b̄, b>``
(``y`` is linear in ``x`` and in ``W`` separately), so a wrong backward pass fails here too.
"""
import numpy as np
import pytest

from orthoref.ops import conv2d_backward, conv2d_forward, linear_backward, linear_forward


def _dot(a, b):
    return float(np.vdot(np.asarray(a, np.float64), np.asarray(b, np.float64)))


def _check_adjoint(y, dy, x, dx, w, dw, b, db, rtol=1e-4):
    lhs = _dot(dy, y)
    scale = abs(lhs) + np.linalg.norm(dy) * np.linalg.norm(y)
    assert abs(_dot(dx, x) + _dot(db, b) - lhs) <= rtol * scale
    assert abs(_dot(dw, w) + _dot(db, b) - lhs) <= rtol * scale


@pytest.mark.benchmark(group="layers")
def test_linear_forward_backward(benchmark):
    """``linear``: x (128, 512) → (128, 256), float32 (the MLP's second layer)."""
    gen = np.random.default_rng(0)
    x = gen.standard_normal((128, 512)).astype(np.float32)
    w = (gen.standard_normal((256, 512)) / np.sqrt(512)).astype(np.float32)
    b = gen.standard_normal(256).astype(np.float32)
    dy = gen.standard_normal((128, 256)).astype(np.float32)

    def step():
        y, cache = linear_forward(x, w, b)
        return (y.copy(),) + linear_backward(dy, cache)

    y, dx, dw, db = benchmark(step)
    assert y.shape == (128, 256) and dx.shape == x.shape and dw.shape == w.shape and db.shape == b.shape
    _check_adjoint(y, dy, x, dx, w, dw, b, db)


@pytest.mark.benchmark(group="layers")
def test_conv2d_forward_backward(benchmark):
    """``conv2d``: 3x3, padding 1, x (32, 32, 14, 14) → (32, 64, 14, 14), float32 (the small CNN's second
    convolution)."""
    gen = np.random.default_rng(1)
    x = gen.standard_normal((32, 32, 14, 14)).astype(np.float32)
    w = (gen.standard_normal((64, 32, 3, 3)) / np.sqrt(32 * 9)).astype(np.float32)
    b = gen.standard_normal(64).astype(np.float32)
    dy = gen.standard_normal((32, 64, 14, 14)).astype(np.float32)

    def step():
        y, cache = conv2d_forward(x, w, b, padding=1)
        y = np.array(y)                                 # conv2d_backward may reuse buffers behind the view
        return (y,) + conv2d_backward(dy, cache)

    y, dx, dw, db = benchmark(step)
    assert y.shape == dy.shape and dx.shape == x.shape and dw.shape == w.shape and db.shape == b.shape
    _check_adjoint(y, dy, x, dx, w, dw, b, db)
