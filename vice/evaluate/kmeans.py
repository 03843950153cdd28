"""Pixel sampling, k-means with FAISS, and nearest-centroid assignment as one matmul + argmax.

The fit sees a bounded, uniform sample of the train split's pixels (:class:`PixelReservoir`), so a
whole split of embeddings is never held in memory. Assignment runs on the features' device.
"""

from __future__ import annotations

import math

import faiss
import numpy as np
import torch
from torch import Tensor

#: Centroid initialization: AFK-MC2, a cheap approximation of k-means++ seeding. FAISS's default
#: (uniformly random points) often puts two centroids in one well-separated group and never recovers.
INIT_METHOD = faiss.ClusteringInitMethod_AFK_MC2
#: Largest (pixels x clusters) score block materialized at once by :func:`assign_clusters`.
ASSIGN_BLOCK = 2**24


class PixelReservoir:
    """Keep the ``capacity`` pixels with the smallest sampling keys seen so far.

    With keys drawn uniformly per pixel (:func:`vice.evaluate.embed.pixel_keys`), the kept pixels
    are a uniform sample without replacement of every pixel added, independent of the order and
    batching of the additions. Memory stays below about twice the capacity.

    Attributes:
        capacity: the sample size asked for.
        num_seen: pixels offered so far.
    """

    def __init__(self, capacity: int) -> None:
        """Start empty."""
        if capacity < 1:
            raise ValueError(f"reservoir capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.num_seen = 0
        self._threshold: int | None = None  # keys >= threshold can never enter the sample
        self._parts: list[tuple[Tensor, Tensor, Tensor]] = []
        self._pending = 0

    def add(self, features: Tensor, labels: Tensor, keys: Tensor) -> None:
        """Offer pixels.

        Args:
            features: (N, D) float.
            labels: (N,) int64, -1 = ignore.
            keys: (N,) int64 sampling keys.
        """
        self.num_seen += keys.numel()
        if self._threshold is not None:
            keep = keys < self._threshold
            features, labels, keys = features[keep], labels[keep], keys[keep]
        self._parts.append((features, labels, keys))
        self._pending += keys.numel()
        if self._pending >= 2 * self.capacity:
            self._compact()

    def _compact(self) -> None:
        features, labels, keys = (torch.cat(parts) for parts in zip(*self._parts, strict=True))
        if keys.numel() > self.capacity:
            keys, order = torch.topk(keys, self.capacity, largest=False, sorted=False)
            features, labels = features[order], labels[order]
            self._threshold = int(keys.max())
        self._parts = [(features, labels, keys)]
        self._pending = keys.numel()

    def sample(self) -> tuple[Tensor, Tensor]:
        """The sample, ordered by key so that it is identical however the pixels were batched.

        Returns:
            ``(features (N, D), labels (N,))`` with N = min(capacity, num_seen).
        """
        if not self._parts:
            raise ValueError("the reservoir is empty: no pixel was added")
        self._compact()
        features, labels, keys = self._parts[0]
        order = torch.argsort(keys)
        return features[order], labels[order]


def fit_kmeans(features: Tensor, num_clusters: int, iterations: int, seed: int, spherical: bool) -> Tensor:
    """Fit k-means with FAISS on all of ``features`` (no further FAISS sub-sampling), AFK-MC2 seeding.

    Args:
        features: (N, D) float; L2-normalized rows when ``spherical``.
        num_clusters: C.
        iterations: Lloyd iterations.
        seed: FAISS's seed (initial centroids).
        spherical: cosine k-means: centroids are renormalized and points assigned by inner product.

    Returns:
        (C, D) float32 centroids on the device of ``features``.
    """
    num_points, dim = features.shape
    if num_points < num_clusters:
        raise ValueError(
            f"k-means with {num_clusters} clusters needs at least {num_clusters} sample pixels, got "
            f"{num_points}: raise eval.kmeans_sample or evaluate on more images"
        )
    data = np.ascontiguousarray(features.detach().float().cpu().numpy())
    kmeans = faiss.Kmeans(
        dim,
        num_clusters,
        niter=iterations,
        seed=seed,
        spherical=spherical,
        max_points_per_centroid=math.ceil(num_points / num_clusters) + 1,
        min_points_per_centroid=1,
        init_method=INIT_METHOD,
        verbose=False,
        gpu=features.is_cuda and faiss.get_num_gpus() > 0,
    )
    kmeans.train(data)
    return torch.from_numpy(kmeans.centroids).to(features.device)


def assign_clusters(features: Tensor, centroids: Tensor, spherical: bool) -> Tensor:
    """Nearest centroid of every row, as matmul + argmax in blocks of bounded size.

    Spherical: the largest inner product. Otherwise the smallest L2 distance, i.e. the largest
    ``x . c - |c|^2 / 2``.

    Args:
        features: (N, D).
        centroids: (C, D) on the same device.
        spherical: see above.

    Returns:
        (N,) int64 cluster ids.
    """
    centroids = centroids.to(features.dtype)
    bias = (
        torch.zeros_like(centroids[:, 0]) if spherical else -0.5 * (centroids * centroids).sum(dim=1)
    )  # (C,)
    block = max(1, ASSIGN_BLOCK // centroids.shape[0])
    parts = [
        torch.addmm(bias, features[start : start + block], centroids.T).argmax(dim=1)
        for start in range(0, features.shape[0], block)
    ]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64, device=features.device)


def assign_map(features: Tensor, centroids: Tensor, spherical: bool) -> Tensor:
    """Nearest centroid of every pixel of feature maps.

    Args:
        features: (B, D, h, w).
        centroids: (C, D).
        spherical: see :func:`assign_clusters`.

    Returns:
        (B, h, w) int64 cluster ids.
    """
    batch, dim, height, width = features.shape
    flat = features.permute(0, 2, 3, 1).reshape(-1, dim)  # (B*h*w, D)
    return assign_clusters(flat, centroids, spherical).view(batch, height, width)  # (B, h, w)
