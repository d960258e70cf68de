"""Orthogonally parametrized layers: the weight is recomputed in every forward from an unconstrained
parameter through an orthogonal map, following PyTorch's ``torch.nn.utils.parametrizations.orthogonal``.

Construction of the weight ``W`` (``out x in``; a Conv2d kernel is seen as the matrix ``out x in·kh·kw``).
Work in the *tall frame*: ``X = raw`` when ``out >= in``, else ``X = rawᵀ``; ``X`` is ``n x k``, ``n >= k``.

=================  =====================================================================================
``map``            ``Q`` (``n x k``, orthonormal columns)
=================  =====================================================================================
``"matrix_exp"``   ``Y = [tril(X), 0]`` (``n x n``), ``A = Y − Yᵀ`` (skew), ``Q = exp(A)[:, :k]``
``"cayley"``       same ``A``, ``Q = ((I − A/2)⁻¹ (I + A/2))[:, :k]``
``"householder"``  ``V = tril(X, −1)``, ``τ_j = 2 / (1 + ‖V[:, j]‖²)``,
                   ``Q = householder_product(V, τ) · diag(trunc(diag X))`` (the diagonal of ``X`` holds the
                   column signs ±1 and gets no gradient, as PyTorch's ``X.diagonal().int()``)
``"polar"``        ``Q = polar(X) = U Vᵀ`` (not in PyTorch)
``"newton_schulz"`` ``Q = newton_schulz(X, steps, coefficients)`` (not in PyTorch; only approximately
                   orthogonal: exact in the limit of a converging coefficient set such as ``"cubic"``)
``(f, f_vjp)``     ``Q = f(X)``, a user's map of the :mod:`orthoref.ortho` convention (``f_vjp(X, Q̄) -> X̄``)
                   that fixes orthogonal matrices as ``polar`` does (``raw`` starts at ``I``; ``right_inverse``
                   without trivialization sets ``raw = W``), e.g. ``(ortho.qr_orthogonalize,
                   ortho.qr_orthogonalize_vjp)``
=================  =====================================================================================

The names select ``(forward, backward)`` from a table, a pair is used as it is (geotorch's
``SO.trivializations`` and ``parse_triv``).

With ``trivialization=True`` (PyTorch's ``use_trivialization=True``) a buffer ``base`` (``n x n``
orthogonal) is kept and the tall-frame weight is ``base @ Q``; ``W`` is that matrix (transposed back when
``out < in``). The unconstrained parameter ``raw`` has the weight's shape ``(out, in)``, exactly as
PyTorch's ``parametrizations.weight.original`` (only its lower triangle in the tall frame is read by the
exp/Cayley/Householder maps; the rest gets zero gradient).

The backward pass is the chain ``W̄ → Q̄ = baseᵀ W̄ → Ā (or V̄, τ̄) → X̄ → raw̄`` through the ``*_vjp`` of
:mod:`orthoref.ortho`.

Backend: the maps run on the arrays' module (``xp = get_array_module(X)``); ``raw`` and ``base`` are created
on the active backend (host draws moved with :func:`orthoref.backend.asarray`, as :class:`~orthoref.nn.Linear`
does). Host round trip: CuPy has no ``geqrf`` reflectors (SciPy's ``qr(mode="raw")``), so the Householder
``right_inverse`` and initialization without trivialization compute them on the host and move them back
(:func:`orthoref.backend.on_host`); ``"matrix_exp"`` does the same for SciPy's ``expm``/``expm_frechet``
(see :mod:`orthoref.ortho.stiefel`).
"""
from __future__ import annotations

import numpy as np

from .._checks import (MAX_ITERATIONS, NonFiniteError, all_finite, check_bool, check_choice, check_finite,
                       check_float, check_floats, check_int, check_real, float_dtype)
from ..backend import asarray, get_array_module, get_backend, host_rng, on_host, to_numpy
from ..ops._contract import check_size, memory_checked
from ..ops._window import conv_geometry, conv_padding, pair
from ..ops.conv import conv2d_backward_as, conv2d_forward_as
from ..ops.linear import linear_backward_as, linear_forward_as
from ..ortho.decomp import householder_product, householder_product_vjp, polar, polar_vjp
from ..ortho._linalg import haar, ns_schedule
from ..ortho.iterative import newton_schulz, newton_schulz_vjp
from ..ortho.metrics import orthogonality_error_2
from ..ortho.stiefel import cayley, cayley_vjp, expm_skew, expm_skew_vjp
from .linear import kaiming_uniform_default
from .conv import conv_repr
from .module import Module, Parameter, check_input

__all__ = ["OrthogonalLinear", "OrthogonalConv2d", "ORTHOGONAL_MAPS", "CONV_VIEWS"]

#: The views of :class:`OrthogonalConv2d`'s kernel: one ``out x in·kh·kw`` matrix, or ``kh x kw`` slices.
CONV_VIEWS = ("matrix", "slices")


# ---------------------------------------------------------------------------------------------------------
# The maps: ``forward(X, **ns) -> (Q, cache)`` on the tall frame ``X`` (``n x k``) and
# ``backward(cache, Q̄, **ns) -> X̄``; ``ns`` holds the Newton–Schulz settings (the other maps ignore them).

def _mT(M):
    """The transpose of each matrix of ``M`` (``(..., n, k)`` → ``(..., k, n)``; ``M.T`` for a matrix)."""
    return get_array_module(M).swapaxes(M, -1, -2)


def _skew_of(X):
    """``A = Y − Yᵀ`` with ``Y = [tril(X), 0]`` (``n x n``; each matrix of a batch)."""
    xp = get_array_module(X)
    n, k = X.shape[-2:]
    Y = xp.zeros(X.shape[:-1] + (n,), dtype=X.dtype)
    Y[..., :k] = xp.tril(X)
    return Y - _mT(Y)


def _of_skew(f, f_vjp):
    """``Q = f(A)[:, :k]`` for a map ``f`` of skew matrices (``expm_skew``, ``cayley``) and its backward
    ``X̄ = tril((Ā − Āᵀ)[:, :k])``, ``Ā = f_vjp(A, [Q̄, 0])``."""
    def forward(X, **_):
        A = _skew_of(X)
        return f(A)[..., :X.shape[-1]], A

    def backward(A, G, **_):
        xp = get_array_module(G)
        n, k = G.shape[-2:]
        GQ = xp.zeros(G.shape[:-1] + (n,), dtype=G.dtype)
        GQ[..., :k] = G
        GA = f_vjp(A, GQ)
        return xp.tril((GA - _mT(GA))[..., :k])
    return forward, backward


def _householder(X, **_):
    """``V = tril(X, −1)``, ``τ_j = 2 / (1 + ‖v_j‖²)``, ``Q = householder_product(V, τ) · diag(trunc(diag X))``."""
    xp = get_array_module(X)
    V = xp.tril(X, -1)
    tau = (2.0 / (1.0 + (V * V).sum(axis=-2))).astype(X.dtype)
    s = xp.trunc(xp.diagonal(X, axis1=-2, axis2=-1)).astype(X.dtype)[..., None, :]
    return householder_product(V, tau) * s, (V, tau, s)


def _householder_vjp(cache, G, **_):
    V, tau, s = cache
    gV, gtau = householder_product_vjp(V, tau, G * s)
    gV = gV - V * (gtau * tau * tau)[..., None, :]    # τ_j = 2/(1+‖v_j‖²): ∂τ_j/∂V_ij = −τ_j² V_ij
    return get_array_module(gV).tril(gV, -1)


def _projection(f, f_vjp):
    """``Q = f(X)``, ``X̄ = f_vjp(X, Q̄)`` for a map of the :mod:`orthoref.ortho` convention (``polar``, a
    user's pair)."""
    return (lambda X, **_: (f(X), X)), (lambda X, G, **_: f_vjp(X, G))


#: Name → ``(forward, backward)`` of the map (geotorch's ``SO.trivializations`` pattern).
_MAPS = {
    "matrix_exp": _of_skew(expm_skew, expm_skew_vjp),
    "cayley": _of_skew(cayley, cayley_vjp),
    "householder": (_householder, _householder_vjp),
    "polar": _projection(polar, polar_vjp),
    "newton_schulz": ((lambda X, **ns: (newton_schulz(X, **ns), X)),
                      (lambda X, G, **ns: newton_schulz_vjp(X, G, **ns))),
}
ORTHOGONAL_MAPS = tuple(_MAPS)
# The maps from the lower triangle of X (PyTorch's): raw starts at −I and has no right inverse for exp/Cayley.
# The others (and a user's pair) are projections that fix orthogonal matrices: raw starts at I.
_TRIANGULAR = ("matrix_exp", "cayley", "householder")


def _parse_map(who, map):
    """``(map, (forward, backward))``: a name of :data:`ORTHOGONAL_MAPS` or a user's pair ``(f, f_vjp)``
    (geotorch's ``parse_triv``)."""
    if isinstance(map, tuple) and len(map) == 2 and all(callable(f) for f in map):
        return map, _projection(*map)
    map = check_choice(who, "map", map, ORTHOGONAL_MAPS)
    return map, _MAPS[map]


def _eye(xp, shape, dtype, value=1.0):
    """``value · I`` of shape ``(..., n, k)`` (each matrix of a batch)."""
    return xp.ascontiguousarray(xp.broadcast_to(value * xp.eye(*shape[-2:], dtype=dtype), shape))


def _neg_eye(xp, shape, dtype):
    """PyTorch's ``right_inverse`` value of the parameter: ``−I`` (so ``householder`` gives ``I[:, :k]``)."""
    return _eye(xp, shape, dtype, -1.0)


def _haar_batch(gen, batch, n, dtype):
    """Haar ``n x n`` orthogonal matrices of shape ``batch + (n, n)``, drawn one after the other (``haar``)."""
    if not batch:
        return haar(gen, n, dtype)
    return np.stack([haar(gen, n, dtype) for _ in range(int(np.prod(batch)))]).reshape(batch + (n, n))


def _householder_reflectors(Wt):
    """PyTorch's ``right_inverse`` without trivialization for ``householder``: ``geqrf`` reflectors of the
    tall ``Wt`` with ``diag = sign(diag R)`` (flipped where LAPACK's ``τ = 0``), in ``Wt``'s dtype.

    Host round trip: CuPy has no ``geqrf`` reflectors (SciPy's ``qr(mode="raw")``); a device ``Wt`` is
    copied to the host and the result moved back (:func:`orthoref.backend.on_host`)."""
    return on_host(_householder_reflectors_host, Wt)


def _householder_reflectors_host(Wt):
    if Wt.ndim > 2:                                        # a batch: each matrix
        return np.stack([_householder_reflectors_host(M) for M in Wt.reshape((-1,) + Wt.shape[-2:])]
                        ).reshape(Wt.shape)
    from scipy.linalg import qr
    (h, tau), _ = qr(np.asarray(Wt, dtype=np.float64), mode="raw")
    A = np.array(h, order="C")
    k = A.shape[1]
    d = np.arange(k)
    s = np.sign(A[d, d])
    s[s == 0] = 1.0
    s[tau == 0.0] *= -1.0
    A[d, d] = s
    return A.astype(Wt.dtype)


class _OrthogonalWeight(Module):
    """Shared machinery: the parameter ``raw`` (``out x m``), the buffer ``base`` and the map with its vjp."""

    _buffer_names = ("base",)

    def _setup(self, who, shape, bias, map, trivialization, steps, coefficients, eps, rng, dtype, fan_in,
               sizes="the sizes"):
        """``shape``: of ``raw`` and the weight, ``(out, m)`` or a batch of matrices ``(out, ..., r, c)``."""
        self.map, self._map_fns = _parse_map(who, map)
        self.trivialization = check_bool(who, "trivialization", trivialization)
        bias = check_bool(who, "bias", bias)
        self._buffer_names = ("base",) if self.trivialization else ()     # no None buffer in state dicts
        if steps is not None:
            steps = check_int(who, "steps", steps, 1, MAX_ITERATIONS)
        eps = check_real(who, "eps", eps, 0.0)
        ns_schedule(who, coefficients, steps)    # validates coefficients (whatever the map: no silent typo)
        self.steps, self.coefficients, self.eps = steps, coefficients, eps
        dt = float_dtype(who, dtype)
        gen = host_rng(rng, who=who)
        self._shape = tuple(shape)
        n = max(shape[-2:])
        check_size(who, sizes, shape[:-2] + (n, n) if self.trivialization else shape)
        with memory_checked(who, sizes):
            if self.trivialization:
                self.raw = Parameter(self._raw_identity(get_backend(), dt))
                self.base = asarray(_haar_batch(gen, shape[:-2], n, dt))     # drawn on the host
            else:
                w = kaiming_uniform_default(self._shape, fan_in, gen, dt)    # on the active backend
                if map == "householder":
                    w = self._from_tall(_householder_reflectors(self._to_tall(w)))
                self.raw = Parameter(w.astype(dt))
                self.base = None
            self.bias = Parameter(kaiming_uniform_default(shape[:1], fan_in, gen, dt)) if bias else None
        self._cache = None

    # -- frames ----------------------------------------------------------------------------------------
    @property
    def _wide(self):
        return self._shape[-2] < self._shape[-1]

    def _to_tall(self, M):
        return _mT(M) if self._wide else M

    def _from_tall(self, M):
        return get_array_module(M).ascontiguousarray(_mT(M)) if self._wide else M

    @property
    def _triangular(self):
        return isinstance(self.map, str) and self.map in _TRIANGULAR

    def _raw_identity(self, xp, dt):
        if not self._triangular:
            return _eye(xp, self._shape, dt)                   # polar(I[:, :k]) = I[:, :k]
        return _neg_eye(xp, self._shape, dt)

    # -- the map ---------------------------------------------------------------------------------------
    def _ns_kw(self):
        return dict(steps=self.steps, coefficients=self.coefficients, eps=self.eps)

    def _check_state(self, raw):
        """``raw`` and ``base`` as the constructor made them: float arrays of shapes ``(..., r, c)`` and
        ``(..., n, n)``, ``n = max(r, c)``, finite (assigning ``.data`` or ``base`` bypasses the constructor)."""
        who = type(self).__name__
        check_floats(who, ("raw", raw), ("base", self.base), finite=False)
        if tuple(raw.shape) != self._shape:
            raise ValueError(f"{who}: raw must have shape {self._shape}, got {tuple(raw.shape)}")
        n = max(self._shape[-2:])
        want = self._shape[:-2] + (n, n)
        if self.base is not None and tuple(self.base.shape) != want:
            raise ValueError(f"{who}: base must have shape {want}, got {tuple(self.base.shape)}")
        check_finite(who, "raw", raw)
        if self.base is not None:
            check_finite(who, "base", self.base)

    def _matrix(self, raw):
        """``(W, cache)``: the weight matrix (or batch of matrices) from ``raw`` and what the backward needs."""
        self._check_state(raw)
        Q, cache = self._map_fns[0](self._to_tall(raw), **self._ns_kw())
        if self.base is not None:
            Q = self.base @ Q
        return self._from_tall(get_array_module(Q).ascontiguousarray(Q)), cache

    def _matrix_vjp(self, cache, dW):
        """Gradient w.r.t. ``raw`` of ``<dW, W(raw)>``."""
        G = self._to_tall(dW)
        if self.base is not None:
            G = _mT(self.base) @ G
        GX = self._map_fns[1](cache, get_array_module(G).ascontiguousarray(G), **self._ns_kw())
        return self._from_tall(GX).astype(self.raw.dtype, copy=False)

    def _raw_grad(self, cache, dW):
        """:meth:`_matrix_vjp`, finite (``NonFiniteError`` naming the layer otherwise: the map's backward
        overflowed), before anything is accumulated."""
        g = self._matrix_vjp(cache, dW)
        if not all_finite(get_array_module(g), g):
            raise NonFiniteError(f"{self._who()}: the gradient of raw is not finite (the {self.map} map's "
                                 f"backward overflows {g.dtype}); use float64 or rescale")
        return g

    # -- public ----------------------------------------------------------------------------------------
    def _weight_matrix(self):
        return self._matrix(self.raw.data)[0]

    def _right_inverse_matrix(self, who, W):
        """Set ``raw`` (and ``base``) so that the weight matrix equals ``W`` (``out x m``, or each matrix of a
        batch: orthonormal rows or columns within ``max(1e-6, 10·n·eps)``). ``W`` may be on either backend;
        the results go to the device of ``raw``."""
        check_float(f"{who}.right_inverse", "W", W)
        xp = get_array_module(self.raw.data)
        W = to_numpy(W) if xp is np else xp.asarray(W)
        if tuple(W.shape) != self._shape:
            raise ValueError(f"{who}.right_inverse: W must have shape {self._shape}, got {tuple(W.shape)}")
        if not all_finite(xp, W):
            raise NonFiniteError(f"{who}.right_inverse: W must be finite, got NaN or Inf")
        dt = self.raw.dtype
        Wt = self._to_tall(W).astype(np.float64)
        n, k = Wt.shape[-2:]
        tol = max(1e-6, 10 * n * float(np.finfo(dt).eps))
        err = orthogonality_error_2(Wt)
        if not err <= tol:
            raise ValueError(f"{who}.right_inverse: W must be orthogonal (orthonormal "
                             f"{'rows' if self._wide else 'columns'}), got ‖WᵀW − I‖₂ = {err:.3e} > {tol:.1e}")
        if self.trivialization:
            if n > k:
                Qc, _ = xp.linalg.qr(Wt, mode="complete")
                base = xp.concatenate([Wt, Qc[..., k:]], axis=-1)
            else:
                base = Wt.copy()
            self.base = base.astype(dt)
            self.raw.data = self._raw_identity(xp, dt)
        elif self.map in ("matrix_exp", "cayley"):
            raise NotImplementedError(f"{who}.right_inverse: the {self.map} map has no right inverse with "
                                      f"trivialization=False (as in PyTorch); use trivialization=True")
        elif self.map == "householder":
            self.raw.data = self._from_tall(_householder_reflectors(Wt)).astype(dt)
        else:                                                   # polar(W) = W; newton_schulz(W) ≈ W
            self.raw.data = xp.array(W, dtype=dt)
        self.raw.grad = None

    def _map_repr(self):
        s = f"map={self.map!r}, trivialization={self.trivialization}"
        if self.map == "newton_schulz":
            s += f", steps={self.steps}, coefficients={self.coefficients!r}"
        return s


class OrthogonalLinear(_OrthogonalWeight):
    """``y = x Wᵀ + b`` with ``W`` (``out_features x in_features``) orthogonal by construction: orthonormal
    rows when ``out <= in``, orthonormal columns when ``out >= in``.

    ``W`` is recomputed in every forward from the unconstrained parameter ``raw`` (``out x in``) through
    ``map`` (see the module docstring; PyTorch's ``parametrizations.orthogonal`` for ``"matrix_exp"``,
    ``"cayley"``, ``"householder"``). Parameters: ``raw``, ``bias``; buffer: ``base`` (``n x n``,
    ``n = max(out, in)``; ``None`` when ``trivialization=False``).

    Initialization: with ``trivialization`` (default), ``base`` is Haar-orthogonal (host ``rng``) and
    ``raw = −I`` (``I`` for ``polar``/``newton_schulz``), so ``W`` is the first rows/columns of ``base``.
    Without, ``raw`` is PyTorch's default Linear init (its ``geqrf`` reflectors for ``"householder"``).
    The bias keeps PyTorch's default ``U(−1/√in, 1/√in)``.

    ``map``: a name of :data:`ORTHOGONAL_MAPS` or a pair ``(f, f_vjp)`` (see the module docstring).
    ``steps``, ``coefficients``, ``eps``: the :func:`orthoref.ortho.newton_schulz` settings (that map only).
    """

    def __init__(self, in_features, out_features, bias=True, *, map="matrix_exp", trivialization=True,
                 steps=5, coefficients="jordan", eps=1e-7, rng=None, dtype=np.float32):
        who = "OrthogonalLinear"
        self.in_features = check_int(who, "in_features", in_features, 1)
        self.out_features = check_int(who, "out_features", out_features, 1)
        self._setup(who, (self.out_features, self.in_features), bias, map, trivialization, steps,
                    coefficients, eps, rng, dtype, self.in_features,
                    f"in_features={in_features} and out_features={out_features}")

    @property
    def weight(self):
        """The current orthogonal weight ``(out_features, in_features)``."""
        return self._weight_matrix()

    def right_inverse(self, W):
        """Start from the orthogonal ``W`` (``out x in``): afterwards ``self.weight`` equals ``W``
        (exactly with ``trivialization``; ``ValueError`` unless ``W`` is orthogonal within
        ``max(1e-6, 10·n·eps)``). ``trivialization=False`` with ``matrix_exp``/``cayley``:
        ``NotImplementedError`` (as PyTorch); with ``newton_schulz`` the round trip is approximate."""
        self._right_inverse_matrix("OrthogonalLinear", W)
        return self

    def forward(self, x):
        check_input("OrthogonalLinear", x, ndim=range(1, 9), channels=self.in_features,
                    channel_axis=-1, dtype=self.raw.dtype)
        W, mcache = self._matrix(self.raw.data)
        y, lcache = linear_forward_as(x, W, None if self.bias is None else self.bias.data, "OrthogonalLinear")
        self._cache = (lcache, mcache)
        return y

    def backward(self, grad_out, input_grad=True):
        """Gradient w.r.t. the input (None unless ``input_grad``); accumulates ``raw.grad``/``bias.grad``.
        ``grad_out``: exactly the last output's shape and dtype, finite; nothing accumulates on error."""
        lcache, mcache = self._cached()
        dx, dW, db = linear_backward_as(grad_out, lcache, input_grad, self._who(), "grad_out")
        self.raw.accumulate(self._raw_grad(mcache, dW))
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, {self._map_repr()}")


class OrthogonalConv2d(_OrthogonalWeight):
    """2-D convolution whose kernel ``W`` (``out, in, kh, kw``) is orthogonal by construction, in one of two
    views:

    - ``view="matrix"`` (default, the convention of this package): the matrix ``M = W.reshape(out,
      in·kh·kw)`` (rows are the filters) comes from ``raw`` (``out x in·kh·kw``) through ``map`` exactly as
      in :class:`OrthogonalLinear`, and is reshaped to ``(out, in, kh, kw)``.
    - ``view="slices"``: each kernel slice ``W[o, i]`` (a ``kh x kw`` matrix) is orthogonal, from its own
      slice of ``raw`` (``out, in, kh, kw``) and, with ``trivialization``, its own ``base``
      (``out, in, n, n``, ``n = max(kh, kw)``): what PyTorch's ``parametrizations.orthogonal`` and geotorch
      do to a Conv2d weight (a batch of ``kh x kw`` matrices, the last two axes). An orthogonal ``1 x k``
      slice is a unit vector; a ``1 x 1`` slice is ±1.

    The two views constrain different things: the matrix view makes the filters orthonormal (an
    orthogonal filter matrix is not an orthogonal convolution operator, see
    :func:`orthoref.analysis.conv_singular_values`); the slice view only the spatial pattern of each
    input–output pair. ``stride``/``padding`` as :class:`~orthoref.nn.Conv2d` (no dilation or groups).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, *,
                 map="matrix_exp", trivialization=True, steps=5, coefficients="jordan", eps=1e-7, rng=None,
                 dtype=np.float32, view="matrix"):
        who = "OrthogonalConv2d"
        self.in_channels = check_int(who, "in_channels", in_channels, 1)
        self.out_channels = check_int(who, "out_channels", out_channels, 1)
        self.kernel_size = pair(kernel_size, "kernel_size", who)
        self.stride = pair(stride, "stride", who)
        conv_padding(padding, self.kernel_size, self.stride, (1, 1), who)
        self.padding = padding if isinstance(padding, str) else pair(padding, "padding", who, minimum=0)
        self.view = check_choice(who, "view", view, CONV_VIEWS)
        m = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        shape = self._kshape if self.view == "slices" else (self.out_channels, m)
        self._setup(who, shape, bias, map, trivialization, steps, coefficients, eps, rng, dtype, m,
                    f"in_channels={in_channels}, out_channels={out_channels} and kernel_size={kernel_size!r}")

    @property
    def _kshape(self):
        return (self.out_channels, self.in_channels) + self.kernel_size

    @property
    def weight(self):
        """The current kernel ``(out, in, kh, kw)`` (its matrix ``(out, in·kh·kw)`` is orthogonal)."""
        return self._weight_matrix().reshape(self._kshape)

    def right_inverse(self, W):
        """Start from the kernel ``W`` (``(out, in, kh, kw)``, or its matrix ``(out, in·kh·kw)`` in the matrix
        view) whose matrix (each slice, in the slice view) is orthogonal; see
        :meth:`OrthogonalLinear.right_inverse`."""
        if hasattr(W, "shape") and tuple(W.shape) == self._kshape:
            W = get_array_module(W).asarray(W).reshape(self._shape)
        self._right_inverse_matrix("OrthogonalConv2d", W)
        return self

    def forward(self, x):
        check_input("OrthogonalConv2d", x, ndim=(3, 4), channels=self.in_channels, channel_axis=-3,
                    dtype=self.raw.dtype)
        conv_geometry(x.shape, self._kshape, self.stride, self.padding, (1, 1), "OrthogonalConv2d")
        M, mcache = self._matrix(self.raw.data)
        b = None if self.bias is None else self.bias.data
        y, ccache = conv2d_forward_as(x, M.reshape(self._kshape), b, self.stride, self.padding, 1, 1,
                                    "OrthogonalConv2d")
        self._cache = (ccache, mcache)
        return y

    def backward(self, grad_out, input_grad=True):
        """Gradient w.r.t. the input (None unless ``input_grad``); accumulates ``raw.grad``/``bias.grad``.
        ``grad_out``: exactly the last output's shape and dtype, finite; nothing accumulates on error."""
        ccache, mcache = self._cached()
        dx, dw, db = conv2d_backward_as(grad_out, ccache, input_grad, self._who(), "grad_out")
        self.raw.accumulate(self._raw_grad(mcache, dw.reshape(self._shape)))
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx

    def extra_repr(self):
        return conv_repr(self) + ", " + self._map_repr() + (", view='slices'" if self.view == "slices" else "")

