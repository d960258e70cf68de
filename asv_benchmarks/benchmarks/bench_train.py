"""Train-step benchmarks: the MLP and CNN steps of the engine, on NumPy and CuPy, beside PyTorch CPU."""
from orthoref import backend
from orthoref.bench import make_case


def _require(backend_name):
    if backend_name == "cupy" and not backend.cupy_available():
        raise NotImplementedError("CuPy or a GPU is missing")


class TrainStep:
    """One optimizer step (forward, cross-entropy, backward, Adam), float32."""
    params = (["mlp_train_step", "cnn_train_step"], ["numpy", "cupy"])
    param_names = ["case", "backend"]
    timeout = 120

    def setup(self, case, backend_name):
        _require(backend_name)
        self.step, _, _ = make_case(case, rng=0, backend=backend_name)
        self.step()

    def time_step(self, case, backend_name):
        self.step()

    def peakmem_step(self, case, backend_name):
        self.step()


class TorchTrainStep:
    """The same step in PyTorch CPU (same weights and batch), the line to compare against."""
    params = (["mlp_train_step", "cnn_train_step"],)
    param_names = ["case"]
    timeout = 120

    def setup(self, case):
        try:
            import torch  # noqa: F401
        except ImportError:
            raise NotImplementedError("PyTorch is not installed")
        _, self.step, _ = make_case(case, rng=0)
        self.step()

    def time_step(self, case):
        self.step()


class TrainStepRatio:
    """orthoref / PyTorch time of the same step, measured in one process (below 1: orthoref faster)."""
    params = (["mlp_train_step", "cnn_train_step"],)
    param_names = ["case"]
    unit = "ratio"
    timeout = 300

    def setup(self, case):
        try:
            import torch  # noqa: F401
        except ImportError:
            raise NotImplementedError("PyTorch is not installed")

    def track_ratio_vs_torch(self, case):
        from orthoref.bench import run
        return run([case], repeat=10, number=5, warmup=5)["results"][case]["ratio"]
