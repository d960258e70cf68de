"""A CPU stand-in for CuPy that fails wherever real CuPy would: the proof of the GPU path without a GPU.

``StrictArray`` wraps a NumPy array but is not an ``np.ndarray`` and behaves like ``cupy.ndarray``:

- ``np.asarray(a)`` / ``__array__`` raises ``TypeError`` (CuPy: "Implicit conversion to a NumPy array is
  not allowed"), so SciPy, ``np.array`` and every host-only routine refuse it; ``.get()`` is the explicit
  device-to-host copy.
- operators and ``xp`` functions refuse a ``np.ndarray`` operand (CuPy: "Unsupported type
  <class 'numpy.ndarray'>"); Python and NumPy scalars are fine. ``a[idx] = host_array`` is allowed, as in
  CuPy.
- ``np.<ufunc>(a)`` and ``np.<function>(a)`` dispatch to the CuPy function of the same name, as CuPy's
  ``__array_ufunc__`` / ``__array_function__`` do, and fail where CuPy has no such name. Every dispatch is
  recorded in ``NP_DISPATCHED`` (legal on CuPy, but a place where the code says ``np`` and means ``xp``).
- reductions and scalar indexing return 0-d arrays, never NumPy scalars; ``float(a)``, ``bool(a)``,
  ``a.item()`` sync to the host as CuPy allows.

``xp`` (a module object named ``cupy``) exposes only the names listed in ``tests/data/cupy_namespace.txt``
(generated from a CuPy 14.2.0 install) and ``cupyx`` only the cupyx.scipy names in ``CUPYX_NAMES``
(CuPy's reference pages); each unwraps its arguments, calls NumPy/SciPy and wraps the result.

``install(monkeypatch)`` puts them in ``sys.modules`` as ``cupy`` / ``cupyx``: ``orthoref.backend`` then
finds them exactly as it finds CuPy (``get_array_module``, ``use("cupy")``, ``asarray``, ``to_numpy``),
with no hook in the library.
"""
from __future__ import annotations

import collections
import functools
import pathlib
import sys
import types

import numpy as np

NAMES_FILE = pathlib.Path(__file__).resolve().parent / "data" / "cupy_namespace.txt"

# cupyx.scipy names used as module attributes (https://docs.cupy.dev/en/stable/reference/scipy_linalg.html,
# .../scipy_special.html); only functions SciPy has under the same name are listed.
CUPYX_NAMES = {
    "scipy.linalg": ("solve_triangular", "expm", "lu", "lu_factor", "lu_solve", "block_diag", "circulant",
                     "companion", "convolution_matrix", "dft", "hadamard", "hankel", "helmert", "hilbert",
                     "leslie", "toeplitz", "khatri_rao", "bandwidth"),
    "scipy.special": ("erf", "erfc", "erfcx", "erfinv", "erfcinv", "gamma", "gammaln", "digamma",
                      "expit", "logit", "log_expit", "ndtr", "log_ndtr", "ndtri", "i0", "i1", "xlogy",
                      "entr", "softmax", "log_softmax", "logsumexp"),
}
# Functions that copy host data to the device (the only ones that accept a np.ndarray).
HOST_TO_DEVICE = {"array", "asarray", "asanyarray", "ascontiguousarray", "asfortranarray"}
# Not real CuPy functions: names `dir(cupy)` lists that are modules or imports of its own.
_NOT_FUNCTIONS = {"annotations", "np", "typing", "testing", "exceptions", "cuda", "fft", "linalg", "lib",
                  "random", "polynomial", "NAN", "NINF", "NZERO", "PINF", "PZERO", "Inf", "Infinity",
                  "infty"}
NP_DISPATCHED = collections.Counter()   # "np.<name>" called on a StrictArray and dispatched to xp


def cupy_names():
    lines = NAMES_FILE.read_text().splitlines()
    return {ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")}


class DeviceMixingError(TypeError):
    """A host ``np.ndarray`` where CuPy wants a device array (CuPy raises ``TypeError``)."""


def _refuse_host(name, value):
    raise DeviceMixingError(f"strict cupy.{name}: Unsupported type {type(value)} (a host array on the "
                            f"device path; convert with xp.asarray or backend.asarray)")


def _unwrap(x, name, allow_host=False):
    """NumPy view of ``x`` (recursing into lists, tuples and dicts); refuses host arrays unless allowed."""
    if isinstance(x, StrictArray):
        return x._a
    if isinstance(x, np.ndarray):
        if not allow_host:
            _refuse_host(name, x)
        return x
    if isinstance(x, (list, tuple)):
        out = [_unwrap(v, name, allow_host) for v in x]
        return tuple(out) if isinstance(x, tuple) else out
    if isinstance(x, dict):
        return {k: _unwrap(v, name, allow_host) for k, v in x.items()}
    return x


def _wrap(x):
    if isinstance(x, np.ndarray):
        return StrictArray(x)
    if isinstance(x, np.generic):          # CuPy returns 0-d arrays where NumPy returns scalars
        return StrictArray(np.asarray(x))
    if isinstance(x, tuple) and hasattr(x, "_fields"):     # QRResult, SVDResult, ...
        return type(x)(*(_wrap(v) for v in x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


def _call(name, fn, args, kwargs, allow_host=False):
    out = kwargs.get("out")
    result = fn(*_unwrap(args, name, allow_host), **_unwrap(kwargs, name, allow_host))
    if isinstance(out, StrictArray) and result is out._a:
        return out
    return _wrap(result)


class _Device:
    id = 0

    def __repr__(self):
        return "<CUDA Device 0 (strict CPU stand-in)>"

    def __eq__(self, other):
        return isinstance(other, _Device)

    def __hash__(self):
        return 0

    def synchronize(self):
        pass

    def use(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class StrictArray:
    """A device array on the CPU: a NumPy array behind CuPy's ``ndarray`` interface."""

    __slots__ = ("_a",)
    __hash__ = None

    def __init__(self, a):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"StrictArray wraps a np.ndarray, got {type(a).__name__}")
        self._a = a

    # --- the host boundary -------------------------------------------------------------------------------
    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
                        "construct a NumPy array explicitly.")

    def get(self, stream=None, order="C", out=None, blocking=True):
        if out is not None:
            out[...] = self._a
            return out
        return np.array(self._a, order=order, copy=True)

    def set(self, arr, stream=None):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr)}")
        if arr.shape != self._a.shape:
            raise ValueError("Shape mismatch")
        self._a[...] = arr

    def tolist(self):
        return self._a.tolist()

    def item(self, *args):
        return self._a.item(*args)

    def tobytes(self, order="C"):
        return self._a.tobytes(order)

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __complex__(self):
        return complex(self._a)

    def __index__(self):
        return self._a.__index__()

    def __bool__(self):
        return bool(self._a)

    def __format__(self, spec):
        return self._a.__format__(spec) if self._a.ndim == 0 else format(str(self), spec)

    def __repr__(self):
        return "strict_" + repr(self._a)

    def __str__(self):
        return str(self._a)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (_wrap(row) for row in self._a)

    def __reduce__(self):
        return (StrictArray, (self._a.copy(),))

    def __copy__(self):
        return StrictArray(self._a.copy())

    def __deepcopy__(self, memo):
        return StrictArray(self._a.copy())

    # --- NumPy protocols, as cupy.ndarray implements them ------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        target = getattr(xp, ufunc.__name__, None)
        if not isinstance(target, StrictUfunc):
            return NotImplemented
        NP_DISPATCHED[f"np.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")] += 1
        call = target if method == "__call__" else getattr(target, method)
        return call(*inputs, **kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        try:
            target = functools.reduce(getattr, func.__module__.split(".")[1:], xp)
            target = getattr(target, func.__name__)
        except AttributeError:
            return NotImplemented
        for t in types_:
            if t not in (StrictArray, np.ndarray):
                return NotImplemented
        NP_DISPATCHED[f"{func.__module__}.{func.__name__}".replace("numpy", "np", 1)] += 1
        return target(*args, **kwargs)

    # --- attributes ------------------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: StrictArray(self._a.T))
    mT = property(lambda self: StrictArray(self._a.mT))
    base = property(lambda self: None if self._a.base is None else _wrap(np.asarray(self._a.base)))
    device = property(lambda self: _Device())

    @property
    def real(self):
        return StrictArray(self._a.real)

    @real.setter
    def real(self, value):
        self._a.real = _unwrap(value, "ndarray.real")

    @property
    def imag(self):
        return StrictArray(self._a.imag)

    def __getitem__(self, idx):
        return _wrap(self._a[_unwrap(idx, "ndarray.__getitem__", allow_host=True)])

    def __setitem__(self, idx, value):
        self._a[_unwrap(idx, "ndarray.__setitem__", allow_host=True)] = _unwrap(value, "ndarray.__setitem__",
                                                                                allow_host=True)


def _method(name):
    def method(self, *args, **kwargs):
        return _call(f"ndarray.{name}", getattr(self._a, name), args, kwargs)
    method.__name__ = name
    return method


# cupy.ndarray's methods (https://docs.cupy.dev/en/stable/reference/generated/cupy.ndarray.html)
for _name in ("all", "any", "argmax", "argmin", "argpartition", "argsort", "astype", "choose", "clip",
              "compress", "conj", "conjugate", "copy", "cumprod", "cumsum", "diagonal", "dot", "fill",
              "flatten", "max", "mean", "min", "nonzero", "partition", "prod", "ptp", "put", "ravel",
              "repeat", "reshape", "round", "searchsorted", "sort", "squeeze", "std", "sum", "swapaxes",
              "take", "trace", "transpose", "var", "view"):
    setattr(StrictArray, _name, _method(_name))


def _binary(name, reflected=False):
    def op(self, other):
        if isinstance(other, (np.ndarray, list, tuple)):
            if isinstance(other, np.ndarray):
                _refuse_host(f"ndarray.{name}", other)
            raise TypeError(f"strict cupy.ndarray.{name}: Unsupported type {type(other)}")
        other = other._a if isinstance(other, StrictArray) else other
        return _wrap(getattr(self._a, name)(other))
    op.__name__ = name
    return op


def _inplace(name):
    def op(self, other):
        if isinstance(other, (np.ndarray, list, tuple)):
            raise TypeError(f"strict cupy.ndarray.{name}: Unsupported type {type(other)}")
        getattr(self._a, name)(other._a if isinstance(other, StrictArray) else other)
        return self
    op.__name__ = name
    return op


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
              "lshift", "rshift", "divmod"):
    for _dunder in (f"__{_name}__", f"__r{_name}__"):
        setattr(StrictArray, _dunder, _binary(_dunder))
    if _name != "divmod":
        setattr(StrictArray, f"__i{_name}__", _inplace(f"__i{_name}__"))
for _name in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(StrictArray, f"__{_name}__", _binary(f"__{_name}__"))
for _name in ("neg", "pos", "abs", "invert"):
    setattr(StrictArray, f"__{_name}__",
            (lambda n: lambda self: _wrap(getattr(self._a, n)()))(f"__{_name}__"))


class StrictUfunc:
    """``cupy.ufunc``: scalars and device arrays only (CuPy refuses lists and host arrays)."""

    def __init__(self, np_ufunc):
        self._u = np_ufunc
        self.__name__ = np_ufunc.__name__
        self.nin, self.nout, self.nargs = np_ufunc.nin, np_ufunc.nout, np_ufunc.nargs

    def _check(self, inputs):
        for x in inputs:
            if isinstance(x, (list, tuple)):
                raise TypeError(f"strict cupy.{self.__name__}: Unsupported type {type(x)}")

    def __call__(self, *inputs, **kwargs):
        self._check(inputs)
        return _call(self.__name__, self._u, inputs, kwargs)

    def reduce(self, *args, **kwargs):
        return _call(f"{self.__name__}.reduce", self._u.reduce, args, kwargs)

    def accumulate(self, *args, **kwargs):
        return _call(f"{self.__name__}.accumulate", self._u.accumulate, args, kwargs)

    def outer(self, *args, **kwargs):
        return _call(f"{self.__name__}.outer", self._u.outer, args, kwargs)

    def at(self, *args, **kwargs):
        return _call(f"{self.__name__}.at", self._u.at, args, kwargs)

    def __repr__(self):
        return f"<strict ufunc '{self.__name__}'>"


def _function(qualname, np_fn):
    name = qualname.rsplit(".", 1)[-1]
    allow_host = qualname in HOST_TO_DEVICE

    @functools.wraps(np_fn)
    def fn(*args, **kwargs):
        if qualname in ("asarray", "asanyarray") and args and isinstance(args[0], StrictArray):
            dtype = kwargs.get("dtype", args[1] if len(args) > 1 else None)
            if dtype is None or np.dtype(dtype) == args[0].dtype:
                return args[0]
        return _call(qualname, np_fn, args, kwargs, allow_host)
    fn.__name__ = name
    return fn


def _asnumpy(a, stream=None, order="C", out=None, blocking=True):
    if isinstance(a, StrictArray):
        return a.get(order=order, out=out)
    return np.asarray(a, order=order)


def _get_array_module(*args):
    return xp if any(isinstance(a, StrictArray) for a in args) else np


def _strict_attr(np_mod, name, qualname):
    obj = getattr(np_mod, name)
    if isinstance(obj, np.ufunc):
        return StrictUfunc(obj)
    if isinstance(obj, type) or isinstance(obj, (int, float, np.dtype)) or obj is None:
        return obj
    if callable(obj):
        return _function(qualname, obj)
    return obj


def _build_modules():
    cupy = types.ModuleType("cupy", "strict CPU stand-in for CuPy (tests/strict_backend.py)")
    subs = {"linalg": (types.ModuleType("cupy.linalg"), np.linalg),
            "fft": (types.ModuleType("cupy.fft"), np.fft),
            "lib.stride_tricks": (types.ModuleType("cupy.lib.stride_tricks"), np.lib.stride_tricks)}
    lib = types.ModuleType("cupy.lib")
    lib.stride_tricks = subs["lib.stride_tricks"][0]
    cupy.linalg, cupy.fft, cupy.lib = subs["linalg"][0], subs["fft"][0], lib
    cupy.random = types.ModuleType("cupy.random")   # orthoref draws on the host (backend.host_rng)
    for qualname in sorted(cupy_names()):
        prefix, _, name = qualname.rpartition(".")
        if name in _NOT_FUNCTIONS or qualname in subs:
            continue
        module, np_mod = (cupy, np) if not prefix else subs.get(prefix, (None, None))
        if module is None or not hasattr(np_mod, name):
            continue    # a CuPy-only name (ElementwiseKernel, fuse, ...) or one NumPy 2 dropped
        setattr(module, name, _strict_attr(np_mod, name, qualname))
    cupy.ndarray = StrictArray
    cupy.get_array_module = _get_array_module
    cupy.asnumpy = _asnumpy
    for const in ("pi", "e", "inf", "nan", "newaxis", "euler_gamma"):
        setattr(cupy, const, getattr(np, const))
    cuda = types.ModuleType("cupy.cuda")
    cuda.runtime = types.SimpleNamespace(getDeviceCount=lambda: 1)
    cuda.Device = lambda i=0: _Device()
    cuda.Stream = types.SimpleNamespace(null=types.SimpleNamespace(synchronize=lambda: None))
    cupy.cuda = cuda
    cupy.is_available = lambda: True

    import scipy.linalg
    import scipy.special
    cupyx = types.ModuleType("cupyx", "strict CPU stand-in for cupyx")
    cupyx.scipy = types.ModuleType("cupyx.scipy")
    for sub, names in CUPYX_NAMES.items():
        mod = types.ModuleType(f"cupyx.{sub}")
        src = {"scipy.linalg": scipy.linalg, "scipy.special": scipy.special}[sub]
        for name in names:
            if hasattr(src, name):
                obj = getattr(src, name)
                setattr(mod, name, StrictUfunc(obj) if isinstance(obj, np.ufunc)
                        else _function(f"cupyx.{sub}.{name}", obj))
        setattr(cupyx.scipy, sub.split(".")[1], mod)
    return cupy, cupyx


xp, cupyx = _build_modules()


def install(monkeypatch):
    """Make ``import cupy`` / ``import cupyx`` (and so ``orthoref.backend``) find the strict stand-ins."""
    monkeypatch.setitem(sys.modules, "cupy", xp)
    monkeypatch.setitem(sys.modules, "cupy.linalg", xp.linalg)
    monkeypatch.setitem(sys.modules, "cupy.fft", xp.fft)
    monkeypatch.setitem(sys.modules, "cupy.cuda", xp.cuda)
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    monkeypatch.setitem(sys.modules, "cupyx.scipy", cupyx.scipy)
    monkeypatch.setitem(sys.modules, "cupyx.scipy.linalg", cupyx.scipy.linalg)
    monkeypatch.setitem(sys.modules, "cupyx.scipy.special", cupyx.scipy.special)
    return xp


def to_device(x):
    """Host NumPy array to StrictArray (anything else unchanged)."""
    return StrictArray(np.array(x)) if isinstance(x, np.ndarray) else x
