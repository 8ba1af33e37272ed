"""Checkpoints across the package's format versions: a version-1 run resumes bit-identically.

``tests/data/checkpoint_v1_halp_cmd_epoch{1,2}.pt`` were written by the package before the
composable objectives (format ``halp-pretrain/1``) with ``checkpoint_v1_halp_cmd.yaml`` on
``synth_ntu(classes=4, per_class=6, seed=1)``: epoch 1 of a run, then the same run resumed
for its second epoch. Resuming epoch 1 with today's code must reproduce epoch 2 exactly,
which pins every loss term, the prototype refresh, the warm-up counter and the random
streams to their old behaviour.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from halp.config import EvalConfig, PretrainConfig, load_config
from halp.data import prepare
from halp.data.synthetic import synth_ntu
from halp.errors import CheckpointError
from halp.evaluate import classifier_from_checkpoint, evaluate
from halp.methods.checkpoint import CHECKPOINT, CHECKPOINT_FORMAT, load_checkpoint
from halp.train import pretrain

DATA = Path(__file__).resolve().parent / "data"
V1_EPOCH1 = DATA / "checkpoint_v1_halp_cmd_epoch1.pt"
V1_EPOCH2 = DATA / "checkpoint_v1_halp_cmd_epoch2.pt"
V1_CONFIG = DATA / "checkpoint_v1_halp_cmd.yaml"


@pytest.fixture(scope="module")
def v1_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic benchmark the version-1 fixtures were trained on."""
    root = tmp_path_factory.mktemp("v1")
    synth_ntu(root / "raw", classes=4, per_class=6, seed=1)
    prepare.prepare_ntu("ntu60", [root / "raw"], root / "data", workers=1)
    return root / "data" / "xsub"


def _renamed_v1(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Version-1 key names -> today's, written out by hand (independent of the migration)."""
    out = {}
    for key, value in state.items():
        if key == "halp_keys_seen":
            key = "objectives.halp.keys_seen"
        elif key.endswith(".prototypes") and key.startswith("branches."):
            key = f"objectives.halp.prototypes.{key.split('.')[1]}.centres"
        elif key.endswith(".prototypes_ready"):
            key = f"objectives.halp.prototypes.{key.split('.')[1]}.ready"
        out[key] = value
    return out


def test_v1_checkpoint_loads_with_renamed_state() -> None:
    payload = load_checkpoint(V1_EPOCH1)
    assert payload["format"] == CHECKPOINT_FORMAT and payload["migrated_from"] == "halp-pretrain/1"
    old = torch.load(V1_EPOCH1, weights_only=True)["model"]
    expected = _renamed_v1(old)
    assert set(payload["model"]) == set(expected)
    assert all(torch.equal(payload["model"][k], v) for k, v in expected.items())
    assert bool(payload["model"]["objectives.halp.prototypes.bone.ready"])


def test_v1_run_resumes_bit_identically(v1_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(V1_EPOCH1, run / CHECKPOINT)
    config = load_config(PretrainConfig, V1_CONFIG, [f"data.root={v1_data}"])
    row = pretrain(config, run, resume=True)
    want = torch.load(V1_EPOCH2, weights_only=True)
    got = load_checkpoint(run / CHECKPOINT)
    assert got["epoch"] == want["epoch"] == 2
    expected = _renamed_v1(want["model"])
    assert set(got["model"]) == set(expected)
    # bit-identical on the kind of CPU the fixtures were made on; another CPU's float
    # kernels (e.g. the GRU's) round differently, so the check is a tight tolerance
    for key, value in expected.items():
        torch.testing.assert_close(got["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    for key, value in want["metrics"].items():
        if key != "seconds":
            assert row[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


def test_v1_checkpoint_evaluates(v1_data: Path, tmp_path: Path) -> None:
    payload = load_checkpoint(V1_EPOCH2)
    model = classifier_from_checkpoint(payload, "motion", num_classes=60)
    assert model.fc.out_features == 60
    config = load_config(
        EvalConfig,
        None,
        [
            "protocol=knn",
            f"checkpoint={V1_EPOCH2}",
            f"data_root={v1_data}",
            "device=cpu",
            "workers=0",
            "frames=8",
        ],
    )
    result = evaluate(config, tmp_path / "knn.json")
    assert 0.0 <= result["metrics"]["top1"] <= 100.0 and result["method"] == "halp_cmd"


def test_unknown_format_is_refused_naming_both(tmp_path: Path) -> None:
    payload = torch.load(V1_EPOCH1, weights_only=True)
    payload["format"] = "halp-pretrain/9"
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match=r"halp-pretrain/9.*halp-pretrain/2"):
        load_checkpoint(tmp_path / "future.pt")
