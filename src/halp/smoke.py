"""The embedded default run: synthetic raw data through every stage built so far.

``halp smoke`` writes NTU and PKU-MMD II raw files with ``halp.data.synthetic``, prepares
NTU-60, NTU-120 and PKU-II from them exactly as real data is prepared, draws one
pretraining batch and one classification batch from each benchmark through the
training loaders, and pretrains every method preset (baseline, HaLP, CMD, HaLP+CMD)
on NTU-60 x-sub with the tiny configuration ``builtin:smoke`` (package data, so an
installed package needs no repository). It needs no download and
runs on a laptop CPU in about a minute.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from halp.config import PretrainConfig, load_config
from halp.data import prepare, synthetic
from halp.data.loaders import ClassificationDataset, PretrainDataset, make_loader
from halp.data.storage import load_split
from halp.io import atomic_write_json
from halp.methods import PRESETS
from halp.train import pretrain

log = logging.getLogger(__name__)

SMOKE_CONFIG = "builtin:smoke"
"""The tiny pretraining configuration, shipped as package data (:mod:`halp.resources`)."""


def smoke_pretrain_config(data_root: Path, method: str) -> PretrainConfig:
    """The tiny configuration for ``method`` on the benchmark folder ``data_root``."""
    return load_config(PretrainConfig, SMOKE_CONFIG, [f"method={method}", f"data.root={data_root}"])


def _first_batch_shapes(root: Path, seed: int) -> dict[str, Any]:
    train = load_split(root, "train")
    test = load_split(root, "test")
    pre = PretrainDataset(train, modality=["joint", "motion", "bone"], seed=seed)
    query, key, _ = next(iter(make_loader(pre, batch_size=8, shuffle=True, seed=seed)))
    cls = ClassificationDataset(test, train=False, seed=seed)
    clips, labels = next(iter(make_loader(cls, batch_size=8, shuffle=False, seed=seed)))
    assert all(torch.isfinite(v).all() for v in (*query.values(), *key.values(), clips))
    return {
        "train": len(train),
        "test": len(test),
        "pretrain_batch": {m: list(t.shape) for m, t in query.items()},
        "test_batch": list(clips.shape),
        "test_labels": labels.tolist(),
    }


def run_smoke(out: Path, workers: int = 1, seed: int = 0) -> dict[str, Any]:
    """Run the embedded default end to end under ``out``; returns and writes a summary."""
    out = Path(out)
    start = time.perf_counter()
    raw_ntu = out / "raw" / "ntu"
    raw_pku = out / "raw" / "pku2"
    synthetic.synth_ntu(raw_ntu, classes=6, per_class=8, seed=seed)
    synthetic.synth_pku(raw_pku, classes=6, per_class=8, seed=seed)
    prepared = {
        "ntu60": prepare.prepare_ntu("ntu60", [raw_ntu], out / "data" / "ntu60", workers),
        "ntu120": prepare.prepare_ntu("ntu120", [raw_ntu], out / "data" / "ntu120", workers),
        "pku2": prepare.prepare_pku(raw_pku, out / "data" / "pku2", workers),
    }
    report: dict[str, Any] = {"seed": seed, "benchmarks": {}}
    for dataset, summary in prepared.items():
        for bench in summary.counts:
            shapes = _first_batch_shapes(summary.out / bench, seed)
            report["benchmarks"][f"{dataset}_{bench}"] = shapes
            print(
                f"{dataset} {bench}: train {shapes['train']}, test {shapes['test']}, "
                f"pretrain views {shapes['pretrain_batch']['joint']} x 3 modalities"
            )
    report["pretrain"] = {}
    for method in PRESETS:
        run = out / "runs" / f"ntu60_xsub_{method}"
        if (run / "checkpoint.pt").exists():  # a rerun starts the runs afresh
            for path in run.iterdir():
                path.unlink()
        row = pretrain(smoke_pretrain_config(out / "data" / "ntu60" / "xsub", method), run)
        report["pretrain"][method] = row
        print(f"pretrain {method}: loss {row['loss']:.3f}, kNN top-1 {row['knn_top1']:.1f} %")
    report["seconds"] = round(time.perf_counter() - start, 2)
    atomic_write_json(out / "smoke.json", report)
    print(f"smoke run finished in {report['seconds']} s; summary in {out / 'smoke.json'}")
    return report
