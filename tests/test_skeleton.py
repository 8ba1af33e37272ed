"""The normalisation recipe against constructed cases and a slow per-joint reference."""

from __future__ import annotations

import numpy as np
import pytest

from halp.data.skeleton import (
    BONE_CHILD,
    BONE_PARENT,
    LEFT_SHOULDER,
    RIGHT_SHOULDER,
    SPINE_BASE,
    SPINE_MID,
    normalize,
    process_sample,
    rotation_to,
    select_bodies,
)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q @ np.diag(np.sign(np.diag(r)))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def canonical_person(rng: np.random.Generator, frames: int) -> np.ndarray:
    """A (T, 25, 3) body whose frame 0 is already canonical (spine on +z, shoulders on +x)."""
    body = rng.normal(scale=0.3, size=(frames, 25, 3))
    body[:, SPINE_MID] = 0.0
    body[0, SPINE_BASE] = [0.0, 0.0, -0.25]
    body[0, LEFT_SHOULDER] = [-0.2, 0.0, 0.3]
    body[0, RIGHT_SHOULDER] = [0.2, 0.0, 0.3]
    return body


def slow_reference(sample: np.ndarray) -> np.ndarray:
    """The README's normalisation recipe with explicit loops over persons, frames, joints."""
    x = sample.astype(np.float64).copy()
    num_persons, num_frames, num_joints, _ = x.shape
    for m in range(num_persons):
        kept = [x[m, t].copy() for t in range(num_frames) if x[m, t].sum() != 0]
        if not kept:
            continue
        for t in range(num_frames):
            x[m, t] = kept[t % len(kept)]
    centres = [x[0, t, SPINE_MID].copy() for t in range(num_frames)]
    for m in range(num_persons):
        for t in range(num_frames):
            for v in range(num_joints):
                if x[m, t, v].sum() != 0:
                    x[m, t, v] = x[m, t, v] - centres[t]

    def rotate(vec: np.ndarray, target: np.ndarray) -> None:
        a = vec / np.linalg.norm(vec)
        axis = np.cross(a, target)
        angle = np.arccos(np.clip(np.dot(a, target), -1, 1))
        if np.linalg.norm(axis) < 1e-6 or abs(angle) < 1e-6:
            return
        axis = axis / np.linalg.norm(axis)
        # Euler-Rodrigues, joint by joint
        aa = np.cos(angle / 2)
        b, c, d = -axis * np.sin(angle / 2)
        rot = np.array(
            [
                [aa * aa + b * b - c * c - d * d, 2 * (b * c + aa * d), 2 * (b * d - aa * c)],
                [2 * (b * c - aa * d), aa * aa + c * c - b * b - d * d, 2 * (c * d + aa * b)],
                [2 * (b * d + aa * c), 2 * (c * d - aa * b), aa * aa + d * d - b * b - c * c],
            ]
        )
        for m in range(num_persons):
            for t in range(num_frames):
                for v in range(num_joints):
                    if x[m, t, v].sum() != 0:
                        x[m, t, v] = rot @ x[m, t, v]

    rotate(x[0, 0, SPINE_MID] - x[0, 0, SPINE_BASE], np.array([0.0, 0.0, 1.0]))
    rotate(x[0, 0, RIGHT_SHOULDER] - x[0, 0, LEFT_SHOULDER], np.array([1.0, 0.0, 0.0]))
    return x


def test_rotation_to_maps_direction_and_is_proper() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        v, t = rng.normal(size=3), rng.normal(size=3)
        r = rotation_to(v, t)
        np.testing.assert_allclose(r @ (v / np.linalg.norm(v)), t / np.linalg.norm(t), atol=1e-9)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-9)
        assert np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(rotation_to(np.zeros(3), np.ones(3)), np.eye(3))
    flip = rotation_to(np.array([0.0, 0.0, -2.0]), np.array([0.0, 0.0, 1.0]))
    np.testing.assert_allclose(flip @ np.array([0, 0, -1.0]), [0, 0, 1.0], atol=1e-12)


def test_rotated_translated_skeleton_comes_back_canonical() -> None:
    rng = np.random.default_rng(1)
    frames = 40
    person = canonical_person(rng, frames)
    rot = random_rotation(rng)
    moved = person @ rot.T + rng.normal(size=(frames, 1, 3))  # rotate, then move per frame
    sample = np.zeros((2, 300, 25, 3))
    sample[0, :frames] = moved
    out = normalize(sample)
    # frame 0: spine base -> spine mid along +z, shoulders along +x
    spine = out[0, 0, SPINE_MID] - out[0, 0, SPINE_BASE]
    np.testing.assert_allclose(spine / np.linalg.norm(spine), [0, 0, 1], atol=1e-5)
    shoulders = out[0, 0, RIGHT_SHOULDER] - out[0, 0, LEFT_SHOULDER]
    np.testing.assert_allclose(shoulders / np.linalg.norm(shoulders), [1, 0, 0], atol=1e-5)
    # the canonical input is recovered exactly (up to float32)
    np.testing.assert_allclose(
        out[0, :frames], person - person[:, SPINE_MID : SPINE_MID + 1], atol=1e-5
    )
    # per-frame centring: spine mid is at the origin in every frame, padding included
    np.testing.assert_allclose(out[0, :, SPINE_MID], 0.0, atol=1e-6)
    # loop padding repeats the sequence
    np.testing.assert_allclose(out[0, frames : 2 * frames], out[0, :frames], atol=1e-6)


def test_normalize_equals_slow_reference_with_gaps_and_two_people() -> None:
    rng = np.random.default_rng(2)
    sample = np.zeros((2, 300, 25, 3))
    sample[0, 3:60] = rng.normal(size=(57, 25, 3)) + np.array([0.1, 0.2, 3.0])
    sample[0, 20:25] = 0.0  # a gap inside the sequence
    sample[1, 10:50] = rng.normal(size=(40, 25, 3)) + np.array([1.0, 0.0, 3.0])
    sample[1, 30, 7] = 0.0  # one missing joint stays missing
    got = normalize(sample)
    want = slow_reference(sample)
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert got.dtype == np.float32


def test_leading_compaction_keeps_inner_gaps() -> None:
    rng = np.random.default_rng(5)
    sample = np.zeros((2, 12, 25, 3))
    sample[0, 0:3] = rng.normal(size=(3, 25, 3))
    sample[0, 5:6] = rng.normal(size=(1, 25, 3))  # frames 3, 4 are a gap
    out_all = normalize(sample, compaction="all")
    out_lead = normalize(sample, compaction="leading")
    # 'all': 4 valid frames loop; 'leading': the 6-frame prefix with its gap loops
    assert (out_all[0].reshape(12, -1).any(axis=1)).all()
    assert not out_lead[0, 3].any() and not out_lead[0, 9].any()
    with pytest.raises(ValueError, match="compaction"):
        normalize(sample, compaction="sometimes")


def test_empty_sample_stays_zero() -> None:
    assert not normalize(np.zeros((2, 300, 25, 3))).any()


def test_higher_energy_body_becomes_person_zero() -> None:
    rng = np.random.default_rng(3)
    slots = np.zeros((4, 50, 25, 3))
    slots[0] = rng.normal(scale=0.01, size=(50, 25, 3)) + 1.0  # nearly still
    slots[1] = rng.normal(scale=0.5, size=(50, 25, 3)) + 1.0  # moves a lot
    slots[2, :10] = rng.normal(scale=0.1, size=(10, 25, 3)) + 1.0  # medium, short
    out = select_bodies(slots)
    np.testing.assert_array_equal(out[0], slots[1])
    np.testing.assert_array_equal(out[1], slots[2])
    # energy = sum over xyz of the std over valid frames and joints
    energy = [
        slots[s][slots[s].sum(axis=(1, 2)) != 0].reshape(-1, 3).std(axis=0).sum() for s in range(3)
    ]
    assert energy[1] > energy[2] > energy[0]


def test_process_sample_shape_and_person_order() -> None:
    rng = np.random.default_rng(4)
    slots = np.zeros((4, 80, 25, 3))
    slots[0] = rng.normal(scale=0.01, size=(80, 25, 3)) + np.array([0, 0, 3])
    slots[1] = rng.normal(scale=0.3, size=(80, 25, 3)) + np.array([1, 0, 3])
    out = process_sample(slots)
    assert out.shape == (3, 300, 25, 2) and out.dtype == np.float32
    # person 0 (the energetic one) is centred on its own spine middle
    np.testing.assert_allclose(out[:, :, SPINE_MID, 0], 0.0, atol=1e-6)
    # PKU keeps file order
    kept = process_sample(slots[:2], rank_by_energy=False)
    np.testing.assert_allclose(kept[:, :, SPINE_MID, 0], 0.0, atol=1e-6)
    assert not np.allclose(kept, out)


def test_bone_pairs_are_the_documented_25() -> None:
    assert len(BONE_CHILD) == len(BONE_PARENT) == 25
    assert sorted(BONE_CHILD.tolist()) == list(range(25))
    assert (BONE_CHILD[20], BONE_PARENT[20]) == (20, 20)  # (21, 21): the zero bone
    assert (BONE_CHILD[0], BONE_PARENT[0]) == (0, 1)
