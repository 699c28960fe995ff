"""Cross-site relabelling: every site's teacher labels the distilled images, weighted by what it knows.

Two rules combine the sites' probabilities (`RunConfig.relabel_combine`, one of
`fedkr.shared.config.RELABEL_COMBINES`):

- "support" (`combine_labels`): under label skew a site's teacher has seen few or none of some
  classes, and its probability for such a class is noise. So the combined label takes each
  class's probability from the sites in proportion to how many members of that class each holds,
  then renormalises each row: class c's evidence comes from the sites that have learned c. A site
  that holds none of a class has no say on it. Each site's probability already carries its own
  class prior, so a class held mostly by a few sites, where it is frequent, is counted up twice.
- "label-shift" (`label_shift_posterior`): the posterior under the pooled members' class prior,
  exact when the sites differ only in their class mix (label shift): p(c|x) = sum_s p(s|x) p_s(c|x),
  with the site responsibilities p(s|x) = sum_k p(s|k) p(k|x) and p(s|k) the site's share of class k's
  members. A site that holds none of a class still has no say on it.
"""

from __future__ import annotations

import numpy as np

from fedkr.shared.config import RELABEL_COMBINES
from fedkr.shared.reports import FitReport

_PRIOR_SHARE = 1e-18


def class_support(reports: dict[str, FitReport], sites: list[str]) -> np.ndarray:
    """(sites, classes): each site's share of all contributing members of each class (columns sum to 1, or 0)."""
    return support_from_counts(class_counts(reports, sites))


def support_from_counts(counts: np.ndarray) -> np.ndarray:
    """float64 (sites, classes) shares of int (sites, classes) member counts per class (columns sum to 1, or 0)."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=0, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def combine(probs: list[np.ndarray], member_counts: np.ndarray, rule: str, temperature: float) -> np.ndarray:
    """float32 (N, K) soft labels: the sites' probabilities combined by `rule`, one of `RELABEL_COMBINES`.

    `probs` holds one float (N, K) array per site (a relabel reply: the teacher's softmax at
    `temperature`), `member_counts` int (sites, K) each site's members of each class (`class_counts`),
    in the same site order. "support": `combine_labels` on `support_from_counts(member_counts)`;
    "label-shift": `label_shift_posterior`.

    Raises:
        ValueError: no site's probabilities; member counts of the wrong shape or negative; an unknown
            rule; and what the rule's function raises.
    """
    counts = _checked_counts(probs, member_counts)
    if rule == "label-shift":
        return label_shift_posterior(probs, counts, temperature)
    if rule == "support":
        return combine_labels(probs, support_from_counts(counts))
    raise ValueError(f"relabel-combine must be one of {', '.join(RELABEL_COMBINES)}, got {rule!r}")


def _checked_counts(probs: list[np.ndarray], per_site_class: np.ndarray, what: str = "member counts") -> np.ndarray:
    """`per_site_class` (counts or shares) as float64 once it is (sites, K) for `probs`' sites and classes
    and non-negative; `what` names it in the error."""
    if not probs:
        raise ValueError("no site labelled the images")
    matrix = np.asarray(per_site_class, dtype=np.float64)
    if matrix.shape != (len(probs), probs[0].shape[1]):
        raise ValueError(f"{what} are {matrix.shape}, expected ({len(probs)}, {probs[0].shape[1]})")
    if (matrix < 0).any():
        raise ValueError(f"{what} must be >= 0")
    return matrix


def combine_labels(probs: list[np.ndarray], support: np.ndarray) -> np.ndarray:
    """Support-weighted mixture per class of the sites' probabilities, rows renormalised (float32).

    `probs`: one float (N, K) array per site; `support`: float (sites, K) shares (`support_from_counts`).

    Raises:
        ValueError: no site's probabilities; shapes that do not match; a negative share; a row that no
            site gave any probability.
    """
    support = _checked_counts(probs, support, "support shares")
    mixed = sum(w[None, :] * p for w, p in zip(support, probs, strict=True))
    rows = mixed.sum(axis=1, keepdims=True)
    if (rows <= 0).any():
        raise ValueError("a distilled image got no probability from any site")
    return (mixed / rows).astype(np.float32)


def class_counts(reports: dict[str, FitReport], sites: list[str]) -> np.ndarray:
    """int64 (sites, classes): each site's members of each class, from its fit report, in `sites` order."""
    return np.array([reports[sid].member_class_counts for sid in sites], dtype=np.int64)


def label_shift_posterior(probs: list[np.ndarray], member_counts: np.ndarray, temperature: float) -> np.ndarray:
    """float32 (N, K) soft labels at `temperature`: the sites' posterior under the pooled members' class prior.

    `probs` holds one float (N, K) array per site, each site's teacher's `softmax(logits / T)` at
    `temperature` T (what a relabel reply carries); `member_counts` is int (sites, K), each site's
    members of each class (`class_counts`), in the same site order.

    Assumes label shift: the sites' images of a class come from one distribution, and the sites
    differ only in their class mix (Saerens, Latinne and Decaestecker, "Adjusting the outputs of a
    classifier to new a priori probabilities", Neural Computation 14(1), 2002, correct one
    classifier for a new prior; here several classifiers, each trained under its own site's prior,
    are combined under the pooled prior). Then the pooled posterior is
    p(c|x) = sum_s a_s p_s(c|x), where a_s = p(s|x), the chance that an image like x is site s's, and
    a_s = sum_k p(s|k) p(k|x), with p(s|k) site s's share of class k's members (`support_from_counts`).
    Together: a = G a with G[s, t] = sum_k p(s|k) p_t(k|x), a column-stochastic (sites, sites) matrix
    per image; a is its stationary vector, computed by the Grassmann-Taksar-Heyman elimination, which
    subtracts nothing and so stays accurate when G is nearly reducible (sites that share few classes;
    Grassmann, Taksar and Heyman, Operations Research 33(5), 1985). A 1e-18 share of every column
    goes to the sites in proportion to their members, p(s): where the images say nothing about the
    site (sites with no class in common) that prior decides. The sites' probabilities are brought
    back to temperature 1 first (p ∝ p_T ** T), restricted to the classes some site holds and
    renormalised; the result is softened to `temperature` again, and a class no site holds gets 0.

    Raises:
        ValueError: no site's probabilities; shapes that do not match; negative counts; a temperature
            not > 0; no member at any site.
    """
    counts = _checked_counts(probs, member_counts)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    held = counts.sum(axis=0) > 0
    if not held.any():
        raise ValueError("no site holds any member")
    support, site_prior = support_from_counts(counts)[:, held], counts.sum(axis=1) / counts.sum()
    at_one = np.stack([_power_normalised(np.asarray(p, dtype=np.float64)[:, held], temperature) for p in probs])
    transitions = np.einsum("sk,tnk->nst", support, at_one)  # G per image, (N, S, S): columns sum to 1
    transitions = (1.0 - _PRIOR_SHARE) * transitions + _PRIOR_SHARE * site_prior[None, :, None]
    responsibilities = _stationary(np.swapaxes(transitions, 1, 2))  # G's columns are the chain's rows
    posterior = np.einsum("ns,snk->nk", responsibilities, at_one)
    combined = np.zeros((len(posterior), counts.shape[1]))
    combined[:, held] = _power_normalised(posterior, 1.0 / temperature)
    return combined.astype(np.float32)


def _stationary(rows: np.ndarray) -> np.ndarray:
    """float64 (N, S) stationary distributions of N row-stochastic (S, S) matrices with positive entries,
    by the Grassmann-Taksar-Heyman elimination (no subtraction: accurate for nearly reducible chains)."""
    chain = rows.copy()
    size = chain.shape[1]
    for k in range(size - 1, 0, -1):
        leaving = chain[:, k, :k].sum(axis=1)  # (N,): the rate from state k to the states below it
        chain[:, :k, k] /= leaving[:, None]
        chain[:, :k, :k] += chain[:, :k, k, None] * chain[:, k, None, :k]
    weights = np.zeros(chain.shape[:2])
    weights[:, 0] = 1.0
    for k in range(1, size):
        weights[:, k] = np.einsum("ni,ni->n", weights[:, :k], chain[:, :k, k])
    return weights / weights.sum(axis=1, keepdims=True)


def _power_normalised(probs: np.ndarray, power: float) -> np.ndarray:
    """float64 (N, K) rows of `probs ** power`, renormalised (in log space: a temperature change).

    Not `fedkr.shared.classifier.probabilities`: that softens logits into float32 labels, while this
    re-tempers probabilities in float64, where `label_shift_posterior`'s elimination needs
    the precision (shares of 1e-18)."""
    logs = power * np.log(np.clip(probs, 1e-300, None))
    logs -= logs.max(axis=1, keepdims=True)
    raised = np.exp(logs)
    return raised / raised.sum(axis=1, keepdims=True)


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
