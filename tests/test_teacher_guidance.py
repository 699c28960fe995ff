"""A site samples guided by its own teacher when its generator's settings say so, and refuses to where
the teacher trained without DP (`GeneratorConfig.classifier_guidance`, `Site._draw`)."""

from __future__ import annotations

import json

import pytest

from fedkr.client.site import Site
from fedkr.client.shard_check import CHECK_OFF
from fedkr.client.site_data import SiteDataSpec, load_site_data
from fedkr.shared import codec
from fedkr.shared.classifier import ClassifierConfig, TrainConfig, build_classifier, one_hot, train_classifier
from fedkr.shared.dp_models import DP_BOTH_MODELS, DP_GENERATOR_ONLY
from fedkr.shared.generator import ClassConditionalDiffusion, GeneratorConfig
from fedkr.shared.shard import ShardSpec, SynthesisRequest
from safetensors.torch import save_file

PER_CLASS = 5


@pytest.fixture
def site_with_fit(tmp_path):
    """A digits site and a fit folder holding a teacher trained for a few epochs and an untrained generator
    (as a site saves them)."""
    data = load_site_data(SiteDataSpec("digits"))
    fit_dir = tmp_path / "fit"
    fit_dir.mkdir()
    h, w, c = data.members.image_shape
    teacher = build_classifier(ClassifierConfig(c, h, w, data.members.num_classes, 8), seed=0)
    train_classifier(teacher, data.members.images, one_hot(data.members.labels, 10), TrainConfig(epochs=3))
    save_file(teacher.state_dict(), fit_dir / "teacher.safetensors")
    (fit_dir / "teacher.json").write_text(json.dumps(teacher.config.to_dict()))
    ClassConditionalDiffusion(GeneratorConfig(block_channels=(8, 16), sample_steps=5), 10, (h, w, c)).save(fit_dir / "generator")
    return Site("site-0", data, tmp_path / "site-0", shard_max_auc=CHECK_OFF), fit_dir


def _shard_summary(site: Site, run_id: str) -> dict:
    reply = site.synthesize(SynthesisRequest(run_id, 1, (PER_CLASS,) * 10, 4.0, 1.0))
    return codec.decode_shard(reply, site_id=site.site_id, run_id=run_id, round=1, spec=ShardSpec((8, 8, 1), 10)).summary


def test_a_site_guided_by_its_teacher_draws_what_its_teacher_calls_the_asked_class(site_with_fit):
    site, fit_dir = site_with_fit
    site.reuse_fit(fit_dir, "plain")
    site.reuse_fit(fit_dir, "guided", classifier_guidance=10.0)
    plain, guided = _shard_summary(site, "plain"), _shard_summary(site, "guided")
    assert "classifier_guidance" not in plain and guided["classifier_guidance"] == 10.0
    # the untrained generator's samples are noise to the teacher (measured: 0.04 agree); guided, its gradient moves
    # them towards the asked class (0.26): twice chance (0.1)
    assert guided["teacher_agreement"] > max(0.2, plain["teacher_agreement"] + 0.15), (plain["teacher_agreement"], guided["teacher_agreement"])


def test_a_private_generator_without_its_dp_record_is_refused_guidance(site_with_fit):
    from fedkr.shared.dp import DPReport

    site, fit_dir = site_with_fit
    generator_json = fit_dir / "generator" / "generator.json"
    meta = json.loads(generator_json.read_text())
    meta["dp_report"] = DPReport(epsilon=4.0, delta=1e-5, noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.1,
                                 steps=10, accountant="rdp", num_examples=100).to_dict()
    generator_json.write_text(json.dumps(meta))
    site.reuse_fit(fit_dir, "guided", classifier_guidance=1.0)
    refusal, _ = codec.decode_refusal(site.synthesize(SynthesisRequest("guided", 1, (2,) * 10, 4.0, 1.0)))
    assert "needs the run's DP record, which is missing" in refusal.reason


@pytest.mark.parametrize("models", [DP_GENERATOR_ONLY, DP_BOTH_MODELS])
def test_teacher_guidance_is_refused_where_the_teacher_trained_without_dp(site_with_fit, models):
    site, fit_dir = site_with_fit
    (fit_dir / "dp.json").write_text(json.dumps({"epsilon": 8.0, "models": models}))
    site.reuse_fit(fit_dir, "guided", classifier_guidance=1.0)
    reply = site.synthesize(SynthesisRequest("guided", 1, (2,) * 10, 4.0, 1.0))
    if models == DP_BOTH_MODELS:
        assert codec.kind_of(reply) == codec.KIND_SHARD, "a private teacher's guidance is post-processing"
        return
    refusal, _ = codec.decode_refusal(reply)
    assert refusal.request == "synthesize" and "generator-teacher-guidance 1 needs a teacher trained with DP" in refusal.reason
    site.reuse_fit(fit_dir, "plain")
    assert codec.kind_of(site.synthesize(SynthesisRequest("plain", 1, (2,) * 10, 4.0, 1.0))) == codec.KIND_SHARD


def test_a_guided_fit_plan_saves_the_scale_with_the_generator_and_its_shards_name_it(tmp_path):
    from fedkr.client.site import run_dir
    from fedkr.shared.reports import FitPlan

    site = Site("site-0", load_site_data(SiteDataSpec("digits")), tmp_path / "site-0", shard_max_auc=CHECK_OFF)
    plan = FitPlan("fresh", TrainConfig(epochs=1), GeneratorConfig(block_channels=(8, 16), train_steps=5, sample_steps=5,
                                                                   classifier_guidance=2.0), teacher_channels=8)
    assert codec.kind_of(site.fit(codec.encode_fit_plan(plan))) == codec.KIND_FIT_REPORT
    saved = json.loads((run_dir(site.state_dir, "fresh") / "generator" / "generator.json").read_text())
    assert saved["config"]["classifier_guidance"] == 2.0
    assert _shard_summary(site, "fresh")["classifier_guidance"] == 2.0


def test_a_site_refuses_a_fit_plan_whose_teacher_would_guide_without_dp(tmp_path):
    from fedkr.shared.dp import DPConfig
    from fedkr.shared.reports import FitPlan
    from fedkr.v1 import messages_pb2 as pb

    site = Site("site-0", load_site_data(SiteDataSpec("digits")), tmp_path / "site-0")
    plan = codec.encode_fit_plan(FitPlan("refused", TrainConfig(epochs=1), GeneratorConfig(train_steps=5), dp=DPConfig(8.0)))
    message = codec.unwrap(plan, codec.KIND_FIT_PLAN, pb.FitPlan, codec.MAX_PLAN_BYTES)
    message.dp_json = json.dumps({"target_epsilon": 8.0, "models": DP_GENERATOR_ONLY})
    message.generator_json = json.dumps({**GeneratorConfig(train_steps=5).to_dict(), "classifier_guidance": 1.0})
    refusal, _ = codec.decode_refusal(site.fit(codec.wrap(codec.KIND_FIT_PLAN, message)))
    assert refusal.request == "fit" and "generator-teacher-guidance 1 needs a teacher trained with DP" in refusal.reason
    assert not (site.state_dir / "runs" / "refused").exists(), "nothing trained"
