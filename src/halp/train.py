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
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from halp import __version__
from halp.checkpoint import (
    CHECKPOINT,
    CHECKPOINT_FORMAT,
    FINAL,
    RESUMABLE_CHANGES,
    config_changes,
    load_checkpoint,
    publish_final,
    save_checkpoint,
)
from halp.config import OptimConfig, PretrainConfig, from_dict, to_dict
from halp.data.loaders import EpochSampler, PretrainDataset, make_epoch_loader
from halp.data.storage import check_layout, check_recipe, load_split
from halp.errors import CheckpointError, ConfigError, TrainingDiverged
from halp.eval.health import alignment, mean_cosine, uniformity
from halp.eval.knn import knn_top1
from halp.io import atomic_write_text
from halp.model import PretrainModel
from halp.runtime import Process, setup_process
from halp.schedules import step_lr

log = logging.getLogger(__name__)


def lr_at(optim: OptimConfig, epoch: int) -> float:
    """The pretraining learning rate of ``epoch`` (paper: 0.01, x0.1 at epoch 351)."""
    return step_lr(optim.lr, optim.lr_gamma, optim.lr_steps, epoch)


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
        """Add one epoch's row and rewrite both files atomically."""
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


def _check_same_data(payload: dict[str, Any], split: Any, ckpt_path: Path) -> None:
    """Refuse to resume on another dataset or benchmark than the checkpoint's."""
    saved = payload.get("data") or {}
    here = {"dataset": split.index.dataset, "benchmark": split.index.benchmark}
    there = {k: saved.get(k) for k in here}
    if there != here:
        raise CheckpointError(
            f"{ckpt_path}: the run was trained on {there['dataset']} {there['benchmark']}, but "
            f"data.root holds {here['dataset']} {here['benchmark']}; resume on the same data "
            "or start a new run"
        )


def _future_phase_changes(
    changes: list[str], old: PretrainConfig, new: PretrainConfig, epoch: int
) -> list[str]:
    """Changed ``halp.*`` keys that cannot have acted yet (HaLP starts after ``epoch``)."""
    if epoch >= min(old.halp.mu_start_epoch, new.halp.mu_start_epoch):
        return []
    return [k for k in changes if k.startswith("halp.")]


def _check_finite_state(model: torch.nn.Module, epoch: int, ckpt_path: Path) -> None:
    """Never checkpoint NaN or infinite weights as good: stop, keeping the last checkpoint."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            kept = (
                f"the last good checkpoint {ckpt_path} is kept"
                if ckpt_path.exists()
                else "no checkpoint was written yet"
            )
            raise TrainingDiverged(
                f"{name} holds NaN or infinite values after epoch {epoch}; {kept}. "
                "Lower optim.lr or check the data."
            )


class StepLog:
    """One epoch's step terms, summed on the device and read once per ``sync_every`` steps.

    Reading a CUDA value on the host waits for every queued kernel, so the training step
    reads none: the terms (detached 0-d tensors) are added up where they are, and the
    losses of the last ``sync_every`` steps are checked for NaN or infinity together. A
    non-finite loss therefore stops the run at the next check (the same epoch), naming
    the step where it first appeared; nothing of that epoch is ever checkpointed.
    """

    def __init__(self, sync_every: int) -> None:
        self.sync_every = sync_every
        self.sums: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.window: list[tuple[int, torch.Tensor, dict[str, Any]]] = []

    def add(self, step: int, loss: torch.Tensor, terms: dict[str, Any]) -> bool:
        """Add one step's loss and terms; True when ``sync_every`` steps wait to be checked."""
        for key, value in terms.items():
            value = value.detach().double() if isinstance(value, torch.Tensor) else value
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1
        self.window.append((step, loss.detach(), terms))
        return len(self.window) >= self.sync_every

    def check(self, epoch: int, ckpt_path: Path) -> None:
        """Raise TrainingDiverged if a loss of the window was NaN or infinite."""
        if not self.window:
            return
        losses = torch.stack([loss for _, loss, _ in self.window]).float().cpu()
        finite = torch.isfinite(losses)
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0])
            step, _, terms = self.window[first]
            kept = (
                f"the last good checkpoint {ckpt_path} is kept"
                if ckpt_path.exists()
                else "no checkpoint was written yet"
            )
            values = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
            raise TrainingDiverged(
                f"loss is {float(losses[first])} at epoch {epoch}, step {step} ({values}); "
                f"{kept}. Lower optim.lr or check the data."
            )
        self.window.clear()

    def means(self) -> dict[str, float]:
        """The epoch's mean of every term, as Python floats (one device read each)."""
        return {k: float(self.sums[k]) / self.counts[k] for k in sorted(self.sums)}


def _rng_states(proc: Process, generator: torch.Generator) -> list[dict[str, torch.Tensor]]:
    """Every process's random states (torch's global one and the run's generator)."""
    mine = {"torch": torch.get_rng_state(), "halp": generator.get_state()}
    if proc.world_size == 1:
        return [mine]
    states: list[Any] = [None] * proc.world_size
    dist.all_gather_object(states, mine)
    return states


def _own_rng_state(rng: dict[str, Any], proc: Process) -> dict[str, torch.Tensor] | None:
    """This process's saved random states, or None when the checkpoint has none for it."""
    per_rank = rng.get("per_rank")
    if per_rank is not None and len(per_rank) == proc.world_size:
        return per_rank[proc.rank]
    if proc.world_size > 1:
        log.warning(
            "the checkpoint holds random states for %s process(es) and this run has %d: "
            "process %d %s; the resumption is not bit-identical",
            len(per_rank) if per_rank is not None else "1",
            proc.world_size,
            proc.rank,
            "takes the saved states of process 0" if proc.is_main else "restarts its streams",
        )
    return {"torch": rng["torch"], "halp": rng["halp"]} if proc.is_main else None


def _with_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's configuration with keys added since it was written at their defaults."""
    return to_dict(from_dict(PretrainConfig, saved))


class HealthProbe:
    """Fixed pairs of views of the first training clips, embedded once per epoch.

    The views are drawn once (from their own seed, so training draws nothing less or
    more) and kept; each epoch the query encoders embed them in eval mode without
    gradient, which changes no parameter, statistic or random state. Logs
    ``align_<m>``, ``uniform_<m>`` and ``cos_<m>`` (:mod:`halp.eval.health`) and warns when
    the mean cosine passes ``log.collapse_cosine`` after rising during training.
    """

    def __init__(self, dataset: PretrainDataset, samples: int, seed: int) -> None:
        probe = PretrainDataset(
            dataset.split,
            modality=list(dataset.modalities),
            augmentation=dataset.augmentation,
            scale=dataset.scale,
            out_frames=dataset.out_frames,
            seed=seed + 104729,
        )
        pairs = [probe[i][:2] for i in range(min(samples, len(probe)))]
        self.views: list[dict[str, torch.Tensor]] = [
            {m: torch.stack([pair[v][m] for pair in pairs]) for m in dataset.modalities}
            for v in (0, 1)
        ]
        self.first_cos: dict[str, float] = {}  # at the first measured epoch

    @torch.no_grad()
    def measure(self, model: PretrainModel, device: torch.device) -> dict[str, float]:
        """This epoch's health metrics, per modality."""
        row: dict[str, float] = {}
        for m in model.modalities:
            encoder = model.query_encoder(m)
            was_training = encoder.training
            encoder.eval()
            try:
                a, b = (encoder(v[m].to(device)).float().cpu() for v in self.views)
            finally:
                encoder.train(was_training)
            row[f"align_{m}"] = alignment(a, b)
            row[f"uniform_{m}"] = uniformity(a)
            row[f"cos_{m}"] = mean_cosine(a)
            self.first_cos.setdefault(m, row[f"cos_{m}"])
        return row

    def warn_collapse(self, row: dict[str, Any], threshold: float, epoch: int) -> None:
        """Warn for each modality whose cosine is above ``threshold`` and rose since the start.

        A freshly initialised small encoder can already map clips close together; only a
        cosine that training pushed up is reported.
        """
        for m, first in self.first_cos.items():
            value = row.get(f"cos_{m}")
            if value is not None and value > threshold and value > first + 0.05:
                log.warning(
                    "epoch %d: the %s embedding may be collapsing: the mean pairwise cosine of "
                    "the probe clips rose from %.3f to %.3f (> log.collapse_cosine %.2f; "
                    "healthy runs stay near 0). If a HaLP term is on, try a smaller halp.mu "
                    "(README, 'Representation health').",
                    epoch,
                    m,
                    first,
                    value,
                    threshold,
                )


def _knn(
    model: PretrainModel, train: Any, test: Any, config: PretrainConfig, device: torch.device
) -> float:
    modality = model.modalities[0]
    encoder = model.query_encoder(modality)
    keep = 1.0 if config.data.recipe == "crossclr" else 0.95  # crossclr clips are whole
    return knn_top1(
        encoder, train, test, modality, config.data.frames, config.seed, 1, device, keep
    )


def _to(views: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A batch's modality -> clips, on ``device`` (asynchronously from pinned memory)."""
    return {m: v.to(device, non_blocking=True) for m, v in views.items()}


def pretrain(config: PretrainConfig, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """Train ``config.method`` and return the last epoch's metrics."""
    run_dir = Path(run_dir)
    proc, device = setup_process(config.device)
    if device.type == "cuda":  # fp32 means fp32 unless optim.tf32 says otherwise
        torch.backends.cuda.matmul.allow_tf32 = config.optim.tf32
        torch.backends.cudnn.allow_tf32 = config.optim.tf32
    if config.optim.batch_size % proc.world_size:
        raise ConfigError(
            f"config key 'optim.batch_size': {config.optim.batch_size} is not divisible by "
            f"the {proc.world_size} processes"
        )
    torch.manual_seed(config.seed)
    model = PretrainModel(config).to(device)
    check_recipe(Path(config.data.root), config.data.recipe, "data.recipe")
    check_layout(Path(config.data.root), config.data.layout, "data.layout")
    train_split = load_split(Path(config.data.root), "train")
    test_split = load_split(Path(config.data.root), "test") if config.log.knn_every else None
    dataset = PretrainDataset(
        train_split,
        modality=list(model.modalities),
        augmentation=config.data.augmentation,
        scale=config.data.scale,
        out_frames=config.data.frames,
        seed=config.seed,
        views={v.name: v.augmentation for v in model.views},
    )
    per_rank = config.optim.batch_size // proc.world_size
    if len(dataset) // config.optim.batch_size == 0:
        raise ConfigError(
            f"{config.data.root}: {len(dataset)} training samples is less than one batch of "
            f"{config.optim.batch_size} (config key 'optim.batch_size')"
        )
    if config.optim.batch_size > config.moco.queue_size:
        raise ConfigError(
            f"config key 'optim.batch_size': {config.optim.batch_size} is more than "
            f"moco.queue_size ({config.moco.queue_size}); every step's keys enter the queue"
        )
    preset = model.preset
    if preset.basic_augmentation and config.data.augmentation != preset.basic_augmentation:
        log.warning(
            "%s's query and key use data.augmentation %r; the released basic set is %r "
            "(set data.augmentation to it unless this is meant)",
            config.method,
            config.data.augmentation,
            preset.basic_augmentation,
        )
    if preset.uses("nnm") and config.mining.start_epoch >= config.optim.epochs:
        log.warning(
            "mining.start_epoch %d is not below optim.epochs %d: nearest-neighbour mining "
            "never starts in this run",
            config.mining.start_epoch,
            config.optim.epochs,
        )
    for term, weight in model.weights.items():
        if weight.value != 0 and weight.start_epoch >= config.optim.epochs:
            log.warning(
                "the %s term starts at epoch %d but the run has %d epochs: it never switches "
                "on, so this run trains the method without it (raise optim.epochs or lower "
                "its start epoch)",
                term,
                weight.start_epoch,
                config.optim.epochs,
            )
    params = [p for p in model.parameters() if p.requires_grad]
    o = config.optim
    optimizer = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    generator = torch.Generator(device=device).manual_seed(config.seed + 7919 * proc.rank)
    start_epoch = 0
    ckpt_path = run_dir / CHECKPOINT
    if resume:
        payload = load_checkpoint(ckpt_path)
        _check_same_data(payload, train_split, ckpt_path)
        changes = [
            k
            for k in config_changes(_with_defaults(payload["config"]), to_dict(config))
            if not k.startswith(RESUMABLE_CHANGES)
        ]
        old = from_dict(PretrainConfig, payload["config"])
        later = _future_phase_changes(changes, old, config, int(payload["epoch"]))
        if later:
            log.warning(
                "resuming %s with changed %s: accepted, since HaLP (from epoch %d) has not "
                "started by epoch %d",
                run_dir,
                ", ".join(later),
                config.halp.mu_start_epoch,
                int(payload["epoch"]),
            )
        changes = [k for k in changes if k not in later]
        if changes:
            raise CheckpointError(
                f"{ckpt_path}: the configuration differs from the checkpoint's in "
                f"{', '.join(changes)}; resume with the same configuration or start a new run"
            )
        state = payload["model"]
        if "halp.num_prototypes" in later:  # never refreshed before HaLP starts: re-made
            state = {k: v for k, v in state.items() if ".prototypes." not in k}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(".prototypes." not in k for k in missing):
            raise CheckpointError(
                f"{ckpt_path}: the model state does not fit this configuration (missing "
                f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
            )
        optimizer.load_state_dict(payload["optimizer"])
        mine = _own_rng_state(payload["rng"], proc)
        if mine is not None:
            torch.set_rng_state(mine["torch"])
            generator.set_state(mine["halp"])
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
    probe = (
        HealthProbe(dataset, config.log.health_samples, config.seed)
        if proc.is_main and config.log.health_samples
        else None
    )
    wandb_run = _wandb(config, run_dir) if proc.is_main else None
    row: dict[str, Any] = {}
    step_counter = start_epoch * (len(dataset) // config.optim.batch_size)
    run_loader: tuple[torch.utils.data.DataLoader, EpochSampler] | None = None
    for epoch in range(start_epoch, config.optim.epochs):
        started = time.perf_counter()
        lr = lr_at(o, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if proc.world_size > 1:
            sampler: DistributedSampler = DistributedSampler(
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
        else:  # one loader for the run: its workers persist, the sampler brings the epoch
            if run_loader is None:
                run_loader = make_epoch_loader(
                    dataset,
                    per_rank,
                    shuffle=True,
                    seed=config.seed,
                    drop_last=True,
                    num_workers=config.data.workers,
                    pin_memory=device.type == "cuda",
                )
            loader, epoch_sampler = run_loader
            epoch_sampler.set_epoch(epoch)
        steps = StepLog(config.log.sync_every)
        net.train()
        bar = tqdm(
            loader,
            desc=f"epoch {epoch}",
            leave=False,
            disable=not (config.log.progress and proc.is_main),
        )
        for step, batch in enumerate(bar):
            views_q, views_k = (_to(batch[i], device) for i in (0, 1))
            extra = {name: _to(v, device) for name, v in batch[3].items()} if model.views else None
            model.prepare_step(epoch, step_counter, generator)
            out = net(views_q, views_k, epoch, generator, step_counter, extra)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            step_counter += 1
            if steps.add(step, out.loss, out.terms):  # every sync_every steps: one read
                steps.check(epoch, ckpt_path)
                if not bar.disable:
                    bar.set_postfix(loss=f"{float(out.terms['loss']):.3f}")
        steps.check(epoch, ckpt_path)
        row = {"epoch": epoch, "lr": lr, **model.logged_weights(epoch)}
        row.update(steps.means())
        last = epoch + 1 == config.optim.epochs
        if (
            proc.is_main
            and test_split is not None
            and (last or (epoch + 1) % config.log.knn_every == 0)
        ):
            row["knn_top1"] = _knn(model, train_split, test_split, config, device)
        _check_finite_state(model, epoch, ckpt_path)
        # epoch 0 and every health_every epochs: the same epochs however a run is resumed
        if probe is not None and (epoch == 0 or (epoch + 1) % config.log.health_every == 0):
            row.update(probe.measure(model, device))
            probe.warn_collapse(row, config.log.collapse_cosine, epoch)
        row["seconds"] = round(time.perf_counter() - started, 3)
        rng_states = _rng_states(proc, generator)  # a collective: every process takes part
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
                # rank 0's streams at the top (single-process readers), every rank's below
                "rng": {**rng_states[0], "per_rank": rng_states},
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
        publish_final(run_dir)
    if wandb_run is not None:
        wandb_run.finish()
    return row
