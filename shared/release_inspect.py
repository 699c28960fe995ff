"""Reading a release folder: what it holds, and whether every file matches its manifest's SHA-256.

Shared by the coordinator (`fedkr inspect`), the site's standalone audit and researchers; writing a
release is the coordinator's (`fedkr.server.release`), verifying its signature is `release_verify`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file as load_numpy_file

from .json_input import JSONInputError, Limits, read_json_file
from .release_verify import ARTEFACTS, MAX_MANIFEST_BYTES, sha256_of

#: Every file a release folder holds besides manifest.json (and its signature, when signed).
RELEASE_FILES = ARTEFACTS + ("metrics.json", "contact_sheet.png", "audit.json", "audit.html")

_TEXT = {"type": "string", "maxLength": 1024}
#: JSON Schema of manifest.json as `fedkr inspect` and the standalone audit read it; the names and
#: hashes themselves are checked file by file (`inspect_release`), the signature by `release_verify`.
MANIFEST_SCHEMA = {
    "type": "object",
    "required": ["files"],
    "properties": {
        "release": _TEXT, "created": _TEXT, "fedkr_version": _TEXT,
        "classes": {"type": "array", "maxItems": 10_000, "items": {"type": "string", "maxLength": 200}},
        "ipc": {"type": "integer", "minimum": 0},
        "audit": {"type": "object", "properties": {"report": _TEXT, "passed": {"type": "boolean"}}},
        "contributors": {"type": "array", "maxItems": 10_000, "items": _TEXT},
        "files": {"type": "object", "maxProperties": 1000, "additionalProperties": {
            "type": "object", "properties": {"sha256": _TEXT, "bytes": {"type": "integer", "minimum": 0}}}},
    },
}
_NUMBER = {"type": "number"}
_ATTACK = {
    "type": "object",
    "properties": {"auc": _NUMBER, "auc_ci": {"type": "array", "minItems": 2, "maxItems": 2, "items": _NUMBER},
                   "tpr_at_1pct_fpr": _NUMBER, "control_auc": {"type": ["number", "null"]},
                   "epsilon_lower_bound": {"type": ["number", "null"]},
                   "num_members": {"type": "integer", "minimum": 0}, "num_nonmembers": {"type": "integer", "minimum": 0}},
    "if": {"required": ["auc"]},
    "then": {"required": ["auc", "tpr_at_1pct_fpr", "num_members", "num_nonmembers"]},
}
#: JSON Schema of the parts of metrics.json that `fedkr inspect` shows (`audit_summary`'s form).
METRICS_SCHEMA = {
    "type": "object",
    "properties": {
        "student_test_accuracy": {"type": ["number", "null"]},
        "audit": {"type": "object", "properties": {
            "passed": {"type": ["boolean", "null"]},
            "failures": {"type": "array", "items": {"type": "string"}},
            "sites": {"type": "object", "additionalProperties": {
                "type": "object",
                "properties": {"error": {"type": ["string", "null"]}, "dp": {"type": "object"}},
                "additionalProperties": _ATTACK,
            }},
        }},
    },
}
MANIFEST_LIMITS = Limits(max_bytes=MAX_MANIFEST_BYTES, max_depth=8)
METRICS_LIMITS = Limits(max_bytes=64 * 2**20)


@dataclass
class InspectResult:
    release_dir: Path
    classes: list[str]
    ipc: int | None
    per_class: dict[str, int]
    student_accuracy: float | None
    audit_passed: bool | None
    audit_sites: dict[str, dict]
    file_checks: dict[str, str]  # name -> "OK" or the problem
    manifest: dict = field(default_factory=dict)  # as read, checked against MANIFEST_SCHEMA

    @property
    def all_ok(self) -> bool:
        return all(v == "OK" for v in self.file_checks.values())


def inspect_release(release_dir: Path) -> InspectResult:
    """Read a bundle and check every file listed in its manifest against its SHA-256.

    manifest.json and metrics.json are read through the bounded loader and checked against
    `MANIFEST_SCHEMA` and `METRICS_SCHEMA`, so every field of the result has the type it names.

    Raises:
        FileNotFoundError: the folder holds no manifest.json.
        ValueError: the manifest is not a fedkr manifest, or a file that matches its hash does not
            parse (metrics.json not of its schema, distilled.npz or the weights unreadable); one line.
    """
    release_dir = Path(release_dir)
    manifest_path = release_dir / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{release_dir}: no manifest.json (is this a fedkr release folder?)")
    try:
        manifest = read_json_file(manifest_path, schema=MANIFEST_SCHEMA, limits=MANIFEST_LIMITS)
    except JSONInputError as exc:
        raise ValueError(f"{manifest_path}: not a valid fedkr manifest: {exc.detail}") from None
    files: dict[str, dict] = manifest["files"]
    checks: dict[str, str] = {}
    for name, entry in files.items():
        path = release_dir / name
        if Path(name).name != name or name in (".", ".."):
            checks[name] = "BAD NAME (must be a file in the release folder)"
        elif not path.is_file():
            checks[name] = "MISSING"
        elif sha256_of(path, follow_symlinks=True) != entry.get("sha256"):
            checks[name] = "HASH MISMATCH"
        else:
            checks[name] = "OK"
    for name in RELEASE_FILES:
        checks.setdefault(name, "NOT IN MANIFEST")
    metrics: dict = {}
    per_class: dict[str, int] = {}
    if checks.get("metrics.json") == "OK":
        try:
            metrics = read_json_file(release_dir / "metrics.json", schema=METRICS_SCHEMA, limits=METRICS_LIMITS)
        except JSONInputError as exc:
            raise ValueError(f"{release_dir}: a listed file does not parse: {exc}") from None
    try:
        if checks.get("distilled.npz") == "OK":
            with np.load(release_dir / "distilled.npz", allow_pickle=False) as data:
                names = [str(n) for n in data["class_names"]]
                counts = np.bincount(data["hard_labels"], minlength=len(names))
                per_class = {n: int(c) for n, c in zip(names, counts)}
        if checks.get("student.safetensors") == "OK":
            load_numpy_file(release_dir / "student.safetensors")  # proves the weights parse
    except Exception as exc:  # a file that matches its hash but does not parse: the release was built wrong
        raise ValueError(f"{release_dir}: a listed file does not parse ({exc.__class__.__name__}: {exc})") from None
    audit = metrics.get("audit", {})
    return InspectResult(
        release_dir=release_dir,
        classes=list(manifest.get("classes", [])),
        ipc=manifest.get("ipc"),
        per_class=per_class,
        student_accuracy=metrics.get("student_test_accuracy"),
        audit_passed=audit.get("passed"),
        audit_sites=audit.get("sites", {}),
        file_checks=checks,
        manifest=manifest,
    )
