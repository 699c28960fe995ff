"""Flower `ServerApp`: the coordinator's loop over Flower's `Grid`.

`GridLink` implements `SiteLink` with Flower messages (`train`, `query.synthesize`, `query.relabel`,
`query.audit`), each holding one message's bytes (`fedkr/flower_records.py`, `shared/codec.py`);
everything else is the transport-free `Coordinator`.
"""

from __future__ import annotations

import logging
import time
from typing import Iterable

from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedkr import flower_records as rec
from fedkr.shared import codec
from fedkr.shared.logs import ensure_fedkr_logging
from fedkr.shared.data import ImageSet, load_dataset  # test split only: the coordinator never loads site data
from fedkr.shared.reports import FitPlan, FitReport, Refused
from fedkr.shared.shard import SynthesisRequest
from fedkr.shared.site_identity import site_name_key

from fedkr.shared.config import RunConfig
from .coordinator import Coordinator, Progress, RunOutcome
from .link import refusal_or

log = logging.getLogger(__name__)


class GridLink:
    """Reach sites through a Flower `Grid`; node ids are mapped to site ids at fit time.

    A site names itself in its fit report, or in the refusal it sends in its place; a node whose
    reply names no site (a SuperLink error, a reply that does not decode) stands as `node-<id>`.
    """

    def __init__(
        self, grid: Grid, expected_sites: int = 0, timeout: float | None = None, wait_seconds: float = 120.0,
        registered_nodes: dict[str, int] | None = None,
    ) -> None:
        """`registered_nodes` (deployment): the node each site registered; a site name claimed from another node is refused."""
        self.grid = grid
        self.timeout = timeout
        self.registered_nodes = registered_nodes or {}
        self.node_of: dict[str, int] = {}
        self.nodes = self._wait_for_nodes(expected_sites, wait_seconds)

    def _wait_for_nodes(self, expected: int, wait_seconds: float) -> list[int]:
        deadline = time.monotonic() + wait_seconds
        last: list[int] = []
        stable_since = time.monotonic()
        while time.monotonic() < deadline:
            nodes = sorted(self.grid.get_node_ids())
            if nodes != last:
                last, stable_since = nodes, time.monotonic()
            if expected and len(nodes) >= expected:
                return nodes
            if not expected and nodes and time.monotonic() - stable_since > 3.0:
                return nodes
            time.sleep(0.5)
        if not last:
            raise RuntimeError(f"no site connected within {wait_seconds:.0f} s")
        log.warning("waited %.0f s: %d of %d expected sites connected", wait_seconds, len(last), expected)
        return last

    def _exchange(self, content_for: dict[int, RecordDict], message_type: str, group: str) -> dict[int, Message | Exception]:
        messages = [Message(content, dst_node_id=node, message_type=message_type, group_id=group) for node, content in content_for.items()]
        replies: Iterable[Message] = list(self.grid.send_and_receive(messages, timeout=self.timeout))
        # An error the SuperLink writes for a node that went offline comes from the SuperLink itself,
        # so a reply is matched to its node through the message it answers.
        node_of_message = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
        out: dict[int, Message | Exception] = {node: TimeoutError("no reply") for node in content_for}
        for reply in replies:
            node = node_of_message.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            out[node] = RuntimeError(reply.error.reason) if reply.has_error() else reply
        return out

    def _decode(self, replies: dict[int, Message | Exception]) -> dict[str, object]:
        """Each reply's bytes by site id; a refusal stands as `Refused`, a reply that does not decode as its `ValueError`."""
        site_of = {node: sid for sid, node in self.node_of.items()}
        out: dict[str, object] = {}
        for node, reply in replies.items():
            sid = site_of.get(node, f"node-{node}")
            if isinstance(reply, Exception):
                out[sid] = reply
                continue
            try:
                out[sid] = refusal_or(rec.from_record(reply.content), sid)
            except Refused as exc:
                out[sid] = exc
            except Exception as exc:  # noqa: BLE001 - a site's reply must never take the coordinator down
                out[sid] = ValueError(f"undecodable reply: {type(exc).__name__}: {exc}"[:300])
        return out

    def fit(self, plan: FitPlan) -> dict[str, FitReport | Exception]:
        data = codec.encode_fit_plan(plan)
        replies = self._exchange({n: rec.to_record(data) for n in self.nodes}, rec.MSG_TRAIN, "0")
        out: dict[str, FitReport | Exception] = {}
        for node, reply in replies.items():
            if isinstance(reply, Exception):
                out[f"node-{node}"] = reply
                continue
            answer: FitReport | Refused
            try:
                answer = codec.decode_fit_report(refusal_or(rec.from_record(reply.content), None), run_id=plan.run_id)
            except Refused as exc:
                answer = exc
            except ValueError as exc:
                out[f"node-{node}"] = exc
                continue
            sid = answer.site_id if isinstance(answer, FitReport) else answer.refusal.site_id
            taken = {site_name_key(s): s for s in [*self.node_of, *out]}
            if site_name_key(sid) in taken:
                out[f"node-{node}"] = ValueError(f"site id {sid} claimed by two nodes (as {taken[site_name_key(sid)]})")
                continue
            registered = self.registered_nodes.get(sid)
            if registered is not None and registered != node:
                out[f"node-{node}"] = ValueError(f"node {node} claims to be {sid}, registered as node {registered}")
                continue
            if isinstance(answer, FitReport):
                self.node_of[sid] = node
            out[sid] = answer
        return out

    def synthesize(self, requests: dict[str, SynthesisRequest]) -> dict[str, bytes | Exception]:
        content = {self.node_of[sid]: rec.to_record(codec.encode_synthesis_request(req)) for sid, req in requests.items()}
        group = str(next(iter(requests.values())).round) if requests else "0"
        return self._decode(self._exchange(content, rec.MSG_SYNTHESIZE, group))  # type: ignore[return-value]

    def relabel(self, requests: dict[str, bytes]) -> dict[str, bytes | Exception]:
        content = {self.node_of[sid]: rec.to_record(req) for sid, req in requests.items()}
        return self._decode(self._exchange(content, rec.MSG_RELABEL, "relabel"))  # type: ignore[return-value]

    def audit(self, sites: list[str], candidates: dict[str, bytes]) -> dict[str, bytes | Exception]:
        content = {self.node_of[sid]: rec.to_record(candidates[sid]) for sid in sites}
        return self._decode(self._exchange(content, rec.MSG_AUDIT, "audit"))  # type: ignore[return-value]


def _log_stage(stage: str, done: int, total: int) -> None:
    """Stage progress in the ServerApp's log, which `flwr run --stream` and `flwr log` show the operator."""
    log.info("[%d/%d] %s", done, total, stage)


def _test_split(cfg: RunConfig) -> ImageSet | None:
    """The coordinator's test split: `test-data`'s, or in simulation (no coordinator keys) the test split of `data`."""
    source = cfg.test_data or ("" if cfg.coordinator_dir else cfg.data)
    return load_dataset(source, seed=cfg.seed, image_size=cfg.image_size).test if source else None


def build_server_app(
    config: RunConfig | None = None,
    test_set: ImageSet | None = None,
    expected_sites: int = 0,
    progress: Progress | None = None,
    outcomes: list[RunOutcome | Exception] | None = None,
) -> ServerApp:
    """With no `config`, settings come from Flower's run config (`flwr run .`)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        ensure_fedkr_logging()
        cfg = config if config is not None else RunConfig.from_flat(dict(context.run_config))
        test = test_set
        try:
            if config is None:
                test = _test_split(cfg)
            coordinator = Coordinator(cfg, test, progress or _log_stage)
            expected = expected_sites or cfg.expected_sites or (len(coordinator.keys.sites) if coordinator.keys else 0)
            link = GridLink(grid, expected_sites=expected, timeout=cfg.reply_timeout, wait_seconds=cfg.wait_for_sites,
                            registered_nodes=coordinator.keys.node_ids if coordinator.keys else None)
            outcome = coordinator.run(link)
        except Exception as exc:
            if outcomes is not None:
                outcomes.append(exc)  # Flower's simulation thread only logs it; the caller reports it
            raise
        if outcomes is not None:
            outcomes.append(outcome)
        where = outcome.release_dir if outcome.released else outcome.refusal_path
        log.info("run %s finished: %s (%s)", cfg.run_id, "released" if outcome.released else "refused", where)

    return app


app = build_server_app()
