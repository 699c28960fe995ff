"""Time one site's fit (teacher, then generator) under a bench profile, alone on the machine.

The bench fits every site in one process, one after another, so its fit stage is the sum; this
measures the per-site figure a hospital would see, e.g. the largest BloodMNIST site:

    python benchmarks/fit_time.py --data ../shared/data/medmnist/bloodmnist.npz --profile full --site 0
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

from fedkr.bench import load_bench_sites
from fedkr.client.site import Site
from fedkr.inprocess import InProcessLink
from fedkr.shared.config import PROFILES
from fedkr.shared.reports import FitPlan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--profile", default="full", choices=sorted(PROFILES))
    parser.add_argument("--site", type=int, default=0)
    parser.add_argument("--generator-steps", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None, help="the working size in pixels [default: RunConfig's]")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = PROFILES[args.profile].run_config(data=args.data, generator_steps=args.generator_steps, image_size=args.image_size,
                                                 run_id="fit-time")
    site_data, _ = load_bench_sites(config)
    if not 0 <= args.site < len(site_data):
        parser.error(f"--site must be between 0 and {len(site_data) - 1} for the {args.profile} profile")
    plan = FitPlan(run_id="fit-time", teacher=config.teacher_config(), generator=config.generator_config())
    with tempfile.TemporaryDirectory() as state:
        site = Site(f"site-{args.site}", site_data[args.site], Path(state), device=config.device)
        report = InProcessLink([site]).fit(plan)[site.site_id]
    if isinstance(report, Exception):
        raise SystemExit(f"error: {site.site_id} did not fit: {report}")
    print(json.dumps({"site": site.site_id, "members": report.num_members, "image_shape": list(report.image_shape),
                      "teacher_seconds": round(report.teacher_seconds, 1),
                      "generator_seconds": round(report.generator_seconds, 1),
                      "fit_seconds": round(report.teacher_seconds + report.generator_seconds, 1),
                      "teacher_holdout_accuracy": round(report.teacher_holdout_accuracy, 4)}))


if __name__ == "__main__":
    main()
