"""Make ``data/digits/digits.npz`` from scikit-learn's copy of the UCI optical-recognition digits.

Run by maintainers only (orthoref never imports scikit-learn)::

    python3 -m venv /tmp/skl
    /tmp/skl/bin/pip install scikit-learn
    /tmp/skl/bin/python data/digits/make_digits.py            # writes data/digits/digits.npz
    sha256sum data/digits/digits.npz                          # paste into README.md

The output is byte-for-byte reproducible for a given zlib: the zip entries carry a fixed timestamp and
the split does not use any random number generator (see ``split_indices``).
"""
from __future__ import annotations

import hashlib
import io
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

SPLIT_KEY = "orthoref-digits-split"
TEST_FRACTION = 0.2
OUT = Path(__file__).resolve().parent / "digits.npz"


def read_sklearn_digits():
    """Return ``(images uint8 (1797, 8, 8), labels uint8 (1797,))`` read two ways and cross-checked."""
    import sklearn
    from sklearn import datasets

    bunch = datasets.load_digits()
    csv = Path(datasets.__file__).parent / "data" / "digits.csv.gz"
    raw = np.loadtxt(csv, delimiter=",")                     # 1797 rows: 64 pixels, then the label
    assert raw.shape == (1797, 65), raw.shape
    assert np.array_equal(raw[:, :64], bunch.data) and np.array_equal(raw[:, 64], bunch.target)
    assert np.array_equal(raw, np.round(raw)) and raw[:, :64].min() == 0 and raw[:, :64].max() == 16
    print(f"scikit-learn {sklearn.__version__}: {csv}", file=sys.stderr)
    print(f"  sha256 {hashlib.sha256(csv.read_bytes()).hexdigest()}", file=sys.stderr)
    images = raw[:, :64].astype(np.uint8).reshape(-1, 8, 8)
    labels = raw[:, 64].astype(np.uint8)
    assert np.array_equal(images, bunch.images)
    return images, labels


def split_key(i: int) -> str:
    """The sort key of image ``i``: sha256 of ``"orthoref-digits-split:<i>"`` as hex."""
    return hashlib.sha256(f"{SPLIT_KEY}:{i}".encode()).hexdigest()


def split_indices(labels):
    """Stratified ~80/20 split with no RNG: within each class, sort the image indices by
    ``split_key`` and put the first ``floor(0.2 * n_class + 0.5)`` of them in the test set.

    Returns ``(train_idx, test_idx)``, both sorted ascending, as uint16.
    """
    test = []
    for c in range(10):
        members = sorted(np.flatnonzero(labels == c).tolist(), key=split_key)
        test += members[: int(np.floor(TEST_FRACTION * len(members) + 0.5))]
    test_idx = np.array(sorted(test), dtype=np.uint16)
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx).astype(np.uint16)
    return train_idx, test_idx


def write_npz(path: Path, arrays: dict) -> None:
    """``np.savez_compressed`` with fixed zip timestamps, written atomically."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arr), version=(1, 0))
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=9)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main():
    images, labels = read_sklearn_digits()
    train_idx, test_idx = split_indices(labels)
    write_npz(OUT, {"images": images, "labels": labels, "train_idx": train_idx, "test_idx": test_idx})
    print(f"train {len(train_idx)}  test {len(test_idx)}  "
          f"test per class {np.bincount(labels[test_idx], minlength=10).tolist()}", file=sys.stderr)
    print(f"{hashlib.sha256(OUT.read_bytes()).hexdigest()}  {OUT.name}  ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
