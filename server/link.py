"""How the coordinator reaches its sites. One loop, several transports.

`SiteLink` is the seam: the Flower adapter (`server/flower_app.py`) implements it over a `Grid`
(simulation and deployment), and `fedkr/inprocess.py` calls `Site` objects in this process (fast
tests). Every transport moves the same bytes (`shared/codec.py`): the link encodes fit plans and
synthesis requests and decodes fit reports; shards, labels and audit reports come back as the
bytes that left each site, for the coordinator's intake to open, and relabelling requests and
audit candidates go out as the intake's bytes. A call returns, per site, either the reply or the
exception that stood in its place, so one failing site never takes the others down; a site's
refusal (`SiteRefusal`, a request over one of its caps, or a failure it could name) stands as
`Refused` (`refusal_or`).
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from fedkr.shared import codec
from fedkr.shared.reports import FitPlan, FitReport, Refused
from fedkr.shared.shard import SynthesisRequest

T = TypeVar("T")


def refusal_or(reply: T, site_id: str | None) -> T:
    """`reply` unchanged unless it is a site's encoded refusal: then raise `Refused` with it.

    `site_id`, when given, is the site asked: a refusal in another site's name raises `CodecError`.
    Raises `CodecError` for a refusal that does not decode.
    """
    if codec.kind_of(reply) != codec.KIND_REFUSAL:
        return reply
    refusal, _ = codec.decode_refusal(reply)  # type: ignore[arg-type]
    if site_id is not None and refusal.site_id != site_id:
        raise codec.CodecError(f"refusal is marked as from {refusal.site_id[:40]!r}, not {site_id!r}")
    raise Refused(refusal)


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
