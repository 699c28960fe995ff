"""A site operator's audit of any release, with the site's own data, outside a run.

The same attacks, policy and report as the audit inside a run, so a site can check a release it
received (or re-check one later) and hand its privacy officer the same audit.html.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from fedkr.client.auditor import AuditSettings, audit_model
from fedkr.client.site import load_teacher as saved_teacher, run_models_dir
from fedkr.client.site_data import SiteData
from fedkr.shared.audit_document import build_audit_document, write_audit
from fedkr.shared.release_inspect import ARTEFACTS, inspect_release
from fedkr.shared.audit_policy import AuditDecision, AuditPolicy, decide_release
from fedkr.shared.classifier import CONFIG_SCHEMA, ClassifierConfig, CompactCNN
from fedkr.shared.generator_kinds import SiteGenerator, load_generator as load_site_generator
from fedkr.shared.json_input import JSONInputError, Limits, read_json_file
from fedkr.shared.reports import check_run_id

log = logging.getLogger(__name__)


class ReleaseError(ValueError):
    """The release folder cannot be audited; the message says why."""


@dataclass(frozen=True)
class LoadedRelease:
    release_id: str
    student: CompactCNN
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    artefacts: dict[str, str]


def load_release(release_dir: Path) -> LoadedRelease:
    """Check every hash against the manifest first: auditing a tampered file would certify the wrong thing.

    manifest.json and student_config.json are read through the bounded loader against their schemas
    (`MANIFEST_SCHEMA`, `classifier.CONFIG_SCHEMA`), so a hostile value is a `ReleaseError`, never a crash.
    """
    try:
        checked = inspect_release(release_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise ReleaseError(str(exc)) from None
    bad = {name: status for name, status in checked.file_checks.items() if name in ARTEFACTS and status != "OK"}
    if bad:
        raise ReleaseError("release files do not match the manifest: " + ", ".join(f"{n} {s}" for n, s in bad.items()))
    manifest = checked.manifest
    try:
        config = read_json_file(release_dir / "student_config.json", schema=CONFIG_SCHEMA,
                                limits=Limits(max_bytes=64 * 1024, max_depth=4))
    except JSONInputError as exc:
        raise ReleaseError(f"{release_dir}: the release's files do not load: {exc}") from None
    try:
        release_id = check_run_id(str(manifest.get("release")))
        student = CompactCNN(ClassifierConfig.from_dict(config))
        student.load_state_dict(load_file(release_dir / "student.safetensors"))
        student.eval()
        with np.load(release_dir / "distilled.npz", allow_pickle=False) as data:
            images, labels = data["images"], data["hard_labels"]
            names = tuple(str(n) for n in data["class_names"])
        artefacts = {name: str(manifest["files"][name]["sha256"]) for name in ARTEFACTS}
    except (KeyError, TypeError, ValueError, RuntimeError, OSError) as exc:
        raise ReleaseError(f"{release_dir}: the release's files do not load ({exc.__class__.__name__}: {exc})") from None
    if images.ndim != 4 or images.dtype != np.uint8 or labels.shape != (images.shape[0],):
        raise ReleaseError(f"{release_dir}: distilled.npz does not hold uint8 images (N, H, W, C) with one label each")
    return LoadedRelease(release_id=release_id, student=student, images=images, labels=labels, class_names=names,
                         artefacts=artefacts)


def load_teacher(state_dir: Path | None, release_id: str) -> CompactCNN | None:
    """The site's teacher of the run that made the release, when the site still holds it.
    Raises `ReleaseError` for a reused fit's pointer that does not load."""
    if state_dir is None:
        return None
    directory = _models_dir(state_dir, release_id)
    if not (directory / "teacher.safetensors").is_file():
        return None
    return saved_teacher(directory)


def _models_dir(state_dir: Path, release_id: str) -> Path:
    """The folder of the site's models for the run that made the release (following a reused fit's
    pointer, as the site does). Raises `ReleaseError` for a pointer that does not load."""
    try:
        return run_models_dir(Path(state_dir), release_id)[0]
    except JSONInputError as exc:
        raise ReleaseError(f"{Path(state_dir) / 'runs' / release_id}: the run's pointer to its fit does not load ({exc})") from None


def load_dp_record(state_dir: Path | None, release_id: str) -> dict | None:
    """The site's DP accounting of the run that made the release (`dp.json`, written at fit), when the site
    still holds it; None without DP or without the run's folder. Raises `ReleaseError` for a file that
    does not load."""
    if state_dir is None:
        return None
    path = _models_dir(state_dir, release_id) / "dp.json"
    if not path.is_file():
        return None
    try:
        return read_json_file(path, schema={"type": "object"}, limits=Limits(max_bytes=64 * 1024, max_depth=6))
    except JSONInputError as exc:
        raise ReleaseError(f"{path}: the site's DP record does not load ({exc})") from None


def load_generator(state_dir: Path | None, release_id: str) -> SiteGenerator | None:
    """The site's generator of the run that made the release, when the site still holds it.

    Without it the white-box generator attack cannot run, and a policy that requires it refuses
    the release (`fedkr.shared.audit_policy`). A reused fit's sampling settings (guidance, DDIM eta, teacher guidance)
    are not applied: the attack scores the denoiser's loss, which does not depend on them.
    """
    if state_dir is None:
        return None
    directory = _models_dir(state_dir, release_id) / "generator"
    if not (directory / "generator.json").is_file():
        return None
    try:
        return load_site_generator(directory)
    except (JSONInputError, OSError, ValueError, RuntimeError) as exc:
        raise ReleaseError(f"{directory}: the site's generator does not load ({exc})") from None


def audit_release_dir(
    release_dir: Path, site_id: str, data: SiteData, out_dir: Path | None, settings: AuditSettings, policy: AuditPolicy,
    state_dir: Path | None = None, device: torch.device | str | None = None,
) -> tuple[AuditDecision, Path]:
    """`out_dir` None means ./audit-<release id>-<site>; the release folder itself is refused, its report is signed off.
    The reference models train, and every model runs, on `device` (None: the CPU)."""
    release = load_release(Path(release_dir))
    out_dir = Path(out_dir) if out_dir is not None else Path(f"audit-{release.release_id}-{site_id}")
    if out_dir.resolve() == Path(release_dir).resolve():
        raise ReleaseError("--out must not be the release folder: its audit.json and audit.html are listed in the manifest")
    if release.class_names != data.members.class_names:
        raise ReleaseError(f"the release holds classes {list(release.class_names)}, the site's data "
                           f"{list(data.members.class_names)}: audit with the data the release was built from")
    if release.images.shape[1:] != data.members.image_shape:
        raise ReleaseError(f"the release's images are {release.images.shape[1:]}, the site's {data.members.image_shape}")
    teacher = load_teacher(state_dir, release.release_id)
    generator = load_generator(state_dir, release.release_id)
    if generator is None:
        log.warning("no generator of run %s in %s: the white-box generator attack cannot run, and a policy that "
                    "requires it blocks the release", release.release_id, state_dir or "(no --state-dir)")
    report = audit_model(site_id, release.student, data.members, data.holdout, settings,
                         released_images=release.images, feature_model=teacher, comparator=teacher, device=device,
                         generator=generator, dp=load_dp_record(state_dir, release.release_id))
    decision = decide_release({site_id: report}, policy)
    document = build_audit_document(release.release_id, release.artefacts, list(release.class_names), decision)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_audit(out_dir, document, release.images, release.labels)
    return decision, out_dir
