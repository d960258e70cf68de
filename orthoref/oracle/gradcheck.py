"""Finite-difference gradient checking in float64 (the oracle's backbone).

For ``fn(*inputs) -> (outputs, vjp)`` the checker draws random output cotangents ``ȳ`` (ones would hide
transposes) and compares, for several random directions ``d`` spanning *all* differentiable inputs at once
(Chainer's trick; every component kept away from zero so no element escapes), the directional derivative

.. math::  \\frac{d}{dt} \\langle \\bar y, f(x + t d) \\rangle \\Big|_{t=0} = \\sum_i \\langle g_i, d_i \\rangle,
           \\qquad g = \\mathrm{vjp}(\\bar y),

estimated by the fourth-order central stencil
``(-φ(2h) + 8φ(h) - 8φ(-h) + φ(-2h)) / 12h`` (truncation error O(h⁴), ~1e-12 relative at ``h = 1e-3``).
The error is measured relative to ``Σ|g ⊙ d|`` plus the rounding noise of the stencil, so cancellation in
the inner product cannot hide a wrong gradient nor fake a failure. ``elementwise=True`` checks every
partial derivative and names the worst element.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..backend import get_array_module, host_rng, to_numpy
from .registry import from_layer

__all__ = ["GradientCheckError", "GradCheckReport", "check_backward", "check_complex_step", "check_layer",
           "numerical_vjp"]

_EPS64 = float(np.finfo(np.float64).eps)


class GradientCheckError(AssertionError):
    """Raised when an analytic gradient disagrees with finite differences."""


@dataclass
class GradCheckReport:
    max_rel_error: float
    rtol: float
    eps: float
    shapes: list
    directions: list = field(default_factory=list)   # (numeric, analytic, rel_error) per direction
    worst_element: str = ""

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_rel_error)) and self.max_rel_error <= self.rtol

    def record(self, err) -> None:
        """Keep the worst error; NaN counts as infinitely wrong (``max`` would drop it)."""
        err = float(err)
        self.max_rel_error = max(self.max_rel_error, err if np.isfinite(err) else np.inf)


def _is_float(a):
    return hasattr(a, "dtype") and a.dtype.kind == "f"


def _phi(fn, inputs, cotangents):
    outputs, _ = fn(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    total, magnitude = 0.0, 0.0
    for y, ct in zip(outputs, cotangents):
        if ct is None:
            continue
        prod = to_numpy(y).astype(np.float64) * ct
        total += float(prod.sum())
        magnitude += float(np.abs(prod).sum())
    return total, magnitude


def _stencil(fn, inputs, diff_idx, directions, cotangents, eps):
    """Fourth-order central difference of φ(t) = <ȳ, f(x + t d)>; returns (derivative, rounding noise)."""
    values, magnitude = [], 0.0
    for t in (2.0, 1.0, -1.0, -2.0):
        shifted = list(inputs)
        for i, d in zip(diff_idx, directions):
            shifted[i] = inputs[i] + (t * eps) * d
        v, m = _phi(fn, shifted, cotangents)
        values.append(v)
        magnitude = max(magnitude, m)
    numeric = (-values[0] + 8.0 * values[1] - 8.0 * values[2] + values[3]) / (12.0 * eps)
    noise = 64.0 * _EPS64 * magnitude / eps
    return numeric, noise


def numerical_vjp(fn, inputs, cotangents, eps=1e-3):
    """Element-wise fourth-order finite-difference gradient of ``<ȳ, f(x)>`` w.r.t. each float input."""
    grads = []
    for i, x in enumerate(inputs):
        if not _is_float(x):
            grads.append(None)
            continue
        xp = get_array_module(x)
        g = np.zeros(x.shape)
        for j in np.ndindex(*x.shape):
            e = xp.zeros_like(x)
            e[j] = 1.0
            g[j], _ = _stencil(fn, inputs, [i], [e], cotangents, eps)
        grads.append(g)
    return grads


def _names(names, n):
    names = list(names or [])
    return names + [f"input{k}" for k in range(len(names), n)]


def _float64_inputs(who, inputs, names):
    """Indices of the floating inputs (the differentiable ones); ``TypeError`` unless all are float64."""
    diff_idx = [i for i, x in enumerate(inputs) if _is_float(x)]
    for i in diff_idx:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"{who}: {names[i]} must be float64 (the oracle's precision), got {inputs[i].dtype}")
    return diff_idx


def _host_grads(grads, inputs, diff_idx, names):
    """The vjp's gradients of the float inputs as float64 host arrays, after checking their count, shape and
    dtype (``GradientCheckError`` otherwise)."""
    grads = list(grads)
    if len(grads) != len(inputs):
        raise GradientCheckError(f"vjp returned {len(grads)} gradients for {len(inputs)} inputs")
    for i in diff_idx:
        if grads[i] is None or tuple(grads[i].shape) != tuple(inputs[i].shape):
            got = None if grads[i] is None else tuple(grads[i].shape)
            raise GradientCheckError(f"gradient of {names[i]} has shape {got}, expected {tuple(inputs[i].shape)}")
        if grads[i].dtype != inputs[i].dtype:
            raise GradientCheckError(f"gradient of {names[i]} has dtype {grads[i].dtype}, expected {inputs[i].dtype}")
    return {i: to_numpy(grads[i]).astype(np.float64) for i in diff_idx}


def _direction(gen, shape):
    """A random direction whose every component is at least 1/2 in magnitude (none escapes the check)."""
    return gen.uniform(0.5, 1.0, size=shape) * gen.choice([-1.0, 1.0], size=shape)


def check_backward(fn, inputs, cotangents=None, *, eps=1e-3, rtol=1e-8, n_directions=3, rng=0,
                   elementwise=False, names=None, raise_on_fail=True) -> GradCheckReport:
    """Check ``vjp`` of ``fn(*inputs) -> (outputs, vjp)`` against finite differences in float64.

    Parameters
    ----------
    fn : callable
        ``fn(*inputs)`` returns ``(outputs, vjp)``: a tuple of arrays, and a function mapping a tuple of
        cotangents (one per output) to one gradient per input (``None`` for integer inputs).
    inputs : sequence of arrays
        Floating inputs must be float64; integer inputs (labels, indices) are held fixed.
    cotangents : sequence of arrays, optional
        Output cotangents; by default standard normal draws (never ones: they hide transposes).
    eps : float
        Finite-difference step along a direction whose largest component is 1. Keep inputs farther than
        ``2 * eps`` from kinks.
    rtol : float
        Largest accepted ``|numeric - analytic| / (Σ|g ⊙ d| + noise)``.
    n_directions : int
        Number of random directions.
    elementwise : bool
        Also compare every partial derivative (small shapes only) and name the worst element.
    names : sequence of str, optional
        Input names for messages.

    Returns
    -------
    GradCheckReport
        Raises :class:`GradientCheckError` on failure unless ``raise_on_fail=False``.
    """
    inputs = list(inputs)
    names = _names(names, len(inputs))
    gen = host_rng(rng)
    diff_idx = _float64_inputs("check_backward", inputs, names)
    outputs, vjp = fn(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    if cotangents is None:
        cotangents = [gen.standard_normal(np.shape(y)) if _is_float(y) else None for y in outputs]
    else:
        cotangents = [None if c is None else to_numpy(c).astype(np.float64) for c in cotangents]
    xp = get_array_module(*[inputs[i] for i in diff_idx]) if diff_idx else np
    grads = vjp(tuple(None if c is None else xp.asarray(c, dtype=outputs[k].dtype)
                      for k, c in enumerate(cotangents)))
    host_grads = _host_grads(grads, inputs, diff_idx, names)
    shapes = [tuple(x.shape) for x in inputs]
    report = GradCheckReport(0.0, rtol, eps, shapes)
    if not diff_idx:
        return report

    for _ in range(n_directions):
        dirs = []
        for i in diff_idx:
            dirs.append(_direction(gen, inputs[i].shape))
        dev_dirs = [xp.asarray(d) for d in dirs]
        numeric, noise = _stencil(fn, inputs, diff_idx, dev_dirs, cotangents, eps)
        analytic = sum(float((host_grads[i] * d).sum()) for i, d in zip(diff_idx, dirs))
        scale = sum(float(np.abs(host_grads[i] * d).sum()) for i, d in zip(diff_idx, dirs))
        err = abs(numeric - analytic) / (scale + noise + 1e-300)
        report.directions.append((numeric, analytic, err))
        report.record(err)

    if elementwise:
        numeric_grads = numerical_vjp(fn, inputs, cotangents, eps)
        worst = (0.0, "")
        for i in diff_idx:
            g, n = host_grads[i], numeric_grads[i]
            denom = max(np.abs(g).max(initial=0.0), np.abs(n).max(initial=0.0)) + 1e-300
            rel = np.abs(g - n) / denom
            rel = np.where(np.isnan(rel), np.inf, rel)
            j = np.unravel_index(int(np.argmax(rel)), rel.shape) if rel.size else ()
            if rel.size and rel[j] > worst[0]:
                worst = (float(rel[j]), f"{names[i]}[{', '.join(map(str, j))}]: numeric {n[j]:.12g}, "
                                        f"analytic {g[j]:.12g}")
        report.worst_element = worst[1]
        report.record(worst[0])

    if raise_on_fail and not report.passed:
        lines = [f"gradient check failed: max relative error {report.max_rel_error:.3e} > rtol {rtol:.1e} "
                 f"(eps={eps:g}, fourth-order central differences, {n_directions} random directions)",
                 "input shapes: " + ", ".join(f"{names[k]}{shapes[k]}" for k in range(len(inputs)))]
        for k, (num, ana, err) in enumerate(report.directions):
            lines.append(f"  direction {k}: numeric {num:.15g}  analytic {ana:.15g}  rel.error {err:.3e}")
        if report.worst_element:
            lines.append("  worst element: " + report.worst_element)
        else:
            lines.append("  (run with elementwise=True to locate the wrong element)")
        raise GradientCheckError("\n".join(lines))
    return report


def check_layer(layer, x, **kwargs) -> GradCheckReport:
    """Gradient-check a Module: its input and all its parameters at once (float64, train or eval mode as
    set). The layer must be deterministic between calls (Dropout: fix its ``rng`` seed per call)."""
    params = layer.parameters()
    originals = [p.data for p in params]

    def build(*pdata):
        for p, d in zip(params, pdata):
            p.data = d
        return layer, params
    fn = from_layer(build)

    names = ["x"] + [n for n, _ in layer.named_parameters()]
    try:
        return check_backward(fn, [x] + originals, names=names, **kwargs)
    finally:
        for p, d in zip(params, originals):
            p.data = d


def check_complex_step(fn, inputs, cotangents=None, *, h=1e-30, rtol=1e-12, n_directions=3, rng=0,
                       names=None, raise_on_fail=True) -> GradCheckReport:
    """Complex-step check of ``vjp`` for a real-analytic ``fn(*inputs) -> (outputs, vjp)`` (Squire & Trapp
    1998; Martins et al. 2003).

    For a direction ``d`` over all float inputs and real cotangents ``ȳ``,

    .. math::  \\sum_i \\langle g_i, d_i \\rangle = \\frac{\\operatorname{Im} \\langle \\bar y, f(x + i h d) \\rangle}{h}
               + O(h^2),

    with no subtraction, so ``h = 1e-30`` leaves only rounding: agreement to ~1e-14 relative, against ~1e-11
    for the best finite differences. ``fn`` is evaluated on complex inputs inside
    :func:`orthoref._checks.complex_step_mode` (the argument checks then accept complex arrays). An op must be
    piecewise analytic with its branches chosen by real parts (NumPy orders complex numbers by their real part
    first, so ReLU, max-pooling and a max-shifted softmax qualify on samples kept off their kinks); one that
    uses ``abs``, a norm, or a real-only library routine (QR, SVD, eigh) must not be marked ``complex_step``
    in the registry. The error is relative to ``Σ|g ⊙ d|``; a NaN anywhere fails.
    """
    from .._checks import complex_step_mode

    inputs = list(inputs)
    names = _names(names, len(inputs))
    gen = host_rng(rng)
    diff_idx = _float64_inputs("check_complex_step", inputs, names)
    outputs, vjp = fn(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    if cotangents is None:
        cotangents = [gen.standard_normal(np.shape(y)) for y in outputs]
    xp = get_array_module(*[inputs[i] for i in diff_idx]) if diff_idx else np
    grads = vjp(tuple(xp.asarray(c, dtype=outputs[k].dtype) for k, c in enumerate(cotangents)))
    host_grads = _host_grads(grads, inputs, diff_idx, names)
    report = GradCheckReport(0.0, rtol, h, [tuple(x.shape) for x in inputs])
    for _ in range(n_directions):
        shifted = list(inputs)
        dirs = {}
        for i in diff_idx:
            d = dirs[i] = _direction(gen, inputs[i].shape)
            shifted[i] = inputs[i] + 1j * h * xp.asarray(d)
        with complex_step_mode():
            c_out, _ = fn(*shifted)
        c_out = c_out if isinstance(c_out, tuple) else (c_out,)
        numeric = sum(float((np.imag(to_numpy(y)) * ct).sum()) for y, ct in zip(c_out, cotangents)) / h
        analytic = sum(float((host_grads[i] * d).sum()) for i, d in dirs.items())
        scale = sum(float(np.abs(host_grads[i] * d).sum()) for i, d in dirs.items())
        err = abs(numeric - analytic) / (scale + 1e-300)
        report.directions.append((numeric, analytic, err))
        report.record(err)
    if raise_on_fail and not report.passed:
        lines = [f"complex-step check failed: max relative error {report.max_rel_error:.3e} > rtol {rtol:.1e} "
                 f"(h={h:g}, {n_directions} random directions)",
                 "input shapes: " + ", ".join(f"{names[k]}{report.shapes[k]}" for k in range(len(inputs)))]
        for k, (num, ana, err) in enumerate(report.directions):
            lines.append(f"  direction {k}: complex step {num:.16g}  analytic {ana:.16g}  rel.error {err:.3e}")
        raise GradientCheckError("\n".join(lines))
    return report
