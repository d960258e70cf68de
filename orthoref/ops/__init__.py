"""Stateless differentiable ops, one file per family: ``y, cache = NAME_forward(...)``,
``grads = NAME_backward(dy, cache)``. Their samples and registry entries live in
:mod:`orthoref.oracle.samples`, their PyTorch twins in :mod:`orthoref.oracle.torch_twins`; the conv/pool window
geometry and im2col in :mod:`orthoref.ops._window`."""
from . import activation, conv, linear, loss, norm, pool, rnn  # noqa: F401
from .activation import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .linear import *  # noqa: F401,F403
from .loss import *  # noqa: F401,F403
from .norm import *  # noqa: F401,F403
from .pool import *  # noqa: F401,F403
from .rnn import *  # noqa: F401,F403
