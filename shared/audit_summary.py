"""The plain-language summary that opens the privacy officer's page: one sentence per site, and for
each failure what would make that site pass, drawn from the site's own figures.

`summarize(document)` is a pure function of the typed audit document (`audit_view.AuditDocument`);
`build_audit_document` stores its result in `audit.json` under "summary" and the page shows it.
Every remedy is computed from the measurements, with the rule that computes it named in the text:

- **more holdout**: where an AUC's point estimate meets the limit but its upper bound does not, the
  interval is too wide. Its half-width is scaled by the Hanley-McNeil standard error of the AUC
  (Hanley & McNeil, Radiology 1982) at the same AUC and members and a larger holdout, and the
  smallest holdout whose predicted upper bound meets the limit is named.
- **differential privacy at a named epsilon**, for a leak the point estimate shows: an
  (epsilon, delta)-DP training bounds every membership test by TPR <= e^epsilon FPR + delta and
  1 - FPR <= e^epsilon (1 - TPR) + delta (Kairouz et al. 2015). Integrating the region both allow
  bounds any attack's AUC by e^epsilon / (1 + e^epsilon) (delta neglected); the first alone bounds
  TPR at 1% FPR by e^epsilon x 1% + delta. The epsilon that meets the failed limit is named.
- **a smaller generator budget**: where the white-box attack on the generator or a distance test on
  its released samples separates members by its point estimate, the generator's training steps (as
  the site reported them) are named, since memorisation grows with training relative to data size.
"""

from __future__ import annotations

import math

from .audit_view import GENERATOR_TARGET, Attack, AuditDocument, Failure, Policy, Site, SiteSummary
from .gate_power import MAX_HOLDOUT_FACTOR, holdout_for_auc_upper

#: The attacks in plain words, for the summary's sentences.
PLAIN_NAMES = {
    "loss": "the loss attack on the student",
    "entropy": "the entropy attack on the student",
    "rmia": "the RMIA attack on the student",
    "lira": "the LiRA attack on the student",
    "dcr_pixel": "the pixel-distance test on the released images",
    "dcr_feature": "the feature-distance test on the released images",
    "generator_loss": "the white-box attack on the site's own generator",
}
__all__ = ["summarize", "dp_epsilon_for_auc", "dp_epsilon_for_tpr"]


def dp_epsilon_for_auc(max_auc: float) -> float:
    """The largest epsilon whose DP guarantee bounds every attack's AUC by `max_auc` (in (0.5, 1)): ln(a / (1 - a))."""
    if not 0.5 < max_auc < 1.0:
        raise ValueError(f"max_auc must be in (0.5, 1), got {max_auc}")
    return math.log(max_auc / (1 - max_auc))


def dp_epsilon_for_tpr(max_tpr: float, fpr: float = 0.01) -> float:
    """The largest epsilon whose DP guarantee bounds TPR at `fpr` by `max_tpr` (> `fpr`): ln(max_tpr / fpr)."""
    if not 0.0 < fpr < max_tpr <= 1.0:
        raise ValueError(f"need 0 < fpr < max_tpr <= 1, got fpr {fpr}, max_tpr {max_tpr}")
    return math.log(max_tpr / fpr)


def _plain(attack: Attack | None, name: str | None) -> str:
    key = attack.name if attack is not None else name
    return PLAIN_NAMES.get(key or "", f"the {key or 'unnamed'} attack")


def _targets(site: Site) -> str:
    parts = []
    if any(not a.is_distance and a.target != GENERATOR_TARGET for a in site.attacks):
        parts.append("the released student")
    if any(a.is_distance for a in site.attacks):
        parts.append("the released images")
    if any(a.target == GENERATOR_TARGET for a in site.attacks):
        parts.append("its own generator")
    return ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1] if parts else "nothing"


#: Counts above this, from a remote party, are shown as unknown and used in no estimate.
_MAX_COUNT = 10**9


def _count(value: float | int | None) -> str:
    return "?" if value is None or not 0 <= value <= _MAX_COUNT else f"{int(value):,}"


def _usable(value: float | int | None) -> int | None:
    return int(value) if value is not None and 1 <= value <= _MAX_COUNT else None


def _strongest(site: Site) -> Attack | None:
    scored = [a for a in site.attacks if a.auc is not None]
    return max(scored, key=lambda a: a.auc) if scored else None


def _sentence(site: Site, failures: list[Failure], policy: Policy) -> str:
    if not site.answered:
        why = f" ({site.error})" if site.error else ""
        return (f"{site.name} did not answer the audit{why}: nothing was measured there, so the release cannot "
                "pass on its behalf.")
    strongest = _strongest(site)
    head = (f"{site.name}: {len(site.attacks)} attacks on {_targets(site)}, with its {_count(site.num_members)} "
            f"training images against {_count(site.num_nonmembers)} held-out images")
    if strongest is None:
        return head + "; no attack reported a figure, so the release cannot pass on its behalf."
    ci = strongest.auc_ci
    interval = f" [{ci.low:.2f}, {ci.high:.2f}]" if ci is not None and ci.known else ""
    tpr = ("" if strongest.tpr_at_1pct_fpr is None
           else f", catching {strongest.tpr_at_1pct_fpr:.0%} of members at 1% false positives")
    result = f"; the strongest was {_plain(strongest, None)}, AUC {strongest.auc:.2f}{interval}{tpr}"
    attack_failures = [f for f in failures if f.attack not in (None, "", "utility")]
    leaks = [f for f in attack_failures if _is_measured_leak(f, site, policy)]
    if not failures:
        meaning = ("no attack told this site's patients from unseen ones beyond the policy's limits at this "
                   "sample size")
    elif leaks:
        who = ("it" if leaks[0].attack == strongest.name
               else _plain(_attack(site, leaks[0].attack), leaks[0].attack))
        meaning = f"{who} tells this site's training images from unseen ones: a measured leak"
    elif any(f.metric == "present" for f in attack_failures):
        meaning = "a required attack is missing, so the release cannot pass on its behalf"
    elif attack_failures and all(_interval_holds_chance(f, site) for f in attack_failures if f.metric == "auc_upper"):
        meaning = (f"that is compatible with no leak, but {_count(site.num_nonmembers)} held-out images are too few "
                   f"to show it at the policy's {policy.confidence or 0.95:.0%} confidence")
    elif attack_failures:
        meaning = ("a weak leak is likely (an interval lies wholly above 0.5), and too few held-out images to bound "
                   "it under the limit")
    else:
        meaning = "the attacks stayed within the policy's limits, but the site fails another rule (below)"
    return head + result + ": " + meaning + "."


def _interval_holds_chance(failure: Failure, site: Site) -> bool:
    attack = _attack(site, failure.attack)
    return attack is None or attack.auc_ci is None or attack.auc_ci.low is None or attack.auc_ci.low <= 0.5


def _attack(site: Site, name: str | None) -> Attack | None:
    return next((a for a in site.attacks if a.name == name), None)


def _is_measured_leak(failure: Failure, site: Site, policy: Policy) -> bool:
    """A failure that more holdout cannot fix: a point estimate over its limit, or a TPR lower bound over it."""
    attack = _attack(site, failure.attack)
    if failure.metric == "tpr_at_1pct_fpr_lower":
        return True
    if failure.metric != "auc_upper" or attack is None or attack.auc is None:
        return False
    limit = policy.auc_limit(attack)
    return limit is not None and attack.auc > limit


def _and(items: list[str]) -> str:
    return ", ".join(items[:-1]) + (" and " if len(items) > 1 else "") + items[-1] if items else ""


def _remedies(site: Site, failures: list[Failure], policy: Policy) -> tuple[str, ...]:
    """What would make the site pass, grouped: the cause first (a memorising generator, a measured
    leak at low FPR), then the one DP epsilon that bounds every failed rule, then more holdout."""
    out: list[str] = []
    memorising: list[str] = []  # the generator-side attacks whose point estimate is over the limit
    epsilons: list[tuple[float, str]] = []  # (epsilon, the bound it gives)
    holdout: list[tuple[int, str]] = []  # (held-out images needed, the attack)
    no_holdout: list[str] = []
    for failure in failures:
        attack = _attack(site, failure.attack)
        words = _plain(attack, failure.attack)
        if failure.metric == "answered":
            out.append("the site answers the audit; until it does the release cannot pass")
        elif failure.metric == "present":
            if failure.attack == "generator_loss":
                out.append("the site runs the white-box attack on its generator: the generator of the run must be "
                           "at the site when it audits (`fedkr audit --state-dir`)")
            elif failure.attack == "utility":
                out.append("the site sends its utility figures (a site of an older version does not)")
            else:
                out.append(f"the site runs {words}, which the policy requires")
        elif failure.metric == "examples":
            out.append(f"more holdout: {words} needs at least {_policy_min(failure)} images on each side")
        elif failure.metric == "confidence":
            out.append(f"the site audits at the policy's confidence ({policy.confidence})")
        elif failure.metric == "tpr_at_1pct_fpr_lower" and failure.threshold is not None:
            tpr = attack.tpr_at_1pct_fpr if attack is not None else None
            caught = f"{tpr:.0%} of members" if tpr is not None else "members"
            out.append(f"{words} catches {caught} at 1% false positives: a leak that more holdout will not hide")
            if 0.01 < float(failure.threshold) <= 1.0:
                epsilons.append((dp_epsilon_for_tpr(float(failure.threshold)),
                                 f"TPR at 1% FPR by {float(failure.threshold):.0%}"))
        elif failure.metric == "auc_upper" and attack is not None and attack.auc is not None:
            limit = policy.auc_limit(attack)
            if limit is None or attack.auc_ci is None or attack.auc_ci.high is None:
                continue
            auc = float(attack.auc)
            if auc > limit and 0.5 < limit < 1.0:  # DP bounds the AUC; it does not narrow an interval
                epsilons.append((dp_epsilon_for_auc(limit), f"every attack's AUC by {limit:g}"))
            if auc > limit:
                if attack.is_distance or attack.target == GENERATOR_TARGET:
                    memorising.append(f"{words} (AUC {auc:.3f})")
                continue
            members, nonmembers = _usable(attack.num_members), _usable(attack.num_nonmembers)
            needed = (holdout_for_auc_upper(auc, float(attack.auc_ci.high), limit, members, nonmembers)
                      if members and nonmembers else None)
            if needed is None:
                no_holdout.append(f"{words} (AUC {auc:.3f})")
            else:
                holdout.append((needed, f"{words} (AUC {auc:.3f})"))
    if memorising and site.generator_kind == "dp-merf":
        out.insert(0, f"a DP budget on the generator, or a smaller one: {_and(memorising)} separate"
                      f"{'s' if len(memorising) == 1 else ''} members by the point estimate, so the DP-MERF generator's "
                      f"release carries detail of its {_count(site.num_members)} training images (its decoder steps "
                      "change nothing: the release alone holds the members)")
    elif memorising:
        steps = site.generator_trained_steps
        budget = f" than its {steps:,}" if steps else ""
        out.insert(0, f"a smaller generator budget: {_and(memorising)} separate{'s' if len(memorising) == 1 else ''} "
                      f"members by the point estimate, so the generator memorises its {_count(site.num_members)} "
                      f"training images; train it for fewer steps{budget}")
    if epsilons:
        epsilon = min(e for e, _ in epsilons)
        bounds = _and(list(dict.fromkeys(b for _, b in epsilons)))
        already = ""
        if site.dp is not None and site.dp.epsilon is not None and site.dp.epsilon > epsilon:
            already = f"; it trained at \u03b5 = {site.dp.epsilon:.2f}, which does not guarantee that"
        if site.dp is not None and site.dp.generator_only:
            already = "; it trained only its generator with DP, which does not cover the teacher's soft labels (--dp-models teacher+generator)"
        out.append(f"differential privacy at a total \u03b5 \u2264 {epsilon:.2f} for the site (teacher and generator "
                   f"together), which bounds {bounds} whatever the attack{already}")
    if holdout:
        needed = max(n for n, _ in holdout)
        out.append(f"more holdout: about {needed:,} held-out images (now {_count(site.num_nonmembers)}) would bring the "
                   f"upper bound of {_and([w for _, w in holdout])} under the limit if the AUC stayed where it is "
                   "(the interval scaled by the Hanley-McNeil standard error)")
    if no_holdout:
        out.append(f"for {_and(no_holdout)} more holdout alone will not do: at {_count(site.num_members)} members even "
                   f"{MAX_HOLDOUT_FACTOR} times today's held-out images leave the upper bound over the limit")
    return tuple(dict.fromkeys(out))


def _policy_min(failure: Failure) -> str:
    return "?" if failure.threshold is None else f"{int(failure.threshold):,}"


def summarize(document: AuditDocument) -> tuple[SiteSummary, ...]:
    """One `SiteSummary` per site of `document`, in its order; failures not tied to a site (the
    pooled utility rule) are summarised under the site name "all sites"."""
    failures = document.decision.failures
    out = []
    for site in document.sites:
        own = [f for f in failures if f.site == site.name]
        out.append(SiteSummary(site.name, not own and site.answered, _sentence(site, own, document.policy),
                               _remedies(site, own, document.policy)))
    pooled = [f for f in failures if not f.site]
    if pooled:
        out.append(SiteSummary("all sites", False, " ".join(f.message or "" for f in pooled).strip(),
                               tuple(_pooled_remedy(f) for f in pooled)))
    return tuple(out)


def _pooled_remedy(failure: Failure) -> str:
    if failure.metric == "utility_ratio":
        return ("a student that learns more from the sites' synthetic data (more student epochs, more synthetic "
                "images per class, better site generators), audited again")
    if failure.metric == "adjusted_balanced_accuracy_upper":
        return ("a student that learns more from the sites' synthetic data (more student epochs, more synthetic "
                "images per class, better site generators), audited again; where the sites' own models are weak "
                "too, sites whose models learn their task first (under DP: a larger epsilon, or DP on the "
                "generator alone, `--dp-models generator`, which leaves the teachers, their soft labels and the "
                "student without a DP guarantee, covered by the audit's attacks only)")
    if failure.metric == "classes_present":
        return "holdouts that hold at least two classes, so that the student's balanced accuracy can be measured"
    if failure.metric == "teacher_adjusted_balanced_accuracy":
        return "sites whose own models learn their task: check the sites' data and labels"
    return "a complete audit from every site"
