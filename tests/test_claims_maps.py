"""The README's claims about other libraries' maps and initializers, tested against those libraries:
``ortho.cayley`` is the Cayley map of ``torch.nn.utils.parametrizations.orthogonal(orthogonal_map="cayley")``
and of current geotorch (``geotorch.so.cayley_map``), value and gradient; ``init.special_orthogonal`` is
geotorch's ``uniform_init_`` on a square matrix (the same draw gives the same rotation); geotorch and
PyTorch's ``orthogonal`` parametrization read a conv weight as a batch of ``kh × kw`` matrices. float64, to
1e-12; each test skips cleanly when its library is missing and names the library's version in its id.
"""
from importlib import metadata

import numpy as np
import pytest

from orthoref import init
from orthoref.ortho import cayley, cayley_vjp

RTOL = 1e-12


def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "missing"


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def _skew(n, seed):
    X = np.random.default_rng(seed).standard_normal((n, n))
    return X - X.T


@pytest.mark.parametrize("n", [2, 5, 8])
def test_cayley_matches_torch_orthogonal_parametrization(n):
    torch = pytest.importorskip("torch")
    from torch.nn.utils import parametrizations
    A = _skew(n, n)
    G = np.random.default_rng(100 + n).standard_normal((n, n))
    layer = torch.nn.Linear(n, n, bias=False).double()
    parametrizations.orthogonal(layer, "weight", orthogonal_map="cayley", use_trivialization=False)
    original = layer.parametrizations.weight.original
    with torch.no_grad():
        original.copy_(torch.tensor(np.tril(A, -1)))       # its A = tril(X) − tril(X)ᵀ is ours
    Q = layer.weight
    (Q * torch.tensor(G)).sum().backward()
    assert _rel(cayley(A), Q.detach().numpy()) <= RTOL
    Ab = cayley_vjp(A, G)                                  # the chain rule through A = tril(X) − tril(X)ᵀ
    assert _rel(np.tril(Ab - Ab.T), original.grad.numpy()) <= RTOL


@pytest.mark.parametrize("version", [_version("geotorch")], ids=lambda v: f"geotorch-{v}")
@pytest.mark.parametrize("shape", [(5, 5), (3, 4, 4)])
def test_cayley_matches_geotorch_cayley_map(version, shape):
    torch = pytest.importorskip("torch")
    so = pytest.importorskip("geotorch.so")
    rng = np.random.default_rng(len(shape))
    X = rng.standard_normal(shape)
    A = X - np.swapaxes(X, -1, -2)
    G = rng.standard_normal(shape)
    At = torch.tensor(A, requires_grad=True)
    Q = so.cayley_map(At)
    (Q * torch.tensor(G)).sum().backward()
    assert _rel(cayley(A), Q.detach().numpy()) <= RTOL
    assert _rel(cayley_vjp(A, G), At.grad.numpy()) <= RTOL      # as a map of any square matrix


@pytest.mark.parametrize("version", [_version("geotorch")], ids=lambda v: f"geotorch-{v}")
@pytest.mark.parametrize("n,seed", [(4, 0), (4, 1), (6, 2), (6, 3), (7, 4)])
def test_special_orthogonal_is_geotorchs_uniform_init_on_the_same_draw(version, n, seed, monkeypatch):
    torch = pytest.importorskip("torch")
    so = pytest.importorskip("geotorch.so")
    torch.manual_seed(seed)
    theirs = so.uniform_init_(torch.empty(n, n, dtype=torch.float64)).numpy()
    torch.manual_seed(seed)                                 # the draw uniform_init_ made, given to ours
    draw = torch.empty(n, n, dtype=torch.float64).normal_(0, 1).numpy()
    monkeypatch.setattr(init, "_draw_gaussian", lambda rows, cols, gen, dt: draw.astype(dt))
    ours = init.special_orthogonal((n, n), rng=0, dtype=np.float64)
    assert np.linalg.det(ours) > 0
    assert _rel(ours, theirs) <= RTOL


@pytest.mark.parametrize("version", [_version("geotorch")], ids=lambda v: f"geotorch-{v}")
def test_geotorch_and_torch_read_a_conv_weight_as_a_batch_of_kernel_matrices(version):
    torch = pytest.importorskip("torch")
    geotorch = pytest.importorskip("geotorch")
    from torch.nn.utils import parametrizations
    torch.manual_seed(0)
    for register in (lambda m: geotorch.orthogonal(m, "weight"), lambda m: parametrizations.orthogonal(m, "weight")):
        conv = register(torch.nn.Conv2d(2, 3, 3).double())
        W = conv.weight.detach().numpy()                    # (3, 2, 3, 3)
        gram = np.einsum("ocij,ocik->ocjk", W, W)           # each 3 × 3 kernel slice's WᵀW
        assert np.abs(gram - np.eye(3)).max() < 1e-12
        M = W.reshape(3, -1)                                # not the (out, in·kh·kw) view ours uses
        assert np.abs(M @ M.T - np.eye(3)).max() > 1e-3
