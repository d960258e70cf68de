"""The stress samples (``OpSpec.stress``: near-orthogonal weights, ill-conditioned inputs, extreme scales and
shapes, batches of one), kept out of ``spec.sample`` so the golden fixtures and the registry never change.

For every op with stress samples: the float64 VJP agrees with the PyTorch twin to the op's ``torch_rtol``;
float64 finite differences agree where the sample is smooth at the step used — the step shrinks with the
sample's gap (``‖G − I‖_F/√k`` for the max/abs/eigen regularizers, ``σ_min`` for the decompositions) and with
the input's scale (``"stress: scale ..."`` samples of the other ops); κ = 1e6 is left to the twin (a step under
``σ_min = 1e-6`` leaves rounding noise above rtol 1e-8), and so are the ties of max-pooling (the max has no
derivative there: PyTorch's convention, the first maximum of the window, is what the twin checks).
The float32 no-false-alarm loop over them is in tests/test_budgets.py."""
import zlib

import numpy as np
import pytest

from orthoref import testing
from orthoref.oracle import check_backward
from orthoref.oracle.registry import all_specs

STRESSED = [s for s in all_specs() if s.stress is not None]
# ops whose derivative jumps at a tie of |G − I|'s entries or of the spectrum: the step scales with the gap
GAP_OPS = {"mutual_coherence", "l1_orthogonality", "srip", "srip_exact", "spectral_penalty"}
DECOMP_OPS = {"gram_schmidt", "qr_orthogonalize", "polar", "newton_schulz", "bjorck"}
# ops whose derivative is undefined at a tie of a window's maximum or at a kink (ReLU and LeakyReLU at 0):
# the gradient is a convention there (PyTorch's), checked against the twin
TIE_OPS = {"max_pool2d", "nn.MaxPool2d", "relu", "leaky_relu"}
# bounded activations: far out their derivative (~4 e^{-2|x|}) is below what a difference quotient of values
# near ±1 can resolve (ulp(1)/h), so saturated samples are left to the twin; they are not homogeneous, so
# the step stays absolute at every scale
SATURATING_OPS = {"tanh", "sigmoid"}


def stress_samples(spec):
    return spec.stress(np.random.default_rng(zlib.crc32(spec.name.encode())), np.float64)


CASES = [pytest.param(spec, s, id=f"{spec.name}-{s.label}") for spec in STRESSED for s in stress_samples(spec)]


def _matrix(x):
    return x.reshape(x.shape[0], -1)


def fd_step(spec, sample):
    """The finite-difference step for ``sample``, or ``None`` where finite differences cannot resolve it."""
    M = _matrix(sample.inputs[0])
    if spec.name in GAP_OPS:
        k = min(M.shape)
        G = M @ M.T if M.shape[0] <= M.shape[1] else M.T @ M
        return 1e-4 * np.linalg.norm(G - np.eye(k)) / np.sqrt(k)
    if spec.name in DECOMP_OPS:
        s = np.linalg.svd(M, compute_uv=False)
        return None if s[0] / s[-1] > 1e4 else 1e-3 * s[-1]
    if spec.name in SATURATING_OPS:
        return None if float(np.abs(sample.inputs[0]).max()) > 10 else 1e-3
    if spec.name in TIE_OPS and sample.label.startswith("stress: ties"):
        # several equal maxima in a window (or x exactly at a kink): a step in any direction picks a different
        # winner (branch) on each side, so the difference quotient is a one-sided derivative, not the
        # convention's gradient
        return None
    if spec.name == "retract_exp":
        # a geodesic of length ‖Z‖ is exp of a matrix of norm ~‖Z‖: its t-derivatives along a step in W grow
        # like ‖Z‖^k, so the stencil's O(h⁴) truncation needs h ~ 1e-3/‖Z‖ (3e-7 at ‖Z‖ = 100, h = 1e-3)
        return 1e-3 / max(1.0, float(np.linalg.norm(sample.inputs[1])))
    if sample.label.startswith("stress: scale "):
        # an absolute step of 1e-3 vanishes under 1e30 (x + 1e-3 == x) and swamps 1e-30: scale it with x
        return 1e-3 * float(np.abs(sample.inputs[0]).max())
    return 1e-3


def test_every_stress_sample_is_labelled_and_float64():
    assert {s.name for s in STRESSED} >= {"soft_orthogonality", "mutual_coherence", "srip", "polar", "bjorck"}
    for spec in STRESSED:
        for sample in stress_samples(spec):
            assert sample.label.startswith("stress: ") and testing.is_stress(sample), (spec.name, sample.label)
            assert all(x.dtype in (np.float64, np.int64) for x in sample.inputs)


def test_stress_samples_stay_out_of_the_registered_samples():
    for spec in STRESSED:
        assert not any(testing.is_stress(s) for s in spec.sample(np.random.default_rng(0), np.float64))
        n = len(stress_samples(spec))
        assert len(testing.cases(spec.name, dtypes=("float64",), samples="stress")) == n
        std = testing.cases(spec.name, dtypes=("float64",), samples="standard")
        assert len(testing.cases(spec.name, dtypes=("float64",))) == len(std) + n


@pytest.mark.parametrize("level", [1e-1, 1e-2, 1e-3, 1e-4])
def test_near_orthogonal_level_is_exact(level):
    from orthoref.oracle.samples.regularizers import near_orthogonal
    for shape in ((4, 6), (6, 4), (2, 64)):
        M = near_orthogonal(np.random.default_rng(0), shape, level, np.float64)
        k = min(shape)
        G = M @ M.T if shape[0] <= shape[1] else M.T @ M
        assert np.linalg.norm(G - np.eye(k)) / np.sqrt(k) == pytest.approx(level, rel=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize("spec,sample", CASES)
def test_stress_torch_conformance_float64(spec, sample):
    pytest.importorskip("torch")
    from orthoref.oracle.conformance import compare_with_torch
    cmp = compare_with_torch(spec, sample, rng=3)
    assert cmp.output_error <= spec.torch_rtol, f"{spec.name}: output rel. error {cmp.output_error:.3e}"
    assert cmp.grad_error <= spec.torch_rtol, f"{spec.name}: gradient rel. error {cmp.grad_error:.3e}"


@pytest.mark.parametrize("spec,sample", CASES)
def test_stress_gradient_finite_differences(spec, sample):
    eps = fd_step(spec, sample)
    if eps is None:
        pytest.skip("κ 1e6, a tie or saturation: finite differences cannot resolve it (fd_step); checked against the "
                    "PyTorch twin")
    check_backward(lambda *a: spec.apply(*a, **sample.kwargs), sample.inputs, rtol=spec.rtol, eps=eps,
                   n_directions=4, rng=1)
