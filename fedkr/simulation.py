"""Run the whole pipeline on one machine through Flower's simulation engine (Ray)."""

from __future__ import annotations

import logging
import math
import os

from fedkr.client.site_data import MIN_HOLDOUT, MIN_MEMBERS, site_members_holdout
from fedkr.shared.config import RunConfig
from fedkr.server.coordinator import Progress, RunError, RunOutcome
from fedkr.shared.data import DataError, DataSplits, load_dataset
from fedkr.shared.partition import PartitionSpec, partition

log = logging.getLogger(__name__)


def site_sizes(splits: DataSplits, config: RunConfig) -> list[tuple[int, int]]:
    """(members, holdout) of each of `config.sites` simulated sites, split as each site splits its part.

    The same partition and the same stratified members/holdout split as `load_site_data`; their
    sizes depend on each part's class counts and the holdout fraction, not on the seed.
    Raises `DataError` when the data cannot be partitioned over that many sites.
    """
    try:
        parts = partition(splits.train.labels, config.sites, PartitionSpec.parse(config.partition), config.seed)
    except ValueError as exc:
        raise DataError(f"{config.data}: {exc}") from None
    sizes = []
    for index, part in enumerate(parts):
        members, holdout = site_members_holdout(splits.train.labels[part], config.holdout_fraction, config.seed, index)
        sizes.append((int(members.size), int(holdout.size)))
    return sizes


def check_partition(splits: DataSplits, config: RunConfig) -> list[int]:
    """The sites' sizes (images each), once every site would hold what a site needs; before any training.

    A site refuses to start below `MIN_MEMBERS` members or `MIN_HOLDOUT` holdout images
    (`client/site_data.py`); this checks every simulated site against the same minimums, on the
    same split, so that a run starts only when every site can fit.
    Raises `DataError` naming each site that would fall short, and what to change.
    """
    sizes = site_sizes(splits, config)
    short = [(i, m, h) for i, (m, h) in enumerate(sizes) if m < MIN_MEMBERS or h < MIN_HOLDOUT]
    if short:
        fraction = config.holdout_fraction
        need = math.ceil(max(MIN_HOLDOUT / fraction, MIN_MEMBERS / (1 - fraction)))
        most = len(splits.train) // need
        shown = ", ".join(f"site-{i} ({m} members, {h} holdout)" for i, m, h in short[:6])
        more = f" and {len(short) - 6} more" if len(short) > 6 else ""
        raise DataError(
            f"{config.data}: {len(short)} of {config.sites} sites would hold too few images: {shown}{more}; "
            f"a site needs at least {MIN_MEMBERS} members and {MIN_HOLDOUT} holdout images (about {need} images "
            f"at holdout fraction {fraction:g}); {len(splits.train)} training images allow at most about {most} "
            f"such sites: use fewer sites{'' if config.partition == 'iid' else ', an iid partition'} "
            f"or a larger holdout fraction")
    return [m + h for m, h in sizes]


def run_flower_simulation(
    config: RunConfig,
    progress: Progress | None = None,
    verbose: bool = False,
    splits: DataSplits | None = None,
    node_config: dict[str, object] | None = None,
) -> RunOutcome:
    """Run `config` with `config.sites` simulated sites, each in Flower's simulation engine.

    `splits`, when the caller has loaded and checked them already, saves loading them twice.
    `node_config` is added to every simulated site's node config (`client/node_config.py`): a
    site's own `device` or its resource caps, as a SuperNode's `--node-config` gives them.
    Raises `DataError` when the data cannot be spread over the sites, `RunError` when the run stops.
    """
    from flwr.simulation import run_simulation

    from fedkr.client.flower_app import build_client_app
    from fedkr.server.flower_app import build_server_app

    splits = splits if splits is not None else load_dataset(config.data, seed=config.seed, image_size=config.image_size)
    num_sites = config.sites
    sizes = check_partition(splits, config)
    log.info("%s: %d training images over %d sites %s (%s)", splits.name, len(splits.train), num_sites, sizes, config.partition)
    cpus = os.cpu_count() or 1
    concurrency = max(1, min(num_sites, cpus))
    site_threads = config.site_threads or max(1, cpus // concurrency)
    outcomes: list[RunOutcome | Exception] = []
    server_app = build_server_app(config, splits.test, expected_sites=num_sites, progress=progress, outcomes=outcomes)
    # Flower's Python simulation API passes no run config: the sites get the whole effective one
    client_app = build_client_app(overrides={**config.to_flat(), "site-threads": site_threads}, node_overrides=node_config)
    # Ray hides GPUs from actors that reserve none unless told not to; a site's `device` decides instead
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    backend_config = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": concurrency, "num_gpus": 0, "log_to_driver": True, "logging_level": "ERROR"},
    }
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=num_sites,
                   backend_config=backend_config, verbose_logging=verbose)
    if not outcomes:
        raise RunError("the simulation ended before the coordinator finished; see the log above")
    if isinstance(outcomes[0], Exception):
        raise RunError(str(outcomes[0])) from outcomes[0]
    return outcomes[0]
