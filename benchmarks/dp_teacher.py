"""Screen DP-SGD settings for a site's teacher: holdout accuracy at a fixed epsilon, one site, one setting at a time.

With the non-private protocol (AdamW at 2e-3, one-cycle, batch 64, 30 epochs of at least 600
steps in all) under DP-SGD, BloodMNIST at epsilon 8 per site (4 for the teacher) took the teachers
from 0.89-0.97 to 0.67-0.81 holdout accuracy and site-1 to its majority class. A private teacher
steps with SGD with momentum at `shared.classifier.private_learning_rate` instead. This
script trains one site's teacher, as the bench splits it, under each variant and reports what a
site would see: holdout accuracy, balanced accuracy, the share of the holdout predicted as the most
predicted class (1.0 is a collapse), the test split's accuracy and balanced accuracy, the noise
multiplier, the learning rate used and the seconds. `--test-probabilities` keeps the last variant's
test probabilities for `teacher_ensemble.py` (the sites' teachers combined as the coordinator does).

    python benchmarks/dp_teacher.py --data ../shared/data/medmnist/bloodmnist.npz --site 1 \
        --epsilon 4 --variant 64,2e-3,30
    python benchmarks/dp_teacher.py --data ../shared/data/medmnist/bloodmnist.npz --site 1 \
        --epsilon 4 --min-steps 1 --optimizer sgd --variant 256,2.0,30

`--epsilon` is the teacher's own budget: the site asks for twice it with both models private, and
`client.site.split_budget` gives the teacher half of epsilon and of delta (1/(20 N)); the profile's
`dp_delta` and `dp_models` are not read. Epsilon 0 trains without DP. A variant is
"batch,lr,epochs" (`TrainConfig`, the profile's teacher otherwise); `TrainConfig.min_steps` (600)
adds passes per epoch to small sets, so pass `--min-steps 1` for variants whose epochs should be
single passes.

`--optimizer` says what a private run steps with (`shared.classifier.PrivateOptimizer`): "product"
(the default) is what a site does, and its learning rate comes from the noise (the variant's lr is
used only without DP); "sgd" and "adamw" replace it, for screening, with SGD with momentum or
AdamW at the variant's lr (AdamW at 2e-3 is the non-private protocol). Under DP-SGD's noise
Adam's second moment is dominated by the noise variance (sigma C / B)^2, so Adam at lr steps like
SGD at about lr B / (sigma C) (Tang et al. 2023, DP-AdamBC, arXiv 2312.14334). The loop's one-cycle
schedule cycles SGD's momentum between 0.85 and 0.95, as it cycles AdamW's beta1. The lr printed
for a private run is the peak the run used (for "product", from its noise multiplier and expected
Poisson batch).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace


from fedkr.bench import load_bench_sites
from fedkr.client.site import split_budget
from fedkr.shared.classifier import (
    ClassifierConfig, PrivateOptimizer, build_classifier, one_hot, predict_logits, probabilities, train_classifier,
)
from fedkr.shared.config import PROFILES
from fedkr.shared.dp import DPConfig
from teacher_ensemble import holdout_scores, save_test_probabilities, scores


def parse_variant(text: str) -> tuple[int, float, int]:
    try:
        batch, lr, epochs = text.split(",")
        variant = int(batch), float(lr), int(epochs)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"a variant is batch,lr,epochs (e.g. 256,2e-3,30), got {text!r}") from error
    if variant[0] < 1 or not variant[1] > 0 or variant[2] < 1:
        raise argparse.ArgumentTypeError(f"a variant needs batch >= 1, lr > 0 and epochs >= 1, got {text!r}")
    return variant


def private_optimizer(name: str, lr: float, weight_decay: float) -> PrivateOptimizer:
    """What a private run steps with: "product" is a site's, "sgd" SGD with momentum at `lr`, "adamw" AdamW at `lr`."""
    if name == "product":
        return PrivateOptimizer()
    if name == "sgd":
        return PrivateOptimizer("sgd", lr=lr)
    return PrivateOptimizer("adamw", lr=lr, weight_decay=weight_decay)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--profile", default="full", choices=sorted(PROFILES))
    parser.add_argument("--site", type=int, default=1)
    parser.add_argument("--epsilon", type=float, default=4.0, help="the teacher's epsilon (0: no DP) [default: 4]")
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--min-steps", type=int, default=None, help="TrainConfig.min_steps [default: the protocol's]")
    parser.add_argument("--channels", type=int, default=None, help="the teacher's width [default: ClassifierConfig's]")
    parser.add_argument("--no-augment", action="store_true", help="train without random shifts")
    parser.add_argument("--optimizer", choices=("product", "sgd", "adamw"), default="product",
                        help="a private run's optimizer: the product's, or SGD/AdamW at the variant's lr [default: product]")
    parser.add_argument("--test-probabilities", metavar="FILE.npz", default=None,
                        help="write the last variant's test-split probabilities for teacher_ensemble.py")
    parser.add_argument("--variant", type=parse_variant, action="append", required=True, help="batch,lr,epochs")
    args = parser.parse_args()
    if args.epsilon < 0:
        parser.error("--epsilon must be >= 0 (0 trains without DP)")
    if args.epsilon == 0 and args.optimizer != "product":
        parser.error("--optimizer sgd|adamw screens private runs; without DP (--epsilon 0) the teacher uses AdamW at the variant's lr")
    if args.channels is not None and args.channels < 1:
        parser.error("--channels must be at least 1")
    config = PROFILES[args.profile].run_config(data=args.data, run_id="dp-teacher")
    sites, test = load_bench_sites(config)
    if not 0 <= args.site < len(sites):
        parser.error(f"--site must be between 0 and {len(sites) - 1}")
    members, holdout = sites[args.site].members, sites[args.site].holdout
    budget = None
    if args.epsilon > 0:
        site_budget = DPConfig(2 * args.epsilon, max_grad_norm=args.max_grad_norm)
        budget, _ = split_budget(site_budget, len(members))
    h, w, c = members.image_shape
    for batch, lr, epochs in args.variant:
        protocol = replace(config.teacher_config(), batch_size=batch, lr=lr, epochs=epochs)
        if args.min_steps is not None:
            protocol = replace(protocol, min_steps=args.min_steps)
        if args.no_augment:
            protocol = replace(protocol, augment=False)
        channels = args.channels if args.channels is not None else ClassifierConfig(c, h, w, members.num_classes).channels
        model = build_classifier(ClassifierConfig(c, h, w, members.num_classes, channels), protocol.seed)
        started = time.perf_counter()
        optimizer = private_optimizer(args.optimizer, lr, protocol.weight_decay)
        train_classifier(model, members.images, one_hot(members.labels, members.num_classes), protocol, dp=budget,
                         private_optimizer=optimizer)
        seconds = time.perf_counter() - started
        predicted = predict_logits(model, holdout.images).argmax(1)
        test_probabilities = probabilities(predict_logits(model, test.images))
        if args.test_probabilities:
            save_test_probabilities(args.test_probabilities, test_probabilities, test.labels, members.class_counts())
        report = model.dp_report
        if report is not None:
            lr = report.learning_rate  # the peak the private run derived (or was given)
        print(json.dumps({
            "site": args.site, "members": len(members), "holdout": len(holdout), "epsilon_teacher": args.epsilon,
            "batch": batch, "lr": float(f"{lr:.4g}"), "epochs": epochs, "min_steps": protocol.min_steps,
            "max_grad_norm": args.max_grad_norm, "channels": channels, "augment": protocol.augment, "optimizer": args.optimizer,
            **holdout_scores(holdout.labels, predicted),
            **scores(test.labels, test_probabilities),
            "noise_multiplier": None if report is None else round(report.noise_multiplier, 3),
            "steps": None if report is None else report.steps,
            "epsilon_spent": None if report is None else round(report.epsilon, 3),
            "seconds": round(seconds, 1),
        }), flush=True)


if __name__ == "__main__":
    main()
