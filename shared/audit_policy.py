"""The release policy: which audit results let a release out, and why one is refused.

Shared by the coordinator (the gate of a run) and by a site's standalone audit, so a site sees
the same verdict the coordinator would reach. Every rule is checked at every site; a site that did
not answer, answered for another site, or left out a required attack fails, because a release is
never passed on an audit that could not have caught anything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property

from .attack_report import AttackResult
from .reports import AuditReport
from .utility import UtilityCounts, pool

STUDENT_ATTACKS = ("loss", "entropy", "rmia")
DISTANCE_ATTACKS = ("dcr_pixel", "dcr_feature")
#: White-box attacks the site runs on its own generator (`fedkr.shared.generator_attack`).
GENERATOR_ATTACKS = ("generator_loss",)


@dataclass(frozen=True)
class AuditPolicy:
    """Thresholds of the gate.

    AUC rules apply to the upper end of the bootstrap interval: a site too small to show a low AUC
    with confidence cannot pass by luck. The TPR rule applies to the lower end of the
    Clopper-Pearson interval of TPR at 1% FPR: that rate's threshold is set by the top 1% of the
    holdout, a handful of images, so its point estimate alone exceeds 3% on a model that never saw
    the members in 2% to 7% of audits per attack at these site sizes (measured; docs/audit.md), and
    a rule on it would block releases on chance. The lower bound fails only when the data show an
    attacker catching more than the limit.

    The generator rule holds the site's white-box attack on its own generator (its denoising error
    on members against holdout, `fedkr.shared.generator_attack`) to `max_generator_auc_upper`, an
    AUC rule of its own as the distance tests have theirs (its TPR at 1% and 0.1% FPR is reported,
    not gated): the generator is never released, but every released image is its sample, so a
    generator that tells its members apart is where a leak starts (docs/audit.md, "The white-box
    attack on the site's generator").

    The utility rule (`fedkr.shared.utility`): pooled over every site's holdout, the student's
    chance-adjusted balanced accuracy must reach `min_utility_ratio` times the sites' teachers'
    (0 turns the rule off). A student that learned little leaks little, so the attacks alone would
    pass it; this rule refuses it. The default is set by measured runs (docs/audit.md).

    The floor: a ratio to the teachers says nothing when the teachers learned little themselves (DP
    teachers that collapsed passed the ratio with students at 0.11 to 0.16 test accuracy on ten
    classes), so the student's pooled adjusted balanced accuracy must also reach
    `min_adjusted_balanced_accuracy` by the upper end of its `confidence` interval
    (`UtilityCounts.adjusted_balanced_accuracy_interval`): refused only when the holdouts show the
    student below the floor, not when a small holdout leaves it uncertain (0 turns the floor off).
    """

    confidence: float = 0.95
    max_auc_upper: float = 0.60
    max_tpr_at_1pct_fpr: float = 0.03
    max_distance_auc_upper: float = 0.60
    max_generator_auc_upper: float = 0.60
    required_attacks: tuple[str, ...] = STUDENT_ATTACKS + DISTANCE_ATTACKS + GENERATOR_ATTACKS
    min_examples: int = 10
    min_utility_ratio: float = 0.5
    min_adjusted_balanced_accuracy: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_utility_ratio <= 1.0:
            raise ValueError(f"min_utility_ratio must be in [0, 1], got {self.min_utility_ratio}")
        if not 0.0 <= self.min_adjusted_balanced_accuracy <= 1.0:
            raise ValueError(f"min_adjusted_balanced_accuracy must be in [0, 1], got {self.min_adjusted_balanced_accuracy}")
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError(f"confidence must be in [0.5, 1), got {self.confidence}")
        for name in ("max_auc_upper", "max_distance_auc_upper", "max_generator_auc_upper", "max_tpr_at_1pct_fpr"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.min_examples < 2:
            raise ValueError("min_examples must be at least 2")
        if not self.required_attacks:
            raise ValueError("a policy must require at least one attack")

    def auc_limit(self, attack: str) -> float:
        """The AUC upper-bound limit that applies to the attack named `attack`."""
        return (self.max_distance_auc_upper if attack in DISTANCE_ATTACKS else self.max_generator_auc_upper
                if attack in GENERATOR_ATTACKS else self.max_auc_upper)

    def auc_limits(self) -> tuple[float, ...]:
        """The AUC upper-bound limit of each required attack, in `required_attacks` order."""
        return tuple(self.auc_limit(a) for a in self.required_attacks)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["required_attacks"] = list(self.required_attacks)
        return data


@dataclass(frozen=True)
class Failure:
    site: str
    attack: str
    metric: str
    value: float | None
    threshold: float | None
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AuditDecision:
    passed: bool
    policy: AuditPolicy
    failures: tuple[Failure, ...] = ()
    reports: dict[str, AuditReport | str] = field(default_factory=dict)  # site -> report, or why there is none
    #: Every answering site's utility counts summed per class; None when no site sent any.
    utility: UtilityCounts | None = None

    @property
    def reasons(self) -> list[str]:
        return [f.message for f in self.failures]

    @cached_property
    def utility_figures(self) -> dict | None:
        """`utility_figures` of the pooled counts at the policy's confidence, built once per decision
        (its interval takes 20,000 Monte Carlo draws); None without counts. Read, never modify."""
        return utility_figures(self.utility, self.policy.confidence)

    @cached_property
    def site_utility_figures(self) -> dict[str, dict | None]:
        """`utility_figures` of each answering site's own counts at the policy's confidence, by site,
        built once per decision; a site without a report is absent, one without counts maps to None."""
        return {sid: utility_figures(report.utility, self.policy.confidence)
                for sid, report in self.reports.items() if isinstance(report, AuditReport)}

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "policy": self.policy.to_dict(),
            "failures": [f.to_dict() for f in self.failures],
            "utility": self.utility_figures,
            "sites": {sid: (r.to_dict() if isinstance(r, AuditReport) else {"error": r}) for sid, r in self.reports.items()},
        }


def _check_result(site: str, result: AttackResult, policy: AuditPolicy) -> list[Failure]:
    name = result.attack
    if min(result.num_members, result.num_nonmembers) < policy.min_examples:
        return [Failure(site, name, "examples", float(min(result.num_members, result.num_nonmembers)), float(policy.min_examples),
                        f"{site}: {name} attack used {result.num_members} members and {result.num_nonmembers} "
                        f"non-members; at least {policy.min_examples} of each are needed")]
    if not result.is_finite:
        return [Failure(site, name, "auc", None, None, f"{site}: {name} attack returned a non-finite figure")]
    failures = []
    on_images = name in DISTANCE_ATTACKS
    on_generator = name in GENERATOR_ATTACKS
    # the attack's name, not the label a site put on it, decides which rules apply
    expected = "distilled_set" if on_images else "generator" if on_generator else "student"
    if result.target != expected:
        return [Failure(site, name, "target", None, None, f"{site}: {name} attack reported on {result.target!r}, "
                        f"expected {expected}")]
    limit = policy.auc_limit(name)
    upper = result.auc_ci[1]
    if not upper <= limit:
        failures.append(Failure(site, name, "auc_upper", upper, limit,
                                f"{site}: {name} attack AUC {result.auc:.3f}, upper {policy.confidence:.0%} bound "
                                f"{upper:.3f} > {limit:.3f}"))
    tpr_lower = result.tpr_at_1pct_fpr_ci[0]
    if not (on_images or on_generator) and not tpr_lower <= policy.max_tpr_at_1pct_fpr:
        failures.append(Failure(site, name, "tpr_at_1pct_fpr_lower", tpr_lower, policy.max_tpr_at_1pct_fpr,
                                f"{site}: {name} attack TPR at 1% FPR {result.tpr_at_1pct_fpr:.3f}, lower "
                                f"{policy.confidence:.0%} bound {tpr_lower:.3f} > {policy.max_tpr_at_1pct_fpr:.3f}"))
    return failures


def utility_figures(counts: UtilityCounts | None, confidence: float = 0.95) -> dict | None:
    """The utility check's headline figures for a report (accuracy, balanced accuracy, adjusted, the student's
    adjusted figure's `confidence` interval the floor reads, ratio); None without counts."""
    if counts is None:
        return None
    figures: dict = {"num_examples": counts.num_examples, "classes_present": counts.classes_present,
                     "comparator": counts.comparator}
    for model in ("student", "teacher"):
        figures[model] = {"accuracy": counts.accuracy(model), "balanced_accuracy": counts.balanced_accuracy(model),
                          "adjusted_balanced_accuracy": counts.balanced_accuracy(model, adjusted=True)}
    figures["student"]["adjusted_balanced_accuracy_interval"] = list(counts.adjusted_balanced_accuracy_interval("student",
                                                                                                            confidence))
    figures["utility_ratio"] = counts.utility_ratio()
    figures["counts"] = counts.to_dict()
    return figures


def check_utility(reports: dict[str, AuditReport], policy: AuditPolicy) -> tuple[UtilityCounts | None, list[Failure]]:
    """Pool the sites' utility counts and apply the utility rule and the floor (`AuditPolicy`'s docstring).

    Returns the pooled counts (None when no site sent any) and the failures: a site without counts,
    counts over different class lists, the floor, teachers at chance, the ratio. Raises nothing.
    """
    failures = [Failure(sid, "utility", "present", None, None, f"{sid}: no utility figures (the student's accuracy on the "
                        "site's holdout)") for sid, report in reports.items() if report.utility is None]
    counts = [r.utility for r in reports.values() if r.utility is not None]
    try:
        pooled = pool(counts)
    except ValueError:
        return None, failures + [Failure("", "utility", "classes", None, None,
                                         "sites sent utility counts over different numbers of classes")]
    if pooled is None:
        return pooled, failures
    teacher = pooled.balanced_accuracy("teacher", adjusted=True)
    student = pooled.balanced_accuracy("student", adjusted=True)
    where = f"on {pooled.num_examples} holdout images of {len(counts)} site{'s' if len(counts) != 1 else ''}"
    floor = policy.min_adjusted_balanced_accuracy
    comparator = "the sites' own models" if pooled.comparator == "teacher" else "the comparator models"
    if floor > 0.0 and pooled.classes_present < 2:
        failures.append(Failure("", "utility", "classes_present", float(pooled.classes_present), 2.0,
                                f"the sites' holdouts hold {pooled.classes_present} class{'es' if pooled.classes_present != 1 else ''}"
                                f" {where}: a student's balanced accuracy cannot be judged against the policy's floor"))
    elif floor > 0.0:
        upper = pooled.adjusted_balanced_accuracy_interval("student", policy.confidence)[1]
        if not upper >= floor:
            failures.append(Failure("", "utility", "adjusted_balanced_accuracy_upper", upper, floor,
                                    f"the student's adjusted balanced accuracy is {student:.3f} {where}, upper "
                                    f"{policy.confidence:.0%} bound {upper:.3f} < the policy's floor {floor:.2f} "
                                    f"(0: chance; {comparator} reach {teacher:.3f}): a release that teaches "
                                    "this little is not released"))
    if policy.min_utility_ratio == 0.0:
        return pooled, failures
    ratio = pooled.utility_ratio()
    if not teacher > 0:
        failures.append(Failure("", "utility", "teacher_adjusted_balanced_accuracy", teacher, 0.0,
                                f"the sites' own models are at chance {where} (adjusted balanced accuracy "
                                f"{teacher:.3f}): there is no knowledge to release"))
    elif not ratio >= policy.min_utility_ratio:
        failures.append(Failure("", "utility", "utility_ratio", ratio, policy.min_utility_ratio,
                                f"the student keeps {ratio:.2f} of what the sites' own models know {where} "
                                f"(adjusted balanced accuracy {student:.3f} vs {teacher:.3f}; the policy needs at "
                                f"least {policy.min_utility_ratio:.2f}): a release that teaches this little is not released"))
    return pooled, failures


def decide_release(replies: dict[str, AuditReport | Exception | str], policy: AuditPolicy) -> AuditDecision:
    """Pass only if every site answered, with every required attack, every result meets every rule,
    and the student keeps enough of what the sites' own models know (the utility rule)."""
    failures: list[Failure] = []
    reports: dict[str, AuditReport | str] = {}
    for sid, reply in sorted(replies.items()):
        if not isinstance(reply, AuditReport):
            reports[sid] = str(reply) or reply.__class__.__name__
            failures.append(Failure(sid, "", "answered", None, None, f"{sid}: did not return an audit ({reports[sid]})"))
            continue
        reports[sid] = reply
        if reply.site_id != sid:
            failures.append(Failure(sid, "", "site_id", None, None, f"{sid}: audit is labelled as from {reply.site_id}"))
        used = reply.settings.get("confidence")
        if used != policy.confidence:
            failures.append(Failure(sid, "", "confidence", None if not isinstance(used, (int, float)) else float(used),
                                    policy.confidence, f"{sid}: intervals at confidence {used!r}, the policy needs "
                                    f"{policy.confidence}"))
        present = {r.attack for r in reply.results}
        for attack in policy.required_attacks:
            if attack not in present:
                failures.append(Failure(sid, attack, "present", None, None, f"{sid}: no {attack} attack result"))
        for result in reply.results:
            failures.extend(_check_result(sid, result, policy))
    if not replies:
        failures.append(Failure("", "", "answered", None, None, "no site returned an audit"))
    pooled, utility_failures = check_utility({s: r for s, r in reports.items() if isinstance(r, AuditReport)}, policy)
    failures.extend(utility_failures)
    return AuditDecision(passed=not failures, policy=policy, failures=tuple(failures), reports=reports, utility=pooled)
