"""Representation health: alignment, uniformity and mean cosine of an embedding.

Alignment and uniformity are those of Wang & Isola (ICML 2020) on L2-normalised
embeddings: alignment = E ||f(x) - f(x+)||^2 over positive pairs (two views of one clip;
lower is better aligned), uniformity = log E exp(-2 ||f(x) - f(y)||^2) over distinct
clips (lower is more uniform; -4 or below is spread out for a 128-d sphere, near 0 is
collapse). The mean pairwise cosine of distinct clips is the plainest collapse signal:
near 0 on a healthy sphere, near 1 when every clip maps to the same point.

HaLP pulls each query towards up to 100 positives with weight mu / tau (paper Eq. 8); on a
small encoder or dataset that pull can dominate InfoNCE and collapse the embedding, so
pretraining logs these per epoch on a fixed probe batch and warns above a threshold.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def alignment(a: Tensor, b: Tensor) -> float:
    """Mean squared distance between paired unit rows of ``a`` and ``b`` (N, D)."""
    a, b = F.normalize(a.float(), dim=1), F.normalize(b.float(), dim=1)
    return float((a - b).pow(2).sum(dim=1).mean())


def _offdiagonal(x: Tensor) -> Tensor:
    n = x.shape[0]
    return x[~torch.eye(n, dtype=torch.bool, device=x.device)]


def uniformity(x: Tensor, t: float = 2.0) -> float:
    """Log of the mean of exp(-t ||u - v||^2) over distinct rows u, v of unit ``x``."""
    x = F.normalize(x.float(), dim=1)
    if x.shape[0] < 2:
        return float("nan")
    sq = (x.unsqueeze(1) - x.unsqueeze(0)).pow(2).sum(dim=-1)  # (N, N)
    pairs = _offdiagonal(sq)
    return float(torch.logsumexp(-t * pairs, dim=0) - math.log(pairs.numel()))


def mean_cosine(x: Tensor) -> float:
    """Mean cosine similarity over distinct rows of ``x``."""
    x = F.normalize(x.float(), dim=1)
    if x.shape[0] < 2:
        return float("nan")
    return float(_offdiagonal(x @ x.T).mean())
