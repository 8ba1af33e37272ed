"""What a pretraining run records besides its weights: metrics, step checks, health.

- :class:`MetricsLog`: one row per epoch in ``metrics.jsonl`` and ``metrics.csv``;
- :class:`StepLog`: the step terms summed on the device, read once per
  ``log.sync_every`` steps, with the NaN check;
- :class:`HealthProbe`: alignment, uniformity and the mean pairwise cosine of fixed
  probe clips, and the collapse warning;
- :func:`check_finite_state`: no NaN weights are ever checkpointed as good.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from halp.data.loaders import PretrainDataset
from halp.errors import CheckpointError, TrainingDiverged
from halp.eval.health import alignment, mean_cosine, uniformity
from halp.io import atomic_write_text, read_jsonl
from halp.methods.model import PretrainModel

log = logging.getLogger(__name__)


class MetricsLog:
    """Per-epoch rows in ``metrics.jsonl`` and ``metrics.csv``, rewritten atomically."""

    def __init__(self, run_dir: Path, keep_before: int | None = None) -> None:
        self.jsonl = run_dir / "metrics.jsonl"
        self.csv = run_dir / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        if keep_before is not None and self.jsonl.exists():
            rows = read_jsonl(self.jsonl, CheckpointError)  # a damaged line: a named error
            self.rows = [row for row in rows if row["epoch"] < keep_before]

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


def check_finite_state(model: torch.nn.Module, epoch: int, ckpt_path: Path) -> None:
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
        self.started = time.perf_counter()  # when the epoch began, for its seconds

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
        self.low_cos: dict[str, float] = {}  # the lowest cosine measured so far

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
        return row

    def remember(self, rows: list[dict[str, Any]]) -> None:
        """Take the lowest cosines of earlier rows (a resumed run's kept metrics)."""
        for row in rows:
            for key, value in row.items():
                if key.startswith("cos_") and isinstance(value, int | float):
                    m = key.removeprefix("cos_")
                    self.low_cos[m] = min(self.low_cos.get(m, float(value)), float(value))

    def warn_collapse(self, row: dict[str, Any], threshold: float, epoch: int) -> None:
        """Warn for each modality whose cosine is above ``threshold`` and rose during training.

        The rise is measured from the lowest cosine seen so far in the run (a running
        minimum), not from the first epoch: a freshly initialised encoder can already map
        clips close together (a BiGRU starts near 0.95), fall during the first epochs,
        and collapse later, e.g. when a HaLP term switches on. Call after :meth:`measure`;
        the row's cosines then update the minimum.
        """
        for key, value in row.items():
            if not key.startswith("cos_") or not isinstance(value, int | float):
                continue
            m = key.removeprefix("cos_")
            low = self.low_cos.get(m, float(value))
            if value > threshold and value > low + 0.05:
                log.warning(
                    "epoch %d: the %s embedding may be collapsing: the mean pairwise cosine of "
                    "the probe clips rose from its lowest %.3f to %.3f (> log.collapse_cosine "
                    "%.2f; healthy runs stay near 0). If a loss term switched on shortly "
                    "before, try a smaller weight for it (docs/methods/index.md, 'Representation health').",
                    epoch,
                    m,
                    low,
                    value,
                    threshold,
                )
            self.low_cos[m] = min(low, float(value))
