"""Files and run folders: atomic writes, the run-folder claim, stale temporary files, signals, safe ``.npz``.

- :func:`atomic_write` writes through a temporary file ``.NAME.tmp-HOST-PID`` in the target's directory
  (flush, fsync, rename, fsync of the directory); any failure or interruption removes the temporary file
  and leaves the previous file intact. An ``OSError`` (a full disk) carries the target's path.
- :func:`claim_run_dir` claims a folder for one run: the folder is created if needed and a lock file
  ``.orthoref.lock`` holding the PID, host and start time is created and locked (``flock``, released by the
  kernel even when the process is killed). A second claim while the holder lives raises
  :class:`RunDirBusy` naming the holder; a lock left by a dead process is recognised and taken over.
  Claiming also removes temporary files of dead processes of this host (``kill -9`` during a write).
- :func:`new_run_dir` creates ``runs/YYYYmmdd-HHMMSS[-k]`` exclusively (unique for runs started in the
  same second).
- :func:`interruptible` turns SIGTERM (and SIGINT) into :class:`RunInterrupted` (a ``KeyboardInterrupt``)
  so that ``finally`` blocks remove temporary files and release the lock; a second signal during that
  clean-up is ignored.
- :func:`strict_json` and :func:`loads_strict` write and read strict JSON (no ``NaN``/``Infinity``).
- :func:`read_npz` reads a NumPy ``.npz`` (checkpoints, compressed models, fixture files) without pickles
  and without trusting its headers: every member's dtype and shape are read (and checked by the caller)
  before its data is.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import signal
import socket
import threading
import time
import zipfile
import zlib

import numpy as np

__all__ = ["CheckpointError", "RunDirBusy", "RunInterrupted", "LOCK_NAME", "atomic_write", "atomic_write_text",
           "claim_run_dir", "interruptible", "loads_strict", "new_run_dir", "read_npz", "remove_stale_temps",
           "strict_json"]

LOCK_NAME = ".orthoref.lock"
_TEMP = re.compile(r"^\.(?P<base>.+)\.tmp-(?:(?P<host>[A-Za-z0-9._]+)-)?(?P<pid>\d+)$")


class CheckpointError(ValueError):
    """A checkpoint (or compressed model) that cannot be loaded: not such a file, or a field, dtype or
    shape that disagrees with its configuration or with the model; the message names the file and field."""


CheckpointError.__module__ = "orthoref.train"


class RunDirBusy(FileExistsError):
    """The run folder is claimed by another live run (an ``OSError``; the message names the holder)."""


class RunInterrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT stopped a run; ``signum`` is the signal (exit status ``128 + signum``)."""

    def __init__(self, signum, message=None):
        super().__init__(message or f"interrupted by {signal_name(signum)}")
        self.signum = int(signum)

    def __str__(self):
        return str(self.args[0]) if self.args else ""


def signal_name(signum):
    """``SIGTERM``, ``SIGINT``, ... for a signal number (``signal N`` for an unknown one)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _host():
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname() or "localhost")


# ---------------------------------------------------------------------------------------------------------
# Atomic writes

def temp_path(path):
    """The temporary file :func:`atomic_write` uses for ``path``: ``.NAME.tmp-HOST-PID`` beside it."""
    directory, base = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(directory, f".{base}.tmp-{_host()}-{os.getpid()}")


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# Signal state of :func:`interruptible` (handlers run in the main thread, between bytecodes).
_SIG = {"critical": 0, "pending": None, "hit": False}


@contextlib.contextmanager
def _signals_deferred():
    """A clean-up that a signal must not cut short: within it, :func:`interruptible`'s handler only
    records the signal, and :class:`RunInterrupted` is raised when the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield                       # signals reach the main thread only
        return
    _SIG["critical"] += 1
    try:
        yield
    finally:
        _SIG["critical"] -= 1
        if _SIG["critical"] == 0 and _SIG["pending"] is not None:
            signum, _SIG["pending"] = _SIG["pending"], None
            raise RunInterrupted(signum)


def atomic_write(path, write):
    """Write through ``write(fileobj)`` to a temporary file beside ``path``, flush, fsync, rename.

    A failure or an interruption part-way leaves the previous file untouched and removes the temporary
    one; an ``OSError`` (``ENOSPC``: a full disk) is re-raised with ``filename`` set to ``path``."""
    path = os.fspath(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with _signals_deferred():
            _remove_quietly(tmp)
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename in (None, tmp):
            exc.filename = path
        raise
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def atomic_write_text(path, text):
    """:func:`atomic_write` of the str ``text`` (UTF-8); returns ``path``."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path


def _json_safe(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def strict_json(obj, **kw):
    """``json.dumps`` of ``obj`` with every NaN/±Inf float written as ``null`` (strict JSON: no
    ``NaN``/``Infinity`` tokens, ``allow_nan=False``)."""
    return json.dumps(_json_safe(obj), allow_nan=False, **kw)


def _refuse_constant(token):
    raise ValueError(f"the non-standard token {token}")


def loads_strict(text):
    """``json.loads`` of ``text`` (str or UTF-8 bytes) refusing ``NaN``/``Infinity``: ``ValueError`` saying
    where the JSON is broken, in its own words (``RecursionError`` for absurd nesting becomes a
    ``ValueError`` too). The reading side of :func:`strict_json`."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"broken at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None


# ---------------------------------------------------------------------------------------------------------
# Processes, stale files, the lock

def pid_alive(pid) -> bool:
    """Whether process ``pid`` exists on this host (a process of another user counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True


def remove_stale_temps(directory):
    """Remove ``.NAME.tmp-HOST-PID`` files of dead processes of this host in ``directory`` (left by a
    process killed during a write); returns the names removed. Files of live processes, of this process,
    or of other hosts are kept."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    host, me = _host(), os.getpid()
    for name in names:
        m = _TEMP.match(name)
        if not m:
            continue
        pid = int(m.group("pid"))
        if (m.group("host") not in (None, host)) or pid == me or pid_alive(pid):
            continue
        try:
            os.remove(os.path.join(directory, name))
            removed.append(name)
        except OSError:
            pass
    return removed


def _remove_own_temps(directory):
    me, host = os.getpid(), _host()
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        m = _TEMP.match(name)
        if m and int(m.group("pid")) == me and m.group("host") in (None, host):
            _remove_quietly(os.path.join(directory, name))


def _holder_text(raw):
    try:
        info = json.loads(raw)
        return f"PID {int(info['pid'])} on host {info['host']}, since {info.get('started', '?')}"
    except (ValueError, TypeError, KeyError):
        return "an unknown process"


try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class RunDir:
    """A claimed run folder; :meth:`release` (or leaving the ``with`` block) gives it back."""

    def __init__(self, path, fd, created, took_over, stale_removed):
        self.path, self._fd, self.created = path, fd, created
        self.took_over, self.stale_removed = took_over, stale_removed

    @property
    def lock_path(self):
        return os.path.join(self.path, LOCK_NAME)

    def release(self):
        """Remove this process's temporary files and the lock; an empty folder this claim created goes
        too. Safe to call twice."""
        if self._fd is None:
            return
        with _signals_deferred():
            _remove_own_temps(self.path)
            _remove_quietly(self.lock_path)
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
            if self.created:
                with contextlib.suppress(OSError):
                    os.rmdir(self.path)            # only if empty

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _busy(who, path, raw):
    return RunDirBusy(f"{who}: {path} is in use by another run ({_holder_text(raw)}; lock file "
                      f"{os.path.join(path, LOCK_NAME)}); wait for it to finish or choose another folder")


def _read_fd(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode("utf-8", "replace")


def _lock_record():
    return json.dumps({"pid": os.getpid(), "host": _host(),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode()


def _acquire(who, path):
    """Open, lock and fill ``path/.orthoref.lock``; returns ``(fd, took_over)``."""
    lock = os.path.join(path, LOCK_NAME)
    if fcntl is None:  # pragma: no cover - Windows: exclusive creation, PID check for staleness
        return _acquire_exclusive(who, path, lock)
    for _ in range(20):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raw = _read_fd(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _busy(who, path, raw) from None
            raise
        try:                       # the file may have been released (unlinked) between open and flock
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        took_over = bool(_read_fd(fd).strip())     # a dead holder's record: stale, taken over
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, _lock_record())
        except OSError as exc:                     # a full disk: say which file
            _remove_quietly(lock)
            os.close(fd)
            if exc.filename is None:
                exc.filename = lock
            raise
        return fd, took_over
    raise _busy(who, path, "")


def _acquire_exclusive(who, path, lock):  # pragma: no cover - used where fcntl is missing
    for _ in range(20):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                with open(lock, encoding="utf-8") as f:
                    raw = f.read(4096)
                info = json.loads(raw)
                stale = info.get("host") == _host() and not pid_alive(int(info["pid"]))
            except FileNotFoundError:
                continue
            except (OSError, ValueError, TypeError, KeyError):
                raw, stale = "", False
            if not stale:
                raise _busy(who, path, raw) from None
            _remove_quietly(lock)
            continue
        os.write(fd, _lock_record())
        return fd, False
    raise _busy(who, path, "")


def claim_run_dir(path, who="fit"):
    """Claim folder ``path`` for this process (created with its parents if missing): see the module
    docstring. Raises :class:`RunDirBusy` when a live run holds it, ``OSError`` when it cannot be created
    or is not a folder. Returns a :class:`RunDir` (a context manager)."""
    path = os.fspath(path)
    created = False
    if not os.path.isdir(path):
        try:
            os.makedirs(path)
            created = True
        except FileExistsError:
            if not os.path.isdir(path):
                raise NotADirectoryError(errno.ENOTDIR, "not a folder", path) from None
    try:
        fd, took_over = _acquire(who, path)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(path)
        raise
    return RunDir(path, fd, created, took_over, remove_stale_temps(path))


def _timestamp():
    return time.strftime("%Y%m%d-%H%M%S")


def new_run_dir(base="runs"):
    """Create and return a new folder ``base/YYYYmmdd-HHMMSS`` (``-2``, ``-3``, ... when taken):
    ``os.mkdir`` is exclusive, so runs started in the same second get different folders."""
    os.makedirs(base, exist_ok=True)
    stem = os.path.join(base, _timestamp())
    for k in range(1, 100_000):
        path = stem if k == 1 else f"{stem}-{k}"
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free run folder name", stem)


# ---------------------------------------------------------------------------------------------------------
# Signals

@contextlib.contextmanager
def interruptible():
    """Within this block SIGTERM (when it has its default action) and SIGINT (when it has Python's
    default handler) raise :class:`RunInterrupted` once; later signals are ignored until the block ends,
    so that clean-up (temporary files, the lock) completes. No-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if _SIG["hit"]:
            return
        _SIG["hit"] = True
        if _SIG["critical"]:
            _SIG["pending"] = signum
            return
        raise RunInterrupted(signum)

    previous = {}
    for sig, default in ((signal.SIGTERM, signal.SIG_DFL), (signal.SIGINT, signal.default_int_handler)):
        current = signal.getsignal(sig)
        if current is default or (sig == signal.SIGTERM and current is None):
            previous[sig] = current
            signal.signal(sig, handler)
    if previous:
        _SIG.update(hit=False, pending=None)
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h if h is not None else signal.SIG_DFL)


# ---------------------------------------------------------------------------------------------------------
# Safe .npz reading

# Deflate cannot expand more than ~1032:1; a member claiming more is a forged size.
_MAX_DEFLATE_RATIO = 1100
_MAX_MEMBERS = 100_000
_DATA_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError, NotImplementedError, zlib.error)


class NpzMember:
    """One array of an ``.npz``: ``name``, ``dtype``, ``shape`` (from its header; the data is unread)."""

    def __init__(self, archive, info, key, dtype, shape, fortran, offset):
        self._archive, self._info, self.name = archive, info, key
        self.dtype, self.shape, self.fortran, self._offset = dtype, shape, fortran, offset

    @property
    def nbytes(self):
        return math.prod(self.shape) * self.dtype.itemsize

    def read(self):
        """The array (a fresh, writable one); the reader's ``error`` if the data is short or corrupt."""
        return self._archive._read(self)


class NpzArchive:
    """An open ``.npz`` (see :func:`read_npz`): ``members`` maps each array's name to its
    :class:`NpzMember`; a context manager that closes the archive."""

    def __init__(self, name, zf, error):
        self.name, self._zf, self._error, self.members = name, zf, error, {}

    def _read(self, m):
        arr = np.empty(m.shape[::-1] if m.fortran else m.shape, dtype=m.dtype)
        view = memoryview(arr.reshape(-1).view(np.uint8)) if arr.size else memoryview(bytearray(0))
        try:
            with self._zf.open(m._info) as f:
                f.seek(m._offset)
                got = 0
                while got < len(view):
                    n = f.readinto(view[got:])
                    if not n:
                        break
                    got += n
        except _DATA_ERRORS as exc:
            raise self._error(f"{self.name}: array {m.name!r} is truncated or corrupt ({exc})") from None
        if got != len(view):
            raise self._error(f"{self.name}: array {m.name!r} is truncated or corrupt (read {got} of "
                              f"{len(view)} bytes)")
        return arr.T if m.fortran else arr

    def read_all(self):
        """Every array, read: ``{name: array}`` in the archive's order."""
        return {key: m.read() for key, m in self.members.items()}

    def close(self):
        self._zf.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _member_header(npz, info, key, size):
    """``(dtype, shape, fortran, offset)`` from a member's ``.npy`` header; checks that the declared data
    fills the member exactly and that the member's sizes are possible for an archive of ``size`` bytes."""
    name, error = npz.name, npz._error
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise error(f"{name}: array {key!r}: unsupported compression method {info.compress_type}")
    if info.compress_size > size or (info.compress_type == zipfile.ZIP_STORED
                                     and info.file_size != info.compress_size) \
            or info.file_size > _MAX_DEFLATE_RATIO * info.compress_size + 4096:
        raise error(f"{name}: array {key!r} declares {info.file_size} bytes but stores {info.compress_size}, "
                    f"more than a file of {size} bytes can hold")
    try:
        with npz._zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            offset = f.tell()
    except (*_DATA_ERRORS, TypeError, SyntaxError, KeyError) as exc:
        raise error(f"{name}: array {key!r} is not a NumPy array (no valid .npy header: {exc})") from None
    dtype = np.dtype(dtype)
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise error(f"{name}: array {key!r} has dtype {dtype}: arrays of Python objects and structured "
                    f"arrays are never loaded (no pickles)")
    declared = math.prod(shape) * dtype.itemsize
    if offset + declared != info.file_size:
        raise error(f"{name}: array {key!r} declares shape {tuple(shape)} of {dtype} ({declared} bytes) but "
                    f"holds {info.file_size - offset} bytes")
    return dtype, tuple(int(s) for s in shape), bool(fortran), offset


def _zip_head_and_size(source):
    """The first four bytes and the size of ``source`` (a path or a seekable binary file object)."""
    if hasattr(source, "read"):
        source.seek(0)
        head = source.read(4)
        size = source.seek(0, os.SEEK_END)
        source.seek(0)
        return head, size
    with open(source, "rb") as f:
        return f.read(4), os.fstat(f.fileno()).st_size


def read_npz(source, what="orthoref checkpoint", *, name=None, error=CheckpointError):
    """Open the ``.npz`` ``source`` (a path, or a seekable binary file object) without loading anything:
    returns an :class:`NpzArchive` whose ``members`` (a dict name -> :class:`NpzMember` with ``dtype`` and
    ``shape`` read off the headers) are to be checked before any ``member.read()``
    (:meth:`NpzArchive.read_all` reads every array); use it as a context manager. No pickles, ever, and
    nothing larger than the file's real content is allocated: every member's declared shape and dtype must
    account for exactly the bytes it holds, and a compressed member can hold at most 1100 times its
    compressed size.

    ``FileNotFoundError`` for a missing file; ``error`` (a ``ValueError`` subclass, by default
    :class:`CheckpointError`) naming ``name`` (default: the path) and calling the file an ``what`` for
    anything that is not a NumPy ``.npz``: a text file, a folder, a truncated or damaged archive, a member
    that is not an ``.npy`` array, an object (pickled) or structured array, a declared shape that disagrees
    with the stored bytes."""
    if not hasattr(source, "read"):
        source = os.fspath(source)
        if os.path.isdir(source):
            raise error(f"{source if name is None else name}: is a folder, not an {what} (a .npz file)")
    name = source if name is None else name
    try:
        head, size = _zip_head_and_size(source)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise error(f"{name}: cannot be read ({exc.strerror or exc})") from None
    if head not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise error(f"{name}: not a readable {what}: not an .npz archive (a zip of .npy arrays); truncated, or "
                    f"a file of another kind")
    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError,
            RuntimeError, zlib.error) as exc:
        raise error(f"{name}: not a readable {what} (corrupt or truncated .npz archive: {type(exc).__name__}: "
                    f"{exc})") from None
    npz = NpzArchive(name, zf, error)
    try:
        infos = zf.infolist()
        if len(infos) > _MAX_MEMBERS:
            raise error(f"{name}: not an {what} ({len(infos)} members)")
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise error(f"{name}: not an {what} (archive member {info.filename!r} is not an .npy array)")
            key = info.filename[:-len(".npy")]
            if key in npz.members:
                raise error(f"{name}: not an {what} (member {info.filename!r} appears twice)")
            npz.members[key] = NpzMember(npz, info, key, *_member_header(npz, info, key, size))
        return npz
    except BaseException:
        zf.close()
        raise
