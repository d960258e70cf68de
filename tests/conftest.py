import zlib

import numpy as np
import pytest

from orthoref.oracle.registry import all_specs


def spec_samples(dtype=np.float64):
    """(spec, sample) pairs of the whole registry, each op's draws seeded by its name."""
    cases = []
    for spec in all_specs():
        rng = np.random.default_rng(zlib.crc32(spec.name.encode()))
        for k, sample in enumerate(spec.sample(rng, dtype)):
            cases.append(pytest.param(spec, sample, id=f"{spec.name}[{sample.label or k}]"))
    return cases


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True, scope="session")
def _torch_single_thread():
    """Tiny PyTorch calls are far slower with a thread pool on a loaded 2-core machine."""
    try:
        import torch
    except ImportError:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
