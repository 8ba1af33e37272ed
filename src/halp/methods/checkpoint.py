"""Pretraining checkpoints: atomic save, checked load, format versions and their migration.

A checkpoint is a dict saved with ``torch.save`` and loaded with ``weights_only=True``:
``format``, ``halp_version``, ``method``, the resolved ``config``, ``data`` (dataset,
benchmark, training samples), ``epoch`` (epochs completed), ``model`` (the state dict of
:class:`halp.methods.model.PretrainModel`), ``optimizer``, ``rng``, the last ``metrics``
and ``provenance`` (the git commit of the code that trained it, and whether its tree was
dirty). :func:`resume_run` restores a run from one: the configuration may differ only in
:data:`RESUMABLE_CHANGES` and in the keys each objective accepts
(:meth:`halp.objectives.Objective.resumable`).

Format versions:

- ``halp-pretrain/2`` (current): objectives keep their own state under
  ``objectives.<name>.``, e.g. ``objectives.halp.prototypes.joint.centres``.
- ``halp-pretrain/1`` (package 0.1.0 before the composable objectives): the prototypes
  lived in the branches (``branches.<m>.prototypes``, ``branches.<m>.prototypes_ready``)
  and the warm-up counter at the top (``halp_keys_seen``). :func:`load_checkpoint`
  renames those keys, so a version-1 checkpoint evaluates and resumes as before.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import torch
import torch.distributed as dist

from halp import __version__
from halp.config import PretrainConfig, from_dict, to_dict
from halp.errors import CheckpointError, ConfigError
from halp.io import atomic_path
from halp.methods.model import PretrainModel
from halp.objectives import Objective
from halp.runtime import Process

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
FINAL = "final.pt"  # the last epoch's checkpoint, written only when training completes
CHECKPOINT_FORMAT = "halp-pretrain/2"
_V1 = "halp-pretrain/1"
# keys that may change between a run and its resumption
RESUMABLE_CHANGES = ("optim.epochs", "log.", "data.workers", "data.root", "device")


class _WriteErrors(io.RawIOBase):
    """A binary file that remembers the first ``OSError`` its writes raised.

    ``torch.save`` turns a failed write (a full disk, a lost mount) into a
    ``RuntimeError: ... unexpected pos ...``; the remembered error lets
    :func:`save_checkpoint` report what the operating system said.
    """

    def __init__(self, fh: BinaryIO) -> None:
        super().__init__()
        self.fh = fh
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        try:
            return self.fh.write(data)
        except OSError as err:
            self.error = self.error or err
            raise


def _open(path: Path) -> BinaryIO:
    """Open ``path`` for writing (a seam for tests that simulate a full disk)."""
    return open(path, "wb")


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` through a temporary file and an atomic rename.

    Raises:
        OSError: what the operating system said when a write failed, naming ``path``
            (e.g. ``[Errno 28] No space left on device``); ``path`` is untouched.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        sink: _WriteErrors | None = None
        try:
            with _open(tmp) as fh:
                sink = _WriteErrors(fh)
                torch.save(payload, cast(IO[bytes], sink))
        except RuntimeError:
            if sink is None or sink.error is None:
                raise
            raise OSError(sink.error.errno, sink.error.strerror, str(path)) from None
        except OSError as err:  # a write outside torch's writer, or the final flush
            raise OSError(err.errno, err.strerror, str(path)) from None


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
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a loadable checkpoint ({first[:200]})") from None
    found = payload.get("format") if isinstance(payload, dict) else None
    if found not in (_V1, CHECKPOINT_FORMAT):
        detail = f"format {found!r}" if isinstance(found, str) else "no format field"
        raise CheckpointError(
            f"{path}: not a halp pretraining checkpoint this version can read ({detail}; "
            f"expected {CHECKPOINT_FORMAT!r} or {_V1!r})"
        )
    check_payload(path, payload)
    return _migrate_v1(payload) if found == _V1 else payload


def check_payload(path: Path, payload: dict[str, Any]) -> None:
    """Refuse a checkpoint whose fields are missing, of the wrong type or not finite.

    Checked: ``config`` (a valid configuration), ``epoch`` (an integer, 0 or more),
    ``model`` (a mapping of names to tensors, every floating tensor finite: weights of
    NaN would give a number that means nothing), ``data`` (a mapping, if present).

    Raises:
        CheckpointError: naming ``path`` and the field (or tensor).
    """
    for key, kind in (("model", dict), ("config", dict), ("epoch", int)):
        value = payload.get(key)
        if value is None:
            raise CheckpointError(f"{path}: the checkpoint has no {key!r}; it is incomplete")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(
                f"{path}: {key!r} is a {type(value).__name__}, expected a {kind.__name__}"
            )
    if payload["epoch"] < 0:
        raise CheckpointError(f"{path}: 'epoch' is {payload['epoch']}, expected 0 or more")
    if not isinstance(payload.get("data", {}), dict):
        raise CheckpointError(f"{path}: 'data' is not a mapping")
    try:
        config_of(payload)
    except ConfigError as err:
        raise CheckpointError(f"{path}: its stored configuration is invalid: {err}") from None
    for name, tensor in payload["model"].items():
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{path}: model entry {name!r} is not a tensor")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"{path}: the weights {name!r} hold NaN or infinite values; the checkpoint "
                "cannot be evaluated or resumed (use an earlier one)"
            )


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


def checkpoint_payload(
    config: PretrainConfig,
    model: PretrainModel,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    data: dict[str, Any],
    rng: list[dict[str, torch.Tensor]],
    metrics: dict[str, Any],
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """The checkpoint of a run after ``epoch`` completed epochs (module docstring)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "halp_version": __version__,
        "method": config.method,
        "config": to_dict(config),
        "data": data,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        # rank 0's streams at the top (single-process readers), every rank's below
        "rng": {**rng[0], "per_rank": rng},
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float)},
        "provenance": provenance,
    }


def rng_states(proc: Process, generator: torch.Generator) -> list[dict[str, torch.Tensor]]:
    """Every process's random states (torch's global one and the run's generator)."""
    mine = {"torch": torch.get_rng_state(), "halp": generator.get_state()}
    if proc.world_size == 1:
        return [mine]
    states: list[Any] = [None] * proc.world_size
    dist.all_gather_object(states, mine)
    return states


def own_rng_state(rng: dict[str, Any], proc: Process) -> dict[str, torch.Tensor] | None:
    """This process's saved random states, or None when the checkpoint has none for it."""
    per_rank = rng.get("per_rank")
    if per_rank is not None and len(per_rank) == proc.world_size:
        return per_rank[proc.rank]
    if proc.world_size > 1:
        log.warning(
            "the checkpoint holds random states for %s process(es) and this run has %d: "
            "process %d %s; the resumption is not bit-identical",
            len(per_rank) if per_rank is not None else "1",
            proc.world_size,
            proc.rank,
            "takes the saved states of process 0" if proc.is_main else "restarts its streams",
        )
    return {"torch": rng["torch"], "halp": rng["halp"]} if proc.is_main else None


def _with_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's configuration with keys added since it was written at their defaults."""
    return to_dict(from_dict(PretrainConfig, saved))


def _check_same_data(payload: dict[str, Any], data: dict[str, Any], path: Path) -> None:
    """Refuse to resume on another dataset or benchmark than the checkpoint's."""
    saved = payload.get("data") or {}
    here = {k: data.get(k) for k in ("dataset", "benchmark")}
    there = {k: saved.get(k) for k in here}
    if there != here:
        raise CheckpointError(
            f"{path}: the run was trained on {there['dataset']} {there['benchmark']}, but "
            f"data.root holds {here['dataset']} {here['benchmark']}; resume on the same data "
            "or start a new run"
        )


def resume_run(
    path: Path,
    config: PretrainConfig,
    model: PretrainModel,
    optimizer: torch.optim.Optimizer,
    data: dict[str, Any],
    proc: Process,
    generator: torch.Generator,
) -> int:
    """Restore model, optimiser and random states from ``path``; the epochs completed.

    Refuses another dataset, and configuration changes beyond :data:`RESUMABLE_CHANGES`
    and those the objectives accept at the checkpoint's epoch; state an objective asks
    to remake (e.g. HaLP's prototypes when their number changed before HaLP started) is
    dropped and built afresh.
    """
    payload = load_checkpoint(path)
    _check_same_data(payload, data, path)
    changes = [
        k
        for k in config_changes(_with_defaults(payload["config"]), to_dict(config))
        if not k.startswith(RESUMABLE_CHANGES)
    ]
    old = from_dict(PretrainConfig, payload["config"])
    epoch = int(payload["epoch"])
    remake: list[str] = []
    for name, objective in model.objectives.items():
        assert isinstance(objective, Objective)
        rule = objective.resumable(changes, old, config, epoch)
        if rule.keys:
            log.warning(
                "resuming %s with changed %s: accepted, since %s",
                path.parent,
                ", ".join(rule.keys),
                rule.reason,
            )
        changes = [k for k in changes if k not in rule.keys]
        remake += [f"objectives.{name}.{fragment}" for fragment in rule.remake]
    if changes:
        raise CheckpointError(
            f"{path}: the configuration differs from the checkpoint's in "
            f"{', '.join(changes)}; resume with the same configuration or start a new run"
        )
    fresh = tuple(remake)
    state = {k: v for k, v in payload["model"].items() if not k.startswith(fresh)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(fresh) for k in missing):
        raise CheckpointError(
            f"{path}: the model state does not fit this configuration (missing "
            f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    optimizer.load_state_dict(payload["optimizer"])
    mine = own_rng_state(payload["rng"], proc)
    if mine is not None:
        torch.set_rng_state(mine["torch"])
        generator.set_state(mine["halp"])
    return epoch
