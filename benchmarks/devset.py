"""The real-photograph development set: texture mosaics that colour and brightness cannot separate.

Every image is a Voronoi mosaic of 3-6 cells; each cell shows a real photograph of one material,
cut from a photo that ships inside a PyPI package (no download). Train images cut their textures
only from one part of each source photo and val images only from the other, disjoint part.

Colour and brightness carry no class information: every texture is turned to grey and its
intensities are rank-mapped onto one common distribution (so every class has the same histogram
inside an image), and each whole image then gets one random tint and gain. Raw-colour features sit
near chance; only texture separates the classes.

``python -m benchmarks.devset --out data/textures`` writes a ``labelled_folder`` tree
(``images/{train,val}/``, ``labels/{train,val}/``, ``class_names.txt``) that vice trains on with
``data.name=folder data.root=.../images/train`` and evaluates with
``eval.dataset=labelled_folder eval.root=...``. The tree is rebuilt only when its manifest differs.

scikit-image's ``brick``, ``grass``, ``gravel`` and ``moon`` are deliberately not used: they are kept
for a held-out check of whatever is tuned here.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

#: Bump when the generator's output changes, so cached trees are rebuilt.
VERSION = 1
MANIFEST = "devset.json"
CLASS_NAMES_FILE = "class_names.txt"


@dataclass(frozen=True)
class Source:
    """One material: a photo inside a package, and its disjoint train / val boxes.

    Attributes:
        name: class name.
        package: the distribution that ships the photo (import name).
        path: the photo's path inside the package.
        train_box: (y0, y1, x0, x1) of the part train images cut from, in source pixels.
        val_box: the disjoint part val images cut from.
        scale: resize factor applied to the box, so the texture's repeating element is 10-40 px.
    """

    name: str
    package: str
    path: str
    train_box: tuple[int, int, int, int]
    val_box: tuple[int, int, int, int]
    scale: float = 1.0


SOURCES = (
    # Immunohistochemistry tissue (512x512): cells and stroma; left half / right half.
    Source("tissue", "skimage", "data/ihc.png", (0, 512, 0, 256), (0, 512, 256, 512)),
    # Hubble deep field (872x1000): galaxies on noise; top / bottom.
    Source("stars", "skimage", "data/hubble_deep_field.jpg", (0, 436, 0, 1000), (436, 872, 0, 1000), 0.75),
    # Wooden table top beside the coffee cup (400x600): the right strip, upper / lower part.
    Source("wood", "skimage", "data/coffee.png", (0, 200, 482, 600), (200, 400, 482, 600)),
    # Dahlia petals (427x640): the flower's left / right half.
    Source("petals", "sklearn", "datasets/images/flower.jpg", (115, 325, 200, 305), (115, 325, 305, 410)),
    # Handwriting on paper (172x448): left / right half.
    Source("handwriting", "skimage", "data/text.png", (0, 172, 0, 224), (0, 172, 224, 448)),
)
MATERIALS = tuple(s.name for s in SOURCES)
#: Seeds of the two splits: layouts, crops and tints differ between them.
DEVSET_SEEDS = {"train": 10, "val": 11}
#: Intensity distribution every texture is mapped onto: N(mean, std) clipped to [0, 255].
TARGET_MEAN, TARGET_STD = 128.0, 45.0
#: Per-image tint saturation and gain ranges (the tint is one colour for the whole image).
TINT_SATURATION = (0.0, 0.5)
GAIN = (0.75, 1.15)


def package_file(package: str, path: str) -> Path:
    """Locate a data file inside an installed package without importing it.

    Raises:
        FileNotFoundError: naming the package to install, or the missing file.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = {"skimage": "scikit-image", "sklearn": "scikit-learn"}.get(package, package)
        raise FileNotFoundError(f"the dev set needs the photos shipped in {dist}: pip install {dist}")
    file = Path(next(iter(spec.submodule_search_locations))) / path
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing from the installed {package}")
    return file


def load_gray(source: Source, split: str) -> np.ndarray:
    """The split's box of the source photo, grey, resized by ``source.scale``: (h, w) float32."""
    file = package_file(source.package, source.path)
    image = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise OSError(f"cannot read {file}")
    y0, y1, x0, x1 = source.train_box if split == "train" else source.val_box
    box = image[y0:y1, x0:x1]
    if source.scale != 1.0:
        box = cv2.resize(box, None, fx=source.scale, fy=source.scale, interpolation=cv2.INTER_AREA)
    return box.astype(np.float32)


def rank_normalize(values: np.ndarray) -> np.ndarray:
    """Map values onto N(TARGET_MEAN, TARGET_STD) by rank, so any two inputs share one histogram.

    Args:
        values: (n,) float.

    Returns:
        (n,) float32 in [0, 255].
    """
    from scipy.special import ndtri

    ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable")
    quantiles = (ranks + 0.5) / values.shape[0]
    return np.clip(TARGET_MEAN + TARGET_STD * ndtri(quantiles), 0, 255).astype(np.float32)


def texture_canvas(gray: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random (size, size) crop of a material, mirrored where the box is smaller, flipped at random."""
    scale = rng.uniform(0.8, 1.25)
    scaled = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    pad_y, pad_x = max(0, size - scaled.shape[0]), max(0, size - scaled.shape[1])
    if pad_y or pad_x:
        scaled = cv2.copyMakeBorder(scaled, 0, pad_y, 0, pad_x, cv2.BORDER_REFLECT_101)
    y = int(rng.integers(0, scaled.shape[0] - size + 1))
    x = int(rng.integers(0, scaled.shape[1] - size + 1))
    crop = scaled[y : y + size, x : x + size]
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def voronoi_labels(size: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A Voronoi partition of a (size, size) image into 3-6 cells, each of a random class (>= 2 classes).

    Returns:
        (size, size) uint8 class ids.
    """
    num_cells = int(rng.integers(3, 7))
    seeds = rng.uniform(0, size, size=(num_cells, 2))  # (cells, 2) as (y, x)
    classes = rng.choice(num_classes, size=num_cells, replace=num_cells > num_classes)
    if len(set(classes.tolist())) < 2:
        classes[1] = (classes[0] + 1) % num_classes
    yy, xx = np.mgrid[0:size, 0:size]
    dist = (yy[None] - seeds[:, 0, None, None]) ** 2 + (xx[None] - seeds[:, 1, None, None]) ** 2
    return classes[dist.argmin(0)].astype(np.uint8)


def tint(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random colour and gain for a whole grey image: (H, W) float -> (H, W, 3) uint8 RGB."""
    hue = rng.uniform(0, 180)
    saturation = rng.uniform(*TINT_SATURATION)
    colour = cv2.cvtColor(np.uint8([[[hue, saturation * 255, 255]]]), cv2.COLOR_HSV2RGB)[0, 0] / 255.0
    colour = colour / colour.mean()
    rgb = gray[..., None] * colour[None, None, :] * rng.uniform(*GAIN)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def mosaic(textures: list[np.ndarray], size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One labelled mosaic.

    Args:
        textures: per class, the split's grey source box (h, w) float32.
        size: image side.
        rng: the image's generator.

    Returns:
        (size, size, 3) uint8 RGB image and (size, size) uint8 label map.
    """
    labels = voronoi_labels(size, len(textures), rng)
    gray = np.zeros((size, size), np.float32)
    for cls in np.unique(labels):  # at most 6 classes per image, at generation time only
        mask = labels == cls
        canvas = texture_canvas(textures[int(cls)], size, rng)
        gray[mask] = rank_normalize(canvas[mask])
    return tint(gray, rng), labels


@dataclass(frozen=True)
class DevsetSpec:
    """What a generated tree holds; its manifest. Equal specs give byte-identical trees."""

    num_train: int = 96
    num_val: int = 48
    image_size: int = 192
    version: int = VERSION


def generate(root: str | os.PathLike[str], spec: DevsetSpec = DevsetSpec()) -> Path:
    """Write (or reuse) the dev set as a ``labelled_folder`` tree under ``root``.

    The tree is written to a temporary sibling and renamed into place, so a crash never leaves a
    half-written set behind a valid manifest.

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    manifest = {**asdict(spec), "classes": list(MATERIALS)}
    if (root / MANIFEST).is_file() and json.loads((root / MANIFEST).read_text()) == manifest:
        return root
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for split, count in (("train", spec.num_train), ("val", spec.num_val)):
        textures = [load_gray(source, split) for source in SOURCES]
        (tmp / "images" / split).mkdir(parents=True)
        (tmp / "labels" / split).mkdir(parents=True)
        for index in range(count):
            rng = np.random.default_rng([DEVSET_SEEDS[split], index])
            image, labels = mosaic(textures, spec.image_size, rng)
            cv2.imwrite(str(tmp / "images" / split / f"{index:04d}.png"), image[..., ::-1])
            cv2.imwrite(str(tmp / "labels" / split / f"{index:04d}.png"), labels)
    (tmp / CLASS_NAMES_FILE).write_text("\n".join(MATERIALS) + "\n")
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(root)
    return root


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.devset --out DIR``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.devset", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/textures"), help="tree to write")
    parser.add_argument("--num-train", type=int, default=DevsetSpec.num_train)
    parser.add_argument("--num-val", type=int, default=DevsetSpec.num_val)
    parser.add_argument("--image-size", type=int, default=DevsetSpec.image_size)
    args = parser.parse_args(argv)
    root = generate(args.out, DevsetSpec(args.num_train, args.num_val, args.image_size))
    print(root)


if __name__ == "__main__":
    main()
