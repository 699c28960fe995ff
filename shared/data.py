"""Where a data set comes from: one entry point (`load_dataset`) over every source fedkr reads.

- `digits`: scikit-learn's bundled 8x8 handwritten digits (the demo);
- a MedMNIST-style `.npz` file, any case (`shared/medmnist.py`), MedMNIST+ sizes included;
- a CSV label manifest of image or DICOM files, `labels.csv[?path=..&label=..]` (`shared/manifest.py`);
- a folder with one subfolder per class, of image or DICOM files at any depth (`shared/image_folder.py`).

Every source is brought to the working size (`image_size`, pixels: a side larger than it is
resized to it, `shared/image_decode.py`), so that the teacher, the generator's data, the student
and the released images all have one size; the log states it. A data set whose training images
are all of one class is refused. Every failure is a one-line `DataError` naming the source.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .image_folder import load_image_folder
from .image_set import (
    DEFAULT_IMAGE_SIZE,
    DataError,
    DataSplits,
    ImageSet,
    held_back,
    make_image_set,
    require_two_classes,
    stratified_split,
)
from .manifest import ManifestSource, load_manifest
from .medmnist import MEDMNIST_CLASS_NAMES, load_medmnist_npz

__all__ = [
    "DEFAULT_IMAGE_SIZE", "DataError", "DataSplits", "ImageSet", "MEDMNIST_CLASS_NAMES", "load_dataset",
    "load_digits_splits", "load_image_folder", "load_medmnist_npz", "make_image_set", "stratified_split",
]

log = logging.getLogger(__name__)

SOURCES = "give 'digits', a .npz file, a labels .csv file or an image folder"


def load_digits_splits(test_fraction: float = 0.2, seed: int = 0) -> DataSplits:
    """scikit-learn's bundled 8x8 handwritten digits, scaled to uint8, with a held-back test part."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[..., None]
    full = make_image_set(images, bunch.target, tuple(str(i) for i in range(10)), "digits")
    return held_back("digits", full, test_fraction, seed)


def _load(source: str, seed: int, folder_test_fraction: float, image_size: int) -> DataSplits:
    if source == "digits":
        return load_digits_splits(seed=seed)
    manifest = ManifestSource.parse(source)
    if manifest is not None:
        return load_manifest(manifest, test_fraction=folder_test_fraction, seed=seed, image_size=image_size)
    path = Path(source).expanduser()
    if path.suffix.lower() == ".npz":
        return load_medmnist_npz(path, image_size=image_size)
    if path.is_dir():
        return load_image_folder(path, test_fraction=folder_test_fraction, seed=seed, image_size=image_size)
    if not path.exists():
        raise DataError(f"{source}: no such file or folder ({SOURCES})")
    raise DataError(f"{source}: unsupported data source ({SOURCES})")


def load_dataset(
    source: str, seed: int = 0, folder_test_fraction: float = 0.2, image_size: int = DEFAULT_IMAGE_SIZE
) -> DataSplits:
    """Load `digits`, a MedMNIST-style `.npz`, a CSV manifest or an image folder, at the working size `image_size`.

    A source without a test split of its own (a folder, a manifest without a split column) has
    `folder_test_fraction` of each class held back as one (none at 0: a deployed site trains on
    all of its images). Images are uint8 (N, H, W, C) with H and W at most `image_size`.

    Raises:
        DataError: for any source fedkr cannot use, and for training images of a single class.
    """
    if image_size < 8:
        raise DataError(f"image size must be at least 8 pixels, got {image_size}")
    splits = _load(source, seed, folder_test_fraction, image_size)
    require_two_classes(splits.train, source)
    h, w, c = splits.train.image_shape
    log.debug("%s: %d training images in %d classes; working size %dx%d px, %d channel%s (image-size %d)",
             splits.name, len(splits.train), splits.train.num_classes, h, w, c, "" if c == 1 else "s", image_size)
    return splits
