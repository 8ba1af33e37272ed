"""Method presets: each method of the package is data, not code (paper Sec. 3-4).

A :class:`Preset` names the modalities a method trains, the extra query views it
encodes and its loss terms; each :class:`Term` names a registered objective
(:mod:`halp.objectives`) with its weight and the epoch from which it is on, each either
a number or a config key that holds it. The encoder is the ``encoder.arch`` config key
(the paper's BiGRU by default, or the ST-GCN of AimCLR and HiCLR)::

    baseline     InfoNCE                                    (MoCo v2)
    halp         InfoNCE + mu L_HaLP, mu from epoch 200     (Eq. 8)
    cmd          sum_m InfoNCE + L_CMD over joint, motion, bone
    halp_cmd     sum_m InfoNCE + L_CMD + mu sum_m L_HaLP
    aimclr       InfoNCE/NNM + L_D3M over an extreme view and its EADM-dropped twin
    aimclr_halp  aimclr + mu L_HaLP
    hiclr        InfoNCE/NNM + lambda_h L_h over growing augmentation branches
    hiclr_halp   hiclr + mu L_HaLP

This module is also the one home of the method names and of the linear-probe learning
rates that produced the published rows (Sec. 4.2 and the supplement). It imports no
torch, so the workflow and the report can read it cheaply.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from halp.config import PretrainConfig
from halp.errors import ConfigError
from halp.schedules import StepWeight

MODALITIES = ("joint", "motion", "bone")
"""The skeleton modalities a preset may train (:mod:`halp.data.modalities`)."""


@dataclass(frozen=True)
class Term:
    """One loss term of a preset.

    Attributes:
        objective: A name registered with :func:`halp.objectives.register_objective`.
        weight: The weight, or the dotted config key holding it (e.g. ``"halp.mu"``).
        start_epoch: The first epoch with a non-zero weight, or the config key holding it.
        log_as: Also log the term's weight under this metrics column (e.g. ``"mu"``).
    """

    objective: str
    weight: float | str = 1.0
    start_epoch: int | str = 0
    log_as: str | None = None


@dataclass(frozen=True)
class View:
    """An extra query view of a method, beyond MoCo's query and key.

    The dataset draws it with its own augmentation; the model applies its transform
    (:mod:`halp.methods.views`) and encodes it with the query encoder into
    ``Embeddings.views[name]`` (and ``<name><suffix>`` for a transform with several
    outputs, e.g. EADM's ``_drop``).

    Attributes:
        name: The view's name in ``Embeddings.views``.
        augmentation: Its load-time augmentation spec, or the config key holding it.
        transform: A model-side view transform registered in :mod:`halp.methods.views`
            (``none``, ``mask``, ``adain``, ``dae``, ``eadm``), or the config key holding it.
        options: The transform's options, ``(name, value or config key)`` pairs.
        source: The config key the view comes from, named in error messages.
    """

    name: str
    augmentation: str
    transform: str = "none"
    options: tuple[tuple[str, Any], ...] = ()
    source: str = "method"

    def option(self, name: str) -> Any:
        """The (resolved) value of option ``name``."""
        for key, value in self.options:
            if key == name:
                return value
        raise KeyError(f"view {self.name!r} ({self.transform}) has no option {name!r}")


@dataclass(frozen=True)
class Preset:
    """A method: its modalities, extra views and loss terms.

    Attributes:
        modalities: The modalities trained, each with its own encoders and queue.
        terms: The loss terms, summed in this order.
        label: How tables and figures name the method (e.g. ``HaLP+CMD``).
        linear_lr: The linear-probe learning-rate preset of the protocol behind the
            method's published rows (:data:`LINEAR_LR`): ``halp`` for the rows the HaLP
            authors evaluated (0.005 NTU / 0.001 PKU), ``cmd`` for CMD's own (0.1).
        views: Extra query views, or the config key holding a list of branches
            (:class:`halp.config.BranchConfig`, HiCLR's).
        basic_augmentation: The query and key augmentation the method was published
            with; training warns when ``data.augmentation`` differs.
        framework: The training loop that runs it: ``moco`` (:mod:`halp.train`, skeleton
            clips) or ``graphcl`` (:mod:`halp.graphcl`, TU graphs).
    """

    modalities: tuple[str, ...]
    terms: tuple[Term, ...]
    label: str = ""
    linear_lr: Literal["cmd", "halp"] = "halp"
    views: tuple[View, ...] | str = ()
    basic_augmentation: str | None = None
    framework: Literal["moco", "graphcl"] = "moco"

    def uses(self, objective: str) -> bool:
        """Whether one of the terms is ``objective``."""
        return any(t.objective == objective for t in self.terms)

    @property
    def halp(self) -> bool:
        """Whether the preset hallucinates positives (has a ``halp`` term)."""
        return self.uses("halp")

    @property
    def cmd(self) -> bool:
        """Whether the preset distils across modalities (has a ``cmd`` term)."""
        return self.uses("cmd")


_INFONCE = Term("infonce")
_CMD = Term("cmd", weight="cmd.weight")
_HALP = Term("halp", weight="halp.mu", start_epoch="halp.mu_start_epoch", log_as="mu")
_NNM = Term("nnm")  # InfoNCE, multi-positive from mining.start_epoch
_D3M = Term("d3m", weight="aimclr.weight")
_HIERARCHY = Term("hierarchy", weight="hiclr.hierarchy_weight")
_AIMCLR = (
    View(
        "extreme",
        "aimclr.extreme_augmentation",
        transform="eadm",
        options=(("threshold", "aimclr.eadm_threshold"),),
        source="aimclr.extreme_augmentation",
    ),
)
_HICLR = "hiclr.branches"
_BRANCH_OPTIONS = {  # the options of HiCLR's strong transforms, by transform
    "mask": (("ratio", "hiclr.mask_ratio"),),
    "adain": (("mode", "hiclr.adain_mode"),),
    "dae": (("rate", "hiclr.dae_rate"),),
}
_NORMAL, _BASIC = "aimclr_normal", "hiclr_basic"  # the same set under AimCLR's/HiCLR's name
_JOINT = ("joint",)

PRESETS: dict[str, Preset] = {
    "baseline": Preset(_JOINT, (_INFONCE,), "Baseline"),
    "halp": Preset(_JOINT, (_INFONCE, _HALP), "HaLP"),
    "cmd": Preset(MODALITIES, (_INFONCE, _CMD), "CMD", linear_lr="cmd"),
    "halp_cmd": Preset(MODALITIES, (_INFONCE, _CMD, _HALP), "HaLP+CMD"),
    "aimclr": Preset(_JOINT, (_NNM, _D3M), "AimCLR", views=_AIMCLR, basic_augmentation=_NORMAL),
    "aimclr_halp": Preset(
        _JOINT, (_NNM, _D3M, _HALP), "AimCLR+HaLP", views=_AIMCLR, basic_augmentation=_NORMAL
    ),
    "hiclr": Preset(_JOINT, (_NNM, _HIERARCHY), "HiCLR", views=_HICLR, basic_augmentation=_BASIC),
    "hiclr_halp": Preset(
        _JOINT, (_NNM, _HIERARCHY, _HALP), "HiCLR+HaLP", views=_HICLR, basic_augmentation=_BASIC
    ),
}
"""Every method, by the name the ``method`` config key and the results files use."""

FINETUNE_LR = 0.01
"""Learning rate of semi-supervised, fine-tuning and transfer evaluation (CMD's protocol)."""

LINEAR_LR = {"cmd": 0.1, "halp_ntu": 0.005, "halp_pku": 0.001}
"""Linear-probe learning rates: CMD's protocol, and the authors' HaLP scripts per dataset.

The HaLP+CMD rows are our reading: the HaLP authors evaluated them, so they get the HaLP
scripts' rates like the Baseline and HaLP rows; CMD's rows are CMD's published protocol."""


def linear_lr(preset_name: str, dataset: str) -> float:
    """A linear-probe learning rate: preset ``cmd`` or ``halp`` (per dataset)."""
    if preset_name == "cmd":
        return LINEAR_LR["cmd"]
    return LINEAR_LR["halp_pku" if dataset.startswith("pku") else "halp_ntu"]


def preset_of(config: PretrainConfig) -> Preset:
    """The preset named by ``config.method``, with ``config.modalities`` applied."""
    if config.method not in PRESETS:
        raise ConfigError(
            f"config key 'method': unknown method {config.method!r}; "
            f"choose one of {', '.join(PRESETS)}"
        )
    preset = PRESETS[config.method]
    if config.modalities:
        bad = [m for m in config.modalities if m not in MODALITIES]
        if bad or len(set(config.modalities)) != len(config.modalities):
            raise ConfigError(
                f"config key 'modalities': {config.modalities} must be distinct names "
                f"among {MODALITIES}"
            )
        preset = dataclasses.replace(preset, modalities=tuple(config.modalities))
    return preset


def _lookup(config: Any, value: Any, what: str) -> Any:
    """``value`` itself, or the value of the dotted config key (or property) it names."""
    if not isinstance(value, str):
        return value
    node: Any = config
    for part in value.split("."):
        if not dataclasses.is_dataclass(node) or not hasattr(node, part):
            raise KeyError(f"a preset's {what} names the config key {value!r}, which is unknown")
        node = getattr(node, part)
    return node


def views_of(config: PretrainConfig, preset: Preset | None = None) -> tuple[View, ...]:
    """The extra query views of ``preset`` (default: ``config.method``'s), resolved.

    Config keys are looked up: a view's augmentation spec, transform and options, or a
    list of HiCLR branches, which become views in order.
    """
    preset = preset or preset_of(config)
    if isinstance(preset.views, str):
        key = preset.views
        views = tuple(
            View(b.name, b.augmentation, b.strong, _BRANCH_OPTIONS.get(b.strong, ()), key)
            for b in _lookup(config, key, "views")
        )
    else:
        views = preset.views
    return tuple(
        dataclasses.replace(
            v,
            augmentation=str(_lookup_key(config, v.augmentation)),
            transform=str(_lookup_key(config, v.transform)),
            options=tuple((k, _lookup_key(config, o)) for k, o in v.options),
        )
        for v in views
    )


def _lookup_key(config: Any, value: Any) -> Any:
    """The value of the dotted config key ``value``, or ``value`` itself if it names none."""
    if not isinstance(value, str) or "." not in value:
        return value
    return _lookup(config, value, "view")


def term_weight(config: Any, term: Term) -> StepWeight:
    """The weight schedule of ``term`` under ``config``."""
    return StepWeight(
        float(_lookup(config, term.weight, "weight")),
        int(_lookup(config, term.start_epoch, "start epoch")),
    )


def term_weights(config: PretrainConfig, epoch: int) -> dict[str, float]:
    """Each term's weight during ``epoch``, by objective name."""
    return {t.objective: term_weight(config, t).at(epoch) for t in preset_of(config).terms}


def check_config(config: Any, preset: Preset, epochs: int, refuse: bool = False) -> list[str]:
    """The preset's own rules for a run of ``epochs`` epochs: warnings, or a refusal.

    A term with a non-zero weight that switches on only at or after the last epoch makes
    the run the method without it, under its name: a warning, or with ``refuse`` a
    ConfigError naming its start key (for a command whose output is a result, such as
    ``halp graphcl``). A zero weight, and a query/key augmentation other than the
    published one, are warnings. ``config`` is the run's configuration (skeleton or graph).
    """
    warnings = []
    label = preset.label or "the method"
    for term in preset.terms:
        weight = term_weight(config, term)
        if weight.value != 0 and weight.start_epoch >= epochs:
            key = term.start_epoch if isinstance(term.start_epoch, str) else "method"
            message = (
                f"the {term.objective} term of {label} starts at epoch {weight.start_epoch} "
                f"but the run has {epochs} epochs: it never switches on, so this run trains "
                f"{label} without it (lower '{key}' below {epochs} or train longer)"
            )
            if refuse:
                raise ConfigError(
                    f"config key '{key}': {message}; a result that claims a method which "
                    "never ran is not written"
                )
            warnings.append(message)
        if weight.value == 0:
            warnings.append(
                f"the {term.objective} term of {label} has weight 0: this run trains "
                f"{label} without it"
            )
    augmentation = getattr(getattr(config, "data", None), "augmentation", None)
    if preset.basic_augmentation and augmentation != preset.basic_augmentation:
        warnings.append(
            f"{preset.label}'s query and key use data.augmentation {augmentation!r}; the "
            f"released basic set is {preset.basic_augmentation!r} (set data.augmentation to "
            "it unless this is meant)"
        )
    return warnings


def inactive_terms(config: Any, epochs_done: int, preset: Preset | None = None) -> list[str]:
    """The terms of the method that never switched on in ``epochs_done`` trained epochs.

    A term with a non-zero weight whose start epoch is not below ``epochs_done``: a
    checkpoint of that many epochs is the method without it, and a result computed from it
    records so (``halp evaluate``: ``inactive_terms``).
    """
    preset = preset or preset_of(config)
    return [
        t.objective
        for t in preset.terms
        if (w := term_weight(config, t)).value != 0 and w.start_epoch >= epochs_done
    ]


_GRAPH = ("graph",)
GRAPH_PRESETS: dict[str, Preset] = {
    "graphcl": Preset(_GRAPH, (Term("nt_xent"),), "GraphCL", framework="graphcl"),
    "graphcl_halp": Preset(_GRAPH, (Term("nt_xent"), _HALP), "GraphCL+HaLP", framework="graphcl"),
}
"""The graph methods (``halp graphcl``, config key ``method``): one stream, ``graph``.

GraphCL's NT-Xent (:mod:`halp.objectives.graphcl`), and for ``graphcl_halp`` the same
HaLP term as the skeleton methods, switched on by the same config keys."""

GRAPH_METHODS: dict[str, str] = {name: p.label for name, p in GRAPH_PRESETS.items()}
"""The graph methods and their display names."""


def method_label(method: str) -> str:
    """The display name of a method preset (the name itself for an unknown one)."""
    preset = PRESETS.get(method)
    if preset is None:
        return GRAPH_METHODS.get(method, method)
    return preset.label or method
