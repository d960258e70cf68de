r"""Riemannian optimizers on the Stiefel manifold: ``RiemannianSGD`` and ``RiemannianAdam`` (geoopt's
update formulas, on either of geoopt's Stiefel manifolds), ``CayleySGD`` and ``CayleyAdam`` (Li, Fuxin &
Todorovic, ICLR 2020).

Which geoopt manifold
---------------------
geoopt 0.5.1 has two Stiefel manifolds, and ``geoopt.Stiefel()`` is the *canonical* one:

- ``geoopt.Stiefel()`` = ``geoopt.Stiefel(canonical=True)`` = ``CanonicalStiefel``: ``metric="canonical"``,
  ``retraction="cayley_rotate"`` (its Cayley rotation ``Q = (I - A/2)^{-1}(I + A/2)``,
  ``A = Z Xᵀ - X Zᵀ``, which also carries the momentum);
- ``geoopt.Stiefel(canonical=False)`` = ``EuclideanStiefel``: ``metric="euclidean"``, ``retraction="qr"``
  (the defaults here; momentum carried by projection).

``RiemannianAdam`` needs ``second_moment="matrix"`` (its default) for either. Both are tested against
geoopt itself (``tests/test_claims.py``, float64, 1e-12 relative).

Which parameters live on the manifold
-------------------------------------
A parameter group carries the key ``"stiefel"`` (default ``True``). A parameter of a group with
``stiefel=True`` and ``ndim >= 2`` is a point of a Stiefel manifold; any other parameter (biases, norm
scales, groups with ``stiefel=False``) gets the plain Euclidean update of the same optimizer (see each
class).

The matrix on the manifold
--------------------------
A weight of shape ``(out, in, ...)`` is seen as ``M = W.reshape(out, -1)`` (the README's convention,
"Layouts and flattening": rows are the filters). The optimizers work on the tall orientation ``X`` of
``M``, with orthonormal columns:

- ``out >= in'`` (``in'`` the flattened fan-in): ``X = M``, ``MᵀM = I`` (orthonormal columns);
- ``out < in'``: ``X = Mᵀ``, ``MMᵀ = I`` (orthonormal rows, i.e. orthonormal filters -- what
  :func:`orthoref.init.orthogonal` draws, and the orientation of Li et al.'s code, which works on
  ``unity.t()``).

The tangent projection, retraction and momentum transport act on ``X``; the result is written back in
the parameter's own shape. All state (momentum, Adam moments) is kept in the parameter's shape.

Feasibility
-----------
A Stiefel parameter must start on the manifold: on its first step (when its state is created) the
optimizers raise ``ValueError`` if ``‖XᵀX - I‖_F > tol`` with ``tol = 1e-6`` for float64 and
``max(1e-6, 50·eps·p)`` for other dtypes (``p`` the number of columns of ``X``). Initialize such weights
with :func:`orthoref.init.orthogonal` (``gain=1``) or orthonormalize them (e.g. ``retract(X, 0*X)``, the
``Q`` factor). The optimizers never silently project a weight the user gave.

All updates are computed with the parameter's array module and dtype and written into ``p.data`` in
place; ``p.grad`` is never modified.

Failure model
-------------
Hyper-parameters are checked by name (finite; ``lr``, ``momentum``, ``weight_decay`` >= 0; ``betas`` in
``[0, 1)``; ``eps`` >= 0 and ``epsilon`` > 0; ``0 <= iterations <=`` :data:`~orthoref._checks.MAX_ITERATIONS`;
``metric``/``retraction``/``second_moment`` one of their names; ``stiefel`` a bool). :meth:`step` checks every ``.grad``
(exact shape and dtype, finite) and computes the new value and state of every parameter before writing
any, checking them finite: whatever it raises (a bad ``.grad``, a read-only or infeasible parameter, an
update that overflows the dtype: ``NonFiniteError``), nothing has changed.
"""
from __future__ import annotations

import numpy as np

from .._checks import MAX_ITERATIONS, NonFiniteError, all_finite, check_bool, check_choice, check_int, check_real
from ..backend import get_array_module
from ..ortho.metrics import orthogonality_error_fro
from ..ortho.stiefel import METRICS, RETRACTIONS, cayley_iterative, project_tangent, \
    retract
from .optimizer import Optimizer, check_betas

__all__ = ["RiemannianSGD", "RiemannianAdam", "CayleySGD", "CayleyAdam", "stiefel_view", "from_stiefel_view"]


# ---------------------------------------------------------------------------------------------------------
# The matrix view.

def stiefel_view(a):
    """``(X, transposed)``: the tall matrix of an array of shape ``(out, ...)`` (``ndim >= 2``).

    ``M = a.reshape(out, -1)``; ``X = M`` when ``out >= M.shape[1]``, else ``X = Mᵀ`` (``transposed``).
    """
    M = a.reshape(a.shape[0], -1)
    if M.shape[0] < M.shape[1]:
        return M.T, True
    return M, False


def from_stiefel_view(X, transposed, shape):
    """Inverse of :func:`stiefel_view`: the array of ``shape`` whose view is ``X``."""
    return (X.T if transposed else X).reshape(shape)


def _is_stiefel(group, p):
    return bool(group["stiefel"]) and p.data.ndim >= 2



def _point_and_grad(group, p):
    """``(on_manifold, X, transposed, G)``: the Stiefel views of ``p.data`` and ``p.grad`` (see
    :func:`stiefel_view`), or the arrays as they are for a Euclidean parameter."""
    if _is_stiefel(group, p):
        X, tr = stiefel_view(p.data)
        return True, X, tr, stiefel_view(p.grad)[0]
    return False, p.data, False, p.grad

def _feasibility_tol(X):
    if X.dtype == np.float64:
        return 1e-6
    return max(1e-6, 50.0 * float(np.finfo(X.dtype).eps) * X.shape[-1])


def _check_feasible(who, X, shape, transposed, label="a Stiefel parameter"):
    """``ValueError`` naming the optimizer unless ``X`` is on the manifold (``NonFiniteError`` when it holds
    NaN/Inf; a Gram matrix that overflows is far off the manifold)."""
    tol = _feasibility_tol(X)
    if not all_finite(get_array_module(X), X):
        raise NonFiniteError(f"{who}: {label} (the parameter's data) must be finite, got NaN or Inf")
    try:
        err = orthogonality_error_fro(X)
    except ValueError:                          # ‖XᵀX - I‖ overflows the dtype
        err = float("inf")
    if not err <= tol:
        gram = "M Mᵀ" if transposed else "Mᵀ M"
        raise ValueError(
            f"{who}: a Stiefel parameter of shape {tuple(shape)} is not on the manifold: ‖{gram} - I‖_F = "
            f"{err:.3e} > {tol:.1e} (M = W.reshape(out, -1)); initialize it with orthoref.init.orthogonal "
            f"(gain=1) or orthonormalize it (the Q factor of its QR, e.g. orthoref.ortho.stiefel.retract(X, 0*X)), "
            f"or put it in a group with stiefel=False")


def _new_value(p, Y, transposed):
    """The parameter-shaped new value whose Stiefel view is ``Y`` (written into ``p.data`` on commit)."""
    return from_stiefel_view(Y, transposed, p.data.shape)


def _step_vector(opt, p, label, lr, d, X):
    """``-lr * d``, the tangent step handed to the retraction, checked finite together with ``X + Z`` (an
    overflow of the dtype raises the optimizer's ``NonFiniteError`` here, not the retraction's)."""
    Z = -lr * d
    xp = get_array_module(Z)
    if not (all_finite(xp, Z) and all_finite(xp, X + Z)):
        opt._non_finite_update(p, label, f"lr={lr:g}")
    return Z


def _checked(opt, p, label, lr, new_data, state):
    """``(new_data, state)`` after :meth:`Optimizer._check_update` on the new value and every state array."""
    arrays = [a for a in state.values() if hasattr(a, "shape")]
    opt._check_update(p, label, f"lr={lr:g}", new_data, *arrays)
    return new_data, state


def _restore(Y, tol=None):
    """``Y``, or the Q factor of its QR (``diag R > 0``) when ``‖YᵀY - I‖_F > tol`` (default: 1e-12 for
    float64, 1e-6 otherwise): the drift guard of the retractions that do not re-orthonormalize
    (``"cayley"``, ``"exp"``, the truncated iterative Cayley)."""
    if tol is None:
        tol = 1e-12 if Y.dtype == np.float64 else 1e-6
    try:
        err = orthogonality_error_fro(Y)
    except ValueError:                          # NaN/Inf (an overflow): the caller's finiteness check names it
        return Y
    if err > tol:
        return retract(Y, 0 * Y, "qr", check=False)
    return Y


# ``retraction="cayley_rotate"``: geoopt's ``CanonicalStiefel`` retraction, which also carries the momentum.
_ROTATE = "cayley_rotate"
_RETRACTIONS = RETRACTIONS + (_ROTATE,)
_SECOND_MOMENTS = ("matrix", "elementwise")


def _cayley_rotation(X, Z, V=None):
    r"""``(Q X, Q V)``: the Cayley rotation of geoopt's ``CanonicalStiefel.retr_transp``,

    .. math:: Q = (I - A/2)^{-1}(I + A/2), \qquad A = Z X^\top - X Z^\top \quad (n \times n,\ \text{skew}),

    applied to the point ``X`` (``n x p``) and to the carried vector ``V`` (``n x p``, or ``None``).
    Computed in low rank: with ``U = [Z, X]``, ``B = [X, -Z]`` (so ``A = U Bᵀ``) and ``K = I - ½ BᵀU``
    (``2p x 2p``), ``Q = I + U K^{-1} Bᵀ`` (Woodbury), i.e. ``Q W = W + U K^{-1}(Bᵀ W)``: ``O(n p²)``
    instead of geoopt's ``n x n`` solve (the same matrix; the two agree to rounding).

    Unlike :func:`~orthoref.ortho.stiefel.retract` ``"cayley"`` (``A = P Z Xᵀ - X Zᵀ P``, so ``A X = Z``),
    here ``A X = Z - X ZᵀX``: for tangent ``Z`` the curve leaves ``X`` along ``Z + X XᵀZ``, geoopt's
    convention, reproduced as is. ``Q`` is orthogonal, so ``V`` is rotated, not projected (a non-tangent
    ``V`` stays non-tangent).
    """
    xp = get_array_module(X)
    p = X.shape[-1]
    U = xp.concatenate([Z, X], axis=-1)                 # U = [Z, X]
    B = xp.concatenate([X, -Z], axis=-1)                # B = [X, -Z],  A = U Bᵀ
    K = xp.eye(2 * p, dtype=X.dtype) - 0.5 * (B.T @ U)  # K = I - ½ BᵀU
    W = X if V is None else xp.concatenate([X, V], axis=-1)
    QW = W + U @ xp.linalg.solve(K, B.T @ W)            # Q W = W + U K⁻¹ (Bᵀ W)
    return (QW, None) if V is None else (QW[:, :p], QW[:, p:])


def _move(X, Z, retraction, V=None):
    """``(X_t, V_t)``: the retraction of ``X`` along ``Z`` (with the drift guard) and the vector ``V``
    carried to it: rotated with the point for ``"cayley_rotate"``, else projected onto the new tangent
    space (geoopt's ``EuclideanStiefel.transp = proju``). ``V = None``: nothing carried."""
    if retraction == _ROTATE:
        Y, V = _cayley_rotation(X, Z, V)
        return _restore(Y), V
    Y = _restore(retract(X, Z, retraction, check=False))
    if V is not None:
        V = project_tangent(Y, V, "euclidean", check=False)
    return Y, V


def _sq_norm(X, r, metric):
    """``<r, r>_X`` as a 0-d array of ``r``'s dtype: ``Σ r²`` (``"euclidean"``) or the canonical
    ``Σ r² - ½ Σ (Xᵀr)²`` (geoopt's ``inner`` of ``EuclideanStiefel`` / ``CanonicalStiefel``)."""
    xp = get_array_module(r)
    s = (r * r).sum()
    if metric == "canonical":
        XtR = X.T @ r
        s = s - 0.5 * (XtR * XtR).sum()
    return xp.asarray(s, dtype=r.dtype)


def _one_norm(A):
    """The matrix 1-norm ``max_j Σ_i |A_ij|`` (``matrix_norm_one`` of Li et al.'s code)."""
    xp = get_array_module(A)
    return float(xp.abs(A).sum(axis=0).max())


# ---------------------------------------------------------------------------------------------------------
# geoopt's RiemannianSGD / RiemannianAdam.

class RiemannianSGD(Optimizer):
    r"""Riemannian SGD with momentum on the Stiefel manifold: geoopt's ``RiemannianSGD``
    (``geoopt/optim/rsgd.py``) with the metric and retraction chosen. The defaults are geoopt's
    ``EuclideanStiefel`` (``geoopt.Stiefel(canonical=False)``); ``metric="canonical",
    retraction="cayley_rotate"`` is ``CanonicalStiefel``, i.e. ``geoopt.Stiefel()`` (module docstring).

    For a Stiefel parameter with tall view :math:`X` (see the module docstring), Euclidean gradient
    :math:`G` (viewed the same way), learning rate :math:`\gamma`, momentum :math:`\mu`, weight decay
    :math:`\lambda`:

    .. math::

        r_t &= \pi_{X}(G_t + \lambda X_{t-1}) \qquad \text{(the Riemannian gradient, } \pi = \text{project\_tangent(metric))} \\
        b_t &= \mu\, b_{t-1} + r_t, \qquad b_0 = G_1 \text{ (geoopt's initialization, see Notes)} \\
        d_t &= r_t + \mu\, b_t \ \text{(nesterov)}, \qquad d_t = b_t \ \text{(otherwise)} \\
        X_t &= R_{X_{t-1}}(-\gamma\, d_t) \qquad (R = \text{retract(method=retraction)}) \\
        b_t &\leftarrow T(b_t) \qquad \text{(vector transport, see } \texttt{retraction} \text{)}

    and with :math:`\mu = 0`: :math:`X_t = R_{X_{t-1}}(-\gamma\, \pi_X(G_t + \lambda X_{t-1}))`. Other
    parameters take the same formulas with :math:`\pi`, :math:`R` and :math:`P` the identity (geoopt's
    ``Euclidean`` manifold).

    Parameters
    ----------
    params : iterable of Parameter, or list of dict
        Parameter groups may set ``"stiefel"`` (bool) and any hyper-parameter below.
    lr : float
        :math:`\gamma \ge 0` (required, as in geoopt).
    momentum : float, default 0
    nesterov : bool, default False
        Requires ``momentum > 0``.
    weight_decay : float, default 0
        L2, added to the Euclidean gradient before the projection (geoopt).
    metric : ``"euclidean"`` or ``"canonical"``
        How the Riemannian gradient is formed: ``"euclidean"`` is geoopt's ``EuclideanStiefel.egrad2rgrad``
        (``G - X sym(XᵀG)``), ``"canonical"`` is ``CanonicalStiefel.egrad2rgrad`` (``G - X GᵀX``).
    retraction : ``"qr"``, ``"polar"``, ``"cayley"``, ``"exp"`` or ``"cayley_rotate"``
        The first four are :func:`~orthoref.ortho.stiefel.retract`'s, with the momentum transported by
        the Euclidean projection onto the new tangent space, :math:`T = P_{X_t}` (``EuclideanStiefel``'s
        ``retr``/``transp``: ``"qr"``, the default). ``"cayley_rotate"`` is ``CanonicalStiefel``'s
        ``retr_transp``: :math:`X_t = Q X_{t-1}`, :math:`T(b) = Q b` with :math:`Q = (I - A/2)^{-1}(I + A/2)`,
        :math:`A = Z X^\top - X Z^\top`, :math:`Z = -\gamma d_t`. This :math:`A` is not ``"cayley"``'s
        (:math:`A X = Z - X Z^\top X`, i.e. :math:`Z + X X^\top Z` for tangent :math:`Z`: geoopt's
        convention, reproduced as is).

    Notes
    -----
    * geoopt creates the momentum buffer as a clone of the raw Euclidean gradient (before weight decay
      and projection) and then applies ``b = μ b + r`` on the same step, so the first buffer is
      :math:`\mu G_1 + r_1` -- not tangent, and :math:`(1+\mu) G_1` for a Euclidean parameter (PyTorch's
      SGD starts with :math:`b_1 = G_1`). This is reproduced, for equivalence with geoopt; the first
      retraction absorbs the normal part and the projection transport removes it from the buffer.
    * The transport belongs to the retraction, as in geoopt: projection (``EuclideanStiefel.transp =
      proju``) for ``"qr"``, ``"polar"``, ``"cayley"``, ``"exp"``, whatever the metric; the rotation
      :math:`Q` for ``"cayley_rotate"`` (which keeps the first, non-tangent buffer non-tangent, as geoopt).
    * geoopt's ``stabilize`` option (periodic re-projection) and ``dampening`` are not provided. Instead
      a drift guard: after the retraction, if ``‖XᵀX - I‖_F`` exceeds 1e-12 (float64; 1e-6 otherwise)
      the point is replaced by its QR factor. ``"qr"`` and ``"polar"`` never trigger it; ``"cayley"``,
      ``"cayley_rotate"`` and ``"exp"`` (which map a point to a point without re-orthonormalizing, so
      rounding errors accumulate) do, rarely, mostly in float32. Tested over 1000 steps: ``‖XᵀX - I‖ <= 1e-10``
      (float64), ``<= 1e-5`` (float32).

    State per parameter: ``"momentum_buffer"`` (parameter-shaped; only when ``momentum != 0``).
    """

    _NULLABLE_STATE = ("momentum_buffer",)
    _name = "RiemannianSGD"

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0, metric="euclidean",
                 retraction="qr", *, stiefel=True):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, metric=metric,
                        retraction=retraction, stiefel=stiefel)
        super().__init__(params, defaults)

    def _validate_group(self, group):
        who = self._name
        group["lr"] = check_real(who, "lr", group["lr"], 0.0)
        group["momentum"] = check_real(who, "momentum", group["momentum"], 0.0)
        group["nesterov"] = check_bool(who, "nesterov", group["nesterov"])
        group["weight_decay"] = check_real(who, "weight_decay", group["weight_decay"], 0.0)
        group["metric"] = check_choice(who, "metric", group["metric"], METRICS)
        group["retraction"] = check_choice(who, "retraction", group["retraction"], _RETRACTIONS)
        group["stiefel"] = check_bool(who, "stiefel", group["stiefel"])
        if group["nesterov"] and group["momentum"] <= 0:
            raise ValueError(f"{who}: Nesterov momentum requires a momentum > 0 (nesterov=True, "
                             f"momentum={group['momentum']})")

    def _state_keys(self, group, p):
        return ("momentum_buffer",)

    def _stage(self, group, p, label):
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        on, X, tr, G = _point_and_grad(group, p)
        state = self.state.get(p)
        if state is None:
            if on:
                _check_feasible(self._name, X, p.shape, tr, self._where(label, p))
            state = {"momentum_buffer": None}
        state = dict(state)
        if mu != 0 and state["momentum_buffer"] is None:
            state["momentum_buffer"] = p.grad.copy()      # b_0 = G_1 (geoopt: grad.clone(), the raw gradient)
        d = G + wd * X if wd != 0 else G                    # G_t + λ X_{t-1}
        r = project_tangent(X, d, group["metric"], check=False) if on else d     # r_t = π_X(G_t + λ X_{t-1})
        if mu != 0:
            b = stiefel_view(state["momentum_buffer"])[0] if on else state["momentum_buffer"]     # b_{t-1}
            b = mu * b + r                                  # b_t = μ b_{t-1} + r_t
            d = r + mu * b if group["nesterov"] else b      # d_t = r_t + μ b_t (nesterov), else b_t
        else:
            d = r                                           # d_t = r_t
        if on:
            Z = _step_vector(self, p, label, lr, d, X)      # Z = -γ d_t
            Y, b = _move(X, Z, group["retraction"], b if mu != 0 else None)      # X_t = R_{X_{t-1}}(Z), b_t ← T(b_t)
            if mu != 0:
                state["momentum_buffer"] = from_stiefel_view(b, tr, p.shape).copy()
            new = _new_value(p, Y, tr)
        else:
            new = p.data - lr * d                           # θ_t = θ_{t-1} - γ d_t
            if mu != 0:
                state["momentum_buffer"] = b
        return _checked(self, p, label, lr, new, state)


class RiemannianAdam(Optimizer):
    r"""Riemannian Adam on the Stiefel manifold: geoopt's ``RiemannianAdam`` (``geoopt/optim/radam.py``;
    Bécigneul & Ganea, ICLR 2019) with the metric, retraction and second moment chosen. The defaults are
    geoopt's on ``EuclideanStiefel`` (``geoopt.Stiefel(canonical=False)``); ``metric="canonical",
    retraction="cayley_rotate"`` is geoopt's on ``CanonicalStiefel``, i.e. ``geoopt.Stiefel()`` (module
    docstring).

    For a Stiefel parameter with tall view :math:`X`, Euclidean gradient :math:`G`, step
    :math:`t = 1, 2, \dots`:

    .. math::

        r_t &= \pi_X(G_t + \lambda X_{t-1}) \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, r_t \\
        v_t &= \beta_2 v_{t-1} + (1-\beta_2)\, \langle r_t, r_t \rangle_{X_{t-1}} \ \text{(a scalar; "matrix")}
            \quad\text{or}\quad \beta_2 v_{t-1} + (1-\beta_2)\, r_t \odot r_t \ \text{("elementwise")} \\
        D_t &= \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t)} + \epsilon} \\
        X_t &= R_{X_{t-1}}(-\gamma D_t), \qquad m_t \leftarrow T(m_t)

    geoopt forms :math:`v` with ``manifold.component_inner(x, r)``, which on both Stiefel manifolds is
    ``inner(x, r, keepdim=True)``: the metric's inner product of the whole matrix, one scalar per matrix
    (:math:`\sum r^2` for ``"euclidean"``, :math:`\sum r^2 - \tfrac12 \sum (X^\top r)^2` for
    ``"canonical"``), broadcast over the parameter-shaped ``exp_avg_sq``. So with ``"matrix"`` (the
    default) :math:`D_t` is a positive multiple of :math:`m_t` and stays tangent. ``"elementwise"``
    (the default of earlier orthoref versions; not geoopt's) divides entry by entry as Adam
    does; :math:`D_t` is then *not* tangent and the retraction takes it as given (``"qr"``, ``"polar"``:
    the factor of :math:`X + Z`; ``"cayley"``, ``"exp"``: along its tangent projection). The transport
    :math:`T` of :math:`m` is the retraction's (see :class:`RiemannianSGD`: projection, or the rotation of
    ``"cayley_rotate"``); :math:`v` is not transported. Other parameters: the same formulas with identity
    projection, retraction and transport and the elementwise :math:`v` for both settings (geoopt's
    ``Euclidean`` manifold has ``ndim = 0``: its ``component_inner`` is ``r ⊙ r``) -- exactly PyTorch's Adam.

    Parameters
    ----------
    params : iterable of Parameter, or list of dict
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
        Added after the bias-corrected square root (PyTorch's and geoopt's placement).
    retraction : ``"qr"`` (default, ``EuclideanStiefel``'s), ``"polar"``, ``"cayley"``, ``"exp"``, or
        ``"cayley_rotate"`` (``CanonicalStiefel``'s; see :class:`RiemannianSGD`)
    metric : ``"euclidean"`` (default, ``EuclideanStiefel``'s) or ``"canonical"`` (``CanonicalStiefel``'s)
        The Riemannian gradient and, with ``second_moment="matrix"``, the inner product of :math:`v`.
    weight_decay : float, default 0
        L2, added to the Euclidean gradient before the projection (geoopt).
    second_moment : ``"matrix"`` (default, geoopt's) or ``"elementwise"``, keyword-only

    Notes
    -----
    geoopt 0.5.1 does not alter the point before a step; only its ``stabilize`` option (every
    ``stabilize`` steps: ``projx``, an SVD, and ``proju`` of the buffer) does, and it is not provided here
    (geoopt's unreleased master also calls ``projx`` at the start of every step). Instead the same drift
    guard as :class:`RiemannianSGD` (QR restoration past 1e-12 in float64, 1e-6 otherwise) follows the
    retraction. ``amsgrad`` is not provided. State per parameter: ``"step"``, ``"exp_avg"``,
    ``"exp_avg_sq"`` (parameter-shaped; with ``"matrix"`` every entry of ``exp_avg_sq`` of a Stiefel
    parameter holds the same scalar, as geoopt's).
    """

    _name = "RiemannianAdam"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, retraction="qr", metric="euclidean",
                 weight_decay=0.0, *, stiefel=True, second_moment="matrix"):
        defaults = dict(lr=lr, betas=betas, eps=eps, retraction=retraction, metric=metric,
                        weight_decay=weight_decay, stiefel=stiefel, second_moment=second_moment)
        super().__init__(params, defaults)

    def _validate_group(self, group):
        who = self._name
        group["lr"] = check_real(who, "lr", group["lr"], 0.0)
        group["betas"] = check_betas(group["betas"], who)
        group["eps"] = check_real(who, "eps", group["eps"], 0.0)
        group["retraction"] = check_choice(who, "retraction", group["retraction"], _RETRACTIONS)
        group["metric"] = check_choice(who, "metric", group["metric"], METRICS)
        group["weight_decay"] = check_real(who, "weight_decay", group["weight_decay"], 0.0)
        group["stiefel"] = check_bool(who, "stiefel", group["stiefel"])
        group["second_moment"] = check_choice(who, "second_moment", group["second_moment"], _SECOND_MOMENTS)

    def _state_keys(self, group, p):
        return ("step", "exp_avg", "exp_avg_sq")

    def _stage(self, group, p, label):
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        on, X, tr, G = _point_and_grad(group, p)
        xp = get_array_module(p.data)
        state = self.state.get(p)
        if state is None:
            if on:
                _check_feasible(self._name, X, p.shape, tr, self._where(label, p))
            state = {"step": 0, "exp_avg": xp.zeros_like(p.data), "exp_avg_sq": xp.zeros_like(p.data)}
        state = dict(state)
        state["step"] = t = state["step"] + 1               # t ← t + 1
        d = G + wd * X if wd != 0 else G                    # G_t + λ X_{t-1}
        r = project_tangent(X, d, group["metric"], check=False) if on else d     # r_t = π_X(G_t + λ X_{t-1})
        m = stiefel_view(state["exp_avg"])[0] if on else state["exp_avg"]        # m_{t-1}
        v = stiefel_view(state["exp_avg_sq"])[0] if on else state["exp_avg_sq"]  # v_{t-1}
        m = beta1 * m + (1.0 - beta1) * r                   # m_t = β₁ m_{t-1} + (1-β₁) r_t
        if on and group["second_moment"] == "matrix":
            v = beta2 * v + (1.0 - beta2) * _sq_norm(X, r, group["metric"]) # v_t = β₂ v_{t-1} + (1-β₂)‖r_t‖²_X
        else:
            v = beta2 * v + (1.0 - beta2) * (r * r)         # v_t = β₂ v_{t-1} + (1-β₂) r_t ⊙ r_t
        bc1 = 1.0 - beta1 ** t                              # 1 - β₁ᵗ
        bc2 = 1.0 - beta2 ** t                              # 1 - β₂ᵗ
        D = (m / bc1) / (xp.sqrt(v / bc2) + eps)            # D_t = m_t/(1-β₁ᵗ) / (√(v_t/(1-β₂ᵗ)) + ε)
        if on:
            Z = _step_vector(self, p, label, lr, D, X)      # Z = -γ D_t
            Y, m = _move(X, Z, group["retraction"], m)      # X_t = R_{X_{t-1}}(Z), m_t ← T(m_t)
            new = _new_value(p, Y, tr)
            state["exp_avg"] = from_stiefel_view(m, tr, p.shape).copy()
            state["exp_avg_sq"] = from_stiefel_view(v, tr, p.shape).copy()
        else:
            new = p.data - lr * D                           # θ_t = θ_{t-1} - γ D_t
            state["exp_avg"], state["exp_avg_sq"] = m, v
        return _checked(self, p, label, lr, new, state)


# ---------------------------------------------------------------------------------------------------------
# Li, Fuxin & Todorovic (ICLR 2020): Cayley SGD with momentum and Cayley Adam.

def _cayley_generator_one_norm(X, Z):
    """``‖A‖₁`` of the skew generator ``A = PZ Xᵀ - X PZᵀ`` (``PZ = Z - ½X(XᵀZ)``; their ``W``), formed
    explicitly (``n x n``) as their code does."""
    PZ = Z - 0.5 * (X @ (X.T @ Z))
    return _one_norm(PZ @ X.T - X @ PZ.T)


class _CayleyBase(Optimizer):
    _NULLABLE_STATE = ()

    def _validate_common(self, group, who):
        group["lr"] = check_real(who, "lr", group["lr"], 0.0)
        group["weight_decay"] = check_real(who, "weight_decay", group["weight_decay"], 0.0)
        group["iterations"] = check_int(who, "iterations", group["iterations"], 0, MAX_ITERATIONS)
        group["epsilon"] = check_real(who, "epsilon", group["epsilon"], 0.0, lo_open=True)
        group["stiefel"] = check_bool(who, "stiefel", group["stiefel"])
        tol = group["restore_tol"]
        if tol is not None:
            group["restore_tol"] = check_real(who, "restore_tol", tol, 0.0)

    def _cayley_move(self, group, X, Z):
        """``X ← cayley_iterative(X, Z, α)`` with ``α = min(lr, 1/(‖A‖₁ + ε))`` (``q = ½``), then the QR
        restoration when the drift passes ``restore_tol``."""
        alpha = min(group["lr"], 1.0 / (_cayley_generator_one_norm(X, Z) + group["epsilon"]))
        Y = cayley_iterative(X, Z, alpha, group["iterations"], check=False)
        return _restore(Y, group["restore_tol"])


class CayleySGD(_CayleyBase):
    r"""Cayley SGD with momentum (Li, Fuxin & Todorovic, ICLR 2020, Algorithm 1; their ``SGDG`` with
    ``stiefel=True``).

    For a Stiefel parameter with tall view :math:`X` (``n x p``, orthonormal columns) and Euclidean
    gradient :math:`G`:

    .. math::

        M &\leftarrow \beta M - G \\
        \hat W &= M X^T - \tfrac12 X (X^T M X^T), \qquad W = \hat W - \hat W^T \\
        M &\leftarrow W X \qquad (= M - X\,\mathrm{sym}(X^TM) \text{: the tangent projection}) \\
        \alpha &= \min\big(l,\ 2q / (\|W\|_1 + \epsilon)\big), \qquad q = \tfrac12 \\
        Y^0 &= X + \alpha M, \qquad Y^{i+1} = X + \tfrac{\alpha}{2} W (X + Y^i), \quad i < \texttt{iterations} \\
        X &\leftarrow Y^{\texttt{iterations}}

    computed by :func:`orthoref.ortho.stiefel.cayley_iterative` (``W`` applied in low rank; ``W X = M``).
    Other parameters get PyTorch's SGD with momentum ``β`` and L2 weight decay (their code's Euclidean
    branch).

    Parameters
    ----------
    params : iterable of Parameter, or list of dict (groups may set ``"stiefel"``)
    lr : float
        :math:`l`, the upper bound of the step (their ``lrg`` for Stiefel parameters, e.g. 0.2; for the
        Euclidean parameters it is the plain learning rate, as their single ``lr`` per group).
    momentum : float, default 0.9
        :math:`\beta`.
    weight_decay : float, default 0
        Used for the Euclidean parameters only (their code ignores it on the manifold, where the tangent
        projection of ``λX`` is zero anyway).
    iterations : int, default 2
        Fixed-point iterations of the Cayley transform: the paper's 2 (their code uses 5);
        ``0 <= iterations <= 10000``.
    epsilon : float, default 1e-8
        ``> 0`` (it keeps ``1 / (‖W‖₁ + epsilon)`` finite).
    restore_tol : float or None, keyword-only
        After the step, if ``‖XᵀX - I‖_F`` exceeds it (default ``None``: 1e-12 for float64, 1e-6 otherwise)
        the iterate is replaced by the Q factor of its QR (their ``qr_retraction``).

    Notes
    -----
    Differences from their code (``stiefel_optimizer.py``):

    * Their ``Cayley_loop`` starts from ``Y⁰ = X + αM`` with the *unprojected* ``M``; the paper's
      Algorithm 1 (and this class) starts from the projected ``M = WX``. The fixed point (the Cayley
      transform) is the same; the truncated iterates differ by :math:`O(\alpha^{k+1})`.
    * Their code normalizes the rows of the weight (``unit``) every step and replaces it by its QR factor
      at random (probability 1/101), which keeps a drifting weight near the manifold. Here the weight must
      start feasible (``ValueError`` otherwise) and the QR restoration is deterministic, triggered by the
      drift (``restore_tol``). With the truncated iteration the drift per step is
      :math:`O((\alpha\|W\|)^{k+2})`; the restoration keeps ``‖XᵀX - I‖`` at the 1e-12 level in float64.
    * They apply the Stiefel update only when ``out <= in`` (their ``unity.size(0) <= unity.size(1)``) and
      SGD otherwise; here a tall weight (``out > in``) works on ``M`` itself (orthonormal columns).

    State per parameter: ``"momentum_buffer"`` (parameter-shaped, the projected ``M`` for Stiefel
    parameters; PyTorch's buffer for the others, created on the first step).
    """

    _name = "CayleySGD"

    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0, iterations=2, epsilon=1e-8, *,
                 stiefel=True, restore_tol=None):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, iterations=iterations,
                        epsilon=epsilon, stiefel=stiefel, restore_tol=restore_tol)
        super().__init__(params, defaults)

    def _validate_group(self, group):
        self._validate_common(group, self._name)
        group["momentum"] = check_real(self._name, "momentum", group["momentum"], 0.0)

    def _state_keys(self, group, p):
        return ("momentum_buffer",)

    def _stage(self, group, p, label):
        lr, beta, wd = group["lr"], group["momentum"], group["weight_decay"]
        xp = get_array_module(p.data)
        state = self.state.get(p)
        if _is_stiefel(group, p):
            X, tr = stiefel_view(p.data)
            G = stiefel_view(p.grad)[0]
            if state is None:
                _check_feasible(self._name, X, p.shape, tr, self._where(label, p))
                state = {"momentum_buffer": xp.zeros_like(p.data)}
            M = beta * stiefel_view(state["momentum_buffer"])[0] - G            # M ← β M - G
            M = project_tangent(X, M, "euclidean", check=False)                 # M ← W X = M - X sym(XᵀM)
            Y = self._cayley_move(group, X, M)              # X ← Y^iterations, α = min(l, 1/(‖W‖₁ + ε))
            new = _new_value(p, Y, tr)
            state = dict(state, momentum_buffer=from_stiefel_view(M, tr, p.shape).copy())
        else:
            d = p.grad + wd * p.data if wd != 0 else p.grad                     # d_t = g_t + λ θ_{t-1}
            if beta != 0:
                if state is None:
                    state = {"momentum_buffer": d.copy()}   # b_1 = d_1
                else:
                    b = beta * state["momentum_buffer"] + d                     # b_t = β b_{t-1} + d_t
                    state = dict(state, momentum_buffer=b)
                d = state["momentum_buffer"]                # d_t ← b_t
            elif state is None:
                state = {"momentum_buffer": xp.zeros_like(p.data)}
            new = p.data - lr * d                           # θ_t = θ_{t-1} - l d_t
        return _checked(self, p, label, lr, new, state)


class CayleyAdam(_CayleyBase):
    r"""Cayley Adam (Li, Fuxin & Todorovic, ICLR 2020, Algorithm 2; their ``AdamG`` with ``stiefel=True``).

    For a Stiefel parameter with tall view :math:`X` and Euclidean gradient :math:`G`, step
    :math:`t = 1, 2, \dots`:

    .. math::

        m &\leftarrow \beta_1 m + (1-\beta_1) G, \qquad v \leftarrow \beta_2 v + (1-\beta_2)\|G\|_F^2
            \quad (v \text{ a scalar}) \\
        \hat m &= m / (1-\beta_1^t), \qquad \hat v = v / (1-\beta_2^t) \\
        \hat W &= \hat m X^T - \tfrac12 X(X^T\hat m X^T), \qquad W = (\hat W - \hat W^T)/\sqrt{\hat v + \epsilon} \\
        \alpha &= \min\big(l,\ 2q/(\|W\|_1 + \epsilon)\big), \quad q = \tfrac12 \\
        X &\leftarrow \text{cayley\_iterative}(X,\ -W X,\ \alpha), \qquad
        m \leftarrow (W X)\sqrt{\hat v + \epsilon}\,(1-\beta_1^t) = \pi_X(m)

    i.e. the step direction is :math:`Z = -\pi_X(\hat m)/\sqrt{\hat v + \epsilon}` (``π`` the Euclidean
    tangent projection) and the first moment is replaced by its tangent projection at the old point.
    Note :math:`\sqrt{\hat v + \epsilon}` (their placement of ε), and the *scalar* second moment.

    Euclidean parameters get PyTorch's Adam with the same betas and ``eps = epsilon`` (their code falls
    back to SGD with momentum ``β₁`` -- a deliberate difference, documented).

    Parameters
    ----------
    params : iterable of Parameter, or list of dict (groups may set ``"stiefel"``)
    lr : float
        :math:`l` (their ``lrg`` for Stiefel parameters, e.g. 0.4 in their README's Adam-G line).
    betas : (float, float), default (0.9, 0.99)
        Their defaults (``momentum`` and ``beta2=0.99``).
    weight_decay : float, default 0
        L2 for the Euclidean parameters only (as their code).
    iterations : int, default 2 (the paper; their code: 5)
    epsilon : float, default 1e-8
    restore_tol : float or None, keyword-only (see :class:`CayleySGD`)

    Notes
    -----
    The same differences as :class:`CayleySGD` (projected ``Y⁰``, deterministic QR restoration instead of
    row normalization plus random QR, tall weights handled). State per parameter: ``"step"``,
    ``"exp_avg"`` (:math:`m`, parameter-shaped) and ``"exp_avg_sq"`` -- for a Stiefel parameter the scalar
    :math:`v` broadcast to the parameter's shape (so that the state dict keeps PyTorch's per-parameter
    layout; every entry is equal).
    """

    _name = "CayleyAdam"

    def __init__(self, params, lr, betas=(0.9, 0.99), weight_decay=0.0, iterations=2, epsilon=1e-8, *,
                 stiefel=True, restore_tol=None):
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, iterations=iterations, epsilon=epsilon,
                        stiefel=stiefel, restore_tol=restore_tol)
        super().__init__(params, defaults)

    def _validate_group(self, group):
        who = self._name
        self._validate_common(group, who)
        group["betas"] = check_betas(group["betas"], who)

    def _state_keys(self, group, p):
        return ("step", "exp_avg", "exp_avg_sq")

    def _stage(self, group, p, label):
        lr, eps, wd = group["lr"], group["epsilon"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        xp = get_array_module(p.data)
        on = _is_stiefel(group, p)
        state = self.state.get(p)
        if state is None:
            if on:
                X, tr = stiefel_view(p.data)
                _check_feasible(self._name, X, p.shape, tr, self._where(label, p))
            state = {"step": 0, "exp_avg": xp.zeros_like(p.data), "exp_avg_sq": xp.zeros_like(p.data)}
        state = dict(state)
        state["step"] = t = state["step"] + 1               # t ← t + 1
        bc1 = 1.0 - beta1 ** t                              # 1 - β₁ᵗ
        bc2 = 1.0 - beta2 ** t                              # 1 - β₂ᵗ
        if on:
            X, tr = stiefel_view(p.data)
            G = stiefel_view(p.grad)[0]
            # m ← β₁ m + (1-β₁) G
            m = beta1 * stiefel_view(state["exp_avg"])[0] + (1.0 - beta1) * G
            # v ← β₂ v + (1-β₂) ‖G‖_F²  (a scalar)
            v = beta2 * float(state["exp_avg_sq"].reshape(-1)[0]) + (1.0 - beta2) * float((G * G).sum())
            if not np.isfinite(v):                  # ‖G‖² overflows the dtype
                self._non_finite_update(p, label, f"lr={lr:g}")
            scale = float(np.sqrt(v / bc2 + eps))           # √(v̂ + ε), v̂ = v / (1-β₂ᵗ)
            m = project_tangent(X, m, "euclidean", check=False)     # m ← π_X(m) = W X √(v̂+ε) (1-β₁ᵗ)
            Z = (-1.0 / (bc1 * scale)) * m                  # Z = -π_X(m̂) / √(v̂ + ε) = -W X
            Y = self._cayley_move(group, X, Z)              # X ← cayley_iterative(X, -W X, α)
            new = _new_value(p, Y, tr)
            state["exp_avg"] = from_stiefel_view(m, tr, p.shape).copy()
            state["exp_avg_sq"] = xp.full(p.shape, v, dtype=p.dtype)            # v, broadcast to θ's shape
        else:
            d = p.grad + wd * p.data if wd != 0 else p.grad                     # d_t = g_t + λ θ_{t-1}
            # m_t = β₁ m_{t-1} + (1-β₁) d_t
            m = state["exp_avg"] = beta1 * state["exp_avg"] + (1.0 - beta1) * d
            # v_t = β₂ v_{t-1} + (1-β₂) d_t²
            v = state["exp_avg_sq"] = beta2 * state["exp_avg_sq"] + (1.0 - beta2) * (d * d)
            # θ_t = θ_{t-1} - l/(1-β₁ᵗ) · m_t / (√(v_t/(1-β₂ᵗ)) + ε)
            new = p.data - (lr / bc1) * m / (xp.sqrt(v / bc2) + eps)
        return _checked(self, p, label, lr, new, state)
