"""Result cards: a finished pretraining run as an artefact a user can download, check and reload.

``halp release RUN --out DIR`` writes, from ``RUN/final.pt`` and the results JSONs of
``halp evaluate`` on that checkpoint:

- ``<run>-<8 hex>.pt``: the encoders only (each branch's query encoder with its projection
  head; no key encoder, queue, prototypes, optimiser or random state), named with the
  first 8 hex digits of the file's own sha256, torch.hub's convention;
- ``config.yaml`` (the resolved pretraining configuration), ``metrics.jsonl`` and
  ``metrics.csv`` (the run's per-epoch metrics), ``pretrain.log`` when a log is found;
- ``results/*.json``: the evaluation results of that checkpoint, as ``halp evaluate``
  wrote them;
- ``README.md``: the model card, whose YAML header holds the results in the Hugging Face
  model-card ``model-index`` form and, under ``halp``, the identity of the release (the
  encoder file and its sha256, the source checkpoint's sha256);
- ``SHA256SUMS``: the sha256 of every other file, in ``sha256sum`` format (``sha256sum -c
  SHA256SUMS`` checks it without this package).

``halp verify DIR`` checks the sums (and that no file is unlisted), the hash prefix of the
encoder file, that the card, the configuration and every result belong to this encoder,
reloads every encoder strictly, and reruns the cheapest recorded evaluation (kNN) on the
benchmark it was recorded on, comparing its top-1 with the recorded number. Every failure
is a :class:`halp.errors.ReleaseError` naming the file at fault.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from halp.config import PretrainConfig, from_dict
from halp.errors import HalpError, ReleaseError
from halp.io import atomic_write_text, sha256_of
from halp.methods.checkpoint import FINAL, config_of, load_checkpoint

ENCODER_FORMAT = "halp-encoder/1"
SUMS = "SHA256SUMS"
CARD = "README.md"
CONFIG = "config.yaml"
RESULTS = "results"
LOG = "pretrain.log"
METRICS = ("metrics.jsonl", "metrics.csv")
HASH_LENGTH = 8  # hex digits of the sha256 in the encoder file's name (torch.hub: 8 or more)
_ENCODER_NAME = re.compile(r"(?P<name>.+)-(?P<prefix>[0-9a-f]{8,64})\.pt")

DATASET_NAMES = {
    "ntu60": "NTU RGB+D 60",
    "ntu120": "NTU RGB+D 120",
    "pku2": "PKU-MMD II",
    "pku1": "PKU-MMD I",
    "nwucla": "NW-UCLA",
}
PROTOCOL_NAMES = {
    "linear": "linear evaluation",
    "knn": "kNN evaluation",
    "semi": "semi-supervised evaluation",
    "finetune": "fine-tuning",
    "transfer": "transfer learning",
}


def protocol_name(record: dict[str, Any]) -> str:
    """How the card names a result's protocol (semi-supervised with its label fraction)."""
    protocol = str(record.get("protocol"))
    name = PROTOCOL_NAMES.get(protocol, protocol)
    fraction = (record.get("config") or {}).get("label_fraction")
    if protocol == "semi" and isinstance(fraction, int | float):
        name += f" ({fraction * 100:g} % of the labels)"
    return name


# ------------------------------------------------------------------------ encoders


def encoder_states(payload: dict[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    """Each branch's query encoder (with its projection head) from a pretraining checkpoint.

    The keys are those of :func:`halp.encoders.build_encoder`'s module, so a state loads
    into a freshly built encoder with ``strict=True``.
    """
    states: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in payload["model"].items():
        found = re.fullmatch(r"branches\.(\w+)\.encoder_q\.(.+)", key)
        if found:
            states.setdefault(found[1], {})[found[2]] = value
    if not states:
        raise ReleaseError("the checkpoint holds no query encoder (no branches.*.encoder_q.*)")
    return states


def build_strict(config: PretrainConfig, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A fresh encoder of ``config``'s architecture with ``state`` loaded strictly."""
    from halp.encoders import build_encoder

    encoder = build_encoder(config.encoder.arch, config)
    encoder.load_state_dict(state, strict=True)
    return encoder


# ------------------------------------------------------------------------ release


@dataclass(frozen=True)
class Release:
    """What :func:`release` wrote."""

    folder: Path
    encoder: Path
    results: tuple[str, ...]


def _result_files(
    results: Sequence[Path], search: Path | None, source_sha: str
) -> list[tuple[Path, dict[str, Any]]]:
    """The results JSONs of the checkpoint whose sha256 is ``source_sha``.

    ``results`` are given by the user: each must belong to the checkpoint. Without them,
    every ``*.json`` under ``search`` whose ``checkpoint.sha256`` is ``source_sha``.
    """
    found: list[tuple[Path, dict[str, Any]]] = []
    if results:
        for path in results:
            data = _read_json(Path(path))
            sha = (data.get("checkpoint") or {}).get("sha256")
            if sha != source_sha:
                raise ReleaseError(
                    f"{path}: a result of another checkpoint (sha256 {str(sha)[:12]}..., "
                    f"this run's final.pt is {source_sha[:12]}...); give results of this run only"
                )
            found.append((Path(path), data))
    elif search is not None and search.is_dir():
        for path in sorted(search.rglob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # not a results file
            if (
                isinstance(data, dict)
                and (data.get("checkpoint") or {}).get("sha256") == source_sha
            ):
                found.append((path, data))
    names = [p.name for p, _ in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ReleaseError(f"two results files are named {twice[0]}; give one of them")
    return found


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReleaseError(f"{path}: not found") from None
    except ValueError as err:
        raise ReleaseError(f"{path}: not JSON ({err})") from None
    if not isinstance(data, dict):
        raise ReleaseError(f"{path}: not a results JSON (a JSON object was expected)")
    return data


def model_index(name: str, results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The Hugging Face model-card ``model-index``: one entry per results file.

    Args:
        name: The model's name (the run's).
        results: Results file name -> the results JSON of ``halp evaluate``.
    """
    entries = []
    for file, r in sorted(results.items()):
        metrics = r.get("metrics") or {}
        if not isinstance(metrics.get("top1"), int | float):
            continue
        dataset = str(r.get("dataset", "unknown"))
        metric: dict[str, Any] = {
            "type": "accuracy",
            "name": "top-1 accuracy (%)",
            "value": round(float(metrics["top1"]), 4),
        }
        if r.get("protocol") == "knn":
            metric["args"] = {"k": metrics.get("k")}
        entries.append(
            {
                "task": {
                    "type": "skeleton-based-action-recognition",
                    "name": protocol_name(r),
                },
                "dataset": {
                    "type": dataset,
                    "name": DATASET_NAMES.get(dataset, dataset),
                    "split": str(r.get("benchmark", "")),
                },
                "metrics": [metric],
                "source": {"name": f"{RESULTS}/{file}", "url": f"{RESULTS}/{file}"},
            }
        )
    return [{"name": name, "results": entries}]


def _card_text(header: dict[str, Any], name: str, results: dict[str, dict[str, Any]]) -> str:
    """The model card: YAML header, then a short human-readable body."""
    halp = header["halp"]
    rows = [
        f"| {protocol_name(r)} "
        f"| {DATASET_NAMES.get(str(r.get('dataset')), r.get('dataset'))} {r.get('benchmark', '')} "
        f"| {r.get('modality', '')} | {float(r['metrics']['top1']):.2f} | `{RESULTS}/{file}` |"
        for file, r in sorted(results.items())
        if isinstance((r.get("metrics") or {}).get("top1"), int | float)
    ]
    table = (
        "| protocol | benchmark | modality | top-1 (%) | record |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        if rows
        else "No evaluation results were released with this encoder."
    )
    return (
        "---\n"
        + yaml.safe_dump(header, sort_keys=False, allow_unicode=True)
        + "---\n\n"
        + f"# {name}\n\n"
        + f"Encoder pretrained with `{halp['method']}` on {halp['pretrained_on']} "
        + f"for {halp['epochs']} epochs by halp-repro {halp['halp_version']} "
        + f"(commit `{halp['commit']}`).\n\n"
        + f"## Results\n\n{table}\n\n"
        + "## Files\n\n"
        + f"- `{halp['encoder']['file']}`: the encoders (format `{ENCODER_FORMAT}`): "
        + "`torch.load(path, weights_only=True)['encoders'][MODALITY]` loads strictly into "
        + "`halp.encoders.build_encoder(config.encoder.arch, config)`\n"
        + f"- `{CONFIG}`: the resolved pretraining configuration\n"
        + "- `metrics.jsonl`, `metrics.csv`: per-epoch pretraining metrics\n"
        + f"- `{RESULTS}/`: the evaluation records (`halp evaluate` JSON)\n"
        + f"- `{SUMS}`: sha256 of every file (`sha256sum -c {SUMS}`)\n\n"
        + "## Check it\n\n"
        + "    halp verify {this folder} --data DATA_ROOT\n\n"
        + "checks the sums, the hash in the encoder's file name, that the card, configuration "
        + "and results belong to this encoder, reloads it strictly and reruns the kNN "
        + "evaluation, comparing its top-1 with the recorded one.\n"
    )


def release(
    run: Path,
    out: Path,
    results: Sequence[Path] = (),
    search: Path | None = Path("results"),
    log_file: Path | None = None,
) -> Release:
    """Write the release folder ``out`` of the finished run ``run`` (module docstring).

    The folder is written under a temporary name next to ``out`` and renamed when complete,
    so an interrupted release leaves no folder that looks finished.

    Args:
        run: A run folder of ``halp pretrain`` with ``final.pt``.
        out: The release folder; it must not exist or be empty.
        results: Results JSONs of ``halp evaluate`` on ``run/final.pt``; each must record
            that checkpoint's sha256.
        search: Without ``results``, the folder searched for results JSONs of the checkpoint.
        log_file: The pretraining log; default ``logs/pretrain/<run name>.log`` when present
            (the workflow's place).

    Raises:
        ReleaseError: no finished run, a result of another checkpoint, a non-empty ``out``.
    """
    run, out = Path(run), Path(out)
    final = run / FINAL
    if not final.is_file():
        raise ReleaseError(
            f"{run}: no {FINAL}, so the run has not finished (release a completed run)"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ReleaseError(f"{out}: exists and is not an empty folder; choose a new --out")
    payload = load_checkpoint(final)
    config = config_of(payload)
    source_sha = sha256_of(final)
    states = encoder_states(payload)
    for modality, state in states.items():  # what we release must reload
        try:
            build_strict(config, state)
        except RuntimeError as err:
            raise ReleaseError(f"{final}: the {modality} encoder does not reload ({err})") from None
    found = _result_files(results, search, source_sha)
    name = run.name
    final_out = out  # written under a temporary name, renamed when complete
    out = out.parent / f".{out.name}.partial"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    try:
        encoder_payload = {
            "format": ENCODER_FORMAT,
            "name": name,
            "method": payload["method"],
            "config": payload["config"],
            "data": payload.get("data", {}),
            "epoch": int(payload["epoch"]),
            "halp_version": payload.get("halp_version"),
            "source_checkpoint_sha256": source_sha,
            "encoders": states,
        }
        tmp = out / f".{name}.pt.partial"
        torch.save(encoder_payload, tmp)
        digest = sha256_of(tmp)
        encoder = out / f"{name}-{digest[:HASH_LENGTH]}.pt"
        tmp.replace(encoder)

        atomic_write_text(out / CONFIG, yaml.safe_dump(payload["config"], sort_keys=False))
        for metrics in METRICS:
            if (run / metrics).is_file():
                shutil.copyfile(run / metrics, out / metrics)
        log_file = log_file if log_file is not None else Path("logs/pretrain") / f"{name}.log"
        if log_file.is_file():
            shutil.copyfile(log_file, out / LOG)
        records: dict[str, dict[str, Any]] = {}
        for path, data in found:
            (out / RESULTS).mkdir(exist_ok=True)
            shutil.copyfile(path, out / RESULTS / path.name)
            records[path.name] = data

        provenance: dict[str, Any] = {}
        for record in records.values():
            provenance = provenance or dict(record.get("provenance") or {})
        data_info = payload.get("data", {})
        header = {
            "library_name": "halp-repro",
            "license": "mit",
            "tags": [
                "self-supervised-learning",
                "skeleton-based-action-recognition",
                config.method,
            ],
            "datasets": sorted({str(data_info.get("dataset", "unknown"))}),
            "model-index": model_index(name, records),
            "halp": {
                "name": name,
                "method": config.method,
                "pretrained_on": f"{data_info.get('dataset', '?')} "
                f"{data_info.get('benchmark', '')}",
                "epochs": int(payload["epoch"]),
                "halp_version": payload.get("halp_version"),
                "commit": provenance.get("commit", "unknown"),
                "encoder": {"file": encoder.name, "sha256": digest, "format": ENCODER_FORMAT},
                "source_checkpoint_sha256": source_sha,
                "results": sorted(records),
            },
        }
        atomic_write_text(out / CARD, _card_text(header, name, records))
        write_sums(out)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    if final_out.is_dir():
        final_out.rmdir()  # empty (checked above)
    os.replace(out, final_out)
    return Release(final_out, final_out / encoder.name, tuple(sorted(records)))


def _listed(folder: Path) -> list[str]:
    """Every file of a release folder but the sums file, as sorted relative paths."""
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != SUMS and not p.name.startswith(".")
    )


def write_sums(folder: Path) -> Path:
    """Write ``folder/SHA256SUMS`` (``sha256sum`` format) of every other file."""
    lines = [f"{sha256_of(folder / rel)}  {rel}\n" for rel in _listed(folder)]
    atomic_write_text(folder / SUMS, "".join(lines))
    return folder / SUMS


# ------------------------------------------------------------------------ verify


def read_sums(folder: Path) -> dict[str, str]:
    """``SHA256SUMS`` as relative path -> digest; a malformed line is refused."""
    path = folder / SUMS
    if not path.is_file():
        raise ReleaseError(f"{path}: missing; this is not a release folder of halp release")
    sums: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        found = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line)
        if not found or found[2].startswith("/") or ".." in Path(found[2]).parts:
            raise ReleaseError(f"{path}:{number}: not a 'SHA256  FILE' line of a relative path")
        sums[found[2]] = found[1]
    return sums


def check_sums(folder: Path) -> dict[str, str]:
    """Every listed file present with its digest, and no file unlisted."""
    sums = read_sums(folder)
    for rel, digest in sums.items():
        path = folder / rel
        if not path.is_file():
            raise ReleaseError(f"{path}: listed in {SUMS} but missing")
        if sha256_of(path) != digest:
            raise ReleaseError(
                f"{path}: sha256 differs from {SUMS} (changed or damaged after release)"
            )
    extra = sorted(set(_listed(folder)) - set(sums))
    if extra:
        raise ReleaseError(f"{folder / extra[0]}: not listed in {SUMS} (added after release)")
    return sums


def _encoder_file(folder: Path, sums: dict[str, str]) -> Path:
    candidates = [rel for rel in sums if "/" not in rel and rel.endswith(".pt")]
    if len(candidates) != 1:
        raise ReleaseError(f"{folder}: expected one encoder file NAME-HASH.pt, found {candidates}")
    path = folder / candidates[0]
    found = _ENCODER_NAME.fullmatch(path.name)
    if not found:
        raise ReleaseError(
            f"{path}: the name has no hash prefix (expected NAME-<{HASH_LENGTH} hex>.pt)"
        )
    digest = sums[candidates[0]]
    if not digest.startswith(found["prefix"]):
        raise ReleaseError(
            f"{path}: the name's hash prefix {found['prefix']} is not the file's sha256 "
            f"prefix {digest[: len(found['prefix'])]}"
        )
    return path


def _card_header(folder: Path) -> dict[str, Any]:
    path = folder / CARD
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    found = re.match(r"---\n(.*?)\n---\n", text, re.DOTALL)
    if not found:
        raise ReleaseError(f"{path}: no YAML header between '---' lines")
    try:
        header = yaml.safe_load(found[1])
    except yaml.YAMLError as err:
        raise ReleaseError(f"{path}: the YAML header does not parse ({err})") from None
    if not isinstance(header, dict) or not isinstance(header.get("halp"), dict):
        raise ReleaseError(f"{path}: the header has no 'halp' section")
    return header


def _check_card(
    folder: Path, header: dict[str, Any], encoder: Path, digest: str, source_sha: str
) -> None:
    card = folder / CARD
    ident = header["halp"].get("encoder") or {}
    if ident.get("file") != encoder.name or ident.get("sha256") != digest:
        raise ReleaseError(
            f"{card}: the card is for encoder {ident.get('file')} "
            f"(sha256 {str(ident.get('sha256'))[:12]}...), but this release holds {encoder.name} "
            f"(sha256 {digest[:12]}...): a card from another run"
        )
    if header["halp"].get("source_checkpoint_sha256") != source_sha:
        raise ReleaseError(f"{card}: the card names another source checkpoint than the encoder's")


def _check_results(
    folder: Path, header: dict[str, Any], source_sha: str
) -> dict[str, dict[str, Any]]:
    """The released results: each of this checkpoint, each on the card with its number."""
    records: dict[str, dict[str, Any]] = {}
    for path in sorted((folder / RESULTS).glob("*.json")):
        data = _read_json(path)
        sha = (data.get("checkpoint") or {}).get("sha256")
        if sha != source_sha:
            raise ReleaseError(
                f"{path}: a result of another checkpoint (sha256 {str(sha)[:12]}..., the "
                f"encoder comes from {source_sha[:12]}...)"
            )
        records[path.name] = data
    listed = sorted(header["halp"].get("results") or [])
    if listed != sorted(records):
        raise ReleaseError(
            f"{folder / CARD}: the card lists the results {listed}, the folder holds "
            f"{sorted(records)}"
        )
    expected = model_index(header["halp"].get("name", ""), records)
    if header.get("model-index") != expected:
        raise ReleaseError(
            f"{folder / CARD}: the model-index numbers differ from the results in {RESULTS}/"
        )
    return records


@dataclass(frozen=True)
class Verified:
    """What :func:`verify` checked."""

    files: int
    encoders: tuple[str, ...]
    results: int
    knn: tuple[str, float, float] | None  # (results file, recorded top-1, rerun top-1)


def verify(
    folder: Path,
    data: Path | None = None,
    device: str = "cpu",
    tolerance: float = 0.0,
    rerun: bool = True,
    say: Callable[[str], None] = lambda _: None,
) -> Verified:
    """Check a release folder (module docstring); raise :class:`ReleaseError` on any mismatch.

    Args:
        folder: A folder written by :func:`release`.
        data: The benchmark folder for the kNN rerun; default the one recorded in the result
            (a path relative to the working directory, as the workflow writes it).
        device: Where the kNN rerun computes features.
        tolerance: The largest accepted difference in top-1 points between the rerun and
            the record (0: equal; features computed on another device may differ slightly).
        rerun: Whether to rerun the kNN evaluation.
        say: Receives one line per check passed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ReleaseError(f"{folder}: not a folder")
    sums = check_sums(folder)
    say(f"{SUMS}: {len(sums)} files, all sha256 equal")
    encoder = _encoder_file(folder, sums)
    digest = sums[encoder.name]
    say(f"{encoder.name}: the name's hash prefix matches its sha256")
    try:
        payload = torch.load(encoder, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds here
        raise ReleaseError(f"{encoder}: not a loadable encoder file ({err})") from None
    if not isinstance(payload, dict) or payload.get("format") != ENCODER_FORMAT:
        raise ReleaseError(f"{encoder}: not a halp encoder file (format {ENCODER_FORMAT!r})")
    source_sha = str(payload.get("source_checkpoint_sha256"))
    header = _card_header(folder)
    _check_card(folder, header, encoder, digest, source_sha)
    config_path = folder / CONFIG
    if not config_path.is_file() or yaml.safe_load(config_path.read_text()) != payload["config"]:
        raise ReleaseError(f"{config_path}: differs from the configuration inside {encoder.name}")
    say(f"{CARD}, {CONFIG}: of this encoder")
    records = _check_results(folder, header, source_sha)
    say(f"{RESULTS}/: {len(records)} results of the encoder's checkpoint, equal to the card's")
    try:
        config = from_dict(PretrainConfig, payload["config"])
    except HalpError as err:
        raise ReleaseError(f"{encoder}: its configuration does not load ({err})") from None
    encoders = {}
    for modality, state in payload["encoders"].items():
        try:
            encoders[modality] = build_strict(config, state)
        except RuntimeError as err:
            raise ReleaseError(
                f"{encoder}: the {modality} encoder does not reload strictly ({err})"
            ) from None
    say(f"{encoder.name}: {', '.join(encoders)} encoder(s) reloaded strictly")
    knn = None
    knn_files = [f for f, r in records.items() if r.get("protocol") == "knn"]
    if rerun and knn_files:
        file = knn_files[0]
        knn = (file, *_rerun_knn(folder / RESULTS / file, records[file], encoders, data, device))
        if abs(knn[1] - knn[2]) > tolerance:
            raise ReleaseError(
                f"{folder / RESULTS / file}: kNN top-1 rerun {knn[2]:.4f} %, recorded "
                f"{knn[1]:.4f} % (tolerance {tolerance:g} points)"
            )
        say(f"{RESULTS}/{file}: kNN rerun top-1 {knn[2]:.4f} % = recorded {knn[1]:.4f} %")
    elif rerun:
        say("no kNN result recorded: no evaluation rerun")
    return Verified(len(sums), tuple(encoders), len(records), knn)


def _rerun_knn(
    path: Path,
    record: dict[str, Any],
    encoders: dict[str, torch.nn.Module],
    data: Path | None,
    device: str,
) -> tuple[float, float]:
    """(recorded, rerun) top-1 of the kNN record ``path`` on its benchmark."""
    from halp.data.storage import load_split
    from halp.eval.knn import knn_top1
    from halp.runtime import resolve_device

    cfg = record.get("config") or {}
    modality = str(record.get("modality"))
    if modality not in encoders:
        raise ReleaseError(f"{path}: evaluates the {modality!r} encoder, which is not released")
    root = Path(data) if data is not None else Path(str(cfg.get("data_root")))
    if not root.is_dir():
        raise ReleaseError(f"{path}: the benchmark {root} is not here; give its folder with --data")
    train, test = load_split(root, "train"), load_split(root, "test")
    found = (train.index.dataset, train.index.benchmark)
    if found != (record.get("dataset"), record.get("benchmark")):
        raise ReleaseError(
            f"{root}: holds {found[0]} {found[1]}, the record was made on "
            f"{record.get('dataset')} {record.get('benchmark')}"
        )
    top1 = knn_top1(
        encoders[modality],
        train,
        test,
        modality,
        int(cfg["frames"]),
        int(cfg["seed"]),
        int(cfg["k"]),
        resolve_device(device),
        float(cfg["keep"]),
    )
    return float(record["metrics"]["top1"]), top1
