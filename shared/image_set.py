"""The one in-memory form of a data set, whichever loader read it, and the checks every loader shares.

Every loader raises `DataError` with a one-line message naming the source and the problem, so that
the CLI can print it without a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The working size's default, in pixels (`RunConfig.image_size` reads it from here): images with a
#: side larger than this are resized to it at load. It keeps one 2-core site's fit within minutes.
DEFAULT_IMAGE_SIZE = 32
#: The smallest side fedkr's networks take.
MIN_IMAGE_SIDE = 8


class DataError(ValueError):
    """Bad input data; the message is one line naming the source and the problem."""


@dataclass(frozen=True)
class ImageSet:
    """Images as uint8 (N, H, W, C) with integer labels in [0, num_classes)."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: np.ndarray) -> "ImageSet":
        return ImageSet(self.images[index], self.labels[index], self.class_names)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes)


@dataclass(frozen=True)
class DataSplits:
    """A training split that sites partition, and an optional real test split for the coordinator."""

    name: str
    train: ImageSet
    test: ImageSet | None


def make_image_set(
    images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], where: str
) -> ImageSet:
    """Validate arrays already in fedkr's form (images uint8 (N, H, W, C), labels int (N,)) into an `ImageSet`.

    Raises:
        DataError: for no images, a count mismatch, images under 8x8 or a label outside the classes.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.shape[0] == 0:
        raise DataError(f"{where}: no images")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{where}: {images.shape[0]} images but {labels.shape[0]} labels")
    if images.shape[1] < MIN_IMAGE_SIDE or images.shape[2] < MIN_IMAGE_SIDE:
        raise DataError(f"{where}: images are {images.shape[1]}x{images.shape[2]}; at least "
                        f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} is needed")
    num_classes = len(class_names)
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise DataError(f"{where}: label {int(labels[bad][0])} is outside [0, {num_classes})")
    return ImageSet(np.ascontiguousarray(images), labels.astype(np.int64), class_names)


def require_two_classes(train: ImageSet, where: str) -> None:
    """A classifier needs images of two classes at least; a one-class data set is refused at load.

    Raises:
        DataError: naming the one class that has images.
    """
    present = np.flatnonzero(train.class_counts())
    if present.size < 2:
        only = train.class_names[int(present[0])] if present.size else "none"
        raise DataError(f"{where}: every training image is of one class ({only!r}); fedkr trains classifiers "
                        "and needs images of at least two classes")


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices so that about `fraction` of each class goes to the second part (seeded)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    first: list[np.ndarray] = []
    second: list[np.ndarray] = []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_second = int(round(fraction * idx.size))
        if idx.size >= 2:
            n_second = min(max(n_second, 1), idx.size - 1)
        else:
            n_second = 0
        second.append(idx[:n_second])
        first.append(idx[n_second:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def held_back(name: str, full: ImageSet, test_fraction: float, seed: int) -> DataSplits:
    """A data set with no test split of its own: `test_fraction` of each class held back as one (none at 0)."""
    if test_fraction <= 0:
        return DataSplits(name=name, train=full, test=None)
    train_idx, test_idx = stratified_split(full.labels, test_fraction, seed)
    return DataSplits(name=name, train=full.subset(train_idx), test=full.subset(test_idx))
