"""Torch datasets and loaders over a prepared split (docs/data/index.md, "The training loader").

``PretrainDataset`` yields two independently augmented views of a sample (and the extra
views of methods such as AimCLR and HiCLR);
``ClassificationDataset`` one clip and its label. Both read one sample per
``__getitem__`` from the memory-mapped array, never the whole array.

**Randomness.** Every item draws from its own generator,
``np.random.default_rng([seed, epoch, index, view])``, so an item's augmentation depends
only on the dataset seed, the epoch and the item's index: not on the worker that loads
it, the number of workers or the order in which items are asked for. The training loop
sets the epoch with ``dataset.set_epoch(epoch)``, or simply builds each epoch's loader
with ``make_loader(..., epoch=epoch)``, which does it. ``make_loader`` never uses
persistent workers: each epoch's worker processes get a fresh copy of the dataset and
therefore its current epoch (a persistent worker would keep the epoch it was started
with). ``make_epoch_loader`` keeps its workers for the whole run instead: its
:class:`EpochSampler` hands out ``(epoch, index)`` pairs, so every item carries the
epoch to whichever worker loads it, and the batches are those of ``make_loader``'s rule
(the order a function of ``(seed, epoch)`` only) whatever the number of workers.

**Modalities** are computed on the augmented 64-frame joint clip of each view, so joint,
motion and bone share one augmentation draw, as in CMD (:mod:`halp.data.modalities`).
"""

from __future__ import annotations

import mmap
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from halp.data.augment import (
    DEFAULT_FRAMES,
    MIN_CROP_LENGTH,
    AugmentationSpec,
    Transform,
    build_augmentation,
    center_crop_resize,
    temporal_crop_resize,
)
from halp.data.layouts import SkeletonLayout
from halp.data.modalities import MODALITIES, modality_function
from halp.data.storage import SkeletonSplit
from halp.errors import DataFormatError, UsageError


def _check_modalities(modality: str | Sequence[str]) -> tuple[str, ...]:
    names = (modality,) if isinstance(modality, str) else tuple(modality)
    unknown = [n for n in names if n not in MODALITIES]
    if unknown or not names:
        raise UsageError(f"unknown modality {unknown or names}; known: {', '.join(MODALITIES)}")
    return names


# --------------------------------------------------------------------------- datasets


class _SplitDataset(Dataset):
    """What both datasets share: lazy sample access, modalities, per-item generators."""

    def __init__(
        self, split: SkeletonSplit, modality: str | Sequence[str], out_frames: int, seed: int
    ) -> None:
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.split = split
        self.modalities = _check_modalities(modality)
        self.single = isinstance(modality, str)  # a str gives a tensor, a list a dict
        self.out_frames = out_frames
        self.seed = seed
        self.epoch = 0
        layout = split.layout  # the bone modality's pairs come from the data
        self._modality_fns = {n: modality_function(n, layout) for n in self.modalities}

    def __len__(self) -> int:
        return len(self.split)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws ``__getitem__`` makes (call once per epoch)."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self.epoch = epoch

    def _index(self, item: int | tuple[int, int]) -> int:
        """An item's index; an ``(epoch, index)`` pair (:class:`EpochSampler`) sets the epoch."""
        if isinstance(item, tuple):
            epoch, index = item
            self.set_epoch(int(epoch))
            return int(index)
        return int(item)

    def rng(self, index: int, *stream: int) -> np.random.Generator:
        """The generator of item ``index`` in the current epoch (``stream`` picks a view)."""
        return np.random.default_rng([self.seed, self.epoch, index, *stream])

    def sample(self, index: int) -> tuple[np.ndarray, int]:
        """The (3, T, V, M) memory-map row of ``index`` (not yet read) and its valid frames."""
        frames = self.split.valid_frames(index)
        if frames < 1:
            idx = self.split.index
            raise DataFormatError(
                f"sample {index} ({idx.names[index]!r}) of {idx.dataset}/{idx.benchmark}/"
                f"{idx.part} has no valid frames; it cannot be cropped"
            )
        return self.split.data[index], frames

    def to_output(self, clip: np.ndarray) -> torch.Tensor | dict[str, torch.Tensor]:
        """The requested modality tensor(s) of one augmented joint clip."""
        out = {n: torch.from_numpy(fn(clip).copy()) for n, fn in self._modality_fns.items()}
        return out[self.modalities[0]] if self.single else out

    # A np.memmap pickles as a full in-memory copy; workers started by spawn or
    # forkserver would each receive the whole array. Pickle the file reference instead.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        data = self.split.data
        if isinstance(data, np.memmap) and isinstance(data.base, mmap.mmap):
            ref = (data.filename, data.dtype.str, data.shape, data.offset)
            state["split"] = (ref, self.split.index)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state["split"], tuple):
            (filename, dtype, shape, offset), index = state["split"]
            data = np.memmap(filename, dtype=dtype, mode="r", shape=shape, offset=offset)
            state["split"] = SkeletonSplit(data=data, index=index)
        self.__dict__.update(state)


class PretrainDataset(_SplitDataset):
    """Two independently augmented views per sample, for contrastive pretraining.

    Each view: random temporal crop (``scale`` of the valid length, at least
    ``min_length`` frames) resized to ``out_frames``, then the spatial ``augmentation``
    (a ``build_augmentation`` spec or a ``Transform``; ``"isc"`` is ISC/CMD/HaLP's).
    Views are drawn from separate streams of the item's generator.

    ``views`` adds named extra views, each with its own augmentation (the same temporal
    crop, then its spatial transform), drawn from streams 2, 3, ... in the given order.

    Returns ``(query, key, index)``, or ``(query, key, index, extra)`` with ``extra`` a
    dict view name -> view when ``views`` is not empty; a view is a float32
    (3, out_frames, V, M) tensor if ``modality`` is a str, or a dict modality -> tensor
    if it is a list.
    """

    def __init__(
        self,
        split: SkeletonSplit,
        modality: str | Sequence[str] = "joint",
        augmentation: AugmentationSpec | Transform = "isc",
        scale: tuple[float, float] = (0.1, 1.0),
        out_frames: int = DEFAULT_FRAMES,
        seed: int = 0,
        min_length: int = MIN_CROP_LENGTH,
        views: Mapping[str, AugmentationSpec | Transform] | None = None,
    ) -> None:
        super().__init__(split, modality, out_frames, seed)
        layout = split.layout  # augmentations that name joints use the data's
        self.augmentation = _transform(augmentation, layout)
        self.scale = scale
        self.min_length = min_length
        self.views = {name: _transform(spec, layout) for name, spec in (views or {}).items()}

    def view(self, index: int, stream: int, augmentation: Transform | None = None) -> np.ndarray:
        """The augmented joint clip of view ``stream`` (0 = query, 1 = key) of ``index``."""
        x, frames = self.sample(index)
        rng = self.rng(index, stream)
        clip = temporal_crop_resize(x, frames, rng, self.scale, self.out_frames, self.min_length)
        return (augmentation or self.augmentation)(clip, rng)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[Any, ...]:
        index = self._index(item)
        query = self.to_output(self.view(index, 0))
        key = self.to_output(self.view(index, 1))
        if not self.views:
            return query, key, index
        extra = {
            name: self.to_output(self.view(index, 2 + i, transform))
            for i, (name, transform) in enumerate(self.views.items())
        }
        return query, key, index, extra


class ClassificationDataset(_SplitDataset):
    """One clip and its label, for linear evaluation, fine-tuning and kNN.

    ``train=True``: random crop of ``scale`` (default U(0.5, 1)) of the valid frames,
    resized to ``out_frames``; no spatial augmentation. ``train=False``: deterministic
    centre crop keeping ``keep`` (95 %) of the valid frames.

    Returns ``(clip, label)``; ``clip`` as in ``PretrainDataset``.
    """

    def __init__(
        self,
        split: SkeletonSplit,
        modality: str | Sequence[str] = "joint",
        train: bool = True,
        scale: tuple[float, float] = (0.5, 1.0),
        out_frames: int = DEFAULT_FRAMES,
        seed: int = 0,
        min_length: int = MIN_CROP_LENGTH,
        keep: float = 0.95,
    ) -> None:
        super().__init__(split, modality, out_frames, seed)
        self.train = train
        self.scale = scale
        self.min_length = min_length
        self.keep = keep

    def clip(self, index: int) -> np.ndarray:
        """The cropped and resized joint clip of ``index``."""
        x, frames = self.sample(index)
        if self.train:
            rng = self.rng(index)
            return temporal_crop_resize(
                x, frames, rng, self.scale, self.out_frames, self.min_length
            )
        return center_crop_resize(x, frames, self.keep, self.out_frames)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[Any, int]:
        index = self._index(item)
        return self.to_output(self.clip(index)), int(self.split.index.labels[index])


def _transform(spec: AugmentationSpec | Transform, layout: SkeletonLayout) -> Transform:
    """A ``Transform`` as is, or the one a ``build_augmentation`` spec names for ``layout``."""
    return spec if callable(spec) else build_augmentation(spec, layout)


# --------------------------------------------------------------------------- loaders


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed numpy's and Python's global generators in each worker.

    Our datasets never use global state; this is for third-party code that does. Torch
    has already seeded the worker with ``base_seed + worker_id``, where ``base_seed``
    comes from the loader's seeded generator. With persistent workers
    (:func:`make_epoch_loader`) this happens once per run, not per epoch: global draws
    made in workers are reproducible for a run from its start, not across a resume.
    """
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # noqa: NPY002 -- seeding the legacy global state is the point
    random.seed(worker_seed)


def _set_epoch(dataset: Dataset, epoch: int) -> None:
    """Call ``set_epoch`` on ``dataset``, looking through ``Subset`` wrappers."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    elif isinstance(dataset, Subset):
        _set_epoch(dataset.dataset, epoch)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffled order of ``n`` items in ``epoch``: a function of ``(seed, epoch)`` only.

    The order :func:`make_loader` gives (its DataLoader draws the workers' base seed from
    the generator, then the sampler's permutation), so a run trains on the same batches
    with either loader.
    """
    generator = _seeded([seed, epoch])
    torch.empty((), dtype=torch.int64).random_(generator=generator)  # the base seed's draw
    return torch.randperm(n, generator=generator).tolist()


class EpochSampler(Sampler[tuple[int, int]]):
    """``(epoch, index)`` pairs in the epoch's order (:func:`epoch_order`, or in turn).

    Call :meth:`set_epoch` before each epoch; the pairs carry the epoch into persistent
    workers, whose copies of the dataset never see the main process's ``set_epoch``.
    With ``world_size`` > 1 it yields process ``rank``'s shard of the epoch, drawn by
    PyTorch's own ``DistributedSampler``, so DistributedDataParallel runs keep their
    workers too.
    """

    def __init__(
        self,
        n: int,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.n = n
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self._shards: DistributedSampler[int] | None = None
        if world_size > 1:
            self._shards = DistributedSampler(
                range(n),  # type: ignore[arg-type]  # any Sized serves
                world_size,
                rank,
                shuffle=shuffle,
                seed=seed,
                drop_last=drop_last,
            )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order (and items) the next iteration yields."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n if self._shards is None else len(self._shards)

    def _order(self) -> list[int]:
        if self._shards is not None:  # PyTorch's own sharding, at this epoch
            self._shards.set_epoch(self.epoch)
            return list(self._shards)
        return epoch_order(self.n, self.seed, self.epoch) if self.shuffle else list(range(self.n))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(self.epoch, i) for i in self._order()])


def make_epoch_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[DataLoader, EpochSampler]:
    """A DataLoader for a whole run, with persistent workers, and its sampler.

    Call ``sampler.set_epoch(epoch)`` before iterating each epoch. ``dataset`` must
    accept ``(epoch, index)`` items (both datasets of this module do). ``rank`` and
    ``world_size`` select one process's shard (:class:`EpochSampler`); ``drop_last``
    drops the last partial batch (and, across processes, the items that do not divide).
    """
    sampler = EpochSampler(
        len(dataset),  # type: ignore[arg-type]
        shuffle,
        seed,
        rank=rank,
        world_size=world_size,
        drop_last=drop_last,
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        persistent_workers=num_workers > 0,
        **_loader_args(num_workers, drop_last, pin_memory, _seeded([seed, 2])),
    )
    return loader, sampler


def _seeded(entropy: list[int]) -> torch.Generator:
    """A torch generator seeded through a ``SeedSequence`` of ``entropy``."""
    generator = torch.Generator()
    generator.manual_seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))
    return generator


def _loader_args(
    num_workers: int, drop_last: bool, pin_memory: bool, generator: torch.Generator
) -> dict[str, Any]:
    """The DataLoader arguments both loaders share (workers seeded by ``seed_worker``)."""
    return {
        "num_workers": num_workers,
        "drop_last": drop_last,
        "pin_memory": pin_memory,
        "generator": generator,
        "worker_init_fn": seed_worker,
    }


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    drop_last: bool = False,
    epoch: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A reproducible DataLoader for one epoch; build a new one each epoch.

    Sets the dataset's epoch, seeds the shuffle order from ``(seed, epoch)`` and seeds
    each worker (``seed_worker``). With the same arguments the batches are identical
    whatever ``num_workers`` is. The generator seed is derived through a
    ``SeedSequence`` rather than ``seed + epoch``, so that (seed 0, epoch 1) and
    (seed 1, epoch 0) do not share an order. Workers are not persistent (see the
    module docstring).
    """
    _set_epoch(dataset, epoch)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        persistent_workers=False,
        **_loader_args(num_workers, drop_last, pin_memory, _seeded([seed, epoch])),
    )
