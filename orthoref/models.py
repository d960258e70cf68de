"""Reference models: the MLP and CNN used by benchmarks (and, later, by ``orthoref train``)."""
from __future__ import annotations

import numpy as np

from ._checks import check_int, float_dtype
from .backend import host_rng
from .nn import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential

__all__ = ["mlp", "small_cnn", "mlp_shapes", "small_cnn_shapes"]


def mlp(sizes=(784, 512, 256, 10), *, weight_init=None, rng=None, dtype=np.float32) -> Sequential:
    """Linear–ReLU stack: ``mlp((784, 512, 256, 10))`` is 784-512-256-10 with ReLU between layers.
    ``weight_init`` as for :class:`~orthoref.nn.Linear` (None: PyTorch's default).

    Raises ``TypeError`` for sizes that are not ints (a float, a bool, a string) and ``ValueError`` for
    fewer than two sizes or a size < 1."""
    sizes = _sizes("mlp", sizes)
    float_dtype("mlp", dtype)
    gen = host_rng(rng, who="mlp")
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(n_in, n_out, weight_init=weight_init, rng=gen, dtype=dtype))
        if i < len(sizes) - 2:
            layers.append(ReLU())
    return Sequential(*layers)


def _cnn_args(who, in_channels, image_size, n_classes, channels):
    """The validated ``(in_channels, image_size, n_classes, (c1, c2))`` of the small CNN."""
    in_channels = check_int(who, "in_channels", in_channels, 1)
    image_size = check_int(who, "image_size", image_size, 4)
    n_classes = check_int(who, "n_classes", n_classes, 1)
    if image_size % 4:
        raise ValueError(f"{who}: image_size must be divisible by 4, got {image_size}")
    return in_channels, image_size, n_classes, _channels(who, channels)


def small_cnn(in_channels=1, image_size=28, n_classes=10, channels=(32, 64), *, weight_init=None, rng=None,
              dtype=np.float32) -> Sequential:
    """Conv(3x3, pad 1)–ReLU–MaxPool(2) twice, then Flatten–Linear: on 1x28x28 this is
    Conv2d(1,32) → ReLU → MaxPool2d(2) → Conv2d(32,64) → ReLU → MaxPool2d(2) → Linear(3136, 10)."""
    who = "small_cnn"
    in_channels, image_size, n_classes, (c1, c2) = _cnn_args(who, in_channels, image_size, n_classes, channels)
    float_dtype(who, dtype)
    gen = host_rng(rng, who=who)
    side = image_size // 4
    init = dict(weight_init=weight_init, rng=gen, dtype=dtype)
    return Sequential(
        Conv2d(in_channels, c1, 3, padding=1, **init), ReLU(), MaxPool2d(2),
        Conv2d(c1, c2, 3, padding=1, **init), ReLU(), MaxPool2d(2),
        Flatten(), Linear(c2 * side * side, n_classes, **init),
    )


def _sizes(who, sizes):
    """``sizes`` as a tuple of at least two ints >= 1."""
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__"):
        raise TypeError(f"{who}: sizes must be a sequence of layer widths (ints), got {type(sizes).__name__}")
    sizes = tuple(check_int(who, "sizes", s, 1) for s in sizes)
    if len(sizes) < 2:
        raise ValueError(f"{who}: sizes needs at least (in, out), got {sizes}")
    return sizes


def _channels(who, channels):
    if isinstance(channels, (str, bytes)) or not hasattr(channels, "__len__") or len(channels) != 2:
        raise TypeError(f"{who}: channels must be a pair of ints (c1, c2), got {channels!r}")
    return tuple(check_int(who, "channels", c, 1) for c in channels)


def mlp_shapes(sizes) -> dict:
    """The parameter shapes of ``mlp(sizes)``, by name and in ``named_parameters()`` order, computed
    without building anything (a checkpoint's declared architecture is checked against its arrays with it
    before any allocation)."""
    sizes = _sizes("mlp_shapes", sizes)
    shapes = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes[f"{2 * i}.weight"] = (n_out, n_in)
        shapes[f"{2 * i}.bias"] = (n_out,)
    return shapes


def small_cnn_shapes(in_channels=1, image_size=28, n_classes=10, channels=(32, 64)) -> dict:
    """The parameter shapes of ``small_cnn(in_channels, image_size, n_classes, channels)`` by name, in
    ``named_parameters()`` order, computed without building anything."""
    who = "small_cnn_shapes"
    in_channels, image_size, n_classes, (c1, c2) = _cnn_args(who, in_channels, image_size, n_classes, channels)
    side = image_size // 4
    return {"0.weight": (c1, int(in_channels), 3, 3), "0.bias": (c1,),
            "3.weight": (c2, c1, 3, 3), "3.bias": (c2,),
            "7.weight": (int(n_classes), c2 * side * side), "7.bias": (int(n_classes),)}
