"""The coordinator's release service: researchers list and download signed, audited releases over TLS.

What it offers is decided by the files alone: a folder is a release only when its manifest says
the audit passed, its audit report agrees, and `verify_release` accepts it under the coordinator's
key, so a refused run, an unsigned or tampered folder, or a half-written one is invisible rather
than served with a warning. Requests name a release by id and a file by its plain name in that
release's manifest; nothing a client sends becomes a path without passing a strict pattern first.
Every error is a clean gRPC status with a short message (never a traceback), and each download is
re-hashed as it is sent, so a file changed after the check ends in DATA_LOSS instead of a silently
wrong copy.

No client can take the service from the others: it runs on gRPC's asyncio server, where a stream
whose client stops reading waits on HTTP/2 flow control without holding a thread; downloads are
limited in number (one more is refused with RESOURCE_EXHAUSTED, never queued) and must carry a
deadline of at most MAX_DOWNLOAD_SECONDS, which gRPC enforces on the server's side too; health
watches are limited in number; and every connection is closed at the latest
CONNECTION_MAX_AGE_SECONDS plus the longest download's time after it opened (gRPC's connection
age), whatever it still holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import grpc
import grpc.aio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fedkr.shared.keys import key_id
from fedkr.shared.release_verify import (
    MANIFEST_FILE,
    MAX_DOWNLOAD_SECONDS,
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
#: Downloads in progress at once; one more is refused with RESOURCE_EXHAUSTED.
MAX_DOWNLOADS = 16
#: Health watches (streams that last as long as their client wants) at once; one more is refused.
MAX_WATCHES = 16
#: Other calls in progress at once (listings, manifests, health checks), on top of the two above.
MAX_OTHER_CALLS = 64
#: Streams one connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
MAX_STREAMS_PER_CONNECTION = 8
#: After this long a connection is asked to go away (clients reconnect for their next call).
CONNECTION_MAX_AGE_SECONDS = 600
#: A release checked this long ago is hashed again on its next request, even if no file's metadata changed.
RECHECK_SECONDS = 300.0

T = TypeVar("T")


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
    one that is changed or removed disappears. The full check (`verify_release`: the signature,
    the audit report, every file's SHA-256) is repeated when any file's size, inode, modification
    or change time (st_ctime, which every write and every `utime` sets to now) differs from the last
    check, when that check is `recheck_seconds` old, and after a download found a file changed.
    """

    def __init__(self, root: Path, verify_key: Ed25519PublicKey, recheck_seconds: float = RECHECK_SECONDS) -> None:
        self.root = Path(root)
        self.verify_key = verify_key
        self.key_id = key_id(verify_key)
        self.recheck_seconds = recheck_seconds
        self._lock = threading.Lock()
        self._cache: dict[Path, tuple[tuple, float, Release | None]] = {}

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
        if cached is not None and cached[0] == fingerprint and time.monotonic() - cached[1] < self.recheck_seconds:
            return cached[2]
        checked_at = time.monotonic()
        release = self._load(release_id, directory)
        with self._lock:
            self._cache[directory] = (fingerprint, checked_at, release)
        return release

    def forget(self, directory: Path) -> None:
        """Drop the last check of `directory`: its next request checks it in full again."""
        with self._lock:
            self._cache.pop(directory, None)

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
    """What must stay the same for an earlier check to still hold: each entry's name, type, size, device,
    inode, and modification and change times (a change time cannot be set back, so an edit in place
    with the modification time restored still shows)."""
    entries = []
    for entry in os.scandir(directory):
        info = entry.stat(follow_symlinks=False)
        entries.append((entry.name, info.st_mode, info.st_size, info.st_dev, info.st_ino, info.st_mtime_ns, info.st_ctime_ns))
    return tuple(sorted(entries))


class _Reject(Exception):
    """A request refused with a status code and a message for the client."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def _rpc(handler: Handler) -> Handler:
    """Every refusal becomes its status; anything unexpected is logged and answered INTERNAL."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except _Reject as exc:
            await context.abort(exc.code, exc.message)
        except grpc.aio.BaseError:
            raise  # gRPC's own: an abort, or a call its client or deadline already ended
        except Exception:
            log.exception("%s failed", handler.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error in the release service (see its log)")

    return wrapper  # type: ignore[return-value]


class _Slots:
    """At most `limit` calls of one kind at once; one more is refused at once, never queued.

    Used from the event loop's thread only, so a plain counter suffices.
    """

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        self.in_use = 0

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if self.in_use >= self.limit:
            raise _Reject(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{self.in_use} {self.what} in progress, the most this service allows at once: try again later")
        self.in_use += 1
        try:
            yield
        finally:
            self.in_use -= 1


def _peer(context: grpc.aio.ServicerContext) -> str:
    try:
        return context.peer()
    except Exception:  # noqa: BLE001 - only for the log line
        return "unknown peer"


class ReleaseServicer(pb_grpc.ReleaseServiceServicer):
    """The four read-only calls over a `ReleaseStore`, as asyncio handlers.

    File work (checking releases, reading chunks) runs on `files`, a thread pool; sending waits on
    the client's HTTP/2 flow control in the event loop, so a client that stops reading holds no
    thread, only its download slot and one chunk, until its deadline ends the call.
    """

    def __init__(self, store: ReleaseStore, files: Executor, max_downloads: int = MAX_DOWNLOADS) -> None:
        self.store = store
        self.files = files
        self.downloads = _Slots(max_downloads, "downloads")

    async def _in_pool(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.files, function, *args)

    async def _release(self, release_id: str) -> Release:
        if not is_valid_release_id(release_id):
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT,
                          "invalid release id: letters, digits, '.', '_' and '-' only, at most 80, no '..'")
        release = await self._in_pool(self.store.get, release_id)
        if release is None:
            raise _Reject(grpc.StatusCode.NOT_FOUND, f"no release {release_id!r} on offer (unknown, refused or not signed)")
        return release

    @_rpc
    async def ListReleases(self, request: pb.ListReleasesRequest, context: grpc.aio.ServicerContext) -> pb.ListReleasesResponse:
        releases = await self._in_pool(self.store.releases)
        return pb.ListReleasesResponse(releases=[r.summary(self.store.key_id) for r in releases])

    @_rpc
    async def GetManifest(self, request: pb.GetManifestRequest, context: grpc.aio.ServicerContext) -> pb.GetManifestResponse:
        release = await self._release(request.release_id)
        return pb.GetManifestResponse(release_id=release.release_id, manifest_json=release.manifest_bytes,
                                      manifest_signature=release.signature_bytes)

    @_rpc
    async def GetAuditReport(self, request: pb.GetAuditReportRequest, context: grpc.aio.ServicerContext) -> pb.GetAuditReportResponse:
        release = await self._release(request.release_id)
        name = release.manifest.audit_report or ""
        entry = release.manifest.files.get(name)
        if entry is None:  # verify_release already requires it; kept so a gap can never become a path
            raise _Reject(grpc.StatusCode.NOT_FOUND, "this release names no audit report")
        if entry.size > MAX_RESPONSE_BYTES - 4096:
            raise _Reject(grpc.StatusCode.FAILED_PRECONDITION, f"the audit report is {entry.size} bytes: use Download")
        try:
            data = await self._in_pool(_read_checked, release.directory, entry)
        except _Reject:
            self.store.forget(release.directory)
            raise
        return pb.GetAuditReportResponse(release_id=release.release_id, file_name=name, report_json=data,
                                         sha256=entry.sha256, passed=release.manifest.audit_passed)

    @_rpc
    async def Download(self, request: pb.DownloadRequest, context: grpc.aio.ServicerContext) -> None:
        remaining = context.time_remaining()
        if remaining is None or remaining > MAX_DOWNLOAD_SECONDS + 1:
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT,
                          f"a download must carry a deadline of at most {MAX_DOWNLOAD_SECONDS:g} s (gRPC timeout)")
        with self.downloads.hold():
            release = await self._release(request.release_id)
            name = request.file_name
            problem = plain_name_problem(name)
            if problem is not None and name not in (MANIFEST_FILE, SIGNATURE_FILE):
                raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, problem)
            entry = release.manifest.files.get(name)
            if entry is None:
                raise _Reject(grpc.StatusCode.NOT_FOUND, f"release {release.release_id} has no file {name!r} in its manifest"
                              + (" (fetch the manifest with GetManifest)" if name in (MANIFEST_FILE, SIGNATURE_FILE) else ""))
            log.info("sending %s/%s (%d bytes) to %s", release.release_id, name, entry.size, _peer(context))
            await self._send_file(release, entry, context)

    async def _send_file(self, release: Release, entry: ManifestEntry, context: grpc.aio.ServicerContext) -> None:
        """Stream one file, hashing what is sent; a file that no longer matches its manifest ends in DATA_LOSS."""
        digest = hashlib.sha256()
        sent = 0
        fd = await self._in_pool(_open_plain, release.directory, entry.name)
        with os.fdopen(fd, "rb") as fh:
            while sent <= entry.size:
                chunk = await self._in_pool(_read_hashed, fh, digest, min(CHUNK_BYTES, entry.size - sent + 1))
                if not chunk:
                    break
                if sent + len(chunk) > entry.size:
                    sent += len(chunk)  # grew since the check: the size test below refuses it, nothing more is sent
                    break
                await context.write(pb.DownloadChunk(offset=sent, data=chunk))
                sent += len(chunk)
        if sent != entry.size or digest.hexdigest() != entry.sha256:
            log.error("%s/%s changed on disk after it was verified; download aborted", release.release_id, entry.name)
            self.store.forget(release.directory)
            raise _Reject(grpc.StatusCode.DATA_LOSS,
                          f"{entry.name} changed on the server after it was signed; the download is void")
        await context.write(pb.DownloadChunk(offset=sent, digest=pb.DownloadDigest(sha256=digest.hexdigest(), total_bytes=sent)))


class _HealthServicer(health.aio.HealthServicer):
    """The standard gRPC health service, with Watch (a call that lasts as long as its client wants) bounded."""

    def __init__(self) -> None:
        super().__init__()
        self.watches = _Slots(MAX_WATCHES, "health watches")

    @_rpc
    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        with self.watches.hold():
            await super().Watch(request, context)


def _open_plain(directory: Path, name: str) -> int:
    try:
        return os.open(directory / name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        raise _Reject(grpc.StatusCode.NOT_FOUND, f"{name} is no longer available") from None


def _read_hashed(fh: BinaryIO, digest: Any, size: int) -> bytes:
    data = fh.read(size)
    digest.update(data)
    return data


def _read_checked(directory: Path, entry: ManifestEntry) -> bytes:
    with os.fdopen(_open_plain(directory, entry.name), "rb") as fh:
        data = fh.read(entry.size + 1)
    if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
        raise _Reject(grpc.StatusCode.DATA_LOSS, f"{entry.name} changed on the server after it was signed")
    return data


def server_options() -> list[tuple[str, int]]:
    """gRPC core settings (channel arguments): message sizes, and how long one connection may hold the service."""
    grace_ms = int((MAX_DOWNLOAD_SECONDS + 60) * 1000)
    return [
        ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
        ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
        ("grpc.so_reuseport", 0),
        ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
        # a connection is asked to go away after this long, and closed with whatever it still holds once
        # its calls had the longest download's time to finish: a client that never reads cannot stay
        ("grpc.max_connection_age_ms", CONNECTION_MAX_AGE_SECONDS * 1000),
        ("grpc.max_connection_age_grace_ms", grace_ms),
    ]


class ReleaseServer:
    """The release and health services on a gRPC asyncio server over TLS, run by a thread of its own.

    `store` decides what is offered; `workers` threads read and check files; at most
    `max_downloads` downloads run at once (one more is refused with RESOURCE_EXHAUSTED), each with
    a client deadline of at most MAX_DOWNLOAD_SECONDS. The server is bound on construction (`port`
    says where: useful with port 0) and serves after `start()` until `stop()`.
    Raises OSError when it cannot listen on `address`.
    """

    def __init__(self, store: ReleaseStore, address: str, cert_pem: bytes, key_pem: bytes, *,
                 workers: int = 4, max_downloads: int = MAX_DOWNLOADS) -> None:
        self.store = store
        self._files = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fedkr-release")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fedkr-release-loop", daemon=True)
        self._thread.start()
        try:
            self.servicer = ReleaseServicer(store, self._files, max_downloads)
            self._server, self.port = self._run(self._bind(address, grpc.ssl_server_credentials([(key_pem, cert_pem)])))
        except BaseException:
            self._close()
            raise

    def _run(self, coroutine: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()  # type: ignore[arg-type]

    async def _bind(self, address: str, credentials: grpc.ServerCredentials) -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(options=server_options(),
                                 maximum_concurrent_rpcs=self.servicer.downloads.limit + MAX_WATCHES + MAX_OTHER_CALLS)
        pb_grpc.add_ReleaseServiceServicer_to_server(self.servicer, server)
        health_servicer = _HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        try:
            port = server.add_secure_port(address, credentials)
        except RuntimeError:  # grpc raises when it cannot bind; its own text points at debug logging
            port = 0
        if port == 0:
            raise OSError(f"cannot listen on {address}: the port is in use, or the host is not an address of this machine")
        for service in ("", SERVICE_NAME):
            await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
        return server, port

    def start(self) -> None:
        self._run(self._server.start())

    def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, give those in progress `grace` seconds (None: none), then end them all."""
        try:
            self._run(self._server.stop(grace))
        finally:
            self._close()

    def _close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._files.shutdown(wait=False, cancel_futures=True)


def serve(root: Path, address: str, cert_pem: bytes, key_pem: bytes, verify_key: Ed25519PublicKey,
          workers: int = 4, max_downloads: int = MAX_DOWNLOADS) -> ReleaseServer:
    """Start serving the releases under `root` at `address` over TLS; the caller stops the server."""
    store = ReleaseStore(root, verify_key)
    server = ReleaseServer(store, address, cert_pem, key_pem, workers=workers, max_downloads=max_downloads)
    server.start()
    offered = store.releases()
    log.info("release service on %s (port %d), releases under %s signed by key %s", address, server.port, root, store.key_id)
    log.info("offering %d release(s)%s", len(offered), ": " + ", ".join(r.release_id for r in offered) if offered else "")
    log.info("at most %d downloads at once, each within %g s", max_downloads, MAX_DOWNLOAD_SECONDS)
    return server
