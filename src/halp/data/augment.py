"""Load-time augmentations of one skeleton sample (paper Sec. 4.2, the ISC/CMD set).

Every function takes one sample ``x`` of shape (C, T, V, M) (NTU: (3, T, 25, 2)) and returns
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
   one ``Transform``.

Registered names: ISC/CMD's ``shear`` (amplitude 1) and ``joint_corruption``; AimCLR's
(also HiCLR's) ``pad_crop``, ``shear_half`` (amplitude 0.5), ``spatial_flip``,
``rotate``, ``gaussian_noise``, ``gaussian_blur`` (the released, unnormalised kernel),
``gaussian_blur_normalised``, ``axis_mask`` and ``time_flip``, with the released
parameters. ``PRESETS``: ``isc``; ``aimclr_normal`` (= HiCLR's ``hiclr_basic``:
pad_crop, shear_half); ``aimclr_extreme`` (= ``hiclr_normal``: aimclr_normal, then
spatial_flip, rotate, gaussian_noise, gaussian_blur, axis_mask) and
``aimclr_extreme_normblur`` (the same with the normalised blur), ``aimclr_extreme_timeflip``
(AimCLR's first release: time_flip between rotate and noise). HiCLR's strong set
(the learnable joint mask) acts on a batch inside the model step:
:mod:`halp.data.batch_augment`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import numpy as np

from halp.data.layouts import NTU25, SkeletonLayout
from halp.errors import UsageError

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]
"""A spatial augmentation: ``(clip (3, T, V, M), rng) -> new clip``."""
_T = TypeVar("_T", bound=Transform)

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


def register(name: str) -> Callable[[_T], _T]:
    """Decorator adding a spatial transform to ``AUGMENTATIONS`` under ``name``.

    The function keeps its own signature (extra keyword parameters with defaults).
    """

    def add(fn: _T) -> _T:
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


# --------------------------------------------------------------------------- AimCLR / HiCLR
# AimCLR's "normal" and "extreme" augmentations (Guo et al., AAAI 2022), which HiCLR
# (Zhang et al., AAAI 2023) reuses as its "basic" and "normal" sets. The
# parameters and the order of the random draws within each transform are those of the
# released code; the docstrings say where it differs from what its name suggests.

CROSSCLR_SHEAR_AMPLITUDE = 0.5  # the shear of CrosSCLR, AimCLR and HiCLR
TEMPORAL_PADDING_RATIO = 6  # pad_crop pads T // 6 frames at each end


def _copy(x: np.ndarray) -> np.ndarray:
    return np.array(x, dtype=np.float32, copy=True)


@register("shear_half")
def shear_half(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``shear`` with CrosSCLR/AimCLR/HiCLR's amplitude 0.5.

    The released shear is ``x' = S x`` with the six off-diagonal entries of ``S`` i.i.d.
    U(-0.5, 0.5) and a unit diagonal: the distribution of ``shear_matrix(rng, 0.5)``.
    """
    return shear(x, rng, CROSSCLR_SHEAR_AMPLITUDE)


@register("pad_crop")
def pad_crop(
    x: np.ndarray, rng: np.random.Generator, padding_ratio: int = TEMPORAL_PADDING_RATIO
) -> np.ndarray:
    """Temporal crop of CrosSCLR/AimCLR: mirror-pad both ends, then take a T-frame window.

    ``pad = T // padding_ratio`` frames are added at each end, the first ``pad`` frames
    reversed in front and the last ``pad`` reversed at the back (symmetric padding, which
    repeats the edge frame: ``np.pad(mode='symmetric')``); the window of length T starts
    uniformly in ``[0, 2 * pad]``.
    """
    frames = x.shape[1]
    pad = frames // padding_ratio
    start = int(rng.integers(0, 2 * pad + 1))
    padded = np.pad(x, ((0, 0), (pad, pad), (0, 0), (0, 0)), mode="symmetric")
    return _copy(padded[:, start : start + frames])


LEFT_RIGHT_PERMUTATION = NTU25.left_right
"""Joint ``v`` of a flipped NTU clip is joint ``LEFT_RIGHT_PERMUTATION[v]`` of the input."""
# the released NTU permutation, 0-based
assert LEFT_RIGHT_PERMUTATION.tolist() == [
    0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 16, 17, 18, 19, 12, 13, 14, 15, 20, 23, 24, 21, 22,
]  # fmt: skip


@register("spatial_flip")
def spatial_flip(
    x: np.ndarray,
    rng: np.random.Generator,
    p: float = 0.5,
    permutation: np.ndarray = LEFT_RIGHT_PERMUTATION,
) -> np.ndarray:
    """With probability ``p``, swap every left joint with its right twin.

    As released, only the joint order changes: the coordinates are not mirrored, so a
    left arm's trajectory is relabelled as the right arm's. ``permutation`` is the
    layout's (:attr:`halp.data.layouts.SkeletonLayout.left_right`; NTU's by default).
    """
    if rng.random() < p:
        return _copy(x[:, :, permutation])
    return _copy(x)


@register("time_flip")
def time_flip(x: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """With probability ``p``, reverse the frame order.

    Released with AimCLR but not part of its default extreme set (nor of the presets).
    """
    if rng.random() < p:
        return _copy(x[:, ::-1])
    return _copy(x)


def axis_rotation(axis: int, angle: float) -> np.ndarray:
    """The released per-axis matrix ``R`` (``x' = R x``) for ``angle`` radians about ``axis``.

    x: ``[[1, 0, 0], [0, c, s], [0, -s, c]]``; y: ``[[c, 0, -s], [0, 1, 0], [s, 0, c]]``;
    z: ``[[c, s, 0], [-s, c, 0], [0, 0, 1]]``. Each turns by ``-angle`` in the
    right-handed sense; as the angles are drawn from ``[0, max)``, that direction is part
    of the reference behaviour.
    """
    c, s = np.cos(angle), np.sin(angle)
    if axis == 0:
        return np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])
    if axis == 1:
        return np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])
    if axis == 2:
        return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
    raise ValueError(f"axis must be 0 (x), 1 (y) or 2 (z), got {axis}")


def rotation_angles(
    rng: np.random.Generator, main_degrees: float = 30.0, other_degrees: float = 1.0
) -> np.ndarray:
    """AimCLR's rotation angles (radians) about x, y, z.

    A main axis is drawn uniformly; it turns by U(0, ``main_degrees``) degrees, the two
    others by U(0, ``other_degrees``), drawn in the order x, y, z.
    """
    main = int(rng.integers(0, 3))
    degrees = [rng.uniform(0.0, main_degrees if a == main else other_degrees) for a in range(3)]
    return np.radians(degrees)


def rotation_matrix(angles: np.ndarray) -> np.ndarray:
    """``R_z R_y R_x`` of ``axis_rotation``: rotate about x first, then y, then z."""
    matrix = np.eye(3)
    for axis in range(3):
        matrix = axis_rotation(axis, float(angles[axis])) @ matrix
    return matrix


@register("rotate")
def rotate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """AimCLR's random rotation, always applied: ``x' = R x`` for every joint and person.

    ``R = rotation_matrix(rotation_angles(rng))``; rotations preserve bone lengths and each
    joint's distance to the origin.
    """
    return apply_linear(x, rotation_matrix(rotation_angles(rng)))


@register("gaussian_noise")
def gaussian_noise(
    x: np.ndarray, rng: np.random.Generator, std: float = 0.01, p: float = 0.5
) -> np.ndarray:
    """With probability ``p``, add i.i.d. N(0, ``std``²) to every coordinate."""
    if rng.random() < p:
        return (x + rng.normal(0.0, std, size=x.shape)).astype(np.float32)
    return _copy(x)


BLUR_KERNEL = 15  # taps, offsets -7..7
BLUR_SIGMA = (0.1, 2.0)  # sigma ~ U(0.1, 2), in frames


def blur_kernel(sigma: float, size: int = BLUR_KERNEL, normalise: bool = False) -> np.ndarray:
    """Temporal Gaussian weights ``exp(-k² / (2 sigma²))`` for ``k = -(size//2) .. size//2``.

    Unnormalised as released: the centre weight is 1, so the weights sum to more than 1
    (about ``sigma * sqrt(2 pi)`` for sigma above ~0.6, 5.01 at sigma = 2);
    ``normalise=True`` divides them by their sum.
    """
    k = np.arange(size) - size // 2
    weights = np.exp(-(k**2) / (2.0 * sigma**2))
    return weights / weights.sum() if normalise else weights


def temporal_filter(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Filter every coordinate, joint and person along time, zero-padded at both ends.

    ``out[:, t] = sum_j weights[j] * x[:, t + j - len(weights) // 2]`` with ``x`` zero
    outside its frames (the kernel is symmetric, so correlation and convolution agree).
    """
    radius = len(weights) // 2
    frames = x.shape[1]
    padded = np.pad(np.asarray(x, dtype=np.float64), ((0, 0), (radius, radius), (0, 0), (0, 0)))
    out = np.zeros(x.shape, dtype=np.float64)
    for j, w in enumerate(weights):
        out += w * padded[:, j : j + frames]
    return out.astype(np.float32)


def _gaussian_blur(
    x: np.ndarray, rng: np.random.Generator, p: float, normalise: bool
) -> np.ndarray:
    sigma = rng.uniform(*BLUR_SIGMA)  # drawn before the coin, as released
    if rng.random() < p:
        return temporal_filter(x, blur_kernel(sigma, normalise=normalise))
    return _copy(x)


@register("gaussian_blur")
def gaussian_blur(x: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """AimCLR's temporal Gaussian blur, applied with probability ``p``.

    ``temporal_filter`` by ``blur_kernel(sigma)``, sigma ~ U(0.1, 2) (drawn before the
    coin, whether or not the blur applies, as released).

    The kernel is NOT normalised, as released: a blurred clip is scaled by the kernel sum
    (up to ~5 for sigma = 2). That is the reference behaviour under this name; see
    ``gaussian_blur_normalised``.
    """
    return _gaussian_blur(x, rng, p, normalise=False)


@register("gaussian_blur_normalised")
def gaussian_blur_normalised(x: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """``gaussian_blur`` with the kernel divided by its sum (same draws, a true low-pass)."""
    return _gaussian_blur(x, rng, p, normalise=True)


@register("axis_mask")
def axis_mask(x: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """With probability ``p``, zero one coordinate axis (x, y or z, uniformly) everywhere."""
    out = _copy(x)
    if rng.random() < p:
        out[int(rng.integers(0, 3))] = 0.0
    return out


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


def corruption_for(layout: SkeletonLayout) -> Transform:
    """``joint_corruption`` of the same share of ``layout``'s joints as ISC's 15 of NTU's 25.

    Our reading for other layouts: ``round(0.6 * V)`` joints (12 of Kinect v1's 20); the
    function itself for NTU.
    """
    if layout == NTU25:
        return joint_corruption
    return partial(joint_corruption, num_joints=round(15 / 25 * layout.num_joints))


def flip_for(layout: SkeletonLayout) -> Transform:
    """``spatial_flip`` with ``layout``'s left/right twins (the function itself for NTU)."""
    if layout == NTU25:
        return spatial_flip
    return partial(spatial_flip, permutation=layout.left_right)


def _aimclr_normal(layout: SkeletonLayout = NTU25) -> Compose:
    return Compose((pad_crop, shear_half))


_EXTREME_TAIL = (gaussian_noise, gaussian_blur, axis_mask)  # after rotate in the extreme view


def _aimclr_extreme(layout: SkeletonLayout = NTU25, blur: Transform = gaussian_blur) -> Compose:
    return Compose(
        (*_aimclr_normal().transforms, flip_for(layout), rotate, gaussian_noise, blur, axis_mask)
    )


PRESETS: dict[str, Callable[[SkeletonLayout], Transform]] = {
    "none": lambda layout: Compose(),
    # ISC/CMD/HaLP pretraining: per view, after the temporal crop, one of the two (p = 0.5)
    "isc": lambda layout: OneOf((shear, corruption_for(layout))),
    # AimCLR's normal view = HiCLR's basic set (crop first, then shear, as released)
    "aimclr_normal": _aimclr_normal,
    # AimCLR's extreme view = HiCLR's basic + normal sets (aug_method '12345')
    "aimclr_extreme": _aimclr_extreme,
    "aimclr_extreme_normblur": lambda layout: _aimclr_extreme(layout, gaussian_blur_normalised),
    # AimCLR's first release: a temporal flip (p = 0.5) between rotate and noise
    "aimclr_extreme_timeflip": lambda layout: Compose(
        (*_aimclr_normal().transforms, flip_for(layout), rotate, time_flip, *_EXTREME_TAIL)
    ),
    # HiCLR's names for the same sets
    "hiclr_basic": _aimclr_normal,
    "hiclr_normal": _aimclr_extreme,
}
"""Named augmentation sets, built for a skeleton layout; a preset may be used wherever a
registered name may."""

LAYOUT_AUGMENTATIONS: dict[str, Callable[[SkeletonLayout], Transform]] = {
    "spatial_flip": flip_for,
    "joint_corruption": corruption_for,
}
"""Registered names whose transform depends on the layout's joints."""

AugmentationSpec = str | Sequence[str] | None


def build_augmentation(spec: AugmentationSpec, layout: SkeletonLayout = NTU25) -> Transform:
    """Turn a config value into one spatial ``Transform`` for clips of ``layout``.

    ``spec`` is a preset name (``"isc"``, ``"none"``), a registered name (``"shear"``),
    a list of those applied in order, or ``None`` (no augmentation). Transforms that depend
    on the joints (``spatial_flip``'s twins, ``joint_corruption``'s count) use ``layout``'s
    (NTU's by default).
    """
    if spec is None:
        return Compose()
    if isinstance(spec, str):
        if spec in PRESETS:
            return PRESETS[spec](layout)
        if spec in LAYOUT_AUGMENTATIONS:
            return LAYOUT_AUGMENTATIONS[spec](layout)
        if spec in AUGMENTATIONS:
            return AUGMENTATIONS[spec]
        known = sorted(PRESETS) + sorted(AUGMENTATIONS)
        raise UsageError(f"unknown augmentation {spec!r}; known: {', '.join(known)}")
    return Compose(tuple(build_augmentation(name, layout) for name in spec))
