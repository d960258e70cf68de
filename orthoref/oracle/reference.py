"""The oracle's public face: a float64 reference value and vector-Jacobian product for any registered op,
and a comparison report for someone else's value and gradients.

>>> import numpy as np
>>> from orthoref import oracle
>>> W = np.random.default_rng(0).standard_normal((3, 5))
>>> value, vjp = oracle.reference("soft_orthogonality", W)
>>> (dW,) = vjp(np.ones(()))                 # gradient of the value (cotangent 1)
>>> report = oracle.compare("soft_orthogonality", [W], value, their_grads=[dW])
>>> report.passed
True

Errors are norm-wise relative: ``max|theirs − ours| / max|ours|`` per output and per gradient (absolute
where the reference is all zero). A float64 implementation must meet the op's documented tolerance
(:func:`tolerance`); a float32 one its per-sample error budget (:func:`error_budget`): what the problem itself
allows a correct float32 code, so that a near-orthogonal weight (whose ``G − I`` cancels digits) is no false
alarm and a well-conditioned one keeps the fixed tolerance.
"""
from __future__ import annotations

import difflib
import fnmatch
import functools
from dataclasses import dataclass, field

import numpy as np

from .._checks import check_int, check_real
from .registry import all_specs, get

__all__ = ["cast_kwargs", "names", "specs_matching", "reference", "compare", "CompareReport", "ErrorRow", "tolerance",
           "FLOAT32_RTOL", "to_host", "error_budget", "ErrorBudget", "BUDGET_FACTOR", "BUDGET_DRAWS"]

#: Default tolerance for a float32 implementation checked against the float64 reference on the same
#: (float32-representable) inputs; an op whose float32 error is larger by construction sets ``rtol32``.
#: It is also the floor of every float32 error budget (:func:`error_budget`).
FLOAT32_RTOL = 1e-5

#: The ``c`` of a float32 verdict ``error <= max(floor, c × budget)`` (:func:`error_budget`). The budget is the
#: effect of one rounding of the inputs; a correct kernel rounds more: elementwise and BLAS code measured
#: within 1.3× of the budget (torch float32 on every registered sample and on near-orthogonal weights), dense
#: factorizations (SVD, eigh: backward stable with a constant p(n)·u) up to 10×. 32 leaves 3× over the worst
#: measured; a real bug is off by far more (``tests/test_budgets.py``: planted bugs).
BUDGET_FACTOR = 32.0

#: Random one-rounding perturbations of the inputs per budget.
BUDGET_DRAWS = 4


def names() -> list:
    """Names of every registered op, layer, loss, regularizer and projection."""
    return [s.name for s in all_specs()]


def check_patterns(patterns, who="specs_matching", name="patterns"):
    """The shell patterns of ``patterns`` (a comma-separated string or a sequence of strings)."""
    items = patterns.split(",") if isinstance(patterns, str) else patterns
    if isinstance(patterns, (bytes, dict)) or not isinstance(items, (list, tuple)) \
            or not all(isinstance(p, str) for p in items):
        raise TypeError(f"{who}: {name} must be a comma-separated string or a list of strings, got "
                        f"{type(patterns).__name__} {patterns!r}")
    return [p.strip() for p in items if p.strip()]


def specs_matching(patterns="*"):
    """Registered specs whose name matches any of the comma-separated shell patterns (``"nn.*,relu"``)."""
    pats = check_patterns(patterns)
    return [s for s in all_specs() if any(fnmatch.fnmatchcase(s.name, p) for p in pats)]


def floating_dtype(who, dtype):
    """``dtype`` as a NumPy floating dtype (any precision: a verdict may concern float16 too); ``TypeError``
    naming ``who`` otherwise."""
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError):
        raise TypeError(f"{who}: dtype must be a numpy floating dtype, got {dtype!r}") from None
    if dt.kind != "f":
        raise TypeError(f"{who}: dtype must be a floating dtype, got {dt}")
    return dt


def tolerance(spec, dtype) -> float:
    """The relative tolerance an implementation computing in ``dtype`` must meet against the reference:
    the op's conformance tolerance (``torch_rtol``, 1e-10 unless the op documents more) for float64, its
    ``rtol32`` (default :data:`FLOAT32_RTOL`) for float32 and lower."""
    if not hasattr(spec, "torch_rtol"):
        raise TypeError(f"tolerance: spec must be a registered OpSpec (orthoref.oracle.registry.get(name)), got "
                        f"{type(spec).__name__}")
    dtype = floating_dtype("tolerance", dtype)
    if dtype == np.float64:
        return spec.torch_rtol
    return getattr(spec, "rtol32", None) or FLOAT32_RTOL


def to_host(x, name="input"):
    """A host NumPy array from a NumPy/CuPy/PyTorch/JAX array, list or scalar (a torch tensor is detached
    and moved to the CPU); raises ``TypeError`` for anything that is not numeric."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):      # torch.Tensor
        x = x.detach().cpu().numpy()
    elif hasattr(x, "get") and type(x).__module__.startswith("cupy"):
        x = x.get()
    try:
        a = np.asarray(x)
    except Exception:
        raise TypeError(f"{name} must be an array, got a ragged or non-numeric {type(x).__name__}") from None
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real numeric array (float or integer), got dtype {a.dtype}")
    return a


def cast_kwargs(kwargs, dtype):
    """``kwargs`` with floating array values (a base point, a power-iteration start) cast to ``dtype``, as a
    framework computing in ``dtype`` would hold them."""
    return {k: v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
            for k, v in kwargs.items()}


@functools.lru_cache(maxsize=None)
def _input_counts(name):
    """(fewest, most) inputs among the registered samples of ``name`` (conv2d: 2 or 3, the bias optional)."""
    counts = [len(s.inputs) for s in get(name).sample(np.random.default_rng(0), np.float64)]
    return min(counts), max(counts)


def _float64_inputs(who, spec, inputs):
    """The inputs as float64 (floating) / int64 (integer) host arrays; ``TypeError`` / ``ValueError``
    naming ``who`` and the input for a wrong count, a non-numeric or complex or bool array, NaN or Inf."""
    lo, hi = _input_counts(spec.name)
    if not lo <= len(inputs) <= hi:
        want = str(lo) if lo == hi else f"{lo} to {hi}"
        raise ValueError(f"{who}: {spec.name} takes {want} input(s), got {len(inputs)}")
    out = []
    for k, x in enumerate(inputs):
        a = to_host(x, f"{who}: {spec.name}: input {k}")
        if a.dtype.kind == "f":
            if not np.isfinite(a).all():
                raise ValueError(f"{who}: {spec.name}: input {k} must be finite, got NaN or Inf")
            out.append(np.array(a, dtype=np.float64))
        else:
            out.append(np.array(a, dtype=np.int64))
    return tuple(out)


def lookup_spec(name, who="reference"):
    """The spec of the registered op ``name``; ``ValueError`` listing close names when there is none."""
    if not isinstance(name, str):
        raise TypeError(f"{who}: name must be a registered op name (a str), got {type(name).__name__} {name!r}")
    try:
        return get(name)
    except KeyError:
        raise ValueError(f"{who}: {unknown_op(name, 'argument name')}") from None


def unknown_op(name, where=None) -> str:
    """The one wording for an op name the registry does not know, with the close registered names
    (``where``: what held the name, e.g. ``"argument name"``, shown in parentheses)."""
    close = difflib.get_close_matches(name, names(), n=5, cutoff=0.5)
    hint = f"; close names: {', '.join(close)}" if close else ""
    where = f" ({where})" if where else ""
    return f"no registered op named {name!r}{where}{hint}; orthoref.oracle.names() lists the {len(names())} registered ops"


def _apply(who, spec, args, kwargs):
    """``spec.apply`` on checked inputs: the op's own ``TypeError``/``ValueError`` pass through; any other
    exception (an op that has not learnt to refuse these inputs) becomes a ``ValueError`` naming ``who``."""
    if kwargs is not None and not isinstance(kwargs, dict):
        raise TypeError(f"{who}: kwargs must be a dict of the op's keyword arguments, got {type(kwargs).__name__}")
    try:
        return spec.apply(*args, **cast_kwargs(kwargs or {}, np.float64))
    except (TypeError, ValueError):
        raise
    except Exception as exc:
        shapes = ", ".join(str(a.shape) for a in args)
        raise ValueError(f"{who}: {spec.name} cannot be evaluated at inputs of shapes {shapes} "
                         f"({type(exc).__name__})") from exc


def _cotangents(who, name, cotangent, outputs):
    """The cotangents as float64 arrays of exactly the outputs' shapes, finite; errors name ``who``."""
    cot = cotangent if isinstance(cotangent, (tuple, list)) else (cotangent,)
    if len(cot) != len(outputs):
        raise ValueError(f"{who}: {name} has {len(outputs)} output(s), so cotangent must hold "
                         f"{len(outputs)} array(s), got {len(cot)}")
    cots = []
    for k, (c, y) in enumerate(zip(cot, outputs)):
        c = np.array(to_host(c, f"{who}: {name}: cotangent {k}"), dtype=np.float64)
        if c.shape != y.shape:
            raise ValueError(f"{who}: {name}: cotangent {k} must have the output's shape {y.shape}, "
                             f"got {c.shape}")
        if not np.isfinite(c).all():
            raise ValueError(f"{who}: {name}: cotangent {k} must be finite, got NaN or Inf")
        cots.append(c)
    return tuple(cots)


def reference(name, *inputs, **kwargs):
    """Float64 reference value and vector-Jacobian product of the registered op ``name``.

    Parameters
    ----------
    name : str
        A registered name (:func:`names`), e.g. ``"conv2d"``, ``"nn.Linear"``, ``"polar"``.
    *inputs : array_like
        The op's array inputs in registry order (NumPy, CuPy, PyTorch or JAX arrays). Floating inputs are
        converted to float64 — the oracle answers in float64 whatever the caller computes in — and integer
        inputs (labels) to int64.
    **kwargs
        The op's keyword arguments (floating arrays among them are converted to float64 too).

    Returns
    -------
    value : ndarray or tuple of ndarray
        The output (a tuple for ops with several outputs).
    vjp : callable
        ``vjp(cotangent)`` with ``cotangent`` of exactly the shape of ``value`` (a tuple for several outputs),
        finite, returns a tuple with one float64 gradient per input — ``∑ cotangent ⊙ ∂value/∂input`` — and
        ``None`` for integer inputs.

    Raises
    ------
    ValueError
        ``name`` not registered (the message lists close names), a wrong number of inputs, NaN/Inf in an
        input, inputs the op refuses; from ``vjp``: a cotangent of another shape (no broadcasting) or
        count, NaN/Inf in it. Each message names the function and the argument.
    TypeError
        ``name`` not a str, an input that is not a real numeric array (complex, bool, object, ragged).
    """
    spec = lookup_spec(name)
    args = _float64_inputs("reference", spec, inputs)
    outputs, vjp = _apply("reference", spec, args, kwargs)
    outputs = tuple(np.asarray(to_host(y)) for y in outputs)

    def reference_vjp(cotangent, _who="reference vjp"):
        cots = _cotangents(_who, name, cotangent, outputs)
        grads = vjp(cots)
        return tuple(None if g is None else np.asarray(to_host(g), dtype=np.float64) for g in grads)

    return (outputs[0] if len(outputs) == 1 else outputs), reference_vjp


@dataclass
class ErrorRow:
    """One compared array: ``what`` is ``value[k]`` or ``grad[k]``; ``budget`` and ``why``: the float32 error
    budget that set ``rtol`` and what set it (``None`` and ``""`` for a fixed tolerance)."""
    what: str
    shape: tuple
    max_abs: float
    max_rel: float
    rtol: float
    budget: float = None
    why: str = ""

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_rel)) and self.max_rel <= self.rtol


@dataclass
class CompareReport:
    """Errors of someone else's value and gradients against the reference; ``str()`` prints a table,
    :meth:`to_dict` gives JSON-ready data, :attr:`passed` the verdict."""
    name: str
    dtype: str
    rows: list = field(default_factory=list)
    note: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r.passed for r in self.rows)     # nothing compared is no pass

    @property
    def max_rel(self) -> float:
        return max((r.max_rel for r in self.rows), default=0.0)

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "passed": self.passed, "note": self.note,
                "rows": [{"what": r.what, "shape": list(r.shape), "max_abs_error": r.max_abs,
                          "max_rel_error": r.max_rel, "rtol": r.rtol, "passed": r.passed,
                          **({} if r.budget is None else {"budget": r.budget, "why": r.why})}
                         for r in self.rows]}

    def __str__(self) -> str:
        head = f"{self.name} ({self.dtype}): {'PASS' if self.passed else 'FAIL'}"
        budgets = any(r.budget is not None for r in self.rows)
        lines = [head + (f" — {self.note}" if self.note else ""),
                 f"  {'array':<10} {'shape':<14} {'max abs err':>12} {'max rel err':>12} {'rtol':>8}  result"
                 + (f"  {'budget':>8}  why" if budgets else "")]
        for r in self.rows:
            shape = "x".join(map(str, r.shape)) or "()"
            lines.append(f"  {r.what:<10} {shape:<14} {r.max_abs:>12.3e} {r.max_rel:>12.3e} {r.rtol:>8.0e}  "
                         f"{'pass' if r.passed else 'FAIL'}"
                         + ("" if r.budget is None else f"    {r.budget:>8.1e}  {r.why}"))
        return "\n".join(lines)

    __repr__ = __str__


def error_row(what, ours, theirs, rtol) -> ErrorRow:
    """Norm-wise errors of ``theirs`` against the reference ``ours``; infinite (a failure) when the shapes
    differ or either side holds NaN/Inf."""
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(theirs, dtype=np.float64)
    if a.shape != b.shape:
        return ErrorRow(what, a.shape, float("inf"), float("inf"), rtol)
    if a.size == 0:
        return ErrorRow(what, a.shape, 0.0, 0.0, rtol)
    diff = np.abs(a - b)
    max_abs = float(diff.max()) if np.isfinite(diff).all() else float("inf")
    scale = float(np.abs(a).max())
    return ErrorRow(what, a.shape, max_abs, max_abs / scale if scale > 0 else max_abs, rtol)


@dataclass
class ErrorBudget:
    """Float32 (or lower) error budgets of one sample, one per compared array (``value[k]``, ``grad[k]``), in
    the units of :attr:`ErrorRow.max_rel`; :meth:`rtol` turns one into a tolerance, :meth:`error_row` into a
    verdict. Made by :func:`error_budget`."""
    name: str
    dtype: str
    budgets: dict
    whys: dict
    floor: float
    factor: float = BUDGET_FACTOR

    def rtol(self, what) -> float:
        """``max(floor, factor × budget)`` of the array ``what`` (the floor for an array without a budget)."""
        return max(self.floor, self.factor * self.budgets.get(what, 0.0))

    def why(self, what) -> str:
        """What set :meth:`rtol`: ``"floor"``, or ``"32×spread"`` / ``"32×own f32"`` (the larger estimate)."""
        if self.factor * self.budgets.get(what, 0.0) <= self.floor:
            return "floor"
        return f"{self.factor:g}×{self.whys[what]}"

    def error_row(self, what, ours, theirs) -> ErrorRow:
        """:func:`error_row` of ``theirs`` against ``ours`` with this budget's tolerance, budget and reason."""
        row = error_row(what, ours, theirs, self.rtol(what))
        row.budget, row.why = self.budgets.get(what, 0.0), self.why(what)
        return row


def _perturbed(a, u, gen):
    """``a`` with every floating element moved by a random relative ``±u`` (one rounding to the dtype)."""
    if not (isinstance(a, np.ndarray) and a.dtype.kind == "f"):
        return a
    return np.asarray(a * (1.0 + u * gen.choice((-1.0, 1.0), size=a.shape)), dtype=a.dtype)


def _spreads(name, ours, grads, others, other_grads, into, why):
    """Raise ``into[what]`` to the error of ``others`` / ``other_grads`` against the reference (``why`` the
    estimate's label where it does)."""
    pairs = [(f"value[{k}]", o, t) for k, (o, t) in enumerate(zip(ours, others))]
    pairs += [(f"grad[{k}]", g, t) for k, (g, t) in enumerate(zip(grads, other_grads)) if g is not None]
    for what, o, t in pairs:
        err = error_row(what, o, np.zeros_like(o) if t is None else to_host(t), 0.0).max_rel
        if err > into[what][0]:
            into[what] = (err, why)


def error_budget(name, inputs, kwargs=None, cotangents=None, *, dtype=None, draws=BUDGET_DRAWS, rng=0,
                 own=True) -> ErrorBudget:
    """Per-sample error budget of an implementation computing ``name`` in float32 (or lower) on ``inputs``.

    The budget of each output and gradient is the largest of three estimates, in the units of the
    norm-wise relative error of :func:`compare`:

    - the unit roundoff ``u`` of the dtype (2⁻²⁴ for float32): the output itself must be rounded;
    - the *spread* of the float64 reference under ``draws`` random perturbations of every floating input,
      floating keyword argument and cotangent by a relative ``±u`` elementwise — a first-order forward-error
      estimate, ``u × condition number``: large where the problem cancels digits (``G − I`` of a
      near-orthogonal weight), near a kink or a tie (where the reference itself jumps);
    - with ``own``, the error of orthoref's own algorithm run in ``dtype`` (its rounding, which perturbing
      the inputs does not see).

    A ``dtype`` implementation passes when its error is at most ``max(floor, c × budget)``, with
    ``c =`` :data:`BUDGET_FACTOR` (32) and the floor the op's fixed tolerance (:func:`tolerance`: its
    ``rtol32`` or :data:`FLOAT32_RTOL`, 1e-5), so that a well-conditioned sample keeps the tolerance it always
    had and only a sample that cancels digits gets more. Every registered op's PyTorch twin run in float32
    passes these budgets on every registered sample and on near-orthogonal weights down to
    ``‖G − I‖_F/√k = 1e-4``, while planted bugs in the twins are caught (``tests/test_budgets.py``).

    Parameters
    ----------
    name : str or OpSpec
        A registered op name (or its spec).
    inputs : sequence of arrays
        The inputs in ``dtype``, as the implementation holds them.
    kwargs : dict, optional
        The op's keyword arguments.
    cotangents : array or sequence of arrays, optional
        The output cotangent(s) of the gradients to budget; default ones (as :func:`compare`).
    dtype : numpy dtype, optional
        The implementation's precision; default the inputs' floating dtype.
    draws : int
        Number of random perturbations (:data:`BUDGET_DRAWS`).
    rng : int or numpy.random.Generator
        Seed of the perturbations (the budget is deterministic for a given seed).
    own : bool
        Include orthoref's own ``dtype`` error (an op it cannot run in ``dtype`` is left out, noted nowhere:
        the other estimates stand).

    Returns
    -------
    ErrorBudget
        ``.rtol("value[0]")``, ``.rtol("grad[1]")``, ``.error_row(what, ours, theirs)``.

    Raises
    ------
    ValueError / TypeError
        As :func:`reference` for ``name``, ``inputs``, ``kwargs`` and ``cotangents``; a ``dtype`` that is not
        floating. Messages start with ``error_budget:``.
    """
    who = "error_budget"
    spec = name if hasattr(name, "apply") and hasattr(name, "torch_rtol") else lookup_spec(name, who)
    hosts = [to_host(x, f"{who}: {spec.name}: input {k}") for k, x in enumerate(_as_tuple(inputs))]
    if dtype is None:
        floats = [a.dtype for a in hosts if a.dtype.kind == "f"]
        dtype = np.result_type(*floats) if floats else np.dtype(np.float64)
    dtype = floating_dtype(who, dtype)
    draws = check_int(who, "draws", draws, 0)
    kwargs = cast_kwargs(kwargs or {}, np.float64)
    args = _float64_inputs(who, spec, hosts)
    outputs, vjp = _apply(who, spec, args, kwargs)
    ours = tuple(np.asarray(to_host(y)) for y in outputs)
    cots = (tuple(np.ones(o.shape) for o in ours) if cotangents is None
            else _cotangents(who, spec.name, cotangents, ours))
    grads = tuple(None if g is None else np.asarray(to_host(g), dtype=np.float64) for g in vjp(cots))
    u = float(np.finfo(dtype).eps) / 2
    found = {f"value[{k}]": (u, "u") for k in range(len(ours))}
    found.update({f"grad[{k}]": (u, "u") for k, g in enumerate(grads) if g is not None})
    gen = np.random.default_rng(rng)
    for _ in range(draws):
        try:
            p_out, p_vjp = spec.apply(*(_perturbed(a, u, gen) for a in args),
                                      **{k: _perturbed(v, u, gen) for k, v in kwargs.items()})
            p_grads = p_vjp(tuple(_perturbed(c, u, gen) for c in cots))
        except ValueError:  # a draw off the op's domain (a base point checked orthonormal to 1e-8): not counted
            continue
        _spreads(spec.name, ours, grads, [to_host(y) for y in p_out], p_grads, found, "spread")
    if own and dtype != np.float64:
        _own_error(spec, args, kwargs, cots, dtype, ours, grads, found)
    floor = tolerance(spec, dtype)
    return ErrorBudget(spec.name, str(dtype), {w: b for w, (b, _) in found.items()},
                       {w: why for w, (_, why) in found.items()}, floor)


def _own_error(spec, args, kwargs, cots, dtype, ours, grads, found):
    """Raise ``found`` to the error of orthoref's own algorithm in ``dtype`` (skipped where it cannot run)."""
    low = tuple(a.astype(dtype) if a.dtype.kind == "f" else a for a in args)
    try:
        o_out, o_vjp = spec.apply(*low, **cast_kwargs(kwargs, dtype))
        o_grads = o_vjp(tuple(c.astype(dtype) for c in cots))
    except Exception:  # an op that computes in float64 only: the other estimates stand
        return
    _spreads(spec.name, ours, grads, [to_host(y) for y in o_out], o_grads, found, "own f32")


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def compare(name, inputs, their_value, their_grads=None, cotangent=None, rtol=None, *, kwargs=None):
    """Compare another implementation's value (and gradients) of ``name`` with the float64 reference.

    Parameters
    ----------
    name : str
        A registered op name.
    inputs : array or sequence of arrays
        The inputs both sides were evaluated at (their dtype sets the default tolerance).
    their_value : array or sequence of arrays
        Their output(s).
    their_grads : sequence, optional
        Their gradient of each input (``None`` entries are skipped), i.e. the VJP with ``cotangent``.
    cotangent : array or sequence of arrays, optional
        The output cotangent(s) they used; default ones, i.e. the gradient of ``value.sum()``. Prefer a
        random cotangent: ones hide transposed gradients.
    rtol : float, optional
        Relative tolerance, finite and > 0, for every row. Default: for float64 inputs :func:`tolerance`;
        for float32 (and lower) inputs each row's error budget, ``max(floor, 32 × budget)``
        (:func:`error_budget`), which the report's rows show with what set it.
    kwargs : dict, optional
        The op's keyword arguments.

    Returns
    -------
    CompareReport
        Their NaN/Inf values or gradients are a failed row, not an error.

    Raises
    ------
    ValueError / TypeError
        As :func:`reference` for ``name``, ``inputs`` and ``cotangent`` (exact output shapes, finite); a
        ``their_value`` / ``their_grads`` of the wrong count or shape, a non-numeric one; ``rtol`` not a
        finite number > 0. Messages start with ``compare:`` and name the argument.
    """
    who = "compare"
    spec = lookup_spec(name, who)
    inputs = _as_tuple(inputs)
    hosts = [to_host(x, f"{who}: {name}: input {k}") for k, x in enumerate(inputs)]
    floats = [a.dtype for a in hosts if a.dtype.kind == "f"]
    dtype = np.result_type(*floats) if floats else np.dtype(np.float64)
    tol = tolerance(spec, dtype) if rtol is None else check_real(who, "rtol", rtol, 0, lo_open=True)
    args = _float64_inputs(who, spec, hosts)
    outputs, vjp = _apply(who, spec, args, kwargs)
    ours = tuple(np.asarray(to_host(y)) for y in outputs)
    theirs = _as_tuple(their_value)
    if len(theirs) != len(ours):
        raise ValueError(f"{who}: their_value has {len(theirs)} output(s), {name} has {len(ours)}")
    theirs = [to_host(t, f"{who}: their_value[{k}]") for k, t in enumerate(theirs)]
    for k, (o, t) in enumerate(zip(ours, theirs)):
        if t.shape != o.shape:
            raise ValueError(f"{who}: their_value[{k}] must have shape {o.shape}, got {t.shape}")
    if their_grads is not None:
        their_grads = _as_tuple(their_grads)
        if len(their_grads) != len(hosts):
            raise ValueError(f"{who}: their_grads must have one entry per input ({len(hosts)}), got "
                             f"{len(their_grads)} (use None for inputs without a gradient)")
    cot = None if cotangent is None else _cotangents(who, name, cotangent, ours)
    budget = error_budget(spec, hosts, kwargs, cot, dtype=dtype) if rtol is None and dtype != np.float64 else None

    def row(what, o, t):
        return error_row(what, o, t, tol) if budget is None else budget.error_row(what, o, t)
    report = CompareReport(name, str(dtype))
    report.rows += [row(f"value[{k}]", o, t) for k, (o, t) in enumerate(zip(ours, theirs))]
    if their_grads is None:
        return report
    cot = tuple(np.ones(o.shape) for o in ours) if cot is None else cot
    if cotangent is None:
        report.note = "cotangent ones (gradient of the sum of the outputs)"
    grads = tuple(None if g is None else np.asarray(to_host(g), dtype=np.float64) for g in vjp(cot))
    skipped = [k for k, (g, t) in enumerate(zip(grads, their_grads)) if g is not None and t is None]
    if skipped:
        report.note = "; ".join(filter(None, [report.note, f"gradients of inputs {skipped} not compared "
                                                          f"(None given)"]))
    for k, (g, t) in enumerate(zip(grads, their_grads)):
        if t is None or g is None:
            continue
        t = to_host(t, f"{who}: their_grads[{k}]")
        if t.shape != g.shape:
            raise ValueError(f"{who}: their_grads[{k}] must have input {k}'s shape {g.shape}, got {t.shape}")
        report.rows.append(row(f"grad[{k}]", g, t))
    return report
