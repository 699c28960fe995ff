"""Reference points for judging a run: the same student network trained on real data.

Centralized training on every real training image is the upper bound that a federated run is
compared to. It is a measurement tool for whoever holds a public benchmark dataset, never part of
a run: the coordinator never sees real images.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from fedkr.shared.classifier import ClassifierConfig, TrainConfig, accuracy, build_classifier, one_hot, train_classifier
from fedkr.shared.data import DataError, DataSplits


@dataclass(frozen=True)
class BaselineResult:
    name: str
    train_images: int
    test_images: int
    epochs: int
    test_accuracy: float
    seconds: float


def centralized_upper_bound(splits: DataSplits, train: TrainConfig, channels: int = 32) -> BaselineResult:
    if splits.test is None:
        raise DataError(f"{splits.name}: no test split to evaluate on")
    h, w, c = splits.train.image_shape
    model = build_classifier(ClassifierConfig(c, h, w, splits.train.num_classes, channels), train.seed)
    started = time.perf_counter()
    train_classifier(model, splits.train.images, one_hot(splits.train.labels, splits.train.num_classes), train)
    seconds = time.perf_counter() - started
    return BaselineResult(
        name="centralized",
        train_images=len(splits.train),
        test_images=len(splits.test),
        epochs=train.epochs,
        test_accuracy=accuracy(model, splits.test.images, splits.test.labels),
        seconds=seconds,
    )
