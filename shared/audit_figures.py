"""The audit report's figures: ROC curves and histograms as inline SVG, sample images as base64 PNG.

These are the only parts of `audit.html` that reach the page unescaped, as `markupsafe.Markup`, and
that is why they are trusted: an SVG here is drawn by matplotlib's SVG backend from numbers (curve
points, bin counts, policy limits). The few document strings it shows, attack names and a
histogram's score name, are plot labels: `plot_label` shortens them and disables mathtext, and
matplotlib's SVG writer XML-escapes every text it writes. As a last guard, an SVG that holds a
script, a foreignObject or an event-handler attribute is refused (the plot is then "not available").
A sample strip is PNG bytes from a uint8 array, base64-encoded: it holds no markup at all and is
passed to the template as plain text.
"""

from __future__ import annotations

import base64
import io
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from markupsafe import Markup

from .audit_view import Attack, Policy, Site

MIN_IMAGE_PIXELS = 64  # sample images are upscaled (nearest neighbour) to at least this size
RC_PARAMS = {"font.size": 9, "svg.fonttype": "none", "font.family": "sans-serif",
             "axes.spines.top": False, "axes.spines.right": False}

_SVG_DROP = [
    re.compile(r"<\?xml[^>]*\?>\s*"),
    re.compile(r"<!DOCTYPE[^>]*>\s*", re.IGNORECASE),
    re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL),
    re.compile(r'\s+xmlns(:\w+)?="[^"]*"'),
]
_SVG_REFUSE = re.compile(r"<\s*(script|foreignObject)|<[^>]*\son\w+\s*=", re.IGNORECASE)
_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


@dataclass(frozen=True)
class Plot:
    """A figure's body: the SVG, or a note saying why there is none; `unavailable` names left out."""

    svg: Markup | None = None
    note: str | None = None
    unavailable: tuple[str, ...] = ()


@dataclass(frozen=True)
class Png:
    """A base64 PNG strip and its size in pixels."""

    data: str
    width: int
    height: int


def plot_label(value: Any, limit: int = 40) -> str:
    """Text safe for a matplotlib label: no mathtext, not hidden by a leading underscore."""
    text = str(value if value is not None else "?").replace("\n", " ")
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    text = text.replace("\\", "\\\\").replace("$", r"\$")
    return "\u200b" + text if text.startswith("_") else text


def _svg(fig) -> Markup:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    for pattern in _SVG_DROP:  # inline SVG in HTML needs no namespaces, DTD or RDF metadata
        text = pattern.sub("", text)

    # natural size in CSS pixels (1pt = 4/3 px), so every plot has the same scale; CSS may shrink it
    def size(match: re.Match) -> str:
        width, height = float(match.group(2)) * 4 / 3, float(match.group(3)) * 4 / 3
        return f'<svg{match.group(1)} class="plot" width="{width:.0f}" height="{height:.0f}"'

    return _checked(re.sub(r'<svg([^>]*?)\swidth="([\d.]+)pt"\s+height="([\d.]+)pt"', size, text, count=1))


def _checked(text: str) -> Markup:
    """The SVG as markup; ValueError if it holds a script, a foreignObject or an event handler."""
    if _SVG_REFUSE.search(text):
        raise ValueError("the SVG holds active content")
    return Markup(text.strip())


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _guarded(make, *args) -> Plot:
    try:
        return make(*args)
    except Exception as exc:  # a malformed part of the document must not sink the whole page
        return Plot(note=f"plot not available ({type(exc).__name__})")


def _count(value: Any) -> int | None:
    return int(value) if value is not None and value == int(value) and value > 0 else None


def _roc(site: Site, policy: Policy) -> Plot:
    curves = [a for a in site.attacks if a.roc is not None]
    if not curves:
        return Plot(note="ROC curves not available")
    counts = [n for n in [_count(a.num_nonmembers) for a in curves] + [_count(site.num_nonmembers)] if n]
    resolution = 1.0 / max(counts) if counts else None
    low = min(1e-3, resolution) if resolution else 1e-3

    fig = _figure(5.6, 5.2)
    ax = fig.add_subplot()
    ax.plot([low, 1], [low, 1], color="0.45", linestyle=":", linewidth=1.2, label="chance (diagonal)")
    for i, attack in enumerate(curves):
        fpr, tpr = np.asarray(attack.roc.fpr), np.asarray(attack.roc.tpr)
        ax.plot(np.clip(fpr, low, 1), np.clip(tpr, low, 1), "--" if attack.is_distance else "-",
                color=_COLORS[i % len(_COLORS)], linewidth=1.6, label=plot_label(attack.name))
    limit = policy.max_tpr_at_1pct_fpr
    if limit is not None and limit > 0:
        ax.plot([0.01], [max(limit, low)], marker="X", color="black", markersize=9, linestyle="none",
                label=f"policy limit: TPR {limit:g} at 1% FPR")
    if resolution and resolution > low:
        ax.axvspan(low, resolution, color="0.9", zorder=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, 1)
    ax.set_ylim(low, 1.05)
    ax.set_xlabel("false positive rate (non-members called members)")
    ax.set_ylabel("true positive rate (members found)")
    ax.grid(True, which="major", color="0.85", linewidth=0.6)
    fig.legend(loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return Plot(svg=_svg(fig))


def _histograms(attacks: list[Attack]) -> Plot:
    """Small multiples: one panel per attack, members vs non-members, from the pre-binned data."""
    panels = [a for a in attacks if a.histogram is not None]
    unavailable = tuple(a.name or "?" for a in attacks if a.histogram is None)
    if not panels:
        return Plot(unavailable=unavailable)
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = _figure(3.3 * columns, 0.3 + 2.4 * rows)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, attack in zip(axes.flat, panels):
        hist = attack.histogram
        edges, members, nonmembers = (np.asarray(v) for v in (hist.edges, hist.members, hist.nonmembers))
        # fractions of each group, so groups of different sizes compare; the bins are the site's
        m_frac = members / members.sum() if members.sum() > 0 else members
        n_frac = nonmembers / nonmembers.sum() if nonmembers.sum() > 0 else nonmembers
        ax.stairs(n_frac, edges, fill=True, color="#ff7f0e", alpha=0.35, label="non-members (holdout)")
        ax.stairs(n_frac, edges, color="#ff7f0e", linewidth=1.2)
        ax.stairs(m_frac, edges, color="#1f77b4", linewidth=1.6, label="members")
        ax.set_title(plot_label(attack.name), fontsize=11)
        ax.set_xlabel(plot_label(hist.score, 45) if hist.score else "score (higher: more member-like)", fontsize=9)
        ax.set_ylabel("fraction of group", fontsize=9)
        ax.tick_params(labelsize=8)
    fig.legend(handles=axes.flat[0].get_legend_handles_labels()[0][:2], loc="outside upper left", ncols=2,
               fontsize=9, frameon=False)
    return Plot(svg=_svg(fig), unavailable=unavailable)


def roc_plot(site: Site, policy: Policy) -> Plot:
    """The site's ROC curves on log-log axes, with the policy's TPR limit; never raises."""
    return _guarded(_roc, site, policy)


def histogram_plot(attacks: list[Attack]) -> Plot:
    """Member and non-member score histograms, one panel per attack; never raises."""
    return _guarded(_histograms, attacks)


def as_uint8_images(images: Any) -> np.ndarray | None:
    """(N, H, W, 3) uint8 from (N, H, W), (N, H, W, 1) or (N, H, W, 3) of any numbers; None if unusable."""
    try:
        array = np.asarray(images)
        if array.ndim == 3:
            array = array[..., None]
        if array.ndim != 4 or array.shape[0] == 0 or array.shape[-1] not in (1, 3):
            return None
        if array.dtype != np.uint8:
            array = np.nan_to_num(array.astype(np.float64))
            if array.size and array.max() <= 1.0 and array.min() >= 0.0:
                array = array * 255.0
            array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    except Exception:
        return None
    return np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array


def png_strip(images: np.ndarray) -> Png:
    """One row of (N, H, W, 3) uint8 images, upscaled by repeating pixels, 4 white pixels apart."""
    from matplotlib.image import imsave

    count, height, width, _ = images.shape
    scale = max(1, math.ceil(MIN_IMAGE_PIXELS / max(1, min(height, width))))
    big = images.repeat(scale, axis=1).repeat(scale, axis=2)
    gap = 4
    strip = np.full((height * scale, count * width * scale + (count - 1) * gap, 3), 255, dtype=np.uint8)
    for i, image in enumerate(big):
        x = i * (width * scale + gap)
        strip[:, x : x + width * scale] = image
    buffer = io.BytesIO()
    imsave(buffer, strip, format="png")
    return Png(base64.b64encode(buffer.getvalue()).decode("ascii"), strip.shape[1], strip.shape[0])
