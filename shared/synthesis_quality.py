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

from . import knn

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


def knn_radii(features: np.ndarray, k: int = DEFAULT_K, batch: int = 1024) -> np.ndarray:
    """Squared Euclidean distance from each row of `features` (N, D) to its k-th nearest other row: float64 (N,).

    Raises ValueError for a non-2-D array, N <= k or non-finite values.
    """
    x = _check(features, "features", k)
    return knn.kth_neighbour_distances(x, k, batch) ** 2


def precision_recall(real: np.ndarray, synthetic: np.ndarray, k: int = DEFAULT_K, batch: int = 1024) -> PrecisionRecall:
    """Kynkaanniemi precision and recall of `synthetic` against `real` (both (N, D) float features).

    Precision: share of synthetic rows within the k-NN radius of some real row; recall the other
    way round. `batch` bounds the rows of one neighbour query. Raises ValueError for k < 1, a set
    of at most k rows, non-2-D or non-finite input, or sets of different widths.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    r = _check(real, "real", k)
    s = _check(synthetic, "synthetic", k)
    if r.shape[1] != s.shape[1]:
        raise ValueError(f"real and synthetic features differ in width: {r.shape[1]} and {s.shape[1]}")
    precision = float(knn.inside_any_ball(s, r, knn.kth_neighbour_distances(r, k, batch), batch).mean())
    recall = float(knn.inside_any_ball(r, s, knn.kth_neighbour_distances(s, k, batch), batch).mean())
    return PrecisionRecall(precision, recall, k, int(r.shape[0]), int(s.shape[0]))
