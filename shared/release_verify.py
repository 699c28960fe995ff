"""Checking a release folder against the coordinator's signed manifest, wherever the copy came from.

The release service checks a folder before offering it, and a researcher checks what they
fetched (or were handed on a disk) with the coordinator's public key alone: no trust in the
server, the network or the person who copied it. Every check reports a plain sentence; a hostile
or broken manifest yields problems, never an exception, because the person reading the output is
deciding whether to use the data.

The format (what is signed, the file names, the audit report's binding to the release) lives here
because both sides need it; the coordinator writes signatures with server/release_signing.py.

A release's verdict is the audit report's, not the manifest's: the manifest only says which file
is the report. Verifying therefore reads the report (audit.json, schema "fedkr.audit/1",
docs/audit.md) and requires that its decision passed, that it is about this release, and that it
names exactly the release's artefacts by the SHA-256s the manifest lists. A report for other
files, another release or a failed audit does not verify, whoever signed the manifest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .json_input import JSONInputError, Limits, parse_json
from .keys import key_id

MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
#: The files that carry a release's knowledge; its audit report names each by SHA-256.
ARTEFACTS = ("distilled.npz", "student.safetensors", "student_config.json")
AUDIT_SCHEMA = "fedkr.audit/1"
#: The release service serves a report this large whole (GetAuditReport); a real one is a few hundred kB.
MAX_AUDIT_BYTES = 15 << 20
#: The longest deadline a Download call may carry (seconds): the release service refuses a call with
#: none or a longer one, so that gRPC ends every download in this time even if its client stops reading.
MAX_DOWNLOAD_SECONDS = 900.0
SIGNATURE_ALGORITHM = "ed25519"
#: Prefixed to the manifest's bytes before signing; part of the format, never change it in place.
SIGNATURE_DOMAIN = b"fedkr/v1/release-manifest\n"
#: The same rule as run ids (shared/reports.py), restated here so that checking needs no torch.
RELEASE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
MAX_NAME_LENGTH = 255
MAX_MANIFEST_BYTES = 1 << 20  # a real manifest is a few kB; bound what a hostile one can cost
MAX_SIGNATURE_BYTES = 1 << 14
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def signed_message(manifest_bytes: bytes) -> bytes:
    """What is signed: the domain string, then manifest.json byte for byte (no re-serialising)."""
    return SIGNATURE_DOMAIN + manifest_bytes


def is_valid_release_id(release_id: object) -> bool:
    """A release id is a run id: letters, digits, '.', '_', '-', at most 80, never '..'."""
    return isinstance(release_id, str) and RELEASE_ID_PATTERN.fullmatch(release_id) is not None and ".." not in release_id


def shown(name: str, limit: int = 80) -> str:
    """A name safe to print: undecodable bytes escaped, long names cut."""
    text = name.encode("utf-8", "backslashreplace").decode("utf-8")
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def plain_name_problem(name: object) -> str | None:
    """Why `name` is not a plain file name inside the release folder, or None when it is."""
    if not isinstance(name, str) or not name:
        return "file names must be non-empty strings"
    if len(name) > MAX_NAME_LENGTH:
        return f"file name of {len(name)} characters (at most {MAX_NAME_LENGTH})"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return f"file name '{shown(name)}' is not valid UTF-8"
    if name in (".", "..") or "/" in name or "\\" in name or "\x00" in name or ".." in name:
        return f"file name '{shown(name)}' is not a plain name in the release folder (no folders, no '..')"
    if any(not ch.isprintable() for ch in name):
        return f"file name '{shown(name)}' holds control characters"
    if name in (MANIFEST_FILE, SIGNATURE_FILE):
        return f"the manifest lists {name}, which cannot be among the files it covers"
    return None


@dataclass(frozen=True)
class ManifestEntry:
    name: str
    sha256: str
    size: int


@dataclass
class ParsedManifest:
    """What a manifest's bytes say, with every reason it cannot be trusted as a release manifest."""

    document: dict = field(default_factory=dict)
    files: dict[str, ManifestEntry] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def audit_passed(self) -> bool:
        audit = self.document.get("audit")
        return isinstance(audit, dict) and audit.get("passed") is True

    @property
    def audit_report(self) -> str | None:
        audit = self.document.get("audit")
        report = audit.get("report") if isinstance(audit, dict) else None
        return report if isinstance(report, str) else None


def parse_manifest(data: bytes) -> ParsedManifest:
    """Read manifest.json's bytes: the files with their hashes and sizes, and the audit verdict."""
    parsed = ParsedManifest()
    if len(data) > MAX_MANIFEST_BYTES:
        parsed.problems.append(f"{MANIFEST_FILE} is {len(data)} bytes (at most {MAX_MANIFEST_BYTES}): not a fedkr manifest")
        return parsed
    try:
        document = parse_json(data, where=MANIFEST_FILE, limits=Limits(max_bytes=MAX_MANIFEST_BYTES))
    except JSONInputError:
        parsed.problems.append(f"{MANIFEST_FILE} is not valid JSON")
        return parsed
    if not isinstance(document, dict):
        parsed.problems.append(f"{MANIFEST_FILE} is not a JSON object")
        return parsed
    parsed.document = document
    files = document.get("files")
    if not isinstance(files, dict) or not files:
        parsed.problems.append(f"{MANIFEST_FILE} lists no files")
        files = {}
    for name, entry in files.items():
        problem = plain_name_problem(name)
        if problem is not None:
            parsed.problems.append(f"manifest: {problem}")
            continue
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        size = entry.get("bytes") if isinstance(entry, dict) else None
        if not isinstance(digest, str) or _SHA256_HEX.fullmatch(digest) is None:
            parsed.problems.append(f"manifest: {shown(name)} has no valid SHA-256")
        elif not isinstance(size, int) or isinstance(size, bool) or size < 0:
            parsed.problems.append(f"manifest: {shown(name)} has no valid size")
        else:
            parsed.files[name] = ManifestEntry(name, digest, size)
    audit = document.get("audit")
    if not isinstance(audit, dict) or not isinstance(audit.get("passed"), bool):
        parsed.problems.append("manifest records no audit verdict")
    elif not audit["passed"]:
        parsed.problems.append("manifest says the audit did not pass: this is not a release")
    elif parsed.audit_report is None or parsed.audit_report not in files:
        parsed.problems.append("manifest's audit report is not among the files it lists")
    return parsed


def audit_problems(audit_bytes: bytes, parsed: ParsedManifest) -> list[str]:
    """Why the audit report's bytes do not certify the release `parsed` describes; [] when they do.

    The report must be a "fedkr.audit/1" JSON object whose `decision.passed` is true, whose
    `release.id` is the manifest's `release`, and whose `release.artefacts` maps exactly the names in
    ARTEFACTS to the SHA-256s the manifest lists for them. Never raises: a hostile report is a problem.
    """
    name = shown(parsed.audit_report or "the audit report")
    if len(audit_bytes) > MAX_AUDIT_BYTES:
        return [f"{name} is {len(audit_bytes)} bytes (at most {MAX_AUDIT_BYTES}): not a fedkr audit report"]
    try:
        document = json.loads(audit_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return [f"{name} is not valid JSON"]
    if not isinstance(document, dict) or document.get("schema") != AUDIT_SCHEMA:
        return [f"{name} is not a {AUDIT_SCHEMA} audit report"]
    problems: list[str] = []
    decision = document.get("decision")
    passed = decision.get("passed") if isinstance(decision, dict) else None
    if passed is not True:
        problems.append(f"{name} says the audit did not pass" if passed is False else f"{name} records no decision")
    release = document.get("release") if isinstance(document.get("release"), dict) else {}
    audited_id, manifest_id = release.get("id"), parsed.document.get("release")
    if not isinstance(audited_id, str) or audited_id != manifest_id:
        problems.append(f"{name} is the audit of release {_quoted(audited_id)}, the manifest is of release {_quoted(manifest_id)}")
    artefacts = release.get("artefacts")
    if not isinstance(artefacts, dict):
        problems.append(f"{name} names no artefacts by hash")
        return problems
    for artefact in ARTEFACTS:
        audited, entry = artefacts.get(artefact), parsed.files.get(artefact)
        if entry is None:
            problems.append(f"the manifest lists no {artefact}, which {name} must certify")
        elif not isinstance(audited, str):
            problems.append(f"{name} names no SHA-256 for {artefact}: it did not audit it")
        elif audited != entry.sha256:
            problems.append(f"{name} audited another {artefact} (SHA-256 {shown(audited[:16])}..., the manifest lists {entry.sha256[:16]}...)")
    for extra in sorted(set(artefacts) - set(ARTEFACTS), key=str)[:5]:
        problems.append(f"{name} names {_quoted(extra)}, which is not an artefact of a release")
    return problems


def _quoted(value: object) -> str:
    return repr(shown(value, 40)) if isinstance(value, str) else "(none)"


def signature_problem(manifest_bytes: bytes, signature_bytes: bytes, key: Ed25519PublicKey) -> str | None:
    """Why manifest.sig does not vouch for these manifest bytes under `key`, or None when it does."""
    expected_id = key_id(key)
    if len(signature_bytes) > MAX_SIGNATURE_BYTES:
        return f"{SIGNATURE_FILE} is {len(signature_bytes)} bytes: not a fedkr signature"
    try:
        document = parse_json(signature_bytes, where=SIGNATURE_FILE, limits=Limits(max_bytes=MAX_SIGNATURE_BYTES))
    except JSONInputError:
        return f"{SIGNATURE_FILE} is not valid JSON"
    if not isinstance(document, dict) or document.get("algorithm") != SIGNATURE_ALGORITHM:
        return f"{SIGNATURE_FILE} is not an {SIGNATURE_ALGORITHM} signature"
    signed_by = document.get("key_id")
    signed_by = shown(signed_by, 40) if isinstance(signed_by, str) else "unknown"
    try:
        signature = base64.b64decode(str(document.get("signature", "")), validate=True)
    except (binascii.Error, ValueError):
        return f"{SIGNATURE_FILE}: the signature is not base64"
    try:
        key.verify(signature, signed_message(manifest_bytes))
    except InvalidSignature:
        why = ": manifest.json changed after signing" if signed_by == expected_id else ""
        return f"manifest signature does not verify with key {expected_id} (signed by key {signed_by}{why})"
    return None


@dataclass
class VerifyResult:
    """`ok` only when nothing is wrong; `checked` says what was confirmed, `problems` what was not."""

    ok: bool
    problems: list[str]
    checked: list[str]


def sha256_of(path: Path, *, follow_symlinks: bool = False) -> str:
    """SHA-256 of a regular file; by default refusing to follow a symbolic link at the last component."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | (0 if follow_symlinks else getattr(os, "O_NOFOLLOW", 0)))
    with os.fdopen(fd, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_small(path: Path, limit: int) -> bytes | None:
    """The bytes of a regular file no larger than `limit`, or None when it is missing or not one."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    with path.open("rb") as fh:
        return fh.read(limit + 1)


def _check_file(release_dir: Path, entry: ManifestEntry) -> str | None:
    path = release_dir / entry.name
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return f"{shown(entry.name)}: missing"
    if not stat.S_ISREG(info.st_mode):
        return f"{shown(entry.name)}: not a regular file (a release holds plain files only)"
    if info.st_size != entry.size:
        return f"{shown(entry.name)}: {info.st_size} bytes, the manifest says {entry.size} (file changed after signing)"
    if sha256_of(path) != entry.sha256:
        return f"{shown(entry.name)}: SHA-256 differs from the manifest (file changed after signing)"
    return None


def verify_release(release_dir: Path, key: Ed25519PublicKey) -> VerifyResult:
    """Check a release folder: signature by `key`, every listed file, no other file, audit passed."""
    release_dir = Path(release_dir)
    problems: list[str] = []
    checked: list[str] = []
    try:
        _verify_into(release_dir, key, problems, checked)
    except OSError as exc:  # unreadable folder or file: say so rather than crash the caller
        problems.append(f"{release_dir}: cannot be read ({exc.strerror or exc.__class__.__name__})")
    return VerifyResult(ok=not problems, problems=problems, checked=checked)


def _verify_into(release_dir: Path, key: Ed25519PublicKey, problems: list[str], checked: list[str]) -> None:
    if not release_dir.is_dir():
        problems.append(f"{release_dir} is not a folder")
        return
    manifest_bytes = _read_small(release_dir / MANIFEST_FILE, MAX_MANIFEST_BYTES)
    if manifest_bytes is None:
        problems.append(f"no {MANIFEST_FILE}: not a fedkr release folder (a refused run has refusal.json instead)")
        return
    signature_bytes = _read_small(release_dir / SIGNATURE_FILE, MAX_SIGNATURE_BYTES)
    if signature_bytes is None:
        problems.append(f"not signed: no {SIGNATURE_FILE}")
    else:
        problem = signature_problem(manifest_bytes, signature_bytes, key)
        if problem is None:
            checked.append(f"signature: valid, {SIGNATURE_ALGORITHM}, key {key_id(key)}")
        else:
            problems.append(problem)
    parsed = parse_manifest(manifest_bytes)
    problems.extend(parsed.problems)
    for entry in parsed.files.values():
        problem = _check_file(release_dir, entry)
        if problem is None:
            checked.append(f"{shown(entry.name)}: {entry.size} bytes, SHA-256 matches")
        else:
            problems.append(problem)
    listed = parsed.document.get("files") if isinstance(parsed.document.get("files"), dict) else {}
    # without a readable file list every file would look unlisted: that problem is already reported
    unlisted = sorted(set(os.listdir(release_dir)) - set(listed) - {MANIFEST_FILE, SIGNATURE_FILE}) if listed else []
    for name in unlisted:
        problems.append(f"{shown(name)}: not listed in the manifest (added after signing)")
    if listed and not unlisted:
        checked.append("no files beyond those the manifest lists")
    report = parsed.files.get(parsed.audit_report or "") if parsed.audit_passed else None
    if report is not None:
        _check_audit(release_dir, report, parsed, problems, checked)


def _check_audit(release_dir: Path, report: ManifestEntry, parsed: ParsedManifest, problems: list[str], checked: list[str]) -> None:
    """Read the audit report once and check those very bytes: their hash, then what they certify."""
    data = _read_small(release_dir / report.name, MAX_AUDIT_BYTES)
    if data is None or len(data) != report.size or hashlib.sha256(data).hexdigest() != report.sha256:
        return  # missing or changed: _check_file has said so
    found = audit_problems(data, parsed)
    if found:
        problems.extend(found)
        return
    checked.append(f"audit: {shown(report.name)} says passed, for release {shown(str(parsed.document.get('release')))}, "
                   f"naming {', '.join(ARTEFACTS)} by the manifest's SHA-256s")
