"""Small builders shared by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MEDMNIST = REPO.parent / "shared" / "data" / "medmnist"


def synthetic_images(n: int, shape=(8, 8, 1), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def tiny_run_config(out: Path, **overrides):
    from fedkr.server.config import RunConfig

    settings = dict(
        data="digits", partition="iid", rounds=2, ipc=10, samples_per_class=20, generator_steps=250,
        generator_hflip=False, teacher_epochs=20, student_epochs=30, out=str(out), run_id="test-run",
    )
    settings.update(overrides)
    return RunConfig(**settings)
