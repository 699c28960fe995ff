"""The white-box generator attack on every site of a run: each site's generator scored by its own loss, members against holdout.

Either reads a finished run (its sites' generators as fitted, their members and holdout as split),
or, with `--data`, fits every site's generator as a run of that profile would and attacks it. Prints
one JSON line per site: the attack's AUC with its 95% interval, TPR at 1% and 0.1% FPR with
intervals, the holdout-split control's AUC and, for a diffusion generator, the noise level each half
chose (`fedkr.shared.generator_attack`); a DP-MERF generator (`generator-kind dp-merf`) is scored by
its mean-embedding loss (`MeanEmbeddingGenerator.embedding_losses`), as the audit scores it.

    python benchmarks/generator_attack.py --run RUN_DIR [--sites-dir DIR]
    python benchmarks/generator_attack.py --data ../shared/data/medmnist/bloodmnist.npz --profile full

RUN_DIR is a finished run's folder written by `fedkr simulate` (or the demo), or its release/ folder:
its metrics (release/metrics.json, or refusal.json when refused) name the settings and the fit; the
sites' state is in `sites/` beside the run folders unless `--sites-dir` says (`run_folder.py`).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from fedkr.bench import load_bench_sites
from fedkr.client.site_data import SiteData
from fedkr.shared.attack_report import measure_attack
from fedkr.shared.config import PROFILES
from fedkr.shared.device import resolve_device
from fedkr.shared.generator_kinds import SiteGenerator, build_generator, load_generator
from fedkr.shared.mean_embedding import MeanEmbeddingGenerator
from fedkr.shared.generator_attack import DEFAULT_REPEATS, cross_fitted_scores, denoising_errors
from run_folder import run_config, run_metrics, site_data, sites_folder


def from_run(run_dir: Path, sites_dir: Path | None) -> Iterator[tuple[str, SiteData, SiteGenerator]]:
    metrics = run_metrics(run_dir)
    config = run_config(metrics)
    sites_dir = sites_dir or sites_folder(run_dir)
    for i, sid in enumerate(sorted(metrics["sites"])):
        yield sid, site_data(config, i), load_generator(sites_dir / sid / "runs" / metrics["fit_run_id"] / "generator")


def fitted(data: str, profile: str) -> Iterator[tuple[str, SiteData, SiteGenerator]]:
    config = PROFILES[profile].run_config(data=data, run_id="generator-attack")
    sites, _ = load_bench_sites(config)
    for i, site in enumerate(sites):
        generator = build_generator(config.generator_config(), site.members.num_classes, site.members.image_shape)
        generator.train(site.members.images, site.members.labels, device=resolve_device(config.device))
        yield f"site-{i}", site, generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="a finished run's folder")
    source.add_argument("--data", help="fit every site's generator on this dataset first")
    parser.add_argument("--profile", default="full", choices=sorted(PROFILES), help="with --data [default: full]")
    parser.add_argument("--sites-dir", type=Path, default=None, help="with --run: the sites' state [default: RUN_DIR/../sites]")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    sites = from_run(args.run.resolve(), args.sites_dir) if args.run else fitted(args.data, args.profile)
    started = time.perf_counter()
    for sid, data, generator in sites:
        fit_seconds = time.perf_counter() - started
        members, holdout = data.members, data.holdout
        if isinstance(generator, MeanEmbeddingGenerator):
            m_scores, h_scores = -generator.embedding_losses(members.images, members.labels), \
                -generator.embedding_losses(holdout.images, holdout.labels)
            chosen = None
        else:
            m_err = denoising_errors(generator, members.images, members.labels, repeats=args.repeats, seed=0)
            h_err = denoising_errors(generator, holdout.images, holdout.labels, repeats=args.repeats, seed=1)
            scores = cross_fitted_scores(m_err, h_err)
            m_scores, h_scores, chosen = scores.members, scores.holdout, scores.chosen
        result = measure_attack("generator_loss", "generator", m_scores, h_scores, members.labels,
                                holdout.labels, members.class_names)
        print(json.dumps({
            "site": sid, "members": len(members), "holdout": len(holdout), "generator_steps": generator.trained_steps,
            "auc": round(result.auc, 3), "auc_ci": [round(v, 3) for v in result.auc_ci],
            "tpr_at_1pct_fpr": round(result.tpr_at_1pct_fpr, 3),
            "tpr_at_1pct_fpr_ci": [round(v, 3) for v in result.tpr_at_1pct_fpr_ci],
            "tpr_at_01pct_fpr": round(result.tpr_at_01pct_fpr, 3),
            "control_auc": None if result.control is None else round(result.control["auc"], 3),
            "generator_kind": generator.config.kind, "chosen": chosen, "fit_seconds": round(fit_seconds, 1),
            "attack_seconds": round(time.perf_counter() - started - fit_seconds, 1),
        }), flush=True)
        started = time.perf_counter()


if __name__ == "__main__":
    main()
