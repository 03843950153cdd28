"""Procedural street-like scenes whose classes differ by texture, not by colour.

The built-in default dataset: no download, any resolution, deterministic by ``(seed, index)``.
Every class's base colour is drawn per image from the same range (and sometimes copied from another
class), so clustering raw colours cannot recover the classes; the layout and the texture can:

======  ==========  =====================================================
id      class       texture
======  ==========  =====================================================
0       sky         smooth vertical gradient
1       building    staggered bricks with dark mortar
2       vegetation  oriented stripes over soft blobs (tree crowns)
3       road        fine per-pixel noise
4       sidewalk    diagonal square tiles, one shade per tile
5       pole        thin vertical cylinders (a few pixels wide)
6       vehicle     rounded boxes covered in spots
======  ==========  =====================================================
"""

from __future__ import annotations

import cv2
import numpy as np

CLASS_NAMES = ("sky", "building", "vegetation", "road", "sidewalk", "pole", "vehicle")
NUM_CLASSES = len(CLASS_NAMES)
SKY, BUILDING, VEGETATION, ROAD, SIDEWALK, POLE, VEHICLE = range(NUM_CLASSES)
#: Fixed colours for drawing label maps (not the image colours, which are random per image).
PALETTE = np.array(
    [
        [70, 130, 180],
        [70, 70, 70],
        [107, 142, 35],
        [128, 64, 128],
        [244, 35, 232],
        [153, 153, 153],
        [0, 0, 142],
    ],
    dtype=np.uint8,
)
#: Seeds of the standard splits, so training and evaluation never draw the same scenes.
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}

#: Range every class's base colour is drawn from, per channel.
COLOUR_RANGE = (40, 216)
#: Probability that a class reuses (a perturbed copy of) another class's colour in an image.
SHARED_COLOUR_PROB = 0.3
#: Texture scales are in pixels at this image height and grow with the image: at 128 px the finest
#: textures (bricks, stripes, spots) repeat every 4-9 px, coarse enough for a stride-8 network.
REFERENCE_HEIGHT = 128


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid resized bilinearly. Returns (H, W)."""
    coarse = rng.uniform(-1, 1, size=(max(2, height // cell + 2), max(2, width // cell + 2))).astype(
        np.float32
    )
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)


def _layout(rng: np.random.Generator, height: int, width: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Class map of one scene and, for pole pixels, the position across the pole in [-1, 1].

    Returns:
        label (H, W) int64 and across (H, W) float32.
    """
    ys = np.arange(height, dtype=np.float32)[:, None]  # (H, 1)
    xs = np.arange(width, dtype=np.float32)[None, :]  # (1, W)
    horizon = rng.uniform(0.35, 0.55) * height
    label = np.where(ys < horizon, SKY, SIDEWALK) * np.ones((1, width), np.int64)  # (H, W)

    # Skyline: consecutive building segments of random width, some left empty.
    widths = rng.uniform(0.08, 0.3, size=16) * width
    segment = np.searchsorted(np.cumsum(widths), xs[0])  # (W,)
    tops = rng.uniform(0.05, 0.9, size=16) * horizon
    tops[rng.random(16) < 0.2] = horizon
    label[(ys >= tops[segment][None, :]) & (ys < horizon)] = BUILDING

    # Tree crowns: ellipses sitting on the horizon.
    num_trees = int(rng.integers(1, 5))
    cy = horizon - rng.uniform(0.0, 0.2, size=(num_trees, 1, 1)) * height
    cx = rng.uniform(0, width, size=(num_trees, 1, 1))
    ry = rng.uniform(0.08, 0.2, size=(num_trees, 1, 1)) * height
    rx = rng.uniform(0.05, 0.14, size=(num_trees, 1, 1)) * width
    crowns = (((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 < 1).any(axis=0)  # (H, W)
    label[crowns] = VEGETATION

    # Road: a trapezoid from a vanishing point on the horizon; the rest of the ground is sidewalk.
    vanish = rng.uniform(0.3, 0.7) * width
    half = 0.02 * width + (ys - horizon) * rng.uniform(0.5, 1.0) * width / max(height - horizon, 1.0)
    label[(ys >= horizon) & (np.abs(xs - vanish) < half)] = ROAD

    # Vehicles: rounded boxes on the ground, larger further from the horizon (perspective).
    num_vehicles = int(rng.integers(1, 4))
    bottom = horizon + rng.uniform(0.2, 1.0, size=(num_vehicles, 1, 1)) * (height - horizon)
    vh = 0.45 * (bottom - horizon) + 4 * scale
    vw = vh * rng.uniform(1.3, 2.2, size=(num_vehicles, 1, 1))
    vx = vanish + rng.uniform(-0.6, 0.6, size=(num_vehicles, 1, 1)) * vw * 1.5
    box = (np.abs((xs - vx) / (vw / 2)) ** 4 + np.abs((ys - (bottom - vh / 2)) / (vh / 2)) ** 4) < 1
    label[box.any(axis=0)] = VEHICLE

    # Poles: a few pixels wide, from above the horizon down onto the ground.
    num_poles = int(rng.integers(2, 5))
    pole_width = rng.uniform(2.0, 5.0, size=(num_poles, 1, 1)) * scale
    pole_x = rng.uniform(0, width, size=(num_poles, 1, 1))
    pole_top = rng.uniform(0.05, 0.7, size=(num_poles, 1, 1)) * horizon
    pole_bottom = horizon + rng.uniform(0.1, 0.6, size=(num_poles, 1, 1)) * (height - horizon)
    across = (xs - pole_x) / (pole_width / 2)  # (P, 1, W)
    poles = (np.abs(across) <= 1) & (ys >= pole_top) & (ys < pole_bottom)  # (P, H, W)
    on_pole = poles.any(axis=0)
    label[on_pole] = POLE
    which = poles.argmax(axis=0)  # (H, W)
    across_map = np.take_along_axis(np.broadcast_to(across, poles.shape), which[None], axis=0)[0]
    return label, np.where(on_pole, across_map, 0).astype(np.float32)


def _textures(
    rng: np.random.Generator, height: int, width: int, scale: float, across: np.ndarray
) -> np.ndarray:
    """Grey-level modulation of every class over the whole image, in intensity fractions.

    Returns:
        (NUM_CLASSES, H, W) float32.
    """
    ys = np.arange(height, dtype=np.float32)[:, None]  # (H, 1)
    xs = np.arange(width, dtype=np.float32)[None, :]  # (1, W)
    fine = rng.standard_normal((height, width), dtype=np.float32)
    out = np.empty((NUM_CLASSES, height, width), np.float32)

    out[SKY] = 0.15 - 0.3 * ys / height + 0.01 * fine

    brick_h = rng.uniform(5, 9) * scale
    brick_w = brick_h * rng.uniform(2.0, 3.0)
    mortar = max(1.0, 1.5 * scale)
    row = np.floor(ys / brick_h)
    shifted = xs + (row % 2) * brick_w / 2
    brick_id = (row * 977 + np.floor(shifted / brick_w)).astype(np.int64) % 4096
    shade = rng.uniform(-0.12, 0.12, size=4096).astype(np.float32)[brick_id]
    joint = ((ys % brick_h) < mortar) | ((shifted % brick_w) < mortar)
    out[BUILDING] = np.where(joint, -0.3, shade) + 0.03 * fine

    angle = rng.uniform(0, np.pi)
    period = rng.uniform(4, 8) * scale
    stripes = np.sin(2 * np.pi * (xs * np.cos(angle) + ys * np.sin(angle)) / period)
    out[VEGETATION] = 0.2 * stripes + 0.15 * _smooth_noise(rng, height, width, int(12 * scale) + 1)

    out[ROAD] = 0.12 * fine

    tile = rng.uniform(10, 18) * scale
    u = (xs + ys) / np.sqrt(2)
    v = (xs - ys) / np.sqrt(2)
    tile_id = (np.floor(u / tile) * 613 + np.floor(v / tile)).astype(np.int64) % 4096
    tile_shade = rng.uniform(-0.15, 0.15, size=4096).astype(np.float32)[tile_id]
    gap = ((u % tile) < mortar) | ((v % tile) < mortar)
    out[SIDEWALK] = np.where(gap, -0.2, tile_shade) + 0.01 * fine

    out[POLE] = 0.25 * np.cos(np.pi / 2 * np.clip(across, -1, 1)) - 0.1 + 0.02 * fine

    spacing = rng.uniform(5, 8) * scale
    dy = (ys % spacing) - spacing / 2
    dx = (xs % spacing) - spacing / 2
    spots = (dy**2 + dx**2) < (spacing / 3.5) ** 2
    out[VEHICLE] = np.where(spots, 0.3, -0.05) + 0.02 * fine
    return out


def _colours(rng: np.random.Generator) -> np.ndarray:
    """Per-image base colour of every class from one shared range. Returns (NUM_CLASSES, 3) float32."""
    colours = rng.uniform(*COLOUR_RANGE, size=(NUM_CLASSES, 3))
    donor = rng.integers(0, NUM_CLASSES, size=NUM_CLASSES)
    copy = rng.random(NUM_CLASSES) < SHARED_COLOUR_PROB
    colours = np.where(copy[:, None], colours[donor] + rng.normal(0, 8, size=(NUM_CLASSES, 3)), colours)
    return colours.astype(np.float32)


def render_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw one scene.

    Args:
        rng: the generator.
        height: H.
        width: W.

    Returns:
        image (H, W, 3) uint8 RGB and label (H, W) int64 in ``0..NUM_CLASSES-1``.
    """
    scale = height / REFERENCE_HEIGHT
    label, across = _layout(rng, height, width, scale)
    textures = _textures(rng, height, width, scale, across)  # (C, H, W)
    colours = _colours(rng)  # (C, 3)
    modulation = np.take_along_axis(textures, label[None], axis=0)[0]  # (H, W)
    light = rng.uniform(0.8, 1.15)
    image = (colours[label] + 255 * modulation[:, :, None]) * light  # (H, W, 3)
    return np.clip(image, 0, 255).astype(np.uint8), label


class SyntheticScenes:
    """``num_images`` procedural street scenes of size ``image_size``; item i is fixed by ``(seed, i)``.

    Items are ``(image (H, W, 3) uint8 RGB, label (H, W) int64)``; every pixel is labelled.
    """

    name = "synthetic"
    num_classes = NUM_CLASSES
    class_names = CLASS_NAMES
    palette = PALETTE

    def __init__(self, num_images: int, image_size: tuple[int, int] = (256, 320), seed: int = 0) -> None:
        if num_images < 1:
            raise ValueError(f"data.num_images={num_images} is invalid: >= 1")
        height, width = image_size
        if min(height, width) < 16:
            raise ValueError(f"data.image_size={list(image_size)} is invalid: [H, W], each >= 16")
        self.num_images = num_images
        self.image_size = (int(height), int(width))
        self.seed = seed

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} is out of range for {self.num_images} synthetic images")
        rng = np.random.default_rng([self.seed, index])
        return render_scene(rng, *self.image_size)


def synthetic_split(split: str, num_images: int, image_size: tuple[int, int] = (256, 320)) -> SyntheticScenes:
    """The synthetic dataset of a named split (``train`` | ``val`` | ``test``), seeded by ``SPLIT_SEEDS``."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"data.split={split!r} is invalid for synthetic data: one of {tuple(SPLIT_SEEDS)}")
    return SyntheticScenes(num_images, image_size, seed=SPLIT_SEEDS[split])
