"""Fully connected layer."""
from __future__ import annotations

import math

import numpy as np

from .._checks import check_ndim
from ..backend import get_backend, host_rng
from ..oracle.registry import OpSpec, from_layer, register
from ..ops.linear import linear_backward, linear_forward, _samples, _torch_linear
from .module import Module, Parameter, _float_dtype, check_input

__all__ = ["Linear", "kaiming_uniform_default", "init_weight"]


def kaiming_uniform_default(shape, fan_in, rng, dtype):
    """PyTorch's default weight/bias init for Linear and Conv: ``U(-1/√fan_in, 1/√fan_in)``
    (``kaiming_uniform_(a=√5)`` reduces to this bound), drawn on the host."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return get_backend().asarray(rng.uniform(-bound, bound, size=shape).astype(dtype))


def init_weight(weight_init, shape, fan_in, rng, dtype, who):
    """A layer's initial weight: PyTorch's default when ``weight_init`` is None, else the initializer
    ``weight_init`` names (see ``orthoref.init.INITIALIZERS``) or a callable ``f(shape, rng=, dtype=)``."""
    if weight_init is None:
        return kaiming_uniform_default(shape, fan_in, rng, dtype)
    from ..init import get_initializer
    w = get_backend().asarray(get_initializer(weight_init)(shape, rng=rng, dtype=dtype))
    if tuple(w.shape) != tuple(shape) or w.dtype != dtype:
        raise ValueError(f"{who}: weight_init returned shape {tuple(w.shape)} and dtype {w.dtype}, expected "
                         f"{tuple(shape)} and {dtype}")
    return w


class Linear(Module):
    """``y = x Wᵀ + b`` with ``W`` of shape ``(out_features, in_features)`` (PyTorch's layout and default
    initialization). Input ``(..., in_features)``.

    ``weight_init``: None (PyTorch's default, ``U(-1/√in, 1/√in)``), a name from
    ``orthoref.init.INITIALIZERS`` (``"orthogonal"``, ...) or a callable ``f(shape, rng=, dtype=)``. The bias
    keeps PyTorch's default; the weight is drawn first, then the bias, from the one host ``rng``.
    """

    def __init__(self, in_features, out_features, bias=True, *, weight_init=None, rng=None, dtype=np.float32):
        if int(in_features) <= 0 or int(out_features) <= 0:
            raise ValueError(f"Linear: in_features and out_features must be positive, got "
                             f"{in_features}, {out_features}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        dt = _float_dtype(dtype, "Linear: dtype")
        gen = host_rng(rng)
        self.weight = Parameter(init_weight(weight_init, (out_features, in_features), in_features, gen, dt,
                                            "Linear"))
        self.bias = Parameter(kaiming_uniform_default((out_features,), in_features, gen, dt)) if bias else None
        self._cache = None

    def forward(self, x):
        check_input("Linear", x, ndim=tuple(range(1, 9)), channels=self.in_features, channel_axis=-1,
                    dtype=self.weight.dtype)
        y, self._cache = linear_forward(x, self.weight.data, None if self.bias is None else self.bias.data)
        return y

    def backward(self, grad_out, input_grad=True):
        dx, dw, db = linear_backward(grad_out, self._cached(), need_dx=input_grad)
        self.weight.accumulate(dw)
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def _build_linear(w, b, **kw):
    check_ndim("nn.Linear", "weight", w, (2,))
    layer = Linear(w.shape[1], w.shape[0], dtype=w.dtype, rng=0)
    layer.weight.data, layer.bias.data = w, b
    return layer, [layer.weight, layer.bias]


register(OpSpec("nn.Linear", from_layer(_build_linear), _samples, torch=_torch_linear, kind="layer"))
