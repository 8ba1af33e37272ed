"""Benchmark of the graph SVM protocol, before and after it moved onto scikit-learn.

On the same embeddings and the same seeded outer folds, side by side in one run:

- before: the protocol of commit e2434c8 (``halp.eval.svm.svm_protocol`` on its own copy of
  libsvm's solver, ``halp.eval.smo``, compiled with numba), run from a checkout of that
  commit's ``src`` (``--old-src``) in a child process, its compiled code warmed up first;
- after: this checkout's ``halp.eval.svm.svm_protocol``, i.e. ``GridSearchCV(SVC())`` per
  outer fold, run by scikit-learn.

Both run with 1 process (as each job of the workflow) and, with ``--workers N``, with N. It
prints wall and CPU seconds (the child's CPU for ``before``; for more than one process
the CPU of the worker processes is not counted, so only wall time is shown), the ratio,
and, fold by fold, where the chosen C or the fold accuracy differ. Given several
``--embeddings`` files (e.g. a whole table's), it also prints the totals.

The embeddings are either ``.npz`` files holding ``x`` (G, D) and ``y`` (G,) (the seed is
read from ``seed<N>`` in the file name, else ``--seed``) or, without ``--embeddings``,
those of a GraphCL encoder pretrained here for ``--epochs`` (20: the table's).

Usage (a dataset prepared with ``halp prepare tu NAME --out ROOT``)::

    git worktree add /tmp/halp-e2434c8 e2434c8
    python benchmarks/bench_svm.py --old-src /tmp/halp-e2434c8/src --root data/tu --dataset NCI1
    python benchmarks/bench_svm.py --old-src /tmp/halp-e2434c8/src --embeddings emb/*.npz
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from halp.eval.svm import svm_protocol

_BEFORE = """
import json, sys, time
import numpy as np
import halp.eval.svm as svm
assert svm.__file__.startswith(sys.argv[1]), svm.__file__
data = np.load(sys.argv[2])
x, y, seed, workers = data["x"], data["y"], int(sys.argv[3]), int(sys.argv[4])
two = np.flatnonzero(np.isin(y, np.unique(y)[:2]))
two = two[:: max(1, len(two) // 200)]
svm.svm_protocol(x[two], y[two], seed, folds=2, inner_folds=2)  # compile (or load) first
wall, cpu = time.perf_counter(), time.process_time()
r = svm.svm_protocol(x, y, seed, workers=workers)
print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                  "fold_accuracies": r.fold_accuracies, "chosen_c": r.chosen_c}))
"""


def _before(old_src: str, npz: Path, seed: int, workers: int) -> dict[str, Any]:
    """The e2434c8 protocol in a child process whose ``halp`` is ``old_src``'s."""
    env = {**os.environ, "PYTHONPATH": old_src}
    out = subprocess.run(
        [sys.executable, "-c", _BEFORE, old_src, str(npz), str(seed), str(workers)],
        env=env,
        check=False,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(f"the before protocol failed on {npz}:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _after(x: np.ndarray, y: np.ndarray, seed: int, workers: int) -> dict[str, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    r = svm_protocol(x, y, seed, workers=workers)
    return {
        "wall": time.perf_counter() - wall,
        "cpu": time.process_time() - cpu,
        "fold_accuracies": r.fold_accuracies,
        "chosen_c": r.chosen_c,
    }


def _pretrained(args: argparse.Namespace, folder: Path) -> list[tuple[str, Path, int]]:
    """Embeddings of a GraphCL encoder pretrained here, saved to ``folder``."""
    import torch

    from halp import graphcl
    from halp.config import GraphCLConfig, load_config
    from halp.data.tu import load_graphs

    torch.set_num_threads(1)
    keys = [f"dataset={args.dataset}", f"root={args.root}", f"epochs={args.epochs}"]
    config = load_config(GraphCLConfig, None, [*keys, f"seed={args.seed}"])
    data = load_graphs(args.root, args.dataset)
    net, _ = graphcl.pretrain(config, data)
    path = folder / f"{args.dataset}_seed{args.seed}.npz"
    np.savez(path, x=graphcl.embed(net, data, config), y=data.y.numpy())
    return [(f"{args.dataset} seed {args.seed} ({args.epochs} epochs)", path, args.seed)]


def _seed_of(path: Path, default: int) -> int:
    match = re.search(r"seed(\d+)", path.stem)
    return int(match.group(1)) if match else default


def main() -> int:
    """Run the benchmark and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-src", required=True, help="src/ of a checkout of e2434c8")
    parser.add_argument("--embeddings", type=Path, nargs="*", default=[])
    parser.add_argument("--root", default="data/tu")
    parser.add_argument("--dataset", default="NCI1")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="also time with N processes")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args()
    old_src = str(Path(args.old_src).resolve())
    counts = sorted({1, args.workers})
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = (
            [(p.stem, p, _seed_of(p, args.seed)) for p in args.embeddings]
            if args.embeddings
            else _pretrained(args, Path(tmp))
        )
        for name, path, seed in runs:
            data = np.load(path)
            x, y = data["x"], data["y"]
            row: dict[str, Any] = {"name": name, "graphs": len(y), "width": x.shape[1]}
            for w in counts:
                row[f"before_{w}"] = _before(old_src, path, seed, w)
                row[f"after_{w}"] = _after(x, y, seed, w)
            rows.append(row)
            _print_row(row, counts)
    if len(rows) > 1:
        print("total")
        for w in counts:
            before = sum(r[f"before_{w}"]["wall"] for r in rows)
            after = sum(r[f"after_{w}"]["wall"] for r in rows)
            cpu_b = sum(r[f"before_{w}"]["cpu"] for r in rows)
            cpu_a = sum(r[f"after_{w}"]["cpu"] for r in rows)
            print(
                f"  {w} process(es): before {before:8.1f} s  after {after:8.1f} s  "
                f"({after / before:.2f}x)"
                + (f"; CPU {cpu_b:.1f} vs {cpu_a:.1f} s" if w == 1 else "")
            )
    if args.json:
        report = {
            "rows": rows,
            "cpus": os.cpu_count(),
            "machine": platform.processor() or platform.machine(),
        }
        Path(args.json).write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


def _print_row(row: dict[str, Any], counts: list[int]) -> None:
    print(f"{row['name']} ({row['graphs']} graphs, width {row['width']})")
    for w in counts:
        b, a = row[f"before_{w}"], row[f"after_{w}"]
        cpu = f"   CPU {b['cpu']:7.1f} / {a['cpu']:7.1f} s" if w == 1 else ""
        print(
            f"  {w} process(es): before (smo) {b['wall']:7.1f} s   after (scikit-learn) "
            f"{a['wall']:7.1f} s   after/before {a['wall'] / b['wall']:.2f}x{cpu}"
        )
    b, a = row[f"before_{counts[-1]}"], row[f"after_{counts[-1]}"]
    acc_b, acc_a = np.mean(b["fold_accuracies"]), np.mean(a["fold_accuracies"])
    print(f"  accuracy before {acc_b:.2f}  after {acc_a:.2f}")
    differ = [
        f"fold {k}: C {cb:g} -> {ca:g}, {fb:.2f} -> {fa:.2f} %"
        for k, (cb, ca, fb, fa) in enumerate(
            zip(
                b["chosen_c"],
                a["chosen_c"],
                b["fold_accuracies"],
                a["fold_accuracies"],
                strict=True,
            )
        )
        if cb != ca or fb != fa
    ]
    print("  folds that differ: " + ("; ".join(differ) if differ else "none"))


if __name__ == "__main__":
    raise SystemExit(main())
