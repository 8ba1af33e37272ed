"""Host reads per training step: the hot path must not synchronise the device.

Reading a value of a CUDA tensor on the host (``.item()``, ``float()``, ``bool()``,
``int()``, ``.tolist()``, ``.numpy()``) waits for every queued kernel. This script counts
those reads during the training step of every method preset, as ``halp pretrain`` runs
it (``prepare_step``, forward, backward, SGD step and the step log), after the queues
have filled, and prints reads per step for ordinary steps and for the steps that refresh
HaLP's prototypes (every ``halp.refresh_every`` steps; the spherical k-means reads a few
values there). On a GPU it also runs the steps under ``torch.cuda.set_sync_debug_mode``
("warn"), which reports every synchronising call torch itself makes.

    python benchmarks/bench_sync.py                  # CPU, small encoder
    python benchmarks/bench_sync.py --device cuda    # also the CUDA sync debug mode
"""

from __future__ import annotations

import argparse
import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from halp.config import PretrainConfig, load_config
from halp.methods import PRESETS
from halp.methods.model import PretrainModel, random_batch
from halp.train.monitor import StepLog

READS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


@contextlib.contextmanager
def count_host_reads() -> Iterator[dict[str, int]]:
    """Count calls of the Tensor methods that read a value on the host."""
    counts = dict.fromkeys(READS, 0)
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name: str):  # type: ignore[no-untyped-def]
        original = originals[name]

        def counted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            counts[name] += 1
            return original(self, *args, **kwargs)

        return counted

    for name in READS:
        setattr(torch.Tensor, name, wrap(name))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


class Step:
    """The training step of ``halp.train.pretrain`` on a fixed batch."""

    def __init__(self, config: PretrainConfig, device: torch.device) -> None:
        torch.manual_seed(0)
        self.model = PretrainModel(config).to(device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
        self.gen = torch.Generator(device=device).manual_seed(0)
        g = torch.Generator().manual_seed(1)
        shape = (config.optim.batch_size, 3, config.data.frames, 25, 2)
        self.q, self.k, self.views = random_batch(self.model, shape, g, device)
        self.log = StepLog(sync_every=10**9)  # the epoch-end check is not a step's cost
        self.count = 0

    def __call__(self) -> None:
        self.model.prepare_step(0, self.count, self.gen)
        out = self.model(self.q, self.k, 0, self.gen, self.count, self.views)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        self.opt.step()
        self.log.add(self.count, out.loss, out.terms)
        self.count += 1


def reads_per_step(method: str, device: torch.device, steps: int) -> dict[str, float]:
    """Mean host reads of ordinary and of prototype-refreshing steps of ``method``."""
    config = load_config(
        PretrainConfig,
        "builtin:smoke",
        [f"method={method}", f"device={device}", "halp.mu_start_epoch=0", "halp.refresh_every=5"],
    )
    step = Step(config, device)
    while step.count < 2 * config.moco.queue_size // config.optim.batch_size:  # queues full
        step()
    ordinary, refresh = [], []
    for _ in range(steps):
        refreshing = step.model.preset.halp and step.count % config.halp.refresh_every == 0
        with count_host_reads() as counts:
            step()
        (refresh if refreshing else ordinary).append(sum(counts.values()))
    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    return {"ordinary": mean(ordinary), "refresh": mean(refresh)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"host reads per training step ({args.steps} steps each, device {device})")
    for method in PRESETS:
        r = reads_per_step(method, device, args.steps)
        print(
            f"  {method:9s} ordinary steps {r['ordinary']:5.2f}   refresh steps {r['refresh']:5.2f}"
        )
    if device.type == "cuda":
        config = load_config(PretrainConfig, "builtin:smoke", ["method=halp_cmd", "device=cuda"])
        step = Step(config, device)
        while step.count < 2 * config.moco.queue_size // config.optim.batch_size:
            step()
        while step.count % config.halp.refresh_every == 0:  # an ordinary step next
            step()
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step()
        torch.cuda.set_sync_debug_mode(0)
        print(f"  CUDA sync debug mode: {len(caught)} synchronising call(s) in one step")
        for w in caught[:10]:
            print(f"    {Path(w.filename).name}:{w.lineno}: {w.message}")


if __name__ == "__main__":
    main()
