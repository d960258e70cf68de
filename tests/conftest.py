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
