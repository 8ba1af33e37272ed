"""GraphCL's contrastive loss and the anchor FIFO that lets HaLP run inside GraphCL.

GraphCL (You et al. 2020) has no key encoder and no queue: each graph's projection z1
(view 1) is contrasted with the projection z2 of its augmented view against the other
graphs' z2 of the batch. :func:`nt_xent` is the released form; :class:`AnchorFifo` keeps
the most recent detached anchors so that HaLP's prototypes (paper Sec. 3.2) can be
clustered from them, exactly as from MoCo's queue.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from halp.objectives import register_objective
from halp.objectives.base import Embeddings, Objective, StepContext


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """GraphCL's NT-Xent as released: one direction, the positive left out of the denominator.

    With s_ij = cos(z1_i, z2_j) / tau:
    ``L = -mean_i log( exp(s_ii) / sum_{j != i} exp(s_ij) )``.

    Args:
        z1: (B, D) projections of view 1 (rows).
        z2: (B, D) projections of view 2 (columns).
        temperature: tau (0.2).

    Returns:
        The scalar loss. Computed in log space (log-sum-exp), which equals the released
        exp/divide/log form without its overflow for small tau.
    """
    sim = F.normalize(z1, dim=1) @ F.normalize(z2, dim=1).T / temperature  # (B, B)
    eye = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    positive = sim.diagonal()
    others = sim.masked_fill(eye, float("-inf")).logsumexp(dim=1)
    return (others - positive).mean()


class AnchorFifo:
    """The last ``capacity`` anchors of one stream, for HaLP's prototypes (an AnchorBank).

    Args:
        capacity: How many anchors are kept (HaLP's ``top_k``, 256).
        dim: Anchor width.
    """

    def __init__(self, capacity: int, dim: int) -> None:
        self.keys = torch.zeros(capacity, dim)
        self.capacity = capacity
        self.seen = 0

    @torch.no_grad()
    def push(self, anchors: Tensor) -> None:
        """Append (B, D) anchors (detached), dropping the oldest beyond ``capacity``."""
        anchors = anchors.detach().to(self.keys.dtype)
        if anchors.shape[0] >= self.capacity:
            self.keys = anchors[-self.capacity :].clone()
        else:
            self.keys = torch.cat([self.keys[anchors.shape[0] :], anchors])
        self.seen += int(anchors.shape[0])

    def seen_count(self) -> int:
        """How many anchors were ever pushed."""
        return self.seen

    def recent(self, n: int) -> Tensor:
        """The ``n`` most recent anchors, oldest first."""
        if n > self.capacity:
            raise ValueError(f"the FIFO keeps {self.capacity} anchors, {n} were asked for")
        return self.keys[self.capacity - n :]


class NTXent(Objective):
    """GraphCL's loss term: :func:`nt_xent` of the projections ``view1`` and ``view2``.

    Summed over the streams (GraphCL has one, ``graph``); logs ``loss_graphcl``.
    """

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def loss(self, emb: Embeddings, ctx: StepContext) -> Tensor:
        """The summed term of this step."""
        one, two = emb.projections["view1"], emb.projections["view2"]
        total: Tensor | None = None
        for m in one:
            term = nt_xent(one[m], two[m], self.temperature)
            total = term if total is None else total + term
        assert total is not None, "NT-Xent needs at least one stream"
        ctx.terms["loss_graphcl"] = total.detach()
        return total


@register_objective("nt_xent")
def _nt_xent(config: Any, modalities: tuple[str, ...], dim: int) -> Objective:
    return NTXent(config.tau)
