"""The CrosSCLR / AimCLR data recipe (``halp prepare ... --recipe crossclr``).

CrosSCLR (Li et al., CVPR 2021), AimCLR (Guo et al., AAAI 2022) and HiCLR (Zhang et al.,
AAAI 2023) train on arrays made in two released stages, reproduced here per sample:

1. the st-gcn generator keeps the first two bodies listed in each frame, in file order
   (no motion-energy ranking, no denoising), in a 300-frame array;
2. the released preprocessing (``data_type='relative'``, ``t_length=50``,
   ``y_rotation=True``, ``sampling='resize'``) centres every frame on NTU joint 21
   (spine shoulder), resizes the sequence linearly to 50 frames and rotates each body,
   frame by frame, about the vertical axis so that its shoulders lie along x.

See :func:`crossclr_sample` for the exact steps. The 2s-AGCN recipe the HaLP paper uses
(Sec. 4.1) lives in :mod:`halp.data.skeleton`; the two give arrays of the same layout,
(3, T, 25, 2), that must not be mixed (``halp.data.storage.check_recipe``).
"""

from __future__ import annotations

import numpy as np

from halp.data.augment import linear_resize
from halp.data.skeleton import (
    JOINT_NAMES,
    LEFT_SHOULDER,
    MAX_FRAMES,
    NUM_COORDS,
    NUM_JOINTS,
    NUM_PERSONS,
    RIGHT_SHOULDER,
    SPINE_BASE,
)
from halp.errors import RawFormatError

RECIPE = "crossclr"
OUT_FRAMES = 50
"""Frames of every prepared sample (the released ``t_length``)."""

CENTRE_JOINT = JOINT_NAMES.index("spine_shoulder")  # 20: NTU joint 21
EPS = 1e-4
"""Added to the shoulder vector's length before the arccos, as released."""


def first_two_bodies(slots: np.ndarray, max_frames: int = MAX_FRAMES) -> np.ndarray:
    """Body slots (S, F, 25, 3) -> float64 (3, min(F, max_frames), 25, 2), as st-gcn stores them.

    Slot ``m`` is the m-th body listed in each frame (``halp.data.ntu.parse_skeleton``);
    the first two are kept in that order, zero where a frame lists fewer bodies.
    """
    num_frames = min(slots.shape[1], max_frames)
    out = np.zeros((NUM_COORDS, num_frames, NUM_JOINTS, NUM_PERSONS), dtype=np.float64)
    kept = slots[:NUM_PERSONS, :num_frames]  # (<=2, T, V, 3)
    out[..., : len(kept)] = kept.transpose(3, 1, 2, 0)
    return out


def sequence_length(x: np.ndarray) -> int:
    """Frames of (3, T, V, M) whose body 0 has a non-zero spine base (joint 1).

    A count, not a position: frames of body 0 missing at the start reduce it, and the
    recipe still resizes the *first* ``length`` frames, as released.
    """
    return int((x[:, :, SPINE_BASE, 0] != 0).any(axis=0).sum())


def centre_on_joint(x: np.ndarray, joint: int = CENTRE_JOINT) -> np.ndarray:
    """Subtract ``joint`` of the same frame and body from every joint (a new array).

    A body absent in a frame (all zero) stays zero.
    """
    return x - x[:, :, joint : joint + 1, :]


def align_shoulders(x: np.ndarray) -> np.ndarray:
    """Rotate each body of (3, T, V, M), frame by frame, about the y axis (a new float64 array).

    Per body and frame, ``v`` is the left -> right shoulder vector (joint 9 minus joint 5)
    with its y component set to 0 and ``theta = arccos(v_x / (|v| + 1e-4))``, in
    [0, pi]. One sign serves the whole sequence: ``theta`` is negated when the body's
    ``v_z`` summed over frames is >= 0. Each point is then multiplied by
    ``[[cos, 0, -sin], [0, 1, 0], [sin, 0, cos]]``. In frames whose ``v_z`` has the
    sequence's sign this turns the shoulders onto +x (up to the 1e-4); in the others it
    mirrors them about x instead, as the released code does. Zero joints stay zero.
    """
    vec = x[:, :, RIGHT_SHOULDER] - x[:, :, LEFT_SHOULDER]  # (3, T, M)
    vx, vz = vec[0].astype(np.float64), vec[2].astype(np.float64)
    theta = np.arccos(vx / (np.sqrt(vx * vx + vz * vz) + EPS))  # (T, M)
    theta = np.where(vz.sum(axis=0) >= 0, -theta, theta)  # one sign per body
    cos, sin = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]  # (T, 1, M)
    out = np.empty(x.shape, dtype=np.float64)
    out[0] = cos * x[0] - sin * x[2]
    out[1] = x[1]
    out[2] = sin * x[0] + cos * x[2]
    return out


def crossclr_sample(
    slots: np.ndarray,
    origin: str,
    out_frames: int = OUT_FRAMES,
    max_frames: int = MAX_FRAMES,
) -> np.ndarray:
    """Body slots (S, F, 25, 3) -> the crossclr training array, float32 (3, out_frames, 25, 2).

    1. :func:`first_two_bodies` of the first ``min(F, max_frames)`` frames;
    2. ``length`` = :func:`sequence_length`, on the raw coordinates;
    3. :func:`centre_on_joint` 21, in every frame of both bodies;
    4. the first ``length`` frames of both bodies resized linearly to ``out_frames``
       (half-pixel centres, as ``cv2.resize(INTER_LINEAR)`` along time;
       :func:`halp.data.augment.linear_resize`, float32 as released);
    5. :func:`align_shoulders`, per body.

    Every stored frame holds data, so a sample's valid length is ``out_frames``.

    Raises:
        RawFormatError: naming ``origin`` when body 0 has no frame with a non-zero spine
            base (``length`` 0: nothing to resize).
    """
    x = first_two_bodies(slots, max_frames)
    length = sequence_length(x)
    if length == 0:
        raise RawFormatError(
            origin,
            0,
            f"the first body listed has a zero spine base in every one of the first "
            f"{x.shape[1]} frames; the crossclr recipe resizes that body's frames and "
            "cannot use this file",
        )
    resized = linear_resize(centre_on_joint(x)[:, :length], out_frames)
    return align_shoulders(resized).astype(np.float32)
