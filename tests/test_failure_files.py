"""Crafted files (the README's "Failure model", files): every bad IDX file, compressed model and fixture directory is refused
with a ValueError/TypeError (or CheckpointError, a ValueError) whose message names the file and the field,
before anything large is allocated; the oracle's ``reference``/``compare`` validate their arguments.

Each bad file is generated here in ``tmp_path``. Memory claims are measured with ``tracemalloc`` (NumPy
and zlib allocate through Python's tracked allocator)."""
import gzip
import hashlib
import io
import json
import os
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from orthoref import nn
from orthoref.cli import main
from orthoref.compress import (build, compress_model, count_parameters, format_compress_report, load_compressed,
                               save_compressed)
from orthoref.data import IDX_MAX_BYTES, IDX_MAX_CLASSES, load_idx, load_idx_dir, write_idx
from orthoref.oracle import compare, reference
from orthoref.oracle.fixtures import check_dir, export, load_manifest
from orthoref.train import CheckpointError

MiB = 1 << 20


def _peak(fn, *args, **kwargs):
    """(exception raised by ``fn``, peak traced bytes during the call)."""
    tracemalloc.start()
    try:
        fn(*args, **kwargs)
    except Exception as exc:        # noqa: BLE001 — the caller asserts the type
        error = exc
    else:
        error = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return error, peak


def _header(code, shape):
    return bytes([0, 0, code, len(shape)]) + np.asarray(shape, dtype=">i4").tobytes()


def _no_numpy_words(text):
    for words in ("allow_pickle", "zero-size array", "maximum supported dimension", "buffer is smaller",
                  "cannot reshape", "Expecting value", "Traceback", "could not broadcast", "object arrays"):
        assert words not in text, text


# ================================================================================================ IDX

def test_gzip_bomb_is_refused_after_inflating_at_most_declared_plus_one_byte(tmp_path):
    """Header: 10 images of 8x8 (640 bytes); the gzip stream inflates to 64 MiB. Old code inflated all of
    it before refusing; now decompression stops one byte past the declared size."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)           # wbits 31: a gzip container
    chunks = [comp.compress(_header(0x08, (10, 8, 8)))]
    zeros = bytes(MiB)
    chunks += [comp.compress(zeros) for _ in range(64)]
    chunks.append(comp.flush())
    path = tmp_path / "bomb-images-idx3-ubyte.gz"
    path.write_bytes(b"".join(chunks))
    assert path.stat().st_size < 100_000
    error, peak = _peak(load_idx, path)
    assert isinstance(error, ValueError), error
    assert str(path) in str(error) and "trailing bytes" in str(error) and "640 bytes" in str(error)
    assert peak < 2 * MiB, f"inflated {peak} bytes"


def test_gzip_stream_stops_reading_at_declared_size_plus_one(tmp_path, monkeypatch):
    """The number of decompressed bytes actually asked for: declared + header + 1, never the whole stream."""
    payload = _header(0x08, (10, 8, 8)) + bytes(640) + bytes(4 * MiB)
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(payload, mtime=0))
    asked = []
    real = gzip.GzipFile.readinto

    def counting(self, b):
        n = real(self, b)
        asked.append(n)
        return n
    monkeypatch.setattr(gzip.GzipFile, "readinto", counting)
    with pytest.raises(ValueError, match="trailing bytes") as info:
        load_idx(path)
    assert str(path) in str(info.value)
    assert sum(asked) == 16 + 640 + 1


def test_header_declaring_more_than_a_gzip_file_can_hold(tmp_path):
    path = tmp_path / "liar.gz"
    path.write_bytes(gzip.compress(_header(0x08, (1000, 1000, 1000)) + bytes(10), mtime=0))
    error, peak = _peak(load_idx, path)
    assert isinstance(error, ValueError) and str(path) in str(error)
    assert "more than a gzip file" in str(error) and "(1000, 1000, 1000)" in str(error)
    assert peak < MiB


@pytest.mark.parametrize("gz", [False, True])
def test_header_declaring_1e12_elements_is_refused_before_allocating(tmp_path, gz):
    content = _header(0x08, (10_000, 10_000, 10_000)) + bytes(16)
    path = tmp_path / ("huge.gz" if gz else "huge")
    path.write_bytes(gzip.compress(content, mtime=0) if gz else content)
    error, peak = _peak(load_idx, path)
    assert isinstance(error, ValueError) and str(path) in str(error)
    assert "1000000000000 bytes" in str(error) and "IDX_MAX_BYTES" in str(error) and str(IDX_MAX_BYTES) in str(error)
    assert peak < MiB


def test_raw_header_larger_than_the_file_is_refused_before_allocating(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(_header(0x0E, (4000, 4000, 10)) + bytes(80))     # declares 1.28 GB of float64
    error, peak = _peak(load_idx, path)
    assert isinstance(error, ValueError) and str(path) in str(error) and "truncated IDX payload" in str(error)
    assert peak < MiB


@pytest.mark.parametrize("name, content, problem", [
    ("seventy-dims", _header(0x08, (1,) * 70) + b"\x00", "declares 70 dimensions; at most"),
    ("truncated-gz", None, "truncated IDX payload"),
    ("wrong-magic", b"\x00\x01\x08\x01" + bytes(8), "bad IDX magic number"),
    ("dtype-code", b"\x00\x00\x07\x01" + bytes(8), "unknown IDX dtype code 0x07"),
    ("trailing", _header(0x08, (3,)) + bytes(5), "2 unexpected trailing bytes"),
    ("truncated-dims", _header(0x08, (3, 4))[:9], "truncated IDX header"),
], ids=["70-dims", "truncated-gz", "magic", "dtype-code", "trailing", "truncated-header"])
def test_bad_idx_file_names_the_file_and_the_problem(tmp_path, name, content, problem):
    if content is None:
        content = gzip.compress(_header(0x08, (3, 4)) + bytes(5), mtime=0)
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=problem) as info:
        load_idx(path)
    assert str(path) in str(info.value)
    _no_numpy_words(str(info.value))


def _idx_dir(d, train_labels, test_labels=(0, 1), n_img=None, dtype=np.uint8):
    train_labels = np.asarray(train_labels, dtype=dtype)
    test_labels = np.asarray(test_labels, dtype=dtype)
    n_tr = len(train_labels) if n_img is None else n_img
    write_idx(d / "train-images-idx3-ubyte", np.zeros((n_tr, 2, 2), np.uint8))
    write_idx(d / "train-labels-idx1-ubyte", train_labels[:n_tr] if n_img is not None else train_labels)
    write_idx(d / "t10k-images-idx3-ubyte", np.zeros((len(test_labels), 2, 2), np.uint8))
    write_idx(d / "t10k-labels-idx1-ubyte", test_labels)
    return d


def test_a_label_of_200_among_0_to_9_is_refused(tmp_path):
    labels = np.arange(30) % 10
    labels[17] = 200
    _idx_dir(tmp_path, labels)
    with pytest.raises(ValueError) as info:
        load_idx_dir(tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "train-labels-idx1-ubyte") in msg
    assert "label 200 at index 17" in msg and "0..K-1" in msg


def test_an_int32_label_of_2_31_minus_1_is_refused_without_allocating(tmp_path):
    labels = np.arange(12, dtype=np.int32) % 3
    labels[5] = 2**31 - 1
    _idx_dir(tmp_path, labels, dtype=np.int32)
    error, peak = _peak(load_idx_dir, tmp_path)
    assert isinstance(error, ValueError)
    assert str(tmp_path / "train-labels-idx1-ubyte") in str(error)
    assert "label 2147483647 at index 5" in str(error) and str(IDX_MAX_CLASSES) in str(error)
    assert peak < 4 * MiB


def test_negative_and_gapped_and_test_labels(tmp_path):
    _idx_dir(tmp_path, np.array([0, 1, -3, 1], np.int8), dtype=np.int8)
    with pytest.raises(ValueError, match="label -3 at index 2 is out of range") as info:
        load_idx_dir(tmp_path)
    assert "train-labels-idx1-ubyte" in str(info.value)

    _idx_dir(tmp_path, [0, 1, 5, 1, 0])                # classes 2, 3, 4 have no example
    with pytest.raises(ValueError, match=r"label 5 at index 2 leaves 3 class\(es\)") as info:
        load_idx_dir(tmp_path)
    assert "train-labels-idx1-ubyte" in str(info.value)

    _idx_dir(tmp_path, [0, 1, 2, 1], test_labels=[2, 0, 3])
    with pytest.raises(ValueError, match=r"label 3 at index 2 is out of range: test labels must lie in \[0, 3\)") \
            as info:
        load_idx_dir(tmp_path)
    assert str(tmp_path / "t10k-labels-idx1-ubyte") in str(info.value)


def test_zero_images_is_refused_naming_the_file(tmp_path):
    _idx_dir(tmp_path, np.zeros(0, np.uint8), test_labels=[0])
    with pytest.raises(ValueError, match="at least one image") as info:
        load_idx_dir(tmp_path)
    assert str(tmp_path / "train-images-idx3-ubyte") in str(info.value)
    _no_numpy_words(str(info.value))


def test_idx_wrong_kind_arguments(tmp_path):
    with pytest.raises(TypeError, match="load_idx: path must be a str or os.PathLike"):
        load_idx(3)
    with pytest.raises(TypeError, match="load_idx_dir: dtype must be .*got float16"):
        load_idx_dir(tmp_path, dtype=np.float16)
    with pytest.raises(TypeError, match="load_idx_dir: flatten must be True or False"):
        load_idx_dir(tmp_path, flatten="yes")
    with pytest.raises(TypeError, match="write_idx: array must be an array of numbers"):
        write_idx(tmp_path / "x", [[1, 2], [3]])


# ================================================================================= compressed.npz

def _model():
    return nn.Sequential(nn.Linear(4, 3, rng=0, dtype=np.float64), nn.ReLU(),
                         nn.Linear(3, 2, rng=1, dtype=np.float64), nn.BatchNorm1d(2, dtype=np.float64))


def _arrays(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _rewrite(path, change_arrays=None, change_record=None, raw_meta=None):
    arrays = _arrays(path)
    record = json.loads(str(arrays["meta"]))
    if change_arrays:
        change_arrays(arrays)
    if change_record:
        record = change_record(record)
    arrays["meta"] = np.array(json.dumps(record) if raw_meta is None else raw_meta)
    np.savez(path, **arrays)
    return path


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "compressed.npz"
    save_compressed(str(path), _model())
    assert isinstance(load_compressed(str(path)), nn.Sequential)      # the valid file loads
    return path


def _refused(path, *fragments):
    with pytest.raises(CheckpointError) as info:
        load_compressed(str(path))
    msg = str(info.value)
    assert str(path) in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg
    _no_numpy_words(msg)
    return msg


@pytest.mark.parametrize("kind, dtype", [("bool", bool), ("complex", np.complex128), ("float16", np.float16),
                                         ("int", np.int64)])
def test_compressed_weight_of_another_dtype_is_refused(saved, kind, dtype):
    _rewrite(saved, lambda a: a.update({"model/0.weight": a["model/0.weight"].astype(dtype)}))
    _refused(saved, "'model/0.weight'", "dtype", np.dtype(dtype).name)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_compressed_non_finite_weight_is_refused(saved, value):
    def poison(a):
        a["model/2.bias"] = a["model/2.bias"].copy()
        a["model/2.bias"][1] = value
    _rewrite(saved, poison)
    _refused(saved, "'model/2.bias'", "finite")


def test_compressed_declaring_linear_30000x30000_is_refused_before_allocating(saved):
    def huge(record):
        record["architecture"]["layers"][0].update(in_features=30000, out_features=30000)
        return record
    _rewrite(saved, change_record=huge)
    assert saved.stat().st_size < 10_000
    error, peak = _peak(load_compressed, str(saved))
    assert isinstance(error, CheckpointError), error
    assert str(saved) in str(error) and "'model/0.weight'" in str(error) and "(30000, 30000)" in str(error)
    assert peak < 4 * MiB


def test_npy_header_declaring_more_than_it_holds_is_refused_before_allocating(saved):
    arrays = _arrays(saved)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k, v in arrays.items():
            member = io.BytesIO()
            if k == "model/0.weight":
                np.lib.format.write_array_header_1_0(
                    member, {"descr": "<f8", "fortran_order": False, "shape": (30000, 30000)})
                member.write(bytes(96))
            else:
                np.lib.format.write_array(member, v)
            zf.writestr(k + ".npy", member.getvalue())
    saved.write_bytes(buf.getvalue())
    error, peak = _peak(load_compressed, str(saved))
    assert isinstance(error, CheckpointError), error
    assert str(saved) in str(error) and "'model/0.weight' declares shape (30000, 30000)" in str(error)
    assert peak < 4 * MiB


@pytest.mark.parametrize("change, fragments", [
    (lambda r: [r], ["field 'meta'", "JSON object", "list"]),
    (lambda r: {**r, "architecture": [r["architecture"]]}, ["'architecture'", "dict", "list"]),
    (lambda r: {k: v for k, v in r.items() if k != "dtype"}, ["field 'dtype'", "missing"]),
    (lambda r: {**r, "dtype": "float16"}, ["field 'dtype'", "float16"]),
    (lambda r: {**r, "meta": [1, 2]}, ["field 'meta.meta'", "list"]),
    (lambda r: {**r, "format": "other/1"}, ["format 'other/1'"]),
])
def test_compressed_bad_record_is_refused_naming_the_field(saved, change, fragments):
    _rewrite(saved, change_record=change)
    _refused(saved, *fragments)


def _layer0(update=None, drop=None):
    def change(record):
        layer = record["architecture"]["layers"][0]
        if drop:
            del layer[drop]
        layer.update(update or {})
        return record
    return change


@pytest.mark.parametrize("change, fragments", [
    (_layer0(drop="in_features"), ["'architecture.layers[0].in_features'", "missing"]),
    (_layer0({"in_features": "4"}), ["'architecture.layers[0].in_features'", "must be an int", "str"]),
    (_layer0({"in_features": 4.0}), ["'architecture.layers[0].in_features'", "must be an int"]),
    (_layer0({"bias": 1}), ["'architecture.layers[0].bias'", "true or false"]),
    (_layer0({"type": "Attention"}), ["'architecture.layers[0].type'", "unknown layer type 'Attention'"]),
    (_layer0({"weights": 3}), ["'architecture.layers[0].weights'", "not a field of Linear"]),
])
def test_compressed_bad_architecture_field_is_refused(saved, change, fragments):
    _rewrite(saved, change_record=change)
    _refused(saved, *fragments)


def test_compressed_non_strict_json_and_missing_entries(saved, tmp_path):
    _rewrite(saved, raw_meta='{"format": NaN}')
    _refused(saved, "field 'meta'", "strict JSON")
    _rewrite(saved, raw_meta="not json at all")
    _refused(saved, "field 'meta'", "strict JSON")

    other = tmp_path / "missing-bias.npz"
    save_compressed(str(saved), _model())
    np.savez(other, **{k: v for k, v in _arrays(saved).items() if k != "model/2.bias"})
    _refused(other, "'model/2.bias'", "missing")
    np.savez(other, **{k: v for k, v in _arrays(saved).items() if k != "meta"})
    _refused(other, "no 'meta' entry")
    np.savez(other, **_arrays(saved), extra=np.zeros(2))
    _refused(other, "unexpected array 'extra'")


def test_compressed_text_file_and_truncated_zip(saved, tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("these are not the arrays you are looking for\n")
    _refused(text, "not an .npz archive")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(saved.read_bytes()[:-40])
    _refused(truncated, ".npz")
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, meta=np.array([{"a": 1}], dtype=object))
    _refused(pickled, "'meta'", "Python objects")
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        load_compressed(str(tmp_path / "nowhere.npz"))


def test_compress_arguments_and_strict_json(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3, rng=0), nn.ReLU(), nn.Linear(3, 2, rng=1))
    with pytest.raises(TypeError, match="compress_model: rank must be an int"):
        compress_model(model, rank=2.0)
    with pytest.raises(TypeError, match="compress_model: rank must be an int"):
        compress_model(model, rank="2")
    with pytest.raises(ValueError, match="compress_model: energy must be a finite number"):
        compress_model(model, energy=float("nan"))
    poisoned = nn.Sequential(nn.Linear(4, 3, rng=0), nn.ReLU(), nn.Linear(3, 2, rng=1))
    poisoned[2].weight.data[0, 1] = np.nan
    with pytest.raises(ValueError, match="compress_model: model parameter '2.weight' must be finite"):
        compress_model(poisoned, rank=1)
    with pytest.raises(ValueError, match=r"save_compressed: meta\['loss'\] must be finite \(strict JSON"):
        save_compressed(str(tmp_path / "m.npz"), model, meta={"loss": float("nan")})
    with pytest.raises(ValueError, match=r"save_compressed: meta\['a'\]\[1\] must hold only strict-JSON values"):
        save_compressed(str(tmp_path / "m.npz"), model, meta={"a": [1, object()]})
    with pytest.raises(TypeError, match="save_compressed: model must be an orthoref.nn Module"):
        save_compressed(str(tmp_path / "m.npz"), [model])
    with pytest.raises(TypeError, match="count_parameters: model must be an orthoref.nn Module"):
        count_parameters("model")
    with pytest.raises(TypeError, match="format_compress_report: report must be the dict"):
        format_compress_report(3)
    with pytest.raises(ValueError, match="format_compress_report: report lacks"):
        format_compress_report({})
    assert not (tmp_path / "m.npz").exists()
    with pytest.raises(TypeError, match=r"build: spec\.layers\[0\]\.in_features must be an int"):
        build({"type": "Sequential", "layers": [{"type": "Linear", "in_features": "4", "out_features": 2,
                                                  "bias": True}]})
    with pytest.raises(ValueError, match=r"build: spec\.in_features must be an int in \[1, 2147483647\]"):
        build({"type": "Linear", "in_features": 10**30, "out_features": 2, "bias": True})
    with pytest.raises(ValueError, match=r"build: spec\.layers\[0\]\.out_features is missing"):
        build({"type": "Sequential", "layers": [{"type": "Linear", "in_features": 4, "bias": True}]})


# ============================================================================ fixture directories

@pytest.fixture
def fixdir(tmp_path):
    d = tmp_path / "fx"
    export(d, ops="tanh", dtypes=("float64",))
    assert all(r.passed for r in check_dir(d))
    return d


def _manifest(d):
    return json.loads((d / "manifest.json").read_text())


def _write_manifest(d, manifest):
    (d / "manifest.json").write_text(json.dumps(manifest))


def _cli_check(d, capsys):
    code = main(["oracle", "check", "--against", str(d)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _bad_manifest(d, capsys, *fragments):
    with pytest.raises(ValueError) as info:
        load_manifest(d)
    msg = str(info.value)
    assert str(d / "manifest.json") in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg
    code, out, err = _cli_check(d, capsys)
    assert code == 2 and "manifest.json" in err and "Traceback" not in err + out
    return msg


def test_manifest_that_is_not_json(fixdir, capsys):
    (fixdir / "manifest.json").write_text("{ this is not json")
    _bad_manifest(fixdir, capsys, "not valid strict JSON")
    (fixdir / "manifest.json").write_bytes(b"\xff\xfe\x00garbage")
    _bad_manifest(fixdir, capsys, "not valid strict JSON")


def _drop(key):
    def change(m):
        del m["fixtures"][0][key]
        return m
    return change


def _set(key, value):
    def change(m):
        m["fixtures"][0][key] = value
        return m
    return change


@pytest.mark.parametrize("change, fragments", [
    (lambda m: [m], ["JSON object", "list"]),
    (lambda m: {k: v for k, v in m.items() if k != "fixtures"}, ["'fixtures'", "must be a list"]),
    (lambda m: {**m, "fixtures": {"a": 1}}, ["'fixtures'", "must be a list", "dict"]),
    (lambda m: {**m, "fixtures": [3]}, ["fixtures[0]", "must be an object"]),
    (_drop("op"), ["fixtures[0].op is missing"]),
    (_drop("rtol"), ["fixtures[0].rtol is missing"]),
    (_set("rtol", "1e-10"), ["fixtures[0].rtol must be a finite number > 0"]),
    (_set("rtol", -1), ["fixtures[0].rtol must be a finite number > 0"]),
    (_set("sample", "0"), ["fixtures[0].sample must be an int"]),
    (_set("kwargs", [1]), ["fixtures[0].kwargs must be an object"]),
    (_set("inputs", [{"name": "input_0", "shape": "5x8", "dtype": "float64", "differentiable": True}]),
     ["fixtures[0].inputs[0].shape must be a list of ints"]),
    (_set("outputs", [{"name": "output_0"}]), ["fixtures[0].outputs[0].shape is missing"]),
    (_set("dtype", "float16"), ["fixtures[0].dtype must be 'float64' or 'float32'"]),
    (_set("sha256", 12), ["fixtures[0].sha256 must be 64"]),
])
def test_malformed_manifest_fails_cleanly(fixdir, capsys, change, fragments):
    _write_manifest(fixdir, change(_manifest(fixdir)))
    _bad_manifest(fixdir, capsys, *fragments)


def test_manifest_with_a_nan_token_is_not_strict_json(fixdir, capsys):
    text = (fixdir / "manifest.json").read_text().replace('"rtol": 1e-10', '"rtol": NaN', 1)
    assert "NaN" in text
    (fixdir / "manifest.json").write_text(text)
    _bad_manifest(fixdir, capsys, "not valid strict JSON", "NaN")


@pytest.mark.parametrize("file", ["/etc/passwd", "../outside.npz", "tanh/../../outside.npz", "..\\outside.npz"])
def test_manifest_file_entry_may_not_leave_its_directory(fixdir, capsys, file):
    (fixdir.parent / "outside.npz").write_bytes((fixdir / _manifest(fixdir)["fixtures"][0]["file"]).read_bytes())
    _write_manifest(fixdir, _set("file", file)(_manifest(fixdir)))
    _bad_manifest(fixdir, capsys, "fixtures[0].file", "inside the fixture directory", repr(file))


def test_manifest_file_entry_may_not_be_a_symlink_leading_out(fixdir, capsys):
    outside = fixdir.parent / "outside.npz"
    entry = _manifest(fixdir)["fixtures"][0]
    outside.write_bytes((fixdir / entry["file"]).read_bytes())
    try:
        os.symlink(outside, fixdir / "link.npz")
    except (OSError, NotImplementedError):
        pytest.skip("symbolic links are not available here")
    _write_manifest(fixdir, _set("file", "link.npz")(_manifest(fixdir)))
    _bad_manifest(fixdir, capsys, "fixtures[0].file 'link.npz' leads outside the fixture directory")


def test_fixture_of_an_unknown_op_is_a_failure_not_a_skip(fixdir, capsys):
    _write_manifest(fixdir, _set("op", "no_such_op")(_manifest(fixdir)))
    reports = list(check_dir(fixdir))
    bad = [r for r in reports if not r.passed]
    assert len(bad) == 1 and "no registered op named 'no_such_op'" in bad[0].note
    assert len(reports) == len(_manifest(fixdir)["fixtures"])
    code, out, err = _cli_check(fixdir, capsys)
    assert code == 1 and "FAIL" in out and "no_such_op" in out and "Traceback" not in err


def test_sha256_mismatch_and_pickled_arrays_are_failures(fixdir, capsys):
    manifest = _manifest(fixdir)
    entry = manifest["fixtures"][0]
    path = fixdir / entry["file"]
    arrays = _arrays(path)
    arrays["input_0"] = arrays["input_0"].astype(object)
    np.savez(path, **arrays)
    rep = next(iter(check_dir(fixdir)))
    assert not rep.passed and "sha256 differs" in rep.note
    entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()     # a consistent but pickled fixture
    _write_manifest(fixdir, manifest)
    rep = next(iter(check_dir(fixdir)))
    assert not rep.passed and str(path) in rep.note and "Python objects" in rep.note
    _no_numpy_words(rep.note)
    code, out, err = _cli_check(fixdir, capsys)
    assert code == 1 and "Traceback" not in err


def test_missing_fixture_array_is_a_failure_naming_it(fixdir):
    manifest = _manifest(fixdir)
    entry = manifest["fixtures"][0]
    path = fixdir / entry["file"]
    np.savez(path, **{k: v for k, v in _arrays(path).items() if k != "cotangent_0"})
    entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    _write_manifest(fixdir, manifest)
    rep = next(iter(check_dir(fixdir)))
    assert not rep.passed and "'cotangent_0' is missing" in rep.note


def test_check_dir_arguments(fixdir):
    with pytest.raises(ValueError, match="check_dir: rtol must be a finite number > 0"):
        check_dir(fixdir, rtol=float("nan"))
    with pytest.raises(TypeError, match="check_dir: ops must be"):
        check_dir(fixdir, ops=3)
    with pytest.raises(TypeError, match="load_manifest: directory must be"):
        load_manifest(None)


def test_export_writes_strict_json(fixdir):
    json.loads((fixdir / "manifest.json").read_text(),
               parse_constant=lambda token: pytest.fail(f"non-strict token {token}"))


# ========================================================================= reference and compare

def test_reference_unknown_name_lists_close_names():
    with pytest.raises(ValueError, match=r"reference: no registered op named 'tanhh' .*close names: .*tanh"):
        reference("tanhh", np.ones(3))
    with pytest.raises(TypeError, match="reference: name must be a registered op name"):
        reference(None, np.ones(3))
    with pytest.raises(ValueError, match=r"compare: no registered op named 'sofmax'"):
        compare("sofmax", [np.ones(3)], np.ones(3))


def test_reference_input_count_kind_and_finiteness(rng):
    with pytest.raises(ValueError, match=r"reference: tanh takes 1 input\(s\), got 2"):
        reference("tanh", np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match=r"reference: tanh takes 1 input\(s\), got 0"):
        reference("tanh")
    with pytest.raises(ValueError, match="reference: tanh: input 0 must be finite"):
        reference("tanh", np.array([1.0, np.nan]))
    with pytest.raises(TypeError, match="reference: tanh: input 0 must be a real numeric array"):
        reference("tanh", np.ones(3, bool))
    with pytest.raises(TypeError, match="reference: tanh: input 0 must be a real numeric array"):
        reference("tanh", np.ones(3, complex))


def test_reference_cotangent_exact_shape_and_finite(rng):
    x = rng.standard_normal((2, 3))
    _, vjp = reference("tanh", x)
    with pytest.raises(ValueError, match=r"reference vjp: tanh: cotangent 0 must have the output's shape \(2, 3\), "
                                         r"got \(\)"):
        vjp(np.ones(()))                               # no broadcasting of a scalar
    with pytest.raises(ValueError, match="reference vjp: tanh: cotangent 0 must be finite"):
        vjp(np.full((2, 3), np.inf))
    with pytest.raises(ValueError, match="reference vjp: tanh has 1 output"):
        vjp((np.ones((2, 3)), np.ones((2, 3))))
    (g,) = vjp(np.ones((2, 3)))
    np.testing.assert_allclose(g, 1 - np.tanh(x) ** 2)


def test_compare_validates_rtol_cotangent_and_grads(rng):
    x = rng.standard_normal((2, 3))
    y = np.tanh(x)
    for bad in (float("nan"), 0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="compare: rtol must be a finite number > 0"):
            compare("tanh", [x], y, rtol=bad)
    with pytest.raises(TypeError, match="compare: rtol must be a real number"):
        compare("tanh", [x], y, rtol="1e-6")
    with pytest.raises(ValueError, match=r"compare: tanh: cotangent 0 must have the output's shape \(2, 3\)"):
        compare("tanh", [x], y, their_grads=[np.ones((2, 3))], cotangent=np.ones(3))
    with pytest.raises(ValueError, match="compare: tanh: cotangent 0 must be finite"):
        compare("tanh", [x], y, their_grads=[np.ones((2, 3))], cotangent=np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match=r"compare: their_grads\[0\] must have input 0's shape \(2, 3\)"):
        compare("tanh", [x], y, their_grads=[np.ones(6)])
    with pytest.raises(ValueError, match="compare: their_grads must have one entry per input"):
        compare("tanh", [x], y, their_grads=[None, None])
    with pytest.raises(TypeError, match="compare: kwargs must be a dict"):
        compare("tanh", [x], y, kwargs=[1])
    report = compare("tanh", [x], y, their_grads=[1 - y ** 2], cotangent=np.ones((2, 3)))
    assert report.passed
