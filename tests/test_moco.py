"""MoCo core and CMD distillation against analytic values and slow references."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from halp.objectives.cmd import cmd_loss, distillation_pair
from halp.objectives.moco import KeyQueue, info_nce, momentum_update


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_info_nce_identical_embeddings_is_log_of_k_plus_1() -> None:
    """With q = k = every queue entry, all logits are equal: L = log(L + 1)."""
    v = unit(1, 8)
    q = v.repeat(4, 1)
    queue = v.repeat(15, 1)
    loss, logits = info_nce(q, q, queue, temperature=0.07)
    assert logits.shape == (4, 16)
    assert math.isclose(float(loss), math.log(16), rel_tol=1e-6)


def test_info_nce_equals_explicit_formula() -> None:
    q, k, queue = unit(5, 8, seed=1), unit(5, 8, seed=2), unit(7, 8, seed=3)
    loss, _ = info_nce(q, k, queue, temperature=0.2)
    want = 0.0
    for i in range(5):
        pos = math.exp(float(q[i] @ k[i]) / 0.2)
        neg = sum(math.exp(float(q[i] @ queue[j]) / 0.2) for j in range(7))
        want += -math.log(pos / (pos + neg))
    assert math.isclose(float(loss), want / 5, rel_tol=1e-5)


def test_queue_is_fifo_and_recent_is_ordered() -> None:
    queue = KeyQueue(size=5, dim=2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(queue.keys.norm(dim=1), torch.ones(5))
    for start in (0, 3, 6):
        queue.enqueue(torch.arange(start, start + 3).float()[:, None].repeat(1, 2))
    # 9 keys into 5 slots: slots hold 4..8, the pointer is at 9 % 5 = 4
    assert int(queue.ptr) == 4 and int(queue.seen) == 9
    assert queue.recent(5)[:, 0].tolist() == [4, 5, 6, 7, 8]
    assert queue.recent(2)[:, 0].tolist() == [7, 8]
    assert set(queue.state_dict()) == {"keys", "ptr", "seen"}


def test_momentum_update() -> None:
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = target.weight.clone()
    momentum_update(online, target, 0.9)
    assert torch.allclose(target.weight, 0.9 * before + 0.1 * online.weight)


def test_distillation_pair_against_explicit_kl() -> None:
    kt, qt, qs, qq = (
        unit(3, 8, seed=4),
        unit(20, 8, seed=5),
        unit(3, 8, seed=6),
        unit(20, 8, seed=7),
    )
    qs.requires_grad_(True)
    got = distillation_pair(
        kt, qt, qs, qq, topk=6, teacher_temperature=0.05, student_temperature=0.1
    )
    want = 0.0
    for b in range(3):
        sim = (kt[b] @ qt.T).tolist()
        idx = sorted(range(20), key=lambda j: -sim[j])[:6]
        t = torch.softmax(torch.tensor([sim[j] for j in idx]) / 0.05, 0)
        s = torch.log_softmax(torch.stack([qs[b] @ qq[j] for j in idx]) / 0.1, 0)
        want = want + float((t * (t.log() - s)).sum().detach())
    assert math.isclose(float(got.detach()), want / 3, rel_tol=1e-5)
    got.backward()
    assert qs.grad is not None and kt.grad is None


def test_cmd_loss_sums_six_ordered_pairs_and_vanishes_when_aligned() -> None:
    mods = ("joint", "motion", "bone")
    q = {m: unit(4, 8, seed=i) for i, m in enumerate(mods)}
    k = {m: unit(4, 8, seed=10 + i) for i, m in enumerate(mods)}
    queues = {m: unit(30, 8, seed=20 + i) for i, m in enumerate(mods)}
    total = cmd_loss(q, k, queues, topk=10, teacher_temperature=0.05, student_temperature=0.1)
    pairs = sum(
        float(distillation_pair(k[a], queues[a], q[b], queues[b], 10, 0.05, 0.1))
        for a in mods
        for b in mods
        if a != b
    )
    assert math.isclose(float(total), pairs, rel_tol=1e-6)
    # identical modalities and teacher temperature = student temperature: KL = 0
    same = {m: q["joint"] for m in mods}
    same_queue = {m: queues["joint"] for m in mods}
    zero = cmd_loss(
        same, same, same_queue, topk=10, teacher_temperature=0.1, student_temperature=0.1
    )
    assert abs(float(zero)) < 1e-6
