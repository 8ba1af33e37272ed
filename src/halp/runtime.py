"""Where a run executes: devices, torch.distributed processes, and provenance records."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from halp import __version__
from halp.errors import ConfigError


@dataclass(frozen=True)
class Process:
    """This process's place in a ``torchrun`` job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints, metrics and logs."""
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this process's GPU if CUDA is available, else the CPU; else ``name``."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"config key 'device': {name!r} is not a device ({err})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"config key 'device': {name!r}, but this machine has no CUDA device "
                "(use device=cpu or device=auto)"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"config key 'device': {name!r}, but there are {torch.cuda.device_count()} "
                "CUDA device(s)"
            )
    return device


def setup_process(device_name: str) -> tuple[Process, torch.device]:
    """Join the process group when started by ``torchrun`` (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Process(), resolve_device(device_name)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return Process(rank, world, local), device


def git_commit() -> dict[str, Any]:
    """The commit of the source tree the package runs from, and whether it is modified."""
    here = str(Path(__file__).resolve().parent)

    def git(*args: str) -> str:
        run = subprocess.run(
            ["git", "-C", here, *args], capture_output=True, text=True, check=True, timeout=10
        )
        return run.stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def provenance(device: torch.device) -> dict[str, Any]:
    """What produced a result: commit, package and library versions, device."""
    return {
        **git_commit(),
        "halp_version": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
