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


def test_image_folder_mixed_sizes_resized_to_the_working_size(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(tmp_path / "a" / "0.png")
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "a" / "1.png")
    assert load_image_folder(tmp_path, image_size=16).train.images.shape == (2, 16, 16, 1)


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


# -- data as users hold it: what public reports show breaking, and the fixes -----------------------


def _gray_pngs(folder: Path, n: int = 4, value: int = 60, size: int = 28) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((size, size), value + i, np.uint8)).save(folder / f"img{i:04d}.png")


def test_npz_with_object_array_labels_is_one_line_error_naming_the_key(tmp_path):
    arrays = good_arrays()
    arrays["train_labels"] = np.array([[int(v)] for v in arrays["train_labels"][:, 0]], dtype=object)
    path = write_npz(tmp_path / "objects.npz", **arrays)
    with pytest.raises(DataError) as info:
        load_dataset(str(path))
    message = str(info.value)
    assert "train split, train_labels" in message and "does not unpickle" in message and "\n" not in message


def test_npz_extra_keys_with_pickled_objects_are_never_read(tmp_path):
    path = write_npz(tmp_path / "extra.npz", **good_arrays(), notes=np.array([{"scanner": "x"}], dtype=object))
    assert len(load_dataset(str(path)).train) == 20


def test_upper_case_npz_suffix_is_an_npz(tmp_path):
    arrays = good_arrays()
    arrays["train_labels"] = np.array([0, 1] * 10, np.uint8)[:, None]
    arrays["test_labels"] = np.array([0, 1, 0, 1, 0], np.uint8)[:, None]
    splits = load_dataset(str(write_npz(tmp_path / "BREASTMNIST.NPZ.npz", **arrays).rename(tmp_path / "BREASTMNIST.NPZ")))
    assert splits.name == "breastmnist" and splits.train.class_names == ("malignant", "normal, benign")


def test_metadata_files_beside_images_are_ignored(tmp_path):
    for cls in ("benign", "malignant"):
        _gray_pngs(tmp_path / cls)
        (tmp_path / cls / "._img0000.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
        (tmp_path / cls / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        (tmp_path / cls / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (tmp_path / "__MACOSX" / "benign").mkdir(parents=True)
    (tmp_path / "__MACOSX" / "benign" / "._img0001.png").write_bytes(b"\x00\x05\x16\x07")
    splits = load_dataset(str(tmp_path), folder_test_fraction=0.0)
    assert splits.train.class_names == ("benign", "malignant")
    assert list(splits.train.class_counts()) == [4, 4]


def test_images_one_level_deeper_belong_to_their_class(tmp_path):
    _gray_pngs(tmp_path / "normal" / "patient01", n=3)
    _gray_pngs(tmp_path / "normal" / "patient02", n=2)
    _gray_pngs(tmp_path / "pneumonia", n=4, value=150)
    splits = load_dataset(str(tmp_path), folder_test_fraction=0.0)
    assert list(splits.train.class_counts()) == [5, 4]


def test_class_folder_without_images_is_refused_by_name(tmp_path):
    _gray_pngs(tmp_path / "normal")
    (tmp_path / "pneumonia").mkdir()
    (tmp_path / "pneumonia" / "notes.txt").write_text("to do")
    with pytest.raises(DataError, match="pneumonia: class folder holds no readable image"):
        load_dataset(str(tmp_path), folder_test_fraction=0.0)


@pytest.mark.parametrize("odd_mode", ["RGB", "P"])
def test_rgb_or_palette_file_among_gray_pngs_loads_as_gray(tmp_path, odd_mode):
    _gray_pngs(tmp_path / "a")
    _gray_pngs(tmp_path / "b", value=160)
    Image.fromarray(np.full((28, 28), 99, np.uint8)).convert(odd_mode).save(tmp_path / "b" / "odd.png")
    splits = load_dataset(str(tmp_path), folder_test_fraction=0.0)
    assert splits.train.images.shape == (9, 28, 28, 1)
    assert 99 in splits.train.images


def test_colour_image_makes_the_set_rgb_and_gray_ones_repeat(tmp_path):
    _gray_pngs(tmp_path / "a")
    _gray_pngs(tmp_path / "b", value=160)
    rgb = np.zeros((28, 28, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "b" / "red.png")
    images = load_dataset(str(tmp_path), folder_test_fraction=0.0).train.images
    assert images.shape == (9, 28, 28, 3)
    assert (images[0, ..., 0] == images[0, ..., 2]).all() and (images[-1, 0, 0] == (200, 0, 0)).all()


def test_every_pillow_mode_by_one_rule(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    gray = np.full((16, 16), 128, np.uint8)
    Image.fromarray(gray).save(tmp_path / "a" / "l.png")
    Image.fromarray(gray).convert("LA").save(tmp_path / "a" / "la.png")
    Image.fromarray(gray).convert("RGBA").save(tmp_path / "a" / "rgba.PNG")
    Image.fromarray(gray).convert("P").save(tmp_path / "b" / "p.gif")
    Image.fromarray(np.full((16, 16), 0.5, np.float32)).save(tmp_path / "b" / "f.tif")
    Image.fromarray(np.full((16, 16), 1.0, np.float32)).save(tmp_path / "b" / "f2.tif")
    images = load_image_folder(tmp_path).train.images
    assert images.shape == (6, 16, 16, 1)
    assert [int(im[0, 0, 0]) for im in images] == [128, 128, 128, 0, 255, 128]  # a/l, la, rgba; b/f, f2, p


def test_sixteen_bit_pngs_with_twelve_bit_values_fill_the_range(tmp_path):
    for cls, value in (("a", 4080), ("b", 2040)):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((16, 16), value, np.uint16)).save(tmp_path / cls / f"{i}.png")
    images = load_image_folder(tmp_path).train.images
    assert images.max() == round(4080 * 255 / 4095) and images.min() == round(2040 * 255 / 4095)


def test_truncated_image_is_skipped_with_its_path_in_a_warning(tmp_path, caplog):
    _gray_pngs(tmp_path / "a")
    _gray_pngs(tmp_path / "b", value=160)
    good = (tmp_path / "b" / "img0000.png").read_bytes()
    (tmp_path / "b" / "cut.png").write_bytes(good[: len(good) // 2])
    with caplog.at_level("WARNING", logger="fedkr"):
        splits = load_dataset(str(tmp_path), folder_test_fraction=0.0)
    assert list(splits.train.class_counts()) == [4, 4]
    assert any(str(tmp_path / "b" / "cut.png") in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


def test_one_class_data_set_is_refused_at_load(tmp_path):
    arrays = good_arrays()
    arrays["train_labels"] = np.ones((20, 1), np.uint8)
    arrays["test_labels"] = np.ones((5, 1), np.uint8)
    with pytest.raises(DataError, match="one class .'normal, benign'.; .* at least two classes"):
        load_dataset(str(write_npz(tmp_path / "breastmnist.npz", **arrays)))
    _gray_pngs(tmp_path / "folder" / "only", n=6)
    with pytest.raises(DataError, match="at least two classes"):
        load_dataset(str(tmp_path / "folder"))


@pytest.mark.parametrize("size", [64, 128, 224])
def test_medmnist_plus_sizes_load_at_the_working_size(tmp_path, size):
    rng = np.random.default_rng(0)
    arrays = dict(train_images=rng.integers(0, 256, (12, size, size, 3), dtype=np.uint8),
                  train_labels=np.arange(12)[:, None] % 8, test_images=np.zeros((4, size, size, 3), np.uint8),
                  test_labels=np.arange(4)[:, None])
    splits = load_dataset(str(write_npz(tmp_path / f"bloodmnist_{size}.npz", **arrays)), image_size=32)
    assert splits.train.image_shape == splits.test.image_shape == (32, 32, 3)
    assert splits.train.class_names[3].startswith("immature granulocytes")
    expected = arrays["train_images"][0].reshape(32, size // 32, 32, size // 32, 3).mean(axis=(1, 3))
    assert np.abs(splits.train.images[0].astype(float) - expected).max() <= 1.0, "area-averaged"
    assert load_dataset(str(tmp_path / f"bloodmnist_{size}.npz"), image_size=size).train.image_shape == (size, size, 3)


def test_large_images_in_a_folder_load_at_the_working_size(tmp_path):
    for cls, value in (("a", 40), ("b", 200)):
        (tmp_path / cls).mkdir()
        for i, (h, w) in enumerate([(600, 450), (512, 512), (300, 400)]):
            Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(tmp_path / cls / f"{i}.jpg")
    images = load_image_folder(tmp_path, image_size=32).train.images
    assert images.shape == (6, 32, 32, 1)
    assert abs(int(images[0].mean()) - 40) <= 2 and abs(int(images[-1].mean()) - 200) <= 2


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("train_labels", np.zeros((20, 14), np.uint8), "train split, train_labels]: 14 labels per image (multi-label"),
        ("train_images", np.zeros((20, 28, 28, 28), np.uint8), "train split, train_images]: images are (20, 28, 28, 28), 3D volumes"),
        ("train_images", np.zeros((20, 1, 28, 28), np.uint8), "train split, train_images]: images are (20, 1, 28, 28), channels first"),
        ("train_images", np.zeros((20, 28, 28), np.float32), "train split, train_images]: images must be uint8"),
        ("test_labels", np.zeros((5, 1), np.float64), "test split, test_labels]: labels must be integers"),
    ],
)
def test_unsupported_arrays_name_split_key_and_what_is_supported(tmp_path, key, value, expected):
    message = _error_for(tmp_path, **{key: value})
    assert expected in message and "fedkr supports single-label 2D images" in message


def test_every_single_label_medmnist_2d_file_gets_its_names(tmp_path):
    from fedkr.shared.data import MEDMNIST_CLASS_NAMES

    assert sorted(MEDMNIST_CLASS_NAMES) == sorted(
        ["pathmnist", "dermamnist", "octmnist", "pneumoniamnist", "retinamnist", "breastmnist", "bloodmnist",
         "tissuemnist", "organamnist", "organcmnist", "organsmnist"])
    for name, names in MEDMNIST_CLASS_NAMES.items():
        k = len(names)
        arrays = dict(train_images=np.zeros((2 * k, 28, 28), np.uint8), train_labels=np.arange(2 * k)[:, None] % k)
        splits = load_dataset(str(write_npz(tmp_path / f"{name}_64.npz", **arrays)))
        assert splits.train.class_names == names and splits.name == name
    assert MEDMNIST_CLASS_NAMES["dermamnist"][0] == "actinic keratoses and intraepithelial carcinoma"
    assert MEDMNIST_CLASS_NAMES["octmnist"] == ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal")
