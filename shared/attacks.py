"""Membership scores of the attacks a site runs, computed from model outputs it already has.

Every function maps outputs to one score per example, higher meaning "more likely a member", so
that `mia` and `mia_stats` measure them all the same way. Models never enter here: the site's
auditor runs the networks and passes logits and distances in.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, logsumexp

from . import knn


def _check(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"need logits (N, C) and N labels, got {logits.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError("labels out of range for the logits' classes")
    return logits, labels


def true_class_probability(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """float64 (N,): softmax probability of each row's true class, from logits (N, K) and int labels (N,).

    Raises `ValueError` for mismatched shapes or labels outside [0, K).
    """
    logits, labels = _check(logits, labels)
    return np.exp(log_softmax(logits, axis=1)[np.arange(labels.size), labels])


def loss_scores(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Yeom et al.: a model fits its training examples better, so the score is minus the cross-entropy."""
    # log p_y = -log(1 + e^-phi): exact where log_softmax rounds a very confident example's loss to 0
    return -np.logaddexp(0.0, -lira_logit(logits, labels))


def modified_entropy_scores(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Song & Mittal's Mentr, negated: low when the model is confident and right, high when confident and wrong.

    Mentr = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i).
    """
    logits, labels = _check(logits, labels)
    log_p = log_softmax(logits, axis=1)
    p = np.exp(log_p)
    rows = np.arange(labels.size)
    log_p_y = loss_scores(logits, labels)
    one_minus_p_y = -np.expm1(log_p_y)  # 1 - p_y without cancellation for confident examples
    others = -p * np.log1p(-np.clip(p, 0.0, 1.0 - 1e-16))
    others[rows, labels] = 0.0
    mentr = -one_minus_p_y * log_p_y + others.sum(axis=1)
    return -mentr


def lira_logit(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Carlini et al.'s phi = log p_y - log sum_{y' != y} p_y': near-Gaussian across models, unlike p_y."""
    logits, labels = _check(logits, labels)
    rows = np.arange(labels.size)
    masked = logits.copy()
    masked[rows, labels] = -np.inf
    return logits[rows, labels] - logsumexp(masked, axis=1)


def lira_offline_scores(target_phi: np.ndarray, reference_phi: np.ndarray) -> np.ndarray:
    """Offline LiRA with a global variance: how far above the reference models' phi the target's phi lies.

    `reference_phi` is (N, K): phi of each example under K reference models that did not train on
    it. With few reference models a per-example variance is unreliable, so one variance is fitted
    over all examples (Carlini et al.'s fixed-variance variant); the one-sided Gaussian test is
    then monotone in this z-score.
    """
    target_phi = np.asarray(target_phi, dtype=np.float64).reshape(-1)
    reference_phi = np.asarray(reference_phi, dtype=np.float64).reshape(target_phi.size, -1)
    mean = reference_phi.mean(axis=1)
    spread = reference_phi - mean[:, None] if reference_phi.shape[1] > 1 else reference_phi - reference_phi.mean()
    sigma = max(float(spread.std()), 1e-6)
    return (target_phi - mean) / sigma


def rmia_scores(
    target_prob_x: np.ndarray,
    reference_prob_x: np.ndarray,
    target_prob_z: np.ndarray,
    reference_prob_z: np.ndarray,
    offline_a: float = 0.3,
    gamma: float = 1.0,
    x_is_population: bool = False,
) -> np.ndarray:
    """Offline RMIA (Zarifzadeh et al.): the share of population samples z that x dominates.

    Pr(x|theta)/Pr(x) compares how much the target favours x with how much models that never saw x
    do; Pr(x) is approximated from OUT reference models as ((1 + a) Pr_out(x) + (1 - a)) / 2.
    Score(x) = fraction of z with [Pr(x|theta)/Pr(x)] / [Pr(z|theta)/Pr(z)] >= gamma.
    `reference_prob_*` are (N, K) true-class probabilities under K OUT reference models.
    `x_is_population`: x are the population samples themselves (same order), so each x leaves
    itself out; otherwise it would always dominate itself and score 1/N higher than a member.
    """
    if not 0.0 <= offline_a <= 1.0 or not gamma > 0:
        raise ValueError("offline_a must be in [0, 1] and gamma > 0")

    def ratio(target: np.ndarray, reference: np.ndarray) -> np.ndarray:
        target = np.asarray(target, dtype=np.float64).reshape(-1)
        p_out = np.asarray(reference, dtype=np.float64).reshape(target.size, -1).mean(axis=1)
        return target / (((1 + offline_a) * p_out + (1 - offline_a)) / 2)

    ratio_x = ratio(target_prob_x, reference_prob_x)
    ratio_z = np.sort(ratio(target_prob_z, reference_prob_z))
    if ratio_z.size == 0:
        raise ValueError("RMIA needs at least one population sample z")
    dominated = np.searchsorted(ratio_z, ratio_x / gamma, side="right").astype(np.float64)
    if not x_is_population:
        return dominated / ratio_z.size
    if ratio_x.size != ratio_z.size or ratio_z.size < 2:
        raise ValueError("x_is_population needs x to be the population, of at least 2 samples")
    return (dominated - (gamma <= 1.0)) / (ratio_z.size - 1)


def nearest_distances(queries: np.ndarray, references: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Euclidean distance from each query row to its closest reference row: float64 (N,), see `knn.nearest_distances`."""
    return knn.nearest_distances(queries, references, chunk)


def pixel_rows(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, H, W, C) as float32 rows (N, H*W*C) of pixel values scaled to [0, 1]: the space of
    the pixel distance test (`dcr_pixel`), shared by the release audit and the site's shard check."""
    return np.asarray(images).reshape(len(images), -1).astype(np.float32) / 255.0


def closest_pixel_distances(records: np.ndarray, released: np.ndarray) -> np.ndarray:
    """float64 (N,): each record's Euclidean distance to its closest released image, in `pixel_rows` space.

    `records` uint8 (N, H, W, C), N >= 1, `released` uint8 (M, H, W, C), M >= 1: distance to closest
    record (DCR) of the pixel distance test. Raises ValueError for N = 0 or M = 0 (`pixel_rows`,
    `knn.nearest_distances`) or images of different sizes.
    """
    return nearest_distances(pixel_rows(records), pixel_rows(released))


def distance_scores(distances: np.ndarray) -> np.ndarray:
    """Distance to closest record: an image the release copies sits closer to it, so the score is -distance."""
    return -np.asarray(distances, dtype=np.float64)
