"""Samples of valid inputs and registry entries: iterative orthogonalization (ortho.iterative).

Finite differences in float64 and the PyTorch twins of :mod:`orthoref.oracle.torch_twins`."""
from __future__ import annotations

import numpy as np

from ...ortho.iterative import (bjorck, bjorck_vjp, newton_schulz, newton_schulz_vjp, parseval_retraction,
                                parseval_retraction_vjp, spectral_normalize, spectral_normalize_vjp)
from ..torch_twins import (torch_bjorck, torch_newton_schulz, torch_parseval_retraction,
                                  torch_spectral_normalize)
from ..registry import OpSpec, Sample, from_map
from .decomp import ill_conditioned, well_conditioned


def _ns_samples(rng, dtype):
    def A(shape, scale=3.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)
    user = [(2.0, -1.5, 0.5), (1.5, -0.5, 0.0)]
    return [
        Sample((A((3, 4)),), {"steps": 3, "coefficients": "jordan"}, "jordan wide"),
        Sample((A((5, 3)),), {"steps": 3, "coefficients": "jordan"}, "jordan tall"),
        Sample((A((4, 4)),), {"steps": 5, "coefficients": "cubic"}, "cubic square"),
        Sample((A((3, 4)),), {"steps": 3, "coefficients": "you"}, "you wide"),
        Sample((A((4, 3)),), {"steps": 3, "coefficients": "polar_express"}, "polar_express tall"),
        Sample((A((3, 3)),), {"steps": 3, "coefficients": user}, "user table square"),
        Sample((A((2, 3, 4)),), {"steps": 2, "coefficients": "jordan", "eps": 1e-3}, "jordan batched"),
        Sample((A((2, 4, 3)),), {"steps": 3, "coefficients": "cubic"}, "cubic batched tall"),
    ]


def _bjorck_samples(rng, dtype):
    def A(shape):
        return rng.standard_normal(shape).astype(dtype)
    return [Sample((A((3, 4)),), {"steps": 3}, "wide"),
            Sample((A((5, 3)),), {"steps": 4, "beta": 0.3}, "tall beta=0.3"),
            Sample((A((2, 3, 3)),), {"steps": 2}, "batched square")]


def _parseval_samples(rng, dtype):
    def A(shape):
        return (0.7 * rng.standard_normal(shape)).astype(dtype)
    return [Sample((A((4, 4)),), {}, "square default beta"),
            Sample((A((3, 5)),), {"beta": 0.1}, "wide"),
            Sample((A((5, 3)),), {"beta": 0.1}, "tall"),
            Sample((A((2, 3, 4)),), {"beta": 0.2}, "batched")]


def _spectral_samples(rng, dtype):
    """``u`` is the exact top left singular vector of a matrix with a clear gap: there the power-iteration
    map is stationary, so finite differences of the whole loop agree with the detached-``u, v`` gradient."""
    out = []
    for shape, n_iter, label in (((4, 6), 1, "wide"), ((5, 3), 2, "tall n_iter=2"),
                                 ((3, 2, 2, 2), 1, "conv")):
        for _ in range(200):
            W = rng.standard_normal(shape)
            U, s, _ = np.linalg.svd(W.reshape(shape[0], -1))
            if s[1] < 0.7 * s[0]:
                break
        out.append(Sample((W.astype(dtype),), {"u": U[:, 0].copy(), "n_iter": n_iter}, label))
    return out


def _spectral_map(W, **kw):
    return spectral_normalize(W, **kw)[0]


# ---------------------------------------------------------------------------------------------------------
# Stress samples (OpSpec.stress): ill-conditioned, tall and wide.

def _iterative_stress(kwargs):
    """κ 1e3 and 1e6 (the small singular values are far from converged: the unrolled map is still smooth),
    and a tall and a wide extreme."""
    def samples(rng, dtype):
        out = [Sample((ill_conditioned(rng, (5, 4), kappa, dtype, scale=3.0),), dict(kwargs),
                      f"stress: kappa {kappa:g}") for kappa in (1e3, 1e6)]
        out += [Sample((well_conditioned(rng, shape, dtype),), dict(kwargs), f"stress: aspect {shape[0]}x{shape[1]}")
                for shape in ((64, 2), (2, 64))]
        return out
    return samples


OPS = [
    OpSpec("newton_schulz", from_map(newton_schulz, newton_schulz_vjp), _ns_samples, torch=torch_newton_schulz,
           stress=_iterative_stress({"steps": 5, "coefficients": "jordan"}),
           rtol=1e-8, doc="Newton–Schulz polar approximation (Muon / You / Polar Express), unrolled",
           complex_step=True),
    OpSpec("bjorck", from_map(bjorck, bjorck_vjp), _bjorck_samples, torch=torch_bjorck,
           stress=_iterative_stress({"steps": 3}),
           rtol=1e-8,
           doc="Björck orthonormalization after ‖A‖_F scaling, unrolled", complex_step=True),
    OpSpec("parseval_retraction", from_map(parseval_retraction, parseval_retraction_vjp),
           _parseval_samples, torch=torch_parseval_retraction, rtol=1e-8,
           doc="(1 + β)W − βWWᵀW, Cissé et al. 2017", complex_step=True),
    OpSpec("spectral_normalize", from_map(_spectral_map, spectral_normalize_vjp), _spectral_samples,
           torch=torch_spectral_normalize, rtol=1e-8,
           doc="W / σ̂, power iteration from u (Miyato et al. 2018), u and v detached as PyTorch"),
]
LAYERS: list = []
