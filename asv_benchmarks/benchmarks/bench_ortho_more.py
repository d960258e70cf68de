"""The remaining maps of ``orthoref.ortho`` (the others are in bench_ortho_decomp/iterative/stiefel):
Gram–Schmidt CGS and CGS2, Newton–Schulz with the cubic and You tables, the Parseval retraction, spectral
normalization and the Stiefel tangent projection — forward and backward, n x n (n x n/4 for the Stiefel
ones), seed 0."""
import numpy as np

from orthoref import ortho

SIZES = [64, 256, 1024]
DTYPES = ["float32", "float64"]


def _matrix(n, k, dtype, seed=0):
    return (np.random.default_rng(seed).standard_normal((n, k)) / np.sqrt(n)).astype(dtype)


def _case(method, n, dtype):
    """(forward, backward, args) with ``backward(*args, ȳ)``."""
    A = _matrix(n, n, dtype)
    if method in ("gram_schmidt_cgs", "gram_schmidt_cgs2"):
        m = method.rsplit("_", 1)[1]
        return (lambda a: ortho.gram_schmidt(a, method=m),
                lambda a, g: ortho.gram_schmidt_vjp(a, g, method=m), (A,))
    if method in ("newton_schulz_cubic", "newton_schulz_you"):
        c = method.rsplit("_", 1)[1]
        return (lambda a: ortho.newton_schulz(a, coefficients=c),
                lambda a, g: ortho.newton_schulz_vjp(a, g, coefficients=c), (A,))
    if method == "parseval_retraction":
        return ortho.parseval_retraction, ortho.parseval_retraction_vjp, (A,)
    if method == "spectral_normalize":
        u = np.random.default_rng(1).standard_normal(n).astype(dtype)
        return (lambda a: ortho.spectral_normalize(a, u=u)[0],
                lambda a, g: ortho.spectral_normalize_vjp(a, g, u=u), (A,))
    if method == "project_tangent":
        W = ortho.qr_orthogonalize(_matrix(n, max(1, n // 4), dtype, seed=2))
        G = _matrix(n, W.shape[1], dtype, seed=3)
        return (lambda g: ortho.project_tangent(W, g), lambda g, gb: ortho.project_tangent_vjp(W, g, gb), (G,))
    raise NotImplementedError(method)


class MoreProjections:
    params = (["gram_schmidt_cgs", "gram_schmidt_cgs2", "newton_schulz_cubic", "newton_schulz_you",
               "parseval_retraction", "spectral_normalize", "project_tangent"], SIZES, DTYPES)
    param_names = ["method", "n", "dtype"]
    timeout = 180

    def setup(self, method, n, dtype):
        if method.startswith("gram_schmidt") and n > 256:
            raise NotImplementedError("column-by-column Gram-Schmidt is benchmarked up to n = 256")
        self.f, self.f_vjp, self.args = _case(method, n, dtype)
        y = self.f(*self.args)
        self.gbar = np.random.default_rng(4).standard_normal(y.shape).astype(dtype)

    def time_forward(self, method, n, dtype):
        self.f(*self.args)

    def time_vjp(self, method, n, dtype):
        self.f_vjp(*self.args, self.gbar)
