"""Precision and recall on sets whose answer is known: the same distribution, a collapsed
generator, an off-distribution generator, and a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest

from fedkr.shared.synthesis_quality import knn_radii, precision_recall

RNG = np.random.default_rng(0)


def gaussian(n: int, centre: float = 0.0, scale: float = 1.0, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(centre, scale, size=(n, dim))


def test_same_distribution_scores_high_on_both():
    pr = precision_recall(gaussian(600, seed=1), gaussian(600, seed=2))
    assert pr.precision > 0.8 and pr.recall > 0.8, pr


def test_collapsed_generator_keeps_precision_and_loses_recall():
    real = gaussian(600, seed=1)
    collapsed = gaussian(600, scale=0.1, seed=2)  # every sample near the real mode's centre
    pr = precision_recall(real, collapsed)
    assert pr.precision > 0.9
    assert pr.recall < 0.3, pr


def test_off_distribution_generator_scores_low_on_both():
    pr = precision_recall(gaussian(400, seed=1), gaussian(400, centre=10.0, seed=2))
    assert pr.precision < 0.05 and pr.recall < 0.05, pr


def test_radii_match_brute_force_and_batching_changes_nothing():
    x = gaussian(50, dim=3, seed=4)
    brute = np.array([np.sort(((x - p) ** 2).sum(1))[3] for p in x])
    np.testing.assert_allclose(knn_radii(x, 3), brute, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(knn_radii(x, 3, batch=7), brute, rtol=1e-9, atol=1e-12)
    a, b = gaussian(80, seed=5), gaussian(90, seed=6)
    assert precision_recall(a, b, batch=11) == precision_recall(a, b, batch=1024)


@pytest.mark.parametrize("real, synthetic, message", [
    (np.zeros((10,)), np.zeros((10, 2)), "2-D"),
    (np.zeros((3, 2)), np.zeros((10, 2)), "more than k"),
    (np.zeros((10, 2)), np.zeros((10, 3)), "width"),
    (np.full((10, 2), np.nan), np.zeros((10, 2)), "non-finite"),
])
def test_bad_input_is_a_clear_error(real, synthetic, message):
    with pytest.raises(ValueError, match=message):
        precision_recall(real, synthetic)
