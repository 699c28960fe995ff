"""Precision and recall of a synthetic set against real images, in a feature space.

Kynkaanniemi et al. (2019), "Improved precision and recall metric for assessing generative
models": each set's manifold is the union of balls around its points, each ball reaching the
point's k-th nearest neighbour in the same set. Precision is the share of synthetic points inside
the real manifold (are the samples in-distribution?); recall the share of real points inside the
synthetic manifold (does synthesis cover what the site holds?). PRISM asks for both: precision
alone rewards a generator that repeats a few safe images, recall alone one that sprays noise.

Pure functions on feature arrays; a site computes them on its members, so only the two numbers
leave it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_K = 3


@dataclass(frozen=True)
class PrecisionRecall:
    precision: float
    recall: float
    k: int
    num_real: int
    num_synthetic: int

    def to_dict(self) -> dict:
        return {"precision": self.precision, "recall": self.recall, "k": self.k,
                "num_real": self.num_real, "num_synthetic": self.num_synthetic}


def _check(features: np.ndarray, name: str, k: int) -> np.ndarray:
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (samples, features), got shape {array.shape}")
    if array.shape[0] <= k:
        raise ValueError(f"{name} needs more than k={k} samples, got {array.shape[0]}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds non-finite values")
    return array


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def knn_radii(features: np.ndarray, k: int = DEFAULT_K, batch: int = 1024) -> np.ndarray:
    """Squared distance from each point to its k-th nearest other point of the same set."""
    x = _check(features, "features", k)
    radii = np.empty(x.shape[0])
    for start in range(0, x.shape[0], batch):
        d = _squared_distances(x[start:start + batch], x)
        # column k of the sorted row: column 0 is the point itself (distance 0)
        radii[start:start + batch] = np.partition(d, k, axis=1)[:, k]
    return radii


def _share_inside(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, batch: int) -> float:
    inside = 0
    for start in range(0, points.shape[0], batch):
        d = _squared_distances(points[start:start + batch], centres)
        inside += int((d <= radii[None, :]).any(axis=1).sum())
    return inside / points.shape[0]


def precision_recall(real: np.ndarray, synthetic: np.ndarray, k: int = DEFAULT_K, batch: int = 1024) -> PrecisionRecall:
    """Kynkaanniemi precision and recall of `synthetic` against `real` (both (N, D) features)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    r = _check(real, "real", k)
    s = _check(synthetic, "synthetic", k)
    if r.shape[1] != s.shape[1]:
        raise ValueError(f"real and synthetic features differ in width: {r.shape[1]} and {s.shape[1]}")
    precision = _share_inside(s, r, knn_radii(r, k, batch), batch)
    recall = _share_inside(r, s, knn_radii(s, k, batch), batch)
    return PrecisionRecall(precision, recall, k, int(r.shape[0]), int(s.shape[0]))
