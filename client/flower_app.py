"""Flower `ClientApp`: a thin adapter that hands a message's bytes to the `Site` and returns the bytes
its gate let out (`fedkr/flower_records.py` holds them in a record; `shared/codec.py` encodes them).

Where a site's data comes from:
- simulation: the run config's `data`, `partition` and `seed`, and Flower's `partition-id` and
  `num-partitions` node config; the site's state lives under `<out>/sites/site-<partition-id>`.
- deployment: the node config's `data-path` (read whole), `site-name`, `state-dir` and `keys-dir`,
  given with `flower-supernode --node-config 'data-path="/data/blood.npz" keys-dir="/etc/fedkr/site"'`.
  With `keys-dir` the site seals and signs every shard and accepts only sealed audit candidates.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp

from fedkr import flower_records as rec
from fedkr.shared.logs import ensure_fedkr_logging

from .credentials import load_site_credentials
from .site import Site
from .site_data import SiteDataSpec, load_site_data

log = logging.getLogger(__name__)


def site_from_context(context: Context, overrides: dict | None = None) -> Site:
    ensure_fedkr_logging()
    run = {**dict(context.run_config), **(overrides or {})}
    node = dict(context.node_config)
    threads = int(node.get("threads", run.get("site-threads", 0)))
    if threads > 0:
        torch.set_num_threads(threads)
    holdout = float(run.get("holdout-fraction", 0.2))
    seed = int(run.get("seed", 0))
    keys_dir = str(node.get("keys-dir", ""))
    if "data-path" in node:
        spec = SiteDataSpec(source=str(node["data-path"]), seed=seed, holdout_fraction=holdout)
        default_name = load_site_credentials(Path(keys_dir)).site_name if keys_dir else f"node-{context.node_id}"
        site_id = str(node.get("site-name", default_name))
        state_dir = Path(str(node.get("state-dir", Path.home() / ".fedkr" / "site" / site_id)))
    else:
        index = int(node["partition-id"])
        spec = SiteDataSpec(
            source=str(run.get("data", "digits")), site_index=index, num_sites=int(node["num-partitions"]),
            partition=str(run.get("partition", "iid")), seed=seed, holdout_fraction=holdout,
        )
        site_id = f"site-{index}"
        state_dir = Path(str(run.get("out", "runs"))) / "sites" / site_id
    return _cached_site(site_id, spec, str(state_dir), keys_dir)


@lru_cache(maxsize=8)
def _cached_site(site_id: str, spec: SiteDataSpec, state_dir: str, keys_dir: str) -> Site:
    credentials = load_site_credentials(Path(keys_dir)) if keys_dir else None
    return Site(site_id, load_site_data(spec), Path(state_dir), credentials)


#: Error code of a site's refusal or failure; the reason sent is generic, the detail stays in the site's log.
SITE_ERROR_CODE = 4100


def _handled(kind: str, handle: Callable[[Message, Context, dict | None], RecordDict], overrides: dict | None):
    """Run a handler; on failure log the detail locally and reply with the exception's type only.

    Flower would otherwise send `str(exception)` to the coordinator, and a site's exception text
    (file paths, values from its data) is not for leaving the site.
    """

    def handler(msg: Message, context: Context) -> Message:
        try:
            return Message(handle(msg, context, overrides), reply_to=msg)
        except Exception as exc:  # every failure becomes a reply, so the coordinator can go on
            log.exception("%s request failed", kind)
            return Message(Error(SITE_ERROR_CODE, f"site could not {kind}: {type(exc).__name__} (details in the site's log)"), reply_to=msg)

    return handler


def _train(msg: Message, context: Context, overrides: dict | None) -> RecordDict:
    return rec.to_record(site_from_context(context, overrides).fit(rec.from_record(msg.content)))


def _synthesize(msg: Message, context: Context, overrides: dict | None) -> RecordDict:
    return rec.to_record(site_from_context(context, overrides).synthesize(rec.from_record(msg.content)))


def _relabel(msg: Message, context: Context, overrides: dict | None) -> RecordDict:
    return rec.to_record(site_from_context(context, overrides).relabel(rec.from_record(msg.content)))


def _audit(msg: Message, context: Context, overrides: dict | None) -> RecordDict:
    return rec.to_record(site_from_context(context, overrides).audit(rec.from_record(msg.content)))


def build_client_app(overrides: dict | None = None) -> ClientApp:
    """`overrides` stand in for the run config where Flower passes none (the Python simulation API)."""
    app = ClientApp()
    app.train()(_handled("fit", _train, overrides))
    app.query("synthesize")(_handled("synthesize", _synthesize, overrides))
    app.query("relabel")(_handled("relabel", _relabel, overrides))
    app.query("audit")(_handled("audit", _audit, overrides))
    return app


app = build_client_app()
