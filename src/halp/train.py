"""Self-supervised pretraining: the loop, checkpoints, resume, logging, multi-GPU.

``pretrain(config, run_dir)`` trains the method preset named by ``config.method`` on
the prepared benchmark ``config.data.root``. Every epoch it writes ``checkpoint.pt``
atomically (model, optimiser, random states and the resolved config) and appends a
row of metrics to ``metrics.jsonl`` / ``metrics.csv``; ``resume=True`` continues from
the checkpoint bit-identically on the CPU. Under ``torchrun`` it trains with
DistributedDataParallel: keys are gathered from every process before they enter the
queue, and the prototypes of process 0 are broadcast, so all processes agree.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from halp import __version__
from halp.config import HalpConfig, OptimConfig, PretrainConfig, from_dict, to_dict
from halp.dataset import ClassificationDataset, PretrainDataset, make_loader
from halp.errors import TrainingDiverged
from halp.knn import extract_features, knn_accuracy
from halp.methods import MethodSpec, PretrainModel
from halp.storage import atomic_write_text, load_split

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
FINAL = "final.pt"  # the last epoch's checkpoint, written only when training completes
CHECKPOINT_FORMAT = "halp-pretrain/1"
# keys that may change between a run and its resumption
RESUMABLE_CHANGES = ("optim.epochs", "log.", "data.workers", "data.root", "device")


class CheckpointError(ValueError):
    """A checkpoint is missing, not ours, or does not match the configuration."""


# ---------------------------------------------------------------------- schedules


def lr_at(optim: OptimConfig, epoch: int) -> float:
    """Step schedule: ``lr * gamma^(number of steps <= epoch)`` (epochs count from 0)."""
    return optim.lr * optim.lr_gamma ** sum(epoch >= s for s in optim.lr_steps)


def mu_at(halp: HalpConfig, spec: MethodSpec, epoch: int) -> float:
    """The weight of L_HaLP: 0 before ``mu_start_epoch`` (paper: 200), ``mu`` after."""
    return halp.mu if spec.halp and epoch >= halp.mu_start_epoch else 0.0


# ---------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class Process:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def setup_process(device_name: str) -> tuple[Process, torch.device]:
    """Join the process group when started by ``torchrun`` (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Process(), resolve_device(device_name)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return Process(rank, world, local), device


# ---------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` through a temporary file and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load one of our checkpoints with ``weights_only=True``; clear errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds here
        raise CheckpointError(f"{path}: not a loadable checkpoint ({err})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a halp pretraining checkpoint (format {CHECKPOINT_FORMAT!r} expected)"
        )
    return payload


def config_of(payload: dict[str, Any]) -> PretrainConfig:
    """The resolved configuration stored in a checkpoint."""
    return from_dict(PretrainConfig, payload["config"])


def _config_changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}")
    return changed


# ---------------------------------------------------------------------- metrics


class MetricsLog:
    """Per-epoch rows in ``metrics.jsonl`` and ``metrics.csv``, rewritten atomically."""

    def __init__(self, run_dir: Path, keep_before: int | None = None) -> None:
        self.jsonl = run_dir / "metrics.jsonl"
        self.csv = run_dir / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        if keep_before is not None and self.jsonl.exists():
            for line in self.jsonl.read_text().splitlines():
                row = json.loads(line)
                if row["epoch"] < keep_before:
                    self.rows.append(row)

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        atomic_write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in self.rows))
        columns: list[str] = []
        for r in self.rows:
            columns += [k for k in r if k not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.csv, buffer.getvalue())


def _wandb(config: PretrainConfig, run_dir: Path) -> Any:
    if config.log.wandb == "disabled":
        return None
    try:
        import wandb
    except ImportError:
        log.warning("wandb is not installed; metrics go to metrics.csv only")
        return None
    id_file = run_dir / "wandb_id.txt"  # one wandb run per run folder, across resumes
    if not id_file.exists():
        atomic_write_text(id_file, f"{run_dir.name}-{os.urandom(4).hex()}")
    return wandb.init(
        project=config.log.wandb_project,
        dir=str(run_dir),
        mode=config.log.wandb,
        name=run_dir.name,
        id=id_file.read_text().strip(),
        resume="allow",
        config=to_dict(config),
    )


# ---------------------------------------------------------------------- the loop


def _knn(
    model: PretrainModel, train: Any, test: Any, config: PretrainConfig, device: torch.device
) -> float:
    modality = model.modalities[0]
    encoder = model.query_encoder(modality)
    kwargs = {"modality": modality, "train": False, "out_frames": config.data.frames}
    gallery = ClassificationDataset(train, **kwargs, seed=config.seed)
    queries = ClassificationDataset(test, **kwargs, seed=config.seed)
    g, gl = extract_features(encoder, gallery, device=device)
    f, fl = extract_features(encoder, queries, device=device)
    return knn_accuracy(g, gl, f, fl, k=1)


def pretrain(config: PretrainConfig, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """Train ``config.method`` and return the last epoch's metrics."""
    run_dir = Path(run_dir)
    proc, device = setup_process(config.device)
    if config.optim.batch_size % proc.world_size:
        raise ValueError(
            f"config key 'optim.batch_size': {config.optim.batch_size} is not divisible by "
            f"the {proc.world_size} processes"
        )
    torch.manual_seed(config.seed)
    model = PretrainModel(config).to(device)
    spec = model.spec
    train_split = load_split(Path(config.data.root), "train")
    test_split = load_split(Path(config.data.root), "test") if config.log.knn_every else None
    dataset = PretrainDataset(
        train_split,
        modality=list(spec.modalities),
        augmentation=config.data.augmentation,
        scale=config.data.scale,
        out_frames=config.data.frames,
        seed=config.seed,
    )
    per_rank = config.optim.batch_size // proc.world_size
    if len(dataset) // config.optim.batch_size == 0:
        raise ValueError(
            f"{config.data.root}: {len(dataset)} training samples is less than one batch of "
            f"{config.optim.batch_size} (config key 'optim.batch_size')"
        )
    params = [p for p in model.parameters() if p.requires_grad]
    o = config.optim
    optimizer = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    generator = torch.Generator(device=device).manual_seed(config.seed + 7919 * proc.rank)
    start_epoch = 0
    ckpt_path = run_dir / CHECKPOINT
    if resume:
        payload = load_checkpoint(ckpt_path)
        changes = [
            k
            for k in _config_changes(payload["config"], to_dict(config))
            if not k.startswith(RESUMABLE_CHANGES)
        ]
        if changes:
            raise CheckpointError(
                f"{ckpt_path}: the configuration differs from the checkpoint's in "
                f"{', '.join(changes)}; resume with the same configuration or start a new run"
            )
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        torch.set_rng_state(payload["rng"]["torch"])
        generator.set_state(payload["rng"]["halp"])
        start_epoch = int(payload["epoch"])
        log.info("resuming %s from epoch %d", run_dir, start_epoch)
    elif ckpt_path.exists():
        raise CheckpointError(
            f"{ckpt_path} exists: pass --resume to continue that run, or choose another --run"
        )
    (run_dir / FINAL).unlink(missing_ok=True)  # until this run completes
    run_dir.mkdir(parents=True, exist_ok=True)
    net: torch.nn.Module = model
    if proc.world_size > 1:
        if device.type == "cuda":  # BatchNorm over the whole batch, as on one GPU
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    metrics = MetricsLog(run_dir, keep_before=start_epoch) if proc.is_main else None
    wandb_run = _wandb(config, run_dir) if proc.is_main else None
    row: dict[str, Any] = {}
    step_counter = start_epoch * (len(dataset) // config.optim.batch_size)
    for epoch in range(start_epoch, config.optim.epochs):
        started = time.perf_counter()
        lr, mu = lr_at(o, epoch), mu_at(config.halp, spec, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if proc.world_size > 1:
            sampler = DistributedSampler(
                dataset,
                proc.world_size,
                proc.rank,
                shuffle=True,
                seed=config.seed,
                drop_last=True,
            )
            sampler.set_epoch(epoch)
            dataset.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_size=per_rank,
                sampler=sampler,
                drop_last=True,
                num_workers=config.data.workers,
            )
        else:
            loader = make_loader(
                dataset,
                per_rank,
                shuffle=True,
                seed=config.seed,
                epoch=epoch,
                drop_last=True,
                num_workers=config.data.workers,
                pin_memory=device.type == "cuda",
            )
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        net.train()
        bar = tqdm(
            loader,
            desc=f"epoch {epoch}",
            leave=False,
            disable=not (config.log.progress and proc.is_main),
        )
        for step, (views_q, views_k, _) in enumerate(bar):
            views_q = {m: v.to(device, non_blocking=True) for m, v in views_q.items()}
            views_k = {m: v.to(device, non_blocking=True) for m, v in views_k.items()}
            if mu > 0:
                ready = all(bool(b.prototypes_ready) for b in model.branches.values())
                if step_counter % config.halp.refresh_every == 0 or not ready:
                    model.refresh_prototypes(generator)
            out = net(views_q, views_k, mu, generator)
            if not torch.isfinite(out.loss):
                kept = (
                    f"the last good checkpoint {ckpt_path} is kept"
                    if ckpt_path.exists()
                    else "no checkpoint was written yet"
                )
                raise TrainingDiverged(
                    f"loss is {float(out.loss.detach())} at epoch {epoch}, step {step} "
                    f"({', '.join(f'{k}={v:.4g}' for k, v in out.terms.items())}); {kept}. "
                    "Lower optim.lr or check the data."
                )
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            step_counter += 1
            for key, value in out.terms.items():
                sums[key] = sums.get(key, 0.0) + value
                counts[key] = counts.get(key, 0) + 1
            bar.set_postfix(loss=f"{out.terms['loss']:.3f}")
        row = {"epoch": epoch, "lr": lr, "mu": mu}
        row.update({k: sums[k] / counts[k] for k in sorted(sums)})
        last = epoch + 1 == config.optim.epochs
        if (
            proc.is_main
            and test_split is not None
            and (last or (epoch + 1) % config.log.knn_every == 0)
        ):
            row["knn_top1"] = _knn(model, train_split, test_split, config, device)
        row["seconds"] = round(time.perf_counter() - started, 3)
        if proc.is_main:
            payload = {
                "format": CHECKPOINT_FORMAT,
                "halp_version": __version__,
                "method": config.method,
                "config": to_dict(config),
                "data": {
                    "dataset": train_split.index.dataset,
                    "benchmark": train_split.index.benchmark,
                    "train_samples": len(train_split),
                },
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "halp": generator.get_state()},
                "metrics": {k: v for k, v in row.items() if isinstance(v, int | float)},
            }
            # metrics first: a kill in between leaves a row that a resume recomputes, never
            # a checkpointed epoch without its row
            assert metrics is not None
            metrics.append(row)
            save_checkpoint(ckpt_path, payload)
            if config.log.save_every and ((epoch + 1) % config.log.save_every == 0 or last):
                save_checkpoint(run_dir / f"checkpoint_{epoch + 1:04d}.pt", payload)
            if wandb_run is not None:
                wandb_run.log(row, step=epoch)
            log.info(
                "epoch %d: %s",
                epoch,
                ", ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) and math.isfinite(v) else f"{k}={v}"
                    for k, v in row.items()
                ),
            )
    if proc.is_main:
        _publish_final(run_dir)
    if wandb_run is not None:
        wandb_run.finish()
    return row


def _publish_final(run_dir: Path) -> None:
    """Expose the finished run as ``final.pt`` (a hard link, or a copy across devices)."""
    tmp = run_dir / f".{FINAL}.partial"
    tmp.unlink(missing_ok=True)
    try:
        os.link(run_dir / CHECKPOINT, tmp)
    except OSError:
        import shutil

        shutil.copyfile(run_dir / CHECKPOINT, tmp)
    os.utime(tmp)  # the run completed now (a link would keep the checkpoint's time)
    os.replace(tmp, run_dir / FINAL)
