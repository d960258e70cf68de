"""What input validation costs a train step: this tree against an older commit, in one process.

    python tools/validation_cost.py --before a69fe00 --cases mlp_train_step,cnn_train_step --threads 2

The older commit's ``orthoref`` package is exported (``git archive``) into a temporary folder under the name
``orthoref_before`` (the package imports itself relatively, so it loads beside this tree's ``orthoref``), each
side builds the same benchmark case from ``bench.make_case(name, rng=0)`` (same weights, same batch), and the
two are timed in alternating blocks A B B A A B ... under one thread limit, each block warmed up first, as
``orthoref bench`` times orthoref against PyTorch. Timing both in one process removes what made
``orthoref bench`` run against run too noisy to resolve a 3 % difference on a shared machine (±30 % swings
between runs): both sides see the same CPU frequency, cache and neighbour load within a few hundred
milliseconds. Where a model's arrays land in memory moves one instance's step time by up to 5 % (two
instances of the *same* code differed by 5.5 % on an AMD EPYC), so each side is built ``--instances``
times and the rounds take the instances in turn. Reported: the median and the minimum time per step of each
side with their relative difference, the median of the per-round ratios (each round's two blocks ran next to
each other), and the mean over instance pairs of the ratio of their minima (the least disturbed block of each
instance: neighbour load only adds time, and each instance pair keeps its own memory placement).
"""
from __future__ import annotations

import argparse
import importlib
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def export_package(rev, dest):
    """Write ``orthoref/`` of commit ``rev`` to ``dest/orthoref_before`` and return its import name."""
    tar = subprocess.run(["git", "-C", ROOT, "archive", rev, "orthoref"], check=True,
                         capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(dest, filter="data")
    os.rename(os.path.join(dest, "orthoref"), os.path.join(dest, "orthoref_before"))
    return "orthoref_before"


def block(fn, number):
    """Seconds per call of ``fn`` over ``number`` calls."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def compare(after, before, rounds, number, warmup):
    """Seconds per call of each side in each block, timed in alternating warmed-up blocks. ``after`` and
    ``before`` are lists of instances of each side (built separately, so holding arrays at different
    addresses); round ``i`` times instance ``i % len``."""
    times = {"after": [], "before": []}
    for i in range(rounds):
        a, b = after[i % len(after)], before[i % len(before)]
        order = (("after", a), ("before", b)) if i % 2 == 0 else (("before", b), ("after", a))
        for name, fn in order:
            for _ in range(warmup):
                fn()
            times[name].append(block(fn, number))
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="a69fe00", help="the commit to compare with (default: a69fe00, "
                        "the last commit before the failure model's validation)")
    parser.add_argument("--cases", default="mlp_train_step,cnn_train_step")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--number", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--instances", type=int, default=6, help="instances of each side, used in turn "
                        "(default 6): one instance's speed depends on where its arrays landed in memory")
    args = parser.parse_args(argv)

    sys.path.insert(0, ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        name = export_package(args.before, tmp)
        sys.path.insert(0, tmp)
        after_bench = importlib.import_module("orthoref.bench")
        before_bench = importlib.import_module(name + ".bench")
        info = after_bench.machine_info(args.threads)
        blas = ", ".join(f"{b['internal_api']} {b['version']} {b['architecture']}" for b in info["blas"]
                         if b["user_api"] == "blas")
        print(f"CPU: {info['cpu']}; BLAS: {blas}; threads: {args.threads}; before: {args.before}")
        with after_bench.same_threads(args.threads):
            for case in args.cases.split(","):
                after = [after_bench.make_case(case, rng=0)[0] for _ in range(args.instances)]
                before = [before_bench.make_case(case, rng=0)[0] for _ in range(args.instances)]
                times = compare(after, before, args.rounds, args.number, args.warmup)
                for stat in (statistics.median, min):
                    b, a = stat(times["before"]), stat(times["after"])
                    print(f"{case:16s} {stat.__name__:6s} before {b * 1e3:8.3f} ms  after {a * 1e3:8.3f} ms  "
                          f"validation cost {(a / b - 1) * 100:+.2f} %")
                paired = statistics.median(x / y for x, y in zip(times["after"], times["before"]))
                print(f"{case:16s} median of the per-round ratios after/before: {(paired - 1) * 100:+.2f} %")
                n = args.instances                  # round i timed instance i % n of each side
                per_instance = [min(times["after"][i::n]) / min(times["before"][i::n]) for i in range(n)]
                print(f"{case:16s} per-instance minima, mean of the {n} ratios after/before: "
                      f"{(statistics.mean(per_instance) - 1) * 100:+.2f} %")


if __name__ == "__main__":
    main()
