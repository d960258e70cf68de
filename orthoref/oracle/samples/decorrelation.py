"""Samples of valid inputs and registry entries: decorrelation and whitening (orthoref.decorrelation).

The inputs are built with a chosen covariance: ``X = 1μᵀ + √m A diag(σ) Vᵀ`` with ``A`` orthonormal columns
orthogonal to ``1`` and ``V`` Haar, so that ``X_c = √m A diag(σ) Vᵀ`` and ``X_cᵀX_c/m = V diag(σ²) Vᵀ``
exactly (before rounding): the spectrum of ``Σ`` is ``σ² + ε``, distinct and well separated in the
registered samples, tied, near-singular or extreme in the stress ones. Finite differences in float64, the
PyTorch twins of :mod:`orthoref.oracle.torch_twins` and the JAX twins of :mod:`orthoref.oracle.jax_twins`.
"""
from __future__ import annotations

import numpy as np

from ...decorrelation import (cholesky_whitening, cholesky_whitening_vjp, decov, group_zca_whitening,
                              group_zca_whitening_vjp, iternorm_whitening, iternorm_whitening_vjp, pca_whitening,
                              pca_whitening_vjp, zca_whitening, zca_whitening_vjp)
from ..torch_twins import torch_group_zca_whitening, torch_iternorm_whitening
from ..registry import OpSpec, Sample, from_loss, from_map
from ..torch_twins import (torch_cholesky_whitening, torch_decov, torch_pca_whitening,
                           torch_zca_whitening)


def with_spectrum(rng, m, variances, dtype=np.float64, mean=1.0, V=None):
    """``(m, d)`` data whose biased covariance ``X_cᵀX_c/m`` is ``V diag(variances) Vᵀ`` (Haar ``V`` unless
    given; ``m >= d + 1``), column means ``mean · N(0, 1)``."""
    var = np.asarray(variances, dtype=np.float64)
    d = var.size
    if m < d + 1:
        raise ValueError(f"with_spectrum: need m >= d + 1 = {d + 1}, got {m}")
    Q = np.linalg.qr(np.column_stack([np.ones(m), rng.standard_normal((m, d))]))[0]
    A = Q[:, 1:]                                        # orthonormal, orthogonal to the ones vector
    if V is None:
        V = np.linalg.qr(rng.standard_normal((d, d)))[0]
    X = mean * rng.standard_normal(d) + (A * (np.sqrt(m) * np.sqrt(var))) @ V.T
    return X.astype(dtype)


def _sign_margin(V):
    """Smallest, over the columns, of ``|v|_(1) − |v|_(2)`` when the two largest entries differ in sign
    (a perturbation could swap them and flip the PCA sign convention), else ``inf``."""
    out = np.inf
    for v in V.T:
        i, j = np.argsort(-np.abs(v))[:2]
        if np.sign(v[i]) != np.sign(v[j]):
            out = min(out, abs(v[i]) - abs(v[j]))
    return out


def _haar_signed(rng, d, margin=0.1):
    """A Haar ``V`` whose eigenvector signs are unambiguous (margin of the largest entry)."""
    for _ in range(500):
        V = np.linalg.qr(rng.standard_normal((d, d)))[0]
        if d == 1 or _sign_margin(V) > margin:
            return V
    raise RuntimeError(f"could not draw a {d}x{d} orthogonal matrix with sign margin {margin}")


# (m, variances, kwargs, label): distinct variances, separated by >= 0.3 relative to the largest.
_BASE = [
    (8, (3.0, 1.8, 0.7), {}, "8x3"),
    (12, (4.0, 2.5, 1.4, 0.5), {}, "12x4"),
    (10, (2.0, 1.1, 0.4), {"eps": 0.3}, "10x3 eps=0.3"),
    (6, (2.5, 1.5, 0.6, 0.2), {"eps": 1e-3}, "m=d+2 6x4"),
]


def _whitening_samples(rng, dtype):
    out = [Sample((with_spectrum(rng, m, var, dtype, V=_haar_signed(rng, len(var))),), kw, label)
           for m, var, kw, label in _BASE]
    out.append(Sample((with_spectrum(rng, 7, (1.5,), dtype),), {}, "one feature 7x1"))
    return out


def _decov_samples(rng, dtype):
    return [Sample((rng.standard_normal((8, 4)).astype(dtype),), {"weight": 0.7}, "(m, d)"),
            Sample(((0.5 + rng.standard_normal((5, 3))).astype(dtype),), {}, "(m, d) default weight"),
            Sample((rng.standard_normal((3, 3, 2, 2)).astype(dtype),), {"weight": 0.5}, "(b, d, h, w)")]


# ---------------------------------------------------------------------------------------------------------
# Stress samples (OpSpec.stress): ties, near-singular Σ, tiny and huge scales, m = d + 1.

def rank_deficient(rng, d, dtype=np.float64, variances=None):
    """``(d, d)`` data (``m = d``): ``X_c`` has rank ``d − 1`` (variances ``2 .. 0.5`` in ``d − 1`` directions,
    none in the last), so ``Σ``'s smallest eigenvalue is exactly ``ε`` -- singular but for ``ε``, as for any
    batch with ``m <= d``."""
    var = np.linspace(2.0, 0.5, d - 1) if variances is None else np.asarray(variances, dtype=np.float64)
    V = _haar_signed(rng, d)
    A = np.linalg.qr(np.column_stack([np.ones(d), rng.standard_normal((d, d - 1))]))[0][:, 1:]
    return (rng.standard_normal(d) + (A * (np.sqrt(d) * np.sqrt(var))) @ V[:, :d - 1].T).astype(dtype)


def _whitening_stress(ties):
    """Near-singular ``Σ``: ``m = d`` (``λ_min = ε = 0.01``, κ ≈ 200) and a spectrum 100 .. 0.1 (κ = 1e3);
    the scales 1e-10 (``Σ ≈ εI``) and 1e+10 (``Σ ≈ 1e20``, within float32's range) of a registered sample --
    1e-3 instead of 1e-10 for PCA, whose eigenvalues tie once ``ε`` dominates --; ``m = d + 1``; with
    ``ties``, a tied spectrum (2, 1, 1, 1) and an already-whitened input (``Σ = (1 + ε) I``).

    The condition numbers stay at 1e3: beyond it a correct float32 eigensolver (MKL's, PyTorch's) loses
    ``eps·κ`` of relative accuracy in the smallest eigenvalue, more than the float32 error budget of
    ``tests/test_budgets.py`` (which perturbs the inputs elementwise) allows; ``tests/test_decorrelation.py``
    checks ``λ_min = ε = 1e-5`` (κ ≈ 1e5) in float64."""
    def samples(rng, dtype):
        d = 4
        out = [Sample((rank_deficient(rng, 5, dtype),), {"eps": 0.01}, "stress: near-singular m = d = 5 eps 0.01"),
               Sample((with_spectrum(rng, 12, np.logspace(2, -1, d), dtype, mean=10.0, V=_haar_signed(rng, d)),),
                      {}, "stress: ill-conditioned kappa 1e3")]
        tiny = 1e-10 if ties else 1e-3
        for scale in (tiny, 1e10):
            X = with_spectrum(rng, 10, (2.0, 1.2, 0.5), np.float64, V=_haar_signed(rng, 3))
            out.append(Sample(((scale * X).astype(dtype),), {}, f"stress: scale {scale:g}"))
        out.append(Sample((with_spectrum(rng, 5, (3.0, 1.5, 0.8, 0.3), dtype, V=_haar_signed(rng, 4)),), {},
                          "stress: m = d + 1 5x4"))
        if ties:
            out.append(Sample((with_spectrum(rng, 10, (2.0, 1.0, 1.0, 1.0), dtype),), {},
                              "stress: repeated eigenvalues (2, 1, 1, 1)"))
            out.append(Sample((with_spectrum(rng, 9, (1.0, 1.0, 1.0), dtype),), {},
                              "stress: whitened input, Σ = (1 + eps) I"))
        return out
    return samples


# ---------------------------------------------------------------------------------------------------------
# Group-wise whitening (Decorrelated BN, IterNorm): each group's block built with its own spectrum.

def grouped(rng, m, spectra, dtype=np.float64, mean=1.0, scale=1.0):
    """``(m, Σ len(spectra))`` data: one :func:`with_spectrum` block per entry of ``spectra`` (a group's
    variances), side by side, times ``scale`` (applied in float64, then cast)."""
    X = np.hstack([with_spectrum(rng, m, var, np.float64, mean=mean, V=_haar_signed(rng, len(var)))
                   for var in spectra])
    return (scale * X).astype(dtype)


# (m, group spectra, kwargs, label): distinct variances within each group (κ <= 10).
_GROUPED = [
    (12, ((3.0, 1.8), (2.5, 0.9), (1.2,)), {"groups": 2}, "12x5 groups=2 (2, 2, 1)"),
    (10, ((3.0, 1.6, 0.7), (2.0, 1.1, 0.4)), {"groups": 3}, "10x6 groups=3"),
    (9, ((2.5, 1.5, 0.8, 0.3),), {}, "9x4 one group"),
    (8, ((3.0, 1.8, 0.9, 0.4), (2.0, 1.0, 0.5)), {"groups": 4, "eps": 0.3}, "8x7 groups=4 eps=0.3"),
    (6, ((2.0, 1.3, 0.8, 0.4), (3.0, 1.5, 0.9, 0.5)), {"groups": 4}, "m < d: 6x8 groups=4"),
]


def _group_zca_samples(rng, dtype):
    return [Sample((grouped(rng, m, spectra, dtype),), kw, label) for m, spectra, kw, label in _GROUPED]


def _iternorm_samples(rng, dtype):
    """The grouped samples at the paper's ``T = 5`` and at ``T = 1`` and ``7`` (``T <= 7``: the JAX twin runs the
    paper's uncoupled recursion, accurate to rounding there at these condition numbers)."""
    its = (5, 1, 7, 5, 3)
    return [Sample((grouped(rng, m, spectra, dtype),), {**kw, "iterations": T} if T != 5 else kw,
                   f"{label}{'' if T == 5 else f' T={T}'}")
            for (m, spectra, kw, label), T in zip(_GROUPED, its)]


def _grouped_stress(iternorm):
    """Stress samples of the group-wise whitenings: a group with ``m = g`` (rank-deficient, ``λ_min = ε``),
    an ill-conditioned group (κ = 1e3), the scales 1e-10 and 1e+10, a batch of two (IterNorm: ``Σ`` of rank 1
    plus ``ε``), many features and few samples (``m = 5``, ``d = 16`` in groups of 4), a tied and an
    already-whitened group; IterNorm also at ``T = 30``, where the paper's uncoupled recursion has lost every
    digit (its twin here is the coupled form)."""
    def samples(rng, dtype):
        out = [Sample((np.hstack([rank_deficient(rng, 4), grouped(rng, 4, ((1.5, 0.6),))]).astype(dtype),),
                      {"groups": 4, "eps": 0.01}, "stress: group with m = g = 4 eps 0.01"),
               Sample((grouped(rng, 12, (np.logspace(2, -1, 4), (2.0, 0.5)), dtype, mean=10.0),), {"groups": 4},
                      "stress: ill-conditioned group kappa 1e3")]
        for scale in (1e-10, 1e10):
            out.append(Sample((grouped(rng, 10, ((2.0, 1.2), (1.5, 0.5)), dtype, scale=scale),), {"groups": 2},
                              f"stress: scale {scale:g}"))
        out.append(Sample((grouped(rng, 5, ((3.0, 1.6, 0.8, 0.3),) * 4, dtype),), {"groups": 4},
                          "stress: many features few samples 5x16 groups=4"))
        out.append(Sample((grouped(rng, 10, ((2.0, 1.0, 1.0), (1.0, 1.0, 1.0)), dtype),), {"groups": 3},
                          "stress: repeated eigenvalues and a whitened group"))
        if iternorm:
            out.append(Sample((grouped(rng, 2, ((1.0,), (2.0,)), dtype),), {"groups": 1, "eps": 0.1},
                              "stress: batch of two, groups of one eps 0.1"))
            out.append(Sample((rng.standard_normal((2, 3)).astype(dtype),), {},
                              "stress: batch of two, Σ of rank 1 + eps"))
            out.append(Sample((grouped(rng, 12, ((4.0, 1.0, 0.2, 0.04),), dtype),), {"iterations": 30},
                              "stress: T = 30, kappa 100"))
        return out
    return samples


OPS = [
    OpSpec("zca_whitening", from_map(zca_whitening, zca_whitening_vjp), _whitening_samples,
           torch=torch_zca_whitening, rtol=1e-8, stress=_whitening_stress(ties=True),
           doc="X_c Σ^{-1/2} (ZCA), Daleckii–Krein backward with stable divided differences"),
    OpSpec("pca_whitening", from_map(pca_whitening, pca_whitening_vjp), _whitening_samples,
           torch=torch_pca_whitening, rtol=1e-8, stress=_whitening_stress(ties=False),
           doc="X_c U Λ^{-1/2}, descending, largest entry of each axis positive; distinct eigenvalues"),
    OpSpec("cholesky_whitening", from_map(cholesky_whitening, cholesky_whitening_vjp), _whitening_samples,
           torch=torch_cholesky_whitening, rtol=1e-8, stress=_whitening_stress(ties=True),
           doc="X_c L^{-T}, Σ = L Lᵀ, Cholesky backward (Murray 2016)"),
    OpSpec("group_zca_whitening", from_map(group_zca_whitening, group_zca_whitening_vjp), _group_zca_samples,
           torch=torch_group_zca_whitening, rtol=1e-8, stress=_grouped_stress(iternorm=False),
           doc="ZCA per group of features (Decorrelated BN, Huang et al. 2018); the last group may be smaller"),
    OpSpec("iternorm_whitening", from_map(iternorm_whitening, iternorm_whitening_vjp), _iternorm_samples,
           torch=torch_iternorm_whitening, rtol=1e-8, stress=_grouped_stress(iternorm=True), complex_step=True,
           doc="IterNorm (Huang et al. 2019): X_c P_T/√tr Σ per group, T Newton steps on Σ/tr Σ, exact backward"),
    OpSpec("decov", from_loss(decov), _decov_samples, torch=torch_decov, kind="loss", rtol=1e-8,
           doc="λ/2 (‖C‖²_F − ‖diag C‖²), C = H_cᵀH_c/m, Cogswell et al. 2016 (DeCov)", complex_step=True),
]
LAYERS: list = []
