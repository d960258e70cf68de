"""Tests of orthoref.data: the bundled digits, and the IDX (MNIST-format) reader and writer."""
import gzip
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from orthoref import data
from orthoref.data import load_digits, load_idx, load_idx_dir, write_idx

DIGITS_DIR = Path(__file__).resolve().parent.parent / "data" / "digits"
CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


# ----------------------------------------------------------------------------------------------------
# Bundled digits
# ----------------------------------------------------------------------------------------------------

def _stored_split():
    with np.load(data.digits_path()) as npz:
        return npz["train_idx"].astype(np.int64), npz["test_idx"].astype(np.int64)


@pytest.mark.parametrize("split, n", [("train", 1438), ("test", 359), ("all", 1797)])
def test_digits_shapes_dtypes_ranges(split, n):
    X, y = load_digits(split)
    assert X.shape == (n, 64) and X.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    np.testing.assert_array_equal(X * 16, np.round(X * 16))      # multiples of 1/16
    assert set(np.unique(y).tolist()) == set(range(10))


def test_digits_options():
    X, y = load_digits("test", dtype=np.float64, flatten=False)
    assert X.shape == (359, 1, 8, 8) and X.dtype == np.float64
    Xraw, yraw = load_digits("test", dtype=np.uint8, scale=False)
    assert Xraw.dtype == np.uint8 and Xraw.max() == 16
    np.testing.assert_array_equal(X.reshape(359, 64) * 16, Xraw)
    np.testing.assert_array_equal(y, yraw)


def test_digits_class_counts_and_stratification():
    _, y_all = load_digits("all")
    assert np.bincount(y_all).tolist() == CLASS_COUNTS
    _, y_test = load_digits("test")
    _, y_train = load_digits("train")
    expected_test = [int(np.floor(0.2 * c + 0.5)) for c in CLASS_COUNTS]
    assert np.bincount(y_test, minlength=10).tolist() == expected_test
    assert (np.bincount(y_train, minlength=10) + np.bincount(y_test, minlength=10)).tolist() \
        == CLASS_COUNTS


def test_digits_split_disjoint_covering_and_consistent():
    train_idx, test_idx = _stored_split()
    assert len(np.intersect1d(train_idx, test_idx)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, test_idx])), np.arange(1797))
    X_all, y_all = load_digits("all")
    for split, idx in (("train", train_idx), ("test", test_idx)):
        X, y = load_digits(split)
        np.testing.assert_array_equal(X, X_all[idx])
        np.testing.assert_array_equal(y, y_all[idx])


def test_digits_split_follows_documented_rule():
    """The README's rule: within each class, sort by sha256("orthoref-digits-split:<i>"), first 20%."""
    _, y_all = load_digits("all")
    test = []
    for c in range(10):
        members = sorted(np.flatnonzero(y_all == c).tolist(),
                         key=lambda i: hashlib.sha256(f"orthoref-digits-split:{i}".encode()).hexdigest())
        test += members[: int(np.floor(0.2 * len(members) + 0.5))]
    np.testing.assert_array_equal(_stored_split()[1], np.sort(test))


def test_digits_deterministic_and_fresh_arrays():
    X1, y1 = load_digits("train")
    X1[:] = -1.0
    y1[:] = -1
    X2, y2 = load_digits("train")
    X3, y3 = load_digits("train")
    assert X2.min() == 0.0 and y2.min() == 0                     # mutation did not leak into the cache
    np.testing.assert_array_equal(X2, X3)
    np.testing.assert_array_equal(y2, y3)


def test_digits_sha256_matches_readme():
    readme = (DIGITS_DIR / "README.md").read_text()
    match = re.search(r"^([0-9a-f]{64})  digits\.npz$", readme, flags=re.M)
    assert match, "README.md has no `<sha256>  digits.npz` line"
    assert hashlib.sha256((DIGITS_DIR / "digits.npz").read_bytes()).hexdigest() == match.group(1)
    assert data.digits_path() == DIGITS_DIR / "digits.npz"


def test_digits_bad_arguments():
    with pytest.raises(ValueError, match="split must be one of"):
        load_digits("validation")
    with pytest.raises(TypeError, match="load_digits: dtype must be a floating dtype"):
        load_digits(dtype=np.int32)
    with pytest.raises(TypeError, match="load_digits: dtype must be a numpy dtype"):
        load_digits(dtype="not-a-dtype")


def test_digits_missing_file_says_where_it_looked(tmp_path, monkeypatch):
    looked = (tmp_path / "a" / "digits.npz", tmp_path / "b" / "digits.npz")
    monkeypatch.setattr(data, "DIGITS_SEARCH_PATHS", looked)
    with pytest.raises(FileNotFoundError) as info:
        load_digits()
    assert str(looked[0]) in str(info.value) and str(looked[1]) in str(info.value)


def test_digits_does_not_need_sklearn():
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "from orthoref.data import load_digits\n"
            "X, y = load_digits('all'); assert X.shape == (1797, 64)")
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------------------------------
# IDX read / write
# ----------------------------------------------------------------------------------------------------

IDX_CASES = [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32),
             (0x0D, np.float32), (0x0E, np.float64)]


def _sample(dtype, shape, rng):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype) * 1e3
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


def _raw_idx(code, dims, payload=b""):
    return bytes([0, 0, code, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims) + payload


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("code, dtype", IDX_CASES, ids=[np.dtype(d).name for _, d in IDX_CASES])
@pytest.mark.parametrize("shape", [(7,), (3, 5, 4), (2, 1, 3, 2)])
def test_idx_round_trip(tmp_path, rng, code, dtype, shape, suffix):
    array = _sample(dtype, shape, rng)
    path = write_idx(tmp_path / f"x{suffix}", array)
    raw = path.read_bytes()
    if suffix:
        assert raw[:2] == b"\x1f\x8b"
        raw = gzip.decompress(raw)
    assert raw[:4] == bytes([0, 0, code, len(shape)])
    out = load_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative and out.shape == shape
    assert out.flags.writeable
    np.testing.assert_array_equal(out, array)


def test_idx_bytes_are_big_endian(tmp_path):
    expected = _raw_idx(0x0B, (2,), b"\x00\x01\xff\xfe")         # int16 [1, -2]
    write_idx(tmp_path / "a", np.array([1, -2], dtype="<i2"))
    assert (tmp_path / "a").read_bytes() == expected
    (tmp_path / "b").write_bytes(_raw_idx(0x0D, (1, 2), np.array([1.5, -3.0], ">f4").tobytes()))
    np.testing.assert_array_equal(load_idx(tmp_path / "b"), [[1.5, -3.0]])


def test_idx_empty_dimension(tmp_path):
    write_idx(tmp_path / "e", np.zeros((0, 28, 28), np.uint8))
    assert load_idx(tmp_path / "e").shape == (0, 28, 28)


def test_idx_gzip_detected_by_magic_not_suffix(tmp_path, rng):
    array = _sample(np.uint8, (4, 3, 3), rng)
    write_idx(tmp_path / "a.gz", array)
    os.replace(tmp_path / "a.gz", tmp_path / "a-no-suffix")
    np.testing.assert_array_equal(load_idx(tmp_path / "a-no-suffix"), array)
    write_idx(tmp_path / "raw", array)
    os.replace(tmp_path / "raw", tmp_path / "raw-named.gz")      # a raw file with a .gz name
    np.testing.assert_array_equal(load_idx(tmp_path / "raw-named.gz"), array)


def test_write_idx_rejects_what_idx_cannot_store(tmp_path):
    with pytest.raises(TypeError, match="write_idx: array dtype .*int64"):
        write_idx(tmp_path / "a", np.zeros(3, np.int64))
    with pytest.raises(TypeError, match="write_idx: array dtype .*bool"):
        write_idx(tmp_path / "a", np.zeros(3, bool))
    with pytest.raises(ValueError, match="write_idx: array must have 1 to (32|64) dimensions"):
        write_idx(tmp_path / "a", np.float32(1.0))
    assert list(tmp_path.iterdir()) == []


def test_write_idx_atomic_replace_and_no_leftovers(tmp_path, monkeypatch):
    path = tmp_path / "x.gz"
    write_idx(path, np.arange(5, dtype=np.uint8))
    write_idx(path, np.arange(3, dtype=np.uint8))
    np.testing.assert_array_equal(load_idx(path), [0, 1, 2])
    assert [p.name for p in tmp_path.iterdir()] == ["x.gz"]

    def failing_fsync(fd):
        raise OSError("disk on fire")
    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk on fire"):
        write_idx(path, np.arange(9, dtype=np.uint8))
    monkeypatch.undo()
    np.testing.assert_array_equal(load_idx(path), [0, 1, 2])     # old file untouched
    assert [p.name for p in tmp_path.iterdir()] == ["x.gz"]      # temp file removed


def _flip(content, i):
    out = bytearray(content)
    out[i] ^= 0xFF
    return bytes(out)


GOOD = _raw_idx(0x08, (2, 3), bytes(range(6)))
CORRUPTIONS = {
    "bad-magic-byte0": (b"\x01" + GOOD[1:], "bad IDX magic number"),
    "bad-magic-byte1": (GOOD[:1] + b"\x08" + GOOD[2:], "bad IDX magic number"),
    "unknown-dtype": (GOOD[:2] + b"\x0a" + GOOD[3:], "unknown IDX dtype code 0x0A"),
    "zero-ndim": (GOOD[:3] + b"\x00" + GOOD[4:], "0 dimensions"),
    "empty-file": (b"", "truncated IDX header"),
    "short-header": (GOOD[:9], "truncated IDX header"),
    "truncated-payload": (GOOD[:-1], "truncated IDX payload"),
    "no-payload": (GOOD[:12], "truncated IDX payload"),
    "trailing-garbage": (GOOD + b"\x00", "1 unexpected trailing bytes"),
    "negative-dim": (_raw_idx(0x08, (2,))[:4] + b"\xff\xff\xff\xfe", "negative dimension"),
    "corrupt-gzip": (gzip.compress(GOOD, mtime=0)[:-6], "corrupt gzip"),
    "gzip-bad-crc": (_flip(gzip.compress(GOOD, mtime=0), -8), "corrupt gzip"),
    "gzip-trailing-garbage": (gzip.compress(GOOD, mtime=0) + b"junk", "corrupt gzip"),
    "gzip-of-bad-magic": (gzip.compress(b"\x01" + GOOD[1:]), "bad IDX magic number"),
}


def test_good_bytes_load(tmp_path):
    """The uncorrupted file the corruption cases start from is valid."""
    (tmp_path / "good").write_bytes(GOOD)
    np.testing.assert_array_equal(load_idx(tmp_path / "good"), np.arange(6).reshape(2, 3))


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_idx_corruption_raises_naming_file_and_problem(tmp_path, name):
    content, problem = CORRUPTIONS[name]
    path = tmp_path / f"{name}-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        load_idx(path)
    assert str(path) in str(info.value)
    assert problem in str(info.value)


def test_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope"))):
        load_idx(tmp_path / "nope")
    with pytest.raises(ValueError, match="expected an IDX file"):
        load_idx(tmp_path)


# ----------------------------------------------------------------------------------------------------
# load_idx_dir
# ----------------------------------------------------------------------------------------------------

STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _write_set(directory, rng, n_train=6, n_test=4, hw=(5, 3), gz=(True, False, False, True)):
    k = min(n_train, 10)                  # training labels are exactly 0..k-1 (load_idx_dir's rule)
    arrays = (rng.integers(0, 256, (n_train, *hw), dtype=np.uint8),
              rng.permutation(np.arange(n_train) % k).astype(np.uint8),
              rng.integers(0, 256, (n_test, *hw), dtype=np.uint8),
              rng.integers(0, k, n_test, dtype=np.uint8))
    arrays[0][0, 0, 0], arrays[0][0, 0, 1] = 0, 255
    for stem, array, z in zip(STEMS, arrays, gz):
        write_idx(directory / (stem + (".gz" if z else "")), array)
    return arrays


def test_load_idx_dir_mixed_gz_and_raw(tmp_path, rng):
    tr_x, tr_y, te_x, te_y = _write_set(tmp_path, rng)
    X_train, y_train, X_test, y_test = load_idx_dir(tmp_path)
    assert X_train.shape == (6, 15) and X_test.shape == (4, 15) and X_train.dtype == np.float32
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert X_train.min() == 0.0 and X_train.max() == 1.0
    np.testing.assert_array_equal(X_train, (tr_x.astype(np.float32) / np.float32(255)).reshape(6, 15))
    np.testing.assert_array_equal(X_test * 255, te_x.reshape(4, 15).astype(np.float32))
    np.testing.assert_array_equal(y_train, tr_y)
    np.testing.assert_array_equal(y_test, te_y)

    X_train4, _, X_test4, _ = load_idx_dir(tmp_path, dtype=np.float64, flatten=False)
    assert X_train4.shape == (6, 1, 5, 3) and X_test4.shape == (4, 1, 5, 3)
    assert X_train4.dtype == np.float64
    np.testing.assert_array_equal(X_train4[:, 0] * 255, tr_x)


def test_load_idx_dir_prefers_raw_when_both_exist(tmp_path, rng):
    _write_set(tmp_path, rng, gz=(False, False, False, False))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(6, 99, np.uint8))   # raw ones are 0..9
    _, y_train, _, _ = load_idx_dir(tmp_path)
    np.testing.assert_array_equal(y_train, load_idx(tmp_path / "train-labels-idx1-ubyte"))
    assert y_train.max() < 10


def test_load_idx_dir_count_mismatch(tmp_path, rng):
    _write_set(tmp_path, rng)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="has 5 labels but .*t10k-images-idx3-ubyte has 4 images"):
        load_idx_dir(tmp_path)


@pytest.mark.parametrize("stem", STEMS)
def test_load_idx_dir_missing_file(tmp_path, rng, stem):
    _write_set(tmp_path, rng, gz=(False, False, False, False))
    (tmp_path / stem).unlink()
    with pytest.raises(FileNotFoundError, match=f"neither {stem} nor {stem}.gz"):
        load_idx_dir(tmp_path)


def test_load_idx_dir_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="IDX directory not found"):
        load_idx_dir(tmp_path / "nowhere")


@pytest.mark.parametrize("stem, array, problem", [
    ("train-labels-idx1-ubyte", np.zeros((6, 1), np.uint8), "expected a 1-D labels array"),
    ("train-labels-idx1-ubyte", np.zeros(6, np.float32), "expected integer labels"),
    ("t10k-images-idx3-ubyte", np.zeros((4, 15), np.uint8), "expected a 3-D images array"),
    ("t10k-images-idx3-ubyte", np.zeros((4, 5, 3), np.float32), "expected uint8 images"),
    ("t10k-images-idx3-ubyte", np.zeros((4, 3, 5), np.uint8), "image sizes differ"),
])
def test_load_idx_dir_wrong_layout(tmp_path, rng, stem, array, problem):
    _write_set(tmp_path, rng, gz=(False, False, False, False))
    write_idx(tmp_path / stem, array)
    with pytest.raises(ValueError, match=problem) as info:
        load_idx_dir(tmp_path)
    assert stem in str(info.value)


def test_load_idx_dir_corrupt_file_named(tmp_path, rng):
    _write_set(tmp_path, rng, gz=(False, False, False, False))
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated IDX payload") as info:
        load_idx_dir(tmp_path)
    assert str(path) in str(info.value)


def test_load_idx_dir_bad_dtype(tmp_path, rng):
    _write_set(tmp_path, rng)
    with pytest.raises(TypeError, match="load_idx_dir: dtype must be a floating dtype"):
        load_idx_dir(tmp_path, dtype=np.uint8)
