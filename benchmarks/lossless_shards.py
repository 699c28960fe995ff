"""How small a shard's images get under lossless codecs, and what each costs: the choice behind
`shared/lossless_images.py`.

Reads synthetic images a run produced (a release's `distilled.npz`, whose images are the sites'
shard images, or any .npz with an `images` array uint8 (N, H, W, C)) and, for each codec, prints
the share of the raw bytes it keeps and its encode and decode seconds. Every codec is checked to
restore every pixel. Run alone: timings on 2 shared cores mean little.

    python benchmarks/lossless_shards.py runs/RUN/release/distilled.npz > results.txt
"""

from __future__ import annotations

import argparse
import io
import time
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image

from fedkr.shared import lossless_images

#: Restores the images a codec encoded.
Decode = Callable[[], np.ndarray]


def _png_pages(images: np.ndarray) -> tuple[list[bytes], Decode]:
    per_page = lossless_images.images_per_page(images.shape[1], images.shape[2])
    channels = images.shape[3]
    pages = []
    for start in range(0, len(images), per_page):
        strip = images[start : start + per_page].reshape(-1, images.shape[2], channels)
        buffer = io.BytesIO()
        Image.fromarray(strip[..., 0] if channels == 1 else strip).save(buffer, format="PNG", compress_level=9)
        pages.append(buffer.getvalue())

    def decode() -> np.ndarray:
        return np.concatenate([np.asarray(Image.open(io.BytesIO(p))).reshape(-1, *images.shape[1:]) for p in pages])
    return pages, decode


def _webp_pages(images: np.ndarray, method: int) -> tuple[list[bytes], Decode]:
    original = lossless_images.METHOD
    lossless_images.METHOD = method
    try:
        pages = lossless_images.encode_pages(images)
    finally:
        lossless_images.METHOD = original
    return pages, lambda: lossless_images.decode_pages(pages, len(images), images.shape[1:])


def _webp_each(images: np.ndarray) -> tuple[list[bytes], Decode]:
    pages = [lossless_images.encode_pages(image[None])[0] for image in images]
    return pages, lambda: np.concatenate([lossless_images.decode_pages([p], 1, images.shape[1:]) for p in pages])


def _zlib(images: np.ndarray) -> tuple[list[bytes], Decode]:
    blob = zlib.compress(images.tobytes(), 9)
    return [blob], lambda: np.frombuffer(zlib.decompress(blob), np.uint8).reshape(images.shape)


CODECS = {
    "zlib level 9, raw bytes": _zlib,
    "PNG level 9, pages": _png_pages,
    "WebP lossless method 0, pages": lambda a: _webp_pages(a, 0),
    "WebP lossless method 2, pages (fedkr)": lambda a: _webp_pages(a, 2),
    "WebP lossless method 4, pages": lambda a: _webp_pages(a, 4),
    "WebP lossless method 6, pages": lambda a: _webp_pages(a, 6),
    "WebP lossless method 2, one per image": _webp_each,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("npz", help="an .npz with an `images` array, uint8 (N, H, W, C)")
    parser.add_argument("--limit", type=int, default=1600, help="images to use (the first ones); 0 for all")
    args = parser.parse_args()
    images = np.load(args.npz)["images"]
    if args.limit:
        images = images[: args.limit]
    raw = images.nbytes
    print(f"{args.npz}: {images.shape[0]} images of {'x'.join(map(str, images.shape[1:]))}, {raw} raw bytes")
    print("| codec | share of raw bytes | encode s | decode s |")
    print("|---|---|---|---|")
    for name, codec in CODECS.items():
        started = time.perf_counter()
        pages, decode = codec(images)
        encoded = time.perf_counter() - started
        started = time.perf_counter()
        back = decode()
        decoded = time.perf_counter() - started
        if not np.array_equal(back, images):
            raise SystemExit(f"{name} did not restore the images exactly")
        print(f"| {name} | {sum(map(len, pages)) / raw:.3f} | {encoded:.2f} | {decoded:.2f} |", flush=True)


if __name__ == "__main__":
    main()
