"""The privacy officer's audit document (`audit.json`, schema "fedkr.audit/1") and its HTML page.

One builder for the coordinator's gate and for a site's standalone audit, so both produce the
same report. The schema is documented in docs/audit.md.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from fedkr.shared import json_output
from fedkr.shared.audit_policy import AuditDecision
from fedkr.shared.audit_summary import summarize
from fedkr.shared.audit_view import AuditDocument
from fedkr.shared.reports import AuditReport

import fedkr

SCHEMA = "fedkr.audit/1"
THREAT_MODEL = (
    "An adversary holds the released student (black-box: output probabilities for any image) and the released "
    "distilled images, and wants to tell whether a given patient image was in a site's training data (its members). "
    "Each site plays that adversary with its own data: its members are the positives and its holdout, never trained "
    "on, the negatives. Attacks on the student: loss (Yeom et al.), modified entropy (Song & Mittal), offline RMIA "
    "(Zarifzadeh et al.) and, when enabled, offline LiRA (Carlini et al.), with reference models the site trains on "
    "its holdout. Attacks on the released images: distance to the closest released image in pixel space and in the "
    "site teacher's feature space. The sites' own teachers and generators are not released; every released image is "
    "a sample of a site's generator, so each site also attacks its own generator white-box (its training loss on "
    "members against holdout: the denoising error of a diffusion generator, Carlini et al. 2023, or the mean-embedding "
    "loss of a DP-MERF one): an attacker stronger than anyone who holds only the release."
)


def _site_entry(reply: AuditReport | str, utility: dict | None) -> dict:
    """One site's entry in the audit document: its report's figures, with `utility` (the site's entry in
    `AuditDecision.site_utility_figures`, None without counts) in place of its raw utility counts; for a
    site that did not answer, why (`reply`)."""
    if not isinstance(reply, AuditReport):
        return {"answered": False, "error": reply, "attacks": []}
    return {
        "answered": True,
        "error": None,
        "num_members": reply.num_members,
        "num_nonmembers": reply.num_nonmembers,
        "dp": reply.dp,
        "near_duplicates": reply.near_duplicates,
        "settings": reply.settings,
        "attacks": [r.to_dict() for r in reply.results],
        "utility": utility,
    }


def build_audit_document(release_id: str, artefacts: dict[str, str], classes: list[str], decision: AuditDecision,
                         left_out: dict[str, dict[str, str]] | None = None) -> dict:
    """The audit document of one release (or refused candidate).

    `left_out`: the sites that left the run before the audit, by name, each with its `stage` (fit or
    synthesis) and `reason` (`RunRecord.left_out`); their data reached neither the release nor the
    audit. None where that is not known (a site's standalone audit).
    """
    document = {
        "schema": SCHEMA,
        "release": {"id": release_id, "artefacts": dict(sorted(artefacts.items()))},
        "fedkr_version": fedkr.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "threat_model": THREAT_MODEL,
        "classes": list(classes),
        "policy": decision.policy.to_dict(),
        "decision": {"passed": decision.passed, "failures": [f.to_dict() for f in decision.failures]},
        "utility": decision.utility_figures,
        "sites": {sid: _site_entry(reply, decision.site_utility_figures.get(sid))
                  for sid, reply in sorted(decision.reports.items())},
    }
    if left_out is not None:
        document["sites_left_out"] = {sid: {"stage": str(entry.get("stage", "")), "reason": str(entry.get("reason", ""))}
                                      for sid, entry in sorted(left_out.items())}
    document["summary"] = [entry.to_dict() for entry in summarize(AuditDocument.parse(document))]
    return document


def audit_summary(decision: AuditDecision) -> dict:
    """The few figures a run's metrics.json keeps: verdict, reasons, and each attack's headline numbers."""
    sites: dict[str, dict] = {}
    for sid, reply in decision.reports.items():
        if not isinstance(reply, AuditReport):
            sites[sid] = {"error": reply}
            continue
        sites[sid] = {
            r.attack: {"auc": r.auc, "auc_ci": list(r.auc_ci), "tpr_at_1pct_fpr": r.tpr_at_1pct_fpr,
                       "tpr_at_01pct_fpr": r.tpr_at_01pct_fpr, "lowest_fpr": r.lowest_fpr,
                       "control_auc": None if r.control is None else r.control["auc"],
                       "epsilon_lower_bound": r.epsilon_lower_bound, "num_members": r.num_members,
                       "num_nonmembers": r.num_nonmembers}
            for r in reply.results
        }
        if reply.dp:
            sites[sid]["dp"] = reply.dp
        if reply.utility is not None:
            sites[sid]["utility"] = _utility_headline(decision.site_utility_figures[sid])
    pooled = decision.utility_figures
    return {"passed": decision.passed, "failures": decision.reasons, "sites": sites,
            "utility": None if pooled is None else _utility_headline(pooled)}


def _utility_headline(figures: dict) -> dict:
    """The utility figures without the per-class counts, for metrics.json."""
    return {key: value for key, value in figures.items() if key != "counts"}


def sample_per_class(images: np.ndarray, labels: np.ndarray, per_class: int = 10) -> tuple[np.ndarray, np.ndarray]:
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]) if len(labels) else np.zeros(0, int)
    return images[keep], labels[keep]


def write_audit(directory: Path, document: dict, images: np.ndarray | None, labels: np.ndarray | None) -> list[str]:
    """Write audit.json and audit.html into `directory`; returns the file names written."""
    from .audit_html import render_audit_html

    directory = Path(directory)
    (directory / "audit.json").write_text(json_output.dumps(document))
    sample = sample_per_class(images, labels) if images is not None and labels is not None else (None, None)
    (directory / "audit.html").write_text(render_audit_html(document, *sample), encoding="utf-8")
    return ["audit.json", "audit.html"]
