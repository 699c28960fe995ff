"""How the coordinator reaches its sites. One loop, several transports.

`SiteLink` is the seam: the in-process link calls `Site` objects directly (fast tests); the Flower
adapter implements the same four calls over a `Grid` (simulation and deployment). A call returns,
per site, either the reply or the exception that stood in its place, so one failing site never
takes the others down.
"""

from __future__ import annotations

import logging
from typing import Protocol

from fedkr.client.site import Site
from fedkr.shared.reports import AuditCandidate, AuditReport, FitPlan, FitReport, RelabelReply, RelabelRequest
from fedkr.shared.shard import Shard, SynthesisRequest

log = logging.getLogger(__name__)


class SiteLink(Protocol):
    def fit(self, plan: FitPlan) -> dict[str, FitReport | Exception]: ...

    def synthesize(self, requests: dict[str, SynthesisRequest]) -> dict[str, Shard | bytes | Exception]: ...

    def relabel(self, requests: dict[str, RelabelRequest | bytes]) -> dict[str, RelabelReply | bytes | Exception]: ...

    def audit(self, sites: list[str], candidates: dict[str, AuditCandidate | bytes]) -> dict[str, AuditReport | bytes | Exception]: ...


class InProcessLink:
    """Sites in this process, called one after another."""

    def __init__(self, sites: list[Site]) -> None:
        self.sites = {site.site_id: site for site in sites}

    def fit(self, plan: FitPlan) -> dict[str, FitReport | Exception]:
        return {sid: _call(sid, site.fit, plan) for sid, site in self.sites.items()}

    def synthesize(self, requests: dict[str, SynthesisRequest]) -> dict[str, Shard | bytes | Exception]:
        return {sid: _call(sid, self.sites[sid].synthesize, req) for sid, req in requests.items()}

    def relabel(self, requests: dict[str, RelabelRequest | bytes]) -> dict[str, RelabelReply | bytes | Exception]:
        return {sid: _call(sid, self.sites[sid].relabel, req) for sid, req in requests.items()}

    def audit(self, sites: list[str], candidates: dict[str, AuditCandidate | bytes]) -> dict[str, AuditReport | bytes | Exception]:
        return {sid: _call(sid, self.sites[sid].audit, candidates[sid]) for sid in sites}


def _call(site_id: str, fn, arg):  # type: ignore[no-untyped-def]
    try:
        return fn(arg)
    except Exception as exc:  # a site's failure is reported, not raised
        log.warning("%s failed: %s", site_id, exc)
        return exc
