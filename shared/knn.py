"""Euclidean nearest-neighbour queries, all on scikit-learn's `NearestNeighbors` (brute force).

Three questions are asked of nearest neighbours in fedkr, and all of them are answered here:

- how far each query lies from its closest reference (distance to closest record, the
  near-duplicate count of the released images);
- how far each point of a set lies from its k-th nearest other point of the same set (the radii
  of Kynkaanniemi et al.'s k-NN manifold);
- whether a point falls inside any of a set's balls (precision and recall, the synthesis filter).

Rows are flattened to vectors and compared in float64. scikit-learn's brute-force backend
computes |x|^2 + |y|^2 - 2 x.y in float64, so distances agree with an exact float32 subtraction
to about 1e-6 relative (7.6e-6 at most on 2000 x 2000 random 784-pixel images on a 0-1 scale,
whose distances are near 11); an exact copy lies far below any near-duplicate threshold. Measured
on one core against the hand-written torch/numpy versions these replace: closest-record
distances of 2000 x 2000 such images 0.13 s (was 1.85 s), k-NN radii of 2000 x 128 features
0.03 s (was 0.06 s), 6000 points against 2000 balls 0.20 s (was 0.14 s).
Pure functions: arrays in, arrays out.
"""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors

#: Query rows per `kneighbors` / `radius_neighbors` call: bounds the memory of one call.
DEFAULT_CHUNK = 1024


def as_rows(points: np.ndarray, name: str = "points") -> np.ndarray:
    """`points` (N, ...) as a float64 (N, D) array of flattened rows; ValueError for a scalar or non-finite values."""
    array = np.asarray(points, dtype=np.float64)
    if array.ndim == 0:
        raise ValueError(f"{name} must have a leading sample axis, got a scalar")
    array = array.reshape(array.shape[0], -1)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds non-finite values")
    return array


def _index(references: np.ndarray) -> NearestNeighbors:
    return NearestNeighbors(algorithm="brute", metric="euclidean").fit(references)


def nearest_distances(queries: np.ndarray, references: np.ndarray, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """Euclidean distance from each query row to its closest reference row.

    `queries` (N, ...) and `references` (M, ...) are flattened to (N, D) and (M, D); returns float64
    (N,), in the units of the inputs. Raises ValueError if M = 0, the widths D differ or a
    reference holds a non-finite value.
    """
    if len(references) == 0:
        raise ValueError("need at least one reference")
    r = as_rows(references, "references")
    q = np.asarray(queries, dtype=np.float64).reshape(len(queries), -1 if len(queries) else r.shape[1])
    if r.shape[0] == 0 or q.shape[1] != r.shape[1]:
        raise ValueError(f"need references of the queries' size, got {q.shape} and {r.shape}")
    if q.shape[0] == 0:
        return np.zeros(0)
    index = _index(r)
    parts = [index.kneighbors(q[i : i + chunk], n_neighbors=1)[0][:, 0] for i in range(0, q.shape[0], chunk)]
    return np.concatenate(parts)


def kth_neighbour_distances(points: np.ndarray, k: int, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """Euclidean distance from each row of `points` (N, D) to its k-th nearest other row of the set.

    Returns float64 (N,). A duplicate of a point counts as a neighbour at distance 0; the point
    itself does not. Raises ValueError unless 1 <= k < N.
    """
    x = as_rows(points)
    if not 1 <= k < x.shape[0]:
        raise ValueError(f"need 1 <= k < {x.shape[0]} points, got k={k}")
    index = _index(x)
    # each row finds itself (at distance 0) among its k + 1 nearest, so column k is the k-th other
    parts = [index.kneighbors(x[i : i + chunk], n_neighbors=k + 1)[0][:, k] for i in range(0, x.shape[0], chunk)]
    return np.concatenate(parts)


def inside_any_ball(
    points: np.ndarray, centres: np.ndarray, radii: np.ndarray, chunk: int = DEFAULT_CHUNK
) -> np.ndarray:
    """Whether each row of `points` (N, D) lies within `radii[j]` of some row j of `centres` (M, D).

    `radii` (M,) are Euclidean distances (boundary included). Returns bool (N,). One radius query
    at the largest radius finds every candidate centre; each is then checked against its own radius.
    Raises ValueError if the widths differ or `radii` does not match `centres`.
    """
    p, c = as_rows(points), as_rows(centres, "centres")
    radii = np.asarray(radii, dtype=np.float64).reshape(-1)
    if p.shape[1] != c.shape[1] or radii.size != c.shape[0]:
        raise ValueError(f"need points and centres of one width and a radius per centre, got {p.shape}, {c.shape}, {radii.shape}")
    inside = np.zeros(p.shape[0], dtype=bool)
    if p.shape[0] == 0 or c.shape[0] == 0:
        return inside
    index = _index(c)
    largest = float(radii.max())
    for start in range(0, p.shape[0], chunk):
        distances, neighbours = index.radius_neighbors(p[start : start + chunk], radius=largest)
        inside[start : start + chunk] = [bool((d <= radii[j]).any()) for d, j in zip(distances, neighbours)]
    return inside
