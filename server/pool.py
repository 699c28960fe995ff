"""The coordinator's pool of synthetic shards; a shard is validated before it changes anything."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from fedkr.shared.shard import Shard, ShardSpec, validate_shard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolArrays:
    images: np.ndarray
    soft_labels: np.ndarray
    hard_labels: np.ndarray
    site_ids: np.ndarray


class Pool:
    def __init__(self, spec: ShardSpec) -> None:
        self.spec = spec
        self._shards: list[Shard] = []
        self.rejections: list[dict[str, object]] = []

    def add(self, shard: Shard, expected_count: int | None = None) -> bool:
        """Add a valid shard and return True; log and record the reason and return False otherwise."""
        try:
            validate_shard(shard, self.spec, expected_count)
        except ValueError as exc:
            site = getattr(shard, "site_id", "?")
            log.warning("rejected shard from %s: %s", site, exc)
            self.rejections.append({"site": str(site), "round": getattr(shard, "round", -1), "reason": str(exc)})
            return False
        self._shards.append(shard)
        return True

    def drop_site(self, site_id: str) -> int:
        """Remove every shard of a site that left the run; return how many images went."""
        kept = [s for s in self._shards if s.site_id != site_id]
        removed = sum(len(s) for s in self._shards if s.site_id == site_id)
        self._shards = kept
        return removed

    def __len__(self) -> int:
        return sum(len(s) for s in self._shards)

    def size_by_round(self) -> dict[int, int]:
        sizes: dict[int, int] = {}
        for shard in self._shards:
            sizes[shard.round] = sizes.get(shard.round, 0) + len(shard)
        return dict(sorted(sizes.items()))

    def arrays(self) -> PoolArrays:
        if not self._shards:
            raise ValueError("the pool is empty: no site delivered a valid shard")
        return PoolArrays(
            images=np.concatenate([s.images for s in self._shards]),
            soft_labels=np.concatenate([s.soft_labels for s in self._shards]),
            hard_labels=np.concatenate([s.hard_labels for s in self._shards]),
            site_ids=np.concatenate([np.full(len(s), s.site_id, dtype=object) for s in self._shards]),
        )
