"""Self-supervised pretraining: the loop in named stages, for every skeleton method.

``pretrain(config, run_dir)`` trains the method preset named by ``config.method`` on
the prepared benchmark ``config.data.root``, in the stages of MoCo's ``main_worker``:
:func:`setup` (process, model, data, optimiser, the method's own checks),
:func:`resume_or_start` (:func:`halp.methods.checkpoint.resume_run`), an
:class:`EpochLoader` whose workers persist for the run (one process or
DistributedDataParallel), :func:`train_one_epoch` and :func:`end_of_epoch` (kNN monitor,
representation health, checkpoint, metrics, log). Every epoch writes ``checkpoint.pt``
atomically (model, optimiser, random states, resolved config, git commit) and appends a
row to ``metrics.jsonl`` / ``metrics.csv``; ``resume=True`` continues bit-identically on
the CPU. Under ``torchrun``, keys are gathered from every process before they enter the
queue and the prototypes of process 0 are broadcast, so all processes agree.

The loop knows no method: what a method adds lives in its preset, its objectives and
its view transforms (:mod:`halp.methods`, :mod:`halp.objectives`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from halp.config import OptimConfig, PretrainConfig, to_dict
from halp.data.loaders import PretrainDataset, make_epoch_loader
from halp.data.storage import SkeletonSplit, check_layout, check_recipe, eval_keep, load_split
from halp.errors import CheckpointError, ConfigError
from halp.eval.knn import knn_top1
from halp.io import atomic_write_text
from halp.methods.checkpoint import (
    CHECKPOINT,
    FINAL,
    checkpoint_payload,
    publish_final,
    resume_run,
    rng_states,
    save_checkpoint,
)
from halp.methods.model import PretrainModel
from halp.runtime import Process, git_commit, setup_process
from halp.schedules import step_lr
from halp.train.monitor import HealthProbe, MetricsLog, StepLog, check_finite_state

log = logging.getLogger(__name__)


def lr_at(optim: OptimConfig, epoch: int) -> float:
    """The pretraining learning rate of ``epoch`` (paper: 0.01, x0.1 at epoch 351)."""
    return step_lr(optim.lr, optim.lr_gamma, optim.lr_steps, epoch)


@dataclass
class Run:
    """What the stages of one pretraining run share."""

    config: PretrainConfig
    run_dir: Path
    proc: Process
    device: torch.device
    model: PretrainModel
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    dataset: PretrainDataset
    train_split: SkeletonSplit
    test_split: SkeletonSplit | None
    net: torch.nn.Module | None = None
    start_epoch: int = 0
    step: int = 0
    metrics: MetricsLog | None = None
    probe: HealthProbe | None = None
    wandb: Any = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def ckpt_path(self) -> Path:
        """The run's latest checkpoint."""
        return self.run_dir / CHECKPOINT

    @property
    def data_info(self) -> dict[str, Any]:
        """The training data, as the checkpoint records it."""
        index = self.train_split.index
        return {
            "dataset": index.dataset,
            "benchmark": index.benchmark,
            "train_samples": len(self.train_split),
        }

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps per epoch (the last partial batch is dropped)."""
        return len(self.dataset) // self.config.optim.batch_size


def pretrain(config: PretrainConfig, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """Train ``config.method`` and return the last epoch's metrics."""
    run = setup(config, Path(run_dir))
    resume_or_start(run, resume)
    loader = EpochLoader(run)
    row: dict[str, Any] = {}
    for epoch in range(run.start_epoch, config.optim.epochs):
        steps = train_one_epoch(run, loader.epoch(epoch), epoch)
        row = end_of_epoch(run, epoch, steps)
    if run.proc.is_main:
        publish_final(run.run_dir)
    if run.wandb is not None:
        run.wandb.finish()
    return row


def setup(config: PretrainConfig, run_dir: Path) -> Run:
    """Process and device, the model, the data, the optimiser; the method's checks."""
    proc, device = setup_process(config.device)
    if device.type == "cuda":  # fp32 means fp32 unless optim.tf32 says otherwise
        torch.backends.cuda.matmul.allow_tf32 = config.optim.tf32
        torch.backends.cudnn.allow_tf32 = config.optim.tf32
    o = config.optim
    if o.batch_size % proc.world_size:
        raise ConfigError(
            f"config key 'optim.batch_size': {o.batch_size} is not divisible by "
            f"the {proc.world_size} processes"
        )
    torch.manual_seed(config.seed)
    model = PretrainModel(config).to(device)
    for warning in model.checks():
        log.warning("%s", warning)
    root = Path(config.data.root)
    check_recipe(root, config.data.recipe, "data.recipe")
    check_layout(root, config.data.layout, "data.layout")
    train_split = load_split(root, "train")
    test_split = load_split(root, "test") if config.log.knn_every else None
    dataset = PretrainDataset(
        train_split,
        modality=list(model.modalities),
        augmentation=config.data.augmentation,
        scale=config.data.scale,
        out_frames=config.data.frames,
        seed=config.seed,
        views={v.name: v.augmentation for v in model.views},
    )
    if len(dataset) // o.batch_size == 0:
        raise ConfigError(
            f"{config.data.root}: {len(dataset)} training samples is less than one batch of "
            f"{o.batch_size} (config key 'optim.batch_size')"
        )
    if o.batch_size > config.moco.queue_size:
        raise ConfigError(
            f"config key 'optim.batch_size': {o.batch_size} is more than "
            f"moco.queue_size ({config.moco.queue_size}); every step's keys enter the queue"
        )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    generator = torch.Generator(device=device).manual_seed(config.seed + 7919 * proc.rank)
    return Run(
        config, run_dir, proc, device, model, optimizer, generator, dataset, train_split, test_split
    )


def resume_or_start(run: Run, resume: bool) -> None:
    """Continue from the checkpoint (``resume``) or start afresh; then open the logs."""
    if resume:
        run.start_epoch = resume_run(
            run.ckpt_path,
            run.config,
            run.model,
            run.optimizer,
            run.data_info,
            run.proc,
            run.generator,
        )
        log.info("resuming %s from epoch %d", run.run_dir, run.start_epoch)
    elif run.ckpt_path.exists():
        raise CheckpointError(
            f"{run.ckpt_path} exists: pass --resume to continue that run, or choose another --run"
        )
    (run.run_dir / FINAL).unlink(missing_ok=True)  # until this run completes
    run.run_dir.mkdir(parents=True, exist_ok=True)
    run.step = run.start_epoch * run.steps_per_epoch
    run.net = run.model
    if run.proc.world_size > 1:
        model: torch.nn.Module = run.model
        if run.device.type == "cuda":  # BatchNorm over the whole batch, as on one GPU
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        device_ids = [run.device.index] if run.device.type == "cuda" else None
        run.net = DistributedDataParallel(model, device_ids=device_ids)
    run.provenance = git_commit()
    if not run.proc.is_main:
        return
    config = run.config
    run.metrics = MetricsLog(run.run_dir, keep_before=run.start_epoch)
    if config.log.health_samples:
        run.probe = HealthProbe(run.dataset, config.log.health_samples, config.seed)
        run.probe.remember(run.metrics.rows)
    run.wandb = _wandb(config, run.run_dir)


class EpochLoader:
    """One DataLoader for the whole run, its workers kept; also under DDP.

    Each process loads its shard of the epoch (``EpochSampler`` with the process's rank,
    the order of PyTorch's DistributedSampler); items carry their epoch into the workers.
    """

    def __init__(self, run: Run) -> None:
        config, proc = run.config, run.proc
        self.loader, self.sampler = make_epoch_loader(
            run.dataset,
            config.optim.batch_size // proc.world_size,
            shuffle=True,
            seed=config.seed,
            drop_last=True,
            num_workers=config.data.workers,
            pin_memory=run.device.type == "cuda",
            rank=proc.rank,
            world_size=proc.world_size,
        )

    def epoch(self, epoch: int) -> torch.utils.data.DataLoader:
        """The loader, set to yield ``epoch``'s batches."""
        self.sampler.set_epoch(epoch)
        return self.loader


def _to(views: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A batch's modality -> clips, on ``device`` (asynchronously from pinned memory)."""
    return {m: v.to(device, non_blocking=True) for m, v in views.items()}


def train_one_epoch(run: Run, loader: torch.utils.data.DataLoader, epoch: int) -> StepLog:
    """One epoch of optimiser steps at the epoch's learning rate; its summed step terms."""
    config, model, device = run.config, run.model, run.device
    assert run.net is not None
    for group in run.optimizer.param_groups:
        group["lr"] = lr_at(config.optim, epoch)
    steps = StepLog(config.log.sync_every)
    run.net.train()
    show = config.log.progress and run.proc.is_main
    bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not show)
    for step, batch in enumerate(bar):
        views_q, views_k = (_to(batch[i], device) for i in (0, 1))
        extra = {name: _to(v, device) for name, v in batch[3].items()} if model.views else None
        model.prepare_step(epoch, run.step, run.generator)
        out = run.net(views_q, views_k, epoch, run.generator, run.step, extra)
        run.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        run.optimizer.step()
        run.step += 1
        if steps.add(step, out.loss, out.terms):  # every sync_every steps: one read
            steps.check(epoch, run.ckpt_path)
            if show:
                bar.set_postfix(loss=f"{float(out.terms['loss']):.3f}")
    steps.check(epoch, run.ckpt_path)
    return steps


def end_of_epoch(run: Run, epoch: int, steps: StepLog) -> dict[str, Any]:
    """KNN monitor, health, the checkpoint and the metrics row of a finished epoch."""
    config, model, proc = run.config, run.model, run.proc
    row: dict[str, Any] = {"epoch": epoch, "lr": lr_at(config.optim, epoch)}
    row.update(model.logged_weights(epoch))
    row.update(steps.means())
    last = epoch + 1 == config.optim.epochs
    knn_due = last or (config.log.knn_every and (epoch + 1) % config.log.knn_every == 0)
    if proc.is_main and run.test_split is not None and knn_due:
        row["knn_top1"] = _knn(run)
    check_finite_state(model, epoch, run.ckpt_path)
    # epoch 0 and every health_every epochs: the same epochs however a run is resumed
    probe = run.probe
    if probe is not None and (epoch == 0 or (epoch + 1) % config.log.health_every == 0):
        row.update(probe.measure(model, run.device))
        probe.warn_collapse(row, config.log.collapse_cosine, epoch)
    row["seconds"] = round(time.perf_counter() - steps.started, 3)
    rng = rng_states(proc, run.generator)  # a collective: every process takes part
    if not proc.is_main:
        return row
    payload = checkpoint_payload(
        config, model, run.optimizer, epoch + 1, run.data_info, rng, row, run.provenance
    )
    # metrics first: a kill in between leaves a row that a resume recomputes, never a
    # checkpointed epoch without its row
    assert run.metrics is not None
    run.metrics.append(row)
    save_checkpoint(run.ckpt_path, payload)
    if config.log.save_every and ((epoch + 1) % config.log.save_every == 0 or last):
        save_checkpoint(run.run_dir / f"checkpoint_{epoch + 1:04d}.pt", payload)
    if run.wandb is not None:
        run.wandb.log(row, step=epoch)
    log.info("epoch %d: %s", epoch, ", ".join(_shown(k, v) for k, v in row.items()))
    return row


def _shown(key: str, value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{key}={value:.4g}"
    return f"{key}={value}"


def _knn(run: Run) -> float:
    """Top-1 kNN accuracy of the first modality's query encoder (the training monitor)."""
    config = run.config
    modality = run.model.modalities[0]
    encoder = run.model.query_encoder(modality)
    keep = eval_keep(config.data.recipe)
    assert run.test_split is not None
    return knn_top1(
        encoder,
        run.train_split,
        run.test_split,
        modality,
        config.data.frames,
        config.seed,
        1,
        run.device,
        keep,
    )


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
