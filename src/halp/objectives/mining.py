"""Nearest-neighbour mining (AimCLR, Guo et al. 2022, Sec. 3.4; kept by HiCLR).

Until ``mining.start_epoch`` the term is MoCo's InfoNCE (paper Eq. 1). From then on the
queue entries most similar to the query, or to any extra view of the same sample, are
treated as further positives: with ``P`` = {the key} plus the union of each view's
``topk`` nearest queue entries, the term is

    L_NNM = -(1 / |P|) sum_{p in P} log softmax([q.k, q.Q] / tau)_p

on the query's logits only (the extra views choose positives; they get no InfoNCE of
their own). The choice is made without gradient, from the similarities to the queue
snapshot taken before this step's keys enter it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from halp.config import PretrainConfig
from halp.objectives import register_objective
from halp.objectives.base import Embeddings, Objective, StepContext
from halp.objectives.moco import contrastive_logits, info_nce


@torch.no_grad()
def positive_mask(similarities: list[Tensor], topk: int) -> Tensor:
    """The (B, 1 + L) positive set: column 0 (the key) and each view's top-k queue entries.

    Args:
        similarities: per view, (B, L) similarities of its embeddings to the queue.
        topk: queue entries taken per view.
    """
    first = similarities[0]
    mask = torch.zeros(first.shape[0], 1 + first.shape[1], dtype=first.dtype, device=first.device)
    mask[:, 0] = 1.0
    k = min(topk, first.shape[1])
    for sim in similarities:
        mask.scatter_(1, 1 + sim.topk(k, dim=1).indices, 1.0)
    return mask


def multi_positive_nce(logits: Tensor, mask: Tensor) -> Tensor:
    """-(1/|P|) sum_{p in P} log softmax(logits)_p, batch mean (``mask`` marks P)."""
    log_p = F.log_softmax(logits, dim=1)
    return (-(log_p * mask).sum(dim=1) / mask.sum(dim=1)).mean()


class NearestNeighbourInfoNCE(Objective):
    """InfoNCE, then (from ``start_epoch``) InfoNCE with mined positives, per modality.

    Logs ``loss_cl_<modality>``, ``acc_<modality>`` and, while mining,
    ``positives_<modality>`` (the mean size of P).
    """

    def __init__(self, temperature: float, start_epoch: int, topk: int) -> None:
        super().__init__()
        self.temperature = temperature
        self.start_epoch = start_epoch
        self.topk = topk

    def loss(self, emb: Embeddings, ctx: StepContext) -> Tensor:
        """The summed term of this step."""
        total = next(iter(emb.queries.values())).new_zeros(())
        for m in emb.modalities:
            queue = emb.negatives[m]
            if ctx.epoch < self.start_epoch:
                loss_cl, logits = info_nce(emb.queries[m], emb.keys[m], queue, self.temperature)
            else:  # the same logits; the loss over the mined positive set instead
                logits = contrastive_logits(emb.queries[m], emb.keys[m], queue, self.temperature)
                views = [emb.queries[m]] + [v[m] for v in emb.views.values()]
                mask = positive_mask([z.detach() @ queue.T for z in views], self.topk)
                loss_cl = multi_positive_nce(logits, mask)
                ctx.terms[f"positives_{m}"] = mask.sum(dim=1).mean()
            total = total + loss_cl
            ctx.terms[f"loss_cl_{m}"] = loss_cl.detach()
            ctx.terms[f"acc_{m}"] = (logits.detach().argmax(dim=1) == 0).float().mean()
        return total

    def check(self, epochs: int) -> list[str]:
        """A warning when mining never starts in the run."""
        if self.start_epoch < epochs:
            return []
        return [
            f"mining.start_epoch {self.start_epoch} is not below optim.epochs {epochs}: "
            "nearest-neighbour mining never starts in this run"
        ]


@register_objective("nnm")
def _nnm(config: PretrainConfig, modalities: tuple[str, ...], dim: int) -> Objective:
    m = config.mining
    return NearestNeighbourInfoNCE(config.moco.temperature, m.start_epoch, m.topk)
