"""The on-disk format of prepared datasets (documented in docs/data/index.md, "The on-disk format").

A prepared dataset is a folder::

    <out>/manifest.json          what was prepared (recipe), counts, skipped samples (written last)
    <out>/<benchmark>/<part>.npy float32 (N, 3, T, V, M), memory-mappable (NTU: V 25, M 2)
    <out>/<benchmark>/<part>.json the index: names, labels, true frame counts, layout

``part`` is ``train`` or ``test``. Arrays are written through a temporary name and
renamed when complete; the index is written after its array, so a part whose index
exists is complete. No pickle is used anywhere.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from halp.data.layouts import LAYOUTS, NTU25, SkeletonLayout
from halp.errors import ConfigError, DataFormatError
from halp.io import MANIFEST, atomic_write_json

FORMAT = "halp-skeleton/1"
PARTS = ("train", "test")
CHECK_BYTES = 64 << 20
"""The block size of the finiteness check at load (64 MiB of samples at a time)."""
RECIPES = ("2s-agcn", "crossclr", "nwucla")
"""How ``halp prepare`` normalises skeletons: the 2s-AGCN recipe of ISC/CMD/HaLP
(``halp.data.skeleton``, the default), CrosSCLR/AimCLR's (``halp.data.crossclr``,
``--recipe crossclr``) or NW-UCLA's one-person Kinect v1 recipe (``halp.data.nwucla``)."""


@dataclass(frozen=True)
class SplitIndex:
    """The index of one part of one benchmark."""

    dataset: str
    benchmark: str
    part: str
    num_classes: int
    names: list[str]
    labels: np.ndarray  # int64 (N,)
    frames: np.ndarray  # int64 (N,), true frame counts (may exceed the stored T for PKU)
    extra: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None  # the preparation that wrote it (checked against the manifest)
    layout: str = NTU25.name  # the skeleton layout (halp.data.layouts); absent in old indexes

    def __len__(self) -> int:
        return len(self.names)

    def to_json(self) -> dict[str, Any]:
        """The index as written to ``<part>.json``."""
        return {
            "format": FORMAT,
            "dataset": self.dataset,
            "benchmark": self.benchmark,
            "part": self.part,
            "num_classes": self.num_classes,
            "num_samples": len(self.names),
            "names": list(self.names),
            "labels": [int(v) for v in self.labels],
            "frames": [int(v) for v in self.frames],
            **({"extra": self.extra} if self.extra else {}),
            **({"run_id": self.run_id} if self.run_id else {}),
            **({"layout": self.layout} if self.layout != NTU25.name else {}),
        }


@dataclass(frozen=True)
class SkeletonSplit:
    """One part of a benchmark: the memory-mapped array and its index."""

    data: np.ndarray  # (N, 3, T, V, M) float32, usually a read-only memmap
    index: SplitIndex

    def __len__(self) -> int:
        return len(self.index)

    @property
    def layout(self) -> SkeletonLayout:
        """The skeleton layout its index names."""
        return LAYOUTS[self.index.layout]

    def valid_frames(self, i: int) -> int:
        """Frames of sample ``i`` that hold data (the true count, capped at the stored T)."""
        return int(min(self.index.frames[i], self.data.shape[2]))


def split_paths(root: Path, part: str) -> tuple[Path, Path]:
    """The (array, index) paths of ``part`` under a benchmark folder."""
    return Path(root) / f"{part}.npy", Path(root) / f"{part}.json"


def read_index(path: Path) -> SplitIndex:
    """Read and validate a part's JSON index."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFormatError(
            f"{path}: index not found; the part was never prepared or its preparation was "
            "interrupted. Run `halp prepare` again."
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataFormatError(f"{path}: not valid JSON ({err}); run `halp prepare` again") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise DataFormatError(f"{path}: format is {found!r}, expected {FORMAT!r}")
    missing = [k for k in _INDEX_KEYS if k not in raw]
    if missing:
        raise DataFormatError(
            f"{path}: index lacks {', '.join(missing)}; it was not written by halp prepare "
            "(run it again)"
        )
    names, labels, frames = raw["names"], raw["labels"], raw["frames"]
    wrong = [
        f"{key} must be {kind}"
        for key, kind, ok in (
            ("names", "a list of strings", _list_of(names, str)),
            ("labels", "a list of integers", _list_of(labels, int)),
            ("frames", "a list of integers", _list_of(frames, int)),
            ("num_samples", "an integer", _is_int(raw["num_samples"])),
            ("num_classes", "a positive integer", _is_int(raw["num_classes"])),
            (
                "dataset, benchmark and part",
                "strings",
                _strings(raw, "dataset", "benchmark", "part"),
            ),
            ("extra", "an object", isinstance(raw.get("extra", {}), dict)),
            ("run_id", "a string", isinstance(raw.get("run_id", ""), str | None)),
        )
        if not ok
    ]
    if wrong:
        raise DataFormatError(f"{path}: {'; '.join(wrong)}; run `halp prepare` again")
    if not len(names) == len(labels) == len(frames) == raw["num_samples"]:
        raise DataFormatError(f"{path}: names, labels and frames differ in length")
    try:
        label_array = np.asarray(labels, dtype=np.int64)
        frame_array = np.asarray(frames, dtype=np.int64)
        num_classes = int(raw["num_classes"])
    except (TypeError, ValueError, OverflowError) as err:
        raise DataFormatError(
            f"{path}: labels, frames and num_classes must be integers ({err})"
        ) from None
    if num_classes < 1:
        raise DataFormatError(f"{path}: num_classes is {num_classes}; run `halp prepare` again")
    if len(label_array) and not (0 <= label_array.min() and label_array.max() < num_classes):
        bad = int(label_array[(label_array < 0) | (label_array >= num_classes)][0])
        raise DataFormatError(
            f"{path}: label {bad} does not fit the dataset's {num_classes} classes "
            f"(0..{num_classes - 1})"
        )
    if len(frame_array) and frame_array.min() < 0:
        raise DataFormatError(f"{path}: a negative frame count")
    layout = raw.get("layout", NTU25.name)
    if layout not in LAYOUTS:
        raise DataFormatError(
            f"{path}: layout {layout!r} is not a skeleton layout of this version of halp "
            f"(known: {', '.join(LAYOUTS)})"
        )
    return SplitIndex(
        dataset=raw["dataset"],
        benchmark=raw["benchmark"],
        part=raw["part"],
        num_classes=num_classes,
        names=list(names),
        labels=label_array,
        frames=frame_array,
        extra=raw.get("extra", {}),
        run_id=raw.get("run_id"),
        layout=layout,
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _list_of(value: Any, kind: type) -> bool:
    """Whether ``value`` is a list of ``kind`` (integers: not booleans)."""
    if not isinstance(value, list):
        return False
    return (
        all(_is_int(v) for v in value) if kind is int else all(isinstance(v, kind) for v in value)
    )


def _strings(raw: dict[str, Any], *keys: str) -> bool:
    return all(isinstance(raw[key], str) for key in keys)


def _read_manifest(manifest: Path) -> dict[str, Any]:
    """The content of a dataset's ``manifest.json`` (FileNotFoundError passes through).

    Raises:
        DataFormatError: for a manifest that is not a JSON object.
    """
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataFormatError(
            f"{manifest}: not valid JSON ({err}); run `halp prepare` again"
        ) from None
    if not isinstance(data, dict):
        raise DataFormatError(f"{manifest}: not a JSON object; run `halp prepare` again")
    return data


_INDEX_KEYS = (
    "dataset",
    "benchmark",
    "part",
    "num_classes",
    "num_samples",
    "names",
    "labels",
    "frames",
)


def check_run(root: Path, index: SplitIndex, index_path: Path) -> None:
    """Refuse a part that the dataset's ``manifest.json`` does not vouch for.

    A part written by ``halp prepare`` carries the ``run_id`` of its preparation, which
    the manifest (written last, one folder up) lists per benchmark. A missing manifest
    means the preparation never finished; another id means the folder mixes two
    preparations (e.g. an interrupted re-run). Parts without a run id (written by hand
    with :class:`SplitWriter`) are not checked.
    """
    if index.run_id is None:
        return
    manifest = Path(root).parent / MANIFEST
    try:
        data = _read_manifest(manifest)
    except FileNotFoundError:
        raise DataFormatError(
            f"{Path(root)}: {manifest} is missing, so its preparation did not finish; "
            "run `halp prepare` again"
        ) from None
    run_ids = data.get("run_ids") or {}
    if not isinstance(run_ids, dict):
        raise DataFormatError(f"{manifest}: run_ids is not an object; run `halp prepare` again")
    listed = run_ids.get(index.benchmark)
    if listed != index.run_id:
        raise DataFormatError(
            f"{index_path}: written by preparation {index.run_id}, but {manifest} describes "
            f"{listed or 'another preparation'}: the folder mixes two runs of `halp prepare` "
            "(one was interrupted?); prepare it again"
        )


def manifest_recipe(manifest: dict[str, Any]) -> str | None:
    """The recipe a manifest's content names, lower-cased (``"2s-AGCN"`` -> ``"2s-agcn"``).

    A manifest written by ``import-cmd`` holds CMD's arrays, normalised with the 2s-AGCN
    recipe; one that names no recipe gives None.
    """
    normalisation = manifest.get("normalisation")
    if isinstance(normalisation, dict) and isinstance(normalisation.get("recipe"), str):
        return str(normalisation["recipe"]).lower()
    if manifest.get("imported_from"):
        return "2s-agcn"
    return None


def recipe_of(root: Path) -> str | None:
    """The recipe of the benchmark folder ``root`` (e.g. ``data/ntu60/xsub``), or None.

    Read from ``manifest.json`` one folder up; None when there is none (a folder written
    by hand with :class:`SplitWriter`) or it names no recipe.

    Raises:
        DataFormatError: for a manifest that is not valid JSON.
    """
    manifest = Path(root).parent / MANIFEST
    try:
        data = _read_manifest(manifest)
    except FileNotFoundError:
        return None
    return manifest_recipe(data)


def eval_keep(recipe: str) -> float:
    """The centred fraction of a test clip's valid frames the kNN monitor reads.

    0.95 for the 2s-AGCN recipe (the HaLP/ISC protocol); 1.0 for crossclr, whose clips
    are already resized to their whole length (AimCLR's protocol).
    """
    return 1.0 if recipe == "crossclr" else 0.95


def check_recipe(root: Path, expected: str, key: str) -> None:
    """Refuse the benchmark folder ``root`` when it was prepared with another recipe.

    Args:
        root: The benchmark folder (holding ``train.npy`` ...).
        expected: The recipe the configuration asks for, one of :data:`RECIPES`.
        key: The configuration key that holds ``expected`` (e.g. ``data.recipe``), named
            in the message.

    Raises:
        ConfigError: when ``expected`` is not a recipe, or ``root``'s manifest names
            another recipe. A folder of unknown recipe (:func:`recipe_of` None) passes.
    """
    if expected not in RECIPES:
        raise ConfigError(f"{key}: {expected!r} is not a recipe; expected one of {RECIPES}")
    found = recipe_of(root)
    if found is None or found == expected:
        return
    root = Path(root)
    raise ConfigError(
        f"{root}: prepared with the {found} recipe (says {root.parent / MANIFEST}), but "
        f"{key} is {expected}; the two normalise skeletons differently and must not be "
        f"mixed. Prepare the data again into another folder (`halp prepare DATASET "
        f"--recipe {expected} --out DIR`) and use that one, or set {key}={found}"
    )


def load_array(path: Path, mmap: bool = True) -> np.ndarray:
    """``np.load`` of a ``.npy`` file without pickles; a damaged file is a named error.

    Raises:
        DataFormatError: naming ``path``, for a truncated, empty or foreign file or one
            holding Python objects (``OSError`` of a missing file passes through).
    """
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, EOFError, TypeError) as err:  # numpy's errors for a damaged file
        raise DataFormatError(
            f"{path}: not a readable .npy array of numbers ({str(err).splitlines()[0]}); "
            "it is truncated, damaged or holds Python objects"
        ) from None


def first_non_finite(data: np.ndarray, block_bytes: int = CHECK_BYTES) -> int | None:
    """The index of the first sample (row) of ``data`` holding NaN or inf, or None.

    Reads ``data`` (a memory map, possibly tens of GB) in blocks of about ``block_bytes``.
    Each block is screened with one dot product (NaN and inf propagate into it; 2-3 times
    faster than ``np.isfinite``, about 10 GB/s from the page cache); only a block whose
    dot is not finite (NaN, inf, or an overflow of large finite values) is checked
    element by element.
    """
    if data.dtype.kind != "f" or data.size == 0:
        return None
    rows = max(1, block_bytes // max(1, data[0].nbytes))
    for lo in range(0, len(data), rows):
        flat = np.asarray(data[lo : lo + rows]).reshape(-1)
        if np.isfinite(np.dot(flat, flat)):
            continue
        bad = ~np.isfinite(data[lo : lo + rows].reshape(min(rows, len(data) - lo), -1)).all(axis=1)
        if bad.any():
            return lo + int(np.argmax(bad))
    return None


def layout_of(root: Path) -> str:
    """The layout named by the benchmark folder ``root``'s manifest (``ntu25`` if none)."""
    manifest = Path(root).parent / MANIFEST
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return NTU25.name
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{manifest}: not valid JSON ({err})") from None
    layout = data.get("layout", NTU25.name) if isinstance(data, dict) else NTU25.name
    return str(layout)


def check_layout(root: Path, expected: str, key: str) -> None:
    """Refuse the benchmark folder ``root`` when its data has another skeleton layout.

    Args:
        root: The benchmark folder.
        expected: The layout the configuration builds its encoder for.
        key: The configuration key that holds ``expected`` (e.g. ``data.layout``).

    Raises:
        ConfigError: naming both layouts and how to fix the configuration.
    """
    found = layout_of(root)
    if found != expected:
        root = Path(root)
        raise ConfigError(
            f"{root}: holds {found} skeletons (says {root.parent / MANIFEST}), but {key} is "
            f"{expected}; the encoder must be built for the data's joints: set {key}={found}"
        )


def load_split(root: Path, part: str, mmap: bool = True) -> SkeletonSplit:
    """Open ``<root>/<part>.npy`` with its index, checking that they agree.

    The whole array is checked for NaN and infinite values (:func:`first_non_finite`):
    one bad sample would silently spoil every result computed from the part.
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    array_path, index_path = split_paths(root, part)
    index = read_index(index_path)
    check_run(Path(root), index, index_path)
    if not array_path.exists():
        raise DataFormatError(f"{array_path}: array missing although its index exists")
    data = load_array(array_path, mmap)
    layout = LAYOUTS[index.layout]
    joints, persons = layout.num_joints, layout.persons
    if (
        data.ndim != 5
        or data.shape[0] != len(index)
        or data.shape[1] != 3
        or data.shape[3:] != (joints, persons)
        or data.dtype != np.float32
    ):
        raise DataFormatError(
            f"{array_path}: shape {data.shape} {data.dtype} does not match its index "
            f"({len(index)} samples of layout {layout.name}, float32 (N, 3, T, {joints}, "
            f"{persons}))"
        )
    bad = first_non_finite(data)
    if bad is not None:
        raise DataFormatError(
            f"{array_path}: sample {bad} ({index.names[bad]}) holds NaN or infinite values; "
            "prepare the data again (`halp prepare` refuses such samples)"
        )
    return SkeletonSplit(data=data, index=index)


def _npy_header(shape: tuple[int, ...], length: int) -> bytes:
    """A version-1.0 .npy header for little-endian float32 C arrays, padded to ``length``."""
    desc = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape!r}, }}"
    body_len = length - 10
    if len(desc) + 1 > body_len:
        raise ValueError("header does not fit")
    desc = desc.ljust(body_len - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + body_len.to_bytes(2, "little") + desc.encode("latin1")


class SplitWriter:
    """Streams samples into ``<root>/<part>.npy`` through a temporary file.

    Memory stays flat: each sample is appended to the file as it arrives (plain
    writes, not a memmap, so written pages do not pile up in the process). ``close``
    writes the final header for the rows actually written (skipped samples leave no
    hole), renames the file into place and writes the index last. An exception (or a
    kill) leaves only a ``.partial`` file, never a complete-looking part.
    """

    HEADER_LEN = 128  # bytes; a multiple of 64 as the .npy format recommends

    def __init__(
        self,
        root: Path,
        part: str,
        capacity: int,
        sample_shape: Sequence[int],
        dataset: str,
        benchmark: str,
        num_classes: int,
        run_id: str | None = None,
        layout: str = NTU25.name,
    ) -> None:
        self.root = Path(root)
        self.run_id = run_id
        self.layout = layout
        self.root.mkdir(parents=True, exist_ok=True)
        self.part = part
        self.array_path, self.index_path = split_paths(self.root, part)
        self.tmp_path = self.root / f".{part}.npy.partial"
        self.capacity = int(capacity)  # the most samples that may be appended
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.meta = (dataset, benchmark, num_classes)
        self._fh = open(self.tmp_path, "wb")  # closed in close() or abort()
        self._fh.write(_npy_header((0, *self.sample_shape), self.HEADER_LEN))
        self.names: list[str] = []
        self.labels: list[int] = []
        self.frames: list[int] = []

    def append(self, sample: np.ndarray, name: str, label: int, frames: int) -> None:
        """Append one (3, T, V, M) sample with its name, label and true frame count.

        Raises:
            DataFormatError: for a sample with NaN or infinite values, naming it.
        """
        if not np.isfinite(sample).all():
            raise DataFormatError(
                f"{name}: the sample holds NaN or infinite values; it cannot be trained on"
            )
        if len(self.names) >= self.capacity:
            raise RuntimeError(f"{self.tmp_path}: more than the announced {self.capacity} samples")
        if sample.shape != self.sample_shape:
            raise ValueError(f"{name}: sample shape {sample.shape} != {self.sample_shape}")
        self._fh.write(np.ascontiguousarray(sample, dtype="<f4").tobytes())
        self.names.append(name)
        self.labels.append(int(label))
        self.frames.append(int(frames))

    def close(self) -> SplitIndex:
        """Finish the array, move it into place and write the index; returns the index."""
        self._fh.seek(0)
        self._fh.write(_npy_header((len(self.names), *self.sample_shape), self.HEADER_LEN))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self.index_path.unlink(missing_ok=True)  # an old index must not vouch for the new array
        os.replace(self.tmp_path, self.array_path)
        dataset, benchmark, num_classes = self.meta
        index = SplitIndex(
            dataset,
            benchmark,
            self.part,
            num_classes,
            self.names,
            np.asarray(self.labels, np.int64),
            np.asarray(self.frames, np.int64),
            run_id=self.run_id,
            layout=self.layout,
        )
        atomic_write_json(self.index_path, index.to_json())
        return index

    def abort(self) -> None:
        """Drop the partial file."""
        self._fh.close()
        self.tmp_path.unlink(missing_ok=True)
