"""Loss terms that methods compose (paper Sec. 3), and their registry.

Each objective lives in a module named after it: :mod:`~halp.objectives.moco` (InfoNCE,
the key queue, the momentum update), :mod:`~halp.objectives.halp` (prototypes and the
HaLP loss, built on :mod:`~halp.objectives.poshal` and
:mod:`~halp.objectives.prototypes`), :mod:`~halp.objectives.cmd` (cross-modal mutual
distillation), :mod:`~halp.objectives.mining` (AimCLR's nearest-neighbour mining) and
:mod:`~halp.objectives.distribution` (AimCLR's D3M, HiCLR's hierarchical loss),
:mod:`~halp.objectives.graphcl` (GraphCL's NT-Xent and its anchor FIFO). A
method preset (:mod:`halp.methods`) lists objectives by their registered
name; :func:`build_objective` makes one for a configuration.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

from halp.errors import ConfigError
from halp.objectives.base import AnchorBank, Embeddings, Objective, Resumption, StepContext

ObjectiveFactory = Callable[[Any, tuple[str, ...], int], Objective]
"""Builds an objective from the run's configuration (a :class:`~halp.config.PretrainConfig`
or a :class:`~halp.config.GraphCLConfig`), the modalities and the embedding size."""

OBJECTIVES: dict[str, ObjectiveFactory] = {}


def register_objective(name: str) -> Callable[[ObjectiveFactory], ObjectiveFactory]:
    """Decorator: make ``factory`` the objective called ``name`` in method presets."""

    def add(factory: ObjectiveFactory) -> ObjectiveFactory:
        if name in OBJECTIVES:
            raise KeyError(f"an objective named {name!r} is already registered")
        OBJECTIVES[name] = factory
        return factory

    return add


def build_objective(name: str, config: Any, modalities: tuple[str, ...], dim: int) -> Objective:
    """The objective ``name`` for ``config``; a ConfigError names unknown ones."""
    _load_builtin()
    if name not in OBJECTIVES:
        raise ConfigError(
            f"config key 'method' ({config.method!r}): its preset names the objective "
            f"{name!r}, which is not registered; known: {', '.join(sorted(OBJECTIVES))}"
        )
    return OBJECTIVES[name](config, modalities, dim)


def _load_builtin() -> None:
    """Import every module of this package: the shipped objectives register themselves."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


__all__ = [
    "OBJECTIVES",
    "AnchorBank",
    "Embeddings",
    "Objective",
    "ObjectiveFactory",
    "Resumption",
    "StepContext",
    "build_objective",
    "register_objective",
]
