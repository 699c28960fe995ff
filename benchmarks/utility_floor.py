"""The utility check's figures on a finished run's fit: the student as trained, and students that learned little.

Reuses the sites' teachers and generators of a run (no fit), runs the later stages again with the
utility rule off, and prints the pooled and per-site utility figures (fedkr.shared.utility) of:
- `trained`: the student as the run's settings train it;
- `one-epoch`: the same student after one epoch (a student that learned little);
- `untrained`: the student's network as initialised (a student that learned nothing).
These set the default of the policy's ratio (`audit-min-utility`, docs/audit.md).

    python benchmarks/utility_floor.py RUN_DIR [--variants trained,one-epoch,untrained]

RUN_DIR is a finished run's folder written by `fedkr simulate` (or the demo), or its release/
folder: its metrics (release/metrics.json, or refusal.json when refused) name the settings and the
fit; the sites' state is in `sites/` beside the run folders (`run_folder.py`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fedkr.client.site import Site
from fedkr.inprocess import InProcessLink
from fedkr.server.coordinator import Coordinator, FitResult
from fedkr.shared.classifier import build_classifier
from fedkr.shared.data import load_dataset
from fedkr.shared.reports import FitReport
from run_folder import run_config, run_folder, run_metrics, site_data, sites_folder


class UntrainedStudent(Coordinator):
    def train_student(self, record):  # type: ignore[no-untyped-def]
        trained = super().train_student(record)
        record.student = build_classifier(trained.config, seed=12345)
        return record.student


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--variants", default="trained,one-epoch,untrained")
    args = parser.parse_args()
    torch.set_num_threads(2)
    run_dir = run_folder(args.run_dir)
    metrics = run_metrics(run_dir)
    base = run_config(metrics)
    fit_run = metrics["fit_run_id"]
    reports = {sid: FitReport.from_dict(r) for sid, r in metrics["sites"].items()}
    first = next(iter(reports.values()))
    fit = FitResult(fit_run, reports, {}, first.class_names, first.image_shape, 0.0)
    sites_dir = sites_folder(run_dir)
    sites = [Site(sid, site_data(base, i), sites_dir / sid) for i, sid in enumerate(sorted(reports))]
    test = load_dataset(base.test_data or base.data, seed=base.seed).test
    for variant in args.variants.split(","):
        started = time.perf_counter()
        config = base.with_overrides(run_id=f"utility-{variant}-{int(time.time())}", out=str(run_dir.parent),
                                     audit_min_utility=0.0, audit_min_adjusted_balanced_accuracy=0.0, student_epochs=1 if variant == "one-epoch" else base.student_epochs)
        for site in sites:
            site.reuse_fit(sites_dir / site.site_id / "runs" / fit_run, config.run_id)
        coordinator = (UntrainedStudent if variant == "untrained" else Coordinator)(config, test)
        outcome = coordinator.run(InProcessLink(sites), fit=fit)
        audit = outcome.metrics["audit"]
        print(json.dumps({
            "run": str(run_dir), "variant": variant, "test_accuracy": outcome.metrics.get("student_test_accuracy"),
            "pooled": audit["utility"], "sites": {sid: s.get("utility") for sid, s in audit["sites"].items()},
            "seconds": round(time.perf_counter() - started),
        }), flush=True)


if __name__ == "__main__":
    main()
