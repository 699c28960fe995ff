"""`fedkr verify`, `fedkr fetch` and `fedkr coordinator serve-releases`: getting a release to researchers.

The coordinator serves its signed, audited releases over TLS; a researcher lists and fetches them
with the consortium's CA file and the coordinator's public signing key, and anyone can re-check a
copy with `fedkr verify`. Heavy imports (grpc, cryptography) happen inside the commands so that
`fedkr --help` stays fast.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from fedkr.cli_common import console, out_console, printable
from fedkr.cli_common import fail as _fail
from fedkr.cli_common import setup_logging as _setup_logging

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

DEFAULT_ADDRESS = "0.0.0.0:50061"
log = logging.getLogger("fedkr.release_service")


def register(app: typer.Typer, coordinator_app: typer.Typer) -> None:
    """Attach this module's commands to the `fedkr` command groups."""
    app.command("verify")(verify)
    app.command("fetch")(fetch)
    coordinator_app.command("serve-releases")(serve_releases)


def _read_file(path: Path, what: str) -> bytes:

    try:
        return path.read_bytes()
    except OSError as exc:
        _fail(f"cannot read {what} {path}: {exc.strerror}")
    raise AssertionError("unreachable")


def _read_ca(path: Path) -> bytes:
    """The CA file, checked to hold certificates: gRPC would only say the handshake failed."""
    from cryptography import x509

    data = _read_file(path, "CA certificate")
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        _fail(f"{path} is not a PEM certificate (give the consortium's ca.pem)")
    return data


def _verify_key(path: Path) -> Ed25519PublicKey:
    from fedkr.shared.keys import KeyFileError, load_verify_key

    try:
        return load_verify_key(path)
    except KeyFileError as exc:
        _fail(str(exc))
    raise AssertionError("unreachable")


def verify(
    release_dir: Annotated[Path, typer.Argument(help="A release folder: runs/<run-id>/release, or a fetched copy.")],
    key: Annotated[Path, typer.Option("--key", help="The coordinator's signing public key (PEM), obtained from the coordinator out of band.")],
) -> None:
    """Check a release: the coordinator's signature, every file's size and SHA-256, no extra files, audit passed.

    Exit code 0: verified; 1: it does not verify (each problem is listed); 2: bad arguments.
    """
    from fedkr.shared.release_verify import verify_release

    verify_key = _verify_key(key)
    if not release_dir.is_dir():
        _fail(f"{release_dir} is not a folder (give a release folder, e.g. runs/<run-id>/release)")
    result = verify_release(release_dir, verify_key)
    out_console.print(f"release {release_dir}", soft_wrap=True)
    for line in result.checked:
        out_console.print(Text.assemble(("  ok    ", "green"), printable(line)), soft_wrap=True)
    for line in result.problems:
        out_console.print(Text.assemble(("  FAIL  ", "bold red"), printable(line)), soft_wrap=True)
    if not result.ok:
        _fail(f"{release_dir} does not verify ({len(result.problems)} problem(s)): do not use it", 1)
    out_console.print("[bold green]verified[/]: signed by the coordinator, unchanged since, audit passed", markup=True)


def fetch(
    address: Annotated[str, typer.Option("--from", help="The coordinator's release service, HOST:PORT.", metavar="HOST:PORT")],
    ca: Annotated[Path, typer.Option("--ca", help="The consortium CA certificate (ca.pem, from the coordinator) the service's TLS certificate must be signed by.")],
    release_id: Annotated[str | None, typer.Argument(help="The release to fetch (its run id, as --list shows it).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Folder to create for the release; must not exist (default: ./RELEASE_ID).")] = None,
    key: Annotated[Path | None, typer.Option("--key", help="The coordinator's signing public key (signing.pub, from the coordinator); needed to fetch.")] = None,
    list_only: Annotated[bool, typer.Option("--list", help="List the releases on offer instead of fetching one.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds allowed for each call: the manifest, each file (at most 900).")] = 60.0,
) -> None:
    """Fetch a release from the coordinator over TLS and verify it before it lands in --out (or --list them).

    Nothing is written to --out unless the manifest is signed by --key and every file matches it.
    """

    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # our one-line errors already carry gRPC's reason
    from fedkr.release_fetch import (
        FetchError,
        fetch_release,
        health,
        list_releases,
    )
    from fedkr.shared.release_verify import MAX_DOWNLOAD_SECONDS

    ca_pem = _read_ca(ca)
    if not 0 < timeout <= MAX_DOWNLOAD_SECONDS:
        _fail(f"--timeout must be more than 0 and at most {MAX_DOWNLOAD_SECONDS:g} s (the release service's limit for one call)")
    try:
        if list_only:
            if release_id is not None:
                _fail("give either a RELEASE_ID to fetch or --list, not both")
            status = health(address, ca_pem, timeout=min(timeout, 10.0))
            releases = list_releases(address, ca_pem, timeout=timeout)
            out_console.print(f"{address}: release service {status}, {len(releases)} release(s) on offer")
            if releases:
                table = Table("release", "created", "classes", "IPC", "files", "MB", "signed by key")
                for r in releases:
                    table.add_row(r.release_id, r.created, str(len(r.classes)), str(r.ipc), str(r.file_count),
                                  f"{r.total_bytes / 1e6:.1f}", r.signing_key_id)
                out_console.print(table)
            return
        if release_id is None:
            _fail("name the RELEASE_ID to fetch (see them with --list)")
        if key is None:
            _fail("--key is required to fetch: the coordinator's signing public key, to verify the release")
        verify_key = _verify_key(key)
        destination = out if out is not None else Path(release_id)
        with console.status(f"fetching {release_id} from {address}"):
            fetched = fetch_release(address, release_id, destination, ca_pem, verify_key, timeout=timeout)
    except FetchError as exc:
        _fail(str(exc), 1)
    except OSError as exc:
        _fail(f"cannot write the release: {exc}", 1)
    out_console.print(f"fetched and verified release {release_id} into {fetched}", soft_wrap=True)
    out_console.print(f"  re-check any time: fedkr verify {fetched} --key {key}", soft_wrap=True)


def _tls_pair(cert: Path, key_file: Path) -> tuple[bytes, bytes]:
    """The certificate and its private key, checked to belong together before a client finds out."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from fedkr.shared.keys import KeyFileError, _read_private

    cert_pem = _read_file(cert, "certificate")
    try:
        key_pem = _read_private(key_file)
        certificate = x509.load_pem_x509_certificate(cert_pem)
        private = serialization.load_pem_private_key(key_pem, password=None)
    except KeyFileError as exc:
        _fail(str(exc))
    except (ValueError, TypeError) as exc:
        _fail(f"cannot load the TLS certificate {cert} or key {key_file}: {exc}")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if certificate.public_key().public_bytes(serialization.Encoding.DER, spki) != private.public_key().public_bytes(serialization.Encoding.DER, spki):  # type: ignore[union-attr]
        _fail(f"{key_file} is not the private key of {cert}")
    return cert_pem, key_pem


def serve_releases(
    cert: Annotated[Path, typer.Option("--cert", help="The service's TLS certificate (PEM), signed by the consortium CA: server.pem from `fedkr coordinator init`.")],
    key_file: Annotated[Path, typer.Option("--key-file", help="The TLS certificate's private key (PEM, mode 0600): server.key beside it.")],
    verify_key: Annotated[Path, typer.Option("--verify-key", help="The coordinator's signing public key (public/signing.pub): only releases it verifies are served.")],
    runs: Annotated[Path, typer.Option("--runs", help="The coordinator's runs folder (runs/<run-id>/release), or a folder of release folders.")] = Path("runs"),
    address: Annotated[str, typer.Option("--address", help="Where to listen, HOST:PORT.", metavar="HOST:PORT")] = DEFAULT_ADDRESS,
    workers: Annotated[int, typer.Option(help="Threads reading and checking release files.")] = 4,
    max_downloads: Annotated[int | None, typer.Option(help="Downloads served at once; one more is told to retry (RESOURCE_EXHAUSTED); 16 when not given.", show_default=False)] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show gRPC's own log lines.")] = False,
) -> None:
    """Serve the signed, audited releases under --runs to researchers over TLS, until Ctrl-C or SIGTERM.

    Refused runs, unsigned or tampered folders and failed audits are never offered.
    Researchers use `fedkr fetch --from HOST:PORT`; health checks use the standard gRPC health service.
    """

    _setup_logging(verbose)
    if not verbose:
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    if not runs.is_dir():
        _fail(f"{runs} is not a folder (give the coordinator's runs folder with --runs)")
    if workers < 1:
        _fail("workers must be at least 1")
    if max_downloads is not None and max_downloads < 1:
        _fail("max-downloads must be at least 1")
    cert_pem, key_pem = _tls_pair(cert, key_file)
    public_key = _verify_key(verify_key)

    from fedkr.server.release_service import MAX_DOWNLOADS, serve
    from fedkr.shared.pki import certificate_names

    try:
        server = serve(runs, address, cert_pem, key_pem, public_key, workers=workers,
                       max_downloads=MAX_DOWNLOADS if max_downloads is None else max_downloads)
    except OSError as exc:
        _fail(str(exc))
    log.info("clients must dial one of the certificate's names: %s", ", ".join(certificate_names(cert_pem)))
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("stopping: finishing calls in progress (up to 5 s)")
        server.stop(grace=5)
    log.info("release service stopped")
