"""Unlabelled images from a directory tree, for self-supervised training on any photo collection."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageFolder:
    """Every image under ``root`` (recursively, sorted by path); items are ``(image, None)``.

    A file that cannot be decoded is skipped: the item becomes the next decodable image (wrapping
    around), the file is logged once and counted in :attr:`num_skipped` (per process: each
    DataLoader worker counts what it read).

    Args:
        root: the directory to search.
        extensions: file suffixes to include (case-insensitive).
    """

    name = "folder"

    def __init__(self, root: str | os.PathLike[str], extensions: Sequence[str] = IMAGE_EXTENSIONS) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"data.root={str(self.root)!r} is not a directory: point it at a folder of images"
            )
        suffixes = {ext.lower() if ext.startswith(".") else f".{ext.lower()}" for ext in extensions}
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
        if not self.files:
            raise FileNotFoundError(
                f"data.root={str(self.root)!r} holds no images with extensions {sorted(suffixes)}: "
                "check the path or pass the extensions of your files"
            )
        self.skipped: set[Path] = set()

    @property
    def num_skipped(self) -> int:
        """Number of distinct undecodable files met so far in this process."""
        return len(self.skipped)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[np.ndarray, None]:
        """Return ``(image (H, W, 3) uint8 RGB, None)`` for ``index`` or the next decodable file."""
        if not 0 <= index < len(self.files):
            raise IndexError(f"index {index} is out of range for {len(self.files)} images under {self.root}")
        for offset in range(len(self.files)):
            path = self.files[(index + offset) % len(self.files)]
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR) if path not in self.skipped else None
            if bgr is not None:
                return np.ascontiguousarray(bgr[:, :, ::-1]), None
            if path not in self.skipped:
                self.skipped.add(path)
                log.warning("skipping %s: cannot be decoded as an image (corrupt or truncated)", path)
        raise RuntimeError(f"no file under {self.root} decodes as an image ({len(self.files)} tried)")
