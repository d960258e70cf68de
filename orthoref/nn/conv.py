"""Convolution, pooling and flatten layers (PyTorch's argument names, weight layout and default init).

Each layer keeps the cache of its last forward and validates its input (rank, channels, dtype, spatial
size) with errors naming the layer, the expected and the received shape; ``backward(grad_out)`` requires
``grad_out`` of exactly the last output's shape and dtype (a ``(1, 1, 1, 1)`` one is not broadcast), finite.
"""
from __future__ import annotations

import numpy as np

from .._checks import check_bool, check_int, float_dtype
from ..backend import host_rng
from ..ops._contract import check_size, memory_checked
from ..ops._window import conv_geometry, conv_padding, pair, pool_args, pool_geometry
from ..ops.conv import conv2d_backward_as, conv2d_forward_as
from ..ops.pool import (
    avg_pool2d_backward_as, avg_pool2d_forward, flatten_backward_as, flatten_dims, flatten_forward,
    global_avg_pool2d_backward_as, global_avg_pool2d_forward, max_pool2d_backward_as, max_pool2d_forward,
)
from .linear import init_weight, kaiming_uniform_default
from .module import Module, Parameter, check_input

__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "Flatten"]


class Conv2d(Module):
    """2-D convolution ``y = W ⋆ x + b`` (PyTorch's ``nn.Conv2d``).

    Weight ``(out_channels, in_channels / groups, kh, kw)``, bias ``(out_channels,)``, both drawn from
    ``U(-1/√fan_in, 1/√fan_in)`` with ``fan_in = in_channels / groups · kh · kw`` (PyTorch's default).
    Input ``(N, C, H, W)`` or ``(C, H, W)``; see :func:`orthoref.ops.conv2d_forward` for the formula and
    the arguments (``padding`` may be an int, a pair, ``"valid"`` or ``"same"``). ``weight_init`` as for
    :class:`~orthoref.nn.Linear` (e.g. ``"delta_orthogonal"``, ``"block_orthogonal"``, ``"orthogonal"``).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, *, weight_init=None, rng=None, dtype=np.float32):
        who = "Conv2d"
        self.in_channels = check_int(who, "in_channels", in_channels, 1)
        self.out_channels = check_int(who, "out_channels", out_channels, 1)
        self.groups = check_int(who, "groups", groups, 1)
        bias = check_bool(who, "bias", bias)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"{who}: in_channels={in_channels} and out_channels={out_channels} must both be "
                             f"divisible by groups={groups}")
        self.kernel_size = pair(kernel_size, "kernel_size", who)
        self.stride = pair(stride, "stride", who)
        self.dilation = pair(dilation, "dilation", who)
        conv_padding(padding, self.kernel_size, self.stride, self.dilation, who)     # validates
        self.padding = padding if isinstance(padding, str) else pair(padding, "padding", who, minimum=0)
        dt = float_dtype(who, dtype)
        gen = host_rng(rng, who=who)
        fan_in = self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        sizes = (f"in_channels={in_channels}, out_channels={out_channels}, kernel_size={kernel_size!r} and "
                 f"groups={groups}")
        check_size(who, sizes, shape)
        with memory_checked(who, sizes):
            self.weight = Parameter(init_weight(weight_init, shape, fan_in, gen, dt, who))
            self.bias = (Parameter(kaiming_uniform_default((self.out_channels,), fan_in, gen, dt)) if bias
                         else None)
        self._cache = None

    def _kwargs(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    def forward(self, x):
        check_input("Conv2d", x, ndim=(3, 4), channels=self.in_channels, channel_axis=-3,
                    dtype=self.weight.dtype)
        conv_geometry(x.shape, self.weight.shape, self.stride, self.padding, self.dilation, "Conv2d")
        b = None if self.bias is None else self.bias.data
        y, self._cache = conv2d_forward_as(x, self.weight.data, b, self.stride, self.padding, self.dilation,
                                           self.groups, "Conv2d")
        return y

    def backward(self, grad_out, input_grad=True):
        """Gradient w.r.t. the input (None unless ``input_grad``); accumulates ``weight.grad``/``bias.grad``.
        ``grad_out``: exactly the last output's shape and dtype, finite; nothing accumulates on error."""
        dx, dw, db = conv2d_backward_as(grad_out, self._cached(), input_grad, self._who(), "grad_out")
        self.weight._accumulate_verified(dw)
        if self.bias is not None:
            self.bias._accumulate_verified(db)
        return dx

    def extra_repr(self):
        return conv_repr(self)


def conv_repr(layer):
    """A convolution layer's ``extra_repr`` in PyTorch's words: channels, kernel, stride and padding, then
    dilation, groups and ``bias=False`` where they differ from the defaults (also ``OrthogonalConv2d``'s)."""
    s = (f"{layer.in_channels}, {layer.out_channels}, kernel_size={layer.kernel_size}, stride={layer.stride}, "
         f"padding={layer.padding!r}")
    if getattr(layer, "dilation", (1, 1)) != (1, 1):
        s += f", dilation={layer.dilation}"
    if getattr(layer, "groups", 1) != 1:
        s += f", groups={layer.groups}"
    if layer.bias is None:
        s += ", bias=False"
    return s


class _Pool(Module):
    """Shared checks of the parameter-free pooling layers; ``_grad(dy, cache, who, name)`` is the op's
    backward with the layer's names for errors."""

    def _check(self, x):
        check_input(type(self).__name__, x, ndim=(3, 4))

    def backward(self, grad_out, input_grad=True):
        dx = self._grad(grad_out, self._cached(), self._who(), "grad_out")     # validates grad_out
        return dx if input_grad else None


class MaxPool2d(_Pool):
    """Max pooling (PyTorch's ``nn.MaxPool2d``, ``ceil_mode=False``): ``stride`` defaults to
    ``kernel_size``, ``padding`` (with ``-inf``) at most half the kernel. The gradient of a window goes to
    its first maximal element in row-major order, as on PyTorch's CPU."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1):
        pool_args(kernel_size, stride, padding, dilation, "MaxPool2d")             # validates
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self._cache = None

    def forward(self, x):
        self._check(x)
        pool_geometry(x.shape, self.kernel_size, self.stride, self.padding, self.dilation, "MaxPool2d")
        y, self._cache = max_pool2d_forward(x, self.kernel_size, self.stride, self.padding, self.dilation)
        return y

    _grad = staticmethod(max_pool2d_backward_as)

    def extra_repr(self):
        stride = self.kernel_size if self.stride is None else self.stride
        return f"kernel_size={self.kernel_size}, stride={stride}, padding={self.padding}, dilation={self.dilation}"


class AvgPool2d(_Pool):
    """Average pooling (PyTorch's ``nn.AvgPool2d``, ``ceil_mode=False``): ``stride`` defaults to
    ``kernel_size``; ``count_include_pad`` divides by ``kh kw`` (True) or by the number of non-padding
    elements of the window (False); ``divisor_override`` replaces either."""

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True, divisor_override=None):
        who = "AvgPool2d"
        pool_args(kernel_size, stride, padding, 1, who)
        if divisor_override is not None:
            divisor_override = check_int(who, "divisor_override", divisor_override, 1)
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.count_include_pad = check_bool(who, "count_include_pad", count_include_pad)
        self.divisor_override = divisor_override
        self._cache = None

    def forward(self, x):
        self._check(x)
        pool_geometry(x.shape, self.kernel_size, self.stride, self.padding, 1, "AvgPool2d")
        y, self._cache = avg_pool2d_forward(x, self.kernel_size, self.stride, self.padding,
                                            self.count_include_pad, self.divisor_override)
        return y

    _grad = staticmethod(avg_pool2d_backward_as)

    def extra_repr(self):
        stride = self.kernel_size if self.stride is None else self.stride
        s = f"kernel_size={self.kernel_size}, stride={stride}, padding={self.padding}"
        if not self.count_include_pad:
            s += ", count_include_pad=False"
        if self.divisor_override is not None:
            s += f", divisor_override={self.divisor_override}"
        return s


class GlobalAvgPool2d(_Pool):
    """Mean over the spatial axes: ``(N, C, H, W) -> (N, C)`` (``(C, H, W) -> (C,)``)."""

    def __init__(self):
        self._cache = None

    def forward(self, x):
        self._check(x)
        if x.shape[-1] * x.shape[-2] == 0:
            raise ValueError(f"GlobalAvgPool2d: x (input) must not have an empty spatial extent, got shape "
                             f"{tuple(x.shape)}")
        y, self._cache = global_avg_pool2d_forward(x)
        return y

    _grad = staticmethod(global_avg_pool2d_backward_as)


class Flatten(Module):
    """Merge axes ``start_dim..end_dim`` into one (PyTorch's ``nn.Flatten``; defaults keep the batch axis)."""

    def __init__(self, start_dim=1, end_dim=-1):
        self.start_dim = check_int("Flatten", "start_dim", start_dim)
        self.end_dim = check_int("Flatten", "end_dim", end_dim)
        self._cache = None

    def forward(self, x):
        check_input("Flatten", x, ndim=range(1, 33))
        flatten_dims(x.ndim, self.start_dim, self.end_dim, "Flatten")
        y, self._cache = flatten_forward(x, self.start_dim, self.end_dim)
        return y

    def backward(self, grad_out, input_grad=True):
        dx = flatten_backward_as(grad_out, self._cached(), self._who(), "grad_out")     # validates grad_out
        return dx if input_grad else None

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
