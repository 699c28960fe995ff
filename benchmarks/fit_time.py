"""Time one site's fit (teacher, then generator) under a bench profile, alone on the machine.

The bench fits every site in one process, one after another, so its fit stage is the sum; this
measures the per-site figure a hospital would see, e.g. the largest BloodMNIST site:

    python benchmarks/fit_time.py --data ../shared/data/medmnist/bloodmnist.npz --profile full --site 0

or one site of a given size, `--members` images drawn from the whole training split, stratified by
class (a holdout of others, up to the profile's holdout fraction, stratified too):

    python benchmarks/fit_time.py --data ../shared/data/medmnist/bloodmnist.npz --profile full --members 10000

The result records `source_digest` (`fedkr.bench_progress.source_digest`: fedkr's package source, as a
bench records it, not this script's); the file's name carries the commit it ran on.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from fedkr.bench import load_bench_sites
from fedkr.bench_progress import source_digest
from fedkr.client.site import Site
from fedkr.client.site_data import MIN_HOLDOUT, MIN_MEMBERS, SiteData
from fedkr.inprocess import InProcessLink
from fedkr.shared.config import PROFILES, RunConfig
from fedkr.shared.data import load_dataset
from fedkr.shared.reports import FitPlan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--profile", default="full", choices=sorted(PROFILES))
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--site", type=int, default=0, help="the bench site to time [default: 0]")
    parser.add_argument("--generator-steps", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None, help="the working size in pixels [default: RunConfig's]")
    which.add_argument("--members", type=int, default=None,
                        help="instead of a bench site: one site of this many members drawn from the whole training split")
    parser.add_argument("--teacher-resample", action=argparse.BooleanOptionalAction, default=None,
                        help="the teacher learns at the generator's resolution (RunConfig.teacher_resample) [default: the profile's]")
    parser.add_argument("--out", type=Path, default=None, help="also write the result here as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = PROFILES[args.profile].run_config(data=args.data, generator_steps=args.generator_steps, image_size=args.image_size,
                                                 teacher_resample=args.teacher_resample, run_id="fit-time")
    if args.members is not None:
        try:
            data, site_id = sized_site(config, args.members), f"site-of-{args.members}"
        except ValueError as exc:
            parser.error(str(exc))
    else:
        try:
            site_data, _ = load_bench_sites(config)
        except ValueError as exc:  # DataError: data fedkr cannot load
            parser.error(str(exc))
        if not 0 <= args.site < len(site_data):
            parser.error(f"--site must be between 0 and {len(site_data) - 1} for the {args.profile} profile")
        data, site_id = site_data[args.site], f"site-{args.site}"
    plan = FitPlan(run_id="fit-time", teacher=config.teacher_config(), generator=config.generator_config(),
                   teacher_resample=config.teacher_resample)
    with tempfile.TemporaryDirectory() as state:
        site = Site(site_id, data, Path(state), device=config.device)
        report = InProcessLink([site]).fit(plan)[site.site_id]
    if isinstance(report, Exception):
        raise SystemExit(f"error: {site.site_id} did not fit: {report}")
    result = {"site": site.site_id, "members": report.num_members, "holdout": report.num_holdout,
              "image_shape": list(report.image_shape), "teacher_epochs": config.teacher_epochs,
              "generator_steps": config.generator_steps, "teacher_resample": config.teacher_resample,
              "teacher_seconds": round(report.teacher_seconds, 1),
              "generator_seconds": round(report.generator_seconds, 1),
              "fit_seconds": round(report.teacher_seconds + report.generator_seconds, 1),
              "teacher_holdout_accuracy": round(report.teacher_holdout_accuracy, 4), "source_digest": source_digest(),
              "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    print(json.dumps(result))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


def sized_site(config: RunConfig, members: int) -> SiteData:
    """One site of `members` images drawn from the training split and a holdout of others, at most the
    profile's holdout fraction of the site, both stratified by class (scikit-learn's `train_test_split`,
    seeded by the run's seed), so that the site's class mix is the split's, as a bench site's is about under
    an iid partition.

    Raises ValueError (or `DataError`, a ValueError, for data fedkr cannot load) when the site would
    have fewer members or holdout images than a site needs (`MIN_MEMBERS`, `MIN_HOLDOUT`), or too few
    of a class to stratify."""
    train = load_dataset(config.data, seed=config.seed, image_size=config.image_size).train
    holdout = min(len(train) - members, round(members * config.holdout_fraction / (1 - config.holdout_fraction)))
    if members < MIN_MEMBERS or holdout < MIN_HOLDOUT:
        raise ValueError(f"--members must be between {MIN_MEMBERS} and {len(train) - MIN_HOLDOUT}, with at least "
                         f"{MIN_HOLDOUT} holdout images left of the {len(train)} training images")
    member_idx, holdout_idx = train_test_split(np.arange(len(train)), train_size=members, test_size=holdout,
                                               stratify=train.labels, random_state=config.seed)
    return SiteData(members=train.subset(np.sort(member_idx)), holdout=train.subset(np.sort(holdout_idx)))


if __name__ == "__main__":
    main()
