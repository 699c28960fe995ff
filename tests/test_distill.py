import numpy as np
import pytest

from fedkr.server.distill import distill, distill_student_and_release, kcenter_greedy, whole_pool_ipc


def make_pool(per_class=(30, 30, 0, 5), seed=0):
    rng = np.random.default_rng(seed)
    hard = np.repeat(np.arange(len(per_class)), per_class).astype(np.int64)
    soft = rng.dirichlet(np.ones(len(per_class)), size=hard.size).astype(np.float32)
    images = rng.integers(0, 256, (hard.size, 8, 8, 1), dtype=np.uint8)
    feats = rng.normal(size=(hard.size, 4))
    return images, soft, hard, feats


def test_ipc_respected_and_every_present_class_kept():
    images, soft, hard, feats = make_pool()
    out = distill(images, soft, hard, feats, ("a", "b", "c", "d"), ipc=10, drop_fraction=0.3)
    assert list(out.per_class()) == [10, 10, 0, 5]  # class c absent from the pool; d has only 5
    assert (out.hard_labels == hard[out.source_index]).all()
    assert (out.soft_labels == soft[out.source_index]).all(), "soft labels are kept"
    assert np.unique(out.source_index).size == out.source_index.size


def test_low_confidence_samples_dropped():
    images, soft, hard, feats = make_pool(per_class=(40,))
    conf_soft = np.stack([np.linspace(0.05, 1.0, 40), 1 - np.linspace(0.05, 1.0, 40)], 1).astype(np.float32)
    out = distill(images, conf_soft, hard, feats, ("a", "b"), ipc=10, drop_fraction=0.5)
    assert out.source_index.min() >= 20, "only the most confident half is eligible"


def test_kcenter_spreads_out():
    points = np.r_[np.zeros((50, 2)), np.ones((1, 2)) * 10, -np.ones((1, 2)) * 10]
    picked = kcenter_greedy(points, 3, first=0)
    assert set(picked) == {0, 50, 51}
    assert kcenter_greedy(points, 100).size == points.shape[0]


def test_ipc_must_be_positive():
    images, soft, hard, feats = make_pool()
    with pytest.raises(ValueError):
        distill(images, soft, hard, feats, ("a", "b", "c", "d"), ipc=0, drop_fraction=0.0)


def test_herding_tracks_the_mean_better_than_random_picks():
    from fedkr.server.distill import herding

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(500, 6)) + rng.exponential(size=(500, 1))  # a skewed cloud
    picked = herding(feats, 10)
    assert len(set(picked.tolist())) == 10
    herd_gap = np.linalg.norm(feats[picked].mean(0) - feats.mean(0))
    random_gaps = [np.linalg.norm(feats[rng.choice(500, 10, replace=False)].mean(0) - feats.mean(0)) for _ in range(200)]
    assert herd_gap < np.percentile(random_gaps, 1)
    assert np.array_equal(herding(feats[:5], 10), np.arange(5))


def test_whole_pool_ipc_takes_every_image_up_to_what_a_site_relabels():
    labels = np.repeat(np.arange(3), [50, 120, 7])
    assert whole_pool_ipc(labels, 3, ipc=10) == 120  # the largest class: every image of every class
    assert whole_pool_ipc(labels, 3, ipc=200) == 200  # never below ipc
    assert whole_pool_ipc(labels, 3, ipc=10, limit=150) == 93  # 50 + 93 + 7: only the largest class is cut
    assert whole_pool_ipc(labels, 3, ipc=10, limit=60) == 26  # 26 + 26 + 7
    assert whole_pool_ipc(labels, 3, ipc=10, limit=30_000) == 120
    assert whole_pool_ipc(labels, 3, ipc=10, limit=20) == 10  # ipc wins; relabelling then refuses the run
    assert whole_pool_ipc(np.zeros(0, np.int64), 3, ipc=10) == 10
    for bad, reason in (((labels, 3, 0), "at least 1"), ((labels, 2, 10), r"in \[0, 2\)"), ((labels - 1, 3, 10), r"in \[0, 3\)")):
        with pytest.raises(ValueError, match=reason):
            whole_pool_ipc(*bad)


def test_distill_at_the_whole_pool_count_keeps_every_image():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), [50, 120, 7])
    soft = rng.dirichlet(np.ones(3), len(labels)).astype(np.float32)
    images = rng.integers(0, 256, (len(labels), 4, 4, 1), dtype=np.uint8)
    feats = rng.normal(size=(len(labels), 6)).astype(np.float32)
    kept = distill(images, soft, labels, feats, ("a", "b", "c"), whole_pool_ipc(labels, 3, ipc=5), drop_fraction=0.3)
    assert sorted(kept.source_index.tolist()) == list(range(len(labels)))


def test_whole_pool_ipc_fills_the_limit_and_never_passes_it():
    rng = np.random.default_rng(1)
    for _ in range(200):
        num_classes = int(rng.integers(1, 12))
        counts = rng.integers(0, 400, num_classes) * (rng.random(num_classes) < 0.8)
        labels = np.repeat(np.arange(num_classes), counts)
        limit = int(rng.integers(1, 2_000))
        per_class = whole_pool_ipc(labels, num_classes, ipc=1, limit=limit)
        total = int(np.minimum(counts, per_class).sum())
        assert total <= limit or per_class == 1
        assert per_class >= counts.max(initial=0) or int(np.minimum(counts, per_class + 1).sum()) > limit


def test_the_release_is_chosen_from_the_confident_part_of_the_whole_pool():
    images, soft, hard, feats = make_pool(per_class=(60, 30, 0, 5))
    names, ipc, drop = ("a", "b", "c", "d"), 8, 0.5
    student_set, rows = distill_student_and_release(images, soft, hard, feats, names, ipc,
                                                    whole_pool_ipc(hard, 4, ipc), drop)
    assert sorted(student_set.source_index.tolist()) == list(range(len(hard)))  # the student sees every image
    released = student_set.source_index[rows]
    assert np.bincount(hard[released], minlength=4).tolist() == [8, 8, 0, 5]
    for cls, count in ((0, 60), (1, 30)):  # as `distill` at ipc would: among the more confident half
        members = np.flatnonzero(hard == cls)
        confident = members[np.argsort(-soft[members, cls], kind="stable")[:count // 2]]
        assert set(released[hard[released] == cls]) <= set(confident.tolist())
    same_set, every_row = distill_student_and_release(images, soft, hard, feats, names, ipc, ipc, drop)
    np.testing.assert_array_equal(every_row, np.arange(len(same_set)))
    assert same_set.per_class().tolist() == [8, 8, 0, 5]
