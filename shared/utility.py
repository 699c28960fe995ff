"""The utility check: what the candidate student knows of each site's own data, next to the site's teacher.

A release that teaches nothing leaks nothing, so the membership-inference audit alone passes it.
Before release every site therefore also scores the candidate student on its own holdout (images
no model of the run trained on), and its own teacher on the same images. A site reports counts
only, per class: holdout images, and how many of them the student and the teacher classify
correctly. The coordinator pools the counts of all sites per class, so that a class one site holds
few images of is still weighed by every site's images of it.

The headline figure is chance-adjusted balanced accuracy, as scikit-learn's
`balanced_accuracy_score(adjusted=True)` computes it: the mean per-class recall over the classes
present, rescaled so that chance (or always answering one class) scores 0 and a perfect
classifier 1. Plain accuracy would pass a student that always answers a site's majority class;
the adjusted figure does not. `utility_ratio` is the student's adjusted balanced accuracy over the
sites' teachers': the share of what the sites' own models know that the student kept. A ratio
says nothing when the teachers themselves learned little (a DP-SGD teacher that collapsed, for
example): `adjusted_balanced_accuracy_interval` gives the student's own figure an interval, so that
the policy can also hold it to an absolute floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COMPARATORS = ("teacher", "reference models", "mixed")


@dataclass(frozen=True, eq=False)
class UtilityCounts:
    """Per-class counts on a holdout (one site's, or several pooled).

    Attributes:
        support: int array (K,), holdout images of each class.
        student_correct: int array (K,), of those, how many the candidate student classifies correctly.
        teacher_correct: int array (K,), of those, how many the teacher(s) classify correctly.

    Raises `ValueError` when the three are not equal-length 1-D arrays of non-negative integers
    with correct counts at most the support.
    """

    support: np.ndarray
    student_correct: np.ndarray
    teacher_correct: np.ndarray
    #: What "teacher" counts: the site's own teacher, or (when a standalone audit no longer holds it)
    #: the audit's cross-fitted reference models, each image scored by the one that never saw it.
    comparator: str = "teacher"

    def __post_init__(self) -> None:
        if self.comparator not in COMPARATORS:
            raise ValueError(f"utility comparator must be one of {COMPARATORS}, got {str(self.comparator)[:40]!r}")
        arrays = [np.asarray(a) for a in (self.support, self.student_correct, self.teacher_correct)]
        if any(a.ndim != 1 or a.shape != arrays[0].shape for a in arrays) or arrays[0].size == 0:
            raise ValueError("utility counts must be three 1-D arrays of one length, one entry per class")
        if any(not np.issubdtype(a.dtype, np.integer) for a in arrays) or any((a < 0).any() for a in arrays):
            raise ValueError("utility counts must be non-negative integers")
        if (arrays[1] > arrays[0]).any() or (arrays[2] > arrays[0]).any():
            raise ValueError("a class has more correct answers than holdout images")
        for name, array in zip(("support", "student_correct", "teacher_correct"), arrays):
            object.__setattr__(self, name, array.astype(np.int64))

    @property
    def num_examples(self) -> int:
        return int(self.support.sum())

    @property
    def classes_present(self) -> int:
        return int((self.support > 0).sum())

    def accuracy(self, model: str) -> float:
        """Share of holdout images `model` ("student" or "teacher") classifies correctly; nan without images."""
        correct = self._correct(model)
        return float(correct.sum() / self.num_examples) if self.num_examples else float("nan")

    def balanced_accuracy(self, model: str, adjusted: bool = False) -> float:
        """Mean recall over the classes present; `adjusted` maps chance (1 / classes present) to 0.

        Equals `sklearn.metrics.balanced_accuracy_score(y_true, y_pred, adjusted=...)` on the images
        counted. nan without images; with one class present the adjusted figure is nan (nothing to
        tell apart).
        """
        present = self.support > 0
        if not present.any():
            return float("nan")
        score = float((self._correct(model)[present] / self.support[present]).mean())
        if not adjusted:
            return score
        chance = 1.0 / present.sum()
        return (score - chance) / (1.0 - chance) if present.sum() > 1 else float("nan")

    def recall(self, model: str) -> np.ndarray:
        """float64 (K,): per-class recall of `model`; nan for a class with no holdout image."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self._correct(model) / np.where(self.support > 0, self.support, 0)

    def adjusted_balanced_accuracy_interval(self, model: str, confidence: float = 0.95, draws: int = 20_000,
                                            seed: int = 0) -> tuple[float, float]:
        """Equal-tailed `confidence` interval of `model`'s chance-adjusted balanced accuracy.

        Follows Brodersen et al., "The balanced accuracy and its posterior distribution" (ICPR 2010):
        each present class's recall has a Beta posterior and balanced accuracy is their mean. The prior
        is Jeffreys' (posterior Beta(correct + 1/2, wrong + 1/2), the per-class interval Brown, Cai and
        DasGupta (2001) recommend) rather than Brodersen's flat one, which pulls each recall towards 1/2
        enough that a teacher at 0.989 read an upper bound of 0.985 on the demo's holdouts. The
        quantiles are taken from `draws` Monte Carlo draws (numpy's Beta sampler, seeded by `seed`, so
        the same counts give the same interval). The bounds are then adjusted as
        `balanced_accuracy(adjusted=True)` is (chance 0, perfect 1).

        Args:
            model: "student" or "teacher".
            confidence: in (0, 1).
            draws: Monte Carlo draws, at least 1,000.
            seed: the sampler's seed.

        Returns:
            (lower, upper) as floats, widened where needed to hold the point estimate
            (`balanced_accuracy(model, adjusted=True)`): near perfect recall the posterior's mass lies
            below the observed figure (an all-correct student's upper end would read under 1); (nan,
            nan) with fewer than two classes present.

        Raises:
            ValueError: an unknown model, a confidence outside (0, 1), or fewer than 1,000 draws.
        """
        correct = self._correct(model)
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        if draws < 1000:
            raise ValueError(f"draws must be at least 1000, got {draws}")
        present = self.support > 0
        if present.sum() < 2:
            return float("nan"), float("nan")
        hits, misses = correct[present], (self.support - correct)[present]
        recalls = np.random.default_rng(seed).beta(hits[:, None] + 0.5, misses[:, None] + 0.5, size=(hits.size, draws))
        tail = (1.0 - confidence) / 2.0
        lower, upper = np.quantile(recalls.mean(axis=0), [tail, 1.0 - tail])
        chance = 1.0 / present.sum()
        point = self.balanced_accuracy(model, adjusted=True)
        lower, upper = ((bound - chance) / (1.0 - chance) for bound in (lower, upper))
        return float(min(lower, point)), float(max(upper, point))

    def utility_ratio(self) -> float:
        """Student's adjusted balanced accuracy over the teachers'; nan when the teachers are at chance or below."""
        teacher = self.balanced_accuracy("teacher", adjusted=True)
        if not teacher > 0:
            return float("nan")
        return self.balanced_accuracy("student", adjusted=True) / teacher

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UtilityCounts) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # equal by value, and mutable arrays inside

    def _correct(self, model: str) -> np.ndarray:
        if model not in ("student", "teacher"):
            raise ValueError(f"model must be 'student' or 'teacher', got {model!r}")
        return self.student_correct if model == "student" else self.teacher_correct

    def __add__(self, other: UtilityCounts) -> UtilityCounts:
        if other.support.shape != self.support.shape:
            raise ValueError("cannot pool utility counts over different class lists")
        return UtilityCounts(self.support + other.support, self.student_correct + other.student_correct,
                             self.teacher_correct + other.teacher_correct,
                             self.comparator if self.comparator == other.comparator else "mixed")

    def to_dict(self) -> dict:
        return {"support": self.support.tolist(), "student_correct": self.student_correct.tolist(),
                "teacher_correct": self.teacher_correct.tolist(), "comparator": self.comparator}

    @classmethod
    def from_dict(cls, data: object, num_classes: int | None = None, max_classes: int = 1000) -> UtilityCounts:
        """Counts from their plain form (a remote party's reply): three lists of at most `max_classes` integers.

        Raises `ValueError` for anything else, or for a class count other than `num_classes` when given.
        """
        if not isinstance(data, dict):
            raise ValueError("utility counts must be an object")
        lists = [data.get(key) for key in ("support", "student_correct", "teacher_correct")]
        if not all(isinstance(v, list) and len(v) <= max_classes for v in lists):
            raise ValueError(f"utility counts must be lists of at most {max_classes} integers")
        if not all(type(x) is int and 0 <= x < 2**53 for v in lists for x in v):  # noqa: E721 (bool is not a count)
            raise ValueError("utility counts must be non-negative integers")
        comparator = data.get("comparator", "teacher")
        if not isinstance(comparator, str):
            raise ValueError("utility comparator must be a string")
        counts = cls(*(np.asarray(v, dtype=np.int64) for v in lists), comparator=comparator)
        if num_classes is not None and len(counts.support) != num_classes:
            raise ValueError(f"utility counts cover {len(counts.support)} classes, expected {num_classes}")
        return counts


def count_correct(labels: np.ndarray, student_predictions: np.ndarray, teacher_predictions: np.ndarray,
                  num_classes: int, comparator: str = "teacher") -> UtilityCounts:
    """Per-class counts of a site's holdout.

    Args:
        labels: int array (N,), the holdout's true classes in [0, num_classes).
        student_predictions: int array (N,), the candidate student's predicted classes.
        teacher_predictions: int array (N,), the comparator's predicted classes (the site teacher's).
        num_classes: K, the run's number of classes.
        comparator: what made `teacher_predictions`, one of `COMPARATORS`.

    Raises:
        ValueError: arrays of different lengths, or labels outside [0, K).
    """
    labels, student, teacher = (np.asarray(a) for a in (labels, student_predictions, teacher_predictions))
    if not (labels.shape == student.shape == teacher.shape) or labels.ndim != 1:
        raise ValueError("labels and predictions must be 1-D arrays of one length")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    return UtilityCounts(
        support=np.bincount(labels, minlength=num_classes),
        student_correct=np.bincount(labels[student == labels], minlength=num_classes),
        teacher_correct=np.bincount(labels[teacher == labels], minlength=num_classes),
        comparator=comparator,
    )


def pool(counts: list[UtilityCounts]) -> UtilityCounts | None:
    """Every site's counts summed per class; None for an empty list."""
    if not counts:
        return None
    total = counts[0]
    for more in counts[1:]:
        total = total + more
    return total
