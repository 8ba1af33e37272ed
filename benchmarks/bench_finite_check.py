"""Benchmark of the NaN/inf check of prepared arrays at load (``storage.first_non_finite``).

``load_split`` scans every prepared array once when it opens it. This prints, side by
side on one memory-mapped array, the time of that scan (one dot product per 64 MiB block,
element-wise only for a block that fails) and of the plain ``np.isfinite(block).all()``
scan, each as seconds and GB/s, with the ratio; the first pass reads the file into the page
cache and is reported apart.

Usage::

    .venv/bin/python benchmarks/bench_finite_check.py [--samples 4000] [--reps 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from halp.data.storage import CHECK_BYTES, first_non_finite


def isfinite_scan(data: np.ndarray, block_bytes: int = CHECK_BYTES) -> int | None:
    """The plain scan: ``np.isfinite`` of every block."""
    rows = max(1, block_bytes // data[0].nbytes)
    for lo in range(0, len(data), rows):
        block = data[lo : lo + rows].reshape(min(rows, len(data) - lo), -1)
        bad = ~np.isfinite(block).all(axis=1)
        if bad.any():
            return lo + int(np.argmax(bad))
    return None


def main() -> None:
    """Write a synthetic (N, 3, 300, 25, 2) array, then time both scans on its memory map."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=4000, help="N (180 KB each)")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train.npy"
        shape = (args.samples, 3, 300, 25, 2)
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
        rng = np.random.default_rng(0)
        for lo in range(0, args.samples, 256):
            out[lo : lo + 256] = rng.standard_normal(out[lo : lo + 256].shape, dtype=np.float32)
        out.flush()
        del out
        data = np.load(path, mmap_mode="r")
        gb = data.nbytes / 1e9
        first = time.perf_counter()
        assert first_non_finite(data) is None
        print(f"{gb:.2f} GB, {args.samples} samples; first pass (cold): "
              f"{time.perf_counter() - first:.3f} s")  # fmt: skip
        times: dict[str, list[float]] = {"dot screen (halp)": [], "np.isfinite": []}
        for _ in range(args.reps):
            for name, scan in (
                ("dot screen (halp)", first_non_finite),
                ("np.isfinite", isfinite_scan),
            ):
                start = time.perf_counter()
                assert scan(data) is None
                times[name].append(time.perf_counter() - start)
        best = {name: min(values) for name, values in times.items()}
        for name, seconds in best.items():
            print(f"{name:>18}: {seconds:.3f} s  {gb / seconds:6.1f} GB/s (best of {args.reps})")
        ratio = best["np.isfinite"] / best["dot screen (halp)"]
        print(f"{'ratio':>18}: the dot screen is {ratio:.2f}x as fast")


if __name__ == "__main__":
    main()
