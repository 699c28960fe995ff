"""Image files of any mode and size into one uint8 set at the working size, by one documented rule.

A file is read into `Decoded` pixels (`read_image`: Pillow for image files, pydicom for DICOM),
then a whole set is brought to one form (`to_uint8_set`):

- **values**: 8-bit images are used as they are. High-bit-depth integer images (Pillow modes
  I;16 and I) are scaled by the bit depth their values use across the set: the smallest of 8, 10,
  12, 14 or 16 bits that holds the set's largest value maps to 0..255 (so 12-bit scanner values
  0..4095 fill the range, and nothing is clipped). Floating-point images (mode F, or integers
  outside 0..65535) map the set's smallest to largest value to 0..255. DICOM pixels arrive
  already windowed to 0..255 (`shared/dicom.py`).
- **channels**: alpha is dropped; palette, CMYK and other colour modes become RGB. An RGB image
  whose three channels are equal everywhere is gray. A set is gray (1 channel) when every image
  is; otherwise every image is RGB, gray ones repeated over the three channels.
- **size**: a set whose images share one size no larger than the working size is used as it is;
  otherwise every image is resized to the working size, square (as MedMNIST resizes its sources):
  area-averaged when shrinking, bilinear when enlarging (Pillow's BOX and BILINEAR filters).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .image_set import DataError

log = logging.getLogger(__name__)

#: Suffixes Pillow reads as images (compared in lower case).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
#: Bit depths a high-bit-depth image may have been written with, smallest first.
BIT_DEPTHS = (8, 10, 12, 14, 16)


class SkippedFile(Exception):
    """A file that holds no single 2D image (a DICOM report, a multi-frame file); `kind` names which."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class UnreadableFile(Exception):
    """A truncated or corrupt file; the message says what the decoder reported."""


@dataclass(frozen=True)
class Decoded:
    """One image as read: `pixels` (H, W) for gray or (H, W, 3) for colour.

    `depth` is "8" (uint8 pixels, 0..255), "int" (float32 holding non-negative integers of a high
    bit depth) or "float" (float32, any real values); `low` and `high` are the smallest and
    largest value before any resizing.
    """

    pixels: np.ndarray
    depth: str
    low: float
    high: float


def resize_pixels(pixels: np.ndarray, size: int) -> np.ndarray:
    """(H, W) or (H, W, 3) pixels, uint8 or float32, resized to (size, size) with Pillow (BOX to shrink, else BILINEAR)."""
    from PIL import Image

    height, width = pixels.shape[:2]
    if (height, width) == (size, size):
        return pixels
    resample = Image.Resampling.BOX if size <= min(height, width) else Image.Resampling.BILINEAR
    if pixels.dtype == np.uint8:
        return np.asarray(Image.fromarray(pixels).resize((size, size), resample))
    if pixels.ndim == 2:
        return np.asarray(Image.fromarray(pixels.astype(np.float32), mode="F").resize((size, size), resample))
    return np.stack([resize_pixels(pixels[..., c], size) for c in range(pixels.shape[2])], axis=-1)


def fit_array(images: np.ndarray, size: int, where: str) -> np.ndarray:
    """uint8 (N, H, W, C) resized to (N, size, size, C) when a side exceeds `size`; as it is otherwise."""
    n, height, width, channels = images.shape
    if max(height, width) <= size:
        return images
    log.info("%s: %d images of %dx%d px resized to the working size %dx%d", where, n, height, width, size, size)
    out = np.empty((n, size, size, channels), dtype=np.uint8)
    for i in range(n):
        out[i] = resize_pixels(images[i] if channels == 3 else images[i, ..., 0], size).reshape(size, size, channels)
    return out


def gray_or_rgb(rgb: np.ndarray) -> np.ndarray:
    """An RGB image whose three channels are equal is gray: (H, W); otherwise the (H, W, 3) image itself."""
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return np.ascontiguousarray(rgb[..., 0])
    return rgb


def _read_pil(path: Path) -> Decoded:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if getattr(img, "n_frames", 1) > 1:
                raise SkippedFile("multi-frame")
            img.load()
            mode = img.mode
            if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
                raw = np.asarray(img)
                low, high = float(raw.min()), float(raw.max())
                integer = mode != "F" and low >= 0 and high <= 65535
                return Decoded(raw.astype(np.float32), "int" if integer else "float", low, high)
            if mode in ("1", "L", "LA", "La"):
                pixels = np.asarray(img.convert("L"), dtype=np.uint8)
            else:
                rgba = img.convert("RGBA") if mode in ("P", "PA") else img
                pixels = gray_or_rgb(np.asarray(rgba.convert("RGB"), dtype=np.uint8))
    except SkippedFile:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise UnreadableFile(f"{exc.__class__.__name__}: {exc}") from None
    return Decoded(pixels, "8", float(pixels.min()), float(pixels.max()))


def read_image(path: Path, size: int) -> Decoded:
    """One file's pixels, shrunk to (size, size) at once when a side is larger (so large images cost little memory).

    DICOM files (by suffix or by the "DICM" marker) are read with pydicom, others with Pillow.
    Raises `SkippedFile` for a file with no single 2D image, `UnreadableFile` for a truncated or
    corrupt one, and `DataError` for a DICOM file whose compression no installed decoder reads.
    """
    from .dicom import is_dicom, read_dicom

    decoded = read_dicom(path) if is_dicom(path) else _read_pil(path)
    if max(decoded.pixels.shape[:2]) > size:
        decoded = Decoded(resize_pixels(decoded.pixels, size), decoded.depth, decoded.low, decoded.high)
    return decoded


def _bit_depth(high: float) -> int:
    return next((bits for bits in BIT_DEPTHS if high < 2**bits), BIT_DEPTHS[-1])


def to_uint8_set(decoded: list[Decoded], size: int, where: str) -> np.ndarray:
    """A list of `Decoded` images as one uint8 (N, H, W, C) array, by the rule in this module's docstring.

    Raises:
        DataError: for an empty list.
    """
    if not decoded:
        raise DataError(f"{where}: no images")
    scaled: list[np.ndarray] = []
    ints = [d.high for d in decoded if d.depth == "int"]
    floats = [d for d in decoded if d.depth == "float"]
    bits = _bit_depth(max(ints)) if ints else 0
    if ints:
        log.info("%s: %d high-bit-depth images, largest value %d: scaled as %d-bit (0..%d to 0..255)",
                 where, len(ints), int(max(ints)), bits, 2**bits - 1)
    low = min((d.low for d in floats), default=0.0)
    high = max((d.high for d in floats), default=1.0)
    for d in decoded:
        if d.depth == "8":
            scaled.append(d.pixels)
            continue
        span = (2**bits - 1) if d.depth == "int" else (high - low)
        zero = 0.0 if d.depth == "int" else low
        values = (d.pixels - zero) * (255.0 / span) if span > 0 else np.zeros_like(d.pixels)
        scaled.append(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    shapes = {p.shape[:2] for p in scaled}
    if len(shapes) > 1 or max(next(iter(shapes))) > size:
        log.info("%s: images of %d sizes resized to the working size %dx%d", where, len(shapes), size, size)
        scaled = [resize_pixels(p, size) for p in scaled]
    colour = any(p.ndim == 3 for p in scaled)
    if colour:
        gray = sum(p.ndim == 2 for p in scaled)
        if gray:
            log.info("%s: %d gray images among colour ones: repeated over three channels", where, gray)
        return np.stack([p if p.ndim == 3 else np.repeat(p[..., None], 3, axis=-1) for p in scaled])
    return np.stack(scaled)[..., None]
