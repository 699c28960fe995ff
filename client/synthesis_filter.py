"""The site's in-distribution filter on fresh samples, and what it measures (PRISM's two sides).

A site draws more samples than asked (`oversample`), then keeps, per requested class, samples that
pass two checks in its teacher's feature space:

- alignment: the teacher's top class is the requested one (the sample shows what it claims);
- precision: the sample falls inside the members' k-NN manifold (Kynkaenniemi et al.), so it is
  in-distribution rather than an artefact.

Accepted samples are kept in the order they were drawn, not ranked by closeness to members: a
ranking would favour the most typical images (less diversity) and the ones nearest to real
patients (more leakage). When too few pass, the rest is filled with the rejected samples the
teacher gave the highest probability for the requested class, so the shard always holds what was
asked. What leaves the site about this step is four numbers per shard: teacher agreement,
rejection rate, and the kept set's precision and recall against the members.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedkr.shared import knn
from fedkr.shared.synthesis_quality import DEFAULT_K, precision_recall


@dataclass(frozen=True)
class FilterOutcome:
    keep: np.ndarray  # indices into the drawn samples, in request order (class by class)
    rejection_rate: float  # share of drawn samples that failed a check
    teacher_agreement: float  # share of kept samples whose teacher top class is the requested one
    precision: float  # of everything drawn: the generator's, not the filter's
    recall: float  # of the kept set, against the members of the requested classes

    def summary(self) -> dict[str, float]:
        """Finite figures only (a figure that could not be measured is left out): the summary is strict JSON."""
        figures = {"teacher_agreement": self.teacher_agreement, "rejection_rate": self.rejection_rate,
                   "precision": self.precision, "recall": self.recall}
        return {k: round(v, 4) for k, v in figures.items() if np.isfinite(v)}


class MemberManifold:
    """The members' k-NN balls in the teacher's feature space, computed once per fitted teacher.

    `features` float64 (N, D); `radii` float64 (N,): each member's Euclidean distance to its k-th
    nearest other member; `labels` (N,) or None.
    """

    def __init__(self, member_features: np.ndarray, labels: np.ndarray | None = None, k: int = DEFAULT_K) -> None:
        self.features = np.asarray(member_features, dtype=np.float64)
        self.labels = None if labels is None else np.asarray(labels)
        self.k = k
        self.radii = knn.kth_neighbour_distances(self.features, k)

    @classmethod
    def of(cls, member_features: np.ndarray, labels: np.ndarray, k: int = DEFAULT_K) -> MemberManifold | None:
        """None when there are too few members to draw a manifold (the precision check is then off)."""
        return cls(member_features, labels, k) if member_features.shape[0] > k else None

    def contains(self, features: np.ndarray, batch: int = 1024) -> np.ndarray:
        """bool (M,): whether each row of `features` (M, D) lies inside some member's ball (boundary included)."""
        return knn.inside_any_ball(features, self.features, self.radii, batch)


def filter_samples(
    requested: np.ndarray,
    probs: np.ndarray,
    features: np.ndarray,
    per_class: tuple[int, ...],
    manifold: MemberManifold | None,
    seed: int,
) -> FilterOutcome:
    """Choose `per_class[c]` of the drawn samples of each class c (see the module's docstring).

    `requested` is each drawn sample's class, `probs` the teacher's probabilities at temperature 1,
    `features` the teacher's embedding; `manifold` None turns the precision check off.
    """
    agree = probs.argmax(1) == requested
    in_dist = manifold.contains(features) if manifold is not None else np.ones(requested.shape[0], dtype=bool)
    accepted = agree & in_dist
    keep: list[np.ndarray] = []
    for cls, wanted in enumerate(per_class):
        if wanted == 0:
            continue
        drawn = np.flatnonzero(requested == cls)
        if drawn.size < wanted:
            raise ValueError(f"class {cls}: {drawn.size} samples drawn for {wanted} wanted")
        good = drawn[accepted[drawn]][:wanted]
        if good.size < wanted:
            rest = drawn[~accepted[drawn]]
            rest = rest[np.argsort(-probs[rest, cls], kind="stable")][: wanted - good.size]
            good = np.sort(np.concatenate([good, rest]))
        keep.append(good)
    index = np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)
    precision = recall = float("nan")
    if manifold is not None:
        # Precision of all drawn samples: measured on the kept set it would only restate the filter.
        precision = float(in_dist.mean()) if in_dist.size else float("nan")
        # Recall against the members of the classes asked for, in a sample as large as the kept set
        # (Kynkaenniemi et al. compare equal-sized sets, so that recall is not bounded by set size).
        asked = np.isin(manifold.labels, np.flatnonzero(np.asarray(per_class) > 0)) if manifold.labels is not None else None
        members = manifold.features if asked is None else manifold.features[asked]
        rng = np.random.default_rng(seed)
        if members.shape[0] > index.size:
            members = members[rng.choice(members.shape[0], size=index.size, replace=False)]
        if members.shape[0] > manifold.k and index.size > manifold.k:
            recall = precision_recall(members, features[index], k=manifold.k).recall
    return FilterOutcome(
        keep=index,
        rejection_rate=float(1.0 - accepted.mean()) if accepted.size else 0.0,
        teacher_agreement=float(agree[index].mean()) if index.size else float("nan"),
        precision=precision,
        recall=recall,
    )
