"""Cross-modal mutual distillation (CMD, Mao et al. 2022; REFERENCE.md §4)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor


def distillation_pair(
    k_teacher: Tensor,
    queue_teacher: Tensor,
    q_student: Tensor,
    queue_student: Tensor,
    topk: int,
    teacher_temperature: float,
    student_temperature: float,
) -> Tensor:
    """KL(teacher || student) for one ordered modality pair, batch mean.

    The teacher is the softmax, at ``teacher_temperature``, of its key's similarities
    to its own queue restricted to their ``topk`` largest entries; the student is the
    log-softmax, at ``student_temperature``, of its query's similarities to its own
    queue at the same indices (the queues are aligned: slot j holds the same sample in
    every modality). Only the student carries a gradient.
    """
    with torch.no_grad():
        sim_t = k_teacher @ queue_teacher.T  # (B, L)
        top, idx = sim_t.topk(min(topk, sim_t.shape[1]), dim=1)  # (B, k)
        teacher = F.softmax(top / teacher_temperature, dim=1)
    sim_s = (q_student @ queue_student.T).gather(1, idx)  # (B, k)
    log_student = F.log_softmax(sim_s / student_temperature, dim=1)
    return F.kl_div(log_student, teacher, reduction="batchmean")


def cmd_loss(
    q: Mapping[str, Tensor],
    k: Mapping[str, Tensor],
    queues: Mapping[str, Tensor],
    topk: int,
    teacher_temperature: float,
    student_temperature: float,
) -> Tensor:
    """L_CMD: the sum of ``distillation_pair`` over every ordered pair of modalities."""
    names = list(q)
    total = q[names[0]].new_zeros(())
    for a in names:
        for b in names:
            if a != b:
                total = total + distillation_pair(
                    k[a], queues[a], q[b], queues[b], topk, teacher_temperature,
                    student_temperature,
                )  # fmt: skip
    return total
