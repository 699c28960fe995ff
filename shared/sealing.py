"""Sign-then-seal envelopes, so that whatever relays a message (the SuperLink) holds ciphertext only.

Two layers, each for one job:

- *Signing* (Ed25519) says who wrote a body. The signed bytes are
  ``"fedkr/v1/<kind>" || 0x00 || body``: the verifier names the kind it expects, so a signature
  made over a shard can never pass as one over an audit candidate, whatever the bodies hold.
- *Sealing* (X25519 with a fresh ephemeral key, HKDF-SHA256, AES-256-GCM) says who can read it.
  HKDF's salt is ``ephemeral public key || recipient public key`` and its info names the kind, so
  the AES key belongs to this one exchange with this one recipient. The cleartext header (kind,
  sender, run id, round, recipient key id, ephemeral key) is the associated data: a relay can route
  on it but cannot change it without the open failing.

Sealing alone is not authentication (anyone with the recipient's public key can seal), so callers
must check that the signed body repeats the header facts they rely on. ``shared/shard_wire.py`` does
this for shards and audit candidates.

Every failure raises `SealError` with a one-line reason that never holds key material or plaintext.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from google.protobuf.message import DecodeError

from fedkr.v1 import messages_pb2 as pb

from .keys import key_id

ENVELOPE_VERSION = 1
CONTEXT_PREFIX = b"fedkr/v1/"
KEY_BYTES = 32
AES_NONCE_BYTES = 12
TAG_BYTES = 16
MAX_HEADER_TEXT = 200
INT32_MAX = 2**31 - 1
_KIND = re.compile(r"[a-z][a-z_]{0,31}")


class SealError(ValueError):
    """A message that cannot be sealed or opened; the message says why in one line."""


@dataclass(frozen=True)
class Header:
    """The cleartext routing facts of an envelope, authenticated as AES-GCM associated data."""

    kind: str
    sender: str
    run_id: str
    round: int
    recipient_key_id: str


def check_kind(kind: str) -> bytes:
    """Kinds are short lowercase names, so the NUL after the context prefix is unambiguous."""
    if not isinstance(kind, str) or _KIND.fullmatch(kind) is None:
        raise SealError(f"invalid message kind {kind!r}")
    return kind.encode()


def signing_context(kind: str, body: bytes) -> bytes:
    return CONTEXT_PREFIX + check_kind(kind) + b"\x00" + body


def sign(body: bytes, *, kind: str, signer: Ed25519PrivateKey) -> bytes:
    """A serialized `SignedPayload` of `body`, signed for `kind` only."""
    signature = signer.sign(signing_context(kind, body))
    return pb.SignedPayload(body=body, signature=signature, signer_key_id=key_id(signer.public_key())).SerializeToString()


def verify(payload: bytes, *, kind: str, key: Ed25519PublicKey) -> bytes:
    """The body of a serialized `SignedPayload`, if `key` signed it for `kind`."""
    message = pb.SignedPayload()
    try:
        message.ParseFromString(payload)
    except DecodeError:
        raise SealError("malformed signed payload") from None
    expected_id = key_id(key)
    if message.signer_key_id != expected_id:
        raise SealError(f"signed by key {_short(message.signer_key_id)}, not the expected key {expected_id}")
    body = message.body
    try:
        key.verify(message.signature, signing_context(kind, body))
    except InvalidSignature:
        raise SealError("bad signature") from None
    return body


def seal(plaintext: bytes, header: Header, recipient: X25519PublicKey) -> bytes:
    """A serialized `SealedEnvelope` of `plaintext` that only `recipient`'s private key opens."""
    _check_header(header)
    if header.recipient_key_id != key_id(recipient):
        raise SealError("header names a different recipient key than the one sealed to")
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = _raw(ephemeral.public_key())
    aes_key = _derive(ephemeral.exchange(recipient), header.kind, ephemeral_public, _raw(recipient))
    nonce = os.urandom(AES_NONCE_BYTES)
    ciphertext = AESGCM(aes_key).encrypt(nonce, plaintext, _associated_data(header, ephemeral_public))
    return pb.SealedEnvelope(
        version=ENVELOPE_VERSION, kind=header.kind, sender=header.sender, run_id=header.run_id,
        round=header.round, recipient_key_id=header.recipient_key_id,
        ephemeral_public_key=ephemeral_public, aes_nonce=nonce, ciphertext=ciphertext,
    ).SerializeToString()


def open_sealed(blob: bytes, *, kind: str, recipient_key: X25519PrivateKey, max_bytes: int) -> tuple[Header, bytes]:
    """The authenticated header and plaintext of a serialized `SealedEnvelope` of `kind`.

    The size is checked before anything is parsed, so an oversized blob costs nothing to refuse.
    """
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise SealError(f"{kind} blob is {type(blob).__name__}, not bytes")
    if len(blob) > max_bytes:
        raise SealError(f"{kind} blob is {len(blob)} bytes, more than the limit {max_bytes}")
    envelope = pb.SealedEnvelope()
    try:
        envelope.ParseFromString(bytes(blob))
    except DecodeError:
        raise SealError(f"malformed {kind} envelope") from None
    if envelope.version != ENVELOPE_VERSION:
        raise SealError(f"unsupported envelope version {envelope.version}")
    if envelope.kind != kind:
        raise SealError(f"envelope holds {_short(envelope.kind)}, expected {kind!r}")
    own = _raw(recipient_key.public_key())
    own_id = key_id(recipient_key.public_key())
    if envelope.recipient_key_id != own_id:
        raise SealError(f"sealed to a different key ({_short(envelope.recipient_key_id)}), not this recipient's {own_id}")
    ephemeral_public = envelope.ephemeral_public_key
    nonce = envelope.aes_nonce
    if len(ephemeral_public) != KEY_BYTES or len(nonce) != AES_NONCE_BYTES or len(envelope.ciphertext) < TAG_BYTES:
        raise SealError(f"malformed {kind} envelope: bad key, nonce or ciphertext length")
    header = Header(kind=envelope.kind, sender=envelope.sender, run_id=envelope.run_id, round=envelope.round,
                    recipient_key_id=envelope.recipient_key_id)
    try:
        _check_header(header)
        shared = recipient_key.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
    except ValueError:  # SealError included; X25519 refuses low-order points with ValueError
        raise SealError(f"malformed {kind} envelope: bad header or ephemeral key") from None
    aes_key = _derive(shared, kind, ephemeral_public, own)
    try:
        plaintext = AESGCM(aes_key).decrypt(nonce, envelope.ciphertext, _associated_data(header, ephemeral_public))
    except InvalidTag:
        raise SealError(f"{kind} does not decrypt: tampered with, or sealed to another key") from None
    return header, plaintext


def _check_header(header: Header) -> None:
    check_kind(header.kind)
    for name in ("sender", "run_id", "recipient_key_id"):
        value = getattr(header, name)
        if not isinstance(value, str) or len(value) > MAX_HEADER_TEXT:
            raise SealError(f"envelope {name} must be a string of at most {MAX_HEADER_TEXT} characters")
    if not isinstance(header.round, int) or not 0 <= header.round <= INT32_MAX:
        raise SealError("envelope round must be an integer in [0, 2**31)")


def _associated_data(header: Header, ephemeral_public: bytes) -> bytes:
    """Length-prefixed header fields: one encoding per header, independent of protobuf's."""
    parts = [CONTEXT_PREFIX + b"envelope", struct.pack(">I", ENVELOPE_VERSION), header.kind.encode(),
             header.sender.encode(), header.run_id.encode(), struct.pack(">I", header.round),
             header.recipient_key_id.encode(), ephemeral_public]
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def _derive(shared: bytes, kind: str, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=ephemeral_public + recipient_public,
                info=CONTEXT_PREFIX + b"seal/" + check_kind(kind))
    return hkdf.derive(shared)


def _raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _short(text: str) -> str:
    """Remote-supplied text for an error message: quoted, escaped onto one line, cut short."""
    return repr(text[:40])
