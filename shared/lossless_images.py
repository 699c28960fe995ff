"""Lossless compression of a shard's images: WebP pages, each a vertical strip of whole images.

A site's upload is almost all images. Its generator works below the data's resolution and its
samples are resized up, so neighbouring pixels predict each other well and a lossless image codec
stores them in well under their raw size. The codec is libwebp's, through Pillow; the paging, and
the choice of codec and effort, are fedkr's, by measurement (`benchmarks/lossless_shards.py`,
results in `benchmarks/results/lossless-shards-*.txt`). On 1,600 images of a BloodMNIST full-profile
run (28 x 28 RGB, 2 shared cores) lossless WebP pages at method 2 kept 0.445 of the raw bytes in
0.63 s, PNG pages 0.593, zlib on the raw bytes 0.931, one WebP per image 0.476; method 4 kept 0.444
in 2.1 s and method 6 0.433 in 37 s. On 800 BreastMNIST images (28 x 28 gray) method 2 kept 0.455.

Images are stacked top to bottom into pages of at most `images_per_page` images, each page one
lossless WebP (`PIL.Image.save(format="WEBP", lossless=True)`) of at most `PAGE_PIXELS` pixels:
WebP's sides are at most 16,383 px, and a page that small never meets Pillow's decompression-bomb
limit. Gray images (C = 1) travel as WebP's RGB with three equal channels; RGB (C = 3) as they are.
Other channel counts, and images larger than a page, are not compressible here (`compressible` says
so) and travel raw.

Decoding treats every page as hostile: each page must be a simple lossless WebP (RIFF, `VP8L`)
whose own header gives the width and height the receiver expects, read here before Pillow sees the
page, so a page cannot decode to more pixels than expected, and every failure raises
`LosslessImageError` (a `ValueError`) with a one-line reason.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, features

#: WebP's largest side, in pixels (libwebp's WEBP_MAX_DIMENSION).
MAX_SIDE = 16383
#: Pixels per page at most (2**24): pages stay far below Pillow's decompression-bomb limit (about 89 million).
PAGE_PIXELS = 2**24
#: libwebp's effort (0 fastest to 6 smallest): on BloodMNIST method 4 was 0.2% smaller than 2 at 3 times its time, 6 2.7% at 58 times.
METHOD = 2


class LosslessImageError(ValueError):
    """Images that cannot be compressed or restored; the message says why in one line."""


def images_per_page(height: int, width: int) -> int:
    """How many images of `height` x `width` px (each at least 1) one page holds; 0 where not even one fits."""
    return min(MAX_SIDE // height, PAGE_PIXELS // (height * width)) if width <= MAX_SIDE else 0


def compressible(shape: tuple[int, int, int]) -> bool:
    """Whether images of `shape` (H, W, C) can travel as WebP pages here: C is 1 or 3, a page holds at
    least one image, and this Pillow was built with WebP."""
    height, width, channels = shape
    return (channels in (1, 3) and height > 0 and width > 0 and images_per_page(height, width) > 0
            and features.check("webp"))


def encode_pages(images: np.ndarray) -> list[bytes]:
    """`images` uint8 (N, H, W, C) as lossless WebP pages, in order: page p holds images
    p * k to (p + 1) * k - 1 for k = `images_per_page(H, W)`, top to bottom.

    Raises `LosslessImageError` for another dtype or rank, a shape `compressible` refuses, or a page
    Pillow cannot write.
    """
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise LosslessImageError("images must be a uint8 array (N, H, W, C)")
    count, height, width, channels = images.shape
    if not compressible((height, width, channels)):
        raise LosslessImageError(f"images of {height}x{width}x{channels} cannot travel as WebP pages")
    per_page = images_per_page(height, width)
    pages = []
    for start in range(0, count, per_page):
        strip = np.ascontiguousarray(images[start : start + per_page]).reshape(-1, width, channels)
        if channels == 1:
            strip = np.repeat(strip, 3, axis=2)
        buffer = io.BytesIO()
        try:
            Image.fromarray(strip).save(buffer, format="WEBP", lossless=True, quality=100, method=METHOD)
        except Exception as exc:  # Pillow's OSError, MemoryError, ...: the caller refuses a ValueError cleanly
            raise LosslessImageError(f"WebP page {len(pages)} could not be written: {type(exc).__name__}") from None
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
    per_page = images_per_page(height, width)
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


def vp8l_size(page: bytes) -> tuple[int, int]:
    """(width, height) in px from the header of a simple lossless WebP file (RIFF container, one
    `VP8L` chunk; Google's "WebP Container Specification" and "Lossless Bitstream Specification").

    Raises `LosslessImageError` for anything else: another format, lossy or extended WebP, or a
    header that disagrees with the bytes present.
    """
    if len(page) < 25 or page[:4] != b"RIFF" or page[8:16] != b"WEBPVP8L" or page[20] != 0x2F:
        raise LosslessImageError("not a simple lossless WebP (RIFF/WEBP/VP8L)")
    if int.from_bytes(page[4:8], "little") + 8 != len(page):
        raise LosslessImageError("its RIFF size disagrees with its length")
    bits = int.from_bytes(page[21:25], "little")
    if bits >> 29:
        raise LosslessImageError(f"VP8L version {bits >> 29} is not 0")
    return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1


def _open_page(page: bytes, index: int, size: tuple[int, int]) -> np.ndarray:
    """One page's pixels, uint8 (height, width, 3), once its own header says lossless WebP of `size`
    (width, height); one RGB frame after decoding. Raises `LosslessImageError`."""
    try:
        header_size = vp8l_size(page)
    except LosslessImageError as exc:
        raise LosslessImageError(f"WebP page {index}: {exc}") from None
    if header_size != size:
        raise LosslessImageError(f"WebP page {index} is {header_size[0]}x{header_size[1]} px, expected {size[0]}x{size[1]}")
    try:
        image = Image.open(io.BytesIO(page), formats=["WEBP"])
        if image.size != size or image.mode != "RGB" or getattr(image, "n_frames", 1) != 1:
            raise LosslessImageError(f"WebP page {index} must be one RGB frame of {size[0]}x{size[1]} px, got "
                                     f"{image.mode} {image.size[0]}x{image.size[1]} with {getattr(image, 'n_frames', 1)} frames")
        image.load()
        pixels = np.asarray(image, dtype=np.uint8)
    except LosslessImageError:
        raise
    except Exception as exc:  # Pillow raises many kinds for a damaged or hostile page
        raise LosslessImageError(f"WebP page {index} does not decode: {type(exc).__name__}") from None
    if pixels.shape != (size[1], size[0], 3):
        raise LosslessImageError(f"WebP page {index} decoded to shape {pixels.shape}, expected {(size[1], size[0], 3)}")
    return pixels
