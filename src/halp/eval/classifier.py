"""Fitting a classifier on a pretrained encoder (paper Sec. 4.2; supplement).

One function, :func:`fit_classifier`, serves every protocol that trains: ``freeze=True``
is the linear probe (the encoder stays in eval mode, so BatchNorm is frozen, and only
the new linear layer learns; afterwards every encoder tensor must be bit-identical,
MoCo's guard); ``freeze=False`` fine-tunes the whole network (semi-supervised,
fine-tuning, transfer). :func:`label_subset` draws the labelled part of the
semi-supervised protocol.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from halp.data.loaders import make_loader
from halp.encoders.base import Encoder
from halp.errors import EvaluationError
from halp.schedules import step_lr

log = logging.getLogger(__name__)


class FitConfig(Protocol):
    """The keys of :class:`halp.config.EvalConfig` that :func:`fit_classifier` reads."""

    momentum: float
    weight_decay: float
    batch_size: int
    epochs: int
    lr_steps: list[int]
    lr_gamma: float
    eval_every: int
    workers: int


class Classifier(nn.Module):
    """A pretrained encoder's 2048-d feature followed by a new linear layer."""

    def __init__(self, encoder: Encoder, num_classes: int) -> None:
        super().__init__()
        encoder.projection = nn.Identity()  # the contrastive head is discarded
        self.encoder = encoder
        self.fc = nn.Linear(encoder.feature_dim, num_classes)
        nn.init.normal_(self.fc.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits of a batch of clips."""
        return self.fc(self.encoder.features(x))


def label_subset(labels: np.ndarray, fraction: float, sampler: str, seed: int) -> np.ndarray:
    """Sorted indices of the labelled subset for semi-supervised training.

    ``random``: ``round(fraction * N)`` samples drawn without replacement, seeded (the
    reference draws unseeded and not class-balanced). ``per_class``: ``round(fraction *
    N_c)`` of every class, at least one, so every class is represented.
    """
    if not 0.0 < fraction <= 1.0:
        raise EvaluationError(f"config key 'label_fraction': {fraction} is not in (0, 1]")
    rng = np.random.default_rng(seed)
    n = len(labels)
    if fraction == 1.0:
        return np.arange(n)
    if sampler == "random":
        count = round(fraction * n)
        if count == 0:
            raise EvaluationError(
                f"label_fraction {fraction:g} of {n} training samples is 0 samples; "
                "use a larger fraction or a larger dataset"
            )
        return np.sort(rng.choice(n, size=count, replace=False))
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        take = max(1, round(fraction * len(members)))
        chosen.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen))


@torch.no_grad()
def class_scores(
    model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """The model's class scores on ``dataset``, in eval mode and in dataset order.

    Returns the logits, float32 (N, C), and the labels, int64 (N,), both on the CPU; the
    model's mode is restored afterwards. These raw classifier outputs are what a late-fusion
    ensemble adds up (:mod:`halp.eval.ensemble`).
    """
    was_training = model.training
    model.eval()
    scores, targets = [], []
    for clips, labels in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        scores.append(model(clips.to(device)).cpu().to(torch.float32))
        targets.append(labels.to(torch.int64))
    model.train(was_training)
    if not scores:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return torch.cat(scores).numpy(), torch.cat(targets).numpy()


def top1_of(scores: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy (percent) of (N, C) scores: the share of rows whose argmax is the label."""
    if len(labels) == 0:
        return 0.0
    correct = int((np.argmax(scores, axis=1) == labels).sum())
    return 100.0 * correct / len(labels)


def accuracy(
    model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 256
) -> float:
    """Top-1 accuracy (percent) on ``dataset`` in eval mode."""
    return top1_of(*class_scores(model, dataset, device, batch_size))


def fit_classifier(
    model: Classifier,
    train: Dataset,
    test: Dataset,
    config: FitConfig,
    lr: float,
    freeze: bool,
    device: torch.device,
    seed: int,
) -> dict[str, Any]:
    """Train ``model`` on ``train``; test accuracy every ``eval_every`` epochs and at the end.

    ``freeze=True``: the encoder is frozen and kept in eval mode (BatchNorm statistics
    do not move); only ``model.fc`` learns, and afterwards every encoder tensor must be
    bit-identical to what was loaded. ``freeze=False``: everything trains, in train mode.
    Returns the final test accuracy (the headline), the best test accuracy over the
    evaluations (``best_on_test``, the reference's selection on the test set), the
    history, and under ``scores`` the final model's test logits (float32 (N, C), in test-set
    order; :func:`class_scores`), from which the final accuracy is computed.
    """
    model.to(device)
    if freeze:
        for p in model.encoder.parameters():
            p.requires_grad_(False)
        before = {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}
    params = [p for p in model.parameters() if p.requires_grad]
    if freeze and len(params) != 2:
        raise EvaluationError(f"a linear probe trains 2 tensors (fc), found {len(params)}")
    optimizer = torch.optim.SGD(
        params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    history: list[dict[str, float]] = []
    for epoch in range(config.epochs):
        epoch_lr = step_lr(lr, config.lr_gamma, config.lr_steps, epoch)
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr
        model.encoder.train(not freeze)
        model.fc.train()
        loader = make_loader(
            train,
            config.batch_size,
            shuffle=True,
            seed=seed,
            epoch=epoch,
            num_workers=config.workers,
            pin_memory=device.type == "cuda",
        )
        losses = []
        for clips, labels in loader:
            loss = F.cross_entropy(model(clips.to(device)), labels.to(device))
            if not torch.isfinite(loss):
                raise EvaluationError(
                    f"the loss became {float(loss.detach())} at epoch {epoch}; lower the lr"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
            scores, labels = class_scores(model, test, device)
            history.append(
                {
                    "epoch": epoch,
                    "lr": epoch_lr,
                    "train_loss": float(np.mean(losses)),
                    "test_top1": top1_of(scores, labels),
                }
            )
            log.info("epoch %d: %s", epoch, history[-1])
    if freeze:
        after = model.encoder.state_dict()
        moved = [k for k, v in before.items() if not torch.equal(v, after[k])]
        if moved:
            raise EvaluationError(f"the linear probe changed frozen encoder tensors: {moved}")
    return {
        "top1": history[-1]["test_top1"],
        "best_on_test": max(h["test_top1"] for h in history),
        "history": history,
        "classes": model.fc.out_features,  # what was trained, as a record and a check
        "trainable_tensors": len(params),
        "scores": scores,  # of the last evaluation, which is always the final epoch's
    }
