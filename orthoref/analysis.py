"""Spectra, ranks, filter angles, Jacobian spectra, low-rank factors and PCA of weights and models.

Conventions (see DESIGN.md):

- A weight ``W`` (Linear ``(out, in)``, Conv2d ``(out, in/groups, kh, kw)``, PyTorch layout) is seen as the
  matrix ``M = W.reshape(out, -1)``: rows are the filters. TensorFlow kernels (filters on the last axis)
  must be transposed first (``W_tf.transpose(3, 2, 0, 1)``, Dense ``W_tf.T``); the order of the fan-in
  axis changes none of the quantities below except the *values* of the factor ``B`` of :func:`low_rank`.
- Spectral quantities are computed in float64 whatever the input dtype (float32 singular values of a
  float32 weight lose ``σ_min`` to rounding when ``σ_max/σ_min ≳ 10⁴``); they come back as float64 arrays on
  the input's backend, or Python floats.
- Every function runs on NumPy and CuPy arrays (``xp = get_array_module(W)``).
- Bad input (1-D weight, integer dtype, NaN/Inf, a rank out of range) raises ``ValueError`` / ``TypeError``
  naming the function, the argument, what was expected and what came.

:func:`analyze_checkpoint` (``orthoref analyze CHECKPOINT --out DIR``) writes the per-layer table and
figures of a checkpoint written by :func:`orthoref.train.fit`.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import warnings
from typing import NamedTuple

import numpy as np

from ._checks import check_array, check_float
from .backend import asarray, get_array_module, to_numpy, using
from .regularizers import _gram, _minus_identity, _use_rows
from .train import orthogonality_error as _orthogonality_error_auto

__all__ = [
    "PCAResult",
    "analyze_checkpoint",
    "condition_number",
    "effective_rank",
    "filter_angles",
    "format_layer_table",
    "jacobian",
    "jacobian_singular_values",
    "layer_table",
    "load_model",
    "low_rank",
    "orthogonality_error",
    "pca",
    "singular_values",
    "stable_rank",
    "weights",
]

_WEIGHT = "(a weight (out, in, ...))"


def _matrix64(who, W, name="W"):
    """Validate ``W`` and return ``(xp, M)`` with ``M = W.reshape(out, -1)`` in float64."""
    xp = check_array(who, W, name, min_ndim=2, what=_WEIGHT)
    return xp, W.reshape(W.shape[0], -1).astype(xp.float64, copy=False)


def _sv(W, who):
    xp, M = _matrix64(who, W)
    return xp, xp.linalg.svd(M, compute_uv=False)


# ---------------------------------------------------------------------------------------------------------
# Spectra and ranks of one weight.

def singular_values(W):
    """Singular values of the weight seen as a matrix, in descending order.

    .. math::  M = W.\\mathrm{reshape}(\\mathrm{out}, -1) = U \\operatorname{diag}(\\sigma) V^\\top, \\qquad
               \\sigma_1 \\ge \\sigma_2 \\ge \\dots \\ge \\sigma_k \\ge 0, \\quad k = \\min(\\mathrm{out}, \\mathrm{fan\\_in})

    Parameters
    ----------
    W : (out, in) or (out, in/groups, kh, kw) float array (any rank >= 2)

    Returns
    -------
    sigma : (k,) float64 array on the backend of ``W``

    Notes
    -----
    For a Conv2d weight these are the singular values of the filter matrix (what orthogonality
    regularizers act on), not those of the convolution operator on images (Sedghi et al. 2019).
    """
    return _sv(W, "singular_values")[1]


def orthogonality_error(W, gram="auto") -> float:
    """``‖G − I‖_F / √k``: how far the weight is from having orthonormal rows (or columns).

    .. math::  e(W) = \\frac{\\lVert G - I_k \\rVert_F}{\\sqrt{k}}, \\qquad
               G = \\begin{cases} M M^\\top & \\text{rows} \\\\ M^\\top M & \\text{cols} \\end{cases}

    with ``M = W.reshape(out, -1)``. ``gram="auto"`` takes the smaller Gram matrix (``M Mᵀ`` when
    ``out <= fan_in``, as the regularizers do) and is the very quantity :func:`orthoref.train.fit` logs per
    epoch (``orthoref.train.orthogonality_error``, which this function calls on ``M`` in float64; the
    training log computes it in ``W``'s dtype, so a float32 weight's logged value may differ in the 7th
    digit). ``"rows"`` / ``"cols"`` force one Gram matrix; the larger one has ``k_big − k_small`` zero
    eigenvalues, so then ``e >= √(1 − k_small/k_big)``. ``e = 0`` exactly for a weight with orthonormal rows
    (``out <= fan_in``) or columns; an orthogonal weight scaled by ``c`` has ``e = |c² − 1|``.

    Parameters
    ----------
    W : float array of rank >= 2
    gram : {"auto", "rows", "cols"}

    Returns
    -------
    float

    References
    ----------
    Bansal, Chen & Wang, "Can We Gain More from Orthogonality Regularizations in Training Deep CNNs?",
    NeurIPS 2018 (the soft-orthogonality penalty ``‖G − I‖²_F``).
    """
    xp, M = _matrix64("orthogonality_error", W)
    if not isinstance(gram, str) or gram not in ("auto", "rows", "cols"):
        raise ValueError(f"orthogonality_error: gram must be one of ('auto', 'rows', 'cols'), got {gram!r}")
    if gram == "auto" or _use_rows(M, gram) == _use_rows(M, "auto"):
        return _orthogonality_error_auto(M)         # the smaller Gram: train.py's function, in float64
    G = _minus_identity(_gram(M, gram == "rows"))
    return float(xp.sqrt((G * G).sum())) / math.sqrt(G.shape[0])


def _effective_rank(s):
    xp = get_array_module(s)
    total = s.sum()
    if float(total) == 0.0:
        return 0.0
    p = s / total
    plogp = xp.where(p > 0, p * xp.log(xp.where(p > 0, p, 1.0)), 0.0)
    return float(xp.exp(-plogp.sum()))


def _stable_rank(s):
    smax = float(s[0])
    return 0.0 if smax == 0.0 else float((s * s).sum()) / (smax * smax)


def _condition(s):
    smin = float(s[-1])
    return math.inf if smin == 0.0 else float(s[0]) / smin


def effective_rank(W) -> float:
    """Effective rank of Roy & Vetterli: the exponential of the entropy of the normalized singular values.

    .. math::  p_i = \\frac{\\sigma_i}{\\sum_j \\sigma_j}, \\qquad
               \\operatorname{erank}(W) = \\exp\\Big(-\\sum_i p_i \\log p_i\\Big), \\quad 0 \\log 0 = 0

    ``1 <= erank <= rank(M)``; it equals ``k`` exactly when all singular values are equal (an orthogonal
    weight) and is ``0.0`` by convention for a zero weight.

    Parameters
    ----------
    W : float array of rank >= 2 (seen as ``M = W.reshape(out, -1)``)

    Returns
    -------
    float

    References
    ----------
    O. Roy and M. Vetterli, "The effective rank: a measure of effective dimensionality", EUSIPCO 2007.
    """
    return _effective_rank(_sv(W, "effective_rank")[1])


def stable_rank(W) -> float:
    """Stable (numerical) rank ``‖M‖²_F / ‖M‖²_2``.

    .. math::  \\operatorname{srank}(W) = \\frac{\\sum_i \\sigma_i^2}{\\sigma_1^2} \\in [1, \\operatorname{rank} M]

    ``0.0`` by convention for a zero weight.

    References
    ----------
    M. Rudelson and R. Vershynin, "Sampling from large matrices: an approach through geometric functional
    analysis", J. ACM 54(4), 2007.
    """
    return _stable_rank(_sv(W, "stable_rank")[1])


def condition_number(W) -> float:
    """``σ_max / σ_min`` of ``M = W.reshape(out, -1)`` over its ``k = min(out, fan_in)`` singular values.

    Returns ``math.inf`` when ``σ_min = 0`` (a rank-deficient or zero weight). An orthogonal weight has
    condition number 1.
    """
    return _condition(_sv(W, "condition_number")[1])


def filter_angles(W):
    """Pairwise angles, in degrees, between the filters (rows of ``M = W.reshape(out, -1)``).

    .. math::  \\theta_{ij} = \\frac{180}{\\pi} \\arccos \\frac{\\langle m_i, m_j \\rangle}
               {\\lVert m_i \\rVert \\, \\lVert m_j \\rVert}, \\qquad i < j

    The histogram of these angles is what the Self-Orthogonality Module paper plots per layer: orthogonal
    filters pile up at 90°.

    Parameters
    ----------
    W : float array of rank >= 2

    Returns
    -------
    theta : (out (out − 1) / 2,) float64 array in [0, 180], the upper triangle in row-major order
        (``(0,1), (0,2), …, (1,2), …``). A pair involving a zero filter gives NaN. Near 0° and 180° the
        arccos loses accuracy (an error of ~``√eps`` rad, 1e-6° in float64).

    References
    ----------
    Zhang, Jiao, Chen, Zhang & Xu, "Self-Orthogonality Module: A Network Architecture Plug-in for Learning
    Orthogonal Filters", WACV 2020.
    """
    xp, M = _matrix64("filter_angles", W)
    norms = xp.sqrt((M * M).sum(axis=1))
    U = M / xp.where(norms > 0, norms, 1.0)[:, None]
    i, j = xp.triu_indices(M.shape[0], k=1)
    cos = xp.clip((U @ U.T)[i, j], -1.0, 1.0)
    theta = xp.degrees(xp.arccos(cos))
    return xp.where((norms[i] == 0) | (norms[j] == 0), xp.nan, theta)


# ---------------------------------------------------------------------------------------------------------
# Model Jacobians.

def _check_model(who, model):
    from .nn import Module
    if not isinstance(model, Module):
        raise TypeError(f"{who}: model must be an orthoref.nn.Module (e.g. a Sequential), got "
                        f"{type(model).__name__}")


def jacobian(model, x):
    """Per-example input–output Jacobians of ``model`` at the batch ``x``, by its own backward pass.

    .. math::  J^{(n)}_{ji} = \\frac{\\partial f(x_n)_j}{\\partial (x_n)_i}

    The model runs once forward in eval mode; then one backward pass per output unit ``j`` with the
    cotangent ``e_j`` on every example gives row ``j`` of all ``N`` Jacobians (reverse mode; cheap when the
    output is small, e.g. 10 logits). Examples do not interact in eval mode (dropout is the identity,
    batch norm uses running statistics), so the batch is ``N`` independent Jacobians. Parameter
    gradients (``.grad``) and the train/eval mode are restored afterwards.

    Parameters
    ----------
    model : orthoref.nn.Module
        Anything with ``forward`` / ``backward(grad_out, input_grad=True)``, typically a Sequential.
    x : (N, ...) float array of the model's dtype and backend
        A batch; pass ``x[None]`` for one example.

    Returns
    -------
    J : (N, out, in) array of the model's dtype, ``out`` and ``in`` the flattened sizes of one example's
        output and input.
    """
    who = "jacobian"
    _check_model(who, model)
    check_float(who, "x", x)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"{who}: x must be a non-empty batch (N, ...) with N >= 1, got shape {tuple(x.shape)}")
    xp = get_array_module(x)
    was_training = model.training
    params = model.parameters()
    saved = [p.grad for p in params]
    model.eval()
    try:
        for p in params:
            p.grad = None          # backward accumulates in place: never into the caller's arrays
        y = model.forward(x)
        n, n_in = x.shape[0], int(np.prod(x.shape[1:]))
        n_out = int(np.prod(y.shape[1:]))
        J = xp.empty((n, n_out, n_in), dtype=y.dtype)
        for j in range(n_out):
            g = xp.zeros((n, n_out), dtype=y.dtype)
            g[:, j] = 1
            dx = model.backward(g.reshape(y.shape), input_grad=True)
            J[:, j, :] = dx.reshape(n, n_in)
    finally:
        for p, g in zip(params, saved):
            p.grad = g
        model.train(was_training)
    return J


def jacobian_singular_values(model, x):
    """Singular values of each example's input–output Jacobian (dynamical isometry).

    A network is dynamically isometric at ``x`` when all singular values of ``J = ∂f/∂x`` concentrate
    near 1 (Pennington et al.): signals and gradients then keep their norm through the depth.

    Parameters
    ----------
    model : orthoref.nn.Module (run in eval mode; see :func:`jacobian`)
    x : (N, ...) float array, a batch

    Returns
    -------
    sigma : (N, min(out, in)) float64 array, each row in descending order (the SVD of the Jacobian is taken
        in float64; the Jacobian itself in the model's dtype).

    References
    ----------
    J. Pennington, S. Schoenholz and S. Ganguli, "Resurrecting the sigmoid in deep learning through
    dynamical isometry: theory and practice", NeurIPS 2017.
    """
    J = jacobian(model, x)
    xp = get_array_module(J)
    return xp.linalg.svd(J.astype(xp.float64, copy=False), compute_uv=False)


# ---------------------------------------------------------------------------------------------------------
# Low-rank factors and PCA.

def _int_arg(who, name, v, lo, hi):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{who}: {name} must be an int, got {type(v).__name__} {v!r}")
    if not lo <= int(v) <= hi:
        raise ValueError(f"{who}: {name} must be in [{lo}, {hi}], got {v}")
    return int(v)


def _energy_rank(s, energy):
    """Smallest ``r`` with ``Σ_{i<=r} σ_i² / Σ σ_i² >= energy`` (1 for a zero matrix)."""
    s2 = to_numpy(s).astype(np.float64) ** 2
    cum = np.cumsum(s2)
    if cum[-1] == 0:
        return 1
    return min(int(np.searchsorted(cum / cum[-1], energy, side="left")) + 1, len(s2))


def low_rank(W, rank=None, energy=None):
    """Best rank-``r`` factorization ``M ≈ A B`` of ``M = W.reshape(out, -1)`` (truncated SVD).

    .. math::  M = U \\Sigma V^\\top, \\qquad A = U_r \\Sigma_r^{1/2}, \\qquad B = \\Sigma_r^{1/2} V_r^\\top

    By Eckart–Young–Mirsky, ``A B`` is the best rank-``r`` approximation in every unitarily invariant norm:
    ``‖M − AB‖²_F = Σ_{i>r} σ_i²`` and ``‖M − AB‖_2 = σ_{r+1}``. The square root of ``Σ`` is split evenly
    (both factors carry the singular values ``√σ_i``), the usual choice when the factors are trained further.

    Parameters
    ----------
    W : float array of rank >= 2, ``(out, ...)``
    rank : int in [1, k], k = min(out, fan_in)
        Keep this many singular values.
    energy : float in (0, 1]
        Keep the smallest ``r`` with ``Σ_{i<=r} σ_i² / Σ_i σ_i² >= energy`` (the fraction of ``‖M‖²_F``
        kept). ``energy=1`` gives the numerical rank of ``M`` (zero singular values dropped). Exactly one of
        ``rank`` and ``energy`` must be given.

    Returns
    -------
    A : (out, r) array of ``W``'s dtype and backend
    B : (r, fan_in) array, ``fan_in = in · kh · kw`` for a conv weight
    r : int, the rank chosen

    Notes
    -----
    The SVD is computed in float64; the factors are then cast to ``W``'s dtype.
    """
    who = "low_rank"
    xp, M = _matrix64(who, W)
    if (rank is None) == (energy is None):
        raise ValueError(f"{who}: give exactly one of rank and energy, got rank={rank!r}, energy={energy!r}")
    k = min(M.shape)
    if rank is not None:
        r = _int_arg(who, "rank", rank, 1, k)
    else:
        if isinstance(energy, (bool, np.bool_)) or not isinstance(energy, numbers.Real):
            raise TypeError(f"{who}: energy must be a real number, got {type(energy).__name__} {energy!r}")
        if not 0 < float(energy) <= 1:
            raise ValueError(f"{who}: energy must be in (0, 1], got {energy!r}")
    U, s, Vt = xp.linalg.svd(M, full_matrices=False)
    if energy is not None:
        r = _energy_rank(s, float(energy))
    root = xp.sqrt(s[:r])
    A = (U[:, :r] * root).astype(W.dtype)
    B = (root[:, None] * Vt[:r]).astype(W.dtype)
    return A, B, r


class PCAResult(NamedTuple):
    """What :func:`pca` returns (a tuple: ``components, variance, projected, mean = pca(X, k)``)."""
    components: object          # (k, d): principal axes, rows orthonormal
    explained_variance: object  # (k,): variance along each axis, S² / (n − 1), descending
    projected: object           # (n, k): (X − mean) @ components.T, divided by √variance if whitened
    mean: object                # (d,): the column means


def pca(X, k, whiten=False):
    """Principal component analysis by the SVD of the centred data.

    .. math::  X - \\mathbf{1}\\mu^\\top = U S V^\\top, \\qquad \\text{components} = V_{:k}^\\top, \\qquad
               \\lambda_i = \\frac{S_i^2}{n - 1}, \\qquad Z = (X - \\mathbf{1}\\mu^\\top) V_{:k} = U_{:k} S_{:k}

    and with ``whiten`` ``Z_{:, i} / √λ_i`` (unit sample variance per component).

    This is scikit-learn's ``PCA(n_components=k, whiten=whiten, svd_solver="full")``: ``components_``,
    ``explained_variance_`` (with ``n − 1``), ``fit_transform(X)`` and ``mean_`` agree, signs included:
    each component's entry of largest magnitude is made positive, as ``svd_flip(u_based_decision=False)``
    does since scikit-learn 1.5 (earlier versions fixed the signs from ``U`` instead, which can flip a
    component and its scores). No scikit-learn dependency.

    Parameters
    ----------
    X : (n, d) float array, n >= 2
    k : int in [1, min(n, d)]
    whiten : bool

    Returns
    -------
    PCAResult(components (k, d), explained_variance (k,), projected (n, k), mean (d,)), float64 arrays on the
    backend of ``X``.

    Raises
    ------
    ValueError
        For ``whiten=True`` when one of the ``k`` components has zero variance (lower ``k``).
    """
    who = "pca"
    xp = check_array(who, X, "X", ndim=(2,), what="(n, d)")
    n, d = X.shape
    if n < 2:
        raise ValueError(f"{who}: X needs at least 2 samples (rows) for a variance, got shape {tuple(X.shape)}")
    k = _int_arg(who, "k", k, 1, min(n, d))
    Xf = X.astype(xp.float64, copy=False)
    mean = Xf.mean(axis=0)
    U, S, Vt = xp.linalg.svd(Xf - mean, full_matrices=False)
    U, S, Vt = U[:, :k], S[:k], Vt[:k]
    big = xp.argmax(xp.abs(Vt), axis=1)
    signs = xp.where(Vt[xp.arange(k), big] < 0, -1.0, 1.0)
    Vt = Vt * signs[:, None]
    U = U * signs
    variance = S * S / (n - 1)
    Z = U * S
    if whiten:
        if float(variance.min()) == 0.0:
            raise ValueError(f"{who}: whiten=True but component {int(xp.argmin(variance))} of k={k} has zero "
                             f"variance; lower k")
        Z = Z / xp.sqrt(variance)
    return PCAResult(Vt, variance, Z, mean)


# ---------------------------------------------------------------------------------------------------------
# Tables of a model's weights.

def weights(model):
    """``[(name, array)]``: the weights of ``model`` seen by the analysis: its parameters of rank >= 2."""
    _check_model("weights", model)
    return [(n, p.data) for n, p in model.named_parameters() if p.data.ndim >= 2]


def _finite_or_none(v):
    return v if math.isfinite(v) else None


def layer_table(model):
    """One row per weight of ``model`` (its parameters of rank >= 2, in order): spectrum summary.

    Returns
    -------
    list of dict with keys ``name``, ``shape`` (list), ``sigma_max``, ``sigma_min``, ``condition``
    (``math.inf`` when ``σ_min = 0``), ``stable_rank``, ``effective_rank``, ``orthogonality``
    (:func:`orthogonality_error`, ``gram="auto"``). One SVD per weight.
    """
    _check_model("layer_table", model)
    rows = []
    for name, w in weights(model):
        s = singular_values(w)
        rows.append({
            "name": name, "shape": [int(d) for d in w.shape], "sigma_max": float(s[0]), "sigma_min": float(s[-1]),
            "condition": _condition(s), "stable_rank": _stable_rank(s), "effective_rank": _effective_rank(s),
            "orthogonality": orthogonality_error(w),
        })
    return rows


_COLUMNS = (("name", "layer"), ("shape", "shape"), ("sigma_max", "σ_max"), ("sigma_min", "σ_min"),
            ("condition", "condition"), ("stable_rank", "stable rank"), ("effective_rank", "effective rank"),
            ("orthogonality", "‖G−I‖_F/√k"))


def _cell(key, v):
    if key == "name":
        return str(v)
    if key == "shape":
        return "×".join(str(d) for d in v)
    if v is None or (isinstance(v, float) and math.isinf(v)):
        return "inf"
    return f"{v:.4g}"


def format_layer_table(rows):
    """The rows of :func:`layer_table` as a Markdown table (one line per weight)."""
    lines = ["| " + " | ".join(h for _, h in _COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(k, row.get(k)) for k, _ in _COLUMNS) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# Checkpoints.

def load_model(path):
    """Rebuild the model of a :func:`orthoref.train.fit` checkpoint with its trained parameters.

    The architecture comes from the checkpoint's configuration; input and class counts are read off the
    stored weight shapes (so no data set is needed). Returns ``(model, config, meta)``: the model on the
    configuration's backend and dtype, in eval mode; ``config`` a validated ``TrainConfig``; ``meta`` the
    checkpoint's record (epoch, history, ...). Raises ``orthoref.train.CheckpointError`` (a ValueError)
    for a file that is not such a checkpoint.
    """
    from .train import CheckpointError, TrainConfig, build_model, load_checkpoint

    meta, state, _, _ = load_checkpoint(path)
    config = TrainConfig.from_json(dict(meta["config"], progress=False))
    mats = [(k, v) for k, v in state.items() if k.endswith("weight") and v.ndim >= 2]
    if not mats:
        raise CheckpointError(f"{path}: the checkpoint holds no weight matrices")
    n_classes = int(mats[-1][1].shape[0])
    if config.model == "mlp":
        sample = (int(mats[0][1].shape[1]),)
    else:
        channels, last_conv = int(mats[0][1].shape[1]), int(mats[-2][1].shape[0])
        side = math.isqrt(int(mats[-1][1].shape[1]) // last_conv)
        if side * side * last_conv != int(mats[-1][1].shape[1]):
            raise CheckpointError(f"{path}: cannot infer the image size from the classifier weight "
                                  f"{tuple(mats[-1][1].shape)}")
        sample = (channels, 4 * side, 4 * side)
    model = build_model(config, sample, n_classes)
    try:
        model.load_state_dict(state)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    return model.eval(), config, meta


def _json_safe(obj):
    if isinstance(obj, float):
        return _finite_or_none(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _write_text(path, text):
    from .train import _atomic_write
    _atomic_write(path, lambda f: f.write(text.encode()))


def analyze_checkpoint(path, out_dir, figures="auto", jacobian_examples=64):
    """Analyse a training checkpoint: per-layer spectra table, Jacobian spectrum and figures.

    Writes into ``out_dir`` (created if needed; every file atomically):

    - ``layers.md``: a header (checkpoint, model, epoch, test accuracy), :func:`format_layer_table`, and the
      input–output Jacobian singular values at the first ``jacobian_examples`` test examples;
    - ``layers.json``: the rows of :func:`layer_table` (an infinite condition number is written as
      ``null``);
    - with matplotlib, via :mod:`orthoref.plots`: ``spectra.png`` (singular values of each weight),
      ``filter_angles.png`` (histograms of :func:`filter_angles` per weight) and ``jacobian.png``.

    Parameters
    ----------
    path : str, a ``checkpoint.npz`` of :func:`orthoref.train.fit`
    out_dir : str
    figures : "auto", True or False
        ``"auto"`` draws the figures when matplotlib is installed and warns otherwise; ``True`` raises
        ImportError without it; ``False`` draws none.
    jacobian_examples : int >= 0
        Test examples for the Jacobian spectrum (the configuration's data set; 0 skips it).

    Returns
    -------
    rows : list of dict, as :func:`layer_table`
    """
    who = "analyze_checkpoint"
    if figures not in ("auto", True, False):
        raise ValueError(f"{who}: figures must be 'auto', True or False, got {figures!r}")
    jacobian_examples = _int_arg(who, "jacobian_examples", jacobian_examples, 0, 1 << 30)
    model, config, meta = load_model(path)
    rows = layer_table(model)
    os.makedirs(out_dir, exist_ok=True)

    jac = None
    if jacobian_examples:
        from .train import load_data
        X_te = load_data(config)[2][:jacobian_examples]
        with using(config.backend):
            jac = to_numpy(jacobian_singular_values(model, asarray(X_te)))

    history = meta.get("history") or []
    acc = f", test accuracy {history[-1]['test_acc']:.4f}" if history else ""
    hidden = f" {','.join(map(str, config.hidden))}" if config.model == "mlp" else ""
    lines = [f"# Layer analysis of {path}", "",
             f"{config.model}{hidden}, init {config.init}, {config.optimizer}, epoch {meta.get('epoch')}{acc}.",
             "", "Weights seen as M = W.reshape(out, -1); ‖G−I‖_F/√k with G the smaller Gram matrix.", "",
             format_layer_table(rows), ""]
    if jac is not None:
        q = np.quantile(jac, [0.0, 0.5, 1.0])
        lines += [(f"Input–output Jacobian at {jac.shape[0]} test examples ({jac.shape[1]} singular values "
                   f"each): mean {jac.mean():.4g}, std {jac.std():.4g}, min {q[0]:.4g}, median {q[1]:.4g}, "
                   f"max {q[2]:.4g} (dynamical isometry: all near 1)."), ""]
    _write_text(os.path.join(out_dir, "layers.md"), "\n".join(lines))
    _write_text(os.path.join(out_dir, "layers.json"), json.dumps(_json_safe(rows), indent=1) + "\n")

    if figures is False:
        return rows
    try:
        from . import plots
        plots.require_matplotlib()
    except ImportError:
        if figures is True:
            raise
        warnings.warn(f"{who}: matplotlib is not installed, so no figures were drawn (pip install "
                      f"'orthoref[plot]')", stacklevel=2)
        return rows
    ws = weights(model)
    plots.plot_spectra({n: to_numpy(singular_values(w)) for n, w in ws},
                       os.path.join(out_dir, "spectra.png"))
    plots.plot_filter_angles({n: to_numpy(filter_angles(w)) for n, w in ws},
                             os.path.join(out_dir, "filter_angles.png"))
    if jac is not None:
        plots.plot_jacobian_spectrum(jac, os.path.join(out_dir, "jacobian.png"))
    return rows
