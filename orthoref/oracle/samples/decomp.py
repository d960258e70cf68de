"""Samples of valid inputs and registry entries: orthogonalization by decomposition (ortho.decomp).

Finite differences in float64 and the PyTorch twins of :mod:`orthoref.oracle.torch_twins`."""
from __future__ import annotations

import numpy as np

from ...backend import get_array_module
from ...ortho.decomp import (GRAM_SCHMIDT_METHODS, gram_schmidt, gram_schmidt_vjp, householder_product,
                             householder_product_vjp, polar, polar_vjp, procrustes, procrustes_vjp, qr_orthogonalize,
                             qr_orthogonalize_vjp)
from ..torch_twins import torch_householder_product, torch_polar, torch_procrustes, torch_qr_orthogonalize
from ..registry import OpSpec, Sample, from_map


def well_conditioned(rng, shape, dtype, lo=0.5, hi=2.0):
    """``U diag(s) Vᵀ`` with singular values ``s`` in ``[lo, hi]`` and Haar ``U``, ``V`` (tall or wide)."""
    *batch, n, k = shape
    m = min(n, k)
    out = np.empty(shape)
    for idx in np.ndindex(*batch):
        U = qr_orthogonalize(rng.standard_normal((n, m)))
        W = qr_orthogonalize(rng.standard_normal((k, m)))
        s = rng.uniform(lo, hi, m)
        out[idx] = (U * s) @ W.T
    return out.astype(dtype)


def _gs_samples(rng, dtype):
    out = []
    for method in GRAM_SCHMIDT_METHODS:
        out.append(Sample((well_conditioned(rng, (6, 4), dtype),), {"method": method}, f"{method} 6x4"))
    out.append(Sample((well_conditioned(rng, (4, 4), dtype),), {"method": "mgs"}, "mgs square 4x4"))
    out.append(Sample((well_conditioned(rng, (2, 5, 3), dtype),), {"method": "cgs2"}, "cgs2 batched 2x5x3"))
    return out


def _qr_samples(rng, dtype):
    return [Sample((well_conditioned(rng, (4, 4), dtype),), {}, "square 4x4"),
            Sample((well_conditioned(rng, (7, 4), dtype),), {}, "tall 7x4"),
            Sample((well_conditioned(rng, (3, 6), dtype),), {}, "wide 3x6"),
            Sample((well_conditioned(rng, (2, 5, 3), dtype),), {}, "batched 2x5x3")]


def _polar_samples(rng, dtype):
    return [Sample((well_conditioned(rng, (4, 4), dtype),), {}, "square 4x4"),
            Sample((well_conditioned(rng, (7, 4), dtype),), {}, "tall 7x4"),
            Sample((well_conditioned(rng, (3, 6), dtype),), {}, "wide 3x6"),
            Sample((well_conditioned(rng, (2, 5, 3), dtype),), {}, "batched 2x5x3")]


def _polar_p_samples(rng, dtype):
    """Both factors, both sides: ``P`` of the short side (tall right, wide left) is positive definite, of the
    long side positive semi-definite of rank ``min(n, k)`` (still differentiable: ``P = QᵀA`` or ``AQᵀ``)."""
    cases = [((4, 4), "right"), ((7, 4), "right"), ((3, 6), "right"), ((4, 4), "left"), ((6, 3), "left"),
             ((3, 5), "left"), ((2, 5, 3), "right"), ((2, 3, 5), "left")]
    return [Sample((well_conditioned(rng, shape, dtype),), {"side": side, "return_p": True},
                   f"{side} {'x'.join(map(str, shape))}") for shape, side in cases]


def _polar_p_apply(A, **kwargs):
    Q, P = polar(A, **kwargs)
    return (Q, P), lambda cts: (polar_vjp(A, tuple(cts), **kwargs),)


def procrustes_inputs(rng, shape, dtype=np.float64, noise=0.1):
    """``(A, B)`` with ``B = A C + noise``, ``C`` well conditioned: ``AᵀB`` is nonsingular with distinct,
    well-separated singular values (the rotation and its derivative are well defined)."""
    *batch, m, n = shape
    A = well_conditioned(rng, shape, np.float64)
    C = well_conditioned(rng, tuple(batch) + (n, n), np.float64)
    B = A @ C + noise * rng.standard_normal(shape)
    return A.astype(dtype), B.astype(dtype)


def _procrustes_samples(rng, dtype):
    return [Sample(procrustes_inputs(rng, (6, 3), dtype), {}, "6x3"),
            Sample(procrustes_inputs(rng, (4, 4), dtype), {}, "square 4x4"),
            Sample(procrustes_inputs(rng, (9, 2), dtype), {}, "tall 9x2"),
            Sample(procrustes_inputs(rng, (2, 5, 3), dtype), {}, "batched 2x5x3")]


def _procrustes_apply(A, B):
    R, scale = procrustes(A, B)
    scale = get_array_module(R).asarray(scale)          # a 0-d array for one pair (a NumPy scalar, as SciPy's)
    return (R, scale), lambda cts: procrustes_vjp(A, B, cts[0], grad_scale=cts[1])


def householder_inputs(rng, shape, p=None, dtype=np.float64):
    """``(V, tau)`` from ``geqrf`` of a well-conditioned matrix (orthogonal reflectors), plus noise so
    that τ is not tied to ‖v‖ (the map is checked for any τ)."""
    from scipy.linalg import lapack
    *batch, n, k = shape
    p = k if p is None else p
    V = np.empty(shape)
    tau = np.empty(tuple(batch) + (p,))
    for idx in np.ndindex(*batch):
        qr, t, _, _ = lapack.dgeqrf(well_conditioned(rng, (n, k), np.float64))
        V[idx] = qr
        tau[idx] = t[:p] + rng.uniform(-0.2, 0.2, p)
    return V.astype(dtype), tau.astype(dtype)


def _householder_samples(rng, dtype):
    return [Sample(householder_inputs(rng, (6, 4), dtype=dtype), {}, "6x4"),
            Sample(householder_inputs(rng, (5, 5), dtype=dtype), {}, "square 5x5"),
            Sample(householder_inputs(rng, (6, 4), p=2, dtype=dtype), {}, "6x4 p=2"),
            Sample(householder_inputs(rng, (2, 5, 3), dtype=dtype), {}, "batched 2x5x3")]


def _householder_apply(V, tau):
    Q = householder_product(V, tau)
    return (Q,), lambda cts: householder_product_vjp(V, tau, cts[0])


# ---------------------------------------------------------------------------------------------------------
# Stress samples (OpSpec.stress): ill-conditioned, tiny and huge, tall and wide.

def ill_conditioned(rng, shape, kappa, dtype, scale=1.0):
    """``scale · U diag(s) Vᵀ`` with singular values ``s`` log-spaced from 1 down to ``1/kappa`` (Haar ``U``,
    ``V``): condition number ``kappa``, no repeated singular value."""
    n, k = shape
    m = min(n, k)
    U = np.linalg.qr(rng.standard_normal((n, m)))[0]
    V = np.linalg.qr(rng.standard_normal((k, m)))[0]
    return (scale * (U * np.logspace(0.0, -np.log10(kappa), m)) @ V.T).astype(dtype)


def _decomp_stress(shapes, kwargs=None):
    """κ 1e3 and 1e6 on ``shapes[0]``, the scales 1e-30 and 1e30 (float32 holds both; the maps are
    scale-invariant), and a tall and a wide extreme among ``shapes``."""
    def samples(rng, dtype):
        kw = dict(kwargs or {})
        main, *extremes = shapes
        out = [Sample((ill_conditioned(rng, main, kappa, dtype),), kw, f"stress: kappa {kappa:g}")
               for kappa in (1e3, 1e6)]
        out += [Sample(((scale * well_conditioned(rng, main, np.float64)).astype(dtype),), kw,
                       f"stress: scale {scale:g}") for scale in (1e-30, 1e30)]
        out += [Sample((well_conditioned(rng, shape, dtype),), kw, f"stress: aspect {shape[0]}x{shape[1]}")
                for shape in extremes]
        return out
    return samples


def reflectors(rng, shape, p=None, scale=1.0, spread=1.0, dtype=np.float64):
    """``(V, tau)``: reflector tails ``scale · (c + spread · noise)`` (the same ``c`` for every column: nearly
    parallel reflectors for a small ``spread``), the unit diagonal implied and the ignored entries zero, and
    ``τ_i = 2/‖v_i‖²`` (orthogonal reflectors, consistent with V at any scale)."""
    n, k = shape
    p = k if p is None else p
    common = rng.standard_normal(n)
    V = np.zeros(shape)
    for i in range(p):
        V[i + 1:, i] = scale * (common[i + 1:] + spread * rng.standard_normal(n - i - 1))
    tau = 2.0 / (1.0 + (V[:, :p] ** 2).sum(axis=0))
    return V.astype(dtype), tau.astype(dtype)


def _householder_stress(rng, dtype):
    """Near-identity reflectors (tiny tails: ``H_i ≈ I − 2e_ie_iᵀ``; τ near 0: ``H_i ≈ I``), nearly parallel
    reflector vectors (the compact-WY ``T`` is then far from diagonal) and ``geqrf`` of a κ = 1e6 matrix, tall
    extreme aspect ratios, a single reflector (``p = 1``, and ``k = 1``), tails scaled by 1e-6, 1e-3 and 1e2
    (τ ≈ 1e-4: finite differences with one step for V and τ stop resolving larger ones)."""
    out = []
    for scale in (1e-6, 1e-3):
        out.append(Sample(reflectors(rng, (6, 4), scale=scale, dtype=dtype), {}, f"stress: scale {scale:g}"))
    V, tau = reflectors(rng, (6, 4), dtype=np.float64)
    out.append(Sample((V.astype(dtype), (1e-6 * tau).astype(dtype)), {}, "stress: tau near 0 (H_i near I)"))
    out.append(Sample(reflectors(rng, (7, 4), spread=1e-4, dtype=dtype), {}, "stress: nearly parallel reflectors"))
    from scipy.linalg import lapack
    qr, t, _, _ = lapack.dgeqrf(ill_conditioned(rng, (8, 5), 1e6, np.float64))
    out.append(Sample((qr.astype(dtype), t.astype(dtype)), {}, "stress: geqrf of kappa 1e6"))
    out.append(Sample(householder_inputs(rng, (64, 2), dtype=dtype), {}, "stress: aspect 64x2"))
    out.append(Sample(householder_inputs(rng, (40, 1), dtype=dtype), {}, "stress: aspect 40x1, one reflector"))
    out.append(Sample(householder_inputs(rng, (5, 4), p=1, dtype=dtype), {}, "stress: single reflector p=1"))
    out.append(Sample(reflectors(rng, (5, 3), scale=1e2, dtype=dtype), {}, "stress: large V tails 1e2"))
    return out


OPS = [
    OpSpec("gram_schmidt", from_map(gram_schmidt, gram_schmidt_vjp), _gs_samples, torch=torch_qr_orthogonalize,
           stress=_decomp_stress([(6, 4), (64, 2)], {"method": "cgs2"}),
           rtol=1e-8, doc="Gram–Schmidt (cgs, mgs, cgs2): Q of the QR with R_jj > 0", complex_step=True),
    OpSpec("qr_orthogonalize", from_map(qr_orthogonalize, qr_orthogonalize_vjp), _qr_samples,
           torch=torch_qr_orthogonalize, stress=_decomp_stress([(6, 4), (64, 2), (2, 64)]),
           rtol=1e-8, doc="Q of the thin QR with diag R >= 0 (wide: transposed)"),
    OpSpec("polar", from_map(polar, polar_vjp), _polar_samples, torch=torch_polar,
           stress=_decomp_stress([(5, 5), (64, 2), (2, 64)]),
           rtol=1e-8,
           doc="polar factor U Vᵀ (msign), closed-form backward"),
    OpSpec("polar_p", _polar_p_apply, _polar_p_samples, torch=torch_polar, rtol=1e-8,
           doc="polar decomposition A = QP (right) or PQ (left), both factors (scipy.linalg.polar)"),
    OpSpec("procrustes", _procrustes_apply, _procrustes_samples, torch=torch_procrustes, rtol=1e-8,
           doc="R = polar(AᵀB) = argmin ‖AR − B‖ over RᵀR = I, and Σσ(AᵀB) (scipy.linalg.orthogonal_procrustes)"),
    OpSpec("householder_product", _householder_apply, _householder_samples, torch=torch_householder_product,
           stress=_householder_stress,
           rtol=1e-8, doc="H_1 ⋯ H_p I[:, :k] (LAPACK orgqr), compact-WY backward"),
]
LAYERS: list = []
