"""Bad-input sweep over the whole op registry (the README's "Failure model").

Every registered op, layer and loss (``all_specs()``: no hand-kept list) gets corrupt variants of its own
valid samples, drawn with hypothesis (derandomized, so CI is deterministic), one input at a time. The
inputs are the positional arrays and the array keyword arguments (``W`` of ``project_tangent``, ``u`` of
``spectral_normalize``, ``base`` of the orthogonal layers, ...):

=================  ==========================================================================================
corruption         required outcome
=================  ==========================================================================================
NaN / +Inf / -Inf  ``ValueError`` saying finite / NaN / Inf (a layer's input ``x`` and its parameters too)
empty axis         a clear ``ValueError``/``TypeError``, or a sound result (below)
wrong rank         a clear error, or a sound result; element-wise ops must give the values of the valid input
integer dtype      ``TypeError`` (integer label inputs are corrupted to float instead)
non-contiguous     the same outputs and gradients as the contiguous input (rtol 1e-12); inputs not modified
mismatched shape   one axis of one array grown by 1: a clear ``ValueError``, or a sound result
=================  ==========================================================================================

A *clear* error is a ``ValueError``/``TypeError`` (never numpy's ``LinAlgError``) with our own wording:
not a message from numpy's internals ("operands could not be broadcast", "shapes (...) not aligned", ...).
A *sound* result has finite outputs and finite gradients shaped like their inputs (``None`` for integer
inputs) and, where PyTorch is installed and accepts the same input, the outputs and gradients of the op's
PyTorch twin. Every case runs under a SIGALRM guard (a hang fails) with
``RuntimeWarning`` turned into an error (an overflow or invalid operation is a silent NaN in the making).

The number of cases tried is written to the terminal at the end of the module.
"""
from __future__ import annotations

import collections
import copy
import functools
import os
import re
import signal
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orthoref.oracle.conformance import compare_with_torch, torch_available
from orthoref.oracle.registry import Sample, all_specs

SPECS = all_specs()
# Hypothesis examples per (test, op): 6 keeps the file near 10 s; a deeper local run:
# ORTHOREF_BAD_INPUT_EXAMPLES=100 pytest tests/test_bad_input.py
EXAMPLES = int(os.environ.get("ORTHOREF_BAD_INPUT_EXAMPLES", "6"))
TIMEOUT_S = 10                 # per case: a hang fails instead of blocking
CASES = collections.Counter()  # cases tried, per corruption
TORCH = torch_available()

SWEEP = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                 suppress_health_check=list(HealthCheck))

# Phrases of numpy/scipy internals: an error worded like this does not name the argument or the op.
INTERNAL = ("operands could not be broadcast", "could not broadcast", "matmul: input operand",
            "shapes (", "not aligned", "cannot reshape", "too many indices", "out of bounds",
            "tuple index out of range", "zero-size array", "singular matrix",
            "array must not contain infs or nans", "last 2 dimensions", "einstein sum", "ufunc",
            "setting an array element", "non-broadcastable", "object of type", "unsupported operand",
            "not subscriptable", "has no attribute", "must be real number", "only integer scalar")


def _samples(spec):
    rng = np.random.default_rng(zlib.crc32(spec.name.encode()))
    return spec.sample(rng, np.float64)


SAMPLES = {spec.name: _samples(spec) for spec in SPECS}


def _arrays(sample):
    """The sample's arrays as ``(where, key)``: ``("arg", i)`` positional, ``("kw", name)`` keyword."""
    keys = [("arg", i) for i in range(len(sample.inputs))]
    keys += [("kw", k) for k, v in sample.kwargs.items() if isinstance(v, np.ndarray)]
    return keys


def _get(sample, key):
    return sample.inputs[key[1]] if key[0] == "arg" else sample.kwargs[key[1]]


def _replace(sample, key, value):
    inputs, kwargs = list(sample.inputs), dict(sample.kwargs)
    if key[0] == "arg":
        inputs[key[1]] = value
    else:
        kwargs[key[1]] = value
    return Sample(tuple(inputs), kwargs, sample.label)


def _name(spec, sample, key):
    return f"{spec.name}[{sample.label}] {key[0]} {key[1]!r}"


# ---------------------------------------------------------------------------------------------------------
# Running one case.

class _Hang(BaseException):
    """Raised by the alarm; a BaseException so no ``except Exception`` in an op can swallow it."""


def _on_alarm(signum, frame):
    raise _Hang(f"no result after {TIMEOUT_S} s")


def _cotangent(y):
    return np.random.default_rng(1).standard_normal(np.shape(y)).astype(y.dtype)


def _call(spec, sample):
    """``(outputs, grads)`` of ``spec`` on ``sample`` (vjp with fixed random cotangents)."""
    kwargs = copy.deepcopy(sample.kwargs)       # an op may advance an rng or a power-iteration vector
    guard = hasattr(signal, "SIGALRM")         # not on Windows: no hang guard there
    if guard:
        old = signal.signal(signal.SIGALRM, _on_alarm)
        signal.alarm(TIMEOUT_S)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            outputs, vjp = spec.apply(*sample.inputs, **kwargs)
            outputs = tuple(np.asarray(y) for y in outputs)
            grads = tuple(vjp(tuple(_cotangent(y) for y in outputs)))
    finally:
        if guard:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
    return outputs, grads


def _outcome(spec, sample):
    """``(result, None)`` or ``(None, exception)``; a hang fails the test at once."""
    try:
        return _call(spec, sample), None
    except _Hang as exc:
        pytest.fail(f"{spec.name}[{sample.label}] hangs: {exc}")
    except Exception as exc:  # noqa: BLE001 -- any exception is judged by the caller
        return None, exc


def _assert_clear_error(exc, what, types=(ValueError, TypeError), words=()):
    assert isinstance(exc, types) and not isinstance(exc, np.linalg.LinAlgError), (
        f"{what}: expected {' or '.join(t.__name__ for t in types)}, got {type(exc).__name__}: {exc}")
    msg = str(exc)
    assert msg.strip(), f"{what}: {type(exc).__name__} with an empty message"
    assert re.match(r"[\w.]+(\.\w+)?(\(\))?: ", msg), f"{what}: the message does not start with the op's name: {msg}"
    low = msg.lower()
    internal = [p for p in INTERNAL if p in low]
    assert not internal, f"{what}: error worded by numpy's internals ({internal}), not ours: {msg}"
    if words:
        assert any(w in low for w in words), f"{what}: message should mention one of {words}: {msg}"


def _assert_sound(spec, sample, result, what):
    """An accepted corrupt input: finite outputs, finite gradients shaped like their inputs (``None`` for
    integer inputs) and, where PyTorch is installed and accepts the same input, the twin's outputs and
    gradients. (No finite-difference check here: some registered gradients are exact only at the samples'
    special points, e.g. ``spectral_normalize``'s detached power iteration.)"""
    outputs, grads = result
    for k, y in enumerate(outputs):
        assert np.isfinite(y).all(), f"{what}: output {k} holds NaN/Inf (shape {y.shape})"
    assert len(grads) == len(sample.inputs), f"{what}: {len(grads)} gradients for {len(sample.inputs)} inputs"
    for i, (x, g) in enumerate(zip(sample.inputs, grads)):
        if x.dtype.kind != "f":
            assert g is None, f"{what}: gradient of integer input {i} should be None"
            continue
        assert g is not None and g.shape == x.shape, (
            f"{what}: gradient of input {i} has shape {None if g is None else g.shape}, expected {x.shape}")
        assert np.isfinite(g).all(), f"{what}: gradient of input {i} holds NaN/Inf"
    if spec.torch is None or not TORCH:
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cmp = compare_with_torch(spec, Sample(sample.inputs, copy.deepcopy(sample.kwargs)), rng=5)
    except (RuntimeError, ValueError, TypeError, IndexError):  # PyTorch refuses the input: nothing to compare
        return
    tol = max(spec.torch_rtol, 1e-8)
    assert cmp.output_error <= tol, f"{what}: outputs differ from PyTorch's (rel. error {cmp.output_error:.2e})"
    assert cmp.grad_error <= tol, f"{what}: gradients differ from PyTorch's (rel. error {cmp.grad_error:.2e})"


@functools.cache
def _elementwise(name):
    """Whether the op acts element-wise on its one input (empirically: it commutes with flattening)."""
    spec = next(s for s in SPECS if s.name == name)
    for sample in SAMPLES[name]:
        if len(_arrays(sample)) != 1:
            return False
        x = sample.inputs[0]
        (ys, _), flat = _call(spec, sample), _outcome(spec, Sample((x.reshape(-1),), sample.kwargs))
        if len(ys) != 1 or ys[0].shape != x.shape or flat[1] is not None:
            return False
        if not np.array_equal(flat[0][0][0], ys[0].reshape(-1)):
            return False
    return True


def _draw_case(data, spec, keep=lambda sample, key: True):
    """Draw a sample of ``spec`` and one of its arrays accepted by ``keep``; None when there is none."""
    options = [(k, key) for k, s in enumerate(SAMPLES[spec.name]) for key in _arrays(s) if keep(s, key)]
    if not options:
        return None
    k, key = data.draw(st.sampled_from(options), label="sample, array")
    return SAMPLES[spec.name][k], key


def _is_float(sample, key):
    return _get(sample, key).dtype.kind == "f"


IDS = [s.name for s in SPECS]
# Keyword arrays documented as real array-likes (start vectors), which may take integer values.
REAL_ARRAY_LIKE_KWARGS = {("spectral_normalize", "u"), ("srip", "v0"), ("srip_exact", "v0")}


@pytest.fixture(scope="module", autouse=True)
def _report_count(request):
    yield
    total = sum(CASES.values())
    detail = ", ".join(f"{k}: {v}" for k, v in sorted(CASES.items()))
    line = f"bad-input sweep: {total} cases tried over {len(SPECS)} registered ops ({detail})"
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("\n" + line)


# ---------------------------------------------------------------------------------------------------------
# The sweep.

@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@SWEEP
@given(data=st.data())
def test_non_finite_input_is_rejected(spec, data):
    case = _draw_case(data, spec, _is_float)
    if case is None:
        return
    sample, key = case
    x = _get(sample, key).copy()
    value = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]), label="value")
    pos = data.draw(st.integers(0, x.size - 1), label="position")
    x.flat[pos] = value                 # (x.reshape(-1) would be a copy for a Fortran-ordered sample)
    assert not np.isfinite(x.flat[pos])
    CASES["nan/inf"] += 1
    result, exc = _outcome(spec, _replace(sample, key, x))
    what = f"{_name(spec, sample, key)} with {value} at flat position {pos}"
    assert exc is not None, f"{what}: accepted (outputs finite: {[bool(np.isfinite(y).all()) for y in result[0]]})"
    _assert_clear_error(exc, what, (ValueError,), words=("finite", "nan", "inf"))


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@SWEEP
@given(data=st.data())
def test_empty_input_is_rejected_or_sound(spec, data):
    sample, key = _draw_case(data, spec)
    x = _get(sample, key)
    axis = data.draw(st.integers(0, x.ndim - 1), label="axis")
    empty = np.take(x, np.arange(0), axis=axis)
    CASES["empty"] += 1
    bad = _replace(sample, key, empty)
    what = f"{_name(spec, sample, key)} emptied along axis {axis} (shape {empty.shape})"
    result, exc = _outcome(spec, bad)
    if exc is not None:
        _assert_clear_error(exc, what)
    else:
        _assert_sound(spec, bad, result, what)


def _change_rank(x, mode, pos):
    """``(new array, reference)``: ``reference(y)`` maps the valid output of an element-wise op to the
    expected output for the new array."""
    if mode == "add":
        axis = pos % (x.ndim + 1)
        return np.expand_dims(x, axis), lambda y: np.expand_dims(y, axis)
    if x.ndim == 1:
        j = pos % x.shape[0]
        return np.array(x[j]), lambda y: np.array(y[j])
    axis = pos % (x.ndim - 1)
    if mode == "merge":
        shape = x.shape[:axis] + (x.shape[axis] * x.shape[axis + 1],) + x.shape[axis + 2:]
        return x.reshape(shape), lambda y: y.reshape(shape)
    j = pos % x.shape[axis]
    return np.take(x, j, axis=axis), lambda y: np.take(y, j, axis=axis)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@SWEEP
@given(data=st.data())
def test_wrong_rank_is_rejected_or_sound(spec, data):
    sample, key = _draw_case(data, spec)
    mode = data.draw(st.sampled_from(["add", "merge", "index"]), label="mode")
    pos = data.draw(st.integers(0, 7), label="position")
    new, reference = _change_rank(_get(sample, key), mode, pos)
    CASES["wrong rank"] += 1
    bad = _replace(sample, key, new)
    what = f"{_name(spec, sample, key)} {mode} -> shape {new.shape}"
    result, exc = _outcome(spec, bad)
    if exc is not None:
        _assert_clear_error(exc, what)
        return
    _assert_sound(spec, bad, result, what)
    if new.size == _get(sample, key).size and _elementwise(spec.name):   # same values, same order
        (valid,), _ = _call(spec, sample)
        np.testing.assert_allclose(result[0][0], reference(valid), rtol=1e-12, atol=0,
                                   err_msg=f"{what}: element-wise op gives other values than on the valid input")


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@SWEEP
@given(data=st.data())
def test_integer_or_float_labels_are_rejected(spec, data):
    """A float input given as int64 (an integer label input given as float64) is a ``TypeError``. The one
    documented acceptance: a keyword *constant* that is documented as a real array-like (the start vectors
    ``u`` of ``spectral_normalize`` and ``v0`` of ``srip``) may take integer values, provided it then
    behaves exactly as the same values in float64."""
    sample, key = _draw_case(data, spec)
    x = _get(sample, key)
    bad_x = x.astype(np.int64) if x.dtype.kind == "f" else x.astype(np.float64)
    CASES["dtype"] += 1
    what = f"{_name(spec, sample, key)} as {bad_x.dtype}"
    result, exc = _outcome(spec, _replace(sample, key, bad_x))
    if (spec.name, key[-1]) in REAL_ARRAY_LIKE_KWARGS and bad_x.dtype.kind == "i" and not isinstance(exc, TypeError):
        same, same_exc = _outcome(spec, _replace(sample, key, bad_x.astype(x.dtype)))
        if exc is not None:                     # rejected as the same values in float are
            assert same_exc is not None and type(exc) is type(same_exc), (
                f"{what}: integer values rejected ({type(exc).__name__}: {exc}), the same values in float "
                f"{'accepted' if same_exc is None else f'rejected with {type(same_exc).__name__}'}")
            _assert_clear_error(exc, what)
            return
        assert same_exc is None, f"{what}: integer values accepted, the same values in float rejected ({same_exc})"
        for k, (y, r) in enumerate(zip(result[0] + result[1], same[0] + same[1])):
            if r is not None:
                _assert_same(y, r, f"{what}: output/gradient {k} differs from the float values'")
        return
    assert exc is not None, f"{what}: accepted"
    _assert_clear_error(exc, what, (TypeError,), words=("dtype", "float", "integer", "int"))


def _strided(x, how):
    if how == "fortran":
        return np.asfortranarray(x)
    if how == "reversed":
        return np.flip(np.flip(x).copy())
    return np.repeat(x, 2, axis=-1)[..., ::2]


def _assert_same(a, b, what):
    scale = max(1.0, float(np.abs(b).max(initial=0.0)))
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * scale, err_msg=what)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@SWEEP
@given(data=st.data())
def test_non_contiguous_input_gives_the_same_result(spec, data):
    sample, key = _draw_case(data, spec, lambda s, k: _get(s, k).ndim >= 1)
    x = _get(sample, key)
    how = data.draw(st.sampled_from(["strided", "fortran", "reversed"]), label="layout")
    view = _strided(x, how)
    assert np.array_equal(view, x)
    CASES["non-contiguous"] += 1
    what = f"{_name(spec, sample, key)} {how} (strides {view.strides})"
    (ys, gs), exc = _outcome(spec, _replace(sample, key, view))
    assert exc is None, f"{what}: {type(exc).__name__}: {exc}"
    assert np.array_equal(view, x), f"{what}: the op modified its input"
    ref_ys, ref_gs = _call(spec, sample)
    for k, (y, r) in enumerate(zip(ys, ref_ys)):
        assert y.shape == r.shape, f"{what}: output {k} shape {y.shape} != {r.shape}"
        _assert_same(y, r, f"{what}: output {k}")
    for k, (g, r) in enumerate(zip(gs, ref_gs)):
        assert (g is None) == (r is None), f"{what}: gradient {k}"
        if g is not None:
            _assert_same(g, r, f"{what}: gradient {k}")


def _several_arrays(spec):
    return any(len(_arrays(s)) >= 2 for s in SAMPLES[spec.name])


MULTI = [s for s in SPECS if _several_arrays(s)]


@pytest.mark.parametrize("spec", MULTI, ids=[s.name for s in MULTI])
@SWEEP
@given(data=st.data())
def test_mismatched_shape_is_rejected_or_sound(spec, data):
    sample, key = _draw_case(data, spec, lambda s, k: len(_arrays(s)) >= 2)
    x = _get(sample, key)
    axis = data.draw(st.integers(0, x.ndim - 1), label="axis")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    if x.dtype.kind == "f":
        shape = x.shape[:axis] + (1,) + x.shape[axis + 1:]
        extra = np.random.default_rng(seed).standard_normal(shape).astype(x.dtype)
    else:
        extra = np.take(x, [-1], axis=axis)
    grown = np.concatenate([x, extra], axis=axis)
    CASES["mismatched shape"] += 1
    bad = _replace(sample, key, grown)
    what = f"{_name(spec, sample, key)} grown along axis {axis} to {grown.shape}"
    result, exc = _outcome(spec, bad)
    if exc is not None:
        _assert_clear_error(exc, what, (ValueError,))
    else:
        _assert_sound(spec, bad, result, what)


# ---------------------------------------------------------------------------------------------------------
# Exhaustive, deterministic: every array of every sample of every op, so that no input escapes the two
# checks that matter most (the hypothesis sweeps above draw 6 cases per op and corruption, and do not reach
# every input of every sample on each run).

def _every_array(keep):
    return [pytest.param(spec, k, key, id=f"{spec.name}[{k}]-{key[0]}{key[1]}")
            for spec in SPECS for k, sample in enumerate(SAMPLES[spec.name]) for key in _arrays(sample)
            if keep(sample, key)]


@pytest.mark.parametrize("spec,k,key", _every_array(_is_float))
def test_every_float_array_rejects_nan_and_inf(spec, k, key):
    sample = SAMPLES[spec.name][k]
    for value, pos in ((np.nan, "middle"), (np.inf, 0), (-np.inf, -1)):
        x = _get(sample, key).copy()
        x.flat[x.size // 2 if pos == "middle" else pos] = value
        CASES["nan/inf (every array)"] += 1
        result, exc = _outcome(spec, _replace(sample, key, x))
        what = f"{_name(spec, sample, key)} with {value} at {pos}"
        assert exc is not None, f"{what}: accepted"
        _assert_clear_error(exc, what, (ValueError,), words=("finite", "nan", "inf"))


@pytest.mark.parametrize("spec,k,key", _every_array(lambda s, key: key[0] == "arg"))
def test_every_positional_input_rejects_the_wrong_dtype_kind(spec, k, key):
    sample = SAMPLES[spec.name][k]
    x = _get(sample, key)
    bad_x = x.astype(np.int64) if x.dtype.kind == "f" else x.astype(np.float64)
    CASES["dtype (every input)"] += 1
    result, exc = _outcome(spec, _replace(sample, key, bad_x))
    what = f"{_name(spec, sample, key)} as {bad_x.dtype}"
    assert exc is not None, f"{what}: accepted"
    _assert_clear_error(exc, what, (TypeError,), words=("dtype", "float", "integer", "int"))


# ---------------------------------------------------------------------------------------------------------
# Cotangents (README, "Failure model"): every backward pass validates what it receives -- the exact shape of its output
# (no broadcasting, not even a (1, ..., 1) one), its dtype, finite values. One output's cotangent corrupted
# at a time, the others valid; every registered op, on its first sample.

def cotangent_corruptions(y):
    """``(label, cotangent)`` pairs that a backward pass must refuse for the output ``y``."""
    g = _cotangent(y)
    other = np.float32 if y.dtype == np.float64 else np.float64
    grown = np.concatenate([g, np.take(g, [0], axis=-1)], axis=-1) if g.ndim else np.ones(2, g.dtype)
    out = [("wrong shape", grown)]
    if g.ndim == 0:
        out.append(("broadcastable", np.ones((1,), g.dtype)))
    elif g.shape != (1,) * g.ndim:
        out.append(("broadcastable", np.ones((1,) * g.ndim, g.dtype)))
    out += [("other float dtype", g.astype(other)), ("complex", g.astype(np.complex128))]
    bad = g.copy()
    bad.flat[bad.size // 2] = np.nan
    out.append(("nan", bad))
    return out


def cotangent_outcomes(spec, sample):
    """``[(label, what, exception or None)]``: the op's vjp called with each corrupted cotangent (a hang
    raises)."""
    results = []
    outputs, _ = _call(spec, sample)
    for k, y in enumerate(outputs):
        if y.dtype.kind != "f":
            continue
        for label, bad in cotangent_corruptions(y):
            cots = [_cotangent(o) for o in outputs]
            cots[k] = bad

            def vjp_only(cots=cots):
                kwargs = copy.deepcopy(sample.kwargs)
                guard = hasattr(signal, "SIGALRM")
                if guard:
                    old = signal.signal(signal.SIGALRM, _on_alarm)
                    signal.alarm(TIMEOUT_S)
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("error", RuntimeWarning)
                        _, vjp = spec.apply(*sample.inputs, **kwargs)
                        return vjp(tuple(cots))
                finally:
                    if guard:
                        signal.alarm(0)
                        signal.signal(signal.SIGALRM, old)
            try:
                vjp_only()
                exc = None
            except Exception as e:  # noqa: BLE001 -- judged by the caller
                exc = e
            CASES["cotangent"] += 1
            results.append((label, f"{spec.name}[{sample.label}] cotangent of output {k} {tuple(y.shape)}: {label} "
                            f"{getattr(bad, 'dtype', '')}{tuple(np.shape(bad))}", exc))
    return results


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_every_backward_rejects_bad_cotangents(spec):
    failures = []
    for _, what, exc in cotangent_outcomes(spec, SAMPLES[spec.name][0]):
        if exc is None:
            failures.append(f"{what}: accepted")
            continue
        try:
            assert_clear_cotangent_error(exc, what)
        except AssertionError as err:
            failures.append(str(err).splitlines()[0])
    assert not failures, "\n".join(failures)


def assert_clear_cotangent_error(exc, what):
    """:func:`_assert_clear_error` for a refused cotangent; the message may start ``"op (vjp): "`` (an
    adapter of the registry names the op and its vjp that way)."""
    msg = str(exc)
    if re.match(r"[\w.]+ \(vjp\): ", msg):
        exc = type(exc)(re.sub(r"^([\w.]+) \(vjp\): ", r"\1.vjp: ", msg))
    _assert_clear_error(exc, what, words=("grad", "cotangent", "shape", "dtype", "finite", "nan", "float"))
