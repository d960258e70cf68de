"""Issue 14, layers and ops: backward passes validate what they receive, hyper-parameters are finite and in
range, one dtype per call, overflow is an error, ``load_state_dict`` validates every entry, the sequence
tasks validate their arguments. Every error is a TypeError/ValueError naming the layer/op and the argument.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest

import orthoref.nn as nn
from orthoref._checks import MAX_ITERATIONS, NonFiniteError
from orthoref.nn.module import BackwardBeforeForwardError
from orthoref.ops import (
    avg_pool2d_forward, avg_pool2d_backward, batch_norm_backward, batch_norm_forward, conv2d_backward,
    conv2d_forward, conv2d_naive, conv2d_naive_backward, cross_entropy, dropout_backward, dropout_forward,
    flatten_backward, flatten_forward, gelu_backward, gelu_forward, global_avg_pool2d_backward,
    global_avg_pool2d_forward, leaky_relu_backward, leaky_relu_forward, linear_backward, linear_forward,
    max_pool2d_backward, max_pool2d_forward, mse, relu_backward, relu_forward, rnn_backward, rnn_forward,
    sigmoid_backward, sigmoid_forward, tanh_backward, tanh_forward,
)
from orthoref.tasks import adding_problem, copy_memory, copy_memory_baseline

F32, F64 = np.float32, np.float64


def _raises(exc, *words):
    """``pytest.raises(exc)`` whose message must contain every one of ``words``."""
    class _Ctx:
        def __enter__(self):
            self.ctx = pytest.raises(exc)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *a):
            out = self.ctx.__exit__(*a)
            msg = str(self.info.value)
            for w in words:
                assert w in msg, f"{w!r} not in {msg!r}"
            return out
    return _Ctx()


# ---------------------------------------------------------------------------------------------------------
# Every layer: a small table of constructor arguments and an input shape. A layer added to orthoref.nn
# without an entry here fails test_every_layer_is_in_the_table.

LAYERS = {
    "Linear": (lambda dt: nn.Linear(4, 3, rng=0, dtype=dt), (5, 4)),
    "Conv2d": (lambda dt: nn.Conv2d(2, 3, 3, padding=1, rng=0, dtype=dt), (2, 2, 5, 5)),
    "MaxPool2d": (lambda dt: nn.MaxPool2d(2), (2, 3, 4, 4)),
    "AvgPool2d": (lambda dt: nn.AvgPool2d(2), (2, 3, 4, 4)),
    "GlobalAvgPool2d": (lambda dt: nn.GlobalAvgPool2d(), (2, 3, 4, 4)),
    "Flatten": (lambda dt: nn.Flatten(), (2, 3, 4)),
    "ReLU": (lambda dt: nn.ReLU(), (3, 4)),
    "LeakyReLU": (lambda dt: nn.LeakyReLU(0.1), (3, 4)),
    "Tanh": (lambda dt: nn.Tanh(), (3, 4)),
    "Sigmoid": (lambda dt: nn.Sigmoid(), (3, 4)),
    "GELU": (lambda dt: nn.GELU("tanh"), (3, 4)),
    "Dropout": (lambda dt: nn.Dropout(0.5, rng=0), (3, 4)),
    "BatchNorm1d": (lambda dt: nn.BatchNorm1d(3, dtype=dt), (4, 3)),
    "BatchNorm2d": (lambda dt: nn.BatchNorm2d(3, dtype=dt), (4, 3, 2, 2)),
    "DecorrelatedBatchNorm": (lambda dt: nn.DecorrelatedBatchNorm(3, groups=2, dtype=dt), (6, 3)),
    "IterNorm": (lambda dt: nn.IterNorm(3, groups=2, dtype=dt), (4, 3, 2, 2)),
    "RNN": (lambda dt: nn.RNN(2, 3, rng=0, dtype=dt), (4, 2, 2)),
    "OrthogonalLinear": (lambda dt: nn.OrthogonalLinear(4, 3, rng=0, dtype=dt), (5, 4)),
    "OrthogonalConv2d": (lambda dt: nn.OrthogonalConv2d(2, 3, 2, rng=0, dtype=dt), (2, 2, 4, 4)),
    "OrthogonalConv2d slices": (lambda dt: nn.OrthogonalConv2d(2, 3, (2, 3), view="slices", rng=0, dtype=dt),
                                (2, 2, 4, 4)),
    "Sequential": (lambda dt: nn.Sequential(nn.Linear(4, 3, rng=0, dtype=dt), nn.ReLU()), (5, 4)),
}


def _layer_classes():
    return sorted(n for n in nn.__all__
                  if inspect.isclass(getattr(nn, n)) and issubclass(getattr(nn, n), nn.Module)
                  and getattr(nn, n) is not nn.Module)


def test_every_layer_is_in_the_table():
    missing = sorted(set(_layer_classes()) - set(LAYERS))
    assert not missing, f"layers without a row in LAYERS (so without backward-validation tests): {missing}"


def _forward(name, dtype=F32, seed=0):
    make, shape = LAYERS[name]
    layer = make(dtype)
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype) + 0.05
    y = layer.forward(x)
    return layer, x, y


def _grads(layer):
    return [p.grad for p in layer.parameters()]


def _bad_grad_outs(y):
    """(label, grad_out, exception, words) for a forward output ``y``."""
    nan = np.ones_like(y)
    nan.flat[0] = np.nan
    inf = np.ones_like(y)
    inf.flat[-1] = -np.inf
    other = F64 if y.dtype == F32 else F32
    return [
        ("nan", nan, NonFiniteError, ["grad_out", "finite"]),
        ("inf", inf, NonFiniteError, ["grad_out", "finite"]),
        ("complex", np.ones(y.shape, np.complex128), TypeError, ["grad_out", "complex128"]),
        ("other float dtype", np.ones(y.shape, other), TypeError, ["grad_out", str(np.dtype(other))]),
        ("int", np.ones(y.shape, np.int64), TypeError, ["grad_out", "int64"]),
        ("list", np.ones(y.shape).tolist(), TypeError, ["grad_out", "list"]),
        ("broadcastable ones", np.ones((1,) * y.ndim, y.dtype), ValueError, ["grad_out", "shape"]),
        ("one more row", np.ones((y.shape[0] + 1,) + y.shape[1:], y.dtype), ValueError, ["grad_out", "shape"]),
        ("scalar", np.ones((), y.dtype), ValueError, ["grad_out", "shape"]),
    ]


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("dtype", [F32, F64])
def test_layer_backward_validates_grad_out(name, dtype):
    layer, _, y = _forward(name, dtype)
    for label, g, exc, words in _bad_grad_outs(y):
        layer.zero_grad()
        for input_grad in (True, False):
            who = type(layer).__name__ if name != "Sequential" else ""
            with _raises(exc, *words, who):
                layer.backward(g, input_grad=input_grad)
            assert all(gr is None for gr in _grads(layer)), f"{name}, {label}: a gradient was accumulated"
    # the layer still works after the refusals
    dx = layer.backward(np.ones_like(y))
    assert dx.shape == _forward(name, dtype)[1].shape and dx.dtype == dtype and np.isfinite(dx).all()
    for gr in _grads(layer):
        assert gr.dtype == dtype and np.isfinite(gr).all()


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_backward_before_forward_names_the_layer(name):
    layer = LAYERS[name][0](F32)
    if name == "Sequential":
        layer = layer[0]
    with _raises(ValueError, type(layer).__name__, "before forward"):
        layer.backward(np.ones((5, 3), F32))
    assert issubclass(BackwardBeforeForwardError, RuntimeError)      # what it always was


def test_nan_grad_out_reproducer_gives_no_nan_gradients():
    """The issue: a NaN grad_out gave NaN gradients in every layer."""
    layer = nn.Linear(4, 3, rng=0, dtype=F64)
    y = layer.forward(np.ones((2, 4)))
    with _raises(NonFiniteError, "Linear.backward", "grad_out", "finite"):
        layer.backward(np.full(y.shape, np.nan))
    assert layer.weight.grad is None and layer.bias.grad is None


def test_complex_grad_out_reproducer_keeps_weight_grad_real():
    layer = nn.Linear(4, 3, rng=0, dtype=F64)
    y = layer.forward(np.ones((2, 4)))
    with _raises(TypeError, "Linear.backward", "grad_out", "complex128"):
        layer.backward(np.ones(y.shape) + 1j)
    assert layer.weight.grad is None
    layer.backward(np.ones(y.shape))
    assert layer.weight.grad.dtype == F64


def test_maxpool_refuses_a_broadcastable_grad_out():
    pool = nn.MaxPool2d(2)
    y = pool.forward(np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(F32))
    with _raises(ValueError, "MaxPool2d.backward", "grad_out", str(y.shape), "(1, 1, 1, 1)"):
        pool.backward(np.ones((1, 1, 1, 1), F32))


def test_rnn_refuses_a_grad_out_one_step_too_long():
    rnn = nn.RNN(2, 3, rng=0, dtype=F64)
    out = rnn.forward(np.random.default_rng(0).standard_normal((4, 2, 2)))
    with _raises(ValueError, "RNN.backward", "grad_out", "(4, 2, 3)", "(5, 2, 3)"):
        rnn.backward(np.ones((5,) + out.shape[1:]))
    with _raises(ValueError, "RNN.backward", "grad_h_n", "(2, 3)"):
        rnn.backward(np.ones(out.shape), grad_h_n=np.ones((1, 3)))
    with _raises(NonFiniteError, "RNN.backward", "grad_h_n"):
        rnn.backward(np.ones(out.shape), grad_h_n=np.full((2, 3), np.nan))
    assert rnn.weight_hh_l0.grad is None
    rnn.backward(None, grad_h_n=np.ones((2, 3)))                        # None: zero, as before
    assert np.isfinite(rnn.weight_hh_l0.grad).all()


def test_sequential_hook_grad_must_fit_the_output():
    model = nn.Sequential(nn.Linear(4, 3, rng=0, dtype=F64), nn.ReLU())
    model.set_output_hook(0, lambda y: (0.0, np.ones((1, 1))))
    with _raises(ValueError, "output hook 0", "grad", "(2, 3)"):
        model.forward(np.ones((2, 4)))


def test_parameter_accumulate_refuses_a_hand_set_grad_of_another_shape():
    p = nn.Parameter(np.zeros((6, 4)), name="w")
    p.grad = np.ones((1, 1))
    with _raises(ValueError, "accumulate", ".grad", "(6, 4)"):
        p.accumulate(np.ones((6, 4)))


# ---------------------------------------------------------------------------------------------------------
# Every op's backward.

def _op_cases():
    rng = np.random.default_rng(1)

    def x(*shape):
        return rng.standard_normal(shape) + 0.05

    cases = {
        "linear_backward": lambda: (linear_forward(x(3, 4), x(2, 4), x(2)), linear_backward),
        "relu_backward": lambda: (relu_forward(x(3, 4)), relu_backward),
        "leaky_relu_backward": lambda: (leaky_relu_forward(x(3, 4), 0.1), leaky_relu_backward),
        "tanh_backward": lambda: (tanh_forward(x(3, 4)), tanh_backward),
        "sigmoid_backward": lambda: (sigmoid_forward(x(3, 4)), sigmoid_backward),
        "gelu_backward": lambda: (gelu_forward(x(3, 4)), gelu_backward),
        "gelu_backward (tanh)": lambda: (gelu_forward(x(3, 4), "tanh"), gelu_backward),
        "dropout_backward": lambda: (dropout_forward(x(3, 4), 0.5, rng=0), dropout_backward),
        "dropout_backward (identity)": lambda: (dropout_forward(x(3, 4), 0.5, training=False), dropout_backward),
        "max_pool2d_backward": lambda: (max_pool2d_forward(x(2, 2, 4, 4), 2), max_pool2d_backward),
        "avg_pool2d_backward": lambda: (avg_pool2d_forward(x(2, 2, 4, 4), 2), avg_pool2d_backward),
        "max_pool2d_backward (overlap)": lambda: (max_pool2d_forward(x(2, 2, 5, 5), 3, stride=1), max_pool2d_backward),
        "avg_pool2d_backward (overlap)": lambda: (avg_pool2d_forward(x(2, 2, 5, 5), 3, stride=1, padding=1,
                                                                     count_include_pad=False), avg_pool2d_backward),
        "global_avg_pool2d_backward": lambda: (global_avg_pool2d_forward(x(2, 2, 4, 4)),
                                               global_avg_pool2d_backward),
        "flatten_backward": lambda: (flatten_forward(x(2, 3, 4)), flatten_backward),
        "conv2d_backward": lambda: (conv2d_forward(x(2, 2, 5, 5), x(3, 2, 3, 3), x(3)), conv2d_backward),
        "conv2d_backward (unbatched)": lambda: (conv2d_forward(x(2, 5, 5), x(3, 2, 3, 3)), conv2d_backward),
        "batch_norm_backward": lambda: (batch_norm_forward(x(4, 3), np.ones(3), np.zeros(3), None, None, True),
                                        batch_norm_backward),
        "batch_norm_backward (eval)": lambda: (batch_norm_forward(x(4, 3), None, None, np.zeros(3), np.ones(3),
                                                                  False), batch_norm_backward),
        "rnn_backward": lambda: (rnn_forward(x(4, 2, 2), None, x(3, 2), x(3, 3)),
                                 lambda dy, c: rnn_backward(dy, None, c)),
    }
    return cases


OP_CASES = _op_cases()


@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_op_backward_validates_dy(case):
    (y, cache), backward = OP_CASES[case]()
    if case.startswith("rnn"):
        y = y[0]
    who = case.split(" ")[0]
    name = "d_output" if who == "rnn_backward" else "dy"
    for label, g, exc, words in _bad_grad_outs(y):
        words = [name if w == "grad_out" else w for w in words]
        with _raises(exc, who, *words):
            backward(g, cache)
    out = backward(np.ones_like(y), cache)                        # still fine afterwards
    for g in (out if isinstance(out, tuple) else (out,)):
        assert g is None or (g.dtype == y.dtype and np.isfinite(g).all())


def test_conv2d_naive_backward_validates_dy():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 2, 4, 4)), rng.standard_normal((3, 2, 3, 3))
    y = conv2d_naive(x, w)
    with _raises(ValueError, "conv2d_naive_backward", "dy", str(y.shape)):
        conv2d_naive_backward(np.ones((1, 1, 1, 1)), x, w)
    with _raises(NonFiniteError, "conv2d_naive_backward", "dy"):
        conv2d_naive_backward(np.full(y.shape, np.nan), x, w)
    with _raises(TypeError, "conv2d_naive_backward", "dy", "float32"):
        conv2d_naive_backward(np.ones(y.shape, F32), x, w)


def test_rnn_backward_names_d_hT():
    (out, h), cache = rnn_forward(np.ones((3, 2, 2)), None, np.ones((3, 2)) * 0.1, np.eye(3) * 0.5)
    with _raises(ValueError, "rnn_backward", "d_hT", "(2, 3)"):
        rnn_backward(None, np.ones((2, 4)), cache)
    with _raises(NonFiniteError, "rnn_backward", "d_hT"):
        rnn_backward(np.ones(out.shape), np.full(h.shape, np.inf), cache)


def test_conv2d_backward_refuses_a_foreign_cache():
    with _raises(TypeError, "conv2d_backward", "cache"):
        conv2d_backward(np.ones((1, 1, 1, 1)), (1, 2, 3))


# ---------------------------------------------------------------------------------------------------------
# Hyper-parameters.

@pytest.mark.parametrize("make,exc,words", [
    (lambda: nn.BatchNorm1d(3, momentum=float("nan")), ValueError, ["BatchNorm1d", "momentum"]),
    (lambda: nn.BatchNorm1d(3, momentum=1.5), ValueError, ["BatchNorm1d", "momentum"]),
    (lambda: nn.BatchNorm2d(3, momentum=-0.1), ValueError, ["BatchNorm2d", "momentum"]),
    (lambda: nn.BatchNorm1d(3, eps=0.0), ValueError, ["BatchNorm1d", "eps"]),
    (lambda: nn.BatchNorm1d(3, eps=float("inf")), ValueError, ["BatchNorm1d", "eps"]),
    (lambda: nn.BatchNorm1d(2.0), TypeError, ["BatchNorm1d", "num_features"]),
    (lambda: nn.BatchNorm1d(3, affine="yes"), TypeError, ["BatchNorm1d", "affine"]),
    (lambda: nn.BatchNorm1d(3, dtype=np.float16), TypeError, ["BatchNorm1d", "dtype", "float16"]),
    (lambda: nn.RNN(2, 2.5), TypeError, ["RNN", "hidden_size", "2.5"]),
    (lambda: nn.RNN(0, 2), ValueError, ["RNN", "input_size"]),
    (lambda: nn.RNN(2, 2, nonlinearity="sigmoid"), ValueError, ["RNN", "nonlinearity"]),
    (lambda: nn.RNN(2, 2, rng=-1), ValueError, ["RNN", "rng"]),
    (lambda: nn.RNN(2, 2, dtype="complex128"), TypeError, ["RNN", "dtype"]),
    (lambda: nn.Dropout(float("nan")), ValueError, ["Dropout", "dropout probability p"]),
    (lambda: nn.Dropout(0.5, rng=-3), ValueError, ["Dropout", "rng"]),
    (lambda: nn.LeakyReLU(float("inf")), ValueError, ["LeakyReLU", "negative_slope"]),
    (lambda: nn.GELU("fast"), ValueError, ["GELU", "approximate"]),
    (lambda: nn.Linear(2.5, 3), TypeError, ["Linear", "in_features"]),
    (lambda: nn.Linear("4", 3), TypeError, ["Linear", "in_features"]),
    (lambda: nn.Linear(4, 0), ValueError, ["Linear", "out_features"]),
    (lambda: nn.Linear(4, 3, bias="no"), TypeError, ["Linear", "bias"]),
    (lambda: nn.Linear(4, 3, dtype=np.float16), TypeError, ["Linear", "dtype", "float16"]),
    (lambda: nn.Linear(4, 3, dtype="nonsense"), TypeError, ["Linear", "dtype"]),
    (lambda: nn.Linear(4, 3, rng=-1), ValueError, ["Linear", "rng"]),
    (lambda: nn.Linear(4, 3, weight_init="nope"), ValueError, ["Linear", "weight_init", "nope"]),
    (lambda: nn.Linear(4, 3, weight_init=lambda s, rng, dtype: np.full(s, np.nan, dtype)), ValueError,
     ["Linear", "weight_init", "NaN"]),
    (lambda: nn.Conv2d(2, 3, 0), ValueError, ["Conv2d", "kernel_size"]),
    (lambda: nn.Conv2d(2, 3, 3, stride=0), ValueError, ["Conv2d", "stride"]),
    (lambda: nn.Conv2d(2, 3, 3, padding=-1), ValueError, ["Conv2d", "padding"]),
    (lambda: nn.Conv2d(2, 3, 3, dilation=1.5), TypeError, ["Conv2d", "dilation"]),
    (lambda: nn.Conv2d(2, 4, 3, groups=2.0), TypeError, ["Conv2d", "groups"]),
    (lambda: nn.Conv2d(2, 3, 3, groups=2), ValueError, ["Conv2d", "groups"]),
    (lambda: nn.Conv2d(2, 3, 3, padding="full"), ValueError, ["Conv2d", "padding"]),
    (lambda: nn.MaxPool2d(2, padding=2), ValueError, ["MaxPool2d", "padding"]),
    (lambda: nn.MaxPool2d(0), ValueError, ["MaxPool2d", "kernel_size"]),
    (lambda: nn.AvgPool2d(2, divisor_override=0), ValueError, ["AvgPool2d", "divisor_override"]),
    (lambda: nn.AvgPool2d(2, count_include_pad="no"), TypeError, ["AvgPool2d", "count_include_pad"]),
    (lambda: nn.Flatten(1.0), TypeError, ["Flatten", "start_dim"]),
    (lambda: nn.OrthogonalLinear(4, 3, map="bogus"), ValueError, ["OrthogonalLinear", "map", "bogus"]),
    (lambda: nn.OrthogonalLinear(4, 3, map="newton_schulz", steps=10 ** 30), ValueError,
     ["OrthogonalLinear", "steps", str(MAX_ITERATIONS)]),
    (lambda: nn.OrthogonalLinear(4, 3, steps=MAX_ITERATIONS + 1), ValueError, ["OrthogonalLinear", "steps"]),
    (lambda: nn.OrthogonalLinear(4, 3, eps=float("nan")), ValueError, ["OrthogonalLinear", "eps"]),
    (lambda: nn.OrthogonalLinear(4, 3, trivialization=1), TypeError, ["OrthogonalLinear", "trivialization"]),
    (lambda: nn.OrthogonalLinear(4, 3, dtype=np.float16), TypeError, ["OrthogonalLinear", "dtype"]),
    (lambda: nn.OrthogonalConv2d(2, 3, 2, map="qr"), ValueError, ["OrthogonalConv2d", "map"]),
    (lambda: nn.OrthogonalConv2d(2, 3.0, 2), TypeError, ["OrthogonalConv2d", "out_channels"]),
    (lambda: nn.Linear(4, 3).to(np.float16), TypeError, ["Linear.to", "dtype"]),
    (lambda: nn.Linear(4, 3).train("yes"), TypeError, ["Linear.train", "mode"]),
])
def test_layer_hyper_parameters(make, exc, words):
    with _raises(exc, *words):
        make()


@pytest.mark.parametrize("call,exc,words", [
    (lambda x: leaky_relu_forward(x, float("nan")), ValueError, ["leaky_relu", "negative_slope"]),
    (lambda x: dropout_forward(x, 0.5, rng=0, training="yes"), TypeError, ["dropout", "training"]),
    (lambda x: dropout_forward(x, 0.5, rng=-1), ValueError, ["dropout", "rng"]),
    (lambda x: gelu_forward(x, "erf"), ValueError, ["gelu", "approximate"]),
    (lambda x: flatten_forward(x, 1.0), TypeError, ["flatten", "start_dim"]),
    (lambda x: avg_pool2d_forward(x[None, None], 2, divisor_override=2.5), TypeError,
     ["avg_pool2d", "divisor_override"]),
    (lambda x: avg_pool2d_forward(x[None, None], 2, count_include_pad=None), TypeError,
     ["avg_pool2d", "count_include_pad"]),
    (lambda x: conv2d_forward(x[None, None], np.ones((1, 1, 2, 2)), groups=1.0), TypeError, ["conv2d", "groups"]),
    (lambda x: cross_entropy(x, np.zeros(4, np.int64), reduction="avg"), ValueError, ["cross_entropy", "reduction"]),
    (lambda x: mse(x, x, reduction=None), ValueError, ["mse", "reduction"]),
    (lambda x: rnn_forward(x[None], None, np.ones((2, 4)), np.eye(2), nonlinearity="gelu"), ValueError,
     ["rnn_forward", "nonlinearity"]),
])
def test_op_hyper_parameters(call, exc, words):
    with _raises(exc, *words):
        call(np.ones((4, 4)))


# ---------------------------------------------------------------------------------------------------------
# Batch norm.

def test_batchnorm_momentum_nan_reproducer_and_op_ranges():
    with _raises(ValueError, "BatchNorm1d", "momentum", "nan"):
        nn.BatchNorm1d(4, momentum=float("nan"))
    x = np.random.default_rng(0).standard_normal((5, 3))
    rm, rv = np.zeros(3), np.ones(3)
    with _raises(ValueError, "batch_norm", "momentum"):
        batch_norm_forward(x, None, None, rm, rv, True, momentum=float("nan"))
    with _raises(ValueError, "batch_norm", "eps"):
        batch_norm_forward(x, None, None, rm, rv, True, eps=-1.0)
    with _raises(TypeError, "batch_norm", "training"):
        batch_norm_forward(x, None, None, rm, rv, "no")
    assert np.array_equal(rm, np.zeros(3)) and np.array_equal(rv, np.ones(3))   # nothing updated


@pytest.mark.parametrize("bad,exc", [(-1.0, ValueError), (np.nan, NonFiniteError), (np.inf, NonFiniteError)])
def test_batchnorm_eval_refuses_a_bad_running_var(bad, exc):
    bn = nn.BatchNorm1d(3, dtype=F64).eval()
    bn.running_var[1] = bad
    with _raises(exc, "BatchNorm1d", "running_var"):
        bn.forward(np.ones((4, 3)))
    with _raises(exc, "batch_norm", "running_var"):
        batch_norm_forward(np.ones((4, 3)), None, None, np.zeros(3), bn.running_var, False)


def test_batchnorm_training_error_leaves_running_stats_alone():
    bn = nn.BatchNorm1d(2, dtype=F32)
    x = np.array([[1e20, 0.0], [-1e20, 1.0]], F32)       # the variance overflows float32
    with _raises(NonFiniteError, "BatchNorm1d", "float64"):
        bn.forward(x)
    assert np.array_equal(bn.running_mean, [0, 0]) and np.array_equal(bn.running_var, [1, 1])
    assert int(bn.num_batches_tracked) == 0


# ---------------------------------------------------------------------------------------------------------
# One dtype per call.

@pytest.mark.parametrize("call,words", [
    (lambda a, b: linear_forward(a, b, None), ["linear", "w (weight)", "float32", "float64"]),
    (lambda a, b: linear_forward(b, b, a[0]), ["linear", "b (bias)"]),
    (lambda a, b: conv2d_forward(a[None, None], b[None, None]), ["conv2d", "w (weight)"]),
    (lambda a, b: conv2d_naive(a[None, None], b[None, None]), ["conv2d_naive", "w (weight)"]),
    (lambda a, b: batch_norm_forward(a, b[0], None, None, None, True), ["batch_norm", "gamma (weight)"]),
    (lambda a, b: batch_norm_forward(a, None, None, b[0], b[0], False), ["batch_norm", "running_mean"]),
    (lambda a, b: rnn_forward(a[None], None, b, b), ["rnn_forward", "w_ih"]),
    (lambda a, b: mse(a, b), ["mse", "target"]),
])
def test_mixed_float_dtypes_are_refused(call, words):
    a32 = np.ones((4, 4), F32)
    b64 = np.ones((4, 4), F64)
    with _raises(TypeError, *words):
        call(a32, b64)


# ---------------------------------------------------------------------------------------------------------
# Overflow.

def test_float32_linear_overflow_is_an_error_naming_the_layer():
    ones = lambda shape, rng, dtype: np.ones(shape, dtype)      # noqa: E731
    layer = nn.Linear(4, 3, weight_init=ones)
    with _raises(NonFiniteError, "Linear", "overflows float32", "float64"):
        layer.forward(np.full((2, 4), 1e38, F32))
    with _raises(NonFiniteError, "linear", "overflows float32"):
        linear_forward(np.full((2, 4), 1e30, F32), np.full((3, 4), 1e10, F32))
    # float64 holds it
    assert np.isfinite(nn.Linear(4, 3, weight_init=ones, dtype=F64).forward(np.full((2, 4), 1e38))).all()


@pytest.mark.parametrize("call,who", [
    (lambda: conv2d_forward(np.full((1, 1, 3, 3), 1e30, F32), np.full((1, 1, 2, 2), 1e10, F32)), "conv2d"),
    (lambda: nn.Conv2d(1, 1, 2, weight_init=lambda s, rng, dtype: np.ones(s, dtype)).forward(
        np.full((1, 1, 3, 3), 1e38, F32)), "Conv2d"),
    (lambda: leaky_relu_forward(np.full(3, -1e10), 1e300), "leaky_relu"),
    (lambda: avg_pool2d_forward(np.full((1, 1, 2, 2), 3e38, F32), 2), "avg_pool2d"),
    (lambda: global_avg_pool2d_forward(np.full((1, 1, 2, 2), 3e38, F32)), "global_avg_pool2d"),
    (lambda: dropout_forward(np.full(64, 3e38, F32), 0.5, rng=0), "dropout"),
    (lambda: mse(np.full(3, 1e20, F32), np.full(3, -1e20, F32)), "mse"),
    (lambda: mse(np.full(3, 1e20, F32), np.zeros(3, F32), reduction="none"), "mse"),
    (lambda: cross_entropy(np.array([[3e38, -3e38]], F32), np.array([1])), "cross_entropy"),
    (lambda: rnn_forward(np.full((3, 1, 1), 1e30, F32), None, np.full((1, 1), 1e10, F32), np.eye(1, dtype=F32),
                         nonlinearity="relu"), "rnn_forward"),
])
def test_forward_overflow_is_a_non_finite_error(call, who):
    with _raises(NonFiniteError, who, "overflows", "float64"):
        call()


def test_backward_overflow_is_a_non_finite_error():
    y, cache = linear_forward(np.full((2, 4), 1e10, F32), np.ones((3, 4), F32))
    with _raises(NonFiniteError, "linear_backward", "overflows", "dy is finite"):
        linear_backward(np.full(y.shape, 1e30, F32), cache)


def test_gelu_tanh_backward_is_finite_far_out():
    """``1 - tanh² u = 0`` times ``x² = Inf``: NaN before; the exact slope (0 or 1) now."""
    for dt in (F32, F64):
        x = np.array([-1e30, -1e20, -3.0, 0.5, 1e20, 1e30], dt)
        y, cache = gelu_forward(x, "tanh")
        dx = gelu_backward(np.ones_like(x), cache)
        assert np.isfinite(dx).all()
        np.testing.assert_array_equal(dx[[0, 1, 4, 5]], [0, 0, 1, 1])
        x2 = x[2:4]
        np.testing.assert_array_equal(gelu_backward(np.ones_like(x2), gelu_forward(x2, "tanh")[1]), dx[2:4])


# ---------------------------------------------------------------------------------------------------------
# Losses.

@pytest.mark.parametrize("labels,exc,words", [
    (np.array([0, 5, 1]), ValueError, ["cross_entropy", "labels", "[0, 3]"]),
    (np.array([0, -1, 1]), ValueError, ["cross_entropy", "labels"]),
    (np.array([0.0, 1.0, 1.0]), TypeError, ["cross_entropy", "labels", "float64"]),
    (np.array([True, False, True]), TypeError, ["cross_entropy", "labels", "bool"]),
    (np.array([0, 1]), ValueError, ["cross_entropy", "labels", "(3,)"]),
    (np.array([[0, 1, 1]]), ValueError, ["cross_entropy", "labels", "(3,)"]),
    ([0, 1, 1], TypeError, ["cross_entropy", "labels", "list"]),
    (np.int64(1), TypeError, ["cross_entropy", "labels"]),
])
def test_cross_entropy_labels(labels, exc, words):
    with _raises(exc, *words):
        nn.cross_entropy(np.zeros((3, 4)), labels)


def test_mse_target_shape():
    with _raises(ValueError, "mse", "target", "(3, 2)"):
        nn.mse(np.zeros((3, 2)), np.zeros((3, 1)))


# ---------------------------------------------------------------------------------------------------------
# load_state_dict.

def _model():
    return nn.Sequential(nn.Linear(4, 3, rng=0), nn.BatchNorm1d(3), nn.Linear(3, 2, rng=1))


@pytest.mark.parametrize("key,value,exc,words", [
    ("0.weight", np.ones((3, 4), bool), TypeError, ["0.weight", "bool", "float32"]),
    ("0.weight", np.ones((3, 4), np.complex64), TypeError, ["0.weight", "complex64"]),
    ("0.weight", np.ones((3, 4), np.int32), TypeError, ["0.weight", "int32"]),
    ("0.weight", np.ones((3, 4), F64), TypeError, ["0.weight", "float64"]),
    ("0.weight", np.full((3, 4), np.nan, F32), NonFiniteError, ["0.weight", "finite"]),
    ("2.bias", np.full(2, np.inf, F32), NonFiniteError, ["2.bias", "finite"]),
    ("0.weight", np.ones((4, 3), F32), ValueError, ["0.weight", "(4, 3)", "(3, 4)"]),
    ("0.weight", np.ones((3, 4)).tolist(), TypeError, ["0.weight", "list"]),
    ("0.weight", np.float32(1.0), TypeError, ["0.weight"]),
    ("1.running_var", np.full(3, np.nan, F32), NonFiniteError, ["1.running_var"]),
    ("1.num_batches_tracked", np.zeros((), np.float64), TypeError, ["1.num_batches_tracked", "int64"]),
])
def test_load_state_dict_validates_every_entry_and_loads_nothing_on_error(key, value, exc, words):
    model = _model()
    before = model.state_dict()
    bad = dict(before)
    # the bad entry is last in the dict's order and a good-looking change comes first: all-or-nothing
    bad["0.bias"] = np.full(3, 7.0, F32)
    bad[key] = value
    with _raises(exc, "load_state_dict", *words):
        model.load_state_dict(bad)
    after = model.state_dict()
    for k in before:
        assert np.array_equal(before[k], after[k]), f"{k} was modified by a refused load"


def test_load_state_dict_refuses_a_non_mapping_and_unknown_keys():
    model = _model()
    with _raises(TypeError, "load_state_dict", "state"):
        model.load_state_dict([1, 2])
    sd = model.state_dict()
    sd["9.weight"] = np.ones(2, F32)
    with _raises(ValueError, "load_state_dict", "9.weight"):
        model.load_state_dict(sd)


# ---------------------------------------------------------------------------------------------------------
# Sequence tasks.

@pytest.mark.parametrize("call,exc,words", [
    (lambda: adding_problem(2, 2.5), TypeError, ["adding_problem", "T"]),
    (lambda: adding_problem(True, 5), TypeError, ["adding_problem", "n"]),
    (lambda: adding_problem(4, 1), ValueError, ["adding_problem", "T"]),
    (lambda: adding_problem(4, 5, rng=-1), ValueError, ["adding_problem", "rng"]),
    (lambda: adding_problem(4, 5, rng="seed"), TypeError, ["adding_problem", "rng"]),
    (lambda: adding_problem(4, 5, dtype=np.float16), TypeError, ["adding_problem", "dtype"]),
    (lambda: adding_problem(10 ** 6, 10 ** 6), ValueError, ["adding_problem", "elements"]),
    (lambda: copy_memory(0, 5), ValueError, ["copy_memory", "n"]),
    (lambda: copy_memory(2, 5, n_symbols=1.5), TypeError, ["copy_memory", "n_symbols"]),
    (lambda: copy_memory(2, 5, memory=-1), ValueError, ["copy_memory", "memory"]),
    (lambda: copy_memory(2, 5, rng=-2), ValueError, ["copy_memory", "rng"]),
    (lambda: copy_memory(2, 5, dtype="int32"), TypeError, ["copy_memory", "dtype"]),
    (lambda: copy_memory_baseline(0), ValueError, ["copy_memory_baseline", "T"]),
])
def test_task_arguments(call, exc, words):
    with _raises(exc, *words):
        call()


def test_tasks_unchanged_on_valid_input():
    x, y = adding_problem(3, 6, rng=1, dtype=F64)
    assert x.shape == (6, 3, 2) and y.shape == (3, 1) and x.dtype == F64
    x, y = copy_memory(2, 4, n_symbols=3, memory=2, rng=np.random.default_rng(0))
    assert x.shape == (8, 2, 5) and y.dtype == np.int64


# ---------------------------------------------------------------------------------------------------------
# Sizes that could never be allocated: a ValueError naming the arguments, never MemoryError/OverflowError.

@pytest.mark.parametrize("make,words", [
    (lambda: nn.Linear(10 ** 30, 3), ["Linear", "in_features"]),
    (lambda: nn.Conv2d(3, 4, 10 ** 30), ["Conv2d", "kernel_size"]),
    (lambda: nn.RNN(2, 10 ** 30), ["RNN", "hidden_size"]),
    (lambda: nn.BatchNorm1d(10 ** 30), ["BatchNorm1d", "num_features"]),
    (lambda: nn.OrthogonalLinear(10 ** 30, 3), ["OrthogonalLinear", "in_features"]),
    (lambda: nn.OrthogonalConv2d(2, 3, 10 ** 30), ["OrthogonalConv2d", "kernel_size"]),
    (lambda: nn.Conv2d(1, 1, 2, padding=10 ** 15).forward(np.ones((1, 1, 3, 3), F32)), ["Conv2d", "padding"]),
    (lambda: conv2d_naive(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)), padding=10 ** 15),
     ["conv2d_naive", "padding"]),
])
def test_impossible_sizes_are_value_errors(make, words):
    with _raises(ValueError, *words):
        make()


def test_memory_error_becomes_a_value_error():
    from orthoref.nn.linear import kaiming_uniform_default
    with _raises(ValueError, "kaiming_uniform_default", "(10000000, 10000000)"):
        kaiming_uniform_default((10 ** 7, 10 ** 7), 4, np.random.default_rng(0), F64)


def test_huge_stride_reads_one_window():
    """A stride past the padded size is the stride of the padded size (no as_strided overflow)."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((3, 2, 2, 2))
    y, cache = conv2d_forward(x, w, stride=10 ** 30)
    y_ref, cache_ref = conv2d_forward(x, w, stride=5)
    assert y.shape == (2, 3, 1, 1) and np.array_equal(y, y_ref)
    dy = rng.standard_normal(y.shape)
    for a, b in zip(conv2d_backward(dy, cache), conv2d_backward(dy, cache_ref)):
        assert np.array_equal(a, b)
    p, pcache = max_pool2d_forward(x, 2, stride=10 ** 30)
    assert np.array_equal(p, max_pool2d_forward(x, 2, stride=5)[0])
    assert np.array_equal(max_pool2d_backward(np.ones_like(p), pcache),
                          max_pool2d_backward(np.ones_like(p), max_pool2d_forward(x, 2, stride=5)[1]))


@pytest.mark.parametrize("data,exc", [(np.ones(3, np.float16), TypeError), (np.ones(3, bool), TypeError),
                                      (np.ones(3, np.complex128), TypeError), ([1.0, 2.0], TypeError),
                                      (np.ones(3, object), TypeError)])
def test_parameter_data_must_be_a_float_array(data, exc):
    with _raises(exc, "Parameter", "data"):
        nn.Parameter(data)
    with _raises(TypeError, "Parameter", "name"):
        nn.Parameter(np.ones(3), name=3)


def test_overlapping_pool_backward_overflow_is_a_non_finite_error():
    x = np.zeros((1, 1, 5, 5), F32)
    x[0, 0, 2, 2] = 1.0                                  # the maximum of all nine 3x3 windows
    y, cache = max_pool2d_forward(x, 3, stride=1)
    with _raises(NonFiniteError, "max_pool2d_backward", "overflows", "dy is finite"):
        max_pool2d_backward(np.full(y.shape, 3e38, F32), cache)


def test_sequential_hands_over_only_verified_gradients():
    """Sequential.backward skips re-reading the finiteness of a gradient one layer returned to the next; the
    user's grad_out is always checked, a failing layer leaves no hand-off behind, and a layer called on its
    own checks everything."""
    from orthoref.ops import _contract
    model = nn.Sequential(nn.Linear(4, 3, dtype=np.float64, rng=0), nn.ReLU(), nn.Linear(3, 2, dtype=np.float64, rng=1))
    x = np.random.default_rng(0).standard_normal((5, 4))
    y = model.forward(x)
    bad = np.ones_like(y)
    bad[1, 1] = np.nan
    with pytest.raises(NonFiniteError, match=r"Linear.*grad_out must be finite"):
        model.backward(bad)
    assert _contract.verified(None) and getattr(_contract.handoff, "g", None) is None
    model.zero_grad()
    dx = model.backward(np.ones_like(y))
    assert np.isfinite(dx).all() and getattr(_contract.handoff, "g", None) is None
    relu = nn.ReLU()
    relu.forward(np.ones((2, 3)))
    g = np.ones((2, 3))
    g[0, 0] = np.inf
    with pytest.raises(NonFiniteError, match=r"ReLU.*grad_out must be finite"):
        relu.backward(g)


def test_sequential_hands_on_upper_bounds_of_the_squared_norms(monkeypatch):
    """The bounds on Σ x² and Σ dy² that Sequential hands to a Linear layer's weight-gradient bound are upper
    bounds of the true sums (measured here in float64), and they do arrive: a hidden layer measures neither."""
    from orthoref.ops import linear as L
    seen = []
    real = L._below_overflow

    def spy(xp, dy2, x2, dy_sq=None, x_sq=None, has_b=True):
        seen.append((dy2.copy(), x2.copy(), dy_sq, x_sq))
        return real(xp, dy2, x2, dy_sq, x_sq, has_b)

    monkeypatch.setattr(L, "_below_overflow", spy)
    rng = np.random.default_rng(0)
    for dt, positive in ((F32, False), (F64, False), (F32, True)):    # positive: ReLU passes all, bounds tight
        seen.clear()
        model = nn.Sequential(nn.Linear(40, 64, rng=0, dtype=dt), nn.ReLU(), nn.Linear(64, 48, rng=1, dtype=dt),
                              nn.ReLU(), nn.Linear(48, 3, rng=2, dtype=dt))
        x = rng.standard_normal((16, 40)).astype(dt)
        if positive:
            for p in model.parameters():
                p.data[...] = np.abs(p.data)
            x = np.abs(x)
        y = model.forward(x)
        model.backward(rng.standard_normal(y.shape).astype(dt))
        assert len(seen) == 3
        for dy2, x2, dy_sq, x_sq in seen:
            for bound, a in ((dy_sq, dy2), (x_sq, x2)):
                if bound is not None:
                    assert bound >= np.sum(a.astype(np.float64) ** 2) * (1 - 1e-5)
        assert seen[0][2] is not None and seen[0][3] is not None     # the last: dy measured, x handed on
        assert seen[1][2] is not None and seen[1][3] is not None     # the middle layer: both handed on
        assert seen[2][2] is not None and seen[2][3] is None         # the first: dy handed on, x the user's


def test_sequential_weight_gradient_overflow_is_caught_with_handed_bounds():
    """A weight gradient that overflows in a hidden Linear layer of a Sequential raises, although its dy and
    x are finite and came as hand-offs; the failing layer accumulates nothing."""
    w1, w2 = np.full((1, 1), 1e-10, F32), np.full((1, 1), 1e11, F32)
    model = nn.Sequential(nn.Linear(1, 1, bias=False, dtype=F32), nn.ReLU(), nn.Linear(1, 1, bias=False, dtype=F32))
    model[0].weight.data[...], model[2].weight.data[...] = w1, w2
    y = model.forward(np.full((1, 1), 1e19, F32))                # y1 = 1e9, y = 1e20: finite
    with _raises(NonFiniteError, "Linear.backward", "overflows"):
        model.backward(np.full(y.shape, 1e19, F32))              # dx2 = 1e30, dw1 = 1e49
    assert model[0].weight.grad is None                            # the failing layer accumulated nothing


class _NaNForward(nn.Module):
    """A user's layer that breaks the failure model in forward: NaN out."""

    def forward(self, x):
        y = x.copy()
        y[0, 0] = np.nan
        return y


class _NaNBackward(nn.Module):
    """A user's layer that breaks the failure model in backward: identity forward, NaN gradient out."""

    def forward(self, x):
        return x

    def backward(self, grad_out, input_grad=True):
        g = grad_out.copy()
        g[0, 0] = np.nan
        return g


class _NaNSequential(nn.Sequential):
    """A user's subclass of Sequential (of orthoref's own layers) that breaks the failure model itself."""

    def forward(self, x):
        return _NaNForward().forward(super().forward(x))

    def backward(self, grad_out, input_grad=True):
        return _NaNBackward().backward(super().backward(grad_out, input_grad))


@pytest.mark.parametrize("nested", [False, True, "subclass"])
def test_sequential_trusts_only_its_own_layers(nested):
    """Only the outputs of orthoref's own layers are handed over unchecked: a user's layer returning NaN
    (directly, inside a nested Sequential, or a user's subclass of Sequential holding only orthoref's
    layers) is caught by the next layer, forward and backward."""
    if nested == "subclass":
        x = np.abs(np.random.default_rng(0).standard_normal((5, 4))) + 1
        model = nn.Sequential(nn.ReLU(), _NaNSequential(nn.ReLU()), nn.ReLU())
        with pytest.raises(NonFiniteError, match=r"relu: x must be finite"):
            model.forward(x)
        model = nn.Sequential(nn.ReLU(), _NaNSequential(nn.ReLU()))
        model.forward(x)
        with pytest.raises(NonFiniteError, match=r"ReLU.*grad_out must be finite"):
            model.backward(np.ones((5, 4)))
        return
    wrap = (lambda layer: nn.Sequential(layer)) if nested else (lambda layer: layer)
    x = np.abs(np.random.default_rng(0).standard_normal((5, 4))) + 1
    model = nn.Sequential(nn.ReLU(), wrap(_NaNForward()), nn.ReLU())
    with pytest.raises(NonFiniteError, match=r"relu: x must be finite"):
        model.forward(x)
    model = nn.Sequential(nn.ReLU(), wrap(_NaNBackward()))
    model.forward(x)
    with pytest.raises(NonFiniteError, match=r"ReLU.*grad_out must be finite"):
        model.backward(np.ones((5, 4)))
