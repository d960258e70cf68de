"""Elman recurrent network (PyTorch's ``torch.nn.RNN``, one layer, ``batch_first=False``) with
hand-written backpropagation through time.

.. math::  a_t = x_t W_{ih}^\\top + b_{ih} + h_{t-1} W_{hh}^\\top + b_{hh}, \\qquad h_t = \\sigma(a_t),
           \\qquad \\sigma \\in \\{\\tanh, \\mathrm{relu}\\}

Weight layouts follow PyTorch: ``w_ih (hidden, input_size)``, ``w_hh (hidden, hidden)``.
"""
from __future__ import annotations

import numpy as np

from .._checks import check_choice, check_finite, check_floats
from ..backend import get_array_module
from ._contract import check_grad_meta, check_grads, check_output, check_same_dtype

__all__ = ["RNN_NONLINEARITIES", "rnn_backward", "rnn_forward"]

RNN_NONLINEARITIES = ("tanh", "relu")


def _check_args(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity):
    check_choice("rnn_forward", "nonlinearity", nonlinearity, RNN_NONLINEARITIES)
    named = (("x", x), ("h0", h0), ("w_ih", w_ih), ("w_hh", w_hh), ("b_ih", b_ih), ("b_hh", b_hh))
    check_floats("rnn_forward", *named, finite=False)
    check_same_dtype("rnn_forward", *named)
    if x.ndim != 3:
        raise ValueError(f"rnn_forward: x must be 3-D (T, N, input_size), got shape {tuple(getattr(x, 'shape', ()))}")
    T, N, I = x.shape
    if T < 1:
        raise ValueError(f"rnn_forward: x must hold at least one time step, got shape {tuple(x.shape)}")
    if w_ih.ndim != 2 or w_ih.shape[1] != I:
        raise ValueError(f"rnn_forward: w_ih must have shape (hidden, {I}), got {tuple(w_ih.shape)}")
    H = w_ih.shape[0]
    if tuple(w_hh.shape) != (H, H):
        raise ValueError(f"rnn_forward: w_hh must have shape ({H}, {H}), got {tuple(w_hh.shape)}")
    if h0 is not None and tuple(h0.shape) != (N, H):
        raise ValueError(f"rnn_forward: h0 must have shape ({N}, {H}) (N, hidden), got {tuple(h0.shape)}")
    if (b_ih is None) != (b_hh is None):
        raise ValueError("rnn_forward: give both b_ih and b_hh or neither")
    for name, b in (("b_ih", b_ih), ("b_hh", b_hh)):
        if b is not None and tuple(b.shape) != (H,):
            raise ValueError(f"rnn_forward: {name} must have shape ({H},), got {tuple(b.shape)}")
    for name, a in named:
        if a is not None:
            check_finite("rnn_forward", name, a)


def rnn_forward(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """Run an Elman RNN over a sequence, exactly as ``torch.nn.RNN`` (one layer, unidirectional).

    Parameters
    ----------
    x : (T, N, input_size) array
        Time-major input (``batch_first=False``).
    h0 : (N, hidden) array or None
        Initial hidden state; zeros when None.
    w_ih : (hidden, input_size) array
    w_hh : (hidden, hidden) array
    b_ih, b_hh : (hidden,) arrays or None (both or neither)
    nonlinearity : {"tanh", "relu"}

    Returns
    -------
    (output, h_T) : (T, N, hidden) array and (N, hidden) array
        ``output[t] = h_{t+1}`` (every step's hidden state); ``h_T = output[-1]`` (a copy).
    cache : what ``rnn_backward`` needs

    The input projection of all steps is one GEMM; the recurrence is one ``(N, H) x (H, H)`` GEMM per step.
    ``TypeError`` for a non-float array or arrays of different dtypes, ``ValueError`` for shapes that do not
    fit, ``NonFiniteError`` for NaN/Inf in any array or a relu recurrence that overflows.
    """
    _check_args(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity)
    xp = get_array_module(x, w_ih, w_hh)
    T, N, _ = x.shape
    H = w_ih.shape[0]
    if h0 is None:
        h0 = xp.zeros((N, H), dtype=x.dtype)
    has_b = b_ih is not None
    out = xp.empty((T, N, H), dtype=x.dtype)
    h = h0
    whh_t = w_hh.T
    with np.errstate(invalid="ignore", over="ignore"):      # an overflow: the ValueError below
        xw = x @ w_ih.T                                   # (T, N, H)
        if has_b:
            xw += b_ih + b_hh
        for t in range(T):
            a = xw[t] + h @ whh_t
            if nonlinearity == "tanh":
                h = xp.tanh(a, out=out[t])
            else:
                h = xp.maximum(a, 0, out=out[t])
    check_output("rnn_forward", out)            # the inputs are finite: an overflow (relu, or x W_ih^T)
    h_T = out[-1].copy()
    return (out, h_T), (x, h0, w_ih, w_hh, out, has_b, nonlinearity)


def rnn_backward(d_output, d_hT, cache):
    """Backpropagation through time for :func:`rnn_forward`.

    .. math::  \\bar h_t \\mathrel{+}= \\bar o_t, \\quad \\bar a_t = \\bar h_t \\odot \\sigma'(a_t), \\quad
               \\bar h_{t-1} = \\bar a_t W_{hh}, \\quad \\bar W_{hh} = \\textstyle\\sum_t \\bar a_t^\\top h_{t-1},
               \\quad \\bar W_{ih} = \\sum_t \\bar a_t^\\top x_t, \\quad \\bar b_{ih} = \\bar b_{hh} = \\sum_{t,n} \\bar a_t

    with ``σ' = 1 - h²`` for tanh and ``[h > 0]`` for relu (PyTorch's convention at 0).

    Parameters
    ----------
    d_output : (T, N, hidden) array or None (zero)
    d_hT : (N, hidden) array or None (zero)
    cache : from ``rnn_forward``

    Returns
    -------
    (dx, dh0, dw_ih, dw_hh, db_ih, db_hh); the bias gradients are None when the forward had no biases.
    ``dw_ih`` and ``dw_hh`` are accumulated over time with one GEMM each over all steps.

    ``d_output`` and ``d_hT`` must have exactly the shapes and dtype of ``output`` and ``h_T``
    (``ValueError``/``TypeError``; a ``d_output`` one step too long is an error, not ignored) and be finite
    (``NonFiniteError``, read off ``dw_hh``); a gradient that overflows raises ``NonFiniteError``.
    """
    return rnn_backward_as(d_output, d_hT, cache, "rnn_backward", ("d_output", "d_hT"))


def rnn_backward_as(d_output, d_hT, cache, who, names):
    """``rnn_backward`` with the caller's names in error messages (the layers)."""
    x, h0, w_ih, w_hh, out, has_b, nonlinearity = cache
    xp = get_array_module(x, w_ih, w_hh)
    T, N, I = x.shape
    H = w_hh.shape[0]
    dt = out.dtype
    if d_output is not None:
        check_grad_meta(who, names[0], d_output, out.shape, dt)
    if d_hT is not None:
        check_grad_meta(who, names[1], d_hT, (N, H), dt)
    with np.errstate(invalid="ignore", over="ignore"):      # NaN/Inf/overflow: the ValueError below
        dh = xp.zeros((N, H), dtype=dt) if d_hT is None else xp.array(d_hT, dtype=dt, copy=True)
        da = xp.empty((T, N, H), dtype=dt)
        for t in range(T - 1, -1, -1):
            if d_output is not None:
                dh += d_output[t]
            h = out[t]
            if nonlinearity == "tanh":
                xp.multiply(dh, 1 - h * h, out=da[t])
            else:
                xp.multiply(dh, h > 0, out=da[t])
            dh = da[t] @ w_hh
        dh0 = dh
        da2 = da.reshape(T * N, H)
        h_prev = xp.concatenate([h0[None].astype(dt, copy=False), out[:-1]], axis=0).reshape(T * N, H)
        dw_hh = da2.T @ h_prev
        dw_ih = da2.T @ x.reshape(T * N, I)
        dx = da @ w_ih
        if has_b:
            db_ih = da2.sum(axis=0)
            db_hh = db_ih.copy()
        else:
            db_ih = db_hh = None
    # da holds d_output and d_hT, each times a finite factor; dw_hh contracts all of da (H >= 1).
    check_grads(who, names, (d_output, d_hT), dw_hh, dw_ih, dx, dh0, db_ih, covered=H > 0)
    return dx, dh0, dw_ih, dw_hh, db_ih, db_hh
