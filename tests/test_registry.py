"""Every registered op, layer and loss: finite-difference gradient check in float64 and, with PyTorch
installed, conformance with torch.autograd (outputs and gradients, random cotangents)."""
import importlib
import inspect
import pkgutil

import numpy as np
import pytest

import orthoref
from orthoref.oracle import check_backward
from orthoref.oracle.conformance import compare_with_torch
from orthoref.oracle.registry import all_specs

from conftest import spec_samples

CASES = spec_samples()


@pytest.mark.parametrize("spec,sample", CASES)
def test_gradient_directional(spec, sample):
    check_backward(lambda *a: spec.apply(*a, **sample.kwargs), sample.inputs, rtol=spec.rtol,
                   n_directions=4, rng=1)


@pytest.mark.parametrize("spec,sample", CASES)
def test_gradient_elementwise(spec, sample):
    check_backward(lambda *a: spec.apply(*a, **sample.kwargs), sample.inputs, rtol=spec.rtol,
                   n_directions=1, elementwise=True, rng=2)


@pytest.mark.torch
@pytest.mark.parametrize("spec,sample", [c for c in CASES if c.values[0].torch is not None])
def test_torch_conformance(spec, sample):
    pytest.importorskip("torch")
    cmp = compare_with_torch(spec, sample, rng=3)
    assert cmp.output_error <= spec.torch_rtol, f"{spec.name}: output rel. error {cmp.output_error:.3e}"
    assert cmp.grad_error <= spec.torch_rtol, f"{spec.name}: gradient rel. error {cmp.grad_error:.3e}"


def test_registry_samples_are_float64_and_nonempty():
    for spec in all_specs():
        samples = spec.sample(np.random.default_rng(0), np.float64)
        assert samples, f"{spec.name} has no samples"
        for s in samples:
            for x in s.inputs:
                assert x.dtype in (np.float64, np.int64), f"{spec.name}: input dtype {x.dtype}"


def _public_pairs(module):
    names = getattr(module, "__all__", [])
    return {n[: -len("_forward")] for n in names if n.endswith("_forward")}


def test_every_forward_backward_pair_is_registered():
    """A public ``NAME_forward`` in orthoref.ops must be registered (as NAME or a NAME variant)."""
    registered = {s.name for s in all_specs()}
    missing = []
    for info in pkgutil.iter_modules(orthoref.ops.__path__):
        mod = importlib.import_module(f"orthoref.ops.{info.name}")
        for base in _public_pairs(mod):
            if not any(r == base or r.startswith(base + "_") for r in registered):
                missing.append(f"orthoref.ops.{info.name}.{base}")
    assert not missing, f"unregistered differentiable ops: {missing}"


def test_every_layer_is_registered():
    import orthoref.nn as nn
    registered = {s.name for s in all_specs()}
    layers = [n for n, obj in vars(nn).items()
              if inspect.isclass(obj) and issubclass(obj, nn.Module) and obj not in (nn.Module, nn.Sequential)]
    missing = [n for n in layers if f"nn.{n}" not in registered]
    assert not missing, f"layers missing from the registry: {missing}"


@pytest.mark.torch
def test_conformance_runs_in_ci():
    """The conformance tests must not all skip where torch is meant to be installed (.ci/run)."""
    import os
    if os.environ.get("CI"):
        import torch  # noqa: F401  -- fails loudly if CI forgot to install it
    else:
        pytest.importorskip("torch")
    assert any(c.values[0].torch is not None for c in CASES)
