"""Low-FPR reporting: TPR at 0.1% FPR and at the lowest FPR a holdout resolves, in every attack's
result, on the wire, in the privacy officer's page and in the bench table."""

from __future__ import annotations

import numpy as np
import pytest

from fedkr.shared.attack_report import lowest_resolvable_fpr, measure_attack


def _outlier_case() -> tuple[np.ndarray, np.ndarray]:
    """95 held-out scores, one far above the rest; 20 members between them and the outlier."""
    holdout = np.concatenate([np.arange(94, dtype=np.float64), [1000.0]])
    members = np.full(20, 500.0)
    return members, holdout


def test_the_lowest_resolvable_fpr_is_one_held_out_image():
    assert lowest_resolvable_fpr(95) == pytest.approx(1 / 95)
    assert lowest_resolvable_fpr(1000) == pytest.approx(0.001)
    with pytest.raises(ValueError, match="at least one image"):
        lowest_resolvable_fpr(0)


def test_below_the_resolved_fpr_the_tpr_is_at_zero_false_positives():
    members, holdout = _outlier_case()
    labels_m, labels_h = np.zeros(members.size, int), np.zeros(holdout.size, int)
    result = measure_attack("loss", "student", members, holdout, labels_m, labels_h, ("a",))
    assert result.lowest_fpr == pytest.approx(1 / 95)
    # at 0.1% FPR a holdout of 95 allows no false positive: the outlier hides every member
    assert result.tpr_at_01pct_fpr == 0.0
    # one false positive (the outlier) is allowed at 1/95: every member is caught
    assert result.tpr_at_lowest_fpr == 1.0
    low, high = result.tpr_at_lowest_fpr_ci
    assert 0.8 < low <= 1.0 == high  # Clopper-Pearson on 20 of 20


def test_a_holdout_of_a_thousand_resolves_one_in_a_thousand():
    rng = np.random.default_rng(0)
    members, holdout = rng.normal(1.0, 1.0, 500), rng.normal(0.0, 1.0, 1000)
    result = measure_attack("loss", "student", members, holdout, np.zeros(500, int), np.zeros(1000, int), ("a",))
    assert result.lowest_fpr == pytest.approx(0.001)
    assert result.tpr_at_lowest_fpr == result.tpr_at_01pct_fpr


def test_the_new_figures_survive_the_wire_and_the_audit_document():
    from fedkr.shared import codec
    from fedkr.shared.audit_view import AuditDocument
    from fedkr.shared.reports import AuditReport

    members, holdout = _outlier_case()
    result = measure_attack("loss", "student", members, holdout, np.zeros(20, int), np.zeros(95, int), ("a",))
    report = AuditReport("site-0", (result,), 20, 95, settings={"confidence": 0.95})
    data = codec.encode_audit_report(report, run_id="r1", candidate=b"candidate")
    back = codec.decode_audit_report(data, site_id="site-0", run_id="r1", candidate=b"candidate").results[0]
    assert (back.lowest_fpr, back.tpr_at_lowest_fpr, *back.tpr_at_lowest_fpr_ci) == pytest.approx(
        (result.lowest_fpr, result.tpr_at_lowest_fpr, *result.tpr_at_lowest_fpr_ci))
    view = AuditDocument.parse({"sites": {"site-0": {"answered": True, "num_members": 20, "num_nonmembers": 95,
                                                     "attacks": [result.to_dict()]}}})
    attack = view.sites[0].attacks[0]
    assert attack.tpr_at_lowest_fpr == 1.0 and attack.lowest_fpr == pytest.approx(1 / 95)
    assert view.sites[0].lowest_fpr == pytest.approx(1 / 95)


def test_the_page_says_what_each_site_s_holdout_resolves():
    from fedkr.shared.audit_html import render_audit_html

    members, holdout = _outlier_case()
    result = measure_attack("loss", "student", members, holdout, np.zeros(20, int), np.zeros(95, int), ("a",))
    page = render_audit_html({"sites": {"site-0": {"answered": True, "num_members": 20, "num_nonmembers": 95,
                                                   "attacks": [result.to_dict()]}}})
    assert "TPR at the lowest FPR resolved" in page
    assert "The lowest false-positive rate this holdout resolves is 1.05%" in page
    assert "TPR at zero false positives" in page
    assert "at FPR 1.05%" in page


def test_the_bench_table_gives_the_fpr_floor_where_the_holdout_is_small():
    from fedkr.bench import _low_fpr_cell

    assert _low_fpr_cell(0.0, 1 / 95) == "0.000 (FPR floor 1.05%)"
    assert _low_fpr_cell(0.12, 1 / 2000) == "0.120"
    assert _low_fpr_cell(None, None) == "n/a"


def test_a_result_of_an_older_version_reads_with_its_floor_from_the_counts():
    from fedkr.shared.attack_report import AttackResult

    members, holdout = _outlier_case()
    data = measure_attack("loss", "student", members, holdout, np.zeros(20, int), np.zeros(95, int), ("a",)).to_dict()
    for key in ("lowest_fpr", "tpr_at_lowest_fpr", "tpr_at_lowest_fpr_ci"):
        del data[key]
    old = AttackResult.from_dict(data)
    assert old.lowest_fpr == pytest.approx(1 / 95) and np.isnan(old.tpr_at_lowest_fpr)
    data["lowest_fpr"] = 0.5  # a party's own floor is not taken: it follows from the counts
    assert AttackResult.from_dict({**data, "tpr_at_lowest_fpr": 1.0,
                                   "tpr_at_lowest_fpr_ci": [0.8, 1.0]}).lowest_fpr == pytest.approx(1 / 95)
