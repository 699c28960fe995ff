"""A reference for what a teacher's soft labels teach the student: the bench's student on the members' own images, or on a pool of synthetic images, labelled by the teacher.

fedkr's student learns from synthetic images labelled by the sites' teachers. How much of the
gap under DP comes from the teacher and how much from the images? This script takes the images
out of the question: it trains the bench's student, with the bench's one protocol
(`fedkr.student_protocol`: CompactCNN, KL at the run's temperature, the profile's student
epochs), on the sites' real members, pooled, each labelled by the teacher's soft labels
`softmax(logits / T)` at the run's temperature T, as a site labels its synthetic images.

It is a reference point, not a method and not a strict bound: the coordinator never sees the
members' images; the teacher labels the images it trained on, where a generator draws fresh ones;
and the student sees the members' count and class mix (9,564 imbalanced images on the bench's
BloodMNIST split), where the product's student trains on a class-balanced set of
`ipc` images per class at least (3,200 at the full profile's IPC 400; by default the student now trains
on the whole pool, 5,800 there). The teacher's logits come from
`dp_fedavg_scatter_teacher.py --member-logits FILE.npz` on the same profile's split (the file's
labels are checked against the split's). `--labels true` trains the same student on the members'
true labels instead (the bench's centralized figure, for scale).

- `--per-class N` trains on a class-balanced subset: N images of each class by their label, drawn
  with `--seed`; N = `ipc` (400 at the full profile) gives the distilled set's size and
  class mix.
- `--images POOL.npz` trains on other images instead of the members, such as a pool of the
  sites' synthetic images (`synthetic_pool.py`), with a teacher's logits on them
  (`dp_fedavg_scatter_teacher.py --label-images POOL.npz --image-logits FILE.npz`); there an
  image's label is the class it was drawn for. Per-site teachers' files (`dp_scatter_teacher.py
  --image-logits`, one per site, each with the site's member class counts) are combined as the
  coordinator combines them by default (`server.relabel.combine_labels`, `relabel-combine`
  "support"). `--drawn-class-weight W` mixes the
  one-hot drawn class into those labels as the product's `drawn-class-weight` does.

It prints one JSON row: the student's test accuracy and balanced accuracy, the teacher's
agreement with the labels of the images the student trains on, the temperature, epochs, seed and
seconds ("members" counts the training images).

    pip install -e ".[bench]"
    python benchmarks/dp_fedavg_scatter_teacher.py --data ../shared/data/medmnist/bloodmnist.npz --epsilon 4 \\
        --rounds 30 --local-epochs 2 --head cnn --lr 2 --member-logits teacher-members.npz
    python benchmarks/student_on_teacher_labels.py --data ../shared/data/medmnist/bloodmnist.npz \\
        --member-logits teacher-members.npz
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zipfile
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from fedkr.bench import load_bench_sites, student_protocol
from fedkr.server.relabel import combine_labels, mix_drawn_class, support_from_counts
from fedkr.shared.classifier import (ClassifierConfig, build_classifier, one_hot, predict_logits, probabilities,
                                     train_classifier)
from fedkr.shared.config import PROFILES, ConfigError
from fedkr.shared.data import DataError
from synthetic_pool import pool_digest, read_pool


@dataclass(frozen=True)
class TeacherLogits:
    """One `--member-logits` or `--image-logits` file: int64 (N,) labels, finite float32 (N, K) logits,
    and what some files add: the site's int64 (K,) member class counts and index (per-site teachers),
    and the SHA-256 of the pool's images (files that label a pool)."""

    path: str
    labels: np.ndarray
    logits: np.ndarray
    member_class_counts: np.ndarray | None
    site: int | None
    images_sha256: str | None


def read_teacher_logits(path: str) -> TeacherLogits:
    """The file at `path`; exits with one line if it is not a teacher's logits file."""
    try:
        with np.load(path) as saved:
            files = set(saved.files)
            found = TeacherLogits(
                path, saved["labels"].astype(np.int64), saved["logits"].astype(np.float32),
                saved["member_class_counts"].astype(np.int64) if "member_class_counts" in files else None,
                int(saved["site"]) if "site" in files else None,
                str(saved["images_sha256"]) if "images_sha256" in files else None)
    except (OSError, ValueError, KeyError, EOFError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
        sys.exit(f"error: {path}: not a teacher's logits file ({exc})")
    if found.logits.ndim != 2 or not np.isfinite(found.logits).all():
        sys.exit(f"error: {path}: the logits are not a finite (N, K) array")
    counts = found.member_class_counts
    if counts is not None and (counts.shape != found.logits.shape[1:] or counts.min() < 0 or counts.sum() == 0):
        sys.exit(f"error: {path}: its member class counts are not one count >= 0 per class")
    return found


def teacher_targets(files: list[TeacherLogits], temperature: float) -> np.ndarray:
    """float32 (N, K) soft labels: softmax(logits / T) of one teacher's file, or per-site teachers' files
    (those holding member class counts) combined as the coordinator does by default
    (`server.relabel.combine_labels`, "support": each class's probability from the sites in proportion to
    their members of it)."""
    probs = [probabilities(f.logits, temperature) for f in files]
    if files[0].member_class_counts is None:
        return probs[0].astype(np.float32)
    return combine_labels(probs, support_from_counts(np.stack([f.member_class_counts for f in files])))


def check_teacher_files(files: list[TeacherLogits], labels: np.ndarray, num_classes: int,
                        pool_sha256: str | None) -> None:
    """Exit with one line unless every file labels these N images (int64 (N,) `labels`; a pool's by
    its SHA-256) with K = `num_classes` logits, and the files are one teacher or one per site."""
    what = "this pool" if pool_sha256 else "this profile split's members"
    for f in files:
        if f.labels.shape != labels.shape or not np.array_equal(f.labels, labels) \
                or f.logits.shape != (len(labels), num_classes) or f.images_sha256 != pool_sha256:
            sys.exit(f"error: {f.path}: its images are not {what}")
    per_site = [f.member_class_counts is not None for f in files]
    if any(per_site) and not all(per_site):
        sys.exit("error: mix of one teacher's file and per-site files: give one teacher's, or every site's")
    if not any(per_site) and len(files) > 1:
        sys.exit("error: several files without member class counts: one teacher's file, or one file per site")
    if any(per_site) and sorted(f.site for f in files) != list(range(len(files))):
        sys.exit("error: the per-site files must be sites 0 to S-1, each once")


def drawn_class_kept(files: list[TeacherLogits], labels: np.ndarray, sites: np.ndarray | None) -> np.ndarray:
    """bool (N,): the images whose labelling teacher's top class is the class they were drawn for, the
    teacher part of the product's synthesis filter (`client/synthesis_filter.py`); with per-site
    files, the drawing site's own teacher judges, as there. Exits if the pool has no sites for that."""
    if files[0].member_class_counts is None:
        return files[0].logits.argmax(1) == labels
    if sites is None or sites.max() >= len(files):
        sys.exit("error: --filter-drawn-class with per-site teachers needs the pool's drawing sites")
    by_site = {f.site: f.logits.argmax(1) for f in files}
    return np.array([by_site[s][i] == y for i, (s, y) in enumerate(zip(sites, labels))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--profile", default="full", choices=sorted(PROFILES))
    parser.add_argument("--member-logits", "--image-logits", dest="member_logits", metavar="FILE.npz", action="append",
                        help="the teacher's logits on the training images: the members (dp_fedavg_scatter_teacher.py "
                             "--member-logits), or the --images pool (--image-logits); once per site for per-site "
                             "teachers (dp_scatter_teacher.py --image-logits), combined as the coordinator combines them")
    parser.add_argument("--images", metavar="POOL.npz", default=None,
                        help="train on these images (synthetic_pool.py --out) instead of the members")
    parser.add_argument("--labels", default="teacher", choices=("teacher", "true"),
                        help="what the student learns: the teacher's soft labels or the true labels [default: teacher]")
    parser.add_argument("--per-class", type=int, default=None, metavar="N",
                        help="train on N images of each class, drawn with --seed [default: every image]")
    parser.add_argument("--seed", type=int, default=0,
                        help="the student's initialisation and batch order, and the --per-class subset [default: 0]")
    parser.add_argument("--filter-drawn-class", action="store_true",
                        help="keep only the pool images whose labelling teacher's top class is the class they were "
                             "drawn for (per-site teachers: the drawing site's own), as the product's filter does")
    parser.add_argument("--drawn-class-weight", type=float, default=None, metavar="W",
                        help="with --images: learn (1 - W) x the teacher's soft labels + W x the one-hot class each image "
                             "was drawn for (`server.relabel.mix_drawn_class`) [default: the profile's drawn-class-weight]")
    args = parser.parse_args()
    if args.labels == "teacher" and not args.member_logits:
        parser.error("--labels teacher needs --member-logits")
    if args.filter_drawn_class and not (args.images and args.labels == "teacher"):
        parser.error("--filter-drawn-class needs --images and the teacher's labels")
    if args.seed < 0:
        parser.error("--seed must be >= 0")
    if args.drawn_class_weight is not None and not (args.images and args.labels == "teacher"):
        parser.error("--drawn-class-weight needs --images and the teacher's labels")
    if args.per_class is not None and args.per_class < 1:
        parser.error("--per-class must be at least 1")
    try:
        config = PROFILES[args.profile].run_config(data=args.data, run_id="student-on-teacher-labels",
                                                   drawn_class_weight=args.drawn_class_weight)
        sites, test = load_bench_sites(config)
    except (DataError, ConfigError) as exc:
        sys.exit(f"error: {exc}")
    sites_drawn = None
    if args.images:
        images, labels, sites_drawn = read_pool(args.images, test.image_shape, test.num_classes)
    else:
        images = np.concatenate([s.members.images for s in sites])
        labels = np.concatenate([s.members.labels for s in sites]).astype(np.int64)
    num_classes = test.num_classes
    protocol = student_protocol(config)
    agreement = None
    if args.labels == "teacher":
        files = [read_teacher_logits(path) for path in args.member_logits]
        check_teacher_files(files, labels, num_classes, pool_digest(images) if args.images else None)
        targets = teacher_targets(files, protocol.temperature)
    else:
        targets = one_hot(labels, num_classes)
    if args.filter_drawn_class:
        kept = drawn_class_kept(files, labels, sites_drawn)
        images, labels, targets = images[kept], labels[kept], targets[kept]
    if args.per_class is not None:
        counts = np.bincount(labels, minlength=num_classes)
        if counts.min() < args.per_class:
            sys.exit(f"error: --per-class {args.per_class}: the smallest class has {counts.min()} images")
        rng = np.random.default_rng(args.seed)
        chosen = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == k), args.per_class, replace=False)
                                         for k in range(num_classes)]))
        images, labels, targets = images[chosen], labels[chosen], targets[chosen]
    if args.labels == "teacher":
        agreement = round(float(np.mean(targets.argmax(1) == labels)), 4)
        if args.images and config.drawn_class_weight:
            targets = mix_drawn_class(targets, labels, config.drawn_class_weight)
    h, w, c = images.shape[1:]
    model = build_classifier(ClassifierConfig(c, h, w, num_classes, protocol.channels), args.seed)
    started = time.perf_counter()
    train_classifier(model, images, targets, protocol.train_config(args.seed, soft=args.labels == "teacher"))
    seconds = time.perf_counter() - started
    predicted = predict_logits(model, test.images).argmax(1)
    print(json.dumps({
        "labels": args.labels, "member_logits": args.member_logits[0] if args.member_logits and len(args.member_logits) == 1 else args.member_logits,
        "images": args.images or "members", "members": len(labels), "per_class": args.per_class,
        "teacher_member_agreement": agreement,
        "agreement_with": "the class drawn for" if args.images else "the true label", "filter_drawn_class": args.filter_drawn_class,
        "drawn_class_weight": config.drawn_class_weight if args.images and args.labels == "teacher" else None, "temperature": protocol.temperature if args.labels == "teacher" else 1.0,
        "epochs": protocol.epochs, "seed": args.seed,
        "test_accuracy": round(float(np.mean(predicted == test.labels)), 4),
        "test_balanced_accuracy": round(float(balanced_accuracy_score(test.labels, predicted)), 4),
        "seconds": round(seconds, 1),
    }), flush=True)


if __name__ == "__main__":
    main()
