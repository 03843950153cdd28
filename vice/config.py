"""Typed configuration schema for every vice job.

The dataclasses below are registered with Hydra's ConfigStore, so the YAML files in ``sweeps/``
compose onto them: a misspelt key or a wrong type fails at compose time. Value checks that types
cannot express (``embed_dim > 0``, ``mask_ratio`` in [0, 1], ...) live in :func:`validate`, which
every entry point calls before any work is done or any job is submitted.

Names here are the project's names: the MLflow params are these keys, flattened with dots.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vice.redact import redact_uri

#: OpenCV's SLIC indexes out of bounds for very small region sizes (opencv_contrib#623).
MIN_SLIC_REGION_SIZE = 4


@dataclass
class RegionConfig:
    """How an image is decomposed into regions (Table 3 and Fig. 5 axes)."""

    method: str = "slic"  # slic | grid | pixel
    algorithm: str = "SLIC"  # SLIC | SLICO | MSLIC (method=slic only)
    region_size: int = 20  # SLIC average superpixel side, or grid cell side, in pixels
    ruler: float = 10.0  # SLIC compactness
    iterations: int = 5  # SLIC iterate() count
    connectivity: bool = True  # SLIC connectivity step: one connected patch per region (false: raw labels)
    cache_dir: str | None = None  # on-disk cache of decompositions; None disables it


@dataclass
class ViewConfig:
    """Algorithm 1: view generation, region masking and mutual regions."""

    num_views: int = 5  # M, including the centre view 0
    view_size: int = 256  # common side of every view after resizing (256 low-res, 512 high-res)
    resize_range: list[float] = field(default_factory=lambda: [0.5, 2.0])  # beta ~ U(range); Sec. 4: 0.5 to 2
    flip_prob: float = 0.5
    photometric: bool = True  # colour distortion + blur
    color_strength: float = 1.0  # SimCLR colour-distortion strength
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    mask_ratio: float = 0.25  # maximal mask coverage of a view, and the mask rectangle's side / view_size
    mask_protected_share: float = 0.25  # share of mutual regions never masked
    max_resample: int = 10  # attempts to find views that share at least one region


@dataclass
class DataConfig:
    """Which images are trained on and how they are batched."""

    name: str = "synthetic"  # synthetic | folder | cocostuff | cityscapes | labelled_folder
    root: str | None = None  # dataset root (None only for synthetic)
    split: str = "train"
    split_set: str = "stego"  # cityscapes: picie | stego
    num_images: int = 256  # synthetic: dataset length
    image_size: list[int] = field(default_factory=lambda: [256, 320])  # synthetic: (H, W)
    batch_size: int = 4  # images per rank; views per rank = batch_size * num_views
    num_workers: int = 2


@dataclass
class ModelConfig:
    """Backbone, decoder and embedding head."""

    backbone: str = "resnet18"  # resnet18 | resnet34 | resnet50 | resnet101
    output_stride: int = 8  # 8 | 16
    num_stages: int = 4  # ResNet stages used: 4 = c2..c5 (the paper); 3 stops after layer3 (CPU recipes)
    decoder: str = "fpn"  # fpn | deeplabv3plus
    decoder_channels: int | None = None  # None = the paper's: 128 for FPN (PiCIE's), 256 for DeepLabV3+
    embed_dim: int = 128  # D
    pretrained: str | None = None  # path to a torchvision ResNet state dict; None = random init
    sync_bn: bool = True  # SyncBN across ranks when distributed


@dataclass
class SwavConfig:
    """Prototypes, Sinkhorn-Knopp, queue and the swapped-prediction loss."""

    num_prototypes: int = 128  # K
    temperature: float = 0.1  # tau
    sinkhorn_epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    queue_length: int = 5000  # region embeddings per rank (Sec. 4: 5K per GPU); 0 disables the queue
    queue_start_step: int = 313
    freeze_prototypes_steps: int = 313
    target_views: int = 1  # T: views 0..T-1 give Sinkhorn targets (1: the paper's eq. 3; M: SwAV's swap)


@dataclass
class OptimConfig:
    """SGD + LARS, warmup then per-step cosine decay, linear LR scaling."""

    base_lr: float = 0.04  # learning rate per `base_lr_world_size` ranks (linear scaling rule)
    base_lr_world_size: int = 4
    momentum: float = 0.9
    weight_decay: float = 1e-6
    lars_trust: float = 0.001  # LARC trust coefficient; 0 disables LARS
    warmup_steps: int = 0
    final_lr_ratio: float = 0.001  # final LR = peak * final_lr_ratio


@dataclass
class TrainConfig:
    """The training loop."""

    max_steps: int = 200
    log_every: int = 10
    checkpoint_every: int = 100
    eval_every: int = 0  # intermediate evaluation (Fig. 6, pruning); 0 = only at the end
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "bf16"  # bf16 | fp16 | none (used on CUDA only)
    channels_last: bool = True  # used on CUDA only
    threads: int = 0  # torch CPU threads; 0 = leave torch's default


@dataclass
class EvalConfig:
    """Unsupervised segmentation evaluation (cluster and linear probe)."""

    enabled: bool = True
    dataset: str | None = None  # None = same as data.name
    root: str | None = None  # None = same as data.root
    protocol: str = "full"  # picie | full
    short_side: int = 320
    num_clusters: list[int] = field(default_factory=lambda: [27, 128, 256])
    kmeans_iterations: int = 20
    kmeans_sample: int = 1_000_000  # pixels sampled from the train split for the k-means fit
    probe_steps: int = 12000
    probe_lr: float = 0.01
    probe_momentum: float = 0.9
    probe_weight_decay: float = 5e-4
    probe_batch_pixels: int = 8192  # pixels per linear-probe step
    mapping_fit_set: str = "eval"  # eval (as PiCIE/STEGO) | train: where the cluster->class map is fitted
    reflect_pad: int = 32  # reflect padding around each image before embedding, in pixels
    superpixel_pool: bool = False
    max_images: int = 0  # 0 = whole split
    batch_size: int = 8
    baselines: bool = True  # raw-colour k-means and random-init network
    pictures: int = 4  # images drawn as Fig. 3 / Fig. 4 PNGs
    checkpoint: str | None = None  # vice-eval: None = newest in run_dir | a .pt file or run dir | random


@dataclass
class TrackingConfig:
    """Where runs are recorded."""

    enabled: bool = False
    tracking_uri: str | None = None  # None = sqlite file in the output dir
    experiment: str | None = None  # MLflow experiment; None = the experiment name
    parent_run_id: str | None = None
    sweep_id: str | None = None


@dataclass
class Config:
    """Everything one job needs. ``experiment`` names the paper experiment it belongs to."""

    experiment: str = "default"
    seed: int = 0
    run_dir: str = "outputs/default"  # deterministic job dir: checkpoints, resume, pictures
    regions: RegionConfig = field(default_factory=RegionConfig)
    views: ViewConfig = field(default_factory=ViewConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    swav: SwavConfig = field(default_factory=SwavConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


REGION_METHODS = ("slic", "grid", "pixel")
SLIC_ALGORITHMS = ("SLIC", "SLICO", "MSLIC")
DATASETS = ("synthetic", "folder", "cocostuff", "cityscapes", "labelled_folder")
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
DECODERS = ("fpn", "deeplabv3plus")
AMP_MODES = ("bf16", "fp16", "none")
DEVICES = ("auto", "cpu", "cuda")
PROTOCOLS = ("picie", "full")
CITYSCAPES_SPLIT_SETS = ("picie", "stego")
#: ``eval.checkpoint`` value that evaluates the network at random initialization.
RANDOM_CHECKPOINT = "random"


class ConfigError(ValueError):
    """A config value is out of range. The message names the key and what is allowed."""


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def validate(cfg: Config | DictConfig) -> None:
    """Check every value that types cannot express; raise :class:`ConfigError` naming the key.

    Args:
        cfg: a composed config (dataclass or DictConfig over the :class:`Config` schema).
    """
    r, v, d, m, s, o, t, e = (
        cfg.regions,
        cfg.views,
        cfg.data,
        cfg.model,
        cfg.swav,
        cfg.optim,
        cfg.train,
        cfg.eval,
    )
    _check(r.method in REGION_METHODS, "regions.method", r.method, f"one of {REGION_METHODS}")
    _check(r.algorithm in SLIC_ALGORITHMS, "regions.algorithm", r.algorithm, f"one of {SLIC_ALGORITHMS}")
    if r.method == "slic":
        _check(
            r.region_size >= MIN_SLIC_REGION_SIZE,
            "regions.region_size",
            r.region_size,
            f">= {MIN_SLIC_REGION_SIZE} for SLIC (OpenCV indexes out of bounds below that)",
        )
    _check(r.region_size >= 1, "regions.region_size", r.region_size, ">= 1")
    _check(r.ruler > 0, "regions.ruler", r.ruler, "> 0")
    _check(r.iterations >= 1, "regions.iterations", r.iterations, ">= 1")

    _check(v.num_views >= 2, "views.num_views", v.num_views, ">= 2 (view 0 gives targets, others predict)")
    _check(v.view_size >= 16, "views.view_size", v.view_size, ">= 16 pixels")
    lo_hi = list(v.resize_range)
    _check(
        len(lo_hi) == 2 and 0 < lo_hi[0] <= lo_hi[1],
        "views.resize_range",
        lo_hi,
        "[low, high] with 0 < low <= high",
    )
    for key in ("flip_prob", "grayscale_prob", "blur_prob", "mask_ratio", "mask_protected_share"):
        val = getattr(v, key)
        _check(0.0 <= val <= 1.0, f"views.{key}", val, "within [0, 1]")
    _check(v.color_strength >= 0, "views.color_strength", v.color_strength, ">= 0")
    _check(v.max_resample >= 1, "views.max_resample", v.max_resample, ">= 1")

    _check(d.name in DATASETS, "data.name", d.name, f"one of {DATASETS}")
    _check(d.name == "synthetic" or bool(d.root), "data.root", d.root, f"a directory for data.name={d.name}")
    _check(d.batch_size >= 1, "data.batch_size", d.batch_size, ">= 1")
    _check(d.num_workers >= 0, "data.num_workers", d.num_workers, ">= 0")
    _check(d.num_images >= 1, "data.num_images", d.num_images, ">= 1")
    _check(
        len(d.image_size) == 2 and min(d.image_size) >= 16,
        "data.image_size",
        list(d.image_size),
        "[H, W], each >= 16",
    )
    _check(
        d.split_set in CITYSCAPES_SPLIT_SETS, "data.split_set", d.split_set, f"one of {CITYSCAPES_SPLIT_SETS}"
    )

    _check(m.backbone in BACKBONES, "model.backbone", m.backbone, f"one of {BACKBONES}")
    _check(m.output_stride in (8, 16), "model.output_stride", m.output_stride, "8 or 16")
    _check(
        m.num_stages in (3, 4),
        "model.num_stages",
        m.num_stages,
        "4 (c2..c5, the paper) or 3 (stop after layer3)",
    )
    _check(m.decoder in DECODERS, "model.decoder", m.decoder, f"one of {DECODERS}")
    _check(
        m.decoder_channels is None or m.decoder_channels >= 1,
        "model.decoder_channels",
        m.decoder_channels,
        ">= 1, or null for the decoder's own (128 FPN, 256 DeepLabV3+)",
    )
    _check(m.embed_dim >= 1, "model.embed_dim", m.embed_dim, ">= 1 (the embedding dimension D)")

    _check(s.num_prototypes >= 2, "swav.num_prototypes", s.num_prototypes, ">= 2 (K)")
    _check(s.temperature > 0, "swav.temperature", s.temperature, "> 0")
    _check(s.sinkhorn_epsilon > 0, "swav.sinkhorn_epsilon", s.sinkhorn_epsilon, "> 0")
    _check(s.sinkhorn_iterations >= 1, "swav.sinkhorn_iterations", s.sinkhorn_iterations, ">= 1")
    _check(s.queue_length >= 0, "swav.queue_length", s.queue_length, ">= 0 (0 disables the queue)")
    if s.queue_length > 0:
        _check(
            s.queue_length >= d.batch_size,
            "swav.queue_length",
            s.queue_length,
            f">= data.batch_size ({d.batch_size}): the queue must hold at least one batch",
        )
    _check(s.queue_start_step >= 0, "swav.queue_start_step", s.queue_start_step, ">= 0")
    _check(s.freeze_prototypes_steps >= 0, "swav.freeze_prototypes_steps", s.freeze_prototypes_steps, ">= 0")
    _check(
        1 <= s.target_views <= v.num_views,
        "swav.target_views",
        s.target_views,
        f"within [1, views.num_views = {v.num_views}] (1: view 0 only, as the paper)",
    )

    _check(o.base_lr > 0, "optim.base_lr", o.base_lr, "> 0")
    _check(o.base_lr_world_size >= 1, "optim.base_lr_world_size", o.base_lr_world_size, ">= 1")
    _check(0 <= o.momentum < 1, "optim.momentum", o.momentum, "within [0, 1)")
    _check(o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, ">= 0")
    _check(o.lars_trust >= 0, "optim.lars_trust", o.lars_trust, ">= 0 (0 disables LARS)")
    _check(o.warmup_steps >= 0, "optim.warmup_steps", o.warmup_steps, ">= 0")
    _check(0 <= o.final_lr_ratio <= 1, "optim.final_lr_ratio", o.final_lr_ratio, "within [0, 1]")

    _check(t.max_steps >= 1, "train.max_steps", t.max_steps, ">= 1")
    _check(t.log_every >= 1, "train.log_every", t.log_every, ">= 1")
    _check(t.checkpoint_every >= 1, "train.checkpoint_every", t.checkpoint_every, ">= 1")
    _check(t.eval_every >= 0, "train.eval_every", t.eval_every, ">= 0")
    _check(t.device in DEVICES, "train.device", t.device, f"one of {DEVICES}")
    _check(t.amp in AMP_MODES, "train.amp", t.amp, f"one of {AMP_MODES}")
    _check(t.threads >= 0, "train.threads", t.threads, ">= 0")

    _check(e.protocol in PROTOCOLS, "eval.protocol", e.protocol, f"one of {PROTOCOLS}")
    _check(e.short_side >= 16, "eval.short_side", e.short_side, ">= 16")
    _check(
        len(e.num_clusters) >= 1 and all(c >= 2 for c in e.num_clusters),
        "eval.num_clusters",
        list(e.num_clusters),
        "a non-empty list of cluster counts, each >= 2",
    )
    _check(e.kmeans_iterations >= 1, "eval.kmeans_iterations", e.kmeans_iterations, ">= 1")
    _check(e.kmeans_sample >= 1, "eval.kmeans_sample", e.kmeans_sample, ">= 1")
    _check(e.probe_steps >= 1, "eval.probe_steps", e.probe_steps, ">= 1")
    _check(e.probe_lr > 0, "eval.probe_lr", e.probe_lr, "> 0")
    _check(e.batch_size >= 1, "eval.batch_size", e.batch_size, ">= 1")
    _check(e.max_images >= 0, "eval.max_images", e.max_images, ">= 0 (0 = whole split)")
    _check(e.probe_batch_pixels >= 1, "eval.probe_batch_pixels", e.probe_batch_pixels, ">= 1")
    _check(e.mapping_fit_set in ("eval", "train"), "eval.mapping_fit_set", e.mapping_fit_set, "eval or train")
    _check(e.reflect_pad >= 0, "eval.reflect_pad", e.reflect_pad, ">= 0")
    if e.dataset is not None:
        _check(e.dataset in DATASETS, "eval.dataset", e.dataset, f"one of {DATASETS}")
    if e.checkpoint is not None:
        _check(
            e.checkpoint == RANDOM_CHECKPOINT or (e.checkpoint.strip() != "" and Path(e.checkpoint).exists()),
            "eval.checkpoint",
            e.checkpoint,
            f"null (newest checkpoint in run_dir), {RANDOM_CHECKPOINT!r} (the network at random init), "
            "or an existing .pt file or run dir",
        )


def to_config(cfg: DictConfig | Config | dict[str, Any]) -> Config:
    """Return a plain :class:`Config` from a composed DictConfig or a plain dict (or pass one through)."""
    if isinstance(cfg, Config):
        return cfg
    obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), cfg))
    assert isinstance(obj, Config)
    return obj


def redacted(cfg: Config) -> Config:
    """``cfg`` as it may be saved or logged: credentials in ``tracking.tracking_uri`` become ``***@``."""
    uri = cfg.tracking.tracking_uri
    if uri is None or redact_uri(uri) == uri:
        return cfg
    return replace(cfg, tracking=replace(cfg.tracking, tracking_uri=redact_uri(uri)))


def register_schema() -> None:
    """Register :class:`Config` as Hydra's ``vice_schema`` so ``sweeps/config.yaml`` composes onto it."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="vice_schema", node=Config)
