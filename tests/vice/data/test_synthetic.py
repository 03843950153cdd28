import cv2
import faiss
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from vice.data.synthetic import (
    CLASS_NAMES,
    NUM_CLASSES,
    PALETTE,
    ROAD,
    SKY,
    SPLIT_SEEDS,
    SyntheticScenes,
    synthetic_split,
)


def test_dataset_attributes():
    ds = SyntheticScenes(3, (40, 56), seed=5)
    assert len(ds) == 3
    assert ds.name == "synthetic"
    assert ds.num_classes == NUM_CLASSES == len(CLASS_NAMES) == 7
    assert ds.palette.shape == (7, 3) and ds.palette.dtype == np.uint8
    assert len(np.unique(PALETTE, axis=0)) == 7
    with pytest.raises(IndexError, match="index 3"):
        ds[3]


@pytest.mark.parametrize("size", [(37, 61), (256, 320), (300, 200)])
def test_items_have_the_requested_size_and_types(size):
    image, label = SyntheticScenes(2, size, seed=0)[1]
    assert image.shape == (*size, 3) and image.dtype == np.uint8
    assert label.shape == size and label.dtype == np.int64
    assert label.min() >= 0 and label.max() < NUM_CLASSES


def test_items_are_deterministic_by_seed_and_index():
    a_image, a_label = SyntheticScenes(4, (64, 80), seed=3)[2]
    b_image, b_label = SyntheticScenes(4, (64, 80), seed=3)[2]
    np.testing.assert_array_equal(a_image, b_image)
    np.testing.assert_array_equal(a_label, b_label)
    assert not np.array_equal(a_image, SyntheticScenes(4, (64, 80), seed=4)[2][0])
    assert not np.array_equal(a_image, SyntheticScenes(4, (64, 80), seed=3)[1][0])


def test_splits_use_distinct_seeds():
    assert len(set(SPLIT_SEEDS.values())) == len(SPLIT_SEEDS)
    assert synthetic_split("val", 2).seed == SPLIT_SEEDS["val"]
    with pytest.raises(ValueError, match=r"data\.split='dev'"):
        synthetic_split("dev", 2)


def test_every_class_appears_often():
    ds = SyntheticScenes(16, (128, 160), seed=0)
    labels = np.stack([ds[i][1] for i in range(16)])  # (16, H, W)
    counts = np.stack([np.bincount(lab.ravel(), minlength=NUM_CLASSES) for lab in labels])
    assert (counts > 0).sum(axis=0).min() >= 12  # each class in >= 12 of 16 images
    share = counts.sum(axis=0) / counts.sum()
    assert share.min() >= 0.005  # poles are thin but present
    assert share.max() <= 0.4


def test_classes_differ_by_texture():
    """High-frequency energy |I - blur(I)| inside eroded class masks: road >> sky."""
    ds = SyntheticScenes(8, (128, 160), seed=1)
    energy = {SKY: [], ROAD: []}
    for i in range(8):
        image, label = ds[i]
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
        detail = np.abs(grey - cv2.GaussianBlur(grey, (5, 5), 0))
        for cls in energy:
            inner = cv2.erode((label == cls).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            energy[cls].append(detail[inner].mean())
    assert np.mean(energy[ROAD]) > 5 * np.mean(energy[SKY])


def hungarian_miou(labels: np.ndarray, clusters: np.ndarray, num_classes: int) -> float:
    conf = np.bincount(labels * num_classes + clusters, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )
    rows, cols = linear_sum_assignment(conf, maximize=True)
    conf = conf[:, cols[np.argsort(rows)]]  # cluster columns reordered to their matched class
    tp = np.diag(conf)
    iou = tp / (conf.sum(0) + conf.sum(1) - tp)
    return float(np.nanmean(iou))


def test_hungarian_miou_of_a_permuted_perfect_prediction_is_one():
    labels = np.array([0, 0, 1, 2, 2, 2])
    assert hungarian_miou(labels, (labels + 1) % 3, 3) == pytest.approx(1.0)


def test_raw_colour_kmeans_cannot_solve_it():
    ds = SyntheticScenes(8, (96, 120), seed=0)
    items = [ds[i] for i in range(8)]
    pixels = np.concatenate([img.reshape(-1, 3) for img, _ in items]).astype(np.float32)
    labels = np.concatenate([lab.ravel() for _, lab in items])
    kmeans = faiss.Kmeans(3, NUM_CLASSES, niter=20, seed=0)
    kmeans.train(pixels)
    _, assignment = kmeans.index.search(pixels, 1)
    miou = hungarian_miou(labels, assignment[:, 0].astype(np.int64), NUM_CLASSES)
    assert miou < 0.3
    # the same k-means on the label palette (an oracle feature) solves it
    oracle = PALETTE[labels].astype(np.float32)
    kmeans = faiss.Kmeans(3, NUM_CLASSES, niter=20, seed=0)
    kmeans.train(oracle)
    _, assignment = kmeans.index.search(oracle, 1)
    assert hungarian_miou(labels, assignment[:, 0].astype(np.int64), NUM_CLASSES) > 0.95
