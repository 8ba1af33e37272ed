"""Tests of halp.data.loaders: modalities, GRU layout, datasets and reproducible loaders."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from halp.data.augment import center_crop_resize, temporal_crop_resize
from halp.data.loaders import (
    ClassificationDataset,
    PretrainDataset,
    epoch_order,
    make_epoch_loader,
    make_loader,
)
from halp.data.modalities import bone, motion
from halp.data.skeleton import BONE_CHILD, BONE_PARENT
from halp.data.storage import SkeletonSplit, SplitWriter, load_split
from halp.encoders.bigru import to_gru_input
from halp.errors import DataFormatError

STORED_T = 80
# true frame counts; 200 exceeds the stored 80 (as PKU-MMD's can) and is capped
FRAMES = [80, 40, 64, 200, 1, 70, 65, 33, 80, 10, 50, 77]


def write_split(root: Path, frames: list[int], part: str = "train") -> SkeletonSplit:
    rng = np.random.default_rng(0)
    writer = SplitWriter(root, part, len(frames), (3, STORED_T, 25, 2), "toy", "xsub", 5)
    for i, f in enumerate(frames):
        x = np.zeros((3, STORED_T, 25, 2), np.float32)
        stored = min(f, STORED_T)
        x[:, :stored] = rng.normal(size=(3, stored, 25, 2))
        writer.append(x, f"S001C001P001R001A{i:03d}", i % 5, f)
    writer.close()
    return load_split(root, part)


@pytest.fixture
def split(tmp_path: Path) -> SkeletonSplit:
    return write_split(tmp_path, FRAMES)


# --------------------------------------------------------------------------- modalities


def test_motion_against_explicit_differences() -> None:
    x = np.random.default_rng(0).normal(size=(3, 64, 25, 2)).astype(np.float32)
    out = motion(x)
    for t in range(63):
        np.testing.assert_array_equal(out[:, t], x[:, t + 1] - x[:, t])
    np.testing.assert_array_equal(out[:, 63], 0.0)
    batched = motion(np.stack([x, 2 * x]))  # leading batch axes work too
    np.testing.assert_array_equal(batched[0], out)


def test_bone_against_explicit_loop() -> None:
    x = np.random.default_rng(0).normal(size=(3, 8, 25, 2)).astype(np.float32)
    out = bone(x)
    pairs = [
        (1, 2),
        (2, 21),
        (3, 21),
        (4, 3),
        (5, 21),
        (6, 5),
        (7, 6),
        (8, 7),
        (9, 21),
        (10, 9),
        (11, 10),
        (12, 11),
        (13, 1),
        (14, 13),
        (15, 14),
        (16, 15),
        (17, 1),
        (18, 17),
        (19, 18),
        (20, 19),
        (21, 21),
        (22, 23),
        (23, 8),
        (24, 25),
        (25, 12),
    ]
    assert [(c + 1, p + 1) for c, p in zip(BONE_CHILD, BONE_PARENT, strict=True)] == pairs
    for child, parent in pairs:
        np.testing.assert_array_equal(
            out[:, :, child - 1], x[:, :, child - 1] - x[:, :, parent - 1]
        )
    np.testing.assert_array_equal(out[:, :, 20], 0.0)  # (21, 21)


def test_to_gru_input_ordering() -> None:
    x = np.random.default_rng(0).normal(size=(4, 3, 64, 25, 2)).astype(np.float32)
    out = to_gru_input(x)
    assert out.shape == (4, 64, 150)
    for n in range(4):
        for t in (0, 17, 63):
            for v in range(25):
                for c in range(3):
                    for m in range(2):
                        assert out[n, t, v * 6 + c * 2 + m] == x[n, c, t, v, m]
    np.testing.assert_array_equal(to_gru_input(torch.from_numpy(x)).numpy(), out)
    np.testing.assert_array_equal(to_gru_input(x[0]), out[0])  # one sample: (64, 150)


# --------------------------------------------------------------------------- datasets


def test_pretrain_views(split: SkeletonSplit) -> None:
    ds = PretrainDataset(split, seed=3)
    assert len(ds) == len(FRAMES)
    for i in range(len(ds)):
        q, k, index = ds[i]
        assert index == i
        assert q.shape == k.shape == (3, 64, 25, 2) and q.dtype == torch.float32
        if FRAMES[i] > 1:
            assert not torch.equal(q, k)  # independent augmentations


def test_pretrain_is_deterministic_per_seed_epoch_index(split: SkeletonSplit) -> None:
    a, b = PretrainDataset(split, seed=7), PretrainDataset(split, seed=7)
    for i in (0, 3, 5):
        for x, y in zip(a[i][:2], b[i][:2], strict=True):
            assert torch.equal(x, y)
    reference = a[0][0]
    a.set_epoch(1)
    assert not torch.equal(a[0][0], reference)
    a.set_epoch(0)
    assert torch.equal(a[0][0], reference)
    assert not torch.equal(PretrainDataset(split, seed=8)[0][0], reference)


def test_pretrain_modalities_share_one_augmentation(split: SkeletonSplit) -> None:
    ds = PretrainDataset(split, modality=["joint", "motion", "bone"], seed=1)
    single = PretrainDataset(split, modality="joint", seed=1)
    q, k, _ = ds[5]
    assert set(q) == {"joint", "motion", "bone"}
    assert torch.equal(q["joint"], single[5][0]) and torch.equal(k["joint"], single[5][1])
    for view in (q, k):
        joints = view["joint"].numpy()
        np.testing.assert_array_equal(view["motion"].numpy(), motion(joints))
        np.testing.assert_array_equal(view["bone"].numpy(), bone(joints))


def test_pretrain_without_augmentation_is_the_crop(split: SkeletonSplit) -> None:
    ds = PretrainDataset(split, augmentation="none", seed=2)
    q, _, _ = ds[6]
    expected = temporal_crop_resize(split.data[6], 65, ds.rng(6, 0), (0.1, 1.0))
    np.testing.assert_array_equal(q.numpy(), expected)


def test_classification_dataset(split: SkeletonSplit) -> None:
    test = ClassificationDataset(split, train=False)
    for i in range(len(test)):
        clip, label = test[i]
        assert label == i % 5
        valid = min(FRAMES[i], STORED_T)
        np.testing.assert_array_equal(clip.numpy(), center_crop_resize(split.data[i], valid))
    train = ClassificationDataset(split, train=True, seed=4)
    clip, _ = train[0]
    assert torch.equal(clip, ClassificationDataset(split, seed=4)[0][0])
    expected = temporal_crop_resize(split.data[0], 80, train.rng(0), (0.5, 1.0))
    np.testing.assert_array_equal(clip.numpy(), expected)
    both, _ = ClassificationDataset(split, modality=["joint", "bone"], train=False)[0]
    assert set(both) == {"joint", "bone"}


def test_valid_frames_are_capped_at_stored_length(split: SkeletonSplit) -> None:
    assert split.index.frames[3] == 200 and split.valid_frames(3) == STORED_T
    clip, _ = ClassificationDataset(split, train=False)[3]
    np.testing.assert_array_equal(clip.numpy(), center_crop_resize(split.data[3], STORED_T))
    PretrainDataset(split)[3]  # does not index past the stored frames


def test_zero_valid_frames_names_the_sample(tmp_path: Path) -> None:
    split = write_split(tmp_path, [30, 0, 30])
    ds = PretrainDataset(split)
    ds[0]
    with pytest.raises(DataFormatError, match="S001C001P001R001A001"):
        ds[1]
    with pytest.raises(DataFormatError, match="no valid frames"):
        ClassificationDataset(split, train=False)[1]


def test_bad_arguments(split: SkeletonSplit) -> None:
    with pytest.raises(ValueError, match="unknown modality"):
        PretrainDataset(split, modality="velocity")
    with pytest.raises(ValueError, match="unknown augmentation"):
        PretrainDataset(split, augmentation="mixup")
    with pytest.raises(ValueError):
        PretrainDataset(split, seed=-1)


def test_pickling_keeps_the_memmap_a_reference(split: SkeletonSplit) -> None:
    ds = PretrainDataset(split, seed=5)
    ds.set_epoch(2)
    blob = pickle.dumps(ds)
    assert len(blob) < split.data.nbytes / 4  # the array itself is not in the pickle
    copy = pickle.loads(blob)
    assert isinstance(copy.split.data, np.memmap) and copy.epoch == 2
    for x, y in zip(copy[4][:2], ds[4][:2], strict=True):
        assert torch.equal(x, y)


# --------------------------------------------------------------------------- loaders


def batches(ds: PretrainDataset, num_workers: int, epoch: int = 0) -> list:
    loader = make_loader(
        ds,
        batch_size=4,
        shuffle=True,
        seed=11,
        num_workers=num_workers,
        drop_last=True,
        epoch=epoch,
    )
    return list(loader)


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for u, v in zip(x, y, strict=True):
            assert torch.equal(u, v)


def test_a_persistent_loader_brings_each_epoch_to_its_workers(split: SkeletonSplit) -> None:
    """Workers that live for the whole run still draw each epoch's augmentations.

    A persistent worker keeps the dataset copy it started with; without the epoch in the
    sampled items, epoch 1 would repeat epoch 0's augmentations in the workers only.
    """

    def run(num_workers: int) -> list[list]:
        loader, sampler = make_epoch_loader(
            PretrainDataset(split, seed=1), 4, shuffle=True, seed=11, num_workers=num_workers
        )
        epochs = []
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            epochs.append(list(loader))
        return epochs

    serial, workers = run(0), run(2)
    for a, b in zip(serial, workers, strict=True):
        assert_same_batches(a, b)
    # the batches of the per-epoch loader: switching loaders leaves a run's results as they were
    for epoch in (0, 1):
        assert_same_batches(serial[epoch], batches(PretrainDataset(split, seed=1), 0, epoch))
    # each epoch equals a fresh dataset told that epoch, item by item, in the sampled order
    reference = PretrainDataset(split, seed=1)
    reference.set_epoch(1)
    indices = workers[1][0][2].tolist()
    assert indices == epoch_order(len(FRAMES), 11, 1)[:4]
    assert torch.equal(workers[1][0][0][0], reference[indices[0]][0])
    assert not torch.equal(workers[0][0][0], workers[1][0][0])


def test_loader_is_reproducible_across_runs_and_worker_counts(split: SkeletonSplit) -> None:
    ds = PretrainDataset(split, seed=1)
    serial = batches(ds, num_workers=0)
    assert len(serial) == len(FRAMES) // 4
    assert_same_batches(serial, batches(ds, num_workers=0))
    assert_same_batches(serial, batches(ds, num_workers=2))
    assert_same_batches(batches(ds, 0, epoch=1), batches(ds, 2, epoch=1))
    # another epoch: another order and other augmentations
    other = batches(ds, num_workers=0, epoch=1)
    assert not torch.equal(serial[0][2], other[0][2]) or not torch.equal(serial[0][0], other[0][0])
    assert ds.epoch == 1


def test_loader_sets_epoch_through_subset(split: SkeletonSplit) -> None:
    ds = ClassificationDataset(split, seed=0)
    subset = torch.utils.data.Subset(ds, [0, 2, 5])
    make_loader(subset, batch_size=2, shuffle=False, seed=0, epoch=3)
    assert ds.epoch == 3


def test_epoch_sampler_shards_an_epoch_across_processes() -> None:
    """Under DDP each rank gets its own slice of one seeded permutation: the shards are
    disjoint, cover every item but the dropped tail, change with the epoch and repeat
    for the same epoch (catches every rank sharing one shard, or an unseeded order)."""
    from halp.data.loaders import EpochSampler

    def shards(epoch: int) -> list[list[int]]:
        out = []
        for rank in range(3):
            sampler = EpochSampler(
                10, shuffle=True, seed=5, rank=rank, world_size=3, drop_last=True
            )
            sampler.set_epoch(epoch)
            pairs = list(sampler)
            assert {e for e, _ in pairs} == {epoch} and len(sampler) == 3
            out.append([i for _, i in pairs])
        return out

    first = shards(0)
    flat = [i for shard in first for i in shard]
    assert len(flat) == 9 and len(set(flat)) == 9 and set(flat) <= set(range(10))
    assert shards(0) == first and shards(1) != first
    with pytest.raises(ValueError, match="rank 3"):
        EpochSampler(10, shuffle=True, seed=5, rank=3, world_size=3)
