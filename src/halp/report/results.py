"""Reading results: one results JSON checked against its name, and a whole results folder.

Each results JSON must hold a numeric ``metrics.top1``; ``metrics.top1_std`` and
``metrics.best_on_test`` are used when present. ``protocol``, ``dataset``, ``benchmark``,
``method``, ``pretrained_on`` and ``config.label_fraction`` are checked against the file
name when present, so a misnamed file is an error rather than a wrong cell.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halp.errors import TablesError
from halp.report.naming import EVAL_NAME, GRAPH_NAME, OVERHEAD_NAME, TRANSFER_NAME

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    """One results JSON, identified by its file name."""

    name: str
    protocol: str  # linear, knn, semi<P>, finetune, transfer
    dataset: str  # the evaluation (target) dataset
    split: str
    variant: str
    source: str | None  # transfer: the pretraining dataset
    top1: float
    std: float | None
    best_on_test: float | None
    lr: float | None = None  # the classifier's learning rate (metrics.lr)

    @property
    def percent(self) -> int | None:
        """The label percentage of a ``semi<P>`` result, 100 for ``finetune``."""
        if self.protocol.startswith("semi"):
            return int(self.protocol[4:])
        return 100 if self.protocol == "finetune" else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise TablesError(f"{path}: not valid JSON ({err})") from err
    except UnicodeDecodeError as err:
        raise TablesError(f"{path}: not UTF-8 text ({err})") from err


def read_result(path: Path) -> Result:
    """Read and check one results JSON; ``TablesError`` names the file on any problem."""
    path = Path(path)
    match = EVAL_NAME.match(path.name) or TRANSFER_NAME.match(path.name)
    if match is None:
        raise TablesError(f"{path}: the name follows neither results naming pattern")
    parts = match.groupdict()
    transfer = "source" in parts
    protocol = "transfer" if transfer else parts["protocol"]
    data = _read_json(path)
    metrics = data.get("metrics") if isinstance(data, dict) else None
    top1 = _number(metrics.get("top1")) if isinstance(metrics, dict) else None
    if top1 is None:
        raise TablesError(f"{path}: no numeric metrics.top1 (is this a halp evaluate result?)")
    assert isinstance(metrics, dict) and isinstance(data, dict)

    expected = {
        "protocol": "semi" if protocol.startswith("semi") else protocol,
        "dataset": parts["dataset"],
        "method": parts["variant"].split("-")[0],
    }
    if transfer:
        expected["pretrained_on"] = parts["source"]
    else:
        expected["benchmark"] = parts["split"]
    for key, want in expected.items():
        have = data.get(key)
        if have is not None and have != want:
            raise TablesError(f"{path}: {key} is {have!r} but the file name says {want!r}")
    config = data.get("config")
    fraction = config.get("label_fraction") if isinstance(config, dict) else None
    percent = parts.get("percent")
    fraction = _number(fraction)
    if percent is not None and fraction is not None:
        if not math.isclose(fraction * 100, int(percent), abs_tol=1e-6):
            raise TablesError(
                f"{path}: config.label_fraction is {fraction} but the file name says {percent} %"
            )
    return Result(
        name=path.name,
        protocol=protocol,
        dataset=parts["dataset"],
        split="xsub" if transfer else parts["split"],
        variant=parts["variant"],
        source=parts["source"] if transfer else None,
        top1=top1,
        std=_number(metrics.get("top1_std")),
        best_on_test=_number(metrics.get("best_on_test")),
        lr=_number(metrics.get("lr")),
    )


def read_overhead(path: Path) -> dict[str, Any]:
    """Read ``overhead.json``: ``time`` and ``memory`` maps of method -> number."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise TablesError(f"{path}: expected a JSON object with 'time' and 'memory'")
    for key in ("time", "memory"):
        block = data.get(key, {})
        if not isinstance(block, dict) or any(_number(v) is None or v <= 0 for v in block.values()):
            raise TablesError(f"{path}: '{key}' must map method names to positive numbers")
    return data


@dataclass
class Inputs:
    """Everything read from the results folder."""

    results_dir: Path
    results: dict[str, Result]
    overhead: dict[str, Any] | None
    ignored: list[str]
    used: set[str] = field(default_factory=set)
    graphs: dict[str, dict[str, Any]] = field(default_factory=dict)  # tu_*_svm.json

    def target(self, name: str) -> str:
        """The path of a results file in the results folder, as text."""
        return str(self.results_dir / name)


def read_inputs(results_dir: Path) -> Inputs:
    """Read every results JSON in ``results_dir`` (missing folder: nothing reproduced)."""
    results_dir = Path(results_dir)
    results: dict[str, Result] = {}
    ignored: list[str] = []
    graphs: dict[str, dict[str, Any]] = {}
    overhead = None
    paths = sorted(results_dir.glob("*.json")) if results_dir.is_dir() else []
    for path in paths:
        if path.name == OVERHEAD_NAME:
            overhead = read_overhead(path)
        elif EVAL_NAME.match(path.name) or TRANSFER_NAME.match(path.name):
            results[path.name] = read_result(path)
        elif GRAPH_NAME.match(path.name):
            graphs[path.name] = read_graph_result(path)
        else:
            log.info("ignoring %s: not a results file name", path)
            ignored.append(path.name)
    return Inputs(results_dir, results, overhead, ignored, graphs=graphs)


def read_graph_result(path: Path) -> dict[str, Any]:
    """A ``tu_{dataset}_{method}_svm.json`` summary, checked against its name."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TablesError(f"{path}: not valid JSON ({err})") from None
    match = GRAPH_NAME.match(path.name)
    assert match is not None
    if not isinstance(data, dict) or data.get("kind") != "graph_svm":
        raise TablesError(f"{path}: not a graph summary (write it with `halp graphcl-summary`)")
    for key, want in (
        ("dataset", match["dataset"]),
        ("method", match["method"].replace("-", "_")),
    ):
        found = str(data.get(key, "")).lower() if key == "dataset" else data.get(key)
        if found != want:
            raise TablesError(f"{path}: holds {key} {data.get(key)!r}, its name says {want!r}")
    return data
