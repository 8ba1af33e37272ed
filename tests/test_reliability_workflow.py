"""Reliability of the workflow layer: a bad value stops its job early, naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_bad_pretraining_value_fails_its_job_naming_the_key(tmp_path: Path) -> None:
    """The job fails in seconds with the key in its log: no data read, no epoch trained."""
    config = tmp_path / "bad.yaml"
    config.write_text("pretrain:\n  set: {halp.lam: 1.5}\n")
    target = "runs/ntu60_xsub_halp/final.pt"
    run = subprocess.run(
        [
            sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
            "--cores", "1", target,
            "--configfile", str(ROOT / "config" / "smoke.yaml"), str(config),
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode != 0
    log = (tmp_path / "logs" / "pretrain" / "ntu60_xsub_halp.log").read_text()
    assert "config key 'halp.lam': 1.5 is invalid; it must be in [0, 1]" in log
    assert "Traceback" not in log
    assert not (tmp_path / "runs" / "ntu60_xsub_halp" / "checkpoint.pt").exists()
