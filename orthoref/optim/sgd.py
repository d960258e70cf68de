"""Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay (PyTorch's SGD)."""
from __future__ import annotations

from .._checks import check_bool, check_real
from ..backend import get_array_module
from .optimizer import Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    r"""Stochastic gradient descent, with PyTorch's exact update (``torch.optim.SGD``, PyTorch 2.x).

    For each parameter :math:`\theta` with gradient :math:`g_t` (parameters whose ``.grad`` is ``None``
    are skipped), with learning rate :math:`\gamma`, weight decay :math:`\lambda`, momentum :math:`\mu`
    and dampening :math:`\tau`:

    .. math::

        d_t &= \pm g_t + \lambda\,\theta_{t-1}
              \qquad (-g_t \text{ when } \texttt{maximize}) \\
        b_t &= \begin{cases} d_t & t = 1 \\ \mu\, b_{t-1} + (1-\tau)\, d_t & t > 1 \end{cases} \\
        d_t &\leftarrow \begin{cases} d_t + \mu\, b_t & \texttt{nesterov} \\ b_t & \text{otherwise}
              \end{cases} \qquad (\text{only when } \mu \ne 0) \\
        \theta_t &= \theta_{t-1} - \gamma\, d_t

    The momentum buffer starts as the first :math:`d_t` itself (no dampening on the first step) and the
    weight decay is L2 (added to the gradient), both as in PyTorch.

    Parameters
    ----------
    params : iterable of Parameter, or list of dict
        Parameters, or parameter groups ``{"params": [...], "lr": ...}`` overriding the defaults below.
    lr : float, default 1e-3
        Learning rate :math:`\gamma \ge 0`, finite (PyTorch 2.x's default).
    momentum : float, default 0
        :math:`\mu \ge 0`, finite.
    dampening : float, default 0
        :math:`0 \le \tau \le 1` (PyTorch does not restrict it; outside ``[0, 1]`` the buffer would
        amplify or reverse the gradient).
    weight_decay : float, default 0
        :math:`\lambda \ge 0`, finite.
    nesterov : bool, default False
        Nesterov momentum; requires ``momentum > 0`` and ``dampening == 0`` (PyTorch's rule).
    maximize : bool, default False
        Maximize the objective (ascend the gradient).

    Notes
    -----
    The positional order of the arguments is PyTorch's (``lr, momentum, dampening, weight_decay,
    nesterov``); ``maximize`` is keyword-only, as there.

    State per parameter: ``"momentum_buffer"`` (an array like the parameter), created on the first step
    with a gradient and only when ``momentum != 0``, as in PyTorch (plain SGD keeps no state).
    ``p.data`` is updated in place in its own dtype and array module; ``p.grad`` is never modified.

    Raises: the constructor, ``TypeError``/``ValueError`` naming a hyper-parameter out of its range (NaN and
    Inf included); :meth:`step`, as :meth:`Optimizer.step`: a bad ``.grad`` or a read-only parameter
    before anything is written (nothing has changed); an update that overflows the dtype from finite
    gradients (``lr`` far too large), ``NonFiniteError`` naming the parameter, raised *after* its in-place
    update: that parameter, its momentum buffer and the parameters before it in group order have been
    updated (restore them from a ``state_dict``/checkpoint). The checks cost one reduction per parameter
    (its ``.grad``, before anything is written) and none after (NumPy's floating-point flags), no copy.
    """

    _NULLABLE_STATE = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 maximize=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                        weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def _validate_group(self, group):
        who = self._who
        group["lr"] = check_real(who, "lr", group["lr"], 0.0)
        group["momentum"] = check_real(who, "momentum", group["momentum"], 0.0)
        group["dampening"] = check_real(who, "dampening", group["dampening"], 0.0, 1.0)
        group["weight_decay"] = check_real(who, "weight_decay", group["weight_decay"], 0.0)
        group["nesterov"] = check_bool(who, "nesterov", group["nesterov"])
        group["maximize"] = check_bool(who, "maximize", group["maximize"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"{who}: Nesterov momentum requires a momentum and zero dampening "
                             f"(nesterov=True, momentum={group['momentum']}, dampening={group['dampening']})")

    def _state_keys(self, group, p):
        return ("momentum_buffer",)

    def _hyper(self, group):
        return (float(group["lr"]), float(group["momentum"]), float(group["dampening"]),
                float(group["weight_decay"]), bool(group["nesterov"]), -1.0 if group["maximize"] else 1.0)

    def _update(self, hyper, p):
        """The in-place step of ``p`` (the formula in the class docstring)."""
        lr, mu, damp, wd, nesterov, sign = hyper
        g = p.grad
        xp = get_array_module(p.data)
        w = p.data
        s = self._scratch(p)                                # s: the shared scratch buffer
        # d_t = ±g_t + λ θ_{t-1}: materialized in s only when weight decay is on; otherwise d_t is
        # (dsign, g) and the sign goes into the scalars, so that .grad is never written.
        if wd != 0:
            xp.multiply(w, wd, out=s)                       # s = λ θ_{t-1}
            if sign > 0:
                s += g                                      # d_t = g_t + λ θ_{t-1}
            else:
                s -= g                                      # d_t = -g_t + λ θ_{t-1}
            d, dsign = s, 1.0
        else:
            d, dsign = g, sign                              # d_t = ±g_t
        if mu != 0:
            state = self.state.get(p)
            if state is None:
                state = self.state[p] = {"momentum_buffer": None}
            buf = state["momentum_buffer"]
            if buf is None:                                 # t = 1: no dampening
                buf = xp.empty_like(w)
                if dsign > 0:
                    xp.copyto(buf, d)                       # b_1 = d_1
                else:
                    xp.negative(d, out=buf)                 # b_1 = d_1 = -g_1
                state["momentum_buffer"] = buf
            else:
                buf *= mu                                   # b = μ b_{t-1}
                c = (1.0 - damp) * dsign                    # (1-τ), times d_t's sign when d is g
                if d is s and c == 1.0:
                    buf += s                                # b_t = μ b_{t-1} + d_t
                elif d is s:
                    s2 = self._scratch(p, 1) if nesterov else s     # nesterov reads d_t in s below
                    xp.multiply(s, c, out=s2)               # s2 = (1-τ) d_t
                    buf += s2                               # b_t = μ b_{t-1} + (1-τ) d_t
                else:
                    xp.multiply(g, c, out=s)                # s = (1-τ) d_t
                    buf += s                                # b_t = μ b_{t-1} + (1-τ) d_t
            if nesterov:
                if d is s:
                    s2 = self._scratch(p, 1)
                    xp.multiply(buf, mu, out=s2)            # s2 = μ b_t
                    s += s2                                 # d_t ← d_t + μ b_t
                else:
                    xp.multiply(buf, mu, out=s)             # s = μ b_t
                    if dsign > 0:
                        s += g                              # d_t ← g_t + μ b_t
                    else:
                        s -= g                              # d_t ← -g_t + μ b_t
                s *= lr                                     # s = γ d_t
                w -= s                                      # θ_t = θ_{t-1} - γ d_t
            else:
                xp.multiply(buf, lr, out=s)                 # s = γ d_t, d_t ← b_t
                w -= s                                      # θ_t = θ_{t-1} - γ b_t
        elif d is s:
            s *= lr                                         # s = γ d_t
            w -= s                                          # θ_t = θ_{t-1} - γ d_t
        else:
            xp.multiply(g, lr * dsign, out=s)               # s = γ d_t = ±γ g_t
            w -= s                                          # θ_t = θ_{t-1} - γ d_t
