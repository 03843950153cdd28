"""The authors' region pooling, transcribed as the baseline: a Python loop with a full-map mask per region.

This is deliberately slow and lives here only, never in ``vice/``: it is what ``vice.pooling.region_means``
is measured against (and checked against in tests/test_benchmarks.py).
"""

from __future__ import annotations

import torch


def loop_region_means(
    embeddings: torch.Tensor,
    regions: torch.Tensor,
    num_regions: torch.Tensor,
    num_views: int,
    max_views: int | None = None,
    max_images: int | None = None,
    max_regions: int | None = None,
) -> torch.Tensor:
    """Mean embedding per (view, image, region): a boolean mask over the map and a mean, one region at a time.

    With ``max_views`` / ``max_images`` / ``max_regions`` the loop visits only the first views, the
    first images of each view and the first regions of each image, so its cost can be measured on a
    subset and extrapolated (a region costs the same whichever it is: every mask covers the whole map).

    Args:
        embeddings: (B*M, D, h, w) embedding maps, flat index b*M + m.
        regions: (B*M, h, w) int64 mutual region ids 0..R_b-1, -1 = ignore.
        num_regions: (B,) int64 mutual regions per image R_b.
        num_views: M.
        max_views: visit only views 0..max_views-1 (None: all M).
        max_images: visit only images 0..max_images-1 (None: all B).
        max_regions: visit only regions 0..max_regions-1 of each image (None: all R_b).

    Returns:
        (M', N', D) means, M' = min(M, max_views), N' = sum over the visited images of
        min(R_b, max_regions); without limits (M, N, D), equal to ``region_means``.
    """
    counts = num_regions.tolist()[:max_images]
    rows = []
    for m in range(num_views if max_views is None else min(num_views, max_views)):
        view_rows = []
        for b, r_b in enumerate(counts):
            embedding_map = embeddings[b * num_views + m]  # (D, h, w)
            region_map = regions[b * num_views + m]  # (h, w)
            for r in range(r_b if max_regions is None else min(r_b, max_regions)):
                mask = region_map == r  # (h, w)
                view_rows.append(embedding_map[:, mask].mean(dim=1))  # (D,)
        rows.append(torch.stack(view_rows))  # (N', D)
    return torch.stack(rows)  # (M', N', D)
