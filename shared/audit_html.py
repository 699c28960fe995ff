"""The privacy officer's audit report: one self-contained HTML page from an audit document.

`render_audit_html` is a pure function: it reads the audit document (the content of `audit.json`,
schema "fedkr.audit/1") through its typed view (`audit_view.AuditDocument`) and optionally a sample
of released images, and returns the text of `audit.html`, rendered from the jinja2 template
`templates/audit.html.j2`. The page needs no other file: plots are inline SVG, images are base64 PNG,
the CSS sits in one <style> block, and there is no script and no web font.

The template environment autoescapes every value, so every string from the document is
HTML-escaped wherever it appears (site names and error texts come from remote parties). Only the
SVG plots of `audit_figures` reach the page as markup; that module says why they are trusted. Any
part of the document may be missing: the page then says "not available". The verdict shown is the
document's own `decision`; the per-row pass/fail marks are display only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from .audit_figures import RC_PARAMS, Plot, Png, as_uint8_images, histogram_plot, png_strip, roc_plot
from .audit_summary import summarize
from .audit_view import AuditDocument, Attack, Site

TEMPLATE = "audit.html.j2"
TEMPLATES = Path(__file__).parent / "templates"
MAX_IMAGES_PER_CLASS = 12

__all__ = ["render_audit_html", "environment"]


def number(value: Any, digits: int = 3) -> str | None:
    """A value as a table shows it, or None for "n/a": ints with thousands separators, floats with
    `digits` decimals (tiny ones in e-notation), booleans as yes/no, texts as they are."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return f"{value:.1e}" if value != 0 and abs(value) < 10 ** (-digits) else f"{value:.{digits}f}"
    return str(value)


def _format(value: Any, spec: str) -> str | None:
    return None if value is None else format(value, spec)


def environment() -> jinja2.Environment:
    """A new jinja2.Environment for the report's templates: autoescaping on for every template,
    undefined names an error (StrictUndefined), and the filters `number` and `format_spec`."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["number"] = number
    env.filters["format_spec"] = _format
    return env


@dataclass(frozen=True)
class SiteFigures:
    roc: Plot
    histograms: Plot | None  # None: no attack of that kind at this site
    distances: Plot | None


@dataclass(frozen=True)
class PerClassRow:
    cls: str
    members: str | None  # the counts the attacks report, " / "-joined when they differ
    nonmembers: str | None
    aucs: tuple[float | None, ...]  # one per attack


@dataclass(frozen=True)
class PerClassTable:
    attacks: tuple[Attack, ...]
    rows: tuple[PerClassRow, ...]


@dataclass(frozen=True)
class SampleRow:
    name: str
    count: int
    png: Png | None


@dataclass(frozen=True)
class Samples:
    note: str | None  # why no sample is shown
    count: int = 0
    height: int = 0
    width: int = 0
    rows: tuple[SampleRow, ...] = ()


def _figures(site: Site, doc: AuditDocument) -> SiteFigures | None:
    if not site.answered:
        return None
    student = [a for a in site.attacks if not a.is_distance]
    distance = [a for a in site.attacks if a.is_distance]
    return SiteFigures(roc_plot(site, doc.policy), histogram_plot(student) if student else None,
                       histogram_plot(distance) if distance else None)


def _per_class(site: Site, doc: AuditDocument) -> PerClassTable | None:
    attacks = tuple(a for a in site.attacks if a.per_class)
    if not site.answered or not attacks:
        return None
    counts: dict[str, tuple[set, set]] = {}
    aucs: dict[str, dict[int, float | None]] = {}
    for i, attack in enumerate(attacks):
        for item in attack.per_class:
            members, nonmembers = counts.setdefault(item.cls, (set(), set()))
            members.update(t for t in [number(item.members)] if t is not None)
            nonmembers.update(t for t in [number(item.nonmembers)] if t is not None)
            aucs.setdefault(item.cls, {})[i] = item.auc
    names = [c for c in doc.classes if c in counts] + [c for c in counts if c not in doc.classes]
    rows = tuple(PerClassRow(c, " / ".join(sorted(counts[c][0])) or None, " / ".join(sorted(counts[c][1])) or None,
                             tuple(aucs[c].get(i) for i in range(len(attacks)))) for c in names)
    return PerClassTable(attacks, rows)


def _samples(doc: AuditDocument, sample_images: Any, sample_labels: Any) -> Samples:
    if sample_images is None:
        return Samples("Sample images not available (none were given to the report).")
    images = as_uint8_images(sample_images)
    if images is None:
        return Samples("Sample images not available (empty array or unexpected shape).")
    labels: np.ndarray | None = None
    if sample_labels is not None:
        try:
            labels = np.asarray(sample_labels).reshape(-1).astype(np.int64)
        except (TypeError, ValueError, OverflowError):
            labels = None
        if labels is not None and labels.size != images.shape[0]:
            labels = None
    classes = doc.classes
    if labels is None:
        groups = [("unlabelled", np.arange(images.shape[0]))]
    else:
        groups = [(classes[k] if 0 <= k < len(classes) else f"class index {k}", np.flatnonzero(labels == k))
                  for k in sorted(set(labels.tolist()))]
    rows = [SampleRow(name, len(index), png_strip(images[index[:MAX_IMAGES_PER_CLASS]])) for name, index in groups]
    if labels is not None:
        rows += [SampleRow(name, 0, None) for k, name in enumerate(classes) if not np.any(labels == k)]
    return Samples(None, images.shape[0], images.shape[1], images.shape[2], tuple(rows))


def render_audit_html(audit: dict | AuditDocument, sample_images: np.ndarray | None = None,
                      sample_labels: np.ndarray | None = None) -> str:
    """The audit report as one self-contained HTML page (no external file, script or font).

    Takes `audit`, the audit document: the dict loaded from `audit.json` (schema "fedkr.audit/1";
    any other value reads as an empty document) or its `AuditDocument` view; `sample_images`, an
    optional array (N, H, W) or (N, H, W, C) with C in {1, 3} of released synthetic images (uint8,
    or floats in [0, 1] or [0, 255]); and `sample_labels`, their class indices into the document's
    `classes`. Returns the page as a str. Missing or malformed parts of the document or of the
    images are shown as "not available" and raise nothing; it raises `jinja2.TemplateNotFound`
    only when the installed package lacks its template.
    """
    import matplotlib

    matplotlib.use("Agg")
    doc = audit if isinstance(audit, AuditDocument) else AuditDocument.parse(audit)
    with matplotlib.rc_context(RC_PARAMS):
        figures = [_figures(site, doc) for site in doc.sites]
        samples = _samples(doc, sample_images, sample_labels)
    per_class = [_per_class(site, doc) for site in doc.sites]
    try:  # recomputed from the figures, never taken from the document: a stored one could disagree with them
        summary = summarize(doc)
    except (ValueError, ArithmeticError):  # figures no estimate can use: the page goes on without the summary
        summary = ()
    return environment().get_template(TEMPLATE).render(
        doc=doc, figures=figures, per_class=per_class, samples=samples, summary=summary,
        max_images_per_class=MAX_IMAGES_PER_CLASS)
