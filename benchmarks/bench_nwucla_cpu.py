"""CPU training throughput per core of a small BiGRU on NW-UCLA-sized clips, side by side.

A pretraining step (forward, backward, SGD) of ``baseline`` and ``halp`` with a small BiGRU
(``--hidden`` x 2 layers, Kinect v1 layout: 20 joints x 3 x 1 person = 60 features per frame,
64-frame clips) on a fixed random batch, under the settings one can change on a CPU:

- threads: ``torch.set_num_threads`` 1 and 2 (the figure per core divides by the threads);
- batch size: 32, 64, 128;
- data layout: the encoder's input as the stored (N, 3, T, 20, 1) clips (flattened per frame
  inside the encoder) or already as contiguous (N, T, 60) frame vectors;
- ``torch.compile`` of the encoder (inductor), when it compiles; its compile time is printed.

Settings run interleaved round by round, so drift of a shared machine hits all alike. Each
step is timed twice: wall clock, and the CPU time of the process (all its threads), whose
inverse is the throughput per core whatever else the machine runs. Reported: the median of
each, as clips per second (wall) and clips per CPU-second (per core). The
loader's side is measured too: ``PretrainDataset`` items per second on one core (the ISC
augmentation, as pretraining draws them), from the prepared ``xview3`` of ``--data`` when
given, else from random clips of the real length distribution.

    python benchmarks/bench_nwucla_cpu.py                      # about 2-3 min on 2 cores
    python benchmarks/bench_nwucla_cpu.py --data data/nwucla   # the loader on the real clips
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from halp.config import PretrainConfig, load_config
from halp.data.layouts import KINECT20
from halp.data.loaders import PretrainDataset
from halp.data.storage import SkeletonSplit, SplitIndex, load_split
from halp.encoders.bigru import to_gru_input
from halp.methods.model import PretrainModel, random_batch

FRAMES = 64


def make_config(method: str, hidden: int, batch: int) -> PretrainConfig:
    """A CPU-sized configuration of ``method`` for Kinect v1 clips."""
    return load_config(
        PretrainConfig,
        None,
        [
            f"method={method}",
            "device=cpu",
            "data.layout=kinect20",
            f"encoder.hidden_size={hidden}",
            "encoder.num_layers=2",
            f"encoder.proj_hidden={2 * hidden}",
            "moco.queue_size=1024",
            "halp.mu_start_epoch=0",
            f"optim.batch_size={batch}",
        ],
    )


class Step:
    """One setting's model, optimiser and fixed batch; ``__call__`` takes one step."""

    def __init__(self, method: str, hidden: int, batch: int, flat: bool, compile_: bool) -> None:
        torch.manual_seed(0)
        config = make_config(method, hidden, batch)
        self.model = PretrainModel(config)
        self.opt = torch.optim.SGD(
            [p for p in self.model.parameters() if p.requires_grad], lr=0.01, momentum=0.9
        )
        self.gen = torch.Generator().manual_seed(0)
        shape = (batch, 3, FRAMES, KINECT20.num_joints, KINECT20.persons)
        q, k, _ = random_batch(self.model, shape, torch.Generator().manual_seed(1))
        if flat:  # the frame vectors the encoder would otherwise build every step
            q = {m: to_gru_input(v).contiguous() for m, v in q.items()}
            k = {m: to_gru_input(v).contiguous() for m, v in k.items()}
        self.q, self.k = q, k
        self.compile_seconds = 0.0
        if compile_:
            start = time.perf_counter()
            for branch in self.model.branches.values():
                branch.encoder_q.features = torch.compile(branch.encoder_q.features)  # type: ignore[method-assign]
                branch.encoder_k.features = torch.compile(branch.encoder_k.features)  # type: ignore[method-assign]
            self()  # compiles
            self.compile_seconds = time.perf_counter() - start
        self.count = 0
        while int(next(iter(self.model.branches.values())).queue.seen) < config.halp.top_k:
            self()  # fill the queue so HaLP's prototypes come from real keys

    def __call__(self) -> None:
        self.model.prepare_step(0, 0, self.gen)
        out = self.model(self.q, self.k, 0, self.gen, 0, None)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        self.opt.step()


def time_settings(
    settings: dict[str, tuple[Callable[[], None], int]], rounds: int, steps: int
) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds per step of every setting (name -> (step, threads))."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in settings}
    for _ in range(rounds):
        for name, (step, threads) in settings.items():
            torch.set_num_threads(threads)
            step()  # warm this thread count
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(steps):
                step()
            times[name].append(
                ((time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps)
            )
    return {
        name: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t))
        for name, t in times.items()
    }


def loader_rate(data: Path | None, items: int) -> tuple[float, str]:
    """PretrainDataset items per CPU-second (one core), and what it read."""
    torch.set_num_threads(1)
    if data is not None:
        split = load_split(data / "xview3", "train")
        source = f"{data}/xview3 train"
    else:  # random clips with the release's lengths (median 31 frames, up to 201)
        rng = np.random.default_rng(0)
        n = 256
        frames = np.clip(rng.lognormal(np.log(31), 0.5, n).astype(np.int64), 1, 201)
        array = rng.normal(size=(n, 3, 201, 20, 1)).astype(np.float32)
        labels = np.zeros(n, np.int64)
        index = SplitIndex("nwucla", "xview3", "train", 10, [f"c{i}" for i in range(n)],
                           labels, frames, layout="kinect20")  # fmt: skip
        split = SkeletonSplit(array, index)
        source = "random clips"
    dataset = PretrainDataset(split, "joint", augmentation="isc", out_frames=FRAMES)
    start = time.process_time()
    for i in range(items):
        dataset[i % len(dataset)]
    return items / (time.process_time() - start), source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=64, help="GRU width per direction")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed round")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--data", type=Path, default=None, help="a prepared data/nwucla folder")
    parser.add_argument("--items", type=int, default=512, help="loader items to time")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    plan: dict[
        str, tuple[str, int, bool, bool, int]
    ] = {}  # name -> method, batch, flat, compile, threads
    for method in ("baseline", "halp"):
        for threads in (1, 2):
            for batch in (32, 64, 128):
                plan[f"{method} b{batch} t{threads}"] = (method, batch, False, False, threads)
        plan[f"{method} b64 t1 flat"] = (method, 64, True, False, 1)
        if not args.no_compile:
            plan[f"{method} b64 t1 compiled"] = (method, 64, False, True, 1)
    settings: dict[str, tuple[Callable[[], None], int]] = {}
    notes: dict[str, Any] = {}
    torch.set_num_threads(1)
    for name, (method, batch, flat, compile_, threads) in plan.items():
        try:
            step = Step(method, args.hidden, batch, flat, compile_)
        except Exception as err:  # a failed compile is a result to report
            notes[name] = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
            print(f"{name}: {notes[name]}")
            continue
        if compile_:
            notes[name] = f"compiled in {step.compile_seconds:.1f} s"
        settings[name] = (step, threads)
    seconds = time_settings(settings, args.rounds, args.steps)
    rows = []
    print(f"\nBiGRU {args.hidden} x 2, {FRAMES} frames x 60 features, torch {torch.__version__}")
    print(f"{'setting':28s} {'wall ms':>9s} {'CPU ms':>9s} {'clips/s':>9s} {'clips/CPU-s':>12s}")
    for name, (wall, cpu) in seconds.items():
        batch = plan[name][1]
        rows.append({"setting": name, "wall_ms": 1e3 * wall, "cpu_ms": 1e3 * cpu,
                     "clips_per_s": batch / wall, "clips_per_cpu_s": batch / cpu})  # fmt: skip
        print(f"{name:28s} {1e3 * wall:9.1f} {1e3 * cpu:9.1f} {batch / wall:9.0f} "
              f"{batch / cpu:12.0f}")  # fmt: skip
    for method in ("baseline", "halp"):
        base = seconds.get(f"{method} b64 t1")
        for variant in ("b64 t2", "b64 t1 flat", "b64 t1 compiled"):
            other = seconds.get(f"{method} {variant}")
            if base and other:
                print(
                    f"{method}: {variant} / b64 t1: wall {other[0] / base[0]:.2f}, "
                    f"CPU {other[1] / base[1]:.2f}"
                )
    items, source = loader_rate(args.data, args.items)
    print(f"loader: {items:.0f} items per CPU-second ({source}, ISC augmentation, 2 views)")
    for name, note in notes.items():
        print(f"{name}: {note}")
    if args.json:
        result = {"hidden": args.hidden, "rows": rows, "notes": notes,
                  "loader_items_per_s": items, "loader_source": source}  # fmt: skip
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
