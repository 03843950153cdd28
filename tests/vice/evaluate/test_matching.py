import torch

from vice.evaluate.matching import hungarian_mapping, majority_mapping, mapped_confusion
from vice.evaluate.metrics import confusion_matrix, segmentation_scores


def test_permuted_perfect_prediction_scores_one_after_hungarian():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (4, 16, 16), generator=generator)
    labels[:, :2] = -1
    permutation = torch.tensor([3, 0, 4, 1, 2])
    clusters = permutation[labels.clamp_min(0)]
    contingency = confusion_matrix(labels, clusters, 5, 5)
    mapping = hungarian_mapping(contingency)
    assert torch.equal(mapping[permutation], torch.arange(5))
    scores = segmentation_scores(mapped_confusion(contingency, mapping))
    assert scores.miou == 1.0 and scores.acc == 1.0


def test_majority_mapping_hand_made():
    # rows: classes 0..2; cols: clusters 0..4
    contingency = torch.tensor(
        [
            [5, 0, 1, 0, 0],
            [1, 7, 6, 0, 0],
            [0, 2, 0, 3, 0],
        ]
    )
    mapping = majority_mapping(contingency)
    assert mapping.tolist() == [0, 1, 1, 2, -1]  # cluster 4 has no labelled pixel
    confusion = mapped_confusion(contingency, mapping)
    assert confusion.tolist() == [[5, 1, 0, 0], [1, 13, 0, 0], [0, 2, 3, 0]]
    scores = segmentation_scores(confusion)
    assert scores.acc == 21 / 25
    assert scores.iou.tolist() == [5 / 7, 13 / 17, 3 / 5]


def test_pixels_of_unmatched_clusters_count_as_errors():
    # 3 clusters, 2 classes: Hungarian leaves cluster 2 unmatched; its pixels are misses, not dropped.
    contingency = torch.tensor([[4, 0, 2], [0, 4, 0]])
    mapping = hungarian_mapping(contingency)
    assert mapping.tolist() == [0, 1, -1]
    scores = segmentation_scores(mapped_confusion(contingency, mapping))
    assert scores.acc == 8 / 10
    assert scores.iou.tolist() == [4 / 6, 1.0]


def test_hungarian_is_one_to_one_where_majority_is_not():
    contingency = torch.tensor([[9, 8], [1, 2]])  # both clusters are mostly class 0
    assert majority_mapping(contingency).tolist() == [0, 0]
    assert hungarian_mapping(contingency).tolist() == [0, 1]  # 9 + 2 = 11 > 8 + 1
