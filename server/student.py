"""The student: the released model, trained only on soft-labelled synthetic images (the student's set,
`student_ipc` per class around the distilled set: by default the whole pool)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from fedkr.shared.classifier import (ClassifierConfig, CompactCNN, TrainConfig, build_classifier, embed,
                                     resampling_resolution, train_classifier)
from fedkr.shared.device import Device
from fedkr.shared.reports import FitReport, generator_resolutions

from .distill import DistilledSet
from .relabel import mix_drawn_class


def student_config_for(image_shape: tuple[int, int, int], num_classes: int, channels: int = 32,
                       input_resolution: int = 0) -> ClassifierConfig:
    """The student's network for images of `image_shape` (H, W, C); `input_resolution` as `ClassifierConfig`'s."""
    h, w, c = image_shape
    return ClassifierConfig(c, h, w, num_classes, channels, input_resolution)


def student_input_resolution(reports: Iterable[FitReport], image_shape: tuple[int, int, int]) -> int:
    """The student's `input_resolution` (px) for images of `image_shape` (H, W, C): the resolution the sites'
    generators drew at, the smallest any site reports, so that no input keeps more detail than some
    site's synthetic images carry; 0 (off) where no site reports one or it is not below the images' side."""
    return resampling_resolution(min(generator_resolutions(reports), default=0), image_shape[:2])


def train_student(distilled: DistilledSet, image_shape: tuple[int, int, int], config: TrainConfig,
                  device: Device = None, drawn_class_weight: float = 0.0, input_resolution: int = 0) -> CompactCNN:
    """KL loss against the soft labels at the labels' temperature, with light augmentation, on `device`
    (None: the CPU); the model is returned on the CPU. With `drawn_class_weight` w > 0 the target is
    `mix_drawn_class`: (1 - w) x the soft labels + w x each image's drawn class, one-hot. With
    `input_resolution` r > 0 the student resamples every input to r px and back (`ClassifierConfig`)."""
    model = build_classifier(student_config_for(image_shape, len(distilled.class_names), input_resolution=input_resolution),
                             config.seed)
    targets = distilled.soft_labels
    if drawn_class_weight:
        targets = mix_drawn_class(targets, distilled.hard_labels, drawn_class_weight)
    train_classifier(model, distilled.images, targets, config, device=device)
    return model


def pool_features(images: np.ndarray, soft_labels: np.ndarray, image_shape: tuple[int, int, int], seed: int,
                  device: Device = None) -> np.ndarray:
    """A feature space for selection: a small network fitted briefly to the pool's own soft labels.

    The coordinator has no real data and no site teacher, so it learns its features from what it
    holds; the embedding groups images the teachers see alike.
    """
    scout = build_classifier(student_config_for(image_shape, soft_labels.shape[1], channels=16), seed)
    train_classifier(scout, images, soft_labels, TrainConfig(epochs=4, seed=seed, augment=False), device=device)
    feats = embed(scout, images, device=device)
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    return feats / np.maximum(norms, 1e-8)

