"""Cross-site relabelling: every site's teacher labels the distilled images, weighted by what it knows.

Under label skew a site's teacher has seen few or none of some classes, and its probability for
such a class is noise (at a high temperature, noise spread over every class). So the combined
label takes each class's probability from the sites in proportion to how many members of that
class each holds, then renormalises each row: class c's evidence comes from the sites that have
learned c. A site that holds none of a class has no say on it.
"""

from __future__ import annotations

import numpy as np

from fedkr.shared.reports import FitReport


def class_support(reports: dict[str, FitReport], sites: list[str]) -> np.ndarray:
    """(sites, classes): each site's share of all contributing members of each class (columns sum to 1, or 0)."""
    return support_from_counts(np.array([reports[sid].member_class_counts for sid in sites]))


def support_from_counts(counts: np.ndarray) -> np.ndarray:
    """float64 (sites, classes) shares of int (sites, classes) member counts per class (columns sum to 1, or 0)."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=0, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def combine_labels(probs: list[np.ndarray], support: np.ndarray) -> np.ndarray:
    """Support-weighted mixture per class of the sites' probabilities, rows renormalised (float32)."""
    if not probs:
        raise ValueError("no site labelled the images")
    if support.shape != (len(probs), probs[0].shape[1]):
        raise ValueError(f"support is {support.shape}, expected ({len(probs)}, {probs[0].shape[1]})")
    mixed = sum(w[None, :] * p for w, p in zip(support, probs, strict=True))
    rows = mixed.sum(axis=1, keepdims=True)
    if (rows <= 0).any():
        raise ValueError("a distilled image got no probability from any site")
    return (mixed / rows).astype(np.float32)


def mix_drawn_class(soft_labels: np.ndarray, drawn: np.ndarray, weight: float) -> np.ndarray:
    """float32 (N, K) targets `(1 - weight) * soft_labels + weight * one_hot(drawn)`.

    `soft_labels` is float (N, K) with rows summing to 1 (the sites' labels), `drawn` integer (N,)
    the class each image was drawn for, `weight` in [0, 1] (`RunConfig.drawn_class_weight`); rows
    still sum to 1.

    The student's loss, T^2 x KL(target || softmax(logits / T)), is linear in the target, so on
    this target it is the weighted sum of a soft-label and a hard-label term of Hinton, Vinyals and
    Dean, "Distilling the Knowledge in a Neural Network" (2015, arXiv 1503.02531), with the hard
    term also at T rather than at 1: its gradient is about T times theirs, so their advice of a
    small hard-label weight does not carry over to `weight`. At `weight` 1 the student learns the
    drawn class at T.

    Raises:
        ValueError: a weight outside [0, 1]; `drawn` not integers; shapes that do not match; a drawn
            class outside 0..K-1.
    """
    soft_labels, drawn = np.asarray(soft_labels), np.asarray(drawn)
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"drawn-class-weight {weight} is not in [0, 1]")
    if not np.issubdtype(drawn.dtype, np.integer):
        raise ValueError(f"drawn classes must be integers, not {drawn.dtype}")
    if soft_labels.ndim != 2 or drawn.shape != soft_labels.shape[:1]:
        raise ValueError(f"soft labels {soft_labels.shape} and drawn classes {drawn.shape} do not match")
    if drawn.size and (drawn.min() < 0 or drawn.max() >= soft_labels.shape[1]):
        raise ValueError(f"a drawn class is outside 0..{soft_labels.shape[1] - 1}")
    hard = np.eye(soft_labels.shape[1], dtype=np.float32)[drawn]
    return ((1.0 - weight) * soft_labels + weight * hard).astype(np.float32)
