"""The auditor's positive and negative controls on real digits: it must catch a leaking model, and pass a clean one."""

import numpy as np
import pytest
from fedkr.client.auditor import AuditSettings, audit_model
from fedkr.shared.audit_policy import DISTANCE_ATTACKS, STUDENT_ATTACKS, AuditPolicy, decide_release
from fedkr.shared.classifier import ClassifierConfig, TrainConfig, build_classifier, one_hot, train_classifier
from fedkr.shared.data import load_digits_splits

CONFIG = ClassifierConfig(1, 8, 8, 10, 16)
#: The default policy, less the white-box generator attack: these controls are classifiers, with no generator
#: behind them (that attack's own controls are in test_generator_attack.py).
POLICY = AuditPolicy(required_attacks=STUDENT_ATTACKS + DISTANCE_ATTACKS)

#: Whole runs or many model fits: outside the fast loop (`pytest -m "not slow"`).
pytestmark = pytest.mark.slow


def split(seed: int):
    train = load_digits_splits().train
    idx = np.random.default_rng(seed).permutation(len(train))
    return tuple(train.subset(idx[a:b]) for a, b in ((0, 200), (200, 600), (600, 1000), (1000, 1100)))


def test_positive_control_overfit_model_is_caught_and_blocked():
    members, holdout, _, released = split(0)
    model = build_classifier(CONFIG, 0)
    losses = train_classifier(model, members.images, one_hot(members.labels, 10),
                              TrainConfig(epochs=60, augment=False, weight_decay=0.0, seed=0))
    assert losses[-1] < 0.01, "the control needs a model trained to near-zero loss"
    report = audit_model("site-0", model, members, holdout, AuditSettings(lira=True), released_images=released.images)
    loss, rmia, lira = report.result("loss"), report.result("rmia"), report.result("lira")
    assert loss.auc > 0.65 and loss.auc_ci[0] > 0.6
    assert rmia.auc > 0.6 and rmia.auc_ci[0] > 0.55
    assert lira.auc > 0.6 and lira.auc_ci[0] > 0.55
    assert loss.control is not None and loss.control["auc_ci"][0] <= 0.5 <= loss.control["auc_ci"][1]
    decision = decide_release({"site-0": report}, POLICY)
    assert not decision.passed
    assert {("loss", "auc_upper"), ("rmia", "auc_upper")} <= {(f.attack, f.metric) for f in decision.failures}


def test_negative_control_model_that_never_saw_the_members_passes():
    """Four splits, five attacks each. A 95% interval misses 0.5 now and then by chance alone, and the
    attacks on one split are correlated, so the test asks for most intervals to hold 0.5, and for
    the gate to pass every time."""
    held = []
    for seed in range(4):
        members, holdout, other, released = split(seed)
        model = build_classifier(CONFIG, seed)
        train_classifier(model, other.images, one_hot(other.labels, 10), TrainConfig(epochs=20, seed=seed))
        report = audit_model("site-0", model, members, holdout, AuditSettings(seed=seed), released_images=released.images)
        decision = decide_release({"site-0": report}, POLICY)
        assert decision.passed, decision.reasons
        held += [r.auc_ci[0] <= 0.5 <= r.auc_ci[1] for r in report.results]
    assert len(held) == 20 and sum(held) >= 15, held


def test_reference_models_are_reused_for_a_second_target_and_the_scores_are_the_same(monkeypatch):
    """A bench attacks several models at one site: the second audit reuses the reference models
    (none trained) and scores exactly as a fresh audit would; a changed population retrains."""
    from fedkr.client import auditor
    from fedkr.client.auditor import ReferenceCache

    members, holdout, other, _ = split(3)
    targets = []
    for seed in (0, 1):
        model = build_classifier(CONFIG, seed)
        train_classifier(model, other.images, one_hot(other.labels, 10), TrainConfig(epochs=3, seed=seed))
        targets.append(model)
    settings = AuditSettings(reference_epochs=2, reference_min_steps=20)
    trained = []
    original = auditor._train_references

    def counting(*args):
        trained.append(1)
        return original(*args)

    monkeypatch.setattr(auditor, "_train_references", counting)
    cache = ReferenceCache()
    first = audit_model("site-0", targets[0], members, holdout, settings, references=cache)
    second = audit_model("site-0", targets[1], members, holdout, settings, references=cache)
    assert len(trained) == 1
    fresh = audit_model("site-0", targets[1], members, holdout, settings)
    assert len(trained) == 2
    assert [r.auc for r in second.results] == [r.auc for r in fresh.results]
    assert [r.auc for r in first.results] != [r.auc for r in second.results]
    audit_model("site-0", targets[1], members, holdout.subset(np.arange(len(holdout) - 1)), settings, references=cache)
    assert len(trained) == 3
