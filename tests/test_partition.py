import numpy as np
import pytest

from fedkr.shared.partition import PartitionSpec, members_holdout_split, partition_dirichlet, partition_iid

LABELS = np.repeat(np.arange(8), 100)


def _check_exact_cover(parts, n):
    joined = np.concatenate(parts)
    assert joined.size == n and np.unique(joined).size == n


def test_iid_is_a_deterministic_exact_cover():
    parts = partition_iid(LABELS.size, 4, seed=1)
    _check_exact_cover(parts, LABELS.size)
    assert [p.size for p in parts] == [200] * 4
    assert all((a == b).all() for a, b in zip(parts, partition_iid(LABELS.size, 4, seed=1)))
    assert not all((a == b).all() for a, b in zip(parts, partition_iid(LABELS.size, 4, seed=2)))


@pytest.mark.parametrize("alpha", [0.1, 0.5, 100.0])
def test_dirichlet_covers_and_no_site_empty(alpha):
    parts = partition_dirichlet(LABELS, 5, alpha, seed=3)
    _check_exact_cover(parts, LABELS.size)
    assert min(p.size for p in parts) >= 10
    again = partition_dirichlet(LABELS, 5, alpha, seed=3)
    assert all((a == b).all() for a, b in zip(parts, again))


def test_dirichlet_skew_grows_as_alpha_shrinks():
    def skew(alpha):
        parts = partition_dirichlet(LABELS, 4, alpha, seed=0)
        shares = np.array([np.bincount(LABELS[p], minlength=8) / p.size for p in parts])
        return np.abs(shares - 1 / 8).mean()

    assert skew(0.1) > skew(1.0) > skew(1000.0)


def test_partition_spec_parsing():
    assert PartitionSpec.parse("iid").kind == "iid"
    assert PartitionSpec.parse("dirichlet:0.5").alpha == 0.5
    for bad in ("dirichlet:x", "dirichlet:-1", "random"):
        with pytest.raises(ValueError):
            PartitionSpec.parse(bad)


def test_too_many_sites():
    with pytest.raises(ValueError):
        partition_iid(3, 5, 0)


def test_members_holdout_split():
    members, holdout = members_holdout_split(LABELS, 0.2, seed=0)
    assert np.intersect1d(members, holdout).size == 0
    assert members.size + holdout.size == LABELS.size
    assert holdout.size == 160
    assert (np.bincount(LABELS[holdout]) == 20).all(), "stratified"
    again_m, again_h = members_holdout_split(LABELS, 0.2, seed=0)
    assert (again_h == holdout).all() and (again_m == members).all()
