"""Cluster -> class mappings: Hungarian (one-to-one) and majority (many-to-one).

A mapping is a (C,) int64 tensor: ``mapping[c]`` is the class of cluster c, or -1 when the cluster
maps to no class. Pixels of such clusters still count, as misses (not dropped, as STEGO's evaluation
does for cluster ids >= the number of classes).
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

#: A cluster that maps to no class.
UNMAPPED = -1


def hungarian_mapping(contingency: Tensor) -> Tensor:
    """One-to-one mapping that maximizes the matched pixels (``linear_sum_assignment``, maximize).

    Args:
        contingency: (num_classes, C) counts of class k in cluster c.

    Returns:
        (C,) int64 class per cluster; when C > num_classes, the unmatched clusters get -1.
    """
    counts = contingency.detach().double().cpu().numpy()
    clusters, classes = linear_sum_assignment(counts.T, maximize=True)  # rows of counts.T are clusters
    mapping = torch.full((contingency.shape[1],), UNMAPPED, dtype=torch.int64)
    mapping[torch.from_numpy(clusters).long()] = torch.from_numpy(classes).long()
    return mapping


def majority_mapping(contingency: Tensor) -> Tensor:
    """Many-to-one mapping: every cluster takes the class most of its labelled pixels have.

    Args:
        contingency: (num_classes, C) counts of class k in cluster c.

    Returns:
        (C,) int64 class per cluster; a cluster with no labelled pixel gets -1.
    """
    counts = contingency.detach().cpu()
    mapping = counts.argmax(dim=0)  # (C,)
    return torch.where(counts.sum(dim=0) > 0, mapping, torch.full_like(mapping, UNMAPPED))


def mapped_confusion(contingency: Tensor, mapping: Tensor) -> Tensor:
    """Turn cluster counts into a class confusion matrix under a mapping.

    Args:
        contingency: (num_classes, C) counts of class k in cluster c.
        mapping: (C,) class per cluster, -1 = no class.

    Returns:
        (num_classes, num_classes + 1) counts; the last column holds labelled pixels of unmapped
        clusters (see :func:`vice.evaluate.metrics.segmentation_scores`).
    """
    num_classes = contingency.shape[0]
    columns = torch.where(mapping >= 0, mapping, torch.full_like(mapping, num_classes)).to(contingency.device)
    confusion = torch.zeros(num_classes, num_classes + 1, dtype=contingency.dtype, device=contingency.device)
    return confusion.index_add_(1, columns, contingency)  # (num_classes, num_classes + 1)
