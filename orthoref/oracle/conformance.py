"""Comparison of a registered op with PyTorch autograd on the same inputs (float64)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import host_rng, to_numpy
from .gradcheck import check_backward, check_complex_step

#: Complex-step tolerance: no subtraction, so only rounding is left (errors are ~1e-16 in practice).
COMPLEX_STEP_RTOL = 1e-12

__all__ = ["COMPLEX_STEP_RTOL", "torch_available", "rel_error", "TorchComparison", "compare_with_torch", "run_checks"]


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except Exception:
        return False
    return True


def rel_error(ours, theirs) -> float:
    """Norm-wise relative error ``max|a - b| / max|b|`` (absolute when ``b`` is all zero); ``inf`` for a
    shape mismatch or a NaN/Inf on either side."""
    a = np.asarray(to_numpy(ours), dtype=np.float64)
    b = np.asarray(theirs, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    scale = float(np.abs(b).max())
    err = float(np.abs(a - b).max()) / (scale if scale > 0 else 1.0)
    return err if np.isfinite(err) else float("inf")        # a NaN on either side is a failure


@dataclass
class TorchComparison:
    output_error: float
    grad_error: float

    @property
    def max_error(self):
        return max(self.output_error, self.grad_error)


def compare_with_torch(spec, sample, rng=0) -> TorchComparison:
    """Run ``spec`` and its PyTorch twin on ``sample`` (float64), with the same random output cotangents;
    return the largest relative error of the outputs and of the input gradients."""
    import torch

    gen = host_rng(rng)
    outputs, vjp = spec.apply(*sample.inputs, **sample.kwargs)
    cotangents = tuple(gen.standard_normal(np.shape(y)).astype(y.dtype) for y in outputs)
    grads = vjp(cotangents)

    t_inputs = []
    for x in sample.inputs:
        t = torch.from_numpy(np.array(to_numpy(x), copy=True))
        if t.is_floating_point():
            t.requires_grad_(True)
        t_inputs.append(t)
    t_outputs = spec.torch(*t_inputs, **sample.kwargs)
    t_outputs = t_outputs if isinstance(t_outputs, tuple) else (t_outputs,)
    out_err = max(rel_error(o, t.detach().numpy()) for o, t in zip(outputs, t_outputs))
    diff = [t for t in t_inputs if t.requires_grad]
    t_grads = torch.autograd.grad(t_outputs, diff, [torch.from_numpy(c) for c in cotangents],
                                  allow_unused=True)
    grad_err = 0.0
    ours = [g for x, g in zip(sample.inputs, grads) if x.dtype.kind == "f"]
    for g, tg in zip(ours, t_grads):
        ref = np.zeros(np.shape(g)) if tg is None else tg.numpy()
        grad_err = max(grad_err, rel_error(g, ref))
    return TorchComparison(out_err, grad_err)


def run_checks(specs, rng=0, torch=None, elementwise=True):
    """Yield one result dict per (spec, sample): finite-difference error, complex-step error (ops marked
    ``complex_step``) and, where PyTorch is installed and the op has a twin, the conformance error. Used by ``orthoref verify`` and the test-suite."""
    use_torch = torch_available() if torch is None else torch
    gen = host_rng(rng)
    for spec in specs:
        for sample in spec.sample(gen, np.float64):
            row = {"name": spec.name, "kind": spec.kind, "label": sample.label, "shapes": sample.shapes,
                   "dtype": "float64", "fd_error": None, "fd_ok": False, "cs_error": None, "cs_ok": None,
                   "torch_error": None, "torch_ok": None, "error": ""}
            try:
                rep = check_backward(lambda *a: spec.apply(*a, **sample.kwargs), sample.inputs,
                                     rtol=spec.rtol, elementwise=elementwise, rng=gen, raise_on_fail=False)
                row["fd_error"], row["fd_ok"] = rep.max_rel_error, rep.passed
                if spec.complex_step:
                    cs = check_complex_step(lambda *a: spec.apply(*a, **sample.kwargs), sample.inputs,
                                            rtol=COMPLEX_STEP_RTOL, rng=gen, raise_on_fail=False)
                    row["cs_error"], row["cs_ok"] = cs.max_rel_error, cs.passed
                if use_torch and spec.torch is not None:
                    cmp = compare_with_torch(spec, sample, rng=gen)
                    row["torch_error"] = cmp.max_error
                    row["torch_ok"] = cmp.max_error <= spec.torch_rtol
            except Exception as exc:  # reported as a failure row, never swallowed silently
                row["error"] = f"{type(exc).__name__}: {exc}"
                row["fd_ok"] = False
            yield row
