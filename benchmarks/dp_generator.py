"""What one site's private generator teaches, per generator setting: the screen before a full DP run.

For one bench site (the seeded split a simulation makes), each variant trains the site's
generator under DP-SGD at the generator's part of the site's epsilon (`split_budget`: half of
`--epsilon`, or all of it under a profile whose `dp-models` is "generator"; the site's delta), draws `--per-class` fresh images of every class the site
holds, and scores them with a *judge*: a teacher trained on the same members without DP, once per
site (cached under OUT), so that the figures describe the generator and not a private teacher's
errors. One JSON line per variant and seed:

- `judge_agreement`: share of samples the judge puts in the class they were drawn for, with the
  lowest per-class share (`judge_agreement_min_class`);
- `precision`, `recall`: the samples against the members in the judge's feature space (k-NN
  manifolds, Kynkaanniemi et al. 2019; `fedkr.shared.synthesis_quality`);
- `synthetic_student_accuracy`: a compact CNN trained only on the samples, labelled with the class
  they were drawn for, scored on the site's holdout (what the samples teach by themselves), next to
  the judge's own holdout accuracy; `synthetic_student_balanced_accuracy` the same CNN's mean
  per-class recall over the holdout's classes (scikit-learn's `balanced_accuracy_score`: a site's
  holdout is as skewed as its members, and the CNN learns from equal numbers per class);
- the run's noise multiplier, steps, epsilon spent and seconds.

Each generator is scored once per DDIM eta in `--etas` (sampling only: no privacy cost; default:
the generator's own `sample_eta`).

`--saved DIR` scores generators a run saved (a site's `runs/RUN/generator`) instead of training,
and `--judge RUN_DIR` takes a site's saved teacher as the judge (a run without DP on the same
split: the same members).

A variant is `NAME:key=value,...` over `GeneratorConfig` fields (`train_steps`, `batch_size`, `lr`,
`noise_multiplicity`, `block_channels=32/64/64`, ...) and `max_grad_norm`; `--epsilon 0` trains
without DP. The profile's generator settings are the base.

    python benchmarks/dp_generator.py --data ../shared/data/medmnist/bloodmnist.npz --site 1 \\
        --variant base: --variant k4:noise_multiplicity=4,train_steps=375 --out dp-generator

JSON lines also go to OUT/dp_generator.jsonl; training progress (step, loss, seconds) goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.metrics import balanced_accuracy_score

from fedkr.bench import load_bench_sites
from fedkr.client.site import load_teacher, split_budget
from fedkr.shared.classifier import (
    ClassifierConfig,
    TrainConfig,
    accuracy,
    build_classifier,
    embed_and_logits,
    one_hot,
    predict_logits,
    train_classifier,
)
from fedkr.shared.config import PROFILES
from fedkr.shared.device import DeviceError, resolve_device
from fedkr.shared.dp import DPConfig
from fedkr.shared.generator import ClassConditionalDiffusion, GeneratorConfig
from fedkr.shared.generator_kinds import SiteGenerator, load_generator
from fedkr.shared.synthesis_quality import precision_recall

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jsonl import emit  # noqa: E402  (sibling scripts, not a package)

_GENERATOR_FIELDS = {f.name for f in fields(GeneratorConfig)}
#: Settings the screen's own options set: a variant may not.
_SET_BY_OPTIONS = {"seed": "--seeds", "sample_eta": "--etas"}


def _value(base: GeneratorConfig, key: str, text: str) -> object:
    if key == "block_channels":
        return tuple(int(c) for c in text.split("/"))
    kind = type(getattr(base, key))
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{key} takes true or false, got {text!r}")
        return text.lower() in ("true", "1")
    return kind(text)


def variant(base: GeneratorConfig, max_grad_norm: float, changes: str) -> tuple[GeneratorConfig, float]:
    """`base` and `max_grad_norm` with `changes` ("key=value,...") applied. Raises SystemExit with a
    one-line reason for an unknown key, a key the screen's options set, or a value out of range."""
    updates: dict[str, object] = {}
    try:
        for pair in filter(None, changes.split(",")):
            key, _, value = (s.strip() for s in pair.partition("="))
            if key in _SET_BY_OPTIONS:
                raise ValueError(f"{key} is set by {_SET_BY_OPTIONS[key]}, not by a variant")
            if key == "max_grad_norm":
                max_grad_norm = float(value)
            elif key in _GENERATOR_FIELDS:
                updates[key] = _value(base, key, value)
            else:
                raise ValueError(f"unknown setting {key!r}: use a GeneratorConfig field or max_grad_norm")
        return replace(base, **updates), max_grad_norm
    except ValueError as error:
        raise SystemExit(f"variant {changes!r}: {error}") from None


def bench_site(config, index: int):  # type: ignore[no-untyped-def]
    """Bench site `index` of `config`'s split (`load_bench_sites`: its members and holdout), or a one-line
    exit for an index outside the run's sites."""
    sites, _ = load_bench_sites(config)
    if not 0 <= index < len(sites):
        raise SystemExit(f"--site must be in [0, {len(sites)}), got {index}")
    return sites[index]


def saved_judge(run_dir: Path, site):  # type: ignore[no-untyped-def]
    """A site's saved teacher (`load_teacher`) as the judge: refused, in one line, where the folder holds
    none, where it was trained with DP (a `dp.json` beside it), or where it does not fit the site's images."""
    if not (run_dir / "teacher.safetensors").is_file():
        raise SystemExit(f"{run_dir}: no teacher.safetensors (a run that reused another's fit holds only a pointer)")
    if (run_dir / "dp.json").is_file():
        raise SystemExit(f"{run_dir}: this teacher trained with DP; the judge must be one trained without it")
    judge = load_teacher(run_dir)
    c = judge.config
    if (c.height, c.width, c.in_channels, c.num_classes) != (*site.members.image_shape, site.members.num_classes):
        raise SystemExit(f"{run_dir}: a teacher for {c.height}x{c.width}x{c.in_channels} images of {c.num_classes} "
                         f"classes, not this site's")
    return judge


def judge_for(site, path: Path, protocol: TrainConfig):  # type: ignore[no-untyped-def]
    """The site's non-private judge teacher, trained once and kept at `path` (safetensors)."""
    m = site.members
    h, w, c = m.images.shape[1:]
    judge = build_classifier(ClassifierConfig(c, h, w, m.num_classes), protocol.seed)
    if path.exists():
        judge.load_state_dict(load_file(path))
    else:
        train_classifier(judge, m.images, one_hot(m.labels, m.num_classes), protocol)
        save_file(judge.state_dict(), path)
    return judge.eval()


def judge_and_row(args, config, site):  # type: ignore[no-untyped-def]
    """The judge (`--judge`'s saved teacher, else one trained and cached under `--out`) and the row
    fields every screen line carries: data, site, members, holdout, the judge's holdout accuracy."""
    args.out.mkdir(parents=True, exist_ok=True)
    if args.judge is not None:
        judge = saved_judge(args.judge, site)
    else:
        judge = judge_for(site, args.out / f"judge-{Path(args.data).stem}-{args.profile}-site{args.site}-s{config.seed}.safetensors",
                          config.teacher_config())
    return judge, {"data": Path(args.data).name, "site": args.site, "members": len(site.members), "holdout": len(site.holdout),
                   "judge_holdout_accuracy": round(accuracy(judge, site.holdout.images, site.holdout.labels), 4)}


def asked_classes(site, per_class: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """int64 (classes held x `per_class`,): every class the site's members hold, `per_class` times each, in order."""
    m = site.members
    return np.repeat(np.flatnonzero(np.bincount(m.labels, minlength=m.num_classes) > 0), per_class)


def score(generator: SiteGenerator, site, judge, per_class: int, seed: int,  # type: ignore[no-untyped-def]
          student_protocol: TrainConfig, eta: float, device: torch.device) -> dict:
    asked = asked_classes(site, per_class)
    return score_images(generator.sample(asked, seed=seed, eta=eta, device=device), asked, site, judge, seed,
                        student_protocol, device)


def score_images(images: np.ndarray, asked: np.ndarray, site, judge, seed: int,  # type: ignore[no-untyped-def]
                 student_protocol: TrainConfig, device: torch.device) -> dict:
    """The screen's figures for uint8 (N, H, W, C) `images` drawn for the classes `asked` (int (N,))."""
    m = site.members
    classes = np.unique(asked)
    features, logits = embed_and_logits(judge, images)
    agree = logits.argmax(1) == asked
    member_features, _ = embed_and_logits(judge, m.images)
    pr = precision_recall(member_features, features)
    h, w, c = images.shape[1:]
    student = build_classifier(ClassifierConfig(c, h, w, m.num_classes), seed)
    train_classifier(student, images, one_hot(asked, m.num_classes), student_protocol, device=device)
    predicted = predict_logits(student, site.holdout.images).argmax(1)
    return {
        "judge_agreement": round(float(agree.mean()), 4),
        "judge_agreement_min_class": round(float(min(agree[asked == k].mean() for k in classes)), 4),
        "precision": round(float(pr.precision), 4), "recall": round(float(pr.recall), 4),
        "synthetic_student_accuracy": round(float((predicted == site.holdout.labels).mean()), 4),
        "synthetic_student_balanced_accuracy": round(float(balanced_accuracy_score(site.holdout.labels, predicted)), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="dataset file (.npz) or name, as for fedkr simulate")
    parser.add_argument("--profile", default="full", choices=sorted(PROFILES))
    parser.add_argument("--site", type=int, default=1, help="which bench site [default: 1]")
    parser.add_argument("--epsilon", type=float, default=None,
                        help="the site's whole epsilon; the generator gets its split_budget part; 0: no DP [default: 8]")
    parser.add_argument("--per-class", type=int, default=100, help="samples drawn per class [default: 100]")
    parser.add_argument("--seeds", default=None, help="comma-separated generator seeds [default: 0]")
    parser.add_argument("--etas", default=None,
                        help="comma-separated DDIM eta to sample each generator at [default: the generator's own]")
    parser.add_argument("--variant", action="append", default=None, help="NAME:key=value,... (repeatable) [default: base:]")
    parser.add_argument("--device", default="cpu", help="where to train and sample (cpu, cuda, auto) [default: cpu]")
    parser.add_argument("--saved", type=Path, action="append", default=None,
                        help="score this saved generator folder (a site's runs/RUN/generator) instead of training; repeatable")
    parser.add_argument("--judge", type=Path, default=None,
                        help="a site's run folder whose teacher.safetensors judges (default: a judge trained here)")
    parser.add_argument("--out", type=Path, default=Path("dp-generator"))
    args = parser.parse_args()
    try:
        device = resolve_device(args.device)
    except DeviceError as error:
        raise SystemExit(str(error)) from None
    config = replace(PROFILES[args.profile].run_config(run_id="dp-generator"), data=args.data)
    if args.saved and (args.variant or args.seeds or args.epsilon is not None):
        raise SystemExit("--saved scores generators as they were trained: --variant, --seeds and --epsilon do not apply")
    args.epsilon = 8.0 if args.epsilon is None else args.epsilon
    seeds = [int(s) for s in (args.seeds or "0").split(",")]
    etas = None if args.etas is None else [float(e) for e in args.etas.split(",")]
    if etas is not None and not all(0.0 <= e <= 1.0 for e in etas):
        raise SystemExit(f"--etas must lie in [0, 1], got {args.etas}")
    specs = args.variant or ["base:"]
    if any(":" not in spec for spec in specs):
        raise SystemExit("each --variant is NAME:key=value,... (NAME: alone for the profile's settings)")
    variants = [(name, changes, variant(config.generator_config(), config.dp_max_grad_norm, changes))
                for name, _, changes in (spec.partition(":") for spec in specs)]
    site = bench_site(config, args.site)
    judge, common = judge_and_row(args, config, site)
    with (args.out / "dp_generator.jsonl").open("a") as sink:
        for row, generator in generators(args, config, site, variants, seeds, device):
            settings = {**generator.config.to_dict(), **row.pop("settings", {})}
            for eta in etas or [generator.config.sample_eta]:
                emit({**row, "eta": eta, **common,
                      **score(generator, site, judge, args.per_class, generator.config.seed, config.student_config(), eta, device),
                      "settings": settings}, sink)


def generators(args, config, site, variants, seeds, device):  # type: ignore[no-untyped-def]
    """(row figures, generator) for every saved generator (`--saved`), or every variant and seed trained here."""
    for directory in args.saved or []:
        generator = load_generator(directory)  # either kind: a run's DP-MERF generators score as its diffusion ones
        if generator.num_classes != site.members.num_classes or generator.image_shape != site.members.image_shape:
            raise SystemExit(f"{directory}: a generator of {generator.num_classes} classes and images "
                             f"{generator.image_shape}, not this site's {site.members.num_classes} and "
                             f"{site.members.image_shape}")
        report = generator.dp_report
        yield {"variant": f"saved:{directory}", "seed": generator.config.seed,
               "epsilon_generator": None, **_spent(report, generator.trained_steps),
               "generator_seconds": round(generator.train_seconds, 1),
               "settings": {} if report is None else {"max_grad_norm": report.max_grad_norm}}, generator
    if args.saved:
        return
    budget = None  # the generator's part of the site's budget, split as a site splits it (the profile's dp-models)
    if args.epsilon != 0:
        site_budget = config.dp_config() or DPConfig(args.epsilon, None, config.dp_max_grad_norm)
        budget = split_budget(replace(site_budget, target_epsilon=args.epsilon), len(site.members))[1]
    for name, changes, (gen_config, max_grad_norm) in variants:
        for seed in seeds:
            dp = None if budget is None else replace(budget, max_grad_norm=max_grad_norm)
            generator = ClassConditionalDiffusion(replace(gen_config, seed=seed), site.members.num_classes,
                                                  site.members.images.shape[1:])
            started = time.perf_counter()
            generator.train(site.members.images, site.members.labels, dp=dp, device=device,
                            on_progress=_progress(f"{name} seed {seed}", started))
            yield {"variant": name, "changes": changes, "seed": seed,
                   "epsilon_generator": None if dp is None else dp.target_epsilon,
                   **_spent(generator.dp_report, generator.trained_steps),
                   "generator_seconds": round(time.perf_counter() - started, 1),
                   "settings": {"max_grad_norm": max_grad_norm}}, generator


def _progress(label: str, started: float):  # type: ignore[no-untyped-def]
    """An `on_progress` callback that prints the step, the loss and the seconds so far to stderr."""
    def report(step: int, total: int, loss: float) -> None:
        print(f"{label}: step {step}/{total}, loss {loss:.4f}, {time.perf_counter() - started:.0f} s",
              file=sys.stderr, flush=True)
    return report


def _spent(report, steps: int) -> dict:  # type: ignore[no-untyped-def]
    return {"noise_multiplier": None if report is None else round(report.noise_multiplier, 3),
            "steps": steps if report is None else report.steps,
            "epsilon_spent": None if report is None else round(report.epsilon, 3)}


if __name__ == "__main__":
    main()
