"""The graph table's results: one file per (dataset, method) from its per-seed runs.

``halp graphcl`` writes one JSON per seed; :func:`summarise` checks that a set of them
belongs together (same dataset, method and configuration apart from the seed, distinct
seeds) and writes ``tu_{dataset}_{method}_svm.json`` with every seed's fold accuracies
and chosen C, the mean and the sample standard deviation (ddof = 1) over seeds, the
configuration and the commits that produced them. :func:`paired_gain` is the HaLP gain
of the table: the mean over seeds of (GraphCL+HaLP - GraphCL) at the same seed, with a
two-sided 95 % Student-t interval.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from halp.errors import TablesError
from halp.io import atomic_write_json


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TablesError(f"{path}: not a readable results JSON ({err})") from None
    if not isinstance(data, dict) or data.get("kind") != "graph_svm_seed":
        raise TablesError(f"{path}: not a per-seed graph result (written by `halp graphcl`)")
    return data


def _without_seed(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in ("seed", "threads")}


def summarise(seed_files: Sequence[Path | str], out: Path | str) -> dict[str, Any]:
    """Write the summary of per-seed results ``seed_files`` to ``out`` and return it.

    Raises:
        TablesError: the files disagree on dataset, method or configuration, or repeat
            a seed (each problem names the files).
    """
    if not seed_files:
        raise TablesError(f"{out}: no per-seed results to summarise")
    runs = [(Path(p), _load(Path(p))) for p in seed_files]
    first_path, first = runs[0]
    seen: dict[int, Path] = {}
    for path, run in runs:
        for key in ("dataset", "method"):
            if run[key] != first[key]:
                raise TablesError(
                    f"{path}: {key} {run[key]!r} differs from {first_path}'s {first[key]!r}"
                )
        if _without_seed(run["config"]) != _without_seed(first["config"]):
            raise TablesError(
                f"{path} and {first_path} were run with different configurations "
                "(apart from the seed); rerun them with the same config"
            )
        if run["seed"] in seen:
            raise TablesError(f"{path} and {seen[run['seed']]} are both seed {run['seed']}")
        seen[run["seed"]] = path
    runs.sort(key=lambda pr: pr[1]["seed"])
    accuracies = [run["accuracy"] for _, run in runs]
    summary = {
        "kind": "graph_svm",
        "dataset": first["dataset"],
        "method": first["method"],
        "seeds": [run["seed"] for _, run in runs],
        "accuracies": accuracies,
        "mean": float(np.mean(accuracies)),
        "std": float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else None,
        "per_seed": {
            str(run["seed"]): {
                "accuracy": run["accuracy"],
                "fold_accuracies": run["fold_accuracies"],
                "chosen_c": run["chosen_c"],
                "seconds": run["seconds"],
            }
            for _, run in runs
        },
        "config": _without_seed(first["config"]),
        "commits": sorted({str(run["provenance"].get("commit")) for _, run in runs}),
        "provenance": first["provenance"],
    }
    atomic_write_json(Path(out), summary)
    return summary


@dataclass(frozen=True)
class Gain:
    """A paired difference over seeds.

    Attributes:
        mean: Mean of the per-seed differences (points).
        low: Lower end of the 95 % interval (None with one seed).
        high: Upper end of the 95 % interval (None with one seed).
        seeds: The seeds both methods have.
    """

    mean: float
    low: float | None
    high: float | None
    seeds: tuple[int, ...]


def paired_gain(base: dict[str, Any], other: dict[str, Any]) -> Gain | None:
    """``other - base`` paired by seed, with a Student-t 95 % interval (None: no shared seed)."""
    a = dict(zip(base["seeds"], base["accuracies"], strict=True))
    b = dict(zip(other["seeds"], other["accuracies"], strict=True))
    seeds = tuple(sorted(set(a) & set(b)))
    if not seeds:
        return None
    diffs = np.array([b[s] - a[s] for s in seeds])
    mean = float(diffs.mean())
    if len(seeds) < 2:
        return Gain(mean, None, None, seeds)
    half = (
        float(stats.t.ppf(0.975, len(seeds) - 1)) * float(diffs.std(ddof=1)) / math.sqrt(len(seeds))
    )
    return Gain(mean, mean - half, mean + half, seeds)
