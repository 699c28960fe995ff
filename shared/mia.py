"""Membership-inference measurements as pure functions on score arrays.

Convention: a higher score means "more likely a member". Members are positives, holdout
(non-members) are negatives. These functions are shared by the site's audit, the report and the
benchmark, so they validate their input and never touch models or files.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics


def check_scores(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both score sets as flat float64 arrays; ValueError if either is empty or holds a non-finite score."""
    members = np.asarray(members, dtype=np.float64).reshape(-1)
    nonmembers = np.asarray(nonmembers, dtype=np.float64).reshape(-1)
    if members.size == 0 or nonmembers.size == 0:
        raise ValueError("need at least one member score and one non-member score")
    if not (np.isfinite(members).all() and np.isfinite(nonmembers).all()):
        raise ValueError("scores must be finite")
    return members, nonmembers


def roc_auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """ROC AUC of members (positives) against non-members: P(member > non-member) + 0.5 P(tie).

    `members`, `nonmembers`: 1-D float scores (any shape is flattened), higher meaning member.
    Returns a float in [0, 1]; 0.5 is chance. scikit-learn's `roc_auc_score` with members labelled
    1, whose trapezoidal area counts a tie as half a win (the Mann-Whitney U statistic / (m n)).
    Raises ValueError on an empty side or a non-finite score (`check_scores`).
    """
    members, nonmembers = check_scores(members, nonmembers)
    labels, scores = _labelled(members, nonmembers)
    return float(metrics.roc_auc_score(labels, scores))


def roc_curve(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct threshold "member if score >= t", from (0,0) to (1,1).

    Two float64 arrays of equal length (distinct scores + 1), both non-decreasing. scikit-learn's
    `roc_curve` with `drop_intermediate=False`: every threshold is kept, so that `tpr_at_fpr` never
    loses a point on a straight stretch of the curve. Raises ValueError as `check_scores`.
    """
    members, nonmembers = check_scores(members, nonmembers)
    labels, scores = _labelled(members, nonmembers)
    fpr, tpr, _ = metrics.roc_curve(labels, scores, drop_intermediate=False)
    return fpr, tpr


def tpr_at_fpr(members: np.ndarray, nonmembers: np.ndarray, max_fpr: float) -> float:
    """The highest TPR of any threshold whose FPR is at most `max_fpr` (a fraction in [0, 1]).

    Raises ValueError for `max_fpr` outside [0, 1] and as `check_scores`.
    """
    if not 0.0 <= max_fpr <= 1.0:
        raise ValueError(f"max_fpr must be in [0, 1], got {max_fpr}")
    fpr, tpr = roc_curve(members, nonmembers)
    ok = fpr <= max_fpr + 1e-12
    return float(tpr[ok].max())


def _labelled(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's (y_true, y_score): members labelled 1, non-members 0."""
    labels = np.concatenate([np.ones(members.size), np.zeros(nonmembers.size)])
    return labels, np.concatenate([members, nonmembers])
