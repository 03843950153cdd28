import math

import numpy as np
import pytest
import torch

from vice.evaluate.metrics import confusion_matrix, segmentation_scores


def numpy_confusion(target: np.ndarray, pred: np.ndarray, num_classes: int, num_pred: int) -> np.ndarray:
    counts = np.zeros((num_classes, num_pred), dtype=np.int64)
    for k in range(num_classes):
        for c in range(num_pred):
            counts[k, c] = np.sum((target == k) & (pred == c))
    return counts


def test_confusion_matrix_equals_numpy_double_loop():
    rng = np.random.default_rng(0)
    target = rng.integers(-1, 5, size=(3, 17, 11))
    pred = rng.integers(0, 9, size=(3, 17, 11))
    found = confusion_matrix(torch.from_numpy(target), torch.from_numpy(pred), 5, 9)
    np.testing.assert_array_equal(found.numpy(), numpy_confusion(target, pred, 5, 9))


def test_ignore_pixels_never_count():
    target = torch.tensor([[0, 1], [-1, -1]])
    pred = torch.tensor([[0, 1], [1, 0]])
    conf = confusion_matrix(target, pred, 2)
    assert conf.tolist() == [[1, 0], [0, 1]]
    scores = segmentation_scores(conf)
    assert scores.miou == 1.0 and scores.acc == 1.0
    # changing the predictions of ignored pixels changes nothing
    assert confusion_matrix(target, torch.tensor([[0, 1], [0, 0]]), 2).tolist() == conf.tolist()


def test_scores_hand_computed():
    # rows: true class, cols: predicted class
    conf = torch.tensor([[3, 1, 0], [2, 4, 0], [0, 0, 0]])
    scores = segmentation_scores(conf)
    # class 0: TP 3, FN 1, FP 2 -> 3/6; class 1: TP 4, FN 2, FP 1 -> 4/7; class 2: absent -> NaN
    assert scores.iou[0].item() == pytest.approx(3 / 6)
    assert scores.iou[1].item() == pytest.approx(4 / 7)
    assert math.isnan(scores.iou[2].item())
    assert scores.miou == pytest.approx((3 / 6 + 4 / 7) / 2)
    assert scores.acc == pytest.approx(7 / 10)


def test_predicted_but_absent_class_scores_zero():
    conf = torch.tensor([[2, 1], [0, 0]])  # class 1 never labelled but predicted once
    scores = segmentation_scores(conf)
    assert scores.iou.tolist() == pytest.approx([2 / 3, 0.0])


def test_no_class_column_counts_as_miss():
    # last column: labelled pixels whose cluster maps to no class
    conf = torch.tensor([[2, 0, 2], [0, 4, 0]])
    scores = segmentation_scores(conf)
    assert scores.iou.tolist() == pytest.approx([2 / 4, 1.0])
    assert scores.acc == pytest.approx(6 / 8)


def test_summed_batches_equal_whole():
    rng = np.random.default_rng(1)
    target = torch.from_numpy(rng.integers(-1, 4, size=(6, 8, 8)))
    pred = torch.from_numpy(rng.integers(0, 4, size=(6, 8, 8)))
    whole = confusion_matrix(target, pred, 4)
    for batch in (1, 2, 4):
        summed = sum(
            confusion_matrix(target[i : i + batch], pred[i : i + batch], 4) for i in range(0, 6, batch)
        )
        assert torch.equal(summed, whole)


def test_out_of_range_prediction_is_an_error():
    with pytest.raises(ValueError, match="predictions"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 3]), 2, 3)
