"""Muon: momentum orthogonalized by Newton–Schulz (Keller Jordan et al., 2024), with an auxiliary
AdamW-style update for the parameters that are not matrices."""
from __future__ import annotations

import numpy as np

from .._checks import MAX_ITERATIONS, check_bool, check_choice, check_int, check_real
from ..backend import get_array_module
from ..ortho.decomp import polar
from ..ortho.iterative import NS_COEFFICIENTS, newton_schulz, ns_polynomial
from .optimizer import Optimizer, check_betas

__all__ = ["Muon"]

_SCALES = ("jordan", "jordan_last_axes", "moonlight")
_NORMALIZE = ("add_eps", "clamp")
_NS_EPS = 1e-7                                          # ε of the normalization (Muon's and torch's 1e-7)
_KAPPA = {"polar_express": 1.01}                        # κ of newton_schulz (1 for the other tables)
_MATRIX_KEYS = ("momentum_buffer",)
_AUX_KEYS = ("step", "exp_avg", "exp_avg_sq")


def _is_matrix(p) -> bool:
    """Muon's parameters: ``ndim >= 2`` (weights, conv filters); the others (biases, norms, scalars) take
    the auxiliary Adam update."""
    return p.data.ndim >= 2


def _msign_svd(M):
    """Exact ``U Vᵀ`` of ``M = U Σ Vᵀ`` through :func:`~orthoref.ortho.polar`; for a numerically
    rank-deficient ``M`` (where ``polar`` refuses: the factor is not unique) the rank-``r`` part
    ``U_r V_rᵀ``, i.e. ``U sign(Σ) Vᵀ`` with the negligible singular values sent to 0 (the limit of the
    Newton–Schulz map, which fixes 0); a zero ``M`` gives zeros."""
    try:
        return polar(M)
    except ValueError:
        xp = get_array_module(M)
        U, s, Vh = xp.linalg.svd(M, full_matrices=False)
        tol = max(M.shape) * np.finfo(M.dtype).eps * (s[0] if s.size else 0)
        r = int((s > tol).sum())
        return (U[:, :r] @ Vh[:r]).astype(M.dtype, copy=False)


def _ns_eps(xp, M, coefficients, normalize):
    """The ``eps`` handed to :func:`~orthoref.ortho.newton_schulz` (which divides by ``κ‖M‖_F + eps``):
    ``1e-7`` for ``"add_eps"``; ``max(1e-7 - κ‖M‖_F, 0)`` for ``"clamp"``, so that the divisor is
    ``max(κ‖M‖_F, 1e-7)``."""
    if normalize == "add_eps":
        return _NS_EPS
    kappa = _KAPPA.get(coefficients, 1.0) if isinstance(coefficients, str) else 1.0
    with np.errstate(over="ignore"):
        n = kappa * float(xp.sqrt(xp.sum(M * M)))      # overflow -> inf -> eps 0 (newton_schulz rescales)
    return max(_NS_EPS - n, 0.0)


class Muon(Optimizer):
    r"""Muon (Keller Jordan et al., 2024, ``github.com/KellerJordan/Muon``): SGD-momentum whose update
    is replaced by its orthogonal polar factor, approximated by a Newton–Schulz iteration, plus the
    auxiliary Adam of ``MuonWithAuxAdam`` for parameters with ``ndim < 2``.

    **Matrix parameters** (``ndim >= 2``; a 4-D conv weight ``(out, in, kh, kw)`` and any other
    ``ndim > 2`` weight are seen as ``M = W.reshape(out, -1)``, ``rows × cols``). With learning rate
    :math:`\gamma` (``lr``), momentum :math:`\beta`, weight decay :math:`\lambda`:

    .. math::

        m_t &= \beta\, m_{t-1} + (1-\beta)\, g_t \qquad (m_0 = 0) \\
        u_t &= (1-\beta)\, g_t + \beta\, m_t \quad \text{(nesterov)}, \qquad
            u_t = m_t \quad \text{(otherwise)} \\
        O_t &= \mathrm{NS}_k(u_t) \approx U V^\top \ (u_t = U \Sigma V^\top), \qquad
            O_t = U V^\top \ \text{exactly when } \texttt{coefficients="svd"} \\
        W_t &= (1 - \gamma\lambda)\, W_{t-1} - \gamma\, s\, O_t, \qquad
            s = \sqrt{\max(1, \mathrm{rows}/\mathrm{cols})} \ \text{("jordan")},
            \ \sqrt{\max(1, n_{-2}/n_{-1})} \ \text{("jordan\_last\_axes")}
            \ \text{or}\ 0.2 \sqrt{\max(\mathrm{rows}, \mathrm{cols})} \ \text{("moonlight")}

    with :math:`\mathrm{NS}_k` = :func:`~orthoref.ortho.newton_schulz` (``steps=ns_steps``,
    ``coefficients``, ``ε = 10^{-7}``, then ``k`` quintic steps on the wide orientation, in the
    parameter's dtype instead of bfloat16) started from

    .. math::

        X_0 = \frac{u}{\kappa\|u\|_F + \epsilon} \ \text{(normalize="add\_eps", the default)}
        \qquad\text{or}\qquad X_0 = \frac{u}{\max(\kappa\|u\|_F,\ \epsilon)} \ \text{("clamp")}

    (:math:`\kappa = 1.01` for ``"polar_express"``, 1 otherwise). ``"add_eps"`` is KellerJordan/Muon's
    ``zeropower_via_newtonschulz5`` (``X / (X.norm() + 1e-7)``); ``"clamp"`` is ``torch.optim.Muon``'s
    (``X.div_(X.norm().clamp(min=eps))``, ``eps=1e-7``). The two :math:`X_0` differ by a relative
    :math:`\epsilon/(\kappa\|u\|_F)` (both are 0 for a zero momentum). ``"moonlight"`` is the
    RMS-matching scale of Liu et al. 2025 (Moonlight, arXiv:2502.16982), whose update RMS is about 0.2,
    AdamW's; it is ``torch.optim.Muon``'s ``adjust_lr_fn="match_rms_adamw"``. ``"jordan"`` uses the matrix
    view, ``"jordan_last_axes"`` the parameter's own last two axes :math:`n_{-2} \times n_{-1}`
    (KellerJordan/Muon's ``max(1, grad.size(-2) / grad.size(-1))**0.5`` of the unreshaped gradient:
    ``kh / kw`` for a conv weight); the two are the same for a matrix, where they are also
    ``torch.optim.Muon``'s default ``adjust_lr_fn="original"``.

    **Other parameters** (``ndim < 2``), the public ``adam_update`` of ``MuonWithAuxAdam`` with
    :math:`\gamma_a` (``adam_lr``), :math:`(\beta_1, \beta_2)` (``adam_betas``), :math:`\epsilon`
    (``adam_eps``), :math:`\lambda_a` (``adam_weight_decay``) and per-parameter step :math:`t`:

    .. math::

        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2 \\
        \theta_t &= (1 - \gamma_a\lambda_a)\, \theta_{t-1} - \gamma_a\,
            \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t)} + \epsilon}

    (the same value as :class:`AdamW`'s up to rounding; here in the public code's arrangement).

    Parameters
    ----------
    params : iterable of Parameter, or list of dict
        Parameters, or parameter groups overriding any of the hyper-parameters below. A group may mix
        matrices and vectors: each parameter takes the update of its kind.
    lr : float, default 0.02
        :math:`\gamma \ge 0` of the matrix update (in units of spectral norm per step, for ``"jordan"``).
    momentum : float, default 0.95
        :math:`0 \le \beta < 1`.
    nesterov : bool, default True
    ns_steps : int, default 5
        Newton–Schulz steps ``1 <= k <=`` :data:`~orthoref._checks.MAX_ITERATIONS` (10,000; checked
        also with ``coefficients="svd"``, where it is ignored).
    coefficients : str or (m, 3) array_like, default "jordan"
        A name of :data:`~orthoref.ortho.NS_COEFFICIENTS` (``"jordan"`` = Muon's ``(3.4445, -4.7750,
        2.0315)``, ``"you"``, ``"polar_express"``, ``"cubic"``), a table of ``(a, b, c)`` rows (stored as a
        tuple of float triples), or ``"svd"`` for the exact polar factor (:func:`~orthoref.ortho.polar`;
        a rank-deficient momentum gets ``U_r V_rᵀ``, its non-zero part).
    weight_decay : float, default 0
        :math:`\lambda \ge 0`, decoupled, multiplied by ``lr`` (not by the scale :math:`s`), as both
        public codes do.
    scale : {"jordan", "jordan_last_axes", "moonlight"}, default "jordan"
    normalize : {"add_eps", "clamp"}, default "add_eps"
        How :math:`X_0` guards against a zero momentum (above); ignored with ``coefficients="svd"``.
    adam_lr : float, default 3e-4
    adam_betas : (float, float), default (0.9, 0.95)
    adam_eps : float, default 1e-10
    adam_weight_decay : float, default 0

    Every real hyper-parameter must be finite (``lr``, ``weight_decay``, ``adam_lr``,
    ``adam_weight_decay`` >= 0; ``momentum`` and the ``adam_betas`` in ``[0, 1)``; ``adam_eps`` >= 0);
    a coefficient table must hold finite numbers. Otherwise ``TypeError``/``ValueError`` naming it.

    Raises (:meth:`step`): as :meth:`Optimizer.step`; the step is staged (the new momentum, moments and
    value of every parameter are computed into spare arrays and checked before any is written), so
    whatever it raises -- a bad ``.grad``, a read-only parameter, an update that overflows
    (``NonFiniteError``) -- nothing has changed.

    Notes
    -----
    State: ``"momentum_buffer"`` (:math:`m`) for a matrix parameter; ``"step"`` (int), ``"exp_avg"``,
    ``"exp_avg_sq"`` for the others. ``state_dict`` has the base class's (PyTorch's) structure; the key
    set of each entry is checked against the kind of its parameter on loading.

    Differences from the public code (``muon.py`` of KellerJordan/Muon):

    * ``.grad`` is never written (the public ``muon_update`` overwrites it with ``grad.lerp_``); the
      step runs in place on ``p.data`` in its dtype (float32 stays float32; no bfloat16 anywhere).
    * Parameters whose ``.grad`` is ``None`` are skipped (the public step fills in zeros).
    * The ``"jordan"`` scale uses the matrix view ``rows × cols``. The public code takes
      ``grad.size(-2) / grad.size(-1)`` of the *unreshaped* gradient, i.e. ``kh / kw`` of a 4-D conv
      weight (1 for square kernels): ``scale="jordan_last_axes"``. ``"jordan"``'s
      ``√max(1, out / (in·kh·kw))`` is also 1 when ``out <= in·kh·kw`` — the same factor for square
      kernels in that case, not in general.
    * One optimizer with per-kind dispatch instead of ``use_muon`` groups; ``ndim > 2`` weights other
      than 4-D are also flattened to ``(out, -1)`` (the public code would batch them over leading axes).
    """

    _name = "Muon"

    def __init__(self, params, lr=0.02, momentum=0.95, nesterov=True, ns_steps=5, coefficients="jordan",
                 weight_decay=0.0, scale="jordan", adam_lr=3e-4, adam_betas=(0.9, 0.95), adam_eps=1e-10,
                 adam_weight_decay=0.0, *, normalize="add_eps"):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                        coefficients=coefficients, weight_decay=weight_decay, scale=scale, adam_lr=adam_lr,
                        adam_betas=adam_betas, adam_eps=adam_eps, adam_weight_decay=adam_weight_decay,
                        normalize=normalize)
        super().__init__(params, defaults)

    # -- hyper-parameters --------------------------------------------------------------------------------
    def _validate_group(self, group):
        who = self._name
        group["lr"] = check_real(who, "lr", group["lr"], 0.0)
        group["momentum"] = check_real(who, "momentum", group["momentum"], 0.0, 1.0, hi_open=True)
        group["nesterov"] = check_bool(who, "nesterov", group["nesterov"])
        group["ns_steps"] = check_int(who, "ns_steps", group["ns_steps"], 1, MAX_ITERATIONS)
        group["coefficients"] = self._check_coefficients(who, group["coefficients"], group["ns_steps"])
        group["weight_decay"] = check_real(who, "weight_decay", group["weight_decay"], 0.0)
        group["scale"] = check_choice(who, "scale", group["scale"], _SCALES)
        group["adam_lr"] = check_real(who, "adam_lr", group["adam_lr"], 0.0)
        group["adam_betas"] = check_betas(group["adam_betas"], who, "adam_betas")
        group["adam_eps"] = check_real(who, "adam_eps", group["adam_eps"], 0.0)
        group["adam_weight_decay"] = check_real(who, "adam_weight_decay", group["adam_weight_decay"], 0.0)
        group["normalize"] = check_choice(who, "normalize", group["normalize"], _NORMALIZE)

    @staticmethod
    def _check_coefficients(who, c, steps):
        """``"svd"``, a name of ``NS_COEFFICIENTS``, or an ``(m, 3)`` table of finite ``(a, b, c)`` rows
        (returned as a tuple of float triples)."""
        if isinstance(c, str):
            return check_choice(who, "coefficients", c, ("svd",) + tuple(NS_COEFFICIENTS))
        expected = "'svd', a name of NS_COEFFICIENTS or an (m, 3) table of finite (a, b, c) rows"
        try:
            T = np.asarray(c)
        except (TypeError, ValueError):
            raise ValueError(f"{who}: coefficients must be {expected}, got {c!r}") from None
        if T.dtype.kind not in "iuf" or T.ndim not in (1, 2) or T.size == 0 or T.shape[-1] != 3 \
                or not np.isfinite(T).all():
            raise ValueError(f"{who}: coefficients must be {expected}, got {c!r}")
        try:
            ns_polynomial(c, steps)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{who}: coefficients must be {expected}, got {c!r} ({exc})") from None
        T = T.astype(np.float64).reshape(-1, 3)
        return tuple(tuple(float(x) for x in row) for row in T)

    # -- state dicts: the key set depends on the parameter's kind, not on its group ------------------------
    def _state_keys(self, group, p):
        return self.state_keys_of(p)

    @staticmethod
    def state_keys_of(p) -> tuple:
        """The state keys of parameter ``p``: ``("momentum_buffer",)`` for ``ndim >= 2``, else
        ``("step", "exp_avg", "exp_avg_sq")``."""
        return _MATRIX_KEYS if _is_matrix(p) else _AUX_KEYS

    # -- the step ------------------------------------------------------------------------------------------
    _recycle = True

    def _stage(self, group, p, label):
        if _is_matrix(p):
            return self._muon_stage(p, group, label)
        return self._adam_stage(p, group, label)

    def _muon_stage(self, p, group, label):
        lr, beta, wd = float(group["lr"]), float(group["momentum"]), float(group["weight_decay"])
        w, g = p.data, p.grad
        xp = get_array_module(w)
        state = self.state.get(p)
        m_old = xp.zeros_like(w) if state is None else state["momentum_buffer"]      # m_0 = 0
        s = self._scratch(p)                                # s: the shared scratch buffer
        m = self._spare(p, "momentum_buffer")               # m_t: a spare array (the step is staged)
        xp.multiply(m_old, beta, out=m)                     # m = β m_{t-1}
        xp.multiply(g, 1.0 - beta, out=s)                   # s = (1-β) g_t
        m += s                                              # m_t = β m_{t-1} + (1-β) g_t
        if group["nesterov"]:
            s1 = self._scratch(p, 1)
            xp.multiply(m, beta, out=s1)                    # s1 = β m_t
            s += s1                                         # u_t = (1-β) g_t + β m_t
            u = s
        else:
            u = m                                           # u_t = m_t
        rows = w.shape[0]
        M = u.reshape(rows, -1)                             # u_t as a rows × cols matrix
        cols = M.shape[1]
        c = group["coefficients"]
        if isinstance(c, str) and c == "svd":
            O = _msign_svd(M)                               # O_t = U Vᵀ    (u_t = U Σ Vᵀ)
        else:
            O = newton_schulz(M, steps=group["ns_steps"], coefficients=c,
                              eps=_ns_eps(xp, M, c, group["normalize"]))          # O_t = NS_k(u_t)
        if group["scale"] == "jordan":
            sc = max(1.0, rows / cols) ** 0.5               # sc = √max(1, rows/cols)
        elif group["scale"] == "jordan_last_axes":
            sc = max(1.0, w.shape[-2] / w.shape[-1]) ** 0.5  # sc = √max(1, n₋₂/n₋₁)
        else:
            sc = 0.2 * float(max(rows, cols)) ** 0.5        # sc = 0.2 √max(rows, cols)
        wn = self._spare(p, "_data")                        # W_t: a spare array
        O *= lr * sc                                        # O = γ sc O_t
        if wd != 0:
            xp.multiply(w, 1.0 - lr * wd, out=wn)           # W = (1 - γλ) W_{t-1}
            wn -= O.reshape(w.shape)                        # W_t = (1 - γλ) W_{t-1} - γ sc O_t
        else:
            xp.subtract(w, O.reshape(w.shape), out=wn)      # W_t = W_{t-1} - γ sc O_t
        self._check_update(p, label, f"lr={lr:g}", wn)
        return wn, dict(state or {}, momentum_buffer=m)

    def _adam_stage(self, p, group, label):
        lr, wd, eps = float(group["adam_lr"]), float(group["adam_weight_decay"]), float(group["adam_eps"])
        beta1, beta2 = (float(b) for b in group["adam_betas"])
        w, g = p.data, p.grad
        xp = get_array_module(w)
        state = self.state.get(p)
        if state is None:                                   # m_0 = v_0 = 0
            state = {"step": 0, "exp_avg": xp.zeros_like(w), "exp_avg_sq": xp.zeros_like(w)}
        t = state["step"] + 1                               # t ← t + 1
        s, s1 = self._scratch(p), self._scratch(p, 1)       # two shared scratch buffers
        m = self._spare(p, "exp_avg")                       # m_t: a spare array (the step is staged)
        xp.multiply(state["exp_avg"], beta1, out=m)         # m = β₁ m_{t-1}
        xp.multiply(g, 1.0 - beta1, out=s)                  # s = (1-β₁) g_t
        m += s                                              # m_t = β₁ m_{t-1} + (1-β₁) g_t
        v = self._spare(p, "exp_avg_sq")                    # v_t: a spare array
        xp.multiply(state["exp_avg_sq"], beta2, out=v)      # v = β₂ v_{t-1}
        xp.multiply(g, g, out=s)                            # s = g_t²
        s *= 1.0 - beta2                                    # s = (1-β₂) g_t²
        v += s                                              # v_t = β₂ v_{t-1} + (1-β₂) g_t²
        xp.divide(v, 1.0 - beta2 ** t, out=s)               # s = v̂_t = v_t / (1-β₂ᵗ)
        xp.sqrt(s, out=s)                                   # s = √v̂_t
        s += eps                                            # s = √v̂_t + ε
        xp.divide(m, 1.0 - beta1 ** t, out=s1)              # s1 = m̂_t = m_t / (1-β₁ᵗ)
        s1 /= s                                             # s1 = m̂_t / (√v̂_t + ε)
        wn = self._spare(p, "_data")                        # θ_t: a spare array
        s1 *= lr                                            # s1 = γ_a m̂_t / (√v̂_t + ε)
        if wd != 0:
            xp.multiply(w, 1.0 - lr * wd, out=wn)           # θ = (1 - γ_a λ_a) θ_{t-1}
            wn -= s1                                        # θ_t = θ - γ_a m̂_t / (√v̂_t + ε)
        else:
            xp.subtract(w, s1, out=wn)                      # θ_t = θ_{t-1} - γ_a m̂_t / (√v̂_t + ε)
        self._check_update(p, label, f"adam_lr={lr:g}" + (", or adam_eps=0 divides 0 by 0" if eps == 0 else ""),
                           v, wn)
        return wn, dict(state, step=t, exp_avg=m, exp_avg_sq=v)
