"""DP-MERF, the second generator kind: one Gaussian release, honest accounting, a decoder that learns
the classes, and an audit that says the white-box attack does not apply instead of skipping it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from fedkr.shared.audit_policy import AuditPolicy, decide_release
from fedkr.shared.dp import DPConfig
from fedkr.shared.generator import ClassConditionalDiffusion, GeneratorConfig
from fedkr.shared.generator_kinds import WHITE_BOX_NOT_APPLICABLE, build_generator, load_generator
from fedkr.shared.mean_embedding import MeanEmbeddingGenerator, fourier_features, noisy_class_embeddings
from fedkr.shared.reports import AuditReport

MERF = GeneratorConfig(kind="dp-merf", resolution=8, train_steps=300, batch_size=32)


def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    images = np.round(data.images * 255 / 16).astype(np.uint8)[..., None]
    return images, data.target.astype(np.int64)


def _released_sums(rows: torch.Tensor, labels: np.ndarray) -> torch.Tensor:
    """The per-class sums of psi = [phi, 1] / sqrt(2), rebuilt from the noise-free release's means and counts."""
    means, counts = noisy_class_embeddings(rows, labels, 3, 0.0, torch.Generator())
    return torch.cat([means * counts[:, None], counts[:, None]], 1) / math.sqrt(2)


def test_every_member_moves_the_released_sums_by_at_most_one():
    """The L2 sensitivity the noise is calibrated to: every feature row has unit norm."""
    x = torch.rand(50, 64) * 2 - 1
    rows = fourier_features(x, torch.randn(64, 300) / 4)
    assert torch.allclose(rows.norm(dim=1), torch.ones(50), atol=1e-5)
    labels = np.arange(50) % 3
    moved = (_released_sums(rows, labels) - _released_sums(rows[1:], labels[1:])).norm()
    assert 0.99 <= moved <= 1.0 + 1e-5


def test_a_private_release_spends_its_budget_once_and_the_decoder_learns_the_classes(tmp_path):
    images, labels = digits()
    generator = build_generator(MERF, 10, images.shape[1:])
    assert isinstance(generator, MeanEmbeddingGenerator)
    generator.train(images, labels, dp=DPConfig(4.0))
    report = generator.dp_report
    assert report is not None and report.steps == 1 and report.sample_rate == 1.0 and report.noise_multiplier > 0.5
    assert 3.9 <= report.epsilon <= 4.0 and report.delta == pytest.approx(1 / (10 * len(images)))
    with pytest.raises(ValueError, match="trained already"):
        generator.train(images, labels, dp=DPConfig(4.0))

    asked = np.repeat(np.arange(10), 30)
    drawn = generator.sample(asked, seed=1)
    assert drawn.shape == (300, 8, 8, 1) and drawn.dtype == np.uint8
    judge = LogisticRegression(max_iter=2000).fit(images.reshape(len(images), -1) / 255, labels)
    agreement = float((judge.predict(drawn.reshape(300, -1) / 255) == asked).mean())
    assert agreement > 0.5, agreement  # chance is 0.1

    generator.save(tmp_path / "generator")
    again = load_generator(tmp_path / "generator")
    assert isinstance(again, MeanEmbeddingGenerator) and again.dp_report == report
    assert np.array_equal(again.sample(asked, seed=1), drawn)
    assert again.summary()["generator_kind"] == "dp-merf" and again.summary()["dp_steps"] == 1


def test_a_diffusion_generator_loads_as_before(tmp_path):
    generator = build_generator(GeneratorConfig(resolution=8, block_channels=(8, 8), train_steps=1), 10, (8, 8, 1))
    assert isinstance(generator, ClassConditionalDiffusion)
    generator.save(tmp_path / "g")
    assert "kind" not in json.loads((tmp_path / "g" / "generator.json").read_text())["config"]  # older sites read it
    assert isinstance(load_generator(tmp_path / "g"), ClassConditionalDiffusion)


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind must be one of diffusion, dp-merf"):
        GeneratorConfig(kind="gan")


def _report(dp: dict | None) -> AuditReport:
    from test_release_gate import USEFUL, result

    results = tuple(result(a) for a in AuditPolicy().required_attacks if a != "generator_loss")
    return AuditReport("site-0", results, dp=dp, utility=USEFUL,
                       settings={"confidence": 0.95, "not_applicable": {"generator_loss": WHITE_BOX_NOT_APPLICABLE}})


def test_the_policy_excuses_the_white_box_attack_only_under_a_dp_guarantee_on_the_generator():
    covered = {"epsilon": 4.0, "parts": {"generator": {"epsilon": 4.0, "steps": 1}}}
    assert decide_release({"site-0": _report(covered)}, AuditPolicy()).passed
    teacher_only = {"epsilon": 4.0, "parts": {"teacher": {"epsilon": 4.0}}}
    for dp in (None, teacher_only):
        decision = decide_release({"site-0": _report(dp)}, AuditPolicy())
        assert not decision.passed
        assert decision.reasons == [f"site-0: no generator_loss attack result ({WHITE_BOX_NOT_APPLICABLE}), and no DP "
                                    "guarantee on the generator stands in for it"]


@pytest.mark.slow
def test_a_run_with_dp_merf_generators_audits_them_as_not_applicable_and_says_so(tmp_path):
    """A whole run in-process: the sites' DP records hold the one release, the audit names the white-box
    attack as not applicable at every site (not silently missing), and the page and metrics say why."""
    from fedkr.client.site import Site
    from fedkr.inprocess import InProcessLink
    from fedkr.server.coordinator import Coordinator
    from fedkr.client.site_data import SiteDataSpec, load_site_data
    from helpers import tiny_run_config

    sites = [Site(f"site-{i}", load_site_data(SiteDataSpec("digits", i, 2, "iid", 0, 0.2)), tmp_path / f"site-{i}")
             for i in range(2)]
    config = tiny_run_config(tmp_path / "runs", run_id="merf", generator_kind="dp-merf", dp_epsilon=8.0, rounds=1,
                             generator_steps=100, teacher_epochs=2, student_epochs=2, samples_per_class=5, ipc=3,
                             audit_max_auc=1.0, audit_max_tpr=1.0, audit_max_distance_auc=1.0, audit_min_utility=0.0)
    coordinator = Coordinator(config, None)
    link = InProcessLink(sites)
    record = coordinator.start()
    record.fit = coordinator.fit(record, link)
    for report in record.fit.reports.values():
        assert report.generator_summary["generator_kind"] == "dp-merf"
        part = report.dp["parts"]["generator"]
        assert part["steps"] == 1 and part["sample_rate"] == 1.0 and part["epsilon"] <= 4.0
    record.active = dict(record.fit.reports)
    coordinator.recycle(record, link)
    coordinator.distill(record)
    coordinator.relabel(record, link)
    coordinator.train_student(record)
    coordinator.audit(record, link)
    outcome = coordinator.release(record)

    assert outcome.released, outcome.metrics["audit"]["failures"]
    audit = json.loads((outcome.release_dir / "audit.json").read_text())
    for sid in ("site-0", "site-1"):
        site = audit["sites"][sid]
        assert "generator_loss" not in {r["attack"] for r in site["attacks"]}
        assert site["settings"]["not_applicable"] == {"generator_loss": WHITE_BOX_NOT_APPLICABLE}
        assert outcome.metrics["audit"]["sites"][sid]["generator_loss"] == {"not_applicable": WHITE_BOX_NOT_APPLICABLE}
    page = (outcome.release_dir / "audit.html").read_text()
    assert page.count("not applicable: the generator is DP-MERF") == 2 and "covered by the generator&#39;s DP guarantee" in page
