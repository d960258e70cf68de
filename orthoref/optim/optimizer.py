"""The optimizer base class: parameter groups, per-parameter state, ``zero_grad``, state dicts.

It follows ``torch.optim.Optimizer``: ``params`` is an iterable of ``Parameter`` objects or a list of
parameter-group dicts (``{"params": [...], "lr": ...}``) whose missing hyper-parameters take the
constructor's values; ``param_groups`` and ``state`` (keyed by ``Parameter``) are public; ``state_dict``
numbers the parameters ``0, 1, ...`` in group order, as PyTorch does.

Subclasses set ``defaults`` and implement ``_validate_group`` (hyper-parameter checks, raising
``ValueError`` naming the argument), ``_state_keys(group, p)`` (the state a parameter carries, for
``load_state_dict``) and ``_step_group``. Updates are in place on ``p.data`` with the array module of the
parameter (NumPy or CuPy), in its dtype, through preallocated state and a shared scratch buffer, and
never touch ``p.grad``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from .._checks import FLOAT_DTYPES, NonFiniteError, all_finite, check_bool, check_cotangent, check_finite, \
    check_float, check_int, check_real
from ..backend import get_array_module, to_numpy
from ..nn.module import Parameter

__all__ = ["Optimizer"]

_FLOATS = FLOAT_DTYPES


def check_betas(betas, who, name="betas"):
    """``(beta1, beta2)`` as floats in ``[0, 1)`` (:func:`~orthoref._checks.check_real` on each)."""
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise ValueError(f"{who}: {name} must be a pair (beta1, beta2), got {betas!r}")
    return (check_real(who, f"{name}[0]", betas[0], 0.0, 1.0, hi_open=True),
            check_real(who, f"{name}[1]", betas[1], 0.0, 1.0, hi_open=True))


def _writeable(a) -> bool:
    """NumPy's ``flags.writeable`` (CuPy arrays have no such flag and are always writeable)."""
    return bool(getattr(getattr(a, "flags", None), "writeable", True))


def _check_grad(who, name, g, shape, dtype, xp, *, finite=True):
    """A parameter's ``.grad``: :func:`~orthoref._checks.check_cotangent` (a float32/float64 array of exactly
    the parameter's shape and dtype, finite unless ``finite=False``), on the parameter's array module."""
    check_cotangent(who, name, g, shape, dtype, finite=finite, of="the parameter's")
    if get_array_module(g) is not xp:
        module = getattr(xp, "__name__", "numpy")
        raise TypeError(f"{who}: {name} must be an array of the parameter's module ({module}), got "
                        f"{type(g).__module__}.{type(g).__name__}")


class Optimizer:
    """Base class of the optimizers (PyTorch's ``torch.optim.Optimizer`` structure).

    Parameters
    ----------
    params : iterable of Parameter, or list of dict
        The parameters to optimize (float32 or float64, each once), or parameter groups
        ``{"params": [...], **hyper_parameters}``.
    defaults : dict
        Hyper-parameters used by groups that do not set them.

    Attributes
    ----------
    param_groups : list of dict
        Each group's ``"params"`` (a list of ``Parameter``) and hyper-parameters.
    state : dict
        Per-parameter state (``Parameter -> dict``), created on the parameter's first step.
    defaults : dict

    Raises
    ------
    TypeError
        ``params`` not an iterable of ``Parameter`` or of group dicts, an entry that is not a ``Parameter``,
        a parameter whose data is not a float32/float64 array (float16, int, bool, complex, a list...), a
        hyper-parameter of the wrong type.
    ValueError
        An empty ``params`` or group, a parameter given twice, an unknown hyper-parameter or one out of its
        documented range (NaN and Inf included).

    Notes
    -----
    **Failure model of** :meth:`step`. Every ``.grad`` is checked before anything is written: a float32 or
    float64 array of exactly its parameter's shape and dtype (no broadcasting), on the parameter's array
    module, finite; read-only parameters are refused. A bad ``.grad`` (``TypeError``/``ValueError``,
    ``NonFiniteError`` for NaN/Inf) or a read-only parameter therefore leaves every parameter, every state
    entry and every step count as they were, in every optimizer. An update that overflows the dtype from
    finite gradients (a learning rate or weight decay far too large) raises ``NonFiniteError`` naming the
    optimizer and the parameter and suggesting a smaller learning rate, never a silent Inf/NaN:

    * the staged optimizers (Muon, RiemannianSGD, RiemannianAdam, CayleySGD, CayleyAdam, OGD) compute
      the new value and state of every parameter before writing any, so nothing has changed;
    * SGD, Adam and AdamW update in place, to keep their step at its own passes over memory (one
      reduction per gradient for the checks, no copy); an overflow of the step stops it at the first
      ufunc that overflows (NumPy's floating-point flags: :meth:`_update_in_place`), so the named
      parameter, its state and the parameters before it in group order have been (partly) updated (the
      message says so; restore them from a ``state_dict``).

    Subclasses set ``defaults`` and implement ``_validate_group`` (hyper-parameter checks through
    ``orthoref._checks``), ``_state_keys(group, p)`` (the state keys of parameter ``p`` of ``group``, for
    ``load_state_dict``) and either ``_stage`` (the new value and state of one parameter, computed without
    writing either) or ``_update`` (in place, run by :meth:`_update_in_place`).
    A subclass that implements the older ``_step_group`` instead is still run, group by group, after the
    ``.grad`` checks (its overflow is then its own business).
    """

    #: Whether the arrays a step replaces are kept as spares for the next step (:meth:`_spare`).
    _recycle = False

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self._validate_group(self.defaults)     # the hyper-parameters first (normalized): named before params
        self.param_groups: list[dict] = []
        self.state: dict = {}
        self._scratch_bufs: dict = {}
        self._spares: dict = {}
        who = self._who
        if isinstance(params, (Parameter, Mapping, str, bytes)) or not isinstance(params, Iterable):
            raise TypeError(f"{who}: params must be an iterable of Parameters or of parameter-group dicts, "
                            f"got {type(params).__name__}")
        groups = list(params)
        if not groups:
            raise ValueError(f"{who}: params is an empty list; give at least one Parameter")
        if not isinstance(groups[0], Mapping):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    @property
    def _who(self) -> str:
        return type(self).__name__

    # -- groups ------------------------------------------------------------------------------------------
    def add_param_group(self, param_group) -> None:
        """Add a group ``{"params": [...], **hyper_parameters}``; unset hyper-parameters take the defaults.

        Raises ``TypeError``/``ValueError`` (and adds nothing) for a non-``Parameter`` entry, a parameter
        that is not float32/float64, an empty group, a parameter already in this or another group, an
        unknown or invalid hyper-parameter.
        """
        who = self._who
        if not isinstance(param_group, Mapping):
            raise TypeError(f"{who}: a parameter group must be a dict, got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError(f"{who}: a parameter group needs a 'params' entry, got keys "
                             f"{sorted(map(str, param_group))}")
        params = param_group["params"]
        if isinstance(params, Parameter):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(f"{who}: params must be an ordered sequence (a set has no stable order)")
        elif isinstance(params, (str, bytes, Mapping)) or not isinstance(params, Iterable):
            raise TypeError(f"{who}: a group's 'params' must be a list of Parameters, got {type(params).__name__}")
        params = list(params)
        if not params:
            raise ValueError(f"{who}: a parameter group has an empty 'params' list")
        for i, p in enumerate(params):
            if not isinstance(p, Parameter):
                raise TypeError(f"{who}: params[{i}] must be a Parameter, got {type(p).__name__}")
            check_float(who, f"params[{i}] (its data)", p.data)
        if len({id(p) for p in params}) != len(params):
            raise ValueError(f"{who}: a parameter appears twice in one group")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError(f"{who}: a parameter appears in more than one parameter group")
        unknown = set(param_group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"{who}: unknown hyper-parameter(s) {sorted(map(str, unknown))}; "
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
        set_to_none = check_bool(f"{self._who}.zero_grad", "set_to_none", set_to_none)
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
        (evaluated first, as in PyTorch).

        Raises
        ------
        TypeError
            A ``.grad`` that is not a float32/float64 array of its parameter's dtype and array module, a
            parameter whose data is not one, a ``closure`` that is not callable.
        ValueError
            A ``.grad`` whose shape is not exactly its parameter's, a read-only parameter (NumPy
            ``flags.writeable`` False).
        NonFiniteError
            A ``.grad`` (or a parameter) holding NaN or Inf, or an update that overflows the parameter's
            dtype from finite gradients (``lr`` or ``weight_decay`` too large): lower them.

        Whatever it raises, nothing has changed (every parameter, its state and its step count are as
        they were before the call), except for an overflow found after an in-place write (SGD, Adam,
        AdamW), which the message and the class notes say.
        """
        if closure is not None and not callable(closure):
            raise TypeError(f"{self._who}.step: closure must be callable or None, got {type(closure).__name__}")
        loss = closure() if closure is not None else None
        work = self._checked_work()
        if type(self)._update is not Optimizer._update:
            self._update_in_place(work)
            return loss
        if type(self)._stage is Optimizer._stage:
            for group in self.param_groups:                   # a subclass of the older kind
                self._step_group(group)
            return loss
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):    # checked, not warned
            staged = [(p, self._stage(group, p, label)) for group, p, label in work]
        for p, (new_data, new_state) in staged:
            self._commit(p, new_data, new_state)
        return loss

    def _label(self, gi: int, i: int, p) -> str:
        """How messages name a parameter: its ``name`` if it has one, else its place in ``param_groups``."""
        if isinstance(getattr(p, "name", None), str) and p.name:
            return p.name
        return f"params[{i}]" if len(self.param_groups) == 1 else f"param_groups[{gi}]['params'][{i}]"

    def _where(self, where, p) -> str:
        """The label of a parameter from its place ``(gi, i)`` (formatted on error paths only)."""
        return where if isinstance(where, str) else self._label(where[0], where[1], p)

    def _checked_work(self, finite=True):
        """``[(group, p, (gi, i))]`` of the parameters with a gradient, after checking every one of them
        (data, writeability, ``.grad``); raises before anything is written. The common case (NumPy arrays
        of one float dtype and shape, writeable) costs a few attribute reads per parameter and, with
        ``finite``, one reduction per gradient not already known finite (``Parameter._grad_finite``: put
        there by orthoref's own layer and not touched since); the messages are formatted on the error
        path only."""
        work = []
        for gi, group in enumerate(self.param_groups):
            for i, p in enumerate(group["params"]):
                g = p._grad                       # not .grad: that would clear _grad_finite
                if g is None:
                    continue
                d = p.data
                if not (type(d) is np.ndarray and type(g) is np.ndarray and d.dtype in _FLOATS
                        and g.dtype is d.dtype and g.shape == d.shape and d.flags.writeable):
                    self._check_param(gi, i, p)
                if (finite and not p._grad_finite
                        and not all_finite(np if type(g) is np.ndarray else get_array_module(g), g)):
                    check_finite(self._who, f"{self._label(gi, i, p)}.grad", g)      # names it
                work.append((group, p, (gi, i)))
        return work

    def _check_param(self, gi, i, p):
        """The full checks of a parameter and its ``.grad`` (messages naming both)."""
        who, label = self._who, self._label(gi, i, p)
        check_float(who, f"{label} (the parameter's data)", p.data)
        if not _writeable(p.data):
            raise ValueError(f"{who}: {label} is read-only (its data array has flags.writeable=False); "
                             f"the optimizer updates parameters in place: give it a writeable array "
                             f"(e.g. p.data = p.data.copy())")
        _check_grad(who, f"{label}.grad", p.grad, p.data.shape, p.data.dtype, get_array_module(p.data),
                    finite=False)

    def _stage(self, group: dict, p, label: str):
        """The step of one parameter, computed without writing anything the caller can see:
        ``(new_data, new_state)`` -- an array of ``p``'s shape and dtype holding the parameter's new value,
        and the state dict that replaces ``self.state[p]`` (``None``: the state is left as it is). It
        checks its results with :meth:`_check_update` and may raise; :meth:`step` commits only when every
        parameter has been staged."""
        raise NotImplementedError

    def _update(self, hyper, p) -> None:
        """The step of one parameter, in place (SGD, Adam: no staging of the parameter, so that the step
        costs its own passes and no reduction), with ``hyper`` = :meth:`_hyper` of its group; run by
        :meth:`_update_in_place`, which reports an overflow *after* the parameter (and the ones before it)
        has been written, as the optimizer's docstring says."""
        raise NotImplementedError

    def _hyper(self, group: dict):
        """What :meth:`_update` reads of ``group`` (Python floats and bools), read once per group and step."""
        return group

    def _hint(self, group: dict):
        """What an overflow message of :meth:`_update_in_place` suggests lowering: ``(name, value[, suffix])``."""
        return ("lr", float(group["lr"]))

    def _step_group(self, group: dict) -> None:
        raise NotImplementedError

    def _check_update(self, p, label: str, hint: str, *arrays, nonneg=(), written=False) -> None:
        """``NonFiniteError`` unless every array of the update (the new value, new state) is finite: one
        reduction each (``nonneg`` arrays, known to be >= 0 such as Adam's second moment, by their maximum,
        a read-only pass: NaN propagates through it); the culprit is named only on the error path. A
        NaN/Inf gradient or parameter is reported as such; otherwise the update overflowed the dtype from
        finite inputs, and ``hint`` (the learning rate in force) says what to lower. ``written``: the
        arrays are the parameter's own, already updated in place (the message says so)."""
        xp = get_array_module(p.data)
        for a in nonneg:
            if a.size and not math.isfinite(float(a.max())):
                self._non_finite_update(p, label, hint, written)
        for a in arrays:
            if not all_finite(xp, a):
                self._non_finite_update(p, label, hint, written)

    def _update_in_place(self, work) -> None:
        """:meth:`_update` of every parameter of ``work`` (``[(group, p, label)]``, checked), in order, so that
        an overflow cannot pass silently. NumPy reads the FPU's status flags after every ufunc anyway: with
        ``errstate`` set to raise, a step that overflows the dtype (or computes 0/0, ``eps = 0``) stops at the
        first such ufunc, at no cost on the good path -- no reduction over the new value. The gradients were
        checked finite before anything was written, so no NaN/Inf enters the update quietly. Other array
        modules (CuPy) have no such flags: one reduction over the new value. Either way the parameter and its
        state are already (partly) written when this raises, which the message says."""
        hypers = {}
        with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
            for group, p, label in work:
                hyper = hypers.get(id(group))
                if hyper is None:
                    hyper = hypers[id(group)] = self._hyper(group)
                try:
                    self._update(hyper, p)
                except FloatingPointError:
                    self._non_finite_update(p, label, self._hint(group), written=True)
                if type(p.data) is not np.ndarray:
                    self._check_update(p, label, self._hint(group), p.data, written=True)

    def _non_finite_update(self, p, label, hint, written=False):
        who = self._who
        label = self._where(label, p)
        if isinstance(hint, tuple):               # (name, value[, suffix]): formatted here, not per step
            hint = f"{hint[0]}={hint[1]:g}" + (hint[2] if len(hint) > 2 else "")
        if not written:
            check_finite(who, f"{label}.grad", p.grad)
            check_finite(who, f"{label} (the parameter's data)", p.data)
        after = (f"{label} and its state have been updated and hold NaN/Inf, as have the parameters before it "
                 f"(restore them, e.g. from a state_dict or checkpoint)" if written else
                 "Nothing was changed: the parameters and the state are as before this step")
        raise NonFiniteError(
            f"{who}: the update of {label} overflows {np.dtype(p.data.dtype).name} (NaN or Inf) although its "
            f"gradient is finite{' (or the parameter held NaN/Inf already)' if written else ''}; use a smaller "
            f"learning rate ({hint}) or weight decay, or float64 parameters. {after}")

    def _commit(self, p, new_data, new_state) -> None:
        """Write a staged step: ``new_data`` into ``p.data`` (in place), ``new_state`` into the state; with
        ``_recycle`` the replaced arrays become spares for the next step."""
        data = p.data
        get_array_module(data).copyto(data, new_data)
        if new_state is None:
            if self._recycle:
                self._spares.setdefault(p, {})["_data"] = new_data
            return
        old = self.state.get(p)
        self.state[p] = new_state
        if self._recycle:
            spares = self._spares.setdefault(p, {})
            spares["_data"] = new_data
            if old:
                kept = {id(v) for v in new_state.values()}
                for k, v in old.items():
                    if hasattr(v, "shape") and id(v) not in kept:
                        spares[k] = v
            else:                       # a first step: the spares of the next one, allocated now
                for k, v in new_state.items():
                    if hasattr(v, "shape") and k not in spares:
                        spares[k] = get_array_module(v).empty_like(v)

    def _spare(self, p, key: str):
        """An array like ``p.data`` for the staged value of ``key`` (``"_data"``: the new parameter value):
        last step's replaced array when there is one, else a new one. Never an array of the current
        state."""
        data = p.data
        a = self._spares.get(p, {}).pop(key, None)
        if a is None or a.shape != data.shape or a.dtype != data.dtype or type(a) is not type(data):
            a = get_array_module(data).empty_like(data)
        return a

    def _scratch(self, p, k: int = 0):
        """A scratch array of ``p``'s shape, dtype and device: a view into buffer ``k``, one buffer per
        (array module, dtype, device), grown to the largest parameter and shared by all parameters."""
        data = p.data
        if type(data) is np.ndarray:
            key = (k, np.ndarray, data.dtype, None)
        else:
            key = (k, type(data), data.dtype, getattr(getattr(data, "device", None), "id", None))  # CuPy
        buf = self._scratch_bufs.get(key)
        n = data.size
        if buf is None or buf.size < n:
            buf = get_array_module(data).empty(n, dtype=data.dtype)
            self._scratch_bufs[key] = buf
        return buf[:n].reshape(data.shape)

    # -- state dicts -------------------------------------------------------------------------------------
    def _state_keys(self, group: dict, p) -> tuple:
        """The keys of the state of parameter ``p`` of ``group`` (``"step"`` is an int, the others arrays of
        the parameter's shape or, where the optimizer allows it (``_NULLABLE_STATE``), ``None``).

        :meth:`load_state_dict` checks each saved entry against the keys of its own parameter, so the key
        set may depend on the group (Adam's ``amsgrad``) or on the parameter itself (Muon: a matrix carries
        ``momentum_buffer``, a vector Adam's moments)."""
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

        Everything is checked before anything changes: the structure, the number of groups, each group's
        number of parameters and hyper-parameters (types and ranges, as the constructor checks them), the
        state's indices and keys, each ``step`` (an int >= 0) and each state array (a float32/float64 array
        of its parameter's shape, finite). A mismatch raises ``ValueError`` (``TypeError`` for a value of
        the wrong type, ``NonFiniteError`` for NaN/Inf) naming the entry; nothing changes then.
        """
        who = f"{self._who}.load_state_dict"
        if not isinstance(state_dict, Mapping) or set(state_dict) != {"state", "param_groups"}:
            got = sorted(map(str, state_dict)) if isinstance(state_dict, Mapping) else type(state_dict).__name__
            raise ValueError(f"{who}: expected a dict with keys 'state' and 'param_groups', got {got}")
        saved_groups = state_dict["param_groups"]
        if isinstance(saved_groups, (str, bytes, Mapping)) or not isinstance(saved_groups, Iterable):
            raise TypeError(f"{who}: 'param_groups' must be a list of dicts, got {type(saved_groups).__name__}")
        saved_groups = list(saved_groups)
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{who}: the state dict has {len(saved_groups)} parameter group(s), "
                             f"this optimizer has {len(self.param_groups)}")
        index_to_param, new_groups = {}, []
        for gi, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            new_groups.append(self._load_group(who, gi, saved, group, index_to_param))
        saved_state = state_dict["state"]
        if not isinstance(saved_state, Mapping):
            raise TypeError(f"{who}: 'state' must be a dict {{index: {{key: value}}}}, got "
                            f"{type(saved_state).__name__}")
        new_state = {}
        for i, st in saved_state.items():
            if isinstance(i, (bool, np.bool_)) or i not in index_to_param:
                raise ValueError(f"{who}: state for parameter index {i!r}, which no parameter group lists")
            p, group = index_to_param[i]
            new_state[p] = self._load_entry(who, i, st, p, group)
        for group, new in zip(self.param_groups, new_groups):
            group.clear()
            group.update(new)
        self.state = new_state

    def _load_group(self, who, gi, saved, group, index_to_param):
        """The checked hyper-parameters of saved group ``gi`` (``params`` of the live ``group``); fills
        ``index_to_param``."""
        if not isinstance(saved, Mapping):
            raise TypeError(f"{who}: param_groups[{gi}] must be a dict, got {type(saved).__name__}")
        ids = saved.get("params", ())
        if isinstance(ids, (str, bytes, Mapping)) or not isinstance(ids, Iterable):
            raise TypeError(f"{who}: param_groups[{gi}]['params'] must be a list of ints, got {type(ids).__name__}")
        ids = [check_int(who, f"param_groups[{gi}]['params'][{j}]", i, 0) for j, i in enumerate(ids)]
        if len(ids) != len(group["params"]):
            raise ValueError(f"{who}: parameter group {gi} has {len(ids)} parameter(s) in the state dict, "
                             f"{len(group['params'])} in this optimizer")
        unknown = set(saved) - set(self.defaults) - {"params"}
        missing = set(self.defaults) - set(saved)
        if unknown or missing:
            raise ValueError(f"{who}: parameter group {gi} has unknown hyper-parameter(s) "
                             f"{sorted(map(str, unknown))} and lacks {sorted(missing)}")
        new = {k: saved[k] for k in self.defaults}
        try:
            self._validate_group(new)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{who}: param_groups[{gi}]: {exc}") from None
        new["params"] = group["params"]
        for i, p in zip(ids, group["params"]):
            if i in index_to_param:
                raise ValueError(f"{who}: parameter index {i} appears twice in 'param_groups'")
            index_to_param[i] = (p, new)
        return new

    def _load_entry(self, who, i, st, p, group):
        """The checked state of parameter index ``i``, in ``p``'s array module and dtype."""
        want = set(self._state_keys(group, p))
        if not isinstance(st, Mapping) or set(st) != want:
            got = sorted(map(str, st)) if isinstance(st, Mapping) else type(st).__name__
            raise ValueError(f"{who}: state of parameter {i} (shape {tuple(p.shape)}) has keys {got}, "
                             f"expected {sorted(want)}")
        xp = get_array_module(p.data)
        entry = {}
        for k in sorted(want):
            v = st[k]
            name = f"state[{i}][{k!r}]"
            if k == "step":
                if isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype.kind in "iu":
                    v = v.item()                       # np.load gives 0-d arrays
                if isinstance(v, (float, np.floating)) and float(v).is_integer():
                    v = int(v)                         # a JSON round trip may give 3.0
                try:
                    entry[k] = check_int(who, name, v, 0)
                except (TypeError, ValueError):
                    raise ValueError(f"{who}: state of parameter {i}: step must be a non-negative integer, "
                                     f"got {v!r}") from None
            elif v is None and k in self._NULLABLE_STATE:
                entry[k] = None
            else:
                if v is None or not hasattr(v, "shape") or tuple(v.shape) != tuple(p.shape):
                    shape = tuple(v.shape) if hasattr(v, "shape") else None
                    if v is not None and not hasattr(v, "shape"):
                        check_float(who, name, v)      # TypeError: a list, a number...
                    raise ValueError(f"{who}: state of parameter {i}: {k} has shape {shape}, expected "
                                     f"{tuple(p.shape)}")
                check_float(who, name, v)
                check_finite(who, name, v)
                entry[k] = xp.array(v, dtype=p.dtype, copy=True)
        return entry

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in group.items() if k != "params"]
        return "\n".join(lines) + "\n)"
