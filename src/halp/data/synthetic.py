"""A small synthetic dataset written in the real raw formats of NTU RGB+D, PKU-MMD II and NW-UCLA.

It is the embedded default dataset of smoke runs and tests, so that nothing needs the real
data. Files are byte-compatible with the originals (the datasets' published formats):
NTU ``.skeleton`` files with CRLF endings, PKU-MMD phase II skeleton/label/split files.

Motion model: a 25-joint Kinect v2 rest pose is animated by forward kinematics. Each class
owns a fixed set of sinusoidal joint rotations (which limbs move, their mean posture,
amplitude, frequency and phase), drawn from an RNG seeded by ``(seed, class)``; every
third class is a two-person class. Each sample varies the performer's body size, the
camera yaw, position, speed, phase, amplitudes and length, and adds 1 cm joint noise.
Optionally (``synth_ntu(lost_joints=K)``) each sample also loses up to ``K`` joints, which
the file then holds as zeros (missing data, as the 2s-AGCN recipe reads it).
Every random draw comes from ``np.random.default_rng`` seeded by ``seed`` and the
sample's identity, so the same arguments give the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from halp.errors import UsageError

FPS = 30.0
NOISE_M = 0.01  # Gaussian joint noise, metres
NTU_TRAIN_PERFORMERS = (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
NTU_TEST_PERFORMERS = (3, 6, 7, 10, 11, 12, 20, 21, 22, 23, 24, 26, 29, 30, 32, 33, 36, 37, 39, 40)
NTU_CAMERA_YAW_DEG = {1: 0.0, 2: 45.0, 3: -45.0}
PKU_VIEW_YAW_DEG = {"L": 45.0, "M": 0.0, "R": -45.0}
PKU_PERFORMERS = (1, 2, 3)  # A01, A02 train and A03 test in the cross-subject split
PKU_TEST_PERFORMER = 3
PKU_TEST_VIEW = "L"
PKU_MAX_PER_VIDEO = 6

# Rest pose in metres, spine base at the origin, facing the camera (-z). Kinect reports a
# mirrored body: the person's left side is at -x, as in the real files.
REST_POSE = np.array([
    [0.0, 0.0, 0.0], [0.0, 0.27, 0.0], [0.0, 0.52, 0.0], [0.0, 0.65, -0.01],
    [-0.18, 0.44, 0.0], [-0.22, 0.17, 0.02], [-0.24, -0.07, 0.0], [-0.245, -0.14, 0.0],
    [0.18, 0.44, 0.0], [0.22, 0.17, 0.02], [0.24, -0.07, 0.0], [0.245, -0.14, 0.0],
    [-0.09, -0.02, 0.0], [-0.10, -0.43, 0.0], [-0.10, -0.82, 0.03], [-0.10, -0.86, -0.08],
    [0.09, -0.02, 0.0], [0.10, -0.43, 0.0], [0.10, -0.82, 0.03], [0.10, -0.86, -0.08],
    [0.0, 0.45, 0.0], [-0.25, -0.22, 0.0], [-0.21, -0.15, -0.03],
    [0.25, -0.22, 0.0], [0.21, -0.15, -0.03],
])  # fmt: skip
PARENT = (-1, 0, 20, 2, 20, 4, 5, 6, 20, 8, 9, 10, 0, 12, 13, 14, 0, 16, 17, 18, 1, 7, 7, 11, 11)
_FK_ORDER = (0, 1, 20, 2, 3, 4, 5, 6, 7, 21, 22, 8, 9, 10, 11, 23, 24,
             12, 13, 14, 15, 16, 17, 18, 19)  # fmt: skip  # parents first
_LEAVES = (3, 15, 19, 21, 22, 23, 24)  # Kinect writes a zero orientation for these
# joints a sample may lose: all but spine base, spine middle and the shoulders, which the
# normalisation needs (centring, and the rotation of frame 0)
_LOSABLE = tuple(j for j in range(25) if j not in (0, 1, 4, 8))

# Joints a class may rotate: (joint, max |mean angle| and max amplitude per Euler axis in
# rad, hinge sign: +1/-1 keeps the mean angle on one side like an elbow or knee, 0 free).
_ACTUATORS = {
    "torso": ((1, (0.3, 0.3, 0.2), (0.3, 0.4, 0.2), 0), (2, (0.3, 0.3, 0.2), (0.4, 0.5, 0.3), 0)),
    "left_arm": ((4, (1.2, 0.6, 1.2), (1.2, 0.6, 1.2), 0), (5, (1.4, 0, 0), (1.0, 0, 0), 1)),
    "right_arm": ((8, (1.2, 0.6, 1.2), (1.2, 0.6, 1.2), 0), (9, (1.4, 0, 0), (1.0, 0, 0), 1)),
    "legs": (
        (12, (0.5, 0.2, 0.3), (0.7, 0.2, 0.3), 0), (13, (1.0, 0, 0), (0.8, 0, 0), -1),
        (16, (0.5, 0.2, 0.3), (0.7, 0.2, 0.3), 0), (17, (1.0, 0, 0), (0.8, 0, 0), -1),
    ),
    "turn": ((0, (0, 0, 0), (0, 0.6, 0), 0),),
}  # fmt: skip


@dataclass(frozen=True)
class Motion:
    """One person's class-specific motion: Euler angles ``offset + amp * sin(...)``."""

    joints: np.ndarray  # (A,) actuated joints
    offset: np.ndarray  # (A, 3) mean Euler angles, rad
    amp: np.ndarray  # (A, 3) amplitudes, rad
    freq: np.ndarray  # (A,) Hz
    phase: np.ndarray  # (A, 3) rad
    root_amp: np.ndarray  # (3,) sway of the whole body, metres
    root_freq: float  # Hz


_NONE = np.zeros((0, 3))
IDLE = Motion(np.zeros(0, np.int64), _NONE, _NONE, np.zeros(0), _NONE, np.full(3, 0.01), 0.3)


def _person_motion(rng: np.random.Generator) -> Motion:
    """Draw one person's motion: 1–3 active limb groups, small static posture elsewhere."""
    names = list(_ACTUATORS)
    active = set(rng.choice(names, size=rng.integers(1, 4), replace=False).tolist())
    specs = [(g in active, *spec) for g in names for spec in _ACTUATORS[g]]
    on, joints, off_lim, amp_lim, hinge = (np.array(col) for col in zip(*specs, strict=True))
    on, hinge, n = on[:, None], hinge[:, None], len(specs)
    offset = rng.uniform(-1, 1, (n, 3)) * off_lim * np.where(on, 1.0, 0.15)
    offset = np.where(hinge != 0, hinge * np.abs(offset), offset)  # elbows/knees bend one way
    amp = rng.uniform(0.4, 1, (n, 3)) * amp_lim * on
    root = rng.uniform(0, 1, 3) * (0.3, 0.08, 0.3) if rng.random() < 0.3 else np.full(3, 0.01)
    freq, phase = rng.uniform(0.3, 1.5, n), rng.uniform(0, 2 * np.pi, (n, 3))
    return Motion(joints, offset, amp, freq, phase, root, rng.uniform(0.2, 0.6))


def is_two_person(cls: int) -> bool:
    """Every third class (2, 5, 8, ...) shows two interacting people."""
    return cls % 3 == 2


def class_motions(cls: int, seed: int = 0) -> tuple[Motion, ...]:
    """The fixed motion(s) of class ``cls`` (0-based): one per person in the class."""
    rng = np.random.default_rng([seed, 0, cls])
    return tuple(_person_motion(rng) for _ in range(2 if is_two_person(cls) else 1))


def subject_scale(subject: int, seed: int = 0) -> float:
    """Body size of a performer, fixed per (seed, subject), in [0.85, 1.15]."""
    return float(np.random.default_rng([seed, 1, subject]).uniform(0.85, 1.15))


def _rotation(ang: np.ndarray) -> np.ndarray:
    """(..., 3) Euler angles (about x, y, z) -> (..., 3, 3) rotations Rz @ Ry @ Rx."""
    ca, cb, cc = np.moveaxis(np.cos(ang), -1, 0)
    sa, sb, sc = np.moveaxis(np.sin(ang), -1, 0)
    rows = (
        (cb * cc, sa * sb * cc - ca * sc, ca * sb * cc + sa * sc),
        (cb * sc, sa * sb * sc + ca * cc, ca * sb * sc - sa * cc),
        (-sb, sa * cb, ca * cb),
    )
    return np.stack([np.stack(np.broadcast_arrays(*r), -1) for r in rows], -2)


def _forward_kinematics(rest: np.ndarray, local: np.ndarray) -> np.ndarray:
    """Joint positions (T, 25, 3) from a rest pose (25, 3) and local rotations (T, 25, 3, 3)."""
    pos = np.zeros((*local.shape[:2], 3))
    glob = np.empty_like(local)
    for j in _FK_ORDER:
        p = PARENT[j]
        if p < 0:
            glob[:, j] = local[:, j]
            continue
        pos[:, j] = pos[:, p] + glob[:, p] @ (rest[j] - rest[p])
        glob[:, j] = glob[:, p] @ local[:, j]
    return pos


def render(
    motions: tuple[Motion, ...],
    num_frames: int,
    *,
    scale: float,
    camera: np.ndarray,
    position: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Camera-space joints (bodies, T, 25, 3) in metres of one performance.

    ``scale`` is the performer's body size, ``camera`` the (3, 3) rotation from the scene
    to the camera (see ``camera_rotation``), ``position`` where the scene centre lands in
    camera space. ``rng`` draws the speed, phase, amplitudes, partner distance and noise.
    With ``motions = class_motions(cls, seed)`` and ``scale = subject_scale(subject, seed)``
    this renders one sample of (class, subject, camera).
    """
    tau = np.arange(num_frames) / FPS * rng.uniform(0.8, 1.25)  # speed
    shift = rng.uniform(0, 2 * np.pi)
    gap = rng.uniform(0.8, 1.2) if len(motions) > 1 else 0.0
    bodies = []
    for m, mo in enumerate(motions):
        wave = np.sin(2 * np.pi * mo.freq[:, None] * tau[:, None, None] + mo.phase + shift)
        amp = mo.amp * rng.uniform(0.85, 1.15, (len(mo.joints), 1))
        local = np.broadcast_to(np.eye(3), (num_frames, 25, 3, 3)).copy()
        local[:, mo.joints] = _rotation(mo.offset + amp * wave)  # (T, A, 3) angles
        pts = _forward_kinematics(REST_POSE * scale, local)
        pts += (mo.root_amp * np.sin(2 * np.pi * mo.root_freq * tau[:, None] + shift))[:, None]
        side = (m - (len(motions) - 1) / 2) * gap  # people stand side by side along x
        pts = pts @ _rotation(np.array([0.0, 0.4 * side, 0.0])).T + (side, 0.0, 0.0)
        bodies.append(pts)
    joints = np.stack(bodies) @ camera.T + position
    return joints + rng.normal(0, NOISE_M, joints.shape)


def camera_rotation(yaw_deg: float, rng: np.random.Generator) -> np.ndarray:
    """A camera at ``yaw_deg`` about the vertical axis, with ~3° random yaw and tilt."""
    yaw = np.deg2rad(yaw_deg) + rng.normal(0, 0.05)
    return _rotation(np.array([rng.normal(0, 0.05), 0, 0])) @ _rotation(np.array([0, yaw, 0]))


def _random_position(rng: np.random.Generator) -> np.ndarray:
    """Where the spine base of a scene lands in camera space (z is depth, 2.6–3.4 m)."""
    return np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.1, 0.2), rng.uniform(2.6, 3.4)])


# ---------------------------------------------------------------------------------- NTU

_JOINT_LINE = "%.7g " * 11 + "2"  # x y z depthX depthY colorX colorY orientWXYZ tracking
_BODY_BLOCK = "\r\n".join([_JOINT_LINE] * 25)
# bodyID clippedEdges handLeftConf/State handRightConf/State isRestricted leanX leanY tracking
_BODY_LINE = "%d 0 1 1 1 1 0 %.7g %.7g 2"


def ntu_text(joints: np.ndarray, rng: np.random.Generator) -> str:
    """The ``.skeleton`` text (CRLF) of camera-space joints (bodies, T, 25, 3).

    Depth/colour pixels are a pinhole projection of xyz and the orientation is the body's
    heading about the vertical axis (zero for leaf joints, as Kinect writes them). A joint
    whose xyz are all zero (a lost joint) is written as zeros throughout its line.
    """
    num_bodies, num_frames = joints.shape[:2]
    ids = 72057594037927936 + np.sort(rng.choice(60000, num_bodies, replace=False))
    x, y, z = np.moveaxis(joints, -1, 0)
    present = (joints != 0).any(axis=-1)  # (M, T, 25)
    depth = np.where(present, z, 1.0)
    across = joints[..., 4, :] - joints[..., 8, :]  # right -> left shoulder, (M, T, 3)
    heading = np.arctan2(-across[..., 2], -across[..., 0])[..., None]  # (M, T, 1)
    quat = np.stack(np.broadcast_arrays(np.cos(heading / 2), 0.0, np.sin(heading / 2), 0.0), -1)
    quat = quat * np.broadcast_to(~np.isin(np.arange(25), _LEAVES), x.shape)[..., None]
    pixels = [256 + 365 * x / depth, 212 - 365 * y / depth,
              1000 + 1060 * x / depth, 540 - 1060 * y / depth]  # fmt: skip
    cols = [x, y, z, *(np.where(present, col, 0.0) for col in pixels)]
    quat = np.where(present[..., None], quat, 0.0)
    table = np.concatenate([np.stack(cols, -1), quat], -1).reshape(num_bodies, num_frames, -1)
    lean = np.clip((joints[..., 20, :] - joints[..., 0, :])[..., [0, 2]] / 0.3, -1, 1)
    lean[..., 1] *= -1  # leaning towards the camera (-z) is positive
    table, lean = table.tolist(), lean.tolist()
    lines = [str(num_frames)]
    for t in range(num_frames):
        lines.append(str(num_bodies))
        for b in range(num_bodies):
            lines.append(_BODY_LINE % (ids[b], *lean[b][t]))
            lines.append("25")
            lines.append(_BODY_BLOCK % tuple(table[b][t]))
    return "\r\n".join(lines) + "\r\n"


def _ntu_setups(cls: int, per_class: int, seed: int, max_setup: int) -> Iterator[tuple[int, ...]]:
    """Unique (setup, camera, performer, replication) per sample of one class.

    Setups and cameras cycle and performers follow the train/test cycle T F T T F, each
    from a seeded offset, so any 3 consecutive samples hold both sides of every benchmark.
    Performers come from the first 6 train / 4 test ids, or the full NTU-60 lists when
    those are used up.
    """
    rng = np.random.default_rng([seed, 3, cls])
    s0, c0, p0 = rng.integers(0, 60, 3)
    taken: set[tuple[int, ...]] = set()
    for j in range(per_class):
        setup, camera = (j + s0) % max_setup + 1, (j + c0) % 3 + 1
        train = (True, False, True, True, False)[(j + p0) % 5]
        for attempt in range(10_000):
            pool: tuple[int, ...] = NTU_TRAIN_PERFORMERS if train else NTU_TEST_PERFORMERS
            pool = pool[: 6 if train else 4] if attempt < 20 else pool
            key = (setup, camera, int(rng.choice(pool)), int(rng.integers(1, 3)))
            if key not in taken:
                break
        else:
            raise UsageError(f"per_class={per_class} is too large for unique NTU names")
        taken.add(key)
        yield key


def lost_joints_of(cls: int, index: int, lost_joints: int, seed: int = 0) -> np.ndarray:
    """The sorted joints that sample ``index`` of class ``cls`` loses.

    A uniform number in ``0..lost_joints`` of the joints other than spine base, spine
    middle and shoulders.

    Drawn from a generator of its own, so ``lost_joints=0`` changes no other draw.
    """
    rng = np.random.default_rng([seed, 6, cls, index])
    count = int(rng.integers(0, lost_joints + 1))
    return np.sort(rng.choice(_LOSABLE, size=count, replace=False))


def synth_ntu(
    out: Path,
    classes: int = 6,
    per_class: int = 8,
    seed: int = 0,
    max_setup: int = 4,
    lost_joints: int = 0,
) -> list[Path]:
    """Write ``classes * per_class`` NTU ``.skeleton`` files under ``out/nturgb+d_skeletons``.

    Action ``A = class + 1``. With ``per_class >= 3`` every class has train and test samples
    in cross-subject, cross-view and cross-setup. Returns the paths, sorted.

    ``lost_joints > 0`` adds a nuisance: every sample loses ``lost_joints_of(...)`` joints
    (up to ``lost_joints``, at most 21) in all frames and bodies; the file holds zeros for
    them, like a tracker's missing data, and the 2s-AGCN normalisation keeps them at zero.
    The default 0 writes exactly the files it wrote before the option existed.
    """
    if not 1 <= classes <= 120 or per_class < 1 or not 2 <= max_setup <= 32:
        raise UsageError("need 1 <= classes <= 120, per_class >= 1, 2 <= max_setup <= 32")
    if not 0 <= lost_joints <= len(_LOSABLE):
        raise UsageError(f"need 0 <= lost_joints <= {len(_LOSABLE)}, got {lost_joints}")
    folder = Path(out) / "nturgb+d_skeletons"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for cls in range(classes):
        motions = class_motions(cls, seed)
        for j, (s, c, p, r) in enumerate(_ntu_setups(cls, per_class, seed, max_setup)):
            rng = np.random.default_rng([seed, 2, cls, j])
            camera = camera_rotation(NTU_CAMERA_YAW_DEG[c], rng)
            joints = render(motions, int(rng.integers(40, 151)), scale=subject_scale(p, seed),
                            camera=camera, position=_random_position(rng), rng=rng)  # fmt: skip
            if lost_joints:
                joints[:, :, lost_joints_of(cls, j, lost_joints, seed)] = 0.0
            path = folder / f"S{s:03d}C{c:03d}P{p:03d}R{r:03d}A{cls + 1:03d}.skeleton"
            path.write_bytes(ntu_text(joints, rng).encode("ascii"))
            paths.append(path)
    return sorted(paths)


# ---------------------------------------------------------------------------------- PKU


def _pku_layout(classes: int, per_class: int, seed: int) -> dict[str, list[int]]:
    """Video name -> the classes of its action instances, in order.

    Instance ``k`` of a class goes to performer ``k % 3`` and view ``(k // 3 + k) % 3``
    (from a seeded offset ``k``), so any 5 consecutive instances of a class meet every
    performer and every view; each (performer, view) pair is cut into videos of at most
    ``PKU_MAX_PER_VIDEO`` shuffled instances.
    """
    rng = np.random.default_rng([seed, 4])
    views = list(PKU_VIEW_YAW_DEG)
    groups: dict[tuple[int, str], list[int]] = {}
    for cls in range(classes):
        k0 = int(rng.integers(0, 60))
        for k in range(k0, k0 + per_class):
            key = (PKU_PERFORMERS[k % 3], views[(k // 3 + k) % 3])
            groups.setdefault(key, []).append(cls)
    videos = {}
    for (a, v), members in sorted(groups.items()):
        members = rng.permutation(members).tolist()
        for n, i in enumerate(range(0, len(members), PKU_MAX_PER_VIDEO)):
            videos[f"A{a:02d}N{n + 1:02d}-{v}"] = members[i : i + PKU_MAX_PER_VIDEO]
    return videos


def _split_text(train: list[str], test: list[str]) -> str:
    """The 4-line layout of PKU-MMD's split files (header spelling as in the release)."""
    return f"Training videos: \n{', '.join(train)}\nValidataion videos: \n{', '.join(test)}\n"


def synth_pku(
    out: Path, classes: int = 6, per_class: int = 8, seed: int = 0
) -> dict[str, list[Path]]:
    """Write a PKU-MMD phase II tree under ``out`` with ``classes * per_class`` instances.

    ``skeleton/<video>.txt`` (one line of 150 floats per frame), ``label/<video>.txt``
    (``class,start,end,confidence``, frames ``[start, end)``, class 1-based) and the split
    files ``cross_subject_v2.txt`` (test: performer A03) and ``cross_view_v2.txt`` (test:
    view L). Returns ``{"skeleton": [...], "label": [...], "split": [xsub, xview]}``.
    """
    if not 1 <= classes <= 51 or per_class < 1:
        raise UsageError("need 1 <= classes <= 51 (PKU-MMD's action ids) and per_class >= 1")
    out = Path(out)
    (out / "skeleton").mkdir(parents=True, exist_ok=True)
    (out / "label").mkdir(parents=True, exist_ok=True)
    motions = [class_motions(cls, seed) for cls in range(classes)]
    result: dict[str, list[Path]] = {"skeleton": [], "label": [], "split": []}
    layout = _pku_layout(classes, per_class, seed)
    for video, members in layout.items():
        a, n, v = int(video[1:3]), int(video[4:6]), video[-1]
        rng = np.random.default_rng([seed, 5, a, n, ord(v)])
        kw: dict[str, Any] = dict(scale=subject_scale(100 + a, seed), rng=rng,
                                  position=_random_position(rng),
                                  camera=camera_rotation(PKU_VIEW_YAW_DEG[v], rng))  # fmt: skip
        parts = [render((IDLE,), int(rng.integers(10, 31)), **kw)]
        rows = []
        for cls in members:
            start = sum(p.shape[1] for p in parts)
            parts.append(render(motions[cls], int(rng.integers(40, 151)), **kw))
            rows.append(f"{cls + 1},{start},{start + parts[-1].shape[1]},{rng.integers(1, 3)}\n")
            parts.append(render((IDLE,), int(rng.integers(5, 21)), **kw))
        frames = np.concatenate([np.pad(p, ((0, 2 - len(p)), (0, 0), (0, 0), (0, 0)))
                                 for p in parts], axis=1)  # fmt: skip
        flat = frames.transpose(1, 0, 2, 3).reshape(frames.shape[1], 150).tolist()
        line = " ".join(["%f"] * 150)
        text = "\n ".join(line % tuple(row) for row in flat) + "\n"
        for kind, body in (("skeleton", text), ("label", "".join(rows))):
            path = out / kind / f"{video}.txt"
            path.write_bytes(body.encode("ascii"))
            result[kind].append(path)
    names = sorted(layout)
    for fname, is_test in (
        ("cross_subject_v2.txt", lambda name: int(name[1:3]) == PKU_TEST_PERFORMER),
        ("cross_view_v2.txt", lambda name: name[-1] == PKU_TEST_VIEW),
    ):
        path = out / fname
        train = [name for name in names if not is_test(name)]
        path.write_bytes(_split_text(train, [n for n in names if is_test(n)]).encode("ascii"))
        result["split"].append(path)
    return result


# ------------------------------------------------------------------------------ NW-UCLA

NWUCLA_VIEW_YAW_DEG = {1: 0.0, 2: 45.0, 3: -45.0}
NWUCLA_ACTIONS = (1, 2, 3, 4, 5, 6, 8, 9, 11, 12)  # the codes of labels 1-10
# Kinect v1's 20 joints as Kinect v2 (NTU) joints: shoulder centre is NTU's spine shoulder
KINECT20_FROM_NTU = (0, 1, 20, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19)


def synth_nwucla(out: Path, classes: int = 6, per_class: int = 8, seed: int = 0) -> list[Path]:
    """Write ``classes * per_class`` NW-UCLA ``all_sqe`` JSON files under ``out/all_sqe``.

    Class ``c`` is action code ``NWUCLA_ACTIONS[c]`` (label ``c + 1``), one person (the
    first of :func:`class_motions`), the 25-joint model reduced to Kinect v1's 20 joints.
    Sample ``j`` of class ``c`` is by subject ``(j + c) % 10 + 1`` seen from view
    ``(j + c) % 3 + 1``, so the views, the validation subjects (9, 10) and the others all
    occur once there are a few classes. Clips are 10-80 frames; like the release, the
    last sample of class 1 (``a02``) has a single frame when ``per_class >= 2``.
    Returns the paths, sorted.
    """
    if not 1 <= classes <= len(NWUCLA_ACTIONS) or per_class < 1:
        raise UsageError(f"need 1 <= classes <= {len(NWUCLA_ACTIONS)} and per_class >= 1")
    folder = Path(out) / "all_sqe"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for cls in range(classes):
        motion = class_motions(cls, seed)[:1]
        taken: dict[tuple[int, int], int] = {}
        for j in range(per_class):
            subject, view = (j + cls) % 10 + 1, (j + cls) % 3 + 1
            rep = taken.get((subject, view), 0)
            taken[subject, view] = rep + 1
            rng = np.random.default_rng([seed, 7, cls, j])
            frames = 1 if cls == 1 and j == per_class - 1 > 0 else int(rng.integers(10, 81))
            joints = render(motion, frames, scale=subject_scale(200 + subject, seed),
                            camera=camera_rotation(NWUCLA_VIEW_YAW_DEG[view], rng),
                            position=_random_position(rng), rng=rng)  # fmt: skip
            name = f"a{NWUCLA_ACTIONS[cls]:02d}_s{subject:02d}_e{rep:02d}_v{view:02d}"
            skeletons = np.round(joints[0][:, KINECT20_FROM_NTU], 6).tolist()
            text = json.dumps({"file_name": name, "skeletons": skeletons, "label": cls + 1})
            path = folder / f"{name}.json"
            path.write_bytes(text.encode("ascii"))
            paths.append(path)
    return sorted(paths)
