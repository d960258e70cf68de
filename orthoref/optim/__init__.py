"""Optimizers with PyTorch's update formulas and state-dict structure: ``SGD``, ``Adam``, ``AdamW``;
orthogonalized and manifold optimizers: ``Muon``, ``RiemannianSGD``, ``RiemannianAdam``, ``CayleySGD``,
``CayleyAdam`` (parameter groups with ``"stiefel": True/False``) and ``OGD`` for continual learning.

Each works in place on ``Parameter.data`` (NumPy or CuPy, float32 or float64, kept in its dtype) and
never modifies ``Parameter.grad``; parameters whose ``.grad`` is ``None`` are skipped::

    opt = Adam(model.parameters(), lr=1e-3)
    opt.zero_grad(); model.backward(dlogits); opt.step()
"""
from .optimizer import Optimizer  # noqa: F401
from .sgd import SGD  # noqa: F401
from .adam import Adam, AdamW  # noqa: F401
from .muon import Muon  # noqa: F401
from .riemannian import CayleyAdam, CayleySGD, RiemannianAdam, RiemannianSGD  # noqa: F401
from .ogd import OGD  # noqa: F401

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Muon", "RiemannianSGD", "RiemannianAdam", "CayleySGD",
           "CayleyAdam", "OGD"]
