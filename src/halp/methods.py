"""Methods as presets over one builder: MoCo baseline, HaLP, CMD and HaLP+CMD.

A method is a choice of modalities and loss terms, not a class of its own:

    L = sum_m L_CL(m) + [CMD] L_CMD + [HaLP] mu * sum_m L_HaLP(m)

Each modality m has a branch: a query encoder, its momentum key encoder, a key queue
and (for HaLP) prototypes. AimCLR or HiCLR would be added as another preset plus the
loss function they need.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from halp import cmd, poshal, prototypes
from halp.config import PretrainConfig
from halp.encoder import BiGRUEncoder
from halp.moco import KeyQueue, info_nce, momentum_update

MODALITIES = ("joint", "motion", "bone")


@dataclass(frozen=True)
class MethodSpec:
    """Which modalities a method trains and which loss terms it switches on."""

    modalities: tuple[str, ...]
    halp: bool
    cmd: bool


PRESETS: dict[str, MethodSpec] = {
    "baseline": MethodSpec(("joint",), halp=False, cmd=False),
    "halp": MethodSpec(("joint",), halp=True, cmd=False),
    "cmd": MethodSpec(MODALITIES, halp=False, cmd=True),
    "halp_cmd": MethodSpec(MODALITIES, halp=True, cmd=True),
}


def method_spec(config: PretrainConfig) -> MethodSpec:
    """The preset named by ``config.method``, with ``config.modalities`` applied."""
    if config.method not in PRESETS:
        raise ValueError(
            f"config key 'method': unknown method {config.method!r}; "
            f"choose one of {', '.join(PRESETS)}"
        )
    spec = PRESETS[config.method]
    if config.modalities:
        bad = [m for m in config.modalities if m not in MODALITIES]
        if bad or len(set(config.modalities)) != len(config.modalities):
            raise ValueError(
                f"config key 'modalities': {config.modalities} must be distinct names "
                f"among {MODALITIES}"
            )
        if spec.cmd and len(config.modalities) < 2:
            raise ValueError("config key 'modalities': CMD needs at least two modalities")
        spec = MethodSpec(tuple(config.modalities), spec.halp, spec.cmd)
    return spec


def build_encoder(config: PretrainConfig) -> BiGRUEncoder:
    e = config.encoder
    return BiGRUEncoder(
        input_size=150,
        hidden_size=e.hidden_size,
        num_layers=e.num_layers,
        proj_hidden=e.proj_hidden,
        out_dim=e.out_dim,
        reference_forward=e.reference_forward,
    )


class Branch(nn.Module):
    """One modality: query encoder, momentum key encoder, queue and prototypes."""

    prototypes: Tensor
    prototypes_ready: Tensor

    def __init__(self, config: PretrainConfig, generator: torch.Generator) -> None:
        super().__init__()
        self.encoder_q = build_encoder(config)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        dim = config.encoder.out_dim
        self.queue = KeyQueue(config.moco.queue_size, dim, generator)
        self.register_buffer("prototypes", torch.zeros(config.halp.num_prototypes, dim))
        self.register_buffer("prototypes_ready", torch.zeros((), dtype=torch.bool))


@dataclass
class StepOutput:
    """The loss of one step and its detached parts, for logging."""

    loss: Tensor
    terms: dict[str, float] = field(default_factory=dict)


@torch.no_grad()
def _gather(x: Tensor) -> Tensor:
    """Concatenate ``x`` over all processes (identity without torch.distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class PretrainModel(nn.Module):
    """The one builder behind every method preset."""

    halp_keys_seen: Tensor

    def __init__(self, config: PretrainConfig) -> None:
        super().__init__()
        self.config = config
        self.spec = method_spec(config)
        generator = torch.Generator().manual_seed(config.seed)
        self.branches = nn.ModuleDict({m: Branch(config, generator) for m in self.spec.modalities})
        # keys enqueued while L_HaLP was switched on (mu > 0), for halp.warmup_samples
        self.register_buffer("halp_keys_seen", torch.zeros((), dtype=torch.long))

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.spec.modalities

    def query_encoder(self, modality: str | None = None) -> BiGRUEncoder:
        """The query encoder of ``modality`` (default: the first), used for evaluation."""
        return self.branches[modality or self.modalities[0]].encoder_q  # type: ignore[return-value]

    def forward(
        self,
        views_q: dict[str, Tensor],
        views_k: dict[str, Tensor],
        mu: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> StepOutput:
        """One training step's loss. Also updates the key encoders and the queues."""
        cfg = self.config
        tau = cfg.moco.temperature
        qs: dict[str, Tensor] = {}
        ks: dict[str, Tensor] = {}
        snapshots: dict[str, Tensor] = {}
        terms: dict[str, float] = {}
        loss = views_q[self.modalities[0]].new_zeros(())
        for m, branch in self.branches.items():
            q = F.normalize(branch.encoder_q(views_q[m]), dim=1)  # (B, D)
            with torch.no_grad():
                momentum_update(branch.encoder_q, branch.encoder_k, cfg.moco.momentum)
                k = F.normalize(branch.encoder_k(views_k[m]), dim=1)  # (B, D)
            queue = branch.queue.keys.clone()  # (L, D); enqueue below must not touch the graph
            loss_cl, logits = info_nce(q, k, queue, tau)
            loss = loss + loss_cl
            terms[f"loss_cl_{m}"] = float(loss_cl.detach())
            terms[f"acc_{m}"] = float((logits.argmax(dim=1) == 0).float().mean())
            qs[m], ks[m], snapshots[m] = q, k, queue
        if self.spec.cmd:
            c = cfg.cmd
            loss_cmd = cmd.cmd_loss(
                qs, ks, snapshots, c.topk, c.teacher_temperature, c.student_temperature
            )
            loss = loss + c.weight * loss_cmd
            terms["loss_cmd"] = float(loss_cmd.detach())
        if self.spec.halp and mu > 0:
            if int(self.halp_keys_seen) >= cfg.halp.warmup_samples:
                loss = loss + mu * self._halp_terms(qs, ks, terms, generator)
        for m, branch in self.branches.items():
            keys = _gather(ks[m])
            branch.queue.enqueue(keys)
        if self.spec.halp and mu > 0:
            self.halp_keys_seen.add_(keys.shape[0])
        terms["loss"] = float(loss.detach())
        return StepOutput(loss, terms)

    def _halp_terms(
        self,
        qs: dict[str, Tensor],
        ks: dict[str, Tensor],
        terms: dict[str, float],
        generator: torch.Generator | None,
    ) -> Tensor:
        """sum_m L_HaLP(m) over the branches whose prototypes are ready (Eq. 8)."""
        h = self.config.halp
        total = next(iter(qs.values())).new_zeros(())
        for m, branch in self.branches.items():
            if not bool(branch.prototypes_ready):
                continue
            q, k = qs[m], ks[m]
            anchor = k if h.anchor == "key" else q.detach()
            if h.generator == "prototype":
                hal = poshal.hallucinate(
                    anchor,
                    branch.prototypes,
                    h.num_positives,
                    h.lam,
                    generator,
                    tc_sampling=h.tc_sampling,
                    t_star_mode=h.t_star,
                )
                positives, keep = hal.h, hal.keep
                terms[f"halp_t_star_{m}"] = float(hal.t_star.mean())
            else:
                positives = poshal.slerp_towards(k, q.detach(), h.num_positives, h.lam, generator)
                keep = torch.ones(positives.shape[:2], dtype=torch.bool, device=q.device)
            loss_halp = poshal.halp_loss(q, positives, keep, self.config.moco.temperature)
            terms[f"loss_halp_{m}"] = float(loss_halp.detach())
            terms[f"halp_keep_{m}"] = float(keep.float().mean())
            total = total + loss_halp
        return total

    @torch.no_grad()
    def refresh_prototypes(self, generator: torch.Generator | None = None) -> None:
        """Re-cluster each branch's ``top_k`` most recent keys into prototypes.

        Branches whose queue has not yet seen ``top_k`` keys are skipped (their recent
        entries would still be the random initialisation). Under torch.distributed the
        result of process 0 is broadcast, so every process uses the same prototypes.
        """
        h = self.config.halp
        ready = [m for m, b in self.branches.items() if int(b.queue.seen) >= h.top_k]
        if not ready:
            return
        keys = torch.stack([self.branches[m].queue.recent(h.top_k) for m in ready])  # (M, K, D)
        if h.kmeans_backend == "torch":
            centres = prototypes.spherical_kmeans(
                keys, h.num_prototypes, generator, iters=h.kmeans_iters
            )
        else:
            centres = torch.stack(
                [
                    prototypes.compute_prototypes(
                        x, h.num_prototypes, generator, backend="geomstats"
                    )
                    for x in keys
                ]
            )
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(centres, src=0)
        for m, c in zip(ready, centres, strict=True):
            branch = self.branches[m]
            branch.prototypes.copy_(c)
            branch.prototypes_ready.fill_(True)
