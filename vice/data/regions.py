"""Region decomposition: SLIC superpixels, grid cells or single pixels, with an on-disk cache.

Every map returned here is ``(H, W) int32`` with consecutive ids ``0..R-1``; ``R = map.max() + 1``.
The decomposition runs once on the whole image, before views are cropped, so every view of an
image shares the same ids.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from pathlib import Path

import cv2
import numpy as np

from vice.config import MIN_SLIC_REGION_SIZE, RegionConfig
from vice.io import atomic_write

log = logging.getLogger(__name__)

_SLIC_ALGORITHMS = ("SLIC", "SLICO", "MSLIC")  # names of cv2.ximgproc constants (opencv-contrib)

#: Bumped whenever the stored format or the decomposition code changes, so stale entries miss.
CACHE_VERSION = 2
#: SLIC connectivity step: fragments smaller than this percentage of a superpixel join a neighbour (OpenCV default).
SLIC_MIN_ELEMENT_PERCENT = 25


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype {image.dtype}: "
            "convert with cv2.cvtColor(..., cv2.COLOR_BGR2RGB) and .astype(np.uint8)"
        )


def relabel_consecutive(labels: np.ndarray) -> np.ndarray:
    """Map arbitrary non-negative ids to consecutive ids ``0..R-1``, keeping their order.

    Args:
        labels: (H, W) integer ids.

    Returns:
        (H, W) int32 ids; ``R`` = number of distinct input ids.
    """
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape).astype(np.int32)  # (H, W)


def slic_regions(
    image: np.ndarray,
    algorithm: str = "SLIC",
    region_size: int = 20,
    ruler: float = 10.0,
    iterations: int = 5,
    connectivity: bool = True,
) -> np.ndarray:
    """OpenCV SLIC superpixels on a 3x3 Gaussian-blurred BGR image (as the ViCE authors do).

    OpenCV's ``iterate()`` alone leaves SLIC's last step out: a label can be many disconnected
    fragments (on a busy texture, every dark stroke or bright speck of it), so a "superpixel" is a
    texture *part* spread over the image. ``connectivity`` runs that step
    (``enforceLabelConnectivity``): every region is one connected patch, and fragments smaller than
    a quarter of a superpixel join a neighbour.

    Args:
        image: (H, W, 3) uint8 RGB.
        algorithm: ``SLIC``, ``SLICO`` or ``MSLIC``.
        region_size: average superpixel side in pixels (>= ``MIN_SLIC_REGION_SIZE``).
        ruler: compactness; larger gives squarer regions.
        iterations: number of ``iterate()`` passes.
        connectivity: enforce connected regions (SLIC as published); False gives the raw labels,
            as the authors' code does.

    Returns:
        (H, W) int32 region ids, consecutive ``0..R-1``.
    """
    _check_image(image)
    if algorithm not in _SLIC_ALGORITHMS:
        raise ValueError(f"regions.algorithm={algorithm!r} is invalid: one of {tuple(_SLIC_ALGORITHMS)}")
    if region_size < MIN_SLIC_REGION_SIZE:
        raise ValueError(
            f"regions.region_size={region_size} is invalid: >= {MIN_SLIC_REGION_SIZE} for SLIC "
            "(OpenCV indexes out of bounds below that, opencv_contrib#623)"
        )
    bgr = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), (3, 3), 0)
    slic = cv2.ximgproc.createSuperpixelSLIC(
        bgr, algorithm=getattr(cv2.ximgproc, algorithm), region_size=int(region_size), ruler=float(ruler)
    )
    slic.iterate(int(iterations))
    if connectivity:
        slic.enforceLabelConnectivity(SLIC_MIN_ELEMENT_PERCENT)
    return relabel_consecutive(slic.getLabels())


def grid_regions(height: int, width: int, cell: int) -> np.ndarray:
    """Square cells of side ``cell`` in row-major order; the last row/column may be narrower.

    Args:
        height: H.
        width: W.
        cell: cell side in pixels.

    Returns:
        (H, W) int32 ids ``0..ceil(H/cell)*ceil(W/cell)-1``.
    """
    if cell < 1:
        raise ValueError(f"regions.region_size={cell} is invalid: grid cells need a side >= 1")
    cells_per_row = -(-width // cell)
    rows = np.arange(height, dtype=np.int32) // cell
    cols = np.arange(width, dtype=np.int32) // cell
    return rows[:, None] * cells_per_row + cols[None, :]  # (H, W)


def pixel_regions(height: int, width: int) -> np.ndarray:
    """Every pixel its own region (no decomposition, the paper's "1px").

    Returns:
        (H, W) int32 ids ``0..H*W-1`` in row-major order.
    """
    return np.arange(height * width, dtype=np.int32).reshape(height, width)  # (H, W)


def decompose(image: np.ndarray, cfg: RegionConfig) -> np.ndarray:
    """Decompose an image by ``cfg.method`` (``slic`` | ``grid`` | ``pixel``).

    Args:
        image: (H, W, 3) uint8 RGB.
        cfg: the region config.

    Returns:
        (H, W) int32 region ids, consecutive ``0..R-1``.
    """
    _check_image(image)
    height, width = image.shape[:2]
    if cfg.method == "slic":
        return slic_regions(
            image, cfg.algorithm, cfg.region_size, cfg.ruler, cfg.iterations, cfg.connectivity
        )
    if cfg.method == "grid":
        return grid_regions(height, width, cfg.region_size)
    if cfg.method == "pixel":
        return pixel_regions(height, width)
    raise ValueError(f"regions.method={cfg.method!r} is invalid: one of ('slic', 'grid', 'pixel')")


class RegionCache:
    """Decompositions stored as compressed ``.npz`` files, keyed by image bytes and parameters.

    Files live at ``cache_dir/<2 hex>/<hash>.npz``. Writes go to a unique temporary file in the
    same directory followed by ``os.replace``, so concurrent writers (DataLoader workers, SLURM
    jobs) of the same key leave one complete file. An unreadable entry is recomputed and rewritten.
    """

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.cache_dir = Path(cache_dir)

    def key(self, image: np.ndarray, cfg: RegionConfig) -> str:
        """Hex digest of the image (shape and bytes) and every parameter that changes the map."""
        digest = hashlib.blake2b(digest_size=20)
        params = (
            f"v{CACHE_VERSION}|{cfg.method}|{cfg.algorithm}|{cfg.region_size}|{cfg.ruler!r}|{cfg.iterations}"
            f"|{cfg.connectivity}"
        )
        digest.update(params.encode())
        digest.update(repr((image.shape, image.dtype.str)).encode())
        digest.update(np.ascontiguousarray(image).data)
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        """Where the entry for ``key`` is stored."""
        return self.cache_dir / key[:2] / f"{key}.npz"

    def load(self, key: str, shape: tuple[int, int]) -> np.ndarray | None:
        """Return the stored (H, W) int32 map, or None if missing, unreadable or of another shape."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            with np.load(path) as stored:
                regions = stored["regions"]
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
            log.warning("region cache entry %s is unreadable (%s): recomputing it", path, err)
            return None
        if regions.shape != shape:
            log.warning(
                "region cache entry %s has shape %s, expected %s: recomputing", path, regions.shape, shape
            )
            return None
        return regions.astype(np.int32)

    def store(self, key: str, regions: np.ndarray) -> None:
        """Atomically write ``regions`` (H, W) under ``key`` (uint16 when the ids fit)."""
        compact = regions.astype(np.uint16) if regions.max(initial=0) <= np.iinfo(np.uint16).max else regions
        atomic_write(
            self.path(key), lambda handle: np.savez_compressed(handle, regions=compact), durable=False
        )


def decompose_cached(image: np.ndarray, cfg: RegionConfig, cache: RegionCache | None) -> np.ndarray:
    """:func:`decompose` through ``cache`` (SLIC only; grid and pixel maps are cheaper to recompute).

    Args:
        image: (H, W, 3) uint8 RGB.
        cfg: the region config.
        cache: the cache, or None to always compute.

    Returns:
        (H, W) int32 region ids, consecutive ``0..R-1``.
    """
    if cache is None or cfg.method != "slic":
        return decompose(image, cfg)
    _check_image(image)
    key = cache.key(image, cfg)
    regions = cache.load(key, image.shape[:2])
    if regions is None:
        regions = decompose(image, cfg)
        cache.store(key, regions)
    return regions
