"""The student's accuracy and the audit against each site's privacy budget: finished runs at several epsilons.

    python benchmarks/dp_curve.py RUN_DIR [RUN_DIR ...] --out benchmarks/results/dp_curve-COMMIT-DATASET

Each RUN_DIR is a finished `fedkr simulate` run (released or refused, `run_folder.py`), for example

    fedkr simulate --data bloodmnist.npz --profile full --dp-epsilon 8 --out runs-eps8

and the same without `--dp-epsilon` for the run without DP. The runs must differ only in their DP
settings (`dp-epsilon`, `dp-delta`), their generator kind (`generator-kind`: one curve per kind) and
their folders; anything else is refused, since the curve would then mix two experiments. Writes
OUT.json (one row per run, sorted by generator kind and epsilon, each kind's run without DP last),
OUT.md (the table) and OUT.png (the student's test accuracy against epsilon, one line per generator
kind, each run without DP as a dashed line; the worst attack's AUC upper bound beside it).

Per row: the budget each site was given, the models it covered, and the largest epsilon any
site's accountant spent (RDP; teacher + generator by basic composition, or the generator alone
with `--dp-models generator`); the student's test accuracy on the dataset's test split; the
release decision and its failures; each site's teacher on its own holdout (accuracy from the
site's fit report, balanced accuracy from the audit's utility check: a teacher that predicts one
class has balanced accuracy 1 / classes present); the attack, over every site, whose AUC has the
highest 95% upper bound (its AUC and interval), and the highest TPR at 1% FPR of any attack; the
fit and total stage times in seconds.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict
from pathlib import Path

from run_folder import run_folder, run_metrics

from fedkr.shared.config import RunConfig

#: Settings that may differ between the runs of one curve: the DP budget, where the run was written,
#: and how the machine ran it (none of these changes what is trained).
VARYING = {"dp_epsilon", "dp_delta", "generator_kind", "run_id", "out", "device", "site_threads", "reply_timeout", "wait_for_sites",
           "coordinator_dir"}


def audit_document(run_dir: Path) -> dict:
    """The run's audit.json: `release/audit.json` when released, `audit.json` in the run folder when refused."""
    for path in (run_dir / "release" / "audit.json", run_dir / "audit.json"):
        if path.is_file():
            return json.loads(path.read_text())
    raise FileNotFoundError(f"{run_dir}: no audit.json (not a finished run)")


def curve_row(run_dir: Path) -> dict:
    """One run's figures (see the module docstring).

    Raises FileNotFoundError for a folder that holds no finished run, ValueError for a run without
    a test accuracy or attack results, and KeyError or TypeError for metrics or an audit report not
    in the form fedkr writes.
    """
    run_dir = run_folder(run_dir)
    metrics, audit = run_metrics(run_dir), audit_document(run_dir)
    config = metrics["config"]
    if metrics.get("student_test_accuracy") is None:
        raise ValueError(f"{run_dir}: the run has no student test accuracy (no test split)")
    spent = [site["dp"]["epsilon"] for site in metrics["sites"].values() if site.get("dp")]
    attacks = [(sid, a) for sid, site in audit["sites"].items() for a in site.get("attacks") or []]
    if not attacks:
        raise ValueError(f"{run_dir}: audit.json holds no site's attack results")
    strongest_sid, strongest = max(attacks, key=lambda sa: sa[1]["auc_ci"][1])
    teachers = {sid: {"holdout_accuracy": round(metrics["sites"][sid]["teacher_holdout_accuracy"], 4),
                      "balanced_accuracy": round(site["utility"]["teacher"]["balanced_accuracy"], 4),
                      "classes_present": site["utility"]["classes_present"],
                      "student_balanced_accuracy": round(site["utility"]["student"]["balanced_accuracy"], 4)}
                for sid, site in sorted(audit["sites"].items()) if site.get("utility")}
    return {
        "run": run_dir.name,
        "generator_kind": config.get("generator_kind", "diffusion"),
        "epsilon_budget": config["dp_epsilon"] or None,
        "dp_models": config["dp_models"] if config["dp_epsilon"] else None,
        "epsilon_spent_max": round(max(spent), 3) if spent else None,
        "student_test_accuracy": round(metrics["student_test_accuracy"], 4),
        "test_images": metrics["test_images"],
        "released": audit["decision"]["passed"],
        "failures": audit["decision"]["failures"],
        "utility_ratio": (audit.get("utility") or {}).get("utility_ratio"),
        "teachers": teachers,
        "strongest_attack": {"site": strongest_sid, "attack": strongest["attack"], "target": strongest["target"],
                             "auc": round(strongest["auc"], 4), "auc_ci": [round(x, 4) for x in strongest["auc_ci"]]},
        "max_tpr_at_1pct_fpr": round(max(a["tpr_at_1pct_fpr"] for _, a in attacks), 4),
        "fit_seconds": round(metrics["stage_seconds"]["fit"]),
        "total_seconds": round(sum(metrics["stage_seconds"].values())),
        "config": config,
    }


def check_same_experiment(rows: list[dict]) -> None:
    """Raises SystemExit naming the first setting, other than the DP budget and the generator kind, that
    differs between two runs. A setting a run does not record (it predates the setting) counts as its default."""
    defaults = asdict(RunConfig(run_id="defaults"))
    first = rows[0]
    for row in rows[1:]:
        for key in sorted(set(first["config"]) | set(row["config"])):
            mine, theirs = row["config"].get(key, defaults.get(key)), first["config"].get(key, defaults.get(key))
            if key not in VARYING and mine != theirs:
                raise SystemExit(f"dp_curve: {row['run']} and {first['run']} differ in {key} "
                                 f"({mine!r} vs {theirs!r}): not one curve")


def markdown_table(rows: list[dict]) -> str:
    lines = ["| generator | epsilon per site (spent) | student test accuracy | released | teachers' holdout accuracy "
             "(balanced) | attack with the highest AUC bound, AUC [95% CI] | highest TPR@1%FPR | fit s |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        spent = "" if row["epsilon_spent_max"] is None else f" ({row['epsilon_spent_max']:.2f})"
        budget = "no DP" if row["epsilon_budget"] is None else f"{row['epsilon_budget']:g}{spent}"
        teachers = ", ".join(f"{t['holdout_accuracy']:.3f} ({t['balanced_accuracy']:.3f})" for t in row["teachers"].values())
        attack = row["strongest_attack"]
        verdict = "yes" if row["released"] else "no: " + "; ".join(f["message"] for f in row["failures"])
        lines.append(f"| {row['generator_kind']} | {budget} | {row['student_test_accuracy']:.3f} | {verdict} | {teachers} | "
                     f"{attack['site']} {attack['attack']} on the {attack['target']}, {attack['auc']:.3f} "
                     f"[{attack['auc_ci'][0]:.3f}, {attack['auc_ci'][1]:.3f}] | {row['max_tpr_at_1pct_fpr']:.3f} | "
                     f"{row['fit_seconds']} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    kinds = sorted({r["generator_kind"] for r in rows})
    eps = sorted({r["epsilon_budget"] for r in rows if r["epsilon_budget"] is not None})
    for kind, color in zip(kinds, ("C0", "C1", "C2", "C3")):
        private = [r for r in rows if r["generator_kind"] == kind and r["epsilon_budget"] is not None]
        public = [r for r in rows if r["generator_kind"] == kind and r["epsilon_budget"] is None]
        x = [r["epsilon_budget"] for r in private]
        if private:
            ax1.plot(x, [r["student_test_accuracy"] for r in private], "o-", color=color, label=f"student, {kind}, DP at each site")
            ax2.plot(x, [r["strongest_attack"]["auc_ci"][1] for r in private], "o-", color=color, label=f"{kind}, DP")
        for r in public:
            ax1.axhline(r["student_test_accuracy"], ls="--", color=color, label=f"student, {kind}, no DP")
            ax2.axhline(r["strongest_attack"]["auc_ci"][1], ls="--", color=color, label=f"{kind}, no DP")
    ax1.set(xscale="log", xlabel="epsilon per site (teacher + generator)", ylabel="test accuracy",
            title="Student accuracy against the privacy budget")
    ax1.set_xticks(eps, [f"{e:g}" for e in eps])
    ax1.legend(fontsize="small")
    ax2.axhline(0.5, color="black", lw=0.5)
    ax2.set(xscale="log", xlabel="epsilon per site", ylabel="AUC (95% upper bound)", title="Audit: strongest attack over every site")
    ax2.set_xticks(eps, [f"{e:g}" for e in eps])
    ax2.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True, help="path prefix for OUT.json, OUT.md and OUT.png")
    args = parser.parse_args()
    rows = []
    for run_dir in args.run_dirs:
        try:
            rows.append(curve_row(run_dir))
        except (FileNotFoundError, ValueError) as error:  # these name the run folder
            raise SystemExit(f"dp_curve: {error}") from None
        except (OSError, KeyError, TypeError) as error:
            raise SystemExit(f"dp_curve: {run_dir}: not a run folder as fedkr writes it "
                             f"({type(error).__name__}: {error})") from None
    check_same_experiment(rows)
    rows.sort(key=lambda r: (r["generator_kind"], math.inf if r["epsilon_budget"] is None else r["epsilon_budget"]))
    table = markdown_table(rows)
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        Path(f"{args.out}.json").write_text(json.dumps(rows, indent=2) + "\n")
        Path(f"{args.out}.md").write_text(table)
        if any(r["epsilon_budget"] is not None for r in rows):
            plot(rows, Path(f"{args.out}.png"))
    except OSError as error:
        raise SystemExit(f"dp_curve: cannot write {args.out}.*: {error}") from None
    print(table, end="")


if __name__ == "__main__":
    main()
