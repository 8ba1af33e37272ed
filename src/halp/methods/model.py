"""The pretraining model: one builder behind every method preset (paper Sec. 3, Fig. 2).

Per modality, a :class:`MomentumBranch` holds MoCo's query encoder, its momentum key
encoder and the key queue (Sec. 3.1). The preset's objectives (:mod:`halp.objectives`)
turn one step's embeddings into loss terms; :meth:`PretrainModel.forward` encodes, sums
``weight * term`` over the preset's terms in order, and enqueues the new keys. Extra
query views of a preset (AimCLR's extreme view and its EADM-dropped twin, HiCLR's
branches with the learnable joint mask) are encoded by the same query encoder. It holds
no method-specific branch: adding a method is objectives, views and a preset.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from halp.config import PretrainConfig
from halp.encoders import Encoder, build_encoder
from halp.methods.presets import Preset, View, check_config, preset_of, term_weight, views_of
from halp.methods.views import encode_views, transform_of
from halp.objectives import AnchorBank, Embeddings, Objective, StepContext, build_objective
from halp.objectives.moco import KeyQueue, momentum_update
from halp.schedules import StepWeight


class MomentumBranch(nn.Module):
    """One modality: query encoder, momentum key encoder and key queue (MoCo, Sec. 3.1)."""

    def __init__(
        self, encoder: Encoder, queue_size: int, dim: int, generator: torch.Generator
    ) -> None:
        super().__init__()
        self.encoder_q = encoder
        self.encoder_k = copy.deepcopy(encoder)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        self.queue = KeyQueue(queue_size, dim, generator)


@dataclass
class StepOutput:
    """The loss of one step and its detached parts, for logging."""

    loss: Tensor
    terms: dict[str, float | Tensor] = field(default_factory=dict)


@torch.no_grad()
def _gather(x: Tensor) -> Tensor:
    """Concatenate ``x`` over all processes (identity without torch.distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class PretrainModel(nn.Module):
    """The branches of a preset's modalities and the objectives of its terms.

    Args:
        config: The resolved configuration; ``config.method`` names the preset.
        preset: Overrides the preset looked up from ``config.method``.
    """

    def __init__(self, config: PretrainConfig, preset: Preset | None = None) -> None:
        super().__init__()
        self.config = config
        self.preset = preset or preset_of(config)
        generator = torch.Generator().manual_seed(config.seed)
        dim = config.encoder.out_dim
        queue = config.moco.queue_size
        arch = config.encoder.arch
        self.branches = nn.ModuleDict(
            {
                m: MomentumBranch(build_encoder(arch, config), queue, dim, generator)
                for m in self.preset.modalities
            }
        )
        self.views: tuple[View, ...] = views_of(config, self.preset)
        for view in self.views:  # learnable view state (HiCLR's mask tokens), per modality
            transform = transform_of(view)
            transform.check(self.query_encoder(), view, arch)
            if transform.state_name and not hasattr(self, transform.state_name):
                states = {m: transform.make_state(view) for m in self.preset.modalities}
                self.add_module(transform.state_name, nn.ModuleDict(states))
        self.objectives = nn.ModuleDict(
            {
                t.objective: build_objective(t.objective, config, self.preset.modalities, dim)
                for t in self.preset.terms
            }
        )
        self.weights: dict[str, StepWeight] = {
            t.objective: term_weight(config, t) for t in self.preset.terms
        }

    @property
    def modalities(self) -> tuple[str, ...]:
        """The trained modalities, in the preset's order."""
        return self.preset.modalities

    def branch(self, modality: str) -> MomentumBranch:
        """The encoders and queue of ``modality``."""
        branch = self.branches[modality]
        assert isinstance(branch, MomentumBranch)
        return branch

    def _branches(self) -> list[tuple[str, MomentumBranch]]:
        return [(m, self.branch(m)) for m in self.modalities]

    def query_encoder(self, modality: str | None = None) -> Encoder:
        """The query encoder of ``modality`` (default: the first), used for evaluation."""
        return self.branch(modality or self.modalities[0]).encoder_q

    def weights_at(self, epoch: int) -> dict[str, float]:
        """Each term's weight during ``epoch``."""
        return {name: w.at(epoch) for name, w in self.weights.items()}

    def logged_weights(self, epoch: int) -> dict[str, float]:
        """The weights that the preset logs as metrics columns (e.g. ``mu``)."""
        return {
            t.log_as: self.weights[t.objective].at(epoch)
            for t in self.preset.terms
            if t.log_as is not None
        }

    def _objective(self, name: str) -> Objective:
        module = self.objectives[name]
        assert isinstance(module, Objective)
        return module

    def _active(self, epoch: int) -> list[tuple[str, float]]:
        return [(name, w) for name, w in self.weights_at(epoch).items() if w != 0.0]

    @torch.no_grad()
    def prepare_step(self, epoch: int, step: int, generator: torch.Generator | None) -> None:
        """Run the active objectives' ``prepare`` hooks (call outside DDP, before forward)."""
        banks: dict[str, AnchorBank] = {m: b.queue for m, b in self._branches()}
        for name, weight in self._active(epoch):
            self._objective(name).prepare(banks, StepContext(epoch, step, weight, generator))

    def forward(
        self,
        views_q: dict[str, Tensor],
        views_k: dict[str, Tensor],
        epoch: int = 0,
        generator: torch.Generator | None = None,
        step: int = 0,
        views: dict[str, dict[str, Tensor]] | None = None,
    ) -> StepOutput:
        """One training step's loss; also updates the key encoders and the queues.

        ``views`` holds the preset's extra query views (view name -> modality -> clips).
        """
        momentum = self.config.moco.momentum
        queries: dict[str, Tensor] = {}
        keys: dict[str, Tensor] = {}
        negatives: dict[str, Tensor] = {}
        for m, branch in self._branches():
            with self._autocast(views_q[m]):
                q = branch.encoder_q(views_q[m])
            queries[m] = F.normalize(q.float(), dim=1)  # (B, D), fp32 for every objective
            with torch.no_grad():
                momentum_update(branch.encoder_q, branch.encoder_k, momentum)
                with self._autocast(views_k[m]):
                    k = branch.encoder_k(views_k[m])
                keys[m] = F.normalize(k.float(), dim=1)  # (B, D)
            negatives[m] = branch.queue.keys.clone()  # (L, D); the enqueue must not touch it
        banks: dict[str, AnchorBank] = {m: b.queue for m, b in self._branches()}
        emb = Embeddings(queries, keys, negatives, banks, self._encode_views(views, generator))
        terms: dict[str, float | Tensor] = {}
        loss: Tensor | None = None
        active = self._active(epoch)
        for name, weight in active:
            ctx = StepContext(epoch, step, weight, generator, terms)
            value = self._objective(name).loss(emb, ctx)
            if value is not None:
                loss = weight * value if loss is None else loss + weight * value
        if loss is None:
            loss = views_q[self.modalities[0]].new_zeros(())
        count = 0
        for m, branch in self._branches():
            gathered = _gather(keys[m])
            branch.queue.enqueue(gathered)
            count = gathered.shape[0]
        for name, weight in active:
            self._objective(name).after_enqueue(count, StepContext(epoch, step, weight, generator))
        terms["loss"] = loss.detach()
        return StepOutput(loss, terms)

    def _encode_views(
        self, clips: dict[str, dict[str, Tensor]] | None, generator: torch.Generator | None
    ) -> dict[str, dict[str, Tensor]]:
        """Normalised query-encoder embeddings of the extra views (:mod:`halp.methods.views`)."""
        if not self.views:
            return {}
        if clips is None or any(v.name not in clips for v in self.views):
            raise ValueError(
                f"method {self.config.method!r} needs the extra views "
                f"{[v.name for v in self.views]} in every batch; got {sorted(clips or {})}"
            )
        if generator is None and any(transform_of(v).random for v in self.views):
            raise ValueError(
                f"method {self.config.method!r}: its view transforms draw from the step's "
                "generator; pass one"
            )
        encoders = {m: b.encoder_q for m, b in self._branches()}
        return encode_views(
            self.views, clips, encoders, self._view_state, generator, self._autocast
        )

    def _view_state(self, name: str, modality: str) -> nn.Module:
        states = getattr(self, name)
        assert isinstance(states, nn.ModuleDict)
        return states[modality]

    def checks(self) -> list[str]:
        """The preset's and its objectives' rules for this configuration: warnings.

        Raises ConfigError for a configuration a method refuses.
        """
        epochs = self.config.optim.epochs
        found = check_config(self.config, self.preset, epochs)
        for name in self.objectives:
            found += self._objective(name).check(epochs)
        return found

    def _autocast(self, x: Tensor) -> torch.autocast:
        """bf16 autocast of an encoder under ``optim.precision: bf16``; a no-op otherwise."""
        return torch.autocast(
            x.device.type, dtype=torch.bfloat16, enabled=self.config.optim.precision == "bf16"
        )


def random_batch(
    model: PretrainModel,
    shape: tuple[int, ...],
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, dict[str, Tensor]] | None]:
    """A random (query, key, extra views) batch of ``shape`` clips for ``model``.

    For benchmarks and device checks that step a model on fixed data: one tensor per
    modality for the query and the key, and per extra view of the preset (None when the
    preset has none), drawn on the CPU from ``generator`` in that order.
    """

    def draw() -> dict[str, Tensor]:
        return {m: torch.randn(shape, generator=generator).to(device) for m in model.modalities}

    q, k = draw(), draw()
    views = {v.name: draw() for v in model.views}
    return q, k, views or None
