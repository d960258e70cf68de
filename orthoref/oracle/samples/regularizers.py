"""Samples of valid inputs and registry entries: orthogonality regularizers.

Small inputs kept off kinks and ties; the PyTorch twins of :mod:`orthoref.oracle.torch_twins`."""
from __future__ import annotations

import numpy as np

from ...ortho._linalg import use_rows
from ...regularizers import (conv_orthogonality, double_soft_orthogonality, kernel_slice_orthogonality,
                             l1_orthogonality, mutual_coherence, off_diagonal, self_orthogonality,
                             soft_orthogonality, spectral_penalty, srip)
from ..torch_twins import (torch_conv_orthogonality, torch_double_soft_orthogonality,
                                  torch_kernel_slice_orthogonality, torch_l1_orthogonality,
                                  torch_mutual_coherence, torch_off_diagonal, torch_self_orthogonality,
                                  torch_soft_orthogonality, torch_spectral_penalty, torch_srip)
from ..registry import OpSpec, Sample, from_loss

_FD_STEP = 2e-3          # the largest finite-difference step along a direction with components <= 1


def _entry_bound(M, rows):
    """Largest change of an entry of the Gram matrix under a perturbation of ``M`` by ``_FD_STEP`` in
    every component: ``|δG_ij| <= t (‖m_i‖₁ + ‖m_j‖₁) + t² n``."""
    vecs = M if rows else M.T
    l1 = np.abs(vecs).sum(axis=1).max()
    return _FD_STEP * 2 * l1 + _FD_STEP ** 2 * vecs.shape[1]


def _draw(rng, dtype, shape, scale, ok, tries=200):
    """Draw ``scale · N(0, 1)`` arrays of ``shape`` until ``ok(W)``."""
    for _ in range(tries):
        W = scale * rng.standard_normal(shape)
        if ok(W):
            return W.astype(dtype)
    raise RuntimeError(f"could not draw a well-separated sample of shape {shape}")


def _gram_np(W, gram):
    M = W.reshape(W.shape[0], -1)
    rows = use_rows(M, gram)
    return (M @ M.T if rows else M.T @ M) - np.eye(M.shape[0] if rows else M.shape[1]), M, rows


def _mc_ok(gram):
    def ok(W):
        N, M, rows = _gram_np(W, gram)
        a = np.sort(np.abs(N[np.triu_indices(N.shape[0])]))[::-1]
        need = max(0.01, 2.5 * _entry_bound(M, rows))
        return a.size > 1 and a[0] - a[1] > need
    return ok


def _l1_ok(gram):
    def ok(W):
        N, M, rows = _gram_np(W, gram)
        return np.abs(N).min() > max(0.01, 1.5 * _entry_bound(M, rows))
    return ok


def _eig_ok(W):
    N, _, _ = _gram_np(W, "auto")
    a = np.sort(np.abs(np.linalg.eigvalsh(N)))[::-1]
    return a.size < 2 or a[0] - a[1] > 0.1


def _sv_ok(W):
    s = np.linalg.svd(W.reshape(W.shape[0], -1), compute_uv=False)
    return s.size < 2 or s[0] - s[1] > 0.1


_SHAPES = [((3, 5), "wide"), ((5, 3), "tall"), ((4, 4), "square"), ((3, 2, 2, 2), "conv")]


def _weight_samples(rng, dtype, scale=0.5, ok=None, kwargs=None):
    out = []
    for shape, label in _SHAPES:
        W = _draw(rng, dtype, shape, scale, ok or (lambda W: True))
        out.append(Sample((W,), dict(kwargs or {}), label))
    return out


def _so_samples(rng, dtype):
    s = _weight_samples(rng, dtype, kwargs={"weight": 0.7})
    s.append(Sample(((0.5 * rng.standard_normal((5, 3))).astype(dtype),), {"gram": "rows"}, "tall rows"))
    s.append(Sample(((0.5 * rng.standard_normal((3, 5))).astype(dtype),), {"gram": "cols"}, "wide cols"))
    return s


def _plain_samples(rng, dtype):
    return _weight_samples(rng, dtype, kwargs={"weight": 0.7})


def _mc_samples(rng, dtype):
    s = [Sample((_draw(rng, dtype, shape, 0.5, _mc_ok("auto")),), {"weight": 0.7}, label)
         for shape, label in _SHAPES]
    s.append(Sample((_draw(rng, dtype, (5, 3), 0.5, _mc_ok("rows")),), {"gram": "rows"}, "tall rows"))
    s.append(Sample((_draw(rng, dtype, (3, 5), 0.5, _mc_ok("cols")),), {"gram": "cols"}, "wide cols"))
    return s


def _l1_samples(rng, dtype):
    s = [Sample((_draw(rng, dtype, shape, 0.5, _l1_ok("auto")),), {"weight": 0.7}, label)
         for shape, label in _SHAPES]
    s.append(Sample((_draw(rng, dtype, (5, 3), 0.5, _l1_ok("rows")),), {"gram": "rows"}, "tall rows"))
    s.append(Sample((_draw(rng, dtype, (3, 5), 0.5, _l1_ok("cols")),), {"gram": "cols"}, "wide cols"))
    return s


def _power_ok(W, v0, n_iter):
    """Every ``‖N v_t‖`` at least half of ``σ_max(N) ‖v_t‖``: the normalisations stay well conditioned, so
    the fourth-order differences stay within 1e-8 (near-null start vectors make them stiff)."""
    N, _, _ = _gram_np(W, "auto")
    s = np.abs(np.linalg.eigvalsh(N)).max()
    v = np.ravel(v0)
    for _ in range(n_iter + 1):
        w = N @ v
        if np.linalg.norm(w) < 0.5 * s * np.linalg.norm(v):
            return False
        v = w / np.linalg.norm(w)
    return True


def _srip_samples(method):
    def samples(rng, dtype):
        out = []
        for (shape, label), gram in zip(_SHAPES + [((5, 3), "tall rows")], ["auto"] * 4 + ["rows"]):
            for _ in range(200):
                W = 1.5 * rng.standard_normal(shape)
                M = W.reshape(W.shape[0], -1)
                k = M.shape[0] if use_rows(M, gram) else M.shape[1]
                v0 = rng.uniform(0.0, 1.0, size=(k, 1) if label == "square" else k)
                if gram == "auto" and _eig_ok(W) and _power_ok(W, v0, 2):
                    break
                if gram == "rows":
                    break
            for n_iter in ((1, 2) if label in ("wide", "tall") else (1,)):
                kw = {"v0": v0, "n_iter": n_iter, "method": method}
                if gram == "rows":
                    kw = {"v0": v0, "gram": "rows", "method": method}
                elif label != "conv":
                    kw["weight"] = 0.7
                out.append(Sample((W.astype(dtype),), kw, f"{label} n_iter={n_iter}"))
        return out
    return samples


def _spectral_samples(rng, dtype):
    return [Sample((_draw(rng, dtype, shape, 0.5, _sv_ok),), {"weight": 0.7}, label)
            for shape, label in _SHAPES]


def _kernel_slice_samples(rng, dtype):
    return [Sample(((0.5 * rng.standard_normal((2, 3, 3, 3))).astype(dtype),), {"weight": 0.7}, "3x3"),
            Sample(((0.5 * rng.standard_normal((3, 2, 2, 4))).astype(dtype),), {}, "2x4 default weight")]


def _som_samples(rng, dtype):
    # The registry's fourth-order differences need a moderate slope: the error grows like (γ h / ‖Z_j‖)⁴,
    # so γ = 10 (tested against PyTorch in tests/test_regularizers.py) would need rtol ~1e-6 here.
    return [Sample((rng.standard_normal((10, 4)).astype(dtype),), {"gamma": 1.0}, "(b, k)"),
            Sample(((0.5 * rng.standard_normal((10, 3))).astype(dtype),),
                   {"lam1": 0.5, "lam2": 2.0, "gamma": 2.0}, "(b, k) lam1 lam2"),
            Sample((rng.standard_normal((3, 3, 2, 2)).astype(dtype),), {"gamma": 1.0}, "(b, k, h, w)")]


def _ocnn_samples(rng, dtype):
    def K(shape):
        return (0.5 * rng.standard_normal(shape)).astype(dtype)
    return [Sample((K((3, 2, 3, 3)),), {"weight": 0.7}, "3x3 stride 1"),
            Sample((K((2, 3, 3, 3)),), {"stride": 2}, "3x3 stride 2"),
            Sample((K((3, 2, 3, 3)),), {"stride": 2, "padding": 1, "squared": False}, "public code"),
            Sample((K((2, 2, 2, 3)),), {"stride": (1, 2)}, "2x3 stride (1, 2)")]


# ---------------------------------------------------------------------------------------------------------
# Stress samples (OpSpec.stress): near-orthogonal weights and extreme aspect ratios.

STRESS_LEVELS = (1e-1, 1e-2, 1e-3, 1e-4)     # ‖G − I‖_F/√k of the near-orthogonal weights


def near_orthogonal(rng, shape, level, dtype):
    """A weight whose matrix ``M`` (out × rest) is ``U diag(s) Vᵀ`` (Haar ``U``, ``V``) with
    ``s² = 1 + level·√k z/‖z‖``: the Gram matrix of the short side, ``G = U diag(s²) Uᵀ``, has
    ``‖G − I‖_F/√k = level`` exactly (before rounding to ``dtype``), with distinct eigenvalues spread over
    its whole range (no ties of ``|G − I|``'s maximum or of its spectrum)."""
    n, m = shape[0], int(np.prod(shape[1:]))
    k = min(n, m)
    U = np.linalg.qr(rng.standard_normal((n, k)))[0]
    V = np.linalg.qr(rng.standard_normal((m, k)))[0]
    z = np.linspace(-1.0, 1.0, k) + rng.uniform(-0.1, 0.1, k) / k
    s = np.sqrt(1 + level * np.sqrt(k) * z / np.linalg.norm(z))
    return ((U * s) @ V.T).reshape(shape).astype(dtype)


_STRESS_SHAPES = [((4, 6), "wide"), ((6, 4), "tall")]
_EXTREME = [((2, 64), "2x64", 1e-2), ((64, 2), "64x2", 1e-3)]


def _stress_weights(rng, dtype):
    """``(W, label)``: every level on a wide and a tall weight, then the extreme aspect ratios."""
    out = [(near_orthogonal(rng, shape, level, dtype), f"stress: near-orthogonal {level:g} {label}")
           for shape, label in _STRESS_SHAPES for level in STRESS_LEVELS]
    out += [(near_orthogonal(rng, shape, level, dtype), f"stress: aspect {label} near-orthogonal {level:g}")
            for shape, label, level in _EXTREME]
    return out


def _stress(rng, dtype):
    return [Sample((W,), {"weight": 0.7}, label) for W, label in _stress_weights(rng, dtype)]


def _srip_stress(method):
    def samples(rng, dtype):
        out = []
        for W, label in _stress_weights(rng, dtype):
            k = min(W.shape[0], int(np.prod(W.shape[1:])))
            v0 = rng.uniform(0.5, 1.0, size=k)
            out.append(Sample((W,), {"v0": v0, "n_iter": 2, "method": method, "weight": 0.7}, label))
        return out
    return samples


OPS = [
    OpSpec("soft_orthogonality", from_loss(soft_orthogonality), _so_samples, torch=torch_soft_orthogonality,
           kind="loss", rtol=1e-8, stress=_stress, doc="λ‖G − I‖²_F, Bansal et al. 2018 (SO)",
           complex_step=True),
    OpSpec("double_soft_orthogonality", from_loss(double_soft_orthogonality), _plain_samples,
           torch=torch_double_soft_orthogonality, kind="loss", rtol=1e-8, stress=_stress,
           doc="λ(‖MᵀM − I‖² + ‖MMᵀ − I‖²) (DSO)",
           complex_step=True),
    OpSpec("mutual_coherence", from_loss(mutual_coherence), _mc_samples, torch=torch_mutual_coherence,
           kind="loss", rtol=1e-8, stress=_stress, doc="λ max |G − I| (MC), subgradient at the arg-max"),
    OpSpec("srip", from_loss(srip), _srip_samples("power"), torch=torch_srip, kind="loss",
           rtol=1e-8,
           stress=_srip_stress("power"), doc="λ‖N v‖², unrolled power iteration of the VITA-Group code (SRIP)",
           complex_step=True),
    OpSpec("srip_exact", from_loss(srip), _srip_samples("exact"), torch=torch_srip, kind="loss",
           rtol=1e-8, stress=_srip_stress("exact"), doc="λ σ_max(G − I)² from eigh (SRIP, exact)"),
    OpSpec("off_diagonal", from_loss(off_diagonal), _plain_samples, torch=torch_off_diagonal,
           kind="loss", rtol=1e-8,
           stress=_stress, doc="λ‖MMᵀ ⊙ (1 − I)‖², BigGAN (exact gradient, 2x BigGAN's)",
           complex_step=True),
    OpSpec("l1_orthogonality", from_loss(l1_orthogonality), _l1_samples, torch=torch_l1_orthogonality,
           kind="loss", rtol=1e-8, stress=_stress, doc="λ Σ|G − I|, Brock et al. 2017"),
    OpSpec("kernel_slice_orthogonality", from_loss(kernel_slice_orthogonality), _kernel_slice_samples,
           torch=torch_kernel_slice_orthogonality, kind="loss", rtol=1e-8,
           doc="β Σ_{n,c} ‖W[n,c] W[n,c]ᵀ ⊙ (1 − I)‖², per kernel slice", complex_step=True),
    OpSpec("self_orthogonality", from_loss(self_orthogonality), _som_samples, torch=torch_self_orthogonality,
           kind="loss", rtol=1e-8, doc="SOM on a layer output (Zhang et al. 2020)", complex_step=True),
    OpSpec("conv_orthogonality", from_loss(conv_orthogonality), _ocnn_samples, torch=torch_conv_orthogonality,
           kind="loss", rtol=1e-8, doc="‖conv2d(K, K) − T‖², OCNN (Wang et al. 2020)", complex_step=True),
    OpSpec("spectral_penalty", from_loss(spectral_penalty), _spectral_samples, torch=torch_spectral_penalty,
           kind="loss", rtol=1e-8, stress=_stress, doc="(λ/2) σ_max(M)², Yoshida & Miyato 2017"),
]
LAYERS: list = []
