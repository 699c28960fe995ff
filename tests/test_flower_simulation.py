"""One small end-to-end run through Flower's simulation engine (Ray), as `fedkr demo` runs it."""

import hashlib
import json

import pytest

from fedkr import flower_records
from fedkr.shared import codec
from fedkr.shared.release_inspect import inspect_release
from fedkr.simulation import run_flower_simulation
from fedkr.v1 import messages_pb2 as pb
from helpers import tiny_run_config

REPLIES = {codec.KIND_FIT_REPORT, codec.KIND_SHARD, codec.KIND_RELABEL_REPLY, codec.KIND_AUDIT_REPORT}


@pytest.mark.flower
def test_flower_simulation_end_to_end(tmp_path, monkeypatch):
    received: list[bytes] = []  # every site reply as the ServerApp read it out of its Flower record
    read = flower_records.from_record

    def recording(content, *args, **kwargs):  # type: ignore[no-untyped-def]
        data = read(content, *args, **kwargs)
        if pb.Envelope.FromString(data).kind in REPLIES:
            received.append(data)
        return data

    monkeypatch.setattr(flower_records, "from_record", recording)
    config = tiny_run_config(tmp_path, run_id="flower", rounds=1, generator_steps=150, teacher_epochs=10, student_epochs=20)
    outcome = run_flower_simulation(config)
    assert outcome.released
    assert inspect_release(outcome.release_dir).all_ok
    metrics = json.loads((outcome.release_dir / "metrics.json").read_text())
    assert set(metrics["sites"]) == {"site-0", "site-1"}
    assert metrics["pool_size_by_round"] == {"1": 400}
    assert metrics["student_test_accuracy"] > 0.2  # 10 classes; tiny budgets, but well above chance
    # Each simulated site kept its own state and ledger, apart from the coordinator's run folder, and
    # each ledger line hashes exactly the bytes the ServerApp received from that site.
    left = {(len(b), hashlib.sha256(b).hexdigest()) for b in received}
    ledgered = 0
    for site in ("site-0", "site-1"):
        ledger = [json.loads(line) for line in (tmp_path / "sites" / site / "ledger.jsonl").read_text().splitlines()]
        assert [entry["kind"] for entry in ledger] == ["metrics", "shard", "labels", "metrics"]  # fit, round 1, relabel, audit
        assert all((entry["bytes"], entry["sha256"]) in left for entry in ledger), "a ledger line hashes bytes that never left"
        ledgered += len(ledger)
    assert len(received) == ledgered == 8
    assert metrics["relabelled_by"] == ["site-0", "site-1"], "query.relabel reached both sites through Flower"


@pytest.mark.flower
def test_sites_refuse_a_plan_over_their_cap_and_are_named(tmp_path, caplog):
    """Through Flower's simulation engine: each site refuses a plan over its node config's cap before it
    trains, the ServerApp reads each refusal under the site's name, logs the cap, and the run says why."""
    import logging

    from fedkr.server.coordinator import RunError

    config = tiny_run_config(tmp_path, run_id="capped", rounds=1, generator_steps=10)
    with caplog.at_level(logging.WARNING, logger="fedkr"), pytest.raises(RunError) as caught:
        run_flower_simulation(config, node_config={"max-generator-steps": 5})
    why = "refused to fit: the plan asks 10 generator steps, more than this site accepts (max-generator-steps = 5)"
    assert str(caught.value) == f"no site completed fit: site-0: {why}; site-1: {why}"
    assert "site-0 refused the fit plan: over its cap max-generator-steps" in caplog.text
    for site in ("site-0", "site-1"):
        ledger = [json.loads(line) for line in (tmp_path / "sites" / site / "ledger.jsonl").read_text().splitlines()]
        assert [entry["kind"] for entry in ledger] == ["refusal"]
        assert not (tmp_path / "sites" / site / "runs" / "capped" / "teacher.safetensors").exists()
