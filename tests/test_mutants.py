"""Tests written to kill the mutants that survived ``benchmarks/mutation.py``.

Each test pins one behaviour of the core math and protocol modules that the rest of the
suite left open (see "Mutation testing" in ``benchmarks/README.md`` for the survivors
and their verdicts). Small tensors, seeded generators; the whole file runs in seconds.
"""

from __future__ import annotations

import copy
import inspect
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from halp.config import HalpConfig, PretrainConfig, load_config
from halp.data.loaders import make_loader
from halp.encoders.base import Encoder
from halp.encoders.eadm import eadm, eadm_channels, energy_attention, keep_and_rescale
from halp.errors import ConfigError, EvaluationError
from halp.eval.classifier import Classifier, accuracy, fit_classifier, label_subset
from halp.eval.knn import extract_features, knn_predict
from halp.objectives import Embeddings, StepContext, build_objective
from halp.objectives.cmd import CrossModalDistillation, cmd_loss
from halp.objectives.distribution import DistributionDistillation, soft_target_ce
from halp.objectives.halp import HaLP, Prototypes, halp_term, refresh_prototypes
from halp.objectives.mining import NearestNeighbourInfoNCE, multi_positive_nce, positive_mask
from halp.objectives.moco import InfoNCE, KeyQueue, info_nce, momentum_update
from halp.objectives.poshal import (
    angle,
    hallucinate,
    halp_loss,
    sample_tc,
    select_other_prototypes,
    slerp,
    slerp_towards,
    t_star,
)
from halp.objectives.prototypes import (
    _uniform,
    compute_prototypes,
    geomstats_kmeans,
    kmeans_objective,
    spherical_kmeans,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def unit(g: torch.Generator, *shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


# ---------------------------------------------------------------- PosHal (poshal.py)


def test_angle_is_the_arc_length() -> None:
    """angle() returns Ω itself (not sin Ω), over the whole of [0, π]."""
    e = torch.eye(3, dtype=torch.float64)
    for omega in (0.3, math.pi / 2, 2.5, math.pi - 1e-4):
        b = math.cos(omega) * e[0] + math.sin(omega) * e[1]
        assert angle(e[0], b).item() == pytest.approx(omega, rel=1e-12)


def test_t_star_degenerate_threshold_is_inclusive_at_sqrt_eps() -> None:
    """t* = 0 when sin Ω <= sqrt(eps) (here exactly 2^-26 in float64), not above it."""
    k, p_closest = torch.eye(3, dtype=torch.float64)[:2].split(1)
    at = torch.tensor([[[-1.0, 2.0**-26, 0.0]]], dtype=torch.float64)  # sin Ω == 2^-26
    above = torch.tensor([[[-1.0, 2.0**-25, 0.0]]], dtype=torch.float64)
    assert t_star(k, p_closest, at).item() == 0.0
    assert t_star(k, p_closest, above).item() == pytest.approx(0.75, abs=1e-6)


def test_slerp_extrapolates_accurately_along_short_arcs_in_float32() -> None:
    """The tangent u is formed without cancellation, so even 0.5 rad along an arc of
    Ω < 1e-3 (t = 0.5 / Ω) float32 agrees with float64 on the same inputs."""
    g = gen(0)
    k = unit(g, 64, 16)
    e = torch.randn(64, 16, generator=g, dtype=torch.float64)
    e = F.normalize(e - (e * k).sum(-1, keepdim=True) * k, dim=-1)
    near = math.cos(1e-3) * k + math.sin(1e-3) * e
    # a pair whose coordinate-wise ratios a_i / b_i sum to a negative number
    a1 = F.normalize(torch.tensor([1.0, 5e-4, 0.3, 0.2], dtype=torch.float64), dim=0)
    b1 = F.normalize(torch.tensor([1.0, -1e-7, 0.3, 0.2], dtype=torch.float64), dim=0)
    for a64, b64 in ((k, near), (a1, b1)):
        a, b = a64.float(), b64.float()
        t = 0.5 / angle(a.double(), b.double())
        want = slerp(a.double(), b.double(), t)
        got = slerp(a, b, t.float())
        assert (got.double() - want).abs().max().item() < 1e-5


def test_select_other_prototypes_works_with_two_prototypes() -> None:
    """P = 2 is allowed: P_sel is always the other prototype."""
    closest = torch.tensor([0, 1, 1, 0])
    sel = select_other_prototypes(closest, 2, 50, gen(0))
    assert torch.equal(sel, (1 - closest)[:, None].expand(4, 50))


def test_nearest_selection_argument_checks() -> None:
    """nearest-W needs the similarities and W >= 1; W = 1 always picks the runner-up."""
    g = gen(0)
    sim = unit(g, 6, 8) @ unit(g, 5, 8).T
    closest = sim.argmax(1)
    with pytest.raises(ValueError, match="nearest-W"):
        select_other_prototypes(closest, 5, 3, gen(1), None, 2)
    with pytest.raises(ValueError, match="nearest-W"):
        select_other_prototypes(closest, 5, 3, gen(1), sim, 0)
    sel = select_other_prototypes(closest, 5, 40, gen(1), sim, 1)
    runner_up = sim.argsort(dim=1, descending=True)[:, 1]
    assert torch.equal(sel, runner_up[:, None].expand(6, 40))


def test_nearest_selection_takes_all_others_when_few_prototypes() -> None:
    """With P <= W + 1 every one of the P - 1 other prototypes can be drawn."""
    g = gen(2)
    sim = unit(g, 3, 8) @ unit(g, 5, 8).T
    closest = sim.argmax(1)
    sel = select_other_prototypes(closest, 5, 400, gen(3), sim, 20)
    for row, c in zip(sel, closest, strict=True):
        assert set(row.tolist()) == set(range(5)) - {int(c)}


def test_nearest_selection_breaks_ties_by_index() -> None:
    """Tied similarities (30 copies of p*) rank in index order: P_sel never equals p*
    and is drawn among exactly the 20 copies that follow it."""
    g = gen(0)
    top = F.normalize(torch.ones(8, dtype=torch.float64), dim=0)
    others = unit(g, 34, 8)
    protos = torch.cat([others[:4], top.expand(30, 8), others[4:]])
    sim = top.expand(16, 8) @ protos.T
    closest = sim.argmax(1)
    assert (closest == 4).all()
    sel = select_other_prototypes(closest, 64, 400, gen(1), sim, 20)
    for row in sel:
        assert set(row.tolist()) == set(range(5, 25))


def test_reference_psel_draws_among_exactly_the_20_nearest() -> None:
    """psel="reference" (the authors' code) uses the 20 nearest prototypes after p*."""
    g = gen(3)
    anchors, protos = unit(g, 8, 16), unit(g, 40, 16)
    out = hallucinate(anchors, protos, 400, 0.8, gen(4), psel="reference")
    rank = (anchors @ protos.T).argsort(dim=1, descending=True).argsort(dim=1)  # 0 = p*
    for row in rank.gather(1, out.selected):
        assert set(row.tolist()) == set(range(1, 21))


def test_hallucinate_paper_psel_draws_as_select_other_prototypes() -> None:
    """By default P_sel is the paper's draw over all P - 1 others, from the same stream."""
    g = gen(5)
    anchors, protos = unit(g, 6, 8), unit(g, 5, 8)
    out = hallucinate(anchors, protos, 30, 0.8, gen(6))
    assert torch.equal(out.selected, select_other_prototypes(out.closest, 5, 30, gen(6)))


def test_hallucinate_passes_its_t_star_and_t_c_modes_on() -> None:
    """t_star_mode and tc_sampling reach t_star() and sample_tc()."""
    g = gen(0)
    anchors, protos = unit(g, 16, 3), unit(g, 4, 3)  # sparse: κ + cos Ω < 0 occurs
    ref = hallucinate(anchors, protos, 40, 0.8, gen(8), t_star_mode="reference")
    k = F.normalize(anchors, dim=-1)
    want = t_star(k, protos[ref.closest], protos[ref.selected], mode="reference")
    torch.testing.assert_close(ref.t_star, want)
    paper = t_star(k, protos[ref.closest], protos[ref.selected])
    assert (ref.t_star < 0).any() and (paper >= 0).all()  # the modes differ on this data
    fixed = hallucinate(anchors, protos, 40, 0.8, gen(8), tc_sampling="fixed")
    torch.testing.assert_close(fixed.t_c, (fixed.t_star - 0.01).clamp(min=0.0))


def _authors_t_star(k: list[float], p0: list[float], ps: list[float]) -> float:
    """The authors' generate_positives_using_mixup, one triple, in plain Python floats."""

    def dot(x: list[float], y: list[float]) -> float:
        return sum(a * b for a, b in zip(x, y, strict=True))

    kappa = (1.0 - dot(ps, p0)) / (dot(k, p0) - dot(k, ps) + 1e-8)
    omega = math.acos(min(max(dot(k, ps), -1.0), 1.0))
    theta = math.atan(math.sin(omega) / (kappa + math.cos(omega) + 1e-8))
    return theta / (omega + 1e-8)


def test_reference_t_star_is_the_authors_formula_with_its_epsilons() -> None:
    """mode="reference" reproduces the authors' expression including its 1e-8 terms:
    random triples, an exactly equidistant anchor, a nearly identical k and P_sel, and
    a k·P_sel that rounds below -1 (clamped before arccos)."""
    g = gen(9)
    k, p0, ps = unit(g, 50, 6), unit(g, 50, 6), unit(g, 50, 6)
    e = torch.eye(5, dtype=torch.float64)
    equidistant = (F.normalize(e[0] + e[1] + e[2], dim=0), e[0], e[1])
    near = (e[0], F.normalize(e[0] + 1e-8 * e[2], dim=0), F.normalize(e[0] + 2e-8 * e[1], dim=0))
    v = [-1.3985953953708767, 0.4033468476292993, 0.8380263329976598, -0.7192575784693592]
    kv = F.normalize(torch.tensor([*v, -0.40334352493217457], dtype=torch.float64), dim=0)
    below = (kv, F.normalize(kv + e[1], dim=0), -kv)
    assert float(kv @ -kv) < -1.0  # rounds below -1
    cases = [(k[i], p0[i], ps[i]) for i in range(50)]
    cases += [tuple(F.pad(x, (0, 1)) for x in c) for c in (equidistant, near, below)]
    for kk, pp0, pps in cases:
        got = t_star(kk[None], pp0[None], pps[None, None], mode="reference").item()
        want = _authors_t_star(kk.tolist(), pp0.tolist(), pps.tolist())
        assert got == pytest.approx(want, rel=1e-9, abs=1e-300)


def test_reference_t_star_replaces_a_non_finite_value_by_zero() -> None:
    """The guard of mode="reference": a non-finite t* (here from a NaN input) becomes 0."""
    e = torch.eye(3, dtype=torch.float64)
    ps = torch.full((1, 1, 3), float("nan"), dtype=torch.float64)
    assert t_star(e[:1], e[1:2], ps, mode="reference").item() == 0.0


def test_t_star_stays_at_most_one_for_nearly_duplicate_prototypes() -> None:
    """θ0 / Ω can round above 1 when P_sel ≈ p*; t* is clamped to [0, 1]."""
    g = gen(10)
    k, p0 = unit(g, 4000, 8), unit(g, 4000, 8)
    ps = F.normalize(p0 + 1e-6 * torch.randn(4000, 8, generator=g, dtype=torch.float64), dim=-1)
    closer = ((k * p0).sum(-1) >= (k * ps).sum(-1)).unsqueeze(-1)
    p0, ps = torch.where(closer, p0, ps), torch.where(closer, ps, p0)
    t = t_star(k.float(), p0.float(), ps.float().unsqueeze(1))
    assert (t >= 0).all() and (t <= 1).all()
    assert (t == 1).sum() > 100  # the clamp is active here


def test_t_star_is_zero_when_p_star_is_not_the_closest() -> None:
    """a = k·(p* - P_sel) < 0: k is already nearer P_sel, t* = 0 (not atan2's π / Ω)."""
    e = torch.eye(3, dtype=torch.float64)
    ps = F.normalize(e[0] + e[1], dim=0)  # 45° from k = e0; p* = e1 at 90°
    assert t_star(e[:1], e[1:2], ps[None, None]).item() == 0.0


def test_t_star_is_zero_for_an_exactly_equidistant_anchor() -> None:
    """k·p* == k·P_sel exactly gives t* = 0, even when P_sel is so close to p* that the
    sign of u·d is decided by rounding (float32)."""
    g = gen(11)
    x = 0.9 * torch.rand(2000, 1, generator=g, dtype=torch.float64)
    yz = unit(g, 2000, 7)
    yz2 = F.normalize(yz + 1e-6 * torch.randn(2000, 7, generator=g, dtype=torch.float64), dim=-1)
    r = torch.sqrt(1 - x**2)
    p0, ps = torch.cat([x, r * yz], -1).float(), torch.cat([x, r * yz2], -1).float()
    k = torch.zeros(2000, 8)
    k[:, 0] = 1.0
    assert torch.equal((k * p0).sum(-1), (k * ps).sum(-1))
    assert (t_star(k, p0, ps.unsqueeze(1)) == 0).all()


def test_sample_tc_defaults_to_the_paper_and_accepts_the_lambda_bounds() -> None:
    """mode defaults to "paper"; λ = 0 (t_c = 0) and λ = 1 are valid, 1.01 and -0.01 not."""
    ts = torch.rand(4, 6, generator=gen(0), dtype=torch.float64)
    torch.testing.assert_close(sample_tc(ts, 0.5, gen(1)), sample_tc(ts, 0.5, gen(1), "paper"))
    assert torch.equal(sample_tc(ts, 0.0, gen(1)), torch.zeros_like(ts))
    assert (sample_tc(ts, 1.0, gen(1)) <= ts).all()
    for lam in (1.01, -0.01):
        with pytest.raises(ValueError, match="lambda"):
            sample_tc(ts, lam, gen(1))


def test_sample_tc_is_exact_in_the_data_dtype() -> None:
    """t_c is computed in t*'s dtype: float64 equals λ u t* in float64 exactly, and a
    bfloat16 t* gives bfloat16 t_c (also for slerp_towards)."""
    ts = torch.rand(4, 6, generator=gen(0), dtype=torch.float64)
    u = torch.rand(ts.shape, generator=gen(1)).double()
    assert torch.equal(sample_tc(ts, 0.7, gen(1)), 0.7 * u * ts)
    assert torch.equal(sample_tc(ts, 0.7, gen(1), "reference"), (1.0 - 0.7 * u) * ts)
    half = ts.to(torch.bfloat16)
    assert sample_tc(half, 0.7, gen(1)).dtype == torch.bfloat16
    a = unit(gen(2), 3, 8).to(torch.bfloat16)
    assert slerp_towards(a, a.flip(0), 5, 0.5, gen(3)).dtype == torch.bfloat16


def test_slerp_towards_accepts_lambda_zero_and_one_only_in_range() -> None:
    """λ = 0 gives h = k; λ = 1 is allowed; λ outside [0, 1] raises."""
    g = gen(4)
    k, q = unit(g, 3, 8), unit(g, 3, 8)
    torch.testing.assert_close(slerp_towards(k, q, 4, 0.0, gen(5)), k[:, None].expand(3, 4, 8))
    assert slerp_towards(k, q, 4, 1.0, gen(5)).shape == (3, 4, 8)
    for lam in (1.5, -0.1):
        with pytest.raises(ValueError, match="lambda"):
            slerp_towards(k, q, 4, lam, gen(5))


def test_halp_loss_averages_over_a_single_kept_positive() -> None:
    """G = 1: the loss is -q·h / τ of that one positive (clamp(min=1) only guards G = 0)."""
    g = gen(6)
    q, h = unit(g, 2, 4), unit(g, 2, 3, 4)
    keep = torch.zeros(2, 3, dtype=torch.bool)
    keep[1, 2] = True
    want = -float(q[1] @ h[1, 2]) / 0.07
    assert halp_loss(q, h, keep, tau=0.07).item() == pytest.approx(want, rel=1e-12)


def _poshal_inputs(device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = gen(12)
    anchors, protos = unit(g, 6, 8, dtype=torch.float32), unit(g, 5, 8, dtype=torch.float32)
    ts = torch.rand(6, 7, generator=g)
    return anchors.to(device), protos.to(device), ts.to(device)


def _poshal_calls(
    anchors: torch.Tensor, protos: torch.Tensor, ts: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Every PosHal function that draws, each with its own CPU generator."""
    sim = anchors @ protos.T
    closest = sim.argmax(1)
    out = {
        "select": select_other_prototypes(closest, 5, 7, gen(1)),
        "select_nearest": select_other_prototypes(closest, 5, 7, gen(1), sim, 2),
        "tc_paper": sample_tc(ts, 0.5, gen(2)),
        "tc_reference": sample_tc(ts, 0.5, gen(2), "reference"),
        "towards": slerp_towards(anchors, anchors.flip(0), 7, 0.5, gen(3)),
    }
    for psel in ("paper", "reference"):
        h = hallucinate(anchors, protos, 7, 0.8, gen(4), psel=psel)  # type: ignore[arg-type]
        out[f"h_{psel}"], out[f"selected_{psel}"] = h.h, h.selected
    return out


def test_poshal_draws_come_only_from_the_generator() -> None:
    """Reseeding torch's global generator changes nothing: every draw uses ``generator``."""
    torch.manual_seed(0)
    first = _poshal_calls(*_poshal_inputs())
    torch.manual_seed(1)
    second = _poshal_calls(*_poshal_inputs())
    for name, value in first.items():
        assert torch.equal(value, second[name]), name


def test_poshal_draws_on_the_generator_device_whatever_the_default_device() -> None:
    """Draws are made on the generator's device and moved to the data's. Under another
    default device (meta stands in for CUDA here) the CPU results are unchanged."""
    inputs = _poshal_inputs()
    want = _poshal_calls(*inputs)
    with torch.device("meta"):
        got = _poshal_calls(*inputs)
    for name, value in want.items():
        assert got[name].device.type == "cpu" and torch.equal(got[name], value), name


def test_poshal_moves_the_draws_to_the_data_device() -> None:
    """With the data on another device than the generator (meta stands in for CUDA),
    every result lives on the data's device."""
    for name, value in _poshal_calls(*_poshal_inputs("meta")).items():
        assert value.device.type == "meta", name


# ---------------------------------------------------------------- MoCo (moco.py)


def test_info_nce_is_unchanged_under_another_default_device() -> None:
    """The InfoNCE target is made on the queries' device, not the default one."""
    g = gen(13)
    q, k, queue = (unit(g, *s, dtype=torch.float32) for s in ((4, 8), (4, 8), (6, 8)))
    want, _ = info_nce(q, k, queue, 0.1)
    with torch.device("meta"):
        got, _ = info_nce(q, k, queue, 0.1)
    assert got.device.type == "cpu" and torch.equal(got, want)


def test_key_queue_initialisation_comes_from_its_generator() -> None:
    """The initial (random, unit) keys depend only on the generator passed."""
    torch.manual_seed(0)
    a = KeyQueue(6, 4, gen(14))
    torch.manual_seed(1)
    b = KeyQueue(6, 4, gen(14))
    assert torch.equal(a.keys, b.keys)


def test_key_queue_counts_enqueued_keys_exactly_as_a_long() -> None:
    """ptr and seen are long buffers: the count stays exact past 2^24 keys (float32's
    limit), and seen_count() starts at 0 and follows every enqueue."""
    queue = KeyQueue(4, 2, gen(15))
    assert queue.ptr.dtype == queue.seen.dtype == torch.long
    assert queue.seen_count() == 0
    queue.enqueue(torch.ones(3, 2))
    queue.enqueue(torch.ones(2, 2))
    assert queue.seen_count() == 5 and int(queue.seen) == 5
    state = queue.state_dict()
    state["seen"] = torch.tensor(2**24, dtype=torch.long)
    queue.load_state_dict(state)
    queue.enqueue(torch.ones(1, 2))
    assert int(queue.seen) == 2**24 + 1 and queue.seen_count() == 2**24 + 1


def test_key_queue_accepts_exactly_its_size_and_no_more() -> None:
    """enqueue() and recent() take up to L keys; L + 1 raises."""
    queue = KeyQueue(4, 2, gen(16))
    keys = torch.arange(8.0).reshape(4, 2)
    queue.enqueue(keys)
    assert torch.equal(queue.recent(4), keys)
    with pytest.raises(ValueError, match="cannot enqueue 5"):
        queue.enqueue(torch.ones(5, 2))
    with pytest.raises(ValueError, match="asked for 5"):
        queue.recent(5)


def test_key_queue_restores_from_a_state_dict() -> None:
    """load_state_dict() restores keys, pointer and count, and seen_count() follows."""
    source = KeyQueue(5, 2, gen(17))
    source.enqueue(torch.arange(8.0).reshape(4, 2))
    source.enqueue(torch.arange(6.0).reshape(3, 2))
    target = KeyQueue(5, 2, gen(18))
    assert target.seen_count() == 0
    target.load_state_dict(source.state_dict())
    assert torch.equal(target.keys, source.keys) and int(target.ptr) == 2
    assert target.seen_count() == 7
    target.enqueue(torch.zeros(3, 2))
    assert target.seen_count() == 10 and int(target.seen) == 10


def test_key_queue_is_unchanged_under_another_default_device() -> None:
    """enqueue() and recent() index on the queue's device, not the default one."""
    keys = torch.arange(12.0).reshape(6, 2)
    want = KeyQueue(4, 2, gen(19))
    want.enqueue(keys[:3])
    got = KeyQueue(4, 2, gen(19))
    with torch.device("meta"):
        got.enqueue(keys[:3])
        recent = got.recent(3)
    assert torch.equal(got.keys, want.keys) and int(got.ptr) == 3
    assert torch.equal(recent, want.recent(3))


class _Reads(torch.Tensor):
    """A buffer that counts how often it is read on the host (``bool()`` / ``int()``)."""

    reads = 0

    def __bool__(self) -> bool:
        _Reads.reads += 1
        return bool(self.as_subclass(torch.Tensor))

    def __int__(self) -> int:
        _Reads.reads += 1
        return int(self.as_subclass(torch.Tensor))


def test_key_queue_reads_its_device_count_once_after_a_load() -> None:
    """seen_count() reads the ``seen`` buffer from the device once after a checkpoint
    load, then tracks enqueues on the host (no device sync per step)."""
    queue = KeyQueue(16, 4, gen(0))
    queue.enqueue(unit(gen(1), 16, 4, dtype=torch.float32))
    queue.load_state_dict(queue.state_dict())
    queue.seen = queue.seen.as_subclass(_Reads)
    _Reads.reads = 0
    for _ in range(3):
        queue.enqueue(torch.ones(1, 4))
        assert queue.seen_count() == int(queue.seen.as_subclass(torch.Tensor))
    assert _Reads.reads == 1


def test_info_nce_objective_logs_its_loss_and_the_positive_accuracy() -> None:
    """InfoNCE logs loss_cl_<m> and acc_<m>: the fraction of queries whose positive
    (column 0) has the largest logit; the loss is the sum over modalities."""
    g = gen(40)
    q = unit(g, 4, 8, dtype=torch.float32)
    k = q.clone()
    k[3] = -k[3]  # query 3's positive is worse than its copy in the queue
    queue = torch.cat([q[3:], unit(g, 3, 8, dtype=torch.float32)])
    objective = InfoNCE(0.1)
    emb = Embeddings(
        {"joint": q, "bone": q}, {"joint": k, "bone": k}, {"joint": queue, "bone": queue}, {}
    )
    ctx = StepContext(epoch=0, step=0, weight=1.0)
    total = objective.loss(emb, ctx)
    want, logits = info_nce(q, k, queue, 0.1)
    assert logits.argmax(dim=1).tolist() == [0, 0, 0, 1]
    assert float(ctx.terms["acc_joint"]) == 0.75 and float(ctx.terms["acc_bone"]) == 0.75
    assert float(ctx.terms["loss_cl_joint"]) == pytest.approx(float(want))
    torch.testing.assert_close(total, 2 * want)


def test_momentum_update_refuses_mismatched_networks() -> None:
    """The online and target networks must have the same parameters (zip strict)."""
    online = torch.nn.Linear(3, 2)
    target = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))
    with pytest.raises(ValueError):
        momentum_update(online, target, 0.9)


# ---------------------------------------------------------------- CMD (cmd.py)


def test_cmd_loss_emits_no_warning() -> None:
    """Softmax and log-softmax name their dimension (no implicit-dim deprecation)."""
    g = gen(20)
    mods = ("joint", "motion")
    q = {m: unit(g, 3, 8) for m in mods}
    k = {m: unit(g, 3, 8) for m in mods}
    queues = {m: unit(g, 12, 8) for m in mods}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.isfinite(cmd_loss(q, k, queues, 5, 0.05, 0.1))


def test_cmd_loss_of_one_modality_is_an_empty_sum() -> None:
    """cmd_loss sums over ordered pairs of distinct modalities: one modality has none,
    so the loss is 0 in the queries' dtype (catches the sum started from another
    modality's queries, which needs a second modality, and a modality taught by itself)."""
    g = gen(22)
    q, k, queue = unit(g, 3, 8), unit(g, 3, 8), unit(g, 12, 8)
    value = cmd_loss({"joint": q}, {"joint": k}, {"joint": queue}, 5, 0.05, 0.1)
    assert value.dtype == torch.float64 and value.shape == () and float(value) == 0.0


def test_cmd_objective_logs_its_loss_and_needs_two_modalities() -> None:
    """The registered "cmd" objective: built for >= 2 modalities (ConfigError for one),
    with the configured top-k and temperatures, and logs loss_cmd."""
    config = PretrainConfig()
    with pytest.raises(ConfigError, match="at least two modalities"):
        build_objective("cmd", config, ("joint",), 8)
    objective = build_objective("cmd", config, ("joint", "motion"), 8)
    assert isinstance(objective, CrossModalDistillation)
    assert (objective.topk, objective.teacher_temperature, objective.student_temperature) == (
        config.cmd.topk,
        config.cmd.teacher_temperature,
        config.cmd.student_temperature,
    )
    g = gen(21)
    mods = ("joint", "motion")
    emb = Embeddings(
        queries={m: unit(g, 3, 8) for m in mods},
        keys={m: unit(g, 3, 8) for m in mods},
        negatives={m: unit(g, 10, 8) for m in mods},
        banks={},
    )
    ctx = StepContext(epoch=0, step=0, weight=1.0)
    value = objective.loss(emb, ctx)
    assert float(ctx.terms["loss_cmd"]) == pytest.approx(float(value))


# ---------------------------------------------------------------- k-means (prototypes.py)


def _reference_kmeanspp(x: torch.Tensor, k: int, u: torch.Tensor) -> torch.Tensor:
    """Greedy k-means++ of one item, written from the docstring with Python loops.

    x (n, d) unit float64 points, u (k, L) the uniforms; returns the (k, d) seeds.
    """
    n = x.shape[0]

    def chord2(i: int) -> list[float]:
        return [max(2.0 - 2.0 * float(x[i] @ x[m]), 0.0) for m in range(n)]

    chosen = [min(int(float(u[0, 0]) * n), n - 1)]
    min_d2 = chord2(chosen[0])
    for j in range(1, k):
        w = [v if v > 1e-6 else 0.0 for v in min_d2]
        if sum(w) <= 0:
            w = [1.0] * n
        cdf = torch.tensor(w, dtype=torch.float64).cumsum(0).tolist()
        best_sum, best = math.inf, (0, min_d2)
        for target in (float(t) * cdf[-1] for t in u[j]):
            cand = min(sum(c <= target for c in cdf), n - 1)  # searchsorted, right=True
            new = [min(a, b) for a, b in zip(min_d2, chord2(cand), strict=True)]
            if sum(new) < best_sum:
                best_sum, best = sum(new), (cand, new)
        chosen.append(best[0])
        min_d2 = best[1]
    return x[chosen]


def test_kmeanspp_seeding_matches_a_reference_implementation() -> None:
    """init="kmeans++" (iters=0 returns the seeds): 2 + ⌊ln K⌋ candidates by inverse CDF
    on the squared chordal distance, zero weight within 1e-6 of a centre, uniform weights
    when every point is covered, the candidate lowering the total most wins."""
    g = gen(22)
    spread = unit(g, 7, 5)
    tight = F.normalize(unit(g, 1, 5) + 0.05 * torch.randn(9, 5, generator=g, dtype=torch.float64))
    duplicates = unit(g, 3, 5).repeat(3, 1)  # 3 distinct points, 4 clusters
    for x, k in ((spread, 4), (tight, 5), (duplicates, 4), (spread[:5], 5)):
        for seed in range(6):
            trials = 2 + int(math.log(k))
            u = torch.rand((1, k, trials), generator=gen(seed), dtype=torch.float64)[0]
            got = spherical_kmeans(x, k, gen(seed), iters=0)
            torch.testing.assert_close(got, _reference_kmeanspp(x, k, u), rtol=0, atol=1e-12)


def test_kmeanspp_seeds_are_distinct_points_when_they_can_be() -> None:
    """With n = K distinct points (here 60° apart, squared chord 1), the seeds are all n."""
    e = torch.eye(3, dtype=torch.float64)
    x = torch.stack([e[0], 0.5 * e[0] + math.sqrt(0.75) * e[1], e[2]])
    for seed in range(8):
        c = spherical_kmeans(x, 3, gen(seed), iters=0)
        assert sorted((c @ x.T).argmax(1).tolist()) == [0, 1, 2]


def test_random_init_is_a_permutation_of_float64_uniforms() -> None:
    """init="random": the first K of the argsort of float64 uniforms from the generator."""
    x = unit(gen(23), 2, 9, 4)
    idx = torch.rand((2, 9), generator=gen(24), dtype=torch.float64).argsort(dim=-1)[:, :3]
    want = torch.stack([x[i, idx[i]] for i in range(2)])
    got = spherical_kmeans(x, 3, gen(24), iters=0, init="random")
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_seeding_uniforms_come_in_the_data_dtype() -> None:
    """_uniform: the generator's float64 draws, returned in the data's dtype (documented;
    catches the cast dropped, which leaves them float64 whatever the data)."""
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        got = _uniform((4, 5), gen(26), torch.zeros(1, dtype=dtype))
        want = torch.rand((4, 5), generator=gen(26), dtype=torch.float64).to(dtype)
        assert got.dtype == dtype and torch.equal(got, want)


def test_kmeanspp_indices_stay_in_range_when_a_draw_rounds_up_to_one() -> None:
    """A draw u < 1 can round to 1.0 in the data's dtype (bfloat16: about 1 in 512), which
    makes floor(u n) and the inverse-CDF search return n; both are clamped to n - 1 (the
    last point). Catches either clamp loosened: indexing point n raises."""
    b, n, k = 2000, 4, 3
    x = unit(gen(27), b, n, 3, dtype=torch.float32).to(torch.bfloat16)
    trials = 2 + int(math.log(k))
    u = torch.rand((b, k, trials), generator=gen(28), dtype=torch.float64).to(torch.bfloat16)
    assert (u[:, 0, 0] == 1).any() and (u[:, 1:] == 1).any()  # both cases occur
    seeds = spherical_kmeans(x, k, gen(28), iters=0)  # (b, K, 3), points of each item
    cos = seeds.float() @ F.normalize(x.float(), dim=-1).transpose(1, 2)  # (b, K, n)
    assert seeds.shape == (b, k, 3) and bool((cos.amax(-1) > 0.99).all())


def test_a_cluster_whose_members_cancel_keeps_its_centroid() -> None:
    """A Lloyd step keeps the old centroid when the member sum has norm <= eps; here two
    members sum to (0, eps, 0) exactly (float64), the boundary itself. Pins the
    convention at the threshold: catches the comparison made strict (the sum's direction
    (0, 1, 0) would replace the centroid)."""
    x = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 2.0**-52, 0.0]], dtype=torch.float64)
    assert float((x[0] + x[1]).norm()) == torch.finfo(torch.float64).eps
    for seed in range(4):  # either point may seed the only cluster
        got = spherical_kmeans(x, 1, gen(seed), iters=1)
        assert torch.equal(got, x[0:1]) or torch.equal(got, x[1:2])


def test_spherical_kmeans_argument_checks() -> None:
    """Shapes, K, iters and restarts are checked; n == K and iters = 0 are valid."""
    x = unit(gen(25), 4, 3)
    for bad in (x[0], x[None, None]):
        with pytest.raises(ValueError, match="must be"):
            spherical_kmeans(bad, 2, gen(0))
    with pytest.raises(ValueError, match="num_clusters must be >= 1"):
        spherical_kmeans(x, 0, gen(0))
    assert spherical_kmeans(x, 4, gen(0)).shape == (4, 3)
    with pytest.raises(ValueError, match="iters must be"):
        spherical_kmeans(x, 2, gen(0), iters=-1)
    with pytest.raises(ValueError, match="restarts must be"):
        spherical_kmeans(x, 2, gen(0), restarts=0)
    with pytest.raises(ValueError, match="restarts must be"):
        spherical_kmeans(x, 2, gen(0), init=x[:2], restarts=2)
    with pytest.raises(ValueError, match=r"shape \(2, 3\), got \(3, 3\)"):
        spherical_kmeans(x, 2, gen(0), init=x[:3])
    with pytest.raises(ValueError, match=r"shape \(1, 2, 3\), got \(1, 3, 3\)"):
        spherical_kmeans(x[None], 2, gen(0), init=x[None, :3])


def test_init_tensor_is_normalised_cast_and_moved_to_the_data() -> None:
    """A tensor init is returned as unit vectors in x's dtype and device (iters = 0)."""
    x = unit(gen(26), 6, 3, dtype=torch.float32)
    init = 3.0 * x[:2].double()
    c = spherical_kmeans(x, 2, gen(0), init=init, iters=0)
    assert c.dtype == torch.float32
    torch.testing.assert_close(c, x[:2])
    on_meta = spherical_kmeans(x.to("meta"), 2, gen(0), init=init, iters=0)
    assert on_meta.device.type == "meta"
    for init_mode in ("kmeans++", "random"):
        seeds = spherical_kmeans(x.to("meta"), 2, gen(0), init=init_mode, iters=0)  # type: ignore[arg-type]
        assert seeds.device.type == "meta", init_mode


def test_restarts_return_exactly_the_best_of_the_independent_runs() -> None:
    """restarts=R (R >= 2) runs R seedings as one batch and returns, per item, the run
    with the lowest mean geodesic distance (here not the first run); batched input keeps
    its shape."""
    x = unit(gen(27), 2, 40, 6)
    exact = {"rtol": 0.0, "atol": 1e-12}
    for restarts, seed in ((3, 28), (2, 29)):
        runs = spherical_kmeans(x.repeat_interleave(restarts, dim=0), 4, gen(seed))
        runs = runs.unflatten(0, (2, restarts))
        best = kmeans_objective(x.unsqueeze(1), runs).argmin(dim=1)
        assert best.tolist() != [0, 0]
        got = spherical_kmeans(x, 4, gen(seed), restarts=restarts)
        torch.testing.assert_close(got, runs[torch.arange(2), best], **exact)
        one = spherical_kmeans(x[0], 4, gen(seed), restarts=restarts)
        torch.testing.assert_close(one, runs[0, best[0]], **exact)
    assert spherical_kmeans(x[:1], 4, gen(28), restarts=3).shape == (1, 4, 6)


def test_lloyd_iterations_stop_at_tol_and_after_iters(monkeypatch: pytest.MonkeyPatch) -> None:
    """At most ``iters`` (default 50) Lloyd steps; stop once no centroid moved by more
    than ``tol`` (a cosine distance), inclusive: tol = 0 stops at an exact fixed point."""
    from halp.objectives import prototypes

    steps = []
    original = prototypes._lloyd_step

    def counting(xb: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        steps.append(1)
        return original(xb, c)

    monkeypatch.setattr(prototypes, "_lloyd_step", counting)
    g = gen(29)
    noise = 0.05 * torch.randn(30, 8, generator=g, dtype=torch.float64)
    x = F.normalize(unit(g, 3, 8).repeat(10, 1) + noise)
    spherical_kmeans(x, 3, gen(30), init=x[:3])
    assert 2 <= len(steps) <= 6
    steps.clear()
    spherical_kmeans(x, 3, gen(30), init=x[:3], tol=-1.0)
    assert len(steps) == 50
    steps.clear()
    axes = torch.eye(3, dtype=torch.float64)  # members of cluster j are all e_j: shift 0
    spherical_kmeans(axes.repeat(4, 1), 3, gen(30), init=axes, tol=0.0)
    assert len(steps) == 1


def _reseeded(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """One Lloyd step's empty clusters, by the docstring: in index order, each takes the
    point least similar to all centroids so far (the old ones and those just re-seeded)."""
    nearest = (x @ c.T).amax(dim=1)
    assign = (x @ c.T).argmax(dim=1)
    out = c.clone()
    for j in range(c.shape[0]):
        if (assign == j).any():
            out[j] = F.normalize(x[assign == j].sum(0), dim=0)
    for j in [j for j in range(c.shape[0]) if not (assign == j).any()]:
        point = x[nearest.argmin()]
        out[j] = point
        nearest = torch.maximum(nearest, x @ point)
    return out


def test_empty_clusters_are_filled_in_index_order_per_item() -> None:
    """Many empty clusters are re-seeded in index order by farthest-first traversal, each
    batch item on its own (one item with 30 empty clusters, one with none)."""
    g = gen(31)
    e0 = torch.eye(3, dtype=torch.float64)[0]
    x = F.normalize(3.0 * e0 + torch.randn(2, 64, 3, generator=g, dtype=torch.float64), dim=-1)
    far = F.normalize(-3.0 * e0 + 0.5 * torch.randn(30, 3, generator=g, dtype=torch.float64))
    c = torch.stack([torch.cat([x[0, :4], far]), x[1, :34]])  # item 0: clusters 4..33 empty
    assert ((x[0] @ c[0].T).argmax(1) < 4).all()
    got = spherical_kmeans(x, 34, gen(0), init=c, iters=1)
    for i in range(2):
        torch.testing.assert_close(got[i], _reseeded(x[i], c[i]), rtol=0, atol=1e-12)


def test_kmeans_objective_of_an_antipodal_point_is_pi() -> None:
    """The similarity is clamped into [-1, 1] before arccos: a dot product rounding below
    -1 gives π, not NaN."""
    v = torch.tensor([[0.3703935333738153, 1.4565026067903366, 0.9398099079535257,
                       0.7748488177844168, 0.19186942747902466]], dtype=torch.float64)  # fmt: skip
    assert float(F.normalize(-v) @ F.normalize(v).T) < -1.0  # rounds below -1
    assert kmeans_objective(-v, v).item() == pytest.approx(math.pi)


def test_kmeans_is_unchanged_under_another_default_device() -> None:
    """Seeding draws on the generator's device and every index is made on the data's:
    under another default device (meta stands in for CUDA) the results are unchanged."""
    x = unit(gen(32), 2, 40, 3, dtype=torch.float32)
    far = -F.normalize(x[0].sum(0), dim=0)
    init = torch.stack([torch.cat([x[0, :2], far.expand(3, 3)]), x[1, :5]])

    def calls() -> list[torch.Tensor]:
        return [
            spherical_kmeans(x, 5, gen(33)),
            spherical_kmeans(x, 5, gen(33), init="random"),
            spherical_kmeans(x, 5, gen(33), restarts=2),
            spherical_kmeans(x, 5, gen(33), init=init, iters=1),
        ]

    want = calls()
    with torch.device("meta"):
        got = calls()
    for a, b in zip(got, want, strict=True):
        assert a.device.type == "cpu" and torch.equal(a, b)


def _riemannian_kmeans(
    x: torch.Tensor, k: int, py_seed: int, np_seed: int, sphere_dim: int = 0, **kw: object
):
    import random

    import numpy as np
    from geomstats.geometry.hypersphere import Hypersphere
    from geomstats.learning.kmeans import RiemannianKMeans

    options = {"init": "kmeans++", "tol": 1e-3, "max_iter": 100, **kw}
    space = Hypersphere(dim=sphere_dim or x.shape[1] - 1)
    kmeans = RiemannianKMeans(space, n_clusters=k, **options)
    random.seed(py_seed)
    np.random.seed(np_seed)  # noqa: NPY002
    kmeans.fit(F.normalize(x).numpy())
    return F.normalize(torch.as_tensor(np.asarray(kmeans.cluster_centers_)), dim=-1)


def test_geomstats_wrapper_is_riemannian_kmeans_with_the_authors_settings() -> None:
    """geomstats_kmeans = RiemannianKMeans(init="kmeans++", tol=1e-3, max_iter=100, or the
    tol / max_iter passed) on the normalised points, ``random`` seeded with the seed and
    numpy with the seed mod 2^32; n == K works, n < K raises."""
    pytest.importorskip("geomstats")
    x = unit(gen(0), 30, 4)
    exact = {"rtol": 0.0, "atol": 1e-12}
    torch.testing.assert_close(
        geomstats_kmeans(2.0 * x, 3, 5), _riemannian_kmeans(x, 3, 5, 5), **exact
    )
    got = geomstats_kmeans(x, 3, 5, tol=0.5, max_iter=2)
    torch.testing.assert_close(got, _riemannian_kmeans(x, 3, 5, 5, tol=0.5, max_iter=2), **exact)
    # with a tol never met, max_iter alone decides where the fit stops (1 != 100 here)
    one = _riemannian_kmeans(x, 3, 5, 5, tol=1e-300, max_iter=1)
    assert not torch.allclose(one, _riemannian_kmeans(x, 3, 5, 5, tol=1e-300, max_iter=100))
    torch.testing.assert_close(geomstats_kmeans(x, 3, 5, tol=1e-300, max_iter=1), one, **exact)
    # the sphere's dimension sets the stopping tolerance of geomstats' Frechet mean
    # (epsilon * dim): 5-D points need Hypersphere(dim=4); on these, 3 or 6 moves the centres
    x5 = unit(gen(0), 30, 5)
    want = _riemannian_kmeans(x5, 3, 5, 5)
    for other in (3, 6):
        assert not torch.allclose(want, _riemannian_kmeans(x5, 3, 5, 5, sphere_dim=other))
    torch.testing.assert_close(geomstats_kmeans(x5, 3, 5), want, **exact)
    # the defaults are the authors' run's settings (a change would go unseen: on this data
    # the fit converges long before 100 iterations)
    defaults = {k: v.default for k, v in inspect.signature(geomstats_kmeans).parameters.items()}
    assert (defaults["tol"], defaults["max_iter"], defaults["init"]) == (1e-3, 100, "kmeans++")
    seed = 2**32 + 100
    torch.testing.assert_close(
        geomstats_kmeans(x, 3, seed), _riemannian_kmeans(x, 3, seed, 100), **exact
    )
    assert geomstats_kmeans(x[:3], 3, seed=0).shape == (3, 4)
    with pytest.raises(ValueError, match="at least num_clusters=3"):
        geomstats_kmeans(x[:2], 3, seed=0)


def test_compute_prototypes_detaches_and_seeds_geomstats_from_the_generator() -> None:
    """compute_prototypes returns detached prototypes; the geomstats backend's seed is
    the integer torch.randint(2^31 - 1) drawn from the generator."""
    x = unit(gen(1), 30, 4).requires_grad_()
    assert not compute_prototypes(x, 3, gen(2)).requires_grad
    pytest.importorskip("geomstats")
    seed = int(torch.randint(2**31 - 1, (), generator=gen(3)))
    want = geomstats_kmeans(x.detach(), 3, seed)
    torch.manual_seed(0)  # the global generator plays no part
    torch.testing.assert_close(compute_prototypes(x, 3, gen(3), backend="geomstats"), want)


# ---------------------------------------------------------------- HaLP objective (halp.py)


def _halp_options(*overrides: str) -> HalpConfig:
    keys = ["halp.num_prototypes=3", "halp.top_k=8", "moco.queue_size=16", *overrides]
    return load_config(PretrainConfig, None, keys).halp


def _full_queue(seed: int, size: int = 16, dim: int = 4) -> KeyQueue:
    queue = KeyQueue(size, dim, gen(seed))
    queue.enqueue(unit(gen(seed + 100), size, dim, dtype=torch.float32))
    return queue


def test_halp_host_mirrors_read_their_device_buffers_once_after_a_load() -> None:
    """Prototypes.ready and HaLP.keys_seen are read from the device once after a
    checkpoint load, then tracked on the host (no device sync per step)."""
    protos = Prototypes(3, 4)
    protos.load_state_dict(protos.state_dict())
    protos.ready = protos.ready.as_subclass(_Reads)
    _Reads.reads = 0
    assert [protos.is_ready() for _ in range(3)] == [False] * 3
    assert _Reads.reads == 1

    objective = HaLP(_halp_options("halp.warmup_samples=100"), 0.07, ("joint",), 4)
    objective.load_state_dict(objective.state_dict())
    objective.keys_seen = objective.keys_seen.as_subclass(_Reads)
    _Reads.reads = 0
    emb = Embeddings({"joint": unit(gen(1), 2, 4)}, {"joint": unit(gen(2), 2, 4)}, {}, {})
    ctx = StepContext(epoch=0, step=0, weight=1.0, generator=gen(3))
    for _ in range(3):
        assert objective.loss(emb, ctx) is None
        objective.after_enqueue(2, ctx)
    assert _Reads.reads == 1


def test_prototypes_start_unready_and_round_trip_through_a_state_dict() -> None:
    """Fresh prototypes are not ready (a bool buffer, False) and stay so through a
    save/load; refreshed ones come back ready with their centres."""
    fresh = Prototypes(3, 4)
    assert fresh.ready.dtype == torch.bool and not fresh.is_ready()
    copy = Prototypes(3, 4)
    copy.load_state_dict(fresh.state_dict())
    assert copy.is_ready() is False
    refresh_prototypes([fresh], [_full_queue(1)], _halp_options(), gen(4))
    assert fresh.is_ready() is True
    copy.load_state_dict(fresh.state_dict())
    assert copy.is_ready() is True and torch.equal(copy.centres, fresh.centres)


def test_refresh_skips_banks_not_yet_full_and_otherwise_needs_a_generator() -> None:
    """A bank that has seen fewer than top_k anchors is left alone (nothing is drawn);
    clustering a full one without a generator raises."""
    young = KeyQueue(16, 4, gen(5))
    young.enqueue(unit(gen(6), 7, 4, dtype=torch.float32))  # 7 < top_k = 8
    protos = Prototypes(3, 4)
    refresh_prototypes([protos], [young], _halp_options(), None)
    assert not protos.is_ready()
    with pytest.raises(ValueError, match="generator"):
        refresh_prototypes([protos], [_full_queue(2)], _halp_options(), None)


def test_refresh_uses_the_configured_backend_and_iterations() -> None:
    """kmeans_backend="torch" runs spherical_kmeans on the top_k newest anchors with
    kmeans_iters; "geomstats" runs compute_prototypes(backend="geomstats")."""
    queue = _full_queue(3)
    keys = queue.recent(8)
    for iters in (0, 2):
        protos = Prototypes(3, 4)
        refresh_prototypes([protos], [queue], _halp_options(f"halp.kmeans_iters={iters}"), gen(7))
        want = spherical_kmeans(keys[None], 3, gen(7), iters=iters)[0]
        assert torch.equal(protos.centres, want)
    pytest.importorskip("geomstats")
    protos = Prototypes(3, 4)
    refresh_prototypes([protos], [queue], _halp_options("halp.kmeans_backend=geomstats"), gen(8))
    want = compute_prototypes(keys, 3, gen(8), backend="geomstats")
    torch.testing.assert_close(protos.centres, want, rtol=0, atol=1e-6)


def _refresh_on_rank(rank: int, path: str, out: object) -> None:
    # This runs in a child forked from the pytest process. Once the parent has run a
    # tensor op on 2+ threads, libgomp's thread team exists there but not in the child,
    # and the child's first OpenMP parallel region (the k-means' max) waits forever at
    # the team barrier: the test hung whenever an earlier test of the session had used
    # the thread pool (any full-file run), and passed alone. One intra-op thread keeps
    # the child out of OpenMP regions altogether.
    torch.set_num_threads(1)
    try:
        torch.distributed.init_process_group(
            "gloo", init_method=f"file://{path}", rank=rank, world_size=2
        )
        protos = Prototypes(3, 4)
        refresh_prototypes([protos], [_full_queue(10 + rank)], _halp_options(), gen(rank))
        out.put((rank, protos.centres.tolist()))  # type: ignore[attr-defined]
    except Exception as error:  # reported at once: the other process may wait forever
        out.put((rank, f"process {rank} failed: {error!r}"))  # type: ignore[attr-defined]
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_refresh_gives_every_process_the_prototypes_of_process_0(tmp_path: Path) -> None:
    """Under torch.distributed (2 gloo processes with different banks and generators)
    both processes end with the prototypes process 0 computed.

    Catches a missing broadcast (each process keeps its own centres) and a broadcast
    from another source rank. The processes are forked, not spawned, so that they run
    the module benchmarks/mutation.py serves to the pytest process (a spawned
    interpreter would import the file from disk); they are daemons, terminated on any
    failure, so a hang fails this test instead of blocking the session at exit.
    """
    import multiprocessing
    import queue

    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_refresh_on_rank, args=(r, str(tmp_path / "rdv"), out), daemon=True)
        for r in range(2)
    ]
    try:
        for p in procs:
            p.start()
        got: dict[int, object] = {}
        while len(got) < len(procs):
            try:
                rank, result = out.get(timeout=120)
            except queue.Empty:
                codes = [p.exitcode for p in procs]
                pytest.fail(f"a process sent no prototypes in 120 s (exit codes {codes})")
            assert not isinstance(result, str), result
            got[rank] = result
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    want = spherical_kmeans(_full_queue(10).recent(8)[None], 3, gen(0))[0]
    assert got[0] == want.tolist() and got[1] == want.tolist()


def test_halp_term_needs_a_generator_and_passes_its_options_to_poshal() -> None:
    """halp_term = halp_loss of hallucinate(...) called with the configured t_c sampling,
    t* mode and P_sel mode; its diagnostics are the keep rate and the mean t*."""
    g = gen(9)
    q, anchor, protos = unit(g, 6, 4), unit(g, 6, 4), unit(g, 5, 4)
    options = _halp_options(
        "halp.tc_sampling=fixed", "halp.t_star=reference", "halp.psel=reference"
    )
    with pytest.raises(ValueError, match="generator"):
        halp_term(q, anchor, protos, options, 0.07, None)
    result = halp_term(q, anchor, protos, options, 0.07, gen(10))
    hal = hallucinate(anchor, protos, options.num_positives, options.lam, gen(10), "fixed",
                      "reference", "reference")  # fmt: skip
    assert torch.equal(result.loss, halp_loss(q, hal.h, hal.keep, 0.07))
    assert float(result.keep_rate) == pytest.approx(float(hal.keep.float().mean()))
    assert result.t_star is not None
    assert float(result.t_star) == pytest.approx(float(hal.t_star.mean()))


def test_qk_slerp_term_is_unchanged_under_another_default_device() -> None:
    """The all-kept mask of the q-k slerp ablation is made on the query's device."""
    g = gen(11)
    q, anchor = unit(g, 4, 4, dtype=torch.float32), unit(g, 4, 4, dtype=torch.float32)
    protos = unit(g, 3, 4, dtype=torch.float32)
    options = _halp_options("halp.generator=qk_slerp")
    want = halp_term(q, anchor, protos, options, 0.07, gen(12))
    with torch.device("meta"):
        got = halp_term(q, anchor, protos, options, 0.07, gen(12))
    assert got.loss.device.type == "cpu" and torch.equal(got.loss, want.loss)
    assert got.t_star is None and float(got.keep_rate) == 1.0


def test_warmup_counts_anchors_from_zero_across_a_checkpoint() -> None:
    """halp.warmup_samples = 4: no loss until 4 anchors entered the banks, counting from
    0 in a long buffer that a save/load carries over (an enqueue may come first)."""
    options = _halp_options("halp.warmup_samples=4")
    emb = Embeddings({"joint": unit(gen(13), 2, 4)}, {"joint": unit(gen(14), 2, 4)}, {}, {})
    ctx = StepContext(epoch=0, step=0, weight=1.0, generator=gen(15))
    objective = HaLP(options, 0.07, ("joint",), 4)
    assert objective.keys_seen.dtype == torch.long
    assert objective.loss(emb, ctx) is None
    fresh = HaLP(options, 0.07, ("joint",), 4)
    fresh.load_state_dict(objective.state_dict())
    assert fresh.loss(emb, ctx) is None
    objective.after_enqueue(2, ctx)
    objective.after_enqueue(1, ctx)
    assert objective.loss(emb, ctx) is None
    fresh.load_state_dict(objective.state_dict())
    fresh.after_enqueue(0, ctx)  # before anything read the loaded count
    assert fresh.loss(emb, ctx) is None
    fresh.after_enqueue(1, ctx)
    assert isinstance(fresh.loss(emb, ctx), torch.Tensor)
    objective.after_enqueue(1, ctx)
    assert isinstance(objective.loss(emb, ctx), torch.Tensor)


def test_halp_loss_sums_the_ready_modalities_and_logs_them() -> None:
    """HaLP.loss = Σ over modalities with ready prototypes of halp_term, each logged
    (loss, keep rate, mean t*); a modality not yet ready is skipped, not the rest."""
    objective = HaLP(_halp_options(), 0.07, ("joint", "motion", "bone"), 4)
    for m, seed in (("motion", 30), ("bone", 31)):
        refresh_prototypes([objective.prototypes[m]], [_full_queue(seed)], _halp_options(), gen(1))
    g = gen(32)
    mods = ("joint", "motion", "bone")
    q, k = ({m: unit(g, 3, 4, dtype=torch.float32) for m in mods} for _ in range(2))
    emb = Embeddings(q, k, {}, {})
    ctx = StepContext(epoch=0, step=0, weight=1.0, generator=gen(33))
    total = objective.loss(emb, ctx)
    assert total is not None
    stream = gen(33)  # one generator, drawn from modality after modality
    expected = torch.zeros(())
    for m in ("motion", "bone"):
        centres = objective.prototypes[m].centres
        term = halp_term(emb.queries[m], emb.keys[m], centres, objective.options, 0.07, stream)
        expected = expected + term.loss
        assert float(ctx.terms[f"loss_halp_{m}"]) == pytest.approx(float(term.loss))
        assert float(ctx.terms[f"halp_t_star_{m}"]) == pytest.approx(float(term.t_star))
    torch.testing.assert_close(total, expected)
    assert "loss_halp_joint" not in ctx.terms
    for m in ("motion", "bone"):
        assert {f"loss_halp_{m}", f"halp_keep_{m}", f"halp_t_star_{m}"} <= set(ctx.terms)


def test_prepare_refreshes_until_every_modality_is_ready() -> None:
    """Between refresh_every steps, prepare() still refreshes while any modality's
    prototypes are not ready."""
    objective = HaLP(_halp_options("halp.refresh_every=5"), 0.07, ("joint", "motion"), 4)
    joint, motion = _full_queue(20), KeyQueue(16, 4, gen(21))
    banks = {"joint": joint, "motion": motion}
    objective.prepare(banks, StepContext(epoch=0, step=1, weight=1.0, generator=gen(22)))
    assert objective.prototypes["joint"].is_ready()
    assert not objective.prototypes["motion"].is_ready()
    motion.enqueue(unit(gen(23), 16, 4, dtype=torch.float32))
    objective.prepare(banks, StepContext(epoch=0, step=2, weight=1.0, generator=gen(24)))
    assert objective.prototypes["motion"].is_ready()


# ---------------------------------------------------------------- classifier (classifier.py)


class _TinyEncoder(Encoder):
    """A small stand-in for the BiGRU: Linear + BatchNorm (mode-dependent) features."""

    def __init__(self, in_dim: int = 4, feature_dim: int = 6) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(in_dim, feature_dim), torch.nn.BatchNorm1d(feature_dim)
        )
        self.projection = torch.nn.Linear(feature_dim, 3)
        self._dim = feature_dim

    @property
    def feature_dim(self) -> int:
        return self._dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _ByFirstColumn(torch.nn.Module):
    """Predicts class int(x[:, 0]) in eval mode and class 0 in train mode; records the
    batches it is called with."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.batches: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x)
        cls = torch.zeros(len(x), dtype=torch.long) if self.training else x[:, 0].long()
        return F.one_hot(cls, self.num_classes).float()


def test_classifier_head_starts_as_normal_0_01_weights_and_zero_bias() -> None:
    """The new linear layer: N(0, 0.01) weights, zero bias; the projection is dropped."""
    torch.manual_seed(0)
    model = Classifier(_TinyEncoder(feature_dim=2000), 10)
    w = model.fc.weight.detach()
    assert isinstance(model.encoder.projection, torch.nn.Identity)
    assert abs(float(w.mean())) < 5e-4 and 0.0095 < float(w.std()) < 0.0105
    assert torch.equal(model.fc.bias, torch.zeros(10))


def test_accuracy_is_the_percentage_correct_in_eval_mode_over_batches() -> None:
    """accuracy(): percent of argmax predictions equal to the labels, in eval mode (the
    mode is restored), over batches of ``batch_size`` (default 256) in dataset order; a
    single correct sample is 100 %."""
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0], [1.0], [2.0], [0.0]])
    labels = torch.tensor([0, 1, 2, 0, 1, 1, 3])  # 4 of 7 right
    model = _ByFirstColumn()
    model.train()
    assert accuracy(model, TensorDataset(x, labels), torch.device("cpu"), batch_size=3) == (
        pytest.approx(100.0 * 4 / 7)
    )
    assert model.training and [len(b) for b in model.batches] == [3, 3, 1]
    assert torch.equal(torch.cat(model.batches), x)
    one = TensorDataset(x[:1], labels[:1])
    assert accuracy(model, one, torch.device("cpu")) == 100.0
    model.batches.clear()
    many = TensorDataset(torch.zeros(300, 1), torch.zeros(300, dtype=torch.long))
    assert accuracy(model, many, torch.device("cpu")) == 100.0
    assert [len(b) for b in model.batches] == [256, 44]


def test_label_subsets_are_without_replacement_and_per_class_proportional() -> None:
    """random: round(f N) distinct indices; per_class: round(f N_c) distinct per class
    (at least 1); f = 1 is everything and f > 1 is refused."""
    labels = np.repeat(np.arange(4), 20)
    for seed in range(5):
        a = label_subset(labels, 0.9, "random", seed)
        assert len(a) == 72 and len(np.unique(a)) == 72
        b = label_subset(labels, 0.9, "per_class", seed)
        assert len(np.unique(b)) == len(b) == 72
        assert np.bincount(labels[b]).tolist() == [18] * 4
    assert np.bincount(labels[label_subset(labels, 0.5, "per_class", 0)]).tolist() == [10] * 4
    with pytest.raises(EvaluationError, match="not in"):
        label_subset(labels, 1.5, "random", 0)


@dataclass
class _FitConfig:
    momentum: float = 0.9
    weight_decay: float = 0.01
    batch_size: int = 8
    epochs: int = 4
    lr_steps: list[int] = field(default_factory=lambda: [1])
    lr_gamma: float = 0.5
    eval_every: int = 3
    workers: int = 0


def _fit_data(seed: int, n: int) -> TensorDataset:
    g = gen(seed)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())


def _reference_fit(
    model: Classifier, train: TensorDataset, config: _FitConfig, lr: float, freeze: bool
) -> list[float]:
    """fit_classifier's training written out: SGD with momentum and weight decay, the
    step schedule, a seeded shuffled loader per epoch; returns the epoch mean losses."""
    if freeze:
        for p in model.encoder.parameters():
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
    means = []
    for epoch in range(config.epochs):
        for group in opt.param_groups:
            group["lr"] = lr * config.lr_gamma ** sum(epoch >= s for s in config.lr_steps)
        model.encoder.train(not freeze)
        model.fc.train()
        losses = []
        for clips, labels in make_loader(train, config.batch_size, True, seed=3, epoch=epoch):
            loss = F.cross_entropy(model(clips), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        means.append(float(np.mean(losses)))
    return means


@pytest.mark.parametrize("freeze", [True, False])
def test_fit_classifier_trains_as_written_out_and_reports_its_history(freeze: bool) -> None:
    """fit_classifier = the written-out SGD loop (momentum, weight decay, step schedule,
    shuffled seeded batches, encoder frozen in eval mode or trained); test accuracy
    every eval_every epochs and at the end; the result summarises the history."""
    train, test = _fit_data(34, 40), _fit_data(35, 24)
    config = _FitConfig()
    torch.manual_seed(0)
    model = Classifier(_TinyEncoder(), 3)
    reference = copy.deepcopy(model)
    out = fit_classifier(model, train, test, config, 0.2, freeze, torch.device("cpu"), 3)
    means = _reference_fit(reference, train, config, 0.2, freeze)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    history = out["history"]
    assert [h["epoch"] for h in history] == [2, 3]  # every 3rd epoch and the last
    assert [h["lr"] for h in history] == [0.1, 0.1]
    assert [h["train_loss"] for h in history] == pytest.approx(means[2:])
    assert history[-1]["test_top1"] == accuracy(reference, test, torch.device("cpu"))
    assert out["top1"] == history[-1]["test_top1"]
    assert out["best_on_test"] == max(h["test_top1"] for h in history)
    assert (out["classes"], out["trainable_tensors"]) == (3, 2 if freeze else 6)


def test_fit_classifier_refuses_a_probe_training_more_than_fc_and_a_non_finite_loss() -> None:
    """A frozen probe must train exactly fc's 2 tensors; a non-finite loss stops the run."""
    model = Classifier(_TinyEncoder(), 3)
    model.extra = torch.nn.Parameter(torch.zeros(1))
    data = _fit_data(36, 8)
    config = _FitConfig(epochs=1)
    with pytest.raises(EvaluationError, match="trains 2 tensors"):
        fit_classifier(model, data, data, config, 0.1, True, torch.device("cpu"), 0)
    x, y = data.tensors
    nan = TensorDataset(x.clone().fill_(float("nan")), y)
    with pytest.raises(EvaluationError, match="loss became"):
        fit_classifier(Classifier(_TinyEncoder(), 3), nan, nan, config, 0.1, False,
                       torch.device("cpu"), 0)  # fmt: skip


# ---------------------------------------------------------------- kNN (knn.py)


class _SpyEncoder(torch.nn.Module):
    """features(x) = x; records its mode and the batches it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []
        self.batches: list[int] = []

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        self.batches.append(len(x))
        return x.double()


def test_extract_features_in_eval_mode_in_order_in_batches() -> None:
    """Features come in dataset order, as float32, with their labels, computed in eval
    mode (restored afterwards) over batches of 256 by default."""
    x = torch.randn(300, 3, generator=gen(37))
    y = torch.arange(300) % 7
    encoder = _SpyEncoder()
    feats, labels = extract_features(encoder, TensorDataset(x, y))
    assert feats.dtype == torch.float32 and torch.equal(feats, x) and torch.equal(labels, y)
    assert encoder.training and encoder.modes == [False, False]
    assert encoder.batches == [256, 44]


def test_knn_predict_defaults_to_the_single_nearest_and_accepts_k_up_to_n() -> None:
    """k = 1 by default (here the 2 nearest disagree and a tie would pick label 0); any
    k from 1 to the gallery size is valid."""
    gallery = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    labels = torch.tensor([1, 0, 2])
    query = torch.tensor([[1.0, 0.1]])
    assert knn_predict(gallery, labels, query).tolist() == [1]
    assert knn_predict(gallery, labels, query, k=2).tolist() == [0]
    assert knn_predict(gallery, labels, query, k=3).tolist() == [0]
    with pytest.raises(EvaluationError, match=r"k must be in 1\.\.3"):
        knn_predict(gallery, labels, query, k=4)


def test_knn_top1_uses_centre_crops_and_passes_its_arguments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """knn_top1: both splits as deterministic centre crops (train=False) of ``frames`` at
    ``seed``, features on ``device`` (default "cpu"), k (default 1) to knn_accuracy."""
    from halp.eval import knn

    made, extracted, scored = [], [], []

    def dataset(split: object, modality: str, **kwargs: object) -> str:
        made.append((split, modality, kwargs))
        return f"{split}-set"

    def features(encoder: object, data: str, **kwargs: object) -> tuple[str, str]:
        extracted.append((data, kwargs))
        return f"{data}-f", f"{data}-l"

    def accuracy_(g: str, gl: str, f: str, fl: str, k: int) -> float:
        scored.append((g, gl, f, fl, k))
        return 12.5

    monkeypatch.setattr(knn, "ClassificationDataset", dataset)
    monkeypatch.setattr(knn, "extract_features", features)
    checked: list[tuple[object, object]] = []
    monkeypatch.setattr(knn, "knn_accuracy", accuracy_)
    monkeypatch.setattr(knn, "check_features", lambda f, split: checked.append((f, split)))
    assert knn.knn_top1(object(), "tr", "te", "bone", frames=16, seed=7) == 12.5  # type: ignore[arg-type]
    assert checked == [("tr-set-f", "tr"), ("te-set-f", "te")]  # both feature sets checked
    crop = {"train": False, "out_frames": 16, "seed": 7, "keep": 0.95}
    assert made == [("tr", "bone", crop), ("te", "bone", crop)]
    assert extracted == [("tr-set", {"device": "cpu"}), ("te-set", {"device": "cpu"})]
    assert scored == [("tr-set-f", "tr-set-l", "te-set-f", "te-set-l", 1)]
    knn.knn_top1(object(), "tr", "te", "bone", frames=16, seed=7, k=5, device="meta", keep=1.0)  # type: ignore[arg-type]
    assert extracted[-1] == ("te-set", {"device": "meta"}) and scored[-1][-1] == 5
    assert made[-1][2]["keep"] == 1.0  # the whole clip (AimCLR's protocol)


# ---------------------------------------------------------------- AimCLR mining (mining.py)


def test_positive_mask_of_one_view_in_its_dtype_and_clipped_to_the_queue() -> None:
    """positive_mask marks P with exactly 1 (the key in column 0, then each view's top-k
    shifted by one), in the similarities' dtype and on their device (meta stands in for
    an accelerator); a single view is enough, and a top-k larger than the queue takes
    the whole queue."""
    sim = torch.tensor([[0.1, 0.9, -0.3, 0.5], [0.7, -0.2, 0.0, 0.6]], dtype=torch.float64)
    expected = torch.tensor(
        [[1.0, 0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0, 1.0]], dtype=torch.float64
    )
    mask = positive_mask([sim], topk=2)
    assert mask.dtype == torch.float64 and torch.equal(mask, expected)
    assert torch.equal(positive_mask([sim], topk=9), torch.ones(2, 5, dtype=torch.float64))
    assert positive_mask([sim.to("meta")], topk=2).device.type == "meta"


def test_multi_positive_nce_emits_no_warning() -> None:
    """log_softmax names its dimension (no implicit-dim deprecation warning)."""
    logits = torch.randn(3, 5, generator=gen(50))
    mask = positive_mask([torch.randn(3, 4, generator=gen(51))], topk=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.isfinite(multi_positive_nce(logits, mask))


def test_nnm_logs_the_fraction_of_queries_whose_key_wins() -> None:
    """acc_<modality> is the share of queries whose largest logit is the key's (column 0),
    before and while mining; loss_cl_<modality> is the returned term. Three queries equal
    their key (the largest possible logit), the fourth equals queue entry 0 (logit 1):
    3 / 4, where a logit-1 count gives 1 / 4 and a batch-wide argmax gives 1."""
    g = gen(52)
    k, queue = unit(g, 4, 8), unit(g, 6, 8)
    q = torch.cat([k[:3], queue[:1]])
    emb = Embeddings({"joint": q}, {"joint": k}, {"joint": queue}, {}, {"x": {"joint": k}})
    nnm = NearestNeighbourInfoNCE(0.1, start_epoch=1, topk=1)
    for epoch in (0, 1):
        ctx = StepContext(epoch, 0, 1.0)
        value = nnm.loss(emb, ctx)
        assert float(ctx.terms["acc_joint"]) == 0.75, epoch
        assert float(ctx.terms["loss_cl_joint"]) == float(value), epoch


# ---------------------------------------------------------------- D3M and L_h (distribution.py)


def test_soft_target_ce_emits_no_warning() -> None:
    """softmax and log_softmax name their dimension (no implicit-dim deprecation)."""
    s, t = torch.randn(3, 5, generator=gen(60)), torch.randn(3, 5, generator=gen(61))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.isfinite(soft_target_ce(s, t))


def test_distribution_distillation_checks_reduce_and_is_off_without_pairs() -> None:
    """An unknown reduction is refused; without pairs (HiCLR with k = 1) the term is None
    and logs nothing."""
    with pytest.raises(ValueError, match="reduce must be 'mean' or 'sum'"):
        DistributionDistillation([("query", "x")], 0.07, "max", "d")
    g = gen(62)
    emb = Embeddings(
        {"joint": unit(g, 3, 8)}, {"joint": unit(g, 3, 8)}, {"joint": unit(g, 5, 8)}, {}
    )
    ctx = StepContext(0, 0, 1.0)
    assert DistributionDistillation([], 0.07, "sum", "hier").loss(emb, ctx) is None
    assert ctx.terms == {}


# ---------------------------------------------------------------- EADM (eadm.py)


def test_energy_attention_of_two_positions_and_refusal_of_one() -> None:
    """Two positions are enough (d = 1 each, variance 2 / (2 - 1)); one is refused."""
    x = torch.tensor([[1.0, 3.0]], dtype=torch.float64)
    e = 1 / (4 * (2.0 + 1e-4)) + 0.5
    expected = torch.full_like(x, 1 / (1 + math.exp(-e)))
    torch.testing.assert_close(energy_attention(x, dims=(1,)), expected)
    with pytest.raises(ValueError, match="at least 2 positions"):
        energy_attention(x[:, :1], dims=(1,))


def test_energy_attention_computes_half_precision_in_float32() -> None:
    """float16 and bfloat16 maps are upcast first: A is float32, as from the upcast map."""
    x = torch.randn(2, 3, 4, 5, generator=gen(63))
    for dtype in (torch.float16, torch.bfloat16):
        low = x.to(dtype)
        a = energy_attention(low, dims=(2, 3))
        assert a.dtype == torch.float32 and torch.equal(a, energy_attention(low.float(), (2, 3)))


def test_eadm_rejects_the_wrong_rank() -> None:
    """eadm takes (N*M, C, T, V) maps only, eadm_channels (N, D) features only."""
    with pytest.raises(ValueError, match=r"expected an \(N\*M, C, T, V\) map"):
        eadm(torch.randn(2, 3, 4), 0.7)
    with pytest.raises(ValueError, match=r"expected \(N, D\) features"):
        eadm_channels(torch.randn(2, 3, 4), 0.7)


def test_eadm_passes_its_energy_lambda_on() -> None:
    """e_lambda reaches the energy: a huge lambda flattens every e to ~0.5, so
    A ~ sigmoid(0.5) < 0.7 everywhere and nothing drops, where the default drops."""
    x = torch.randn(2, 3, 4, 5, generator=gen(64), dtype=torch.float64)
    x[0, :, :, 1] += 5.0
    assert not torch.equal(eadm(x, 0.7), x)
    assert torch.equal(eadm(x, 0.7, e_lambda=1e6), x)
    f = torch.randn(2, 10, generator=gen(66), dtype=torch.float64)
    f[1, 2] += 6.0
    assert not torch.equal(eadm_channels(f, 0.7), f)
    assert torch.equal(eadm_channels(f, 0.7, e_lambda=1e6), f)


def test_eadm_drops_a_score_equal_to_the_threshold() -> None:
    """Positions drop when their attention is >= threshold: a joint whose score equals
    the threshold exactly, an element (and a BiGRU channel) whose A equals it."""
    x = torch.randn(2, 3, 4, 5, generator=gen(65), dtype=torch.float64)
    x[0, :, :, 2] += 4.0
    a = energy_attention(x, dims=(2, 3))
    score = a.mean(dim=(1, 2))  # (B, V), as eadm computes it
    thr = float(score[0, 2])
    assert ((a[0, :, :, 2] < thr) & (x[0, :, :, 2] != 0)).any()  # not dropped element-wise
    assert (eadm(x, thr)[0, :, :, 2] == 0).all()
    # the largest A of a joint: at that threshold the joint (its mean) stays, the element not
    c, t = divmod(int(a[1, :, :, 0].argmax()), a.shape[2])
    thr = float(a[1, c, t, 0])
    assert score[1, 0] < thr and x[1, c, t, 0] != 0
    assert eadm(x, thr)[1, c, t, 0] == 0
    f = torch.randn(2, 10, generator=gen(66), dtype=torch.float64)
    f[1, 2] += 6.0
    thr = float(energy_attention(f, dims=(1,))[1, 2])
    assert eadm_channels(f, thr)[1, 2] == 0


def test_keep_and_rescale_of_a_single_kept_position() -> None:
    """One kept position in the batch: it is scaled by numel(keep) / 1, the rest zeroed."""
    x = torch.full((2, 3), 2.0)
    keep = torch.zeros(2, 3, dtype=torch.bool)
    keep[1, 0] = True
    expected = torch.zeros(2, 3)
    expected[1, 0] = 12.0
    assert torch.equal(keep_and_rescale(x, keep), expected)
