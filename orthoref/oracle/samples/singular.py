"""Samples of valid inputs and registry entries: singular-value clipping (ortho.singular).

The weights are built with chosen singular values, ``W = (U diag(s) Vᵀ).reshape(shape)`` with Haar ``U``, ``V``:
distinct (PyTorch's and JAX's SVD backward need a gap) and at least 0.1 away from every clip bound (the clip
has a kink there; finite differences step 1e-3). Finite differences in float64, the PyTorch twins of
:mod:`orthoref.oracle.torch_twins` and the JAX twins of :mod:`orthoref.oracle.jax_twins`.
"""
from __future__ import annotations

import numpy as np

from ...ortho.singular import clip_singular_values, clip_singular_values_vjp, mclip, mclip_vjp
from ..registry import OpSpec, Sample, from_map
from ..torch_twins import torch_clip_singular_values, torch_mclip


def with_singular_values(rng, shape, s, dtype=np.float64):
    """A weight of ``shape`` whose matrix ``W.reshape(out, -1)`` has the singular values ``s`` (Haar vectors)."""
    n, k = shape[0], int(np.prod(shape[1:]))
    s = np.asarray(s, dtype=np.float64)
    U = np.linalg.qr(rng.standard_normal((n, s.size)))[0]
    V = np.linalg.qr(rng.standard_normal((k, s.size)))[0]
    return ((U * s) @ V.T).reshape(shape).astype(dtype)


# (shape, singular values, lo, hi, label): every σ at least 0.1 from lo and hi.
_CLIP = [
    ((6, 4), (2.5, 1.6, 0.9, 0.3), 0.5, 2.0, "6x4 lo 0.5 hi 2"),
    ((4, 7), (1.8, 1.2, 0.6, 0.2), None, 1.0, "wide 4x7 hi 1 (GAN critic)"),
    ((4, 2, 3, 3), (3.0, 1.3, 0.7, 0.4), 1 / 1.1, 1.1, "conv 4x2x3x3 SVB eps 0.1"),
    ((5, 5), (2.0, 1.5, 1.0, 0.6, 0.3), 0.8, None, "square 5x5 lo 0.8"),
    ((7, 3), (2.0, 1.4, 0.5), 1.0, 1.0, "tall 7x3 lo = hi = 1 (the polar factor)"),
]


def _clip_samples(rng, dtype):
    out = []
    for shape, s, lo, hi, label in _CLIP:
        kw = {k: v for k, v in (("lo", lo), ("hi", hi)) if v is not None}
        out.append(Sample((with_singular_values(rng, shape, s, dtype),), kw, label))
    return out


def _clip_stress(rng, dtype):
    """κ 1e6 (σ down to 3e-6, the top ones clipped), every σ clipped from above (``hi·polar(W)``) and from
    below, a scale of 1e-30 and 1e+30 with the bounds scaled alike, extreme aspect ratios, a larger conv
    kernel."""
    out = [Sample((with_singular_values(rng, (6, 4), 3.0 * np.logspace(0, -6, 4), dtype),), {"hi": 2.0},
                  "stress: kappa 1e6, hi 2"),
           Sample((with_singular_values(rng, (5, 3), (3.0, 2.0, 1.5), dtype),), {"hi": 1.0},
                  "stress: every σ above hi"),
           Sample((with_singular_values(rng, (5, 3), (0.5, 0.3, 0.2), dtype),), {"lo": 1.0},
                  "stress: every σ below lo")]
    for scale in (1e-30, 1e30):
        W = with_singular_values(rng, (6, 4), (2.5, 1.6, 0.9, 0.3), np.float64)
        out.append(Sample(((scale * W).astype(dtype),), {"lo": 0.5 * scale, "hi": 2.0 * scale},
                          f"stress: scale {scale:g}"))
    for shape in ((64, 2), (2, 64)):
        out.append(Sample((with_singular_values(rng, shape, (2.6, 1.5), dtype),), {"lo": 1.7, "hi": 2.2},
                          f"stress: aspect {shape[0]}x{shape[1]}"))
    out.append(Sample((with_singular_values(rng, (8, 4, 3, 3), np.linspace(2.4, 0.8, 8), dtype),),
                      {"lo": 0.9, "hi": 1.6}, "stress: conv 8x4x3x3"))
    return out


# (shape, singular values, kwargs, label): away from σ = 1; Newton–Schulz converged (8 Polar Express steps) or
# short (3 steps), where finite differences with step 1e-3 resolve the polynomial.
_MCLIP = [
    ((6, 4), (2.2, 1.5, 0.7, 0.3), {}, "6x4 polar_express 8 steps"),
    ((4, 7), (1.8, 1.3, 0.6, 0.4), {}, "wide 4x7"),
    ((3, 2, 2, 2), (2.0, 1.4, 0.5), {"steps": 10}, "conv 3x2x2x2 10 steps"),
    ((5, 3), (1.6, 0.8, 0.5), {"steps": 3, "coefficients": "cubic"}, "cubic 3 steps (not converged)"),
    ((4, 4), (2.0, 1.5, 0.6, 0.3), {"steps": 4, "coefficients": "jordan"}, "jordan 4 steps"),
]


def _mclip_samples(rng, dtype):
    return [Sample((with_singular_values(rng, shape, s, dtype),), kw, label) for shape, s, kw, label in _MCLIP]


def _mclip_svd_samples(rng, dtype):
    return [Sample((with_singular_values(rng, (6, 4), (2.2, 1.5, 0.7, 0.3), dtype),), {"method": "svd"}, "6x4"),
            Sample((with_singular_values(rng, (3, 8), (1.6, 0.8, 0.5), dtype),), {"method": "svd"}, "wide 3x8"),
            Sample((with_singular_values(rng, (4, 2, 3, 3), (3.0, 1.3, 0.7, 0.4), dtype),), {"method": "svd"},
                   "conv 4x2x3x3")]


def _mclip_stress(rng, dtype):
    """Singular values from 3.2 down to 0.01 (the Frobenius normalization leaves the small ones far from
    converged, yet every σ < 1 comes out exactly), an orthogonal-ish ``W`` (σ in [0.7, 1.2]: the eigenvalues of
    ``MᵀM − I`` are small), extreme aspect ratios. (Closer to 1, or a wider spread, and finite differences
    with step 1e-3 no longer resolve the steep sign polynomials; the value is checked in
    ``tests/test_ortho_singular.py``.)"""
    return [Sample((with_singular_values(rng, (8, 5), np.logspace(0.5, -2, 5), dtype),), {"steps": 16},
                   "stress: σ from 3.2 to 0.01, 16 steps"),
            Sample((with_singular_values(rng, (6, 4), (1.2, 1.1, 0.85, 0.7), dtype),), {"steps": 12},
                   "stress: σ near 1"),
            Sample((with_singular_values(rng, (64, 2), (1.7, 0.6), dtype),), {}, "stress: aspect 64x2"),
            Sample((with_singular_values(rng, (2, 64), (1.7, 0.6), dtype),), {}, "stress: aspect 2x64")]


OPS = [
    OpSpec("clip_singular_values", from_map(clip_singular_values, clip_singular_values_vjp), _clip_samples,
           torch=torch_clip_singular_values, rtol=1e-8, stress=_clip_stress,
           doc="U clip(Σ, lo, hi) Vᵀ of W.reshape(out, -1) (singular value bounding), divided-difference backward"),
    OpSpec("mclip", from_map(mclip, mclip_vjp), _mclip_samples, torch=torch_mclip, rtol=1e-8,
           stress=_mclip_stress, complex_step=True,
           doc="U min(Σ, 1) Vᵀ = ½[W + Q − (W − Q) msign(WᵀW − I)], Q = msign(W) by Newton–Schulz, unrolled"),
    OpSpec("mclip_svd", from_map(mclip, mclip_vjp), _mclip_svd_samples, torch=torch_mclip, rtol=1e-8,
           doc="mclip through the SVD: clip_singular_values(W, hi=1)"),
]
LAYERS: list = []
