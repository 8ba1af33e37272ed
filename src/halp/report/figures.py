"""Figures of pretraining and evaluation (``halp figures``), as PNG and PDF.

Inputs (the names of :mod:`halp.report.tables`):

- ``runs/{dataset}_{split}_{variant}/metrics.jsonl``: one JSON object per epoch, as
  ``halp pretrain`` writes it (``epoch``, ``loss``, ``loss_cl_<modality>``, ``knn_top1``
  every few epochs, ``halp_keep_<modality>`` and ``halp_t_star_<modality>`` once μ > 0, ...).
  Runs are grouped by benchmark (``{dataset}_{split}``); a folder whose name does not
  follow the pattern forms a group ``runs`` of its own.
- ``results/{dataset}_{split}_{variant}_semi<P>.json`` (and ``..._finetune.json`` as 100 %).

Figures, one per benchmark, each skipped with a logged note when it has no input:

- ``pretrain_loss_<benchmark>``: total loss and InfoNCE (mean over modalities) per epoch;
- ``knn_<benchmark>``: kNN top-1 over epochs;
- ``halp_filter_<benchmark>``: the rank filter's keep rate and the mean t* over training
  (HaLP runs, per modality);
- ``health_<benchmark>``: the embedding's mean pairwise cosine, uniformity and alignment
  on the fixed probe clips (per modality), the collapse check of pretraining;
- ``semi_<benchmark>``: top-1 against the label fraction, mean ± std over the repeats.

matplotlib is imported lazily (Agg backend), so the core package does not need it. A
malformed ``metrics.jsonl`` or results JSON is skipped with a warning: figures never stop
on a partial or damaged folder (``halp tables`` is the strict check of results files).
PDFs carry no creation date, so the same inputs give the same files.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from halp.errors import TablesError
from halp.io import atomic_write_bytes, atomic_write_text, read_jsonl
from halp.methods import PRESETS, method_label
from halp.report import published as pub
from halp.report.naming import EVAL_NAME, variant_label
from halp.report.results import read_result

log = logging.getLogger(__name__)

RUN_NAME = re.compile(r"^(?P<benchmark>(?:ntu60|ntu120|pku2)_(?:xsub|xview|xset))_(?P<variant>.+)$")
OTHER_GROUP = "runs"
_LINESTYLES = {"joint": "-", "motion": "--", "bone": ":"}


# ---------------------------------------------------------------------- inputs


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` (blank lines skipped), sorted by epoch."""
    return sorted(read_jsonl(path, TablesError), key=lambda r: r["epoch"])


def read_runs(runs_dir: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``{benchmark: {label: rows}}`` for every ``runs_dir/*/metrics.jsonl``."""
    groups: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(dict)
    paths = sorted(Path(runs_dir).glob("*/metrics.jsonl")) if Path(runs_dir).is_dir() else []
    for path in paths:
        try:
            rows = read_metrics(path)
        except (OSError, UnicodeDecodeError, ValueError) as err:
            log.warning("skipping run %s: %s", path.parent, err)
            continue
        if not rows:
            log.info("skipping run %s: metrics.jsonl is empty", path.parent)
            continue
        match = RUN_NAME.match(path.parent.name)
        if match:
            groups[match["benchmark"]][variant_label(match["variant"])] = rows
        else:
            groups[OTHER_GROUP][path.parent.name] = rows
    return dict(groups)


def read_semi(results_dir: Path) -> dict[str, dict[str, list[tuple[int, float, float]]]]:
    """``{benchmark: {label: [(percent, mean, std), ...]}}`` from semi / finetune results."""
    groups: dict[str, dict[str, list[tuple[int, float, float]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    results_dir = Path(results_dir)
    paths = sorted(results_dir.glob("*.json")) if results_dir.is_dir() else []
    for path in paths:
        match = EVAL_NAME.match(path.name)
        if not match or not (
            match["protocol"].startswith("semi") or match["protocol"] == "finetune"
        ):
            continue
        try:
            result = read_result(path)
        except (OSError, TablesError) as err:
            log.warning("skipping %s: %s", path, err)
            continue
        assert result.percent is not None
        label = variant_label(result.variant)
        groups[f"{result.dataset}_{result.split}"][label].append(
            (result.percent, result.top1, result.std or 0.0)
        )
    return {b: {k: sorted(v) for k, v in g.items()} for b, g in groups.items()}


def _series(rows: list[dict[str, Any]], key: str | Callable[[dict], float | None]):
    """(epochs, values) of the rows where ``key`` has a finite value."""
    xs, ys = [], []
    for row in rows:
        value = key(row) if callable(key) else row.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            xs.append(row["epoch"])
            ys.append(float(value))
    return xs, ys


def _mean_prefix(prefix: str) -> Callable[[dict], float | None]:
    def value(row: dict[str, Any]) -> float | None:
        found = [v for k, v in row.items() if k.startswith(prefix) and isinstance(v, int | float)]
        return sum(found) / len(found) if found else None

    return value


def _modalities(rows: list[dict[str, Any]], prefix: str) -> list[str]:
    return sorted({k[len(prefix) :] for row in rows for k in row if k.startswith(prefix)})


# ---------------------------------------------------------------------- drawing


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` atomically and close the figure."""
    import io

    plt = _pyplot()
    written = []
    metadata = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Creator": None}}
    for ext in ("png", "pdf"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=ext, dpi=150, bbox_inches="tight", metadata=metadata[ext])
        path = out_dir / f"{stem}.{ext}"
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    plt.close(fig)
    return written


def _title(benchmark: str) -> str:
    dataset, _, split = benchmark.partition("_")
    return pub.benchmark_label(dataset, split) if split else benchmark


_METHOD_COLOURS = {method_label(m): f"C{i}" for i, m in enumerate(PRESETS)}


def _colours(labels: Any) -> dict[str, str]:
    """The four methods keep one colour in every figure; other labels take the next ones."""
    colours = {label: _METHOD_COLOURS[label] for label in labels if label in _METHOD_COLOURS}
    others = sorted(label for label in labels if label not in _METHOD_COLOURS)
    first = len(_METHOD_COLOURS)
    colours.update({label: f"C{(first + i) % 10}" for i, label in enumerate(others)})
    return colours


def _epoch_axis(*axes: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def figure_loss(benchmark: str, runs: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    """Each loss term over epochs, one line per method."""
    plt = _pyplot()
    colours = _colours(runs)
    fig, (ax_total, ax_cl) = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, rows in sorted(runs.items()):
        ax_total.plot(*_series(rows, "loss"), color=colours[label], label=label)
        ax_cl.plot(*_series(rows, _mean_prefix("loss_cl_")), color=colours[label], label=label)
    _epoch_axis(ax_total, ax_cl)
    ax_total.set(xlabel="epoch", ylabel="loss", title="total loss")
    ax_cl.set(xlabel="epoch", ylabel="InfoNCE", title="InfoNCE (mean over modalities)")
    ax_total.legend(fontsize="small")
    fig.suptitle(f"Pretraining, {_title(benchmark)}")
    return _save(fig, out_dir, f"pretrain_loss_{benchmark}")


def figure_knn(
    benchmark: str, runs: dict[str, list[dict]], out_dir: Path, colours: dict[str, str]
) -> list[Path]:
    """The kNN top-1 over epochs (the pretraining monitor), one line per method."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, rows in sorted(runs.items()):
        xs, ys = _series(rows, "knn_top1")
        ax.plot(xs, ys, marker="o", markersize=3, color=colours[label], label=label)
    _epoch_axis(ax)
    ax.set(xlabel="epoch", ylabel="kNN top-1 (%)", title=f"kNN accuracy, {_title(benchmark)}")
    ax.legend(fontsize="small")
    return _save(fig, out_dir, f"knn_{benchmark}")


def figure_filter(
    benchmark: str, runs: dict[str, list[dict]], out_dir: Path, colours: dict[str, str]
) -> list[Path]:
    """The rank filter's keep rate and the mean t* over epochs (HaLP runs)."""
    plt = _pyplot()
    fig, (ax_keep, ax_t) = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, rows in sorted(runs.items()):
        modalities = sorted({*_modalities(rows, "halp_keep_"), *_modalities(rows, "halp_t_star_")})
        for m in modalities:
            name = f"{label} ({m})" if len(modalities) > 1 else label
            style = {"color": colours[label], "linestyle": _LINESTYLES.get(m, "-.")}
            ax_keep.plot(*_series(rows, f"halp_keep_{m}"), label=name, **style)
            ax_t.plot(*_series(rows, f"halp_t_star_{m}"), label=name, **style)
    _epoch_axis(ax_keep, ax_t)
    ax_keep.set(xlabel="epoch", ylabel="kept fraction", title="rank filter keep rate")
    ax_t.set(xlabel="epoch", ylabel="mean t*", title="mean t*")
    ax_keep.legend(fontsize="small")
    fig.suptitle(f"HaLP positives, {_title(benchmark)}")
    return _save(fig, out_dir, f"halp_filter_{benchmark}")


def figure_health(
    benchmark: str, runs: dict[str, list[dict]], out_dir: Path, colours: dict[str, str]
) -> list[Path]:
    """Mean cosine, uniformity and alignment of the probe embeddings over epochs."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    panels = (
        ("cos_", "mean pairwise cosine (collapse -> 1)"),
        ("uniform_", "uniformity (lower = more uniform)"),
        ("align_", "alignment (lower = closer views)"),
    )
    for label, rows in sorted(runs.items()):
        modalities = _modalities(rows, "cos_")
        for m in modalities:
            name = f"{label} ({m})" if len(modalities) > 1 else label
            style = {"color": colours[label], "linestyle": _LINESTYLES.get(m, "-.")}
            for ax, (prefix, _) in zip(axes, panels, strict=True):
                ax.plot(*_series(rows, f"{prefix}{m}"), label=name, **style)
    for ax, (_, title) in zip(axes, panels, strict=True):
        ax.set(xlabel="epoch", title=title)
    _epoch_axis(*axes)
    axes[0].legend(fontsize="small")
    fig.suptitle(f"Representation health, {_title(benchmark)}")
    return _save(fig, out_dir, f"health_{benchmark}")


def figure_semi(
    benchmark: str, series: dict[str, list[tuple[int, float, float]]], out_dir: Path
) -> list[Path]:
    """Semi-supervised top-1 against the label fraction, with the spread of repeats."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ticks: set[int] = set()
    colours = _colours(series)
    for label, points in sorted(series.items()):
        xs, means, stds = zip(*points, strict=True)
        ticks.update(xs)
        ax.errorbar(
            xs,
            means,
            yerr=stds,
            marker="o",
            markersize=4,
            capsize=3,
            color=colours[label],
            label=label,
        )
    ax.set_xscale("log")
    ax.set_xticks(sorted(ticks), [f"{t} %" for t in sorted(ticks)])
    ax.minorticks_off()
    ax.set(xlabel="labelled training samples", ylabel="top-1 (%)")
    ax.set_title(f"Semi-supervised, {_title(benchmark)} (mean ± std)")
    ax.legend(fontsize="small")
    return _save(fig, out_dir, f"semi_{benchmark}")


def _has(rows: list[dict[str, Any]], prefix: str) -> bool:
    return any(k.startswith(prefix) for row in rows for k in row)


def build_figures(runs_dir: Path, results_dir: Path, out_dir: Path) -> list[Path]:
    """Draw every figure that has input; return the written PNG and PDF paths."""
    out_dir = Path(out_dir)
    written: list[Path] = []
    runs = read_runs(Path(runs_dir))
    if not runs:
        log.info("no pretraining figures: no %s/*/metrics.jsonl", runs_dir)
    for benchmark, group in sorted(runs.items()):
        written += figure_loss(benchmark, group, out_dir)
        with_knn = {k: rows for k, rows in group.items() if _has(rows, "knn_top1")}
        if with_knn:
            written += figure_knn(benchmark, with_knn, out_dir, _colours(group))
        else:
            log.info("skipping knn_%s: no run logged knn_top1", benchmark)
        with_halp = {k: rows for k, rows in group.items() if _has(rows, "halp_keep_")}
        if with_halp:
            written += figure_filter(benchmark, with_halp, out_dir, _colours(group))
        else:
            log.info("skipping halp_filter_%s: no run logged halp_keep_<modality>", benchmark)
        with_health = {k: rows for k, rows in group.items() if _has(rows, "cos_")}
        if with_health:
            written += figure_health(benchmark, with_health, out_dir, _colours(group))
        else:
            log.info("skipping health_%s: no run logged cos_<modality>", benchmark)
    semi = read_semi(Path(results_dir))
    if not semi:
        log.info("skipping semi-supervised figures: no %s/*_semi<P>.json", results_dir)
    for benchmark, series in sorted(semi.items()):
        written += figure_semi(benchmark, series, out_dir)
    write_index(out_dir, written)
    return written


def write_index(out_dir: Path, written: list[Path]) -> Path:
    """Write ``figures.md``: every PNG written, embedded, with a link to its PDF.

    Always written, so a workflow can depend on it even when no figure had input.
    """
    lines = ["# Figures", ""]
    pngs = sorted(p for p in written if p.suffix == ".png")
    if not pngs:
        lines.append("No figure yet: no pretraining metrics or semi-supervised results were found.")
    for png in pngs:
        lines += [f"## {png.stem}", "", f"![{png.stem}]({png.name}) ([PDF]({png.stem}.pdf))", ""]
    index = Path(out_dir) / "figures.md"
    index.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(index, "\n".join(lines).rstrip() + "\n")
    return index


def run_figures(args: argparse.Namespace) -> None:
    """``halp figures --runs DIR --results DIR --out DIR``."""
    written = build_figures(args.runs, args.results, args.out)
    print(f"wrote {len(written)} figure files to {args.out}")
