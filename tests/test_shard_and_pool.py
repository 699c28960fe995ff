import dataclasses

import numpy as np
import pytest

from fedkr.server.pool import Pool
from fedkr.shared.shard import Shard, ShardError, ShardSpec, validate_shard

from helpers import synthetic_images

SPEC = ShardSpec(image_shape=(8, 8, 1), num_classes=3)


def good_shard(n=6, site="site-0", round=1) -> Shard:
    soft = np.random.default_rng(0).dirichlet(np.ones(3), size=n).astype(np.float32)
    return Shard(site, round, synthetic_images(n), soft, np.arange(n, dtype=np.int64) % 3, n, {"x": 1})


def test_good_shard_validates():
    validate_shard(good_shard(), SPEC, expected_count=6)


@pytest.mark.parametrize(
    "change, reason",
    [
        (dict(images=synthetic_images(6).astype(np.float32)), "uint8"),
        (dict(images=synthetic_images(6, shape=(9, 8, 1))), "images must be"),
        (dict(declared_count=7), "declares 7"),
        (dict(soft_labels=np.full((6, 3), 0.5, np.float32)), "sum to 1"),
        (dict(soft_labels=np.full((6, 3), 1 / 3, np.float64)), "float32"),
        (dict(soft_labels=np.array([[1.5, -0.5, 0.0]] * 6, np.float32)), "negative"),
        (dict(hard_labels=np.full(6, 3, np.int64)), "hard_labels must lie"),
        (dict(hard_labels=np.zeros(5, np.int64)), "hard_labels must be"),
        (dict(site_id=""), "no site id"),
    ],
)
def test_malformed_shards_rejected(change, reason):
    with pytest.raises(ShardError, match=reason):
        validate_shard(dataclasses.replace(good_shard(), **change), SPEC)


def test_size_must_match_request():
    with pytest.raises(ShardError, match="requested"):
        validate_shard(good_shard(), SPEC, expected_count=10)


def test_empty_and_oversized():
    empty = Shard("s", 1, synthetic_images(0), np.zeros((0, 3), np.float32), np.zeros(0, np.int64), 0)
    with pytest.raises(ShardError, match="empty"):
        validate_shard(empty, SPEC)
    with pytest.raises(ShardError, match="limit"):
        validate_shard(good_shard(6), ShardSpec((8, 8, 1), 3, max_images=5))


def test_pool_unchanged_by_malformed_shard(caplog):
    pool = Pool(SPEC)
    assert pool.add(good_shard(), expected_count=6)
    before = pool.arrays()
    bad = dataclasses.replace(good_shard(site="site-1"), soft_labels=np.full((6, 3), 0.9, np.float32))
    assert not pool.add(bad, expected_count=6)
    assert not pool.add("not a shard")  # type: ignore[arg-type]
    after = pool.arrays()
    assert len(pool) == 6
    assert (after.images == before.images).all() and (after.site_ids == "site-0").all()
    assert pool.rejections[0]["site"] == "site-1" and "sum to 1" in pool.rejections[0]["reason"]
    assert "rejected shard from site-1" in caplog.text


def test_pool_sizes_by_round():
    pool = Pool(SPEC)
    pool.add(good_shard(4, round=1))
    pool.add(good_shard(6, site="site-1", round=1))
    pool.add(good_shard(5, round=2))
    assert pool.size_by_round() == {1: 10, 2: 5}
