"""Screen one private teacher trained by all sites together: ScatterNet + linear by FedAvg, every site's steps under DP-SGD.

Each site's private teacher (`dp_teacher.py`, `dp_scatter_teacher.py`) learns from its own members
only. At Dirichlet 0.5 the small sites see few examples of most classes, and the support-weighted
ensemble of those teachers bounds what the coordinator can label with (docs/audit.md, "What the
private teachers can teach"). This script asks what one teacher trained by the sites together
would reach at the same per-site epsilon:

- features: `dp_scatter_teacher.scattering_transform` (fixed, data-independent), computed by each
  site on its own images; model: `dp_scatter_teacher.HEADS[--head]` (linear, or Tramer & Boneh's small CNN);
- every site runs one DP-SGD run (`fedkr.shared.dp.make_private_training`) spanning all rounds:
  the noise is set for `rounds x local_epochs x ceil(N / batch)` Poisson-sampled steps over its own
  members at the teacher's half of its epsilon and delta (`client.site.split_budget`). At each round
  it starts its local steps from the global weights and clears its momentum; the server averages
  the sites' weights in proportion to their member counts (FedAvg, McMahan et al. 2017, arXiv
  1602.05629). The global weights a site receives depend on its own earlier private steps and on
  the other sites' data, never on its members otherwise, so its accountant's epsilon (adaptive
  composition) covers everything it sends, every round's weights included.

It prints one JSON row: the global teacher's test accuracy and balanced accuracy, each site's
holdout accuracy, balanced accuracy and top-prediction share, each site's noise multiplier, steps
and epsilon spent, and the seconds. `--test-probabilities` keeps the test probabilities
(`teacher_ensemble.py`'s format, with the sites' pooled class counts); `--member-logits` keeps the
teacher's float32 (N, K) logits on the sites' members, site after site as `load_bench_sites` orders
them, with their int64 (N,) labels, for `student_on_teacher_labels.py`. `--label-images POOL.npz`
with `--image-logits FILE.npz` keeps its logits on other images, such as a pool of the sites'
synthetic images (`synthetic_pool.py`), in the same format with the pool's labels and the SHA-256
of its images (`images_sha256`).

    pip install -e ".[bench]"
    python benchmarks/dp_fedavg_scatter_teacher.py --data ../shared/data/medmnist/bloodmnist.npz --epsilon 4
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings

import numpy as np
import torch
from torch import nn

from fedkr.bench import load_bench_sites
from fedkr.client.site import split_budget
from fedkr.shared.config import PROFILES, ConfigError
from fedkr.shared.data import DataError
from fedkr.shared.dp import DPConfig, make_private_training
from synthetic_pool import check_npz_output, read_pool, save_pool_logits
from dp_scatter_teacher import FEATURES, HEADS, private_step, scattering_features, scattering_transform
from teacher_ensemble import holdout_scores, save_test_probabilities, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--profile", default="full", choices=sorted(PROFILES))
    parser.add_argument("--epsilon", type=float, default=4.0, help="each site's teacher epsilon [default: 4]")
    parser.add_argument("--max-grad-norm", type=float, default=0.1, help="clipping norm [default: 0.1]")
    parser.add_argument("--rounds", type=int, default=10, help="FedAvg rounds [default: 10]")
    parser.add_argument("--local-epochs", type=int, default=6, help="passes over a site's members per round [default: 6]")
    parser.add_argument("--batch", type=int, default=512, help="expected Poisson batch [default: 512]")
    parser.add_argument("--lr", type=float, default=1.0, help="SGD learning rate, momentum 0.9 [default: 1]")
    parser.add_argument("--head", default="linear", choices=sorted(HEADS),
                        help="the model on the scattering maps [default: linear]")
    parser.add_argument("--test-probabilities", metavar="FILE.npz", default=None)
    parser.add_argument("--member-logits", metavar="FILE.npz", default=None,
                        help="write the teacher's logits on every site's members for student_on_teacher_labels.py")
    parser.add_argument("--label-images", metavar="POOL.npz", default=None,
                        help="images to label (synthetic_pool.py --out); needs --image-logits")
    parser.add_argument("--image-logits", metavar="FILE.npz", default=None,
                        help="write the teacher's logits on the --label-images images")
    args = parser.parse_args()
    if bool(args.label_images) != bool(args.image_logits):
        parser.error("--label-images and --image-logits go together")
    if not args.epsilon > 0:
        parser.error("--epsilon must be > 0")
    if min(args.rounds, args.local_epochs, args.batch) < 1 or not (args.lr > 0 and args.max_grad_norm > 0):
        parser.error("--rounds, --local-epochs and --batch must be >= 1, --lr and --max-grad-norm > 0")
    for name, path in (("--member-logits", args.member_logits), ("--test-probabilities", args.test_probabilities),
                       ("--image-logits", args.image_logits)):
        check_npz_output(parser, name, path)
    config = PROFILES[args.profile].run_config(data=args.data, run_id="dp-fedavg-scatter-teacher")
    try:
        sites, test = load_bench_sites(config)
    except (DataError, ConfigError) as exc:
        parser.exit(2, f"error: {exc}\n")
    pool = read_pool(args.label_images, test.image_shape, test.num_classes) if args.label_images else None
    seed = config.teacher_config().seed
    h, w, _ = test.image_shape
    started = time.perf_counter()
    transform = scattering_transform(h, w)
    member_maps = [scattering_features(transform, s.members.images) for s in sites]
    holdout_maps = [scattering_features(transform, s.holdout.images) for s in sites]
    test_maps = scattering_features(transform, test.images)
    feature_seconds = time.perf_counter() - started
    num_classes = test.num_classes
    global_model = HEADS[args.head](*test_maps.shape[1:], num_classes, seed)
    loss_fn = nn.CrossEntropyLoss()
    started = time.perf_counter()
    locals_, privates, batches, local_steps = [], [], [], []
    for maps, site in zip(member_maps, sites):
        n = len(site.members)
        steps = args.local_epochs * int(np.ceil(n / args.batch))
        budget, _ = split_budget(DPConfig(2 * args.epsilon, max_grad_norm=args.max_grad_norm), n)
        module = copy.deepcopy(global_model)
        optimizer = torch.optim.SGD(module.parameters(), lr=args.lr, momentum=0.9)
        private = make_private_training(module, optimizer, num_examples=n, batch_size=args.batch,
                                        steps=args.rounds * steps, config=budget, seed=seed)
        locals_.append(module), privates.append(private), batches.append(private.batches()), local_steps.append(steps)
    weights = np.array([len(s.members) for s in sites], dtype=np.float64)
    weights /= weights.sum()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for _ in range(args.rounds):
            states = []
            for module, private, stream, steps, maps, site in zip(locals_, privates, batches, local_steps, member_maps, sites):
                module.load_state_dict(global_model.state_dict())
                private.optimizer.original_optimizer.state.clear()
                labels = torch.from_numpy(site.members.labels.astype(np.int64))
                module.train()
                for _ in range(steps):
                    private_step(private, module, maps, labels, next(stream), loss_fn)
                states.append({k: v.detach().clone() for k, v in module.state_dict().items()})
            global_model.load_state_dict({k: sum(wt * s[k] for wt, s in zip(weights, states)) for k in states[0]})
    reports = [p.report("sgd", args.lr) for p in privates]
    for p in privates:
        p.close()
    seconds = time.perf_counter() - started
    global_model.eval()
    with torch.no_grad():
        test_probabilities = torch.softmax(global_model(test_maps), 1).numpy()
        holdout_predictions = [global_model(m).argmax(1).numpy() for m in holdout_maps]
        member_logits = [global_model(m).numpy() for m in member_maps] if args.member_logits else []
    if args.test_probabilities:
        counts = sum(s.members.class_counts() for s in sites)
        save_test_probabilities(args.test_probabilities, test_probabilities, test.labels, counts)
    if pool is not None:
        with torch.no_grad():
            pool_logits = global_model(scattering_features(transform, pool[0])).numpy()
        save_pool_logits(args.image_logits, pool_logits, pool[0], pool[1])
    if args.member_logits:
        np.savez(args.member_logits, logits=np.concatenate(member_logits).astype(np.float32),
                 labels=np.concatenate([s.members.labels for s in sites]).astype(np.int64))
    print(json.dumps({
        "teacher": "fedavg", "features": FEATURES, "head": args.head, "sites": len(sites), "epsilon_teacher": args.epsilon,
        "rounds": args.rounds, "local_epochs": args.local_epochs, "batch": args.batch, "lr": args.lr,
        "max_grad_norm": args.max_grad_norm, **scores(test.labels, test_probabilities),
        "holdout": [{"site": i, "members": len(s.members), **holdout_scores(s.holdout.labels, predicted),
                     "noise_multiplier": round(r.noise_multiplier, 3), "steps": r.steps,
                     "epsilon_spent": round(r.epsilon, 3)}
                    for i, (s, predicted, r) in enumerate(zip(sites, holdout_predictions, reports))],
        "feature_seconds": round(feature_seconds, 1), "seconds": round(seconds, 1),
    }), flush=True)


if __name__ == "__main__":
    main()
