import numpy as np
import pytest

from orthoref.continual import (
    continual_table,
    fit_continual,
    format_continual_table,
    ground_truth_logit_gradients,
    permuted_digits,
)


def test_permuted_tasks_are_pixel_permutations_and_deterministic():
    tasks = permuted_digits(3, seed=0)
    assert len(tasks) == 3
    X0, y0, Xt0, yt0 = tasks[0]
    for X, y, Xt, yt in tasks[1:]:
        assert X.shape == X0.shape and Xt.shape == Xt0.shape
        np.testing.assert_array_equal(y, y0)
        np.testing.assert_array_equal(yt, yt0)
        # same pixel multiset per image, but not the identity
        np.testing.assert_array_equal(np.sort(X, axis=1), np.sort(X0, axis=1))
        np.testing.assert_array_equal(np.sort(Xt, axis=1), np.sort(Xt0, axis=1))
        assert not np.array_equal(X, X0)
    again = permuted_digits(3, seed=0)
    other = permuted_digits(3, seed=1)
    for a, b in zip(tasks, again):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    assert not np.array_equal(tasks[1][0], other[1][0])
    assert not np.array_equal(tasks[1][0], tasks[2][0])


@pytest.mark.parametrize("method", ["sgd", "ogd"])
def test_tiny_run_shapes(method):
    r = fit_continual(method, n_tasks=2, epochs=1, memory_per_task=10, log=None)
    assert r["method"] == method
    acc = r["acc_matrix"]
    assert acc.shape == (2, 2)
    assert np.isnan(acc[0, 1]) and np.isfinite(acc[0, 0]) and np.all(np.isfinite(acc[1]))
    assert np.all((acc[np.isfinite(acc)] >= 0) & (acc[np.isfinite(acc)] <= 1))
    assert r["average_after_last"] == pytest.approx(acc[1].mean())
    assert r["seconds"] > 0
    if method == "ogd":
        assert r["basis_size"] == 10


def test_ogd_update_is_orthogonal_to_stored_directions():
    snaps = []

    def cb(task, step, model, opt):
        if task == 1 and step in (0, 1) and len(snaps) < 2:
            snaps.append((np.concatenate([p.data.reshape(-1).astype(np.float64) for p in opt.params]),
                          opt.flat_grad().astype(np.float64), opt.basis.astype(np.float64).copy()))

    fit_continual("ogd", n_tasks=2, epochs=1, memory_per_task=10, lr=0.05, log=None, step_callback=cb)
    (w0, g0, basis), (w1, _, _) = snaps
    assert basis.shape[0] == 10
    np.testing.assert_allclose(basis @ basis.T, np.eye(10), atol=1e-5)
    delta = w1 - w0
    assert np.linalg.norm(delta) > 0
    # the raw gradient does have a component in the span; the update does not
    assert np.max(np.abs(basis @ g0)) / np.linalg.norm(g0) > 1e-3
    assert np.max(np.abs(basis @ delta)) / np.linalg.norm(delta) < 1e-4
    # and the update is -lr times the projected gradient
    proj = g0 - basis.T @ (basis @ g0)
    np.testing.assert_allclose(delta, -0.05 * proj, atol=1e-6)


def test_ground_truth_logit_gradient_matches_finite_difference():
    from orthoref.models import mlp
    from orthoref.optim import OGD
    model = mlp((4, 5, 3), rng=np.random.default_rng(0), dtype=np.float64)
    opt = OGD(list(model.parameters()), lr=0.1)
    X = np.random.default_rng(1).normal(size=(2, 4))
    y = np.array([2, 0])
    G = ground_truth_logit_gradients(model, opt, X, y)
    assert G.shape == (2, opt.numel)
    p = next(iter(model.parameters()))  # first weight, flattened first
    eps = 1e-6
    for k in (0, 3, 7):
        orig = p.data.reshape(-1)[k]
        p.data.reshape(-1)[k] = orig + eps
        up = model.forward(X[:1])[0, y[0]]
        p.data.reshape(-1)[k] = orig - eps
        dn = model.forward(X[:1])[0, y[0]]
        p.data.reshape(-1)[k] = orig
        assert G[0, k] == pytest.approx((up - dn) / (2 * eps), abs=1e-6)


def test_table_format():
    rows = continual_table(n_tasks=2, epochs=1, memory_per_task=5, log=None)
    text = format_continual_table(rows)
    lines = text.splitlines()
    assert lines[0].startswith("| method | task 0 | task 1 | average | seconds |")
    assert lines[2].startswith("| sgd |") and lines[3].startswith("| ogd |")
    # same seed: identical after the first task
    assert rows[0]["acc_matrix"][0, 0] == rows[1]["acc_matrix"][0, 0]


@pytest.mark.parametrize("kwargs", [
    {"method": "adam"}, {"n_tasks": 0}, {"epochs": 0}, {"lr": 0.0}, {"lr": float("nan")},
    {"batch_size": 0}, {"memory_per_task": -1}, {"hidden": (0,)},
    {"method": "ogd", "memory_per_task": 10 ** 6},
])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        fit_continual(**kwargs, log=None)


def test_float_for_int_is_a_type_error():
    with pytest.raises(TypeError, match="fit_continual: n_tasks must be an int, got float 1.5"):
        fit_continual(n_tasks=1.5, log=None)


def test_bad_permuted_args():
    with pytest.raises(ValueError):
        permuted_digits(0)
    with pytest.raises(ValueError):
        format_continual_table([])
