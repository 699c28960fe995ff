"""What the site's own teacher adds when it guides the site's private generator: the screen before a full run.

A private site's synthetic images are what limits the ε 8 student (docs/audit.md, "On the sites'
private synthetic images"): its DP generator's samples are the class they were drawn for in 14–33%
of cases by a judge. Classifier guidance by the site's own DP teacher
(`ClassConditionalDiffusion.sample(classifier=, classifier_scale=)`: Dhariwal & Nichol 2021, the
gradient on the predicted clean image as in Bansal et al. 2023) is post-processing of the two
models the site already trained: it spends no privacy budget. This screen measures whether it
makes the samples carry more of the class, judged by a model that is not the guide.

`--fit DIR` is a site's run folder from a private run (``teacher.safetensors``, ``generator/``; a
site's ``runs/RUN``), trained on bench site `--site` of `--data` under `--profile` (the same
members: `load_bench_sites`). Where DIR does not exist, `--epsilon E` first fits it: a `Site` on
the bench site's data is sent the profile's fit plan at site ε E, and its run folder (the two
models and their ``dp.json``) becomes DIR.

For every scale in `--scales` the generator draws `--per-class` images of every class the site
holds, guided by the folder's teacher at that scale (0: the generator alone), and
`benchmarks/dp_generator.py`'s `score_images` judges them with a teacher trained on the same
members without DP (`--judge`, or one trained and cached under `--out`). One JSON line per scale,
with dp_generator's figures (judge agreement, precision, recall, a CNN trained on the samples
alone scored on the site's holdout), `guide_agreement` (the share the guiding teacher itself puts
in the class drawn: what guidance optimises, not evidence by itself), the sampling seconds and
the folder's ``dp.json`` (null without one).

    python benchmarks/teacher_guidance.py --data ../shared/data/medmnist/bloodmnist.npz --site 1 \\
        --fit fits/site-1 --epsilon 8 --scales 0,1,3,10 --out teacher-guidance

JSON lines also go to OUT/teacher_guidance.jsonl.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from fedkr.client.site import Site, load_teacher, run_dir
from fedkr.client.site_data import SiteData
from fedkr.inprocess import InProcessLink
from fedkr.shared.classifier import predict_logits
from fedkr.shared.config import PROFILES, RunConfig
from fedkr.shared.device import DeviceError, resolve_device
from fedkr.shared.generator import ClassConditionalDiffusion
from fedkr.shared.generator_kinds import load_generator
from fedkr.shared.reports import FitPlan


sys.path.insert(0, str(Path(__file__).resolve().parent))
from arglists import parse_list  # noqa: E402  (sibling scripts, not a package)
from dp_generator import asked_classes, bench_site, judge_and_row, score_images  # noqa: E402
from jsonl import emit  # noqa: E402


def fit_site(config: RunConfig, site: SiteData, folder: Path, device: torch.device) -> None:
    """Fit `site` as a site fits under `config`: a `Site` on its data is sent the run's fit plan (as
    `benchmarks/fit_time.py` does), and its run folder (teacher, generator, ``dp.json``) becomes `folder`
    (fitted under a ``.partial`` name, then renamed). Raises SystemExit where the site refuses the plan."""
    plan = FitPlan(run_id="teacher-guidance", teacher=config.teacher_config(), generator=config.generator_config(),
                   dp=config.dp_config(), teacher_resample=config.teacher_resample)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    fitting = Site("bench-site", site, partial / "state", device=device)
    report = InProcessLink([fitting]).fit(plan)[fitting.site_id]
    if isinstance(report, Exception):
        raise SystemExit(f"error: the site did not fit: {report}")
    print(f"teacher: {report.teacher_seconds:.0f} s, holdout accuracy {report.teacher_holdout_accuracy:.3f}; "
          f"generator: {report.generator_seconds:.0f} s", file=sys.stderr, flush=True)
    run_dir(partial / "state", plan.run_id).rename(folder)
    shutil.rmtree(partial)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="dataset file (.npz) or name, as for fedkr simulate")
    parser.add_argument("--profile", default="full", choices=sorted(PROFILES))
    parser.add_argument("--site", type=int, default=1, help="which bench site the fit is of [default: 1]")
    parser.add_argument("--fit", type=Path, required=True, help="the site's run folder: teacher.safetensors and generator/")
    parser.add_argument("--epsilon", type=float, default=None,
                        help="fit --fit first, at this site epsilon, where the folder does not exist")
    parser.add_argument("--scales", default="0,1,3,10", help="comma-separated classifier scales [default: 0,1,3,10]")
    parser.add_argument("--per-class", type=int, default=100, help="samples drawn per class [default: 100]")
    parser.add_argument("--judge", type=Path, default=None,
                        help="a site's run folder (without DP) whose teacher judges [default: one trained here]")
    parser.add_argument("--device", default="cpu", help="where to sample and train (cpu, cuda, auto) [default: cpu]")
    parser.add_argument("--out", type=Path, default=Path("teacher-guidance"))
    args = parser.parse_args()
    scales = parse_list(args.scales, float, "--scales", parser, minimum=0, inclusive=True)
    if args.per_class < 1:
        parser.error(f"--per-class must be at least 1, got {args.per_class}")
    try:
        device = resolve_device(args.device)
    except DeviceError as error:
        raise SystemExit(str(error)) from None
    if args.epsilon is not None and not 0 < args.epsilon < float("inf"):
        raise SystemExit(f"--epsilon must be a finite number > 0, got {args.epsilon}")
    if args.epsilon is not None and args.fit.exists():
        raise SystemExit(f"{args.fit} exists already: --epsilon fits a new folder (leave it out to screen this one)")
    if args.epsilon is None and (not (args.fit / "teacher.safetensors").is_file() or not (args.fit / "generator").is_dir()):
        raise SystemExit(f"{args.fit}: not a site's run folder (teacher.safetensors and generator/ expected)")
    config = replace(PROFILES[args.profile].run_config(run_id="teacher-guidance"), data=args.data)
    site = bench_site(config, args.site)
    if args.epsilon is not None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # the site's progress, on stderr
        fit_site(replace(config, dp_epsilon=args.epsilon), site, args.fit, device)
    generator, teacher = load_generator(args.fit / "generator"), load_teacher(args.fit)
    if not isinstance(generator, ClassConditionalDiffusion):
        raise SystemExit(f"{args.fit}: a {generator.config.kind} generator; guidance needs the diffusion sampler")
    if generator.image_shape != site.members.image_shape or generator.num_classes != site.members.num_classes:
        raise SystemExit(f"{args.fit}: a fit for images {generator.image_shape} of {generator.num_classes} classes, not this site's")
    judge, common = judge_and_row(args, config, site)
    asked = asked_classes(site, args.per_class)
    dp_record = args.fit / "dp.json"
    with (args.out / "teacher_guidance.jsonl").open("a") as sink:
        for scale in scales:
            started = time.perf_counter()
            images = generator.sample(asked, seed=generator.config.seed, device=device, classifier=teacher.to(device).eval(),
                                      classifier_scale=scale)
            sample_seconds = time.perf_counter() - started
            row = {"fit": str(args.fit), "classifier_scale": scale, "guidance_scale": generator.config.guidance_scale,
                   "eta": generator.config.sample_eta, **common,
                   "guide_agreement": round(float((predict_logits(teacher, images).argmax(1) == asked).mean()), 4),
                   **score_images(images, asked, site, judge, generator.config.seed, config.student_config(), device),
                   "sample_seconds": round(sample_seconds, 1),
                   "dp": json.loads(dp_record.read_text()) if dp_record.is_file() else None}
            emit(row, sink)


if __name__ == "__main__":
    main()
