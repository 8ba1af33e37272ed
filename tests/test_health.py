"""Representation health: the measures against explicit loops, and their use in training."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from halp.config import PretrainConfig, load_config
from halp.data import prepare
from halp.eval.health import alignment, mean_cosine, uniformity
from halp.train import pretrain


def test_measures_equal_explicit_loops() -> None:
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(12, 5, generator=g, dtype=torch.float64), dim=1)
    b = F.normalize(torch.randn(12, 5, generator=g, dtype=torch.float64), dim=1)
    n = len(a)
    align = sum(float((a[i] - b[i]).pow(2).sum()) for i in range(n)) / n
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    unif = math.log(
        sum(math.exp(-2 * float((a[i] - a[j]).pow(2).sum())) for i, j in pairs) / len(pairs)
    )
    cos = sum(float(a[i] @ a[j]) for i, j in pairs) / len(pairs)
    assert alignment(a, b) == pytest.approx(align, rel=1e-6)
    assert uniformity(a) == pytest.approx(unif, rel=1e-5)
    assert mean_cosine(a) == pytest.approx(cos, abs=1e-6)


def test_collapse_reads_as_collapse() -> None:
    g = torch.Generator().manual_seed(1)
    spread = torch.randn(300, 64, generator=g)
    collapsed = torch.ones(300, 64) + 0.01 * torch.randn(300, 64, generator=g)
    assert mean_cosine(spread) < 0.05 < 0.99 < mean_cosine(collapsed)
    assert uniformity(spread) < -3.5 and uniformity(collapsed) > -0.01
    assert alignment(spread, spread) == 0.0


@pytest.fixture(scope="module")
def ntu_data(synth_ntu_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ntu60")
    prepare.prepare_ntu("ntu60", [synth_ntu_raw], out)
    return out / "xsub"


def _config(data: Path, *overrides: str) -> PretrainConfig:
    return load_config(
        PretrainConfig,
        "builtin:smoke",
        [
            f"data.root={data}",
            "optim.epochs=2",
            "log.knn_every=0",
            "log.health_every=1",
            *overrides,
        ],
    )


def test_pretraining_logs_health_and_the_probe_changes_nothing(
    ntu_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    row = pretrain(_config(ntu_data, "method=cmd"), tmp_path / "a")
    for m in ("joint", "motion", "bone"):
        assert -1.0 <= row[f"cos_{m}"] <= 1.0 and row[f"uniform_{m}"] <= 0.0
        assert row[f"align_{m}"] >= 0.0
    pretrain(_config(ntu_data, "method=cmd", "log.health_samples=0"), tmp_path / "b")
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # measuring leaves training untouched
    rows = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert not any(k.startswith("cos_") for r in rows for k in r)


def test_the_collapse_warning_needs_a_high_and_rising_cosine(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from halp.train.monitor import HealthProbe

    probe = HealthProbe.__new__(HealthProbe)  # only the warning logic, no data
    probe.low_cos = {"joint": 0.30, "bone": 0.90}
    with caplog.at_level(logging.WARNING, logger="halp.train.monitor"):
        probe.warn_collapse({"cos_joint": 0.85, "cos_bone": 0.91}, 0.8, epoch=7)
    assert "epoch 7: the joint embedding may be collapsing" in caplog.text
    assert "rose from its lowest 0.300 to 0.850" in caplog.text
    assert "bone" not in caplog.text  # high from the initialisation on, not rising
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="halp.train.monitor"):
        probe.warn_collapse({"cos_joint": 0.70, "cos_bone": 0.99}, 0.8, epoch=8)
    assert "joint" not in caplog.text and "0.990" in caplog.text


def test_the_collapse_warning_measures_the_rise_from_the_running_minimum(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A fresh BiGRU starts near 0.95, falls while it learns and collapses when a term
    switches on: the rise counts from the lowest cosine, not from the first epoch (a
    warning against epoch 0 never fires here), and a resumed run remembers its rows."""
    from halp.train.monitor import HealthProbe

    probe = HealthProbe.__new__(HealthProbe)
    probe.low_cos = {}
    with caplog.at_level(logging.WARNING, logger="halp.train.monitor"):
        for epoch, cos in enumerate([0.95, 0.85, 0.77, 0.76, 0.79]):
            probe.warn_collapse({"cos_joint": cos}, 0.8, epoch)
        assert caplog.text == ""  # above 0.8 only while falling from the start
        probe.warn_collapse({"cos_joint": 0.87}, 0.8, epoch=5)
    assert "epoch 5: the joint embedding may be collapsing" in caplog.text
    assert "from its lowest 0.760 to 0.870" in caplog.text
    resumed = HealthProbe.__new__(HealthProbe)
    resumed.low_cos = {}
    resumed.remember([{"epoch": 0, "cos_joint": 0.95}, {"epoch": 4, "cos_joint": 0.76}])
    assert resumed.low_cos == {"joint": 0.76}
