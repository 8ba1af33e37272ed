"""The paper's published numbers (Tables 1-6 and the ablations of Sec. 4.3-4.4), as printed.

Values are strings, exactly as printed, so that their precision (``77.92`` has two
decimals, every other accuracy one) survives and the tables can show a difference at the
published precision. All accuracies are top-1 in percent, joint stream only; ``None``
means the paper gives no number for that cell. Nothing here is trained or measured.

Keys: methods are the presets of :mod:`halp.methods` (``baseline``, ``halp``, ``cmd``,
``halp_cmd``); benchmarks are ``(dataset, split)`` with datasets ``ntu60``, ``ntu120``,
``pku2`` and splits ``xsub``, ``xview``, ``xset``.
"""

from __future__ import annotations

from dataclasses import dataclass

# The methods of the paper's Tables 1-4, in its row order (presets of halp.methods).
METHODS = ("baseline", "halp", "cmd", "halp_cmd")

DATASET_LABELS = {"ntu60": "NTU-60", "ntu120": "NTU-120", "pku2": "PKU-II"}
SPLIT_LABELS = {"xsub": "x-sub", "xview": "x-view", "xset": "x-set"}

Benchmark = tuple[str, str]
LINEAR_BENCHMARKS: tuple[Benchmark, ...] = (
    ("ntu60", "xsub"),
    ("ntu60", "xview"),
    ("ntu120", "xsub"),
    ("ntu120", "xset"),
    ("pku2", "xsub"),
)
KNN_BENCHMARKS: tuple[Benchmark, ...] = LINEAR_BENCHMARKS[:4]  # the paper has no PKU-II kNN


def benchmark_label(dataset: str, split: str) -> str:
    """``("ntu60", "xsub")`` -> ``"NTU-60 x-sub"``."""
    return f"{DATASET_LABELS.get(dataset, dataset)} {SPLIT_LABELS.get(split, split)}"


def _row(*values: str) -> dict[Benchmark, str]:
    return dict(zip(LINEAR_BENCHMARKS, values, strict=False))


# Paper Table 1 (Sec. 4.3), linear evaluation, joint only.
LINEAR: dict[str, dict[Benchmark, str]] = {
    "baseline": _row("78.0", "85.5", "69.1", "69.8", "42.9"),
    "halp": _row("79.7", "86.8", "71.1", "72.2", "43.5"),
    "cmd": _row("79.8", "86.9", "70.3", "71.5", "43.0"),
    "halp_cmd": _row("82.1", "88.6", "72.6", "73.1", "47.5"),
}

# Paper Table 2 (Sec. 4.3), kNN (k = 1) evaluation, joint only;
# the paper reports no PKU-II kNN ("–").
KNN: dict[str, dict[Benchmark, str]] = {
    "baseline": _row("63.6", "82.8", "51.7", "55.3"),
    "halp": _row("65.8", "83.6", "55.8", "59.0"),
    "cmd": _row("70.6", "85.4", "58.3", "60.9"),
    "halp_cmd": _row("71.0", "86.4", "59.4", "61.9"),
}

# Paper Table 3 (Sec. 4.3), transfer to PKU-II x-sub after pretraining on NTU-60 /
# NTU-120 x-sub.
TRANSFER_SOURCES = ("ntu60", "ntu120")
TRANSFER_TARGET = "pku2"
TRANSFER: dict[str, dict[str, str]] = {
    "baseline": {"ntu60": "53.3", "ntu120": "53.4"},
    "halp": {"ntu60": "54.8", "ntu120": "55.4"},
    "cmd": {"ntu60": "56.0", "ntu120": "57.0"},
    "halp_cmd": {"ntu60": "56.6", "ntu120": "57.3"},
}

# Paper Table 4 (Sec. 4.4), computational overhead relative to the baseline: time per
# epoch and memory.
OVERHEAD: dict[str, dict[str, str]] = {
    "time": {"baseline": "1", "halp": "1.13", "cmd": "3", "halp_cmd": "3.32"},
    "memory": {"baseline": "1", "halp": "1", "cmd": "1.94", "halp_cmd": "1.94"},
}

# The paper's ablations (Sec. 4.4), NTU-60 x-sub linear, joint only.
# Table 5: lambda (t_c ~ U(0, lambda t*)); the default is 0.8.
LAMBDA: dict[str, str] = {"1": "79.7", "0.8": "79.7", "0.6": "79.6", "0.4": "79.6", "0.2": "79.5"}
LAMBDA_DEFAULT = "0.8"
# Table 6: the number of prototypes N; the default is 20.
PROTOTYPES: dict[int, str] = {10: "79.5", 20: "79.7", 40: "79.5", 60: "79.5"}
PROTOTYPES_DEFAULT = 20


@dataclass(frozen=True)
class Ablation:
    """One row of the remaining ablations: a results variant and the paper's number."""

    variant: str
    label: str
    published: str | None  # None: not in the paper (an option of this package)


# The other ablations of Sec. 4.4: "t_c = t* only -> 79.4; anchor = query -> 77.9;
# slerp between q and k instead of towards a prototype -> 77.92; baseline -> 78.0".
# The reference-code options are this package's, with no published number.
ABLATIONS: tuple[Ablation, ...] = (
    Ablation("baseline", "Baseline (no hallucination)", "78.0"),
    Ablation("halp", "HaLP (paper defaults)", "79.7"),
    Ablation("halp-tcfixed", "HaLP, t_c = t* only", "79.4"),
    Ablation("halp-anchorq", "HaLP, anchor = query", "77.9"),
    Ablation("halp-qkslerp", "HaLP, slerp from k towards q", "77.92"),
    Ablation("halp-reftc", "HaLP, reference-code t_c sampling", None),
    Ablation("halp-refgru", "HaLP, reference-code GRU", None),
    Ablation("baseline-refgru", "Baseline, reference-code GRU", None),
)


@dataclass(frozen=True)
class Cited:
    """A literature row: numbers this package cites and does not train."""

    label: str
    values: dict[Benchmark, str]
    source: str


# Table 1 literature rows transcribed here (the poster: "AimCLR 74.3 ->
# AimCLR+HaLP 75.2 (NTU60 xsub)"). ISC, CrosSCLR-B, LongT GAN, MS2L, P&C, AS-CAL,
# H-Transformer, SKT, GL-Transformer and SeBiReNet are not transcribed, so they are left out.
LINEAR_CITED: tuple[Cited, ...] = (
    Cited("AimCLR", {("ntu60", "xsub"): "74.3"}, "HaLP poster"),
    Cited("AimCLR+HaLP", {("ntu60", "xsub"): "75.2"}, "HaLP poster"),
)

# Semi-supervised results are in the paper's supplement, which is not transcribed here.
SEMI_FRACTIONS = (1, 5, 10, 20)  # percent of the training labels
SEMI_BENCHMARKS: tuple[Benchmark, ...] = (("ntu60", "xsub"), ("ntu60", "xview"))
SEMI_PUBLISHED = "n/a (supplement)"

# The poster's table "HaLP with GraphCL" (SVM protocol, mean ± std over 5 seeds, %); the
# GraphCL row is the GraphCL paper's (You et al. 2020, Table 3).
GRAPH_DATASETS = ("NCI1", "PROTEINS", "DD", "MUTAG")
GRAPH_DATASET_LABELS = {"NCI1": "NCI-1", "PROTEINS": "PROTEINS", "DD": "DD", "MUTAG": "MUTAG"}
GRAPH_METHODS = ("graphcl", "graphcl_halp")
GRAPH: dict[str, dict[str, tuple[str, str]]] = {
    "graphcl": {
        "NCI1": ("77.87", "0.41"),
        "PROTEINS": ("74.39", "0.45"),
        "DD": ("78.62", "0.40"),
        "MUTAG": ("86.80", "1.34"),
    },
    "graphcl_halp": {
        "NCI1": ("78.88", "0.41"),
        "PROTEINS": ("74.65", "0.70"),
        "DD": ("79.20", "0.60"),
        "MUTAG": ("89.35", "1.2"),
    },
}


# The poster's "HaLP with AimCLR" (NTU-60 x-sub, linear, joint), AimCLR's own joint rows, and
# the CMD -> HaLP+CMD pair the poster prints beside them. ``-stgcn`` variants are the
# published setting (ST-GCN, crossclr data); plain ``aimclr``/``aimclr_halp`` run on the
# package's BiGRU pipeline, a setting with no published number.
AIMCLR_BENCHMARKS: tuple[Benchmark, ...] = LINEAR_BENCHMARKS[:4]
AIMCLR: dict[str, dict[Benchmark, str]] = {
    # AimCLR paper (joint); the NTU-120 cells as a survey lists them (not checked in the paper)
    "aimclr-stgcn": _row("74.3", "79.7", "63.4", "63.4"),
    "aimclr_halp-stgcn": {("ntu60", "xsub"): "75.2"},  # HaLP poster
    # 3s-AimCLR (AimCLR paper, as HiCLR's and PCM3's tables reprint it)
    "aimclr-stgcn.3s": _row("78.9", "83.8", "68.2", "68.8"),
    "aimclr": {},
    "aimclr_halp": {},
    "cmd": {("ntu60", "xsub"): "79.8"},  # HaLP poster (= paper Table 1)
    "halp_cmd": {("ntu60", "xsub"): "82.1"},
}
AIMCLR_GAIN: dict[str, str] = {"stgcn": "0.9", "cmd": "2.3"}  # poster: 74.3 -> 75.2, 79.8 -> 82.1
AIMCLR_RELEASED = Cited(
    "AimCLR, released models (joint)",
    {("ntu60", "xsub"): "74.34", ("ntu60", "xview"): "79.68"},
    "AimCLR README",
)


# HiCLR (Zhang, Lin, Liu, AAAI 2023). Linear evaluation of the three-stream ensemble (paper,
# as on the project page) and the joint stream of the released GCN code (its README), on the
# ST-GCN with crossclr data (the ``-stgcn`` variants); plain ``hiclr`` runs on the BiGRU.
HICLR_BENCHMARKS: tuple[Benchmark, ...] = LINEAR_BENCHMARKS[:4]
HICLR: dict[str, dict[Benchmark, str]] = {
    "hiclr-stgcn.3s": _row("80.4", "85.5", "70.0", "70.4"),
    "hiclr-stgcn": {("ntu60", "xsub"): "77.30"},  # released code, joint (README)
    "hiclr_halp-stgcn": {},
    "hiclr-3s": {},
    "hiclr": {},
    "hiclr_halp": {},
}
HICLR_LABELS: dict[str, str] = {
    "hiclr-stgcn.3s": "3s-HiCLR (ST-GCN, crossclr)",
    "hiclr-stgcn": "HiCLR, joint (ST-GCN, crossclr)",
    "hiclr_halp-stgcn": "HiCLR+HaLP, joint (ST-GCN, crossclr)",
    "hiclr-3s": "3s-HiCLR (BiGRU, 2s-AGCN)",
    "hiclr": "HiCLR, joint (BiGRU, 2s-AGCN)",
    "hiclr_halp": "HiCLR+HaLP, joint (BiGRU, 2s-AGCN)",
}

# The HiCLR slides' "Results on Augmentation Arrangement" (top-1 %, read as NTU-60 x-sub
# linear, joint, ST-GCN: the slides do not say), by the results variant that reruns it.
HICLR_ARRANGEMENT: tuple[tuple[str, str, str], ...] = (
    ("hiclr-stgcn.k1", "k = 1: BA", "68.3"),
    ("hiclr-stgcn.k2", "k = 2: BA, NA", "76.8"),
    ("hiclr-stgcn", "k = 3: BA, NA, Mask (released)", "77.6"),
    ("hiclr-stgcn.adain", "k = 3: BA, NA, AdaIN", "77.3"),
    ("hiclr-stgcn.dae", "k = 3: BA, NA, Drop/Add Edges", "77.2"),
    ("hiclr-stgcn.dae.mask", "k = 4: BA, NA, Drop/Add Edges, Mask", "77.4"),
    ("hiclr-stgcn.dae.adain", "k = 4: BA, NA, Drop/Add Edges, AdaIN", "77.5"),
)
