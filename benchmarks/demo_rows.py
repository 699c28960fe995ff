"""One JSON line per finished `fedkr demo` run, read from its audit.json and metrics: the figures the
README's demo table quotes.

    python benchmarks/demo_rows.py RUNS_DIR [RUNS_DIR ...] >> benchmarks/results/demo-COMMIT.jsonl

Each RUNS_DIR is a demo's `--out` folder. A row gives the run id, the seed and whether the generators
trained with DP, the IPC released and the student's set (from the run's own settings), the verdict and its reasons, the student's test accuracy
(measured whether or not the release went out), and per site the white-box generator
attack's AUC with its 95% interval and the attack with the highest upper bound (its AUC, upper and
lower bound, and its control's AUC: the same attack on two halves of the holdout), and the run's
seconds by stage (the coordinator's clock).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fedkr.shared.audit_view import AuditDocument
from run_folder import run_folder, run_metrics


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def demo_row(run: Path) -> dict:
    run = run_folder(run)  # a run's release/ folder names its run
    released = run / "release" / "audit.json"  # released: the audit is in the signed release; refused: beside refusal.json
    audit = AuditDocument.parse(json.loads((released if released.is_file() else run / "audit.json").read_text()))
    metrics = run_metrics(run)
    config = metrics["config"]
    row: dict = {"run": run.name, "seed": config.get("seed"), "dp_epsilon": config.get("dp_epsilon"),
                 "ipc": config.get("ipc"), "student_ipc": config.get("student_ipc"),
                 "student_images": metrics.get("student_images"),
                 "released": audit.decision.passed,  # None: the audit holds no decision
                 "reasons": [f.message for f in audit.decision.failures],
                 "acc": metrics.get("student_test_accuracy"), "stage_seconds": metrics.get("stage_seconds")}
    for site in sorted(audit.sites, key=lambda s: s.name):
        bounded = [a for a in site.attacks if a.auc_ci is not None and a.auc_ci.high is not None]
        generator = next((a for a in site.attacks if a.target == "generator"), None)
        top = max(bounded, key=lambda a: a.auc_ci.high) if bounded else None  # type: ignore[union-attr]
        row[site.name] = {
            "gen": None if generator is None or generator.auc_ci is None else
            [_rounded(generator.auc), [_rounded(generator.auc_ci.low), _rounded(generator.auc_ci.high)]],
            "top": None if top is None else [top.name, _rounded(top.auc), _rounded(top.auc_ci.high)],  # type: ignore[union-attr]
            "top_low": None if top is None else _rounded(top.auc_ci.low),  # type: ignore[union-attr]
            "top_control": None if top is None or top.control is None else _rounded(top.control.auc),
        }
    return row


def main(folders: list[str]) -> None:
    for folder in folders:
        runs = sorted({p.parent for p in Path(folder).glob("*/refusal.json")} | {p.parent for p in Path(folder).glob("*/release")})
        if not runs:
            sys.exit(f"{folder}: no finished demo run (no <run-id>/release or <run-id>/refusal.json)")
        for run in runs:
            print(json.dumps(demo_row(run)))


if __name__ == "__main__":
    main(sys.argv[1:])
