"""Parameter, Module and Sequential.

A layer owns ``Parameter`` objects, calls a forward/backward op pair from ``orthoref.ops`` and keeps one
cache (the last forward's), never a growing list. ``backward(grad_out)`` returns the gradient with respect
to the layer's input and *accumulates* into each parameter's ``.grad`` (``None`` until the first backward,
as in PyTorch).

Failure model: a layer's ``backward(grad_out)`` requires ``grad_out`` of exactly the shape and dtype of its
last forward's output (no broadcasting; ``ValueError``/``TypeError``) and finite (``NonFiniteError``), and
accumulates nothing when it raises; ``backward`` before any ``forward`` raises
:class:`BackwardBeforeForwardError` (a ``ValueError`` and a ``RuntimeError``). ``load_state_dict`` checks
every entry before it assigns any.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .._checks import (FLOAT_DTYPES, NonFiniteError, all_finite, check_bool, check_finite, check_float,  # noqa: F401
                       check_int, float_dtype)
from ..backend import get_array_module, to_numpy
from ..ops._contract import check_grad_meta, handoff, noted_sq

__all__ = ["Parameter", "Module", "Sequential", "check_input", "BackwardBeforeForwardError"]


class BackwardBeforeForwardError(ValueError, RuntimeError):
    """``backward`` called on a layer with no forward pass to differentiate (a ``ValueError``, and a
    ``RuntimeError`` as it always was)."""


class Parameter:
    """A trainable array: ``.data`` (the value) and ``.grad`` (``None`` or an array like ``.data``).

    ``data`` must be a float32 or float64 array (``TypeError`` otherwise: a bool, int, complex, object
    array or a list cannot be trained), ``name`` None or a str."""

    __slots__ = ("data", "_grad", "_grad_finite", "name")

    def __init__(self, data, name: str | None = None):
        check_float("Parameter", "data", data)
        check_finite("Parameter", "data", data)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Parameter: name must be None or a str, got {type(name).__name__} {name!r}")
        self.data = data
        self.grad = None
        self.name = name

    # Design note (what the optimizer need not read again). An optimizer's step() reads every .grad to
    # prove it finite before writing anything (the failure model); in a train step that pass over every
    # gradient costs more than all other checks together. A gradient that one of orthoref's own layers put
    # here (:meth:`_accumulate_verified`: a fresh array its backward proved finite) that nobody has touched
    # since is still finite, so ``_grad_finite`` says so and the step skips the read. "Nobody has touched":
    # the array never left this object -- reading ``.grad`` (the only way to reach it, and to change it in
    # place) or assigning it clears the mark, as does a shallow copy sharing it.

    @property
    def grad(self):
        """``None`` or the accumulated gradient, an array like ``.data``."""
        self._grad_finite = False                 # the caller may change it in place: read it at step()
        return self._grad

    @grad.setter
    def grad(self, value):
        self._grad_finite = False
        self._grad = value

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    def accumulate(self, g) -> None:
        """``grad += g`` (``grad = g`` on the first call; ``g`` must be a fresh array the caller gives up).
        A ``.grad`` set by hand to another shape or dtype is a ``ValueError``/``TypeError``, not broadcast."""
        if self._grad is None:
            self.grad = g
        else:
            check_grad_meta(self._accumulate_who(), ".grad", self._grad, g.shape, g.dtype)
            self.grad += g

    def _accumulate_who(self):
        return f"Parameter{'' if self.name is None else ' ' + repr(self.name)}.accumulate"

    def _accumulate_verified(self, g) -> None:
        """:meth:`accumulate` for orthoref's own layers: ``g`` is a fresh array their backward proved finite
        (it raises otherwise), so ``.grad`` stays marked finite (see the design note above) -- unless adding
        ``g`` to a ``.grad`` so marked overflows, which NumPy's floating-point flags report at no cost."""
        grad = self._grad
        if grad is None:
            self._grad, self._grad_finite = g, type(g) is np.ndarray
            return
        if not (self._grad_finite and type(g) is np.ndarray):
            self.accumulate(g)                    # clears the mark
            return
        check_grad_meta(self._accumulate_who(), ".grad", grad, g.shape, g.dtype)
        try:
            with np.errstate(over="raise"):       # finite + finite: finite, or an overflow flagged
                grad += g
        except FloatingPointError:
            self._grad_finite = False             # holds Inf now: step() reads it and says so

    def __copy__(self):
        """A shallow copy shares ``.grad``: neither may keep it marked finite."""
        new = Parameter.__new__(type(self))
        new.data, new._grad, new.name = self.data, self._grad, self.name
        self._grad_finite = new._grad_finite = False
        return new

    def __repr__(self):
        return f"Parameter(shape={tuple(self.shape)}, dtype={self.dtype})"


def _check_input_args(ndim, channels, channel_axis):
    if channels is not None:
        check_int("check_input", "channels", channels, 0)
    check_int("check_input", "channel_axis", channel_axis)
    if not isinstance(ndim, range):                      # a range holds ints by construction
        for r in ((ndim,) if not isinstance(ndim, (tuple, list)) else ndim):
            check_int("check_input", "ndim", r, 0)


def check_input(layer: str, x, ndim, channels=None, channel_axis=1, dtype=None, what="x (input)"):
    """Validate a layer input: array type, floating dtype (matching ``dtype`` if given), rank and channels.

    ``ndim`` is an int or a tuple of accepted ranks. Raises ``TypeError``/``ValueError`` naming ``layer``,
    what was expected and what came (``TypeError`` naming ``check_input`` for a ``channels``,
    ``channel_axis`` or ``ndim`` that is not an int).
    """
    ranks_ok = (type(ndim) is range or (type(ndim) is int and ndim >= 0)
                or (type(ndim) is tuple and all(type(r) is int and r >= 0 for r in ndim)))
    if not (ranks_ok and type(channel_axis) is int
            and (channels is None or (type(channels) is int and channels >= 0))):  # the layers' calls pass
        _check_input_args(ndim, channels, channel_axis)
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{layer}: {what} must be an array, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{layer}: {what} must be float32 or float64, got dtype {x.dtype}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{layer}: {what} dtype {x.dtype} does not match the layer's parameters ({dtype}); "
                        f"convert one of them (Module.to(dtype) or x.astype)")
    ranks = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if x.ndim not in ranks:
        want = " or ".join(f"{r}-D" for r in ranks)
        raise ValueError(f"{layer}: {what} must be a {want} array, got shape {tuple(x.shape)}")
    if channels is not None and x.shape[channel_axis] != channels:
        raise ValueError(f"{layer}: {what} must have {channels} channels/features on axis {channel_axis}, "
                         f"got shape {tuple(x.shape)}")


def _end_pass(was_active):
    """Clear the hand-off after a ``Sequential`` pass (see :data:`orthoref.ops._contract.handoff`)."""
    handoff.g = handoff.sq = handoff.noted = None
    handoff.active = was_active


def _own_layer(layer) -> bool:
    """``layer`` is an instance of one of orthoref's own layer classes (defined in ``orthoref.nn``), whose
    ``forward`` and ``backward`` return finite arrays or raise; a user's ``Module`` subclass makes no such
    promise, so what it returns is checked by the next layer as usual (a subclass of ``Sequential`` too)."""
    if type(layer) is Sequential:
        return all(_own_layer(inner) for inner in layer)
    return type(layer).__module__.startswith("orthoref.nn.")


class Module:
    """Base class of layers: ``forward``, ``backward``, parameters, buffers, train/eval, state dicts.

    Subclasses store ``Parameter`` and ``Module`` attributes; they are found in attribute order.
    Buffers (running statistics) are arrays whose attribute names are listed in ``_buffer_names``.
    """

    training = True
    _buffer_names: tuple = ()

    # -- the two passes -------------------------------------------------------------------------------
    def forward(self, x):
        raise NotImplementedError

    def backward(self, grad_out, input_grad: bool = True):
        """Gradient w.r.t. the last forward's input (``None`` when ``input_grad`` is False); accumulates
        parameter gradients into ``.grad``."""
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    def _cached(self):
        cache = getattr(self, "_cache", None)
        if cache is None:
            raise BackwardBeforeForwardError(f"{type(self).__name__}.backward: called before forward (there "
                                             f"is no forward pass to differentiate)")
        return cache

    def _who(self):
        """The name of this layer's backward in error messages."""
        return f"{type(self).__name__}.backward"

    # -- traversal -------------------------------------------------------------------------------------
    def children(self):
        return [(k, v) for k, v in vars(self).items() if isinstance(v, Module)]

    def named_parameters(self, prefix: str = ""):
        for k, v in vars(self).items():
            if isinstance(v, Parameter):
                yield prefix + k, v
            elif isinstance(v, Module):
                yield from v.named_parameters(prefix + k + ".")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = ""):
        for name in self._buffer_names:
            yield prefix + name, getattr(self, name)
        for k, child in self.children():
            yield from child.named_buffers(prefix + k + ".")

    def zero_grad(self) -> None:
        """Reset every parameter's ``.grad`` to ``None`` (PyTorch's ``set_to_none=True``)."""
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True):
        self.training = check_bool(f"{type(self).__name__}.train", "mode", mode)
        for _, child in self.children():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def to(self, dtype):
        """Cast parameters and floating buffers to ``dtype`` in place; returns ``self``."""
        dt = float_dtype(f"{type(self).__name__}.to", dtype)
        for p in self.parameters():
            p.data = p.data.astype(dt, copy=False)
            p.grad = None
        self._cast_buffers(dt)
        return self

    def _cast_buffers(self, dt):
        for name in self._buffer_names:
            b = getattr(self, name)
            if b is not None and b.dtype.kind == "f":
                setattr(self, name, b.astype(dt, copy=False))
        for _, child in self.children():
            child._cast_buffers(dt)

    # -- state -----------------------------------------------------------------------------------------
    def state_dict(self):
        """Parameters and buffers as host NumPy copies, keyed as PyTorch would (``0.weight``, ...)."""
        out = OrderedDict()
        for k, p in self.named_parameters():
            out[k] = to_numpy(p.data).copy()
        for k, b in self.named_buffers():
            out[k] = np.array(to_numpy(b), copy=True)
        return out

    def load_state_dict(self, state) -> None:
        """Load a ``state_dict``: every key present, each value an array of exactly the shape and dtype of
        the parameter or buffer it replaces (a bool, int or complex array for a float parameter is refused,
        not cast), finite. Everything is checked before anything is assigned (no partial loads).

        Raises ``TypeError`` (not a mapping, not an array, another dtype) or ``ValueError`` (missing or
        unexpected keys, another shape; ``NonFiniteError`` for NaN/Inf), naming the key."""
        who = f"{type(self).__name__}.load_state_dict"
        if not hasattr(state, "keys") or not hasattr(state, "__getitem__"):
            raise TypeError(f"{who}: state must be a mapping of names to arrays (a state_dict), got "
                            f"{type(state).__name__}")
        params = dict(self.named_parameters())
        buffers = dict(self.named_buffers())
        expected = set(params) | set(buffers)
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise ValueError(f"{who}: missing keys {sorted(missing)}, unexpected keys "
                             f"{sorted(map(str, unexpected))}")
        for k in sorted(expected):
            current = params[k].data if k in params else buffers[k]
            _check_state_entry(who, k, state[k], current)
        for k, p in params.items():
            xp = get_array_module(p.data)
            p.data = xp.asarray(state[k], dtype=p.dtype).copy()
        for k in buffers:
            owner, attr = self._owner(k)
            old = getattr(owner, attr)
            xp = get_array_module(old)
            setattr(owner, attr, xp.asarray(state[k], dtype=old.dtype).copy())

    def _owner(self, dotted):
        *path, attr = dotted.split(".")
        owner = self
        for part in path:
            owner = getattr(owner, part)
        return owner, attr

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        kids = self.children()
        if not kids:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"  ({k}): " + repr(v).replace("\n", "\n  ") for k, v in kids]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


def _check_state_entry(who, key, value, current):
    """``value`` may replace ``current`` (a parameter's data or a buffer): an array of the same shape and
    dtype, finite when floating."""
    if not hasattr(value, "shape") or not hasattr(value, "dtype") or isinstance(value, np.generic):
        raise TypeError(f"{who}: {key} must be an array of shape {tuple(current.shape)} and dtype "
                        f"{current.dtype}, got {type(value).__name__}")
    if tuple(value.shape) != tuple(current.shape):
        raise ValueError(f"{who}: {key} has shape {tuple(value.shape)}, expected {tuple(current.shape)}")
    if value.dtype != current.dtype:
        raise TypeError(f"{who}: {key} has dtype {value.dtype}, expected {current.dtype} (no silent cast: "
                        f"convert it with .astype)")
    if current.dtype.kind == "f":
        host = to_numpy(value)
        if not all_finite(np, host):
            raise NonFiniteError(f"{who}: {key} must be finite, got NaN or Inf")


class Sequential(Module):
    """Layers applied in order; ``backward`` runs them in reverse.

    The first layer is asked for no input gradient when ``backward(..., input_grad=False)`` (the default
    of a training step on data), which saves the largest GEMM of an MLP or CNN, as autograd does.

    Output hooks: ``set_output_hook(i, hook)`` calls ``value, grad = hook(y)`` on layer ``i``'s output
    in every forward in training mode; ``grad`` (the gradient of an extra loss term w.r.t. ``y``, such as the
    Self-Orthogonality penalty) is added to the incoming gradient of that output in the next backward, so
    it flows into the layer's weights and upstream. ``hook_values()`` gives the last forward's values.
    """

    def __init__(self, *layers):
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: argument {i} must be a Module, got {type(layer).__name__}")
            setattr(self, str(i), layer)
        self._layers = list(layers)
        self._hooks = {}
        self._hook_out = {}

    def __len__(self):
        return len(self._layers)

    def __getitem__(self, i):
        return self._layers[i]

    def __iter__(self):
        return iter(self._layers)

    def set_output_hook(self, index, hook):
        """Attach ``hook(y) -> (value, grad_y)`` to the output of layer ``index`` (None removes it).
        ``ValueError`` for an index out of range (the hook's ``grad_y`` must later have ``y``'s exact shape
        and dtype)."""
        index = check_int("Sequential.set_output_hook", "index", index)
        if not -len(self._layers) <= index < len(self._layers):
            raise ValueError(f"Sequential.set_output_hook: index must be in [{-len(self._layers)}, "
                             f"{len(self._layers) - 1}] for {len(self._layers)} layers, got {index}")
        index %= len(self._layers)
        if hook is None:
            self._hooks.pop(index, None)
        elif not callable(hook):
            raise TypeError(f"Sequential.set_output_hook: hook must be callable, got {type(hook).__name__}")
        else:
            self._hooks[index] = hook

    def hook_values(self):
        """``{layer index: value}`` of the output hooks in the last forward pass."""
        return {i: v for i, (v, _) in self._hook_out.items()}

    def forward(self, x):
        self._hook_out = {}
        trusted = False                     # x is the finite output of one of orthoref's layers, unhooked
        sq = None                           # with trusted: a bound on Σ x² noted by that layer, or None
        was_active = getattr(handoff, "active", False)
        handoff.active = True
        try:
            for i, layer in enumerate(self._layers):
                handoff.g, handoff.sq = (x, sq) if trusted else (None, None)
                handoff.noted = None
                x = layer.forward(x)
                handoff.g = None
                trusted, sq = _own_layer(layer), noted_sq(x)
                if self.training and i in self._hooks:
                    trusted = False
                    out = self._hooks[i](x)
                    if not isinstance(out, tuple) or len(out) != 2:
                        raise TypeError(f"Sequential: output hook {i} must return (value, grad), got "
                                        f"{type(out).__name__}")
                    check_grad_meta(f"Sequential: output hook {i}", "grad", out[1], x.shape, x.dtype)
                    self._hook_out[i] = out
        finally:
            _end_pass(was_active)
        return x

    def backward(self, grad_out, input_grad: bool = True):
        g = grad_out
        last = len(self._layers) - 1
        sq = None                           # a bound on Σ g² noted by the layer that returned g, or None
        was_active = getattr(handoff, "active", False)
        handoff.active = True
        try:
            for i in range(last, -1, -1):
                handoff.g = handoff.sq = None
                if i in self._hook_out:
                    g = g + self._hook_out[i][1]
                elif i < last and _own_layer(self._layers[i + 1]):    # its verified dx: not re-read
                    handoff.g, handoff.sq = g, sq
                handoff.noted = None
                g = self._layers[i].backward(g, input_grad=input_grad or i > 0)
                handoff.g = None
                sq = noted_sq(g)
        finally:
            _end_pass(was_active)
        return g
