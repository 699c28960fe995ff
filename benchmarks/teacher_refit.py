"""Refit only the teachers of a finished fit, with `teacher-resample` set, beside its generators.

`teacher-resample` is a fit setting: the teacher trains differently, the generator does not (it
never sees the teacher). To compare the two on the same generators, this script writes a new sites
folder whose every site holds the fit run's generator (copied) and a teacher trained as the site
trains it at fit (`client.site.train_teacher`): the same members, seed and protocol (the fit's
settings as its file holds them), under the fit's plan with `teacher-resample` as asked. A fit
trained with DP is refused: a refit would spend the teachers' privacy budget a second time. Each
site's ledger starts empty, so a lever study on the new folder (`levers.py --sites-dir OUT`) may
reuse the run ids of one on the old folder and draw the very same raw samples (a site's sampling
seed comes from the run id, the run's seed, the site and the round).

One JSON row per site: the teacher's input resolution, its holdout accuracy beside the fit's
teacher's (both measured here on the site's holdout) and the training seconds. The folder is
written whole at the end (OUT.partial until then), so a failure leaves no half-written OUT.

    python benchmarks/teacher_refit.py --data ../shared/data/medmnist/breastmnist.npz --sites 4 \\
        --partition dirichlet:0.5 --sites-dir bench/sites --fit-run bench-seed0 --fit-reports bench/bench.json \\
        --out refit/sites
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

from fedkr.client.site import load_teacher, run_dir, save_teacher, train_teacher
from fedkr.client.site_data import SiteDataSpec, load_site_data
from fedkr.shared.classifier import accuracy
from fedkr.shared.reports import FitPlan
from fitted_run import add_fit_arguments, fit_models_dirs, fit_run_config, fit_settings, read_fit_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_fit_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="the new sites folder (must not exist)")
    parser.add_argument("--teacher-resample", action=argparse.BooleanOptionalAction, default=True,
                        help="the refitted teachers' teacher-resample [default: on]")
    args = parser.parse_args()
    partial = args.out.with_name(args.out.name + ".partial")
    for path in (args.out, partial):
        if path.exists():
            parser.error(f"{path} exists already: give a new folder (or remove it)")
    config = replace(fit_run_config(parser, args, fit_settings(read_fit_file(parser, args.fit_reports))),
                     teacher_resample=args.teacher_resample)
    if config.dp_config() is not None:
        parser.error(f"{args.fit_reports}: the fit trained with DP; a refit would spend the teachers' budget again")
    plan = FitPlan(run_id=args.fit_run, teacher=config.teacher_config(), generator=config.generator_config(),
                   teacher_resample=config.teacher_resample)
    site_ids = [f"site-{index}" for index in range(args.sites)]
    fitted = fit_models_dirs(parser, args.sites_dir, args.fit_run, site_ids)
    for index, (site_id, models) in enumerate(fitted.items()):
        try:
            data = load_site_data(SiteDataSpec(args.data, index, args.sites, args.partition, config.seed,
                                               config.holdout_fraction, config.image_size))
            fit_teacher = load_teacher(models)
        except (ValueError, OSError) as exc:  # DataError, JSONInputError: one line
            parser.error(f"{site_id}: {exc}")
        started = time.perf_counter()
        teacher = train_teacher(plan, data.members)
        seconds = time.perf_counter() - started
        directory = run_dir(partial / site_id, args.fit_run)
        directory.mkdir(parents=True)
        shutil.copytree(models / "generator", directory / "generator")
        save_teacher(directory, teacher)
        holdout = data.holdout
        print(json.dumps({"site": site_id, "members": len(data.members), "holdout": len(holdout),
                          "teacher_resample": config.teacher_resample,
                          "teacher_input_resolution": teacher.config.input_resolution,
                          "holdout_accuracy": round(accuracy(teacher, holdout.images, holdout.labels), 4),
                          "fit_teacher_holdout_accuracy": round(accuracy(fit_teacher, holdout.images, holdout.labels), 4),
                          "teacher_seconds": round(seconds, 1)}), flush=True)
    partial.rename(args.out)


if __name__ == "__main__":
    main()
