"""Lossless compression of a shard's images: WebP pages, each a vertical strip of whole images.

A site's upload is almost all images. Its generator works below the data's resolution and its
samples are resized up, so neighbouring pixels predict each other well and a lossless image codec
stores them in well under their raw size. The codec is libwebp's, through Pillow; the paging, and
the choice of codec and effort, are fedkr's, by measurement (`benchmarks/lossless_shards.py`,
results in `benchmarks/results/lossless-shards-*.txt`). On a BreastMNIST full-profile run's 800
distilled images (28 x 28 gray, 2 shared cores) lossless WebP pages at method 2 kept 0.455 of the
raw bytes in 0.37 s, PNG pages 0.544, zlib on the raw bytes 0.836, one WebP per image 0.512; WebP
at method 6 kept 0.449 in 15 s.

Images are stacked top to bottom into pages of at most `images_per_page` images, each page one
lossless WebP (`PIL.Image.save(format="WEBP", lossless=True)`): WebP's sides are at most 16,383 px.
Gray images (C = 1) travel as WebP's RGB with three equal channels; RGB (C = 3) as they are. Other
channel counts, and images taller or wider than a page, are not compressible here
(`compressible` says so) and travel raw.

Decoding treats every page as hostile: each page's format, mode, frame count and size are checked
from its header before its pixels are decoded, so a page cannot expand past the size the receiver
expects, and every failure raises `LosslessImageError` (a `ValueError`) with a one-line reason.
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
from PIL import Image, features

#: WebP's largest side, in pixels (libwebp's WEBP_MAX_DIMENSION).
MAX_SIDE = 16383
#: libwebp's effort (0 fastest to 6 smallest): method 2 was as small as 4 within 0.3% at half its time.
METHOD = 2


class LosslessImageError(ValueError):
    """Images that cannot be compressed or restored; the message says why in one line."""


def images_per_page(height: int) -> int:
    """How many images of `height` px one page holds (at least 1 where a page can hold one)."""
    return MAX_SIDE // height


def compressible(shape: tuple[int, int, int]) -> bool:
    """Whether images of `shape` (H, W, C) can travel as WebP pages here: C is 1 or 3, each side fits a
    page, and this Pillow was built with WebP."""
    height, width, channels = shape
    return channels in (1, 3) and 0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE and features.check("webp")


def encode_pages(images: np.ndarray) -> list[bytes]:
    """`images` uint8 (N, H, W, C) as lossless WebP pages, in order: page p holds images
    p * k to (p + 1) * k - 1 for k = `images_per_page(H)`, top to bottom.

    Raises `LosslessImageError` for another dtype or rank, or a shape `compressible` refuses.
    """
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise LosslessImageError("images must be a uint8 array (N, H, W, C)")
    count, height, width, channels = images.shape
    if not compressible((height, width, channels)):
        raise LosslessImageError(f"images of {height}x{width}x{channels} cannot travel as WebP pages")
    per_page = images_per_page(height)
    pages = []
    for start in range(0, count, per_page):
        strip = np.ascontiguousarray(images[start : start + per_page]).reshape(-1, width, channels)
        if channels == 1:
            strip = np.repeat(strip, 3, axis=2)
        buffer = io.BytesIO()
        Image.fromarray(strip).save(buffer, format="WEBP", lossless=True, quality=100, method=METHOD)
        pages.append(buffer.getvalue())
    return pages


def decode_pages(pages: list[bytes], count: int, shape: tuple[int, int, int]) -> np.ndarray:
    """The `count` images of `shape` (H, W, C) that `encode_pages` wrote into `pages`: uint8 (N, H, W, C).

    Raises `LosslessImageError` if the shape is not compressible, the number of pages or any page's
    format, mode, frames or size differs from what `count` and `shape` imply, or a page does not decode.
    """
    height, width, channels = shape
    if not compressible(shape):
        raise LosslessImageError(f"images of {height}x{width}x{channels} cannot travel as WebP pages")
    per_page = images_per_page(height)
    expected_pages = math.ceil(count / per_page)
    if len(pages) != expected_pages:
        raise LosslessImageError(f"{len(pages)} WebP pages for {count} images, expected {expected_pages}")
    out = np.empty((count, height, width, channels), dtype=np.uint8)
    for index, page in enumerate(pages):
        first = index * per_page
        held = min(per_page, count - first)
        strip = _open_page(page, index, (width, held * height))
        if channels == 1:
            if not (np.array_equal(strip[..., 0], strip[..., 1]) and np.array_equal(strip[..., 0], strip[..., 2])):
                raise LosslessImageError(f"WebP page {index} is not gray: its channels differ")
            strip = strip[..., :1]
        out[first : first + held] = strip.reshape(held, height, width, channels)
    return out


def _open_page(page: bytes, index: int, size: tuple[int, int]) -> np.ndarray:
    """One page's pixels, uint8 (height, width, 3), once its header says WebP, RGB, one frame, `size`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(page), formats=["WEBP"])
            if image.size != size:
                raise LosslessImageError(f"WebP page {index} is {image.size[0]}x{image.size[1]} px, expected {size[0]}x{size[1]}")
            if image.mode != "RGB" or getattr(image, "n_frames", 1) != 1:
                raise LosslessImageError(f"WebP page {index} must be one RGB frame, got {image.mode} with {getattr(image, 'n_frames', 1)} frames")
            image.load()
            pixels = np.asarray(image, dtype=np.uint8)
    except LosslessImageError:
        raise
    except Exception as exc:  # Pillow raises many kinds for a damaged or hostile page
        raise LosslessImageError(f"WebP page {index} does not decode: {type(exc).__name__}") from None
    if pixels.shape != (size[1], size[0], 3):
        raise LosslessImageError(f"WebP page {index} decoded to shape {pixels.shape}, expected {(size[1], size[0], 3)}")
    return pixels
