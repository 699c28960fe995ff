"""What crosses the coordinator's boundary with a site: shards, labels and audit reports in,
relabelling requests and audit candidates out, always as bytes (`shared/codec.py`).

In simulation everything stays in one trust domain: messages travel as the codec's plain bytes,
each reply bound to the exact request bytes it answers. In deployment (`coordinator-dir` set) the
coordinator accepts only sealed shards signed by a registered site, bound to this run and round and
never seen before, and it seals each site's audit candidate and relabelling request to that site's
key, so the SuperLink in between holds ciphertext only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from fedkr.shared import codec
from fedkr.shared.reports import AuditCandidate, AuditReport, RelabelRequest, check_relabel_reply
from fedkr.shared.shard import Shard, ShardSpec
from fedkr.shared.shard_wire import ReplayGuard, ShardWireError, open_audit_report, open_relabel_reply, open_shard, seal_candidate, seal_relabel

from .keyring import CoordinatorKeys

log = logging.getLogger(__name__)


class PlainIntake:
    """Simulation: messages are the codec's plain bytes; a signed or sealed one means a site configured
    for another coordinator."""

    sealed = False

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def open(self, reply: object, site_id: str, round: int, spec: ShardSpec, expected_count: int) -> Shard:
        """The shard in `reply`, if `site_id` wrote it for this run and `round` and it fits `spec` with
        `expected_count` images; `ValueError` (`CodecError`, `ShardError`) otherwise."""
        if isinstance(reply, bytes) and not codec.is_plain(reply):
            raise ShardWireError("sealed shard, but this coordinator has no keys (set coordinator-dir)")
        if not isinstance(reply, bytes):
            raise ShardWireError(f"not a shard: {type(reply).__name__}")
        return codec.decode_shard(reply, site_id=site_id, run_id=self.run_id, round=round, spec=spec,
                                  expected_count=expected_count)

    def candidates(self, sites: list[str], candidate: AuditCandidate) -> dict[str, bytes]:
        """Each site's encoded candidate."""
        return {sid: codec.encode_candidate(candidate, site_id=sid) for sid in sites}

    def check_site(self, site_id: str) -> str | None:
        return None

    def relabel_requests(self, sites: list[str], request: RelabelRequest) -> dict[str, bytes]:
        """Each site's encoded relabelling request."""
        return {sid: codec.encode_relabel_request(request, site_id=sid) for sid in sites}

    def relabel_replies(self, replies: dict[str, object], requests: dict[str, bytes],
                        shape: tuple[int, int]) -> dict[str, np.ndarray | Exception]:
        """Each site's labels, float32 `shape`, if it wrote them for the very request bytes it was sent."""
        def check(sid: str, reply: object) -> np.ndarray:
            request = requests.get(sid)
            if not isinstance(reply, bytes) or not isinstance(request, bytes):
                raise ValueError(f"not {sid}'s labels: {type(reply).__name__}")
            if not codec.is_plain(reply):
                raise ValueError("signed labels, but this coordinator has no keys (set coordinator-dir)")
            labels = codec.decode_relabel_reply(reply, site_id=sid, run_id=self.run_id, request=request, shape=shape)
            return check_relabel_reply(labels.probs, *shape)

        return _each_reply(replies, check)

    def audit_reports(self, replies: dict[str, object], candidates: dict[str, bytes]) -> dict[str, AuditReport | Exception]:
        """Each site's report, if it wrote it for the very candidate bytes it was sent."""
        def report(sid: str, reply: object) -> AuditReport | Exception:
            if isinstance(reply, Exception):
                return reply
            candidate = candidates.get(sid)
            if not isinstance(reply, bytes) or not isinstance(candidate, bytes):
                return ValueError(f"not an audit report: {type(reply).__name__}")
            if not codec.is_plain(reply):
                return ValueError("signed audit report, but this coordinator has no keys (set coordinator-dir)")
            try:
                return codec.decode_audit_report(reply, site_id=sid, run_id=self.run_id, candidate=candidate)
            except ValueError as exc:
                return exc

        return {sid: report(sid, reply) for sid, reply in replies.items()}


class SealedIntake:
    """Deployment: only sealed, signed, fresh shards from registered sites."""

    sealed = True

    def __init__(self, keys: CoordinatorKeys, run_id: str, replay: ReplayGuard) -> None:
        self.keys = keys
        self.run_id = run_id
        self.replay = replay
        self._site_keys = keys.site_verify_keys

    def check_site(self, site_id: str) -> str | None:
        """Why a site may not take part, or None: only registered sites may."""
        if site_id not in self.keys.sites:
            return f"site {site_id!r} is not registered with this coordinator (fedkr coordinator register-site)"
        return None

    def open(self, reply: object, site_id: str, round: int, spec: ShardSpec, expected_count: int) -> Shard:
        """The shard in `reply`, if sealed to this coordinator and signed by `site_id` for this run and
        `round`, never seen before, and fitting `spec`; `ShardWireError` otherwise."""
        if not isinstance(reply, bytes) or codec.is_plain(reply):
            raise ShardWireError("unsealed shard: this coordinator accepts sealed, signed shards only")
        return open_shard(reply, recipient_key=self.keys.sealing_key, site_keys=self._site_keys, expected_site=site_id,
                          run_id=self.run_id, round=round, spec=spec, replay=self.replay, expected_count=expected_count)

    def audit_reports(self, replies: dict[str, object], candidates: dict[str, bytes]) -> dict[str, AuditReport | Exception]:
        """Only a report signed by the site's registered key, for the very candidate it was sent, counts."""
        out: dict[str, AuditReport | Exception] = {}
        for sid, reply in replies.items():
            if isinstance(reply, Exception):
                out[sid] = reply
            elif (not isinstance(reply, bytes) or codec.is_plain(reply) or sid not in self._site_keys
                  or not isinstance(candidates.get(sid), bytes)):
                out[sid] = ValueError("unsigned audit report: this coordinator accepts signed reports only")
            else:
                try:
                    out[sid] = open_audit_report(reply, site_key=self._site_keys[sid], site_id=sid,
                                                 run_id=self.run_id, candidate_blob=candidates[sid])  # type: ignore[arg-type]
                except ValueError as exc:
                    out[sid] = exc
        return out

    def relabel_requests(self, sites: list[str], request: RelabelRequest) -> dict[str, bytes]:
        """Sealed to each site like a candidate: the images are pool images."""
        return {sid: seal_relabel(request, site_id=sid, signer=self.keys.signing_key, recipient=self.keys.sites[sid].seal_to)
                for sid in sites}

    def relabel_replies(self, replies: dict[str, object], requests: dict[str, bytes],
                        shape: tuple[int, int]) -> dict[str, np.ndarray | Exception]:
        """Only labels signed by the site's registered key, for the very request it was sent, count."""
        def check(sid: str, reply: object) -> np.ndarray:
            request = requests.get(sid)
            if not isinstance(reply, bytes) or codec.is_plain(reply) or sid not in self._site_keys or not isinstance(request, bytes):
                raise ValueError("unsigned labels: this coordinator accepts signed labels only")
            probs = open_relabel_reply(reply, site_key=self._site_keys[sid], site_id=sid, run_id=self.run_id,
                                       request_blob=request, shape=shape)
            return check_relabel_reply(probs, *shape)

        return _each_reply(replies, check)

    def candidates(self, sites: list[str], candidate: AuditCandidate) -> dict[str, bytes]:
        """Each site's candidate, signed and sealed to that site."""
        return {sid: seal_candidate(candidate, site_id=sid, signer=self.keys.signing_key, recipient=self.keys.sites[sid].seal_to)
                for sid in sites}


def _each_reply(replies: dict[str, object], check: Callable[[str, object], np.ndarray]) -> dict[str, np.ndarray | Exception]:
    """Each site's checked labels, or the exception that stands in their place: a bad reply only costs its site its say."""
    out: dict[str, np.ndarray | Exception] = {}
    for sid, reply in replies.items():
        try:
            if isinstance(reply, Exception):
                raise reply
            out[sid] = check(sid, reply)
        except Exception as exc:  # noqa: BLE001 - whatever a site sent
            out[sid] = exc
    return out
