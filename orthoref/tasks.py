"""Synthetic long-memory sequence tasks for recurrent networks (time-major, as ``orthoref.nn.RNN``).

- ``adding_problem``: Hochreiter & Schmidhuber (1997); the variant of Le, Jaitly & Hinton (2015) and
  Arjovsky, Shah & Bengio (2016).
- ``copy_memory``: Hochreiter & Schmidhuber (1997); the variant of Arjovsky, Shah & Bengio (2016).

Every draw comes from one host ``rng`` (a ``numpy.random.Generator`` or a non-negative seed), so a seed
fixes the set. Arguments are checked first: ``TypeError`` for a non-int size (``2.5``, ``True``), a dtype
other than float32/float64 or another kind of ``rng``; ``ValueError`` for a size out of range (the sizes
are capped at :data:`MAX_ELEMENTS` elements of ``x``, so that a typo cannot ask for terabytes).
"""
from __future__ import annotations

import math

import numpy as np

from ._checks import check_int, float_dtype
from .backend import host_rng

__all__ = ["adding_baseline_mse", "adding_problem", "copy_memory", "copy_memory_baseline", "MAX_ELEMENTS"]

#: The largest number of elements the input ``x`` of a task may have (2**27: 512 MiB in float32, a few GiB
#: at the peak of the float64 draws).
MAX_ELEMENTS = 2 ** 27


def _check_size(who, shape):
    if math.prod(shape) > MAX_ELEMENTS:
        raise ValueError(f"{who}: x would have shape {shape} ({math.prod(shape):.3g} elements), more than "
                         f"the {MAX_ELEMENTS} allowed; ask for fewer or shorter sequences")


def adding_problem(n, T, rng=None, dtype=np.float32):
    """The adding problem: sum the two marked numbers of a length-``T`` sequence.

    Parameters
    ----------
    n : int
        Number of sequences.
    T : int, >= 2
        Sequence length.
    rng : numpy.random.Generator, int or None
    dtype : float32 or float64

    Returns
    -------
    x : (T, n, 2) array
        ``x[:, i, 0]`` uniform on ``[0, 1)``; ``x[:, i, 1]`` a 0/1 marker with exactly two ones, one at a
        uniformly drawn step of the first half ``[0, T//2)`` and one of the second half ``[T//2, T)``.
    y : (n, 1) array
        The sum of the two marked values, in ``[0, 2)``.

    Predicting the constant 1 gives a mean squared error of 1/6 (≈ 0.167), the usual baseline
    (:func:`adding_baseline_mse`).
    """
    who = "adding_problem"
    n = check_int(who, "n", n, 1)
    T = check_int(who, "T", T, 2)
    dt = float_dtype(who, dtype)
    _check_size(who, (T, n, 2))
    gen = host_rng(rng, who=who)
    values = gen.uniform(0.0, 1.0, size=(T, n))
    half = T // 2
    first = gen.integers(0, half, size=n)
    second = gen.integers(half, T, size=n)
    markers = np.zeros((T, n))
    cols = np.arange(n)
    markers[first, cols] = 1.0
    markers[second, cols] = 1.0
    x = np.stack([values, markers], axis=-1).astype(dt)
    y = (values[first, cols] + values[second, cols])[:, None].astype(dt)
    return x, y


def adding_baseline_mse():
    """MSE of always predicting 1 on the adding problem: ``Var(u₁ + u₂) = 2/12 = 1/6``."""
    return 1.0 / 6.0


def copy_memory(n, T, n_symbols=8, memory=10, rng=None, dtype=np.float32):
    """The copy-memory task: remember ``memory`` symbols over a delay of ``T`` steps, then repeat them.

    Following Arjovsky, Shah & Bengio (2016): category 0 is the blank, ``1..n_symbols`` the data symbols and
    ``n_symbols + 1`` the delimiter. Each input sequence, of length ``L = T + 2·memory``, is

    ``memory`` random symbols (uniform on ``1..n_symbols``), ``T - 1`` blanks, the delimiter, ``memory``
    blanks;

    and its target is ``T + memory`` blanks followed by the same ``memory`` symbols.

    Parameters
    ----------
    n : int
        Number of sequences.
    T : int, >= 1
        The delay (Arjovsky et al. use T = 100 ... 2000).
    n_symbols : int, >= 1
    memory : int, >= 1
    rng : numpy.random.Generator, int or None
    dtype : float32 or float64, for ``x``

    Returns
    -------
    x : (L, n, n_symbols + 2) array
        One-hot encoding of the input categories.
    y : (L, n) int64 array
        Target categories (for a cross-entropy over ``n_symbols + 2`` classes at every step).

    Predicting blanks until the delimiter and then uniform symbols gives the baseline cross-entropy
    ``memory · log(n_symbols) / (T + 2·memory)`` per step (:func:`copy_memory_baseline`).
    """
    who = "copy_memory"
    n = check_int(who, "n", n, 1)
    T = check_int(who, "T", T, 1)
    n_symbols = check_int(who, "n_symbols", n_symbols, 1)
    memory = check_int(who, "memory", memory, 1)
    dt = float_dtype(who, dtype)
    _check_size(who, (T + 2 * memory, n, n_symbols + 2))
    gen = host_rng(rng, who=who)
    L = T + 2 * memory
    symbols = gen.integers(1, n_symbols + 1, size=(memory, n))
    seq = np.zeros((L, n), dtype=np.int64)
    seq[:memory] = symbols
    seq[memory + T - 1] = n_symbols + 1
    y = np.zeros((L, n), dtype=np.int64)
    y[T + memory:] = symbols
    x = np.zeros((L, n, n_symbols + 2), dtype=dt)
    np.put_along_axis(x, seq[..., None], 1.0, axis=-1)
    return x, y


def copy_memory_baseline(T, n_symbols=8, memory=10):
    """Per-step cross-entropy of the memoryless strategy on :func:`copy_memory` (Arjovsky et al. 2016)."""
    who = "copy_memory_baseline"
    T = check_int(who, "T", T, 1)
    n_symbols = check_int(who, "n_symbols", n_symbols, 1)
    memory = check_int(who, "memory", memory, 1)
    return memory * math.log(n_symbols) / (T + 2 * memory)
