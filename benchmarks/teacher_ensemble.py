"""Score the sites' teachers together as the coordinator combines them: the support-weighted ensemble on the test split.

The coordinator labels every distilled image by its default rule (`relabel-combine` "support",
`server.relabel.combine_labels`): each class's probability comes from the sites in proportion to
their members of that class (`benchmarks/relabel_combine.py` scores both rules). The student
learns those labels on synthetic images, so the same ensemble on the real test split is a
ceiling on what the teachers can teach it. `dp_teacher.py` and `dp_scatter_teacher.py` write
each site's teacher's test probabilities with `--test-probabilities FILE.npz`; this script reads
one file per site and prints each teacher's and the ensemble's test accuracy and balanced accuracy.

    python benchmarks/teacher_ensemble.py site0.npz site1.npz site2.npz site3.npz
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from fedkr.server.relabel import combine_labels, support_from_counts


def save_test_probabilities(path: str, probabilities: np.ndarray, test_labels: np.ndarray, member_class_counts: np.ndarray) -> None:
    """Write float32 (T, K) test probabilities, int64 (T,) test labels and int64 (K,) member counts to `path` (.npz)."""
    np.savez(path, probabilities=probabilities.astype(np.float32), test_labels=test_labels.astype(np.int64),
             member_class_counts=np.asarray(member_class_counts, dtype=np.int64))


def holdout_scores(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """A teacher on a site's holdout: accuracy, balanced accuracy and the share of its most frequent
    prediction (1.0: collapsed to one class), from int (N,) true and predicted labels."""
    return {"accuracy": round(float(np.mean(predicted == labels)), 4),
            "balanced_accuracy": round(float(balanced_accuracy_score(labels, predicted)), 4),
            "top_prediction_share": round(float(np.bincount(predicted).max() / len(predicted)), 4)}


def scores(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    predicted = probabilities.argmax(1)
    return {"test_accuracy": round(float(np.mean(predicted == labels)), 4),
            "test_balanced_accuracy": round(float(balanced_accuracy_score(labels, predicted)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="one .npz per site, from --test-probabilities")
    args = parser.parse_args()
    loaded = []
    for name in args.files:
        try:
            with np.load(name) as data:
                loaded.append((data["probabilities"], data["test_labels"], data["member_class_counts"]))
        except (OSError, KeyError, ValueError) as error:
            sys.exit(f"error: {name}: not a test-probabilities file ({error})")
    labels = loaded[0][1]
    if any(not np.array_equal(entry[1], labels) or entry[0].shape != loaded[0][0].shape for entry in loaded):
        sys.exit("error: the files do not score the same test split")
    for name, (probabilities, _, _) in zip(args.files, loaded):
        print(json.dumps({"teacher": Path(name).name, **scores(labels, probabilities)}))
    support = support_from_counts(np.stack([entry[2] for entry in loaded]))
    ensemble = combine_labels([entry[0] for entry in loaded], support)
    print(json.dumps({"teacher": "support-weighted ensemble", **scores(labels, ensemble)}))


if __name__ == "__main__":
    main()
