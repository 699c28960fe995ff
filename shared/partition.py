"""Splitting data across simulated sites, and each site's members/holdout split.

Both are deterministic by seed so that a site can recompute its split on every message without
storing indices, and so that an audit can be repeated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import stratified_split


@dataclass(frozen=True)
class PartitionSpec:
    """`iid` or `dirichlet` label skew with concentration `alpha` (smaller is more skewed)."""

    kind: str
    alpha: float = 0.0

    @classmethod
    def parse(cls, text: str) -> "PartitionSpec":
        text = text.strip().lower()
        if text == "iid":
            return cls("iid")
        if text.startswith("dirichlet:"):
            try:
                alpha = float(text.split(":", 1)[1])
            except ValueError:
                raise ValueError(f"partition '{text}': alpha must be a number, as in dirichlet:0.5") from None
            if not alpha > 0:
                raise ValueError(f"partition '{text}': alpha must be > 0")
            return cls("dirichlet", alpha)
        raise ValueError(f"partition '{text}': expected 'iid' or 'dirichlet:ALPHA'")

    def __str__(self) -> str:
        return "iid" if self.kind == "iid" else f"dirichlet:{self.alpha:g}"


def partition_iid(num_items: int, num_sites: int, seed: int) -> list[np.ndarray]:
    """Shuffle and deal items into `num_sites` near-equal parts."""
    _check_sites(num_items, num_sites)
    order = np.random.default_rng(seed).permutation(num_items)
    return [np.sort(part) for part in np.array_split(order, num_sites)]


def partition_dirichlet(
    labels: np.ndarray, num_sites: int, alpha: float, seed: int, min_per_site: int = 10
) -> list[np.ndarray]:
    """Label skew: each class is spread over sites in Dirichlet(alpha) proportions.

    Draws again (same seed stream) until every site holds at least `min_per_site` items, the
    usual remedy for empty sites at small alpha.
    """
    _check_sites(labels.shape[0], num_sites)
    min_per_site = min(min_per_site, labels.shape[0] // num_sites)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _attempt in range(1000):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_sites)]
        for cls in classes:
            idx = rng.permutation(np.flatnonzero(labels == cls))
            shares = rng.dirichlet(np.full(num_sites, alpha))
            cuts = (np.cumsum(shares)[:-1] * idx.size).astype(int)
            for site, chunk in enumerate(np.split(idx, cuts)):
                parts[site].append(chunk)
        merged = [np.sort(np.concatenate(p)) for p in parts]
        if min(m.size for m in merged) >= max(min_per_site, 1):
            return merged
    raise ValueError(
        f"could not give each of {num_sites} sites {min_per_site} items with dirichlet:{alpha:g}; "
        "use fewer sites or a larger alpha"
    )


def partition(labels: np.ndarray, num_sites: int, spec: PartitionSpec, seed: int) -> list[np.ndarray]:
    if spec.kind == "iid":
        return partition_iid(labels.shape[0], num_sites, seed)
    return partition_dirichlet(labels, num_sites, spec.alpha, seed)


def members_holdout_split(
    labels: np.ndarray, holdout_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A site's members (train everything) and holdout (never trained on; the audit's non-members)."""
    return stratified_split(labels, holdout_fraction, seed)


def _check_sites(num_items: int, num_sites: int) -> None:
    if num_sites < 1:
        raise ValueError(f"number of sites must be at least 1, got {num_sites}")
    if num_items < num_sites:
        raise ValueError(f"{num_items} items cannot be split over {num_sites} sites")
