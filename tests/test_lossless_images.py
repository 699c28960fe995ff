"""Lossless WebP pages for a shard's images (shared/lossless_images.py): exact, smaller, and hostile-safe."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fedkr.shared import codec, lossless_images
from fedkr.shared.lossless_images import LosslessImageError, compressible, decode_pages, encode_pages, images_per_page
from fedkr.shared.shard import Shard, ShardSpec
from fedkr.v1 import messages_pb2 as pb


def smooth_images(n: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    """Images resized up from a quarter of their size, as a generator working below the data's size samples."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(n, size // 4, size // 4, channels), dtype=np.uint8)
    return np.repeat(np.repeat(small, 4, axis=1), 4, axis=2)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 30), height=st.integers(1, 20), width=st.integers(1, 20), channels=st.sampled_from([1, 3]),
       seed=st.integers(0, 2**32 - 1))
def test_pages_restore_every_pixel(n: int, height: int, width: int, channels: int, seed: int) -> None:
    images = np.random.default_rng(seed).integers(0, 256, size=(n, height, width, channels), dtype=np.uint8)
    back = decode_pages(encode_pages(images), n, (height, width, channels))
    assert back.dtype == np.uint8 and back.shape == images.shape and np.array_equal(back, images)


def test_many_images_span_several_pages_in_order() -> None:
    images = smooth_images(1300, 28, 3)
    per_page = images_per_page(28, 28)
    pages = encode_pages(images)
    assert per_page == 585 and len(pages) == 3
    assert np.array_equal(decode_pages(pages, 1300, (28, 28, 3)), images)


def test_smooth_images_shrink() -> None:
    images = smooth_images(400, 28, 3)
    assert sum(map(len, encode_pages(images))) < 0.5 * images.nbytes


def test_pages_stay_within_webp_sides_and_far_below_pillows_bomb_limit() -> None:
    assert lossless_images.MAX_SIDE == 16383 and lossless_images.PAGE_PIXELS < Image.MAX_IMAGE_PIXELS
    assert images_per_page(28, 28) == 585 and images_per_page(1, 16383) == 1024 and images_per_page(4096, 4096) == 1
    assert images_per_page(16384, 8) == 0 and images_per_page(8, 16384) == 0 and images_per_page(4097, 4097) == 0


def test_shapes_webp_cannot_carry_are_refused() -> None:
    assert not compressible((8, 8, 2)) and not compressible((8, 8, 4)) and not compressible((16384, 8, 1))
    assert not compressible((5000, 5000, 3)) and compressible((4096, 4096, 3))
    with pytest.raises(LosslessImageError, match="8x8x2 cannot travel as WebP pages"):
        encode_pages(np.zeros((2, 8, 8, 2), np.uint8))
    with pytest.raises(LosslessImageError, match="uint8 array"):
        encode_pages(np.zeros((2, 8, 8, 1), np.float32))


def test_hostile_pages_are_refused_before_decoding() -> None:
    images = smooth_images(5, 8, 1)
    page = encode_pages(images)[0]
    with pytest.raises(LosslessImageError, match="WebP page 0 is 8x40 px, expected 8x48"):
        decode_pages([page], 6, (8, 8, 1))
    with pytest.raises(LosslessImageError, match="2 WebP pages for 5 images, expected 1"):
        decode_pages([page, page], 5, (8, 8, 1))
    with pytest.raises(LosslessImageError, match="WebP page 0: its RIFF size disagrees with its length"):
        decode_pages([page[:-5]], 5, (8, 8, 1))
    with pytest.raises(LosslessImageError, match="WebP page 0 does not decode"):  # the header intact, the bitstream not
        decode_pages([page[:25] + bytes(len(page) - 25)], 5, (8, 8, 1))
    with pytest.raises(LosslessImageError, match=r"WebP page 0: not a simple lossless WebP \(RIFF/WEBP/VP8L\)"):
        decode_pages([b"not an image at all, not at all"], 5, (8, 8, 1))
    strip = np.zeros((40, 8, 3), np.uint8)
    for fmt, options in (("PNG", {}), ("WEBP", {"quality": 90})):
        other = io.BytesIO()
        Image.fromarray(strip).save(other, format=fmt, **options)  # another format, lossy WebP
        with pytest.raises(LosslessImageError, match="not a simple lossless WebP"):
            decode_pages([other.getvalue()], 5, (8, 8, 1))
    animated = io.BytesIO()
    Image.fromarray(strip).save(animated, format="WEBP", lossless=True, save_all=True,
                                append_images=[Image.fromarray(strip + 1)])
    assert animated.getvalue()[12:16] == b"VP8X"  # extended WebP
    with pytest.raises(LosslessImageError, match="not a simple lossless WebP"):
        decode_pages([animated.getvalue()], 5, (8, 8, 1))
    colour = io.BytesIO()
    Image.fromarray(np.dstack([np.zeros((40, 8), np.uint8)] * 2 + [np.full((40, 8), 9, np.uint8)])).save(
        colour, format="WEBP", lossless=True)
    with pytest.raises(LosslessImageError, match="WebP page 0 is not gray"):
        decode_pages([colour.getvalue()], 5, (8, 8, 1))
    rgba = io.BytesIO()
    Image.fromarray(np.zeros((40, 8, 4), np.uint8)).save(rgba, format="WEBP", lossless=True)
    with pytest.raises(LosslessImageError, match="one RGB frame of 8x40 px, got RGBA"):
        decode_pages([rgba.getvalue()], 5, (8, 8, 1))


def test_a_shard_uploads_its_images_as_webp_and_reads_back_exactly() -> None:
    """What a site uploads: the codec's bytes. Smooth 28 px RGB images go as WebP, in under half the raw bytes."""
    images = smooth_images(300, 28, 3, seed=1)
    soft = np.full((300, 4), 0.25, np.float32)
    shard = Shard("site-0", 1, images, soft, np.arange(300, dtype=np.int64) % 4, 300, {})
    data = codec.encode_shard(shard, run_id="run-1")
    assert len(data) < 0.5 * images.nbytes
    back = codec.decode_shard(data, site_id="site-0", run_id="run-1", round=1, spec=ShardSpec((28, 28, 3), 4))
    assert np.array_equal(back.images, images)


@pytest.mark.parametrize("shape", [(8, 8, 2), (8, 8, 3)])
def test_a_shard_webp_cannot_carry_or_would_not_shrink_travels_raw(shape: tuple[int, int, int]) -> None:
    """Two channels WebP cannot carry; noise it cannot compress (its pages would be larger than raw)."""
    images = np.random.default_rng(2).integers(0, 256, size=(30, *shape), dtype=np.uint8)
    shard = Shard("site-0", 1, images, np.full((30, 2), 0.5, np.float32), np.zeros(30, np.int64), 30, {})
    data = codec.encode_shard(shard, run_id="run-1")
    message = pb.SyntheticShard.FromString(pb.Envelope.FromString(data).body)
    assert message.images == images.tobytes() and not message.images_webp
    back = codec.decode_shard(data, site_id="site-0", run_id="run-1", round=1, spec=ShardSpec(shape, 2))
    assert np.array_equal(back.images, images)


def test_a_small_message_cannot_decode_to_more_than_a_raw_shard_may_hold() -> None:
    """Blank pages compress a thousandfold; the receiver refuses a count whose images would exceed its byte limit."""
    images = np.zeros((600, 28, 28, 3), np.uint8)
    shard = Shard("site-0", 1, images, np.full((600, 2), 0.5, np.float32), np.zeros(600, np.int64), 600, {})
    data = codec.encode_shard(shard, run_id="run-1")
    assert len(data) < 30_000
    spec = ShardSpec((28, 28, 3), 2)
    with pytest.raises(codec.CodecError, match="would take 1411200 bytes decoded, more than the limit 1000000"):
        codec.decode_shard(data, site_id="site-0", run_id="run-1", round=1, spec=spec, max_bytes=1_000_000)
    assert np.array_equal(codec.decode_shard(data, site_id="site-0", run_id="run-1", round=1, spec=spec).images, images)
