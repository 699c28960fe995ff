"""Shards and audit candidates on the wire: protobuf bodies, signed by their author, sealed to their reader.

In deployment the SuperLink stores every message it relays, so nothing that holds images may reach it
in the clear. A site signs each shard with its Ed25519 key and seals it to the coordinator's X25519
key; the coordinator does the same with each audit candidate, sealed to one site (`shared/sealing.py`
has the envelope). The signed body repeats the run id, round, sender and recipient key id, so a shard
cannot be moved to another run, round, site or coordinator, and carries a random nonce, so it cannot
be replayed.

Decoding treats the blob as hostile: the size is checked before parsing, every length and shape is
checked against the receiver's own expectations before an array is built, and every failure raises
`ShardWireError` (shards) or `SealError` (candidates), both `ValueError`s with one-line reasons.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from google.protobuf.message import DecodeError

from fedkr.v1 import messages_pb2 as pb

from .classifier import ClassifierConfig
from .keys import key_id
from .reports import AuditCandidate, AuditReport, RelabelRequest, check_run_id
from .sealing import Header, SealError, open_sealed, seal, sign, verify
from .shard import MAX_SUMMARY_KEYS, Shard, ShardError, ShardSpec, validate_shard

DEFAULT_MAX_SHARD_BYTES = 64 * 2**20
DEFAULT_MAX_CANDIDATE_BYTES = 256 * 2**20
KIND_SHARD = "shard"
KIND_CANDIDATE = "audit_candidate"
KIND_RELABEL = "relabel_request"
COORDINATOR = "coordinator"
NONCE_BYTES = 32
MAX_SUMMARY_JSON = 16 * 1024
MAX_CONFIG_JSON = 4 * 1024
MAX_CONFIG_VALUE = 2**16
MAX_ARRAYS = 1024
MAX_NDIM = 8
MAX_DIM = 2**31 - 1
MAX_NAME = 200
ARRAY_DTYPES = ("float16", "float32", "float64", "int32", "int64", "uint8")

# What parsing and array building can raise on hostile input; each becomes a one-line rejection.
_MALFORMED = (DecodeError, ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError,
              UnicodeError, struct.error)
_SITE_ID = re.compile(r"[^\x00-\x1f\x7f]{1,200}")


class ShardWireError(ShardError):
    """A sealed shard that cannot be sealed, opened or accepted; the message says why in one line."""


class ReplayGuard:
    """Nonces of accepted shards, per site; with a file, they survive a coordinator restart.

    The file has one ``<nonce hex> <site id>`` line per accepted shard and is appended to (and
    flushed to disk) before a shard is accepted, so a crash cannot forget a nonce it acted on.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._path = None if path is None else Path(path)
        self._seen: set[tuple[str, bytes]] = set()
        self._lock = threading.Lock()
        self._cut_short = False  # the file ends mid-line: the next entry must start on a line of its own
        if self._path is not None and self._path.is_file():
            text = self._path.read_text(encoding="utf-8", errors="replace")
            self._cut_short = bool(text) and not text.endswith("\n")
            for line in text.splitlines():
                nonce_hex, _, site_id = line.partition(" ")
                try:
                    self._seen.add((site_id, bytes.fromhex(nonce_hex)))
                except ValueError:
                    continue  # a line cut short by a crash while writing: its shard was never accepted

    def check_and_remember(self, site_id: str, nonce: bytes) -> None:
        """Raise `ShardWireError` if `site_id` sent `nonce` before; otherwise remember it."""
        if not isinstance(site_id, str) or _SITE_ID.fullmatch(site_id) is None:
            raise ShardWireError("invalid site id for the replay guard")
        if not isinstance(nonce, bytes) or not 16 <= len(nonce) <= 64:
            raise ShardWireError("shard nonce must be 16 to 64 bytes")
        entry = (site_id, nonce)
        with self._lock:
            if entry in self._seen:
                raise ShardWireError(f"replayed shard from {site_id!r}: its nonce was seen before")
            if self._path is not None:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                with self._path.open("a", encoding="utf-8") as fh:
                    fh.write(("\n" if self._cut_short else "") + f"{nonce.hex()} {site_id}\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                self._cut_short = False
            self._seen.add(entry)

    def __len__(self) -> int:
        return len(self._seen)


# --- shards ---------------------------------------------------------------------------------------


def seal_shard(shard: Shard, *, run_id: str, signer: Ed25519PrivateKey, recipient: X25519PublicKey) -> bytes:
    """Sign `shard` as its site and seal it to the coordinator's `recipient` key.

    The shard is validated against its own shape first, so a site never sends what no coordinator
    could accept.
    """
    try:
        _check_sendable(shard)
        check_run_id(run_id)
        recipient_id = key_id(recipient)
        n = len(shard)
        _, height, width, channels = shard.images.shape
        body = pb.SyntheticShard(
            site_id=shard.site_id, run_id=run_id, round=shard.round, count=n, height=height, width=width,
            channels=channels, images=_le_bytes(shard.images), num_classes=shard.soft_labels.shape[1],
            soft_labels=_le_bytes(shard.soft_labels), hard_labels=_le_bytes(shard.hard_labels),
            nonce=os.urandom(NONCE_BYTES), recipient_key_id=recipient_id, summary_json=json.dumps(shard.summary),
        )
        payload = sign(body.SerializeToString(), kind=KIND_SHARD, signer=signer)
        return seal(payload, Header(KIND_SHARD, shard.site_id, run_id, shard.round, recipient_id), recipient)
    except ShardWireError:
        raise
    except ValueError as exc:  # SealError, ShardError, an invalid run id or an out-of-range field
        raise ShardWireError(f"cannot seal shard: {_one_line(exc)}") from None


def open_shard(
    blob: bytes,
    *,
    recipient_key: X25519PrivateKey,
    site_keys: Mapping[str, Ed25519PublicKey],
    expected_site: str,
    run_id: str,
    round: int,
    spec: ShardSpec,
    replay: ReplayGuard,
    expected_count: int | None = None,
    max_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> Shard:
    """The shard in `blob`, if `expected_site` signed it for this coordinator, run and round, once.

    Its nonce is remembered only once everything else has passed, so a rejected blob does not use up
    a nonce and the guard holds only shards that were accepted.
    """
    try:
        return _open_shard(blob, recipient_key, site_keys, expected_site, run_id, round, spec, replay,
                           expected_count, max_bytes)
    except ShardWireError:
        raise
    except (SealError, ShardError) as exc:
        raise ShardWireError(_one_line(exc)) from None
    except _MALFORMED as exc:
        raise ShardWireError(f"malformed shard ({type(exc).__name__})") from None


def _open_shard(
    blob: bytes, recipient_key: X25519PrivateKey, site_keys: Mapping[str, Ed25519PublicKey], expected_site: str,
    run_id: str, round: int, spec: ShardSpec, replay: ReplayGuard, expected_count: int | None, max_bytes: int,
) -> Shard:
    site_key = site_keys.get(expected_site)
    if site_key is None:
        raise ShardWireError(f"unknown site {expected_site!r}: no signing key on record")
    header, plaintext = open_sealed(blob, kind=KIND_SHARD, recipient_key=recipient_key, max_bytes=max_bytes)
    _expect("shard sender", header.sender, expected_site)
    _expect("wrong run id: shard is for run", header.run_id, run_id)
    _expect("wrong round: shard is for round", header.round, round)
    message = pb.SyntheticShard()
    message.ParseFromString(verify(plaintext, kind=KIND_SHARD, key=site_key))
    # The header is only as trustworthy as the signed body that repeats it.
    _expect("shard's signed site id", message.site_id, expected_site)
    _expect("wrong run id: signed shard is for run", message.run_id, run_id)
    _expect("wrong round: signed shard is for round", message.round, round)
    if message.recipient_key_id != header.recipient_key_id:
        raise ShardWireError("shard was signed for another coordinator key (re-sealed by a third party)")
    if len(message.nonce) != NONCE_BYTES:
        raise ShardWireError(f"shard nonce must be {NONCE_BYTES} bytes")
    shard = _decode_shard(message, spec)
    with np.errstate(all="ignore"):  # overflowing sums of hostile soft labels are rejected, not warned about
        validate_shard(shard, spec, expected_count)
    replay.check_and_remember(expected_site, message.nonce)
    return shard


def _decode_shard(message: pb.SyntheticShard, spec: ShardSpec) -> Shard:
    """Arrays built only once their sizes agree with the receiver's spec and the bytes present."""
    n = message.count
    if n > spec.max_images:
        raise ShardWireError(f"shard declares {n} images, more than the limit {spec.max_images}")
    shape = (message.height, message.width, message.channels)
    if shape != tuple(spec.image_shape):
        raise ShardWireError(f"images are {'x'.join(map(str, shape))}, expected {'x'.join(map(str, spec.image_shape))}")
    if message.num_classes != spec.num_classes:
        raise ShardWireError(f"shard has {message.num_classes} classes, expected {spec.num_classes}")
    return Shard(
        site_id=message.site_id,
        round=message.round,
        images=_from_le(message.images, np.dtype(np.uint8), (n, *shape), "images"),
        soft_labels=_from_le(message.soft_labels, np.dtype(np.float32), (n, spec.num_classes), "soft_labels"),
        hard_labels=_from_le(message.hard_labels, np.dtype(np.int64), (n,), "hard_labels"),
        declared_count=n,
        summary=_decode_summary(message),
    )


def _decode_summary(message: pb.SyntheticShard) -> dict:
    """JSON keeps numbers numbers; the older string map is read as strings. `validate_shard` bounds both."""
    text = message.summary_json
    if text and len(message.summary):
        raise ShardWireError("shard carries its summary twice (summary and summary_json)")
    if len(message.summary) > MAX_SUMMARY_KEYS:
        raise ShardWireError(f"summary must be a mapping of at most {MAX_SUMMARY_KEYS} settings")
    if not text:
        return dict(message.summary)
    if len(text) > MAX_SUMMARY_JSON:
        raise ShardWireError(f"summary is longer than {MAX_SUMMARY_JSON} characters")
    summary = json.loads(text)
    if not isinstance(summary, dict):
        raise ShardWireError("summary must be a JSON object")
    return summary


def _check_sendable(shard: Shard) -> None:
    if not isinstance(shard, Shard):
        raise ShardWireError(f"cannot seal {type(shard).__name__}: not a shard")
    images, soft = shard.images, shard.soft_labels
    if not isinstance(images, np.ndarray) or images.ndim != 4 or not isinstance(soft, np.ndarray) or soft.ndim != 2:
        raise ShardWireError("cannot seal shard: images must be (N, H, W, C) and soft_labels (N, K) arrays")
    h, w, c = (int(s) for s in images.shape[1:])
    validate_shard(shard, ShardSpec((h, w, c), int(soft.shape[1]), max_images=max(len(images), 1)))


# --- audit candidates -----------------------------------------------------------------------------


def seal_candidate(candidate: AuditCandidate, *, site_id: str, signer: Ed25519PrivateKey, recipient: X25519PublicKey) -> bytes:
    """Sign `candidate` as the coordinator and seal it to `site_id`'s `recipient` key."""
    try:
        check_run_id(candidate.run_id)
        if not isinstance(candidate.student_weights, Mapping) or len(candidate.student_weights) > MAX_ARRAYS:
            raise SealError(f"student weights must be a mapping of at most {MAX_ARRAYS} arrays")
        released = candidate.released_images
        if not isinstance(released, np.ndarray) or released.dtype != np.uint8 or released.ndim != 4:
            raise SealError("released images must be a uint8 (N, H, W, C) array")
        recipient_id = key_id(recipient)
        body = pb.AuditCandidate(
            run_id=candidate.run_id, site_id=site_id, recipient_key_id=recipient_id, nonce=os.urandom(NONCE_BYTES),
            student_config_json=json.dumps(candidate.student_config.to_dict()),
            student_weights=[_raw_array(name, array) for name, array in candidate.student_weights.items()],
            released_images=_raw_array("released_images", released),
            reference_models=candidate.reference_models, lira=candidate.lira,
        )
        return _seal_from_coordinator(body, KIND_CANDIDATE, candidate.run_id, recipient_id, signer, recipient)
    except SealError:
        raise
    except (ValueError, TypeError, AttributeError) as exc:
        raise SealError(f"cannot seal candidate: {_one_line(exc)}") from None


def open_candidate(
    blob: bytes,
    *,
    recipient_key: X25519PrivateKey,
    coordinator_key: Ed25519PublicKey,
    site_id: str,
    max_bytes: int = DEFAULT_MAX_CANDIDATE_BYTES,
) -> AuditCandidate:
    """The candidate in `blob`, if the coordinator signed it for this site and this site's key."""
    try:
        return _open_candidate(blob, recipient_key, coordinator_key, site_id, max_bytes)
    except SealError:
        raise
    except _MALFORMED as exc:  # checked on the way: never a ShardWireError here, which is no SealError
        raise SealError(f"malformed audit candidate ({type(exc).__name__})") from None


def _open_candidate(blob: bytes, recipient_key: X25519PrivateKey, coordinator_key: Ed25519PublicKey, site_id: str,
                    max_bytes: int) -> AuditCandidate:
    message = _open_from_coordinator(blob, KIND_CANDIDATE, "candidate", pb.AuditCandidate(), recipient_key, coordinator_key,
                                     site_id, max_bytes)
    if len(message.student_weights) > MAX_ARRAYS:
        raise SealError(f"candidate holds more than {MAX_ARRAYS} weight arrays")
    weights: dict[str, np.ndarray] = {}
    for raw in message.student_weights:
        if raw.name in weights:
            raise SealError(f"weight array {raw.name[:40]!r} appears twice")
        weights[raw.name] = _array_of(raw)
    if not message.HasField("released_images"):
        raise SealError("candidate has no released images")
    released = _array_of(message.released_images)
    if released.dtype != np.uint8 or released.ndim != 4:
        raise SealError("released images must be a uint8 (N, H, W, C) array")
    try:
        check_run_id(message.run_id)
    except ValueError as exc:
        raise SealError(_one_line(exc)) from None
    return AuditCandidate(
        run_id=message.run_id,
        student_config=_decode_config(message.student_config_json),
        student_weights=weights,
        released_images=released,
        reference_models=int(message.reference_models),
        lira=bool(message.lira),
    )


# --- relabelling requests ------------------------------------------------------------------------


def seal_relabel(request: RelabelRequest, *, site_id: str, signer: Ed25519PrivateKey, recipient: X25519PublicKey) -> bytes:
    """Sign `request` as the coordinator and seal it to `site_id`'s `recipient` key."""
    try:
        check_run_id(request.run_id)
        images = request.images
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
            raise SealError("relabel images must be a uint8 (N, H, W, C) array")
        recipient_id = key_id(recipient)
        body = pb.RelabelRequest(run_id=request.run_id, site_id=site_id, recipient_key_id=recipient_id,
                                 nonce=os.urandom(NONCE_BYTES), images=_raw_array("images", images),
                                 temperature=float(request.temperature))
        return _seal_from_coordinator(body, KIND_RELABEL, request.run_id, recipient_id, signer, recipient)
    except SealError:
        raise
    except (ValueError, TypeError, AttributeError) as exc:
        raise SealError(f"cannot seal relabel request: {_one_line(exc)}") from None


def open_relabel(
    blob: bytes,
    *,
    recipient_key: X25519PrivateKey,
    coordinator_key: Ed25519PublicKey,
    site_id: str,
    max_bytes: int = DEFAULT_MAX_CANDIDATE_BYTES,
) -> RelabelRequest:
    """The request in `blob`, if the coordinator signed it for this site and this site's key."""
    try:
        message = _open_from_coordinator(blob, KIND_RELABEL, "relabel request", pb.RelabelRequest(), recipient_key,
                                         coordinator_key, site_id, max_bytes)
        if not message.HasField("images"):
            raise SealError("relabel request has no images")
        images = _array_of(message.images)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise SealError("relabel images must be a uint8 (N, H, W, C) array")
        check_run_id(message.run_id)
        return RelabelRequest(run_id=message.run_id, images=images, temperature=float(message.temperature))
    except SealError:
        raise
    except _MALFORMED as exc:
        raise SealError(f"malformed relabel request ({type(exc).__name__})") from None


def _open_from_coordinator(blob: bytes, kind: str, what: str, message, recipient_key: X25519PrivateKey,  # type: ignore[no-untyped-def]
                           coordinator_key: Ed25519PublicKey, site_id: str, max_bytes: int):
    """Open, verify and parse a message the coordinator sealed to one site: what every such message must
    satisfy (sender, signature, addressed site, run id and site key both signed and on the envelope, nonce)."""
    header, plaintext = open_sealed(blob, kind=kind, recipient_key=recipient_key, max_bytes=max_bytes)
    if header.sender != COORDINATOR:
        raise SealError(f"{what} sent by {header.sender[:40]!r}, not the coordinator")
    message.ParseFromString(verify(plaintext, kind=kind, key=coordinator_key))
    if message.site_id != site_id:
        raise SealError(f"{what} is for site {message.site_id[:40]!r}, not {site_id!r}")
    if message.run_id != header.run_id:
        raise SealError(f"{what}'s signed run id differs from its envelope's")
    if message.recipient_key_id != header.recipient_key_id:
        raise SealError(f"{what} was signed for another site key (re-sealed by a third party)")
    if len(message.nonce) != NONCE_BYTES:
        raise SealError(f"{what} nonce must be {NONCE_BYTES} bytes")
    return message


def _seal_from_coordinator(body, kind: str, run_id: str, recipient_id: str, signer: Ed25519PrivateKey,  # type: ignore[no-untyped-def]
                           recipient: X25519PublicKey) -> bytes:
    payload = sign(body.SerializeToString(), kind=kind, signer=signer)
    return seal(payload, Header(kind, COORDINATOR, run_id, 0, recipient_id), recipient)


def _decode_config(text: str) -> ClassifierConfig:
    """Bounded so that a candidate cannot ask a site to build an absurdly large network."""
    if len(text) > MAX_CONFIG_JSON:
        raise SealError("student config is too long")
    data = json.loads(text)
    if not isinstance(data, dict):
        raise SealError("student config must be a JSON object")
    try:
        config = ClassifierConfig.from_dict(data)
    except (KeyError, TypeError, ValueError, OverflowError):
        raise SealError("student config is malformed") from None
    if not all(0 < value <= MAX_CONFIG_VALUE for value in config.to_dict().values()):
        raise SealError(f"student config values must lie in [1, {MAX_CONFIG_VALUE}]")
    return config


# --- arrays ---------------------------------------------------------------------------------------


def _raw_array(name: str, array: np.ndarray) -> pb.RawArray:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
        raise SealError(f"array names must be 1 to {MAX_NAME} characters")
    if not isinstance(array, np.ndarray) or array.dtype.name not in ARRAY_DTYPES or array.ndim > MAX_NDIM:
        raise SealError(f"array {name!r} must be an array of at most {MAX_NDIM} dimensions of one of {', '.join(ARRAY_DTYPES)}")
    return pb.RawArray(name=name, dtype=array.dtype.name, shape=array.shape, data=_le_bytes(array))


def _array_of(raw: pb.RawArray) -> np.ndarray:
    if raw.dtype not in ARRAY_DTYPES:
        raise SealError(f"array {raw.name[:40]!r} has dtype {raw.dtype[:20]!r}, not one of {', '.join(ARRAY_DTYPES)}")
    if not 0 < len(raw.name) <= MAX_NAME:
        raise SealError(f"array names must be 1 to {MAX_NAME} characters")
    if len(raw.shape) > MAX_NDIM or any(d > MAX_DIM for d in raw.shape):
        raise SealError(f"array {raw.name[:40]!r} has more than {MAX_NDIM} dimensions or a dimension over {MAX_DIM}")
    try:
        return _from_le(raw.data, np.dtype(raw.dtype), tuple(raw.shape), f"array {raw.name[:40]!r}")
    except ShardWireError as exc:
        raise SealError(str(exc)) from None


def _le_bytes(array: np.ndarray) -> bytes:
    """Row-major, little-endian bytes, whatever the sender's byte order."""
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _from_le(data: bytes, dtype: np.dtype, shape: tuple[int, ...], name: str) -> np.ndarray:
    """A fresh, writable native array, built only once the byte count matches the shape exactly."""
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow whatever the shape
    if len(data) != expected:
        raise ShardWireError(f"{name} hold {len(data)} bytes, but shape {tuple(shape)} needs {expected}")
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)


# --- helpers --------------------------------------------------------------------------------------


def _expect(what: str, got: object, want: object) -> None:
    if got != want:
        shown = repr(got[:40]) if isinstance(got, str) else repr(got)
        raise ShardWireError(f"{what} {shown}, expected {want!r}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


# --- audit reports: signed by the site, bound to the candidate it audited ---------------------------

KIND_AUDIT_REPORT = "audit_report"
DEFAULT_MAX_REPORT_BYTES = 4 * 2**20


def sign_audit_report(report: AuditReport, *, run_id: str, candidate_blob: bytes, signer: Ed25519PrivateKey) -> bytes:
    """The site's verdict material, signed and tied to the exact sealed candidate it attacked.

    Without this, whoever relays messages (the SuperLink) could forge a passing report, or replay
    a site's genuine report on an older candidate as the verdict on a new one.
    """
    body = json.dumps({
        "site_id": report.site_id,
        "run_id": run_id,
        "candidate_sha256": hashlib.sha256(candidate_blob).hexdigest(),
        "report": report.to_dict(),
    }, sort_keys=True, allow_nan=False).encode()
    return sign(body, kind=KIND_AUDIT_REPORT, signer=signer)


def open_audit_report(
    blob: bytes, *, site_key: Ed25519PublicKey, site_id: str, run_id: str, candidate_blob: bytes,
    max_bytes: int = DEFAULT_MAX_REPORT_BYTES,
) -> AuditReport:
    """The report, if `site_id`'s registered key signed it for exactly this candidate; `SealError` otherwise."""
    if not isinstance(blob, (bytes, bytearray)) or len(blob) > max_bytes:
        raise SealError(f"audit report is not bytes of at most {max_bytes} bytes")
    body = verify(bytes(blob), kind=KIND_AUDIT_REPORT, key=site_key)
    try:
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        if data.get("site_id") != site_id:
            raise SealError(f"audit report signed for site {str(data.get('site_id'))[:64]!r}, expected {site_id!r}")
        if data.get("run_id") != run_id:
            raise SealError(f"audit report signed for run {str(data.get('run_id'))[:80]!r}, expected {run_id!r}")
        if data.get("candidate_sha256") != hashlib.sha256(candidate_blob).hexdigest():
            raise SealError("audit report is for another candidate than the one sent")
        report = AuditReport.from_dict(data["report"])
    except SealError:
        raise
    except Exception as exc:  # noqa: BLE001 - a remote party's bytes: any failure is a malformed report
        raise SealError(f"malformed audit report: {type(exc).__name__}") from None
    if report.site_id != site_id:
        raise SealError("audit report's inner site differs from what was signed")
    return report


# --- relabel replies: signed by the site, bound to the request they answer -------------------------

KIND_RELABEL_REPLY = "relabel_reply"


def sign_relabel_reply(probs: np.ndarray, *, site_id: str, run_id: str, request_blob: bytes, signer: Ed25519PrivateKey) -> bytes:
    """A site's labels, signed and tied to the exact sealed request: they become the student's targets,
    so whoever relays messages must be able neither to forge them nor to replay older ones."""
    probs = np.asarray(probs)
    if probs.dtype != np.float32 or probs.ndim != 2:
        raise SealError("labels must be a float32 (N, classes) array")
    header = json.dumps({"site_id": site_id, "run_id": run_id, "request_sha256": hashlib.sha256(request_blob).hexdigest(),
                         "shape": list(probs.shape)}, sort_keys=True).encode()
    return sign(struct.pack("<I", len(header)) + header + _le_bytes(probs), kind=KIND_RELABEL_REPLY, signer=signer)


def open_relabel_reply(blob: bytes, *, site_key: Ed25519PublicKey, site_id: str, run_id: str, request_blob: bytes,
                       shape: tuple[int, int]) -> np.ndarray:
    """The labels, if `site_id`'s key signed exactly `shape` of them for this request; `SealError` otherwise."""
    expected = 4 * shape[0] * shape[1]
    if not isinstance(blob, (bytes, bytearray)) or len(blob) > expected + 64 * 1024:
        raise SealError("relabel reply is not bytes of the expected size")
    body = verify(bytes(blob), kind=KIND_RELABEL_REPLY, key=site_key)
    try:
        (length,) = struct.unpack_from("<I", body)
        data = json.loads(body[4:4 + length])
        if data.get("site_id") != site_id or data.get("run_id") != run_id:
            raise SealError("relabel reply was signed for another site or run")
        if data.get("request_sha256") != hashlib.sha256(request_blob).hexdigest():
            raise SealError("relabel reply answers another request than the one sent")
        if tuple(data.get("shape", ())) != tuple(shape):
            raise SealError(f"relabel reply holds {data.get('shape')} labels, expected {list(shape)}")
        return _from_le(body[4 + length:], np.dtype(np.float32), tuple(shape), "labels")
    except SealError:
        raise
    except Exception as exc:  # noqa: BLE001 - a remote party's bytes: any failure is a malformed reply
        raise SealError(f"malformed relabel reply: {type(exc).__name__}") from None
