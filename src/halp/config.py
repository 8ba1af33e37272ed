"""Strict, typed configuration: dataclass defaults < YAML file < ``--set key=value``.

Unknown keys and values of the wrong type are errors that name the key. The defaults
are the paper's hyperparameters (REFERENCE.md §1, §4); the resolved configuration is
saved with every checkpoint and result.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration key is unknown, missing or has a value of the wrong type."""


# ------------------------------------------------------------------------ sections


@dataclasses.dataclass
class EncoderConfig:
    """The BiGRU encoder (REFERENCE.md §4)."""

    hidden_size: int = 1024  # per direction; features are 2 x hidden_size
    num_layers: int = 3
    proj_hidden: int = 2048
    out_dim: int = 128  # the contrastive embedding
    # the authors' step-by-step GRU, whose "backward" half also runs forward in time
    reference_forward: bool = False


@dataclasses.dataclass
class DataConfig:
    """Where the prepared benchmark lives and how clips are drawn from it."""

    root: str = "data/ntu60/xsub"  # a benchmark folder written by `halp prepare`
    frames: int = 64  # clip length after temporal crop-resize
    scale: tuple[float, float] = (0.1, 1.0)  # pretraining crop scale U(a, b)
    augmentation: str = "isc"  # a preset or augmentation name of halp.augment
    workers: int = 4  # DataLoader worker processes


@dataclasses.dataclass
class MocoConfig:
    queue_size: int = 16384  # L
    momentum: float = 0.999  # m of the key encoder
    temperature: float = 0.07  # tau of InfoNCE and of L_HaLP


@dataclasses.dataclass
class HalpConfig:
    """Positive hallucination (paper §3, REFERENCE.md §1)."""

    num_prototypes: int = 20  # N
    top_k: int = 256  # most recent queue entries clustered into prototypes
    refresh_every: int = 5  # iterations between prototype refreshes (reference code: 10)
    num_positives: int = 100  # hallucinated positives per anchor
    lam: float = 0.8  # lambda: t_c ~ U(0, lambda t*)
    mu: float = 1.0  # weight of L_HaLP once active
    mu_start_epoch: int = 200  # mu = 0 before this epoch (paper)
    # keys enqueued after mu switches on before positives are generated (reference: 2 L + 1)
    warmup_samples: int = 0
    tc_sampling: Literal["paper", "reference", "fixed"] = "paper"
    t_star: Literal["paper", "reference"] = "paper"  # reference: plain atan, as the code
    anchor: Literal["key", "query"] = "key"
    generator: Literal["prototype", "qk_slerp"] = "prototype"
    kmeans_backend: Literal["torch", "geomstats"] = "torch"
    kmeans_iters: int = 50


@dataclasses.dataclass
class CmdConfig:
    """Cross-modal mutual distillation (CMD, REFERENCE.md §4)."""

    topk: int = 8192
    teacher_temperature: float = 0.05
    student_temperature: float = 0.1
    weight: float = 1.0


@dataclasses.dataclass
class OptimConfig:
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 64  # over all processes
    epochs: int = 451
    lr_steps: list[int] = dataclasses.field(default_factory=lambda: [351])
    lr_gamma: float = 0.1


@dataclasses.dataclass
class LogConfig:
    wandb: Literal["offline", "online", "disabled"] = "offline"
    wandb_project: str = "halp-repro"
    knn_every: int = 5  # epochs between kNN evaluations (0: never)
    save_every: int = 50  # keep checkpoint_XXXX.pt every this many epochs (0: latest only)
    progress: bool = True  # tqdm bar


@dataclasses.dataclass
class PretrainConfig:
    """Everything `halp pretrain` needs; the defaults reproduce the paper on NTU."""

    method: str = "halp"  # a preset of halp.methods: baseline, halp, cmd, halp_cmd
    # modalities trained; empty = the method's own (joint, or joint/motion/bone for CMD)
    modalities: list[str] = dataclasses.field(default_factory=list)
    seed: int = 42
    device: str = "auto"  # auto, cpu, cuda, cuda:1, ...
    encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    moco: MocoConfig = dataclasses.field(default_factory=MocoConfig)
    halp: HalpConfig = dataclasses.field(default_factory=HalpConfig)
    cmd: CmdConfig = dataclasses.field(default_factory=CmdConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    log: LogConfig = dataclasses.field(default_factory=LogConfig)


@dataclasses.dataclass
class EvalConfig:
    """``halp evaluate``: the downstream protocols of REFERENCE.md §5.

    ``linear`` trains a new classifier on the frozen encoder; ``semi``, ``finetune`` and
    ``transfer`` fine-tune the whole network (``semi`` on a fraction of the labels,
    ``transfer`` on another dataset than the checkpoint's); ``knn`` needs no training.
    """

    protocol: Literal["linear", "knn", "semi", "finetune", "transfer"] = "linear"
    checkpoint: str = ""  # a `halp pretrain` checkpoint
    # "random": the checkpoint's architecture with fresh weights (the random-init control)
    encoder_init: Literal["pretrained", "random"] = "pretrained"
    data_root: str = "data/ntu60/xsub"  # the benchmark to evaluate on
    modality: str = ""  # which branch of the checkpoint; empty = its first
    seed: int = 42
    device: str = "auto"
    workers: int = 4
    frames: int = 64
    # classifier fitting (linear, semi, finetune, transfer)
    lr: float | None = None  # None: from lr_preset
    lr_preset: Literal["cmd", "halp"] = "cmd"  # linear: cmd 0.1, halp 0.005 NTU / 0.001 PKU
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: int = 80
    lr_steps: list[int] = dataclasses.field(default_factory=lambda: [50, 70])
    lr_gamma: float = 0.1
    eval_every: int = 5  # test accuracy every this many epochs, for best_on_test
    scale: tuple[float, float] = (0.5, 1.0)  # training crop scale
    # semi-supervised
    label_fraction: float = 1.0
    sampler: Literal["random", "per_class"] = "random"
    repeats: int = 1  # semi: 5 in the paper's protocol
    # knn
    k: int = 1


# ------------------------------------------------------------------------ loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it in canonical form."""
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(f"config key '{key}': {value!r} is not one of {choices}")
        return value
    if origin in (types.UnionType, typing.Union):
        for option in get_args(tp):
            try:
                return _convert(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}': {value!r} does not match {_type_name(tp)}")
    if origin in (list, tuple):
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple:
            if len(value) != len(args):
                raise ConfigError(f"config key '{key}': expected {len(args)} values, got {value!r}")
            return tuple(
                _convert(v, a, f"{key}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        return [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"config key '{key}': expected null, got {value!r}")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{key}': expected a mapping of {_type_name(tp)} keys")
        return from_dict(tp, value, prefix=f"{key}.")
    raise ConfigError(f"config key '{key}': unsupported type {tp!r}")  # pragma: no cover


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, strictly (unknown keys are errors)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
        raise ConfigError(
            f"config key '{prefix}{key}' is unknown{hint}; "
            f"known keys here: {', '.join(prefix + f for f in fields)}"
        )
    kwargs = {name: _convert(value, hints[name], prefix + name) for name, value in data.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """The plain-data form of a config (tuples become lists), as saved in checkpoints."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, raw = item.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def merge_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (values parsed as YAML) to a nested mapping."""
    merged: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for item in overrides:
        path, value = _parse_override(item)
        node = merged
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {} if child is None else child
                if not isinstance(child, dict):
                    raise ConfigError(f"override {item!r}: '{part}' is not a section")
            node[part] = dict(child)
            node = node[part]
        node[path[-1]] = value
    return merged


def load_config(cls: type[T], path: Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Defaults < YAML file ``path`` < ``overrides``; strict at every level."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of config keys")
        data = loaded or {}
        try:
            from_dict(cls, data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    return from_dict(cls, merge_overrides(data, overrides))
