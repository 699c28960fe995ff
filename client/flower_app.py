"""Flower `ClientApp`: a thin adapter that decodes a message, calls the `Site`, encodes the reply.

Where a site's data comes from:
- simulation: the run config's `data`, `partition` and `seed`, and Flower's `partition-id` and
  `num-partitions` node config; the site's state lives under `<out>/sites/site-<partition-id>`.
- deployment: the node config's `data-path` (read whole), `site-name` and `state-dir`, given with
  `flower-supernode --node-config 'data-path="/data/blood.npz" site-name="hospital-a"'`.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedkr.shared import flower_records as rec

from .site import Site
from .site_data import SiteDataSpec, load_site_data

log = logging.getLogger(__name__)


def _ensure_logging() -> None:
    """Flower runs ClientApps in worker processes with no logging set up; show the site's progress."""
    fedkr_log = logging.getLogger("fedkr")
    if not logging.getLogger().handlers and not fedkr_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        fedkr_log.addHandler(handler)
        fedkr_log.setLevel(logging.INFO)


def site_from_context(context: Context, overrides: dict | None = None) -> Site:
    _ensure_logging()
    run = {**dict(context.run_config), **(overrides or {})}
    node = dict(context.node_config)
    threads = int(node.get("threads", run.get("site-threads", 0)))
    if threads > 0:
        torch.set_num_threads(threads)
    holdout = float(run.get("holdout-fraction", 0.2))
    seed = int(run.get("seed", 0))
    if "data-path" in node:
        spec = SiteDataSpec(source=str(node["data-path"]), seed=seed, holdout_fraction=holdout)
        site_id = str(node.get("site-name", f"node-{context.node_id}"))
        state_dir = Path(str(node.get("state-dir", Path.home() / ".fedkr" / "site" / site_id)))
    else:
        index = int(node["partition-id"])
        spec = SiteDataSpec(
            source=str(run.get("data", "digits")), site_index=index, num_sites=int(node["num-partitions"]),
            partition=str(run.get("partition", "iid")), seed=seed, holdout_fraction=holdout,
        )
        site_id = f"site-{index}"
        state_dir = Path(str(run.get("out", "runs"))) / "sites" / site_id
    return _cached_site(site_id, spec, str(state_dir))


@lru_cache(maxsize=8)
def _cached_site(site_id: str, spec: SiteDataSpec, state_dir: str) -> Site:
    return Site(site_id, load_site_data(spec), Path(state_dir))


def build_client_app(overrides: dict | None = None) -> ClientApp:
    """`overrides` stand in for the run config where Flower passes none (the Python simulation API)."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        site = site_from_context(context, overrides)
        report = site.fit(rec.decode_fit_plan(msg.content))
        return Message(rec.encode_fit_report(report), reply_to=msg)

    @app.query("synthesize")
    def synthesize(msg: Message, context: Context) -> Message:
        site = site_from_context(context, overrides)
        shard = site.synthesize(rec.decode_request(msg.content))
        return Message(rec.encode_shard(shard), reply_to=msg)

    @app.query("audit")
    def audit(msg: Message, context: Context) -> Message:
        site = site_from_context(context, overrides)
        report = site.audit(rec.decode_candidate(msg.content))
        return Message(rec.encode_audit_report(report), reply_to=msg)

    return app


app = build_client_app()
