"""Tests of halp.data.augment against torch's interpolate and explicit loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from halp.data.augment import (
    AUGMENTATIONS,
    Compose,
    OneOf,
    build_augmentation,
    center_crop_resize,
    center_window,
    corrupt_joints,
    crop_window,
    joint_corruption,
    linear_resize,
    shear,
    shear_matrix,
    temporal_crop_resize,
)


def sample(frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(3, frames, 25, 2)).astype(np.float32)


def torch_resize(x: np.ndarray, out_frames: int) -> np.ndarray:
    """The reference: bilinear interpolate on a (1, C*V*M, L, 1) tensor."""
    c, length, v, m = x.shape
    t = torch.from_numpy(x).permute(0, 2, 3, 1).reshape(1, c * v * m, length, 1)
    t = F.interpolate(t, size=(out_frames, 1), mode="bilinear", align_corners=False)
    return t.reshape(c, v, m, out_frames).permute(0, 3, 1, 2).numpy()


def test_linear_resize_equals_torch_bilinear() -> None:
    for length in range(1, 301):  # every crop length a 300-frame sample can give
        x = sample(length, seed=length)
        out = linear_resize(x, 64)
        assert out.shape == (3, 64, 25, 2) and out.dtype == np.float32
        np.testing.assert_allclose(out, torch_resize(x, 64), atol=1e-6, rtol=0)


@pytest.mark.parametrize("length", [1, 2, 5, 30, 65, 100, 300])
@pytest.mark.parametrize("out_frames", [1, 7, 50, 128])
def test_linear_resize_other_lengths(length: int, out_frames: int) -> None:
    # torch rounds the source position in float32: weights may differ by ~1e-6 * length
    x = sample(length, seed=length)
    np.testing.assert_allclose(linear_resize(x, out_frames), torch_resize(x, out_frames), atol=2e-4)


def test_resize_of_64_frames_is_identity() -> None:
    x = sample(64)
    np.testing.assert_array_equal(linear_resize(x, 64), x)
    # a 64-frame sample is always cropped whole, hence returned unchanged
    for seed in range(5):
        rng = np.random.default_rng(seed)
        np.testing.assert_array_equal(temporal_crop_resize(x, 64, rng, (0.1, 1.0)), x)


def test_crop_window_scale_extremes() -> None:
    rng = np.random.default_rng(0)
    assert crop_window(300, rng, (1.0, 1.0)) == (0, 300)
    start, length = crop_window(300, rng, (0.1, 0.1))  # floor(30) is raised to 64
    assert length == 64 and 0 <= start <= 236
    start, length = crop_window(1000, rng, (0.1, 0.1))
    assert length == 100 and 0 <= start <= 900


def test_crop_window_shorter_than_min_length_keeps_all() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert crop_window(40, rng, (0.1, 1.0)) == (0, 40)
    assert crop_window(1, rng, (0.1, 1.0)) == (0, 1)


@pytest.mark.parametrize("scale", [(0.1, 1.0), (0.5, 1.0)])
def test_crop_window_bounds(scale: tuple[float, float]) -> None:
    rng = np.random.default_rng(1)
    for frames in [1, 50, 64, 65, 128, 300]:
        for _ in range(200):
            start, length = crop_window(frames, rng, scale)
            assert min(64, frames) <= length <= frames
            assert length >= min(int(np.floor(frames * scale[0])), frames)
            assert 0 <= start and start + length <= frames


def test_temporal_crop_resize_reads_the_window_it_drew() -> None:
    x = sample(300)
    x[:, 200:] = 0.0  # only the first 200 frames are valid
    for seed in range(10):
        start, length = crop_window(200, np.random.default_rng(seed), (0.1, 1.0))
        out = temporal_crop_resize(x, 200, np.random.default_rng(seed), (0.1, 1.0))
        np.testing.assert_array_equal(out, linear_resize(x[:, start : start + length], 64))
        np.testing.assert_allclose(out, torch_resize(x[:, start : start + length], 64), atol=1e-6)


def test_temporal_crop_resize_rejects_bad_valid_frames() -> None:
    x = sample(10)
    with pytest.raises(ValueError):
        temporal_crop_resize(x, 0, np.random.default_rng(0))
    with pytest.raises(ValueError):
        temporal_crop_resize(x, 11, np.random.default_rng(0))


def test_center_crop() -> None:
    assert center_window(100) == (2, 98)
    assert center_window(300) == (7, 293)
    assert center_window(10) == (0, 10)
    x = sample(120)
    np.testing.assert_array_equal(center_crop_resize(x, 100), linear_resize(x[:, 2:98], 64))


def test_shear_matrix_has_unit_diagonal() -> None:
    rng = np.random.default_rng(0)
    for amplitude in [1.0, 0.5]:
        m = shear_matrix(rng, amplitude)
        np.testing.assert_array_equal(np.diag(m), np.ones(3))
        off = m[~np.eye(3, dtype=bool)]
        assert np.all(np.abs(off) <= amplitude) and np.all(off != 0)


def test_shear_is_a_per_joint_linear_map() -> None:
    x = sample(8)
    out = shear(x, np.random.default_rng(3))
    s = shear_matrix(np.random.default_rng(3))
    expected = np.zeros_like(x)
    for t in range(8):
        for v in range(25):
            for m in range(2):
                expected[:, t, v, m] = s @ x[:, t, v, m]
    assert out.shape == x.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_corrupt_joints_matrix_mode_against_loop() -> None:
    x = sample(6)
    joints = np.array([0, 3, 7, 20, 24])
    r = np.random.default_rng(0).uniform(-1, 1, size=(3, 3))
    out = corrupt_joints(x, joints, r)
    expected = x.copy()
    for t in range(6):
        for v in joints:
            for m in range(2):
                expected[:, t, v, m] = x[:, t, v, m] @ r  # row vector times R
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_joint_corruption_touches_exactly_15_joints() -> None:
    x = sample(16)
    modes = set()
    for seed in range(20):
        out = joint_corruption(x, np.random.default_rng(seed))
        changed = np.flatnonzero(np.any(out != x, axis=(0, 1, 3)))
        assert len(changed) == 15
        unchanged = np.setdiff1d(np.arange(25), changed)
        np.testing.assert_array_equal(out[:, :, unchanged], x[:, :, unchanged])
        zeroed = bool(np.all(out[:, :, changed] == 0))
        modes.add(zeroed)
        if not zeroed:  # one matrix for every chosen joint: solve it from one joint, check all
            pts = x[:, :, changed[0]].reshape(3, -1).T
            r, *_ = np.linalg.lstsq(pts, out[:, :, changed[0]].reshape(3, -1).T, rcond=None)
            got = np.einsum("ctvm,cd->dtvm", x[:, :, changed], r)
            np.testing.assert_allclose(out[:, :, changed], got, atol=1e-4)
    assert modes == {True, False}  # both modes occur


def test_joint_corruption_zero_mode() -> None:
    x = sample(4)
    out = joint_corruption(x, np.random.default_rng(0), p_zero=1.0)
    zero = np.all(out == 0, axis=(0, 1, 3))
    assert zero.sum() == 15
    np.testing.assert_array_equal(out[:, :, ~zero], x[:, :, ~zero])
    assert np.all(x == sample(4))  # the input is not modified


def test_build_augmentation() -> None:
    assert set(AUGMENTATIONS) >= {"shear", "joint_corruption"}
    x = sample(64)
    rng = np.random.default_rng(0)
    none = build_augmentation("none")
    out = none(x, rng)
    assert out is not x
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(build_augmentation(None)(x, rng), x)
    assert build_augmentation("shear") is shear
    assert build_augmentation(["shear", "joint_corruption"]) == Compose((shear, joint_corruption))
    assert build_augmentation("isc") == OneOf((shear, joint_corruption))
    with pytest.raises(ValueError, match="unknown augmentation"):
        build_augmentation("flip_upside_down")


def test_isc_preset_applies_exactly_one() -> None:
    x = sample(64)
    isc = build_augmentation("isc")
    picks = []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        out = isc(x, rng)
        # replay: OneOf draws its choice first, then the chosen transform draws
        replay = np.random.default_rng(seed)
        k = int(replay.choice(2))
        expected = (shear, joint_corruption)[k](x, replay)
        np.testing.assert_array_equal(out, expected)
        picks.append(k)
    assert 70 < sum(picks) < 130  # p = 0.5 each


def test_one_of_validates_probabilities() -> None:
    with pytest.raises(ValueError):
        OneOf((shear, joint_corruption), p=(0.5, 0.2))
    with pytest.raises(ValueError):
        OneOf(())
    only_shear = OneOf((shear, joint_corruption), p=(1.0, 0.0))
    x = sample(8)
    out = only_shear(x, np.random.default_rng(0))
    assert not np.any(out == 0)  # never zeroed joints
