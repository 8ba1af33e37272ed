"""The device check: everything only a GPU can answer, in one short run (issue: GPU readiness).

One command, about 8 minutes on one GPU, writes ``gpu_check.json`` and ``gpu_check.md``
under ``--out``:

1. environment: GPU, CUDA / cuDNN / torch versions, TF32 and bf16 support;
2. Table 4 where it belongs: time per training step and peak memory of every method
   preset at the paper's size (BiGRU 3 x 1024, 64 frames, batch 64), as ratios to the
   baseline measured side by side (methods interleaved round by round);
3. precision: samples/s in fp32, TF32 and bf16 autocast, and the loss difference to fp32
   after the same few steps from the same weights and batches;
4. ``encoder.reference_forward`` against the true BiGRU: cost, and the device's output
   against the CPU's for the same weights;
5. whether the DataLoader keeps up: loader samples/s with this machine's workers against
   what a training step consumes;
6. a short pretraining on synthetic data at full size (checkpoint, resume, linear probe),
   to catch shape, memory and cuDNN problems before anyone spends GPU-days;
7. the GPU-hour estimates of docs/cluster.md recomputed from the measured step times.

``--tiny`` runs the same sections at toy sizes (its CPU test, ``tests/test_gpu_check.py``),
so the script never reaches a GPU untested. Each section records its own error and the
rest still run; ``--budget-s`` stops starting new sections when the time is spent.

    python benchmarks/gpu_check.py --out gpu_check            # on a GPU machine
    python benchmarks/gpu_check.py --tiny --device cpu --out /tmp/gc   # anywhere
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from halp.config import EvalConfig, PretrainConfig, from_dict
from halp.data import prepare, synthetic
from halp.data.loaders import PretrainDataset, make_loader
from halp.data.storage import load_split
from halp.evaluate import evaluate
from halp.io import atomic_write_json, atomic_write_text
from halp.methods import PRESETS
from halp.methods.model import PretrainModel, random_batch
from halp.train import pretrain

# clips and epochs behind the GPU-hour table of docs/cluster.md (one pretraining run each)
WORKLOADS = {
    "ntu60_xsub": (40_091, 451),
    "ntu120_xsub": (63_026, 451),
    "pku2_xsub": (5_332, 1001),
}


def sizes(tiny: bool) -> dict[str, Any]:
    """Encoder and batch sizes: the paper's, or toy ones for the CPU test."""
    if tiny:
        return {
            "hidden": 16,
            "layers": 2,
            "proj": 32,
            "out": 16,
            "batch": 8,
            "frames": 16,
            "queue": 64,
            "top_k": 32,
            "prototypes": 4,
            "positives": 8,
            "cmd_topk": 32,
        }
    return {
        "hidden": 1024,
        "layers": 3,
        "proj": 2048,
        "out": 128,
        "batch": 64,
        "frames": 64,
        "queue": 16384,
        "top_k": 256,
        "prototypes": 20,
        "positives": 100,
        "cmd_topk": 8192,
    }


STGCN_METHODS = ("aimclr", "aimclr_halp", "hiclr", "hiclr_halp")
"""Presets also timed on their own encoder (AimCLR/HiCLR's ST-GCN, 50 frames, batch 128)."""


def make_config(
    method: str, s: dict[str, Any], device: str, stgcn: bool = False, **optim: Any
) -> PretrainConfig:
    """A pretraining configuration of ``method`` at sizes ``s`` with HaLP on from epoch 0.

    ``stgcn``: the released AimCLR/HiCLR setting instead (1/4-width ST-GCN, 50 frames,
    batch 128, queue 32768; toy widths with ``--tiny``).
    """
    encoder: dict[str, Any] = {
        "hidden_size": s["hidden"],
        "num_layers": s["layers"],
        "proj_hidden": s["proj"],
        "out_dim": s["out"],
    }
    frames, queue, batch = s["frames"], s["queue"], s["batch"]
    if stgcn:
        tiny = s["hidden"] < 1024
        encoder = {
            "arch": "stgcn",
            "width": 4 if tiny else 16,
            "feature_dim": 16 if tiny else 256,
            "proj_hidden": 16 if tiny else 256,
            "out_dim": s["out"],
        }
        frames, queue, batch = (s["frames"], s["queue"], s["batch"]) if tiny else (50, 32768, 128)
    optim = {"batch_size": batch, **optim}
    return from_dict(
        PretrainConfig,
        {
            "method": method,
            "device": device,
            "encoder": encoder,
            "data": {"frames": frames},
            "moco": {"queue_size": queue},
            "halp": {
                "mu_start_epoch": 0,
                "top_k": s["top_k"],
                "num_prototypes": s["prototypes"],
                "num_positives": s["positives"],
            },
            "cmd": {"topk": s["cmd_topk"]},
            "optim": optim,
            "log": {"wandb": "disabled", "progress": False},
        },
    )


def sync(device: torch.device) -> None:
    """Wait for the device (timings must not stop at a queued kernel)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stepper:
    """One method's model and optimiser on a fixed random batch, stepping as training does."""

    def __init__(self, config: PretrainConfig, device: torch.device, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = PretrainModel(config).to(device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
        self.gen = torch.Generator(device=device).manual_seed(seed)
        g = torch.Generator().manual_seed(seed + 1)
        shape = (config.optim.batch_size, 3, config.data.frames, 25, 2)
        self.q, self.k, self.views = random_batch(self.model, shape, g, device)
        self.steps = 0
        self.loss = torch.zeros((), device=device)

    def step(self) -> None:
        self.model.prepare_step(0, self.steps, self.gen)
        out = self.model(self.q, self.k, 0, self.gen, self.steps, self.views)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        self.opt.step()
        self.loss = out.loss.detach()
        self.steps += 1


def time_steps(steppers: dict[str, Stepper], device: torch.device, rounds: int, steps: int):
    """Median seconds per step of each stepper, interleaved round by round."""
    times: dict[str, list[float]] = {name: [] for name in steppers}
    for _ in range(rounds):
        for name, stepper in steppers.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                stepper.step()
            sync(device)
            times[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(t) for name, t in times.items()}


# ------------------------------------------------------------------------ sections


def section_environment(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            tf32_supported=props.major >= 8,
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    else:
        env.update(gpu=None, tf32_supported=False, bf16_supported=True)  # CPU autocast
    return env


def section_methods(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    s = sizes(args.tiny)
    out: dict[str, Any] = {"step_s": {}, "peak_mib": {}, "samples_per_s": {}}
    configs = {m: make_config(m, s, str(device)) for m in PRESETS}
    configs.update(
        {f"{m}-stgcn": make_config(m, s, str(device), stgcn=True) for m in STGCN_METHODS}
    )
    steppers = {name: Stepper(config, device) for name, config in configs.items()}
    for stepper in steppers.values():  # warm-up: fill the queues, cuDNN autotuning
        while int(next(iter(stepper.model.branches.values())).queue.seen) < s["top_k"]:
            stepper.step()
    out["step_s"] = time_steps(steppers, device, args.rounds, args.steps)
    del steppers
    for method, config in configs.items():
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            stepper = Stepper(config, device)
            for _ in range(3):
                stepper.step()
            sync(device)
            out["peak_mib"][method] = torch.cuda.max_memory_allocated(device) / 2**20
            del stepper
        else:
            out["peak_mib"][method] = None  # see bench_pretrain.py for CPU peak RSS
    base_t = out["step_s"]["baseline"]
    out["time_ratio"] = {m: t / base_t for m, t in out["step_s"].items()}
    if device.type == "cuda":
        base_m = out["peak_mib"]["baseline"]
        out["memory_ratio"] = {m: v / base_m for m, v in out["peak_mib"].items()}
    out["samples_per_s"] = {m: configs[m].optim.batch_size / t for m, t in out["step_s"].items()}
    # HaLP's overhead inside AimCLR and HiCLR, each on the BiGRU and on its own ST-GCN
    out["halp_time_ratio"] = {
        f"{base}{enc}": out["step_s"][f"{base}_halp{enc}"] / out["step_s"][f"{base}{enc}"]
        for base in ("aimclr", "hiclr")
        for enc in ("", "-stgcn")
    }
    out["paper_table4"] = {
        "time": {"halp": 1.13, "cmd": 3, "halp_cmd": 3.32},
        "memory": {"halp": 1, "cmd": 1.94, "halp_cmd": 1.94},
    }
    return out


def section_precision(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    s = sizes(args.tiny)
    modes = {"fp32": {}, "tf32": {"tf32": True}, "bf16": {"precision": "bf16"}}
    if device.type != "cuda":
        modes.pop("tf32")  # TF32 is a CUDA matmul mode
    out: dict[str, Any] = {"samples_per_s": {}, "loss_after": {}, "loss_diff_vs_fp32": {}}
    for name, optim in modes.items():
        stepper = Stepper(make_config("halp", s, str(device), **optim), device)
        for _ in range(args.precision_steps):  # the same weights, batches and draws
            stepper.step()
        out["loss_after"][name] = float(stepper.loss)
        timed = time_steps({name: stepper}, device, 1, args.steps)[name]
        out["samples_per_s"][name] = s["batch"] / timed
        del stepper
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = True  # torch's default
    for name, loss in out["loss_after"].items():
        out["loss_diff_vs_fp32"][name] = abs(loss - out["loss_after"]["fp32"])
    out["steps"] = args.precision_steps
    return out


def section_reference_forward(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    s = sizes(args.tiny)
    config = make_config("baseline", s, str(device))
    torch.manual_seed(0)
    encoder = PretrainModel(config).query_encoder()
    x = torch.randn(s["batch"], 3, s["frames"], 25, 2, generator=torch.Generator().manual_seed(0))
    out: dict[str, Any] = {}
    with torch.no_grad():
        encoder.eval()
        encoder.reference_forward = True
        cpu = encoder.features(x)
        moved = encoder.to(device)
        on_device = moved.features(x.to(device)).cpu()
        out["max_abs_diff_device_vs_cpu"] = float((on_device - cpu).abs().max())
        for mode in (False, True):
            moved.reference_forward = mode
            xd = x.to(device)
            moved.features(xd)
            sync(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                moved.features(xd)
            sync(device)
            key = "reference_forward_s" if mode else "bigru_s"
            out[key] = (time.perf_counter() - start) / args.steps
    out["ratio_reference_vs_bigru"] = out["reference_forward_s"] / out["bigru_s"]
    return out


def _synthetic_benchmark(root: Path, tiny: bool) -> Path:
    """A prepared synthetic NTU-60 x-sub folder under ``root``."""
    per_class = 4 if tiny else 60
    synthetic.synth_ntu(root / "raw", classes=12 if tiny else 60, per_class=per_class, seed=0)
    prepare.prepare_ntu("ntu60", [root / "raw"], root / "data", workers=os.cpu_count() or 1)
    return root / "data" / "xsub"


def section_loader(
    args: argparse.Namespace, device: torch.device, data: Path, step_s: float | None
) -> dict[str, Any]:
    s = sizes(args.tiny)
    workers = args.workers if args.workers is not None else min(16, os.cpu_count() or 1)
    dataset = PretrainDataset(
        load_split(data, "train"), modality="joint", out_frames=s["frames"], seed=0
    )
    batch = min(s["batch"], len(dataset))
    loader = make_loader(
        dataset,
        batch,
        shuffle=True,
        seed=0,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
    )
    start, seen = time.perf_counter(), 0
    for q, _k, _ in loader:
        seen += len(q)
    elapsed = time.perf_counter() - start
    out: dict[str, Any] = {"workers": workers, "loader_samples_per_s": seen / elapsed}
    if step_s:
        out["step_samples_per_s"] = s["batch"] / step_s
        out["keeps_up"] = out["loader_samples_per_s"] >= out["step_samples_per_s"]
    return out


def section_pretraining(
    args: argparse.Namespace, device: torch.device, data: Path, work: Path
) -> dict[str, Any]:
    """HaLP+CMD at full size for a few epochs, killed in the middle and resumed, then probed."""
    s = sizes(args.tiny)
    run = work / "run"
    start = time.perf_counter()
    row: dict[str, Any] = {}
    for epochs, resume in ((1, False), (2, True)) if args.tiny else ((2, False), (4, True)):
        config = make_config("halp_cmd", s, str(device))
        config.data.root = str(data)
        config.data.workers = 0 if args.tiny else min(8, os.cpu_count() or 1)
        config.optim.epochs = epochs
        config.log.knn_every = 0
        config.log.health_samples = 64
        row = pretrain(config, run, resume=resume)
    out: dict[str, Any] = {"seconds": time.perf_counter() - start, "last_epoch": row}
    settings = {
        "protocol": "linear",
        "checkpoint": str(run / "checkpoint.pt"),
        "data_root": str(data),
        "device": str(device),
        "workers": 0,
        "epochs": 1,
        "eval_every": 1,
        "batch_size": s["batch"],
    }
    result = evaluate(from_dict(EvalConfig, settings), work / "linear.json")
    out["linear_top1"] = result["metrics"]["top1"]
    return out


def section_hours(methods: dict[str, Any]) -> dict[str, Any]:
    step = methods["step_s"]
    hours: dict[str, Any] = {}
    for name, (clips, epochs) in WORKLOADS.items():
        hours[name] = {}
        for m, t in step.items():
            # the ST-GCN setting trains as released: batch 128 for 300 epochs
            batch, n_epochs = (128, 300) if m.endswith("-stgcn") else (64, epochs)
            hours[name][m] = round(clips // batch * n_epochs * t / 3600, 2)
    return hours


# ------------------------------------------------------------------------ driver


def run_check(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    started = time.perf_counter()
    report: dict[str, Any] = {"tiny": args.tiny, "sections": {}, "errors": {}}

    def run(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        if time.perf_counter() - started > args.budget_s:
            report["errors"][name] = f"skipped: the {args.budget_s} s budget was spent"
            return
        t0 = time.perf_counter()
        try:
            report["sections"][name] = fn()
        except Exception:
            report["errors"][name] = traceback.format_exc(limit=8)
        report.setdefault("seconds", {})[name] = round(time.perf_counter() - t0, 2)
        print(
            f"[{time.perf_counter() - started:7.1f} s] {name}: "
            f"{'error' if name in report['errors'] else 'ok'}",
            flush=True,
        )

    run("environment", lambda: section_environment(args, device))
    run("methods", lambda: section_methods(args, device))
    run("precision", lambda: section_precision(args, device))
    run("reference_forward", lambda: section_reference_forward(args, device))
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        work = Path(tmp)
        data: dict[str, Path] = {}

        def make_data() -> dict[str, Any]:
            data["root"] = _synthetic_benchmark(work, args.tiny)
            return {"root": str(data["root"])}

        run("data", make_data)
        step_s = report["sections"].get("methods", {}).get("step_s", {}).get("halp")
        if "root" in data:
            run("loader", lambda: section_loader(args, device, data["root"], step_s))
            run("pretraining", lambda: section_pretraining(args, device, data["root"], work))
    if "methods" in report["sections"]:
        run("gpu_hours", lambda: section_hours(report["sections"]["methods"]))
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    return report


def to_markdown(report: dict[str, Any]) -> str:
    """A short human summary of the JSON report."""
    sec = report["sections"]
    lines = ["# Device check", ""]
    env = sec.get("environment", {})
    lines.append(
        f"- device: {env.get('gpu') or env.get('device')}, torch {env.get('torch')}, "
        f"CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, "
        f"TF32 {env.get('tf32_supported')}, bf16 {env.get('bf16_supported')}"
    )
    methods = sec.get("methods")
    if methods:
        lines += [
            "",
            "| method | ms/step | samples/s | time ratio | peak MiB | memory ratio |",
            "|---|---|---|---|---|---|",
        ]
        for m, t in methods["step_s"].items():
            peak = methods["peak_mib"].get(m)
            mem = methods.get("memory_ratio", {}).get(m)
            lines.append(
                f"| {m} | {t * 1000:.1f} | {methods['samples_per_s'][m]:.1f} | "
                f"{methods['time_ratio'][m]:.2f}x | {'' if peak is None else f'{peak:.0f}'} | "
                f"{'' if mem is None else f'{mem:.2f}x'} |"
            )
    precision = sec.get("precision")
    if precision:
        lines += [
            "",
            "| precision | samples/s | loss after steps | abs diff vs fp32 |",
            "|---|---|---|---|",
        ]
        for name, sps in precision["samples_per_s"].items():
            lines.append(
                f"| {name} | {sps:.1f} | {precision['loss_after'][name]:.5f} | "
                f"{precision['loss_diff_vs_fp32'][name]:.2e} |"
            )
    for name in ("reference_forward", "loader", "pretraining", "gpu_hours"):
        if name in sec:
            block = json.dumps(sec[name], indent=1, default=str)
            lines += ["", f"## {name}", "", "```", block, "```"]
    if report["errors"]:
        lines += ["", "## errors", ""]
        for name, err in report["errors"].items():
            lines.append(f"- {name}: {err.strip().splitlines()[-1]}")
    lines += ["", f"total {report['total_seconds']} s"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON and Markdown")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="toy sizes (the CPU test)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed round")
    parser.add_argument("--precision-steps", type=int, default=10)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers")
    parser.add_argument(
        "--budget-s", type=float, default=420.0, help="start no new section after this many seconds"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report = run_check(args)
    atomic_write_json(args.out / "gpu_check.json", report)
    atomic_write_text(args.out / "gpu_check.md", to_markdown(report))
    print(to_markdown(report))
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
