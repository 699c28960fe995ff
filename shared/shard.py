"""The synthetic shard: the only kind of image data that ever leaves a site, and its validation.

Both the site's outbound gate and the coordinator's pool call `validate_shard`, so a shard that one
side accepts the other accepts too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ScalarValue = str | int | float

MAX_SUMMARY_KEYS = 32
MAX_SUMMARY_TEXT = 200


class ShardError(ValueError):
    """A shard that must not be sent or pooled; the message says why in one line."""


#: The most a coordinator may ask a site to oversample for its filter.
MAX_OVERSAMPLE = 4.0

#: How far from 1 a row of soft labels may sum, in a shard or a relabelling reply. Rows travel as
#: float16 (`codec.SOFT_LABEL_WIRE_DTYPE`), which moves a sum by at most 8e-4.
ROW_SUM_TOLERANCE = 1e-3


def per_class_request(member_class_counts: tuple[int, ...] | list[int] | np.ndarray, samples_per_class: int,
                      min_class_members: int) -> tuple[int, ...]:
    """Images per class one round asks of a site holding `member_class_counts` (K,) members per class:
    `samples_per_class` of every class with at least `min_class_members` members (enough to have learned),
    0 of the others."""
    return tuple(samples_per_class if int(n) >= min_class_members else 0 for n in member_class_counts)


@dataclass(frozen=True)
class SynthesisRequest:
    """Ask a site for fresh images: `per_class[c]` images of class c."""

    run_id: str
    round: int
    per_class: tuple[int, ...]
    temperature: float
    #: Draw this many times the request and keep the samples that pass the site's filter (1: measure only).
    oversample: float = 1.0

    @property
    def total(self) -> int:
        return int(sum(self.per_class))


@dataclass(frozen=True)
class ShardSpec:
    """What the receiver expects: image shape and number of classes agreed at fit time."""

    image_shape: tuple[int, int, int]
    num_classes: int
    max_images: int = 100_000


@dataclass(frozen=True)
class Shard:
    site_id: str
    round: int
    images: np.ndarray  # uint8 (N, H, W, C)
    soft_labels: np.ndarray  # float32 (N, num_classes), rows sum to 1
    hard_labels: np.ndarray  # int64 (N,), the class the generator was asked for
    declared_count: int
    summary: dict[str, ScalarValue] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.hard_labels.shape[0])

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"images": self.images, "soft_labels": self.soft_labels, "hard_labels": self.hard_labels}

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.to_arrays().values()))


def validate_shard(shard: object, spec: ShardSpec, expected_count: int | None = None) -> None:
    """Raise `ShardError` unless `shard` is well-formed for `spec` (and of the requested size)."""
    if not isinstance(shard, Shard):
        raise ShardError(f"not a shard: {type(shard).__name__}")
    images, soft, hard = shard.images, shard.soft_labels, shard.hard_labels
    for name, arr in (("images", images), ("soft_labels", soft), ("hard_labels", hard)):
        if not isinstance(arr, np.ndarray):
            raise ShardError(f"{name} is {type(arr).__name__}, not an array")
    if images.dtype != np.uint8:
        raise ShardError(f"images must be uint8, got {images.dtype}")
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(spec.image_shape):
        raise ShardError(f"images must be (N, {', '.join(map(str, spec.image_shape))}), got {tuple(images.shape)}")
    n = images.shape[0]
    if n == 0:
        raise ShardError("shard is empty")
    if n > spec.max_images:
        raise ShardError(f"shard holds {n} images, more than the limit {spec.max_images}")
    if shard.declared_count != n:
        raise ShardError(f"shard declares {shard.declared_count} images but holds {n}")
    if expected_count is not None and n != expected_count:
        raise ShardError(f"shard holds {n} images but {expected_count} were requested")
    if soft.dtype != np.float32 or soft.shape != (n, spec.num_classes):
        raise ShardError(f"soft_labels must be float32 ({n}, {spec.num_classes}), got {soft.dtype} {tuple(soft.shape)}")
    if not np.isfinite(soft).all() or (soft < 0).any():
        raise ShardError("soft_labels hold negative or non-finite values")
    row_sums = soft.sum(axis=1)
    if np.abs(row_sums - 1.0).max() > ROW_SUM_TOLERANCE:
        raise ShardError(f"soft_labels rows must sum to 1 (worst row sums to {row_sums[np.abs(row_sums - 1).argmax()]:.4f})")
    if hard.dtype != np.int64 or hard.shape != (n,):
        raise ShardError(f"hard_labels must be int64 ({n},), got {hard.dtype} {tuple(hard.shape)}")
    if hard.min() < 0 or hard.max() >= spec.num_classes:
        raise ShardError(f"hard_labels must lie in [0, {spec.num_classes})")
    if not isinstance(shard.site_id, str) or not shard.site_id:
        raise ShardError("shard has no site id")
    check_summary(shard.summary)


def check_summary(summary: object) -> None:
    """Settings only: a few short scalars, so that nothing bulky or data-derived rides along."""
    if not isinstance(summary, dict) or len(summary) > MAX_SUMMARY_KEYS:
        raise ShardError(f"summary must be a mapping of at most {MAX_SUMMARY_KEYS} settings")
    for key, value in summary.items():
        if not isinstance(key, str) or len(key) > 64:
            raise ShardError("summary keys must be short strings")
        if isinstance(value, str):
            if len(value) > MAX_SUMMARY_TEXT:
                raise ShardError(f"summary value '{key}' is longer than {MAX_SUMMARY_TEXT} characters")
        elif not isinstance(value, (int, float, bool)):
            raise ShardError(f"summary value '{key}' is {type(value).__name__}, not a scalar")
