"""The MoCo core (paper Sec. 3.1, Eq. 1): InfoNCE, the key queue, the momentum update.

:class:`InfoNCE` is the contrastive term of every MoCo-based preset, summed over the
modalities; the queue (:class:`KeyQueue`) is also the bank of recent anchors from which
HaLP's prototypes are drawn.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from halp.config import PretrainConfig
from halp.objectives import register_objective
from halp.objectives.base import Embeddings, Objective, StepContext


def contrastive_logits(z: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """(B, 1 + L) logits [z.k, z.Q] / tau: column 0 the positive key, then the queue.

    MoCo's logits of Eq. 1, and the distributions over [key; queue] that AimCLR's D3M and
    HiCLR's hierarchical loss compare for other views ``z`` of the same samples.
    """
    positive = (z * k).sum(dim=1, keepdim=True)  # (B, 1)
    return torch.cat([positive, z @ queue.T], dim=1) / temperature


def info_nce(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """L_CL = -log( e^{q.k/tau} / (e^{q.k/tau} + sum_i e^{q.Q_i/tau}) ), batch mean.

    Args:
        q: (B, D) L2-normalised queries (carry the gradient).
        k: (B, D) L2-normalised keys (no gradient).
        queue: (L, D) L2-normalised negatives.
        temperature: tau.

    Returns:
        The loss and the (B, 1 + L) logits whose column 0 is the positive.
    """
    logits = contrastive_logits(q, k, queue, temperature)
    target = torch.zeros(len(q), dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, target), logits


class KeyQueue(nn.Module):
    """A FIFO queue of L keys kept as buffers, so it is saved and restored with the model."""

    keys: Tensor
    ptr: Tensor
    seen: Tensor

    def __init__(self, size: int, dim: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        init = torch.randn(size, dim, generator=generator)
        self.register_buffer("keys", F.normalize(init, dim=1))  # (L, D)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))  # next slot
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))  # keys ever enqueued
        self.seen_host: int | None = 0

    @property
    def size(self) -> int:
        """L, the number of slots."""
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` (B, D) at the pointer, wrapping around the end."""
        n = keys.shape[0]
        if n > self.size:
            raise ValueError(f"cannot enqueue {n} keys into a queue of {self.size}")
        idx = (self.ptr + torch.arange(n, device=keys.device)) % self.size
        self.keys[idx] = keys.detach().to(self.keys.dtype)
        self.ptr.copy_((self.ptr + n) % self.size)  # on the device: no host round trip
        self.seen.add_(n)
        self.seen_host = None if self.seen_host is None else self.seen_host + n

    def seen_count(self) -> int:
        """Keys ever enqueued, as a Python int, read from the device once and then tracked."""
        if self.seen_host is None:
            self.seen_host = int(self.seen)
        return self.seen_host

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.seen_host = None  # re-read after a checkpoint is loaded

    def recent(self, n: int) -> Tensor:
        """The ``n`` most recently enqueued keys, oldest first (n <= L)."""
        if n > self.size:
            raise ValueError(f"asked for {n} recent keys of a queue of {self.size}")
        idx = (self.ptr - n + torch.arange(n, device=self.keys.device)) % self.size
        return self.keys[idx]


@torch.no_grad()
def momentum_update(online: nn.Module, target: nn.Module, momentum: float) -> None:
    """Target <- m * target + (1 - m) * online, parameter by parameter.

    Buffers (BatchNorm running statistics) are not touched: the key encoder keeps its
    own, as in MoCo; they are never used, since the key encoder only runs in train mode.
    """
    for p_o, p_t in zip(online.parameters(), target.parameters(), strict=True):
        p_t.mul_(momentum).add_(p_o.detach(), alpha=1.0 - momentum)


class InfoNCE(Objective):
    """Sum over modalities of InfoNCE between each query, its key and the queue (Eq. 1).

    Logs ``loss_cl_<modality>`` and ``acc_<modality>`` (how often the positive has the
    largest logit).
    """

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def loss(self, emb: Embeddings, ctx: StepContext) -> Tensor:
        """The summed InfoNCE of this step."""
        total = next(iter(emb.queries.values())).new_zeros(())
        for m in emb.modalities:
            loss_cl, logits = info_nce(
                emb.queries[m], emb.keys[m], emb.negatives[m], self.temperature
            )
            total = total + loss_cl
            ctx.terms[f"loss_cl_{m}"] = loss_cl.detach()
            ctx.terms[f"acc_{m}"] = (logits.detach().argmax(dim=1) == 0).float().mean()
        return total


@register_objective("infonce")
def _infonce(config: PretrainConfig, modalities: tuple[str, ...], dim: int) -> Objective:
    return InfoNCE(config.moco.temperature)
