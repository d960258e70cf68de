"""Scaling of ``orthoref sweep`` on a Dask LocalCluster: the same cells on 1 worker, then on 2 (issue 19).

    python tools/sweep_scaling.py                  # 8 cells of about 14 s each (AMD EPYC), 1 then 2 workers
    python tools/sweep_scaling.py --quick          # tiny cells: checks the script, measures nothing useful
    python tools/sweep_scaling.py --workers 1 2 4 --cells 16 --json scaling.json

A benchmark, not a test: run it on a quiet machine with at least as many cores as the largest worker count.
Every cell is one seeded RNN run of the adding problem (the RNN study's cell, ``kind = "study:rnn"``, init
``orthogonal``, T = 100, hidden 128, ``--steps`` steps; seeds 0 … cells − 1), so the cells are equally long.
For each worker count a fresh LocalCluster is started (one thread per worker, ``OMP_NUM_THREADS`` /
``OPENBLAS_NUM_THREADS`` / ``MKL_NUM_THREADS`` = 1 in the workers, and ``threadpoolctl`` limiting BLAS to one
thread inside each cell) and :func:`orthoref.sweep.run_sweep` computes every cell into a fresh folder. Printed
per worker count:

- ``start``: seconds to start the cluster (not in ``wall``);
- ``wall``: seconds of ``run_sweep``, from the call to its return (submitting, computing, recording);
- ``cell s``: the cells' own compute time summed, measured inside each task (``seconds`` of the row);
- ``busy max``: the compute time of the busiest worker (the floor of ``wall`` with this split of the cells);
- ``overhead/cell``: ``(wall − cell s / workers) / (cells / workers)``, the scheduling, transfer and recording
  time each cell costs beyond its compute (load imbalance included: ``busy max`` shows it);
- ``speed-up``: ``wall`` of the first worker count over this one's (goal: ≥ 1.8 at 2 workers on 2 cores).

The results of every worker count are compared (timings aside): a cell is the same wherever it ran.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
import warnings

GOAL = 1.8                 # speed-up wanted at 2 workers on 2 cores


def _spec(cells, steps, quick):
    from orthoref.sweep import parse_spec
    base = ({"T": 5, "hidden": 8, "steps": steps, "eval_every": 10, "batch_size": 10} if quick else
            {"T": 100, "hidden": 128, "steps": steps, "eval_every": 50, "batch_size": 50})
    return parse_spec({"kind": "study:rnn", "base": dict(base, init="orthogonal"),
                       "axes": {"seed": list(range(cells))}}, source="sweep_scaling")


def _cluster(workers):
    import dask
    from distributed import Client, LocalCluster
    blas = {f"distributed.nanny.pre-spawn-environ.{name}": 1
            for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    with dask.config.set(blas), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None, silence_logs=logging.ERROR)
    client = Client(cluster)
    client.wait_for_workers(workers, timeout=120)
    return cluster, client


def measure(spec, workers, folder):
    """One LocalCluster of ``workers`` workers computing every cell of ``spec`` into ``folder``."""
    from orthoref.sweep import read_results, run_sweep, without_timings
    t0 = time.perf_counter()
    cluster, client = _cluster(workers)
    start = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        res = run_sweep(spec, folder, scheduler=client, threads_per_worker=1, progress=False, log=None)
        wall = time.perf_counter() - t0
    finally:
        client.close()
        cluster.close()
    if res["failed"] or res["done"] != len(spec.cells):
        raise SystemExit(f"sweep_scaling: {res['failed']} cell(s) failed with {workers} worker(s): see "
                         f"{res['results']}")
    rows = read_results(folder)
    busy = {}
    for r in rows:
        busy[r["worker"]] = busy.get(r["worker"], 0.0) + r["seconds"]
    cell_s = sum(r["seconds"] for r in rows)
    n = len(rows)
    return {"workers": workers, "cells": n, "start_s": start, "wall_s": wall, "cell_s": cell_s,
            "cell_mean_s": cell_s / n, "busy_max_s": max(busy.values()), "busy_by_worker_s": busy,
            "overhead_per_cell_s": (wall - cell_s / workers) / (n / workers),
            "blas_threads": sorted({r["blas_threads"] for r in rows}, key=str),
            "results": {r["cell_id"]: without_timings(r["result"]) for r in rows}}


def _machine():
    info = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            "processor": platform.processor()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info["processor"] = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                                     info["processor"])
    except OSError:
        pass
    try:
        import numpy
        from threadpoolctl import threadpool_info
        info["numpy"] = numpy.__version__
        info["blas"] = [f"{p.get('internal_api')} {p.get('version')} ({p.get('architecture')})"
                        for p in threadpool_info() if p.get("user_api") == "blas"]
    except ImportError:
        pass
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny cells (T=5, hidden 8, 20 steps): checks that "
                        "the script runs; the numbers mean nothing")
    parser.add_argument("--cells", type=int, default=8, help="cells (seeds 0 … cells − 1; default 8)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per cell (default 1500, about 14 s "
                        "on the 2-core AMD EPYC; --quick: 20)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts, in order "
                        "(default 1 2; the speed-up is against the first)")
    parser.add_argument("--out", help="keep the sweep folders here (default: a temporary folder)")
    parser.add_argument("--json", help="also write the numbers (and the machine) to this JSON file")
    args = parser.parse_args(argv)
    if args.cells < 1 or any(w < 1 for w in args.workers) or (args.steps is not None and args.steps < 1):
        parser.error("--cells, --steps and --workers must be positive")
    try:
        import distributed  # noqa: F401
    except ImportError:
        parser.error("needs dask.distributed: pip install 'orthoref[sweep]'")
    steps = args.steps or (20 if args.quick else 1500)
    spec = _spec(args.cells, steps, args.quick)
    machine = _machine()
    print(f"{args.cells} cells of kind study:rnn ({'quick, ' if args.quick else ''}{steps} steps each) on a "
          f"LocalCluster of {', then '.join(map(str, args.workers))} worker(s), one BLAS thread each; "
          f"{machine['cpus']} CPUs ({machine.get('processor') or machine['platform']})", flush=True)
    runs = []
    with tempfile.TemporaryDirectory(prefix="orthoref-scaling-") as tmp:
        root = args.out or tmp
        for w in args.workers:
            folder = os.path.join(root, f"workers-{w}-{time.strftime('%Y%m%d-%H%M%S')}")
            runs.append(measure(spec, w, folder))
            r = runs[-1]
            print(f"  {w} worker(s): wall {r['wall_s']:.2f} s (cluster start {r['start_s']:.2f} s, not counted)",
                  flush=True)
    same = all(r["results"] == runs[0]["results"] for r in runs[1:])
    head = ["workers", "start s", "wall s", "cell s", "cell mean s", "busy max s", "overhead/cell s", "speed-up"]
    lines = [head]
    for r in runs:
        r["speedup"] = runs[0]["wall_s"] / r["wall_s"]
        lines.append([str(r["workers"]), f"{r['start_s']:.2f}", f"{r['wall_s']:.2f}", f"{r['cell_s']:.2f}",
                      f"{r['cell_mean_s']:.3f}", f"{r['busy_max_s']:.2f}", f"{r['overhead_per_cell_s']:.3f}",
                      f"{r['speedup']:.2f}x"])
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    print()
    for row in lines:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
    print(f"\nresults identical across worker counts (timings aside): {'yes' if same else 'NO'}; BLAS threads in "
          f"the cells: {sorted({t for r in runs for t in r['blas_threads']}, key=str)}")
    two = next((r for r in runs if r["workers"] == 2), None)
    if two is not None and runs[0]["workers"] == 1:
        verdict = "met" if two["speedup"] >= GOAL else "NOT met"
        note = " (--quick: cells far too short for the goal to mean anything)" if args.quick else ""
        print(f"speed-up at 2 workers: {two['speedup']:.2f}x, goal >= {GOAL}x: {verdict}{note}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": machine, "cells": args.cells, "steps": steps, "quick": args.quick,
                       "identical": same, "goal": GOAL,
                       "runs": [{k: v for k, v in r.items() if k != "results"} for r in runs]}, f, indent=2)
        print(f"wrote {args.json}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
