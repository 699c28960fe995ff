"""Flower `ClientApp`: a thin adapter that hands a message's bytes to the `Site` and returns the bytes
its gate let out (`fedkr/flower_records.py` holds them in a record; `shared/codec.py` encodes them).

The site's settings come from Flower's run and node config through `SiteSettings` (`node_config.py`).
A request the site cannot answer is answered with a `SiteRefusal` in its name (`_handled`).
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
from fedkr.shared import codec
from fedkr.shared.data import DataError
from fedkr.shared.device import DeviceError, describe
from fedkr.shared.logs import ensure_fedkr_logging
from fedkr.shared.reports import SiteRefusal

from .caps import SiteCaps
from .credentials import load_site_credentials
from .gate import OutboundGate
from .node_config import SiteSettings
from .shard_check import shard_check_on
from .site import Site, SiteNotFitted
from .site_data import SiteDataSpec, load_site_data

log = logging.getLogger(__name__)


def settings_of(context: Context, overrides: dict | None = None, node_overrides: dict | None = None) -> SiteSettings:
    """The site's settings from Flower's run and node config (with `overrides` over each). Raises `ConfigError`."""
    ensure_fedkr_logging()
    run = {**dict(context.run_config), **(overrides or {})}
    node = {**dict(context.node_config), **(node_overrides or {})}
    return _parsed(tuple(sorted(run.items())), tuple(sorted(node.items())), context.node_id)


def site_from_context(context: Context, overrides: dict | None = None, node_overrides: dict | None = None) -> Site:
    return site_of(settings_of(context, overrides, node_overrides))


def site_of(settings: SiteSettings) -> Site:
    """The site these settings describe, built once per process. Raises as `load_site_data`, `resolve_device`
    and `load_site_credentials` do."""
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    return _cached_site(settings.site_id, settings.data, str(settings.state_dir), settings.keys_dir, settings.device,
                        settings.caps, settings.shard_max_auc)


@lru_cache(maxsize=8)
def _parsed(run: tuple, node: tuple, node_id: int) -> SiteSettings:
    """Each distinct run and node config is parsed once, not once per message."""
    return SiteSettings.parse(dict(run), dict(node), node_id)


@lru_cache(maxsize=8)
def _cached_site(site_id: str, spec: SiteDataSpec, state_dir: str, keys_dir: str, device: str, caps: SiteCaps,
                 shard_max_auc: float) -> Site:
    credentials = load_site_credentials(Path(keys_dir)) if keys_dir else None
    site = Site(site_id, load_site_data(spec), Path(state_dir), credentials, device=device, caps=caps,
                shard_max_auc=shard_max_auc)
    log.info("%s: %d member and %d holdout images; computes on %s; caps: %s; shard check limit %s", site_id,
             len(site.data.members), len(site.data.holdout), describe(site.device), caps.describe(),
             f"{shard_max_auc:g}" if shard_check_on(shard_max_auc) else "off")
    return site


#: Error code of a failure a site cannot name itself in (its node config does not parse).
SITE_ERROR_CODE = 4100


def public_reason(exc: Exception) -> str:
    """What a site tells its coordinator of a failure: settings-level facts, never the exception's text in general.

    A site's exception text (file paths, values from its data) is not for leaving the site; its
    log has the detail. Only errors whose text is built from settings say more than their type.
    """
    if isinstance(exc, SiteNotFitted):
        return "this site holds no models for the run (not fitted here, or its state folder was lost)"
    if isinstance(exc, DeviceError):
        return codec.one_line(exc)
    if isinstance(exc, DataError):
        return f"its data could not be loaded ({type(exc).__name__}; details in the site's log)"
    return f"{type(exc).__name__} (details in the site's log)"


def _run_id_of(kind: str, data: object) -> str:
    """The run a plain request names, or "" (a sealed request, or one that does not decode)."""
    decode = {"fit": codec.decode_fit_plan, "synthesize": codec.decode_synthesis_request}.get(kind)
    try:
        return decode(data).run_id if decode is not None else ""  # type: ignore[arg-type]
    except ValueError:
        return ""


def _handled(kind: str, handle: Callable[[Message, Site], RecordDict], overrides: dict | None,
             node_overrides: dict | None):
    """Run a handler; on failure log the detail locally and reply with a refusal that names the site.

    The refusal (`SiteRefusal`) leaves through an outbound gate and is ledgered like any reply; its
    reason is `public_reason`'s. A failure before the site knows its own name (a node config that
    does not parse) is answered with Flower's `Error`, which names only the exception's type.
    """

    def handler(msg: Message, context: Context) -> Message:
        try:
            settings = settings_of(context, overrides, node_overrides)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a reply, so the coordinator can go on
            log.exception("%s request failed: the node config does not parse", kind)
            return Message(Error(SITE_ERROR_CODE, f"site could not {kind}: {type(exc).__name__} (details in the site's log)"),
                           reply_to=msg)
        try:
            return Message(handle(msg, site_of(settings)), reply_to=msg)
        except Exception as exc:  # noqa: BLE001
            log.exception("%s: %s request failed", settings.site_id, kind)
            refusal = SiteRefusal(settings.site_id, kind, public_reason(exc))
            try:
                gate = OutboundGate(settings.site_id, None, settings.state_dir / "ledger.jsonl")
                sent = gate.send(refusal, run_id=_run_id_of(kind, rec.from_record(msg.content)), round=0)
            except Exception:  # noqa: BLE001 - not even a refusal could be written: say what Flower can carry
                log.exception("%s: the refusal could not leave either", settings.site_id)
                return Message(Error(SITE_ERROR_CODE, f"site could not {kind}: {type(exc).__name__}"), reply_to=msg)
            return Message(rec.to_record(sent), reply_to=msg)

    return handler


def _train(msg: Message, site: Site) -> RecordDict:
    return rec.to_record(site.fit(rec.from_record(msg.content)))


def _synthesize(msg: Message, site: Site) -> RecordDict:
    return rec.to_record(site.synthesize(rec.from_record(msg.content)))


def _relabel(msg: Message, site: Site) -> RecordDict:
    return rec.to_record(site.relabel(rec.from_record(msg.content)))


def _audit(msg: Message, site: Site) -> RecordDict:
    return rec.to_record(site.audit(rec.from_record(msg.content)))


def build_client_app(overrides: dict | None = None, node_overrides: dict | None = None) -> ClientApp:
    """`overrides` stand in for the run config where Flower passes none (the Python simulation API);
    `node_overrides` are added to every node's config (a simulated site's device or caps)."""
    app = ClientApp()
    app.train()(_handled("fit", _train, overrides, node_overrides))
    app.query("synthesize")(_handled("synthesize", _synthesize, overrides, node_overrides))
    app.query("relabel")(_handled("relabel", _relabel, overrides, node_overrides))
    app.query("audit")(_handled("audit", _audit, overrides, node_overrides))
    return app


app = build_client_app()
