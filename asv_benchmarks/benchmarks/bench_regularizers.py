"""Orthogonality penalties (``orthoref.regularizers``): value and exact gradient of every regularizer, on
NumPy and CuPy, beside PyTorch autograd of the same soft-orthogonality formula.

A weight shape ``(out, in)`` is used as given by the matrix penalties; the conv penalties
(``kernel_slice_orthogonality``, ``conv_orthogonality``) get the conv weight ``(out/4, in/4, 3, 3)`` and
``self_orthogonality`` a layer output ``Y`` of shape ``(batch, k) = (out, in)``.
"""
import numpy as np

from orthoref import regularizers

from .common import BACKENDS, DTYPES, Benchmark, device, grid, registry_ops, require, require_torch, sizes, sync

#: registry name -> function name of ``regularizers.REGULARIZERS`` ("srip_exact" -> "srip"), registry order
NAMES = registry_ops(regularizers.REGULARIZERS)
SHAPES = sizes(["128x64", "256x128"])
_CONV = ("kernel_slice_orthogonality", "conv_orthogonality")


def _shape(shape):
    out, n = (int(s) for s in shape.split("x"))
    return out, n


def _case(name, shape, dtype):
    """``(function(W, *extra), W, extra)`` on the host for one point (W drawn with seed 0, scaled to
    unit-ish Gram entries)."""
    out, n = _shape(shape)
    dims = (out // 4, n // 4, 3, 3) if name in _CONV else (out, n)
    W = (np.random.default_rng(0).standard_normal(dims) / np.sqrt(np.prod(dims[1:]))).astype(dtype)
    if name == "srip":
        v0 = np.random.default_rng(1).uniform(0.0, 1.0, min(out, n)).astype(dtype)
        return (lambda A, v: regularizers.srip(A, v0=v)), W, (v0,)
    if name == "srip_exact":
        return (lambda A: regularizers.srip(A, method="exact")), W, ()
    if name == "self_orthogonality":
        W = (np.sqrt(np.prod(dims[1:])) * W).astype(dtype)          # a layer output: O(1) entries
    return regularizers.REGULARIZERS[NAMES[name]], W, ()


class Regularizers(Benchmark):
    """``value, grad = PENALTY(W)`` for every regularizer of the op registry."""
    params, param_names = grid(regularizer=list(NAMES), shape=SHAPES, dtype=DTYPES, backend=BACKENDS)

    def setup(self, name, shape, dtype, backend_name):
        require(backend_name)
        fn, W, extra = _case(name, shape, dtype)
        args = device(backend_name, W, *extra)
        self.args = args if isinstance(args, tuple) else (args,)
        self.fn = fn

    def time_value_and_grad(self, name, shape, dtype, backend_name):
        self.fn(*self.args)
        sync(backend_name)

    def peakmem_value_and_grad(self, name, shape, dtype, backend_name):
        self.fn(*self.args)


class TorchRegularizers(Benchmark):
    """PyTorch autograd of ``‖G − I‖²_F`` (the smaller Gram), forward and ``.backward()``: the line to
    compare ``Regularizers.time_value_and_grad("soft_orthogonality", ...)`` against."""
    params, param_names = grid(regularizer=["soft_orthogonality"], shape=SHAPES, dtype=DTYPES)

    def setup(self, name, shape, dtype):
        torch = require_torch()
        _, W, _ = _case(name, shape, dtype)
        self.W = torch.from_numpy(W).requires_grad_(True)
        self.rows = W.shape[0] <= W.shape[1]
        self.I = torch.eye(min(W.shape), dtype=self.W.dtype)
        self.step()

    def step(self):
        W = self.W
        W.grad = None
        G = W @ W.T if self.rows else W.T @ W
        loss = ((G - self.I) ** 2).sum()
        loss.backward()
        return loss

    def time_value_and_grad(self, name, shape, dtype):
        self.step()
