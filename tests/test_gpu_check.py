"""The device check runs end to end at toy sizes on the CPU, so it never meets a GPU untested."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from halp.methods import PRESETS

ROOT = Path(__file__).resolve().parents[1]


def load_script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_gpu_check_tiny_on_cpu(tmp_path: Path) -> None:
    script = load_script()
    argv = ["--tiny", "--device", "cpu", "--out", str(tmp_path), "--rounds", "1"]
    argv += ["--steps", "1", "--precision-steps", "2", "--workers", "0"]
    status = script.main(argv)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["errors"] == {} and status == 0
    sections = report["sections"]
    expected = {"environment", "methods", "precision", "reference_forward", "data", "loader"}
    assert expected | {"pretraining", "gpu_hours"} <= set(sections)
    methods = sections["methods"]
    timed = set(PRESETS) | {f"{m}-stgcn" for m in script.STGCN_METHODS}  # their own encoder
    assert set(methods["step_s"]) == timed and methods["time_ratio"]["baseline"] == 1.0
    assert set(methods["halp_time_ratio"]) == {"aimclr", "aimclr-stgcn", "hiclr", "hiclr-stgcn"}
    precision = sections["precision"]
    assert precision["loss_diff_vs_fp32"]["fp32"] == 0.0
    assert precision["loss_diff_vs_fp32"]["bf16"] < 1.0  # bf16 autocast: close, not equal
    assert sections["reference_forward"]["max_abs_diff_device_vs_cpu"] == 0.0  # CPU vs CPU
    assert 0.0 <= sections["pretraining"]["linear_top1"] <= 100.0
    assert sections["pretraining"]["last_epoch"]["epoch"] == 1  # 1 epoch, resumed for 1 more
    hours = sections["gpu_hours"]["ntu60_xsub"]
    assert set(hours) == timed and all(h > 0 for h in hours.values())
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "| halp_cmd |" in markdown and "| bf16 |" in markdown
    assert not [p for p in tmp_path.iterdir() if p.name not in ("gpu_check.json", "gpu_check.md")]
