"""Elman recurrent layer (``torch.nn.RNN``: one layer, unidirectional, ``batch_first=False``)."""
from __future__ import annotations

import numpy as np

from .._checks import check_bool, check_choice, check_int, float_dtype
from ..backend import host_rng
from ..ops._contract import check_size, memory_checked
from ..ops.rnn import RNN_NONLINEARITIES, rnn_backward_as, rnn_forward
from .linear import init_weight, kaiming_uniform_default
from .module import Module, Parameter, check_input

__all__ = ["RNN"]


class RNN(Module):
    """``h_t = σ(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh)``, σ tanh or relu, over a time-major sequence.

    Parameters carry PyTorch's names and layouts, so ``state_dict()`` keys match ``torch.nn.RNN``'s:
    ``weight_ih_l0 (hidden, input_size)``, ``weight_hh_l0 (hidden, hidden)``, ``bias_ih_l0``,
    ``bias_hh_l0 (hidden,)``. Default init is PyTorch's: every one ``U(-1/√hidden, 1/√hidden)``, drawn from
    the one host ``rng`` in that order.

    ``weight_init`` (for ``W_ih``) and ``hidden_init`` (for ``W_hh``): None (PyTorch's default), a name from
    ``orthoref.init.INITIALIZERS`` (``"orthogonal"``; ``"identity"`` with ``nonlinearity="relu"`` gives
    the IRNN of Le, Jaitly & Hinton 2015) or a callable ``f(shape, rng=, dtype=)``.

    ``forward(x, h0=None)``: ``x (T, N, input_size)``, ``h0 (N, hidden)`` or None (zeros); returns
    ``output (T, N, hidden)`` and stores the last hidden state as ``self.h_n (N, hidden)``.
    ``backward(grad_out, input_grad=True, grad_h_n=None)`` returns ``dx`` (None if not asked), accumulates
    into the four parameters and stores the gradient of ``h0`` as ``self.h0_grad``. ``grad_out`` must have
    exactly the output's shape ``(T, N, hidden)`` and dtype (one step too many is an error, not ignored) and
    ``grad_h_n`` that of ``h_n``; both finite (``None``: zero).
    """

    def __init__(self, input_size, hidden_size, nonlinearity="tanh", bias=True, *, weight_init=None,
                 hidden_init=None, rng=None, dtype=np.float32):
        who = "RNN"
        self.input_size = check_int(who, "input_size", input_size, 1)
        self.hidden_size = check_int(who, "hidden_size", hidden_size, 1)
        self.nonlinearity = check_choice(who, "nonlinearity", nonlinearity, RNN_NONLINEARITIES)
        bias = check_bool(who, "bias", bias)
        H, I = self.hidden_size, self.input_size
        dt = float_dtype(who, dtype)
        gen = host_rng(rng, who=who)
        sizes = f"input_size={input_size} and hidden_size={hidden_size}"
        check_size(who, sizes, (H, max(H, I)))
        with memory_checked(who, sizes):
            self.weight_ih_l0 = Parameter(init_weight(weight_init, (H, I), H, gen, dt, "RNN (weight_init)"))
            self.weight_hh_l0 = Parameter(init_weight(hidden_init, (H, H), H, gen, dt, "RNN (hidden_init)"))
            if bias:
                self.bias_ih_l0 = Parameter(kaiming_uniform_default((H,), H, gen, dt))
                self.bias_hh_l0 = Parameter(kaiming_uniform_default((H,), H, gen, dt))
            else:
                self.bias_ih_l0 = self.bias_hh_l0 = None
        self.h_n = None
        self.h0_grad = None
        self._cache = None

    @property
    def bias(self):
        return self.bias_ih_l0 is not None

    def __call__(self, x, h0=None):
        return self.forward(x, h0)

    def forward(self, x, h0=None):
        dt = self.weight_ih_l0.dtype
        check_input("RNN", x, ndim=3, dtype=dt, what="x (T, N, input_size)")
        if x.shape[2] != self.input_size:
            raise ValueError(f"RNN: x must have shape (T, N, input_size={self.input_size}), "
                             f"got shape {tuple(x.shape)}")
        if x.shape[0] < 1:
            raise ValueError(f"RNN: x must have shape (T, N, input_size) with T >= 1, got shape {tuple(x.shape)}")
        if h0 is not None:
            check_input("RNN", h0, ndim=2, dtype=dt, what="h0 (N, hidden_size)")
            if tuple(h0.shape) != (x.shape[1], self.hidden_size):
                raise ValueError(f"RNN: h0 must have shape (N={x.shape[1]}, hidden_size={self.hidden_size}), "
                                 f"got shape {tuple(h0.shape)}")
        b_ih = None if self.bias_ih_l0 is None else self.bias_ih_l0.data
        b_hh = None if self.bias_hh_l0 is None else self.bias_hh_l0.data
        (out, self.h_n), self._cache = rnn_forward(x, h0, self.weight_ih_l0.data, self.weight_hh_l0.data,
                                                   b_ih, b_hh, nonlinearity=self.nonlinearity)
        return out

    def backward(self, grad_out, input_grad=True, grad_h_n=None):
        dx, dh0, dw_ih, dw_hh, db_ih, db_hh = rnn_backward_as(grad_out, grad_h_n, self._cached(), self._who(),
                                                              ("grad_out", "grad_h_n"))
        self.weight_ih_l0.accumulate(dw_ih)
        self.weight_hh_l0.accumulate(dw_hh)
        if self.bias_ih_l0 is not None:
            self.bias_ih_l0.accumulate(db_ih)
            self.bias_hh_l0.accumulate(db_hh)
        self.h0_grad = dh0
        return dx if input_grad else None

    def extra_repr(self):
        return (f"{self.input_size}, {self.hidden_size}, nonlinearity={self.nonlinearity!r}, "
                f"bias={self.bias}")
