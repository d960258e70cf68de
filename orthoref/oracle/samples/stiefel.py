"""Samples of valid inputs and registry entries: Stiefel-manifold maps (ortho.stiefel).

Finite differences in float64 and the PyTorch autograd twins of :mod:`orthoref.oracle.torch_twins`."""
from __future__ import annotations

import numpy as np

from ...ortho._linalg import mT, sign_fix
from ...ortho.stiefel import (cayley, cayley_iterative, cayley_iterative_vjp, cayley_vjp, expm_skew, expm_skew_vjp,
                              project_tangent, project_tangent_vjp, retract, retract_vjp)
from ..torch_twins import (torch_cayley, torch_cayley_iterative, torch_expm_skew, torch_project_tangent,
                                  torch_project_tangent_wg, torch_retract, torch_retract_exp)
from ..registry import OpSpec, Sample, from_map
from .regularizers import near_orthogonal


def _square(rng, shape, norm=1.0):
    A = rng.standard_normal(shape)
    return A * (norm / np.linalg.norm(A, 2, axis=(-2, -1), keepdims=True))


def _skew(A):
    return 0.5 * (A - mT(A))


def stiefel_point(rng, shape):
    """A point of the Stiefel manifold: Q of the QR (``diag R >= 0``) of a Gaussian of ``shape``."""
    Q, R = np.linalg.qr(rng.standard_normal(shape))
    return sign_fix(Q, R)[0]


def _map_samples(rng, dtype):
    return [Sample((_square(rng, (4, 4)).astype(dtype),), {}, "4x4 general"),
            Sample((_skew(_square(rng, (5, 5), 2.0)).astype(dtype),), {}, "5x5 skew"),
            Sample((_square(rng, (2, 3, 3), 0.8).astype(dtype),), {}, "batched 2x3x3")]


def _project_samples(rng, dtype):
    out = []
    for metric, shape in (("euclidean", (5, 3)), ("canonical", (5, 3)), ("euclidean", (2, 4, 4)),
                          ("canonical", (2, 4, 2))):
        W = stiefel_point(rng, shape).astype(dtype)
        G = rng.standard_normal(shape).astype(dtype)
        out.append(Sample((G,), {"W": W, "metric": metric}, f"{metric} {'x'.join(map(str, shape))}"))
    return out


def _project_wg_samples(rng, dtype):
    out = []
    for metric, shape in (("euclidean", (5, 3)), ("canonical", (4, 2)), ("euclidean", (2, 3, 3))):
        W = stiefel_point(rng, shape).astype(dtype)
        G = rng.standard_normal(shape).astype(dtype)
        out.append(Sample((W, G), {"metric": metric, "check": False}, f"{metric} {'x'.join(map(str, shape))}"))
    return out


def _retract_samples(method):
    def sample(rng, dtype):
        out = []
        for shape in ((5, 3), (4, 4), (2, 4, 2)):
            W = stiefel_point(rng, shape)
            Z = project_tangent(W, rng.standard_normal(shape))
            Z *= 0.5 / np.linalg.norm(Z, axis=(-2, -1), keepdims=True)
            out.append(Sample((W.astype(dtype), Z.astype(dtype)), {"method": method, "check": False},
                              "x".join(map(str, shape))))
        return out
    return sample


def _exp_retract_samples(rng, dtype):
    # n >= 2p or n == p only: for p < n < 2p, (I - WWᵀ)Z is rank-deficient and the forward's QR is not
    # differentiable in W off the manifold (retract_vjp falls back to the n x n form; see its docstring).
    out = []
    for shape in ((6, 3), (4, 4), (2, 5, 2), (3, 1)):
        W = stiefel_point(rng, shape)
        Z = project_tangent(W, rng.standard_normal(shape))
        Z *= 0.8 / np.linalg.norm(Z, axis=(-2, -1), keepdims=True)
        out.append(Sample((W.astype(dtype), Z.astype(dtype)), {"method": "exp", "check": False},
                          "x".join(map(str, shape))))
    return out


def _cayley_iterative_samples(rng, dtype):
    out = []
    for shape, alpha, iterations in (((5, 3), 0.4, 2), ((4, 4), 0.3, 3), ((2, 4, 2), 0.5, 1), ((6, 2), 0.2, 0)):
        W = stiefel_point(rng, shape)
        Z = project_tangent(W, rng.standard_normal(shape))
        Z /= np.linalg.norm(Z, axis=(-2, -1), keepdims=True)
        out.append(Sample((W.astype(dtype), Z.astype(dtype)),
                          {"alpha": alpha, "iterations": iterations, "check": False},
                          f"{'x'.join(map(str, shape))} alpha={alpha} it={iterations}"))
    return out


# ---------------------------------------------------------------------------------------------------------
# Stress samples (OpSpec.stress): near-zero and large skew inputs, tall-skinny points, points off the manifold.

def _skew_of_norm(rng, n, norm):
    A = _skew(rng.standard_normal((n, n)))
    return A * (norm / np.linalg.norm(A, 2))


def _map_stress(norms):
    """Skew inputs of spectral norm 1e-8 and each of ``norms`` (the maps stay orthogonal on skew inputs: no
    overflow in float32), a near-zero general input and a 24x24 skew one."""
    def samples(rng, dtype):
        out = [(_skew_of_norm(rng, 5, norm), f"stress: skew norm {norm:g}") for norm in (1e-8,) + tuple(norms)]
        out.append((_square(rng, (4, 4), 1e-8), "stress: general norm 1e-08"))
        out.append((_skew_of_norm(rng, 24, 3.0), "stress: skew 24x24 norm 3"))
        return [Sample((A.astype(dtype),), {}, label) for A, label in out]
    return samples


def _tangent(rng, W, norm):
    Z = project_tangent(W, rng.standard_normal(W.shape))
    return Z * (norm / np.linalg.norm(Z, axis=(-2, -1), keepdims=True))


def _pairs(rng, norm_big):
    """``(W, Z, label)``: a 64x2 point, points off the manifold by 1e-6 and 1e-3, a step of norm 1e-8 (tall
    and square), and a step of norm ``norm_big``."""
    out = []
    W = stiefel_point(rng, (64, 2))
    out.append((W, _tangent(rng, W, 0.8), "stress: aspect 64x2"))
    for level in (1e-6, 1e-3):
        W0 = stiefel_point(rng, (6, 3))
        # U diag(s) Vᵀ with ‖WᵀW − I‖_F/√p = level exactly
        out.append((near_orthogonal(rng, (6, 3), level, np.float64), _tangent(rng, W0, 0.8),
                    f"stress: near-orthogonal W {level:g}"))
    for shape in ((6, 3), (4, 4)):
        W = stiefel_point(rng, shape)
        out.append((W, _tangent(rng, W, 1e-8), f"stress: step norm 1e-08 {shape[0]}x{shape[1]}"))
    if norm_big is not None:
        W = stiefel_point(rng, (6, 3))
        out.append((W, _tangent(rng, W, norm_big), f"stress: step norm {norm_big:g}"))
    return out


def _exp_retract_stress(rng, dtype):
    return [Sample((W.astype(dtype), Z.astype(dtype)), {"method": "exp", "check": False}, label)
            for W, Z, label in _pairs(rng, 100.0)]


def _cayley_iterative_stress(rng, dtype):
    return [Sample((W.astype(dtype), Z.astype(dtype)), {"alpha": 0.5, "iterations": 2, "check": False}, label)
            for W, Z, label in _pairs(rng, None)]


def _project_apply(G, W=None, metric="euclidean", check=True):
    P = project_tangent(W, G, metric, check=check)
    return (P,), lambda cts: (project_tangent_vjp(W, G, cts[0], metric, check=False),)


def _project_wg_apply(W, G, metric="euclidean", check=True):
    P = project_tangent(W, G, metric, check=check)
    return (P,), lambda cts: project_tangent_vjp(W, G, cts[0], metric, wrt="both", check=False)


def _retract_apply(W, Z, method="qr", check=True):
    Y = retract(W, Z, method, check=check)
    return (Y,), lambda cts: retract_vjp(W, Z, cts[0], method, check=False)


def _cayley_iterative_apply(W, Z, alpha=0.1, iterations=2, check=True):
    Y = cayley_iterative(W, Z, alpha, iterations, check=check)
    return (Y,), lambda cts: cayley_iterative_vjp(W, Z, alpha, cts[0], iterations, check=False)


OPS = [
    OpSpec("cayley", from_map(cayley, cayley_vjp), _map_samples, torch=torch_cayley, rtol=1e-8,
           stress=_map_stress((1e2, 1e4)),
           doc="(I - A/2)^{-1}(I + A/2) (PyTorch's cayley map)", complex_step=True),
    OpSpec("expm_skew", from_map(expm_skew, expm_skew_vjp), _map_samples, torch=torch_expm_skew, rtol=1e-8,
           stress=_map_stress((1e2,)),
           doc="scipy.linalg.expm; vjp = expm_frechet(Aᵀ, Ḡ)", complex_step=True),
    OpSpec("project_tangent", _project_apply, _project_samples, torch=torch_project_tangent, rtol=1e-8,
           doc="Stiefel tangent projection as a map of G (W fixed)"),
    OpSpec("project_tangent_wg", _project_wg_apply, _project_wg_samples, torch=torch_project_tangent_wg,
           rtol=1e-8, doc="Stiefel tangent projection, gradients w.r.t. W and G", complex_step=True),
] + [
    OpSpec(f"retract_{m}", _retract_apply, _retract_samples(m), torch=torch_retract, rtol=1e-8,
           doc=f"Stiefel retraction ({m}), gradients w.r.t. W and Z", complex_step=m == "cayley")
    for m in ("qr", "polar", "cayley")
] + [
    OpSpec("retract_exp", _retract_apply, _exp_retract_samples, torch=torch_retract_exp, rtol=1e-8,
           stress=_exp_retract_stress,
           doc="Stiefel canonical geodesic (Edelman et al.), gradients w.r.t. W and Z (n >= 2p or n == p)"),
    OpSpec("cayley_iterative", _cayley_iterative_apply, _cayley_iterative_samples,
           torch=torch_cayley_iterative, rtol=1e-8, stress=_cayley_iterative_stress,
           doc="iterative Cayley (Li et al. 2020), unrolled; gradients w.r.t. W and Z", complex_step=True),
]
LAYERS: list = []
