"""Which label teaches a site's synthetic images better, measured by the site alone on its own holdout.

For each site of a fitted run (`fedkr simulate`'s sites folder and metrics.json): draw
`--per-class` images of every class the site holds at least `min-class-members` members of (the
classes the coordinator asks it for) from its generator, label them
with the drawn class mixed into its teacher's soft labels at each weight w of `--weights`
(`server.relabel.mix_drawn_class`: w 0 is the soft labels alone, w 1 the drawn class alone), train
the product's student network on each labelling (`fedkr.student_protocol`, at the run's
temperature and student epochs), and score each student on the site's holdout: accuracy and
balanced accuracy over the classes the site holds. Every figure is one a site can compute on its
own data; whether it predicts which `drawn-class-weight` serves the coordinator's student is what
this measures, next to `levers.py` on the same fit.

    python benchmarks/label_probe.py --data ../shared/data/medmnist/bloodmnist.npz --sites 4 \\
        --partition dirichlet:0.5 --sites-dir runs/sites --fit-run RUN --fit-reports runs/RUN/release/metrics.json

One JSON line per site on stdout.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from fedkr.client.site import load_teacher
from fedkr.client.site_data import SiteDataSpec, load_site_data
from fedkr.server.relabel import mix_drawn_class
from fedkr.server.student import student_config_for
from fedkr.shared.classifier import accuracy, build_classifier, embed_and_logits, predict_logits, probabilities, train_classifier
from fedkr.shared.generator_kinds import load_generator
from fedkr.student_protocol import StudentProtocol

from fitted_run import add_fit_arguments, fit_models_dirs, fit_run_config, fit_settings, read_fit_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_fit_arguments(parser, reports_help="the fit run's metrics.json (or a refused run's refusal.json)")
    parser.add_argument("--per-class", type=int, default=100, help="images drawn per class the site holds")
    parser.add_argument("--weights", default="0,0.5,1", help="drawn-class weights w in [0, 1], comma-separated")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws and the students")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
    try:
        weights = [float(w) for w in args.weights.split(",")]
    except ValueError as exc:
        parser.error(f"--weights must be numbers in [0, 1], comma-separated ({exc})")
    saved = read_fit_file(parser, args.fit_reports)
    if not all(0.0 <= w <= 1.0 for w in weights):
        parser.error(f"--weights must be numbers in [0, 1], got {args.weights}")
    if args.per_class < 1:
        parser.error("--per-class must be at least 1")
    if not isinstance(saved.get("config"), dict):
        parser.error(f"{args.fit_reports}: not a fit run's metrics.json or refusal.json (no run settings)")
    settings = fit_settings(saved)
    config = fit_run_config(parser, args, settings)
    protocol = StudentProtocol(epochs=config.student_epochs, temperature=config.temperature)
    site_ids = [f"site-{index}" for index in range(args.sites)]
    for index, (site_id, run_dir) in enumerate(fit_models_dirs(parser, args.sites_dir, args.fit_run, site_ids).items()):
        data = load_site_data(SiteDataSpec(args.data, index, args.sites, args.partition, config.seed,
                                           config.holdout_fraction, config.image_size))
        teacher, generator = load_teacher(run_dir), load_generator(run_dir / "generator")
        held = np.flatnonzero(data.members.class_counts() >= config.min_class_members)  # the classes the product asks for
        drawn = np.repeat(held, args.per_class).astype(np.int64)
        started = time.perf_counter()
        images = generator.sample(drawn, seed=args.seed)
        sample_seconds = time.perf_counter() - started
        _, logits = embed_and_logits(teacher, images)
        soft = probabilities(logits, config.temperature)
        keep = np.isin(data.holdout.labels, held)
        holdout_images, holdout_labels = data.holdout.images[keep], data.holdout.labels[keep]
        row = {"site": site_id, "members": len(data.members), "holdout": int(keep.sum()), "classes": held.tolist(),
               "per_class": args.per_class, "teacher_agreement": round(float((logits.argmax(1) == drawn).mean()), 4),
               "teacher_holdout_accuracy": round(accuracy(teacher, holdout_images, holdout_labels), 4),
               "sample_seconds": round(sample_seconds, 1), "students": {}}
        for w in weights:
            student = build_classifier(student_config_for(data.members.images.shape[1:], soft.shape[1]), args.seed)
            train_classifier(student, images, mix_drawn_class(soft, drawn, w), protocol.train_config(args.seed, soft=True))
            predicted = predict_logits(student, holdout_images).argmax(1)
            row["students"][str(w)] = {"accuracy": round(float(accuracy_score(holdout_labels, predicted)), 4),
                                       "balanced_accuracy": round(float(balanced_accuracy_score(holdout_labels, predicted)), 4)}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
