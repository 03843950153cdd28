"""Section 2: ``vice.pooling.region_means`` against the authors' per-region loop, forward and backward.

The region maps are real: SLIC on a synthetic scene, masked per view by Algorithm 1's region masking,
and relabelled to the mutual regions (``vice.data.views``), about 800 regions per image at 400 x 400.

The loop costs about half an hour on a CPU at the full shape (every region's backward writes a
full-map gradient), so it is timed on subsets, k regions of one map for a few k, and the least-squares
line ``ms = per_map + k * per_region`` is extrapolated to all B*M maps and all M*N (map, region) pairs.
Every mask covers the whole map, so a region costs the same whichever it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from benchmarks.reference import loop_region_means
from benchmarks.timing import PhaseTimer, median_ms
from benchmarks.training import region_method
from vice.data.regions import grid_regions, slic_regions
from vice.data.synthetic import render_scene
from vice.data.views import relabel_mutual, sample_mask
from vice.pooling import region_means

#: Algorithm 1's masking at the paper's setting (maximal coverage 25 %, a quarter of regions protected).
MASK_RATIO = 0.25
PROTECTED_SHARE = 0.25


@dataclass(frozen=True)
class PoolingShape:
    """The pooling problem and how long to time it.

    Attributes:
        batch_size: B images.
        num_views: M views per image.
        side: h = w of every embedding map.
        embed_dim: D.
        slic_region_size: SLIC region size giving about 800 mutual regions per image after masking.
        loop_regions: region counts k of the timed loop subsets (k regions of one map each).
        repeats: timed repeats of ours (the loop subsets are timed once each).
        warmup: untimed repeats of ours.
    """

    batch_size: int = 4
    num_views: int = 5
    side: int = 400
    embed_dim: int = 128
    slic_region_size: int = 14
    loop_regions: tuple[int, ...] = (4, 16, 64)
    repeats: int = 3
    warmup: int = 1


#: Small enough to run the whole loop in seconds: checks the extrapolation against a measurement.
CHECK_SHAPE = PoolingShape(2, 2, 200, 32, slic_region_size=10, loop_regions=(4, 16, 64), repeats=1, warmup=0)


def pooling_shape(device: torch.device, quick: bool) -> PoolingShape:
    """The issue's shape (4 x 5 maps of 400^2, ~800 regions, D = 128); tiny maps when ``quick``."""
    if quick:
        return PoolingShape(2, 2, 48, 8, slic_region_size=8, loop_regions=(2, 4, 8), repeats=1, warmup=0)
    if device.type == "cuda":
        return PoolingShape(loop_regions=(16, 64, 256), repeats=10, warmup=3)
    return PoolingShape()


def pooling_regions(shape: PoolingShape, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mutual region maps of B images x M views, image-major.

    Every view of image b starts from the same SLIC map (views share ids); Algorithm 1's masking
    then removes the regions touched by each view's rectangle from the mutual set. Without OpenCV's
    contrib module, grid cells of the same size replace SLIC.

    Returns:
        regions (B*M, side, side) int64 ids 0..R_b-1 with -1 = ignore, and num_regions (B,) int64.
    """
    maps, counts = [], []
    for b in range(shape.batch_size):
        rng = np.random.default_rng([seed, b])
        image, _ = render_scene(rng, shape.side, shape.side)
        if region_method() == "slic":
            base = slic_regions(image, region_size=shape.slic_region_size)  # (side, side)
        else:
            base = grid_regions(shape.side, shape.side, shape.slic_region_size)  # (side, side)
        views = np.broadcast_to(base, (shape.num_views, *base.shape))  # (M, side, side)
        mask = sample_mask(views, int(base.max()) + 1, MASK_RATIO, PROTECTED_SHARE, rng)
        relabelled, source_ids = relabel_mutual(views, mask.kept)  # (M, side, side)
        maps.append(torch.from_numpy(relabelled))
        counts.append(len(source_ids))
    return torch.cat(maps), torch.tensor(counts, dtype=torch.int64)  # (B*M, side, side), (B,)


def extrapolate_loop(
    regions: Sequence[int], ms: Sequence[float], maps_total: int, pairs_total: int
) -> dict[str, float]:
    """Fit ``ms = per_map + k * per_region`` to timings of k regions of one map; extrapolate to the full loop.

    Args:
        regions: the k of every timed subset (at least two distinct values).
        ms: the time of each subset.
        maps_total: B*M maps of the full loop.
        pairs_total: M*N (map, region) pairs of the full loop.

    Returns:
        ``per_region_ms`` and ``per_map_ms`` (each clamped at 0: a negative cost is timing noise) and
        ``total_ms = maps_total * per_map_ms + pairs_total * per_region_ms``.
    """
    if len(set(regions)) < 2 or len(regions) != len(ms):
        raise ValueError(
            f"loop_regions={list(regions)} needs >= 2 distinct counts, one time each (got {len(ms)})"
        )
    slope, intercept = np.polyfit(np.asarray(regions, float), np.asarray(ms, float), 1)
    per_region, per_map = max(0.0, float(slope)), max(0.0, float(intercept))
    return {
        "per_region_ms": per_region,
        "per_map_ms": per_map,
        "total_ms": maps_total * per_map + pairs_total * per_region,
    }


def _time_forward_backward(
    fn: Any, leaf: torch.Tensor, device: torch.device, timer: PhaseTimer
) -> torch.Tensor:
    """Time ``fn()`` and the backward of a fixed random weighting of its output into ``leaf.grad``."""
    leaf.grad = None
    with timer.phase("forward"):
        out = fn()
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(device, out.dtype)
    with timer.phase("backward"):
        out.backward(weights)
    return out.detach()


def pooling_inputs(
    shape: PoolingShape, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random embedding maps (a leaf that requires grad) and the region maps of ``shape`` on ``device``.

    Returns:
        embeddings (B*M, D, side, side), regions (B*M, side, side), num_regions (B,).
    """
    regions, num_regions = pooling_regions(shape)
    generator = torch.Generator().manual_seed(0)
    maps = shape.batch_size * shape.num_views
    embeddings = torch.randn(maps, shape.embed_dim, shape.side, shape.side, generator=generator)
    return embeddings.to(device).requires_grad_(), regions.to(device), num_regions.to(device)


def time_loop(
    embeddings: torch.Tensor,
    regions: torch.Tensor,
    num_regions: torch.Tensor,
    num_views: int,
    counts: Sequence[int],
    device: torch.device,
) -> tuple[dict[str, dict[str, float]], dict[str, list[float]], torch.Tensor]:
    """Time the loop on k regions of the first map for every k in ``counts``; extrapolate per phase.

    Returns:
        The fit per phase (:func:`extrapolate_loop`), the subset samples per phase, and the output
        of the largest subset (1, k, D): view 0 of image 0.
    """
    counts = [min(k, int(num_regions[0])) for k in counts]
    _time_forward_backward(  # untimed: first-call costs
        partial(loop_region_means, embeddings, regions, num_regions, num_views, 1, 1, 1),
        embeddings,
        device,
        PhaseTimer(device),
    )
    timer = PhaseTimer(device)
    out = embeddings.new_zeros(0)
    for k in counts:
        subset = partial(loop_region_means, embeddings, regions, num_regions, num_views, 1, 1, k)
        out = _time_forward_backward(subset, embeddings, device, timer)  # (1, k, D)
    maps, pairs = embeddings.shape[0], num_views * int(num_regions.sum())
    fit = {
        phase: extrapolate_loop(counts, timer.samples[phase], maps, pairs)
        for phase in ("forward", "backward")
    }
    return fit, timer.samples, out


def check_extrapolation(shape: PoolingShape, device: torch.device) -> dict[str, Any]:
    """Run the whole loop at a shape small enough, and compare it with the extrapolation from subsets.

    Returns:
        The shape, the measured and the extrapolated milliseconds per phase, and their ratio.
    """
    embeddings, regions, num_regions = pooling_inputs(shape, device)
    fit, _, _ = time_loop(embeddings, regions, num_regions, shape.num_views, shape.loop_regions, device)
    timer = PhaseTimer(device)
    full = partial(loop_region_means, embeddings, regions, num_regions, shape.num_views)
    _time_forward_backward(full, embeddings, device, timer)
    measured = {phase: timer.samples[phase][0] for phase in ("forward", "backward")}
    measured["total"] = measured["forward"] + measured["backward"]
    extrapolated = {phase: fit[phase]["total_ms"] for phase in ("forward", "backward")}
    extrapolated["total"] = extrapolated["forward"] + extrapolated["backward"]
    return {
        "shape": {**asdict(shape), "loop_regions": list(shape.loop_regions)},
        "regions_per_image": float(num_regions.float().mean()),
        "measured_ms": measured,
        "extrapolated_ms": extrapolated,
        "extrapolated_over_measured": extrapolated["total"] / measured["total"],
    }


def run_pooling(device: torch.device, quick: bool) -> dict[str, Any]:
    """Section 2: forward and backward of our pooling and of the extrapolated loop; their agreement."""
    shape = pooling_shape(device, quick)
    embeddings, regions, num_regions = pooling_inputs(shape, device)
    m = shape.num_views

    def ours() -> torch.Tensor:
        return region_means(embeddings, regions, num_regions, m)

    for _ in range(shape.warmup):
        _time_forward_backward(ours, embeddings, device, PhaseTimer(device))
    ours_timer = PhaseTimer(device)
    for _ in range(shape.repeats):
        ours_out = _time_forward_backward(ours, embeddings, device, ours_timer)
    loop, loop_samples, loop_out = time_loop(embeddings, regions, num_regions, m, shape.loop_regions, device)
    max_abs_diff = float((loop_out - ours_out[:1, : loop_out.shape[1]]).abs().max())
    ours_ms = {phase: median_ms(ours_timer.samples[phase]) for phase in ("forward", "backward")}
    loop_total = loop["forward"]["total_ms"] + loop["backward"]["total_ms"]
    ours_total = ours_ms["forward"] + ours_ms["backward"]
    return {
        "shape": {**asdict(shape), "loop_regions": list(shape.loop_regions)},
        "regions_per_image": float(num_regions.float().mean()),
        "region_method": region_method(),
        "regions_per_image_min_max": [int(num_regions.min()), int(num_regions.max())],
        "ignore_fraction": float((regions < 0).float().mean()),
        "ours_ms": {**ours_ms, "total": ours_total},
        "ours_ms_samples": ours_timer.samples,
        "loop_ms": {
            "forward": loop["forward"]["total_ms"],
            "backward": loop["backward"]["total_ms"],
            "total": loop_total,
        },
        "loop_fit": loop,
        "loop_subset_ms": loop_samples,
        "loop_extrapolated": True,
        "extrapolation_check": check_extrapolation(CHECK_SHAPE if not quick else shape, device),
        "speedup": loop_total / ours_total,
        "speedup_forward": loop["forward"]["total_ms"] / ours_ms["forward"],
        "speedup_backward": loop["backward"]["total_ms"] / ours_ms["backward"],
        "max_abs_diff_vs_loop": max_abs_diff,
    }
