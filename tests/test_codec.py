"""One encoding per message: exact round trips, the envelope's version and kind, bindings, and hostile bytes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fedkr.shared import codec
from fedkr.shared.attack_report import measure_attack
from fedkr.shared.classifier import ClassifierConfig, TrainConfig
from fedkr.shared.dp import DPConfig
from fedkr.shared.generator import GeneratorConfig
from fedkr.shared.keys import new_sealing_key, new_signing_key
from fedkr.shared.reports import (AuditCandidate, AuditReport, FitPlan, FitReport, RelabelReply, RelabelRequest,
                                 check_relabel_reply)
from fedkr.shared.sealing import sign
from fedkr.shared.shard import ROW_SUM_TOLERANCE, Shard, ShardError, ShardSpec, SynthesisRequest, validate_shard
from fedkr.shared.shard_wire import ShardWireError, open_shard, seal_shard, ReplayGuard
from fedkr.v1 import messages_pb2 as pb
from helpers import synthetic_images

RUN = "run-1"
SPEC = ShardSpec((8, 8, 1), 3)
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_shard() -> Shard:
    soft = np.random.default_rng(0).dirichlet(np.ones(3), size=6).astype(np.float32)
    return Shard("site-0", 1, synthetic_images(6), soft, np.arange(6, dtype=np.int64) % 3, 6, {"steps": 5, "hflip": False})


def make_report() -> AuditReport:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 50)
    result = measure_attack("loss", "student", rng.normal(size=50), rng.normal(size=50), labels, labels, ("a", "b"))
    return AuditReport("site-0", (result,), 50, 50, {"members_checked": 50, "threshold": 0.25},
                       {"epsilon": 7.5, "parts": {"teacher": {"epsilon": 3.0}}}, {"seed": 0, "lira": False})


def make_candidate() -> AuditCandidate:
    weights = {"conv.weight": np.ones((8, 1, 3, 3), np.float32), "steps": np.array(7, dtype=np.int64)}
    return AuditCandidate(RUN, ClassifierConfig(1, 8, 8, 3, 8), weights, synthetic_images(4, seed=3), 3, True)


# --- round trips ----------------------------------------------------------------------------------


def test_fit_plan_and_report_round_trip():
    plan = FitPlan(RUN, TrainConfig(), GeneratorConfig(), teacher_channels=16, dp=DPConfig(8.0, None, 1.0))
    assert codec.decode_fit_plan(codec.encode_fit_plan(plan)) == plan
    assert codec.decode_fit_plan(codec.encode_fit_plan(FitPlan(RUN, TrainConfig(), GeneratorConfig()))).dp is None
    # a plan that asks for DP noise seeded from the run's seed (known to the coordinator) is refused
    message = codec.unwrap(codec.encode_fit_plan(plan), codec.KIND_FIT_PLAN, pb.FitPlan, codec.MAX_PLAN_BYTES)
    message.dp_json = '{"target_epsilon": 8.0, "repeatable": true}'
    with pytest.raises(codec.PlanRefused, match="refused fit plan: a plan may not set the DP setting .repeatable.") as caught:
        codec.decode_fit_plan(codec.wrap(codec.KIND_FIT_PLAN, message))
    assert caught.value.run_id == RUN
    # a DP setting this version does not know is refused too, in fedkr's words, without the plan's text
    message.dp_json = '{"target_epsilon": 8.0, "noise_multiplier_override<script>": 0.1}'
    with pytest.raises(codec.PlanRefused, match="refused fit plan: the plan sets a DP setting this site's fedkr does "
                                                "not know") as caught:
        codec.decode_fit_plan(codec.wrap(codec.KIND_FIT_PLAN, message))
    assert caught.value.run_id == RUN and "script" not in str(caught.value)
    assert caught.value.log_detail == "unknown DP settings 'noise_multiplier_override<script>'", \
        "the site's own log names the setting"
    # teacher guidance with a teacher trained without DP (dp models "generator") is refused by name, in fedkr's words
    message.dp_json = '{"target_epsilon": 8.0, "models": "generator"}'
    message.generator_json = json.dumps({**GeneratorConfig().to_dict(), "classifier_guidance": 1.0})
    with pytest.raises(codec.PlanRefused, match="refused fit plan: generator-teacher-guidance 1 needs a teacher trained with DP") as caught:
        codec.decode_fit_plan(codec.wrap(codec.KIND_FIT_PLAN, message))
    assert caught.value.run_id == RUN
    guided = FitPlan(RUN, TrainConfig(), GeneratorConfig(classifier_guidance=1.0), dp=DPConfig(8.0))
    assert codec.decode_fit_plan(codec.encode_fit_plan(guided)) == guided, "both models private: a plan like any other"
    report = FitReport("site-0", 40, 10, ("a", "b"), (8, 8, 1), (20, 20), 0.9, 0.1, 1.5, 2.5, {"steps": 5, "name": "x"},
                       {"epsilon": 7.5})
    assert codec.decode_fit_report(codec.encode_fit_report(report, run_id=RUN), run_id=RUN) == report
    with pytest.raises(codec.CodecError, match="fit report is for run 'run-1', expected 'run-2'"):
        codec.decode_fit_report(codec.encode_fit_report(report, run_id=RUN), run_id="run-2")


def test_synthesis_request_round_trip():
    request = SynthesisRequest(RUN, 3, (1, 0, 2), 2.0, 1.5)
    assert codec.decode_synthesis_request(codec.encode_synthesis_request(request)) == request


def test_shard_round_trip_is_exact_but_for_half_precision_soft_labels_and_bound_to_site_run_and_round():
    shard = make_shard()
    data = codec.encode_shard(shard, run_id=RUN)
    back = codec.decode_shard(data, site_id="site-0", run_id=RUN, round=1, spec=SPEC, expected_count=6)
    for name, array in shard.to_arrays().items():
        sent = array.astype(np.float16).astype(np.float32) if name == "soft_labels" else array
        assert back.to_arrays()[name].dtype == array.dtype and back.to_arrays()[name].tobytes() == sent.tobytes()
    assert back.summary == shard.summary and type(back.summary["hflip"]) is bool
    for kwargs, reason in (({"site_id": "site-1"}, "site id 'site-0', expected 'site-1'"),
                           ({"run_id": "run-2"}, "shard is for run 'run-1'"), ({"round": 2}, "shard is for round 1"),
                           ({"spec": ShardSpec((16, 16, 1), 3)}, "expected 16x16x1")):
        with pytest.raises(codec.CodecError, match=reason):
            codec.decode_shard(data, **{**dict(site_id="site-0", run_id=RUN, round=1, spec=SPEC), **kwargs})
    with pytest.raises(ShardError, match="were requested"):
        codec.decode_shard(data, site_id="site-0", run_id=RUN, round=1, spec=SPEC, expected_count=5)


def test_candidate_and_relabel_request_round_trip_for_their_site():
    candidate = make_candidate()
    data = codec.encode_candidate(candidate, site_id="site-0")
    back = codec.decode_candidate(data, site_id="site-0")
    assert (back.run_id, back.student_config, back.reference_models, back.lira) == (RUN, candidate.student_config, 3, True)
    assert all(back.student_weights[k].tobytes() == v.tobytes() for k, v in candidate.student_weights.items())
    assert back.released_images.tobytes() == candidate.released_images.tobytes()
    with pytest.raises(codec.CodecError, match="candidate is for site 'site-0', not 'site-1'"):
        codec.decode_candidate(data, site_id="site-1")
    request = RelabelRequest(RUN, synthetic_images(5, seed=4), 4.0)
    back_request = codec.decode_relabel_request(codec.encode_relabel_request(request, site_id="site-0"), site_id="site-0")
    assert back_request.images.tobytes() == request.images.tobytes() and back_request.temperature == 4.0
    with pytest.raises(codec.CodecError, match="not 'site-1'"):
        codec.decode_relabel_request(codec.encode_relabel_request(request, site_id="site-0"), site_id="site-1")


def test_relabel_reply_is_bound_to_the_request_bytes_it_answers():
    probs = np.full((5, 3), 1 / 3, np.float32)
    data = codec.encode_relabel_reply(RelabelReply("site-0", probs), run_id=RUN, request=b"request")
    back = codec.decode_relabel_reply(data, site_id="site-0", run_id=RUN, request=b"request", shape=(5, 3))
    assert back.site_id == "site-0" and back.probs.dtype == np.float32
    assert back.probs.tobytes() == probs.astype(np.float16).astype(np.float32).tobytes()
    with pytest.raises(codec.CodecError, match="another request"):
        codec.decode_relabel_reply(data, site_id="site-0", run_id=RUN, request=b"other", shape=(5, 3))
    with pytest.raises(codec.CodecError, match="another site or run"):
        codec.decode_relabel_reply(data, site_id="site-1", run_id=RUN, request=b"request", shape=(5, 3))
    with pytest.raises(codec.CodecError, match=r"holds 'float16' \[5, 3\] labels, expected \[6, 3\] \(float16, or float32 from an older site\)"):
        codec.decode_relabel_reply(data, site_id="site-0", run_id=RUN, request=b"request", shape=(6, 3))


def _relabel_reply_in(dtype: str) -> bytes:
    probs = np.full((5, 3), 1 / 3, dtype)
    return codec.wrap(codec.KIND_RELABEL_REPLY, pb.RelabelReply(site_id="site-0", run_id=RUN, request_sha256=codec.sha256(b"request"),
                                                                probs=codec.raw_array("probs", probs)))


def test_relabel_reply_from_an_older_site_in_float32_is_read_and_other_dtypes_are_refused():
    back = codec.decode_relabel_reply(_relabel_reply_in("float32"), site_id="site-0", run_id=RUN, request=b"request", shape=(5, 3))
    assert back.probs.dtype == np.float32 and back.probs.tobytes() == np.full((5, 3), 1 / 3, np.float32).tobytes()
    with pytest.raises(codec.CodecError, match=r"holds 'float64' \[5, 3\] labels"):
        codec.decode_relabel_reply(_relabel_reply_in("float64"), site_id="site-0", run_id=RUN, request=b"request", shape=(5, 3))


def _worst_rounding_row(num_classes: int = codec.MAX_CLASSES) -> np.ndarray:
    """A float32 probability row whose float16 rounding moves its sum as far as it can: every
    subnormal entry rounds up by almost 2**-25, every large one by almost 2**-11 of itself."""
    tiny, big = np.float32(2**-25 * (1 + 2**-9)), np.float32(2**-5 * (1 + 2**-11 + 2**-20))
    row = np.full(num_classes, tiny, np.float32)
    row[:31] = big
    row[31] = 1 - (31 * float(big) + (num_classes - 32) * float(tiny))
    return row


def test_half_precision_soft_labels_pass_every_readers_row_check_at_the_worst_rounding():
    row = _worst_rounding_row()
    assert abs(float(row.astype(np.float64).sum()) - 1) < 1e-6
    shifted = float(row.astype(codec.SOFT_LABEL_WIRE_DTYPE).astype(np.float64).sum()) - 1
    assert 7e-4 < shifted < 8e-4  # the bound the wire dtype's comment gives, nearly reached
    spec = ShardSpec((8, 8, 1), codec.MAX_CLASSES)
    shard = Shard("site-0", 1, synthetic_images(2, seed=3), np.stack([row, row]), np.array([0, 9_999]), 2, {"steps": 1})
    back = codec.decode_shard(codec.encode_shard(shard, run_id=RUN), site_id="site-0", run_id=RUN, round=1, spec=spec)
    assert back.hard_labels.tolist() == [0, 9_999] and back.soft_labels.dtype == np.float32  # uint16 classes past 256
    data = codec.encode_relabel_reply(RelabelReply("site-0", np.stack([row, row])), run_id=RUN, request=b"request")
    probs = codec.decode_relabel_reply(data, site_id="site-0", run_id=RUN, request=b"request", shape=(2, codec.MAX_CLASSES)).probs
    assert check_relabel_reply(probs, 2, codec.MAX_CLASSES) is probs


def test_a_row_that_rounding_would_push_past_the_readers_check_is_refused_by_its_writer():
    row = _worst_rounding_row()
    row[31] += np.float32(5e-4)  # still sums to 1 within 1e-3 in float32, but not once rounded
    assert abs(float(row.sum()) - 1) < 1e-3
    with pytest.raises(codec.CodecError, match="rows must be probabilities"):
        codec.encode_relabel_reply(RelabelReply("site-0", row[None]), run_id=RUN, request=b"request")
    shard = Shard("site-0", 1, synthetic_images(1, seed=3), row[None], np.array([0]), 1, {"steps": 1})
    with pytest.raises(ShardError, match="rows must sum to 1"):
        codec.encode_shard(shard, run_id=RUN)


def test_shards_and_relabel_replies_allow_the_same_row_sum_tolerance():
    for excess, accepted in ((0.9 * ROW_SUM_TOLERANCE, True), (1.1 * ROW_SUM_TOLERANCE, False)):
        rows = np.array([[0.5 + excess, 0.25, 0.25]] * 2, dtype=np.float32)
        shard = Shard("site-0", 1, synthetic_images(2, seed=3), rows, np.array([0, 1]), 2, {"steps": 1})
        outcomes = []
        for check in (lambda: validate_shard(shard, SPEC), lambda: check_relabel_reply(rows, 2, 3)):
            try:
                check()
                outcomes.append(True)
            except ValueError:
                outcomes.append(False)
        assert outcomes == [accepted, accepted], excess


def test_audit_report_is_protobuf_and_bound_to_the_candidate_bytes():
    report = make_report()
    data = codec.encode_audit_report(report, run_id=RUN, candidate=b"candidate")
    message = pb.AuditReport.FromString(pb.Envelope.FromString(data).body)
    assert message.results[0].attack == "loss" and len(message.results[0].roc_fpr) == len(report.results[0].roc["fpr"])
    assert codec.decode_audit_report(data, site_id="site-0", run_id=RUN, candidate=b"candidate") == report
    with pytest.raises(codec.CodecError, match="another candidate"):
        codec.decode_audit_report(data, site_id="site-0", run_id=RUN, candidate=b"older candidate")
    with pytest.raises(codec.CodecError, match="expected 'run-2'"):
        codec.decode_audit_report(data, site_id="site-0", run_id="run-2", candidate=b"candidate")


# --- the envelope: version and kind ---------------------------------------------------------------


def _with_version(data: bytes, version: int) -> bytes:
    envelope = pb.Envelope.FromString(data)
    envelope.version = version
    return envelope.SerializeToString()


@pytest.mark.parametrize("version", [2, 7, 2**32 - 1])
def test_a_message_of_another_version_is_refused_in_one_line(version):
    data = _with_version(codec.encode_synthesis_request(SynthesisRequest(RUN, 1, (1,), 1.0)), version)
    with pytest.raises(codec.VersionError, match=f"synthesis request is message version {version}; this fedkr reads version 1 only") as info:
        codec.decode_synthesis_request(data)
    assert "\n" not in str(info.value)
    shard = _with_version(codec.encode_shard(make_shard(), run_id=RUN), version)
    with pytest.raises(codec.VersionError, match=f"version {version}"):
        codec.decode_shard(shard, site_id="site-0", run_id=RUN, round=1, spec=SPEC)


def test_a_signed_and_sealed_message_of_another_version_is_refused():
    """Deployment signs the codec's bytes: a genuine signature over another version's envelope is still refused."""
    site_key, coordinator = new_signing_key(), new_sealing_key()
    good = seal_shard(make_shard(), run_id=RUN, signer=site_key, recipient=coordinator.public_key())
    assert open_shard(good, recipient_key=coordinator, site_keys={"site-0": site_key.public_key()}, expected_site="site-0",
                      run_id=RUN, round=1, spec=SPEC, replay=ReplayGuard()).site_id == "site-0"

    from fedkr.shared.keys import key_id
    from fedkr.shared.sealing import Header, open_sealed, seal, verify

    plain = verify(open_sealed(good, kind="shard", recipient_key=coordinator, max_bytes=2**26)[1], kind="shard",
                   key=site_key.public_key())
    payload = sign(_with_version(plain, 2), kind="shard", signer=site_key)
    blob = seal(payload, Header("shard", "site-0", RUN, 1, key_id(coordinator.public_key())), coordinator.public_key())
    with pytest.raises(ShardWireError, match="shard is message version 2; this fedkr reads version 1 only"):
        open_shard(blob, recipient_key=coordinator, site_keys={"site-0": site_key.public_key()}, expected_site="site-0",
                   run_id=RUN, round=1, spec=SPEC, replay=ReplayGuard())


def test_a_message_of_another_kind_is_refused():
    request = codec.encode_synthesis_request(SynthesisRequest(RUN, 1, (1,), 1.0))
    with pytest.raises(codec.CodecError, match="message holds 'synthesis_request', expected 'fit_plan'"):
        codec.decode_fit_plan(request)


def test_signed_or_sealed_bytes_never_read_as_plain():
    site_key, coordinator = new_signing_key(), new_sealing_key()
    plain = codec.encode_shard(make_shard(), run_id=RUN)
    signed = sign(plain, kind="shard", signer=site_key)
    sealed = seal_shard(make_shard(), run_id=RUN, signer=site_key, recipient=coordinator.public_key())
    assert codec.is_plain(plain) and not codec.is_plain(signed) and not codec.is_plain(sealed)
    for blob in (signed, sealed):
        with pytest.raises(codec.CodecError, match="not a plain fedkr message"):
            codec.decode_shard(blob, site_id="site-0", run_id=RUN, round=1, spec=SPEC)


def test_the_size_is_checked_before_parsing():
    data = codec.encode_shard(make_shard(), run_id=RUN)
    with pytest.raises(codec.CodecError, match=f"shard is {len(data)} bytes, more than the limit 100"):
        codec.decode_shard(data, site_id="site-0", run_id=RUN, round=1, spec=SPEC, max_bytes=100)
    with pytest.raises(codec.CodecError, match="more than the limit 10"):
        codec.decode_fit_plan(b"\xff" * 11, max_bytes=10)
    probs = codec.encode_relabel_reply(RelabelReply("site-0", np.full((2, 3), 1 / 3, np.float32)), run_id=RUN, request=b"")
    huge = _pad(probs, codec.REPLY_OVERHEAD + 4 * 6 + 1)
    with pytest.raises(codec.CodecError, match="more than the limit"):
        codec.decode_relabel_reply(huge, site_id="site-0", run_id=RUN, request=b"", shape=(2, 3))


def _pad(data: bytes, size: int) -> bytes:
    envelope = pb.Envelope.FromString(data)
    envelope.body += b"\x00" * max(0, size - len(data))
    return envelope.SerializeToString()


# --- hostile bytes --------------------------------------------------------------------------------

DECODERS = [
    lambda b: codec.decode_fit_plan(b),
    lambda b: codec.decode_fit_report(b, run_id=RUN),
    lambda b: codec.decode_synthesis_request(b),
    lambda b: codec.decode_shard(b, site_id="site-0", run_id=RUN, round=1, spec=SPEC),
    lambda b: codec.decode_candidate(b, site_id="site-0"),
    lambda b: codec.decode_relabel_request(b, site_id="site-0"),
    lambda b: codec.decode_relabel_reply(b, site_id="site-0", run_id=RUN, request=b"r", shape=(5, 3)),
    lambda b: codec.decode_audit_report(b, site_id="site-0", run_id=RUN, candidate=b"c"),
]
GOOD = [
    codec.encode_fit_plan(FitPlan(RUN, TrainConfig(), GeneratorConfig(), dp=DPConfig(8.0, None, 1.0))),
    codec.encode_fit_report(FitReport("site-0", 40, 10, ("a", "b"), (8, 8, 1), (20, 20), 0.9, 0.1, 1.5, 2.5), run_id=RUN),
    codec.encode_synthesis_request(SynthesisRequest(RUN, 1, (1, 2, 3), 2.0)),
    codec.encode_shard(make_shard(), run_id=RUN),
    codec.encode_candidate(make_candidate(), site_id="site-0"),
    codec.encode_relabel_request(RelabelRequest(RUN, synthetic_images(5), 4.0), site_id="site-0"),
    codec.encode_relabel_reply(RelabelReply("site-0", np.full((5, 3), 1 / 3, np.float32)), run_id=RUN, request=b"r"),
    codec.encode_audit_report(make_report(), run_id=RUN, candidate=b"c"),
]


def _clean(decode, data: bytes) -> None:
    try:
        decode(data)
    except ValueError as exc:  # CodecError or ShardError: one line
        assert "\n" not in str(exc) and str(exc)


@pytest.mark.parametrize("index", range(len(DECODERS)))
def test_each_good_message_decodes(index):
    DECODERS[index](GOOD[index])


@FUZZ
@given(st.binary(max_size=1024), st.integers(0, len(DECODERS) - 1))
def test_random_bytes_are_rejected_cleanly(data, index):
    _clean(DECODERS[index], data)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), min_size=1, max_size=8), st.integers(0, len(DECODERS) - 1),
       st.binary(max_size=32))
def test_mutated_messages_are_rejected_cleanly(edits, index, tail):
    envelope = pb.Envelope.FromString(GOOD[index])
    body = bytearray(envelope.body)
    for position, value in edits:
        body[position % len(body)] = value
    envelope.body = bytes(body) + tail
    _clean(DECODERS[index], envelope.SerializeToString())
    _clean(DECODERS[index], GOOD[index][: edits[0][0] % len(GOOD[index])])
