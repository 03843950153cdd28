from pathlib import Path

import cv2
import numpy as np
import pytest

from vice.data.labelled import (
    CorruptImageError,
    DataError,
    build_labelled_dataset,
    cocostuff27,
    curated_ids,
    default_palette,
    label_maps,
)

# COCO-Stuff stuffthingmaps values and their coarse classes (from label_maps.json, checked by hand):
# 0 person -> 9 person-things, 23 zebra -> 7 animal-things, 105 clouds -> 23 sky-stuff,
# 181 wood -> 24 solid-stuff, 255 unlabeled -> ignore
COCO_RAW = np.array([[0, 23, 105], [181, 255, 0]], dtype=np.uint8)
COCO_27 = np.array([[9, 7, 23], [24, -1, 9]])
# Cityscapes labelIds: 0 unlabeled, 6 ground (void) -> ignore; 7 road -> 0, 26 car -> 19, 33 bicycle -> 26
CITY_RAW = np.array([[0, 6, 7], [26, 33, 255]], dtype=np.uint8)
CITY_27 = np.array([[-1, -1, 0], [19, 26, -1]])


def _write_image(path: Path, height: int, width: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), 128, dtype=np.uint8))


def _write_label(path: Path, raw: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), raw)


def _coco_tree(root: Path, label_folder: str = "annotations") -> None:
    for image_id in ("000000000139", "000000000285"):
        _write_image(root / "images" / "val2017" / f"{image_id}.jpg", 2, 3)
        _write_label(root / label_folder / "val2017" / f"{image_id}.png", COCO_RAW)


def test_curated_lists_ship_with_the_package():
    assert len(curated_ids("train")) == 49_629
    assert len(curated_ids("val")) == 2_175
    assert curated_ids("val")[0] == "000000000139"
    assert len(label_maps()["cocostuff27"]["coarse_names"]) == 27


@pytest.mark.parametrize("label_folder", ["annotations", "stuffthingmaps_trainval2017/"])
def test_cocostuff_maps_fine_ids_to_27_classes(tmp_path, label_folder):
    _coco_tree(tmp_path, label_folder.rstrip("/"))
    dataset = cocostuff27(tmp_path, "val", ids=["000000000285", "000000000139"])
    assert (len(dataset), dataset.num_classes, dataset.name) == (2, 27, "cocostuff")
    image, label = dataset[0]
    assert image.shape == (2, 3, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(label, COCO_27)
    assert label.dtype == np.int64
    assert dataset.images[0].name == "000000000285.jpg"


def test_cocostuff_names_the_first_missing_curated_image(tmp_path):
    _coco_tree(tmp_path)
    # of the tree's two ids only 000000000139 is curated; the next curated val id is 000000000724
    with pytest.raises(
        DataError, match=r"2174 of the 2175 listed val images are missing, first .*000000000724\.jpg"
    ):
        build_labelled_dataset("cocostuff", tmp_path, "val")


def test_cocostuff_unknown_value_names_the_file(tmp_path):
    _coco_tree(tmp_path)
    _write_label(tmp_path / "annotations" / "val2017" / "000000000139.png", np.array([[0, 200, 0]], np.uint8))
    _write_image(tmp_path / "images" / "val2017" / "000000000139.jpg", 1, 3)
    dataset = cocostuff27(tmp_path, "val", ids=["000000000139"])
    with pytest.raises(DataError, match=r"000000000139\.png: label values \[200\] are unknown"):
        dataset[0]


def test_image_without_label_and_size_mismatch_fail_fast(tmp_path):
    _coco_tree(tmp_path)
    _write_image(tmp_path / "images" / "val2017" / "000000000632.jpg", 2, 3)
    with pytest.raises(DataError, match=r"000000000632\.jpg has no label"):
        cocostuff27(tmp_path, "val", ids=["000000000139", "000000000632"])
    _write_image(tmp_path / "images" / "val2017" / "000000000139.jpg", 4, 3)
    with pytest.raises(DataError, match=r"000000000139\.png: label is 2x3 but its image .* is 4x3"):
        cocostuff27(tmp_path, "val", ids=["000000000139"])[0]


def test_missing_root_and_corrupt_image(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_labelled_dataset("cocostuff", tmp_path / "nowhere", "val")
    _coco_tree(tmp_path)
    (tmp_path / "images" / "val2017" / "000000000139.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(CorruptImageError, match=r"000000000139\.jpg: cannot be decoded"):
        cocostuff27(tmp_path, "val", ids=["000000000139"])[0]


def _city_tree(root: Path, folders: tuple[str, ...], labelled: bool = True) -> None:
    for folder in folders:
        stem = f"aachen_000000_{folders.index(folder):06d}"
        _write_image(root / "leftImg8bit" / folder / "aachen" / f"{stem}_leftImg8bit.png", 2, 3)
        if labelled:
            _write_label(root / "gtFine" / folder / "aachen" / f"{stem}_gtFine_labelIds.png", CITY_RAW)


def test_cityscapes_label_ids_to_27_classes(tmp_path):
    _city_tree(tmp_path, ("train", "val"))
    dataset = build_labelled_dataset("cityscapes", tmp_path, "val", "stego")
    assert (len(dataset), dataset.num_classes) == (1, 27)
    np.testing.assert_array_equal(dataset[0][1], CITY_27)
    assert dataset.class_names[19] == "car"
    assert dataset.palette[0].tolist() == [128, 64, 128]


def test_cityscapes_split_sets(tmp_path):
    _city_tree(tmp_path, ("train", "val"))
    _city_tree(tmp_path, ("test", "train_extra"), labelled=False)
    stego_train = build_labelled_dataset("cityscapes", tmp_path, "train", "stego")
    picie_val = build_labelled_dataset("cityscapes", tmp_path, "val", "picie")
    picie_train = build_labelled_dataset("cityscapes", tmp_path, "train", "picie")
    assert [p.parts[-3] for p in stego_train.images] == ["train"]
    assert [p.parts[-3] for p in picie_val.images] == ["train", "val"]
    assert [p.parts[-3] for p in picie_train.images] == ["test", "train_extra"]
    # PiCIE's train set has no fine labels: every pixel is ignored
    assert (picie_train[0][1] == -1).all()
    np.testing.assert_array_equal(picie_val[1][1], CITY_27)


def test_cityscapes_missing_label_and_unknown_value(tmp_path):
    _city_tree(tmp_path, ("val",), labelled=False)
    with pytest.raises(DataError, match=r"has no label: expected .*gtFine_labelIds\.png"):
        build_labelled_dataset("cityscapes", tmp_path, "val", "stego")
    _write_label(
        tmp_path / "gtFine/val/aachen/aachen_000000_000000_gtFine_labelIds.png", np.array([[7, 34]], np.uint8)
    )
    _write_image(tmp_path / "leftImg8bit/val/aachen/aachen_000000_000000_leftImg8bit.png", 1, 2)
    with pytest.raises(DataError, match=r"label values \[34\] are unknown"):
        build_labelled_dataset("cityscapes", tmp_path, "val", "stego")[0]


def _folder_tree(root: Path, split: str = "") -> None:
    (root / "class_names.txt").write_text("grass\nroad\nsky\n")
    _write_image(root / "images" / split / "a.png", 2, 3)
    _write_label(root / "labels" / split / "a.png", np.array([[0, 1, 2], [255, 2, 0]], np.uint8))


def test_labelled_folder(tmp_path):
    _folder_tree(tmp_path)
    dataset = build_labelled_dataset("labelled_folder", tmp_path, "train")
    assert dataset.class_names == ["grass", "road", "sky"]
    np.testing.assert_array_equal(dataset[0][1], [[0, 1, 2], [-1, 2, 0]])
    assert dataset.palette.shape == (3, 3)
    _write_label(tmp_path / "labels" / "a.png", np.array([[0, 3, 2], [255, 2, 0]], np.uint8))
    with pytest.raises(
        DataError, match=r"a\.png: label values \[3\] are unknown; expected values in \[0, 1, 2, 255\]"
    ):
        dataset[0]


def test_labelled_folder_split_subfolders(tmp_path):
    _folder_tree(tmp_path, "val")
    dataset = build_labelled_dataset("labelled_folder", tmp_path, "val")
    assert dataset.images == [tmp_path / "images" / "val" / "a.png"]
    with pytest.raises(DataError, match=r"images holds no images"):
        build_labelled_dataset(
            "labelled_folder", tmp_path, "train"
        )  # no images/train: the flat images/ is empty


def test_synthetic_splits_are_labelled_and_distinct():
    train = build_labelled_dataset("synthetic", None, "train", num_images=2, image_size=(32, 40))
    val = build_labelled_dataset("synthetic", None, "val", num_images=2, image_size=(32, 40))
    image, label = train[0]
    assert image.shape == (32, 40, 3) and label.shape == (32, 40)
    assert 0 <= label.min() and label.max() < train.num_classes
    assert not np.array_equal(image, val[0][0])


def test_default_palette_is_distinct_and_never_black():
    palette = default_palette(27)
    assert len({tuple(c) for c in palette.tolist()}) == 27
    assert (palette.sum(axis=1) > 0).all()
    assert palette[0].tolist() == [128, 0, 0]
