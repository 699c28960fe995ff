"""The in-process link: `Site` objects in this process, reached through the same bytes as any transport.

A `SiteLink` (`server/link.py`) for simulation and tests. Requests are encoded with
`shared/codec.py` and handed to each site as bytes; what a site returns is the exact bytes its
outbound gate let out and ledgered, and those reach the coordinator unchanged, except a site's
refusal, which stands as a `Refused` exception in place of the reply (`server/link.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from fedkr.client.site import Site
from fedkr.server.link import refusal_or
from fedkr.shared import codec
from fedkr.shared.reports import FitPlan, FitReport
from fedkr.shared.shard import SynthesisRequest

log = logging.getLogger(__name__)


class InProcessLink:
    """Sites in this process, called one after another."""

    def __init__(self, sites: Iterable[Site]) -> None:
        """`sites`: anything with a `site_id` and `Site`'s four methods taking and returning bytes."""
        self.sites = {site.site_id: site for site in sites}

    def fit(self, plan: FitPlan) -> dict[str, FitReport | Exception]:
        """Every site's fit report, decoded from the bytes it sent; a report that does not decode stands as its `ValueError`."""
        data = codec.encode_fit_plan(plan)

        def fit(site: Site) -> FitReport:
            return codec.decode_fit_report(refusal_or(site.fit(data), site.site_id), run_id=plan.run_id)

        return {sid: _call(sid, fit, site) for sid, site in self.sites.items()}

    def synthesize(self, requests: dict[str, SynthesisRequest]) -> dict[str, bytes | Exception]:
        """Each site's shard bytes for its encoded request."""
        return {sid: _call(sid, self.sites[sid].synthesize, codec.encode_synthesis_request(req)) for sid, req in requests.items()}

    def relabel(self, requests: dict[str, bytes]) -> dict[str, bytes | Exception]:
        """Each site's label bytes for its request bytes."""
        return {sid: _call(sid, self.sites[sid].relabel, req) for sid, req in requests.items()}

    def audit(self, sites: list[str], candidates: dict[str, bytes]) -> dict[str, bytes | Exception]:
        """Each of `sites`' audit report bytes for its candidate bytes."""
        return {sid: _call(sid, self.sites[sid].audit, candidates[sid]) for sid in sites}


def _call(site_id: str, fn: Callable, arg: object):  # type: ignore[no-untyped-def]
    try:
        return refusal_or(fn(arg), site_id)
    except Exception as exc:  # a site's failure or refusal is reported, not raised
        log.warning("%s failed: %s", site_id, exc)
        return exc
