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

from orthoref.ortho.metrics import orthogonality_error_rms
from orthoref.train import Penalty, TrainConfig, fit, holding_layers, load_data, regularized_weights


def penalty(name, model, targets, X):
    """The unweighted penalty ``name`` measures, summed over the target layers (on a data batch for SOM):
    what the regularizer itself drives down, whether or not that is ‖G − I‖."""
    pen = Penalty.parse(f"{name}:1", rng=0)
    if pen.target == "outputs":
        wanted = [layer for _, layer in holding_layers(model, targets)]
        total, h = 0.0, X
        for layer in model:
            h = layer.forward(h)
            if any(layer is w for w in wanted):
                total += pen(h)[0]
        return total
    return sum(float(pen(p.data)[0]) for _, p in targets if pen.acts_on(p.data))

# (model, --reg spec) rows, every regularized run with --reg-skip last (the 10-way classifier layer).
ROWS = [
    ("mlp", None), ("mlp", "so:1e-1"), ("mlp", "dso:1e-1"), ("mlp", "mc:100"), ("mlp", "srip:1"),
    ("mlp", "biggan:1"), ("mlp", "l1:1e-2"), ("mlp", "spectral:1"), ("mlp", "som:1e-5"),
    ("cnn", None), ("cnn", "so:1e-1"), ("cnn", "kernel_slice:10"), ("cnn", "ocnn:1e-1"),
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/reg-table")
    ap.add_argument("--rows", default="", help="comma-separated row indices (default: all)")
    ap.add_argument("--spec", action="append", help="MODEL:NAME:WEIGHT rows instead of the built-in table")
    ap.add_argument("--reg-skip", default="last", help="weights left unregularized (default: last)")
    args = ap.parse_args(argv)
    rows = [ROWS[int(i)] for i in args.rows.split(",")] if args.rows else ROWS
    if args.spec:
        rows = [(m, None) for m in dict.fromkeys(s.split(":")[0] for s in args.spec)]
        rows += [(s.split(":", 1)[0], s.split(":", 1)[1]) for s in args.spec]
    skip = tuple(x for x in args.reg_skip.split(",") if x)
    results, baseline = [], {}
    for model, spec in rows:
        cfg = TrainConfig(model=model, epochs=args.epochs, seed=args.seed, progress=False,
                          reg=(spec,) if spec else (), reg_skip=skip, out=os.path.join(args.out, f"{model}-{spec or 'none'}"))
        res = fit(cfg, log=None, overwrite=True)
        targets = regularized_weights(res["model"], res["config"].reg_skip)
        if spec:
            targets = [(n, p) for n, p in targets if Penalty.parse(spec).acts_on(p.data)]
        err = float(np.mean([orthogonality_error_rms(p.data) for _, p in targets]))
        X = load_data(res["config"])[2][:256]
        last = res["history"][-1]
        secs = float(np.mean([h["seconds"] for h in res["history"]]))
        row = {"model": model, "reg": spec or "none", "test_acc": last["test_acc"], "ortho_error": err,
               "sec_per_epoch": secs, "layers": [n for n, _ in targets]}
        if spec is None:
            baseline[model] = ({n: orthogonality_error_rms(p.data) for n, p in targets}, res["model"], targets, X)
        else:
            base_err, base_model, base_targets, base_X = baseline[model]
            base = float(np.mean([base_err[n] for n, _ in targets]))
            row["reduction"] = base / err if err > 0 else float("inf")
            name = spec.split(":")[0]
            base_params = dict(base_model.named_parameters())
            same = [(n, base_params[n]) for n, _ in targets]
            own, own_base = penalty(name, res["model"], targets, X), penalty(name, base_model, same, base_X)
            row["own_penalty"], row["own_penalty_none"] = own, own_base
            row["own_reduction"] = own_base / own if own > 0 else float("inf")
        results.append(row)
        print(f"| {model} | {row['reg']} | {row['test_acc']:.4f} | {err:.4f} | "
              f"{row.get('reduction', float('nan')):.1f}x | {row.get('own_reduction', float('nan')):.1f}x | "
              f"{secs:.2f} |", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "table.json"), "w") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
