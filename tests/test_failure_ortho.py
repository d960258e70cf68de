"""Issue 14, ``orthoref.ortho``: one failure model for every public function of the package.

Every function returns a finite, correct result or raises ``TypeError``/``ValueError`` (``NonFiniteError`` for
an overflow) whose message names the function and the argument: cotangents are validated (exact shape, the
input's dtype, finite), iteration counts have a maximum, only float32/float64 are accepted, the scale-invariant
maps work at any representable scale, overflows raise, degenerate inputs get the documented answer or a clear
error, LAPACK failures never leak ``LinAlgError``.
"""
import numpy as np
import pytest

import orthoref.ortho as O
from orthoref._checks import MAX_ITERATIONS, NonFiniteError
from orthoref.ortho import compare as C
from orthoref.ortho import decomp

VJPS = sorted(n for n in O.__all__ if n.endswith("_vjp"))


def _raises(exc, who, arg, fn, *args, **kw):
    """``fn(*args, **kw)`` raises ``exc`` (not NumPy's LinAlgError) naming ``who`` first and ``arg``."""
    with pytest.raises(exc) as info:
        fn(*args, **kw)
    assert not isinstance(info.value, np.linalg.LinAlgError), repr(info.value)
    msg = str(info.value)
    assert msg.startswith(f"{who}: "), msg
    assert arg in msg, msg
    return msg


def _well(rng, shape, dtype=np.float64):
    n, k = shape
    m = min(n, k)
    U = np.linalg.qr(rng.standard_normal((n, m)))[0]
    V = np.linalg.qr(rng.standard_normal((k, m)))[0]
    return ((U * rng.uniform(0.5, 2.0, m)) @ V.T).astype(dtype)


def _stiefel(rng, n, p):
    Q, R = np.linalg.qr(rng.standard_normal((n, p)))
    return Q * np.where(np.diag(R) < 0, -1.0, 1.0)


def _skew(rng, n, scale=1.0):
    S = rng.standard_normal((n, n))
    return scale * (S - S.T) / 2


def _orth_err(Q):
    Q = np.asarray(Q, dtype=np.float64)
    G = Q.T @ Q if Q.shape[0] >= Q.shape[1] else Q @ Q.T
    return float(np.abs(G - np.eye(G.shape[0])).max())


# ---------------------------------------------------------------------------------------------------------
# 1. Every VJP validates its cotangent.

def _vjp_cases(dtype):
    """name -> (call(grad_out), the output's shape, the output's dtype): one valid call per VJP."""
    rng = np.random.default_rng(0)
    A = _well(rng, (6, 4), dtype)
    S = _skew(rng, 4).astype(dtype)
    W = _stiefel(rng, 6, 3)
    Z = O.project_tangent(W, rng.standard_normal((6, 3)))
    Z = (0.5 * Z / np.linalg.norm(Z)).astype(dtype)
    W = W.astype(dtype)
    from scipy.linalg import lapack
    qr, tau, _, _ = lapack.dgeqrf(_well(rng, (6, 4)))
    V, tau = qr.astype(dtype), tau.astype(dtype)
    B = (A.astype(np.float64) @ _well(rng, (4, 4)) + 0.1 * rng.standard_normal((6, 4))).astype(dtype)
    U, _, Vt = np.linalg.svd(rng.standard_normal((6, 4)), full_matrices=False)
    C = ((U * [2.5, 1.6, 0.9, 0.3]) @ Vt).astype(dtype)      # singular values away from lo = 0.5, hi = 2
    return {
        "gram_schmidt_vjp": (lambda g: O.gram_schmidt_vjp(A, g, method="cgs2"), A.shape),
        "qr_orthogonalize_vjp": (lambda g: O.qr_orthogonalize_vjp(A, g), A.shape),
        "polar_vjp": (lambda g: O.polar_vjp(A, g), A.shape),
        "householder_product_vjp": (lambda g: O.householder_product_vjp(V, tau, g), V.shape),
        "newton_schulz_vjp": (lambda g: O.newton_schulz_vjp(A, g, steps=3), A.shape),
        "bjorck_vjp": (lambda g: O.bjorck_vjp(A, g, steps=3), A.shape),
        "parseval_retraction_vjp": (lambda g: O.parseval_retraction_vjp(A, g, beta=0.1), A.shape),
        "spectral_normalize_vjp": (lambda g: O.spectral_normalize_vjp(A, g, rng=0), A.shape),
        "cayley_vjp": (lambda g: O.cayley_vjp(S, g), S.shape),
        "expm_skew_vjp": (lambda g: O.expm_skew_vjp(S, g), S.shape),
        "project_tangent_vjp": (lambda g: O.project_tangent_vjp(W, Z, g, wrt="both"), W.shape),
        "retract_vjp": (lambda g: O.retract_vjp(W, Z, g, "cayley"), W.shape),
        "cayley_iterative_vjp": (lambda g: O.cayley_iterative_vjp(W, Z, 0.3, g), W.shape),
        "procrustes_vjp": (lambda g: O.procrustes_vjp(A, B, g), (4, 4)),
        "clip_singular_values_vjp": (lambda g: O.clip_singular_values_vjp(C, g, lo=0.5, hi=2.0), C.shape),
        "mclip_vjp": (lambda g: O.mclip_vjp(C, g), C.shape),
    }


def test_every_vjp_has_a_cotangent_case():
    """A new ``NAME_vjp`` in ``orthoref.ortho.__all__`` must be added to the cases (and validate)."""
    assert VJPS and set(VJPS) == set(_vjp_cases(np.float64))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", VJPS)
def test_vjp_valid_cotangent_gives_finite_gradients_of_the_input_dtype(name, dtype):
    call, shape = _vjp_cases(dtype)[name]
    out = call(np.random.default_rng(1).standard_normal(shape).astype(dtype))
    for g in out if isinstance(out, tuple) else (out,):
        assert g.dtype == dtype and np.isfinite(g).all()


_BAD_COTANGENTS = {
    "nan": (lambda s, dt: np.full(s, np.nan, dt), NonFiniteError, "grad_out must be finite"),
    "inf": (lambda s, dt: np.where(np.eye(*s[-2:], dtype=bool), np.inf, 1.0).astype(dt), NonFiniteError,
            "grad_out must be finite"),
    "(1, 1) broadcastable": (lambda s, dt: np.ones((1, 1), dt), ValueError, "grad_out must have shape"),
    "scalar-shaped": (lambda s, dt: np.ones((), dt), ValueError, "grad_out must have shape"),
    "one row short": (lambda s, dt: np.ones((s[0] - 1,) + s[1:], dt), ValueError, "grad_out must have shape"),
    "extra batch axis": (lambda s, dt: np.ones((1,) + s, dt), ValueError, "grad_out must have shape"),
    "float32 for float64": (lambda s, dt: np.ones(s, np.float32), TypeError, "grad_out must have dtype float64"),
    "complex": (lambda s, dt: np.ones(s, np.complex128), TypeError, "grad_out must be a float32 or float64"),
    "float16": (lambda s, dt: np.ones(s, np.float16), TypeError, "grad_out must be a float32 or float64"),
    "int": (lambda s, dt: np.ones(s, np.int64), TypeError, "grad_out must be a float32 or float64"),
    "list": (lambda s, dt: np.ones(s).tolist(), TypeError, "grad_out must be a float32 or float64"),
}


@pytest.mark.parametrize("bad", list(_BAD_COTANGENTS))
@pytest.mark.parametrize("name", VJPS)
def test_vjp_refuses_a_bad_cotangent(name, bad):
    call, shape = _vjp_cases(np.float64)[name]
    make, exc, text = _BAD_COTANGENTS[bad]
    _raises(exc, name, text, call, make(shape, np.float64))


@pytest.mark.parametrize("name", VJPS)
def test_vjp_refuses_a_float64_cotangent_for_float32_input(name):
    call, shape = _vjp_cases(np.float32)[name]
    _raises(TypeError, name, "grad_out must have dtype float32", call, np.ones(shape))


@pytest.mark.parametrize("method", ["qr", "polar", "cayley", "exp"])
def test_retract_vjp_refuses_nan_cotangent_for_every_method(method):
    rng = np.random.default_rng(2)
    W = _stiefel(rng, 6, 3)
    Z = 0.3 * O.project_tangent(W, rng.standard_normal((6, 3)))
    _raises(NonFiniteError, "retract_vjp", "grad_out", O.retract_vjp, W, Z, np.full(W.shape, np.nan), method)


@pytest.mark.parametrize("name", ["newton_schulz_vjp", "bjorck_vjp", "parseval_retraction_vjp",
                                  "spectral_normalize_vjp"])
def test_issue_reproducer_nan_grad_out_no_longer_gives_nan(name):
    call, shape = _vjp_cases(np.float64)[name]
    g = np.ones(shape)
    g[0, 0] = np.nan
    _raises(NonFiniteError, name, "grad_out must be finite", call, g)


# ---------------------------------------------------------------------------------------------------------
# 2. Iteration counts and hyper-parameters.

def test_issue_reproducer_newton_schulz_huge_steps_is_refused_at_once():
    A = np.eye(3)
    msg = _raises(ValueError, "newton_schulz", "steps", O.newton_schulz, A, steps=10 ** 30)
    assert str(MAX_ITERATIONS) in msg
    _raises(ValueError, "newton_schulz_vjp", "steps", O.newton_schulz_vjp, A, A, steps=MAX_ITERATIONS + 1)


_A = np.random.default_rng(3).standard_normal((5, 4))
_W = _stiefel(np.random.default_rng(4), 5, 3)
_Z = 0.2 * O.project_tangent(_W, np.random.default_rng(5).standard_normal((5, 3)))

_ITER_CALLS = [
    ("newton_schulz", "steps", lambda v: O.newton_schulz(_A, steps=v)),
    ("bjorck", "steps", lambda v: O.bjorck(_A, steps=v)),
    ("bjorck_vjp", "steps", lambda v: O.bjorck_vjp(_A, _A, steps=v)),
    ("ns_polynomial", "steps", lambda v: O.ns_polynomial("jordan", steps=v)),
    ("ns_worst_error", "steps", lambda v: O.ns_worst_error("jordan", steps=v)),
    ("spectral_normalize", "n_iter", lambda v: O.spectral_normalize(_A, n_iter=v, rng=0)),
    ("spectral_normalize_vjp", "n_iter", lambda v: O.spectral_normalize_vjp(_A, _A, n_iter=v, rng=0)),
    ("cayley_iterative", "iterations", lambda v: O.cayley_iterative(_W, _Z, 0.1, iterations=v)),
    ("cayley_iterative_vjp", "iterations", lambda v: O.cayley_iterative_vjp(_W, _Z, 0.1, _W, iterations=v)),
    ("mclip", "steps", lambda v: O.mclip(_A, steps=v)),
    ("mclip_vjp", "steps", lambda v: O.mclip_vjp(_A, _A, steps=v)),
]


@pytest.mark.parametrize("who,arg,call", _ITER_CALLS, ids=[f"{w}-{a}" for w, a, _ in _ITER_CALLS])
def test_iteration_counts_are_ints_up_to_max_iterations(who, arg, call):
    _raises(ValueError, who, arg, call, MAX_ITERATIONS + 1)
    _raises(ValueError, who, arg, call, 10 ** 30)
    _raises(ValueError, who, arg, call, -1)
    for bad in (2.0, float("nan"), float("inf"), True, "3", None if arg == "iterations" else [2]):
        _raises(TypeError, who, arg, call, bad)


_HYPER = [
    ("newton_schulz", "eps", lambda v: O.newton_schulz(_A, eps=v), [-1.0]),
    ("newton_schulz_vjp", "eps", lambda v: O.newton_schulz_vjp(_A, _A, eps=v), [-1e-9]),
    ("bjorck", "beta", lambda v: O.bjorck(_A, beta=v), [0.0, -0.5]),
    ("parseval_retraction", "beta", lambda v: O.parseval_retraction(_A, beta=v), [-0.1]),
    ("parseval_retraction_vjp", "beta", lambda v: O.parseval_retraction_vjp(_A, _A, beta=v), [-0.1]),
    ("spectral_normalize", "eps", lambda v: O.spectral_normalize(_A, eps=v, rng=0), [-1.0, 1e300]),
    ("spectral_normalize_vjp", "eps", lambda v: O.spectral_normalize_vjp(_A, _A, eps=v, rng=0), [1e300]),
    ("ns_worst_error", "lo", lambda v: O.ns_worst_error("jordan", lo=v), [0.0, -1.0]),
    ("cayley_iterative", "alpha", lambda v: O.cayley_iterative(_W, _Z, v), []),
    ("cayley_iterative_vjp", "alpha", lambda v: O.cayley_iterative_vjp(_W, _Z, v, _W), []),
    ("project_tangent", "tol", lambda v: O.project_tangent(_W, _Z, tol=v), [0.0, -1.0]),
    ("retract", "tol", lambda v: O.retract(_W, _Z, tol=v), [0.0]),
    ("gram_schmidt_table", "kappas", lambda v: O.gram_schmidt_table(20, 5, kappas=(v,)), [0.5]),
    ("clip_singular_values", "lo", lambda v: O.clip_singular_values(_A, lo=v), [-1.0]),
    ("clip_singular_values", "hi", lambda v: O.clip_singular_values(_A, hi=v), [0.0, -1.0]),
    ("clip_singular_values_vjp", "hi", lambda v: O.clip_singular_values_vjp(_A, _A, hi=v), [0.0]),
    ("clip_conv_singular_values", "hi", lambda v: O.clip_conv_singular_values(np.ones((2, 2, 2, 2)), (3, 3), hi=v),
     [0.0]),
]


@pytest.mark.parametrize("who,arg,call,out_of_range", _HYPER, ids=[f"{w}-{a}" for w, a, _, _ in _HYPER])
def test_real_hyper_parameters_are_finite_and_in_range(who, arg, call, out_of_range):
    for bad in [float("nan"), float("inf"), float("-inf")] + out_of_range:
        _raises(ValueError, who, arg, call, bad)
    for bad in ("0.1", True, np.ones(1), 1j):
        _raises(TypeError, who, arg, call, bad)


_CHOICES = [
    ("gram_schmidt", "method", lambda v: O.gram_schmidt(_A, method=v)),
    ("gram_schmidt_vjp", "method", lambda v: O.gram_schmidt_vjp(_A, _A, method=v)),
    ("retract", "method", lambda v: O.retract(_W, _Z, v)),
    ("retract_vjp", "method", lambda v: O.retract_vjp(_W, _Z, _W, v)),
    ("project_tangent", "metric", lambda v: O.project_tangent(_W, _Z, v)),
    ("project_tangent_vjp", "metric", lambda v: O.project_tangent_vjp(_W, _Z, _W, v)),
    ("project_tangent_vjp", "wrt", lambda v: O.project_tangent_vjp(_W, _Z, _W, wrt=v)),
    ("newton_schulz", "coefficients", lambda v: O.newton_schulz(_A, coefficients=v)),
    ("polar", "side", lambda v: O.polar(_A, side=v)),
    ("polar_vjp", "side", lambda v: O.polar_vjp(_A, _A, side=v)),
    ("mclip", "method", lambda v: O.mclip(_A, method=v)),
    ("mclip", "coefficients", lambda v: O.mclip(_A, coefficients=v)),
    ("mclip_vjp", "method", lambda v: O.mclip_vjp(_A, _A, method=v)),
]


@pytest.mark.parametrize("who,arg,call", _CHOICES, ids=[f"{w}-{a}" for w, a, _ in _CHOICES])
def test_choices_are_checked(who, arg, call):
    for bad in ("nope", "", True, None, 3):
        _raises((ValueError, TypeError), who, arg, call, bad)


_FLAGS = [
    ("gram_schmidt", "return_r", lambda v: O.gram_schmidt(_A, return_r=v)),
    ("cayley", "check_skew", lambda v: O.cayley(np.zeros((3, 3)), check_skew=v)),
    ("cayley_vjp", "check_skew", lambda v: O.cayley_vjp(np.zeros((3, 3)), np.eye(3), check_skew=v)),
    ("expm_skew", "check_skew", lambda v: O.expm_skew(np.zeros((3, 3)), check_skew=v)),
    ("project_tangent", "check", lambda v: O.project_tangent(_W, _Z, check=v)),
    ("retract", "check", lambda v: O.retract(_W, _Z, check=v)),
    ("retract_vjp", "check", lambda v: O.retract_vjp(_W, _Z, _W, check=v)),
    ("cayley_iterative", "check", lambda v: O.cayley_iterative(_W, _Z, 0.1, check=v)),
    ("polar", "return_p", lambda v: O.polar(_A, return_p=v)),
    ("polar_vjp", "return_p", lambda v: O.polar_vjp(_A, _A, return_p=v)),
    ("clip_conv_singular_values", "project", lambda v: O.clip_conv_singular_values(np.ones((2, 2, 2, 2)), (3, 3),
                                                                                   project=v)),
]


@pytest.mark.parametrize("who,arg,call", _FLAGS, ids=[f"{w}-{a}" for w, a, _ in _FLAGS])
def test_flags_are_bools(who, arg, call):
    for bad in (1, 0, "yes", None, np.ones(1)):
        _raises(TypeError, who, arg, call, bad)


@pytest.mark.parametrize("bad,exc", [(-1, ValueError), ("0", TypeError), (1.5, TypeError), (True, TypeError)])
@pytest.mark.parametrize("who", ["spectral_normalize", "spectral_normalize_vjp"])
def test_spectral_normalize_rng_is_validated_even_with_u(who, bad, exc):
    u = np.ones(_A.shape[0])
    f = getattr(O, who)
    args = (_A,) if who == "spectral_normalize" else (_A, _A)
    _raises(exc, who, "rng", f, *args, u=u, rng=bad)


def test_spectral_normalize_u_must_be_a_finite_float_vector():
    _raises(TypeError, "spectral_normalize", "u", O.spectral_normalize, _A, u=np.ones(5, np.int64))
    _raises(TypeError, "spectral_normalize", "u", O.spectral_normalize, _A, u=[1.0] * 5)
    _raises(TypeError, "spectral_normalize", "u", O.spectral_normalize, _A, u=np.ones(5, np.float16))
    _raises(ValueError, "spectral_normalize", "u", O.spectral_normalize, _A, u=np.ones(4))
    _raises(NonFiniteError, "spectral_normalize", "u", O.spectral_normalize, _A, u=np.full(5, np.nan))


def test_coefficient_tables_and_the_polynomial():
    for bad in ([(1.0, np.nan, 0.0)], [(1.0, 2.0)], [], [[1.0, 2.0, 3.0]] * (MAX_ITERATIONS + 1), True, 1j):
        _raises(ValueError, "newton_schulz", "coefficients", O.newton_schulz, _A, coefficients=bad)
    # ns_worst_error names itself, not ns_polynomial
    _raises(ValueError, "ns_worst_error", "coefficients", O.ns_worst_error, "nope")
    _raises(TypeError, "ns_worst_error", "steps", O.ns_worst_error, "jordan", steps=2.5)
    _raises(NonFiniteError, "ns_worst_error", "coefficients", O.ns_worst_error, [(1e200, 1e200, 1e200)], lo=0.5)
    p = O.ns_polynomial("jordan")
    assert p(0.5) == pytest.approx(float(p(np.array([0.5]))[0]))
    assert p(np.float32(0.5)).dtype == np.float64 and p(np.ones(2, np.float32)).dtype == np.float32
    _raises(TypeError, "ns_polynomial", "sigma", p, [0.5])
    _raises(TypeError, "ns_polynomial", "sigma", p, np.ones(2, np.int64))
    _raises(TypeError, "ns_polynomial", "sigma", p, np.ones(2, np.complex128))
    _raises(ValueError, "ns_polynomial", "sigma", p, float("nan"))
    _raises(NonFiniteError, "ns_polynomial", "sigma", p, np.array([1e10]))


# ---------------------------------------------------------------------------------------------------------
# 3. Dtypes: float32/float64 only; the output keeps the input's dtype.

_FORWARD = [
    ("gram_schmidt", lambda A: O.gram_schmidt(A)),
    ("qr_orthogonalize", lambda A: O.qr_orthogonalize(A)),
    ("polar", lambda A: O.polar(A)),
    ("newton_schulz", lambda A: O.newton_schulz(A)),
    ("bjorck", lambda A: O.bjorck(A)),
    ("parseval_retraction", lambda A: O.parseval_retraction(A)),
    ("spectral_normalize", lambda A: O.spectral_normalize(A, rng=0)[0]),
    ("orthogonality_error_2", lambda A: O.orthogonality_error_2(A)),
    ("orthogonality_error_fro", lambda A: O.orthogonality_error_fro(A)),
    ("clip_singular_values", lambda A: O.clip_singular_values(A, hi=1.0)),
    ("mclip", lambda A: O.mclip(A)),
    ("procrustes", lambda A: O.procrustes(A, np.eye(4)[:, :3])),
]
_SQUARE = [("cayley", O.cayley), ("expm_skew", O.expm_skew)]


@pytest.mark.parametrize("bad", [np.float16, np.longdouble, np.complex128, np.int64, bool])
@pytest.mark.parametrize("who,f", _FORWARD + _SQUARE, ids=[w for w, _ in _FORWARD + _SQUARE])
def test_only_float32_and_float64_arrays(who, f, bad):
    arg = "W" if who in ("parseval_retraction", "spectral_normalize", "orthogonality_error_fro",
                         "clip_singular_values", "mclip") else "Q" if who == "orthogonality_error_2" else "A"
    _raises(TypeError, who, arg, f, np.eye(4)[:, :3].astype(bad) if who not in ("cayley", "expm_skew")
            else np.zeros((3, 3), bad))


def test_issue_reproducer_polar_float16_is_refused_not_float32():
    _raises(TypeError, "polar", "A", O.polar, np.eye(3, dtype=np.float16))


def test_householder_and_stiefel_refuse_float16():
    rng = np.random.default_rng(6)
    V = rng.standard_normal((5, 3))
    _raises(TypeError, "householder_product", "tau", O.householder_product, V, np.ones(3, np.float16))
    _raises(TypeError, "householder_product", "V", O.householder_product, V.astype(np.float16), np.ones(3))
    _raises(TypeError, "retract", "W", O.retract, _W.astype(np.float16), _Z.astype(np.float16))


@pytest.mark.parametrize("who,f", _FORWARD[:7], ids=[w for w, _ in _FORWARD[:7]])
def test_float32_in_float32_out(who, f):
    A = _well(np.random.default_rng(7), (6, 4), np.float32)
    assert f(A).dtype == np.float32


def test_float32_in_float32_out_singular_value_maps():
    rng = np.random.default_rng(8)
    A = _well(rng, (6, 4), np.float32)
    Q, P = O.polar(A, return_p=True)
    R, scale = O.procrustes(A, A + np.float32(0.1))
    K = (0.3 * rng.standard_normal((3, 2, 3, 3))).astype(np.float32)
    outs = [Q, P, R, scale, O.clip_singular_values(A, 0.1, 1.0), O.mclip(A), O.mclip(A, method="svd"),
            O.clip_conv_singular_values(K, (5, 5), hi=1.0), O.clip_conv_singular_values(K, (5, 5), project=False)]
    assert all(np.asarray(y).dtype == np.float32 for y in outs)


def test_polar_vjp_with_p_takes_a_pair_of_cotangents():
    A = _well(np.random.default_rng(9), (6, 4))
    gQ, gP = np.ones((6, 4)), np.ones((4, 4))
    for bad in (gQ, (gQ,), [gQ, gP, gP], None):
        _raises(TypeError, "polar_vjp", "grad_out", O.polar_vjp, A, bad, return_p=True)
    _raises(ValueError, "polar_vjp", "grad_out[1]", O.polar_vjp, A, (gQ, np.ones((6, 6))), return_p=True)
    _raises(ValueError, "polar_vjp", "grad_out[1]", O.polar_vjp, A, (gQ, gP), side="left", return_p=True)
    _raises(NonFiniteError, "polar_vjp", "grad_out[0]", O.polar_vjp, A, (gQ * np.nan, gP), return_p=True)
    _raises(TypeError, "polar_vjp", "grad_out[1]", O.polar_vjp, A, (gQ, gP.astype(np.float32)), return_p=True)
    assert O.polar_vjp(A, (gQ, np.ones((6, 6))), side="left", return_p=True).shape == A.shape


def test_procrustes_refuses_mismatched_or_singular_inputs():
    rng = np.random.default_rng(10)
    A, B = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    _raises(ValueError, "procrustes", "B", O.procrustes, A, B[:, :2])
    _raises(TypeError, "procrustes", "B", O.procrustes, A, B.astype(np.float32))
    _raises(ValueError, "procrustes", "AᵀB", O.procrustes, A[:2], B[:2])          # m < n: AᵀB singular
    _raises(ValueError, "procrustes_vjp", "AᵀB", O.procrustes_vjp, np.zeros((6, 3)), B, np.ones((3, 3)))
    _raises(ValueError, "procrustes_vjp", "grad_out", O.procrustes_vjp, A, B, np.ones((6, 3)))
    for bad in (np.ones(1), np.ones((), np.float32), np.nan, True, "1"):
        _raises((TypeError, ValueError), "procrustes_vjp", "grad_scale", O.procrustes_vjp, A, B, np.ones((3, 3)),
                grad_scale=bad)


def test_clip_bounds_and_kinks_are_refused_clearly():
    rng = np.random.default_rng(11)
    U, _, Vt = np.linalg.svd(rng.standard_normal((5, 3)), full_matrices=False)
    W = (U * [2.0, 1.0, 0.5]) @ Vt
    _raises(ValueError, "clip_singular_values", "lo must be <= hi", O.clip_singular_values, W, 2.0, 1.0)
    _raises(ValueError, "clip_singular_values_vjp", "hi", O.clip_singular_values_vjp, W, W, hi=1.0)
    _raises(ValueError, "clip_singular_values_vjp", "lo", O.clip_singular_values_vjp, W, W, lo=0.5)
    _raises(ValueError, "mclip_vjp", "hi", O.mclip_vjp, W, W, method="svd")     # σ = 1: the kink of min(σ, 1)
    singular = W.copy()
    singular[:, 2] = singular[:, 0]
    _raises(ValueError, "clip_singular_values", "rank deficient", O.clip_singular_values, singular, lo=0.1)
    _raises(ValueError, "clip_singular_values_vjp", "rank deficient", O.clip_singular_values_vjp, singular, W, lo=0.1)
    assert np.linalg.norm(O.clip_singular_values(singular, hi=1.0), 2) <= 1 + 1e-12      # lo None: no lift
    _raises(ValueError, "clip_conv_singular_values", "input_shape", O.clip_conv_singular_values,
            np.ones((2, 2, 3, 3)), (2, 5))
    _raises(ValueError, "clip_conv_singular_values", "rank deficient", O.clip_conv_singular_values,
            np.ones((2, 2, 3, 3)), (5, 5), lo=0.1)                # a constant kernel: singular transfer matrices


def test_mclip_newton_schulz_limits_are_clean_errors():
    A = _well(np.random.default_rng(12), (6, 4))
    for big in (1e200, 1e14):                     # eps·‖W‖_F > 1e-2: the route's cancellation, refused
        _raises(ValueError, "mclip", "method='svd'", O.mclip, A * big)
        _raises(ValueError, "mclip_vjp", "method='svd'", O.mclip_vjp, A * big, np.ones_like(A))
        assert np.isfinite(O.mclip(A * big, method="svd")).all()
    diverging = [(1e10, 0.0, 0.0)]                # a user table that overflows: named by mclip, not newton_schulz
    _raises(NonFiniteError, "mclip", "Newton–Schulz iteration overflows", O.mclip, A, steps=40, coefficients=diverging)
    _raises(NonFiniteError, "mclip_vjp", "Newton–Schulz iteration overflows", O.mclip_vjp, A, A, steps=40,
            coefficients=diverging)


# ---------------------------------------------------------------------------------------------------------
# 4. Scale: the scale-invariant maps work at any representable scale; their VJPs scale as 1/scale.

def test_issue_reproducer_spectral_normalize_tiny_scale():
    A = np.random.default_rng(0).standard_normal((5, 7))
    Y, _ = O.spectral_normalize(A * 1e-13, n_iter=20, rng=0)
    assert np.linalg.norm(Y, 2) == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(Y, O.spectral_normalize(A, n_iter=20, rng=0)[0], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype,scale", [(np.float64, 1e-310), (np.float64, 1e300), (np.float64, 1e-200),
                                         (np.float32, 1e-40), (np.float32, 1e38), (np.float32, 1e-30)])
def test_spectral_normalize_any_scale(dtype, scale):
    A = (np.random.default_rng(1).standard_normal((5, 7)) * scale).astype(dtype)
    Y, u = O.spectral_normalize(A, n_iter=30, rng=0)
    assert Y.dtype == dtype and u.dtype == dtype
    assert np.linalg.norm(Y.astype(np.float64), 2) == pytest.approx(1.0, rel=1e-4 if dtype == np.float32 else 1e-8)
    g = O.spectral_normalize_vjp(A, Y * scale if scale < 1 else Y, n_iter=30, rng=0)   # representable
    assert np.isfinite(g).all()


_SCALE_INVARIANT = [
    ("qr_orthogonalize", O.qr_orthogonalize, O.qr_orthogonalize_vjp),
    ("gram_schmidt", O.gram_schmidt, O.gram_schmidt_vjp),
    ("polar", O.polar, O.polar_vjp),
    ("bjorck", lambda A: O.bjorck(A, steps=30), lambda A, g: O.bjorck_vjp(A, g, steps=30)),
    ("newton_schulz", lambda A: O.newton_schulz(A, steps=30, coefficients="cubic", eps=0.0),
     lambda A, g: O.newton_schulz_vjp(A, g, steps=30, coefficients="cubic", eps=0.0)),
]
_SCALES = [(np.float64, 1e-300), (np.float64, 1e-310), (np.float64, 1e300), (np.float64, 1.7e308),
           (np.float32, 1e-30), (np.float32, 1e-40), (np.float32, 1e30), (np.float32, 3e38)]


@pytest.mark.parametrize("dtype,scale", _SCALES)
@pytest.mark.parametrize("who,f,f_vjp", _SCALE_INVARIANT, ids=[w for w, _, _ in _SCALE_INVARIANT])
def test_scale_invariant_maps_at_any_representable_scale(who, f, f_vjp, dtype, scale):
    B = _well(np.random.default_rng(8), (6, 4))
    A = (B / np.abs(B).max() * scale).astype(dtype)          # max|A| = scale (subnormal ones included)
    assert np.isfinite(A).all() and np.abs(A).max() > 0
    Q = f(A)
    assert Q.dtype == dtype and np.isfinite(Q).all()
    assert _orth_err(Q) <= (1e-5 if dtype == np.float32 else 1e-13)
    # the orthogonal factor of the stored A: that of A·2^k, exact (k brings it to order 1)
    k = -int(np.frexp(np.abs(A).max())[1])
    An = np.ldexp(A, k).astype(dtype)
    np.testing.assert_allclose(Q, f(An), rtol=0, atol=50 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype,scale", [(np.float64, 1e-310), (np.float64, 1e-300), (np.float64, 1e300),
                                         (np.float32, 1e-40), (np.float32, 1e30)])
@pytest.mark.parametrize("who,f,f_vjp", _SCALE_INVARIANT, ids=[w for w, _, _ in _SCALE_INVARIANT])
def test_scale_invariant_vjps_scale_as_one_over_scale(who, f, f_vjp, dtype, scale):
    B = _well(np.random.default_rng(9), (6, 4))
    A = (B * scale).astype(dtype)
    G = np.random.default_rng(10).standard_normal(A.shape).astype(dtype)
    k = -int(np.frexp(np.abs(A).max())[1])                   # A·2^k is of order 1, exactly
    ref = f_vjp(np.ldexp(A, k).astype(dtype), G)             # d f(A)/dA = 2^k · f'(A·2^k)
    with np.errstate(over="ignore"):
        expected = np.ldexp(ref.astype(np.float64), k)
    if np.isfinite(expected).all() and np.abs(expected).max() < np.finfo(dtype).max / 4:
        g = f_vjp(A, G)
        assert g.dtype == dtype
        np.testing.assert_allclose(g, np.ldexp(ref, k), rtol=1e-5 if dtype == np.float32 else 1e-10,
                                   atol=0)
    else:                                                    # 1/scale not representable: a clear error
        _raises(NonFiniteError, f"{who}_vjp", "gradient", f_vjp, A, G)
    # a cotangent scaled with A keeps the gradient representable: finite and right
    Gs = (G.astype(np.float64) * min(scale, 1.0)).astype(dtype)
    if np.abs(Gs).max() > np.finfo(dtype).tiny:
        g = f_vjp(A, Gs)
        assert np.isfinite(g).all()


@pytest.mark.parametrize("who,f_vjp", [("polar_vjp", O.polar_vjp), ("qr_orthogonalize_vjp", O.qr_orthogonalize_vjp),
                                       ("gram_schmidt_vjp", O.gram_schmidt_vjp)])
def test_issue_reproducer_vjp_of_subnormal_input_is_not_nan(who, f_vjp):
    B = _well(np.random.default_rng(11), (6, 4))
    G = np.random.default_rng(12).standard_normal(B.shape)
    _raises(NonFiniteError, who, "gradient", f_vjp, B * 1e-310, G)     # ~1e310: not representable
    g = f_vjp(B * 1e-310, G * 1e-300)                                  # ~1e10: representable
    A = B * 1e-310
    np.testing.assert_allclose(g, np.ldexp(f_vjp(np.ldexp(A, 1030), G * 1e-300), 1030), rtol=1e-9)


def test_newton_schulz_with_eps_keeps_its_formula_at_any_scale():
    """``A / (κ‖A‖_F + ε)``: for ‖A‖_F ≪ ε the result is ≈ p'(0)·A/ε (documented), never NaN/0/overflow."""
    B = _well(np.random.default_rng(13), (4, 6))
    for scale in (1e-300, 1e-310, 1e300, 1.7e308):
        Y = O.newton_schulz(B / np.abs(B).max() * scale, steps=3)
        assert np.isfinite(Y).all()
        if scale > 1:
            np.testing.assert_allclose(Y, O.newton_schulz(B / np.abs(B).max(), steps=3, eps=0.0), atol=1e-13)
    tiny = B * 1e-300
    a = O.NS_COEFFICIENTS["jordan"][0][0]
    np.testing.assert_allclose(O.newton_schulz(tiny, steps=3), a ** 3 * tiny / 1e-7, rtol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# 5. Overflow raises NonFiniteError naming the function and suggesting float64 or rescaling.

def _big_inputs(dtype, big):
    rng = np.random.default_rng(14)
    W = _stiefel(rng, 6, 3)
    Z = O.project_tangent(W, rng.standard_normal((6, 3)))
    Z = (Z / np.abs(Z).max() * big).astype(dtype)
    S = _skew(rng, 4)
    return W.astype(dtype), Z, (S / np.abs(S).max() * big).astype(dtype)


_OVERFLOWS = [
    ("expm_skew", "A", lambda W, Z, S: O.expm_skew(S)),
    ("expm_skew_vjp", "A", lambda W, Z, S: O.expm_skew_vjp(S, np.ones_like(S))),
    ("parseval_retraction", "W", lambda W, Z, S: O.parseval_retraction(S)),
    ("parseval_retraction_vjp", "W", lambda W, Z, S: O.parseval_retraction_vjp(S, np.ones_like(S))),
    ("retract", "Z", lambda W, Z, S: O.retract(W, Z, "cayley")),
    ("retract", "Z", lambda W, Z, S: O.retract(W, Z, "exp")),
    ("retract_vjp", "Z", lambda W, Z, S: O.retract_vjp(W, Z, W, "exp")),
    ("cayley_iterative", "Z", lambda W, Z, S: O.cayley_iterative(W, Z, 0.5)),
    ("cayley_iterative_vjp", "Z", lambda W, Z, S: O.cayley_iterative_vjp(W, Z, 0.5, W)),
]


@pytest.mark.parametrize("dtype,big", [(np.float64, 1e300), (np.float32, 1e38)])
@pytest.mark.parametrize("who,arg,call", _OVERFLOWS, ids=[f"{w}-{i}" for i, (w, _, _) in enumerate(_OVERFLOWS)])
def test_issue_reproducer_overflow_raises_nonfinite_error(who, arg, call, dtype, big):
    msg = _raises(NonFiniteError, who, arg, call, *_big_inputs(dtype, big))
    assert "float64" in msg and "rescale" in msg


@pytest.mark.parametrize("dtype,big", [(np.float64, 1e300), (np.float64, 1.7e308), (np.float32, 1e38)])
def test_cayley_and_the_qr_polar_retractions_stay_orthogonal_near_the_float_maximum(dtype, big):
    W, Z, S = _big_inputs(dtype, big)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    assert _orth_err(O.cayley(S)) <= tol
    assert np.isfinite(O.cayley_vjp(S, np.ones_like(S))).all()
    for method in ("qr", "polar"):
        Y = O.retract(W, Z, method)
        assert Y.dtype == dtype and _orth_err(Y) <= tol


def test_expm_skew_refuses_norms_where_it_has_no_digit():
    S = _skew(np.random.default_rng(15), 4)
    S /= np.abs(S).sum(axis=0).max()                          # ‖S‖_1 = 1
    for dtype, ok, bad in ((np.float64, 1e12, 1e15), (np.float32, 1e4, 1e5)):
        assert _orth_err(O.expm_skew((S * ok).astype(dtype))) <= 1e-2
        _raises(NonFiniteError, "expm_skew", "A", O.expm_skew, (S * bad).astype(dtype))


def test_parseval_beta_zero_is_the_identity_even_when_wwtw_overflows():
    W = np.random.default_rng(16).standard_normal((3, 4)) * 1e200
    np.testing.assert_array_equal(O.parseval_retraction(W, beta=0.0), W)


def test_householder_product_overflow():
    V = np.random.default_rng(17).standard_normal((5, 3)) * 1e200
    _raises(NonFiniteError, "householder_product", "overflows", O.householder_product, V, np.full(3, 1e100))


def test_error_measures_overflow_raises():
    _raises(NonFiniteError, "orthogonality_error_2", "overflows", O.orthogonality_error_2, np.eye(3) * 1e300)
    _raises(NonFiniteError, "orthogonality_error_fro", "overflows", O.orthogonality_error_fro, np.eye(3) * 1e300)


# ---------------------------------------------------------------------------------------------------------
# 6. Degenerate inputs: the documented answer or a clear ValueError; never LinAlgError.

@pytest.mark.parametrize("method", ["mgs", "cgs", "cgs2"])
def test_gram_schmidt_rank_deficient_raises_naming_the_column(method):
    A = np.random.default_rng(18).standard_normal((6, 4))
    A[:, 2] = A[:, 0] - 2 * A[:, 1]
    _raises(ValueError, "gram_schmidt", "column 2", O.gram_schmidt, A, method=method)
    _raises(ValueError, "gram_schmidt", "column 0", O.gram_schmidt, np.zeros((5, 3)), method=method)


def test_qr_of_rank_deficient_input_is_orthonormal_and_its_vjp_raises():
    A = np.random.default_rng(19).standard_normal((6, 4))
    A[:, 3] = A[:, 1]
    for M in (A, np.zeros((5, 3)), np.zeros((3, 5))):
        assert _orth_err(O.qr_orthogonalize(M)) <= 1e-14
    _raises(ValueError, "qr_orthogonalize_vjp", "rank deficient", O.qr_orthogonalize_vjp, A, np.ones_like(A))
    _raises(ValueError, "gram_schmidt_vjp", "rank deficient", O.gram_schmidt_vjp, A, np.ones_like(A))


def test_polar_of_singular_input_raises():
    A = np.random.default_rng(20).standard_normal((6, 4))
    A[:, 3] = A[:, 1]
    for M in (A, np.zeros((4, 4)), A.T.copy()):
        _raises(ValueError, "polar", "A is numerically singular", O.polar, M)
        _raises(ValueError, "polar_vjp", "A is numerically singular", O.polar_vjp, M, np.ones_like(M))


def test_lapack_failures_become_value_errors(monkeypatch):
    def broken(*args, **kwargs):
        raise np.linalg.LinAlgError("SVD did not converge")
    monkeypatch.setattr(decomp, "_thin_svd", broken)
    A = np.eye(3)
    msg = _raises(ValueError, "polar", "A", O.polar, A)
    assert "did not converge" in msg and "SVD did not converge" != msg
    _raises(ValueError, "polar_vjp", "A", O.polar_vjp, A, A)


def test_cayley_singular_system_is_a_value_error():
    A = 2 * np.eye(3)                                          # I - A/2 = 0
    _raises(ValueError, "cayley", "I - A/2 is singular", O.cayley, A)
    _raises(ValueError, "cayley_vjp", "I - A/2 is singular", O.cayley_vjp, A, np.eye(3))


def test_retractions_of_a_step_cancelling_w():
    W = _stiefel(np.random.default_rng(21), 5, 3)
    _raises(ValueError, "retract", "W + Z", O.retract, W, -W, "polar")
    _raises(ValueError, "retract_vjp", "W + Z", O.retract_vjp, W, -W, W, "qr")
    _raises(ValueError, "retract_vjp", "W + Z", O.retract_vjp, W, -W, W, "polar")
    assert _orth_err(O.retract(W, -W, "qr")) <= 1e-14         # Householder: still orthonormal (documented)


def test_spectral_normalize_of_zero_raises():
    _raises(ValueError, "spectral_normalize", "W", O.spectral_normalize, np.zeros((3, 4)), rng=0)


# ---------------------------------------------------------------------------------------------------------
# 7. compare-projections and the tables.

_CMP_BAD = [
    ("n", [float("nan"), float("inf"), True, "8", 1.5], TypeError),
    ("n", [-1, 0, 1, 5000], ValueError),
    ("dtype", [np.float16, "complex128", np.int64, bool, "no-such-dtype", float("nan")], TypeError),
    ("rng", [-1], ValueError),
    ("rng", ["0", 1.5, True], TypeError),
    ("cond", [float("nan"), float("inf"), float("-inf"), 0.0, -1.0, 0.5], ValueError),
    ("cond", [True, "10"], TypeError),
]


@pytest.mark.parametrize("who", ["compare", "sample_matrix"])
@pytest.mark.parametrize("arg,values,exc", _CMP_BAD, ids=[f"{a}-{e.__name__}" for a, _, e in _CMP_BAD])
def test_compare_arguments_are_validated(who, arg, values, exc):
    f = getattr(C, who)
    base = {"n": 4, "dtype": "float64", "rng": 0, "cond": 10.0}
    for v in values:
        _raises(exc, who, arg, f, **{**base, arg: v})


def test_compare_repeat_and_cond_bound():
    for v, exc in ((0, ValueError), (-3, ValueError), (1001, ValueError), (True, TypeError), (2.0, TypeError)):
        _raises(exc, "compare", "repeat", C.compare, 4, "float64", repeat=v)
    _raises(ValueError, "compare", "cond", C.compare, 4, "float64", cond=1e13)
    rows = C.compare(4, "float32", repeat=1, rng=0, cond=10.0)
    assert {r["method"] for r in rows} >= {"polar (SVD)", "qr_orthogonalize"}
    assert C.sample_matrix(4, "float32").dtype == np.float32


def test_format_tables_validate_rows():
    rows = C.compare(4, "float64", repeat=1)
    assert "polar (SVD)" in C.format_table(rows, 4, "float64", 1e3)
    for bad, exc in (("rows", TypeError), (3, TypeError), ([1, 2], TypeError), ([{"method": "x"}], ValueError),
                     ([{**rows[0], "seconds": float("nan")}], ValueError)):
        _raises(exc, "format_table", "rows", C.format_table, bad, 4, "float64", 1e3)
    _raises(TypeError, "format_table", "dtype", C.format_table, rows, 4, "float16", 1e3)
    for bad, exc in (("rows", TypeError), ([{"kappa": 1.0}], ValueError), ([{"kappa": "1", "cgs": 1, "mgs": 1,
                                                                                "cgs2": 1, "qr": 1}], ValueError)):
        _raises(exc, "format_gram_schmidt_table", "rows", C.format_gram_schmidt_table, bad)


def test_gram_schmidt_table_arguments():
    _raises(ValueError, "gram_schmidt_table", "kappas", O.gram_schmidt_table, 40, 10, kappas=(1e30,))
    _raises(TypeError, "gram_schmidt_table", "kappas", O.gram_schmidt_table, 40, 10, kappas=1e3)
    _raises(TypeError, "gram_schmidt_table", "kappas", O.gram_schmidt_table, 40, 10, kappas=())
    _raises(ValueError, "gram_schmidt_table", "k", O.gram_schmidt_table, 10, 20)
    _raises(ValueError, "gram_schmidt_table", "n", O.gram_schmidt_table, 10 ** 6, 20)
    _raises(TypeError, "gram_schmidt_table", "n", O.gram_schmidt_table, 2.5, 2)
    _raises(ValueError, "gram_schmidt_table", "rng", O.gram_schmidt_table, 20, 5, rng=-1)
    assert len(O.gram_schmidt_table(20, 5, kappas=(10.0,))) == 1


@pytest.mark.parametrize("name,shape", [("polar_vjp", (6, 4)), ("polar_vjp", (4, 6)), ("qr_orthogonalize_vjp", (6, 4)),
                                        ("qr_orthogonalize_vjp", (4, 6)), ("gram_schmidt_vjp", (6, 4))])
def test_a_grad_out_near_the_float_maximum_is_a_clean_error_without_numpy_warnings(name, shape):
    import warnings
    A = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    g = np.full(shape, np.finfo(np.float32).max / 2, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                # a NumPy RuntimeWarning is NumPy's wording leaking
        with pytest.raises(NonFiniteError, match=f"{name}: the gradient overflows float32"):
            getattr(O, name)(A, g)
