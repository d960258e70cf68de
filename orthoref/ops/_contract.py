"""The input/output contract of the ops' forward and backward passes, shared with the layers (private).

A backward pass validates its gradient ``dy`` (a layer's ``grad_out``) in two steps:

* :func:`check_grad_meta` before the math: an array of exactly the forward output's shape (no
  broadcasting) and dtype (``TypeError`` for a float64 ``dy`` of a float32 forward, or a complex one);
* :func:`check_grads` after it: ``dy``'s finiteness is read off the computed gradients with one reduction
  each (a NaN/Inf in ``dy`` reaches every gradient that contracts it; ``0 · Inf`` is NaN), and a gradient
  that is not finite although ``dy`` is (an overflow) raises :class:`~orthoref._checks.NonFiniteError` too.
  The gradients are checked before anything is accumulated, so an error leaves every ``.grad`` untouched.

A forward pass reads the finiteness of its inputs off its output the same way, with :func:`check_output`,
and reports an output that overflows from finite inputs. These are candidates for ``_checks.py``
(``check_cotangent(..., finite=False)`` and ``check_finite_result`` with the overflow branch).
"""
from __future__ import annotations

import contextlib
import threading
import math

import numpy as np

from .._checks import NonFiniteError, all_finite, check_cotangent, check_finite, check_result, finite_sum_squares
from ..backend import get_array_module

__all__ = ["MAX_ELEMENTS", "check_finite_handoff", "check_grad_meta", "check_grads", "check_output",
           "check_same_dtype", "check_size", "finite_handoff_sq", "handoff_sq", "memory_checked", "note_sq", "noted_sq", "verified"]

_HINT = "use float64 or rescale the input"

#: The most elements an array of a layer or op may have (NumPy's own limit is 2**63 bytes).
MAX_ELEMENTS = 2 ** 59


def check_size(who, what, shape):
    """``ValueError`` naming ``what`` (the arguments that set ``shape``) when an array of ``shape`` could
    never be allocated (more than :data:`MAX_ELEMENTS` elements), before anything is allocated."""
    n = math.prod(int(d) for d in shape)
    if n > MAX_ELEMENTS:
        raise ValueError(f"{who}: {what} ask for an array of shape {tuple(shape)} ({n} elements), more than can "
                         f"be allocated (at most {MAX_ELEMENTS})")


@contextlib.contextmanager
def memory_checked(who, what):
    """A ``MemoryError`` inside the block becomes a ``ValueError`` naming ``who`` and ``what``."""
    try:
        yield
    except MemoryError:
        raise ValueError(f"{who}: {what} ask for more memory than is available (MemoryError)") from None


#: The hand-off of :class:`orthoref.nn.Sequential` from one of orthoref's own layers to the next (per thread).
#:
#: ``g``: in ``forward`` the output the previous layer just returned, in ``backward`` the ``dx`` it just
#: returned. orthoref's layers return finite arrays or raise (the failure model), so the receiving layer need
#: not read the finiteness again (shape and dtype it still checks). Only ``Sequential`` sets it, for the
#: duration of one call, only for the outputs of orthoref's own layer classes with no user hook between.
#:
#: ``sq``: with ``g``, an upper bound on ``Σ g²`` (``None``: none known), what a ``Linear`` layer needs to
#: bound its weight gradient without reading its operands (:func:`orthoref.ops.linear._below_overflow`).
#: A layer's op *notes* the bound of the array it returns (:func:`note_sq`: a GEMM's output is measured by
#: its finiteness check anyway, ``ReLU`` passes its input's bound on, as ``|max(x, 0)| <= |x|``) and
#: ``Sequential`` hands it on with the array. ``active``: a ``Sequential`` pass is running (outside one,
#: nothing is noted, so that no array is kept alive by this object).
handoff = threading.local()


def verified(a) -> bool:
    """``a`` is the verified array being handed over by ``Sequential`` (see :data:`handoff`)."""
    return a is getattr(handoff, "g", None)


def check_finite_handoff(who, name, a, xp=None):
    """``a`` finite (one reduction), unless it is the verified hand-off (:func:`verified`)."""
    if not verified(a):
        check_finite(who, name, a, xp)


def finite_handoff_sq(who, name, a, xp=None):
    """:func:`check_finite_handoff` that returns a bound on ``Σ a²``: the hand-off's (``None`` when it came
    without one), else the sum measured by the finiteness check (``math.inf`` when not measured)."""
    if verified(a):
        return getattr(handoff, "sq", None)
    sq = finite_sum_squares(get_array_module(a) if xp is None else xp, a)
    if sq is None:
        check_finite(who, name, a, xp)                  # raises, naming it
    return sq


def handoff_sq(a):
    """The bound on ``Σ a²`` handed over with ``a`` (:data:`handoff`), ``None`` when ``a`` is not the
    hand-off or no bound came with it."""
    return getattr(handoff, "sq", None) if a is getattr(handoff, "g", None) else None


def note_sq(a, sq):
    """Within a ``Sequential`` pass, record ``Σ a² <= sq`` for ``a``, an array the caller returns *unchanged*
    (``sq`` ``None``: nothing known); :func:`noted_sq` gives the bound back for that same array object only.
    One slot per thread: the last note wins."""
    if getattr(handoff, "active", False):
        handoff.noted = (a, sq)


def noted_sq(a):
    """The bound last noted for ``a`` (:func:`note_sq`), ``None`` when the last note was for another array."""
    noted = getattr(handoff, "noted", None)
    return noted[1] if noted is not None and noted[0] is a else None


def check_grad_meta(who, name, g, shape, dtype):
    """``g`` is a float array of exactly ``shape`` and ``dtype`` (the forward output's); finiteness is left
    to :func:`check_grads` (:func:`orthoref._checks.check_cotangent` with ``finite=False``)."""
    check_cotangent(who, name, g, shape, dtype, finite=False)


def check_grads(who, name, g, *grads, covered=True, note=False):
    """``g`` finite and every gradient in ``grads`` (``None`` skipped) finite.

    ``covered``: at least one of ``grads`` depends on every element of ``g``, so that their finiteness
    implies ``g``'s (one reduction per gradient, none over ``g``); otherwise ``g`` is checked directly.
    ``NonFiniteError`` naming ``g`` when it holds NaN/Inf, else naming the overflow. Several incoming
    gradients: ``name`` and ``g`` tuples (``None`` entries skipped). ``note``: the caller returns the last
    of ``grads`` unchanged, and its measured ``Σ r²`` is noted for the next layer (:func:`note_sq`)."""
    if covered and type(name) is str and type(g) is np.ndarray:     # the common case, without allocations
        last = sq = None
        for r in grads:
            if r is not None:
                last, sq = r, finite_sum_squares(np, r)
                if sq is None:
                    break
        else:
            if note and last is not None:
                note_sq(last, sq)
            return
    pairs = list(zip(name, g)) if isinstance(name, tuple) else [(name, g)]
    pairs = [(n, a) for n, a in pairs if a is not None]
    if not pairs:
        return
    xp = get_array_module(pairs[0][1])
    bad = next((r for r in grads if r is not None and not all_finite(xp, r)), None)
    if bad is None and covered:
        return
    for n, a in pairs:
        check_finite(who, n, a, xp)
    name = " and ".join(n for n, _ in pairs)
    if bad is not None:
        raise NonFiniteError(f"{who}: the gradient overflows {np.dtype(bad.dtype).name} (NaN or Inf) although "
                             f"{name} is finite; {_HINT}")


def check_output(who, y, *named, what="the output", note=False):
    """Finiteness of the inputs ``named`` (``(name, array)`` pairs, ``None`` skipped) read off ``y``, which
    depends on every element of each; a non-finite ``y`` from finite inputs raises ``NonFiniteError`` (an
    overflow). Returns ``y``. ``note``: the caller returns ``y`` unchanged, and its measured ``Σ y²`` is
    noted for the next layer (:func:`note_sq`)."""
    xp = np if type(y) is np.ndarray else get_array_module(y)
    if y.size:
        sq = finite_sum_squares(xp, y)
        if sq is not None:
            if note:
                note_sq(y, sq)
            return y
    for name, a in named:
        if a is not None:
            check_finite(who, name, a, xp)
    if y.size:
        check_result(who, y, what, _HINT)
    return y


def check_same_dtype(who, first, *named):
    """Every array of ``named`` (``(name, array)`` pairs, ``None`` skipped) has the dtype of ``first`` (a
    ``(name, array)`` pair): ``TypeError`` naming both, never a silent up-cast."""
    name0, a0 = first
    for name, a in named:
        if a is not None and a.dtype != a0.dtype:
            raise TypeError(f"{who}: {name} must have the dtype of {name0} ({a0.dtype}), got {a.dtype}; "
                            f"convert one of them with .astype")
