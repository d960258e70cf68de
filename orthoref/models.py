"""Reference models: the MLP and CNN used by benchmarks (and, later, by ``orthoref train``)."""
from __future__ import annotations

import numpy as np

from ._checks import check_choice, check_int, float_dtype
from .backend import host_rng
from .nn import BatchNorm2d, Conv2d, DecorrelatedBatchNorm, Flatten, IterNorm, Linear, MaxPool2d, ReLU, Sequential

__all__ = ["mlp", "small_cnn", "mlp_shapes", "small_cnn_shapes", "small_cnn_buffers", "NORMS", "NORM_GROUPS",
           "NORM_ITERATIONS"]

#: The normalization layers :func:`small_cnn` can put after each convolution (``"none"``: none).
NORMS = ("none", "bn", "dbn", "iternorm")
#: Channels per whitening group of ``"dbn"`` and ``"iternorm"``; at most 8 because the first convolution of a
#: one-channel image sees 3x3 patches, so its channels span at most 9 dimensions: a group of 16 would have a
#: covariance of rank 9 (its other eigenvalues ``ε``), numerically singular in float32.
NORM_GROUPS = 8
#: Newton steps of ``"iternorm"`` (the paper's ``T``).
NORM_ITERATIONS = 5


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


def _norm_layer(norm, channels, dtype):
    """The normalization layer after a convolution of ``channels`` outputs (a list: empty for ``"none"``)."""
    if norm == "none":
        return []
    if norm == "bn":
        return [BatchNorm2d(channels, dtype=dtype)]
    if norm == "dbn":
        return [DecorrelatedBatchNorm(channels, groups=NORM_GROUPS, dtype=dtype)]
    return [IterNorm(channels, groups=NORM_GROUPS, iterations=NORM_ITERATIONS, dtype=dtype)]


def small_cnn(in_channels=1, image_size=28, n_classes=10, channels=(32, 64), *, weight_init=None, rng=None,
              dtype=np.float32, norm="none") -> Sequential:
    """Conv(3x3, pad 1)–ReLU–MaxPool(2) twice, then Flatten–Linear: on 1x28x28 this is
    Conv2d(1,32) → ReLU → MaxPool2d(2) → Conv2d(32,64) → ReLU → MaxPool2d(2) → Linear(3136, 10).

    ``norm`` (one of :data:`NORMS`) puts a normalization layer between each convolution and its ReLU:
    ``"bn"`` :class:`~orthoref.nn.BatchNorm2d`, ``"dbn"`` :class:`~orthoref.nn.DecorrelatedBatchNorm` and
    ``"iternorm"`` :class:`~orthoref.nn.IterNorm` (groups of :data:`NORM_GROUPS` channels, IterNorm with
    :data:`NORM_ITERATIONS` steps); the Linear layer is then layer 9, not 7. The random draws are those of the
    model without normalization (the normalization layers draw nothing)."""
    who = "small_cnn"
    in_channels, image_size, n_classes, (c1, c2) = _cnn_args(who, in_channels, image_size, n_classes, channels)
    float_dtype(who, dtype)
    norm = check_choice(who, "norm", norm, NORMS)
    gen = host_rng(rng, who=who)
    side = image_size // 4
    init = dict(weight_init=weight_init, rng=gen, dtype=dtype)
    conv1 = Conv2d(in_channels, c1, 3, padding=1, **init)
    conv2 = Conv2d(c1, c2, 3, padding=1, **init)
    return Sequential(
        conv1, *_norm_layer(norm, c1, dtype), ReLU(), MaxPool2d(2),
        conv2, *_norm_layer(norm, c2, dtype), ReLU(), MaxPool2d(2),
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


def small_cnn_shapes(in_channels=1, image_size=28, n_classes=10, channels=(32, 64), norm="none") -> dict:
    """The parameter shapes of ``small_cnn(in_channels, image_size, n_classes, channels, norm=norm)`` by name,
    in ``named_parameters()`` order, computed without building anything (the buffers:
    :func:`small_cnn_buffers`)."""
    who = "small_cnn_shapes"
    in_channels, image_size, n_classes, (c1, c2) = _cnn_args(who, in_channels, image_size, n_classes, channels)
    norm = check_choice(who, "norm", norm, NORMS)
    side = image_size // 4
    if norm == "none":
        return {"0.weight": (c1, int(in_channels), 3, 3), "0.bias": (c1,),
                "3.weight": (c2, c1, 3, 3), "3.bias": (c2,),
                "7.weight": (int(n_classes), c2 * side * side), "7.bias": (int(n_classes),)}
    return {"0.weight": (c1, int(in_channels), 3, 3), "0.bias": (c1,), "1.weight": (c1,), "1.bias": (c1,),
            "4.weight": (c2, c1, 3, 3), "4.bias": (c2,), "5.weight": (c2,), "5.bias": (c2,),
            "9.weight": (int(n_classes), c2 * side * side), "9.bias": (int(n_classes),)}


def small_cnn_buffers(channels=(32, 64), norm="none") -> dict:
    """The buffers of ``small_cnn(..., channels=channels, norm=norm)`` (running statistics) by name, in
    ``named_buffers()`` order: ``{name: (shape, dtype)}``, ``dtype`` ``None`` for the model's float dtype
    (``"int64"`` for BatchNorm's ``num_batches_tracked``); empty without normalization."""
    who = "small_cnn_buffers"
    c1, c2 = _channels(who, channels)
    norm = check_choice(who, "norm", norm, NORMS)
    out = {}
    for index, c in ((1, c1), (5, c2)):
        if norm == "bn":
            out.update({f"{index}.running_mean": ((c,), None), f"{index}.running_var": ((c,), None),
                        f"{index}.num_batches_tracked": ((), "int64")})
        elif norm != "none":
            out.update({f"{index}.running_mean": ((c,), None), f"{index}.running_wm": ((c, c), None)})
    return out
