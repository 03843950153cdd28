"""Training data: images -> regions -> M views per image -> batches of views.

The views of image ``i`` in epoch ``e`` are a function of ``(seed, e, i)`` only, so they do not
depend on the number of DataLoader workers, on which worker draws them, or on the order of draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vice.config import Config, RegionConfig, ViewConfig
from vice.data.folder import ImageFolder
from vice.data.regions import RegionCache, decompose_cached
from vice.data.sampler import ResumableBatchSampler
from vice.data.synthetic import synthetic_split
from vice.data.views import NoMutualRegionsError, ViewSet, make_views

#: Datasets with labels on disk; training ignores the labels (built by ``vice.data.labelled``).
LABELLED_TRAIN_DATASETS = ("cocostuff", "cityscapes", "labelled_folder")


class ImageSource(Protocol):
    """Anything indexable that yields ``(image (H, W, 3) uint8 RGB, label or None)``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[np.ndarray, Any]: ...


@dataclass(frozen=True)
class ViewBatch:
    """B images x M views, image-major: flat index ``b * M + m``.

    Attributes:
        views: (B*M, 3, S, S) float32 normalized views.
        regions: (B*M, S, S) int64 mutual region ids ``0..R_b-1`` of image b, -1 = ignore.
        num_regions: (B,) int64 mutual regions per image, R_b.
    """

    views: torch.Tensor
    regions: torch.Tensor
    num_regions: torch.Tensor

    def pin_memory(self) -> ViewBatch:
        """Page-locked copy (called by the DataLoader when ``pin_memory=True``)."""
        return ViewBatch(self.views.pin_memory(), self.regions.pin_memory(), self.num_regions.pin_memory())


def collate_views(sets: Sequence[ViewSet]) -> ViewBatch:
    """Stack the views of B images, image-major.

    Args:
        sets: B view sets with the same M and S.

    Returns:
        The :class:`ViewBatch`; rows ``b*M .. b*M + M - 1`` are the views of ``sets[b]``.
    """
    shapes = {tuple(s.views.shape) for s in sets}
    if len(shapes) != 1:
        raise ValueError(f"view sets differ in shape {sorted(shapes)}: all images need the same views config")
    return ViewBatch(
        views=torch.cat([s.views for s in sets]),  # (B*M, 3, S, S)
        regions=torch.cat([s.regions for s in sets]),  # (B*M, S, S)
        num_regions=torch.tensor([s.num_regions for s in sets], dtype=torch.int64),  # (B,)
    )


class ViewDataset(Dataset[ViewSet]):
    """The M views of every image of ``base``; item i of epoch e is fixed by ``(seed, e, i)``.

    Items are indexed by ``(epoch, index)`` keys (see :class:`vice.data.sampler.ResumableBatchSampler`),
    so DataLoader workers share no epoch state and a resumed run draws the same views.

    Args:
        base: the images.
        region_cfg: how images are decomposed.
        view_cfg: how views are generated.
        seed: the augmentation seed.
        cache: the decomposition cache, or None to decompose every time.
    """

    def __init__(
        self,
        base: ImageSource,
        region_cfg: RegionConfig,
        view_cfg: ViewConfig,
        seed: int,
        cache: RegionCache | None = None,
    ) -> None:
        self.base = base
        self.region_cfg = region_cfg
        self.view_cfg = view_cfg
        self.seed = seed
        self.cache = cache

    def __len__(self) -> int:
        return len(self.base)

    def sample(self, index: int, epoch: int) -> ViewSet:
        """The views of image ``index`` in ``epoch``."""
        image = self.base[index][0]
        regions = decompose_cached(image, self.region_cfg, self.cache)
        rng = np.random.default_rng([self.seed, epoch, index])
        try:
            return make_views(image, regions, self.view_cfg, rng)
        except NoMutualRegionsError as err:
            raise NoMutualRegionsError(f"image {index} of {type(self.base).__name__}: {err}") from err

    def __getitem__(self, key: tuple[int, int]) -> ViewSet:  # type: ignore[override]
        epoch, index = key
        return self.sample(index, epoch)


def build_image_source(cfg: Config) -> ImageSource:
    """The images ``cfg.data`` names (labels, if any, are ignored by training)."""
    data = cfg.data
    if data.name == "synthetic":
        height, width = data.image_size
        return synthetic_split(data.split, data.num_images, (height, width))
    if data.root is None:
        raise ValueError(f"data.root is not set: data.name={data.name!r} needs the dataset directory")
    if data.name == "folder":
        return ImageFolder(data.root)
    if data.name in LABELLED_TRAIN_DATASETS:
        from vice.data.labelled import build_labelled_dataset

        return build_labelled_dataset(data.name, data.root, data.split, data.split_set)
    raise ValueError(
        f"data.name={data.name!r} is invalid: one of ('synthetic', 'folder', *{LABELLED_TRAIN_DATASETS})"
    )


def build_train_dataset(cfg: Config) -> ViewDataset:
    """The :class:`ViewDataset` of ``cfg`` (data source, regions, views, seed, region cache)."""
    cache = RegionCache(cfg.regions.cache_dir) if cfg.regions.cache_dir else None
    return ViewDataset(build_image_source(cfg), cfg.regions, cfg.views, cfg.seed, cache)


def build_train_loader(cfg: Config, rank: int, world_size: int, start_step: int) -> DataLoader[ViewBatch]:
    """Batches for steps ``start_step .. cfg.train.max_steps - 1`` of this rank.

    The batch of a step depends only on (seed, step, rank), so a resumed run sees exactly the
    batches the uninterrupted run would have seen, whatever ``data.num_workers`` is.
    """
    dataset = build_train_dataset(cfg)
    sampler = ResumableBatchSampler(
        len(dataset), cfg.data.batch_size, cfg.seed, rank, world_size, start_step, cfg.train.max_steps
    )
    on_cuda = cfg.train.device == "cuda" or (cfg.train.device == "auto" and torch.cuda.is_available())
    workers = cfg.data.num_workers
    if workers > 0:
        # One OpenCV thread per worker (the workers are the parallelism). Set in the parent before the
        # fork: a forked child that resizes a thread pool its parent had started deadlocks.
        cv2.setNumThreads(1)
    return DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_sampler=sampler,
        collate_fn=collate_views,
        num_workers=workers,
        pin_memory=on_cuda,
        prefetch_factor=4 if workers else None,
    )
