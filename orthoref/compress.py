"""Low-rank compression of a trained model: each Linear / Conv2d weight replaced by its truncated SVD.

``compress_checkpoint(path, out_dir, energy=0.9)`` (``orthoref compress CHECKPOINT --energy 0.9 --out DIR``)
loads a :func:`orthoref.train.fit` checkpoint, factors every weight with :func:`orthoref.analysis.low_rank`
(``M = W.reshape(out, -1) ≈ A B``, ``A`` out×r, ``B`` r×fan_in) and rebuilds the model with

- ``Linear(in, out)`` → ``Sequential(Linear(in, r, bias=False), Linear(r, out))``: weights ``B``, then ``A``
  with the original bias;
- ``Conv2d(in, out, (kh, kw))`` → ``Sequential(Conv2d(in, r, (kh, kw), bias=False), Conv2d(r, out, 1))``:
  the first keeps the stride, padding and dilation and has weight ``B.reshape(r, in, kh, kw)``; the 1×1
  conv has weight ``A.reshape(out, r, 1, 1)`` and the original bias. Its output equals the original conv
  with weight ``(A B).reshape(W.shape)`` (convolution is linear in the weight, and a 1×1 conv mixes the
  channels of each pixel).

A layer stays as it is when the factored form has no fewer parameters, ``r (fan_in + out) >= out · fan_in``
(the report says so), or when it is a grouped convolution. The compressed model is written to
``compressed.npz``, a self-describing file (the architecture as JSON beside the arrays) that
:func:`load_compressed` rebuilds without the training configuration.

References
----------
J. Xue, J. Li and Y. Gong, "Restructuring of deep neural network acoustic models with singular value
decomposition", Interspeech 2013 (a Linear layer as two thin ones from its truncated SVD).
X. Zhang, J. Zou, X. Ming, K. He and J. Sun, "Efficient and accurate approximations of nonlinear
convolutional networks", CVPR 2015 (a kh×kw conv to r channels followed by a 1×1 conv; they fit the factors
to the layer's responses, here they come from the SVD of the weight alone).
"""
from __future__ import annotations

import copy
import json
import numbers
import os

import numpy as np

from .analysis import _int_arg, load_model, low_rank, singular_values
from .backend import active, to_numpy, using
from .nn import (
    GELU,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)

__all__ = [
    "COMPRESSED_FORMAT",
    "build",
    "compress_checkpoint",
    "compress_model",
    "count_parameters",
    "describe",
    "format_compress_report",
    "load_compressed",
    "save_compressed",
]

COMPRESSED_FORMAT = "orthoref-compressed/1"


def count_parameters(model) -> int:
    """Number of scalar parameters of ``model``."""
    return int(sum(int(np.prod(p.shape)) for p in model.parameters()))


# ---------------------------------------------------------------------------------------------------------
# Architecture as JSON: describe(module) -> dict, build(dict, dtype) -> module.

def _ints(v):
    return list(v) if isinstance(v, (tuple, list)) else v


def describe(module):
    """A JSON-able description of ``module``'s architecture (not its parameters): ``{"type": ..., ...}``.

    Supports Sequential (nested), Linear, Conv2d, the pooling layers, Flatten, BatchNorm1d/2d, Dropout and
    the activations; anything else raises ``TypeError``. :func:`build` inverts it.
    """
    t = type(module)
    if t is Sequential:
        return {"type": "Sequential", "layers": [describe(m) for m in module]}
    if t is Linear:
        return {"type": "Linear", "in_features": module.in_features, "out_features": module.out_features,
                "bias": module.bias is not None}
    if t is Conv2d:
        return {"type": "Conv2d", "in_channels": module.in_channels, "out_channels": module.out_channels,
                "kernel_size": _ints(module.kernel_size), "stride": _ints(module.stride),
                "padding": _ints(module.padding), "dilation": _ints(module.dilation), "groups": module.groups,
                "bias": module.bias is not None}
    if t in (MaxPool2d, AvgPool2d):
        d = {"type": t.__name__, "kernel_size": _ints(module.kernel_size), "stride": _ints(module.stride),
             "padding": _ints(module.padding)}
        if t is MaxPool2d:
            d["dilation"] = _ints(module.dilation)
        else:
            d.update(count_include_pad=module.count_include_pad, divisor_override=module.divisor_override)
        return d
    if t is Flatten:
        return {"type": "Flatten", "start_dim": module.start_dim, "end_dim": module.end_dim}
    if t in (BatchNorm1d, BatchNorm2d):
        return {"type": t.__name__, "num_features": module.num_features, "eps": module.eps,
                "momentum": module.momentum, "affine": module.affine,
                "track_running_stats": module.track_running_stats}
    if t is Dropout:
        return {"type": "Dropout", "p": module.p}
    if t is LeakyReLU:
        return {"type": "LeakyReLU", "negative_slope": module.negative_slope}
    if t is GELU:
        return {"type": "GELU", "approximate": module.approximate}
    if t in (ReLU, Tanh, Sigmoid, GlobalAvgPool2d):
        return {"type": t.__name__}
    raise TypeError(f"describe: cannot describe a {t.__name__} layer; supported: Sequential, Linear, Conv2d, "
                    f"MaxPool2d, AvgPool2d, GlobalAvgPool2d, Flatten, BatchNorm1d/2d, Dropout, ReLU, LeakyReLU, "
                    f"Tanh, Sigmoid, GELU")


def _tup(v):
    return tuple(v) if isinstance(v, list) else v


def build(spec, dtype=np.float32):
    """The module that :func:`describe` described, with freshly initialized parameters (``rng=0``) of
    ``dtype`` on the active backend; load the trained values with ``load_state_dict``."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"build: spec must be a dict with a 'type', got {spec!r}")
    kw = {k: _tup(v) for k, v in spec.items() if k != "type"}
    t = spec["type"]
    if t == "Sequential":
        return Sequential(*(build(s, dtype) for s in spec["layers"]))
    if t == "Linear":
        return Linear(kw["in_features"], kw["out_features"], bias=kw["bias"], rng=0, dtype=dtype)
    if t == "Conv2d":
        return Conv2d(kw.pop("in_channels"), kw.pop("out_channels"), kw.pop("kernel_size"), rng=0, dtype=dtype,
                      **kw)
    if t in ("BatchNorm1d", "BatchNorm2d"):
        return {"BatchNorm1d": BatchNorm1d, "BatchNorm2d": BatchNorm2d}[t](dtype=dtype, **kw)
    if t == "Dropout":
        return Dropout(kw["p"], rng=0)
    classes = {c.__name__: c for c in (MaxPool2d, AvgPool2d, Flatten, LeakyReLU, GELU, ReLU, Tanh, Sigmoid,
                                       GlobalAvgPool2d)}
    if t not in classes:
        raise ValueError(f"build: unknown layer type {t!r}")
    return classes[t](**kw)


# ---------------------------------------------------------------------------------------------------------
# Compression.

def _check_choice(who, energy, rank):
    if (rank is None) == (energy is None):
        raise ValueError(f"{who}: give exactly one of energy and rank, got energy={energy!r}, rank={rank!r}")
    if rank is not None:
        _int_arg(who, "rank", rank, 1, 1 << 62)
    elif isinstance(energy, (bool, np.bool_)) or not isinstance(energy, numbers.Real):
        raise TypeError(f"{who}: energy must be a real number, got {type(energy).__name__} {energy!r}")
    elif not 0 < float(energy) <= 1:
        raise ValueError(f"{who}: energy must be in (0, 1], got {energy!r}")


def _factor_layer(layer, energy, rank):
    """``(replacement or None, report entry)`` for one Linear / Conv2d."""
    W = layer.weight.data
    out, fan_in = W.shape[0], int(np.prod(W.shape[1:]))
    full = min(out, fan_in)
    bias = layer.bias is not None
    before = out * fan_in + (out if bias else 0)
    entry = {"type": type(layer).__name__, "shape": [int(d) for d in W.shape], "full_rank": full,
             "params_before": before}
    if isinstance(layer, Conv2d) and layer.groups != 1:
        entry.update(rank=full, energy=1.0, params_after=before, compressed=False,
                     note=f"kept: grouped convolution (groups={layer.groups}) is not factored")
        return None, entry
    A, B, r = low_rank(W, rank=min(rank, full)) if rank is not None else low_rank(W, energy=energy)
    s2 = to_numpy(singular_values(W)) ** 2
    kept = float(s2[:r].sum() / s2.sum()) if s2.sum() > 0 else 1.0
    after = r * (fan_in + out) + (out if bias else 0)
    entry.update(rank=r, energy=kept)
    if r * (fan_in + out) >= out * fan_in:
        entry.update(params_after=before, compressed=False,
                     note=f"kept: rank {r} of {full} needs {r * (fan_in + out)} weights >= {out * fan_in}")
        return None, entry
    entry.update(params_after=after, compressed=True, note=f"rank {r} of {full}")
    if isinstance(layer, Linear):
        first = Linear(W.shape[1], r, bias=False, rng=0, dtype=W.dtype)
        second = Linear(r, out, bias=bias, rng=0, dtype=W.dtype)
        first.weight.data, second.weight.data = B, A
    else:
        first = Conv2d(layer.in_channels, r, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                       bias=False, rng=0, dtype=W.dtype)
        second = Conv2d(r, out, 1, bias=bias, rng=0, dtype=W.dtype)
        first.weight.data = B.reshape((r,) + tuple(W.shape[1:]))
        second.weight.data = A.reshape(out, r, 1, 1)
    if bias:
        second.bias.data = layer.bias.data.copy()
    return Sequential(first, second), entry


def _compress_seq(seq, energy, rank, prefix, report):
    layers = []
    for i, layer in enumerate(seq):
        name = f"{prefix}{i}"
        t = type(layer)
        if t is Sequential:
            layers.append(_compress_seq(layer, energy, rank, name + ".", report))
        elif t in (Linear, Conv2d):
            new, entry = _factor_layer(layer, energy, rank)
            report.append({"name": name, **entry})
            layers.append(copy.deepcopy(layer) if new is None else new)
        else:
            layers.append(copy.deepcopy(layer))
    return Sequential(*layers)


def compress_model(model, energy=None, rank=None):
    """Factor every Linear / Conv2d of a Sequential (nested ones too) by truncated SVD.

    Parameters
    ----------
    model : orthoref.nn.Sequential
        Left unchanged; the result shares no arrays with it.
    energy : float in (0, 1]
        Per layer, the smallest rank keeping this fraction of ``‖M‖²_F`` (see
        :func:`orthoref.analysis.low_rank`).
    rank : int >= 1
        The same rank for every layer (capped at each layer's full rank). Exactly one of the two.

    Returns
    -------
    compressed : Sequential
        A factored layer ``i`` becomes the Sequential ``i`` of two layers, so its parameters are named
        ``i.0.weight``, ``i.1.weight``, ``i.1.bias``; other names are unchanged.
    layers : list of dict
        Per Linear / Conv2d: ``name``, ``type``, ``shape``, ``full_rank``, ``rank``, ``energy`` (the fraction
        of ``‖M‖²_F`` kept), ``params_before``, ``params_after``, ``compressed`` and ``note`` (why a layer
        was kept).
    """
    who = "compress_model"
    if type(model) is not Sequential:
        raise TypeError(f"{who}: model must be an orthoref.nn.Sequential, got {type(model).__name__}")
    _check_choice(who, energy, rank)
    report = []
    compressed = _compress_seq(model, energy, rank, "", report)
    compressed.train(model.training)
    return compressed, report


def save_compressed(path, model, meta=None):
    """Write ``model`` (any module :func:`describe` supports) to ``path`` as a self-describing ``.npz``:
    ``model/<name>`` arrays and a JSON ``meta`` entry with the format tag, dtype and architecture (plus
    ``meta``). Written atomically (temporary file, fsync, rename)."""
    from .train import _atomic_write

    dtypes = {str(p.dtype) for p in model.parameters()}
    if len(dtypes) != 1:
        raise ValueError(f"save_compressed: the model's parameters must share one dtype, got {sorted(dtypes)}")
    record = {"format": COMPRESSED_FORMAT, "dtype": dtypes.pop(), "architecture": describe(model),
              "meta": meta or {}}
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays["meta"] = np.array(json.dumps(record))
    _atomic_write(path, lambda f: np.savez(f, **arrays))
    return path


def load_compressed(path, backend=None, with_meta=False):
    """Rebuild the model written by :func:`save_compressed` / :func:`compress_checkpoint` (eval mode).

    ``backend``: "numpy" or "cupy" (default: the active backend). With ``with_meta`` returns
    ``(model, record)``, ``record`` the JSON entry (``format``, ``dtype``, ``architecture``, ``meta``: the
    compression report and the source checkpoint's configuration). Raises
    ``orthoref.train.CheckpointError`` (a ValueError) for a file of another kind.
    """
    from .train import CheckpointError

    try:
        with np.load(path, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable compressed model ({exc})") from exc
    if "meta" not in files:
        raise CheckpointError(f"{path}: not an orthoref compressed model (no 'meta' entry)")
    record = json.loads(str(files["meta"]))
    if not isinstance(record, dict) or record.get("format") != COMPRESSED_FORMAT:
        fmt = record.get("format") if isinstance(record, dict) else None
        raise CheckpointError(f"{path}: format {fmt!r}, expected {COMPRESSED_FORMAT!r} (a training "
                              f"checkpoint is loaded with orthoref.analysis.load_model)")
    state = {k[len("model/"):]: v for k, v in files.items() if k.startswith("model/")}
    try:
        with using(backend or active()):
            model = build(record["architecture"], dtype=record["dtype"])
            model.load_state_dict(state)
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path}: the stored arrays do not fit the stored architecture: {exc}") from exc
    model.eval()
    return (model, record) if with_meta else model


def compress_checkpoint(path, out_dir, energy=None, rank=None):
    """Compress a training checkpoint by truncated SVD; compare parameters and test accuracy.

    Loads ``path`` (a :func:`orthoref.train.fit` checkpoint, via :func:`orthoref.analysis.load_model`),
    runs :func:`compress_model`, evaluates both models on the configuration's test split (the bundled
    digits by default) with :func:`orthoref.train.evaluate`, and writes into ``out_dir`` (created if
    needed, each file atomically):

    - ``compressed.npz``: the compressed model, loadable with :func:`load_compressed`;
    - ``compress.json``: the report below.

    Parameters
    ----------
    path : str
    out_dir : str
    energy : float in (0, 1] or None
    rank : int >= 1 or None
        Exactly one of the two (see :func:`compress_model`).

    Returns
    -------
    report : dict
        ``checkpoint``, ``energy``, ``rank``, ``params_before``, ``params_after``, ``acc_before``,
        ``acc_after``, ``n_test``, ``layers`` (see :func:`compress_model`), ``path`` (the compressed file).
    """
    from .train import _atomic_write, evaluate, load_data

    who = "compress_checkpoint"
    _check_choice(who, energy, rank)
    model, config, _ = load_model(path)
    compressed, layers = compress_model(model, energy=energy, rank=rank)
    _, _, X_te, y_te = load_data(config)
    with using(config.backend):
        acc_before, acc_after = evaluate(model, X_te, y_te), evaluate(compressed, X_te, y_te)
    report = {"checkpoint": os.path.abspath(path), "energy": energy, "rank": rank,
              "params_before": count_parameters(model), "params_after": count_parameters(compressed),
              "acc_before": acc_before, "acc_after": acc_after, "n_test": len(y_te), "layers": layers}
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, "compressed.npz")
    save_compressed(out, compressed, meta={"report": report, "config": config.to_json()})
    report["path"] = out
    text = json.dumps(report, indent=1) + "\n"
    _atomic_write(os.path.join(out_dir, "compress.json"), lambda f: f.write(text.encode()))
    return report


def format_compress_report(report):
    """A Markdown table of the per-layer ranks and parameters, then the totals and accuracies."""
    lines = ["| layer | type | shape | rank / full | energy kept | params before | params after | note |",
             "|---|---|---|---|---|---|---|---|"]
    for e in report["layers"]:
        lines.append(f"| {e['name']} | {e['type']} | {'×'.join(map(str, e['shape']))} | {e['rank']} / "
                     f"{e['full_rank']} | {e['energy']:.4f} | {e['params_before']} | {e['params_after']} | "
                     f"{e['note']} |")
    pb, pa = report["params_before"], report["params_after"]
    how = f"energy {report['energy']}" if report.get("energy") is not None else f"rank {report['rank']}"
    lines += ["", (f"{how}: parameters {pb} → {pa} ({pa / pb:.1%} of the original, {pb / pa:.2f}x "
                   f"smaller); test accuracy {report['acc_before']:.4f} → {report['acc_after']:.4f} "
                   f"({report['n_test']} test examples)")]
    return "\n".join(lines)

