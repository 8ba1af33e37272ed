"""Benchmark of the graph SVM protocol: ``halp.eval.svm.svm_protocol`` vs plain scikit-learn.

All three run in this one process, on the same embeddings and the same seeded outer folds:

- plain: per outer fold ``GridSearchCV(SVC(), {"C": 1e-3..1e3}, cv=5).fit`` then predict
  (:func:`halp.eval.svm.plain_protocol`, sequential, as the released GraphCL code runs it);
- ours, 1 process, then ours over ``--workers`` processes
  (:func:`halp.eval.svm.svm_protocol`: libsvm's kernels and solver recomputed exactly by
  :mod:`halp.eval.smo`, one kernel and Q per split shared by the C grid).

It prints the times, the ratios, and whether the chosen C values and the fold accuracies
are identical (exit status 1 if not). The embeddings are those of a GraphCL encoder
pretrained for ``--epochs`` on the dataset (20: the table's), so the SVM sees the geometry
it sees in the table. The compiled code is warmed up (and cached) on a small problem first,
so the times are those of a second run.

Usage (a dataset prepared with ``halp prepare tu NAME --out ROOT``)::

    .venv/bin/python benchmarks/bench_svm.py --root data/tu --dataset NCI1 [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from halp import graphcl
from halp.config import GraphCLConfig, load_config
from halp.data.tu import load_graphs
from halp.eval.svm import plain_protocol, svm_protocol


def main() -> int:
    """Run the benchmark; exit status 1 if the two protocols disagree."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data/tu")
    parser.add_argument("--dataset", default="NCI1")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_config(
        GraphCLConfig,
        None,
        [
            f"dataset={args.dataset}",
            f"root={args.root}",
            f"epochs={args.epochs}",
            f"seed={args.seed}",
        ],
    )
    data = load_graphs(args.root, args.dataset)
    net, _ = graphcl.pretrain(config, data)
    x, y = graphcl.embed(net, data, config), data.y.numpy()

    svm_protocol(x[::20], y[::20], args.seed, folds=2, inner_folds=2)  # compile (or load)

    start = time.perf_counter()
    plain = plain_protocol(x, y, args.seed)
    plain_s = time.perf_counter() - start
    start = time.perf_counter()
    single = svm_protocol(x, y, args.seed, workers=1)
    single_s = time.perf_counter() - start
    start = time.perf_counter()
    ours = svm_protocol(x, y, args.seed, workers=args.workers)
    ours_s = time.perf_counter() - start

    same = all(
        r.fold_accuracies == plain.fold_accuracies and r.chosen_c == plain.chosen_c
        for r in (single, ours)
    )
    report = {
        "dataset": args.dataset,
        "graphs": len(y),
        "epochs": args.epochs,
        "plain_s": plain_s,
        "ours_1_process_s": single_s,
        "ours_s": ours_s,
        "speedup_1_process": plain_s / single_s,
        "speedup": plain_s / ours_s,
        "workers": args.workers,
        "identical": same,
        "accuracy": ours.accuracy,
        "chosen_c": ours.chosen_c,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    print(f"{args.dataset} ({len(y)} graphs, embeddings after {args.epochs} epochs)")
    print(f"  plain GridSearchCV(SVC()) : {plain_s:8.1f} s   accuracy {plain.accuracy:.2f}")
    print(f"  halp svm_protocol (1 proc): {single_s:8.1f} s   {plain_s / single_s:.1f}x")
    print(
        f"  halp svm_protocol ({args.workers} proc): {ours_s:8.1f} s   {plain_s / ours_s:.1f}x"
        f"   accuracy {ours.accuracy:.2f}"
    )
    print(f"  chosen C and fold accuracies identical to plain: {same}")
    if not same:
        print(f"  plain: {plain.chosen_c} {plain.fold_accuracies}")
        print(f"  ours : {ours.chosen_c} {ours.fold_accuracies}")
        print(f"  ours (1 process): {single.chosen_c} {single.fold_accuracies}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=1)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
