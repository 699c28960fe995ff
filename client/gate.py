"""The one door out of a site.

Everything the site sends passes `OutboundGate.send`. It lets through only validated synthetic
shards and metrics reports, refuses a shard holding any image byte-identical to one of the site's
real images, and appends a line for every item that leaves to a ledger the site operator can read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from fedkr.shared.reports import AuditReport, FitReport
from fedkr.shared.shard import Shard, ShardError, ShardSpec, validate_shard

log = logging.getLogger(__name__)

Outbound = Shard | FitReport | AuditReport


class GateRefusal(RuntimeError):
    """The gate refused to let an item leave the site."""


def image_digests(images: np.ndarray) -> set[bytes]:
    return {hashlib.sha256(img.tobytes()).digest() for img in images}


class OutboundGate:
    def __init__(self, site_id: str, real_images: np.ndarray, ledger_path: Path | None) -> None:
        self.site_id = site_id
        self._real_digests = image_digests(real_images)
        self._image_shape = tuple(real_images.shape[1:])
        self.ledger_path = ledger_path

    def send(self, item: object, *, run_id: str, round: int, recipient: str = "coordinator") -> Outbound:
        """Return `item` if it may leave; raise `GateRefusal` otherwise."""
        if isinstance(item, Shard):
            self._check_shard(item)
            kind, payload = "shard", b"".join(a.tobytes() for a in item.to_arrays().values())
        elif isinstance(item, (FitReport, AuditReport)):
            kind, payload = "metrics", json.dumps(item.to_dict(), sort_keys=True).encode()
        else:
            raise GateRefusal(f"{self.site_id}: refusing to send {type(item).__name__}: only synthetic shards and metrics may leave")
        self._append_ledger(run_id, round, kind, payload, recipient)
        return item

    def count_sent(self, run_id: str, kind: str) -> int:
        """How many items of `kind` this site has sent in `run_id`, by its ledger."""
        if self.ledger_path is None or not self.ledger_path.is_file():
            return 0
        count = 0
        with self.ledger_path.open() as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                count += entry.get("run") == run_id and entry.get("kind") == kind
        return count

    def _check_shard(self, shard: Shard) -> None:
        if shard.site_id != self.site_id:
            raise GateRefusal(f"{self.site_id}: shard is labelled as from {shard.site_id}")
        try:
            validate_shard(shard, ShardSpec(self._image_shape, shard.soft_labels.shape[1]))  # type: ignore[arg-type]
        except ShardError as exc:
            raise GateRefusal(f"{self.site_id}: invalid shard: {exc}") from None
        copies = sum(hashlib.sha256(img.tobytes()).digest() in self._real_digests for img in shard.images)
        if copies:
            raise GateRefusal(f"{self.site_id}: shard holds {copies} image(s) identical to real site images")

    def _append_ledger(self, run_id: str, round: int, kind: str, payload: bytes, recipient: str) -> None:
        if self.ledger_path is None:
            return
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "site": self.site_id,
            "run": run_id,
            "round": round,
            "kind": kind,
            "bytes": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
            "recipient": recipient,
        }
        self.ledger_path.parent.mkdir(parents=True, exist_ok=True)
        with self.ledger_path.open("a") as fh:
            fh.write(json.dumps(entry) + "\n")
