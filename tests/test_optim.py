"""Optimizers: SGD, Adam, AdamW against torch.optim (float64, 1e-12) and against a literal NumPy
transcription of PyTorch's formulas; dtype, in-place updates, untouched gradients, skipped parameters,
parameter groups, state dicts (PyTorch's structure, bit-identical resumption) and argument errors."""
import io
import itertools
import pickle
import tracemalloc

import numpy as np
import pytest

from orthoref.nn.module import Parameter
from orthoref.optim import SGD, Adam, AdamW, Optimizer

SHAPES = [(3, 4), (5,), (2, 3, 2)]
STEPS = 10
RTOL = 1e-12


def _sgd_configs():
    out = []
    for mom, damp, nest, wd, maxi in itertools.product((0.0, 0.9), (0.0, 0.3), (False, True), (0.0, 0.05),
                                                       (False, True)):
        if nest and (mom == 0 or damp != 0):
            continue
        if mom == 0 and damp != 0:
            continue  # dampening only acts through the momentum buffer
        out.append(dict(lr=0.1, momentum=mom, dampening=damp, nesterov=nest, weight_decay=wd, maximize=maxi))
    return out


def _adam_configs(wd_values=(0.0, 0.05)):
    out = []
    for wd, ams, maxi in itertools.product(wd_values, (False, True), (False, True)):
        out.append(dict(lr=0.05, weight_decay=wd, amsgrad=ams, maximize=maxi))
    out.append(dict(lr=0.02, betas=(0.5, 0.8), eps=1e-3, weight_decay=0.1, amsgrad=True))
    out.append(dict(lr=0.02, betas=(0.0, 0.0), eps=0.0))
    return out


CASES = ([("SGD", kw) for kw in _sgd_configs()] + [("Adam", kw) for kw in _adam_configs()]
         + [("AdamW", kw) for kw in _adam_configs((0.0, 0.05, 0.5))])
OURS = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}


def _case_id(case):
    kind, kw = case
    return kind + "-" + ",".join(f"{k}={v}" for k, v in kw.items() if k != "lr")


def _problem(seed, dtype=np.float64, steps=STEPS, skip=True):
    """Initial values and per-step gradients; with ``skip``, parameter 1 has no gradient on step 3 and
    parameter 2 none on steps 0 and 6 (so per-parameter step counts differ)."""
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]
    if skip:
        grads[3][1] = None
        grads[0][2] = grads[6][2] = None
    return init, grads


def _group_spec(kind, kw, groups):
    """Plain list (one group) or two groups: params 0 and 2 with the defaults, param 1 with overrides."""
    if not groups:
        return None
    kind_over = {"lr": kw["lr"] * 0.3, "weight_decay": 0.2}
    if kind == "SGD":
        kind_over["momentum"] = 0.5 if kw.get("momentum") else 0.0
    else:
        kind_over["betas"] = (0.8, 0.95)
    return [[0, 2], ([1], kind_over)]


def _make_groups(params, spec):
    if spec is None:
        return list(params)
    (first, (second, over)) = spec
    return [{"params": [params[i] for i in first]}, dict(params=[params[i] for i in second], **over)]


def _run_ours(kind, kw, init, grads, spec=None):
    ps = [Parameter(a.copy()) for a in init]
    opt = OURS[kind](_make_groups(ps, spec), **kw)
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = None if g is None else g.copy()
        opt.step()
    return ps, opt


def _run_torch(kind, kw, init, grads, spec=None):
    torch = pytest.importorskip("torch")
    tps = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    opt = getattr(torch.optim, kind)(_make_groups(tps, spec), **kw)
    for gs in grads:
        for p, g in zip(tps, gs):
            p.grad = None if g is None else torch.tensor(g.copy())
        opt.step()
    return [p.detach().numpy() for p in tps], opt


# --------------------------------------------------------------------------------------------------------
# A literal NumPy transcription of torch/optim/{sgd,adam}.py (_single_tensor_*), written independently of
# orthoref.optim: it keeps PyTorch's order of operations (denominator sqrt(v)/sqrt(bc2) + eps, step size
# lr/bc1), so that the tests also bite where torch is not installed.

def _reference(kind, kw, init, grads, spec=None):
    defaults = {"SGD": dict(lr=1e-3, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0,
                            maximize=False),
                "Adam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                             maximize=False),
                "AdamW": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                              maximize=False)}[kind]
    params = [a.copy() for a in init]
    hyper = [dict(defaults, **kw) for _ in params]
    if spec is not None:
        for i in spec[1][0]:
            hyper[i].update(spec[1][1])
    state = [dict() for _ in params]
    for gs in grads:
        for i, (p, g) in enumerate(zip(params, gs)):
            if g is None:
                continue
            h, st = hyper[i], state[i]
            g = -g if h["maximize"] else g
            if kind == "SGD":
                if h["weight_decay"] != 0:
                    g = g + h["weight_decay"] * p
                if h["momentum"] != 0:
                    if "buf" not in st:
                        st["buf"] = g.copy()
                    else:
                        st["buf"] = h["momentum"] * st["buf"] + (1 - h["dampening"]) * g
                    g = g + h["momentum"] * st["buf"] if h["nesterov"] else st["buf"]
                p -= h["lr"] * g
                continue
            b1, b2 = h["betas"]
            if not st:
                st.update(step=0, m=np.zeros_like(p), v=np.zeros_like(p), vmax=np.zeros_like(p))
            st["step"] += 1
            if h["weight_decay"] != 0:
                if kind == "AdamW":
                    p *= 1 - h["lr"] * h["weight_decay"]
                else:
                    g = g + h["weight_decay"] * p
            st["m"] = b1 * st["m"] + (1 - b1) * g
            st["v"] = b2 * st["v"] + (1 - b2) * g * g
            bc1, bc2 = 1 - b1 ** st["step"], 1 - b2 ** st["step"]
            if h["amsgrad"]:
                st["vmax"] = np.maximum(st["vmax"], st["v"])
                denom = np.sqrt(st["vmax"]) / np.sqrt(bc2) + h["eps"]
            else:
                denom = np.sqrt(st["v"]) / np.sqrt(bc2) + h["eps"]
            p -= (h["lr"] / bc1) * st["m"] / denom
    return params, state


# --------------------------------------------------------------------------------------------------------
# Conformance

@pytest.mark.torch
@pytest.mark.parametrize("groups", [False, True], ids=["one-group", "two-groups"])
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_matches_torch_float64(case, groups):
    kind, kw = case
    init, grads = _problem(1)
    spec = _group_spec(kind, kw, groups)
    theirs, topt = _run_torch(kind, kw, init, grads, spec)
    ours, opt = _run_ours(kind, kw, init, grads, spec)
    for i, (p, t) in enumerate(zip(ours, theirs)):
        assert p.data.dtype == np.float64
        np.testing.assert_allclose(p.data, t, rtol=RTOL, atol=1e-14, err_msg=f"parameter {i}")
        assert not np.array_equal(p.data, init[i]), "the parameter did not move"
    # the state dict has torch's structure and values
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert sorted(sd["state"]) == sorted(tsd["state"])
    if kind != "SGD" or kw["momentum"]:
        assert sorted(sd["state"]) == [0, 1, 2]
    for i, tst in tsd["state"].items():
        st = sd["state"][i]
        assert set(st) == set(tst), (set(st), set(tst))
        for k, tv in tst.items():
            if k == "step":
                assert isinstance(st[k], int) and st[k] == int(tv.item())
            elif tv is None:
                assert st[k] is None
            else:
                np.testing.assert_allclose(st[k], tv.numpy(), rtol=RTOL, atol=1e-14, err_msg=f"{i}.{k}")
    assert len(sd["param_groups"]) == len(tsd["param_groups"])
    for g, tg in zip(sd["param_groups"], tsd["param_groups"]):
        assert g["params"] == tg["params"]
        for k, v in g.items():
            if k in tg:
                assert (tuple(v) if isinstance(v, (list, tuple)) else v) == \
                       (tuple(tg[k]) if isinstance(tg[k], (list, tuple)) else tg[k]), k


@pytest.mark.parametrize("groups", [False, True], ids=["one-group", "two-groups"])
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_matches_reference_transcription(case, groups):
    kind, kw = case
    init, grads = _problem(2)
    spec = _group_spec(kind, kw, groups)
    expected, ref_state = _reference(kind, kw, init, grads, spec)
    ours, opt = _run_ours(kind, kw, init, grads, spec)
    for i, (p, e) in enumerate(zip(ours, expected)):
        np.testing.assert_allclose(p.data, e, rtol=RTOL, atol=1e-14, err_msg=f"parameter {i}")
    if kind != "SGD":
        for i, p in enumerate(ours):
            assert opt.state[p]["step"] == ref_state[i]["step"] == STEPS - (i == 1) - 2 * (i == 2)
            np.testing.assert_allclose(opt.state[p]["exp_avg"], ref_state[i]["m"], rtol=RTOL, atol=1e-15)
            np.testing.assert_allclose(opt.state[p]["exp_avg_sq"], ref_state[i]["v"], rtol=RTOL, atol=1e-15)


@pytest.mark.torch
@pytest.mark.parametrize("kind,kw", [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
                                     ("Adam", dict(lr=1e-2, weight_decay=0.01, amsgrad=True)),
                                     ("AdamW", dict(lr=1e-2, maximize=True))])
def test_float32_matches_torch_float32(kind, kw):
    init, grads = _problem(3, np.float32)
    theirs, _ = _run_torch(kind, kw, init, grads)
    ours, _ = _run_ours(kind, kw, init, grads)
    for p, t in zip(ours, theirs):
        assert p.data.dtype == np.float32
        np.testing.assert_allclose(p.data, t, rtol=2e-6, atol=2e-6)


# --------------------------------------------------------------------------------------------------------
# dtype, in-place updates, gradients left alone, skipped parameters

ALL_OPTIONS = [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01, maximize=True)),
               ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.5, weight_decay=0.01)),
               ("SGD", dict(lr=0.1)),
               ("Adam", dict(lr=1e-2, weight_decay=0.01, amsgrad=True, maximize=True)),
               ("Adam", dict(lr=1e-2)),
               ("AdamW", dict(lr=1e-2, amsgrad=True, maximize=True))]


@pytest.mark.parametrize("kind,kw", ALL_OPTIONS)
def test_float32_stays_float32_in_place_and_grad_untouched(kind, kw):
    # numpy float64 scalars as hyper-parameters must not promote float32 arithmetic either
    kw = {k: (np.float64(v) if isinstance(v, float) else v) for k, v in kw.items()}
    init, grads = _problem(4, np.float32, steps=4, skip=False)
    ps = [Parameter(a.copy()) for a in init]
    buffers = [p.data for p in ps]
    opt = OURS[kind](ps, **kw)
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = g
        saved = [g.copy() for g in gs]
        opt.step()
        for p, g, s in zip(ps, gs, saved):
            assert p.grad is g
            np.testing.assert_array_equal(p.grad, s)
    for p, b, a in zip(ps, buffers, init):
        assert p.data is b and p.data.dtype == np.float32
        assert not np.array_equal(p.data, a)
    for st in opt.state.values():
        for k, v in st.items():
            if isinstance(v, np.ndarray):
                assert v.dtype == np.float32, k
    assert all(isinstance(v, (int, float, bool, tuple)) for g in opt.param_groups for k, v in g.items()
               if k != "params")


@pytest.mark.parametrize("kind,kw", ALL_OPTIONS)
def test_step_allocates_no_parameter_sized_temporaries(kind, kw):
    rng = np.random.default_rng(5)
    p = Parameter(rng.standard_normal((256, 256)).astype(np.float32))
    p.grad = rng.standard_normal((256, 256)).astype(np.float32)
    opt = OURS[kind]([p], **kw)
    opt.step()  # allocates the state and the scratch buffers
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        opt.step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < p.data.nbytes // 4, f"{peak} bytes allocated during a step (parameter: {p.data.nbytes})"


@pytest.mark.parametrize("kind", ["SGD", "Adam", "AdamW"])
def test_parameters_without_grad_are_skipped(kind):
    rng = np.random.default_rng(6)
    a, b = Parameter(rng.standard_normal(4)), Parameter(rng.standard_normal(3))
    b0 = b.data.copy()
    opt = OURS[kind]([a, b], lr=0.1, **({"momentum": 0.9} if kind == "SGD" else {}))
    a.grad = rng.standard_normal(4)
    opt.step()
    opt.step()
    np.testing.assert_array_equal(b.data, b0)
    assert b not in opt.state and a in opt.state
    assert list(opt.state_dict()["state"]) == [0]


def test_zero_grad():
    a, b = Parameter(np.ones(3)), Parameter(np.ones(2))
    opt = SGD([a, b], lr=0.1)
    a.grad, b.grad = np.full(3, 2.0), None
    g = a.grad
    opt.zero_grad(set_to_none=False)
    assert a.grad is g and not a.grad.any() and b.grad is None
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_closure_is_called_and_returned():
    p = Parameter(np.ones(2))
    p.grad = np.ones(2)
    calls = []
    assert Adam([p]).step(lambda: calls.append(1) or 3.5) == 3.5 and calls == [1]


def test_param_groups_defaults_and_per_group_values():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    opt = Adam([{"params": [a]}, {"params": [b], "lr": 0.5, "betas": (0.5, 0.6)}], lr=0.1, eps=1e-6)
    g0, g1 = opt.param_groups
    assert g0["lr"] == 0.1 and g0["betas"] == (0.9, 0.999) and g0["eps"] == 1e-6 and g0["params"] == [a]
    assert g1["lr"] == 0.5 and g1["betas"] == (0.5, 0.6) and g1["eps"] == 1e-6 and g1["params"] == [b]
    # first Adam step moves every coordinate by lr (m/sqrt(v) = sign(g) after the bias corrections)
    a.grad = np.array([3.0, -2.0])
    b.grad = np.array([-1.0, 4.0])
    opt.step()
    np.testing.assert_allclose(a.data, [0.9, 1.1], rtol=1e-6)
    np.testing.assert_allclose(b.data, [1.5, 0.5], rtol=1e-6)
    # a group added later takes the defaults too
    c = Parameter(np.zeros(1))
    opt.add_param_group({"params": c, "weight_decay": 0.1})
    assert opt.param_groups[2]["lr"] == 0.1 and opt.param_groups[2]["weight_decay"] == 0.1


def test_sgd_hand_computed():
    # lr 0.5, momentum 0.5, dampening 0.5: buf1 = g1 = 2; p1 = 1 - 0.5*2 = 0
    # buf2 = 0.5*2 + 0.5*4 = 3; p2 = 0 - 0.5*3 = -1.5; nesterov is the default False
    p = Parameter(np.array([1.0]))
    opt = SGD([p], lr=0.5, momentum=0.5, dampening=0.5)
    p.grad = np.array([2.0])
    opt.step()
    assert p.data[0] == 0.0
    p.grad = np.array([4.0])
    opt.step()
    assert p.data[0] == -1.5
    np.testing.assert_array_equal(opt.state[p]["momentum_buffer"], [3.0])


def test_adamw_decays_with_zero_gradient():
    # g = 0: m = v = 0, the Adam step is 0/(0+eps) = 0 and only the decoupled decay acts
    p = Parameter(np.array([2.0, -4.0]))
    p.grad = np.zeros(2)
    opt = AdamW([p], lr=0.1, weight_decay=0.5)
    opt.step()
    np.testing.assert_allclose(p.data, [2.0 * 0.95, -4.0 * 0.95], rtol=1e-15)
    q = Parameter(np.array([2.0, -4.0]))
    q.grad = np.zeros(2)
    Adam([q], lr=0.1, weight_decay=0.5).step()  # L2: d = 0.5*q, first step moves by lr*sign(q)
    np.testing.assert_allclose(q.data, [1.9, -3.9], rtol=1e-7)


# --------------------------------------------------------------------------------------------------------
# State dicts

RESUME = [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
          ("SGD", dict(lr=0.1)),
          ("Adam", dict(lr=1e-2, amsgrad=True, weight_decay=0.01)),
          ("AdamW", dict(lr=1e-2, maximize=True))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,kw", RESUME)
def test_state_dict_resume_is_bit_identical(kind, kw, dtype):
    init, grads = _problem(7, dtype)
    spec = _group_spec(kind, kw, True)
    straight, _ = _run_ours(kind, kw, init, grads, spec)

    head, opt = _run_ours(kind, kw, init, grads[:4], spec)
    blob = pickle.dumps({"params": [p.data.copy() for p in head], "opt": opt.state_dict()})
    saved = pickle.loads(blob)
    ps = [Parameter(a) for a in saved["params"]]
    fresh = OURS[kind](_make_groups(ps, spec), **kw)
    fresh.load_state_dict(saved["opt"])
    for gs in grads[4:]:
        for p, g in zip(ps, gs):
            p.grad = None if g is None else g.copy()
        fresh.step()
    for p, q in zip(ps, straight):
        assert p.data.dtype == dtype
        np.testing.assert_array_equal(p.data, q.data)


def test_state_dict_structure_and_copies():
    init, grads = _problem(8, skip=False)
    ps, opt = _run_ours("Adam", dict(lr=0.1, amsgrad=True), init, grads[:2], _group_spec("Adam", {"lr": 0.1}, True))
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2]]
    assert sd["param_groups"][0]["lr"] == 0.1 and sd["param_groups"][1]["lr"] == pytest.approx(0.03)
    # numbering is by group order: index 2 is the parameter of the second group (ps[1])
    st = sd["state"][2]
    assert set(st) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"} and st["step"] == 2
    assert type(st["exp_avg"]) is np.ndarray and st["exp_avg"].shape == ps[1].shape
    st["exp_avg"][...] = 123.0  # a copy: the optimizer is unaffected
    assert not np.any(opt.state[ps[1]]["exp_avg"] == 123.0)
    # plain host arrays and ints: np.savez writes them and gives them back unchanged
    flat = {f"{i}.{k}": v for i, s in sd["state"].items() for k, v in s.items()}
    buf = io.BytesIO()
    np.savez(buf, **flat)
    buf.seek(0)
    with np.load(buf) as back:
        for k, v in flat.items():
            np.testing.assert_array_equal(back[k], v)


def _trained_adam():
    init, grads = _problem(9, skip=False)
    return _run_ours("Adam", dict(lr=0.1), init, grads[:2])


def test_load_state_dict_rejects_mismatches():
    ps, opt = _trained_adam()
    good = opt.state_dict()

    two = Adam([{"params": ps[:1]}, {"params": ps[1:]}])
    with pytest.raises(ValueError, match="1 parameter group"):
        two.load_state_dict(good)
    fewer = Adam(ps[:2])
    with pytest.raises(ValueError, match="3 parameter"):
        fewer.load_state_dict(good)

    bad = opt.state_dict()
    bad["state"][1]["exp_avg"] = np.zeros((6,))
    with pytest.raises(ValueError, match="exp_avg has shape"):
        Adam(ps).load_state_dict(bad)
    bad = opt.state_dict()
    del bad["state"][0]["exp_avg_sq"]
    with pytest.raises(ValueError, match="keys"):
        Adam(ps).load_state_dict(bad)
    bad = opt.state_dict()
    bad["param_groups"][0]["amsgrad"] = True  # would need max_exp_avg_sq
    with pytest.raises(ValueError, match="max_exp_avg_sq"):
        Adam(ps).load_state_dict(bad)
    bad = opt.state_dict()
    bad["state"][7] = bad["state"][0]
    with pytest.raises(ValueError, match="index 7"):
        Adam(ps).load_state_dict(bad)
    bad = opt.state_dict()
    bad["param_groups"][0]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr"):
        Adam(ps).load_state_dict(bad)
    with pytest.raises(ValueError, match="keys"):
        Adam(ps).load_state_dict({"state": {}})
    # a failed load changes nothing
    target = Adam(ps, lr=0.5)
    with pytest.raises(ValueError):
        target.load_state_dict(bad)
    assert target.param_groups[0]["lr"] == 0.5 and target.state == {}
    # and a good one loads hyper-parameters and state
    target.load_state_dict(good)
    assert target.param_groups[0]["lr"] == 0.1 and target.param_groups[0]["params"] == ps
    np.testing.assert_array_equal(target.state[ps[2]]["exp_avg"], opt.state[ps[2]]["exp_avg"])


def test_sgd_state():
    # plain SGD keeps no state (as PyTorch); a None momentum buffer loads (PyTorch's state.get)
    p = Parameter(np.ones(2))
    p.grad = np.ones(2)
    opt = SGD([p], lr=0.1)
    opt.step()
    assert opt.state_dict()["state"] == {}
    q = Parameter(np.ones(2))
    opt = SGD([q], lr=0.1, momentum=0.9)
    opt.load_state_dict({"state": {0: {"momentum_buffer": None}}, "param_groups": opt.state_dict()["param_groups"]})
    q.grad = np.ones(2)
    opt.step()
    opt.step()
    np.testing.assert_allclose(q.data, [1 - 0.1 - 0.19, 1 - 0.1 - 0.19], rtol=1e-15)


# --------------------------------------------------------------------------------------------------------
# Argument errors

P = Parameter(np.zeros(2))


@pytest.mark.parametrize("make,match", [
    (lambda: SGD([P], lr=-0.1), "lr"),
    (lambda: SGD([P], lr=0.1, momentum=-0.5), "momentum"),
    (lambda: SGD([P], lr=0.1, weight_decay=-1e-4), "weight_decay"),
    (lambda: SGD([P], lr=0.1, nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
    (lambda: SGD([P], lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "zero dampening"),
    (lambda: SGD([P], lr=float("nan")), "lr"),
    (lambda: Adam([P], lr=-1e-3), "lr"),
    (lambda: Adam([P], betas=(1.0, 0.999)), r"betas\[0\]"),
    (lambda: Adam([P], betas=(0.9, -0.1)), r"betas\[1\]"),
    (lambda: Adam([P], betas=(0.9,)), "betas"),
    (lambda: Adam([P], eps=-1e-8), "eps"),
    (lambda: Adam([P], weight_decay=-0.1), "weight_decay"),
    (lambda: AdamW([P], weight_decay=-0.1), "weight_decay"),
    (lambda: AdamW([P], betas=(0.9, 1.5)), r"betas\[1\]"),
    (lambda: Adam([]), "empty"),
    (lambda: SGD([], lr=0.1), "empty"),
    (lambda: Adam([{"params": []}]), "empty"),
    (lambda: Adam([P, P]), "twice"),
    (lambda: Adam([{"params": [P]}, {"params": [P]}]), "more than one"),
    (lambda: Adam([{"params": [P], "momentum": 0.9}]), "unknown hyper-parameter"),
    (lambda: Adam([{"params": [P], "lr": -1.0}]), "lr"),
    (lambda: SGD([{"params": [P], "nesterov": True}], lr=0.1), "Nesterov"),
])
def test_value_errors_name_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("make,match", [
    (lambda: Adam([np.zeros(2)]), r"params\[0\] must be a Parameter"),
    (lambda: Adam(P), "iterable"),
    (lambda: Adam([P], amsgrad="yes"), "amsgrad"),
    (lambda: SGD([P], lr="0.1"), "lr"),
])
def test_type_errors(make, match):
    with pytest.raises(TypeError, match=match):
        make()


def test_generator_of_parameters_and_base_class_is_public():
    ps = [Parameter(np.ones(2)), Parameter(np.ones(3))]
    opt = Adam(p for p in ps)
    assert isinstance(opt, Optimizer) and opt.param_groups[0]["params"] == ps
    assert "Adam (" in repr(opt) and "lr: 0.001" in repr(opt)
