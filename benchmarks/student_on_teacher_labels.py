"""Bound what a teacher's soft labels can teach the student: the bench's student on the members' own images, labelled by the teacher.

fedkr's student learns from synthetic images labelled by the sites' teachers. Under DP the
teachers bound the student from above (docs/audit.md, "What the private teachers can teach"), and
the synthetic images cost a further 0.02-0.05. This script separates the two: it trains the
bench's student, with the bench's one protocol (`fedkr.student_protocol`: CompactCNN, KL at the
run's temperature, the profile's student epochs), on the sites' real members, pooled, each
labelled by the teacher's soft labels `softmax(logits / T)` at the run's temperature T, as a site
labels its synthetic images. A generator that drew the members' distribution exactly could teach
no more than this; the student's test accuracy is that ceiling for the teacher's labels.

It is a bound, not a method: the coordinator never sees the members' images. The teacher's
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
import time

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from fedkr.bench import load_bench_sites, student_protocol
from fedkr.shared.classifier import (ClassifierConfig, build_classifier, one_hot, predict_logits, probabilities,
                                     train_classifier)
from fedkr.shared.config import PROFILES


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
    sites, test = load_bench_sites(config)
    images = np.concatenate([s.members.images for s in sites])
    labels = np.concatenate([s.members.labels for s in sites]).astype(np.int64)
    num_classes = test.num_classes
    protocol = student_protocol(config)
    agreement = None
    if args.labels == "teacher":
        try:
            with np.load(args.member_logits) as saved:
                saved_labels, logits = saved["labels"], saved["logits"].astype(np.float32)
        except (OSError, ValueError, KeyError) as exc:
            parser.error(f"{args.member_logits}: not a --member-logits file ({exc})")
        if saved_labels.shape != labels.shape or not np.array_equal(saved_labels, labels) \
                or logits.shape != (len(labels), num_classes):
            parser.error(f"{args.member_logits}: its members are not this profile's split")
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
