import json

import numpy as np
import pytest

from fedkr.shared.release_inspect import inspect_release
from fedkr.shared.attack_report import AttackResult, measure_attack
from fedkr.shared.audit_policy import AuditPolicy, decide_release
from fedkr.shared.reports import AuditReport
from fedkr.shared.utility import UtilityCounts

POLICY = AuditPolicy()
#: The utility check of a student that kept most of what the site's teacher knows.
USEFUL = UtilityCounts(np.array([50, 50]), np.array([45, 44]), np.array([48, 47]))


def result(attack="loss", auc=0.5, ci=(0.45, 0.55), tpr=0.01, tpr_ci=(0.0, 0.05), n=100, target=None):
    target = target or ("distilled_set" if attack.startswith("dcr") else "generator" if attack == "generator_loss" else "student")
    return AttackResult(attack, target, n, n, auc, ci, tpr, tpr_ci, 0.0, (0.0, 0.03), 0.0, 1 / n, tpr, tpr_ci)


def report(site="site-0", utility=USEFUL, **changes):
    """A complete audit; `changes` maps an attack name to the keyword changes of its result."""
    results = tuple(result(a, **changes.get(a, {})) for a in POLICY.required_attacks)
    return AuditReport(site, results, settings={"confidence": 0.95}, utility=utility)


def test_passes_when_every_site_is_close_to_chance():
    decision = decide_release({"site-0": report(), "site-1": report("site-1")}, POLICY)
    assert decision.passed and decision.failures == ()


@pytest.mark.parametrize(
    "replies, site, attack, metric",
    [
        ({"site-0": report(loss={"auc": 0.58, "ci": (0.55, 0.61)})}, "site-0", "loss", "auc_upper"),
        ({"site-0": report(rmia={"tpr": 0.08, "tpr_ci": (0.04, 0.13)})}, "site-0", "rmia", "tpr_at_1pct_fpr_lower"),
        ({"site-0": report(dcr_feature={"auc": 0.6, "ci": (0.52, 0.68)})}, "site-0", "dcr_feature", "auc_upper"),
        ({"site-0": report(generator_loss={"auc": 0.67, "ci": (0.61, 0.73)})}, "site-0", "generator_loss", "auc_upper"),
        ({"site-0": report(generator_loss={"target": "student"})}, "site-0", "generator_loss", "target"),
        ({"site-0": AuditReport("site-0", tuple(r for r in report().results if r.attack != "generator_loss"),
                                settings={"confidence": 0.95}, utility=USEFUL)}, "site-0", "generator_loss", "present"),
        ({"site-0": report(entropy={"auc": float("nan")})}, "site-0", "entropy", "auc"),
        ({"site-0": report(loss={"n": 5})}, "site-0", "loss", "examples"),
        ({"site-0": AuditReport("site-0", ())}, "site-0", "loss", "present"),
        ({"site-0": report(site="site-1")}, "site-0", "", "site_id"),
        ({"site-0": report(loss={"target": "distilled_set"})}, "site-0", "loss", "target"),
        ({"site-0": AuditReport("site-0", report().results, settings={"confidence": 0.5})}, "site-0", "", "confidence"),
        ({"site-0": report(), "site-1": TimeoutError("no reply")}, "site-1", "", "answered"),
        ({}, "", "", "answered"),
        ({"site-0": report(utility=None)}, "site-0", "utility", "present"),
        ({"site-0": report(utility=UtilityCounts(np.array([50, 50]), np.array([50, 0]), np.array([48, 47])))},
         "", "utility", "utility_ratio"),
    ],
)
def test_blocks_and_names_site_attack_metric(replies, site, attack, metric):
    decision = decide_release(replies, POLICY)
    assert not decision.passed
    assert any((f.site, f.attack, f.metric) == (site, attack, metric) for f in decision.failures), decision.failures


def test_refusal_message_names_value_and_threshold():
    decision = decide_release({"site-2": report("site-2", loss={"auc": 0.58, "ci": (0.55, 0.613)})}, POLICY)
    (failure,) = decision.failures
    assert failure.value == pytest.approx(0.613) and failure.threshold == 0.6
    assert failure.message == "site-2: loss attack AUC 0.580, upper 95% bound 0.613 > 0.600"


def test_tpr_rule_fails_only_when_the_data_show_more_than_the_limit():
    noisy = {"site-0": report(loss={"tpr": 0.035, "tpr_ci": (0.017, 0.064)})}  # chance at 1% FPR on a small holdout
    assert decide_release(noisy, POLICY).passed


def test_distance_rule_has_its_own_threshold():
    replies = {"site-0": report(dcr_pixel={"auc": 0.6, "ci": (0.55, 0.65)})}
    assert not decide_release(replies, POLICY).passed
    assert decide_release(replies, AuditPolicy(max_distance_auc_upper=0.7)).passed


def test_generator_rule_has_its_own_threshold():
    replies = {"site-0": report(generator_loss={"auc": 0.62, "ci": (0.56, 0.68)})}
    (failure,) = decide_release(replies, POLICY).failures
    assert failure.message == "site-0: generator_loss attack AUC 0.620, upper 95% bound 0.680 > 0.600"
    assert decide_release(replies, AuditPolicy(max_generator_auc_upper=0.7)).passed
    assert not decide_release(replies, AuditPolicy(max_auc_upper=0.7, max_distance_auc_upper=0.7)).passed
    # its TPR at 1% FPR is reported, not gated: the AUC rule is the generator's rule
    assert decide_release({"site-0": report(generator_loss={"tpr": 0.2, "tpr_ci": (0.16, 0.25)})}, POLICY).passed


def test_report_round_trips_through_its_dict_form():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    measured = measure_attack("loss", "student", rng.normal(0.2, 1, 200), rng.normal(0, 1, 200), labels, labels, ("a", "b", "c"))
    rep = AuditReport("site-0", (measured,), 200, 200, {"members_checked": 200}, {"epsilon": 8.0}, {"reference_models": 2})
    again = AuditReport.from_dict(json.loads(json.dumps(rep.to_dict())))
    assert again == rep


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["results"][0].update(target="elsewhere"),
        lambda d: d["results"][0]["roc"].update(fpr=list(range(5000))),
        lambda d: d.update(results=[d["results"][0]] * 40),
        lambda d: d["results"][0].update(auc_ci=[0.1]),
        lambda d: d.update(dp="eight"),
        lambda d: d["results"][0].update(auc_ci=[-5, -4]),
        lambda d: d["results"][0].update(auc_ci=[0.2, 0.1]),
        lambda d: d["results"][0].update(num_members=10**400),
        lambda d: d["results"][0].update(auc=1e999),
        lambda d: d["results"][0]["histogram"].update(members=[1e999]),
        lambda d: d["results"][0]["roc"].update(fpr="0123"),
        lambda d: d["results"][0].update(roc=[1, 2]),
        lambda d: d.update(settings={"a": {"b": {"c": {"d": {}}}}}),
        lambda d: d.update(near_duplicates={"pixel": [1, 2]}),
    ],
)
def test_malformed_remote_reports_are_rejected(mutate):
    rep = AuditReport("site-0", (result(),)).to_dict()
    mutate(rep)
    with pytest.raises((ValueError, TypeError, KeyError)):
        AuditReport.from_dict(json.loads(json.dumps(rep)))


def test_inspect_rejects_crafted_manifests(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"files": ["a", "b"]}))
    with pytest.raises(ValueError, match="not a valid fedkr manifest"):
        inspect_release(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"files": {"../../etc/passwd": {"sha256": "0"}}}))
    checks = inspect_release(tmp_path).file_checks
    assert checks["../../etc/passwd"].startswith("BAD NAME")
    assert checks["distilled.npz"] == "NOT IN MANIFEST"


@pytest.mark.parametrize("settings", ["[" * 20_000 + "]" * 20_000, '{"n": 10000000000000000000}', '{"a": {"b": {"c": {"d": 1}}}}',
                                      "[1, 2]", "{" * 70_000])
def test_decoder_turns_overflow_and_deep_nesting_into_value_error(settings):
    from fedkr.shared import codec
    from fedkr.v1 import messages_pb2 as pb

    body = pb.AuditReport(site_id="s", run_id="r1", candidate_sha256=codec.sha256(b"c"), settings_json=settings)
    with pytest.raises(codec.CodecError):
        codec.decode_audit_report(codec.wrap(codec.KIND_AUDIT_REPORT, body), site_id="s", run_id="r1", candidate=b"c")


def test_a_release_that_fails_part_way_leaves_nothing_behind(tmp_path):
    from fedkr.server.distill import DistilledSet
    from fedkr.server.release import write_release
    from fedkr.shared.classifier import ClassifierConfig, build_classifier

    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)
    distilled = DistilledSet(images, np.full((4, 2), 0.5, np.float32), np.array([0, 1, 0, 1]), ("a", "b"), np.arange(4))
    student = build_classifier(ClassifierConfig(1, 8, 8, 2, 8), 0)
    with pytest.raises(AttributeError):  # no decision: the audit report cannot be built after the artefacts are written
        write_release(tmp_path / "release", distilled, student, {"run_id": "r1"}, None)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_dp_settings_must_be_finite():
    from fedkr.shared.config import ConfigError, RunConfig

    for bad in ({"dp_epsilon": float("inf")}, {"dp_max_grad_norm": float("inf")}, {"dp_epsilon": -1.0}):
        with pytest.raises(ConfigError):
            RunConfig(**bad)


def test_a_written_and_signed_release_verifies_with_its_audit_report(tmp_path):
    """The audit report write_release puts in a release certifies exactly that release's artefacts."""
    from fedkr.server.distill import DistilledSet
    from fedkr.server.release import write_release
    from fedkr.shared.classifier import ClassifierConfig, build_classifier
    from fedkr.shared.keys import new_signing_key
    from fedkr.shared.release_verify import verify_release

    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)
    distilled = DistilledSet(images, np.full((4, 2), 0.5, np.float32), np.array([0, 1, 0, 1]), ("a", "b"), np.arange(4))
    student = build_classifier(ClassifierConfig(1, 8, 8, 2, 8), 0)
    decision = decide_release({"site-0": report()}, POLICY)
    key = new_signing_key()
    release = write_release(tmp_path / "r1" / "release", distilled, student, {"run_id": "r1"}, decision, signer=key)
    result = verify_release(release, key.public_key())
    assert result.ok, result.problems
    assert ("audit: audit.json says passed, for release r1, naming distilled.npz, student.safetensors, "
            "student_config.json by the manifest's SHA-256s") in result.checked


def test_a_release_and_a_refusal_write_strict_json_and_a_nan_figure_reads_back_as_nan(tmp_path):
    import math

    from fedkr.server.distill import DistilledSet
    from fedkr.server.release import write_refusal, write_release
    from fedkr.shared.classifier import ClassifierConfig, build_classifier
    from fedkr.shared.reports import FitReport

    def strict(path):
        return json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{path.name} holds {name}"))

    fit = FitReport("site-0", 80, 20, ("a", "b"), (8, 8, 1), (40, 40), 0.9, float("nan"), 1.0, 2.0)
    metrics = {"run_id": "r1", "sites": {"site-0": fit.to_dict()}, "student_test_accuracy": float("inf")}
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)
    distilled = DistilledSet(images, np.full((4, 2), 0.5, np.float32), np.array([0, 1, 0, 1]), ("a", "b"), np.arange(4))
    student = build_classifier(ClassifierConfig(1, 8, 8, 2, 8), 0)
    release = write_release(tmp_path / "r1" / "release", distilled, student, metrics, decide_release({"site-0": report()}, POLICY))
    written = strict(release / "metrics.json")
    assert written["student_test_accuracy"] is None and written["sites"]["site-0"]["generator_final_loss"] is None
    assert math.isnan(FitReport.from_dict(written["sites"]["site-0"]).generator_final_loss)  # as a reused fit reads it
    strict(release / "audit.json")
    refused = decide_release({"site-0": report(loss={"auc": 0.58, "ci": (0.55, 0.61)})}, POLICY)
    (tmp_path / "r2").mkdir()  # the run's folder, which the coordinator makes before any stage
    refusal = write_refusal(tmp_path / "r2", refused, metrics, distilled, student)
    assert strict(refusal)["metrics"]["sites"]["site-0"]["generator_final_loss"] is None
    strict(tmp_path / "r2" / "audit.json")


def test_each_site_s_figures_in_the_document_use_the_policy_s_confidence():
    from fedkr.shared.audit_document import build_audit_document

    policy = AuditPolicy(confidence=0.8)
    site = AuditReport("site-0", report().results, settings={"confidence": 0.8}, utility=USEFUL)
    document = build_audit_document("r1", {}, ["a", "b"], decide_release({"site-0": site}, policy))
    expected = list(USEFUL.adjusted_balanced_accuracy_interval("student", 0.8))
    assert document["sites"]["site-0"]["utility"]["student"]["adjusted_balanced_accuracy_interval"] == expected
    assert document["utility"]["student"]["adjusted_balanced_accuracy_interval"] == expected
    assert expected != list(USEFUL.adjusted_balanced_accuracy_interval("student", 0.95))
