"""HaLP: hallucinated latent positives as a loss term any framework can add (paper Sec. 3).

The pieces, framework-agnostic:

- :class:`Prototypes`: one modality's N prototypes, spherical k-means centroids of the
  ``top_k`` most recent anchors of an :class:`~halp.objectives.base.AnchorBank` (Sec. 3.2),
  refreshed every few iterations by :func:`refresh_prototypes`;
- :func:`halp_term`: given detached anchors, the prototypes and the query, generate the
  positives with PosHal (:mod:`halp.objectives.poshal`, Eq. 3-7) and return L_HaLP
  (Eq. 8) with its diagnostics.

:class:`HaLP` applies them to a MoCo-style method: anchors are the momentum keys (or the
detached queries, ``halp.anchor: query``), the bank is the key queue, one set of
prototypes per modality. Another framework (e.g. one with a FIFO of recent anchors and
no key encoder) reuses the same two functions with its own bank and anchors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from halp.config import HalpConfig, PretrainConfig
from halp.errors import ConfigError
from halp.objectives import register_objective
from halp.objectives.base import AnchorBank, Embeddings, Objective, Resumption, StepContext
from halp.objectives.poshal import hallucinate, halp_loss, slerp_towards
from halp.objectives.prototypes import compute_prototypes, spherical_kmeans


class Prototypes(nn.Module):
    """N unit prototypes of one modality, kept as buffers (saved with the model).

    Attributes:
        centres: (N, D) the prototypes.
        ready: 0-d bool, False until the first refresh.
    """

    centres: Tensor
    ready: Tensor

    def __init__(self, num_prototypes: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("centres", torch.zeros(num_prototypes, dim))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))
        self.ready_host: bool | None = False  # ``ready`` mirrored on the host

    def is_ready(self) -> bool:
        """``ready`` as a Python bool, read from the device once after each load."""
        if self.ready_host is None:
            self.ready_host = bool(self.ready)
        return self.ready_host

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.ready_host = None


@torch.no_grad()
def refresh_prototypes(
    prototypes: Sequence[Prototypes],
    banks: Sequence[AnchorBank],
    options: HalpConfig,
    generator: torch.Generator | None,
) -> None:
    """Re-cluster each bank's ``top_k`` most recent anchors into its prototypes.

    Banks that have not yet seen ``top_k`` anchors are skipped (their recent entries
    would still be an initialisation). The ready banks are clustered in one batched
    k-means call. Under torch.distributed the centres of process 0 are broadcast, so
    every process uses the same prototypes.
    """
    ready = [i for i, bank in enumerate(banks) if bank.seen_count() >= options.top_k]
    if not ready:
        return
    keys = torch.stack([banks[i].recent(options.top_k) for i in ready])  # (M, K, D)
    if generator is None:
        raise ValueError("refreshing prototypes draws at random: pass the run's generator")
    if options.kmeans_backend == "torch":
        centres = spherical_kmeans(
            keys, options.num_prototypes, generator, iters=options.kmeans_iters
        )
    else:
        centres = torch.stack(
            [
                compute_prototypes(x, options.num_prototypes, generator, backend="geomstats")
                for x in keys
            ]
        )
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(centres, src=0)
    for i, c in zip(ready, centres, strict=True):
        prototypes[i].centres.copy_(c)
        prototypes[i].ready.fill_(True)
        prototypes[i].ready_host = True


@dataclass(frozen=True)
class HalpResult:
    """L_HaLP of one modality and its diagnostics.

    Attributes:
        loss: The scalar L_HaLP (Eq. 8), with gradient into the query only.
        keep_rate: Fraction of positives that passed the rank filter (0-d, detached).
        t_star: Mean t* (Eq. 7) over the positives (0-d, detached), or None for the q-k
            slerp ablation.
    """

    loss: Tensor
    keep_rate: Tensor
    t_star: Tensor | None


def halp_term(
    query: Tensor,
    anchor: Tensor,
    prototypes: Tensor,
    options: HalpConfig,
    temperature: float,
    generator: torch.Generator | None,
) -> HalpResult:
    """L_HaLP for one modality: hallucinate positives from ``anchor`` and pull ``query`` to them.

    Args:
        query: (B, D) unit queries (carry the gradient).
        anchor: (B, D) unit anchors, detached (the keys in the paper).
        prototypes: (N, D) unit prototypes.
        options: The ``halp`` section of the configuration (Ng, lambda, t_c and t* modes,
            generator).
        temperature: tau of Eq. 8 (MoCo's, 0.07).
        generator: Source of P_sel and t_c draws.

    Returns:
        The loss and its diagnostics.
    """
    if generator is None:
        raise ValueError("HaLP draws positives at random: pass the run's generator")
    anchor = anchor.detach()
    t_star_mean: Tensor | None = None
    if options.generator == "prototype":
        hal = hallucinate(
            anchor,
            prototypes,
            options.num_positives,
            options.lam,
            generator,
            tc_sampling=options.tc_sampling,
            t_star_mode=options.t_star,
            psel=options.psel,
        )
        positives, keep = hal.h, hal.keep
        t_star_mean = hal.t_star.mean()
    else:  # qk_slerp: from the anchor towards the query, every positive kept
        positives = slerp_towards(
            anchor, query.detach(), options.num_positives, options.lam, generator
        )
        keep = torch.ones(positives.shape[:2], dtype=torch.bool, device=query.device)
    loss = halp_loss(query, positives, keep, temperature)
    return HalpResult(loss, keep.float().mean(), t_star_mean)


class HaLP(Objective):
    """sum over modalities of L_HaLP (Eq. 8) for a method with a key queue per modality.

    Prototypes are refreshed from each modality's bank before a step whenever
    ``halp.refresh_every`` steps have passed or some are not ready yet. With
    ``halp.warmup_samples`` > 0 (the authors' 2L + 1) no positives are made until that
    many anchors entered the banks while the term was on. Logs ``loss_halp_<m>``,
    ``halp_keep_<m>`` and ``halp_t_star_<m>``.

    Attributes:
        keys_seen: Anchors enqueued while the term was on (0-d long buffer).
    """

    keys_seen: Tensor

    def __init__(
        self, options: HalpConfig, temperature: float, modalities: tuple[str, ...], dim: int
    ) -> None:
        super().__init__()
        self.options = options
        self.temperature = temperature
        self.prototypes = nn.ModuleDict(
            {m: Prototypes(options.num_prototypes, dim) for m in modalities}
        )
        self.register_buffer("keys_seen", torch.zeros((), dtype=torch.long))
        self.keys_seen_host: int | None = 0

    def prepare(self, banks: Mapping[str, AnchorBank], ctx: StepContext) -> None:
        """Refresh the prototypes every ``refresh_every`` steps, or until all are ready."""
        sets = [self._set(m) for m in self.prototypes]
        ready = all(p.is_ready() for p in sets)
        if ctx.step % self.options.refresh_every == 0 or not ready:
            refresh_prototypes(
                sets, [banks[m] for m in self.prototypes], self.options, ctx.generator
            )

    def loss(self, emb: Embeddings, ctx: StepContext) -> Tensor | None:
        """sum_m L_HaLP(m) over the modalities whose prototypes are ready."""
        if self._keys_seen() < self.options.warmup_samples:
            return None
        total = next(iter(emb.queries.values())).new_zeros(())
        for m in self.prototypes:
            protos = self._set(m)
            if not protos.is_ready():
                continue
            q = emb.queries[m]
            anchor = emb.keys[m] if self.options.anchor == "key" else q.detach()
            result = halp_term(
                q, anchor, protos.centres, self.options, self.temperature, ctx.generator
            )
            if result.t_star is not None:
                ctx.terms[f"halp_t_star_{m}"] = result.t_star
            ctx.terms[f"loss_halp_{m}"] = result.loss.detach()
            ctx.terms[f"halp_keep_{m}"] = result.keep_rate
            total = total + result.loss
        return total

    def after_enqueue(self, count: int, ctx: StepContext) -> None:
        """Count the anchors that entered the banks while HaLP was on."""
        self.keys_seen.add_(count)
        if self.keys_seen_host is not None:
            self.keys_seen_host += count

    def resumable(self, changes: list[str], old: Any, new: Any, epoch: int) -> Resumption:
        """``halp.*`` keys may change until HaLP starts (prototypes remade if N changes)."""
        start = min(old.halp.mu_start_epoch, new.halp.mu_start_epoch)
        if epoch >= start:
            return Resumption()
        keys = tuple(k for k in changes if k.startswith("halp."))
        remake = ("prototypes.",) if "halp.num_prototypes" in keys else ()
        reason = f"HaLP (from epoch {new.halp.mu_start_epoch}) has not started by epoch {epoch}"
        return Resumption(keys, remake, reason)

    def _keys_seen(self) -> int:
        if self.keys_seen_host is None:  # after a checkpoint was loaded: read it once
            self.keys_seen_host = int(self.keys_seen)
        return self.keys_seen_host

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.keys_seen_host = None

    def _set(self, modality: str) -> Prototypes:
        module = self.prototypes[modality]
        assert isinstance(module, Prototypes)
        return module


@register_objective("halp")
def _halp(config: PretrainConfig, modalities: tuple[str, ...], dim: int) -> Objective:
    h = config.halp
    if h.anchor == "query" and h.generator == "qk_slerp":
        raise ConfigError(
            "config keys 'halp.anchor: query' and 'halp.generator: qk_slerp' together would "
            "slerp the query towards itself; use halp.anchor: key with qk_slerp"
        )
    return HaLP(h, config.tau, modalities, dim)
