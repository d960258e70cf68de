"""Train steps: one step (forward, cross-entropy, backward, Adam) of the two reference models of
``orthoref.models`` -- the MLP 784-512-256-10 and the small CNN (conv(1→32,3)-ReLU-pool2-conv(32→64,3)-
ReLU-pool2-linear(3136→10) on 1x28x28) -- on NumPy and CuPy, beside the same step in PyTorch CPU.

Built as ``orthoref.bench`` builds its ``mlp_train_step`` / ``cnn_train_step`` cases (PyTorch's default
initialization from seed 0, a Gaussian batch, labels in 0..9, ``Adam(lr=1e-3)``, ``bench.train_step``),
with the batch size and dtype as parameters; the PyTorch twin is ``bench.torch_twin`` (same weights).
"""
import numpy as np

from orthoref import backend
from orthoref.bench import CASES, torch_twin, train_step
from orthoref.models import mlp, small_cnn
from orthoref.optim import Adam

from .common import BACKENDS, DTYPES, PROFILE, Benchmark, grid, require, require_torch, sizes, sync

BATCHES = sizes([16, 64])
MODELS = {
    "mlp": (lambda gen, dt: mlp((784, 512, 256, 10), rng=gen, dtype=dt), (784,)),
    "cnn": (lambda gen, dt: small_cnn(rng=gen, dtype=dt), (1, 28, 28)),
}


def _build(kind, batch, dtype, backend_name="numpy"):
    """``(model, x_host, labels_host, x, labels)`` on ``backend_name``, all draws from seed 0."""
    build, shape = MODELS[kind]
    gen = np.random.default_rng(0)
    dt = np.dtype(dtype)
    with backend.using(backend_name):
        model = build(gen, dt)
        x_host = gen.standard_normal((batch,) + shape).astype(dt)
        labels_host = gen.integers(0, 10, size=batch)
        x, labels = backend.asarray(x_host), backend.asarray(labels_host)
    return model, x_host, labels_host, x, labels


class TrainStep(Benchmark):
    """One optimizer step of the MLP and of the CNN, ``batch`` samples."""
    params, param_names = grid(batch=BATCHES, dtype=DTYPES, backend=BACKENDS)
    timeout = 180

    def setup(self, batch, dtype, backend_name):
        require(backend_name)
        self.steps = {}
        for kind in MODELS:
            model, _, _, x, labels = _build(kind, batch, dtype, backend_name)
            opt = Adam(model.parameters(), lr=1e-3)
            self.steps[kind] = (lambda m=model, o=opt, x=x, y=labels: train_step(m, o, x, y))
            loss = float(self.steps[kind]())
            assert np.isfinite(loss) and loss > 0, (kind, loss)

    def _run(self, kind, backend_name):
        self.steps[kind]()
        sync(backend_name)

    def time_mlp_step(self, batch, dtype, backend_name):
        self._run("mlp", backend_name)

    def time_cnn_step(self, batch, dtype, backend_name):
        self._run("cnn", backend_name)

    def peakmem_mlp_step(self, batch, dtype, backend_name):
        self._run("mlp", backend_name)

    def peakmem_cnn_step(self, batch, dtype, backend_name):
        self._run("cnn", backend_name)


class TorchTrainStep(Benchmark):
    """The same steps in PyTorch CPU (same weights and batch), the lines to compare against."""
    params, param_names = grid(batch=BATCHES, dtype=DTYPES)
    timeout = 180

    def setup(self, batch, dtype):
        torch = require_torch()
        self.steps = {}
        for kind in MODELS:
            model, x_host, labels_host, _, _ = _build(kind, batch, dtype)
            tmodel = torch_twin(model)
            topt = torch.optim.Adam(tmodel.parameters(), lr=1e-3)
            tx, tlabels = torch.from_numpy(x_host), torch.from_numpy(labels_host)

            def step(tmodel=tmodel, topt=topt, tx=tx, tlabels=tlabels):
                topt.zero_grad()
                loss = torch.nn.functional.cross_entropy(tmodel(tx), tlabels)
                loss.backward()
                topt.step()
                return loss
            self.steps[kind] = step
            step()

    def time_mlp_step(self, batch, dtype):
        self.steps["mlp"]()

    def time_cnn_step(self, batch, dtype):
        self.steps["cnn"]()


class TrainStepRatio(Benchmark):
    """orthoref / PyTorch time of the same step (``orthoref.bench.run``: float32, MLP batch 128, CNN batch
    64, same threads, blocks A B A B), measured in one process (below 1: orthoref faster)."""
    params, param_names = grid(case=[name for name in CASES if name.endswith("_train_step")])
    unit = "ratio"
    timeout = 300

    def setup(self, case):
        require_torch()

    def track_ratio_vs_torch(self, case):
        import inspect

        from orthoref.bench import run
        kw = dict(repeat=2, number=1, warmup=1) if PROFILE == "fast" else dict(repeat=10, number=3, warmup=3)
        if "gemm_n" in inspect.signature(run).parameters:
            kw["gemm_n"] = 64                                   # the GEMM peak is not needed for the ratio
        return run([case], **kw)["results"][case]["ratio"]
