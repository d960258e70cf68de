r"""Orthogonal gradient descent for continual learning (Farajtabar, Azizan, Mott & Li, AISTATS 2020,
arXiv:1910.07104, "Orthogonal Gradient Descent for Continual Learning")."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .._checks import NonFiniteError, check_finite, check_float, check_int, check_real
from ..backend import get_array_module
from .optimizer import Optimizer

__all__ = ["OGD"]


class OGD(Optimizer):
    r"""SGD whose gradient is projected off the span of directions stored from earlier tasks.

    All parameters (over all groups, in group order) are flattened into one vector of length ``N``. The
    optimizer keeps ``basis``, a ``(k, N)`` array with orthonormal rows :math:`u_1, \dots, u_k`
    (``k <= memory``). A step computes, with :math:`g` the concatenated gradients (a parameter whose
    ``.grad`` is ``None`` contributes zeros and is not updated),

    .. math::

        \tilde g = g - \sum_i \langle g, u_i\rangle u_i, \qquad \theta \leftarrow \theta - \gamma\,\tilde g

    (each group with its own :math:`\gamma`), so the update is orthogonal to every stored direction.

    Parameters
    ----------
    params : iterable of Parameter, or list of dict
    lr : float
        :math:`\gamma \ge 0`, finite.
    memory : int, default 100
        The most directions kept, an int ``>= 0``. When adding more, the **oldest are dropped first** (FIFO): the
        remaining rows stay orthonormal, and the most recent tasks are protected.
    drop_tol : float, keyword-only, default 1e-10
        A direction whose residual after Gram–Schmidt has norm ``<= drop_tol · ‖direction‖`` (or is zero)
        lies in the span already and is dropped; ``0 <= drop_tol < 1``.

    Notes
    -----
    ``store_directions(directions)`` (alias ``end_task(gradients)``) adds directions at the end of a task:
    the paper stores the gradients of the model's logits (OGD-GTL: the ground-truth logit) at training
    examples of the finished task; which gradients to store is the caller's choice. Each direction is
    orthogonalized against the basis by classical Gram–Schmidt applied **twice** ("twice is enough",
    Kahan/Parlett), then normalized. Directions are computed and stored in the dtype of the first
    parameter. ``flat_grad()`` returns the current concatenated gradient (a copy), convenient for
    ``store_directions([opt.flat_grad()])``.

    ``p.grad`` is never modified. The state dict carries ``"basis"`` (a host array ``(k, N)``) besides
    PyTorch's structure; OGD keeps no per-parameter state.

    Raises: the constructor, ``TypeError``/``ValueError`` for a bad ``lr``, ``memory`` or ``drop_tol``
    (and what :class:`Optimizer` refuses in ``params``); :meth:`step`, as :meth:`Optimizer.step` (nothing
    changes when it raises); :meth:`store_directions`, ``TypeError``/``ValueError`` for a direction that is
    not a float32/float64 array of the right length or shapes, ``NonFiniteError`` for NaN/Inf (the basis is
    unchanged then); :meth:`load_state_dict`, ``ValueError``/``TypeError`` for a ``basis`` that is not a
    finite ``(k, N)`` float array with orthonormal rows and ``k <= memory``.
    """

    _name = "OGD"

    def __init__(self, params, lr, memory=100, *, drop_tol=1e-10):
        self.memory = check_int("OGD", "memory", memory, 0)
        self.drop_tol = check_real("OGD", "drop_tol", drop_tol, 0.0, 1.0, hi_open=True)
        defaults = dict(lr=lr)
        super().__init__(params, defaults)
        p0 = self.param_groups[0]["params"][0].data
        self._xp = get_array_module(p0)
        self._dtype = p0.dtype
        self.basis = self._xp.zeros((0, self.numel), dtype=self._dtype)

    def _validate_group(self, group):
        group["lr"] = check_real(self._name, "lr", group["lr"], 0.0)

    def _state_keys(self, group, p):
        return ()

    @property
    def params(self):
        return [p for g in self.param_groups for p in g["params"]]

    @property
    def numel(self):
        return int(sum(p.data.size for p in self.params))

    # -- directions --------------------------------------------------------------------------------------
    def flat_grad(self):
        """The concatenated gradients (zeros where ``.grad`` is ``None``), a new ``(N,)`` array. Each
        ``.grad`` is checked as :meth:`step` checks it (shape, dtype; not finiteness)."""
        self._checked_work(finite=False)
        xp = self._xp
        return xp.concatenate([(xp.zeros(p.data.size, dtype=self._dtype) if p.grad is None
                                else xp.asarray(p.grad, dtype=self._dtype).reshape(-1)) for p in self.params])

    def _flatten(self, d, i):
        who = "OGD.store_directions"
        xp = self._xp
        N = self.numel
        if hasattr(d, "shape") and not isinstance(d, (list, tuple)):
            check_float(who, f"directions[{i}]", d)
            if d.ndim == 1 and d.shape[0] == N:
                check_finite(who, f"directions[{i}]", d)
                return xp.asarray(d, dtype=self._dtype).copy()
            raise ValueError(f"{who}: directions[{i}] must be a flat vector of length {N} or a "
                             f"sequence of arrays shaped like the parameters, got an array of shape {d.shape}")
        params = self.params
        if isinstance(d, (str, bytes)) or not hasattr(d, "__iter__"):
            raise TypeError(f"{who}: directions[{i}] must be a flat array of length {N} or a sequence of "
                            f"parameter-shaped arrays, got {type(d).__name__}")
        d = list(d)
        if len(d) != len(params):
            raise ValueError(f"{who}: directions[{i}] has {len(d)} arrays, expected one per "
                             f"parameter ({len(params)})")
        for j, (a, p) in enumerate(zip(d, params)):
            check_float(who, f"directions[{i}][{j}]", a)
            if tuple(a.shape) != tuple(p.shape):
                raise ValueError(f"{who}: directions[{i}][{j}] has shape {tuple(a.shape)}, "
                                 f"expected {tuple(p.shape)}")
            check_finite(who, f"directions[{i}][{j}]", a)
        return xp.concatenate([xp.asarray(a, dtype=self._dtype).reshape(-1) for a in d])

    def store_directions(self, directions) -> int:
        """Add directions to the basis (Gram–Schmidt twice, drop near-dependent ones, FIFO cap at
        ``memory``). Each direction is a flat ``(N,)`` array or a sequence of parameter-shaped arrays.
        Returns the number of directions added."""
        who = "OGD.store_directions"
        if isinstance(directions, (str, bytes)) or not hasattr(directions, "__iter__"):
            raise TypeError(f"{who}: directions must be a sequence of directions, got {type(directions).__name__}")
        xp = self._xp
        vs = [self._flatten(d, i) for i, d in enumerate(directions)]     # all checked before any is added
        basis, added = self.basis, 0
        for i, v in enumerate(vs):
            with np.errstate(over="ignore", invalid="ignore"):
                norm0 = float(xp.linalg.norm(v))
            if not np.isfinite(norm0):
                raise NonFiniteError(f"{who}: the norm of directions[{i}] overflows {np.dtype(self._dtype).name}; "
                                     f"rescale it (only its direction matters)")
            if norm0 == 0.0 or self.memory == 0:
                continue
            for _ in range(2):
                v = v - basis.T @ (basis @ v)
            norm = float(xp.linalg.norm(v))
            if norm <= self.drop_tol * norm0:
                continue
            basis = xp.concatenate([basis, (v / norm)[None, :]], axis=0)
            if basis.shape[0] > self.memory:
                basis = basis[basis.shape[0] - self.memory:].copy()
            added += 1
        self.basis = basis
        return added

    def end_task(self, gradients) -> int:
        """Alias of :meth:`store_directions` (call it at the end of a task with the gradients to protect)."""
        return self.store_directions(gradients)

    # -- the step ------------------------------------------------------------------------------------------
    def step(self, closure=None):
        """The projected SGD step (see the class); raises as :meth:`Optimizer.step`, and then nothing has
        changed."""
        if closure is not None and not callable(closure):
            raise TypeError(f"OGD.step: closure must be callable or None, got {type(closure).__name__}")
        loss = closure() if closure is not None else None
        work = {id(p): label for _, p, label in self._checked_work()}
        g = self.flat_grad()                                # g: the concatenated gradients
        if self.basis.shape[0]:
            g = g - self.basis.T @ (self.basis @ g)         # g̃ = g - Σ_i ⟨g, u_i⟩ u_i  (u_i: rows of basis)
        off, staged = 0, []
        with np.errstate(over="ignore", invalid="ignore"):                     # checked, not warned
            for group in self.param_groups:
                lr = group["lr"]
                for p in group["params"]:
                    n = p.data.size
                    if p.grad is not None:                  # θ ← θ - γ g̃ (this parameter's slice of g̃)
                        new = p.data - (lr * g[off:off + n]).reshape(p.shape).astype(p.dtype, copy=False)
                        self._check_update(p, work[id(p)], f"lr={lr:g}", new)
                        staged.append((p, new))
                    off += n
        for p, new in staged:
            self._commit(p, new, None)
        return loss

    def _step_group(self, group):  # pragma: no cover - step() is overridden (the projection is global)
        raise NotImplementedError

    # -- state dicts -------------------------------------------------------------------------------------
    def state_dict(self):
        sd = super().state_dict()
        sd["basis"] = self._export(self.basis)
        return sd

    def load_state_dict(self, state_dict):
        """As :meth:`Optimizer.load_state_dict`, plus ``"basis"``: a finite float32/float64 array
        ``(k, N)`` with orthonormal rows and ``k <= memory``. Nothing changes when it raises."""
        who = "OGD.load_state_dict"
        if not isinstance(state_dict, Mapping):
            raise ValueError(f"{who}: expected a dict with keys 'state', 'param_groups' and 'basis', got "
                             f"{type(state_dict).__name__}")
        sd = dict(state_dict)
        basis = sd.pop("basis", None)
        if basis is None:
            raise ValueError(f"{who}: 'basis' must be an array (k, {self.numel}), got None")
        check_float(who, "basis", basis)
        if basis.ndim != 2 or basis.shape[1] != self.numel:
            raise ValueError(f"{who}: 'basis' must be an array (k, {self.numel}), got {tuple(basis.shape)}")
        if basis.shape[0] > self.memory:
            raise ValueError(f"{who}: 'basis' has {basis.shape[0]} rows > memory {self.memory}")
        check_finite(who, "basis", basis)
        B = self._xp.array(basis, dtype=self._dtype, copy=True)
        k = B.shape[0]
        if k:
            tol = max(1e-10, 1e3 * float(np.finfo(self._dtype).eps) * (k ** 0.5))
            err = float(self._xp.linalg.norm(B @ B.T - self._xp.eye(k, dtype=self._dtype)))
            if not err <= tol:
                raise ValueError(f"{who}: 'basis' must have orthonormal rows, got ‖B Bᵀ - I‖_F = {err:.3e} > "
                                 f"{tol:.1e}")
        super().load_state_dict(sd)
        self.basis = B
