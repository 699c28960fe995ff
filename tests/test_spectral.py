import numpy as np
import pytest

from fedkr.server.distill import SELECTIONS, distill
from fedkr.server.spectral import characteristic, phase_weight_for, random_frequencies, spectral_gap, spectral_select


def two_modes(n_big=300, n_small=100, seed=0):
    """A pool with a large and a small cluster, 3:1."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0, 0.3, (n_big, 2)), rng.normal(4, 0.3, (n_small, 2))])


def test_gap_splits_exactly_into_amplitude_and_phase():
    x = two_modes()
    freqs = random_frequencies(x, 64, seed=1)
    a, b = characteristic(x[:50], freqs), characteristic(x, freqs)
    assert spectral_gap(a, b, 1.0) == pytest.approx(float(np.mean(np.abs(a - b) ** 2)), rel=1e-9)


def test_selection_keeps_the_pool_proportions_where_kcenter_and_random_may_not():
    x = two_modes()
    freqs = random_frequencies(x, 128, seed=0)
    picked = spectral_select(x, 20, freqs)
    assert np.unique(picked).size == 20
    share_small = float((picked >= 300).mean())
    assert 0.15 <= share_small <= 0.35, share_small  # the pool holds 25% in the small mode
    target = characteristic(x, freqs)
    gap_spectral = spectral_gap(characteristic(x[picked], freqs), target)
    rng = np.random.default_rng(0)
    random_gaps = [spectral_gap(characteristic(x[rng.choice(400, 20, replace=False)], freqs), target) for _ in range(50)]
    assert gap_spectral < np.percentile(random_gaps, 5), "greedy matching beats 95% of random subsets"


def test_weights_shift_the_target():
    x = two_modes()
    freqs = random_frequencies(x, 128, seed=0)
    weights = np.where(np.arange(400) >= 300, 9.0, 1.0)  # the small mode now carries 3/4 of the mass
    picked = spectral_select(x, 20, freqs, weights=weights)
    assert float((picked >= 300).mean()) >= 0.6


def test_phase_weight_grows_as_support_falls():
    assert phase_weight_for(1.0, 1.0) == 1.0
    assert phase_weight_for(0.25, 1.0) == pytest.approx(1.75)
    assert phase_weight_for(0.0, 2.0) == 3.0


@pytest.mark.parametrize("selection", SELECTIONS)
def test_every_selection_respects_ipc_and_keeps_soft_labels(selection):
    rng = np.random.default_rng(0)
    hard = np.repeat(np.arange(3), (40, 40, 6)).astype(np.int64)
    soft = rng.dirichlet(np.ones(3), size=hard.size).astype(np.float32)
    images = rng.integers(0, 256, (hard.size, 8, 8, 1), dtype=np.uint8)
    feats = rng.normal(size=(hard.size, 5))
    out = distill(images, soft, hard, feats, ("a", "b", "c"), ipc=10, drop_fraction=0.2, selection=selection,
                  class_support=np.array([1.0, 0.5, 0.25]), sample_weights=np.ones(hard.size), seed=3)
    assert list(out.per_class()) == [10, 10, 6]
    assert np.unique(out.source_index).size == len(out)
    assert (out.soft_labels == soft[out.source_index]).all()
    again = distill(images, soft, hard, feats, ("a", "b", "c"), ipc=10, drop_fraction=0.2, selection=selection, seed=3)
    if selection != "spectral":  # spectral differs only through the weights given above
        assert (again.source_index == out.source_index).all(), "deterministic for a seed"


def test_unknown_selection_is_refused():
    with pytest.raises(ValueError, match="selection must be one of"):
        distill(np.zeros((2, 8, 8, 1), np.uint8), np.ones((2, 1), np.float32), np.zeros(2, np.int64),
                np.zeros((2, 2)), ("a",), ipc=1, drop_fraction=0.0, selection="best")
