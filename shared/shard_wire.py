"""Deployment's form of fedkr's messages: the codec's bytes, signed by their author, sealed to their reader.

In deployment the SuperLink stores every message it relays, so nothing that holds images may reach it
in the clear. Each message is first encoded by `shared/codec.py`, exactly as in simulation; a site
signs those bytes with its Ed25519 key and, for a shard, seals the signed bytes to the coordinator's
X25519 key; the coordinator does the same with each audit candidate and relabelling request, sealed
to one site (`shared/sealing.py` has the envelope). Audit reports and relabelling replies are signed,
not sealed: they hold metrics and labels of the coordinator's own images. A signed body repeats the
run id, round, sender and recipient key id, so a shard cannot be moved to another run, round, site or
coordinator, and carries a random nonce, so it cannot be replayed; a reply carries the SHA-256 of the
exact sealed request it answers.

Opening treats the blob as hostile: the size is checked before parsing, every length and shape is
checked against the receiver's own expectations before an array is built, and every failure raises
`ShardWireError` (shards) or `SealError` (everything else), both `ValueError`s with one-line reasons.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from fedkr.v1 import messages_pb2 as pb

from . import codec
from .codec import (
    DEFAULT_MAX_CANDIDATE_BYTES,
    DEFAULT_MAX_REPORT_BYTES,
    DEFAULT_MAX_SHARD_BYTES,
    KIND_AUDIT_REPORT,
    KIND_CANDIDATE,
    KIND_RELABEL,
    KIND_RELABEL_REPLY,
    KIND_SHARD,
    MALFORMED,
    REPLY_OVERHEAD,
    CodecError,
    one_line,
)
from .keys import key_id
from .reports import AuditCandidate, AuditReport, RelabelReply, RelabelRequest
from .sealing import Header, SealError, open_sealed, seal, sign, verify
from .shard import Shard, ShardError, ShardSpec, validate_shard

COORDINATOR = "coordinator"
NONCE_BYTES = 32
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
    """`codec.encode_shard` bytes of `shard`, with a fresh nonce and the recipient's key id, signed as its
    site by `signer` and sealed to the coordinator's `recipient` key: the bytes that leave the site.

    The shard is validated against its own shape first, so a site never sends what no coordinator
    could accept; any failure raises `ShardWireError`.
    """
    try:
        recipient_id = key_id(recipient)
        data = codec.encode_shard(shard, run_id=run_id, nonce=os.urandom(NONCE_BYTES), recipient_key_id=recipient_id)
        payload = sign(data, kind=KIND_SHARD, signer=signer)
        return seal(payload, Header(KIND_SHARD, shard.site_id, run_id, shard.round, recipient_id), recipient)
    except ShardWireError:
        raise
    except (ValueError, AttributeError) as exc:  # SealError, ShardError, CodecError, an invalid run id or field
        raise ShardWireError(f"cannot seal shard: {one_line(exc)}") from None


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
    a nonce and the guard holds only shards that were accepted. Raises `ShardWireError`.
    """
    try:
        return _open_shard(blob, recipient_key, site_keys, expected_site, run_id, round, spec, replay,
                           expected_count, max_bytes)
    except ShardWireError:
        raise
    except (SealError, ShardError, CodecError) as exc:
        raise ShardWireError(one_line(exc)) from None
    except MALFORMED as exc:
        raise ShardWireError(f"malformed shard ({type(exc).__name__})") from None


def _open_shard(
    blob: bytes, recipient_key: X25519PrivateKey, site_keys: Mapping[str, Ed25519PublicKey], expected_site: str,
    run_id: str, round: int, spec: ShardSpec, replay: ReplayGuard, expected_count: int | None, max_bytes: int,
) -> Shard:
    site_key = site_keys.get(expected_site)
    if site_key is None:
        raise ShardWireError(f"unknown site {expected_site!r}: no signing key on record")
    header, plaintext = open_sealed(blob, kind=KIND_SHARD, recipient_key=recipient_key, max_bytes=max_bytes)
    codec.expect("shard sender", header.sender, expected_site)
    codec.expect("wrong run id: shard is for run", header.run_id, run_id)
    codec.expect("wrong round: shard is for round", header.round, round)
    message = codec.unwrap(verify(plaintext, kind=KIND_SHARD, key=site_key), KIND_SHARD, pb.SyntheticShard, max_bytes)
    # The header is only as trustworthy as the signed body that repeats it.
    codec.expect("shard's signed site id", message.site_id, expected_site)
    codec.expect("wrong run id: signed shard is for run", message.run_id, run_id)
    codec.expect("wrong round: signed shard is for round", message.round, round)
    if message.recipient_key_id != header.recipient_key_id:
        raise ShardWireError("shard was signed for another coordinator key (re-sealed by a third party)")
    if len(message.nonce) != NONCE_BYTES:
        raise ShardWireError(f"shard nonce must be {NONCE_BYTES} bytes")
    shard = codec.shard_of(message, spec, max_bytes)
    with np.errstate(all="ignore"):  # overflowing sums of hostile soft labels are rejected, not warned about
        validate_shard(shard, spec, expected_count)
    replay.check_and_remember(expected_site, message.nonce)
    return shard


# --- audit candidates -----------------------------------------------------------------------------


def seal_candidate(candidate: AuditCandidate, *, site_id: str, signer: Ed25519PrivateKey, recipient: X25519PublicKey) -> bytes:
    """`codec.encode_candidate` bytes for `site_id`, signed as the coordinator and sealed to the site's
    `recipient` key; `SealError` on what no site could accept."""
    try:
        recipient_id = key_id(recipient)
        data = codec.encode_candidate(candidate, site_id=site_id, nonce=os.urandom(NONCE_BYTES), recipient_key_id=recipient_id)
        return _seal_from_coordinator(data, KIND_CANDIDATE, candidate.run_id, recipient_id, signer, recipient)
    except SealError:
        raise
    except (ValueError, TypeError, AttributeError) as exc:
        raise SealError(f"cannot seal candidate: {one_line(exc)}") from None


def open_candidate(
    blob: bytes,
    *,
    recipient_key: X25519PrivateKey,
    coordinator_key: Ed25519PublicKey,
    site_id: str,
    max_bytes: int = DEFAULT_MAX_CANDIDATE_BYTES,
) -> AuditCandidate:
    """The candidate in `blob`, if the coordinator signed it for this site and this site's key; `SealError` otherwise."""
    try:
        message = _open_from_coordinator(blob, KIND_CANDIDATE, "candidate", pb.AuditCandidate, recipient_key,
                                         coordinator_key, site_id, max_bytes)
        return codec.candidate_of(message)
    except SealError:
        raise
    except CodecError as exc:
        raise SealError(one_line(exc)) from None
    except MALFORMED as exc:  # checked on the way: never a ShardWireError here, which is no SealError
        raise SealError(f"malformed audit candidate ({type(exc).__name__})") from None


# --- relabelling requests ------------------------------------------------------------------------


def seal_relabel(request: RelabelRequest, *, site_id: str, signer: Ed25519PrivateKey, recipient: X25519PublicKey) -> bytes:
    """`codec.encode_relabel_request` bytes for `site_id`, signed as the coordinator and sealed to the
    site's `recipient` key; `SealError` on images that are not uint8 (N, H, W, C)."""
    try:
        recipient_id = key_id(recipient)
        data = codec.encode_relabel_request(request, site_id=site_id, nonce=os.urandom(NONCE_BYTES), recipient_key_id=recipient_id)
        return _seal_from_coordinator(data, KIND_RELABEL, request.run_id, recipient_id, signer, recipient)
    except SealError:
        raise
    except (ValueError, TypeError, AttributeError) as exc:
        raise SealError(f"cannot seal relabel request: {one_line(exc)}") from None


def open_relabel(
    blob: bytes,
    *,
    recipient_key: X25519PrivateKey,
    coordinator_key: Ed25519PublicKey,
    site_id: str,
    max_bytes: int = DEFAULT_MAX_CANDIDATE_BYTES,
) -> RelabelRequest:
    """The request in `blob`, if the coordinator signed it for this site and this site's key; `SealError` otherwise."""
    try:
        message = _open_from_coordinator(blob, KIND_RELABEL, "relabel request", pb.RelabelRequest, recipient_key,
                                         coordinator_key, site_id, max_bytes)
        return codec.relabel_request_of(message)
    except SealError:
        raise
    except CodecError as exc:
        raise SealError(one_line(exc)) from None
    except MALFORMED as exc:
        raise SealError(f"malformed relabel request ({type(exc).__name__})") from None


def _open_from_coordinator(blob: bytes, kind: str, what: str, message_type, recipient_key: X25519PrivateKey,  # type: ignore[no-untyped-def]
                           coordinator_key: Ed25519PublicKey, site_id: str, max_bytes: int):
    """Open, verify and parse a message the coordinator sealed to one site: what every such message must
    satisfy (sender, signature, addressed site, run id and site key both signed and on the envelope, nonce)."""
    header, plaintext = open_sealed(blob, kind=kind, recipient_key=recipient_key, max_bytes=max_bytes)
    if header.sender != COORDINATOR:
        raise SealError(f"{what} sent by {header.sender[:40]!r}, not the coordinator")
    message = codec.unwrap(verify(plaintext, kind=kind, key=coordinator_key), kind, message_type, max_bytes)
    if message.site_id != site_id:
        raise SealError(f"{what} is for site {message.site_id[:40]!r}, not {site_id!r}")
    if message.run_id != header.run_id:
        raise SealError(f"{what}'s signed run id differs from its envelope's")
    if message.recipient_key_id != header.recipient_key_id:
        raise SealError(f"{what} was signed for another site key (re-sealed by a third party)")
    if len(message.nonce) != NONCE_BYTES:
        raise SealError(f"{what} nonce must be {NONCE_BYTES} bytes")
    return message


def _seal_from_coordinator(data: bytes, kind: str, run_id: str, recipient_id: str, signer: Ed25519PrivateKey,
                           recipient: X25519PublicKey) -> bytes:
    payload = sign(data, kind=kind, signer=signer)
    return seal(payload, Header(kind, COORDINATOR, run_id, 0, recipient_id), recipient)


# --- audit reports: signed by the site, bound to the candidate it audited ---------------------------


def sign_audit_report(report: AuditReport, *, run_id: str, candidate_blob: bytes, signer: Ed25519PrivateKey) -> bytes:
    """`codec.encode_audit_report` bytes of `report`, bound to the exact sealed candidate it attacked and
    signed by the site: the bytes that leave the site.

    Without this, whoever relays messages (the SuperLink) could forge a passing report, or replay
    a site's genuine report on an older candidate as the verdict on a new one.
    """
    return sign(codec.encode_audit_report(report, run_id=run_id, candidate=candidate_blob), kind=KIND_AUDIT_REPORT, signer=signer)


def open_audit_report(
    blob: bytes, *, site_key: Ed25519PublicKey, site_id: str, run_id: str, candidate_blob: bytes,
    max_bytes: int = DEFAULT_MAX_REPORT_BYTES,
) -> AuditReport:
    """The report, if `site_id`'s registered key signed it for exactly this candidate; `SealError` otherwise."""
    if not isinstance(blob, (bytes, bytearray)) or len(blob) > max_bytes:
        raise SealError(f"audit report is not bytes of at most {max_bytes} bytes")
    body = verify(bytes(blob), kind=KIND_AUDIT_REPORT, key=site_key)
    try:
        return codec.decode_audit_report(body, site_id=site_id, run_id=run_id, candidate=candidate_blob, max_bytes=max_bytes)
    except ValueError as exc:
        raise SealError(one_line(exc)) from None


# --- relabel replies: signed by the site, bound to the request they answer -------------------------


def sign_relabel_reply(probs: np.ndarray, *, site_id: str, run_id: str, request_blob: bytes, signer: Ed25519PrivateKey) -> bytes:
    """`codec.encode_relabel_reply` bytes of a site's labels (float32 (N, classes)), bound to the exact
    sealed request and signed by the site: they become the student's targets, so whoever relays
    messages must be able neither to forge them nor to replay older ones. `SealError` on other arrays."""
    try:
        data = codec.encode_relabel_reply(RelabelReply(site_id, np.asarray(probs)), run_id=run_id, request=request_blob)
    except (CodecError, ValueError) as exc:
        raise SealError(one_line(exc)) from None
    return sign(data, kind=KIND_RELABEL_REPLY, signer=signer)


def open_relabel_reply(blob: bytes, *, site_key: Ed25519PublicKey, site_id: str, run_id: str, request_blob: bytes,
                       shape: tuple[int, int]) -> np.ndarray:
    """The labels, float32 `shape`, if `site_id`'s key signed exactly that many for this request; `SealError` otherwise."""
    expected = 4 * shape[0] * shape[1]
    if not isinstance(blob, (bytes, bytearray)) or len(blob) > expected + REPLY_OVERHEAD:
        raise SealError("relabel reply is not bytes of the expected size")
    body = verify(bytes(blob), kind=KIND_RELABEL_REPLY, key=site_key)
    try:
        return codec.decode_relabel_reply(body, site_id=site_id, run_id=run_id, request=request_blob, shape=shape).probs
    except ValueError as exc:
        raise SealError(one_line(exc)) from None
