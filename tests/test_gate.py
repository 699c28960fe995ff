import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch

from fedkr.client.gate import GateRefusal, OutboundGate
from fedkr.shared import codec
from fedkr.shared.attack_report import AttackResult
from fedkr.shared.reports import AuditReport, RelabelReply
from fedkr.shared.shard import Shard, ShardSpec

from helpers import synthetic_images

REAL = synthetic_images(50, seed=1)


def shard_of(images: np.ndarray, site="site-0") -> Shard:
    n = images.shape[0]
    soft = np.full((n, 3), 1 / 3, np.float32)
    return Shard(site, 1, images, soft, np.zeros(n, np.int64), n)


@pytest.fixture
def gate(tmp_path):
    return OutboundGate("site-0", REAL, tmp_path / "ledger.jsonl")


def test_synthetic_shard_leaves_as_the_bytes_it_ledgers(gate):
    shard = shard_of(synthetic_images(10, seed=2))
    out = gate.send(shard, run_id="r1", round=1)
    assert isinstance(out, bytes)
    entry = json.loads(gate.ledger_path.read_text().splitlines()[0])
    assert entry["kind"] == "shard" and entry["run"] == "r1" and entry["round"] == 1 and entry["recipient"] == "coordinator"
    assert entry["bytes"] == len(out) and entry["sha256"] == hashlib.sha256(out).hexdigest()
    back = codec.decode_shard(out, site_id="site-0", run_id="r1", round=1, spec=ShardSpec((8, 8, 1), 3))
    assert back.images.tobytes() == shard.images.tobytes()


def test_real_image_cannot_leave_inside_a_shard(gate):
    images = synthetic_images(10, seed=2)
    images[4] = REAL[17]
    with pytest.raises(GateRefusal, match="1 image\\(s\\) identical to real"):
        gate.send(shard_of(images), run_id="r1", round=1)
    assert not gate.ledger_path.exists(), "nothing refused is ledgered as sent"


@pytest.mark.parametrize("item", [REAL, REAL[0], torch.nn.Linear(2, 2), {"images": REAL}, b"raw bytes", "text"])
def test_anything_else_is_refused(gate, item):
    with pytest.raises(GateRefusal, match="only synthetic shards, labels of synthetic images and metrics"):
        gate.send(item, run_id="r1", round=1)


def test_invalid_or_misattributed_shard_refused(gate):
    with pytest.raises(GateRefusal, match="invalid shard"):
        gate.send(dataclasses.replace(shard_of(synthetic_images(3, seed=3)), declared_count=9), run_id="r", round=1)
    with pytest.raises(GateRefusal, match="labelled as from"):
        gate.send(shard_of(synthetic_images(3, seed=3), site="site-9"), run_id="r", round=1)


def test_metrics_and_labels_leave_bound_to_what_they_answer(gate):
    report = AuditReport("site-0", (AttackResult("loss", "student", 10, 10, 0.5, (0.3, 0.7), 0.0, (0.0, 0.3), 0.0, (0.0, 0.3), 0.0, 0.1, 0.0, (0.0, 0.3)),))
    out = gate.send(report, run_id="r1", round=-1, candidate_blob=b"candidate")
    labels = gate.send(RelabelReply("site-0", np.full((2, 3), 1 / 3, np.float32)), run_id="r1", round=-2, candidate_blob=b"request")
    entries = [json.loads(line) for line in gate.ledger_path.read_text().splitlines()]
    assert [e["kind"] for e in entries] == ["metrics", "labels"]
    assert [e["sha256"] for e in entries] == [hashlib.sha256(out).hexdigest(), hashlib.sha256(labels).hexdigest()]
    assert codec.decode_audit_report(out, site_id="site-0", run_id="r1", candidate=b"candidate") == AuditReport.from_dict(report.to_dict())
    with pytest.raises(codec.CodecError, match="another candidate"):
        codec.decode_audit_report(out, site_id="site-0", run_id="r1", candidate=b"another")
    with pytest.raises(GateRefusal, match="marked as from"):
        gate.send(AuditReport("site-1", ()), run_id="r1", round=-1)
