"""MedMNIST `.npz` files (MedMNIST v2 at 28 px, MedMNIST+ at 64, 128 and 224 px), read without unpickling.

Class names of the single-label 2D data sets are MedMNIST's own, copied verbatim from the
`label` entries of `INFO` in the medmnist package's `medmnist/info.py` (version 3.0.2; the
package is not a dependency: fedkr needs none of its download code). A file is matched by its
name's first part in any case (`bloodmnist_224.npz`, `BREASTMNIST.NPZ`); other files get "class 0",
"class 1", ....

Only the keys fedkr uses are read (`train_images`, `train_labels` and, when present,
`test_images`, `test_labels`), with numpy's `allow_pickle=False`: extra keys are never touched,
and a needed key stored as a pickled object array is refused, not unpickled. Multi-label data
(ChestMNIST's 14 labels per image) and 3D volumes (the MedMNIST 3D sets) are refused with an
error that names the split and the key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .image_decode import fit_array
from .image_set import DEFAULT_IMAGE_SIZE, DataError, DataSplits, ImageSet, make_image_set

_ORGANS = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left",
           "lung-right", "pancreas", "spleen")

#: Class names of every single-label 2D MedMNIST data set, as medmnist 3.0.2's INFO gives them.
MEDMNIST_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "pathmnist": (
        "adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle", "normal colon mucosa",
        "cancer-associated stroma", "colorectal adenocarcinoma epithelium",
    ),
    "dermamnist": (
        "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma", "benign keratosis-like lesions",
        "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions",
    ),
    "octmnist": ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
    "pneumoniamnist": ("normal", "pneumonia"),
    "retinamnist": ("0", "1", "2", "3", "4"),
    "breastmnist": ("malignant", "normal, benign"),
    "bloodmnist": (
        "basophil", "eosinophil", "erythroblast",
        "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte", "monocyte",
        "neutrophil", "platelet",
    ),
    "tissuemnist": (
        "Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule", "Glomerular endothelial cells",
        "Interstitial endothelial cells", "Leukocytes", "Podocytes", "Proximal Tubule Segments",
        "Thick Ascending Limb",
    ),
    "organamnist": _ORGANS,
    "organcmnist": _ORGANS,
    "organsmnist": _ORGANS,
}

SUPPORTED = "fedkr supports single-label 2D images: images (N, H, W) or (N, H, W, C) uint8, labels (N,) or (N, 1) integers"


def _read(archive, key: str, where: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    try:
        return np.asarray(archive[key])
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(f"{where}: holds Python objects (a pickled object array), which fedkr does not "
                            f"unpickle; save it as a numeric array, e.g. np.asarray(x, dtype=np.int64)") from None
        raise DataError(f"{where}: not readable ({exc.__class__.__name__})") from None
    except Exception as exc:  # zipfile and zlib raise several types for a damaged member
        raise DataError(f"{where}: not readable ({exc.__class__.__name__})") from None


def _images(images: np.ndarray, where: str) -> np.ndarray:
    """uint8 (N, H, W) or (N, H, W, C) with C 1 or 3, as (N, H, W, C); anything else refused, saying what it looks like."""
    if images.dtype != np.uint8:
        raise DataError(f"{where}: images must be uint8, got {images.dtype}; {SUPPORTED}")
    shape = tuple(images.shape)
    if images.ndim == 3:
        return images[..., None]
    if images.ndim == 4 and shape[-1] in (1, 3):
        return images
    if images.ndim == 4 and shape[1] in (1, 3):
        raise DataError(f"{where}: images are {shape}, channels first; {SUPPORTED}")
    if images.ndim in (4, 5):
        raise DataError(f"{where}: images are {shape}, 3D volumes (as the MedMNIST 3D sets); {SUPPORTED}")
    raise DataError(f"{where}: images must have shape (N, H, W) or (N, H, W, C), got {shape}; {SUPPORTED}")


def _labels(labels: np.ndarray, where: str) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] > 1:
        raise DataError(f"{where}: {labels.shape[1]} labels per image (multi-label, as ChestMNIST); {SUPPORTED}")
    if labels.ndim == 2:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{where}: labels must have shape (N,) or (N, 1), got {tuple(labels.shape)}; {SUPPORTED}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: labels must be integers, got {labels.dtype}; {SUPPORTED}")
    return labels.astype(np.int64)


def _split(archive, path: Path, split: str, image_size: int) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    image_key, label_key = f"{split}_images", f"{split}_labels"
    images = _images(_read(archive, image_key, f"{path} [{split} split, {image_key}]"), f"{path} [{split} split, {image_key}]")
    labels = _labels(_read(archive, label_key, f"{path} [{split} split, {label_key}]"), f"{path} [{split} split, {label_key}]")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{path} [{split} split]: {images.shape[0]} images but {labels.shape[0]} labels")
    return fit_array(images, image_size, f"{path} [{split} split]"), labels


def dataset_name(path: Path) -> str:
    """`bloodmnist_224.npz` -> "bloodmnist"; `BREASTMNIST.NPZ` -> "breastmnist"."""
    return Path(path).stem.split("_")[0].lower()


def load_medmnist_npz(path: Path, image_size: int = DEFAULT_IMAGE_SIZE) -> DataSplits:
    """A MedMNIST-style file's train and (if present) test split, images resized to the working size when larger.

    Returns images uint8 (N, H, W, C) with H, W at most `image_size` (area-averaged when resized)
    and labels int64 (N,). Raises `DataError`, naming the split and key, for anything fedkr cannot use.
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise DataError(f"{where}: no such file")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for a corrupt archive
        raise DataError(f"{where}: not a readable .npz file ({exc.__class__.__name__})") from None
    if not hasattr(archive, "files"):
        raise DataError(f"{where}: a single array, not an .npz archive of named arrays")
    with archive:
        missing = [k for k in ("train_images", "train_labels") if k not in archive.files]
        if missing:
            raise DataError(f"{where}: missing key(s) {', '.join(missing)}")
        has_test = "test_images" in archive.files
        if has_test and "test_labels" not in archive.files:
            raise DataError(f"{where}: has test_images but is missing test_labels")
        train = _split(archive, path, "train", image_size)
        test = _split(archive, path, "test", image_size) if has_test else None
    name = dataset_name(path)
    top = max(int(lab.max()) for _, lab in filter(None, (train, test)) if lab.size) if train[1].size else 0
    class_names = MEDMNIST_CLASS_NAMES.get(name) or tuple(f"class {i}" for i in range(top + 1))
    train_set = make_image_set(*train, class_names, f"{where} [train split]")
    test_set: ImageSet | None = make_image_set(*test, class_names, f"{where} [test split]") if test else None
    if test_set is not None and test_set.image_shape != train_set.image_shape:
        raise DataError(f"{where}: test images are {test_set.image_shape}, train images {train_set.image_shape}")
    return DataSplits(name=name, train=train_set, test=test_set)
