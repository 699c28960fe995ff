"""How the coordinator reaches its sites. One loop, several transports.

`SiteLink` is the seam: the Flower adapter (`server/flower_app.py`) implements it over a `Grid`
(simulation and deployment), and `fedkr/inprocess.py` calls `Site` objects in this process (fast
tests). Every transport moves the same bytes (`shared/codec.py`): the link encodes fit plans and
synthesis requests and decodes fit reports; shards, labels and audit reports come back as the
bytes that left each site, for the coordinator's intake to open, and relabelling requests and
audit candidates go out as the intake's bytes. A call returns, per site, either the reply or the
exception that stood in its place, so one failing site never takes the others down.
"""

from __future__ import annotations

from typing import Protocol

from fedkr.shared.reports import FitPlan, FitReport
from fedkr.shared.shard import SynthesisRequest


class SiteLink(Protocol):
    def fit(self, plan: FitPlan) -> dict[str, FitReport | Exception]:
        """Every site's decoded fit report for `plan`, by site id."""
        ...

    def synthesize(self, requests: dict[str, SynthesisRequest]) -> dict[str, bytes | Exception]:
        """Each requested site's shard bytes, as they left the site."""
        ...

    def relabel(self, requests: dict[str, bytes]) -> dict[str, bytes | Exception]:
        """Each site's label bytes for its request bytes."""
        ...

    def audit(self, sites: list[str], candidates: dict[str, bytes]) -> dict[str, bytes | Exception]:
        """Each of `sites`' audit report bytes for its candidate bytes."""
        ...
