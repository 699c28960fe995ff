"""Small builders shared by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MEDMNIST = REPO.parent / "shared" / "data" / "medmnist"


def near_copies(images: np.ndarray, count: int, seed: int) -> np.ndarray:
    """uint8 (count, H, W, C): `count` images drawn from `images` with replacement, each pixel moved by -3 to 3:
    what a generator that memorizes its members would send."""
    rng = np.random.default_rng(seed)
    copies = images[rng.integers(0, len(images), count)].astype(np.int16)
    return np.clip(copies + rng.integers(-3, 4, copies.shape), 0, 255).astype(np.uint8)


def synthetic_images(n: int, shape=(8, 8, 1), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def tiny_run_config(out: Path, **overrides):
    from fedkr.shared.config import RunConfig

    # A digits site holds about 95 holdout images: a 95% interval of about +-0.065 around the AUC, so
    # the default bound of 0.60 cannot be shown at this size (docs/audit.md, "Small sites"). These runs
    # test the pipeline's mechanics at a bound their size can show; the policy's own behaviour at its
    # defaults is tested in test_release_gate.py and test_audit_controls.py. Their generators (250 steps on
    # about 385 images) do memorise measurably: the white-box attack gives AUC 0.64-0.66, upper bounds 0.70-0.73
    # (docs/audit.md). The generator rule is opened to 0.8 here so that these runs reach their release; it is
    # tested at its default in test_release_gate.py and test_generator_attack.py.
    settings = dict(
        sites=2, data="digits", partition="iid", rounds=2, ipc=10, samples_per_class=20, generator_steps=250,
        generator_hflip=False, teacher_epochs=20, student_epochs=30, out=str(out), run_id="test-run",
        audit_max_auc=0.7, audit_max_distance_auc=0.7, audit_max_generator_auc=0.8,
        # the pipeline's mechanics, as before the demo's private generators: no DP, the default holdout
        holdout_fraction=0.2, dp_epsilon=0.0, dp_models="teacher+generator",
        # the student on the distilled set itself (at or below ipc; the defaults train it on the whole pool)
        student_ipc=1,
    )
    settings.update(overrides)
    return RunConfig.from_profile("demo", **settings)


class RecordingSite:
    """A site behind the in-process link that keeps every answer it gave, as the bytes the link received."""

    def __init__(self, site) -> None:  # type: ignore[no-untyped-def]
        self.site, self.site_id = site, site.site_id
        self.sent: list[bytes] = []

    def _answer(self, method: str, message: object) -> bytes:
        out = getattr(self.site, method)(message)
        self.sent.append(out)
        return out

    def fit(self, plan: bytes) -> bytes:
        return self._answer("fit", plan)

    def synthesize(self, request: bytes) -> bytes:
        return self._answer("synthesize", request)

    def relabel(self, request: bytes) -> bytes:
        return self._answer("relabel", request)

    def audit(self, candidate: bytes) -> bytes:
        return self._answer("audit", candidate)


def ledger_matches(ledger: Path, run_id: str, sent: list[bytes]) -> list[dict]:
    """The ledger's lines for `run_id`, checked to hash exactly the bytes in `sent`, in order."""
    import hashlib
    import json

    entries = [e for e in map(json.loads, ledger.read_text().splitlines()) if e["run"] == run_id][:len(sent)]
    assert [(e["bytes"], e["sha256"]) for e in entries] == [(len(b), hashlib.sha256(b).hexdigest()) for b in sent]
    return entries


def run_fedkr(*args: str):  # type: ignore[no-untyped-def]
    """The `fedkr` command run in-process with typer's CliRunner; an exception a user would see as a
    traceback is raised here, so the test fails on it. Returns click's `Result` (exit_code, stdout, stderr)."""
    from fedkr.cli import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def one_line_error(result, expected: str, code: int = 2) -> None:  # type: ignore[no-untyped-def]
    """`result` (a CliRunner `Result` or a `CompletedProcess`) ended with `code` and exactly one stderr line,
    `error: ...`, holding `expected`; no traceback anywhere."""
    stdout, stderr = result.stdout, result.stderr
    code_seen = getattr(result, "exit_code", getattr(result, "returncode", None))
    assert "Traceback" not in stdout + stderr, stderr[-3000:]
    assert code_seen == code, stdout[-2000:] + stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], stderr


#: The patient name every test DICOM file carries: it must appear in nothing fedkr writes.
PATIENT_NAME = "Testpatient^Jane"


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 12,
                sop_class: str | None = None, **attributes) -> str:
    """A real DICOM file written with pydicom (explicit VR little endian) that carries `PATIENT_NAME`; its SOP Instance UID."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class or SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, uid
    ds.PatientName, ds.PatientID, ds.Modality = PATIENT_NAME, "PID-424242", "OT"
    if pixels is not None:
        ds.set_pixel_data(pixels, photometric, bits_stored)
    for key, value in attributes.items():
        setattr(ds, key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)  # set_pixel_data gives the instance a new UID
