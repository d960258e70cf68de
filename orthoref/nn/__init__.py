"""Layers that own parameters (PyTorch's argument names and weight layouts), Sequential, and losses.

Losses return ``(loss, grad_of_input)``: ``loss, dlogits = cross_entropy(logits, labels)``.
"""
from .module import BackwardBeforeForwardError, Module, Parameter, Sequential  # noqa: F401
from .linear import Linear  # noqa: F401
from .conv import *  # noqa: F401,F403
from .activation import *  # noqa: F401,F403
from .norm import *  # noqa: F401,F403
from .rnn import RNN  # noqa: F401
from .orthogonal import *  # noqa: F401,F403
from ..ops.loss import *  # noqa: F401,F403

from . import activation as _activation, conv as _conv, norm as _norm, orthogonal as _orthogonal  # noqa: E402
from ..ops import loss as _loss  # noqa: E402

__all__ = (["Module", "Parameter", "Sequential", "BackwardBeforeForwardError", "Linear", "RNN"] + _conv.__all__
           + _activation.__all__ + _norm.__all__ + _orthogonal.__all__ + _loss.__all__)
