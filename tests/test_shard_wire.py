"""Sealed shards and audit candidates: round trips, every rejection with its reason, and hostile blobs."""

from __future__ import annotations

import dataclasses

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fedkr.shared import codec
from fedkr.shared.classifier import ClassifierConfig
from fedkr.shared.keys import key_id, new_sealing_key, new_signing_key
from fedkr.shared.lossless_images import encode_pages
from fedkr.shared.reports import AuditCandidate, RelabelRequest
from fedkr.shared.sealing import Header, SealError, open_sealed, seal, sign, verify
from fedkr.shared.shard import Shard, ShardSpec
from fedkr.shared.shard_wire import (
    ReplayGuard,
    ShardWireError,
    open_candidate,
    open_relabel,
    open_relabel_reply,
    open_shard,
    seal_candidate,
    seal_relabel,
    sign_relabel_reply,
    seal_shard,
)
from fedkr.v1 import messages_pb2 as pb

from helpers import synthetic_images

SPEC = ShardSpec(image_shape=(8, 8, 1), num_classes=3)
RUN = "run-1"
COORD_SEAL = new_sealing_key()
COORD_SIGN = new_signing_key()
SITE_SIGN = {f"site-{i}": new_signing_key() for i in range(2)}
SITE_SEAL = {f"site-{i}": new_sealing_key() for i in range(2)}
SITE_KEYS = {site: key.public_key() for site, key in SITE_SIGN.items()}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_shard(n: int = 6, site: str = "site-0", round: int = 1, seed: int = 0) -> Shard:
    soft = np.random.default_rng(seed).dirichlet(np.ones(3), size=n).astype(np.float32)
    summary = {"steps": 250, "temperature": 1.5, "generator": "dcgan", "hflip": False}
    return Shard(site, round, synthetic_images(n, seed=seed), soft, np.arange(n, dtype=np.int64) % 3, n, summary)


def sealed_shard(shard: Shard | None = None, signer: str | None = None, recipient=None) -> bytes:
    shard = make_shard() if shard is None else shard
    return seal_shard(shard, run_id=RUN, signer=SITE_SIGN[signer or shard.site_id],
                      recipient=(recipient or COORD_SEAL).public_key())


def open_(blob: bytes, **overrides) -> Shard:
    kwargs = dict(recipient_key=COORD_SEAL, site_keys=SITE_KEYS, expected_site="site-0", run_id=RUN, round=1,
                  spec=SPEC, replay=ReplayGuard())
    kwargs.update(overrides)
    return open_shard(blob, **kwargs)


def plaintext_of(blob: bytes, kind: str = "shard", key=COORD_SEAL) -> bytes:
    return open_sealed(blob, kind=kind, recipient_key=key, max_bytes=2**26)[1]


def signed_body(blob: bytes, kind: str = "shard", key=COORD_SEAL) -> bytes:
    """The message bytes a site or the coordinator signed: the codec's envelope."""
    return pb.SignedPayload.FromString(plaintext_of(blob, kind, key)).body


def body_of(blob: bytes) -> pb.SyntheticShard:
    return pb.SyntheticShard.FromString(pb.Envelope.FromString(signed_body(blob)).body)


def forge(body: bytes | pb.SyntheticShard, *, signer: str = "site-0", sender: str = "site-0", run_id: str = RUN,
          round: int = 1, kind: str = "shard", recipient=COORD_SEAL, signing_key=None, version: int = codec.WIRE_VERSION) -> bytes:
    """A correctly signed and sealed blob around any body, in an envelope of `version`: gets past the crypto to the decoder."""
    raw = body if isinstance(body, bytes) else body.SerializeToString()
    raw = pb.Envelope(version=version, kind=kind, body=raw).SerializeToString()
    payload = sign(raw, kind=kind, signer=signing_key or SITE_SIGN[signer])
    return seal(payload, Header(kind, sender, run_id, round, key_id(recipient.public_key())), recipient.public_key())


def make_candidate(n: int = 4) -> AuditCandidate:
    rng = np.random.default_rng(1)
    weights = {"conv.weight": rng.normal(size=(8, 1, 3, 3)).astype(np.float32),
               "fc.bias": rng.normal(size=(3,)).astype(np.float64), "steps": np.array(7, dtype=np.int64)}
    return AuditCandidate(RUN, ClassifierConfig(1, 8, 8, 3, 8), weights, synthetic_images(n, seed=3), 3, True)


def sealed_candidate(site: str = "site-0", signer=COORD_SIGN) -> bytes:
    return seal_candidate(make_candidate(), site_id=site, signer=signer, recipient=SITE_SEAL[site].public_key())


def open_c(blob: bytes, **overrides) -> AuditCandidate:
    kwargs = dict(recipient_key=SITE_SEAL["site-0"], coordinator_key=COORD_SIGN.public_key(), site_id="site-0")
    kwargs.update(overrides)
    return open_candidate(blob, **kwargs)


def candidate_body_of(blob: bytes) -> pb.AuditCandidate:
    return pb.AuditCandidate.FromString(pb.Envelope.FromString(signed_body(blob, "audit_candidate", SITE_SEAL["site-0"])).body)


def forge_candidate(body: pb.AuditCandidate | bytes, *, sender: str = "coordinator", kind: str = "audit_candidate",
                    version: int = codec.WIRE_VERSION) -> bytes:
    return forge(body, sender=sender, kind=kind, round=0, recipient=SITE_SEAL["site-0"], signing_key=COORD_SIGN, version=version)


SHARD_BLOB = sealed_shard()
CANDIDATE_BLOB = sealed_candidate()


# --- round trips ----------------------------------------------------------------------------------


def test_shard_round_trip_is_bit_identical_but_for_half_precision_soft_labels():
    shard = make_shard()
    back = open_(sealed_shard(shard), expected_count=6)
    for name, array in shard.to_arrays().items():
        got = back.to_arrays()[name]
        sent = array.astype(np.float16).astype(np.float32) if name == "soft_labels" else array
        assert got.dtype == array.dtype and got.shape == array.shape and got.tobytes() == sent.tobytes(), name
        assert got.flags.writeable
    assert (back.site_id, back.round, back.declared_count) == ("site-0", 1, 6)
    assert back.summary == shard.summary and type(back.summary["hflip"]) is bool and type(back.summary["steps"]) is int


def test_candidate_round_trip_is_bit_identical():
    candidate = make_candidate()
    back = open_c(sealed_candidate())
    assert (back.run_id, back.student_config, back.reference_models, back.lira) == (
        RUN, candidate.student_config, 3, True)
    assert list(back.student_weights) == list(candidate.student_weights)
    for name, array in candidate.student_weights.items():
        got = back.student_weights[name]
        assert got.dtype == array.dtype and got.shape == array.shape and got.tobytes() == array.tobytes(), name
    assert back.released_images.dtype == np.uint8
    assert back.released_images.tobytes() == candidate.released_images.tobytes()


def test_ciphertext_holds_no_run_of_the_image_bytes():
    shard = make_shard()
    pixels = shard.images.tobytes()
    assert not any(pixels[i:i + 64] in SHARD_BLOB for i in range(len(pixels) - 63))
    released = make_candidate().released_images.tobytes()
    assert not any(released[i:i + 64] in CANDIDATE_BLOB for i in range(len(released) - 63))


def test_sealed_webp_pages_are_not_readable_in_the_blob():
    smooth = dataclasses.replace(make_shard(), images=np.repeat(make_shard().images[:, :1], 8, axis=1))
    blob = sealed_shard(smooth)
    page = encode_pages(smooth.images)[0]
    assert b"WEBPVP8L" not in blob and not any(page[i:i + 32] in blob for i in range(len(page) - 31))
    assert np.array_equal(open_(blob).images, smooth.images)


def test_each_seal_is_fresh():
    assert sealed_shard() != sealed_shard()
    assert body_of(sealed_shard()).nonce != body_of(sealed_shard()).nonce


# --- shard rejections -----------------------------------------------------------------------------


def test_unknown_site():
    with pytest.raises(ShardWireError, match="unknown site 'site-9'"):
        open_(SHARD_BLOB, expected_site="site-9")


def test_another_sites_shard_is_not_the_expected_sites():
    blob = sealed_shard(make_shard(site="site-1"))
    with pytest.raises(ShardWireError, match="shard sender 'site-1', expected 'site-0'"):
        open_(blob)
    assert open_(blob, expected_site="site-1").site_id == "site-1"


def test_signed_site_id_must_match_the_expected_site():
    body = body_of(SHARD_BLOB)
    body.site_id = "site-1"
    with pytest.raises(ShardWireError, match="shard's signed site id 'site-1', expected 'site-0'"):
        open_(forge(body, signer="site-0", sender="site-0"))


def test_signature_by_another_sites_key():
    with pytest.raises(ShardWireError, match="not the expected key"):
        open_(sealed_shard(make_shard(site="site-0"), signer="site-1"))


def test_bad_signature():
    signed = pb.SignedPayload.FromString(plaintext_of(SHARD_BLOB))
    signed.signature = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
    blob = seal(signed.SerializeToString(), Header("shard", "site-0", RUN, 1, key_id(COORD_SEAL.public_key())),
                COORD_SEAL.public_key())
    with pytest.raises(ShardWireError, match="bad signature"):
        open_(blob)


def test_wrong_run_id():
    with pytest.raises(ShardWireError, match="wrong run id: shard is for run 'run-1', expected 'run-2'"):
        open_(SHARD_BLOB, run_id="run-2")
    body = body_of(SHARD_BLOB)
    body.run_id = "run-2"
    with pytest.raises(ShardWireError, match="wrong run id: signed shard is for run 'run-2'"):
        open_(forge(body))


def test_wrong_round():
    with pytest.raises(ShardWireError, match="wrong round: shard is for round 1, expected 2"):
        open_(SHARD_BLOB, round=2)
    body = body_of(SHARD_BLOB)
    body.round = 2
    with pytest.raises(ShardWireError, match="wrong round: signed shard is for round 2, expected 1"):
        open_(forge(body))


def test_replay_is_refused():
    guard = ReplayGuard()
    open_(SHARD_BLOB, replay=guard)
    with pytest.raises(ShardWireError, match="replayed shard from 'site-0'"):
        open_(SHARD_BLOB, replay=guard)
    open_(sealed_shard(), replay=guard)  # a fresh shard from the same site is fine
    assert len(guard) == 2


def test_replay_is_refused_after_a_restart(tmp_path):
    path = tmp_path / "state" / "nonces.txt"
    open_(SHARD_BLOB, replay=ReplayGuard(path))
    with path.open("a") as fh:
        fh.write("not-hex site-0\nabc")  # a damaged tail, as after a crash mid-write
    restarted = ReplayGuard(path)
    with pytest.raises(ShardWireError, match="replayed shard"):
        open_(SHARD_BLOB, replay=restarted)
    open_(sealed_shard(), replay=restarted)
    assert len(ReplayGuard(path)) == 2
    assert path.read_text().splitlines()[0] == f"{body_of(SHARD_BLOB).nonce.hex()} site-0"


def test_rejected_shard_does_not_use_up_its_nonce():
    guard = ReplayGuard()
    with pytest.raises(ShardWireError, match="were requested"):
        open_(SHARD_BLOB, replay=guard, expected_count=5)
    assert len(guard) == 0
    open_(SHARD_BLOB, replay=guard, expected_count=6)


def test_oversized_blob_is_refused_before_parsing():
    with pytest.raises(ShardWireError, match=f"shard blob is {len(SHARD_BLOB)} bytes, more than the limit 100"):
        open_(SHARD_BLOB, max_bytes=100)
    with pytest.raises(ShardWireError, match="more than the limit 10"):
        open_(b"\xff" * 11, max_bytes=10)  # garbage: the size, not the parse, is the reason


@pytest.mark.parametrize("blob", [b"", b"\xff\xff\xff", b"\x0a\x05ab", bytes(100)])
def test_malformed_protobuf(blob):
    with pytest.raises(ShardWireError, match="malformed shard envelope|unsupported envelope version"):
        open_(blob)


def test_unsupported_envelope_version():
    envelope = pb.SealedEnvelope.FromString(SHARD_BLOB)
    envelope.version = 2
    with pytest.raises(ShardWireError, match="unsupported envelope version 2"):
        open_(envelope.SerializeToString())


def test_candidate_blob_is_not_a_shard():
    with pytest.raises(ShardWireError, match="envelope holds 'audit_candidate', expected 'shard'"):
        open_(CANDIDATE_BLOB)


def test_wrong_recipient_key():
    with pytest.raises(ShardWireError, match="sealed to a different key"):
        open_(SHARD_BLOB, recipient_key=new_sealing_key())
    other = new_sealing_key()  # a header that lies about the recipient: the open still fails
    envelope = pb.SealedEnvelope.FromString(sealed_shard(recipient=other))
    envelope.recipient_key_id = key_id(COORD_SEAL.public_key())
    with pytest.raises(ShardWireError, match="does not decrypt"):
        open_(envelope.SerializeToString())


def test_shard_resealed_to_another_coordinator():
    other = new_sealing_key()
    resealed = seal(plaintext_of(SHARD_BLOB), Header("shard", "site-0", RUN, 1, key_id(other.public_key())),
                    other.public_key())
    with pytest.raises(ShardWireError, match="signed for another coordinator key"):
        open_(resealed, recipient_key=other)


def test_validate_shard_rejections_are_shard_wire_errors():
    with pytest.raises(ShardWireError, match="6 images but 5 were requested"):
        open_(SHARD_BLOB, expected_count=5)
    body = body_of(SHARD_BLOB)
    body.soft_labels_float16 = np.full((6, 3), 0.5, np.float16).tobytes()
    with pytest.raises(ShardWireError, match="rows must sum to 1"):
        open_(forge(body))
    body = body_of(SHARD_BLOB)
    body.hard_labels_compact = np.full(6, 3, np.uint8).tobytes()
    with pytest.raises(ShardWireError, match=r"hard_labels must lie in \[0, 3\)"):
        open_(forge(body))
    body = body_of(SHARD_BLOB)
    body.soft_labels_float16 = np.full((6, 3), np.nan, np.float16).tobytes()
    with pytest.raises(ShardWireError, match="non-finite"):
        open_(forge(body))
    body = body_of(SHARD_BLOB)
    body.soft_labels_float16 = np.full((6, 3), np.inf, np.float16).tobytes()
    with pytest.raises(ShardWireError, match="non-finite"):
        open_(forge(body))


def test_labels_travel_in_half_precision_and_one_byte_classes():
    body = body_of(SHARD_BLOB)
    shard = make_shard()
    assert not body.soft_labels and not body.hard_labels
    assert body.soft_labels_float16 == shard.soft_labels.astype(np.float16).tobytes()
    assert body.hard_labels_compact == shard.hard_labels.astype(np.uint8).tobytes()


def test_an_older_sites_float32_and_int64_labels_are_still_read():
    body = body_of(SHARD_BLOB)
    shard = make_shard()
    body.ClearField("soft_labels_float16")
    body.ClearField("hard_labels_compact")
    body.soft_labels, body.hard_labels = shard.soft_labels.tobytes(), shard.hard_labels.tobytes()
    back = open_(forge(body))
    assert back.soft_labels.tobytes() == shard.soft_labels.tobytes() and back.hard_labels.tobytes() == shard.hard_labels.tobytes()


def test_labels_in_two_forms_or_the_wrong_count_are_refused():
    shard = make_shard()
    body = body_of(SHARD_BLOB)
    body.soft_labels = shard.soft_labels.tobytes()
    with pytest.raises(ShardWireError, match=r"soft labels twice \(float32 and float16\)"):
        open_(forge(body))
    body = body_of(SHARD_BLOB)
    body.hard_labels = shard.hard_labels.tobytes()
    with pytest.raises(ShardWireError, match=r"hard labels twice \(int64 and compact\)"):
        open_(forge(body))
    body = body_of(SHARD_BLOB)
    body.hard_labels_compact += b"\x00"
    with pytest.raises(ShardWireError, match=r"hard_labels_compact hold 7 bytes, but shape \(6,\) needs 6"):
        open_(forge(body))
    body = body_of(SHARD_BLOB)
    body.soft_labels_float16 = body.soft_labels_float16[:-2]
    with pytest.raises(ShardWireError, match=r"soft_labels_float16 hold 34 bytes, but shape \(6, 3\) needs 36"):
        open_(forge(body))


def test_shapes_are_checked_against_the_spec_before_arrays_are_built():
    with pytest.raises(ShardWireError, match="images are 8x8x1, expected 16x16x1"):
        open_(SHARD_BLOB, spec=ShardSpec((16, 16, 1), 3))
    with pytest.raises(ShardWireError, match="shard has 3 classes, expected 4"):
        open_(SHARD_BLOB, spec=ShardSpec((8, 8, 1), 4))
    with pytest.raises(ShardWireError, match="declares 6 images, more than the limit 4"):
        open_(SHARD_BLOB, spec=ShardSpec((8, 8, 1), 3, max_images=4))
    body = body_of(SHARD_BLOB)
    body.count = 2**32 - 1
    with pytest.raises(ShardWireError, match="more than the limit 100000"):
        open_(forge(body))
    webp_blob = sealed_shard(dataclasses.replace(make_shard(), images=np.repeat(make_shard().images[:, :1], 8, axis=1)))
    body = body_of(webp_blob)  # rows repeated: images that compress, so they travel as WebP
    assert len(body.images_webp) == 1 and not body.images
    body.images_webp[0] = body.images_webp[0][:-1]
    with pytest.raises(ShardWireError, match="WebP page 0: its RIFF size disagrees"):
        open_(forge(body))
    body = body_of(webp_blob)
    body.count = 0
    with pytest.raises(ShardWireError, match=r"soft_labels_float16 hold 36 bytes, but shape \(0, 3\) needs 0"):
        open_(forge(body))  # labels are read before any image
    body.ClearField("soft_labels_float16")
    body.ClearField("hard_labels_compact")
    with pytest.raises(ShardWireError, match="1 WebP pages for 0 images, expected 0"):
        open_(forge(body))
    body = body_of(webp_blob)
    body.images = bytes(384)
    with pytest.raises(ShardWireError, match=r"carries its images twice \(raw and WebP\)"):
        open_(forge(body))


def test_raw_images_are_checked_before_arrays_are_built():
    """A shard whose images travel raw (noise that does not compress, a shape WebP cannot carry, or an
    older site's) is still read exactly."""
    body = body_of(SHARD_BLOB)
    images = make_shard().images
    assert body.images == images.tobytes() and not body.images_webp
    assert np.array_equal(open_(forge(body)).images, images)
    body.images = body.images[:-1]
    with pytest.raises(ShardWireError, match=r"images hold 383 bytes, but shape \(6, 8, 8, 1\) needs 384"):
        open_(forge(body))
    body.images = images.tobytes()
    body.count = 0
    body.ClearField("soft_labels_float16")
    body.ClearField("hard_labels_compact")
    with pytest.raises(ShardWireError, match="images hold 384 bytes"):
        open_(forge(body))


def test_summary_is_bounded():
    body = body_of(SHARD_BLOB)
    body.summary["a"] = "b"
    with pytest.raises(ShardWireError, match="summary twice"):
        open_(forge(body))
    body.summary_json = ""
    assert open_(forge(body)).summary == {"a": "b"}
    for text, reason in (("[1]", "JSON object"), ('{"a": [1]}', "not a scalar"), ("{" * 5000, "nested more than 32 levels"),
                         ('{"a": "' + "x" * 300 + '"}', "longer than 200"), ("1" * 20000, "longer than 16384")):
        body = body_of(SHARD_BLOB)
        body.summary_json = text
        with pytest.raises(ShardWireError, match=reason):
            open_(forge(body))


def test_nonce_length():
    body = body_of(SHARD_BLOB)
    body.nonce = b"\x00" * 8
    with pytest.raises(ShardWireError, match="nonce must be 32 bytes"):
        open_(forge(body))


def test_invalid_shards_are_not_sealed():
    shard = make_shard()
    bad = Shard("site-0", 1, shard.images, shard.soft_labels * 2, shard.hard_labels, 6)
    with pytest.raises(ShardWireError, match="cannot seal shard: soft_labels rows must sum to 1"):
        sealed_shard(bad)
    with pytest.raises(ShardWireError, match="cannot seal shard: invalid run id"):
        seal_shard(shard, run_id="../x", signer=SITE_SIGN["site-0"], recipient=COORD_SEAL.public_key())
    with pytest.raises(ShardWireError, match="cannot seal shard: envelope round"):
        sealed_shard(Shard("site-0", -1, shard.images, shard.soft_labels, shard.hard_labels, 6))
    with pytest.raises(ShardWireError, match="cannot seal"):
        sealed_shard(Shard("site-0", 1, shard.images[0], shard.soft_labels, shard.hard_labels, 6))


@pytest.mark.parametrize("flip", [0x01, 0x80])
def test_any_flipped_byte_is_rejected(flip):
    guard = ReplayGuard()
    for i in range(len(SHARD_BLOB)):
        tampered = bytearray(SHARD_BLOB)
        tampered[i] ^= flip
        with pytest.raises(ShardWireError):
            open_(bytes(tampered), replay=guard)
    assert len(guard) == 0


def test_any_truncation_is_rejected():
    for n in range(len(SHARD_BLOB)):
        with pytest.raises(ShardWireError):
            open_(SHARD_BLOB[:n])


# --- signing domains ------------------------------------------------------------------------------


def test_a_signature_is_bound_to_its_kind():
    payload = sign(b"body", kind="shard", signer=COORD_SIGN)
    assert verify(payload, kind="shard", key=COORD_SIGN.public_key()) == b"body"
    with pytest.raises(SealError, match="bad signature"):
        verify(payload, kind="audit_candidate", key=COORD_SIGN.public_key())
    with pytest.raises(SealError, match="invalid message kind"):
        sign(b"body", kind="Shard\x00", signer=COORD_SIGN)


def test_candidate_body_signed_as_a_shard_is_refused():
    payload = sign(signed_body(CANDIDATE_BLOB, "audit_candidate", SITE_SEAL["site-0"]), kind="shard", signer=COORD_SIGN)
    header = Header("audit_candidate", "coordinator", RUN, 0, key_id(SITE_SEAL["site-0"].public_key()))
    with pytest.raises(SealError, match="bad signature"):
        open_c(seal(payload, header, SITE_SEAL["site-0"].public_key()))


# --- candidate rejections -------------------------------------------------------------------------


def test_candidate_for_another_site():
    with pytest.raises(SealError, match="sealed to a different key"):
        open_c(sealed_candidate("site-1"))
    body = candidate_body_of(CANDIDATE_BLOB)
    body.site_id = "site-1"
    with pytest.raises(SealError, match="candidate is for site 'site-1', not 'site-0'"):
        open_c(forge_candidate(body))


def test_candidate_signed_by_another_key():
    with pytest.raises(SealError, match="not the expected key"):
        open_c(sealed_candidate(signer=SITE_SIGN["site-0"]))


def test_candidate_header_and_body_must_agree():
    with pytest.raises(SealError, match="sent by 'site-0', not the coordinator"):
        open_c(forge_candidate(candidate_body_of(CANDIDATE_BLOB), sender="site-0"))
    body = candidate_body_of(CANDIDATE_BLOB)
    body.run_id = "run-2"
    with pytest.raises(SealError, match="signed run id differs"):
        open_c(forge_candidate(body))
    other = new_sealing_key()
    plain = plaintext_of(CANDIDATE_BLOB, "audit_candidate", SITE_SEAL["site-0"])
    resealed = seal(plain, Header("audit_candidate", "coordinator", RUN, 0, key_id(other.public_key())),
                    other.public_key())
    with pytest.raises(SealError, match="signed for another site key"):
        open_c(resealed, recipient_key=other)


def test_oversized_candidate():
    with pytest.raises(SealError, match="more than the limit 1000"):
        open_c(CANDIDATE_BLOB, max_bytes=1000)


def _with_array(mutate) -> bytes:
    body = candidate_body_of(CANDIDATE_BLOB)
    mutate(body)
    return forge_candidate(body)


@pytest.mark.parametrize("mutate, reason", [
    (lambda b: setattr(b.student_weights[0], "dtype", "object"), "dtype 'object', not one of"),
    (lambda b: setattr(b.student_weights[0], "dtype", "complex128"), "not one of"),
    (lambda b: b.student_weights[0].shape.append(2), "needs"),
    (lambda b: b.student_weights[0].shape.extend([1] * 9), "more than 8 dimensions"),
    (lambda b: b.student_weights[0].shape.extend([2**40, 0]), "dimension over"),
    (lambda b: setattr(b.student_weights[0], "data", b"\x00" * 3), "hold 3 bytes"),
    (lambda b: b.student_weights.append(b.student_weights[0]), "appears twice"),
    (lambda b: setattr(b.student_weights[0], "name", ""), "array names"),
    (lambda b: b.ClearField("released_images"), "no released images"),
    (lambda b: setattr(b.released_images, "dtype", "float32"), "hold"),
    (lambda b: b.released_images.shape.__setitem__(0, 5), "needs"),
    (lambda b: setattr(b, "student_config_json", '{"in_channels": 1}'), "student config is malformed"),
    (lambda b: setattr(b, "student_config_json", '{"in_channels": 1, "height": 8, "width": 8, "num_classes": 3, '
                                                 '"channels": 1000000000}'), "must lie in"),
    (lambda b: setattr(b, "student_config_json", "[]"), "JSON object"),
    (lambda b: setattr(b, "student_config_json", "nope"), "student config: not valid JSON"),
    (lambda b: setattr(b, "nonce", b""), "nonce must be"),
])
def test_candidate_decoding_is_bounded(mutate, reason):
    with pytest.raises(SealError, match=reason):
        open_c(_with_array(mutate))


def test_released_images_must_be_uint8_nhwc():
    body = candidate_body_of(CANDIDATE_BLOB)
    body.released_images.shape[:] = [4 * 64]
    with pytest.raises(SealError, match=r"uint8 \(N, H, W, C\)"):
        open_c(forge_candidate(body))


def test_candidate_seal_refuses_what_the_site_would_refuse():
    candidate = make_candidate()
    bad = AuditCandidate(RUN, candidate.student_config, {"w": np.zeros(2, np.complex64)}, candidate.released_images)
    with pytest.raises(SealError, match="must be an array"):
        seal_candidate(bad, site_id="site-0", signer=COORD_SIGN, recipient=SITE_SEAL["site-0"].public_key())
    bad = AuditCandidate(RUN, candidate.student_config, {}, candidate.released_images.astype(np.float32))
    with pytest.raises(SealError, match="released images"):
        seal_candidate(bad, site_id="site-0", signer=COORD_SIGN, recipient=SITE_SEAL["site-0"].public_key())


def test_any_flipped_candidate_byte_is_rejected():
    for i in range(len(CANDIDATE_BLOB)):
        tampered = bytearray(CANDIDATE_BLOB)
        tampered[i] ^= 0x01
        with pytest.raises(SealError):
            open_c(bytes(tampered))


# --- hostile input, generated ---------------------------------------------------------------------


def _only_clean_rejections(call, error: type[ValueError], *args) -> None:
    started = time.perf_counter()
    try:
        call(*args)
    except error:
        pass
    assert time.perf_counter() - started < 2.0


def _mutated(blob: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(blob)
    for index, value in edits:
        out[index % len(out)] = value
    return bytes(out)


EDITS = st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), min_size=1, max_size=8)


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_are_rejected_cleanly(data):
    _only_clean_rejections(open_, ShardWireError, data)
    _only_clean_rejections(open_c, SealError, data)


@FUZZ
@given(st.integers(0, 2**16), st.integers(0, 2**16))
def test_truncated_blobs_are_rejected_cleanly(n, m):
    with pytest.raises(ShardWireError):
        open_(SHARD_BLOB[: n % len(SHARD_BLOB)])
    with pytest.raises(SealError):
        open_c(CANDIDATE_BLOB[: m % len(CANDIDATE_BLOB)])


@FUZZ
@given(EDITS)
def test_mutated_blobs_are_rejected_cleanly(edits):
    shard_blob, candidate_blob = _mutated(SHARD_BLOB, edits), _mutated(CANDIDATE_BLOB, edits)
    if shard_blob != SHARD_BLOB:
        with pytest.raises(ShardWireError):
            open_(shard_blob)
    if candidate_blob != CANDIDATE_BLOB:
        with pytest.raises(SealError):
            open_c(candidate_blob)


@FUZZ
@given(EDITS, st.binary(max_size=64))
def test_signed_hostile_bodies_are_rejected_cleanly(edits, tail):
    """Past the signature and the cipher: a site or coordinator key holder sending garbage bodies."""
    shard_body = _mutated(body_of(SHARD_BLOB).SerializeToString(), edits) + tail
    _only_clean_rejections(open_, ShardWireError, forge(shard_body))
    candidate_body = _mutated(candidate_body_of(CANDIDATE_BLOB).SerializeToString(), edits) + tail
    _only_clean_rejections(open_c, SealError, forge_candidate(candidate_body))


@FUZZ
@given(count=st.integers(0, 2**32 - 1), height=st.integers(0, 2**32 - 1), width=st.sampled_from([0, 8, 2**31]),
       channels=st.sampled_from([0, 1, 3]), classes=st.integers(0, 2**32 - 1), images=st.binary(max_size=512),
       soft=st.binary(max_size=96), hard=st.binary(max_size=64), summary=st.text(max_size=64))
def test_hostile_shard_fields_are_rejected_cleanly(count, height, width, channels, classes, images, soft, hard, summary):
    body = pb.SyntheticShard(site_id="site-0", run_id=RUN, round=1, count=count, height=height, width=width,
                             channels=channels, num_classes=classes, images=images, soft_labels=soft, hard_labels=hard,
                             nonce=bytes(32), recipient_key_id=key_id(COORD_SEAL.public_key()), summary_json=summary)
    _only_clean_rejections(open_, ShardWireError, forge(body))


@FUZZ
@given(count=st.integers(0, 2**32 - 1), pages=st.lists(st.binary(max_size=96), max_size=3), keep_header=st.booleans())
def test_hostile_webp_pages_are_rejected_cleanly(count, pages, keep_header):
    """Pages of garbage, or garbage behind a real page's header, under any declared count."""
    header = encode_pages(np.zeros((6, 8, 8, 1), np.uint8))[0][:25]
    body = pb.SyntheticShard(site_id="site-0", run_id=RUN, round=1, count=count, height=8, width=8, channels=1,
                             num_classes=3, images_webp=[header + p if keep_header else p for p in pages],
                             soft_labels=make_shard().soft_labels.tobytes(), hard_labels=np.zeros(6, np.int64).tobytes(),
                             nonce=bytes(32), recipient_key_id=key_id(COORD_SEAL.public_key()))
    _only_clean_rejections(open_, ShardWireError, forge(body))


@FUZZ
@given(dtype=st.sampled_from(["float32", "int64", "uint8", "float16", "bool", "", "S3", "<f4"]),
       shape=st.lists(st.integers(0, 2**64 - 1), max_size=10), data=st.binary(max_size=256))
def test_hostile_candidate_arrays_are_rejected_cleanly(dtype, shape, data):
    body = candidate_body_of(CANDIDATE_BLOB)
    for raw in (body.student_weights[0], body.released_images):
        raw.dtype, raw.data = dtype, data
        raw.shape[:] = shape
        _only_clean_rejections(open_c, SealError, forge_candidate(body))


# --- signed audit reports -------------------------------------------------------------------------


def _report(site: str = "site-0"):
    from fedkr.shared.reports import AuditReport

    return AuditReport(site_id=site, results=(), num_members=10, num_nonmembers=10)


def test_signed_audit_report_round_trip_and_binding():
    from fedkr.shared.shard_wire import open_audit_report, sign_audit_report

    candidate = sealed_candidate()
    signed = sign_audit_report(_report(), run_id=RUN, candidate_blob=candidate, signer=SITE_SIGN["site-0"])
    report = open_audit_report(signed, site_key=SITE_KEYS["site-0"], site_id="site-0", run_id=RUN, candidate_blob=candidate)
    assert report.site_id == "site-0" and report.num_members == 10
    with pytest.raises(SealError, match="another candidate"):  # a genuine report replayed against a new candidate
        open_audit_report(signed, site_key=SITE_KEYS["site-0"], site_id="site-0", run_id=RUN, candidate_blob=sealed_candidate())
    with pytest.raises(SealError, match="expected"):
        open_audit_report(signed, site_key=SITE_KEYS["site-1"], site_id="site-1", run_id=RUN, candidate_blob=candidate)
    with pytest.raises(SealError, match="run"):
        open_audit_report(signed, site_key=SITE_KEYS["site-0"], site_id="site-0", run_id="run-2", candidate_blob=candidate)
    forged = bytearray(signed)
    forged[len(forged) // 2] ^= 1
    with pytest.raises(ValueError):
        open_audit_report(bytes(forged), site_key=SITE_KEYS["site-0"], site_id="site-0", run_id=RUN, candidate_blob=candidate)


# --- relabelling requests ---------------------------------------------------------------------------


def sealed_relabel(site: str = "site-0", signer=COORD_SIGN, images=None) -> bytes:
    request = RelabelRequest(RUN, synthetic_images(5, seed=4) if images is None else images, 4.0)
    return seal_relabel(request, site_id=site, signer=signer, recipient=SITE_SEAL[site].public_key())


def open_r(blob: bytes, **overrides) -> RelabelRequest:
    kwargs = dict(recipient_key=SITE_SEAL["site-0"], coordinator_key=COORD_SIGN.public_key(), site_id="site-0")
    kwargs.update(overrides)
    return open_relabel(blob, **kwargs)


def test_relabel_round_trip_and_no_plain_image_bytes():
    images = synthetic_images(5, seed=4)
    blob = sealed_relabel(images=images)
    back = open_r(blob)
    assert (back.run_id, back.temperature) == (RUN, 4.0)
    assert back.images.dtype == np.uint8 and back.images.tobytes() == images.tobytes()
    assert images[0].tobytes()[:32] not in blob


def test_relabel_for_another_site_or_signed_by_another_key_is_refused():
    with pytest.raises(SealError):
        open_r(sealed_relabel(site="site-1"))  # sealed to site-1's key: site-0 cannot open it
    with pytest.raises(SealError, match="not the expected key"):
        open_r(sealed_relabel(signer=new_signing_key()))
    with pytest.raises(SealError, match="not 'site-1'"):
        open_r(sealed_relabel(), site_id="site-1", recipient_key=SITE_SEAL["site-0"])


def test_relabel_and_candidate_blobs_are_not_interchangeable():
    with pytest.raises(SealError):
        open_r(CANDIDATE_BLOB)
    with pytest.raises(SealError):
        open_c(sealed_relabel())


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_never_open_as_a_relabel_request(blob):
    with pytest.raises(SealError):
        open_r(blob)


def test_signed_labels_are_bound_to_their_request_and_site():
    request = sealed_relabel()
    probs = np.full((5, 3), 1 / 3, np.float32)
    blob = sign_relabel_reply(probs, site_id="site-0", run_id=RUN, request_blob=request, signer=SITE_SIGN["site-0"])
    opened = open_relabel_reply(blob, site_key=SITE_KEYS["site-0"], site_id="site-0", run_id=RUN, request_blob=request, shape=(5, 3))
    assert opened.dtype == np.float32 and opened.tobytes() == probs.astype(np.float16).astype(np.float32).tobytes()
    with pytest.raises(SealError, match="another request"):
        open_relabel_reply(blob, site_key=SITE_KEYS["site-0"], site_id="site-0", run_id=RUN, request_blob=sealed_relabel(), shape=(5, 3))
    with pytest.raises(SealError):
        open_relabel_reply(blob, site_key=SITE_KEYS["site-1"], site_id="site-0", run_id=RUN, request_blob=request, shape=(5, 3))
    with pytest.raises(SealError, match="another site or run"):
        open_relabel_reply(blob, site_key=SITE_KEYS["site-0"], site_id="site-0", run_id="run-2", request_blob=request, shape=(5, 3))
    with pytest.raises(SealError, match="expected"):
        open_relabel_reply(blob, site_key=SITE_KEYS["site-0"], site_id="site-0", run_id=RUN, request_blob=request, shape=(6, 3))
