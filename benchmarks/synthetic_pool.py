"""Draw a class-balanced pool of the sites' private synthetic images, for labelling by any teacher.

Issue 15 asks whether a teacher trained by the sites together (`dp_fedavg_scatter_teacher.py`)
would lift the epsilon 8 student. The student learns the teacher's soft labels on the sites'
synthetic images; this script makes those images once, so that several teachers can label the
same ones (`dp_fedavg_scatter_teacher.py --label-images`) and `student_on_teacher_labels.py
--images` can train the bench's student on each labelling.

Each site trains the product's generator (`fedkr.shared.generator_kinds.build_generator`, the
profile's generator settings, `--generator-kind`) on its own members under its part of the site's
`--site-epsilon` (the profile's `dp_config()` and `client.site.split_budget`: half of epsilon and
delta at the full profile, so the teachers that label the pool pair with `--epsilon` of half the
site's), with secret noise, as `Site._fit` does. The default kind here is "dp-merf", minutes per
site, where the product's default is the private diffusion generator (about 40 minutes per site
on 2 cores at epsilon 8).

The pool holds `--per-class` images of every class that some site holds, split across the sites
in proportion to their members of that class (the coordinator's class support), each drawn by the
site's generator for that class. It is simpler than the product's synthesis, which asks every site
holding enough of a class for the same number of samples, keeps those its own teacher labels as
the requested class within the members' manifold (`client/synthesis_filter.py`), and distils the
pooled shards; here every drawn image is kept ("unfiltered, proportional"), and
`student_on_teacher_labels.py --filter-drawn-class` applies the teacher part of that filter.

The pool file (`--out`, .npz) holds `images` uint8 (M, H, W, C), `labels` int64 (M,) the class each
image was drawn for, and `sites` int64 (M,) the site that drew it. One JSON row goes to stdout:
each site's members, noise multiplier, epsilon spent and training seconds.

    pip install -e ".[bench]"
    python benchmarks/synthetic_pool.py --data ../shared/data/medmnist/bloodmnist.npz --site-epsilon 8 \\
        --generator-kind dp-merf --out pool.npz
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
import zipfile
from dataclasses import replace

import numpy as np

from fedkr.bench import load_bench_sites
from fedkr.client.site import split_budget
from fedkr.shared.config import PROFILES, ConfigError
from fedkr.shared.data import DataError
from fedkr.shared.generator import GENERATOR_KINDS
from fedkr.shared.generator_kinds import build_generator


def allocate(class_counts: np.ndarray, per_class: int) -> np.ndarray:
    """int (S, K) images per site and class: `per_class` of every class that some site holds, split by
    the sites' shares of that class's members (largest remainders), from int (S, K) member counts."""
    counts = np.asarray(class_counts, dtype=np.float64)
    totals = counts.sum(0)
    share = np.divide(counts * per_class, totals, out=np.zeros_like(counts), where=totals > 0)
    out = np.floor(share).astype(np.int64)
    for k in np.flatnonzero(totals > 0):
        short = per_class - out[:, k].sum()
        out[np.argsort(out[:, k] - share[:, k])[:short], k] += 1
    return out


def pool_digest(images: np.ndarray) -> str:
    """The SHA-256 of a pool's uint8 images, hex: a teacher's logits file names the pool it labelled by it."""
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


def check_npz_output(parser: argparse.ArgumentParser, name: str, path: str | None) -> None:
    """Stop with a usage error unless `path` (when given) names a .npz file in a writable folder."""
    if path and (not path.endswith(".npz") or not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK)):
        parser.error(f"{name} must name a .npz file in a writable folder, got {path!r}")


def save_pool_logits(path: str, logits: np.ndarray, images: np.ndarray, labels: np.ndarray,
                     member_class_counts: np.ndarray | None = None, site: int | None = None) -> None:
    """Write a teacher's float32 (M, K) `logits` on a pool's uint8 (M, H, W, C) `images` with the pool's
    int64 (M,) `labels` and the images' SHA-256 (`pool_digest`); a per-site teacher adds its site's
    int64 (K,) member class counts and index. `student_on_teacher_labels.py` reads the file."""
    extra = {} if site is None else {"member_class_counts": np.asarray(member_class_counts, dtype=np.int64),
                                     "site": np.int64(site)}
    np.savez(path, logits=np.asarray(logits, dtype=np.float32), labels=np.asarray(labels, dtype=np.int64),
             images_sha256=pool_digest(images), **extra)


def read_pool(path: str, image_shape: tuple[int, int, int],
              num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """uint8 (M, H, W, C) images, int64 (M,) labels in [0, num_classes) and, if the file holds them,
    int64 (M,) drawing sites, from a pool file of images shaped `image_shape`; exits with one line otherwise."""
    try:
        with np.load(path) as saved:
            images, labels = saved["images"], saved["labels"].astype(np.int64)
            sites = saved["sites"].astype(np.int64) if "sites" in saved.files else None
    except (OSError, ValueError, KeyError, EOFError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
        sys.exit(f"error: {path}: not a synthetic_pool.py file ({exc})")
    if images.dtype != np.uint8 or images.shape[1:] != tuple(image_shape) or labels.shape != images.shape[:1]:
        sys.exit(f"error: {path}: its images are not uint8 (M, {', '.join(map(str, image_shape))}) with one label each")
    if len(labels) == 0 or labels.min() < 0 or labels.max() >= num_classes:
        sys.exit(f"error: {path}: it holds no images, or labels outside [0, {num_classes})")
    if sites is not None and (sites.shape != labels.shape or sites.min() < 0):
        sys.exit(f"error: {path}: its sites are not one index >= 0 per image")
    return images, labels, sites


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--profile", default="full", choices=sorted(PROFILES))
    parser.add_argument("--site-epsilon", type=float, default=8.0,
                        help="each site's epsilon; the generator trains at its part (half at the full profile; 0: no DP) [default: 8]")
    parser.add_argument("--generator-kind", default="dp-merf", choices=GENERATOR_KINDS,
                        help="the sites' generator [default: dp-merf, minutes per site on 2 cores]")
    parser.add_argument("--per-class", type=int, default=400, help="images of each class in the pool [default: 400]")
    parser.add_argument("--seed", type=int, default=0, help="the samples' seed [default: 0]")
    parser.add_argument("--out", metavar="FILE.npz", required=True)
    args = parser.parse_args()
    if not (math.isfinite(args.site_epsilon) and args.site_epsilon >= 0) or args.per_class < 1 or args.seed < 0:
        parser.error("--site-epsilon must be a finite number >= 0, --per-class >= 1 and --seed >= 0")
    check_npz_output(parser, "--out", args.out)
    config = PROFILES[args.profile].run_config(data=args.data, run_id="synthetic-pool")
    try:
        config = replace(config, generator_kind=args.generator_kind, dp_epsilon=args.site_epsilon)
        sites, test = load_bench_sites(config)
    except (DataError, ConfigError) as exc:
        sys.exit(f"error: {exc}")
    plan = allocate(np.stack([s.members.class_counts() for s in sites]), args.per_class)
    images, labels, site_index, rows = [], [], [], []
    for i, site in enumerate(sites):
        members = site.members
        _, generator_dp = split_budget(config.dp_config(), len(members))
        generator = build_generator(config.generator_config(), members.num_classes, members.image_shape)
        started = time.perf_counter()
        try:
            generator.train(members.images, members.labels, dp=generator_dp,
                            on_progress=lambda step, total, loss: print(f"site {i}: step {step}/{total}, loss {loss:.4f}",
                                                                        file=sys.stderr, flush=True))
        except ValueError as exc:
            sys.exit(f"error: site {i}: {exc}")
        seconds = time.perf_counter() - started
        wanted = np.repeat(np.arange(members.num_classes), plan[i])
        images.append(generator.sample(wanted, seed=args.seed * 1000 + i))
        labels.append(wanted), site_index.append(np.full(len(wanted), i))
        report = generator.dp_report
        rows.append({"site": i, "members": len(members), "drawn": len(wanted),
                     "noise_multiplier": round(report.noise_multiplier, 3) if report else 0.0,
                     "epsilon_spent": round(report.epsilon, 3) if report else None, "seconds": round(seconds, 1)})
    np.savez(args.out, images=np.concatenate(images), labels=np.concatenate(labels).astype(np.int64),
             sites=np.concatenate(site_index).astype(np.int64))
    print(json.dumps({"generator_kind": args.generator_kind, "site_epsilon": args.site_epsilon or None,
                      "per_class": args.per_class, "seed": args.seed, "sites": rows}), flush=True)


if __name__ == "__main__":
    main()
