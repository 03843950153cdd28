"""Pictures beside the metrics: PCA of the embedding map (paper Fig. 4) and segmentation panels (Fig. 3)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

#: Pixels used to fit the PCA of one embedding map.
PCA_FIT_PIXELS = 20_000
#: Share of extreme projections clipped on each side before scaling a PCA channel to 0..255.
PCA_CLIP = 0.01
IGNORE_COLOUR = (0, 0, 0)


def pca_rgb(features: Tensor) -> np.ndarray:
    """Project an embedding map on its 3 principal components, scaled to RGB.

    Each component's sign is fixed so that its largest loading is positive, and each channel is
    stretched between its 1st and 99th percentiles.

    Args:
        features: (D, h, w) with D >= 3.

    Returns:
        (h, w, 3) uint8.
    """
    dim, height, width = features.shape
    flat = features.detach().float().reshape(dim, -1).T  # (h*w, D)
    step = max(1, flat.shape[0] // PCA_FIT_PIXELS)
    fit = flat[::step]
    mean = fit.mean(dim=0)
    centred = fit - mean
    _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    top = vectors[:, -3:].flip(1)  # (D, 3)
    signs = torch.sign(top.gather(0, top.abs().argmax(dim=0, keepdim=True)))  # (1, 3)
    projected = (flat - mean) @ (top * signs)  # (h*w, 3)
    low = torch.quantile(projected[::step], PCA_CLIP, dim=0)
    high = torch.quantile(projected[::step], 1 - PCA_CLIP, dim=0)
    scaled = ((projected - low) / (high - low).clamp_min(torch.finfo(projected.dtype).eps)).clamp(0, 1)
    return (scaled * 255).round().to(torch.uint8).reshape(height, width, 3).cpu().numpy()  # (h, w, 3)


def colourize(classes: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Paint a class map (h, w) int (-1 = ignore or no class) with ``palette`` (K, 3) -> (h, w, 3) uint8."""
    table = np.concatenate([np.asarray(palette, dtype=np.uint8), np.array([IGNORE_COLOUR], dtype=np.uint8)])
    return table[np.where(classes >= 0, classes, len(palette))]


def save_panels(path: Path, panels: Sequence[tuple[str, np.ndarray]], panel_inches: float = 3.0) -> Path:
    """Write titled RGB panels side by side as one PNG.

    Args:
        path: output PNG; its folder is created.
        panels: ``(title, (h, w, 3) uint8)`` pairs.
        panel_inches: width of one panel.

    Returns:
        ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = panels[0][1].shape[:2]
    figure, axes = plt.subplots(
        1,
        len(panels),
        figsize=(panel_inches * len(panels), panel_inches * height / width + 0.4),
        squeeze=False,
    )
    for axis, (title, picture) in zip(axes[0], panels, strict=True):
        axis.imshow(picture, interpolation="nearest")
        axis.set_title(title, fontsize=9)
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
