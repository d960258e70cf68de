"""The failure model of the optimizers (the README's "Failure model"): what ``step()`` accepts, hyper-parameter ranges, ``params``,
``load_state_dict``, and "a step that raises changes nothing".

Most tests run over every optimizer of ``orthoref.optim.__all__`` through one table of constructor arguments
(``CTORS``): an optimizer added without an entry, or without the validation, fails here.
"""
import copy
import math

import numpy as np
import pytest

import orthoref.optim as optim
from orthoref._checks import MAX_ITERATIONS, NonFiniteError
from orthoref.nn.module import Parameter

#: Constructor arguments of every optimizer (the parameters are a Stiefel-feasible (6, 4) matrix and a (4,)
#: vector).
CTORS = {
    "SGD": dict(lr=0.1, momentum=0.9),
    "Adam": dict(lr=1e-2),
    "AdamW": dict(lr=1e-2),
    "Muon": dict(lr=0.02),
    "RiemannianSGD": dict(lr=0.1, momentum=0.9),
    "RiemannianAdam": dict(lr=1e-2),
    "CayleySGD": dict(lr=0.1),
    "CayleyAdam": dict(lr=0.1),
    "OGD": dict(lr=0.1),
}
NAMES = [n for n in optim.__all__ if n != "Optimizer"]
#: Optimizers that update in place and check the result afterwards (an overflow is reported after the write).
IN_PLACE = {"SGD", "Adam", "AdamW"}


def _params(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal((6, 4)))[0]            # orthonormal columns: on the manifold
    return [Parameter(Q.astype(dtype)), Parameter(rng.standard_normal(4).astype(dtype))]


def _param_with(data):
    """A Parameter whose data is ``data`` (set after construction: Parameter itself may refuse it)."""
    p = Parameter(np.zeros(3))
    p.data = data
    return p


def _grads(params, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in params]


def _make(name, params=None, dtype=np.float64, **over):
    params = _params(dtype) if params is None else params
    return params, getattr(optim, name)(params, **{**CTORS[name], **over})


def _set(params, grads):
    for p, g in zip(params, grads):
        p.grad = None if g is None else g.copy()


def _snapshot(params, opt):
    return [p.data.copy() for p in params], copy.deepcopy(opt.state_dict()), \
        copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups])


def _assert_same(before, params, opt):
    data, sd, groups = before
    for a, p in zip(data, params):
        np.testing.assert_array_equal(a, p.data)
    now = opt.state_dict()
    assert set(now["state"]) == set(sd["state"])
    for i, st in sd["state"].items():
        assert set(now["state"][i]) == set(st)
        for k, v in st.items():
            np.testing.assert_array_equal(now["state"][i][k], v)
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == groups


def _trained(name, dtype=np.float64, steps=2, **over):
    params, opt = _make(name, dtype=dtype, **over)
    for s in range(steps):
        _set(params, _grads(params, seed=10 + s))
        opt.step()
    return params, opt


def test_the_table_covers_every_optimizer():
    assert set(CTORS) == set(NAMES)


# --------------------------------------------------------------------------------------------------------
# step(): what it receives

BAD_GRADS = [
    # (what, grad for the (6, 4) parameter, exception, words in the message)
    ("broadcastable (1, 1)", lambda W: np.ones((1, 1)), ValueError, r"must have shape \(6, 4\), got \(1, 1\)"),
    ("transposed", lambda W: np.ones((4, 6)), ValueError, r"shape \(6, 4\)"),
    ("scalar", lambda W: np.float64(1.0), TypeError, "float32 or float64 array"),
    ("list", lambda W: np.ones((6, 4)).tolist(), TypeError, "float32 or float64 array, got list"),
    ("complex", lambda W: np.ones((6, 4), dtype=np.complex128), TypeError, "complex128"),
    ("int", lambda W: np.ones((6, 4), dtype=np.int64), TypeError, "int64"),
    ("float16", lambda W: np.ones((6, 4), dtype=np.float16), TypeError, "float16"),
    ("float32 for float64", lambda W: np.ones((6, 4), dtype=np.float32), TypeError, "dtype float64"),
    ("NaN", lambda W: np.full((6, 4), np.nan), NonFiniteError, "must be finite"),
    ("Inf", lambda W: np.where(np.eye(6, 4) > 0, np.inf, 1.0), NonFiniteError, "must be finite"),
]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("what,make,exc,words", BAD_GRADS, ids=[b[0] for b in BAD_GRADS])
def test_bad_grad_raises_and_changes_nothing(name, what, make, exc, words):
    params, opt = _trained(name)
    before = _snapshot(params, opt)
    good = _grads(params, seed=20)
    # the bad gradient is on the first parameter; the second one has a good gradient (it must not move)
    params[0].grad = make(params[0])
    params[1].grad = good[1].copy()
    with pytest.raises(exc, match=words) as info:
        opt.step()
    msg = str(info.value)
    assert msg.startswith(name) and "params[0].grad" in msg, msg
    _assert_same(before, params, opt)
    # a caught error loses nothing: the next good step is the one a run without the error takes
    ref_params, ref = _trained(name)
    for ps in (params, ref_params):
        _set(ps, good)
    opt.step()
    ref.step()
    for p, q in zip(params, ref_params):
        np.testing.assert_array_equal(p.data, q.data)


@pytest.mark.parametrize("name", NAMES)
def test_nan_grad_on_a_later_parameter_changes_no_earlier_one(name):
    params, opt = _trained(name)
    before = _snapshot(params, opt)
    good = _grads(params, seed=30)
    _set(params, [good[0], np.full(4, np.nan)])
    with pytest.raises(NonFiniteError, match=r"params\[1\]\.grad must be finite"):
        opt.step()
    _assert_same(before, params, opt)


def test_exact_reproducer_broadcast_grad():
    p = Parameter(np.zeros((6, 4)))
    p.grad = np.ones((1, 1))
    with pytest.raises(ValueError, match=r"Adam: params\[0\]\.grad must have shape \(6, 4\), got \(1, 1\)"):
        optim.Adam([p]).step()
    np.testing.assert_array_equal(p.data, 0.0)


def test_named_parameter_is_named():
    p = Parameter(np.zeros((6, 4)), name="fc1.weight")
    p.grad = np.full((6, 4), np.nan)
    with pytest.raises(NonFiniteError, match=r"SGD: fc1\.weight\.grad must be finite"):
        optim.SGD([p], lr=0.1).step()


def test_groups_are_named_by_place():
    a, b = _params()
    opt = optim.Adam([{"params": [a]}, {"params": [b], "lr": 0.1}])
    b.grad = np.ones(3)
    with pytest.raises(ValueError, match=r"Adam: param_groups\[1\]\['params'\]\[0\]\.grad must have shape \(4,\)"):
        opt.step()


@pytest.mark.parametrize("name", NAMES)
def test_read_only_parameter(name):
    params, opt = _trained(name)
    before = _snapshot(params, opt)
    _set(params, _grads(params, seed=40))
    params[1].data.flags.writeable = False
    with pytest.raises(ValueError, match=rf"{name}: params\[1\] is read-only"):
        opt.step()
    params[1].data.flags.writeable = True
    _assert_same(before, params, opt)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_data_replaced_by_a_bad_array(name):
    params, opt = _make(name)
    params[1].data = params[1].data.astype(np.float16)
    _set(params, _grads(params))
    params[1].grad = np.ones(4, dtype=np.float16)
    with pytest.raises(TypeError, match=rf"{name}: params\[1\].*float16"):
        opt.step()


@pytest.mark.parametrize("name", NAMES)
def test_overflowing_update_raises_and_changes_nothing(name):
    # float32 parameters, finite gradients, lr = 1e300: the step overflows float32
    params, opt = _trained(name, dtype=np.float32)
    for g in opt.param_groups:
        g["lr"] = 1e300
        if name == "Muon":
            g["adam_lr"] = 1e300
    before = _snapshot(params, opt)
    _set(params, _grads(params, seed=50))
    with pytest.raises(NonFiniteError) as info:
        opt.step()
    msg = str(info.value)
    assert msg.startswith(name) and "params[" in msg and "overflows float32" in msg, msg
    assert "smaller learning rate" in msg and "lr=1e+300" in msg, msg
    if name in IN_PLACE:        # documented: detected after the in-place write, and the message says so
        assert "has been updated" in msg or "have been updated" in msg, msg
        return
    assert "Nothing was changed" in msg, msg
    _assert_same(before, params, opt)
    for p in params:
        assert np.isfinite(p.data).all()


def test_overflow_lr_1e300_float64_sgd():
    p = Parameter(np.ones((6, 4)))
    p.grad = np.full((6, 4), 1e10)
    opt = optim.SGD([p], lr=1e300)
    with pytest.raises(NonFiniteError, match=r"SGD: the update of params\[0\] overflows float64.*lr=1e\+300"):
        opt.step()


def test_overflow_in_a_staged_optimizer_changes_nothing():
    W = Parameter(np.ones((6, 4)))
    W.grad = np.full((6, 4), 1e10)
    opt = optim.RiemannianSGD([W], lr=1e300, stiefel=False)
    with pytest.raises(NonFiniteError, match=r"RiemannianSGD: the update of params\[0\] overflows float64"):
        opt.step()
    np.testing.assert_array_equal(W.data, 1.0)
    assert opt.state == {}


def test_adam_second_moment_overflow_is_not_silent():
    # g*g overflows float32 (|g| > 1.8e19): PyTorch's v becomes Inf and the entry stops moving for good
    p = Parameter(np.ones(3, dtype=np.float32))
    p.grad = np.array([1e20, 1.0, 1.0], dtype=np.float32)
    with pytest.raises(NonFiniteError, match=r"Adam: the update of params\[0\] overflows float32"):
        optim.Adam([p]).step()
    q = Parameter(np.ones(3, dtype=np.float32))                 # Muon's auxiliary Adam: staged, unchanged
    q.grad = p.grad
    with pytest.raises(NonFiniteError, match=r"Muon: the update of params\[0\] overflows float32"):
        optim.Muon([q]).step()
    np.testing.assert_array_equal(q.data, 1.0)


def test_adam_eps_zero_zero_over_zero():
    p = Parameter(np.ones(2))
    p.grad = np.array([0.0, 1.0])
    opt = optim.Adam([p], eps=0.0)
    with pytest.raises(NonFiniteError, match="eps=0 divides 0 by 0"):
        opt.step()


def test_nan_parameter_is_named():
    with pytest.raises(NonFiniteError, match=r"Parameter: data must be finite"):
        Parameter(np.array([np.nan, 1.0]))
    p = Parameter(np.array([0.5, 1.0]))
    p.data[0] = np.nan                      # corrupted in place after construction
    p.grad = np.ones(2)
    with pytest.raises(NonFiniteError, match=r"Muon: params\[0\] \(the parameter's data\) must be finite"):
        optim.Muon([p]).step()              # staged optimizers check the value they replace


@pytest.mark.parametrize("name", NAMES)
def test_closure_must_be_callable(name):
    params, opt = _make(name)
    with pytest.raises(TypeError, match=rf"{name}.step: closure must be callable"):
        opt.step(closure=3)


@pytest.mark.parametrize("name", NAMES)
def test_zero_grad_flag(name):
    params, opt = _make(name)
    with pytest.raises(TypeError, match=rf"{name}.zero_grad: set_to_none"):
        opt.zero_grad(set_to_none="yes")


@pytest.mark.parametrize("name", NAMES)
def test_float32_steps_stay_float32_and_finite(name):
    params, opt = _trained(name, dtype=np.float32, steps=3)
    for p in params:
        assert p.data.dtype == np.float32 and np.isfinite(p.data).all()


# --------------------------------------------------------------------------------------------------------
# params

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("make,exc,words", [
    (lambda: [], ValueError, "empty"),
    (lambda: [np.zeros(3)], TypeError, r"params\[0\] must be a Parameter, got ndarray"),
    (lambda: [Parameter(np.zeros(3)), "w"], TypeError, r"params\[1\] must be a Parameter, got str"),
    (lambda: (lambda p: [p, p])(Parameter(np.zeros(3))), ValueError, "twice"),
    (lambda: (lambda p: [{"params": [p]}, {"params": [p]}])(Parameter(np.zeros(3))), ValueError,
     "more than one"),
    (lambda: [_param_with(np.zeros(3, dtype=np.int64))], TypeError, r"params\[0\].*int64"),
    (lambda: [_param_with(np.zeros(3, dtype=np.float16))], TypeError, r"params\[0\].*float16"),
    (lambda: [_param_with(np.zeros(3, dtype=np.complex128))], TypeError, r"params\[0\].*complex128"),
    (lambda: [_param_with([0.0, 1.0])], TypeError, r"params\[0\].*list"),
    (lambda: Parameter(np.zeros(3)), TypeError, "iterable"),
    (lambda: 3, TypeError, "iterable"),
    (lambda: [{"params": 3}], TypeError, "params"),
    (lambda: [{"params": []}], ValueError, "empty"),
    (lambda: [{"lr": 0.1}], ValueError, "'params'"),
])
def test_bad_params(name, make, exc, words):
    with pytest.raises(exc, match=words) as info:
        getattr(optim, name)(make(), **CTORS[name])
    assert str(info.value).startswith(name), str(info.value)


# --------------------------------------------------------------------------------------------------------
# hyper-parameters

def test_exact_reproducers_hyper_parameters():
    P = [Parameter(np.zeros(2))]
    with pytest.raises(ValueError, match=r"Adam: lr must be a finite number >= 0, got inf"):
        optim.Adam(P, lr=math.inf)
    with pytest.raises(ValueError, match=r"Adam: weight_decay must be a finite number >= 0, got inf"):
        optim.Adam(P, weight_decay=math.inf)
    with pytest.raises(ValueError, match=r"SGD: dampening must be a finite number >= 0 and <= 1, got -1.0"):
        optim.SGD(P, lr=0.1, dampening=-1)


#: Per optimizer: (keyword, bad value, exception, words).
BAD_HYPER = {
    "SGD": [("momentum", -0.1, ValueError, "momentum"), ("momentum", math.inf, ValueError, "momentum"),
            ("dampening", 1.5, ValueError, "dampening"), ("dampening", math.nan, ValueError, "dampening"),
            ("weight_decay", -1.0, ValueError, "weight_decay"), ("nesterov", 1, TypeError, "nesterov"),
            ("maximize", "no", TypeError, "maximize")],
    "Adam": [("betas", (1.0, 0.9), ValueError, r"betas\[0\]"), ("betas", (0.9, math.nan), ValueError,
             r"betas\[1\]"), ("betas", 0.9, ValueError, "betas"), ("eps", -1e-8, ValueError, "eps"),
             ("eps", math.inf, ValueError, "eps"), ("weight_decay", math.inf, ValueError, "weight_decay"),
             ("amsgrad", None, TypeError, "amsgrad"), ("decoupled_weight_decay", 0, TypeError, "decoupled")],
    "AdamW": [("betas", (0.9, 1.0), ValueError, r"betas\[1\]"), ("eps", math.nan, ValueError, "eps"),
              ("weight_decay", math.inf, ValueError, "weight_decay")],
    "Muon": [("momentum", 1.0, ValueError, "momentum"), ("ns_steps", MAX_ITERATIONS + 1, ValueError,
             "ns_steps must be an int >= 1 and <= 10000"), ("ns_steps", 10 ** 30, ValueError, "ns_steps"),
             ("ns_steps", 5.0, TypeError, "ns_steps"), ("coefficients", "bogus", ValueError, "coefficients"),
             ("coefficients", [[1.0, math.nan, 0.0]], ValueError, "coefficients"),
             ("coefficients", [[1j, 0, 0]], ValueError, "coefficients"),
             ("scale", None, ValueError, "scale"), ("adam_lr", math.inf, ValueError, "adam_lr"),
             ("adam_betas", (0.9, -0.1), ValueError, r"adam_betas\[1\]"),
             ("adam_eps", math.inf, ValueError, "adam_eps"),
             ("adam_weight_decay", math.inf, ValueError, "adam_weight_decay"),
             ("weight_decay", math.nan, ValueError, "weight_decay"), ("nesterov", "yes", TypeError, "nesterov"),
             ("normalize", "add", ValueError, "normalize")],
    "RiemannianSGD": [("momentum", math.inf, ValueError, "momentum"), ("metric", "frobenius", ValueError,
                      "metric"), ("retraction", "svd", ValueError, "retraction"),
                      ("nesterov", 1, TypeError, "nesterov"), ("stiefel", "yes", TypeError, "stiefel"),
                      ("weight_decay", math.inf, ValueError, "weight_decay")],
    "RiemannianAdam": [("betas", (0.9, 1.0), ValueError, r"betas\[1\]"), ("eps", math.inf, ValueError, "eps"),
                       ("retraction", 3, ValueError, "retraction"), ("metric", None, ValueError, "metric"),
                       ("second_moment", "diag", ValueError, "second_moment")],
    "CayleySGD": [("iterations", MAX_ITERATIONS + 1, ValueError, "iterations"),
                  ("iterations", -1, ValueError, "iterations"), ("iterations", 2.0, TypeError, "iterations"),
                  ("epsilon", 0.0, ValueError, "epsilon"), ("epsilon", math.inf, ValueError, "epsilon"),
                  ("momentum", -1.0, ValueError, "momentum"), ("restore_tol", math.nan, ValueError,
                  "restore_tol"), ("weight_decay", math.inf, ValueError, "weight_decay")],
    "CayleyAdam": [("iterations", 10 ** 30, ValueError, "iterations"), ("betas", (0.9, 1.0), ValueError,
                   r"betas\[1\]"), ("epsilon", -1.0, ValueError, "epsilon"),
                   ("restore_tol", "x", TypeError, "restore_tol")],
    "OGD": [("memory", -1, ValueError, "memory"), ("memory", 2.5, TypeError, "memory"),
            ("memory", True, TypeError, "memory"),
            ("drop_tol", math.nan, ValueError, "drop_tol"), ("drop_tol", 1.0, ValueError, "drop_tol"),
            ("drop_tol", -1.0, ValueError, "drop_tol")],
}
CASES = [(n, k, v, e, w) for n in NAMES for k, v, e, w in
         [("lr", math.inf, ValueError, "lr"), ("lr", math.nan, ValueError, "lr"), ("lr", -1.0, ValueError, "lr"),
          ("lr", "0.1", TypeError, "lr"), ("lr", True, TypeError, "lr"), ("lr", np.ones(1), TypeError, "lr")]
         + BAD_HYPER[n]]


def test_every_optimizer_has_bad_hyper_parameter_cases():
    assert set(BAD_HYPER) == set(NAMES)


@pytest.mark.parametrize("name,key,value,exc,words", CASES)
def test_bad_hyper_parameter(name, key, value, exc, words):
    cls = getattr(optim, name)
    with pytest.raises(exc, match=words) as info:
        cls(_params(), **{**CTORS[name], key: value})
    assert str(info.value).startswith(name), str(info.value)
    if name == "OGD" and key in ("memory", "drop_tol"):
        return                                     # optimizer-wide, not per group
    # the same value in a parameter group given to the constructor
    with pytest.raises(exc, match=words):
        cls([{"params": _params(), key: value}], **CTORS[name])
    # and in add_param_group: refused, nothing added
    ps = _params()
    opt = cls(ps[:1], **CTORS[name])
    with pytest.raises(exc, match=words):
        opt.add_param_group({"params": ps[1:], key: value})
    assert len(opt.param_groups) == 1


def test_nesterov_preconditions():
    P = [Parameter(np.zeros(2))]
    with pytest.raises(ValueError, match="SGD: Nesterov momentum requires a momentum and zero dampening"):
        optim.SGD(P, lr=0.1, momentum=0.9, dampening=0.5, nesterov=True)
    with pytest.raises(ValueError, match="RiemannianSGD: Nesterov momentum requires a momentum > 0"):
        optim.RiemannianSGD(P, lr=0.1, nesterov=True)


def test_valid_edge_values_are_accepted():
    P = [Parameter(np.zeros(2))]
    optim.SGD(P, lr=0.0, momentum=0.0, dampening=1.0)
    optim.Adam(P, lr=0.0, betas=(0.0, 0.0), eps=0.0)
    optim.Muon(P, ns_steps=MAX_ITERATIONS, coefficients="svd")
    optim.CayleySGD(P, lr=0.1, iterations=0)
    optim.OGD(P, lr=0.1, memory=0, drop_tol=0.0)


# --------------------------------------------------------------------------------------------------------
# load_state_dict

def _corruptions(name):
    """(what, corrupt(sd), exception, words) for a state dict of a trained ``name``."""
    def state_key(sd):
        i = min(sd["state"])
        k = next(k for k, v in sd["state"][i].items() if isinstance(v, np.ndarray))
        return i, k

    def put(fn):
        def corrupt(sd):
            i, k = state_key(sd)
            sd["state"][i][k] = fn(sd["state"][i][k])
            return sd
        return corrupt

    def group(key, value):
        def corrupt(sd):
            sd["param_groups"][0][key] = value
            return sd
        return corrupt

    def top(key, value):
        def corrupt(sd):
            sd[key] = value
            return sd
        return corrupt

    def step(value):
        def corrupt(sd):
            i = next(i for i, st in sd["state"].items() if "step" in st)
            sd["state"][i]["step"] = value
            return sd
        return corrupt

    arrays = [] if name == "OGD" else [      # OGD keeps no per-parameter state
        ("complex state", put(lambda a: a.astype(np.complex128)), TypeError, "complex128"),
        ("bool state", put(lambda a: a > 0), TypeError, "bool"),
        ("list state", put(lambda a: a.tolist()), TypeError, "list"),
        ("NaN state", put(lambda a: np.full_like(a, np.nan)), NonFiniteError, "must be finite"),
        ("Inf state", put(lambda a: np.full_like(a, np.inf)), NonFiniteError, "must be finite"),
        ("wrong shape", put(lambda a: a[..., :1]), ValueError, "has shape"),
    ]
    out = arrays + [
        ("lr=inf", group("lr", math.inf), ValueError, r"param_groups\[0\].*lr"),
        ("lr=str", group("lr", "x"), TypeError, "lr"),
        ("unknown key", group("bogus", 1), ValueError, "bogus"),
        ("params not ints", group("params", ["a", "b"]), TypeError, r"param_groups\[0\]\['params'\]\[0\]"),
        ("param_groups a dict", top("param_groups", {}), TypeError, "'param_groups' must be a list"),
        ("param_groups an int", top("param_groups", 3), TypeError, "param_groups"),
        ("state a list", top("state", [1]), TypeError, "'state'"),
        ("unknown index", lambda sd: {**sd, "state": {**sd["state"], 99: {}}}, ValueError, "index 99"),
        ("extra top key", top("extra", 1), ValueError, "keys"),
    ]
    if name not in ("SGD", "RiemannianSGD", "CayleySGD", "OGD"):
        out += [("step -1", step(-1), ValueError, "step"), ("step str", step("3"), ValueError, "step"),
                ("step 2.5", step(2.5), ValueError, "step")]
    out.append(("group not a dict", lambda sd: {**sd, "param_groups": [3]}, TypeError, r"param_groups\[0\]"))
    return out


LOAD_CASES = [(n, *c) for n in NAMES for c in _corruptions(n)]


@pytest.mark.parametrize("name,what,corrupt,exc,words", LOAD_CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in LOAD_CASES])
def test_load_state_dict_refuses_and_changes_nothing(name, what, corrupt, exc, words):
    _, trained = _trained(name)
    bad = corrupt(copy.deepcopy(trained.state_dict()))
    params, opt = _trained(name, steps=1)
    for g in opt.param_groups:
        g["lr"] = 0.5 * g["lr"]
    before = _snapshot(params, opt)
    basis = opt.basis.copy() if name == "OGD" else None
    with pytest.raises(exc, match=words) as info:
        opt.load_state_dict(bad)
    assert str(info.value).startswith(f"{name}.load_state_dict"), str(info.value)
    _assert_same(before, params, opt)
    if basis is not None:
        np.testing.assert_array_equal(opt.basis, basis)


@pytest.mark.parametrize("name", NAMES)
def test_load_state_dict_round_trip_still_works(name):
    params, trained = _trained(name)
    sd = trained.state_dict()
    # as a checkpoint gives it back: 0-d integer arrays for the step, lists for tuples
    for st in sd["state"].values():
        if "step" in st:
            st["step"] = np.array(st["step"])
    params2, opt = _trained(name, steps=1)
    opt.load_state_dict(sd)
    good = _grads(params, seed=60)
    for p, q in zip(params2, params):
        p.data[...] = q.data
    for ps, o in ((params, trained), (params2, opt)):
        _set(ps, good)
        o.step()
    for p, q in zip(params, params2):
        np.testing.assert_array_equal(p.data, q.data)


def test_ogd_basis_checks():
    params, opt = _trained("OGD")
    opt.store_directions([np.ones(28)])
    sd = opt.state_dict()
    fresh = _make("OGD")[1]
    for basis, exc, words in [
        (np.ones((1, 28)), ValueError, "orthonormal rows"),
        (sd["basis"].astype(np.complex128), TypeError, "basis"),
        (np.full((1, 28), np.nan), NonFiniteError, "basis must be finite"),
        (np.ones((1, 27)), ValueError, r"\(k, 28\)"),
        (sd["basis"].tolist(), TypeError, "basis"),
    ]:
        with pytest.raises(exc, match=words):
            fresh.load_state_dict({**sd, "basis": basis})
        assert fresh.basis.shape == (0, 28)
    fresh.load_state_dict(sd)
    np.testing.assert_array_equal(fresh.basis, opt.basis)


def test_ogd_store_directions_checks():
    params, opt = _make("OGD")
    opt.store_directions([np.eye(28)[0]])
    B = opt.basis.copy()
    for dirs, exc, words in [
        ([np.eye(28)[1], np.full(28, np.nan)], NonFiniteError, r"directions\[1\] must be finite"),
        ([np.ones(28, dtype=np.complex128)], TypeError, r"directions\[0\]"),
        ([np.ones(28, dtype=np.int64)], TypeError, r"directions\[0\]"),
        ([[np.ones((6, 4)), np.ones(4).tolist()]], TypeError, r"directions\[0\]\[1\]"),
        ([[np.ones((6, 4)), np.ones(3)]], ValueError, r"directions\[0\]\[1\] has shape"),
        ([np.ones(27)], ValueError, "length 28"),
        ([3.0], TypeError, r"directions\[0\]"),
        (5, TypeError, "directions"),
        ([np.full(28, 1e200)], NonFiniteError, "rescale"),
    ]:
        with pytest.raises(exc, match=words):
            opt.store_directions(dirs)
        np.testing.assert_array_equal(opt.basis, B)           # nothing added, not even directions[0]


def test_ogd_flat_grad_checks_shapes():
    params, opt = _make("OGD")
    params[0].grad = np.ones((1, 1))
    with pytest.raises(ValueError, match=r"OGD: params\[0\]\.grad must have shape \(6, 4\)"):
        opt.flat_grad()


# --------------------------------------------------------------------------------------------------------
# step() need not re-read a gradient one of orthoref's layers proved finite -- unless it may have changed

def _layer_grads(kind, dtype=np.float64, seed=0):
    """A layer after one forward/backward: its parameters hold gradients its backward proved finite."""
    from orthoref import nn
    rng = np.random.default_rng(seed)
    if kind == "Linear":
        layer, x = nn.Linear(5, 3, rng=rng, dtype=dtype), rng.standard_normal((4, 5)).astype(dtype)
    else:
        layer, x = nn.Conv2d(2, 3, 3, padding=1, rng=rng, dtype=dtype), rng.standard_normal((2, 2, 5, 5)).astype(dtype)
    y = layer.forward(x)
    layer.backward(np.ones_like(y))
    return layer


def _count_reads(monkeypatch):
    """How often ``step()`` reads a gradient's finiteness (``all_finite`` in the optimizer module)."""
    import orthoref.optim.optimizer as O
    calls = []
    real = O.all_finite
    monkeypatch.setattr(O, "all_finite", lambda xp, a: calls.append(a) or real(xp, a))
    return calls


@pytest.mark.parametrize("kind", ["Linear", "Conv2d"])
def test_a_gradient_from_a_layer_is_not_read_again_but_one_touched_since_is(kind, monkeypatch):
    calls = _count_reads(monkeypatch)
    layer = _layer_grads(kind)
    opt = optim.Adam(layer.parameters(), lr=1e-2)
    opt.step()
    assert calls == []                              # proved finite by the layer's backward, untouched since
    layer2 = _layer_grads(kind, seed=1)             # the same again, then one .grad is read by the user:
    opt = optim.Adam(layer2.parameters(), lr=1e-2)
    layer2.weight.grad                              # reading .grad may change it: the step reads it
    opt.step()
    assert len(calls) == 1 and calls[0] is layer2.weight._grad


MUTATIONS = [
    ("in place through .grad", lambda p: p.grad.__setitem__((0,) * p.grad.ndim, np.nan)),
    ("assigned", lambda p: setattr(p, "grad", np.full(p.shape, np.nan))),
    ("through a shallow copy", lambda p: copy.copy(p).grad.__setitem__((0,) * p.data.ndim, np.inf)),
]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["Linear", "Conv2d"])
@pytest.mark.parametrize("how,mutate", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_a_layer_gradient_changed_to_nan_after_backward_is_caught(name, kind, how, mutate):
    layer = _layer_grads(kind)
    params = layer.parameters()
    if name in ("RiemannianSGD", "RiemannianAdam", "CayleySGD", "CayleyAdam"):
        params = [params[1]]                        # a bias vector: a (n, 1) point of the sphere is not needed
    opt = getattr(optim, name)(params, **CTORS[name])
    before = [p.data.copy() for p in params]
    mutate(params[-1])
    with pytest.raises(NonFiniteError, match=r"\.grad must be finite"):
        opt.step()
    for a, p in zip(before, params):
        np.testing.assert_array_equal(a, p.data)


@pytest.mark.parametrize("kind", ["Linear", "Conv2d"])
def test_a_reference_kept_across_a_second_backward_is_still_read(kind):
    layer = _layer_grads(kind)
    kept = layer.weight.grad                        # the user keeps the array ...
    x = layer._cache[0] if kind == "Linear" else layer._cache.x
    layer.backward(np.ones_like(layer.forward(x)))  # ... the next backward adds into it ...
    kept[...] = np.nan                              # ... and changes it later
    opt = optim.SGD(layer.parameters(), lr=0.1)
    before = layer.weight.data.copy()
    with pytest.raises(NonFiniteError, match=r"params\[0\]\.grad must be finite"):
        opt.step()
    np.testing.assert_array_equal(before, layer.weight.data)


def test_two_backward_passes_whose_sum_overflows_are_caught_and_change_nothing():
    from orthoref import nn
    layer = nn.Linear(2, 1, rng=0, dtype=np.float32)
    layer.weight.data[...] = 1.0
    x = np.full((1, 2), 1.5e19, np.float32)          # dw = dy x: 2.25e38 each pass, finite; their sum is not
    for _ in range(2):
        y = layer.forward(x)
        layer.backward(np.full_like(y, 1.5e19))
    opt = optim.SGD(layer.parameters(), lr=1e-3)
    before = layer.weight.data.copy()
    with pytest.raises(NonFiniteError, match=r"params\[0\]\.grad must be finite"):
        opt.step()
    np.testing.assert_array_equal(before, layer.weight.data)


def test_accumulated_finite_layer_gradients_stay_unread(monkeypatch):
    calls = _count_reads(monkeypatch)
    from orthoref import nn
    layer = nn.Linear(5, 3, rng=0, dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((4, 5))
    for _ in range(3):                              # gradient accumulation over micro-batches
        layer.backward(np.ones_like(layer.forward(x)))
    optim.SGD(layer.parameters(), lr=0.1).step()
    assert calls == []
