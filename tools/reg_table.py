"""Regularizer table for the README: digits, fixed seed and epochs, each --reg against none.

    python tools/reg_table.py [--epochs 20] [--seed 0] [--out runs/reg-table]

For every row it trains with ``orthoref.train.fit`` and reports test accuracy, the mean orthogonality error
‖G − I‖_F/√k of the regularized weights (G the smaller Gram matrix) and seconds per epoch, then the
reduction of that error against the unregularized run of the same model.
"""
import argparse
import json
import os
import sys

import numpy as np

from orthoref.train import Regularization, TrainConfig, fit, orthogonality_error

# (model, --reg spec) rows; weights chosen so that each penalty is comparable to the data loss.
ROWS = [
    ("mlp", None), ("mlp", "so:1e-2"), ("mlp", "dso:1e-2"), ("mlp", "mc:1e-1"), ("mlp", "srip:1e-1"),
    ("mlp", "biggan:1e-2"), ("mlp", "l1:1e-3"), ("mlp", "spectral:1e-2"), ("mlp", "som:1e-4"),
    ("cnn", None), ("cnn", "so:1e-2"), ("cnn", "kernel_slice:1e-1"), ("cnn", "ocnn:1e-2"),
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/reg-table")
    ap.add_argument("--rows", default="", help="comma-separated row indices (default: all)")
    args = ap.parse_args(argv)
    rows = [ROWS[int(i)] for i in args.rows.split(",")] if args.rows else ROWS
    results, baseline = [], {}
    for model, spec in rows:
        cfg = TrainConfig(model=model, epochs=args.epochs, seed=args.seed, progress=False,
                          reg=(spec,) if spec else (), out=os.path.join(args.out, f"{model}-{spec or 'none'}"))
        res = fit(cfg, log=None, overwrite=True)
        targets = Regularization(res["model"], res["config"], None).targets if spec else \
            [(n, p) for n, p in res["model"].named_parameters() if n.endswith("weight") and p.data.ndim >= 2]
        if spec and spec.split(":")[0] in ("kernel_slice", "ocnn"):
            targets = [(n, p) for n, p in targets if p.data.ndim == 4]
        err = float(np.mean([orthogonality_error(p.data) for _, p in targets]))
        last = res["history"][-1]
        secs = float(np.mean([h["seconds"] for h in res["history"]]))
        row = {"model": model, "reg": spec or "none", "test_acc": last["test_acc"], "ortho_error": err,
               "sec_per_epoch": secs, "layers": [n for n, _ in targets]}
        if spec is None:
            baseline[model] = {n: orthogonality_error(p.data) for n, p in targets}
        else:
            base = float(np.mean([baseline[model][n] for n, _ in targets])) if model in baseline else float("nan")
            row["reduction"] = base / err if err > 0 else float("inf")
        results.append(row)
        print(f"| {model} | {row['reg']} | {row['test_acc']:.4f} | {err:.4f} | "
              f"{row.get('reduction', float('nan')):.1f}x | {secs:.2f} |", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "table.json"), "w") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
