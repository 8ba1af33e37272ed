"""halp figures: PNG and PDF for the inputs present, skipped (never crashing) for the rest."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from halp.report.figures import build_figures, read_runs, read_semi


def write_run(runs: Path, name: str, rows: list[dict]) -> None:
    run = runs / name
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def pretrain_rows(method: str, epochs: int = 4, knn: bool = True) -> list[dict]:
    """Rows as ``halp pretrain`` logs them: HaLP terms only once mu > 0 (here from epoch 2)."""
    modalities = ["joint", "motion", "bone"] if "cmd" in method else ["joint"]
    rows = []
    for epoch in range(epochs):
        mu = 1.0 if "halp" in method and epoch >= 2 else 0.0
        row = {"epoch": epoch, "lr": 0.01, "mu": mu}
        for m in modalities:
            row[f"loss_cl_{m}"] = 5.0 - 0.3 * epoch
            row[f"acc_{m}"] = 0.1 * epoch
            if mu > 0:
                row[f"loss_halp_{m}"] = -10.0
                row[f"halp_keep_{m}"] = 0.9 + 0.01 * epoch
                row[f"halp_t_star_{m}"] = 0.3 + 0.02 * epoch
        if "cmd" in method:
            row["loss_cmd"] = 1.0
        row["loss"] = sum(v for k, v in row.items() if k.startswith("loss_"))
        if knn and epoch % 2 == 1:
            row["knn_top1"] = 40.0 + epoch
        row["seconds"] = 1.5
        rows.append(row)
    return rows


def write_semi(results: Path, name: str, top1: float, std: float) -> None:
    protocol = name.rsplit("_", 1)[1]
    fraction = int(protocol[4:]) / 100 if protocol.startswith("semi") else 1.0
    data = {
        "protocol": "semi" if protocol.startswith("semi") else protocol,
        "dataset": name.split("_")[0],
        "benchmark": name.split("_")[1],
        "method": name.split("_", 2)[2].rsplit("_", 1)[0].split("-")[0],
        "metrics": {"top1": top1, "top1_std": std, "best_on_test": top1 + 1},
        "config": {"label_fraction": fraction},
        "checkpoint": {"sha256": "0" * 64},
        "provenance": {"commit": "abc"},
    }
    (results / f"{name}.json").write_text(json.dumps(data))


def assert_figure(path_png: Path) -> None:
    pdf = path_png.with_suffix(".pdf")
    assert path_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert path_png.stat().st_size > 1000 and pdf.stat().st_size > 1000


def test_figures_for_present_inputs(tmp_path: Path):
    runs, results, out = tmp_path / "runs", tmp_path / "results", tmp_path / "figures"
    for method in ("baseline", "halp", "halp_cmd"):
        write_run(runs, f"ntu60_xsub_{method}", pretrain_rows(method))
    results.mkdir()
    for name, top1 in (("semi1", 30.0), ("semi10", 60.0), ("finetune", 80.0)):
        write_semi(results, f"ntu60_xsub_halp_{name}", top1, 0.5)
    write_semi(results, "ntu60_xsub_baseline_semi10", 55.0, 1.0)

    written = build_figures(runs, results, out)
    stems = (
        "pretrain_loss_ntu60_xsub",
        "knn_ntu60_xsub",
        "halp_filter_ntu60_xsub",
        "semi_ntu60_xsub",
    )
    assert written == [out / f"{s}.{ext}" for s in stems for ext in ("png", "pdf")]
    for stem in stems:
        assert_figure(out / f"{stem}.png")
    assert not list(out.glob("*.partial"))
    again = build_figures(runs, results, tmp_path / "again")  # same inputs, same bytes
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in written]


def test_absent_inputs_are_skipped_with_a_note(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    runs = tmp_path / "runs"
    write_run(runs, "pku2_xsub_baseline", pretrain_rows("baseline", knn=False))
    with caplog.at_level(logging.INFO, logger="halp.report.figures"):
        written = build_figures(runs, tmp_path / "no-results", tmp_path / "out")
    assert [p.name for p in written] == [
        "pretrain_loss_pku2_xsub.png",
        "pretrain_loss_pku2_xsub.pdf",
    ]
    assert "skipping knn_pku2_xsub" in caplog.text
    assert "skipping halp_filter_pku2_xsub" in caplog.text
    assert "skipping semi-supervised figures" in caplog.text


def test_empty_or_damaged_folders_never_crash(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    assert build_figures(tmp_path / "none", tmp_path / "none", tmp_path / "out") == []
    runs, results = tmp_path / "runs", tmp_path / "results"
    write_run(runs, "ntu60_xsub_halp", pretrain_rows("halp"))
    (runs / "ntu60_xsub_halp" / "metrics.jsonl").write_text('{"epoch": 0, "loss": 1}\n{"epo')
    write_run(runs, "ntu60_xsub_cmd", [])  # started, nothing logged yet
    (runs / "no_metrics_yet").mkdir()
    results.mkdir()
    (results / "ntu60_xsub_halp_semi10.json").write_text("{not json")
    with caplog.at_level(logging.INFO, logger="halp.report.figures"):
        assert build_figures(runs, results, tmp_path / "out") == []
    assert "metrics.jsonl:2: not valid JSON" in caplog.text
    assert "ntu60_xsub_halp_semi10.json" in caplog.text


def test_readers_group_by_benchmark(tmp_path: Path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    write_run(runs, "ntu60_xsub_halp-lam0.6", pretrain_rows("halp", epochs=2))
    write_run(runs, "ntu120_xset_cmd", pretrain_rows("cmd", epochs=2))
    write_run(runs, "my_experiment", pretrain_rows("baseline", epochs=2))
    grouped = read_runs(runs)
    assert {b: sorted(g) for b, g in grouped.items()} == {
        "ntu60_xsub": ["HaLP (lam0.6)"],
        "ntu120_xset": ["CMD"],
        "runs": ["my_experiment"],
    }
    results.mkdir()
    write_semi(results, "ntu60_xview_cmd_semi10", 50.0, 2.0)
    write_semi(results, "ntu60_xview_cmd_semi1", 20.0, 1.0)
    assert read_semi(results) == {"ntu60_xview": {"CMD": [(1, 20.0, 1.0), (10, 50.0, 2.0)]}}


def test_health_figure_is_drawn_from_the_logged_probe_metrics(tmp_path: Path) -> None:
    rows = pretrain_rows("halp")
    for row in rows:
        row.update(cos_joint=0.1 * row["epoch"], uniform_joint=-3.0, align_joint=0.5)
    write_run(tmp_path / "runs", "ntu60_xsub_halp", rows)
    write_run(tmp_path / "runs", "ntu60_xsub_baseline", pretrain_rows("baseline"))
    written = build_figures(tmp_path / "runs", tmp_path / "results", tmp_path / "fig")
    names = {p.name for p in written}
    assert {"health_ntu60_xsub.png", "health_ntu60_xsub.pdf"} <= names
