"""Flower records hold one message's bytes: exact round trips, and anything else refused with ValueError before parsing."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedkr import flower_records as rec
from fedkr.shared import codec
from fedkr.shared.shard import Shard, ShardSpec, SynthesisRequest
from helpers import synthetic_images


@pytest.mark.parametrize("data", [b"", b"\x00\x01\x02", bytes(range(256)) * 1000])
def test_a_record_holds_exactly_the_bytes_it_was_given(data):
    assert rec.from_record(rec.to_record(data)) == data


def test_codec_messages_travel_unchanged():
    soft = np.full((4, 2), 0.5, np.float32)
    shard = Shard("site-0", 2, synthetic_images(4), soft, np.array([0, 1, 0, 1]), 4, {"temperature": 4.0})
    data = codec.encode_shard(shard, run_id="run-1")
    back = codec.decode_shard(rec.from_record(rec.to_record(data)), site_id="site-0", run_id="run-1", round=2,
                              spec=ShardSpec((8, 8, 1), 2))
    assert back.images.tobytes() == shard.images.tobytes() and back.summary == {"temperature": 4.0}
    request = SynthesisRequest("run-1", 3, (1, 0, 2), 2.0)
    assert codec.decode_synthesis_request(rec.from_record(rec.to_record(codec.encode_synthesis_request(request)))) == request


def test_only_bytes_go_into_a_record():
    with pytest.raises(TypeError):
        rec.to_record(np.zeros(3, np.uint8))  # type: ignore[arg-type]


@pytest.mark.parametrize("content", [
    RecordDict(),
    RecordDict({"fedkr": ConfigRecord({"message": b"\x01"})}),
    RecordDict({"other": ArrayRecord({"message": Array(np.zeros(4, np.uint8))})}),
    RecordDict({"fedkr": ArrayRecord({"message": Array(np.zeros(4, np.float32))})}),
    RecordDict({"fedkr": ArrayRecord({"message": Array(np.zeros((2, 2), np.uint8))})}),
    RecordDict({"fedkr": ArrayRecord({"message": Array(dtype="uint8", shape=(4,), stype="numpy.ndarray",
                                                       data=b"PK\x03\x04 not an npy file")})}),
    RecordDict({"fedkr": ArrayRecord({"message": Array(dtype="uint8", shape=(2**50,), stype="numpy.ndarray", data=b"\x93NUMPY")})}),
])
def test_anything_but_a_flat_byte_array_is_refused(content):
    with pytest.raises(ValueError):
        rec.from_record(content)


def test_the_size_is_checked_before_parsing():
    with pytest.raises(ValueError, match="larger than 10 bytes"):
        rec.from_record(rec.to_record(bytes(11)), max_bytes=10)
