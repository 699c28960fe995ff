"""What `fedkr audit` reads from a site's state folder: the run's teacher, generator and DP record."""

from __future__ import annotations

import json

import pytest

from fedkr.client.site import Site
from fedkr.client.site_data import SiteDataSpec, load_site_data
from fedkr.shared.classifier import ClassifierConfig, build_classifier
from fedkr.shared.dp import DPConfig, DPReport
from fedkr.shared.generator import ClassConditionalDiffusion, GeneratorConfig
from fedkr.standalone_audit import ReleaseError, load_dp_record, load_generator, load_teacher
from safetensors.torch import save_file


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A site's folder holding run "own" (its own models) and run "reused" (a pointer to another fit)."""
    from fedkr.client.site import dp_summary

    root = tmp_path_factory.mktemp("state")
    data = load_site_data(SiteDataSpec("digits"))
    h, w, c = data.members.image_shape
    site = Site("site-0", data, root / "site-0")
    fit_dir = root / "fit"
    own = site.state_dir / "runs" / "own"
    spent = DPReport(3.9, 1e-4, 1.2, 1.0, 0.1, 200, "rdp", 380)
    record = dp_summary(DPConfig(8.0), spent, spent)
    for directory in (fit_dir, own):
        directory.mkdir(parents=True)
        teacher = build_classifier(ClassifierConfig(c, h, w, data.members.num_classes, 8), seed=0)
        save_file(teacher.state_dict(), directory / "teacher.safetensors")
        (directory / "teacher.json").write_text(json.dumps(teacher.config.to_dict()))
        ClassConditionalDiffusion(GeneratorConfig(block_channels=(8, 16)), 10, (h, w, c)).save(directory / "generator")
        (directory / "dp.json").write_text(json.dumps(record))
    site.reuse_fit(fit_dir, "reused", guidance_scale=1.5)
    return site.state_dir, record


@pytest.mark.parametrize("run_id", ["own", "reused"])
def test_the_runs_models_and_dp_record_are_found_also_through_a_reused_fit(fitted, run_id):
    state_dir, record = fitted
    assert load_dp_record(state_dir, run_id) == record
    assert load_teacher(state_dir, run_id) is not None
    assert load_generator(state_dir, run_id) is not None


def test_a_run_the_site_does_not_hold_has_no_models(fitted):
    state_dir, _ = fitted
    assert (load_dp_record(state_dir, "gone"), load_teacher(state_dir, "gone"), load_generator(state_dir, "gone")) == \
        (None, None, None)
    assert load_dp_record(None, "own") is None


def test_a_malformed_dp_record_or_pointer_is_one_line(fitted, tmp_path):
    import shutil

    state_dir, _ = fitted
    copy = tmp_path / "state"
    shutil.copytree(state_dir, copy)
    (copy / "runs" / "own" / "dp.json").write_text("{not json")
    with pytest.raises(ReleaseError, match="the site's DP record does not load") as caught:
        load_dp_record(copy, "own")
    assert "\n" not in str(caught.value)
    (copy / "runs" / "reused" / "reused_fit.json").write_text('{"fit_dir": 3}')
    for load in (load_dp_record, load_teacher, load_generator):
        with pytest.raises(ReleaseError, match="the run's pointer to its fit does not load") as caught:
            load(copy, "reused")
        assert "\n" not in str(caught.value)
