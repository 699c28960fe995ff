"""From the pool to a distilled set of a fixed number of images per class (IPC).

First version: within each class drop the samples the sites' teachers were least sure of, then
pick a diverse subset by k-center greedy in a feature space, keeping the soft labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DistilledSet:
    images: np.ndarray
    soft_labels: np.ndarray
    hard_labels: np.ndarray
    class_names: tuple[str, ...]
    source_index: np.ndarray  # rows of the pool each image came from

    def __len__(self) -> int:
        return int(self.hard_labels.shape[0])

    def per_class(self) -> np.ndarray:
        return np.bincount(self.hard_labels, minlength=len(self.class_names))


def kcenter_greedy(features: np.ndarray, k: int, first: int = 0) -> np.ndarray:
    """Indices of k points, each the farthest from those already chosen (Gonzalez, 1985)."""
    n = features.shape[0]
    if k >= n:
        return np.arange(n)
    chosen = [first]
    dist = np.linalg.norm(features - features[first], axis=1)
    for _ in range(k - 1):
        nxt = int(dist.argmax())
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(features - features[nxt], axis=1))
    return np.array(chosen)


def herding(features: np.ndarray, k: int) -> np.ndarray:
    """Indices of k points whose running mean tracks the set's mean most closely at every step
    (Welling, 2009; the selection iCaRL uses): a baseline that matches the first moment only."""
    n = features.shape[0]
    if k >= n:
        return np.arange(n)
    x = np.asarray(features, dtype=np.float64)
    target = x.mean(axis=0)
    total = np.zeros_like(target)
    available = np.ones(n, dtype=bool)
    chosen: list[int] = []
    for step in range(1, k + 1):
        gap = np.linalg.norm(target - (total + x) / step, axis=1)
        gap[~available] = np.inf
        nxt = int(gap.argmin())
        chosen.append(nxt)
        available[nxt] = False
        total += x[nxt]
    return np.array(chosen)


def distill(
    images: np.ndarray,
    soft_labels: np.ndarray,
    hard_labels: np.ndarray,
    features: np.ndarray,
    class_names: tuple[str, ...],
    ipc: int,
    drop_fraction: float,
) -> DistilledSet:
    """Choose at most `ipc` images per class; every class present in the pool is kept."""
    if ipc < 1:
        raise ValueError("ipc must be at least 1")
    chosen: list[np.ndarray] = []
    for cls in range(len(class_names)):
        idx = np.flatnonzero(hard_labels == cls)
        if idx.size == 0:
            continue
        confidence = soft_labels[idx, cls]
        keep = max(ipc, int(np.ceil(idx.size * (1.0 - drop_fraction))))
        idx = idx[np.argsort(-confidence, kind="stable")[:keep]]
        feats = features[idx]
        # start from the most confident sample, then spread out
        picked = kcenter_greedy(feats, ipc, first=0)
        chosen.append(idx[picked])
    index = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    return DistilledSet(
        images=images[index],
        soft_labels=soft_labels[index],
        hard_labels=hard_labels[index],
        class_names=class_names,
        source_index=index,
    )
