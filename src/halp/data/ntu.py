"""NTU RGB+D 60/120: sample names, benchmark splits, missing lists and the raw parser.

The raw ``.skeleton`` format (NTU RGB+D, Shahroudy et al. 2016): line 1 is the frame
count; per frame a
body count (0 is allowed); per body one line of 10 values, a line ``25`` and 25 lines
of 12 values whose first three are x, y, z. Files come with CRLF or LF endings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from itertools import repeat

import numpy as np

from halp.data.skeleton import MAX_BODY_SLOTS, NUM_JOINTS
from halp.errors import RawFormatError, SampleNameError, quote

NAME_RE = re.compile(r"^S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})$")
_ALLOWED = b"0123456789.eE+- \t\r\n"
_BAD_CHAR = re.compile(r"[^0-9.eE+\- \t\r\n]")
_BLANK_LINE = re.compile(r"\n[ \t\r]*\n")
NAME_HELP = "expected SsssCcccPpppRrrrAaaa, e.g. S001C002P003R002A013"

# Cross-subject training performers (the NTU-120 list; its first 20 are NTU-60's).
XSUB_TRAIN_PERFORMERS = frozenset(
    int(p)
    for p in """1 2 4 5 8 9 13 14 15 16 17 18 19 25 27 28 31 34 35 38 45 46 47 49 50 52 53 54 55
    56 57 58 59 70 74 78 80 81 82 83 84 85 86 89 91 92 93 94 95 97 98 100 103""".split()
)
XVIEW_TRAIN_CAMERAS = frozenset((2, 3))


@dataclass(frozen=True)
class NtuDataset:
    """What distinguishes NTU-60 from NTU-120."""

    name: str
    max_setup: int
    num_classes: int
    benchmarks: tuple[str, ...]
    num_files: int
    missing_resource: str
    # official (train, test) sizes after dropping the missing samples
    split_sizes: dict[str, tuple[int, int]]


NTU60 = NtuDataset(
    name="ntu60",
    max_setup=17,
    num_classes=60,
    benchmarks=("xsub", "xview"),
    num_files=56_880,
    missing_resource="ntu60_missing_skeletons.txt",
    split_sizes={"xsub": (40_091, 16_487), "xview": (37_646, 18_932)},
)
NTU120 = NtuDataset(
    name="ntu120",
    max_setup=32,
    num_classes=120,
    benchmarks=("xsub", "xset"),
    num_files=114_480,
    missing_resource="ntu120_missing_skeletons.txt",
    split_sizes={"xsub": (63_026, 50_919), "xset": (54_468, 59_477)},
)
DATASETS = {d.name: d for d in (NTU60, NTU120)}


@dataclass(frozen=True)
class NtuName:
    """The fields of a sample name ``SsssCcccPpppRrrrAaaa``."""

    setup: int
    camera: int
    performer: int
    replication: int
    action: int

    @property
    def label(self) -> int:
        """0-based class index (action - 1)."""
        return self.action - 1


def sample_name(filename: str) -> str:
    """Strip a directory and the ``.skeleton`` suffix."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return base[: -len(".skeleton")] if base.endswith(".skeleton") else base


def parse_name(name: str) -> NtuName:
    """Parse an NTU sample name (with or without ``.skeleton``); ValueError if it is not one."""
    match = NAME_RE.match(sample_name(name))
    if match is None:
        raise SampleNameError(f"{name!r} is not an NTU sample name ({NAME_HELP})")
    return NtuName(*(int(g) for g in match.groups()))


def is_train(name: NtuName, benchmark: str) -> bool:
    """Whether a sample belongs to the training part of ``benchmark``."""
    if benchmark == "xsub":
        return name.performer in XSUB_TRAIN_PERFORMERS
    if benchmark == "xview":
        return name.camera in XVIEW_TRAIN_CAMERAS
    if benchmark == "xset":
        return name.setup % 2 == 0
    raise SampleNameError(f"unknown NTU benchmark {benchmark!r}; expected xsub, xview or xset")


def missing_samples(dataset: str) -> frozenset[str]:
    """The official list of samples with missing or incomplete skeletons (302 / 535 names)."""
    spec = DATASETS[dataset]
    text = resources.files("halp.resources").joinpath(spec.missing_resource).read_text()
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


def split_names(names: list[str], dataset: str, benchmark: str) -> tuple[list[str], list[str]]:
    """Split sample names into (train, test) for a benchmark, dropping the missing samples.

    Names keep their input order. Raises ValueError for a name that is not an NTU name
    or is outside the dataset (setup or action too large).
    """
    spec = DATASETS[dataset]
    if benchmark not in spec.benchmarks:
        raise SampleNameError(f"{dataset} has benchmarks {spec.benchmarks}, not {benchmark!r}")
    missing = missing_samples(dataset)
    train: list[str] = []
    test: list[str] = []
    for raw in names:
        name = sample_name(raw)
        parsed = parse_name(name)
        check_in_dataset(parsed, name, spec)
        if name in missing:
            continue
        (train if is_train(parsed, benchmark) else test).append(name)
    return train, test


def check_in_dataset(parsed: NtuName, name: str, spec: NtuDataset) -> None:
    """ValueError when a parsed name lies outside ``spec`` (setup or action range)."""
    if not 1 <= parsed.setup <= spec.max_setup:
        raise SampleNameError(
            f"{name}: setup {parsed.setup} is outside {spec.name} (1..{spec.max_setup})"
        )
    if not 1 <= parsed.action <= spec.num_classes:
        raise SampleNameError(
            f"{name}: action {parsed.action} is outside {spec.name} (1..{spec.num_classes})"
        )


# ---------------------------------------------------------------------------- parser


MAX_DECLARED_FRAMES = 3000
"""The most frames an NTU file may declare: 10 times the longest clip of the dataset (300)."""


def _count(lines: list[str], i: int, origin: str, what: str, context: str) -> int:
    """Read the single integer on line ``i`` (0-based) or raise naming the line."""
    if i >= len(lines):
        raise RawFormatError(
            origin,
            len(lines),
            f"file ends before the {what} {context}: the file is truncated "
            "(re-extract it from the archive)",
        )
    fields = lines[i].split()
    if len(fields) != 1 or not fields[0].isdigit():
        raise RawFormatError(
            origin, i + 1, f"expected the {what} {context}, found {quote(lines[i])}"
        )
    return int(fields[0])


def _check_body_header(lines: list[str], i: int, origin: str, where: str) -> None:
    """Raise the precise error for a body starting on line ``i`` (0-based), if any."""
    if i >= len(lines):
        _count(lines, i, origin, "body line", f"of {where}")  # raises "truncated"
    if len(lines[i].split()) != 10:
        raise RawFormatError(
            origin, i + 1, f"a body line needs 10 values, found {len(lines[i].split())}"
        )
    joints = _count(lines, i + 1, origin, "joint count", f"of {where}")
    if joints != NUM_JOINTS:
        raise RawFormatError(origin, i + 2, f"joint count is {joints}, expected 25")
    if i + 2 + NUM_JOINTS > len(lines):
        raise RawFormatError(
            origin,
            len(lines),
            f"file ends inside the joints of {where}: the file is truncated "
            "(re-extract it from the archive)",
        )


def _locate_bad_joint_line(lines: list[str], starts: list[int], origin: str) -> RawFormatError:
    """Find the first malformed joint line (slow path, only after the fast path failed)."""
    for start in starts:
        for i in range(start, start + NUM_JOINTS):
            fields = lines[i].split()
            if len(fields) != 12:
                return RawFormatError(
                    origin,
                    i + 1,
                    f"a joint line needs 12 values, found {len(fields)}"
                    + (" (the file is truncated?)" if i == len(lines) - 1 else ""),
                )
            for value in fields:
                try:
                    float(value)
                except ValueError:
                    return RawFormatError(origin, i + 1, f"non-numeric value {value!r}")
            if not all(np.isfinite([float(v) for v in fields[:3]])):
                return RawFormatError(origin, i + 1, "non-finite coordinate")
    return RawFormatError(origin, 0, "malformed joint data")


def parse_skeleton(raw: bytes, origin: str) -> np.ndarray:
    """Parse the bytes of one ``.skeleton`` file into body slots.

    Args:
        raw: the file's bytes (CRLF or LF endings).
        origin: the file name used in error messages.

    Returns:
        float64 (4, F, 25, 3): slot ``m`` holds the m-th body listed in each frame
        (order of appearance, as the 2s-AGCN recipe); frames with fewer bodies are zero.

    Raises:
        RawFormatError: naming the file and line, for an empty or truncated file, a
            body count above 4, a joint count other than 25, a line with the wrong
            number of values, non-numeric or non-finite values, trailing data, or a
            file in which no frame holds a body.
    """
    if not raw.strip():
        raise RawFormatError(origin, 1, "empty file")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as err:
        raise RawFormatError(origin, raw[: err.start].count(b"\n") + 1, "non-ASCII byte") from None
    if raw.translate(None, _ALLOWED):  # cheap; the regex only runs to name the line
        bad = _BAD_CHAR.search(text)
        assert bad is not None
        line_no = text.count("\n", 0, bad.start()) + 1
        value = text[text.rfind("\n", 0, bad.start()) + 1 :].split("\n", 1)[0].strip()
        raise RawFormatError(
            origin, line_no, f"non-numeric field {bad.group()!r} in {quote(value)}"
        )
    lines = text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    blank = _BLANK_LINE.search(text.rstrip())
    if blank is not None:  # every later line would be misread: name this one
        line_no = text.count("\n", 0, blank.start()) + 2
        raise RawFormatError(origin, line_no, "blank line (the format has none)")
    num_frames = _count(lines, 0, origin, "frame count", "on line 1")
    if num_frames == 0:
        raise RawFormatError(origin, 1, "the frame count is 0")
    if num_frames > MAX_DECLARED_FRAMES:
        raise RawFormatError(
            origin, 1, f"declares {num_frames} frames, more than the {MAX_DECLARED_FRAMES} allowed"
        )
    if num_frames > len(lines) - 1:  # every frame takes at least its body-count line
        raise RawFormatError(
            origin,
            len(lines),
            f"file ends before its {num_frames} frames (only {len(lines) - 1} lines follow the "
            "frame count): the file is truncated (re-extract it from the archive)",
        )
    starts: list[int] = []  # 0-based line of each body's first joint
    slot_of: list[int] = []
    frame_of: list[int] = []
    i = 1
    n_lines = len(lines)
    for frame in range(num_frames):
        # fast checks inline; the helpers re-check slowly only to word the error
        if i >= n_lines or not lines[i].strip().isdigit():
            _count(lines, i, origin, "body count", f"of frame {frame + 1}/{num_frames}")
        num_bodies = int(lines[i])
        if num_bodies > MAX_BODY_SLOTS:
            raise RawFormatError(
                origin, i + 1, f"{num_bodies} bodies in frame {frame + 1}; at most {MAX_BODY_SLOTS}"
            )
        i += 1
        for body in range(num_bodies):
            if (
                i + 2 + NUM_JOINTS > n_lines
                or lines[i].count(" ") != 9
                or lines[i + 1].strip() != "25"
            ):
                where = f"body {body + 1} of frame {frame + 1}/{num_frames}"
                _check_body_header(lines, i, origin, where)
            starts.append(i + 2)
            slot_of.append(body)
            frame_of.append(frame)
            i += 2 + NUM_JOINTS
    if i < len(lines):
        raise RawFormatError(
            origin, i + 1, f"unexpected data after the last of {num_frames} frames"
        )
    if not starts:
        raise RawFormatError(origin, 1, f"no body in any of the {num_frames} frames")
    joint_lines: list[str] = []
    for start in starts:
        joint_lines += lines[start : start + NUM_JOINTS]
    # fast path: one space between 12 values; anything else gets the exact check
    if set(map(str.count, joint_lines, repeat(" "))) != {11} and any(
        len(line.split()) != 12 for line in joint_lines
    ):
        raise _locate_bad_joint_line(lines, starts, origin)
    try:
        xyz = np.loadtxt(joint_lines, usecols=(0, 1, 2), dtype=np.float64, ndmin=2)
    except ValueError:
        raise _locate_bad_joint_line(lines, starts, origin) from None
    if not np.isfinite(xyz).all():
        raise _locate_bad_joint_line(lines, starts, origin)
    bodies = np.zeros((MAX_BODY_SLOTS, num_frames, NUM_JOINTS, 3), dtype=np.float64)
    bodies[np.asarray(slot_of), np.asarray(frame_of)] = xyz.reshape(-1, NUM_JOINTS, 3)
    return bodies
