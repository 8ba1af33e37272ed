"""Downstream evaluation (REFERENCE.md §5): linear probe, kNN, semi-supervised, transfer.

One classifier-fitting function, ``fit_classifier``, serves every protocol that trains:
``freeze=True`` is the linear probe (the encoder stays in eval mode, so BatchNorm is
frozen, and only the new ``Linear(2048, classes)`` learns); ``freeze=False`` fine-tunes
the whole network (semi-supervised, fine-tuning and transfer, which is only a
checkpoint pretrained on another dataset). Every protocol writes one results JSON that
records the metrics, the resolved configuration, the checkpoint's sha256, the git
commit, the library versions and the wall time.
"""

from __future__ import annotations

import logging
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from halp import __version__
from halp.config import EvalConfig, to_dict
from halp.dataset import ClassificationDataset, make_loader
from halp.encoder import BiGRUEncoder
from halp.knn import extract_features, knn_accuracy
from halp.methods import build_encoder, method_spec
from halp.storage import SkeletonSplit, atomic_write_json, load_split, sha256_of
from halp.train import config_of, load_checkpoint, resolve_device

log = logging.getLogger(__name__)

FINETUNE_LR = 0.01  # semi-supervised, fine-tuning and transfer (CMD's protocol)
LINEAR_LR = {"cmd": 0.1, "halp_ntu": 0.005, "halp_pku": 0.001}


class EvaluationError(ValueError):
    """The checkpoint, the data or the configuration cannot be evaluated as asked."""


class Classifier(nn.Module):
    """A pretrained encoder's 2048-d feature followed by a new linear layer."""

    def __init__(self, encoder: BiGRUEncoder, num_classes: int) -> None:
        super().__init__()
        encoder.projection = nn.Identity()  # the contrastive head is discarded
        self.encoder = encoder
        self.fc = nn.Linear(encoder.feature_dim, num_classes)
        nn.init.normal_(self.fc.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.encoder.features(x))


# ------------------------------------------------------------------------ loading


def classifier_from_checkpoint(
    payload: dict[str, Any], modality: str, num_classes: int, pretrained: bool = True
) -> Classifier:
    """Build the checkpoint's encoder for ``modality`` with a new classifier.

    With ``pretrained`` the weights of that branch's query encoder are loaded, and
    (MoCo's guard) the only keys left missing must be the classifier's. Without it the
    same architecture keeps its fresh random initialisation (the random-init control).
    """
    config = config_of(payload)
    modalities = method_spec(config).modalities
    if modality not in modalities:
        raise EvaluationError(
            f"the checkpoint (method {config.method!r}) has the modalities {list(modalities)}; "
            f"there is no {modality!r} encoder in it"
        )
    model = Classifier(build_encoder(config), num_classes)
    if not pretrained:
        return model
    prefix = f"branches.{modality}.encoder_q."
    state = {
        "encoder." + key[len(prefix) :]: value
        for key, value in payload["model"].items()
        if key.startswith(prefix) and not key[len(prefix) :].startswith("projection.")
    }
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatch
        raise EvaluationError(f"the checkpoint's encoder does not fit: {err}") from None
    if unexpected or set(missing) != {"fc.weight", "fc.bias"}:
        raise EvaluationError(
            f"loading the encoder left missing keys {sorted(missing)} and unexpected keys "
            f"{sorted(unexpected)}; only the classifier (fc.weight, fc.bias) may be missing"
        )
    return model


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


# ------------------------------------------------------------------------ fitting


@torch.no_grad()
def accuracy(
    model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 256
) -> float:
    """Top-1 accuracy (percent) on ``dataset`` in eval mode."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for clips, labels in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        pred = model(clips.to(device)).argmax(dim=1).cpu()
        correct += int((pred == labels).sum())
        total += len(labels)
    model.train(was_training)
    return 100.0 * correct / max(total, 1)


def fit_classifier(
    model: Classifier,
    train: Dataset,
    test: Dataset,
    config: EvalConfig,
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
    evaluations (``best_on_test``, the reference's selection on the test set) and the
    history.
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
        epoch_lr = lr * config.lr_gamma ** sum(epoch >= s for s in config.lr_steps)
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
            history.append(
                {
                    "epoch": epoch,
                    "lr": epoch_lr,
                    "train_loss": float(np.mean(losses)),
                    "test_top1": accuracy(model, test, device),
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
    }


# ------------------------------------------------------------------------ provenance


def git_commit() -> dict[str, Any]:
    """The commit of the source tree the package runs from, and whether it is modified."""
    here = str(Path(__file__).resolve().parent)

    def git(*args: str) -> str:
        run = subprocess.run(
            ["git", "-C", here, *args], capture_output=True, text=True, check=True, timeout=10
        )
        return run.stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def provenance(device: torch.device) -> dict[str, Any]:
    return {
        **git_commit(),
        "halp_version": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }


# ------------------------------------------------------------------------ protocols


def _splits(config: EvalConfig) -> tuple[SkeletonSplit, SkeletonSplit, int]:
    root = Path(config.data_root)
    train, test = load_split(root, "train"), load_split(root, "test")
    num_classes = train.index.num_classes
    if test.index.num_classes != num_classes:
        raise EvaluationError(
            f"{root}: the train part has {num_classes} classes but the test part "
            f"{test.index.num_classes}"
        )
    for split in (train, test):
        if len(split) and int(split.index.labels.max()) >= num_classes:
            raise EvaluationError(
                f"{root}/{split.index.part}: label {int(split.index.labels.max())} does not fit "
                f"the dataset's {num_classes} classes"
            )
    return train, test, num_classes


def linear_lr(config: EvalConfig, dataset: str) -> float:
    if config.lr is not None:
        return config.lr
    if config.protocol != "linear":
        return FINETUNE_LR
    if config.lr_preset == "cmd":
        return LINEAR_LR["cmd"]
    return LINEAR_LR["halp_pku" if dataset.startswith("pku") else "halp_ntu"]


def evaluate(config: EvalConfig, out: Path) -> dict[str, Any]:
    """Run ``config.protocol`` and write its results JSON to ``out`` (atomically)."""
    started = time.perf_counter()
    pretrained = config.encoder_init == "pretrained"
    checkpoint = Path(config.checkpoint)
    payload = load_checkpoint(checkpoint)
    pre = config_of(payload)
    modality = config.modality or method_spec(pre).modalities[0]
    train, test, num_classes = _splits(config)
    dataset, benchmark = train.index.dataset, train.index.benchmark
    pretrained_on = payload.get("data", {}).get("dataset")
    if config.protocol == "transfer" and pretrained_on == dataset:
        raise EvaluationError(
            f"transfer needs a target other than the pretraining dataset ({dataset}); "
            "use the finetune protocol"
        )
    if config.protocol == "semi" and config.label_fraction >= 1.0:
        raise EvaluationError("config key 'label_fraction': semi needs a fraction below 1")
    device = resolve_device(config.device)
    kwargs = {"modality": modality, "out_frames": config.frames}
    test_ds = ClassificationDataset(test, train=False, seed=config.seed, **kwargs)
    if config.protocol == "knn":
        torch.manual_seed(config.seed)
        model = classifier_from_checkpoint(payload, modality, num_classes, pretrained)
        model.to(device)
        gallery = ClassificationDataset(train, train=False, seed=config.seed, **kwargs)
        g, gl = extract_features(model.encoder, gallery, device=device)
        f, fl = extract_features(model.encoder, test_ds, device=device)
        metrics: dict[str, Any] = {"top1": knn_accuracy(g, gl, f, fl, k=config.k), "k": config.k}
    else:
        lr = linear_lr(config, dataset)
        runs = []
        for repeat in range(config.repeats):
            seed = config.seed + repeat
            train_ds: Dataset = ClassificationDataset(
                train, train=True, scale=config.scale, seed=seed, **kwargs
            )
            subset = label_subset(train.index.labels, config.label_fraction, config.sampler, seed)
            if len(subset) < len(train):
                train_ds = Subset(train_ds, subset.tolist())
            torch.manual_seed(seed)
            model = classifier_from_checkpoint(payload, modality, num_classes, pretrained)
            result = fit_classifier(
                model, train_ds, test_ds, config, lr, config.protocol == "linear", device, seed
            )
            runs.append({"seed": seed, "labelled": len(subset), **result})
        top1 = [r["top1"] for r in runs]
        metrics = {
            "top1": float(np.mean(top1)),
            "top1_std": float(np.std(top1)),
            "best_on_test": float(np.mean([r["best_on_test"] for r in runs])),
            "lr": lr,
            "runs": runs,
        }
    result = {
        "protocol": config.protocol,
        "dataset": dataset,
        "benchmark": benchmark,
        "method": pre.method,
        "modality": modality,
        "pretrained_on": pretrained_on,
        "encoder_init": config.encoder_init,
        "metrics": metrics,
        "config": to_dict(config),
        "checkpoint": {
            "path": str(checkpoint),
            "sha256": sha256_of(checkpoint),
            "epoch": int(payload["epoch"]),
        },
        "pretrain_config": payload["config"],
        "provenance": provenance(device),
        "seconds": round(time.perf_counter() - started, 3),
    }
    atomic_write_json(Path(out), result)
    return result
