import logging

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vice.config import Config, DataConfig, RegionConfig, ViewConfig
from vice.data.folder import ImageFolder
from vice.data.regions import RegionCache
from vice.data.synthetic import SyntheticScenes
from vice.data.train import (
    ViewBatch,
    ViewDataset,
    build_train_dataset,
    build_train_loader,
    collate_views,
)
from vice.data.views import NoMutualRegionsError, ViewSet

REGIONS = RegionConfig(method="slic", region_size=8)
VIEWS = ViewConfig(num_views=3, view_size=24)


def tiny_dataset(cache=None) -> ViewDataset:
    return ViewDataset(SyntheticScenes(6, (48, 64), seed=0), REGIONS, VIEWS, seed=3, cache=cache)


def hand_view_set(fill: float, num_regions: int) -> ViewSet:
    """M = 2 views of side 2 whose pixels all equal fill + m and regions all m - 1."""
    views = fill + torch.arange(2.0).view(2, 1, 1, 1).expand(2, 3, 2, 2)
    regions = (torch.arange(2) - 1).view(2, 1, 1).expand(2, 2, 2)
    empty = np.zeros((2, 4), np.int64)
    return ViewSet(
        views=views.contiguous(),
        regions=regions.contiguous(),
        num_regions=num_regions,
        source_ids=np.arange(num_regions),
        centre=(0, 0),
        boxes=empty,
        flips=np.zeros(2, bool),
        mask_boxes=empty,
        masked=torch.zeros(2, 2, 2, dtype=torch.bool),
    )


def test_collate_is_image_major():
    batch = collate_views([hand_view_set(10.0, 4), hand_view_set(20.0, 7), hand_view_set(30.0, 1)])
    assert batch.views.shape == (6, 3, 2, 2)
    # flat index b * M + m holds image b, view m
    np.testing.assert_array_equal(batch.views[:, 0, 0, 0].numpy(), [10, 11, 20, 21, 30, 31])
    np.testing.assert_array_equal(batch.regions[:, 0, 0].numpy(), [-1, 0, -1, 0, -1, 0])
    assert batch.num_regions.dtype == torch.int64
    np.testing.assert_array_equal(batch.num_regions.numpy(), [4, 7, 1])


def test_collate_rejects_mixed_shapes():
    small = hand_view_set(0.0, 1)
    big = ViewSet(**{**small.__dict__, "views": torch.zeros(3, 3, 2, 2)})
    with pytest.raises(ValueError, match="differ in shape"):
        collate_views([small, big])


def test_items_depend_on_seed_epoch_and_index_only():
    ds = tiny_dataset()
    first = ds[0, 2]
    again = tiny_dataset().sample(2, 0)
    assert torch.equal(first.views, again.views) and torch.equal(first.regions, again.regions)
    assert not torch.equal(ds[1, 2].views, first.views)
    assert torch.equal(ds[1, 2].views, tiny_dataset().sample(2, 1).views)
    assert first.views.shape == (3, 3, 24, 24)
    assert first.num_regions == int(first.regions.max()) + 1


def loader_batches(ds: ViewDataset, workers: int, epochs: list[int]) -> list[ViewBatch]:
    keys = [[(epoch, i) for i in pair] for epoch in epochs for pair in ([4, 0], [5, 1])]
    loader = DataLoader(ds, batch_sampler=keys, num_workers=workers, collate_fn=collate_views)
    return list(loader)


def test_same_batches_with_zero_or_two_workers_across_epochs():
    serial = loader_batches(tiny_dataset(), 0, [0, 1])
    parallel = loader_batches(tiny_dataset(), 2, [0, 1])
    assert len(serial) == len(parallel) == 4
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(a.views, b.views)
        assert torch.equal(a.regions, b.regions)
        assert torch.equal(a.num_regions, b.num_regions)
    assert not torch.equal(serial[0].views, serial[2].views)  # epoch 1 differs from epoch 0


def test_cached_regions_give_the_same_views(tmp_path):
    plain = tiny_dataset()[0, 1]
    cached_ds = tiny_dataset(RegionCache(tmp_path))
    cached_ds[0, 1]
    cached = cached_ds[0, 1]
    assert torch.equal(plain.views, cached.views) and torch.equal(plain.regions, cached.regions)
    assert len(list(tmp_path.rglob("*.npz"))) == 1


def test_no_mutual_region_error_names_the_image(monkeypatch):
    import dataclasses

    import vice.data.views as views_module

    real = views_module.sample_mask

    def nothing_kept(*args, **kwargs):  # views that share no region, masked or not
        mask = real(*args, **kwargs)
        return dataclasses.replace(mask, kept=np.zeros_like(mask.kept))

    monkeypatch.setattr(views_module, "sample_mask", nothing_kept)
    views = ViewConfig(num_views=3, view_size=24, max_resample=2)
    ds = ViewDataset(SyntheticScenes(3, (32, 32)), RegionConfig(method="grid", region_size=8), views, seed=0)
    with pytest.raises(NoMutualRegionsError, match="image 2 of SyntheticScenes"):
        ds[0, 2]


def small_config(**data) -> Config:
    cfg = Config(regions=RegionConfig(method="grid", region_size=8), views=VIEWS)
    cfg.data = DataConfig(
        **{"num_images": 10, "image_size": [40, 48], "batch_size": 2, "num_workers": 0, **data}
    )
    cfg.train.device = "cpu"
    return cfg


def test_build_train_loader_batches_and_shards():
    cfg = small_config()
    cfg.train.max_steps = 7
    loader = build_train_loader(cfg, rank=0, world_size=1, start_step=0)
    assert len(loader) == 7
    batch = next(iter(loader))
    assert batch.views.shape == (2 * 3, 3, 24, 24)
    assert batch.regions.shape == (6, 24, 24)
    assert batch.num_regions.shape == (2,)
    # each image's region ids run over 0..R_b-1 in its own M maps
    for b in range(2):
        ids = batch.regions[b * 3 : (b + 1) * 3]
        assert int(ids.max()) + 1 == int(batch.num_regions[b])
    ranks = [list(build_train_loader(cfg, rank, 2, 0).batch_sampler) for rank in (0, 1)]
    epoch0 = [{k for batch in r[:2] for k in batch} for r in ranks]  # 10 images / (2 x 2) = 2 steps per epoch
    assert len(epoch0[0]) == len(epoch0[1]) == 4 and not epoch0[0] & epoch0[1]
    resumed = list(build_train_loader(cfg, 1, 2, start_step=3).batch_sampler)
    assert resumed == ranks[1][3:]
    with pytest.raises(ValueError, match="fewer than one global batch"):
        build_train_loader(small_config(num_images=3), 0, 2, 0)


def test_build_train_dataset_dispatches(tmp_path):
    ds = build_train_dataset(small_config())
    assert isinstance(ds.base, SyntheticScenes) and len(ds) == 10 and ds.base.seed == 0
    assert ds.cache is None
    write_rgb(tmp_path / "a.png", solid(50, (40, 48)))
    cfg = small_config(name="folder", root=str(tmp_path))
    cfg.regions.cache_dir = str(tmp_path / "cache")
    ds = build_train_dataset(cfg)
    assert isinstance(ds.base, ImageFolder) and len(ds) == 1
    assert ds.cache is not None and ds.cache.cache_dir == tmp_path / "cache"
    with pytest.raises(ValueError, match=r"data\.root is not set"):
        build_train_dataset(small_config(name="cocostuff"))


# ImageFolder ------------------------------------------------------------------


def write_rgb(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))


def solid(value, shape=(6, 8)):
    image = np.zeros((*shape, 3), np.uint8)
    image[..., 0] = value
    return image


def test_folder_lists_images_recursively_sorted_as_rgb(tmp_path):
    write_rgb(tmp_path / "b" / "x.png", solid(30))
    write_rgb(tmp_path / "a.PNG", solid(10))
    write_rgb(tmp_path / "b" / "a" / "y.png", solid(20))
    (tmp_path / "notes.txt").write_text("not an image")
    ds = ImageFolder(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in ds.files] == ["a.PNG", "b/a/y.png", "b/x.png"]
    assert len(ds) == 3
    image, label = ds[1]
    assert label is None
    assert image.dtype == np.uint8 and image.shape == (6, 8, 3)
    np.testing.assert_array_equal(image[0, 0], [20, 0, 0])  # RGB order, not BGR
    assert ImageFolder(tmp_path, extensions=("txt",)).files == [tmp_path / "notes.txt"]


def test_folder_missing_or_empty_root_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no images"):
        ImageFolder(tmp_path / "empty")


def test_folder_corrupt_image_is_skipped_and_counted(tmp_path, caplog):
    write_rgb(tmp_path / "0.png", solid(10))
    (tmp_path / "1.png").write_bytes(b"\x89PNG garbage")
    write_rgb(tmp_path / "2.png", solid(30))
    ds = ImageFolder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="vice.data.folder"):
        image, _ = ds[1]
        np.testing.assert_array_equal(image[0, 0], [30, 0, 0])  # the next valid one
        ds[1]
    assert ds.num_skipped == 1
    assert sum("1.png" in rec.getMessage() for rec in caplog.records) == 1


def test_folder_corrupt_last_image_wraps_around(tmp_path):
    write_rgb(tmp_path / "0.png", solid(10))
    (tmp_path / "1.png").write_bytes(b"")
    ds = ImageFolder(tmp_path)
    np.testing.assert_array_equal(ds[1][0][0, 0], [10, 0, 0])
    with pytest.raises(IndexError, match="index 2"):
        ds[2]
    (tmp_path / "0.png").write_bytes(b"nope")
    with pytest.raises(RuntimeError, match="no file under"):
        ImageFolder(tmp_path)[0]
