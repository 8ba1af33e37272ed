"""The three skeleton modalities of CMD and HaLP+CMD (paper Sec. 4.3): joint, motion, bone.

Arrays are (..., C, T, V, M): time is axis -3, joints axis -2. Each function works on any
leading batch shape. Modalities are computed from one augmented joint clip, so the three
share one augmentation draw.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from halp.data.layouts import NTU25, SkeletonLayout


def joint(x: np.ndarray) -> np.ndarray:
    """The joint modality: the coordinates themselves."""
    return x


def motion(x: np.ndarray) -> np.ndarray:
    """``motion[:, t] = x[:, t + 1] - x[:, t]``; the last frame is zero."""
    out = np.zeros_like(x)
    out[..., :-1, :, :] = x[..., 1:, :, :] - x[..., :-1, :, :]
    return out


def bone(x: np.ndarray, layout: SkeletonLayout = NTU25) -> np.ndarray:
    """``bone[:, :, v] = x[:, :, v] - x[:, :, parent(v)]`` over the layout's V joints.

    The root (NTU: spine shoulder, joint 21) is its own parent: an all-zero channel.
    """
    return x[..., layout.bone_child, :] - x[..., layout.bone_parent, :]


MODALITIES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "joint": joint,
    "motion": motion,
    "bone": bone,
}


def modality_function(name: str, layout: SkeletonLayout) -> Callable[[np.ndarray], np.ndarray]:
    """The function computing modality ``name`` of clips with ``layout``'s joints."""
    if name == "bone" and layout != NTU25:
        return partial(bone, layout=layout)
    return MODALITIES[name]
