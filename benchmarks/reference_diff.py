"""Step-by-step differential check of a method's training step against the released code.

    python benchmarks/reference_diff.py --method halp --ref /tmp/ref-HaLP [--steps 3]

``--ref`` is a checkout of the authors' repository: anshulbshah/HaLP (baseline, halp,
halp_cmd, cmd), maoyunyao/CMD (cmd), Levigty/AimCLR (aimclr), JHang2020/HiCLR (hiclr) or
Shen-Lab/GraphCL (graphcl). The script imports the released model and loss code from a
temporary copy of it (patched only where it cannot run on a CPU or on the current torch;
every patch is printed), builds the package's model and the released one from one state
dict, feeds both the same inputs for ``--steps`` consecutive steps with every random draw
made by the package and handed to the released code, and compares after each step, in the
order a step computes them:

* HaLP: the keys each prototype refresh clusters and the prototypes;
* the key encoder after the momentum update; HaLP: the hallucinated positives;
* each loss term and the total loss;
* the gradient of every parameter;
* every parameter and BatchNorm buffer after the optimiser step;
* the queue and its pointer after the enqueue.

The package runs in its authors' mode (``halp.tc_sampling/psel/t_star: reference``,
``encoder.reference_forward: true``; GraphCL's ``released`` augmentations); each of those
keys is then switched to the paper's value alone, from the same state and inputs, and its
effect on every compared quantity is reported under ``deviations``.

Output: one JSON line, ``{"method", "ref_repo", "ref_commit", "steps", "max_abs_diff",
"max_abs_diff_float32", "patches", "deviations", ...}``. Exit status 0 when every compared
quantity agrees to ``--tol`` (1e-5) in the float64 run (the float32 run is reported, not
gated: its rounding alone exceeds 1e-5, see :func:`default_dtype`); 1 otherwise, naming the
first disagreeing quantity on stderr; 2 for a bad command line or a checkout that is not
the expected commit. No released code is copied into the project.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

TOL = 1e-5
"""Largest accepted absolute difference of any compared quantity (float32)."""


class RefError(Exception):
    """The checkout given with --ref cannot be used (wrong repository, patch no longer applies)."""


# --------------------------------------------------------------------------------------
# The package, through as few entry points as possible
# --------------------------------------------------------------------------------------


def _package() -> types.SimpleNamespace:
    """Everything the script uses from the package, imported here and nowhere else.

    The model and config (``halp.methods.model``, ``halp.config``); the modules whose functions are
    wrapped to record the package's random draws (HaLP's objective and PosHal, HiCLR's
    joint mask); the modality transforms. GraphCL's part: :func:`_graph_package`.
    """
    from halp.config import GraphCLConfig, PretrainConfig, from_dict
    from halp.data import batch_augment
    from halp.data.modalities import MODALITIES
    from halp.methods import model as model_module

    halp_objective = importlib.import_module("halp.objectives.halp")
    poshal = sys.modules[halp_objective.hallucinate.__module__]
    return types.SimpleNamespace(
        PretrainModel=model_module.PretrainModel,
        PretrainConfig=PretrainConfig,
        GraphCLConfig=GraphCLConfig,
        from_dict=from_dict,
        halp_objective=halp_objective,
        poshal=poshal,
        batch_augment=batch_augment,  # its joint_mask_pattern is wrapped
        modalities=MODALITIES,
    )


def _graph_package() -> types.SimpleNamespace:
    """GraphCL's part of the package (it imports torch_geometric, so only when needed)."""
    from halp.data.graph_augment import make_views
    from halp.encoders.gin import GraphCLNet
    from halp.graphcl import _embed, to_batch
    from halp.objectives.graphcl import nt_xent

    return types.SimpleNamespace(
        make_views=make_views,
        to_batch=to_batch,
        embed=_embed,
        nt_xent=nt_xent,
        GraphCLNet=GraphCLNet,
    )


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Build and run both sides in ``dtype`` (parameters, inputs, buffers).

    In float64, ``Tensor.float()`` returns a float64 tensor unchanged for the duration:
    the package casts its embeddings with ``.float()`` so that every objective computes in
    float32 (``halp.methods.model``); left in place, that rounding (about 1e-7 relative) is
    amplified by BatchNorm's backward over a batch of 8 rows into gradient differences of
    a few percent on near-cancelling gradients (HiCLR's), which would hide a real
    difference. No released step calls ``.float()``.
    """
    saved = torch.get_default_dtype()
    original = torch.Tensor.float
    torch.set_default_dtype(dtype)
    if dtype == torch.float64:

        def keep_double(self: Tensor, *args: Any, **kwargs: Any) -> Tensor:
            if self.dtype == torch.float64:
                return self
            return original(self, *args, **kwargs)

        torch.Tensor.float = keep_double  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.float = original  # type: ignore[method-assign]
        torch.set_default_dtype(saved)


@contextlib.contextmanager
def _wrapped(module: Any, name: str, make: Callable[[Any], Any]) -> Iterator[None]:
    """Temporarily replace ``module.name`` by ``make(original)``."""
    original = getattr(module, name)
    setattr(module, name, make(original))
    try:
        yield
    finally:
        setattr(module, name, original)


def _recording(
    into: list[Tensor], part: Callable[[Any], Tensor] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A ``make`` for :func:`_wrapped`: the original, appending a copy of each result (or of
    ``part(result)``) to ``into``."""

    def wrap(orig: Callable[..., Any]) -> Callable[..., Any]:
        def recorded(*args: Any, **kwargs: Any) -> Any:
            out = orig(*args, **kwargs)
            into.append((out if part is None else part(out)).detach().clone())
            return out

        return recorded

    return wrap


# --------------------------------------------------------------------------------------
# Loading the released code from a patched temporary copy
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Patch:
    """A textual change of one released file in the temporary copy (never of the math)."""

    file: str
    old: str
    new: str
    why: str
    count: int = 1  # occurrences expected

    def describe(self) -> str:
        return f"{self.file}: {self.old.strip()!r} -> {self.new.strip()!r} ({self.why})"


@dataclass(frozen=True)
class Stub:
    """A module the released code imports that is replaced for the run (listed as a patch)."""

    name: str
    attrs: dict[str, Any]
    why: str

    def describe(self) -> str:
        return f"import {self.name}: stub module ({self.why})"


def git_commit(ref: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ref), "rev-parse", "HEAD"], capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


@contextlib.contextmanager
def released_modules(
    ref: Path,
    package: str,
    modules: list[str],
    patches: list[Patch],
    stubs: list[Stub],
    flat: bool = False,
) -> Iterator[dict[str, types.ModuleType]]:
    """Import each of ``modules`` from a patched temporary copy of ``ref/package``.

    ``flat=False``: ``package`` is a Python package, imported as ``package.<module>``;
    ``flat=True``: a folder of top-level modules importing each other by plain name. The
    modules loaded from the copy and the stubs leave ``sys.modules`` afterwards (what they
    replaced is put back), so several checkouts can be loaded in one process. A patch
    whose text is not found raises RefError.
    """
    src = ref / package
    if not src.is_dir():
        raise RefError(f"--ref {ref}: no folder {package}/ (is this the right repository?)")
    with tempfile.TemporaryDirectory(prefix="refdiff-") as tmp:
        dst = Path(tmp) / package
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        for p in patches:
            path = Path(tmp) / p.file
            if not path.is_file():
                raise RefError(f"--ref {ref}: no file {p.file} to patch")
            text = path.read_text()
            found = text.count(p.old)
            if found != p.count:
                raise RefError(
                    f"--ref {ref}: patch of {p.file} expects {p.count} occurrence(s) of "
                    f"{p.old.strip()!r}, found {found}: the checkout is not the expected commit"
                )
            path.write_text(text.replace(p.old, p.new))
        root = str(dst) if flat else tmp
        names = modules if flat else [package] + [f"{package}.{m}" for m in modules]
        stub_names = sorted(
            {
                ".".join(s.name.split(".")[:i])
                for s in stubs
                for i in range(1, len(s.name.split(".")) + 1)
            }
        )
        saved = {k: sys.modules[k] for k in [*names, *stub_names] if k in sys.modules}
        for k in saved:
            del sys.modules[k]
        for name in stub_names:
            sys.modules[name] = types.ModuleType(name)
        for stub in stubs:
            for key, value in stub.attrs.items():
                setattr(sys.modules[stub.name], key, value)
        sys.path.insert(0, root)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the released code prints
                loaded = {
                    m: importlib.import_module(m if flat else f"{package}.{m}") for m in modules
                }
            yield loaded
        finally:
            sys.path.remove(root)
            for k, mod in list(sys.modules.items()):
                if str(getattr(mod, "__file__", "") or "").startswith(tmp) or k in stub_names:
                    del sys.modules[k]
            sys.modules.update(saved)


# --------------------------------------------------------------------------------------
# Comparison bookkeeping
# --------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """Per-quantity largest absolute differences over the steps, and the first disagreement."""

    tol: float
    max_abs: dict[str, float] = field(default_factory=dict)
    first_failure: str | None = None

    def add(self, group: str, name: str, ours: Tensor, theirs: Tensor, step: int) -> None:
        """Compare one quantity; ``group`` is the key it is summarised under."""
        ours = ours.detach().double().cpu()
        theirs = theirs.detach().double().cpu()
        if ours.shape != theirs.shape:
            diff = float("inf")
        else:
            d = (ours - theirs).abs()
            both_nan = torch.isnan(ours) & torch.isnan(theirs)
            d = torch.where(both_nan, torch.zeros_like(d), d)
            d = torch.where(torch.isnan(d), torch.full_like(d, float("inf")), d)
            diff = float(d.max()) if d.numel() else 0.0
        self.max_abs[group] = max(self.max_abs.get(group, 0.0), diff)
        if diff > self.tol and self.first_failure is None:
            what = (
                name
                if ours.shape == theirs.shape
                else f"{name} (shape {tuple(ours.shape)} vs {tuple(theirs.shape)})"
            )
            self.first_failure = f"{what} at step {step}: max |diff| = {diff:.3g} > {self.tol:g}"


def compare_states(
    cmp: Comparison,
    ours: dict[str, Tensor],
    theirs: dict[str, Tensor],
    step: int,
    classify: Callable[[str], str],
) -> None:
    """Compare two name-aligned dicts of tensors, each entry under ``classify(name)``."""
    missing = sorted(set(ours) ^ set(theirs))
    if missing:
        raise AssertionError(f"internal: quantities on one side only: {missing[:5]}")
    for name in sorted(ours, key=lambda n: _causal_rank(classify(n))):
        cmp.add(classify(name), name, ours[name], theirs[name], step)


_CAUSAL = (
    "prototype_input",
    "prototypes",
    "key_encoder",
    "key_encoder_buffer",
    "positives",
    "embedding",
    "loss_",  # every term, in the order of the step
    "total",
    "grad",
    "param",
    "buffer",
    "queue",
    "queue_ptr",
)


def _causal_rank(group: str) -> int:
    """Quantities are compared in the order a step computes them, so the first
    disagreement named is the earliest one (a wrong momentum shows in the key encoder,
    not in the loss it then changes)."""
    for i, head in enumerate(_CAUSAL):
        if group == head or (head.endswith("_") and group.startswith(head)):
            return i
    return len(_CAUSAL)


# --------------------------------------------------------------------------------------
# Injected draws
# --------------------------------------------------------------------------------------


class DrawLog:
    """What the package drew in one step, for the released code to draw the same."""

    def __init__(self) -> None:
        self.selected: list[Tensor] = []  # (B, Ng) prototype indices, per modality call
        self.u: list[Tensor] = []  # (B, Ng) U[0, 1) behind each t_c
        self.positives: list[Tensor] = []  # (B, Ng, D) hallucinated positives
        self.kmeans_input: list[Tensor] = []  # (M, K, D) keys clustered
        self.centres: list[Tensor] = []  # (M, P, D) prototypes

    def clear(self) -> None:
        for v in vars(self).values():
            v.clear()


@contextlib.contextmanager
def record_package_draws(pkg: types.SimpleNamespace, log: DrawLog) -> Iterator[None]:
    """Record the package's P_sel, t_c uniforms, positives and k-means inputs/outputs."""
    poshal, hobj = pkg.poshal, pkg.halp_objective

    def wrap_tc(orig: Callable[..., Tensor]) -> Callable[..., Tensor]:
        def sample(
            t_star: Tensor, lam: float, generator: torch.Generator, mode: str = "paper"
        ) -> Tensor:
            state = generator.get_state()
            out = orig(t_star, lam, generator, mode)
            if mode != "fixed":  # the same U[0, 1) the package drew, re-drawn from a copy
                replay = torch.Generator(device=generator.device)
                replay.set_state(state)
                u = torch.rand(t_star.shape, generator=replay, device=generator.device)
                log.u.append(u.to(t_star.device))
            return out

        return sample

    def wrap_kmeans(orig: Callable[..., Tensor]) -> Callable[..., Tensor]:
        def kmeans(keys: Tensor, *args: Any, **kwargs: Any) -> Tensor:
            out = orig(keys, *args, **kwargs)
            log.kmeans_input.append(keys.detach().clone())
            log.centres.append(out.detach().clone())
            return out

        return kmeans

    with (
        _wrapped(poshal, "select_other_prototypes", _recording(log.selected)),
        _wrapped(poshal, "sample_tc", wrap_tc),
        _wrapped(hobj, "hallucinate", _recording(log.positives, lambda out: out.h)),
        _wrapped(hobj, "spherical_kmeans", wrap_kmeans),
    ):
        yield


class _InjectedUniform:
    """``torch.FloatTensor(n)`` whose ``uniform_(0, lam)`` returns the injected draw."""

    def __init__(self, queue: list[Tensor], n: int) -> None:
        self.queue, self.n = queue, n

    def uniform_(self, low: float, high: float) -> Tensor:
        if not self.queue:
            raise AssertionError("the released code drew more t_c uniforms than the package")
        u = self.queue.pop(0).reshape(-1).float()
        if u.numel() != self.n or low != 0:
            raise AssertionError(
                f"uniform draw of {self.n} in [{low}, {high}) vs {u.numel()} injected"
            )
        return u * high  # U(0, lam) from the package's U[0, 1): the same number


class _TorchWithInjectedDraws(types.ModuleType):
    """``torch`` for the released generator module, with ``FloatTensor(n)`` injected."""

    def __init__(self, queue: list[Tensor]) -> None:
        super().__init__("torch")
        self._queue = queue

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    def FloatTensor(self, *size: int) -> Any:
        if len(size) == 1 and isinstance(size[0], int):
            return _InjectedUniform(self._queue, size[0])
        return torch.FloatTensor(*size)


class _NumpyWithInjectedChoice(types.ModuleType):
    """``numpy`` for the released generator; ``random.choice`` returns injected positions."""

    def __init__(self, queue: list[np.ndarray]) -> None:
        super().__init__("numpy")
        rnd = types.SimpleNamespace()

        def choice(a: Any, size: Any = None, replace: bool = True) -> np.ndarray:
            if not queue:
                raise AssertionError("the released code drew more P_sel than the package")
            out = queue.pop(0)
            if tuple(out.shape) != tuple(size) or out.max(initial=0) >= len(a):
                raise AssertionError(f"injected choice {out.shape} does not fit {len(a)}, {size}")
            return out

        rnd.choice = choice
        self.random = rnd

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


class _FakeKMeans:
    """geomstats' ``RiemannianKMeans``: records its input, returns the injected centres."""

    def __init__(
        self, inputs: list[Tensor], centres: list[Tensor], *args: Any, **kwargs: Any
    ) -> None:
        self.inputs, self.injected = inputs, centres
        self.kwargs = kwargs
        self.centroids: np.ndarray | None = None

    def fit(self, x: np.ndarray) -> _FakeKMeans:
        self.inputs.append(torch.from_numpy(np.array(x, dtype=np.float32)))
        if not self.injected:
            raise AssertionError(
                "the released code refreshed its prototypes more often than the package"
            )
        self.centroids = self.injected.pop(0).numpy()
        return self


# --------------------------------------------------------------------------------------
# BiGRU MoCo methods: baseline, halp (anshulbshah/HaLP), cmd (maoyunyao/CMD or HaLP's
# multi-modal builder), halp_cmd (HaLP's multi-modal builder)
# --------------------------------------------------------------------------------------

SIZES = {"hidden": 8, "layers": 2, "dim": 8, "frames": 5, "batch": 4, "queue": 16}
HALP_SIZES = {"prototypes": 4, "top_k": 8, "positives": 6, "refresh_every": 2, "mu": 2.0}
CMD_SIZES = {"topk": 8, "weight": 0.5}
SUFFIX = {"joint": "", "motion": "_motion", "bone": "_bone"}
PROTO_SUFFIX = {"joint": "_j", "motion": "_m", "bone": "_b"}
ALL = ("joint", "motion", "bone")


@dataclass(frozen=True)
class BiGRUSpec:
    """How one released BiGRU MoCo builder is driven and read."""

    repo: str
    builder: str  # module under moco/
    modalities: tuple[str, ...]
    generate: bool = False  # hallucinates positives (HaLP)
    cmd: bool = False  # returns the CMD term
    step_flags: bool = False  # forward takes update_prototypes / generate_this_step
    halp_weight: str = "mu"  # the args attribute the released code weighs L_HaLP with

    @property
    def multi(self) -> bool:
        return len(self.modalities) > 1


def _spec(method: str, ref: Path) -> BiGRUSpec:
    if method == "baseline":
        return BiGRUSpec("anshulbshah/HaLP", "builder_single_modality_baseline", ("joint",))
    if method == "halp":
        return BiGRUSpec(
            "anshulbshah/HaLP",
            "builder_single_modality_halp",
            ("joint",),
            generate=True,
            step_flags=True,
        )
    if method == "cmd":
        if (ref / "moco" / "builder_cmd.py").is_file():
            return BiGRUSpec("maoyunyao/CMD", "builder_cmd", ALL, cmd=True)
        return BiGRUSpec("anshulbshah/HaLP", "builder_mm_cmd", ALL, cmd=True, step_flags=True)
    if method == "halp_cmd":
        return BiGRUSpec(
            "anshulbshah/HaLP",
            "builder_mm_halp",
            ALL,
            generate=True,
            cmd=True,
            step_flags=True,
            halp_weight="pn1_weight",
        )
    raise KeyError(method)


def _moco_config(pkg: types.SimpleNamespace, method: str, **over: Any) -> Any:
    h = SIZES["hidden"]
    data: dict[str, Any] = {
        "method": method,
        "seed": 3,
        "encoder": {
            "hidden_size": h,
            "num_layers": SIZES["layers"],
            "proj_hidden": 2 * h,  # the released MLP head is Linear(2H, 2H) -> ReLU -> Linear
            "out_dim": SIZES["dim"],
            "reference_forward": True,
        },
        "moco": {"queue_size": SIZES["queue"], "momentum": 0.9, "temperature": 0.07},
        "halp": {
            "num_prototypes": HALP_SIZES["prototypes"],
            "top_k": HALP_SIZES["top_k"],
            "refresh_every": HALP_SIZES["refresh_every"],
            "num_positives": HALP_SIZES["positives"],
            "lam": 0.8,
            "mu": HALP_SIZES["mu"],
            "mu_start_epoch": 0,
            "warmup_samples": 0,
            "tc_sampling": "reference",
            "psel": "reference",
            "t_star": "reference",
        },
        "cmd": {
            "topk": CMD_SIZES["topk"],
            "teacher_temperature": 0.05,
            "student_temperature": 0.1,
            "weight": CMD_SIZES["weight"],
        },
        "optim": {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
    }
    for key, value in over.items():
        section, name = key.split(".")
        data[section][name] = value
    return pkg.from_dict(pkg.PretrainConfig, data)


def _bigru_ref_name(name: str) -> str:
    """A package encoder parameter name -> the released BIGRU's."""
    if name.startswith("gru."):
        return "encoder." + name
    if name.startswith("projection."):
        return "fc." + name[len("projection.") :]
    return name


def _cuda_patch(builder: str) -> Patch:
    return Patch(
        f"moco/{builder}.py",
        "dtype=torch.long).cuda()",
        "dtype=torch.long).to(logits.device)",
        "the InfoNCE labels made on the logits' device instead of CUDA",
    )


TORCHVISION_STUB = Stub("torchvision", {}, "imported by moco/GRU.py but never used")
GEOMSTATS_STUBS = [
    Stub(
        "geomstats.learning.kmeans",
        {"RiemannianKMeans": None},
        "k-means is replaced by the injected prototypes; its input keys are compared",
    ),
    Stub(
        "geomstats.geometry.hypersphere",
        {"Hypersphere": lambda dim: types.SimpleNamespace(metric=None, dim=dim)},
        "the metric is only passed to the (injected) k-means",
    ),
]


@dataclass
class StepResult:
    terms: dict[str, Tensor]
    grads: dict[str, Tensor]
    params: dict[str, Tensor]  # parameters and buffers after the optimiser step, by our names


def _inputs(steps: int, seed: int) -> list[tuple[Tensor, Tensor]]:
    """Joint clips (query view, key view) per step, drawn in float32."""
    g = torch.Generator().manual_seed(seed)
    shape = (SIZES["batch"], 3, SIZES["frames"], 25, 2)
    dtype = torch.get_default_dtype()
    return [
        (
            torch.randn(shape, generator=g, dtype=torch.float32).to(dtype),
            torch.randn(shape, generator=g, dtype=torch.float32).to(dtype),
        )
        for _ in range(steps)
    ]


def _classify(name: str) -> str:
    """The summary key of a compared quantity."""
    head, _, rest = name.partition("/")
    if head in ("grad", "param", "buffer") and ".encoder_k." in rest:
        return "key_encoder" if head == "param" else f"key_encoder_{head}"
    if head == "loss":
        return rest
    return head


def _package_state(model: nn.Module) -> dict[str, Tensor]:
    """Our comparable state: params (q and k encoders), buffers, queue, pointer, prototypes."""
    out: dict[str, Tensor] = {}
    for name, t in model.state_dict().items():
        if name.endswith(("num_batches_tracked", ".seen", "keys_seen", ".ready")):
            continue
        if name.endswith("queue.keys"):
            out["queue/" + name.split(".")[1]] = t
        elif name.endswith("queue.ptr"):
            out["queue_ptr/" + name.split(".")[1]] = t.reshape(1)
        elif ".prototypes." in name and name.endswith("centres"):
            out["prototypes/" + name.split(".")[-2]] = t
        elif "running_" in name:
            out["buffer/" + name] = t
        else:
            out["param/" + name] = t
    return out


def _grads(
    named: Iterator[tuple[str, nn.Parameter]], rename: Callable[[str], str]
) -> dict[str, Tensor]:
    """``grad/<our name>`` -> a copy of each gradient that was computed."""
    return {
        "grad/" + rename(n): p.grad.detach().clone()
        for n, p in named
        if p.requires_grad and p.grad is not None
    }


def _compare_steps(tol: float, ours: list[StepResult], theirs: list[StepResult]) -> Comparison:
    """Both sides' quantities compared after each step."""
    cmp = Comparison(tol)
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        compare_states(
            cmp,
            {**a.terms, **a.grads, **a.params},
            {**b.terms, **b.grads, **b.params},
            step,
            _classify,
        )
    return cmp


def _step0_terms(ours: list[StepResult]) -> dict[str, float]:
    """The package's loss terms at step 0, by term name."""
    return {k.split("/", 1)[1]: float(v) for k, v in ours[0].terms.items() if k.startswith("loss/")}


class BiGRUHarness:
    """Drives a released BiGRU MoCo builder (MoCo, HaLP, CMD, HaLP+CMD) against the package."""

    def __init__(self, method: str, ref: Path, steps: int, tol: float) -> None:
        self.method, self.ref, self.steps, self.tol = method, ref, steps, tol
        self.pkg = _package()
        self.spec = _spec(method, ref)
        self.patches = [_cuda_patch(self.spec.builder)]
        self.stubs = [TORCHVISION_STUB] + (GEOMSTATS_STUBS if self.spec.generate else [])

    # -- building ---------------------------------------------------------------------

    def package_model(self, **over: Any) -> Any:
        config = _moco_config(self.pkg, self.method, **over)
        model = self.pkg.PretrainModel(config)
        state = model.state_dict()
        for name in state:  # a "resumed" run: the queue counts as full
            if name.endswith("queue.seen"):
                state[name] = torch.tensor(SIZES["queue"])
        model.load_state_dict(state)
        model.train()
        return model

    def name_map(self, model: nn.Module) -> dict[str, str]:
        """Our state-dict names -> the released model's (encoders, queues, prototypes)."""
        out = {}
        for name in model.state_dict():
            parts = name.split(".")
            if parts[0] == "branches":
                m = parts[1]
                if parts[2].startswith("encoder_"):
                    rest = ".".join(parts[3:])
                    out[name] = f"{parts[2]}{SUFFIX[m]}.{_bigru_ref_name(rest)}"
                elif parts[2:] == ["queue", "keys"]:
                    out[name] = "queue" + SUFFIX[m]
                elif parts[2:] == ["queue", "ptr"]:
                    out[name] = "queue_ptr" + SUFFIX[m]
            elif name.endswith(".centres"):
                m = parts[-2]
                out[name] = "prototypes" + (PROTO_SUFFIX[m] if self.spec.multi else "")
        return out

    def ref_model(self, mod: types.ModuleType, model: nn.Module) -> nn.Module:
        args = types.SimpleNamespace(
            queue_els_for_prototypes=HALP_SIZES["top_k"],
            num_prototypes=HALP_SIZES["prototypes"],
            num_closest_to_ignore_positives=20,
            skip_closest_positives=1,
            num_positives=HALP_SIZES["positives"],
            lambda_pos="0.8",
            mu=HALP_SIZES["mu"],
            pn1_weight=HALP_SIZES["mu"],
        )
        kwargs: dict[str, Any] = dict(
            skeleton_representation="graph-based",
            args_bi_gru={
                "en_input_size": 150,
                "en_hidden_size": SIZES["hidden"],
                "en_num_layers": SIZES["layers"],
                "num_class": SIZES["dim"],
            },
            dim=SIZES["dim"],
            K=SIZES["queue"],
            m=0.9,
            T=0.07,
            teacher_T=0.05,
            student_T=0.1,
            cmd_weight=CMD_SIZES["weight"],
            topk=CMD_SIZES["topk"],
            mlp=True,
        )
        if self.spec.generate:
            kwargs["args"] = args
        with contextlib.redirect_stdout(io.StringIO()):
            ref = mod.MoCo(**kwargs)
        names = self.name_map(model)
        state = {}
        for ours, t in model.state_dict().items():
            if ours in names:
                theirs = names[ours]
                if theirs.startswith("queue_ptr"):
                    t = t.reshape(1)
                elif theirs.startswith("queue"):
                    t = t.T
                state[theirs] = t.clone().to(
                    torch.get_default_dtype() if t.is_floating_point() else t.dtype
                )
        ref.load_state_dict(state, strict=True)
        ref.train()
        return ref

    # -- one side's steps --------------------------------------------------------------

    def views(self, x: Tensor) -> dict[str, Tensor]:
        """The package's modalities of a joint clip (halp.data.modalities)."""
        modalities = self.pkg.modalities
        arr = x.numpy()
        return {
            m: torch.from_numpy(np.ascontiguousarray(modalities[m](arr)))
            for m in self.spec.modalities
        }

    def run_package(
        self, model: nn.Module, inputs: list[tuple[Tensor, Tensor]], logs: list[DrawLog]
    ) -> list[StepResult]:
        cfg = model.config  # type: ignore[attr-defined]
        params = [p for p in model.parameters() if p.requires_grad]
        o = cfg.optim
        opt = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        generator = torch.Generator().manual_seed(11)
        results = []
        for step, (xq, xk) in enumerate(inputs):
            draws = DrawLog()
            with record_package_draws(self.pkg, draws):
                model.prepare_step(0, step, generator)  # type: ignore[operator]
                out = model(self.views(xq), self.views(xk), epoch=0, generator=generator, step=step)
            opt.zero_grad()
            out.loss.backward()
            grads = _grads(model.named_parameters(), str)
            opt.step()
            terms = {"loss/total": out.loss.detach()}
            for m in self.spec.modalities:
                terms[f"loss/loss_cl_{m}"] = torch.as_tensor(out.terms[f"loss_cl_{m}"])
            if self.spec.cmd:
                terms["loss/loss_cmd"] = torch.as_tensor(out.terms["loss_cmd"])
            if self.spec.generate:
                parts = [torch.as_tensor(out.terms[f"loss_halp_{m}"]) for m in self.spec.modalities]
                terms["loss/loss_halp"] = torch.stack(parts).sum()
            for m, h in zip(self.spec.modalities, draws.positives, strict=False):
                terms[f"positives/{m}"] = h
            for x in draws.kmeans_input:  # one batched call over the modalities
                for m, keys in zip(self.spec.modalities, x, strict=True):
                    terms[f"prototype_input/{m}"] = keys
            logs.append(draws)
            results.append(
                StepResult(terms, grads, {k: v.clone() for k, v in _package_state(model).items()})
            )
        return results

    def run_reference(
        self,
        mods: dict[str, types.ModuleType],
        model_for_state: nn.Module,
        inputs: list[tuple[Tensor, Tensor]],
        logs: list[DrawLog],
    ) -> list[StepResult]:
        spec = self.spec
        builder = mods[spec.builder]
        ref = self.ref_model(builder, model_for_state)
        o = model_for_state.config.optim  # type: ignore[attr-defined]
        opt = torch.optim.SGD(
            ref.parameters(), o.lr, momentum=o.momentum, weight_decay=o.weight_decay
        )
        names = {v: k for k, v in self.name_map(model_for_state).items()}
        recorded: dict[str, list[Tensor]] = {"positives": [], "kmeans": []}
        choice_queue: list[np.ndarray] = []
        uniform_queue: list[Tensor] = []
        centres_queue: list[Tensor] = []
        pending_selected: list[Tensor] = []
        if spec.generate:
            gen_mod = mods["generator"]
            gen_mod.np = _NumpyWithInjectedChoice(choice_queue)  # type: ignore[attr-defined]
            gen_mod.torch = _TorchWithInjectedDraws(uniform_queue)  # type: ignore[attr-defined]
            builder.RiemannianKMeans = lambda *a, **k: _FakeKMeans(
                recorded["kmeans"], centres_queue, *a, **k
            )  # type: ignore[attr-defined]
            orig_mixup = gen_mod.generate_positives_using_mixup

            def mixup(
                prototypes: Tensor, initial_value: Tensor, inds: Tensor | None = None, **kw: Any
            ) -> Any:
                # the package's P_sel indices as positions in the released candidate list
                # ``inds`` (ascending similarity), which np.random.choice then returns
                sel = pending_selected.pop(0)
                assert inds is not None
                same = inds.unsqueeze(1) == sel.unsqueeze(-1)  # (B, Ng, W)
                if not bool(same.any(-1).all()):
                    raise AssertionError(
                        "the package drew a P_sel outside the released candidate set"
                    )
                choice_queue.append(same.float().argmax(-1).numpy())
                return orig_mixup(prototypes, initial_value, inds=inds, **kw)

            gen_mod.generate_positives_using_mixup = mixup  # type: ignore[attr-defined]
            orig_pos = builder.pos_generator

            def pos_generator(**kw: Any) -> Any:
                out = orig_pos(**kw)
                recorded["positives"].append(out[0].detach().clone())
                return out

            builder.pos_generator = pos_generator  # type: ignore[attr-defined]
        n = len(spec.modalities)
        results = []
        for step, (xq, xk) in enumerate(inputs):
            draws = logs[step]
            recorded["positives"].clear()
            recorded["kmeans"].clear()
            with contextlib.redirect_stdout(io.StringIO()):
                if spec.generate and draws.centres:
                    # the package refreshed before this step; the released code refreshes
                    # at the end of the step before, from the same queue
                    for c in draws.centres:
                        centres_queue.extend(c.unbind(0))
                    ref.update_prototypes(True)
                pending_selected[:] = [s.cpu() for s in draws.selected]
                uniform_queue[:] = [u.cpu() for u in draws.u]
                kwargs = (
                    {"update_prototypes": False, "generate_this_step": spec.generate}
                    if spec.step_flags
                    else {}
                )
                out = ref(xq, xk, **kwargs)
            logits, labels = out[:n], out[n]
            extra = list(out[n + 1 :])
            ce = [F.cross_entropy(lg, labels) for lg in logits]
            loss = torch.stack(ce).sum()
            terms: dict[str, Tensor] = {}
            for m, value in zip(spec.modalities, ce, strict=True):
                terms[f"loss/loss_cl_{m}"] = value.detach()
            if spec.cmd:
                cmd = extra.pop(0).reshape(())
                loss = loss + cmd
                terms["loss/loss_cmd"] = cmd.detach() / CMD_SIZES["weight"]
            if spec.generate:
                pn = extra.pop(0).reshape(())
                loss = loss + pn
                terms["loss/loss_halp"] = pn.detach() / HALP_SIZES["mu"]
            terms["loss/total"] = loss.detach()
            opt.zero_grad()
            loss.backward()
            grads = _grads(ref.named_parameters(), names.__getitem__)
            opt.step()
            for m, h in zip(spec.modalities, recorded["positives"], strict=False):
                terms[f"positives/{m}"] = h
            for m, x in zip(spec.modalities, recorded["kmeans"], strict=False):
                terms[f"prototype_input/{m}"] = x
            state: dict[str, Tensor] = {}
            for k, t in ref.state_dict().items():
                if k.endswith("num_batches_tracked"):
                    continue
                ours = names[k]
                if ours.endswith("queue.keys"):
                    state["queue/" + ours.split(".")[1]] = t.T.clone()
                elif ours.endswith("queue.ptr"):
                    state["queue_ptr/" + ours.split(".")[1]] = t.clone()
                elif ours.endswith(".centres"):
                    state["prototypes/" + ours.split(".")[-2]] = t.clone()
                else:
                    state[("buffer/" if "running_" in k else "param/") + ours] = t.clone()
            results.append(StepResult(terms, grads, state))
        return results

    # -- the comparison ----------------------------------------------------------------

    def run(self, with_deviations: bool = True) -> dict[str, Any]:
        torch.manual_seed(0)  # the package's parameter init
        inputs = _inputs(self.steps, seed=5)
        model = self.package_model()
        init = copy.deepcopy(model.state_dict())
        logs: list[DrawLog] = []
        ours = self.run_package(model, inputs, logs)
        fresh = self.package_model()
        fresh.load_state_dict(init)
        modules = [self.spec.builder] + (["generator"] if self.spec.generate else [])
        with released_modules(self.ref, "moco", modules, self.patches, self.stubs) as mods:
            theirs = self.run_reference(mods, fresh, inputs, logs)
        cmp = _compare_steps(self.tol, ours, theirs)
        return {
            "comparison": cmp,
            "ref_repo": self.spec.repo,
            "patches": [p.describe() for p in self.patches]
            + [s.describe() for s in self.stubs]
            + self.injections(),
            "deviations": self.deviations(inputs, init, ours) if with_deviations else [],
            "terms_step0": _step0_terms(ours),
        }

    def injections(self) -> list[str]:
        if not self.spec.generate:
            return []
        return [
            "runtime: moco.generator's np.random.choice returns the positions of the package's "
            "P_sel in the released candidate list",
            "runtime: moco.generator's torch.FloatTensor(n).uniform_(0, lambda) returns lambda "
            "times the package's U[0, 1) draws",
            "runtime: RiemannianKMeans.fit returns the package's prototypes (its input keys "
            "are compared)",
            "runtime: update_prototypes(True) is called before each step the package refreshes at "
            "(the released loop calls it at the end of the step before)",
        ]

    def deviation_keys(self) -> list[tuple[str, Any, str]]:
        keys: list[tuple[str, Any, str]] = [
            (
                "encoder.reference_forward",
                False,
                "paper: a bidirectional GRU over the clip; released: both directions run "
                "forward in time, one frame per call",
            )
        ]
        if self.spec.generate:
            keys += [
                (
                    "halp.tc_sampling",
                    "paper",
                    "paper: t_c ~ U(0, lambda t*); released: t_c = (1 - U(0, lambda)) t*",
                ),
                (
                    "halp.psel",
                    "paper",
                    "paper: P_sel uniform over the P - 1 non-closest prototypes; released: over "
                    "the 20 nearest after p* (the same set for P <= 21; draws map differently)",
                ),
                (
                    "halp.t_star",
                    "paper",
                    "paper: the atan2 form of Eq. 7, in [0, 1]; released: plain atan (t* < 0 when "
                    "kappa + cos(Omega) < 0)",
                ),
            ]
        return keys

    def deviations(
        self, inputs: list[tuple[Tensor, Tensor]], init: dict[str, Tensor], ours: list[StepResult]
    ) -> list[dict[str, Any]]:
        out = []
        for key, value, what in self.deviation_keys():
            model = self.package_model(**{key: value})
            model.load_state_dict(init)
            alt = self.run_package(model, inputs, [])
            cmp = Comparison(float("inf"))
            first = Comparison(float("inf"))
            for step, (a, b) in enumerate(zip(alt, ours, strict=True)):
                for part in ("terms", "grads", "params"):
                    x, y = getattr(a, part), getattr(b, part)
                    for name in sorted(set(x) & set(y)):
                        if x[name].shape == y[name].shape:
                            cmp.add(_classify(name), name, x[name], y[name], step)
                            if step == 0 and part == "terms":
                                first.add(_classify(name), name, x[name], y[name], step)
            out.append(
                {
                    "config": f"{key}: {value}",
                    "what": what,
                    "effect_step0": _rounded(first.max_abs),
                    "effect_max_abs": _rounded(cmp.max_abs),
                }
            )
        return out


# --------------------------------------------------------------------------------------
# GraphCL (Shen-Lab/GraphCL, unsupervised_TU)
# --------------------------------------------------------------------------------------

GRAPH_SIZES = {"graphs": 6, "features": 3, "hidden": 8, "layers": 2, "lr": 0.01}
GRAPHCL_STUBS = [Stub("seaborn", {}, "imported by evaluate_embedding.py for plots only")]


def _random_graphs(count: int, features: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Small connected-ish undirected graphs with one-hot node labels (both edge directions)."""
    rng = np.random.default_rng(seed)
    graphs = []
    for _ in range(count):
        n = int(rng.integers(6, 11))
        pairs = {(i, i + 1) for i in range(n - 1)}  # a path, so no node is isolated
        for _ in range(n):
            a, b = (int(v) for v in rng.choice(n, 2, replace=False))
            pairs.add((min(a, b), max(a, b)))
        und = np.array(sorted(pairs), dtype=np.int64).T
        edges = np.concatenate([und, und[::-1]], axis=1)
        x = np.eye(features, dtype=np.float32)[rng.integers(features, size=n)]
        graphs.append((x, edges))
    return graphs


class GraphCLHarness:
    """The released ``simclr`` model (GIN encoder, head, ``loss_cal``) against the package.

    The views are the random draws of GraphCL: the package draws them
    (:func:`halp.data.graph_augment.make_views`, released mode) and both sides get the same
    two batches each step. The released augmentation (``aug.py``) and the view-2 node
    remapping in ``gsimclr.py``'s ``__main__`` are not importable and are not compared here.
    """

    def __init__(self, method: str, ref: Path, steps: int, tol: float) -> None:
        self.method, self.ref, self.steps, self.tol = method, ref, steps, tol
        self.pkg = _package()
        self.graph = _graph_package()
        self.patches: list[Patch] = []
        self.stubs = GRAPHCL_STUBS

    def config(self, **over: Any) -> Any:
        data: dict[str, Any] = {
            "method": "graphcl",
            "aug_set": "random4",
            "hidden": GRAPH_SIZES["hidden"],
            "layers": GRAPH_SIZES["layers"],
            "lr": GRAPH_SIZES["lr"],
            "temperature": 0.2,
            "subgraph": "released",
            "edge_perturbation": "released",
            "self_loops": "released",
        }
        data.update(over)
        return self.pkg.from_dict(self.pkg.GraphCLConfig, data)

    def batches(self, config: Any) -> list[tuple[Any, Any]]:
        make_views, to_batch = self.graph.make_views, self.graph.to_batch
        rng = np.random.default_rng(7)
        graphs = _random_graphs(GRAPH_SIZES["graphs"], GRAPH_SIZES["features"], seed=1)
        out = []
        for _ in range(self.steps):
            views = [make_views(x, e, config, rng) for x, e in graphs]
            out.append((to_batch([v[0] for v in views]), to_batch([v[1] for v in views])))
        dtype = torch.get_default_dtype()
        for b1, b2 in out:
            b1.x, b2.x = b1.x.to(dtype), b2.x.to(dtype)
        return out

    def run_package(
        self, net: nn.Module, config: Any, batches: list[tuple[Any, Any]]
    ) -> list[StepResult]:
        """The step of :func:`halp.graphcl.pretrain` for ``method: graphcl``."""
        _embed, nt_xent = self.graph.embed, self.graph.nt_xent
        opt = torch.optim.Adam(net.parameters(), lr=config.lr)
        results = []
        for b1, b2 in batches:
            z1 = _embed(net, b1, project=True)  # type: ignore[arg-type]
            z2 = _embed(net, b2, project=True)  # type: ignore[arg-type]
            loss = nt_xent(z1, z2, config.temperature)
            results.append(self.step(net, opt, loss, (z1, z2), str))
        return results

    @staticmethod
    def step(
        net: nn.Module,
        opt: torch.optim.Optimizer,
        loss: Tensor,
        embeddings: tuple[Tensor, Tensor],
        rename: Callable[[str], str],
    ) -> StepResult:
        """One side's optimiser step on ``loss`` and what it compares, by our names."""
        opt.zero_grad()
        loss.backward()
        grads = _grads(net.named_parameters(), rename)
        opt.step()
        state = {
            ("buffer/" if "running_" in n else "param/") + rename(n): t.clone()
            for n, t in net.state_dict().items()
            if not n.endswith("num_batches_tracked")
        }
        terms = {
            "loss/loss_graphcl": loss.detach(),
            "embedding/view1": embeddings[0].detach(),
            "embedding/view2": embeddings[1].detach(),
        }
        return StepResult(terms, grads, state)

    @staticmethod
    def ref_name(name: str) -> str:
        """A package GraphCLNet name -> the released simclr's."""
        name = name.replace("encoder.norms.", "encoder.bns.")
        return name.replace("head.", "proj_head.", 1) if name.startswith("head.") else name

    def run_reference(
        self, mods: dict[str, types.ModuleType], net: nn.Module, batches: list[tuple[Any, Any]]
    ) -> list[StepResult]:
        g = mods["gsimclr"]
        g.args = types.SimpleNamespace(prior=False)  # type: ignore[attr-defined]
        g.dataset_num_features = GRAPH_SIZES["features"]  # type: ignore[attr-defined]
        model = g.simclr(GRAPH_SIZES["hidden"], GRAPH_SIZES["layers"])
        ours = {self.ref_name(n): n for n in net.state_dict()}
        model.load_state_dict(
            {k: net.state_dict()[v].clone() for k, v in ours.items()}, strict=True
        )
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=GRAPH_SIZES["lr"])
        results = []
        for b1, b2 in batches:
            x = model(b1.x, b1.edge_index, b1.batch, b1.num_graphs)
            x_aug = model(b2.x, b2.edge_index, b2.batch, b2.num_graphs)
            loss = model.loss_cal(x, x_aug)
            results.append(self.step(model, opt, loss, (x, x_aug), ours.__getitem__))
        return results

    def build(self, config: Any) -> nn.Module:
        torch.manual_seed(0)
        net = self.graph.GraphCLNet(GRAPH_SIZES["features"], config.hidden, config.layers)
        net.train()
        return net

    def run(self, with_deviations: bool = True) -> dict[str, Any]:
        config = self.config()
        batches = self.batches(config)
        net = self.build(config)
        init = copy.deepcopy(net.state_dict())
        ours = self.run_package(net, config, batches)
        fresh = self.build(config)
        fresh.load_state_dict(init)
        with released_modules(
            self.ref, "unsupervised_TU", ["gsimclr"], self.patches, self.stubs, flat=True
        ) as mods:
            theirs = self.run_reference(mods, fresh, batches)
        cmp = _compare_steps(self.tol, ours, theirs)
        deviations = []
        if with_deviations:
            for key, value, what in (
                (
                    "self_loops",
                    "none",
                    "paper: the graph as given; released: self-loops on nodes 0..max-1 of view 1, "
                    "view 2 built from that graph, then stripped of isolated nodes and self-loops",
                ),
                (
                    "subgraph",
                    "walk",
                    "paper: the subgraph grows by random walk; released: the seed and its direct "
                    "neighbours",
                ),
                (
                    "edge_perturbation",
                    "paper",
                    "paper: drop and add a tenth of the undirected edges; released: drop int(E/10) "
                    "directed entries, add none",
                ),
            ):
                alt_config = self.config(**{key: value})
                alt_net = self.build(alt_config)
                alt_net.load_state_dict(init)
                alt = self.run_package(alt_net, alt_config, self.batches(alt_config))
                effect = Comparison(float("inf"))
                for step, (a, b) in enumerate(zip(alt, ours, strict=True)):
                    for name in a.terms:
                        if name.startswith("loss/"):
                            effect.add(_classify(name), name, a.terms[name], b.terms[name], step)
                    for part in ("grads", "params"):
                        x, y = getattr(a, part), getattr(b, part)
                        for name in x:
                            effect.add(_classify(name), name, x[name], y[name], step)
                deviations.append(
                    {
                        "config": f"graphcl.{key}: {value}",
                        "what": what,
                        "effect_max_abs": _rounded(effect.max_abs),
                    }
                )
        return {
            "comparison": cmp,
            "ref_repo": "Shen-Lab/GraphCL (unsupervised_TU)",
            "patches": [s.describe() for s in self.stubs]
            + [
                "runtime: gsimclr.args = (prior=False) and gsimclr.dataset_num_features set, the "
                "globals its __main__ would set",
                "runtime: both sides get the package's views (make_views, aug_set random4, "
                "released mode); the released aug.py and the view-2 remapping in gsimclr.py's "
                "__main__ are not importable and not compared",
            ],
            "deviations": deviations,
            "terms_step0": _step0_terms(ours),
        }


# --------------------------------------------------------------------------------------
# AimCLR (Levigty/AimCLR): ST-GCN, extreme view with EADM, D3M, nearest-neighbour mining
# --------------------------------------------------------------------------------------

MINING_FROM = 1
"""The first step run with nearest-neighbour mining (AimCLR, HiCLR)."""
HICLR_MASK_RATIO = 0.1
STGCN_SIZES = {"width": 4, "feature": 16, "dim": 8, "frames": 8, "batch": 4, "queue": 16, "topk": 2}


def _import_class(name: str) -> Any:
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _mining_patches(file: str) -> list[Patch]:
    """The CPU patches of a released MoCo model with nearest-neighbour mining (AimCLR, HiCLR)."""
    return [
        Patch(
            file,
            "labels = torch.zeros(logits.shape[0], dtype=torch.long).cuda()",
            "labels = torch.zeros(logits.shape[0], dtype=torch.long).to(logits.device)",
            "the InfoNCE labels made on the logits' device instead of CUDA",
        ),
        Patch(
            file,
            "torch.ones(topk_onehot.size(0), 1).cuda()",
            "torch.ones(topk_onehot.size(0), 1).to(topk_onehot)",
            "the key's column of the mined positive mask made on the queue's device",
        ),
        Patch(
            file,
            "gpu_index = keys.device.index",
            "gpu_index = keys.device.index or 0",
            "a CPU tensor has no device index: one process writes at the pointer",
        ),
    ]


AIMCLR_PATCHES = _mining_patches("net/aimclr.py")
AIMCLR_STUBS = [
    Stub(
        "torchlight",
        {"import_class": _import_class},
        "only its import_class (a dotted-name import) is used; the repository's torchlight "
        "package needs installing",
    )
]
STGCN_DROPOUT_NOTE = "runtime: ST-GCN dropout 0 on both sides (its draws cannot be shared)"


def _stgcn_ref_name(name: str) -> str:
    """A package STGCNEncoder name -> the released st_gcn.Model's."""
    if name.startswith("blocks."):
        return "st_gcn_networks." + name[len("blocks.") :]
    if name.startswith("projection."):
        return "fc." + name[len("projection.") :]
    return name


@dataclass(frozen=True)
class STGCNSpec:
    """What differs between the released ST-GCN MoCo models with mining (AimCLR, HiCLR)."""

    repo: str
    module: str  # the released net/<module>.py, holding the class ``ref_class``
    ref_class: str
    ref_kwargs: dict[str, Any]  # the released constructor's arguments beyond the shared ones
    patches: list[Patch]
    stubs: list[Stub]
    notes: list[str]  # the runtime notes listed after the patches
    section: dict[str, dict[str, Any]]  # the package's method config section
    extra_terms: tuple[str, str]  # the package terms (``<name>_joint``) of loss2 and loss3
    views: int  # clips per step


class _STGCNHarness:
    """The shared driver of a released ST-GCN MoCo model with mining against the package.

    Step 0 runs before mining, the later steps with nearest-neighbour mining (the released
    ``epoch <= mining_epoch`` switch; the package's ``mining.start_epoch``). Dropout in the
    ST-GCN blocks is set to 0 on both sides (a random draw that cannot be shared). A subclass
    gives its :class:`STGCNSpec` and how a step's clips reach each side.
    """

    spec: STGCNSpec

    def __init__(self, method: str, ref: Path, steps: int, tol: float) -> None:
        self.method, self.ref, self.steps, self.tol = method, ref, steps, tol
        self.pkg = _package()

    def package_model(self) -> Any:
        s = STGCN_SIZES
        data = {
            "method": self.method,
            "seed": 3,
            "encoder": {
                "arch": "stgcn",
                "width": s["width"],
                "feature_dim": s["feature"],
                "proj_hidden": s["feature"],
                "out_dim": s["dim"],
                "dropout": 0.0,
            },
            "moco": {"queue_size": s["queue"], "momentum": 0.9, "temperature": 0.07},
            "mining": {"start_epoch": 1, "topk": s["topk"]},
            **self.spec.section,
            "halp": {"top_k": 8, "num_prototypes": 4},  # unused, but checked against the queue
            "optim": {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
        }
        model = self.pkg.PretrainModel(self.pkg.from_dict(self.pkg.PretrainConfig, data))
        # the graph and its edge importances are built in float32 whatever the default
        model.to(torch.get_default_dtype())
        model.train()
        return model

    def inputs(self) -> list[tuple[Tensor, ...]]:
        g = torch.Generator().manual_seed(5)
        shape = (STGCN_SIZES["batch"], 3, STGCN_SIZES["frames"], 25, 2)
        dtype = torch.get_default_dtype()
        return [
            tuple(
                torch.randn(shape, generator=g, dtype=torch.float32).to(dtype)
                for _ in range(self.spec.views)
            )
            for _ in range(self.steps)
        ]

    def name_map(self, model: nn.Module) -> dict[str, str]:
        out = {}
        for name in model.state_dict():
            parts = name.split(".")
            if parts[:2] == ["branches", "joint"]:
                if parts[2].startswith("encoder_"):
                    out[name] = f"{parts[2]}.{_stgcn_ref_name('.'.join(parts[3:]))}"
                elif parts[2:] == ["queue", "keys"]:
                    out[name] = "queue"
                elif parts[2:] == ["queue", "ptr"]:
                    out[name] = "queue_ptr"
        return out

    # -- the method's hooks ------------------------------------------------------------

    def package_context(self) -> contextlib.AbstractContextManager[Any]:
        """What the package's steps run inside (a recorder of its draws)."""
        return contextlib.nullcontext()

    def package_views(self, clips: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, dict[str, Any]]:
        """A step's clips -> the package's query, key and extra views."""
        raise NotImplementedError

    def ref_forward(
        self, ref: Any, step: int, clips: tuple[Tensor, ...], mining: bool
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The released forward: ``out1``, its mask (mining) or target, ``out2``, ``out3``,
        and the targets of ``out2`` and ``out3``."""
        raise NotImplementedError

    # -- the shared steps --------------------------------------------------------------

    def run_package(self, model: Any, inputs: list[tuple[Tensor, ...]]) -> list[StepResult]:
        o = model.config.optim
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        generator = torch.Generator().manual_seed(11)
        results = []
        with self.package_context():
            for step, clips in enumerate(inputs):
                epoch = 0 if step < MINING_FROM else 1
                model.prepare_step(epoch, step, generator)
                xq, xk, views = self.package_views(clips)
                out = model(
                    {"joint": xq}, {"joint": xk}, epoch=epoch, generator=generator, step=step,
                    views=views,
                )  # fmt: skip
                opt.zero_grad()
                out.loss.backward()
                grads = _grads(model.named_parameters(), str)
                opt.step()
                t = out.terms
                second, third = self.spec.extra_terms
                terms = {
                    "loss/loss_cl_joint": torch.as_tensor(t["loss_cl_joint"]),
                    f"loss/{second}": torch.as_tensor(t[f"{second}_joint"]),
                    f"loss/{third}": torch.as_tensor(t[f"{third}_joint"]),
                    "loss/total": out.loss.detach(),
                }
                state = {k: v.clone() for k, v in _package_state(model).items()}
                results.append(StepResult(terms, grads, state))
        return results

    def run_reference(
        self, mods: dict[str, types.ModuleType], model: Any, inputs: list[tuple[Tensor, ...]]
    ) -> list[StepResult]:
        s = STGCN_SIZES
        with contextlib.redirect_stdout(io.StringIO()):
            ref = getattr(mods[self.spec.module], self.spec.ref_class)(
                base_encoder="net.st_gcn.Model", pretrain=True, feature_dim=s["dim"],
                queue_size=s["queue"], momentum=0.9, Temperature=0.07, mlp=True, in_channels=3,
                hidden_channels=s["width"], hidden_dim=s["feature"], num_class=60, dropout=0.0,
                **self.spec.ref_kwargs,
                graph_args={"layout": "ntu-rgb+d", "strategy": "spatial"},
                edge_importance_weighting=True,
            )  # fmt: skip
        names = self.name_map(model)
        state = ref.state_dict()
        covered = set()
        ours_state = model.state_dict()
        for ours, theirs in names.items():
            t = ours_state[ours]
            t = t.reshape(1) if theirs == "queue_ptr" else t.T if theirs == "queue" else t
            state[theirs] = t.clone().to(state[theirs].dtype)
            covered.add(theirs)
        missing = [k for k in state if k not in covered and not k.endswith(".A")]
        if missing:
            raise AssertionError(
                f"internal: released parameters not set from the package: {missing[:5]}"
            )
        ref.load_state_dict(state, strict=True)
        ref.train()
        back = {v: k for k, v in names.items()}
        o = model.config.optim
        opt = torch.optim.SGD(
            ref.parameters(), o.lr, momentum=o.momentum, weight_decay=o.weight_decay
        )
        results = []
        for step, clips in enumerate(inputs):
            mining = step >= MINING_FROM  # the released processor: epoch > mining_epoch
            out1, first, out2, out3, target2, target3 = self.ref_forward(ref, step, clips, mining)
            if mining:
                loss1 = (-(F.log_softmax(out1, dim=1) * first).sum(1) / first.sum(1)).mean()
            else:
                loss1 = F.cross_entropy(out1, first)
            ref.update_ptr(out1.size(0))
            loss2 = -torch.mean(torch.sum(torch.log(out2) * target2, dim=1))
            loss3 = -torch.mean(torch.sum(torch.log(out3) * target3, dim=1))
            loss = loss1 + (loss2 + loss3) / 2.0
            opt.zero_grad()
            loss.backward()
            grads = _grads(ref.named_parameters(), back.__getitem__)
            opt.step()
            second, third = self.spec.extra_terms
            terms = {
                "loss/loss_cl_joint": loss1.detach(),
                f"loss/{second}": loss2.detach(),
                f"loss/{third}": loss3.detach(),
                "loss/total": loss.detach(),
            }
            st: dict[str, Tensor] = {}
            for k, t in ref.state_dict().items():
                if k.endswith("num_batches_tracked") or k.endswith(".A"):
                    continue
                if k == "queue":
                    st["queue/joint"] = t.T.clone()
                elif k == "queue_ptr":
                    st["queue_ptr/joint"] = t.clone()
                else:
                    st[("buffer/" if "running_" in k else "param/") + back[k]] = t.clone()
            results.append(StepResult(terms, grads, st))
        return results

    def run(self, with_deviations: bool = True) -> dict[str, Any]:
        torch.manual_seed(0)
        inputs = self.inputs()
        model = self.package_model()
        init = copy.deepcopy(model.state_dict())
        ours = self.run_package(model, inputs)
        fresh = self.package_model()
        fresh.load_state_dict(init)
        modules = [self.spec.module, "st_gcn"]
        with released_modules(self.ref, "net", modules, self.spec.patches, self.spec.stubs) as mods:
            theirs = self.run_reference(mods, fresh, inputs)
        cmp = _compare_steps(self.tol, ours, theirs)
        return {
            "comparison": cmp,
            "ref_repo": self.spec.repo,
            "patches": [p.describe() for p in self.spec.patches]
            + [s.describe() for s in self.spec.stubs]
            + self.spec.notes,
            "deviations": [],
            "terms_step0": _step0_terms(ours),
        }


class AimCLRHarness(_STGCNHarness):
    """The released ``AimCLR`` model and its processor's loss against the package's ``aimclr``.

    A step's clips are the extreme view (EADM and D3M), the query and the key.
    """

    spec = STGCNSpec(
        repo="Levigty/AimCLR",
        module="aimclr",
        ref_class="AimCLR",
        ref_kwargs={},
        patches=AIMCLR_PATCHES,
        stubs=AIMCLR_STUBS,
        notes=[
            STGCN_DROPOUT_NOTE,
            "runtime: the step of processor/pretrain_aimclr.py (loss1 + (loss2 + loss3) / 2, "
            "update_ptr after forward) re-expressed in the script: the processors need the "
            "repository's torchlight and data to import",
        ],
        section={"aimclr": {"eadm_threshold": 0.7, "weight": 1.0}},
        extra_terms=("d3m_extreme", "d3m_extreme_drop"),
        views=3,
    )

    def package_views(self, clips: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, dict[str, Any]]:
        x_extreme, xq, xk = clips
        return xq, xk, {"extreme": {"joint": x_extreme}}

    def ref_forward(
        self, ref: Any, step: int, clips: tuple[Tensor, ...], mining: bool
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        if mining:
            out1, mask, out2, out3, target2 = ref(*clips, nnm=True, topk=STGCN_SIZES["topk"])
            return out1, mask, out2, out3, target2, target2
        out1, target1, out2, out3, target2 = ref(*clips)
        return out1, target1, out2, out3, target2, target2


# --------------------------------------------------------------------------------------
# HiCLR (JHang2020/HiCLR): basic, normal and masked branches, hierarchical loss, mining
# --------------------------------------------------------------------------------------

HICLR_PATCHES = _mining_patches("net/hiclr.py")
HICLR_STUBS = [
    Stub("torchlight", {}, "the repository's torchlight package needs installing"),
    Stub(
        "torchlight.torchlight",
        {"import_class": _import_class},
        "only its import_class (a dotted-name import) is used",
    ),
]


class HiCLRHarness(_STGCNHarness):
    """The released ``HiCLR.forward_pretrain_wmask`` and its processor's loss against ``hiclr``.

    The branches are the released ones: basic (MoCo's query), normal, and the normal view
    with the learnable joint mask; the mask pattern is the package's draw
    (``joint_mask_pattern``), handed to the released model as its ``mask`` argument.
    """

    spec = STGCNSpec(
        repo="JHang2020/HiCLR",
        module="hiclr",
        ref_class="HiCLR",
        ref_kwargs={"dropout_graph": 0.1, "add_graph": 0.05},
        patches=HICLR_PATCHES,
        stubs=HICLR_STUBS,
        notes=[
            STGCN_DROPOUT_NOTE,
            "runtime: the joint-mask pattern is the package's draw, passed as the released "
            "forward_pretrain_wmask's mask (processor/utils.py Jointmask layout)",
            "runtime: the step of processor/pretrain_hiclr.py (loss1 + (loss2 + loss3) / 2, "
            "update_ptr after forward) re-expressed in the script",
        ],
        section={"hiclr": {"mask_ratio": HICLR_MASK_RATIO}},
        extra_terms=("hier_normal", "hier_strong"),
        views=4,
    )

    def name_map(self, model: nn.Module) -> dict[str, str]:
        out = super().name_map(model)
        for ours, theirs in list(out.items()):
            head, sep, rest = theirs.partition(".edge_importance.")
            if sep:
                out[ours] = f"{head}.edge_importance{int(rest) + 1}"
        out["masks.joint.token"] = "mask_param"
        return out

    @contextlib.contextmanager
    def package_context(self) -> Iterator[None]:
        """Records the package's joint-mask patterns, one a step."""
        self.patterns: list[Tensor] = []
        with _wrapped(self.pkg.batch_augment, "joint_mask_pattern", _recording(self.patterns)):
            yield

    def package_views(self, clips: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, dict[str, Any]]:
        xq, xk, x_normal, x_strong = clips
        return xq, xk, {"normal": {"joint": x_normal}, "strong": {"joint": x_strong}}

    def ref_forward(
        self, ref: Any, step: int, clips: tuple[Tensor, ...], mining: bool
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        xq, xk, x_normal, x_strong = clips
        n, c, t_, v, m_ = xq.shape
        keep = (~self.patterns[step]).to(xq.dtype)  # (T, V), 0 where masked
        mask = keep.reshape(1, t_, 1, v, 1).repeat(n, 1, m_, 1, c)
        kw = dict(im_q_1=x_normal, im_q_2=x_strong.clone(), im_q=xq, im_k=xk, mask=mask)
        if mining:
            out: tuple[Tensor, ...] = ref.forward_pretrain_wmask(
                nnm=True, topk=STGCN_SIZES["topk"], **kw
            )
        else:
            out = ref.forward_pretrain_wmask(**kw)
        out1, first, out2, out3, target2, target3 = out
        return out1, first, out2, out3, target2, target3


def _rounded(d: dict[str, float]) -> dict[str, float]:
    return {k: float(f"{v:.3g}") for k, v in d.items()}


HARNESSES: dict[str, Callable[[str, Path, int, float], Any]] = {
    "baseline": BiGRUHarness,
    "halp": BiGRUHarness,
    "cmd": BiGRUHarness,
    "halp_cmd": BiGRUHarness,
    "graphcl": GraphCLHarness,
    "aimclr": AimCLRHarness,
    "hiclr": HiCLRHarness,
}


def run_method(
    method: str, ref: Path, steps: int, tol: float = TOL
) -> tuple[dict[str, Any], str | None]:
    """The JSON record of one method and its first disagreement (None when all agree).

    The gate runs both sides in float64 (:func:`default_dtype`), where rounding no longer
    hides a difference; the same comparison in float32 is reported alongside, not gated.
    """
    with default_dtype(torch.float64):
        result = HARNESSES[method](method, ref, steps, tol).run()
    with default_dtype(torch.float32):
        result32 = HARNESSES[method](method, ref, steps, tol).run(with_deviations=False)
    cmp: Comparison = result["comparison"]
    record = {
        "method": method,
        "ref_repo": result["ref_repo"],
        "ref_commit": git_commit(ref),
        "steps": steps,
        "tol": tol,
        "max_abs_diff": _rounded(cmp.max_abs),
        "max_abs_diff_float32": _rounded(result32["comparison"].max_abs),
        "terms_step0": _rounded(result["terms_step0"]),
        "patches": result["patches"],
        "deviations": result["deviations"],
        "ok": cmp.first_failure is None,
    }
    if cmp.first_failure is not None:
        record["first_disagreement"] = cmp.first_failure
    return record, cmp.first_failure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", required=True, choices=sorted(HARNESSES))
    parser.add_argument("--ref", required=True, type=Path, help="checkout of the released code")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--tol", type=float, default=TOL)
    args = parser.parse_args(argv)
    if args.steps < 1:
        print("reference_diff: --steps must be at least 1", file=sys.stderr)
        return 2
    if not args.ref.is_dir():
        print(f"reference_diff: --ref {args.ref}: not a directory", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    try:
        record, failure = run_method(args.method, args.ref, args.steps, args.tol)
    except RefError as err:
        print(f"reference_diff: {err}", file=sys.stderr)
        return 2
    print(json.dumps(record))
    if failure is not None:
        print(f"reference_diff: {args.method}: first disagreement: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
