"""The utility check: per-class counts, the figures drawn from them, the policy's rule, and the round trip."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from fedkr.shared import codec
from fedkr.shared.audit_policy import AuditPolicy, decide_release
from fedkr.shared.reports import AuditReport
from fedkr.shared.utility import UtilityCounts, count_correct, pool


def _predictions(rng: np.random.Generator, labels: np.ndarray, skill: float, k: int) -> np.ndarray:
    """Right with probability `skill`, otherwise a uniform random class."""
    guess = rng.integers(0, k, size=labels.shape)
    return np.where(rng.random(labels.shape) < skill, labels, guess)


@pytest.mark.parametrize("seed", range(5))
def test_figures_equal_scikit_learns(seed):
    rng = np.random.default_rng(seed)
    k = 6
    labels = rng.choice(k, size=200, p=[0.5, 0.2, 0.1, 0.1, 0.1, 0.0])  # one class absent, skewed like a site
    student, teacher = _predictions(rng, labels, 0.6, k), _predictions(rng, labels, 0.9, k)
    counts = count_correct(labels, student, teacher, k)
    for model, predicted in (("student", student), ("teacher", teacher)):
        assert counts.accuracy(model) == pytest.approx(accuracy_score(labels, predicted))
        with warnings.catch_warnings():  # "y_pred contains classes not in y_true": scikit-learn skips them, as we do
            warnings.simplefilter("ignore")
            for adjusted in (False, True):
                assert counts.balanced_accuracy(model, adjusted=adjusted) == pytest.approx(
                    balanced_accuracy_score(labels, predicted, adjusted=adjusted))


def test_majority_class_student_scores_zero_adjusted_though_its_accuracy_is_high():
    labels = np.array([0] * 90 + [1] * 10)
    counts = count_correct(labels, np.zeros(100, int), labels, 2)
    assert counts.accuracy("student") == 0.9
    assert counts.balanced_accuracy("student", adjusted=True) == 0.0
    assert counts.utility_ratio() == 0.0


def test_pooling_sums_per_class_and_refuses_mismatched_classes():
    a = UtilityCounts(np.array([10, 0]), np.array([5, 0]), np.array([9, 0]))
    b = UtilityCounts(np.array([0, 10]), np.array([0, 1]), np.array([0, 8]))
    pooled = pool([a, b])
    assert pooled.support.tolist() == [10, 10] and pooled.student_correct.tolist() == [5, 1]
    assert pooled.balanced_accuracy("student") == pytest.approx(0.3)
    assert pool([]) is None
    with pytest.raises(ValueError):
        pool([a, UtilityCounts(np.array([1]), np.array([1]), np.array([1]))])


@pytest.mark.parametrize("bad", [
    {"support": [1, 2], "student_correct": [1], "teacher_correct": [1, 2]},
    {"support": [1, 2], "student_correct": [2, 0], "teacher_correct": [1, 2]},   # more correct than images
    {"support": [1, -2], "student_correct": [0, 0], "teacher_correct": [0, 0]},
    {"support": [True, 2], "student_correct": [0, 0], "teacher_correct": [0, 0]},
    {"support": [1.5, 2], "student_correct": [0, 0], "teacher_correct": [0, 0]},
    {"support": list(range(2000)), "student_correct": [0] * 2000, "teacher_correct": [0] * 2000},
    {"support": [1], "student_correct": [1], "teacher_correct": [1], "comparator": "oracle"},
    [1, 2, 3],
])
def test_remote_counts_are_validated(bad):
    with pytest.raises(ValueError):
        UtilityCounts.from_dict(bad)


def _report(site: str, counts: UtilityCounts | None) -> AuditReport:
    from fedkr.shared.attack_report import measure_attack

    scores = np.random.default_rng(0).normal(size=400)  # members and holdout alike: AUC 0.5, every attack passes
    results = tuple(
        measure_attack(name, "distilled_set" if name.startswith("dcr") else "generator" if name == "generator_loss" else "student",
                       scores, scores, np.zeros(400, int), np.zeros(400, int), ("a",), seed=0)
        for name in ("loss", "entropy", "rmia", "dcr_pixel", "dcr_feature", "generator_loss"))
    return AuditReport(site, results, 400, 400, settings={"confidence": 0.95}, utility=counts)


def _site_counts(rng: np.random.Generator, skill: float, k: int = 5, n: int = 300) -> UtilityCounts:
    labels = rng.integers(0, k, size=n)
    return count_correct(labels, _predictions(rng, labels, skill, k), _predictions(rng, labels, 0.95, k), k)


def test_a_student_that_learned_nothing_is_refused_and_a_normal_one_passes():
    rng = np.random.default_rng(1)
    policy = AuditPolicy()
    broken = {s: _report(s, _site_counts(rng, skill=0.0)) for s in ("site-0", "site-1")}
    decision = decide_release(broken, policy)
    assert not decision.passed
    assert [(f.attack, f.metric) for f in decision.failures] == [("utility", "adjusted_balanced_accuracy_upper"),
                                                                 ("utility", "utility_ratio")]
    failure = decision.failures[1]
    assert "a release that teaches this little is not released" in failure.message
    assert "600 holdout images of 2 sites" in failure.message

    normal = {s: _report(s, _site_counts(rng, skill=0.85)) for s in ("site-0", "site-1")}
    decision = decide_release(normal, policy)
    assert decision.passed, decision.reasons
    assert decision.utility.num_examples == 600
    assert decision.to_dict()["utility"]["utility_ratio"] == pytest.approx(decision.utility.utility_ratio())


def test_a_site_without_utility_figures_fails_and_zero_turns_each_rule_off():
    rng = np.random.default_rng(2)
    replies = {"site-0": _report("site-0", _site_counts(rng, 0.9)), "site-1": _report("site-1", None)}
    decision = decide_release(replies, AuditPolicy())
    assert [(f.site, f.metric) for f in decision.failures] == [("site-1", "present")]
    broken = {"site-0": _report("site-0", _site_counts(rng, 0.0))}
    assert [f.metric for f in decide_release(broken, AuditPolicy(min_utility_ratio=0.0)).failures] == [
        "adjusted_balanced_accuracy_upper"]
    assert [f.metric for f in decide_release(broken, AuditPolicy(min_adjusted_balanced_accuracy=0.0)).failures] == [
        "utility_ratio"]
    assert decide_release(broken, AuditPolicy(min_utility_ratio=0.0, min_adjusted_balanced_accuracy=0.0)).passed
    for bad in ({"min_utility_ratio": 1.5}, {"min_adjusted_balanced_accuracy": -0.1}):
        with pytest.raises(ValueError):
            AuditPolicy(**bad)


#: A real run's counts: `fedkr simulate --profile demo --dp-models teacher+generator --seed 1` (two sites of
#: digits, epsilon 4 a site split between teacher and generator). The DP teachers collapsed (balanced
#: accuracy 0.14 on ten classes) and the student, at 0.17, kept "1.82" of their skill: released before the floor.
DP_COLLAPSED = {
    "site-0": {"support": [40, 38, 30, 34, 34, 33, 36, 40, 32, 41], "student_correct": [12, 7, 0, 2, 0, 0, 19, 31, 0, 0],
               "teacher_correct": [3, 3, 0, 3, 1, 0, 3, 14, 7, 3]},
    "site-1": {"support": [31, 34, 41, 38, 38, 40, 37, 31, 37, 31], "student_correct": [7, 3, 0, 0, 0, 0, 18, 23, 0, 0],
               "teacher_correct": [12, 14, 10, 3, 0, 5, 10, 6, 0, 2]},
}


def test_teachers_that_learned_little_cannot_vouch_for_a_student_that_learned_nothing():
    replies = {sid: _report(sid, UtilityCounts.from_dict(c)) for sid, c in DP_COLLAPSED.items()}
    decision = decide_release(replies, AuditPolicy())
    assert decision.utility.utility_ratio() > 1.5  # the ratio alone passes it
    assert decide_release(replies, AuditPolicy(min_adjusted_balanced_accuracy=0.0)).passed
    assert not decision.passed
    [failure] = decision.failures
    assert (failure.attack, failure.metric, failure.threshold) == ("utility", "adjusted_balanced_accuracy_upper", 0.25)
    assert failure.value < 0.15
    assert "adjusted balanced accuracy is 0.078 on 716 holdout images of 2 sites" in failure.message
    assert "the sites' own models reach 0.043" in failure.message


def test_the_floor_reads_the_upper_bound_so_a_small_holdout_is_not_refused_by_chance():
    labels = np.repeat(np.arange(4), 5)  # 20 images: the interval is wide
    student = np.where(np.arange(20) % 5 < 2, labels, (labels + 1) % 4)  # recall 0.4 a class: adjusted 0.2
    counts = count_correct(labels, student, labels, 4)
    assert counts.balanced_accuracy("student", adjusted=True) == pytest.approx(0.2)
    lower, upper = counts.adjusted_balanced_accuracy_interval("student")
    assert lower < 0.2 < 0.25 < upper
    policy = AuditPolicy(min_utility_ratio=0.0)
    assert decide_release({"site-0": _report("site-0", counts)}, policy).passed
    many = count_correct(np.tile(labels, 50), np.tile(student, 50), np.tile(labels, 50), 4)  # 1,000 images
    assert many.adjusted_balanced_accuracy_interval("student")[1] < 0.25
    assert not decide_release({"site-0": _report("site-0", many)}, policy).passed


def test_the_interval_holds_the_point_covers_the_truth_and_is_repeatable():
    rng = np.random.default_rng(4)
    k, n, skill = 5, 40, 0.5
    truth = skill  # right with probability skill, else uniform: recall skill + (1 - skill) / k, adjusted skill
    covered = 0
    for _ in range(100):
        labels = np.repeat(np.arange(k), n)
        counts = count_correct(labels, _predictions(rng, labels, skill, k), labels, k)
        lower, upper = counts.adjusted_balanced_accuracy_interval("student", draws=2000)
        assert lower <= counts.balanced_accuracy("student", adjusted=True) <= upper
        covered += lower <= truth <= upper
    assert covered >= 88  # 95% nominal; 88 of 100 or fewer happens by chance with probability under 0.5%
    assert counts.adjusted_balanced_accuracy_interval("student") == counts.adjusted_balanced_accuracy_interval("student")
    one_class = UtilityCounts(np.array([10, 0]), np.array([5, 0]), np.array([9, 0]))
    assert all(np.isnan(one_class.adjusted_balanced_accuracy_interval("student")))
    for bad in ({"confidence": 1.0}, {"draws": 10}, {"model": "oracle"}):
        with pytest.raises(ValueError):
            counts.adjusted_balanced_accuracy_interval(**{"model": "student", **bad})


def test_teachers_at_chance_refuse_the_release():
    labels = np.arange(100) % 4
    at_chance = count_correct(labels, labels, (labels + 1) % 4, 4)
    decision = decide_release({"site-0": _report("site-0", at_chance)}, AuditPolicy())
    assert [f.metric for f in decision.failures] == ["teacher_adjusted_balanced_accuracy"]
    assert "no knowledge to release" in decision.failures[0].message


def test_counts_cross_the_wire_unchanged():
    rng = np.random.default_rng(3)
    counts = _site_counts(rng, 0.7)
    report = _report("site-0", counts)
    data = codec.encode_audit_report(report, run_id="r1", candidate=b"candidate")
    back = codec.decode_audit_report(data, site_id="site-0", run_id="r1", candidate=b"candidate")
    assert back.utility.to_dict() == counts.to_dict()
    assert AuditReport.from_dict(report.to_dict()).utility.to_dict() == counts.to_dict()


def test_a_perfect_student_s_interval_holds_its_point_and_one_class_cannot_be_judged():
    labels = np.repeat(np.arange(10), 72)
    perfect = count_correct(labels, labels, labels, 10)
    low, high = perfect.adjusted_balanced_accuracy_interval("student")
    assert low < 1.0 == high  # the posterior's mass lies below 1; the interval still holds what was observed
    one_class = count_correct(np.zeros(50, int), np.zeros(50, int), np.zeros(50, int), 3)
    decision = decide_release({"site-0": _report("site-0", one_class)}, AuditPolicy(min_utility_ratio=0.0))
    assert [f.metric for f in decision.failures] == ["classes_present"]
    assert "cannot be judged" in decision.failures[0].message
    assert decide_release({"site-0": _report("site-0", one_class)},
                          AuditPolicy(min_utility_ratio=0.0, min_adjusted_balanced_accuracy=0.0)).passed


def test_a_decision_s_figures_are_built_once_at_the_policy_s_confidence():
    labels = np.repeat(np.arange(4), 30)
    counts = count_correct(labels, labels, np.where(labels == 3, 0, labels), 4)
    policy = AuditPolicy(confidence=0.8)
    decision = decide_release({"site-0": _report("site-0", counts), "site-1": "timed out"}, policy)
    pooled = decision.utility_figures
    assert decision.utility_figures is pooled  # cached: one Monte Carlo interval per decision
    interval = pooled["student"]["adjusted_balanced_accuracy_interval"]
    assert interval == list(counts.adjusted_balanced_accuracy_interval("student", 0.8))
    assert interval != list(counts.adjusted_balanced_accuracy_interval("student", 0.95))
    # each site's figures at the same confidence as the pool's; a site without a report has none
    assert decision.site_utility_figures == {"site-0": pooled}
    assert decision.to_dict()["utility"] is pooled
