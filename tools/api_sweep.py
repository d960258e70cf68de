"""Run the whole-public-API bad-input sweep of ``tests/test_bad_input_api.py`` outside pytest and write its
failures, one line per case, per area, plus the counts.

    python tools/api_sweep.py [--out DIR] [--only NAME ...]

Writes ``DIR/<area>.txt`` (areas: layers, optim, ortho, math, files, runs) and ``DIR/summary.txt``, each
atomically (a temporary file, then a rename), with a header line giving the time. A case is filed under the
area that owns the callable and, when the exception was raised in a file of another area, under that one
too. A module that does not import is reported as such under its area.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import os
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AREAS = ("layers", "optim", "ortho", "math", "files", "runs")

# File (relative to orthoref/) -> area, for the place an exception was raised.
_FILE_AREAS = (("ops/", "layers"), ("nn/", "layers"), ("tasks.py", "layers"), ("optim/", "optim"),
               ("ortho/", "ortho"), ("regularizers.py", "math"), ("init.py", "math"), ("analysis.py", "math"),
               ("data.py", "files"), ("compress.py", "files"), ("oracle/", "files"), ("train.py", "runs"),
               ("cli.py", "runs"), ("models.py", "runs"), ("sequence.py", "runs"), ("continual.py", "runs"),
               ("studies.py", "runs"))   # _checks.py, backend.py: the caller's area


def file_area(where):
    if not where:
        return None
    for prefix, area in _FILE_AREAS:
        if where.startswith(prefix):
            return area
    return None


def atomic_write(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _registry_cotangents(S, tally):
    """``test_bad_input.test_every_backward_rejects_bad_cotangents`` as cases: every registry op's vjp with
    a corrupted cotangent (wrong shape, broadcastable, other float dtype, complex, NaN)."""
    try:
        import test_bad_input as B
        from orthoref.ortho import __dict__ as ortho_names
    except Exception as exc:  # noqa: BLE001
        tally.add(S.Case("registry", "-", "import", S.VALID_FAILED, f"{type(exc).__name__}: {exc}", "files"))
        return
    for spec in B.SPECS:
        adapter = spec.apply.__qualname__
        if adapter.startswith(("from_loss", "_ce_none", "_mse")):
            area = "files"          # oracle/registry.py: the loss adapters compute grad * cotangent themselves
        elif spec.name.split("_")[0] in ortho_names or spec.name in ortho_names or spec.name.startswith(
                ("retract", "project_tangent", "cayley")):
            area = "ortho"
        else:
            area = "layers"
        try:
            outcomes = B.cotangent_outcomes(spec, B.SAMPLES[spec.name][0])
        except BaseException as exc:  # noqa: BLE001 -- the valid call itself fails (or hangs)
            tally.add(S.Case(f"registry:{spec.name}", "-", "valid arguments", S.VALID_FAILED,
                             f"{type(exc).__name__}: {exc}", area, S.origin(exc)))
            continue
        for label, what, exc in outcomes:
            cls = "g " + label
            if exc is None:
                tally.add(S.Case(f"registry:{spec.name}", "cotangent", cls, S.ACCEPTED, what, area))
                continue
            try:
                B.assert_clear_cotangent_error(exc, what)
                tally.add(S.Case(f"registry:{spec.name}", "cotangent", cls, S.CLEAN, "", area))
            except AssertionError as err:
                tally.add(S.Case(f"registry:{spec.name}", "cotangent", cls, S.UNCLEAN, str(err).splitlines()[0],
                                 area, S.origin(exc)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/sweep")
    ap.add_argument("--only", nargs="*", default=None, help="qualified names (substring match)")
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    t0 = time.time()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    per_area = collections.defaultdict(list)
    import_errors = []
    try:
        import _api_sweep as S
        import test_bad_input_api as T
    except Exception as exc:  # noqa: BLE001 -- the library does not import right now: say so everywhere
        msg = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        tb = traceback.extract_tb(exc.__traceback__)
        where = next((f"{fs.filename}:{fs.lineno}" for fs in reversed(tb) if "/orthoref/" in fs.filename), "?")
        for area in AREAS:
            atomic_write(os.path.join(args.out, f"{area}.txt"),
                         f"# API bad-input sweep, {stamp}: the test module does not import ({where}): {msg}\n")
        atomic_write(os.path.join(args.out, "summary.txt"), f"# {stamp}: import failed at {where}: {msg}\n")
        print(msg)
        return 1
    tally = S.Tally()
    for qualname in sorted(set(T.API) & set(T.TABLE)):
        if args.only and not any(o in qualname for o in args.only):
            continue
        obj, area = T.API[qualname]
        try:
            T.run_one(qualname, obj, area, tally)
        except Exception as exc:  # noqa: BLE001 -- a harness error is a finding too
            tally.add(S.Case(qualname.rsplit(".", 1)[1], "-", "harness", S.VALID_FAILED,
                             f"the sweep itself failed: {type(exc).__name__}: {exc}", area, S.origin(exc)))
    if not args.only:
        _registry_cotangents(S, tally)
    for qualname in sorted(set(T.API) - set(T.TABLE)):
        tally.add(S.Case(qualname, "-", "no entry", S.VALID_FAILED, "public callable without a TABLE entry",
                         T.API[qualname][1]))
    for case in tally.bad():
        per_area[case.area].append(case.line())
        other = file_area(case.where)
        if other and other != case.area:
            per_area[other].append(f"(via {case.area}) {case.line()}")
    notes = collections.defaultdict(list)
    for case in tally.warned():
        if case.outcome not in S.BAD_OUTCOMES:
            notes[case.area].append(case.line())
    elapsed = time.time() - t0
    head = (f"# API bad-input sweep, {stamp} ({elapsed:.0f} s): callable | argument | input class | outcome | "
            f"exception or bad result [raised at orthoref/FILE:LINE]\n")
    for area in AREAS:
        lines = per_area.get(area, [])
        body = "\n".join(lines) + ("\n" if lines else "")
        if notes.get(area):
            body += (f"# notes, not failures: {len(notes[area])} cases emit a NumPy RuntimeWarning (overflow/invalid) "
                     f"before their (acceptable) outcome; np.errstate around the computation silences it\n"
                     + "".join(f"#   {n}\n" for n in notes[area]))
        atomic_write(os.path.join(args.out, f"{area}.txt"), head + f"# {len(lines)} failing cases\n" + body)
    bad = collections.Counter(c.area for c in tally.bad())
    summary = (f"# API bad-input sweep, {stamp} ({elapsed:.0f} s)\n{tally.table()}\n{tally.summary_line()}\n"
               f"failing cases per area: " + ", ".join(f"{a} {bad.get(a, 0)}" for a in AREAS) + "\n"
               + "".join(f"import error: {e}\n" for e in import_errors))
    atomic_write(os.path.join(args.out, "summary.txt"), summary)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
