"""The site's shard check (`client/shard_check.py`): a shard of near-copies of the members is refused
before it leaves, a shard of other patients' images is not, and the limit comes from the node config."""

from __future__ import annotations

import numpy as np
import pytest

from fedkr.client.shard_check import DEFAULT_MAX_AUC, SHARD_CHECK_KEY, check_shard


@pytest.fixture(scope="module")
def digits_sites():
    from fedkr.client.site_data import SiteDataSpec, load_site_data

    return [load_site_data(SiteDataSpec("digits", i, 3, "iid", 0, 0.2)) for i in range(2)]


def _near_copies(images: np.ndarray, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    copies = images[rng.integers(0, len(images), count)].astype(np.int16)
    return np.clip(copies + rng.integers(-3, 4, copies.shape), 0, 255).astype(np.uint8)


def test_a_shard_of_near_copies_is_refused_and_other_patients_images_pass(digits_sites):
    site0, site1 = digits_sites
    members, holdout = site0.members.images, site0.holdout.images
    leaky = check_shard(_near_copies(members, 300, 0), members, holdout)
    assert leaky.leaks and leaky.auc_ci[0] > DEFAULT_MAX_AUC, leaky
    assert "pixel distance test on 300 shard images" in leaky.describe() and f"limit {DEFAULT_MAX_AUC:g}" in leaky.describe()
    clean = check_shard(site1.members.images[:300], members, holdout)
    assert not clean.leaks and clean.auc < DEFAULT_MAX_AUC, clean
    # half the shard copies members: still caught; a limit of 1 turns the check off
    mixed = np.concatenate([_near_copies(members, 150, 1), site1.members.images[:150]])
    assert check_shard(mixed, members, holdout).leaks
    assert not check_shard(_near_copies(members, 300, 0), members, holdout, max_auc=1.0).leaks


@pytest.mark.parametrize("bad, message", [
    (dict(max_auc=0.5), r"\(0.5, 1\]"),
    (dict(max_auc=1.5), r"\(0.5, 1\]"),
    (dict(images=np.zeros((0, 8, 8, 1), np.uint8)), "needs shard"),
    (dict(images=np.zeros((3, 9, 9, 1), np.uint8)), "differ in shape"),
])
def test_the_shard_check_refuses_unusable_input(digits_sites, bad, message):
    site = digits_sites[0]
    args = {"images": digits_sites[1].members.images[:20], "members": site.members.images, "holdout": site.holdout.images, **bad}
    with pytest.raises(ValueError, match=message):
        check_shard(**args)


@pytest.mark.parametrize("value", ["0.4", "x", "1.01", True])
def test_a_bad_limit_in_the_node_config_is_one_line_naming_the_key(value):
    from fedkr.client.node_config import SiteSettings
    from fedkr.shared.config import ConfigError

    node = {"partition-id": 0, "num-partitions": 3, SHARD_CHECK_KEY: value}
    with pytest.raises(ConfigError, match=f"'{SHARD_CHECK_KEY}' must be a number in"):
        SiteSettings.parse({"data": "digits"}, node, 1)
