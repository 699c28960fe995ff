import numpy as np
import pytest

from fedkr.client.synthesis_filter import MemberManifold, filter_samples


def setup(seed=0):
    rng = np.random.default_rng(seed)
    members = rng.normal(0, 1, (200, 4))
    requested = np.repeat([0, 1], 20)
    probs = np.zeros((40, 2), np.float32)
    probs[np.arange(40), requested] = 0.9
    probs[np.arange(40), 1 - requested] = 0.1
    features = rng.normal(0, 1, (40, 4))
    return members, requested, probs, features


def test_nothing_fails_when_all_agree_and_lie_in_distribution():
    members, requested, probs, features = setup()
    out = filter_samples(requested, probs, features * 0.1, (10, 10), MemberManifold(members), seed=0)
    assert out.rejection_rate == 0.0 and out.teacher_agreement == 1.0
    assert out.keep.tolist() == list(range(10)) + list(range(20, 30)), "kept in the order drawn"
    assert 0.0 <= out.recall <= 1.0 and out.precision == 1.0


def test_disagreeing_and_far_samples_are_replaced_by_passing_ones():
    members, requested, probs, features = setup()
    features = features * 0.1
    probs[:5] = probs[:5, ::-1]  # the teacher sees class 1 in the first five class-0 samples
    features[5:8] += 100.0  # three samples far outside the members' manifold
    out = filter_samples(requested, probs, features, (10, 10), MemberManifold(members), seed=0)
    assert out.rejection_rate == pytest.approx(8 / 40)
    assert out.keep[:10].tolist() == list(range(8, 18))
    assert out.teacher_agreement == 1.0
    assert out.precision == pytest.approx(37 / 40), "precision is the generator's: of everything drawn"


def test_shortfall_is_filled_with_the_most_probable_rejects():
    members, requested, probs, features = setup()
    probs[:20] = probs[:20, ::-1]
    probs[3, 0] = 0.45  # the reject the teacher finds most like class 0
    out = filter_samples(requested, probs, features * 0.1, (2, 1), MemberManifold(members), seed=0)
    assert len(out.keep) == 3 and 3 in out.keep[:2].tolist()
    assert out.teacher_agreement == pytest.approx(1 / 3)


def test_without_manifold_only_alignment_is_checked():
    _, requested, probs, features = setup()
    out = filter_samples(requested, probs, features + 100.0, (20, 20), None, seed=0)
    assert out.rejection_rate == 0.0 and np.isnan(out.precision)


def test_recall_is_against_the_requested_classes_only():
    rng = np.random.default_rng(1)
    members = np.concatenate([rng.normal(0, 0.1, (100, 2)), rng.normal(10, 0.1, (100, 2))])
    labels = np.repeat([0, 1], 100)
    requested = np.zeros(40, dtype=np.int64)
    probs = np.tile(np.array([[0.9, 0.1]], np.float32), (40, 1))
    synthetic = rng.normal(0, 0.1, (40, 2))  # covers class 0's members only
    with_labels = filter_samples(requested, probs, synthetic, (40, 0), MemberManifold(members, labels), seed=0)
    without = filter_samples(requested, probs, synthetic, (40, 0), MemberManifold(members), seed=0)
    assert with_labels.recall > 0.8 and without.recall < 0.7


def test_too_few_members_turn_the_precision_check_off():
    assert MemberManifold.of(np.zeros((3, 2)), np.zeros(3)) is None
    assert MemberManifold.of(np.random.default_rng(0).normal(size=(4, 2)), np.zeros(4)) is not None


def test_summary_leaves_out_what_could_not_be_measured():
    _, requested, probs, features = setup()
    out = filter_samples(requested, probs, features, (20, 20), None, seed=0)
    assert set(out.summary()) == {"teacher_agreement", "rejection_rate"}


def test_too_few_drawn_is_an_error():
    members, requested, probs, features = setup()
    with pytest.raises(ValueError, match="drawn"):
        filter_samples(requested, probs, features, (30, 0), MemberManifold(members), seed=0)
