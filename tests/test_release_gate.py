import json

import pytest

from fedkr.server.release import decide_release, inspect_release
from fedkr.shared.mia import AttackResult
from fedkr.shared.reports import AuditReport


def report(site="site-0", auc=0.5, n=100, attack="loss"):
    return AuditReport(site, (AttackResult(attack, auc, 0.01, n, n),))


def test_passes_when_every_site_is_close_to_chance():
    decision = decide_release({"site-0": report(), "site-1": report("site-1", 0.55)}, 0.6)
    assert decision.passed and decision.failures == []


@pytest.mark.parametrize(
    "replies, expected",
    [
        ({"site-0": report(auc=0.61)}, "site-0: loss attack AUC 0.610"),
        ({"site-0": report(auc=0.2)}, "site-0: loss attack AUC 0.200"),  # flipped attack works as well
        ({"site-0": report(auc=float("nan"))}, "not a number"),
        ({"site-0": report(n=5)}, "at least 10"),
        ({"site-0": AuditReport("site-0", ())}, "no loss attack result"),
        ({"site-0": report(site="site-1")}, "labelled as from site-1"),
        ({"site-0": report(), "site-1": TimeoutError("no reply")}, "site-1: did not return an audit"),
        ({}, "no site returned an audit"),
    ],
)
def test_blocks(replies, expected):
    decision = decide_release(replies, 0.6)
    assert not decision.passed
    assert any(expected in failure for failure in decision.failures), decision.failures


def test_inspect_rejects_crafted_manifests(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"files": ["a", "b"]}))
    with pytest.raises(ValueError, match="not a valid fedkr manifest"):
        inspect_release(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"files": {"../../etc/passwd": {"sha256": "0"}}}))
    checks = inspect_release(tmp_path).file_checks
    assert checks["../../etc/passwd"].startswith("BAD NAME")
    assert checks["distilled.npz"] == "NOT IN MANIFEST"
