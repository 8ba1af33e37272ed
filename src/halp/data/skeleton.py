"""The Kinect v2 skeleton layout and the 2s-AGCN normalisation recipe (paper Sec. 4.1).

Everything about joints and bones is defined here exactly once. Arrays follow the
(C, T, V, M) convention of the field: C = 3 coordinates, T frames, V = 25 joints,
M = 2 persons.
"""

from __future__ import annotations

import math

import numpy as np

NUM_JOINTS = 25
NUM_COORDS = 3
NUM_PERSONS = 2
MAX_BODY_SLOTS = 4
MAX_FRAMES = 300

SPINE_BASE = 0
SPINE_MID = 1
LEFT_SHOULDER = 4
RIGHT_SHOULDER = 8

JOINT_NAMES: tuple[str, ...] = (
    "spine_base", "spine_mid", "neck", "head", "left_shoulder", "left_elbow", "left_wrist",
    "left_hand", "right_shoulder", "right_elbow", "right_wrist", "right_hand", "left_hip",
    "left_knee", "left_ankle", "left_foot", "right_hip", "right_knee", "right_ankle",
    "right_foot", "spine_shoulder", "left_hand_tip", "left_thumb", "right_hand_tip",
    "right_thumb",
)  # fmt: skip

# (child, parent) pairs, 1-based as in the NTU RGB+D joint numbering; (21, 21) gives a zero bone.
_BONES_1BASED = (
    (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
    (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
    (20, 19), (21, 21), (22, 23), (23, 8), (24, 25), (25, 12),
)  # fmt: skip
BONE_CHILD = np.array([c - 1 for c, _ in _BONES_1BASED], dtype=np.int64)
BONE_PARENT = np.array([p - 1 for _, p in _BONES_1BASED], dtype=np.int64)


def select_bodies(slots: np.ndarray, num_persons: int = NUM_PERSONS) -> np.ndarray:
    """Keep the ``num_persons`` body slots with the most motion energy, highest first.

    Args:
        slots: (S, T, V, 3) joints per body slot in order of appearance; all-zero
            rows mark frames where the slot holds no body.
        num_persons: How many persons to keep (2).

    Returns:
        (num_persons, T, V, 3) array; missing persons are zero.

    Energy of a slot is ``std(x) + std(y) + std(z)`` over its valid frames and all
    joints (a frame is valid when its joint sum is non-zero); an empty slot has 0.
    Ties keep the earlier slot first (a stable sort), as the reference recipe does.
    """
    num_slots, num_frames = slots.shape[:2]
    valid = slots.sum(axis=(2, 3)) != 0  # (S, T)
    energy = np.zeros(num_slots, dtype=np.float64)
    for s in range(num_slots):
        if valid[s].any():
            pts = slots[s, valid[s]].reshape(-1, 3)
            energy[s] = pts.std(axis=0).sum()
    order = np.argsort(-energy, kind="stable")[:num_persons]
    out = np.zeros((num_persons, num_frames, slots.shape[2], 3), dtype=slots.dtype)
    out[: len(order)] = slots[order]
    return out


def rotation_to(v: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 3x3 rotation turning direction ``v`` onto direction ``target``.

    Rodrigues' formula about ``cross(v, target)``. Returns the identity when ``v`` is
    (near) zero or already parallel to ``target``, as the reference does; for an
    antiparallel ``v`` it turns by pi about an axis orthogonal to ``target``.
    """
    # plain floats: this runs twice per sample, where numpy's per-call overhead dominates
    vx, vy, vz = (float(c) for c in v)
    tx, ty, tz = (float(c) for c in target)
    nv = math.sqrt(vx * vx + vy * vy + vz * vz)
    nt = math.sqrt(tx * tx + ty * ty + tz * tz)
    if nv < 1e-6 or nt < 1e-6:
        return np.eye(3)
    a = (vx / nv, vy / nv, vz / nv)
    b = (tx / nt, ty / nt, tz / nt)
    axis = _cross(a, b)
    s = math.sqrt(sum(x * x for x in axis))
    c = min(1.0, max(-1.0, a[0] * b[0] + a[1] * b[1] + a[2] * b[2]))
    if s < 1e-6:
        if c > 0:
            return np.eye(3)
        # antiparallel: rotate by pi about any axis orthogonal to b
        helper = (1.0, 0.0, 0.0) if abs(b[0]) < 0.9 else (0.0, 1.0, 0.0)
        u = np.array(_cross(b, helper))
        u /= np.linalg.norm(u)
        return 2.0 * np.outer(u, u) - np.eye(3)
    k0, k1, k2 = (x / s for x in axis)
    kx = np.array([[0.0, -k2, k1], [k2, 0.0, -k0], [-k1, k0, 0.0]])
    return np.eye(3) + s * kx + (1.0 - c) * (kx @ kx)


def _cross(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, float, float]:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _loop_pad(person: np.ndarray, compaction: str) -> None:
    """Compact (optionally) and loop-pad one person's (T, V, 3) frames in place."""
    valid = person.sum(axis=(1, 2)) != 0
    if not valid.any():
        return
    num_frames = person.shape[0]
    if compaction == "all" or not valid[0]:
        frames = person[valid].copy()
    else:  # "leading": 2s-AGCN keeps inner gaps when frame 0 is valid
        last = int(np.flatnonzero(valid)[-1]) + 1
        frames = person[:last].copy()
    reps = -(-num_frames // len(frames))
    person[:] = np.concatenate([frames] * reps, axis=0)[:num_frames]


def normalize(skeleton: np.ndarray, compaction: str = "all") -> np.ndarray:
    """Apply the 2s-AGCN ``pre_normalization`` to one sample, vectorised.

    Args:
        skeleton: (M, T, V, 3) persons x frames x joints x xyz; all-zero frames are
            missing. Not modified. T is the padded length (300 for NTU).
        compaction: ``"all"`` (default, the recipe as documented in docs/data/index.md) moves
            every valid frame of a person to the front before loop padding.
            ``"leading"`` is the 2s-AGCN code's behaviour: it compacts only when frame 0
            is empty, so gaps inside a sequence stay and are repeated by the padding.

    Returns:
        A new float32 (M, T, V, 3) array where, per person, the valid frames are
        loop-padded to T; every joint is centred on person 0's spine middle in the
        same frame; and the sample is rotated so that person 0's spine-base ->
        spine-middle bone in frame 0 points along +z, then so that the right -> left
        shoulder vector in frame 0 points along +x. Joints that are zero after padding
        stay exactly zero. A sample with no body at all is returned as zeros.
    """
    if compaction not in ("all", "leading"):
        raise ValueError(f"compaction must be 'all' or 'leading', got {compaction!r}")
    return _normalize_inplace(np.array(skeleton, dtype=np.float64, copy=True), compaction)


def _normalize_inplace(x: np.ndarray, compaction: str) -> np.ndarray:
    """``normalize`` on a float64 array it may overwrite."""
    for person in x:
        _loop_pad(person, compaction)
    # a joint is present when its coordinates do not sum to 0 (the recipe's test)
    present = (x[..., 0] + x[..., 1] + x[..., 2]) != 0  # (M, T, V)
    x -= x[0, :, SPINE_MID : SPINE_MID + 1, :][None]  # centre per frame on person 0
    x *= present[..., None]
    # both rotations come from person 0 in frame 0; applied at once as R = r2 r1
    r1 = rotation_to(x[0, 0, SPINE_MID] - x[0, 0, SPINE_BASE], np.array([0.0, 0.0, 1.0]))
    shoulders = r1 @ (x[0, 0, RIGHT_SHOULDER] - x[0, 0, LEFT_SHOULDER])
    r2 = rotation_to(shoulders, np.array([1.0, 0.0, 0.0]))
    rotated = x.reshape(-1, 3) @ (r2 @ r1).T  # rotating a zero joint keeps it zero
    return rotated.reshape(x.shape).astype(np.float32)


def fit_frames(skeleton: np.ndarray, num_frames: int = MAX_FRAMES) -> np.ndarray:
    """Zero-pad or truncate (M, T, V, 3) along time to ``num_frames`` (a new float64 array)."""
    m, t, v, c = skeleton.shape
    out = np.zeros((m, num_frames, v, c), dtype=np.float64)
    keep = min(t, num_frames)
    out[:, :keep] = skeleton[:, :keep]
    return out


def to_ctvm(skeleton: np.ndarray) -> np.ndarray:
    """(M, T, V, 3) -> float32 (3, T, V, M), the on-disk layout."""
    return np.ascontiguousarray(skeleton.transpose(3, 1, 2, 0), dtype=np.float32)


def process_sample(
    bodies: np.ndarray,
    num_frames: int = MAX_FRAMES,
    rank_by_energy: bool = True,
    compaction: str = "all",
) -> np.ndarray:
    """Body slots (S, T, V, 3) -> the normalised (3, num_frames, V, 2) training array.

    NTU ranks its up to 4 slots by motion energy (``rank_by_energy``); PKU-MMD keeps
    its two bodies in file order, as the reference generators do.
    """
    persons = select_bodies(bodies) if rank_by_energy else bodies[:NUM_PERSONS]
    if persons.shape[0] < NUM_PERSONS:
        pad = np.zeros((NUM_PERSONS - persons.shape[0], *persons.shape[1:]), persons.dtype)
        persons = np.concatenate([persons, pad])
    if compaction not in ("all", "leading"):
        raise ValueError(f"compaction must be 'all' or 'leading', got {compaction!r}")
    return to_ctvm(_normalize_inplace(fit_frames(persons, num_frames), compaction))
