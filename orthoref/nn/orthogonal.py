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
=================  =====================================================================================

With ``trivialization=True`` (PyTorch's ``use_trivialization=True``) a buffer ``base`` (``n x n``
orthogonal) is kept and the tall-frame weight is ``base @ Q``; ``W`` is that matrix (transposed back when
``out < in``). The unconstrained parameter ``raw`` has the weight's shape ``(out, in)``, exactly as
PyTorch's ``parametrizations.weight.original`` (only its lower triangle in the tall frame is read by the
exp/Cayley/Householder maps; the rest gets zero gradient).

The backward pass is the chain ``W̄ → Q̄ = baseᵀ W̄ → Ā (or V̄, τ̄) → X̄ → raw̄`` through the ``*_vjp`` of
:mod:`orthoref.ortho`.
"""
from __future__ import annotations

import numpy as np

from .._checks import (MAX_ITERATIONS, NonFiniteError, check_bool, check_choice, check_finite, check_float,
                       check_floats, check_int, check_ndim, check_real, float_dtype)
from ..backend import host_rng
from ..oracle.registry import OpSpec, Sample, from_layer, register
from ..ops._contract import check_size, memory_checked
from ..ops.conv import _conv2d_backward, _conv2d_forward, _conv_geometry, _conv_padding, _pair
from ..ops.linear import _linear_backward, _linear_forward
from ..ortho.decomp import householder_product, householder_product_vjp, orthogonality_error, polar, polar_vjp
from ..ortho.iterative import _schedule, newton_schulz, newton_schulz_vjp
from ..ortho.stiefel import cayley, cayley_vjp, expm_skew, expm_skew_vjp
from .linear import kaiming_uniform_default
from .module import Module, Parameter, check_input

__all__ = ["OrthogonalLinear", "OrthogonalConv2d", "ORTHOGONAL_MAPS"]

ORTHOGONAL_MAPS = ("matrix_exp", "cayley", "householder", "polar", "newton_schulz")


def _haar(gen, n, dtype):
    """A Haar-distributed ``n x n`` orthogonal matrix (QR of a Gaussian with ``diag R > 0``), host RNG."""
    Q, R = np.linalg.qr(gen.standard_normal((n, n)))
    d = np.sign(np.diag(R))
    d[d == 0] = 1.0
    return (Q * d).astype(dtype)


def _neg_eye(shape, dtype):
    """PyTorch's ``right_inverse`` value of the parameter: ``−I`` (so ``householder`` gives ``I[:, :k]``)."""
    E = np.zeros(shape, dtype=dtype)
    np.fill_diagonal(E, -1.0)
    return E


def _householder_reflectors(Wt):
    """PyTorch's ``right_inverse`` without trivialization for ``householder``: ``geqrf`` reflectors of the
    tall ``Wt`` with ``diag = sign(diag R)`` (flipped where LAPACK's ``τ = 0``)."""
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

    def _setup(self, who, out, m, bias, map, trivialization, steps, coefficients, eps, rng, dtype, fan_in,
               sizes="the sizes"):
        self.map = check_choice(who, "map", map, ORTHOGONAL_MAPS)
        self.trivialization = check_bool(who, "trivialization", trivialization)
        bias = check_bool(who, "bias", bias)
        self._buffer_names = ("base",) if self.trivialization else ()     # no None buffer in state dicts
        if steps is not None:
            steps = check_int(who, "steps", steps, 1, MAX_ITERATIONS)
        eps = check_real(who, "eps", eps, 0.0)
        _schedule(who, coefficients, steps)      # validates coefficients (whatever the map: no silent typo)
        self.steps, self.coefficients, self.eps = steps, coefficients, eps
        dt = float_dtype(who, dtype)
        gen = host_rng(rng, who=who)
        self._shape = (out, m)
        n = max(out, m)
        check_size(who, sizes, (n, n) if self.trivialization else (out, m))
        with memory_checked(who, sizes):
            if self.trivialization:
                self.raw = Parameter(self._raw_identity(dt))
                self.base = _haar(gen, n, dt)
            else:
                w = np.asarray(kaiming_uniform_default((out, m), fan_in, gen, dt))
                if map == "householder":
                    w = self._from_tall(_householder_reflectors(self._to_tall(w)))
                self.raw = Parameter(w.astype(dt))
                self.base = None
            self.bias = Parameter(kaiming_uniform_default((out,), fan_in, gen, dt)) if bias else None
        self._cache = None

    # -- frames ----------------------------------------------------------------------------------------
    @property
    def _wide(self):
        return self._shape[0] < self._shape[1]

    def _to_tall(self, M):
        return M.T if self._wide else M

    def _from_tall(self, M):
        return np.ascontiguousarray(M.T) if self._wide else M

    def _raw_identity(self, dt):
        if self.map in ("polar", "newton_schulz"):
            return np.eye(*self._shape, dtype=dt)              # polar(I[:, :k]) = I[:, :k]
        return _neg_eye(self._shape, dt)

    # -- the map ---------------------------------------------------------------------------------------
    def _ns_kw(self):
        return dict(steps=self.steps, coefficients=self.coefficients, eps=self.eps)

    def _check_state(self, raw):
        """``raw`` and ``base`` as the constructor made them: float arrays of shapes ``(out, m)`` and
        ``(n, n)``, finite (assigning ``.data`` or ``base`` bypasses the constructor)."""
        who = type(self).__name__
        check_floats(who, ("raw", raw), ("base", self.base), finite=False)
        if tuple(raw.shape) != self._shape:
            raise ValueError(f"{who}: raw must have shape {self._shape}, got {tuple(raw.shape)}")
        n = max(self._shape)
        if self.base is not None and tuple(self.base.shape) != (n, n):
            raise ValueError(f"{who}: base must have shape ({n}, {n}), got {tuple(self.base.shape)}")
        check_finite(who, "raw", raw)
        if self.base is not None:
            check_finite(who, "base", self.base)

    def _matrix(self, raw):
        """``(W, cache)``: the weight matrix ``(out, m)`` from ``raw`` and what the backward needs."""
        self._check_state(raw)
        X = self._to_tall(raw)
        n, k = X.shape
        if self.map in ("matrix_exp", "cayley"):
            Y = np.zeros((n, n), dtype=X.dtype)
            Y[:, :k] = np.tril(X)
            A = Y - Y.T
            Q = (expm_skew(A) if self.map == "matrix_exp" else cayley(A))[:, :k]
            cache = A
        elif self.map == "householder":
            V = np.tril(X, -1)
            tau = (2.0 / (1.0 + (V * V).sum(axis=0))).astype(X.dtype)
            s = np.trunc(np.diagonal(X)).astype(X.dtype)
            Q = householder_product(V, tau) * s
            cache = (V, tau, s)
        elif self.map == "polar":
            Q = polar(X)
            cache = X
        else:
            Q = newton_schulz(X, **self._ns_kw())
            cache = X
        if self.base is not None:
            Q = self.base @ Q
        return self._from_tall(np.ascontiguousarray(Q)), cache

    def _matrix_vjp(self, cache, dW):
        """Gradient w.r.t. ``raw`` of ``<dW, W(raw)>``."""
        G = self._to_tall(dW)
        if self.base is not None:
            G = self.base.T @ G
        G = np.ascontiguousarray(G)
        n, k = G.shape
        if self.map in ("matrix_exp", "cayley"):
            A = cache
            GQ = np.zeros((n, n), dtype=G.dtype)
            GQ[:, :k] = G
            GA = expm_skew_vjp(A, GQ) if self.map == "matrix_exp" else cayley_vjp(A, GQ)
            GY = GA - GA.T
            GX = np.tril(GY[:, :k])
        elif self.map == "householder":
            V, tau, s = cache
            gV, gtau = householder_product_vjp(V, tau, G * s)
            gV = gV - V * (gtau * tau * tau)                  # τ_j = 2/(1+‖v_j‖²): ∂τ_j/∂V_ij = −τ_j² V_ij
            GX = np.tril(gV, -1)
        elif self.map == "polar":
            GX = polar_vjp(cache, G)
        else:
            GX = newton_schulz_vjp(cache, G, **self._ns_kw())
        return self._from_tall(GX).astype(self.raw.dtype, copy=False)

    def _raw_grad(self, cache, dW):
        """:meth:`_matrix_vjp`, finite (``NonFiniteError`` naming the layer otherwise: the map's backward
        overflowed), before anything is accumulated."""
        g = self._matrix_vjp(cache, dW)
        if not np.all(np.isfinite(g)):
            raise NonFiniteError(f"{self._who()}: the gradient of raw is not finite (the {self.map} map's "
                                 f"backward overflows {g.dtype}); use float64 or rescale")
        return g

    # -- public ----------------------------------------------------------------------------------------
    def _weight_matrix(self):
        return self._matrix(self.raw.data)[0]

    def _right_inverse_matrix(self, who, W):
        """Set ``raw`` (and ``base``) so that the weight matrix equals ``W`` (``out x m``, orthonormal rows
        or columns within ``max(1e-6, 10·n·eps)``)."""
        check_float(f"{who}.right_inverse", "W", W)
        W = np.asarray(W)
        if tuple(W.shape) != self._shape:
            raise ValueError(f"{who}.right_inverse: W must have shape {self._shape}, got {tuple(W.shape)}")
        if not np.all(np.isfinite(W)):
            raise NonFiniteError(f"{who}.right_inverse: W must be finite, got NaN or Inf")
        dt = self.raw.dtype
        Wt = self._to_tall(W).astype(np.float64)
        n, k = Wt.shape
        tol = max(1e-6, 10 * n * float(np.finfo(dt).eps))
        err = orthogonality_error(Wt)
        if not err <= tol:
            raise ValueError(f"{who}.right_inverse: W must be orthogonal (orthonormal "
                             f"{'rows' if self._wide else 'columns'}), got ‖WᵀW − I‖₂ = {err:.3e} > {tol:.1e}")
        if self.trivialization:
            if n > k:
                Qc, _ = np.linalg.qr(Wt, mode="complete")
                base = np.concatenate([Wt, Qc[:, k:]], axis=1)
            else:
                base = Wt.copy()
            self.base = base.astype(dt)
            self.raw.data = self._raw_identity(dt)
        elif self.map in ("matrix_exp", "cayley"):
            raise NotImplementedError(f"{who}.right_inverse: the {self.map} map has no right inverse with "
                                      f"trivialization=False (as in PyTorch); use trivialization=True")
        elif self.map == "householder":
            self.raw.data = self._from_tall(_householder_reflectors(Wt)).astype(dt)
        else:                                                   # polar(W) = W; newton_schulz(W) ≈ W
            self.raw.data = np.array(W, dtype=dt)
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

    ``steps``, ``coefficients``, ``eps``: the :func:`orthoref.ortho.newton_schulz` settings (that map only).
    """

    def __init__(self, in_features, out_features, bias=True, *, map="matrix_exp", trivialization=True,
                 steps=5, coefficients="jordan", eps=1e-7, rng=None, dtype=np.float32):
        who = "OrthogonalLinear"
        self.in_features = check_int(who, "in_features", in_features, 1)
        self.out_features = check_int(who, "out_features", out_features, 1)
        self._setup(who, self.out_features, self.in_features, bias, map, trivialization, steps,
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
        y, lcache = _linear_forward(x, W, None if self.bias is None else self.bias.data, "OrthogonalLinear")
        self._cache = (lcache, mcache)
        return y

    def backward(self, grad_out, input_grad=True):
        """Gradient w.r.t. the input (None unless ``input_grad``); accumulates ``raw.grad``/``bias.grad``.
        ``grad_out``: exactly the last output's shape and dtype, finite; nothing accumulates on error."""
        lcache, mcache = self._cached()
        dx, dW, db = _linear_backward(grad_out, lcache, input_grad, self._who(), "grad_out")
        self.raw.accumulate(self._raw_grad(mcache, dW))
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, {self._map_repr()}")


class OrthogonalConv2d(_OrthogonalWeight):
    """2-D convolution whose kernel, seen as the matrix ``M = W.reshape(out, in·kh·kw)`` (rows are the
    filters), is orthogonal by construction: ``M`` comes from ``raw`` (``out x in·kh·kw``) through ``map``
    exactly as in :class:`OrthogonalLinear`, and is reshaped to ``(out, in, kh, kw)``.

    Note PyTorch's ``parametrizations.orthogonal`` on a Conv2d weight treats it as a batch of ``kh x kw``
    matrices instead; this layer orthogonalizes the flattened filters (the convention of this package).
    ``stride``/``padding`` as :class:`~orthoref.nn.Conv2d` (no dilation or groups).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, *,
                 map="matrix_exp", trivialization=True, steps=5, coefficients="jordan", eps=1e-7, rng=None,
                 dtype=np.float32):
        who = "OrthogonalConv2d"
        self.in_channels = check_int(who, "in_channels", in_channels, 1)
        self.out_channels = check_int(who, "out_channels", out_channels, 1)
        self.kernel_size = _pair(kernel_size, "kernel_size", who)
        self.stride = _pair(stride, "stride", who)
        _conv_padding(padding, self.kernel_size, self.stride, (1, 1), who)
        self.padding = padding if isinstance(padding, str) else _pair(padding, "padding", who, minimum=0)
        m = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        self._setup(who, self.out_channels, m, bias, map, trivialization, steps, coefficients, eps, rng,
                    dtype, m, f"in_channels={in_channels}, out_channels={out_channels} and "
                              f"kernel_size={kernel_size!r}")

    @property
    def _kshape(self):
        return (self.out_channels, self.in_channels) + self.kernel_size

    @property
    def weight(self):
        """The current kernel ``(out, in, kh, kw)`` (its matrix ``(out, in·kh·kw)`` is orthogonal)."""
        return self._weight_matrix().reshape(self._kshape)

    def right_inverse(self, W):
        """Start from the kernel ``W`` (``(out, in, kh, kw)`` or its matrix ``(out, in·kh·kw)``) whose
        matrix is orthogonal; see :meth:`OrthogonalLinear.right_inverse`."""
        if hasattr(W, "shape") and tuple(W.shape) == self._kshape:
            W = np.asarray(W).reshape(self._shape)
        self._right_inverse_matrix("OrthogonalConv2d", W)
        return self

    def forward(self, x):
        check_input("OrthogonalConv2d", x, ndim=(3, 4), channels=self.in_channels, channel_axis=-3,
                    dtype=self.raw.dtype)
        _conv_geometry(x.shape, self._kshape, self.stride, self.padding, (1, 1), "OrthogonalConv2d")
        M, mcache = self._matrix(self.raw.data)
        b = None if self.bias is None else self.bias.data
        y, ccache = _conv2d_forward(x, M.reshape(self._kshape), b, self.stride, self.padding, 1, 1,
                                    "OrthogonalConv2d")
        self._cache = (ccache, mcache)
        return y

    def backward(self, grad_out, input_grad=True):
        """Gradient w.r.t. the input (None unless ``input_grad``); accumulates ``raw.grad``/``bias.grad``.
        ``grad_out``: exactly the last output's shape and dtype, finite; nothing accumulates on error."""
        ccache, mcache = self._cached()
        dx, dw, db = _conv2d_backward(grad_out, ccache, input_grad, self._who(), "grad_out")
        self.raw.accumulate(self._raw_grad(mcache, dw.reshape(self._shape)))
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
             f"padding={self.padding!r}")
        if self.bias is None:
            s += ", bias=False"
        return s + ", " + self._map_repr()


# ---------------------------------------------------------------------------------------------------------
# Registry: finite differences in float64 and PyTorch twins (the formula of parametrizations.orthogonal).

def _build(cls, raw, bias, base, map, steps, coefficients, eps, conv):
    check_ndim(f"nn.{cls.__name__}", "raw", raw, (2,))
    if cls is OrthogonalLinear:
        layer = cls(raw.shape[1], raw.shape[0], bias=bias is not None, map=map,
                    trivialization=base is not None, steps=steps, coefficients=coefficients, eps=eps,
                    rng=0, dtype=raw.dtype)
    else:
        layer = cls(conv["in_channels"], raw.shape[0], conv["kernel_size"], conv.get("stride", 1),
                    conv.get("padding", 0), bias=bias is not None, map=map, trivialization=base is not None,
                    steps=steps, coefficients=coefficients, eps=eps, rng=0, dtype=raw.dtype)
    layer.raw.data = raw
    if base is not None:
        layer.base = base
    if bias is not None:
        layer.bias.data = bias
    return layer, [p for p in (layer.raw, layer.bias) if p is not None]


def _build_linear(raw, bias=None, *, map="matrix_exp", base=None, steps=5, coefficients="jordan", eps=1e-7):
    return _build(OrthogonalLinear, raw, bias, base, map, steps, coefficients, eps, None)


def _build_conv(raw, bias=None, *, map="matrix_exp", base=None, steps=5, coefficients="jordan", eps=1e-7,
                in_channels=1, kernel_size=1, stride=1, padding=0):
    conv = dict(in_channels=in_channels, kernel_size=kernel_size, stride=stride, padding=padding)
    return _build(OrthogonalConv2d, raw, bias, base, map, steps, coefficients, eps, conv)


def _sample_raw(rng, out, m, map, dtype):
    """A raw parameter kept off the kinks: Householder diagonal at ±1.5 (``trunc`` = ±1, away from the
    integer jumps of PyTorch's ``.int()``); polar/NS inputs well conditioned."""
    X = rng.standard_normal((max(out, m), min(out, m)))
    if map in ("matrix_exp", "cayley", "householder"):
        X *= 0.5
    if map == "householder":
        k = X.shape[1]
        X[np.arange(k), np.arange(k)] = 1.5 * rng.choice([-1.0, 1.0], size=k)
    if map in ("polar", "newton_schulz"):
        U, _, Vt = np.linalg.svd(X, full_matrices=False)
        X = (U * rng.uniform(0.6, 1.0, size=X.shape[1])) @ Vt
        if map == "newton_schulz":
            X *= 3.0                        # NS normalizes by ‖X‖_F: a larger scale keeps the FD step small
    return (X.T if out < m else X).astype(dtype)


# (map, out, in, trivialization): wide and tall, with and without the base.
_LINEAR_CASES = (("matrix_exp", 3, 4, True), ("cayley", 4, 3, True), ("householder", 3, 4, True),
                 ("polar", 4, 3, False), ("newton_schulz", 3, 4, True))


def _linear_samples(rng, dtype):
    out = []
    for k, (map, o, i, triv) in enumerate(_LINEAR_CASES):
        kw = {"map": map, "base": _haar(rng, max(o, i), np.float64).astype(dtype) if triv else None}
        if map == "newton_schulz":
            kw["steps"] = 3
        inputs = (rng.standard_normal((2, i)).astype(dtype), _sample_raw(rng, o, i, map, dtype))
        if k != 1:                                              # one case without bias
            inputs += (rng.standard_normal(o).astype(dtype),)
        out.append(Sample(inputs, kw, label=f"{map} {o}x{i}{' triv' if triv else ''}"))
    return out


_CONV_CASES = (("matrix_exp", 2, 1, 2, 1, 0, True), ("householder", 3, 2, 2, 1, 1, False),
               ("polar", 2, 2, 2, 2, 1, True))


def _conv_samples(rng, dtype):
    out = []
    for map, o, c, kk, stride, pad, triv in _CONV_CASES:
        m = c * kk * kk
        kw = {"map": map, "base": _haar(rng, max(o, m), np.float64).astype(dtype) if triv else None,
              "in_channels": c, "kernel_size": kk, "stride": stride, "padding": pad}
        inputs = (rng.standard_normal((2, c, 4, 4)).astype(dtype), _sample_raw(rng, o, m, map, dtype),
                  rng.standard_normal(o).astype(dtype))
        out.append(Sample(inputs, kw, label=f"{map} {o}x{m}"))
    return out


def _torch_matrix(raw, map="matrix_exp", base=None, steps=5, coefficients="jordan", eps=1e-7):
    """PyTorch's ``_Orthogonal.forward`` (plus the polar and Newton–Schulz maps) on ``raw``."""
    import torch
    wide = raw.shape[-2] < raw.shape[-1]
    X = raw.mT if wide else raw
    n, k = X.shape
    if map in ("matrix_exp", "cayley"):
        Y = X.tril()
        if n != k:
            Y = torch.cat([Y, Y.new_zeros(n, n - k)], dim=-1)
        A = Y - Y.mT
        if map == "matrix_exp":
            Q = torch.linalg.matrix_exp(A)
        else:
            Id = torch.eye(n, dtype=A.dtype)
            Q = torch.linalg.solve(Id - 0.5 * A, Id + 0.5 * A)
        Q = Q[..., :k]
    elif map == "householder":
        V = X.tril(diagonal=-1)
        tau = 2.0 / (1.0 + (V * V).sum(dim=-2))
        Q = torch.linalg.householder_product(V, tau) * X.diagonal(dim1=-2, dim2=-1).int().unsqueeze(-2)
    elif map == "polar":
        U, _, Vh = torch.linalg.svd(X, full_matrices=False)
        Q = U @ Vh
    else:
        from ..ortho.iterative import _torch_ns_loop
        rows, kappa = _schedule("newton_schulz", coefficients, steps)
        Q = _torch_ns_loop(X, rows, kappa, eps)
    if base is not None:
        Q = torch.from_numpy(np.asarray(base)) @ Q
    return Q.mT if wide else Q


def _torch_orth_linear(x, raw, bias=None, *, map="matrix_exp", base=None, steps=5, coefficients="jordan",
                       eps=1e-7):
    import torch.nn.functional as F
    return (F.linear(x, _torch_matrix(raw, map, base, steps, coefficients, eps), bias),)


def _torch_orth_conv(x, raw, bias=None, *, map="matrix_exp", base=None, steps=5, coefficients="jordan",
                     eps=1e-7, in_channels=1, kernel_size=1, stride=1, padding=0):
    import torch.nn.functional as F
    W = _torch_matrix(raw, map, base, steps, coefficients, eps)
    kh, kw = _pair(kernel_size, "kernel_size", "OrthogonalConv2d")
    W = W.reshape(raw.shape[0], in_channels, kh, kw)
    return (F.conv2d(x, W, bias, stride=stride, padding=padding),)


register(OpSpec("nn.OrthogonalLinear", from_layer(_build_linear), _linear_samples, torch=_torch_orth_linear,
                kind="layer", rtol=1e-8,
                doc="Linear with W = base @ map(raw) orthogonal (torch parametrizations.orthogonal)"))
register(OpSpec("nn.OrthogonalConv2d", from_layer(_build_conv), _conv_samples, torch=_torch_orth_conv,
                kind="layer", rtol=1e-8, doc="Conv2d whose flattened kernel is orthogonal"))
