"""NW-UCLA (Northwestern-UCLA Multiview Action3D; Wang et al., CVPR 2014): the ``all_sqe`` release.

The release most skeleton papers use is one JSON file per clip,
``<aXX>_<sYY>_<eZZ>_<vWW>.json`` (action, subject 1-10, environment/repetition, view
1-3), holding ``file_name`` (the name without ``.json``), ``label`` (1-10) and
``skeletons``: frames x 20 joints x (x, y, z), metres in Kinect v1 camera space, one
person (layout ``kinect20`` of :mod:`halp.data.layouts`). 1,484 clips; 1 to 201 frames.

**Checks.** :func:`parse_clip` refuses, naming the file and what is wrong, a file that is
not JSON (e.g. truncated), lacks a key, names another clip in ``file_name`` (renamed or
edited), has a ``label`` that disagrees with its action code, or a frame that is not
20 x 3 finite numbers within :data:`MAX_ABS_METRES` of the camera (a unit mistake or an
edit). :func:`release_digest` hashes the files' bytes in name order; the manifest says
whether they are the known release (:data:`RELEASE_SHA256`).

**Splits.** ``xviewK`` tests on view K and trains on the two others (``xview3``, train
views 1+2 / test view 3, is the standard cross-view protocol: 1,020 / 464 clips).
``xviewK-val`` holds only the training views of ``xviewK``, split by subject: its
``test`` part is the clips of the validation subjects (:data:`VAL_SUBJECTS`, our
reading: s09 and s10, 191 of xview3's 1,020 training clips), its ``train`` part the
others, so encoders and schedules can be chosen without touching view K.

**Single-frame clips** (``a02_s09_e04_v02`` and ``_v03``): kept by default (the
1,020 / 464 protocol): a 1-frame clip is a still pose, its crop-resize repeats the frame
and its motion is zero. ``drop_single_frame`` leaves them out, Predict & Cluster's
1,019 / 463 protocol.

**Normalisation** (:func:`normalize_clip`, our reading for one-person Kinect v1 data):

1. Centring: every joint minus the spine joint (1) of the first frame, once for the
   whole clip, so the body's own displacement (walking, sitting down) is kept.
2. View alignment, from the first frame: a rotation turning the hip centre -> shoulder
   centre vector onto +y (up), then a rotation about +y turning the horizontal part of
   the left -> right shoulder vector onto +x, so every clip starts upright and facing
   the camera whatever the view. (The first frame with all five of these joints is
   used; with none, the clip is only centred.)
3. Length: the true frames are stored, zero-padded (or cut) to a fixed length
   (:data:`MAX_FRAMES` = 201, the longest clip); the true count goes into the index and
   the loaders crop and resize within it.

Missing joints (all three coordinates zero: 12 joint-frames in the release) stay zero.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from halp.data.layouts import KINECT20
from halp.data.skeleton import rotation_to
from halp.errors import RawFormatError

NUM_CLASSES = 10
NUM_FILES = 1484
MAX_FRAMES = 201
"""Stored frames per clip: the release's longest clip."""
MAX_ABS_METRES = 10.0
"""The largest coordinate accepted (Kinect v1 sees 0.8-4 m; the release stays within 5.1)."""
RELEASE_SHA256 = "9e76489501f961f2643edb24ad962b9e6e8f313185e1bf9699f0ccbb634e2397"
"""sha256 of the 1,484 files' bytes concatenated in sorted name order."""

ACTION_LABELS = {1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 8: 6, 9: 7, 11: 8, 12: 9}
"""Action code (``aXX``) -> 0-based label; the files' ``label`` field is this plus 1."""
ACTION_NAMES = (
    "pick up with one hand", "pick up with two hands", "drop trash", "walk around",
    "sit down", "stand up", "donning", "doffing", "throw", "carry",
)  # fmt: skip
VIEWS = (1, 2, 3)
SUBJECTS = tuple(range(1, 11))
VAL_SUBJECTS = (9, 10)
"""Subjects of the validation benchmarks' test part (our reading: the last two)."""
BENCHMARKS = tuple(f"xview{v}" for v in VIEWS)
VAL_SUFFIX = "-val"

# the 2014 release's split sizes (train, test) per benchmark, single-frame clips kept
SPLIT_SIZES = {"xview1": (968, 516), "xview2": (980, 504), "xview3": (1020, 464)}

_NAME = re.compile(r"a(\d{2})_s(\d{2})_e(\d{2})_v(\d{2})")
_KEYS = ("file_name", "label", "skeletons")


@dataclass(frozen=True)
class ClipName:
    """The parts of a clip's name."""

    action: int
    subject: int
    repetition: int
    view: int

    @property
    def label(self) -> int:
        """The 0-based class."""
        return ACTION_LABELS[self.action]


def parse_name(name: str) -> ClipName:
    """``a01_s01_e00_v01`` -> its action, subject, repetition and view.

    Raises:
        ValueError: for a name of another form, an unknown action, subject or view.
    """
    match = _NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"{name!r} is not an NW-UCLA clip name (aXX_sYY_eZZ_vWW)")
    clip = ClipName(*(int(g) for g in match.groups()))
    if clip.action not in ACTION_LABELS:
        codes = ", ".join(f"a{a:02d}" for a in ACTION_LABELS)
        raise ValueError(f"{name}: action a{clip.action:02d} is not one of NW-UCLA's ({codes})")
    if clip.subject not in SUBJECTS:
        raise ValueError(f"{name}: subject s{clip.subject:02d} is not one of s01-s10")
    if clip.view not in VIEWS:
        raise ValueError(f"{name}: view v{clip.view:02d} is not one of v01-v03")
    return clip


def parse_clip(raw: bytes, origin: str, name: str) -> np.ndarray:
    """Parse and check one ``all_sqe`` JSON file into float64 (T, 20, 3) joints.

    Args:
        raw: The file's bytes.
        origin: How the file is named in messages.
        name: The clip name (the file name without ``.json``), already checked by
            :func:`parse_name`.

    Raises:
        RawFormatError: naming ``origin`` (and the line or frame) for anything that is
            not a well-formed clip of that name (module docstring).
    """
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise RawFormatError(
            origin, 0, f"not UTF-8 text ({err.reason}): not an all_sqe file"
        ) from None
    except json.JSONDecodeError as err:
        raise RawFormatError(
            origin, err.lineno, f"not valid JSON ({err.msg}, column {err.colno}): truncated?"
        ) from None
    if not isinstance(data, dict):
        raise RawFormatError(origin, 1, f"a JSON {type(data).__name__}, not an all_sqe object")
    missing = [k for k in _KEYS if k not in data]
    if missing:
        raise RawFormatError(
            origin, 1, f"no {', '.join(map(repr, missing))} key: not an all_sqe clip file"
        )
    if data["file_name"] != name:
        raise RawFormatError(
            origin, 1, f"file_name is {data['file_name']!r}, not {name!r}: renamed or edited"
        )
    expected = parse_name(name).label + 1
    label = data["label"]
    if not isinstance(label, int) or isinstance(label, bool) or label != expected:
        raise RawFormatError(
            origin,
            1,
            f"label {label!r} disagrees with the action code of {name} (label {expected})",
        )
    frames = data["skeletons"]
    if not isinstance(frames, list) or not frames:
        raise RawFormatError(origin, 1, "'skeletons' is not a non-empty list of frames")
    joints = KINECT20.num_joints
    for t, frame in enumerate(frames):
        ok = (
            isinstance(frame, list)
            and len(frame) == joints
            and all(isinstance(j, list) and len(j) == 3 for j in frame)
        )
        if not ok:
            raise RawFormatError(
                origin, 1, f"frame {t}: expected {joints} joints of 3 coordinates each"
            )
    for t, frame in enumerate(frames):
        if not all(_is_number(c) for j in frame for c in j):
            raise RawFormatError(origin, 1, f"frame {t}: a coordinate is not a number")
    array = np.array(frames, dtype=np.float64)
    if not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array).all(axis=(1, 2)))[0])
        raise RawFormatError(origin, 1, f"frame {bad}: a coordinate is NaN or infinite")
    too_far = np.abs(array).max(axis=(1, 2)) > MAX_ABS_METRES
    if too_far.any():
        bad = int(np.flatnonzero(too_far)[0])
        raise RawFormatError(
            origin,
            1,
            f"frame {bad}: a coordinate beyond {MAX_ABS_METRES:g} m of the camera "
            "(not metres, or edited)",
        )
    return array


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ----------------------------------------------------------------- normalisation

HIP_CENTRE, SPINE, SHOULDER_CENTRE = 0, 1, 2
LEFT_SHOULDER, RIGHT_SHOULDER = 4, 8
_ALIGN_JOINTS = (HIP_CENTRE, SPINE, SHOULDER_CENTRE, LEFT_SHOULDER, RIGHT_SHOULDER)


def alignment(frame: np.ndarray) -> np.ndarray:
    """The 3x3 rotation that stands one (20, 3) frame upright, facing the camera.

    First the hip centre -> shoulder centre vector turns onto +y, then a rotation about
    +y turns the horizontal part of the left -> right shoulder vector onto +x.
    """
    up = rotation_to(frame[SHOULDER_CENTRE] - frame[HIP_CENTRE], np.array([0.0, 1.0, 0.0]))
    across = up @ (frame[RIGHT_SHOULDER] - frame[LEFT_SHOULDER])
    yaw = math.atan2(float(across[2]), float(across[0]))  # angle of (x, z) from +x
    c, s = math.cos(yaw), math.sin(yaw)
    # about +y by +yaw: takes (cos yaw, ., sin yaw) to (1, ., 0) up to length
    turn = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    return turn @ up


def normalize_clip(joints: np.ndarray) -> np.ndarray:
    """Centre and align one clip (T, 20, 3) as the module docstring says (a new float64 array).

    Joints whose three coordinates are all zero (missing) stay zero.
    """
    x = np.array(joints, dtype=np.float64, copy=True)
    present = (x != 0).any(axis=-1)  # (T, V)
    complete = present[:, _ALIGN_JOINTS].all(axis=1)
    if complete.any():
        first = x[int(np.flatnonzero(complete)[0])]
        x -= first[SPINE]
        x = x @ alignment(first - first[SPINE]).T
    else:  # no frame holds the joints to align with: centre on the first present joint
        if present.any():
            t, v = np.argwhere(present)[0]
            x -= x[t, v]
    x[~present] = 0.0
    return x


def to_sample(joints: np.ndarray, num_frames: int = MAX_FRAMES) -> np.ndarray:
    """(T, 20, 3) normalised joints -> the stored float32 (3, num_frames, 20, 1) array."""
    out = np.zeros((3, num_frames, joints.shape[1], KINECT20.persons), dtype=np.float32)
    keep = min(num_frames, joints.shape[0])
    out[:, :keep, :, 0] = joints[:keep].transpose(2, 0, 1)
    return out


# ----------------------------------------------------------------- splits


def benchmarks(with_val: bool = True) -> tuple[str, ...]:
    """The benchmark names: ``xview1..3`` and, with ``with_val``, ``xview1..3-val``."""
    return BENCHMARKS + (tuple(b + VAL_SUFFIX for b in BENCHMARKS) if with_val else ())


def part_of(clip: ClipName, benchmark: str, val_subjects: tuple[int, ...]) -> str | None:
    """``train``, ``test`` or None (not in the benchmark) for a clip."""
    test_view = int(benchmark.removesuffix(VAL_SUFFIX).removeprefix("xview"))
    if not benchmark.endswith(VAL_SUFFIX):
        return "test" if clip.view == test_view else "train"
    if clip.view == test_view:
        return None  # a validation benchmark never holds the test view
    return "test" if clip.subject in val_subjects else "train"


def release_digest(chunks: Iterable[bytes]) -> str:
    """sha256 of the files' bytes concatenated (give them in sorted name order)."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()
