"""Pretraining: every preset runs, resume is bit-identical, NaN stops, DDP agrees."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from halp.config import PretrainConfig, from_dict, load_config, to_dict
from halp.data import prepare
from halp.errors import CheckpointError, TrainingDiverged
from halp.methods import PRESETS, term_weights
from halp.methods.checkpoint import load_checkpoint
from halp.methods.model import PretrainModel
from halp.train import lr_at, pretrain

ROOT = Path(__file__).resolve().parents[1]
SMOKE = "builtin:smoke"


@pytest.fixture(scope="module")
def ntu_data(synth_ntu_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ntu60")
    prepare.prepare_ntu("ntu60", [synth_ntu_raw], out)
    return out / "xsub"


def smoke_config(data: Path, *overrides: str) -> PretrainConfig:
    return load_config(PretrainConfig, SMOKE, [f"data.root={data}", *overrides])


def test_schedules() -> None:
    c = PretrainConfig()
    assert [lr_at(c.optim, e) for e in (0, 350, 351, 450)] == pytest.approx(
        [0.01, 0.01, 0.001, 0.001]
    )
    mu_at = lambda method, epoch: term_weights(  # noqa: E731
        from_dict(PretrainConfig, {"method": method}), epoch
    ).get("halp", 0.0)
    assert (mu_at("halp", 199), mu_at("halp", 200)) == (0.0, 1.0)
    assert mu_at("baseline", 300) == 0.0


@pytest.mark.parametrize("method", sorted(PRESETS))
def test_every_preset_trains_and_checkpoints(ntu_data: Path, tmp_path: Path, method: str) -> None:
    config = smoke_config(ntu_data, f"method={method}", "optim.epochs=2", "log.knn_every=2")
    row = pretrain(config, tmp_path / "run")
    spec = PRESETS[method]
    assert {f"loss_cl_{m}" for m in spec.modalities} <= set(row)
    assert ("loss_cmd" in row) == spec.cmd
    assert ("loss_halp_joint" in row) == spec.halp  # mu_start_epoch = 1 in the smoke config
    if spec.halp:
        assert 0.0 <= row["halp_keep_joint"] <= 1.0 and 0.0 < row["halp_t_star_joint"] <= 1.0
    assert 0.0 <= row["knn_top1"] <= 100.0
    payload = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert payload["epoch"] == 2 and payload["config"] == to_dict(config)
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["epoch"] for r in rows] == [0, 1]
    assert (tmp_path / "run" / "metrics.csv").read_text().startswith("epoch,")


def _state(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


@pytest.mark.parametrize("method", ["halp", "halp_cmd"])
def test_resume_is_bit_identical(ntu_data: Path, tmp_path: Path, method: str) -> None:
    straight = smoke_config(ntu_data, f"method={method}", "optim.epochs=2", "log.knn_every=0")
    pretrain(straight, tmp_path / "straight")
    first = smoke_config(ntu_data, f"method={method}", "optim.epochs=1", "log.knn_every=0")
    pretrain(first, tmp_path / "split")
    pretrain(straight, tmp_path / "split", resume=True)
    a, b = (
        _state(tmp_path / "straight" / "checkpoint.pt"),
        _state(tmp_path / "split" / "checkpoint.pt"),
    )
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert _rows(tmp_path / "split") == _rows(tmp_path / "straight")


def _rows(run: Path) -> list[dict[str, float]]:
    """Logged metrics without the wall time."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def test_resume_refuses_another_config_and_foreign_files(ntu_data: Path, tmp_path: Path) -> None:
    config = smoke_config(ntu_data, "optim.epochs=1", "log.knn_every=0")
    pretrain(config, tmp_path / "run")
    with pytest.raises(CheckpointError, match="exists: pass --resume"):
        pretrain(config, tmp_path / "run")
    other = smoke_config(ntu_data, "optim.epochs=2", "halp.lam=0.5", "log.knn_every=0")
    with pytest.raises(CheckpointError, match=r"differs from the checkpoint's in halp\.lam"):
        pretrain(other, tmp_path / "run", resume=True)
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a halp pretraining checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a loadable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    ntu_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = smoke_config(ntu_data, "optim.epochs=1", "log.knn_every=0")
    pretrain(config, tmp_path / "run")
    good = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    original = PretrainModel.forward

    def poisoned(self: PretrainModel, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        out = original(self, *args, **kwargs)
        out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(PretrainModel, "forward", poisoned)
    longer = smoke_config(ntu_data, "optim.epochs=2", "log.knn_every=0")
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 1, step 0.*is kept"):
        pretrain(longer, tmp_path / "run", resume=True)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == good


def test_too_few_samples_for_a_batch(ntu_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="less than one batch"):
        pretrain(smoke_config(ntu_data, "optim.batch_size=512"), tmp_path / "run")


# --------------------------------------------------------------------- DDP on CPU


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(
    rank: int, world: int, port: int, data: str, run: str, epochs: int = 2, resume: bool = False
) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    config = load_config(
        PretrainConfig,
        SMOKE,
        [f"data.root={data}", f"optim.epochs={epochs}", "log.knn_every=0", "method=halp"],
    )
    import halp.train as train

    captured = {}
    original = PretrainModel.prepare_step

    def prepare(
        self: PretrainModel, epoch: int, step: int, generator: torch.Generator | None
    ) -> None:
        original(self, epoch, step, generator)
        captured["model"] = self
        captured["generator"] = generator

    PretrainModel.prepare_step = prepare  # type: ignore[method-assign]
    train.pretrain(config, Path(run), resume=resume)
    model = captured["model"]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["_halp_generator"] = captured["generator"].get_state()
    torch.save(state, Path(run) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_ddp_two_processes_agree(ntu_data: Path, tmp_path: Path) -> None:
    mp.start_processes(
        _ddp_worker,
        args=(2, _free_port(), str(ntu_data), str(tmp_path)),
        nprocs=2,
        join=True,
        start_method="spawn",
    )
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    # parameters, queues, pointers and prototypes agree; BatchNorm running statistics are
    # per process on CPU (SyncBatchNorm is used on CUDA only), so they are not compared
    compared = [k for k in a if "running_" not in k and not k.startswith("_")]
    assert len(compared) > 20
    for key in compared:
        assert torch.equal(a[key], b[key]), key
    # 29 training samples, 2 ranks x 4 per step, drop_last: 3 steps of 8 keys per epoch
    assert int(a["branches.joint.queue.seen"]) == 2 * 3 * 8
    assert bool(a["objectives.halp.prototypes.joint.ready"])
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 2
    assert not torch.equal(a["_halp_generator"], b["_halp_generator"])  # own streams per rank


def _ddp(data: Path, run: Path, epochs: int, resume: bool = False) -> None:
    mp.start_processes(
        _ddp_worker,
        args=(2, _free_port(), str(data), str(run), epochs, resume),
        nprocs=2,
        join=True,
        start_method="spawn",
    )


def test_ddp_resume_is_bit_identical_on_every_rank(ntu_data: Path, tmp_path: Path) -> None:
    """2 epochs straight == 1 epoch + resume + 1 epoch, on both processes.

    HaLP switches on in epoch 1 (smoke config), so the resumed epoch draws P_sel and t_c
    from each process's restored generator; restoring process 0's streams everywhere
    would make the processes draw the same positives and change the result.
    """
    _ddp(ntu_data, tmp_path / "straight", epochs=2)
    _ddp(ntu_data, tmp_path / "resumed", epochs=1)
    _ddp(ntu_data, tmp_path / "resumed", epochs=2, resume=True)
    per_rank = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["rng"]["per_rank"]
    assert len(per_rank) == 2 and not torch.equal(per_rank[0]["halp"], per_rank[1]["halp"])
    for rank in (0, 1):
        a = torch.load(tmp_path / "straight" / f"rank{rank}.pt", weights_only=True)
        b = torch.load(tmp_path / "resumed" / f"rank{rank}.pt", weights_only=True)
        # process 1's BatchNorm running statistics are its own on CPU and not checkpointed
        # (they never enter training: BatchNorm uses batch statistics in train mode)
        keys = [k for k in a if rank == 0 or "running_" not in k]
        assert len(keys) > 20
        different = [k for k in keys if not torch.equal(a[k], b[k])]
        assert not different, (rank, different)


def test_halp_before_mu_start_is_exactly_the_baseline(ntu_data: Path, tmp_path: Path) -> None:
    """mu = 0 epochs train plain MoCo: the paper's schedule = baseline, then HaLP on top."""
    base = smoke_config(ntu_data, "method=baseline", "optim.epochs=2", "log.knn_every=0")
    halp = smoke_config(
        ntu_data, "method=halp", "optim.epochs=2", "log.knn_every=0", "halp.mu_start_epoch=5"
    )
    pretrain(base, tmp_path / "base")
    pretrain(halp, tmp_path / "halp")
    a, b = _state(tmp_path / "base" / "checkpoint.pt"), _state(tmp_path / "halp" / "checkpoint.pt")
    shared = list(a)  # the baseline has no HaLP state; everything it has must agree
    assert shared and all(torch.equal(a[k], b[k]) for k in shared)
    assert int(b["objectives.halp.keys_seen"]) == 0


def test_warmup_counts_keys_after_mu_switches_on(ntu_data: Path, tmp_path: Path) -> None:
    """The reference's 2L+1 warm-up: no positives until that many keys after mu > 0."""
    config = smoke_config(ntu_data, "optim.epochs=3", "log.knn_every=0", "halp.warmup_samples=30")
    pretrain(config, tmp_path / "run")
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    # epoch 0: mu = 0; epoch 1: 24 keys seen, below 30, no L_HaLP yet; epoch 2: active
    assert "loss_halp_joint" not in rows[0] and "loss_halp_joint" not in rows[1]
    assert "loss_halp_joint" in rows[2]


def test_the_smoke_workflow_uses_the_shipped_smoke_config() -> None:
    """One copy of the tiny configuration: the package's, used by the workflow too."""
    import yaml

    from halp.smoke import SMOKE_CONFIG

    workflow = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    assert workflow["pretrain"]["config"] == SMOKE_CONFIG == SMOKE
    assert load_config(PretrainConfig, SMOKE).encoder.hidden_size == 16  # the tiny encoder


@pytest.mark.parametrize("path", sorted((ROOT / "config" / "pretrain").glob("*.yaml")))
def test_shipped_configs_load_and_run_a_step(path: Path, ntu_data: Path, tmp_path: Path) -> None:
    """Every shipped config is valid and trains (shrunk to the smoke sizes)."""
    full = load_config(PretrainConfig, path)
    assert full.optim.epochs > 100  # a real configuration, not a toy
    merged = load_config(
        PretrainConfig,
        SMOKE,
        [
            f"{key}={value}"
            for key, value in _flat(yaml_of(path)).items()
            if key.split(".")[0] in ("halp", "encoder")
            and not key.startswith(("halp.warmup", "halp.mu_start"))
        ]
        + [f"data.root={ntu_data}", "optim.epochs=2", "log.knn_every=0"],
    )
    row = pretrain(merged, tmp_path / "run")
    assert "loss_halp_joint" in row


def yaml_of(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def _flat(data: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_wandb_offline_writes_a_local_run(ntu_data: Path, tmp_path: Path) -> None:
    """The default logger (offline: no network, no account) records into the run folder."""
    pytest.importorskip("wandb")
    config = smoke_config(ntu_data, "optim.epochs=1", "log.knn_every=0", "log.wandb=offline")
    pretrain(config, tmp_path / "run")
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert (tmp_path / "run" / "wandb_id.txt").read_text().startswith("run-")
