"""Photometric augmentation of views (SimCLR colour distortion, blur) and ImageNet's normalization.

Every op works on a batch of views with one parameter per view, vectorized over the views.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

#: ImageNet's channel statistics, the normalization of every network input (views and evaluation).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: SimCLR colour distortion at strength s: jitter (0.8s, 0.8s, 0.8s, 0.2s) applied with p = 0.8.
JITTER_PROB = 0.8
JITTER_SCALE = 0.8
HUE_SCALE = 0.2
BLUR_SIGMA_RANGE = (0.1, 2.0)
#: Kernel covering +-3 sigma of the widest blur.
BLUR_KERNEL_SIZE = 2 * math.ceil(3 * BLUR_SIGMA_RANGE[1]) + 1


def _blend(image: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """``ratio * image + (1 - ratio) * other`` clamped to [0, 1] (torchvision's blend, per view)."""
    return (ratio * image + (1 - ratio) * other).clamp_(0, 1)


def adjust_brightness(image: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Per-view brightness: image (n, 3, S, S) in [0, 1], factor (n,)."""
    return (image * factor.view(-1, 1, 1, 1)).clamp_(0, 1)


def adjust_contrast(image: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Per-view contrast: blend with the mean grey level. image (n, 3, S, S), factor (n,)."""
    mean = TF.rgb_to_grayscale(image).mean(dim=(-3, -2, -1), keepdim=True)  # (n, 1, 1, 1)
    return _blend(image, mean, factor.view(-1, 1, 1, 1))


def adjust_saturation(image: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Per-view saturation: blend with the grey image. image (n, 3, S, S), factor (n,)."""
    return _blend(image, TF.rgb_to_grayscale(image), factor.view(-1, 1, 1, 1))


#: HSV -> RGB: channel c is ``v - v s clamp(min(k, 4 - k), 0, 1)`` with ``k = (n_c + 6 h) mod 6``.
_HSV_CHANNEL_OFFSETS = (5.0, 3.0, 1.0)


def adjust_hue(image: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Per-view hue rotation in HSV space. image (n, 3, S, S) in [0, 1], shift (n,) in [-0.5, 0.5]."""
    value, argmax = image.max(dim=1)  # (n, S, S)
    delta = value - image.min(dim=1).values  # (n, S, S)
    safe_delta = torch.where(delta > 0, delta, torch.ones_like(delta))
    red, green, blue = image.unbind(dim=1)
    hue = torch.where(
        argmax == 0,
        (green - blue) / safe_delta,
        torch.where(argmax == 1, (blue - red) / safe_delta + 2, (red - green) / safe_delta + 4),
    )
    hue = torch.remainder(hue / 6 + shift.view(-1, 1, 1), 1.0)  # (n, S, S)
    chroma = delta  # = v * s
    offsets = torch.tensor(_HSV_CHANNEL_OFFSETS, dtype=image.dtype).view(1, 3, 1, 1)
    k = torch.remainder(offsets + 6 * hue[:, None], 6.0)  # (n, 3, S, S)
    return value[:, None] - chroma[:, None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def gaussian_blur(image: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-view separable Gaussian blur with reflect padding (kernel ``BLUR_KERNEL_SIZE``).

    Args:
        image: (n, 3, S, S).
        sigma: (n,) standard deviations in pixels.

    Returns:
        (n, 3, S, S).
    """
    num, channels, height, width = image.shape
    half = BLUR_KERNEL_SIZE // 2
    taps = torch.arange(-half, half + 1, dtype=image.dtype)  # (k,)
    kernel = torch.softmax(-0.5 * (taps[None, :] / sigma[:, None]) ** 2, dim=1)  # (n, k)
    kernel = kernel.repeat_interleave(channels, dim=0)  # (n*3, k)
    flat = image.reshape(1, num * channels, height, width)  # (1, n*3, S, S)
    flat = F.pad(flat, (half, half, half, half), mode="reflect")
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=num * channels)  # vertical
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=num * channels)  # horizontal
    return flat.reshape(num, channels, height, width)  # (n, 3, S, S)


_JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def photometric(
    pixels: torch.Tensor,
    color_strength: float,
    grayscale_prob: float,
    blur_prob: float,
    rng: np.random.Generator,
) -> torch.Tensor:
    """SimCLR colour distortion and Gaussian blur, with independent parameters per view.

    Colour jitter (p = 0.8) applies brightness, contrast, saturation (factors U(1 - 0.8s, 1 + 0.8s))
    and hue (shift U(-0.2s, 0.2s)) in a random order per view; then grayscale (p = grayscale_prob),
    then blur (p = blur_prob, sigma U(0.1, 2)). Every parameter is drawn every call, so the
    generator advances by the same amount whatever is applied.

    Args:
        pixels: (M, 3, S, S) in [0, 1].
        color_strength: s.
        grayscale_prob: probability of converting a view to grey.
        blur_prob: probability of blurring a view.
        rng: the generator.

    Returns:
        (M, 3, S, S) in [0, 1].
    """
    num_views = pixels.shape[0]
    spread = JITTER_SCALE * color_strength
    jitter = rng.random(num_views) < JITTER_PROB
    factors = np.stack(
        [
            rng.uniform(max(0.0, 1 - spread), 1 + spread, size=num_views),
            rng.uniform(max(0.0, 1 - spread), 1 + spread, size=num_views),
            rng.uniform(max(0.0, 1 - spread), 1 + spread, size=num_views),
            rng.uniform(-HUE_SCALE * color_strength, HUE_SCALE * color_strength, size=num_views),
        ]
    )  # (4, M)
    order = np.argsort(rng.random((num_views, 4)), axis=1)  # (M, 4) a permutation per view
    grey = rng.random(num_views) < grayscale_prob
    blur = rng.random(num_views) < blur_prob
    sigma = rng.uniform(*BLUR_SIGMA_RANGE, size=num_views)

    out = pixels.clone()
    for position in range(4):
        for op_index, op in enumerate(_JITTER_OPS):
            chosen = torch.from_numpy(jitter & (order[:, position] == op_index))
            if chosen.any():
                out[chosen] = op(out[chosen], torch.from_numpy(factors[op_index]).float()[chosen])
    chosen = torch.from_numpy(grey)
    if chosen.any():
        out[chosen] = TF.rgb_to_grayscale(out[chosen], num_output_channels=3)
    chosen = torch.from_numpy(blur)
    if chosen.any():
        out[chosen] = gaussian_blur(out[chosen], torch.from_numpy(sigma).float()[chosen])
    return out
