"""Classes that differ only by side: the defaults keep them apart, horizontal flips would merge them.

Medical datasets often hold left and right anatomy as separate classes. The constructed case:
scikit-learn's digits 0-4, plus a class "2 mirrored" made of the 2s flipped left to right. A
teacher that trains with random horizontal flips sees both classes as one; with the defaults
(flips off) the teacher tells them apart.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from fedkr.shared.classifier import ClassifierConfig, build_classifier, one_hot, predict_logits, train_classifier
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
