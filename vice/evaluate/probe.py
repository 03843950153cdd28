"""Linear probe: a 1x1 convolution (no nonlinearity) trained on frozen embeddings.

Cross-entropy with ignore, SGD with momentum and weight decay, poly learning-rate decay. A 1x1 conv
applied to a map is the same linear map applied to every pixel, so the probe trains on mini-batches
of pixels drawn from the train split's pixel sample, and predicts on whole maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from vice.data.labelled import IGNORE

#: Exponent of the poly learning-rate decay, lr_t = lr * (1 - t / steps) ** POLY_POWER.
POLY_POWER = 0.9


def poly_lr(lr: float, step: int, steps: int, power: float = POLY_POWER) -> float:
    """The poly-decayed learning rate at ``step`` of ``steps``: ``lr * (1 - step / steps) ** power``."""
    return lr * (1.0 - step / steps) ** power


def fit_probe(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    steps: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    batch_pixels: int,
    seed: int,
) -> nn.Conv2d:
    """Train a 1x1 conv on labelled pixels.

    Args:
        features: (N, D) frozen pixel embeddings.
        labels: (N,) int64 classes, -1 = ignore (ignored pixels are dropped up front).
        num_classes: output channels.
        steps: SGD iterations.
        lr: peak learning rate (poly decay to 0).
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        batch_pixels: pixels per iteration, drawn uniformly with replacement (at most the number
            of labelled pixels).
        seed: seed of the pixel draws.

    Returns:
        The trained ``Conv2d(D, num_classes, 1)``, on the device of ``features``, in eval mode.
    """
    labelled = labels >= 0
    x, y = features[labelled], labels[labelled]
    if y.numel() == 0:
        raise ValueError("the linear probe needs labelled train pixels, but every sampled pixel is ignored")
    probe = nn.Conv2d(features.shape[1], num_classes, kernel_size=1).to(features.device)
    for parameter in probe.parameters():
        nn.init.zeros_(parameter)
    optimizer = torch.optim.SGD(probe.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    generator = torch.Generator(device=features.device).manual_seed(seed)
    batch_pixels = min(batch_pixels, y.numel())
    for step in tqdm(range(steps), desc="linear probe", leave=False, disable=None):
        for group in optimizer.param_groups:
            group["lr"] = poly_lr(lr, step, steps)
        batch = torch.randint(y.numel(), (batch_pixels,), generator=generator, device=features.device)
        weight = probe.weight.flatten(1)  # (num_classes, D)
        loss = F.cross_entropy(F.linear(x[batch], weight, probe.bias), y[batch], ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return probe.eval()


@torch.no_grad()
def probe_predict(probe: nn.Conv2d, features: Tensor) -> Tensor:
    """Class of every pixel of feature maps (B, D, h, w) -> (B, h, w) int64."""
    return probe(features).argmax(dim=1)
