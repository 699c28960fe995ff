"""Folders of image files as users hold them: ROOT/<class>/**/<image>, with the mess real folders carry.

Each subfolder of ROOT is a class (sorted by name); every image file anywhere below it, at any
depth (`normal/patient01/img.png`), belongs to it. Image files are what Pillow reads (by suffix,
any case: `.PNG` too) and DICOM files (by suffix or by their "DICM" marker, as PACS exports often
have none). Ignored, and counted in the log:

- hidden and metadata files and folders: names starting with "." (`.DS_Store`, macOS AppleDouble
  `._img.png`), `__MACOSX/`, `Thumbs.db`, `desktop.ini`;
- other files (`notes.txt`, a `labels.csv`), and image files directly in ROOT, outside any class;
- DICOM objects without a single 2D image (reports, presentation states, multi-frame files).

A truncated or corrupt image is skipped with a warning naming its path; a class folder left with
no image is refused, naming it. Pixels become one uint8 set by `image_decode.to_uint8_set`.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .image_decode import IMAGE_SUFFIXES, Decoded, SkippedFile, UnreadableFile, read_image, to_uint8_set
from .image_set import DEFAULT_IMAGE_SIZE, DataError, DataSplits, held_back, make_image_set

log = logging.getLogger(__name__)

#: Names (lower case) that operating systems and archivers leave beside data: never images.
METADATA_NAMES = frozenset({"__macosx", "thumbs.db", "ehthumbs.db", "desktop.ini", "$recycle.bin",
                            "system volume information"})
#: How a skipped DICOM object is named in the log.
SKIPPED_KINDS = {"non-image": "objects without an image (reports, presentation states)",
                 "multi-frame": "multi-frame files"}


def is_metadata(name: str) -> bool:
    """Hidden files and folders, AppleDouble `._*` files, and what `METADATA_NAMES` lists."""
    return name.startswith(".") or name.lower() in METADATA_NAMES


@dataclass
class FileTally:
    """What a loader left out of a data set, for one summary line in the log."""

    metadata: int = 0
    other: int = 0
    skipped: Counter = field(default_factory=Counter)
    unreadable: int = 0

    def log(self, where: str) -> None:
        parts = []
        if self.metadata:
            parts.append(f"{self.metadata} hidden or metadata files and folders (.DS_Store, ._*, __MACOSX, Thumbs.db)")
        if self.other:
            parts.append(f"{self.other} files that are neither images nor DICOM")
        parts += [f"{n} DICOM {SKIPPED_KINDS.get(kind, kind)}" for kind, n in sorted(self.skipped.items())]
        if self.unreadable:
            parts.append(f"{self.unreadable} unreadable images (each named above)")
        if parts:
            log.info("%s: left out %s", where, "; ".join(parts))


def is_image_file(path: Path) -> bool:
    from .dicom import is_dicom

    return path.suffix.lower() in IMAGE_SUFFIXES or is_dicom(path)


def walk(folder: Path, tally: FileTally) -> list[Path]:
    """Every image or DICOM file below `folder`, at any depth, sorted; what else is there goes into `tally`."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        kept = sorted(d for d in dirnames if not is_metadata(d))
        tally.metadata += len(dirnames) - len(kept)
        dirnames[:] = kept
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if is_metadata(name):
                tally.metadata += 1
            elif is_image_file(path):
                found.append(path)
            else:
                tally.other += 1
    return sorted(found)


def read_files(paths: list[Path], size: int, tally: FileTally) -> list[tuple[int, Decoded]]:
    """(position in `paths`, pixels) of every file that holds an image; skips and unreadable files go into `tally`.

    Raises:
        DataError: for a DICOM file whose compression no installed decoder reads.
    """
    out: list[tuple[int, Decoded]] = []
    for i, path in enumerate(paths):
        try:
            out.append((i, read_image(path, size)))
        except SkippedFile as skipped:
            tally.skipped[skipped.kind] += 1
        except UnreadableFile as exc:
            log.warning("%s: skipped, not a readable image (%s)", path, exc)
            tally.unreadable += 1
    return out


def load_image_folder(
    root: Path, test_fraction: float = 0.0, seed: int = 0, image_size: int = DEFAULT_IMAGE_SIZE
) -> DataSplits:
    """Load ROOT/<class>/**/<image>; with `test_fraction` > 0 that share of each class is held back as the test split.

    Returns images uint8 (N, H, W, C) at the working size `image_size` (see `image_decode`).
    Raises:
        DataError: for no class folders, a class folder without a readable image, or an image
            whose DICOM compression no installed decoder reads.
    """
    root = Path(root)
    where = str(root)
    if not root.is_dir():
        raise DataError(f"{where}: no such folder")
    tally = FileTally()
    class_dirs: list[Path] = []
    loose_images = 0
    for entry in sorted(root.iterdir()):
        if is_metadata(entry.name):
            tally.metadata += 1
        elif entry.is_dir():
            class_dirs.append(entry)
        elif is_image_file(entry):
            loose_images += 1
        else:
            tally.other += 1
    if not class_dirs:
        raise DataError(f"{where}: no class subfolders (expected one folder per class)")
    if loose_images:
        log.warning("%s: %d image files directly in the folder belong to no class folder: left out", where, loose_images)
    decoded: list[Decoded] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        found = read_files(walk(class_dir, tally), image_size, tally)
        if not found:
            raise DataError(f"{class_dir}: class folder holds no readable image (its subfolders included)")
        decoded += [d for _, d in found]
        labels += [label] * len(found)
    tally.log(where)
    images = to_uint8_set(decoded, image_size, where)
    full = make_image_set(images, np.array(labels), tuple(d.name for d in class_dirs), where)
    return held_back(root.name, full, test_fraction, seed)
