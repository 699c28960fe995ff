import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedkr.shared.attacks import (
    lira_logit,
    lira_offline_scores,
    loss_scores,
    modified_entropy_scores,
    nearest_distances,
    rmia_scores,
    true_class_probability,
)

LOGITS = np.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [1.0, 1.0, 1.0]])
LABELS = np.array([0, 0, 2])


def test_loss_score_is_negated_cross_entropy():
    expected = -F.cross_entropy(torch.tensor(LOGITS), torch.tensor(LABELS), reduction="none").numpy()
    assert loss_scores(LOGITS, LABELS) == pytest.approx(expected)


def test_modified_entropy_matches_its_formula_and_orders_confidence():
    p = torch.softmax(torch.tensor(LOGITS), 1).numpy()
    i, y = 1, 0
    mentr = -(1 - p[i, y]) * np.log(p[i, y]) - sum(p[i, j] * np.log(1 - p[i, j]) for j in range(3) if j != y)
    scores = modified_entropy_scores(LOGITS, LABELS)
    assert scores[1] == pytest.approx(-mentr)
    assert scores[0] > scores[2] > scores[1]  # confident and right > unsure > confident and wrong


def test_lira_logit_is_log_odds_for_two_classes():
    logits = np.array([[2.0, -1.0], [0.5, 0.5]])
    assert lira_logit(logits, np.array([0, 1])) == pytest.approx([3.0, 0.0])


def test_lira_offline_rewards_outputs_above_the_reference():
    scores = lira_offline_scores(np.array([3.0, 1.0]), np.array([[1.0], [1.0]]))
    assert scores[0] > scores[1] == pytest.approx(0.0)


def test_rmia_is_the_share_of_population_dominated():
    p_ref_z = np.full((4, 1), 0.5)
    p_t_z = np.array([0.2, 0.4, 0.6, 0.8])
    scores = rmia_scores(np.array([0.5, 0.9, 0.1]), np.full((3, 1), 0.5), p_t_z, p_ref_z, offline_a=1.0)
    # with a = 1, Pr(x) = Pr_out(x): ratios are p_t / 0.5 for x and z alike
    assert scores == pytest.approx([0.5, 1.0, 0.0])
    with pytest.raises(ValueError):
        rmia_scores(np.ones(1), np.ones((1, 1)), np.ones(1), np.ones((1, 1)), offline_a=2.0)


def test_true_class_probability_and_label_checks():
    assert true_class_probability(LOGITS, LABELS)[2] == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        loss_scores(LOGITS, np.array([0, 1, 3]))


def test_nearest_distances_match_brute_force():
    rng = np.random.default_rng(0)
    q, r = rng.normal(size=(50, 4, 4, 1)), rng.normal(size=(30, 4, 4, 1))
    brute = np.sqrt(((q.reshape(50, 1, -1) - r.reshape(1, 30, -1)) ** 2).sum(-1)).min(1)
    assert nearest_distances(q, r, chunk=7) == pytest.approx(brute, rel=1e-5)


def test_scores_do_not_saturate_for_very_confident_outputs():
    logits = np.array([[40.0, 0.0, 0.0], [45.0, 0.0, 0.0]])
    loss = loss_scores(logits, np.array([0, 0]))
    mentr = modified_entropy_scores(logits, np.array([0, 0]))
    assert loss[1] > loss[0] and mentr[1] > mentr[0]  # the more confident one still scores higher


def test_rmia_population_leaves_itself_out():
    p = np.array([0.1, 0.5, 0.9])
    scores = rmia_scores(p, np.full((3, 1), 0.5), p, np.full((3, 1), 0.5), offline_a=1.0, x_is_population=True)
    assert scores == pytest.approx([0.0, 0.5, 1.0])
