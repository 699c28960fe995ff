"""Strict JSON for the reports people open: no NaN or Infinity in audit.json, metrics.json, refusal.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fedkr.shared import json_output


def _strict_loads(text: str):
    """Parse as a strict parser does: NaN, Infinity and -Infinity are errors (RFC 8259)."""
    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_become_null_and_the_rest_is_kept():
    value = {"a": float("nan"), "b": [1.5, float("inf"), -float("inf")], "c": (np.float32("nan"), np.int64(3)),
             "d": np.array([0.25, np.nan]), "e": {"f": "text", "g": None, "h": True, "i": np.float64(2.0)}}
    out = _strict_loads(json_output.dumps(value))
    assert out == {"a": None, "b": [1.5, None, None], "c": [None, 3], "d": [0.25, None],
                   "e": {"f": "text", "g": None, "h": True, "i": 2.0}}
    assert math.isnan(value["a"])  # the input is not modified


def test_objects_json_cannot_encode_raise_unless_a_default_is_given():
    with pytest.raises(TypeError):
        json_output.dumps({"path": Path("x")})
    assert _strict_loads(json_output.dumps({"path": Path("x")}, default=str)) == {"path": "x"}


def test_an_audit_over_one_class_writes_strict_json_that_the_page_reads(tmp_path):
    from fedkr.shared.attack_report import AttackResult
    from fedkr.shared.audit_document import build_audit_document, write_audit
    from fedkr.shared.audit_html import render_audit_html
    from fedkr.shared.audit_policy import AuditPolicy, decide_release
    from fedkr.shared.reports import AuditReport
    from fedkr.shared.utility import count_correct

    policy = AuditPolicy()
    results = tuple(AttackResult(a, "distilled_set" if a.startswith("dcr") else "student", 100, 100, 0.5,
                                 (0.45, 0.55), 0.01, (0.0, 0.02), 0.0, (0.0, 0.03), 0.0, 0.01, 0.01, (0.0, 0.05))
                    for a in policy.required_attacks)
    one_class = count_correct(np.zeros(50, int), np.zeros(50, int), np.zeros(50, int), 3)
    assert all(math.isnan(x) for x in one_class.adjusted_balanced_accuracy_interval("student"))
    decision = decide_release({"site-0": AuditReport("site-0", results, 100, 100, utility=one_class)}, policy)
    document = build_audit_document("run-1", {}, ["a", "b", "c"], decision)
    write_audit(tmp_path, document, None, None)
    text = (tmp_path / "audit.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    written = _strict_loads(text)
    assert written["utility"]["student"]["adjusted_balanced_accuracy_interval"] == [None, None]
    assert written["sites"]["site-0"]["utility"]["student"]["adjusted_balanced_accuracy_interval"] == [None, None]
    page = render_audit_html(written)
    assert "BLOCKED" in page and "cannot be judged" in page
