"""Score the rules that combine the sites' soft labels (`relabel-combine`) as ensembles of a fit's teachers on the real test split.

The coordinator labels the student's images with every site's teacher, combined by
`server.relabel.combine` ("support" or "label-shift"). The student learns those labels on
synthetic images; the same ensemble on the real test split says how well each rule's labels match
real images of known class. For each teacher and each rule this prints one JSON row: test
accuracy, balanced accuracy, the negative log-likelihood of the true class (nats per image, at
temperature 1: how calibrated the labels are) and the mean label against the members' pooled
class prior (their total variation distance). "support" is scored at temperature 1 and at the
fit's temperature (its argmax depends on the temperature; "label-shift"'s does not).

The teachers are a finished fit's (`fedkr simulate` or `fedkr bench`: the sites folder, the run
id and its metrics.json or bench.json, as for `levers.py`; a run that reused another's fit is
followed to it); only the test split is scored, and nothing trains.

    python benchmarks/relabel_combine.py --data ../shared/data/medmnist/bloodmnist.npz --sites 4 \\
        --partition dirichlet:0.5 --sites-dir bench/sites --fit-run bench-seed0 --fit-reports bench/bench.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from fedkr.server.relabel import class_counts, combine
from fedkr.shared.classifier import predict_logits, probabilities
from fitted_run import add_fit_arguments, fit_models_dirs, fit_teachers, fit_test_split, read_fit


def ensemble_scores(labels: np.ndarray, probs: np.ndarray, prior: np.ndarray) -> dict[str, float]:
    """Scores of float (N, K) probabilities against int (N,) true labels and the float (K,) members' prior."""
    predicted = probs.argmax(1)
    picked = np.clip(probs[np.arange(len(labels)), labels].astype(np.float64), 1e-12, None)
    return {"test_accuracy": round(float(np.mean(predicted == labels)), 4),
            "test_balanced_accuracy": round(float(balanced_accuracy_score(labels, predicted)), 4),
            "test_nll": round(float(-np.mean(np.log(picked))), 4),
            "mean_label_tv_from_prior": round(float(0.5 * np.abs(probs.mean(0) - prior).sum()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_fit_arguments(parser)
    args = parser.parse_args()
    config, reports = read_fit(parser, args)
    sites = list(reports)
    counts = class_counts(reports, sites)
    prior = counts.sum(0) / counts.sum()
    test = fit_test_split(parser, args.data, config.seed, config.image_size)
    teachers = list(fit_teachers(parser, fit_models_dirs(parser, args.sites_dir, args.fit_run, sites)).values())
    logits = [predict_logits(teacher, test.images) for teacher in teachers]
    at_one = [probabilities(z, 1.0) for z in logits]
    at_t = [probabilities(z, config.temperature) for z in logits]
    common = {"data": args.data, "fit_run": args.fit_run, "test_images": len(test.labels), "temperature": config.temperature}
    for sid, probs in zip(sites, at_one, strict=True):
        print(json.dumps({**common, "ensemble": sid, **ensemble_scores(test.labels, probs, prior)}))
    softened = f"support, T={config.temperature:g}"
    rows = {"support, T=1": combine(at_one, counts, "support", 1.0),
            softened: combine(at_t, counts, "support", config.temperature),
            "label-shift": combine(at_one, counts, "label-shift", 1.0)}
    for name, probs in rows.items():
        scores = ensemble_scores(test.labels, probs, prior)
        if name == softened and config.temperature != 1.0:
            scores["test_nll"] = None  # softened labels: their likelihood is not comparable
        print(json.dumps({**common, "ensemble": name, **scores}))


if __name__ == "__main__":
    main()
