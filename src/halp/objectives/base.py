"""What every loss term sees and returns: the contract between a method and its objectives.

A pretraining step encodes each modality's two views (the framework's part, e.g. MoCo's
query and momentum key encoders) into :class:`Embeddings`; every :class:`Objective` of
the method's preset then turns them into one unweighted loss term and its diagnostics.
The model sums ``weight * term`` over the preset's terms (paper Eq. 8 for HaLP:
``L = L_CL + mu L_HaLP``). Nothing here knows which method is running.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn


class AnchorBank(Protocol):
    """Recent anchors of one modality: MoCo's key queue is one, a FIFO of anchors another."""

    def seen_count(self) -> int:
        """How many anchors ever entered the bank (tracked on the host: no device read)."""
        ...

    def recent(self, n: int) -> Tensor:
        """The ``n`` most recent anchors, (n, D), oldest first."""
        ...


@dataclass
class Embeddings:
    """One step's embeddings, per modality, all L2-normalised.

    Attributes:
        queries: (B, D) outputs of the trained encoder (they carry the gradient).
        keys: (B, D) detached targets of the same samples (MoCo's momentum keys).
        negatives: (L, D) a snapshot of each modality's negatives before this step's
            keys enter the bank (MoCo's queue).
        banks: each modality's bank of recent anchors (for prototypes).
        views: extra query views of the method (AimCLR's extreme view, HiCLR's
            branches): view name -> modality -> (B, D), encoded by the query encoder.
        projections: unnormalised projections with their gradient, view name ->
            modality -> (B, D), for objectives defined on them (GraphCL's NT-Xent over
            its two views ``view1`` and ``view2``); empty for the MoCo methods.
    """

    queries: Mapping[str, Tensor]
    keys: dict[str, Tensor]
    negatives: dict[str, Tensor]
    banks: Mapping[str, AnchorBank]
    views: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    projections: dict[str, dict[str, Tensor]] = field(default_factory=dict)

    def view(self, name: str) -> Mapping[str, Tensor]:
        """The embeddings of view ``name`` per modality; ``query`` is MoCo's query."""
        if name == "query":
            return self.queries
        if name not in self.views:
            raise KeyError(
                f"no view {name!r} was encoded this step; encoded: query, {', '.join(self.views)}"
            )
        return self.views[name]

    @property
    def modalities(self) -> list[str]:
        """The modalities in the order of the preset."""
        return list(self.queries)


@dataclass
class StepContext:
    """Where training is and what an objective may use or report.

    Attributes:
        epoch: The 0-based epoch.
        step: Training steps taken before this one (over all epochs).
        weight: This term's weight at ``epoch`` (0 means the term is off).
        generator: The run's seeded generator for objectives that draw at random.
        terms: Diagnostics to log, name -> value; objectives add theirs as detached 0-d
            tensors (reading them on the host would synchronise a GPU every step; the
            training loop reads the sums once per ``log.sync_every`` steps).
    """

    epoch: int
    step: int
    weight: float
    generator: torch.Generator | None = None
    terms: dict[str, float | Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Resumption:
    """What an objective accepts when a run resumes with a changed configuration.

    Attributes:
        keys: Changed config keys that are harmless at the checkpoint's epoch.
        remake: Fragments of the objective's state-dict keys (after
            ``objectives.<name>.``) to drop from the checkpoint and build afresh.
        reason: Why, for the log.
    """

    keys: tuple[str, ...] = ()
    remake: tuple[str, ...] = ()
    reason: str = ""


class Objective(nn.Module):
    """One loss term of a method; its buffers are saved with the model.

    Subclasses implement :meth:`loss` and may override the two hooks. A term whose weight
    is 0 in an epoch is not called at all in that epoch (neither hooks nor loss), so an
    objective switched on late (HaLP's mu, paper Sec. 4.2) leaves the earlier epochs
    exactly as the method without it.
    """

    def prepare(self, banks: Mapping[str, AnchorBank], ctx: StepContext) -> None:
        """Before the step, outside any DistributedDataParallel wrapper (e.g. refresh state)."""

    def loss(self, emb: Embeddings, ctx: StepContext) -> Tensor | None:
        """The unweighted term for this step, or None when it contributes nothing yet."""
        raise NotImplementedError

    def after_enqueue(self, count: int, ctx: StepContext) -> None:
        """After this step's ``count`` anchors (over all processes) entered the banks."""

    def check(self, epochs: int) -> list[str]:
        """Warnings about this term in a run of ``epochs`` epochs (ConfigError to refuse)."""
        return []

    def resumable(self, changes: list[str], old: Any, new: Any, epoch: int) -> Resumption:
        """Which of the changed keys ``changes`` may differ on a resume at ``epoch``.

        ``old`` and ``new`` are the checkpoint's and the new configuration; ``epoch`` the
        epochs completed. The default accepts none.
        """
        return Resumption()
