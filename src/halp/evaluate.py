"""``halp evaluate``: the downstream protocols of the paper (Sec. 4.2-4.3, Tables 1-3).

Linear probe, kNN, semi-supervised, fine-tuning and transfer (fine-tuning a checkpoint
pretrained on another dataset), all on a checkpoint of ``halp pretrain``; the fitting
itself is :func:`halp.eval.classifier.fit_classifier`. Every protocol writes one results JSON that
records the metrics, the resolved configuration, the checkpoint's sha256, the git
commit, the library versions and the wall time.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from halp.config import EvalConfig, PretrainConfig, to_dict
from halp.data.loaders import ClassificationDataset
from halp.data.storage import SkeletonSplit, check_layout, check_recipe, load_split
from halp.encoders import build_encoder
from halp.errors import EvaluationError
from halp.eval.classifier import Classifier, fit_classifier, label_subset
from halp.eval.ensemble import save_scores
from halp.eval.knn import knn_top1
from halp.io import atomic_write_json, sha256_of
from halp.methods import FINETUNE_LR, PRESETS, inactive_terms, linear_lr, preset_of
from halp.methods.checkpoint import config_of, load_checkpoint
from halp.runtime import provenance, resolve_device

log = logging.getLogger(__name__)


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
    preset = preset_of(config)
    modalities = preset.modalities
    if modality not in modalities:
        raise EvaluationError(
            f"the checkpoint (method {config.method!r}) has the modalities {list(modalities)}; "
            f"there is no {modality!r} encoder in it"
        )
    model = Classifier(build_encoder(config.encoder.arch, config), num_classes)
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
        if len(split) == 0:
            raise EvaluationError(
                f"{root}/{split.index.part}: no samples, so there is nothing to "
                f"{'train or search' if split is train else 'test'} on; prepare the data again "
                "(check --raw and the split files)"
            )
        if int(split.index.labels.max()) >= num_classes:
            raise EvaluationError(
                f"{root}/{split.index.part}: label {int(split.index.labels.max())} does not fit "
                f"the dataset's {num_classes} classes"
            )
    return train, test, num_classes


def _frames(config: EvalConfig, pretrained: PretrainConfig) -> int:
    """The clip length: the checkpoint's unless set, with a warning when they differ."""
    if config.frames is None:
        return pretrained.data.frames
    if config.frames != pretrained.data.frames:
        log.warning(
            "evaluating with %d-frame clips, but the encoder was pretrained on %d-frame clips "
            "(config key 'frames'; leave it unset to use the checkpoint's)",
            config.frames,
            pretrained.data.frames,
        )
    return config.frames


def protocol_lr(config: EvalConfig, dataset: str, method: str) -> tuple[float, str]:
    """The learning rate of a protocol and where it comes from.

    ``lr`` if set; else, for the linear probe, the ``lr_preset`` (``published``: the one
    behind ``method``'s published rows, :attr:`halp.methods.Preset.linear_lr`); else the
    fine-tuning rate of CMD's protocol.
    """
    if config.lr is not None:
        return config.lr, "lr"
    if config.protocol != "linear":
        return FINETUNE_LR, "finetune"
    preset = config.lr_preset
    if preset == "published":
        known = PRESETS.get(method)
        preset = known.linear_lr if known is not None else "cmd"
    return linear_lr(preset, dataset), preset


def evaluate(config: EvalConfig, out: Path) -> dict[str, Any]:
    """Run ``config.protocol`` and write its results JSON to ``out`` (atomically).

    A protocol that trains a classifier first writes its test scores next to ``out``
    (:func:`halp.eval.ensemble.save_scores`; with ``repeats > 1``, the first repeat's),
    which the JSON names, for late-fusion ensembles.
    """
    started = time.perf_counter()
    pretrained = config.encoder_init == "pretrained"
    checkpoint = Path(config.checkpoint)
    payload = load_checkpoint(checkpoint)
    pre = config_of(payload)
    modality = config.modality or preset_of(pre).modalities[0]
    check_recipe(Path(config.data_root), pre.data.recipe, "data.recipe of the checkpoint")
    check_layout(Path(config.data_root), pre.data.layout, "data.layout of the checkpoint")
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
    frames = _frames(config, pre)
    test_ds = ClassificationDataset(
        test, modality, train=False, out_frames=frames, seed=config.seed, keep=config.keep
    )
    scores: np.ndarray | None = None  # a classifier's test logits, for late fusion
    if config.protocol == "knn":
        torch.manual_seed(config.seed)
        model = classifier_from_checkpoint(payload, modality, num_classes, pretrained)
        model.to(device)
        top1 = knn_top1(
            model.encoder, train, test, modality, frames, config.seed, config.k, device, config.keep
        )
        metrics: dict[str, Any] = {"top1": top1, "k": config.k}
    else:
        lr, lr_source = protocol_lr(config, dataset, pre.method)
        runs = []
        for repeat in range(config.repeats):
            seed = config.seed + repeat
            train_ds: Dataset = ClassificationDataset(
                train, modality, train=True, scale=config.scale, out_frames=frames, seed=seed
            )
            subset = label_subset(train.index.labels, config.label_fraction, config.sampler, seed)
            if len(subset) < len(train):
                train_ds = Subset(train_ds, subset.tolist())
            torch.manual_seed(seed)
            model = classifier_from_checkpoint(payload, modality, num_classes, pretrained)
            result = fit_classifier(
                model, train_ds, test_ds, config, lr, config.protocol == "linear", device, seed
            )
            run_scores = result.pop("scores")
            if scores is None:  # the first repeat's classifier (seed config.seed) is saved
                scores = run_scores
            runs.append({"seed": seed, "labelled": len(subset), **result})
        finals = [r["top1"] for r in runs]
        metrics = {
            "top1": float(np.mean(finals)),
            "top1_std": float(np.std(finals)),
            "best_on_test": float(np.mean([r["best_on_test"] for r in runs])),
            "lr": lr,
            "lr_preset": lr_source,
            "runs": runs,
        }
    inactive = inactive_terms(pre, int(payload["epoch"]))
    if inactive:  # e.g. a HaLP checkpoint from before mu switched on: not HaLP's result
        log.warning(
            "%s: the %s term(s) of %s never switched on in its %d epoch(s): this result is "
            "the method without them (recorded as inactive_terms)",
            checkpoint,
            ", ".join(inactive),
            pre.method,
            int(payload["epoch"]),
        )
    # written before the JSON that names them (halp.eval.ensemble)
    saved = {} if scores is None else save_scores(out, scores, test.index, config.seed)
    result = {
        "protocol": config.protocol,
        "dataset": dataset,
        "benchmark": benchmark,
        "method": pre.method,
        "inactive_terms": inactive,
        "modality": modality,
        "pretrained_on": pretrained_on,
        "encoder_init": config.encoder_init,
        "metrics": metrics,
        **saved,  # "scores": the scores file's name next to this JSON, "scores_sha256"
        "config": {**to_dict(config), "frames": frames},  # as resolved
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
