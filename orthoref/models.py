"""Reference models: the MLP and CNN used by benchmarks (and, later, by ``orthoref train``)."""
from __future__ import annotations

import numpy as np

from .backend import host_rng
from .nn import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential

__all__ = ["mlp", "small_cnn"]


def mlp(sizes=(784, 512, 256, 10), *, weight_init=None, rng=None, dtype=np.float32) -> Sequential:
    """Linear–ReLU stack: ``mlp((784, 512, 256, 10))`` is 784-512-256-10 with ReLU between layers.
    ``weight_init`` as for :class:`~orthoref.nn.Linear` (None: PyTorch's default)."""
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) < 2:
        raise ValueError(f"mlp: sizes needs at least (in, out), got {sizes}")
    gen = host_rng(rng)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(n_in, n_out, weight_init=weight_init, rng=gen, dtype=dtype))
        if i < len(sizes) - 2:
            layers.append(ReLU())
    return Sequential(*layers)


def small_cnn(in_channels=1, image_size=28, n_classes=10, channels=(32, 64), *, weight_init=None, rng=None,
              dtype=np.float32) -> Sequential:
    """Conv(3x3, pad 1)–ReLU–MaxPool(2) twice, then Flatten–Linear: on 1x28x28 this is
    Conv2d(1,32) → ReLU → MaxPool2d(2) → Conv2d(32,64) → ReLU → MaxPool2d(2) → Linear(3136, 10)."""
    if image_size % 4:
        raise ValueError(f"small_cnn: image_size must be divisible by 4, got {image_size}")
    gen = host_rng(rng)
    c1, c2 = channels
    side = image_size // 4
    init = dict(weight_init=weight_init, rng=gen, dtype=dtype)
    return Sequential(
        Conv2d(in_channels, c1, 3, padding=1, **init), ReLU(), MaxPool2d(2),
        Conv2d(c1, c2, 3, padding=1, **init), ReLU(), MaxPool2d(2),
        Flatten(), Linear(c2 * side * side, n_classes, **init),
    )
