"""The regional SwAV trainer: the one job every sweep runs (``vice-train`` / ``python -m vice.train``)."""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import nn

from vice.checkpoint import load_latest, save_checkpoint
from vice.config import Config, validate
from vice.pooling import region_means
from vice.swav import Prototypes, RegionQueue, representation_health, swav_region_loss
from vice.tracking import NullLogger, RunLogger

log = logging.getLogger(__name__)

#: An evaluation hook: (embedder, step) -> metrics. It may raise to stop the run (e.g. pruning).
Evaluator = Callable[[nn.Module, int], dict[str, float]]


class RegionalSwav(nn.Module):
    """Embedder + prototypes; ``forward`` is one whole training loss, so DDP sees every parameter.

    Args:
        embedder: (B*M, 3, S, S) views -> (B*M, D, S, S) L2-normalized embedding maps.
        prototypes: the K prototypes.
        temperature: tau.
        sinkhorn_epsilon: Sinkhorn regularization.
        sinkhorn_iterations: Sinkhorn rounds.
    """

    def __init__(
        self,
        embedder: nn.Module,
        prototypes: Prototypes,
        temperature: float,
        sinkhorn_epsilon: float,
        sinkhorn_iterations: int,
    ) -> None:
        super().__init__()
        self.embedder = embedder
        self.prototypes = prototypes
        self.temperature = temperature
        self.sinkhorn_epsilon = sinkhorn_epsilon
        self.sinkhorn_iterations = sinkhorn_iterations

    def forward(
        self,
        views: torch.Tensor,
        regions: torch.Tensor,
        num_regions: torch.Tensor,
        num_views: int,
        queue: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss of one batch.

        Args:
            views: (B*M, 3, S, S) normalized views, flat index b*M + m.
            regions: (B*M, S, S) int64 mutual region ids, -1 = ignore.
            num_regions: (B,) int64 mutual regions per image.
            num_views: M.
            queue: (F, D) queued view-0 embeddings or None.

        Returns:
            loss (scalar), codes (N + F, K) of view 0 and the queue, and the (N, D) normalized view-0
            region means (what the queue stores).
        """
        embeddings = self.embedder(views)  # (B*M, D, S, S)
        means = region_means(embeddings, regions, num_regions, num_views)  # (M, N, D)
        loss, codes = swav_region_loss(
            means,
            self.prototypes,
            self.temperature,
            self.sinkhorn_epsilon,
            self.sinkhorn_iterations,
            num_regions,
            queue,
        )
        z0 = nn.functional.normalize(means[0].detach().float(), dim=-1)  # (N, D)
        return loss, codes, z0


@dataclass
class TrainResult:
    """What a finished training run hands to the evaluation."""

    embedder: nn.Module
    steps: int
    losses: list[float]  # loss of every step this process ran (rank-local)
    run_dir: Path
    resumed_from: int  # step of the checkpoint it resumed from, 0 for a fresh start


#: Seconds a rank stopped by another rank's signal waits for its own before exiting.
SIGNAL_WAIT_S = 30.0


class GracefulStop:
    """Turn SIGUSR2/SIGTERM into a flag the loop checks between steps.

    The loop then checkpoints and calls the handler that was installed before (submitit's, which
    requeues the job); without one it exits with 128 + signal.
    """

    SIGNALS = (signal.SIGUSR2, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def forward_signal(self, wait_s: float | None = None) -> None:
        """Hand the caught signal to the previous handler, or exit.

        A rank stopped by another rank's signal waits up to ``wait_s`` seconds for its own (SLURM
        signals every task), then exits as if it had got SIGTERM.
        """
        deadline = time.monotonic() + (SIGNAL_WAIT_S if wait_s is None else wait_s)
        while self.signum is None and time.monotonic() < deadline:
            time.sleep(0.1)
        signum = self.signum if self.signum is not None else int(signal.SIGTERM)
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, None)
        raise SystemExit(128 + signum)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is an error naming the key."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is visible: use train.device=auto or cpu")
    return torch.device(name)


def build_regional_swav(cfg: Config) -> tuple[RegionalSwav, RegionQueue | None]:
    """The seeded model (embedder + prototypes) and the queue of ``cfg``, on the CPU."""
    from vice.model import build_model

    torch.manual_seed(cfg.seed)
    s = cfg.swav
    model = RegionalSwav(
        build_model(cfg.model),
        Prototypes(cfg.model.embed_dim, s.num_prototypes),
        s.temperature,
        s.sinkhorn_epsilon,
        s.sinkhorn_iterations,
    )
    queue = RegionQueue(s.queue_length, cfg.model.embed_dim) if s.queue_length else None
    return model, queue


def amp_dtype_for(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` on ``device`` (None: no autocast; AMP is CUDA-only)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp) if device.type == "cuda" else None


def train_step(
    ddp: nn.Module,
    model: RegionalSwav,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    batch: Any,
    queue: RegionQueue | None,
    use_queue: bool,
    freeze_prototypes: bool,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
    num_views: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimizer step on a :class:`vice.data.train.ViewBatch`; the LR must already be set.

    Args:
        ddp: ``model`` or its DistributedDataParallel wrapper (what runs the forward).
        model: the unwrapped model (its prototypes are normalized after the step).
        optimizer: the optimizer.
        scaler: the fp16 gradient scaler (a no-op when disabled).
        batch: views (B*M, 3, S, S), regions (B*M, S, S), num_regions (B,).
        queue: the region queue, pushed with this batch's view-0 embeddings, or None.
        use_queue: whether the queue's contents enter Sinkhorn this step.
        freeze_prototypes: drop the prototypes' gradient this step.
        amp_dtype: autocast dtype or None.
        channels_last: feed the views as channels_last.
        num_views: M.

    Returns:
        The loss (detached scalar), the (N + F, K) codes of view 0 and the queue, and the (N, D)
        normalized view-0 region means. When the loss of any rank is not finite, no rank takes the
        step and every rank gets a non-finite loss back.
    """
    from vice.dist import any_rank

    device = next(model.parameters()).device
    views = batch.views.to(device, non_blocking=True)  # (B*M, 3, S, S)
    if channels_last:
        views = views.contiguous(memory_format=torch.channels_last)
    regions = batch.regions.to(device, non_blocking=True)  # (B*M, S, S)
    num_regions = batch.num_regions.to(device)  # (B,)
    queued = queue.contents() if queue is not None and use_queue else None
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        loss, codes, z0 = ddp(views, regions, num_regions, num_views, queued)
    finite = math.isfinite(loss.item())  # one host sync
    if any_rank(not finite, device):  # every rank skips backward together
        return (loss if not finite else torch.full_like(loss, math.nan)).detach(), codes, z0
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if freeze_prototypes:
        model.prototypes.weight.grad = None
    scaler.step(optimizer)
    scaler.update()
    model.prototypes.normalize_()
    if queue is not None:
        queue.push(z0)
    return loss.detach(), codes, z0


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
    from vice.dist import any_rank, init_distributed, node_process_group
    from vice.optim import build_optimizer, cosine_lr, param_groups, scaled_lr, set_lr

    validate(cfg)
    device = resolve_device(cfg.train.device)
    env = init_distributed(device.type)
    main_process = env.rank == 0
    logger = logger if (logger is not None and main_process) else NullLogger()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    model, queue = build_regional_swav(cfg)
    use_cuda = device.type == "cuda"
    if env.world_size > 1 and cfg.model.sync_bn and use_cuda:  # SyncBatchNorm has no CPU kernels
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group=node_process_group(env))
    model.to(device)
    if queue is not None:
        queue.to(device)
    channels_last = use_cuda and cfg.train.channels_last
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
    state = load_latest(run_dir, map_location=device)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if queue is not None and state.get("queue") is not None:
            queue.load_state_dict(state["queue"])
        start_step = int(state["step"])
        log.info("resumed from step %d in %s", start_step, run_dir)
    logger.log_metrics({"train/peak_lr": peak_lr, "train/world_size": float(env.world_size)}, step=start_step)

    ddp: nn.Module = model
    if env.world_size > 1:
        ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=[torch.cuda.current_device()] if use_cuda else None
        )

    s, t = cfg.swav, cfg.train
    loader = build_train_loader(cfg, env.rank, env.world_size, start_step)
    losses: list[float] = []
    last_path: Path | None = None
    model.train()
    bar = tqdm(total=t.max_steps, initial=start_step, disable=not main_process, desc="train", unit="step")
    tick, views_seen = time.perf_counter(), 0
    step = start_step
    warned_collapse = False
    with GracefulStop() as stop:
        for batch in loader:
            lr = cosine_lr(step, peak_lr, cfg.optim.warmup_steps, t.max_steps, cfg.optim.final_lr_ratio)
            set_lr(optimizer, lr)
            loss, codes, z0 = train_step(
                ddp,
                model,
                optimizer,
                scaler,
                batch,
                queue,
                use_queue=step >= s.queue_start_step,
                freeze_prototypes=step < s.freeze_prototypes_steps,
                amp_dtype=amp_dtype,
                channels_last=channels_last,
                num_views=cfg.views.num_views,
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
                elapsed = time.perf_counter() - tick
                health = {f"train/{k}": float(v) for k, v in representation_health(codes, z0).items()}
                metrics = {
                    "train/loss": losses[-1],
                    "train/loss_ratio": losses[-1] / math.log(s.num_prototypes),
                    "train/lr": lr,
                    "train/views_per_s": views_seen * env.world_size / max(elapsed, 1e-9),
                    "train/regions_per_image": float(batch.num_regions.float().mean()),
                    **health,
                }
                bar.set_postfix_str(health_line(metrics))
                if main_process:
                    bar.write(f"step {step:6d}  loss {losses[-1]:.4f}  {health_line(metrics)}")
                warned_collapse = warn_collapse(metrics, step, warned_collapse)
                logger.log_metrics(metrics, step=step)
                tick, views_seen = time.perf_counter(), 0
            stopping = any_rank(stop.signum is not None, device)  # all ranks stop at the same step
            if main_process and (step % t.checkpoint_every == 0 or step == t.max_steps or stopping):
                check_finite_weights(model, step)
                last_path = save_checkpoint(run_dir, step, _state(step, model, optimizer, scaler, queue, cfg))
            if stopping:
                bar.close()
                log.warning("signal on a rank: checkpointed step %d, handing over", step)
                stop.forward_signal()
            if (
                evaluator is not None
                and main_process
                and t.eval_every
                and step % t.eval_every == 0
                and step < t.max_steps  # the final evaluation is the job's
            ):
                logger.log_metrics(evaluator(model.embedder, step), step=step)
    bar.close()
    return TrainResult(model.embedder, step, losses, run_dir, start_step)


#: Prototype usage below this share of K counts as collapse (warned once per run).
USAGE_COLLAPSE = 0.25


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


def _state(
    step: int,
    model: RegionalSwav,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    queue: RegionQueue | None,
    cfg: Config,
) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "queue": queue.state_dict() if queue is not None else None,
        "config": OmegaConf.to_container(OmegaConf.structured(cfg)),
    }


def main() -> None:
    """Hydra entry point; composes ``sweeps/config.yaml`` onto the schema."""
    from vice.app import run_app

    run_app("train")


if __name__ == "__main__":
    main()
