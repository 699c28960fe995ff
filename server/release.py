"""The release gate, the release bundle, its manifest, and checking a bundle against its manifest."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fedkr.shared import json_output
from fedkr.shared.audit_policy import AuditDecision
from fedkr.shared.classifier import CompactCNN
from fedkr.shared.release_inspect import ARTEFACTS, RELEASE_FILES
from fedkr.shared.release_verify import sha256_of
from safetensors.torch import save_file

import fedkr

from fedkr.shared.audit_document import build_audit_document, write_audit
from .distill import DistilledSet
from .release_signing import sign_release

#: The files that carry the released knowledge; the audit report names them by hash.


def sha256_file(path: Path) -> str:
    return sha256_of(path, follow_symlinks=True)


def write_contact_sheet(distilled: DistilledSet, path: Path, per_row: int = 10) -> None:
    """One row per class: up to `per_row` distilled images, scaled up for viewing.

    Class names are drawn with an installed font that has their glyphs (CJK included); where none
    has, rows are labelled "class i" and the title says so (`shared/fonts.py`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fedkr.shared.fonts import drawable

    text = drawable(tuple(distilled.class_names))
    names = text.labels
    h, w, c = distilled.images.shape[1:]
    scale = max(1, 32 // max(h, w))
    fig, axes = plt.subplots(len(names), 1, figsize=(per_row * 0.9 + 2.2, len(names) * 0.95 + 0.4), squeeze=False)
    for cls, ax in enumerate(axes[:, 0]):
        imgs = distilled.images[distilled.hard_labels == cls][:per_row]
        row = np.full((h, per_row * (w + 1), c), 255, dtype=np.uint8)
        for i, img in enumerate(imgs):
            row[:, i * (w + 1) : i * (w + 1) + w] = img
        row = row.repeat(scale, 0).repeat(scale, 1)
        ax.imshow(row[..., 0] if c == 1 else row, cmap="gray" if c == 1 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(f"{names[cls]} ({len(imgs)} of {int((distilled.hard_labels == cls).sum())})", rotation=0, ha="right",
                      va="center", fontsize=8, fontfamily=list(text.family))
    note = " (no installed font draws the class names: see class_names in distilled.npz)" if text.substituted else ""
    fig.suptitle("fedkr distilled set: one row per class" + note, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _write_artefacts(directory: Path, distilled: DistilledSet, student: CompactCNN) -> dict[str, str]:
    np.savez_compressed(
        directory / "distilled.npz",
        images=distilled.images,
        soft_labels=distilled.soft_labels.astype(np.float32),
        hard_labels=distilled.hard_labels.astype(np.int64),
        class_names=np.array(distilled.class_names, dtype=str),
    )
    save_file({k: v.detach().contiguous() for k, v in student.state_dict().items()}, directory / "student.safetensors")
    (directory / "student.safetensors").chmod(0o644)  # safetensors writes 0600; a release is for sharing
    (directory / "student_config.json").write_text(
        json.dumps({"architecture": "CompactCNN", **student.config.to_dict(), "input": "uint8 HWC scaled to [-1, 1]"}, indent=2)
    )
    return {name: sha256_file(directory / name) for name in ARTEFACTS}


def write_release(
    release_dir: Path, distilled: DistilledSet, student: CompactCNN, metrics: dict, decision: AuditDecision,
    signer: Ed25519PrivateKey | None = None,
) -> Path:
    """Write the bundle into a temporary folder and move it into place only when complete.

    With a `signer` (deployment), the manifest is signed too (`manifest.sig`): `fedkr verify`
    and `fedkr fetch` check it against the coordinator's public key.
    """
    release_dir = Path(release_dir)
    if release_dir.exists():
        raise FileExistsError(f"{release_dir} already exists; a release is never overwritten")
    staging = release_dir.with_name(release_dir.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)  # left by a write that failed part-way: nothing in it was ever released
    staging.mkdir(parents=True)
    try:
        _fill_release(staging, distilled, student, metrics, decision)
        if signer is not None:
            sign_release(staging, signer)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    staging.replace(release_dir)
    return release_dir


def _fill_release(staging: Path, distilled: DistilledSet, student: CompactCNN, metrics: dict, decision: AuditDecision) -> None:
    release_id = str(metrics.get("run_id"))
    hashes = _write_artefacts(staging, distilled, student)
    (staging / "metrics.json").write_text(json_output.dumps(metrics, default=str))
    write_contact_sheet(distilled, staging / "contact_sheet.png")
    document = build_audit_document(release_id, hashes, list(distilled.class_names), decision,
                                    left_out=metrics.get("sites_left_out"))
    write_audit(staging, document, distilled.images, distilled.hard_labels)
    manifest = {
        "release": release_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fedkr_version": fedkr.__version__,
        "classes": list(distilled.class_names),
        "ipc": int(distilled.per_class().max()) if len(distilled) else 0,
        "audit": {"report": "audit.json", "passed": decision.passed},
        "contributors": list(metrics.get("contributors") or sorted(decision.reports)),
        # sites that left the run (at fit, or dropped during synthesis), with the stage and the reason
        "sites_left_out": dict(metrics.get("sites_left_out") or {}),
        "files": {
            name: {"sha256": sha256_file(staging / name), "bytes": (staging / name).stat().st_size}
            for name in RELEASE_FILES
        },
    }
    _atomic_write_text(staging / "manifest.json", json.dumps(manifest, indent=2))


def write_refusal(
    run_dir: Path, decision: AuditDecision, metrics: dict, distilled: DistilledSet, student: CompactCNN
) -> Path:
    """refusal.json plus the audit report, naming the refused candidate by the hashes its files would have had.

    The candidate's files are written only to a temporary folder to hash them, then removed: a
    refused release leaves nothing behind to leak. For the same reason its audit page shows no
    sample of the candidate's images.
    """
    run_dir = Path(run_dir)
    with tempfile.TemporaryDirectory(dir=run_dir) as tmp:
        hashes = _write_artefacts(Path(tmp), distilled, student)
    document = build_audit_document(str(metrics.get("run_id")), hashes, list(distilled.class_names), decision,
                                    left_out=metrics.get("sites_left_out"))
    write_audit(run_dir, document, None, None)
    path = run_dir / "refusal.json"
    _atomic_write_text(path, json_output.dumps({"released": False, "reasons": decision.reasons, "audit_report": "audit.json",
                                                "metrics": metrics}, default=str))
    return path
