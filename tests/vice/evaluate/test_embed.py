import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vice.data.labelled import CorruptImageError
from vice.evaluate.embed import (
    ProtocolDataset,
    apply_protocol,
    network_embedder,
    normalize_images,
    padding_for,
    pixel_keys,
    pool_superpixels,
    reflect_pad,
    resize_nearest,
    resized_shape,
)


def _column_label(height: int, width: int, block: int) -> np.ndarray:
    return np.broadcast_to(np.arange(width) // block, (height, width)).astype(np.int64).copy()


def test_resized_shape_keeps_aspect():
    assert resized_shape(480, 640, 320) == (320, 427)
    assert resized_shape(640, 480, 320) == (427, 320)
    assert resized_shape(100, 100, 64) == (64, 64)


def test_picie_protocol_resizes_short_side_and_centre_crops():
    image = np.zeros((100, 200, 3), dtype=np.uint8)
    label = _column_label(100, 200, 50)  # 4 blocks of 50 columns: 0, 1, 2, 3
    label[:10] = -1
    small, fit_label, score_label = apply_protocol(image, label, "picie", 50)
    assert small.shape == (50, 50, 3)
    # 100x200 -> 50x100 (blocks of 25 columns); the centre crop keeps columns 25..74: blocks 1 and 2
    assert np.array_equal(score_label, fit_label)
    assert (score_label[5:, :25] == 1).all() and (score_label[5:, 25:] == 2).all()
    assert (score_label[:5] == -1).all()


def test_full_protocol_scores_the_original_label():
    image = np.zeros((60, 90, 3), dtype=np.uint8)
    label = _column_label(60, 90, 30)
    small, fit_label, score_label = apply_protocol(image, label, "full", 30)
    assert small.shape == (30, 45, 3)
    assert score_label is label
    assert np.array_equal(fit_label, _column_label(30, 45, 15))


def test_padding_depends_on_image_size_only():
    assert padding_for(100, 130, 32) == (32, 62, 32, 60)  # padded to 192 x 224
    assert padding_for(64, 64, 0) == (0, 0, 0, 0)


def test_reflect_pad_matches_numpy_even_past_the_image_size():
    x = torch.arange(6.0).view(1, 1, 2, 3)
    padded = reflect_pad(x, (5, 4, 3, 6))
    expected = np.pad(x.numpy(), ((0, 0), (0, 0), (3, 6), (5, 4)), mode="reflect")
    np.testing.assert_array_equal(padded.numpy(), expected)


class _Recorder(nn.Module):
    """A fixed pointwise map (1x1 conv) that records the input shapes it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape))
        return F.normalize(self.conv(x), dim=1)


def test_network_embedder_pads_then_crops_back():
    torch.manual_seed(0)
    model = _Recorder().eval()
    images = torch.randint(0, 256, (2, 3, 20, 30), dtype=torch.uint8)
    features = network_embedder(model, pad=8)(images)
    assert model.seen == [(2, 3, 64, 64)]  # 20 + 16 -> 64, 30 + 16 -> 64
    with torch.no_grad():
        expected = model(normalize_images(images))
    torch.testing.assert_close(features, expected)


def test_pool_superpixels_hand_computed():
    features = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[10.0, 20.0], [30.0, 50.0]]]])  # (2, 1, 2, 2)
    regions = torch.tensor([[[0, 0], [1, 1]], [[0, 1], [0, 0]]])
    pooled = pool_superpixels(features, regions)
    expected = torch.tensor([[[[1.5, 1.5], [3.5, 3.5]]], [[[30.0, 20.0], [30.0, 30.0]]]])
    torch.testing.assert_close(pooled, expected)


def test_resize_nearest_blocks():
    maps = torch.tensor([[[1, 2], [3, 4]]])
    assert resize_nearest(maps, (4, 4)).tolist() == [[[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]]
    assert resize_nearest(maps, (2, 2)) is maps


def test_pixel_keys_depend_on_seed_and_index_only():
    assert np.array_equal(pixel_keys(3, (4, 5), 7), pixel_keys(3, (4, 5), 7))
    assert not np.array_equal(pixel_keys(3, (4, 5), 7), pixel_keys(4, (4, 5), 7))
    assert not np.array_equal(pixel_keys(3, (4, 5), 7), pixel_keys(3, (4, 5), 8))


class _OneCorrupt:
    name = "toy"
    num_classes = 2
    class_names = ("a", "b")
    palette = np.zeros((2, 3), dtype=np.uint8)

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index == 1:
            raise CorruptImageError("/data/broken.jpg: cannot be decoded")
        return np.zeros((8, 8, 3), dtype=np.uint8), np.zeros((8, 8), dtype=np.int64)


def test_protocol_dataset_skips_corrupt_images_only_when_asked():
    skipping = ProtocolDataset(_OneCorrupt(), "full", 8, 10, seed=0, skip_corrupt=True)
    assert len(skipping) == 2
    assert skipping[1] == {"index": 1, "corrupt": "/data/broken.jpg: cannot be decoded"}
    assert skipping[0]["keys"].shape == (8, 8)
    strict = ProtocolDataset(_OneCorrupt(), "full", 8, 10)
    with pytest.raises(CorruptImageError, match="broken"):
        strict[1]
