"""PyTorch twins of the registered ops and layers: the same computation written with ``torch``.

``torch_<name>(*tensors, **kwargs) -> outputs`` recomputes the op on PyTorch tensors (float64 on the CPU)
with the sample's keyword arguments and returns a tuple of outputs in the order of the op;
:func:`~orthoref.oracle.conformance.compare_with_torch` differentiates it with ``torch.autograd``. Layers
(``nn.X``) take ``x`` followed by their parameters. The ops and layers come first, then the orthogonality
families (``ortho.decomp``, ``ortho.iterative``, ``ortho.stiefel``, ``nn.orthogonal``, ``regularizers``), each
the formula written plainly in PyTorch so that autograd differentiates it. ``TORCH_TWINS`` maps a registry
name to its twin; an op without one (dropout: random) is absent. PyTorch is imported inside each twin, so
importing this module does not need it.
"""
from __future__ import annotations

import numpy as np

from ..ops._window import pair
from ..ortho._linalg import ns_schedule, use_rows

__all__ = ["TORCH_TWINS"]


# ---------------------------------------------------------------------------------------------------------
# Activations
def torch_relu(x):
    import torch
    return (torch.relu(x),)


def torch_leaky_relu(x, negative_slope=0.01):
    import torch.nn.functional as F
    return (F.leaky_relu(x, negative_slope),)


def torch_tanh(x):
    import torch
    return (torch.tanh(x),)


def torch_sigmoid(x):
    import torch
    return (torch.sigmoid(x),)


def torch_gelu(x, approximate="none"):
    import torch.nn.functional as F
    return (F.gelu(x, approximate=approximate),)


# ---------------------------------------------------------------------------------------------------------
# Convolution, linear, losses
def torch_conv2d(x, w, b=None, **kwargs):
    import warnings

    import torch.nn.functional as F
    with warnings.catch_warnings():         # padding="same" with an even kernel: a note about a copy
        warnings.simplefilter("ignore", UserWarning)
        return (F.conv2d(x, w, b, **kwargs),)


def torch_linear(x, w, b=None):
    import torch.nn.functional as F
    return (F.linear(x, w, b),)


def torch_cross_entropy(logits, labels, reduction="mean"):
    import torch.nn.functional as F
    return (F.cross_entropy(logits, labels, reduction=reduction),)


def torch_mse(pred, target, reduction="mean"):
    import torch.nn.functional as F
    return (F.mse_loss(pred, target, reduction=reduction),)


# ---------------------------------------------------------------------------------------------------------
# Batch normalization
def torch_batch_norm(x, weight=None, bias=None, *, training=True, running_mean=None, running_var=None,
                     momentum=0.1, eps=1e-5, track_running_stats=True, num_features=None, dtype=None):
    """PyTorch reference for the op and the BatchNorm layers (``num_features`` and ``dtype`` are the
    layers' builder arguments, ignored here)."""
    import torch
    import torch.nn.functional as F
    C = x.shape[1]
    if not track_running_stats:
        rm = rv = None
        training = True               # nn.BatchNorm without running stats uses batch statistics always
    else:
        rm = (torch.zeros(C, dtype=x.dtype) if running_mean is None
              else torch.tensor(running_mean, dtype=x.dtype))
        rv = (torch.ones(C, dtype=x.dtype) if running_var is None
              else torch.tensor(running_var, dtype=x.dtype))
    return (F.batch_norm(x, rm, rv, weight, bias, training, momentum, eps),)


# ---------------------------------------------------------------------------------------------------------
# Pooling and flatten
def torch_max_pool2d(x, **kwargs):
    import torch.nn.functional as F
    return (F.max_pool2d(x, **kwargs),)


def torch_avg_pool2d(x, **kwargs):
    import torch.nn.functional as F
    return (F.avg_pool2d(x, **kwargs),)


def torch_global_avg_pool2d(x):
    return (x.mean((-2, -1)),)


def torch_flatten(x, start_dim=1, end_dim=-1):
    import torch
    return (torch.flatten(x, start_dim, end_dim),)


# ---------------------------------------------------------------------------------------------------------
# Elman RNN
def torch_rnn(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """The same recurrence written with torch ops (a Python loop)."""
    import torch
    act = torch.tanh if nonlinearity == "tanh" else torch.relu
    h, outs = h0, []
    for t in range(x.shape[0]):
        a = x[t] @ w_ih.T + h @ w_hh.T
        if b_ih is not None:
            a = a + b_ih + b_hh
        h = act(a)
        outs.append(h)
    return torch.stack(outs), h


def torch_nn_rnn(x, w_ih, w_hh, b_ih, b_hh, nonlinearity="tanh"):
    """``torch.nn.RNN``'s own kernel (``torch._VF.rnn_tanh``/``rnn_relu``, what the module calls)."""
    import torch
    fn = torch._VF.rnn_tanh if nonlinearity == "tanh" else torch._VF.rnn_relu
    h0 = torch.zeros(1, x.shape[1], w_ih.shape[0], dtype=x.dtype)
    # (input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
    out, _ = fn(x, h0, [w_ih, w_hh, b_ih, b_hh], True, 1, 0.0, False, False, False)
    return (out,)


# ---------------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------
# Orthogonalization by decomposition (ortho.decomp).

def torch_qr_orthogonalize(A, **_):
    import torch
    wide = A.shape[-2] < A.shape[-1]
    if wide:
        A = A.transpose(-1, -2)
    Q, R = torch.linalg.qr(A, mode="reduced")
    d = torch.diagonal(R, dim1=-2, dim2=-1)
    Q = Q * torch.where(d < 0, -1.0, 1.0).to(A.dtype).unsqueeze(-2)
    return (Q.transpose(-1, -2) if wide else Q,)


def torch_polar(A, side="right", return_p=False):
    """``U Vᵀ`` (and ``P = V Σ Vᵀ`` or ``U Σ Uᵀ``) from ``torch.linalg.svd``, as ``scipy.linalg.polar``."""
    import torch
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    if not return_p:
        return (U @ Vh,)
    P = Vh.mT @ (S.unsqueeze(-1) * Vh) if side == "right" else (U * S.unsqueeze(-2)) @ U.mT
    return U @ Vh, P


def torch_procrustes(A, B):
    """``scipy.linalg.orthogonal_procrustes``: ``R = U Vᵀ`` and ``Σσ`` of ``AᵀB = U Σ Vᵀ``."""
    import torch
    U, S, Vh = torch.linalg.svd(A.mT @ B, full_matrices=False)
    return U @ Vh, S.sum(-1)


def torch_householder_product(V, tau):
    import torch
    return (torch.linalg.householder_product(V, tau),)


# ---------------------------------------------------------------------------------------------------------
# Iterative orthogonalization (ortho.iterative).

def _ns_loop(A, rows, kappa, eps):
    tall = A.shape[-2] > A.shape[-1]
    X = A.mT if tall else A
    if kappa is not None:
        X = X / (X.norm(dim=(-2, -1), keepdim=True) * kappa + eps)
    for a, b, c in rows:
        G = X @ X.mT
        B = b * G + c * G @ G
        X = a * X + B @ X
    return X.mT if tall else X


def torch_newton_schulz(A, steps=5, coefficients="jordan", eps=1e-7):
    rows, kappa = ns_schedule("newton_schulz", coefficients, steps)
    return (_ns_loop(A, rows, kappa, eps),)


def torch_bjorck(A, steps=15, beta=0.5):
    return (_ns_loop(A, [(1 + beta, -beta, 0.0)] * steps, 1.0, 0.0),)


def torch_parseval_retraction(W, beta=1e-3):
    return ((1 + beta) * W - beta * W @ W.mT @ W,)


def torch_spectral_normalize(W, u=None, n_iter=1, eps=1e-12, rng=None):
    import torch
    import torch.nn.functional as F
    M = W.reshape(W.shape[0], -1)
    with torch.no_grad():
        uu = F.normalize(torch.as_tensor(np.asarray(u, dtype=np.float64), dtype=W.dtype), dim=0, eps=eps)
        for _ in range(n_iter):
            vv = F.normalize(torch.mv(M.T, uu), dim=0, eps=eps)
            uu = F.normalize(torch.mv(M, vv), dim=0, eps=eps)
    sigma = torch.vdot(uu.clone(), torch.mv(M, vv.clone()))
    return (W / sigma,)


# ---------------------------------------------------------------------------------------------------------
# Singular-value clipping (ortho.singular).

def _t_tall(W):
    M = W.reshape(W.shape[0], -1)
    return (M.mT, True) if M.shape[0] < M.shape[1] else (M, False)


def torch_clip_singular_values(W, lo=None, hi=None):
    """``U diag(S.clamp(lo, hi)) Vᵀ`` of ``W.reshape(out, -1)`` from ``torch.linalg.svd``."""
    import torch
    U, S, Vh = torch.linalg.svd(W.reshape(W.shape[0], -1), full_matrices=False)
    return (((U * S.clamp(lo, hi).unsqueeze(-2)) @ Vh).reshape(W.shape),)


def torch_mclip(W, method="newton_schulz", steps=None, coefficients="polar_express"):
    """``½[M + Q − (M − Q) S]``, ``Q``, ``S`` the Newton–Schulz ``msign`` of ``M`` and ``MᵀM − I`` (``M`` the
    tall orientation of ``W.reshape(out, -1)``); ``method="svd"``: the clamp at 1 of the SVD."""
    import torch
    if method == "svd":
        return torch_clip_singular_values(W, hi=1.0)
    M, wide = _t_tall(W)
    rows, kappa = ns_schedule("mclip", coefficients, steps)
    Q = _ns_loop(M, rows, kappa, 0.0)
    S = _ns_loop(M.mT @ M - torch.eye(M.shape[1], dtype=M.dtype), rows, kappa, 0.0)
    Y = 0.5 * (M + Q - (M - Q) @ S)
    return ((Y.mT if wide else Y).reshape(W.shape),)


# ---------------------------------------------------------------------------------------------------------
# Stiefel-manifold maps (ortho.stiefel).

def _t_eye(A):
    import torch
    return torch.eye(A.shape[-1], dtype=A.dtype)


def torch_cayley(A, check_skew=False):
    import torch
    I = _t_eye(A)
    return (torch.linalg.solve(I - 0.5 * A, (I + 0.5 * A).expand_as(A)),)


def torch_expm_skew(A, check_skew=False):
    import torch
    return (torch.linalg.matrix_exp(A),)


def torch_project_tangent(G, W=None, metric="euclidean", check=True):
    import torch
    return torch_project_tangent_wg(torch.as_tensor(W, dtype=G.dtype), G, metric)


def torch_project_tangent_wg(W, G, metric="euclidean", check=True):
    if metric == "euclidean":
        S = W.mT @ G
        return (G - W @ (0.5 * (S + S.mT)),)
    return (G - W @ (G.mT @ W),)


def torch_retract(W, Z, method="qr", check=True):
    import torch
    X = W + Z
    if method == "qr":
        Q, R = torch.linalg.qr(X)
        s = torch.where(torch.diagonal(R, dim1=-2, dim2=-1) < 0, -1.0, 1.0).to(X.dtype)
        return (Q * s[..., None, :],)
    if method == "polar":
        # Newton–Schulz to convergence (singular values of W + Z lie in [1, 1.12] for the samples): autograd
        # of torch.linalg.svd breaks down on the repeated singular values of W + Z for square W (tangent
        # Z = WΩ gives the singular values sqrt(1 + ω²) in pairs).
        I = torch.eye(X.shape[-1], dtype=X.dtype)
        for _ in range(40):
            X = 0.5 * X @ (3 * I - X.mT @ X)
        return (X,)
    PZ = Z - 0.5 * W @ (W.mT @ Z)
    A = PZ @ W.mT - W @ PZ.mT
    I = torch.eye(W.shape[-2], dtype=W.dtype)
    return (torch.linalg.solve(I - 0.5 * A, (I + 0.5 * A) @ W),)


def torch_retract_exp(W, Z, method="exp", check=True):
    import torch
    n, p = W.shape[-2:]
    S = W.mT @ Z
    A = 0.5 * (S - S.mT)
    if n == p:
        return (W @ torch.linalg.matrix_exp(A),)
    Q, R = torch.linalg.qr(Z - W @ S)
    s = torch.where(torch.diagonal(R, dim1=-2, dim2=-1) < 0, -1.0, 1.0).to(W.dtype)
    Q, R = Q * s[..., None, :], R * s[..., :, None]
    M = torch.cat([torch.cat([A, -R.mT], dim=-1), torch.cat([R, torch.zeros_like(R)], dim=-1)], dim=-2)
    E = torch.linalg.matrix_exp(M)
    return (W @ E[..., :p, :p] + Q @ E[..., p:, :p],)


def torch_cayley_iterative(W, Z, alpha=0.1, iterations=2, check=True):
    PZ = Z - 0.5 * W @ (W.mT @ Z)

    def apply_A(X):
        return PZ @ (W.mT @ X) - W @ (PZ.mT @ X)
    Y = W + alpha * apply_A(W)
    for _ in range(iterations):
        Y = W + (alpha / 2) * apply_A(W + Y)
    return (Y,)


# ---------------------------------------------------------------------------------------------------------
# Orthogonal layers (nn.orthogonal): the formula of PyTorch's parametrizations.orthogonal.

def _orthogonal_matrix(raw, map="matrix_exp", base=None, steps=5, coefficients="jordan", eps=1e-7):
    """PyTorch's ``_Orthogonal.forward`` (plus the polar and Newton–Schulz maps) on ``raw``."""
    import torch
    wide = raw.shape[-2] < raw.shape[-1]
    X = raw.mT if wide else raw
    n, k = X.shape[-2:]
    if map in ("matrix_exp", "cayley"):
        Y = X.tril()
        if n != k:
            Y = torch.cat([Y, Y.new_zeros(X.shape[:-2] + (n, n - k))], dim=-1)
        A = Y - Y.mT
        if map == "matrix_exp":
            Q = torch.linalg.matrix_exp(A)
        else:
            Id = torch.eye(n, dtype=A.dtype)
            Q = torch.linalg.solve(Id - 0.5 * A, Id + 0.5 * A)
        Q = Q[..., :k]
    elif map == "householder":
        V = X.tril(diagonal=-1)
        tau = 2.0 / (1.0 + (V * V).sum(dim=-2))
        Q = torch.linalg.householder_product(V, tau) * X.diagonal(dim1=-2, dim2=-1).int().unsqueeze(-2)
    elif map == "polar":
        U, _, Vh = torch.linalg.svd(X, full_matrices=False)
        Q = U @ Vh
    else:
        rows, kappa = ns_schedule("newton_schulz", coefficients, steps)
        Q = _ns_loop(X, rows, kappa, eps)
    if base is not None:
        Q = torch.from_numpy(np.asarray(base)) @ Q
    return Q.mT if wide else Q


def torch_orthogonal_linear(x, raw, bias=None, *, map="matrix_exp", base=None, steps=5, coefficients="jordan",
                            eps=1e-7):
    import torch.nn.functional as F
    return (F.linear(x, _orthogonal_matrix(raw, map, base, steps, coefficients, eps), bias),)


def torch_orthogonal_conv2d(x, raw, bias=None, *, map="matrix_exp", base=None, steps=5, coefficients="jordan",
                            eps=1e-7, in_channels=1, kernel_size=1, stride=1, padding=0, view="matrix"):
    """``nn.OrthogonalConv2d``: ``raw`` is the ``(out, in·kh·kw)`` matrix (``view="matrix"``) or the
    ``(out, in, kh, kw)`` batch of slices (``view="slices"``, PyTorch's own view of a conv weight)."""
    import torch.nn.functional as F
    W = _orthogonal_matrix(raw, map, base, steps, coefficients, eps)
    kh, kw = pair(kernel_size, "kernel_size", "OrthogonalConv2d")
    W = W.reshape(raw.shape[0], in_channels, kh, kw)
    return (F.conv2d(x, W, bias, stride=stride, padding=padding),)


# ---------------------------------------------------------------------------------------------------------
# Orthogonality regularizers: the formulas written plainly; autograd differentiates them.

def _t_matrix(W):
    return W.reshape(W.shape[0], -1)


def _t_gram(W, gram):
    import torch
    M = _t_matrix(W)
    rows = use_rows(M, gram)
    G = M @ M.T if rows else M.T @ M
    return G - torch.eye(G.shape[0], dtype=W.dtype), M


def torch_soft_orthogonality(W, weight=1.0, gram="auto"):
    N, _ = _t_gram(W, gram)
    return (weight * (N ** 2).sum(),)


def torch_double_soft_orthogonality(W, weight=1.0):
    import torch
    M = _t_matrix(W)
    a = M.T @ M - torch.eye(M.shape[1], dtype=W.dtype)
    b = M @ M.T - torch.eye(M.shape[0], dtype=W.dtype)
    return (weight * ((a ** 2).sum() + (b ** 2).sum()),)


def torch_mutual_coherence(W, weight=1.0, gram="auto"):
    N, _ = _t_gram(W, gram)
    return (weight * N.abs().max(),)


def torch_l1_orthogonality(W, weight=1.0, gram="auto"):
    N, _ = _t_gram(W, gram)
    return (weight * N.abs().sum(),)


def torch_off_diagonal(W, weight=1.0):
    import torch
    M = _t_matrix(W)
    G = M @ M.T
    return (weight * ((G * (1 - torch.eye(G.shape[0], dtype=W.dtype))) ** 2).sum(),)


def torch_kernel_slice_orthogonality(W, weight=1e-4):
    import torch
    G = W @ W.transpose(-1, -2)
    mask = 1 - torch.eye(W.shape[2], dtype=W.dtype)
    return (weight * ((G * mask) ** 2).sum(),)


def torch_srip(W, weight=1.0, n_iter=1, rng=None, v0=None, method="power", gram="auto"):
    import torch
    N, _ = _t_gram(W, gram)
    if method == "exact":
        return (weight * torch.linalg.eigvalsh(N).abs().max() ** 2,)
    v = torch.as_tensor(np.asarray(v0, dtype=np.float64), dtype=W.dtype).reshape(-1, 1)
    for _ in range(n_iter):                                     # the VITA-Group loop
        v1 = torch.matmul(N, v)
        v = torch.div(v1, torch.norm(v1, 2))
    return (weight * torch.norm(torch.matmul(N, v), 2) ** 2,)


def torch_spectral_penalty(W, weight=1.0):
    import torch
    return (0.5 * weight * torch.linalg.matrix_norm(_t_matrix(W), ord=2) ** 2,)


def torch_self_orthogonality(Y, lam1=100.0, lam2=1.0, gamma=10.0, eps=1e-8):
    import torch
    if Y.ndim == 4:
        Y = Y.permute(0, 2, 3, 1).reshape(-1, Y.shape[1])
    Z = torch.tanh(gamma * Y)
    Zh = Z / torch.sqrt((Z ** 2).sum(dim=0) + eps)
    T = Zh.T @ Zh
    off = T * (1 - torch.eye(T.shape[0], dtype=Y.dtype))
    return (lam1 * off.sum() ** 2 + lam2 * (off ** 2).sum(),)


def torch_conv_orthogonality(K, weight=1.0, stride=1, padding=None, squared=True):
    import torch
    import torch.nn.functional as F
    s = pair(stride, "stride", "", 1)
    p = (tuple(((k - 1) // si) * si for k, si in zip(K.shape[2:], s)) if padding is None
         else pair(padding, "padding", "", 0))
    Y = F.conv2d(K, K, stride=s, padding=p)
    T = torch.zeros_like(Y)
    o = K.shape[0]
    T[:, :, Y.shape[2] // 2, Y.shape[3] // 2] = torch.eye(o, dtype=K.dtype)
    n = torch.norm(Y - T)
    return (weight * (n ** 2 if squared else n),)


# ---------------------------------------------------------------------------------------------------------
# Decorrelation and whitening (orthoref.decorrelation).

def _t_centred_cov(X, eps):
    """``X_c`` and ``Σ = X_cᵀX_c/m + εI`` (``torch.cov`` with ``correction=0``: the biased estimate)."""
    import torch
    Xc = X - X.mean(dim=0, keepdim=True)
    return Xc, torch.cov(X.T, correction=0).reshape(X.shape[1], X.shape[1]) + eps * _t_eye(X)


def _t_inv_sqrt_newton_schulz(S, max_iter=100):
    """``S^{-1/2}`` by the coupled Newton–Schulz iteration (Higham 2008, "Functions of Matrices", Ch. 6; a
    coupled form of the iteration of IterNorm, Huang et al. 2019) on ``A = S / tr S`` (eigenvalues in ``(0, 1]``):
    ``T = (3I − Z Y)/2``, ``Y ← Y T``, ``Z ← T Z`` from ``Y = A``, ``Z = I``, so ``Z → A^{-1/2}``; stopped when
    ``max|T − I| <= 4·d·eps`` (at most ``max_iter`` steps: about 25 reach float64 accuracy at κ = 1e6). Only
    products, no inverse and no eigendecomposition: autograd through it needs no eigenvalue gap, unlike
    ``torch.linalg.eigh``'s backward, whose ``1/(λ_i − λ_j)`` is NaN or noise at repeated eigenvalues."""
    import torch
    eye = _t_eye(S)
    c = S.diagonal().sum()
    Y, Z = S / c, eye
    tol = 4 * S.shape[-1] * torch.finfo(S.dtype).eps
    for _ in range(max_iter):
        T = 0.5 * (3 * eye - Z @ Y)
        Y, Z = Y @ T, T @ Z
        if float((T - eye).detach().abs().max()) <= tol:
            break
    return Z / torch.sqrt(c)


def torch_zca_whitening(X, eps=1e-5):
    """ZCA: ``X_c Σ^{-1/2}`` with ``Σ^{-1/2}`` from the coupled Newton–Schulz iteration, so that the twin
    holds at repeated eigenvalues too (the stress samples have them); :func:`torch_zca_whitening_eigh` is the
    eigendecomposition route."""
    Xc, S = _t_centred_cov(X, eps)
    return (Xc @ _t_inv_sqrt_newton_schulz(S),)


def torch_zca_whitening_eigh(X, eps=1e-5):
    """ZCA through ``torch.linalg.eigh`` (the direct implementation): right for distinct eigenvalues, NaN or
    noise in the gradient at repeated ones (``tests/test_decorrelation.py`` shows both)."""
    import torch
    Xc, S = _t_centred_cov(X, eps)
    lam, U = torch.linalg.eigh(S)
    return (Xc @ (U * lam.rsqrt()) @ U.T,)


def torch_pca_whitening(X, eps=1e-5):
    import torch
    Xc, S = _t_centred_cov(X, eps)
    lam, U = torch.linalg.eigh(S)
    lam, U = lam.flip(0), U.flip(1)
    top = U.detach().gather(0, U.detach().abs().argmax(dim=0, keepdim=True))
    U = U * torch.where(top < 0, -1.0, 1.0).to(U.dtype)
    return (Xc @ (U * lam.rsqrt()),)


def torch_cholesky_whitening(X, eps=1e-5):
    import torch
    Xc, S = _t_centred_cov(X, eps)
    L = torch.linalg.cholesky(S)
    return (torch.linalg.solve_triangular(L, Xc.T, upper=False).T,)


def torch_decov(H, weight=1.0):
    import torch
    if H.ndim == 4:
        H = H.permute(0, 2, 3, 1).reshape(-1, H.shape[1])
    C = torch.cov(H.T, correction=0).reshape(H.shape[1], H.shape[1])
    off = C - torch.diag(torch.diagonal(C))
    return (0.5 * weight * (off ** 2).sum(),)


# ---------------------------------------------------------------------------------------------------------
# Group-wise whitening (orthoref.decorrelation) and its layers (nn.DecorrelatedBatchNorm, nn.IterNorm): group
# ZCA by the coupled Newton–Schulz iteration of torch_zca_whitening (no eigenvalue gap needed); IterNorm by the
# coupled form of the iteration, differentiated by autograd (the check of the hand-written backward pass at
# any T and condition; the JAX twin runs the paper's own recursion).

def group_bounds(d, groups):
    """``[(start, stop)]`` of consecutive groups of ``groups`` features, the last one smaller (``None``:
    one group)."""
    size = d if groups is None else min(int(groups), d)
    return [(a, min(a + size, d)) for a in range(0, d, size)]


# ---------------------------------------------------------------------------------------------------------
# PyTorch

def _t_cov(Xc, eps):
    import torch
    m, d = Xc.shape
    return Xc.T @ Xc / m + eps * torch.eye(d, dtype=Xc.dtype)


def _t_iternorm_matrix(Xc, iterations, eps):
    """``P_T / √tr Σ`` by the coupled iteration ``M = (3I − P R)/2, R ← R M, P ← M P`` from ``R = Σ_N``."""
    import torch
    S = _t_cov(Xc, eps)
    t = torch.trace(S)
    eye = torch.eye(S.shape[0], dtype=S.dtype)
    R, P = S / t, eye
    for _ in range(iterations):
        M = 1.5 * eye - 0.5 * (P @ R)
        R, P = R @ M, M @ P
    return P / torch.sqrt(t)


def torch_group_zca_whitening(X, groups=None, eps=1e-5):
    import torch
    return (torch.cat([torch_zca_whitening(X[:, a:b], eps=eps)[0] for a, b in group_bounds(X.shape[1], groups)],
                      dim=1),)


def torch_iternorm_whitening(X, groups=None, iterations=5, eps=1e-5):
    import torch
    Xc = X - X.mean(dim=0, keepdim=True)
    return (torch.cat([Xc[:, a:b] @ _t_iternorm_matrix(Xc[:, a:b], iterations, eps)
                       for a, b in group_bounds(X.shape[1], groups)], dim=1),)


def _t_rows(x):
    """``(N, C)`` or ``(N, C, H, W)`` as ``(N·H·W, C)``."""
    return x if x.ndim == 2 else x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _t_unrows(y, x):
    if x.ndim == 2:
        return y
    n, c, h, w = x.shape
    return y.reshape(n, h, w, c).permute(0, 3, 1, 2)


def _t_layer(whiten, x, weight, bias, training, running_mean, running_wm):
    import torch
    x2 = _t_rows(x)
    if training:
        y2 = whiten(x2)
    else:
        y2 = (x2 - torch.tensor(running_mean, dtype=x.dtype)) @ torch.tensor(running_wm, dtype=x.dtype)
    y = _t_unrows(y2, x)
    if weight is not None:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        y = y * weight.reshape(shape) + bias.reshape(shape)
    return (y,)


def torch_decorrelated_batch_norm(x, weight=None, bias=None, *, groups=16, training=True, running_mean=None,
                                  running_wm=None, eps=1e-5, momentum=0.1, num_features=None, dtype=None):
    """``nn.DecorrelatedBatchNorm``: group ZCA of the batch in training mode, ``(x − running_mean)
    running_wm`` in eval mode, then ``γ``, ``β`` per channel (``momentum``, ``num_features``, ``dtype``: the
    layer builder's arguments, not used here)."""
    return _t_layer(lambda x2: torch_group_zca_whitening(x2, groups, eps)[0], x, weight, bias, training,
                    running_mean, running_wm)


def torch_iternorm_layer(x, weight=None, bias=None, *, groups=64, iterations=5, training=True, running_mean=None,
                         running_wm=None, eps=1e-5, momentum=0.1, num_features=None, dtype=None):
    """``nn.IterNorm``, as :func:`torch_decorrelated_batch_norm` with IterNorm's whitening."""
    return _t_layer(lambda x2: torch_iternorm_whitening(x2, groups, iterations, eps)[0], x, weight, bias,
                    training, running_mean, running_wm)


# ---------------------------------------------------------------------------------------------------------
# The tied linear autoencoder (orthoref.autoencoder).

def torch_tied_linear(x, w):
    """``y = x Wᵀ W``: the encoder ``W`` and its transpose as the decoder; autograd sums the two uses."""
    import torch.nn.functional as F
    return (F.linear(F.linear(x, w), w.t()),)


TORCH_TWINS = {
    "relu": torch_relu, "leaky_relu": torch_leaky_relu, "tanh": torch_tanh, "sigmoid": torch_sigmoid,
    "gelu": torch_gelu, "gelu_tanh": torch_gelu,
    "conv2d": torch_conv2d, "conv2d_naive": torch_conv2d,
    "linear": torch_linear, "linear_nobias": torch_linear,
    "cross_entropy": torch_cross_entropy, "cross_entropy_none": torch_cross_entropy, "mse": torch_mse,
    "batch_norm": torch_batch_norm, "batch_norm_eval": torch_batch_norm,
    "max_pool2d": torch_max_pool2d, "avg_pool2d": torch_avg_pool2d,
    "global_avg_pool2d": torch_global_avg_pool2d, "flatten": torch_flatten,
    "rnn": torch_rnn, "rnn_relu": torch_rnn,
    "nn.Linear": torch_linear, "nn.Conv2d": torch_conv2d,
    "nn.MaxPool2d": torch_max_pool2d, "nn.AvgPool2d": torch_avg_pool2d,
    "nn.GlobalAvgPool2d": torch_global_avg_pool2d, "nn.Flatten": torch_flatten,
    "nn.ReLU": torch_relu, "nn.LeakyReLU": torch_leaky_relu, "nn.Tanh": torch_tanh, "nn.Sigmoid": torch_sigmoid,
    "nn.GELU": torch_gelu,
    "nn.BatchNorm1d": torch_batch_norm, "nn.BatchNorm2d": torch_batch_norm,
    "nn.RNN": torch_nn_rnn,

    "gram_schmidt": torch_qr_orthogonalize,
    "qr_orthogonalize": torch_qr_orthogonalize,
    "polar": torch_polar,
    "polar_p": torch_polar,
    "procrustes": torch_procrustes,
    "clip_singular_values": torch_clip_singular_values,
    "mclip": torch_mclip,
    "mclip_svd": torch_mclip,
    "householder_product": torch_householder_product,
    "newton_schulz": torch_newton_schulz,
    "bjorck": torch_bjorck,
    "parseval_retraction": torch_parseval_retraction,
    "spectral_normalize": torch_spectral_normalize,
    "cayley": torch_cayley,
    "expm_skew": torch_expm_skew,
    "project_tangent": torch_project_tangent,
    "project_tangent_wg": torch_project_tangent_wg,
    "retract_qr": torch_retract,
    "retract_polar": torch_retract,
    "retract_cayley": torch_retract,
    "retract_exp": torch_retract_exp,
    "cayley_iterative": torch_cayley_iterative,
    "nn.OrthogonalLinear": torch_orthogonal_linear,
    "nn.OrthogonalConv2d": torch_orthogonal_conv2d,
    "nn.OrthogonalConv2d_slices": torch_orthogonal_conv2d,
    "soft_orthogonality": torch_soft_orthogonality,
    "double_soft_orthogonality": torch_double_soft_orthogonality,
    "mutual_coherence": torch_mutual_coherence,
    "srip": torch_srip,
    "srip_exact": torch_srip,
    "off_diagonal": torch_off_diagonal,
    "l1_orthogonality": torch_l1_orthogonality,
    "kernel_slice_orthogonality": torch_kernel_slice_orthogonality,
    "self_orthogonality": torch_self_orthogonality,
    "conv_orthogonality": torch_conv_orthogonality,
    "spectral_penalty": torch_spectral_penalty,
    "zca_whitening": torch_zca_whitening,
    "pca_whitening": torch_pca_whitening,
    "cholesky_whitening": torch_cholesky_whitening,
    "decov": torch_decov,
    "group_zca_whitening": torch_group_zca_whitening,
    "iternorm_whitening": torch_iternorm_whitening,
    "nn.DecorrelatedBatchNorm": torch_decorrelated_batch_norm,
    "nn.IterNorm": torch_iternorm_layer,
    "tied_linear": torch_tied_linear,
    "autoencoder.TiedLinearAutoencoder": torch_tied_linear,
}
"""Registry name → PyTorch twin."""
