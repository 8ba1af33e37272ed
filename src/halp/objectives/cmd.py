"""Cross-modal mutual distillation (CMD, Mao et al., ECCV 2022), as HaLP+CMD uses it (Sec. 4.3).

For every ordered pair of modalities (A, B), A's key is a teacher: its similarities to
A's queue, restricted to the ``topk`` nearest entries and softened at the teacher
temperature; B's query is the student over the same queue slots. L_CMD sums
KL(teacher || student) over the pairs.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from halp.config import PretrainConfig
from halp.errors import ConfigError
from halp.objectives import register_objective
from halp.objectives.base import Embeddings, Objective, StepContext


@torch.no_grad()
def teacher(k: Tensor, queue: Tensor, topk: int, temperature: float) -> tuple[Tensor, Tensor]:
    """Softmax at ``temperature`` of the ``topk`` largest similarities of ``k`` to its queue.

    Returns the (B, k) distribution and the (B, k) queue indices it lives on.
    """
    sim = k @ queue.T  # (B, L)
    top, idx = sim.topk(min(topk, sim.shape[1]), dim=1)  # (B, k)
    return F.softmax(top / temperature, dim=1), idx


def student_kl(q: Tensor, queue: Tensor, target: Tensor, idx: Tensor, temperature: float) -> Tensor:
    """KL(target || student), batch mean.

    The student is the log-softmax at ``temperature`` of ``q``'s similarities to its own
    queue at the teacher's indices ``idx``.
    """
    sim = (q @ queue.T).gather(1, idx)  # (B, k)
    return F.kl_div(F.log_softmax(sim / temperature, dim=1), target, reduction="batchmean")


def distillation_pair(
    k_teacher: Tensor,
    queue_teacher: Tensor,
    q_student: Tensor,
    queue_student: Tensor,
    topk: int,
    teacher_temperature: float,
    student_temperature: float,
) -> Tensor:
    """KL(teacher || student) for one ordered modality pair (A -> B), batch mean.

    The teacher is A's key against A's queue, restricted to its ``topk`` nearest
    entries; the student is B's query against B's queue at the same entries (the queues
    are aligned: slot j holds the same sample in every modality). Only the student
    carries a gradient.
    """
    target, idx = teacher(k_teacher, queue_teacher, topk, teacher_temperature)
    return student_kl(q_student, queue_student, target, idx, student_temperature)


def cmd_loss(
    q: Mapping[str, Tensor],
    k: Mapping[str, Tensor],
    queues: Mapping[str, Tensor],
    topk: int,
    teacher_temperature: float,
    student_temperature: float,
) -> Tensor:
    """L_CMD: ``distillation_pair`` summed over every ordered pair of modalities.

    Each teacher's top-k is computed once and shared by its students.
    """
    names = list(q)
    total = q[names[0]].new_zeros(())
    for a in names:
        target, idx = teacher(k[a], queues[a], topk, teacher_temperature)
        for b in names:
            if b != a:
                total = total + student_kl(q[b], queues[b], target, idx, student_temperature)
    return total


class CrossModalDistillation(Objective):
    """L_CMD over the step's modalities (at least two); logs ``loss_cmd``."""

    def __init__(self, topk: int, teacher_temperature: float, student_temperature: float) -> None:
        super().__init__()
        self.topk = topk
        self.teacher_temperature = teacher_temperature
        self.student_temperature = student_temperature

    def loss(self, emb: Embeddings, ctx: StepContext) -> Tensor:
        """L_CMD of this step."""
        value = cmd_loss(
            emb.queries,
            emb.keys,
            emb.negatives,
            self.topk,
            self.teacher_temperature,
            self.student_temperature,
        )
        ctx.terms["loss_cmd"] = value.detach()
        return value


@register_objective("cmd")
def _cmd(config: PretrainConfig, modalities: tuple[str, ...], dim: int) -> Objective:
    if len(modalities) < 2:
        raise ConfigError("config key 'modalities': CMD needs at least two modalities")
    c = config.cmd
    return CrossModalDistillation(c.topk, c.teacher_temperature, c.student_temperature)
