"""Bad-input sweep over the WHOLE public API (the README's "Failure model"), beyond the registry ops of
``test_bad_input.py``: every public callable of ``orthoref.ortho``, ``regularizers``, ``init``, ``analysis``,
``compress``, every layer class of ``orthoref.nn`` (constructor, forward, backward) and every optimizer of
``orthoref.optim`` (constructor, step).

The names come from ``__all__`` lists only: each package's own (where it has one) and those of its public
submodules listed in :data:`SOURCES` (``orthoref.ortho.decomp``, ``.iterative``, ``.stiefel``, ``.compare``;
``orthoref.nn.module``, ``.linear``, ...; exception classes are raised, not called, and are left out).
:data:`TABLE` below holds one entry per public callable (valid arguments and what the result promises, or
an explicit exemption with its reason); ``test_every_public_callable_has_an_entry`` fails when a public
callable has none (or an entry names no public callable), and ``test_sources_cover_the_package_namespace``
when a package offers a callable outside the lists swept, so new API cannot escape.

For each callable the valid call must succeed (without modifying its inputs); then one argument at a time is
corrupted with every input class that applies to its kind (``tests/_api_sweep.py``), in float64 and again with
the valid arrays in float32:

- arrays: NaN, +Inf, -Inf, float16, complex128, bool, int64, object array, Python list, empty, wrong rank
  (a trailing axis; flattened), mismatched shape; ×1e300 (×1e30 in float32), near the float maximum, ×1e-310
  (subnormal; ×1e-40 in float32), ×1e-13, float32 ×3e16; zeros, rank-deficient; and two valid layouts,
  read-only and non-contiguous, that must give the valid input's result;
- hyper-parameters: NaN (also as a NumPy scalar), ±Inf, negative / zero where the range excludes them, bool
  (also ``np.bool_``), string, a float for an int (2.5 and 2.0), 10**30 for an iteration count (a hang is a
  failure) or a size (a clear error, never MemoryError/OverflowError), a 10**7 × 10**7 shape, rng=-1, an
  unknown choice, 1e300 where unbounded; bad models (a diverged one with a NaN weight), files and records;
  and the valid value as a NumPy scalar (``np.int64``, ``np.float64``) or an int for a real: accepted, the
  same result;
- cotangents / ``grad_out``: wrong shape, broadcastable ``(1, ..., 1)``, one step too long (RNN), the other
  float dtype, complex, NaN, Inf, near the float maximum (a finite gradient or a clear overflow error);
  ``backward`` before any ``forward``;
- layers: constructor, forward, backward, and ``load_state_dict`` with a corrupted weight or running
  statistic (judged by an eval-mode forward);
- optimizers: constructor and per-group hyper-parameters, bad ``params``; ``step()`` (float64 and float32
  parameters, first and second step) with ``.grad`` of shape (1, 1) or transposed, complex, NaN, Inf, the
  other float dtype, float16, int64, a list, huge; a read-only parameter, a parameter near the float maximum;
  ``load_state_dict`` with a corrupted state array, step count, hyper-parameter or structure.

Each case runs under a SIGALRM guard (a hang is a failure) with NumPy's RuntimeWarnings as errors; a case
stopped by one runs again with them ignored and is judged by that run (the warning is noted). Outcomes are
judged as described in ``tests/_api_sweep.py``: clean error, sound result, silent wrong, unclean error,
wrong-kind accepted. An orthogonalizing map's output must be orthonormal (to its valid-input accuracy). A
scale-invariant map (polar, QR, Gram-Schmidt, Newton-Schulz at large scales, Björck, spectral_normalize,
condition_number, stable_rank, ...) must *accept* its scaled input and return the unscaled result; its VJP
must return the unscaled gradient / s, or a clear overflow error.

The counts per input class and outcome are written to the terminal at the end of the module, and every
test fails with the list of its callable's silent-wrong, unclean and wrong-kind-accepted cases.
(``tools/api_sweep.py`` runs the same sweep outside pytest and writes the failures per area.)
"""
from __future__ import annotations

import functools
import importlib
import inspect
import os
import tempfile

import numpy as np
import pytest

import _api_sweep as S
from orthoref._checks import MAX_ITERATIONS as MAX_IT     # the documented maximum of every iteration count
from _api_sweep import Arr, Choice, Const, Cot, DType, Exempt, Flag, Fn, Fresh, Int, Layer, Made, Obj, Opt, \
    Real, Rng, Shape


# Where the public names come from: package -> modules whose __all__ lists them.
SOURCES = {
    "orthoref.ortho": ("orthoref.ortho.decomp", "orthoref.ortho.iterative", "orthoref.ortho.stiefel",
                       "orthoref.ortho.singular", "orthoref.ortho.compare"),
    "orthoref.regularizers": ("orthoref.regularizers",),
    "orthoref.init": ("orthoref.init",),
    "orthoref.analysis": ("orthoref.analysis",),
    "orthoref.compress": ("orthoref.compress",),
    "orthoref.nn": ("orthoref.nn.module", "orthoref.nn.linear", "orthoref.nn.conv", "orthoref.nn.activation",
                    "orthoref.nn.norm", "orthoref.nn.rnn", "orthoref.nn.orthogonal", "orthoref.ops.loss"),
    "orthoref.optim": ("orthoref.optim",),
    "orthoref.autoencoder": ("orthoref.autoencoder",),
}
AREAS = {"orthoref.ortho": "ortho", "orthoref.regularizers": "math", "orthoref.init": "math",
         "orthoref.analysis": "math", "orthoref.compress": "files", "orthoref.nn": "layers",
         "orthoref.optim": "optim", "orthoref.autoencoder": "math"}


def public_api():
    """``{qualified name: (object, area)}`` for every public callable named in the ``__all__`` lists."""
    api = {}
    for pkg, mods in SOURCES.items():
        for m in (pkg,) + mods:          # the package's own __all__ (where it has one) and its submodules'
            mod = importlib.import_module(m)
            for n in getattr(mod, "__all__", ()):
                obj = getattr(mod, n)
                if _swept(obj):
                    api[f"{pkg}.{n}"] = (obj, AREAS[pkg])
    return api


def _swept(obj):
    """A public callable the sweep calls: not a constant, not an exception class (raised, not called)."""
    return callable(obj) and not (inspect.isclass(obj) and issubclass(obj, BaseException))


# ---------------------------------------------------------------------------------------------------------
# Valid arguments.

_R = np.random.default_rng(20261207)
A53 = _R.standard_normal((5, 3))               # a tall matrix (orthogonalizing maps: (..., n, k), n >= k)
G53 = _R.standard_normal((5, 3))               # a cotangent of the same shape
W35 = _R.standard_normal((3, 5))               # a weight (out, in)
_S = _R.standard_normal((4, 4))
SKEW = (_S - _S.T) / 2                        # a skew-symmetric matrix
G44 = _R.standard_normal((4, 4))
Q53 = np.linalg.qr(_R.standard_normal((5, 3)))[0]   # orthonormal columns: a point of the Stiefel manifold
Z53 = 0.1 * _R.standard_normal((5, 3))
V53 = np.tril(_R.standard_normal((5, 3)), -1) + np.eye(5, 3)
TAU = 2.0 / (V53 * V53).sum(axis=0)           # orthogonal reflectors
K4 = 0.3 * _R.standard_normal((4, 3, 3, 3))    # a conv kernel (out, in, kh, kw)
KS = 0.3 * _R.standard_normal((4, 3, 2, 2))
X104 = _R.standard_normal((10, 4))
XIMG = _R.standard_normal((2, 3, 6, 6))
B53 = A53 @ np.linalg.qr(_R.standard_normal((3, 3)))[0] + 0.1 * _R.standard_normal((5, 3))   # Procrustes target
G33 = _R.standard_normal((3, 3))              # the cotangent of a 3 x 3 rotation
G35 = _R.standard_normal((3, 5))              # the cotangent of W35's map

dtype64 = DType("float64")


def _first(res):
    """The first output of a callable returning a tuple (``Q`` of ``(Q, R)``, ``W/σ`` of ``(W/σ, u)``)."""
    return res[0] if isinstance(res, tuple) else res


def ortho_out(kw, res):
    """The matrix an orthogonalizing map promises orthonormal: its (first) output."""
    return _first(res)


def _gain_ortho(kw, res):
    """An initializer's weight as its matrix ``(shape[0], rest)`` divided by the gain: orthonormal rows or
    columns."""
    gain = kw.get("gain", 1.0)
    gain = gain if isinstance(gain, float) and gain != 0.0 else 1.0
    M = np.asarray(res, np.float64)
    if M.ndim < 2:
        return M
    return M.reshape(M.shape[0], int(np.prod(M.shape[1:]))) / gain


def _srip_v0(kw, res, cls, arg):
    """srip with a zero start vector must not report a penalty of 0 for a non-orthogonal W."""
    if arg == "v0" and cls in ("zeros",):
        from orthoref.regularizers import srip
        exact = float(srip(kw["W"], method="exact")[0])
        if exact > 1e-6 and abs(float(res[0])) <= 1e-12 * exact:
            return f"srip with v0=zeros returns {float(res[0])!r}, the exact penalty is {exact:.4g}"
    return None


def _p(W=None, weight=1.0):
    return {"W": Arr(W35 if W is None else W), "weight": Real(weight, lo=0)}


GRAM = Choice("auto")
ITER = dict(lo=1, hi=MAX_IT, iters=True)
ITER0 = dict(lo=0, hi=MAX_IT, iters=True)       # documented ">= 0" (cayley_iterative: 0 is the first-order step)
TOL = Real(None, lo=0, lo_open=True, huge=False)
TOL0 = Real(None, lo=0, huge=False)             # a tolerance that may be 0
ORTHO_DEGENERATE = ("zeros", "rank-deficient")
# Start vectors (spectral_normalize's u, srip's v0) are documented real array-likes: integer values are
# accepted and act as the same values in float (test_bad_input.REAL_ARRAY_LIKE_KWARGS checks that).
INT_OK = ("int64",)
U5 = Arr(np.ones(5) / np.sqrt(5), skip=INT_OK)

# A message from a layer of the model a function runs names that layer: fine for a model-running function.
MLP_LAYERS = ("Linear", "Tanh")


def _tiny_mlp():
    from orthoref import nn
    return nn.Sequential(nn.Linear(4, 6, rng=0, dtype=np.float64), nn.Tanh(),
                         nn.Linear(6, 3, rng=1, dtype=np.float64))


_MODEL_BAD = (("h string", "model"), ("int64", 3), ("list", [1, 2]))


def _nan_mlp():
    """The tiny MLP with a NaN in its first weight (a diverged model)."""
    m = _tiny_mlp()
    m[0].weight.data[0, 0] = np.nan
    return m


# A function that computes with the model's weights refuses a diverged one.
_MODEL_BAD_NUMERIC = _MODEL_BAD + (("nan", _nan_mlp()),)


def _model(bad):
    """A model argument (the tiny MLP); a message may name the parameter or weight at fault."""
    return Obj(_tiny_mlp(), bad=bad, aliases=("parameter", "weight"))


class Ctx:
    """Models, a checkpoint and a compressed file, made once per run in a temporary directory."""

    def __init__(self):
        self._tmp = None
        self._ckpt = None
        self._compressed = None

    @property
    def tmp(self):
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="api-sweep-")
        return self._tmp.name

    def out_dir(self):
        return tempfile.mkdtemp(dir=self.tmp)

    def checkpoint(self):
        if self._ckpt is None:
            from orthoref import train
            cfg = train.TrainConfig(hidden=(8,), epochs=1, dtype="float64", out=os.path.join(self.tmp, "run"),
                                    progress=False)
            self._ckpt = train.fit(cfg, log=None)["checkpoint"]
        return self._ckpt

    def compressed(self):
        if self._compressed is None:
            from orthoref.compress import save_compressed
            self._compressed = save_compressed(os.path.join(self.tmp, "compressed.npz"), _tiny_mlp())
        return self._compressed


CTX = Ctx()


def _path_bad():
    bogus = os.path.join(CTX.tmp, "not-npz.txt")
    with open(bogus, "w") as f:
        f.write("hello")
    return (("missing file", os.path.join(CTX.tmp, "missing.npz")), ("directory", CTX.tmp), ("not an npz", bogus),
            ("h bool", True), ("int64", 3))


def _path(kind):
    return Made(lambda: getattr(CTX, kind)(), _path_bad, aliases=("file", "checkpoint"))


def _once(make):
    return functools.cache(make)


def _rows(make, bad=(("h string", "rows"), ("int64", 3), ("list", [1, 2]), ("missing key", [{}]))):
    return Made(_once(make), lambda: bad)


def _compare_rows():
    from orthoref.ortho.compare import compare
    return compare(n=6, dtype="float64", repeat=1, rng=0, cond=100.0)


def _mclip_rows():
    from orthoref.ortho.compare import mclip_table
    return mclip_table(n=6, dtype="float64", repeat=1, rng=0, cond=100.0, steps=(2,))


def _gs_rows():
    from orthoref.ortho.decomp import gram_schmidt_table
    return gram_schmidt_table(n=8, k=3, kappas=(100.0,), rng=0)


def _layer_rows():
    from orthoref.analysis import layer_table
    return layer_table(_tiny_mlp())


def _report():
    from orthoref.compress import compress_model
    _, layers = compress_model(_tiny_mlp(), rank=2)
    return {"layers": layers, "params_before": 45, "params_after": 40, "rank": 2, "energy": None,
            "acc_before": 0.5, "acc_after": 0.5, "n_test": 10}


ORTHO = {
    "gram_schmidt": Fn({"A": Arr(A53), "method": Choice("mgs"), "return_r": Flag(False)}, ortho=ortho_out,
                       scale_inv=_first),
    "gram_schmidt_vjp": Fn(scale_inv=_first, scale_pow=1,
                           args={"A": Arr(A53), "grad_out": Cot(G53), "method": Choice("mgs")}),
    "gram_schmidt_table": Fn({"n": Int(8, lo=1, hi=None), "k": Int(3, lo=1),
                              "kappas": Obj((100.0,), bad=(("h nan", (float("nan"),)), ("h +inf", (float("inf"),)),
                                                          ("h negative", (-1.0,)), ("h string", "ab"),
                                                          ("h huge", (1e300,)))),
                              "rng": Rng(0)}),
    "qr_orthogonalize": Fn({"A": Arr(A53)}, ortho=ortho_out, scale_inv=_first),
    "qr_orthogonalize_vjp": Fn(scale_inv=_first, scale_pow=1, args={"A": Arr(A53), "grad_out": Cot(G53)}),
    "polar": Fn({"A": Arr(A53), "side": Choice("right"), "return_p": Flag(False)}, ortho=ortho_out,
                scale_inv=_first),
    "polar_vjp": Fn(scale_inv=_first, scale_pow=1, args={"A": Arr(A53), "grad_out": Cot(G53), "side": Choice("right"),
                                                         "return_p": Flag(False)}),
    # scale (the nuclear norm of AᵀB) overflows near the float maximum: the scaled inputs may be refused
    "procrustes": Fn({"A": Arr(A53), "B": Arr(B53)}, ortho=ortho_out),
    "procrustes_vjp": Fn({"A": Arr(A53), "B": Arr(B53), "grad_out": Cot(G33), "grad_scale": Cot(np.asarray(0.7))}),
    "clip_singular_values": Fn({"W": Arr(W35), "lo": Real(0.5, lo=0), "hi": Real(2.0, lo=0, lo_open=True)}),
    "clip_singular_values_vjp": Fn({"W": Arr(W35), "grad_out": Cot(G35), "lo": Real(0.5, lo=0),
                                    "hi": Real(2.0, lo=0, lo_open=True)}),
    "clip_conv_singular_values": Fn({"K": Arr(K4), "input_shape": Shape((5, 5), aliases=("input_shape",)),
                                     "lo": Real(0.2, lo=0), "hi": Real(1.0, lo=0, lo_open=True),
                                     "project": Flag(True)}),
    "mclip": Fn({"W": Arr(W35), "method": Choice("newton_schulz"), "steps": Int(8, **ITER),
                 "coefficients": Choice("polar_express")}, variants=({"method": Const("svd")},)),
    "mclip_vjp": Fn({"W": Arr(W35), "grad_out": Cot(G35), "method": Choice("newton_schulz"), "steps": Int(8, **ITER),
                     "coefficients": Choice("polar_express")}, variants=({"method": Const("svd")},)),
    "householder_product": Fn({"V": Arr(V53), "tau": Arr(TAU)}),
    "householder_product_vjp": Fn({"V": Arr(V53), "tau": Arr(TAU), "grad_out": Cot(G53)}),
    "orthogonality_error_2": Fn({"Q": Arr(Q53)}),
    "orthogonality_error_fro": Fn({"W": Arr(Q53)}),
    "orthogonality_error_rms": Fn({"W": Arr(W35), "gram": GRAM}),
    "newton_schulz": Fn({"A": Arr(A53), "steps": Int(5, **ITER), "coefficients": Choice("jordan"),
                         "eps": Real(1e-7, lo=0, huge=False)},
                        ortho=ortho_out, ortho_skip=("x1e-310", "x1e-40") + ORTHO_DEGENERATE, scale_inv=_first,
                        scale_classes=("x1e300", "x1e30", "float32 x3e16")),    # eps: not invariant when tiny
    "newton_schulz_vjp": Fn({"A": Arr(A53), "grad_out": Cot(G53), "steps": Int(5, **ITER),
                             "coefficients": Choice("jordan"), "eps": Real(1e-7, lo=0, huge=False)}),
    "ns_polynomial": Fn({"coefficients": Choice("jordan"), "steps": Int(3, **ITER)}),
    "ns_worst_error": Fn({"coefficients": Choice("jordan"), "lo": Real(0.001, lo=0, hi=1, lo_open=True),
                          "steps": Int(3, **ITER)}),
    "design_ns_coefficients": Fn({"steps": Int(8, **ITER), "sigma_min": Real(0.001, lo=0, lo_open=True),
                                  "sigma_max": Real(1.0, lo=0, hi=1, lo_open=True),
                                  "degree": Obj(5, bad=(("h unknown", 4), ("h integral float", 5.0),
                                                        ("h bool", True), ("h string", "5"),
                                                        ("h nan", float("nan")))),
                                  "safety": Real(1.01, lo=1), "cushion": Real(0.1, lo=0, hi=1, hi_open=True),
                                  "return_bound": Flag(False)}),
    "bjorck": Fn({"A": Arr(A53), "steps": Int(15, **ITER), "beta": Real(0.5, lo=0, lo_open=True)},
                 ortho=ortho_out, ortho_skip=ORTHO_DEGENERATE, scale_inv=_first),
    "bjorck_vjp": Fn(scale_inv=_first, scale_pow=1,
                     args={"A": Arr(A53), "grad_out": Cot(G53), "steps": Int(15, **ITER),
                           "beta": Real(0.5, lo=0, lo_open=True)}),
    "parseval_retraction": Fn({"W": Arr(A53), "beta": Real(0.001, lo=0)}),
    "parseval_retraction_vjp": Fn({"W": Arr(A53), "grad_out": Cot(G53), "beta": Real(0.001, lo=0)}),
    "spectral_normalize": Fn({"W": Arr(A53), "u": U5, "n_iter": Int(1, **ITER), "eps": Real(1e-12, lo=0, huge=False),
                              "rng": Rng(0)},
                             scale_inv=_first, variants=({"n_iter": Const(20)},)),
    "spectral_normalize_vjp": Fn(scale_inv=_first, scale_pow=1,
                                 args={"W": Arr(A53), "grad_out": Cot(G53), "u": U5, "n_iter": Int(1, **ITER),
                                       "eps": Real(1e-12, lo=0, huge=False), "rng": Rng(0)}),
    "cayley": Fn({"A": Arr(SKEW, struct="skew"), "check_skew": Flag(False)}, ortho=ortho_out),
    "cayley_vjp": Fn({"A": Arr(SKEW, struct="skew"), "grad_out": Cot(G44), "check_skew": Flag(False)}),
    "expm_skew": Fn({"A": Arr(SKEW, struct="skew"), "check_skew": Flag(False)}, ortho=ortho_out),
    "expm_skew_vjp": Fn({"A": Arr(SKEW, struct="skew"), "grad_out": Cot(G44), "check_skew": Flag(False)}),
    "project_tangent": Fn({"W": Arr(Q53), "G": Arr(G53), "metric": Choice("euclidean"), "check": Flag(True),
                           "tol": TOL}),
    "project_tangent_vjp": Fn({"W": Arr(Q53), "G": Arr(G53), "grad_out": Cot(Z53), "metric": Choice("euclidean"),
                               "wrt": Choice("G"), "check": Flag(True), "tol": TOL}),
    "retract": Fn({"W": Arr(Q53), "Z": Arr(Z53), "method": Choice("qr"), "check": Flag(True), "tol": TOL},
                  ortho=ortho_out, variants=({"method": Const("polar")}, {"method": Const("cayley")},
                                             {"method": Const("exp")})),
    "retract_vjp": Fn({"W": Arr(Q53), "Z": Arr(Z53), "grad_out": Cot(G53), "method": Choice("qr"),
                       "check": Flag(True), "tol": TOL},
                      variants=({"method": Const("polar")}, {"method": Const("cayley")}, {"method": Const("exp")})),
    "cayley_iterative": Fn({"W": Arr(Q53), "Z": Arr(Z53), "alpha": Real(0.1), "iterations": Int(2, **ITER0),
                            "check": Flag(True), "tol": TOL}, ortho=ortho_out, ortho_atol=1e-5),
    "cayley_iterative_vjp": Fn({"W": Arr(Q53), "Z": Arr(Z53), "alpha": Real(0.1), "grad_out": Cot(G53),
                                "iterations": Int(2, **ITER0), "check": Flag(True), "tol": TOL}),
    "compare": Fn({"n": Int(6, lo=1, hi=None), "dtype": dtype64, "repeat": Int(1, lo=1, hi=None), "rng": Rng(0),
                   "cond": Real(100.0, lo=1, huge=False)}),
    "format_table": Fn({"rows": _rows(_compare_rows), "n": Const(6), "dtype": Const("float64"),   # n, dtype, cond:
                        "cond": Const(100.0)}),                                                 # labels only
    "format_gram_schmidt_table": Fn({"rows": _rows(_gs_rows)}),
    "mclip_table": Fn({"n": Int(6, lo=2, hi=None), "dtype": dtype64, "repeat": Int(1, lo=1, hi=None), "rng": Rng(0),
                       "cond": Real(100.0, lo=1, huge=False),
                       "steps": Obj((2, 3), bad=(("h string", "23"), ("h float", (2.5,)), ("h zero", (0,)),
                                                 ("h int", 3)))}),
    "format_mclip_table": Fn({"rows": _rows(_mclip_rows), "n": Const(6), "dtype": Const("float64"),
                              "cond": Const(100.0)}),
    "sample_matrix": Fn({"n": Int(6, lo=1, hi=None), "dtype": dtype64, "rng": Rng(0),
                         "cond": Real(100.0, lo=1, huge=False)}),
}

REGULARIZERS = {
    "soft_orthogonality": Fn({**_p(), "gram": GRAM}),
    "double_soft_orthogonality": Fn(_p()),
    "mutual_coherence": Fn({**_p(), "gram": GRAM}),
    "srip": Fn({**_p(), "n_iter": Int(1, **ITER), "rng": Rng(0), "v0": Arr(np.ones(3) / np.sqrt(3), skip=INT_OK),
                "method": Choice("power"), "gram": GRAM}, check=_srip_v0,
               variants=({"method": Const("exact"), "v0": Const(None), "n_iter": Const(1)},)),
    "off_diagonal": Fn(_p()),
    "l1_orthogonality": Fn({**_p(), "gram": GRAM}),
    "kernel_slice_orthogonality": Fn({"W": Arr(KS), "weight": Real(1e-4, lo=0)}),
    "self_orthogonality": Fn({"Y": Arr(X104), "lam1": Real(100.0, lo=0), "lam2": Real(1.0, lo=0),
                              "gamma": Real(10.0, lo=0), "eps": Real(1e-8, lo=0, lo_open=True)}),
    "conv_orthogonality": Fn({"K": Arr(K4), "weight": Real(1.0, lo=0), "stride": Int(1, lo=1, hi=None),
                              "padding": Int(1, lo=0), "squared": Flag(True)}),
    "spectral_penalty": Fn(_p()),
    "decov": Fn({"H": Arr(X104), "weight": Real(1.0, lo=0)}),
}


def _init(shape=(6, 4), **extra):
    return {"shape": Shape(shape), **extra, "rng": Rng(0), "dtype": dtype64}


GAIN = Real(1.0)
F32 = {"dtype": Const("float32")}          # float32 variant: gain=1e300 must not come back as inf


INIT = {
    "orthogonal": Fn({"shape": Shape((6, 4)), "gain": GAIN, "rng": Rng(0), "dtype": dtype64, "method": Choice("qr"),
                      "convention": Choice("pytorch")}, ortho=_gain_ortho, variants=(F32,)),
    "orthogonalize_gaussian": Fn({"A": Arr(A53), "gain": GAIN, "method": Choice("qr")}, ortho=_gain_ortho,
                                 ortho_skip=ORTHO_DEGENERATE, scale_inv=lambda r: r),
    "special_orthogonal": Fn(_init((4, 4), gain=GAIN), ortho=_gain_ortho, variants=(F32,)),
    "delta_orthogonal": Fn(_init((4, 4, 3, 3), gain=GAIN)),
    "block_orthogonal_conv": Fn(_init((4, 4, 3, 3), gain=GAIN)),
    "identity": Fn(_init((4, 4), gain=GAIN)),
    "calculate_gain": Fn({"nonlinearity": Choice("leaky_relu"), "param": Real(0.2)}),
    "calculate_fan_in_and_fan_out": Fn({"shape": Shape((6, 4, 3, 3))}),
    "xavier_uniform": Fn(_init(gain=GAIN)),
    "xavier_normal": Fn(_init(gain=GAIN), variants=(F32,)),
    "kaiming_uniform": Fn({"shape": Shape((6, 4)), "a": Real(0.0), "mode": Choice("fan_in"),
                           "nonlinearity": Choice("leaky_relu"), "rng": Rng(0), "dtype": dtype64}),
    "kaiming_normal": Fn({"shape": Shape((6, 4)), "a": Real(0.0), "mode": Choice("fan_in"),
                          "nonlinearity": Choice("leaky_relu"), "rng": Rng(0), "dtype": dtype64}),
    "lecun_normal": Fn({**_init(gain=GAIN), "truncated": Flag(False)}),
    "normal": Fn(_init(mean=Real(0.0), std=Real(1.0, lo=0)), variants=(F32,)),
    "uniform": Fn(_init(a=Real(0.0, huge=False), b=Real(1.0, huge=False))),
    "pytorch_default": Fn({**_init(), "fan_in": Int(4, lo=0, hi=None)}),
    "lsuv": Fn({"model": Fresh(_tiny_mlp), "x": Arr(X104), "tol": Real(0.1, lo=0, lo_open=True),
                "max_iter": Int(10, **ITER), "rng": Rng(0), "return_report": Flag(False)}, dtype=None,
               who=MLP_LAYERS, float32=False),
    "get_initializer": Fn({"name_or_callable": Obj("orthogonal", bad=(("h string", "no-such-init"),
                                                                       ("h nan", float("nan")), ("h bool", True),
                                                                       ("int64", 3)), aliases=("initializer",))}),
}

ANALYSIS = {
    "PCAResult": Exempt("a result record (dataclass) returned by pca; holds no validation"),
    "analyze_checkpoint": Fn({"path": _path("checkpoint"), "out_dir": Fresh(lambda: CTX.out_dir()),
                              "figures": Obj(False, bad=(("h string", "yes"), ("h nan", float("nan")),
                                                         ("h int for bool", 2))),
                              "jacobian_examples": Int(4, lo=0, hi=1 << 30),    # documented: 0 skips it
                              "progress": Flag(False)}),
    "condition_number": Fn({"W": Arr(W35)}, scale_inv=lambda r: r, allow_inf=("zeros", "rank-deficient")),
    "effective_rank": Fn({"W": Arr(W35)}, scale_inv=lambda r: r),
    "filter_angles": Fn(dtype=None, args={"W": Arr(W35)}, scale_inv=lambda r: r),
    "format_layer_table": Fn({"rows": _rows(_layer_rows)}),
    "jacobian": Fn({"model": _model(_MODEL_BAD_NUMERIC), "x": Arr(X104)}, who=MLP_LAYERS,
                   float32=False),                                  # the model is float64
    "jacobian_singular_values": Fn({"model": _model(_MODEL_BAD_NUMERIC), "x": Arr(X104)}, dtype=None,
                                   float32=False,
                                   who=("jacobian",) + MLP_LAYERS),      # documented: the Jacobian of jacobian()
    "layer_table": Fn({"model": _model(_MODEL_BAD_NUMERIC)}),
    "load_model": Fn({"path": _path("checkpoint")}),
    "low_rank": Fn({"W": Arr(W35), "rank": Int(2, lo=1, hi=None), "energy": Const(None)},
                   variants=({"rank": Const(None), "energy": Real(0.9, lo=0, hi=1, lo_open=True)},),
                   shape_check=lambda args: not isinstance(args["energy"], Real)),   # energy: the rank varies
    "pca": Fn(dtype=None, args={"X": Arr(X104), "k": Int(2, lo=1, hi=None), "whiten": Flag(False)}),
    "singular_values": Fn(dtype=None, args={"W": Arr(W35)}, scale_inv=lambda r: r, scale_pow=-1),
    "conv_singular_values": Fn(dtype=None, args={"K": Arr(K4), "input_shape": Shape((5, 5), aliases=("input_shape",))},
                               scale_inv=lambda r: r, scale_pow=-1),
    "stable_rank": Fn({"W": Arr(W35)}, scale_inv=lambda r: r),
    "weights": Fn({"model": _model(_MODEL_BAD)}),
}


def _describe_bad():
    return (("h string", "x"), ("unknown type", {"type": "Nope"}), ("missing key", {"type": "Linear"}),
            ("h negative", {"type": "Linear", "in_features": -1, "out_features": 2, "bias": True}),
            ("h huge", {"type": "Linear", "in_features": 10**30, "out_features": 2, "bias": True}),
            ("h float for int", {"type": "Linear", "in_features": 2.5, "out_features": 2, "bias": True}),
            ("h string", {"type": "Linear", "in_features": "2", "out_features": 2, "bias": True}))


COMPRESS = {
    "build": Fn({"spec": Obj({"type": "Linear", "in_features": 4, "out_features": 3, "bias": True},
                             bad=_describe_bad()), "dtype": dtype64}, dtype=None),
    "compress_checkpoint": Fn({"path": _path("checkpoint"), "out_dir": Fresh(lambda: CTX.out_dir()),
                               "energy": Real(0.9, lo=0, hi=1, lo_open=True), "rank": Const(None),
                               "progress": Flag(False)},
                              variants=({"energy": Const(None), "rank": Int(2, lo=1, hi=None)},)),
    "compress_model": Fn({"model": _model(_MODEL_BAD_NUMERIC), "energy": Real(0.9, lo=0, hi=1, lo_open=True),
                          "rank": Const(None)},
                         variants=({"energy": Const(None), "rank": Int(2, lo=1, hi=None)},)),
    "count_parameters": Fn({"model": _model(_MODEL_BAD)}),
    "describe": Fn({"module": _model(_MODEL_BAD)}),
    "format_compress_report": Fn({"report": _rows(_report, (("h string", "report"), ("int64", 3),
                                                            ("missing key", {})))}),
    "load_compressed": Fn({"path": _path("compressed"), "backend": Choice("numpy"), "with_meta": Flag(False)}),
    "save_compressed": Fn({"path": Fresh(lambda: os.path.join(CTX.out_dir(), "c.npz")),
                           "model": _model(_MODEL_BAD_NUMERIC),
                           "meta": Obj({}, bad=(("object array", {"a": object()}), ("h nan", {"a": float("nan")}),
                                                ("h string", "meta")))}),
}


def _x(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape)


_LIN = {"in_features": Int(4, lo=1, hi=None), "out_features": Int(3, lo=1, hi=None), "bias": Flag(True),
        "rng": Rng(0), "dtype": dtype64}
_CONV = {"in_channels": Int(3, lo=1, hi=None), "out_channels": Int(4, lo=1, hi=None), "kernel_size": Int(3, lo=1),
         "stride": Int(1, lo=1), "padding": Int(1, lo=0), "bias": Flag(True), "rng": Rng(0), "dtype": dtype64}
_ORTH = {"map": Choice("matrix_exp"), "trivialization": Flag(True), "steps": Int(5, **ITER),
         "coefficients": Choice("jordan"), "eps": Real(1e-7, lo=0)}


# A Generator argument, fresh for every call (the same draws each time).
GEN0 = Made(lambda: np.random.default_rng(0), lambda: (("rng=-1", -1), ("h string", "0")))


def _labels_bad():
    return (("float64", np.array([0.0, 2.0, 1.0, 2.0])), ("label out of range", np.array([0, 2, 1, 200])),
            ("h negative", np.array([0, 2, 1, -1])), ("bool", np.array([True, False, True, False])),
            ("list", [0, 2, 1, 2]), ("wrong rank", np.array([[0, 2, 1, 2]])),
            ("mismatched shape", np.array([0, 2, 1, 2, 1])), ("empty", np.array([], np.int64)))


NN = {
    "Parameter": Fn({"data": Arr(A53, nan=False, skip=("empty", "wrong rank", "mismatched shape") + S.SCALE_CLASSES
                                 + ORTHO_DEGENERATE), "name": Obj("W", bad=(("int64", 3),))}),
    "Module": Exempt("abstract base class: forward/backward raise NotImplementedError; every layer below is one"),
    "Sequential": Layer({"layers": Obj(tuple(_tiny_mlp()), aliases=("argument",),
                                       bad=(("int64", (3,)), ("h string", ("relu",)), ("object array", (np.ones(3),)),
                                            ("class, not instance", (object,))))},
                        x=Arr(X104), star="layers", who=MLP_LAYERS),
    "check_input": Fn({"layer": Const("Test"), "x": Arr(_x((2, 3)), nan=False, aliases=("input",)), "ndim": Const(2),
                       "channels": Int(3, lo=1, hi=None)}, dtype=None, who=("Test",)),
    "Linear": Layer(dict(_LIN), x=Arr(X104)),
    "kaiming_uniform_default": Fn({"shape": Shape((3, 4)), "fan_in": Int(4, lo=0, hi=None),
                                   "rng": GEN0,
                                   "dtype": dtype64}),
    "init_weight": Fn({"weight_init": Obj("orthogonal", bad=(("h string", "no-such-init"), ("int64", 3))),
                       "shape": Shape((3, 4)), "fan_in": Int(4, lo=0, hi=None),
                       "rng": GEN0,
                       "dtype": dtype64, "who": Const("Linear")}, who=("Linear",),
                      variants=({"weight_init": Const(None)},)),          # PyTorch's default: uses fan_in
    "Conv2d": Layer({**_CONV, "dilation": Int(1, lo=1), "groups": Int(1, lo=1)}, x=Arr(XIMG)),
    "MaxPool2d": Layer({"kernel_size": Int(2, lo=1), "stride": Int(2, lo=1), "padding": Int(0, lo=0),
                        "dilation": Int(1, lo=1)}, x=Arr(XIMG)),
    "AvgPool2d": Layer({"kernel_size": Int(2, lo=1), "stride": Int(2, lo=1), "padding": Int(0, lo=0),
                        "count_include_pad": Flag(True), "divisor_override": Int(3, lo=1)}, x=Arr(XIMG)),
    "GlobalAvgPool2d": Layer({}, x=Arr(XIMG)),
    "Flatten": Layer({"start_dim": Int(1), "end_dim": Int(-1)}, x=Arr(XIMG)),
    "ReLU": Layer({}, x=Arr(X104)),
    "LeakyReLU": Layer({"negative_slope": Real(0.01, huge=False)}, x=Arr(X104)),
    "Tanh": Layer({}, x=Arr(X104)),
    "Sigmoid": Layer({}, x=Arr(X104)),
    "GELU": Layer({"approximate": Choice("none")}, x=Arr(X104)),
    "Dropout": Layer({"p": Real(0.5, lo=0, hi=1, hi_open=True), "rng": Rng(0)}, x=Arr(X104)),
    "BatchNorm1d": Layer({"num_features": Int(4, lo=1, hi=None), "eps": Real(1e-5, lo=0, lo_open=True),
                          "momentum": Real(0.1, lo=0, hi=1), "affine": Flag(True), "track_running_stats": Flag(True),
                          "dtype": dtype64}, x=Arr(X104)),
    "BatchNorm2d": Layer({"num_features": Int(3, lo=1, hi=None), "eps": Real(1e-5, lo=0, lo_open=True),
                          "momentum": Real(0.1, lo=0, hi=1), "affine": Flag(True), "track_running_stats": Flag(True),
                          "dtype": dtype64}, x=Arr(XIMG)),
    "DecorrelatedBatchNorm": Layer({"num_features": Int(4, lo=1, hi=None), "groups": Int(2, lo=1, hi=None),
                                    "eps": Real(1e-5, lo=0, lo_open=True), "momentum": Real(0.1, lo=0, hi=1),
                                    "affine": Flag(True), "dtype": dtype64}, x=Arr(X104)),
    "IterNorm": Layer({"num_features": Int(3, lo=1, hi=None), "groups": Int(2, lo=1, hi=None),
                       "iterations": Int(5, **ITER), "eps": Real(1e-5, lo=0, lo_open=True),
                       "momentum": Real(0.1, lo=0, hi=1), "affine": Flag(True), "dtype": dtype64}, x=Arr(XIMG)),
    "RNN": Layer({"input_size": Int(3, lo=1, hi=None), "hidden_size": Int(4, lo=1, hi=None),
                  "nonlinearity": Choice("tanh"), "bias": Flag(True), "rng": Rng(0), "dtype": dtype64},
                 x=Arr(_x((5, 2, 3))), fwd={"h0": Arr(_x((2, 4), 2))}, rnn=True),
    "OrthogonalLinear": Layer({"in_features": Int(4, lo=1, hi=None), "out_features": Int(3, lo=1, hi=None),
                               "bias": Flag(True), **_ORTH, "rng": Rng(0), "dtype": dtype64}, x=Arr(X104)),
    "OrthogonalConv2d": Layer({"in_channels": Int(3, lo=1, hi=None), "out_channels": Int(4, lo=1, hi=None),
                               "kernel_size": Int(3, lo=1), "stride": Int(1, lo=1), "padding": Int(1, lo=0),
                               "bias": Flag(True), **_ORTH, "rng": Rng(0), "dtype": dtype64,
                               "view": Choice("matrix")}, x=Arr(XIMG)),
    "cross_entropy": Fn({"logits": Arr(_x((4, 3))), "labels": Obj(np.array([0, 2, 1, 2]), bad=_labels_bad()),
                         "reduction": Choice("mean")}),
    "mse": Fn({"pred": Arr(_x((4, 3))), "target": Arr(_x((4, 3), 2)), "reduction": Choice("mean")}),
}

_BETAS = Obj((0.9, 0.999), bad=(("h nan", (float("nan"), 0.999)), ("h out of range", (1.5, 0.999)),
                                ("h negative", (-0.1, 0.999)), ("h string", "ab"), ("h bool", (True, 0.9)),
                                ("wrong rank", (0.9,))))
_LR = Real(0.01, lo=0)
_WD = Real(0.0, lo=0)
_RIEM = {"metric": Choice("euclidean"), "retraction": Choice("qr"), "stiefel": Flag(True)}

OPTIM = {
    "Optimizer": Exempt("abstract base class: step() raises NotImplementedError; every optimizer below is one"),
    "SGD": Opt({"lr": _LR, "momentum": Real(0.9, lo=0), "dampening": Real(0.0, lo=0), "weight_decay": _WD,
                "nesterov": Flag(False), "maximize": Flag(False)}),
    "Adam": Opt({"lr": _LR, "betas": _BETAS, "eps": Real(1e-8, lo=0), "weight_decay": _WD,
                 "amsgrad": Flag(False), "maximize": Flag(False), "decoupled_weight_decay": Flag(False)}),
    "AdamW": Opt({"lr": _LR, "betas": _BETAS, "eps": Real(1e-8, lo=0), "weight_decay": Real(0.01, lo=0),
                  "amsgrad": Flag(False), "maximize": Flag(False)}),
    "Muon": Opt({"lr": Real(0.02, lo=0), "momentum": Real(0.95, lo=0), "nesterov": Flag(True),
                 "ns_steps": Int(5, **ITER), "coefficients": Choice("jordan"), "weight_decay": _WD,
                 "scale": Choice("jordan"), "adam_lr": Real(3e-4, lo=0), "adam_betas": _BETAS,
                 "adam_eps": Real(1e-10, lo=0), "adam_weight_decay": _WD, "normalize": Choice("add_eps")}),
    "RiemannianSGD": Opt({"lr": _LR, "momentum": Real(0.9, lo=0), "nesterov": Flag(False), "weight_decay": _WD,
                          **_RIEM}, stiefel=True),
    "RiemannianAdam": Opt({"lr": _LR, "betas": _BETAS, "eps": Real(1e-8, lo=0), **_RIEM,
                           "weight_decay": _WD, "second_moment": Choice("matrix")}, stiefel=True),
    "CayleySGD": Opt({"lr": _LR, "momentum": Real(0.9, lo=0), "weight_decay": _WD, "iterations": Int(2, **ITER0),
                      "epsilon": Real(1e-8, lo=0, lo_open=True), "stiefel": Flag(True), "restore_tol": TOL0},
                     stiefel=True),
    "CayleyAdam": Opt({"lr": _LR, "betas": Obj((0.9, 0.99), bad=_BETAS.bad), "weight_decay": _WD,
                       "iterations": Int(2, **ITER0), "epsilon": Real(1e-8, lo=0, lo_open=True), "stiefel": Flag(True),
                       "restore_tol": TOL0}, stiefel=True),
    "OGD": Opt({"lr": _LR, "memory": Int(100, lo=0, hi=None), "drop_tol": Real(1e-10, lo=0)}),
}

_RA = np.random.default_rng(20261208)      # its own stream: the draws above keep their values
B52, W34 = _RA.standard_normal((5, 2)), _RA.standard_normal((3, 4))
AUTOENCODER = {
    "TiedLinearAutoencoder": Layer({"in_features": Int(4, lo=1, hi=None), "hidden": Int(3, lo=1, hi=None),
                                    "rng": Rng(0), "dtype": dtype64}, x=Arr(X104)),
    "tied_linear_forward": Fn({"x": Arr(X104), "w": Arr(W34)}, who=("tied_linear",)),
    "tied_linear_backward": Exempt("takes tied_linear_forward's cache; swept through the registry op "
                                   "'tied_linear' (tests/test_bad_input.py)"),
    "principal_angles": Fn({"A": Arr(A53), "B": Arr(B52)}, scale_inv=lambda r: r),
    "fit_linear_autoencoder": Fn({"X": Arr(X104), "k": Int(2, lo=1, hi=4), "variant": Choice("untied"),
                                  "lr": Real(0.01, lo=0, lo_open=True), "steps": Int(3, **ITER0),
                                  "decoder_lr": Real(0.01, lo=0, lo_open=True),
                                  "momentum": Real(0.9, lo=0, hi=1, hi_open=True), "rng": Rng(0),
                                  "eval_every": Int(1, lo=1, hi=None)}, dtype=None,
                                 variants=({"variant": Const("stiefel_tied"), "decoder_lr": Const(None)},
                                           {"variant": Const("stiefel_untied")},
                                           {"variant": Const("tied"), "decoder_lr": Const(None)})),
    "study_autoencoder": Exempt("a study (minutes), run through orthoref.studies.run; its arguments are checked "
                                "in tests/test_autoencoder.py::test_study_bad_arguments"),
}

TABLE = {}
for _pkg, _tab in (("orthoref.ortho", ORTHO), ("orthoref.regularizers", REGULARIZERS), ("orthoref.init", INIT),
                   ("orthoref.analysis", ANALYSIS), ("orthoref.compress", COMPRESS), ("orthoref.nn", NN),
                   ("orthoref.optim", OPTIM), ("orthoref.autoencoder", AUTOENCODER)):
    for _n, _e in _tab.items():
        TABLE[f"{_pkg}.{_n}"] = _e


def run_one(qualname, obj, area, tally):
    """Sweep one public callable into ``tally``."""
    entry = TABLE[qualname]
    name = qualname.rsplit(".", 1)[1]
    if isinstance(entry, Exempt):
        return
    if isinstance(entry, Fn):
        S.sweep_function(name, obj, entry, area, tally)
    elif isinstance(entry, Layer):
        S.sweep_layer(name, obj, entry, area, tally)
    elif isinstance(entry, Opt):
        S.sweep_optimizer(name, obj, entry, area, tally)


# ---------------------------------------------------------------------------------------------------------
# The tests.

API = public_api()
TALLY = S.Tally()


@pytest.fixture(scope="module", autouse=True)
def _report_counts(request):
    yield
    if not TALLY.cases:
        return
    lines = ["", "API bad-input sweep, cases per input class and outcome:", TALLY.table(), TALLY.summary_line()]
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():
        for line in lines:
            reporter.write_line(line)


def test_every_public_callable_has_an_entry():
    missing = sorted(set(API) - set(TABLE))
    stale = sorted(set(TABLE) - set(API))
    assert not missing, f"public callables without an entry in the sweep's TABLE: {missing}"
    assert not stale, f"TABLE entries that are not public callables (renamed or removed?): {stale}"


@pytest.mark.parametrize("package", sorted(SOURCES))
def test_sources_cover_the_package_namespace(package):
    """A package's public callables are its ``__all__``; a package without one (``orthoref.ortho``,
    ``orthoref.nn``) re-exports its submodules' ``__all__``: every public callable it offers that is defined
    in one of those submodules is swept."""
    mod = importlib.import_module(package)
    listed = {n.rsplit(".", 1)[1] for n in API if n.startswith(package + ".")}
    if hasattr(mod, "__all__"):
        offered = {n for n in mod.__all__ if _swept(getattr(mod, n))}
    else:
        offered = {n for n, o in vars(mod).items() if not n.startswith("_") and _swept(o)
                   and not inspect.ismodule(o) and getattr(o, "__module__", None) in SOURCES[package]}
    assert not offered - listed, f"{package} offers {sorted(offered - listed)} outside the __all__ lists swept"


@pytest.mark.parametrize("qualname", sorted(API), ids=[n.replace("orthoref.", "") for n in sorted(API)])
def test_public_callable_survives_bad_input(qualname):
    if qualname not in TABLE:
        pytest.fail(f"{qualname} has no entry in TABLE")
    obj, area = API[qualname]
    own = S.Tally()
    run_one(qualname, obj, area, own)
    TALLY.cases.extend(own.cases)
    if isinstance(TABLE[qualname], S.Exempt):
        return
    assert own.cases, f"{qualname}: the sweep ran no case (its table entry corrupts nothing)"
    bad = own.bad()
    assert not bad, f"{len(bad)} of {len(own.cases)} cases fail:\n" + "\n".join(c.line() for c in bad)
