import dataclasses

import numpy as np
import pytest
import torch

from vice.config import ViewConfig
from vice.data.photometric import IMAGENET_MEAN, IMAGENET_STD
from vice.data.regions import grid_regions
from vice.data.views import (
    CENTRE_FLOOR,
    NoMutualRegionsError,
    cap_coverage,
    centre_probability,
    crop_regions,
    make_views,
    region_presence,
    relabel_mutual,
    sample_boxes,
    sample_centre,
    sample_mask,
    source_coordinates,
)

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def ramp_image(height: int = 120, width: int = 150) -> np.ndarray:
    """R = y, G = x, B = 60 + (x + y) / 4: linear, so bilinear sampling of it is exact."""
    ys, xs = np.mgrid[:height, :width].astype(np.float64)
    return np.stack([ys, xs, 60 + (xs + ys) / 4], axis=-1).astype(np.uint8)


def plain_cfg(**overrides) -> ViewConfig:
    values = dict(
        num_views=4, view_size=48, resize_range=[0.6, 1.8], photometric=False, mask_ratio=0.0, max_resample=10
    )
    values.update(overrides)
    return ViewConfig(**values)


def test_centre_probability_floor_and_edges():
    flat = np.full((20, 30, 3), 90, np.uint8)
    prob = centre_probability(flat)
    assert prob.dtype == np.float64
    np.testing.assert_allclose(prob, np.full((20, 30), 1 / 600))

    halves = flat.copy()
    halves[:, 15:] = 200
    prob = centre_probability(halves)
    assert prob.sum() == pytest.approx(1.0)
    # The edge peak has density 1 + floor, far-away flat pixels only the floor.
    assert prob.max() / prob.min() == pytest.approx((1 + CENTRE_FLOOR) / CENTRE_FLOOR)
    assert set(np.unravel_index(prob.argmax(), prob.shape)[1].ravel()) <= {13, 14, 15, 16}
    assert prob[:, 0].max() == pytest.approx(prob.min())


def test_centre_is_drawn_from_the_probability_map():
    prob = np.zeros((4, 5))
    prob[1, 3], prob[2, 0] = 0.25, 0.75
    rng = np.random.default_rng(0)
    draws = [sample_centre(prob, rng) for _ in range(2000)]
    assert set(draws) == {(1, 3), (2, 0)}
    assert abs(draws.count((1, 3)) / 2000 - 0.25) < 0.04  # 4 standard deviations


def test_boxes_contain_the_centre_and_fit_the_image():
    rng = np.random.default_rng(3)
    for _ in range(200):
        height, width = rng.integers(20, 200, size=2)
        centre = (int(rng.integers(height)), int(rng.integers(width)))
        boxes = sample_boxes(centre, (height, width), 5, 64, (0.5, 2.0), rng)
        sides = boxes[:, 2] - boxes[:, 0]
        np.testing.assert_array_equal(sides, boxes[:, 3] - boxes[:, 1])
        assert np.all((sides >= 32) & (sides <= 128))
        assert np.all((boxes[:, 0] <= centre[0]) & (centre[0] < boxes[:, 2]))
        assert np.all((boxes[:, 1] <= centre[1]) & (centre[1] < boxes[:, 3]))
        for axis, extent in ((0, height), (1, width)):
            fits = sides <= extent
            start, stop = boxes[:, axis], boxes[:, axis + 2]
            # inside the image when the crop fits, covering the whole image otherwise
            assert np.all(np.where(fits, (start >= 0) & (stop <= extent), (start <= 0) & (stop >= extent)))


def test_boxes_are_placed_in_one_sector_each():
    rng = np.random.default_rng(0)
    centre = np.array([500, 500])
    for _ in range(50):
        boxes = sample_boxes((500, 500), (1000, 1000), 5, 64, (0.5, 1.5), rng)
        mid = (boxes[:, :2] + boxes[:, 2:]) / 2 - 0.5  # (M, 2) crop centres in pixel coordinates
        assert np.abs(mid[0] - centre).max() <= 1.0
        offset = mid[1:] - centre  # (M - 1, 2)
        angle = np.arctan2(offset[:, 0], offset[:, 1])
        sector_mid = (np.arange(4) + 0.5) * np.pi / 2
        off_mid = np.abs((angle - sector_mid + np.pi) % (2 * np.pi) - np.pi)
        # rounding to whole pixels moves the crop centre by <= 1 px: allow that much angle
        distance = np.hypot(*offset.T)
        far = distance > 2
        tolerance = np.arcsin(1.5 / distance[far])
        assert np.all(off_mid[far] <= np.pi / 4 + tolerance)


def test_region_ids_follow_the_view_geometry():
    image = ramp_image()
    regions = grid_regions(120, 150, 10)
    cfg = plain_cfg(flip_prob=0.5)
    for seed in range(6):
        out = make_views(image, regions, cfg, np.random.default_rng(seed))
        size = cfg.view_size
        lookup = np.full(regions.max() + 2, -1)
        lookup[out.source_ids + 1] = np.arange(out.num_regions)
        checked = 0
        for m in range(cfg.num_views):
            top, left, bottom, _ = out.boxes[m]
            side = bottom - top
            for i in range(0, size, 3):
                for j in range(0, size, 5):
                    col = size - 1 - j if out.flips[m] else j
                    y = top + int(np.floor((i + 0.5) * side / size))
                    x = left + int(np.floor((col + 0.5) * side / size))
                    inside = 0 <= y < 120 and 0 <= x < 150
                    expected = lookup[regions[y, x] + 1] if inside else -1
                    assert out.regions[m, i, j] == expected
                    checked += inside
        assert checked > 500


def test_pixels_follow_the_view_geometry():
    image = ramp_image()
    cfg = plain_cfg(flip_prob=0.5, view_size=96)  # crops up to 1.8 * 96 > 120: some padding
    out = make_views(image, grid_regions(120, 150, 10), cfg, np.random.default_rng(1))
    pixels = (out.views * STD + MEAN) * 255  # (M, 3, S, S) back in [0, 255]
    ys, xs = source_coordinates(out.boxes, out.flips, cfg.view_size)
    yy = np.broadcast_to(ys[:, :, None], pixels.shape[:1] + pixels.shape[2:])
    xx = np.broadcast_to(xs[:, None, :], yy.shape)
    interior = (yy >= 0) & (yy <= 119) & (xx >= 0) & (xx <= 149)
    expected = np.stack([yy, xx, 60 + (xx + yy) / 4], axis=1)
    np.testing.assert_allclose(
        pixels.numpy().transpose(0, 2, 3, 1)[interior], expected.transpose(0, 2, 3, 1)[interior], atol=1.0
    )
    # pixels outside the image are the ImageNet mean, i.e. 0 after normalization
    outside = ~(
        (np.floor(yy + 0.5) >= 0)
        & (np.floor(yy + 0.5) < 120)
        & (np.floor(xx + 0.5) >= 0)
        & (np.floor(xx + 0.5) < 150)
    )
    assert outside.any()
    assert out.views.permute(0, 2, 3, 1)[torch.from_numpy(outside)].abs().max() < 1e-6
    # flipped views sample mirrored columns
    assert out.flips.any()


def test_mutual_filtering_keeps_ids_present_in_every_view():
    image = ramp_image()
    regions = grid_regions(120, 150, 7)
    cfg = plain_cfg(num_views=5, resize_range=[0.4, 1.0])
    out = make_views(image, regions, cfg, np.random.default_rng(7))
    ys, xs = source_coordinates(out.boxes, out.flips, cfg.view_size)
    raw = crop_regions(regions, ys, xs)
    per_view = [set(np.unique(raw[m])) - {-1} for m in range(cfg.num_views)]
    common = sorted(set.intersection(*per_view))
    assert len(common) < len(set.union(*per_view))  # the test is not vacuous
    np.testing.assert_array_equal(out.source_ids, common)
    assert out.num_regions == len(common)
    for m in range(cfg.num_views):
        np.testing.assert_array_equal(np.unique(out.regions[m].numpy()), np.arange(-1, len(common)))
        np.testing.assert_array_equal(out.regions[m].numpy() >= 0, np.isin(raw[m], common))


def test_region_presence_and_relabel_by_hand():
    views = np.array([[[0, 2], [-1, 2]], [[2, 1], [1, 3]]])  # (M=2, 2, 2)
    presence = region_presence(views, 4)
    np.testing.assert_array_equal(presence, [[True, False, True, False], [False, True, True, True]])
    relabelled, source = relabel_mutual(views, presence.all(axis=0))
    np.testing.assert_array_equal(source, [2])
    np.testing.assert_array_equal(relabelled, [[[-1, 0], [-1, 0]], [[0, -1], [-1, -1]]])


def test_mask_respects_protection_and_rectangle_size():
    regions = grid_regions(60, 60, 6)
    views = crop_regions(regions, *source_coordinates(np.array([[0, 0, 60, 60]] * 3), np.zeros(3, bool), 40))
    num_ids = 100
    for seed in range(20):
        mask = sample_mask(views, num_ids, 0.25, 0.3, np.random.default_rng(seed))
        sides = mask.rects[:, 2:] - mask.rects[:, :2]
        assert np.all((sides >= 1) & (sides <= 10))
        assert np.all((mask.rects[:, :2] >= 0) & (mask.rects[:, 2:] <= 40))
        mutual = region_presence(views, num_ids).all(axis=0)
        assert mask.protected.sum() == round(0.3 * mutual.sum())
        assert not (mask.protected & ~mutual).any()
        for m in range(3):
            top, left, bottom, right = mask.rects[m]
            touched = set(np.unique(views[m, top:bottom, left:right]))
            masked_ids = touched - set(np.flatnonzero(mask.protected))
            np.testing.assert_array_equal(mask.masked[m], np.isin(views[m], list(masked_ids)))
            assert not np.isin(np.flatnonzero(mask.protected), views[m][mask.masked[m]]).any()
        removed = np.isin(np.arange(num_ids), views[mask.masked])
        np.testing.assert_array_equal(mask.kept, mutual & ~removed)


def test_large_regions_are_masked_only_up_to_the_coverage_cap():
    """20 px cells in 40 px views: a 10 px rectangle can touch 4 cells (up to 1,600 px), the cap is 400 px."""
    regions = grid_regions(80, 80, 20)
    views = crop_regions(regions, *source_coordinates(np.array([[5, 5, 45, 45]] * 3), np.zeros(3, bool), 40))
    num_ids = 16
    shares, capped = [], 0
    for seed in range(40):
        mask = sample_mask(views, num_ids, 0.25, 0.0, np.random.default_rng(seed))
        shares.extend(mask.masked.reshape(3, -1).mean(axis=1))
        for m in range(3):
            top, left, bottom, right = mask.rects[m]
            touched = set(np.unique(views[m, top:bottom, left:right]).tolist())
            masked_ids = set(np.unique(views[m][mask.masked[m]]).tolist())
            assert masked_ids <= touched  # only touched regions, and each one whole:
            np.testing.assert_array_equal(mask.masked[m], np.isin(views[m], list(masked_ids)))
            capped += masked_ids != touched
    assert max(shares) <= 0.25
    assert capped > 0 and max(shares) > 0.1  # the cap bound, and it did not simply mask nothing


def test_cap_coverage_keeps_a_random_prefix_that_fits():
    candidates = np.array([[True, True, True, False], [True, False, False, False]])
    areas = np.array([[300, 200, 100, 50], [500, 10, 10, 10]])
    seen = set()
    for seed in range(30):
        kept = cap_coverage(candidates, areas, 400, np.random.default_rng(seed))
        assert not (kept & ~candidates).any()
        assert (np.where(kept, areas, 0).sum(axis=1) <= 400).all()
        assert not kept[1].any()  # a region larger than the cap is never masked
        seen.add(tuple(kept[0].tolist()))
    # the random order's longest prefix under the cap: 300+100, 200+100, or one region when the next overflows
    assert seen == {
        (True, False, True, False),
        (False, True, True, False),
        (True, False, False, False),
        (False, True, False, False),
    }


def test_full_protection_masks_nothing():
    views = crop_regions(
        grid_regions(30, 30, 5), *source_coordinates(np.array([[0, 0, 30, 30]] * 2), np.zeros(2, bool), 30)
    )
    mask = sample_mask(views, 36, 0.5, 1.0, np.random.default_rng(0))
    assert not mask.masked.any()
    assert mask.kept.all()


def test_masked_pixels_are_noise_and_ignored():
    image = ramp_image()
    cfg = plain_cfg(mask_ratio=0.25, mask_protected_share=0.25)
    out = make_views(image, grid_regions(120, 150, 6), cfg, np.random.default_rng(4))
    assert out.masked.any()
    noise = out.views.permute(0, 2, 3, 1)[out.masked]
    assert noise.min() >= -1 and noise.max() <= 1 and noise.std() > 0.4  # U(-1, 1) has std 0.577
    assert (out.regions[out.masked] == -1).all()
    sides = out.mask_boxes[:, 2:] - out.mask_boxes[:, :2]
    assert sides.max() <= 0.25 * cfg.view_size


def test_the_last_attempt_is_unmasked_so_one_image_cannot_end_the_run(caplog):
    image = ramp_image(40, 40)
    regions = np.zeros((40, 40), np.int32)  # one region: every rectangle touches it, masking kills it
    cfg = plain_cfg(mask_ratio=1.0, mask_protected_share=0.0, max_resample=3)
    out = make_views(image, regions, cfg, np.random.default_rng(0))
    assert out.num_regions == 1 and not out.masked.any()
    assert set(out.regions.unique().tolist()) == {-1, 0}  # the one region, and padding outside the image
    assert "no region survived masking in 2 attempts" in caplog.text


def test_no_mutual_region_even_unmasked_raises_a_clear_error(monkeypatch):
    import vice.data.views as views_module

    real = views_module.sample_mask

    def nothing_kept(*args, **kwargs):
        mask = real(*args, **kwargs)
        return dataclasses.replace(mask, kept=np.zeros_like(mask.kept))

    monkeypatch.setattr(views_module, "sample_mask", nothing_kept)
    cfg = plain_cfg(mask_ratio=0.25, mask_protected_share=0.0, max_resample=3)
    with pytest.raises(NoMutualRegionsError, match=r"views\.max_resample=3 attempts, the last one unmasked"):
        make_views(ramp_image(40, 40), grid_regions(40, 40, 8), cfg, np.random.default_rng(0))


def test_same_seed_same_views_different_seed_different_views():
    image = ramp_image()
    image[30:70, 40:90] = [200, 30, 30]
    regions = grid_regions(120, 150, 8)
    cfg = ViewConfig(num_views=3, view_size=32)
    a = make_views(image, regions, cfg, np.random.default_rng(11))
    b = make_views(image, regions, cfg, np.random.default_rng(11))
    c = make_views(image, regions, cfg, np.random.default_rng(12))
    assert torch.equal(a.views, b.views) and torch.equal(a.regions, b.regions)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert not torch.equal(a.views, c.views)
    assert a.views.dtype == torch.float32 and a.regions.dtype == torch.int64
