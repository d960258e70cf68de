"""Issue 14, the `math` area: the failure model of orthoref.regularizers, orthoref.init and orthoref.analysis.

Every public callable of the three modules' ``__all__`` is in a table of valid arguments below, and the
bad-input classes (float16, complex, bool, int, object arrays, Python lists, NaN, Inf, 1e300, bad
hyper-parameters) are parametrized over those tables: a new public function without an entry (hence
without these checks) fails ``test_tables_cover_all``. Each reproducer quoted in the issue has its own
test with its exact input.
"""
import math
import warnings

import numpy as np
import pytest

from orthoref import analysis as A
from orthoref import init
from orthoref import regularizers as R
from orthoref._checks import MAX_ITERATIONS, NonFiniteError
from orthoref.models import mlp
from orthoref.nn import Linear, ReLU, Sequential
from orthoref.ortho import metrics, orthogonality_error_rms

# Words of NumPy/Python that must never reach a user.
LEAKS = ("SeedSequence", "operands could not be broadcast", "shapes not aligned", "could not convert",
         "is not iterable", "unsupported operand", "object of type", "Eigenvalues did not converge",
         "SVD did not converge\n", "has no attribute", "float division")


def _raises(exc, fn, *names):
    """``fn()`` raises ``exc`` with every string of ``names`` (the function, the argument) in its message and
    none of the NumPy/Python wordings; returns the message."""
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    for n in names:
        assert n in msg, (n, msg)
    for leak in LEAKS:
        assert leak not in msg, (leak, msg)
    return msg


def _w(shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _model(dtype=np.float64):
    return mlp((5, 7, 3), rng=0, dtype=dtype)


def _mdt(x):
    """The model dtype that goes with a (possibly bad) input array."""
    dt = getattr(x, "dtype", None)
    return dt if dt in (np.float32, np.float64) else np.float64


def _finite_tree(r):
    """Every float in a result (arrays, tuples, floats) is finite; returns r."""
    if isinstance(r, (tuple, list)):
        for x in r:
            _finite_tree(x)
    elif isinstance(r, np.ndarray) and r.dtype.kind == "f":
        assert np.isfinite(r).all()
    elif isinstance(r, float):
        assert math.isfinite(r)
    return r


# ---------------------------------------------------------------------------------------------------------
# Tables of valid arguments: name -> (array argument name, factory(array) -> result).  The array is the
# argument that promises "an array of floats"; the factories show every other argument at a valid value.

REG_ARRAY = {
    "soft_orthogonality": ("W", (3, 5), lambda W: R.soft_orthogonality(W, weight=0.5, gram="auto")),
    "double_soft_orthogonality": ("W", (3, 5), lambda W: R.double_soft_orthogonality(W, weight=0.5)),
    "mutual_coherence": ("W", (3, 5), lambda W: R.mutual_coherence(W, weight=0.5, gram="rows")),
    "srip": ("W", (3, 5), lambda W: R.srip(W, weight=0.5, n_iter=2, rng=0, method="power", gram="auto")),
    "off_diagonal": ("W", (3, 5), lambda W: R.off_diagonal(W, weight=0.5)),
    "l1_orthogonality": ("W", (3, 5), lambda W: R.l1_orthogonality(W, weight=0.5, gram="cols")),
    "kernel_slice_orthogonality": ("W", (2, 3, 3, 3), lambda W: R.kernel_slice_orthogonality(W, weight=0.5)),
    "self_orthogonality": ("Y", (8, 4), lambda Y: R.self_orthogonality(Y, lam1=1.0, lam2=1.0, gamma=2.0)),
    "conv_orthogonality": ("K", (3, 2, 3, 3), lambda K: R.conv_orthogonality(K, weight=0.5, stride=1)),
    "spectral_penalty": ("W", (3, 5), lambda W: R.spectral_penalty(W, weight=0.5)),
    "decov": ("H", (8, 4), lambda H: R.decov(H, weight=0.5)),
}

INIT_ARRAY = {
    "orthogonalize_gaussian": ("A", (5, 3), lambda A_: init.orthogonalize_gaussian(A_, gain=1.0, method="qr")),
    "lsuv": ("x", (16, 5), lambda x: init.lsuv(_model(_mdt(x)), x, tol=0.5, max_iter=5, rng=0)),
}

ANALYSIS_ARRAY = {
    "singular_values": ("W", (3, 5), A.singular_values),
    "conv_singular_values": ("K", (3, 2, 3, 3), lambda K: A.conv_singular_values(K, (4, 4))),
    "effective_rank": ("W", (3, 5), A.effective_rank),
    "stable_rank": ("W", (3, 5), A.stable_rank),
    "condition_number": ("W", (3, 5), A.condition_number),
    "filter_angles": ("W", (3, 5), A.filter_angles),
    "low_rank": ("W", (3, 5), lambda W: A.low_rank(W, rank=2)),
    "pca": ("X", (6, 3), lambda X: A.pca(X, 2, whiten=False)),
    "jacobian": ("x", (2, 5), lambda x: A.jacobian(_model(_mdt(x)), x)),
    "jacobian_singular_values": ("x", (2, 5), lambda x: A.jacobian_singular_values(_model(_mdt(x)), x)),
}

# Public callables that take no float array: (a valid call, a list of (bad call, exception, names)).
INIT_SHAPE_FNS = ["orthogonal", "special_orthogonal", "delta_orthogonal", "block_orthogonal_conv", "identity",
                  "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "lecun_normal",
                  "normal", "uniform", "pytorch_default"]
INIT_VALID_SHAPE = {"special_orthogonal": (4, 4), "delta_orthogonal": (4, 2, 3, 3),
                    "block_orthogonal_conv": (4, 2, 3, 3)}
INIT_OTHER = ["calculate_gain", "calculate_fan_in_and_fan_out", "get_initializer"]
ANALYSIS_OTHER = ["weights", "layer_table", "format_layer_table", "load_model", "analyze_checkpoint",
                  "PCAResult"]
METRICS_ARRAY = {
    "orthogonality_error_rms": ("W", (3, 5), lambda W: orthogonality_error_rms(W, gram="auto")),
    "orthogonality_error_2": ("Q", (5, 3), metrics.orthogonality_error_2),
    "orthogonality_error_fro": ("W", (5, 3), metrics.orthogonality_error_fro),
}
NOT_CALLABLE = {"GRAMS", "REGULARIZERS", "PENALTIES", "INITIALIZERS"}


def test_tables_cover_all():
    """A public function added to one of the modules without a row here fails this test."""
    for mod, covered in ((R, set(REG_ARRAY)), (init, set(INIT_ARRAY) | set(INIT_SHAPE_FNS) | set(INIT_OTHER)),
                         (A, set(ANALYSIS_ARRAY) | set(ANALYSIS_OTHER)), (metrics, set(METRICS_ARRAY))):
        public = {n for n in mod.__all__ if n not in NOT_CALLABLE}
        assert public == covered, (mod.__name__, public ^ covered)
        for n in public:
            assert callable(getattr(mod, n))


ARRAY_CASES = ([pytest.param(n, *REG_ARRAY[n], id=f"regularizers.{n}") for n in REG_ARRAY]
               + [pytest.param(n, *INIT_ARRAY[n], id=f"init.{n}") for n in INIT_ARRAY]
               + [pytest.param(n, *ANALYSIS_ARRAY[n], id=f"analysis.{n}") for n in ANALYSIS_ARRAY]
               + [pytest.param(n, *METRICS_ARRAY[n], id=f"ortho.metrics.{n}") for n in METRICS_ARRAY])


@pytest.mark.parametrize("who, name, shape, call", ARRAY_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_valid_call_is_finite(who, name, shape, call, dtype):
    r = call(_w(shape, dtype=dtype))
    if who == "lsuv":
        r = [p.data for p in r.parameters()]
    _finite_tree(r)


@pytest.mark.parametrize("who, name, shape, call", ARRAY_CASES)
@pytest.mark.parametrize("bad", ["float16", "longdouble", "complex128", "bool", "int64", "int32", "object",
                                 "list", "scalar"])
def test_wrong_kind_of_array_is_a_type_error(who, name, shape, call, bad):
    W = _w(shape)
    arg = {"list": lambda: W.tolist(), "scalar": lambda: 1.5, "object": lambda: W.astype(object)}.get(
        bad, lambda: W.astype(bad))()
    _raises(TypeError, lambda: call(arg), who, name)


@pytest.mark.parametrize("who, name, shape, call", ARRAY_CASES)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_array_is_a_value_error(who, name, shape, call, value):
    W = _w(shape)
    W.flat[1] = value
    _raises(NonFiniteError, lambda: call(W), who, name, "finite")


@pytest.mark.parametrize("who, name, shape, call", ARRAY_CASES)
@pytest.mark.parametrize("scale", [1e300, 1e155, 1e-170, 1e-310], ids=lambda s: f"{s:g}")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_any_scale_is_finite_or_non_finite_error(who, name, shape, call, scale, dtype):
    """At any representable scale: a finite result or NonFiniteError naming the function (never inf/NaN,
    never LinAlgError/ZeroDivisionError/OverflowError)."""
    if dtype == np.float32:
        scale = {1e300: 3e37, 1e155: 3e16, 1e-170: 1e-20, 1e-310: 1e-41}[scale]
    W = (_w(shape) * scale).astype(dtype)
    try:
        r = call(W)
    except NonFiniteError as exc:
        assert who in str(exc) and ("float64" in str(exc) or "rescale" in str(exc)), str(exc)
        return
    if who == "lsuv":
        r = [p.data for p in r.parameters()]
    if who == "filter_angles" or who == "condition_number":
        assert np.all(np.isfinite(r))
    _finite_tree(r)


@pytest.mark.parametrize("who, name, shape, call", ARRAY_CASES)
def test_empty_array_is_a_value_error(who, name, shape, call):
    if who == "orthogonalize_gaussian":           # documented: a zero-size A gives an empty Q (PyTorch's no-op)
        assert call(np.zeros((0,) + shape[1:])).shape == (0,) + shape[1:]
        return
    _raises(ValueError, lambda: call(np.zeros((0,) + shape[1:])), who, name)


# ---------------------------------------------------------------------------------------------------------
# Hyper-parameters: (function, call with one bad keyword, exception, argument name).

W35 = _w((3, 5))
K4 = _w((3, 2, 3, 3))
_NAN, _INF = float("nan"), float("inf")


def _reg_hyper():
    cases = []
    for fn, arr in [(R.soft_orthogonality, W35), (R.double_soft_orthogonality, W35), (R.mutual_coherence, W35),
                    (R.srip, W35), (R.off_diagonal, W35), (R.l1_orthogonality, W35),
                    (R.kernel_slice_orthogonality, K4), (R.conv_orthogonality, K4), (R.spectral_penalty, W35)]:
        for v, exc in [(_NAN, ValueError), (_INF, ValueError), (-1.0, ValueError), ("1", TypeError),
                       (True, TypeError), (np.ones(2), TypeError), (1 + 2j, TypeError)]:
            cases.append((fn.__name__, fn, (arr,), {"weight": v}, exc, "weight"))
    for fn in (R.soft_orthogonality, R.mutual_coherence, R.l1_orthogonality, R.srip):
        for v in ("row", None, ["rows"], 1):
            cases.append((fn.__name__, fn, (W35,), {"gram": v}, ValueError, "gram"))
    for v, exc in [(0, ValueError), (MAX_ITERATIONS + 1, ValueError), (10 ** 30, ValueError), (2.0, TypeError),
                   (True, TypeError), (_NAN, TypeError)]:
        cases.append(("srip", R.srip, (W35,), {"n_iter": v}, exc, "n_iter"))
        cases.append(("srip", R.srip, (W35,), {"n_iter": v, "method": "exact"}, exc, "n_iter"))
    for v in ("lu", None, "POWER"):
        cases.append(("srip", R.srip, (W35,), {"method": v}, ValueError, "method"))
    for v, exc in [(-1, ValueError), (1.5, TypeError), ("seed", TypeError)]:
        cases.append(("srip", R.srip, (W35,), {"rng": v}, exc, "rng"))
        cases.append(("srip", R.srip, (W35,), {"rng": v, "method": "exact"}, exc, "rng"))
        cases.append(("srip", R.srip, (W35,), {"rng": v, "v0": np.ones(3)}, exc, "rng"))   # unused, checked
    for v, exc in [(np.zeros(3), ValueError), (np.zeros((3, 1)), ValueError), (np.full(3, np.nan), ValueError),
                   (np.ones(4), ValueError), ([1.0, 1.0, 1.0], TypeError), (np.ones(3, np.int64), TypeError),
                   (np.ones(3, np.float16), TypeError), (np.ones(3, bool), TypeError)]:
        cases.append(("srip", R.srip, (W35,), {"v0": v}, exc, "v0"))
        cases.append(("srip", R.srip, (W35,), {"v0": v, "method": "exact"}, exc, "v0"))
    Y = _w((8, 4))
    for key in ("lam1", "lam2", "gamma", "eps"):
        for v, exc in [(_NAN, ValueError), (_INF, ValueError), (-1.0, ValueError), ("1", TypeError)]:
            cases.append(("self_orthogonality", R.self_orthogonality, (Y,), {key: v}, exc, key))
    for key in ("gamma", "eps"):
        cases.append(("self_orthogonality", R.self_orthogonality, (Y,), {key: 0.0}, ValueError, key))
    for v in (1, "yes", None):
        cases.append(("conv_orthogonality", R.conv_orthogonality, (K4,), {"squared": v}, TypeError, "squared"))
    for key, v, exc in [("stride", 0, ValueError), ("stride", 10 ** 30, ValueError),
                        ("stride", (1, 10 ** 30), ValueError), ("stride", 1.5, TypeError), ("padding", -1, ValueError), ("padding", 10 ** 30, ValueError),
                        ("padding", (10 ** 30, 1), ValueError), ("padding", 4, ValueError)]:
        cases.append(("conv_orthogonality", R.conv_orthogonality, (K4,), {key: v}, exc, key))
    return cases


def _init_hyper():
    cases = []
    for name in INIT_SHAPE_FNS:
        fn = getattr(init, name)
        shape = INIT_VALID_SHAPE.get(name, (4, 3, 3, 3) if name != "pytorch_default" else (4, 3))
        for v in (np.float16, np.int32, np.complex128, np.bool_, "not-a-dtype", np.longdouble, [1]):
            cases.append((name, fn, (shape,), {"dtype": v}, TypeError, "dtype"))
        for v, exc in [(-1, ValueError), (1.5, TypeError), ("seed", TypeError), (np.random.RandomState(0), TypeError)]:
            cases.append((name, fn, (shape,), {"rng": v}, exc, "rng"))
        for v, exc in [((3, -4), ValueError), ((3.0, 4), TypeError), ("34", TypeError), ((True, 4), TypeError),
                       (None, TypeError), ((2 ** 40, 2 ** 40), ValueError)]:
            cases.append((name, fn, (v,), {}, exc, "shape"))
    for name in ("orthogonal", "special_orthogonal", "delta_orthogonal", "block_orthogonal_conv", "identity",
                 "xavier_uniform", "xavier_normal", "lecun_normal"):
        fn = getattr(init, name)
        shape = INIT_VALID_SHAPE.get(name, (4, 3, 3, 3))
        for v, exc in [(_NAN, ValueError), (_INF, ValueError), ("1", TypeError), (True, TypeError),
                       (None, TypeError)]:
            cases.append((name, fn, (shape,), {"gain": v}, exc, "gain"))
    for name in ("kaiming_uniform", "kaiming_normal"):
        fn = getattr(init, name)
        for v, exc in [(_NAN, ValueError), (_INF, ValueError), ("0", TypeError), (True, TypeError)]:
            cases.append((name, fn, ((4, 3),), {"a": v}, exc, "a"))
            cases.append((name, fn, ((4, 3),), {"a": v, "nonlinearity": "relu"}, exc, "a"))
        for v in ("fan_avg", None, 1):
            cases.append((name, fn, ((4, 3),), {"mode": v}, ValueError, "mode"))
        for v in ("swish", None, ["relu"]):
            cases.append((name, fn, ((4, 3),), {"nonlinearity": v}, ValueError, "nonlinearity"))
    for v in (("orthogonal", "method", "lu"), ("orthogonal", "convention", "jax"),
              ("orthogonalize_gaussian", "method", "lu")):
        fn = getattr(init, v[0])
        arg = ((3, 4),) if v[0] == "orthogonal" else (W35,)
        cases.append((v[0], fn, arg, {v[1]: v[2]}, ValueError, v[1]))
    for v, exc in [(_NAN, ValueError), ("1", TypeError)]:
        cases.append(("orthogonalize_gaussian", init.orthogonalize_gaussian, (W35,), {"gain": v}, exc, "gain"))
    for key, v, exc in [("mean", _NAN, ValueError), ("std", _INF, ValueError), ("std", -1.0, ValueError),
                        ("mean", "0", TypeError)]:
        cases.append(("normal", init.normal, ((3, 4),), {key: v}, exc, key))
    for key, v, exc in [("a", _NAN, ValueError), ("b", _INF, ValueError), ("b", "1", TypeError)]:
        cases.append(("uniform", init.uniform, ((3, 4),), {key: v}, exc, key))
    cases.append(("uniform", init.uniform, ((3, 4),), {"a": 2.0, "b": 1.0}, ValueError, "a <= b"))
    for v, exc in [(-1, ValueError), (2.5, TypeError), (True, TypeError)]:
        cases.append(("pytorch_default", init.pytorch_default, ((4,),), {"fan_in": v}, exc, "fan_in"))
    cases.append(("lecun_normal", init.lecun_normal, ((3, 4),), {"truncated": "yes"}, TypeError, "truncated"))
    for v in (_NAN, _INF, "0.1", True, np.float32(0.1)):
        cases.append(("calculate_gain", init.calculate_gain, ("leaky_relu",), {"param": v}, ValueError, "param"))
    for v in (_NAN, "x"):
        cases.append(("calculate_gain", init.calculate_gain, ("relu",), {"param": v},
                      ValueError if v != "x" else TypeError, "param"))
    for v in ("swish", None, 3, ["relu"], np.array(["relu"])):
        cases.append(("calculate_gain", init.calculate_gain, (v,), {}, ValueError, "nonlinearity"))
    cases.append(("calculate_fan_in_and_fan_out", init.calculate_fan_in_and_fan_out, ((5,),), {}, ValueError,
                  "shape"))
    cases.append(("calculate_fan_in_and_fan_out", init.calculate_fan_in_and_fan_out, ("ab",), {}, TypeError,
                  "shape"))
    cases.append(("get_initializer", init.get_initializer, ("orthogonl",), {}, ValueError, "orthogonl"))
    cases.append(("get_initializer", init.get_initializer, (3,), {}, TypeError, "initializer"))
    model = Sequential(Linear(5, 3, bias=False, dtype=np.float64), ReLU())
    x = _w((16, 5))
    for key, v, exc in [("tol", _NAN, ValueError), ("tol", 0.0, ValueError), ("tol", -1.0, ValueError),
                        ("tol", "0.1", TypeError), ("max_iter", 0, ValueError),
                        ("max_iter", MAX_ITERATIONS + 1, ValueError), ("max_iter", 2.5, TypeError),
                        ("return_report", "yes", TypeError), ("rng", -1, ValueError)]:
        cases.append(("lsuv", init.lsuv, (model, x), {key: v}, exc, key))
    cases.append(("lsuv", init.lsuv, (lambda x: x, x), {}, TypeError, "model"))
    cases.append(("lsuv", init.lsuv, (model, x.astype(np.float32)), {}, TypeError, "x"))
    return cases


def _analysis_hyper():
    cases = []
    for key, v, exc in [("rank", 0, ValueError), ("rank", 4, ValueError), ("rank", 2.0, TypeError),
                        ("rank", True, TypeError), ("energy", 0.0, ValueError), ("energy", 1.5, ValueError),
                        ("energy", _NAN, ValueError), ("energy", "all", TypeError)]:
        cases.append(("low_rank", A.low_rank, (W35,), {key: v}, exc, key))
    cases.append(("low_rank", A.low_rank, (W35,), {}, ValueError, "rank"))
    X = _w((6, 3))
    for key, v, exc in [("k", 0, ValueError), ("k", 4, ValueError), ("k", 1.0, TypeError),
                        ("whiten", "yes", TypeError), ("whiten", 1, TypeError)]:
        kw = {"k": 2, **{key: v}}
        cases.append(("pca", A.pca, (X,), kw, exc, key))
    for v in ("filters", None, 3):
        cases.append(("orthogonality_error_rms", orthogonality_error_rms, (W35,), {"gram": v}, ValueError, "gram"))
    for fn in (A.weights, A.layer_table, A.jacobian, A.jacobian_singular_values):
        cases.append((fn.__name__, fn, (lambda x: x,) + (() if fn in (A.weights, A.layer_table) else (_w((2, 5)),)),
                      {}, TypeError, "model"))
    row = A.layer_table(_model())[0]
    for v, exc in [("rows", TypeError), ([1, 2], TypeError), ([{**row, "sigma_max": "big"}], TypeError),
                   ([{**row, "shape": 3}], TypeError), (None, TypeError), ([{"name": "a"}], ValueError),
                   ([{k: v for k, v in row.items() if k != "condition"}], ValueError)]:
        cases.append(("format_layer_table", A.format_layer_table, (v,), {}, exc, "rows"))
    for key, v, exc in [("figures", "yes", ValueError), ("figures", 1, ValueError), ("figures", None, ValueError),
                        ("jacobian_examples", -1, ValueError), ("jacobian_examples", 2.5, TypeError),
                        ("jacobian_examples", True, TypeError)]:
        cases.append(("analyze_checkpoint", A.analyze_checkpoint, ("missing.npz", "out"), {key: v}, exc, key))
    cases.append(("analyze_checkpoint", A.analyze_checkpoint, ("missing.npz", 3), {}, TypeError, "out_dir"))
    for v in (True, 3, None, ["a.npz"]):
        cases.append(("analyze_checkpoint", A.analyze_checkpoint, (v, "out"), {}, TypeError, "path"))
        cases.append(("load_model", A.load_model, (v,), {}, TypeError, "path"))
    return cases


HYPER = _reg_hyper() + _init_hyper() + _analysis_hyper()


@pytest.mark.parametrize("who, fn, args, kwargs, exc, name", HYPER,
                         ids=[f"{c[0]}-{'-'.join(f'{k}={v!r}'[:30] for k, v in c[3].items()) or repr(c[2][0])[:30]}"
                              for c in HYPER])
def test_bad_hyper_parameter(who, fn, args, kwargs, exc, name):
    _raises(exc, lambda: fn(*args, **kwargs), who, name)


def test_initializers_registry_validates():
    for name, f in init.INITIALIZERS.items():
        shape = (4, 4) if name == "special_orthogonal" else (4, 2, 3, 3)
        for dt in (np.float32, np.float64):
            w = f(shape, rng=0, dtype=dt)
            assert w.shape == shape and w.dtype == dt and np.isfinite(w).all()
        _raises(TypeError, lambda: f(shape, rng=0, dtype=np.float16), "dtype")
        msg = _raises(ValueError, lambda: f(shape, rng=-1), "rng")
        assert "host_rng" not in msg


# ---------------------------------------------------------------------------------------------------------
# The reproducers quoted in the issue.

def test_kaiming_normal_a_nan():
    _raises(ValueError, lambda: init.kaiming_normal((3, 4), a=float("nan")), "kaiming_normal", "a must be")
    _raises(ValueError, lambda: init.kaiming_uniform((3, 4), a=float("nan")), "kaiming_uniform", "a must be")


def test_rng_minus_one_names_the_function():
    for fn in (init.orthogonal, init.xavier_normal, init.identity):
        msg = _raises(ValueError, lambda: fn((3, 4), rng=-1), fn.__name__, "rng")
        assert "SeedSequence" not in msg
    _raises(ValueError, lambda: R.srip(W35, rng=-1), "srip", "rng")
    _raises(ValueError, lambda: init.lsuv(Sequential(Linear(5, 3, dtype=np.float64)), _w((8, 5)), rng=-1),
            "lsuv", "rng")


def test_srip_zero_start_vector():
    """srip(W, v0=zeros) returned 0 for every W; the exact penalty of a random 3x5 W is ~30-45."""
    W = np.random.default_rng(0).standard_normal((3, 5))
    exact = float(R.srip(W, method="exact")[0])
    assert 20 < exact < 60
    _raises(ValueError, lambda: R.srip(W, v0=np.zeros(3)), "srip", "v0", "zero")
    _raises(ValueError, lambda: R.srip(W, v0=np.zeros((3, 1))), "srip", "v0")
    # a non-zero start vector converges to the exact penalty
    v = float(R.srip(W, v0=np.ones(3), n_iter=500)[0])
    assert v == pytest.approx(exact, rel=1e-8)


def test_srip_start_vector_scale_does_not_matter():
    W = _w((3, 5))
    v0 = np.random.default_rng(1).uniform(0, 1, 3)
    ref = R.srip(W, v0=v0, n_iter=3)
    for s in (2.0 ** -1000, 1e-300, 1e-45, 1e300):
        got = R.srip(W, v0=v0 * s, n_iter=3)
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-13)
        np.testing.assert_allclose(got[1], ref[1], rtol=1e-12, atol=1e-14)
    got = R.srip(W.astype(np.float32), v0=v0 * 1e-50, n_iter=3)       # cast to float32 would give 0
    assert float(got[0]) == pytest.approx(float(ref[0]), rel=1e-4)


@pytest.mark.parametrize("name", sorted(R.REGULARIZERS))
def test_every_regularizer_at_1e300(name):
    who, shape, call = REG_ARRAY[name]
    W = _w(shape) * 1e300
    if name == "self_orthogonality":              # bounded (tanh): the correct value is finite
        v, g = call(W)
        v1, _ = call(_w(shape) * 1e10)
        assert float(v) == float(v1) and np.isfinite(g).all()
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)     # no NumPy overflow warning before the error
        msg = _raises(NonFiniteError, lambda: call(W), name, "rescale")
    assert "overflows float64" in msg


def test_soft_orthogonality_float32_at_3e16():
    W = (_w((3, 5)) / np.abs(_w((3, 5))).max() * 3e16).astype(np.float32)
    _raises(NonFiniteError, lambda: R.soft_orthogonality(W), "soft_orthogonality", "float32", "float64")
    v, g = R.soft_orthogonality(W.astype(np.float64))                 # the advice works
    assert np.isfinite(v) and np.isfinite(g).all()


def test_srip_exact_and_spectral_penalty_at_1e300_are_not_linalg_errors():
    W = _w((3, 5)) * 1e300
    _raises(NonFiniteError, lambda: R.srip(W, method="exact"), "srip", "Gram")
    _raises(NonFiniteError, lambda: R.spectral_penalty(W), "spectral_penalty")


def test_spectral_penalty_any_scale():
    """Homogeneous of degree 2: the gradient is right at any scale, the value whenever representable."""
    W = _w((3, 5))
    v, g = R.spectral_penalty(W, weight=0.7)
    for e in (-600, -530, 400, 500):
        Ws = np.ldexp(W, e)
        vs, gs = R.spectral_penalty(Ws, weight=0.7)
        np.testing.assert_allclose(gs, np.ldexp(g, e), rtol=1e-12, atol=0)
        expected = math.ldexp(float(v), 2 * e) if 2 * e > -1074 else 0.0
        assert float(vs) == pytest.approx(expected, rel=1e-12, abs=1e-320)
    vs, gs = R.spectral_penalty(np.ldexp(W, -1060), weight=0.7)      # denormal: finite, value underflows
    assert float(vs) == 0.0 and np.isfinite(gs).all()
    _raises(NonFiniteError, lambda: R.spectral_penalty(np.ldexp(W, 600)), "spectral_penalty")


def test_linalg_errors_become_value_errors(monkeypatch):
    def fail(*a, **k):
        raise np.linalg.LinAlgError("Eigenvalues did not converge")
    monkeypatch.setattr(np.linalg, "eigh", fail)
    _raises(ValueError, lambda: R.spectral_penalty(W35), "spectral_penalty", "W")
    _raises(ValueError, lambda: R.srip(W35, method="exact"), "srip", "W")
    monkeypatch.undo()

    def fail_svd(*a, **k):
        raise np.linalg.LinAlgError("SVD did not converge")
    monkeypatch.setattr(np.linalg, "svd", fail_svd)
    for fn in (A.singular_values, A.stable_rank, A.condition_number, A.effective_rank,
               lambda W: A.low_rank(W, rank=1)):
        with pytest.raises(ValueError) as info:
            fn(W35)
        assert "did not converge" in str(info.value) and ": the SVD (LAPACK) of W" in str(info.value)
    _raises(ValueError, lambda: A.pca(_w((6, 3)), 1), "pca", "X")
    _raises(ValueError, lambda: A.jacobian_singular_values(_model(), _w((2, 5))), "jacobian_singular_values")
    monkeypatch.undo()
    import scipy.linalg
    monkeypatch.setattr(scipy.linalg, "svd", fail_svd)
    _raises(ValueError, lambda: init.orthogonalize_gaussian(W35, method="svd"), "orthogonalize_gaussian")
    _raises(ValueError, lambda: init.orthogonal((3, 5), method="svd"), "orthogonal")


def test_orthogonal_gain_1e39_float32():
    _raises(NonFiniteError, lambda: init.orthogonal((3, 4), gain=1e39), "orthogonal", "gain", "float32",
            "float64")
    w = init.orthogonal((3, 4), gain=1e39, dtype=np.float64)
    np.testing.assert_allclose(w @ w.T / 1e78, np.eye(3), atol=1e-12)
    for fn, shape in [(init.special_orthogonal, (4, 4)), (init.delta_orthogonal, (4, 2, 3, 3)),
                      (init.block_orthogonal_conv, (4, 2, 3, 3)), (init.identity, (3, 4))]:
        _raises(NonFiniteError, lambda: fn(shape, gain=1e39), fn.__name__, "gain")
    _raises(NonFiniteError, lambda: init.orthogonalize_gaussian(W35.astype(np.float32), gain=1e39),
            "orthogonalize_gaussian", "gain")
    for fn in (init.xavier_uniform, init.xavier_normal, init.lecun_normal):
        _raises(NonFiniteError, lambda: fn((3, 4), gain=1e39), fn.__name__, "float64")
        assert np.isfinite(fn((3, 4), gain=1e39, dtype=np.float64)).all()
    _raises(NonFiniteError, lambda: init.xavier_uniform((3, 4), gain=1e308, dtype=np.float64), "xavier_uniform")
    _raises(NonFiniteError, lambda: init.normal((3, 4), std=1e38), "normal")
    _raises(NonFiniteError, lambda: init.uniform((3, 4), a=-1e308, b=1e308, dtype=np.float64), "uniform")
    _raises(NonFiniteError, lambda: init.uniform((3, 4), a=0.0, b=1e39), "uniform")


@pytest.mark.parametrize("method", ["qr", "svd"])
@pytest.mark.parametrize("e", [1020, 900, -1000, -1060])
def test_orthogonalize_gaussian_any_scale(method, e):
    """Near the float maximum (and in the denormals) the orthogonal factor is the one of the unscaled
    matrix: it does not depend on the scale."""
    A_ = _w((5, 3))
    ref = init.orthogonalize_gaussian(A_, method=method)
    big = np.ldexp(A_, e)
    assert np.isfinite(big).all()
    q = init.orthogonalize_gaussian(big, method=method)
    np.testing.assert_allclose(q, ref, atol=1e-12 if e > -1050 else 1e-3)     # 2**-1060: ~14 bits left
    q32 = init.orthogonalize_gaussian(np.ldexp(A_, 126 if e > 0 else -130).astype(np.float32), method=method)
    np.testing.assert_allclose(q32, ref, atol=1e-4)          # 2**-130: float32 denormals, ~19 bits
    assert q32.dtype == np.float32


def test_orthogonalize_gaussian_float_max():
    A_ = _w((5, 3))
    A_ = A_ / np.abs(A_).max() * np.finfo(np.float64).max
    q = init.orthogonalize_gaussian(A_)
    np.testing.assert_allclose(q.T @ q, np.eye(3), atol=1e-12)


@pytest.mark.parametrize("e", [515, 600, 1000, -1000, -1060])
def test_scale_invariant_analysis(e):
    """stable_rank at |W| >= 1e155 (NaN before) and on denormal input (ZeroDivisionError before),
    condition_number, effective_rank and filter_angles at any scale."""
    W = _w((3, 5))
    Ws = np.ldexp(W, e)
    assert np.abs(Ws).max() > 0
    tol = 1e-12 if e > -1050 else 1e-3          # denormal input keeps only a few significant bits
    for fn in (A.stable_rank, A.condition_number, A.effective_rank):
        assert fn(Ws) == pytest.approx(fn(W), rel=tol), fn.__name__
    np.testing.assert_allclose(A.filter_angles(Ws), A.filter_angles(W), rtol=tol)


def test_stable_rank_reproducers():
    W = np.random.default_rng(0).standard_normal((3, 5))
    ref = A.stable_rank(W)
    assert A.stable_rank(W * 1e155) == pytest.approx(ref, rel=1e-12)
    assert A.stable_rank(W * 1e-310) == pytest.approx(ref, rel=1e-3)
    assert A.stable_rank(np.full((2, 2), 5e-324)) == pytest.approx(1.0)


def test_filter_angles_rows_at_different_scales():
    W = _w((3, 5))
    ref = A.filter_angles(W)
    Ws = W * np.array([1e-200, 1.0, 1e200])[:, None]
    np.testing.assert_allclose(A.filter_angles(Ws), ref, rtol=1e-12)


def test_zero_matrix_gives_the_documented_answers():
    Z = np.zeros((3, 5))
    assert A.stable_rank(Z) == 0.0
    assert A.effective_rank(Z) == 0.0
    assert A.condition_number(Z) == math.inf
    _raises(ValueError, lambda: A.filter_angles(Z), "filter_angles", "W", "zero")
    Z[1, 2] = 1.0                                   # a zero filter among non-zero ones: no NaN angle, an error
    _raises(ValueError, lambda: A.filter_angles(Z), "filter_angles", "W", "rows [0, 2]")
    Z[0, 0] = 1.0
    _raises(ValueError, lambda: A.filter_angles(Z), "filter_angles", "W", "rows [2]")
    np.testing.assert_allclose(A.filter_angles(Z[:2]), [90.0])
    Z = np.zeros((3, 5))
    np.testing.assert_array_equal(A.singular_values(Z), np.zeros(3))
    assert orthogonality_error_rms(Z) == 1.0
    with pytest.raises(ValueError, match="pca: whiten=True but component"):
        A.pca(np.zeros((4, 3)), 1, whiten=True)
    q = init.orthogonalize_gaussian(np.zeros((3, 5)))
    np.testing.assert_allclose(q @ q.T, np.eye(3), atol=1e-15)
    for fn in (R.soft_orthogonality, R.double_soft_orthogonality, R.l1_orthogonality, R.mutual_coherence,
               R.off_diagonal, R.spectral_penalty, lambda W: R.srip(W, rng=0), lambda W: R.srip(W, method="exact")):
        v, g = fn(Z)
        assert np.isfinite(v) and np.isfinite(g).all()


def test_condition_number_overflowing_ratio_is_inf():
    W = np.diag([1.0, 1e-320])
    assert A.condition_number(W) == math.inf


def test_orthogonality_error_near_overflow():
    W = np.eye(3) * 1e77                               # G = 1e154 I: ‖G − I‖² overflows, the error does not
    assert orthogonality_error_rms(W) == pytest.approx(1e154, rel=1e-12)
    assert orthogonality_error_rms(W, gram="cols") == pytest.approx(1e154, rel=1e-12)
    _raises(NonFiniteError, lambda: orthogonality_error_rms(W * 1e100), "orthogonality_error_rms", "rescale")


def test_low_rank_and_pca_any_scale():
    W = _w((4, 6))
    a, b, r = A.low_rank(W, rank=2)
    for e in (900, 1000, -1000):
        a2, b2, r2 = A.low_rank(np.ldexp(W, e), rank=2)
        np.testing.assert_allclose(a2 @ b2, np.ldexp(a @ b, e), rtol=1e-10, atol=0)
        assert r2 == r and A.low_rank(np.ldexp(W, e), energy=0.9)[2] == A.low_rank(W, energy=0.9)[2]
    X = _w((8, 3))
    ref = A.pca(X, 2, whiten=True)
    for e in (500, -1000):
        got = A.pca(np.ldexp(X, e), 2, whiten=True)
        np.testing.assert_allclose(got.components, ref.components, atol=1e-12)
        np.testing.assert_allclose(got.projected, ref.projected, atol=1e-10)
    got = A.pca(np.ldexp(X, 400), 2)
    np.testing.assert_allclose(got.explained_variance, np.ldexp(ref.explained_variance, 800), rtol=1e-12)
    _raises(NonFiniteError, lambda: A.pca(np.ldexp(X, 600), 2), "pca", "variance")


def test_layer_table_names_a_diverged_parameter():
    model = _model()
    model.parameters()[0].data[0, 0] = np.nan
    msg = _raises(NonFiniteError, lambda: A.layer_table(model), "layer_table", "weight", "finite")
    assert "'0.weight'" in msg or "weight" in msg


def test_layer_table_large_weights():
    model = _model()
    for p in model.parameters():
        p.data *= 1e130                             # σ² overflows: stable rank was NaN
    rows = A.layer_table(model)
    ref = A.layer_table(_model())
    for a, b in zip(rows, ref):
        assert a["stable_rank"] == pytest.approx(b["stable_rank"], rel=1e-12)
        assert a["effective_rank"] == pytest.approx(b["effective_rank"], rel=1e-12)
        assert a["condition"] == pytest.approx(b["condition"], rel=1e-12)
        assert a["sigma_max"] == pytest.approx(b["sigma_max"] * 1e130, rel=1e-12)
    for p in model.parameters():
        p.data *= 1e100
    _raises(NonFiniteError, lambda: A.layer_table(model), "layer_table", "weight")


# ---------------------------------------------------------------------------------------------------------
# init: shapes, gains, fan modes, delta_orthogonal, lsuv; finite results of the requested dtype.

@pytest.mark.parametrize("name", INIT_SHAPE_FNS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, "float32", np.dtype("float64")])
def test_initializer_result_finite_and_requested_dtype(name, dtype):
    shape = INIT_VALID_SHAPE.get(name, (4, 3, 3, 3))
    w = getattr(init, name)(shape, rng=0, dtype=dtype)
    assert w.shape == shape and w.dtype == np.dtype(dtype) and np.isfinite(w).all()


@pytest.mark.parametrize("name", ["delta_orthogonal", "block_orthogonal_conv"])
def test_conv_initializers_need_conv_shapes(name):
    fn = getattr(init, name)
    _raises(ValueError, lambda: fn((4, 4)), name, "shape")
    _raises(ValueError, lambda: fn((4,)), name, "shape")
    _raises(ValueError, lambda: fn((2, 4, 3, 3)), name, "in")           # out < in
    _raises(ValueError, lambda: fn((4, -2, 3, 3)), name, "shape")
    _raises(TypeError, lambda: fn((4, 2, 3.0, 3)), name, "shape")


def test_delta_orthogonal_shapes():
    _raises(ValueError, lambda: init.delta_orthogonal((4, 2, 2, 2)), "delta_orthogonal", "odd")
    _raises(ValueError, lambda: init.delta_orthogonal((4, 2, 3, 3, 3, 3)), "delta_orthogonal", "shape")
    w = init.delta_orthogonal((4, 4, 3), rng=0, dtype=np.float64)
    np.testing.assert_allclose(w[:, :, 1].T @ w[:, :, 1], np.eye(4), atol=1e-12)


def test_large_leaky_slope_does_not_overflow():
    assert init.calculate_gain("leaky_relu", 1e200) == pytest.approx(math.sqrt(2) / 1e200)
    w = init.kaiming_normal((3, 4), a=1e200, rng=0)
    assert np.isfinite(w).all()


def test_lsuv_validates_before_touching_the_model():
    model = Sequential(Linear(5, 3, dtype=np.float64), ReLU())
    before = model[0].weight.data.copy()
    for x, exc in [(np.full((8, 5), np.nan), NonFiniteError), (_w((8, 5)).tolist(), TypeError),
                   (_w((8, 5), dtype=np.float32), TypeError), (_w((8, 5)).astype(np.float16), TypeError),
                   (np.zeros((0, 5)), ValueError)]:
        _raises(exc, lambda: init.lsuv(model, x), "lsuv", "x")
        np.testing.assert_array_equal(model[0].weight.data, before)


def test_lsuv_overflow_is_a_non_finite_error():
    model = Sequential(Linear(5, 3, bias=False, dtype=np.float64))
    _raises(NonFiniteError, lambda: init.lsuv(model, _w((8, 5)) * 1e300), "lsuv", "rescale x")
    tiny = Sequential(Linear(5, 3, bias=False, dtype=np.float32))
    with pytest.raises(ValueError, match="lsuv"):
        init.lsuv(tiny, (_w((8, 5)) * 1e-41).astype(np.float32))


def test_lsuv_max_iter_bound():
    model = Sequential(Linear(5, 3, dtype=np.float64))
    init.lsuv(model, _w((8, 5)), max_iter=MAX_ITERATIONS)


def test_initializer_memory_error_is_a_value_error(monkeypatch):
    def oom(*a, **k):
        raise MemoryError
    monkeypatch.setattr(init, "_draw_gaussian", oom)
    _raises(ValueError, lambda: init.orthogonal((3, 4)), "orthogonal", "shape")


@pytest.mark.parametrize("name", ["orthogonal", "pytorch_default", "xavier_uniform", "normal"])
def test_initializer_too_large_for_memory(name):
    """8e14 bytes: more than any 48-bit address space holds, so the allocation fails at once."""
    _raises(ValueError, lambda: getattr(init, name)((10 ** 7, 10 ** 7), dtype=np.float64), name, "shape")


# -- all_finite: the one finiteness test every check uses --------------------------------------------------
def _layouts(a):
    """Fresh copies of ``a``: C-ordered, Fortran-ordered, and a strided view (every other column)."""
    return {"C": np.array(a, order="C"), "F": np.array(a, order="F"), "strided": np.repeat(a, 2, axis=1)[:, ::2]}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, -np.nan])
@pytest.mark.parametrize("where", [(0, 0), (37, 5), (-1, -1)])
def test_all_finite_finds_every_non_finite(dtype, bad, where):
    from orthoref._checks import all_finite
    a = np.random.default_rng(0).standard_normal((64, 9)).astype(dtype)
    for layout, b in _layouts(a).items():
        assert all_finite(np, b), layout
        b[where] = bad
        assert not all_finite(np, b), (layout, bad, where)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite_huge_finite_values_are_finite(dtype):
    """Σ a² overflows (the BLAS dot is Inf) although every element is finite: the element-wise test decides."""
    from orthoref._checks import all_finite
    big = np.finfo(dtype).max
    a = np.full((100, 3), big, dtype=dtype)
    a[::2] *= -1
    with np.errstate(over="ignore"):
        assert not math.isfinite(np.vdot(a, a))
    for layout, b in _layouts(a).items():
        assert all_finite(np, b), layout
    a[50, 1] = -np.inf
    assert not all_finite(np, a)


def test_all_finite_empty_and_scalar():
    from orthoref._checks import all_finite
    assert all_finite(np, np.empty((0, 5), np.float32))
    assert all_finite(np, np.array(2.5))
    assert not all_finite(np, np.array(np.nan))
    assert not all_finite(np, np.array([1 + 0j, complex(np.inf, 0)]))     # complex step: element-wise
