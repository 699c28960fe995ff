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


def test_candidate_round_trip_carries_the_released_images():
    from fedkr.shared.classifier import ClassifierConfig
    from fedkr.shared.reports import AuditCandidate

    images = synthetic_images(5)
    candidate = AuditCandidate("run-1", ClassifierConfig(1, 8, 8, 3, 8), {"w": np.ones((2, 2), np.float32)}, images, 3, True)
    back = rec.decode_candidate(rec.encode_candidate(candidate))
    assert (back.released_images == images).all() and back.released_images.dtype == np.uint8
    assert (back.reference_models, back.lira, back.student_config) == (3, True, candidate.student_config)


def test_audit_report_and_dp_fit_plan_round_trip():
    from fedkr.shared.attack_report import measure_attack
    from fedkr.shared.classifier import TrainConfig
    from fedkr.shared.dp import DPConfig
    from fedkr.shared.generator import GeneratorConfig
    from fedkr.shared.reports import AuditReport, FitPlan

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 50)
    result = measure_attack("loss", "student", rng.normal(size=50), rng.normal(size=50), labels, labels, ("a", "b"))
    report = AuditReport("site-0", (result,), 50, 50, {"members_checked": 50}, {"epsilon": 7.5}, {"seed": 0})
    assert rec.decode_audit_report(rec.encode_audit_report(report)) == report
    plan = FitPlan("run-1", TrainConfig(), GeneratorConfig(), dp=DPConfig(8.0, None, 1.0))
    assert rec.decode_fit_plan(rec.encode_fit_plan(plan)) == plan


def test_sealed_blob_with_a_hostile_array_is_rejected_before_parsing():
    import numpy as np
    from flwr.app import Array, ArrayRecord, RecordDict

    from fedkr.shared import flower_records as rec

    good = rec.encode_shard(b"\x01\x02\x03")
    assert rec.decode_shard(good) == b"\x01\x02\x03"
    floats = RecordDict({"sealed_shard": ArrayRecord({"blob": Array(np.zeros(4, dtype=np.float32))})})
    garbage = Array(dtype="uint8", shape=(4,), stype="numpy.ndarray", data=b"PK\x03\x04 not an npy file")
    huge = Array(dtype="uint8", shape=(2**50,), stype="numpy.ndarray", data=b"\x93NUMPY")
    for content in (floats, RecordDict({"sealed_shard": ArrayRecord({"blob": garbage})}),
                    RecordDict({"sealed_shard": ArrayRecord({"blob": huge})})):
        with pytest.raises(ValueError):
            rec.decode_shard(content)
