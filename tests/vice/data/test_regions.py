import multiprocessing as mp

import numpy as np
import pytest

from vice.config import RegionConfig
from vice.data import regions
from vice.data.regions import (
    RegionCache,
    decompose,
    decompose_cached,
    grid_regions,
    pixel_regions,
    relabel_consecutive,
    slic_regions,
)

QUADRANT_COLOURS = np.array([[250, 10, 10], [10, 250, 10], [10, 10, 250], [240, 240, 30]], np.uint8)


def quadrant_image(height: int = 64, width: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """Four flat quadrants with hard colour edges at (height//2 - 3, width//2 + 5)."""
    cy, cx = height // 2 - 3, width // 2 + 5
    quadrant = (np.arange(height)[:, None] >= cy).astype(int) * 2 + (np.arange(width)[None, :] >= cx)
    rng = np.random.default_rng(0)
    noise = rng.integers(-4, 5, size=(height, width, 3))
    image = np.clip(QUADRANT_COLOURS[quadrant].astype(int) + noise, 0, 255).astype(np.uint8)
    return image, quadrant


def test_relabel_consecutive_keeps_order():
    labels = np.array([[7, 7, 3], [42, 3, 7]])
    np.testing.assert_array_equal(relabel_consecutive(labels), [[1, 1, 0], [2, 0, 1]])


def test_slic_ids_never_cross_a_colour_edge_and_are_consecutive():
    image, quadrant = quadrant_image()
    ids = slic_regions(image, "SLIC", region_size=10, ruler=10.0, iterations=5, connectivity=False)
    assert ids.dtype == np.int32 and ids.shape == quadrant.shape
    num = int(ids.max()) + 1
    np.testing.assert_array_equal(np.unique(ids), np.arange(num))
    # Each id lies in exactly one quadrant: count distinct (id, quadrant) pairs per id.
    pairs = np.unique(ids.ravel() * 4 + quadrant.ravel())
    np.testing.assert_array_equal(np.bincount(pairs // 4, minlength=num), np.ones(num))
    # ~ H*W / region_size^2 = 51 regions, with quadrant edges adding some
    assert 30 <= num <= 120
    # The connectivity step merges slivers under a quarter superpixel into a neighbour, across an
    # edge if need be: at most a sliver's worth of pixels per region leaves its quadrant.
    connected = slic_regions(image, "SLIC", region_size=10, ruler=10.0, iterations=5)
    pairs = np.bincount(connected.ravel() * 4 + quadrant.ravel(), minlength=(connected.max() + 1) * 4)
    off_quadrant = pairs.reshape(-1, 4).sum(1) - pairs.reshape(-1, 4).max(1)  # (R,)
    assert off_quadrant.max() <= 10 * 10 // 4


@pytest.mark.parametrize("algorithm", ["SLICO", "MSLIC"])
def test_slic_variants_give_consecutive_ids(algorithm):
    image, _ = quadrant_image(40, 48)
    ids = slic_regions(image, algorithm, region_size=10, ruler=10.0, iterations=3)
    np.testing.assert_array_equal(np.unique(ids), np.arange(ids.max() + 1))
    assert 10 <= ids.max() + 1 <= 40  # ~ 40 * 48 / 10^2 = 19


def components_per_label(ids: np.ndarray) -> np.ndarray:
    """(R,) number of 4-connected components of each label of an (H, W) id map."""
    import cv2

    return np.array(
        [
            cv2.connectedComponents((ids == label).astype(np.uint8), connectivity=4)[0] - 1
            for label in range(ids.max() + 1)
        ]
    )


def speckle_texture(size: int = 96) -> np.ndarray:
    """Grey salt-and-pepper speckle: raw SLIC labels follow the specks instead of forming patches."""
    rng = np.random.default_rng(4)
    grey = np.where(rng.random((size, size)) < 0.3, 230, 30).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def test_slic_connectivity_gives_one_connected_patch_per_region():
    image = speckle_texture()
    raw = slic_regions(image, "SLIC", region_size=16, ruler=10.0, connectivity=False)
    connected = slic_regions(image, "SLIC", region_size=16, ruler=10.0)
    # Raw OpenCV labels are texture parts: many labels are scattered over dozens of fragments.
    assert components_per_label(raw).max() >= 10
    np.testing.assert_array_equal(components_per_label(connected), np.ones(connected.max() + 1))
    # At most ~ 96^2 / 16^2 = 36 superpixels: fragments were merged, not kept as regions of their own.
    assert 9 <= connected.max() + 1 <= 40


def test_slic_rejects_tiny_region_size():
    image, _ = quadrant_image(32, 32)
    with pytest.raises(ValueError, match="region_size=2"):
        slic_regions(image, "SLIC", region_size=2)


def test_grid_cells_have_side_cell():
    height, width, cell = 23, 30, 7
    ids = grid_regions(height, width, cell)
    rows, cols = -(-height // cell), -(-width // cell)
    assert ids.dtype == np.int32
    assert len(np.unique(ids)) == rows * cols == 4 * 5
    np.testing.assert_array_equal(np.unique(ids), np.arange(20))
    ys, xs = np.mgrid[:height, :width]
    for cell_id in range(rows * cols):
        r, c = divmod(cell_id, cols)
        expected = (ys // cell == r) & (xs // cell == c)
        np.testing.assert_array_equal(ids == cell_id, expected)
    # an interior cell is a full 7x7 square, the last column 30 - 28 = 2 wide
    assert (ids == 6).sum() == 49
    assert (ids == 4).sum() == 7 * 2


def test_pixel_regions_give_one_region_per_pixel():
    ids = pixel_regions(5, 7)
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids.ravel(), np.arange(35))
    assert ids[2, 3] == 2 * 7 + 3


def test_decompose_dispatches_on_method():
    image, _ = quadrant_image(24, 32)
    np.testing.assert_array_equal(
        decompose(image, RegionConfig(method="grid", region_size=8)), grid_regions(24, 32, 8)
    )
    np.testing.assert_array_equal(decompose(image, RegionConfig(method="pixel")), pixel_regions(24, 32))
    np.testing.assert_array_equal(
        decompose(image, RegionConfig(method="slic", region_size=8)), slic_regions(image, "SLIC", 8, 10.0, 5)
    )
    with pytest.raises(ValueError, match=r"regions\.method='voronoi'"):
        decompose(image, RegionConfig(method="voronoi"))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        decompose(image[..., 0], RegionConfig(method="grid"))


def counting_slic(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = regions.slic_regions

    def wrapped(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(regions, "slic_regions", wrapped)
    return calls


def test_cache_returns_identical_map_without_recomputing(tmp_path, monkeypatch):
    calls = counting_slic(monkeypatch)
    image, _ = quadrant_image()
    cfg = RegionConfig(method="slic", region_size=10)
    cache = RegionCache(tmp_path)
    first = decompose_cached(image, cfg, cache)
    second = decompose_cached(image, cfg, cache)
    assert len(calls) == 1
    np.testing.assert_array_equal(first, second)
    assert second.dtype == np.int32
    np.testing.assert_array_equal(first, slic_regions(image, "SLIC", 10, 10.0, 5))
    # a different parameter or a different image is a different key
    decompose_cached(image, RegionConfig(method="slic", region_size=12), cache)
    decompose_cached(image[::-1].copy(), cfg, cache)
    assert len(calls) == 3
    assert len(list(tmp_path.rglob("*.npz"))) == 3
    assert not list(tmp_path.rglob("*.tmp"))


def test_truncated_cache_file_is_recomputed(tmp_path, monkeypatch):
    calls = counting_slic(monkeypatch)
    image, _ = quadrant_image()
    cfg = RegionConfig(method="slic", region_size=10)
    cache = RegionCache(tmp_path)
    expected = decompose_cached(image, cfg, cache)
    path = cache.path(cache.key(image, cfg))
    path.write_bytes(path.read_bytes()[:40])
    np.testing.assert_array_equal(decompose_cached(image, cfg, cache), expected)
    assert len(calls) == 2
    # the rewritten entry is valid again
    np.testing.assert_array_equal(cache.load(cache.key(image, cfg), image.shape[:2]), expected)


def test_concurrent_writers_leave_a_valid_file(tmp_path):
    image, _ = quadrant_image()
    cfg = RegionConfig(method="slic", region_size=10)
    cache = RegionCache(tmp_path)
    with mp.get_context("spawn").Pool(4) as pool:
        results = pool.starmap(decompose_cached, [(image, cfg, cache)] * 4)
    expected = slic_regions(image, "SLIC", 10, 10.0, 5)
    for result in results:
        np.testing.assert_array_equal(result, expected)
    np.testing.assert_array_equal(cache.load(cache.key(image, cfg), image.shape[:2]), expected)
    assert [p.suffix for p in tmp_path.rglob("*") if p.is_file()] == [".npz"]
