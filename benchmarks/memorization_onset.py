"""When does a small site's generator start to memorize, and could a share of its members kept out see it first?

For each site of a profile (seeded split, `holdout-fraction` as given), a share of the members is
kept out of the generator's training (per class, seeded: the *monitor* images), and one generator
per listed step budget trains on the rest without DP (each its own run of that many steps, as a
site with that budget would train it). For each budget this prints one JSON line with:

- `audit_auc`, `audit_ci`: the audit's own white-box attack (`fedkr.shared.generator_attack`,
  cross-fitted, the statistics of `measure_attack`) on the generator's training images against
  the site's holdout: what the release gate would see at that step (refused above 0.60);
- `raw_auc`, `raw_p`: a monitor's view, an equal-sized sample of the training images against the
  monitor images, each image's denoising error standardised by the monitor images' and averaged
  over timesteps; one-sided Mann-Whitney p-value (scipy);
- `cal_auc`, `cal_p`: the same, each image's error calibrated by its own error under the first
  listed budget's generator (log ratio; difficulty calibration, Watson et al. 2022).

    python benchmarks/memorization_onset.py --seed 0 --sites 3 --monitor 0.25 --steps 10,25,50,100,150

Used to decide whether a stop rule on the site's own members can keep the generator below the gate
(docs/audit.md, "Small sites: what protects them").
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
from scipy.stats import mannwhitneyu

from fedkr.bench import load_bench_sites
from fedkr.shared.attack_report import measure_attack
from fedkr.shared.config import PROFILES
from fedkr.shared.generator import ClassConditionalDiffusion
from fedkr.shared.generator_attack import cross_fitted_scores, denoising_errors
from fedkr.shared.mia import roc_auc


def monitor_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(trained, monitor) indices: `fraction` of each class (rounded down, at least one image left to train on)."""
    rng = np.random.default_rng(seed)
    held = [rng.permutation(np.flatnonzero(labels == c))[: min(int(fraction * (labels == c).sum()), (labels == c).sum() - 1)]
            for c in np.unique(labels)]
    monitor = np.sort(np.concatenate(held)).astype(np.int64)
    return np.setdiff1d(np.arange(len(labels)), monitor), monitor


class Trace:
    """The figures above for one site, one generator (one step budget) at a time."""

    def __init__(self, steps, site, members, holdout, fraction, seed) -> None:  # type: ignore[no-untyped-def]
        self.steps, self.site, self.members, self.holdout, self.seed = tuple(steps), site, members, holdout, seed
        self.trained, self.monitor = monitor_split(members.labels, fraction, seed)
        rng = np.random.default_rng(seed)
        self.sample = self.trained[np.sort(rng.choice(len(self.trained), len(self.monitor), replace=False))]
        self.first: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, generator: ClassConditionalDiffusion, step: int) -> None:
        m, h = self.members, self.holdout
        scores = cross_fitted_scores(denoising_errors(generator, m.images[self.trained], m.labels[self.trained], seed=0),
                                     denoising_errors(generator, h.images, h.labels, seed=1), seed=0)
        audit = measure_attack("generator_loss", "generator", scores.members, scores.holdout, m.labels[self.trained],
                               h.labels, m.class_names, seed=0)
        e_s = denoising_errors(generator, m.images[self.sample], m.labels[self.sample], repeats=4, seed=0)
        e_m = denoising_errors(generator, m.images[self.monitor], m.labels[self.monitor], repeats=4, seed=1)
        center, scale = e_m.mean(0), np.maximum(e_m.std(0), 1e-12)
        raw_s, raw_m = -((e_s - center) / scale).mean(1), -((e_m - center) / scale).mean(1)
        if self.first is None:
            self.first = (np.log(e_s), np.log(e_m))
        cal_s, cal_m = (self.first[0] - np.log(e_s)).mean(1), (self.first[1] - np.log(e_m)).mean(1)
        cal_p = 1.0 if step == self.steps[0] else float(mannwhitneyu(cal_s, cal_m, alternative="greater").pvalue)
        print(json.dumps({
            "seed": self.seed, "site": self.site, "step": step,
            "n": [len(self.trained), len(self.monitor), len(h)],
            "audit_auc": round(audit.auc, 3), "audit_ci": [round(x, 3) for x in audit.auc_ci],
            "raw_auc": round(roc_auc(raw_s, raw_m), 3),
            "raw_p": round(float(mannwhitneyu(raw_s, raw_m, alternative="greater").pvalue), 4),
            "cal_auc": round(roc_auc(cal_s, cal_m), 3), "cal_p": round(cal_p, 4),
        }), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="demo", choices=sorted(PROFILES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--holdout-fraction", type=float, default=0.5)
    parser.add_argument("--monitor", type=float, default=0.25, help="share of each class's members kept out [default: 0.25]")
    parser.add_argument("--steps", default="10,25,50,100,150", help="step budgets [default: 10,25,50,100,150]")
    args = parser.parse_args()
    if not 0 < args.monitor < 1:
        parser.error("--monitor must be in (0, 1)")
    steps = [int(s) for s in args.steps.split(",")]
    config = PROFILES[args.profile].run_config(run_id="onset", seed=args.seed, sites=args.sites, dp_epsilon=0.0,
                                                holdout_fraction=args.holdout_fraction)
    sites, _ = load_bench_sites(config)
    for i, data in enumerate(sites):
        trace = Trace(steps, i, data.members, data.holdout, args.monitor, args.seed)
        for budget in steps:
            settings = replace(config.generator_config(), train_steps=budget)
            generator = ClassConditionalDiffusion(settings, data.members.num_classes, data.members.image_shape)
            generator.train(data.members.images[trace.trained], data.members.labels[trace.trained])
            trace(generator, budget)


if __name__ == "__main__":
    main()
