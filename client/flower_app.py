"""Flower `ClientApp`: a thin adapter that hands a message's bytes to the `Site` and returns the bytes
its gate let out (`fedkr/flower_records.py` holds them in a record; `shared/codec.py` encodes them).

The site's settings come from Flower's run and node config through `SiteSettings` (`node_config.py`).
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
from .node_config import SiteSettings
from .site import Site
from .site_data import SiteDataSpec, load_site_data

log = logging.getLogger(__name__)


def site_from_context(context: Context, overrides: dict | None = None) -> Site:
    ensure_fedkr_logging()
    run = {**dict(context.run_config), **(overrides or {})}
    settings = _parsed(tuple(sorted(run.items())), tuple(sorted(dict(context.node_config).items())), context.node_id)
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    return _cached_site(settings.site_id, settings.data, str(settings.state_dir), settings.keys_dir)


@lru_cache(maxsize=8)
def _parsed(run: tuple, node: tuple, node_id: int) -> SiteSettings:
    """Each distinct run and node config is parsed once, not once per message."""
    return SiteSettings.parse(dict(run), dict(node), node_id)


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
