"""A finished run's folder, as the benchmarks read it: its metrics and settings, released or refused.

A run folder is `<out>/<run-id>/`, written by `fedkr simulate`, `fedkr demo` or the coordinator. A
released run keeps its metrics in `release/metrics.json`; a refused one in `refusal.json` (under
"metrics"). The sites' state is in `<out>/sites/`, beside the run folders.
"""

from __future__ import annotations

import json
from pathlib import Path

from fedkr.client.site_data import SiteData, SiteDataSpec, load_site_data
from fedkr.shared.config import RunConfig


def run_metrics(run_dir: Path) -> dict:
    """The metrics of the run in `run_dir` (its folder, or its `release/` folder), released or refused.

    Raises FileNotFoundError when `run_dir` holds neither `release/metrics.json` nor `refusal.json`.
    """
    run_dir = run_folder(run_dir)
    released, refusal = run_dir / "release" / "metrics.json", run_dir / "refusal.json"
    if released.is_file():
        return json.loads(released.read_text())
    if refusal.is_file():
        return json.loads(refusal.read_text())["metrics"]
    raise FileNotFoundError(f"{run_dir}: no release/metrics.json or refusal.json (not a finished run)")


def run_folder(path: Path) -> Path:
    """The run folder `path` names: itself, or its parent when `path` is the run's `release/` folder."""
    path = Path(path).resolve()
    return path.parent if path.name == "release" else path


def sites_folder(run_dir: Path) -> Path:
    """Where the sites of the run in `run_dir` keep their state: `sites/` beside the run folders."""
    return run_folder(run_dir).parent / "sites"


def run_config(metrics: dict) -> RunConfig:
    """The settings the run ran with, from its metrics' "config"."""
    return RunConfig.from_flat({k.replace("_", "-"): v for k, v in metrics["config"].items()})


def site_data(config: RunConfig, index: int) -> SiteData:
    """Site `index`'s members and holdout as the run with `config` split them."""
    return load_site_data(SiteDataSpec(config.data, index, config.sites, config.partition, config.seed,
                                       config.holdout_fraction, config.image_size))
