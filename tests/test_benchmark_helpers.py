"""Helpers the benchmark scripts share: a site of a given size (`fit_time.sized_site`) and a screen's
result rows (`jsonl.emit`)."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from fedkr.shared.config import RunConfig
from fedkr.shared.data import load_dataset

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str):  # type: ignore[no-untyped-def]
    """A benchmark script imported as a module (its siblings importable, as when it runs)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_a_sized_site_has_the_training_split_s_class_mix_and_a_holdout_of_other_images():
    config = RunConfig(data="digits", run_id="sized")
    site = _script("fit_time").sized_site(config, 400)
    train = load_dataset("digits", seed=config.seed, image_size=config.image_size).train
    assert len(site.members) == 400 and len(site.holdout) == 100  # holdout fraction 0.2 of the site
    expected = np.bincount(train.labels, minlength=10) / len(train) * 400
    assert np.abs(site.members.class_counts() - expected).max() <= 1, "stratified: every class within one image"
    members = {image.tobytes() for image in site.members.images}
    assert not any(image.tobytes() in members for image in site.holdout.images)
    with pytest.raises(ValueError, match="--members must be between"):
        _script("fit_time").sized_site(config, 10)


def test_a_screen_row_is_one_line_of_strict_json_printed_and_kept(capsys):
    sink = io.StringIO()
    line = _script("jsonl").emit({"accuracy": float("nan"), "seconds": np.float32(1.5), "scales": (0, 1)}, sink)
    assert json.loads(line) == {"accuracy": None, "seconds": 1.5, "scales": [0, 1]}
    assert sink.getvalue() == line + "\n" and capsys.readouterr().out == line + "\n"
    json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in the line"))
