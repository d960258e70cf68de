r"""Orthogonal gradient descent for continual learning (Farajtabar, Azizan, Mott & Li, AISTATS 2020,
arXiv:1910.07104, "Orthogonal Gradient Descent for Continual Learning")."""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from .optimizer import Optimizer, _check_nonneg

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
        :math:`\gamma \ge 0`.
    memory : int, default 100
        The most directions kept. When adding more, the **oldest are dropped first** (FIFO): the
        remaining rows stay orthonormal, and the most recent tasks are protected.
    drop_tol : float, keyword-only, default 1e-10
        A direction whose residual after Gram–Schmidt has norm ``<= drop_tol · ‖direction‖`` (or is zero)
        lies in the span already and is dropped.

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
    """

    _name = "OGD"

    def __init__(self, params, lr, memory=100, *, drop_tol=1e-10):
        if isinstance(memory, (bool, np.bool_)) or not isinstance(memory, (int, np.integer)) or memory < 0:
            raise ValueError(f"OGD: memory must be an int >= 0, got {memory!r}")
        self.memory = int(memory)
        self.drop_tol = _check_nonneg("drop_tol", drop_tol, "OGD")
        defaults = dict(lr=lr)
        self._validate_group(dict(defaults))
        super().__init__(params, defaults)
        p0 = self.param_groups[0]["params"][0].data
        self._xp = get_array_module(p0)
        self._dtype = p0.dtype
        self.basis = self._xp.zeros((0, self.numel), dtype=self._dtype)

    def _validate_group(self, group):
        group["lr"] = _check_nonneg("lr", group["lr"], self._name)

    def _state_keys(self, group):
        return ()

    @property
    def params(self):
        return [p for g in self.param_groups for p in g["params"]]

    @property
    def numel(self):
        return int(sum(p.data.size for p in self.params))

    # -- directions --------------------------------------------------------------------------------------
    def flat_grad(self):
        """The concatenated gradients (zeros where ``.grad`` is ``None``), a new ``(N,)`` array."""
        xp = self._xp
        return xp.concatenate([(xp.zeros(p.data.size, dtype=self._dtype) if p.grad is None
                                else xp.asarray(p.grad, dtype=self._dtype).reshape(-1)) for p in self.params])

    def _flatten(self, d, i):
        xp = self._xp
        N = self.numel
        if hasattr(d, "shape") and not isinstance(d, (list, tuple)):
            if d.ndim == 1 and d.shape[0] == N:
                return xp.asarray(d, dtype=self._dtype).copy()
            raise ValueError(f"OGD.store_directions: directions[{i}] must be a flat vector of length {N} or a "
                             f"sequence of arrays shaped like the parameters, got an array of shape {d.shape}")
        params = self.params
        d = list(d)
        if len(d) != len(params):
            raise ValueError(f"OGD.store_directions: directions[{i}] has {len(d)} arrays, expected one per "
                             f"parameter ({len(params)})")
        for j, (a, p) in enumerate(zip(d, params)):
            if tuple(np.shape(a)) != tuple(p.shape):
                raise ValueError(f"OGD.store_directions: directions[{i}][{j}] has shape {tuple(np.shape(a))}, "
                                 f"expected {tuple(p.shape)}")
        return xp.concatenate([xp.asarray(a, dtype=self._dtype).reshape(-1) for a in d])

    def store_directions(self, directions) -> int:
        """Add directions to the basis (Gram–Schmidt twice, drop near-dependent ones, FIFO cap at
        ``memory``). Each direction is a flat ``(N,)`` array or a sequence of parameter-shaped arrays.
        Returns the number of directions added."""
        xp = self._xp
        added = 0
        for i, d in enumerate(directions):
            v = self._flatten(d, i)
            norm0 = float(xp.linalg.norm(v))
            if not np.isfinite(norm0):
                raise ValueError(f"OGD.store_directions: directions[{i}] is not finite")
            if norm0 == 0.0 or self.memory == 0:
                continue
            for _ in range(2):
                v = v - self.basis.T @ (self.basis @ v)
            norm = float(xp.linalg.norm(v))
            if norm <= self.drop_tol * norm0:
                continue
            self.basis = xp.concatenate([self.basis, (v / norm)[None, :]], axis=0)
            if self.basis.shape[0] > self.memory:
                self.basis = self.basis[self.basis.shape[0] - self.memory:].copy()
            added += 1
        return added

    def end_task(self, gradients) -> int:
        """Alias of :meth:`store_directions` (call it at the end of a task with the gradients to protect)."""
        return self.store_directions(gradients)

    # -- the step ------------------------------------------------------------------------------------------
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        g = self.flat_grad()
        if self.basis.shape[0]:
            g = g - self.basis.T @ (self.basis @ g)
        off = 0
        for group in self.param_groups:
            lr = group["lr"]
            for p in group["params"]:
                n = p.data.size
                if p.grad is not None:
                    p.data -= (lr * g[off:off + n]).reshape(p.shape).astype(p.dtype, copy=False)
                off += n
        return loss

    def _step_group(self, group):  # pragma: no cover - step() is overridden (the projection is global)
        raise NotImplementedError

    # -- state dicts -------------------------------------------------------------------------------------
    def state_dict(self):
        sd = super().state_dict()
        sd["basis"] = self._export(self.basis)
        return sd

    def load_state_dict(self, state_dict):
        sd = dict(state_dict)
        basis = sd.pop("basis", None)
        if basis is None or np.ndim(basis) != 2 or np.shape(basis)[1] != self.numel:
            raise ValueError(f"OGD.load_state_dict: 'basis' must be an array (k, {self.numel}), got "
                             f"{None if basis is None else np.shape(basis)}")
        if np.shape(basis)[0] > self.memory:
            raise ValueError(f"OGD.load_state_dict: 'basis' has {np.shape(basis)[0]} rows > memory {self.memory}")
        super().load_state_dict(sd)
        self.basis = self._xp.array(basis, dtype=self._dtype, copy=True)
