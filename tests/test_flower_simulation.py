"""One small end-to-end run through Flower's simulation engine (Ray), as `fedkr demo` runs it."""

import json

import pytest

from fedkr.shared.release_inspect import inspect_release
from fedkr.simulation import run_flower_simulation
from helpers import tiny_run_config


@pytest.mark.flower
def test_flower_simulation_end_to_end(tmp_path):
    config = tiny_run_config(tmp_path, run_id="flower", rounds=1, generator_steps=150, teacher_epochs=10, student_epochs=20)
    outcome = run_flower_simulation(config)
    assert outcome.released
    assert inspect_release(outcome.release_dir).all_ok
    metrics = json.loads((outcome.release_dir / "metrics.json").read_text())
    assert set(metrics["sites"]) == {"site-0", "site-1"}
    assert metrics["pool_size_by_round"] == {"1": 400}
    assert metrics["student_test_accuracy"] > 0.2  # 10 classes; tiny budgets, but well above chance
    # Each simulated site kept its own state and ledger, apart from the coordinator's run folder.
    for site in ("site-0", "site-1"):
        ledger = (tmp_path / "sites" / site / "ledger.jsonl").read_text().splitlines()
        assert [json.loads(line)["kind"] for line in ledger] == ["metrics", "shard", "labels", "metrics"]  # fit, round 1, relabel, audit
    assert metrics["relabelled_by"] == ["site-0", "site-1"], "query.relabel reached both sites through Flower"
