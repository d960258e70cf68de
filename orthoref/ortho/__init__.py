"""Orthogonal projections and orthogonalization maps, each with its backward pass ``NAME_vjp(A, grad_out,
**kw)``: QR / Gram–Schmidt / polar (both factors) / Procrustes / Householder (``decomp``), Newton–Schulz and
Björck iterations (``iterative``), Cayley, matrix exponential and Stiefel geometry (``stiefel``); clipping of
singular values, of a weight, of a convolution operator and ``σ ≤ 1`` from ``msign`` (``singular``); how far a
matrix is from orthogonal, one function per norm (``metrics``).

Failure model: every function either returns a finite, correct result or raises ``TypeError``/``ValueError``
(``NonFiniteError`` for an overflow) naming the function and the argument. VJPs take a ``grad_out`` of
exactly the output's shape and dtype, finite; iteration counts are ints up to ``MAX_ITERATIONS``;
scale-invariant maps work at any representable scale (``ortho._common``)."""
from . import decomp as _decomp, iterative as _iterative, metrics as _metrics, singular as _singular, \
    stiefel as _stiefel
from .decomp import *  # noqa: F401,F403
from .iterative import *  # noqa: F401,F403
from .metrics import *  # noqa: F401,F403
from .singular import *  # noqa: F401,F403
from .stiefel import *  # noqa: F401,F403

__all__ = (list(_decomp.__all__) + list(_iterative.__all__) + list(_stiefel.__all__) + list(_singular.__all__)
           + list(_metrics.__all__))
