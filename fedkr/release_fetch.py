"""A researcher's side of the release service: list releases, check health, fetch one and verify it.

Trust comes from the coordinator's public key, not from the connection: the manifest's signature
is checked before anything is downloaded, the audit report is fetched first and must certify this
release's artefacts with a passed decision, every file's streamed SHA-256 and size are checked
against the signed manifest as it arrives, and the finished folder is checked once more with
`verify_release` before it is moved into place. Everything is written to a temporary folder next
to the destination, so a failed fetch leaves nothing behind that could be mistaken for a release.
TLS still matters (it keeps what a researcher fetches private and stops a man in the middle from
wasting their time), so the CA file is required.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedkr.v1 import release_service_pb2 as pb
from fedkr.v1 import release_service_pb2_grpc as pb_grpc

from fedkr.shared.release_verify import (
    MANIFEST_FILE,
    MAX_DOWNLOAD_SECONDS,
    SIGNATURE_FILE,
    ManifestEntry,
    audit_problems,
    is_valid_release_id,
    parse_manifest,
    signature_problem,
    verify_release,
)

SERVICE_NAME = "fedkr.v1.ReleaseService"
#: The service sends at most 16 MiB per message (server/release_service.py); a little headroom.
MAX_RECEIVE_BYTES = 17 * 1024 * 1024
_TLS_HINTS = ("ssl", "tls", "handshake", "certificate", "peer name", "x509")

T = TypeVar("T")


class FetchError(RuntimeError):
    """A failed call or a fetch that did not verify; the message is one line for the user.

    `code` is the gRPC status when the server answered with one, else None.
    """

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ReleaseInfo:
    """One release on offer, as the server summarises it from the signed manifest."""

    release_id: str
    created: str
    classes: list[str]
    ipc: int
    audit_passed: bool
    signing_key_id: str
    file_count: int
    total_bytes: int
    fedkr_version: str


def _channel(address: str, ca_cert_pem: bytes) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_cert_pem)
    return grpc.secure_channel(address, credentials, options=[("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)])


def describe_rpc_error(exc: grpc.RpcError, address: str, timeout: float | None = None) -> str:
    """One line saying what went wrong with a call to `address`, with the likely cause."""
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else None) or ""
    details = " ".join(details.split())
    short = details if len(details) <= 300 else details[:297] + "..."
    if code == grpc.StatusCode.UNAVAILABLE:
        host = address.rsplit(":", 1)[0]
        lowered = details.lower()
        if "hostname verification" in lowered or "peer name" in lowered or "no match found for server name" in lowered:
            return (f"TLS with {address} failed: the server's certificate does not name '{host}' "
                    f"(dial a name the certificate holds, or have the coordinator reissue it)")
        if "issuer" in lowered or "certificate_verify_failed" in lowered or "self signed" in lowered:
            return (f"TLS with {address} failed: the server's certificate is not signed by the CA you gave "
                    "(use the consortium's CA file)")
        if any(hint in lowered for hint in _TLS_HINTS):
            return f"TLS with {address} failed ({short})"
        return f"cannot reach the release service at {address} ({short})"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        within = f" within {timeout:g} s" if timeout else ""
        return f"the release service at {address} did not answer{within}"
    name = code.name if code is not None else "error"
    return f"{name}: {short}" if short else name


def _call(address: str, method: Callable[..., T], request: Any, timeout: float) -> T:
    try:
        return method(request, timeout=timeout)
    except grpc.RpcError as exc:
        raise FetchError(describe_rpc_error(exc, address, timeout), exc.code()) from None


def health(address: str, ca_cert_pem: bytes, service: str = SERVICE_NAME, timeout: float = 10.0) -> str:
    """The standard gRPC health status of `service` at `address`: "SERVING", "NOT_SERVING", ..."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with _channel(address, ca_cert_pem) as channel:
        reply = _call(address, health_pb2_grpc.HealthStub(channel).Check,
                      health_pb2.HealthCheckRequest(service=service), timeout)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def list_releases(address: str, ca_cert_pem: bytes, timeout: float = 30.0) -> list[ReleaseInfo]:
    """The releases the service at `address` offers (audit passed, signed, intact on its disk)."""
    with _channel(address, ca_cert_pem) as channel:
        reply = _call(address, pb_grpc.ReleaseServiceStub(channel).ListReleases, pb.ListReleasesRequest(), timeout)
    return [
        ReleaseInfo(r.release_id, r.created, list(r.classes), r.ipc, r.audit_passed, r.signing_key_id,
                    r.file_count, r.total_bytes, r.fedkr_version)
        for r in reply.releases
    ]


def fetch_release(address: str, release_id: str, out_dir: Path, ca_cert_pem: bytes, verify_key: Ed25519PublicKey,
                  timeout: float = 60.0) -> Path:
    """Download release `release_id` into `out_dir` and verify it; return `out_dir`.

    `timeout` bounds each call (the manifest, and each file's download) in seconds, at most
    MAX_DOWNLOAD_SECONDS. `out_dir` must not exist; it appears only once every check passed.
    Raises FetchError otherwise.
    """
    if not 0 < timeout <= MAX_DOWNLOAD_SECONDS:
        raise FetchError(f"the timeout must be more than 0 and at most {MAX_DOWNLOAD_SECONDS:g} s (the release service's limit for one call)")
    if not is_valid_release_id(release_id):
        raise FetchError(f"invalid release id {release_id[:80]!r}: letters, digits, '.', '_' and '-' only")
    out_dir = Path(out_dir)
    if out_dir.exists() or out_dir.is_symlink():
        raise FetchError(f"{out_dir} already exists; refusing to overwrite it (choose another --out)")
    with _channel(address, ca_cert_pem) as channel:
        stub = pb_grpc.ReleaseServiceStub(channel)
        reply = _call(address, stub.GetManifest, pb.GetManifestRequest(release_id=release_id), timeout)
        problem = signature_problem(reply.manifest_json, reply.manifest_signature, verify_key)
        if problem is not None:
            raise FetchError(f"release {release_id}: {problem}; nothing was downloaded")
        parsed = parse_manifest(reply.manifest_json)
        if parsed.problems:
            raise FetchError(f"release {release_id}: {parsed.problems[0]}; nothing was downloaded")
        if parsed.document.get("release") != release_id:
            raise FetchError(f"release {release_id}: the signed manifest names release "
                             f"{str(parsed.document.get('release'))[:80]!r}; nothing was downloaded")
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = out_dir.parent / f".{out_dir.name}.{secrets.token_hex(4)}.partial"
        staging.mkdir()
        try:
            report = parsed.files[parsed.audit_report or ""]  # parse_manifest found it among the files
            _download(stub, address, release_id, report, staging, timeout)
            found = audit_problems((staging / report.name).read_bytes(), parsed)
            if found:
                raise FetchError(f"release {release_id}: {found[0]}; nothing was kept")
            for entry in parsed.files.values():
                if entry is not report:
                    _download(stub, address, release_id, entry, staging, timeout)
            (staging / MANIFEST_FILE).write_bytes(reply.manifest_json)
            (staging / SIGNATURE_FILE).write_bytes(reply.manifest_signature)
            result = verify_release(staging, verify_key)
            if not result.ok:
                raise FetchError(f"release {release_id} does not verify: {'; '.join(result.problems)}")
            if out_dir.exists() or out_dir.is_symlink():
                raise FetchError(f"{out_dir} appeared while fetching; refusing to overwrite it")
            os.rename(staging, out_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return out_dir


def _chunks(address: str, stream: Iterator[pb.DownloadChunk], timeout: float) -> Iterator[pb.DownloadChunk]:
    try:
        yield from stream
    except grpc.RpcError as exc:
        raise FetchError(describe_rpc_error(exc, address, timeout), exc.code()) from None


def _download(stub: pb_grpc.ReleaseServiceStub, address: str, release_id: str, entry: ManifestEntry,
              staging: Path, timeout: float) -> None:
    """Stream one file into `staging`, refusing more bytes than signed and any digest that differs."""
    digest = hashlib.sha256()
    size = 0
    final: pb.DownloadDigest | None = None
    stream = stub.Download(pb.DownloadRequest(release_id=release_id, file_name=entry.name), timeout=timeout)
    with open(staging / entry.name, "xb") as fh:
        for chunk in _chunks(address, stream, timeout):
            kind = chunk.WhichOneof("payload")
            if final is not None or kind not in ("data", "digest"):
                raise FetchError(f"{entry.name}: the server sent an unexpected message")
            if kind == "digest":
                final = chunk.digest
                continue
            if chunk.offset != size:
                raise FetchError(f"{entry.name}: chunk at offset {chunk.offset}, expected {size}")
            size += len(chunk.data)
            if size > entry.size:
                stream.cancel()
                raise FetchError(f"{entry.name}: the server sent more than the {entry.size} bytes the signed manifest lists")
            digest.update(chunk.data)
            fh.write(chunk.data)
    if final is None:
        raise FetchError(f"{entry.name}: the download ended before the server's final digest")
    if final.sha256 != digest.hexdigest() or final.total_bytes != size:
        raise FetchError(f"{entry.name}: corrupted in transit (the server's digest differs from what arrived)")
    if size != entry.size or digest.hexdigest() != entry.sha256:
        raise FetchError(f"{entry.name}: SHA-256 differs from the signed manifest")
