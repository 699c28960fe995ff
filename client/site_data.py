"""Which images a site holds, and its fixed members/holdout split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedkr.shared.data import DEFAULT_IMAGE_SIZE, DataError, ImageSet, load_dataset
from fedkr.shared.partition import PartitionSpec, members_holdout_split, partition


#: Below these a site can neither train anything useful nor be audited meaningfully.
MIN_MEMBERS = 16
MIN_HOLDOUT = 10


@dataclass(frozen=True)
class SiteDataSpec:
    """Where a site's images come from.

    In simulation every site reads the same source and keeps its own part (`partition`,
    `site_index` of `num_sites`); in deployment a site reads its own source whole (`partition`
    "none"). Images are brought to the working size `image_size` (pixels) as they load.
    """

    source: str
    site_index: int = 0
    num_sites: int = 1
    partition: str = "none"
    seed: int = 0
    holdout_fraction: float = 0.2
    image_size: int = DEFAULT_IMAGE_SIZE


@dataclass(frozen=True)
class SiteData:
    members: ImageSet
    holdout: ImageSet


def site_members_holdout(
    labels: np.ndarray, holdout_fraction: float, run_seed: int, site_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """A site's stratified members/holdout split of its part: indices into `labels` (int64, (n,)), two int arrays.

    The one place the split's seed is derived from the run's seed and the site's index, so that the
    simulation's pre-check (`fedkr.simulation.site_sizes`) and the site itself split alike.
    Raises ValueError (`members_holdout_split`) for a fraction outside (0, 1).
    """
    return members_holdout_split(labels, holdout_fraction, run_seed + 1000 + site_index)


def load_site_data(spec: SiteDataSpec) -> SiteData:
    if not 0.0 < spec.holdout_fraction < 1.0:
        raise DataError(f"holdout fraction must be in (0, 1), got {spec.holdout_fraction}")
    simulated = spec.partition != "none"
    # A deployed site trains on all of its images; only in simulation is part of a folder held back as the test split.
    splits = load_dataset(spec.source, seed=spec.seed, folder_test_fraction=0.2 if simulated else 0.0,
                          image_size=spec.image_size)
    train = splits.train
    if simulated:
        parts = partition(train.labels, spec.num_sites, PartitionSpec.parse(spec.partition), spec.seed)
        train = train.subset(parts[spec.site_index])
    members_idx, holdout_idx = site_members_holdout(train.labels, spec.holdout_fraction, spec.seed, spec.site_index)
    if members_idx.size < MIN_MEMBERS or holdout_idx.size < MIN_HOLDOUT:
        raise DataError(f"{spec.source}: site {spec.site_index} would have {members_idx.size} member and "
                        f"{holdout_idx.size} holdout images; at least {MIN_MEMBERS} and {MIN_HOLDOUT} are needed")
    return SiteData(members=train.subset(members_idx), holdout=train.subset(holdout_idx))
