"""The release's contact sheet draws every class name it can, and never a row of empty boxes."""

import warnings

import numpy as np

from fedkr.server.distill import DistilledSet
from fedkr.server.release import write_contact_sheet


def _distilled(names):
    k = len(names)
    labels = np.repeat(np.arange(k), 3)
    images = np.random.default_rng(0).integers(0, 256, (3 * k, 16, 16, 1), dtype=np.uint8)
    return DistilledSet(images, np.eye(k, dtype=np.float32)[labels], labels, tuple(names), np.zeros(3 * k, np.int64))


def test_cjk_class_names_draw_without_missing_glyphs(tmp_path):
    names = ("肺炎", "正常", "결절")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_contact_sheet(_distilled(names), tmp_path / "sheet.png")
    assert (tmp_path / "sheet.png").stat().st_size > 0
    assert not [w for w in caught if "missing from font" in str(w.message)], [str(w.message) for w in caught]
    from fedkr.shared.fonts import drawable

    text = drawable(names)
    assert text.labels == (("class 0", "class 1", "class 2") if text.substituted else names)


def test_latin_names_are_drawn_as_they_are():
    from fedkr.shared.fonts import drawable

    assert drawable(("normal", "pneumonia")).labels == ("normal", "pneumonia")
