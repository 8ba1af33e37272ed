"""Pretraining checkpoints: atomic save, checked load, format versions and their migration.

A checkpoint is a dict saved with ``torch.save`` and loaded with ``weights_only=True``:
``format``, ``halp_version``, ``method``, the resolved ``config``, ``data`` (dataset,
benchmark, training samples), ``epoch`` (epochs completed), ``model`` (the state dict of
:class:`halp.model.PretrainModel`), ``optimizer``, ``rng`` and the last ``metrics``.

Format versions:

- ``halp-pretrain/2`` (current): objectives keep their own state under
  ``objectives.<name>.``, e.g. ``objectives.halp.prototypes.joint.centres``.
- ``halp-pretrain/1`` (package 0.1.0 before the composable objectives): the prototypes
  lived in the branches (``branches.<m>.prototypes``, ``branches.<m>.prototypes_ready``)
  and the warm-up counter at the top (``halp_keys_seen``). :func:`load_checkpoint`
  renames those keys, so a version-1 checkpoint evaluates and resumes as before.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from halp.config import PretrainConfig, from_dict
from halp.errors import CheckpointError
from halp.io import atomic_path

CHECKPOINT = "checkpoint.pt"
FINAL = "final.pt"  # the last epoch's checkpoint, written only when training completes
CHECKPOINT_FORMAT = "halp-pretrain/2"
_V1 = "halp-pretrain/1"
# keys that may change between a run and its resumption
RESUMABLE_CHANGES = ("optim.epochs", "log.", "data.workers", "data.root", "device")


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` through a temporary file and an atomic rename."""
    with atomic_path(Path(path)) as tmp:
        torch.save(payload, tmp)


def _migrate_v1(payload: dict[str, Any]) -> dict[str, Any]:
    """Rename a version-1 model state to version 2 (module docstring)."""
    halp_on = payload.get("config", {}).get("method") in ("halp", "halp_cmd")
    state: dict[str, Any] = {}
    for key, value in payload["model"].items():
        moved = re.fullmatch(r"branches\.(\w+)\.prototypes(_ready)?", key)
        if moved:
            new = f"objectives.halp.prototypes.{moved[1]}.{'ready' if moved[2] else 'centres'}"
        elif key == "halp_keys_seen":
            new = "objectives.halp.keys_seen"
        else:
            state[key] = value
            continue
        if halp_on:  # methods without HaLP had these buffers too, never used
            state[new] = value
    return {**payload, "model": state, "format": CHECKPOINT_FORMAT, "migrated_from": _V1}


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load one of our checkpoints with ``weights_only=True``; clear errors otherwise.

    A checkpoint of an older format is migrated in memory (module docstring); one of an
    unknown format is refused with both format names.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds here
        raise CheckpointError(f"{path}: not a loadable checkpoint ({err})") from None
    found = payload.get("format") if isinstance(payload, dict) else None
    if found == _V1:
        return _migrate_v1(payload)
    if found != CHECKPOINT_FORMAT:
        detail = f"format {found!r}" if isinstance(found, str) else "no format field"
        raise CheckpointError(
            f"{path}: not a halp pretraining checkpoint this version can read ({detail}; "
            f"expected {CHECKPOINT_FORMAT!r} or {_V1!r})"
        )
    return payload


def config_of(payload: dict[str, Any]) -> PretrainConfig:
    """The resolved configuration stored in a checkpoint."""
    return from_dict(PretrainConfig, payload["config"])


def config_changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two plain-data configurations."""
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}")
    return changed


def publish_final(run_dir: Path) -> None:
    """Expose the finished run as ``final.pt`` (a hard link, or a copy across devices)."""
    run_dir = Path(run_dir)
    tmp = run_dir / f".{FINAL}.partial"
    tmp.unlink(missing_ok=True)
    try:
        os.link(run_dir / CHECKPOINT, tmp)
    except OSError:
        shutil.copyfile(run_dir / CHECKPOINT, tmp)
    os.utime(tmp)  # the run completed now (a link would keep the checkpoint's time)
    os.replace(tmp, run_dir / FINAL)
