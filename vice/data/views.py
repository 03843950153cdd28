"""View generation (the paper's Algorithm 1): crops around a content-rich centre, masking, mutual regions.

One call of :func:`make_views` turns an image and its region map into M views of side S:

1. sample a centre point from a Canny-edge probability map (:func:`centre_probability`);
2. sample M square crops of side ``beta * S`` that all contain the centre (view 0 centred on it,
   the others displaced into one angular sector each), and a horizontal flip per view;
3. resample every crop to S x S (bilinear for pixels, nearest for region ids; -1 outside the image);
4. mask one rectangle per view: every non-protected region touching it is replaced by noise and
   dropped from the mutual set;
5. keep only the regions present in all M views, relabelled to ``0..R'-1`` (-1 = ignore);
6. photometric augmentation (SimCLR colour distortion, blur) and ImageNet normalization.

All randomness comes from the numpy ``Generator`` passed in, so the output is a function of
(image, regions, cfg, generator state).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from vice.config import ViewConfig
from vice.data.photometric import IMAGENET_MEAN, IMAGENET_STD, photometric

#: Uniform floor added to the [0, 1] edge map so flat areas can still be sampled.
CENTRE_FLOOR = 0.005
CANNY_LOW, CANNY_HIGH = 10, 50


log = logging.getLogger(__name__)


class NoMutualRegionsError(RuntimeError):
    """No region survived in all views after ``max_resample`` attempts."""


@dataclass(frozen=True)
class ViewSet:
    """The M views of one image.

    Attributes:
        views: (M, 3, S, S) float32, ImageNet-normalized; masked pixels are U(-1, 1) noise.
        regions: (M, S, S) int64 mutual region ids ``0..R'-1``; -1 = ignore (not mutual, masked, padding).
        num_regions: R', the number of mutual regions; the same id is the same region in every view.
        source_ids: (R',) int64, the id in the input region map of each mutual region.
        centre: (y, x) of the sampled centre point in image pixels.
        boxes: (M, 4) int64 crops ``(top, left, bottom, right)`` in image pixels, bottom/right
            exclusive; a crop may extend past the image (padding).
        flips: (M,) bool, whether each view is flipped horizontally.
        mask_boxes: (M, 4) int64 mask rectangles ``(top, left, bottom, right)`` in view pixels.
        masked: (M, S, S) bool, the pixels replaced by noise.
    """

    views: torch.Tensor
    regions: torch.Tensor
    num_regions: int
    source_ids: np.ndarray
    centre: tuple[int, int]
    boxes: np.ndarray
    flips: np.ndarray
    mask_boxes: np.ndarray
    masked: torch.Tensor


def centre_probability(image: np.ndarray) -> np.ndarray:
    """Where view centres are sampled: dilated, blurred Canny edges plus a uniform floor.

    Args:
        image: (H, W, 3) uint8 RGB.

    Returns:
        (H, W) float64 probabilities summing to 1.
    """
    grey = cv2.cvtColor(cv2.GaussianBlur(image, (3, 3), 0), cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(grey, CANNY_LOW, CANNY_HIGH, L2gradient=True)
    edges = cv2.dilate(edges, np.ones((3, 3), np.uint8))
    density = np.asarray(cv2.GaussianBlur(edges.astype(np.float64), (3, 3), 0), np.float64)
    peak = float(density.max())
    density = density / peak + CENTRE_FLOOR if peak > 0 else np.full_like(density, CENTRE_FLOOR)
    return density / density.sum()


def sample_centre(probability: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """Draw one pixel ``(y, x)`` from a (H, W) probability map."""
    cdf = np.cumsum(probability.ravel())  # (H*W,)
    flat = min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), probability.size - 1)
    y, x = divmod(flat, probability.shape[1])
    return y, x


def sample_boxes(
    centre: tuple[int, int],
    image_shape: tuple[int, int],
    num_views: int,
    view_size: int,
    resize_range: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Square crops that all contain ``centre``: view 0 centred on it, view m in angular sector m.

    A crop of side L = round(beta * S), beta ~ U(resize_range), is displaced from the centre by up
    to L/2 in a direction drawn from its own sector of the circle, then shifted so that it still
    contains the centre and lies inside the image when L fits (otherwise it covers the image and
    the excess is padding).

    Args:
        centre: (y, x) in image pixels.
        image_shape: (H, W).
        num_views: M.
        view_size: S.
        resize_range: (low, high) for beta.
        rng: the generator.

    Returns:
        (M, 4) int64 ``(top, left, bottom, right)``, bottom/right exclusive.
    """
    beta = rng.uniform(resize_range[0], resize_range[1], size=num_views)
    sides = np.maximum(np.rint(beta * view_size), 1).astype(np.int64)  # (M,)
    sector = np.arange(num_views) - 1  # view 0 has no sector
    angle = 2 * np.pi * (sector + rng.random(num_views)) / max(num_views - 1, 1)
    radius = rng.random(num_views) * sides / 2
    radius[0] = 0.0
    point = np.asarray(centre, np.float64)  # (2,)
    offset = radius[:, None] * np.stack([np.sin(angle), np.cos(angle)], axis=1)  # (M, 2)
    start = np.rint(point + offset - sides[:, None] / 2).astype(np.int64)  # (M, 2)
    extent = np.asarray(image_shape, np.int64)[None, :] - sides[:, None]  # (M, 2) H - L, W - L
    low = np.maximum(point.astype(np.int64) - sides[:, None] + 1, np.minimum(0, extent))
    high = np.minimum(point.astype(np.int64), np.maximum(0, extent))
    start = np.clip(start, low, high)
    return np.concatenate([start, start + sides[:, None]], axis=1)  # (M, 4)


def source_coordinates(boxes: np.ndarray, flips: np.ndarray, view_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Continuous image coordinates (pixel centres at integers) sampled by each view pixel.

    Row i of view m samples ``y = top + (i + 0.5) * L / S - 0.5``; column j samples the same
    formula in x at column ``S - 1 - j`` when the view is flipped.

    Args:
        boxes: (M, 4) crops ``(top, left, bottom, right)``.
        flips: (M,) bool.
        view_size: S.

    Returns:
        ys (M, S) and xs (M, S) float64.
    """
    steps = (np.arange(view_size) + 0.5) / view_size  # (S,)
    sides = (boxes[:, 2] - boxes[:, 0]).astype(np.float64)  # (M,)
    ys = boxes[:, :1] + steps[None, :] * sides[:, None] - 0.5  # (M, S)
    xs = boxes[:, 1:2] + steps[None, :] * sides[:, None] - 0.5  # (M, S)
    xs = np.where(flips[:, None], xs[:, ::-1], xs)
    return ys, xs


def crop_regions(regions: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Nearest-neighbour resampling of a region map; -1 where a view pixel falls outside the image.

    Args:
        regions: (H, W) integer region ids.
        ys: (M, S) source row coordinates.
        xs: (M, S) source column coordinates.

    Returns:
        (M, S, S) int64 region ids.
    """
    height, width = regions.shape
    rows = np.floor(ys + 0.5).astype(np.int64)  # (M, S)
    cols = np.floor(xs + 0.5).astype(np.int64)  # (M, S)
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
    gathered = regions[np.clip(rows, 0, height - 1)[:, :, None], np.clip(cols, 0, width - 1)[:, None, :]]
    return np.where(inside, gathered, -1).astype(np.int64)  # (M, S, S)


def crop_pixels(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> torch.Tensor:
    """Bilinear resampling of an image at the given coordinates; ImageNet-mean grey outside it.

    Args:
        image: (H, W, 3) uint8 RGB.
        ys: (M, S) source row coordinates.
        xs: (M, S) source column coordinates.

    Returns:
        (M, 3, S, S) float32 in [0, 1].
    """
    height, width = image.shape[:2]
    num_views = ys.shape[0]
    pixels = torch.from_numpy(image).permute(2, 0, 1).float().div_(255)  # (3, H, W)
    # grid_sample with align_corners=False maps pixel centre c to (2c + 1) / n - 1.
    gy = torch.from_numpy((2 * ys + 1) / height - 1).float()  # (M, S)
    gx = torch.from_numpy((2 * xs + 1) / width - 1).float()  # (M, S)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # (M, S, S, 2)
    crops = F.grid_sample(
        pixels.expand(num_views, 3, height, width),
        grid,
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )  # (M, 3, S, S)
    rows = np.floor(ys + 0.5)
    cols = np.floor(xs + 0.5)
    inside_rows = torch.from_numpy((rows >= 0) & (rows < height))  # (M, S)
    inside_cols = torch.from_numpy((cols >= 0) & (cols < width))  # (M, S)
    inside = (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None]  # (M, 1, S, S)
    fill = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    return torch.where(inside, crops, fill)


def region_areas(view_regions: np.ndarray, num_ids: int) -> np.ndarray:
    """Pixels of each id in each view.

    Args:
        view_regions: (M, S, S) ids in ``-1..num_ids-1``.
        num_ids: R.

    Returns:
        (M, R) int64 pixel counts.
    """
    num_views = view_regions.shape[0]
    flat = view_regions.reshape(num_views, -1) + 1 + np.arange(num_views)[:, None] * (num_ids + 1)  # (M, S*S)
    counts = np.bincount(flat.ravel(), minlength=num_views * (num_ids + 1))
    return counts.reshape(num_views, num_ids + 1)[:, 1:]  # (M, R)


def region_presence(view_regions: np.ndarray, num_ids: int) -> np.ndarray:
    """Which ids occur in each view: (M, S, S) ids in ``-1..num_ids-1`` -> (M, R) bool."""
    return region_areas(view_regions, num_ids) > 0


def cap_coverage(
    candidates: np.ndarray, areas: np.ndarray, max_pixels: int, rng: np.random.Generator
) -> np.ndarray:
    """Keep, per view, the candidate regions taken in random order while their pixels fit ``max_pixels``.

    Args:
        candidates: (M, R) bool, regions a view would mask.
        areas: (M, R) int64 pixels of each region in each view.
        max_pixels: the most pixels one view may mask.
        rng: the generator.

    Returns:
        (M, R) bool, a subset of ``candidates`` whose areas sum to at most ``max_pixels`` per view.
    """
    keys = np.where(candidates, rng.random(candidates.shape), 2.0)  # non-candidates sort last
    order = np.argsort(keys, axis=1)  # (M, R)
    sorted_areas = np.take_along_axis(np.where(candidates, areas, 0), order, axis=1)
    fits = (np.cumsum(sorted_areas, axis=1) <= max_pixels) & np.take_along_axis(candidates, order, axis=1)
    kept = np.zeros_like(candidates)
    np.put_along_axis(kept, order, fits, axis=1)
    return kept


@dataclass(frozen=True)
class RegionMask:
    """The outcome of region masking for the M views of one image.

    Attributes:
        masked: (M, S, S) bool, pixels to replace by noise.
        kept: (R,) bool, ids present in all views and masked in none.
        protected: (R,) bool, mutual ids exempt from masking.
        rects: (M, 4) int64 rectangles ``(top, left, bottom, right)`` in view pixels.
    """

    masked: np.ndarray
    kept: np.ndarray
    protected: np.ndarray
    rects: np.ndarray


def sample_mask(
    view_regions: np.ndarray,
    num_ids: int,
    mask_ratio: float,
    protected_share: float,
    rng: np.random.Generator,
) -> RegionMask:
    """Region masking: one rectangle per view; every non-protected region touching it is masked.

    A share ``protected_share`` of the regions present in all views is drawn and never masked.
    Each view gets a rectangle with sides in ``1..floor(mask_ratio * S)`` (the authors' code); the
    pixels of every other region touching it (in that view) are masked, and those regions leave the
    mutual set. ``mask_ratio`` is also the paper's "maximal mask coverage": where the touched regions
    would cover more than ``mask_ratio * S^2`` pixels of a view (large regions), a random subset of
    them that fits is masked (:func:`cap_coverage`); otherwise no extra random numbers are drawn.

    Args:
        view_regions: (M, S, S) ids in ``-1..num_ids-1``.
        num_ids: R.
        mask_ratio: maximal rectangle side as a fraction of S, and maximal masked share of a view.
        protected_share: share of the mutual ids that is never masked.
        rng: the generator.

    Returns:
        The :class:`RegionMask`.
    """
    num_views, size = view_regions.shape[:2]
    areas = region_areas(view_regions, num_ids)  # (M, R)
    mutual = (areas > 0).all(axis=0)  # (R,)
    mutual_ids = np.flatnonzero(mutual)
    protected = np.zeros(num_ids, bool)
    protected[rng.permutation(mutual_ids)[: round(protected_share * len(mutual_ids))]] = True

    max_side = math.floor(mask_ratio * size)
    sides = rng.integers(1, max(max_side, 1) + 1, size=(num_views, 2)) * (max_side >= 1)  # (M, 2)
    starts = (rng.random((num_views, 2)) * (size - sides + 1)).astype(np.int64)  # (M, 2)
    rects = np.concatenate([starts, starts + sides], axis=1)  # (M, 4)
    index = np.arange(size)
    in_rows = (index[None, :] >= rects[:, :1]) & (index[None, :] < rects[:, 2:3])  # (M, S)
    in_cols = (index[None, :] >= rects[:, 1:2]) & (index[None, :] < rects[:, 3:4])  # (M, S)
    in_rect = in_rows[:, :, None] & in_cols[:, None, :]  # (M, S, S)

    touched = region_presence(np.where(in_rect, view_regions, -1), num_ids)  # (M, R)
    masked_ids = touched & ~protected[None, :]  # (M, R)
    max_pixels = math.floor(mask_ratio * size * size)
    over = (np.where(masked_ids, areas, 0).sum(axis=1) > max_pixels)[:, None]  # (M, 1)
    if over.any():
        masked_ids = np.where(over, cap_coverage(masked_ids, areas, max_pixels, rng), masked_ids)
    lookup = np.concatenate([np.zeros((num_views, 1), bool), masked_ids], axis=1)  # (M, R + 1)
    offsets = np.arange(num_views)[:, None, None] * (num_ids + 1)
    masked = lookup.ravel()[view_regions + 1 + offsets]  # (M, S, S)
    kept = np.logical_and(mutual, ~masked_ids.any(axis=0))
    return RegionMask(masked=masked, kept=kept, protected=protected, rects=rects)


def relabel_mutual(view_regions: np.ndarray, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map the kept ids to ``0..R'-1`` (in increasing input order), everything else to -1.

    Args:
        view_regions: (M, S, S) ids in ``-1..R-1``.
        kept: (R,) bool.

    Returns:
        (M, S, S) int64 relabelled ids and (R',) int64 input id of each output id.
    """
    source_ids = np.flatnonzero(kept)
    lookup = np.full(len(kept) + 1, -1, np.int64)
    lookup[source_ids + 1] = np.arange(len(source_ids))
    return lookup[view_regions + 1], source_ids


def make_views(image: np.ndarray, regions: np.ndarray, cfg: ViewConfig, rng: np.random.Generator) -> ViewSet:
    """Algorithm 1 for one image: M views sharing at least one unmasked region.

    Args:
        image: (H, W, 3) uint8 RGB.
        regions: (H, W) integer ids ``0..R-1``.
        cfg: the view config.
        rng: the generator; the output is a function of its state.

    Returns:
        The :class:`ViewSet`.

    Raises:
        NoMutualRegionsError: no region is present in all views after ``cfg.max_resample`` attempts,
            the last one without masking.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype {image.dtype}")
    if regions.shape != image.shape[:2]:
        raise ValueError(
            f"region map is {regions.shape} but the image is {image.shape[:2]}: decompose the same image"
        )
    if regions.min() < 0:
        raise ValueError("region map has negative ids: decompose() returns ids 0..R-1 covering every pixel")
    size = cfg.view_size
    num_ids = int(regions.max()) + 1
    probability = centre_probability(image)
    for attempt in range(cfg.max_resample):
        centre = sample_centre(probability, rng)
        boxes = sample_boxes(
            centre, regions.shape, cfg.num_views, size, (cfg.resize_range[0], cfg.resize_range[1]), rng
        )
        flips = rng.random(cfg.num_views) < cfg.flip_prob
        ys, xs = source_coordinates(boxes, flips, size)
        view_regions = crop_regions(regions, ys, xs)
        # The last attempt masks nothing: every view contains the centre, so its region is usually
        # mutual, and one image whose regions the mask always swallows does not end the run.
        last = attempt == cfg.max_resample - 1
        ratio = 0.0 if last and cfg.max_resample > 1 else cfg.mask_ratio
        mask = sample_mask(view_regions, num_ids, ratio, cfg.mask_protected_share, rng)
        if mask.kept.any():
            if ratio != cfg.mask_ratio:
                log.warning(
                    "image %dx%d: no region survived masking in %d attempts; this sample is not masked",
                    image.shape[0],
                    image.shape[1],
                    attempt,
                )
            break
    else:
        raise NoMutualRegionsError(
            f"no region is shared by all {cfg.num_views} views after views.max_resample={cfg.max_resample} "
            f"attempts, the last one unmasked (image {image.shape[0]}x{image.shape[1]}, {num_ids} regions): "
            "raise views.max_resample or use larger regions"
        )
    relabelled, source_ids = relabel_mutual(view_regions, mask.kept)

    pixels = crop_pixels(image, ys, xs)  # (M, 3, S, S)
    if cfg.photometric:
        pixels = photometric(pixels, cfg.color_strength, cfg.grayscale_prob, cfg.blur_prob, rng)
    views = TF.normalize(pixels, list(IMAGENET_MEAN), list(IMAGENET_STD))
    masked_pixels = torch.from_numpy(mask.masked)
    noise = rng.uniform(-1.0, 1.0, size=(int(mask.masked.sum()), 3))
    views.permute(0, 2, 3, 1)[masked_pixels] = torch.from_numpy(noise).float()
    return ViewSet(
        views=views.contiguous(),
        regions=torch.from_numpy(relabelled),
        num_regions=len(source_ids),
        source_ids=source_ids,
        centre=centre,
        boxes=boxes,
        flips=flips,
        mask_boxes=mask.rects,
        masked=masked_pixels,
    )
