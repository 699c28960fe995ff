"""Screen a private teacher on fixed scattering features: ScatterNet + linear under DP-SGD, one site at a time.

Tramer & Boneh (2021, "Differentially Private Learning Needs Better Features (or Much More
Data)", arXiv 2011.11660) found that under DP-SGD a linear model on fixed ScatterNet features
(Oyallon & Mallat's scattering transform, no training and no data) beats end-to-end CNNs at
small epsilon: fewer parameters share the same noise. BloodMNIST's private CNN teachers at
epsilon 4 (the teacher's half of 8) fall to balanced accuracy 0.25-0.28 at the small, skewed
sites 1 and 2 (`dp_teacher.py`); this script asks whether their recipe does better, as the bench
splits the sites:

- features: kymatio's `Scattering2D` (J=2, L=8: 81 maps per colour channel at a quarter of the
  resolution) on images scaled to [-1, 1], computed once;
- model: GroupNorm over the maps without affine weights (data-independent normalisation), then
  one linear layer (`--head linear`) or their small CNN (`--head cnn`);
- DP-SGD through `fedkr.shared.dp.make_private_training`, the product's own: Poisson batches,
  per-example clipping at `--max-grad-norm`, noise for `epochs x ceil(N / batch)` steps at the
  teacher's half of the site's epsilon and delta (`client.site.split_budget`); SGD with momentum
  0.9 at a constant learning rate, as in the paper.

It prints one JSON row per variant with the fields of `dp_teacher.py` (holdout accuracy, balanced
accuracy, the share of the holdout given the most predicted class, the test split's accuracy and
balanced accuracy, the noise multiplier, steps, epsilon spent, seconds) plus "features";
`--test-probabilities` keeps the test probabilities for `teacher_ensemble.py`; `--label-images POOL.npz
--image-logits FILE.npz` keeps the teacher's float32 (M, K) logits on a pool of images
(`synthetic_pool.py`), with the pool's int64 (M,) labels, the site's int64 (K,) member class
counts, its index and the SHA-256 of the pool's images, for `student_on_teacher_labels.py`. A
teacher at `--epsilon 4` pairs with a pool drawn at `synthetic_pool.py --site-epsilon 8`.

    pip install -e ".[bench]"
    python benchmarks/dp_scatter_teacher.py --data ../shared/data/medmnist/bloodmnist.npz --site 1 \
        --epsilon 4 --variant 512,2,60

A variant is "batch,lr,epochs". Epsilon 0 trains without DP.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import torch
from torch import nn

from fedkr.bench import load_bench_sites
from fedkr.client.site import split_budget
from fedkr.shared.classifier import to_tensor
from fedkr.shared.config import PROFILES, ConfigError
from fedkr.shared.data import DataError
from fedkr.shared.dp import DPConfig, PrivateTraining, make_private_training
from dp_teacher import parse_variant
from synthetic_pool import check_npz_output, read_pool, save_pool_logits
from teacher_ensemble import holdout_scores, save_test_probabilities, scores

SCATTERING_SCALES = 2  # J: features at 1 / 2^J of the resolution
FEATURES = f"scattering J={SCATTERING_SCALES} L=8 (kymatio)"


def scattering_transform(height: int, width: int) -> nn.Module:
    """kymatio's 2-D scattering transform for (N, C, height, width) float images -> (N, C, 81, height/4, width/4).

    kymatio 0.3.0 imports its 3-D module with the package, and that module imports
    `scipy.special.sph_harm`, which scipy 1.17 removed (kymatio issue #1068; the fix is not
    released). The 2-D transform never calls it, so where scipy lacks the name it is bound to a
    function that refuses to run: nothing computes with the wrong convention.
    """
    import scipy.special

    if not hasattr(scipy.special, "sph_harm"):
        def sph_harm(*args, **kwargs):
            raise NotImplementedError("scipy.special.sph_harm was removed in scipy 1.17; kymatio's 3-D transform needs it")
        scipy.special.sph_harm = sph_harm
    from kymatio.torch import Scattering2D

    return Scattering2D(J=SCATTERING_SCALES, shape=(height, width))


def scattering_features(transform: nn.Module, images: np.ndarray, batch_size: int = 512) -> torch.Tensor:
    """float32 (N, C * 81, H / 4, W / 4) scattering maps of uint8 (N, H, W, C) images."""
    maps = []
    for start in range(0, len(images), batch_size):
        x = to_tensor(images[start:start + batch_size]).contiguous()
        out = transform(x)
        maps.append(out.reshape(out.shape[0], -1, *out.shape[-2:]))
    return torch.cat(maps)


def linear_on_features(channels: int, height: int, width: int, num_classes: int, seed: int) -> nn.Sequential:
    """GroupNorm (no affine weights) over the scattering maps, then one linear layer, as in Tramer & Boneh."""
    groups = next(g for g in (27, 9, 3, 1) if channels % g == 0)
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        return nn.Sequential(nn.GroupNorm(groups, channels, affine=False), nn.Flatten(),
                             nn.Linear(channels * height * width, num_classes))


def cnn_on_features(channels: int, height: int, width: int, num_classes: int, seed: int, filters: int = 64) -> nn.Sequential:
    """GroupNorm (no affine weights) over the scattering maps, then Tramer & Boneh's small CNN on them.

    Their ScatterNet + CNN (arXiv 2011.11660, section 3; the "[64, M, 64]" model of their code):
    3x3 convolutions of `filters` channels with tanh activations, a 2x2 max-pool between them, then
    one linear layer, for float32 (N, channels, height, width) maps -> (N, num_classes) logits.
    """
    groups = next(g for g in (27, 9, 3, 1) if channels % g == 0)
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        return nn.Sequential(
            nn.GroupNorm(groups, channels, affine=False),
            nn.Conv2d(channels, filters, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
            nn.Conv2d(filters, filters, 3, padding=1), nn.Tanh(), nn.Flatten(),
            nn.Linear(filters * (height // 2) * (width // 2), num_classes))


HEADS = {"linear": linear_on_features, "cnn": cnn_on_features}  # the model on the scattering maps


def private_step(private: PrivateTraining, model: nn.Module, features: torch.Tensor, labels: torch.Tensor,
                 idx: torch.Tensor, loss_fn: nn.Module) -> None:
    """One DP-SGD step of `private` on the rows `idx` (int64, (B,), possibly empty) of float32
    `features` (N, ...) and int64 `labels` (N,); an empty batch still takes its noisy step."""
    if idx.numel() == 0:
        private.step_on_empty_batch()
        return
    private.optimizer.zero_grad(set_to_none=True)
    loss_fn(model(features[idx]), labels[idx]).backward()
    private.optimizer.step()


def train(model: nn.Module, features: torch.Tensor, labels: torch.Tensor, batch: int, lr: float, epochs: int,
          budget: DPConfig | None, seed: int) -> dict:
    """Cross-entropy training of `model` on `features`; the DP accounting (None fields without `budget`)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    num_examples = len(labels)
    steps = epochs * int(np.ceil(num_examples / batch))
    model.train()
    if budget is None:
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            for idx in torch.randperm(num_examples, generator=gen).split(batch):
                optimizer.zero_grad(set_to_none=True)
                loss_fn(model(features[idx]), labels[idx]).backward()
                optimizer.step()
        return {"noise_multiplier": None, "steps": steps, "epsilon_spent": None}
    private = make_private_training(model, optimizer, num_examples=num_examples, batch_size=batch, steps=steps,
                                    config=budget, seed=seed)
    with private, warnings.catch_warnings():
        # torch notes that the features need no gradient; opacus' per-sample hooks do not need one
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for idx in private.batches():
            private_step(private, model, features, labels, idx, loss_fn)
        report = private.report("sgd", lr)
    return {"noise_multiplier": round(report.noise_multiplier, 3), "steps": report.steps,
            "epsilon_spent": round(report.epsilon, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--profile", default="full", choices=sorted(PROFILES))
    parser.add_argument("--site", type=int, default=1)
    parser.add_argument("--epsilon", type=float, default=4.0, help="the teacher's epsilon (0: no DP) [default: 4]")
    parser.add_argument("--max-grad-norm", type=float, default=0.1, help="clipping norm [default: 0.1, the paper's]")
    parser.add_argument("--test-probabilities", metavar="FILE.npz", default=None,
                        help="write the last variant's test-split probabilities for teacher_ensemble.py")
    parser.add_argument("--head", default="linear", choices=sorted(HEADS),
                        help="the model on the scattering maps [default: linear]")
    parser.add_argument("--variant", type=parse_variant, action="append", required=True, help="batch,lr,epochs")
    parser.add_argument("--label-images", metavar="POOL.npz", default=None,
                        help="images to label (synthetic_pool.py --out); needs --image-logits")
    parser.add_argument("--image-logits", metavar="FILE.npz", default=None,
                        help="write the last variant's logits on the --label-images images, with the site's member "
                             "class counts, for student_on_teacher_labels.py")
    args = parser.parse_args()
    if bool(args.label_images) != bool(args.image_logits):
        parser.error("--label-images and --image-logits go together")
    for name, path in (("--test-probabilities", args.test_probabilities), ("--image-logits", args.image_logits)):
        check_npz_output(parser, name, path)
    if args.epsilon < 0:
        parser.error("--epsilon must be >= 0 (0 trains without DP)")
    if not args.max_grad_norm > 0:
        parser.error("--max-grad-norm must be > 0")
    config = PROFILES[args.profile].run_config(data=args.data, run_id="dp-scatter-teacher")
    try:
        sites, test = load_bench_sites(config)
    except (DataError, ConfigError) as exc:
        parser.exit(2, f"error: {exc}\n")
    if not 0 <= args.site < len(sites):
        parser.error(f"--site must be between 0 and {len(sites) - 1}")
    members, holdout = sites[args.site].members, sites[args.site].holdout
    pool = read_pool(args.label_images, test.image_shape, test.num_classes) if args.label_images else None
    budget = None
    if args.epsilon > 0:
        budget, _ = split_budget(DPConfig(2 * args.epsilon, max_grad_norm=args.max_grad_norm), len(members))
    h, w, _ = members.image_shape
    started = time.perf_counter()
    transform = scattering_transform(h, w)
    member_maps, holdout_maps = scattering_features(transform, members.images), scattering_features(transform, holdout.images)
    test_maps = scattering_features(transform, test.images)
    pool_maps = scattering_features(transform, pool[0]) if pool is not None else None
    feature_seconds = time.perf_counter() - started
    labels = torch.from_numpy(members.labels.astype(np.int64))
    seed = config.teacher_config().seed
    for batch, lr, epochs in args.variant:
        model = HEADS[args.head](*member_maps.shape[1:], members.num_classes, seed)
        started = time.perf_counter()
        accounting = train(model, member_maps, labels, batch, lr, epochs, budget, seed)
        seconds = time.perf_counter() - started
        model.eval()
        with torch.no_grad():
            predicted = model(holdout_maps).argmax(1).numpy()
            test_probabilities = torch.softmax(model(test_maps), 1).numpy()
        if args.test_probabilities:
            save_test_probabilities(args.test_probabilities, test_probabilities, test.labels, members.class_counts())
        if pool is not None:
            with torch.no_grad():
                pool_logits = model(pool_maps).numpy()
            save_pool_logits(args.image_logits, pool_logits, pool[0], pool[1], members.class_counts(), args.site)
        print(json.dumps({
            "site": args.site, "members": len(members), "holdout": len(holdout), "epsilon_teacher": args.epsilon,
            "features": FEATURES, "head": args.head, "batch": batch, "lr": lr, "epochs": epochs, "max_grad_norm": args.max_grad_norm,
            **holdout_scores(holdout.labels, predicted),
            **scores(test.labels, test_probabilities), **accounting, "feature_seconds": round(feature_seconds, 1), "seconds": round(seconds, 1),
        }), flush=True)


if __name__ == "__main__":
    main()
