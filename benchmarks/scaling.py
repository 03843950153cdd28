"""Section 5: training step time as the batch and the view size grow, with a log-log fit against pixels.

Linear in pixels (slope 1) is the goal: a region loop would grow with pixels x regions, and a
per-step fixed cost shows up as a slope below 1 at small sizes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from benchmarks.timing import PhaseTimer
from benchmarks.training import (
    LOWRES,
    SCALING_CELL,
    StepParts,
    TrainShape,
    bench_config,
    build_step_parts,
    summarize_phases,
    timed_steps,
)
from vice.data.regions import grid_regions
from vice.data.train import ViewBatch


@dataclass(frozen=True)
class ScalingPlan:
    """A batch sweep at a fixed view size and a view-size sweep at a fixed batch.

    Attributes:
        shape: the network, M, and the fixed B and S of the two sweeps.
        batch_sizes: B values (at ``shape.view_size``).
        view_sizes: S values (at ``shape.batch_size``).
        warmup: untimed steps per point.
        steps: timed steps per point.
    """

    shape: TrainShape
    batch_sizes: tuple[int, ...]
    view_sizes: tuple[int, ...]
    warmup: int
    steps: int


def scaling_plan(device: torch.device, quick: bool) -> ScalingPlan:
    """R18-FPN sweeps: up to 8 x 5 views and 512 px on CUDA, up to 4 x 3 views and 192 px on CPU."""
    if quick:
        return ScalingPlan(replace(LOWRES, batch_size=1, num_views=2, view_size=32), (1, 2), (32, 48), 1, 1)
    if device.type == "cuda":
        return ScalingPlan(LOWRES, (1, 2, 4, 8), (128, 256, 384, 512), 3, 8)
    cpu_shape = replace(LOWRES, batch_size=2, num_views=3, view_size=128)
    return ScalingPlan(cpu_shape, (1, 2, 4), (64, 96, 128, 192), 1, 3)


def synthetic_batch(batch_size: int, num_views: int, view_size: int, cell: int, seed: int = 0) -> ViewBatch:
    """Random views whose region maps are grid cells of side ``cell``, shared by all views.

    Returns:
        B*M views of side S with R = ceil(S / cell)^2 mutual regions per image and no ignore pixel.
    """
    generator = torch.Generator().manual_seed(seed)
    grid = torch.from_numpy(grid_regions(view_size, view_size, cell)).long()  # (S, S)
    num_maps = batch_size * num_views
    return ViewBatch(
        views=torch.randn(num_maps, 3, view_size, view_size, generator=generator),
        regions=grid.expand(num_maps, view_size, view_size).contiguous(),  # (B*M, S, S)
        num_regions=torch.full((batch_size,), int(grid.max()) + 1, dtype=torch.int64),
    )


def loglog_fit(x: list[float], y: list[float]) -> dict[str, float]:
    """Least-squares fit of ``log y = slope * log x + intercept``.

    Returns:
        ``slope`` (1 = linear growth), ``intercept`` and ``r2`` (of the fit in log space).
    """
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"a log-log fit needs >= 2 paired points, got {len(x)} x and {len(y)} y")
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    slope, intercept = np.polyfit(lx, ly, 1)
    residual = ly - (slope * lx + intercept)
    total = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1.0 - float((residual**2).sum()) / total if total > 0 else 1.0
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2}


def measure_point(parts: StepParts, batch_size: int, view_size: int, plan: ScalingPlan) -> dict[str, Any]:
    """Compute time (data wait excluded) of training steps on one synthetic batch shape."""
    batch = synthetic_batch(batch_size, plan.shape.num_views, view_size, SCALING_CELL)

    def repeat() -> Iterator[ViewBatch]:
        while True:
            yield batch

    stream = repeat()
    timed_steps(parts, stream, plan.warmup, PhaseTimer(parts.device))
    timer = PhaseTimer(parts.device)
    timed_steps(parts, stream, plan.steps, timer)
    summary = summarize_phases(timer.samples)
    pixels = batch_size * plan.shape.num_views * view_size**2
    return {
        "batch_size": batch_size,
        "num_views": plan.shape.num_views,
        "view_size": view_size,
        "pixels": pixels,
        "regions_per_image": int(batch.num_regions[0]),
        "step_ms": summary["compute_ms"],
        "ms_per_mpixel": summary["compute_ms"] / (pixels / 1e6),
        "phases_ms": summary["phases_ms"],
    }


def run_scaling(device: torch.device, quick: bool) -> dict[str, Any]:
    """Section 5: step time against B and S, and the log-log slopes of time against pixels per step."""
    plan = scaling_plan(device, quick)
    shape = plan.shape
    cfg = bench_config(shape, device, "unused", "unused", 0, plan.warmup + plan.steps)
    cfg.swav.queue_length = 0
    parts = build_step_parts(cfg, device)
    batch_sweep = [measure_point(parts, b, shape.view_size, plan) for b in plan.batch_sizes]
    size_sweep = [measure_point(parts, shape.batch_size, s, plan) for s in plan.view_sizes]
    points = batch_sweep + size_sweep
    return {
        "model": {
            k: getattr(shape, k) for k in ("name", "backbone", "decoder", "decoder_channels", "embed_dim")
        },
        "region_cell": SCALING_CELL,
        "steps_timed": plan.steps,
        "batch_sweep": batch_sweep,
        "size_sweep": size_sweep,
        "fit_batch": loglog_fit([p["pixels"] for p in batch_sweep], [p["step_ms"] for p in batch_sweep]),
        "fit_size": loglog_fit([p["pixels"] for p in size_sweep], [p["step_ms"] for p in size_sweep]),
        "fit_all": loglog_fit([p["pixels"] for p in points], [p["step_ms"] for p in points]),
    }
