"""DP-MERF, the second generator kind: one Gaussian release, honest accounting, a decoder that learns
the classes, and a white-box attack on it by its own loss that the audit runs as on a diffusion generator."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from fedkr.shared.dp import DPConfig
from fedkr.shared.generator import ClassConditionalDiffusion, GeneratorConfig
from fedkr.shared.generator_kinds import build_generator, load_generator
from fedkr.shared.mean_embedding import MeanEmbeddingGenerator, fourier_features, noisy_class_embeddings
from fedkr.shared.mia import roc_auc

MERF = GeneratorConfig(kind="dp-merf", resolution=8, train_steps=300, batch_size=32)
#: The attack's controls: 5 members and 50 held-out images per class, 300 decoder steps. Measured: AUC
#: 0.71 without noise, 0.46 and 0.50 in two fits at epsilon 1, whose chance spread at 50 v 500 is about 0.04 (one sd).
PER_CLASS, HOLDOUT_PER_CLASS, ATTACK_STEPS, NO_NOISE_AUC, DP_AUC_MARGIN = 5, 50, 300, 0.65, 0.15


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


def _members_and_holdout(per_class: int, holdout_per_class: int, seed: int = 0):  # type: ignore[no-untyped-def]
    images, labels = digits()
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:per_class + holdout_per_class] for c in range(10)]
    members = np.concatenate([p[:per_class] for p in picked])
    holdout = np.concatenate([p[per_class:] for p in picked])
    return (images[members], labels[members]), (images[holdout], labels[holdout])


def test_the_white_box_attack_catches_a_release_without_noise_and_not_one_under_dp():
    """The generator's own loss separates members of a small site whose embedding was released without
    noise (the positive control), and does not under a small epsilon (the guarantee's effect)."""
    (xm, ym), (xh, yh) = _members_and_holdout(PER_CLASS, HOLDOUT_PER_CLASS)
    aucs = {}
    for name, dp in (("no noise", None), ("epsilon 1", DPConfig(1.0))):
        generator = MeanEmbeddingGenerator(replace(MERF, train_steps=ATTACK_STEPS), 10, xm.shape[1:])
        generator.train(xm, ym, dp=dp)
        aucs[name] = roc_auc(-generator.embedding_losses(xm, ym), -generator.embedding_losses(xh, yh))
    assert aucs["no noise"] > NO_NOISE_AUC and abs(aucs["epsilon 1"] - 0.5) < DP_AUC_MARGIN, aucs
    with pytest.raises(ValueError, match="labels must be in"):
        generator.embedding_losses(xm, ym + 10)


@pytest.mark.slow
def test_a_run_with_dp_merf_generators_audits_them_white_box(tmp_path):
    """A whole run in-process: the sites' DP records hold the one release, and every site's audit attacks
    its DP-MERF generator white-box by its own loss, under the policy's generator rule."""
    from fedkr.client.site import Site
    from fedkr.inprocess import InProcessLink
    from fedkr.server.coordinator import Coordinator
    from fedkr.client.site_data import SiteDataSpec, load_site_data
    from helpers import tiny_run_config

    sites = [Site(f"site-{i}", load_site_data(SiteDataSpec("digits", i, 2, "iid", 0, 0.2)), tmp_path / f"site-{i}")
             for i in range(2)]
    config = tiny_run_config(tmp_path / "runs", run_id="merf", generator_kind="dp-merf", dp_epsilon=8.0, rounds=1,
                             generator_steps=100, teacher_epochs=2, student_epochs=2, samples_per_class=5, ipc=3,
                             audit_max_auc=1.0, audit_max_tpr=1.0, audit_max_distance_auc=1.0, audit_min_utility=0.0,
                             audit_min_adjusted_balanced_accuracy=0.0)
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
        attack = next(a for a in site["attacks"] if a["attack"] == "generator_loss")
        assert attack["target"] == "generator" and "DP-MERF" in attack["description"] and attack["auc_ci"][1] <= 0.8
        assert site["settings"]["generator_kind"] == "dp-merf" and site["dp"]["parts"]["generator"]["steps"] == 1
    assert "mean-embedding loss" in (outcome.release_dir / "audit.html").read_text()
