"""Late-fusion ensembles of classifier scores: ``halp evaluate ensemble``.

AimCLR (Guo et al., AAAI 2022) and HiCLR (Zhang et al., AAAI 2023) report "3s"
(three-stream) rows: the joint, motion and bone models of one method are evaluated
separately and their linear classifiers' raw outputs (logits, before softmax) on the test
set are added up with fixed weights; the fused score's argmax is the prediction. Their
released ensemble scripts report the better of two weight sets *on the test set*; here
the weights are given (command line or workflow config, default 1 each) and never chosen
on the test set.

Every classifier-training protocol of :func:`halp.evaluate.evaluate` writes, next to its
results JSON ``X.json``, a scores file ``X.scores.npz`` (:func:`save_scores`): the final
classifier's logits on the un-augmented test clips, float32 (N, C) in test-set order, the
labels, and the identity of the test set (dataset, benchmark, number of classes, sha256 of
the ordered sample names). The results JSON names it (``"scores"``) with its sha256
(``"scores_sha256"``). With ``repeats > 1`` the file holds the first repeat's classifier
(seed ``config.seed``): one trained classifier, whose argmax accuracy is that run's
``top1`` exactly; a mean of several classifiers' logits would itself be an ensemble, whose
accuracy no results file reports.

:func:`ensemble` reads two or more such members, refuses members that do not score the
same test set under the same protocol (:class:`halp.errors.EvaluationError`, naming both
files), checks each member's scores against its own reported accuracy, fuses
``sum_i w_i * scores_i`` and writes a results JSON of its own (modality ``ensemble``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from halp.data.storage import SplitIndex
from halp.errors import EvaluationError
from halp.eval.classifier import top1_of
from halp.io import atomic_path, atomic_write_json, sha256_of
from halp.runtime import provenance

log = logging.getLogger(__name__)

SCORES_FORMAT = "halp-scores/1"
SCORES_SUFFIX = ".scores.npz"
TOP1_TOLERANCE = 1e-6
"""How far (percent) a member's top-1 recomputed from its scores may be from its JSON's."""

# What members must share: results JSON keys, and the test set read from the scores file.
_SAME_KEYS = ("dataset", "benchmark", "protocol", "method", "pretrained_on", "encoder_init")
STREAMS = ("joint", "motion", "bone")
"""Member names that must equal the member's trained modality."""


def _pretrain_key(member: Member, dotted: str) -> Any:
    """A dotted key of the member's pretraining configuration (None when absent)."""
    node: Any = member.result.get("pretrain_config") or {}
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


# ------------------------------------------------------------------------ scores files


def scores_path(results: Path) -> Path:
    """The scores file of a results JSON: ``X.json`` -> ``X.scores.npz`` in the same folder."""
    results = Path(results)
    return results.with_name(results.name.removesuffix(".json") + SCORES_SUFFIX)


def names_fingerprint(names: Sequence[str]) -> str:
    """sha256 of the ordered sample names, one per line: the identity of a test set."""
    return hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()


def save_scores(results: Path, scores: np.ndarray, test: SplitIndex, seed: int) -> dict[str, str]:
    """Write the scores file of the results JSON ``results`` (atomically).

    ``scores`` are one classifier's logits on ``test``, (N, C) in its order. Returns the
    entries for the results JSON: ``scores`` (the file name, relative to the JSON's
    folder) and ``scores_sha256``.
    """
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape != (len(test), test.num_classes):
        raise EvaluationError(
            f"the classifier's test scores have shape {scores.shape}, expected "
            f"({len(test)}, {test.num_classes}) for {test.dataset}/{test.benchmark}/test"
        )
    path = scores_path(results)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            format=np.array(SCORES_FORMAT),
            scores=scores,
            labels=np.asarray(test.labels, dtype=np.int64),
            names_sha256=np.array(names_fingerprint(test.names)),
            dataset=np.array(test.dataset),
            benchmark=np.array(test.benchmark),
            num_classes=np.array(test.num_classes, dtype=np.int64),
            seed=np.array(seed, dtype=np.int64),
        )
    return {"scores": path.name, "scores_sha256": sha256_of(path)}


# ------------------------------------------------------------------------ members


@dataclass(frozen=True)
class Member:
    """One member of an ensemble: its results JSON and its checked scores file."""

    name: str
    path: Path
    result: dict[str, Any]
    scores_path: Path
    scores: np.ndarray  # float32 (N, C)
    labels: np.ndarray  # int64 (N,)
    names_sha256: str
    num_classes: int
    seed: int
    top1: float  # recomputed from the scores

    @property
    def label_fraction(self) -> Any:
        """``config.label_fraction`` of the member's evaluation (None if not recorded)."""
        config = self.result.get("config")
        return config.get("label_fraction") if isinstance(config, dict) else None


def _rerun_hint(path: Path, data: dict[str, Any]) -> str:
    """The command that writes ``path`` again, as far as its JSON tells."""
    checkpoint = data.get("checkpoint")
    config = data.get("config")
    ckpt = checkpoint.get("path") if isinstance(checkpoint, dict) else None
    root = config.get("data_root") if isinstance(config, dict) else None
    return (
        f"rerun `halp evaluate {data.get('protocol', 'linear')} --checkpoint {ckpt or 'CKPT'} "
        f"--data {root or 'DATA'} --out {path}` (with its --config/--set) to write it"
    )


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise EvaluationError(f"{path}: not a readable scores file ({err})") from None


def _expected_top1(data: dict[str, Any], seed: int) -> float | None:
    """The top-1 the JSON reports for the classifier of ``seed``."""
    metrics = data.get("metrics")
    if not isinstance(metrics, dict):
        return None
    for run in metrics.get("runs") or []:
        if isinstance(run, dict) and run.get("seed") == seed:
            value = run.get("top1")
            return float(value) if isinstance(value, int | float) else None
    value = metrics.get("top1")
    return float(value) if isinstance(value, int | float) else None


def read_member(name: str, path: Path) -> Member:
    """Read a member's results JSON and scores file, and check that they agree.

    Refused: an unreadable JSON, a kNN or ensemble result, a missing, replaced or malformed
    scores file, scores of another test set than the JSON's, non-finite scores, and
    scores whose top-1 differs from the one the JSON reports for that classifier.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvaluationError(f"member {name!r}: {path} not found") from None
    except (OSError, ValueError) as err:
        raise EvaluationError(f"member {name!r}: {path} is not a readable JSON ({err})") from None
    if not isinstance(data, dict) or "protocol" not in data:
        raise EvaluationError(f"member {name!r}: {path} is not a halp evaluate results JSON")
    if data.get("modality") == "ensemble":
        raise EvaluationError(
            f"member {name!r}: {path} is itself an ensemble; fuse its members directly"
        )
    if data["protocol"] == "knn":
        raise EvaluationError(
            f"member {name!r}: {path} is a kNN result, which has no classifier scores; "
            "ensembles fuse the scores of linear (or fine-tuned) classifiers"
        )
    entry = data.get("scores")
    if not isinstance(entry, str):
        raise EvaluationError(
            f"member {name!r}: {path} names no scores file (it was written before halp saved "
            f"scores); {_rerun_hint(path, data)}"
        )
    npz_path = path.parent / entry
    if not npz_path.is_file():
        raise EvaluationError(
            f"member {name!r}: the scores file {npz_path} of {path} is missing; "
            f"{_rerun_hint(path, data)}"
        )
    digest = data.get("scores_sha256")
    if digest is not None and sha256_of(npz_path) != digest:
        raise EvaluationError(
            f"member {name!r}: {npz_path} is not the scores file {path} was written with "
            f"(sha256 differs; an interrupted rerun?); {_rerun_hint(path, data)}"
        )
    arrays = _load_npz(npz_path)
    keys = ("format", "scores", "labels", "names_sha256", "dataset", "benchmark", "num_classes")
    missing = [k for k in keys if k not in arrays]
    if missing or str(arrays["format"]) != SCORES_FORMAT:
        raise EvaluationError(
            f"{npz_path}: not a {SCORES_FORMAT} scores file (missing {missing or 'nothing'}, "
            f"format {str(arrays.get('format'))!r})"
        )
    scores, labels = arrays["scores"], arrays["labels"]
    num_classes = int(arrays["num_classes"])
    if scores.ndim != 2 or scores.shape != (len(labels), num_classes) or labels.ndim != 1:
        raise EvaluationError(
            f"{npz_path}: scores of shape {scores.shape} and {labels.shape} labels do not "
            f"make (N, {num_classes}) and (N,)"
        )
    if not np.issubdtype(labels.dtype, np.integer) or not np.isfinite(scores).all():
        raise EvaluationError(f"{npz_path}: labels must be integers and scores finite")
    for key in ("dataset", "benchmark"):
        if data.get(key) is not None and str(arrays[key]) != data[key]:
            raise EvaluationError(
                f"{npz_path} holds scores on {key} {str(arrays[key])!r} but {path} says "
                f"{data[key]!r}"
            )
    seed = int(arrays["seed"]) if "seed" in arrays else -1
    top1 = top1_of(scores, labels)
    expected = _expected_top1(data, seed)
    if expected is None:
        raise EvaluationError(
            f"member {name!r}: {path} reports no numeric metrics.top1 to check its scores "
            f"against (damaged?); {_rerun_hint(path, data)}"
        )
    if not math.isclose(top1, expected, abs_tol=TOP1_TOLERANCE):
        raise EvaluationError(
            f"member {name!r}: the scores in {npz_path} give top-1 {top1:.6f} % but {path} "
            f"reports {expected:.6f} %; they come from different classifiers. "
            f"{_rerun_hint(path, data)}"
        )
    return Member(
        name=name,
        path=path,
        result=data,
        scores_path=npz_path,
        scores=scores.astype(np.float32, copy=False),
        labels=labels.astype(np.int64, copy=False),
        names_sha256=str(arrays["names_sha256"]),
        num_classes=num_classes,
        seed=seed,
        top1=top1,
    )


def check_members(members: Sequence[Member]) -> None:
    """Refuse members that do not score one test set under one protocol and method.

    Compared with the first member: dataset, benchmark, protocol, method, pretraining
    dataset, encoder initialisation, label fraction, number of classes, the test set's
    fingerprint (sha256 of its ordered sample names) and its labels.
    """
    if len(members) < 2:
        raise EvaluationError(f"an ensemble needs 2 or more members, got {len(members)}")
    for member in members:  # a stream's name must be what its model was trained on
        modality = member.result.get("modality")
        if member.name in STREAMS and modality != member.name:
            raise EvaluationError(
                f"member {member.name!r} ({member.path}) is a model of the {modality!r} "
                f"stream; give it as --member {modality}=... or pick the {member.name} model"
            )
    first = members[0]
    for other in members[1:]:
        pairs: list[tuple[str, Any, Any]] = [
            (key, first.result.get(key), other.result.get(key)) for key in _SAME_KEYS
        ]
        pairs += [
            ("config.label_fraction", first.label_fraction, other.label_fraction),
            ("number of classes", first.num_classes, other.num_classes),
            ("number of test samples", len(first.labels), len(other.labels)),
            ("test set (sha256 of its sample names)", first.names_sha256, other.names_sha256),
        ]
        pairs += [  # one setting: the same encoder on data of the same recipe
            (f"pretraining {key}", _pretrain_key(first, key), _pretrain_key(other, key))
            for key in ("encoder.arch", "data.recipe")
        ]
        for what, a, b in pairs:
            if a != b:
                raise EvaluationError(
                    f"members {first.name!r} ({first.path}) and {other.name!r} ({other.path}) "
                    f"differ in {what}: {a!r} vs {b!r}; an ensemble fuses scores of one method "
                    "on one test set under one protocol"
                )
        if not np.array_equal(first.labels, other.labels):
            raise EvaluationError(
                f"members {first.name!r} ({first.scores_path}) and {other.name!r} "
                f"({other.scores_path}) differ in their test labels"
            )


def resolve_weights(names: Sequence[str], weights: Mapping[str, float] | None) -> dict[str, float]:
    """Every member's weight: the given ones, 1 for the others.

    Refused: a weight naming no member, a negative or non-finite weight, all weights zero.
    """
    given = dict(weights or {})
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise EvaluationError(
            f"weights given for {unknown}, which name no member (members: {list(names)})"
        )
    resolved = {name: float(given.get(name, 1.0)) for name in names}
    bad = {n: w for n, w in resolved.items() if not math.isfinite(w) or w < 0}
    if bad:
        raise EvaluationError(f"weights must be finite and 0 or more, got {bad}")
    if not any(resolved.values()):
        raise EvaluationError("all weights are 0; at least one member must count")
    return resolved


def fuse(scores: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Late fusion: ``sum_i w_i * scores_i`` of (N, C) score arrays, in float64."""
    if len(scores) != len(weights) or not scores:
        raise EvaluationError(f"{len(scores)} score arrays but {len(weights)} weights")
    total = np.zeros(scores[0].shape, dtype=np.float64)
    for s, w in zip(scores, weights, strict=True):
        total += w * np.asarray(s, dtype=np.float64)
    return total


# ------------------------------------------------------------------------ the verb


def _checkpoint_sha256(result: dict[str, Any]) -> str | None:
    checkpoint = result.get("checkpoint")
    return checkpoint.get("sha256") if isinstance(checkpoint, dict) else None


def ensemble(
    members: Mapping[str, Path],
    weights: Mapping[str, float] | None,
    out: Path,
    check: Callable[[Path, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Fuse the members' scores with ``weights`` and write the results JSON ``out``.

    ``members`` maps a name (e.g. ``joint``) to a results JSON with a scores file.
    ``weights`` maps member names to weights (default 1 each); they are fixed inputs,
    never searched on the test set. ``check(out, result)`` may refuse the result before it
    is written (the command line checks it against its results-file name). Returns the
    result as written (atomically).
    """
    started = time.perf_counter()
    out = Path(out)
    names = list(members)
    if len(names) < 2:
        raise EvaluationError(f"an ensemble needs 2 or more members, got {len(names)}")
    paths = [Path(p).resolve() for p in members.values()]
    for i, p in enumerate(paths):
        if p == out.resolve():
            raise EvaluationError(f"--out {out} is member {names[i]!r}; write the ensemble apart")
        if p in paths[:i]:
            raise EvaluationError(
                f"members {names[paths.index(p)]!r} and {names[i]!r} are the same file {p}"
            )
    resolved = resolve_weights(names, weights)
    read = [read_member(name, Path(members[name])) for name in names]
    check_members(read)
    first = read[0]
    fused = fuse([m.scores for m in read], [resolved[m.name] for m in read])
    top1 = top1_of(fused, first.labels)
    result: dict[str, Any] = {
        "protocol": first.result["protocol"],
        "dataset": first.result.get("dataset"),
        "benchmark": first.result.get("benchmark"),
        "method": first.result.get("method"),
        "modality": "ensemble",
        "pretrained_on": first.result.get("pretrained_on"),
        "encoder_init": first.result.get("encoder_init"),
        "metrics": {
            "top1": top1,
            "members": {
                m.name: {"top1": m.top1, "weight": resolved[m.name], "path": str(m.path)}
                for m in read
            },
            "weights": resolved,
        },
        "config": {
            "members": {m.name: str(m.path) for m in read},
            "weights": resolved,
            "label_fraction": first.label_fraction,
        },
        "test_set": {
            "num_samples": len(first.labels),
            "num_classes": first.num_classes,
            "names_sha256": first.names_sha256,
        },
        "members": {
            m.name: {
                "path": str(m.path),
                "sha256": sha256_of(m.path),
                "scores": str(m.scores_path),
                "scores_sha256": sha256_of(m.scores_path),
                "modality": m.result.get("modality"),
                "seed": m.seed,
                "checkpoint_sha256": _checkpoint_sha256(m.result),
            }
            for m in read
        },
        "provenance": provenance(torch.device("cpu")),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if check is not None:
        check(out, result)
    atomic_write_json(out, result)
    return result
