"""Model-side view transforms: what happens to an extra view between the loader and the loss.

A preset's extra views (:class:`halp.methods.presets.View`) name a transform of this
table by ``View.transform``; the model applies it to the view's batch of each modality
and encodes the result with that modality's query encoder. Each transform is a few
lines around its owner's function:

- ``none``: the query encoder as it is;
- ``mask``: HiCLR's learnable joint mask (:class:`halp.data.batch_augment.JointMask`),
  one learnable token per modality, kept in the model as ``masks.<modality>``;
- ``adain``: HiCLR's SkeleAdaIN style swap (:func:`halp.data.batch_augment.skele_adain`);
- ``dae``: HiCLR's Drop-Edges in every graph block
  (:meth:`halp.encoders.base.Encoder.features_dropping_edges`);
- ``eadm``: AimCLR's energy-based attention-guided drop
  (:meth:`halp.encoders.base.Encoder.features_and_dropped`), which also yields the
  dropped twin ``<name>_drop`` from the same backbone pass.

A new method that needs another transform adds one class here and registers it with
:func:`register_view_transform`; the model and the loop stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from halp.data.batch_augment import JointMask, skele_adain
from halp.encoders import Encoder
from halp.errors import ConfigError
from halp.methods.presets import View


class ViewTransform:
    """One way of turning a view's clips into projections with the query encoder.

    Attributes:
        state_name: The model attribute (a ModuleDict by modality) that holds the
            transform's learnable state, or None when it has none.
        random: Whether it draws from the step's generator.
        encoder_method: An optional :class:`Encoder` method the transform calls, or None.
        encoder_need: What an encoder without that method lacks, for the refusal.
    """

    state_name: ClassVar[str | None] = None
    random: ClassVar[bool] = False
    encoder_method: ClassVar[str | None] = None
    encoder_need: ClassVar[str] = ""

    def make_state(self, view: View) -> nn.Module:
        """The learnable state of one modality (only for transforms with ``state_name``)."""
        raise NotImplementedError

    def check(self, encoder: Encoder, view: View, arch: str) -> None:
        """Refuse (ConfigError naming ``view.source``) an encoder the transform cannot use."""
        method = self.encoder_method
        if method is not None and getattr(type(encoder), method) is getattr(Encoder, method):
            raise ConfigError(
                f"config key '{view.source}': view {view.name!r} ({view.transform}) "
                f"{self.encoder_need}; encoder.arch {arch!r} has none"
            )

    def before(
        self, x: Tensor, view: View, generator: torch.Generator | None, state: nn.Module | None
    ) -> Tensor:
        """The batch after the transform's input-side part (outside autocast)."""
        return x

    def encode(
        self, encoder: Encoder, x: Tensor, view: View, generator: torch.Generator | None
    ) -> dict[str, Tensor]:
        """Projections by output suffix (``""`` for the view itself), in insertion order."""
        return {"": encoder(x)}


VIEW_TRANSFORMS: dict[str, ViewTransform] = {}


def register_view_transform(name: str) -> Callable[[type[ViewTransform]], type[ViewTransform]]:
    """Class decorator: register a transform under ``name`` (``View.transform``)."""

    def add(cls: type[ViewTransform]) -> type[ViewTransform]:
        if name in VIEW_TRANSFORMS:
            raise KeyError(f"a view transform named {name!r} is already registered")
        VIEW_TRANSFORMS[name] = cls()
        return cls

    return add


def transform_of(view: View) -> ViewTransform:
    """The registered transform of ``view``; a ConfigError names an unknown one."""
    if view.transform not in VIEW_TRANSFORMS:
        raise ConfigError(
            f"config key '{view.source}': view {view.name!r} names the transform "
            f"{view.transform!r}, which is not registered; known: {', '.join(VIEW_TRANSFORMS)}"
        )
    return VIEW_TRANSFORMS[view.transform]


@register_view_transform("none")
class Plain(ViewTransform):
    """The view through the query encoder, unchanged."""


@register_view_transform("mask")
class LearnableMask(ViewTransform):
    """HiCLR's learnable joint mask, option ``ratio`` (one token per modality)."""

    state_name = "masks"
    random = True

    def make_state(self, view: View) -> nn.Module:
        """A JointMask at the view's ratio."""
        return JointMask(float(view.option("ratio")))

    def before(
        self, x: Tensor, view: View, generator: torch.Generator | None, state: nn.Module | None
    ) -> Tensor:
        """Mask the batch with the modality's token."""
        assert isinstance(state, JointMask) and generator is not None
        return state(x, generator)


@register_view_transform("adain")
class StyleSwap(ViewTransform):
    """HiCLR's SkeleAdaIN, option ``mode`` (``TV`` or ``V``)."""

    random = True

    def before(
        self, x: Tensor, view: View, generator: torch.Generator | None, state: nn.Module | None
    ) -> Tensor:
        """Swap the batch's statistics with a partner's."""
        assert generator is not None
        return skele_adain(x, generator, view.option("mode"))


@register_view_transform("dae")
class DropEdges(ViewTransform):
    """HiCLR's Drop-Edges in every graph block, option ``rate``."""

    random = True
    encoder_method = "features_dropping_edges"
    encoder_need = "drops graph edges, which needs a graph encoder (encoder.arch: stgcn)"

    def encode(
        self, encoder: Encoder, x: Tensor, view: View, generator: torch.Generator | None
    ) -> dict[str, Tensor]:
        """The projection of the edge-dropped features."""
        rate = float(view.option("rate"))
        return {"": encoder.projection(encoder.features_dropping_edges(x, rate, generator))}


@register_view_transform("eadm")
class AttentionDrop(ViewTransform):
    """AimCLR's EADM at option ``threshold``: the view and its dropped twin ``_drop``."""

    encoder_method = "features_and_dropped"
    encoder_need = "needs an encoder with an attention-guided drop"

    def encode(
        self, encoder: Encoder, x: Tensor, view: View, generator: torch.Generator | None
    ) -> dict[str, Tensor]:
        """Both projections from one backbone pass (the dropped twin first)."""
        f, f_drop = encoder.features_and_dropped(x, float(view.option("threshold")))
        return {"_drop": encoder.projection(f_drop), "": encoder.projection(f)}


def encode_views(
    views: tuple[View, ...],
    clips: dict[str, dict[str, Tensor]],
    encoders: dict[str, Encoder],
    states: Callable[[str, str], nn.Module | None],
    generator: torch.Generator | None,
    autocast: Callable[[Tensor], Any],
) -> dict[str, dict[str, Tensor]]:
    """Normalised embeddings of every extra view: view name (+ suffix) -> modality -> (B, D).

    ``states(state_name, modality)`` returns a transform's learnable state; ``autocast``
    the precision context of an encoder call.
    """
    out: dict[str, dict[str, Tensor]] = {}
    for view in views:
        transform = transform_of(view)
        for m, encoder in encoders.items():
            state = states(transform.state_name, m) if transform.state_name else None
            x = transform.before(clips[view.name][m], view, generator, state)
            with autocast(x):
                projections = transform.encode(encoder, x, view, generator)
            for suffix, z in projections.items():
                out.setdefault(view.name + suffix, {})[m] = nn.functional.normalize(
                    z.float(), dim=1
                )
    return out
