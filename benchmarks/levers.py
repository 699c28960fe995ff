"""Measure the coordinator's levers on sites that are already fitted: one fit, many variants.

Each variant is a fedkr run (shards, distillation, relabelling, student) on the same fitted
teachers and generators, so differences come from the variant alone. Variants that ask the sites
for the same shards (same seed and synthesis settings) get the very same shards, drawn once, so a
comparison of distillation or relabelling sees one pool. The audit is skipped (every run is
refused for want of audit reports): accuracy is what a lever study measures; `fedkr bench` audits. Sites' state folders
and fit reports come from an earlier run or bench (`--fit-reports` is its metrics.json or
bench.json; a refused run's refusal.json will do). The sites' split (seed, holdout fraction) and
the test part are the fit run's, read from that file where it holds the run's settings; a
variant samples at the fit's own guidance (and teacher guidance) unless it, or `--base`, sets
`generator-guidance` (`generator-teacher-guidance`). Every
variant starts from the fit run's settings where the file holds them (its profile's overrides
included), then `--base`, then its own; a variant that changes what the fit fixed
(`fedkr.bench.FIT_SETTINGS`) is refused, and every variant's settings are checked before the first runs.

    python benchmarks/levers.py --data ../shared/data/medmnist/bloodmnist.npz --sites 4 \\
        --partition dirichlet:0.5 --sites-dir runs/sites --fit-run RUN --fit-reports runs/RUN/release/metrics.json \\
        --variant base: --variant ipc200:ipc=200 --variant norelabel:relabel=false --seeds 0,1
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from fedkr.bench import FIT_SETTINGS, FIT_SETTINGS_ADDED_LATER
from fedkr.client.site import Site
from fedkr.client.site_data import SiteDataSpec, load_site_data
from fedkr.inprocess import InProcessLink
from fedkr.server.coordinator import Coordinator, FitResult
from fedkr.shared import codec
from fedkr.shared.classifier import accuracy, build_classifier, one_hot, train_classifier
from fedkr.shared.config import ConfigError, RunConfig
from fedkr.student_protocol import StudentProtocol
from fedkr.v1 import messages_pb2 as pb

from arglists import parse_list
from fitted_run import (add_fit_arguments, dashed, fit_models_dirs, fit_reports, fit_run_config,
                        fit_settings, fit_teachers, fit_test_split, read_fit_file)


#: Settings that say where or how the fit ran, not what it measured: every variant has its own.
NOT_CARRIED = ("out", "run-id", "coordinator-dir", "device", "site-threads", "reply-timeout", "wait-for-sites",
               "expected-sites", "test-data")


def _pairs(text: str) -> dict:
    """'key=value,key=value' as a dict under dashed keys."""
    return dashed(dict(pair.partition("=")[::2] for pair in filter(None, text.split(","))))


def _for_run(reply: bytes | Exception, run_id: str) -> bytes | Exception:
    """A cached site reply (shard bytes, or the site's failure) readdressed to `run_id`: each variant is its own run."""
    if isinstance(reply, Exception):
        return reply
    message = codec.unwrap(reply, codec.KIND_SHARD, pb.SyntheticShard, len(reply))
    message.run_id = run_id
    return codec.wrap(codec.KIND_SHARD, message)


class LeverLink(InProcessLink):
    """Shards drawn once per (seed, site, round, request); no audit.

    Plain (unsealed) shards only: the sites here have no keys. A shard served from the cache is
    readdressed to the variant's run id and never passes the site's gate again, so the site's
    ledger lists it under the run that drew it.
    """

    def __init__(self, sites: list[Site]) -> None:
        super().__init__(sites)
        self.shards: dict[tuple, object] = {}
        self.seed = 0
        #: the variant's sampling settings (guidance, DDIM eta, teacher guidance): shards drawn at other ones are other shards
        self.sampling: tuple[float | None, float | None, float | None] = (None, None, None)

    def _key(self, sid: str, req) -> tuple:  # type: ignore[no-untyped-def]
        return (self.seed, sid, req.round, req.per_class, req.temperature, req.oversample, self.sampling)

    def synthesize(self, requests: dict) -> dict:
        out, missing = {}, {}
        for sid, req in requests.items():
            cached = self.shards.get(self._key(sid, req))
            if cached is not None:
                out[sid] = _for_run(cached, req.run_id)
            else:
                missing[sid] = req
        for sid, reply in super().synthesize(missing).items():
            self.shards[self._key(sid, missing[sid])] = reply
            out[sid] = reply
        return out

    def audit(self, sites: list[str], candidates: dict) -> dict:
        return {sid: RuntimeError("audit skipped in a lever study") for sid in sites}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_fit_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("levers"))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--variant", action="append", required=True, help="NAME:key=value,key=value (RunConfig keys)")
    parser.add_argument("--base", default="", help="key=value,... applied to every variant")
    parser.add_argument("--split-seed", type=int, default=None,
                        help="the fit run's seed, which chose the sites' splits (default: the fit's own, else the run's default)")
    parser.add_argument("--holdout-fraction", type=float, default=None,
                        help="the fit run's holdout fraction (default: the fit's own, else the run's default)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    saved = read_fit_file(parser, args.fit_reports)
    seeds = parse_list(args.seeds, int, "--seeds", parser, inclusive=True)
    fit_config = fit_settings(saved)
    # the settings a variant carries over from the fit (what a run's folders, device and timeouts were is not one)
    carried = {key: value for key, value in fit_config.items() if key.replace("_", "-") not in NOT_CARRIED}
    fitted = fit_run_config(parser, args, carried, (("--split-seed", "seed", args.split_seed),
                                                    ("--holdout-fraction", "holdout_fraction", args.holdout_fraction)))
    split_seed = args.split_seed if args.split_seed is not None else fitted.seed
    holdout_fraction = args.holdout_fraction if args.holdout_fraction is not None else fitted.holdout_fraction
    reports = fit_reports(parser, args.fit_reports, saved)
    image_size = fitted.image_size  # the working size the sites fitted at
    sites = [Site(f"site-{i}", load_site_data(SiteDataSpec(args.data, i, args.sites, args.partition, split_seed,
                                                                 holdout_fraction, image_size)),
                  args.sites_dir / f"site-{i}") for i in range(args.sites)]
    link = LeverLink(sites)
    site_ids = [site.site_id for site in sites]
    fitted_dirs = fit_models_dirs(parser, args.sites_dir, args.fit_run, site_ids)
    # which teachers label the variants' samples: a refitted folder's (teacher_refit.py) differ from the fit's
    teacher_resolutions = {sid: teacher.config.input_resolution
                           for sid, teacher in fit_teachers(parser, fitted_dirs).items()}
    first = next(iter(reports.values()))
    fit = FitResult(args.fit_run, reports, {}, first.class_names, first.image_shape, 0.0)
    test = fit_test_split(parser, args.data, split_seed, image_size)
    # every variant starts from the fit run's own settings (a profile's overrides included) where the file holds them,
    # then --base, then its own; what the fit fixed it cannot change
    # (the settings the file holds, and those it predates, as fit_run_config read them)
    held = set(dashed(carried)) | (set(dashed(FIT_SETTINGS_ADDED_LATER)) if carried else set())
    fit_flat = {key: value for key, value in fitted.to_flat().items() if key in held}
    fixed = [key for key in FIT_SETTINGS if key.replace("_", "-") in fit_flat]  # what the file says the fit fixed
    plans = []
    for spec in args.variant:
        name, _, changes = spec.partition(":")
        for seed in seeds:
            asked = _pairs(args.base) | _pairs(changes)
            split = [key for key in ("data", "sites", "partition", "holdout-fraction", "seed", "run-id") if key in asked]
            if split:
                parser.error(f"variant {name} sets {', '.join(split)}: the sites' data is the fit's and the seeds are "
                             "--seeds (--data, --sites, --partition, --holdout-fraction, --seeds)")
            flat = {**fit_flat, "data": args.data, "partition": args.partition, "seed": seed, "out": str(args.out),
                    "run-id": f"{name}-s{seed}", "audit-max-auc": 1, "audit-max-tpr": 1, "audit-max-distance-auc": 1, "audit-max-generator-auc": 1,
                    "audit-min-utility": 0, "audit-min-adjusted-balanced-accuracy": 0, **asked}
            try:
                config = RunConfig.from_flat(flat)
            except ConfigError as exc:
                parser.error(f"variant {name}: {exc}")
            changed = [key for key in fixed if getattr(config, key) != getattr(fitted, key)]
            if changed:
                parser.error(f"variant {name} changes {', '.join(k.replace('_', '-') for k in changed)}, which the fit fixed: fit the sites again to measure that")
            if "classifier_hflip" in fit_config and str(config.classifier_hflip).lower() != str(fit_config["classifier_hflip"]).lower():
                print(f"note: variant {name}'s student trains with classifier-hflip {config.classifier_hflip}; "
                      f"the fit's teachers trained with {fit_config.get('classifier_hflip')}", file=sys.stderr)
            used = [site.site_id for site in sites if any(site.gate.count_sent(config.run_id, kind) for kind in ("shard", "labels"))]
            if used:  # a site labels one set per run, and draws other images for a run id it has sent shards in
                parser.error(f"run id {config.run_id} is in the ledgers of {', '.join(used)} already (an earlier lever study "
                             "on these sites): give the variant another name")
            plans.append((name, seed, config, flat))
    if len({config.run_id for _, _, config, _ in plans}) != len(plans):
        parser.error("two variants share a name: every run needs its own run id")
    results = []
    for name, seed, config, flat in plans:
        # the fit run's guidance, DDIM eta and teacher guidance where its file holds its settings, else the
        # site's own (None), unless the variant or --base sets them
        guidance = config.generator_guidance if "generator-guidance" in flat else None
        eta = config.generator_eta if "generator-eta" in flat else None
        teacher_guidance = config.generator_teacher_guidance if "generator-teacher-guidance" in flat else None
        link.seed, link.sampling = seed, (guidance, eta, teacher_guidance)
        for site in sites:  # every variant runs the stages after fit on the one fit
            site.reuse_fit(fitted_dirs[site.site_id], config.run_id, guidance, eta, teacher_guidance)
        started = time.perf_counter()
        outcome = Coordinator(config, test).run(link, fit=fit)
        m, record = outcome.metrics, outcome.record
        pool = record.pool.arrays()
        naive = build_classifier(record.student.config, seed)
        train_classifier(naive, pool.images, one_hot(pool.hard_labels, test.num_classes),
                         StudentProtocol(epochs=config.student_epochs).train_config(seed, soft=False))
        row = {"variant": name, "seed": seed, "guidance": guidance, "teacher_guidance": teacher_guidance, "accuracy": m["student_test_accuracy"], "pool": m["pool_size"],
               "ipc": config.ipc, "student_ipc": config.student_ipc, "student_epochs": config.student_epochs, "relabelled_by": m["relabelled_by"],
               "drawn_class_weight": config.drawn_class_weight, "classifier_hflip": config.classifier_hflip,
               "relabel_combine": config.relabel_combine,
               "student_input_resolution": record.student.config.input_resolution,
               "teacher_input_resolutions": teacher_resolutions,
               "naive_pooling": accuracy(naive, test.images, test.labels),
               "seconds": round(time.perf_counter() - started, 1), "quality": m["synthesis_quality"],
               "stages": m["stage_seconds"]}
        results.append(row)
        print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "levers.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
