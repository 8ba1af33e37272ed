"""Tests of AimCLR's/HiCLR's augmentations (halp.data.augment) and HiCLR's joint mask
(halp.data.batch_augment), against the released behaviour written out here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from halp.data.augment import (
    AUGMENTATIONS,
    LEFT_RIGHT_PERMUTATION,
    PRESETS,
    Compose,
    Transform,
    apply_linear,
    axis_mask,
    axis_rotation,
    blur_kernel,
    build_augmentation,
    gaussian_blur,
    gaussian_blur_normalised,
    gaussian_noise,
    pad_crop,
    rotate,
    rotation_angles,
    rotation_matrix,
    shear_half,
    shear_matrix,
    spatial_flip,
    time_flip,
)
from halp.data.batch_augment import JointMask, joint_mask_pattern, skele_adain
from halp.data.skeleton import BONE_CHILD, BONE_PARENT, JOINT_NAMES

# the released NTU left/right permutation
RELEASED_FLIP = [
    0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 16, 17, 18, 19, 12, 13, 14, 15, 20, 23, 24, 21, 22,
]  # fmt: skip


def sample(frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(3, frames, 25, 2)).astype(np.float32)


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- pad_crop


@pytest.mark.parametrize("frames", [64, 50, 13])
def test_pad_crop_windows_of_the_symmetric_padding(frames: int) -> None:
    x = sample(frames)
    pad = frames // 6
    padded = np.pad(x, ((0, 0), (pad, pad), (0, 0), (0, 0)), mode="symmetric")
    # symmetric padding = the first/last pad frames reversed, repeating the edge frame
    by_hand = np.concatenate([x[:, :pad][:, ::-1], x, x[:, frames - pad :][:, ::-1]], axis=1)
    np.testing.assert_array_equal(padded, by_hand)
    np.testing.assert_array_equal(padded[:, pad - 1], x[:, 0])
    np.testing.assert_array_equal(padded[:, -pad], x[:, -1])
    starts = []
    for seed in range(40 * (2 * pad + 1)):
        out = pad_crop(x, rng(seed))
        assert out.shape == x.shape and out.dtype == np.float32
        matches = [s for s in range(2 * pad + 1) if np.array_equal(out, padded[:, s : s + frames])]
        assert len(matches) == 1
        assert matches[0] == rng(seed).integers(0, 2 * pad + 1)  # one integer draw: the start
        starts.append(matches[0])
    counts = np.bincount(starts, minlength=2 * pad + 1)
    assert len(counts) == 2 * pad + 1 and counts.min() > 15  # every offset, about 40 times each


def test_pad_crop_of_a_short_clip_is_the_clip() -> None:
    x = sample(5)  # 5 // 6 = 0 frames of padding
    np.testing.assert_array_equal(pad_crop(x, rng(0)), x)


# --------------------------------------------------------------------------- shear


def test_shear_half_is_shear_matrix_with_amplitude_half() -> None:
    x = sample(8)
    for seed in range(5):
        expected = apply_linear(x, shear_matrix(rng(seed), 0.5))
        np.testing.assert_array_equal(shear_half(x, rng(seed)), expected)


def test_shear_half_matches_the_released_distribution() -> None:
    # released: S = [[1, a0, b0], [a1, 1, b1], [a2, b2, 1]], all six i.i.d. U(-r, r), x' = S x;
    # recover S from outputs and compare the moments of the off-diagonals with U(-0.5, 0.5)
    x = sample(4)
    pts = x.reshape(3, -1).T
    off = []
    for seed in range(400):
        out = shear_half(x, rng(seed)).reshape(3, -1).T
        s_t, *_ = np.linalg.lstsq(pts, out, rcond=None)
        s = s_t.T
        np.testing.assert_allclose(np.diag(s), 1.0, atol=1e-4)
        off.append(s[~np.eye(3, dtype=bool)])
    off_arr = np.array(off)
    assert np.abs(off_arr).max() <= 0.5 + 1e-4 and np.abs(off_arr).max() > 0.48
    np.testing.assert_allclose(off_arr.mean(axis=0), 0.0, atol=0.05)
    np.testing.assert_allclose(off_arr.var(axis=0), 0.5**2 / 3, rtol=0.2)  # not amplitude 1
    corr = np.corrcoef(off_arr.T)
    assert np.abs(corr[~np.eye(6, dtype=bool)]).max() < 0.2  # independent entries


# --------------------------------------------------------------------------- spatial flip


def test_left_right_permutation() -> None:
    assert LEFT_RIGHT_PERMUTATION.tolist() == RELEASED_FLIP
    perm = LEFT_RIGHT_PERMUTATION
    np.testing.assert_array_equal(perm[perm], np.arange(25))  # an involution
    for v, name in enumerate(JOINT_NAMES):
        other = JOINT_NAMES[perm[v]]
        if name.startswith(("left_", "right_")):
            assert other != name and other.split("_", 1)[1] == name.split("_", 1)[1]
        else:
            assert perm[v] == v  # the centre line stays


def test_spatial_flip_permutes_joints_only() -> None:
    x = sample(6)
    out = spatial_flip(x, rng(0), p=1.0)
    for v in range(25):  # joint v of the output is the input's twin, coordinates unchanged
        np.testing.assert_array_equal(out[:, :, v], x[:, :, RELEASED_FLIP[v]])
    centre = [v for v, name in enumerate(JOINT_NAMES) if not name.startswith(("left", "right"))]
    assert centre == [0, 1, 2, 3, 20]
    np.testing.assert_array_equal(out[:, :, centre], x[:, :, centre])
    np.testing.assert_array_equal(spatial_flip(out, rng(1), p=1.0), x)
    np.testing.assert_array_equal(spatial_flip(x, rng(0), p=0.0), x)


def test_spatial_flip_probability() -> None:
    x = sample(2)
    flips = [not np.array_equal(spatial_flip(x, rng(seed)), x) for seed in range(1000)]
    assert 440 < sum(flips) < 560
    assert flips == [rng(seed).random() < 0.5 for seed in range(1000)]  # one coin draw


def test_time_flip() -> None:
    x = sample(7)
    out = time_flip(x, rng(0), p=1.0)
    np.testing.assert_array_equal(out, x[:, ::-1])
    np.testing.assert_array_equal(time_flip(out, rng(0), p=1.0), x)
    flips = [not np.array_equal(time_flip(x, rng(s)), x) for s in range(400)]
    assert 160 < sum(flips) < 240


# --------------------------------------------------------------------------- rotate


def released_axis_matrix(axis: int, a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return [
        np.array([[1, 0, 0], [0, c, s], [0, -s, c]]),
        np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]]),
        np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]]),
    ][axis]


def released_rotate(x: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Row vectors xyz, ``seq @ R.T`` about x, then y, then z."""
    seq = x.transpose(1, 2, 3, 0).astype(np.float64)
    for axis in range(3):
        seq = seq @ released_axis_matrix(axis, angles[axis]).T
    return seq.transpose(3, 0, 1, 2)


def euler_angles(m: np.ndarray) -> np.ndarray:
    """Inverse of rotation_matrix: m = Rz(-g) Ry(-b) Rx(-a) in the right-handed convention."""
    theta = -np.arcsin(np.clip(m[2, 0], -1, 1))
    phi = np.arctan2(m[2, 1], m[2, 2])
    psi = np.arctan2(m[1, 0], m[0, 0])
    return -np.array([phi, theta, psi])


def test_rotation_matrix_is_the_released_composition() -> None:
    angles = np.radians([12.0, 0.7, 25.0])
    for axis in range(3):
        np.testing.assert_allclose(axis_rotation(axis, 0.3), released_axis_matrix(axis, 0.3))
    m = rotation_matrix(angles)
    x = sample(3)
    np.testing.assert_allclose(apply_linear(x, m), released_rotate(x, angles), atol=1e-5)
    np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(m), 1.0)
    np.testing.assert_allclose(euler_angles(m), angles, atol=1e-12)
    with pytest.raises(ValueError):
        axis_rotation(3, 0.1)


def test_rotate_draws_one_main_axis() -> None:
    x = sample(4)
    pts = x.reshape(3, -1).T
    mains = []
    for seed in range(600):
        out = rotate(x, rng(seed))
        replay = rng(seed)
        np.testing.assert_array_equal(
            out, apply_linear(x, rotation_matrix(rotation_angles(replay)))
        )
        m_t, *_ = np.linalg.lstsq(pts, out.reshape(3, -1).T.astype(np.float64), rcond=None)
        m = m_t.T
        np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-5)
        assert np.isclose(np.linalg.det(m), 1.0, atol=1e-5)
        degrees = np.degrees(euler_angles(m))
        assert np.all(degrees >= -1e-3) and np.all(degrees <= 30 + 1e-3)
        assert np.sum(degrees > 1 + 1e-3) <= 1  # at most the main axis turns more than 1 degree
        mains.append(int(np.argmax(degrees)))
        assert int(rng(seed).integers(0, 3)) == mains[-1] or degrees.max() <= 1 + 1e-3
    counts = np.bincount(mains, minlength=3)
    assert counts.min() > 150  # x, y and z are each the main axis about 200 times


def test_rotate_preserves_bones_and_radii() -> None:
    x = sample(10)
    for seed in range(5):
        out = rotate(x, rng(seed))
        bone = np.linalg.norm(x[:, :, BONE_CHILD] - x[:, :, BONE_PARENT], axis=0)
        bone_out = np.linalg.norm(out[:, :, BONE_CHILD] - out[:, :, BONE_PARENT], axis=0)
        np.testing.assert_allclose(bone_out, bone, atol=1e-5)
        np.testing.assert_allclose(
            np.linalg.norm(out, axis=0), np.linalg.norm(x, axis=0), atol=1e-5
        )
        assert not np.allclose(out, x, atol=1e-3)


# --------------------------------------------------------------------------- noise, blur, mask


def test_gaussian_noise() -> None:
    x = sample(200)
    noisy = gaussian_noise(x, rng(0), p=1.0) - x
    assert abs(noisy.std() - 0.01) < 0.0003 and abs(noisy.mean()) < 0.0003
    np.testing.assert_array_equal(gaussian_noise(x, rng(0), p=0.0), x)
    applied = [not np.array_equal(gaussian_noise(x[:, :2], rng(s)), x[:, :2]) for s in range(400)]
    assert applied == [rng(s).random() < 0.5 for s in range(400)]
    assert 160 < sum(applied) < 240


def drawn_sigma(seed: int) -> float:
    return float(rng(seed).uniform(0.1, 2.0))  # the first draw, before the coin


def test_gaussian_blur_of_an_impulse_is_the_unnormalised_kernel() -> None:
    x = np.zeros((3, 31, 25, 2), dtype=np.float32)
    x[:, 15] = 1.0
    for seed in range(10):
        sigma = drawn_sigma(seed)
        kernel = np.exp(-(np.arange(-7, 8) ** 2) / (2 * sigma**2))
        out = gaussian_blur(x, rng(seed), p=1.0)
        np.testing.assert_allclose(out[0, 8:23, 3, 1], kernel, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(out, np.broadcast_to(out[:1, :, :1, :1], out.shape))
        np.testing.assert_array_equal(out[:, :8], 0)
        np.testing.assert_array_equal(out[:, 23:], 0)
        np.testing.assert_allclose(blur_kernel(sigma), kernel)
        normalised = gaussian_blur_normalised(x, rng(seed), p=1.0)
        np.testing.assert_allclose(
            normalised[0, 8:23, 0, 0], kernel / kernel.sum(), rtol=1e-6, atol=1e-12
        )


def test_gaussian_blur_scales_a_constant_clip_by_the_kernel_sum() -> None:
    x = np.ones((3, 40, 25, 2), dtype=np.float32) * np.array([1.0, -2.0, 3.0]).reshape(3, 1, 1, 1)
    for seed in range(20):
        sigma = drawn_sigma(seed)
        total = blur_kernel(sigma).sum()
        out = gaussian_blur(x, rng(seed), p=1.0)
        np.testing.assert_allclose(out[:, 7:33], x[:, 7:33] * total, rtol=1e-5)
        if sigma > 0.5:
            assert total > 1.2  # the released blur amplifies
        # zero padding: the first frame sees only the centre and the seven later taps
        np.testing.assert_allclose(out[:, 0], x[:, 0] * blur_kernel(sigma)[7:].sum(), rtol=1e-5)
        normalised = gaussian_blur_normalised(x, rng(seed), p=1.0)
        np.testing.assert_allclose(normalised[:, 7:33], x[:, 7:33], rtol=1e-5)
        if sigma > 0.5:
            assert np.all(np.abs(normalised[:, 0]) < np.abs(x[:, 0]) - 1e-3)


def test_gaussian_blur_against_conv1d() -> None:
    # the released filter: a zero-padded conv over time, one per coordinate, joint and person
    x = sample(20)
    for seed in range(5):
        sigma = drawn_sigma(seed)
        weight = torch.from_numpy(blur_kernel(sigma)).reshape(1, 1, 15)
        series = torch.from_numpy(x.astype(np.float64)).permute(0, 2, 3, 1).reshape(-1, 1, 20)
        ref = F.conv1d(series, weight, padding=7).reshape(3, 25, 2, 20).permute(0, 3, 1, 2)
        np.testing.assert_allclose(gaussian_blur(x, rng(seed), p=1.0), ref.numpy(), atol=1e-5)


def test_gaussian_blur_draws_sigma_before_the_coin() -> None:
    x = sample(16)
    applied = []
    for seed in range(200):
        replay = rng(seed)
        sigma = replay.uniform(0.1, 2.0)
        coin = replay.random() < 0.5
        out = gaussian_blur(x, rng(seed))
        if coin:
            np.testing.assert_allclose(out, gaussian_blur(x, rng(seed), p=1.0))
            np.testing.assert_allclose(
                out[0, 8, 0, 0], (x[0, 1:16, 0, 0] @ blur_kernel(sigma)), rtol=1e-5
            )
        else:
            np.testing.assert_array_equal(out, x)
        applied.append(coin)
    assert 70 < sum(applied) < 130


def test_axis_mask_zeroes_exactly_one_axis() -> None:
    x = sample(5)
    axes = []
    for seed in range(60):
        out = axis_mask(x, rng(seed), p=1.0)
        zero = [bool(np.all(out[c] == 0)) for c in range(3)]
        assert sum(zero) == 1
        axes.append(zero.index(True))
        for c in range(3):
            if not zero[c]:
                np.testing.assert_array_equal(out[c], x[c])
    assert set(axes) == {0, 1, 2}
    applied = [not np.array_equal(axis_mask(x, rng(s)), x) for s in range(400)]
    assert 160 < sum(applied) < 240
    assert np.all(x == sample(5))  # the input is not modified


# --------------------------------------------------------------------------- presets


def compose_by_hand(x: np.ndarray, seed: int, extreme: bool, blur: Transform) -> np.ndarray:
    r = rng(seed)
    x = shear_half(pad_crop(x, r), r)
    if extreme:
        x = axis_mask(blur(gaussian_noise(rotate(spatial_flip(x, r), r), r), r), r)
    return x


def test_presets_compose_in_the_released_order() -> None:
    x = sample(64)
    normal = (pad_crop, shear_half)
    assert build_augmentation("aimclr_normal") == Compose(normal)
    assert build_augmentation("aimclr_extreme") == Compose(
        (*normal, spatial_flip, rotate, gaussian_noise, gaussian_blur, axis_mask)
    )
    assert build_augmentation("aimclr_extreme_normblur") == Compose(
        (*normal, spatial_flip, rotate, gaussian_noise, gaussian_blur_normalised, axis_mask)
    )
    assert build_augmentation("aimclr_extreme_timeflip") == Compose(
        (*normal, spatial_flip, rotate, time_flip, gaussian_noise, gaussian_blur, axis_mask)
    )
    assert build_augmentation("hiclr_basic") == build_augmentation("aimclr_normal")
    assert build_augmentation("hiclr_normal") == build_augmentation("aimclr_extreme")
    for seed in range(10):
        for name, extreme, blur in [
            ("aimclr_normal", False, gaussian_blur),
            ("hiclr_basic", False, gaussian_blur),
            ("aimclr_extreme", True, gaussian_blur),
            ("hiclr_normal", True, gaussian_blur),
            ("aimclr_extreme_normblur", True, gaussian_blur_normalised),
        ]:
            out = build_augmentation(name)(x, rng(seed))
            np.testing.assert_array_equal(out, compose_by_hand(x, seed, extreme, blur))
    # the order matters: shear before the crop draws differently
    swapped = Compose((shear_half, pad_crop))(x, rng(0))
    assert not np.array_equal(swapped, build_augmentation("aimclr_normal")(x, rng(0)))


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS) + sorted(PRESETS))
def test_every_name_builds_and_is_deterministic(name: str) -> None:
    x = sample(64)
    before = x.copy()
    transform = build_augmentation(name)
    outs = [transform(x, rng(seed)) for seed in (3, 3, 4)]
    for out in outs:
        assert out.shape == x.shape and out.dtype == np.float32 and out is not x
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(x, before)


# --------------------------------------------------------------------------- joint mask


def batch(n: int = 4, frames: int = 50, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, frames, 25, 2, generator=torch.Generator().manual_seed(seed))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def masked_of(module: JointMask, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        module.token.fill_(123.0)  # a value no input holds
        out = module(x, gen(seed))
    return out, out == 123.0


def test_joint_mask_pattern() -> None:
    x = batch()
    module = JointMask(0.1)
    for seed in range(5):
        out, mask = masked_of(module, x, seed)
        pattern = mask[0, 0, :, :, 0]
        assert torch.equal(mask, pattern[None, None, :, :, None].expand_as(mask))  # N, C, M
        assert pattern.sum(dim=1).tolist() == [2] * 50  # int(0.1 * 25) distinct joints each frame
        assert torch.equal(out[~mask], x[~mask])
        assert torch.equal(pattern, joint_mask_pattern(50, 25, 0.1, gen(seed)))
    _, again = masked_of(module, x, 4)
    _, other = masked_of(module, x, 5)
    assert torch.equal(again, masked_of(module, x, 4)[1]) and not torch.equal(again, other)


def test_joint_mask_joints_are_uniform() -> None:
    pattern = joint_mask_pattern(2000, 25, 0.1, gen(0))
    assert pattern.sum(dim=1).eq(2).all()
    per_joint = pattern.sum(dim=0)
    assert per_joint.min() > 110 and per_joint.max() < 210  # 160 expected for each joint


def test_joint_mask_token_is_learnable() -> None:
    module = JointMask()
    assert module.token.item() == 0.0 and module.token.requires_grad
    x = batch(2, 8)
    out = module(x, gen(1))
    mask = (out == 0) & (x != 0)
    assert mask.sum() == 2 * 8 * 2 * 3 * 2
    weights = torch.randn(out.shape, generator=gen(2))
    (out * weights).sum().backward()
    assert module.token.grad is not None
    torch.testing.assert_close(module.token.grad, weights[mask].sum().reshape(1))
    assert module.token.grad.abs().item() > 0


def test_joint_mask_validates() -> None:
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="ratio"):
            JointMask(bad)
    with pytest.raises(ValueError, match="N, C, T, V, M"):
        JointMask()(torch.zeros(3, 10, 25, 2), gen(0))
    x = batch(2, 6)
    with pytest.raises(ValueError, match="Generator"):
        JointMask()(x, None)
    assert torch.equal(JointMask(0.0)(x, gen(0)), x)
    for ratio, count in [(0.5, 12), (0.15, 3)]:  # int() rounds down: 12.5 -> 12, 3.75 -> 3
        _, mask = masked_of(JointMask(ratio), x, 0)
        assert mask[0, 0, :, :, 0].sum(dim=1).tolist() == [count] * 6


# --------------------------------------------------------------------------- SkeleAdaIN


def stats(x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(dim=dims), x.var(dim=dims)


@pytest.mark.parametrize(("mode", "dims"), [("TV", (2, 3)), ("V", (3,))])
def test_skele_adain_takes_the_partners_statistics(mode: str, dims: tuple[int, ...]) -> None:
    x = batch(5, 6) * torch.arange(1, 6).reshape(5, 1, 1, 1, 1) + 3.0
    shifts = set()
    for seed in range(30):
        out = skele_adain(x, gen(seed), mode=mode, eps=0.0)  # type: ignore[arg-type]
        shift = int(torch.randint(1, 4, (1,), generator=gen(seed)))
        shifts.add(shift)
        partner = x.roll(-shift, dims=0)  # sample i gets (i + shift) % N
        for got, want in zip(stats(out, dims), stats(partner, dims), strict=True):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        z = (x - x.mean(dim=dims, keepdim=True)) / x.std(dim=dims, keepdim=True)
        z_out = (out - out.mean(dim=dims, keepdim=True)) / out.std(dim=dims, keepdim=True)
        torch.testing.assert_close(z_out, z, atol=1e-4, rtol=1e-4)
    assert shifts == {1, 2, 3}  # 1 .. N - 2, never the sample itself


def test_skele_adain_validates() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        skele_adain(batch(2, 4), gen(0))
    with pytest.raises(ValueError, match="mode"):
        skele_adain(batch(3, 4), gen(0), mode="T")  # type: ignore[arg-type]
