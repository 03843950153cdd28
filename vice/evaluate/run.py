"""Unsupervised segmentation evaluation: cluster (Hungarian and majority) and linear-probe metrics.

One pass over the train split embeds every image once per pipeline (the model, and the baselines:
the same network at random init, raw pixel colours) and keeps a bounded uniform pixel sample. k-means
and the probe are fitted on that sample. One pass over the eval split assigns every pixel to its
nearest centroid and to a probe class and sums confusion counts. Scores come from the summed counts,
so they do not depend on the batch size.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from vice.config import EvalConfig, ModelConfig
from vice.data.labelled import LabelledDataset
from vice.evaluate.embed import (
    Decomposer,
    Embedder,
    ProtocolDataset,
    network_embedder,
    pool_superpixels,
    resize_nearest,
    rgb_embedder,
)
from vice.evaluate.kmeans import PixelReservoir, assign_clusters, assign_map, fit_kmeans
from vice.evaluate.matching import hungarian_mapping, majority_mapping, mapped_confusion
from vice.evaluate.metrics import confusion_matrix, segmentation_scores
from vice.evaluate.pictures import colourize, pca_rgb, save_panels
from vice.evaluate.probe import fit_probe, probe_predict

log = logging.getLogger(__name__)

#: Where the cluster -> class mapping is fitted: the eval split itself (PiCIE, STEGO) or the train sample.
MAPPING_FIT_SETS = ("eval", "train")
#: Reflect padding around every image before embedding, in pixels.
DEFAULT_PAD = 32
#: Pixels per linear-probe SGD step.
DEFAULT_PROBE_BATCH_PIXELS = 8192
MODEL_PREFIX = ""
RANDOM_PREFIX = "baseline_random_"
RGB_PREFIX = "baseline_rgb_"
LINEAR = "linear"
CLUSTER = "cluster"


@dataclass
class Pipeline:
    """One kind of features under evaluation: the model or a baseline.

    Attributes:
        prefix: metric-name prefix after ``eval/`` (``""``, ``baseline_random_``, ``baseline_rgb_``).
        embed: uint8 images (B, 3, h, w) -> features (B, D, h, w).
        spherical: features are L2-normalized (renormalized after pooling); cosine k-means.
        probe: train and score a linear probe.
    """

    prefix: str
    embed: Embedder
    spherical: bool
    probe: bool


@dataclass
class FittedPipeline:
    """What was fitted on a pipeline's train sample.

    Attributes:
        centroids: C -> (C, D) k-means centroids.
        probe: the linear probe; None when skipped (no probe, or no labelled train pixel).
        sample_contingency: C -> (num_classes, C) counts on the labelled pixels of the train sample.
    """

    centroids: dict[int, Tensor]
    probe: nn.Conv2d | None
    sample_contingency: dict[int, Tensor]


def metric_name(prefix: str, name: str) -> str:
    """The MLflow metric name, e.g. ``eval/baseline_random_cluster27_hungarian_miou``."""
    return f"eval/{prefix}{name}"


def eval_tags(cfg: EvalConfig, dataset: str, split_set: str, mapping_fit_set: str) -> dict[str, str]:
    """The MLflow tags recorded with every evaluation (docs/architecture.md)."""
    return {
        "eval_protocol": cfg.protocol,
        "eval_short_side": str(cfg.short_side),
        "eval_dataset": dataset,
        "eval_split_set": split_set,
        "eval_superpixel_pool": str(cfg.superpixel_pool).lower(),
        "mapping_fit_set": mapping_fit_set,
    }


def load_model(source: nn.Module | str | Path) -> tuple[nn.Module, ModelConfig | None]:
    """A module passes through; a checkpoint path (or run dir) is loaded with ``vice.checkpoint.load_for_eval``.

    Returns:
        ``(model, model config or None)``.
    """
    if isinstance(source, nn.Module):
        return source, None
    from vice.checkpoint import load_for_eval

    model, cfg = load_for_eval(source)
    return model, cfg.model


def build_random_init(model_cfg: ModelConfig, seed: int = 0) -> nn.Module:
    """The network of ``model_cfg`` at random initialization: no pretrained weights, seeded init."""
    from vice.model import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(dataclasses.replace(model_cfg, pretrained=None))


def random_init_like(model: nn.Module, model_cfg: ModelConfig | None = None, seed: int = 0) -> nn.Module:
    """The same network at random initialization (the ``baseline_random_`` pipeline).

    With ``model_cfg``, the network is built anew by :func:`build_random_init` (so its own init
    scheme applies); otherwise a copy of ``model`` has every ``reset_parameters`` called.
    """
    if model_cfg is not None:
        return build_random_init(model_cfg, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = copy.deepcopy(model)
        for module in fresh.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
        return fresh


def _groups(items: Iterable[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split a batch into groups of equal image size (each group is embedded as one tensor)."""
    by_shape: dict[tuple[int, ...], list[dict[str, Any]]] = {}
    for item in items:
        by_shape.setdefault(item["image"].shape, []).append(item)
    return list(by_shape.values())


def _stack(group: list[dict[str, Any]], key: str, device: torch.device) -> Tensor:
    return torch.from_numpy(np.stack([item[key] for item in group])).to(device)


def _features(pipeline: Pipeline, images: Tensor, regions: Tensor | None) -> Tensor:
    """Features (G, D, h, w) of uint8 images (G, 3, h, w), pooled over superpixels when ``regions`` is set."""
    features = pipeline.embed(images)
    if regions is None:
        return features
    pooled = pool_superpixels(features, regions)
    return F.normalize(pooled, dim=1) if pipeline.spherical else pooled


def collect_samples(
    pipelines: list[Pipeline], loader: DataLoader[Any], capacity: int, device: torch.device
) -> tuple[dict[str, tuple[Tensor, Tensor]], int]:
    """Embed the train split and keep the same uniform pixel sample of every pipeline's features.

    Returns:
        ``({prefix: (features (N, D), labels (N,))}, number of corrupt images skipped)``.
    """
    reservoirs = {p.prefix: PixelReservoir(capacity) for p in pipelines}
    skipped = 0
    for batch in tqdm(loader, desc="embed train split", leave=False, disable=None):
        for item in batch:
            if "corrupt" in item:
                skipped += 1
                log.warning("skipped train image %d (%d so far): %s", item["index"], skipped, item["corrupt"])
        for group in _groups(item for item in batch if "corrupt" not in item):
            images = _stack(group, "image", device).permute(0, 3, 1, 2)  # (G, 3, h, w)
            labels = _stack(group, "label", device).flatten()  # (G*h*w,)
            keys = _stack(group, "keys", device).flatten()  # (G*h*w,)
            regions = _stack(group, "regions", device) if "regions" in group[0] else None
            for pipeline in pipelines:
                features = _features(pipeline, images, regions)
                flat = features.permute(0, 2, 3, 1).reshape(keys.numel(), -1)  # (G*h*w, D)
                reservoirs[pipeline.prefix].add(flat, labels, keys)
    return {prefix: reservoir.sample() for prefix, reservoir in reservoirs.items()}, skipped


def fit_pipeline(
    pipeline: Pipeline,
    features: Tensor,
    labels: Tensor,
    cfg: EvalConfig,
    num_classes: int,
    seed: int,
    probe_batch_pixels: int,
) -> FittedPipeline:
    """Fit k-means for every C and, if asked and possible, the linear probe on a train sample.

    Args:
        pipeline: the features' pipeline.
        features: (N, D) sampled train pixels.
        labels: (N,) their classes, -1 = ignore.
        cfg: the evaluation settings.
        num_classes: number of classes.
        seed: seed of k-means and of the probe's pixel draws.
        probe_batch_pixels: pixels per probe step.
    """
    centroids: dict[int, Tensor] = {}
    contingency: dict[int, Tensor] = {}
    for num_clusters in cfg.num_clusters:
        centroids[num_clusters] = fit_kmeans(
            features, num_clusters, cfg.kmeans_iterations, seed, pipeline.spherical
        )
        assigned = assign_clusters(features, centroids[num_clusters], pipeline.spherical)
        contingency[num_clusters] = confusion_matrix(labels, assigned, num_classes, num_clusters)
    probe = None
    if pipeline.probe and bool((labels >= 0).any()):
        probe = fit_probe(
            features,
            labels,
            num_classes,
            cfg.probe_steps,
            cfg.probe_lr,
            cfg.probe_momentum,
            cfg.probe_weight_decay,
            probe_batch_pixels,
            seed,
        )
    elif pipeline.probe:
        log.warning(
            "the train split has no labelled pixel: linear probe skipped for %r", pipeline.prefix or "model"
        )
    return FittedPipeline(centroids, probe, contingency)


def _num_predicted(name: str, num_classes: int) -> int:
    """Number of predicted ids of a prediction: C for ``cluster{C}``, num_classes for ``linear``."""
    return num_classes if name == LINEAR else int(name[len(CLUSTER) :])


def _predictions(fitted: FittedPipeline, features: Tensor, spherical: bool) -> dict[str, Tensor]:
    """Predictions (G, h, w) of feature maps (G, D, h, w): ``cluster{C}`` ids and ``linear`` classes."""
    predictions = {
        f"{CLUSTER}{c}": assign_map(features, cents, spherical) for c, cents in fitted.centroids.items()
    }
    if fitted.probe is not None:
        predictions[LINEAR] = probe_predict(fitted.probe, features)
    return predictions


def score_split(
    pipelines: list[Pipeline],
    fitted: dict[str, FittedPipeline],
    loader: DataLoader[Any],
    num_classes: int,
    device: torch.device,
    num_pictures: int,
) -> tuple[dict[str, dict[str, Tensor]], list[dict[str, Any]]]:
    """Predict every eval pixel and sum confusion counts at the label's resolution.

    Returns:
        ``({prefix: {prediction: (num_classes, num_pred) counts}}, picture records)``: the
        predictions are ``cluster{C}`` (num_pred = C) and ``linear`` (num_pred = num_classes);
        a record holds the model's image, label, PCA and predictions for one of the first
        ``num_pictures`` images.
    """
    counts: dict[str, dict[str, Tensor]] = {p.prefix: {} for p in pipelines}
    records: list[dict[str, Any]] = []
    for batch in tqdm(loader, desc="score eval split", leave=False, disable=None):
        for group in _groups(batch):
            images = _stack(group, "image", device).permute(0, 3, 1, 2)  # (G, 3, h, w)
            regions = _stack(group, "regions", device) if "regions" in group[0] else None
            targets = torch.cat([torch.from_numpy(item["label_score"]).flatten() for item in group]).to(
                device
            )
            for pipeline in pipelines:
                features = _features(pipeline, images, regions)
                predictions = _predictions(fitted[pipeline.prefix], features, pipeline.spherical)
                names = list(predictions)
                stacked = torch.stack([predictions[n] for n in names])  # (P, G, h, w)
                resized = [
                    resize_nearest(stacked[:, i], item["label_score"].shape) for i, item in enumerate(group)
                ]
                flat = torch.cat([r.flatten(1) for r in resized], dim=1)  # (P, pixels of the group)
                summed = counts[pipeline.prefix]
                for row, name in enumerate(names):
                    found = confusion_matrix(
                        targets, flat[row], num_classes, _num_predicted(name, num_classes)
                    )
                    summed[name] = summed[name] + found if name in summed else found
                if pipeline.prefix != MODEL_PREFIX:
                    continue
                for i, item in enumerate(group):
                    if item["index"] < num_pictures:
                        records.append(
                            {
                                "index": item["index"],
                                "image": item["image"],
                                "label": item["label_score"],
                                "pca": pca_rgb(features[i]),
                                "predictions": {
                                    n: resized[i][row].cpu().numpy() for row, n in enumerate(names)
                                },
                            }
                        )
    return counts, records


#: Prefix of the model's gain over the same network at random init (``eval/gain_linear_miou``, ...).
GAIN_PREFIX = "gain_"


def gains_over_random(metrics: dict[str, float]) -> dict[str, float]:
    """The model's mIoU minus the random-init network's, per metric both have.

    A model that does not learn shows a gain near 0 (or below) here, in MLflow and in the tables.

    Args:
        metrics: flat evaluation metrics with the model's and the ``baseline_random_`` mIoUs.

    Returns:
        ``eval/gain_<stem>`` for every ``eval/<stem>`` ending in ``_miou`` that has a random-init twin.
    """
    gains = {}
    for key, value in metrics.items():
        stem = key.removeprefix("eval/")
        if (
            key.startswith("eval/baseline_")
            or key.startswith(f"eval/{GAIN_PREFIX}")
            or not stem.endswith("_miou")
        ):
            continue
        floor = metrics.get(f"eval/{RANDOM_PREFIX}{stem}")
        if floor is not None:
            gains[f"eval/{GAIN_PREFIX}{stem}"] = value - floor
    return gains


def warn_no_hungarian(num_clusters: Iterable[int], num_classes: int, dataset: str) -> list[int]:
    """Log one warning per C below ``num_classes``: it gets majority mapping only, no Hungarian score.

    Returns:
        The C values warned about.
    """
    below = [c for c in num_clusters if c < num_classes]
    for c in below:
        log.warning(
            "eval.num_clusters has C=%d, fewer than the %d classes of %s: C=%d is scored by majority "
            "mapping only (Hungarian matching needs C = %d)",
            c,
            num_classes,
            dataset,
            c,
            num_classes,
        )
    return below


def _mappings(contingency: Tensor, num_classes: int) -> dict[str, Tensor]:
    """The mappings scored for one C: majority always, Hungarian when C = num_classes."""
    mappings = {"majority": majority_mapping(contingency)}
    if contingency.shape[1] == num_classes:
        mappings["hungarian"] = hungarian_mapping(contingency)
    return mappings


def summarize(
    counts: dict[str, dict[str, Tensor]],
    fitted: dict[str, FittedPipeline],
    num_classes: int,
    mapping_fit_set: str,
) -> tuple[dict[str, float], dict[str, list[float]], dict[str, dict[str, Tensor]]]:
    """Map clusters to classes and score every prediction.

    Returns:
        ``(metrics, per-class IoU by metric stem, {prefix: {cluster{C}_{kind}: mapping (C,)}})``.
    """
    metrics: dict[str, float] = {}
    per_class: dict[str, list[float]] = {}
    all_mappings: dict[str, dict[str, Tensor]] = {}
    for prefix, found in counts.items():
        all_mappings[prefix] = {}
        for name, confusion in found.items():
            if name == LINEAR:
                scored = {LINEAR: confusion}
            else:
                num_clusters = _num_predicted(name, num_classes)
                fit_on = (
                    confusion
                    if mapping_fit_set == "eval"
                    else fitted[prefix].sample_contingency[num_clusters]
                )
                scored = {}
                for kind, mapping in _mappings(fit_on, num_classes).items():
                    all_mappings[prefix][f"{name}_{kind}"] = mapping
                    scored[f"{name}_{kind}"] = mapped_confusion(confusion, mapping)
            for stem, matrix in scored.items():
                scores = segmentation_scores(matrix)
                metrics[metric_name(prefix, f"{stem}_miou")] = scores.miou
                metrics[metric_name(prefix, f"{stem}_acc")] = scores.acc
                per_class[metric_name(prefix, stem)] = scores.iou.tolist()
    return metrics, per_class, all_mappings


def write_pictures(
    out_dir: Path,
    records: list[dict[str, Any]],
    mappings: dict[str, Tensor],
    palette: np.ndarray,
    num_classes: int,
) -> list[Path]:
    """Write ``pca_{i}.png`` (image | PCA, Fig. 4) and ``segmentation_{i}.png`` (Fig. 3).

    A segmentation panel shows image | ground truth | one map per C | linear probe, in class colours.

    Cluster maps are shown after their class mapping: Hungarian for C = num_classes, majority otherwise.
    """
    written = []
    for record in records:
        label = record["label"]
        size = label.shape[::-1]
        image = cv2.resize(record["image"], size, interpolation=cv2.INTER_LINEAR)
        pca = cv2.resize(record["pca"], size, interpolation=cv2.INTER_LINEAR)
        panels = [("image", image), ("ground truth", colourize(label, palette))]
        for name, prediction in record["predictions"].items():
            if name == LINEAR:
                panels.append(("linear probe", colourize(prediction, palette)))
                continue
            num_clusters = _num_predicted(name, num_classes)
            kind = "hungarian" if num_clusters == num_classes else "majority"
            classes = mappings[f"{name}_{kind}"].numpy()[prediction]
            panels.append((f"C {num_clusters} ({kind})", colourize(classes, palette)))
        index = record["index"]
        written.append(save_panels(out_dir / f"segmentation_{index:03d}.png", panels))
        written.append(
            save_panels(out_dir / f"pca_{index:03d}.png", [("image", image), ("embedding PCA", pca)])
        )
    return written


def evaluate(
    model: nn.Module | str | Path,
    cfg: EvalConfig,
    train_set: LabelledDataset,
    eval_set: LabelledDataset,
    *,
    model_cfg: ModelConfig | None = None,
    decompose: Decomposer | None = None,
    device: str | torch.device = "cpu",
    out_dir: str | Path | None = None,
    seed: int = 0,
    split_set: str = "stego",
    mapping_fit_set: str = "eval",
    pad: int = DEFAULT_PAD,
    probe_batch_pixels: int = DEFAULT_PROBE_BATCH_PIXELS,
    amp: str = "none",
    num_workers: int = 0,
) -> dict[str, float]:
    """Evaluate a frozen model (and the baselines) by clustering and by a linear probe.

    Args:
        model: the network, or a checkpoint path for ``vice.checkpoint.load_for_eval``.
        cfg: the ``eval`` section of the config.
        train_set: labelled dataset whose pixels fit k-means and the probe.
        eval_set: labelled dataset that is scored; same classes as ``train_set``.
        model_cfg: the model's config, to build the random-init baseline anew (else its
            parameters are reset); ignored when ``model`` is a path: the checkpoint's own model
            config is used, so the baseline has the checkpoint's architecture.
        decompose: image (h, w, 3) uint8 -> superpixel ids (h, w); needed with ``cfg.superpixel_pool``.
        device: where the model, the features, the assignment and the confusion counts live.
        out_dir: where ``metrics.json`` and the pictures are written; None writes nothing.
        seed: seed of the pixel sample, k-means, the probe and the random-init baseline.
        split_set: the split set recorded in the tags (Cityscapes ``picie`` | ``stego``).
        mapping_fit_set: ``eval`` (map clusters on the scored split, as PiCIE and STEGO do) or
            ``train`` (on the labelled pixels of the train sample).
        pad: reflect padding around each image before embedding, in pixels.
        probe_batch_pixels: pixels per linear-probe step.
        amp: autocast for the network forward on CUDA (``bf16`` | ``fp16`` | ``none``).
        num_workers: data-loading worker processes.

    Returns:
        Flat metrics named as in docs/architecture.md (``eval/cluster{C}_{hungarian|majority}_{miou|acc}``,
        ``eval/linear_{miou|acc}``, the same with ``eval/baseline_random_`` and ``eval/baseline_rgb_``),
        plus ``eval/kmeans_sample_size`` (train pixels k-means saw) and ``eval/num_skipped_images``.
    """
    if train_set.num_classes != eval_set.num_classes:
        raise ValueError(
            f"train split has {train_set.num_classes} classes but eval split {eval_set.num_classes}"
        )
    if mapping_fit_set not in MAPPING_FIT_SETS:
        raise ValueError(f"mapping_fit_set={mapping_fit_set!r} is invalid: one of {MAPPING_FIT_SETS}")
    if cfg.superpixel_pool and decompose is None:
        raise ValueError("eval.superpixel_pool=true needs a superpixel decomposition (pass decompose)")
    device = torch.device(device)
    num_classes = eval_set.num_classes
    warn_no_hungarian(cfg.num_clusters, num_classes, eval_set.name)
    network, loaded_cfg = load_model(model)
    model_cfg = loaded_cfg or model_cfg  # the checkpoint's own architecture, for the random-init baseline
    network = network.to(device).eval()
    pipelines = [Pipeline(MODEL_PREFIX, network_embedder(network, pad, amp), spherical=True, probe=True)]
    if cfg.baselines:
        random_network = random_init_like(network, model_cfg, seed).to(device).eval()
        pipelines.append(Pipeline(RANDOM_PREFIX, network_embedder(random_network, pad, amp), True, True))
        pipelines.append(Pipeline(RGB_PREFIX, rgb_embedder, spherical=False, probe=True))

    pool = decompose if cfg.superpixel_pool else None
    limit = cfg.max_images or max(len(train_set), len(eval_set))
    train_view = ProtocolDataset(
        train_set, cfg.protocol, cfg.short_side, limit, seed, pool, skip_corrupt=True
    )
    eval_view = ProtocolDataset(eval_set, cfg.protocol, cfg.short_side, limit, None, pool)
    loader_args: dict[str, Any] = {
        "batch_size": cfg.batch_size,
        "num_workers": num_workers,
        "collate_fn": list,
    }
    samples, skipped = collect_samples(
        pipelines, DataLoader(train_view, **loader_args), cfg.kmeans_sample, device
    )
    if mapping_fit_set == "train" and not bool((samples[MODEL_PREFIX][1] >= 0).any()):
        raise ValueError(
            "mapping_fit_set=train but the train split has no labelled pixel (e.g. Cityscapes split_set=picie "
            "trains on test + train_extra): fit the mapping on the eval split"
        )
    fitted = {
        p.prefix: fit_pipeline(p, *samples[p.prefix], cfg, num_classes, seed, probe_batch_pixels)
        for p in pipelines
    }
    counts, records = score_split(
        pipelines, fitted, DataLoader(eval_view, **loader_args), num_classes, device, cfg.pictures
    )
    metrics, per_class, mappings = summarize(counts, fitted, num_classes, mapping_fit_set)
    metrics.update(gains_over_random(metrics))
    metrics["eval/kmeans_sample_size"] = float(samples[MODEL_PREFIX][0].shape[0])
    metrics["eval/num_skipped_images"] = float(skipped)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tags = eval_tags(cfg, eval_set.name, split_set, mapping_fit_set)
        report = {
            "metrics": metrics,
            "tags": tags,
            "class_names": list(eval_set.class_names),
            "per_class_iou": per_class,
        }
        (out / "metrics.json").write_text(json.dumps(report, indent=1))
        write_pictures(out, records, mappings[MODEL_PREFIX], np.asarray(eval_set.palette), num_classes)
    return metrics
