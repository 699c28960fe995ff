"""The plain-language summary of an audit: a sentence per site, and remedies drawn from its figures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fedkr.shared.attack_report import AttackResult, measure_attack
from fedkr.shared.audit_document import build_audit_document
from fedkr.shared.audit_html import render_audit_html
from fedkr.shared.audit_policy import AuditPolicy, decide_release
from fedkr.shared.audit_summary import dp_epsilon_for_auc, dp_epsilon_for_tpr, summarize
from fedkr.shared.audit_view import AuditDocument
from fedkr.shared.gate_power import hanley_mcneil_se, holdout_for_auc_upper
from fedkr.shared.mia_stats import bootstrap_auc_ci
from fedkr.shared.reports import AuditReport
from fedkr.shared.utility import UtilityCounts

POLICY = AuditPolicy()
USEFUL = UtilityCounts(np.array([50, 50]), np.array([45, 44]), np.array([48, 47]))


def _result(attack: str, members: np.ndarray, holdout: np.ndarray) -> AttackResult:
    target = "distilled_set" if attack.startswith("dcr") else "generator" if attack == "generator_loss" else "student"
    return measure_attack(attack, target, members, holdout, np.zeros(members.size, int), np.zeros(holdout.size, int),
                          ("a",))


def _site(name: str, shifts: dict[str, float], num_members: int = 385, num_holdout: int = 95, seed: int = 0,
          steps: int | None = 600) -> AuditReport:
    """A site's audit whose attack scores are Gaussian, members shifted by `shifts[attack]` (0: no leak)."""
    rng = np.random.default_rng(seed)
    results = tuple(_result(a, rng.normal(shifts.get(a, 0.0), 1.0, num_members), rng.normal(0.0, 1.0, num_holdout))
                    for a in POLICY.required_attacks)
    settings = {"confidence": 0.95, **({"generator_trained_steps": steps} if steps else {})}
    return AuditReport(name, results, num_members, num_holdout, settings=settings, utility=USEFUL)


def _fixed(name: str, figures: dict[str, tuple[float, tuple[float, float]]], num_members: int = 385,
           num_holdout: int = 95) -> AuditReport:
    """A site's audit with given (AUC, interval) per attack; the others at chance, well within the policy."""
    def one(attack: str) -> AttackResult:
        target = "distilled_set" if attack.startswith("dcr") else "generator" if attack == "generator_loss" else "student"
        auc, ci = figures.get(attack, (0.5, (0.45, 0.55)))
        return AttackResult(attack, target, num_members, num_holdout, auc, ci, 0.01, (0.0, 0.02), 0.0, (0.0, 0.03),
                            0.0, 1 / num_holdout, 0.0, (0.0, 0.03))
    return AuditReport(name, tuple(one(a) for a in POLICY.required_attacks), num_members, num_holdout,
                       settings={"confidence": 0.95, "generator_trained_steps": 600}, utility=USEFUL)


def _document(replies: dict) -> dict:
    return build_audit_document("r1", {}, ["a"], decide_release(replies, POLICY))


def test_hanley_mcneil_agrees_with_the_bootstrap():
    rng = np.random.default_rng(1)
    members, holdout = rng.normal(0.5, 1.0, 400), rng.normal(0.0, 1.0, 100)
    low, high = bootstrap_auc_ci(members, holdout)
    from fedkr.shared.mia import roc_auc

    se = hanley_mcneil_se(roc_auc(members, holdout), 400, 100)
    assert (high - low) / (2 * 1.96) == pytest.approx(se, rel=0.2)
    assert hanley_mcneil_se(0.6, 400, 1000) < hanley_mcneil_se(0.6, 400, 100)
    with pytest.raises(ValueError):
        hanley_mcneil_se(1.0, 10, 10)


def test_the_holdout_remedy_is_the_smallest_holdout_that_closes_the_interval():
    needed = holdout_for_auc_upper(0.55, 0.62, 0.60, 385, 95)
    assert needed is not None and 95 < needed <= 95 * 20
    width, base = 0.07, hanley_mcneil_se(0.55, 385, 95)

    def predicted(n: int) -> float:
        return 0.55 + width * hanley_mcneil_se(0.55, 385, n) / base

    assert predicted(needed) <= 0.60 < predicted(needed - 1)
    assert holdout_for_auc_upper(0.55, 0.58, 0.60, 385, 95) == 95  # already within
    assert holdout_for_auc_upper(0.62, 0.70, 0.60, 385, 95) is None  # the point estimate leaks: no holdout helps
    # the members' own spread bounds the interval: a wide one at 385 members never closes by holdout alone
    assert holdout_for_auc_upper(0.55, 0.66, 0.60, 385, 95) is None


def test_the_dp_epsilons_meet_the_limits_they_are_named_for():
    eps = dp_epsilon_for_auc(0.60)
    assert eps == pytest.approx(math.log(1.5))
    fpr = np.linspace(0.0, 1.0, 200_001)  # the ROC region every eps-DP mechanism stays in
    bound = np.minimum(np.exp(eps) * fpr, 1 - np.exp(-eps) * (1 - fpr))
    assert float(np.sum((bound[1:] + bound[:-1]) / 2 * np.diff(fpr))) == pytest.approx(0.60, abs=1e-6)
    assert math.exp(dp_epsilon_for_tpr(0.03)) * 0.01 == pytest.approx(0.03)
    with pytest.raises(ValueError):
        dp_epsilon_for_auc(0.5)


def test_a_clean_site_passes_in_one_sentence_without_remedies():
    document = _document({"site-0": _site("site-0", {}, num_members=2000, num_holdout=1000)})
    (entry,) = AuditDocument.parse(document).summary
    assert entry.passed and entry.remedies == ()
    assert entry.sentence.startswith("site-0: 6 attacks on the released student, the released images and its own "
                                     "generator, with its 2,000 training images against 1,000 held-out images")
    assert "no attack told this site's patients from unseen ones" in entry.sentence


def test_a_generator_that_memorises_is_named_with_a_budget_and_an_epsilon():
    document = _document({"site-0": _site("site-0", {"generator_loss": 1.0}, num_members=2000, num_holdout=1000)})
    assert not document["decision"]["passed"]
    (entry,) = AuditDocument.parse(document).summary
    assert not entry.passed
    assert "the strongest was the white-box attack on the site's own generator, AUC 0.7" in entry.sentence
    assert "tells this site's training images from unseen ones: a measured leak" in entry.sentence
    remedies = " | ".join(entry.remedies)
    assert entry.remedies[0].startswith("a smaller generator budget: the white-box attack on the site's own generator")
    assert "train it for fewer steps than its 600" in remedies
    assert "\u03b5 \u2264 0.41" in remedies
    assert "memorises its 2,000 training images" in remedies
    assert "more holdout:" not in remedies  # the point estimate is over the limit: more holdout would not help


def test_a_site_too_small_to_show_it_is_told_how_much_holdout_would():
    document = _document({"site-0": _fixed("site-0", {"loss": (0.55, (0.49, 0.62))})})
    (entry,) = AuditDocument.parse(document).summary
    assert "the strongest was the loss attack on the student, AUC 0.55 [0.49, 0.62]" in entry.sentence
    assert "95 held-out images are too few to show it at the policy's 95% confidence" in entry.sentence
    needed = holdout_for_auc_upper(0.55, 0.62, 0.60, 385, 95)
    assert entry.remedies[-1] == (f"more holdout: about {needed:,} held-out images (now 95) would bring the upper "
                                  "bound of the loss attack on the student (AUC 0.550) under the limit if the AUC "
                                  "stayed where it is (the interval scaled by the Hanley-McNeil standard error)")
    assert len(entry.remedies) == 1  # DP bounds an AUC; it does not narrow an interval
    assert not any("generator budget" in r for r in entry.remedies)  # the generator did not fail


def test_a_tpr_failure_names_the_epsilon_that_bounds_tpr_at_one_percent():
    report = _fixed("site-0", {})
    rmia = next(r for r in report.results if r.attack == "rmia")
    from dataclasses import replace

    results = tuple(replace(r, tpr_at_1pct_fpr=0.12, tpr_at_1pct_fpr_ci=(0.08, 0.17)) if r is rmia else r
                    for r in report.results)
    document = _document({"site-0": AuditReport("site-0", results, 385, 95, settings=report.settings, utility=USEFUL)})
    (entry,) = AuditDocument.parse(document).summary
    assert "a measured leak" in entry.sentence
    assert entry.remedies[0] == ("the RMIA attack on the student catches 12% of members at 1% false positives: a "
                                 "leak that more holdout will not hide")
    assert entry.remedies[1] == ("differential privacy at a total \u03b5 \u2264 1.10 for the site (teacher and "
                                 "generator together), which bounds TPR at 1% FPR by 3% whatever the attack")


def test_a_site_that_did_not_answer_and_a_useless_student_are_summarised():
    useless = UtilityCounts(np.array([50, 50]), np.array([50, 0]), np.array([48, 47]))
    report = _fixed("site-0", {})
    report = AuditReport("site-0", report.results, report.num_members, report.num_nonmembers,
                         settings=report.settings, utility=useless)
    document = _document({"site-0": report, "site-1": TimeoutError("no reply in 600 s")})
    summary = AuditDocument.parse(document).summary
    assert [e.site for e in summary] == ["site-0", "site-1", "all sites"]
    assert summary[1].sentence == ("site-1 did not answer the audit (no reply in 600 s): nothing was measured there, "
                                   "so the release cannot pass on its behalf.")
    assert "the student keeps" in summary[2].sentence and summary[2].remedies
    assert "adjusted balanced accuracy is 0.000" in summary[2].sentence  # below the floor on its own figure too
    assert any("`--dp-models generator`" in r for r in summary[2].remedies)


def test_audit_json_and_the_page_carry_the_summary(tmp_path):
    from fedkr.shared.audit_document import write_audit

    document = _document({"site-0": _fixed("site-0", {"generator_loss": (0.74, (0.69, 0.79))})})
    write_audit(tmp_path, document, None, None)
    stored = json.loads((tmp_path / "audit.json").read_text())
    assert stored["summary"][0]["site"] == "site-0" and stored["summary"][0]["remedies"]
    page = (tmp_path / "audit.html").read_text()
    assert page.index("In plain words") < page.index("<h3>Failures</h3>")
    assert "What would make it pass:" in page and "train it for fewer steps than its 600" in page


def test_an_older_document_without_a_summary_still_gets_one_on_the_page():
    document = _document({"site-0": _site("site-0", {}, num_members=2000, num_holdout=1000)})
    stored = document.pop("summary")
    assert [e.to_dict() for e in summarize(AuditDocument.parse(document))] == stored
    page = render_audit_html(document)
    assert "In plain words" in page and "no attack told this site" in page


def test_text_from_remote_parties_is_escaped_in_the_summary():
    document = _document({"<b>x</b>": TimeoutError("<script>alert(1)</script>")})
    page = render_audit_html(document)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


def test_a_missing_attack_is_not_called_a_small_holdout():
    report = _fixed("site-0", {}, num_members=4000, num_holdout=1000)
    results = tuple(r for r in report.results if r.attack != "rmia")
    document = _document({"site-0": AuditReport("site-0", results, 4000, 1000, settings=report.settings,
                                                utility=USEFUL)})
    (entry,) = AuditDocument.parse(document).summary
    assert "a required attack is missing" in entry.sentence and "too few" not in entry.sentence
    assert entry.remedies == ("the site runs the RMIA attack on the student, which the policy requires",)


def test_an_interval_wholly_above_chance_is_not_called_compatible_with_no_leak():
    document = _document({"site-0": _fixed("site-0", {"loss": (0.57, (0.52, 0.63))})})
    (entry,) = AuditDocument.parse(document).summary
    assert "a weak leak is likely" in entry.sentence


@pytest.mark.parametrize("policy", [AuditPolicy(max_tpr_at_1pct_fpr=0.01), AuditPolicy(max_auc_upper=0.5)])
def test_any_valid_policy_yields_a_summary(policy):
    report = _fixed("site-0", {"loss": (0.7, (0.65, 0.75))})
    from dataclasses import replace

    results = tuple(replace(r, tpr_at_1pct_fpr=0.12, tpr_at_1pct_fpr_ci=(0.08, 0.17)) if r.attack == "rmia" else r
                    for r in report.results)
    decision = decide_release({"site-0": AuditReport("site-0", results, 385, 95, settings=report.settings,
                                                     utility=USEFUL)}, policy)
    document = build_audit_document("r1", {}, ["a"], decision)
    assert document["summary"][0]["remedies"]


def test_hostile_figures_leave_the_page_without_a_summary_line_that_raises():
    document = _document({"site-0": _fixed("site-0", {"loss": (0.55, (0.49, 0.62))})})
    document["decision"]["failures"].append({"site": "site-0", "attack": "rmia", "metric": "tpr_at_1pct_fpr_lower",
                                             "value": 0.5, "threshold": 2})
    attack = document["sites"]["site-0"]["attacks"][0]
    attack["num_members"], attack["num_nonmembers"] = 10**400, 10**5000
    document["sites"]["site-0"]["num_nonmembers"] = 10**400
    page = render_audit_html(document)
    assert "BLOCKED" in page
