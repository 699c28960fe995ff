"""The coordinator's release service: researchers list and download signed, audited releases over TLS.

What it offers is decided by the files alone: a folder is a release only when its manifest says
the audit passed and `verify_release` accepts it under the coordinator's key, so a refused run, an
unsigned or tampered folder, or a half-written one is invisible rather than served with a warning.
Requests name a release by id and a file by its plain name in that release's manifest; nothing a
client sends becomes a path without passing a strict pattern first. Every error is a clean gRPC
status with a short message (never a traceback), and each download is re-hashed as it is sent, so
a file changed after the check ends in DATA_LOSS instead of a silently wrong copy.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fedkr.shared.keys import key_id
from fedkr.shared.release_verify import (
    MANIFEST_FILE,
    SIGNATURE_FILE,
    ManifestEntry,
    ParsedManifest,
    is_valid_release_id,
    parse_manifest,
    plain_name_problem,
    verify_release,
)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fedkr.v1 import release_service_pb2 as pb
from fedkr.v1 import release_service_pb2_grpc as pb_grpc

log = logging.getLogger("fedkr.release_service")

SERVICE_NAME = "fedkr.v1.ReleaseService"
CHUNK_BYTES = 64 * 1024
#: Requests carry two short strings; anything bigger is refused by gRPC before it reaches us.
MAX_REQUEST_BYTES = 64 * 1024
#: Responses: a chunk, a manifest, or the audit report (a few hundred kB at most).
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Release:
    """One verified release: its folder and the exact manifest and signature bytes that were checked."""

    release_id: str
    directory: Path
    manifest_bytes: bytes
    signature_bytes: bytes
    manifest: ParsedManifest

    def summary(self, signing_key_id: str) -> pb.ReleaseSummary:
        doc = self.manifest.document
        classes = doc.get("classes") if isinstance(doc.get("classes"), list) else []
        ipc = doc.get("ipc")
        return pb.ReleaseSummary(
            release_id=self.release_id,
            created=str(doc.get("created", "")),
            classes=[str(c) for c in classes],
            ipc=ipc if isinstance(ipc, int) and not isinstance(ipc, bool) and 0 <= ipc < 2**32 else 0,
            audit_passed=self.manifest.audit_passed,
            signing_key_id=signing_key_id,
            file_count=len(self.manifest.files),
            total_bytes=sum(e.size for e in self.manifest.files.values()),
            fedkr_version=str(doc.get("fedkr_version", "")),
        )


class ReleaseStore:
    """The releases under `root`: `root/<id>/release/` (a coordinator's runs folder) or `root/<id>/`.

    Folders are re-read on every request, so a release written while the service runs appears and
    one that is changed or removed disappears; the full check (hashing every file) is repeated only
    when a file's size, time or inode changed since the last one.
    """

    def __init__(self, root: Path, verify_key: Ed25519PublicKey) -> None:
        self.root = Path(root)
        self.verify_key = verify_key
        self.key_id = key_id(verify_key)
        self._lock = threading.Lock()
        self._cache: dict[Path, tuple[tuple, Release | None]] = {}

    def _candidate_dirs(self, release_id: str) -> list[Path]:
        base = self.root / release_id
        return [base / "release", base]

    def get(self, release_id: str) -> Release | None:
        """The verified release with this id, or None (unknown, refused, unsigned or tampered)."""
        if not is_valid_release_id(release_id):
            return None
        for directory in self._candidate_dirs(release_id):
            if (directory / MANIFEST_FILE).is_file():
                return self._checked(release_id, directory)
        return None

    def releases(self) -> list[Release]:
        """Every verified release, sorted by id."""
        try:
            names = sorted(entry.name for entry in os.scandir(self.root) if entry.is_dir())
        except OSError as exc:
            log.warning("cannot list %s: %s", self.root, exc.strerror)
            return []
        found = [self.get(name) for name in names if is_valid_release_id(name)]
        return [release for release in found if release is not None]

    def _checked(self, release_id: str, directory: Path) -> Release | None:
        try:
            fingerprint = _fingerprint(directory)
        except OSError:
            return None
        with self._lock:
            cached = self._cache.get(directory)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        release = self._load(release_id, directory)
        with self._lock:
            self._cache[directory] = (fingerprint, release)
        return release

    def _load(self, release_id: str, directory: Path) -> Release | None:
        try:
            manifest_bytes = (directory / MANIFEST_FILE).read_bytes()
            signature_bytes = (directory / SIGNATURE_FILE).read_bytes()
        except OSError:
            log.info("not offered: %s (no signed manifest)", directory)
            return None
        parsed = parse_manifest(manifest_bytes)
        if parsed.document.get("release") != release_id:
            # a signed release copied under another name must not pass for that release
            log.warning("not offered: %s (its manifest names release %r)", directory, str(parsed.document.get("release"))[:80])
            return None
        if not parsed.audit_passed:
            log.info("not offered: %s (the manifest does not record a passed audit)", directory)
            return None
        result = verify_release(directory, self.verify_key)
        if not result.ok:
            log.warning("not offered: %s: %s", directory, "; ".join(result.problems[:3]))
            return None
        # the bytes checked above are the bytes served: re-read them only if they changed meanwhile
        try:
            changed = (directory / MANIFEST_FILE).read_bytes() != manifest_bytes or (directory / SIGNATURE_FILE).read_bytes() != signature_bytes
        except OSError:
            return None  # removed while being checked
        if changed:
            return None
        return Release(release_id, directory, manifest_bytes, signature_bytes, parsed)


def _fingerprint(directory: Path) -> tuple:
    """What must stay the same for an earlier check to still hold: each entry's name, size, time, inode."""
    entries = []
    for entry in os.scandir(directory):
        info = entry.stat(follow_symlinks=False)
        entries.append((entry.name, info.st_mode, info.st_size, info.st_mtime_ns, info.st_ino))
    return tuple(sorted(entries))


class _Reject(Exception):
    """A request refused with a status code and a message for the client."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


T = TypeVar("T")


def _unary(handler: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(handler)
    def wrapper(self: ReleaseServicer, request: Any, context: grpc.ServicerContext) -> T:
        try:
            return handler(self, request, context)
        except _Reject as exc:
            context.abort(exc.code, exc.message)
        except Exception:
            log.exception("%s failed", handler.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error in the release service (see its log)")
        raise AssertionError("unreachable")  # context.abort raises

    return wrapper


def _streaming(handler: Callable[..., Iterator[T]]) -> Callable[..., Iterator[T]]:
    @functools.wraps(handler)
    def wrapper(self: ReleaseServicer, request: Any, context: grpc.ServicerContext) -> Iterator[T]:
        try:
            yield from handler(self, request, context)
        except _Reject as exc:
            context.abort(exc.code, exc.message)
        except Exception:
            log.exception("%s failed", handler.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error in the release service (see its log)")

    return wrapper


def _peer(context: grpc.ServicerContext) -> str:
    try:
        return context.peer()
    except Exception:  # noqa: BLE001 - only for the log line
        return "unknown peer"


class ReleaseServicer(pb_grpc.ReleaseServiceServicer):
    """The four read-only calls over a `ReleaseStore`."""

    def __init__(self, store: ReleaseStore) -> None:
        self.store = store

    def _release(self, release_id: str) -> Release:
        if not is_valid_release_id(release_id):
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT,
                          "invalid release id: letters, digits, '.', '_' and '-' only, at most 80, no '..'")
        release = self.store.get(release_id)
        if release is None:
            raise _Reject(grpc.StatusCode.NOT_FOUND, f"no release {release_id!r} on offer (unknown, refused or not signed)")
        return release

    @_unary
    def ListReleases(self, request: pb.ListReleasesRequest, context: grpc.ServicerContext) -> pb.ListReleasesResponse:
        return pb.ListReleasesResponse(releases=[r.summary(self.store.key_id) for r in self.store.releases()])

    @_unary
    def GetManifest(self, request: pb.GetManifestRequest, context: grpc.ServicerContext) -> pb.GetManifestResponse:
        release = self._release(request.release_id)
        return pb.GetManifestResponse(release_id=release.release_id, manifest_json=release.manifest_bytes,
                                      manifest_signature=release.signature_bytes)

    @_unary
    def GetAuditReport(self, request: pb.GetAuditReportRequest, context: grpc.ServicerContext) -> pb.GetAuditReportResponse:
        release = self._release(request.release_id)
        name = release.manifest.audit_report or ""
        entry = release.manifest.files.get(name)
        if entry is None:  # verify_release already requires it; kept so a gap can never become a path
            raise _Reject(grpc.StatusCode.NOT_FOUND, "this release names no audit report")
        if entry.size > MAX_RESPONSE_BYTES - 4096:
            raise _Reject(grpc.StatusCode.FAILED_PRECONDITION, f"the audit report is {entry.size} bytes: use Download")
        data = _read_checked(release.directory, entry)
        return pb.GetAuditReportResponse(release_id=release.release_id, file_name=name, report_json=data,
                                         sha256=entry.sha256, passed=release.manifest.audit_passed)

    @_streaming
    def Download(self, request: pb.DownloadRequest, context: grpc.ServicerContext) -> Iterator[pb.DownloadChunk]:
        release = self._release(request.release_id)
        name = request.file_name
        problem = plain_name_problem(name)
        if problem is not None and name not in (MANIFEST_FILE, SIGNATURE_FILE):
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, problem)
        entry = release.manifest.files.get(name)
        if entry is None:
            raise _Reject(grpc.StatusCode.NOT_FOUND, f"release {release.release_id} has no file {name!r} in its manifest"
                          + (" (fetch the manifest with GetManifest)" if name in (MANIFEST_FILE, SIGNATURE_FILE) else ""))
        log.info("sending %s/%s (%d bytes) to %s", release.release_id, name, entry.size, _peer(context))
        yield from _stream_file(release, entry, context)


def _open_plain(directory: Path, name: str) -> int:
    try:
        return os.open(directory / name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        raise _Reject(grpc.StatusCode.NOT_FOUND, f"{name} is no longer available") from None


def _stream_file(release: Release, entry: ManifestEntry, context: grpc.ServicerContext) -> Iterator[pb.DownloadChunk]:
    digest = hashlib.sha256()
    sent = 0
    with os.fdopen(_open_plain(release.directory, entry.name), "rb") as fh:
        while True:
            chunk = fh.read(CHUNK_BYTES)
            if not chunk:
                break
            if sent + len(chunk) > entry.size:
                break  # grew since the check: the size test below refuses it
            digest.update(chunk)
            yield pb.DownloadChunk(offset=sent, data=chunk)
            sent += len(chunk)
            if not context.is_active():
                return  # the client went away: nothing more to do
    if sent != entry.size or digest.hexdigest() != entry.sha256:
        log.error("%s/%s changed on disk after it was verified; download aborted", release.release_id, entry.name)
        raise _Reject(grpc.StatusCode.DATA_LOSS,
                      f"{entry.name} changed on the server after it was signed; the download is void")
    yield pb.DownloadChunk(offset=sent, digest=pb.DownloadDigest(sha256=digest.hexdigest(), total_bytes=sent))


def _read_checked(directory: Path, entry: ManifestEntry) -> bytes:
    with os.fdopen(_open_plain(directory, entry.name), "rb") as fh:
        data = fh.read(entry.size + 1)
    if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
        raise _Reject(grpc.StatusCode.DATA_LOSS, f"{entry.name} changed on the server after it was signed")
    return data


def server_options() -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
        ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
        ("grpc.so_reuseport", 0),
    ]


def build_server(store: ReleaseStore, address: str, cert_pem: bytes, key_pem: bytes,
                 max_workers: int = 4) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A TLS server with the release and health services, bound but not started; returns the port too.

    `maximum_concurrent_rpcs` makes a client beyond the thread pool's capacity get
    RESOURCE_EXHAUSTED at once rather than wait behind slow downloads.
    """
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="fedkr-release"),
                         options=server_options(), maximum_concurrent_rpcs=max_workers * 4)
    pb_grpc.add_ReleaseServiceServicer_to_server(ReleaseServicer(store), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    credentials = grpc.ssl_server_credentials([(key_pem, cert_pem)])
    try:
        port = server.add_secure_port(address, credentials)
    except RuntimeError:  # grpc raises when it cannot bind; its own text points at debug logging
        port = 0
    if port == 0:
        raise OSError(f"cannot listen on {address}: the port is in use, or the host is not an address of this machine")
    for service in ("", SERVICE_NAME):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return server, port, health_servicer


def serve(root: Path, address: str, cert_pem: bytes, key_pem: bytes, verify_key: Ed25519PublicKey,
          max_workers: int = 4) -> grpc.Server:
    """Start serving the releases under `root` at `address` over TLS; the caller stops the server."""
    store = ReleaseStore(root, verify_key)
    server, port, _ = build_server(store, address, cert_pem, key_pem, max_workers)
    server.start()
    offered = store.releases()
    log.info("release service on %s (port %d), releases under %s signed by key %s", address, port, root, store.key_id)
    log.info("offering %d release(s)%s", len(offered), ": " + ", ".join(r.release_id for r in offered) if offered else "")
    return server

