"""Distributions over [key; queue] distilled from a weaker view to a stronger one.

Every view z of a sample defines p(z) = softmax([z.k, z.Q] / tau) over its key and
the queue snapshot (MoCo's logits, paper Eq. 1). A term pulls a *student* view's
distribution towards a detached *teacher* view's with the soft-target cross-entropy

    CE(sg p_teacher, p_student) = -sum_j sg(p_teacher)_j log p_student_j

(= KL(p_teacher || p_student) + a constant), computed with ``log_softmax``:

- **D3M** (AimCLR, Guo et al. 2022, Sec. 3.3): the normally augmented query teaches the
  extreme view and its EADM-dropped twin, ``L_D3M = (CE(p_n, p_e) + CE(p_n, p_ed)) / 2``.
- **L_h** (HiCLR, Zhang et al. 2023): a chain, basic query -> branch 1 -> branch 2 ...,
  ``L_h = sum_i CE(sg p_{i-1}, p_i)``, weighted by lambda_h (``hiclr.weight``,
  1 / (k - 1) as released).

The teacher never receives gradient; a view that is a teacher in one pair and a student
in the next (HiCLR's middle branches) gets gradient only as a student. HaLP's
hallucinated positives never enter these distributions.
"""

from __future__ import annotations

import itertools

import torch.nn.functional as F
from torch import Tensor

from halp.config import PretrainConfig
from halp.objectives import register_objective
from halp.objectives.base import Embeddings, Objective, StepContext
from halp.objectives.moco import contrastive_logits


def soft_target_ce(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """CE(sg softmax(teacher), softmax(student)), batch mean; no gradient to the teacher."""
    target = F.softmax(teacher_logits.detach(), dim=1)
    return -(target * F.log_softmax(student_logits, dim=1)).sum(dim=1).mean()


class DistributionDistillation(Objective):
    """The sum (or mean) of CE(sg p_teacher, p_student) over (teacher, student) view pairs.

    Args:
        pairs: (teacher, student) view names; ``query`` is MoCo's query. With none
            (HiCLR with k = 1) the term contributes nothing.
        temperature: tau of every distribution (0.07 in AimCLR and HiCLR).
        reduce: ``mean`` over the pairs (D3M) or ``sum`` (HiCLR's L_h).
        name: the prefix of the logged per-pair values.
    """

    def __init__(
        self, pairs: list[tuple[str, str]], temperature: float, reduce: str, name: str
    ) -> None:
        super().__init__()
        if reduce not in ("mean", "sum"):
            raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
        self.pairs = pairs
        self.temperature = temperature
        self.reduce = reduce
        self.name = name

    def loss(self, emb: Embeddings, ctx: StepContext) -> Tensor | None:
        """The term of this step, summed over the modalities."""
        if not self.pairs:
            return None
        total = next(iter(emb.queries.values())).new_zeros(())
        for m in emb.modalities:
            k, queue = emb.keys[m], emb.negatives[m]
            logits: dict[str, Tensor] = {}
            for view in {v for pair in self.pairs for v in pair}:
                logits[view] = contrastive_logits(emb.view(view)[m], k, queue, self.temperature)
            parts = [soft_target_ce(logits[s], logits[t]) for t, s in self.pairs]
            for (_, student), part in zip(self.pairs, parts, strict=True):
                ctx.terms[f"{self.name}_{student}_{m}"] = part.detach()
            term = sum(parts[1:], parts[0])
            total = total + (term / len(parts) if self.reduce == "mean" else term)
        return total


@register_objective("d3m")
def _d3m(config: PretrainConfig, modalities: tuple[str, ...], dim: int) -> Objective:
    pairs = [("query", "extreme"), ("query", "extreme_drop")]
    return DistributionDistillation(pairs, config.moco.temperature, "mean", "d3m")


@register_objective("hierarchy")
def _hierarchy(config: PretrainConfig, modalities: tuple[str, ...], dim: int) -> Objective:
    chain = ["query"] + [b.name for b in config.hiclr.branches]
    pairs = list(itertools.pairwise(chain))
    return DistributionDistillation(pairs, config.moco.temperature, "sum", "hier")
