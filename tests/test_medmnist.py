"""Real MedMNIST files from the team's shared folder; skipped cleanly where it is absent."""

import pytest

from fedkr.client.site_data import SiteDataSpec, load_site_data
from fedkr.shared.data import load_medmnist_npz
from helpers import MEDMNIST

pytestmark = pytest.mark.medmnist


@pytest.mark.skipif(not (MEDMNIST / "breastmnist.npz").is_file(), reason="../shared/data/medmnist not present")
def test_breastmnist_official_file():
    splits = load_medmnist_npz(MEDMNIST / "breastmnist.npz")
    assert (len(splits.train), len(splits.test)) == (546, 156)
    assert splits.train.image_shape == (28, 28, 1)
    assert splits.train.class_names == ("malignant", "normal, benign")


@pytest.mark.skipif(not (MEDMNIST / "bloodmnist.npz").is_file(), reason="../shared/data/medmnist not present")
def test_bloodmnist_sites_under_label_skew():
    splits = load_medmnist_npz(MEDMNIST / "bloodmnist.npz")
    assert (len(splits.train), len(splits.test)) == (11959, 3421)
    assert splits.train.image_shape == (28, 28, 3) and splits.train.num_classes == 8
    sites = [load_site_data(SiteDataSpec(str(MEDMNIST / "bloodmnist.npz"), i, 4, "dirichlet:0.5", 0, 0.2)) for i in range(4)]
    total = sum(len(s.members) + len(s.holdout) for s in sites)
    assert total == 11959
    for s in sites:
        assert 0.15 < len(s.holdout) / (len(s.members) + len(s.holdout)) < 0.25
