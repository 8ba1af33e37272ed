"""Compare two runs of the workflow number by number: every number of every results/*.json.

    python .ci/compare-results.py REFERENCE_RESULTS OTHER_RESULTS [--names local,slurm]

Timings (``seconds``, ``cpu_seconds``, ``time``) are clock measurements, not results, and are
skipped; every other number must be equal, and both runs must have written the same files.
Exits non-zero listing the first 20 differences. Used by .ci/slurm.sh (Slurm against a local
run) and .ci/container.sh (Snakemake's Apptainer path against the local run and the image).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TIMINGS = {"seconds", "cpu_seconds", "time"}  # clock measurements, not results


def numbers(node: Any, path: str = "") -> Iterator[tuple[str, float]]:
    """(JSON path, number) of every number in ``node``, timings excepted."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in TIMINGS:
                yield from numbers(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from numbers(value, f"{path}[{i}]")
    elif isinstance(node, int | float) and not isinstance(node, bool):
        yield path, node


def main() -> None:
    """Compare the two folders; exit non-zero on any difference."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("reference", type=Path)
    parser.add_argument("other", type=Path)
    parser.add_argument("--names", default="local,other", help="the two runs' names")
    args = parser.parse_args()
    ref_name, other_name = args.names.split(",")
    names = sorted(p.name for p in args.reference.glob("*.json"))
    if not names or names != sorted(p.name for p in args.other.glob("*.json")):
        sys.exit(f"the {ref_name} and {other_name} runs wrote different result files")
    count, diffs = 0, []
    for name in names:
        a = dict(numbers(json.loads((args.reference / name).read_text())))
        b = dict(numbers(json.loads((args.other / name).read_text())))
        count += len(a)
        diffs += [
            f"{name}{k}: {ref_name} {a.get(k)} {other_name} {b.get(k)}"
            for k in sorted(a.keys() | b.keys())
            if a.get(k) != b.get(k)
        ]
    if diffs:
        sys.exit("\n".join(diffs[:20]))
    print(f"{len(names)} result files, {count} numbers: all equal to the {ref_name} run's")


if __name__ == "__main__":
    main()
