"""Mutation testing of halp's core math and protocol modules (slow: not part of CI).

Run from the repository root with the project's virtual environment::

    .venv/bin/python benchmarks/mutation.py                  # every target, ~50 min on 2 idle cores
    .venv/bin/python benchmarks/mutation.py -m poshal -m cmd # some targets only
    .venv/bin/python benchmarks/mutation.py --list           # print the mutants, run nothing
    .venv/bin/python benchmarks/mutation.py -m knn --line 49 # the mutants of one line

Options: ``--module/-m NAME`` (repeatable; default all of ``TARGETS``), ``--line N`` (repeatable),
``--function NAME``, ``--skip-geomstats`` (leave ``geomstats_kmeans`` unmutated),
``--without-mutant-tests`` (leave out ``tests/test_mutants.py``, for the numbers before
it), ``--timeout-factor F`` / ``--timeout-extra S`` (a mutant's pytest run is killed after
F x its module's baseline + S seconds; default 2 x + 10 s), ``--json PATH`` (the
results; default ``.mutation/results.json``), ``--survivors-of JSON`` (only the mutants an
earlier run did not kill), ``--report JSON...`` (run nothing: print the report of saved
results, a later file's outcome replacing an earlier one's for the same mutant) and
``--verbose`` (one line per mutant).

It prints, per module, mutants generated / killed / survived / timed out, the overall
score ((killed + timed out) / generated, and the same over the non-equivalent mutants)
and every survivor (file, line, the mutation, and its verdict recorded in
:data:`EQUIVALENT`: equivalent, or not equivalent "in practice" / "CPU-only", counted
apart). Exit status 1 when a survivor has no verdict.

Why not mutmut: mutmut 3.8.1 (pinned in the ``test`` extra) never mutates a decorated
function (``@torch.no_grad()`` included), so ``hallucinate``, ``slerp_towards``,
``momentum_update``, ``KeyQueue.enqueue``, the CMD ``teacher``, ``refresh_prototypes``,
``knn_predict``, ``extract_features`` and ``accuracy`` would go untested, nor module
constants (``FIXED_DELTA``, ``REFERENCE_NEAREST``). This runner is a small AST mutator:

* operators: mutmut's (arithmetic, comparison, boolean and augmented-assignment swaps,
  ``not``/``-``/``~`` removal, number + 1, ``True``/``False`` flips, ``"XX"``-wrapped
  strings, dropped keyword arguments, ternary branches forced) plus ones aimed at tensor
  code: ``argmax``/``argmin``, ``max``/``min``, ``amax``/``amin``, ``maximum``/``minimum``,
  ``sum``/``mean``, ``cos``/``sin``, ``all``/``any``, ``zeros_like``/``ones_like`` swaps,
  ``clamp(min=)``/``clamp(max=)``, ``if``/``while`` conditions forced to True/False, a
  call statement or a self-update (``t = torch.where(..., t)``) deleted,
  ``break``/``continue`` swapped;
* not mutated: docstrings, annotations, decorators, imports, ``raise`` and ``assert``
  statements (error messages), logging calls, f-strings and module-level statements
  other than numeric constants;
* execution: one fork server. The parent copies ``src/halp``, ``tests/`` and ``config/``
  to ``.mutation/snapshot-PID`` (edits made during the run do not leak in), sets the
  thread variables to 1, imports torch, pytest and halp (from the copy) once and never
  runs a tensor op; each mutant is a forked child that drops every ``halp`` module,
  installs an import hook serving the mutated module (compiled from the mutated AST,
  nothing is written under ``src/``) and runs ``pytest -x -q`` on its module's tests
  (``TARGETS``, with ``tests/test_mutants.py`` first). Sequential (one worker), each
  child in its own process group, killed with its DataLoader workers on timeout. The
  unmutated module is run first through the same hook as a baseline: it must pass, and
  its time sets the timeout.

Statuses: ``killed`` (pytest failed or errored, or the child died from a signal),
``survived`` (all selected tests passed), ``timeout``, ``error`` (pytest could not run:
usage error, no tests collected).
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib
import importlib.abc
import importlib.machinery
import json
import os
import re
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import CodeType, ModuleType

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / ".mutation"
SNAPSHOT = SCRATCH / f"snapshot-{os.getpid()}"  # one per run: runs may overlap
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


@dataclass(frozen=True)
class Target:
    """A module to mutate and the test files that run against its mutants, in order."""

    path: str
    module: str
    tests: tuple[str, ...]


# the section of tests/test_mutants.py for the module goes in front of each list when it
# exists (fast, targeted: see mutant_tests_of)
TARGETS: dict[str, Target] = {
    "poshal": Target(
        "src/halp/objectives/poshal.py",
        "halp.objectives.poshal",
        ("tests/test_poshal.py", "tests/test_objectives.py"),
    ),
    "moco": Target(
        "src/halp/objectives/moco.py",
        "halp.objectives.moco",
        ("tests/test_moco.py", "tests/test_objectives.py", "tests/test_health.py"),
    ),
    "cmd": Target(
        "src/halp/objectives/cmd.py",
        "halp.objectives.cmd",
        ("tests/test_moco.py", "tests/test_health.py"),
    ),
    "prototypes": Target(
        "src/halp/objectives/prototypes.py",
        "halp.objectives.prototypes",
        ("tests/test_prototypes.py", "tests/test_objectives.py"),
    ),
    "halp": Target(
        "src/halp/objectives/halp.py",
        "halp.objectives.halp",
        ("tests/test_objectives.py", "tests/test_poshal.py", "tests/test_health.py"),
    ),
    "classifier": Target(
        "src/halp/eval/classifier.py",
        "halp.eval.classifier",
        ("tests/test_evaluate.py",),
    ),
    "knn": Target(
        "src/halp/eval/knn.py",
        "halp.eval.knn",
        ("tests/test_knn.py", "tests/test_evaluate.py", "tests/test_health.py"),
    ),
    "mining": Target(
        "src/halp/objectives/mining.py",
        "halp.objectives.mining",
        ("tests/test_aimclr_hiclr.py",),
    ),
    "distribution": Target(
        "src/halp/objectives/distribution.py",
        "halp.objectives.distribution",
        ("tests/test_aimclr_hiclr.py",),
    ),
    "eadm": Target(
        "src/halp/encoders/eadm.py",
        "halp.encoders.eadm",
        ("tests/test_stgcn.py",),
    ),
}
MUTANT_TESTS = "tests/test_mutants.py"
PRELOAD = ("torch", "numpy", "pytest", "sklearn.neighbors", "halp.train", "halp.evaluate")
# imported once in the parent when installed (geomstats alone takes ~2 s to import)
OPTIONAL_PRELOAD = ("geomstats.geometry.hypersphere", "geomstats.learning.kmeans")

# The verdicts of the survivors (module key, start of the stripped source line, change,
# why), from the run recorded in benchmarks/README.md. A plain reason says the mutant is
# equivalent: it computes the same function on every input the code's documented
# contract allows (shapes, dtypes), up to floating-point rounding. Two prefixes mark
# survivors that are NOT equivalent and are reported apart (not counted as equivalent
# in the score): "in practice:" differs only on an exact floating-point tie that no
# deterministic test can construct; "CPU-only:" is observable only with an accelerator,
# which this machine lacks.
NOT_EQUIVALENT_PREFIXES = ("in practice:", "CPU-only:")
EQUIVALENT: list[tuple[str, str, str, str]] = [
    (
        "poshal",
        "near = (a * b).sum(-1, keepdim=True) >= 0",
        "(a * b).sum(-1, keepdim=True) >= 0 -> (a * b).sum(-1, keepdim=True) > 0",
        (
            "differs only where a·b == 0 exactly; there b - a and b + a give the same tangent b "
            "(up to rounding), and neither difference cancels"
        ),
    ),
    (
        "poshal",
        "near = (a * b).sum(-1, keepdim=True) >= 0",
        ".sum() -> .mean()",
        (
            "mean = sum / D has the sum's sign; the sign only chooses between two formulas for the "
            "same tangent, both accurate where a·b is near 0"
        ),
    ),
    (
        "poshal",
        "u = torch.where(perp_norm <= tiny, torch.zeros_like(perp), p",
        "perp_norm <= tiny -> perp_norm < tiny",
        (
            "a computed 2-norm is 0 or >= sqrt(smallest subnormal) (2^-74.5 in float32), never "
            "finfo.tiny in float32, float64 or bfloat16 (checked); only float16 could tie, and "
            "PosHal runs in fp32"
        ),
    ),
    (
        "poshal",
        "tiny = norm <= torch.finfo(a.dtype).eps",
        "norm <= torch.finfo(a.dtype).eps -> norm < torch.finfo(a.dtype).eps",
        (
            "in practice: needs u = 0 (a = ±b) and |cos tΩ| |a| to round to exactly eps with "
            "cos tΩ < 0 (else both return a); with u = 0, hallucinate has t_c Ω <= π/2, and no "
            "float32 angle within 1e-4 of π/2 has |cos| = eps (exhaustive check)"
        ),
    ),
    (
        "poshal",
        "return (anchor @ prototypes.T).argmax(dim=-1)  # (B, P) -> (",
        "-1 -> 1",
        "(B, P) similarities are 2-D: dim 1 is the last dimension",
    ),
    (
        "poshal",
        "order = similarity.argsort(dim=1, descending=True, stable=Tr",
        "drop dim=1",
        "argsort's default dim=-1 is dim 1 of the 2-D similarities",
    ),
    (
        "poshal",
        "candidates = order[:, 1 : 1 + min(nearest, num_prototypes - ",
        "num_prototypes - 1 -> num_prototypes + 1",
        "the slice end is clipped to P anyway: the same candidates",
    ),
    (
        "poshal",
        "return r + (r >= closest.unsqueeze(-1)).long()",
        "-1 -> 1",
        "closest is 1-D (B,): unsqueeze(1) == unsqueeze(-1)",
    ),
    (
        "poshal",
        "omega = torch.arccos(k_dot_ps.clamp(-1.0, 1.0))",
        "1.0 -> 2.0 (#2)",
        (
            "a dot product that rounds above 1 then gives arccos = NaN, which the isfinite guard "
            "maps to t* = 0; the clamp to 1 gives Ω = 0 and t* = ±0: the same t*, t_c and positive"
        ),
    ),
    (
        "poshal",
        "return (h @ prototypes.T).argmax(dim=-1) == closest.unsqueez",
        "-1 -> 1 (#2)",
        "closest is 1-D (B,): unsqueeze(1) == unsqueeze(-1)",
    ),
    (
        "poshal",
        'psel: PselMode = "paper",',
        "'paper' -> 'XXpaperXX'",
        "psel is only compared with 'reference': any other value is the paper's draw",
    ),
    (
        "poshal",
        "k = F.normalize(anchor, dim=-1)  # (B, D)",
        "drop dim=-1",
        "2-D input: the default / dim 1 is the last dimension",
    ),
    (
        "poshal",
        "k = F.normalize(anchor, dim=-1)  # (B, D)",
        "-1 -> 1",
        "2-D input: the default / dim 1 is the last dimension",
    ),
    (
        "poshal",
        "protos = F.normalize(prototypes, dim=-1)  # (P, D)",
        "drop dim=-1",
        "2-D input: the default / dim 1 is the last dimension",
    ),
    (
        "poshal",
        "protos = F.normalize(prototypes, dim=-1)  # (P, D)",
        "-1 -> 1",
        "2-D input: the default / dim 1 is the last dimension",
    ),
    (
        "poshal",
        "closest = similarity.argmax(dim=-1)  # (B,), as closest_prot",
        "-1 -> 1",
        "2-D input: the default / dim 1 is the last dimension",
    ),
    (
        "poshal",
        "k = F.normalize(anchor, dim=-1).unsqueeze(1)  # (B, 1, D)",
        "drop dim=-1",
        "2-D input: the default / dim 1 is the last dimension",
    ),
    (
        "poshal",
        "k = F.normalize(anchor, dim=-1).unsqueeze(1)  # (B, 1, D)",
        "-1 -> 1",
        "2-D input: the default / dim 1 is the last dimension",
    ),
    (
        "poshal",
        "q = F.normalize(target.detach(), dim=-1).unsqueeze(1)  # (B,",
        "drop dim=-1",
        "2-D input: the default / dim 1 is the last dimension",
    ),
    (
        "poshal",
        "q = F.normalize(target.detach(), dim=-1).unsqueeze(1)  # (B,",
        "-1 -> 1",
        "2-D input: the default / dim 1 is the last dimension",
    ),
    (
        "moco",
        'self.register_buffer("keys", F.normalize(init, dim=1))  # (L',
        "drop dim=1",
        "F.normalize's default dim is 1",
    ),
    (
        "cmd",
        "top, idx = sim.topk(min(topk, sim.shape[1]), dim=1)  # (B, k",
        "drop dim=1",
        "topk's default dim=-1 is dim 1 of the 2-D similarities",
    ),
    (
        "prototypes",
        "idx = _uniform((b, n), generator, xb).argsort(dim=-1)[:, :k]",
        "drop dim=-1",
        "2-D input: the default / dim 1 is the last dimension",
    ),
    (
        "prototypes",
        "idx = _uniform((b, n), generator, xb).argsort(dim=-1)[:, :k]",
        "-1 -> 1",
        "2-D input: the default / dim 1 is the last dimension",
    ),
    (
        "prototypes",
        "w = torch.where(min_d2 > _SAME_POINT_CHORD2, min_d2, torch.z",
        "min_d2 > _SAME_POINT_CHORD2 -> min_d2 >= _SAME_POINT_CHORD2",
        (
            "no tie is possible: near 0, min_d2 = 2 - 2cos is computed exactly (Sterbenz), a "
            "multiple of 2^-23 in float32 (2^-52 in float64, 2^-7 in bfloat16), and 1e-6 is not"
        ),
    ),
    (
        "prototypes",
        "total = w.sum(-1, keepdim=True)  # (b, 1)",
        ".sum() -> .mean()",
        "only total > 0 is used: same sign",
    ),
    (
        "prototypes",
        "total = w.sum(-1, keepdim=True)  # (b, 1)",
        "-1 -> 1",
        "2-D input: the default / dim 1 is the last dimension",
    ),
    (
        "prototypes",
        "cdf = w.cumsum(-1)  # (b, n)",
        "-1 -> 1",
        "2-D input: the default / dim 1 is the last dimension",
    ),
    (
        "prototypes",
        "cand = torch.searchsorted(cdf, target, right=True).clamp_(ma",
        "drop right=True",
        (
            "in practice: differs only when u·total equals a CDF value exactly (a rounding tie), "
            "then drawing the point across that boundary, of positive weight too, unless u = 0 "
            "exactly (2^-53 per draw) where a zero-weight point could be drawn"
        ),
    ),
    (
        "prototypes",
        "cand = torch.searchsorted(cdf, target, right=True).clamp_(ma",
        "True -> False",
        (
            "in practice: differs only when u·total equals a CDF value exactly (a rounding tie), "
            "then drawing the point across that boundary, of positive weight too, unless u = 0 "
            "exactly (2^-53 per draw) where a zero-weight point could be drawn"
        ),
    ),
    (
        "prototypes",
        "best = new_d2.sum(-1).argmin(-1)  # (b,), first on ties",
        ".sum() -> .mean()",
        "argmin of sum / n = argmin of sum",
    ),
    (
        "prototypes",
        "best = new_d2.sum(-1).argmin(-1)  # (b,), first on ties",
        "-1 -> 1 (#2)",
        "2-D input: the default / dim 1 is the last dimension",
    ),
    (
        "prototypes",
        "counts = one_hot.sum(dim=1)  # (b, K)",
        ".sum() -> .mean()",
        "counts is only compared with 0",
    ),
    (
        "prototypes",
        "num_empty = int(empty.sum(dim=1).max())",
        "drop dim=1",
        (
            "a larger bound only adds rounds in which no item has an empty cluster left (has is "
            "all False)"
        ),
    ),
    (
        "prototypes",
        "if num_empty:",
        "condition 'num_empty' -> True",
        "with num_empty = 0 the loop body never runs",
    ),
    (
        "prototypes",
        "slots = torch.argsort((~empty).to(torch.uint8), dim=1, stabl",
        "drop dim=1",
        "2-D input: the default / dim 1 is the last dimension",
    ),
    (
        "prototypes",
        'data = F.normalize(x.detach().to("cpu", torch.float64), dim=',
        "drop dim=-1",
        "2-D input: the default / dim 1 is the last dimension",
    ),
    (
        "prototypes",
        'data = F.normalize(x.detach().to("cpu", torch.float64), dim=',
        "-1 -> 1",
        "2-D input: the default / dim 1 is the last dimension",
    ),
    (
        "prototypes",
        "centres = torch.as_tensor(np.asarray(kmeans.cluster_centers_",
        "drop dtype=torch.float64",
        "cluster_centers_ is already float64",
    ),
    (
        "prototypes",
        "return F.normalize(centres, dim=-1).to(device=x.device, dtyp",
        "drop device=x.device",
        (
            "CPU-only: the centres are made on the CPU, so only data on an accelerator would stay "
            "there (not equivalent: on a GPU they would come back on the wrong device)"
        ),
    ),
    (
        "prototypes",
        "return F.normalize(centres, dim=-1).to(device=x.device, dtyp",
        "drop dim=-1",
        "2-D input: the default / dim 1 is the last dimension",
    ),
    (
        "prototypes",
        "return F.normalize(centres, dim=-1).to(device=x.device, dtyp",
        "-1 -> 1",
        "2-D input: the default / dim 1 is the last dimension",
    ),
    (
        "prototypes",
        "seed = int(torch.randint(2**31 - 1, (), generator=generator,",
        "drop device=generator.device",
        (
            "CPU-only: without device= randint uses the default device, the CPU here; with a CUDA "
            "generator it would fail (meta cannot stand in: geomstats needs real data)"
        ),
    ),
    (
        "halp",
        'self.register_buffer("centres", torch.zeros(num_prototypes, ',
        ".zeros() -> .ones()",
        (
            "a placeholder: nothing reads the centres while ready is False (saved and loaded with "
            "it), and refresh_prototypes overwrites them before setting ready"
        ),
    ),
    (
        "halp",
        "for i, c in zip(ready, centres, strict=True):",
        "drop strict=True",
        "ready and centres have the same length by construction",
    ),
    (
        "halp",
        "for i, c in zip(ready, centres, strict=True):",
        "True -> False",
        "ready and centres have the same length by construction",
    ),
    (
        "halp",
        "anchor = anchor.detach()",
        "delete the self-update",
        (
            "both consumers (hallucinate, slerp_towards) run under no_grad: no graph reaches "
            "the anchor"
        ),
    ),
    (
        "classifier",
        "nn.init.normal_(self.fc.weight, mean=0.0, std=0.01)",
        "drop mean=0.0",
        "normal_'s default mean is 0",
    ),
    (
        "classifier",
        "if fraction == 1.0:",
        "condition 'fraction == 1.0' -> False",
        (
            "the general path returns every index too (all n drawn, sorted); only an empty label "
            "array differs (an error instead of []), and evaluate.py rejects empty splits before "
            "drawing"
        ),
    ),
    (
        "classifier",
        "if fraction == 1.0:",
        "1.0 -> 2.0",
        (
            "the general path returns every index too (all n drawn, sorted); only an empty label "
            "array differs (an error instead of []), and evaluate.py rejects empty splits before "
            "drawing"
        ),
    ),
    (
        "classifier",
        "for clips, labels in DataLoader(dataset, batch_size=batch_si",
        "drop shuffle=False",
        "DataLoader's default is shuffle=False",
    ),
    (
        "classifier",
        "model.to(device)",
        "delete the call statement",
        (
            "CPU-only: the model is on the CPU already (not equivalent: on a GPU the batches would "
            "move and the model would not)"
        ),
    ),
    (
        "classifier",
        "optimizer = torch.optim.SGD(",
        "drop lr=lr",
        "every epoch sets each group's lr before the first step",
    ),
    (
        "classifier",
        "model.fc.train()",
        "delete the call statement",
        "nn.Linear behaves the same in train and eval mode (and accuracy() restores the mode)",
    ),
    (
        "classifier",
        "loader = make_loader(",
        "drop num_workers=config.workers",
        "make_loader gives identical batches whatever num_workers (documented); only speed",
    ),
    (
        "classifier",
        "loader = make_loader(",
        "drop pin_memory=device.type == 'cuda'",
        "pinning only speeds host-to-GPU copies, it never changes a value",
    ),
    (
        "classifier",
        'pin_memory=device.type == "cuda",',
        "device.type == 'cuda' -> device.type != 'cuda'",
        (
            "pinning only speeds host-to-GPU copies, it never changes a value (without a GPU, the "
            "DataLoader warns and does not pin)"
        ),
    ),
    (
        "classifier",
        'pin_memory=device.type == "cuda",',
        "'cuda' -> 'XXcudaXX'",
        "pinning only speeds host-to-GPU copies, it never changes a value",
    ),
    (
        "classifier",
        "optimizer.zero_grad(set_to_none=True)",
        "drop set_to_none=True",
        "set_to_none=True is zero_grad's default",
    ),
    (
        "classifier",
        "optimizer.zero_grad(set_to_none=True)",
        "True -> False",
        (
            "every trained tensor gets a gradient in each backward: accumulating into zeros "
            "or starting from None gives the same step"
        ),
    ),
    (
        "knn",
        "num_workers: int = 0,",
        "0 -> 1",
        "a worker process yields the same batches in order: same features, only speed",
    ),
    (
        "knn",
        "loader = DataLoader(dataset, batch_size=batch_size, shuffle=",
        "drop shuffle=False",
        "DataLoader's default is shuffle=False",
    ),
    (
        "knn",
        "loader = DataLoader(dataset, batch_size=batch_size, shuffle=",
        "drop num_workers=num_workers",
        "workers only change speed, not the features",
    ),
    (
        "knn",
        "batch_size: int = 1024,",
        "1024 -> 1025",
        "queries are independent: batching changes only speed",
    ),
    (
        "knn",
        "gallery = F.normalize(gallery.float(), dim=1)",
        "drop dim=1",
        "F.normalize's default dim is 1",
    ),
    (
        "knn",
        "num_classes = int(gallery_labels.max()) + 1",
        "1 -> 2",
        "an extra, empty class never wins the vote (every query has k >= 1 votes in real classes)",
    ),
    (
        "knn",
        "q = F.normalize(queries[start : start + batch_size].float(),",
        "drop dim=1",
        "F.normalize's default dim is 1",
    ),
    (
        "knn",
        "idx = sim.topk(k, dim=1).indices  # (b, k)",
        "drop dim=1",
        "topk's default dim=-1 is dim 1 of the 2-D similarities",
    ),
    (
        "mining",
        "mask.scatter_(1, 1 + sim.topk(k, dim=1).indices, 1.0)",
        "drop dim=1",
        "topk's default dim=-1 is dim 1 of the 2-D (B, L) similarities",
    ),
    (
        "distribution",
        "for (_, student), part in zip(self.pairs, parts, strict=True",
        "drop strict=True",
        "parts is built from self.pairs, one per pair: the same length by construction",
    ),
    (
        "distribution",
        "for (_, student), part in zip(self.pairs, parts, strict=True",
        "True -> False",
        "parts is built from self.pairs, one per pair: the same length by construction",
    ),
]


# ---------------------------------------------------------------- mutation operators

_BINOP: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Mod: ast.Div,
    ast.Pow: ast.Mult,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
    ast.BitXor: ast.BitAnd,
}
_CMPOP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
_SYMBOL: dict[type[ast.AST], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.And: "and",
    ast.Or: "or",
    ast.Not: "not",
    ast.USub: "-",
    ast.Invert: "~",
}
_PAIRS = (
    ("argmax", "argmin"),
    ("max", "min"),
    ("amax", "amin"),
    ("maximum", "minimum"),
    ("cos", "sin"),
    ("sum", "mean"),
    ("all", "any"),
    ("zeros_like", "ones_like"),
    ("zeros", "ones"),
    ("floor", "ceil"),
)
_METHOD_SWAP = {a: b for a, b in _PAIRS} | {b: a for a, b in _PAIRS}
_BUILTIN_SWAP = {"max": "min", "min": "max", "all": "any", "any": "all"}
_LOGGERS = {"log", "logger", "logging", "warnings"}

Make = Callable[[ast.AST], ast.AST]
# nodes whose mutation is shown as "before -> after" source rather than by its label
_SHOWN = (ast.BinOp, ast.BoolOp, ast.Compare, ast.UnaryOp, ast.AugAssign)


def _short(node: ast.AST, limit: int = 60) -> str:
    text = ast.unparse(node)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _located(new: ast.AST, old: ast.AST) -> ast.AST:
    return ast.fix_missing_locations(ast.copy_location(new, old))


def _set_op(new_op: type[ast.AST]) -> Make:
    def make(node: ast.AST) -> ast.AST:
        node.op = new_op()  # type: ignore[attr-defined]
        return node

    return make


def _set_cmp(i: int, new_op: type[ast.cmpop]) -> Make:
    def make(node: ast.AST) -> ast.AST:
        assert isinstance(node, ast.Compare)
        node.ops[i] = new_op()
        return node

    return make


def _constant(value: object) -> Make:
    def make(node: ast.AST) -> ast.AST:
        return _located(ast.Constant(value), node)

    return make


def _field(name: str) -> Make:
    def make(node: ast.AST) -> ast.AST:
        return getattr(node, name)  # type: ignore[no-any-return]

    return make


def _pass(node: ast.AST) -> ast.AST:
    return _located(ast.Pass(), node)


def _drop_keyword(i: int) -> Make:
    def make(node: ast.AST) -> ast.AST:
        assert isinstance(node, ast.Call)
        del node.keywords[i]
        return node

    return make


def _rename_keyword(i: int, name: str) -> Make:
    def make(node: ast.AST) -> ast.AST:
        assert isinstance(node, ast.Call)
        node.keywords[i].arg = name
        return node

    return make


def _rename_call(name: str) -> Make:
    def make(node: ast.AST) -> ast.AST:
        assert isinstance(node, ast.Call)
        if isinstance(node.func, ast.Attribute):
            node.func.attr = name
        elif isinstance(node.func, ast.Name):
            node.func.id = name
        return node

    return make


def _set_test(value: bool) -> Make:
    def make(node: ast.AST) -> ast.AST:
        assert isinstance(node, ast.If | ast.While)
        node.test = _located(ast.Constant(value), node.test)  # type: ignore[assignment]
        return node

    return make


def _aug_to_assign(node: ast.AST) -> ast.AST:
    assert isinstance(node, ast.AugAssign)
    return _located(ast.Assign(targets=[node.target], value=node.value), node)


def _swap_loop_jump(node: ast.AST) -> ast.AST:
    return _located(ast.Continue() if isinstance(node, ast.Break) else ast.Break(), node)


def _self_update(node: ast.Assign) -> bool:
    """``x = f(x)``: deleting it leaves x bound to its previous value."""
    if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
        return False
    name = node.targets[0].id
    return any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(node.value))


def variants(node: ast.AST) -> list[tuple[str, Make]]:
    """The mutations of one node: (what changes, how), in a fixed order."""
    out: list[tuple[str, Make]] = []
    if isinstance(node, ast.BinOp | ast.AugAssign) and type(node.op) in _BINOP:
        new = _BINOP[type(node.op)]
        eq = "=" if isinstance(node, ast.AugAssign) else ""
        out.append((f"{_SYMBOL[type(node.op)]}{eq} -> {_SYMBOL[new]}{eq}", _set_op(new)))
    if isinstance(node, ast.AugAssign):
        out.append((f"{_SYMBOL.get(type(node.op), '?')}= -> =", _aug_to_assign))
    elif isinstance(node, ast.BoolOp):
        new = ast.Or if isinstance(node.op, ast.And) else ast.And
        out.append((f"{_SYMBOL[type(node.op)]} -> {_SYMBOL[new]}", _set_op(new)))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub | ast.Invert):
        out.append((f"drop unary {_SYMBOL[type(node.op)]!r}", _field("operand")))
    elif isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in _CMPOP:
                new_cmp = _CMPOP[type(op)]
                out.append((f"{_SYMBOL[type(op)]} -> {_SYMBOL[new_cmp]}", _set_cmp(i, new_cmp)))
    elif isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            out.append((f"{value} -> {not value}", _constant(not value)))
        elif isinstance(value, int | float):
            out.append((f"{value!r} -> {value + 1!r}", _constant(value + 1)))
        elif isinstance(value, str):
            out.append((f"{value!r} -> {'XX' + value + 'XX'!r}", _constant(f"XX{value}XX")))
    elif isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else None
        if isinstance(func, ast.Name) and func.id in _BUILTIN_SWAP:
            swap = _BUILTIN_SWAP[func.id]
            out.append((f"{func.id}() -> {swap}()", _rename_call(swap)))
        elif name in _METHOD_SWAP:
            out.append((f".{name}() -> .{_METHOD_SWAP[name]}()", _rename_call(_METHOD_SWAP[name])))
        for i, kw in enumerate(node.keywords):
            if kw.arg is None:
                continue
            out.append((f"drop {kw.arg}={_short(kw.value, 30)}", _drop_keyword(i)))
            if kw.arg in ("min", "max"):
                other = "max" if kw.arg == "min" else "min"
                out.append((f"{kw.arg}= -> {other}=", _rename_keyword(i, other)))
    elif isinstance(node, ast.IfExp):
        out.append(("ternary -> its 'if' branch", _field("body")))
        out.append(("ternary -> its 'else' branch", _field("orelse")))
    elif isinstance(node, ast.If | ast.While):
        out.append((f"condition {_short(node.test, 40)!r} -> True", _set_test(True)))
        out.append((f"condition {_short(node.test, 40)!r} -> False", _set_test(False)))
    elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        out.append(("delete the call statement", _pass))
    elif isinstance(node, ast.Assign) and _self_update(node):
        out.append(("delete the self-update", _pass))
    elif isinstance(node, ast.Break | ast.Continue):
        jump = "break -> continue" if isinstance(node, ast.Break) else "continue -> break"
        out.append((jump, _swap_loop_jump))
    return out


# ---------------------------------------------------------------- enumeration


@dataclass
class Site:
    """One AST node in pre-order, with where it hangs and whether it may be mutated."""

    node: ast.AST
    parent: ast.AST | None
    field: str
    index: int | None
    skip: bool
    function: str


def _is_docstring(parent: ast.AST, field_name: str, index: int | None, child: ast.AST) -> bool:
    return (
        field_name == "body"
        and index == 0
        and isinstance(parent, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and isinstance(child, ast.Expr)
        and isinstance(child.value, ast.Constant)
        and isinstance(child.value.value, str)
    )


def _is_log_call(child: ast.AST) -> bool:
    if not (isinstance(child, ast.Expr) and isinstance(child.value, ast.Call)):
        return False
    func = child.value.func
    return (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Name)
        and func.value.id in _LOGGERS
    )


def _skipped(parent: ast.AST, field_name: str, index: int | None, child: ast.AST) -> bool:
    if field_name in ("annotation", "returns", "decorator_list", "type_comment"):
        return True
    if isinstance(parent, ast.Raise | ast.Assert | ast.Import | ast.ImportFrom | ast.JoinedStr):
        return True
    if isinstance(child, ast.JoinedStr) or _is_docstring(parent, field_name, index, child):
        return True
    if _is_log_call(child):
        return True
    if isinstance(parent, ast.Module) and field_name == "body":
        if isinstance(child, ast.FunctionDef | ast.ClassDef):
            return False
        # module level: numeric constants only
        return not (
            isinstance(child, ast.Assign)
            and isinstance(child.value, ast.Constant)
            and isinstance(child.value.value, int | float)
            and not isinstance(child.value.value, bool)
        )
    if isinstance(parent, ast.ClassDef) and field_name == "body":
        return not isinstance(child, ast.FunctionDef)
    return False


def walk(tree: ast.AST, skip_functions: Sequence[str] = ()) -> list[Site]:
    """Every node of ``tree`` in a deterministic pre-order (the same for a deep copy)."""
    sites: list[Site] = []

    def visit(
        node: ast.AST, parent: ast.AST | None, name: str, index: int | None, skip: bool, fn: str
    ) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            fn = f"{fn}.{node.name}" if fn else node.name
            skip = skip or node.name in skip_functions
        elif isinstance(node, ast.ClassDef):
            fn = f"{fn}.{node.name}" if fn else node.name
        sites.append(Site(node, parent, name, index, skip, fn))
        for child_name, value in ast.iter_fields(node):
            children = value if isinstance(value, list) else [value]
            for i, child in enumerate(children):
                if not isinstance(child, ast.AST):
                    continue
                idx = i if isinstance(value, list) else None
                visit(
                    child, node, child_name, idx, skip or _skipped(node, child_name, idx, child), fn
                )

    visit(tree, None, "", None, False, "")
    return sites


@dataclass
class Mutant:
    """One mutation of a target module and, once run, its outcome."""

    module: str
    path: str
    site: int  # index in walk() order
    variant: int  # index in variants(node)
    line: int
    col: int
    function: str
    change: str
    source: str  # the stripped source line
    status: str = "pending"
    seconds: float = 0.0
    verdict: str = ""
    killed_by: str = ""  # the first failing test

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.module, self.source, self.change)

    def describe(self) -> str:
        return (
            f"{self.path}:{self.line}:{self.col} [{self.function}] {self.change}  | {self.source}"
        )


def equivalence(m: Mutant) -> str:
    """The recorded reason why a surviving mutant is equivalent, or ''."""
    for module, source, change, why in EQUIVALENT:
        if m.module == module and m.source.startswith(source) and m.change == change:
            return why
    return ""


def generate(
    key: str, target: Target, skip_functions: Sequence[str] = (), root: Path = ROOT
) -> list[Mutant]:
    """Every mutant of ``target`` (read under ``root``), in source order of their sites."""
    source = (root / target.path).read_text()
    lines = source.splitlines()
    tree = ast.parse(source, filename=target.path)
    mutants: list[Mutant] = []
    seen: dict[tuple[str, str], int] = {}
    for i, site in enumerate(walk(tree, skip_functions)):
        if site.skip or site.parent is None:
            continue
        line = getattr(site.node, "lineno", 0)
        col = getattr(site.node, "col_offset", 0)
        text = lines[line - 1].strip() if line else ""
        for j, (change, make) in enumerate(variants(site.node)):
            if isinstance(site.node, _SHOWN):
                before = _short(site.node, 70)
                change = f"{before} -> {_short(make(copy.deepcopy(site.node)), 70)}"
            seen[(text, change)] = seen.get((text, change), 0) + 1
            if seen[(text, change)] > 1:  # the same change twice on one line
                change = f"{change} (#{seen[(text, change)]})"
            mutants.append(
                Mutant(key, target.path, i, j, line, col, site.function, change, text[:100])
            )
    return mutants


def mutated_code(target: Target, mutant: Mutant | None, root: Path = ROOT) -> CodeType:
    """The module's code object with ``mutant`` applied (or unmutated for None)."""
    source = (root / target.path).read_text()
    tree = ast.parse(source, filename=target.path)
    if mutant is not None:
        tree = copy.deepcopy(tree)
        site = walk(tree)[mutant.site]
        _, make = variants(site.node)[mutant.variant]
        new = make(site.node)
        assert site.parent is not None
        if site.index is None:
            setattr(site.parent, site.field, new)
        else:
            getattr(site.parent, site.field)[site.index] = new
        ast.fix_missing_locations(tree)
    return compile(tree, str(root / target.path), "exec", dont_inherit=True)


# ---------------------------------------------------------------- execution


class _MutantLoader(importlib.abc.Loader):
    def __init__(self, code: CodeType) -> None:
        self.code = code

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        exec(self.code, module.__dict__)


class _MutantFinder(importlib.abc.MetaPathFinder):
    """Serves one module from a code object; every other import goes the usual way."""

    def __init__(self, name: str, code: CodeType, path: Path) -> None:
        self.name, self.code, self.path = name, code, path

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        spec = importlib.machinery.ModuleSpec(
            fullname, _MutantLoader(self.code), origin=str(self.path)
        )
        spec.has_location = True
        return spec


@dataclass
class Outcome:
    """How a forked pytest run ended."""

    status: str
    seconds: float
    returncode: int | None = None
    log: str = ""
    first_failure: str = ""  # the node id of the first failing test, from pytest's summary


def _child(target: Target, code: CodeType, tests: Sequence[str], log: Path) -> int:
    os.setpgid(0, 0)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    for name in [m for m in sys.modules if m == "halp" or m.startswith("halp.")]:
        del sys.modules[name]
    sys.meta_path.insert(0, _MutantFinder(target.module, code, Path(code.co_filename)))
    import pytest

    # two stages: the targeted tests of tests/test_mutants.py alone first (collecting
    # only that file is fast), the module's test files only if those all pass
    own = [t for t in tests if t.startswith(f"{MUTANT_TESTS}::")]
    stages = [own, [t for t in tests if t not in own]] if own else [list(tests)]
    rc = 0
    for stage in filter(None, stages):
        rc = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", "--no-header", *stage]))
        if rc != 0:
            break
    return rc


def run_forked(target: Target, code: CodeType, tests: Sequence[str], timeout: float) -> Outcome:
    """Run ``tests`` in a forked child against ``code``; kill its process group on timeout."""
    log = SNAPSHOT / "last.log"
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        rc = 98
        try:
            rc = _child(target, code, tests, log)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(rc)
    status: int | None = None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - start > timeout:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            return Outcome("timeout", time.monotonic() - start, None, str(log))
        time.sleep(0.02)
    seconds = time.monotonic() - start
    try:  # reap what the child left in its group (DataLoader workers)
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if os.WIFSIGNALED(status):
        return Outcome("killed", seconds, -os.WTERMSIG(status), str(log))
    rc = os.WEXITSTATUS(status)
    kind = {0: "survived", 1: "killed", 2: "killed"}.get(rc, "error")
    failed = _FAILED.search(log.read_text(errors="replace")) if log.exists() else None
    return Outcome(kind, seconds, rc, str(log), failed.group(1) if failed else "")


_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)
_SECTION = re.compile(r"^# -{8,} .*\((\w+\.py)\)\s*$")
_TEST = re.compile(r"^def (test_\w+)\(")


def mutant_tests_of(target: Target, path: Path) -> list[str]:
    """The tests of ``tests/test_mutants.py`` in the section named after the target's file.

    Sections start with a comment line ``# ------ Title (poshal.py)``; their tests run
    first, so that a mutant they kill is killed in a second or two.
    """
    if not path.exists():
        return []
    section, names = "", []
    for line in path.read_text().splitlines():
        if match := _SECTION.match(line):
            section = match.group(1)
        elif (match := _TEST.match(line)) and section == Path(target.path).name:
            names.append(f"{MUTANT_TESTS}::{match.group(1)}")
    return names


def tests_for(target: Target, root: Path, with_mutant_tests: bool = True) -> list[str]:
    extra = mutant_tests_of(target, root / MUTANT_TESTS) if with_mutant_tests else []
    return extra + list(target.tests)


def snapshot_sources() -> Path:
    """Copy ``src/halp``, ``tests/``, ``config/`` and ``pyproject.toml`` under the scratch folder.

    The whole run imports halp from this copy (its forks and their subprocesses too,
    through ``PYTHONPATH``) and runs the copied tests from the copy's root, so edits made
    to the repository while it runs change nothing. Returns the copy's root.
    """
    shutil.rmtree(SNAPSHOT, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", ".pytest_cache")
    shutil.copytree(ROOT / "src" / "halp", SNAPSHOT / "src" / "halp", ignore=ignore)
    shutil.copytree(ROOT / "tests", SNAPSHOT / "tests", ignore=ignore)
    # the tests that read the shipped configs find them next to their folder
    shutil.copytree(ROOT / "config", SNAPSHOT / "config", ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", SNAPSHOT / "pyproject.toml")
    # the tests' default place for the optional real data is relative to their folder
    os.environ.setdefault("HALP_REALDATA", str(ROOT.parent / "shared" / "realdata"))
    return SNAPSHOT


def _preload(root: Path) -> None:
    for name in THREAD_VARS:
        os.environ[name] = "1"
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(root / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    sys.path.insert(0, str(root / "src"))
    for name in PRELOAD:
        importlib.import_module(name)
    for name in OPTIONAL_PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    for target in TARGETS.values():
        module = importlib.import_module(target.module)
        if not Path(module.__file__ or "").is_relative_to(root):
            raise RuntimeError(f"{target.module} was imported from {module.__file__}, not {root}")
    import torch

    torch.set_num_threads(1)


# ---------------------------------------------------------------- reporting


@dataclass
class Tally:
    """Counts of one module."""

    generated: int = 0
    killed: int = 0
    survived: int = 0
    timeout: int = 0
    error: int = 0
    equivalent: int = 0
    excused: int = 0  # survivors with an "in practice:" or "CPU-only:" verdict
    seconds: float = 0.0
    survivors: list[Mutant] = field(default_factory=list)

    def add(self, m: Mutant) -> None:
        self.generated += 1
        self.seconds += m.seconds
        if m.status == "killed":
            self.killed += 1
        elif m.status == "timeout":
            self.timeout += 1
        elif m.status == "error":
            self.error += 1
            self.survivors.append(m)
        else:
            self.survived += 1
            self.survivors.append(m)
            if m.verdict.startswith(NOT_EQUIVALENT_PREFIXES):
                self.excused += 1
            elif m.verdict:
                self.equivalent += 1

    @property
    def score(self) -> float:
        return 100.0 * (self.killed + self.timeout) / max(self.generated, 1)

    @property
    def score_non_equivalent(self) -> float:
        return 100.0 * (self.killed + self.timeout) / max(self.generated - self.equivalent, 1)


def report(mutants: Sequence[Mutant], wall: float) -> tuple[dict[str, Tally], Tally]:
    """Print the per-module table, the scores and every survivor."""
    tallies: dict[str, Tally] = {}
    total = Tally()
    for m in mutants:
        tallies.setdefault(m.module, Tally()).add(m)
        total.add(m)
    print()
    header = (
        f"{'module':<12}{'generated':>10}{'killed':>8}{'survived':>10}{'timeout':>9}"
        f"{'error':>7}{'equiv.':>8}{'excused':>9}{'score':>9}{'non-eq.':>9}{'time':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, t in [*tallies.items(), ("TOTAL", total)]:
        print(
            f"{name:<12}{t.generated:>10}{t.killed:>8}{t.survived:>10}{t.timeout:>9}{t.error:>7}"
            f"{t.equivalent:>8}{t.excused:>9}{t.score:>8.1f}%{t.score_non_equivalent:>8.1f}%"
            f"{t.seconds:>7.0f}s"
        )
    print(
        f"\noverall score: {total.score:.1f}% killed ({total.killed + total.timeout} of "
        f"{total.generated}, timeouts counted as killed); {total.score_non_equivalent:.1f}% "
        f"of the {total.generated - total.equivalent} non-equivalent; wall time {wall:.0f} s"
    )
    if total.survivors:
        print(f"\nsurvivors ({len(total.survivors)}):")
        for m in total.survivors:
            if not m.verdict:
                tag = f"OPEN ({m.status})"
            elif m.verdict.startswith(NOT_EQUIVALENT_PREFIXES):
                tag = f"NOT EQUIVALENT, {m.verdict}"
            else:
                tag = f"EQUIVALENT: {m.verdict}"
            print(f"  {m.describe()}\n      -> {tag}")
    return tallies, total


def load_results(paths: Sequence[Path]) -> tuple[list[Mutant], float]:
    """The mutants of saved ``--json`` results, a later file's outcome replacing an earlier
    one's for the same mutant (e.g. a ``--survivors-of`` or ``--line`` rerun after new
    tests); verdicts are taken from the current :data:`EQUIVALENT`. Returns them in first
    appearance order, with the files' summed wall time."""
    merged: dict[tuple[str, str, str], Mutant] = {}
    wall = 0.0
    for path in paths:
        data = json.loads(path.read_text())
        wall += float(data.get("wall_seconds", 0.0))
        for raw in data["mutants"]:
            m = Mutant(**raw)
            m.verdict = equivalence(m) if m.status == "survived" else ""
            merged[m.key] = m
    return list(merged.values()), wall


# ---------------------------------------------------------------- main


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-m", "--module", action="append", choices=sorted(TARGETS))
    parser.add_argument(
        "--line", type=int, action="append", help="only the mutants of this line (repeatable)"
    )
    parser.add_argument("--function", help="only the mutants of this function (qualified name)")
    parser.add_argument("--skip-geomstats", action="store_true", help="leave geomstats_kmeans")
    parser.add_argument("--list", action="store_true", help="print the mutants, run nothing")
    parser.add_argument(
        "--without-mutant-tests",
        action="store_true",
        help=f"leave out {MUTANT_TESTS} (the 'before' numbers)",
    )
    parser.add_argument("--timeout-factor", type=float, default=2.0)
    parser.add_argument("--timeout-extra", type=float, default=10.0)
    parser.add_argument("--json", type=Path, default=SCRATCH / "results.json")
    parser.add_argument(
        "--survivors-of",
        type=Path,
        metavar="JSON",
        help="only the mutants not killed in an earlier run's --json results",
    )
    parser.add_argument(
        "--report",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="run nothing: print the report of saved results (later files override)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per mutant")
    return parser.parse_args(argv)


def _plan(args: argparse.Namespace, root: Path) -> dict[str, list[Mutant]]:
    skip = ("geomstats_kmeans",) if args.skip_geomstats else ()
    keys = args.module or list(TARGETS)
    survivors: set[tuple[str, str, str]] = set()
    if args.survivors_of is not None:
        old = json.loads(args.survivors_of.read_text())["mutants"]
        survivors = {
            (m["module"], m["source"], m["change"]) for m in old if m["status"] != "killed"
        }
        keys = args.module or sorted({key for key, _, _ in survivors}, key=list(TARGETS).index)
    plan: dict[str, list[Mutant]] = {}
    for key in keys:
        found = generate(key, TARGETS[key], skip, root)
        if args.line:
            found = [m for m in found if m.line in args.line]
        if args.function is not None:
            found = [m for m in found if m.function == args.function]
        if args.survivors_of is not None:
            found = [m for m in found if m.key in survivors]
        plan[key] = found
    return plan


def _save(path: Path, done: Sequence[Mutant], wall: float, complete: bool) -> None:
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(wall, 1),
        "complete": complete,
        "mutants": [asdict(m) for m in done],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))


def run(args: argparse.Namespace, plan: dict[str, list[Mutant]], root: Path) -> int:
    """Run every planned mutant, module by module; print and save the results."""
    _preload(root)
    os.chdir(root)  # pytest runs the copied tests, with the copied pyproject.toml
    start = time.monotonic()
    done: list[Mutant] = []
    for key, found in plan.items():
        target = TARGETS[key]
        tests = tests_for(target, root, not args.without_mutant_tests)
        base = run_forked(target, mutated_code(target, None, root), tests, 600.0)
        if base.status != "survived":
            print(f"baseline of {key} did not pass ({base.status}, rc {base.returncode}):")
            print(Path(base.log).read_text()[-3000:])
            return 2
        timeout = args.timeout_factor * base.seconds + args.timeout_extra
        own = sum(t.startswith(f"{MUTANT_TESTS}::") for t in tests)
        files = [t for t in tests if "::" not in t]
        print(
            f"\n{key}: {len(found)} mutants; tests: {own} of {MUTANT_TESTS}, then "
            f"{' '.join(files)}; baseline {base.seconds:.1f} s, timeout {timeout:.0f} s",
            flush=True,
        )
        for n, m in enumerate(found, 1):
            out = run_forked(target, mutated_code(target, m, root), tests, timeout)
            m.status, m.seconds, m.killed_by = out.status, out.seconds, out.first_failure
            if m.status == "survived":
                m.verdict = equivalence(m)
            if args.verbose:
                print(f"  [{n}/{len(found)}] {m.status:<8} {m.seconds:5.1f}s {m.describe()}")
            else:
                mark = {"killed": ".", "survived": "S", "timeout": "T"}.get(m.status, "E")
                end = "\n" if n % 80 == 0 or n == len(found) else ""
                print(mark, end=end, flush=True)
            done.append(m)
            # after every mutant: an interrupted run keeps what it measured
            _save(args.json, done, time.monotonic() - start, complete=False)
    wall = time.monotonic() - start
    _, total = report(done, wall)
    _save(args.json, done, wall, complete=True)
    print(f"\nresults: {args.json}")
    return 1 if any(not m.verdict for m in total.survivors) else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    args.json = args.json.resolve()  # the run changes directory
    os.chdir(ROOT)
    if args.report:
        mutants, wall = load_results(args.report)
        if args.module:
            mutants = [m for m in mutants if m.module in args.module]
        _, total = report(mutants, wall)
        return 1 if any(not m.verdict for m in total.survivors) else 0
    if args.list:
        plan = _plan(args, ROOT)
        for found in plan.values():
            for m in found:
                print(m.describe())
        print(f"{sum(len(v) for v in plan.values())} mutants")
        return 0
    SCRATCH.mkdir(exist_ok=True)
    root = snapshot_sources()
    try:
        return run(args, _plan(args, root), root)
    finally:
        os.chdir(ROOT)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
