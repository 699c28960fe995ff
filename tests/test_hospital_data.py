"""Whole runs on data as hospitals hold it: a DICOM export with a CSV, a CSV of PNG files, MedMNIST+ sizes.

Each is a real `fedkr simulate` (Flower's simulation engine) at tiny budgets, except the 64 px run,
which goes through the in-process link; all are outside the fast loop.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import PATIENT_NAME, tiny_run_config, write_dicom

pytestmark = pytest.mark.slow

#: The smallest budgets a run goes through every stage with; the audit bounds at 1 and the utility rule off
#: (a student of two epochs teaches little by design) so that it releases: these tests are about the data.
TINY = ("--sites", "2", "--partition", "iid", "--rounds", "1", "--ipc", "5", "--samples-per-class", "10",
        "--oversample", "1", "--generator-steps", "20", "--generator-guidance", "1", "--teacher-epochs", "2",
        "--student-epochs", "2", "--reference-models", "2", "--audit-max-auc", "1", "--audit-max-tpr", "1",
        "--audit-max-distance-auc", "1", "--audit-max-generator-auc", "1", "--audit-min-utility", "0",
        "--audit-min-adjusted-balanced-accuracy", "0", "--holdout-fraction", "0.3")


def simulate(data: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "fedkr", "simulate", "--data", data, "--out", str(out), *TINY, *extra],
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def released(out: Path) -> tuple[dict, np.ndarray, dict]:
    (release,) = out.glob("*/release")
    with np.load(release / "distilled.npz") as data:
        images = data["images"]
    return json.loads((release / "metrics.json").read_text()), images, json.loads((release / "student_config.json").read_text())


def _pattern(label: int, i: int, size: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(i)
    y, x = np.mgrid[: size[0], : size[1]]
    stripes = (x // 4) % 2 if label else (y // 4) % 2
    return (stripes * 2500 + rng.integers(0, 800, size)).astype(np.uint16)


def test_simulate_on_a_dicom_export_with_a_csv_keyed_by_uid(tmp_path):
    export = tmp_path / "export"
    rows = ["SOPInstanceUID,label"]
    for i in range(120):
        label = i % 2
        attributes = dict(RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=300, WindowWidth=3000) if i % 3 else {}
        uid = write_dicom(export / f"patient{i:03d}" / "study" / f"IM{i:05d}", _pattern(label, i, (48, 40)),
                          photometric="MONOCHROME1" if i % 4 == 0 else "MONOCHROME2", **attributes)
        rows.append(f"{uid},{'effusion' if label else 'normal'}")
    write_dicom(export / "patient000" / "cine.dcm", np.stack([_pattern(0, 0, (48, 40))] * 3), NumberOfFrames=3)
    from pydicom.uid import BasicTextSRStorage

    write_dicom(export / "patient001" / "report.dcm", None, sop_class=BasicTextSRStorage)
    (export / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "runs"
    result = simulate(str(export / "labels.csv"), out, "--image-size", "16")
    metrics, images, student = released(out)
    assert metrics["working_size"] == {"images": [16, 16, 1], "generator_resolution": 16}
    assert images.shape[1:] == (16, 16, 1) and (student["height"], student["width"]) == (16, 16)
    assert "working size: 16x16 px" in result.stdout
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(export)
              and PATIENT_NAME.encode() in p.read_bytes()]
    assert not leaked and PATIENT_NAME not in result.stdout + result.stderr


def test_simulate_on_a_csv_manifest_of_png_files(tmp_path):
    lines = ["file,finding"]
    for i in range(120):
        label = i % 2
        Image.fromarray((_pattern(label, i, (20, 20)) // 16).astype(np.uint8)).save(tmp_path / f"{i:03d}.PNG")
        lines.append(f"{i:03d}.PNG,{'pneumonia' if label else 'normal'}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "runs"
    simulate(f"{tmp_path / 'labels.csv'}?path=file&label=finding", out, "--image-size", "16")
    metrics, images, _ = released(out)
    assert images.shape[1:] == (16, 16, 1)
    assert list(metrics["distilled_per_class"]) == ["normal", "pneumonia"]


def _medmnist_plus(path: Path, size: int, n_train: int, n_test: int) -> Path:
    rng = np.random.default_rng(size)
    labels = np.arange(n_train + n_test) % 3
    images = rng.integers(0, 120, (n_train + n_test, size, size, 3), dtype=np.uint8)
    images[labels == 1, : size // 2] += 100
    images[labels == 2, :, : size // 2] += 100
    np.savez(path, train_images=images[:n_train], train_labels=labels[:n_train, None],
             val_images=images[:0], val_labels=labels[:0, None],
             test_images=images[n_train:], test_labels=labels[n_train:, None])
    return path


def test_medmnist_plus_224_px_at_tiny_budgets_works_at_the_working_size(tmp_path):
    data = _medmnist_plus(tmp_path / "bloodmnist_224.npz", 224, 400, 60)
    out = tmp_path / "runs"
    simulate(str(data), out)
    metrics, images, student = released(out)
    assert metrics["working_size"]["images"] == [32, 32, 3] and metrics["config"]["image_size"] == 32
    assert images.shape[1:] == (32, 32, 3) and (student["height"], student["width"]) == (32, 32)
    assert list(metrics["distilled_per_class"])[:3] == ["basophil", "eosinophil", "erythroblast"]


def test_medmnist_plus_64_px_in_process(tmp_path):
    from fedkr.client.site import Site
    from fedkr.client.site_data import SiteDataSpec, load_site_data
    from fedkr.inprocess import InProcessLink
    from fedkr.server.coordinator import Coordinator
    from fedkr.shared.data import load_dataset

    data = str(_medmnist_plus(tmp_path / "pathmnist_64.npz", 64, 240, 60))
    config = tiny_run_config(tmp_path / "runs", data=data, rounds=1, ipc=5, samples_per_class=10, generator_steps=20,
                             teacher_epochs=2, student_epochs=2, audit_max_auc=1.0, audit_max_tpr=1.0,
                             audit_max_distance_auc=1.0, audit_max_generator_auc=1.0, audit_min_utility=0.0,
                             audit_min_adjusted_balanced_accuracy=0.0, image_size=16)
    sites = [Site(f"site-{i}", load_site_data(SiteDataSpec(data, i, 2, "iid", 0, 0.2, config.image_size)),
                  tmp_path / "sites" / f"site-{i}") for i in range(2)]
    test = load_dataset(data, image_size=config.image_size).test
    outcome = Coordinator(config, test).run(InProcessLink(sites))
    assert outcome.released
    assert outcome.metrics["working_size"] == {"images": [16, 16, 3], "generator_resolution": 16}
    with np.load(outcome.release_dir / "distilled.npz") as released_set:
        assert released_set["images"].shape[1:] == (16, 16, 3)
        assert tuple(released_set["class_names"])[0] == "adipose"
