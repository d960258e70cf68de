"""Adam, AMSGrad and AdamW (PyTorch's update formulas)."""
from __future__ import annotations

from .._checks import check_bool, check_real
from ..backend import get_array_module
from .optimizer import Optimizer, check_betas

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    r"""Adam (Kingma & Ba, 2015) with PyTorch's exact update (``torch.optim.Adam``, PyTorch 2.x).

    For each parameter :math:`\theta` with gradient :math:`g_t` (parameters whose ``.grad`` is ``None``
    are skipped), with learning rate :math:`\gamma`, betas :math:`(\beta_1, \beta_2)`, weight decay
    :math:`\lambda` and step count :math:`t = 1, 2, \dots` (per parameter):

    .. math::

        d_t &= \pm g_t \qquad (-g_t \text{ when } \texttt{maximize}) \\
        d_t &\leftarrow d_t + \lambda\,\theta_{t-1}
            \qquad \text{(L2 decay: Adam)} \quad\text{or}\quad
            \theta_{t-1} \leftarrow (1 - \gamma\lambda)\,\theta_{t-1}
            \qquad \text{(decoupled decay: AdamW)} \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, d_t \\
        v_t &= \beta_2 v_{t-1} + (1-\beta_2)\, d_t^2 \\
        \hat v_t &= \max(\hat v_{t-1}, v_t) \ \text{(amsgrad)}, \qquad \hat v_t = v_t \ \text{(otherwise)} \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1-\beta_1^t}\,
            \frac{m_t}{\sqrt{\hat v_t}\,/\sqrt{1-\beta_2^t} + \epsilon}

    with :math:`m_0 = v_0 = \hat v_0 = 0`. This is PyTorch's arrangement: the bias corrections
    :math:`1-\beta_1^t` and :math:`\sqrt{1-\beta_2^t}` are computed in double precision on the host,
    :math:`\epsilon` is added *after* the second-moment correction, and the maximum of AMSGrad is kept
    over the uncorrected :math:`v_t` (``max_exp_avg_sq``).

    Parameters
    ----------
    params : iterable of Parameter, or list of dict
        Parameters, or parameter groups ``{"params": [...], "lr": ...}`` overriding the defaults below.
    lr : float, default 1e-3
        :math:`\gamma \ge 0`, finite.
    betas : (float, float), default (0.9, 0.999)
        :math:`0 \le \beta_1, \beta_2 < 1`.
    eps : float, default 1e-8
        :math:`\epsilon \ge 0`, finite (PyTorch's range; with 0, a gradient entry that is 0 on the first
        step gives 0/0, which :meth:`step` refuses with ``NonFiniteError``).
    weight_decay : float, default 0
        :math:`\lambda \ge 0`, finite; L2 (added to the gradient) unless ``decoupled_weight_decay``.
    amsgrad : bool, default False
        Use the running maximum of :math:`v_t` (Reddi et al., 2018).
    maximize : bool, default False
        Maximize the objective.
    decoupled_weight_decay : bool, default False
        Decay the weights directly (AdamW); PyTorch's flag of the same name.

    Notes
    -----
    State per parameter: ``"step"`` (int), ``"exp_avg"`` (:math:`m`), ``"exp_avg_sq"`` (:math:`v`) and,
    with ``amsgrad``, ``"max_exp_avg_sq"`` (:math:`\hat v`), as in PyTorch. The positional order of the
    arguments is PyTorch's; ``maximize`` and ``decoupled_weight_decay`` are keyword-only, as there.

    The last line is evaluated as the same quantity with numerator and denominator multiplied by
    :math:`\sqrt{1-\beta_2^t}`,

    .. math::

        \theta_t = \theta_{t-1} - \frac{\gamma\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,
            \frac{m_t}{\sqrt{\hat v_t} + \epsilon\sqrt{1-\beta_2^t}},

    which saves one division pass; the results differ from PyTorch's by rounding only (a few ulps).

    The step runs in place with the parameter's array module (NumPy or CuPy) and dtype: float32 stays
    float32 (the scalars are Python floats). It makes twelve passes over each parameter with ``out=``
    ufuncs and one scratch buffer shared by all parameters, and never writes ``p.grad``.

    Raises: the constructor, ``TypeError``/``ValueError`` naming a hyper-parameter out of its range (NaN and
    Inf included); :meth:`step`, as :meth:`Optimizer.step`: a bad ``.grad`` (NaN/Inf included) or a
    read-only parameter before anything is written (nothing has changed: one reduction per gradient); a
    step that overflows the dtype from finite gradients (:math:`d^2` or ``lr`` far too large, or 0/0 with
    ``eps = 0``), ``NonFiniteError`` naming the parameter, raised by the first ufunc that overflows (NumPy's
    floating-point flags, no reduction; see :meth:`Optimizer._update_in_place`): that parameter, its state
    and the parameters before it in group order have been (partly) updated -- restore them from a
    ``state_dict``/checkpoint.
    """

    _name = "Adam"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, *,
                 maximize=False, decoupled_weight_decay=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _validate_group(self, group):
        who = self._name
        group["lr"] = check_real(who, "lr", group["lr"], 0.0)
        group["betas"] = check_betas(group["betas"], who)
        group["eps"] = check_real(who, "eps", group["eps"], 0.0)
        group["weight_decay"] = check_real(who, "weight_decay", group["weight_decay"], 0.0)
        group["amsgrad"] = check_bool(who, "amsgrad", group["amsgrad"])
        group["maximize"] = check_bool(who, "maximize", group["maximize"])
        group["decoupled_weight_decay"] = check_bool(who, "decoupled_weight_decay",
                                                     group["decoupled_weight_decay"])

    def _state_keys(self, group, p):
        keys = ("step", "exp_avg", "exp_avg_sq")
        return keys + ("max_exp_avg_sq",) if group["amsgrad"] else keys

    def _hint(self, group):
        return ("lr", float(group["lr"]), ", or eps=0 divides 0 by 0" if float(group["eps"]) == 0 else "")

    def _hyper(self, group):
        beta1, beta2 = group["betas"]
        return (float(group["lr"]), float(beta1), float(beta2), float(group["eps"]), float(group["weight_decay"]),
                bool(group["amsgrad"]), bool(group["decoupled_weight_decay"]), -1.0 if group["maximize"] else 1.0)

    def _update(self, hyper, p):
        """The in-place step of ``p`` (the formula in the class docstring)."""
        lr, beta1, beta2, eps, wd, amsgrad, decoupled, sign = hyper
        g = p.grad
        w = p.data
        xp = get_array_module(w)
        state = self.state.get(p)
        if state is None:                                   # m_0 = v_0 = v̂_0 = 0
            state = self.state[p] = {"step": 0, "exp_avg": xp.zeros_like(w), "exp_avg_sq": xp.zeros_like(w)}
            if amsgrad:
                state["max_exp_avg_sq"] = xp.zeros_like(w)
        state["step"] = t = state["step"] + 1               # t ← t + 1
        m, v = state["exp_avg"], state["exp_avg_sq"]        # m_{t-1}, v_{t-1}: updated in place below
        s = self._scratch(p)                                # s: the shared scratch buffer

        # d_t = ±g_t (+ λ θ_{t-1}): materialized (in a second scratch) only for L2 decay; otherwise d_t is
        # (dsign, g) and the sign goes into the scalars, so that .grad is never written.
        d, dsign = g, sign                                  # d_t = ±g_t
        if wd != 0:
            if decoupled:
                w *= 1.0 - lr * wd                          # θ_{t-1} ← (1 - γλ) θ_{t-1}      (AdamW)
            else:
                d, dsign = self._scratch(p, 1), 1.0         # d: a second scratch buffer
                xp.multiply(w, wd, out=d)                   # d = λ θ_{t-1}                    (Adam: L2)
                if sign > 0:
                    d += g                                  # d_t = g_t + λ θ_{t-1}
                else:
                    d -= g                                  # d_t = -g_t + λ θ_{t-1}

        m *= beta1                                          # m = β₁ m_{t-1}
        xp.multiply(d, (1.0 - beta1) * dsign, out=s)        # s = (1-β₁) d_t
        m += s                                              # m_t = β₁ m_{t-1} + (1-β₁) d_t
        v *= beta2                                          # v = β₂ v_{t-1}
        xp.multiply(d, d, out=s)                            # s = d_t²
        s *= 1.0 - beta2                                    # s = (1-β₂) d_t²
        v += s                                              # v_t = β₂ v_{t-1} + (1-β₂) d_t²
        if amsgrad:
            vmax = state["max_exp_avg_sq"]
            xp.maximum(vmax, v, out=vmax)                   # v̂_t = max(v̂_{t-1}, v_t)
            v = vmax                                        # (else v̂_t = v_t)

        # PyTorch: θ_t = θ_{t-1} - γ/c₁ · m_t / (√v̂_t / √c₂ + ε), c = 1 - βᵗ on the host in double
        # precision; numerator and denominator multiplied by √c₂ (one division pass fewer, see Notes).
        bias_correction1 = 1.0 - beta1 ** t                 # c₁ = 1 - β₁ᵗ
        bias_correction2 = 1.0 - beta2 ** t                 # c₂ = 1 - β₂ᵗ
        step_size = lr / bias_correction1                   # γ / c₁
        bias_correction2_sqrt = bias_correction2 ** 0.5     # √c₂
        xp.sqrt(v, out=s)                                   # s = √v̂_t
        s += eps * bias_correction2_sqrt                    # s = √v̂_t + ε√c₂
        xp.divide(m, s, out=s)                              # s = m_t / (√v̂_t + ε√c₂)
        s *= step_size * bias_correction2_sqrt              # s = (γ√c₂ / c₁) · m_t / (√v̂_t + ε√c₂)
        w -= s                                              # θ_t = θ_{t-1} - s


class AdamW(Adam):
    r"""AdamW (Loshchilov & Hutter, 2019): Adam with decoupled weight decay, PyTorch's exact update
    (``torch.optim.AdamW``, PyTorch 2.x).

    Before the Adam step (see :class:`Adam`, with :math:`d_t = \pm g_t`, no L2 term) the weights decay
    directly:

    .. math::

        \theta_{t-1} &\leftarrow (1 - \gamma\lambda)\,\theta_{t-1} \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, d_t, \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2)\, d_t^2 \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1-\beta_1^t}\,
            \frac{m_t}{\sqrt{\hat v_t}\,/\sqrt{1-\beta_2^t} + \epsilon}

    with :math:`\hat v_t = \max(\hat v_{t-1}, v_t)` under ``amsgrad`` and :math:`v_t` otherwise.

    Parameters
    ----------
    params : iterable of Parameter, or list of dict
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 1e-2
        :math:`\lambda \ge 0` (PyTorch's AdamW default).
    amsgrad : bool, default False
    maximize : bool, default False

    Notes
    -----
    Same state and state dict as :class:`Adam` (groups carry ``decoupled_weight_decay=True``).
    """

    _name = "AdamW"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)
