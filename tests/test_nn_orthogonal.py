"""OrthogonalLinear / OrthogonalConv2d: orthogonality, gradients, PyTorch conformance (its
parametrizations.orthogonal itself), right_inverse, state dicts, bad inputs."""
import zlib

import numpy as np
import pytest

from orthoref.nn.orthogonal import ORTHOGONAL_MAPS, OrthogonalConv2d, OrthogonalLinear
from orthoref.oracle import check_backward, check_layer
from orthoref.oracle.samples.orthogonal import sample_raw
from orthoref.ortho._linalg import haar
from orthoref.oracle.conformance import compare_with_torch
from orthoref.oracle.registry import get

EXACT = ("matrix_exp", "cayley", "householder", "polar")
TORCH_MAPS = ("matrix_exp", "cayley", "householder")
SHAPES = [(3, 5), (5, 3), (4, 4)]          # (out, in): wide, tall, square


def _gram_error(W):
    """``‖M Mᵀ − I‖_max`` on the smaller Gram matrix of ``M = W.reshape(out, -1)``."""
    M = W.reshape(W.shape[0], -1)
    G = M @ M.T if M.shape[0] <= M.shape[1] else M.T @ M
    return float(np.abs(G - np.eye(G.shape[0])).max())


def _layer(map, out, inn, triv, rng=0, **kw):
    layer = OrthogonalLinear(inn, out, map=map, trivialization=triv, rng=rng, dtype=np.float64, **kw)
    gen = np.random.default_rng(zlib.crc32(f"{map}{out}{inn}{triv}".encode()))
    layer.raw.data = sample_raw(gen, out, inn, map, np.float64)   # off the Householder sign kinks
    return layer


@pytest.mark.parametrize("map", EXACT)
@pytest.mark.parametrize("out,inn", SHAPES)
@pytest.mark.parametrize("triv", [True, False])
def test_weight_is_orthogonal(map, out, inn, triv):
    fresh = OrthogonalLinear(inn, out, map=map, trivialization=triv, rng=1, dtype=np.float64)
    assert fresh.weight.shape == (out, inn)
    assert _gram_error(fresh.weight) < 1e-12
    assert _gram_error(_layer(map, out, inn, triv).weight) < 1e-12


@pytest.mark.parametrize("out,inn", SHAPES)
def test_newton_schulz_is_approximately_orthogonal(out, inn):
    """NS is a polynomial approximation: 5 "jordan" steps leave singular values in about [0.7, 1.2]
    (Muon's design); the converging "cubic" steps reach the polar factor."""
    jordan = _layer("newton_schulz", out, inn, False)
    s = np.linalg.svd(jordan.weight, compute_uv=False)
    assert 0.6 < s.min() and s.max() < 1.25
    cubic = _layer("newton_schulz", out, inn, False, steps=40, coefficients="cubic")
    assert _gram_error(cubic.weight) < 1e-10
    raw = cubic.raw.data
    assert np.allclose(cubic.weight, OrthogonalLinear(inn, out, map="polar", trivialization=False,
                                                      dtype=np.float64)._matrix(raw)[0], atol=1e-10)


@pytest.mark.parametrize("map", ORTHOGONAL_MAPS)
@pytest.mark.parametrize("out,inn", [(3, 4), (4, 3)])
@pytest.mark.parametrize("triv", [True, False])
def test_gradients(map, out, inn, triv):
    layer = _layer(map, out, inn, triv, steps=3) if map == "newton_schulz" else _layer(map, out, inn, triv)
    if map == "newton_schulz":
        layer.raw.data = 3.0 * layer.raw.data
    x = np.random.default_rng(5).standard_normal((2, inn))
    check_layer(layer, x, rtol=1e-8, n_directions=3, elementwise=True, rng=0)


@pytest.mark.parametrize("map", ORTHOGONAL_MAPS)
def test_gradients_conv(map):
    layer = OrthogonalConv2d(2, 3, 2, stride=1, padding=1, map=map, rng=0, dtype=np.float64,
                             **({"steps": 3} if map == "newton_schulz" else {}))
    layer.raw.data = sample_raw(np.random.default_rng(3), 3, 8, map, np.float64)
    x = np.random.default_rng(4).standard_normal((2, 2, 3, 3))
    check_layer(layer, x, rtol=1e-8, n_directions=3, rng=0)
    assert layer.weight.shape == (3, 2, 2, 2)
    if map != "newton_schulz":
        assert _gram_error(layer.weight) < 1e-12


@pytest.mark.parametrize("name", ["nn.OrthogonalLinear", "nn.OrthogonalConv2d"])
def test_registry_entries(name):
    """What tests/test_registry.py runs for every entry (it sees these once orthoref.nn imports them)."""
    spec = get(name)
    samples = spec.sample(np.random.default_rng(zlib.crc32(name.encode())), np.float64)
    if name == "nn.OrthogonalLinear":
        assert sorted(s.kwargs["map"] for s in samples) == sorted(ORTHOGONAL_MAPS)
    for s in samples:
        check_backward(lambda *a: spec.apply(*a, **s.kwargs), s.inputs, rtol=spec.rtol, n_directions=4, rng=1)
        check_backward(lambda *a: spec.apply(*a, **s.kwargs), s.inputs, rtol=spec.rtol, n_directions=1,
                       elementwise=True, rng=2)
        pytest.importorskip("torch")
        cmp = compare_with_torch(spec, s, rng=3)
        assert cmp.output_error <= 1e-10 and cmp.grad_error <= 1e-10, (s.label, cmp)


@pytest.mark.torch
@pytest.mark.parametrize("map", TORCH_MAPS)
@pytest.mark.parametrize("out,inn", [(3, 5), (5, 3), (4, 4)])
@pytest.mark.parametrize("triv", [True, False])
def test_matches_torch_parametrizations_orthogonal(map, out, inn, triv):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.parametrizations import orthogonal
    layer = _layer(map, out, inn, triv)
    gen = np.random.default_rng(7)
    x = gen.standard_normal((2, inn))
    dy = gen.standard_normal((2, out))
    y = layer.forward(x)
    dx = layer.backward(dy)

    tl = torch.nn.Linear(inn, out, dtype=torch.float64)
    orthogonal(tl, orthogonal_map=map, use_trivialization=triv)
    with torch.no_grad():
        tl.parametrizations.weight.original.copy_(torch.from_numpy(layer.raw.data))
        tl.bias.copy_(torch.from_numpy(layer.bias.data))
        if triv:
            tl.parametrizations.weight[0].base = torch.from_numpy(layer.base.copy())
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = tl(tx)
    ty.backward(torch.from_numpy(dy))

    def rel(a, b):
        return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)
    assert rel(layer.weight, tl.weight.detach().numpy()) <= 1e-10
    assert rel(y, ty.detach().numpy()) <= 1e-10
    assert rel(dx, tx.grad.numpy()) <= 1e-10
    assert rel(layer.raw.grad, tl.parametrizations.weight.original.grad.numpy()) <= 1e-10
    assert rel(layer.bias.grad, tl.bias.grad.numpy()) <= 1e-10


@pytest.mark.parametrize("map", ORTHOGONAL_MAPS)
@pytest.mark.parametrize("out,inn", SHAPES)
@pytest.mark.parametrize("triv", [True, False])
def test_right_inverse_round_trip(map, out, inn, triv):
    n = max(out, inn)
    Q = haar(np.random.default_rng(11), n, np.float64)
    W = Q[:out, :] if out <= inn else Q[:, :inn]                    # orthonormal rows / columns
    layer = OrthogonalLinear(inn, out, map=map, trivialization=triv, rng=0, dtype=np.float64)
    if not triv and map in ("matrix_exp", "cayley"):
        with pytest.raises(NotImplementedError):
            layer.right_inverse(W)
        return
    assert layer.right_inverse(W) is layer
    if map == "newton_schulz":
        s = np.linalg.svd(layer.weight, compute_uv=False)            # NS(·) only approximates polar
        assert 0.6 < s.min() and s.max() < 1.25
    else:
        np.testing.assert_allclose(layer.weight, W, rtol=0, atol=1e-12)
    assert layer.raw.grad is None


def test_right_inverse_conv_kernel_shape():
    layer = OrthogonalConv2d(2, 3, (2, 2), map="cayley", rng=0, dtype=np.float64)
    Q = haar(np.random.default_rng(2), 8, np.float64)[:3]
    layer.right_inverse(Q.reshape(3, 2, 2, 2))
    np.testing.assert_allclose(layer.weight, Q.reshape(3, 2, 2, 2), atol=1e-12)
    layer.right_inverse(Q)                                           # the matrix form too
    np.testing.assert_allclose(layer.weight.reshape(3, -1), Q, atol=1e-12)


def test_right_inverse_rejects_bad_matrices():
    layer = OrthogonalLinear(4, 3, map="householder", dtype=np.float64, rng=0)
    Q = haar(np.random.default_rng(0), 4, np.float64)[:3]
    with pytest.raises(ValueError, match="orthogonal"):
        layer.right_inverse(Q * 1.01)
    with pytest.raises(ValueError, match="shape"):
        layer.right_inverse(Q.T)
    with pytest.raises(TypeError):
        layer.right_inverse(Q.tolist())
    with pytest.raises(TypeError):
        layer.right_inverse(np.eye(3, 4, dtype=np.int64))
    layer.right_inverse(Q + 1e-9)                                    # within 1e-6: accepted


def test_state_dict_round_trip():
    a = OrthogonalLinear(5, 3, map="matrix_exp", rng=0, dtype=np.float64)
    a.raw.data = sample_raw(np.random.default_rng(1), 3, 5, "matrix_exp", np.float64)
    state = a.state_dict()
    assert set(state) == {"raw", "bias", "base"} and state["base"].shape == (5, 5)
    b = OrthogonalLinear(5, 3, map="matrix_exp", rng=9, dtype=np.float64)
    assert not np.allclose(a.weight, b.weight)
    b.load_state_dict(state)
    x = np.random.default_rng(2).standard_normal((4, 5))
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    c = OrthogonalLinear(5, 3, map="polar", trivialization=False, rng=0)
    assert set(c.state_dict()) == {"raw", "bias"} and c.base is None


def test_trivialization_off_has_no_base_and_on_starts_from_base():
    on = OrthogonalLinear(3, 5, map="householder", rng=4, dtype=np.float64)
    np.testing.assert_allclose(on.weight, on.base[:, :3], atol=1e-14)    # raw = −I gives I[:, :k]
    off = OrthogonalLinear(3, 5, map="householder", trivialization=False, rng=4, dtype=np.float64)
    assert off.base is None and [n for n, _ in off.named_parameters()] == ["raw", "bias"]


def test_float32_and_accumulation():
    layer = OrthogonalLinear(4, 3, map="cayley", rng=0)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    y = layer.forward(x)
    assert y.dtype == np.float32 and layer.weight.dtype == np.float32
    dy = np.ones_like(y)
    layer.backward(dy)
    g = layer.raw.grad.copy()
    assert g.dtype == np.float32
    layer.forward(x)
    layer.backward(dy)
    np.testing.assert_allclose(layer.raw.grad, 2 * g, rtol=1e-6)
    assert _gram_error(layer.weight.astype(np.float64)) < 1e-5
    assert "map='cayley'" in repr(layer)


def test_bad_inputs():
    with pytest.raises(ValueError, match="map"):
        OrthogonalLinear(3, 3, map="qr")
    with pytest.raises(ValueError, match="in_features"):
        OrthogonalLinear(0, 3)
    with pytest.raises(TypeError):
        OrthogonalLinear(3, 3, dtype=np.int32)
    with pytest.raises(ValueError, match="coefficients"):
        OrthogonalLinear(3, 3, map="newton_schulz", coefficients="nope")
    with pytest.raises(ValueError, match="kernel_size"):
        OrthogonalConv2d(2, 2, 0)
    layer = OrthogonalLinear(4, 3, rng=0)
    with pytest.raises(RuntimeError):
        layer.backward(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="4"):
        layer.forward(np.ones((2, 5), np.float32))
    with pytest.raises(TypeError):
        layer.forward(np.ones((2, 4), np.float64))
    conv = OrthogonalConv2d(2, 3, 2, rng=0)
    with pytest.raises(ValueError):
        conv.forward(np.ones((1, 3, 4, 4), np.float32))
    with pytest.raises(ValueError):
        conv.forward(np.ones((1, 2, 1, 1), np.float32))


# ------------------------------------------------------------------------------ the slice view of a conv kernel
def _slice_raw(rng, map, shape):
    """A raw kernel ``(out, in, kh, kw)`` whose every slice is off the kinks (``sample_raw`` per slice)."""
    out, inn, kh, kw = shape
    return np.stack([sample_raw(rng, kh, kw, map, np.float64) for _ in range(out * inn)]).reshape(shape)


# PyTorch has no right inverse for matrix_exp/cayley without trivialization, so no such layer to compare with
@pytest.mark.parametrize("map,triv", [(m, True) for m in TORCH_MAPS] + [("householder", False)])
@pytest.mark.parametrize("kernel", [(3, 3), (2, 3), (3, 1)])
def test_slice_view_is_pytorchs_parametrization_of_a_conv_weight(map, kernel, triv):
    """``view="slices"`` against ``torch.nn.utils.parametrizations.orthogonal`` on a ``torch.nn.Conv2d``
    itself (same ``original`` and ``base``): the kernel, the output and every gradient."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.parametrizations import orthogonal
    conv = torch.nn.Conv2d(2, 3, kernel, padding=1).double()
    orthogonal(conv, "weight", orthogonal_map=map, use_trivialization=triv)
    par = conv.parametrizations.weight
    with torch.no_grad():
        par.original.copy_(torch.from_numpy(_slice_raw(np.random.default_rng(7), map, tuple(par.original.shape))))
    ours = OrthogonalConv2d(2, 3, kernel, padding=1, map=map, trivialization=triv, view="slices", rng=0,
                            dtype=np.float64)
    ours.raw.data = par.original.detach().numpy().copy()
    if triv:
        ours.base = par[0].base.detach().numpy().copy()
    ours.bias.data = conv.bias.detach().numpy().copy()
    np.testing.assert_allclose(ours.weight, conv.weight.detach().numpy(), rtol=0, atol=1e-13)
    x = np.random.default_rng(8).standard_normal((2, 2, 5, 4))
    g = np.random.default_rng(9).standard_normal(ours.forward(x).shape)
    tx = torch.from_numpy(x).requires_grad_()
    y = conv(tx)
    np.testing.assert_allclose(ours.forward(x), y.detach().numpy(), rtol=0, atol=1e-12)
    y.backward(torch.from_numpy(g))
    dx = ours.backward(g)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.raw.grad, par.original.grad.numpy(), rtol=0, atol=1e-11)
    np.testing.assert_allclose(ours.bias.grad, conv.bias.grad.numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("map", ORTHOGONAL_MAPS)
@pytest.mark.parametrize("kernel", [(3, 2), (2, 2)])
def test_slice_view_gradients_and_orthogonal_slices(map, kernel):
    kw = {"steps": 3} if map == "newton_schulz" else {}
    layer = OrthogonalConv2d(2, 3, kernel, padding=1, map=map, view="slices", rng=0, dtype=np.float64, **kw)
    layer.raw.data = _slice_raw(np.random.default_rng(3), map, layer._kshape)
    x = np.random.default_rng(4).standard_normal((2, 2, 3, 3))
    check_layer(layer, x, rtol=1e-8, n_directions=3, rng=0)
    W = layer.weight
    n = max(kernel)
    assert W.shape == (3, 2) + kernel and layer.raw.shape == W.shape and layer.base.shape == (3, 2, n, n)
    if map != "newton_schulz":
        k = min(kernel)
        S = W if kernel[0] >= kernel[1] else np.swapaxes(W, -1, -2)
        np.testing.assert_allclose(np.swapaxes(S, -1, -2) @ S, np.broadcast_to(np.eye(k), (3, 2, k, k)),
                                   rtol=0, atol=1e-12)


@pytest.mark.parametrize("map", EXACT)
@pytest.mark.parametrize("triv", [True, False])
def test_slice_view_right_inverse_and_fresh_layers(map, triv):
    fresh = OrthogonalConv2d(2, 3, (2, 3), map=map, trivialization=triv, view="slices", rng=2, dtype=np.float64)
    W = fresh.weight
    assert np.abs(W @ np.swapaxes(W, -1, -2) - np.eye(2)).max() < 1e-12        # 2x3 slices: orthonormal rows
    target = np.linalg.qr(np.random.default_rng(6).standard_normal((3, 2, 3, 2)))[0]     # (3, 2) columns
    target = np.swapaxes(target, -1, -2)                                             # 2x3, orthonormal rows
    other = OrthogonalConv2d(2, 3, (2, 3), map=map, trivialization=triv, view="slices", rng=3, dtype=np.float64)
    if not triv and map in ("matrix_exp", "cayley"):
        with pytest.raises(NotImplementedError):
            other.right_inverse(target)
        return
    other.right_inverse(target)
    np.testing.assert_allclose(other.weight, target, rtol=0, atol=1e-12)


def test_slice_view_matrix_view_unchanged_and_bad_view():
    a = OrthogonalConv2d(2, 3, 2, rng=0, dtype=np.float64)
    b = OrthogonalConv2d(2, 3, 2, rng=0, dtype=np.float64, view="matrix")
    assert a.raw.shape == (3, 8) and np.array_equal(a.weight, b.weight)
    assert "view" not in repr(a) and "view='slices'" in repr(OrthogonalConv2d(2, 3, 2, view="slices", rng=0))
    with pytest.raises(ValueError, match="OrthogonalConv2d.*view"):
        OrthogonalConv2d(2, 3, 2, view="kernel")
    layer = OrthogonalConv2d(2, 3, 2, view="slices", rng=0, dtype=np.float64)
    layer.base = np.eye(2)
    with pytest.raises(ValueError, match=r"OrthogonalConv2d: base must have shape \(3, 2, 2, 2\)"):
        layer.forward(np.zeros((1, 2, 3, 3)))
