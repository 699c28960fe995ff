import math

import numpy as np
import pytest
from scipy.stats import binomtest

from fedkr.shared.mia import roc_auc, tpr_at_fpr
from fedkr.shared.mia_stats import (
    OperatingPoint,
    bootstrap_auc_ci,
    clopper_pearson,
    control_run,
    empirical_epsilon,
    epsilon_from_counts,
    operating_point_at_fpr,
    roc_on_log_grid,
    score_histogram,
)


@pytest.mark.parametrize("k, n", [(0, 10), (10, 10), (3, 50), (0, 1), (1, 1), (17, 1000), (4999, 5000), (1234, 20000)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.999])
def test_clopper_pearson_matches_scipy_exact_interval(k, n, confidence):
    expected = binomtest(k, n).proportion_ci(confidence, method="exact")
    assert clopper_pearson(k, n, confidence) == pytest.approx((expected.low, expected.high), abs=1e-12)


@pytest.mark.parametrize("k, n", [(500, 1000), (1, 7), (6, 7)])
def test_clopper_pearson_is_symmetric_at_confidences_near_one(k, n):
    """The interval of k in n mirrors that of n - k in n; the upper end keeps its precision near 1."""
    for confidence in (1 - 1e-8, 1 - 1e-12):
        low, high = clopper_pearson(k, n, confidence)
        mirror_low, mirror_high = clopper_pearson(n - k, n, confidence)
        assert (low, high) == pytest.approx((1 - mirror_high, 1 - mirror_low), abs=1e-15)
        assert 0.0 < low < k / n < high < 1.0


def test_clopper_pearson_rejects_bad_counts():
    for k, n in [(3, 2), (-1, 5), (0, 0), (2.7, 10), (2, 10.5)]:
        with pytest.raises(ValueError):
            clopper_pearson(k, n)


def test_bootstrap_interval_brackets_auc_and_narrows_with_data():
    rng = np.random.default_rng(0)
    small = rng.normal(0.3, 1, 50), rng.normal(0, 1, 50)
    large = rng.normal(0.3, 1, 2000), rng.normal(0, 1, 2000)
    lo_s, hi_s = bootstrap_auc_ci(*small)
    lo_l, hi_l = bootstrap_auc_ci(*large)
    assert lo_s <= roc_auc(*small) <= hi_s and lo_l <= roc_auc(*large) <= hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 3


def test_bootstrap_interval_covers_chance_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    covered = 0
    for i in range(200):
        lo, hi = bootstrap_auc_ci(rng.normal(size=80), rng.normal(size=60), num_resamples=400, seed=i)
        covered += lo <= 0.5 <= hi
    assert 0.88 <= covered / 200 <= 0.99


def test_bootstrap_handles_ties_like_the_rank_auc():
    members, nonmembers = np.array([1.0, 1.0, 1.0]), np.array([1.0, 1.0])
    assert bootstrap_auc_ci(members, nonmembers) == (0.5, 0.5)


def test_operating_point_agrees_with_tpr_at_fpr():
    rng = np.random.default_rng(2)
    m, n = rng.normal(1, 1, 300).round(1), rng.normal(0, 1, 400).round(1)
    for fpr in (0.0, 0.001, 0.01, 0.1, 0.5):
        point = operating_point_at_fpr(m, n, fpr)
        assert point.tpr == pytest.approx(tpr_at_fpr(m, n, fpr)) and point.fpr <= fpr
        assert point.true_positives == (m >= point.threshold).sum()


def test_epsilon_bound_is_zero_for_chance_and_large_for_perfect_separation():
    assert epsilon_from_counts(OperatingPoint(0.0, 10, 1000, 10, 1000)) == 0.0
    perfect = epsilon_from_counts(OperatingPoint(0.0, 1000, 1000, 0, 1000))
    # TPR >= 0.025^(1/1000), FPR <= 1 - 0.025^(1/1000): ln(0.99632 / 0.00368) = 5.6
    assert perfect == pytest.approx(math.log((0.025 ** 0.001 - 1e-5) / (1 - 0.025 ** 0.001)), rel=1e-6)


def test_empirical_epsilon_chooses_on_one_half_and_measures_on_the_other():
    rng = np.random.default_rng(3)
    eps_null, point = empirical_epsilon(rng.normal(size=1000), rng.normal(size=1000))
    assert eps_null < 0.3 and point.positives == 500 and point.negatives == 500
    eps_strong, _ = empirical_epsilon(rng.normal(4, 1, 1000), rng.normal(size=1000))
    assert eps_strong > 2.0
    assert empirical_epsilon(np.array([1.0]), np.array([0.0, 1.0])) == (0.0, None)


def test_control_run_splits_the_holdout_in_two():
    rng = np.random.default_rng(4)
    control = control_run(rng.normal(size=301))
    assert (control.num_a, control.num_b) == (150, 151)
    assert control.auc_ci[0] <= control.auc <= control.auc_ci[1]
    assert control_run(np.arange(3.0)) is None


def test_log_grid_roc_and_histogram_are_aggregates():
    rng = np.random.default_rng(5)
    m, n = rng.normal(1, 1, 500), rng.normal(0, 1, 700)
    roc = roc_on_log_grid(m, n)
    assert roc["fpr"][0] == 0.0 and roc["fpr"][-1] == 1.0 and roc["tpr"][-1] == 1.0
    assert np.all(np.diff(roc["tpr"]) >= 0) and len(roc["fpr"]) == 41
    hist = score_histogram(m, n, bins=20)
    assert len(hist["edges"]) == 21 and sum(hist["members"]) == 500 and sum(hist["nonmembers"]) == 700
