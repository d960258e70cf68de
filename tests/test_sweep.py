"""Sweeps (orthoref.sweep, ``orthoref sweep``): the spec is validated before anything runs, cells are
computed once, and a cell's result does not depend on where it ran: serially, on a LocalCluster, on an
external scheduler, or killed with its worker and resumed elsewhere (final weights bit-identical).

Every cell here is an MLP with hidden (8,) on the bundled digits; the Dask tests start their clusters on
127.0.0.1 and stop every process they start."""
import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from orthoref import cli
from orthoref import sweep
from orthoref.train import RunInterrupted, TrainConfig, fit

ROOT = pathlib.Path(__file__).resolve().parents[1]
BASE = '[base]\nhidden = [8]\nepochs = 1\ndata = "digits"\nlr = 0.01\n'


def write_spec(tmp_path, text, name="spec.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def weights(cell_dir):
    """The parameters and optimizer state of a cell's checkpoint (the history's timings left out)."""
    with np.load(os.path.join(cell_dir, "checkpoint.npz"), allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k.startswith(("model/", "optim/state/"))}


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert sorted(wa) == sorted(wb) and wa
    for k in wa:
        assert wa[k].dtype == wb[k].dtype and np.array_equal(wa[k], wb[k]), k   # bit for bit


def serial_dir(tmp_path, cell, threads=1):
    """The cell run in this process, without Dask, in a folder of its own."""
    d = tmp_path / "serial" / cell.id
    row = sweep.run_cell(cell.config, d, threads=threads)
    assert row["status"] == "done" and row["worker"] == "in-process"
    return str(d)


def rows_of(out):
    return {r["cell_id"]: r for r in sweep.read_results(out)}


# ---------------------------------------------------------------------------------------------------------
# The spec

BAD_SPECS = [
    ("[base]\nhiden = [8]\n", ["base.hiden", "unknown field"]),
    ("[axes]\nsead = [0, 1]\n", ["axes.sead", "unknown field"]),
    ("[base]\nlr = -1.0\n", ["base", "lr"]),
    ("[base]\nepochs = 1.5\n", ["base", "epochs"]),
    ('[axes]\ninit = ["orthogonal", "no_such_init"]\n', ["axes.init[1]", "init must be one of"]),
    ("[axes]\nseed = []\n", ["axes.seed is empty"]),
    ("[axes]\nseed = 3\n", ["axes.seed must be a list"]),
    ("[axes]\nhidden = [8, 16]\n", ["axes.hidden[0] must be a list"]),
    ('[axes]\nreg = [["so:-1"]]\n', ["axes.reg[0]", "so:-1"]),
    ("[axes]\nseed = [0, 1, 0]\n", ["axes.seed[2] repeats"]),
    ('[base]\nout = "x"\n', ["base.out", "set by the sweep"]),
    ("[axes]\nprogress = [true]\n", ["axes.progress", "set by the sweep"]),
    ("[base]\nseed = 0\n[axes]\nseed = [1]\n", ["axes.seed", "both [base] and [axes]"]),
    ('[axes]\noptimizer = ["adam", "riemannian_sgd"]\ninit = ["orthogonal", "default"]\n',
     ["cell optimizer=riemannian_sgd init=default", "orthogonal initializer"]),
    ("[sweep]\nworkers = 2\n", ["unknown table", "sweep"]),
    ("[base]\nepochs = \n", ["not valid TOML"]),
    ("base = 3\n", ["base must be a table"]),
]


@pytest.mark.parametrize("text,expected", BAD_SPECS, ids=[f"bad{i}" for i in range(len(BAD_SPECS))])
def test_a_bad_spec_is_refused_naming_the_file_and_the_key(tmp_path, text, expected):
    path = write_spec(tmp_path, text)
    with pytest.raises(ValueError) as info:
        sweep.load_spec(path)
    message = str(info.value)
    assert message.startswith(path), message
    for part in expected:
        assert part in message, message


def test_a_bad_spec_runs_nothing_and_the_cli_says_why(tmp_path, capsys):
    path = write_spec(tmp_path, BASE + "[axes]\nseed = []\n")
    out = tmp_path / "out"
    assert cli.main(["sweep", path, "--out", str(out), "--workers", "0"]) == 2
    assert "axes.seed is empty" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(FileNotFoundError):
        sweep.load_spec(tmp_path / "missing.toml")
    for argv in (["sweep", path], ["sweep", path, "--out", str(out), "--csv", "x.csv"],
                 ["sweep", "report", str(out), "--out", str(out)], ["sweep", "report"]):
        assert cli.main(argv) == 2, argv
    assert cli.main(["sweep", "report", str(out)]) == 2            # no results.sqlite there
    assert "no sweep results here" in capsys.readouterr().err


def test_cells_and_their_ids(tmp_path):
    spec = sweep.load_spec(ROOT / "sweeps" / "smoke.toml")
    assert len(spec.cells) == 4 and len({c.id for c in spec.cells}) == 4
    assert [c.axes for c in spec.cells] == [{"init": i, "seed": s} for i in ("orthogonal", "default") for s in (0, 1)]
    for c in spec.cells:
        assert len(c.id) == 12 and int(c.id, 16) >= 0 and sweep.cell_id(c.config) == c.id
    cfg = TrainConfig(hidden=(8,), epochs=1)
    same = [cfg, TrainConfig(hidden=[8], epochs=1, lr=1e-3, out="elsewhere", progress=False),
            {"hidden": [8], "epochs": 1}, {"hidden": (8,), "epochs": 1, "lr": 0.001}]
    assert len({sweep.cell_id(c) for c in same}) == 1
    assert sweep.cell_id({"hidden": [8], "epochs": 1, "seed": 1}) != sweep.cell_id(cfg)
    with pytest.raises(ValueError, match="unknown or sweep-controlled"):
        sweep.cell_id({"out": "x"})
    with pytest.raises(TypeError):
        sweep.cell_id("hidden=8")
    for path in sorted((ROOT / "sweeps").glob("*.toml")):          # every spec shipped is valid
        assert sweep.load_spec(path).cells


def test_an_interrupted_cell_resumes_from_its_checkpoint_bit_identically(tmp_path, capsys):
    """Without Dask (--workers 0): a cell stopped after its first epoch (as Ctrl-C leaves it) resumes."""
    path = write_spec(tmp_path, BASE.replace("epochs = 1", "epochs = 3") + "[axes]\nseed = [0, 1]\n")
    spec = sweep.load_spec(path)
    out = tmp_path / "out"
    first = spec.cells[0]

    def stop(line):
        raise KeyboardInterrupt
    with pytest.raises(RunInterrupted):
        fit(TrainConfig(**first.config, out=str(out / "cells" / first.id), progress=False), log=stop)
    res = sweep.run_sweep(path, out, workers=0)
    assert (res["computed"], res["done"], res["failed"]) == (2, 2, 0)
    rows = rows_of(out)
    assert rows[first.id]["resumed_from"] == 1 and rows[spec.cells[1].id]["resumed_from"] == 0
    assert all(r["epoch"] == 3 and r["blas_threads"] in (1, None) for r in rows.values())
    for cell in spec.cells:
        assert_same_weights(out / "cells" / cell.id, serial_dir(tmp_path, cell))
    assert "resumed at epoch 1" in capsys.readouterr().out


def test_ctrl_c_leaves_the_sweep_resumable(tmp_path):
    path = write_spec(tmp_path, BASE.replace("epochs = 1", "epochs = 25") + "[axes]\nseed = [0, 1, 2]\n")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "orthoref.cli", "sweep", path, "--out", str(out),
                             "--workers", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and not _done_rows(out):
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGINT, stderr
    assert "interrupted" in stderr and "run the same command again" in stderr
    before = _done_rows(out)
    assert 1 <= before < 3
    assert not (out / ".orthoref.lock").exists()
    assert not any((out / "cells").glob("*/.orthoref.lock"))
    res = sweep.run_sweep(path, out, workers=0, log=None)
    assert res["skipped"] == before and res["computed"] == 3 - before and res["done"] == 3 - before
    assert _done_rows(out) == 3
    runs = sqlite3.connect(out / "results.sqlite").execute("SELECT status FROM runs ORDER BY run").fetchall()
    assert [r[0] for r in runs] == ["interrupted", "completed"]


def _done_rows(out):
    db = os.path.join(out, "results.sqlite")
    if not os.path.exists(db):
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return con.execute("SELECT COUNT(*) FROM cells WHERE status = 'done'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


# ---------------------------------------------------------------------------------------------------------
# On Dask

@pytest.fixture
def distributed():
    return pytest.importorskip("distributed")


def test_a_local_cluster_runs_every_cell_once_and_matches_serial_runs(tmp_path, distributed, capsys):
    path = write_spec(tmp_path, BASE + '[axes]\ninit = ["orthogonal", "default"]\nseed = [0, 1]\n')
    out = tmp_path / "out"
    res = sweep.run_sweep(path, out, workers=2, dashboard_address=":0", progress=False)
    assert (res["cells"], res["computed"], res["done"], res["failed"]) == (4, 4, 4, 0)
    assert "dashboard: http://" in capsys.readouterr().out
    spec = sweep.load_spec(path)
    rows = rows_of(out)
    assert set(rows) == {c.id for c in spec.cells}
    for cell in spec.cells:
        row = rows[cell.id]
        assert row["status"] == "done" and row["error"] is None and row["worker"].startswith("tcp://127.0.0.1:")
        assert json.loads(json.dumps(row["config"])) == cell.config and row["epoch"] == 1
        assert 0 <= row["test_acc"] <= 1 and row["loss"] > 0 and row["blas_threads"] in (1, None)
        assert row["orthoref_version"] and row["numpy_version"] == np.__version__
        assert_same_weights(out / "cells" / cell.id, serial_dir(tmp_path, cell))
    again = sweep.run_sweep(path, out, workers=2, dashboard_address=":0", progress=False)
    assert (again["skipped"], again["computed"]) == (4, 0)

    # the report: one group per initializer, aggregated over the two seeds
    csv_path = tmp_path / "cells.csv"
    assert cli.main(["sweep", "report", str(out), "--csv", str(csv_path)]) == 0
    text = capsys.readouterr().out
    assert "init" in text and "95% CI" in text and "2 groups of 4 cells" in text
    rep = sweep.report(out)
    assert rep["axes"] == ["init"] and [g["values"]["init"] for g in rep["groups"]] == ["default", "orthogonal"]
    from scipy import stats
    for g in rep["groups"]:
        acc = [rows[c]["test_acc"] for c in g["cells"]]
        assert g["n"] == 2 and g["failed"] == 0 and g["seeds"] == [0, 1]
        half = stats.t.ppf(0.975, 1) * np.std(acc, ddof=1) / np.sqrt(2)
        assert g["test_acc"]["mean"] == pytest.approx(np.mean(acc))
        assert g["test_acc"]["ci_high"] - g["test_acc"]["mean"] == pytest.approx(half)
    import csv
    with open(csv_path, newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and {r["cell_id"] for r in table} == set(rows)
    for r in table:
        assert r["status"] == "done" and float(r["test_acc"]) == rows[r["cell_id"]]["test_acc"]
        assert r["hidden"] == "[8]" and json.loads(r["config"]) == rows[r["cell_id"]]["config"]


class ExternalCluster:
    """``dask scheduler`` and two ``dask worker`` processes (no nanny, one thread each) on 127.0.0.1."""

    def __init__(self):
        self.procs = []

    def start(self, tmp_path):
        file = tmp_path / "scheduler.json"
        dask = [sys.executable, "-m", "dask"]
        self.scheduler = self._start(dask + ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                             "--scheduler-file", str(file)], tmp_path / "scheduler.log")
        deadline = time.monotonic() + 60
        while not (file.exists() and file.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert file.exists(), (tmp_path / "scheduler.log").read_text()[-2000:]
        self.address = json.loads(file.read_text())["address"]
        self.workers = [self._start(dask + ["worker", self.address, "--host", "127.0.0.1", "--nthreads", "1",
                                            "--no-dashboard", "--no-nanny", "--local-directory",
                                            str(tmp_path / "dask")], tmp_path / f"worker{k}.log")
                        for k in range(2)]
        from distributed import Client
        with Client(self.address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
            self.pids = client.run(os.getpid)                  # worker address -> PID

    def _start(self, argv, log):
        with open(log, "w") as f:
            proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs.append(proc)
        return proc

    def close(self):
        """SIGKILL each process this object started (a graceful close can wait on timeouts for seconds)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def external(tmp_path, distributed):
    cluster = ExternalCluster()
    try:
        cluster.start(tmp_path)
        yield cluster
    finally:
        cluster.close()


def test_an_external_scheduler_runs_the_sweep_and_a_failing_cell_is_recorded(tmp_path, external, capsys):
    missing = tmp_path / "no-such-data"
    path = write_spec(tmp_path, BASE.replace('data = "digits"\n', "")
                      + f'[axes]\ndata = ["digits", "idx:{missing}"]\nseed = [0, 1]\n')
    out = tmp_path / "out"
    assert cli.main(["sweep", path, "--out", str(out), "--scheduler", external.address, "--threads-per-worker",
                     "2", "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "2 cells failed" in captured.err and "FAILED" in captured.out
    rows = rows_of(out)
    assert len(rows) == 4
    failed = [r for r in rows.values() if r["status"] == "failed"]
    done = [r for r in rows.values() if r["status"] == "done"]
    assert len(done) == 2 and all(r["config"]["data"] == "digits" and r["worker"] in external.pids for r in done)
    assert all(r["blas_threads"] in (2, None) for r in done)
    assert len(failed) == 2
    for r in failed:
        assert r["config"]["data"].startswith("idx:") and str(missing) in r["error"]
        assert r["test_acc"] is None and r["epoch"] is None
    spec = sweep.load_spec(path)
    for cell in spec.cells:
        if cell.config["data"] == "digits":
            assert_same_weights(out / "cells" / cell.id, serial_dir(tmp_path, cell, threads=2))
    rep = sweep.report(out)
    assert rep["axes"] == ["data"]
    by_data = {g["values"]["data"]: g for g in rep["groups"]}
    assert by_data["digits"]["n"] == 2 and by_data["digits"]["failed"] == 0
    assert by_data[f"idx:{missing}"]["n"] == 0 and by_data[f"idx:{missing}"]["failed"] == 2
    assert np.isnan(by_data[f"idx:{missing}"]["test_acc"]["mean"])
    assert "-" in sweep.format_report(rep)


def test_a_worker_killed_mid_cell_loses_nothing(tmp_path, external):
    """kill -9 of a worker while it trains a cell (after the first cell finished): the scheduler reruns the cell
    on the other worker, which resumes it from its checkpoint; every cell ends bit-identical to a serial run."""
    path = write_spec(tmp_path, BASE.replace("epochs = 1", "epochs = 50") + "[axes]\nseed = [0, 1, 2, 3]\n")
    out = tmp_path / "out"
    result = {}
    thread = threading.Thread(target=lambda: result.update(
        sweep.run_sweep(path, out, scheduler=external.address, progress=False, log=None)))
    thread.start()
    killed = None
    try:
        deadline = time.monotonic() + 90
        while killed is None and thread.is_alive() and time.monotonic() < deadline:
            if _done_rows(out) >= 1:
                killed = _kill_a_worker_mid_cell(out, external)
            time.sleep(0.01)
    finally:
        thread.join(timeout=120)
    assert not thread.is_alive()
    assert killed is not None, "no worker was caught mid-cell"
    cell_id, address = killed
    assert result["done"] == 4 and result["failed"] == 0
    rows = rows_of(out)
    assert all(r["status"] == "done" and r["epoch"] == 50 for r in rows.values())
    survivor = next(a for a in external.pids if a != address)
    assert rows[cell_id]["worker"] == survivor and rows[cell_id]["resumed_from"] >= 1
    spec = sweep.load_spec(path)
    for cell in spec.cells:
        if cell.id == cell_id or cell is spec.cells[0]:
            assert_same_weights(out / "cells" / cell.id, serial_dir(tmp_path, cell))


def _kill_a_worker_mid_cell(out, external):
    """SIGKILL the worker that holds a cell folder with a checkpoint of an unfinished cell; ``(cell, address)``."""
    by_pid = {pid: address for address, pid in external.pids.items()}
    for lock in (out / "cells").glob("*/.orthoref.lock"):
        try:
            pid = json.loads(lock.read_text())["pid"]
        except (OSError, ValueError, KeyError):
            continue
        cell = lock.parent
        if pid in by_pid and (cell / "checkpoint.npz").exists() and cell.name not in rows_of(out):
            os.kill(pid, signal.SIGKILL)
            return cell.name, by_pid[pid]
    return None


# ---------------------------------------------------------------------------------------------------------
# Kinds of cell, seeds = N, the studies as sweeps

def test_seeds_n_is_the_last_axis_and_kind_names_the_cells(tmp_path):
    path = write_spec(tmp_path, 'seeds = 3\n' + BASE + '[axes]\ninit = ["orthogonal", "default"]\n')
    spec = sweep.load_spec(path)
    assert spec.kind == "train" and list(spec.axes) == ["init", "seed"] and spec.axes["seed"] == [0, 1, 2]
    assert [c.axes for c in spec.cells] == [{"init": i, "seed": s} for i in ("orthogonal", "default") for s in range(3)]
    listed = sweep.load_spec(write_spec(tmp_path, BASE + '[axes]\ninit = ["orthogonal", "default"]\nseed = [0, 1, 2]\n',
                                        "listed.toml"))
    assert [c.id for c in spec.cells] == [c.id for c in listed.cells]
    assert all(c.kind == "train" for c in spec.cells)


def test_cell_ids_are_the_documented_hash():
    """A train cell's id is unchanged by the kinds (folders of earlier sweeps resume): the SHA-256 of the
    canonical JSON; another kind's id hashes its name, a newline and that JSON."""
    import hashlib
    cfg = sweep.cell_config({"hidden": [8], "epochs": 1})
    text = json.dumps(cfg, sort_keys=True, separators=(",", ":"))
    assert sweep.cell_id(cfg) == hashlib.sha256(text.encode()).hexdigest()[:12]
    # a field added later (norm) is left out at its default, so a cell of an earlier sweep keeps its id
    assert "norm" not in cfg
    assert sweep.cell_config({"model": "cnn", "norm": "dbn", "epochs": 1})["norm"] == "dbn"
    rnn = sweep.load_spec(ROOT / "sweeps" / "study-rnn.toml").cells[0]
    text = json.dumps(rnn.config, sort_keys=True, separators=(",", ":"))
    assert rnn.id == hashlib.sha256(f"study:rnn\n{text}".encode()).hexdigest()[:12]
    assert sweep.cell_id(rnn.config, kind="study:rnn") == rnn.id
    assert rnn.config == {"T": 100, "hidden": 128, "steps": 1500, "eval_every": 50, "batch_size": 50,
                          "init": "normal", "seed": 0}


STUDY_BAD_SPECS = [
    ('seeds = 0\n', ["seeds must be a positive int"]),
    ('seeds = "3"\n', ["seeds must be a positive int"]),
    ('seeds = true\n', ["seeds must be a positive int"]),
    ('seeds = 2\n[axes]\nseed = [0, 1]\n', ["axes.seed", "seeds = 2"]),
    ('seeds = 2\n[base]\nseed = 4\n', ["base.seed", "seeds = 2"]),
    ('kind = "study:nope"\n', ["kind must be one of", "'study:rnn'", "study:nope"]),
    ('kind = 3\n', ["kind must be a string"]),
    ('kind = "study:rnn"\n[base]\nepochs = 3\n', ["base.epochs", "unknown field", "study:rnn cells", "steps"]),
    ('kind = "study:rnn"\n[axes]\ninit = ["normal", "nope"]\n', ["axes.init[1]", "init must be one of"]),
    ('kind = "study:rnn"\n[base]\nhidden = 1.5\n', ["base", "hidden must be an int"]),
    ('kind = "study:regularizers"\n[axes]\nrow = [["mlp", "so:-1"]]\n', ["axes.row[0]", "so:-1"]),
    ('kind = "study:regularizers"\n[axes]\nrow = ["mlp"]\n', ["axes.row[0] must be a list"]),
    ('kind = "study:compression"\n[base]\nhidden = [8]\n', ["base", "hidden must be a list of at least 2"]),
    ('kind = "study:projections"\n[axes]\nmethod = ["polar (SVD)", "svd"]\n', ["axes.method[1]", "method must be"]),
    ('kind = "train"\n[base]\nrow = 1\n', ["base.row", "TrainConfig fields"]),
]


@pytest.mark.parametrize("text,expected", STUDY_BAD_SPECS, ids=[f"bad{i}" for i in range(len(STUDY_BAD_SPECS))])
def test_a_bad_kind_or_seeds_is_refused_naming_the_file_and_the_key(tmp_path, text, expected):
    path = write_spec(tmp_path, text)
    with pytest.raises(ValueError) as info:
        sweep.load_spec(path)
    message = str(info.value)
    assert message.startswith(path), message
    for part in expected:
        assert part in message, message


def test_every_study_spec_is_the_grid_orthoref_study_runs():
    """sweeps/study-NAME.toml and `orthoref study NAME` describe the same cells (ids, configurations, order), for
    every study that is a grid of cells (a study registered as one function, the autoencoder's, has none)."""
    from orthoref import studies
    assert set(studies.REGISTRY) | set(studies.RUNNERS) == set(studies.STUDIES) and "rnn" in studies.REGISTRY
    assert {p.name for p in (ROOT / "sweeps").glob("study-*.toml")} == {f"study-{n}.toml" for n in studies.REGISTRY}
    for name in studies.REGISTRY:
        shipped, inprocess = sweep.load_spec(ROOT / "sweeps" / f"study-{name}.toml"), studies.study_spec(name)
        assert shipped.kind == inprocess.kind == f"study:{name}"
        assert [(c.id, c.config) for c in shipped.cells] == [(c.id, c.config) for c in inprocess.cells]
        seeds = studies.REGISTRY[name].grid(False)["seeds"]                 # 3, the article's 5
        assert sorted({c.config["seed"] for c in shipped.cells}) == list(range(seeds)) and seeds >= 3


def test_a_folder_holds_one_kind_of_cell(tmp_path):
    from orthoref import studies
    out = tmp_path / "out"
    sweep.run_sweep(studies.study_spec("rnn", quick=True), out, workers=0, log=None)
    path = write_spec(tmp_path, BASE + "[axes]\nseed = [0]\n")
    with pytest.raises(ValueError, match="holds cells of kind study:rnn"):
        sweep.run_sweep(path, out, workers=0, log=None)
    assert {r["kind"] for r in sweep.read_results(out)} == {"study:rnn"}


def test_stop_on_failure_raises_the_cells_own_exception(tmp_path):
    missing = tmp_path / "no-such-data"
    path = write_spec(tmp_path, BASE.replace('data = "digits"\n', f'data = "idx:{missing}"\n') + "[axes]\nseed = [0, 1]\n")
    with pytest.raises(FileNotFoundError):
        sweep.run_sweep(path, tmp_path / "out", workers=0, log=None, stop_on_failure=True)
    res = sweep.run_sweep(path, tmp_path / "out2", workers=0, log=None)
    assert res["failed"] == 2


def test_a_results_file_of_the_first_schema_is_read_and_upgraded(tmp_path):
    """results.sqlite written before the kinds (schema 1: no kind, no result) reads as train cells, reports,
    and gets the two columns when a sweep writes to it again."""
    path = write_spec(tmp_path, BASE + "[axes]\nseed = [0, 1]\n")
    spec = sweep.load_spec(path)
    out = tmp_path / "out"
    out.mkdir()
    v1 = [c for c in sweep.RESULT_COLUMNS if c[0] not in ("kind", "result")]
    db = sqlite3.connect(out / "results.sqlite")
    with db:
        db.execute(f"CREATE TABLE cells ({', '.join(f'{n} {t}' for n, t in v1)})")
        db.execute("CREATE TABLE runs (run INTEGER PRIMARY KEY AUTOINCREMENT, started TEXT, finished TEXT, spec TEXT, "
                   "spec_text TEXT, cluster TEXT, threads_per_worker INTEGER, cells INTEGER, computed INTEGER, "
                   "done INTEGER, failed INTEGER, status TEXT)")
        db.execute("PRAGMA user_version = 1")
        first = spec.cells[0]
        db.execute("INSERT INTO cells (cell_id, config, status, epoch, test_acc, loss, train_acc, seconds, finished) "
                   "VALUES (?, ?, 'done', 1, 0.5, 1.5, 0.25, 1.0, '2026-01-01')",
                   (first.id, json.dumps(first.config, sort_keys=True)))
    db.close()
    rows = sweep.read_results(out)
    assert len(rows) == 1 and rows[0]["kind"] == "train" and rows[0]["result"] is None and rows[0]["test_acc"] == 0.5
    assert sweep.report(out)["groups"][0]["test_acc"]["mean"] == 0.5
    res = sweep.run_sweep(path, out, workers=0, log=None)
    assert (res["skipped"], res["computed"]) == (1, 1)
    con = sqlite3.connect(out / "results.sqlite")
    assert con.execute("PRAGMA user_version").fetchone()[0] == 2
    con.close()
    rows = rows_of(out)
    assert rows[first.id]["kind"] == "train" and rows[first.id]["result"] is None
    second = rows[spec.cells[1].id]
    assert second["kind"] == "train" and second["result"] == {m: second[m] for m in ("epoch", "test_acc", "loss",
                                                                                        "train_acc")}


def test_register_kind_refuses_what_is_not_a_kind():
    kind = sweep.cell_kind("train")
    with pytest.raises(TypeError, match="register_kind: kind must be a CellKind"):
        sweep.register_kind("train")
    import dataclasses
    with pytest.raises(ValueError, match="'train' or 'study:NAME'"):
        sweep.register_kind(dataclasses.replace(kind, name="nope"))
    with pytest.raises(ValueError, match="fields must include seed"):
        sweep.register_kind(dataclasses.replace(kind, name="study:x", fields=("epochs",)))
    with pytest.raises(TypeError, match="run must be callable"):
        sweep.register_kind(dataclasses.replace(kind, name="study:x", run=None))
    assert "study:x" not in sweep.kinds()
    with pytest.raises(ValueError, match="kind must be one of"):
        sweep.run_cell({}, "x", kind="study:x")


@pytest.fixture(scope="module")
def local_cluster():
    distributed = pytest.importorskip("distributed")
    import dask
    import logging
    import warnings
    blas = {f"distributed.nanny.pre-spawn-environ.{name}": 1
            for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    with dask.config.set(blas), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                           dashboard_address=None, silence_logs=logging.ERROR)
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


STUDY_NAMES = ("depth", "regularizers", "projections", "compression", "rnn", "article")


@pytest.mark.parametrize("name", STUDY_NAMES)
def test_a_study_on_a_local_cluster_is_the_in_process_study(tmp_path, local_cluster, name, capsys):
    """The quick grid with two seeds on a LocalCluster of two workers: every cell's result bit-identical to
    `orthoref study`'s own in-process run (timings aside), the report the same numbers, a rerun computes
    nothing, and `orthoref sweep report` prints the study's table."""
    pytest.importorskip("matplotlib")
    from orthoref import studies
    spec = studies.study_spec(name, quick=True, seeds=2)
    out = tmp_path / "dask"
    res = sweep.run_sweep(spec, out, scheduler=local_cluster, progress=False, log=None)
    assert (res["cells"], res["done"], res["failed"]) == (len(spec.cells), len(spec.cells), 0)
    inproc = studies.run(name, tmp_path / "figures", quick=True, seeds=2, sweep_dir=tmp_path / "serial")
    dask_rows, serial_rows = rows_of(out), rows_of(tmp_path / "serial")
    assert set(dask_rows) == set(serial_rows) == {c.id for c in spec.cells}
    for cid, row in dask_rows.items():
        assert row["worker"].startswith("tcp://127.0.0.1:") and serial_rows[cid]["worker"] == "in-process"
        assert row["kind"] == f"study:{name}" and row["blas_threads"] in (1, None)
        assert sweep.without_timings(row["result"]) == sweep.without_timings(serial_rows[cid]["result"]), cid     # bit for bit
    again = sweep.run_sweep(spec, out, scheduler=local_cluster, progress=False, log=None)
    assert (again["skipped"], again["computed"]) == (len(spec.cells), 0)

    from_sweep = studies.report_sweep(out, tmp_path / "from-sweep")
    if name == "projections":            # timings only: the errors of each map and step agree
        for a, b in zip(inproc["direct"], from_sweep["direct"]):
            assert (a["method"], a["orthogonality"], a["to_polar"]) == (b["method"], b["orthogonality"], b["to_polar"])
        for k, pts in inproc["iterative"].items():
            assert [p["to_polar"] for p in pts] == [p["to_polar"] for p in from_sweep["iterative"][k]]
    elif name == "article":              # each side's numbers and the differences; not the seconds
        def pick(r):
            return r["init"], r["against"], {s: {k: r[s][k] for k in ("acc", "loss", "curves")} for s in r["sides"]}
        assert [pick(r) for r in inproc["rows"]] == [pick(r) for r in from_sweep["rows"]]
    else:
        keys = {"depth": ("grad_h", "sigma_min", "stats"), "regularizers": ("acc", "acc_mean", "acc_std", "curve"),
                "compression": ("full_acc", "acc", "acc_std", "stable_rank"),
                "rnn": ("final_mse", "final_stat", "history", "reached")}[name]
        assert [{k: r[k] for k in keys} for r in inproc["rows"]] == [{k: r[k] for k in keys} for r in from_sweep["rows"]]
    assert cli.main(["sweep", "report", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"study {name}: ") and "seeds 0, 1" in text and "|---|" in text
    assert studies.REGISTRY[name].tables(sweep.report(out)) in text


def test_the_study_report_aggregates_the_seeds_as_numpy_and_scipy_do(tmp_path):
    """Mean, std (ddof=1) and the 95% t-interval of every group of the RNN and compression reports, against
    numpy and scipy.stats.t.interval on the values stored in results.sqlite."""
    from scipy import stats
    from orthoref import studies
    checks = {"rnn": (lambda r: r["final_mse"], "final_stat"), "compression": (lambda r: r["full_acc"], "full_stat"),
              "regularizers": (lambda r: r["test_acc"], "acc_stat")}
    for name, (value, key) in checks.items():
        out = tmp_path / name
        sweep.run_sweep(studies.study_spec(name, quick=True, seeds=3), out, workers=0, log=None)
        rows = sweep.read_results(out)
        rep = sweep.report(out)
        assert rep["kind"] == f"study:{name}" and len(rep["groups"]) == len(rep["rows"])
        for group, row in zip(rep["groups"], rep["rows"]):
            stored = np.array([value(r["result"]) for r in rows if r["cell_id"] in group["cells"]])
            assert len(stored) == 3 and group["seeds"] == [0, 1, 2]
            lo, hi = stats.t.interval(0.95, 2, loc=stored.mean(), scale=stats.sem(stored))
            got = row[key]
            assert got["n"] == 3
            np.testing.assert_allclose([got["mean"], got["std"], got["ci_low"], got["ci_high"]],
                                       [stored.mean(), stored.std(ddof=1), lo, hi], rtol=1e-12, atol=1e-15)
        text = sweep.format_report(rep)
        assert "3 seeds" in text and "seeds 0–2" in text


def test_the_scaling_benchmark_runs_on_tiny_cells(tmp_path, capsys, distributed):
    """tools/sweep_scaling.py --quick (a benchmark, not a test of speed): it runs, finds the same results on 1
    and 2 workers and writes its JSON."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("sweep_scaling", ROOT / "tools" / "sweep_scaling.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "scaling.json"
    assert tool.main(["--quick", "--cells", "4", "--json", str(out), "--out", str(tmp_path / "sweeps")]) == 0
    text = capsys.readouterr().out
    assert "overhead/cell s" in text and "results identical across worker counts (timings aside): yes" in text
    data = json.loads(out.read_text())
    assert [r["workers"] for r in data["runs"]] == [1, 2] and data["identical"] is True
    for r in data["runs"]:
        assert r["cells"] == 4 and r["blas_threads"] in ([1], [None])
        assert r["wall_s"] > 0 and r["busy_max_s"] <= r["cell_s"] + 1e-9
        assert r["overhead_per_cell_s"] == pytest.approx((r["wall_s"] - r["cell_s"] / r["workers"]) / (4 / r["workers"]))
    assert data["runs"][1]["speedup"] == pytest.approx(data["runs"][0]["wall_s"] / data["runs"][1]["wall_s"])
