"""Skeleton layouts: everything a model or an augmentation knows about a dataset's joints.

A :class:`SkeletonLayout` is one object per kind of skeleton: the joint names (so the
joint count), the parent of every joint (the bones of the bone modality, paper Sec. 4.3,
and the edges of the ST-GCN graph), the centre joint of ST-GCN's spatial partition, the
left/right twin of every joint (the mirroring augmentation) and how many persons a stored
clip holds. Prepared data names its layout (``halp.data.storage``: every part's index and
the manifest); the configuration key ``data.layout`` names the one an encoder is built
for, so a checkpoint's saved configuration rebuilds the same encoder.

- ``ntu25``: the Kinect v2 skeleton of NTU RGB+D and PKU-MMD, 25 joints, 2 persons.
- ``kinect20``: the Kinect v1 skeleton of NW-UCLA, 20 joints, 1 person (our reading of
  its bones: the tree of the Kinect v1 SDK rooted, as NTU's, at the shoulder centre).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from halp.data import skeleton
from halp.errors import ConfigError


@dataclass(frozen=True)
class SkeletonLayout:
    """The joints of one kind of skeleton and the clips that store it.

    Args:
        name: The name configurations and prepared data use (``data.layout``).
        joint_names: One name per joint, in storage order; ``left_``/``right_`` prefixes
            pair the twins that mirroring swaps.
        parents: ``parents[v]`` is the joint that bone ``v`` starts from; the root is its
            own parent (its bone is all zero, so the bone modality keeps V channels).
        centre: The centre joint of ST-GCN's spatial partition.
        persons: Persons (M) per stored clip.
    """

    name: str
    joint_names: tuple[str, ...]
    parents: tuple[int, ...]
    centre: int
    persons: int

    def __post_init__(self) -> None:
        """Check that the parents form one tree over the joints."""
        v = len(self.joint_names)
        if len(self.parents) != v or not all(0 <= p < v for p in self.parents):
            raise ValueError(f"layout {self.name}: one parent in 0..{v - 1} per joint needed")
        roots = [j for j, p in enumerate(self.parents) if p == j]
        if len(roots) != 1 or not 0 <= self.centre < v or self.persons < 1:
            raise ValueError(f"layout {self.name}: needs one root, a centre and persons >= 1")

    @property
    def num_joints(self) -> int:
        """V, the number of joints."""
        return len(self.joint_names)

    @property
    def features_per_frame(self) -> int:
        """V x 3 coordinates x M persons: the BiGRU's input size."""
        return self.num_joints * skeleton.NUM_COORDS * self.persons

    @property
    def bone_child(self) -> np.ndarray:
        """Child joint of every bone: ``0 .. V-1`` (int64)."""
        return np.arange(self.num_joints, dtype=np.int64)

    @property
    def bone_parent(self) -> np.ndarray:
        """Parent joint of every bone (int64); the root's bone is zero."""
        return np.asarray(self.parents, dtype=np.int64)

    @property
    def edges(self) -> tuple[tuple[int, int], ...]:
        """The V - 1 bones as 0-based (child, parent) pairs: the ST-GCN graph's edges."""
        return tuple((c, p) for c, p in enumerate(self.parents) if c != p)

    @cached_property
    def left_right(self) -> np.ndarray:
        """Joint ``v`` of a mirrored clip is joint ``left_right[v]`` of the input (int64)."""
        index = {n: i for i, n in enumerate(self.joint_names)}

        def twin(name: str) -> str:
            for a, b in (("left_", "right_"), ("right_", "left_")):
                if name.startswith(a):
                    return b + name.removeprefix(a)
            return name

        return np.array([index[twin(n)] for n in self.joint_names], dtype=np.int64)


NTU25 = SkeletonLayout(
    name="ntu25",
    joint_names=skeleton.JOINT_NAMES,
    parents=tuple(int(p) for p in skeleton.BONE_PARENT),
    centre=skeleton.JOINT_NAMES.index("spine_shoulder"),
    persons=skeleton.NUM_PERSONS,
)
"""NTU RGB+D / PKU-MMD (Kinect v2): 25 joints, bones of ``halp.data.skeleton``, 2 persons."""

KINECT20_JOINTS = (
    "hip_centre", "spine", "shoulder_centre", "head",
    "left_shoulder", "left_elbow", "left_wrist", "left_hand",
    "right_shoulder", "right_elbow", "right_wrist", "right_hand",
    "left_hip", "left_knee", "left_ankle", "left_foot",
    "right_hip", "right_knee", "right_ankle", "right_foot",
)  # fmt: skip
"""The Kinect v1 joints in NW-UCLA's order."""

KINECT20 = SkeletonLayout(
    name="kinect20",
    joint_names=KINECT20_JOINTS,
    # hip centre -> spine -> shoulder centre (the root, as NTU's spine shoulder); arms hang
    # from the shoulder centre, legs from the hip centre
    parents=(1, 2, 2, 2, 2, 4, 5, 6, 2, 8, 9, 10, 0, 12, 13, 14, 0, 16, 17, 18),
    centre=2,
    persons=1,
)
"""NW-UCLA (Kinect v1): 20 joints, one person."""

LAYOUTS: dict[str, SkeletonLayout] = {layout.name: layout for layout in (NTU25, KINECT20)}
"""Every layout by name."""


def get_layout(name: str, key: str = "data.layout") -> SkeletonLayout:
    """The layout called ``name``.

    Raises:
        ConfigError: naming ``key`` and the known layouts, for an unknown name.
    """
    if name not in LAYOUTS:
        raise ConfigError(
            f"config key '{key}': {name!r} is not a skeleton layout; known: {', '.join(LAYOUTS)}"
        )
    return LAYOUTS[name]
