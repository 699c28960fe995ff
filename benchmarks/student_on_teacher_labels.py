"""A reference for what a teacher's soft labels teach the student: the bench's student on the members' own images, labelled by the teacher.

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
`student_set_ipc` images per class (3,200 at the full profile). The teacher's logits come from
`dp_fedavg_scatter_teacher.py --member-logits FILE.npz` on the same profile's split (the file's
labels are checked against the split's). `--labels true` trains the same student on the members'
true labels instead (the bench's centralized figure, for scale).

- `--per-class N` trains on a class-balanced subset: N images of each class by their label, drawn
  with `--seed`; N = `student_set_ipc` (400 at the full profile) gives the product's set size and
  class mix.
- `--images POOL.npz` trains on other images instead of the members, such as a pool of the
  sites' synthetic images (`synthetic_pool.py`), with a teacher's logits on them
  (`dp_fedavg_scatter_teacher.py --label-images POOL.npz --image-logits FILE.npz`); there an
  image's label is the class it was drawn for. Per-site teachers' files (`dp_scatter_teacher.py
  --image-logits`, one per site, each with the site's member class counts) are combined as the
  coordinator combines them (`server.relabel.combine_labels`).

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
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from fedkr.bench import load_bench_sites, student_protocol
from fedkr.server.relabel import combine_labels, support_from_counts
from fedkr.shared.classifier import (ClassifierConfig, build_classifier, one_hot, predict_logits, probabilities,
                                     train_classifier)
from fedkr.shared.config import PROFILES, ConfigError
from fedkr.shared.data import DataError
from synthetic_pool import read_pool


def read_member_logits(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """int64 (N,) labels, finite float32 (N, K) logits and, if the file holds them, int64 (K,) member class
    counts from a `--member-logits` or `--image-logits` file; exits with one line otherwise."""
    try:
        with np.load(path) as saved:
            labels, logits = saved["labels"].astype(np.int64), saved["logits"].astype(np.float32)
            counts = saved["member_class_counts"].astype(np.int64) if "member_class_counts" in saved.files else None
    except (OSError, ValueError, KeyError, EOFError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
        sys.exit(f"error: {path}: not a --member-logits file ({exc})")
    if logits.ndim != 2 or not np.isfinite(logits).all():
        sys.exit(f"error: {path}: the logits are not a finite (N, K) array")
    if counts is not None and counts.shape != logits.shape[1:]:
        sys.exit(f"error: {path}: its member class counts are not one per class")
    return labels, logits, counts


def teacher_targets(paths: list[str], labels: np.ndarray, num_classes: int, temperature: float,
                    what: str) -> np.ndarray:
    """float32 (N, K) soft labels of N images from one teacher's logits file, softmax(logits / T), or from
    one file per site combined as the coordinator combines them (`server.relabel.combine_labels`: each
    class's probability from the sites in proportion to their members of it); int64 (N,) `labels`
    checks that every file labels the same images. Exits with one line otherwise."""
    probs, counts = [], []
    for path in paths:
        saved_labels, logits, class_counts = read_member_logits(Path(path))
        if saved_labels.shape != labels.shape or not np.array_equal(saved_labels, labels) \
                or logits.shape != (len(labels), num_classes):
            sys.exit(f"error: {path}: its images are not {what}")
        if len(paths) > 1 and class_counts is None:
            sys.exit(f"error: {path}: one file per site must hold the site's member class counts")
        probs.append(probabilities(logits, temperature)), counts.append(class_counts)
    if len(paths) == 1:
        return probs[0].astype(np.float32)
    return combine_labels(probs, support_from_counts(np.stack(counts)))


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
    args = parser.parse_args()
    if args.labels == "teacher" and not args.member_logits:
        parser.error("--labels teacher needs --member-logits")
    if args.per_class is not None and args.per_class < 1:
        parser.error("--per-class must be at least 1")
    config = PROFILES[args.profile].run_config(data=args.data, run_id="student-on-teacher-labels")
    try:
        sites, test = load_bench_sites(config)
    except (DataError, ConfigError) as exc:
        sys.exit(f"error: {exc}")
    if args.images:
        images, labels = read_pool(args.images, test.image_shape, test.num_classes)
    else:
        images = np.concatenate([s.members.images for s in sites])
        labels = np.concatenate([s.members.labels for s in sites]).astype(np.int64)
    num_classes = test.num_classes
    protocol = student_protocol(config)
    agreement = None
    if args.labels == "teacher":
        what = args.images or "this profile split's members"
        targets = teacher_targets(args.member_logits, labels, num_classes, protocol.temperature, what)
    else:
        targets = one_hot(labels, num_classes)
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
    h, w, c = images.shape[1:]
    model = build_classifier(ClassifierConfig(c, h, w, num_classes, protocol.channels), args.seed)
    started = time.perf_counter()
    train_classifier(model, images, targets, protocol.train_config(args.seed, soft=args.labels == "teacher"))
    seconds = time.perf_counter() - started
    predicted = predict_logits(model, test.images).argmax(1)
    print(json.dumps({
        "labels": args.labels, "member_logits": args.member_logits[0] if args.member_logits and len(args.member_logits) == 1 else args.member_logits,
        "images": args.images or "members", "members": len(labels), "per_class": args.per_class,
        "teacher_member_agreement": agreement, "temperature": protocol.temperature if args.labels == "teacher" else 1.0,
        "epochs": protocol.epochs, "seed": args.seed,
        "test_accuracy": round(float(np.mean(predicted == test.labels)), 4),
        "test_balanced_accuracy": round(float(balanced_accuracy_score(test.labels, predicted)), 4),
        "seconds": round(seconds, 1),
    }), flush=True)


if __name__ == "__main__":
    main()
