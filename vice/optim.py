"""SGD + LARS (apex LARC with clip off, as SwAV uses it), the LR schedule and the linear scaling rule."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

#: Added to the LARS denominator ``||g|| + wd * ||w||`` (apex LARC's eps).
LARS_EPS = 1e-8


def cosine_lr(step: int, peak_lr: float, warmup_steps: int, total_steps: int, final_lr_ratio: float) -> float:
    """Learning rate of an optimizer step: linear warmup, then per-step cosine decay.

    Warmup rises as ``peak_lr * (step + 1) / warmup_steps``, so the first step already moves
    (no step at LR 0) and step ``warmup_steps - 1`` reaches ``peak_lr``. The cosine then runs from
    ``peak_lr`` at ``warmup_steps`` to ``peak_lr * final_lr_ratio`` at ``total_steps`` and stays there.

    Args:
        step: 0-based optimizer step.
        peak_lr: LR at the end of warmup (already scaled, see :func:`scaled_lr`).
        warmup_steps: number of warmup steps; 0 starts the cosine at step 0.
        total_steps: step at which the LR reaches its final value.
        final_lr_ratio: final LR / peak LR.

    Returns:
        The learning rate for ``step``.
    """
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    final_lr = peak_lr * final_lr_ratio
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return final_lr + 0.5 * (peak_lr - final_lr) * (1.0 + math.cos(math.pi * progress))


def scaled_lr(base_lr: float, world_size: int, base_lr_world_size: int) -> float:
    """Linear scaling rule: ``base_lr`` is the LR for ``base_lr_world_size`` ranks.

    Args:
        base_lr: reference LR (the paper: 0.04 per 4-GPU node).
        world_size: number of ranks of this job.
        base_lr_world_size: number of ranks ``base_lr`` is meant for.

    Returns:
        ``base_lr * world_size / base_lr_world_size`` (0.32 for 0.04 on 32 of 4).
    """
    if world_size < 1 or base_lr_world_size < 1:
        raise ValueError(f"world_size={world_size} and base_lr_world_size={base_lr_world_size} must be >= 1")
    return base_lr * world_size / base_lr_world_size


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split trainable parameters into a decayed group and a group without weight decay.

    Biases and normalization parameters (every parameter with ``ndim <= 1``) get no weight decay
    but keep the LARS adaptation, as apex's LARC applies it to every parameter in SwAV. Exempting
    them from LARS would hand them the raw LR, which with LARS-sized LRs (trust 1e-3 x lr ~ 1e-3
    relative steps need lr ~ 1) throws the BatchNorm affine parameters around and collapses training.

    Args:
        model: every module whose parameters are optimized (wrap several in an ``nn.ModuleList``).
        weight_decay: weight decay of the adapted group.

    Returns:
        Non-empty param groups for :class:`LARS`, decayed group first.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


class LARS(torch.optim.Optimizer):
    """SGD with momentum and weight decay, each parameter's step scaled by a LARS trust ratio.

    This is apex's ``LARC(SGD, clip=False)`` as SwAV trains with it. For a parameter ``w`` with
    gradient ``g``, when ``||w|| > 0`` and ``||g|| > 0``::

        ratio = trust_coefficient * ||w|| / (||g|| + weight_decay * ||w|| + eps)
        d = ratio * (g + weight_decay * w)

    otherwise ``d = g`` (no decay, no scaling, as apex). Then SGD momentum without dampening:
    ``buf = momentum * buf + d`` (``buf = d`` on the first step) and ``w -= lr * buf``.
    A group with ``trust_coefficient == 0`` is plain ``torch.optim.SGD`` (with its weight decay).
    Gradients are never modified in place.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = LARS_EPS,
    ) -> None:
        """Set the defaults every group without its own value uses.

        Args:
            params: tensors or param groups (see :func:`param_groups`).
            lr: learning rate (the schedule overwrites it each step, see :func:`set_lr`).
            momentum: SGD momentum in [0, 1).
            weight_decay: L2 weight decay >= 0.
            trust_coefficient: LARS trust coefficient >= 0; 0 disables the adaptation.
            eps: added to the trust-ratio denominator.
        """
        if lr < 0 or not 0 <= momentum < 1 or weight_decay < 0 or trust_coefficient < 0 or eps < 0:
            raise ValueError(
                "LARS needs lr >= 0, momentum in [0, 1), weight_decay >= 0, trust_coefficient >= 0 and "
                f"eps >= 0; got lr={lr}, momentum={momentum}, weight_decay={weight_decay}, "
                f"trust_coefficient={trust_coefficient}, eps={eps}"
            )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "trust_coefficient": trust_coefficient,
            "eps": eps,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Update every parameter that has a gradient.

        Args:
            closure: re-evaluates the model and returns the loss (optional).

        Returns:
            The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            for p in group["params"]:
                if p.grad is not None:
                    params.append(p)
                    grads.append(p.grad)
            if params:
                self._update_group(params, grads, group)
        return loss

    def _update_group(self, params: list[Tensor], grads: list[Tensor], group: dict[str, Any]) -> None:
        """Apply one LARS-SGD update to ``params`` (those of ``group`` that have ``grads``)."""
        if any(g.is_sparse for g in grads):
            raise RuntimeError("LARS does not support sparse gradients: use dense embeddings")
        lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
        trust, eps = group["trust_coefficient"], group["eps"]
        if trust > 0:
            param_norms = torch.stack(torch._foreach_norm(params))
            grad_norms = torch.stack(torch._foreach_norm(grads))
            adapt = (param_norms > 0) & (grad_norms > 0)
            ratios = torch.where(
                adapt, trust * param_norms / (grad_norms + weight_decay * param_norms + eps), 1.0
            )
            decays = torch.where(adapt, weight_decay, 0.0)
            steps = list(torch._foreach_mul(params, list(decays.unbind())))
            torch._foreach_add_(steps, grads)
            torch._foreach_mul_(steps, list(ratios.unbind()))
        elif weight_decay != 0:
            steps = list(torch._foreach_add(grads, params, alpha=weight_decay))
        else:
            steps = grads
        if momentum != 0:
            steps = self._momentum(params, steps, momentum)
        torch._foreach_add_(params, steps, alpha=-lr)

    def _momentum(self, params: list[Tensor], steps: list[Tensor], momentum: float) -> list[Tensor]:
        """Fold ``steps`` into the momentum buffers (created as copies on the first step); return them."""
        states = [self.state[p] for p in params]
        warm = [i for i, state in enumerate(states) if "momentum_buffer" in state]
        if warm:
            bufs = [states[i]["momentum_buffer"] for i in warm]
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, [steps[i] for i in warm])
        for state, step in zip(states, steps, strict=True):
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = step.clone().detach()
        return [state["momentum_buffer"] for state in states]


def build_optimizer(
    params: Iterable[Tensor] | Iterable[dict[str, Any]],
    lr: float,
    momentum: float,
    weight_decay: float,
    lars_trust: float,
) -> LARS:
    """Build SGD + LARS from the ``optim`` scalars.

    Args:
        params: tensors or param groups, usually ``param_groups(model, weight_decay)``; a group's own
            ``weight_decay``/``trust_coefficient`` override the arguments.
        lr: initial learning rate (the peak LR; the schedule sets it each step).
        momentum: ``optim.momentum``.
        weight_decay: ``optim.weight_decay``.
        lars_trust: ``optim.lars_trust``; 0 gives plain SGD.

    Returns:
        The optimizer.
    """
    return LARS(params, lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=lars_trust)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every param group (call before each step with :func:`cosine_lr`)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
