"""Layer ops (``orthoref.ops``): ``linear`` and ``conv2d`` forward and backward, the two kinds of layer the
train steps spend their time in.

``linear``: ``x (batch, 512) → (batch, 256)`` (the MLP's second layer), with bias. ``conv2d``: 3x3, padding
1, ``x (batch, 32, 14, 14) → (batch, 64, 14, 14)`` (the small CNN's second convolution), with bias.
``conv2d_backward`` reuses the forward's column buffer for the input gradient (see its docstring), so a
second backward on the same cache would rebuild it: the conv backward is timed as forward + backward and
the backward alone is the difference of the two lines.
"""
import numpy as np

from orthoref.ops import conv2d_backward, conv2d_forward, linear_backward, linear_forward

from .common import BACKENDS, DTYPES, Benchmark, device, gaussian, grid, require, sizes, sync


class Layers(Benchmark):
    """Forward: ``y, cache = OP_forward(x, w, b)``; backward: ``dx, dw, db = OP_backward(ȳ, cache)``."""
    params, param_names = grid(batch=sizes([16, 64]), dtype=DTYPES, backend=BACKENDS)

    def setup(self, batch, dtype, backend_name):
        require(backend_name)
        self.lin = device(backend_name, gaussian((batch, 512), dtype, 0, 1.0), gaussian((256, 512), dtype, 1),
                          gaussian((256,), dtype, 2))
        self.lin_dy = device(backend_name, gaussian((batch, 256), dtype, 3, 1.0))
        _, self.lin_cache = linear_forward(*self.lin)
        self.conv = device(backend_name, gaussian((batch, 32, 14, 14), dtype, 4, 1.0),
                           gaussian((64, 32, 3, 3), dtype, 5, 1.0 / np.sqrt(32 * 9)), gaussian((64,), dtype, 6))
        self.conv_dy = device(backend_name, gaussian((batch, 64, 14, 14), dtype, 7, 1.0))
        y, cache = conv2d_forward(*self.conv, padding=1)
        dx, dw, db = conv2d_backward(self.conv_dy, cache)
        assert y.shape == (batch, 64, 14, 14) and dx.shape == self.conv[0].shape and dw.shape == (64, 32, 3, 3)

    def time_linear_forward(self, batch, dtype, backend_name):
        linear_forward(*self.lin)
        sync(backend_name)

    def time_linear_backward(self, batch, dtype, backend_name):
        linear_backward(self.lin_dy, self.lin_cache)
        sync(backend_name)

    def time_conv2d_forward(self, batch, dtype, backend_name):
        conv2d_forward(*self.conv, padding=1)
        sync(backend_name)

    def time_conv2d_forward_backward(self, batch, dtype, backend_name):
        _, cache = conv2d_forward(*self.conv, padding=1)
        conv2d_backward(self.conv_dy, cache)
        sync(backend_name)
