"""PNG reading shared by the loaders: sizes from headers, RGB pixels on demand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vpsearch.data.base import DataError


def _reason(e: Exception, path: Path) -> str:
    text = str(e).replace(f"'{path}'", "").replace(str(path), "").strip(" :")
    return f"{type(e).__name__}: {text[:80]}" if text else type(e).__name__


def read_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG header, without decoding pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"{path}: corrupt or unreadable PNG ({_reason(e, path)})") from None


def read_rgb(path: Path, hw: tuple[int, int], resample: int = Image.BILINEAR) -> np.ndarray:
    """(H, W, 3) uint8, resized to hw = (H, W) only when the file differs."""
    try:
        with Image.open(path) as im:
            im = _to_8bit(im).convert("RGB")
            if im.size != (hw[1], hw[0]):
                im = im.resize((hw[1], hw[0]), resample)
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: corrupt or unreadable PNG ({_reason(e, path)})") from None


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit grayscale (mode I;16 or I) scaled to 8 bits: convert("RGB") would clip it at 255.
    16-bit colour PNGs already open as 8-bit RGB/RGBA."""
    if im.mode.startswith("I;16") or im.mode == "I":
        values = np.asarray(im, dtype=np.float64)
        return Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), "L")
    return im


def check_same_size(paths: list[Path]) -> tuple[int, int]:
    """All images share one size (read from headers); the odd one out is named."""
    first = read_size(paths[0])
    for p in paths[1:]:
        size = read_size(p)
        if size != first:
            raise DataError(f"{p}: frame size {size[0]}x{size[1]} differs from {first[0]}x{first[1]} of {paths[0]}")
    return first
