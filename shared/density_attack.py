"""A density-based membership attack on synthetic data: DOMIAS (van Breugel et al., AISTATS 2023,
arXiv 2302.12580).

A generator that memorises puts more of its synthetic density on its training images than the
population does. DOMIAS scores a query x by the ratio p_synthetic(x) / p_reference(x): high where
the synthetic data are denser than the population, which is where members sit if they leak. The
attacker holds the synthetic data and a reference sample of the population that contains no
member (fedkr's bench gives it the test split).

Both densities are Gaussian kernel density estimates (scikit-learn's `KernelDensity`, Scott's
bandwidth) in a low-dimensional whitened PCA space fitted on the reference sample, the paper's
KDE variant; the paper's flow density (BNAF) is not used.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.neighbors import KernelDensity

#: Dimensions of the PCA space the densities are estimated in: kernel density estimates degrade
#: quickly with dimension, and 8 keeps Scott's bandwidth meaningful at a few hundred samples.
DEFAULT_DIMENSIONS = 8

__all__ = ["DEFAULT_DIMENSIONS", "density_ratio_scores"]


def _rows(points: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim < 2 or array.shape[0] < 1:
        raise ValueError(f"{name} must be an array (N, ...) with at least one row, got shape {array.shape}")
    array = array.reshape(array.shape[0], -1)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds a non-finite value")
    return array


def density_ratio_scores(synthetic: np.ndarray, reference: np.ndarray, queries: np.ndarray,
                         dimensions: int = DEFAULT_DIMENSIONS, seed: int = 0) -> np.ndarray:
    """DOMIAS scores of `queries`: log p_synthetic(x) - log p_reference(x), float64 (Q,); higher means member.

    `synthetic` (N, ...) is what the attacker received (a site's synthetic images or their
    features), `reference` (R, ...) a population sample holding no member, `queries` (Q, ...) the
    images whose membership is tested; trailing dimensions are flattened and must agree.
    `dimensions` is the PCA space's size (capped by the reference's rank). Raises ValueError for
    empty or non-finite input, mismatched widths, fewer than 2 synthetic or reference rows, or
    `dimensions` below 1.
    """
    synthetic, reference, queries = (_rows(x, n) for x, n in ((synthetic, "synthetic"), (reference, "reference"),
                                                               (queries, "queries")))
    if not synthetic.shape[1] == reference.shape[1] == queries.shape[1]:
        raise ValueError(f"widths differ: synthetic {synthetic.shape[1]}, reference {reference.shape[1]}, "
                         f"queries {queries.shape[1]}")
    if min(synthetic.shape[0], reference.shape[0]) < 2:
        raise ValueError("density estimates need at least 2 synthetic and 2 reference rows")
    if dimensions < 1:
        raise ValueError(f"dimensions must be at least 1, got {dimensions}")
    components = min(dimensions, reference.shape[0] - 1, reference.shape[1])
    pca = PCA(n_components=components, whiten=True, random_state=seed).fit(reference)
    s, r, q = pca.transform(synthetic), pca.transform(reference), pca.transform(queries)
    log_synthetic = KernelDensity(bandwidth="scott").fit(s).score_samples(q)
    log_reference = KernelDensity(bandwidth="scott").fit(r).score_samples(q)
    return np.asarray(log_synthetic - log_reference, dtype=np.float64)
