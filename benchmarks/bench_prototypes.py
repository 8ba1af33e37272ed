"""Benchmark of HaLP's per-step extras: the prototype refresh and one PosHal call.

Printed in one run, on one CPU core by default (``--threads``):

1. Prototype refresh as in the paper, 256 x 128 keys -> 20 clusters: our batched torch
   spherical k-means (``halp.prototypes.compute_prototypes``) against geomstats'
   ``RiemannianKMeans`` (the authors' backend, tol 1e-3, kmeans++), on the same data, the
   median over ``--reps`` runs each (run i seeded with i for both), their ratio, and the
   k-means objective of both (mean geodesic distance of a key to its closest centroid,
   median over the runs; lower is better). Two data sets: 20 von Mises-Fisher-like
   clusters, and isotropic keys.
2. One ``halp.poshal.hallucinate`` call (B = 64 anchors, Ng = 100 positives, P = 20
   prototypes, D = 128) followed by ``halp_loss``: median over ``--reps`` runs.

Usage::

    .venv/bin/python benchmarks/bench_prototypes.py [--reps 50] [--threads 1]

geomstats is optional (``pip install "halp-repro[geomstats]"``); without it, part 1 times
only our k-means.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from halp.objectives.poshal import hallucinate, halp_loss
from halp.objectives.prototypes import compute_prototypes, geomstats_kmeans, kmeans_objective

NUM_KEYS, DIM, NUM_PROTOTYPES = 256, 128, 20
BATCH, NUM_POSITIVES, LAMBDA, TAU = 64, 100, 0.8, 0.07


def keys(kind: str, seed: int = 0) -> torch.Tensor:
    """(256, 128) unit keys: ``clusters`` (20 vMF-like clusters) or ``isotropic``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(NUM_KEYS, DIM, generator=g)
    if kind == "clusters":
        centres = F.normalize(torch.randn(NUM_PROTOTYPES, DIM, generator=g), dim=-1)
        labels = torch.randint(NUM_PROTOTYPES, (NUM_KEYS,), generator=g)
        x = centres[labels] + 0.45 / math.sqrt(DIM) * x
    return F.normalize(x, dim=-1)


def median_ms(fn: Callable[[int], object], reps: int) -> float:
    """Median wall time of ``fn(i)`` over i = 0..reps-1, after one untimed warm-up call."""
    fn(reps)
    times = []
    for i in range(reps):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def bench_kmeans(kind: str, reps: int) -> list[str]:
    x = keys(kind)
    objective: dict[str, list[float]] = {"torch": [], "geomstats": []}

    def ours(i: int) -> None:
        c = compute_prototypes(x, NUM_PROTOTYPES, torch.Generator().manual_seed(i))
        objective["torch"].append(kmeans_objective(x, c).item())

    def theirs(i: int) -> None:
        c = geomstats_kmeans(x, NUM_PROTOTYPES, seed=i)
        objective["geomstats"].append(kmeans_objective(x, c).item())

    ours_ms = median_ms(ours, reps)
    line = f"{kind:>9}: torch {ours_ms:7.2f} ms"
    obj = f"objective torch {statistics.median(objective['torch']):.4f}"
    try:
        import geomstats  # noqa: F401
    except ImportError:
        return [line + "  (geomstats not installed)", obj]
    theirs_ms = median_ms(theirs, reps)
    line += f" | geomstats {theirs_ms:7.2f} ms | torch is {theirs_ms / ours_ms:5.1f}x faster"
    obj += f" | geomstats {statistics.median(objective['geomstats']):.4f} (rad, lower is better)"
    return [line, f"{'':>11}{obj}"]


def bench_hallucinate(reps: int) -> str:
    g = torch.Generator().manual_seed(0)
    anchor = F.normalize(torch.randn(BATCH, DIM, generator=g), dim=-1)
    query = F.normalize(torch.randn(BATCH, DIM, generator=g), dim=-1).requires_grad_()
    prototypes = compute_prototypes(keys("clusters"), NUM_PROTOTYPES, g)
    kept: list[float] = []

    def step(i: int) -> None:
        out = hallucinate(
            anchor, prototypes, NUM_POSITIVES, LAMBDA, torch.Generator().manual_seed(i)
        )
        halp_loss(query, out.h, out.keep, TAU)
        kept.append(out.keep.float().mean().item())

    ms = median_ms(step, reps)
    return (
        f"hallucinate + halp_loss, B={BATCH}, Ng={NUM_POSITIVES}, P={NUM_PROTOTYPES}, D={DIM}: "
        f"{ms:.2f} ms (rank filter keeps {statistics.mean(kept):.1%})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=50, help="timing repetitions (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    torch.set_num_threads(args.threads)
    try:
        import geomstats

        gs_version = geomstats.__version__
    except ImportError:
        gs_version = "not installed"
    print(
        f"machine: {platform.machine()}, Python {platform.python_version()}, torch "
        f"{torch.__version__} ({torch.get_num_threads()} thread(s)), geomstats {gs_version}"
    )
    print(
        f"\n[1] prototype refresh: {NUM_KEYS} x {DIM} keys -> {NUM_PROTOTYPES} clusters, "
        f"median of {args.reps}"
    )
    for kind in ("clusters", "isotropic"):
        for line in bench_kmeans(kind, args.reps):
            print(line)
    print(f"\n[2] PosHal, median of {args.reps}")
    print(bench_hallucinate(args.reps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
