"""Check *your* implementation of an op against orthoref's float64 reference, on every registered sample.

An engineer of another framework writes the op in PyTorch, JAX, NumPy or CuPy; :func:`check` runs it on
each registered sample of the op (:mod:`orthoref.oracle.registry`), in each dtype, takes its gradient with
the framework's autograd (or the user's ``vjp``) against a random output cotangent, and compares value and
gradients with the float64 reference through :func:`orthoref.oracle.reference.compare` — the same errors
and tolerances as ``orthoref oracle check``::

    import torch
    from orthoref.testing import assert_conforms
    def so(W, weight=1.0, gram="auto"):                     # λ‖G − I‖²_F, G the smaller Gram matrix
        M = W.reshape(len(W), -1); rows = gram == "rows" or (gram == "auto" and len(M) <= M.shape[1])
        G = M @ M.T if rows else M.T @ M
        return weight * ((G - torch.eye(len(G), dtype=W.dtype)) ** 2).sum()
    assert_conforms("soft_orthogonality", so, framework="torch")

:func:`cases` gives the same samples one by one (:class:`Case`), for a test-suite that wants one test per
sample; the pytest plugin :mod:`orthoref.pytest_plugin` builds on it.
"""
from __future__ import annotations

import inspect
import re
import zlib
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .oracle.reference import FLOAT32_RTOL, cast_kwargs, compare, lookup_spec, reference, tolerance

__all__ = ["FRAMEWORKS", "SAMPLES", "Case", "Row", "Report", "cases", "check", "assert_conforms", "is_stress",
           "StepRow", "OptimizerReport", "check_optimizer", "OPTIMIZER_RTOL"]

#: The frameworks :func:`check` converts the inputs to.
FRAMEWORKS = ("numpy", "torch", "jax", "cupy")
#: The sample selections: every sample, the well-conditioned ones, the stress ones.
SAMPLES = ("all", "standard", "stress")
_DTYPES = ("float64", "float32")


def is_stress(sample) -> bool:
    """Whether a registered sample is a *stress* sample (near-orthogonal weights, ill-conditioned inputs,
    ties, extreme scales or shapes): a ``stress`` attribute that is true, or a label starting with
    ``"stress"``. The other samples are the *standard*, well-conditioned ones."""
    return bool(getattr(sample, "stress", False)) or str(getattr(sample, "label", "")).startswith("stress")


def _slug(label) -> str:
    return re.sub(r"\s+", "_", str(label).strip())


# ---------------------------------------------------------------------------------------------------------
# the samples

@dataclass
class Case:
    """One registered sample of an op in one dtype, as :func:`check` runs it.

    Attributes
    ----------
    name : str
        The op.
    index : int
        The sample's position among the op's registered samples (the same in every dtype).
    label : str
        The sample's label (``"square"``, ``"tall rows"``, ...).
    dtype : str
        ``"float64"`` or ``"float32"``.
    inputs : tuple of ndarray
        The inputs as host NumPy arrays, floating ones in ``dtype`` (integer labels stay int64).
    kwargs : dict
        The op's keyword arguments, floating arrays among them in ``dtype``.
    stress : bool
        A stress sample (:func:`is_stress`).
    """
    name: str
    index: int
    label: str
    dtype: str
    inputs: tuple
    kwargs: dict
    stress: bool = False
    sample: object = field(default=None, repr=False)

    @property
    def id(self) -> str:
        """``NAME-DTYPE-INDEX-LABEL`` (blanks of the label as ``_``): the pytest id of the case."""
        slug = _slug(self.label)
        return f"{self.name}-{self.dtype}-{self.index}" + (f"-{slug}" if slug else "")

    def check(self, fn, *, framework="numpy", grad=True, vjp=None, kwargs_map=None) -> "Report":
        """Run :func:`check`'s comparison on this case alone and assert that it passes.

        Returns
        -------
        Report
            One row, passed.

        Raises
        ------
        AssertionError
            Carrying the report's table when the row fails.
        """
        report = _run(self.name, [self], fn, framework, grad, vjp, kwargs_map)
        if not report.passed:
            raise AssertionError("\n" + str(report))
        return report


def _check_dtypes(who, dtypes):
    items = (dtypes,) if isinstance(dtypes, (str, type, np.dtype)) else dtypes
    try:
        out = tuple(np.dtype(d).name for d in items)
    except TypeError:
        out = ()
    if not out or any(d not in _DTYPES for d in out):
        raise ValueError(f"{who}: dtypes must be a non-empty sequence of 'float64' and/or 'float32', got {dtypes!r}")
    return out


def cases(name, dtypes=_DTYPES, samples="all", seed=0) -> list:
    """The registered samples of op ``name`` in each dtype, as :class:`Case` objects.

    Parameters
    ----------
    name : str
        A registered op name (:func:`orthoref.oracle.names`).
    dtypes : sequence of {"float64", "float32"}
        Each sample is drawn once (in float64, from a generator seeded by the op's name and ``seed``, as
        ``orthoref oracle check`` draws them) and rounded to each dtype.
    samples : {"all", "standard", "stress"}
        ``"standard"``: the well-conditioned samples; ``"stress"``: the samples labelled as stress
        (:func:`is_stress`); ``"all"``: both.
    seed : int
        Added to the op's seed.

    Returns
    -------
    list of Case
        Sample by sample, each in every dtype.

    Raises
    ------
    ValueError
        An unknown op (the message lists close names), dtypes or samples outside the lists above, and a
        selection with no sample: ``samples="stress"`` on an op without stress samples raises
        ``no stress samples registered for NAME`` rather than passing vacuously.
    """
    return _select("cases", name, dtypes, samples, seed)


def _drawn(spec, name, samples, seed):
    """The op's registered samples, then (unless ``samples="standard"``) its stress samples
    (``spec.stress``, drawn from a generator of their own so the standard ones never change)."""
    drawn = spec.sample(np.random.default_rng(zlib.crc32(name.encode()) + seed), np.float64)
    stress = getattr(spec, "stress", None)
    if samples != "standard" and stress is not None:
        drawn = list(drawn) + list(stress(np.random.default_rng(zlib.crc32(name.encode()) + seed), np.float64))
    return drawn


def _select(who, name, dtypes, samples, seed):
    spec = lookup_spec(name, who)
    dtypes = _check_dtypes(who, dtypes)
    if samples not in SAMPLES:
        raise ValueError(f"{who}: samples must be one of {', '.join(SAMPLES)}, got {samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{who}: seed must be an integer >= 0, got {seed!r}")
    drawn = _drawn(spec, name, samples, int(seed))
    out = []
    for index, sample in enumerate(drawn):
        stress = is_stress(sample)
        if samples != "all" and stress != (samples == "stress"):
            continue
        for dtype in dtypes:
            inputs = tuple(x.astype(dtype) if x.dtype.kind == "f" else x for x in sample.inputs)
            out.append(Case(name, index, sample.label, dtype, inputs, cast_kwargs(sample.kwargs, np.dtype(dtype)),
                            stress, sample))
    if not out:
        raise ValueError(f"{who}: no {samples} samples registered for {name}")
    return out


# ---------------------------------------------------------------------------------------------------------
# the report

@dataclass
class Row:
    """The verdict on one (sample, dtype): errors are norm-wise relative (``max|theirs − ref| / max|ref|``);
    ``grad_errors`` holds one entry per input (``None``: not compared, e.g. integer labels); ``error`` the
    exception text when the user's code raised or returned something of the wrong shape."""
    sample: int
    label: str
    dtype: str
    shapes: str
    value_error: Optional[float]
    grad_errors: list
    rtol: float
    why: str
    passed: bool
    error: str = ""
    note: str = ""

    @property
    def id(self) -> str:
        return f"{self.sample}-{_slug(self.label)}" if _slug(self.label) else str(self.sample)


@dataclass
class Report:
    """The rows of :func:`check`; ``str()`` prints the table, :meth:`to_dict` gives JSON-ready data,
    :attr:`passed` the verdict (no row compared is no pass)."""
    name: str
    framework: str
    rows: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r.passed for r in self.rows)

    @property
    def failed(self) -> list:
        return [r for r in self.rows if not r.passed]

    def to_dict(self) -> dict:
        return {"name": self.name, "framework": self.framework, "passed": self.passed,
                "rows": [{"sample": r.sample, "label": r.label, "dtype": r.dtype, "shapes": r.shapes,
                          "value_error": r.value_error, "grad_errors": list(r.grad_errors), "rtol": r.rtol,
                          "tolerance": r.why, "passed": r.passed, "error": r.error, "note": r.note}
                         for r in self.rows]}

    def __str__(self) -> str:
        verdict = "PASS" if self.passed else f"FAIL ({len(self.failed)} of {len(self.rows)} rows)"
        fmt = (lambda e: "-" if e is None else f"{e:.1e}")
        head = (f"  {'sample':<22} {'dtype':<8} {'value err':>9} {'grad errs':<20} {'rtol':>7}  "
                f"{'tolerance':<26} result")
        lines = [f"orthoref.testing.check({self.name!r}, framework={self.framework!r}): {verdict}", head]
        for r in self.rows:
            grads = " ".join(fmt(e) for e in r.grad_errors) or "-"
            lines.append(f"  {r.id[:22]:<22} {r.dtype:<8} {fmt(r.value_error):>9} {grads:<20} {r.rtol:>7.0e}  "
                         f"{r.why:<26} {'pass' if r.passed else 'FAIL'}")
            if r.error:
                lines.append(f"      {r.error}")
            elif r.note and not r.passed:
                lines.append(f"      {r.note}")
        return "\n".join(lines)

    __repr__ = __str__


def _why(spec, dtype, rtol) -> str:
    """Where the tolerance of a row comes from."""
    if dtype == "float64":
        return "float64: op torch_rtol" if rtol == spec.torch_rtol else "float64: oracle tolerance"
    if getattr(spec, "rtol32", None) and rtol == spec.rtol32:
        return "float32: op rtol32"
    return "float32: FLOAT32_RTOL" if rtol == FLOAT32_RTOL else "float32: oracle tolerance"


# ---------------------------------------------------------------------------------------------------------
# the frameworks

def _torch_adapter():
    import torch

    def to_fw(x, dtype, requires_grad):
        t = torch.from_numpy(np.array(x, copy=True))
        return t.requires_grad_(True) if requires_grad and t.is_floating_point() else t

    def forward(fn, fw_inputs, kwargs):
        out = fn(*fw_inputs, **kwargs)

        def backward(cots):
            diff = [t for t in fw_inputs if t.requires_grad]
            outs = _as_tuple(out)
            grads = iter(torch.autograd.grad(outs, diff, [torch.from_numpy(np.array(c)).to(o.dtype)
                                                          for c, o in zip(cots, outs)], allow_unused=True))
            return [_zeros_if_none(next(grads), t) if t.requires_grad else None for t in fw_inputs]
        return out, backward
    return to_fw, forward


def _zeros_if_none(g, t):
    return np.zeros(tuple(t.shape)) if g is None else g


def _jax_adapter(dtypes):
    import jax
    import jax.numpy as jnp
    if "float64" in dtypes:
        jax.config.update("jax_enable_x64", True)     # float64 inputs would be silently rounded to float32

    def to_fw(x, dtype, requires_grad):
        return jnp.asarray(np.array(x, copy=True))

    def forward(fn, fw_inputs, kwargs):
        diff = [i for i, x in enumerate(fw_inputs) if jnp.issubdtype(x.dtype, jnp.floating)]

        def f(*floats):
            args = list(fw_inputs)
            for i, v in zip(diff, floats):
                args[i] = v
            return fn(*args, **kwargs)
        out, pullback = jax.vjp(f, *[fw_inputs[i] for i in diff])

        def backward(cots):
            outs = _as_tuple(out)
            cts = tuple(jnp.asarray(c).astype(o.dtype) for c, o in zip(cots, outs))
            grads = iter(pullback(cts if isinstance(out, (tuple, list)) else cts[0]))
            return [next(grads) if i in diff else None for i in range(len(fw_inputs))]
        return out, backward
    return to_fw, forward


def _numpy_adapter():
    return (lambda x, dtype, requires_grad: np.array(x, copy=True)), None


def _cupy_adapter():
    import cupy
    return (lambda x, dtype, requires_grad: cupy.asarray(x)), None


def _adapter(who, framework, dtypes):
    if framework not in FRAMEWORKS:
        raise ValueError(f"{who}: framework must be one of {', '.join(FRAMEWORKS)}, got {framework!r}")
    make = {"numpy": _numpy_adapter, "torch": _torch_adapter, "cupy": _cupy_adapter,
            "jax": lambda: _jax_adapter(dtypes)}[framework]
    try:
        return make()
    except ImportError as exc:
        raise ImportError(f"{who}: framework={framework!r} needs {framework} installed ({exc})") from exc


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


# ---------------------------------------------------------------------------------------------------------
# keyword arguments

def _defaults(spec):
    """Default values of the op's keyword arguments, read off its twins and the functions its ``apply``
    wraps (the registry's adapters close over the library function)."""
    funcs = [spec.torch]
    try:
        from .oracle.jax_twins import JAX_TWINS
        funcs.append(JAX_TWINS.get(spec.name))
    except ImportError:
        pass
    try:
        funcs += [v for v in inspect.getclosurevars(spec.apply).nonlocals.values() if callable(v)]
    except (TypeError, ValueError):
        pass
    out = {}
    for f in filter(None, funcs):
        try:
            params = inspect.signature(f).parameters.values()
        except (TypeError, ValueError):
            continue
        for p in params:
            if p.default is not inspect.Parameter.empty:
                out.setdefault(p.name, p.default)
    return out


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape \
            and bool(np.array_equal(a, b))
    try:
        return bool(a == b) and type(a) is type(b) or (a is None and b is None)
    except Exception:
        return False


def _accepts(fn):
    """The keyword names ``fn`` takes, or ``None`` when it takes any (``**kwargs``, no signature)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                  inspect.Parameter.KEYWORD_ONLY)}


def _user_kwargs(spec, fn, kwargs, kwargs_map):
    """The sample's keyword arguments in the user's names. With a dict ``kwargs_map`` (orthoref name ->
    user name) or none, a keyword that ``fn`` does not take is dropped when the sample leaves it at the
    op's default, and is an error otherwise; a callable ``kwargs_map`` is trusted with the whole dict."""
    if callable(kwargs_map):
        out = kwargs_map(dict(kwargs))
        if not isinstance(out, dict):
            raise TypeError(f"kwargs_map must return a dict of keyword arguments, got {type(out).__name__}")
        return out
    renames = kwargs_map or {}
    takes = _accepts(fn)
    defaults = _defaults(spec) if takes is not None else {}
    out = {}
    for key, value in kwargs.items():
        user = renames.get(key, key)
        if takes is None or user in takes:
            out[user] = value
        elif key in defaults and _same(value, defaults[key]):
            continue
        else:
            default = f"the default is {defaults[key]!r}" if key in defaults else "its default is unknown"
            raise TypeError(f"fn does not take orthoref's keyword {key!r}"
                            + (f" (renamed {user!r} by kwargs_map)" if user != key else "")
                            + f", which this sample sets to {value!r} ({default}); map it to one of fn's "
                              f"keywords with kwargs_map={{{key!r}: ...}} or a callable")
    return out


def _check_kwargs_map(who, kwargs_map):
    if kwargs_map is None or callable(kwargs_map):
        return
    if not isinstance(kwargs_map, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in kwargs_map.items()):
        raise TypeError(f"{who}: kwargs_map must be a dict of orthoref keyword -> your keyword (str -> str) or a "
                        f"callable kwargs -> kwargs, got {kwargs_map!r}")


# ---------------------------------------------------------------------------------------------------------
# the check

def _run_case(spec, case, fn, adapter, use_autograd, vjp, kwargs_map):
    """One row: the user's value and gradients on ``case`` against the reference, through ``compare`` and
    with the cotangent ``orthoref oracle check`` uses for this sample (random, rounded to the dtype)."""
    to_fw, autograd = adapter
    dt = np.dtype(case.dtype)
    gen = np.random.default_rng(zlib.crc32(f"{case.name}/{case.index}/cotangent".encode()))
    stage, grads, cots = "kwargs", None, None
    try:
        kw = _user_kwargs(spec, fn, case.kwargs, kwargs_map)
        stage = "fn"
        kw = {k: to_fw(v, dt, False) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
              for k, v in kw.items()}
        fw_inputs = [to_fw(x, dt, use_autograd) for x in case.inputs]
        if use_autograd or vjp is not None:
            value, _ = reference(case.name, *case.inputs, **case.sample.kwargs)
            cots = tuple(gen.standard_normal(np.shape(y)).astype(dt) for y in _as_tuple(value))
        if use_autograd:
            out, backward = autograd(fn, fw_inputs, kw)
        else:
            out = fn(*fw_inputs, **kw)
        if cots is not None:
            stage = "output"
            _check_outputs(spec.name, out, cots)
        if use_autograd:
            stage = "autograd"
            grads = backward(cots)
        if vjp is not None:
            stage = "vjp"
            fw_cots = tuple(to_fw(c, dt, False) for c in cots)
            takes = _accepts(vjp)
            vjp_kw = {k: v for k, v in kw.items() if takes is None or k in takes}
            grads = _as_tuple(vjp(tuple(fw_inputs), out, fw_cots[0] if len(fw_cots) == 1 else fw_cots, **vjp_kw))
        stage = "compare"
        rep = compare(spec.name, case.inputs, out, their_grads=grads, cotangent=cots, kwargs=case.sample.kwargs)
    except Exception as exc:       # the user's code failing is a failed row, never a crash of the check
        return _failed_row(spec, case, f"{_STAGES[stage]}: {type(exc).__name__}: {exc}")
    rtol = rep.rows[0].rtol
    values = [r.max_rel for r in rep.rows if r.what.startswith("value")]
    by_input = {int(r.what[5:-1]): r.max_rel for r in rep.rows if r.what.startswith("grad[")}
    grad_errors = [by_input.get(k) for k in range(len(case.inputs))] if grads is not None else []
    return Row(case.index, case.label, case.dtype, _shapes(case), max(values) if values else None, grad_errors,
               rtol, _why(spec, case.dtype, rtol), rep.passed, note=rep.note)


_STAGES = {"kwargs": "keyword arguments", "fn": "fn raised", "autograd": "autograd of fn raised", "vjp": "vjp raised",
           "output": "wrong output", "compare": "wrong output"}


def _check_outputs(name, out, cots):
    """Their outputs match the reference's in count and shape (before any cotangent meets them)."""
    outs = _as_tuple(out)
    if len(outs) != len(cots):
        raise ValueError(f"fn returned {len(outs)} output(s), {name} has {len(cots)}")
    for k, (o, c) in enumerate(zip(outs, cots)):
        if tuple(np.shape(o)) != c.shape:
            raise ValueError(f"fn's output {k} has shape {tuple(np.shape(o))}, {name}'s has {c.shape}")


def _shapes(case):
    return " ".join("x".join(map(str, x.shape)) or "()" for x in case.inputs)


def _failed_row(spec, case, error):
    rtol = tolerance(spec, case.dtype)
    return Row(case.index, case.label, case.dtype, _shapes(case), None, [], rtol, _why(spec, case.dtype, rtol),
               False, error=error)


def _run(name, selected, fn, framework, grad, vjp, kwargs_map, who="check"):
    spec = lookup_spec(name, who)
    if not callable(fn):
        raise TypeError(f"{who}: fn must be callable, got {type(fn).__name__}")
    if vjp is not None and not callable(vjp):
        raise TypeError(f"{who}: vjp must be None or a callable vjp(inputs, output, cotangent), got "
                        f"{type(vjp).__name__}")
    if not isinstance(grad, bool):
        raise TypeError(f"{who}: grad must be True or False, got {grad!r}")
    _check_kwargs_map(who, kwargs_map)
    adapter = _adapter(who, framework, {c.dtype for c in selected})
    use_autograd = grad and vjp is None
    if use_autograd and adapter[1] is None:
        raise ValueError(f"{who}: framework={framework!r} has no autograd: grad=True needs vjp=... "
                         f"(vjp(inputs, output, cotangent) -> one gradient per input), or pass grad=False")
    report = Report(name, framework)
    for case in selected:
        report.rows.append(_run_case(spec, case, fn, adapter, use_autograd, vjp if grad else None, kwargs_map))
    return report


def check(name, fn, *, framework="numpy", dtypes=_DTYPES, samples="all", grad=True, vjp=None,
          kwargs_map=None, seed=0) -> Report:
    """Run ``fn``, your implementation of the registered op ``name``, on every registered sample and compare
    its value and gradients with orthoref's float64 reference.

    Each sample (:func:`cases`) is rounded to each dtype, converted to the framework's arrays and given to
    ``fn`` with the sample's keyword arguments; the gradients are the vector-Jacobian product with a random
    output cotangent (rounded to the dtype; the one ``orthoref oracle check`` uses for that sample), taken by
    the framework's autograd or by ``vjp``. Value and gradients go to
    :func:`orthoref.oracle.reference.compare` with that same cotangent: errors are
    ``max|theirs − ref| / max|ref|`` against the op's tolerance for the dtype
    (:func:`orthoref.oracle.reference.tolerance`).

    Parameters
    ----------
    name : str
        A registered op name (:func:`orthoref.oracle.names`), e.g. ``"soft_orthogonality"``, ``"conv2d"``.
    fn : callable
        ``fn(*inputs, **kwargs) -> output`` (a tuple for several outputs), taking the op's inputs in registry
        order as the framework's arrays: NumPy arrays, ``torch.Tensor`` (floating ones with
        ``requires_grad``), ``jax.Array`` or CuPy arrays. Floating arrays among the keyword arguments are
        converted too.
    framework : {"numpy", "torch", "jax", "cupy"}
        ``"jax"`` enables ``jax_enable_x64`` when float64 is checked (JAX rounds float64 to float32
        otherwise).
    dtypes : sequence of {"float64", "float32"}
    samples : {"all", "standard", "stress"}
        ``"stress"`` selects the samples labelled as stress (:func:`is_stress`); an op without any raises
        ``ValueError`` (``no stress samples registered for NAME``) instead of passing vacuously.
    grad : bool
        Compare gradients too: ``torch.autograd.grad`` (torch) or ``jax.vjp`` (jax); NumPy and CuPy have no
        autograd and need ``vjp``. ``False``: values only.
    vjp : callable, optional
        ``vjp(inputs, output, cotangent) -> gradients``: your backward pass, given the framework's inputs,
        what ``fn`` returned and the cotangent (a tuple for several outputs), plus those of ``fn``'s keyword
        arguments that ``vjp`` takes; one gradient per input, ``None`` for integer inputs. Used instead of
        autograd when given.
    kwargs_map : dict or callable, optional
        ``{"orthoref keyword": "your keyword"}``, or ``kwargs -> kwargs``. With a dict (or none), an
        orthoref keyword that ``fn`` does not take is dropped where the sample leaves it at the op's default
        and fails the row where the sample sets another value (the message names the keyword); a callable's
        result is passed as is.
    seed : int
        Shifts the draw of the samples.

    Returns
    -------
    Report
        One row per (sample, dtype). An exception in ``fn`` or ``vjp``, outputs or gradients of the wrong
        count or shape, NaN/Inf: a failed row carrying the message, never an exception.

    Raises
    ------
    ValueError / TypeError
        An unknown op (close names listed), a framework, dtype or samples value outside the lists, an empty
        stress selection, ``grad=True`` on NumPy/CuPy without ``vjp``, a ``kwargs_map`` that is neither a
        dict of str nor callable.
    ImportError
        The framework is not installed.

    Examples
    --------
    >>> import torch
    >>> from orthoref import testing
    >>> def so(W, weight=1.0, gram="auto"):                 # λ‖G − I‖²_F, G the smaller Gram matrix
    ...     M = W.reshape(len(W), -1); rows = gram == "rows" or (gram == "auto" and len(M) <= M.shape[1])
    ...     G = M @ M.T if rows else M.T @ M
    ...     return weight * ((G - torch.eye(len(G), dtype=W.dtype)) ** 2).sum()
    >>> testing.check("soft_orthogonality", so, framework="torch").passed
    True
    """
    return _run(name, _select("check", name, dtypes, samples, seed), fn, framework, grad, vjp, kwargs_map)


def assert_conforms(name, fn, **options) -> Report:
    """:func:`check` that raises.

    Parameters
    ----------
    name, fn, **options
        As :func:`check` (``framework``, ``dtypes``, ``samples``, ``grad``, ``vjp``, ``kwargs_map``, ``seed``).

    Returns
    -------
    Report
        When every row passes.

    Raises
    ------
    AssertionError
        Carrying the report's table (every row, the failed ones with their messages).
    """
    report = check(name, fn, **options)
    if not report.passed:
        raise AssertionError("\n" + str(report))
    return report



# ---------------------------------------------------------------------------------------------------------
# optimizers

#: The per-step error budget of :func:`check_optimizer`: step ``t``'s tolerance is ``t`` times this.
#: float64: two correct implementations of one update differ by the order of their floating-point
#: operations, a few ulps (2.2e-16) of the parameter per step (orthoref's Adam and PyTorch's: <= 4 ulps),
#: and the updates are Lipschitz with constant about 1 in the parameter at the learning rates used, so the
#: differences add up: <= ~1e-15·t. 1e-12·t leaves three orders of magnitude for Newton–Schulz, QR and
#: Cayley solves, while a wrong formula (a missing bias correction, a momentum one step late, a factor)
#: moves the iterate by 1e-4 relative or more within two steps. float32: the user's arithmetic in float32
#: against the float64 reference on the same (rounded) inputs; orthoref's own float32 optimizers (all nine,
#: lr=1e-2) and torch.optim's SGD/Adam/AdamW stay below 6e-8·t on the default problem (float32's eps is
#: 1.2e-7, half an ulp of rounding per step); the budget is about 80× that.
OPTIMIZER_RTOL = {"float64": 1e-12, "float32": 5e-6}


@dataclass
class StepRow:
    """The verdict on one step of :func:`check_optimizer`: ``error`` is the largest over the parameters of
    ``max|theirs − ref| / max|ref|`` after step ``step`` (``errors``: one per parameter); ``rtol`` the
    tolerance of that step; ``message`` the exception text when the user's step raised or returned
    something of the wrong structure."""
    step: int
    dtype: str
    error: Optional[float]
    errors: list
    rtol: float
    why: str
    passed: bool
    message: str = ""


@dataclass
class OptimizerReport(Report):
    """The rows of :func:`check_optimizer` (one per dtype and step); ``str()`` prints the table."""

    def to_dict(self) -> dict:
        return {"name": self.name, "framework": self.framework, "passed": self.passed,
                "rows": [{"step": r.step, "dtype": r.dtype, "error": r.error, "errors": list(r.errors),
                          "rtol": r.rtol, "tolerance": r.why, "passed": r.passed, "message": r.message}
                         for r in self.rows]}

    def __str__(self) -> str:
        verdict = "PASS" if self.passed else f"FAIL ({len(self.failed)} of {len(self.rows)} rows)"
        fmt = (lambda e: "-" if e is None else f"{e:.1e}")
        lines = [f"orthoref.testing.check_optimizer({self.name!r}, framework={self.framework!r}): {verdict}",
                 f"  {'step':>4} {'dtype':<8} {'max rel err':>11} {'per parameter':<30} {'rtol':>7}  "
                 f"{'tolerance':<22} result"]
        for r in self.rows:
            per = " ".join(fmt(e) for e in r.errors) or "-"
            lines.append(f"  {r.step:>4} {r.dtype:<8} {fmt(r.error):>11} {per[:30]:<30} {r.rtol:>7.0e}  "
                         f"{r.why:<22} {'pass' if r.passed else 'FAIL'}")
            if r.message:
                lines.append(f"      {r.message}")
        return "\n".join(lines)

    __repr__ = __str__


def default_optimizer_problem(name, steps=10, seed=0):
    """The seeded problem of :func:`check_optimizer`: ``(param0, grads, stiefel)``.

    ``param0`` = ``[W (4, 6) Gaussian / 2, b (5,) Gaussian, Q (6, 3) with orthonormal columns]`` (float64),
    ``grads`` = ``steps`` lists of standard Gaussians of those shapes, all from
    ``numpy.random.default_rng(seed)``; ``stiefel`` = ``[False, False, True]`` for the Stiefel optimizers
    (only ``Q`` on the manifold), ``None`` for the others.
    """
    from .oracle.trajectories import STIEFEL_OPTIMIZERS, optimizer_name, orthogonal_factor
    name = optimizer_name(name, "check_optimizer")
    gen = np.random.default_rng(seed)
    param0 = [0.5 * gen.standard_normal((4, 6)), gen.standard_normal(5), orthogonal_factor(gen.standard_normal((6, 3)))]
    grads = [[gen.standard_normal(p.shape) for p in param0] for _ in range(steps)]
    return param0, grads, ([False, False, True] if name in STIEFEL_OPTIMIZERS else None)


def _host(x):
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    elif not isinstance(x, np.ndarray) and hasattr(x, "get"):          # CuPy
        x = x.get()
    return np.array(x, dtype=np.float64, copy=True)


def _torch_stepper(who, opt_cls, hyper):
    """``step_fn(params, grads, state)`` of a ``torch.optim`` optimizer class (or a factory
    ``make(tensors) -> optimizer``): built on the first call on copies of ``params``."""
    try:
        import torch
    except ImportError as exc:
        raise ImportError(f"{who}: framework='torch' needs torch installed ({exc})") from exc
    if not callable(opt_cls):
        raise TypeError(f"{who}: with framework='torch', step_fn must be a torch.optim.Optimizer class or a "
                        f"callable make(tensors) -> optimizer, got {type(opt_cls).__name__}")
    is_class = isinstance(opt_cls, type) and issubclass(opt_cls, torch.optim.Optimizer)

    def step_fn(params, grads, state):
        if state is None:
            tensors = [torch.from_numpy(np.array(p, copy=True)) for p in params]
            opt = opt_cls(tensors, **hyper) if is_class else opt_cls(tensors)
            state = (tensors, opt)
        tensors, opt = state
        for t, g in zip(tensors, grads):
            t.grad = torch.from_numpy(np.array(g, copy=True))
        opt.step()
        return [t.detach().numpy().copy() for t in tensors], state
    return step_fn


def check_optimizer(name, step_fn, *, param0=None, grads=None, steps=10, dtypes=_DTYPES, rtol=None,
                    framework="numpy", seed=0, **hyper) -> OptimizerReport:
    r"""Run *your* optimizer step on a seeded problem and compare every iterate with orthoref's float64
    reference trajectory (:func:`orthoref.oracle.trajectories.optimizer_trajectory`).

    The convention of ``step_fn`` (``framework="numpy"``)::

        params, state = step_fn(params, grads, state)

    ``params``: the list of the current parameters (NumPy arrays of the dtype checked, fresh copies: update
    them in place or return new ones), ``grads``: the list of their gradients at this step (same shapes and
    dtype), ``state``: ``None`` on the first call, afterwards whatever the previous call returned (your
    moments, step count, ...). It returns the list of the new parameters (arrays of any framework with
    ``__array__``, or torch tensors) and the new state. The hyper-parameters are yours to bind (a closure);
    ``**hyper`` goes to orthoref's optimizer.

    ``framework="torch"``: ``step_fn`` is a ``torch.optim.Optimizer`` class, built as
    ``step_fn(tensors, **hyper)`` on torch tensors of the dtype (or a callable ``make(tensors) ->
    optimizer``); each step sets every tensor's ``.grad`` and calls ``.step()``.

    Parameters
    ----------
    name : str or class
        The orthoref optimizer whose trajectory is the reference: ``"SGD"``, ``"Adam"``, ``"AdamW"``,
        ``"Muon"``, ``"RiemannianSGD"``, ``"RiemannianAdam"``, ``"CayleySGD"``, ``"CayleyAdam"``, ``"OGD"``.
    step_fn : callable or torch.optim.Optimizer class
    param0, grads : optional
        The problem (as :func:`~orthoref.oracle.trajectories.optimizer_trajectory` takes them; a callable
        ``grads(t, params)`` is evaluated along the float64 reference trajectory and your optimizer is fed
        the same gradients). Default (:func:`default_optimizer_problem`): ``[W (4, 6), b (5,), Q (6, 3)
        orthonormal columns]`` and ``steps`` Gaussian gradients from ``seed``; for the Stiefel optimizers
        ``stiefel=[False, False, True]`` unless ``hyper`` sets it (only ``Q`` lives on the manifold).
    steps : int
        The number of steps (with ``grads`` given: ``len(grads)``, unless ``grads`` is callable).
    dtypes : sequence of {"float64", "float32"}
        Your optimizer runs on ``param0`` and ``grads`` rounded to each dtype; the reference runs in
        float64 on the same rounded values.
    rtol : float or dict, optional
        The per-step budget: step ``t`` passes when its error is ``<= t · rtol``. Default
        :data:`OPTIMIZER_RTOL` (float64 1e-12, float32 5e-6; the reasoning is there); a dict per dtype.
    framework : {"numpy", "torch"}
    seed : int
    **hyper
        orthoref's optimizer's hyper-parameters (``lr=...``), and the torch class's.

    Returns
    -------
    OptimizerReport
        One row per dtype and step ``1..k``. Your step raising, or returning the wrong number, shapes or
        NaN, fails that row (message kept) and ends that dtype.

    Raises
    ------
    TypeError / ValueError
        What ``optimizer_trajectory`` refuses, a ``step_fn`` that is not callable, a framework, dtype or
        ``rtol`` outside the lists.

    Examples
    --------
    >>> import torch
    >>> from orthoref.testing import check_optimizer
    >>> check_optimizer("Adam", torch.optim.Adam, framework="torch", lr=1e-2, dtypes=("float64",)).passed
    True
    """
    from .oracle.trajectories import optimizer_name, optimizer_trajectory
    who = "check_optimizer"
    name = optimizer_name(name, who)
    dtypes = _check_dtypes(who, dtypes)
    if framework not in ("numpy", "torch"):
        raise ValueError(f"{who}: framework must be 'numpy' or 'torch', got {framework!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"{who}: steps must be an integer >= 1, got {steps!r}")
    budgets = dict(OPTIMIZER_RTOL)
    if isinstance(rtol, dict):
        budgets.update(rtol)
    elif rtol is not None:
        budgets = {d: rtol for d in _DTYPES}
    for d in dtypes:
        r = budgets.get(d)
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not r > 0 or not np.isfinite(r):
            raise ValueError(f"{who}: rtol must be a positive finite float (or a dict dtype -> float), got {rtol!r}")
    hyper = dict(hyper)
    if param0 is None:
        d_param0, d_grads, stiefel = default_optimizer_problem(name, steps, seed)
        param0 = d_param0
        grads = d_grads if grads is None else grads
        if stiefel is not None:
            hyper.setdefault("stiefel", stiefel)
    elif grads is None:
        raise ValueError(f"{who}: with param0 given, give grads too (a sequence, or a callable grads(t, params))")
    ref_hyper = {k: v for k, v in hyper.items()}
    if framework == "torch":
        step_fn = _torch_stepper(who, step_fn, {k: v for k, v in hyper.items() if k != "stiefel"})
    elif not callable(step_fn):
        raise TypeError(f"{who}: step_fn must be callable step_fn(params, grads, state) -> (params, state), got "
                        f"{type(step_fn).__name__}")
    single = not isinstance(param0, (list, tuple))
    if callable(grads):                  # the gradients along the float64 reference, fed to both
        fed = []

        def record(t, params):
            fed.append(grads(t, params))
            return fed[-1]
        optimizer_trajectory(name, param0, record, steps=steps, **ref_hyper)
        grads = fed
    report = OptimizerReport(name, framework)
    for dtype in dtypes:
        dt = np.dtype(dtype)
        p0 = [np.asarray(_host(p), dtype=dt) for p in ([param0] if single else param0)]
        gs = [[np.asarray(_host(g), dtype=dt) for g in ([gt] if single else gt)] for gt in grads]
        ref = optimizer_trajectory(name, [p.astype(np.float64) for p in p0],
                                   [[g.astype(np.float64) for g in gt] for gt in gs], **ref_hyper)
        report.rows += _optimizer_rows(step_fn, p0, gs, ref, dtype, budgets[dtype], rtol is None)
    return report


def _optimizer_rows(step_fn, p0, gs, ref, dtype, budget, default):
    why = f"{dtype}: t·{budget:.0e}" + ("" if default else " (given)")
    params, state, rows = [p.copy() for p in p0], None, []
    for t, g in enumerate(gs, start=1):
        tol = t * budget
        try:
            params, state = step_fn(params, [a.copy() for a in g], state)
            if not isinstance(params, (list, tuple)) or len(params) != len(p0):
                raise ValueError(f"step_fn must return (params, state) with params a list of {len(p0)} arrays")
            ours = [_host(p) for p in params]
            for i, (a, r) in enumerate(zip(ours, ref[t])):
                if a.shape != r.shape:
                    raise ValueError(f"parameter {i} came back with shape {a.shape}, expected {r.shape}")
            params = [np.asarray(a, dtype=dtype) for a in ours]
        except Exception as exc:         # the user's step failing is a failed row, never a crash of the check
            rows.append(StepRow(t, dtype, None, [], tol, why, False, f"step_fn raised {type(exc).__name__}: {exc}"))
            break
        errors = [float(np.max(np.abs(a - r)) / max(float(np.max(np.abs(r))), np.finfo(float).tiny))
                  if r.size else 0.0 for a, r in zip(ours, ref[t])]
        errors = [e if np.isfinite(e) else float("inf") for e in errors]
        worst = max(errors)
        rows.append(StepRow(t, dtype, worst, errors, tol, why, worst <= tol))
    return rows
