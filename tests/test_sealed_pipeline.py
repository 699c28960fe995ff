"""The deployment's trust rules, end to end through the in-process link: sealed and signed shards,
registered sites only, a bad shard dropped without touching the pool, quorum, signed releases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import RecordingSite, ledger_matches, tiny_run_config

from fedkr.client.credentials import init_site, load_site_credentials
from fedkr.client.site import Site
from fedkr.client.site_data import SiteDataSpec, load_site_data
from fedkr.server.coordinator import Coordinator, RunError
from fedkr.server.keyring import init_coordinator, load_coordinator_keys, read_site_file, record_site
from fedkr.inprocess import InProcessLink
from fedkr.shared.keys import load_verify_key
from fedkr.shared.reports import RelabelRequest
from fedkr.shared.release_verify import verify_release

#: Sealing mechanics at one-step budgets: the student learns nothing here, so the policy's AUC and utility
#: rules are opened (both are tested at their defaults in test_release_gate.py, test_utility.py, test_pipeline.py).
FAST = dict(rounds=2, generator_steps=1, teacher_epochs=1, student_epochs=1, audit_max_auc=1.0, audit_max_distance_auc=1.0, audit_max_generator_auc=1.0,
            audit_min_utility=0.0, audit_min_adjusted_balanced_accuracy=0.0)

#: Whole runs or many model fits: outside the fast loop (`pytest -m "not slow"`).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    root = tmp_path_factory.mktemp("deployment")
    init_coordinator(root / "coordinator", ["localhost"])
    data = [load_site_data(SiteDataSpec("digits", i, 3, "iid", 0, 0.2)) for i in range(3)]
    for i in range(4):
        init_site(root / f"keys-{i}", f"site-{i}", root / "coordinator" / "public")
        record_site(root / "coordinator", read_site_file(root / f"keys-{i}" / "site.json"), node_id=None)
    return root, data


def sealed_site(root, data, i: int, keys_dir: str | None = None) -> Site:
    credentials = load_site_credentials(root / (keys_dir or f"keys-{i}"))
    return Site(credentials.site_name, data[i], root / "state" / f"site-{i}", credentials)


def impostor_keys(root) -> str:
    """Keys for a site calling itself site-2, made after the real site-2 registered its own."""
    if not (root / "impostor" / "site.json").exists():
        init_site(root / "impostor", "site-2", root / "coordinator" / "public")
    return "impostor"


def run(root, sites, run_id: str, **overrides):
    config = tiny_run_config(root / "runs", run_id=run_id, coordinator_dir=str(root / "coordinator"), **{**FAST, **overrides})
    return Coordinator(config, None).run(InProcessLink(sites))


@pytest.fixture(scope="module")
def mixed_run(deployment):
    """Two good sites, an impostor using a registered name, a registered site sending unsealed shards,
    and a site nobody registered: the run goes on with the two good ones."""
    root, data = deployment
    init_site(root / "stranger", "site-9", root / "coordinator" / "public")
    sites = [
        RecordingSite(sealed_site(root, data, 0)),
        sealed_site(root, data, 1),
        sealed_site(root, data, 2, impostor_keys(root)),
        Site("site-3", data[2], root / "state" / "plain-3"),  # registered, but runs without its keys
        Site("site-9", data[2], root / "state" / "site-9", load_site_credentials(root / "stranger")),
    ]
    outcome = run(root, sites, "mixed", min_sites=2)
    outcome.metrics["sent_by_site_0"] = sites[0].sent  # what site-0's answers were, as the link received them
    return root, outcome


def test_sealed_run_releases_a_signed_bundle_and_ledgers_sealed_shards(mixed_run):
    root, outcome = mixed_run
    assert outcome.released
    assert outcome.metrics["contributors"] == ["site-0", "site-1"] and outcome.metrics["sealed_transport"]
    result = verify_release(outcome.release_dir, load_verify_key(root / "coordinator" / "public" / "signing.pub"))
    assert result.ok, result.problems
    ledger = [json.loads(line) for line in (root / "state" / "site-0" / "ledger.jsonl").read_text().splitlines()]
    # Each line hashes the exact signed or sealed bytes that reached the coordinator.
    assert len(ledger_matches(root / "state" / "site-0" / "ledger.jsonl", "mixed", outcome.metrics["sent_by_site_0"])) == 5
    shards = [e for e in ledger if e["run"] == "mixed" and e["kind"] == "shard"]
    assert len(shards) == 2 and all(e["sealed_to"] and e["signed_by"] for e in shards)
    labels = [e for e in ledger if e["run"] == "mixed" and e["kind"] == "labels"]
    assert len(labels) == 1 and labels[0]["signed_by"] == shards[0]["signed_by"]
    assert outcome.metrics["relabelled_by"] == ["site-0", "site-1"], "both sites' signed labels were accepted"


def test_a_site_labels_one_set_per_run(deployment, mixed_run):
    root, data = deployment
    site = Site("site-0", data[0], root / "state" / "site-0")  # its ledger holds the mixed run's labels
    with pytest.raises(ValueError, match="already"):
        site.relabel(RelabelRequest("mixed", np.zeros((2, 8, 8, 1), np.uint8), 4.0))
    with pytest.raises(ValueError, match="accepts only requests sealed"):
        sealed_site(root, data, 0).relabel(RelabelRequest("mixed", np.zeros((2, 8, 8, 1), np.uint8), 4.0))


def test_impostor_is_dropped_and_its_shard_never_pooled(mixed_run):
    _, outcome = mixed_run
    assert "signed by key" in outcome.metrics["sites_dropped"]["site-2"]
    assert outcome.metrics["pool_size_by_round"] == {"1": 2 * 200, "2": 2 * 200}  # two sites, 20 images x 10 classes each
    assert set(outcome.metrics["audit"]["sites"]) == {"site-0", "site-1"}


def test_unregistered_site_is_left_out_at_fit(mixed_run):
    _, outcome = mixed_run
    assert "not registered" in outcome.metrics["sites_failed_fit"]["site-9"]


def test_unsealed_site_is_dropped_by_a_sealed_coordinator(mixed_run):
    _, outcome = mixed_run
    assert "unsealed shard" in outcome.metrics["sites_dropped"]["site-3"]


def test_below_quorum_stops_with_the_reason_and_no_release(deployment):
    root, data = deployment
    sites = [sealed_site(root, data, 0), sealed_site(root, data, 1), sealed_site(root, data, 2, impostor_keys(root))]
    with pytest.raises(RunError, match="fewer than the quorum of 3"):
        run(root, sites, "no-quorum", min_sites=3, rounds=1)
    run_dir = root / "runs" / "no-quorum"
    assert not (run_dir / "release").exists()
    reason = json.loads((run_dir / "stopped.json").read_text())["reason"]
    assert "site-2" in reason and "signed by key" in reason


def test_site_refuses_an_unsealed_candidate(deployment):
    root, data = deployment
    keys = load_coordinator_keys(root / "coordinator")
    assert set(keys.sites) == {"site-0", "site-1", "site-2", "site-3"}
    site = sealed_site(root, data, 0)
    with pytest.raises(ValueError, match="unsealed audit candidate"):
        site.audit(object())  # type: ignore[arg-type]
