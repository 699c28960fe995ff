"""Reading a release folder: what it holds, and whether every file matches its manifest's SHA-256.

Shared by the coordinator (`fedkr inspect`), the site's standalone audit and researchers; writing a
release is the coordinator's (`fedkr.server.release`), verifying its signature is `release_verify`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file as load_numpy_file

from .release_verify import ARTEFACTS, sha256_of

#: Every file a release folder holds besides manifest.json (and its signature, when signed).
RELEASE_FILES = ARTEFACTS + ("metrics.json", "contact_sheet.png", "audit.json", "audit.html")


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

    @property
    def all_ok(self) -> bool:
        return all(v == "OK" for v in self.file_checks.values())


def inspect_release(release_dir: Path) -> InspectResult:
    """Read a bundle and check every file listed in its manifest against its SHA-256."""
    release_dir = Path(release_dir)
    manifest_path = release_dir / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{release_dir}: no manifest.json (is this a fedkr release folder?)")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        if not isinstance(files, dict) or not all(isinstance(e, dict) for e in files.values()):
            raise TypeError
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise ValueError(f"{manifest_path}: not a valid fedkr manifest") from None
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
    try:
        if checks.get("metrics.json") == "OK":
            metrics = json.loads((release_dir / "metrics.json").read_text())
            if not isinstance(metrics, dict):
                raise ValueError("metrics.json is not an object")
        if checks.get("distilled.npz") == "OK":
            with np.load(release_dir / "distilled.npz", allow_pickle=False) as data:
                names = [str(n) for n in data["class_names"]]
                counts = np.bincount(data["hard_labels"], minlength=len(names))
                per_class = {n: int(c) for n, c in zip(names, counts)}
        if checks.get("student.safetensors") == "OK":
            load_numpy_file(release_dir / "student.safetensors")  # proves the weights parse
    except Exception as exc:  # a file that matches its hash but does not parse: the release was built wrong
        raise ValueError(f"{release_dir}: a listed file does not parse ({exc.__class__.__name__}: {exc})") from None
    audit = metrics.get("audit", {}) if isinstance(metrics.get("audit"), dict) else {}
    return InspectResult(
        release_dir=release_dir,
        classes=list(manifest.get("classes", [])),
        ipc=manifest.get("ipc") if isinstance(manifest.get("ipc"), int) else None,
        per_class=per_class,
        student_accuracy=metrics.get("student_test_accuracy"),
        audit_passed=audit.get("passed"),
        audit_sites=audit.get("sites", {}),
        file_checks=checks,
    )
