"""The training step reads nothing from the device on the host (no per-step GPU sync)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_bench():  # type: ignore[no-untyped-def]
    path = ROOT / "benchmarks" / "bench_sync.py"
    spec = importlib.util.spec_from_file_location("bench_sync", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("method", ["baseline", "halp_cmd"])
def test_ordinary_training_steps_make_no_host_reads(method: str) -> None:
    bench = load_bench()
    reads = bench.reads_per_step(method, torch.device("cpu"), steps=6)
    assert reads["ordinary"] == 0.0
    if method == "halp_cmd":
        assert 0 < reads["refresh"] <= 10  # the k-means of a refresh reads a few values


def test_the_counter_sees_host_reads() -> None:
    """The instrument itself: item, float and bool on a tensor are counted."""
    bench = load_bench()
    x = torch.ones(3)
    with bench.count_host_reads() as counts:
        x.sum().item()
        float(x[0])
        bool(x.all())
    assert sum(counts.values()) == 3
    assert float(torch.ones(())) == 1.0  # restored afterwards
