"""The oracle: a float64 reference value and gradient for every registered op, comparison reports for
other frameworks, golden fixtures (and ``record``: anyone's results in the same schema), the gradient checkers
and the op registry."""
from .gradcheck import GradCheckReport, GradientCheckError, check_backward, check_layer, numerical_vjp  # noqa: F401
from .reference import CompareReport, compare, names, reference, tolerance  # noqa: F401
from .recording import record  # noqa: F401
from .registry import OpSpec, Sample, all_specs, get, register  # noqa: F401
from .trajectories import optimizer_trajectory, orthogonal_factor  # noqa: F401
