"""orthoref.oracle.trajectories (reference optimizer trajectories, the orthogonal factor of the
initializers) and orthoref.testing.check_optimizer on a user's optimizer."""
import numpy as np
import pytest

from orthoref import init, optim
from orthoref.nn.module import Parameter
from orthoref.oracle.trajectories import OPTIMIZERS, STIEFEL_OPTIMIZERS, optimizer_trajectory, orthogonal_factor
from orthoref.testing import OptimizerReport, check_optimizer, default_optimizer_problem


def _hyper(name):
    kw = dict(lr=1e-2)
    if name in STIEFEL_OPTIMIZERS:
        kw["stiefel"] = [False, False, True]
    return kw


def _own(name, **kw):
    """A step_fn made of orthoref's own optimizer (in the dtype of the params it is given)."""
    def step(params, grads, state):
        if state is None:
            ps = [Parameter(p.copy()) for p in params]
            flags = kw.get("stiefel")
            groups = [{"params": [p], "stiefel": f} for p, f in zip(ps, flags)] if flags else ps
            state = (ps, getattr(optim, name)(groups, **{k: v for k, v in kw.items() if k != "stiefel"}))
        ps, opt = state
        for p, g in zip(ps, grads):
            p.grad = g
        opt.step()
        return [p.data for p in ps], state
    return step


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_trajectory_is_stepping_the_optimizer_by_hand(name):
    param0, grads, flags = default_optimizer_problem(name, steps=4)
    kw = _hyper(name)
    traj = optimizer_trajectory(name, param0, grads, **kw)
    assert len(traj) == 5 and all(isinstance(s, list) and len(s) == 3 for s in traj)
    ps = [Parameter(p.copy()) for p in param0]
    groups = [{"params": [p], "stiefel": f} for p, f in zip(ps, flags)] if flags else ps
    opt = getattr(optim, name)(groups, lr=1e-2)
    for k, p in enumerate(ps):
        np.testing.assert_array_equal(traj[0][k], param0[k])
    for t, g in enumerate(grads, start=1):
        for p, gi in zip(ps, g):
            p.grad = gi
        opt.step()
        for k, p in enumerate(ps):
            np.testing.assert_array_equal(traj[t][k], p.data)
    assert traj[0][0] is not param0[0]                  # copies


def test_trajectory_single_array_callable_grads_and_class_name():
    f = lambda t, x: 2 * x                               # ∇‖x‖²
    traj = optimizer_trajectory(optim.SGD, np.ones(3, dtype=np.float32), f, steps=3, lr=0.25)
    assert all(s.dtype == np.float64 and s.shape == (3,) for s in traj)
    np.testing.assert_allclose(traj[-1], 0.5 ** 3 * np.ones(3))
    assert optimizer_trajectory("adam", np.ones(2), [])[0].tolist() == [1.0, 1.0]


def test_ogd_directions_project_the_step():
    u = np.array([1.0, 0.0, 0.0])
    traj = optimizer_trajectory("OGD", np.zeros(3), [np.ones(3)], lr=1.0, directions=[u])
    np.testing.assert_allclose(traj[1], [0.0, -1.0, -1.0])


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_orthoref_itself_passes_check_optimizer_in_both_dtypes(name):
    kw = _hyper(name)
    report = check_optimizer(name, _own(name, **kw), **kw)
    assert isinstance(report, OptimizerReport) and report.passed, str(report)
    assert len(report.rows) == 20 and report.to_dict()["passed"]


@pytest.mark.parametrize("cls, kw", [("SGD", dict(lr=0.1, momentum=0.9)),
                                     ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)),
                                     ("Adam", dict(lr=1e-2)), ("Adam", dict(lr=1e-2, amsgrad=True, weight_decay=0.1)),
                                     ("AdamW", dict(lr=1e-2, weight_decay=0.1))])
def test_torch_optimizers_pass(cls, kw):
    torch = pytest.importorskip("torch")
    report = check_optimizer(cls, getattr(torch.optim, cls), framework="torch", **kw)
    assert report.passed, str(report)
    assert max(r.error for r in report.rows if r.dtype == "float64") < 1e-14


def _adam_without_bias_correction(lr=1e-2, b1=0.9, b2=0.999, eps=1e-8):
    def step(params, grads, state):
        m, v = state or ([np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params])
        out = []
        for p, g, mi, vi in zip(params, grads, m, v):
            mi *= b1; mi += (1 - b1) * g
            vi *= b2; vi += (1 - b2) * g * g
            out.append(p - lr * mi / (np.sqrt(vi) + eps))            # the bug: no 1 - βᵗ corrections
        return out, (m, v)
    return step


def _sgd_momentum_one_step_late(lr=0.1, mu=0.9):
    def step(params, grads, state):
        bufs = state or [np.zeros_like(p) for p in params]
        out = [p - lr * b if b.any() else p - lr * g for p, g, b in zip(params, grads, bufs)]  # the bug: b_{t-1}
        bufs = [g.copy() if not b.any() else mu * b + g for g, b in zip(grads, bufs)]
        return out, bufs
    return step


@pytest.mark.parametrize("dtypes", [("float64",), ("float32",)])
def test_planted_bugs_fail(dtypes):
    bad = check_optimizer("Adam", _adam_without_bias_correction(), lr=1e-2, dtypes=dtypes)
    assert not bad.passed and not bad.rows[0].passed and "FAIL" in str(bad)
    late = check_optimizer("SGD", _sgd_momentum_one_step_late(), lr=0.1, momentum=0.9, dtypes=dtypes)
    assert not late.passed and late.rows[0].passed and not late.rows[1].passed   # step 1 agrees, step 2 not


def test_user_step_raising_or_misshaped_is_a_failed_row():
    def boom(params, grads, state):
        raise RuntimeError("kaput")
    rep = check_optimizer("SGD", boom, dtypes=("float64",))
    assert not rep.passed and len(rep.rows) == 1 and "kaput" in str(rep)
    rep = check_optimizer("SGD", lambda p, g, s: (p[:2], s), dtypes=("float64",))
    assert not rep.passed and "list of 3 arrays" in rep.rows[0].message


def test_orthogonal_factor_is_init_orthogonal_on_the_same_draw():
    for shape, method in [((4, 7), "qr"), ((7, 4), "qr"), ((5, 5), "svd"), ((3, 8), "svd")]:
        W = init.orthogonal(shape, rng=3, dtype=np.float64, method=method)
        rows, cols = shape
        gen = np.random.default_rng(3)
        A = gen.standard_normal((rows, cols)) if rows < cols else gen.standard_normal((cols, rows)).T
        np.testing.assert_allclose(orthogonal_factor(A, method), W, rtol=0, atol=1e-14)


@pytest.mark.parametrize("call, exc, text", [
    (lambda: optimizer_trajectory("Adamm", np.ones(2), []), ValueError, "did you mean Adam"),
    (lambda: optimizer_trajectory(3, np.ones(2), []), TypeError, "name must be"),
    (lambda: optimizer_trajectory("SGD", [[1.0, 2.0]], []), TypeError, "param0[0] must be an array"),
    (lambda: optimizer_trajectory("SGD", [], []), ValueError, "empty list"),
    (lambda: optimizer_trajectory("SGD", np.array([np.nan]), []), ValueError, "finite"),
    (lambda: optimizer_trajectory("SGD", np.ones(2), [np.ones(3)]), ValueError, "grads[0] has shape (3,)"),
    (lambda: optimizer_trajectory("SGD", [np.ones(2)] * 2, [[np.ones(2)]]), ValueError, "grads[0] has 1 arrays"),
    (lambda: optimizer_trajectory("SGD", np.ones(2), 5), TypeError, "grads must be"),
    (lambda: optimizer_trajectory("SGD", np.ones(2), lambda t, x: x), ValueError, "needs steps"),
    (lambda: optimizer_trajectory("SGD", np.ones(2), [np.ones(2)], steps=2), ValueError, "steps=2"),
    (lambda: optimizer_trajectory("SGD", np.ones(2), [], lr=-1), ValueError, "optimizer_trajectory: SGD"),
    (lambda: optimizer_trajectory("SGD", np.ones(2), [], lrr=1), ValueError, "unknown hyper-parameter"),
    (lambda: optimizer_trajectory("OGD", np.ones(2), []), TypeError, "OGD needs lr"),
    (lambda: optimizer_trajectory("CayleySGD", np.ones((4, 3)), [], lr=0.1), ValueError, "not orthonormal"),
    (lambda: optimizer_trajectory("CayleySGD", [np.eye(3)], [], lr=0.1, stiefel=[True, False]), ValueError,
     "one per parameter"),
    (lambda: orthogonal_factor(np.ones(3)), ValueError, "2-D"),
    (lambda: orthogonal_factor(np.ones((2, 2)), "lu"), ValueError, "method"),
    (lambda: check_optimizer("SGD", 3), TypeError, "step_fn must be callable"),
    (lambda: check_optimizer("SGD", lambda *a: a, framework="jax"), ValueError, "framework"),
    (lambda: check_optimizer("SGD", lambda *a: a, steps=0), ValueError, "steps"),
    (lambda: check_optimizer("SGD", lambda *a: a, rtol=-1.0), ValueError, "rtol"),
    (lambda: check_optimizer("SGD", lambda *a: a, dtypes=("float16",)), ValueError, "dtypes"),
    (lambda: check_optimizer("SGD", lambda *a: a, param0=np.ones(2)), ValueError, "give grads too"),
])
def test_bad_arguments_raise_clearly(call, exc, text):
    with pytest.raises(exc) as info:
        call()
    assert text in str(info.value)
