"""Image datasets in one in-memory form, loaded from MedMNIST files, image folders or scikit-learn's digits.

Every loader validates at the edge and raises `DataError` with a one-line message naming the file
and the problem, so that the CLI can print it without a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Class names of the MedMNIST v2 2D datasets that fedkr is benchmarked on (from medmnist's INFO table).
MEDMNIST_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "bloodmnist": (
        "basophil", "eosinophil", "erythroblast", "immature granulocytes",
        "lymphocyte", "monocyte", "neutrophil", "platelet",
    ),
    "breastmnist": ("malignant", "normal, benign"),
    "pneumoniamnist": ("normal", "pneumonia"),
    "dermamnist": (
        "actinic keratoses", "basal cell carcinoma", "benign keratosis-like lesions",
        "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions",
    ),
}

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff"}


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


def _as_nhwc_uint8(images: np.ndarray, where: str) -> np.ndarray:
    if images.dtype != np.uint8:
        raise DataError(f"{where}: images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        return images[..., None]
    if images.ndim == 4 and images.shape[-1] in (1, 3):
        return images
    raise DataError(
        f"{where}: images must have shape (N,H,W) or (N,H,W,3), got {tuple(images.shape)}"
    )


def _as_labels(labels: np.ndarray, where: str) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{where}: labels must have shape (N,) or (N,1), got {tuple(labels.shape)}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: labels must be integers, got {labels.dtype}")
    return labels.astype(np.int64)


def make_image_set(
    images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], where: str
) -> ImageSet:
    """Validate raw arrays and return an `ImageSet`; every failure is a one-line `DataError`."""
    images = _as_nhwc_uint8(np.asarray(images), where)
    labels = _as_labels(np.asarray(labels), where)
    if images.shape[0] == 0:
        raise DataError(f"{where}: no images")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{where}: {images.shape[0]} images but {labels.shape[0]} labels"
        )
    if images.shape[1] < 8 or images.shape[2] < 8:
        raise DataError(f"{where}: images are {images.shape[1]}x{images.shape[2]}; at least 8x8 is needed")
    num_classes = len(class_names)
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise DataError(
            f"{where}: label {int(labels[bad][0])} is outside [0, {num_classes})"
        )
    return ImageSet(np.ascontiguousarray(images), labels, class_names)


def _default_class_names(name: str, labels: list[np.ndarray]) -> tuple[str, ...]:
    if name in MEDMNIST_CLASS_NAMES:
        return MEDMNIST_CLASS_NAMES[name]
    top = max(int(np.max(lab)) for lab in labels if lab.size) if labels else 0
    return tuple(f"class {i}" for i in range(top + 1))


def load_medmnist_npz(path: Path) -> DataSplits:
    """Load an official MedMNIST v2 2D file (train/val/test images and labels)."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise DataError(f"{where}: no such file")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for a corrupt archive
        raise DataError(f"{where}: not a readable .npz file ({exc.__class__.__name__})") from None
    with archive:
        missing = [k for k in ("train_images", "train_labels") if k not in archive.files]
        if missing:
            raise DataError(f"{where}: missing key(s) {', '.join(missing)}")
        has_test = "test_images" in archive.files
        if has_test and "test_labels" not in archive.files:
            raise DataError(f"{where}: has test_images but is missing test_labels")
        arrays = {k: archive[k] for k in archive.files}
    name = path.stem.split("_")[0].lower()
    label_arrays = [np.asarray(arrays[k]).reshape(-1) for k in arrays if k.endswith("_labels")]
    for lab in label_arrays:
        if lab.size and not np.issubdtype(lab.dtype, np.integer):
            raise DataError(f"{where}: labels must be integers, got {lab.dtype}")
    class_names = _default_class_names(name, label_arrays)
    train = make_image_set(arrays["train_images"], arrays["train_labels"], class_names, f"{where} [train]")
    test = (
        make_image_set(arrays["test_images"], arrays["test_labels"], class_names, f"{where} [test]")
        if has_test
        else None
    )
    if test is not None and test.image_shape != train.image_shape:
        raise DataError(f"{where}: test images are {test.image_shape}, train images {train.image_shape}")
    return DataSplits(name=name, train=train, test=test)


def _to_uint8(img) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Gray stays gray (16-bit scaled down, not clipped); everything else becomes RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        raw = np.asarray(img, dtype=np.float64)
        return np.clip(np.rint(raw * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
    if img.mode in ("L", "LA", "1"):
        return np.asarray(img.convert("L"), dtype=np.uint8)
    if img.mode == "P":
        img = img.convert("RGBA")
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def load_image_folder(root: Path, test_fraction: float = 0.0, seed: int = 0) -> DataSplits:
    """Load ROOT/<class name>/<image> files; classes are the sorted subfolder names."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    where = str(root)
    if not root.is_dir():
        raise DataError(f"{where}: no such folder")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{where}: no class subfolders (expected one folder per class)")
    images: list[np.ndarray] = []
    labels: list[int] = []
    shape: tuple[int, ...] | None = None
    for label, class_dir in enumerate(class_dirs):
        for file in sorted(class_dir.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as img:
                    array = _to_uint8(img)
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"{file}: not a readable image ({exc.__class__.__name__})") from None
            if shape is None:
                shape = array.shape
            elif array.shape != shape:
                raise DataError(f"{file}: image is {array.shape}, others are {shape}; resize them to one size")
            images.append(array)
            labels.append(label)
    if not images:
        raise DataError(f"{where}: no image files found in the class subfolders")
    full = make_image_set(
        np.stack(images), np.array(labels), tuple(d.name for d in class_dirs), where
    )
    if test_fraction <= 0:
        return DataSplits(name=root.name, train=full, test=None)
    train_idx, test_idx = stratified_split(full.labels, test_fraction, seed)
    return DataSplits(name=root.name, train=full.subset(train_idx), test=full.subset(test_idx))


def load_digits_splits(test_fraction: float = 0.2, seed: int = 0) -> DataSplits:
    """scikit-learn's bundled 8x8 handwritten digits, scaled to uint8, with a held-back test part."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    full = make_image_set(images, bunch.target, tuple(str(i) for i in range(10)), "digits")
    train_idx, test_idx = stratified_split(full.labels, test_fraction, seed)
    return DataSplits(name="digits", train=full.subset(train_idx), test=full.subset(test_idx))


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


def load_dataset(source: str, seed: int = 0, folder_test_fraction: float = 0.2) -> DataSplits:
    """Load `digits`, a MedMNIST-style `.npz` file, or an image folder (part held back as its test split)."""
    if source == "digits":
        return load_digits_splits(seed=seed)
    path = Path(source).expanduser()
    if path.suffix == ".npz":
        return load_medmnist_npz(path)
    if path.is_dir():
        return load_image_folder(path, test_fraction=folder_test_fraction, seed=seed)
    if not path.exists():
        raise DataError(f"{source}: no such file or folder (give 'digits', a .npz file or an image folder)")
    raise DataError(f"{source}: unsupported data source (give 'digits', a .npz file or an image folder)")
