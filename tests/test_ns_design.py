"""ortho.design_ns_coefficients: the Polar Express construction of Newton–Schulz schedules (Amsel, Persson,
Musco & Gower 2025, arXiv:2505.16932). Checked against the published table, a 50-digit evaluation of the
same construction, Chebyshev's equioscillation characterization on dense grids, a linear-programming minimax,
a dense-grid evaluation of the composed polynomial and the SVD polar factor."""
import numpy as np
import pytest
import scipy.linalg
import scipy.optimize

from orthoref._checks import MAX_ITERATIONS, NonFiniteError
from orthoref.ortho import NS_COEFFICIENTS, design_ns_coefficients, newton_schulz, ns_worst_error

# The published table: the paper's listing (arXiv:2505.16932, Algorithm 1, `coeffs_list`), also
# https://github.com/NoahAmsel/PolarExpress README / polar_express/basic.py `_COEFFS`, printed digits as there.
# Built with l = 1e-3, 8 steps, cushion 0.02407327424182761; the safety factor 1.01 is applied afterwards to
# every row but the last (below).
PUBLISHED = [
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
]
PE_CUSHION = 0.02407327424182761

# Row 7 was solved on [0.99763, 1.00237], where their 4 x 4 Remez system in (a, b, c) has condition ~1e6:
# its printed digits past the 11th are their rounding (a 50-digit evaluation of the construction, see
# test_matches_a_50_digit_evaluation, gives 1.87500148084421..., -1.25000164538148..., 0.375000164538186...).
RTOL_ROW = [1e-14] * 6 + [5e-11] + [1e-15]


def _safe(rows, s=1.01):
    return [(a / s, b / s ** 3, c / s ** 5) for a, b, c in rows[:-1]] + [tuple(rows[-1])]


def _assert_rows(ours, expected):
    ours = np.asarray(ours)
    assert ours.shape == (len(expected), 3)
    for t, (row, ref) in enumerate(zip(ours, expected)):
        np.testing.assert_allclose(row, ref, rtol=RTOL_ROW[t], atol=0, err_msg=f"row {t + 1}")


def _p(row, x):
    a, b, c = row
    return a * x + b * x ** 3 + c * x ** 5


def _compose(rows, x):
    for row in rows:
        x = _p(row, x)
    return x


# ---------------------------------------------------------------------------------------------------------
# The published table.

def test_reproduces_the_published_table():
    _assert_rows(design_ns_coefficients(8, 1e-3, safety=1.0), PUBLISHED)
    _assert_rows(design_ns_coefficients(8, 1e-3), _safe(PUBLISHED))          # defaults: safety 1.01, cushion
    _assert_rows(design_ns_coefficients(8, 1e-3, safety=1.01, cushion=PE_CUSHION), _safe(PUBLISHED))


def test_named_table_is_the_designed_one():
    """NS_COEFFICIENTS["polar_express"] (the published table, shipped) equals the design to printed digits."""
    _assert_rows(design_ns_coefficients(8, 1e-3), NS_COEFFICIENTS["polar_express"])
    # fewer steps: the first rows are the same, only the last one escapes the safety factor
    T5 = design_ns_coefficients(5, 1e-3)
    _assert_rows(T5[:4], _safe(PUBLISHED)[:4])
    np.testing.assert_allclose(T5[4], PUBLISHED[4], rtol=1e-14)


def _mp_quintic(mp, lo, hi):
    """The paper's Remez iteration for (a, b, c, E), in mpmath."""
    q, r = (3 * lo + hi) / 4, (lo + 3 * hi) / 4
    E_old = None
    for _ in range(100):
        M = mp.matrix([[x, x ** 3, x ** 5, s] for x, s in ((lo, 1), (q, -1), (r, 1), (hi, -1))])
        a, b, c, E = mp.lu_solve(M, mp.matrix([1, 1, 1, 1]))
        d = mp.sqrt(9 * b * b - 20 * a * c)
        q, r = mp.sqrt((-3 * b - d) / (10 * c)), mp.sqrt((-3 * b + d) / (10 * c))
        if E_old is not None and abs(E - E_old) < mp.mpf(10) ** -45:
            return a, b, c
        E_old = E
    raise AssertionError("mpmath Remez did not converge")


def test_matches_a_50_digit_evaluation():
    """The construction (cushioned, centred, u = 2 − ℓ) in 50-digit arithmetic: every row, row 7 included."""
    mp = pytest.importorskip("mpmath")
    with mp.workdps(50):
        lo, hi, cushion = mp.mpf("1e-3"), mp.mpf(1), mp.mpf(PE_CUSHION)
        exact = []
        for _ in range(8):
            if (hi - lo) / (hi + lo) < mp.mpf(10) ** -20:        # converged: the limit 15/8, -10/8, 3/8 at m
                m = (lo + hi) / 2
                a, b, c = mp.mpf(15) / 8 / m, mp.mpf(-10) / 8 / m ** 3, mp.mpf(3) / 8 / m ** 5
            else:
                a, b, c = _mp_quintic(mp, max(lo, cushion * hi), hi)
            if cushion * hi > lo:
                s = 2 / (a * lo + b * lo ** 3 + c * lo ** 5 + a * hi + b * hi ** 3 + c * hi ** 5)
                a, b, c = a * s, b * s, c * s
            exact.append((float(a), float(b), float(c)))
            lo = a * lo + b * lo ** 3 + c * lo ** 5
            hi = 2 - lo
    np.testing.assert_allclose(design_ns_coefficients(8, 1e-3, safety=1.0), exact, rtol=1e-14, atol=0)


def test_default_cushion_is_the_tenth_ratio_root():
    """The paper's cushion is the ℓ whose minimax quintic on [ℓ, 1] has (1 − E)/(1 + E) = 1/10."""
    def ratio(ell):
        E = design_ns_coefficients(1, ell, safety=1.0, cushion=0.0, return_bound=True)[1]
        return (1 - E) / (1 + E) - 0.1
    root = scipy.optimize.brentq(ratio, 0.01, 0.05, xtol=1e-16, rtol=1e-15)
    assert root == pytest.approx(PE_CUSHION, rel=1e-12)


# ---------------------------------------------------------------------------------------------------------
# Each step is the minimax polynomial (Chebyshev's equioscillation theorem).

def _extrema(e, lo, hi, n=200001):
    """The local extrema of |e| on [lo, hi] (ends included), each refined by a bounded scalar search."""
    x = np.linspace(lo, hi, n)
    v = np.abs(e(x))
    idx = [0] + list(np.flatnonzero((v[1:-1] >= v[:-2]) & (v[1:-1] >= v[2:])) + 1) + [n - 1]
    out = []
    for i in idx:
        if i in (0, n - 1):
            out.append(x[i])
            continue
        res = scipy.optimize.minimize_scalar(lambda t: -abs(e(t)), bounds=(x[i - 1], x[i + 1]), method="bounded",
                                             options={"xatol": 1e-15})
        out.append(res.x)
    return np.array(out)


@pytest.mark.parametrize("degree", [3, 5])
@pytest.mark.parametrize("sigma_min,sigma_max", [(1e-3, 1.0), (0.05, 1.0), (0.01, 0.5), (0.3, 0.9)])
def test_every_step_equioscillates(degree, sigma_min, sigma_max):
    """On its interval [ℓ_t, u_t], p_t − 1 reaches ±E at n + 1 points with alternating signs (n = (d + 1)/2,
    the dimension of span{x, x³, ..., x^d}), starting with −E at ℓ_t, and |p_t − 1| <= E everywhere; the
    next interval is the paper's [p_t(ℓ_t), 2 − p_t(ℓ_t)] (evaluated at ℓ_t, where p does not cancel)."""
    T = design_ns_coefficients(6, sigma_min, sigma_max, degree=degree, safety=1.0, cushion=0.0)
    n_alt = (degree + 1) // 2 + 1
    lo, hi = sigma_min, sigma_max
    checked = 0
    for t, row in enumerate(T):
        if hi - lo < 1e-5:                           # E < 1e-5: beyond that the grid sees rounding
            break

        def e(x):
            return _p(row, x) - 1.0
        vals = e(_extrema(e, lo, hi))
        E = np.abs(vals).max()
        if E > 1e-6:
            top = vals[np.abs(vals) >= E * (1 - 1e-9)]
            assert top.size == n_alt == vals.size, (t, vals / E)
            assert top[0] < 0 and np.all(np.sign(top[1:]) == -np.sign(top[:-1])), (t, vals / E)
            checked += 1
        lo = _p(row, lo)
        hi = 2.0 - lo
    assert checked >= 2


@pytest.mark.parametrize("degree,lo,hi", [(5, 0.02, 1.0), (5, 0.3, 1.0), (5, 0.6, 1.4), (3, 0.01, 1.0),
                                          (3, 0.5, 1.5)])
def test_step_is_the_linear_programming_minimax(degree, lo, hi):
    """min_{a,b,c,E} E subject to |p(x_i) − 1| <= E on a 3001-point grid (HiGHS): the same polynomial."""
    x = np.linspace(lo, hi, 3001)
    k = (degree + 1) // 2
    B = np.stack([x ** (2 * j + 1) for j in range(k)], axis=1)
    ones = np.ones((x.size, 1))
    A_ub = np.vstack([np.hstack([B, -ones]), np.hstack([-B, -ones])])
    b_ub = np.concatenate([np.ones(x.size), -np.ones(x.size)])
    c = np.zeros(k + 1)
    c[-1] = 1.0
    res = scipy.optimize.linprog(c, A_ub=A_ub, b_ub=b_ub, bounds=[(None, None)] * (k + 1), method="highs")
    assert res.success
    # one step on [lo, hi]: sigma_max = 1 scales the interval, so design on [lo/hi, 1] and rescale
    row, E = design_ns_coefficients(1, lo / hi, degree=degree, safety=1.0, cushion=0.0, return_bound=True)
    row = row[0] / hi ** np.array([1, 3, 5])
    assert E == pytest.approx(res.x[-1], rel=1e-6)
    np.testing.assert_allclose(row[:k], res.x[:k], rtol=1e-5, atol=1e-8)


# ---------------------------------------------------------------------------------------------------------
# The bound and Newton–Schulz.

CONFIGS = [dict(steps=5, sigma_min=1e-3), dict(steps=8, sigma_min=1e-3), dict(steps=3, sigma_min=0.05),
           dict(steps=6, sigma_min=1e-6), dict(steps=4, sigma_min=0.01, sigma_max=0.6),
           dict(steps=10, sigma_min=1e-3, degree=3), dict(steps=6, sigma_min=0.02, degree=3),
           dict(steps=4, sigma_min=0.1, degree=3, safety=1.05), dict(steps=5, sigma_min=1e-3, cushion=0.1)]


@pytest.mark.parametrize("kw", CONFIGS, ids=[str(c) for c in CONFIGS])
def test_bound_is_the_dense_grid_maximum(kw):
    T, bound = design_ns_coefficients(**kw, return_bound=True)
    assert T.shape == (kw["steps"], 3) and T.dtype == np.float64
    lo, hi = kw["sigma_min"], kw.get("sigma_max", 1.0)
    x = np.concatenate([np.geomspace(lo, hi, 500001), np.linspace(lo, hi, 500001)])
    grid = float(np.abs(_compose(T, x) - 1).max())
    assert grid <= bound + 4e-16
    assert grid >= bound * (1 - 1e-6) - 4e-16
    if hi == 1.0 and bound > 1e-12:
        assert ns_worst_error(T, lo=lo) == pytest.approx(bound, rel=1e-9)


def _normalized_spectrum(sigma_min, n):
    """n singular values in [sigma_min, 1] with sum of squares 1, sigma_min among them."""
    s = np.concatenate([[sigma_min], np.linspace(0.05, 0.45, n - 2)])
    return np.concatenate([s, [np.sqrt(1 - (s ** 2).sum())]])


@pytest.mark.parametrize("degree,steps,sigma_min", [(5, 5, 1e-3), (5, 8, 1e-3), (5, 4, 0.02), (3, 12, 1e-3),
                                                    (3, 5, 0.05)])
@pytest.mark.parametrize("shape", [(6, 9), (9, 6)])
def test_newton_schulz_orthogonalizes_to_the_bound(degree, steps, sigma_min, shape, rng):
    T, bound = design_ns_coefficients(steps, sigma_min, degree=degree, return_bound=True)
    k = min(shape)
    s = _normalized_spectrum(sigma_min, k)
    U = np.linalg.qr(rng.standard_normal((shape[0], k)))[0]
    V = np.linalg.qr(rng.standard_normal((shape[1], k)))[0]
    A = 3.0 * (U * s) @ V.T                                  # ‖A‖_F = 3: normalized singular values are s
    Q = newton_schulz(A, steps=None, coefficients=T, eps=0.0)
    err = np.linalg.norm(Q - scipy.linalg.polar(A)[0], 2)
    assert err <= bound + 1e-13
    assert err >= float(np.abs(_compose(T, s) - 1).max()) - 1e-13      # it is the spectral map
    Q32 = newton_schulz(A.astype(np.float32), steps=None, coefficients=T, eps=0.0)
    assert Q32.dtype == np.float32
    assert np.linalg.norm(Q32 - scipy.linalg.polar(A)[0], 2) <= bound + 1e-4


def test_safety_divides_all_rows_but_the_last():
    raw = design_ns_coefficients(6, 1e-3, safety=1.0)
    for s in (1.01, 1.1):
        T = design_ns_coefficients(6, 1e-3, safety=s)
        np.testing.assert_allclose(T[:-1], raw[:-1] / s ** np.array([1, 3, 5]), rtol=1e-15)
        np.testing.assert_array_equal(T[-1], raw[-1])
    # degree 3 defaults: no safety, no cushion (the cubic reaches float64 accuracy)
    T, bound = design_ns_coefficients(12, 1e-3, degree=3, return_bound=True)
    np.testing.assert_array_equal(T, design_ns_coefficients(12, 1e-3, degree=3, safety=1.0, cushion=0.0))
    assert np.all(T[:, 2] == 0) and bound < 1e-15


def test_long_schedules_converge_and_stay():
    T, bound = design_ns_coefficients(40, 1e-3, return_bound=True)
    assert bound < 1e-15
    np.testing.assert_allclose(T[-1], (1.875, -1.25, 0.375), rtol=1e-15)
    np.testing.assert_allclose(T[10:-1], np.tile(np.array([1.875, -1.25, 0.375]) / 1.01 ** np.array([1, 3, 5]),
                                                  (29, 1)), rtol=1e-15)
    # a cushion lifts any tiny sigma_min; the composed map still reaches float64 accuracy
    for sigma_min, steps in ((1e-12, 60), (1e-300, 800)):
        assert design_ns_coefficients(steps, sigma_min, return_bound=True)[1] < 1e-15
        assert design_ns_coefficients(steps, sigma_min, degree=3, cushion=1e-3, return_bound=True)[1] < 1e-15


# ---------------------------------------------------------------------------------------------------------
# Bad input: the function and the argument named.

@pytest.mark.parametrize("kw,exc,match", [
    (dict(steps=0), ValueError, "steps must be an int >= 1"),
    (dict(steps=MAX_ITERATIONS + 1), ValueError, "steps must be an int"),
    (dict(steps=2.5), TypeError, "steps must be an int"),
    (dict(steps=True), TypeError, "steps must be an int"),
    (dict(sigma_min=0.0), ValueError, "sigma_min must be"),
    (dict(sigma_min=-1e-3), ValueError, "sigma_min must be"),
    (dict(sigma_min=float("nan")), ValueError, "sigma_min must be"),
    (dict(sigma_min=1e-320), ValueError, "sigma_min must be"),
    (dict(sigma_min="1e-3"), TypeError, "sigma_min must be a real number"),
    (dict(sigma_min=1.0), ValueError, "sigma_min must be < sigma_max"),
    (dict(sigma_min=0.5, sigma_max=0.4), ValueError, "sigma_min must be < sigma_max"),
    (dict(sigma_max=1.5), ValueError, "sigma_max must be"),
    (dict(sigma_max=0.0), ValueError, "sigma_max must be"),
    (dict(sigma_max=float("inf")), ValueError, "sigma_max must be"),
    (dict(degree=4), ValueError, "degree must be one of 3, 5"),
    (dict(degree=7), ValueError, "degree must be one of 3, 5"),
    (dict(degree=5.0), TypeError, "degree must be an int"),
    (dict(degree=True), TypeError, "degree must be an int"),
    (dict(safety=0.99), ValueError, "safety must be"),
    (dict(safety=float("nan")), ValueError, "safety must be"),
    (dict(cushion=1.0), ValueError, "cushion must be"),
    (dict(cushion=-0.1), ValueError, "cushion must be"),
    (dict(return_bound=1), TypeError, "return_bound must be True or False"),
    (dict(sigma_min=1e-30, degree=3), ValueError, r"sigma_min / sigma_max must be >= 1e-10 \(or cushion"),
    (dict(sigma_min=1e-30, cushion=0.0), ValueError, r"sigma_min / sigma_max must be >= 1e-10"),
    (dict(sigma_min=1e-72, sigma_max=1e-70), NonFiniteError, "the first row overflows float64"),
])
def test_bad_input(kw, exc, match):
    args = dict(steps=5, sigma_min=1e-3)
    args.update(kw)
    with pytest.raises(exc, match="^design_ns_coefficients: " + match):
        design_ns_coefficients(**args)


def test_numpy_scalars_are_accepted():
    np.testing.assert_array_equal(design_ns_coefficients(np.int64(5), np.float64(1e-3), degree=np.int64(5)),
                                  design_ns_coefficients(5, 1e-3))
