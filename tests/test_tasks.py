"""Tests of orthoref/tasks.py: the adding problem and copy-memory sequence tasks."""
import numpy as np
import pytest

from orthoref.tasks import adding_problem, copy_memory, copy_memory_baseline


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
