"""Section 1 (Table 7's phases) and section 5 (scaling): where one training step spends its time.

The step is the trainer's (``vice.train.train``): the same model, optimizer, AMP, channels_last, loader
and queue, with ``RegionalSwav.forward`` split at the embedder so that the network's forward and the
region pooling + Sinkhorn + loss can be timed apart. Every clock read is preceded by a CUDA sync.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.timing import PhaseTimer, median_ms, peak_memory_mb, reset_peak_memory
from vice.config import Config, validate
from vice.data.folder import ImageFolder
from vice.data.regions import RegionCache, decompose_cached
from vice.data.synthetic import render_scene
from vice.data.train import ViewBatch, build_train_loader
from vice.optim import cosine_lr, set_lr
from vice.swav import RegionalSwav, RegionQueue
from vice.train import TrainingParts, build_training

#: Table 7's phases, in step order; the JSON and the table use these names.
PHASES = ("data_wait", "forward", "pool_sinkhorn_loss", "backward", "optimizer")
#: The phases a GPU computes (everything but waiting for the loader).
COMPUTE_PHASES = PHASES[1:]
#: The paper's queue: 5K view-0 embeddings per GPU, full in the steady state the paper's Table 7 averages.
PAPER_QUEUE_LENGTH = 5000
#: Side of the grid cells standing in for superpixels in the scaling sweep (so R grows with S^2).
SCALING_CELL = 16
#: JPEG quality of the benchmark's image folder (COCO's JPEGs are around this).
JPEG_QUALITY = 90


@dataclass(frozen=True)
class TrainShape:
    """One training configuration: the network and the per-GPU batch of views.

    Attributes:
        name: key in the JSON (``r18_fpn_lowres``, ``r50_dlv3p_highres``).
        backbone: ``model.backbone``.
        decoder: ``model.decoder``.
        decoder_channels: ``model.decoder_channels``.
        batch_size: B images per step.
        num_views: M views per image.
        view_size: S, the side of every view.
        embed_dim: D.
        num_prototypes: K.
        image_size: (H, W) of the training images the views are cut from.
    """

    name: str
    backbone: str
    decoder: str
    decoder_channels: int
    batch_size: int
    num_views: int
    view_size: int
    embed_dim: int = 128
    num_prototypes: int = 128
    image_size: tuple[int, int] = (480, 640)


#: The paper's two settings at the paper's shapes (Sec. 4: 4 images x 5 views per GPU).
LOWRES = TrainShape("r18_fpn_lowres", "resnet18", "fpn", 128, batch_size=4, num_views=5, view_size=256)
HIGHRES = TrainShape(
    "r50_dlv3p_highres", "resnet50", "deeplabv3plus", 256, batch_size=4, num_views=5, view_size=512
)


@dataclass(frozen=True)
class TrainPlan:
    """What section 1 runs.

    Attributes:
        shapes: the configurations.
        warmup: untimed steps first (allocator, cuDNN autotuning, loader start).
        steps: timed steps.
        num_workers: DataLoader workers.
        queue_length: queued view-0 embeddings (pre-filled).
    """

    shapes: tuple[TrainShape, ...]
    warmup: int
    steps: int
    num_workers: int
    queue_length: int = PAPER_QUEUE_LENGTH


def training_plan(device: torch.device, quick: bool, workers: int | None = None) -> TrainPlan:
    """The paper's shapes on CUDA, 2 images x 3 views at 128 px on CPU, tiny shapes when ``quick``."""
    if quick:
        tiny = {"batch_size": 1, "num_views": 2, "view_size": 64, "image_size": (96, 128)}
        shapes = (replace(LOWRES, **tiny), replace(HIGHRES, **tiny))  # type: ignore[arg-type]
        return TrainPlan(
            shapes, warmup=1, steps=1, num_workers=0 if workers is None else workers, queue_length=64
        )
    if device.type == "cuda":
        default_workers = max(1, min(8, (torch.multiprocessing.cpu_count() or 2) - 2))
        return TrainPlan(
            (LOWRES, HIGHRES), warmup=5, steps=40, num_workers=default_workers if workers is None else workers
        )
    small = {"batch_size": 2, "num_views": 3, "view_size": 128}
    shapes = (replace(LOWRES, **small), replace(HIGHRES, **small))  # type: ignore[arg-type]
    return TrainPlan(shapes, warmup=2, steps=5, num_workers=1 if workers is None else workers)


def region_method() -> str:
    """``slic`` where OpenCV's contrib module is installed, else ``grid`` (cells of SLIC's region size)."""
    return "slic" if hasattr(cv2, "ximgproc") else "grid"


def bench_config(
    shape: TrainShape, device: torch.device, data_root: str, cache_dir: str, num_workers: int, max_steps: int
) -> Config:
    """The trainer's config for ``shape``: an image folder, a SLIC cache, the trainer's defaults otherwise."""
    cfg = Config(experiment="benchmark")
    cfg.data.name, cfg.data.root = "folder", data_root
    cfg.data.batch_size, cfg.data.num_workers = shape.batch_size, num_workers
    cfg.regions.cache_dir = cache_dir
    cfg.regions.method = region_method()
    cfg.views.num_views, cfg.views.view_size = shape.num_views, shape.view_size
    cfg.model.backbone, cfg.model.decoder = shape.backbone, shape.decoder
    cfg.model.decoder_channels, cfg.model.embed_dim = shape.decoder_channels, shape.embed_dim
    cfg.swav.num_prototypes = shape.num_prototypes
    cfg.train.device, cfg.train.max_steps = device.type, max_steps
    validate(cfg)
    return cfg


def write_image_folder(root: Path, num_images: int, image_size: tuple[int, int], seed: int = 0) -> Path:
    """Render synthetic scenes once and store them as JPEGs, so the loader decodes files as on COCO."""
    root.mkdir(parents=True, exist_ok=True)
    for index in range(num_images):
        image, _ = render_scene(np.random.default_rng([seed, index]), *image_size)
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(root / f"{index:06d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return root


def fill_region_cache(root: Path, cfg: Config) -> None:
    """Decompose every image of ``root`` into ``cfg.regions.cache_dir`` (the steady state after epoch 1)."""
    assert cfg.regions.cache_dir is not None
    cache = RegionCache(cfg.regions.cache_dir)
    folder = ImageFolder(root)
    for index in range(len(folder)):
        decompose_cached(folder[index][0], cfg.regions, cache)


@dataclass
class StepParts:
    """The trainer's own parts of a step (:func:`vice.train.build_training`) and the schedule's scalars."""

    training: TrainingParts
    num_views: int
    max_steps: int

    @property
    def model(self) -> RegionalSwav:
        """The unwrapped regional SwAV model."""
        return self.training.model

    @property
    def queue(self) -> RegionQueue | None:
        """The region queue, or None."""
        return self.training.queue

    @property
    def device(self) -> torch.device:
        """Where the model lives."""
        return self.training.device


def build_step_parts(cfg: Config, device: torch.device, prefill_queue: bool = True) -> StepParts:
    """The trainer's model, LARS optimizer, scaler and queue on ``device`` (single process, no resume).

    Args:
        cfg: the validated config.
        device: where the model lives.
        prefill_queue: fill the queue with random unit vectors, as it is after its first steps.
    """
    training = build_training(replace(cfg, train=replace(cfg.train, device=device.type)), resume=False)
    if training.queue is not None and prefill_queue:
        length, dim = training.queue.length, cfg.model.embed_dim
        training.queue.push(F.normalize(torch.randn(length, dim, device=device), dim=1))
    training.model.train()
    return StepParts(training, cfg.views.num_views, cfg.train.max_steps)


def timed_steps(parts: StepParts, batches: Iterator[ViewBatch], steps: int, timer: PhaseTimer) -> list[int]:
    """Run ``steps`` training steps, timing each of :data:`PHASES`; return the regions per step.

    The order of operations is the trainer's: fetch and copy, forward under autocast, loss and its
    finiteness check (a host sync), zero_grad + backward, LR + optimizer step + prototype
    normalization + queue push.
    """
    model, device, training = parts.model, parts.device, parts.training
    autocast = torch.autocast(
        device.type, dtype=training.amp_dtype or torch.float32, enabled=training.amp_dtype is not None
    )
    regions_seen = []
    for step in range(steps):
        with timer.phase("data_wait"):
            batch = next(batches)
            views = batch.views.to(device, non_blocking=True)
            if training.channels_last:
                views = views.contiguous(memory_format=torch.channels_last)
            regions = batch.regions.to(device, non_blocking=True)
            num_regions = batch.num_regions.to(device)
        with timer.phase("forward"), autocast:
            embeddings = model.embedder(views)
        with timer.phase("pool_sinkhorn_loss"):
            with autocast:
                queue = parts.queue.contents() if parts.queue is not None else None
                loss, _, z0 = model.loss_from_embeddings(
                    embeddings, regions, num_regions, parts.num_views, queue
                )
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"benchmark step {step}: loss is {loss.item()}")
        with timer.phase("backward"):
            training.optimizer.zero_grad(set_to_none=True)
            training.scaler.scale(loss).backward()
        with timer.phase("optimizer"):
            set_lr(training.optimizer, cosine_lr(step, training.peak_lr, 0, parts.max_steps, 0.001))
            training.scaler.step(training.optimizer)
            training.scaler.update()
            model.prototypes.normalize_()
            if parts.queue is not None:
                parts.queue.push(z0)
        regions_seen.append(int(batch.num_regions.sum()))
    return regions_seen


def summarize_phases(samples: dict[str, list[float]]) -> dict[str, Any]:
    """Medians per phase, the median step and compute time, and Table 7's two ratios.

    Args:
        samples: phase -> per-step milliseconds, every phase of :data:`PHASES` with equal lengths.

    Returns:
        ``phases_ms``, ``step_ms`` (median of per-step sums), ``compute_ms`` (the same without the
        data wait), ``backward_over_forward`` and ``loss_share_of_forward`` (pooling + Sinkhorn + loss
        over forward), from the medians.
    """
    missing = [p for p in PHASES if not samples.get(p)]
    if missing:
        raise ValueError(f"phases {missing} were never timed: every step must pass through {PHASES}")
    per_step = np.array([samples[p] for p in PHASES])  # (phases, steps)
    phases = {p: median_ms(samples[p]) for p in PHASES}
    return {
        "phases_ms": phases,
        "step_ms": float(np.median(per_step.sum(axis=0))),
        "compute_ms": float(np.median(per_step[1:].sum(axis=0))),
        "backward_over_forward": phases["backward"] / phases["forward"],
        "loss_share_of_forward": phases["pool_sinkhorn_loss"] / phases["forward"],
    }


def measure_training(
    shape: TrainShape, plan: TrainPlan, device: torch.device, workdir: Path
) -> dict[str, Any]:
    """Time the trainer's step for one configuration with its real loader (JPEG folder, cached SLIC).

    Returns:
        The configuration, per-phase medians and samples, ratios, peak memory and regions per image.
    """
    max_steps = plan.warmup + plan.steps
    root = write_image_folder(
        workdir / f"images_{shape.image_size[0]}x{shape.image_size[1]}",
        4 * shape.batch_size,
        shape.image_size,
    )
    cfg = bench_config(shape, device, str(root), str(workdir / "region_cache"), plan.num_workers, max_steps)
    cfg.swav.queue_length, cfg.swav.queue_start_step = plan.queue_length, 0
    fill_region_cache(root, cfg)
    parts = build_step_parts(cfg, device)
    batches = iter(build_train_loader(cfg, rank=0, world_size=1, start_step=0))
    timed_steps(parts, batches, plan.warmup, PhaseTimer(device))
    reset_peak_memory(device)
    timer = PhaseTimer(device)
    regions = timed_steps(parts, batches, plan.steps, timer)
    memory, memory_kind = peak_memory_mb(device)
    return {
        **asdict(shape),
        "num_workers": plan.num_workers,
        "amp": str(parts.training.amp_dtype).removeprefix("torch.") if parts.training.amp_dtype else "none",
        "channels_last": parts.training.channels_last,
        "queue_length": plan.queue_length,
        "warmup_steps": plan.warmup,
        "steps_timed": plan.steps,
        **summarize_phases(timer.samples),
        "phases_ms_samples": timer.samples,
        "regions_per_image": float(np.mean(regions)) / shape.batch_size,
        "region_method": cfg.regions.method,
        "peak_memory_mb": memory,
        "memory_kind": memory_kind,
    }


def run_training(device: torch.device, quick: bool, workers: int | None = None) -> dict[str, Any]:
    """Section 1: the step breakdown of every configuration of :func:`training_plan`."""
    plan = training_plan(device, quick, workers)
    with tempfile.TemporaryDirectory(prefix="vice-bench-") as tmp:
        configs = {shape.name: measure_training(shape, plan, device, Path(tmp)) for shape in plan.shapes}
    return {"configs": configs}
