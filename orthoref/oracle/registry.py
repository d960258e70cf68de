"""The op registry: every differentiable op, layer and loss, registered once with a sampler of valid inputs.

Its consumers (the gradient-check tests, ``orthoref verify``, the PyTorch conformance tests, fixtures and
benchmarks) iterate over it; nobody keeps a hand-written list of ops.

An entry is an :class:`OpSpec`:

``apply(*inputs, **kwargs) -> (outputs, vjp)``
    ``outputs`` is a tuple of arrays; ``vjp(cotangents)`` takes a tuple like ``outputs`` and returns one
    gradient per input (``None`` for non-differentiable inputs such as integer labels).
``sample(rng, dtype) -> list[Sample]``
    valid inputs, kept away from kinks (ReLU at 0, ties in max-pooling) so finite differences are exact.
``torch(*tensors, **kwargs) -> outputs``
    the same computation in PyTorch, for the conformance tests (``None`` when PyTorch has no equivalent
    or the op is random).
``stress(rng, dtype) -> list[Sample]`` (optional)
    the *stress* samples, labelled ``"stress: ..."``: near-orthogonal weights, ill-conditioned inputs,
    extreme scales and shapes, batches of one — where kernels go wrong. Kept apart from ``sample`` (which
    feeds the gradient checks, ``orthoref verify``, ``oracle check`` and the golden fixtures); selected by
    ``orthoref.testing`` (``samples="stress"`` or ``"all"``) and checked by ``tests/test_stress_samples.py``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Optional

from .._checks import check_cotangent

__all__ = ["OpSpec", "Sample", "register", "get", "all_specs", "from_pair", "from_layer", "from_loss",
           "from_map"]

_REGISTRY: dict = {}
# The package whose import registers every spec (the samples, one module per family, with their twins);
# ``all_specs`` imports it so the registry is always complete.
_PROVIDERS = ("orthoref.oracle.samples",)


@dataclass
class Sample:
    """One set of inputs (host NumPy arrays) and keyword arguments for an op."""
    inputs: tuple
    kwargs: dict = field(default_factory=dict)
    label: str = ""

    @property
    def shapes(self) -> str:
        return " ".join("x".join(map(str, x.shape)) or "()" for x in self.inputs)


@dataclass
class OpSpec:
    name: str
    apply: Callable
    sample: Callable
    torch: Optional[Callable] = None
    kind: str = "op"                 # "op", "layer" or "loss"
    rtol: float = 1e-7              # finite-difference tolerance (float64)
    torch_rtol: float = 1e-10       # conformance tolerance (float64)
    rtol32: Optional[float] = None  # tolerance for a float32 implementation (None: oracle.FLOAT32_RTOL)
    complex_step: bool = False      # real-analytic on its sample domain: complex-step checked
    doc: str = ""
    stress: Optional[Callable] = None   # stress(rng, dtype) -> list[Sample], labels "stress: ..."


def register(spec: OpSpec) -> OpSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"op {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def all_specs():
    """Every registered spec, in registration order (imports the providing modules first)."""
    for mod in _PROVIDERS:
        importlib.import_module(mod)
    return list(_REGISTRY.values())


def get(name: str) -> OpSpec:
    all_specs()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no op named {name!r}; registered: {sorted(_REGISTRY)}") from None


# ---------------------------------------------------------------------------------------------------------
# Adapters from the three conventions of the package to ``apply``.

def _tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def from_pair(forward, backward, n_out: int = 1):
    """``apply`` for an op pair ``y, cache = forward(*inputs, **kw)``; ``grads = backward(dy, cache)``."""
    def apply(*inputs, **kwargs):
        y, cache = forward(*inputs, **kwargs)

        def vjp(cotangents):
            dy = cotangents[0] if n_out == 1 else cotangents
            return _tuple(backward(dy, cache))
        return _tuple(y), vjp
    return apply


def from_loss(loss_fn):
    """``apply`` for a loss ``(value, grad) = loss_fn(pred, target, **kw)`` whose target is not
    differentiable (integer labels): the vjp is ``(grad * ȳ, None)``, ``ȳ`` of exactly the value's shape
    and the gradient's dtype, finite."""
    def apply(*inputs, **kwargs):
        value, grad = loss_fn(*inputs, **kwargs)

        def vjp(cotangents):
            check_cotangent(loss_fn.__name__, "cotangent", cotangents[0], value.shape, grad.dtype)
            return (grad * cotangents[0],) + (None,) * (len(inputs) - 1)
        return (value,), vjp
    return apply


def from_layer(build):
    """``apply`` for a layer: ``build(*params, **kwargs)`` returns a Module whose parameters are set from
    the trailing inputs; the first input is the layer's input ``x``. Gradients returned are ``dx`` and each
    parameter's accumulated ``.grad``, in the order given."""
    def apply(x, *params, **kwargs):
        layer, plist = build(*params, **kwargs)
        y = layer.forward(x)

        def vjp(cotangents):
            layer.zero_grad()
            dx = layer.backward(cotangents[0])
            return (dx,) + tuple(p.grad for p in plist)
        return (y,), vjp
    return apply


def from_map(f, f_vjp):
    """``apply`` for a projection ``Y = f(A, **kw)`` with backward ``f_vjp(A, grad_out, **kw) -> grad_A``
    (the convention of ``orthoref.ortho``)."""
    def apply(A, **kwargs):
        return (f(A, **kwargs),), lambda cotangents: (f_vjp(A, cotangents[0], **kwargs),)
    return apply
