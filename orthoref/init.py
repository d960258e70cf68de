"""Weight initializers: orthogonal (QR or SVD, PyTorch's or TensorFlow's flattening), special orthogonal,
delta-orthogonal and block-orthogonal convolution kernels, identity, Glorot/He/LeCun, PyTorch's default,
and LSUV.

Every initializer takes the target ``shape``, a ``gain`` where one applies, ``rng`` (``None``, an int seed
or a ``numpy.random.Generator``; see :func:`orthoref.backend.host_rng`) and ``dtype`` (float32 or
float64, default float32), and returns an array of the *active* backend. All random draws happen on the
host in NumPy, so a NumPy and a CuPy run with the same seed start from the same draw (the orthogonal
factorisation itself runs on the active backend: ``scipy.linalg.lapack`` on the CPU, ``cupy.linalg`` on
the GPU).

The Gaussian of the orthogonal initializers is drawn in the target dtype
(``Generator.standard_normal(size, dtype=dtype)``), so a float32 and a float64 draw from the same seed are
different matrices, not roundings of one another.

Weight layouts follow PyTorch (``(out, in)``, ``(out, in, kh, kw)``); fans are computed as
``torch.nn.init._calculate_fan_in_and_fan_out`` does: ``fan_in = shape[1] * prod(shape[2:])``,
``fan_out = shape[0] * prod(shape[2:])``.

``INITIALIZERS`` maps the names accepted by ``weight_init="..."`` and ``orthoref train --init NAME`` to
callables ``f(shape, rng=None, dtype=np.float32)``; :func:`get_initializer` looks them up.

Failure model: a ``shape`` is a tuple of non-negative ints (``TypeError`` for floats, bools, strings;
``ValueError`` for negative dimensions, too few dimensions, or more elements than can be allocated --
a ``MemoryError`` is reported as a ``ValueError`` naming the function); ``dtype`` float32 or float64 only
(``TypeError`` for float16, integers, complex, ...); ``gain``, ``a``, ``mean``, ``std``, ``tol`` finite
real numbers in their documented range; ``rng`` None, a non-negative int or a ``Generator``; ``mode``,
``nonlinearity``, ``method``, ``convention`` one of their names; ``max_iter`` at most
:data:`orthoref._checks.MAX_ITERATIONS`. A ``gain`` or ``std`` whose draws would not fit the dtype
(``orthogonal(gain=1e39)`` in float32) raises :class:`orthoref._checks.NonFiniteError`; every result is
finite and of the requested dtype. Every message names the function and the argument.

References
----------
- [Saxe2014] A. M. Saxe, J. L. McClelland, S. Ganguli, "Exact solutions to the nonlinear dynamics of
  learning in deep linear neural networks", ICLR 2014.
- [Mezzadri2007] F. Mezzadri, "How to generate random matrices from the classical compact groups",
  Notices of the AMS 54 (2007).
- [Xiao2018] L. Xiao, Y. Bahri, J. Sohl-Dickstein, S. Schoenholz, J. Pennington, "Dynamical isometry
  and a mean field theory of CNNs: how to train 10,000-layer vanilla convolutional neural networks",
  ICML 2018.
- [Glorot2010] X. Glorot, Y. Bengio, "Understanding the difficulty of training deep feedforward neural
  networks", AISTATS 2010.
- [He2015] K. He, X. Zhang, S. Ren, J. Sun, "Delving deep into rectifiers", ICCV 2015.
- [LeCun1998] Y. LeCun, L. Bottou, G. Orr, K.-R. Müller, "Efficient BackProp", 1998.
- [Mishkin2015] D. Mishkin, J. Matas, "All you need is a good init", ICLR 2016 (arXiv:1511.06422).
"""
from __future__ import annotations

import functools
import math
import warnings

import numpy as np

from ._checks import (MAX_ITERATIONS, NonFiniteError, check_array, check_bool, check_choice, check_finite,
                      check_float, check_int, check_ndim, check_real, check_result, float_dtype)
from .backend import get_array_module, get_backend, host_rng, to_numpy
from .ortho._common import pow2_rescale
from .ortho.decomp import orthonormal_qr

__all__ = [
    "orthogonal", "orthogonalize_gaussian", "special_orthogonal", "delta_orthogonal",
    "block_orthogonal_conv", "identity", "calculate_gain", "calculate_fan_in_and_fan_out",
    "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "lecun_normal", "normal",
    "uniform", "pytorch_default", "lsuv", "INITIALIZERS", "get_initializer",
]

# ---------------------------------------------------------------------------------------------------------
# Argument checks (the shared vocabulary of :mod:`orthoref._checks`, plus shapes and scales).

#: The largest number of elements an initializer is asked for (NumPy's own limit is 2**63 bytes).
_MAX_ELEMENTS = 2 ** 59


def _shape(shape, who, min_ndim=0):
    """``shape`` as a tuple of non-negative ints (an int is a 1-D shape); ``TypeError`` for anything else
    (floats, bools, strings), ``ValueError`` for a negative dimension, fewer than ``min_ndim`` dimensions or
    more elements than can ever be allocated."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, (bool, np.bool_)):
        shape = (shape,)
    if isinstance(shape, (str, bytes, dict, set, frozenset)) or hasattr(shape, "dtype") and shape.ndim != 1:
        raise TypeError(f"{who}: shape must be a tuple of ints, got {type(shape).__name__} {shape!r}")
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"{who}: shape must be a tuple of ints, got {type(shape).__name__} {shape!r}") from None
    for d in dims:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)):
            raise TypeError(f"{who}: shape must be a tuple of ints, got {shape!r}")
        if d < 0:
            raise ValueError(f"{who}: shape must have non-negative dimensions, got {tuple(int(x) for x in dims)}")
    dims = tuple(int(d) for d in dims)
    if len(dims) < min_ndim:
        raise ValueError(f"{who}: shape needs {min_ndim} or more dimensions, got {dims}")
    if math.prod(dims) > _MAX_ELEMENTS:
        raise ValueError(f"{who}: shape {dims} has {math.prod(dims)} elements, more than can be allocated "
                         f"(at most {_MAX_ELEMENTS})")
    return dims


def _gain(who, gain, dt, name="gain", bound=1.0):
    """``gain`` as a finite Python float, and ``NonFiniteError`` when ``|gain| · bound`` (``bound``: the
    largest magnitude the unscaled result can take) does not fit ``dt`` -- the result would be ``inf``."""
    gain = check_real(who, name, gain)
    if abs(gain) * bound > float(np.finfo(dt).max):
        raise NonFiniteError(f"{who}: {name}={gain!r} overflows {np.dtype(dt).name} (the result would hold "
                             f"Inf); use float64 or a smaller {name}")
    return gain


def _finite(who, w):
    """``w``, or ``NonFiniteError`` when a draw overflowed its dtype (one reduction)."""
    return check_result(who, w, "the drawn weight", "use float64 or a smaller gain/std")


def _memory_checked(fn):
    """Turn a ``MemoryError`` of an allocation into a ``ValueError`` naming the function and the shape."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MemoryError:
            shape = args[0] if args else kwargs.get("shape")
            raise ValueError(f"{fn.__name__}: shape {shape!r} is too large: not enough memory to allocate "
                             f"it") from None
    return wrapper


def _empty(shape, dt):
    return get_backend().zeros(shape, dtype=dt)


def _to_backend(a, dt):
    """A host array as an array of the active backend, in ``dt`` (C-contiguous)."""
    return get_backend().asarray(np.ascontiguousarray(a, dtype=dt))


def calculate_fan_in_and_fan_out(shape):
    """``(fan_in, fan_out)`` of a weight of ``shape``, as ``torch.nn.init._calculate_fan_in_and_fan_out``.

    .. math::  \\mathrm{fan\\_in} = s_1 \\prod_{i\\ge2} s_i, \\qquad
               \\mathrm{fan\\_out} = s_0 \\prod_{i\\ge2} s_i .

    Raises ``ValueError`` for fewer than 2 dimensions (as PyTorch).
    """
    dims = _shape(shape, "calculate_fan_in_and_fan_out")
    if len(dims) < 2:
        raise ValueError("calculate_fan_in_and_fan_out: shape must have 2 or more dimensions (fan in and fan out "
                         f"can not be computed for tensor with fewer than 2 dimensions), got {dims}")
    receptive = math.prod(dims[2:])
    return dims[1] * receptive, dims[0] * receptive


# ---------------------------------------------------------------------------------------------------------
# Orthogonal matrices.

def _orthogonalize(a, gain, method, overwrite=False, who="orthogonal"):
    """The orthogonal factor of ``a`` (any orientation), on ``a``'s backend, in ``a``'s dtype. A LAPACK
    failure (the SVD not converging) is a ``ValueError`` naming ``who``."""
    xp = get_array_module(a)
    rows, cols = a.shape
    if a.size == 0:
        return xp.zeros((rows, cols), dtype=a.dtype)
    if method == "svd":
        try:
            if xp is np:
                import scipy.linalg
                u, _, vt = scipy.linalg.svd(a, full_matrices=False, overwrite_a=overwrite, check_finite=False)
            else:
                u, _, vt = xp.linalg.svd(a, full_matrices=False)
        except np.linalg.LinAlgError:
            raise ValueError(f"{who}: the SVD (LAPACK) of the {rows}x{cols} matrix did not converge") from None
        q = u @ vt
    else:
        q = orthonormal_qr(a, overwrite)
    if gain != 1.0:
        q *= q.dtype.type(gain)
    return q


def orthogonalize_gaussian(A, gain=1.0, method="qr"):
    """The deterministic half of :func:`orthogonal`: the (semi-)orthogonal factor of a given matrix.

    ``A`` is the ``(rows, cols)`` Gaussian as PyTorch draws it (``torch.nn.init.orthogonal_`` draws
    ``flattened = new(rows, cols).normal_(0, 1)``), so another framework can feed its very own draw and
    compare bit for bit (up to LAPACK rounding). With ``method="qr"`` (PyTorch's algorithm):

    .. math::  T = A \\text{ if rows} \\ge \\text{cols else } A^\\top, \\quad T = QR \\text{ (thin)}, \\quad
               Q \\leftarrow Q\\,\\mathrm{diag}(\\mathrm{sign}\\, r_{ii}), \\quad
               \\text{return } \\mathrm{gain}\\cdot(Q \\text{ or } Q^\\top).

    ``sign(0)`` is taken as +1 (PyTorch multiplies by ``torch.sign`` and would zero that column; with a
    Gaussian ``A`` a zero ``r_ii`` has probability zero). The sign fix makes ``R``'s diagonal positive, so
    ``Q`` is the unique Q factor of a full-rank ``A`` and is Haar distributed when ``A`` is Gaussian
    [Mezzadri2007]. ``method="svd"`` returns ``gain · U Vᵀ`` of the thin SVD ``A = U Σ Vᵀ`` (the polar
    factor, also Haar for a Gaussian ``A``; the route of [Saxe2014]).

    Parameters
    ----------
    A : array (rows, cols), float32 or float64, NumPy or CuPy
        Computed in its own dtype, on its own backend; not modified.
    gain : float
    method : {"qr", "svd"}

    Returns
    -------
    Q : array (rows, cols) of ``A``'s dtype and backend, C-contiguous, with ``Q Qᵀ = gain² I`` when
        ``rows <= cols`` and ``Qᵀ Q = gain² I`` otherwise.

    The factor does not depend on the scale of ``A``: an ``A`` near the float maximum or in the denormals
    is first multiplied by an exact power of two. A rank-deficient ``A`` (a zero matrix included) still
    gives an orthogonal ``Q`` (``sign(0) = +1``), one of many.

    Raises
    ------
    TypeError
        ``A`` not a float32/float64 array (a list, float16, integers, complex), a non-real ``gain``.
    ValueError
        ``A`` not 2-D or holding NaN/Inf (``NonFiniteError``), a non-finite ``gain``, an unknown method.
    NonFiniteError
        ``|gain|`` beyond the range of ``A``'s dtype (``gain=1e39`` in float32).
    """
    who = "orthogonalize_gaussian"
    check_float(who, "A", A)
    check_ndim(who, "A", A, (2,))
    gain = _gain(who, gain, A.dtype)
    check_choice(who, "method", method, ("qr", "svd"))
    xp = get_array_module(A)
    if A.size == 0:
        return xp.zeros(A.shape, dtype=A.dtype)
    check_finite(who, "A", A, xp)
    fi = np.finfo(A.dtype)                           # Q of c·A is Q of A (c > 0): rescale near the ends
    As, e = pow2_rescale(xp, A, fi.minexp, fi.maxexp - 8)
    q = _orthogonalize(As, gain, method, overwrite=e != 0, who=who)
    return _finite(who, xp.ascontiguousarray(q))


def _matrix_shape(dims, convention, who):
    check_choice(who, "convention", convention, ("pytorch", "tensorflow"))
    if convention == "pytorch":
        rows = dims[0]
        return rows, (math.prod(dims) // rows if rows else math.prod(dims[1:]))
    return math.prod(dims[:-1]), dims[-1]


@_memory_checked
def orthogonal(shape, gain=1.0, rng=None, dtype=np.float32, method="qr", convention="pytorch"):
    """A (semi-)orthogonal weight [Saxe2014], Haar distributed [Mezzadri2007].

    The weight is seen as a matrix ``M`` of shape ``(rows, cols)``, a Gaussian ``A`` of that shape is
    drawn on the host (``G = rng.standard_normal((min, max), dtype)``, ``A = G`` if ``rows < cols`` else
    ``Gᵀ``: the wide orientation is the one drawn row by row) and ``orthogonalize_gaussian(A, gain,
    method)`` turns it into ``gain · Q`` with orthonormal rows
    (``rows <= cols``: ``M Mᵀ = gain² I``) or orthonormal columns (``rows > cols``: ``Mᵀ M = gain² I``),
    i.e. the smaller Gram matrix is ``gain² I``.

    ``convention`` says how ``shape`` is flattened to ``M``:

    * ``"pytorch"`` (``torch.nn.init.orthogonal_``): ``rows = shape[0]``, the rest flattened,
      ``M = W.reshape(shape[0], -1)``.
    * ``"tensorflow"`` (``tf.keras.initializers.Orthogonal``): ``cols = shape[-1]``, the rest flattened,
      ``M = W.reshape(-1, shape[-1])``.

    For a 2-D shape both are the same matrix (and, from the same ``rng``, the same result). They differ
    for kernels, because the two frameworks put the filters on different axes. Worked example, a 3x3
    convolution from 16 to 32 channels:

    * PyTorch layout ``(out, in, kh, kw) = (32, 16, 3, 3)``, convention "pytorch": ``M`` is ``32 x 144``,
      its rows are the 32 filters; ``rows <= cols`` so ``M Mᵀ = I₃₂``: the filters are orthonormal.
    * TensorFlow layout ``(kh, kw, in, out) = (3, 3, 16, 32)``, convention "tensorflow": ``M`` is
      ``144 x 32``, its columns are the 32 filters; ``rows > cols`` so ``Mᵀ M = I₃₂``: again the filters
      are orthonormal. ``W_tf.transpose(3, 2, 0, 1)`` is a PyTorch-layout weight with the same property.
    * Mixing them up is where it goes wrong: convention "tensorflow" on the PyTorch-layout shape
      ``(32, 16, 3, 3)`` makes ``M`` ``1536 x 3`` (columns = the ``kw`` taps), which says nothing about the
      filters; and with more filters than the fan-in (e.g. ``(256, 16, 3, 3)``: ``256 x 144``) the
      orthonormal vectors are the 144 columns (``Mᵀ M = I₁₄₄``), not the filters, in either convention.

    Parameters
    ----------
    shape : tuple of int, 2 or more dimensions
    gain : float
        Multiplies the orthogonal matrix.
    rng : None, int or numpy.random.Generator
    dtype : float32 or float64
        The Gaussian is drawn in this dtype and the factorisation runs in it (float32 LAPACK on the CPU).
    method : {"qr", "svd"}
        ``"qr"``: PyTorch's algorithm (QR of the Gaussian in its tall orientation, columns times
        ``sign(diag R)``, transposed back). ``"svd"``: ``U Vᵀ`` of the Gaussian's thin SVD.
    convention : {"pytorch", "tensorflow"}

    Returns
    -------
    W : array of ``shape``, active backend. A zero-size shape gives an empty array (PyTorch's no-op).

    Raises
    ------
    ValueError
        Fewer than 2 dimensions, negative dimensions, non-finite gain, unknown method or convention, a
        negative ``rng`` seed, a shape too large to allocate.
    TypeError
        A dtype other than float32/float64, a non-int dimension, a non-real gain.
    NonFiniteError
        ``|gain|`` beyond the dtype's range (``gain=1e39`` in float32): the result would hold Inf.
    """
    who = "orthogonal"
    dims = _shape(shape, who, min_ndim=2)
    dt = float_dtype(who, dtype)
    gain = _gain(who, gain, dt)
    check_choice(who, "method", method, ("qr", "svd"))
    rows, cols = _matrix_shape(dims, convention, who)
    gen = host_rng(rng, who=who)
    if math.prod(dims) == 0:
        return _empty(dims, dt)
    a = _draw_gaussian(rows, cols, gen, dt)
    xp = get_backend()
    if xp is not np:
        a = xp.asarray(a)
    q = _orthogonalize(a, gain, method, overwrite=True)
    return _finite(who, xp.ascontiguousarray(q).reshape(dims))


def _draw_gaussian(rows, cols, gen, dt):
    """The ``(rows, cols)`` Gaussian of :func:`orthogonal`: the wide orientation is drawn C-ordered,
    ``G = gen.standard_normal((min, max), dtype)``, and ``A = G`` when ``rows < cols`` (PyTorch's draw),
    ``A = Gᵀ`` otherwise (square included), so that the tall matrix that LAPACK factorises is
    column-major without a copy."""
    if rows < cols:
        return gen.standard_normal((rows, cols), dtype=dt)
    return gen.standard_normal((cols, rows), dtype=dt).T


def _haar_host(n, gen, dt=np.float64):
    """An ``n x n`` Haar orthogonal matrix on the host (QR of a Gaussian with the sign fix)."""
    return _orthogonalize(_draw_gaussian(n, n, gen, dt), 1.0, "qr", overwrite=True)


@_memory_checked
def special_orthogonal(shape, gain=1.0, rng=None, dtype=np.float32):
    """A Haar-distributed rotation: square, orthogonal, determinant +1 (times ``gain``).

    Draws ``Q`` as :func:`orthogonal` does (Haar on O(n) [Mezzadri2007]); when ``det Q < 0`` the first
    column is negated, which maps Haar on O(n) \\ SO(n) onto Haar on SO(n):

    .. math::  Q \\leftarrow Q\\,\\mathrm{diag}(-1, 1, \\dots, 1) \\quad\\text{if } \\det Q < 0, \\qquad
               W = \\mathrm{gain}\\cdot Q .

    Parameters
    ----------
    shape : (n, n)
        Square and 2-D only (``ValueError`` otherwise).
    gain : float
    rng : None, int or numpy.random.Generator
    dtype : float32 or float64

    Returns
    -------
    W : array (n, n), active backend, ``det(W / gain) = +1``.
    """
    who = "special_orthogonal"
    dims = _shape(shape, who, min_ndim=2)
    if len(dims) != 2 or dims[0] != dims[1]:
        raise ValueError(f"{who}: shape must be square and 2-D (n, n), got {dims}")
    dt = float_dtype(who, dtype)
    gain = _gain(who, gain, dt)
    gen = host_rng(rng, who=who)
    if dims[0] == 0:
        return _empty(dims, dt)
    a = _draw_gaussian(dims[0], dims[1], gen, dt)
    xp = get_backend()
    if xp is not np:
        a = xp.asarray(a)
    q = _orthogonalize(a, 1.0, "qr", overwrite=True)
    if xp is np:
        sign = np.linalg.slogdet(q)[0]
    else:
        sign = float(xp.linalg.det(q.astype(xp.float64)))
    if sign < 0:
        q[:, 0] *= -1
    if gain != 1.0:
        q *= q.dtype.type(gain)
    return _finite(who, xp.ascontiguousarray(q))


def _conv_dims(shape, who):
    dims = _shape(shape, who, min_ndim=2)
    if len(dims) < 3:
        raise ValueError(f"{who}: shape must be a convolution weight (out, in, k, ...) with 3 to 5 "
                         f"dimensions, got {dims}")
    return dims


@_memory_checked
def delta_orthogonal(shape, gain=1.0, rng=None, dtype=np.float32):
    """Delta-orthogonal convolution kernel [Xiao2018]: zero except the centre tap, a Haar block.

    .. math::  W[:, :, c_1, c_2] = \\mathrm{gain}\\cdot H, \\qquad H \\in \\mathbb R^{out\\times in},
               \\ H^\\top H = I_{in}, \\qquad W[:, :, i, j] = 0 \\text{ elsewhere},

    with ``(c_1, c_2) = (k_1 // 2, k_2 // 2)`` and ``H`` drawn as ``orthogonal((out, in))``. Under 'same'
    zero padding (``padding = k // 2``) the convolution applies ``H`` at every pixel, so it preserves the
    norm of any input (times ``gain``). TensorFlow's ``ConvolutionDeltaOrthogonal`` in our layout.

    Parameters
    ----------
    shape : (out, in, k1[, k2[, k3]])
        ``in <= out`` and every kernel size odd (the centre tap must exist).
    gain, rng, dtype : as :func:`orthogonal`.

    Raises
    ------
    ValueError
        ``in > out`` (the centre block cannot have orthonormal columns), an even kernel size, or not a
        3-D to 5-D shape.
    """
    who = "delta_orthogonal"
    dims = _conv_dims(shape, who)
    if len(dims) > 5:
        raise ValueError(f"{who}: shape must have 3 to 5 dimensions (out, in, k, ...), got {dims}")
    dt = float_dtype(who, dtype)
    gain = _gain(who, gain, dt)
    out, cin, ks = dims[0], dims[1], dims[2:]
    if cin > out:
        raise ValueError(f"{who}: in_channels={cin} > out_channels={out} in shape {dims}: the centre tap "
                         f"(out x in) cannot have orthonormal columns; need in <= out")
    if any(k % 2 == 0 for k in ks):
        raise ValueError(f"{who}: kernel sizes must be odd (a centre tap is needed), got {ks} in {dims}")
    gen = host_rng(rng, who=who)
    if math.prod(dims) == 0:
        return _empty(dims, dt)
    w = np.zeros(dims, dtype=dt)
    centre = tuple(k // 2 for k in ks)
    w[(slice(None), slice(None)) + centre] = _orthogonalize(_draw_gaussian(out, cin, gen, dt), gain, "qr",
                                                            overwrite=True, who=who)
    return _finite(who, _to_backend(w, dt))


def _symmetric_projection(n, gen):
    """``P = C Cᵀ`` with ``C`` a Haar orthogonal matrix whose columns are each kept with probability ½
    (TensorFlow's ``_symmetric_projection``): ``P = Pᵀ = P²``."""
    q = _haar_host(n, gen)
    mask = gen.standard_normal(n) > 0
    c = q * mask
    return c @ c.T


def _block_orth(p1, p2):
    """TensorFlow's ``_block_orth``: the 2x2 kernel ``[[P1 P2, P1 (I-P2)], [(I-P1) P2, (I-P1)(I-P2)]]``,
    i.e. the product of the two 1-D kernels ``[P1, I-P1]`` (vertical) and ``[P2, I-P2]`` (horizontal),
    each paraunitary. Returns an array (2, 2, n, n)."""
    eye = np.eye(p1.shape[0])
    a = (p1, eye - p1)
    b = (p2, eye - p2)
    return np.array([[a[i] @ b[j] for j in range(2)] for i in range(2)])


def _matrix_conv(m1, m2):
    """TensorFlow's ``_matrix_conv``: the 2-D convolution of two kernels of matrices,
    ``result[i, j] = Σ m1[a, b] @ m2[i - a, j - b]``; (k, k, n, n) and (l, l, n, n) → (k+l-1, ...)."""
    k, l, n = m1.shape[0], m2.shape[0], m1.shape[-1]
    size = k + l - 1
    out = np.zeros((size, size, n, n))
    for a in range(k):
        for b in range(k):
            for c in range(l):
                for d in range(l):
                    out[a + c, b + d] += m1[a, b] @ m2[c, d]
    return out


@_memory_checked
def block_orthogonal_conv(shape, gain=1.0, rng=None, dtype=np.float32):
    """Orthogonal convolution kernel [Xiao2018, Algorithm 1]: the operator is exactly orthogonal under
    circular padding.

    TensorFlow's ``ConvolutionOrthogonal2D`` converted to our ``(out, in, k, k)`` layout. With ``n = out``:

    1. ``O``: an ``n x n`` Haar orthogonal matrix; keep its first ``in`` rows (``in x n``, orthonormal rows).
    2. For ``k - 1`` times, two symmetric projections ``P₁, P₂`` (``P = C Cᵀ``, ``C`` a Haar matrix with
       each column kept with probability ½, as TensorFlow's ``_symmetric_projection``; any projection
       works) give the 2x2 kernel ``block_orth(P₁, P₂)`` (``[[P₁P₂, P₁(I-P₂)], [(I-P₁)P₂,
       (I-P₁)(I-P₂)]]``); these kernels are convolved together (``_matrix_conv``) into a ``k x k`` kernel
       ``p`` whose symbol ``p̂(z₁, z₂) = Π (P₁ + (I-P₁) z₁)(P₂ + (I-P₂) z₂)`` is unitary on the torus.
    3. TensorFlow's kernel is ``K[i, j] = O[:in] p[i, j]`` (``in x out``, TF's ``(kh, kw, in, out)``);
       ours is its transpose ``W[:, :, i, j] = gain · K[i, j]ᵀ``.

    For an ``N x N`` circular input, the operator's singular values are those of the per-frequency
    matrices ``K̂(u, v) = Σ_{i,j} W[:, :, i, j] e^{-2πi(ui+vj)/N}`` (``out x in``), all equal to ``gain``:
    the convolution is ``gain`` times an isometry and preserves the norm of any input up to ``gain``.
    Under zero padding there are finite-size effects at the border.

    Parameters
    ----------
    shape : (out, in, k, k)
        ``in <= out`` and a square kernel (TensorFlow's conditions ``shape[-2] <= shape[-1]``,
        ``shape[0] == shape[1]`` in its layout). Any ``k >= 1`` (``k = 1`` gives ``O[:in]ᵀ``).
    gain, rng, dtype : as :func:`orthogonal` (built in float64, then cast).

    Raises
    ------
    ValueError
        Not 4-D, ``in > out``, or ``kh != kw``.
    """
    who = "block_orthogonal_conv"
    dims = _conv_dims(shape, who)
    if len(dims) != 4:
        raise ValueError(f"{who}: shape must be 4-D (out, in, k, k), got {dims}")
    dt = float_dtype(who, dtype)
    gain = _gain(who, gain, dt)
    out, cin, kh, kw = dims
    if cin > out:
        raise ValueError(f"{who}: in_channels={cin} > out_channels={out} in shape {dims}: an orthogonal "
                         f"convolution needs in <= out")
    if kh != kw:
        raise ValueError(f"{who}: the kernel must be square (kh == kw), got {(kh, kw)} in {dims}")
    gen = host_rng(rng, who=who)
    if math.prod(dims) == 0:
        return _empty(dims, dt)
    orth = _haar_host(out, gen)[:cin, :]
    if kh == 1:
        p = np.eye(out)[None, None]
    else:
        p = _block_orth(_symmetric_projection(out, gen), _symmetric_projection(out, gen))
        for _ in range(kh - 2):
            p = _matrix_conv(p, _block_orth(_symmetric_projection(out, gen), _symmetric_projection(out, gen)))
    k_tf = orth @ p                                   # (k, k, in, out): TensorFlow's kernel
    w = gain * k_tf.transpose(3, 2, 0, 1)             # (out, in, k, k)
    if not np.isfinite(w).all() or np.abs(w).max() > float(np.finfo(dt).max):
        raise NonFiniteError(f"{who}: gain={gain!r} overflows {dt.name} (the kernel would hold Inf); use "
                             f"float64 or a smaller gain")
    return _to_backend(w, dt)


@_memory_checked
def identity(shape, gain=1.0, rng=None, dtype=np.float32):
    """Identity weight (IRNN: Le, Jaitly, Hinton 2015), times ``gain``.

    2-D: ``gain · eye(rows, cols)`` (``torch.nn.init.eye_``). 3-D to 5-D convolution weights
    ``(out, in, k...)``: zero except ``W[d, d, k₁//2, k₂//2, ...] = gain`` for ``d < min(out, in)``
    (``torch.nn.init.dirac_`` with ``groups=1``), so a 'same' convolution copies its first channels.
    ``rng`` is accepted for a uniform signature and unused.
    """
    who = "identity"
    dims = _shape(shape, who, min_ndim=2)
    if len(dims) > 5:
        raise ValueError(f"{who}: shape must have 2 to 5 dimensions, got {dims}")
    dt = float_dtype(who, dtype)
    gain = _gain(who, gain, dt)
    host_rng(rng, who=who)                            # unused, but a bad rng is a bug at the call site
    w = np.zeros(dims, dtype=dt)
    d = np.arange(min(dims[0], dims[1]))
    w[(d, d) + tuple(k // 2 for k in dims[2:])] = gain
    return _to_backend(w, dt)


# ---------------------------------------------------------------------------------------------------------
# Variance-scaling initializers.

_LINEAR_FNS = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
               "conv_transpose3d")
_NONLINEARITIES = _LINEAR_FNS + ("sigmoid", "tanh", "relu", "leaky_relu", "selu")


def _slope(who, param, name):
    """The leaky-ReLU negative slope: ``None`` is 0.01; else a finite Python int or float (PyTorch refuses
    bools and NumPy float32 too; ``ValueError`` keeps its wording ``negative_slope ... not a valid
    number``)."""
    if param is None:
        return 0.01
    try:
        finite = isinstance(param, (int, float)) and math.isfinite(param)      # an int beyond float overflows
    except OverflowError:
        finite = False
    if isinstance(param, bool) or not finite:
        raise ValueError(f"{who}: {name} must be a finite int or float (the negative slope of leaky_relu), got "
                         f"{type(param).__name__} {param!r} (negative_slope {param} not a valid number)")
    return param


def _calculate_gain(who, nonlinearity, param, name="param"):
    if not isinstance(nonlinearity, str) or nonlinearity not in _NONLINEARITIES:
        raise ValueError(f"{who}: nonlinearity must be one of {', '.join(map(repr, _NONLINEARITIES))}, got "
                         f"{nonlinearity!r} (Unsupported nonlinearity {nonlinearity})")
    if param is not None and nonlinearity != "leaky_relu":
        check_real(who, name, param)              # unused by these, as in PyTorch, but not NaN or a string
    if nonlinearity in _LINEAR_FNS or nonlinearity == "sigmoid":
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = _slope(who, param, name)
        if abs(slope) > 1e150:                     # slope ** 2 would overflow a Python float
            return math.sqrt(2.0) / abs(float(slope))
        return math.sqrt(2.0 / (1 + slope ** 2))
    return 3.0 / 4                                 # selu


def calculate_gain(nonlinearity, param=None):
    """PyTorch's recommended gain (``torch.nn.init.calculate_gain``, same values; its error wording is kept
    inside ours).

    ==================  =======================================
    nonlinearity        gain
    ==================  =======================================
    linear / conv*      1
    sigmoid             1
    tanh                5/3
    relu                √2
    leaky_relu          √(2 / (1 + slope²)), slope = param (0.01 when param is None)
    selu                3/4
    ==================  =======================================

    Raises ``ValueError("calculate_gain: nonlinearity must be one of ... (Unsupported nonlinearity ...)")``
    for other names and ``ValueError("calculate_gain: param must be a finite int or float ... (negative_slope
    ... not a valid number)")`` for a leaky_relu ``param`` that is not a finite Python int or float (``bool``
    and NumPy float32 refused, as PyTorch does). For the other nonlinearities ``param`` is unused but must
    be None or a finite real number.
    """
    return _calculate_gain("calculate_gain", nonlinearity, param)


def _fan(dims, mode, who):
    m = mode.lower() if isinstance(mode, str) else mode
    check_choice(who, "mode", m, ("fan_in", "fan_out"))
    fan_in, fan_out = calculate_fan_in_and_fan_out(dims)
    return fan_in if m == "fan_in" else fan_out


def _check_std(who, what, value, dt, spread):
    """``NonFiniteError`` unless draws of scale ``value`` fit ``dt``: ``spread · |value|`` must stay below
    the dtype's maximum (``spread``: how far, in units of ``value``, a draw can reach)."""
    if not math.isfinite(value) or abs(value) * spread > float(np.finfo(dt).max):
        raise NonFiniteError(f"{who}: the {what} {value!r} overflows {np.dtype(dt).name} (draws would be Inf); "
                             f"use float64 or a smaller gain")
    return value


def _uniform_host(who, dims, bound, gen, dt):
    _check_std(who, "bound", bound, dt, 2.0)
    return _finite(who, _to_backend(gen.uniform(-bound, bound, size=dims), dt))


def _normal_host(who, dims, std, gen, dt):
    _check_std(who, "standard deviation", std, dt, 40.0)
    return _finite(who, _to_backend(gen.normal(0.0, std, size=dims), dt))


@_memory_checked
def xavier_uniform(shape, gain=1.0, rng=None, dtype=np.float32):
    """Glorot/Xavier uniform [Glorot2010] (``torch.nn.init.xavier_uniform_``):

    .. math::  W \\sim U(-a, a), \\qquad a = \\mathrm{gain}\\sqrt{6 / (\\mathrm{fan\\_in} +
               \\mathrm{fan\\_out})}, \\qquad \\mathrm{Var} = \\mathrm{gain}^2\\, 2/(\\mathrm{fan\\_in} +
               \\mathrm{fan\\_out}).

    Raises ``NonFiniteError`` when ``a`` does not fit the dtype (the draws would be Inf).
    """
    who = "xavier_uniform"
    dims = _shape(shape, who, min_ndim=2)
    dt, gain, gen = float_dtype(who, dtype), check_real(who, "gain", gain), host_rng(rng, who=who)
    if math.prod(dims) == 0:
        return _empty(dims, dt)
    fan_in, fan_out = calculate_fan_in_and_fan_out(dims)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return _uniform_host(who, dims, math.sqrt(3.0) * std, gen, dt)


@_memory_checked
def xavier_normal(shape, gain=1.0, rng=None, dtype=np.float32):
    """Glorot/Xavier normal [Glorot2010] (``torch.nn.init.xavier_normal_``):
    ``W ~ N(0, std²)``, ``std = gain · √(2 / (fan_in + fan_out))``. ``NonFiniteError`` when draws of that
    ``std`` would overflow the dtype."""
    who = "xavier_normal"
    dims = _shape(shape, who, min_ndim=2)
    dt, gain, gen = float_dtype(who, dtype), check_real(who, "gain", gain), host_rng(rng, who=who)
    if math.prod(dims) == 0:
        return _empty(dims, dt)
    fan_in, fan_out = calculate_fan_in_and_fan_out(dims)
    return _normal_host(who, dims, gain * math.sqrt(2.0 / (fan_in + fan_out)), gen, dt)


def _kaiming_std(who, dims, a, mode, nonlinearity):
    a = check_real(who, "a", a)
    std = _calculate_gain(who, nonlinearity, a, name="a")
    return std, _fan(dims, mode, who)


@_memory_checked
def kaiming_uniform(shape, a=0.0, mode="fan_in", nonlinearity="leaky_relu", rng=None, dtype=np.float32):
    """He/Kaiming uniform [He2015] (``torch.nn.init.kaiming_uniform_``, same defaults):

    .. math::  W \\sim U(-b, b), \\qquad b = \\sqrt 3\\, \\frac{g}{\\sqrt{\\mathrm{fan}}}, \\qquad
               g = \\mathrm{calculate\\_gain}(\\mathrm{nonlinearity}, a),

    ``fan`` = fan_in or fan_out (``mode``). With the defaults (``a=0``, leaky_relu) ``g = √2``.
    ``kaiming_uniform(shape, a=√5)`` is PyTorch's default layer init (:func:`pytorch_default`).
    ``a`` must be a finite real number (``ValueError`` for NaN/Inf), ``mode`` ``"fan_in"`` or
    ``"fan_out"`` (any case), ``nonlinearity`` a name :func:`calculate_gain` knows.
    """
    who = "kaiming_uniform"
    dims = _shape(shape, who, min_ndim=2)
    dt, gen = float_dtype(who, dtype), host_rng(rng, who=who)
    std, fan = _kaiming_std(who, dims, a, mode, nonlinearity)
    if math.prod(dims) == 0:
        return _empty(dims, dt)
    return _uniform_host(who, dims, math.sqrt(3.0) * std / math.sqrt(fan), gen, dt)


@_memory_checked
def kaiming_normal(shape, a=0.0, mode="fan_in", nonlinearity="leaky_relu", rng=None, dtype=np.float32):
    """He/Kaiming normal [He2015] (``torch.nn.init.kaiming_normal_``): ``W ~ N(0, std²)``,
    ``std = calculate_gain(nonlinearity, a) / √fan``; arguments checked as :func:`kaiming_uniform`."""
    who = "kaiming_normal"
    dims = _shape(shape, who, min_ndim=2)
    dt, gen = float_dtype(who, dtype), host_rng(rng, who=who)
    std, fan = _kaiming_std(who, dims, a, mode, nonlinearity)
    if math.prod(dims) == 0:
        return _empty(dims, dt)
    return _normal_host(who, dims, std / math.sqrt(fan), gen, dt)


_TRUNC_STD = 0.87962566103423978   # std of the standard normal truncated to [-2, 2] (Keras' constant)


@_memory_checked
def lecun_normal(shape, gain=1.0, rng=None, dtype=np.float32, truncated=False):
    """LeCun normal [LeCun1998]: ``W ~ N(0, gain² / fan_in)``.

    Untruncated by default (the formula of the paper, and ``kaiming_normal(nonlinearity="linear")``).
    ``truncated=True`` gives Keras' ``LecunNormal``: a normal truncated at ±2 standard deviations
    (redrawn outside) with ``std = gain / √fan_in / 0.8796…`` so that the variance is still
    ``gain² / fan_in``. ``truncated`` must be a bool.
    """
    who = "lecun_normal"
    dims = _shape(shape, who, min_ndim=2)
    dt, gain, gen = float_dtype(who, dtype), check_real(who, "gain", gain), host_rng(rng, who=who)
    truncated = check_bool(who, "truncated", truncated)
    if math.prod(dims) == 0:
        return _empty(dims, dt)
    fan_in, _ = calculate_fan_in_and_fan_out(dims)
    std = gain / math.sqrt(fan_in)
    if not truncated:
        return _normal_host(who, dims, std, gen, dt)
    _check_std(who, "standard deviation", std / _TRUNC_STD, dt, 2.0)
    z = gen.standard_normal(dims)
    bad = np.abs(z) > 2.0
    while bad.any():
        z[bad] = gen.standard_normal(int(bad.sum()))
        bad = np.abs(z) > 2.0
    return _finite(who, _to_backend(z * (std / _TRUNC_STD), dt))


@_memory_checked
def normal(shape, mean=0.0, std=1.0, rng=None, dtype=np.float32):
    """``W ~ N(mean, std²)`` (``torch.nn.init.normal_``); any shape, ``mean`` finite, ``std >= 0`` finite;
    ``NonFiniteError`` when the draws would not fit the dtype."""
    who = "normal"
    dims = _shape(shape, who)
    dt, gen = float_dtype(who, dtype), host_rng(rng, who=who)
    mean, std = check_real(who, "mean", mean), check_real(who, "std", std, lo=0.0)
    _check_std(who, "range |mean| + 40 std", abs(mean) + 40.0 * std, dt, 1.0)
    return _finite(who, _to_backend(gen.normal(mean, std, size=dims), dt))


@_memory_checked
def uniform(shape, a=0.0, b=1.0, rng=None, dtype=np.float32):
    """``W ~ U(a, b)`` (``torch.nn.init.uniform_``); any shape, finite ``a <= b`` within the dtype's range
    (``NonFiniteError`` otherwise, or when ``b - a`` overflows)."""
    who = "uniform"
    dims = _shape(shape, who)
    dt, gen = float_dtype(who, dtype), host_rng(rng, who=who)
    a, b = check_real(who, "a", a), check_real(who, "b", b)
    if a > b:
        raise ValueError(f"{who}: need a <= b, got a={a}, b={b}")
    _check_std(who, "interval width b - a", b - a, dt, 1.0)
    _check_std(who, "bound", max(abs(a), abs(b)), dt, 1.0)
    return _finite(who, _to_backend(gen.uniform(a, b, size=dims), dt))


@_memory_checked
def pytorch_default(shape, rng=None, dtype=np.float32, fan_in=None):
    """What orthoref's (and PyTorch's) Linear and Conv2d layers draw today:
    ``U(-1/√fan_in, 1/√fan_in)`` (``kaiming_uniform_(a=√5)`` reduces to this bound).

    Draws exactly as :func:`orthoref.nn.linear.kaiming_uniform_default` (same stream for the same
    generator). ``fan_in`` defaults to the weight's (``shape[1] · prod(shape[2:])``); pass it for a bias
    (an int >= 0; 0 gives zeros, as PyTorch's bias of a layer without inputs).
    """
    from .nn.linear import kaiming_uniform_default

    who = "pytorch_default"
    if fan_in is None:
        dims = _shape(shape, who, min_ndim=2)
        fan_in = calculate_fan_in_and_fan_out(dims)[0]
    else:
        dims = _shape(shape, who)
        fan_in = check_int(who, "fan_in", fan_in, lo=0)
    dt, gen = float_dtype(who, dtype), host_rng(rng, who=who)
    try:
        return kaiming_uniform_default(dims, int(fan_in), gen, dt)
    except ValueError as exc:               # its arguments are checked: only an allocation can fail there
        raise ValueError(f"{who}: shape {dims}: {exc}") from None


# ---------------------------------------------------------------------------------------------------------
# LSUV.

class _Stop(Exception):
    """Raised by a capture hook to end a forward pass once the wanted output is known."""


def _named_modules(module, prefix=""):
    yield prefix.rstrip("."), module
    for name, child in module.children():
        yield from _named_modules(child, prefix + name + ".")


def _run_captured(model, x, layers, stop):
    """Run ``model.forward(x)`` with the ``forward`` of each ``(name, layer)`` wrapped to record its output
    (an instance attribute shadows the class method); ``stop``: end the pass after the first layer.
    Returns the list of ``(name, output)`` in call order."""
    seen = []
    for name, layer in layers:
        original = layer.forward

        def hook(inp, _orig=original, _name=name):
            y = _orig(inp)
            seen.append((_name, y))
            if stop:
                raise _Stop
            return y

        layer.forward = hook
    try:
        model.forward(x)
    except _Stop:
        pass
    finally:
        for _, layer in layers:
            vars(layer).pop("forward", None)
    return seen


def _rescale_weight(who, name, w, factor):
    """``w.data *= factor``, or ``NonFiniteError`` (weight left as it was) when the factor or the rescaled
    weight does not fit the dtype (a layer whose output variance is ~1e-300)."""
    xp = get_array_module(w.data)
    if factor > float(np.finfo(w.dtype).max):
        new = None
    else:
        new = w.data * w.dtype.type(factor)
    if new is None or not bool(xp.isfinite(new).all()):
        raise NonFiniteError(f"{who}: the weight of layer {name!r} would overflow {np.dtype(w.dtype).name} when "
                             f"rescaled by {factor:.3g} to unit output variance; the layer's output is "
                             f"nearly constant on this batch")
    w.data[...] = new


def lsuv(model, x, tol=0.1, max_iter=10, rng=None, return_report=False):
    """Layer-sequential unit-variance initialization [Mishkin2015].

    1. Every layer with a ``weight`` Parameter of 2 or more dimensions (Linear, Conv2d, ...) found by
       walking ``model``'s children gets an orthogonal weight (:func:`orthogonal`, PyTorch convention,
       gain 1) [Saxe2014]. Biases are left as they are.
    2. In forward order, for each such layer ``l``: run the model on the batch ``x``, take the variance
       ``v`` of ``l``'s output, and while ``|v - 1| >= tol`` (at most ``max_iter`` times) rescale
       ``W_l ← W_l / √v``.

    The passes run in eval mode (no dropout, batch norm on running statistics, no statistics updated);
    each module's train/eval flag is restored afterwards. A pass stops right after the layer being
    measured.

    Parameters
    ----------
    model : Module
    x : array (N, ...)
        A batch on the model's backend and dtype: a non-empty, finite float32/float64 array
        (``TypeError`` / ``ValueError`` otherwise, before any weight is touched).
    tol : float > 0
    max_iter : int in [1, MAX_ITERATIONS]
    rng : None, int or numpy.random.Generator
        For the orthogonal draws, in layer order.
    return_report : bool
        Also return ``{layer name: (final output variance, rescalings)}``.

    Returns
    -------
    model (and the report when ``return_report``). A layer that has not reached the tolerance after
    ``max_iter`` rescalings gives a ``RuntimeWarning``.

    Raises
    ------
    ValueError
        No layer with a weight, a weight layer that ``model.forward`` never calls, or an output with zero
        or non-finite variance (rescaling cannot fix it: a dead layer, e.g. all-negative inputs to ReLU);
        bad arguments. ``NonFiniteError`` when a rescaled weight would overflow its dtype.
    TypeError
        ``model`` not a Module, ``x`` not a float array of the model's dtype, non-numeric ``tol``/``max_iter``.
    """
    from .nn.module import Module, Parameter

    who = "lsuv"
    if not isinstance(model, Module):
        raise TypeError(f"{who}: model must be an orthoref Module, got {type(model).__name__}")
    tol = check_real(who, "tol", tol, lo=0.0, lo_open=True)
    max_iter = check_int(who, "max_iter", max_iter, 1, MAX_ITERATIONS)
    return_report = check_bool(who, "return_report", return_report)
    gen = host_rng(rng, who=who)
    modules = list(_named_modules(model))
    layers = [(name or type(m).__name__, m) for name, m in modules
              if isinstance(getattr(m, "weight", None), Parameter) and m.weight.data.ndim >= 2]
    if not layers:
        raise ValueError(f"{who}: {type(model).__name__} has no layer with a weight of 2 or more dimensions")
    check_array(who, x, "x", min_ndim=1, what="(N, ...), a batch")
    wdt = layers[0][1].weight.dtype
    if x.dtype != wdt:
        raise TypeError(f"{who}: x must have the model's dtype {np.dtype(wdt).name}, got {x.dtype}")

    for _, layer in layers:
        w = layer.weight
        xp = get_array_module(w.data)
        q = orthogonal(tuple(w.shape), rng=gen, dtype=w.dtype)
        if get_array_module(q) is not xp:
            q = xp.asarray(to_numpy(q))
        w.data = q

    modes = [(m, m.training) for _, m in modules]
    model.eval()
    report = {}
    try:
        order = []
        for name, _ in _run_captured(model, x, layers, stop=False):
            if name not in order:
                order.append(name)
        missing = [name for name, _ in layers if name not in order]
        if missing:
            raise ValueError(f"{who}: layer(s) {missing} have a weight but are not called by model.forward(x)")
        by_name = dict(layers)
        for name in order:
            layer = by_name[name]
            steps = 0
            while True:
                (_, y), = _run_captured(model, x, [(name, layer)], stop=True)
                xp = get_array_module(y)
                with np.errstate(over="ignore", invalid="ignore"):
                    var = float(xp.var(y.astype(xp.float64)))
                if not math.isfinite(var):
                    raise NonFiniteError(f"{who}: the output of layer {name!r} has variance {var} on the batch: "
                                         f"it overflows float64 (rescale x) or the layer overflowed")
                if var == 0.0:
                    raise ValueError(f"{who}: the output of layer {name!r} has variance {var} on the batch; "
                                     f"rescaling its weight cannot bring it to 1 (dead or constant layer?)")
                if abs(var - 1.0) < tol or steps == max_iter:
                    break
                _rescale_weight(who, name, layer.weight, 1.0 / math.sqrt(var))
                steps += 1
            if abs(var - 1.0) >= tol:
                warnings.warn(f"{who}: layer {name!r} output variance {var:.4g} not within tol={tol} of 1 "
                              f"after max_iter={max_iter} rescalings", RuntimeWarning, stacklevel=2)
            report[name] = (var, steps)
    finally:
        for m, flag in modes:
            m.training = flag
    return (model, report) if return_report else model


# ---------------------------------------------------------------------------------------------------------
# Registry of named initializers.

def _conv_or_matrix(conv_fn):
    """A conv-only initializer that falls back to :func:`orthogonal` for 2-D (Linear) weights, so a whole
    model can be initialized by one name."""
    def f(shape, rng=None, dtype=np.float32):
        dims = _shape(shape, conv_fn.__name__, min_ndim=2)
        if len(dims) == 2:
            return orthogonal(dims, rng=rng, dtype=dtype)
        return conv_fn(dims, rng=rng, dtype=dtype)
    f.__name__ = conv_fn.__name__
    f.__doc__ = (f"``{conv_fn.__name__}`` for convolution weights, :func:`orthogonal` for 2-D weights.")
    return f


def _named(fn, name, **kw):
    def f(shape, rng=None, dtype=np.float32):
        return fn(shape, rng=rng, dtype=dtype, **kw)
    f.__name__ = name
    f.__doc__ = f"``{fn.__name__}(shape, rng=rng, dtype=dtype{''.join(f', {k}={v!r}' for k, v in kw.items())})``"
    return f


INITIALIZERS = {
    "default": _named(pytorch_default, "default"),
    "orthogonal": _named(orthogonal, "orthogonal"),
    "orthogonal_svd": _named(orthogonal, "orthogonal_svd", method="svd"),
    "special_orthogonal": _named(special_orthogonal, "special_orthogonal"),
    "delta_orthogonal": _conv_or_matrix(delta_orthogonal),
    "block_orthogonal": _conv_or_matrix(block_orthogonal_conv),
    "identity": _named(identity, "identity"),
    "xavier_uniform": _named(xavier_uniform, "xavier_uniform"),
    "xavier_normal": _named(xavier_normal, "xavier_normal"),
    "kaiming_uniform": _named(kaiming_uniform, "kaiming_uniform"),
    "kaiming_normal": _named(kaiming_normal, "kaiming_normal"),
    "lecun_normal": _named(lecun_normal, "lecun_normal"),
}
"""Name -> ``f(shape, rng=None, dtype=np.float32)`` with default gains (PyTorch's defaults for xavier and
kaiming: gain 1, ``a=0``, fan_in, leaky_relu). ``special_orthogonal`` accepts square 2-D shapes only;
``delta_orthogonal`` and ``block_orthogonal`` use :func:`orthogonal` for 2-D (Linear) weights."""


def get_initializer(name_or_callable):
    """The initializer registered under ``name`` in :data:`INITIALIZERS`, or the callable itself.

    Raises ``ValueError`` listing the valid names for an unknown name, ``TypeError`` for anything that
    is neither a string nor callable.
    """
    if callable(name_or_callable):
        return name_or_callable
    if isinstance(name_or_callable, str):
        try:
            return INITIALIZERS[name_or_callable]
        except KeyError:
            raise ValueError(f"get_initializer: unknown initializer {name_or_callable!r}; valid names: "
                             f"{', '.join(sorted(INITIALIZERS))} (or pass a callable "
                             f"f(shape, rng=None, dtype=np.float32))") from None
    raise TypeError(f"get_initializer: the initializer must be a name (one of {', '.join(sorted(INITIALIZERS))}) "
                    f"or a callable, "
                    f"got {type(name_or_callable).__name__}")
