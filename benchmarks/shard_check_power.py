"""How the shard check's pixel distance test sees more as a run sends more images, on a fitted run.

For each site of a fitted run (`fedkr simulate`'s or `fedkr bench`'s sites folder): the site, on
a scratch copy of its fitted models, answers `--rounds` synthesis requests of the run's size
(`samples-per-class` images of every class it holds at least `min-class-members` members of, the
run's oversampling and in-distribution filter) with its shard check off, and after each round the
check (`client.shard_check`, at the site's default limit) tests every image drawn so far. That is
what the check would see at round r of a run that sends r shards, or at round r - 1 with the
probe of one more shard the site draws with its first. One JSON line per site and round:
images tested, AUC with its 95% interval, whether the check refuses, seconds to draw the shard.

    python benchmarks/shard_check_power.py --data ../shared/data/medmnist/breastmnist.npz --sites 4 \\
        --partition dirichlet:0.5 --sites-dir OUT/sites --fit-run bench-seed0 --fit-reports OUT/bench.json

Its figures are those of docs/audit.md, "The shard check", on how many images a check needs. Interval
ends can differ from a site's own check on the same images by a little: the bootstrap seed here is the
round, the site's is its shard's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from fedkr.client.shard_check import DEFAULT_MAX_AUC, ShardCheckRecord, check_shard
from fedkr.client.site import Site
from fedkr.client.site_data import SiteDataSpec, load_site_data
from fedkr.shared import codec
from fedkr.shared.shard import ShardSpec, SynthesisRequest, per_class_request

from fitted_run import add_fit_arguments, fit_models_dirs, fit_run_config, fit_settings, read_fit_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_fit_arguments(parser)
    parser.add_argument("--rounds", type=int, default=5, help="shards drawn per site, each tested with those before it")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    settings = fit_settings(read_fit_file(parser, args.fit_reports))
    config = fit_run_config(parser, args, settings)
    with tempfile.TemporaryDirectory() as scratch:
        site_ids = [f"site-{index}" for index in range(args.sites)]
        fitted_dirs = fit_models_dirs(parser, args.sites_dir, args.fit_run, site_ids)
        for index, (site_id, fitted) in enumerate(fitted_dirs.items()):
            state = Path(scratch) / site_id
            # a fresh ledger and no shard check record: nothing sent yet
            shutil.copytree(fitted, state / "runs" / args.fit_run, ignore=shutil.ignore_patterns("shard_check.npz*"))
            data = load_site_data(SiteDataSpec(args.data, index, args.sites, args.partition, config.seed,
                                               config.holdout_fraction, config.image_size))
            site = Site(site_id, data, state, shard_max_auc=1.0)
            members, holdout = data.members.images, data.holdout.images
            counts = data.members.class_counts()
            per_class = per_class_request(counts, config.samples_per_class, config.min_class_members)
            record = ShardCheckRecord.nothing_sent(members, holdout)
            for rnd in range(1, args.rounds + 1):
                started = time.perf_counter()
                reply = site.synthesize(SynthesisRequest(args.fit_run, rnd, per_class, config.temperature, config.oversample))
                seconds = time.perf_counter() - started
                shard = codec.decode_shard(reply, site_id=site_id, run_id=args.fit_run, round=rnd,
                                           spec=ShardSpec(members.shape[1:], len(counts)))
                record = record.adding(shard.images, members, holdout)
                check = check_shard(record, DEFAULT_MAX_AUC, seed=rnd)
                print(json.dumps({"site": site_id, "members": len(members), "holdout": len(holdout), "round": rnd,
                                  "images_tested": record.num_images, "auc": round(check.auc, 4),
                                  "auc_ci": [round(x, 4) for x in check.auc_ci], "refused": check.leaks,
                                  "limit": DEFAULT_MAX_AUC, "shard_seconds": round(seconds, 1)}), flush=True)


if __name__ == "__main__":
    main()
