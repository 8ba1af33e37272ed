"""k-nearest-neighbour evaluation on frozen features (paper Sec. 4.2, Table 2).

Features are the encoder's 2048-d pre-projection output, L2-normalised; similarity is
cosine; the training split is the gallery. Batched in torch so NTU-120 sizes fit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from halp.data.loaders import ClassificationDataset
from halp.data.storage import SkeletonSplit
from halp.errors import EvaluationError


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
) -> tuple[Tensor, Tensor]:
    """(N, F) float32 features (``encoder.features``) and (N,) labels, in dataset order.

    The encoder is put in eval mode for the extraction and restored afterwards.
    """
    was_training = encoder.training
    encoder.eval()
    feats, labels = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    try:
        for clips, y in loader:
            feats.append(encoder.features(clips.to(device)).float().cpu())  # type: ignore[operator]
            labels.append(torch.as_tensor(y))
    finally:
        encoder.train(was_training)
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def knn_predict(
    gallery: Tensor,
    gallery_labels: Tensor,
    queries: Tensor,
    k: int = 1,
    batch_size: int = 1024,
) -> Tensor:
    """Majority vote of the ``k`` most cosine-similar gallery items for every query.

    Ties between classes go to the smallest label, as scikit-learn's
    ``KNeighborsClassifier`` (uniform weights) does.
    """
    if k < 1 or k > len(gallery):
        raise EvaluationError(
            f"config key 'k': k must be in 1..{len(gallery)} (the gallery size), got {k}"
        )
    gallery = F.normalize(gallery.float(), dim=1)
    num_classes = int(gallery_labels.max()) + 1
    preds = []
    for start in range(0, len(queries), batch_size):
        q = F.normalize(queries[start : start + batch_size].float(), dim=1)
        sim = q @ gallery.T  # (b, N)
        idx = sim.topk(k, dim=1).indices  # (b, k)
        votes = F.one_hot(gallery_labels[idx], num_classes).sum(dim=1)  # (b, C)
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds)


def knn_accuracy(
    gallery: Tensor, gallery_labels: Tensor, queries: Tensor, labels: Tensor, k: int = 1
) -> float:
    """Top-1 accuracy (percent) of ``knn_predict``."""
    preds = knn_predict(gallery, gallery_labels, queries, k)
    return float((preds == labels).float().mean() * 100)


def knn_top1(
    encoder: nn.Module,
    train: SkeletonSplit,
    test: SkeletonSplit,
    modality: str,
    frames: int,
    seed: int,
    k: int = 1,
    device: torch.device | str = "cpu",
    keep: float = 0.95,
) -> float:
    """The kNN protocol end to end: train split as gallery, centre crops (``keep``) for both.

    Used by ``halp evaluate knn`` and by the kNN monitor of pretraining alike.
    """
    gallery, queries = (
        ClassificationDataset(split, modality, train=False, out_frames=frames, seed=seed, keep=keep)
        for split in (train, test)
    )
    g, gl = extract_features(encoder, gallery, device=device)
    f, fl = extract_features(encoder, queries, device=device)
    for split, feats in ((train, g), (test, f)):
        check_features(feats, split)
    return knn_accuracy(g, gl, f, fl, k=k)


def check_features(features: Tensor, split: SkeletonSplit) -> None:
    """Refuse features with NaN or inf (a NaN row would be every query's nearest neighbour).

    Raises:
        EvaluationError: naming the first such sample of ``split``.
    """
    bad = ~torch.isfinite(features).all(dim=1)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        idx = split.index
        raise EvaluationError(
            f"the encoder's features of sample {i} ({idx.names[i]}) of {idx.dataset}/"
            f"{idx.benchmark}/{idx.part} (and {int(bad.sum()) - 1} more) hold NaN or infinite "
            "values; the checkpoint's weights or the data are broken"
        )
