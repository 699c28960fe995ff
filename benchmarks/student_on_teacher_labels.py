"""A reference for what a teacher's soft labels teach the student: the bench's student on the members' own images, labelled by the teacher.

fedkr's student learns from synthetic images labelled by the sites' teachers. How much of the
gap under DP comes from the teacher and how much from the images? This script takes the images
out of the question: it trains the bench's student, with the bench's one protocol
(`fedkr.student_protocol`: CompactCNN, KL at the run's temperature, the profile's student
epochs), on the sites' real members, pooled, each labelled by the teacher's soft labels
`softmax(logits / T)` at the run's temperature T, as a site labels its synthetic images.

It is a reference point, not a method and not a strict bound: the coordinator never sees the
members' images; the teacher labels the images it trained on (its agreement with them is printed),
where a generator draws fresh ones; and the student sees the members' count and class mix (9,564
imbalanced images on the bench's BloodMNIST split), where the product's student trains on a
class-balanced set of `student_set_ipc` images per class (3,200 at the full profile). The teacher's
logits come from `dp_fedavg_scatter_teacher.py --member-logits FILE.npz` on the same profile's
split (the file's labels are checked against the split's). `--labels true` trains the same
student on the members' true labels instead (the bench's centralized figure, for scale).

It prints one JSON row: the student's test accuracy and balanced accuracy, the teacher's
agreement with the members' true labels, the temperature, epochs, seed and seconds.

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
from fedkr.shared.classifier import (ClassifierConfig, build_classifier, one_hot, predict_logits, probabilities,
                                     train_classifier)
from fedkr.shared.config import PROFILES, ConfigError
from fedkr.shared.data import DataError


def read_member_logits(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """int64 (N,) labels and finite float32 (N, K) logits from a `--member-logits` file; exits with one line otherwise."""
    try:
        with np.load(path) as saved:
            labels, logits = saved["labels"].astype(np.int64), saved["logits"].astype(np.float32)
    except (OSError, ValueError, KeyError, EOFError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
        sys.exit(f"error: {path}: not a --member-logits file ({exc})")
    if logits.ndim != 2 or not np.isfinite(logits).all():
        sys.exit(f"error: {path}: the logits are not a finite (N, K) array")
    return labels, logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--profile", default="full", choices=sorted(PROFILES))
    parser.add_argument("--member-logits", metavar="FILE.npz", default=None,
                        help="the teacher's logits on the members (dp_fedavg_scatter_teacher.py --member-logits)")
    parser.add_argument("--labels", default="teacher", choices=("teacher", "true"),
                        help="what the student learns: the teacher's soft labels or the true labels [default: teacher]")
    parser.add_argument("--seed", type=int, default=0, help="the student's initialisation and batch order [default: 0]")
    args = parser.parse_args()
    if args.labels == "teacher" and not args.member_logits:
        parser.error("--labels teacher needs --member-logits")
    config = PROFILES[args.profile].run_config(data=args.data, run_id="student-on-teacher-labels")
    try:
        sites, test = load_bench_sites(config)
    except (DataError, ConfigError) as exc:
        sys.exit(f"error: {exc}")
    images = np.concatenate([s.members.images for s in sites])
    labels = np.concatenate([s.members.labels for s in sites]).astype(np.int64)
    num_classes = test.num_classes
    protocol = student_protocol(config)
    agreement = None
    if args.labels == "teacher":
        saved_labels, logits = read_member_logits(Path(args.member_logits))
        if saved_labels.shape != labels.shape or not np.array_equal(saved_labels, labels) \
                or logits.shape != (len(labels), num_classes):
            sys.exit(f"error: {args.member_logits}: its members are not this profile's split")
        targets = probabilities(logits, protocol.temperature).astype(np.float32)
        agreement = round(float(np.mean(logits.argmax(1) == labels)), 4)
    else:
        targets = one_hot(labels, num_classes)
    h, w, c = images.shape[1:]
    model = build_classifier(ClassifierConfig(c, h, w, num_classes, protocol.channels), args.seed)
    started = time.perf_counter()
    train_classifier(model, images, targets, protocol.train_config(args.seed, soft=args.labels == "teacher"))
    seconds = time.perf_counter() - started
    predicted = predict_logits(model, test.images).argmax(1)
    print(json.dumps({
        "labels": args.labels, "member_logits": args.member_logits, "members": len(labels),
        "teacher_member_agreement": agreement, "temperature": protocol.temperature if args.labels == "teacher" else 1.0,
        "epochs": protocol.epochs, "seed": args.seed,
        "test_accuracy": round(float(np.mean(predicted == test.labels)), 4),
        "test_balanced_accuracy": round(float(balanced_accuracy_score(test.labels, predicted)), 4),
        "seconds": round(seconds, 1),
    }), flush=True)


if __name__ == "__main__":
    main()
