"""Load-time augmentations of one skeleton sample (paper Sec. 4.2, the ISC/CMD set).

Every function takes one sample ``x`` of shape (C, T, V, M) = (3, T, 25, 2) and returns
a new float32 array; random ones take an explicit ``np.random.Generator`` (never the
global numpy state), so a sample's augmentation is fixed by the generator the dataset
hands in.

Two stages, as in ISC/CMD:

1. **Temporal**: crop a window of the valid frames and resize it linearly to
   ``out_frames`` (``temporal_crop_resize`` for training, ``center_crop_resize`` for
   testing and kNN). It needs the sample's valid length, so the dataset calls it
   directly.
2. **Spatial**, on the resized clip: a ``Transform`` ``(x, rng) -> x``. Transforms are
   registered by name in ``AUGMENTATIONS`` and combined with ``Compose`` / ``OneOf``;
   ``build_augmentation`` turns a config value (a preset name or a list of names) into
   one ``Transform``. More sets (AimCLR/HiCLR: flip, rotation, Gaussian noise, temporal
   blur, axis or joint masking) drop in as further ``@register``-ed functions and presets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from halp.errors import UsageError

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]
"""A spatial augmentation: ``(clip (3, T, V, M), rng) -> new clip``."""

DEFAULT_FRAMES = 64  # clip length fed to the encoder
MIN_CROP_LENGTH = 64  # ISC/CMD never crop fewer frames than this (unless the sample is shorter)


# --------------------------------------------------------------------------- temporal


def linear_resize_weights(
    in_len: int, out_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of linear resampling from ``in_len`` to ``out_len`` frames.

    Identical to ``F.interpolate(mode='bilinear', align_corners=False)`` along one axis:
    output frame ``d`` samples source position ``s = (d + 0.5) * in_len / out_len - 0.5``,
    clamped at 0; the neighbours are ``floor(s)`` and ``floor(s) + 1`` (clamped to
    ``in_len - 1``) with weights ``1 - frac(s)`` and ``frac(s)``.

    Torch computes ``s`` in float32; here it is float64. For ``out_len = 64`` (any
    power of two) ``s`` is exact in both, so the results agree to float32 rounding
    (< 1e-6). For other output lengths torch's rounding of ``s`` can move a weight by
    about 1e-6 * in_len.

    Returns:
        ``(i0, i1, w0, w1)``, each of length ``out_len``.
    """
    if in_len < 1 or out_len < 1:
        raise ValueError(f"lengths must be positive, got {in_len} -> {out_len}")
    src = (np.arange(out_len, dtype=np.float64) + 0.5) * (in_len / out_len) - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_len - 1)
    i1 = np.minimum(i0 + 1, in_len - 1)
    w1 = src - i0
    return i0, i1, 1.0 - w1, w1


def linear_resize(x: np.ndarray, out_frames: int = DEFAULT_FRAMES) -> np.ndarray:
    """Resize (C, L, V, M) along time to (C, out_frames, V, M) by linear interpolation."""
    i0, i1, w0, w1 = linear_resize_weights(x.shape[1], out_frames)
    shape = (1, out_frames, 1, 1)
    out = x[:, i0] * w0.reshape(shape) + x[:, i1] * w1.reshape(shape)
    return out.astype(np.float32)


def crop_window(
    valid_frames: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.1, 1.0),
    min_length: int = MIN_CROP_LENGTH,
) -> tuple[int, int]:
    """The random window ``(start, length)`` of ISC/CMD's ``temporal_cropresize``.

    ``s ~ U(scale)``; ``length = clamp(floor(valid_frames * s), min_length, valid_frames)``
    (so a sample shorter than ``min_length`` is kept whole); ``start`` is uniform in
    ``[0, valid_frames - length]``.
    """
    if valid_frames < 1:
        raise ValueError(f"valid_frames must be positive, got {valid_frames}")
    s = rng.uniform(scale[0], scale[1])
    length = min(max(int(np.floor(valid_frames * s)), min_length), valid_frames)
    start = int(rng.integers(0, valid_frames - length + 1))
    return start, length


def center_window(valid_frames: int, keep: float = 0.95) -> tuple[int, int]:
    """The centred window ``(start, stop)`` keeping about ``keep`` of the valid frames.

    ``start = int((1 - keep) * valid_frames / 2)``, ``stop = valid_frames - start``,
    the same float expression as the reference (T = 100 gives frames [2, 98)).
    """
    if valid_frames < 1:
        raise ValueError(f"valid_frames must be positive, got {valid_frames}")
    start = int((1 - keep) * valid_frames / 2)
    return start, valid_frames - start


def _check_frames(x: np.ndarray, valid_frames: int) -> None:
    if not 1 <= valid_frames <= x.shape[1]:
        raise ValueError(f"valid_frames={valid_frames} outside [1, {x.shape[1]}] for {x.shape}")


def temporal_crop_resize(
    x: np.ndarray,
    valid_frames: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.1, 1.0),
    out_frames: int = DEFAULT_FRAMES,
    min_length: int = MIN_CROP_LENGTH,
) -> np.ndarray:
    """Random temporal crop (``crop_window``) resized linearly to ``out_frames``.

    Pretraining uses ``scale=(0.1, 1)``, downstream training ``(0.5, 1)``. Only the
    cropped frames of ``x`` are read, so ``x`` may be a row of a memory map.
    """
    _check_frames(x, valid_frames)
    start, length = crop_window(valid_frames, rng, scale, min_length)
    return linear_resize(x[:, start : start + length], out_frames)


def center_crop_resize(
    x: np.ndarray, valid_frames: int, keep: float = 0.95, out_frames: int = DEFAULT_FRAMES
) -> np.ndarray:
    """Deterministic centre crop (``center_window``) resized linearly to ``out_frames``."""
    _check_frames(x, valid_frames)
    start, stop = center_window(valid_frames, keep)
    return linear_resize(x[:, start:stop], out_frames)


# --------------------------------------------------------------------------- spatial

AUGMENTATIONS: dict[str, Transform] = {}
"""Registered spatial transforms by config name."""


def register(name: str) -> Callable[[Transform], Transform]:
    """Decorator adding a spatial transform to ``AUGMENTATIONS`` under ``name``."""

    def add(fn: Transform) -> Transform:
        if name in AUGMENTATIONS:
            raise ValueError(f"augmentation {name!r} registered twice")
        AUGMENTATIONS[name] = fn
        return fn

    return add


def apply_linear(x: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``x'[:, t, v, m] = matrix @ x[:, t, v, m]`` for every frame, joint and person."""
    return np.einsum("ij,jtvm->itvm", matrix, x).astype(np.float32)


def shear_matrix(rng: np.random.Generator, amplitude: float = 1.0) -> np.ndarray:
    """3x3 shear: unit diagonal, the six off-diagonal entries i.i.d. U(-amplitude, amplitude)."""
    matrix = np.eye(3)
    matrix[~np.eye(3, dtype=bool)] = rng.uniform(-amplitude, amplitude, size=6)
    return matrix


@register("shear")
def shear(x: np.ndarray, rng: np.random.Generator, amplitude: float = 1.0) -> np.ndarray:
    """ISC's ``pose_augmentation``: ``x' = S x`` per joint with ``S = shear_matrix(rng)``.

    ISC/CMD use amplitude 1 (CrosSCLR 0.5).
    """
    return apply_linear(x, shear_matrix(rng, amplitude))


def corrupt_joints(x: np.ndarray, joints: np.ndarray, matrix: np.ndarray | None) -> np.ndarray:
    """Zero ``joints`` (``matrix is None``) or map their xyz as the row vector ``x @ matrix``.

    The same matrix serves every chosen joint, frame and person; other joints are copied.
    """
    out = np.array(x, dtype=np.float32, copy=True)
    if matrix is None:
        out[:, :, joints] = 0.0
    else:
        # row-vector convention of the reference: new_c = sum_c' x_c' R[c', c] = (R^T x)_c
        out[:, :, joints] = apply_linear(out[:, :, joints], matrix.T)
    return out


@register("joint_corruption")
def joint_corruption(
    x: np.ndarray, rng: np.random.Generator, num_joints: int = 15, p_zero: float = 0.5
) -> np.ndarray:
    """ISC's ``joint_courruption``: corrupt ``num_joints`` of the V joints (without replacement).

    With probability ``p_zero`` they are zeroed in all frames and persons; otherwise their
    xyz are multiplied (``x @ R``) by one 3x3 matrix ``R`` with U(-1, 1) entries.
    """
    zero = rng.random() < p_zero
    joints = rng.choice(x.shape[2], size=num_joints, replace=False)
    matrix = None if zero else rng.uniform(-1.0, 1.0, size=(3, 3))
    return corrupt_joints(x, joints, matrix)


def identity(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """No augmentation (a float32 copy)."""
    return np.array(x, dtype=np.float32, copy=True)


@dataclass(frozen=True)
class Compose:
    """Apply ``transforms`` in order; no transforms is the identity."""

    transforms: tuple[Transform, ...] = ()

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Apply the transforms in order, each with the same generator."""
        if not self.transforms:
            return identity(x, rng)
        for transform in self.transforms:
            x = transform(x, rng)
        return x


@dataclass(frozen=True)
class OneOf:
    """Apply exactly one of ``transforms``, chosen with probabilities ``p`` (uniform if None)."""

    transforms: tuple[Transform, ...]
    p: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.transforms:
            raise ValueError("OneOf needs at least one transform")
        if self.p is not None and (
            len(self.p) != len(self.transforms) or not np.isclose(sum(self.p), 1.0)
        ):
            raise ValueError(f"p={self.p} must hold one probability per transform, summing to 1")

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Apply one transform, drawn with the probabilities ``p``."""
        k = int(rng.choice(len(self.transforms), p=self.p))
        return self.transforms[k](x, rng)


PRESETS: dict[str, Callable[[], Transform]] = {
    "none": Compose,
    # ISC/CMD/HaLP pretraining: per view, after the temporal crop, one of the two (p = 0.5)
    "isc": lambda: OneOf((shear, joint_corruption)),
}
"""Named augmentation sets; a preset may be used wherever a registered name may."""

AugmentationSpec = str | Sequence[str] | None


def build_augmentation(spec: AugmentationSpec) -> Transform:
    """Turn a config value into one spatial ``Transform``.

    ``spec`` is a preset name (``"isc"``, ``"none"``), a registered name (``"shear"``),
    a list of those applied in order, or ``None`` (no augmentation).
    """
    if spec is None:
        return Compose()
    if isinstance(spec, str):
        if spec in PRESETS:
            return PRESETS[spec]()
        if spec in AUGMENTATIONS:
            return AUGMENTATIONS[spec]
        known = sorted(PRESETS) + sorted(AUGMENTATIONS)
        raise UsageError(f"unknown augmentation {spec!r}; known: {', '.join(known)}")
    return Compose(tuple(build_augmentation(name) for name in spec))
