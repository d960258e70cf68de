"""Activation and dropout layers (no parameters): thin Modules over :mod:`orthoref.ops.activation`.

``backward(grad_out)`` requires ``grad_out`` of exactly the last output's shape and dtype, finite (also with
``input_grad=False``), with errors naming the layer (``"ReLU.backward: grad_out ..."``).
"""
from __future__ import annotations

from ..backend import host_rng
from ..ops import activation as A
from .module import Module, check_input

__all__ = ["ReLU", "LeakyReLU", "Tanh", "Sigmoid", "GELU", "Dropout"]

_ANY_RANK = range(0, 33)


class _Elementwise(Module):
    """An element-wise op pair applied to inputs of any shape; one cache (the last forward's).
    ``_backward(dy, cache, who, name)`` is the op's backward with the layer's names for errors."""

    _forward = staticmethod(None)
    _backward = staticmethod(None)

    def __init__(self):
        self._cache = None

    def _kwargs(self):
        return {}

    def forward(self, x):
        check_input(type(self).__name__, x, ndim=_ANY_RANK)
        y, self._cache = type(self)._forward(x, **self._kwargs())
        return y

    def backward(self, grad_out, input_grad=True):
        cache = self._cached()
        dx = type(self)._backward(grad_out, cache, self._who(), "grad_out")     # validates grad_out
        return dx if input_grad else None


class ReLU(_Elementwise):
    """:math:`y = \\max(x, 0)` element-wise (PyTorch's ``nn.ReLU``; no ``inplace``)."""
    _forward = staticmethod(A.relu_forward)
    _backward = staticmethod(A.relu_backward_as)


class LeakyReLU(_Elementwise):
    """:math:`y = x` for ``x > 0``, else ``negative_slope * x`` (PyTorch's ``nn.LeakyReLU``)."""
    _forward = staticmethod(A.leaky_relu_forward)
    _backward = staticmethod(A.leaky_relu_backward_as)

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = A.check_negative_slope(negative_slope, "LeakyReLU")

    def _kwargs(self):
        return {"negative_slope": self.negative_slope}

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Tanh(_Elementwise):
    """:math:`y = \\tanh x` element-wise."""
    _forward = staticmethod(A.tanh_forward)
    _backward = staticmethod(A.tanh_backward_as)


class Sigmoid(_Elementwise):
    """:math:`y = 1 / (1 + e^{-x})` element-wise, stable for any ``x``."""
    _forward = staticmethod(A.sigmoid_forward)
    _backward = staticmethod(A.sigmoid_backward_as)


class GELU(_Elementwise):
    """:math:`y = x\\,\\Phi(x)` (``approximate="none"``, the erf form) or its tanh approximation
    (PyTorch's ``nn.GELU``)."""
    _forward = staticmethod(A.gelu_forward)
    _backward = staticmethod(A.gelu_backward_as)

    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = A.check_gelu_approximate(approximate, "GELU")

    def _kwargs(self):
        return {"approximate": self.approximate}

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Dropout(Module):
    """Inverted dropout (PyTorch's ``nn.Dropout``): in training mode zero each element with probability
    ``p`` and scale the rest by ``1/(1-p)``; the identity in eval mode.

    Parameters
    ----------
    p : float in [0, 1)
    rng : numpy.random.Generator, int seed or None
        The layer keeps one host Generator built from it and draws a new mask from it at every training
        forward; the same seed gives the same sequence of masks.
    """

    def __init__(self, p=0.5, *, rng=None):
        self.p = A.check_dropout_p(p, "Dropout")
        self.rng = host_rng(rng, who="Dropout")
        self._cache = None

    def forward(self, x):
        check_input("Dropout", x, ndim=_ANY_RANK)
        y, self._cache = A.dropout_forward(x, self.p, self.rng, training=self.training)
        return y

    def backward(self, grad_out, input_grad=True):
        cache = self._cached()
        dx = A.dropout_backward_as(grad_out, cache, self._who(), "grad_out")     # validates grad_out
        return dx if input_grad else None

    def extra_repr(self):
        return f"p={self.p}"
