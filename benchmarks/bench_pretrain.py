"""Overhead of HaLP over its base method (the paper's Table 4), measured side by side.

Times one training step (forward, backward, SGD step, and the prototype refresh every
``refresh_every`` steps, amortised) of baseline, HaLP, CMD and HaLP+CMD on the same
encoder size and the same random batch, interleaving the methods round by round so
that drift of the machine hits all of them alike. Prints the median step time of each
method, the ratios HaLP / baseline and HaLP+CMD / CMD (paper: 1.13x and 1.11x), and
the ratios of peak memory (paper: 1.0x). Peak memory is CUDA's max allocated memory
on a GPU, and the peak RSS (VmHWM; Linux) of a fresh subprocess per method on the CPU.

    python benchmarks/bench_pretrain.py                     # small encoder, CPU
    python benchmarks/bench_pretrain.py --full --device cuda  # the paper's encoder size
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from halp.config import PretrainConfig, to_dict
from halp.methods import PRESETS
from halp.methods.model import PretrainModel, random_batch

METHODS = tuple(PRESETS)


def make_config(args: argparse.Namespace, method: str) -> PretrainConfig:
    config = PretrainConfig(method=method, device=args.device)
    if not args.full:
        config.encoder.hidden_size = args.hidden
        config.encoder.proj_hidden = 2 * args.hidden
    config.halp.mu_start_epoch = 0
    config.halp.kmeans_backend = args.kmeans_backend
    config.optim.batch_size = args.batch
    return config


class Runner:
    """One method's model, optimiser and fixed batch, stepping as the training loop does."""

    def __init__(self, config: PretrainConfig, device: torch.device, frames: int) -> None:
        torch.manual_seed(0)
        self.config = config
        self.model = PretrainModel(config).to(device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
        self.gen = torch.Generator(device=device).manual_seed(0)
        g = torch.Generator().manual_seed(1)
        shape = (config.optim.batch_size, 3, frames, 25, 2)
        self.q, self.k, self.views = random_batch(self.model, shape, g, device)
        self.step_count = 0
        # fill the queues so prototypes come from real keys, as after warm-up
        while int(next(iter(self.model.branches.values())).queue.seen) < config.halp.top_k:
            self.step()

    def step(self) -> None:
        # epoch 0 with mu_start_epoch = 0: every term of the preset is on
        self.model.prepare_step(0, self.step_count, self.gen)
        out = self.model(self.q, self.k, 0, self.gen, self.step_count, self.views)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        self.opt.step()
        self.step_count += 1


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_methods(args: argparse.Namespace) -> dict[str, float]:
    device = torch.device(args.device)
    runners = {m: Runner(make_config(args, m), device, args.frames) for m in METHODS}
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    for _ in range(args.warmup):
        for runner in runners.values():
            runner.step()
    for _ in range(args.rounds):
        for method, runner in runners.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                runner.step()
            sync(device)
            times[method].append((time.perf_counter() - start) / args.steps)
    return {m: statistics.median(t) for m, t in times.items()}


def peak_memory(args: argparse.Namespace, method: str) -> float:
    """Peak memory in MiB of training ``method`` for a few steps."""
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        runner = Runner(make_config(args, method), device, args.frames)
        for _ in range(args.steps):
            runner.step()
        sync(device)
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        del runner
        torch.cuda.empty_cache()
        return peak
    config = json.dumps(to_dict(make_config(args, method)))
    code = (
        "import json, torch\n"
        "from halp.config import PretrainConfig, from_dict\n"
        "from benchmarks.bench_pretrain import Runner\n"
        f"c = from_dict(PretrainConfig, json.loads({config!r}))\n"
        f"r = Runner(c, torch.device('cpu'), {args.frames})\n"
        f"for _ in range({args.steps}): r.step()\n"
        "status = open('/proc/self/status').read().splitlines()\n"
        "print(next(int(line.split()[1]) for line in status if line.startswith('VmHWM')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--full", action="store_true", help="the paper's encoder (1024 x 3)")
    parser.add_argument("--hidden", type=int, default=128, help="GRU width when not --full")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--kmeans-backend",
        choices=("torch", "geomstats"),
        default="torch",
        help="prototype clustering (the paper used geomstats; torch is the package default)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    size = "full size (1024 x 3)" if args.full else f"hidden {args.hidden} x 3"
    print(
        f"device {args.device}, encoder {size}, batch {args.batch} x {args.frames} frames, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"k-means backend {args.kmeans_backend}"
    )
    step = time_methods(args)
    for method, seconds in step.items():
        rate = args.batch / seconds
        print(f"  {method:11s} {seconds * 1000:9.1f} ms/step  {rate:8.1f} samples/s")
    print(f"time   HaLP / baseline  = {step['halp'] / step['baseline']:.3f}x  (paper 1.13x)")
    print(f"time   HaLP+CMD / CMD   = {step['halp_cmd'] / step['cmd']:.3f}x  (paper 1.11x)")
    for base in ("aimclr", "hiclr"):  # not in the paper: HaLP inside AimCLR and HiCLR
        print(f"time   +HaLP / {base:9s}= {step[base + '_halp'] / step[base]:.3f}x")
    mem: dict[str, float] = {}
    if not args.skip_memory:
        mem = {m: peak_memory(args, m) for m in METHODS}
        kind = "CUDA max allocated" if args.device.startswith("cuda") else "peak RSS"
        for method, mib in mem.items():
            print(f"  {method:11s} {mib:9.1f} MiB {kind}")
        print(f"memory HaLP / baseline  = {mem['halp'] / mem['baseline']:.3f}x  (paper 1.0x)")
        print(f"memory HaLP+CMD / CMD   = {mem['halp_cmd'] / mem['cmd']:.3f}x  (paper 1.0x)")
    if args.json is not None:
        from halp.io import atomic_write_json

        atomic_write_json(
            args.json,
            {
                "time": step,
                "memory": mem,
                "device": args.device,
                "encoder": size,
                "batch": args.batch,
                "frames": args.frames,
                "torch": torch.__version__,
                "kmeans_backend": args.kmeans_backend,
            },
        )


if __name__ == "__main__":
    main()
