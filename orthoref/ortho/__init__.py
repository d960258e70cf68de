"""Orthogonal projections and orthogonalization maps, each with its backward pass ``NAME_vjp(A, grad_out,
**kw)``: QR / Gram–Schmidt / polar / Householder (``decomp``), Newton–Schulz and Björck iterations
(``iterative``), Cayley, matrix exponential and Stiefel geometry (``stiefel``)."""
from .decomp import *  # noqa: F401,F403
from .iterative import *  # noqa: F401,F403
from .stiefel import *  # noqa: F401,F403
