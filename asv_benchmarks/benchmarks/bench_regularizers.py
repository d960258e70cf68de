"""Orthogonality penalties: value and gradient of every regularizer, beside PyTorch autograd of the same
soft-orthogonality formula.

A weight shape ``(out, in)`` is used as given by the matrix penalties; the conv penalties
(``kernel_slice_orthogonality``, ``conv_orthogonality``) get the conv weight ``(out/4, in/4, 3, 3)``
and ``self_orthogonality`` a layer output ``Y`` of shape ``(batch, k) = (out, in)``.
"""
import numpy as np

from orthoref import regularizers

NAMES = ["soft_orthogonality", "double_soft_orthogonality", "mutual_coherence", "srip", "srip_exact",
         "off_diagonal", "l1_orthogonality", "kernel_slice_orthogonality", "self_orthogonality",
         "conv_orthogonality", "spectral_penalty"]
SHAPES = [(256, 128), (1024, 512)]
DTYPES = ["float32", "float64"]
_CONV = ("kernel_slice_orthogonality", "conv_orthogonality")


def _case(name, shape, dtype):
    """``(function, W)`` for one benchmark point (W drawn with seed 0, scaled to unit-ish Gram entries)."""
    out, n = shape
    if name in _CONV:
        shape = (out // 4, n // 4, 3, 3)
    W = np.random.default_rng(0).standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
    W = W.astype(dtype)
    if name == "srip":
        k = min(out, n)
        v0 = np.random.default_rng(1).uniform(0.0, 1.0, k)
        return (lambda A: regularizers.srip(A, v0=v0)), W
    if name == "srip_exact":
        return (lambda A: regularizers.srip(A, method="exact")), W
    if name == "self_orthogonality":
        W = (np.sqrt(np.prod(shape[1:])) * W).astype(dtype)        # a layer output: O(1) entries
    return regularizers.REGULARIZERS[name], W


class Regularizers:
    """``value, grad = PENALTY(W)`` on NumPy (the threads of the BLAS as configured)."""
    params = (NAMES, SHAPES, DTYPES)
    param_names = ["regularizer", "shape", "dtype"]
    timeout = 120

    def setup(self, name, shape, dtype):
        if name not in NAMES:
            raise NotImplementedError(f"{name} is not a regularizer")
        self.fn, self.W = _case(name, shape, dtype)
        self.fn(self.W)

    def time_value_and_grad(self, name, shape, dtype):
        self.fn(self.W)

    def peakmem_value_and_grad(self, name, shape, dtype):
        self.fn(self.W)


class TorchRegularizers:
    """PyTorch autograd of ``weight · ‖G − I‖²_F`` (the smaller Gram), forward and ``.backward()``: the
    line to compare ``Regularizers.time_value_and_grad("soft_orthogonality", ...)`` against."""
    params = (["soft_orthogonality"], SHAPES, DTYPES)
    param_names = ["regularizer", "shape", "dtype"]
    timeout = 120

    def setup(self, name, shape, dtype):
        try:
            import torch
        except ImportError:
            raise NotImplementedError("PyTorch is not installed")
        _, W = _case(name, shape, dtype)
        self.torch = torch
        self.W = torch.from_numpy(W).requires_grad_(True)
        k = min(shape)
        self.rows = shape[0] <= shape[1]
        self.I = torch.eye(k, dtype=self.W.dtype)
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
