"""The site's ledger is a hash chain: `fedkr site ledger --verify` finds a line changed, removed or inserted.

The lines are written by the real outbound gate (client/gate.py) sending real shards; the check
runs through the `fedkr` command (typer's CliRunner).
"""

from __future__ import annotations

import hashlib
import json
import threading

import numpy as np
from fedkr.client.gate import OutboundGate
from fedkr.client.ledger import GENESIS, append_entry, verify_ledger
from fedkr.shared.shard import Shard
from helpers import one_line_error, run_fedkr, synthetic_images


def sent(tmp_path, count: int = 4):  # type: ignore[no-untyped-def]
    """A ledger holding `count` shards the gate let out; returns its path."""
    gate = OutboundGate("site-0", synthetic_images(20, seed=1), tmp_path / "ledger.jsonl")
    for round_ in range(1, count + 1):
        images = synthetic_images(5, seed=10 + round_)
        gate.send(Shard("site-0", round_, images, np.full((5, 3), 1 / 3, np.float32), np.zeros(5, np.int64), 5),
                  run_id="r1", round=round_)
    return gate.ledger_path


def verify(path):  # type: ignore[no-untyped-def]
    return run_fedkr("site", "ledger", "--state-dir", str(path.parent), "--verify")


def test_each_line_holds_the_hash_of_the_one_before(tmp_path):
    ledger = sent(tmp_path)
    lines = ledger.read_bytes().splitlines()
    prevs = [json.loads(line)["prev_sha256"] for line in lines]
    assert prevs == [GENESIS] + [hashlib.sha256(line).hexdigest() for line in lines[:-1]]
    result = verify(ledger)
    assert result.exit_code == 0, result.stderr
    assert "4 line(s), hash chain intact" in result.stdout
    assert f"head sha256 {hashlib.sha256(lines[-1]).hexdigest()}" in result.stdout


def test_verify_finds_a_line_changed_removed_or_inserted(tmp_path):
    ledger = sent(tmp_path)
    lines = ledger.read_bytes().splitlines(keepends=True)

    changed = lines[1].replace(b'"round": 2', b'"round": 7')
    ledger.write_bytes(b"".join([lines[0], changed, *lines[2:]]))
    one_line_error(verify(ledger), "the hash chain is broken (1 problem(s) in 4 line(s))", code=1)
    assert "line 3: prev_sha256 is not the hash of line 2" in verify(ledger).stdout

    ledger.write_bytes(b"".join([lines[0], *lines[2:]]))
    assert "line 2: prev_sha256 is not the hash of line 1" in verify(ledger).stdout

    ledger.write_bytes(b"".join([lines[0], lines[1], lines[1], *lines[2:]]))
    assert "line 3: prev_sha256 is not the hash of line 2" in verify(ledger).stdout

    ledger.write_bytes(b"".join(lines[1:]))
    assert "line 1: prev_sha256 is not 64 zeros, the start of the chain" in verify(ledger).stdout


def test_lines_cut_from_the_end_show_only_as_another_head(tmp_path):
    """What the chain cannot show by itself (deploy/site.md, section 7): compare the head with one kept elsewhere."""
    ledger = sent(tmp_path)
    head = verify_ledger(ledger).head
    append_entry(ledger, {"time": "t", "run": "r1", "round": 5, "kind": "metrics", "bytes": 1, "sha256": "0" * 64,
                          "recipient": "coordinator"})
    assert f'"prev_sha256": "{head}"' in ledger.read_text(), "a recorded head stays findable as the next line's link"
    ledger.write_bytes(b"".join(ledger.read_bytes().splitlines(keepends=True)[:-2]))
    cut = verify_ledger(ledger)
    assert cut.ok and cut.lines == 3 and cut.head != head and head not in ledger.read_text()


def test_a_hostile_or_torn_line_is_reported_and_the_chain_goes_on(tmp_path):
    ledger = sent(tmp_path, count=2)
    with ledger.open("ab") as fh:
        fh.write(b'{"bytes": ' + b"7" * 5000 + b"}\n" + b'{"time": "torn')
    append_entry(ledger, {"time": "t", "run": "r1", "round": 3, "kind": "metrics", "bytes": 1, "sha256": "0" * 64,
                          "recipient": "coordinator"})
    check = verify_ledger(ledger)
    assert check.lines == 5 and not check.ok
    assert [p.split(":")[0] for p in check.problems] == ["line 3", "line 4"]
    assert "a number of 5000 characters" in check.problems[0]
    listed = run_fedkr("site", "ledger", "--state-dir", str(tmp_path))
    assert listed.exit_code == 0 and "3 item(s)" in listed.stdout and "2 unreadable line(s) skipped" in listed.stdout


def test_concurrent_writers_keep_one_chain(tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    entry = {"time": "t", "run": "r1", "round": 1, "kind": "metrics", "bytes": 1, "sha256": "0" * 64,
             "recipient": "coordinator"}
    threads = [threading.Thread(target=lambda: [append_entry(ledger, entry) for _ in range(25)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    check = verify_ledger(ledger)
    assert check.ok and check.lines == 100, check.problems[:3]


def test_a_ledger_written_before_chaining_is_reported(tmp_path):
    old = {"time": "t", "run": "r1", "round": 1, "kind": "shard", "bytes": 1, "sha256": "0" * 64, "recipient": "coordinator"}
    (tmp_path / "ledger.jsonl").write_text(json.dumps(old) + "\n")
    result = verify(tmp_path / "ledger.jsonl")
    one_line_error(result, "the hash chain is broken", code=1)
    assert "line 1: not chained (no prev_sha256)" in result.stdout
