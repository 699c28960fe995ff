"""One encoding per message that crosses a site's boundary: protobuf bodies in a versioned `Envelope`.

Each message has an ``encode_X(obj, ...) -> bytes`` and a ``decode_X(bytes, ...) -> obj`` here. The
bytes are what every transport moves: the in-process link hands them over, a Flower record holds
them as one opaque array, and in deployment `shared/shard_wire.py` signs the same bytes and, for
messages that hold images, seals them. The site's ledger hashes these bytes (or their signed or
sealed form), so what the ledger lists is exactly what left.

Decoding treats the bytes as hostile: the size is checked before anything is parsed, the envelope's
version and kind before the body, every length and shape before an array is built, and every failure
raises `CodecError` (a `ValueError`) with a one-line reason; a message of another version raises
`VersionError`. A shard's own checks (`shared/shard.py`) raise `ShardError`, also a `ValueError`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from typing import TypeVar

import numpy as np
from google.protobuf.message import DecodeError, Message

from fedkr.v1 import messages_pb2 as pb

from . import lossless_images
from .attack_report import AttackResult
from .classifier import ClassifierConfig
from .dp import RefusedDPSetting
from .json_input import JSONInputError, parse_json
from .reports import (
    AuditCandidate,
    AuditReport,
    FitPlan,
    FitReport,
    MAX_REASON,
    REQUESTS,
    RelabelReply,
    RelabelRequest,
    SiteRefusal,
    check_relabel_reply,
    check_run_id,
)
from .site_identity import KeyringError, check_site_name
from .shard import MAX_SUMMARY_KEYS, Shard, ShardError, ShardSpec, SynthesisRequest, validate_shard

#: The version of every message this build writes, and the only one it reads.
WIRE_VERSION = 1

KIND_FIT_PLAN = "fit_plan"
KIND_FIT_REPORT = "fit_report"
KIND_SYNTHESIS_REQUEST = "synthesis_request"
KIND_SHARD = "shard"
KIND_RELABEL = "relabel_request"
KIND_RELABEL_REPLY = "relabel_reply"
KIND_CANDIDATE = "audit_candidate"
KIND_AUDIT_REPORT = "audit_report"
KIND_REFUSAL = "refusal"

MAX_PLAN_BYTES = 64 * 1024
MAX_REFUSAL_BYTES = 4 * 1024
MAX_FIT_REPORT_BYTES = 1 * 2**20
MAX_REQUEST_BYTES = 64 * 1024
DEFAULT_MAX_SHARD_BYTES = 64 * 2**20
DEFAULT_MAX_CANDIDATE_BYTES = 256 * 2**20
DEFAULT_MAX_REPORT_BYTES = 4 * 2**20
#: What a relabel reply may hold beyond its labels' bytes (ids, digest, array header).
REPLY_OVERHEAD = 64 * 1024

MAX_SUMMARY_JSON = 16 * 1024
MAX_CONFIG_JSON = 4 * 1024
MAX_OBJECT_JSON = 64 * 1024
MAX_CLASSES = 10_000
MAX_ARRAYS = 1024
MAX_NDIM = 8
MAX_DIM = 2**31 - 1
MAX_NAME = 200
ARRAY_DTYPES = ("float16", "float32", "float64", "int32", "int64", "uint8")
#: The dtype soft labels travel in (shards and relabelling replies); readers hand on float32. Fixed by
#: the wire format (`SyntheticShard.soft_labels_float16`), not a setting. IEEE half precision rounds each
#: probability by at most 2**-11 of itself (2**-25 absolute below 2**-14), so a row of at most
#: `MAX_CLASSES` still sums to 1 within 8e-4, inside `shard.ROW_SUM_TOLERANCE` (1e-3), what every reader
#: allows; the writer checks the rounded rows too. It halves the labels' bytes: a site's relabelling
#: reply is most of what it uploads besides its shards.
SOFT_LABEL_WIRE_DTYPE = np.dtype(np.float16)

# What parsing and array building can raise on hostile input; each becomes a one-line rejection.
MALFORMED = (DecodeError, ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError,
             UnicodeError, AttributeError, struct.error)

T = TypeVar("T")
M = TypeVar("M", bound=Message)


class CodecError(ValueError):
    """Bytes that do not decode as the expected message, or an object that cannot be encoded; one line says why."""


class VersionError(CodecError):
    """A message written in another version of fedkr's encoding."""


class PlanRefused(CodecError):
    """A well-formed request whose settings the site refuses (`fedkr.shared.dp.RefusedDPSetting`: a
    DP setting only the site may choose, or one this version does not know).

    Its text is fedkr's own words (never the body's), so a site may send it to the coordinator as is.
    `run_id` is the run the refused request names (already checked as a valid run id); `log_detail`
    what only the site's log may show (the names of unknown settings, escaped), or "".
    """

    def __init__(self, message: str, *, run_id: str, log_detail: str = "") -> None:
        super().__init__(message)
        self.run_id = run_id
        self.log_detail = log_detail


def one_line(exc: BaseException) -> str:
    """An exception's text on one line, at most 300 characters."""
    return " ".join(str(exc).split())[:300]


def _decoder(what: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Whatever a hostile body makes parsing raise becomes ``CodecError("malformed <what> (<type>)")``."""

    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def decode(*args, **kwargs) -> T:  # type: ignore[no-untyped-def]
            try:
                return fn(*args, **kwargs)
            except (CodecError, ShardError):
                raise
            except MALFORMED as exc:
                raise CodecError(f"malformed {what} ({type(exc).__name__})") from None

        return decode

    return wrap


# --- the envelope ---------------------------------------------------------------------------------


def wrap(kind: str, message: Message) -> bytes:
    """`message` serialized into an `Envelope` of `kind` at `WIRE_VERSION`: the bytes that travel."""
    return pb.Envelope(version=WIRE_VERSION, kind=kind, body=message.SerializeToString()).SerializeToString()


def unwrap(data: bytes, kind: str, message_type: type[M], max_bytes: int) -> M:
    """The `message_type` body of the `Envelope` in `data`.

    Raises `CodecError` unless `data` is bytes of at most `max_bytes` (checked before parsing) holding
    an envelope of `kind`, and `VersionError` if the envelope is of another version.
    """
    what = kind.replace("_", " ")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"{what} is {type(data).__name__}, not bytes")
    if len(data) > max_bytes:
        raise CodecError(f"{what} is {len(data)} bytes, more than the limit {max_bytes}")
    envelope = pb.Envelope()
    try:
        envelope.ParseFromString(bytes(data))
    except DecodeError:
        raise CodecError(f"malformed {what}: not a fedkr message envelope") from None
    if envelope.version == 0:
        raise CodecError(f"malformed {what}: not a plain fedkr message (no envelope version; signed or sealed?)")
    if envelope.version != WIRE_VERSION:
        raise VersionError(f"{what} is message version {envelope.version}; this fedkr reads version {WIRE_VERSION} only")
    if envelope.kind != kind:
        raise CodecError(f"message holds {envelope.kind[:40]!r}, expected {kind!r}")
    message = message_type()
    try:
        message.ParseFromString(envelope.body)
    except DecodeError:
        raise CodecError(f"malformed {what}") from None
    return message


def is_plain(data: object) -> bool:
    """Whether `data` parses as a plain `Envelope` of some version (not a signed or sealed message)."""
    if not isinstance(data, (bytes, bytearray)):
        return False
    envelope = pb.Envelope()
    try:
        envelope.ParseFromString(bytes(data))
    except DecodeError:
        return False
    return envelope.version != 0


def sha256(data: bytes) -> bytes:
    """The 32-byte SHA-256 digest that binds a reply to the exact request bytes it answers."""
    return hashlib.sha256(bytes(data)).digest()


# --- fit ------------------------------------------------------------------------------------------


def encode_fit_plan(plan: FitPlan) -> bytes:
    """A `FitPlan` (its three settings objects as JSON) as envelope bytes."""
    return wrap(KIND_FIT_PLAN, pb.FitPlan(
        run_id=check_run_id(plan.run_id), teacher_json=json.dumps(asdict(plan.teacher)),
        generator_json=json.dumps(plan.generator.to_dict()), teacher_channels=plan.teacher_channels,
        dp_json="" if plan.dp is None else json.dumps(plan.dp.to_dict()),
        samples_per_class=plan.samples_per_class, min_class_members=plan.min_class_members,
        reference_models=plan.reference_models, teacher_resample=plan.teacher_resample,
    ))


@_decoder("fit plan")
def decode_fit_plan(data: bytes, *, max_bytes: int = MAX_PLAN_BYTES) -> FitPlan:
    """The `FitPlan` in `data`; `CodecError` if it is not one with a valid run id and settings.

    A plan whose DP settings the site refuses (`dp.RefusedDPSetting`: one only the site may choose,
    or one it does not know) raises `PlanRefused`, which names the plan's run id.
    """
    message = unwrap(data, KIND_FIT_PLAN, pb.FitPlan, max_bytes)
    _run_id(message.run_id)
    try:
        return FitPlan.from_dict({
            "run_id": message.run_id, "teacher": _json_object(message.teacher_json, "teacher settings", MAX_CONFIG_JSON),
            "generator": _json_object(message.generator_json, "generator settings", MAX_CONFIG_JSON),
            "teacher_channels": message.teacher_channels,
            "dp": _json_object(message.dp_json, "DP settings", MAX_CONFIG_JSON) if message.dp_json else None,
            "samples_per_class": message.samples_per_class, "min_class_members": message.min_class_members,
            "reference_models": message.reference_models, "teacher_resample": message.teacher_resample,
        })
    except RefusedDPSetting as exc:  # fedkr's own words, not the body's: safe to repeat
        names = getattr(exc, "names", ())
        raise PlanRefused(f"refused fit plan: {one_line(exc)}", run_id=message.run_id,
                          log_detail=f"unknown DP settings {', '.join(names)}" if names else "") from None


def encode_fit_report(report: FitReport, *, run_id: str) -> bytes:
    """A site's `FitReport` for `run_id` as envelope bytes."""
    return wrap(KIND_FIT_REPORT, pb.FitReport(
        site_id=report.site_id, run_id=check_run_id(run_id), num_members=report.num_members,
        num_holdout=report.num_holdout, class_names=list(report.class_names), image_shape=list(report.image_shape),
        member_class_counts=list(report.member_class_counts), teacher_holdout_accuracy=report.teacher_holdout_accuracy,
        generator_final_loss=report.generator_final_loss, teacher_seconds=report.teacher_seconds,
        generator_seconds=report.generator_seconds, generator_summary_json=json.dumps(report.generator_summary),
        dp_json="" if report.dp is None else json.dumps(report.dp),
    ))


@_decoder("fit report")
def decode_fit_report(data: bytes, *, run_id: str, max_bytes: int = MAX_FIT_REPORT_BYTES) -> FitReport:
    """The `FitReport` in `data`, if it is for `run_id`; `CodecError` otherwise.

    Its image shape must be three positive sizes and its class lists at most `MAX_CLASSES` long.
    """
    message = unwrap(data, KIND_FIT_REPORT, pb.FitReport, max_bytes)
    if message.run_id != run_id:
        raise CodecError(f"fit report is for run {message.run_id[:80]!r}, expected {run_id!r}")
    if len(message.image_shape) != 3 or not all(0 < s <= 2**16 for s in message.image_shape):
        raise CodecError("fit report's image shape must be three sizes (H, W, C)")
    if len(message.class_names) > MAX_CLASSES or len(message.member_class_counts) != len(message.class_names):
        raise CodecError(f"fit report must name at most {MAX_CLASSES} classes, with one member count each")
    try:
        check_site_name(message.site_id)  # where a site's name enters the coordinator
    except KeyringError as exc:
        raise CodecError(f"fit report: {one_line(exc)}") from None
    return FitReport.from_dict({
        "site_id": message.site_id, "num_members": message.num_members, "num_holdout": message.num_holdout,
        "class_names": list(message.class_names), "image_shape": list(message.image_shape),
        "member_class_counts": list(message.member_class_counts),
        "teacher_holdout_accuracy": message.teacher_holdout_accuracy, "generator_final_loss": message.generator_final_loss,
        "teacher_seconds": message.teacher_seconds, "generator_seconds": message.generator_seconds,
        "generator_summary": _summary_json(message.generator_summary_json),
        "dp": _json_object(message.dp_json, "DP accounting", MAX_OBJECT_JSON) if message.dp_json else None,
    })


# --- refusals ------------------------------------------------------------------------------------


def encode_refusal(refusal: SiteRefusal, *, run_id: str) -> bytes:
    """A site's `SiteRefusal` for `run_id` ("" when the site could not read the request's run) as envelope bytes.

    Raises `CodecError` unless the request is one of `REQUESTS` and the reason one line of at most
    `MAX_REASON` characters.
    """
    if run_id:
        check_run_id(run_id)
    _check_refusal(refusal.site_id, refusal.request, refusal.reason, refusal.setting)
    return wrap(KIND_REFUSAL, pb.SiteRefusal(site_id=refusal.site_id, run_id=run_id, request=refusal.request,
                                             reason=refusal.reason, setting=refusal.setting))


@_decoder("refusal")
def decode_refusal(data: bytes, *, max_bytes: int = MAX_REFUSAL_BYTES) -> tuple[SiteRefusal, str]:
    """The `SiteRefusal` in `data` and the run id it names (""; unknown to the site); `CodecError` otherwise."""
    message = unwrap(data, KIND_REFUSAL, pb.SiteRefusal, max_bytes)
    if message.run_id:
        _run_id(message.run_id)
    _check_refusal(message.site_id, message.request, message.reason, message.setting)
    return SiteRefusal(message.site_id, message.request, message.reason, message.setting), message.run_id


def kind_of(data: object) -> str | None:
    """The kind a plain envelope names, without decoding its body; None for anything else (signed, sealed, not bytes)."""
    if not isinstance(data, (bytes, bytearray)):
        return None
    envelope = pb.Envelope()
    try:
        envelope.ParseFromString(bytes(data))
    except DecodeError:
        return None
    return envelope.kind if envelope.version == WIRE_VERSION else None


def _check_refusal(site_id: str, request: str, reason: str, setting: str) -> None:
    if not 0 < len(site_id) <= MAX_NAME:
        raise CodecError(f"a refusal's site id must be 1 to {MAX_NAME} characters")
    if request not in REQUESTS:
        raise CodecError(f"a refusal names request {request[:20]!r}, not one of {', '.join(REQUESTS)}")
    if not 0 < len(reason) <= MAX_REASON or "\n" in reason or "\r" in reason:
        raise CodecError(f"a refusal's reason must be one line of 1 to {MAX_REASON} characters")
    if len(setting) > 64:
        raise CodecError("a refusal's setting must be a node-config key of at most 64 characters")


# --- synthesis requests ---------------------------------------------------------------------------


def encode_synthesis_request(request: SynthesisRequest) -> bytes:
    """A `SynthesisRequest` as envelope bytes."""
    return wrap(KIND_SYNTHESIS_REQUEST, pb.SynthesisRequest(
        run_id=check_run_id(request.run_id), round=request.round, per_class=[int(n) for n in request.per_class],
        temperature=float(request.temperature), oversample=float(request.oversample),
    ))


@_decoder("synthesis request")
def decode_synthesis_request(data: bytes, *, max_bytes: int = MAX_REQUEST_BYTES) -> SynthesisRequest:
    """The `SynthesisRequest` in `data`; `CodecError` unless its run id is valid and it names at most `MAX_CLASSES` classes.

    Counts, temperature and oversampling are the site's to check against its own model.
    """
    message = unwrap(data, KIND_SYNTHESIS_REQUEST, pb.SynthesisRequest, max_bytes)
    _run_id(message.run_id)
    if len(message.per_class) > MAX_CLASSES:
        raise CodecError(f"synthesis request names more than {MAX_CLASSES} classes")
    return SynthesisRequest(run_id=message.run_id, round=message.round, per_class=tuple(int(n) for n in message.per_class),
                            temperature=message.temperature, oversample=message.oversample)


# --- shards ---------------------------------------------------------------------------------------


def encode_shard(shard: Shard, *, run_id: str, nonce: bytes = b"", recipient_key_id: str = "") -> bytes:
    """`shard` for `run_id` as envelope bytes: images uint8 (N, H, W, C) as lossless WebP pages
    (`shared/lossless_images.py`; raw bytes where the shape cannot travel so or the pages would not
    be smaller), soft labels (N, K) as little-endian float16 (`SOFT_LABEL_WIRE_DTYPE`), hard labels
    (N,) as uint8 (at most 256 classes) or little-endian uint16 (`hard_label_dtype`); its summary as JSON.

    `nonce` and `recipient_key_id` are for the sealed form only (`shared/shard_wire.py`). The shard is
    validated against its own shape first (`ShardError`), so nothing leaves that no coordinator could
    accept, its labels as the coordinator will read them included; a run id that is not valid raises `ValueError`.
    """
    check_sendable(shard)
    check_run_id(run_id)
    soft_labels = shard.soft_labels.astype(SOFT_LABEL_WIRE_DTYPE)
    check_sendable(replace(shard, soft_labels=soft_labels.astype(np.float32)))  # the rows the coordinator checks
    n = len(shard)
    _, height, width, channels = shard.images.shape
    pages = lossless_images.encode_pages(shard.images) if n and lossless_images.compressible((height, width, channels)) else []
    if sum(map(len, pages)) >= shard.images.nbytes:
        pages = []  # noise does not compress: raw is smaller
    return wrap(KIND_SHARD, pb.SyntheticShard(
        site_id=shard.site_id, run_id=run_id, round=shard.round, count=n, height=height, width=width,
        channels=channels, images=b"" if pages else le_bytes(shard.images), images_webp=pages,
        num_classes=shard.soft_labels.shape[1],
        soft_labels_float16=le_bytes(soft_labels),
        hard_labels_compact=le_bytes(shard.hard_labels.astype(hard_label_dtype(shard.soft_labels.shape[1]))),
        nonce=nonce, recipient_key_id=recipient_key_id, summary_json=json.dumps(shard.summary),
    ))


@_decoder("shard")
def decode_shard(data: bytes, *, site_id: str, run_id: str, round: int, spec: ShardSpec,
                 expected_count: int | None = None, max_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> Shard:
    """The plain shard in `data`, if `site_id` wrote it for this run and round and it fits `spec`.

    Raises `CodecError` (`VersionError` for another version) or `ShardError` (`validate_shard`).
    """
    message = unwrap(data, KIND_SHARD, pb.SyntheticShard, max_bytes)
    expect("shard's site id", message.site_id, site_id)
    expect("wrong run id: shard is for run", message.run_id, run_id)
    expect("wrong round: shard is for round", message.round, round)
    shard = shard_of(message, spec, max_bytes)
    with np.errstate(all="ignore"):  # overflowing sums of hostile soft labels are rejected, not warned about
        validate_shard(shard, spec, expected_count)
    return shard


def shard_of(message: pb.SyntheticShard, spec: ShardSpec, max_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> Shard:
    """A `Shard` from its message, arrays built only once their sizes agree with `spec` and the bytes
    present; compressed images only where they would decode to at most `max_bytes` (what a raw shard
    may hold), so a small message cannot make the receiver allocate more. Labels are read first
    (cheap), then the images. Soft labels come back float32 (N, K), hard labels int64 (N,), whichever
    form they travelled in.

    Not yet validated: call `validate_shard`. Raises `CodecError`.
    """
    n = message.count
    if n > spec.max_images:
        raise CodecError(f"shard declares {n} images, more than the limit {spec.max_images}")
    shape = (message.height, message.width, message.channels)
    if shape != tuple(spec.image_shape):
        raise CodecError(f"images are {'x'.join(map(str, shape))}, expected {'x'.join(map(str, spec.image_shape))}")
    if message.num_classes != spec.num_classes:
        raise CodecError(f"shard has {message.num_classes} classes, expected {spec.num_classes}")
    soft_labels = _shard_soft_labels(message, n, spec.num_classes)
    hard_labels = _shard_hard_labels(message, n, spec.num_classes)
    summary = _shard_summary(message)
    return Shard(site_id=message.site_id, round=message.round, images=_shard_images(message, n, shape, max_bytes),
                 soft_labels=soft_labels, hard_labels=hard_labels, declared_count=n, summary=summary)


def _shard_soft_labels(message: pb.SyntheticShard, count: int, num_classes: int) -> np.ndarray:
    """float32 (count, num_classes) from whichever form the shard holds; `CodecError` for both at once."""
    if not message.soft_labels_float16:
        return from_le(message.soft_labels, np.dtype(np.float32), (count, num_classes), "soft_labels")
    if message.soft_labels:
        raise CodecError("shard carries its soft labels twice (float32 and float16)")
    return from_le(message.soft_labels_float16, SOFT_LABEL_WIRE_DTYPE, (count, num_classes),
                   "soft_labels_float16").astype(np.float32)


def hard_label_dtype(num_classes: int) -> np.dtype:
    """The compact dtype of a shard's hard labels: uint8 for at most 256 classes, else uint16 (`MAX_CLASSES` fits)."""
    return np.dtype(np.uint8) if num_classes <= 256 else np.dtype(np.uint16)


def _shard_hard_labels(message: pb.SyntheticShard, count: int, num_classes: int) -> np.ndarray:
    """int64 (count,) from whichever form the shard holds; `CodecError` for both at once or a wrong byte count."""
    if not message.hard_labels_compact:
        return from_le(message.hard_labels, np.dtype(np.int64), (count,), "hard_labels")
    if message.hard_labels:
        raise CodecError("shard carries its hard labels twice (int64 and compact)")
    return from_le(message.hard_labels_compact, hard_label_dtype(num_classes), (count,), "hard_labels_compact").astype(np.int64)


def _shard_images(message: pb.SyntheticShard, count: int, shape: tuple[int, int, int], max_bytes: int) -> np.ndarray:
    """The shard's images, uint8 (count, H, W, C), from whichever of its two forms it holds.

    Raises `CodecError` for both forms at once, compressed images that would decode to more than
    `max_bytes`, or pages `lossless_images.decode_pages` refuses.
    """
    if not len(message.images_webp):
        return from_le(message.images, np.dtype(np.uint8), (count, *shape), "images")
    if message.images:
        raise CodecError("shard carries its images twice (raw and WebP)")
    decoded = count * math.prod(shape)
    if decoded > max_bytes:
        raise CodecError(f"shard's images would take {decoded} bytes decoded, more than the limit {max_bytes}")
    try:
        return lossless_images.decode_pages(list(message.images_webp), count, shape)
    except lossless_images.LosslessImageError as exc:
        raise CodecError(str(exc)) from None


def _shard_summary(message: pb.SyntheticShard) -> dict:
    """JSON keeps numbers numbers; the older string map is read as strings. `validate_shard` bounds both."""
    if message.summary_json and len(message.summary):
        raise CodecError("shard carries its summary twice (summary and summary_json)")
    if len(message.summary) > MAX_SUMMARY_KEYS:
        raise CodecError(f"summary must be a mapping of at most {MAX_SUMMARY_KEYS} settings")
    if not message.summary_json:
        return dict(message.summary)
    return _summary_json(message.summary_json)


def _summary_json(text: str) -> dict:
    if len(text) > MAX_SUMMARY_JSON:
        raise CodecError(f"summary is longer than {MAX_SUMMARY_JSON} characters")
    summary = _parsed(text, "summary") if text else {}
    if not isinstance(summary, dict):
        raise CodecError("summary must be a JSON object")
    return summary


def check_sendable(shard: Shard) -> None:
    """Raise `CodecError` or `ShardError` unless `shard` is a valid shard of its own shape."""
    if not isinstance(shard, Shard):
        raise CodecError(f"cannot encode {type(shard).__name__}: not a shard")
    images, soft = shard.images, shard.soft_labels
    if not isinstance(images, np.ndarray) or images.ndim != 4 or not isinstance(soft, np.ndarray) or soft.ndim != 2:
        raise CodecError("images must be (N, H, W, C) and soft_labels (N, K) arrays")
    h, w, c = (int(s) for s in images.shape[1:])
    validate_shard(shard, ShardSpec((h, w, c), int(soft.shape[1]), max_images=max(len(images), 1)))


# --- audit candidates -----------------------------------------------------------------------------


def encode_candidate(candidate: AuditCandidate, *, site_id: str, nonce: bytes = b"", recipient_key_id: str = "") -> bytes:
    """`candidate` for `site_id` as envelope bytes: the student's weights (any of `ARRAY_DTYPES`, at most
    `MAX_ARRAYS`) and the released images, uint8 (N, H, W, C). `nonce` and `recipient_key_id` are for
    the sealed form only. Raises `CodecError` on what no site could accept."""
    check_run_id(candidate.run_id)
    if not isinstance(candidate.student_weights, Mapping) or len(candidate.student_weights) > MAX_ARRAYS:
        raise CodecError(f"student weights must be a mapping of at most {MAX_ARRAYS} arrays")
    released = candidate.released_images
    if not isinstance(released, np.ndarray) or released.dtype != np.uint8 or released.ndim != 4:
        raise CodecError("released images must be a uint8 (N, H, W, C) array")
    return wrap(KIND_CANDIDATE, pb.AuditCandidate(
        run_id=candidate.run_id, site_id=site_id, recipient_key_id=recipient_key_id, nonce=nonce,
        student_config_json=json.dumps(candidate.student_config.to_dict()),
        student_weights=[raw_array(name, array) for name, array in candidate.student_weights.items()],
        released_images=raw_array("released_images", released),
        reference_models=candidate.reference_models, lira=candidate.lira,
    ))


@_decoder("audit candidate")
def decode_candidate(data: bytes, *, site_id: str, max_bytes: int = DEFAULT_MAX_CANDIDATE_BYTES) -> AuditCandidate:
    """The plain candidate in `data`, if it is for `site_id`; `CodecError` otherwise."""
    message = unwrap(data, KIND_CANDIDATE, pb.AuditCandidate, max_bytes)
    if message.site_id != site_id:
        raise CodecError(f"candidate is for site {message.site_id[:40]!r}, not {site_id!r}")
    return candidate_of(message)


@_decoder("audit candidate")
def candidate_of(message: pb.AuditCandidate) -> AuditCandidate:
    """An `AuditCandidate` from its message: bounded weights, uint8 (N, H, W, C) images, a bounded config."""
    if len(message.student_weights) > MAX_ARRAYS:
        raise CodecError(f"candidate holds more than {MAX_ARRAYS} weight arrays")
    weights: dict[str, np.ndarray] = {}
    for raw in message.student_weights:
        if raw.name in weights:
            raise CodecError(f"weight array {raw.name[:40]!r} appears twice")
        weights[raw.name] = array_of(raw)
    if not message.HasField("released_images"):
        raise CodecError("candidate has no released images")
    released = array_of(message.released_images)
    if released.dtype != np.uint8 or released.ndim != 4:
        raise CodecError("released images must be a uint8 (N, H, W, C) array")
    _run_id(message.run_id)
    return AuditCandidate(
        run_id=message.run_id,
        student_config=_student_config(message.student_config_json),
        student_weights=weights,
        released_images=released,
        reference_models=int(message.reference_models),
        lira=bool(message.lira),
    )


def _student_config(text: str) -> ClassifierConfig:
    """Bounded (`CONFIG_LIMITS`) so that a candidate cannot ask a site to build an absurdly large network."""
    if len(text) > MAX_CONFIG_JSON:
        raise CodecError("student config is too long")
    data = _parsed(text, "student config")
    if not isinstance(data, dict):
        raise CodecError("student config must be a JSON object")
    try:
        config = ClassifierConfig.from_dict(data)
    except (KeyError, TypeError, ValueError, OverflowError):
        raise CodecError("student config is malformed") from None
    problem = config.out_of_bounds()
    if problem is not None:
        raise CodecError(f"student config's {problem}")
    return config


# --- relabelling ----------------------------------------------------------------------------------


def encode_relabel_request(request: RelabelRequest, *, site_id: str, nonce: bytes = b"", recipient_key_id: str = "") -> bytes:
    """`request` (images uint8 (N, H, W, C)) for `site_id` as envelope bytes; `CodecError` on other images."""
    check_run_id(request.run_id)
    images = request.images
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise CodecError("relabel images must be a uint8 (N, H, W, C) array")
    return wrap(KIND_RELABEL, pb.RelabelRequest(run_id=request.run_id, site_id=site_id, recipient_key_id=recipient_key_id,
                                                nonce=nonce, images=raw_array("images", images),
                                                temperature=float(request.temperature)))


@_decoder("relabel request")
def decode_relabel_request(data: bytes, *, site_id: str, max_bytes: int = DEFAULT_MAX_CANDIDATE_BYTES) -> RelabelRequest:
    """The plain relabelling request in `data`, if it is for `site_id`; `CodecError` otherwise."""
    message = unwrap(data, KIND_RELABEL, pb.RelabelRequest, max_bytes)
    if message.site_id != site_id:
        raise CodecError(f"relabel request is for site {message.site_id[:40]!r}, not {site_id!r}")
    return relabel_request_of(message)


@_decoder("relabel request")
def relabel_request_of(message: pb.RelabelRequest) -> RelabelRequest:
    """A `RelabelRequest` from its message: uint8 (N, H, W, C) images. Sizes are the site's to check (`check_relabel`)."""
    if not message.HasField("images"):
        raise CodecError("relabel request has no images")
    images = array_of(message.images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise CodecError("relabel images must be a uint8 (N, H, W, C) array")
    _run_id(message.run_id)
    return RelabelRequest(run_id=message.run_id, images=images, temperature=float(message.temperature))


def encode_relabel_reply(reply: RelabelReply, *, run_id: str, request: bytes) -> bytes:
    """`reply` (probabilities float32 (N, K)) as envelope bytes, bound to the exact `request` bytes it
    answers; the probabilities travel as float16 (`SOFT_LABEL_WIRE_DTYPE`). Raises `CodecError`."""
    probs = np.asarray(reply.probs)
    if probs.dtype != np.float32 or probs.ndim != 2:
        raise CodecError("labels must be a float32 (N, classes) array")
    wire = probs.astype(SOFT_LABEL_WIRE_DTYPE)
    try:
        check_relabel_reply(wire.astype(np.float32), *probs.shape)  # the rows the coordinator checks
    except ValueError as exc:
        raise CodecError(str(exc)) from None
    return wrap(KIND_RELABEL_REPLY, pb.RelabelReply(site_id=reply.site_id, run_id=check_run_id(run_id),
                                                    request_sha256=sha256(request),
                                                    probs=raw_array("probs", wire)))


@_decoder("relabel reply")
def decode_relabel_reply(data: bytes, *, site_id: str, run_id: str, request: bytes, shape: tuple[int, int]) -> RelabelReply:
    """The labels in `data`, float32 `shape`, if `site_id` wrote exactly that many probabilities (float16,
    or float32 from an older site) for this run and these `request` bytes; `CodecError` otherwise. Their
    values are the caller's to check (`check_relabel_reply`). The size limit follows from `shape`."""
    max_bytes = 4 * int(shape[0]) * int(shape[1]) + REPLY_OVERHEAD
    message = unwrap(data, KIND_RELABEL_REPLY, pb.RelabelReply, max_bytes)
    if message.site_id != site_id or message.run_id != run_id:
        raise CodecError("relabel reply was written for another site or run")
    if message.request_sha256 != sha256(request):
        raise CodecError("relabel reply answers another request than the one sent")
    if (not message.HasField("probs") or message.probs.dtype not in (SOFT_LABEL_WIRE_DTYPE.name, "float32")
            or tuple(message.probs.shape) != tuple(shape)):
        raise CodecError(f"relabel reply holds {message.probs.dtype[:20]!r} {list(message.probs.shape)[:4]} labels, "
                         f"expected {list(shape)} ({SOFT_LABEL_WIRE_DTYPE.name}, or float32 from an older site)")
    return RelabelReply(site_id=site_id, probs=array_of(message.probs).astype(np.float32))


# --- audit reports --------------------------------------------------------------------------------


def encode_audit_report(report: AuditReport, *, run_id: str, candidate: bytes) -> bytes:
    """A site's `AuditReport` for `run_id` as envelope bytes, bound to the exact `candidate` bytes it audited."""
    return wrap(KIND_AUDIT_REPORT, pb.AuditReport(
        site_id=report.site_id, run_id=check_run_id(run_id), results=[_attack_message(r) for r in report.results],
        num_members=report.num_members, num_nonmembers=report.num_nonmembers, candidate_sha256=sha256(candidate),
        near_duplicates_json=json.dumps(report.near_duplicates),
        dp_json="" if report.dp is None else json.dumps(report.dp), settings_json=json.dumps(report.settings),
        utility=None if report.utility is None else pb.UtilityCounts(**report.utility.to_dict()),
    ))


@_decoder("audit report")
def decode_audit_report(data: bytes, *, site_id: str, run_id: str, candidate: bytes,
                        max_bytes: int = DEFAULT_MAX_REPORT_BYTES) -> AuditReport:
    """The report in `data`, if `site_id` wrote it for this run and these exact `candidate` bytes.

    Every value is checked as `AuditReport.from_dict` checks it; any failure raises `CodecError`.
    """
    message = unwrap(data, KIND_AUDIT_REPORT, pb.AuditReport, max_bytes)
    if message.site_id != site_id:
        raise CodecError(f"audit report written for site {message.site_id[:64]!r}, expected {site_id!r}")
    if message.run_id != run_id:
        raise CodecError(f"audit report written for run {message.run_id[:80]!r}, expected {run_id!r}")
    if message.candidate_sha256 != sha256(candidate):
        raise CodecError("audit report is for another candidate than the one sent")
    return AuditReport.from_dict({
        "site_id": message.site_id, "results": [_attack_dict(r) for r in message.results],
        "num_members": message.num_members, "num_nonmembers": message.num_nonmembers,
        "near_duplicates": _json_object(message.near_duplicates_json, "near duplicates", MAX_OBJECT_JSON),
        "dp": _json_object(message.dp_json, "DP accounting", MAX_OBJECT_JSON) if message.dp_json else None,
        "settings": _json_object(message.settings_json, "settings", MAX_OBJECT_JSON),
        "utility": {"support": list(message.utility.support), "student_correct": list(message.utility.student_correct),
                    "teacher_correct": list(message.utility.teacher_correct),
                    "comparator": message.utility.comparator} if message.HasField("utility") else None,
    })


def _interval(pair: tuple[float, float] | list[float]) -> pb.Interval:
    return pb.Interval(lower=float(pair[0]), upper=float(pair[1]))


def _attack_message(result: AttackResult) -> pb.AttackResult:
    message = pb.AttackResult(
        attack=result.attack, target=result.target, num_members=result.num_members, num_nonmembers=result.num_nonmembers,
        auc=result.auc, auc_ci=_interval(result.auc_ci), tpr_at_1pct_fpr=result.tpr_at_1pct_fpr,
        tpr_at_1pct_fpr_ci=_interval(result.tpr_at_1pct_fpr_ci), tpr_at_01pct_fpr=result.tpr_at_01pct_fpr,
        tpr_at_01pct_fpr_ci=_interval(result.tpr_at_01pct_fpr_ci), epsilon_lower_bound=result.epsilon_lower_bound,
        lowest_fpr=result.lowest_fpr, tpr_at_lowest_fpr=result.tpr_at_lowest_fpr,
        tpr_at_lowest_fpr_ci=_interval(result.tpr_at_lowest_fpr_ci),
        roc_fpr=result.roc.get("fpr", []), roc_tpr=result.roc.get("tpr", []),
        histogram_edges=result.histogram.get("edges", []), histogram_members=result.histogram.get("members", []),
        histogram_nonmembers=result.histogram.get("nonmembers", []), histogram_score=result.histogram.get("score", ""),
        description=result.description,
    )
    if result.control is not None:
        c = result.control
        message.control.CopyFrom(pb.ControlResult(auc=c["auc"], auc_ci=_interval(c["auc_ci"]), tpr_at_1pct_fpr=c["tpr_at_1pct_fpr"],
                                                  num_a=c["num_a"], num_b=c["num_b"]))
    for row in result.per_class:
        entry = message.per_class.add(class_name=row["class"], members=row["members"], nonmembers=row["nonmembers"])
        if row.get("auc") is not None:
            entry.auc = row["auc"]
    return message


def _attack_dict(message: pb.AttackResult) -> dict:
    """The `AttackResult.to_dict` form of a message, for `AttackResult.from_dict` to check."""
    return {
        "attack": message.attack, "target": message.target, "description": message.description,
        "num_members": message.num_members, "num_nonmembers": message.num_nonmembers,
        "auc": message.auc, "auc_ci": [message.auc_ci.lower, message.auc_ci.upper],
        "tpr_at_1pct_fpr": message.tpr_at_1pct_fpr,
        "tpr_at_1pct_fpr_ci": [message.tpr_at_1pct_fpr_ci.lower, message.tpr_at_1pct_fpr_ci.upper],
        "tpr_at_01pct_fpr": message.tpr_at_01pct_fpr,
        "tpr_at_01pct_fpr_ci": [message.tpr_at_01pct_fpr_ci.lower, message.tpr_at_01pct_fpr_ci.upper],
        "epsilon_lower_bound": message.epsilon_lower_bound,
        "control": None if not message.HasField("control") else {
            "auc": message.control.auc, "auc_ci": [message.control.auc_ci.lower, message.control.auc_ci.upper],
            "tpr_at_1pct_fpr": message.control.tpr_at_1pct_fpr, "num_a": message.control.num_a, "num_b": message.control.num_b},
        "roc": {"fpr": list(message.roc_fpr), "tpr": list(message.roc_tpr)},
        "histogram": {"edges": list(message.histogram_edges), "members": list(message.histogram_members),
                      "nonmembers": list(message.histogram_nonmembers), "score": message.histogram_score},
        "per_class": [{"class": c.class_name, "members": c.members, "nonmembers": c.nonmembers,
                       "auc": c.auc if c.HasField("auc") else None} for c in message.per_class],
        # a site of an older version leaves these at proto3's zero: absent, not a TPR of 0 at FPR 0
        **({"tpr_at_lowest_fpr": message.tpr_at_lowest_fpr,
            "tpr_at_lowest_fpr_ci": [message.tpr_at_lowest_fpr_ci.lower, message.tpr_at_lowest_fpr_ci.upper]}
           if message.lowest_fpr > 0 else {}),
    }


# --- arrays ---------------------------------------------------------------------------------------


def raw_array(name: str, array: np.ndarray) -> pb.RawArray:
    """`array` (at most `MAX_NDIM` dimensions, a dtype of `ARRAY_DTYPES`) as a `RawArray` of little-endian bytes."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
        raise CodecError(f"array names must be 1 to {MAX_NAME} characters")
    if not isinstance(array, np.ndarray) or array.dtype.name not in ARRAY_DTYPES or array.ndim > MAX_NDIM:
        raise CodecError(f"array {name!r} must be an array of at most {MAX_NDIM} dimensions of one of {', '.join(ARRAY_DTYPES)}")
    return pb.RawArray(name=name, dtype=array.dtype.name, shape=array.shape, data=le_bytes(array))


def array_of(raw: pb.RawArray) -> np.ndarray:
    """A fresh native array from a `RawArray`, built only once dtype, shape and byte count agree; `CodecError` otherwise."""
    if raw.dtype not in ARRAY_DTYPES:
        raise CodecError(f"array {raw.name[:40]!r} has dtype {raw.dtype[:20]!r}, not one of {', '.join(ARRAY_DTYPES)}")
    if not 0 < len(raw.name) <= MAX_NAME:
        raise CodecError(f"array names must be 1 to {MAX_NAME} characters")
    if len(raw.shape) > MAX_NDIM or any(d > MAX_DIM for d in raw.shape):
        raise CodecError(f"array {raw.name[:40]!r} has more than {MAX_NDIM} dimensions or a dimension over {MAX_DIM}")
    return from_le(raw.data, np.dtype(raw.dtype), tuple(raw.shape), f"array {raw.name[:40]!r}")


def le_bytes(array: np.ndarray) -> bytes:
    """Row-major, little-endian bytes, whatever the sender's byte order."""
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def from_le(data: bytes, dtype: np.dtype, shape: tuple[int, ...], name: str) -> np.ndarray:
    """A fresh, writable native array of `dtype` and `shape`, built only once the byte count matches exactly."""
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow whatever the shape
    if len(data) != expected:
        raise CodecError(f"{name} hold {len(data)} bytes, but shape {tuple(shape)} needs {expected}")
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)


# --- helpers --------------------------------------------------------------------------------------


def expect(what: str, got: object, want: object) -> None:
    """Raise `CodecError("<what> <got>, expected <want>")` unless `got == want`."""
    if got != want:
        shown = repr(got[:40]) if isinstance(got, str) else repr(got)
        raise CodecError(f"{what} {shown}, expected {want!r}")


def _run_id(run_id: str) -> None:
    try:
        check_run_id(run_id)
    except ValueError as exc:
        raise CodecError(one_line(exc)) from None


def _json_object(text: str, what: str, limit: int) -> dict:
    if len(text) > limit:
        raise CodecError(f"{what} is longer than {limit} characters")
    data = _parsed(text, what) if text else {}
    if not isinstance(data, dict):
        raise CodecError(f"{what} must be a JSON object")
    return data


def _parsed(text: str, what: str) -> object:
    """A JSON field of a message, through the bounded loader (`shared/json_input.py`)."""
    try:
        return parse_json(text, where=what)
    except JSONInputError as exc:
        raise CodecError(one_line(exc)) from None
