"""One attack's result as a site reports it: metrics, intervals and aggregate curves, never per-example scores.

The report leaves the hospital, so it carries only what a privacy officer needs to judge the
attack: counts, AUC and TPR at low FPR with intervals, the epsilon lower bound, the control run,
a ROC on a fixed FPR grid, binned score histograms and a per-class breakdown. `from_dict` reads
a report from a remote party, so it checks types and caps every list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .mia import check_scores, roc_auc
from .mia_stats import (
    bootstrap_auc_ci,
    clopper_pearson,
    control_run,
    empirical_epsilon,
    operating_point_at_fpr,
    roc_on_log_grid,
    score_histogram,
)

#: Where an attack looks: the released student's outputs, the released (distilled) images, a model
#: attacked on its own (a bench method's), the site's generator, white-box (`generator_attack`), or
#: the synthetic shards a site sent the coordinator (the bench's coordinator view).
TARGETS = ("student", "distilled_set", "model", "generator", "shards")
#: A class needs this many examples on each side before its own AUC is shown.
MIN_PER_CLASS = 5
_MAX_LIST = 1000


def _number(value: object, lo: float = -1e12, hi: float = 1e12) -> float:
    """A float within [lo, hi]; NaN is kept (the gate fails it), anything else out of range is refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {type(value).__name__}")
    if isinstance(value, int) and abs(value) > 1e15:
        raise ValueError("number out of range")
    number = float(value)
    if math.isnan(number):
        return number
    if not lo <= number <= hi:
        raise ValueError(f"number {number!r} outside [{lo}, {hi}]")
    return number


def _count(value: object) -> int:
    number = _number(value, 0, 1e9)
    if math.isnan(number) or number != int(number):
        raise ValueError("expected a whole count")
    return int(number)


def _rate(value: object) -> float:
    return _number(value, 0.0, 1.0)


def _interval(value: object) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError("an interval is a list of two numbers")
    lo, hi = _rate(value[0]), _rate(value[1])
    if lo > hi:
        raise ValueError("an interval's lower end is above its upper end")
    return lo, hi


def _numbers(values: object, convert=_number) -> list:  # type: ignore[no-untyped-def]
    if not isinstance(values, list) or len(values) > _MAX_LIST:
        raise ValueError(f"expected a list of at most {_MAX_LIST} numbers")
    return [convert(v) for v in values]


def _text(value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value[:limit]


def _mapping(value: object) -> dict:
    if not isinstance(value, dict):
        raise ValueError("expected an object")
    return value


@dataclass(frozen=True)
class AttackResult:
    attack: str
    target: str
    num_members: int
    num_nonmembers: int
    auc: float
    auc_ci: tuple[float, float]
    tpr_at_1pct_fpr: float
    tpr_at_1pct_fpr_ci: tuple[float, float]
    tpr_at_01pct_fpr: float
    tpr_at_01pct_fpr_ci: tuple[float, float]
    epsilon_lower_bound: float
    #: The lowest false-positive rate the holdout resolves, 1 / `num_nonmembers` (one held-out image
    #: above the threshold), and the TPR there: below it a rate is TPR at zero false positives.
    lowest_fpr: float
    tpr_at_lowest_fpr: float
    tpr_at_lowest_fpr_ci: tuple[float, float]
    description: str = ""
    control: dict | None = None
    roc: dict = field(default_factory=dict)
    histogram: dict = field(default_factory=dict)
    per_class: tuple[dict, ...] = ()

    def to_dict(self) -> dict:
        return {
            "attack": self.attack, "target": self.target, "description": self.description,
            "num_members": self.num_members, "num_nonmembers": self.num_nonmembers,
            "auc": self.auc, "auc_ci": list(self.auc_ci),
            "tpr_at_1pct_fpr": self.tpr_at_1pct_fpr, "tpr_at_1pct_fpr_ci": list(self.tpr_at_1pct_fpr_ci),
            "tpr_at_01pct_fpr": self.tpr_at_01pct_fpr, "tpr_at_01pct_fpr_ci": list(self.tpr_at_01pct_fpr_ci),
            "epsilon_lower_bound": self.epsilon_lower_bound,
            "lowest_fpr": self.lowest_fpr, "tpr_at_lowest_fpr": self.tpr_at_lowest_fpr,
            "tpr_at_lowest_fpr_ci": list(self.tpr_at_lowest_fpr_ci),
            "control": self.control, "roc": self.roc, "histogram": self.histogram, "per_class": list(self.per_class),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "AttackResult":
        """Read a remote party's result: types, ranges and sizes are checked, anything else is a ValueError."""
        data = _mapping(data)
        target = _text(data["target"], 32)
        if target not in TARGETS:
            raise ValueError(f"unknown attack target {target!r}")
        control = data.get("control")
        if control is not None:
            control = _mapping(control)
            control = {"auc": _rate(control["auc"]), "auc_ci": list(_interval(control["auc_ci"])),
                       "tpr_at_1pct_fpr": _rate(control["tpr_at_1pct_fpr"]),
                       "num_a": _count(control["num_a"]), "num_b": _count(control["num_b"])}
        roc = _mapping(data.get("roc") or {})
        roc = {"fpr": _numbers(roc.get("fpr", []), _rate), "tpr": _numbers(roc.get("tpr", []), _rate)}
        hist = _mapping(data.get("histogram") or {})
        hist = {"edges": _numbers(hist.get("edges", [])), "members": _numbers(hist.get("members", []), _count),
                "nonmembers": _numbers(hist.get("nonmembers", []), _count), "score": _text(hist.get("score", ""), 200)}
        per_class = data.get("per_class") or []
        if not isinstance(per_class, list) or len(per_class) > _MAX_LIST:
            raise ValueError("per-class results must be a list of at most 1000")
        per_class = tuple(
            {"class": _text(_mapping(c)["class"], 200), "members": _count(c["members"]), "nonmembers": _count(c["nonmembers"]),
             "auc": None if c.get("auc") is None else _rate(c["auc"])}
            for c in per_class
        )
        num_nonmembers = _count(data["num_nonmembers"])
        return cls(
            attack=_text(data["attack"], 64), target=target, description=_text(data.get("description", ""), 500),
            num_members=_count(data["num_members"]), num_nonmembers=num_nonmembers,
            auc=_rate(data["auc"]), auc_ci=_interval(data["auc_ci"]),
            tpr_at_1pct_fpr=_rate(data["tpr_at_1pct_fpr"]), tpr_at_1pct_fpr_ci=_interval(data["tpr_at_1pct_fpr_ci"]),
            tpr_at_01pct_fpr=_rate(data["tpr_at_01pct_fpr"]), tpr_at_01pct_fpr_ci=_interval(data["tpr_at_01pct_fpr_ci"]),
            epsilon_lower_bound=_number(data["epsilon_lower_bound"], 0.0, 1e6),
            # the floor follows from the counts, whatever a party says; a report of an older version has no TPR there
            lowest_fpr=1.0 / num_nonmembers if num_nonmembers else math.nan,
            tpr_at_lowest_fpr=_rate(data["tpr_at_lowest_fpr"]) if "tpr_at_lowest_fpr" in data else math.nan,
            tpr_at_lowest_fpr_ci=(_interval(data["tpr_at_lowest_fpr_ci"]) if "tpr_at_lowest_fpr_ci" in data
                                  else (math.nan, math.nan)),
            control=control, roc=roc, histogram=hist, per_class=per_class,
        )

    @property
    def is_finite(self) -> bool:
        return all(math.isfinite(v) for v in (self.auc, *self.auc_ci, self.tpr_at_1pct_fpr))


def lowest_resolvable_fpr(num_nonmembers: int) -> float:
    """The lowest nonzero false-positive rate a holdout of `num_nonmembers` images can show: 1 / that count.

    A threshold's FPR is k / `num_nonmembers` for a whole k, so below this rate every "TPR at FPR"
    is the TPR at zero false positives (TPR at 0.1% FPR needs at least 1,000 held-out images to mean
    what it says). Raises ValueError for a count below 1.
    """
    if num_nonmembers < 1:
        raise ValueError(f"a holdout needs at least one image, got {num_nonmembers}")
    return 1.0 / num_nonmembers


def _tpr_with_interval(members: np.ndarray, nonmembers: np.ndarray, max_fpr: float, confidence: float) -> tuple[float, tuple[float, float]]:
    point = operating_point_at_fpr(members, nonmembers, max_fpr)
    return point.tpr, clopper_pearson(point.true_positives, point.positives, confidence)


def _per_class(
    members: np.ndarray, nonmembers: np.ndarray, member_labels: np.ndarray, nonmember_labels: np.ndarray,
    class_names: tuple[str, ...],
) -> tuple[dict, ...]:
    rows = []
    for cls, name in enumerate(class_names):
        m, n = members[member_labels == cls], nonmembers[nonmember_labels == cls]
        enough = m.size >= MIN_PER_CLASS and n.size >= MIN_PER_CLASS
        rows.append({"class": name, "members": int(m.size), "nonmembers": int(n.size),
                     "auc": roc_auc(m, n) if enough else None})
    return tuple(rows)


def measure_attack(
    attack: str,
    target: str,
    member_scores: np.ndarray,
    nonmember_scores: np.ndarray,
    member_labels: np.ndarray,
    nonmember_labels: np.ndarray,
    class_names: tuple[str, ...],
    description: str = "",
    score_name: str = "",
    confidence: float = 0.95,
    delta: float = 1e-5,
    seed: int = 0,
) -> AttackResult:
    """Every figure the report shows for one attack, from its per-example scores (which stay here)."""
    if target not in TARGETS:
        raise ValueError(f"unknown attack target {target!r}")
    members, nonmembers = check_scores(member_scores, nonmember_scores)
    tpr1, tpr1_ci = _tpr_with_interval(members, nonmembers, 0.01, confidence)
    tpr01, tpr01_ci = _tpr_with_interval(members, nonmembers, 0.001, confidence)
    lowest_fpr = lowest_resolvable_fpr(nonmembers.size)
    tpr_lowest, tpr_lowest_ci = _tpr_with_interval(members, nonmembers, lowest_fpr, confidence)
    eps, _ = empirical_epsilon(members, nonmembers, delta=delta, confidence=confidence, seed=seed)
    control = control_run(nonmembers, confidence, seed=seed)
    return AttackResult(
        attack=attack,
        target=target,
        description=description,
        num_members=int(members.size),
        num_nonmembers=int(nonmembers.size),
        auc=roc_auc(members, nonmembers),
        auc_ci=bootstrap_auc_ci(members, nonmembers, confidence, seed=seed),
        tpr_at_1pct_fpr=tpr1,
        tpr_at_1pct_fpr_ci=tpr1_ci,
        tpr_at_01pct_fpr=tpr01,
        tpr_at_01pct_fpr_ci=tpr01_ci,
        epsilon_lower_bound=eps,
        lowest_fpr=lowest_fpr,
        tpr_at_lowest_fpr=tpr_lowest,
        tpr_at_lowest_fpr_ci=tpr_lowest_ci,
        control=None if control is None else control.to_dict(),
        roc=roc_on_log_grid(members, nonmembers),
        histogram={**score_histogram(members, nonmembers), "score": score_name},
        per_class=_per_class(members, nonmembers, np.asarray(member_labels), np.asarray(nonmember_labels), class_names),
    )
