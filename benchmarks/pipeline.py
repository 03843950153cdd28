"""Section 3: the data pipeline, as one DataLoader worker runs it (one OpenCV and one torch thread).

SLIC per image at 640x480 (COCO) and 2048x1024 (Cityscapes): the decomposition alone, the first
epoch through the region cache (compute + store) and later epochs (load). Then views per second of
Algorithm 1 with masking, from JPEG files on disk, with a cold and a warm region cache.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import torch

from benchmarks.timing import median_ms
from benchmarks.training import HIGHRES, LOWRES, TrainShape, bench_config, region_method, write_image_folder
from vice.config import RegionConfig
from vice.data.folder import ImageFolder
from vice.data.regions import RegionCache, decompose, decompose_cached
from vice.data.synthetic import render_scene
from vice.data.train import ViewDataset

T = TypeVar("T")

#: COCO's typical size and Cityscapes' size, (H, W).
SLIC_SIZES = ((480, 640), (1024, 2048))


@dataclass(frozen=True)
class PipelinePlan:
    """What section 3 runs.

    Attributes:
        slic_sizes: (H, W) of the images SLIC is timed on.
        slic_images: distinct images per size (a cold cache needs a new image each time).
        view_shapes: training configurations whose views are generated (B, M, S, image size).
        view_images: images sampled per configuration and cache state.
    """

    slic_sizes: tuple[tuple[int, int], ...]
    slic_images: int
    view_shapes: tuple[TrainShape, ...]
    view_images: int


def pipeline_plan(quick: bool) -> PipelinePlan:
    """The issue's sizes; when ``quick``, images 8x smaller per side and views of 64 px."""
    if quick:
        tiny = {"view_size": 64, "image_size": (96, 128)}
        shapes = (replace(LOWRES, **tiny), replace(HIGHRES, **tiny))  # type: ignore[arg-type]
        return PipelinePlan(tuple((h // 8, w // 8) for h, w in SLIC_SIZES), 1, shapes, 2)
    return PipelinePlan(SLIC_SIZES, 3, (LOWRES, HIGHRES), 8)


@contextmanager
def one_worker_threads() -> Iterator[None]:
    """Run the block with one OpenCV and one torch thread, as a DataLoader worker does."""
    cv_threads, torch_threads = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(cv_threads)
        torch.set_num_threads(torch_threads)


def _timed(fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    """``fn(*args)`` and its wall-clock milliseconds."""
    start = time.perf_counter()
    result = fn(*args)
    return result, (time.perf_counter() - start) * 1e3


def measure_slic(size: tuple[int, int], num_images: int, cache_dir: Path) -> dict[str, Any]:
    """SLIC milliseconds per image at ``size``: decomposition alone, cold cache, warm cache."""
    cfg = RegionConfig(cache_dir=str(cache_dir))
    cache = RegionCache(cache_dir)
    slic, cold, cached, regions = [], [], [], []
    decompose(render_scene(np.random.default_rng(0), 64, 64)[0], cfg)  # untimed first call
    for index in range(num_images):
        image, _ = render_scene(np.random.default_rng([1, index]), *size)
        labels, ms = _timed(decompose, image, cfg)
        slic.append(ms)
        regions.append(int(labels.max()) + 1)
        cold.append(_timed(decompose_cached, image, cfg, cache)[1])
        cached.append(_timed(decompose_cached, image, cfg, cache)[1])
    return {
        "image_size": list(size),
        "images": num_images,
        "regions_per_image": float(np.mean(regions)),
        "slic_ms": median_ms(slic),
        "cold_ms": median_ms(cold),
        "cached_ms": median_ms(cached),
        "cold_over_cached": median_ms(cold) / median_ms(cached),
    }


def measure_views(shape: TrainShape, num_images: int, workdir: Path) -> dict[str, Any]:
    """Views per second of one worker for ``shape``: JPEG decode + regions + Algorithm 1 with masking."""
    root = write_image_folder(workdir / f"images_{shape.name}", num_images, shape.image_size, seed=2)
    cfg = bench_config(shape, torch.device("cpu"), str(root), str(workdir / f"cache_{shape.name}"), 1, 1)
    # One untimed sample without the cache pays the first-call costs (imports, allocations).
    ViewDataset(ImageFolder(root), cfg.regions, cfg.views, cfg.seed).sample(0, epoch=2)
    rates: dict[str, float] = {}
    per_image: dict[str, float] = {}
    for state in ("cold", "cached"):
        dataset = ViewDataset(
            ImageFolder(root), cfg.regions, cfg.views, cfg.seed, RegionCache(str(cfg.regions.cache_dir))
        )
        # Epoch 0 fills the cache (cold); epoch 1 draws new views of the same images (cached).
        epoch = 0 if state == "cold" else 1
        times = [_timed(dataset.sample, i, epoch)[1] for i in range(num_images)]
        per_image[state] = median_ms(times)
        rates[state] = shape.num_views * num_images / (sum(times) / 1e3)
    return {
        "name": shape.name,
        "image_size": list(shape.image_size),
        "batch_size": shape.batch_size,
        "num_views": shape.num_views,
        "view_size": shape.view_size,
        "images": num_images,
        "ms_per_image": per_image,
        "views_per_s": rates,
        "steps_per_s_per_worker": {k: v / (shape.batch_size * shape.num_views) for k, v in rates.items()},
    }


def run_pipeline(device: torch.device, quick: bool) -> dict[str, Any]:
    """Section 3 (on the CPU whatever ``device`` is: the pipeline runs in CPU workers).

    Without OpenCV's contrib module there is no SLIC to time (``slic`` is empty) and views use grid cells.
    """
    del device
    plan = pipeline_plan(quick)
    method = region_method()
    with tempfile.TemporaryDirectory(prefix="vice-bench-") as tmp, one_worker_threads():
        work = Path(tmp)
        slic = [
            measure_slic(size, plan.slic_images, work / f"slic_{size[0]}x{size[1]}")
            for size in (plan.slic_sizes if method == "slic" else ())
        ]
        views = {shape.name: measure_views(shape, plan.view_images, work) for shape in plan.view_shapes}
    return {
        "worker_threads": {"opencv": 1, "torch": 1},
        "region_method": method,
        "slic": slic,
        "views": views,
        "reduced_sizes": quick,
    }
