"""What a ClientApp needs to build its `Site`, parsed once from Flower's run config and node config.

Where a site's data comes from:
- simulation: the run config's `data`, `partition`, `seed` and `holdout-fraction`, and Flower's
  `partition-id` and `num-partitions` node config; the site's state lives under
  `<out>/sites/site-<partition-id>`.
- deployment: the node config's `data-path` (read whole), `site-name`, `state-dir` and `keys-dir`,
  given with `flower-supernode --node-config 'data-path="/data/blood.npz" keys-dir="/etc/fedkr/site"'`.
  With `keys-dir` the site seals and signs every shard and accepts only sealed audit candidates.

The run config is read through `RunConfig`, so a site and its coordinator share every default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fedkr.shared.config import ConfigError, RunConfig

from .credentials import load_site_credentials
from .site_data import SiteDataSpec

#: Node-config keys a SuperNode may be given (`--node-config`); Flower adds the partition keys in simulation.
NODE_KEYS = ("data-path", "site-name", "state-dir", "keys-dir", "threads", "partition-id", "num-partitions")


@dataclass(frozen=True)
class SiteSettings:
    """A site's identity, data, state folder, keys folder ("" without keys) and torch threads (0: torch's default)."""

    site_id: str
    data: SiteDataSpec
    state_dir: Path
    keys_dir: str
    threads: int

    @classmethod
    def parse(cls, run_config: Mapping[str, object], node_config: Mapping[str, object], node_id: int) -> SiteSettings:
        """Raises `ConfigError` for a bad run-config value or a node config that names neither data source."""
        run = RunConfig.from_flat(dict(run_config))
        node = dict(node_config)
        try:
            threads = int(node.get("threads", run.site_threads))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ConfigError(f"node config 'threads' has a bad value {node.get('threads')!r}") from None
        keys_dir = str(node.get("keys-dir", ""))
        if "data-path" in node:
            spec = SiteDataSpec(source=str(node["data-path"]), seed=run.seed, holdout_fraction=run.holdout_fraction,
                                image_size=run.image_size)
            default_name = load_site_credentials(Path(keys_dir)).site_name if keys_dir else f"node-{node_id}"
            site_id = str(node.get("site-name", default_name))
            state_dir = Path(str(node.get("state-dir", Path.home() / ".fedkr" / "site" / site_id)))
        elif "partition-id" in node and "num-partitions" in node:
            index = int(node["partition-id"])  # type: ignore[arg-type]
            spec = SiteDataSpec(source=run.data, site_index=index, num_sites=int(node["num-partitions"]),  # type: ignore[arg-type]
                                partition=run.partition, seed=run.seed, holdout_fraction=run.holdout_fraction,
                                image_size=run.image_size)
            site_id = f"site-{index}"
            state_dir = Path(run.out) / "sites" / site_id
        else:
            raise ConfigError("node config names no data: give data-path (deployment) or run in Flower's simulation")
        return cls(site_id, spec, state_dir, keys_dir, threads)
