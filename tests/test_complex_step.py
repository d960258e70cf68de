"""Complex-step gradient checks of every registered op marked real-analytic (``OpSpec.complex_step``):
agreement to ~1e-13 where finite differences reach ~1e-11 — and negative controls showing the check bites."""
import numpy as np
import pytest

from orthoref.oracle import GradientCheckError
from orthoref.oracle.conformance import COMPLEX_STEP_RTOL as COMPLEX_RTOL
from orthoref.oracle.gradcheck import check_complex_step
from orthoref.oracle.registry import all_specs, from_pair

from conftest import spec_samples

CASES = [c for c in spec_samples() if c.values[0].complex_step]


@pytest.mark.parametrize("spec,sample", CASES)
def test_complex_step(spec, sample):
    rep = check_complex_step(lambda *a: spec.apply(*a, **sample.kwargs), sample.inputs, rtol=COMPLEX_RTOL,
                             rng=4)
    assert rep.max_rel_error <= COMPLEX_RTOL


def test_complex_step_covers_the_analytic_families():
    marked = {s.name for s in all_specs() if s.complex_step}
    for name in ("linear", "conv2d", "tanh", "mse", "cross_entropy", "rnn", "soft_orthogonality", "srip",
                 "conv_orthogonality", "self_orthogonality", "newton_schulz", "cayley", "expm_skew"):
        assert name in marked, f"{name} is real-analytic: mark it complex_step=True"


def _square(x):
    return x * x, x


def test_complex_step_catches_a_wrong_gradient(rng):
    wrong = from_pair(_square, lambda dy, x: (2.0 * dy * x * (1 + 1e-9),))
    with pytest.raises(GradientCheckError, match="complex-step check failed"):
        check_complex_step(wrong, [rng.standard_normal((3, 4))], rtol=COMPLEX_RTOL)
    right = from_pair(_square, lambda dy, x: (2.0 * dy * x,))
    assert check_complex_step(right, [rng.standard_normal((3, 4))]).max_rel_error < 1e-15


def test_complex_step_is_float64_only(rng):
    op = from_pair(_square, lambda dy, x: (2.0 * dy * x,))
    with pytest.raises(TypeError, match="must be float64"):
        check_complex_step(op, [rng.standard_normal(3).astype(np.float32)])


@pytest.mark.parametrize("bad", ["nan", "none", "shape"])
def test_complex_step_refuses_nan_missing_and_misshaped_gradients(bad, rng):
    x = rng.standard_normal(4)
    grad = {"nan": lambda dy, c: (np.full_like(c, np.nan),), "none": lambda dy, c: (None,),
            "shape": lambda dy, c: (np.ones(1),)}[bad]
    op = from_pair(_square, grad)
    if bad == "nan":
        rep = check_complex_step(op, [x], raise_on_fail=False)
        assert not rep.passed and rep.max_rel_error == np.inf
    else:
        with pytest.raises(GradientCheckError, match="gradient of input0 has shape"):
            check_complex_step(op, [x])
