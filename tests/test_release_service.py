"""Signed releases: signing and verifying a folder, the TLS release service, fetching, and the CLI.

The release folders here are small but real: the file names of server/release.py, a manifest in
its format with true SHA-256s, signed with a real Ed25519 key, served by a real gRPC server on
127.0.0.1 with TLS from shared/pki.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from fedkr.server.release_service import MAX_WATCHES, Release, ReleaseServer, ReleaseStore
from fedkr.server.release_signing import SIGNATURE_FILE, sign_release
from fedkr.shared.keys import key_id, new_signing_key, public_pem, write_public
from fedkr.shared.pki import new_ca, new_server_certificate, write_server_certificate
from fedkr.release_fetch import FetchError, fetch_release, health, list_releases
from fedkr.shared.release_verify import MAX_DOWNLOAD_SECONDS, parse_manifest, verify_release
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fedkr.v1 import release_service_pb2 as pb
from fedkr.v1 import release_service_pb2_grpc as pb_grpc

# the names a release holds (shared/release_inspect.py: RELEASE_FILES), restated so these tests need no torch
ARTEFACTS = ("distilled.npz", "student.safetensors", "student_config.json")
RELEASE_FILES = (*ARTEFACTS, "metrics.json", "contact_sheet.png", "audit.json", "audit.html")
SIGNER = new_signing_key()
OTHER = new_signing_key()


def make_release(directory: Path, key=SIGNER, *, passed: bool = True, sign: bool = True, seed: int = 0,
                 student_bytes: int = 150_000) -> Path:
    """A release folder as server/release.py writes it: the files, then manifest.json, then the signature."""
    directory.mkdir(parents=True)
    release_id = directory.parent.name if directory.name == "release" else directory.name
    rng = __import__("random").Random(seed)
    contents = {name: rng.randbytes(300) for name in RELEASE_FILES}
    contents["student.safetensors"] = rng.randbytes(student_bytes)  # by default three 64 KiB chunks
    artefacts = {name: hashlib.sha256(contents[name]).hexdigest() for name in ARTEFACTS}
    contents["audit.json"] = json.dumps({
        "schema": "fedkr.audit/1", "release": {"id": release_id, "artefacts": artefacts},
        "decision": {"passed": passed, "failures": []}, "sites": {},
    }).encode()
    for name, data in contents.items():
        (directory / name).write_bytes(data)
    manifest = {
        "release": release_id,
        "created": "2025-01-01T00:00:00+0000",
        "fedkr_version": "0.1.0",
        "classes": ["a", "b"],
        "ipc": 10,
        "audit": {"report": "audit.json", "passed": passed},
        "files": {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)} for name, data in contents.items()},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if sign:
        sign_release(directory, key)
    return directory


def write_manifest(directory: Path, manifest: object) -> None:
    """Replace the manifest (any JSON, hostile or not) and sign it with the right key."""
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    (directory / "manifest.json").write_text(text, encoding="utf-8", errors="surrogatepass")
    sign_release(directory, SIGNER)


def rewrite_audit(directory: Path, edit) -> None:
    """Change audit.json with `edit` (a function of the loaded report, or bytes to write), then list its
    new hash in the manifest and sign again with the coordinator's key: everything but the audit agrees."""
    path = directory / "audit.json"
    if isinstance(edit, bytes):
        path.write_bytes(edit)
    else:
        report = json.loads(path.read_text())
        edit(report)
        path.write_text(json.dumps(report))
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["files"]["audit.json"] = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "bytes": path.stat().st_size}
    write_manifest(directory, manifest)


# --- verify ---------------------------------------------------------------------------------------


def test_signed_release_verifies(tmp_path):
    release = make_release(tmp_path / "run" / "release")
    result = verify_release(release, SIGNER.public_key())
    assert result.ok and result.problems == []
    assert any(line.startswith("signature: valid") and key_id(SIGNER.public_key()) in line for line in result.checked)
    assert "student.safetensors: 150000 bytes, SHA-256 matches" in result.checked
    assert ("audit: audit.json says passed, for release run, naming distilled.npz, student.safetensors, "
            "student_config.json by the manifest's SHA-256s") in result.checked
    sig = json.loads((release / SIGNATURE_FILE).read_text())
    assert sig["algorithm"] == "ed25519" and sig["key_id"] == key_id(SIGNER.public_key())


def test_tampered_file_fails_with_clear_message(tmp_path):
    release = make_release(tmp_path / "r")
    data = bytearray((release / "student.safetensors").read_bytes())
    data[1000] ^= 1
    (release / "student.safetensors").write_bytes(bytes(data))
    (release / "metrics.json").write_bytes(b"{}")
    result = verify_release(release, SIGNER.public_key())
    assert not result.ok
    assert "student.safetensors: SHA-256 differs from the manifest (file changed after signing)" in result.problems
    assert "metrics.json: 2 bytes, the manifest says 300 (file changed after signing)" in result.problems


def test_wrong_key_fails_naming_both_keys(tmp_path):
    release = make_release(tmp_path / "r")
    result = verify_release(release, OTHER.public_key())
    assert not result.ok
    expected = (f"manifest signature does not verify with key {key_id(OTHER.public_key())} "
                f"(signed by key {key_id(SIGNER.public_key())})")
    assert result.problems == [expected]


def test_manifest_edited_after_signing_fails(tmp_path):
    release = make_release(tmp_path / "r")
    manifest = json.loads((release / "manifest.json").read_text())
    manifest["classes"] = ["x", "y"]
    (release / "manifest.json").write_text(json.dumps(manifest))
    result = verify_release(release, SIGNER.public_key())
    assert any("does not verify" in p and "manifest.json changed after signing" in p for p in result.problems)


def test_unlisted_extra_file_fails(tmp_path):
    release = make_release(tmp_path / "r")
    (release / "extra.bin").write_bytes(b"smuggled")
    result = verify_release(release, SIGNER.public_key())
    assert result.problems == ["extra.bin: not listed in the manifest (added after signing)"]


@pytest.mark.parametrize("case, expected", [
    ("unsigned", "not signed: no manifest.sig"),
    ("failed", "manifest says the audit did not pass: this is not a release"),
    ("missing", "audit.html: missing"),
    ("refused", "no manifest.json: not a fedkr release folder"),
    ("symlink", "metrics.json: not a regular file"),
    ("garbage-sig", "manifest.sig is not valid JSON"),
])
def test_not_a_release(tmp_path, case, expected):
    release = make_release(tmp_path / "r", sign=case != "unsigned", passed=case != "failed")
    if case == "missing":
        (release / "audit.html").unlink()
    elif case == "refused":
        (release / "manifest.json").unlink()
    elif case == "symlink":
        (release / "metrics.json").unlink()
        (release / "metrics.json").symlink_to(release / "audit.json")
    elif case == "garbage-sig":
        (release / SIGNATURE_FILE).write_bytes(b"\xff\x00")
    result = verify_release(release, SIGNER.public_key())
    assert not result.ok and any(p.startswith(expected) for p in result.problems), result.problems


# audit.json changed, then the manifest re-signed by the coordinator's key: only reading the report shows it
AUDIT_EDITS = {
    "failed": (lambda a: a["decision"].update(passed=False), "audit.json says the audit did not pass"),
    "no-decision": (lambda a: a.pop("decision"), "audit.json records no decision"),
    "passed-as-text": (lambda a: a["decision"].update(passed="true"), "audit.json records no decision"),
    "other-release": (lambda a: a["release"].update(id="run-other"),
                      "audit.json is the audit of release 'run-other', the manifest is of release 'r'"),
    "other-student": (lambda a: a["release"]["artefacts"].update({"student.safetensors": "0" * 64}),
                      "audit.json audited another student.safetensors (SHA-256 0000000000000000..., the manifest lists"),
    "artefact-missing": (lambda a: a["release"]["artefacts"].pop("distilled.npz"),
                         "audit.json names no SHA-256 for distilled.npz: it did not audit it"),
    "artefact-extra": (lambda a: a["release"]["artefacts"].update({"extra.bin": "0" * 64}),
                       "audit.json names 'extra.bin', which is not an artefact of a release"),
    "no-artefacts": (lambda a: a["release"].pop("artefacts"), "audit.json names no artefacts by hash"),
    "other-schema": (lambda a: a.update(schema="fedkr.audit/0"), "audit.json is not a fedkr.audit/1 audit report"),
    "not-json": (b"{\"schema\": ", "audit.json is not valid JSON"),
    "deep": (b"[" * 100_000, "audit.json is not valid JSON"),
    "list": (b"[]", "audit.json is not a fedkr.audit/1 audit report"),
}


@pytest.mark.parametrize("case", AUDIT_EDITS)
def test_verify_reads_the_verdict_from_the_audit_report(tmp_path, case):
    edit, expected = AUDIT_EDITS[case]
    release = make_release(tmp_path / "r")
    rewrite_audit(release, edit)
    result = verify_release(release, SIGNER.public_key())
    assert not result.ok, result.checked
    assert any(p.startswith(expected) for p in result.problems), result.problems
    assert not any(line.startswith("audit:") for line in result.checked)
    assert any(line.startswith("signature: valid") for line in result.checked)  # the signature alone is not enough


HOSTILE_MANIFESTS = [
    "not json",
    "[" * 100_000,
    json.dumps([1, 2]),
    json.dumps({"files": []}),
    json.dumps({"files": {"../outside": {"sha256": "0" * 64, "bytes": 1}}, "audit": {"report": "x", "passed": True}}),
    json.dumps({"files": {"/etc/passwd": {"sha256": "0" * 64, "bytes": 1}}, "audit": {"passed": True}}),
    json.dumps({"files": {"a/b": 1, "..": None, "": {}, "x\u0000": {}, "manifest.sig": {}}, "audit": {"passed": "yes"}}),
    json.dumps({"files": {"a": {"sha256": 5, "bytes": True}, "b": {"sha256": "A" * 64, "bytes": -1}}}),
    '{"files": {"\\udc80": {"sha256": "' + "0" * 64 + '", "bytes": 0}}, "audit": {"report": "\\udc80", "passed": true}}',
    json.dumps({"files": {"n" * 10_000: {"sha256": "0" * 64, "bytes": 0}}}),
]


@pytest.mark.parametrize("manifest", HOSTILE_MANIFESTS, ids=range(len(HOSTILE_MANIFESTS)))
def test_hostile_manifest_gives_problems_not_exceptions(tmp_path, manifest):
    release = make_release(tmp_path / "r")
    write_manifest(release, manifest)
    result = verify_release(release, SIGNER.public_key())
    assert not result.ok and result.problems
    assert (tmp_path / "outside").exists() is False


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
manifest_like = st.fixed_dictionaries({}, optional={
    "files": st.dictionaries(st.text(max_size=20) | st.sampled_from(["../x", "audit.json", ".", "a/b"]),
                             json_values | st.fixed_dictionaries({"sha256": st.text(max_size=64), "bytes": json_values})),
    "audit": json_values | st.fixed_dictionaries({"report": json_values, "passed": json_values}),
})


@settings(max_examples=40, deadline=None, database=None)
@given(manifest=json_values | manifest_like)
def test_fuzzed_manifests_never_raise(manifest):
    with tempfile.TemporaryDirectory() as tmp:
        release = Path(tmp) / "r"
        release.mkdir()
        (release / "audit.json").write_text("{}")
        write_manifest(release, manifest)
        result = verify_release(release, SIGNER.public_key())
        assert isinstance(result.problems, list) and result.ok is False


def test_store_drops_a_release_changed_on_disk(tmp_path):
    make_release(tmp_path / "runs" / "r1" / "release")
    store = ReleaseStore(tmp_path / "runs", SIGNER.public_key())
    assert [r.release_id for r in store.releases()] == ["r1"]
    with (tmp_path / "runs" / "r1" / "release" / "metrics.json").open("ab") as fh:
        fh.write(b" ")
    assert store.get("r1") is None and store.releases() == []


# --- the service ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("service")
    runs = root / "runs"
    make_release(runs / "run-ok" / "release", seed=1)
    make_release(runs / "flat-ok", seed=2)  # a folder of releases, manifest directly inside
    make_release(runs / "run-failed" / "release", passed=False)  # signed, but the audit failed
    make_release(runs / "run-unsigned" / "release", sign=False)
    make_release(runs / "run-otherkey" / "release", key=OTHER)
    make_release(runs / "run-swap" / "release", seed=3)
    rewrite_audit(make_release(runs / "run-auditfail" / "release", seed=4), lambda a: a["decision"].update(passed=False))
    refused = runs / "run-refused"
    refused.mkdir()
    for name in ("refusal.json", "audit.json", "audit.html"):
        (refused / name).write_text("{}")
    make_release(runs / "bad id!" / "release")

    ca_pem, ca_key = new_ca()
    cert = new_server_certificate(ca_pem, ca_key, ["127.0.0.1"])
    cert_path, key_path = write_server_certificate(root / "tls", "server", cert)
    write_public(root / "ca.pem", ca_pem)
    write_public(root / "signing.pub", public_pem(SIGNER.public_key()))
    write_public(root / "other.pub", public_pem(OTHER.public_key()))
    server = ReleaseServer(ReleaseStore(runs, SIGNER.public_key()), "127.0.0.1:0", cert.cert_pem, cert.key_pem)
    server.start()
    yield {"address": f"127.0.0.1:{server.port}", "ca": ca_pem, "root": root, "runs": runs, "cert": cert_path,
           "key": key_path, "tls": cert}
    server.stop(0)


def test_list_shows_only_signed_passed_releases(service):
    releases = list_releases(service["address"], service["ca"])
    assert sorted(r.release_id for r in releases) == ["flat-ok", "run-ok", "run-swap"]
    ok = next(r for r in releases if r.release_id == "run-ok")
    assert ok.audit_passed and ok.classes == ["a", "b"] and ok.ipc == 10 and ok.file_count == len(RELEASE_FILES)
    assert ok.signing_key_id == key_id(SIGNER.public_key())


def test_fetch_downloads_and_verifies(service, tmp_path):
    out = fetch_release(service["address"], "run-ok", tmp_path / "got", service["ca"], SIGNER.public_key())
    assert verify_release(out, SIGNER.public_key()).ok
    source = service["runs"] / "run-ok" / "release"
    for name in (*RELEASE_FILES, "manifest.json", SIGNATURE_FILE):
        assert (out / name).read_bytes() == (source / name).read_bytes()
    assert os.listdir(tmp_path) == ["got"]  # no staging folder left
    with pytest.raises(FetchError, match="already exists"):
        fetch_release(service["address"], "run-ok", out, service["ca"], SIGNER.public_key())


@pytest.mark.parametrize("release_id", ["run-failed", "run-auditfail", "run-unsigned", "run-otherkey", "run-refused", "nope"])
def test_fetch_of_a_release_not_on_offer_is_not_found(service, tmp_path, release_id):
    with pytest.raises(FetchError) as info:
        fetch_release(service["address"], release_id, tmp_path / "got", service["ca"], SIGNER.public_key())
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert os.listdir(tmp_path) == []


def test_fetch_with_the_wrong_key_downloads_nothing(service, tmp_path):
    with pytest.raises(FetchError, match="does not verify with key .*nothing was downloaded"):
        fetch_release(service["address"], "run-ok", tmp_path / "got", service["ca"], OTHER.public_key())
    assert os.listdir(tmp_path) == []


def change_in_place(path: Path, offset: int) -> None:
    """Flip one byte of `path` keeping its size and inode, and put its modification time back."""
    before = path.stat()
    whence = os.SEEK_END if offset < 0 else os.SEEK_SET
    with path.open("r+b") as fh:
        fh.seek(offset, whence)
        byte = fh.read(1)
        fh.seek(offset, whence)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_ino, after.st_mtime_ns) == (before.st_size, before.st_ino, before.st_mtime_ns)


def test_a_file_changed_in_place_is_no_longer_listed(service, tmp_path):
    assert "run-swap" in {r.release_id for r in list_releases(service["address"], service["ca"])}  # checked and cached
    change_in_place(service["runs"] / "run-swap" / "release" / "student.safetensors", -1)
    assert "run-swap" not in {r.release_id for r in list_releases(service["address"], service["ca"])}
    with pytest.raises(FetchError) as info:
        fetch_release(service["address"], "run-swap", tmp_path / "got", service["ca"], SIGNER.public_key())
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert os.listdir(tmp_path) == []


def test_health_is_serving(service):
    assert health(service["address"], service["ca"]) == "SERVING"
    assert health(service["address"], service["ca"], service="") == "SERVING"


def test_tls_with_another_ca_is_refused(service):
    other_ca, _ = new_ca()
    with pytest.raises(FetchError, match="not signed by the CA you gave") as info:
        list_releases(service["address"], other_ca, timeout=10)
    assert "\n" not in str(info.value)


def test_unreachable_service_is_one_line():
    ca_pem, _ = new_ca()
    with pytest.raises(FetchError, match=r"cannot reach the release service at 127\.0\.0\.1:1 ") as info:
        health("127.0.0.1:1", ca_pem, timeout=5)
    assert "\n" not in str(info.value)


def test_audit_report_and_manifest_rpcs(service):
    with grpc.secure_channel(service["address"], grpc.ssl_channel_credentials(service["ca"])) as channel:
        stub = pb_grpc.ReleaseServiceStub(channel)
        report = stub.GetAuditReport(pb.GetAuditReportRequest(release_id="flat-ok"), timeout=10)
        assert report.passed and report.file_name == "audit.json"
        assert report.report_json == (service["runs"] / "flat-ok" / "audit.json").read_bytes()
        manifest = stub.GetManifest(pb.GetManifestRequest(release_id="flat-ok"), timeout=10)
        assert manifest.manifest_json == (service["runs"] / "flat-ok" / "manifest.json").read_bytes()
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Download(pb.DownloadRequest(release_id="flat-ok", file_name="manifest.json"), timeout=10))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND and "GetManifest" in info.value.details()


CLEAN_CODES = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
release_ids = st.text(max_size=120) | st.sampled_from(
    ["run-ok", "flat-ok", "run-failed", "run-refused", "..", ".", "", "../runs", "run-ok/release", "run-ok/../run-ok",
     "bad id!", "run-ok\x00", "a" * 81, "a" * 100_000, "ρελίζ", "run-ok\n"])
file_names = st.text(max_size=300) | st.sampled_from(
    ["audit.json", "student.safetensors", "manifest.json", "manifest.sig", "../../../etc/passwd", "/etc/passwd", "..",
     "release/audit.json", "audit.json\x00", "x" * 70_000, "refusal.json", "аudit.json", "audit.json/."])


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(release_id=release_ids, file_name=file_names)
def test_fuzzed_requests_get_clean_status_codes(service, release_id, file_name):
    with grpc.secure_channel(service["address"], grpc.ssl_channel_credentials(service["ca"])) as channel:
        stub = pb_grpc.ReleaseServiceStub(channel)
        calls = [
            lambda: stub.GetManifest(pb.GetManifestRequest(release_id=release_id), timeout=10),
            lambda: stub.GetAuditReport(pb.GetAuditReportRequest(release_id=release_id), timeout=10),
            lambda: list(stub.Download(pb.DownloadRequest(release_id=release_id, file_name=file_name), timeout=10)),
        ]
        for call in calls:
            try:
                reply = call()
            except grpc.RpcError as exc:
                assert exc.code() in CLEAN_CODES, (exc.code(), exc.details())
                assert "Traceback" not in (exc.details() or "")
                continue
            assert release_id in ("run-ok", "flat-ok", "run-swap")  # only releases on offer answer
            if isinstance(reply, list):  # a download: only a file the manifest lists, digest last
                assert file_name in RELEASE_FILES and reply[-1].WhichOneof("payload") == "digest"


def test_fetch_refuses_a_release_whose_audit_report_does_not_certify_it(service, tmp_path):
    """A server that offers what the key signed without reading the audit: fetch reads it itself."""

    class UncheckedStore(ReleaseStore):
        def _load(self, release_id: str, directory: Path) -> Release | None:
            manifest = (directory / "manifest.json").read_bytes()
            return Release(release_id, directory, manifest, (directory / SIGNATURE_FILE).read_bytes(), parse_manifest(manifest))

    server = ReleaseServer(UncheckedStore(service["runs"], SIGNER.public_key()), "127.0.0.1:0",
                           service["tls"].cert_pem, service["tls"].key_pem)
    server.start()
    try:
        with pytest.raises(FetchError, match=r"^release run-auditfail: audit.json says the audit did not pass; nothing was kept$"):
            fetch_release(f"127.0.0.1:{server.port}", "run-auditfail", tmp_path / "got", service["ca"], SIGNER.public_key())
    finally:
        server.stop(0)
    assert os.listdir(tmp_path) == []


# --- clients that stop reading --------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_service(tmp_path_factory, service):
    """The service with a release holding a 4 MiB file (more than a gRPC client buffers) and one of 16 MiB."""
    runs = tmp_path_factory.mktemp("big") / "runs"
    make_release(runs / "big" / "release", seed=5, student_bytes=4 * 1024 * 1024)
    make_release(runs / "huge" / "release", seed=6, student_bytes=16 * 1024 * 1024)
    server = ReleaseServer(ReleaseStore(runs, SIGNER.public_key()), "127.0.0.1:0", service["tls"].cert_pem,
                           service["tls"].key_pem)
    server.start()
    yield {**service, "address": f"127.0.0.1:{server.port}", "runs": runs}
    server.stop(0)


@contextlib.contextmanager
def open_downloads(target: dict, count: int, release_id: str = "big", timeout: float = 60) -> Iterator[list]:
    """`count` Download streams of release_id's student.safetensors, each on its own connection, none ever
    read; each must have started (the server sent its headers, with the first chunk) within 10 s. The
    connections close on leaving the block. Without BDP probing a client's window stays at gRPC's
    initial 64 KiB: the server is held as surely as by a client that grants no window at all."""
    options = [("grpc.http2.bdp_probe", 0)]
    channels = [grpc.secure_channel(target["address"], grpc.ssl_channel_credentials(target["ca"]), options=options)
                for _ in range(count)]
    waiting = ThreadPoolExecutor(max_workers=count)
    try:
        streams = [pb_grpc.ReleaseServiceStub(channel).Download(
            pb.DownloadRequest(release_id=release_id, file_name="student.safetensors"), timeout=timeout) for channel in channels]
        # initial_metadata reads no message: gRPC's window stays as small as a client that never reads leaves it
        list(waiting.map(lambda stream: stream.initial_metadata(), streams, timeout=10))
        yield streams
    finally:
        for channel in channels:
            channel.close()
        waiting.shutdown(wait=False)


@pytest.mark.parametrize("idle", [4, 8])
def test_idle_downloads_leave_the_service_to_everyone_else(big_service, tmp_path, idle):
    address, ca = big_service["address"], big_service["ca"]
    with open_downloads(big_service, idle):
        started = time.monotonic()
        assert health(address, ca, timeout=5) == "SERVING"
        assert [r.release_id for r in list_releases(address, ca, timeout=5)] == ["big", "huge"]
        out = fetch_release(address, "big", tmp_path / "got", ca, SIGNER.public_key(), timeout=20)
        assert verify_release(out, SIGNER.public_key()).ok
        assert time.monotonic() - started < 20


def test_downloads_beyond_the_limit_are_refused_at_once(big_service, tmp_path):
    server = ReleaseServer(ReleaseStore(big_service["runs"], SIGNER.public_key()), "127.0.0.1:0",
                           big_service["tls"].cert_pem, big_service["tls"].key_pem, max_downloads=2)
    server.start()
    target = {**big_service, "address": f"127.0.0.1:{server.port}"}
    try:
        with open_downloads(target, 2):
            started = time.monotonic()
            with pytest.raises(FetchError) as info:
                fetch_release(target["address"], "big", tmp_path / "refused", target["ca"], SIGNER.public_key(), timeout=20)
            assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "try again later" in str(info.value)
            assert time.monotonic() - started < 5 and os.listdir(tmp_path) == []
            assert health(target["address"], target["ca"], timeout=5) == "SERVING"
        # the clients went: their slots come back
        deadline = time.monotonic() + 10
        while True:
            try:
                fetch_release(target["address"], "big", tmp_path / "got", target["ca"], SIGNER.public_key(), timeout=20)
                break
            except FetchError as exc:
                assert exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline, str(exc)
                time.sleep(0.2)
    finally:
        server.stop(0)


@pytest.mark.parametrize("timeout", [None, MAX_DOWNLOAD_SECONDS + 60])
def test_a_download_without_a_bounded_deadline_is_refused(big_service, timeout):
    with grpc.secure_channel(big_service["address"], grpc.ssl_channel_credentials(big_service["ca"])) as channel:
        stream = pb_grpc.ReleaseServiceStub(channel).Download(
            pb.DownloadRequest(release_id="big", file_name="audit.json"), timeout=timeout)
        with pytest.raises(grpc.RpcError) as info:
            list(stream)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == f"a download must carry a deadline of at most {MAX_DOWNLOAD_SECONDS:g} s (gRPC timeout)"


def test_health_watches_beyond_the_limit_are_refused(big_service):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channels = [grpc.secure_channel(big_service["address"], grpc.ssl_channel_credentials(big_service["ca"]))
                for _ in range(MAX_WATCHES + 1)]
    try:
        watch = [health_pb2_grpc.HealthStub(channel).Watch for channel in channels]
        held = [call(health_pb2.HealthCheckRequest(service="")) for call in watch[:-1]]
        for stream in held:
            assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            next(watch[-1](health_pb2.HealthCheckRequest(service="")))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert health(big_service["address"], big_service["ca"], timeout=5) == "SERVING"
    finally:
        for channel in channels:
            channel.close()


def test_a_file_changed_during_a_download_ends_in_data_loss(big_service, tmp_path):
    with open_downloads(big_service, 1, "huge") as streams:  # the server is blocked near the start
        change_in_place(big_service["runs"] / "huge" / "release" / "student.safetensors", -1)
        with pytest.raises(grpc.RpcError) as info:
            for _ in streams[0]:
                pass
        assert info.value.code() == grpc.StatusCode.DATA_LOSS and "changed on the server" in info.value.details()
    assert "huge" not in {r.release_id for r in list_releases(big_service["address"], big_service["ca"])}


# --- the CLI --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli():
    from fedkr.cli import app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


def test_cli_verify_success_and_failure(service, tmp_path, cli):
    release = make_release(tmp_path / "r")
    result = cli("verify", release, "--key", service["root"] / "signing.pub")
    assert result.exit_code == 0, result.output
    assert "verified" in result.output and "student.safetensors: 150000 bytes, SHA-256 matches" in result.output

    result = cli("verify", release, "--key", service["root"] / "other.pub")
    assert result.exit_code == 1 and "manifest signature does not verify with key" in result.output

    (release / "student.safetensors").write_bytes(b"x" * 150_000)
    result = cli("verify", release, "--key", service["root"] / "signing.pub")
    assert result.exit_code == 1
    assert "student.safetensors: SHA-256 differs from the manifest (file changed after signing)" in result.output
    assert "does not verify (1 problem(s))" in result.output


def test_cli_verify_refuses_a_failed_audit_under_a_valid_signature(service, tmp_path, cli):
    release = make_release(tmp_path / "r")
    rewrite_audit(release, lambda a: a["decision"].update(passed=False))
    result = cli("verify", release, "--key", service["root"] / "signing.pub")
    assert result.exit_code == 1, result.output
    assert "FAIL  audit.json says the audit did not pass" in result.output
    assert "verified" not in result.output and "does not verify (1 problem(s))" in result.output


def test_cli_verify_bad_key_file(tmp_path, cli):
    (tmp_path / "bad.pem").write_text("not a key")
    result = cli("verify", tmp_path, "--key", tmp_path / "bad.pem")
    assert result.exit_code == 2 and "not a PEM public key" in result.output and result.exception is not None
    assert "Traceback" not in result.output


def test_cli_fetch_and_list(service, tmp_path, cli):
    common = ("--from", service["address"], "--ca", service["root"] / "ca.pem")
    result = cli("fetch", *common, "--list")
    assert result.exit_code == 0, result.output
    assert "SERVING" in result.output and "run-ok" in result.output and "run-failed" not in result.output

    result = cli("fetch", *common, "run-ok", "--out", tmp_path / "got", "--key", service["root"] / "signing.pub")
    assert result.exit_code == 0, result.output
    assert "fetched and verified release run-ok" in result.output
    assert verify_release(tmp_path / "got", SIGNER.public_key()).ok

    result = cli("fetch", *common, "run-failed", "--out", tmp_path / "no", "--key", service["root"] / "signing.pub")
    assert result.exit_code == 1 and "NOT_FOUND" in result.output and not (tmp_path / "no").exists()

    result = cli("fetch", *common, "run-ok")
    assert result.exit_code == 2 and "--key is required" in result.output

    result = cli("fetch", *common, "run-ok", "--key", service["root"] / "signing.pub", "--timeout", 1000)
    assert result.exit_code == 2 and "--timeout must be more than 0 and at most 900 s" in result.output


def test_cli_serve_releases_until_sigterm(service):
    command = [sys.executable, "-m", "fedkr", "coordinator", "serve-releases", "--runs", str(service["runs"]),
               "--address", "127.0.0.1:0", "--cert", str(service["cert"]), "--key-file", str(service["key"]),
               "--verify-key", str(service["root"] / "signing.pub")]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 20
        while not (port := re.search(r"\(port (\d+)\)", "".join(lines))) and time.monotonic() < deadline:
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.05)
        assert port, "".join(lines)
        assert health(f"127.0.0.1:{port.group(1)}", service["ca"]) == "SERVING"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=5)
    log = "".join(lines)
    assert re.search(r"offering \d release\(s\): flat-ok, run-ok", log), log
    assert "release service stopped" in log and "Traceback" not in log


def test_a_signed_release_copied_under_another_id_is_not_offered(service):
    import shutil

    shutil.copytree(service["runs"] / "run-ok" / "release", service["runs"] / "run-copy" / "release")
    try:
        assert "run-copy" not in {r.release_id for r in list_releases(service["address"], service["ca"])}
        with pytest.raises(FetchError) as info:
            fetch_release(service["address"], "run-copy", service["root"] / "copy-out", service["ca"], SIGNER.public_key())
        assert info.value.code == grpc.StatusCode.NOT_FOUND
    finally:
        shutil.rmtree(service["runs"] / "run-copy")
