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
import math
import numbers
import os

import numpy as np

from ._checks import (FLOAT_DTYPES, NonFiniteError, all_finite, check_bool, check_choice, check_int, check_real,
                      float_dtype)
from ._io import CheckpointError, atomic_write, loads_strict, read_npz
from ._progress import Progress
from .analysis import load_model, low_rank, singular_values
from .backend import active, get_array_module, to_numpy, using
from .nn import (
    GELU,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    DecorrelatedBatchNorm,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    IterNorm,
    LeakyReLU,
    Linear,
    MaxPool2d,
    Module,
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

#: The ``format`` tag of a compressed checkpoint (``compressed.npz``), checked when it is loaded.
COMPRESSED_FORMAT = "orthoref-compressed/1"


def _check_module(who, name, model):
    if not isinstance(model, Module):
        raise TypeError(f"{who}: {name} must be an orthoref.nn Module, got {type(model).__name__}")


def count_parameters(model) -> int:
    """Number of scalar parameters of ``model`` (an orthoref.nn Module; ``TypeError`` otherwise)."""
    _check_module("count_parameters", "model", model)
    return int(sum(int(np.prod(p.shape)) for p in model.parameters()))


# ---------------------------------------------------------------------------------------------------------
# Architecture as JSON: describe(module) -> dict, build(dict, dtype) -> module.

def _ints(v):
    return list(v) if isinstance(v, (tuple, list)) else v


def describe(module):
    """A JSON-able description of ``module``'s architecture (not its parameters): ``{"type": ..., ...}``.

    Supports Sequential (nested), Linear, Conv2d, the pooling layers, Flatten, BatchNorm1d/2d,
    DecorrelatedBatchNorm, IterNorm, Dropout and the activations; anything else raises ``TypeError``.
    :func:`build` inverts it.
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
    if t in (DecorrelatedBatchNorm, IterNorm):
        d = {"type": t.__name__, "num_features": module.num_features, "groups": module.groups, "eps": module.eps,
             "momentum": module.momentum, "affine": module.affine}
        if t is IterNorm:
            d["iterations"] = module.iterations
        return d
    if t is Dropout:
        return {"type": "Dropout", "p": module.p}
    if t is LeakyReLU:
        return {"type": "LeakyReLU", "negative_slope": module.negative_slope}
    if t is GELU:
        return {"type": "GELU", "approximate": module.approximate}
    if t in (ReLU, Tanh, Sigmoid, GlobalAvgPool2d):
        return {"type": t.__name__}
    raise TypeError(f"describe: cannot describe a {t.__name__} layer (argument module); supported: Sequential, "
                    f"Linear, Conv2d, MaxPool2d, AvgPool2d, GlobalAvgPool2d, Flatten, BatchNorm1d/2d, "
                    f"DecorrelatedBatchNorm, IterNorm, Dropout, ReLU, LeakyReLU, Tanh, Sigmoid, GELU")


def _tup(v):
    return tuple(v) if isinstance(v, list) else v


# Per layer type: its fields, each (kind, required). ``describe`` writes every field; ``build`` needs the
# required ones (the others have the layer's defaults).
_FIELDS = {
    "Sequential": {"layers": ("layers", True)},
    "Linear": {"in_features": ("pos_int", True), "out_features": ("pos_int", True), "bias": ("bool", True)},
    "Conv2d": {"in_channels": ("pos_int", True), "out_channels": ("pos_int", True),
               "kernel_size": ("pair", True), "stride": ("pair", False), "padding": ("padding", False),
               "dilation": ("pair", False), "groups": ("pos_int", False), "bias": ("bool", False)},
    "MaxPool2d": {"kernel_size": ("pair", True), "stride": ("pair_or_none", False), "padding": ("pair", False),
                  "dilation": ("pair", False)},
    "AvgPool2d": {"kernel_size": ("pair", True), "stride": ("pair_or_none", False), "padding": ("pair", False),
                  "count_include_pad": ("bool", False), "divisor_override": ("int_or_none", False)},
    "Flatten": {"start_dim": ("int", False), "end_dim": ("int", False)},
    "BatchNorm1d": {"num_features": ("pos_int", True), "eps": ("real", False), "momentum": ("real_or_none", False),
                    "affine": ("bool", False), "track_running_stats": ("bool", False)},
    "DecorrelatedBatchNorm": {"num_features": ("pos_int", True), "groups": ("pos_int", False),
                              "eps": ("real", False), "momentum": ("real", False), "affine": ("bool", False)},
    "IterNorm": {"num_features": ("pos_int", True), "groups": ("pos_int", False), "iterations": ("pos_int", False),
                 "eps": ("real", False), "momentum": ("real", False), "affine": ("bool", False)},
    "Dropout": {"p": ("real", True)},
    "LeakyReLU": {"negative_slope": ("real", False)},
    "GELU": {"approximate": ("str", False)},
    "ReLU": {}, "Tanh": {}, "Sigmoid": {}, "GlobalAvgPool2d": {},
}
_FIELDS["BatchNorm2d"] = _FIELDS["BatchNorm1d"]
_KIND_TEXT = {"pos_int": "an int in [1, 2147483647]", "int": "an int in [-2147483647, 2147483647]",
              "int_or_none": "an int in [-2147483647, 2147483647] or null", "bool": "true or false",
              "real": "a finite number", "real_or_none": "a finite number or null", "str": "a string",
              "pair": "an int or a list of two ints (|int| <= 2147483647)",
              "pair_or_none": "an int, a list of two ints or null (|int| <= 2147483647)",
              "padding": "an int, a list of two ints or a string (|int| <= 2147483647)",
              "layers": "a list of layer objects"}
_MAX_DEPTH = 64
#: The largest size or int field a layer description may hold (int32's maximum): beyond it no array fits.
_MAX_FIELD = 2**31 - 1


class _SpecError(Exception):
    """A bad architecture field: ``cls`` (TypeError/ValueError), ``field`` (a path such as
    ``.layers[0].in_features``) and what is wrong."""

    def __init__(self, cls, field, text):
        super().__init__(text)
        self.cls, self.field, self.text = cls, field, text


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) and abs(v) <= _MAX_FIELD


def _kind_ok(kind, v):
    if kind in ("int_or_none", "real_or_none", "pair_or_none") and v is None:
        return True
    base = kind.replace("_or_none", "")
    if base == "pos_int":
        return _is_int(v) and v >= 1
    if base == "int":
        return _is_int(v)
    if base == "bool":
        return isinstance(v, (bool, np.bool_))
    if base == "real":
        return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v)
    if base == "str":
        return isinstance(v, str)
    if base in ("pair", "padding"):
        if base == "padding" and isinstance(v, str):
            return True
        return _is_int(v) or (isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_int(x) for x in v))
    return isinstance(v, list)                           # "layers"


def _check_spec(spec, field="", depth=0):
    """Raise :class:`_SpecError` unless ``spec`` is a layer description :func:`build` can read: a dict
    with a known ``type``, no unknown keys, every required key, every value of its kind."""
    if depth > _MAX_DEPTH:
        raise _SpecError(ValueError, field, f"nests more than {_MAX_DEPTH} Sequentials")
    if not isinstance(spec, dict):
        raise _SpecError(TypeError, field, f"must be a layer object (a dict with a 'type'), got "
                                           f"{type(spec).__name__} {_short(spec)}")
    t = spec.get("type")
    if not isinstance(t, str) or t not in _FIELDS:
        raise _SpecError(ValueError, field + ".type", f"is an unknown layer type {_short(t)}; expected one of "
                                                      f"{', '.join(sorted(_FIELDS))}")
    fields = _FIELDS[t]
    unknown = sorted(set(spec) - set(fields) - {"type"})
    if unknown:
        raise _SpecError(ValueError, f"{field}.{unknown[0]}", f"is not a field of {t} (fields: "
                                                              f"{', '.join(fields) or 'none'})")
    for name, (kind, required) in fields.items():
        if name not in spec:
            if required:
                raise _SpecError(ValueError, f"{field}.{name}", f"is missing ({t} needs it)")
            continue
        v = spec[name]
        if not _kind_ok(kind, v):
            ints = [v] if not isinstance(v, (list, tuple)) else v
            is_int = all(isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_)) for x in ints)
            raise _SpecError(ValueError if is_int and kind != "layers" else TypeError, f"{field}.{name}",
                             f"must be {_KIND_TEXT[kind]}, got {type(v).__name__} {_short(v)}")
    if t == "Sequential":
        for i, child in enumerate(spec["layers"]):
            _check_spec(child, f"{field}.layers[{i}]", depth + 1)


def _short(v, limit=60):
    text = repr(v)
    return text if len(text) <= limit else text[:limit] + "..."


def build(spec, dtype=np.float32):
    """The module that :func:`describe` described, with freshly initialized parameters (``rng=0``) of
    ``dtype`` on the active backend; load the trained values with ``load_state_dict``.

    Raises ``ValueError`` (unknown layer type, unknown or missing field) or ``TypeError`` (a field of the
    wrong kind, e.g. a string for an int; a ``dtype`` other than float32/float64) naming the field, such
    as ``spec.layers[0].in_features``, before anything is allocated; the layers' own checks follow.
    """
    dtype = float_dtype("build", dtype)
    try:
        _check_spec(spec)
    except _SpecError as exc:
        raise exc.cls(f"build: spec{exc.field} {exc.text}") from None
    return _build(spec, dtype)


def _build(spec, dtype):
    kw = {k: _tup(v) for k, v in spec.items() if k != "type"}
    t = spec["type"]
    if t == "Sequential":
        return Sequential(*(_build(s, dtype) for s in spec["layers"]))
    if t == "Linear":
        return Linear(kw["in_features"], kw["out_features"], bias=kw["bias"], rng=0, dtype=dtype)
    if t == "Conv2d":
        return Conv2d(kw.pop("in_channels"), kw.pop("out_channels"), kw.pop("kernel_size"), rng=0, dtype=dtype,
                      **kw)
    norms = {c.__name__: c for c in (BatchNorm1d, BatchNorm2d, DecorrelatedBatchNorm, IterNorm)}
    if t in norms:
        return norms[t](dtype=dtype, **kw)
    if t == "Dropout":
        return Dropout(kw["p"], rng=0)
    classes = {c.__name__: c for c in (MaxPool2d, AvgPool2d, Flatten, LeakyReLU, GELU, ReLU, Tanh, Sigmoid,
                                       GlobalAvgPool2d)}
    return classes[t](**kw)


def _state_shapes(spec, prefix="", out=None):
    """``{name: shape}`` of the parameters and buffers the (checked) ``spec`` builds, as ``state_dict`` keys
    them; ``num_batches_tracked`` has shape ``()``. Computed from the description alone, allocating nothing."""
    out = {} if out is None else out
    t = spec["type"]
    if t == "Sequential":
        for i, child in enumerate(spec["layers"]):
            _state_shapes(child, f"{prefix}{i}.", out)
    elif t == "Linear":
        out[prefix + "weight"] = (spec["out_features"], spec["in_features"])
        if spec["bias"]:
            out[prefix + "bias"] = (spec["out_features"],)
    elif t == "Conv2d":
        k = spec["kernel_size"]
        kh, kw = (k, k) if _is_int(k) else tuple(k)
        groups = spec.get("groups", 1)
        out[prefix + "weight"] = (spec["out_channels"], spec["in_channels"] // groups, kh, kw)
        if spec.get("bias", True):
            out[prefix + "bias"] = (spec["out_channels"],)
    elif t in ("BatchNorm1d", "BatchNorm2d"):
        C = spec["num_features"]
        if spec.get("affine", True):
            out[prefix + "weight"] = out[prefix + "bias"] = (C,)
        if spec.get("track_running_stats", True):
            out[prefix + "running_mean"] = out[prefix + "running_var"] = (C,)
            out[prefix + "num_batches_tracked"] = ()
    elif t in ("DecorrelatedBatchNorm", "IterNorm"):
        C = spec["num_features"]
        if spec.get("affine", True):
            out[prefix + "weight"] = out[prefix + "bias"] = (C,)
        out[prefix + "running_mean"], out[prefix + "running_wm"] = (C,), (C, C)
    return out


# ---------------------------------------------------------------------------------------------------------
# Compression.

def _check_choice(who, energy, rank):
    """Exactly one of ``energy`` (a finite number in (0, 1]) and ``rank`` (an int >= 1), returned as
    ``(float or None, int or None)``."""
    if (rank is None) == (energy is None):
        raise ValueError(f"{who}: give exactly one of energy and rank, got energy={energy!r}, rank={rank!r}")
    if rank is not None:
        return None, check_int(who, "rank", rank, 1)
    checked = check_real(who, "energy", energy, 0, 1, lo_open=True)
    return (energy if type(energy) in (int, float) else checked), None      # the caller's 1 stays 1 in the report


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
    s = to_numpy(singular_values(W))
    s2 = s ** 2
    if not np.isfinite(s2.sum()):                # |W| beyond sqrt(float max): the same ratio, rescaled
        s2 = (s / s.max()) ** 2
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
    energy, rank = _check_choice(who, energy, rank)
    for name, p in model.named_parameters():
        if not all_finite(get_array_module(p.data), p.data):
            raise NonFiniteError(f"{who}: model parameter {name!r} must be finite, got NaN or Inf")
    report = []
    compressed = _compress_seq(model, energy, rank, "", report)
    compressed.train(model.training)
    return compressed, report


def save_compressed(path, model, meta=None):
    """Write ``model`` (any module :func:`describe` supports) to ``path`` as a self-describing ``.npz``:
    ``model/<name>`` arrays and a JSON ``meta`` entry with the format tag, dtype and architecture (plus
    ``meta``, a dict of strict-JSON values: no NaN or Infinity). Written atomically (temporary file,
    fsync, rename). Raises ``TypeError`` / ``ValueError`` naming the argument for a model with mixed or
    non-float dtypes, non-finite parameters, or a ``meta`` that is not strict JSON."""
    who = "save_compressed"
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{who}: path must be a str or os.PathLike, got {type(path).__name__}")
    _check_module(who, "model", model)
    if meta is not None and not isinstance(meta, dict):
        raise TypeError(f"{who}: meta must be a dict or None, got {type(meta).__name__}")
    problem = _json_problem(meta or {}, "meta")
    if problem:
        raise ValueError(f"{who}: {problem}")
    dtypes = {str(p.dtype) for p in model.parameters()}
    if len(dtypes) != 1:
        raise ValueError(f"{who}: the model's parameters must share one dtype, got {sorted(dtypes)}")
    dtype = dtypes.pop()
    if np.dtype(dtype) not in FLOAT_DTYPES:
        raise TypeError(f"{who}: the model's parameters must be float32 or float64, got {dtype}")
    record = {"format": COMPRESSED_FORMAT, "dtype": dtype, "architecture": describe(model),
              "meta": meta or {}}
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    for k, v in arrays.items():
        if v.dtype.kind == "f" and not all_finite(np, v):
            raise ValueError(f"{who}: parameter {k[len('model/'):]!r} must be finite, got NaN or Inf")
    arrays["meta"] = np.array(json.dumps(record, allow_nan=False))
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return path


def _json_problem(value, where, depth=0):
    """None when ``value`` is strict JSON (dicts with str keys, lists/tuples, str, finite int/float, bool,
    None), else what is wrong and where (``meta['a'][0] must be ..., got ...``)."""
    if depth > _MAX_DEPTH:
        return f"{where} nests more than {_MAX_DEPTH} levels"
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} must be finite (strict JSON has no NaN or Infinity), " \
                                                  f"got {value!r}"
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"{where} keys must be strings, got {type(k).__name__} {k!r}"
            problem = _json_problem(v, f"{where}[{k!r}]", depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            problem = _json_problem(v, f"{where}[{i}]", depth + 1)
            if problem:
                return problem
        return None
    return (f"{where} must hold only strict-JSON values (str, finite number, bool, None, list, dict), got "
            f"{type(value).__name__}")


def _read_record(path, files, error):
    """The JSON ``meta`` entry of a compressed model, checked: format, dtype, architecture, meta."""
    if "meta" not in files:
        raise error(f"{path}: not an orthoref compressed model (no 'meta' entry)")
    raw = files["meta"]
    if raw.dtype.kind != "U" or raw.ndim != 0:
        raise error(f"{path}: field 'meta' must be a JSON string, got a {raw.dtype} array of shape {raw.shape}")
    try:
        record = loads_strict(str(raw))
    except ValueError as exc:
        raise error(f"{path}: field 'meta' is not valid strict JSON ({exc})") from None
    if not isinstance(record, dict):
        raise error(f"{path}: field 'meta' must be a JSON object, got {type(record).__name__}")
    if record.get("format") != COMPRESSED_FORMAT:
        raise error(f"{path}: format {record.get('format')!r}, expected {COMPRESSED_FORMAT!r} (a training "
                    f"checkpoint is loaded with orthoref.analysis.load_model)")
    for key in ("dtype", "architecture", "meta"):
        if key not in record:
            raise error(f"{path}: field {key!r} is missing from the 'meta' entry")
    if record["dtype"] not in ("float32", "float64"):
        raise error(f"{path}: field 'dtype' must be 'float32' or 'float64', got {_short(record['dtype'])}")
    if not isinstance(record["meta"], dict):
        raise error(f"{path}: field 'meta.meta' must be an object, got {type(record['meta']).__name__}")
    try:
        _check_spec(record["architecture"])
    except _SpecError as exc:
        raise error(f"{path}: field 'architecture{exc.field}' {exc.text}") from None
    return record


def _check_state(path, record, state, error):
    """Every array the architecture needs is stored, with its declared shape, the record's float dtype
    (an integer ``num_batches_tracked`` >= 0) and finite values; nothing else is stored."""
    expected = _state_shapes(record["architecture"])
    missing = [k for k in expected if k not in state]
    if missing:
        raise error(f"{path}: array 'model/{missing[0]}' is missing (the architecture declares it with "
                    f"shape {expected[missing[0]]})")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise error(f"{path}: array 'model/{extra[0]}' is not a parameter of the stored architecture")
    dtype = np.dtype(record["dtype"])
    for k, shape in expected.items():
        a = state[k]
        if tuple(a.shape) != tuple(shape):
            raise error(f"{path}: array 'model/{k}' has shape {tuple(a.shape)}, the architecture declares "
                        f"{tuple(shape)}")
        if k.rsplit(".", 1)[-1] == "num_batches_tracked":
            if a.dtype.kind not in "iu" or int(a) < 0:
                raise error(f"{path}: array 'model/{k}' must be an integer >= 0, got {a.dtype} {a!r}")
            continue
        if a.dtype != dtype:
            raise error(f"{path}: array 'model/{k}' has dtype {a.dtype}, field 'dtype' says {dtype}")
        if not all_finite(np, a):
            raise error(f"{path}: array 'model/{k}' must be finite, got NaN or Inf")


def load_compressed(path, backend=None, with_meta=False):
    """Rebuild the model written by :func:`save_compressed` / :func:`compress_checkpoint` (eval mode).

    ``backend``: "numpy" or "cupy" (default: the active backend). With ``with_meta`` returns
    ``(model, record)``, ``record`` the JSON entry (``format``, ``dtype``, ``architecture``, ``meta``: the
    compression report and the source checkpoint's configuration).

    The file is validated before anything is allocated for the model: it must be an ``.npz`` archive
    (read without pickles; every array's declared shape must match the bytes it holds), its ``meta``
    entry strict JSON with every field of its kind, the architecture's declared parameter shapes those of
    the stored arrays (so no layer is larger than what the file holds), every array float32/float64 as
    declared and finite. Anything else raises ``orthoref.train.CheckpointError`` (a ``ValueError``)
    naming the file and the field; a missing file ``FileNotFoundError``.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"load_compressed: path must be a str or os.PathLike, got {type(path).__name__}")
    with_meta = check_bool("load_compressed", "with_meta", with_meta)
    if backend is not None:
        check_choice("load_compressed", "backend", backend, ("numpy", "cupy"))
    with read_npz(path, "orthoref compressed model", name=str(path)) as npz:
        files = npz.read_all()
    record = _read_record(path, files, CheckpointError)
    unexpected = sorted(k for k in files if k != "meta" and not k.startswith("model/"))
    if unexpected:
        raise CheckpointError(f"{path}: unexpected array {unexpected[0]!r} (a compressed model holds 'meta' "
                              f"and 'model/...' arrays)")
    state = {k[len("model/"):]: v for k, v in files.items() if k.startswith("model/")}
    _check_state(path, record, state, CheckpointError)
    try:
        with using(backend or active()):
            model = _build(record["architecture"], np.dtype(record["dtype"]))
            model.load_state_dict(state)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: the stored architecture is not valid: {exc}") from exc
    model.eval()
    return (model, record) if with_meta else model


def compress_checkpoint(path, out_dir, energy=None, rank=None, progress=False):
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
    progress : bool
        A bar over the stages (loading, factoring, evaluating, writing) on stderr when it is a terminal
        (``orthoref compress``; ``--no-progress`` turns it off).

    Returns
    -------
    report : dict
        ``checkpoint``, ``energy``, ``rank``, ``params_before``, ``params_after``, ``acc_before``,
        ``acc_after``, ``n_test``, ``layers`` (see :func:`compress_model`), ``path`` (the compressed file).
    """
    from .train import evaluate, load_data

    who = "compress_checkpoint"
    for name, value in (("path", path), ("out_dir", out_dir)):
        if not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"{who}: {name} must be a str or os.PathLike, got {type(value).__name__}")
    energy, rank = _check_choice(who, energy, rank)
    progress = check_bool(who, "progress", progress)
    with Progress(4, "compress", progress, unit="stage") as bar:
        bar.update(0, stage="loading")
        model, config, _ = load_model(path)
        bar.update(stage="factoring")
        compressed, layers = compress_model(model, energy=energy, rank=rank)
        bar.update(stage="evaluating")
        _, _, X_te, y_te = load_data(config)
        with using(config.backend):
            acc_before, acc_after = evaluate(model, X_te, y_te), evaluate(compressed, X_te, y_te)
        bar.update(stage="writing")
        report = {"checkpoint": os.path.abspath(path), "energy": energy, "rank": rank,
                  "params_before": count_parameters(model), "params_after": count_parameters(compressed),
                  "acc_before": acc_before, "acc_after": acc_after, "n_test": len(y_te), "layers": layers}
        os.makedirs(out_dir, exist_ok=True)
        out = os.path.join(out_dir, "compressed.npz")
        save_compressed(out, compressed, meta={"report": report, "config": config.to_json()})
        report["path"] = out
        text = json.dumps(report, indent=1, allow_nan=False) + "\n"
        atomic_write(os.path.join(out_dir, "compress.json"), lambda f: f.write(text.encode()))
        bar.update()
    return report


_REPORT_KEYS = ("energy", "rank", "layers", "params_before", "params_after", "acc_before", "acc_after", "n_test")
_LAYER_KEYS = ("name", "type", "shape", "rank", "full_rank", "energy", "params_before", "params_after", "note")


def _check_report(report):
    who = "format_compress_report"
    if not isinstance(report, dict):
        raise TypeError(f"{who}: report must be the dict compress_checkpoint returns, got {type(report).__name__}")
    missing = [k for k in _REPORT_KEYS if k not in report]
    if missing:
        raise ValueError(f"{who}: report lacks {missing} (expected the dict compress_checkpoint returns)")
    if not isinstance(report["layers"], (list, tuple)):
        raise TypeError(f"{who}: report['layers'] must be a list, got {type(report['layers']).__name__}")
    for i, e in enumerate(report["layers"]):
        if not isinstance(e, dict) or any(k not in e for k in _LAYER_KEYS):
            raise ValueError(f"{who}: report['layers'][{i}] must be a dict with keys {list(_LAYER_KEYS)}")
        if not isinstance(e["shape"], (list, tuple)):
            raise TypeError(f"{who}: report['layers'][{i}]['shape'] must be a list, got {type(e['shape']).__name__}")
    for k in ("params_before", "params_after", "acc_before", "acc_after"):
        v = report[k]
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise TypeError(f"{who}: report[{k!r}] must be a finite number, got {v!r}")
    for k in ("params_before", "params_after"):
        if not report[k] > 0:
            raise ValueError(f"{who}: report[{k!r}] must be > 0, got {report[k]!r}")
    for i, e in enumerate(report["layers"]):
        if isinstance(e["energy"], bool) or not isinstance(e["energy"], numbers.Real):
            raise TypeError(f"{who}: report['layers'][{i}]['energy'] must be a number, got {e['energy']!r}")


def format_compress_report(report):
    """A Markdown table of the per-layer ranks and parameters, then the totals and accuracies.
    ``report``: the dict :func:`compress_checkpoint` returns (``TypeError``/``ValueError`` naming the key
    otherwise)."""
    _check_report(report)
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

