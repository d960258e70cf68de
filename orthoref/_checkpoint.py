"""What the checkpoints of :mod:`orthoref.train` (MLP/CNN runs) and :mod:`orthoref.sequence` (RNN runs)
share: JSON members of an ``.npz``, the checks of what a checkpoint declares, and folder identity. Private to
the package."""
from __future__ import annotations

import json
import os

import numpy as np

from ._checks import NonFiniteError, all_finite
from ._io import CheckpointError, strict_json

__all__ = ["MAX_JSON_CHARS", "NONE_MARKER", "check_param_groups", "check_rng_state", "is_int", "is_number",
           "json_array", "read_json", "read_planned", "same_dir", "state_arrays"]

#: The most characters a checkpoint's JSON member may declare.
MAX_JSON_CHARS = 1 << 26
#: Stands for an optimizer state entry that is ``None``.
NONE_MARKER = np.zeros(0, dtype=np.int8)


def json_array(obj, safe=False):
    """``obj`` as a 0-d string array of strict JSON (``safe``: NaN/Inf floats become null; else they
    raise ValueError)."""
    return np.array(strict_json(obj) if safe else json.dumps(obj, allow_nan=False))


def read_json(path, member, field):
    """The JSON object held by ``member`` (a 0-d string array of an ``.npz``), ``CheckpointError`` naming
    ``path`` and ``field`` otherwise."""
    if member.dtype.kind != "U" or member.shape != ():
        raise CheckpointError(f"{path}: {field} must be a JSON text (a 0-d string array), got an array of "
                              f"dtype {member.dtype} and shape {member.shape}")
    if member.dtype.itemsize // 4 > MAX_JSON_CHARS:
        raise CheckpointError(f"{path}: {field} declares {member.dtype.itemsize // 4} characters, more than "
                              f"{MAX_JSON_CHARS}")
    text = str(member.read()[()])
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: {field} is not valid JSON ({exc})") from None


def is_int(v):
    """``v`` is a JSON integer (not a bool)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v):
    """``v`` is a JSON number (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_rng_state(path, field, state):
    """``state`` is a valid PCG64 state; ``CheckpointError`` naming ``path`` and ``field`` otherwise."""
    if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
        raise CheckpointError(f"{path}: {field} must be the state of a PCG64 generator, got "
                              f"{str(state)[:80]!r}")
    try:
        np.random.PCG64().state = state
    except (TypeError, ValueError, KeyError, OverflowError, AttributeError) as exc:
        raise CheckpointError(f"{path}: {field} is not a valid PCG64 state ({exc})") from None


def check_param_groups(path, groups, sizes):
    """``groups`` (a checkpoint's ``optim/param_groups``) number the parameters ``0, 1, ...`` in groups of
    ``sizes``; ``CheckpointError`` otherwise."""
    if not isinstance(groups, list) or len(groups) != len(sizes) \
            or not all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups):
        raise CheckpointError(f"{path}: optim/param_groups must be a list of {len(sizes)} parameter group(s) "
                              f"with 'params' lists, got {str(groups)[:80]!r}")
    ids = [i for g in groups for i in g["params"]]
    if [len(g["params"]) for g in groups] != sizes or ids != list(range(sum(sizes))) \
            or not all(is_int(i) for i in ids):
        raise CheckpointError(f"{path}: optim/param_groups must number the {sum(sizes)} parameters 0..."
                              f"{sum(sizes) - 1} in groups of {sizes}, got {[g['params'] for g in groups]}")


def same_dir(a, b):
    """``a`` and ``b`` are the same folder (by inode where both exist)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def read_planned(path, members, plan):
    """Read the arrays of a checked checkpoint: ``plan`` maps each member ``key`` to ``(kind, idx, name)``,
    kind ``"model"`` (a parameter), ``"state"`` (an optimizer state array), ``"step"`` (an int) or
    ``"none"`` (a ``None`` entry). Returns ``(model_state, state)``: ``{name: array}`` and ``{idx: {name:
    value}}``. ``CheckpointError`` naming ``path`` and the member for a negative step or NaN/Inf."""
    model_state, state = {}, {}
    for key, (kind, idx, name) in plan.items():
        if kind == "none":
            state.setdefault(idx, {})[name] = None
            continue
        a = members[key].read()
        if kind == "step":
            if int(a) < 0:
                raise CheckpointError(f"{path}: {key} must be >= 0, got {int(a)}")
            state.setdefault(idx, {})[name] = int(a)
            continue
        if not all_finite(np, a):
            raise CheckpointError(f"{path}: {key} holds NaN or Inf")
        if kind == "model":
            model_state[name] = a
        else:
            state.setdefault(idx, {})[name] = a
    return model_state, state


def state_arrays(who, model_arrays, optimizer_state):
    """The model and optimizer members of a checkpoint: ``model/<name>`` for each of ``model_arrays``,
    ``optim/state/<idx>/<key>`` (``optim/none/...`` with :data:`NONE_MARKER` for a ``None`` entry) for each
    entry of ``optimizer_state`` (an ``Optimizer.state_dict()``) and ``optim/param_groups``.
    ``NonFiniteError`` naming ``who`` and the member when a float array holds NaN/Inf: only finite state is
    ever written."""
    arrays = {f"model/{k}": v for k, v in model_arrays.items()}
    for idx, st in optimizer_state["state"].items():
        for key, val in st.items():
            arrays[f"optim/{'none' if val is None else 'state'}/{idx}/{key}"] = \
                NONE_MARKER if val is None else np.asarray(val)
    for name, a in arrays.items():
        if a.dtype.kind == "f" and not all_finite(np, a):
            raise NonFiniteError(f"{who}: {name} holds NaN or Inf; a checkpoint is written only from finite "
                                 f"parameters and optimizer state")
    arrays["optim/param_groups"] = json_array(optimizer_state["param_groups"])
    return arrays
