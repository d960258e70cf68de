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
import secrets
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "DIGITS_SEARCH_PATHS", "digits_path", "load_digits",
    "IDX_DTYPES", "load_idx", "write_idx", "load_idx_dir", "adding_problem", "copy_memory"]

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
        Dtype of ``X``; must be a floating dtype when ``scale`` is true.
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
        If ``split`` or ``dtype`` is not one of the accepted values.
    FileNotFoundError
        If the bundled file cannot be found (see ``digits_path``).
    """
    if not isinstance(split, str) or split not in _DIGITS_SPLITS:
        raise ValueError(f"split must be one of {_DIGITS_SPLITS}, got {split!r}")
    dtype = _checked_dtype(dtype, floating=scale)
    images, labels, index = _digits_arrays(str(digits_path()))
    idx = index[split]
    X = images[idx].astype(dtype)
    if scale:
        X /= dtype.type(16)
    X = X.reshape(len(idx), 64) if flatten else X.reshape(len(idx), 1, 8, 8)
    return X, labels[idx].astype(np.int64)


def _checked_dtype(dtype, floating):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be a numpy dtype, got {dtype!r}") from None
    if floating and not np.issubdtype(dt, np.floating):
        raise ValueError(f"dtype must be a floating dtype (scaled pixels lie in [0, 1]), got {dt}")
    if not floating and not (np.issubdtype(dt, np.floating) or np.issubdtype(dt, np.integer)):
        raise ValueError(f"dtype must be a floating or integer dtype, got {dt}")
    return dt


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


def _describe_codes():
    return ", ".join(f"0x{c:02X} {dt.name}" for c, dt in IDX_DTYPES.items())


def _read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it starts with the gzip magic bytes."""
    if not path.exists():
        raise FileNotFoundError(f"IDX file not found: {path}")
    if not path.is_file():
        raise ValueError(f"{path}: expected an IDX file, got a directory or special file")
    data = path.read_bytes()
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt gzip stream ({exc})") from None
    return data


def _parse_header(data: bytes, path: Path):
    """Return ``(dtype, shape, header_length)`` from the IDX header of ``data``."""
    if len(data) < 4:
        raise ValueError(f"{path}: truncated IDX header: need 4 bytes, file has {len(data)}")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: bad IDX magic number 0x{data[:4].hex().upper()}: the first two "
                         f"bytes must be 0x00 0x00, got 0x{data[0]:02X} 0x{data[1]:02X}")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX dtype code 0x{code:02X}; expected one of "
                         f"{_describe_codes()}")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions; expected at least 1")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header: {ndim} dimensions need {header} bytes, "
                         f"file has {len(data)}")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    if min(shape) < 0:
        raise ValueError(f"{path}: negative dimension in IDX header: {shape}")
    return IDX_DTYPES[code], shape, header


def load_idx(path):
    """Read one IDX file (the MNIST format), raw or gzip-compressed.

    The layout is ``0x00 0x00 <type code> <ndim>``, then ``ndim`` big-endian int32 sizes, then the
    values in C order, big-endian. Type codes: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64. Gzip is recognised by its magic bytes, whatever the file's suffix.

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
    ValueError
        Naming the file, for a corrupt gzip stream, a bad magic number, an unknown type code, a
        truncated header or payload, or bytes after the payload.
    """
    path = Path(path)
    data = _read_bytes(path)
    dtype, shape, header = _parse_header(data, path)
    expected = math.prod(shape) * dtype.itemsize
    got = len(data) - header
    if got < expected:
        raise ValueError(f"{path}: truncated IDX payload: shape {shape} of {dtype.name} needs "
                         f"{expected} bytes, file has {got}")
    if got > expected:
        raise ValueError(f"{path}: {got - expected} unexpected trailing bytes after the IDX payload "
                         f"(shape {shape} of {dtype.name} needs {expected} bytes, file has {got})")
    flat = np.frombuffer(data, dtype=dtype, offset=header, count=expected // dtype.itemsize)
    return flat.astype(dtype.newbyteorder("=")).reshape(shape)


def _idx_code(dtype):
    for code, dt in IDX_DTYPES.items():
        if dt.kind == dtype.kind and dt.itemsize == dtype.itemsize:
            return code
    raise ValueError(f"array dtype must be one the IDX format stores ({_describe_codes()}), got "
                     f"{dtype}; cast it first, e.g. array.astype(np.int32)")


def _idx_bytes(array) -> bytes:
    array = np.asarray(array)
    code = _idx_code(array.dtype)
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"array must have 1 to 255 dimensions, got shape {array.shape}")
    if max(array.shape) > _INT32_MAX:
        raise ValueError(f"array dimensions must fit in int32, got shape {array.shape}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    return header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()


def _atomic_write(path: Path, payload: bytes) -> None:
    """Write to a temporary file in ``path``'s folder, flush, fsync, then ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_idx(path, array):
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``; atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its folder must exist. An existing file is replaced only once the new one is
        complete on disk.
    array : array_like, 1 to 255 dimensions
        Dtype uint8, int8, int16, int32, float32 or float64 (stored big-endian, any input byte order).

    Returns
    -------
    path : pathlib.Path

    Raises
    ------
    ValueError
        If the dtype has no IDX type code or the shape cannot be stored.
    """
    path = Path(path)
    payload = _idx_bytes(array)
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    _atomic_write(path, payload)
    return path


_IDX_FILES = {
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
    if labels.ndim != 1:
        raise ValueError(f"{labels_path}: expected a 1-D labels array (N,), got shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{labels_path}: expected integer labels, got {labels.dtype}")
    if len(labels) != len(images):
        raise ValueError(f"{labels_path} has {len(labels)} labels but {images_path} has "
                         f"{len(images)} images")
    return images, labels.astype(np.int64)


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
        Naming the file, if a file is corrupt (see ``load_idx``), images are not 3-D uint8, labels
        are not 1-D integers, image and label counts disagree, or train and test images differ in
        size; also for a non-floating ``dtype``.
    """
    dtype = _checked_dtype(dtype, floating=True)
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"IDX directory not found: {directory}")
    paths = {key: _find_idx(directory, stem) for key, stem in _IDX_FILES.items()}
    train_x, train_y = _load_pair(paths["train_images"], paths["train_labels"])
    test_x, test_y = _load_pair(paths["test_images"], paths["test_labels"])
    if train_x.shape[1:] != test_x.shape[1:]:
        raise ValueError(f"image sizes differ: {paths['train_images']} has {train_x.shape[1:]}, "
                         f"{paths['test_images']} has {test_x.shape[1:]}")
    return (_scaled(train_x, dtype, flatten), train_y, _scaled(test_x, dtype, flatten), test_y)


# The synthetic sequence tasks live in orthoref.tasks; they are part of the data API too.
from .tasks import adding_problem, copy_memory  # noqa: E402
