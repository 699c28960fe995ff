"""The bench's coordinator view: the DOMIAS density attack and the attacks on what a coordinator
receives (synthetic shards, weight uploads), each with a positive and a negative control."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from fedkr.shared.density_attack import density_ratio_scores
from fedkr.shared.mia import roc_auc
from fedkr.shared.mia_stats import bootstrap_auc_ci
from helpers import near_copies


def _digits_split() -> tuple[np.ndarray, ...]:
    x, _ = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    return x[order[:300]], x[order[300:600]], x[order[600:1200]], x[order[1200:1500]]


def test_domias_catches_synthetic_data_that_copies_its_members():
    members, holdout, reference, _ = _digits_split()
    rng = np.random.default_rng(1)
    leaky = members[rng.integers(0, len(members), 600)] + rng.normal(0.0, 0.5, (600, 64))
    scores = density_ratio_scores(leaky, reference, np.concatenate([members, holdout]))
    low, _ = bootstrap_auc_ci(scores[:300], scores[300:])
    assert low > 0.6, (roc_auc(scores[:300], scores[300:]), low)


def test_domias_passes_synthetic_data_that_never_saw_the_members():
    members, holdout, reference, other = _digits_split()
    rng = np.random.default_rng(1)
    clean = other + rng.normal(0.0, 0.5, other.shape)
    scores = density_ratio_scores(clean, reference, np.concatenate([members, holdout]))
    low, high = bootstrap_auc_ci(scores[:300], scores[300:])
    assert low < 0.5 < high


@pytest.mark.parametrize("bad, message", [
    (dict(synthetic=np.zeros((1, 4))), "at least 2"),
    (dict(queries=np.zeros((3, 5))), "widths differ"),
    (dict(reference=np.full((3, 4), np.nan)), "non-finite"),
    (dict(dimensions=0), "dimensions"),
])
def test_domias_refuses_unusable_input(bad, message):
    args = {"synthetic": np.ones((3, 4)), "reference": np.arange(12.0).reshape(3, 4), "queries": np.ones((2, 4)), **bad}
    with pytest.raises(ValueError, match=message):
        density_ratio_scores(**args)


@pytest.fixture(scope="module")
def digits_site_data():
    from fedkr.client.site_data import SiteDataSpec, load_site_data

    return [load_site_data(SiteDataSpec("digits", i, 3, "iid", 0, 0.2)) for i in range(3)]


def _model_for(site):  # type: ignore[no-untyped-def]
    from fedkr.shared.classifier import ClassifierConfig, build_classifier

    h, w, c = site.members.image_shape
    return build_classifier(ClassifierConfig(c, h, w, site.members.num_classes, 16), 0)


def _overfitted(site):
    """A classifier trained on `site`'s members to the point of memorizing them (60 epochs, no augmentation)."""
    from fedkr.shared.classifier import TrainConfig, one_hot, train_classifier

    model = _model_for(site)
    train_classifier(model, site.members.images, one_hot(site.members.labels, site.members.num_classes),
                     TrainConfig(epochs=60, seed=0, augment=False))
    return model


def _assert_caught_or_passed(entries, leaks: bool) -> None:
    """The strongest attack's interval lies above 0.6 when `leaks`; otherwise it reaches down near chance."""
    from fedkr.coordinator_view import worst

    top = worst(entries)
    if leaks:
        assert top.auc_ci[0] > 0.6, top
    else:
        assert top.auc_ci[0] < 0.5 + 0.1 and top.auc < 0.6, top


def test_the_shards_view_catches_shards_that_copy_members_and_passes_others(digits_site_data):
    from fedkr.client.auditor import AuditSettings
    from fedkr.coordinator_view import shards_view

    site0, site1, site2 = digits_site_data
    leaky = near_copies(site0.members.images, 400, 0)
    clean = site1.members.images[:400]  # another site's patients: none of site-0's members
    model, reference = _model_for(site0), site2.members.images
    for shards, leaks in ((leaky, True), (clean, False)):
        entries = shards_view(shards, np.full(len(shards), "site-0", dtype=object), [site0], reference, model,
                              AuditSettings())
        assert {e.attack for e in entries} == {"dcr_pixel", "dcr_feature", "domias"}
        assert all(e.site == "site-0" and e.received == "shards" for e in entries)
        _assert_caught_or_passed(entries, leaks)


def test_the_fedavg_view_attacks_every_upload_and_finds_the_overfitted_one(digits_site_data):
    from fedkr.client.auditor import AuditSettings, ReferenceCache
    from fedkr.coordinator_view import fedavg_view, worst

    site = digits_site_data[0]
    untrained, overfitted = _model_for(site), _overfitted(site)
    uploads = [[untrained.state_dict()], [overfitted.state_dict()]]
    entries = fedavg_view(uploads, overfitted.config, [site], AuditSettings(), [ReferenceCache()])
    assert {e.received for e in entries} == {"round 1 weights", "round 2 weights"}
    assert {e.attack for e in entries} == {"loss", "entropy", "rmia"}
    top = worst(entries)
    assert top.received == "round 2 weights" and top.auc > 0.6, top
    with pytest.raises(ValueError, match="uploads for 2 sites"):
        fedavg_view(uploads, overfitted.config, [site, site], AuditSettings(), [ReferenceCache()] * 2)


def test_the_shard_labels_view_catches_soft_labels_that_teach_the_members_and_passes_others(digits_site_data):
    """A coordinator that trains on a site's shards and their soft labels learns the site's members only
    when the shards hold them: copies of members labelled by an overfitted teacher are caught, other
    patients' images labelled by it are not."""
    from fedkr.client.auditor import AuditSettings, ReferenceCache
    from fedkr.coordinator_view import shard_labels_view
    from fedkr.shared.classifier import TrainConfig, predict_proba

    site0, site1, _ = digits_site_data
    teacher = _overfitted(site0)
    recipe = TrainConfig(epochs=60, seed=0, augment=False)
    for shards, leaks in ((site0.members.images, True), (site1.members.images, False)):
        soft = predict_proba(teacher, shards, temperature=4.0)
        ids = np.full(len(shards), "site-0", dtype=object)
        entries = shard_labels_view(shards, soft, ids, [site0], teacher.config, recipe, AuditSettings(),
                                    [ReferenceCache()])
        assert {e.attack for e in entries} == {"loss", "entropy", "rmia"}
        assert all(e.site == "site-0" and e.received == "shard labels" for e in entries)
        _assert_caught_or_passed(entries, leaks)
    with pytest.raises(ValueError, match="3 images, 2 soft labels"):
        shard_labels_view(site0.members.images[:3], soft[:2], ids[:3], [site0], teacher.config, recipe,
                          AuditSettings(), [ReferenceCache()])


def test_the_relabel_view_attacks_only_the_sites_that_sent_a_reply(digits_site_data):
    from fedkr.client.auditor import AuditSettings, ReferenceCache
    from fedkr.coordinator_view import relabel_view

    sites = digits_site_data[:2]
    teachers = [_model_for(site) for site in sites]
    references = [ReferenceCache(), ReferenceCache()]
    every = relabel_view(teachers, sites, AuditSettings(), references)
    assert {e.site for e in every} == {"site-0", "site-1"}
    only = relabel_view(teachers, sites, AuditSettings(), references, relabelled_by=["site-1"])
    assert {e.site for e in only} == {"site-1"} and {e.received for e in only} == {"relabel reply"}
    assert relabel_view(teachers, sites, AuditSettings(), references, relabelled_by=[]) == []
    # a site that failed the fit has no teacher and sent no reply
    assert {e.site for e in relabel_view([None, teachers[1]], sites, AuditSettings(), references)} == {"site-1"}
