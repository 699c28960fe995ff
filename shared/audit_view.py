"""A typed, read-only view of the audit document (`audit.json`, schema "fedkr.audit/1").

`AuditDocument.parse` takes whatever was loaded from the JSON file and never raises: a part that is
missing or of the wrong type becomes None (or an empty tuple), which the page shows as "not
available". Numbers are int (at most 10^15 in size) or finite float (a numeric string is read as a float), texts are
non-empty str, curves and histograms are kept only when they are well formed. The schema is
documented in docs/audit.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .dp_models import DP_GENERATOR_ONLY

DISTANCE_TARGET = "distilled_set"
GENERATOR_TARGET = "generator"
DISTANCE_ATTACKS = ("dcr_pixel", "dcr_feature")

Number = int | float

__all__ = ["AuditDocument", "Attack", "Check", "Control", "Decision", "DP", "DPPart", "Failure", "Histogram",
           "Interval", "LeftOut", "ModelScore", "NearDuplicates", "NearSpace", "PerClass", "Policy", "PolicyEntry",
           "Release", "Roc", "Site", "SiteSummary", "Utility"]


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list | tuple:
    return value if isinstance(value, (list, tuple)) else []


def _real(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return out if math.isfinite(out) else None


def _number(value: Any) -> Number | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if abs(value) <= 10**15 else None  # beyond any count or figure a report holds
    return _real(value)


def _int(value: Any) -> int | None:
    number = _real(value)
    return int(number) if number is not None and number == int(number) else None


def _positive(value: Any) -> int | None:
    number = _int(value)
    return number if number is not None and 0 < number <= 10**12 else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _scalar(value: Any) -> bool | Number | str | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        number = _real(value)
        return value if number is None else number
    return _number(value)


def _array(value: Any) -> np.ndarray | None:
    try:
        return np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError, OverflowError):
        return None


@dataclass(frozen=True)
class Interval:
    """A confidence interval; either end is None when it is not a finite number."""

    low: float | None
    high: float | None

    @classmethod
    def parse(cls, value: Any) -> Interval | None:
        pair = _list(value)
        return cls(_real(pair[0]), _real(pair[1])) if len(pair) == 2 else None

    @property
    def known(self) -> bool:
        return self.low is not None and self.high is not None


@dataclass(frozen=True)
class Roc:
    """An ROC curve's finite points (at least two)."""

    fpr: tuple[float, ...]
    tpr: tuple[float, ...]

    @classmethod
    def parse(cls, value: Any) -> Roc | None:
        roc = _dict(value)
        fpr, tpr = _array(roc.get("fpr")), _array(roc.get("tpr"))
        if fpr is None or tpr is None or fpr.size < 2 or fpr.size != tpr.size:
            return None
        ok = np.isfinite(fpr) & np.isfinite(tpr)
        return cls(tuple(fpr[ok].tolist()), tuple(tpr[ok].tolist())) if ok.sum() >= 2 else None


@dataclass(frozen=True)
class Histogram:
    """Scores binned by the site: increasing edges, one count more edges than bins, all finite."""

    edges: tuple[float, ...]
    members: tuple[float, ...]
    nonmembers: tuple[float, ...]
    score: str | None

    @classmethod
    def parse(cls, value: Any) -> Histogram | None:
        hist = _dict(value)
        edges, members, nonmembers = (_array(hist.get(k)) for k in ("edges", "members", "nonmembers"))
        if edges is None or members is None or nonmembers is None:
            return None
        if members.size < 1 or edges.size != members.size + 1 or nonmembers.size != members.size:
            return None
        if not (np.isfinite(edges).all() and np.isfinite(members).all() and np.isfinite(nonmembers).all()):
            return None
        if np.any(np.diff(edges) <= 0):
            return None
        return cls(tuple(edges.tolist()), tuple(members.tolist()), tuple(nonmembers.tolist()), _text(hist.get("score")))


@dataclass(frozen=True)
class Control:
    """The same attack between two random halves of the holdout (no membership difference)."""

    auc: Number | None
    auc_ci: Interval | None
    num_a: int | None
    num_b: int | None

    @classmethod
    def parse(cls, value: Any) -> Control | None:
        if not isinstance(value, dict):
            return None
        return cls(_number(value.get("auc")), Interval.parse(value.get("auc_ci")), _int(value.get("num_a")),
                   _int(value.get("num_b")))


@dataclass(frozen=True)
class PerClass:
    cls: str
    members: Number | None
    nonmembers: Number | None
    auc: float | None

    @classmethod
    def parse(cls, value: dict) -> PerClass:
        return cls(str(value.get("class", "?")), _number(value.get("members")), _number(value.get("nonmembers")),
                   _real(value.get("auc")))


@dataclass(frozen=True)
class Attack:
    """One attack's results at one site."""

    name: str | None
    target: str | None
    description: str | None
    is_distance: bool  # a distance test on the distilled images, not an attack on the student
    num_members: Number | None
    num_nonmembers: Number | None
    auc: Number | None
    auc_ci: Interval | None
    tpr_at_1pct_fpr: Number | None
    tpr_at_1pct_fpr_ci: Interval | None
    tpr_at_01pct_fpr: Number | None
    tpr_at_01pct_fpr_ci: Interval | None
    epsilon_lower_bound: Number | None
    control: Control | None
    roc: Roc | None
    lowest_fpr: float | None  # 1 / non-members: the lowest FPR this holdout resolves
    tpr_at_lowest_fpr: Number | None
    tpr_at_lowest_fpr_ci: Interval | None
    histogram: Histogram | None
    per_class: tuple[PerClass, ...]

    @classmethod
    def parse(cls, value: dict) -> Attack:
        target = value.get("target")
        is_distance = target == DISTANCE_TARGET if target is not None else value.get("attack") in DISTANCE_ATTACKS
        return cls(
            name=_text(value.get("attack")), target=_text(target), description=_text(value.get("description")),
            is_distance=is_distance,
            num_members=_number(value.get("num_members")), num_nonmembers=_number(value.get("num_nonmembers")),
            auc=_number(value.get("auc")), auc_ci=Interval.parse(value.get("auc_ci")),
            tpr_at_1pct_fpr=_number(value.get("tpr_at_1pct_fpr")),
            tpr_at_1pct_fpr_ci=Interval.parse(value.get("tpr_at_1pct_fpr_ci")),
            tpr_at_01pct_fpr=_number(value.get("tpr_at_01pct_fpr")),
            tpr_at_01pct_fpr_ci=Interval.parse(value.get("tpr_at_01pct_fpr_ci")),
            epsilon_lower_bound=_number(value.get("epsilon_lower_bound")),
            control=Control.parse(value.get("control")),
            roc=Roc.parse(value.get("roc")),
            lowest_fpr=_real(value.get("lowest_fpr")), tpr_at_lowest_fpr=_number(value.get("tpr_at_lowest_fpr")),
            tpr_at_lowest_fpr_ci=Interval.parse(value.get("tpr_at_lowest_fpr_ci")), histogram=Histogram.parse(value.get("histogram")),
            per_class=tuple(PerClass.parse(p) for p in _list(value.get("per_class")) if isinstance(p, dict)),
        )


@dataclass(frozen=True)
class DPPart:
    name: str
    epsilon: Number | None
    delta: float | None
    noise_multiplier: float | None
    steps: Number | None
    #: The private optimizer and its peak learning rate; None in reports written before they were recorded.
    optimizer: str | None = None
    learning_rate: float | None = None


@dataclass(frozen=True)
class DP:
    """A site's differential-privacy accounting, as it reported it."""

    epsilon: Number | None
    delta: float | None
    max_grad_norm: float | None
    accountant: str | None
    parts: tuple[DPPart, ...]
    #: Which models trained with DP (`DPConfig.models`) and what the accounting covers, in the site's words;
    #: None in reports written before `DPConfig.models`.
    models: str | None = None
    composition: str | None = None
    #: "secret" (DP-SGD's noise and sampling from the operating system's randomness) or "repeatable"
    #: (seeded from the run's seed: no guarantee against anyone who knows it); None in older reports.
    randomness: str | None = None

    @property
    def repeatable(self) -> bool:
        """True when the site's DP noise was seeded from the run's seed (`DPConfig.repeatable`)."""
        return self.randomness == "repeatable"

    @property
    def generator_only(self) -> bool:
        """True when the site trained only its generator with DP (`DPConfig.generator_only`)."""
        return self.models == DP_GENERATOR_ONLY

    @classmethod
    def parse(cls, value: Any) -> DP | None:
        if not isinstance(value, dict):
            return None
        parts = tuple(DPPart(str(name), _number(_dict(p).get("epsilon")), _real(_dict(p).get("delta")),
                             _real(_dict(p).get("noise_multiplier")), _number(_dict(p).get("steps")),
                             _text(_dict(p).get("optimizer")), _real(_dict(p).get("learning_rate")))
                      for name, p in _dict(value.get("parts")).items())
        return cls(_number(value.get("epsilon")), _real(value.get("delta")), _real(value.get("max_grad_norm")),
                   _text(value.get("accountant")), parts, _text(value.get("models")),
                   _text(value.get("composition")), _text(value.get("randomness")))


@dataclass(frozen=True)
class NearSpace:
    count: Number | None
    threshold: float | None
    holdout_count: Number | None
    holdout_checked: Number | None

    @classmethod
    def parse(cls, value: Any) -> NearSpace | None:
        if not isinstance(value, dict):
            return None
        return cls(_number(value.get("count")), _real(value.get("threshold")), _number(value.get("holdout_count")),
                   _number(value.get("holdout_checked")))


@dataclass(frozen=True)
class NearDuplicates:
    """Released distilled images that come within a threshold of a site's training images."""

    members_checked: Number | None
    pixel: NearSpace | None
    feature: NearSpace | None

    @classmethod
    def parse(cls, value: Any) -> NearDuplicates | None:
        if not isinstance(value, dict):
            return None
        return cls(_number(value.get("members_checked")), NearSpace.parse(value.get("pixel")),
                   NearSpace.parse(value.get("feature")))

    @property
    def spaces(self) -> tuple[tuple[str, NearSpace | None], ...]:
        return (("pixel", self.pixel), ("feature", self.feature))


@dataclass(frozen=True)
class ModelScore:
    """Accuracy, balanced accuracy and its chance-adjusted form of one model on a holdout."""

    accuracy: float | None
    balanced_accuracy: float | None
    adjusted_balanced_accuracy: float | None
    #: The adjusted figure's interval, the one the policy's floor reads (the student's; None in older documents).
    adjusted_balanced_accuracy_interval: Interval | None = None

    @classmethod
    def parse(cls, value: Any) -> ModelScore:
        score = _dict(value)
        return cls(_real(score.get("accuracy")), _real(score.get("balanced_accuracy")),
                   _real(score.get("adjusted_balanced_accuracy")),
                   Interval.parse(score.get("adjusted_balanced_accuracy_interval")))


@dataclass(frozen=True)
class Utility:
    """The utility check of one site (or pooled over all sites): the student next to the comparator.

    `recall` holds, per class index, (holdout images, student recall, comparator recall)."""

    num_examples: Number | None
    comparator: str | None
    student: ModelScore
    teacher: ModelScore
    utility_ratio: float | None
    recall: tuple[tuple[Number | None, float | None, float | None], ...]

    @classmethod
    def parse(cls, value: Any) -> Utility | None:
        if not isinstance(value, dict):
            return None
        counts = _dict(value.get("counts"))
        support = [_int(v) for v in _list(counts.get("support"))]
        student = [_int(v) for v in _list(counts.get("student_correct"))]
        teacher = [_int(v) for v in _list(counts.get("teacher_correct"))]
        recall = tuple(
            (n, s / n if n and s is not None else None, t / n if n and t is not None else None)
            for n, s, t in zip(support, student + [None] * len(support), teacher + [None] * len(support))
        )
        return cls(_number(value.get("num_examples")), _text(value.get("comparator")),
                   ModelScore.parse(value.get("student")), ModelScore.parse(value.get("teacher")),
                   _real(value.get("utility_ratio")), recall)


@dataclass(frozen=True)
class Site:
    """One site's audit: its results, or why there are none."""

    name: str
    refused: bool  # the document says the site did not answer
    error: str | None
    num_members: Number | None
    num_nonmembers: Number | None
    dp: DP | None
    near_duplicates: NearDuplicates | None
    attacks: tuple[Attack, ...]
    utility: Utility | None = None
    generator_trained_steps: int | None = None  # the attacked generator's training steps, as the site reported them
    generator_kind: str | None = None  # the attacked generator's kind ("diffusion", "dp-merf"), None in older reports

    @classmethod
    def parse(cls, name: str, value: Any) -> Site:
        site = _dict(value)
        return cls(
            name=name, refused=site.get("answered") is False, error=_text(site.get("error")),
            num_members=_number(site.get("num_members")), num_nonmembers=_number(site.get("num_nonmembers")),
            dp=DP.parse(site.get("dp")), near_duplicates=NearDuplicates.parse(site.get("near_duplicates")),
            attacks=tuple(Attack.parse(a) for a in _list(site.get("attacks")) if isinstance(a, dict)),
            utility=Utility.parse(site.get("utility")),
            generator_trained_steps=_positive(_dict(site.get("settings")).get("generator_trained_steps")),
            generator_kind=_text(_dict(site.get("settings")).get("generator_kind")),
        )

    @property
    def answered(self) -> bool:
        return not self.refused and not (self.error and not self.attacks)

    @property
    def lowest_fpr(self) -> float | None:
        """The lowest false-positive rate this site's holdout resolves (1 / its non-members), None if unknown."""
        counts = [n for n in [a.num_nonmembers for a in self.attacks] or [self.num_nonmembers]
                  if n is not None and 1 <= n <= 1e12]
        return 1.0 / max(counts) if counts else None


@dataclass(frozen=True)
class Check:
    """One policy rule applied to one attack's row: ok is None when the figure is missing."""

    ok: bool | None
    text: str


@dataclass(frozen=True)
class PolicyEntry:
    key: str
    value: bool | Number | str | None
    items: tuple[str, ...] | None  # the value, when it is a list


@dataclass(frozen=True)
class Policy:
    """The release policy's thresholds; `entries` holds every key of the document's policy, in order."""

    confidence: float | None
    max_auc_upper: float | None
    max_tpr_at_1pct_fpr: float | None
    max_distance_auc_upper: float | None
    required_attacks: tuple[str, ...]
    entries: tuple[PolicyEntry, ...]
    min_utility_ratio: float | None = None
    max_generator_auc_upper: float | None = None
    min_adjusted_balanced_accuracy: float | None = None

    @classmethod
    def parse(cls, value: Any) -> Policy:
        policy = _dict(value)
        entries = tuple(
            PolicyEntry(str(key), None, tuple(str(v) for v in item)) if isinstance(item, (list, tuple))
            else PolicyEntry(str(key), _scalar(item), None)
            for key, item in policy.items())
        return cls(_real(policy.get("confidence")), _real(policy.get("max_auc_upper")),
                   _real(policy.get("max_tpr_at_1pct_fpr")), _real(policy.get("max_distance_auc_upper")),
                   tuple(str(r) for r in _list(policy.get("required_attacks"))), entries,
                   _real(policy.get("min_utility_ratio")), _real(policy.get("max_generator_auc_upper")),
                   _real(policy.get("min_adjusted_balanced_accuracy")))

    def auc_limit(self, attack: Attack) -> float | None:
        """The AUC upper-bound limit that applies to `attack` (distance test, generator or student), None if unknown."""
        if attack.is_distance:
            return self.max_distance_auc_upper
        return self.max_generator_auc_upper if attack.target == GENERATOR_TARGET else self.max_auc_upper

    def checks(self, attack: Attack) -> tuple[Check, ...]:
        """The rules that apply to `attack`, for display: the document's decision is authoritative."""
        auc_high = attack.auc_ci.high if attack.auc_ci else None
        auc_limits = [self.auc_limit(attack)]
        out = [Check(None if auc_high is None else auc_high <= limit, f"AUC upper \u2264 {limit:g}")
               for limit in auc_limits if limit is not None]
        limit = self.max_tpr_at_1pct_fpr
        if not attack.is_distance and attack.target != GENERATOR_TARGET and limit is not None:
            tpr_low = attack.tpr_at_1pct_fpr_ci.low if attack.tpr_at_1pct_fpr_ci else None
            out.append(Check(None if tpr_low is None else tpr_low <= limit, f"TPR@1% lower \u2264 {limit:g}"))
        return tuple(out)


@dataclass(frozen=True)
class Failure:
    site: str | None
    attack: str | None
    metric: str | None
    value: Number | None
    threshold: Number | None
    message: str | None

    @classmethod
    def parse(cls, value: dict) -> Failure:
        return cls(_text(value.get("site")), _text(value.get("attack")), _text(value.get("metric")),
                   _number(value.get("value")), _number(value.get("threshold")), _text(value.get("message")))


@dataclass(frozen=True)
class Decision:
    passed: bool | None  # None: the document holds no decision
    failures: tuple[Failure, ...]

    @classmethod
    def parse(cls, value: Any) -> Decision:
        decision = _dict(value)
        passed = decision.get("passed")
        return cls(passed if isinstance(passed, bool) else None,
                   tuple(Failure.parse(f) for f in _list(decision.get("failures")) if isinstance(f, dict)))


@dataclass(frozen=True)
class Release:
    id: str | None
    artefacts: tuple[tuple[str, str | None], ...]  # (file name, SHA-256)

    @classmethod
    def parse(cls, value: Any) -> Release:
        release = _dict(value)
        return cls(_text(release.get("id")),
                   tuple((str(name), _text(digest)) for name, digest in _dict(release.get("artefacts")).items()))


@dataclass(frozen=True)
class LeftOut:
    """A site that left the run before the audit: at which stage (fit or synthesis) and why."""

    site: str
    stage: str | None
    reason: str | None

    @classmethod
    def parse(cls, name: str, value: Any) -> LeftOut:
        entry = _dict(value)
        return cls(name, _text(entry.get("stage")), _text(entry.get("reason")) or _text(value))


@dataclass(frozen=True)
class SiteSummary:
    """One site's plain-language summary (`fedkr.shared.audit_summary`): `sentence` says what was
    attacked, the strongest result and what it means; `remedies`, for each failure, what would make
    the site pass (empty when it passed)."""

    site: str
    passed: bool
    sentence: str
    remedies: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"site": self.site, "passed": self.passed, "sentence": self.sentence, "remedies": list(self.remedies)}

    @classmethod
    def parse(cls, value: Any) -> SiteSummary | None:
        entry = _dict(value)
        site, sentence = _text(entry.get("site")), _text(entry.get("sentence"))
        if site is None or sentence is None:
            return None
        return cls(site, entry.get("passed") is True, sentence,
                   tuple(r for r in _list(entry.get("remedies")) if isinstance(r, str) and r))


@dataclass(frozen=True)
class AuditDocument:
    """The whole audit document, typed; build it with `AuditDocument.parse`."""

    schema: str | None
    fedkr_version: str | None
    created: str | None
    threat_model: str | None
    classes: tuple[str, ...]
    release: Release
    policy: Policy
    decision: Decision
    sites: tuple[Site, ...]
    utility: Utility | None = None  # pooled over every site
    #: Sites that left the run before the audit; None where the document does not say (a standalone audit).
    left_out: tuple[LeftOut, ...] | None = None
    #: The plain-language summary the document carries; None where it carries none (an older document).
    summary: tuple[SiteSummary, ...] | None = None

    @classmethod
    def parse(cls, value: Any) -> AuditDocument:
        """The typed view of `value`, the loaded `audit.json` (normally a dict; anything else reads as an
        empty document). Never raises."""
        audit = _dict(value)
        sites = audit.get("sites")
        if isinstance(sites, dict):
            named = [(str(name), site) for name, site in sites.items()]
        else:  # tolerate a list of {"site": name, ...}
            named = [(str(_dict(s).get("site", f"site #{i}")), s) for i, s in enumerate(_list(sites))]
        return cls(
            schema=_text(audit.get("schema")), fedkr_version=_text(audit.get("fedkr_version")),
            created=_text(audit.get("created")), threat_model=_text(audit.get("threat_model")),
            classes=tuple(str(c) for c in _list(audit.get("classes"))),
            release=Release.parse(audit.get("release")), policy=Policy.parse(audit.get("policy")),
            decision=Decision.parse(audit.get("decision")), sites=tuple(Site.parse(n, s) for n, s in named),
            utility=Utility.parse(audit.get("utility")),
            left_out=(tuple(LeftOut.parse(str(n), v) for n, v in audit["sites_left_out"].items())
                      if isinstance(audit.get("sites_left_out"), dict) else None),
            summary=(tuple(e for e in map(SiteSummary.parse, audit["summary"]) if e is not None)
                     if isinstance(audit.get("summary"), list) else None),
        )

    @property
    def unanswered(self) -> tuple[str, ...]:
        """The names of the sites that were not audited."""
        return tuple(site.name for site in self.sites if not site.answered)

    @property
    def any_dp(self) -> bool:
        return any(site.dp is not None for site in self.sites)
