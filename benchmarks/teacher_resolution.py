"""Score a fit's teachers on the real test split as it is and resampled to the generators' resolution.

A site's generator draws at its working resolution (16 px for 28 px MedMNIST) and scales its
samples up, so every synthetic image carries only that much detail. The site's teacher labels
those images (its shards' soft labels, its in-distribution filter and the coordinator's
relabelling), but it trained on its members at full detail. This script measures what that
mismatch does to the teachers' answers on images of known class: each teacher, and the
coordinator's combination of them (`server.relabel.combine`, the run's rule, at temperature 1),
on the real test images as they are and resampled to the generators' resolution and back
(`shared.classifier.resample_input`, as the generators scale their samples). A teacher whose own
network resamples its inputs (`ClassifierConfig.input_resolution`) is scored the same way.

One JSON row per teacher (and one for the combination) and per input: test accuracy, balanced
accuracy, and the share of test images given each class, beside the test split's class shares.
Nothing trains.

    python benchmarks/teacher_resolution.py --data ../shared/data/medmnist/breastmnist.npz --sites 4 \\
        --partition dirichlet:0.5 --sites-dir bench/sites --fit-run bench-seed0 --fit-reports bench/bench.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from fedkr.server.relabel import class_counts, combine
from fedkr.shared.classifier import (predict_logits, probabilities, resample_input, resampling_resolution, to_tensor,
                                     to_uint8)
from fedkr.shared.reports import generator_resolutions
from fitted_run import add_fit_arguments, fit_models_dirs, fit_teachers, fit_test_split, read_fit


def prediction_scores(labels: np.ndarray, probs: np.ndarray, num_classes: int) -> dict:
    """Accuracy, balanced accuracy and per-class prediction shares of float (N, K) `probs` against int (N,) `labels`."""
    predicted = probs.argmax(1)
    return {"test_accuracy": round(float(np.mean(predicted == labels)), 4),
            "test_balanced_accuracy": round(float(balanced_accuracy_score(labels, predicted)), 4),
            "predicted_shares": [round(float(s), 4) for s in np.bincount(predicted, minlength=num_classes) / len(labels)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_fit_arguments(parser)
    parser.add_argument("--resolution", type=int, default=0,
                        help="the resolution (px) to resample the test images to (default: the smallest the sites' generators report)")
    args = parser.parse_args()
    config, reports = read_fit(parser, args)
    sites = list(reports)
    if args.resolution < 0:
        parser.error(f"--resolution must be positive, got {args.resolution}")
    resolution = args.resolution or min(generator_resolutions(reports.values()), default=0)
    if resolution <= 0:
        parser.error("the fit reports name no generator resolution: give --resolution")
    counts = class_counts(reports, sites)
    rule = config.relabel_combine
    test = fit_test_split(parser, args.data, config.seed, config.image_size)
    if not resampling_resolution(resolution, test.images.shape[1:3]):
        parser.error(f"resolution {resolution} px is not below the test images' side ({test.images.shape[1]} px): "
                     "nothing would be resampled")
    num_classes = counts.shape[1]
    inputs = {"as they are": test.images,
              f"resampled to {resolution} px": to_uint8(resample_input(to_tensor(test.images), resolution))}
    common = {"data": args.data, "fit_run": args.fit_run, "test_images": len(test.labels),
              "test_shares": [round(float(s), 4) for s in np.bincount(test.labels, minlength=num_classes) / len(test.labels)]}
    teachers = fit_teachers(parser, fit_models_dirs(parser, args.sites_dir, args.fit_run, sites))
    for name, images in inputs.items():
        probs = {sid: probabilities(predict_logits(teacher, images), 1.0) for sid, teacher in teachers.items()}
        for sid, p in probs.items():
            print(json.dumps({**common, "teacher": sid, "teacher_input_resolution": teachers[sid].config.input_resolution,
                              "inputs": name, **prediction_scores(test.labels, p, num_classes)}))
        combined = combine([probs[sid] for sid in sites], counts, rule, 1.0)
        print(json.dumps({**common, "teacher": f"{rule}, T=1", "inputs": name,
                          **prediction_scores(test.labels, combined, num_classes)}))


if __name__ == "__main__":
    main()
