"""JAX twins of the registered ops: a second, independent reference next to the PyTorch twins.

``JAX_TWINS`` maps a registry name to a function that recomputes the op with ``jax.numpy`` / ``jax.lax``
on JAX arrays and the sample's keyword arguments, returning the outputs in the order of the op (and of
its PyTorch twin). Layers (``nn.X``) take ``x`` followed by their parameters, as their PyTorch twins do.
The twins are written from the math, with JAX's own kernels where PyTorch uses a library op
(``lax.conv_general_dilated`` for ``F.conv2d``, ``lax.reduce_window`` for the pools,
``jax.scipy.linalg.expm`` for ``torch.linalg.matrix_exp``, ``jnp.linalg.qr``/``svd``/``eigvalsh``, ...);
``jax.vjp`` differentiates them. :func:`compare_with_jax` runs an op and its twin on the same inputs
with the same random output cotangents, exactly as
:func:`~orthoref.oracle.conformance.compare_with_torch` does.

JAX is imported lazily (importing this module does not need it); the first use enables float64
(``jax_enable_x64``), which the comparison requires.

Where JAX has no differentiable kernel the twin spells the op out: ``householder_product``
(``lax.linalg.householder_product`` has no derivative rule) and dilated max pooling (the VJP of
``reduce_window`` max is not implemented with window dilation) use explicit products / window slices.
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from ..backend import host_rng, to_numpy
from .conformance import TorchComparison, rel_error
from .torch_twins import group_bounds

__all__ = ["JAX_TWINS", "compare_with_jax", "jax_available", "value_and_vjp"]

JAX_TWINS: dict[str, Callable] = {}

# Filled by ``_load`` on first use (lazy import).
jax = jnp = lax = None


def jax_available() -> bool:
    try:
        import jax  # noqa: F401
    except Exception:  # noqa: BLE001 -- ImportError, or a jaxlib that fails to load
        return False
    return True


def _load():
    global jax, jnp, lax
    if jax is None:
        import jax as _jax
        import jax.numpy as _jnp
        from jax import lax as _lax
        _jax.config.update("jax_enable_x64", True)
        jax, jnp, lax = _jax, _jnp, _lax
    return jax


def _twin(*names):
    """Register the decorated function as the JAX twin of each of ``names`` (importing JAX on call)."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            _load()
            return fn(*args, **kwargs)
        for name in names:
            if name in JAX_TWINS:
                raise ValueError(f"JAX twin {name!r} defined twice")
            JAX_TWINS[name] = wrapper
        return wrapper
    return deco


def _pair(v):
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else tuple(int(a) for a in v)


def _mT(X):
    return jnp.swapaxes(X, -1, -2)


def _eye_like(A, n=None):
    return jnp.eye(A.shape[-1] if n is None else n, dtype=A.dtype)


# ---------------------------------------------------------------------------------------------------------
# Activations

@_twin("relu", "nn.ReLU")
def relu(x):
    return jax.nn.relu(x)


@_twin("leaky_relu", "nn.LeakyReLU")
def leaky_relu(x, negative_slope=0.01):
    return jax.nn.leaky_relu(x, negative_slope)


@_twin("tanh", "nn.Tanh")
def tanh(x):
    return jnp.tanh(x)


@_twin("sigmoid", "nn.Sigmoid")
def sigmoid(x):
    return jax.nn.sigmoid(x)


@_twin("gelu", "gelu_tanh", "nn.GELU")
def gelu(x, approximate="none"):
    return jax.nn.gelu(x, approximate=approximate == "tanh")


# ---------------------------------------------------------------------------------------------------------
# Linear, losses

@_twin("linear", "linear_nobias", "nn.Linear")
def linear(x, w, b=None):
    y = x @ w.T
    return y if b is None else y + b


@_twin("cross_entropy", "cross_entropy_none")
def cross_entropy(logits, labels, reduction="mean"):
    logp = jax.nn.log_softmax(logits, axis=1)
    nll = -jnp.take_along_axis(logp, labels[:, None], axis=1)[:, 0]
    return nll.mean() if reduction == "mean" else nll.sum() if reduction == "sum" else nll


@_twin("mse")
def mse(pred, target, reduction="mean"):
    se = (pred - target) ** 2
    return se.mean() if reduction == "mean" else se.sum() if reduction == "sum" else se


# ---------------------------------------------------------------------------------------------------------
# Convolution, pooling, flatten

def _conv(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]
    s, d = _pair(stride), _pair(dilation)
    if padding == "valid":
        pad = [(0, 0), (0, 0)]
    elif padding == "same":               # PyTorch's split: the extra element on the right / bottom
        total = [di * (k - 1) for di, k in zip(d, w.shape[2:])]
        pad = [(t // 2, t - t // 2) for t in total]
    else:
        pad = [(p, p) for p in _pair(padding)]
    y = lax.conv_general_dilated(x, w, s, pad, rhs_dilation=d, dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                 feature_group_count=groups, precision=lax.Precision.HIGHEST)
    if b is not None:
        y = y + b[:, None, None]
    return y[0] if unbatched else y


@_twin("conv2d", "conv2d_naive", "nn.Conv2d")
def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    return _conv(x, w, b, stride, padding, dilation, groups)


def _window(x, kernel_size, stride, padding, dilation=1):
    k = _pair(kernel_size)
    s = k if stride is None else _pair(stride)
    lead = (1,) * (x.ndim - 2)
    pads = [(0, 0)] * (x.ndim - 2) + [(p, p) for p in _pair(padding)]
    return k, s, _pair(dilation), lead, pads


@_twin("max_pool2d", "nn.MaxPool2d")
def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1):
    k, s, d, lead, pads = _window(x, kernel_size, stride, padding, dilation)
    if d == (1, 1):
        return lax.reduce_window(x, -jnp.inf, lax.max, lead + k, lead + s, pads)
    # JAX has no VJP of the dilated reduce_window max: the max over the k_h * k_w strided window slices.
    xp = jnp.pad(x, pads, constant_values=-jnp.inf)
    H, W = xp.shape[-2:]
    Ho, Wo = (H - d[0] * (k[0] - 1) - 1) // s[0] + 1, (W - d[1] * (k[1] - 1) - 1) // s[1] + 1
    taps = [xp[..., a * d[0]: a * d[0] + (Ho - 1) * s[0] + 1: s[0], c * d[1]: c * d[1] + (Wo - 1) * s[1] + 1: s[1]]
            for a in range(k[0]) for c in range(k[1])]
    return jnp.stack(taps).max(axis=0)


@_twin("avg_pool2d", "nn.AvgPool2d")
def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad=True, divisor_override=None):
    k, s, _, lead, pads = _window(x, kernel_size, stride, padding)
    total = lax.reduce_window(x, 0.0, lax.add, lead + k, lead + s, pads)
    if divisor_override is not None:
        return total / divisor_override
    if count_include_pad:
        return total / (k[0] * k[1])
    count = lax.reduce_window(jnp.ones(x.shape[-2:], x.dtype), 0.0, lax.add, k, s, pads[-2:])
    return total / count


@_twin("global_avg_pool2d", "nn.GlobalAvgPool2d")
def global_avg_pool2d(x):
    return x.mean(axis=(-2, -1))


@_twin("flatten", "nn.Flatten")
def flatten(x, start_dim=1, end_dim=-1):
    a, b = start_dim % x.ndim, end_dim % x.ndim
    return x.reshape(x.shape[:a] + (-1,) + x.shape[b + 1:])


# ---------------------------------------------------------------------------------------------------------
# Batch normalization

@_twin("batch_norm", "batch_norm_eval", "nn.BatchNorm1d", "nn.BatchNorm2d")
def batch_norm(x, weight=None, bias=None, *, training=True, running_mean=None, running_var=None, momentum=0.1,
               eps=1e-5, track_running_stats=True, num_features=None, dtype=None):
    C = x.shape[1]
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, C) + (1,) * (x.ndim - 2)
    if training or not track_running_stats:         # without running stats: batch statistics always
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    else:
        mean = jnp.zeros(C, x.dtype) if running_mean is None else jnp.asarray(running_mean, x.dtype)
        var = jnp.ones(C, x.dtype) if running_var is None else jnp.asarray(running_var, x.dtype)
    y = (x - mean.reshape(shape)) / jnp.sqrt(var.reshape(shape) + eps)
    if weight is not None:
        y = y * weight.reshape(shape) + bias.reshape(shape)
    return y


# ---------------------------------------------------------------------------------------------------------
# Recurrent

@_twin("rnn", "rnn_relu")
def rnn(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    act = jnp.tanh if nonlinearity == "tanh" else jax.nn.relu
    bias = 0.0 if b_ih is None else b_ih + b_hh

    def step(h, xt):
        h = act(xt @ w_ih.T + h @ w_hh.T + bias)
        return h, h
    h, out = lax.scan(step, h0, x)
    return out, h


@_twin("nn.RNN")
def rnn_layer(x, w_ih, w_hh, b_ih, b_hh, nonlinearity="tanh"):
    h0 = jnp.zeros((x.shape[1], w_ih.shape[0]), x.dtype)
    return rnn(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity)[0]


# ---------------------------------------------------------------------------------------------------------
# Orthogonalization maps

def _qr_positive(A):
    Q, R = jnp.linalg.qr(A, mode="reduced")
    d = jnp.diagonal(R, axis1=-2, axis2=-1)
    return Q * jnp.where(d < 0, -1.0, 1.0).astype(A.dtype)[..., None, :], R, d


@_twin("gram_schmidt", "qr_orthogonalize")
def qr_orthogonalize(A, **_):
    wide = A.shape[-2] < A.shape[-1]
    Q = _qr_positive(_mT(A) if wide else A)[0]
    return _mT(Q) if wide else Q


@_twin("polar", "polar_p")
def polar(A, side="right", return_p=False):
    U, S, Vh = jnp.linalg.svd(A, full_matrices=False)
    if not return_p:
        return U @ Vh
    P = _mT(Vh) @ (S[..., :, None] * Vh) if side == "right" else (U * S[..., None, :]) @ _mT(U)
    return U @ Vh, P


@_twin("procrustes")
def procrustes(A, B):
    U, S, Vh = jnp.linalg.svd(_mT(A) @ B, full_matrices=False)
    return U @ Vh, S.sum(-1)


@_twin("householder_product")
def householder_product(V, tau):
    """H_1 ⋯ H_p I[:, :k], H_i = I − τ_i v_i v_iᵀ, v_i = e_i + the part of column i below the diagonal
    (LAPACK orgqr / torch.linalg.householder_product), spelled out: JAX's kernel has no derivative."""
    m, k = V.shape[-2:]
    rows = jnp.arange(m)
    Q = jnp.broadcast_to(jnp.eye(m, k, dtype=V.dtype), V.shape[:-2] + (m, k))
    for i in reversed(range(tau.shape[-1])):
        v = jnp.where(rows == i, 1.0, jnp.where(rows > i, V[..., :, i], 0.0))
        Q = Q - tau[..., i, None, None] * v[..., :, None] * (v[..., None, :] @ Q)
    return Q


def _ns_loop(A, rows, kappa, eps):
    tall = A.shape[-2] > A.shape[-1]
    X = _mT(A) if tall else A
    if kappa is not None:
        X = X / (jnp.linalg.norm(X, axis=(-2, -1), keepdims=True) * kappa + eps)
    for a, b, c in rows:
        G = X @ _mT(X)
        X = a * X + (b * G + c * G @ G) @ X
    return _mT(X) if tall else X


def _ns_rows(coefficients, steps):
    """The rows of each step, written out here (only the published tables are shared): a named set's rows
    (its κ from the paper's code: 1.01 for Polar Express, else 1), or a user table; ``steps=None`` runs the
    table's length (5 for a one-row set); past the end the last row repeats."""
    from ..ortho.iterative import NS_COEFFICIENTS
    if isinstance(coefficients, str):
        rows, kappa = NS_COEFFICIENTS[coefficients], (1.01 if coefficients == "polar_express" else 1.0)
    else:
        rows, kappa = [tuple(r) for r in np.atleast_2d(np.asarray(coefficients, dtype=np.float64))], 1.0
    steps = (5 if len(rows) == 1 else len(rows)) if steps is None else steps
    return [tuple(map(float, rows[min(t, len(rows) - 1)])) for t in range(steps)], kappa


# ---------------------------------------------------------------------------------------------------------
# Singular-value clipping (ortho.singular)

def _tall(W):
    M = W.reshape(W.shape[0], -1)
    return (_mT(M), True) if M.shape[0] < M.shape[1] else (M, False)


@_twin("clip_singular_values")
def clip_singular_values(W, lo=None, hi=None):
    U, S, Vh = jnp.linalg.svd(W.reshape(W.shape[0], -1), full_matrices=False)
    return ((U * jnp.clip(S, lo, hi)[None, :]) @ Vh).reshape(W.shape)


@_twin("mclip", "mclip_svd")
def mclip(W, method="newton_schulz", steps=None, coefficients="polar_express"):
    if method == "svd":
        return clip_singular_values(W, hi=1.0)
    M, wide = _tall(W)
    rows, kappa = _ns_rows(coefficients, steps)
    Q = _ns_loop(M, rows, kappa, 0.0)
    S = _ns_loop(_mT(M) @ M - _eye_like(M), rows, kappa, 0.0)
    Y = 0.5 * (M + Q - (M - Q) @ S)
    return (_mT(Y) if wide else Y).reshape(W.shape)


@_twin("newton_schulz")
def newton_schulz(A, steps=5, coefficients="jordan", eps=1e-7):
    rows, kappa = _ns_rows(coefficients, steps)
    return _ns_loop(A, rows, kappa, eps)


@_twin("bjorck")
def bjorck(A, steps=15, beta=0.5):
    return _ns_loop(A, [(1 + beta, -beta, 0.0)] * steps, 1.0, 0.0)


@_twin("parseval_retraction")
def parseval_retraction(W, beta=1e-3):
    return (1 + beta) * W - beta * W @ _mT(W) @ W


@_twin("spectral_normalize")
def spectral_normalize(W, u=None, n_iter=1, eps=1e-12, rng=None):
    """W / uᵀMv after ``n_iter`` power steps from ``u``; ``u`` and ``v`` detached (PyTorch's
    spectral_norm)."""
    M = W.reshape(W.shape[0], -1)
    Ms = lax.stop_gradient(M)

    def normalize(a):
        return a / jnp.maximum(jnp.linalg.norm(a), eps)
    uu = normalize(jnp.asarray(u, W.dtype))
    for _ in range(n_iter):
        vv = normalize(Ms.T @ uu)
        uu = normalize(Ms @ vv)
    return W / (uu @ (M @ vv))


# ---------------------------------------------------------------------------------------------------------
# Stiefel manifold

def _cayley_solve(A, B):
    return jnp.linalg.solve(_eye_like(A) - 0.5 * A, B)


@_twin("cayley")
def cayley(A, check_skew=False):
    return _cayley_solve(A, jnp.broadcast_to(_eye_like(A) + 0.5 * A, A.shape))


@_twin("expm_skew")
def expm_skew(A, check_skew=False):
    return jax.scipy.linalg.expm(A)


@_twin("project_tangent_wg")
def project_tangent_wg(W, G, metric="euclidean", check=True):
    if metric == "euclidean":
        S = _mT(W) @ G
        return G - W @ (0.5 * (S + _mT(S)))
    return G - W @ (_mT(G) @ W)


@_twin("project_tangent")
def project_tangent(G, W=None, metric="euclidean", check=True):
    return project_tangent_wg(jnp.asarray(W, G.dtype), G, metric)


@_twin("retract_qr", "retract_polar", "retract_cayley")
def retract(W, Z, method="qr", check=True):
    X = W + Z
    if method == "qr":
        return _qr_positive(X)[0]
    if method == "polar":
        # Newton–Schulz to convergence, as the torch twin: the SVD's derivative breaks down on the
        # repeated singular values of W + Z for square W (and so does eigh's).
        I = _eye_like(X)
        for _ in range(40):
            X = 0.5 * X @ (3 * I - _mT(X) @ X)
        return X
    PZ = Z - 0.5 * W @ (_mT(W) @ Z)
    A = PZ @ _mT(W) - W @ _mT(PZ)
    return _cayley_solve(A, (_eye_like(A) + 0.5 * A) @ W)


@_twin("retract_exp")
def retract_exp(W, Z, method="exp", check=True):
    """The canonical geodesic of Edelman et al.: W e^A for square W, else the (2p x 2p) block exponential
    with the QR of the normal part."""
    n, p = W.shape[-2:]
    S = _mT(W) @ Z
    A = 0.5 * (S - _mT(S))
    if n == p:
        return W @ jax.scipy.linalg.expm(A)
    Q, R, d = _qr_positive(Z - W @ S)
    R = R * jnp.where(d < 0, -1.0, 1.0).astype(W.dtype)[..., :, None]
    M = jnp.concatenate([jnp.concatenate([A, -_mT(R)], axis=-1),
                         jnp.concatenate([R, jnp.zeros_like(R)], axis=-1)], axis=-2)
    E = jax.scipy.linalg.expm(M)
    return W @ E[..., :p, :p] + Q @ E[..., p:, :p]


@_twin("cayley_iterative")
def cayley_iterative(W, Z, alpha=0.1, iterations=2, check=True):
    PZ = Z - 0.5 * W @ (_mT(W) @ Z)

    def apply_A(X):
        return PZ @ (_mT(W) @ X) - W @ (_mT(PZ) @ X)
    Y = W + alpha * apply_A(W)
    for _ in range(iterations):
        Y = W + (alpha / 2) * apply_A(W + Y)
    return Y


# ---------------------------------------------------------------------------------------------------------
# Orthogonal layers (PyTorch's parametrizations.orthogonal, plus the polar and Newton–Schulz maps)

def _orthogonal_matrix(raw, map="matrix_exp", base=None, steps=5, coefficients="jordan", eps=1e-7):
    wide = raw.shape[-2] < raw.shape[-1]
    X = _mT(raw) if wide else raw
    n, k = X.shape[-2:]
    if map in ("matrix_exp", "cayley"):
        Y = jnp.tril(X)
        if n != k:
            Y = jnp.concatenate([Y, jnp.zeros(X.shape[:-2] + (n, n - k), X.dtype)], axis=-1)
        A = Y - _mT(Y)
        Q = jax.scipy.linalg.expm(A) if map == "matrix_exp" else cayley(A)
        Q = Q[..., :k]
    elif map == "householder":
        V = jnp.tril(X, k=-1)
        tau = 2.0 / (1.0 + (V * V).sum(axis=-2))
        sign = jnp.diagonal(X, axis1=-2, axis2=-1).astype(jnp.int32)     # PyTorch's ``.int()`` (truncation)
        Q = householder_product(V, tau) * sign[..., None, :]
    elif map == "polar":
        Q = polar(X)
    else:
        Q = newton_schulz(X, steps, coefficients, eps)
    if base is not None:
        Q = jnp.asarray(base, X.dtype) @ Q
    return _mT(Q) if wide else Q


@_twin("nn.OrthogonalLinear")
def orthogonal_linear(x, raw, bias=None, *, map="matrix_exp", base=None, steps=5, coefficients="jordan",
                      eps=1e-7):
    return linear(x, _orthogonal_matrix(raw, map, base, steps, coefficients, eps), bias)


@_twin("nn.OrthogonalConv2d", "nn.OrthogonalConv2d_slices")
def orthogonal_conv2d(x, raw, bias=None, *, map="matrix_exp", base=None, steps=5, coefficients="jordan",
                      eps=1e-7, in_channels=1, kernel_size=1, stride=1, padding=0, view="matrix"):
    kh, kw = _pair(kernel_size)
    W = _orthogonal_matrix(raw, map, base, steps, coefficients, eps).reshape(raw.shape[0], in_channels, kh, kw)
    return _conv(x, W, bias, stride, padding)


# ---------------------------------------------------------------------------------------------------------
# Orthogonality regularizers

def _matrix(W):
    return W.reshape(W.shape[0], -1)


def _gram_minus_eye(W, gram="auto"):
    M = _matrix(W)
    rows = M.shape[0] <= M.shape[1] if gram == "auto" else gram == "rows"
    G = M @ M.T if rows else M.T @ M
    return G - _eye_like(G)


@_twin("soft_orthogonality")
def soft_orthogonality(W, weight=1.0, gram="auto"):
    return weight * (_gram_minus_eye(W, gram) ** 2).sum()


@_twin("double_soft_orthogonality")
def double_soft_orthogonality(W, weight=1.0):
    return weight * ((_gram_minus_eye(W, "cols") ** 2).sum() + (_gram_minus_eye(W, "rows") ** 2).sum())


@_twin("mutual_coherence")
def mutual_coherence(W, weight=1.0, gram="auto"):
    return weight * jnp.abs(_gram_minus_eye(W, gram)).max()


@_twin("l1_orthogonality")
def l1_orthogonality(W, weight=1.0, gram="auto"):
    return weight * jnp.abs(_gram_minus_eye(W, gram)).sum()


@_twin("off_diagonal")
def off_diagonal(W, weight=1.0):
    M = _matrix(W)
    G = M @ M.T
    return weight * ((G * (1 - _eye_like(G))) ** 2).sum()


@_twin("kernel_slice_orthogonality")
def kernel_slice_orthogonality(W, weight=1e-4):
    G = W @ _mT(W)
    return weight * ((G * (1 - _eye_like(G))) ** 2).sum()


@_twin("srip", "srip_exact")
def srip(W, weight=1.0, n_iter=1, rng=None, v0=None, method="power", gram="auto"):
    N = _gram_minus_eye(W, gram)
    if method == "exact":
        return weight * jnp.abs(jnp.linalg.eigvalsh(N)).max() ** 2
    v = jnp.asarray(v0, W.dtype).reshape(-1, 1)
    for _ in range(n_iter):                                     # the VITA-Group loop
        v1 = N @ v
        v = v1 / jnp.linalg.norm(v1)
    return weight * jnp.linalg.norm(N @ v) ** 2


@_twin("spectral_penalty")
def spectral_penalty(W, weight=1.0):
    return 0.5 * weight * jnp.linalg.matrix_norm(_matrix(W), ord=2) ** 2


@_twin("self_orthogonality")
def self_orthogonality(Y, lam1=100.0, lam2=1.0, gamma=10.0, eps=1e-8):
    if Y.ndim == 4:
        Y = jnp.transpose(Y, (0, 2, 3, 1)).reshape(-1, Y.shape[1])
    Z = jnp.tanh(gamma * Y)
    Zh = Z / jnp.sqrt((Z ** 2).sum(axis=0) + eps)
    T = Zh.T @ Zh
    off = T * (1 - _eye_like(T))
    return lam1 * off.sum() ** 2 + lam2 * (off ** 2).sum()


@_twin("conv_orthogonality")
def conv_orthogonality(K, weight=1.0, stride=1, padding=None, squared=True):
    s = _pair(stride)
    p = tuple(((k - 1) // si) * si for k, si in zip(K.shape[2:], s)) if padding is None else _pair(padding)
    Y = _conv(K, K, stride=s, padding=p)
    o = K.shape[0]
    T = jnp.zeros_like(Y).at[:, :, Y.shape[2] // 2, Y.shape[3] // 2].set(jnp.eye(o, dtype=K.dtype))
    n = jnp.sqrt(((Y - T) ** 2).sum())
    return weight * (n ** 2 if squared else n)


# ---------------------------------------------------------------------------------------------------------
# Decorrelation and whitening (the eigendecomposition route: the registered samples have distinct eigenvalues;
# jnp.linalg.eigh's derivative, like PyTorch's, divides by λ_i − λ_j)

def _centred_cov(X, eps):
    Xc = X - X.mean(axis=0, keepdims=True)
    S = jnp.cov(X, rowvar=False, bias=True).reshape(X.shape[1], X.shape[1])
    return Xc, S + eps * _eye_like(S)


@_twin("zca_whitening")
def zca_whitening(X, eps=1e-5):
    Xc, S = _centred_cov(X, eps)
    lam, U = jnp.linalg.eigh(S)
    return Xc @ (U / jnp.sqrt(lam)) @ U.T


@_twin("pca_whitening")
def pca_whitening(X, eps=1e-5):
    Xc, S = _centred_cov(X, eps)
    lam, U = jnp.linalg.eigh(S)
    lam, U = lam[::-1], U[:, ::-1]
    top = jnp.take_along_axis(U, jnp.argmax(jnp.abs(U), axis=0)[None, :], axis=0)[0]
    U = U * lax.stop_gradient(jnp.where(top < 0, -1.0, 1.0).astype(U.dtype))
    return Xc @ (U / jnp.sqrt(lam))


@_twin("cholesky_whitening")
def cholesky_whitening(X, eps=1e-5):
    from jax.scipy.linalg import solve_triangular
    Xc, S = _centred_cov(X, eps)
    L = jnp.linalg.cholesky(S)
    return solve_triangular(L, Xc.T, lower=True).T


@_twin("decov")
def decov(H, weight=1.0):
    if H.ndim == 4:
        H = jnp.transpose(H, (0, 2, 3, 1)).reshape(-1, H.shape[1])
    C = jnp.cov(H, rowvar=False, bias=True).reshape(H.shape[1], H.shape[1])
    return 0.5 * weight * ((C * (1 - _eye_like(C))) ** 2).sum()


# ---------------------------------------------------------------------------------------------------------
# Group-wise whitening and its layers: group ZCA by eigh (the registered samples have distinct eigenvalues);
# IterNorm by the paper's recursion P ← 1.5 P − 0.5 P³ Σ_N exactly as the official code writes it (the check
# that the library's coupled form computes the paper's map; it loses accuracy beyond T ≈ 8, so the registered
# samples keep T <= 7).
def _j_cov(Xc, eps):
    m, d = Xc.shape
    return Xc.T @ Xc / m + eps * jnp.eye(d, dtype=Xc.dtype)


@_twin("group_zca_whitening")
def group_zca_whitening(X, groups=None, eps=1e-5):
    Xc = X - X.mean(axis=0, keepdims=True)
    out = []
    for a, b in group_bounds(X.shape[1], groups):
        lam, U = jnp.linalg.eigh(_j_cov(Xc[:, a:b], eps))
        out.append(Xc[:, a:b] @ (U / jnp.sqrt(lam)) @ U.T)
    return jnp.concatenate(out, axis=1)


@_twin("iternorm_whitening")
def iternorm_whitening(X, groups=None, iterations=5, eps=1e-5):
    """The paper's recursion as the official code writes it: ``P ← 1.5 P − 0.5 P³ Σ_N``."""
    Xc = X - X.mean(axis=0, keepdims=True)
    out = []
    for a, b in group_bounds(X.shape[1], groups):
        S = _j_cov(Xc[:, a:b], eps)
        t = jnp.trace(S)
        A = S / t
        P = jnp.eye(b - a, dtype=X.dtype)
        for _ in range(iterations):
            P = 1.5 * P - 0.5 * (jnp.linalg.matrix_power(P, 3) @ A)
        out.append(Xc[:, a:b] @ (P / jnp.sqrt(t)))
    return jnp.concatenate(out, axis=1)


def _j_layer(whiten, x, weight, bias, training, running_mean, running_wm):
    x2 = x if x.ndim == 2 else jnp.transpose(x, (0, 2, 3, 1)).reshape(-1, x.shape[1])
    if training:
        y2 = whiten(x2)
    else:
        y2 = (x2 - jnp.asarray(running_mean, dtype=x.dtype)) @ jnp.asarray(running_wm, dtype=x.dtype)
    if x.ndim == 2:
        y = y2
    else:
        n, c, h, w = x.shape
        y = jnp.transpose(y2.reshape(n, h, w, c), (0, 3, 1, 2))
    if weight is not None:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        y = y * weight.reshape(shape) + bias.reshape(shape)
    return y


@_twin("nn.DecorrelatedBatchNorm")
def decorrelated_batch_norm(x, weight=None, bias=None, *, groups=16, training=True, running_mean=None,
                            running_wm=None, eps=1e-5, momentum=0.1, num_features=None, dtype=None):
    return _j_layer(lambda x2: group_zca_whitening(x2, groups, eps), x, weight, bias, training,
                    running_mean, running_wm)


@_twin("nn.IterNorm")
def iternorm_layer(x, weight=None, bias=None, *, groups=64, iterations=5, training=True, running_mean=None,
                   running_wm=None, eps=1e-5, momentum=0.1, num_features=None, dtype=None):
    return _j_layer(lambda x2: iternorm_whitening(x2, groups, iterations, eps), x, weight, bias,
                    training, running_mean, running_wm)


# ---------------------------------------------------------------------------------------------------------
# The tied linear autoencoder (orthoref.autoencoder).

@_twin("tied_linear", "autoencoder.TiedLinearAutoencoder")
def tied_linear(x, w):
    return linear(linear(x, w), w.T)


# ---------------------------------------------------------------------------------------------------------

def _as_tuple(y):
    return tuple(y) if isinstance(y, (tuple, list)) else (y,)


# The twins' programs are tiny and each is run once: XLA's compile time is the whole cost, and its backend
# optimizations (no fast-math either way, so IEEE float64 semantics are kept) cost more than they save.
_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _compile(fn, args):
    global _COMPILER_OPTIONS
    lowered = jax.jit(fn).lower(*args)
    if _COMPILER_OPTIONS:
        try:
            return lowered.compile(_COMPILER_OPTIONS)
        except (TypeError, RuntimeError):  # a JAX / XLA without these options: its defaults from now on
            _COMPILER_OPTIONS = None
    return lowered.compile()


def value_and_vjp(name, inputs, kwargs, cotangents):
    """The JAX twin of ``name`` at host ``inputs``: ``(outputs, grads)`` as NumPy arrays, ``grads`` with one
    entry per input (``None`` for integer inputs, held constant), by ``jax.vjp`` with the cotangents cast to
    the outputs' dtypes; one compiled program per call."""
    _load()
    twin = JAX_TWINS[name]
    host = [np.array(to_numpy(x), copy=True) for x in inputs]
    diff = [i for i, x in enumerate(host) if x.dtype.kind == "f"]

    def f(*floats):
        args = [jnp.asarray(x) for x in host]
        for i, v in zip(diff, floats):
            args[i] = v
        return _as_tuple(twin(*args, **kwargs))

    def fwd_bwd(floats, cts):
        ys, pullback = jax.vjp(f, *floats)
        if len(ys) != len(cts):
            return ys, None
        return ys, pullback(tuple(c.astype(y.dtype) for c, y in zip(cts, ys)))

    args = (tuple(jnp.asarray(host[i]) for i in diff), tuple(jnp.asarray(c) for c in cotangents))
    j_outputs, j_grads = _compile(fwd_bwd, args)(*args)
    if j_grads is None:
        raise ValueError(f"{name}: the op has {len(cotangents)} outputs, its JAX twin {len(j_outputs)}")
    it = iter(j_grads)
    grads = [np.asarray(next(it)) if i in diff else None for i in range(len(host))]
    return [np.asarray(y) for y in j_outputs], grads


def compare_with_jax(spec, sample, rng=0) -> TorchComparison:
    """Run ``spec`` and its JAX twin on ``sample`` (float64) with the same random output cotangents as
    :func:`~orthoref.oracle.conformance.compare_with_torch`; return the largest relative error of the
    outputs and of the gradients of the floating-point inputs (integer inputs are constants)."""
    gen = host_rng(rng)
    outputs, vjp = spec.apply(*sample.inputs, **sample.kwargs)
    cotangents = tuple(gen.standard_normal(np.shape(y)).astype(y.dtype) for y in outputs)
    grads = vjp(cotangents)
    j_outputs, j_grads = value_and_vjp(spec.name, sample.inputs, sample.kwargs, cotangents)
    out_err = max(rel_error(o, t) for o, t in zip(outputs, j_outputs))
    grad_err = 0.0
    for x, g, jg in zip(sample.inputs, grads, j_grads):
        if x.dtype.kind == "f":
            grad_err = max(grad_err, rel_error(np.zeros(jg.shape) if g is None else g, jg))
    return TorchComparison(out_err, grad_err)
