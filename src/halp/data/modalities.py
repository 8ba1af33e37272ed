"""The three skeleton modalities of CMD and HaLP+CMD (paper Sec. 4.3): joint, motion, bone.

Arrays are (..., C, T, V, M): time is axis -3, joints axis -2. Each function works on any
leading batch shape. Modalities are computed from one augmented joint clip, so the three
share one augmentation draw.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from halp.data.skeleton import BONE_CHILD, BONE_PARENT


def joint(x: np.ndarray) -> np.ndarray:
    """The joint modality: the coordinates themselves."""
    return x


def motion(x: np.ndarray) -> np.ndarray:
    """``motion[:, t] = x[:, t + 1] - x[:, t]``; the last frame is zero."""
    out = np.zeros_like(x)
    out[..., :-1, :, :] = x[..., 1:, :, :] - x[..., :-1, :, :]
    return out


def bone(x: np.ndarray) -> np.ndarray:
    """``bone[:, :, v] = x[:, :, child(v)] - x[:, :, parent(v)]`` over ``skeleton``'s 25 pairs.

    The (21, 21) pair (spine shoulder with itself) gives an all-zero channel.
    """
    return x[..., BONE_CHILD, :] - x[..., BONE_PARENT, :]


MODALITIES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "joint": joint,
    "motion": motion,
    "bone": bone,
}
