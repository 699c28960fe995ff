"""CSV label manifests: files plus a CSV naming each file's label, and one-line errors naming the CSV's line."""

import numpy as np
import pytest
from PIL import Image

from fedkr.shared.data import DataError, load_dataset
from helpers import write_dicom


def _pngs(folder, n, value):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((12, 12), value + i, np.uint8)).save(folder / f"{value}_{i}.png")
    return [f"{folder.name}/{value}_{i}.png" for i in range(n)]


def _csv(tmp_path, rows, header="path,label", name="labels.csv", sep=","):
    path = tmp_path / name
    path.write_text("\n".join([header, *(sep.join(r) for r in rows)]) + "\n", encoding="utf-8")
    return path


def test_paths_relative_to_the_csv_and_labels_as_class_names(tmp_path):
    rows = [(p, "pneumonia") for p in _pngs(tmp_path / "img", 5, 200)] + [(p, "normal") for p in _pngs(tmp_path / "img", 5, 20)]
    splits = load_dataset(str(_csv(tmp_path, rows)), folder_test_fraction=0.0)
    assert splits.name == "labels" and splits.train.class_names == ("normal", "pneumonia")
    assert list(splits.train.class_counts()) == [5, 5] and splits.test is None
    assert (splits.train.images[splits.train.labels == 1] >= 200).all()


def test_other_column_names_semicolons_a_bom_and_a_split_column(tmp_path):
    rows = [(p, "b", "train") for p in _pngs(tmp_path / "x", 4, 200)] + [(p, "a", "TRAIN") for p in _pngs(tmp_path / "x", 4, 20)]
    rows += [("x/200_0.png", "b", "test"), ("x/20_0.png", "a", "test"), ("x/20_1.png", "a", "val")]
    path = tmp_path / "export.csv"
    path.write_text("\ufeffImage Index;Finding;Set\n" + "\n".join(";".join(r) for r in rows) + "\n", encoding="utf-8")
    splits = load_dataset(f"{path}?path=Image Index&label=Finding&split=Set")
    assert (len(splits.train), len(splits.test)) == (8, 2) and splits.train.class_names == ("a", "b")


@pytest.mark.parametrize(
    "rows, expected",
    [
        ([("img/200_0.png", "x"), ("img/200_1.png", "x"), ("img/missing.png", "y"), ("img/200_2.png", "y")],
         "labels.csv line 4: no such file 'img/missing.png'"),
        ([("img/200_0.png", "x"), ("img/200_1.png", "x"), ("img/200_2.png", " ")], "labels.csv line 4: empty label"),
        ([("img/200_0.png", "x"), ("img/200_1.png", "x"), ("img/200_2.png", "y"), ("img/200_3.png", "yy"), ("img/200_4.png", "y")],
         "labels.csv line 5: label 'yy' appears in no other training row"),
    ],
)
def test_bad_rows_are_one_line_errors_naming_the_line(tmp_path, rows, expected):
    _pngs(tmp_path / "img", 5, 200)
    with pytest.raises(DataError) as info:
        load_dataset(str(_csv(tmp_path, rows)))
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_test_label_absent_from_training_is_refused_by_line(tmp_path):
    files = _pngs(tmp_path / "img", 5, 200)
    rows = [(files[0], "x", "train"), (files[1], "x", "train"), (files[2], "y", "train"), (files[3], "y", "train"),
            (files[4], "z", "test")]
    with pytest.raises(DataError, match="line 6: test label 'z' appears in no training row"):
        load_dataset(str(_csv(tmp_path, rows, header="path,label,split")))


def test_missing_column_says_how_to_name_columns(tmp_path):
    with pytest.raises(DataError, match=r"no column 'label' .*labels.csv\?path=COLUMN&label=COLUMN"):
        load_dataset(str(_csv(tmp_path, [("a.png", "x")], header="path,finding")))
    with pytest.raises(DataError, match="unknown column key"):
        load_dataset(f"{_csv(tmp_path, [('a.png', 'x')])}?lable=x")


def test_dicom_files_keyed_by_sop_instance_uid(tmp_path):
    ramp = (np.arange(256).reshape(16, 16) * 16).astype(np.uint16)
    rows = []
    for i in range(6):
        uid = write_dicom(tmp_path / "export" / f"study{i}" / f"IM{i:04d}", ramp if i % 2 else ramp[::-1])
        rows.append((uid, "left" if i % 2 else "right"))
    write_dicom(tmp_path / "export" / "unlabelled.dcm", ramp)
    splits = load_dataset(str(_csv(tmp_path, rows, header="SOPInstanceUID,label")), folder_test_fraction=0.0)
    assert splits.train.images.shape == (6, 16, 16, 1) and list(splits.train.class_counts()) == [3, 3]
    assert (splits.train.images[splits.train.labels == 0][:, 0, 0, 0] < 50).all()
    with pytest.raises(DataError, match="line 2: no DICOM file below .* has SOP Instance UID 1.2.3"):
        load_dataset(str(_csv(tmp_path, [("1.2.3", "left"), *rows], header="SOPInstanceUID,label", name="bad.csv")))
