"""From a labelled image to per-pixel features: evaluation protocols, reflect padding, superpixel pooling.

Protocols (record which one produced every number; they are not comparable):

- ``picie`` (PiCIE, STEGO): resize the short side to ``short_side``, centre-crop a square of that side;
  the image and its label are both scored at the crop.
- ``full`` (ViCE): the whole image with its short side at ``short_side``; predictions are resized
  back to the label's size (nearest) and scored there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from vice.config import PROTOCOLS
from vice.data.labelled import CorruptImageError, LabelledDataset
from vice.data.photometric import IMAGENET_MEAN, IMAGENET_STD

#: Padded inputs are rounded up to a multiple of this (the backbone's largest stride).
PAD_MULTIPLE = 32
#: Upper bound for a sampling key (keys are int64 drawn uniformly below it; ties are negligible).
KEY_RANGE = 2**62

#: Maps uint8 images (B, 3, h, w) on the model's device to float32 features (B, D, h, w).
Embedder = Callable[[Tensor], Tensor]
#: Maps an RGB uint8 image (h, w, 3) to region ids (h, w), 0..R-1.
Decomposer = Callable[[np.ndarray], np.ndarray]


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """The (h, w) of an image whose short side is scaled to ``short_side`` (aspect kept, rounded)."""
    scale = short_side / min(height, width)
    return max(short_side, round(height * scale)), max(short_side, round(width * scale))


def _resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (H, W, 3) uint8 to ``size`` = (h, w): area averaging when shrinking, bilinear when growing."""
    if image.shape[:2] == size:
        return image
    shrink = size[0] * size[1] < image.shape[0] * image.shape[1]
    return cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W) int64 label map to ``size`` = (h, w) by nearest neighbour (pixel centres)."""
    if label.shape == size:
        return label
    small = cv2.resize(label.astype(np.int32), size[::-1], interpolation=cv2.INTER_NEAREST_EXACT)
    return small.astype(np.int64)


def apply_protocol(
    image: np.ndarray, label: np.ndarray, protocol: str, short_side: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prepare one labelled image for a protocol.

    Args:
        image: (H, W, 3) uint8 RGB.
        label: (H, W) int64, -1 = ignore.
        protocol: ``picie`` or ``full``.
        short_side: the short side the image is embedded at.

    Returns:
        ``(image (h, w, 3), label (h, w), label_score (Hs, Ws))``: the image that is embedded, its
        label at the embedding's resolution (for fitting), and the label that is scored (picie: the
        crop, so Hs, Ws = h, w; full: the original label).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r} is invalid: one of {PROTOCOLS}")
    size = resized_shape(image.shape[0], image.shape[1], short_side)
    image = _resize_image(image, size)
    small_label = _resize_label(label, size)
    if protocol == "full":
        return image, small_label, label
    top, left = (size[0] - short_side) // 2, (size[1] - short_side) // 2
    crop = (slice(top, top + short_side), slice(left, left + short_side))
    cropped = small_label[crop]
    return np.ascontiguousarray(image[crop]), cropped, cropped


def pixel_keys(index: int, size: tuple[int, int], seed: int) -> np.ndarray:
    """Random sampling keys of one image's pixels, a function of (seed, image index) only.

    Keeping the pixels with the smallest keys over a whole split is a uniform sample without
    replacement that does not depend on batch size, worker count or order.

    Returns:
        (h, w) int64 in [0, KEY_RANGE).
    """
    return np.random.default_rng((seed, index)).integers(0, KEY_RANGE, size=size, dtype=np.int64)


class ProtocolDataset(Dataset[dict[str, Any]]):
    """A labelled dataset seen through an evaluation protocol; items are dicts of numpy arrays.

    Item keys: ``index``; ``image`` (h, w, 3) uint8; ``label`` (h, w) int64; ``label_score``
    (Hs, Ws) int64; with ``seed`` set, ``keys`` (h, w) int64 (see :func:`pixel_keys`); with
    ``decompose`` set, ``regions`` (h, w) int64 superpixel ids. With ``skip_corrupt``, an image that
    does not decode gives ``{"index": i, "corrupt": message}`` instead of raising.
    """

    def __init__(
        self,
        dataset: LabelledDataset,
        protocol: str,
        short_side: int,
        num_items: int,
        seed: int | None = None,
        decompose: Decomposer | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        """Wrap ``dataset``; only its first ``num_items`` items are used."""
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol={protocol!r} is invalid: one of {PROTOCOLS}")
        self.dataset = dataset
        self.protocol = protocol
        self.short_side = short_side
        self.num_items = min(num_items, len(dataset))
        self.seed = seed
        self.decompose = decompose
        self.skip_corrupt = skip_corrupt

    def __len__(self) -> int:
        return self.num_items

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            image, label = self.dataset[index]
        except CorruptImageError as err:
            if not self.skip_corrupt:
                raise
            return {"index": index, "corrupt": str(err)}
        image, small_label, label_score = apply_protocol(image, label, self.protocol, self.short_side)
        item: dict[str, Any] = {
            "index": index,
            "image": image,
            "label": small_label,
            "label_score": label_score,
        }
        if self.seed is not None:
            item["keys"] = pixel_keys(index, small_label.shape, self.seed)
        if self.decompose is not None:
            item["regions"] = np.asarray(self.decompose(image), dtype=np.int64)
        return item


def padding_for(height: int, width: int, pad: int, multiple: int = PAD_MULTIPLE) -> tuple[int, int, int, int]:
    """Reflect padding ``(left, right, top, bottom)`` around an h x w image.

    At least ``pad`` pixels on every side; the right and bottom get more so that the padded size is
    a multiple of ``multiple``. The result depends on the image size only, never on the batch.
    """
    padded_h = -(-(height + 2 * pad) // multiple) * multiple
    padded_w = -(-(width + 2 * pad) // multiple) * multiple
    return pad, padded_w - width - pad, pad, padded_h - height - pad


def reflect_pad(x: Tensor, padding: tuple[int, int, int, int]) -> Tensor:
    """Reflect-pad (B, C, h, w) by ``(left, right, top, bottom)``, also past the image's own size.

    ``F.pad`` reflects at most ``size - 1`` pixels at a time, so larger pads repeat the reflection.
    """
    if min(x.shape[-2:]) < 2:
        raise ValueError(f"cannot reflect-pad a {tuple(x.shape[-2:])} image: it needs at least 2x2 pixels")
    remaining: tuple[int, ...] = padding
    while any(remaining):
        h, w = x.shape[-2:]
        step: tuple[int, ...] = tuple(
            min(p, limit - 1) for p, limit in zip(remaining, (w, w, h, h), strict=True)
        )
        x = F.pad(x, step, mode="reflect")
        remaining = tuple(p - s for p, s in zip(remaining, step, strict=True))
    return x


def normalize_images(images: Tensor) -> Tensor:
    """ImageNet-normalize uint8 images (B, 3, h, w) to float32."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)  # (1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)  # (1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def network_embedder(model: nn.Module, pad: int, amp: str = "none") -> Embedder:
    """Embed with a frozen network: normalize, reflect-pad, forward, crop the padding away.

    Reflect padding keeps the network's zero-padded borders out of the image: without it, a border
    artefact forms a cluster of its own.

    Args:
        model: maps normalized (B, 3, H, W) to (B, D, H, W); put in eval mode by the caller.
        pad: reflect padding on every side, in pixels.
        amp: ``bf16``, ``fp16`` or ``none``; autocast for the forward on CUDA only.
    """
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}

    @torch.no_grad()
    def embed(images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        left, right, top, bottom = padding_for(height, width, pad)
        x = reflect_pad(normalize_images(images), (left, right, top, bottom))
        use_amp = images.is_cuda and amp in dtypes
        with torch.autocast("cuda", dtype=dtypes.get(amp, torch.bfloat16), enabled=use_amp):
            features = model(x)
        if features.shape[-2:] != x.shape[-2:]:
            raise ValueError(
                f"the model returned {tuple(features.shape)} for input {tuple(x.shape)}: the evaluation "
                "needs per-pixel embeddings (B, D, H, W) at the input resolution"
            )
        return features[:, :, top : top + height, left : left + width].float()

    return embed


def rgb_embedder(images: Tensor) -> Tensor:
    """The raw-colour baseline's features: RGB in [0, 1], (B, 3, h, w) uint8 -> (B, 3, h, w) float32."""
    return images.float() / 255.0


def pool_superpixels(features: Tensor, regions: Tensor) -> Tensor:
    """Replace every pixel's features by the mean over its superpixel (one scatter, no loops).

    Args:
        features: (B, D, h, w).
        regions: (B, h, w) int64 ids 0..R_b-1 per image.

    Returns:
        (B, D, h, w) per-superpixel means (not renormalized).
    """
    batch, dim = features.shape[:2]
    per_image = regions.flatten(1).max(dim=1).values + 1  # (B,)
    offsets = torch.cumsum(per_image, 0) - per_image  # (B,)
    ids = (regions + offsets.view(batch, 1, 1)).flatten()  # (B*h*w,)
    flat = features.permute(0, 2, 3, 1).reshape(-1, dim)  # (B*h*w, D)
    total = int(per_image.sum())
    sums = torch.zeros(total, dim, device=features.device, dtype=flat.dtype).index_add_(
        0, ids, flat
    )  # (R, D)
    counts = torch.bincount(ids, minlength=total).clamp_min(1).to(flat.dtype)  # (R,)
    means = sums / counts.unsqueeze(1)  # (R, D)
    return means[ids].view(batch, *regions.shape[1:], dim).permute(0, 3, 1, 2)  # (B, D, h, w)


def resize_nearest(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize integer maps (P, h, w) to (P, *size) by nearest neighbour (pixel centres)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    resized = F.interpolate(maps.unsqueeze(0).float(), size=size, mode="nearest-exact")  # (1, P, Hs, Ws)
    return resized.squeeze(0).to(maps.dtype)
