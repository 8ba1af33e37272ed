"""PKU-MMD phase II: skeleton, label and split files, and instance cutting (Liu et al. 2020).

Layout of the raw folder::

    skeleton/<video>.txt     one row of 150 floats per frame (2 bodies x 25 joints x xyz)
    label/<video>.txt        rows ``class,start,end,confidence`` (class 1-based)
    cross_subject_v2.txt     line 2: training videos separated by ", "
    cross_view_v2.txt        likewise

Every label row is one sample: frames [start, end) of its video (end exclusive, as
the reference generator slices), named ``<video>_<row>`` with the 0-based row index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from halp.data.skeleton import NUM_JOINTS, NUM_PERSONS
from halp.errors import RawFormatError, quote

NUM_CLASSES = 51  # the reference's output size (phase II uses a subset of the ids)
BENCHMARKS = {"xsub": "cross_subject_v2.txt", "xview": "cross_view_v2.txt"}
ROW_VALUES = NUM_PERSONS * NUM_JOINTS * 3


@dataclass(frozen=True)
class Instance:
    """One action instance cut out of a video."""

    video: str
    row: int  # 0-based row in the label file
    label: int  # 0-based class
    start: int
    end: int  # exclusive
    line: int  # 1-based line in the label file, for error messages

    @property
    def name(self) -> str:
        """The sample name, ``<video>_<row>`` with the 0-based label row."""
        return f"{self.video}_{self.row}"

    @property
    def frames(self) -> int:
        """Frames of the instance, ``end - start``."""
        return self.end - self.start


def parse_skeleton(raw: bytes, origin: str) -> np.ndarray:
    """Parse a skeleton file into float64 (2, T, 25, 3) bodies (body 0 first).

    Raises:
        RawFormatError: for an empty file, a row without exactly 150 values, or a
            non-numeric or non-finite value, naming the line.
    """
    lines = raw.decode("ascii", errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise RawFormatError(origin, 1, "empty skeleton file")
    tokens = [line.split() for line in lines]
    bad = next((i for i, t in enumerate(tokens) if len(t) != ROW_VALUES), None)
    if bad is not None:
        raise RawFormatError(
            origin, bad + 1, f"a frame row needs {ROW_VALUES} values, found {len(tokens[bad])}"
        )
    try:
        rows = np.array(tokens, dtype=np.float64)
    except ValueError:
        for i, row in enumerate(tokens):
            for value in row:
                try:
                    float(value)
                except ValueError:
                    raise RawFormatError(origin, i + 1, f"non-numeric value {value!r}") from None
        raise
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        raise RawFormatError(origin, int(np.argmin(finite)) + 1, "non-finite value")
    return rows.reshape(len(rows), NUM_PERSONS, NUM_JOINTS, 3).transpose(1, 0, 2, 3)


def parse_labels(text: str, origin: str, video: str) -> list[Instance]:
    """Parse a label file into instances; raises RawFormatError naming the line."""
    instances: list[Instance] = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 4:
            raise RawFormatError(
                origin, i + 1, f"expected 'class,start,end,confidence', found {quote(line.strip())}"
            )
        try:
            cls, start, end, _conf = (int(float(f)) for f in fields)
        except (ValueError, OverflowError):  # OverflowError: inf
            raise RawFormatError(
                origin, i + 1, f"non-numeric or infinite field in {quote(line.strip())}"
            ) from None
        if not 1 <= cls <= NUM_CLASSES:
            raise RawFormatError(origin, i + 1, f"class {cls} outside 1..{NUM_CLASSES}")
        if not 0 <= start < end:
            raise RawFormatError(origin, i + 1, f"frames [{start}, {end}) are empty or negative")
        instances.append(Instance(video, len(instances), cls - 1, start, end, i + 1))
    if not instances:
        raise RawFormatError(origin, 1, "label file holds no action")
    return instances


def read_split(path: Path, videos: set[str]) -> set[str]:
    """Training videos of a split file (line 2, ", "-separated); others are test.

    Raises:
        RawFormatError: for a missing or short file, or a name with no skeleton file.
    """
    if not path.is_file():
        raise RawFormatError(
            str(path),
            0,
            "split file not found; it ships with PKU-MMD (Split/cross_*_v2.txt): "
            "copy it next to skeleton/ and label/",
        )
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if len(lines) < 2 or not lines[1].strip():
        raise RawFormatError(str(path), 2, "line 2 must list the training videos")
    train = {n.strip() for n in lines[1].split(",") if n.strip()}
    unknown = sorted(train - videos)
    if unknown:
        raise RawFormatError(
            str(path),
            2,
            f"{len(unknown)} training video(s) have no skeleton file, "
            f"e.g. {unknown[:3]}; check that skeleton/ is complete and matches this split file",
        )
    return train


def cut(bodies: np.ndarray, instance: Instance, origin: str) -> np.ndarray:
    """Frames [start, end) of (2, T, 25, 3) bodies; the range must lie inside the file."""
    total = bodies.shape[1]
    if instance.end > total:
        raise RawFormatError(
            origin,
            instance.line,
            f"frames [{instance.start}, {instance.end}) exceed the {total} frames of the "
            f"skeleton file of {instance.video}",
        )
    return bodies[:, instance.start : instance.end]
