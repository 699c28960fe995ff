"""Flower record encodings of fedkr's messages, for the two Flower adapters only.

Core code never imports this module. Structured metadata travels as JSON in a `ConfigRecord`;
arrays travel in an `ArrayRecord`, which Flower chunks in transit. Decoders raise `ValueError`
with a one-line reason on anything malformed, so a bad reply is rejected, never a crash.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from .classifier import ClassifierConfig
from .reports import AuditCandidate, AuditReport, FitPlan, FitReport, RelabelReply, RelabelRequest
from .shard import Shard, SynthesisRequest

MSG_TRAIN = "train"
MSG_SYNTHESIZE = "query.synthesize"
MSG_AUDIT = "query.audit"
MSG_RELABEL = "query.relabel"

#: The largest sealed message either side reads (a candidate holds the student's weights too).
MAX_SEALED_BYTES = 256 * 2**20

T = TypeVar("T")


def _decoder(fn: Callable[[RecordDict], T]) -> Callable[[RecordDict], T]:
    """Every decoder raises ValueError, and only ValueError, on malformed content."""

    @functools.wraps(fn)
    def wrapper(content: RecordDict) -> T:
        try:
            return fn(content)
        except ValueError:
            raise
        except Exception as exc:  # noqa: BLE001 - a remote party's bytes: whatever numpy or json raises is "malformed"
            raise ValueError(f"malformed {fn.__name__.removeprefix('decode_').replace('_', ' ')}: "
                             f"{exc.__class__.__name__}: {exc}") from None

    return wrapper


def _json_record(payload: dict) -> ConfigRecord:
    return ConfigRecord({"json": json.dumps(payload)})


def _read_json(content: RecordDict, key: str) -> dict:
    try:
        return json.loads(str(content.config_records[key]["json"]))
    except (KeyError, TypeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"message has no readable '{key}' record ({exc.__class__.__name__})") from None


def encode_fit_plan(plan: FitPlan) -> RecordDict:
    return RecordDict({"plan": _json_record(plan.to_dict())})


@_decoder
def decode_fit_plan(content: RecordDict) -> FitPlan:
    return FitPlan.from_dict(_read_json(content, "plan"))


def encode_fit_report(report: FitReport) -> RecordDict:
    return RecordDict({"fit": _json_record(report.to_dict())})


@_decoder
def decode_fit_report(content: RecordDict) -> FitReport:
    return FitReport.from_dict(_read_json(content, "fit"))


def encode_request(request: SynthesisRequest) -> RecordDict:
    return RecordDict({"request": _json_record({
        "run_id": request.run_id, "round": request.round,
        "per_class": list(request.per_class), "temperature": request.temperature, "oversample": request.oversample,
    })})


@_decoder
def decode_request(content: RecordDict) -> SynthesisRequest:
    data = _read_json(content, "request")
    return SynthesisRequest(
        run_id=str(data["run_id"]), round=int(data["round"]),
        per_class=tuple(int(n) for n in data["per_class"]), temperature=float(data["temperature"]),
        oversample=float(data.get("oversample", 1.0)),
    )


def _sealed_record(blob: bytes) -> ArrayRecord:
    """Sealed bytes ride as a uint8 array, which Flower chunks in transit like any other array."""
    return ArrayRecord({"blob": Array(np.frombuffer(blob, dtype=np.uint8).copy())})


def _read_sealed(content: RecordDict, key: str) -> bytes:
    """Check the array's declared type and size before numpy parses a single byte of it."""
    array = content.array_records[key]["blob"]
    shape = tuple(array.shape)
    if array.stype != "numpy.ndarray" or array.dtype != "uint8" or len(shape) != 1:
        raise ValueError(f"sealed '{key}' must be a flat uint8 array")
    if shape[0] > MAX_SEALED_BYTES or len(array.data) > MAX_SEALED_BYTES + 4096:
        raise ValueError(f"sealed '{key}' is larger than {MAX_SEALED_BYTES} bytes")
    blob = array.numpy()
    if blob.dtype != np.uint8 or blob.shape != shape:
        raise ValueError(f"sealed '{key}' does not hold what it declares")
    return blob.tobytes()


def encode_shard(shard: Shard | bytes) -> RecordDict:
    if isinstance(shard, bytes):
        return RecordDict({"sealed_shard": _sealed_record(shard)})
    arrays = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in shard.to_arrays().items()})
    meta = _json_record({
        "site_id": shard.site_id, "round": shard.round,
        "declared_count": shard.declared_count, "summary": shard.summary,
    })
    return RecordDict({"shard": arrays, "shard_meta": meta})


@_decoder
def decode_shard(content: RecordDict) -> Shard | bytes:
    """A plain shard, or the sealed bytes for the coordinator's intake to open."""
    if "sealed_shard" in content.array_records:
        return _read_sealed(content, "sealed_shard")
    meta = _read_json(content, "shard_meta")
    arrays = content.array_records["shard"]
    return Shard(
        site_id=str(meta["site_id"]),
        round=int(meta["round"]),
        images=arrays["images"].numpy(),
        soft_labels=arrays["soft_labels"].numpy(),
        hard_labels=arrays["hard_labels"].numpy(),
        declared_count=int(meta["declared_count"]),
        summary=dict(meta.get("summary", {})),
    )


def encode_candidate(candidate: AuditCandidate | bytes) -> RecordDict:
    if isinstance(candidate, bytes):
        return RecordDict({"sealed_candidate": _sealed_record(candidate)})
    weights = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in candidate.student_weights.items()})
    released = ArrayRecord({"images": Array(np.ascontiguousarray(candidate.released_images))})
    meta = _json_record({"run_id": candidate.run_id, "student_config": candidate.student_config.to_dict(),
                         "reference_models": candidate.reference_models, "lira": candidate.lira})
    return RecordDict({"student": weights, "released": released, "candidate": meta})


@_decoder
def decode_candidate(content: RecordDict) -> AuditCandidate | bytes:
    if "sealed_candidate" in content.array_records:
        return _read_sealed(content, "sealed_candidate")
    meta = _read_json(content, "candidate")
    weights = {k: v.numpy() for k, v in content.array_records["student"].items()}
    return AuditCandidate(
        run_id=str(meta["run_id"]),
        student_config=ClassifierConfig.from_dict(meta["student_config"]),
        student_weights=weights,
        released_images=content.array_records["released"]["images"].numpy(),
        reference_models=int(meta.get("reference_models", 2)),
        lira=bool(meta.get("lira", False)),
    )


def encode_audit_report(report: AuditReport | bytes) -> RecordDict:
    if isinstance(report, bytes):
        return RecordDict({"signed_audit": _sealed_record(report)})
    return RecordDict({"audit": _json_record(report.to_dict())})


@_decoder
def decode_audit_report(content: RecordDict) -> AuditReport | bytes:
    """A plain report, or the signed bytes for the coordinator's intake to check."""
    if "signed_audit" in content.array_records:
        return _read_sealed(content, "signed_audit")
    return AuditReport.from_dict(_read_json(content, "audit"))


def encode_relabel_request(request: RelabelRequest | bytes) -> RecordDict:
    if isinstance(request, bytes):
        return RecordDict({"sealed_relabel": _sealed_record(request)})
    return RecordDict({"relabel_images": ArrayRecord({"images": Array(np.ascontiguousarray(request.images))}),
                       "relabel": _json_record({"run_id": request.run_id, "temperature": request.temperature})})


@_decoder
def decode_relabel_request(content: RecordDict) -> RelabelRequest | bytes:
    if "sealed_relabel" in content.array_records:
        return _read_sealed(content, "sealed_relabel")
    meta = _read_json(content, "relabel")
    return RelabelRequest(run_id=str(meta["run_id"]), images=content.array_records["relabel_images"]["images"].numpy(),
                          temperature=float(meta["temperature"]))


def encode_relabel_reply(reply: RelabelReply | bytes) -> RecordDict:
    if isinstance(reply, bytes):
        return RecordDict({"signed_labels": _sealed_record(reply)})
    return RecordDict({"labels": ArrayRecord({"probs": Array(np.ascontiguousarray(reply.probs))}),
                       "labels_meta": _json_record({"site_id": reply.site_id})})


@_decoder
def decode_relabel_reply(content: RecordDict) -> RelabelReply | bytes:
    """Plain labels, or the signed bytes for the coordinator's intake to check; shape and values are
    checked by the coordinator, which knows how many images it sent."""
    if "signed_labels" in content.array_records:
        return _read_sealed(content, "signed_labels")
    meta = _read_json(content, "labels_meta")
    array = content.array_records["labels"]["probs"]
    if array.dtype != "float32" or len(tuple(array.shape)) != 2:
        raise ValueError("labels must be a float32 (N, classes) array")
    return RelabelReply(site_id=str(meta["site_id"]), probs=array.numpy())
