"""From the pool to a distilled set of a fixed number of images per class (IPC).

Within each class, drop the samples the sites' teachers were least sure of, then choose IPC of the
rest in a feature space by one of four rules, keeping the soft labels: class-aware spectral
distribution matching (the default, see `spectral.py`), k-center greedy (coverage), herding
(first moment) or uniform random (the reference every rule must beat). The same pre-filter runs
for all four, so a comparison isolates the choice itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spectral import SpectralSettings, phase_weight_for, random_frequencies, spectral_select

from fedkr.shared.config import SELECTIONS


@dataclass(frozen=True)
class DistilledSet:
    """The distilled set: uint8 images (N, H, W, C), float32 soft labels (N, K), int64 hard labels (N,),
    the K class names, and each image's row in the pool it came from (int64, (N,))."""

    images: np.ndarray
    soft_labels: np.ndarray
    hard_labels: np.ndarray
    class_names: tuple[str, ...]
    source_index: np.ndarray  # rows of the pool each image came from

    def __len__(self) -> int:
        return int(self.hard_labels.shape[0])

    def per_class(self) -> np.ndarray:
        return np.bincount(self.hard_labels, minlength=len(self.class_names))


def subset(distilled: DistilledSet, rows: np.ndarray) -> DistilledSet:
    """The images of `distilled` at `rows` (int64, (M,), positions in it), with their labels and pool rows."""
    return DistilledSet(distilled.images[rows], distilled.soft_labels[rows], distilled.hard_labels[rows],
                        distilled.class_names, distilled.source_index[rows])


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


def whole_pool_ipc(hard_labels: np.ndarray, num_classes: int, ipc: int, limit: int | None = None) -> int:
    """Images per class that take every image of a pool whose drawn classes are `hard_labels` (int (N,)),
    at most `limit` over all `num_classes` classes (the images a site relabels), never below `ipc`.

    `distill` at this count keeps every image of a class that holds at most that many (its drop of the
    least confident keeps at least the count asked for). Raises `ValueError` for a label outside
    [0, num_classes) or counts below 1.
    """
    if num_classes < 1 or ipc < 1 or (limit is not None and limit < 1):
        raise ValueError("num_classes, ipc and limit must be at least 1")
    labels = np.asarray(hard_labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"hard labels must lie in [0, {num_classes})")
    largest = int(np.bincount(labels, minlength=num_classes).max()) if labels.size else 0
    if limit is not None:
        largest = min(largest, limit // num_classes)
    return max(ipc, largest)


def distill(
    images: np.ndarray,
    soft_labels: np.ndarray,
    hard_labels: np.ndarray,
    features: np.ndarray,
    class_names: tuple[str, ...],
    ipc: int,
    drop_fraction: float,
    selection: str = "spectral",
    class_support: np.ndarray | None = None,
    sample_weights: np.ndarray | None = None,
    seed: int = 0,
) -> DistilledSet:
    """Choose at most `ipc` images per class; every class present in the pool is kept.

    `class_support[c]` is the share of sites that hold class c (spectral: classes few sites hold
    weigh realism more); `sample_weights` weigh each pool row in the spectral target, so that the
    sites that know a class well shape what its distilled images must look like.
    """
    if ipc < 1:
        raise ValueError("ipc must be at least 1")
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    settings = SpectralSettings(seed=seed)
    freqs = random_frequencies(features, settings.frequencies, seed) if selection == "spectral" else None
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for cls in range(len(class_names)):
        idx = np.flatnonzero(hard_labels == cls)
        if idx.size == 0:
            continue
        confidence = soft_labels[idx, cls]
        keep = max(ipc, int(np.ceil(idx.size * (1.0 - drop_fraction))))
        idx = idx[np.argsort(-confidence, kind="stable")[:keep]]
        feats = features[idx]
        if selection == "spectral":
            support = 1.0 if class_support is None else float(class_support[cls])
            weights = None if sample_weights is None else sample_weights[idx]
            picked = spectral_select(feats, ipc, freqs, phase_weight_for(support, settings.tail_phase_boost), weights)
        elif selection == "kcenter":
            picked = kcenter_greedy(feats, ipc, first=0)  # start from the most confident sample, then spread out
        elif selection == "herding":
            picked = herding(feats, ipc)
        else:
            picked = np.sort(rng.choice(idx.size, size=min(ipc, idx.size), replace=False))
        chosen.append(idx[picked])
    index = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    return DistilledSet(
        images=images[index],
        soft_labels=soft_labels[index],
        hard_labels=hard_labels[index],
        class_names=class_names,
        source_index=index,
    )
