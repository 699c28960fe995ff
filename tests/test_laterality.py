"""Classes that differ only by side: the defaults keep them apart, horizontal flips would merge them.

Medical datasets often hold left and right anatomy as separate classes. The constructed case:
scikit-learn's digits 0-4, plus a class "2 mirrored" made of the 2s flipped left to right. A
teacher that trains with random horizontal flips sees both classes as one; with the defaults
(flips off) the teacher and the generator's samples tell them apart.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from fedkr.shared.classifier import ClassifierConfig, accuracy, build_classifier, one_hot, predict_logits, train_classifier
from fedkr.shared.config import RunConfig
from fedkr.shared.data import stratified_split

TWO, MIRRORED = 2, 5


def mirrored_digits() -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 8, 8, 1) images and labels 0..5: digits 0-4, and class 5 = the 2s flipped left to right."""
    digits = load_digits()
    images = (digits.images * (255 / 16)).round().astype(np.uint8)[..., None]
    keep = digits.target < 5
    images, labels = images[keep], digits.target[keep]
    flipped = images[labels == TWO][:, :, ::-1]
    return np.concatenate([images, flipped]), np.concatenate([labels, np.full(len(flipped), MIRRORED)])


def per_class_recall(model, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    predicted = predict_logits(model, images).argmax(1)
    return np.array([np.mean(predicted[labels == c] == c) for c in range(MIRRORED + 1)])


def train_teacher(images, labels, hflip: bool):
    config = RunConfig(run_id="laterality", classifier_hflip=hflip)
    model = build_classifier(ClassifierConfig(1, 8, 8, MIRRORED + 1), seed=0)
    train_classifier(model, images, one_hot(labels, MIRRORED + 1), config.teacher_config())
    return model


def test_flips_are_off_by_default():
    config = RunConfig(run_id="x")
    assert not config.classifier_hflip and not config.generator_hflip
    assert not config.teacher_config().hflip and not config.generator_config().hflip


def test_default_teacher_tells_a_class_from_its_mirror_image_and_a_flipping_one_does_not():
    images, labels = mirrored_digits()
    train, test = stratified_split(labels, 0.3, seed=0)
    recall = per_class_recall(train_teacher(images[train], labels[train], hflip=False), images[test], labels[test])
    assert recall[TWO] > 0.85 and recall[MIRRORED] > 0.85, recall
    flipping = per_class_recall(train_teacher(images[train], labels[train], hflip=True), images[test], labels[test])
    assert min(flipping[TWO], flipping[MIRRORED]) < 0.75, flipping  # the control: flips merge the pair


@pytest.mark.slow
def test_default_site_samples_each_side_as_its_own_class(tmp_path):
    """A site fitted with the run defaults (shorter generator training): its samples of "2" and of
    "2 mirrored" are each recognised as their own class by its teacher, as often as the others."""
    from fedkr.client.site import Site
    from fedkr.client.site_data import SiteDataSpec, load_site_data
    from fedkr.shared import codec
    from fedkr.shared.reports import FitPlan
    from fedkr.shared.shard import ShardSpec, SynthesisRequest

    images, labels = mirrored_digits()
    train, test = stratified_split(labels, 0.2, seed=0)
    source = tmp_path / "mirrored.npz"
    np.savez(source, train_images=images[train], train_labels=labels[train], val_images=images[test][:0],
             val_labels=labels[test][:0], test_images=images[test], test_labels=labels[test])
    site = Site("site-0", load_site_data(SiteDataSpec(str(source))), tmp_path / "site")
    config = RunConfig(run_id="laterality", generator_steps=600)
    site.fit(FitPlan(config.run_id, config.teacher_config(), config.generator_config()))
    shard = codec.decode_shard(site.synthesize(SynthesisRequest(config.run_id, 1, (40,) * 6, 4.0)), site_id="site-0",
                               run_id=config.run_id, round=1, spec=ShardSpec((8, 8, 1), 6))
    teacher, _ = site._load(config.run_id)
    agreement = per_class_recall(teacher, shard.images, shard.hard_labels)
    assert agreement[TWO] > 0.6 and agreement[MIRRORED] > 0.6, agreement
    assert accuracy(teacher, images[test], labels[test]) > 0.9
