"""The utility rules, decided again on recorded audits: what the ratio and the floor say of each.

Reads each `audit.json` a run wrote (its sites' per-class utility counts), applies today's default
policy's utility rules (`fedkr.shared.audit_policy.check_utility`), and prints one JSON row per audit:
the pooled student's and teachers' chance-adjusted balanced accuracy, the student's 95% interval
(`UtilityCounts.adjusted_balanced_accuracy_interval`), and which rules refuse it. No model is run.

    python benchmarks/utility_redecide.py RUN_DIR/release/audit.json [...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedkr.shared.audit_policy import AuditPolicy, check_utility
from fedkr.shared.reports import AuditReport
from fedkr.shared.utility import UtilityCounts


def redecide(audit: dict, policy: AuditPolicy) -> dict:
    """One row: the pooled figures of `audit` (an audit.json document) and the failures of its utility rules."""
    reports = {sid: AuditReport(sid, (), utility=UtilityCounts.from_dict(site["utility"]["counts"])
                                if site.get("utility") else None)
               for sid, site in audit["sites"].items() if site.get("answered", True)}
    pooled, failures = check_utility(reports, policy)
    if pooled is None:
        return {"sites": len(reports), "refused_by": [f.metric for f in failures], "released_then": audit["decision"]["passed"]}
    lower, upper = pooled.adjusted_balanced_accuracy_interval("student", policy.confidence)
    return {"num_examples": pooled.num_examples, "sites": len(reports),
            "student_adjusted": round(pooled.balanced_accuracy("student", adjusted=True), 4),
            "student_adjusted_interval": [round(lower, 4), round(upper, 4)],
            "teacher_adjusted": round(pooled.balanced_accuracy("teacher", adjusted=True), 4),
            "utility_ratio": round(pooled.utility_ratio(), 4), "refused_by": [f.metric for f in failures],
            "released_then": audit["decision"]["passed"], "counts": pooled.to_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audits", type=Path, nargs="+", help="audit.json files")
    args = parser.parse_args()
    policy = AuditPolicy()
    for path in args.audits:
        print(json.dumps({"audit": str(path), **redecide(json.loads(path.read_text()), policy)}), flush=True)


if __name__ == "__main__":
    main()
