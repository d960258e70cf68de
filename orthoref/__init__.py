"""orthoref: a pure-NumPy deep-learning engine with hand-written backward passes, the float64 reference
for orthogonality techniques. CuPy is a drop-in GPU backend (``orthoref.backend.use("cupy")``)."""
__version__ = "0.1.0"

from . import backend  # noqa: F401
from .backend import asarray, get_array_module, to_numpy, use  # noqa: F401

# The failure model's exception classes (README, "Failure model"): every one is a TypeError/ValueError
# subclass except RunDirBusy (a FileExistsError) and train.DivergenceError (a RuntimeError).
from ._checks import MAX_ITERATIONS, NonFiniteError  # noqa: F401,E402
from ._io import CheckpointError, RunDirBusy  # noqa: F401,E402
