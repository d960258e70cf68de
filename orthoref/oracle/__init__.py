"""The oracle: gradient checker, op registry, comparison with other frameworks."""
from .gradcheck import GradCheckReport, GradientCheckError, check_backward, check_layer, numerical_vjp  # noqa: F401
from .registry import OpSpec, Sample, all_specs, get, register  # noqa: F401
