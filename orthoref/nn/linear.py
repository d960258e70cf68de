"""Fully connected layer."""
from __future__ import annotations

import math

import numpy as np

from .._checks import all_finite, check_bool, check_int, float_dtype
from ..backend import get_array_module, get_backend, host_rng
from ..ops._contract import check_size, memory_checked
from ..ops.linear import linear_backward_as, linear_forward_as
from .module import Module, Parameter, check_input

__all__ = ["Linear", "kaiming_uniform_default", "init_weight"]


#: The most elements a layer's weight may have (NumPy's own limit is 2**63 bytes).
_MAX_ELEMENTS = 2 ** 59


def _check_init_args(who, shape, fan_in, rng, dtype):
    """``(shape, fan_in, rng, dtype)`` checked: a tuple of non-negative ints (at most 2**59 elements), an
    int >= 0, a Generator (or seed, see :func:`~orthoref.backend.host_rng`) and float32/float64."""
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise TypeError(f"{who}: shape must be a tuple of ints, got {type(shape).__name__} {shape!r}")
    shape = tuple(check_int(who, "shape", d, 0) for d in shape)
    if math.prod(shape) > _MAX_ELEMENTS:
        raise ValueError(f"{who}: shape {shape} has {math.prod(shape)} elements, more than can be allocated "
                         f"(at most {_MAX_ELEMENTS})")
    fan_in = check_int(who, "fan_in", fan_in, 0)
    return shape, fan_in, host_rng(rng, who=who), float_dtype(who, dtype)


def kaiming_uniform_default(shape, fan_in, rng, dtype):
    """PyTorch's default weight/bias init for Linear and Conv: ``U(-1/√fan_in, 1/√fan_in)``
    (``kaiming_uniform_(a=√5)`` reduces to this bound), drawn on the host. ``TypeError``/``ValueError``
    for a shape that is not a tuple of non-negative ints, a negative or non-int ``fan_in``, an ``rng`` that
    is not a Generator or seed, a dtype other than float32/float64."""
    shape, fan_in, rng, dtype = _check_init_args("kaiming_uniform_default", shape, fan_in, rng, dtype)
    with memory_checked("kaiming_uniform_default", f"shape {shape}"):
        return _kaiming_uniform_default(shape, fan_in, rng, dtype)


def _kaiming_uniform_default(shape, fan_in, rng, dtype):
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return get_backend().asarray(rng.uniform(-bound, bound, size=shape).astype(dtype))


def init_weight(weight_init, shape, fan_in, rng, dtype, who="init_weight"):
    """A layer's initial weight: PyTorch's default when ``weight_init`` is None, else the initializer
    ``weight_init`` names (see ``orthoref.init.INITIALIZERS``) or a callable ``f(shape, rng=, dtype=)``.
    Arguments as :func:`kaiming_uniform_default` (errors name ``init_weight``); ``ValueError`` naming
    ``who`` (the layer) when the initializer returns another shape or dtype, or NaN/Inf."""
    label = f"init_weight ({who})" if who != "init_weight" else who
    shape, fan_in, rng, dtype = _check_init_args(label, shape, fan_in, rng, dtype)
    if weight_init is None:
        with memory_checked(label, f"shape {shape}"):
            return _kaiming_uniform_default(shape, fan_in, rng, dtype)
    from ..init import get_initializer
    try:
        with memory_checked(label, f"shape {shape}"):
            w = get_initializer(weight_init)(shape, rng=rng, dtype=dtype)
    except (TypeError, ValueError) as exc:            # the initializer's own words, prefixed with ours
        raise type(exc)(f"{label}: weight_init: {exc}") from None
    if not hasattr(w, "shape") or not hasattr(w, "dtype"):
        raise TypeError(f"{who}: weight_init must return an array, got {type(w).__name__}")
    w = get_backend().asarray(w)
    if tuple(w.shape) != tuple(shape) or w.dtype != dtype:
        raise ValueError(f"{who}: weight_init returned shape {tuple(w.shape)} and dtype {w.dtype}, expected "
                         f"{tuple(shape)} and {dtype}")
    if not all_finite(get_array_module(w), w):
        raise ValueError(f"{who}: weight_init returned NaN or Inf (a weight must be finite)")
    return w


class Linear(Module):
    """``y = x Wᵀ + b`` with ``W`` of shape ``(out_features, in_features)`` (PyTorch's layout and default
    initialization). Input ``(..., in_features)``.

    ``weight_init``: None (PyTorch's default, ``U(-1/√in, 1/√in)``), a name from
    ``orthoref.init.INITIALIZERS`` (``"orthogonal"``, ...) or a callable ``f(shape, rng=, dtype=)``. The bias
    keeps PyTorch's default; the weight is drawn first, then the bias, from the one host ``rng``.
    """

    def __init__(self, in_features, out_features, bias=True, *, weight_init=None, rng=None, dtype=np.float32):
        who = "Linear"
        in_features = check_int(who, "in_features", in_features, 1)
        out_features = check_int(who, "out_features", out_features, 1)
        bias = check_bool(who, "bias", bias)
        self.in_features, self.out_features = in_features, out_features
        dt = float_dtype(who, dtype)
        gen = host_rng(rng, who=who)
        sizes = f"in_features={in_features} and out_features={out_features}"
        check_size(who, sizes, (out_features, in_features))
        with memory_checked(who, sizes):
            self.weight = Parameter(init_weight(weight_init, (out_features, in_features), in_features, gen, dt,
                                                who))
            self.bias = (Parameter(kaiming_uniform_default((out_features,), in_features, gen, dt)) if bias
                         else None)
        self._cache = None

    def forward(self, x):
        check_input("Linear", x, ndim=range(1, 9), channels=self.in_features, channel_axis=-1,
                    dtype=self.weight.dtype)
        y, self._cache = linear_forward_as(x, self.weight.data, None if self.bias is None else self.bias.data,
                                           "Linear")
        return y

    def backward(self, grad_out, input_grad=True):
        """Gradient w.r.t. the input (None unless ``input_grad``); accumulates ``weight.grad``/``bias.grad``.
        ``grad_out``: exactly the last output's shape and dtype, finite; nothing accumulates on error."""
        dx, dw, db = linear_backward_as(grad_out, self._cached(), input_grad, self._who(), "grad_out")
        self.weight._accumulate_verified(dw)
        if self.bias is not None:
            self.bias._accumulate_verified(db)
        return dx

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
