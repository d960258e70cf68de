"""Failure model of checkpoints and run folders (the README's "Failure model": checkpoints and runs): crafted checkpoints
fail before anything is allocated or trained, metrics.json is strict JSON, run folders are claimed with a
lock, divergence never writes a bad checkpoint, signals and full disks leave no temporary file behind."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from orthoref import _io, cli, train
from orthoref.train import CheckpointError, DivergenceError, TrainConfig, fit

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(hidden=(8,), epochs=1, progress=False)


def _leftovers(folder):
    """Temporary files and the lock left in ``folder``."""
    return [f for f in os.listdir(folder) if ".tmp" in f or f == _io.LOCK_NAME]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    fit(TrainConfig(out=str(out), **TINY), log=None)
    return out / "checkpoint.npz"


def _craft(src, dst, edit_meta=None, edit_arrays=None):
    """Copy checkpoint ``src`` to ``dst`` with its meta record and/or arrays edited."""
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    if edit_meta is not None:
        meta = json.loads(str(arrays["meta"]))
        edit_meta(meta)
        arrays["meta"] = np.array(json.dumps(meta))
    if edit_arrays is not None:
        edit_arrays(arrays)
    np.savez(dst, **arrays)
    return str(dst)


def _set(path, value):
    def edit(d):
        *head, last = path
        for k in head:
            d = d[k]
        if value is KeyError:
            del d[last]
        else:
            d[last] = value
    return edit


def _retype(key, dtype):
    def edit(arrays):
        arrays[key] = arrays[key].astype(dtype)
    return edit


def _poison(arrays):
    arrays["model/0.weight"] = arrays["model/0.weight"].copy()
    arrays["model/0.weight"][0, 0] = np.nan


CRAFTED = {
    "bool weights": (None, _retype("model/0.weight", bool), r"model/0\.weight has dtype bool"),
    "complex weights": (None, _retype("model/0.weight", np.complex64), r"model/0\.weight has dtype complex64"),
    "float64 weights in a float32 run": (None, _retype("model/2.bias", np.float64), r"model/2\.bias has dtype"),
    "complex optimizer state": (None, _retype("optim/state/0/exp_avg", np.complex64), r"optim/state/0/exp_avg"),
    "NaN weight": (None, _poison, r"model/0\.weight holds NaN"),
    "epoch -5": (_set(["epoch"], -5), None, r"meta\.epoch must be an int in \[0, 1\].*-5"),
    "epoch beyond the run": (_set(["epoch"], 7), None, r"meta\.epoch must be an int in \[0, 1\]"),
    "string epoch": (_set(["epoch"], "1"), None, r"meta\.epoch"),
    "config a list": (_set(["config"], [1, 2]), None, r"config: expected a JSON object"),
    "config missing a key": (_set(["config", "hidden"], KeyError), None, r"config: missing field.*hidden"),
    "config unknown key": (_set(["config", "colour"], "red"), None, r"config: unknown field.*colour"),
    "hidden a string": (_set(["config", "hidden"], "abc"), None, r"config: hidden must be a list"),
    "hidden of floats": (_set(["config", "hidden"], [8.5]), None, r"config: hidden must be a sequence of positive"),
    "lr a string": (_set(["config", "lr"], "fast"), None, r"config: lr must be a real number"),
    "epochs negative": (_set(["config", "epochs"], -3), None, r"config: epochs must be an int"),
    "history a string": (_set(["history"], "lots of epochs"), None, r"meta\.history must be a list"),
    "history too short": (_set(["history"], []), None, r"meta\.history must hold one record per epoch"),
    "history record a list": (_set(["history", 0], [1]), None, r"meta\.history\[0\] must be an object"),
    "history loss NaN": (_set(["history", 0, "loss"], float("nan")), None, r"meta\.history\[0\]\.loss"),
    "meta a list": (lambda m: (m.clear(), None), None, r"meta is missing"),
    "format 2": (_set(["format"], 2), None, r"checkpoint format 2, expected 1"),
    "reg_rng garbage": (_set(["reg_rng"], {"bit_generator": "PCG64", "state": "x"}), None, r"meta\.reg_rng"),
    "unknown array": (None, lambda a: a.__setitem__("model/9.weight", np.zeros((2, 2), np.float32)),
                      r"model/9\.weight is not a parameter"),
    "missing array": (None, lambda a: a.pop("model/2.bias"), r"lacks model parameter.*2\.bias"),
    "rng garbage": (None, lambda a: a.__setitem__("rng", np.array(json.dumps([1, 2]))), r"rng must be the state"),
    "param_groups garbage": (None, lambda a: a.__setitem__("optim/param_groups", np.array('["x"]')),
                             r"optim/param_groups must be a list"),
    "meta not JSON": (None, lambda a: a.__setitem__("meta", np.array("{nope")), r"meta is not valid JSON"),
    "meta a number array": (None, lambda a: a.__setitem__("meta", np.arange(3.0)), r"meta must be a JSON text"),
    "step a float": (None, _retype("optim/state/0/step", np.float32), r"optim/state/0/step must be an integer"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_checkpoint_is_refused_naming_file_and_field(ckpt, tmp_path, case):
    edit_meta, edit_arrays, pattern = CRAFTED[case]
    bad = _craft(ckpt, tmp_path / "bad.npz", edit_meta, edit_arrays)
    with pytest.raises(CheckpointError, match=pattern) as info:
        train.load_checkpoint(bad)
    assert str(info.value).startswith(bad), "the message names the file"
    out = tmp_path / "resumed"
    with pytest.raises(CheckpointError, match=pattern):      # and nothing is trained or written
        fit(TrainConfig(epochs=None, progress=False, out=str(out)), resume=bad, log=None)
    assert not out.exists()


def test_huge_declared_hidden_fails_fast_without_allocating(ckpt, tmp_path):
    """A few-KiB checkpoint whose configuration declares hidden=[40000, 40000] (6 GiB of parameters)."""
    from orthoref.analysis import load_model

    def shape_only(arrays):          # three layers as the config says, but tiny arrays
        arrays["model/2.weight"] = np.zeros((4, 8), np.float32)
        arrays["model/2.bias"] = np.zeros(4, np.float32)
        arrays["model/4.weight"] = np.zeros((10, 4), np.float32)
        arrays["model/4.bias"] = np.zeros(10, np.float32)
    bad = _craft(ckpt, tmp_path / "huge.npz", _set(["config", "hidden"], [40000, 40000]), shape_only)
    assert os.path.getsize(bad) < 64 * 1024
    for call in (lambda: train.load_checkpoint(bad), lambda: load_model(bad),
                 lambda: fit(TrainConfig(epochs=None, progress=False, out=str(tmp_path / "o")), resume=bad,
                             log=None)):
        tracemalloc.start()
        t0 = time.perf_counter()
        try:
            with pytest.raises(CheckpointError, match=r"model/0\.weight has shape \(8, 64\).*\(40000, 64\)"):
                call()
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert peak < 50 * 2 ** 20 and time.perf_counter() - t0 < 5


def test_forged_member_size_is_refused_before_reading(ckpt, tmp_path):
    """An .npy header declaring 256 MB for an archive member holding 2 KiB."""
    import io
    import zipfile
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False, "shape": (10 ** 6, 64)})
    src = zipfile.ZipFile(ckpt)
    dst = tmp_path / "forged.npz"
    with zipfile.ZipFile(dst, "w") as z:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "model/0.weight.npy":
                data = head.getvalue() + b"\0" * 2048
            z.writestr(info.filename, data)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=r"model/0\.weight.*declares shape \(1000000, 64\)"):
            train.load_checkpoint(str(dst))
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 50 * 2 ** 20


def test_object_array_and_text_file_are_not_checkpoints(ckpt, tmp_path, capsys):
    with np.load(ckpt) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["model/0.weight"] = np.array([object()] * 3, dtype=object)
    np.savez(tmp_path / "obj.npz", **arrays)
    with pytest.raises(CheckpointError, match="object"):
        train.load_checkpoint(str(tmp_path / "obj.npz"))
    text = tmp_path / "notes.txt"
    text.write_text("these are my notes, not a checkpoint\n")
    for argv in (["analyze", str(text)], ["train", "--resume", str(text)]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "not a readable orthoref checkpoint" in err and "allow_pickle" not in err
        assert len(err.strip().splitlines()) == 1
    assert cli.main(["analyze", str(tmp_path / "missing.npz")]) == 2
    assert "No such file" in capsys.readouterr().err


def test_riemannian_sgd_checkpoint_resumes_exactly(tmp_path):
    """Its momentum buffers are None (momentum 0): stored as markers, not pickled object arrays."""
    cfg = dict(hidden=(8,), dtype="float64", optimizer="riemannian_sgd", progress=False)
    full = fit(TrainConfig(epochs=2, out=str(tmp_path / "full"), **cfg), log=None)
    fit(TrainConfig(epochs=1, out=str(tmp_path / "part"), **cfg), log=None)
    resumed = fit(TrainConfig(epochs=2, progress=False), resume=str(tmp_path / "part" / "checkpoint.npz"),
                  log=None)
    for (k, a), b in zip(full["model"].state_dict().items(), resumed["model"].state_dict().values()):
        assert np.array_equal(a, b), k


def test_metrics_json_is_strict(tmp_path, monkeypatch):
    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")
    fit(TrainConfig(out=str(tmp_path / "a"), **TINY), log=None)
    json.loads((tmp_path / "a" / "metrics.json").read_text(), parse_constant=refuse)
    train._write_metrics(str(tmp_path), [{"epoch": 1, "loss": float("nan"), "train_acc": float("inf"),
                                          "test_acc": 0.5, "seconds": 1.0}])
    rec = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=refuse)[0]
    assert rec["loss"] is None and rec["train_acc"] is None and rec["test_acc"] == 0.5
    from orthoref import sequence
    monkeypatch.setattr(sequence, "_clip_global_norm", lambda params, max_norm: float("nan"))
    res = sequence.fit_adding(T=4, hidden=4, steps=3, eval_every=1, log=None, out=str(tmp_path / "rnn"))
    assert np.isnan(res["final_mse"])
    data = json.loads((tmp_path / "rnn" / "metrics.json").read_text(), parse_constant=refuse)
    assert data["final_mse"] is None and data["history"][-1] == [1, None]


def test_run_folder_is_claimed_before_the_data_loads(tmp_path, monkeypatch):
    seen = []

    def load_data(config):
        seen.append(sorted(os.listdir(config.out)))
        raise ValueError("no data today")
    monkeypatch.setattr(train, "load_data", load_data)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="no data today"):
        fit(TrainConfig(**TINY), log=None)
    assert seen == [[_io.LOCK_NAME]]
    assert os.listdir(tmp_path / "runs") == []       # the empty folder it created is gone again


def test_default_folders_are_unique_within_one_second(tmp_path, monkeypatch):
    monkeypatch.setattr(_io, "_timestamp", lambda: "20260101-000000")
    monkeypatch.chdir(tmp_path)
    results = []
    threads = [threading.Thread(target=lambda: results.append(fit(TrainConfig(**TINY), log=None)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outs = sorted(r["config"].out for r in results)
    assert outs == [os.path.join("runs", "20260101-000000" + s) for s in ("", "-2", "-3")]
    for o in outs:
        assert sorted(os.listdir(o)) == ["checkpoint.npz", "metrics.csv", "metrics.json"]


def test_live_lock_refuses_and_stale_lock_is_taken_over(tmp_path):
    out = tmp_path / "run"
    with _io.claim_run_dir(str(out)):
        with pytest.raises(_io.RunDirBusy, match=rf"in use by another run \(PID {os.getpid()}"):
            fit(TrainConfig(out=str(out), **TINY), log=None)
    assert not out.exists()                    # the empty folder the claim created went with it
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / _io.LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": _io._host()}))
    stale_tmp = out / f".checkpoint.npz.tmp-{_io._host()}-{dead.pid}"
    stale_tmp.write_bytes(b"half a checkpoint")
    fit(TrainConfig(out=str(out), **TINY), log=None)
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "metrics.csv", "metrics.json"]


def test_resume_into_another_runs_folder_needs_overwrite(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    fit(TrainConfig(out=str(a), **TINY), log=None)
    fit(TrainConfig(out=str(b), **dict(TINY, hidden=(4,))), log=None)
    before = {f: (b / f).read_bytes() for f in os.listdir(b)}
    assert cli.main(["train", "--resume", str(a / "checkpoint.npz"), "--epochs", "2", "--out", str(b),
                     "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "already holds another run's checkpoint.npz" in err and "--overwrite" in err
    assert {f: (b / f).read_bytes() for f in os.listdir(b)} == before
    assert cli.main(["train", "--resume", str(a / "checkpoint.npz"), "--epochs", "2", "--out", str(b),
                     "--no-progress", "--overwrite"]) == 0
    assert train.load_checkpoint(str(b / "checkpoint.npz"))[0]["config"]["hidden"] == [8]


def test_lr_1e30_diverges_without_writing_a_checkpoint(tmp_path, capsys):
    out = tmp_path / "r"
    with np.errstate(all="ignore"):
        assert cli.main(["train", "--lr", "1e30", "--hidden", "32", "--epochs", "2", "--out", str(out),
                         "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "diverged" in err and "no checkpoint was written" in err and "last good" not in err
    assert not out.exists() or "checkpoint.npz" not in os.listdir(out)


def test_finite_but_overflowing_weights_are_never_checkpointed(tmp_path, monkeypatch):
    """The last step of epoch 2 leaves finite weights of 1e30: the test-set logits overflow; the epoch-1
    checkpoint is kept and named."""
    out = tmp_path / "run"
    fit(TrainConfig(out=str(out), **dict(TINY, epochs=1)), log=None)
    good = (out / "checkpoint.npz").read_bytes()
    original = train.OPTIMIZERS["adam"]
    from orthoref.data import load_digits
    steps = -(-len(load_digits("train")[0]) // 64)

    class Blowup(original):
        calls = 0

        def step(self):
            super().step()
            Blowup.calls += 1
            if Blowup.calls == steps:           # the last step of the resumed epoch
                for group in self.param_groups:
                    for p in group["params"]:
                        p.data[...] = np.float32(1e30)
    monkeypatch.setitem(train.OPTIMIZERS, "adam", Blowup)
    with np.errstate(all="ignore"):
        with pytest.raises(DivergenceError, match=r"after epoch 2.*the last good checkpoint \(epoch 1\) is kept"):
            fit(TrainConfig(epochs=3, progress=False), resume=str(out / "checkpoint.npz"), log=None)
    assert (out / "checkpoint.npz").read_bytes() == good
    assert not _leftovers(out)


def test_save_checkpoint_refuses_nonfinite_state(tmp_path):
    from orthoref._checks import NonFiniteError
    config = TrainConfig(**TINY).validate()
    model = train.build_model(config, (64,), 10)
    opt = train.OPTIMIZERS["adam"](model.parameters(), lr=1e-3)
    model[0].weight.data[0, 0] = np.inf
    with pytest.raises(NonFiniteError, match=r"save_checkpoint: model/0\.weight holds NaN or Inf"):
        train.save_checkpoint(str(tmp_path / "c.npz"), model, opt, np.random.default_rng(0), 0, config, [])
    assert os.listdir(tmp_path) == []


def test_cli_turns_os_errors_into_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert cli.main(["train", "--out", str(tmp_path / "file"), "--epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("orthoref train: ") and "not a folder" in err and len(err.splitlines()) == 1


# ---------------------------------------------------------------------------------------------------------
# Subprocesses: concurrent runs, signals, kill -9, full disk

def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("ORTHOREF_TRACEBACK", None)
    return env


def _start(out, *extra, cwd=None):
    return subprocess.Popen([sys.executable, "-m", "orthoref.cli", "train", "--hidden", "8", "--epochs", "400",
                             "--out", str(out), "--no-progress", *extra], cwd=cwd, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(path, proc, timeout=30.0):
    t0 = time.monotonic()
    while not os.path.exists(path):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.01)


def test_second_run_on_one_out_is_refused_and_sigterm_cleans_up(tmp_path):
    out = tmp_path / "run"
    first = _start(out)
    try:
        _wait_for(out / "checkpoint.npz", first)
        second = subprocess.run([sys.executable, "-m", "orthoref.cli", "train", "--hidden", "8", "--epochs", "1",
                                 "--out", str(out), "--no-progress"], env=_env(), capture_output=True, text=True,
                                timeout=60)
        assert second.returncode == 2
        assert "is in use by another run" in second.stderr and f"PID {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 128 + signal.SIGTERM, err
    assert "interrupted by SIGTERM" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not _leftovers(out)
    train.load_checkpoint(str(out / "checkpoint.npz"))        # intact


def test_sigint_removes_temp_file_and_lock(tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    try:
        _wait_for(out / "metrics.json", proc)
        time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "interrupted by SIGINT" in err and "is kept" in err and "Traceback" not in err
    assert not _leftovers(out)


def test_kill_9_loop_then_a_new_run_removes_stale_temp_files(tmp_path):
    out = tmp_path / "run"
    rng = np.random.default_rng(0)
    pids = []
    for k in range(5):
        proc = _start(out, "--overwrite")
        _wait_for(out / _io.LOCK_NAME, proc)
        time.sleep(float(rng.uniform(0.0, 0.3)))
        proc.kill()
        proc.wait()
        pids.append(proc.pid)
    # a write cut short by kill -9 leaves a temporary file named with the dead PID; make sure there is one
    (out / f".checkpoint.npz.tmp-{_io._host()}-{pids[-1]}").write_bytes(b"partial")
    (out / f".metrics.json.tmp-{pids[0]}").write_bytes(b"partial, older naming")
    done = subprocess.run([sys.executable, "-m", "orthoref.cli", "train", "--hidden", "8", "--epochs", "1",
                           "--out", str(out), "--no-progress", "--overwrite"], env=_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not _leftovers(out)


def _mount_tmpfs(path, size):
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")


def test_full_disk_is_a_clean_error_and_keeps_the_checkpoint(tmp_path, capsys):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "2m")
    try:
        out = disk / "run"
        fit(TrainConfig(out=str(out), **TINY), log=None)
        good = (out / "checkpoint.npz").read_bytes()
        with open(disk / "filler", "wb") as f:        # fill the disk, then free two pages for the lock file
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        size = os.path.getsize(disk / "filler")
        os.truncate(disk / "filler", max(0, size - 8192))
        rc = cli.main(["train", "--resume", str(out / "checkpoint.npz"), "--epochs", "2", "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2
        assert "No space left on device" in err and str(out / "checkpoint.npz") in err and "intact" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert (out / "checkpoint.npz").read_bytes() == good
        assert not _leftovers(out)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
