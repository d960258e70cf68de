"""Samples of valid inputs and registry entries: the losses (cross-entropy with integer labels, MSE)."""
from __future__ import annotations

from ..._checks import check_finite
from ...ops._contract import check_grad_meta
from ...ops.loss import cross_entropy, mse
from ..registry import OpSpec, Sample, from_loss
from ..torch_twins import torch_cross_entropy, torch_mse


def _ce_none_apply(logits, labels, reduction="none"):
    losses, grad = cross_entropy(logits, labels, reduction=reduction)

    def vjp(cotangents):
        (dl,) = cotangents
        check_grad_meta("cross_entropy (vjp)", "cotangent", dl, losses.shape, losses.dtype)
        check_finite("cross_entropy (vjp)", "cotangent", dl)
        return (grad * dl.reshape(-1, 1), None)
    return (losses,), vjp


def _mse_apply(pred, target, reduction="mean"):
    value, grad = mse(pred, target, reduction=reduction)

    def vjp(cotangents):
        (dl,) = cotangents
        check_grad_meta("mse (vjp)", "cotangent", dl, value.shape, value.dtype)
        check_finite("mse (vjp)", "cotangent", dl)
        g = grad * dl
        return (g, -g)
    return (value,), vjp


def _ce_samples(rng, dtype):
    return [
        Sample(((2.0 * rng.standard_normal((6, 5))).astype(dtype), rng.integers(0, 5, 6)), label="mean"),
        Sample(((3.0 * rng.standard_normal((4, 10))).astype(dtype), rng.integers(0, 10, 4)),
               {"reduction": "sum"}, label="sum"),
        Sample((rng.standard_normal((1, 3)).astype(dtype), rng.integers(0, 3, 1)), label="N=1"),
    ]


def _ce_none_samples(rng, dtype):
    return [Sample(((2.0 * rng.standard_normal((5, 4))).astype(dtype), rng.integers(0, 4, 5)),
                   {"reduction": "none"}, label="none")]


def _mse_samples(rng, dtype):
    return [
        Sample((rng.standard_normal((5, 3)).astype(dtype), rng.standard_normal((5, 3)).astype(dtype)),
               label="mean"),
        Sample((rng.standard_normal((2, 3, 4)).astype(dtype), rng.standard_normal((2, 3, 4)).astype(dtype)),
               {"reduction": "sum"}, label="sum"),
        Sample((rng.standard_normal((4, 2)).astype(dtype), rng.standard_normal((4, 2)).astype(dtype)),
               {"reduction": "none"}, label="none"),
    ]


OPS = [
    OpSpec("cross_entropy", from_loss(cross_entropy), _ce_samples, torch=torch_cross_entropy,
           kind="loss", doc="softmax cross-entropy with integer labels, mean or sum", complex_step=True),
    OpSpec("cross_entropy_none", _ce_none_apply, _ce_none_samples, torch=torch_cross_entropy,
           kind="loss", doc="softmax cross-entropy, per-sample losses", complex_step=True),
    OpSpec("mse", _mse_apply, _mse_samples, torch=torch_mse, kind="loss",
           doc="mean squared error; differentiable in pred and target", complex_step=True),
]

LAYERS: list = []
