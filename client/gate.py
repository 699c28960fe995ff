"""The one door out of a site.

Everything the site sends passes `OutboundGate.send`. It lets through only validated synthetic
shards, labels of the coordinator's images, metrics reports and refusals (one line of settings and
counts, naming a cap), refuses a shard holding any image
byte-identical to one of the site's real images, and encodes what it lets through
(`shared/codec.py`); when the site has keys (deployment) it signs those bytes, and seals shards.
It returns the exact bytes that leave the site, and appends a line for them to a ledger the site
operator can read: time, run, round, kind, the size and SHA-256 of those bytes, and the recipient,
each line chained to the one before by its hash (`client/ledger.py`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np

from fedkr.shared import codec
from fedkr.shared.keys import key_id
from fedkr.shared.reports import AuditReport, FitReport, RelabelReply, SiteRefusal
from fedkr.shared.shard import Shard, ShardError, ShardSpec, validate_shard
from fedkr.shared.shard_wire import seal_shard, sign_audit_report, sign_relabel_reply

from .credentials import SiteCredentials
from .ledger import append_entry, read_ledger

__all__ = ["GateRefusal", "OutboundGate", "Outbound", "image_digests", "read_ledger"]

log = logging.getLogger(__name__)

#: What may leave a site, before the gate encodes it.
Outbound = Shard | FitReport | AuditReport | RelabelReply | SiteRefusal


class GateRefusal(RuntimeError):
    """The gate refused to let an item leave the site."""


def image_digests(images: np.ndarray) -> set[bytes]:
    return {hashlib.sha256(img.tobytes()).digest() for img in images}


class OutboundGate:
    def __init__(self, site_id: str, real_images: np.ndarray | None, ledger_path: Path | None,
                 credentials: SiteCredentials | None = None) -> None:
        """`real_images` uint8 (N, H, W, C), the site's own; None where the site could not load them, and
        then only refusals may leave."""
        self.site_id = site_id
        self._real_digests = image_digests(real_images) if real_images is not None else set()
        self._image_shape = tuple(real_images.shape[1:]) if real_images is not None else None
        self.ledger_path = ledger_path
        self.credentials = credentials

    def send(
        self, item: object, *, run_id: str, round: int, recipient: str = "coordinator", candidate_blob: bytes | None = None
    ) -> bytes:
        """The bytes that leave the site for `item`, ledgered; `GateRefusal` if it may not leave.

        `item` is a `Shard` (encoded; with keys signed and sealed to the coordinator), a `FitReport`
        or a `SiteRefusal` (encoded; `run_id` "" when the site could not read the request's run), an `AuditReport` or a `RelabelReply` (encoded and bound to `candidate_blob`, the
        exact bytes of the candidate or relabelling request they answer; with keys signed, and then
        `candidate_blob` is required). The ledger line's size and SHA-256 are those of the returned bytes.
        """
        extra: dict[str, object] = {}
        answers = b"" if candidate_blob is None else candidate_blob
        signing = self.credentials is not None
        if self._image_shape is None and not isinstance(item, SiteRefusal):
            raise GateRefusal(f"{self.site_id}: this gate knows none of the site's images, so only refusals may leave")
        if isinstance(item, SiteRefusal):
            if item.site_id != self.site_id:
                raise GateRefusal(f"{self.site_id}: refusal is marked as from {item.site_id}")
            kind, signing = "refusal", False
            out = self._encode(codec.encode_refusal, item, run_id=run_id)
        elif isinstance(item, Shard):
            self._check_shard(item)
            kind, extra["images"] = "shard", len(item)
            if self.credentials is not None:
                out = seal_shard(item, run_id=run_id, signer=self.credentials.signing_key,
                                 recipient=self.credentials.coordinator_seal_to)
                extra["sealed_to"] = self.credentials.coordinator_sealing_key_id
            else:
                out = self._encode(codec.encode_shard, item, run_id=run_id)
        elif isinstance(item, AuditReport):
            if item.site_id != self.site_id:
                raise GateRefusal(f"{self.site_id}: audit report is marked as from {item.site_id}")
            if self.credentials is not None and candidate_blob is None:
                raise GateRefusal(f"{self.site_id}: an audit report leaves only bound to the sealed candidate it answers")
            kind = "metrics"
            if self.credentials is not None:
                out = sign_audit_report(item, run_id=run_id, candidate_blob=answers, signer=self.credentials.signing_key)
            else:
                out = self._encode(codec.encode_audit_report, item, run_id=run_id, candidate=answers)
        elif isinstance(item, RelabelReply):
            if item.site_id != self.site_id:
                raise GateRefusal(f"{self.site_id}: labels are marked as from {item.site_id}")
            kind, extra["images"] = "labels", int(np.asarray(item.probs).shape[0])
            if self.credentials is not None:
                if candidate_blob is None:
                    raise GateRefusal(f"{self.site_id}: labels leave only bound to the sealed request they answer")
                out = sign_relabel_reply(item.probs, site_id=self.site_id, run_id=run_id, request_blob=answers,
                                         signer=self.credentials.signing_key)
            else:
                out = self._encode(codec.encode_relabel_reply, item, run_id=run_id, request=answers)
        elif isinstance(item, FitReport):
            if item.site_id != self.site_id:
                raise GateRefusal(f"{self.site_id}: fit report is marked as from {item.site_id}")
            kind, signing = "metrics", False
            out = self._encode(codec.encode_fit_report, item, run_id=run_id)
        else:
            raise GateRefusal(f"{self.site_id}: refusing to send {type(item).__name__}: only synthetic shards, labels of synthetic images and metrics may leave")
        if signing and self.credentials is not None:
            extra["signed_by"] = key_id(self.credentials.signing_key.public_key())
        self._append_ledger(run_id, round, kind, out, recipient, extra)
        return out

    def _encode(self, encode, item: object, **kwargs) -> bytes:  # type: ignore[no-untyped-def]
        try:
            return encode(item, **kwargs)
        except (ValueError, TypeError) as exc:
            raise GateRefusal(f"{self.site_id}: cannot encode {type(item).__name__}: {codec.one_line(exc)}") from None

    def count_sent(self, run_id: str, kind: str) -> int:
        """How many items of `kind` this site has sent in `run_id`, by its ledger."""
        return self.sent_in_run(run_id, kind)[0]

    def runs_in_ledger(self) -> set[str]:
        """The run ids under which this site's ledger records anything sent (empty without a ledger)."""
        if self.ledger_path is None or not self.ledger_path.is_file():
            return set()
        return {str(entry.get("run")) for entry in read_ledger(self.ledger_path)[0]}

    def sent_in_run(self, run_id: str, kind: str) -> tuple[int, int]:
        """How many items of `kind` this site has sent in `run_id`, and how many images they held (shards and
        labels count them), by one reading of its ledger."""
        if self.ledger_path is None or not self.ledger_path.is_file():
            return 0, 0
        entries, _ = read_ledger(self.ledger_path)
        sent = [entry for entry in entries if entry.get("run") == run_id and entry.get("kind") == kind]
        return len(sent), sum(int(entry.get("images", 0)) for entry in sent)

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

    def _append_ledger(self, run_id: str, round: int, kind: str, payload: bytes, recipient: str, extra: dict) -> None:
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
            **extra,
        }
        append_entry(self.ledger_path, entry)
