"""The privacy officer's audit report: one self-contained HTML page from an audit document.

`render_audit_html` is a pure function: it reads the audit document (the content of
`audit.json`, schema "fedkr.audit/1") and optionally a sample of released images, and returns the
text of `audit.html`. The page needs no other file: plots are inline SVG, images are base64 PNG,
the CSS sits in one <style> block, and there is no script and no web font.

Every string that comes from the document is HTML-escaped (site names and error texts come from
remote parties) and any part of the document may be missing: the page then says "not available".
The verdict shown is the document's own `decision`; the per-row pass/fail marks are display only.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from typing import Any

import numpy as np

NA = "not available"
DISTANCE_TARGET = "distilled_set"
STUDENT_TARGET = "student"
DISTANCE_ATTACKS = ("dcr_pixel", "dcr_feature")
MAX_IMAGES_PER_CLASS = 12
MIN_IMAGE_PIXELS = 64  # sample images are upscaled (nearest neighbour) to at least this size

__all__ = ["render_audit_html"]


# --------------------------------------------------------------------------------------------
# small, defensive helpers


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, (list, tuple)) else []


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _int(value: Any) -> int | None:
    number = _float(value)
    return int(number) if number is not None and number == int(number) else None


def _fmt(value: Any, digits: int = 3) -> str:
    """A number for a table cell, or "n/a"; non-numbers are shown escaped as they are."""
    if value is None:
        return '<span class="na">n/a</span>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    number = _float(value)
    if number is None:
        if isinstance(value, float):  # nan or inf
            return '<span class="na">n/a</span>'
        return _esc(value)
    if number != 0 and abs(number) < 10 ** (-digits):
        return f"{number:.1e}"
    return f"{number:.{digits}f}"


def _fmt_g(value: Any) -> str:
    number = _float(value)
    return '<span class="na">n/a</span>' if number is None else _esc(f"{number:.4g}")


def _ci(value: Any, ci: Any, digits: int = 3) -> str:
    pair = _list(ci)
    low, high = (_float(pair[0]), _float(pair[1])) if len(pair) == 2 else (None, None)
    bracket = f'<span class="ci">[{_fmt(low, digits)}, {_fmt(high, digits)}]</span>' if low is not None and high is not None else ""
    return f"{_fmt(value, digits)}{bracket}"


def _ci_high(ci: Any) -> float | None:
    pair = _list(ci)
    return _float(pair[1]) if len(pair) == 2 else None


def _na(text: str = NA) -> str:
    return f'<p class="na">{_esc(text)}</p>'


def _plot_label(value: Any, limit: int = 40) -> str:
    """Text safe for a matplotlib label: no mathtext, not hidden by a leading underscore."""
    text = str(value if value is not None else "?").replace("\n", " ")
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    text = text.replace("\\", "\\\\").replace("$", r"\$")
    return "\u200b" + text if text.startswith("_") else text


def _sites(audit: dict) -> list[tuple[str, dict]]:
    sites = audit.get("sites")
    if isinstance(sites, dict):
        return [(str(name), _dict(site)) for name, site in sites.items()]
    if isinstance(sites, list):  # tolerate a list of {"site": name, ...}
        return [(str(_dict(s).get("site", f"site #{i}")), _dict(s)) for i, s in enumerate(sites)]
    return []


def _attacks(site: dict) -> list[dict]:
    return [a for a in _list(site.get("attacks")) if isinstance(a, dict)]


def _is_distance(attack: dict) -> bool:
    target = attack.get("target")
    if target is not None:
        return target == DISTANCE_TARGET
    return attack.get("attack") in DISTANCE_ATTACKS


def _answered(site: dict) -> bool:
    return site.get("answered") is not False and not (site.get("error") and not _attacks(site))


# --------------------------------------------------------------------------------------------
# plots (matplotlib, Agg, inline SVG)


_SVG_DROP = [
    re.compile(r"<\?xml[^>]*\?>\s*"),
    re.compile(r"<!DOCTYPE[^>]*>\s*", re.IGNORECASE),
    re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL),
    re.compile(r'\s+xmlns(:\w+)?="[^"]*"'),
]
_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def _svg(fig) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    for pattern in _SVG_DROP:  # inline SVG in HTML needs no namespaces, DTD or RDF metadata
        text = pattern.sub("", text)
    # natural size in CSS pixels (1pt = 4/3 px), so every plot has the same scale; CSS may shrink it
    def size(match: re.Match) -> str:
        width, height = float(match.group(2)) * 4 / 3, float(match.group(3)) * 4 / 3
        return f'<svg{match.group(1)} class="plot" width="{width:.0f}" height="{height:.0f}"'

    text = re.sub(r'<svg([^>]*?)\swidth="([\d.]+)pt"\s+height="([\d.]+)pt"', size, text, count=1)
    return text.strip()


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _safe_plot(make, *args) -> str:
    try:
        return make(*args)
    except Exception as exc:  # a malformed part of the document must not sink the whole page
        return _na(f"plot not available ({type(exc).__name__})")


def _roc_points(attack: dict) -> tuple[np.ndarray, np.ndarray] | None:
    roc = _dict(attack.get("roc"))
    try:
        fpr = np.asarray(roc.get("fpr"), dtype=np.float64).reshape(-1)
        tpr = np.asarray(roc.get("tpr"), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return None
    if fpr.size < 2 or fpr.size != tpr.size:
        return None
    ok = np.isfinite(fpr) & np.isfinite(tpr)
    return (fpr[ok], tpr[ok]) if ok.sum() >= 2 else None


def _roc_plot(site: dict, policy: dict) -> str:
    curves = [(a, pts) for a in _attacks(site) if (pts := _roc_points(a)) is not None]
    if not curves:
        return _na("ROC curves not available")
    counts = [n for a, _ in curves if (n := _int(a.get("num_nonmembers"))) and n > 0]
    counts += [n for n in [_int(site.get("num_nonmembers"))] if n and n > 0]
    resolution = 1.0 / max(counts) if counts else None
    low = min(1e-3, resolution) if resolution else 1e-3

    fig = _figure(5.6, 5.2)
    ax = fig.add_subplot()
    ax.plot([low, 1], [low, 1], color="0.45", linestyle=":", linewidth=1.2, label="chance (diagonal)")
    for i, (attack, (fpr, tpr)) in enumerate(curves):
        style = "--" if _is_distance(attack) else "-"
        ax.plot(np.clip(fpr, low, 1), np.clip(tpr, low, 1), style, color=_COLORS[i % len(_COLORS)],
                linewidth=1.6, label=_plot_label(attack.get("attack")))
    limit = _float(policy.get("max_tpr_at_1pct_fpr"))
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
    return _svg(fig)


def _histogram_data(attack: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    hist = _dict(attack.get("histogram"))
    try:
        edges = np.asarray(hist.get("edges"), dtype=np.float64).reshape(-1)
        members = np.asarray(hist.get("members"), dtype=np.float64).reshape(-1)
        nonmembers = np.asarray(hist.get("nonmembers"), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return None
    if members.size < 1 or edges.size != members.size + 1 or nonmembers.size != members.size:
        return None
    if not (np.isfinite(edges).all() and np.isfinite(members).all() and np.isfinite(nonmembers).all()):
        return None
    if np.any(np.diff(edges) <= 0):
        return None
    return edges, members, nonmembers


def _histogram_grid(attacks: list[dict]) -> str:
    """Small multiples: one panel per attack, members vs non-members, from the pre-binned data."""
    panels = [(a, d) for a in attacks if (d := _histogram_data(a)) is not None]
    missing = [a for a in attacks if _histogram_data(a) is None]
    parts = []
    if panels:
        columns = min(3, len(panels))
        rows = math.ceil(len(panels) / columns)
        fig = _figure(3.3 * columns, 0.3 + 2.4 * rows)
        axes = fig.subplots(rows, columns, squeeze=False)
        for ax in axes.flat[len(panels):]:
            ax.set_visible(False)
        for ax, (attack, (edges, members, nonmembers)) in zip(axes.flat, panels):
            # fractions of each group, so groups of different sizes compare; the bins are the site's
            m_frac = members / members.sum() if members.sum() > 0 else members
            n_frac = nonmembers / nonmembers.sum() if nonmembers.sum() > 0 else nonmembers
            ax.stairs(n_frac, edges, fill=True, color="#ff7f0e", alpha=0.35, label="non-members (holdout)")
            ax.stairs(n_frac, edges, color="#ff7f0e", linewidth=1.2)
            ax.stairs(m_frac, edges, color="#1f77b4", linewidth=1.6, label="members")
            ax.set_title(_plot_label(attack.get("attack")), fontsize=11)
            score = _dict(attack.get("histogram")).get("score")
            ax.set_xlabel(_plot_label(score, 45) if score else "score (higher: more member-like)", fontsize=9)
            ax.set_ylabel("fraction of group", fontsize=9)
            ax.tick_params(labelsize=8)
        fig.legend(handles=axes.flat[0].get_legend_handles_labels()[0][:2], loc="outside upper left", ncols=2,
                   fontsize=9, frameon=False)
        parts.append(_svg(fig))
    if missing:
        names = ", ".join(_esc(a.get("attack", "?")) for a in missing)
        parts.append(f'<p class="na">Histogram not available for: {names}.</p>')
    return "\n".join(parts) if parts else _na("histograms not available")


# --------------------------------------------------------------------------------------------
# sample images (base64 PNG, nearest-neighbour upscaling)


def _as_uint8_images(images: Any) -> np.ndarray | None:
    try:
        array = np.asarray(images)
    except Exception:
        return None
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[0] == 0 or array.shape[-1] not in (1, 3):
        return None
    if array.dtype != np.uint8:
        array = np.nan_to_num(array.astype(np.float64))
        if array.size and array.max() <= 1.0 and array.min() >= 0.0:
            array = array * 255.0
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return array


def _png_row(images: np.ndarray) -> str:
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
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f'<img class="samples" alt="sample images" width="{strip.shape[1]}" height="{strip.shape[0]}" '
            f'src="data:image/png;base64,{data}">')


def _sample_section(audit: dict, sample_images: Any, sample_labels: Any) -> str:
    if sample_images is None:
        return _na("Sample images not available (none were given to the report).")
    images = _as_uint8_images(sample_images)
    if images is None:
        return _na("Sample images not available (empty array or unexpected shape).")
    classes = [str(c) for c in _list(audit.get("classes"))]
    labels: np.ndarray | None = None
    if sample_labels is not None:
        try:
            labels = np.asarray(sample_labels).reshape(-1).astype(np.int64)
        except (TypeError, ValueError):
            labels = None
        if labels is not None and labels.size != images.shape[0]:
            labels = None
    rows = []
    if labels is None:
        groups = [("unlabelled", np.arange(images.shape[0]))]
    else:
        groups = [(classes[k] if 0 <= k < len(classes) else f"class index {k}", np.flatnonzero(labels == k))
                  for k in sorted(set(labels.tolist()))]
    for name, index in groups:
        shown = index[:MAX_IMAGES_PER_CLASS]
        rows.append(f"<tr><th>{_esc(name)}</th><td>{len(index)}</td><td>{_png_row(images[shown])}</td></tr>")
    if labels is not None:
        empty = [c for k, c in enumerate(classes) if not np.any(labels == k)]
        for name in empty:
            rows.append(f'<tr><th>{_esc(name)}</th><td>0</td><td class="na">no sample image</td></tr>')
    h, w = images.shape[1:3]
    return (f"<p>{images.shape[0]} released synthetic images, {h}&times;{w} pixels, upscaled by repeating "
            f"pixels (no smoothing); at most {MAX_IMAGES_PER_CLASS} per class.</p>"
            '<table class="samples"><thead><tr><th>class</th><th>images</th><th>sample</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


# --------------------------------------------------------------------------------------------
# sections


def _verdict(audit: dict) -> str:
    release = _dict(audit.get("release"))
    decision = _dict(audit.get("decision"))
    passed = decision.get("passed")
    if passed is True:
        banner, word = "passed", "PASSED"
        lead = "The release gate passed: no policy rule failed at the sites that answered."
    elif passed is False:
        banner, word = "blocked", "BLOCKED"
        lead = "The release gate blocked this release."
    else:
        banner, word = "unknown", "NO DECISION"
        lead = "The audit document holds no decision: treat the release as blocked."
    facts = (f'<p class="facts">Release <strong>{_esc(release.get("id") or NA)}</strong> &middot; '
             f'{_esc(audit.get("created") or "date not available")} &middot; '
             f'fedkr {_esc(audit.get("fedkr_version") or "version not available")}</p>')
    unanswered = [name for name, site in _sites(audit) if not _answered(site)]
    if unanswered:
        facts += (f'<p class="error">{len(unanswered)} of {len(_sites(audit))} sites did not answer and were not '
                  f'audited: {", ".join(_esc(n) for n in unanswered)}.</p>')
    failures = [f for f in _list(decision.get("failures")) if isinstance(f, dict)]
    if failures:
        rows = "".join(
            f"<tr><td>{_esc(f.get('site', '?'))}</td><td>{_esc(f.get('attack', '?'))}</td>"
            f"<td>{_esc(f.get('metric', '?'))}</td><td>{_fmt(f.get('value'))}</td>"
            f"<td>{_fmt(f.get('threshold'))}</td><td>{_esc(f.get('message', ''))}</td></tr>"
            for f in failures)
        failure_html = ("<h3>Failures</h3><table class=\"failures\"><thead><tr><th>site</th><th>attack</th>"
                        "<th>metric</th><th>value</th><th>threshold</th><th>message</th></tr></thead>"
                        f"<tbody>{rows}</tbody></table>")
    elif passed is False:
        failure_html = _na("The decision is BLOCKED but lists no failure.")
    else:
        failure_html = "<p>No failures.</p>"
    return (f'<section id="verdict"><h2>1. Verdict</h2>'
            f'<div class="banner {banner}"><span class="word">{word}</span>'
            f'<span class="lead">{_esc(lead)}</span></div>{facts}{failure_html}</section>')


def _identification(audit: dict) -> str:
    release = _dict(audit.get("release"))
    artefacts = _dict(release.get("artefacts"))
    if artefacts:
        rows = "".join(f'<tr><td>{_esc(name)}</td><td class="hash">{_esc(digest if digest is not None else "n/a")}</td></tr>'
                       for name, digest in artefacts.items())
        hashes = f'<table class="hashes"><thead><tr><th>artefact</th><th>SHA-256</th></tr></thead><tbody>{rows}</tbody></table>'
    else:
        hashes = _na("Artefact hashes not available.")
    policy = _dict(audit.get("policy"))
    labels = {
        "confidence": "confidence level of the intervals",
        "max_auc_upper": "max. upper confidence bound of the attack AUC (student)",
        "max_tpr_at_1pct_fpr": "max. lower confidence bound of TPR at 1% FPR (student)",
        "max_distance_auc_upper": "max. upper confidence bound of the distance-test AUC (distilled images)",
        "required_attacks": "attacks every site must run",
    }
    policy_rows = []
    for key, value in policy.items():
        shown = ", ".join(_esc(v) for v in value) if isinstance(value, (list, tuple)) else _fmt(value)
        policy_rows.append(f"<tr><td>{_esc(labels.get(key, key))}</td><td><code>{_esc(key)}</code></td><td>{shown}</td></tr>")
    policy_html = (f'<table class="policy"><thead><tr><th>rule</th><th>key</th><th>value</th></tr></thead>'
                   f"<tbody>{''.join(policy_rows)}</tbody></table>") if policy_rows else _na("Policy not available.")
    threat = audit.get("threat_model")
    threat_html = f'<div class="threat">{_esc(threat)}</div>' if threat else _na("Threat model not available.")
    classes = _list(audit.get("classes"))
    sites = _sites(audit)
    return (
        '<section id="identification"><h2>2. Identification</h2>'
        '<table class="kv"><tbody>'
        f"<tr><th>release id</th><td>{_esc(release.get('id') or NA)}</td></tr>"
        f"<tr><th>fedkr version</th><td>{_esc(audit.get('fedkr_version') or NA)}</td></tr>"
        f"<tr><th>audit created</th><td>{_esc(audit.get('created') or NA)}</td></tr>"
        f"<tr><th>document schema</th><td>{_esc(audit.get('schema') or NA)}</td></tr>"
        f"<tr><th>classes</th><td>{_esc(', '.join(map(str, classes))) if classes else NA}</td></tr>"
        f"<tr><th>sites</th><td>{len(sites)} ({sum(_answered(s) for _, s in sites)} answered)</td></tr>"
        "</tbody></table>"
        f"<h3>Artefacts</h3>{hashes}<h3>Threat model</h3>{threat_html}<h3>Policy thresholds</h3>{policy_html}"
        "</section>"
    )


def _mark(ok: bool | None, text: str) -> str:
    if ok is None:
        return f'<span class="rule na">? {_esc(text)}: n/a</span>'
    if ok:
        return f'<span class="rule ok">&#10003; {_esc(text)}</span>'
    return f'<span class="rule bad">&#10007; {_esc(text)} FAIL</span>'


def _rules(attack: dict, policy: dict) -> str:
    auc_high = _ci_high(attack.get("auc_ci"))
    if _is_distance(attack):
        limit = _float(policy.get("max_distance_auc_upper"))
        if limit is None:
            return '<span class="na">no rule</span>'
        return _mark(None if auc_high is None else auc_high <= limit, f"AUC upper \u2264 {limit:g}")
    marks = []
    limit = _float(policy.get("max_auc_upper"))
    if limit is not None:
        marks.append(_mark(None if auc_high is None else auc_high <= limit, f"AUC upper \u2264 {limit:g}"))
    limit = _float(policy.get("max_tpr_at_1pct_fpr"))
    tpr_ci = attack.get("tpr_at_1pct_fpr_ci")
    tpr = _float(tpr_ci[0]) if isinstance(tpr_ci, (list, tuple)) and len(tpr_ci) == 2 else None
    if limit is not None:
        marks.append(_mark(None if tpr is None else tpr <= limit, f"TPR@1% lower \u2264 {limit:g}"))
    return "<br>".join(marks) if marks else '<span class="na">no rule</span>'


def _attack_row(attack: dict, policy: dict) -> str:
    control = attack.get("control")
    if isinstance(control, dict):
        n_a, n_b = _int(control.get("num_a")), _int(control.get("num_b"))
        sizes = f'<span class="ci">n = {n_a if n_a is not None else "?"} vs {n_b if n_b is not None else "?"}</span>'
        control_html = _ci(control.get("auc"), control.get("auc_ci")) + sizes
    else:
        control_html = '<span class="na">n/a</span>'
    description = attack.get("description")
    desc_html = f'<br><span class="desc">{_esc(description)}</span>' if description else ""
    return (
        f"<tr><td><strong>{_esc(attack.get('attack', '?'))}</strong>{desc_html}</td>"
        f"<td>{_esc(attack.get('target') or 'n/a')}</td>"
        f"<td>{_fmt(attack.get('num_members'))}</td><td>{_fmt(attack.get('num_nonmembers'))}</td>"
        f"<td>{_ci(attack.get('auc'), attack.get('auc_ci'))}</td>"
        f"<td>{_ci(attack.get('tpr_at_1pct_fpr'), attack.get('tpr_at_1pct_fpr_ci'))}</td>"
        f"<td>{_ci(attack.get('tpr_at_01pct_fpr'), attack.get('tpr_at_01pct_fpr_ci'))}</td>"
        f"<td>{_fmt(attack.get('epsilon_lower_bound'), 2)}</td>"
        f'<td class="control">{control_html}</td>'
        f"<td>{_rules(attack, policy)}</td></tr>"
    )


def _dp_html(dp: Any) -> str:
    if not isinstance(dp, dict):
        return ('<p><strong>Differential privacy:</strong> <span class="na">not available</span> '
                "(this site reported no DP training, so there is no formal bound).</p>")
    line = (f"<p><strong>Differential privacy:</strong> &epsilon; = {_fmt(dp.get('epsilon'), 2)}, "
            f"&delta; = {_fmt_g(dp.get('delta'))}, max. gradient norm = {_fmt_g(dp.get('max_grad_norm'))}, "
            f"accountant: {_esc(dp.get('accountant') or 'n/a')}.</p>")
    parts = _dict(dp.get("parts"))
    if not parts:
        return line
    rows = "".join(
        f"<tr><td>{_esc(name)}</td><td>{_fmt(_dict(p).get('epsilon'), 2)}</td><td>{_fmt_g(_dict(p).get('delta'))}</td>"
        f"<td>{_fmt_g(_dict(p).get('noise_multiplier'))}</td><td>{_fmt(_dict(p).get('steps'))}</td></tr>"
        for name, p in parts.items())
    return (line + '<table class="dp"><thead><tr><th>trained part</th><th>&epsilon;</th><th>&delta;</th>'
            f"<th>noise multiplier</th><th>steps</th></tr></thead><tbody>{rows}</tbody></table>")


def _near_duplicates_html(near: Any) -> str:
    if not isinstance(near, dict):
        return '<p><strong>Near-duplicates:</strong> <span class="na">not available</span>.</p>'
    parts = []
    for space in ("pixel", "feature"):
        item = near.get(space)
        if isinstance(item, dict):
            baseline = ""
            if item.get("holdout_count") is not None:
                baseline = (f"; baseline: {_fmt(item.get('holdout_count'))} of {_fmt(item.get('holdout_checked'))} "
                            f"held-out images come as close")
            parts.append(f"{space} space: <strong>{_fmt(item.get('count'))}</strong> "
                         f"(distance threshold {_fmt_g(item.get('threshold'))}{baseline})")
        else:
            parts.append(f'{space} space: <span class="na">n/a</span>')
    return (f"<p><strong>Near-duplicates</strong> of the site's training images among the released "
            f"distilled images ({_fmt(near.get('members_checked'))} members checked): {'; '.join(parts)}.</p>")


def _site_not_answered(site: dict) -> str:
    error = site.get("error")
    text = "This site did not answer the audit" if site.get("answered") is False else "No results for this site"
    reason = f': <span class="error">{_esc(error)}</span>' if error else ""
    return f'<p class="na">{text}{reason}. Its results are not available.</p>'


def _per_site(audit: dict, sites: list[tuple[str, dict]], policy: dict) -> str:
    required = [str(r) for r in _list(policy.get("required_attacks"))]
    blocks = []
    for index, (name, site) in enumerate(sites):
        head = f'<h3 id="site-{index}">{_esc(name)}</h3>'
        attacks = _attacks(site)
        if not _answered(site) or not attacks:
            counts = ""
            blocks.append(f'<div class="site">{head}{_site_not_answered(site)}{counts}</div>')
            continue
        counts = (f"<p>{_fmt(site.get('num_members'))} members (training images) and "
                  f"{_fmt(site.get('num_nonmembers'))} non-members (held-out images) audited.</p>")
        if site.get("error"):
            counts += f'<p class="error">Reported error: {_esc(site.get("error"))}</p>'
        rows = "".join(_attack_row(a, policy) for a in attacks)
        present = {str(a.get("attack")) for a in attacks}
        missing = [r for r in required if r not in present]
        for attack in missing:
            rows += (f'<tr class="missing"><td><strong>{_esc(attack)}</strong></td>'
                     f'<td colspan="8" class="na">required attack not available for this site</td>'
                     f'<td>{_mark(False, "required")}</td></tr>')
        table = (
            '<table class="attacks"><thead><tr><th>attack</th><th>target</th><th>members</th>'
            "<th>non-members</th><th>AUC [CI]</th><th>TPR@1% FPR [CI]</th><th>TPR@0.1% FPR [CI]</th>"
            "<th>&epsilon; lower bound</th><th>control AUC [CI]<br><small>(no membership difference)</small></th>"
            f"<th>rules</th></tr></thead><tbody>{rows}</tbody></table>"
        )
        blocks.append(f'<div class="site">{head}{counts}{table}{_dp_html(site.get("dp"))}'
                      f'{_near_duplicates_html(site.get("near_duplicates"))}</div>')
    if not blocks:
        blocks.append(_na("No site results available."))
    confidence = _float(policy.get("confidence"))
    level = f"{confidence:.0%}" if confidence is not None else "the policy's"
    note = (f"<p class=\"note\">Brackets are {level} confidence intervals. The control column runs the same "
            "attack between two random halves of the holdout, which differ in no membership (group sizes "
            "shown): how far it lands from 0.5 is how far chance alone moves an AUC at this sample size, and the "
            "real AUC should be read against it. Pass/fail marks repeat the policy for display; the verdict above is "
            "authoritative.</p>")
    return f'<section id="sites"><h2>3. Results per site</h2>{note}{"".join(blocks)}</section>'


def _roc_section(sites: list[tuple[str, dict]], policy: dict) -> str:
    blocks = []
    for index, (name, site) in enumerate(sites):
        body = _safe_plot(_roc_plot, site, policy) if _answered(site) else _site_not_answered(site)
        blocks.append(f'<figure class="roc"><figcaption>{_esc(name)}</figcaption>{body}</figure>')
    note = ("<p class=\"note\">Both axes are logarithmic, so the low false-positive region that matters for "
            "privacy is readable. A curve on the dotted diagonal is chance. Dashed curves are distance tests "
            "on the distilled images. The grey band on the left lies below one non-member (1/non-members): "
            "the curve cannot be resolved there. The cross marks the policy limit on TPR at 1% FPR.</p>")
    return (f'<section id="roc"><h2>4. ROC curves</h2>{note}'
            f'<div class="figures">{"".join(blocks) or _na("No site results available.")}</div></section>')


def _histogram_section(sites: list[tuple[str, dict]], distance: bool) -> str:
    blocks = []
    for name, site in sites:
        if not _answered(site):
            body = _site_not_answered(site)
        else:
            attacks = [a for a in _attacks(site) if _is_distance(a) == distance]
            body = _safe_plot(_histogram_grid, attacks) if attacks else _na(
                "No distance test available for this site." if distance else "No attack on the student available for this site.")
        blocks.append(f'<figure class="hist"><figcaption>{_esc(name)}</figcaption>{body}</figure>')
    if distance:
        title = '<section id="distance"><h2>6. Distance tests on the distilled images</h2>'
        note = ("<p class=\"note\">For each of the site's images, the score is how close the nearest released "
                "distilled image comes (in pixels for <code>dcr_pixel</code>, in a feature space for "
                "<code>dcr_feature</code>). If the released images copied training images, members would sit "
                "closer than held-out images and the two histograms would separate.</p>")
    else:
        title = '<section id="histograms"><h2>5. Score histograms: members vs held-out</h2>'
        note = ("<p class=\"note\">Attack scores on the student, binned by the site (the bins are the site's, "
                "not re-binned here). Each group is shown as a fraction of its own size. Overlapping histograms "
                "mean the attack cannot tell members from held-out images.</p>")
    return f'{title}{note}{"".join(blocks) or _na("No site results available.")}</section>'


def _per_class_section(audit: dict, sites: list[tuple[str, dict]], policy: dict) -> str:
    order = [str(c) for c in _list(audit.get("classes"))]
    limit = _float(policy.get("max_auc_upper"))
    blocks = []
    for name, site in sites:
        head = f"<h3>{_esc(name)}</h3>"
        if not _answered(site):
            blocks.append(head + _site_not_answered(site))
            continue
        attacks = [a for a in _attacks(site) if _list(a.get("per_class"))]
        if not attacks:
            blocks.append(head + _na("Per-class results not available for this site."))
            continue
        counts: dict[str, dict[str, set]] = {}
        aucs: dict[str, dict[int, Any]] = {}
        for i, attack in enumerate(attacks):
            for item in _list(attack.get("per_class")):
                if not isinstance(item, dict):
                    continue
                cls = str(item.get("class", "?"))
                entry = counts.setdefault(cls, {"members": set(), "nonmembers": set()})
                for key in ("members", "nonmembers"):
                    if item.get(key) is not None:
                        entry[key].add(_fmt(item.get(key)))
                aucs.setdefault(cls, {})[i] = item.get("auc")
        names = [c for c in order if c in counts] + [c for c in counts if c not in order]
        header = "".join(f"<th>AUC {_esc(a.get('attack', '?'))}</th>" for a in attacks)
        rows = []
        for cls in names:
            cells = []
            for i in range(len(attacks)):
                value = _float(aucs[cls].get(i))
                flag = ' class="high"' if value is not None and limit is not None and value > limit else ""
                cells.append(f"<td{flag}>{_fmt(value)}</td>")
            members = " / ".join(sorted(counts[cls]["members"])) or '<span class="na">n/a</span>'
            nonmembers = " / ".join(sorted(counts[cls]["nonmembers"])) or '<span class="na">n/a</span>'
            rows.append(f"<tr><td>{_esc(cls)}</td><td>{members}</td><td>{nonmembers}</td>{''.join(cells)}</tr>")
        blocks.append(f'{head}<table class="perclass"><thead><tr><th>class</th><th>members</th>'
                      f"<th>non-members</th>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    flag_note = (f" A shaded cell is a point estimate above {limit:g}." if limit is not None else "")
    note = ("<p class=\"note\">Point estimates only, without intervals: with a few images per class they are "
            f"very noisy; n/a means a class had no member or no non-member.{flag_note}</p>")
    return (f'<section id="per-class"><h2>8. Per-class breakdown</h2>{note}'
            f'{"".join(blocks) or _na("No site results available.")}</section>')


def _limitations(audit: dict, sites: list[tuple[str, dict]], policy: dict) -> str:
    any_dp = any(isinstance(s.get("dp"), dict) for _, s in sites)
    unanswered = [name for name, s in sites if not _answered(s)]
    confidence = _float(policy.get("confidence"))
    level = f"{confidence:.0%} " if confidence is not None else ""
    bullets = [
        "These are empirical tests. They run a fixed set of known attacks; they are evidence, not a "
        "guarantee. A stronger or different attack, or an attacker with more side information, may do better.",
        "A pass means only this: with this site's data, and at this sample size, these attacks could not tell "
        "the site's training images (members) from its held-out images (non-members) better than the policy "
        "thresholds. It does not prove that no one can.",
        f"The numbers in brackets are {level}confidence intervals. They reflect how many images were tested: "
        "the policy checks the upper end of the interval, so uncertainty counts against the release.",
        "Small sites have wide intervals. A site with few held-out images cannot show low leakage precisely, "
        "and it cannot measure rates below one in the number of its held-out images at all (e.g. TPR at 0.1% "
        "FPR needs at least 1,000 held-out images).",
        "The control run applies the same attack to two random halves of the held-out images, which differ in "
        "no membership. Its spread shows how far chance alone moves an AUC at this sample size; read the real "
        "AUC against the control, not against 0.5 alone. It cannot show a systematic difference between a "
        "site's training and held-out images: the split is random and stratified by class to avoid one.",
        "An attack can only find what the model reveals. A model that generalises well can score close to 0.5 "
        "even when it was trained on the members directly; a pass is strongest where the same attacks were "
        "shown to catch a model that does leak (fedkr's positive control).",
        "The \u201c\u03b5 lower bound\u201d is an empirical lower bound on privacy loss from one attack at one "
        "threshold: the real loss is at least this large, possibly much larger.",
        ("Where a site trained with differential privacy (DP), the DP \u03b5 is a formal upper bound on what "
         "its model training can leak about any one image, under the stated \u03b4 and accountant. The two "
         "\u03b5 values answer different questions and are not expected to agree."
         if any_dp else
         "No site reported differential privacy (DP), so there is no formal upper bound on leakage: only the "
         "empirical tests in this report."),
        "The distance test only detects released images that are near copies of training images in pixel "
        "space or in one feature space. It does not see other ways an image can reveal a patient (for example "
        "a rare attribute reproduced in a different-looking image).",
        "The audit covers what is released: the student model and the distilled images. It does not cover the "
        "sites' own teacher or generator models, which never leave the sites, nor any copy made of them.",
    ]
    bullets = [_esc(b) for b in bullets]
    if unanswered:
        bullets.append("Sites that did not answer (" + ", ".join(_esc(n) for n in unanswered) + ") were not "
                       "audited; nothing in this report speaks for them.")
    return ('<section id="limitations"><h2>9. Limitations: how to read this report</h2><ul class="limits">'
            + "".join(f"<li>{b}</li>" for b in bullets) + "</ul></section>")


_CSS = """
:root { --ok: #176b2c; --bad: #b00020; --muted: #666; --line: #ccc; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #111; background: #fff; margin: 0 auto; max-width: 1200px; padding: 24px 28px 48px;
       font-size: 14px; line-height: 1.45; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 19px; border-bottom: 2px solid #333; padding-bottom: 3px; margin: 34px 0 12px; }
h3 { font-size: 16px; margin: 22px 0 8px; }
p.sub { color: var(--muted); margin: 0 0 8px; }
nav.toc { color: var(--muted); font-size: 13px; }
nav.toc a { color: inherit; margin-right: 10px; }
.banner { display: flex; align-items: center; gap: 22px; padding: 18px 24px; border-radius: 6px;
          border: 3px solid; margin: 8px 0 10px; }
.banner .word { font-size: 44px; font-weight: 800; letter-spacing: 2px; }
.banner .lead { font-size: 16px; }
.banner.passed { background: #e5f4e8; border-color: var(--ok); color: var(--ok); }
.banner.blocked { background: #fbe4e7; border-color: var(--bad); color: var(--bad); }
.banner.unknown { background: #f3f0e0; border-color: #7a6a00; color: #5a4e00; }
.facts { font-size: 15px; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 4px 7px; text-align: left; vertical-align: top; }
thead th { background: #f1f1f1; }
table.attacks { width: 100%; }
table.attacks td:nth-child(n+3):nth-child(-n+9) { white-space: nowrap; }
table.attacks td:first-child { min-width: 150px; }
td .ci { display: block; }
table.kv th { background: #f7f7f7; width: 170px; }
td.hash { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px;
          word-break: break-all; }
.ci, .desc, small { color: var(--muted); font-size: 12px; }
.desc { display: inline-block; max-width: 240px; white-space: normal; }
td.control { background: #f6f8fb; }
.rule { white-space: nowrap; font-size: 12px; }
.rule.ok { color: var(--ok); }
.rule.bad { color: var(--bad); font-weight: 700; }
.na, .rule.na { color: var(--muted); font-style: italic; }
.error { color: var(--bad); }
tr.missing td { background: #fff4f4; }
td.high { background: #fde3c8; font-weight: 600; }
table.failures td:nth-child(6) { max-width: 420px; }
.threat { white-space: pre-wrap; border-left: 4px solid var(--line); padding: 4px 12px; background: #fafafa; }
.note { color: #333; font-size: 13px; max-width: 900px; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); gap: 14px; align-items: start; }
figure { margin: 10px 0 16px; border: 1px solid #ddd; border-radius: 4px; padding: 8px; }
figcaption { font-weight: 700; font-size: 15px; margin-bottom: 4px; }
svg.plot { max-width: 100%; height: auto; display: block; }
table.samples td, table.samples th { vertical-align: middle; }
img.samples { display: block; max-width: 100%; height: auto; image-rendering: pixelated; }
ul.limits li { margin-bottom: 6px; max-width: 900px; }
footer { margin-top: 30px; color: var(--muted); font-size: 12px; }
@page { size: A4; margin: 14mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 9.5pt; }
  nav.toc { display: none; }
  .banner, td.control, td.high, tr.missing td, thead th { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  h2, h3, figcaption { break-after: avoid; page-break-after: avoid; }
  figure, table.attacks, table.samples tr, .banner { break-inside: avoid; page-break-inside: avoid; }
  .figures { grid-template-columns: 1fr 1fr; gap: 8px; }
  div.site { break-inside: avoid; page-break-inside: avoid; }
  #sites, #roc, #histograms, #distance, #samples { break-before: page; page-break-before: always; }
  table, .note { font-size: 8pt; }
  .ci, .desc, small, .rule { font-size: 7.5pt; }
}
"""


def render_audit_html(audit: dict, sample_images: np.ndarray | None = None,
                      sample_labels: np.ndarray | None = None) -> str:
    """The audit report as one self-contained HTML page (no external file, script or font).

    `audit` is the audit document (schema "fedkr.audit/1"); `sample_images` an optional uint8 array
    (N, H, W, C) with C in {1, 3} of released synthetic images and `sample_labels` their class
    indices into `audit["classes"]`. Missing parts of the document are shown as "not available".
    """
    import matplotlib

    matplotlib.use("Agg")
    audit = _dict(audit)
    policy = _dict(audit.get("policy"))
    sites = _sites(audit)
    release = _dict(audit.get("release"))
    decision = _dict(audit.get("decision"))
    word = {True: "PASSED", False: "BLOCKED"}.get(decision.get("passed"), "NO DECISION")
    style = {"font.size": 9, "svg.fonttype": "none", "font.family": "sans-serif",
             "axes.spines.top": False, "axes.spines.right": False}
    with matplotlib.rc_context(style):
        sections = [
            _verdict(audit),
            _identification(audit),
            _per_site(audit, sites, policy),
            _roc_section(sites, policy),
            _histogram_section(sites, distance=False),
            _histogram_section(sites, distance=True),
            '<section id="samples"><h2>7. Sample of released images</h2>'
            + _sample_section(audit, sample_images, sample_labels) + "</section>",
            _per_class_section(audit, sites, policy),
            _limitations(audit, sites, policy),
        ]
    toc = " ".join(f'<a href="#{anchor}">{label}</a>' for anchor, label in [
        ("verdict", "Verdict"), ("identification", "Identification"), ("sites", "Sites"), ("roc", "ROC"),
        ("histograms", "Histograms"), ("distance", "Distance tests"), ("samples", "Images"),
        ("per-class", "Per class"), ("limitations", "Limitations")])
    release_id = _esc(release.get("id") or "release id not available")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>Privacy audit {word}: {release_id}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>Privacy audit of release {release_id}</h1>"
        "<p class=\"sub\">Membership-inference and distance tests of a fedkr release, for the privacy officer.</p>"
        f"<nav class=\"toc\">{toc}</nav></header>"
        + "\n".join(sections)
        + f"<footer>Rendered from audit document schema {_esc(audit.get('schema') or 'n/a')} by fedkr "
        f"{_esc(audit.get('fedkr_version') or 'n/a')}. Self-contained page: no external file, script or font.</footer>"
        "</body></html>\n"
    )
