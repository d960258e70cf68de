"""Every registered op with a PyTorch twin also has a JAX twin (orthoref.oracle.jax_twins), and agrees with
it to ``spec.torch_rtol`` in float64: outputs and ``jax.vjp`` gradients for the same random cotangents."""
import numpy as np
import pytest

pytest.importorskip("jax")

from conftest import spec_samples

from orthoref.oracle.jax_twins import JAX_TWINS, compare_with_jax
from orthoref.oracle.registry import all_specs

CASES = [c for c in spec_samples() if c.values[0].name in JAX_TWINS]


@pytest.mark.parametrize("spec,sample", CASES)
def test_jax_conformance(spec, sample):
    cmp = compare_with_jax(spec, sample, rng=3)
    assert cmp.output_error <= spec.torch_rtol, f"{spec.name}: output rel. error {cmp.output_error:.3e}"
    assert cmp.grad_error <= spec.torch_rtol, f"{spec.name}: gradient rel. error {cmp.grad_error:.3e}"


def test_every_torch_twin_has_a_jax_twin():
    missing = [s.name for s in all_specs() if s.torch is not None and s.name not in JAX_TWINS]
    assert not missing, f"ops with a PyTorch twin but no JAX twin: {missing}"


def test_jax_twins_are_registered():
    registered = {s.name for s in all_specs()}
    unknown = sorted(set(JAX_TWINS) - registered)
    assert not unknown, f"JAX twins of unregistered ops: {unknown}"


def test_comparison_detects_a_wrong_twin(monkeypatch):
    """A twin off by 1e-8 in value, or right in value but with the wrong gradient, fails the tolerance."""
    import jax
    import jax.numpy as jnp

    from orthoref.oracle.registry import get
    spec = get("tanh")
    sample = spec.sample(np.random.default_rng(0), np.float64)[0]
    monkeypatch.setitem(JAX_TWINS, "tanh", lambda x: jnp.tanh(x) * (1 + 1e-8))
    cmp = compare_with_jax(spec, sample)
    assert cmp.output_error > spec.torch_rtol and cmp.grad_error > spec.torch_rtol
    monkeypatch.setitem(JAX_TWINS, "tanh", lambda x: x + jax.lax.stop_gradient(jnp.tanh(x) - x))
    cmp = compare_with_jax(spec, sample)
    assert cmp.output_error <= spec.torch_rtol < cmp.grad_error
