"""CSV label manifests: image or DICOM files plus a CSV that names each file's label.

`--data labels.csv` reads a CSV (UTF-8, a BOM allowed; comma, semicolon or tab separated) whose
header names the columns. Each row names one file and its label:

- by path, column `path`: relative to the CSV's folder (or absolute);
- or by DICOM SOP Instance UID, column `SOPInstanceUID`: the file is found among the DICOM files
  below the CSV's folder (any depth; hidden and metadata files left out);

the label in column `label`, and optionally the split in column `split` ("train" or "test";
"val", "valid" and "validation" rows are left out, as fedkr uses no validation split). Other
column names are given after the file name, URL-style: `labels.csv?path=file&label=finding`, or
`?uid=...`, `?split=...`. Class names are the sorted labels of the training rows.

Each bad row is refused with a one-line error naming the CSV's line: a file that does not exist
(or a UID no file has), an empty label, a training label that appears in no other training row
(a class needs two images at least: often a typo), and a test label that no training row has.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np

from .image_folder import FileTally, read_files, walk
from .image_decode import to_uint8_set
from .image_set import DEFAULT_IMAGE_SIZE, DataError, DataSplits, held_back, make_image_set

log = logging.getLogger(__name__)

COLUMN_KEYS = ("path", "uid", "label", "split")
DEFAULT_COLUMNS = {"path": "path", "uid": "SOPInstanceUID", "label": "label", "split": "split"}
TRAIN, TEST = "train", "test"
LEFT_OUT_SPLITS = ("val", "valid", "validation")


@dataclass(frozen=True)
class ManifestSource:
    """A CSV manifest and the names of its columns (`given` holds those named in the source string)."""

    csv: Path
    columns: dict[str, str]
    given: frozenset[str]

    @classmethod
    def parse(cls, source: str) -> ManifestSource | None:
        """`labels.csv` or `labels.csv?label=finding&path=file`; None when `source` names no CSV file.

        Raises:
            DataError: for an unknown column key or both `path` and `uid`.
        """
        name, _, query = source.partition("?")
        if not name.lower().endswith(".csv"):
            return None
        given = dict(parse_qsl(query, keep_blank_values=True))
        unknown = sorted(set(given) - set(COLUMN_KEYS))
        if unknown:
            raise DataError(f"{source}: unknown column key(s) {', '.join(unknown)} (give {', '.join(COLUMN_KEYS)})")
        if "path" in given and "uid" in given:
            raise DataError(f"{source}: give the file column as path= or as uid=, not both")
        return cls(Path(name).expanduser(), {**DEFAULT_COLUMNS, **given}, frozenset(given))


@dataclass(frozen=True)
class _Row:
    line: int
    key: str
    label: str
    split: str


def _read_rows(source: ManifestSource) -> tuple[list[_Row], str]:
    """The CSV's rows and which key names each file ("path" or "uid")."""
    where = str(source.csv)
    if not source.csv.is_file():
        raise DataError(f"{where}: no such file")
    try:
        text = source.csv.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}: not a readable UTF-8 CSV file ({exc.__class__.__name__})") from None
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text.split("\n", 1)[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(text.splitlines(), dialect=dialect)
    header = [h.strip() for h in reader.fieldnames or []]
    reader.fieldnames = header
    cols = source.columns
    key = "uid" if "uid" in source.given or ("path" not in source.given and cols["path"] not in header
                                              and cols["uid"] in header) else "path"
    for needed in (key, "label", *(("split",) if "split" in source.given else ())):
        if cols[needed] not in header:
            raise DataError(f"{where}: no column {cols[needed]!r} (the header has {', '.join(map(repr, header)) or 'none'}); "
                            f"name the columns as in {source.csv.name}?{'path' if key == 'path' else 'uid'}=COLUMN&label=COLUMN")
    has_split = cols["split"] in header
    rows: list[_Row] = []
    try:
        for record in reader:
            line = reader.line_num
            if not any((v or "").strip() for v in record.values() if isinstance(v, str)):
                continue  # a blank line
            file_key = (record.get(cols[key]) or "").strip()
            label = (record.get(cols["label"]) or "").strip()
            split = (record.get(cols["split"]) or TRAIN).strip().lower() if has_split else TRAIN
            if not file_key:
                raise DataError(f"{where} line {line}: empty {cols[key]!r}")
            if not label:
                raise DataError(f"{where} line {line}: empty label (column {cols['label']!r})")
            if split not in (TRAIN, TEST, *LEFT_OUT_SPLITS):
                raise DataError(f"{where} line {line}: split {split!r} is none of train, test, val")
            rows.append(_Row(line, file_key, label, split))
    except csv.Error as exc:
        raise DataError(f"{where} line {reader.line_num}: not valid CSV ({exc})") from None
    if not rows:
        raise DataError(f"{where}: no rows")
    return rows, key


def _check_labels(rows: list[_Row], where: str) -> tuple[str, ...]:
    """Class names: the sorted training labels, each of which must appear in two training rows at least."""
    train_counts = Counter(r.label for r in rows if r.split == TRAIN)
    for row in rows:
        if row.split == TRAIN and train_counts[row.label] < 2:
            raise DataError(f"{where} line {row.line}: label {row.label!r} appears in no other training row; "
                            "a class needs two images at least (a typo?)")
        if row.split == TEST and row.label not in train_counts:
            raise DataError(f"{where} line {row.line}: test label {row.label!r} appears in no training row")
    if not train_counts:
        raise DataError(f"{where}: no training rows")
    return tuple(sorted(train_counts))


def _files_by_uid(folder: Path, tally: FileTally) -> dict[str, Path]:
    from .dicom import is_dicom, sop_instance_uid

    found: dict[str, Path] = {}
    for path in walk(folder, tally):
        if is_dicom(path):
            uid = sop_instance_uid(path)
            if uid:
                found.setdefault(uid, path)
    return found


def _resolve(rows: list[_Row], key: str, source: ManifestSource, tally: FileTally) -> list[Path]:
    where, folder = str(source.csv), source.csv.parent
    if key == "uid":
        by_uid = _files_by_uid(folder, tally)
        paths = []
        for row in rows:
            if row.key not in by_uid:
                raise DataError(f"{where} line {row.line}: no DICOM file below {folder} has SOP Instance UID {row.key}")
            paths.append(by_uid[row.key])
        return paths
    paths = []
    for row in rows:
        path = Path(row.key).expanduser()
        path = path if path.is_absolute() else folder / path
        if not path.is_file():
            raise DataError(f"{where} line {row.line}: no such file {row.key!r} (paths are relative to the CSV's folder)")
        paths.append(path)
    return paths


def load_manifest(
    source: ManifestSource, test_fraction: float = 0.0, seed: int = 0, image_size: int = DEFAULT_IMAGE_SIZE
) -> DataSplits:
    """The manifest's files and labels: its own test split when it has a split column, else `test_fraction` held back.

    Returns images uint8 (N, H, W, C) at the working size `image_size` (see `image_decode`).
    Raises `DataError`, naming the CSV line, for a bad row; unreadable images are skipped with a warning.
    """
    where = str(source.csv)
    rows, key = _read_rows(source)
    left_out = sum(r.split in LEFT_OUT_SPLITS for r in rows)
    rows = [r for r in rows if r.split not in LEFT_OUT_SPLITS]
    if left_out:
        log.info("%s: %d validation rows left out", where, left_out)
    class_names = _check_labels(rows, where)
    tally = FileTally()
    paths = _resolve(rows, key, source, tally)
    found = read_files(paths, image_size, tally)
    if key == "uid":
        tally.metadata = tally.other = 0  # files below the CSV's folder that no row names are not the manifest's
    tally.log(where)
    if not found:
        raise DataError(f"{where}: no row names a readable image")
    images = to_uint8_set([d for _, d in found], image_size, where)
    index = {name: i for i, name in enumerate(class_names)}
    kept = [rows[i] for i, _ in found]
    labels = np.array([index[r.label] for r in kept], dtype=np.int64)
    splits = np.array([r.split for r in kept])
    name = source.csv.stem
    if (splits == TEST).any():
        train_idx, test_idx = np.flatnonzero(splits == TRAIN), np.flatnonzero(splits == TEST)
        if train_idx.size == 0:
            raise DataError(f"{where}: no training row names a readable image")
        train = make_image_set(images[train_idx], labels[train_idx], class_names, f"{where} [train split]")
        test = make_image_set(images[test_idx], labels[test_idx], class_names, f"{where} [test split]")
        return DataSplits(name=name, train=train, test=test)
    return held_back(name, make_image_set(images, labels, class_names, where), test_fraction, seed)
