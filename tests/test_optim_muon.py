"""Muon against an independent float64 torch transcription of the public code (KellerJordan/Muon,
``muon.py``: ``zeropower_via_newtonschulz5``, ``muon_update``, ``adam_update`` of ``MuonWithAuxAdam``),
exact-SVD mode, untouched gradients, float32, state dicts (bit-identical resumption) and argument errors."""
import itertools
import pickle

import numpy as np
import pytest

from orthoref.nn.module import Parameter
from orthoref.optim.muon import Muon
from orthoref.ortho.iterative import NS_COEFFICIENTS

torch = pytest.importorskip("torch")

# A tall 2-D weight (jordan scale sqrt(7/4) > 1), a 4-D conv weight (viewed as 6 x 18), a 1-D bias.
# For (6, 2, 3, 3) the public code's scale max(1, size(-2)/size(-1)) = max(1, 3/3) equals ours
# max(1, rows/cols) = max(1, 6/18), so the public formula can be copied literally.
SHAPES = [(7, 4), (6, 2, 3, 3), (5,)]
STEPS = 5


# -- the reference: the public formulas in torch, float64 instead of bfloat16 --------------------------------
def zeropower_via_newtonschulz5(G, steps, abc=(3.4445, -4.7750, 2.0315), normalize="add_eps"):
    a, b, c = abc
    X = G.clone()                                  # public: G.bfloat16()
    if G.size(-2) > G.size(-1):
        X = X.mT
    if normalize == "add_eps":
        X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    else:                                          # torch.optim.Muon: X.div_(X.norm().clamp(min=eps))
        X = X / X.norm(dim=(-2, -1), keepdim=True).clamp(min=1e-7)
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    if G.size(-2) > G.size(-1):
        X = X.mT
    return X


def svd_polar(G):
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    return U @ Vh


def muon_update(grad, momentum, beta, ns_steps, nesterov, orth, scale):
    momentum.lerp_(grad, 1 - beta)
    update = grad.lerp_(momentum, beta) if nesterov else momentum
    if update.ndim == 4:
        update = update.view(len(update), -1)
    update = orth(update, ns_steps)
    if scale in ("jordan", "jordan_last_axes"):    # "jordan" only for SHAPES (see above)
        update *= max(1, grad.size(-2) / grad.size(-1)) ** 0.5
    else:  # Moonlight's 0.2 * sqrt(max(A, B)), on the matrix view
        update *= 0.2 * max(update.shape) ** 0.5
    return update


def adam_update(grad, buf1, buf2, step, betas, eps):
    buf1.lerp_(grad, 1 - betas[0])
    buf2.lerp_(grad.square(), 1 - betas[1])
    buf1c = buf1 / (1 - betas[0] ** step)
    buf2c = buf2 / (1 - betas[1] ** step)
    return buf1c / (buf2c.sqrt() + eps)


def reference(init, grads, lr=0.02, momentum=0.95, nesterov=True, ns_steps=5, coefficients="jordan",
              weight_decay=0.0, scale="jordan", adam_lr=3e-4, adam_betas=(0.9, 0.95), adam_eps=1e-10,
              adam_weight_decay=0.0, normalize="add_eps"):
    if coefficients == "svd":
        def orth(u, k):
            return svd_polar(u)
    else:
        def orth(u, k):
            return zeropower_via_newtonschulz5(u, k, NS_COEFFICIENTS[coefficients][0], normalize)
    ps = [torch.tensor(x) for x in init]
    state = [{} for _ in ps]
    for gs in grads:
        for p, g, st in zip(ps, gs, state):
            if g is None:
                continue
            g = torch.tensor(g)                    # a copy: the public update overwrites it
            if p.ndim >= 2:
                if not st:
                    st["momentum_buffer"] = torch.zeros_like(p)
                u = muon_update(g, st["momentum_buffer"], momentum, ns_steps, nesterov, orth, scale)
                p.mul_(1 - lr * weight_decay)
                p.add_(u.reshape(p.shape), alpha=-lr)
            else:
                if not st:
                    st.update(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p), step=0)
                st["step"] += 1
                u = adam_update(g, st["exp_avg"], st["exp_avg_sq"], st["step"], adam_betas, adam_eps)
                p.mul_(1 - adam_lr * adam_weight_decay)
                p.add_(u, alpha=-adam_lr)
    return [p.numpy() for p in ps]


# -- helpers ---------------------------------------------------------------------------------------------
def _problem(seed, dtype=np.float64, steps=STEPS):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]
    return init, grads


def _run(opt_kw, init, grads, params=None):
    params = params or [Parameter(x.copy()) for x in init]
    opt = Muon(params, **opt_kw)
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = None if g is None else g.copy()
        opt.step()
    return params, opt


CONFIGS = [dict(nesterov=n, weight_decay=wd, scale=sc, adam_weight_decay=awd)
           for n, wd, sc, awd in itertools.product((True, False), (0.0, 0.1), ("jordan", "moonlight"),
                                                   (0.0, 0.2))]
CONFIGS += [dict(lr=0.05, momentum=0.0, nesterov=False, ns_steps=3, adam_lr=1e-2, adam_betas=(0.5, 0.8),
                 adam_eps=1e-3),
            dict(coefficients="svd", weight_decay=0.05),
            dict(coefficients="svd", nesterov=False, scale="moonlight"),
            dict(normalize="clamp"), dict(normalize="clamp", nesterov=False, scale="jordan_last_axes"),
            dict(scale="jordan_last_axes", weight_decay=0.1)]


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_matches_public_muon(kw):
    init, grads = _problem(0)
    params, _ = _run(kw, init, grads)
    want = reference(init, grads, **kw)
    for p, w in zip(params, want):
        np.testing.assert_allclose(p.data, w, rtol=1e-12, atol=1e-14)


def test_jordan_last_axes_is_the_public_conv_scale():
    """A non-square kernel: the public code scales a (6, 2, 3, 2) conv update by √max(1, 3/2) (its last two
    axes), "jordan" by √max(1, 6/12) = 1 (the matrix view); "jordan_last_axes" is the public rule."""
    rng = np.random.default_rng(3)
    init = [rng.standard_normal((6, 2, 3, 2))]
    grads = [[rng.standard_normal((6, 2, 3, 2))] for _ in range(4)]
    params, _ = _run(dict(scale="jordan_last_axes"), init, grads)
    want = reference(init, grads, scale="jordan_last_axes")
    np.testing.assert_allclose(params[0].data, want[0], rtol=1e-12, atol=1e-14)
    jordan, _ = _run(dict(scale="jordan"), init, grads)
    steps_last = params[0].data - init[0]
    steps_view = jordan[0].data - init[0]
    np.testing.assert_allclose(steps_last, 1.5 ** 0.5 * steps_view, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("coefficients", ["jordan", "polar_express"])
def test_normalize_clamp_vs_add_eps(coefficients):
    """X₀ = u / max(κ‖u‖, ε) ("clamp") and u / (κ‖u‖ + ε) ("add_eps"): below ε the clamp divides by ε
    exactly (the first step of a tiny gradient from zero momentum with one NS step and the (1, 0, 0)
    table is then γ·(1-β)·g/ε); above it the two differ by the relative ε/(κ‖u‖)."""
    g = np.full((2, 3), 1e-9)                      # wide: the "jordan" scale is 1
    out = {}
    for mode in ("add_eps", "clamp"):
        p = Parameter(np.zeros((2, 3)))
        p.grad = g.copy()
        Muon([p], lr=1.0, momentum=0.5, nesterov=False, ns_steps=1, coefficients=[[1.0, 0.0, 0.0]],
             normalize=mode).step()
        out[mode] = p.data
    np.testing.assert_allclose(out["clamp"], -0.5 * g / 1e-7, rtol=1e-12)
    norm = np.sqrt(6) * 0.5e-9
    np.testing.assert_allclose(out["add_eps"], -0.5 * g / (norm + 1e-7), rtol=1e-12)
    # above ε: "clamp" is scale-invariant
    rng = np.random.default_rng(4)
    g = rng.standard_normal((5, 3))
    res = []
    for s in (1.0, 1e-3):
        p = Parameter(np.zeros((5, 3)))
        p.grad = s * g
        Muon([p], lr=0.1, coefficients=coefficients, normalize="clamp").step()
        res.append(p.data)
    np.testing.assert_allclose(res[0], res[1], rtol=1e-13, atol=1e-15)


def test_svd_mode_is_the_polar_factor():
    """One step from zero momentum: W moves by exactly -lr·s·U Vᵀ of the gradient."""
    rng = np.random.default_rng(1)
    g = rng.standard_normal((7, 4))
    p = Parameter(np.zeros((7, 4)))
    p.grad = g.copy()
    Muon([p], lr=0.1, coefficients="svd").step()
    U, _, Vh = np.linalg.svd(g, full_matrices=False)
    np.testing.assert_allclose(p.data, -0.1 * (7 / 4) ** 0.5 * (U @ Vh), rtol=1e-13, atol=1e-15)
    # and Newton-Schulz with many steps of the cubic converges to it
    q = Parameter(np.zeros((7, 4)))
    q.grad = g.copy()
    Muon([q], lr=0.1, coefficients="cubic", ns_steps=60).step()
    np.testing.assert_allclose(q.data, p.data, atol=1e-10)


def test_svd_mode_rank_deficient_and_zero():
    u, v = np.arange(1.0, 5.0), np.arange(1.0, 4.0)
    p = Parameter(np.zeros((4, 3)))
    p.grad = np.outer(u, v)                        # rank 1: polar factor not unique -> U_1 V_1ᵀ
    opt = Muon([p], lr=1.0, coefficients="svd", nesterov=False, momentum=0.0)
    opt.step()
    want = -np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v)) * (4 / 3) ** 0.5
    np.testing.assert_allclose(p.data, want, atol=1e-14)
    p.grad = np.zeros((4, 3))
    before = p.data.copy()
    opt.step()
    np.testing.assert_array_equal(p.data, before)


def test_coefficient_table_equals_name():
    init, grads = _problem(2)
    a, _ = _run(dict(coefficients="jordan"), init, grads)
    b, opt = _run(dict(coefficients=[3.4445, -4.7750, 2.0315]), init, grads)
    assert opt.param_groups[0]["coefficients"] == ((3.4445, -4.7750, 2.0315),)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.data, y.data)


def test_grad_untouched_and_none_skipped():
    init, grads = _problem(3, steps=2)
    params = [Parameter(x.copy()) for x in init]
    opt = Muon(params, weight_decay=0.1, adam_weight_decay=0.1)
    for gs in grads:
        kept = [g.copy() for g in gs]
        objs = []
        for p, g in zip(params, gs):
            p.grad = g
            objs.append(g)
        opt.step()
        for p, g, k, o in zip(params, gs, kept, objs):
            assert p.grad is o
            np.testing.assert_array_equal(p.grad, k)
    # None gradients: no update, no state
    q = Parameter(np.ones((3, 2)))
    b = Parameter(np.ones(3))
    opt2 = Muon([q, b])
    opt2.step()
    np.testing.assert_array_equal(q.data, 1.0)
    np.testing.assert_array_equal(b.data, 1.0)
    assert opt2.state == {}


@pytest.mark.parametrize("coefficients", ["jordan", "svd"])
def test_float32_stays_float32(coefficients):
    init, grads = _problem(4, dtype=np.float32)
    params, opt = _run(dict(coefficients=coefficients, weight_decay=0.1), init, grads)
    for p in params:
        assert p.data.dtype == np.float32
        for v in opt.state[p].values():
            if isinstance(v, np.ndarray):
                assert v.dtype == np.float32
    want = reference([x.astype(np.float64) for x in init],
                     [[g.astype(np.float64) for g in gs] for gs in grads],
                     coefficients=coefficients, weight_decay=0.1)
    for p, w in zip(params, want):
        np.testing.assert_allclose(p.data, w, rtol=1e-4, atol=1e-5)


def test_state_dict_round_trip_bit_exact():
    init, grads = _problem(5, steps=6)
    kw = dict(lr=0.03, weight_decay=0.01, adam_lr=1e-2, scale="moonlight")
    full, _ = _run(kw, init, grads)

    params, opt = _run(kw, init, grads[:3])
    sd = pickle.loads(pickle.dumps(opt.state_dict()))
    assert set(sd["state"]) == {0, 1, 2}
    assert set(sd["state"][0]) == {"momentum_buffer"} and set(sd["state"][1]) == {"momentum_buffer"}
    assert set(sd["state"][2]) == {"step", "exp_avg", "exp_avg_sq"} and sd["state"][2]["step"] == 3
    assert sd["param_groups"][0]["params"] == [0, 1, 2]

    fresh = [Parameter(p.data.copy()) for p in params]
    opt2 = Muon(fresh)                             # hyper-parameters come from the state dict
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["scale"] == "moonlight" and opt2.param_groups[0]["lr"] == 0.03
    for p in fresh:
        assert set(opt2.state[p]) == set(Muon.state_keys_of(p))
    for gs in grads[3:]:
        for p, g in zip(fresh, gs):
            p.grad = g.copy()
        opt2.step()
    for a, b in zip(full, fresh):
        np.testing.assert_array_equal(a.data, b.data)


def test_load_state_dict_rejects_wrong_kind():
    init, grads = _problem(6, steps=1)
    params, opt = _run({}, init, grads)
    sd = opt.state_dict()
    bad = {"state": dict(sd["state"]), "param_groups": sd["param_groups"]}
    bad["state"][0], bad["state"][2] = sd["state"][2], sd["state"][0]   # matrix <-> vector state
    before = {p: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in st.items()}
              for p, st in opt.state.items()}
    with pytest.raises(ValueError, match="state of parameter 0"):
        opt.load_state_dict(bad)
    bad2 = {"state": {0: {"momentum_buffer": sd["state"][0]["momentum_buffer"], "step": 1}},
            "param_groups": sd["param_groups"]}
    with pytest.raises(ValueError, match="expected \\['momentum_buffer'\\]"):
        opt.load_state_dict(bad2)
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict({"state": {0: {"momentum_buffer": np.zeros((2, 2))}},
                             "param_groups": sd["param_groups"]})
    with pytest.raises(ValueError):
        opt.load_state_dict({"state": {}})
    for p, st in opt.state.items():                # nothing changed
        for k, v in st.items():
            np.testing.assert_array_equal(v, before[p][k])


@pytest.mark.parametrize("kw, exc, name", [
    (dict(lr=-1.0), ValueError, "lr"),
    (dict(momentum=1.0), ValueError, "momentum"),
    (dict(nesterov="yes"), TypeError, "nesterov"),
    (dict(ns_steps=0), ValueError, "ns_steps"),
    (dict(ns_steps=2.5), TypeError, "ns_steps"),
    (dict(coefficients="bogus"), ValueError, "coefficients"),
    (dict(coefficients=[[1.0, 2.0]]), ValueError, "coefficients"),
    (dict(weight_decay=-0.1), ValueError, "weight_decay"),
    (dict(scale="kimi"), ValueError, "scale"),
    (dict(normalize="add"), ValueError, "normalize"),
    (dict(normalize=None), ValueError, "normalize"),
    (dict(adam_lr=float("nan")), ValueError, "adam_lr"),
    (dict(adam_betas=(0.9,)), ValueError, "adam_betas"),
    (dict(adam_betas=(0.9, 1.0)), ValueError, "adam_betas\\[1\\]"),
    (dict(adam_eps=-1e-8), ValueError, "adam_eps"),
    (dict(adam_weight_decay=-1.0), ValueError, "adam_weight_decay"),
])
def test_errors(kw, exc, name):
    with pytest.raises(exc, match=name):
        Muon([Parameter(np.zeros((2, 2)))], **kw)
    with pytest.raises(exc, match=name):               # through a parameter group too
        Muon([{"params": [Parameter(np.zeros((2, 2)))], **kw}])
