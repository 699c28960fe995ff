"""What a ClientApp needs to build its `Site`, parsed once from Flower's run config and node config.

Where a site's data comes from:
- simulation: the run config's `data`, `partition`, `seed` and `holdout-fraction`, and Flower's
  `partition-id` and `num-partitions` node config; the site's state lives under
  `<out>/sites/site-<partition-id>`.
- deployment: the node config's `data-path` (read whole), `site-name`, `state-dir` and `keys-dir`,
  given with `flower-supernode --node-config 'data-path="/data/blood.npz" keys-dir="/etc/fedkr/site"'`.
  With `keys-dir` the site seals and signs every shard and accepts only sealed audit candidates.

Either way the node config may name the site's `device` (`auto`, `cpu`, `cuda`, `cuda:N`; without
it, the run config's `device`) and its resource caps (`caps.py`: `max-generator-steps`,
`max-shard-images`, `max-reference-models`, `max-fit-seconds`) and its shard check's limit
(`shard-max-distance-auc`, `shard_check.py`; 1 turns it off). A key not listed in `NODE_KEYS`
is refused, so that a misspelt cap is never silently ignored.

The run config is read through `RunConfig`, so a site and its coordinator share every default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fedkr.shared.config import ConfigError, RunConfig
from fedkr.shared.site_identity import KeyringError, check_site_name
from fedkr.shared.device import DeviceError, check_device

from .caps import CAP_KEYS, SiteCaps
from .credentials import load_site_credentials
from .shard_check import DEFAULT_MAX_AUC, SHARD_CHECK_KEY, check_shard_limit
from .site_data import SiteDataSpec

#: Node-config keys a SuperNode may be given (`--node-config`); Flower adds the partition keys in simulation.
NODE_KEYS = ("data-path", "site-name", "state-dir", "keys-dir", "threads", "device", *CAP_KEYS.values(),
             SHARD_CHECK_KEY, "partition-id", "num-partitions")


@dataclass(frozen=True)
class SiteSettings:
    """A site's identity, data, state folder, keys folder ("" without keys), torch threads (0: torch's default),
    device setting (resolved where the site is built), resource caps and the shard check's limit."""

    site_id: str
    data: SiteDataSpec
    state_dir: Path
    keys_dir: str
    threads: int
    device: str = "auto"
    caps: SiteCaps = SiteCaps()
    shard_max_auc: float = DEFAULT_MAX_AUC

    @classmethod
    def parse(cls, run_config: Mapping[str, object], node_config: Mapping[str, object], node_id: int) -> SiteSettings:
        """Raises `ConfigError` for a bad run-config value, an unknown or bad node-config key, or a node
        config that names neither data source."""
        run = RunConfig.from_flat(dict(run_config))
        node = dict(node_config)
        unknown = sorted(set(node) - set(NODE_KEYS))
        if unknown:
            raise ConfigError(f"node config has unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(NODE_KEYS)}")
        device = str(node.get("device", run.device))
        try:
            check_device(device)
        except DeviceError as exc:
            raise ConfigError(f"node config {exc}") from None
        caps = SiteCaps.from_node_config(node)
        try:
            shard_max_auc = check_shard_limit(node.get(SHARD_CHECK_KEY, DEFAULT_MAX_AUC))
        except ValueError:
            raise ConfigError(f"node config '{SHARD_CHECK_KEY}' must be a number in (0.5, 1] (1: off), "
                              f"got {node.get(SHARD_CHECK_KEY)!r}") from None
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
            try:
                check_site_name(site_id)
            except KeyringError as exc:
                raise ConfigError(f"node config 'site-name': {exc}") from None
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
        return cls(site_id, spec, state_dir, keys_dir, threads, device, caps, shard_max_auc)
