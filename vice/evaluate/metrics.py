"""Confusion matrices and segmentation scores: per-class IoU, mIoU and pixel accuracy.

Scores are computed once, from integer counts summed over the whole split, so they are identical
whatever the batch size. Pixels labelled -1 (ignore) never count; every other pixel does, including
pixels whose prediction maps to no class (they count as misses of their true class).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class SegmentationScores:
    """Scores of one confusion matrix.

    Attributes:
        iou: (num_classes,) float64 per-class IoU = TP / (TP + FP + FN); NaN for a class that is
            neither labelled nor predicted.
        miou: NaN-mean of ``iou``.
        acc: pixel accuracy = sum(TP) / labelled pixels.
    """

    iou: Tensor
    miou: float
    acc: float


def confusion_matrix(target: Tensor, pred: Tensor, num_classes: int, num_pred: int | None = None) -> Tensor:
    """Count (true class, predicted id) pairs over labelled pixels with one ``bincount``.

    Works on any device; sum the results of several batches to get the split's matrix.

    Args:
        target: (...) int64 true classes 0..num_classes-1, -1 = ignore.
        pred: (...) int64 predicted ids 0..num_pred-1, same shape as ``target``.
        num_classes: number of true classes.
        num_pred: number of predicted ids (clusters C, or num_classes for a classifier).

    Returns:
        (num_classes, num_pred) int64: entry [k, c] counts pixels of class k predicted c.
    """
    num_pred = num_classes if num_pred is None else num_pred
    if target.shape != pred.shape:
        raise ValueError(f"target is {tuple(target.shape)} but pred is {tuple(pred.shape)}")
    valid = target >= 0
    target, pred = target[valid], pred[valid]
    if target.numel() and (
        int(target.max()) >= num_classes or int(pred.min()) < 0 or int(pred.max()) >= num_pred
    ):
        raise ValueError(
            f"labels must be in [0, {num_classes}) and predictions in [0, {num_pred}); got labels up to "
            f"{int(target.max())} and predictions in [{int(pred.min())}, {int(pred.max())}]"
        )
    counts = torch.bincount(target * num_pred + pred, minlength=num_classes * num_pred)
    return counts.view(num_classes, num_pred)  # (num_classes, num_pred)


def segmentation_scores(confusion: Tensor) -> SegmentationScores:
    """Per-class IoU, mIoU and pixel accuracy of a confusion matrix.

    Args:
        confusion: (num_classes, P) counts with P >= num_classes. Columns 0..num_classes-1 are
            predictions of those classes; any further columns hold labelled pixels predicted as
            no class (for example clusters that no class was matched to): they are misses.

    Returns:
        The scores; ``acc`` and ``miou`` are NaN when no pixel is labelled.
    """
    num_classes = confusion.shape[0]
    if confusion.shape[1] < num_classes:
        raise ValueError(f"confusion is {tuple(confusion.shape)}: it needs at least as many columns as rows")
    counts = confusion.double().cpu()
    tp = counts.diagonal()  # (num_classes,)
    labelled = counts.sum(dim=1)  # (num_classes,) TP + FN
    predicted = counts[:, :num_classes].sum(dim=0)  # (num_classes,) TP + FP
    union = labelled + predicted - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(union, float("nan")))
    total = labelled.sum()
    acc = float(tp.sum() / total) if total > 0 else float("nan")
    return SegmentationScores(iou=iou, miou=float(iou.nanmean()), acc=acc)
