from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedkr.client.site_data import SiteDataSpec, load_site_data
from fedkr.shared.data import DataError, load_dataset, load_digits_splits, load_image_folder, load_medmnist_npz


def write_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def good_arrays(n=20, rgb=False):
    rng = np.random.default_rng(0)
    shape = (n, 28, 28, 3) if rgb else (n, 28, 28)
    return dict(
        train_images=rng.integers(0, 256, shape, dtype=np.uint8),
        train_labels=rng.integers(0, 3, (n, 1)).astype(np.uint8),
        test_images=rng.integers(0, 256, shape, dtype=np.uint8)[:5],
        test_labels=rng.integers(0, 3, (5, 1)).astype(np.uint8),
    )


@pytest.mark.parametrize("rgb", [False, True])
def test_medmnist_npz_gray_and_rgb(tmp_path, rgb):
    splits = load_medmnist_npz(write_npz(tmp_path / "x.npz", **good_arrays(rgb=rgb)))
    assert splits.train.images.shape == (20, 28, 28, 3 if rgb else 1)
    assert splits.train.labels.dtype == np.int64 and splits.train.labels.shape == (20,)
    assert splits.test is not None and len(splits.test) == 5


def _error_for(tmp_path, **changes) -> str:
    arrays = good_arrays()
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as info:
        load_medmnist_npz(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, "one line naming the file"
    return message


def test_missing_key(tmp_path):
    assert "missing key" in _error_for(tmp_path, train_labels=None)


def test_mismatched_lengths(tmp_path):
    assert "20 images but 19 labels" in _error_for(tmp_path, train_labels=np.zeros((19, 1), np.uint8))


def test_label_out_of_range(tmp_path):
    labels = np.zeros((20, 1), np.int64)
    labels[3] = -1
    assert "outside [0," in _error_for(tmp_path, train_labels=labels)


def test_empty(tmp_path):
    assert "no images" in _error_for(tmp_path, train_images=np.zeros((0, 28, 28), np.uint8), train_labels=np.zeros((0, 1), np.uint8))


def test_wrong_dtype(tmp_path):
    assert "uint8" in _error_for(tmp_path, train_images=np.zeros((20, 28, 28), np.float32))


def test_wrong_rank(tmp_path):
    assert "shape" in _error_for(tmp_path, train_images=np.zeros((20, 784), np.uint8))


def test_float_labels(tmp_path):
    assert "integers" in _error_for(tmp_path, train_labels=np.zeros((20, 1), np.float32))


def test_not_an_npz(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable"):
        load_medmnist_npz(path)


def test_unknown_source():
    with pytest.raises(DataError, match="no such file"):
        load_dataset("/nonexistent/data.npz")


def test_image_folder(tmp_path):
    for cls, value in (("benign", 10), ("malignant", 200)):
        (tmp_path / cls).mkdir()
        for i in range(6):
            Image.fromarray(np.full((12, 12), value + i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    splits = load_image_folder(tmp_path)
    assert splits.train.class_names == ("benign", "malignant")
    assert splits.train.images.shape == (12, 12, 12, 1)
    assert (splits.train.labels == 1).sum() == 6


def test_image_folder_mixed_sizes(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(tmp_path / "a" / "0.png")
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "a" / "1.png")
    with pytest.raises(DataError, match="others are"):
        load_image_folder(tmp_path)


def test_digits_needs_no_download():
    splits = load_digits_splits()
    assert splits.train.images.dtype == np.uint8 and splits.train.images.max() == 255
    assert len(splits.train) + len(splits.test) == 1797
    assert set(np.unique(splits.test.labels)) == set(range(10))


def test_class_absent_at_a_site_is_allowed(tmp_path):
    arrays = good_arrays(n=120)
    arrays["train_labels"] = np.array([0, 1] * 60, np.uint8)[:, None]
    arrays["test_labels"] = np.array([0, 1, 2, 0, 1], np.uint8)[:, None]  # class 2 exists, but no site holds it
    path = write_npz(tmp_path / "x.npz", **arrays)
    data = load_site_data(SiteDataSpec(str(path), 0, 2, "iid", 0, 0.2))
    assert data.members.num_classes == 3
    assert data.members.class_counts()[2] == 0


def test_site_too_small_to_audit(tmp_path):
    path = write_npz(tmp_path / "x.npz", **good_arrays(n=30))
    with pytest.raises(DataError, match="at least 16 and 10 are needed"):
        load_site_data(SiteDataSpec(str(path), 0, 2, "iid", 0, 0.2))


def test_sixteen_bit_images_scaled_not_clipped(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(np.full((10, 10), 30000, np.uint16)).save(tmp_path / "a" / "0.png")
    splits = load_image_folder(tmp_path)
    assert splits.train.images.max() == round(30000 * 255 / 65535)
