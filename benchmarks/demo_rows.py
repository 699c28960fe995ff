"""One JSON line per finished `fedkr demo` run, read from its audit.json and metrics: the figures the
README's demo table quotes.

    python benchmarks/demo_rows.py RUNS_DIR [RUNS_DIR ...] >> benchmarks/results/demo-COMMIT.jsonl

Each RUNS_DIR is a demo's `--out` folder. A row gives the run id, the seed and whether the generators
trained with DP (from the run's own settings), the verdict and its reasons, the student's test accuracy
(measured whether or not the release went out), and per site the white-box generator
attack's AUC with its 95% interval and the attack with the highest upper bound, and the run's seconds by stage (the coordinator's clock).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def demo_row(run: Path) -> dict:
    release = run / "release"
    if release.is_dir():  # released: the audit and the metrics are in the signed release
        audit, metrics = (json.loads((release / name).read_text()) for name in ("audit.json", "metrics.json"))
    else:  # refused: the audit beside refusal.json, which carries the metrics
        audit = json.loads((run / "audit.json").read_text())
        metrics = json.loads((run / "refusal.json").read_text())["metrics"]
    config = metrics["config"]
    row: dict = {"run": run.name, "seed": config.get("seed"), "dp_epsilon": config.get("dp_epsilon"),
                 "released": bool(audit["decision"]["passed"]),
                 "reasons": [f["message"] for f in audit["decision"].get("failures", [])],
                 "acc": metrics.get("student_test_accuracy"), "stage_seconds": metrics.get("stage_seconds")}
    for site, report in sorted(audit["sites"].items()):
        attacks = report.get("attacks") or []
        generator = next((a for a in attacks if a["target"] == "generator"), None)
        top = max(attacks, key=lambda a: a["auc_ci"][1]) if attacks else None
        row[site] = {"gen": None if generator is None else [round(generator["auc"], 3), [round(x, 3) for x in generator["auc_ci"]]],
                     "top": None if top is None else [top["attack"], round(top["auc"], 3), round(top["auc_ci"][1], 3)]}
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
