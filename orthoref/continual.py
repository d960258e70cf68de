"""Continual learning on permuted digits: plain SGD versus orthogonal gradient descent (OGD).

Farajtabar, Azizan, Mott & Li, "Orthogonal Gradient Descent for Continual Learning" (AISTATS 2020,
arXiv:1910.07104). One MLP is trained on a sequence of tasks -- the bundled 8x8 digits, then the same
digits with a fixed random pixel permutation per task -- and the test accuracy on every task seen so far
is recorded after each task. With OGD, at the end of each task the gradients of the ground-truth logit
(the paper's "OGD-GTL" variant) at ``memory_per_task`` training samples of that task are stored with
:meth:`orthoref.optim.OGD.store_directions`; later updates are projected off their span.

``fit_continual(method="sgd" | "ogd", ...)`` runs one method; ``continual_table()`` runs both with the
same seed (same initial weights, same shuffling) and ``format_continual_table(rows)`` renders markdown.
"""
from __future__ import annotations

import math
import time

import numpy as np

from ._checks import NonFiniteError, check_int
from .backend import asarray, to_numpy
from .data import load_digits
from .models import mlp
from .nn import cross_entropy
from .optim import OGD, SGD
from .train import evaluate

__all__ = [
    "METHODS",
    "continual_table",
    "fit_continual",
    "format_continual_table",
    "ground_truth_logit_gradients",
    "permuted_digits",
]

#: The optimizers the continual-learning table compares.
METHODS = ("sgd", "ogd")


def _int_arg(name, value, low, who):
    return check_int(who, name, value, low)


def permuted_digits(n_tasks=3, seed=0, dtype=np.float32):
    """Permuted-digits tasks: a list of ``n_tasks`` tuples ``(X_train, y_train, X_test, y_test)``.

    Task 0 is the bundled digits as they are (flattened to 64 pixels, scaled to [0, 1]); task ``t >= 1``
    applies one fixed random permutation of the 64 pixels, drawn from ``np.random.default_rng(seed)``
    (the same permutation for the train and test images of that task). Labels are unchanged.
    """
    n_tasks = _int_arg("n_tasks", n_tasks, 1, "permuted_digits")
    X_tr, y_tr = load_digits("train", dtype=dtype, flatten=True)
    X_te, y_te = load_digits("test", dtype=dtype, flatten=True)
    rng = np.random.default_rng(seed)
    tasks = [(X_tr, y_tr, X_te, y_te)]
    for _ in range(1, n_tasks):
        perm = rng.permutation(X_tr.shape[1])
        tasks.append((np.ascontiguousarray(X_tr[:, perm]), y_tr.copy(),
                      np.ascontiguousarray(X_te[:, perm]), y_te.copy()))
    return tasks


def ground_truth_logit_gradients(model, optimizer, X, y):
    """Per-sample gradients of the ground-truth logit ``logits[y_n]`` with respect to all parameters,
    flattened in the optimizer's parameter order: an array ``(len(X), N)``. Computed with the model's own
    backward pass, one sample at a time, seeding ``dlogits`` with a one-hot at the true class. Leaves
    every ``.grad`` as ``None``."""
    was_training = model.training
    model.eval()
    out = None
    try:
        for n in range(len(X)):
            model.zero_grad()
            logits = model.forward(asarray(X[n:n + 1]))
            seed = np.zeros(logits.shape, dtype=logits.dtype)
            seed[0, int(y[n])] = 1
            model.backward(asarray(seed), input_grad=False)
            g = to_numpy(optimizer.flat_grad())
            if out is None:
                out = np.empty((len(X), g.size), dtype=g.dtype)
            out[n] = g
    finally:
        model.zero_grad()
        model.train(was_training)
    return out if out is not None else np.zeros((0, optimizer.numel), dtype=optimizer._dtype)


def fit_continual(method="sgd", n_tasks=3, hidden=(100,), epochs=5, lr=0.05, batch_size=32,
                  memory_per_task=200, seed=0, log=print, *, tasks=None, step_callback=None):
    """Train one MLP (64-hidden-10, ReLU) on the permuted-digits tasks in sequence.

    Parameters
    ----------
    method : {"sgd", "ogd"}
        Plain SGD (no momentum) or OGD with the same learning rate; OGD stores, at the end of each task,
        the ground-truth-logit gradients (OGD-GTL) of ``memory_per_task`` random training samples of that
        task (memory ``memory_per_task * n_tasks``, so nothing is ever dropped).
    n_tasks, hidden, epochs, lr, batch_size, memory_per_task, seed
        ``seed`` fixes the permutations, the initial weights, the shuffling and the stored samples; two
        methods run with the same seed start from the same weights and see the same batches.
    log : callable or None
        Called with one line per task.
    tasks : list, optional (keyword-only)
        Precomputed ``permuted_digits(n_tasks, seed)`` (must have ``n_tasks`` entries).
    step_callback : callable, optional (keyword-only)
        ``step_callback(task, step, model, optimizer)`` called right before every ``optimizer.step()``
        (``.grad`` holds the batch gradient); used by the tests.

    Returns
    -------
    dict with ``"method"``, ``"acc_matrix"`` (``n_tasks x n_tasks``; row ``i`` is after task ``i``,
    column ``j`` the test accuracy on task ``j``, NaN for tasks not yet seen), ``"average_after_last"``
    (mean of the last row), ``"seconds"``, ``"settings"``, and ``"basis_size"`` (OGD: stored directions).
    """
    who = "fit_continual"
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"{who}: method must be one of {METHODS}, got {method!r}")
    n_tasks = _int_arg("n_tasks", n_tasks, 1, who)
    epochs = _int_arg("epochs", epochs, 1, who)
    batch_size = _int_arg("batch_size", batch_size, 1, who)
    memory_per_task = _int_arg("memory_per_task", memory_per_task, 0, who)
    try:
        hidden = tuple(hidden)
    except TypeError:
        raise ValueError(f"{who}: hidden must be a sequence of positive ints, got {hidden!r}") from None
    for h in hidden:
        _int_arg("hidden widths", h, 1, who)
    hidden = tuple(int(h) for h in hidden)
    if isinstance(lr, (bool, np.bool_)) or not isinstance(lr, (int, float, np.floating, np.integer)) \
            or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"{who}: lr must be a positive finite number, got {lr!r}")
    if tasks is None:
        tasks = permuted_digits(n_tasks, seed)
    elif len(tasks) != n_tasks:
        raise ValueError(f"{who}: tasks has {len(tasks)} entries, expected n_tasks={n_tasks}")
    if method == "ogd" and memory_per_task > len(tasks[0][0]):
        raise ValueError(f"{who}: memory_per_task={memory_per_task} exceeds the {len(tasks[0][0])} "
                         f"training samples of a task")

    t0 = time.perf_counter()
    n_in = tasks[0][0].shape[1]
    n_classes = int(max(max(t[1].max(), t[3].max()) for t in tasks)) + 1
    model = mlp((n_in,) + hidden + (n_classes,), rng=np.random.default_rng(seed), dtype=tasks[0][0].dtype)
    params = list(model.parameters())
    if method == "sgd":
        optimizer = SGD(params, lr=float(lr))
    else:
        optimizer = OGD(params, lr=float(lr), memory=max(memory_per_task * n_tasks, 1))
    shuffle_rng = np.random.default_rng(seed + 1)
    memory_rng = np.random.default_rng(seed + 2)
    acc = np.full((n_tasks, n_tasks), np.nan)
    model.train()
    try:
        _train_tasks(model, optimizer, tasks, method, epochs, batch_size, memory_per_task, shuffle_rng,
                     memory_rng, acc, log, step_callback)
    except NonFiniteError as exc:      # a NaN/Inf parameter or output: say where, never return NaN accuracies
        raise NonFiniteError(f"{who}: training diverged (NaN/Inf) with lr={float(lr)}: {exc}") from exc
    return {"method": method, "acc_matrix": acc, "average_after_last": float(np.mean(acc[-1])),
            "seconds": time.perf_counter() - t0,
            "basis_size": int(optimizer.basis.shape[0]) if method == "ogd" else 0,
            "settings": {"n_tasks": n_tasks, "hidden": hidden, "epochs": epochs, "lr": float(lr),
                         "batch_size": batch_size, "memory_per_task": memory_per_task, "seed": seed}}


def _train_tasks(model, optimizer, tasks, method, epochs, batch_size, memory_per_task, shuffle_rng, memory_rng,
                 acc, log, step_callback):
    n_tasks = len(tasks)
    for t, (X_tr, y_tr, _, _) in enumerate(tasks):
        n = len(X_tr)
        steps = -(-n // batch_size)
        for _epoch in range(epochs):
            order = shuffle_rng.permutation(n)
            for step in range(steps):
                idx = order[step * batch_size:(step + 1) * batch_size]
                logits = model.forward(asarray(X_tr[idx]))
                _, dlogits = cross_entropy(logits, asarray(y_tr[idx]))
                optimizer.zero_grad()
                model.backward(dlogits, input_grad=False)
                if step_callback is not None:
                    step_callback(t, step, model, optimizer)
                optimizer.step()
        for j in range(t + 1):
            acc[t, j] = evaluate(model, tasks[j][2], tasks[j][3])
        if method == "ogd" and memory_per_task > 0 and t < n_tasks - 1:
            pick = memory_rng.choice(n, size=memory_per_task, replace=False)
            grads = ground_truth_logit_gradients(model, optimizer, X_tr[pick], y_tr[pick])
            optimizer.store_directions(asarray(grads))
        if log:
            seen = " ".join(f"{a:.3f}" for a in acc[t, :t + 1])
            extra = f"  basis {optimizer.basis.shape[0]}" if method == "ogd" else ""
            log(f"[{method}] after task {t}: test acc on tasks 0..{t}: {seen}{extra}")


def continual_table(n_tasks=3, hidden=(100,), epochs=5, lr=0.05, batch_size=32, memory_per_task=200, seed=0,
                    log=print, methods=METHODS):
    """Run :func:`fit_continual` for each method with the same arguments and seed; returns the list of
    result dicts (one row per method)."""
    tasks = permuted_digits(n_tasks, seed)
    return [fit_continual(m, n_tasks=n_tasks, hidden=hidden, epochs=epochs, lr=lr, batch_size=batch_size,
                          memory_per_task=memory_per_task, seed=seed, log=log, tasks=tasks) for m in methods]


def format_continual_table(rows):
    """Markdown table: method, test accuracy on each task after the last task, average, seconds."""
    if not rows:
        raise ValueError("format_continual_table: no rows")
    n_tasks = rows[0]["acc_matrix"].shape[1]
    head = "| method | " + " | ".join(f"task {j}" for j in range(n_tasks)) + " | average | seconds |"
    sep = "|---|" + "---:|" * (n_tasks + 2)
    lines = [head, sep]
    for r in rows:
        last = r["acc_matrix"][-1]
        cells = " | ".join(f"{a:.3f}" for a in last)
        lines.append(f"| {r['method']} | {cells} | {r['average_after_last']:.3f} | {r['seconds']:.1f} |")
    return "\n".join(lines)
