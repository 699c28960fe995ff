"""The teacher's input resolution: a site's teacher that learns its members at the detail its generator's
samples carry (`RunConfig.teacher_resample`, `FitPlan.teacher_resample`, `client.site.teacher_input_resolution`)."""

from __future__ import annotations

import json

import numpy as np
import torch

from fedkr.client.site import Site, teacher_input_resolution
from fedkr.client.site_data import SiteData
from fedkr.shared import codec
from fedkr.shared.classifier import TrainConfig, resample_input, resampling_resolution
from fedkr.shared.config import RunConfig
from fedkr.shared.generator import GeneratorConfig
from fedkr.shared.generator_kinds import build_generator, generator_resolution
from fedkr.shared.image_set import ImageSet
from fedkr.shared.reports import FitPlan, FitReport


def _plan(resample: bool, **generator) -> FitPlan:
    return FitPlan("r1", TrainConfig(epochs=1), GeneratorConfig(**generator), teacher_resample=resample)


def test_the_generator_resolution_is_what_the_built_generator_draws_at():
    for kind, shape in (("diffusion", (28, 28, 1)), ("diffusion", (12, 12, 3)), ("dp-merf", (28, 28, 1)), ("dp-merf", (14, 14, 1))):
        config = GeneratorConfig(kind=kind, resolution=16)
        assert generator_resolution(config, shape) == build_generator(config, 2, shape).size, (kind, shape)


def test_the_teacher_resamples_only_where_asked_and_below_the_images_side():
    assert teacher_input_resolution(_plan(True), (28, 28, 1)) == 16
    assert teacher_input_resolution(_plan(False), (28, 28, 1)) == 0
    assert teacher_input_resolution(_plan(True), (16, 16, 3)) == 0  # the generator draws at the images' own size
    assert teacher_input_resolution(_plan(True, resolution=8), (28, 28, 1)) == 8
    assert teacher_input_resolution(_plan(True, kind="dp-merf", resolution=12), (28, 28, 1)) == 12


def test_resampling_is_on_only_for_a_positive_resolution_below_the_smaller_side():
    for resolution, size, expected in ((16, (28, 28), 16), (0, (28, 28), 0), (-4, (28, 28), 0), (28, (28, 28), 0),
                                       (32, (28, 28), 0), (16, (28, 16), 0), (15, (28, 16), 15)):
        assert resampling_resolution(resolution, size) == expected, (resolution, size)
    x = torch.rand(2, 1, 28, 16)
    assert resample_input(x, 16) is x and resample_input(x, -1) is x
    assert resample_input(x, 8).shape == x.shape and not torch.equal(resample_input(x, 8), x)


def test_the_setting_travels_in_the_fit_plan_off_in_older_plans_and_on_for_a_run():
    plan = _plan(True)
    assert codec.decode_fit_plan(codec.encode_fit_plan(plan)).teacher_resample is True
    assert codec.decode_fit_plan(codec.encode_fit_plan(_plan(False))).teacher_resample is False
    assert FitPlan.from_dict(plan.to_dict()) == plan
    older = {key: value for key, value in plan.to_dict().items() if key != "teacher_resample"}
    assert FitPlan.from_dict(older).teacher_resample is False  # a plan written before the setting
    assert RunConfig().teacher_resample is True  # the default since BloodMNIST's bench with it


def _site_data(side: int) -> SiteData:
    rng = np.random.default_rng(0)
    labels = np.arange(48) % 2
    images = rng.integers(0, 256, size=(48, side, side, 1), dtype=np.uint8)
    images[labels == 1, : side // 2] //= 4  # a class a coarse view can tell apart
    members = ImageSet(images[:36], labels[:36], ("a", "b"))
    return SiteData(members=members, holdout=ImageSet(images[36:], labels[36:], ("a", "b")))


def test_a_site_asked_to_resample_saves_a_teacher_that_does(tmp_path):
    data = _site_data(16)
    for resample, expected in ((True, 8), (False, 0)):
        site = Site("site-0", data, tmp_path / f"state-{resample}")
        plan = FitPlan(f"run-{str(resample).lower()}", TrainConfig(epochs=1, min_steps=1),
                       GeneratorConfig(resolution=8, block_channels=(8, 16), train_steps=2, batch_size=8),
                       teacher_resample=resample)
        report = codec.decode_fit_report(site.fit(codec.encode_fit_plan(plan)), run_id=plan.run_id)
        assert isinstance(report, FitReport)
        saved = json.loads((tmp_path / f"state-{resample}" / "runs" / plan.run_id / "teacher.json").read_text())
        assert saved.get("input_resolution", 0) == expected
        assert site.teacher(plan.run_id).config.input_resolution == expected
        assert report.generator_summary["generator_resolution"] == 8
