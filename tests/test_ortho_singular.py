"""orthoref.ortho.singular: singular-value clipping of a weight (against a dense NumPy SVD construction and
closed forms), its backward pass at ties (where PyTorch's SVD backward fails) and at kinks, the convolution
operator's clipping (against the dense operator matrix built explicitly, and the paper's own code), mclip
(against the SVD route, its accuracy against the GEMM count)."""
import numpy as np
import pytest

from orthoref.analysis import conv_singular_values
from orthoref.oracle import check_backward
from orthoref.oracle.samples.singular import with_singular_values
from orthoref.ortho import (clip_conv_singular_values, clip_singular_values, clip_singular_values_vjp, mclip,
                            mclip_vjp, polar, polar_vjp)


def _dense_clip(W, lo=None, hi=None):
    """The definition, with NumPy's own SVD: U clip(Σ) Vᵀ of W.reshape(out, -1)."""
    M = W.reshape(W.shape[0], -1).astype(np.float64)
    U, s, Vh = np.linalg.svd(M, full_matrices=False)
    s = np.clip(s, -np.inf if lo is None else lo, np.inf if hi is None else hi)
    return ((U * s) @ Vh).reshape(W.shape)


def _map(f, f_vjp, **kw):
    return lambda W: ((f(W, **kw),), lambda cts: (f_vjp(W, cts[0], **kw),))


# ---------------------------------------------------------------------------------------------------------
# clip_singular_values

@pytest.mark.parametrize("shape,lo,hi", [((6, 4), 0.5, 2.0), ((4, 7), None, 1.0), ((4, 2, 3, 3), 1 / 1.1, 1.1),
                                         ((5, 5), 0.8, None), ((7, 3), 1.0, 1.0), ((6, 4), None, None)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_clip_matches_the_dense_definition(shape, lo, hi, dtype, rng):
    W = (2 * rng.standard_normal(shape)).astype(dtype)
    Y = clip_singular_values(W, lo, hi)
    assert Y.shape == W.shape and Y.dtype == dtype
    np.testing.assert_allclose(Y, _dense_clip(W, lo, hi), atol=1e-5 if dtype == np.float32 else 1e-13)
    s = np.linalg.svd(Y.reshape(shape[0], -1).astype(np.float64), compute_uv=False)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert (lo is None or s.min() >= lo - tol) and (hi is None or s.max() <= hi + tol)


def test_clip_closed_forms(rng):
    W = rng.standard_normal((6, 4))
    np.testing.assert_allclose(clip_singular_values(W, 1.0, 1.0), polar(W), atol=1e-14)   # lo = hi: c·polar
    np.testing.assert_allclose(clip_singular_values(W, 2.5, 2.5), 2.5 * polar(W), atol=1e-13)
    s = np.linalg.svd(W, compute_uv=False)
    np.testing.assert_allclose(clip_singular_values(W, hi=s[0] + 1), W, atol=1e-14)      # nothing clipped
    eps = 0.05                                                                           # SVB: [1/(1+ε), 1+ε]
    s_svb = np.linalg.svd(clip_singular_values(W, 1 / (1 + eps), 1 + eps), compute_uv=False)
    assert s_svb.max() <= 1 + eps + 1e-14 and s_svb.min() >= 1 / (1 + eps) - 1e-14


def test_clip_at_any_scale(rng):
    W = with_singular_values(rng, (6, 4), (2.5, 1.6, 0.9, 0.3))
    Y = clip_singular_values(W, 0.5, 2.0)
    for e in (-1000, -900, 900, 1000):
        Ys = clip_singular_values(np.ldexp(W, e), np.ldexp(0.5, e), np.ldexp(2.0, e))
        np.testing.assert_allclose(np.ldexp(Ys, -e), Y, atol=1e-13)
    # tiny W, unit bounds: every σ lifted to lo, the result is lo·polar(W), representable
    np.testing.assert_allclose(clip_singular_values(np.ldexp(W, -1000), 0.5, 2.0), 0.5 * polar(W), atol=1e-13)
    np.testing.assert_allclose(clip_singular_values(np.ldexp(W, 1000), 0.5, 2.0), 2.0 * polar(W), atol=1e-13)
    W32 = (W * np.float32(1e-30)).astype(np.float32)         # float32: lo/σ = 1e30 is still representable
    np.testing.assert_allclose(clip_singular_values(W32, 0.5, 2.0), 0.5 * polar(W), atol=1e-5)


@pytest.mark.parametrize("shape,s,lo,hi", [
    ((6, 4), (2.5, 1.6, 0.9, 0.3), 0.5, 2.0), ((4, 7), (1.8, 1.2, 0.6, 0.2), None, 1.0),
    ((3, 2, 2, 2), (3.0, 1.3, 0.4), 0.7, 1.1)])
def test_clip_gradient_finite_differences(shape, s, lo, hi, rng):
    W = with_singular_values(rng, shape, s)
    check_backward(_map(clip_singular_values, clip_singular_values_vjp, lo=lo, hi=hi), (W,), rtol=1e-8,
                   n_directions=4, elementwise=True, rng=1)


@pytest.mark.parametrize("s,lo,hi,label", [
    ((1.5, 1.5, 1.5, 0.4), None, 1.0, "three equal σ above hi"),
    ((0.3, 0.3, 2.0, 2.0), 0.5, None, "pairs of equal σ, one pair lifted"),
    ((1.0, 1.0, 1.0, 1.0), 0.5, 2.0, "orthogonal W, nothing clipped"),
    ((2.0, 2.0, 0.7, 0.7), 1.0, 1.5, "every σ clipped, in tied pairs")])
def test_clip_gradient_at_repeated_singular_values(s, lo, hi, label, rng):
    """A spectral function is differentiable at ties where g is smooth: finite differences agree (the torch
    twin's SVD backward divides by σ_i² − σ_j² and gives NaN here)."""
    W = with_singular_values(rng, (7, 4), s)
    check_backward(_map(clip_singular_values, clip_singular_values_vjp, lo=lo, hi=hi), (W,), rtol=1e-8,
                   n_directions=6, rng=2)
    g = clip_singular_values_vjp(W, rng.standard_normal(W.shape), lo, hi)
    assert np.isfinite(g).all()


@pytest.mark.torch
def test_clip_torch_twin_breaks_at_ties_where_we_do_not(rng):
    torch = pytest.importorskip("torch")
    from orthoref.oracle.torch_twins import torch_clip_singular_values
    W = with_singular_values(rng, (7, 4), (1.5, 1.5, 1.5, 0.4))
    G = rng.standard_normal(W.shape)
    tW = torch.tensor(W, requires_grad=True)
    torch_clip_singular_values(tW, hi=1.0)[0].backward(torch.from_numpy(G))
    ours = clip_singular_values_vjp(W, G, hi=1.0)
    assert np.isfinite(ours).all()
    assert not np.allclose(tW.grad.numpy(), ours, atol=1e-6)        # NaN or garbage: torch's 1/(σ_i² − σ_j²)


def test_clip_gradient_closed_forms(rng):
    """Identity piece: the gradient is grad_out; constant piece c: c times the polar factor's gradient."""
    W = with_singular_values(rng, (6, 4), (2.5, 1.6, 0.9, 0.3))
    G = rng.standard_normal(W.shape)
    np.testing.assert_allclose(clip_singular_values_vjp(W, G, 0.1, 3.0), G, atol=1e-13)
    np.testing.assert_allclose(clip_singular_values_vjp(W, G, hi=0.2), 0.2 * polar_vjp(W, G), atol=1e-13)
    np.testing.assert_allclose(clip_singular_values_vjp(W, G, 1.3, 1.3), 1.3 * polar_vjp(W, G), atol=1e-13)
    np.testing.assert_allclose(clip_singular_values_vjp(W, G, lo=3.0), 3.0 * polar_vjp(W, G), atol=1e-12)


def test_clip_gradient_raises_on_a_kink_only(rng):
    W = with_singular_values(rng, (6, 4), (2.5, 1.6, 0.9, 0.3))
    G = rng.standard_normal(W.shape)
    with pytest.raises(ValueError, match="clip_singular_values_vjp: singular value σ_1 of W lies on the clip "
                                         "bound hi = 1.6"):
        clip_singular_values_vjp(W, G, hi=1.6)
    with pytest.raises(ValueError, match="lo = 0.9"):
        clip_singular_values_vjp(W, G, lo=0.9 * (1 + 1e-15))
    clip_singular_values_vjp(W, G, lo=0.9 * (1 + 1e-9))            # beyond rounding: the lifted side
    clip_singular_values(W, hi=1.6)                                 # the forward map is continuous there


# ---------------------------------------------------------------------------------------------------------
# clip_conv_singular_values: the dense operator, built explicitly on small sizes.

def dense_operator(K, n, m):
    """The circular cross-correlation (PyTorch's conv2d with circular padding) as a (c_out·n·m) x (c_in·n·m)
    matrix: y[o, p, q] = Σ K[o, i, a, b] x[i, (p + a) mod n, (q + b) mod m]."""
    c_out, c_in, kh, kw = K.shape
    T = np.zeros((c_out, n, m, c_in, n, m))
    for p in range(n):
        for q in range(m):
            for a in range(kh):
                for b in range(kw):
                    T[:, p, q, :, (p + a) % n, (q + b) % m] += K[:, :, a, b]
    return T.reshape(c_out * n * m, c_in * n * m)


def _operator_sv(K, n, m):
    return np.linalg.svd(dense_operator(K.astype(np.float64), n, m), compute_uv=False)


@pytest.mark.parametrize("channels,kernel,image", [((3, 2), (3, 3), (5, 6)), ((2, 4), (2, 3), (4, 4)),
                                                   ((3, 3), (3, 3), (4, 5))])
def test_clip_conv_clips_the_operator_exactly_before_the_projection(channels, kernel, image, rng):
    K = rng.standard_normal(channels + kernel)
    n, m = image
    assert np.allclose(np.sort(_operator_sv(K, n, m))[::-1], conv_singular_values(K, image), atol=1e-12)
    full = clip_conv_singular_values(K, image, lo=0.5, hi=1.5, project=False)
    assert full.shape == channels + image
    s = _operator_sv(full, n, m)
    assert s.min() >= 0.5 - 1e-12 and s.max() <= 1.5 + 1e-12
    # and the clipped kernel's operator is the clip of the operator (the definition, one dense SVD)
    D = dense_operator(K, n, m)
    U, sd, Vh = np.linalg.svd(D, full_matrices=False)
    np.testing.assert_allclose(dense_operator(full, n, m), (U * np.clip(sd, 0.5, 1.5)) @ Vh, atol=1e-12)


def test_clip_conv_projection_moves_the_singular_values_and_repeating_helps(rng):
    """The paper's clip-then-project: the projected kernel's operator leaves [lo, hi] again; repeating the step
    brings σ_max down towards hi (monotonically here)."""
    K = rng.standard_normal((3, 2, 3, 3))
    n, m, hi = 5, 6, 2.0
    K1 = clip_conv_singular_values(K, (n, m), hi=hi)
    assert K1.shape == K.shape
    assert _operator_sv(K1, n, m).max() > hi + 1e-3                # moved again by the projection
    sig = [_operator_sv(K, n, m).max()]
    Kp = K
    for _ in range(8):
        Kp = clip_conv_singular_values(Kp, (n, m), hi=hi)
        sig.append(_operator_sv(Kp, n, m).max())
    print("\noperator σ_max over repeated clip-and-project steps (hi = 2): " + ", ".join(f"{v:.3f}" for v in sig))
    assert all(b <= a + 1e-12 for a, b in zip(sig, sig[1:]))
    assert sig[-1] - hi < 0.1 * (sig[1] - hi) and sig[-1] < 2.1


def test_clip_conv_matches_the_papers_code(rng):
    """Sedghi, Gupta & Long's Clip_OperatorNorm (TensorFlow layout (kh, kw, c_in, c_out), NumPy), transcribed:
    the same kernel in PyTorch layout."""
    def clip_operator_norm(kernel, input_shape, clip_to):
        transform_coefficients = np.fft.fft2(kernel, input_shape, axes=[0, 1])
        U, D, V = np.linalg.svd(transform_coefficients, compute_uv=True, full_matrices=False)
        D_clipped = np.minimum(D, clip_to)
        if kernel.shape[2] > kernel.shape[3]:
            clipped_transform_coefficients = np.matmul(U, D_clipped[..., None] * V)
        else:
            clipped_transform_coefficients = np.matmul(U * D_clipped[..., None, :], V)
        clipped_kernel = np.fft.ifft2(clipped_transform_coefficients, axes=[0, 1]).real
        return clipped_kernel[np.ix_(*[range(d) for d in kernel.shape])]

    for c_out, c_in in ((3, 2), (2, 3)):
        K = rng.standard_normal((c_out, c_in, 3, 3))
        theirs = clip_operator_norm(K.transpose(2, 3, 1, 0), (6, 5), 1.0)
        np.testing.assert_allclose(clip_conv_singular_values(K, (6, 5), hi=1.0), theirs.transpose(3, 2, 0, 1),
                                   atol=1e-13)


def test_clip_conv_float32_and_bounds(rng):
    K = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    out = clip_conv_singular_values(K, (4, 4), lo=0.3, hi=1.0)
    assert out.dtype == np.float32 and out.shape == K.shape
    np.testing.assert_allclose(out, clip_conv_singular_values(K.astype(np.float64), (4, 4), 0.3, 1.0), atol=1e-6)
    np.testing.assert_allclose(clip_conv_singular_values(K, (4, 4)), K, atol=1e-6)       # no bounds: K itself


# ---------------------------------------------------------------------------------------------------------
# mclip

@pytest.mark.parametrize("shape", [(6, 4), (4, 9), (3, 2, 3, 3)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mclip_is_the_clip_at_one(shape, dtype, rng):
    W = with_singular_values(rng, shape, (2.5, 1.7, 0.8, 0.3)[:min(shape[0], int(np.prod(shape[1:])))], dtype)
    ref = _dense_clip(W, hi=1.0)
    tol = 2e-6 if dtype == np.float32 else 1e-13
    for method in ("newton_schulz", "svd"):
        Y = mclip(W, method=method)
        assert Y.dtype == dtype and Y.shape == W.shape
        np.testing.assert_allclose(Y, ref, atol=tol)


def test_mclip_keeps_the_small_singular_values(rng):
    """σ < 1 comes out to rounding even where msign(W) has not converged (σ/‖W‖_F = 1e-4 after 8 steps)."""
    W = with_singular_values(rng, (8, 4), (0.1, 0.01, 1e-3, 1e-5))
    Q_err = np.abs(_msign_ns(W) - polar(W)).max()
    assert Q_err > 1e-3                                           # the polar factor is far off ...
    np.testing.assert_allclose(mclip(W), W, atol=2e-16)           # ... and cancels out


def _msign_ns(W):
    from orthoref.ortho import newton_schulz
    return newton_schulz(W, steps=8, coefficients="polar_express", eps=0.0)


def test_mclip_near_one_errs_by_at_most_the_distance_to_one(rng):
    """A σ whose σ² − 1 is tiny next to ‖WᵀW − I‖_F keeps an unresolved sign: error <= |σ − 1|, gone with more
    steps (the docstring's example: σ = 1.005 next to σ_max = 6.5)."""
    W = with_singular_values(rng, (6, 4), (6.5, 4.0, 2.6, 1.005))
    err8 = np.abs(mclip(W) - mclip(W, method="svd")).max()
    assert 1e-6 < err8 <= 0.005
    assert np.abs(mclip(W, steps=12) - mclip(W, method="svd")).max() < 1e-13


def test_mclip_accuracy_against_the_gemm_count(rng):
    """The docstring's table: max |mclip − mclip_svd| per step count (6·steps + 2 GEMMs)."""
    spectra = {"[0.1, 3]": np.linspace(0.1, 3, 32), "[0.01, 10]": np.logspace(-2, 1, 32),
               "[0.001, 3.2]": np.logspace(-3, 0.5, 32)}
    lines, worst = ["steps  GEMMs  " + "  ".join(f"{k:>13}" for k in spectra)], {}
    for steps in (4, 5, 6, 8, 10):
        errs = []
        for s in spectra.values():
            W = with_singular_values(np.random.default_rng(0), (64, 32), s)
            errs.append(float(np.abs(mclip(W, steps=steps) - mclip(W, method="svd")).max()))
        worst[steps] = max(errs)
        lines.append(f"{steps:>5}  {6 * steps + 2:>5}  " + "  ".join(f"{e:>13.1e}" for e in errs))
    print("\nmclip (Polar Express) vs the SVD route, float64, 64 x 32:\n" + "\n".join(lines))
    assert worst[4] > 0.1 and worst[5] > 1e-2 and worst[6] < 1e-3 and worst[8] < 1e-13 and worst[10] < 1e-13


def test_mclip_gradients(rng):
    W = with_singular_values(rng, (5, 3), (1.7, 0.8, 0.4))
    G = rng.standard_normal(W.shape)
    np.testing.assert_allclose(mclip_vjp(W, G, method="svd"), clip_singular_values_vjp(W, G, hi=1.0), atol=1e-15)
    # the unrolled gradient of the converged iteration is the gradient of the exact map
    np.testing.assert_allclose(mclip_vjp(W, G, steps=12), mclip_vjp(W, G, method="svd"), atol=1e-10)
    for kw in ({}, {"steps": 3, "coefficients": "cubic"}, {"method": "svd"}):
        check_backward(_map(mclip, mclip_vjp, **kw), (W,), rtol=1e-8, n_directions=4, elementwise=True, rng=3)


def test_mclip_at_extreme_scales(rng):
    """Absolute accuracy eps·max(1, σ_max): tiny W to rounding of 1; a W whose cancellation would exceed 1% is
    refused (the SVD route works at any scale)."""
    W = with_singular_values(rng, (6, 4), (2.5, 1.6, 0.9, 0.3))
    tiny = np.ldexp(W, -1040)                                    # subnormal: every σ < 1
    assert np.abs(mclip(tiny) - tiny).max() <= 1e-15
    np.testing.assert_allclose(mclip(W * 1e6), polar(W), atol=1e-9)
    for big, dtype in ((1e14, np.float64), (1e5, np.float32)):
        with pytest.raises(ValueError, match="mclip: W is too large for method='newton_schulz'"):
            mclip((W * big).astype(dtype))
        np.testing.assert_allclose(mclip((W * big).astype(dtype), method="svd"), polar(W), atol=1e-6)
    np.testing.assert_allclose(mclip(W * 1e300, method="svd"), polar(W), atol=1e-13)
