"""Every "matches X" claim of the optimizers, tested against X itself where X installs: torch.optim (SGD,
Adam, AdamW, Muon), geoopt (RiemannianSGD/RiemannianAdam on EuclideanStiefel and CanonicalStiefel) and
Keller Jordan's ``muon-optimizer`` (``import muon``). float64, several steps, agreement to 1e-12 relative.
Each test skips cleanly when its library is missing and names the library's version in its id.

Two libraries cast the Newton–Schulz input to bfloat16 (``torch.optim._muon._zeropower_via_newtonschulz``,
``muon.zeropower_via_newtonschulz5``). To compare in float64 the tests run the library's own function with
that one cast removed (its source, with ``.bfloat16()`` replaced by ``.clone()``, executed in the library
module's namespace and monkeypatched in); everything else is the library as installed.
"""
import inspect
from importlib import metadata

import numpy as np
import pytest

from orthoref import init
from orthoref.nn.module import Parameter
from orthoref.optim import SGD, Adam, AdamW, Muon, RiemannianAdam, RiemannianSGD

RTOL = 1e-12


def _step_both(opt, topt, ours, theirs, shapes, rng, steps):
    """``steps`` steps of orthoref's ``opt`` and the library's ``topt`` on the same random gradients."""
    import torch
    for _ in range(steps):
        for p, t, s in zip(ours, theirs, shapes):
            g = rng.standard_normal(s)
            p.grad, t.grad = g, torch.tensor(g.copy())
        opt.step()
        topt.step()


def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "missing"


TORCH, GEOOPT, MUON = _version("torch"), _version("geoopt"), _version("muon-optimizer")


def _rel(ours, theirs):
    """``max|ours - theirs| / max|theirs|``."""
    theirs = np.asarray(theirs)
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-300))


def _assert_close(ours, theirs, who):
    err = _rel(ours, theirs)
    assert err <= RTOL, f"{who}: relative difference {err:.2e} > {RTOL:g}"


def _without_bfloat16(module, name, cast):
    """``module.name`` re-executed from its source with ``cast`` (``"X.bfloat16()"``) -> ``"X.clone()"``."""
    src = inspect.getsource(getattr(module, name))
    assert src.count(cast) == 1, f"{module.__name__}.{name}: expected one {cast!r} in its source"
    namespace = dict(vars(module))
    exec(compile(src.replace(cast, cast.replace("bfloat16", "clone")), module.__file__, "exec"), namespace)
    return namespace[name]


# ---------------------------------------------------------------------------------------------------------
# torch.optim: SGD, Adam, AdamW

TORCH_CASES = [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.05)),
               ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3, maximize=True)),
               ("Adam", dict(lr=0.05, weight_decay=0.05, amsgrad=True)),
               ("Adam", dict(lr=0.05, betas=(0.5, 0.8), eps=1e-3)),
               ("AdamW", dict(lr=0.05, weight_decay=0.5)),
               ("AdamW", dict(lr=0.05, weight_decay=0.05, amsgrad=True, maximize=True))]


@pytest.mark.torch
@pytest.mark.parametrize("kind,kw", TORCH_CASES,
                         ids=[f"torch-{TORCH}-{k}-{i}" for i, (k, _) in enumerate(TORCH_CASES)])
def test_sgd_adam_adamw_match_torch_optim(kind, kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (5,), (2, 3, 2)]
    x0 = [rng.standard_normal(s) for s in shapes]
    ours = [Parameter(a.copy()) for a in x0]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in x0]
    opt = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}[kind](ours, **kw)
    topt = getattr(torch.optim, kind)(theirs, **kw)
    _step_both(opt, topt, ours, theirs, shapes, rng, 10)
    for p, t in zip(ours, theirs):
        _assert_close(p.data, t.detach().numpy(), f"{kind} vs torch {torch.__version__}")


# ---------------------------------------------------------------------------------------------------------
# torch.optim.Muon: normalize="clamp"; scale "jordan" = adjust_lr_fn "original", "moonlight" = "match_rms_adamw"

TORCH_MUON = [dict(), dict(nesterov=False, weight_decay=0.1), dict(adjust_lr_fn="match_rms_adamw"),
              dict(momentum=0.5, ns_steps=3, lr=0.05)]


def _torch_muon_kw(kw):
    ours = {k: v for k, v in kw.items() if k != "adjust_lr_fn"}
    ours["scale"] = "moonlight" if kw.get("adjust_lr_fn") == "match_rms_adamw" else "jordan"
    return ours


def _run_torch_muon(torch, kw, x0, grads, normalize):
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in x0]
    base = dict(lr=0.02, weight_decay=0.0)         # torch's default weight_decay is 0.1, ours 0
    topt = torch.optim.Muon(theirs, **dict(base, **kw))
    ours = [Parameter(a.copy()) for a in x0]
    opt = Muon(ours, **dict(base, **_torch_muon_kw(kw)), normalize=normalize)
    for gs in grads:
        for p, t, g in zip(ours, theirs, gs):
            p.grad, t.grad = g.copy(), torch.tensor(g.copy())
        opt.step()
        topt.step()
    return ours, theirs


@pytest.mark.torch
@pytest.mark.parametrize("kw", TORCH_MUON, ids=[f"torch-{TORCH}-Muon-{i}" for i in range(len(TORCH_MUON))])
def test_muon_clamp_matches_torch_optim_muon(kw, monkeypatch):
    torch = pytest.importorskip("torch")
    if not hasattr(torch.optim, "Muon"):
        pytest.skip(f"torch {torch.__version__} has no torch.optim.Muon")
    import torch.optim._muon as tm
    monkeypatch.setattr(tm, "_zeropower_via_newtonschulz",
                        _without_bfloat16(tm, "_zeropower_via_newtonschulz", "grad.bfloat16()"))
    rng = np.random.default_rng(1)
    shapes = [(7, 4), (3, 6), (5, 5)]
    x0 = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(6)]
    ours, theirs = _run_torch_muon(torch, kw, x0, grads, "clamp")
    for p, t in zip(ours, theirs):
        _assert_close(p.data, t.detach().numpy(), f"Muon(normalize='clamp') vs torch {torch.__version__}")
    # the default normalization (Keller Jordan's ‖u‖ + ε) is not torch's: it differs beyond 1e-12 where
    # the momentum is small, as on the first step (u = (1-β)(1+β) g for nesterov)
    if kw == {}:
        tiny = [[1e-4 * g for g in gs] for gs in grads]
        ours, theirs = _run_torch_muon(torch, kw, x0, tiny, "add_eps")
        assert max(_rel(p.data - a, t.detach().numpy() - a) for p, t, a in zip(ours, theirs, x0)) > 1e-9


# ---------------------------------------------------------------------------------------------------------
# Keller Jordan's muon-optimizer (github.com/KellerJordan/Muon): the default Muon, and scale="jordan_last_axes"

def _kj_muon(monkeypatch):
    muon = pytest.importorskip("muon", reason="muon-optimizer is not installed")
    monkeypatch.setattr(muon, "zeropower_via_newtonschulz5",
                        _without_bfloat16(muon, "zeropower_via_newtonschulz5", "G.bfloat16()"))
    return muon


@pytest.mark.torch
@pytest.mark.parametrize("wd,awd", [(0.0, 0.0), (0.1, 0.2)], ids=[f"muon-optimizer-{MUON}-{i}" for i in range(2)])
def test_muon_matches_keller_jordan_single_device_aux_adam(wd, awd, monkeypatch):
    torch = pytest.importorskip("torch")
    muon = _kj_muon(monkeypatch)
    rng = np.random.default_rng(2)
    shapes = [(7, 4), (4, 9), (5,)]
    x0 = [rng.standard_normal(s) for s in shapes]
    theirs = [torch.nn.Parameter(torch.tensor(a.copy())) for a in x0]
    topt = muon.SingleDeviceMuonWithAuxAdam([
        dict(params=theirs[:2], lr=0.03, momentum=0.9, weight_decay=wd, use_muon=True),
        dict(params=theirs[2:], lr=1e-2, betas=(0.8, 0.95), eps=1e-10, weight_decay=awd, use_muon=False)])
    ours = [Parameter(a.copy()) for a in x0]
    opt = Muon(ours, lr=0.03, momentum=0.9, weight_decay=wd, adam_lr=1e-2, adam_betas=(0.8, 0.95),
               adam_weight_decay=awd)
    _step_both(opt, topt, ours, theirs, shapes, rng, 6)
    for p, t in zip(ours, theirs):
        _assert_close(p.data, t.detach().numpy(), f"Muon vs muon-optimizer {MUON}")


@pytest.mark.torch
@pytest.mark.parametrize("shape", [(6, 2, 3, 2), (6, 2, 2, 3), (4, 3, 3, 3)],
                         ids=lambda s: f"muon-optimizer-{MUON}-conv{s}")
def test_muon_jordan_last_axes_matches_keller_jordan_muon_update(shape, monkeypatch):
    """The public ``muon_update`` on a 4-D conv gradient (its step loop, ``p.add_(update.reshape(p.shape))``,
    as in the repository's current ``SingleDeviceMuon``; 0.1.0's omits the reshape and fails on 4-D)."""
    torch = pytest.importorskip("torch")
    muon = _kj_muon(monkeypatch)
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal(shape)
    t, buf = torch.tensor(x0.copy()), torch.zeros(shape, dtype=torch.float64)
    p = Parameter(x0.copy())
    opt = Muon([p], lr=0.02, weight_decay=0.1, scale="jordan_last_axes")
    for _ in range(5):
        g = rng.standard_normal(shape)
        p.grad = g
        opt.step()
        update = muon.muon_update(torch.tensor(g.copy()), buf, beta=0.95)
        t.mul_(1 - 0.02 * 0.1)
        t.add_(update.reshape(t.shape), alpha=-0.02)
    _assert_close(p.data, t.numpy(), f"Muon(scale='jordan_last_axes') vs muon-optimizer {MUON}")


# ---------------------------------------------------------------------------------------------------------
# geoopt: RiemannianSGD / RiemannianAdam on both Stiefel manifolds

GEOOPT_MANIFOLDS = {"EuclideanStiefel": dict(metric="euclidean", retraction="qr"),
                    "CanonicalStiefel": dict(metric="canonical", retraction="cayley_rotate")}
GEOOPT_CASES = [("RiemannianSGD", dict(lr=0.1)), ("RiemannianSGD", dict(lr=0.1, momentum=0.9, weight_decay=0.1)),
                ("RiemannianSGD", dict(lr=0.05, momentum=0.5, nesterov=True)),
                ("RiemannianAdam", dict(lr=0.05, betas=(0.9, 0.99))),
                ("RiemannianAdam", dict(lr=0.02, weight_decay=0.1, eps=1e-6))]
GEOOPT_PARAMS = [(m, k, kw) for m in GEOOPT_MANIFOLDS for k, kw in GEOOPT_CASES]


def _geoopt_run(geoopt, torch, manifold, kind, kw, x0, grads):
    """geoopt's optimizer: Stiefel points as ManifoldParameters on ``manifold`` (a wide weight stored
    transposed: geoopt's Stiefel needs n >= p), the others plain tensors (geoopt's Euclidean manifold)."""
    man = getattr(geoopt, manifold)()
    ts = []
    for a in x0:
        if a.ndim == 2:
            ts.append(geoopt.ManifoldParameter(torch.tensor((a.T if a.shape[0] < a.shape[1] else a).copy()),
                                               manifold=man))
        else:
            ts.append(torch.nn.Parameter(torch.tensor(a.copy())))
    opt = getattr(geoopt.optim, kind)(ts, **kw)
    for gs in grads:
        for t, g, a in zip(ts, gs, x0):
            g = g.T if a.ndim == 2 and a.shape[0] < a.shape[1] else g
            t.grad = torch.tensor(g.copy())
        opt.step()
    return [(t.detach().numpy().T if a.ndim == 2 and a.shape[0] < a.shape[1] else t.detach().numpy())
            for t, a in zip(ts, x0)]


def _problem(seed=4, steps=8):
    rng = np.random.default_rng(seed)
    x0 = [init.orthogonal((9, 4), rng=rng, dtype=np.float64), init.orthogonal((3, 7), rng=rng, dtype=np.float64),
          rng.standard_normal(5)]
    grads = [[rng.standard_normal(a.shape) for a in x0] for _ in range(steps)]
    return x0, grads


def _ours(kind, kw, x0, grads, **extra):
    ps = [Parameter(a.copy()) for a in x0]
    opt = {"RiemannianSGD": RiemannianSGD, "RiemannianAdam": RiemannianAdam}[kind](ps, **kw, **extra)
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = g.copy()
        opt.step()
    return [p.data for p in ps]


@pytest.mark.parametrize("manifold,kind,kw", GEOOPT_PARAMS,
                         ids=[f"geoopt-{GEOOPT}-{m}-{k}-{i % len(GEOOPT_CASES)}"
                              for i, (m, k, _) in enumerate(GEOOPT_PARAMS)])
def test_riemannian_optimizers_match_geoopt(manifold, kind, kw):
    torch = pytest.importorskip("torch")
    geoopt = pytest.importorskip("geoopt")
    x0, grads = _problem()
    theirs = _geoopt_run(geoopt, torch, manifold, kind, kw, x0, grads)
    ours = _ours(kind, kw, x0, grads, **GEOOPT_MANIFOLDS[manifold])
    for o, t in zip(ours, theirs):
        _assert_close(o, t, f"{kind} on {manifold} vs geoopt {geoopt.__version__}")


def test_geoopt_default_stiefel_is_canonical():
    pytest.importorskip("torch")
    geoopt = pytest.importorskip("geoopt")
    assert isinstance(geoopt.Stiefel(), geoopt.CanonicalStiefel), f"geoopt {geoopt.__version__}"
    assert isinstance(geoopt.Stiefel(canonical=False), geoopt.EuclideanStiefel), f"geoopt {geoopt.__version__}"


@pytest.mark.parametrize("manifold", list(GEOOPT_MANIFOLDS), ids=lambda m: f"geoopt-{GEOOPT}-{m}")
def test_elementwise_second_moment_is_not_geoopt(manifold):
    """``second_moment="elementwise"`` (orthoref's earlier RiemannianAdam) is not geoopt's update."""
    torch = pytest.importorskip("torch")
    geoopt = pytest.importorskip("geoopt")
    x0, grads = _problem(seed=5, steps=20)
    theirs = _geoopt_run(geoopt, torch, manifold, "RiemannianAdam", dict(lr=0.05), x0, grads)
    ours = _ours("RiemannianAdam", dict(lr=0.05), x0, grads, second_moment="elementwise",
                 **GEOOPT_MANIFOLDS[manifold])
    assert _rel(ours[0], theirs[0]) > 1e-2, f"geoopt {geoopt.__version__}"
