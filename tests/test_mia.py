import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fedkr.shared.mia import roc_auc, roc_curve, tpr_at_fpr


def test_auc_known_answers():
    assert roc_auc([3, 4, 5], [0, 1, 2]) == 1.0
    assert roc_auc([0, 1, 2], [3, 4, 5]) == 0.0
    assert roc_auc([1, 1, 1], [1, 1, 1]) == 0.5
    # 2 of 4 pairs won, one tie: (2 + 0.5) / 4
    assert roc_auc([1, 3], [1, 2]) == pytest.approx(0.625)


def test_auc_matches_sklearn_on_random_scores():
    rng = np.random.default_rng(0)
    m, n = rng.normal(0.3, 1, 500).round(1), rng.normal(0, 1, 700).round(1)  # rounding makes ties
    expected = roc_auc_score(np.r_[np.ones(500), np.zeros(700)], np.r_[m, n])
    assert roc_auc(m, n) == pytest.approx(expected, abs=1e-12)


def test_tpr_at_fpr_known_answer():
    nonmembers = np.arange(100.0)  # 0..99
    members = np.array([99.5, 100, 101, 50, 20] + [-1.0] * 5)
    # threshold 99 flags 1 of 100 non-members (FPR 1%) and 3 of 10 members; threshold 99.5 gives FPR 0
    assert tpr_at_fpr(members, nonmembers, 0.01) == pytest.approx(0.3)
    assert tpr_at_fpr(members, nonmembers, 0.0) == pytest.approx(0.3)
    assert tpr_at_fpr(members, nonmembers, 0.5) == pytest.approx(0.4)
    assert tpr_at_fpr(members, nonmembers, 1.0) == 1.0


def test_roc_curve_endpoints_and_monotone():
    rng = np.random.default_rng(1)
    fpr, tpr = roc_curve(rng.normal(1, 1, 50), rng.normal(0, 1, 50))
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()


def test_invalid_scores():
    with pytest.raises(ValueError):
        roc_auc([], [1.0])
    with pytest.raises(ValueError):
        roc_auc([np.nan], [1.0])
    with pytest.raises(ValueError):
        tpr_at_fpr([1.0], [0.0], 1.5)
