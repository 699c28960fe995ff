"""Text that matplotlib can draw: class names in any script, or a stand-in that says why not.

matplotlib's default font (DejaVu Sans) has no CJK glyphs, and draws such names as empty boxes.
`drawable` finds an installed font that has every glyph the names need (matplotlib then falls
back to it glyph by glyph, matplotlib >= 3.6), and where none is installed gives stand-in labels
("class 3") so that a figure never shows boxes; the names themselves stay in the data files.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class DrawableText:
    """`labels` to draw with `family` (matplotlib's font.family list); `substituted` when they stand in for the names."""

    labels: tuple[str, ...]
    family: tuple[str, ...]
    substituted: bool


@lru_cache(maxsize=64)
def _charmap(path: str) -> frozenset[int]:
    from matplotlib import ft2font

    try:
        return frozenset(ft2font.FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


def drawable(names: tuple[str, ...]) -> DrawableText:
    """`names` with the font family that draws them all, or "class i" stand-ins when no installed font can."""
    from matplotlib import font_manager, rcParams

    default = font_manager.findfont(font_manager.FontProperties(family=rcParams["font.family"]))
    default_name = font_manager.FontProperties(fname=default).get_name()
    needed = {ord(ch) for name in names for ch in name if not ch.isspace()}
    missing = needed - _charmap(default)
    if not missing:
        return DrawableText(tuple(names), (default_name,), False)
    for entry in font_manager.fontManager.ttflist:
        if missing <= _charmap(entry.fname):
            return DrawableText(tuple(names), (default_name, entry.name), False)
    return DrawableText(tuple(f"class {i}" for i in range(len(names))), (default_name,), True)
