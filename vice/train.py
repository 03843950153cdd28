"""The regional SwAV trainer: the one job every sweep runs (``vice-train``).

:func:`build_training` builds every part of a step from the config (the benchmarks time these same
parts); :func:`train_step` is one optimizer step; :func:`train` is the loop around them: LR schedule,
logging, checkpoints, preemption signals and intermediate evaluations.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vice.checkpoint import load_latest, save_checkpoint
from vice.config import Config, validate
from vice.dist import DistEnv, amp_dtype_for, any_rank, init_distributed, node_process_group, resolve_device
from vice.optim import build_optimizer, cosine_lr, param_groups, scaled_lr, set_lr
from vice.preemption import GracefulStop
from vice.run_logger import NullLogger, RunLogger
from vice.swav import Prototypes, RegionalSwav, RegionQueue, representation_health

log = logging.getLogger(__name__)

#: An evaluation hook: (embedder, step) -> metrics. It may raise to stop the run (e.g. pruning).
Evaluator = Callable[[nn.Module, int], dict[str, float]]
#: Prototype usage below this share of K counts as collapse (warned once per run).
USAGE_COLLAPSE = 0.25


@dataclass
class TrainResult:
    """What a finished training run hands to the evaluation."""

    embedder: nn.Module
    steps: int
    losses: list[float]  # loss of every step this process ran (rank-local)
    run_dir: Path
    resumed_from: int  # step of the checkpoint it resumed from, 0 for a fresh start


@dataclass
class TrainingParts:
    """Everything a training step touches, on its device, resumed from the run dir's checkpoint.

    Attributes:
        model: the unwrapped model (its prototypes are normalized after each step).
        ddp: ``model`` or its DistributedDataParallel wrapper (what runs the forward).
        queue: the region queue, or None.
        optimizer: SGD + LARS.
        scaler: the fp16 gradient scaler (a no-op when disabled).
        device: where the model lives.
        env: this process's place in the job.
        peak_lr: the LR after warmup, scaled by the linear scaling rule (logged, never written back).
        amp_dtype: autocast dtype or None.
        channels_last: feed the views as channels_last.
        start_step: the step the loop starts at (the checkpoint's, 0 for a fresh start).
    """

    model: RegionalSwav
    ddp: nn.Module
    queue: RegionQueue | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    env: DistEnv
    peak_lr: float
    amp_dtype: torch.dtype | None
    channels_last: bool
    start_step: int


def build_regional_swav(cfg: Config) -> tuple[RegionalSwav, RegionQueue | None]:
    """The seeded model (embedder + prototypes) and the queue of ``cfg``, on the CPU."""
    from vice.model import build_model

    torch.manual_seed(cfg.seed)
    swav = cfg.swav
    model = RegionalSwav(
        build_model(cfg.model),
        Prototypes(cfg.model.embed_dim, swav.num_prototypes),
        swav.temperature,
        swav.sinkhorn_epsilon,
        swav.sinkhorn_iterations,
        swav.target_views,
    )
    queue = RegionQueue(swav.queue_length, cfg.model.embed_dim) if swav.queue_length else None
    return model, queue


def build_training(cfg: Config, resume: bool = True) -> TrainingParts:
    """Set up the process group, the model, queue, optimizer and scaler of ``cfg``, and resume.

    Args:
        cfg: the job's full config (validated here again).
        resume: load the newest checkpoint of ``cfg.run_dir`` if there is one.

    Returns:
        The parts of a step; the loader is built by the caller from ``start_step``.
    """
    validate(cfg)
    device = resolve_device(cfg.train.device)
    env = init_distributed(device.type)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    model, queue = build_regional_swav(cfg)
    on_cuda = device.type == "cuda"
    if env.world_size > 1 and cfg.model.sync_bn and on_cuda:  # SyncBatchNorm has no CPU kernels
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group=node_process_group(env))
    model.to(device)
    if queue is not None:
        queue.to(device)
    channels_last = on_cuda and cfg.train.channels_last
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    peak_lr = scaled_lr(cfg.optim.base_lr, env.world_size, cfg.optim.base_lr_world_size)
    optimizer = build_optimizer(
        param_groups(model, cfg.optim.weight_decay),
        lr=peak_lr,
        momentum=cfg.optim.momentum,
        weight_decay=cfg.optim.weight_decay,
        lars_trust=cfg.optim.lars_trust,
    )
    amp_dtype = amp_dtype_for(cfg.train.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)
    start_step = 0
    state = load_latest(Path(cfg.run_dir), map_location=device) if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if queue is not None and state.get("queue") is not None:
            queue.load_state_dict(state["queue"])
        start_step = int(state["step"])
        log.info("resumed from step %d in %s", start_step, cfg.run_dir)
    ddp: nn.Module = model
    if env.world_size > 1:
        ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=[torch.cuda.current_device()] if on_cuda else None
        )
    return TrainingParts(
        model, ddp, queue, optimizer, scaler, device, env, peak_lr, amp_dtype, channels_last, start_step
    )


def train_step(
    parts: TrainingParts, batch: Any, use_queue: bool, freeze_prototypes: bool, num_views: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimizer step on a :class:`vice.data.train.ViewBatch`; the LR must already be set.

    Args:
        parts: the step's parts (:func:`build_training`).
        batch: views (B*M, 3, S, S), regions (B*M, S, S), num_regions (B,).
        use_queue: whether the queue's contents enter Sinkhorn this step.
        freeze_prototypes: drop the prototypes' gradient this step.
        num_views: M.

    Returns:
        The loss (detached scalar), the (N + F, K) codes of view 0 and the queue, and the (N, D)
        normalized view-0 region means. When the loss of any rank is not finite, no rank takes the
        step and every rank gets a non-finite loss back.
    """
    device, model, queue = parts.device, parts.model, parts.queue
    views = batch.views.to(device, non_blocking=True)  # (B*M, 3, S, S)
    if parts.channels_last:
        views = views.contiguous(memory_format=torch.channels_last)
    regions = batch.regions.to(device, non_blocking=True)  # (B*M, S, S)
    num_regions = batch.num_regions.to(device)  # (B,)
    queued = queue.contents() if queue is not None and use_queue else None
    amp_dtype = parts.amp_dtype
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        loss, codes, z0 = parts.ddp(views, regions, num_regions, num_views, queued)
    finite = math.isfinite(loss.item())  # one host sync
    if any_rank(not finite, device):  # every rank skips backward together
        return (loss if not finite else torch.full_like(loss, math.nan)).detach(), codes, z0
    parts.optimizer.zero_grad(set_to_none=True)
    parts.scaler.scale(loss).backward()
    if freeze_prototypes:
        model.prototypes.weight.grad = None
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    model.prototypes.normalize_()
    if queue is not None:
        queue.push(z0)
    return loss.detach(), codes, z0


def step_metrics(
    loss: float, lr: float, codes: torch.Tensor, z0: torch.Tensor, batch: Any, views_per_s: float
) -> dict[str, float]:
    """The ``train/*`` metrics of a logged step: loss, loss / ln K, LR, speed and representation health."""
    health = {f"train/{k}": float(v) for k, v in representation_health(codes, z0).items()}
    return {
        "train/loss": loss,
        "train/loss_ratio": loss / math.log(codes.shape[1]),
        "train/lr": lr,
        "train/views_per_s": views_per_s,
        "train/regions_per_image": float(batch.num_regions.float().mean()),
        **health,
    }


def health_line(metrics: dict[str, float]) -> str:
    """The progress bar's postfix: loss / ln K and the collapse indicators."""
    return (
        f"loss/lnK={metrics['train/loss_ratio']:.3f} usage={metrics['train/prototype_usage']:.2f} "
        f"H(q)={metrics['train/code_entropy']:.2f} std={metrics['train/embedding_std']:.2f} "
        f"lr={metrics['train/lr']:.2e}"
    )


def warn_collapse(metrics: dict[str, float], step: int, warned: bool) -> bool:
    """Warn the first time prototype usage falls below :data:`USAGE_COLLAPSE`; return whether warned."""
    usage = metrics["train/prototype_usage"]
    if warned or usage >= USAGE_COLLAPSE:
        return warned
    log.warning(
        "prototype usage fell to %.2f of K at step %d: the codes are collapsing onto a few prototypes. "
        "Typical causes: the queue starts too early or is long for the data (swav.queue_start_step, "
        "swav.queue_length), a too large optim.base_lr, or too few regions per batch for K.",
        usage,
        step,
    )
    return True


def train(cfg: Config, logger: RunLogger | None = None, evaluator: Evaluator | None = None) -> TrainResult:
    """Train the regional SwAV model described by ``cfg``, resuming from ``cfg.run_dir`` if possible.

    Args:
        cfg: the job's full config (validated here again).
        logger: where per-step metrics go (rank 0 only); None logs nowhere.
        evaluator: optional hook called every ``train.eval_every`` steps on rank 0.

    Returns:
        The trained embedder and the step/loss record.
    """
    from tqdm import tqdm

    from vice.data.train import build_train_loader

    parts = build_training(cfg)
    main_process = parts.env.rank == 0
    logger = logger if (logger is not None and main_process) else NullLogger()
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    step = parts.start_step
    logger.log_metrics(
        {"train/peak_lr": parts.peak_lr, "train/world_size": float(parts.env.world_size)}, step=step
    )
    loader = build_train_loader(cfg, parts.env.rank, parts.env.world_size, step)
    swav, t = cfg.swav, cfg.train
    losses: list[float] = []
    last_path: Path | None = None
    warned = False
    parts.model.train()
    bar = tqdm(total=t.max_steps, initial=step, disable=not main_process, desc="train", unit="step")
    tick, views_seen = time.perf_counter(), 0
    with GracefulStop() as stop:
        for batch in loader:
            lr = cosine_lr(step, parts.peak_lr, cfg.optim.warmup_steps, t.max_steps, cfg.optim.final_lr_ratio)
            set_lr(parts.optimizer, lr)
            loss, codes, z0 = train_step(
                parts,
                batch,
                step >= swav.queue_start_step,
                step < swav.freeze_prototypes_steps,
                cfg.views.num_views,
            )
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"loss is {value} at step {step}; the run stops and keeps its last good checkpoint "
                    f"({last_path or 'none yet'}). Lower optim.base_lr or swav.sinkhorn_epsilon."
                )
            step += 1
            losses.append(value)
            views_seen += batch.views.shape[0]
            bar.update(1)
            if step % t.log_every == 0 or step == t.max_steps:
                speed = views_seen * parts.env.world_size / max(time.perf_counter() - tick, 1e-9)
                metrics = step_metrics(value, lr, codes, z0, batch, speed)
                bar.set_postfix_str(health_line(metrics))
                if main_process:  # one line and one collapse warning per job, not per rank
                    bar.write(f"step {step:6d}  loss {value:.4f}  {health_line(metrics)}")
                    warned = warn_collapse(metrics, step, warned)
                logger.log_metrics(metrics, step=step)
                tick, views_seen = time.perf_counter(), 0
            stopping = any_rank(stop.signum is not None, parts.device)  # all ranks stop at the same step
            if main_process and (step % t.checkpoint_every == 0 or step == t.max_steps or stopping):
                check_finite_weights(parts.model, step)
                last_path = save_checkpoint(run_dir, step, _state(step, parts, cfg))
            if stopping:
                bar.close()
                log.warning("signal on a rank: checkpointed step %d, handing over", step)
                stop.forward_signal()
            if (
                evaluator is not None
                and main_process
                and t.eval_every
                and step % t.eval_every == 0
                and step < t.max_steps
            ):
                logger.log_metrics(
                    evaluator(parts.model.embedder, step), step=step
                )  # the final one is the job's
    bar.close()
    return TrainResult(parts.model.embedder, step, losses, run_dir, parts.start_step)


def check_finite_weights(model: nn.Module, step: int) -> None:
    """Refuse to checkpoint non-finite weights (a finite loss with inf gradients can make them).

    Raises:
        FloatingPointError: naming the first non-finite parameter; the last good checkpoint stays.
    """
    for name, param in model.named_parameters():
        if not torch.isfinite(param).all():
            raise FloatingPointError(
                f"parameter {name} is not finite after step {step}: not checkpointed; the run keeps its "
                "last good checkpoint. Lower optim.base_lr, or use train.amp=fp16 (loss scaling) or none."
            )


def _state(step: int, parts: TrainingParts, cfg: Config) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return {
        "step": step,
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scaler": parts.scaler.state_dict(),
        "queue": parts.queue.state_dict() if parts.queue is not None else None,
        "config": OmegaConf.to_container(OmegaConf.structured(cfg)),
    }
