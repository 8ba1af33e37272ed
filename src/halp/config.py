"""Strict, typed configuration: dataclass defaults < YAML file < ``--set key=value``.

Unknown keys and values of the wrong type are errors that name the key. The defaults
are the paper's hyperparameters (Sec. 4.2); the resolved configuration is
saved with every checkpoint and result.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from halp.errors import ConfigError
from halp.resources import BUILTIN_PREFIX, builtin_config_text, builtin_configs

T = TypeVar("T")


# ------------------------------------------------------------------------ sections


def _require(ok: bool, key: str, value: Any, rule: str) -> None:
    """Raise a ConfigError naming ``key`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"config key '{key}': {value!r} is invalid; it must be {rule}")


MAX_SEED = 2**32 - 1
"""The largest seed: numpy's legacy generators and DataLoader workers take 32-bit seeds."""
MAX_WIDTH = 4096
"""The widest layer (4 times the paper's BiGRU width of 1024): a BiGRU layer that wide
holds about 1.2 GB of weights, and twice as wide 4.8 GB, beyond what the machines we
target (and the paper's) can train; a larger value is a typo, refused before allocating."""
MAX_COUNT = 1 << 30
"""The upper bound of counts with no natural limit (epochs, queue, batch, steps)."""


def _seed(value: int, key: str) -> None:
    """Check a seed: an integer in 0..MAX_SEED."""
    _require(0 <= value <= MAX_SEED, key, value, f"in 0..{MAX_SEED} (2**32 - 1)")


def _count(value: int, key: str, low: int, high: int = MAX_COUNT) -> None:
    """Check an integer count: in ``low..high``."""
    _require(low <= value <= high, key, value, f"in {low}..{high}")


def _finite(value: float, key: str) -> None:
    """Check a float: finite (not NaN or infinite)."""
    _require(math.isfinite(value), key, value, "a finite number")


@dataclasses.dataclass
class EncoderConfig:
    """The skeleton encoder: the paper's BiGRU (Sec. 4.2) or AimCLR/HiCLR's ST-GCN."""

    arch: Literal["bigru", "stgcn"] = "bigru"
    hidden_size: int = 1024  # BiGRU: per direction; features are 2 x hidden_size
    num_layers: int = 3  # BiGRU layers
    proj_hidden: int = 2048  # the projection head's hidden width (ST-GCN as released: 256)
    out_dim: int = 128  # the contrastive embedding
    # the authors' step-by-step GRU, whose "backward" half also runs forward in time
    reference_forward: bool = False
    # ST-GCN (1/4 width, AimCLR/HiCLR): block widths w,w,w,w,2w,2w,2w,4w,4w,feature_dim
    width: int = 16
    feature_dim: int = 256
    dropout: float = 0.5  # in ST-GCN blocks 2-10 during pretraining, as released

    def __post_init__(self) -> None:
        """Check value ranges when the configuration is built, before any training."""
        for key in ("hidden_size", "proj_hidden", "out_dim", "width", "feature_dim"):
            _count(getattr(self, key), f"encoder.{key}", 1, MAX_WIDTH)
        _count(self.num_layers, "encoder.num_layers", 1, 64)
        _require(0.0 <= self.dropout < 1.0, "encoder.dropout", self.dropout, "in [0, 1)")


@dataclasses.dataclass
class DataConfig:
    """Where the prepared benchmark lives and how clips are drawn from it."""

    root: str = "data/ntu60/xsub"  # a benchmark folder written by `halp prepare`
    frames: int = 64  # clip length after temporal crop-resize
    scale: tuple[float, float] = (0.1, 1.0)  # pretraining crop scale U(a, b)
    augmentation: str = "isc"  # a preset or augmentation name of halp.data.augment
    workers: int = 4  # DataLoader worker processes
    # how `halp prepare` normalised data.root (--recipe); a folder of the other is refused
    recipe: Literal["2s-agcn", "crossclr", "nwucla"] = "2s-agcn"
    # the skeleton layout of data.root (halp.data.layouts): the encoder is built for it
    layout: Literal["ntu25", "kinect20"] = "ntu25"

    def __post_init__(self) -> None:
        """Check value ranges when the configuration is built, before any training."""
        _count(self.frames, "data.frames", 1, 10_000)
        _count(self.workers, "data.workers", 0, 1024)
        a, b = self.scale
        _require(0.0 < a <= b <= 1.0, "data.scale", list(self.scale), "[a, b] with 0 < a <= b <= 1")


@dataclasses.dataclass
class MocoConfig:
    """MoCo (paper Sec. 3.1, Eq. 1): the key queue, the momentum encoder and tau."""

    queue_size: int = 16384  # L
    momentum: float = 0.999  # m of the key encoder
    temperature: float = 0.07  # tau of InfoNCE and of L_HaLP

    def __post_init__(self) -> None:
        """Check value ranges when the configuration is built, before any training."""
        _count(self.queue_size, "moco.queue_size", 1, 1 << 24)
        _require(0.0 <= self.momentum <= 1.0, "moco.momentum", self.momentum, "in [0, 1]")
        ok = 0 < self.temperature < math.inf
        _require(ok, "moco.temperature", self.temperature, "positive and finite")


@dataclasses.dataclass
class HalpConfig:
    """Positive hallucination (paper Sec. 3.2-3.6; defaults of Sec. 4.2)."""

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
    # P_sel among all N - 1 other prototypes (paper) or the 20 nearest after p* (reference)
    psel: Literal["paper", "reference"] = "paper"
    t_star: Literal["paper", "reference"] = "paper"  # reference: plain atan, as the code
    anchor: Literal["key", "query"] = "key"
    generator: Literal["prototype", "qk_slerp"] = "prototype"
    kmeans_backend: Literal["torch", "geomstats"] = "torch"
    kmeans_iters: int = 50

    def __post_init__(self) -> None:
        """Check value ranges when the configuration is built, before any training."""
        _count(self.num_prototypes, "halp.num_prototypes", 2, 1 << 16)
        _require(
            self.top_k >= self.num_prototypes,
            "halp.top_k",
            self.top_k,
            f"at least halp.num_prototypes ({self.num_prototypes})",
        )
        _count(self.top_k, "halp.top_k", 2, 1 << 24)
        _count(self.refresh_every, "halp.refresh_every", 1)
        _count(self.num_positives, "halp.num_positives", 1, 1 << 16)
        _require(0.0 <= self.lam <= 1.0, "halp.lam", self.lam, "in [0, 1]")
        _require(0.0 <= self.mu < math.inf, "halp.mu", self.mu, "a finite number, 0 or more")
        _count(self.mu_start_epoch, "halp.mu_start_epoch", 0)
        _count(self.warmup_samples, "halp.warmup_samples", 0)
        _count(self.kmeans_iters, "halp.kmeans_iters", 0, 100_000)


@dataclasses.dataclass
class CmdConfig:
    """Cross-modal mutual distillation (CMD, Mao et al. 2022; HaLP+CMD in paper Sec. 4.3)."""

    topk: int = 8192
    teacher_temperature: float = 0.05
    student_temperature: float = 0.1
    weight: float = 1.0

    def __post_init__(self) -> None:
        """Check value ranges when the configuration is built, before any training."""
        _count(self.topk, "cmd.topk", 1, 1 << 24)
        for key in ("teacher_temperature", "student_temperature"):
            value = getattr(self, key)
            _require(0 < value < math.inf, f"cmd.{key}", value, "positive and finite")
        _require(0 <= self.weight < math.inf, "cmd.weight", self.weight, "finite, 0 or more")


@dataclasses.dataclass
class MiningConfig:
    """Nearest-neighbour mining (AimCLR Sec. 3.4; HiCLR keeps it): extra positives.

    From ``start_epoch`` on, InfoNCE of the query becomes a multi-positive loss whose
    positives are the key and, for the query and every extra view of the method, the
    ``topk`` queue entries most similar to it. Released: top-1 after epoch 150 of 300; its
    loop passes 1-based epochs to ``epoch <= 150`` (plain InfoNCE), so the first mined
    epoch is the 151st, 0-based 150, as here.
    """

    start_epoch: int = 150
    topk: int = 1

    def __post_init__(self) -> None:
        """Check value ranges when the configuration is built, before any training."""
        _count(self.start_epoch, "mining.start_epoch", 0)
        _count(self.topk, "mining.topk", 1, 1 << 24)


@dataclasses.dataclass
class AimclrConfig:
    """AimCLR (Guo et al., AAAI 2022): the extreme view, EADM and D3M."""

    extreme_augmentation: str = "aimclr_extreme"  # the extreme view's augmentation spec
    eadm_threshold: float = 0.7  # EADM drops positions whose attention is at least this
    weight: float = 1.0  # of L_D3M = (CE(p_n, p_e) + CE(p_n, p_ed)) / 2

    def __post_init__(self) -> None:
        """Check value ranges when the configuration is built, before any training."""
        # attention = sigmoid(e) with e >= 0.5: a threshold at or below sigmoid(0.5) drops all
        _require(
            self.eadm_threshold > 0.6225,
            "aimclr.eadm_threshold",
            self.eadm_threshold,
            "above sigmoid(0.5) = 0.6225 (lower drops everything; above 1 drops nothing)",
        )
        _require(0 <= self.weight < math.inf, "aimclr.weight", self.weight, "finite, 0 or more")


@dataclasses.dataclass
class BranchConfig:
    """One query branch of HiCLR beyond the basic one: its augmentation and strong part."""

    name: str = "normal"
    augmentation: str = "hiclr_normal"  # applied at load time (an augmentation spec)
    # applied in the model step: HiCLR's learnable joint mask, SkeleAdaIN style swap,
    # Drop-Edges in every ST-GCN block (DAE), or nothing
    strong: Literal["none", "mask", "adain", "dae"] = "none"

    def __post_init__(self) -> None:
        """Check value ranges when the configuration is built, before any training."""
        ok = self.name.isidentifier() and self.name not in ("query", "key")
        _require(ok, "hiclr.branches[].name", self.name, "an identifier other than query/key")


def _hiclr_branches() -> list[BranchConfig]:
    return [
        BranchConfig("normal", "hiclr_normal", "none"),
        BranchConfig("strong", "hiclr_normal", "mask"),
    ]


@dataclasses.dataclass
class HiclrConfig:
    """HiCLR (Zhang et al., AAAI 2023): growing augmentation branches, hierarchical loss.

    The basic branch is the query (``data.augmentation``); ``branches`` are the stronger
    ones in order (k = 1 + len(branches)); L_h chains basic -> branch 1 -> branch 2 ...
    """

    branches: list[BranchConfig] = dataclasses.field(default_factory=_hiclr_branches)
    mask_ratio: float = 0.1  # joints masked per frame: int(mask_ratio * 25)
    adain_mode: Literal["TV", "V"] = "V"  # SkeleAdaIN statistics: over (T, V) or per frame
    dae_rate: float = 0.1  # DAE: per block, edges dropped with probability U(0, dae_rate)
    # lambda_h; None: 1 / (k - 1), as released
    weight: float | None = None

    def __post_init__(self) -> None:
        """Check value ranges when the configuration is built, before any training."""
        _require(0.0 <= self.mask_ratio < 1.0, "hiclr.mask_ratio", self.mask_ratio, "in [0, 1)")
        _require(0.0 <= self.dae_rate < 1.0, "hiclr.dae_rate", self.dae_rate, "in [0, 1)")
        names = [b.name for b in self.branches]
        _require(len(set(names)) == len(names), "hiclr.branches", names, "uniquely named")
        if self.weight is not None:
            ok = 0 <= self.weight < math.inf
            _require(ok, "hiclr.weight", self.weight, "finite, 0 or more (or null)")

    @property
    def hierarchy_weight(self) -> float:
        """lambda_h: ``weight``, or 1 / (k - 1) (0 with no branch beyond the basic one)."""
        if self.weight is not None:
            return self.weight
        return 1.0 / len(self.branches) if self.branches else 0.0


@dataclasses.dataclass
class OptimConfig:
    """SGD and its step schedule (paper Sec. 4.2)."""

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 64  # over all processes
    epochs: int = 451
    lr_steps: list[int] = dataclasses.field(default_factory=lambda: [351])
    lr_gamma: float = 0.1
    # encoders in bf16 autocast (losses, PosHal and k-means stay fp32); fp32 until the
    # device check shows equal losses on a GPU (benchmarks/gpu_check.py)
    precision: Literal["fp32", "bf16"] = "fp32"
    tf32: bool = False  # TF32 matmuls and convolutions on CUDA (Ampere and later)

    def __post_init__(self) -> None:
        """Check value ranges when the configuration is built, before any training."""
        _require(0.0 <= self.lr < float("inf"), "optim.lr", self.lr, "a finite number >= 0")
        _require(0.0 <= self.momentum <= 1.0, "optim.momentum", self.momentum, "in [0, 1]")
        _finite(self.weight_decay, "optim.weight_decay")
        _count(self.batch_size, "optim.batch_size", 1, 1 << 20)
        _count(self.epochs, "optim.epochs", 1, 1_000_000)
        for i, step in enumerate(self.lr_steps):
            _count(step, f"optim.lr_steps[{i}]", 0, 1_000_000)
        _require(0 < self.lr_gamma < math.inf, "optim.lr_gamma", self.lr_gamma, "positive")


@dataclasses.dataclass
class LogConfig:
    """What a run records besides its checkpoints: wandb, kNN monitor, snapshots."""

    wandb: Literal["offline", "online", "disabled"] = "offline"
    wandb_project: str = "halp-repro"
    knn_every: int = 5  # epochs between kNN evaluations (0: never)
    sync_every: int = 50  # steps between reads of device values (progress, NaN check)
    save_every: int = 50  # keep checkpoint_XXXX.pt every this many epochs (0: latest only)
    progress: bool = True  # tqdm bar
    # representation health (halp.eval.health) on this many fixed training clips (0: off)
    health_samples: int = 256
    health_every: int = 5  # epochs between health measurements (and the first epoch)
    collapse_cosine: float = 0.8  # warn when the probe's mean pairwise cosine exceeds this

    def __post_init__(self) -> None:
        """Check value ranges when the configuration is built, before any training."""
        _count(self.knn_every, "log.knn_every", 0)
        _count(self.sync_every, "log.sync_every", 1)
        _count(self.save_every, "log.save_every", 0)
        _count(self.health_samples, "log.health_samples", 0, 1 << 16)
        _count(self.health_every, "log.health_every", 1)
        _require(
            -1.0 <= self.collapse_cosine <= 1.0,
            "log.collapse_cosine",
            self.collapse_cosine,
            "in [-1, 1]",
        )


@dataclasses.dataclass
class PretrainConfig:
    """Everything `halp pretrain` needs; the defaults reproduce the paper on NTU."""

    method: str = "halp"  # a preset of halp.methods: baseline, halp, cmd, halp_cmd, aimclr, ...
    # modalities trained; empty = the method's own (joint, or joint/motion/bone for CMD)
    modalities: list[str] = dataclasses.field(default_factory=list)
    seed: int = 42
    device: str = "auto"  # auto, cpu, cuda, cuda:1, ...
    encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    moco: MocoConfig = dataclasses.field(default_factory=MocoConfig)
    halp: HalpConfig = dataclasses.field(default_factory=HalpConfig)
    cmd: CmdConfig = dataclasses.field(default_factory=CmdConfig)
    mining: MiningConfig = dataclasses.field(default_factory=MiningConfig)
    aimclr: AimclrConfig = dataclasses.field(default_factory=AimclrConfig)
    hiclr: HiclrConfig = dataclasses.field(default_factory=HiclrConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    log: LogConfig = dataclasses.field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        """Check value ranges when the configuration is built, before any training."""
        _seed(self.seed, "seed")
        queue = self.moco.queue_size
        _require(
            self.halp.top_k <= queue,
            "halp.top_k",
            self.halp.top_k,
            f"at most moco.queue_size ({queue}): prototypes come from the queue's newest keys",
        )

    @property
    def tau(self) -> float:
        """The contrastive temperature of the run's framework (MoCo's, paper Eq. 1 and 8)."""
        return self.moco.temperature


@dataclasses.dataclass
class EvalConfig:
    """``halp evaluate``: the downstream protocols (paper Sec. 4.2-4.3).

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
    frames: int | None = None  # clip length; None: the checkpoint's data.frames
    # classifier fitting (linear, semi, finetune, transfer)
    lr: float | None = None  # None: from lr_preset
    # linear: "published" = the preset of the protocol behind the method's published rows
    # (halp.methods.Preset.linear_lr); cmd 0.1; halp 0.005 NTU / 0.001 PKU
    lr_preset: Literal["published", "cmd", "halp"] = "published"
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: int = 80
    lr_steps: list[int] = dataclasses.field(default_factory=lambda: [50, 70])
    lr_gamma: float = 0.1
    eval_every: int = 5  # test accuracy every this many epochs, for best_on_test
    scale: tuple[float, float] = (0.5, 1.0)  # training crop scale
    keep: float = 0.95  # test (and kNN) clips: the centred fraction of the valid frames
    # semi-supervised
    label_fraction: float = 1.0
    sampler: Literal["random", "per_class"] = "random"
    repeats: int = 1  # semi: 5 in the paper's protocol
    # knn
    k: int = 1

    def __post_init__(self) -> None:
        """Check value ranges when the configuration is built, before any training."""
        _seed(self.seed, "seed")
        for key in ("batch_size", "epochs", "eval_every", "repeats", "k"):
            _count(getattr(self, key), key, 1, 1_000_000)
        if self.frames is not None:
            _count(self.frames, "frames", 1, 10_000)
        _count(self.workers, "workers", 0, 1024)
        _require(0.0 <= self.momentum <= 1.0, "momentum", self.momentum, "in [0, 1]")
        _finite(self.weight_decay, "weight_decay")
        _require(0 < self.lr_gamma < math.inf, "lr_gamma", self.lr_gamma, "positive")
        for i, step in enumerate(self.lr_steps):
            _count(step, f"lr_steps[{i}]", 0, 1_000_000)
        _require(0.0 < self.keep <= 1.0, "keep", self.keep, "in (0, 1]")
        fraction = self.label_fraction
        _require(0.0 < fraction <= 1.0, "label_fraction", fraction, "in (0, 1]")
        if self.lr is not None:
            _require(0.0 < self.lr < float("inf"), "lr", self.lr, "a finite positive number")


@dataclasses.dataclass
class SvmConfig:
    """The graph protocol: RBF SVM, C by inner CV inside an outer stratified k-fold."""

    folds: int = 10  # outer StratifiedKFold (shuffled, seeded by the run's seed)
    inner_folds: int = 5  # GridSearchCV's cv=5 (StratifiedKFold, not shuffled)
    c_grid: list[float] = dataclasses.field(
        default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3]
    )
    workers: int = 2  # processes over the outer folds (1: in-process)

    def __post_init__(self) -> None:
        """Check value ranges when the configuration is built, before any training."""
        _require(self.folds >= 2, "svm.folds", self.folds, "at least 2")
        _require(self.inner_folds >= 2, "svm.inner_folds", self.inner_folds, "at least 2")
        _require(
            len(self.c_grid) >= 1 and all(c > 0 for c in self.c_grid),
            "svm.c_grid",
            self.c_grid,
            "a non-empty list of positive numbers",
        )
        _require(self.workers >= 1, "svm.workers", self.workers, "at least 1")


def _graph_halp() -> HalpConfig:
    """HaLP inside GraphCL (our reading): mu = 1 from the middle epoch, Sec. 4.2's PosHal."""
    return HalpConfig(mu=1.0, mu_start_epoch=10)


@dataclasses.dataclass
class GraphCLConfig:
    """GraphCL (You et al. 2020) on TU graphs, with or without HaLP (the poster's graph table).

    ``method: graphcl_halp`` adds mu L_HaLP from ``halp.mu_start_epoch`` (our reading:
    anchors = detached view-2 projections, prototypes from a FIFO of the last
    ``halp.top_k`` anchors, tau = ``temperature``); docs/methods/graphcl.md, "HaLP inside GraphCL".
    """

    method: Literal["graphcl", "graphcl_halp"] = "graphcl"
    dataset: str = "MUTAG"
    root: str = "data/tu"  # holds DATASET/raw/DATASET_*.txt (`halp prepare tu`)
    seed: int = 0
    # views (halp.data.graph_augment)
    aug_set: Literal["random2", "random3", "random4"] = "random2"
    subgraph: Literal["released", "walk"] = "released"
    edge_perturbation: Literal["released", "paper"] = "released"
    self_loops: Literal["released", "none"] = "released"
    drop_ratio: float = 0.1
    subgraph_ratio: float = 0.2
    perturb_ratio: float = 0.1
    mask_ratio: float = 0.1
    # encoder and optimisation (the released unsupervised_TU code)
    hidden: int = 32
    layers: int = 3
    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.01
    temperature: float = 0.2
    halp: HalpConfig = dataclasses.field(default_factory=_graph_halp)
    svm: SvmConfig = dataclasses.field(default_factory=SvmConfig)
    threads: int = 1  # torch CPU threads (small graphs: 1 is fastest); 0: torch's default

    def __post_init__(self) -> None:
        """Check value ranges when the configuration is built, before any training."""
        _seed(self.seed, "seed")
        ok = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", self.dataset) is not None
        _require(ok, "dataset", self.dataset, "a TU name: letters, digits, '_', '-' (no '/')")
        _count(self.hidden, "hidden", 1, MAX_WIDTH)
        _count(self.layers, "layers", 1, 64)
        _count(self.epochs, "epochs", 1, 1_000_000)
        _count(self.batch_size, "batch_size", 1, 1 << 20)
        for key in ("drop_ratio", "subgraph_ratio", "perturb_ratio", "mask_ratio"):
            value = getattr(self, key)
            _require(0.0 <= value < 1.0, key, value, "in [0, 1)")
        _require(0 < self.lr < math.inf, "lr", self.lr, "positive and finite")
        _require(0 < self.temperature < math.inf, "temperature", self.temperature, "positive")
        _require(self.batch_size >= 2, "batch_size", self.batch_size, "at least 2 (NT-Xent)")
        _count(self.threads, "threads", 0, 1024)
        # keys of the skeleton methods' HaLP that have no meaning inside GraphCL
        _require(
            self.halp.anchor == "key",
            "halp.anchor",
            self.halp.anchor,
            "'key' in GraphCL (its anchors are the detached view-2 projections)",
        )
        _require(
            self.halp.warmup_samples == 0,
            "halp.warmup_samples",
            self.halp.warmup_samples,
            "0 in GraphCL (prototypes wait for halp.top_k anchors in the FIFO instead)",
        )

    @property
    def tau(self) -> float:
        """The contrastive temperature of the run's framework (GraphCL's NT-Xent)."""
        return self.temperature


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
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string: accept the forms typed
            try:
                value = float(value)
            except ValueError:
                pass
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
        return from_dict(typing.cast(type, tp), value, prefix=f"{key}.")
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
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        problem = str(err).splitlines()[0]
        raise ConfigError(
            f"override {item!r}: the value is not valid YAML ({problem}); quote it or fix it"
        ) from None
    return key.strip().split("."), value


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


def load_config(cls: type[T], path: Path | str | None = None, overrides: Sequence[str] = ()) -> T:
    """Defaults < YAML file ``path`` < ``overrides``; strict at every level.

    ``path`` may name a configuration shipped with the package as ``builtin:NAME``
    (:mod:`halp.resources`), e.g. ``builtin:smoke``.
    """
    data: dict[str, Any] = {}
    if path is not None:
        text, where = _config_text(path)
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{where}: not valid YAML: {err}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{where}: the top level must be a mapping of config keys")
        data = loaded or {}
        try:
            from_dict(cls, data)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
    return from_dict(cls, merge_overrides(data, overrides))


def _config_text(path: Path | str) -> tuple[str, str]:
    """The YAML text of a config file or ``builtin:NAME``, and how to name it in errors."""
    name = str(path)
    if name.startswith(BUILTIN_PREFIX):
        builtin = name.removeprefix(BUILTIN_PREFIX)
        text = builtin_config_text(builtin)
        if text is None:
            raise ConfigError(
                f"{name}: no such built-in configuration; known: "
                + ", ".join(BUILTIN_PREFIX + n for n in builtin_configs())
            )
        return text, name
    try:
        return Path(path).read_text(encoding="utf-8"), name
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not a text (UTF-8) YAML file (byte {err.start}); give a YAML config"
        ) from None
