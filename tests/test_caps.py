"""A site's resource caps (node config): a plan over a cap is refused by the site before it trains,
with a reply that names the cap; the coordinator logs which cap and leaves the site out."""

from __future__ import annotations

import json
import logging

import pytest

from fedkr.client.caps import OverCap, SiteCaps
from fedkr.client.site import Site
from fedkr.client.site_data import SiteDataSpec, load_site_data
from fedkr.inprocess import InProcessLink
from fedkr.server.coordinator import Coordinator, RunError
from fedkr.shared import codec
from fedkr.shared.classifier import TrainConfig
from fedkr.shared.config import ConfigError
from fedkr.shared.generator import GeneratorConfig
from fedkr.shared.reports import FitPlan, Refused, SiteRefusal
from fedkr.shared.shard import SynthesisRequest
from helpers import tiny_run_config


@pytest.fixture(scope="module")
def digits_data():
    return [load_site_data(SiteDataSpec("digits", i, 2, "iid", 0, 0.2)) for i in range(2)]


def fit_only(tmp_path, sites, **settings):  # type: ignore[no-untyped-def]
    """The fit stage alone, at budgets that train in seconds."""
    config = tiny_run_config(tmp_path, **{"run_id": "caps", "rounds": 1, "generator_steps": 2, "teacher_epochs": 1,
                                          "student_epochs": 1, **settings})
    coordinator = Coordinator(config, None)
    record = coordinator.start()
    return coordinator.fit(record, InProcessLink(sites))


def ledger_kinds(site: Site) -> list[str]:
    return [json.loads(line)["kind"] for line in (site.state_dir / "ledger.jsonl").read_text().splitlines()]


def test_caps_parse_from_the_node_config():
    caps = SiteCaps.from_node_config({"max-generator-steps": 2000, "max-shard-images": "500", "max-fit-seconds": 3600.5,
                                      "data-path": "x"})
    assert caps == SiteCaps(max_generator_steps=2000, max_shard_images=500, max_fit_seconds=3600.5)
    assert caps.describe() == "max-generator-steps=2000, max-shard-images=500, max-fit-seconds=3600.5"
    assert SiteCaps.from_node_config({}).describe() == "none"


@pytest.mark.parametrize("node, key", [({"max-generator-steps": -1}, "max-generator-steps"),
                                       ({"max-shard-images": "many"}, "max-shard-images"),
                                       ({"max-reference-models": 2.5}, "max-reference-models"),
                                       ({"max-fit-seconds": "inf"}, "max-fit-seconds")])
def test_a_bad_cap_is_a_one_line_config_error(node, key):
    with pytest.raises(ConfigError, match=f"node config '{key}' must be a number >= 0"):
        SiteCaps.from_node_config(node)


def test_a_misspelt_node_config_key_is_refused():
    from fedkr.client.node_config import SiteSettings

    settings = SiteSettings.parse({}, {"data-path": "/d.npz", "site-name": "a", "max-generator-steps": 100}, 1)
    assert settings.caps.max_generator_steps == 100
    with pytest.raises(ConfigError, match="unknown key\\(s\\) 'max-generator-step'"):
        SiteSettings.parse({}, {"data-path": "/d.npz", "max-generator-step": 100}, 1)


def test_refusal_round_trips_and_malformed_ones_are_rejected():
    refusal = SiteRefusal("site-1", "fit", "the plan asks 10 generator steps, more than this site accepts", "max-generator-steps")
    assert codec.decode_refusal(codec.encode_refusal(refusal, run_id="r1")) == (refusal, "r1")
    assert codec.kind_of(codec.encode_refusal(refusal, run_id="")) == codec.KIND_REFUSAL
    for bad in (SiteRefusal("", "fit", "x"), SiteRefusal("a", "train", "x"), SiteRefusal("a", "fit", "two\nlines"),
                SiteRefusal("a", "fit", "x" * 301)):
        with pytest.raises(codec.CodecError):
            codec.encode_refusal(bad, run_id="r1")
    plan = FitPlan("r1", TrainConfig(), GeneratorConfig(), samples_per_class=7, min_class_members=3, reference_models=4)
    assert codec.decode_fit_plan(codec.encode_fit_plan(plan)) == plan


def test_plan_over_generator_steps_cap_is_refused_before_training_and_the_coordinator_logs_the_cap(
        tmp_path, digits_data, caplog):
    capped = Site("site-0", digits_data[0], tmp_path / "site-0", caps=SiteCaps(max_generator_steps=1))
    free = Site("site-1", digits_data[1], tmp_path / "site-1")
    with caplog.at_level(logging.WARNING, logger="fedkr"):
        fit = fit_only(tmp_path, [capped, free], generator_steps=2)
    assert set(fit.reports) == {"site-1"}
    reason = fit.failed["site-0"]
    assert reason == "refused to fit: the plan asks 2 generator steps, more than this site accepts (max-generator-steps = 1)"
    assert "site-0 refused the fit plan: over its cap max-generator-steps" in caplog.text
    assert not (capped.state_dir / "runs" / "caps" / "teacher.safetensors").exists(), "the capped site trained nothing"
    assert ledger_kinds(capped) == ["refusal"], "the refusal left through the gate and is in the site's ledger"


def test_a_step_of_k_noise_draws_counts_k_times_against_the_generator_steps_cap():
    caps = SiteCaps(max_generator_steps=1000)
    caps.check_plan(FitPlan("r1", TrainConfig(), GeneratorConfig(train_steps=300, noise_multiplicity=3)), [10] * 10)
    with pytest.raises(OverCap) as caught:
        caps.check_plan(FitPlan("r1", TrainConfig(), GeneratorConfig(train_steps=300, noise_multiplicity=4)), [10] * 10)
    assert caught.value.cap == "max-generator-steps"
    assert str(caught.value) == ("the plan asks 300 generator steps x 4 noise draws, more than this site accepts "
                                 "(max-generator-steps = 1000)")


@pytest.mark.parametrize("caps, plan_settings, cap", [
    (SiteCaps(max_shard_images=100), dict(samples_per_class=20), "max-shard-images"),  # 20 x 10 classes
    (SiteCaps(max_reference_models=2), dict(audit_reference_models=3), "max-reference-models"),
])
def test_plan_over_shard_or_audit_cap_is_refused_at_fit(tmp_path, digits_data, caps, plan_settings, cap):
    site = Site("site-0", digits_data[0], tmp_path / "site-0", caps=caps)
    with pytest.raises(RunError) as caught:
        fit_only(tmp_path, [site], **plan_settings)
    message = str(caught.value)
    assert message.startswith("no site completed fit: site-0: refused to fit: ") and f"({cap} = " in message


def test_fit_past_its_wall_time_cap_stops_and_is_refused(tmp_path, digits_data):
    site = Site("site-0", digits_data[0], tmp_path / "site-0", caps=SiteCaps(max_fit_seconds=0.05))
    with pytest.raises(RunError, match=r"site-0: refused to fit: fit (ran|would take about) .*\(max-fit-seconds = 0.05\)"):
        fit_only(tmp_path, [site], teacher_epochs=10)
    assert not (site.state_dir / "runs" / "caps" / "teacher.safetensors").exists()


def test_every_site_refusing_says_why_by_site_name(tmp_path, digits_data):
    sites = [Site(f"site-{i}", d, tmp_path / f"site-{i}", caps=SiteCaps(max_generator_steps=1)) for i, d in enumerate(digits_data)]
    with pytest.raises(RunError) as caught:
        fit_only(tmp_path, sites, generator_steps=5)
    assert str(caught.value) == ("no site completed fit: site-0: refused to fit: the plan asks 5 generator steps, more than "
                                 "this site accepts (max-generator-steps = 1); site-1: refused to fit: the plan asks 5 "
                                 "generator steps, more than this site accepts (max-generator-steps = 1)")


def test_a_later_request_over_a_cap_is_refused_too(tmp_path, digits_data):
    """A site checks each request, not only the plan's word for it."""
    site = Site("site-0", digits_data[0], tmp_path / "site-0", caps=SiteCaps(max_shard_images=10))
    fit = fit_only(tmp_path, [site], samples_per_class=1)  # the plan: 1 per class, 10 images
    assert set(fit.reports) == {"site-0"}
    reply = InProcessLink([site]).synthesize({"site-0": SynthesisRequest("caps", 1, (2,) * 10, 4.0)})["site-0"]
    assert isinstance(reply, Refused) and reply.refusal.setting == "max-shard-images"
    assert str(reply) == "refused to synthesize: a shard of 20 images is asked for, more than this site accepts (max-shard-images = 10)"
    assert ledger_kinds(site) == ["metrics", "refusal"]
