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
    as many as fit within `limit` images over all `num_classes` classes (the images a site relabels),
    never below `ipc`.

    The count is the largest C with sum over classes of min(count, C) at most `limit`: small classes
    keep every image and only the largest are cut. `ipc` wins over `limit`: where `ipc` images per
    class already exceed it, the coordinator's relabelling refuses the run before any request goes
    out. `distill` at this count keeps every image of a class that holds at most that many (its drop
    of the least confident keeps at least the count asked for). Raises `ValueError` for a label
    outside [0, num_classes) or counts below 1.
    """
    if num_classes < 1 or ipc < 1 or (limit is not None and limit < 1):
        raise ValueError("num_classes, ipc and limit must be at least 1")
    labels = np.asarray(hard_labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"hard labels must lie in [0, {num_classes})")
    counts = np.bincount(labels, minlength=num_classes) if labels.size else np.zeros(num_classes, np.int64)
    low, high = 0, int(counts.max())
    while limit is not None and low < high:  # the largest per-class cap whose total fits the limit
        middle = (low + high + 1) // 2
        low, high = (middle, high) if int(np.minimum(counts, middle).sum()) <= limit else (low, middle - 1)
    return max(ipc, high)


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


def distill_student_and_release(
    images: np.ndarray,
    soft_labels: np.ndarray,
    hard_labels: np.ndarray,
    features: np.ndarray,
    class_names: tuple[str, ...],
    ipc: int,
    student_ipc: int,
    drop_fraction: float,
    selection: str = "spectral",
    class_support: np.ndarray | None = None,
    sample_weights: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[DistilledSet, np.ndarray]:
    """The student's set, at most `student_ipc` per class, and the rows of it (int64, (M,)) that form
    the released distilled set, at most `ipc` per class. Arguments as `distill`'s.

    Both choices drop the least confident `drop_fraction` of what they choose from, so with
    `student_ipc` at or above every class's count (the whole pool, `whole_pool_ipc`) the student's
    set is the pool and the release is what `distill` at `ipc` would choose from it; below that, the
    release is chosen among the more confident part of the student's set. With `student_ipc <= ipc`
    the two sets are one (every row). Raises `ValueError` as `distill` does.
    """
    student_set = distill(images, soft_labels, hard_labels, features, class_names, max(ipc, student_ipc), drop_fraction,
                          selection=selection, class_support=class_support, sample_weights=sample_weights, seed=seed)
    if student_ipc <= ipc:
        return student_set, np.arange(len(student_set))
    within = student_set.source_index
    released = distill(student_set.images, student_set.soft_labels, student_set.hard_labels, features[within],
                       class_names, ipc, drop_fraction, selection=selection, class_support=class_support,
                       sample_weights=None if sample_weights is None else sample_weights[within], seed=seed)
    return student_set, released.source_index
