"""Run the whole pipeline on one machine through Flower's simulation engine (Ray)."""

from __future__ import annotations

import logging
import os

from fedkr.shared.config import RunConfig
from fedkr.server.coordinator import Progress, RunError, RunOutcome
from fedkr.shared.data import DataError, DataSplits, load_dataset
from fedkr.shared.partition import PartitionSpec, partition

log = logging.getLogger(__name__)

MIN_IMAGES_PER_SITE = 20


def check_partition(splits: DataSplits, config: RunConfig) -> list[int]:
    """Fail early, with a clear message, if the data cannot be spread over `config.sites` sites; the sites' sizes."""
    num_sites = config.sites
    try:
        parts = partition(splits.train.labels, num_sites, PartitionSpec.parse(config.partition), config.seed)
    except ValueError as exc:
        raise DataError(f"{config.data}: {exc}") from None
    sizes = [int(p.size) for p in parts]
    if min(sizes) < MIN_IMAGES_PER_SITE:
        raise DataError(f"{config.data}: a site would hold only {min(sizes)} images; use fewer sites")
    return sizes


def run_flower_simulation(
    config: RunConfig,
    progress: Progress | None = None,
    verbose: bool = False,
    splits: DataSplits | None = None,
) -> RunOutcome:
    """Run `config` with `config.sites` simulated sites, each in Flower's simulation engine.

    `splits`, when the caller has loaded and checked them already, saves loading them twice.
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
    client_app = build_client_app(overrides={**config.to_flat(), "site-threads": site_threads})
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
