r"""Reference trajectories of the optimizers and the orthogonal factor of the initializers, in float64.

:func:`optimizer_trajectory` runs one of :mod:`orthoref.optim`'s optimizers in float64 from given
parameters on given gradients and returns every iterate :math:`\theta_0, \theta_1, \dots, \theta_k`: the
reference a user's optimizer is compared with, step by step (:func:`orthoref.testing.check_optimizer`).
:func:`orthogonal_factor` is the deterministic half of :func:`orthoref.init.orthogonal`: the orthogonal
factor of a given Gaussian draw, so that another framework checks its initializer on its own draw.
"""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Sequence

import numpy as np

from .. import optim
from ..init import orthogonalize_gaussian
from ..nn.module import Parameter
from ..optim.riemannian import stiefel_view
from ..ortho.metrics import orthogonality_error_fro

__all__ = ["OPTIMIZERS", "STIEFEL_OPTIMIZERS", "optimizer_trajectory", "orthogonal_factor", "optimizer_name"]

#: The optimizers :func:`optimizer_trajectory` runs (the classes of :mod:`orthoref.optim`).
OPTIMIZERS = ("SGD", "Adam", "AdamW", "Muon", "RiemannianSGD", "RiemannianAdam", "CayleySGD", "CayleyAdam", "OGD")
#: Those whose parameter groups carry ``"stiefel"`` (default ``True``).
STIEFEL_OPTIMIZERS = ("RiemannianSGD", "RiemannianAdam", "CayleySGD", "CayleyAdam")
#: ``‖XᵀX − I‖_F`` above which a float64 parameter of a Stiefel group is refused (the optimizers' own bound).
FEASIBILITY_TOL = 1e-6

_WHO = "optimizer_trajectory"


def optimizer_name(name, who=_WHO) -> str:
    """The canonical name of an optimizer given by name (``"Adam"``, case-insensitive) or by its class
    (``orthoref.optim.Adam``); ``TypeError``/``ValueError`` (close names listed) otherwise."""
    if isinstance(name, type):
        if name.__module__.startswith("orthoref.optim") and name.__name__ in OPTIMIZERS:
            return name.__name__
        raise ValueError(f"{who}: name must be one of {', '.join(OPTIMIZERS)} (or its orthoref.optim class), "
                         f"got the class {name.__module__}.{name.__name__}")
    if not isinstance(name, str):
        raise TypeError(f"{who}: name must be an optimizer name (a str such as 'Adam') or an orthoref.optim class, "
                        f"got {type(name).__name__} {name!r}")
    by_lower = {n.lower(): n for n in OPTIMIZERS}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    close = difflib.get_close_matches(name, OPTIMIZERS, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"{who}: no optimizer named {name!r}{hint} (one of {', '.join(OPTIMIZERS)})")


def _as_array(who, what, x):
    """A finite real float64 copy of ``x`` (an ndarray, or anything with ``__array__`` but a list)."""
    if isinstance(x, (list, tuple)) or not (isinstance(x, np.ndarray) or hasattr(x, "__array__")):
        raise TypeError(f"{who}: {what} must be an array, got {type(x).__name__}")
    if hasattr(x, "detach"):                                   # a torch tensor
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype.kind not in "fiu" or a.dtype == np.bool_:
        raise TypeError(f"{who}: {what} must be a real array, got dtype {a.dtype}")
    a = np.array(a, dtype=np.float64, copy=True)
    if not np.isfinite(a).all():
        raise ValueError(f"{who}: {what} must be finite, got NaN or Inf")
    return a


def _as_params(who, param0):
    """``(arrays, single)``: float64 copies of one array or of a list of arrays."""
    if isinstance(param0, (list, tuple)):
        if not param0:
            raise ValueError(f"{who}: param0 is an empty list; give one array or a list of arrays")
        return [_as_array(who, f"param0[{i}]", p) for i, p in enumerate(param0)], False
    return [_as_array(who, "param0", param0)], True


def _as_grads(who, g, shapes, single, what):
    """The gradients of one step, ``like param0``: float64 copies of the same count and shapes."""
    if single:
        gs = [_as_array(who, what, g)]
    else:
        if not isinstance(g, (list, tuple)):
            raise TypeError(f"{who}: {what} must be a list of {len(shapes)} arrays (one per parameter), got "
                            f"{type(g).__name__}")
        if len(g) != len(shapes):
            raise ValueError(f"{who}: {what} has {len(g)} arrays, param0 has {len(shapes)} parameters")
        gs = [_as_array(who, f"{what}[{i}]", a) for i, a in enumerate(g)]
    for i, (a, shape) in enumerate(zip(gs, shapes)):
        if a.shape != shape:
            at = what if single else f"{what}[{i}]"
            raise ValueError(f"{who}: {at} has shape {a.shape}, its parameter has shape {shape}")
    return gs


def _stiefel_flags(who, name, hyper, n):
    """One ``stiefel`` flag per parameter (``None`` for optimizers without Stiefel groups)."""
    if name not in STIEFEL_OPTIMIZERS:
        return None
    flags = hyper.pop("stiefel", True)
    if isinstance(flags, (list, tuple)):
        if len(flags) != n or not all(isinstance(f, (bool, np.bool_)) for f in flags):
            raise ValueError(f"{who}: stiefel must be a bool or a list of {n} bools (one per parameter), got "
                             f"{flags!r}")
        return [bool(f) for f in flags]
    if not isinstance(flags, (bool, np.bool_)):
        raise TypeError(f"{who}: stiefel must be a bool or a list of bools, got {type(flags).__name__} {flags!r}")
    return [bool(flags)] * n


def _check_feasible(who, name, params, flags, explicit):
    for i, (p, on) in enumerate(zip(params, flags)):
        if not on or p.ndim < 2:
            continue
        X, transposed = stiefel_view(p)
        err = orthogonality_error_fro(X)
        if not err <= FEASIBILITY_TOL:
            side = "rows" if transposed else "columns"
            why = "stiefel=True" if explicit else f"stiefel=True, {name}'s default"
            raise ValueError(
                f"{who}: param0[{i}] (shape {p.shape}) is in a Stiefel group ({why}) but is not orthonormal: "
                f"‖XᵀX − I‖_F = {err:.3g} > {FEASIBILITY_TOL:g}, X the tall view of W.reshape(out, -1) (here "
                f"orthonormal {side} are needed). Start from an orthonormal point (orthoref.init.orthogonal(shape, "
                f"dtype=np.float64), or orthogonal_factor(A) of a Gaussian A), or pass stiefel=False, or "
                f"stiefel=[...] with one bool per parameter.")


def _build(who, name, params, flags, hyper):
    cls = getattr(optim, name)
    if flags is None:
        groups = params
    else:
        groups = [{"params": [p], "stiefel": f} for p, f in zip(params, flags)]
    accepted = [k for k in inspect.signature(cls).parameters if k != "params"]
    unknown = sorted(set(hyper) - set(accepted))
    if unknown:
        extra = ", directions" if name == "OGD" else ""
        raise ValueError(f"{who}: unknown hyper-parameter(s) {unknown} for {name}; it takes "
                         f"{', '.join(accepted)}{extra}")
    try:
        return cls(groups, **hyper)
    except TypeError as exc:
        if "required positional argument" in str(exc) and "lr" in str(exc):
            raise TypeError(f"{who}: {name} needs lr=... (it has no default learning rate)") from None
        raise TypeError(f"{who}: {name}(**hyper): {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{who}: {name}(**hyper): {exc}") from None


def optimizer_trajectory(name, param0, grads, *, steps=None, **hyper) -> list:
    r"""The float64 reference trajectory of an orthoref optimizer on given gradients.

    The optimizer ``orthoref.optim.<name>(params, **hyper)`` is built on float64 copies of ``param0`` and
    stepped ``k`` times; before step :math:`t` (``t = 0, ..., k-1``) each parameter's ``.grad`` is set to the
    ``t``-th gradient. The update formulas are the classes' (their docstrings; PyTorch's for SGD, Adam,
    AdamW, geoopt's for the Riemannian ones, Li et al.'s for Cayley, KellerJordan/Muon's for Muon).

    Parameters
    ----------
    name : str or class
        ``"SGD"``, ``"Adam"``, ``"AdamW"``, ``"Muon"``, ``"RiemannianSGD"``, ``"RiemannianAdam"``,
        ``"CayleySGD"``, ``"CayleyAdam"`` or ``"OGD"`` (case-insensitive), or the class itself.
    param0 : array or list of arrays
        The initial parameters (real, finite; copied to float64). A list: several parameters, one
        parameter group (one group per parameter where ``stiefel`` is a list).
    grads : sequence of k gradients, or callable
        Each gradient like ``param0`` (an array, or a list of arrays of the parameters' shapes). A callable
        ``grads(t, params) -> gradient`` gives the gradient at the current iterate :math:`\theta_t`
        (``params`` as returned, an array or a list of arrays, float64 copies); it needs ``steps``.
    steps : int, optional
        The number of steps ``k`` for a callable ``grads`` (with a sequence: its length, or a check of it).
    **hyper
        The optimizer's hyper-parameters, passed to its constructor (``lr=...``; required for
        RiemannianSGD, CayleySGD, CayleyAdam and OGD, which have no default). For the Stiefel optimizers
        (Riemannian*, Cayley*) ``stiefel`` may also be a list of one bool per parameter (each parameter its
        own group); a parameter with ``ndim >= 2`` in a Stiefel group must be orthonormal
        (``‖XᵀX − I‖_F <= 1e-6``, ``X`` the tall view of ``W.reshape(out, -1)``). For OGD,
        ``directions=[...]`` is handed to ``store_directions`` before the first step.

    Returns
    -------
    list
        The ``k + 1`` states :math:`\theta_0, \dots, \theta_k` (fresh float64 arrays): each an array when
        ``param0`` is one, a list of arrays when it is a list.

    Raises
    ------
    TypeError
        ``name`` neither a str nor an orthoref.optim class, ``param0`` or a gradient not an array (or list of
        arrays), ``grads`` neither a sequence nor callable, a bad hyper-parameter type, a missing ``lr``.
    ValueError
        An unknown optimizer (close names listed), NaN/Inf, shapes or counts that do not match
        ``param0``, ``steps`` missing for a callable or disagreeing with ``len(grads)``, a hyper-parameter
        out of its range, a non-orthonormal ``param0`` in a Stiefel group.

    Examples
    --------
    >>> import numpy as np
    >>> from orthoref.oracle.trajectories import optimizer_trajectory
    >>> traj = optimizer_trajectory("SGD", np.ones(2), [np.ones(2)] * 3, lr=0.1, momentum=0.9)
    >>> np.round(traj[-1], 3).tolist()                  # 1 - 0.1·(1 + 1.9 + 2.71)
    [0.439, 0.439]
    """
    who = _WHO
    name = optimizer_name(name, who)
    params, single = _as_params(who, param0)
    shapes = [p.shape for p in params]
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0):
        raise ValueError(f"{who}: steps must be an integer >= 0, got {steps!r}")
    if callable(grads):
        if steps is None:
            raise ValueError(f"{who}: a callable grads(t, params) needs steps=k (the number of steps)")
        k = int(steps)
    elif isinstance(grads, Sequence) and not isinstance(grads, (str, bytes)) or isinstance(grads, np.ndarray):
        k = len(grads)
        if steps is not None and steps != k:
            raise ValueError(f"{who}: steps={steps} but grads holds {k} gradients")
        grads = [_as_grads(who, g, shapes, single, f"grads[{t}]") for t, g in enumerate(grads)]
    else:
        raise TypeError(f"{who}: grads must be a sequence of gradients (each like param0) or a callable "
                        f"grads(t, params), got {type(grads).__name__}")
    hyper = dict(hyper)
    directions = hyper.pop("directions", None) if name == "OGD" else None
    explicit = "stiefel" in hyper
    flags = _stiefel_flags(who, name, hyper, len(params))
    if flags is not None:
        _check_feasible(who, name, params, flags, explicit)
    ps = [Parameter(p) for p in params]
    opt = _build(who, name, ps, flags, hyper)
    if directions is not None:
        opt.store_directions(directions)

    def state():
        copies = [p.data.copy() for p in ps]
        return copies[0] if single else copies

    out = [state()]
    for t in range(k):
        g = grads[t] if not callable(grads) else _as_grads(who, grads(t, state()), shapes, single,
                                                            f"grads({t}, params)")
        for p, gi in zip(ps, g):
            p.grad = gi
        opt.step()
        out.append(state())
    return out


def orthogonal_factor(A, method="qr"):
    r"""The orthogonal factor of a given Gaussian draw, as :func:`orthoref.init.orthogonal` computes it
    (:func:`orthoref.init.orthogonalize_gaussian` with ``gain=1``, in float64).

    ``method="qr"`` (PyTorch's ``orthogonal_``): :math:`T = A` if rows >= cols else :math:`A^\top`,
    :math:`T = QR` (thin), :math:`Q \leftarrow Q\,\mathrm{diag}(\mathrm{sign}\, r_{ii})`, returned in
    :math:`A`'s orientation. ``method="svd"``: :math:`U V^\top` of the thin SVD :math:`A = U\Sigma V^\top`.

    Parameters
    ----------
    A : array (rows, cols)
        The Gaussian draw (``init.orthogonal`` draws ``G = rng.standard_normal((min, max))`` and takes
        ``A = G`` when rows < cols, ``A = Gᵀ`` otherwise); real, finite, copied to float64.
    method : {"qr", "svd"}

    Returns
    -------
    ndarray (rows, cols), float64
        Orthonormal rows (rows <= cols) or columns (rows > cols).

    Raises
    ------
    TypeError / ValueError
        ``A`` not a real 2-D finite array, an unknown method.
    """
    who = "orthogonal_factor"
    A = _as_array(who, "A", A)
    if A.ndim != 2:
        raise ValueError(f"{who}: A must be a 2-D array (rows, cols), got shape {A.shape}")
    if method not in ("qr", "svd"):
        raise ValueError(f"{who}: method must be 'qr' or 'svd', got {method!r}")
    return orthogonalize_gaussian(A, 1.0, method)
