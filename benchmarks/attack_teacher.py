"""Attack a site's own teacher (trained on real members) with the auditor's attacks on the student.

The teacher never leaves the site and is not released; attacking it shows what the attacks can
detect on a model that did train on the members, next to the release's figures.

    python benchmarks/attack_teacher.py --state-dir runs/sites/site-1 --run-id RUN \
        --data ../shared/data/medmnist/bloodmnist.npz --sites 4 --site-index 1 --partition dirichlet:0.5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedkr.client.auditor import AuditSettings, audit_model
from fedkr.client.site_data import SiteDataSpec, load_site_data
from fedkr.standalone_audit import load_teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--sites", type=int, default=1)
    parser.add_argument("--site-index", type=int, default=0)
    parser.add_argument("--partition", default="none")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference-models", type=int, default=2)
    parser.add_argument("--lira", action="store_true")
    parser.add_argument("--out", type=Path, help="write the site's audit entry here as JSON")
    args = parser.parse_args()

    teacher = load_teacher(args.state_dir, args.run_id)
    if teacher is None:
        raise SystemExit(f"no teacher for run {args.run_id} under {args.state_dir}")
    data = load_site_data(SiteDataSpec(args.data, args.site_index, args.sites, args.partition, args.seed))
    report = audit_model(f"site-{args.site_index} teacher", teacher, data.members, data.holdout,
                         AuditSettings(reference_models=args.reference_models, lira=args.lira, seed=args.seed),
                         target_name="model")
    print(f"{'attack':10} {'AUC [95% CI]':24} {'TPR@1%FPR [95% CI]':26} {'control AUC [95% CI]':26} eps_lb  members v holdout")
    for r in report.results:
        c = r.control or {}
        print(f"{r.attack:10} {r.auc:.3f} [{r.auc_ci[0]:.3f}, {r.auc_ci[1]:.3f}]    "
              f"{r.tpr_at_1pct_fpr:.3f} [{r.tpr_at_1pct_fpr_ci[0]:.3f}, {r.tpr_at_1pct_fpr_ci[1]:.3f}]      "
              f"{c.get('auc', float('nan')):.3f} [{c.get('auc_ci', [0, 0])[0]:.3f}, {c.get('auc_ci', [0, 0])[1]:.3f}]      "
              f"{r.epsilon_lower_bound:.2f}    {r.num_members} v {r.num_nonmembers}")
    if args.out:
        args.out.write_text(json.dumps(report.to_dict(), indent=2))


if __name__ == "__main__":
    main()
