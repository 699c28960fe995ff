"""The white-box attack on a site's generator: its denoising error on members against holdout."""

from __future__ import annotations

import numpy as np
import pytest

from fedkr.shared.attack_report import AttackResult, measure_attack
from fedkr.shared.generator import ClassConditionalDiffusion, GeneratorConfig
from fedkr.shared.generator_attack import DEFAULT_TIMESTEPS, cross_fitted_scores, denoising_errors
from fedkr.shared.mia import roc_auc

STEPS = (10, 100, 400)


def _errors(n: int, rng: np.random.Generator, shift: np.ndarray) -> np.ndarray:
    return rng.gamma(4.0, 0.05, size=(n, len(shift))) - shift


def test_a_gap_at_one_noise_level_is_found_and_scored_on_the_other_half():
    rng = np.random.default_rng(1)
    members = _errors(400, rng, np.array([0.0, 0.2, 0.0]))  # members fit better at t=100 only
    holdout = _errors(400, rng, np.zeros(3))
    scores = cross_fitted_scores(members, holdout, STEPS, seed=3)
    assert scores.chosen == ("t=100", "t=100")
    assert scores.members.shape == (400,) and scores.holdout.shape == (400,)
    assert roc_auc(scores.members, scores.holdout) > 0.85


def test_no_gap_scores_near_chance_though_the_best_of_four_features_is_chosen():
    rng = np.random.default_rng(2)
    aucs = []
    for seed in range(20):
        scores = cross_fitted_scores(_errors(60, rng, np.zeros(3)), _errors(60, rng, np.zeros(3)), STEPS, seed=seed)
        aucs.append(roc_auc(scores.members, scores.holdout))
    # choosing on the scored images would bias every AUC upwards; cross-fitting keeps the mean at chance
    assert abs(np.mean(aucs) - 0.5) < 0.03


def test_the_scores_are_seeded():
    rng = np.random.default_rng(4)
    members, holdout = _errors(50, rng, np.zeros(3)), _errors(40, rng, np.zeros(3))
    first, again = cross_fitted_scores(members, holdout, STEPS, seed=7), cross_fitted_scores(members, holdout, STEPS, seed=7)
    assert np.array_equal(first.members, again.members) and first.chosen == again.chosen


@pytest.mark.parametrize("members, holdout, message", [
    (np.zeros((10, 2)), np.zeros((10, 3)), "need errors"),
    (np.zeros((3, 3)), np.zeros((10, 3)), "at least 4 members"),
    (np.full((10, 3), np.nan), np.zeros((10, 3)), "finite"),
])
def test_bad_errors_are_refused(members, holdout, message):
    with pytest.raises(ValueError, match=message):
        cross_fitted_scores(members, holdout, STEPS)


def _digits(n: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.images))[offset : offset + n]
    return (digits.images[order] / 16 * 255).round().astype(np.uint8)[..., None], digits.target[order]


def test_denoising_errors_shape_repeatability_and_bad_input():
    generator = ClassConditionalDiffusion(GeneratorConfig(block_channels=(8, 16), train_steps=1), 10, (8, 8, 1))
    images, labels = _digits(12, 0)
    errors = denoising_errors(generator, images, labels, timesteps=STEPS, repeats=2, seed=5)
    assert errors.shape == (12, 3) and errors.dtype == np.float64 and (errors > 0).all()
    assert np.array_equal(errors, denoising_errors(generator, images, labels, timesteps=STEPS, repeats=2, seed=5))
    assert not np.array_equal(errors, denoising_errors(generator, images, labels, timesteps=STEPS, repeats=2, seed=6))
    assert denoising_errors(generator, images[:0], labels[:0]).shape == (0, len(DEFAULT_TIMESTEPS))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
        denoising_errors(generator, images, labels + 10)
    with pytest.raises(ValueError, match="outside the generator's schedule"):
        denoising_errors(generator, images, labels, timesteps=(1000,))
    with pytest.raises(ValueError, match="repeats"):
        denoising_errors(generator, images, labels, repeats=0)


def _attack(generator: ClassConditionalDiffusion, members, holdout) -> AttackResult:
    m_err = denoising_errors(generator, *members)
    h_err = denoising_errors(generator, *holdout)
    scores = cross_fitted_scores(m_err, h_err)
    return measure_attack("generator_loss", "generator", scores.members, scores.holdout, members[1], holdout[1],
                          tuple(str(c) for c in range(10)))


@pytest.mark.slow  # two generators of 300 steps, about a minute
def test_a_generator_that_memorised_its_members_is_caught_and_one_that_never_saw_them_is_not():
    members, holdout, others = _digits(48, 0), _digits(48, 48), _digits(96, 96)
    config = GeneratorConfig(train_steps=300, warmup_steps=20)
    memorising = ClassConditionalDiffusion(config, 10, (8, 8, 1))
    memorising.train(*members)  # 300 steps of 64 over 48 images: 400 passes over each
    caught = _attack(memorising, members, holdout)
    assert caught.target == "generator" and caught.auc_ci[0] > 0.6, caught.auc_ci

    never_saw = ClassConditionalDiffusion(config, 10, (8, 8, 1))
    never_saw.train(*others)
    passed = _attack(never_saw, members, holdout)
    assert passed.auc_ci[0] < 0.5 < passed.auc_ci[1], passed.auc_ci
