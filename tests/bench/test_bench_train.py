"""pytest-benchmark micro-benchmarks: one train step (forward, cross-entropy, backward, Adam) of the MLP
784-512-256-10 (batch 128) and of the small CNN (batch 64), float32, as ``orthoref bench`` builds them.

Normal runs execute each body once (``--benchmark-disable`` in pyproject's ``addopts``); for numbers:
``pytest tests/bench --benchmark-enable --benchmark-autosave --benchmark-group-by=group``. The loss on the
fixed batch must go down: Adam steps on one batch, so a broken backward pass or update shows.
"""
import numpy as np
import pytest

from orthoref.bench import train_step
from orthoref.models import mlp, small_cnn
from orthoref.optim import Adam

MODELS = {
    "mlp": (lambda gen: mlp((784, 512, 256, 10), rng=gen), (128, 784)),
    "cnn": (lambda gen: small_cnn(rng=gen), (64, 1, 28, 28)),
}


@pytest.mark.benchmark(group="train")
@pytest.mark.parametrize("model", sorted(MODELS))
def test_train_step(benchmark, model):
    build, shape = MODELS[model]
    gen = np.random.default_rng(0)
    net = build(gen)
    x = gen.standard_normal(shape).astype(np.float32)
    labels = gen.integers(0, 10, size=shape[0])
    opt = Adam(net.parameters(), lr=1e-3)
    first = float(train_step(net, opt, x, labels))          # the loss before any update
    for _ in range(2):
        train_step(net, opt, x, labels)
    loss = benchmark(train_step, net, opt, x, labels)
    assert np.isfinite(first) and float(loss) < first, (first, float(loss))
