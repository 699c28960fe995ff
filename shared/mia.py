"""Membership-inference measurements as pure functions on score arrays.

Convention: a higher score means "more likely a member". Members are positives, holdout
(non-members) are negatives. These functions are shared by the site's audit, the report and the
benchmark, so they validate their input and never touch models or files.
"""

from __future__ import annotations

import numpy as np


def check_scores(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    members = np.asarray(members, dtype=np.float64).reshape(-1)
    nonmembers = np.asarray(nonmembers, dtype=np.float64).reshape(-1)
    if members.size == 0 or nonmembers.size == 0:
        raise ValueError("need at least one member score and one non-member score")
    if not (np.isfinite(members).all() and np.isfinite(nonmembers).all()):
        raise ValueError("scores must be finite")
    return members, nonmembers


def roc_auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """P(member score > non-member score) + 0.5 P(tie): the Mann-Whitney form of ROC AUC."""
    members, nonmembers = check_scores(members, nonmembers)
    scores = np.concatenate([members, nonmembers])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty_like(scores)
    sorted_scores = scores[order]
    # average ranks for ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    rank_sum = ranks[: members.size].sum()
    u = rank_sum - members.size * (members.size + 1) / 2.0
    return float(u / (members.size * nonmembers.size))


def roc_curve(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct threshold "member if score >= t", from (0,0) to (1,1)."""
    members, nonmembers = check_scores(members, nonmembers)
    thresholds = np.unique(np.concatenate([members, nonmembers]))[::-1]
    m_sorted = np.sort(members)
    n_sorted = np.sort(nonmembers)
    tpr = (members.size - np.searchsorted(m_sorted, thresholds, side="left")) / members.size
    fpr = (nonmembers.size - np.searchsorted(n_sorted, thresholds, side="left")) / nonmembers.size
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr])


def tpr_at_fpr(members: np.ndarray, nonmembers: np.ndarray, max_fpr: float) -> float:
    """The highest TPR of any threshold whose FPR is at most `max_fpr`."""
    if not 0.0 <= max_fpr <= 1.0:
        raise ValueError(f"max_fpr must be in [0, 1], got {max_fpr}")
    fpr, tpr = roc_curve(members, nonmembers)
    ok = fpr <= max_fpr + 1e-12
    return float(tpr[ok].max())

