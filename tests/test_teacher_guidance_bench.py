"""benchmarks/teacher_guidance.py: a site's fit guided by its own teacher, scored by a judge, one line per scale."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from fedkr.bench import load_bench_sites
from fedkr.client.site import save_teacher, train_teacher
from fedkr.shared.config import PROFILES
from fedkr.shared.generator import ClassConditionalDiffusion
from fedkr.shared.reports import FitPlan

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "teacher_guidance.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--data", "digits", "--profile", "quick", "--site", "0", *args],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def fit(tmp_path_factory):
    """Bench site 0 of digits at the quick profile: a teacher of 2 epochs and a generator of 10 steps, as a site saves them."""
    config = replace(PROFILES["quick"].run_config(run_id="guide"), data="digits")
    site = load_bench_sites(config)[0][0]
    plan = FitPlan(run_id="guide", teacher=replace(config.teacher_config(), epochs=2),
                   generator=replace(config.generator_config(), train_steps=10, sample_steps=4))
    folder = tmp_path_factory.mktemp("fit")
    save_teacher(folder, train_teacher(plan, site.members))
    generator = ClassConditionalDiffusion(plan.generator, site.members.num_classes, site.members.image_shape)
    generator.train(site.members.images, site.members.labels)
    generator.save(folder / "generator")
    return folder


def test_one_line_per_scale_with_the_judge_figures_and_the_guide_agreement(fit, tmp_path):
    done = _run("--fit", str(fit), "--scales", "0,30", "--per-class", "3", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [row["classifier_scale"] for row in rows] == [0.0, 30.0]
    assert (tmp_path / "out" / "teacher_guidance.jsonl").read_text().count("\n") == 2
    for row in rows:
        assert 0 <= row["judge_agreement"] <= 1 and 0 <= row["guide_agreement"] <= 1
        assert 0 <= row["synthetic_student_accuracy"] <= 1 and row["dp"] is None
    assert rows[1]["guide_agreement"] > rows[0]["guide_agreement"], "guidance moves the samples towards its teacher's class"


@pytest.mark.parametrize("args, message", [(["--scales", "-1"], "--scales must be"),
                                           (["--fit", "/nonexistent"], "not a site's run folder"),
                                           (["--epsilon", "8"], "exists already"),
                                           (["--fit", "/nonexistent", "--epsilon", "0"], "--epsilon must be")])
def test_bad_input_is_one_line(fit, args, message):
    done = _run(*(["--fit", str(fit)] if "--fit" not in args else []), *args)
    assert done.returncode != 0
    assert message in done.stderr.strip().splitlines()[-1] and "Traceback" not in done.stderr


@pytest.mark.slow
def test_epsilon_fits_the_folder_as_a_site_does_with_its_dp_record(tmp_path):
    folder = tmp_path / "fit"
    done = _run("--fit", str(folder), "--epsilon", "8", "--scales", "1", "--per-class", "2", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    record = json.loads((folder / "dp.json").read_text())
    assert record["target_epsilon"] == 8 and 0 < record["epsilon"] <= 8
    assert set(record["parts"]) == {"teacher", "generator"}
    assert json.loads(done.stdout)["dp"] == record
    assert not (tmp_path / "fit.partial").exists()
