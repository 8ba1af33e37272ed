"""Results-file naming: the one home of ``{dataset}_{split}_{variant}_{protocol}.json``.

- ``{dataset}_{split}_{variant}_{protocol}.json``: ``dataset`` is ``ntu60``, ``ntu120`` or
  ``pku2``; ``split`` is ``xsub``, ``xview`` or ``xset``; ``variant`` is a method preset
  optionally followed by ``-<ablation>`` (``halp-lam0.6``, ``halp-N10``, ...);
  ``protocol`` is ``linear``, ``knn``, ``semi<P>`` (``P`` % of the labels) or ``finetune``.
- ``{source}_to_{target}_{variant}_transfer.json``: pretrained on ``source`` x-sub,
  fine-tuned on ``target`` x-sub.
- ``overhead.json``: Table 4's time and memory.
- ``tu_{dataset}_{method}_svm.json``: the graph table (GraphCL, GraphCL+HaLP on TU
  graphs), ``dataset`` a TU name in lower case (``mutag``, ``nci1``, ``proteins``,
  ``dd``), ``method`` ``graphcl`` or ``graphcl-halp``; it summarises the per-seed files
  ``graphs/tu_{dataset}_{method}_seed{seed}.json``.

The tables, the figures and the workflow use these names; the workflow keeps a copy of
the patterns (it cannot always import the package) and a test checks that they agree.
"""

from __future__ import annotations

import re

from halp.methods import method_label
from halp.report import published as pub

DATASETS = ("ntu60", "ntu120", "pku2")
SPLITS = ("xsub", "xview", "xset")
PROTOCOLS = ("linear", "knn", "finetune", "semi<P>")
_DATASETS = "|".join(DATASETS)
_VARIANT = r"[a-z][a-z_]*(?:-[A-Za-z0-9.]+)?"
EVAL_NAME = re.compile(
    rf"^(?P<dataset>{_DATASETS})_(?P<split>xsub|xview|xset)_(?P<variant>{_VARIANT})"
    r"_(?P<protocol>linear|knn|semi(?P<percent>\d+)|finetune)\.json$"
)
TRANSFER_NAME = re.compile(
    rf"^(?P<source>{_DATASETS})_to_(?P<dataset>{_DATASETS})_(?P<variant>{_VARIANT})"
    r"_transfer\.json$"
)
OVERHEAD_NAME = "overhead.json"
GRAPH_NAME = re.compile(r"^tu_(?P<dataset>[a-z0-9_]+)_(?P<method>graphcl|graphcl-halp)_svm\.json$")


def result_name(dataset: str, split: str, variant: str, protocol: str) -> str:
    """``results/``-relative name of an evaluation result, e.g. ``ntu60_xsub_halp_linear.json``."""
    name = f"{dataset}_{split}_{variant}_{protocol}.json"
    if not EVAL_NAME.match(name):
        raise ValueError(f"{name!r} does not follow the results naming pattern")
    return name


def transfer_name(source: str, target: str, variant: str) -> str:
    """Name of a transfer result, e.g. ``ntu60_to_pku2_halp_transfer.json``."""
    name = f"{source}_to_{target}_{variant}_transfer.json"
    if not TRANSFER_NAME.match(name):
        raise ValueError(f"{name!r} does not follow the transfer naming pattern")
    return name


def lambda_variant(lam: str) -> str:
    """The results variant for λ: the paper's default is plain ``halp``."""
    return "halp" if lam == pub.LAMBDA_DEFAULT else f"halp-lam{float(lam):g}"


def prototypes_variant(n: int) -> str:
    """The results variant for N prototypes: the paper's default is plain ``halp``."""
    return "halp" if n == pub.PROTOTYPES_DEFAULT else f"halp-N{n}"


def variant_label(variant: str) -> str:
    """``halp_cmd`` -> ``HaLP+CMD``; ``halp-lam0.6`` -> ``HaLP (lam0.6)``."""
    base, _, ablation = variant.partition("-")
    label = method_label(base)
    return f"{label} ({ablation})" if ablation else label


def graph_method_slug(method: str) -> str:
    """Config ``method`` -> file-name part: ``graphcl_halp`` -> ``graphcl-halp``."""
    return method.replace("_", "-")


def graph_name(dataset: str, method: str) -> str:
    """Name of a graph-table result, e.g. ``tu_mutag_graphcl-halp_svm.json``."""
    name = f"tu_{dataset.lower()}_{graph_method_slug(method)}_svm.json"
    if not GRAPH_NAME.match(name):
        raise ValueError(f"{name!r} does not follow the graph results naming pattern")
    return name


def graph_seed_name(dataset: str, method: str, seed: int) -> str:
    """Name of one seed's graph result (under ``results/graphs/``)."""
    return f"tu_{dataset.lower()}_{graph_method_slug(method)}_seed{seed}.json"
