import numpy as np
import pytest

from fedkr.server.relabel import class_support, combine, combine_labels, label_shift_posterior, mix_drawn_class, support_from_counts
from fedkr.shared.reports import FitReport, RelabelRequest, check_relabel, check_relabel_reply


def report(site, counts):
    return FitReport(site, sum(counts), 10, ("a", "b", "c"), (8, 8, 1), tuple(counts), 0.9, 0.1, 1.0, 1.0)


def test_support_is_each_sites_share_of_a_class():
    reports = {"s1": report("s1", (30, 0, 5)), "s2": report("s2", (10, 20, 0))}
    support = class_support(reports, ["s1", "s2"])
    assert support.tolist() == [[0.75, 0.0, 1.0], [0.25, 1.0, 0.0]]


def test_a_site_has_no_say_on_a_class_it_does_not_hold():
    support = np.array([[1.0, 0.0], [0.0, 1.0]])  # s1 knows only class a, s2 only class b
    s1 = np.array([[0.9, 0.1]], np.float32)
    s2 = np.array([[0.5, 0.5]], np.float32)
    mixed = combine_labels([s1, s2], support)
    assert mixed[0] == pytest.approx([0.9 / 1.4, 0.5 / 1.4])
    assert mixed.dtype == np.float32 and np.allclose(mixed.sum(1), 1.0)


def test_equal_support_is_the_plain_average():
    rng = np.random.default_rng(0)
    probs = [rng.dirichlet(np.ones(4), size=6).astype(np.float32) for _ in range(3)]
    mixed = combine_labels(probs, np.full((3, 4), 1 / 3))
    assert np.allclose(mixed, np.mean(probs, axis=0), atol=1e-6)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="support shares are"):
        combine_labels([np.ones((2, 3), np.float32) / 3], np.ones((2, 3)))


def test_the_drawn_class_takes_its_weight_of_every_target():
    soft = np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]], np.float32)
    mixed = mix_drawn_class(soft, np.array([1, 0]), 0.25)
    assert mixed == pytest.approx(np.array([[0.375, 0.4375, 0.1875], [0.325, 0.075, 0.6]]))
    assert mixed.dtype == np.float32 and np.allclose(mixed.sum(1), 1.0)
    assert np.array_equal(mix_drawn_class(soft, np.array([1, 0]), 0.0), soft)
    assert np.array_equal(mix_drawn_class(soft, np.array([2, 2]), 1.0), [[0, 0, 1], [0, 0, 1]])
    for weight, drawn, match in ((1.5, [1, 0], "not in"), (float("nan"), [1, 0], "not in"), (0.5, [1], "do not match"),
                                 (0.5, [3, 0], "outside"), (0.5, [1.0, 0.0], "integers"), (0.5, [True, False], "integers")):
        with pytest.raises(ValueError, match=match):
            mix_drawn_class(soft, np.array(drawn), weight)


def test_the_student_learns_the_drawn_class_when_it_weighs_more_than_the_soft_labels():
    """Soft labels that name the wrong class everywhere: at weight 0 the student learns them, at 0.75 the drawn class."""
    from sklearn.datasets import load_digits

    from fedkr.server.distill import DistilledSet
    from fedkr.server.student import train_student
    from fedkr.shared.classifier import TrainConfig, predict_logits

    digits = load_digits()
    keep = digits.target < 3
    images = (digits.images[keep] * 255 / 16).astype(np.uint8)[..., None]
    drawn = digits.target[keep].astype(np.int64)
    wrong = np.eye(3, dtype=np.float32)[(drawn + 1) % 3] * 0.8 + 0.2 / 3
    student_set = DistilledSet(images, wrong, drawn, ("a", "b", "c"), np.arange(len(drawn)))
    config = TrainConfig(epochs=6, seed=0, temperature=4.0)
    learned = {w: predict_logits(train_student(student_set, (8, 8, 1), config, drawn_class_weight=w), images).argmax(1)
               for w in (0.0, 0.75)}
    assert np.mean(learned[0.0] == (drawn + 1) % 3) > 0.9
    assert np.mean(learned[0.75] == drawn) > 0.9


def test_request_and_reply_checks():
    good = RelabelRequest("run-1", np.zeros((4, 8, 8, 1), np.uint8), 4.0)
    check_relabel(good, (8, 8, 1))
    with pytest.raises(ValueError, match="this site's are"):
        check_relabel(good, (28, 28, 3))
    with pytest.raises(ValueError, match="uint8"):
        check_relabel(RelabelRequest("run-1", np.zeros((4, 8, 8, 1), np.float32), 4.0))
    with pytest.raises(ValueError, match="temperature"):
        check_relabel(RelabelRequest("run-1", good.images, 0.0))
    ok = np.full((4, 3), 1 / 3, np.float32)
    assert check_relabel_reply(ok, 4, 3) is not None
    for bad in (ok[:3], ok.astype(np.float64), ok * 2, np.where(ok > 0, np.nan, ok).astype(np.float32)):
        with pytest.raises(ValueError, match="relabel reply"):
            check_relabel_reply(bad, 4, 3)


def test_a_student_set_larger_than_a_site_relabels_stops_the_run_before_any_request(tmp_path):
    from fedkr.server.coordinator import Coordinator, RunError, RunRecord
    from fedkr.server.distill import DistilledSet
    from fedkr.server.intake import PlainIntake
    from fedkr.shared.config import RunConfig
    from fedkr.shared.reports import MAX_RELABEL_IMAGES

    class NoLink:
        def relabel(self, requests):
            raise AssertionError("no relabel request may go out")

    n = MAX_RELABEL_IMAGES + 1
    config = RunConfig(out=str(tmp_path), run_id="too-many", ipc=20, student_ipc=n)
    record = RunRecord(config, PlainIntake(config.run_id))
    record.student_set = DistilledSet(np.zeros((n, 2, 2, 1), np.uint8), np.full((n, 2), 0.5, np.float32),
                                      np.zeros(n, np.int64), ("a", "b"), np.arange(n))
    record.released_rows = np.arange(20)
    with pytest.raises(RunError, match=f"{n} images, more than the {MAX_RELABEL_IMAGES} a site relabels; lower student-ipc"):
        Coordinator(config).relabel(record, NoLink())
    assert len(record.distilled) == 20  # derived from the student set's rows, untouched


def _label_shift_case(seed=0, n=400):
    """Three sites that differ only in their class mix: one likelihood per class, each site's exact posterior."""
    rng = np.random.default_rng(seed)
    counts = np.array([[300, 20, 0], [10, 200, 50], [40, 30, 400]], dtype=float)
    x = rng.normal(size=n) * 2.0
    likelihood = np.exp(-0.5 * (x[:, None] - np.array([-1.0, 0.0, 1.0])[None]) ** 2)  # (n, K)

    def posterior(prior):
        joint = likelihood * prior[None]
        return joint / joint.sum(1, keepdims=True)

    site_probs = [posterior(c / c.sum()) for c in counts]
    pooled = posterior(counts.sum(0) / counts.sum())
    return counts, site_probs, pooled


def _soften(p, temperature):
    logits = np.log(np.clip(p, 1e-300, None)) / temperature
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_label_shift_posterior_is_the_pooled_posterior_and_support_weighting_is_not():
    from fedkr.server.relabel import label_shift_posterior, support_from_counts

    counts, site_probs, pooled = _label_shift_case()
    temperature = 4.0
    replies = [_soften(p, temperature).astype(np.float32) for p in site_probs]
    combined = label_shift_posterior(replies, counts.astype(int), temperature)
    assert combined.dtype == np.float32 and combined.shape == pooled.shape
    assert np.abs(combined - _soften(pooled, temperature)).max() < 1e-4
    support_rule = combine_labels(replies, support_from_counts(counts))
    assert np.abs(support_rule - _soften(pooled, temperature)).max() > 0.02


def test_label_shift_posterior_of_one_site_is_its_own_label_and_a_class_nobody_holds_gets_nothing():
    from fedkr.server.relabel import label_shift_posterior

    rng = np.random.default_rng(1)
    own = rng.dirichlet(np.ones(3), size=5).astype(np.float32)
    assert np.allclose(label_shift_posterior([own], np.array([[3, 1, 2]]), 2.0), own, atol=1e-5)
    held_two = label_shift_posterior([own, own], np.array([[4, 0, 0], [0, 9, 0]]), 2.0)
    assert np.all(held_two[:, 2] == 0) and np.allclose(held_two.sum(1), 1.0, atol=1e-6)
    assert np.allclose(held_two[:, :2], own[:, :2] / own[:, :2].sum(1, keepdims=True), atol=1e-5)


def test_label_shift_posterior_refuses_bad_input():
    from fedkr.server.relabel import label_shift_posterior

    probs = [np.full((2, 3), 1 / 3, np.float32)]
    cases = (([], np.ones((1, 3)), "no site"), (probs, np.ones((2, 3)), "member counts are"),
             (probs, -np.ones((1, 3)), "must be >= 0"), (probs, np.ones((1, 3)), "temperature"),
             (probs, np.zeros((1, 3)), "no site holds"))
    for args, counts, match in cases:
        with pytest.raises(ValueError, match=match):
            label_shift_posterior(args, counts, 0.0 if match == "temperature" else 1.0)


def test_label_shift_posterior_stays_exact_for_sites_that_share_no_class():
    """Nearly reducible: confident teachers at two sites with no class in common. The stationary vector of
    G, computed without subtraction, still follows the tiny cross terms; with none, site size decides."""
    from fedkr.server.relabel import label_shift_posterior

    site_a = np.array([[1 - 1e-12, 1e-12]])
    site_b = np.array([[1e-10, 1 - 1e-10]])
    combined = label_shift_posterior([site_a, site_b], np.array([[5, 0], [0, 5]]), 1.0)
    assert combined[0, 0] == pytest.approx(100 / 101, rel=1e-4)  # a_A / a_B = 1e-10 / 1e-12
    blind = label_shift_posterior([np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])], np.array([[30, 0], [0, 10]]), 1.0)
    assert blind[0] == pytest.approx([0.75, 0.25], abs=1e-6)


def test_combine_applies_the_named_rule_and_refuses_an_unknown_one():
    rng = np.random.default_rng(0)
    probs = [rng.dirichlet(np.ones(3), size=5).astype(np.float32) for _ in range(2)]
    counts = np.array([[10, 0, 3], [2, 8, 3]])
    assert np.array_equal(combine(probs, counts, "support", 2.0), combine_labels(probs, support_from_counts(counts)))
    assert np.array_equal(combine(probs, counts, "label-shift", 2.0), label_shift_posterior(probs, counts, 2.0))
    with pytest.raises(ValueError, match="relabel-combine must be one of support, label-shift"):
        combine(probs, counts, "mean", 2.0)
