"""Labelled segmentation datasets for evaluation: COCO-Stuff-27, Cityscapes-27, a generic folder, synthetic.

Every dataset here follows the contract of ``docs/architecture.md``: items are
``(image (H, W, 3) uint8 RGB, label (H, W) int64 with -1 = ignore)`` and the dataset exposes
``num_classes``, ``class_names``, ``palette`` ((num_classes, 3) uint8) and ``name``.

Data errors fail fast and name the file: a missing root, an image without its label, a label whose
size differs from its image, a label value outside the class map. An image that cannot be decoded
raises :class:`CorruptImageError`, which the evaluation's train pass skips and counts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from torch.utils.data import Dataset

#: Split names every builder takes: ``train`` fits k-means and the probe, ``val`` is scored.
SPLITS = ("train", "val")
LABELLED_DATASETS = ("cocostuff", "cityscapes", "labelled_folder", "synthetic")
SPLIT_SETS = ("picie", "stego")
#: Marks a raw label value that the class map does not know, in a lookup table.
UNKNOWN = -2
IGNORE = -1
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
CURATED_LIST = "Coco164kFull_Stuff_Coarse_7.txt"
COCO_IGNORE_VALUE = 255
#: Cityscapes directories of each split set: (train split dirs, val split dirs).
CITYSCAPES_SPLIT_DIRS: dict[str, dict[str, tuple[str, ...]]] = {
    "stego": {"train": ("train",), "val": ("val",)},
    "picie": {"train": ("test", "train_extra"), "val": ("train", "val")},
}
#: PiCIE trains on test + train_extra, which have no fine labels: those images come unlabelled.
CITYSCAPES_UNLABELLED_DIRS = ("test", "train_extra")


class DataError(ValueError):
    """A dataset on disk is not what the loader expects. The message names the file and the fix."""


class CorruptImageError(DataError):
    """An image file exists but cannot be decoded."""


class LabelledDataset(Protocol):
    """What the evaluation needs from a labelled dataset."""

    @property
    def name(self) -> str:
        """Dataset name, recorded as the ``eval_dataset`` tag."""

    @property
    def num_classes(self) -> int:
        """Number of classes."""

    @property
    def class_names(self) -> Sequence[str]:
        """One name per class."""

    @property
    def palette(self) -> np.ndarray:
        """(num_classes, 3) uint8 class colours."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]: ...


@cache
def label_maps() -> dict[str, Any]:
    """The label maps shipped with the package (``vice/data/resources/label_maps.json``)."""
    text = resources.files("vice.data").joinpath("resources/label_maps.json").read_text()
    maps: dict[str, Any] = json.loads(text)
    return maps


def curated_ids(split: str) -> list[str]:
    """The 12-digit image ids of the curated COCO-Stuff-27 list used by IIC, PiCIE, STEGO and ViCE.

    Args:
        split: ``train`` (49,629 ids) or ``val`` (2,175 ids).
    """
    path = f"resources/cocostuff_curated/{split}2017/{CURATED_LIST}"
    text = resources.files("vice.data").joinpath(path).read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def default_palette(num_classes: int) -> np.ndarray:
    """Distinct colours for ``num_classes`` classes: the bit-interleaved colour map of PASCAL VOC.

    VOC's entry 0 (black) is skipped, so black stays free for ignored pixels.

    Returns:
        (num_classes, 3) uint8.
    """
    ids = np.arange(1, num_classes + 1)
    palette = np.zeros((num_classes, 3), dtype=np.int64)
    for shift in range(7, -1, -1):
        for channel in range(3):
            palette[:, channel] |= ((ids >> (3 * (7 - shift) + channel)) & 1) << shift
    return palette.astype(np.uint8)


def lookup_table(mapping: dict[int, int], ignore_values: Sequence[int], size: int = 256) -> np.ndarray:
    """A table that maps raw label values to class ids, -1 (ignore) or :data:`UNKNOWN`.

    Args:
        mapping: raw value -> class id.
        ignore_values: raw values that mean "no label".
        size: number of raw values the table covers; larger values are unknown.

    Returns:
        (size,) int64.
    """
    table = np.full(size, UNKNOWN, dtype=np.int64)
    for raw, cls in mapping.items():
        table[raw] = cls
    table[list(ignore_values)] = IGNORE
    return table


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3); raise :class:`CorruptImageError` if it does not decode."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise CorruptImageError(
            f"{path}: cannot be decoded as an image (corrupt or truncated); replace or remove it"
        )
    return np.ascontiguousarray(bgr[:, :, ::-1])


def read_label(path: Path, table: np.ndarray) -> np.ndarray:
    """Read a single-channel PNG of raw label values and map it through ``table``.

    Args:
        path: the label PNG (8 or 16 bit, one channel).
        table: (V,) int64 from :func:`lookup_table`.

    Returns:
        (H, W) int64 class ids, -1 = ignore.
    """
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DataError(f"{path}: label cannot be decoded; replace it with a single-channel PNG of class ids")
    if raw.ndim != 2:
        raise DataError(
            f"{path}: label has {raw.shape[2]} channels; expected a single-channel PNG of class ids "
            "(not a colour-coded map)"
        )
    values = raw.astype(np.int64)
    if values.max() >= len(table):
        bad = np.unique(values[values >= len(table)])
        raise DataError(f"{path}: label values {bad.tolist()[:10]} are unknown; expected < {len(table)}")
    label = table[values]
    if (label == UNKNOWN).any():
        bad = np.unique(values[label == UNKNOWN])
        known = np.flatnonzero(table != UNKNOWN)
        raise DataError(
            f"{path}: label values {bad.tolist()[:10]} are unknown; expected values in {known.tolist()}"
        )
    return label


class LabelledImages(Dataset[tuple[np.ndarray, np.ndarray]]):
    """Pairs of image files and label files, with a raw-value -> class lookup table.

    Attributes:
        name: dataset name (``cocostuff``, ``cityscapes``, ``labelled_folder``).
        split: ``train`` or ``val``.
        num_classes: number of classes.
        class_names: one name per class.
        palette: (num_classes, 3) uint8 class colours.
        images: the image files.
        labels: the label file of each image; None for an image without labels (all pixels ignored).
    """

    def __init__(
        self,
        name: str,
        split: str,
        images: list[Path],
        labels: list[Path | None],
        table: np.ndarray,
        class_names: list[str],
        palette: np.ndarray,
    ) -> None:
        """Hold the file lists; nothing is read until an item is asked for."""
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.name = name
        self.split = split
        self.images = images
        self.labels = labels
        self.table = table
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.palette = np.asarray(palette, dtype=np.uint8).reshape(self.num_classes, 3)  # (num_classes, 3)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(image (H, W, 3) uint8 RGB, label (H, W) int64, -1 = ignore)``."""
        image = read_rgb(self.images[index])
        label_path = self.labels[index]
        if label_path is None:
            return image, np.full(image.shape[:2], IGNORE, dtype=np.int64)
        label = read_label(label_path, self.table)
        if label.shape != image.shape[:2]:
            raise DataError(
                f"{label_path}: label is {label.shape[0]}x{label.shape[1]} but its image "
                f"{self.images[index]} is {image.shape[0]}x{image.shape[1]}; a label needs its image's size"
            )
        return image, label


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DataError(f"{path} does not exist: expected {what}")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is invalid: one of {SPLITS}")


def _files_by_stem(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """The files of ``folder`` whose suffix is in ``suffixes``, keyed by stem (one directory listing)."""
    return {p.stem: p for p in folder.iterdir() if p.suffix.lower() in suffixes}


def cocostuff27(root: str | Path, split: str, ids: Sequence[str] | None = None) -> LabelledImages:
    """COCO-Stuff-27 on the curated image lists.

    Layout: ``root/images/{split}2017/ID.jpg`` with labels in ``root/annotations/{split}2017/ID.png``
    or ``root/stuffthingmaps_trainval2017/{split}2017/ID.png`` (stuffthingmaps values 0..181,
    255 = unlabeled), mapped to the 27 coarse classes.

    Args:
        root: dataset root.
        split: ``train`` or ``val``.
        ids: image ids to use instead of the curated list.
    """
    _check_split(split)
    root = Path(root)
    _require_dir(root, "the COCO-Stuff root with images/ and annotations/ (or stuffthingmaps_trainval2017/)")
    image_dir = root / "images" / f"{split}2017"
    _require_dir(image_dir, f"COCO {split}2017 images as {image_dir}/ID.jpg")
    label_dirs = [
        root / "annotations" / f"{split}2017",
        root / "stuffthingmaps_trainval2017" / f"{split}2017",
    ]
    found_dirs = [d for d in label_dirs if d.is_dir()]
    if not found_dirs:
        raise DataError(f"no label folder for {split}2017: expected {label_dirs[0]} or {label_dirs[1]}")
    images_found = _files_by_stem(image_dir, (".jpg",))
    labels_found: dict[str, Path] = {}
    for folder in reversed(found_dirs):
        labels_found.update(_files_by_stem(folder, (".png",)))
    ids = curated_ids(split) if ids is None else list(ids)
    missing = [i for i in ids if i not in images_found]
    if missing:
        raise DataError(
            f"{len(missing)} of the {len(ids)} listed {split} images are missing, first "
            f"{image_dir / (missing[0] + '.jpg')}: the curated list needs the full COCO {split}2017 images"
        )
    unlabelled = [i for i in ids if i not in labels_found]
    if unlabelled:
        raise DataError(
            f"image {images_found[unlabelled[0]]} has no label: expected "
            f"{found_dirs[0] / (unlabelled[0] + '.png')} ({len(unlabelled)} images lack labels)"
        )
    spec = label_maps()["cocostuff27"]
    mapping = {int(k): int(v) for k, v in spec["fine_to_coarse"].items()}
    names = list(spec["coarse_names"])
    return LabelledImages(
        name="cocostuff",
        split=split,
        images=[images_found[i] for i in ids],
        labels=[labels_found[i] for i in ids],
        table=lookup_table(mapping, [COCO_IGNORE_VALUE]),
        class_names=names,
        palette=default_palette(len(names)),
    )


def cityscapes27(root: str | Path, split: str, split_set: str = "stego") -> LabelledImages:
    """Cityscapes-27: ``*_gtFine_labelIds.png`` values 7..33 become classes 0..26; the rest is ignored.

    Layout: ``root/leftImg8bit/{dir}/{city}/*_leftImg8bit.png`` paired with
    ``root/gtFine/{dir}/{city}/*_gtFine_labelIds.png``. The split set picks the dirs:

    - ``stego``: train = train, val = val (500 images);
    - ``picie``: train = test + train_extra (no fine labels: loaded unlabelled), val = train + val.

    Args:
        root: dataset root.
        split: ``train`` or ``val``.
        split_set: ``picie`` or ``stego``.
    """
    _check_split(split)
    if split_set not in SPLIT_SETS:
        raise ValueError(f"split_set={split_set!r} is invalid for cityscapes: one of {SPLIT_SETS}")
    root = Path(root)
    _require_dir(root, "the Cityscapes root with leftImg8bit/ and gtFine/")
    spec = label_maps()["cityscapes27"]
    offset = int(spec["label_id_offset"])
    names = list(spec["names"])
    images: list[Path] = []
    labels: list[Path | None] = []
    for folder in CITYSCAPES_SPLIT_DIRS[split_set][split]:
        image_root = root / "leftImg8bit" / folder
        _require_dir(
            image_root, f"Cityscapes images as {image_root}/CITY/*_leftImg8bit.png (split_set={split_set})"
        )
        found = sorted(image_root.glob("*/*_leftImg8bit.png"))
        if not found:
            raise DataError(f"{image_root} holds no CITY/*_leftImg8bit.png images")
        for image in found:
            images.append(image)
            if folder in CITYSCAPES_UNLABELLED_DIRS:
                labels.append(None)
                continue
            stem = image.name[: -len("_leftImg8bit.png")]
            label = root / "gtFine" / folder / image.parent.name / f"{stem}_gtFine_labelIds.png"
            if not label.is_file():
                raise DataError(f"image {image} has no label: expected {label}")
            labels.append(label)
    ignore = [*range(offset), 255]
    table = lookup_table({offset + k: k for k in range(len(names))}, ignore)
    return LabelledImages("cityscapes", split, images, labels, table, names, np.asarray(spec["colors"]))


def labelled_folder(
    root: str | Path, split: str, ignore_value: int = 255, class_names_file: str = "class_names.txt"
) -> LabelledImages:
    """Your own data: ``root/images/`` + ``root/labels/`` (PNG class ids) + ``root/class_names.txt``.

    If ``root/images/{split}/`` exists, the split uses ``images/{split}/`` and ``labels/{split}/``;
    otherwise every split is the whole flat folder. A label is ``labels/STEM.png`` for the image
    ``images/STEM.*``; its values are class ids 0..num_classes-1 or ``ignore_value``.

    Args:
        root: dataset root.
        split: ``train`` or ``val``.
        ignore_value: the label value that means "no label".
        class_names_file: file under ``root`` with one class name per line.
    """
    _check_split(split)
    root = Path(root)
    _require_dir(root, "a labelled folder with images/, labels/ and class_names.txt")
    names_path = root / class_names_file
    if not names_path.is_file():
        raise DataError(f"{names_path} does not exist: expected one class name per line")
    names = [line.strip() for line in names_path.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(f"{names_path} lists no class names")
    if 0 <= ignore_value < len(names):
        raise DataError(f"ignore value {ignore_value} is a class id ({names[ignore_value]!r}); pick another")
    sub = Path(split) if (root / "images" / split).is_dir() else Path()
    image_dir, label_dir = root / "images" / sub, root / "labels" / sub
    _require_dir(image_dir, "the images")
    _require_dir(label_dir, "the label PNGs, one per image, named after it")
    images = sorted(_files_by_stem(image_dir, IMAGE_SUFFIXES).values())
    if not images:
        raise DataError(f"{image_dir} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    labels: list[Path | None] = []
    for image in images:
        label = label_dir / f"{image.stem}.png"
        if not label.is_file():
            raise DataError(f"image {image} has no label: expected {label}")
        labels.append(label)
    size = max(len(names), ignore_value + 1)
    table = lookup_table({k: k for k in range(len(names))}, [ignore_value] if ignore_value >= 0 else [], size)
    return LabelledImages("labelled_folder", split, images, labels, table, names, default_palette(len(names)))


def build_labelled_dataset(
    name: str,
    root: str | Path | None,
    split: str,
    split_set: str = "stego",
    *,
    num_images: int = 256,
    image_size: Sequence[int] = (256, 320),
    ignore_value: int = 255,
) -> LabelledDataset:
    """Build a labelled dataset by name.

    Args:
        name: ``cocostuff``, ``cityscapes``, ``labelled_folder`` or ``synthetic``.
        root: dataset root (unused for synthetic).
        split: ``train`` or ``val``.
        split_set: Cityscapes split set, ``picie`` or ``stego`` (COCO-Stuff always uses the curated lists).
        num_images: synthetic only: number of images.
        image_size: synthetic only: (H, W); the split's seed is ``vice.data.synthetic.SPLIT_SEEDS``.
        ignore_value: labelled_folder only: the label value that means "no label".
    """
    _check_split(split)
    if name == "synthetic":
        from vice.data.synthetic import synthetic_split

        height, width = image_size
        return synthetic_split(split, num_images, (height, width))
    if root is None:
        raise DataError(f"dataset {name!r} needs a root directory (eval.root or data.root)")
    if name == "cocostuff":
        return cocostuff27(root, split)
    if name == "cityscapes":
        return cityscapes27(root, split, split_set)
    if name == "labelled_folder":
        return labelled_folder(root, split, ignore_value)
    raise ValueError(f"dataset {name!r} has no labels to evaluate on: use one of {LABELLED_DATASETS}")
