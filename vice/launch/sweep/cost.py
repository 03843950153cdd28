"""A rough cost model: GPU-hours of a job and its SLURM time limit, from the paper's step time."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from vice.config import Config

#: Cost model for the GPU-hour estimate and the time limits (rough): paper Table 7 gives 4.824 s per
#: high-resolution step on V100s (512 px views, 5 views and 4 images per GPU, ResNet-50 + DeepLabV3+);
#: a step scales with pixels per view, views, images per GPU and the backbone's depth.
REFERENCE_STEP_S = 4.824

REFERENCE_VIEW_SIZE, REFERENCE_NUM_VIEWS, REFERENCE_BATCH_SIZE = 512, 5, 4

BACKBONE_COST = {"resnet18": 0.45, "resnet34": 0.7, "resnet50": 1.0, "resnet101": 1.6}

#: A job's time limit: estimated training time x margin + an allowance for the evaluation, whole hours.
TIME_LIMIT_MARGIN = 1.5

EVAL_ALLOWANCE_H = 0.5

MIN_TIME_LIMIT_MIN = 60


def step_seconds(cfg: Config) -> float:
    """Rough seconds per training step on one V100 (see :data:`REFERENCE_STEP_S`)."""
    scale = (cfg.views.view_size / REFERENCE_VIEW_SIZE) ** 2
    scale *= cfg.views.num_views / REFERENCE_NUM_VIEWS
    scale *= cfg.data.batch_size / REFERENCE_BATCH_SIZE
    return REFERENCE_STEP_S * scale * BACKBONE_COST[cfg.model.backbone]


def training_hours(cfg: Config) -> float:
    """Rough wall-clock hours of a job's training (DDP keeps the per-GPU batch, so the step time)."""
    return cfg.train.max_steps * step_seconds(cfg) / 3600


def time_limit_min(cfg: Config, cap_min: int) -> int:
    """A job's time limit: training estimate x margin + evaluation allowance, whole hours, at most ``cap_min``."""
    hours = math.ceil(training_hours(cfg) * TIME_LIMIT_MARGIN + EVAL_ALLOWANCE_H)
    return min(cap_min, max(MIN_TIME_LIMIT_MIN, 60 * hours))


def launcher_gpus(launcher: Mapping[str, Any]) -> int:
    """GPUs one job of a launcher preset holds (nodes x GPUs per node)."""
    return int(launcher.get("nodes") or 1) * int(launcher.get("gpus_per_node") or 0)
