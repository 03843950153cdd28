"""Section 4 (Table 8's columns): inference milliseconds per image, and the k-means fit.

Per image: the embedding network (``vice.evaluate.embed.network_embedder``: normalize, reflect-pad,
forward, crop), cluster assignment (``assign_map``: one matmul + argmax per block) for C = 27 and 256,
and the linear probe (``probe_predict``: a 1x1 conv + argmax). Then ``fit_kmeans`` (FAISS, spherical,
the evaluation's 20 iterations) on 1M x 128 embeddings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.timing import median_ms, time_ms
from benchmarks.training import HIGHRES, LOWRES, TrainShape
from vice.config import ModelConfig
from vice.evaluate.embed import network_embedder
from vice.evaluate.kmeans import assign_map, fit_kmeans
from vice.evaluate.probe import probe_predict
from vice.evaluate.run import DEFAULT_PAD
from vice.model import build_model

#: COCO-Stuff-27's classes: the linear probe's outputs.
NUM_EVAL_CLASSES = 27
#: A 640x480 COCO image at the high-resolution protocol's short side of 512.
HIGHRES_IMAGE = (512, 683)
#: Centres of the synthetic embedding blobs k-means is fitted on.
KMEANS_BLOBS = 64
KMEANS_BLOB_SPREAD = 0.3


@dataclass(frozen=True)
class EvalPlan:
    """What section 4 runs.

    Attributes:
        image_size: (H, W) of the evaluated image.
        models: networks whose embedding time is measured.
        num_clusters: C values of the cluster assignment and the k-means fit.
        kmeans_points: embeddings k-means is fitted on.
        kmeans_dim: their dimension D.
        kmeans_iterations: Lloyd iterations (``eval.kmeans_iterations``).
        repeats: timed repeats per inference measurement.
        warmup: untimed repeats first.
    """

    image_size: tuple[int, int]
    models: tuple[TrainShape, ...]
    num_clusters: tuple[int, ...]
    kmeans_points: int
    kmeans_dim: int
    kmeans_iterations: int
    repeats: int
    warmup: int


#: The issue's k-means size.
FULL_KMEANS_POINTS = 1_000_000


def eval_plan(device: torch.device, quick: bool) -> EvalPlan:
    """The high-res image and 1M x 128 k-means; a 64x96 image and 4,000 points when ``quick``."""
    if quick:
        return EvalPlan((64, 96), (LOWRES, HIGHRES), (27, 256), 4000, 128, 20, 1, 0)
    repeats, warmup = (20, 5) if device.type == "cuda" else (3, 1)
    return EvalPlan(HIGHRES_IMAGE, (LOWRES, HIGHRES), (27, 256), FULL_KMEANS_POINTS, 128, 20, repeats, warmup)


def blob_embeddings(num_points: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Unit vectors around :data:`KMEANS_BLOBS` random centres: (N, D) float32 (clustered, like embeddings)."""
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(KMEANS_BLOBS, dim, generator=generator), dim=1)  # (blobs, D)
    which = torch.randint(KMEANS_BLOBS, (num_points,), generator=generator)  # (N,)
    noise = KMEANS_BLOB_SPREAD * torch.randn(num_points, dim, generator=generator) / dim**0.5  # (N, D)
    return F.normalize(centres[which] + noise, dim=1)


def measure_embedding(shape: TrainShape, plan: EvalPlan, device: torch.device) -> dict[str, Any]:
    """Milliseconds per image of the frozen network, as the evaluation calls it."""
    model_cfg = ModelConfig(
        backbone=shape.backbone,
        decoder=shape.decoder,
        decoder_channels=shape.decoder_channels,
        embed_dim=shape.embed_dim,
    )
    model = build_model(model_cfg).to(device).eval()
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    amp = "bf16" if device.type == "cuda" else "none"
    embed = network_embedder(model, DEFAULT_PAD, amp)
    image = torch.randint(0, 256, (1, 3, *plan.image_size), dtype=torch.uint8, device=device)
    samples = time_ms(lambda: embed(image), device, plan.repeats, plan.warmup)
    return {"ms": median_ms(samples), "samples_ms": samples, "amp": amp, "pad": DEFAULT_PAD}


def _probe_ms(features: torch.Tensor, outputs: int, plan: EvalPlan, device: torch.device) -> float:
    """Milliseconds of ``probe_predict`` with a 1x1 conv of ``outputs`` channels on ``features``."""
    probe = nn.Conv2d(plan.kmeans_dim, outputs, kernel_size=1).to(device).eval()
    return median_ms(time_ms(partial(probe_predict, probe, features), device, plan.repeats, plan.warmup))


def measure_heads(plan: EvalPlan, device: torch.device) -> dict[str, Any]:
    """Milliseconds per image of cluster assignment (every C) and of the linear probe, on one (1, D, H, W) map.

    Also a 1x1 conv with C outputs for every C (the same multiply-adds as assigning to C centroids), so
    that the cost of the method and the cost of C can be told apart.
    """
    generator = torch.Generator().manual_seed(0)
    features = F.normalize(torch.randn(1, plan.kmeans_dim, *plan.image_size, generator=generator), dim=1)
    features = features.to(device)
    assignment, same_size = {}, {}
    for num_clusters in plan.num_clusters:
        centroids = F.normalize(torch.randn(num_clusters, plan.kmeans_dim, generator=generator), dim=1)
        assign = partial(assign_map, features, centroids.to(device), spherical=True)
        assignment[str(num_clusters)] = median_ms(time_ms(assign, device, plan.repeats, plan.warmup))
        same_size[str(num_clusters)] = _probe_ms(features, num_clusters, plan, device)
    probe_ms = _probe_ms(features, NUM_EVAL_CLASSES, plan, device)
    return {
        "cluster_assignment_ms": assignment,
        "linear_probe_ms": probe_ms,
        "linear_probe_classes": NUM_EVAL_CLASSES,
        "cluster_over_linear": {c: ms / probe_ms for c, ms in assignment.items()},
        "conv_with_c_outputs_ms": same_size,
        "cluster_over_conv_with_c_outputs": {c: ms / same_size[c] for c, ms in assignment.items()},
    }


def measure_kmeans(plan: EvalPlan, device: torch.device) -> dict[str, Any]:
    """Seconds of ``fit_kmeans`` for every C on ``kmeans_points`` clustered unit vectors."""
    features = blob_embeddings(plan.kmeans_points, plan.kmeans_dim).to(device)
    seconds = {}
    for num_clusters in plan.num_clusters:
        start = time.perf_counter()
        fit_kmeans(features, num_clusters, plan.kmeans_iterations, seed=0, spherical=True)
        seconds[str(num_clusters)] = time.perf_counter() - start
    return {
        "points": plan.kmeans_points,
        "dim": plan.kmeans_dim,
        "iterations": plan.kmeans_iterations,
        "reduced": plan.kmeans_points < FULL_KMEANS_POINTS,
        "fit_s": seconds,
    }


def run_evaluation(device: torch.device, quick: bool) -> dict[str, Any]:
    """Section 4: per-image inference of every part of the evaluation, and the k-means fit."""
    plan = eval_plan(device, quick)
    embedding = {shape.name: measure_embedding(shape, plan, device) for shape in plan.models}
    return {
        "image_size": list(plan.image_size),
        "repeats": plan.repeats,
        "embedding": embedding,
        **measure_heads(plan, device),
        "kmeans": measure_kmeans(plan, device),
    }
