"""fedkr on Flower's deployment engine, as real processes on loopback.

One SuperLink with TLS and SuperNode authentication, three SuperNodes each reading its own data
file through the node config, the app submitted with `flwr run`, keys made and sites registered
with fedkr's own commands. Then one SuperNode is killed mid-run, with and without quorum.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time

import numpy as np
import pytest

from federation import CONNECTION, Federation, write_site_datasets
from helpers import REPO

pytestmark = pytest.mark.deployment

SITES = ("site-1", "site-2", "site-3")

#: Small enough for a few minutes on 2 cores. Each digits site holds about 95 holdout images, so the
#: audit runs at a bound that size can show (see tests/helpers.py: tiny_run_config). At 60 generator steps
#: the student learns little; the utility rule is tested at its default elsewhere (test_pipeline.py).
RUN_CONFIG = {"rounds": 2, "ipc": 5, "samples-per-class": 10, "generator-steps": 60, "teacher-epochs": 8, "student-epochs": 10,
              "audit-max-auc": 0.8, "audit-max-distance-auc": 0.8, "audit-max-generator-auc": 0.8, "audit-min-utility": 0.0, "audit-min-adjusted-balanced-accuracy": 0.0, "site-threads": 1,
              "wait-for-sites": 60}


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("federation")
    fed = Federation(root, env=dict(os.environ))
    data = write_site_datasets(root, len(SITES))
    from fedkr.shared.data import load_digits_splits

    test = load_digits_splits(seed=0).test
    np.savez(root / "digits_test.npz", train_images=test.images[..., 0], train_labels=test.labels,
             test_images=test.images[..., 0], test_labels=test.labels)
    fed.cli("fedkr", "coordinator", "init", str(fed.coordinator_dir), "--host", "localhost")
    for name in (*SITES, "intruder"):
        fed.cli("fedkr", "site", "init", str(fed.site_dir(name)), "--name", name, "--coordinator", str(fed.coordinator_dir / "public"))
    fed.start_superlink()
    for name in SITES:
        fed.cli("fedkr", "coordinator", "register-site", str(fed.coordinator_dir), str(fed.site_dir(name) / "site.json"),
                "--connection", CONNECTION)
    fed.data = dict(zip(SITES, data))  # type: ignore[attr-defined]
    for name in SITES:
        fed.start_supernode(name, fed.data[name])  # type: ignore[attr-defined]
    try:
        fed.wait_online(len(SITES))
        yield fed
    finally:
        fed.stop()


def submit(fed: Federation, run_id: str, timeout: float = 900, **overrides: object) -> tuple[int, str]:
    """`flwr run` the app in this repository; return its exit code and the streamed log."""
    settings = {**RUN_CONFIG, **{k.replace("_", "-"): v for k, v in overrides.items()}}
    config = " ".join(f"{k}={v}" for k, v in settings.items())
    config += (f' run-id="{run_id}" out="{fed.root / "runs"}" coordinator-dir="{fed.coordinator_dir}"'
               f' test-data="{fed.root / "digits_test.npz"}"')
    done = fed.cli("flwr", "run", str(REPO), CONNECTION, "--run-config", config, "--stream", check=False, timeout=timeout)
    return done.returncode, done.stdout + done.stderr


def kill_after_fit(fed: Federation, name: str, run_id: str, timeout: float = 600) -> None:
    """Kill a SuperNode once it has sent this run's fit report, so that it dies during the synthesis rounds."""
    ledger = fed.root / "state" / name / "ledger.jsonl"
    fit_line = f'"run": "{run_id}", "round": 0, "kind": "metrics"'
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ledger.is_file() and fit_line in ledger.read_text():
            time.sleep(3)  # let the fit reply reach the SuperLink
            fed.kill(name)
            return
        time.sleep(0.5)
    raise TimeoutError(f"{name} never finished fit")


def test_unregistered_supernode_is_refused(federation: Federation) -> None:
    proc = federation.start_supernode("intruder", federation.data["site-1"], max_retries=1)  # type: ignore[attr-defined]
    code = proc.wait(timeout=120)
    federation.processes.pop("intruder", None)
    assert code != 0
    assert "Failed to activate SuperNode" in federation.log("intruder")
    assert "No SuperNode found with the given public key" in federation.log("superlink")


def test_run_over_tls_with_authenticated_nodes_releases_a_verifiable_bundle(federation: Federation) -> None:
    started = time.perf_counter()
    code, out = submit(federation, "deploy-all")
    release = federation.root / "runs" / "deploy-all" / "release"
    assert code == 0, out[-4000:]
    assert release.is_dir(), out[-4000:]
    print(f"full run over the deployment engine: {time.perf_counter() - started:.0f} s")

    manifest = json.loads((release / "manifest.json").read_text())
    assert manifest["contributors"] == list(SITES)
    verified = federation.cli("fedkr", "verify", str(release), "--key", str(federation.coordinator_dir / "public" / "signing.pub"), check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # Every shard left its site sealed and signed, and the site's ledger says so.
    for name in SITES:
        ledger = federation.cli("fedkr", "site", "ledger", "--state-dir", str(federation.root / "state" / name), "--json").stdout
        entries = [json.loads(line) for line in ledger.splitlines() if line.strip()]
        shards = [e for e in entries if e["run"] == "deploy-all" and e["kind"] == "shard"]
        assert len(shards) == 2 and all(e["sealed_to"] and e["signed_by"] for e in shards)

    # The SuperLink's database (and its write-ahead log) holds no plaintext image of any shard.
    images = np.load(release / "distilled.npz")["images"]
    stored = b"".join(p.read_bytes() for p in federation.root.glob("superlink.db*"))
    assert b"deploy-all" in stored, "the scan reads the database the run used"
    leaked = [i for i, img in enumerate(images) if img.tobytes() in stored]
    assert not leaked, f"{len(leaked)} of {len(images)} released images found in plaintext in the SuperLink database"
    # shard images travel as lossless WebP pages, whose header names the format in plaintext
    assert b"WEBPVP8L" not in stored, "a plaintext WebP shard page in the SuperLink database"
    with sqlite3.connect(federation.database) as db:
        assert db.execute("select count(*) from node").fetchone()[0] == len(SITES), "only the registered nodes"


def test_killed_supernode_with_quorum_releases_from_the_rest(federation: Federation) -> None:
    import threading

    killer = threading.Thread(target=kill_after_fit, args=(federation, "site-3", "deploy-quorum"))
    killer.start()
    code, out = submit(federation, "deploy-quorum", min_sites=2, rounds=1)
    killer.join()
    release = federation.root / "runs" / "deploy-quorum" / "release"
    assert release.is_dir(), out[-4000:]
    manifest = json.loads((release / "manifest.json").read_text())
    assert manifest["contributors"] == ["site-1", "site-2"]
    metrics = json.loads((release / "metrics.json").read_text())
    assert "site-3" in metrics["sites_dropped"]
    # the lost site is named wherever a reader of the release looks, with the stage and the reason
    assert manifest["sites_left_out"]["site-3"]["stage"] == "synthesis"
    assert manifest["sites_left_out"] == metrics["sites_left_out"]
    page = (release / "audit.html").read_text()
    assert "left the run before the audit" in page and "<td>site-3</td>" in page


def test_killed_supernode_below_quorum_writes_no_release(federation: Federation) -> None:
    import threading

    killer = threading.Thread(target=kill_after_fit, args=(federation, "site-2", "deploy-no-quorum"))
    killer.start()
    code, out = submit(federation, "deploy-no-quorum", min_sites=2, rounds=1, expected_sites=2)  # site-3 is gone
    killer.join()
    run_dir = federation.root / "runs" / "deploy-no-quorum"
    assert not (run_dir / "release").exists()
    stopped = json.loads((run_dir / "stopped.json").read_text())
    assert "fewer than the quorum of 2" in stopped["reason"] and "site-2" in stopped["reason"], stopped
