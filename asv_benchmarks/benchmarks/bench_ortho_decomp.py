"""Orthogonalization by decomposition (``orthoref.ortho.decomp``): forward map and its vjp on a square
``n x n`` matrix, and the orthogonality error of the result in float64; PyTorch's routes beside them."""
import numpy as np

from orthoref.ortho import decomp

NAMES = ["qr", "polar", "gram_schmidt_mgs", "householder"]
SIZES = [64, 256, 1024]
DTYPES = ["float32", "float64"]


def _case(name, n, dtype):
    """``(forward, vjp, inputs)`` for one point: ``A`` Gaussian / √n (seed 0); Householder inputs from
    ``geqrf`` of that ``A``. ``vjp`` takes the output cotangent ``G``."""
    gen = np.random.default_rng(0)
    A = (gen.standard_normal((n, n)) / np.sqrt(n)).astype(dtype)
    if name == "householder":
        from scipy.linalg import lapack
        qr, tau, _, _ = lapack.get_lapack_funcs("geqrf", (A,))(A)
        return (lambda: decomp.householder_product(qr, tau),
                lambda G: decomp.householder_product_vjp(qr, tau, G))
    f, fv = {"qr": (decomp.qr_orthogonalize, decomp.qr_orthogonalize_vjp),
             "polar": (decomp.polar, decomp.polar_vjp),
             "gram_schmidt_mgs": (decomp.gram_schmidt, decomp.gram_schmidt_vjp)}[name]
    return (lambda: f(A)), (lambda G: fv(A, G))


class Projections:
    """``Q = f(A)`` and ``Ā = f_vjp(A, Ḡ)`` on NumPy/SciPy (the BLAS threads as configured)."""
    params = (NAMES, SIZES, DTYPES)
    param_names = ["method", "n", "dtype"]
    timeout = 300

    def setup(self, name, n, dtype):
        if name == "gram_schmidt_mgs" and n > 256:
            raise NotImplementedError("Gram–Schmidt is a column loop (BLAS-2): skipped at n > 256")
        self.forward, self.vjp = _case(name, n, dtype)
        Q = self.forward()
        self.G = np.random.default_rng(1).standard_normal(Q.shape).astype(dtype)

    def time_forward(self, name, n, dtype):
        self.forward()

    def time_vjp(self, name, n, dtype):
        self.vjp(self.G)

    def track_orthogonality_error(self, name, n, dtype):
        """``‖QᵀQ − I‖_2`` of the result, evaluated in float64."""
        return decomp.orthogonality_error(self.forward())

    track_orthogonality_error.unit = "norm"


class TorchProjections:
    """PyTorch's routes (``torch.linalg.qr`` + sign fix; ``U @ Vh`` from ``torch.linalg.svd``;
    ``torch.linalg.householder_product``): forward, and forward + ``backward`` -- the lines to compare
    ``Projections`` against."""
    params = (["qr", "polar", "householder"], SIZES, DTYPES)
    param_names = ["method", "n", "dtype"]
    timeout = 300

    def setup(self, name, n, dtype):
        try:
            import torch
        except ImportError:
            raise NotImplementedError("PyTorch is not installed")
        self.torch = torch
        gen = np.random.default_rng(0)
        A = (gen.standard_normal((n, n)) / np.sqrt(n)).astype(dtype)
        if name == "householder":
            from scipy.linalg import lapack
            qr, tau, _, _ = lapack.get_lapack_funcs("geqrf", (A,))(A)
            self.inputs = [torch.from_numpy(qr), torch.from_numpy(tau)]
            self.fn = torch.linalg.householder_product
        else:
            self.inputs = [torch.from_numpy(A)]
            self.fn = {"qr": lambda X: decomp._torch_qr(X)[0], "polar": lambda X: decomp._torch_polar(X)[0]}[name]
        self.G = torch.from_numpy(np.random.default_rng(1).standard_normal((n, n)).astype(dtype))
        self.leaves = [x.clone().requires_grad_(True) for x in self.inputs]

    def time_forward(self, name, n, dtype):
        with self.torch.no_grad():
            self.fn(*self.inputs)

    def time_forward_backward(self, name, n, dtype):
        self.torch.autograd.grad(self.fn(*self.leaves), self.leaves, self.G)
