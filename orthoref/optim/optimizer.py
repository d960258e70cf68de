"""The optimizer base class: parameter groups, per-parameter state, ``zero_grad``, state dicts.

It follows ``torch.optim.Optimizer``: ``params`` is an iterable of ``Parameter`` objects or a list of
parameter-group dicts (``{"params": [...], "lr": ...}``) whose missing hyper-parameters take the
constructor's values; ``param_groups`` and ``state`` (keyed by ``Parameter``) are public; ``state_dict``
numbers the parameters ``0, 1, ...`` in group order, as PyTorch does.

Subclasses set ``defaults`` and implement ``_validate_group`` (hyper-parameter checks, raising
``ValueError`` naming the argument), ``_state_keys`` (the state a parameter of a group carries, for
``load_state_dict``) and ``_step_group``. Updates are in place on ``p.data`` with the array module of the
parameter (NumPy or CuPy), in its dtype, through preallocated state and a shared scratch buffer, and
never touch ``p.grad``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from ..backend import get_array_module, to_numpy
from ..nn.module import Parameter

__all__ = ["Optimizer"]


def _check_real(name, value, who):
    """``value`` as a Python float (so that float32 arrays stay float32 under any promotion rules)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{who}: {name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if value != value:
        raise ValueError(f"{who}: {name} is NaN")
    return value


def _check_nonneg(name, value, who):
    value = _check_real(name, value, who)
    if not value >= 0.0:  # also rejects NaN
        raise ValueError(f"{who}: invalid {name} {value!r}, expected {name} >= 0")
    return value


def _check_unit(name, value, who):
    """``0 <= value < 1`` (betas)."""
    value = _check_real(name, value, who)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{who}: invalid {name} {value!r}, expected 0 <= {name} < 1")
    return value


def _check_betas(betas, who):
    """``(beta1, beta2)`` as floats in ``[0, 1)``."""
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise ValueError(f"{who}: betas must be a pair (beta1, beta2), got {betas!r}")
    return _check_unit("betas[0]", betas[0], who), _check_unit("betas[1]", betas[1], who)


def _check_bool(name, value, who):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{who}: {name} must be a bool, got {type(value).__name__}")
    return bool(value)


class Optimizer:
    """Base class of the optimizers (PyTorch's ``torch.optim.Optimizer`` structure).

    Parameters
    ----------
    params : iterable of Parameter, or list of dict
        The parameters to optimize, or parameter groups ``{"params": [...], **hyper_parameters}``.
    defaults : dict
        Hyper-parameters used by groups that do not set them.

    Attributes
    ----------
    param_groups : list of dict
        Each group's ``"params"`` (a list of ``Parameter``) and hyper-parameters.
    state : dict
        Per-parameter state (``Parameter -> dict``), created on the parameter's first step.
    defaults : dict
    """

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        self.state: dict = {}
        self._scratch_bufs: dict = {}
        if isinstance(params, (Parameter, Mapping)) or not isinstance(params, Iterable):
            raise TypeError(f"{type(self).__name__}: params must be an iterable of Parameters or of "
                            f"parameter-group dicts, got {type(params).__name__}")
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__}: params is an empty list; give at least one Parameter")
        if not isinstance(groups[0], Mapping):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # -- groups ------------------------------------------------------------------------------------------
    def add_param_group(self, param_group) -> None:
        """Add a group ``{"params": [...], **hyper_parameters}``; unset hyper-parameters take the defaults.

        Raises ``TypeError``/``ValueError`` for a non-``Parameter`` entry, an empty group, a parameter
        already in another group, an unknown or invalid hyper-parameter.
        """
        who = type(self).__name__
        if not isinstance(param_group, Mapping):
            raise TypeError(f"{who}: a parameter group must be a dict, got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError(f"{who}: a parameter group needs a 'params' entry, got keys {sorted(param_group)}")
        params = param_group["params"]
        if isinstance(params, Parameter):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(f"{who}: params must be an ordered sequence (a set has no stable order)")
        params = list(params)
        if not params:
            raise ValueError(f"{who}: a parameter group has an empty 'params' list")
        for i, p in enumerate(params):
            if not isinstance(p, Parameter):
                raise TypeError(f"{who}: params[{i}] must be a Parameter, got {type(p).__name__}")
        if len({id(p) for p in params}) != len(params):
            raise ValueError(f"{who}: a parameter appears twice in one group")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError(f"{who}: a parameter appears in more than one parameter group")
        unknown = set(param_group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"{who}: unknown hyper-parameter(s) {sorted(unknown)}; "
                             f"expected some of {sorted(self.defaults)}")
        group = {k: param_group.get(k, v) for k, v in self.defaults.items()}
        self._validate_group(group)
        group["params"] = params
        self.param_groups.append(group)

    def _validate_group(self, group: dict) -> None:
        """Check (and normalize to Python scalars, in place) a group's hyper-parameters."""
        raise NotImplementedError

    # -- the step ------------------------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients: to ``None`` (default, as PyTorch) or to zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad[...] = 0

    def step(self, closure=None):
        """One update of every parameter whose ``.grad`` is not ``None``; returns ``closure()`` if given
        (evaluated first, as in PyTorch)."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict) -> None:
        raise NotImplementedError

    def _scratch(self, p, k: int = 0):
        """A scratch array of ``p``'s shape, dtype and device: a view into buffer ``k``, one buffer per
        (array module, dtype, device), grown to the largest parameter and shared by all parameters."""
        data = p.data
        dev = getattr(getattr(data, "device", None), "id", None)  # CuPy device id; None on the host
        key = (k, type(data), data.dtype, dev)
        buf = self._scratch_bufs.get(key)
        n = data.size
        if buf is None or buf.size < n:
            buf = get_array_module(data).empty(n, dtype=data.dtype)
            self._scratch_bufs[key] = buf
        return buf[:n].reshape(data.shape)

    # -- state dicts -------------------------------------------------------------------------------------
    def _state_keys(self, group: dict) -> tuple:
        """The keys of a parameter's state in ``group`` (``"step"`` is an int, the others arrays of the
        parameter's shape or, where the optimizer allows it, ``None``)."""
        raise NotImplementedError

    _NULLABLE_STATE: tuple = ()

    def state_dict(self) -> dict:
        """PyTorch's structure, with host NumPy copies::

            {"state": {index: {"step": int, "exp_avg": ndarray, ...}},
             "param_groups": [{**hyper_parameters, "params": [index, ...]}]}

        Parameters are numbered ``0, 1, ...`` in group order; only parameters that have state (took a
        step) appear in ``"state"``.
        """
        state, groups, index = {}, [], 0
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                st = self.state.get(p)
                if st is not None:
                    state[index] = {k: self._export(v) for k, v in st.items()}
                ids.append(index)
                index += 1
            g = {k: (tuple(v) if isinstance(v, (tuple, list)) else v) for k, v in group.items() if k != "params"}
            g["params"] = ids
            groups.append(g)
        return {"state": state, "param_groups": groups}

    @staticmethod
    def _export(v):
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        return np.array(to_numpy(v), copy=True)

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Load a ``state_dict``: its hyper-parameters replace the groups' and its state becomes the
        parameters' state (copied to each parameter's array module and dtype).

        Everything is checked before anything changes: the number of groups, each group's number of
        parameters, the state's indices, keys and array shapes; a mismatch raises ``ValueError``.
        """
        who = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, Mapping) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError(f"{who}: expected a dict with keys 'state' and 'param_groups', got "
                             f"{sorted(state_dict) if isinstance(state_dict, Mapping) else type(state_dict).__name__}")
        saved_groups = list(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{who}: the state dict has {len(saved_groups)} parameter group(s), "
                             f"this optimizer has {len(self.param_groups)}")
        index_to_param, new_groups = {}, []
        for gi, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            ids = list(saved.get("params", ()))
            if len(ids) != len(group["params"]):
                raise ValueError(f"{who}: parameter group {gi} has {len(ids)} parameter(s) in the state dict, "
                                 f"{len(group['params'])} in this optimizer")
            unknown = set(saved) - set(self.defaults) - {"params"}
            missing = set(self.defaults) - set(saved)
            if unknown or missing:
                raise ValueError(f"{who}: parameter group {gi} has unknown hyper-parameter(s) "
                                 f"{sorted(unknown)} and lacks {sorted(missing)}")
            new = {k: saved[k] for k in self.defaults}
            self._validate_group(new)
            new["params"] = group["params"]
            new_groups.append(new)
            for i, p in zip(ids, group["params"]):
                if i in index_to_param:
                    raise ValueError(f"{who}: parameter index {i} appears twice in 'param_groups'")
                index_to_param[i] = (p, new)
        new_state = {}
        for i, st in dict(state_dict["state"]).items():
            if i not in index_to_param:
                raise ValueError(f"{who}: state for parameter index {i!r}, which no parameter group lists")
            p, group = index_to_param[i]
            want = set(self._state_keys(group))
            if not isinstance(st, Mapping) or set(st) != want:
                got = sorted(st) if isinstance(st, Mapping) else type(st).__name__
                raise ValueError(f"{who}: state of parameter {i} has keys {got}, expected {sorted(want)}")
            xp = get_array_module(p.data)
            entry = {}
            for k in sorted(want):
                v = st[k]
                if k == "step":
                    if isinstance(v, bool) or int(v) != v or int(v) < 0:
                        raise ValueError(f"{who}: state of parameter {i}: step must be a non-negative "
                                         f"integer, got {v!r}")
                    entry[k] = int(v)
                elif v is None and k in self._NULLABLE_STATE:
                    entry[k] = None
                else:
                    if v is None or tuple(np.shape(v)) != tuple(p.shape):
                        raise ValueError(f"{who}: state of parameter {i}: {k} has shape "
                                         f"{None if v is None else tuple(np.shape(v))}, expected {tuple(p.shape)}")
                    entry[k] = xp.array(v, dtype=p.dtype, copy=True)
            new_state[p] = entry
        for group, new in zip(self.param_groups, new_groups):
            group.clear()
            group.update(new)
        self.state = new_state

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in group.items() if k != "params"]
        return "\n".join(lines) + "\n)"
