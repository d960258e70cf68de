"""Harness of the whole-public-API bad-input sweep (the README's "Failure model"): argument kinds and their
corruptions, one case's run under a hang guard, and the judgement of its outcome. The table of valid
arguments (one entry per public callable) is in ``tests/test_bad_input_api.py``, which runs the sweep;
``tools/api_sweep.py`` runs the same sweep outside pytest and writes the failures per area.

Outcomes
--------
clean error          TypeError/ValueError (or a subclass, not LinAlgError/AxisError/JSONDecodeError) whose
                     message names the callable and the argument, without NumPy/Python wording
sound result         finite, float32/float64 of the right dtype, right shapes; orthogonal where promised;
                     equal to the unscaled result for a scale-invariant map
silent wrong         a result that is non-finite, complex/object/float16, of the wrong dtype or shape, or not
                     orthogonal where promised (or a documented value check failed)
unclean error        any other exception type (a hang included), or NumPy/Python wording, or a message that
                     names neither the callable nor the argument
wrong-kind accepted  an input that must be refused (float16/complex/bool/int/object/list arrays, NaN/Inf,
                     out-of-range or mistyped hyper-parameters, bad cotangents and .grad) returned normally
"""
from __future__ import annotations

import collections
import copy
import dataclasses
import json
import re
import signal
import traceback
import warnings

import numpy as np

TIMEOUT_S = 5                   # per case: a hang (10**30 iterations) is a failure, not a stuck CI

CLEAN, SOUND, SILENT, UNCLEAN, ACCEPTED = ("clean error", "sound result", "silent wrong", "unclean error",
                                           "wrong-kind accepted")
OUTCOMES = (CLEAN, SOUND, SILENT, UNCLEAN, ACCEPTED)
BAD_OUTCOMES = (SILENT, UNCLEAN, ACCEPTED)
VALID_FAILED = "valid call failed"

try:                                    # reuse the registry sweep's list of NumPy-internal phrases
    from test_bad_input import INTERNAL as _INTERNAL
except Exception:  # noqa: BLE001 -- run outside pytest's rootdir: keep a copy
    _INTERNAL = ("operands could not be broadcast", "could not broadcast", "matmul: input operand",
                 "shapes (", "not aligned", "cannot reshape", "too many indices", "out of bounds",
                 "tuple index out of range", "zero-size array", "singular matrix",
                 "array must not contain infs or nans", "last 2 dimensions", "einstein sum", "ufunc",
                 "setting an array element", "non-broadcastable", "object of type", "unsupported operand",
                 "not subscriptable", "has no attribute", "must be real number", "only integer scalar")
# More wording of NumPy's and Python's own (found by this sweep).
INTERNAL = tuple(_INTERNAL) + (
    "seedsequence", "expected a sequence", "invalid literal", "could not convert", "not supported between",
    "unhashable", "cannot convert float", "maximum supported dimension", "negative dimensions are not allowed",
    "array is too big", "integer is required", "object cannot be interpreted", "takes from", "positional argument",
    "unexpected keyword", "cannot cast", "casting rule", "input contains nan", "expecting value",
    "buffer is too small", "output array is read-only", "assignment destination is read-only",
    "nonsingular", "did not converge", "svd did not converge", "no attribute", "bytes or os.pathlike object",
    "string indices must be", "is not iterable", "not json serializable", "maximum allowed dimension",
    "data type '", "as a data type")

# Exception subclasses of ValueError/TypeError that carry NumPy's/Python's own words.
_FOREIGN = (np.linalg.LinAlgError, np.exceptions.AxisError, json.JSONDecodeError, UnicodeError)


# ---------------------------------------------------------------------------------------------------------
# Argument kinds. Each knows its valid value and its corruptions: (input class, value, expectation) with
# expectation "reject" (must raise a clean error) or "either" (clean error or sound result).

@dataclasses.dataclass
class Arr:
    """A float array argument."""
    value: np.ndarray
    struct: str = "general"      # "skew": corruptions that keep shape keep skewness
    nan: bool = True             # NaN/Inf must be refused (False: the callable does not promise it)
    kinds: bool = True           # wrong dtype kinds (float16, complex, bool, int, object, list) refused
    skip: tuple = ()             # input classes not applicable
    aliases: tuple = ()          # other names a message may use for this argument


@dataclasses.dataclass
class Cot:
    """A cotangent / grad_out (exact shape, exact dtype, finite)."""
    value: np.ndarray
    rnn: bool = False            # time-major: also one step too long
    aliases: tuple = ()


@dataclasses.dataclass
class Real:
    value: object
    lo: float = None
    hi: float = None
    lo_open: bool = False
    hi_open: bool = False
    huge: bool = True            # try 1e300 (either: a clear error or a finite result)
    aliases: tuple = ()


@dataclasses.dataclass
class Int:
    value: object
    lo: int = None
    hi: int = None
    iters: bool = False          # an iteration count: 10**30 must be refused (MAX_ITERATIONS)
    aliases: tuple = ()


@dataclasses.dataclass
class Rng:
    value: object = 0
    aliases: tuple = ("seed",)


@dataclasses.dataclass
class Choice:
    value: object
    aliases: tuple = ()


@dataclasses.dataclass
class Flag:
    value: bool
    aliases: tuple = ()


@dataclasses.dataclass
class DType:
    value: object = "float64"
    aliases: tuple = ()


@dataclasses.dataclass
class Shape:
    value: tuple
    aliases: tuple = ("dims",)


@dataclasses.dataclass
class Obj:
    """Any other argument: ``bad`` lists (input class, value) that must be refused."""
    value: object
    bad: tuple = ()
    either: tuple = ()           # (input class, value) that may be accepted if the result is sound
    aliases: tuple = ()


@dataclasses.dataclass
class Const:
    """Not corrupted (a model, a path made by the fixture ...)."""
    value: object


SCALE_CLASSES = ("x1e300", "x1e30", "near float max", "x1e-310", "x1e-40", "float32 x3e16", "x1e-13")
# "near float max": the array scaled so that its largest |entry| is this (per dtype). A float32 array is
# scaled by 1e30 and 1e-40 (subnormal) where a float64 one is scaled by 1e300 and 1e-310.
FLOAT_MAX_SCALE = {np.dtype(np.float64): 1e308, np.dtype(np.float32): 3e38}
SAME_SHAPE_CLASSES = SCALE_CLASSES + ("zeros", "rank-deficient")
SCALE_FACTORS = {"x1e300": 1e300, "x1e-310": 1e-310, "x1e30": 1e30, "x1e-40": 1e-40, "float32 x3e16": 3e16,
                 "x1e-13": 1e-13}


LAYOUT_CLASSES = ("read-only", "non-contiguous")
# The valid value in another valid type: accepted, and the same result.
SAME_VALUE_CLASSES = ("h numpy float64", "h int for real", "h numpy int64")


def _strided(x):
    """``x`` as a non-contiguous view (every other element of a larger array; Fortran order for a matrix)."""
    if x.ndim >= 2:
        return np.asfortranarray(x)
    return np.repeat(x, 2, axis=-1)[..., ::2]


def _rank_deficient(x, struct):
    y = np.array(x, copy=True)
    if y.ndim == 0:
        return np.zeros_like(y)
    if struct == "skew" and y.ndim >= 2:
        y[..., 0, :] = 0
        y[..., :, 0] = 0
        return y
    if y.ndim == 1:
        y[...] = y[0]
        return y
    if y.shape[-1] >= 2:
        y[..., -1] = y[..., 0]
    elif y.shape[-2] >= 2:
        y[..., -1, :] = y[..., 0, :]
    else:
        y[...] = 0
    return y


def array_corruptions(arg, n_arrays):
    x = np.asarray(arg.value)
    out = []
    if arg.nan and x.size:
        for cls, v in (("nan", np.nan), ("+inf", np.inf), ("-inf", -np.inf)):
            y = x.copy()
            y.flat[y.size // 2] = v
            out.append((cls, y, "reject"))
    if arg.kinds:
        out += [("float16", x.astype(np.float16), "reject"), ("complex128", x.astype(np.complex128), "reject"),
                ("bool", x != 0, "reject"), ("int64", np.round(x * 3).astype(np.int64), "reject"),
                ("object array", x.astype(object), "reject"), ("list", x.tolist(), "reject")]
    if x.ndim >= 1:
        out.append(("empty", np.take(x, np.arange(0), axis=0), "either"))
        out.append(("wrong rank", x[..., None], "either"))
        out.append(("wrong rank", x.reshape(-1) if x.ndim >= 2 else np.array(x[0]), "either"))
        if n_arrays >= 2:
            extra = np.take(x, [0], axis=-1) * 0.5
            out.append(("mismatched shape", np.concatenate([x, extra], axis=-1), "either"))
    big = np.abs(x).max(initial=0.0) if x.dtype.kind == "f" else 0.0
    if big > 0:
        out.append(("near float max", ((x / big) * FLOAT_MAX_SCALE[x.dtype]).astype(x.dtype), "either"))
    if x.dtype == np.float32:
        out += [("x1e30", x * np.float32(1e30), "either"), ("x1e-40", (x.astype(np.float64) * 1e-40).astype(x.dtype),
                                                             "either")]
    else:
        out += [("x1e300", x * 1e300, "either"), ("x1e-310", x * 1e-310, "either")]
    out += [("float32 x3e16", x.astype(np.float32) * np.float32(3e16), "either"),
            ("zeros", np.zeros_like(x), "either"), ("rank-deficient", _rank_deficient(x, arg.struct), "either")]
    if x.ndim >= 1 and x.size:                  # valid layouts: the same result as the valid input
        ro = x.copy()
        ro.flags.writeable = False
        out += [("read-only", ro, "accept"), ("non-contiguous", _strided(x), "accept")]
    return [c for c in out if c[0] not in arg.skip]


def cotangent_corruptions(arg):
    g = np.asarray(arg.value)
    other = np.float32 if g.dtype == np.float64 else np.float64
    grown = np.concatenate([g, np.take(g, [0], axis=-1)], axis=-1) if g.ndim else np.ones(2, g.dtype)
    out = [("g wrong shape", grown, "reject")]
    if g.ndim and g.shape != (1,) * g.ndim:
        out.append(("g broadcastable", np.ones((1,) * g.ndim, g.dtype), "reject"))
    elif not g.ndim:
        out.append(("g broadcastable", np.ones((1,), g.dtype), "reject"))
    if arg.rnn:
        out.append(("g one step too long", np.concatenate([g, g[:1]], axis=0), "reject"))
    out += [("g other float dtype", g.astype(other), "reject"), ("g complex", g.astype(np.complex128), "reject")]
    y = g.copy()
    y.flat[y.size // 2] = np.nan
    out.append(("g nan", y, "reject"))
    y = g.copy()
    y.flat[0] = np.inf
    out.append(("g inf", y, "reject"))
    big = float(np.abs(g).max(initial=0.0))
    if big > 0:                      # valid, huge: a finite gradient or a clear overflow error
        out.append(("g near float max", ((g / big) * FLOAT_MAX_SCALE[g.dtype]).astype(g.dtype), "either"))
    return out


def real_corruptions(arg):
    out = [("h nan", float("nan"), "reject"), ("h +inf", float("inf"), "reject"),
           ("h -inf", float("-inf"), "reject"), ("h bool", True, "reject"), ("h string", "1", "reject")]
    if arg.lo is not None and arg.lo >= 0:
        out.append(("h negative", -1.0, "reject"))
        if arg.lo > 0 or arg.lo_open:
            out.append(("h zero", 0.0, "reject"))
    if arg.hi is not None:
        out.append(("h out of range", float(arg.hi) + 1.0, "reject"))
    if arg.huge and arg.hi is None:
        out.append(("h 1e300", 1e300, "either"))
    out += [("h numpy nan", np.float64("nan"), "reject"), ("h numpy bool", np.bool_(True), "reject")]
    if isinstance(arg.value, float):
        out.append(("h numpy float64", np.float64(arg.value), "accept"))
        if arg.value == int(arg.value):
            out.append(("h int for real", int(arg.value), "accept"))
    return out


def int_corruptions(arg):
    v = arg.value if isinstance(arg.value, int) else 1
    out = [("h nan", float("nan"), "reject"), ("h +inf", float("inf"), "reject"), ("h bool", True, "reject"),
           ("h string", "2", "reject"), ("h float for int", float(v) + 0.5, "reject")]
    if arg.lo is not None and arg.lo >= 0:
        out.append(("h negative", -1, "reject"))
        if arg.lo > 0:
            out.append(("h zero", 0, "reject"))
    if arg.iters or arg.hi is not None:
        out.append(("h huge", 10**30, "reject"))
    else:                            # a size: a clear error (not MemoryError/OverflowError) or a sound result
        out.append(("h huge", 10**30, "either"))
    out += [("h integral float", float(v), "reject"), ("h numpy bool", np.bool_(True), "reject")]
    if isinstance(arg.value, int) and not isinstance(arg.value, bool):
        out.append(("h numpy int64", np.int64(arg.value), "accept"))
    return out


def hyper_corruptions(arg):
    if isinstance(arg, Real):
        return real_corruptions(arg)
    if isinstance(arg, Int):
        return int_corruptions(arg)
    if isinstance(arg, Rng):
        return [("rng=-1", -1, "reject"), ("h string", "0", "reject"), ("h float for int", 1.5, "reject"),
                ("h bool", True, "reject")]
    if isinstance(arg, Choice):
        return [("h string", "no-such-choice", "reject"), ("h bool", True, "reject"), ("h nan", float("nan"), "reject")]
    if isinstance(arg, Flag):
        return [("h string", "yes", "reject"), ("h nan", float("nan"), "reject"), ("h int for bool", 2, "reject")]
    if isinstance(arg, DType):
        return [("float16", "float16", "reject"), ("complex128", np.complex128, "reject"),
                ("int64", "int64", "reject"), ("bool", bool, "reject"), ("h string", "no-such-dtype", "reject"),
                ("h nan", float("nan"), "reject")]
    if isinstance(arg, Shape):
        v = tuple(arg.value)
        return [("h negative", (-1,) + v[1:], "reject"), ("h float for int", (v[0] + 0.5,) + v[1:], "reject"),
                ("h string", "ab", "reject"), ("h bool", (True,) + v[1:], "reject"),
                ("h huge", (10**30,) + v[1:], "reject"), ("h nan", (float("nan"),) + v[1:], "reject"),
                ("h too large", (10**7,) * len(v), "either"), ("h integral float", (float(v[0]),) + v[1:], "reject"),
                ("empty", (0,) + v[1:], "either"), ("wrong rank", v[:1], "either")]
    if isinstance(arg, Obj):
        return [(c, v, "reject") for c, v in arg.bad] + [(c, v, "either") for c, v in arg.either]
    if hasattr(arg, "make") and hasattr(arg, "bad"):       # Made
        return [(c, v, "reject") for c, v in arg.bad()]
    return []


def corruptions(arg, n_arrays):
    if isinstance(arg, Arr):
        return array_corruptions(arg, n_arrays)
    if isinstance(arg, Cot):
        return cotangent_corruptions(arg)
    if isinstance(arg, Const):
        return []
    return hyper_corruptions(arg)


def input_class_group(cls):
    if cls.startswith("g "):
        return "cotangent"
    if cls in ("directory", "missing file", "not an npz", "missing key", "unknown type", "ndarray",
               "class, not instance", "label out of range"):
        return "object/file"
    if cls.startswith("h ") or cls == "rng=-1":
        return "hyper-parameter"
    if cls.startswith("grad ") or cls in ("read-only parameter", "param near float max"):
        return "optimizer step"
    return "array"


# ---------------------------------------------------------------------------------------------------------
# Running one callable under the guard.

_WARN_MODE = "error"    # NumPy RuntimeWarnings: errors (first run of a case) or ignored (its second run)
WARNED = []             # the cases whose first run stopped on a NumPy RuntimeWarning


class Hang(BaseException):
    """Raised by the alarm; a BaseException so that no ``except Exception`` can swallow it."""


def _on_alarm(signum, frame):
    raise Hang(f"no result after {TIMEOUT_S} s")


def guarded(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with RuntimeWarnings as errors and a SIGALRM hang guard."""
    guard = hasattr(signal, "SIGALRM")
    if guard:
        old = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, TIMEOUT_S)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(_WARN_MODE, RuntimeWarning)         # NumPy's overflow/invalid: a NaN in the making
            warnings.filterwarnings("ignore", message=r"[A-Za-z_][\w.]*: ", category=RuntimeWarning)  # our own
            warnings.simplefilter("ignore", UserWarning)
            return fn(*args, **kwargs)
    finally:
        if guard:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


def origin(exc):
    """``file:line`` of the innermost frame inside orthoref (where the exception came from)."""
    where = None
    for fs in traceback.extract_tb(exc.__traceback__):
        if "/orthoref/" in fs.filename.replace("\\", "/"):
            where = f"{fs.filename.split('/orthoref/')[-1]}:{fs.lineno}"
    return where


def _word(name, msg):
    return re.search(r"(?<![A-Za-z0-9_])" + re.escape(name) + r"(?![A-Za-z0-9_])", msg) is not None


def judge_error(exc, who, names, missing_file=False):
    """``(outcome, detail)`` of an exception raised by a case."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, Hang):
        return UNCLEAN, f"hang ({exc})"
    if missing_file and isinstance(exc, FileNotFoundError):
        return CLEAN, text
    if not isinstance(exc, (TypeError, ValueError)) or isinstance(exc, _FOREIGN):
        return UNCLEAN, f"wrong type {text}"
    msg = str(exc)
    low = msg.lower()
    internal = [p for p in INTERNAL if p in low]
    if internal:
        return UNCLEAN, f"NumPy/Python wording {internal}: {text}"
    flat = low.replace("_", "")
    if not any(w.lower().replace("_", "") in flat for w in who):     # LeakyReLU ~ leaky_relu
        return UNCLEAN, f"message does not name {who[0]}: {text}"
    overflow = type(exc).__name__ == "NonFiniteError" and "overflow" in low   # names the result, not an input
    if names and not overflow and not any(_word(n, msg) for n in names):
        return UNCLEAN, f"message does not name the argument {names[0]!r}: {text}"
    return CLEAN, text


# ---------------------------------------------------------------------------------------------------------
# Judging a result.

def leaves(obj, path="out", depth=0):
    """``(path, value)`` for every array / number in a result (tuples, lists, dicts, dataclasses, modules)."""
    if depth > 6:
        return
    if isinstance(obj, (np.ndarray, np.generic)):
        yield path, obj
    elif isinstance(obj, (bool, int, str, type(None))):
        return
    elif isinstance(obj, float):
        yield path, obj
    elif isinstance(obj, complex):
        yield path, obj
    elif isinstance(obj, (tuple, list)):
        for i, v in enumerate(obj[:64]):
            yield from leaves(v, f"{path}[{i}]", depth + 1)
    elif isinstance(obj, dict):
        for k, v in list(obj.items())[:64]:
            yield from leaves(v, f"{path}[{k!r}]", depth + 1)
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from leaves(getattr(obj, f.name), f"{path}.{f.name}", depth + 1)
    elif hasattr(obj, "named_parameters"):
        for name, p in obj.named_parameters():
            yield f"{path}.{name}", p.data
    elif hasattr(obj, "data") and isinstance(getattr(obj, "data"), np.ndarray):
        yield f"{path}.data", obj.data


def soundness(result, dtype=None, ref_shapes=None):
    """None when every leaf is finite float32/float64 (of ``dtype`` where given, of the reference shapes
    where given), else the reason."""
    items = list(leaves(result))
    for path, v in items:
        if isinstance(v, complex) or (hasattr(v, "dtype") and v.dtype.kind == "c"):
            return f"{path} is complex"
        if hasattr(v, "dtype") and v.dtype.kind == "O":
            return f"{path} has dtype object"
        if hasattr(v, "dtype") and v.dtype.kind == "f" and v.dtype not in (np.float32, np.float64):
            return f"{path} has dtype {v.dtype}"
        if hasattr(v, "dtype") and v.dtype.kind not in "fiub":
            continue
        if (isinstance(v, float) or v.dtype.kind == "f") and not np.all(np.isfinite(v)):
            return f"{path} holds NaN/Inf"
    if dtype is not None:
        for path, v in items:
            if isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.ndim >= 1 and v.dtype != dtype:
                return f"{path} has dtype {v.dtype}, the input's is {np.dtype(dtype)}"
    if ref_shapes is not None:
        shapes = {p: np.shape(v) for p, v in items if isinstance(v, np.ndarray)}
        for p, s in ref_shapes.items():
            if p in shapes and shapes[p] != s:
                return f"{p} has shape {shapes[p]}, expected {s}"
    return None


def orthonormality(Q):
    """max |QᵀQ − I| (tall) or |QQᵀ − I| (wide) over the last two axes, in float64."""
    Q = np.asarray(Q, dtype=np.float64)
    if Q.ndim < 2 or Q.size == 0:
        return 0.0
    if Q.shape[-2] < Q.shape[-1]:
        Q = np.swapaxes(Q, -1, -2)
    G = np.swapaxes(Q, -1, -2) @ Q
    return float(np.abs(G - np.eye(G.shape[-1])).max())


def ortho_tol(dtype, base):
    eps = 1e-4 if np.dtype(dtype) == np.float32 else 1e-9
    return max(eps, 1.5 * base)      # an approximate map (Newton-Schulz) is held to its valid-input accuracy


def same_result(res, base):
    """None when every array/number leaf of ``res`` equals ``base``'s (rtol 1e-12; 1e-5 in float32, where a
    strided input may be summed in another order), else the first difference."""
    a, b = dict(leaves(res)), dict(leaves(base))
    if a.keys() != b.keys():
        return f"leaves {sorted(a)} != {sorted(b)}"
    for p in a:
        if "seconds" in p:           # a timing (ortho.compare): not a result
            continue
        x, y = np.asarray(a[p]), np.asarray(b[p])
        if x.shape != y.shape or x.dtype != y.dtype:
            return f"{p}: {x.dtype}{x.shape} != {y.dtype}{y.shape}"
        if x.dtype.kind in "fc":
            scale = float(np.abs(y).max(initial=0.0)) if y.size else 0.0
            tol = 1e-5 if x.dtype in (np.float32, np.complex64) else 1e-12   # float32: another summation order
            if not np.allclose(x, y, rtol=tol, atol=tol * max(scale, 1e-300), equal_nan=True):
                return f"{p} differs"
        elif x.dtype.kind != "O" and not np.array_equal(x, y):
            return f"{p} differs"
    return None


def same_values(a, b, dtype):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return f"shape {a.shape} != {b.shape}"
    rtol = 1e-3 if np.dtype(dtype) == np.float32 else 1e-6
    scale = float(np.abs(b).max(initial=0.0))
    err = float(np.abs(a - b).max(initial=0.0))
    if not err <= rtol * max(scale, 1e-300):
        return f"differs from the unscaled result by {err:.3g} (scale {scale:.3g})"
    return None


# ---------------------------------------------------------------------------------------------------------
# Records.

@dataclasses.dataclass
class Case:
    callable: str          # "polar", "Linear.backward", "Adam.step"
    arg: str
    cls: str
    outcome: str
    detail: str
    area: str
    where: str = None

    def line(self):
        at = f" [raised at {self.where}]" if self.where else ""
        return f"{self.callable} | {self.arg} | {self.cls} | {self.outcome} | {self.detail}{at}"


class Tally:
    def __init__(self):
        self.cases = []

    def add(self, case):
        self.cases.append(case)

    def bad(self):
        return [c for c in self.cases if c.outcome in BAD_OUTCOMES or c.outcome == VALID_FAILED]

    def table(self):
        per = collections.defaultdict(collections.Counter)
        for c in self.cases:
            per[c.cls][c.outcome] += 1
        cols = OUTCOMES + (VALID_FAILED,)
        w = max([len(k) for k in per] + [20])
        lines = [f"{'input class':<{w}} {'tried':>6} " + " ".join(f"{o[:14]:>14}" for o in cols)]
        total, groups = collections.Counter(), collections.defaultdict(collections.Counter)
        for k in sorted(per, key=lambda k: (input_class_group(k), k)):
            n = sum(per[k].values())
            total.update(per[k])
            groups[input_class_group(k)].update(per[k])
            lines.append(f"{k:<{w}} {n:>6} " + " ".join(f"{per[k][o]:>14}" for o in cols))
        for g in sorted(groups):
            lines.append(f"{'all ' + g:<{w}} {sum(groups[g].values()):>6} "
                         + " ".join(f"{groups[g][o]:>14}" for o in cols))
        lines.append(f"{'TOTAL':<{w}} {sum(total.values()):>6} " + " ".join(f"{total[o]:>14}" for o in cols))
        return "\n".join(lines)

    def warned(self):
        return [c for c in self.cases if "NumPy RuntimeWarning" in c.detail]

    def summary_line(self):
        c = collections.Counter(x.outcome for x in self.cases)
        return (f"API bad-input sweep: {len(self.cases)} cases: " +
                ", ".join(f"{o} {c[o]}" for o in OUTCOMES + (VALID_FAILED,)) +
                f" ({len(self.warned())} cases emitted a NumPy RuntimeWarning before that outcome)")


def copied(kwargs):
    out = {}
    for k, v in kwargs.items():
        if isinstance(v, np.ndarray):
            out[k] = v.copy()
        elif isinstance(v, (list, dict, tuple)):
            out[k] = copy.deepcopy(v)
        else:
            out[k] = v
    return out


# ---------------------------------------------------------------------------------------------------------
# Table entries.

@dataclasses.dataclass
class Fn:
    """A function: its arguments (name -> kind, in signature order, passed by keyword) and what its result
    promises. ``ortho(kw, result)`` gives the matrix that must be orthonormal; ``scale_inv(result)`` the part
    that must not change when the first array argument is scaled; ``check(kw, result, cls, arg)`` a further
    value check (a reason string when wrong); ``dtype``: the argument whose dtype the float outputs share
    (an ``Arr`` or a ``DType``; None: no check)."""
    args: dict
    ortho: object = None
    ortho_skip: tuple = ()
    ortho_atol: float = 0.0      # an approximate map's own accuracy (cayley_iterative: O((α‖A‖)^(iterations+2)))
    scale_inv: object = None
    scale_classes: tuple = SCALE_CLASSES
    scale_pow: int = 0           # 0: invariant; 1: the part scales as 1/s (a VJP); -1: as s (singular values)
    check: object = None
    dtype: str = "auto"
    allow_inf: tuple = ()        # input classes where an infinite result is documented
    shape_check: object = True   # (args) -> bool: whether a same-shape input must give the same output shapes
    variants: tuple = ()         # further argument tables (name -> kind overrides), each swept too
    float32: bool = True         # also sweep the valid arguments in float32 (arrays, cotangents, dtype)
    who: tuple = ()


@dataclasses.dataclass
class Layer:
    """A layer class: constructor arguments, the forward input ``x`` (and further forward arguments)."""
    ctor: dict
    x: Arr
    fwd: dict = dataclasses.field(default_factory=dict)
    rnn: bool = False
    star: str = None             # the constructor takes ``*star`` (Sequential)
    who: tuple = ()              # other names a message may give (a Sequential's layers)


@dataclasses.dataclass
class Opt:
    """An optimizer class: constructor hyper-parameters (params made by the sweep)."""
    ctor: dict
    stiefel: bool = False


@dataclasses.dataclass
class Exempt:
    """Public, but not swept here, for the reason given (tested elsewhere or not callable with data)."""
    reason: str


@dataclasses.dataclass
class Fresh:
    """An argument made fresh for every call (a model that the callable modifies)."""
    make: object


@dataclasses.dataclass
class Made:
    """An argument whose valid value is made on first use (a checkpoint path, the rows of a report):
    ``make()`` gives it, ``bad()`` the (input class, value) pairs that must be refused."""
    make: object
    bad: object = tuple
    aliases: tuple = ()


def _value(kind):
    return kind.make() if isinstance(kind, (Fresh, Made)) else kind.value


def _arrays(args):
    return [k for k, a in args.items() if isinstance(a, Arr)]


def _summ(res):
    parts = []
    for p, v in list(leaves(res))[:3]:
        if isinstance(v, np.ndarray):
            parts.append(f"{p}: {v.dtype}{tuple(v.shape)}")
        else:
            parts.append(f"{p}: {v!r}"[:60])
    return "returned " + (", ".join(parts) if parts else type(res).__name__)


def _call(fn, kw, star=None):
    if star is None:
        return guarded(fn, **kw)
    kw = dict(kw)
    return guarded(fn, *kw.pop(star), **kw)


def _attempt(who, names, call, expect, judge, missing):
    """One run of a case: ``(outcome, detail, where, exception or None)``."""
    try:
        res = call()
    except (Exception, Hang) as exc:  # noqa: BLE001 -- every exception is judged
        outcome, detail = judge_error(exc, who, names, missing_file=missing)
        if expect == "accept" and outcome == CLEAN:   # a valid input refused (a scaled one of a scale-invariant map)
            return UNCLEAN, f"refuses a valid input: {detail}", origin(exc), exc
        return outcome, detail, origin(exc), exc
    if expect == "reject":
        return ACCEPTED, _summ(res), None, None
    try:
        reason = judge(res)
    except (Exception, Hang) as exc:  # noqa: BLE001 -- a later step on the accepted input raised
        # (a later call, e.g. the forward after a constructor, names what it received, not the argument)
        outcome, detail = judge_error(exc, who, (), missing_file=missing)
        return outcome, f"accepted, then {detail}", origin(exc), exc
    return (SILENT, reason, None, None) if reason else (SOUND, "", None, None)


def _outcome(name, who, names, call, expect, judge, missing=False):
    """Run ``call()``; ``(outcome, detail, where)``: errors judged by :func:`judge_error`, returns by
    ``judge(result)`` (a reason string when silently wrong) or, for an input that must be refused, as
    wrong-kind accepted.

    NumPy's RuntimeWarnings (overflow, invalid value) are errors in a first run. A case stopped by one runs
    again with them ignored and is judged by that second run (a NonFiniteError raised after the overflow is
    a clean error; a NaN or Inf that comes out is silent wrong); the warning is noted in the detail and
    counted in :data:`WARNED`."""
    global _WARN_MODE
    outcome, detail, where, exc = _attempt(who, names, call, expect, judge, missing)
    if isinstance(exc, RuntimeWarning):
        _WARN_MODE = "ignore"
        try:
            outcome, detail, where, _ = _attempt(who, names, call, expect, judge, missing)
        finally:
            _WARN_MODE = "error"
        WARNED.append(f"{name}: {exc}")
        detail = f"{detail} (after a NumPy RuntimeWarning: {exc})".strip()
    return outcome, detail, where


def sweep_function(name, fn, entry, area, tally):
    who = (name.split(".")[-1],) + tuple(entry.who)
    for variant in ({},) + tuple(entry.variants):
        args = dict(entry.args)
        args.update(variant)
        label = name
        if variant:
            label += "[" + ", ".join(f"{k}={getattr(v, 'value', '?')!r}" for k, v in variant.items()
                                     if isinstance(v, Const)) + "]"
        _sweep_args(label, fn, entry, args, who, area, tally)
    if entry.float32 and any(isinstance(a, (Arr, Cot)) for a in entry.args.values()):
        _sweep_args(f"{name}[float32]", fn, entry, _args_float32(entry.args), who, area, tally)


def _args_float32(args):
    """The argument table with its float64 arrays (and a DType) in float32: the float32 path of a callable."""
    out = {}
    for k, a in args.items():
        if isinstance(a, (Arr, Cot)) and np.asarray(a.value).dtype == np.float64:
            out[k] = dataclasses.replace(a, value=np.asarray(a.value).astype(np.float32))
        elif isinstance(a, DType):
            out[k] = DType("float32")
        else:
            out[k] = a
    return out


def _dtype_of(entry, args, kw):
    key = entry.dtype
    if key == "auto":
        arrs = _arrays(args)
        key = arrs[0] if arrs else ("dtype" if isinstance(args.get("dtype"), DType) else None)
    if key is None:
        return None
    v = kw.get(key)
    try:
        return np.dtype(v) if isinstance(args[key], DType) else (v.dtype if isinstance(v, np.ndarray) else None)
    except TypeError:
        return None


def _unscale(got, cls, power, big, fmax):
    """A scale-equivariant result at the scale of class ``cls`` brought back to the unscaled one: times
    ``s`` (``power`` 1, a VJP: the gradient is ``1/s`` times the unscaled one), divided by ``s`` (``power``
    -1), as it is (0). ``big``: max |x| of the valid input (``near float max`` has ``s = 1e308 / big``)."""
    if power == 0:
        return got
    if cls == "near float max":
        return (got * fmax) / big if power == 1 else (got / fmax) * big
    s = SCALE_FACTORS[cls]
    return got * s if power == 1 else got / s


def _as_float32(kw, args):
    """``kw`` with every float64 array argument (and cotangent) cast to float32 (and a DType to float32)."""
    out = dict(kw)
    for k, a in args.items():
        v = out.get(k)
        if isinstance(a, (Arr, Cot)) and isinstance(v, np.ndarray) and v.dtype == np.float64:
            out[k] = v.astype(np.float32)
        elif isinstance(a, DType):
            out[k] = "float32"
    return out


def _sweep_args(name, fn, entry, args, who, area, tally):
    try:
        valid = {k: _value(a) for k, a in args.items()}
        given = copied(valid)
        base = _call(fn, given)
        reason = soundness(base)
        mutated = [k for k, v in given.items() if isinstance(v, np.ndarray) and not np.array_equal(
            v, valid[k], equal_nan=v.dtype.kind in "fc")]
        if mutated and not reason:
            reason = f"the call modified its input {mutated[0]}"
    except (Exception, Hang) as exc:  # noqa: BLE001
        tally.add(Case(name, "-", "valid arguments", VALID_FAILED, f"{type(exc).__name__}: {exc}", area,
                       origin(exc)))
        return
    if reason:
        tally.add(Case(name, "-", "valid arguments", VALID_FAILED, f"valid call: {reason}", area))
        return
    ref_shapes = {p: np.shape(v) for p, v in leaves(base) if isinstance(v, np.ndarray)}
    base_err = orthonormality(entry.ortho(valid, base)) if entry.ortho else 0.0
    arrays = _arrays(args)
    primary = arrays[0] if arrays else None
    for arg, kind in args.items():
        cases = corruptions(kind, len(arrays))
        if entry.scale_inv and arg == primary:         # scaled inputs of a scale-invariant map: must work
            x = np.asarray(valid[arg])
            must = "accept" if entry.scale_pow == 0 else "either"     # 1/s or s may overflow: a clear error then
            cases = [(c, v, must if c in entry.scale_classes else e) for c, v, e in cases]
            if "x1e-13" in entry.scale_classes:
                cases.append(("x1e-13", x * 1e-13, must))
        for cls, bad, expect in cases:
            kw = {k: (_value(a) if isinstance(a, (Fresh, Made)) else v)
                  for (k, v), a in zip(valid.items(), args.values())}
            kw = copied(kw)
            if cls == "float32 x3e16":                 # the whole call in float32, this argument scaled
                kw = _as_float32(kw, args)
            kw[arg] = bad
            names = (arg,) + tuple(getattr(kind, "aliases", ()))
            if cls in ("mismatched shape", "wrong rank", "empty", "float32 x3e16"):   # a relation: any array
                names += tuple(a for a, k in args.items() if a != arg and isinstance(k, (Arr, Cot)))  # may be named

            def judge(res, kw=kw, cls=cls, arg=arg):
                dt = _dtype_of(entry, args, kw)
                same = cls in SAME_SHAPE_CLASSES and (entry.shape_check is True or entry.shape_check(args))
                reason = soundness(res, dt, ref_shapes if same else None)
                if reason and cls in entry.allow_inf and "NaN/Inf" in reason:
                    reason = None
                if reason:
                    return reason
                if cls in LAYOUT_CLASSES or cls in SAME_VALUE_CLASSES:
                    diff = same_result(res, base)
                    if diff:
                        return f"a {cls} argument gives another result than the valid one: {diff}"
                    return None
                if entry.ortho and cls not in entry.ortho_skip:
                    err = orthonormality(entry.ortho(kw, res))
                    if not err <= max(ortho_tol(dt or np.float64, base_err), entry.ortho_atol):
                        return f"'orthogonal' output is not: max |QᵀQ - I| = {err:.3g}"
                if entry.scale_inv and arg == primary and cls in entry.scale_classes:
                    # the reference: the same call on the scaled input brought back (exactly representable:
                    # a subnormal input has lost bits that no map can recover)
                    v0, xs = np.asarray(valid[arg]), np.asarray(kw[arg])
                    big = float(np.abs(v0).max())
                    factor = SCALE_FACTORS.get(cls) or FLOAT_MAX_SCALE[xs.dtype] / big
                    kw_ref = copied(kw)
                    kw_ref[arg] = (xs.astype(np.float64) / factor).astype(xs.dtype)
                    ref = _call(fn, kw_ref)
                    got = _unscale(np.asarray(entry.scale_inv(res), np.float64), cls, entry.scale_pow, big,
                                   FLOAT_MAX_SCALE[xs.dtype])
                    diff = same_values(got, entry.scale_inv(ref), xs.dtype)
                    if diff:
                        kind_ = "scale-invariant map" if not entry.scale_pow else "scale-equivariant map (rescaled)"
                        return f"{kind_}: {diff}"
                if entry.check:
                    return entry.check(kw, res, cls, arg)
                return None

            file_named = (str(bad),) if isinstance(kind, Made) and isinstance(bad, str) else ()
            who_here, names = who + file_named, names + file_named     # a file error may name the file
            outcome, detail, where = _outcome(name, who_here, names, lambda kw=kw: _call(fn, copied(kw)), expect, judge,
                                              missing=cls == "missing file")
            tally.add(Case(name, arg, cls, outcome, detail, area, where))


# ---------------------------------------------------------------------------------------------------------
# Layers: constructor, forward, backward.

def _rand_like(y, seed=7):
    return np.random.default_rng(seed).standard_normal(np.shape(y)).astype(y.dtype)


def _layer_sound(layer, out, x_dtype, fwd_shape=None):
    reason = soundness(out)
    if reason:
        return f"forward: {reason}"
    dt = next((p.dtype for p in layer.parameters()), x_dtype)   # a layer without parameters: the input's
    if isinstance(out, np.ndarray) and out.dtype != dt:
        return f"forward: output dtype {out.dtype}, the layer's is {dt}"
    if fwd_shape is not None and np.shape(out) != fwd_shape:
        return f"forward: output shape {np.shape(out)}, expected {fwd_shape}"
    layer.zero_grad()
    dx = guarded(layer.backward, _rand_like(out))
    reason = soundness(dx)
    if reason:
        return f"backward after the accepted input: {reason}"
    for pname, p in layer.named_parameters():
        if p.grad is not None:
            reason = soundness(p.grad, p.dtype)
            if reason:
                return f"backward after the accepted input: {pname}.grad {reason}"
    return None


def sweep_layer(name, cls, entry, area, tally):
    _sweep_layer(name, cls, entry, area, tally)
    if "dtype" in entry.ctor or not entry.ctor or entry.star:
        _sweep_layer(f"{name}[float32]", cls, _layer_float32(entry), area, tally, ctor_cases=False, who=name)


def _layer_float32(entry):
    """The entry with a float32 layer (``dtype``), input and further forward arrays."""
    ctor = dict(entry.ctor)
    if "dtype" in ctor:
        ctor["dtype"] = DType("float32")
    if entry.star:                  # a Sequential of float64 layers: cast them
        ctor[entry.star] = dataclasses.replace(ctor[entry.star], value=tuple(
            copy.deepcopy(m).to(np.float32) for m in ctor[entry.star].value))
    return dataclasses.replace(entry, ctor=ctor, x=_args_float32({"x": entry.x})["x"],
                               fwd=_args_float32(entry.fwd))


def _sweep_layer(name, cls, entry, area, tally, ctor_cases=True, who=None):
    who = (who or name,) + tuple(entry.who)
    ctor = {k: _value(a) for k, a in entry.ctor.items()}

    def make(kw):
        return _call(cls, copied(kw), entry.star)

    x = np.asarray(entry.x.value)
    fwd = {k: _value(a) for k, a in entry.fwd.items()}
    try:
        layer = make(ctor)
        out = guarded(layer.forward, x.copy(), **copied(fwd))
        reason = _layer_sound(layer, out, x.dtype)
    except (Exception, Hang) as exc:  # noqa: BLE001
        tally.add(Case(f"{name}", "-", "valid arguments", VALID_FAILED, f"{type(exc).__name__}: {exc}", area,
                       origin(exc)))
        return
    if reason:
        tally.add(Case(f"{name}", "-", "valid arguments", VALID_FAILED, reason, area))
        return
    out_shape, valid_out = np.shape(out), np.array(out, copy=True)
    # constructor
    for arg, kind in (entry.ctor.items() if ctor_cases else ()):
        for icls, bad, expect in corruptions(kind, 0):
            kw = dict(ctor)
            kw[arg] = bad
            names = (arg,) + tuple(getattr(kind, "aliases", ()))

            def judge(layer):
                out = guarded(layer.forward, x.copy(), **copied(fwd))
                return _layer_sound(layer, out, x.dtype)
            outcome, detail, where = _outcome(name, who, names, lambda kw=kw: make(kw), expect, judge)
            tally.add(Case(f"{name}.__init__", arg, icls, outcome, detail, area, where))
    # forward
    fwd_args = {"x": entry.x}
    fwd_args.update(entry.fwd)
    n_arr = len(fwd_args)
    for arg, kind in fwd_args.items():
        for icls, bad, expect in corruptions(kind, max(n_arr, 1)):
            kw = copied(fwd)
            xx = x.copy()
            if arg == "x":
                xx = bad
            else:
                kw[arg] = bad
            names = (arg, "input") + tuple(getattr(kind, "aliases", ()))
            if icls in ("mismatched shape", "wrong rank", "empty"):
                names += tuple(fwd_args)

            ctor_here = ctor
            if icls == "float32 x3e16":          # a float32 layer (and float32 further inputs), its input scaled
                if "dtype" in ctor:
                    ctor_here = dict(ctor, dtype="float32")
                kw = {k: (v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype == np.float64 else v)
                      for k, v in kw.items()}
                if arg != "x":
                    xx = xx.astype(np.float32)

            def call(xx=xx, kw=kw, ctor_here=ctor_here):
                lay = make(ctor_here)
                return lay, guarded(lay.forward, xx, **kw)

            def judge(res, icls=icls, xx=xx, arg=arg):
                lay, out = res
                if icls in LAYOUT_CLASSES:
                    diff = same_result(out, valid_out)
                    if diff:
                        return f"a {icls} input gives another output than the valid one: {diff}"
                xd = np.asarray(xx).dtype if arg == "x" else x.dtype
                return _layer_sound(lay, out, xd, out_shape if icls in SAME_SHAPE_CLASSES else None)
            outcome, detail, where = _outcome(name, who, names, call, expect, judge)
            tally.add(Case(f"{name}.forward", arg, icls, outcome, detail, area, where))
    # load_state_dict: the first parameter's array corrupted
    state = layer.state_dict()
    pkeys = [k for k, _ in layer.named_parameters()]
    if pkeys:
        key = pkeys[0]
        w = np.asarray(state[key])
        other = np.float32 if w.dtype == np.float64 else np.float64
        bads = [(c, v, "reject") for c, v, _ in array_corruptions(Arr(w), 1)
                if c in ("float16", "complex128", "bool", "int64", "object array", "list")]
        bads += [("mismatched shape", np.concatenate([w, np.take(w, [0], axis=-1)], axis=-1), "reject"),
                 ("wrong rank", w[None], "reject"), ("nan", _poison(w, np.nan), "either"),
                 ("other float dtype", w.astype(other), "either")]
        for icls, bad, expect in bads:
            def call(bad=bad):
                lay = make(ctor)
                st = {k: np.array(v, copy=True) for k, v in state.items()}
                st[key] = bad
                guarded(lay.load_state_dict, st)
                return lay

            def judge(lay):
                for pname, p in lay.named_parameters():
                    if p.data.dtype != w.dtype and pname == key:
                        return f"load_state_dict: {pname} now has dtype {p.data.dtype}, the layer's is {w.dtype}"
                out = guarded(lay.forward, x.copy(), **copied(fwd))
                return _layer_sound(lay, out, x.dtype)
            outcome, detail, where = _outcome(name, who + ("load_state_dict",), (key, "state", "state_dict"), call,
                                              expect, judge)
            tally.add(Case(f"{name}.load_state_dict", key, icls, outcome, detail, area, where))
    # load_state_dict: each float buffer corrupted (running statistics); judged by an eval-mode forward
    for bkey, buf in layer.named_buffers():
        b = np.asarray(buf)
        if b.dtype.kind != "f" or b.ndim == 0:
            continue
        bads = [("complex128", b.astype(np.complex128), "reject"), ("float16", b.astype(np.float16), "reject"),
                ("nan", _poison(b, np.nan), "reject"), ("+inf", _poison(b, np.inf), "reject"),
                ("mismatched shape", np.concatenate([b, b[:1]]), "reject"), ("negative", -np.abs(b) - 1, "either")]
        for icls, bad, expect in bads:
            def call(bad=bad, bkey=bkey):
                lay = make(ctor)
                st = {k: np.array(v, copy=True) for k, v in state.items()}
                st[bkey] = bad
                guarded(lay.load_state_dict, st)
                return lay

            def judge(lay):
                lay.eval()
                out = guarded(lay.forward, x.copy(), **copied(fwd))
                return soundness(out)
            outcome, detail, where = _outcome(name, who + ("load_state_dict",), (bkey, "state", "state_dict"),
                                              call, expect, judge)
            tally.add(Case(f"{name}.load_state_dict", bkey, icls, outcome, detail, area, where))
    # backward before any forward: a clear error
    if entry.ctor or not entry.star:
        g0 = np.random.default_rng(3).standard_normal(out_shape).astype(out.dtype)
        outcome, detail, where = _outcome(name, who, ("forward", "backward"),
                                          lambda: guarded(make(ctor).backward, g0), "reject", lambda r: None)
        tally.add(Case(f"{name}.backward", "grad_out", "g before forward", outcome, detail, area, where))
    # backward
    gk = Cot(np.random.default_rng(3).standard_normal(out_shape).astype(out.dtype), rnn=entry.rnn)
    def grads_sound(res):
        lay, dx = res
        reason = soundness(dx)
        for pname, p in lay.named_parameters():
            reason = reason or (soundness(p.grad, p.dtype) and f"{pname}.grad: {soundness(p.grad, p.dtype)}")
        return reason

    for icls, bad, expect in corruptions(gk, 1):
        def call(bad=bad):
            lay = make(ctor)
            guarded(lay.forward, x.copy(), **copied(fwd))
            return lay, guarded(lay.backward, bad)
        outcome, detail, where = _outcome(name, who, ("grad_out", "gradient"), call, expect, grads_sound)
        tally.add(Case(f"{name}.backward", "grad_out", icls, outcome, detail, area, where))


# ---------------------------------------------------------------------------------------------------------
# Optimizers: constructor, step.

def _params(dtype=np.float64):
    from orthoref.nn import Parameter
    rng = np.random.default_rng(11)
    Q, _ = np.linalg.qr(rng.standard_normal((6, 4)))
    W = Parameter(Q.astype(dtype), "W")
    b = Parameter(rng.standard_normal(4).astype(dtype), "b")
    W.grad = (0.1 * rng.standard_normal((6, 4))).astype(dtype)
    b.grad = (0.1 * rng.standard_normal(4)).astype(dtype)
    return [W, b]


def _opt_sound(params, stiefel, dtype=np.float64):
    for p in params:
        reason = soundness(p.data, p.dtype)
        if reason:
            return f"after step: parameter {p.name} {reason}"
        if p.data.dtype != dtype:
            return f"after step: parameter {p.name} has dtype {p.data.dtype}, it had {np.dtype(dtype)}"
    if stiefel:
        err = orthonormality(params[0].data)
        if err > (1e-6 if dtype == np.float64 else 1e-4):
            return f"after step: the Stiefel parameter is not orthonormal (max |QᵀQ - I| = {err:.3g})"
    return None


def sweep_optimizer(name, cls, entry, area, tally):
    from orthoref.nn import Parameter
    who = (name,)
    ctor = {k: _value(a) for k, a in entry.ctor.items()}

    def run(kw, params=None, mutate=None, warm=False):
        params = _params() if params is None else params
        opt = guarded(cls, params, **kw)
        if warm:                         # one valid step first: momentum/moment buffers exist
            guarded(opt.step)
        if mutate is not None:
            mutate(params)
        guarded(opt.step)
        return params

    try:
        reason = _opt_sound(run(ctor), entry.stiefel)
    except (Exception, Hang) as exc:  # noqa: BLE001
        tally.add(Case(name, "-", "valid arguments", VALID_FAILED, f"{type(exc).__name__}: {exc}", area,
                       origin(exc)))
        return
    if reason:
        tally.add(Case(name, "-", "valid arguments", VALID_FAILED, reason, area))
        return
    judge = lambda ps: _opt_sound(ps, entry.stiefel)  # noqa: E731
    for arg, kind in entry.ctor.items():
        for icls, bad, expect in corruptions(kind, 0):
            kw = dict(ctor)
            kw[arg] = bad
            names = (arg,) + tuple(getattr(kind, "aliases", ()))
            outcome, detail, where = _outcome(name, who, names, lambda kw=kw: run(kw), expect, judge)
            tally.add(Case(f"{name}.__init__", arg, icls, outcome, detail, area, where))
    # the same hyper-parameters given per parameter group
    for arg, kind in entry.ctor.items():
        if not isinstance(kind, (Real, Int, Obj)):
            continue
        for icls, bad, expect in corruptions(kind, 0):
            if expect != "reject":
                continue

            def call(arg=arg, bad=bad):
                ps = _params()
                opt = guarded(cls, [{"params": ps, arg: bad}], **ctor)
                guarded(opt.step)
                return ps
            outcome, detail, where = _outcome(name, who, (arg,) + tuple(getattr(kind, "aliases", ())), call,
                                              expect, judge)
            tally.add(Case(f"{name}.__init__(param group)", arg, icls, outcome, detail, area, where))
    # params
    rng = np.random.default_rng(5)
    def param(data):
        """A Parameter holding ``data`` even where the constructor refuses it (set afterwards): the
        optimizer must still refuse it."""
        p = Parameter(np.zeros((6, 4)), "W")
        p.data = data
        p.grad = np.ones(np.shape(data), getattr(data, "dtype", np.float64))
        return p

    w = rng.standard_normal((6, 4))
    bad_params = [("empty", lambda: []), ("ndarray", lambda: w.copy()), ("list", lambda: [w.copy()]),
                  ("float16", lambda: [param(w.astype(np.float16))]),
                  ("complex128", lambda: [param(w.astype(np.complex128))]),
                  ("int64", lambda: [param(np.ones((6, 4), np.int64))]),
                  ("object array", lambda: [param(w.astype(object))]),
                  ("h string", lambda: "W")]
    for icls, make_bad in bad_params:
        def call(make_bad=make_bad):
            return run(ctor, params=make_bad())
        outcome, detail, where = _outcome(name, who, ("params", "parameter", "param"), call, "reject", judge)
        tally.add(Case(f"{name}.__init__", "params", icls, outcome, detail, area, where))
    # step: the first parameter's .grad, or the parameter read-only; float64 and float32 parameters
    for dt in (np.float64, np.float32):
        _sweep_steps(name, cls, entry, ctor, dt, who, area, tally)
    _sweep_optimizer_state(name, cls, entry, ctor, who, area, tally)


def _sweep_optimizer_state(name, cls, entry, ctor, who, area, tally):
    """``load_state_dict`` of a state dict saved after one valid step, one entry corrupted: a state array,
    a step count, a hyper-parameter of the first group, the structure."""
    ps = _params()
    opt = guarded(cls, ps, **ctor)
    guarded(opt.step)
    sd = opt.state_dict()
    cases = [("h string", lambda d: "state"), ("missing key", lambda d: {"param_groups": d["param_groups"]})]
    arrays = [(i, k) for i, st in sd["state"].items() for k, v in st.items()
              if isinstance(v, np.ndarray) and v.ndim and v.dtype.kind == "f"]
    if arrays:
        i, k = arrays[0]
        v = sd["state"][i][k]

        def put(value, i=i, k=k):
            def f(d):
                d["state"][i][k] = value
                return d
            return f
        cases += [("complex128", put(v.astype(np.complex128))), ("float16", put(v.astype(np.float16))),
                  ("int64", put(np.ones(v.shape, np.int64))), ("list", put(v.tolist())),
                  ("nan", put(_poison(v, np.nan))), ("+inf", put(_poison(v, np.inf))),
                  ("mismatched shape", put(np.concatenate([v, v[:1]])))]
    steps = [(i, k) for i, st in sd["state"].items() for k in st if k == "step"]
    if steps:
        i, k = steps[0]
        for icls, bad in (("h negative", -5), ("h float for int", 2.5), ("h string", "1"), ("h nan", float("nan"))):
            def f(d, bad=bad, i=i, k=k):
                d["state"][i][k] = bad
                return d
            cases.append((icls, f))
    reals = [k for k, a in entry.ctor.items() if isinstance(a, Real) and a.value is not None]
    if reals:
        key = reals[0]
        for icls, bad in (("h nan", float("nan")), ("h -inf", float("-inf")), ("h string", "1")):
            def f(d, bad=bad, key=key):
                d["param_groups"][0][key] = bad
                return d
            cases.append((icls, f))

    def judge(ps2):
        return _opt_sound(ps2, entry.stiefel)
    for icls, corrupt in cases:
        def call(corrupt=corrupt):
            ps2 = _params()
            opt2 = guarded(cls, ps2, **ctor)
            guarded(opt2.load_state_dict, corrupt(copy.deepcopy(sd)))
            guarded(opt2.step)
            return ps2
        names = ("state", "state_dict", "param_groups", "step", "lr", "basis") + tuple(reals[:1])
        outcome, detail, where = _outcome(name, who + ("load_state_dict",), names, call, "reject", judge)
        tally.add(Case(f"{name}.load_state_dict", "state_dict", icls, outcome, detail, area, where))


def _sweep_steps(name, cls, entry, ctor, dt, who, area, tally):
    def run(mutate, warm):
        params = _params(dt)
        opt = guarded(cls, params, **ctor)
        if warm:                         # one valid step first: momentum/moment buffers exist
            guarded(opt.step)
        mutate(params)
        guarded(opt.step)
        return params

    judge = lambda ps: _opt_sound(ps, entry.stiefel, dt)  # noqa: E731
    g = _params(dt)[0].grad
    other = np.float32 if dt == np.float64 else np.float64
    step_bad = [("grad (1,1)", np.ones((1, 1), dt), "reject"), ("grad transposed", g.T.copy(), "reject"),
                ("grad complex", g.astype(np.complex128), "reject"), ("grad nan", _poison(g, np.nan), "reject"),
                ("grad inf", _poison(g, np.inf), "reject"), ("grad other float dtype", g.astype(other), "reject"),
                ("grad float16", g.astype(np.float16), "reject"), ("grad int64", np.ones(g.shape, np.int64), "reject"),
                ("grad list", g.tolist(), "reject"), ("grad x1e300" if dt == np.float64 else "grad x3e37",
                                                      g * (1e300 if dt == np.float64 else 3e37), "either"),
                ("read-only parameter", None, "reject"),
                ("grad nan (2nd step)", _poison(g, np.nan), "reject"),
                ("grad (1,1) (2nd step)", np.ones((1, 1), dt), "reject"),
                ("grad x1e300 (2nd step)" if dt == np.float64 else "grad x3e37 (2nd step)",
                 g * (1e300 if dt == np.float64 else 3e37), "either"),
                ("param near float max", None, "either")]
    suffix = "" if dt == np.float64 else "[float32]"
    for icls, bad, expect in step_bad:
        warm = icls.endswith("(2nd step)")

        def mutate(ps, bad=bad, icls=icls):
            if icls == "read-only parameter":
                ps[0].data.flags.writeable = False
            elif icls == "param near float max":
                d = ps[0].data
                d[...] = (d / float(np.abs(d).max())) * FLOAT_MAX_SCALE[d.dtype]
            else:
                ps[0].grad = bad
        names = ("grad", ".grad", "gradient", "read-only", "writeable", "read only", "W")
        outcome, detail, where = _outcome(name, who, names, lambda m=mutate, w=warm: run(m, w), expect, judge)
        tally.add(Case(f"{name}.step{suffix}", "grad" if icls.startswith("grad") else "params", icls,
                       outcome, detail, area, where))


def _poison(g, v):
    y = g.copy()
    y.flat[y.size // 2] = v
    return y
