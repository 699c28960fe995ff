"""The site's shard check (`client/shard_check.py`): a shard of near-copies of the members is refused
before it leaves, a shard of other patients' images is not, and the limit comes from the node config."""

from __future__ import annotations

import numpy as np
import pytest

from fedkr.client.shard_check import DEFAULT_MAX_AUC, SHARD_CHECK_KEY, ShardCheckRecord, check_shard, check_shard_limit
from helpers import near_copies


@pytest.fixture(scope="module")
def digits_sites():
    from fedkr.client.site_data import SiteDataSpec, load_site_data

    return [load_site_data(SiteDataSpec("digits", i, 3, "iid", 0, 0.2)) for i in range(2)]


def _check(images: np.ndarray, members: np.ndarray, holdout: np.ndarray, **kwargs):
    """The check of a run's first shard, `images`."""
    return check_shard(ShardCheckRecord.nothing_sent(members, holdout).adding(images, members, holdout), **kwargs)


def test_a_shard_of_near_copies_is_refused_and_other_patients_images_pass(digits_sites):
    site0, site1 = digits_sites
    members, holdout = site0.members.images, site0.holdout.images
    leaky = _check(near_copies(members, 300, 0), members, holdout)
    assert leaky.leaks and leaky.auc_ci[0] > DEFAULT_MAX_AUC, leaky
    assert "pixel distance test on 300 shard images" in leaky.describe() and f"limit {DEFAULT_MAX_AUC:g}" in leaky.describe()
    clean = _check(site1.members.images[:300], members, holdout)
    assert not clean.leaks and clean.auc < DEFAULT_MAX_AUC, clean
    # half the shard copies members: still caught; a limit of 1 turns the check off
    mixed = np.concatenate([near_copies(members, 150, 1), site1.members.images[:150]])
    assert _check(mixed, members, holdout).leaks
    assert not _check(near_copies(members, 300, 0), members, holdout, max_auc=1.0).leaks


def test_the_record_of_a_run_tests_every_shard_sent_as_one_and_survives_a_restart(digits_sites, tmp_path):
    """Shards added one at a time give the distances of all of them at once; the record saved is the record loaded."""
    site0, site1 = digits_sites
    members, holdout = site0.members.images, site0.holdout.images
    first, second = site1.members.images[:100], near_copies(members, 300, 2)
    record = ShardCheckRecord.nothing_sent(members, holdout).adding(first, members, holdout)
    record = record.adding(second, members, holdout)
    together = ShardCheckRecord.nothing_sent(members, holdout).adding(np.concatenate([first, second]), members, holdout)
    np.testing.assert_allclose(record.members, together.members)
    np.testing.assert_allclose(record.holdout, together.holdout)
    assert record.num_images == 400 and check_shard(record) == check_shard(together)
    # the first shard alone passed; with the second the run's shards reproduce members
    assert not _check(first, members, holdout).leaks and check_shard(record).leaks
    path = tmp_path / "record.npz"
    record.save(path)
    loaded = ShardCheckRecord.load(path, members, holdout)
    assert loaded.num_images == 400 and (loaded.members == record.members).all() and (loaded.holdout == record.holdout).all()
    # the distances belong to these images: another split of the same sizes is refused
    swapped = np.concatenate([holdout[:1], members[1:]]), np.concatenate([members[:1], holdout[1:]])
    with pytest.raises(ValueError, match="other member and held-out images"):
        ShardCheckRecord.load(path, *swapped)
    with pytest.raises(ValueError, match="other member and held-out images"):
        record.adding(first, *swapped)
    with pytest.raises(ValueError, match="none were"):
        check_shard(ShardCheckRecord.nothing_sent(members, holdout))


@pytest.mark.parametrize("damage", ["empty", "truncated", "npy", "nan", "no-digest"])
def test_a_damaged_record_is_refused_with_a_value_error(digits_sites, tmp_path, damage):
    """Whatever happened to the file, `load` says it is no record (ValueError), so the site refuses to send."""
    members, holdout = digits_sites[0].members.images, digits_sites[0].holdout.images
    record = ShardCheckRecord.nothing_sent(members, holdout).adding(digits_sites[1].members.images[:50], members, holdout)
    path = tmp_path / "record.npz"
    record.save(path)
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "npy":
        with path.open("wb") as handle:
            np.save(handle, record.members)
    else:
        fields = {"members": record.members, "holdout": record.holdout, "site_digest": np.str_(record.site_digest),
                  "num_images": np.int64(50), "num_probe": np.int64(0)}
        if damage == "nan":
            fields["members"] = np.full_like(record.members, np.nan)
        else:
            del fields["site_digest"]
        with path.open("wb") as handle:
            np.savez(handle, **fields)
    with pytest.raises(ValueError, match="record"):
        ShardCheckRecord.load(path, members, holdout)


@pytest.mark.parametrize("bad, message", [
    (dict(max_auc=0.5), r"\(0.5, 1\]"),
    (dict(max_auc=1.5), r"\(0.5, 1\]"),
    (dict(images=np.zeros((0, 8, 8, 1), np.uint8)), "needs shard"),
    (dict(images=np.zeros((3, 9, 9, 1), np.uint8)), "differ in shape"),
    (dict(images=np.zeros((3, 8, 8, 1), np.float32)), "uint8"),
])
def test_the_shard_check_refuses_unusable_input(digits_sites, bad, message):
    site = digits_sites[0]
    args = {"images": digits_sites[1].members.images[:20], "members": site.members.images, "holdout": site.holdout.images, **bad}
    with pytest.raises(ValueError, match=message):
        _check(**args)


@pytest.mark.parametrize("value", [0.5, 1.01, "x", None, True, np.bool_(True), float("nan")])
def test_the_limit_is_a_number_in_its_range(value):
    with pytest.raises(ValueError, match=r"\(0.5, 1\]"):
        check_shard_limit(value)


def test_a_limit_in_range_is_read_as_a_number():
    assert check_shard_limit("0.7") == 0.7 and check_shard_limit(1) == 1.0 and check_shard_limit(np.float32(0.75)) == 0.75


@pytest.mark.parametrize("value", ["0.4", "x", "1.01", True])
def test_a_bad_limit_in_the_node_config_is_one_line_naming_the_key(value):
    from fedkr.client.node_config import SiteSettings
    from fedkr.shared.config import ConfigError

    node = {"partition-id": 0, "num-partitions": 3, SHARD_CHECK_KEY: value}
    with pytest.raises(ConfigError, match=f"'{SHARD_CHECK_KEY}' must be a number in"):
        SiteSettings.parse({"data": "digits"}, node, 1)
