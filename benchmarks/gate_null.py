"""How often the release gate refuses a release that leaks nothing, and catches one that leaks, by site size.

Simulates whole audits: every site runs every attack the default policy requires, and each attack's
scores are drawn for members and holdout from the same distribution (null: nothing leaks) or, for
the white-box generator attack, with members shifted to a given AUC (a generator that memorises,
as the demo's did at 0.71-0.74). Each attack's AUC interval (bootstrap) and TPR at 1% FPR
(Clopper-Pearson) are computed as the auditor computes them, and `decide_release` applies the
default policy to the whole audit, utility rule included (a useful student, so only the attacks
decide). Attacks are drawn independently: real attacks on one site are correlated (loss and
entropy most), so the family-wise figures here are an upper bound on the null refusal rate.

    python benchmarks/gate_null.py [--trials 200] [--sites 3] [--members 100,400,1000] [--leak-auc 0.74]
           [--holdout-fraction 0.2] [--out benchmarks/results/gate_null-COMMIT.json]

Site sizes are members; the holdout is the site's `--holdout-fraction` (by default the run's default,
0.2 of the site: a quarter of the members; the demo's 0.5: as many as the members).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm

from fedkr.shared.attack_report import AttackResult, lowest_resolvable_fpr
from fedkr.shared.audit_policy import AuditPolicy, decide_release
from fedkr.shared.config import RunConfig
from fedkr.shared.mia import roc_auc
from fedkr.shared.mia_stats import bootstrap_auc_ci, clopper_pearson, operating_point_at_fpr
from fedkr.shared.reports import AuditReport
from fedkr.shared.utility import UtilityCounts

POLICY = AuditPolicy()
USEFUL = UtilityCounts(np.array([50, 50]), np.array([45, 44]), np.array([48, 47]))


def _result(attack: str, members: np.ndarray, holdout: np.ndarray, seed: int) -> AttackResult:
    target = ("distilled_set" if attack.startswith("dcr") else "generator" if attack == "generator_loss"
              else "student")
    point = operating_point_at_fpr(members, holdout, 0.01)
    tpr_ci = clopper_pearson(point.true_positives, point.positives, POLICY.confidence)
    return AttackResult(attack, target, members.size, holdout.size, roc_auc(members, holdout),
                        bootstrap_auc_ci(members, holdout, POLICY.confidence, seed=seed), point.tpr, tpr_ci,
                        0.0, (0.0, 1.0), 0.0, lowest_resolvable_fpr(holdout.size), 0.0, (0.0, 1.0))


def holdout_size(num_members: int, holdout_fraction: float) -> int:
    """Holdout images of a site with `num_members` members when `holdout_fraction` of the site is held out.

    Rounded to the nearest whole image; a real site's stratified split rounds per class, so its
    holdout may differ from this by an image or two.
    """
    return max(1, round(num_members * holdout_fraction / (1.0 - holdout_fraction)))


def one_audit(num_members: int, holdout: int, sites: int, shift: float, rng: np.random.Generator) -> tuple[bool, set[str]]:
    """One simulated audit: whether the policy passes it, and the attacks that failed anywhere."""
    replies = {}
    for s in range(sites):
        results = []
        for attack in POLICY.required_attacks:
            offset = shift if attack == "generator_loss" else 0.0
            results.append(_result(attack, rng.normal(offset, 1.0, num_members), rng.normal(0.0, 1.0, holdout),
                                   int(rng.integers(1 << 30))))
        replies[f"site-{s}"] = AuditReport(f"site-{s}", tuple(results), num_members, holdout,
                                           settings={"confidence": POLICY.confidence}, utility=USEFUL)
    decision = decide_release(replies, POLICY)
    return decision.passed, {f.attack for f in decision.failures}


def rate(trials: int, num_members: int, holdout: int, sites: int, shift: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    outcomes = [one_audit(num_members, holdout, sites, shift, rng) for _ in range(trials)]
    refused = sum(not passed for passed, _ in outcomes)
    low, high = clopper_pearson(refused, trials, 0.95)
    by_attack = {a: sum(a in failed for _, failed in outcomes) / trials for a in POLICY.required_attacks}
    return {"members": num_members, "holdout": holdout, "sites": sites, "trials": trials,
            "refused": refused / trials, "refused_ci": [low, high], "failed_by_attack": by_attack}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--members", default="100,400,1000")
    parser.add_argument("--leak-auc", type=float, default=0.74, help="the memorising generator attack's AUC")
    parser.add_argument("--holdout-fraction", type=float, default=RunConfig().holdout_fraction,
                        help="share of each site held out for the audit (default: the run's default)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not 0.0 < args.holdout_fraction < 1.0:
        parser.error(f"--holdout-fraction must be in (0, 1), got {args.holdout_fraction}")
    shift = math.sqrt(2) * float(norm.ppf(args.leak_auc))  # members ~ N(shift, 1) against N(0, 1): AUC = Phi(shift / sqrt 2)
    started = time.perf_counter()
    rows = []
    for members in (int(m) for m in args.members.split(",")):
        holdout = holdout_size(members, args.holdout_fraction)
        null = rate(args.trials, members, holdout, args.sites, 0.0, seed=members)
        leak = rate(args.trials, members, holdout, args.sites, shift, seed=members + 1)
        rows.append({"null": null, "leak": leak})
        print(f"{members} members v {null['holdout']} holdout x {args.sites} sites: null refused "
              f"{null['refused']:.1%} [{null['refused_ci'][0]:.1%}, {null['refused_ci'][1]:.1%}], leak (generator AUC "
              f"{args.leak_auc}) caught {leak['refused']:.1%} [{leak['refused_ci'][0]:.1%}, {leak['refused_ci'][1]:.1%}]; "
              f"null failures by attack: " + ", ".join(f"{a} {r:.0%}" for a, r in null["failed_by_attack"].items()),
              flush=True)
    result = {"policy": POLICY.to_dict(), "leak_auc": args.leak_auc, "holdout_fraction": args.holdout_fraction, "rows": rows,
              "seconds": round(time.perf_counter() - started, 1)}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
        print("wrote", args.out)


if __name__ == "__main__":
    main()
