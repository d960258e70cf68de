"""The GPU path on the CPU: the registry, every layer, every optimizer, train steps, ``init`` and ``analysis``
run on ``tests/strict_backend.py`` (a CuPy stand-in that fails wherever CuPy would) and agree with NumPy.

Each case runs once on host NumPy arrays and once with ``backend.using("cupy")`` on StrictArrays built from
the same host data; results must be device arrays (a NumPy result from device inputs is a hidden host
round trip) with the NumPy values to 1e-12.
"""
import copy
import zlib

import numpy as np
import pytest

import strict_backend as sb
from conftest import spec_samples
from orthoref import backend

# ---------------------------------------------------------------------------------------------------------
# KNOWN_FAILURES: "<group>:<case id>" -> reason (file:line where the device path breaks). Each is a bug to
# fix in this issue: remove the entry when its fix lands (xfail(strict=True) then fails, as a reminder).
KNOWN_FAILURES = {}
# ---------------------------------------------------------------------------------------------------------

RTOL = 1e-12


def _param(group, case_id, *values):
    reason = KNOWN_FAILURES.get(f"{group}:{case_id}")
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(*values, id=case_id, marks=marks)


@pytest.fixture
def device(monkeypatch):
    """The strict CuPy stand-in installed as ``cupy`` and made the active backend."""
    sb.install(monkeypatch)
    with backend.using("cupy"):
        yield sb.xp


def to_dev(x):
    """Host arrays (also inside tuples/lists/dicts) to device arrays."""
    if isinstance(x, np.ndarray):
        return sb.to_device(x)
    if isinstance(x, (list, tuple)):
        return type(x)(to_dev(v) for v in x)
    if isinstance(x, dict):
        return {k: to_dev(v) for k, v in x.items()}
    return x


def assert_same(ours, ref, what):
    """``ours`` (device) equals ``ref`` (host) to RTOL, structure by structure."""
    if isinstance(ref, (tuple, list)):
        assert isinstance(ours, (tuple, list)) and len(ours) == len(ref), f"{what}: structure differs"
        for k, (o, r) in enumerate(zip(ours, ref)):
            assert_same(o, r, f"{what}[{k}]")
        return
    if ref is None:
        assert ours is None, f"{what}: expected None"
        return
    if isinstance(ref, np.ndarray):
        assert isinstance(ours, sb.StrictArray), \
            f"{what}: a {type(ours).__name__} from device inputs (a hidden host round trip)"
        got = ours.get()
        assert got.shape == ref.shape and got.dtype == ref.dtype, \
            f"{what}: {got.shape} {got.dtype} vs NumPy {ref.shape} {ref.dtype}"
        scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size and ref.dtype.kind in "fc" else 1.0
        np.testing.assert_allclose(got, ref, rtol=RTOL, atol=RTOL * scale, err_msg=what)
        return
    if isinstance(ref, (float, np.floating)):
        assert np.isclose(float(ours), float(ref), rtol=RTOL, atol=RTOL), f"{what}: {ours} vs {ref}"
        return
    assert ours == ref, f"{what}: {ours!r} vs {ref!r}"


# ---------------------------------------------------------------------------------------------------------
# (a) the registry, forward and VJP

def _registry_cases():
    return [_param("registry", p.id, *p.values) for p in spec_samples(np.float64)]


def _run_spec(spec, sample, cotangents, on_device):
    inputs = tuple(copy.deepcopy(sample.inputs))
    kwargs = copy.deepcopy(sample.kwargs)       # a Generator in kwargs must draw the same on both runs
    if on_device:
        inputs, kwargs, cotangents = to_dev(inputs), to_dev(kwargs), to_dev(cotangents)
    outs, vjp = spec.apply(*inputs, **kwargs)
    return outs, vjp(cotangents)


@pytest.mark.parametrize("spec, sample", _registry_cases())
def test_registry_op_on_device(spec, sample, monkeypatch):
    ref_outs, _ = spec.apply(*copy.deepcopy(sample.inputs), **copy.deepcopy(sample.kwargs))
    gen = np.random.default_rng(zlib.crc32(f"{spec.name}/cotangent".encode()))
    cots = tuple(gen.standard_normal(np.shape(y)).astype(np.asarray(y).dtype) for y in ref_outs)
    ref = _run_spec(spec, sample, cots, on_device=False)
    sb.install(monkeypatch)
    with backend.using("cupy"):
        ours = _run_spec(spec, sample, cots, on_device=True)
    assert_same(ours[0], ref[0], f"{spec.name} value")
    assert_same(ours[1], ref[1], f"{spec.name} vjp")


# ---------------------------------------------------------------------------------------------------------
# (b) every layer, built on the device (parameters created by the active backend)

def _layers():
    from orthoref import nn
    f64 = dict(dtype=np.float64)
    table = {
        "Linear": (lambda: nn.Linear(5, 3, rng=0, **f64), (4, 5)),
        "RNN": (lambda: nn.RNN(3, 4, rng=0, **f64), (5, 2, 3)),
        "Conv2d": (lambda: nn.Conv2d(2, 3, 3, padding=1, rng=0, **f64), (2, 2, 5, 5)),
        "Conv2d-strided-groups": (lambda: nn.Conv2d(4, 4, 3, stride=2, groups=2, rng=0, **f64), (2, 4, 7, 7)),
        "MaxPool2d": (lambda: nn.MaxPool2d(2), (2, 3, 6, 6)),
        "AvgPool2d": (lambda: nn.AvgPool2d(3, stride=2, padding=1), (2, 3, 6, 6)),
        "GlobalAvgPool2d": (lambda: nn.GlobalAvgPool2d(), (2, 3, 4, 4)),
        "Flatten": (lambda: nn.Flatten(), (2, 3, 4, 4)),
        "ReLU": (lambda: nn.ReLU(), (4, 6)),
        "LeakyReLU": (lambda: nn.LeakyReLU(0.1), (4, 6)),
        "Tanh": (lambda: nn.Tanh(), (4, 6)),
        "Sigmoid": (lambda: nn.Sigmoid(), (4, 6)),
        "GELU": (lambda: nn.GELU(), (4, 6)),
        "GELU-tanh": (lambda: nn.GELU("tanh"), (4, 6)),
        "Dropout": (lambda: nn.Dropout(0.3, rng=0), (4, 6)),
        "BatchNorm1d": (lambda: nn.BatchNorm1d(6, **f64), (4, 6)),
        "BatchNorm2d": (lambda: nn.BatchNorm2d(3, **f64), (4, 3, 3, 3)),
    }
    for m in nn.ORTHOGONAL_MAPS:
        table[f"OrthogonalLinear-{m}"] = (lambda m=m: nn.OrthogonalLinear(5, 4, map=m, rng=0, **f64), (3, 5))
        table[f"OrthogonalConv2d-{m}"] = (lambda m=m: nn.OrthogonalConv2d(2, 3, 3, padding=1, map=m, rng=0,
                                                                           **f64), (2, 2, 5, 5))
    return table


def _run_layer(build, x, dy):
    layer = build()
    y = layer.forward(x)
    dx = layer.backward(dy)
    return [y, dx] + [p.grad for p in layer.parameters()] + [p.data for p in layer.parameters()]


@pytest.mark.parametrize("name", [_param("layer", n, n) for n in _layers()])
def test_layer_on_device(name, monkeypatch):
    build, shape = _layers()[name]
    gen = np.random.default_rng(zlib.crc32(name.encode()))
    x = gen.standard_normal(shape)
    y = build().forward(x.copy())
    dy = gen.standard_normal(y.shape)
    ref = _run_layer(build, x.copy(), dy.copy())
    sb.install(monkeypatch)
    with backend.using("cupy"):
        ours = _run_layer(build, to_dev(x), to_dev(dy))
    assert_same(ours, ref, name)


def _right_inverse_cases():
    """``(layer factory, W factory)`` per case: every map with and without trivialization (``matrix_exp``
    and ``cayley`` without: ``NotImplementedError`` on both backends), tall and wide, a Conv2d kernel, and
    a host ``W`` given to a device layer."""
    from orthoref import nn
    from orthoref.ortho._linalg import haar
    f64 = dict(dtype=np.float64)
    tall = lambda: haar(np.random.default_rng(1), 5, np.float64)[:, :3]           # noqa: E731
    wide = lambda: haar(np.random.default_rng(2), 5, np.float64)[:4]              # noqa: E731
    kernel = lambda: haar(np.random.default_rng(3), 18, np.float64)[:3].reshape(3, 2, 3, 3)  # noqa: E731
    cases = {}
    for m in nn.ORTHOGONAL_MAPS:
        for triv in (True, False):
            t = "triv" if triv else "notriv"
            cases[f"Linear-{m}-{t}-tall"] = (
                lambda m=m, triv=triv: nn.OrthogonalLinear(3, 5, map=m, trivialization=triv, rng=0, **f64), tall)
            cases[f"Linear-{m}-{t}-wide"] = (
                lambda m=m, triv=triv: nn.OrthogonalLinear(5, 4, map=m, trivialization=triv, rng=0, **f64), wide)
        cases[f"Conv2d-{m}-triv-kernel"] = (
            lambda m=m: nn.OrthogonalConv2d(2, 3, 3, padding=1, map=m, rng=0, **f64), kernel)
    cases["Conv2d-householder-notriv-kernel"] = (
        lambda: nn.OrthogonalConv2d(2, 3, 3, map="householder", trivialization=False, rng=0, **f64), kernel)
    return cases


def _run_right_inverse(build, W, on_device, host_W=False):
    layer = build()
    try:
        layer.right_inverse(to_dev(W) if on_device and not host_W else W)
    except NotImplementedError as exc:
        return str(exc)
    state = [layer.weight, layer.raw.data] + ([] if layer.base is None else [layer.base])
    gen = np.random.default_rng(4)
    x = gen.standard_normal((3, layer.in_features) if hasattr(layer, "in_features") else (2, 2, 5, 5))
    y = layer.forward(to_dev(x) if on_device else x)
    dy = gen.standard_normal(y.shape)
    dx = layer.backward(to_dev(dy) if on_device else dy)
    return state + [y, dx, layer.raw.grad]


@pytest.mark.parametrize("name", [_param("right_inverse", n, n) for n in _right_inverse_cases()]
                         + [_param("right_inverse", "host-W", "host-W")])
def test_right_inverse_on_device(name, monkeypatch):
    host_W = name == "host-W"
    build, make_W = _right_inverse_cases()["Linear-householder-notriv-tall" if host_W else name]
    ref = _run_right_inverse(build, make_W(), on_device=False)
    sb.install(monkeypatch)
    with backend.using("cupy"):
        ours = _run_right_inverse(build, make_W(), on_device=True, host_W=host_W)
    assert_same(ours, ref, name)


# ---------------------------------------------------------------------------------------------------------
# (c) every optimizer, three steps on an orthonormal matrix and a vector

def _optimizers():
    from orthoref import optim
    return {
        "SGD": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
        "Adam": lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.01),
        "Adam-amsgrad": lambda ps: optim.Adam(ps, lr=0.01, amsgrad=True),
        "AdamW": lambda ps: optim.AdamW(ps, lr=0.01),
        "Muon": lambda ps: optim.Muon(ps, lr=0.02),
        "RiemannianSGD": lambda ps: optim.RiemannianSGD(ps, lr=0.05, momentum=0.9),
        "RiemannianSGD-cayley": lambda ps: optim.RiemannianSGD(ps, lr=0.05, retraction="cayley"),
        "RiemannianAdam": lambda ps: optim.RiemannianAdam(ps, lr=0.01),
        "CayleySGD": lambda ps: optim.CayleySGD(ps, lr=0.05),
        "CayleyAdam": lambda ps: optim.CayleyAdam(ps, lr=0.01),
        "OGD": lambda ps: optim.OGD(ps, lr=0.05, memory=3),
    }


def _run_optimizer(make, data, grads, on_device):
    from orthoref.nn import Parameter
    conv = to_dev if on_device else (lambda a: a.copy())
    params = [Parameter(conv(d)) for d in data]
    opt = make(params)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = conv(g)
        opt.step()
    return [p.data for p in params]


@pytest.mark.parametrize("name", [_param("optimizer", n, n) for n in _optimizers()])
def test_optimizer_on_device(name, monkeypatch):
    gen = np.random.default_rng(zlib.crc32(name.encode()))
    q, _ = np.linalg.qr(gen.standard_normal((6, 4)))
    data = [q]
    grads = [[gen.standard_normal(q.shape)] for _ in range(3)]
    make = _optimizers()[name]
    ref = _run_optimizer(make, data, grads, on_device=False)
    sb.install(monkeypatch)
    with backend.using("cupy"):
        ours = _run_optimizer(make, data, grads, on_device=True)
    assert_same(ours, ref, name)


# ---------------------------------------------------------------------------------------------------------
# (d) a few train steps of the two models with Adam

def _train(model_name, x, labels, steps=3):
    from orthoref import models, nn, optim
    model = (models.mlp((8, 16, 4), rng=0, dtype=np.float64) if model_name == "mlp"
             else models.small_cnn(1, 8, 3, channels=(2, 4), rng=0, dtype=np.float64))
    opt = optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss, grad = nn.cross_entropy(model.forward(x), labels)
        model.backward(grad)
        opt.step()
        losses.append(loss)
    return losses + [p.data for p in model.parameters()]


@pytest.mark.parametrize("model_name", [_param("train", n, n) for n in ("mlp", "small_cnn")])
def test_train_steps_on_device(model_name, monkeypatch):
    gen = np.random.default_rng(7)
    x = gen.standard_normal((5, 8) if model_name == "mlp" else (5, 1, 8, 8))
    labels = gen.integers(0, 4 if model_name == "mlp" else 3, size=5)
    ref = _train(model_name, x.copy(), labels.copy())
    sb.install(monkeypatch)
    with backend.using("cupy"):
        ours = _train(model_name, to_dev(x), to_dev(labels))
    assert_same(ours, ref, model_name)


# ---------------------------------------------------------------------------------------------------------
# (e) init: the initializers create their arrays on the active backend

def _initializers():
    from orthoref import init
    table = {name: (lambda n=name: getattr(init, n)((6, 4), rng=0, dtype=np.float64))
             for name in ("orthogonal", "identity", "xavier_uniform", "xavier_normal",
                          "kaiming_uniform", "kaiming_normal", "lecun_normal", "normal", "uniform",
                          "pytorch_default")}
    table["special_orthogonal"] = lambda: init.special_orthogonal((5, 5), rng=0, dtype=np.float64)
    table["orthogonal-conv"] = lambda: init.orthogonal((4, 2, 3, 3), rng=0, dtype=np.float64)
    table["orthogonal-svd"] = lambda: init.orthogonal((6, 4), rng=0, dtype=np.float64, method="svd")
    table["delta_orthogonal"] = lambda: init.delta_orthogonal((4, 3, 3, 3), rng=0, dtype=np.float64)
    table["block_orthogonal_conv"] = lambda: init.block_orthogonal_conv((4, 4, 3, 3), rng=0,
                                                                        dtype=np.float64)
    return table


@pytest.mark.parametrize("name", [_param("init", n, n) for n in _initializers()])
def test_initializer_on_device(name, monkeypatch):
    make = _initializers()[name]
    ref = make()
    sb.install(monkeypatch)
    with backend.using("cupy"):
        ours = make()
    assert_same(ours, ref, name)


def _device_inputs():
    from orthoref import init
    gen = np.random.default_rng(3)
    a = gen.standard_normal((6, 4))
    return {"orthogonalize_gaussian": (lambda A: init.orthogonalize_gaussian(A), a),
            "orthogonalize_gaussian-svd": (lambda A: init.orthogonalize_gaussian(A, method="svd"), a)}


@pytest.mark.parametrize("name", [_param("init", n, n) for n in _device_inputs()])
def test_initializer_of_device_array(name, monkeypatch):
    fn, a = _device_inputs()[name]
    ref = fn(a.copy())
    sb.install(monkeypatch)
    with backend.using("cupy"):
        ours = fn(to_dev(a))
    assert_same(ours, ref, name)


def test_lsuv_on_device(monkeypatch):
    from orthoref import init, models

    def run(x):
        model = models.mlp((8, 16, 4), rng=0, dtype=np.float64)
        init.lsuv(model, x, rng=0)
        return [p.data for p in model.parameters()]
    x = np.random.default_rng(5).standard_normal((32, 8))
    ref = run(x.copy())
    sb.install(monkeypatch)
    with backend.using("cupy"):
        ours = run(to_dev(x))
    assert_same(ours, ref, "lsuv")


if "init:lsuv" in KNOWN_FAILURES:
    test_lsuv_on_device = pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES["init:lsuv"])(
        test_lsuv_on_device)


# ---------------------------------------------------------------------------------------------------------
# (f) analysis functions and orthogonality metrics that take arrays (results may be host floats; arrays
# must stay on the device)

def _analysis():
    from orthoref import analysis as an
    from orthoref.ortho import metrics
    gen = np.random.default_rng(11)
    w = gen.standard_normal((6, 4))
    conv = gen.standard_normal((4, 2, 3, 3))
    x = gen.standard_normal((10, 5))
    return {
        "singular_values": (an.singular_values, (w,)),
        "condition_number": (an.condition_number, (w,)),
        "effective_rank": (an.effective_rank, (w,)),
        "stable_rank": (an.stable_rank, (w,)),
        "orthogonality_error_rms": (metrics.orthogonality_error_rms, (w,)),
        "orthogonality_error_rms-conv": (metrics.orthogonality_error_rms, (conv,)),
        "orthogonality_error_2": (metrics.orthogonality_error_2, (w,)),
        "orthogonality_error_fro": (metrics.orthogonality_error_fro, (w,)),
        "filter_angles": (an.filter_angles, (conv,)),
        "low_rank": (lambda W: an.low_rank(W, rank=2), (w,)),
        "low_rank-energy": (lambda W: an.low_rank(W, energy=0.9), (w,)),
        "pca": (lambda X: tuple(an.pca(X, 2)), (x,)),
        "pca-whiten": (lambda X: tuple(an.pca(X, 2, whiten=True)), (x,)),
    }


def _model_analysis():
    from orthoref import analysis as an, models

    def jac(x):
        return an.jacobian(models.mlp((5, 7, 3), rng=0, dtype=np.float64), x)

    def jsv(x):
        return an.jacobian_singular_values(models.mlp((5, 7, 3), rng=0, dtype=np.float64), x)

    def weights(x):
        return an.weights(models.small_cnn(1, 8, 3, channels=(2, 2), rng=0, dtype=np.float64))

    def table(x):
        return an.format_layer_table(an.layer_table(models.small_cnn(1, 8, 3, channels=(2, 2), rng=0,
                                                                     dtype=np.float64)))
    return {"jacobian": jac, "jacobian_singular_values": jsv, "weights": weights, "layer_table": table}


@pytest.mark.parametrize("name", [_param("analysis", n, n) for n in _analysis()])
def test_analysis_of_device_array(name, monkeypatch):
    fn, args = _analysis()[name]
    ref = fn(*copy.deepcopy(args))
    sb.install(monkeypatch)
    with backend.using("cupy"):
        ours = fn(*to_dev(args))
    assert_same(ours, ref, name)


@pytest.mark.parametrize("name", [_param("analysis", n, n) for n in _model_analysis()])
def test_analysis_of_device_model(name, monkeypatch):
    fn = _model_analysis()[name]
    x = np.random.default_rng(2).standard_normal((4, 5))
    ref = fn(x.copy())
    sb.install(monkeypatch)
    with backend.using("cupy"):
        ours = fn(to_dev(x))
    if isinstance(ref, dict):
        assert list(ours) == list(ref)
        ours, ref = list(ours.values()), list(ref.values())
    assert_same(ours, ref, name)


# ---------------------------------------------------------------------------------------------------------
# The stand-in itself: it must refuse what CuPy refuses.

def test_strict_array_refuses_the_host(device):
    a = device.asarray(np.arange(6.0).reshape(2, 3))
    assert not isinstance(a, np.ndarray) and isinstance(a, device.ndarray)
    assert backend.get_array_module(a) is device and backend.get_array_module(np.ones(1)) is np
    for implicit in (lambda: np.asarray(a), lambda: np.array(a), lambda: a + np.ones(3),
                     lambda: np.ones(3) * a, lambda: device.maximum(a, np.ones(3)),
                     lambda: device.stack([a[0], np.ones(3)])):
        with pytest.raises(TypeError):
            implicit()
    import scipy.linalg
    with pytest.raises(TypeError):
        scipy.linalg.qr(a)
    with pytest.raises(AttributeError):
        device.errstate          # a NumPy name CuPy lacks
    with pytest.raises(AttributeError):
        device.linalg.lapack_lite
    assert isinstance(a.sum(), sb.StrictArray) and a.sum().ndim == 0 and float(a.sum()) == 15.0
    assert isinstance(backend.to_numpy(a), np.ndarray) and np.array_equal(backend.to_numpy(a), a.get())
    assert isinstance(backend.asarray(np.ones(2)), sb.StrictArray)
    assert backend.erf(a).get()[0, 0] == 0.0


def test_every_xp_name_the_package_uses_exists_in_the_stand_in():
    from test_backend import xp_names_used
    missing = []
    for name in xp_names_used():
        obj = sb.xp
        for part in name.split("."):
            if not hasattr(obj, part):
                missing.append(name)
                break
            obj = getattr(obj, part)
    assert not missing, f"names CuPy has that the stand-in lacks: {missing}"
