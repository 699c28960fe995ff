"""Flower record encodings: round trips, and malformed content rejected with ValueError only."""

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedkr.shared import flower_records as rec
from fedkr.shared.shard import Shard, SynthesisRequest
from helpers import synthetic_images


def test_shard_round_trip():
    soft = np.full((4, 2), 0.5, np.float32)
    shard = Shard("site-0", 2, synthetic_images(4), soft, np.array([0, 1, 0, 1]), 4, {"temperature": 4.0})
    back = rec.decode_shard(rec.encode_shard(shard))
    assert (back.images == shard.images).all() and back.images.dtype == np.uint8
    assert (back.soft_labels == soft).all() and back.summary == {"temperature": 4.0}


def test_request_round_trip():
    request = SynthesisRequest("run-1", 3, (1, 0, 2), 2.0)
    assert rec.decode_request(rec.encode_request(request)) == request


@pytest.mark.parametrize(
    "decode",
    [rec.decode_shard, rec.decode_request, rec.decode_fit_plan, rec.decode_fit_report,
     rec.decode_candidate, rec.decode_audit_report],
)
@pytest.mark.parametrize(
    "content",
    [
        RecordDict(),
        RecordDict({"shard_meta": ConfigRecord({"json": "{not json"})}),
        RecordDict({k: ConfigRecord({"json": "{}"}) for k in ("shard_meta", "request", "plan", "fit", "candidate", "audit")}),
        RecordDict({k: ConfigRecord({"json": "[1, 2]"}) for k in ("shard_meta", "request", "plan", "fit", "candidate", "audit")}),
        RecordDict({"shard": ArrayRecord(), "shard_meta": ConfigRecord({"json": '{"site_id": "x", "round": 1, "declared_count": 1}'})}),
    ],
)
def test_malformed_content_raises_value_error(decode, content):
    with pytest.raises(ValueError):
        decode(content)
