"""Data sets: the bundled UCI digits and a reader/writer for the IDX (MNIST) format.

``load_digits`` reads ``data/digits/digits.npz`` (1797 8x8 images, values 0..16, 10 classes; see
``data/digits/README.md`` for its source, licence and the fixed stratified train/test split).
``load_idx`` / ``write_idx`` read and write single IDX files, raw or gzip-compressed, and
``load_idx_dir`` loads the four standard MNIST / Fashion-MNIST files from one folder.

Everything here is host-side NumPy; move arrays to the GPU with ``orthoref.asarray`` if needed.
"""
from __future__ import annotations

import functools
import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from ._checks import FLOAT_DTYPES, check_bool, check_choice
from ._io import atomic_write

__all__ = [
    "DIGITS_SEARCH_PATHS", "digits_path", "load_digits",
    "IDX_DTYPES", "IDX_FILES", "IDX_MAX_BYTES", "IDX_MAX_CLASSES", "load_idx", "write_idx", "load_idx_dir",
    "adding_problem", "copy_memory"]

# ----------------------------------------------------------------------------------------------------
# Bundled digits
# ----------------------------------------------------------------------------------------------------

_DIGITS_FILE = "digits.npz"
#: Where ``digits_path`` looks, in order: the repository's ``data/digits`` (editable installs, the
#: README's way), then ``orthoref/_data`` (for a wheel that ships the file as package data).
DIGITS_SEARCH_PATHS = (
    Path(__file__).resolve().parent.parent / "data" / "digits" / _DIGITS_FILE,
    Path(__file__).resolve().parent / "_data" / _DIGITS_FILE,
)
_DIGITS_SPLITS = ("train", "test", "all")


def digits_path() -> Path:
    """Path of the bundled ``digits.npz``.

    Returns
    -------
    path : pathlib.Path

    Raises
    ------
    FileNotFoundError
        If the file is in none of ``DIGITS_SEARCH_PATHS`` (e.g. a non-editable install without it).
    """
    for path in DIGITS_SEARCH_PATHS:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in DIGITS_SEARCH_PATHS)
    raise FileNotFoundError(
        f"the bundled digits file {_DIGITS_FILE} was not found; looked in: {looked}. It ships in the "
        "source tree (data/digits/): install orthoref from a checkout with `pip install -e .`")


@functools.lru_cache(maxsize=1)
def _digits_arrays(path: str):
    """Read and validate the npz once; returns read-only (images, labels, {split: index})."""
    with np.load(path, allow_pickle=False) as npz:
        try:
            images, labels = npz["images"], npz["labels"]
            index = {"train": npz["train_idx"].astype(np.intp), "test": npz["test_idx"].astype(np.intp)}
        except KeyError as exc:
            raise ValueError(f"{path}: missing array {exc}; expected images, labels, train_idx, "
                             f"test_idx, found {list(npz.files)}") from None
    n = len(labels)
    if images.shape != (n, 8, 8) or images.dtype != np.uint8 or labels.shape != (n,):
        raise ValueError(f"{path}: expected uint8 images (N, 8, 8) and labels (N,), got images "
                         f"{images.dtype} {images.shape}, labels {labels.shape}")
    index["all"] = np.arange(n)
    for arr in (images, labels, *index.values()):
        arr.flags.writeable = False
    return images, labels, index


def load_digits(split="train", dtype=np.float32, flatten=True, scale=True):
    """The UCI optical-recognition handwritten digits (8x8, 10 classes), bundled with orthoref.

    Parameters
    ----------
    split : {"train", "test", "all"}
        The fixed stratified split stored in the file (1438 train / 359 test images, about 80/20 in
        every class; see ``data/digits/README.md``), or all 1797 images. Images keep the file's order.
    dtype : numpy dtype, default float32
        Dtype of ``X``: float32 or float64; with ``scale=False`` an integer dtype too.
    flatten : bool, default True
        ``X`` of shape (N, 64) if true, else (N, 1, 8, 8) (NCHW, one channel).
    scale : bool, default True
        Divide the pixel values 0..16 by 16 so that ``X`` lies in [0, 1].

    Returns
    -------
    X : ndarray, shape (N, 64) or (N, 1, 8, 8), dtype ``dtype``
    y : ndarray of int64, shape (N,)
        Labels 0..9.

    Raises
    ------
    ValueError
        If ``split`` is not one of the accepted values.
    TypeError
        If ``dtype`` is not float32/float64 (or an integer dtype with ``scale=False``), or ``flatten`` /
        ``scale`` is not a bool.
    FileNotFoundError
        If the bundled file cannot be found (see ``digits_path``).
    """
    who = "load_digits"
    check_choice(who, "split", split, _DIGITS_SPLITS)
    flatten = check_bool(who, "flatten", flatten)
    scale = check_bool(who, "scale", scale)
    dtype = _checked_dtype(who, dtype, floating=scale)
    images, labels, index = _digits_arrays(str(digits_path()))
    idx = index[split]
    X = images[idx].astype(dtype)
    if scale:
        X /= dtype.type(16)
    X = X.reshape(len(idx), 64) if flatten else X.reshape(len(idx), 1, 8, 8)
    return X, labels[idx].astype(np.int64)


def _checked_dtype(who, dtype, floating):
    """``dtype`` as a NumPy dtype: float32 or float64, or (``floating`` false) an integer dtype too;
    ``TypeError`` naming ``who`` otherwise (float16, longdouble, complex, bool, object, not a dtype)."""
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError):
        raise TypeError(f"{who}: dtype must be a numpy dtype, got {dtype!r}") from None
    if dt in FLOAT_DTYPES or (not floating and dt.kind in "iu"):
        return dt
    want = ("a floating dtype, float32 or float64 (scaled pixels lie in [0, 1])" if floating
            else "float32, float64 or an integer dtype")
    raise TypeError(f"{who}: dtype must be {want}, got {dt}")


def _check_path(who, name, path):
    """``path`` as a ``Path``; ``TypeError`` naming ``who`` unless it is a str or os.PathLike."""
    if isinstance(path, (str, os.PathLike)) and not isinstance(path, bytes):
        return Path(path)
    raise TypeError(f"{who}: {name} must be a str or os.PathLike path, got {type(path).__name__} {path!r}")


# ----------------------------------------------------------------------------------------------------
# IDX format (MNIST, Fashion-MNIST, KMNIST, EMNIST)
# ----------------------------------------------------------------------------------------------------

#: IDX type code -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
IDX_DTYPES = {
    0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_INT32_MAX = 2**31 - 1
#: The most bytes of values an IDX header may declare (4 GiB; EMNIST ByClass, the largest common IDX
#: set, holds 0.55 GB). A larger header is refused before anything is allocated.
IDX_MAX_BYTES = 1 << 32
#: The most classes :func:`load_idx_dir` accepts: training labels must be exactly ``0..K-1``, ``K <= 65536``.
IDX_MAX_CLASSES = 1 << 16
#: NumPy's maximum number of array dimensions (64 since NumPy 2.0, 32 before).
_MAX_NDIM = 64 if int(np.__version__.split(".")[0]) >= 2 else 32
#: Deflate expands at most 1032:1; a gzip file of ``n`` bytes cannot hold more than this many times ``n``.
_GZIP_MAX_RATIO = 1100
_READ_CHUNK = 1 << 20


def _describe_codes():
    return ", ".join(f"0x{c:02X} {dt.name}" for c, dt in IDX_DTYPES.items())


def _check_file(path: Path) -> int:
    """The size of the regular file ``path``; ``FileNotFoundError`` / ``ValueError`` naming it otherwise."""
    if not path.exists():
        raise FileNotFoundError(f"IDX file not found: {path}")
    if not path.is_file():
        raise ValueError(f"{path}: expected an IDX file, got a directory or special file")
    return path.stat().st_size


class _Reader:
    """Reads a raw or gzip-compressed file incrementally, turning the gzip module's errors into a
    ``ValueError`` naming the file; never decompresses more than is asked for."""

    def __init__(self, path: Path, f, gz: bool):
        self.path, self.gz = path, gz
        self.f = gzip.GzipFile(fileobj=f, mode="rb") if gz else f

    def read_into(self, buf) -> int:
        view, got = memoryview(buf), 0
        while got < len(view):
            try:
                n = self.f.readinto(view[got:got + _READ_CHUNK])
            except (OSError, EOFError, zlib.error) as exc:
                raise ValueError(f"{self.path}: corrupt gzip stream ({exc})") from None
            if not n:
                break
            got += n
        return got

    def read(self, size: int) -> bytes:
        buf = bytearray(size)
        return bytes(buf[:self.read_into(buf)])


def _parse_header(reader: _Reader, path: Path):
    """Return ``(dtype, shape, header_length)`` from the IDX header, read from ``reader``."""
    head = reader.read(4)
    if len(head) < 4:
        raise ValueError(f"{path}: truncated IDX header: need 4 bytes, file has {len(head)}")
    if head[0] != 0 or head[1] != 0:
        raise ValueError(f"{path}: bad IDX magic number 0x{head.hex().upper()}: the first two "
                         f"bytes must be 0x00 0x00, got 0x{head[0]:02X} 0x{head[1]:02X}")
    code, ndim = head[2], head[3]
    if code not in IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX dtype code 0x{code:02X}; expected one of "
                         f"{_describe_codes()}")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions; expected at least 1")
    if ndim > _MAX_NDIM:
        raise ValueError(f"{path}: IDX header declares {ndim} dimensions; at most {_MAX_NDIM} are supported")
    header = 4 + 4 * ndim
    dims = reader.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header: {ndim} dimensions need {header} bytes, "
                         f"file has {4 + len(dims)}")
    shape = tuple(int.from_bytes(dims[i:i + 4], "big", signed=True) for i in range(0, 4 * ndim, 4))
    if min(shape) < 0:
        raise ValueError(f"{path}: negative dimension in IDX header: {shape}")
    return IDX_DTYPES[code], shape, header


def _declared_size(path: Path, dtype, shape, gz: bool, file_size: int, header: int) -> int:
    """Bytes of values the header declares, refused (before any allocation) when above
    :data:`IDX_MAX_BYTES` or more than the file can hold."""
    expected = math.prod(shape) * dtype.itemsize
    if expected > IDX_MAX_BYTES:
        raise ValueError(f"{path}: IDX header declares shape {shape} of {dtype.name}, {expected} bytes; at most "
                         f"{IDX_MAX_BYTES} bytes (IDX_MAX_BYTES) are read")
    if not gz and file_size - header < expected:
        raise ValueError(f"{path}: truncated IDX payload: shape {shape} of {dtype.name} needs "
                         f"{expected} bytes, file has {file_size - header}")
    if not gz and file_size - header > expected:
        got = file_size - header
        raise ValueError(f"{path}: {got - expected} unexpected trailing bytes after the IDX payload "
                         f"(shape {shape} of {dtype.name} needs {expected} bytes, file has {got})")
    if gz and expected > _GZIP_MAX_RATIO * file_size:
        raise ValueError(f"{path}: truncated IDX payload: shape {shape} of {dtype.name} needs {expected} "
                         f"bytes, more than a gzip file of {file_size} bytes can hold")
    return expected


def load_idx(path):
    """Read one IDX file (the MNIST format), raw or gzip-compressed.

    The layout is ``0x00 0x00 <type code> <ndim>``, then ``ndim`` big-endian int32 sizes, then the
    values in C order, big-endian. Type codes: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64. Gzip is recognised by its magic bytes, whatever the file's suffix.

    The header is read first: a declared size above :data:`IDX_MAX_BYTES` (4 GiB), or larger than the
    file could hold, is refused before anything is allocated, and a gzip stream is decompressed
    incrementally, stopping one byte past the declared size (a gzip bomb is refused after inflating at
    most that much).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    array : ndarray, shape as in the header, native byte order, writeable

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    TypeError
        If ``path`` is not a str or os.PathLike.
    ValueError
        Naming the file, for a corrupt gzip stream, a bad magic number, an unknown type code, a
        truncated header or payload, too many dimensions, a declared size over :data:`IDX_MAX_BYTES`,
        or bytes after the payload.
    """
    path = _check_path("load_idx", "path", path)
    file_size = _check_file(path)
    with open(path, "rb") as f:
        gz = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        reader = _Reader(path, f, gz)
        dtype, shape, header = _parse_header(reader, path)
        expected = _declared_size(path, dtype, shape, gz, file_size, header)
        buf = bytearray(expected)
        got = reader.read_into(buf)
        if got < expected:
            raise ValueError(f"{path}: truncated IDX payload: shape {shape} of {dtype.name} needs "
                             f"{expected} bytes, file has {got}")
        if gz and reader.read(1):
            raise ValueError(f"{path}: unexpected trailing bytes after the IDX payload (shape {shape} of "
                             f"{dtype.name} needs {expected} bytes; the gzip stream holds more)")
    flat = np.frombuffer(buf, dtype=dtype)
    if dtype.isnative:                          # uint8/int8: the bytearray is already writeable and ours
        return flat.reshape(shape)
    return flat.astype(dtype.newbyteorder("=")).reshape(shape)


def _idx_code(dtype):
    for code, dt in IDX_DTYPES.items():
        if dt.kind == dtype.kind and dt.itemsize == dtype.itemsize:
            return code
    raise TypeError(f"write_idx: array dtype must be one the IDX format stores ({_describe_codes()}), got "
                    f"{dtype}; cast it first, e.g. array.astype(np.int32)")


def _idx_bytes(array) -> bytes:
    if not isinstance(array, np.ndarray):
        try:
            array = np.asarray(array)
        except (TypeError, ValueError):
            raise TypeError(f"write_idx: array must be an array of numbers, got a ragged or non-numeric "
                            f"{type(array).__name__}") from None
    code = _idx_code(array.dtype)
    if not 1 <= array.ndim <= _MAX_NDIM:
        raise ValueError(f"write_idx: array must have 1 to {_MAX_NDIM} dimensions, got shape {array.shape}")
    if max(array.shape) > _INT32_MAX:
        raise ValueError(f"write_idx: array dimensions must fit in int32, got shape {array.shape}")
    if array.nbytes > IDX_MAX_BYTES:
        raise ValueError(f"write_idx: array holds {array.nbytes} bytes; load_idx reads at most {IDX_MAX_BYTES} "
                         f"(IDX_MAX_BYTES)")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    return header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()


def write_idx(path, array):
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``; atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its folder must exist. An existing file is replaced only once the new one is
        complete on disk.
    array : array_like, 1 to 64 dimensions (32 before NumPy 2), at most :data:`IDX_MAX_BYTES`
        Dtype uint8, int8, int16, int32, float32 or float64 (stored big-endian, any input byte order).

    Returns
    -------
    path : pathlib.Path

    Raises
    ------
    TypeError
        If the dtype has no IDX type code (int64, bool, ...) or ``path`` is not a path.
    ValueError
        If the shape cannot be stored (0-d, too many dimensions, a dimension over int32, over
        :data:`IDX_MAX_BYTES`).
    """
    path = _check_path("write_idx", "path", path)
    payload = _idx_bytes(array)
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    atomic_write(path, lambda f: f.write(payload))
    return path


#: The four file names of an MNIST-style IDX folder (each raw or with ``.gz``).
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}


def _find_idx(directory: Path, stem: str) -> Path:
    """``stem`` or ``stem.gz`` in ``directory`` (the uncompressed one when both exist)."""
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"{directory}: neither {stem} nor {stem}.gz found")


def _load_pair(images_path: Path, labels_path: Path):
    images, labels = load_idx(images_path), load_idx(labels_path)
    if images.ndim != 3:
        raise ValueError(f"{images_path}: expected a 3-D images array (N, H, W), got shape "
                         f"{images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"{images_path}: expected uint8 images (type code 0x08), got "
                         f"{images.dtype}; use load_idx for other types")
    if min(images.shape) == 0:
        raise ValueError(f"{images_path}: expected at least one image of at least 1x1 pixels, got shape "
                         f"{images.shape} (N, H, W)")
    if labels.ndim != 1:
        raise ValueError(f"{labels_path}: expected a 1-D labels array (N,), got shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{labels_path}: expected integer labels, got {labels.dtype}")
    if len(labels) != len(images):
        raise ValueError(f"{labels_path} has {len(labels)} labels but {images_path} has "
                         f"{len(images)} images")
    return images, labels.astype(np.int64)


def _first(labels, mask):
    """(value, index) of the first label where ``mask`` holds."""
    i = int(np.flatnonzero(mask)[0])
    return int(labels[i]), i


def _check_labels(train_path: Path, y_train, test_path: Path, y_test) -> int:
    """The number of classes ``K``: the distinct training labels must be exactly ``0..K-1`` (``K <=``
    :data:`IDX_MAX_CLASSES`) and every test label in ``[0, K)``; ``ValueError`` naming the file, the
    offending label and its index otherwise."""
    lo, hi = int(y_train.min()), int(y_train.max())
    if lo < 0 or hi >= IDX_MAX_CLASSES:
        v, i = _first(y_train, (y_train < 0) | (y_train >= IDX_MAX_CLASSES))
        raise ValueError(f"{train_path}: label {v} at index {i} is out of range: labels must be class "
                         f"indices 0..K-1 with K <= {IDX_MAX_CLASSES}")
    counts = np.bincount(y_train, minlength=hi + 1)
    if not counts.all():
        missing = np.flatnonzero(counts == 0)
        v, i = _first(y_train, y_train > missing[0])
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        raise ValueError(f"{train_path}: label {v} at index {i} leaves {len(missing)} class(es) without a "
                         f"training example ({shown}); the distinct training labels must be exactly "
                         f"0..K-1 (here K would be {hi + 1})")
    bad = (y_test < 0) | (y_test > hi)
    if bad.any():
        v, i = _first(y_test, bad)
        raise ValueError(f"{test_path}: label {v} at index {i} is out of range: test labels must lie in "
                         f"[0, {hi + 1}), the classes of {train_path.name}")
    return hi + 1


def _scaled(images, dtype, flatten):
    X = images.astype(dtype)
    X /= dtype.type(255)
    n, h, w = images.shape
    return X.reshape(n, h * w) if flatten else X.reshape(n, 1, h, w)


def load_idx_dir(directory, dtype=np.float32, flatten=True):
    """Load MNIST-style data from the four standard IDX files in ``directory``.

    The files are ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each raw or with a ``.gz`` suffix
    (the raw one is used when both exist). This is the layout of MNIST, Fashion-MNIST and KMNIST.

    Parameters
    ----------
    directory : str or os.PathLike
    dtype : floating numpy dtype, default float32
        Dtype of the images, which are uint8 in the files and divided by 255.
    flatten : bool, default True
        Images of shape (N, H*W) if true, else (N, 1, H, W).

    Returns
    -------
    X_train : ndarray, shape (N_train, H*W) or (N_train, 1, H, W), values in [0, 1]
    y_train : ndarray of int64, shape (N_train,)
    X_test : ndarray, shape (N_test, H*W) or (N_test, 1, H, W), values in [0, 1]
    y_test : ndarray of int64, shape (N_test,)

    Raises
    ------
    FileNotFoundError
        If ``directory`` or one of the four files is missing.
    ValueError
        Naming the file, if a file is corrupt (see ``load_idx``), images are not 3-D uint8 or there are
        none, labels are not 1-D integers, image and label counts disagree, train and test images differ
        in size, or the labels are not class indices: the distinct training labels must be exactly
        ``0..K-1`` (no gaps, ``K <=`` :data:`IDX_MAX_CLASSES`) and the test labels in ``[0, K)`` (the
        message names the file, the label and its index).
    TypeError
        If ``dtype`` is not float32/float64, ``flatten`` not a bool, ``directory`` not a path.
    """
    who = "load_idx_dir"
    dtype = _checked_dtype(who, dtype, floating=True)
    flatten = check_bool(who, "flatten", flatten)
    directory = _check_path(who, "directory", directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"IDX directory not found: {directory}")
    paths = {key: _find_idx(directory, stem) for key, stem in IDX_FILES.items()}
    train_x, train_y = _load_pair(paths["train_images"], paths["train_labels"])
    test_x, test_y = _load_pair(paths["test_images"], paths["test_labels"])
    if train_x.shape[1:] != test_x.shape[1:]:
        raise ValueError(f"image sizes differ: {paths['train_images']} has {train_x.shape[1:]}, "
                         f"{paths['test_images']} has {test_x.shape[1:]}")
    _check_labels(paths["train_labels"], train_y, paths["test_labels"], test_y)
    return (_scaled(train_x, dtype, flatten), train_y, _scaled(test_x, dtype, flatten), test_y)


# The synthetic sequence tasks live in orthoref.tasks; they are part of the data API too.
from .tasks import adding_problem, copy_memory  # noqa: E402
