"""What a network trained on images as sharp as the generators' loses on sharper real images.

The sites' generators draw at `generator-resolution` (16 px) and scale their samples up to the
images' size (28 px MedMNIST), so every synthetic image fedkr's student trains on carries 16 px
of detail. This script isolates that from everything else synthetic: it trains the bench's
network (`fedkr.bench.train_on_real`, the student protocol, hard labels) on real training images,
either as they are ("sharp") or resampled to the resolution and back as the generators' samples
are (`fedkr.shared.classifier.resample_input`), and tests it on the real test images, sharp or
resampled alike:

- sharp / sharp: the network at full detail;
- resampled / sharp: trained as fedkr's student is, at the images' detail, tested on real images;
- resampled / resampled: the same network with `ClassifierConfig.input_resolution` set, which
  resamples every input (what `student-resample` gives the student).

One JSON line per (condition, seed):

    python benchmarks/input_resolution.py --data ../shared/data/medmnist/bloodmnist.npz --train-images 2000 \\
        --resolution 16 --seeds 0,1 --out results.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from fedkr.bench import train_on_real
from fedkr.shared.classifier import resample_input, to_tensor, to_uint8
from fedkr.shared.data import DataError, load_dataset
from fedkr.student_protocol import StudentProtocol

from arglists import parse_list

CONDITIONS = {"sharp/sharp": (False, False), "resampled/sharp": (True, False), "resampled/resampled": (True, True)}


def resampled(images: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 (N, H, W, C) images resampled to `resolution` px and back (`resample_input`), as uint8 again."""
    return to_uint8(resample_input(to_tensor(images), resolution))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a MedMNIST .npz (or any data fedkr loads) with a test split")
    parser.add_argument("--resolution", type=int, default=16, help="the generators' resolution, px")
    parser.add_argument("--train-images", type=int, default=0, help="train on this many training images (0: all)")
    parser.add_argument("--epochs", type=int, default=40, help="the student protocol's epochs (the bench's: 40)")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, appended")
    args = parser.parse_args()
    seeds = parse_list(args.seeds, int, "--seeds", parser, inclusive=True)
    conditions = [name.strip() for name in args.conditions.split(",") if name.strip()]
    unknown = [name for name in conditions if name not in CONDITIONS]
    if unknown:
        parser.error(f"unknown condition(s) {', '.join(unknown)}: use {', '.join(CONDITIONS)}")
    if args.resolution < 1 or args.train_images < 0 or args.epochs < 1:
        parser.error("--resolution and --epochs must be at least 1, --train-images at least 0")
    try:
        splits = load_dataset(args.data, seed=0)
    except (DataError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    train, test = splits.train, splits.test
    if args.train_images and args.train_images < len(train.labels):
        keep = np.sort(np.random.default_rng(0).choice(len(train.labels), args.train_images, replace=False))
        train = replace(train, images=train.images[keep], labels=train.labels[keep])
    protocol = StudentProtocol(epochs=args.epochs)
    blurred_train, blurred_test = resampled(train.images, args.resolution), resampled(test.images, args.resolution)
    for name in conditions:
        train_blurred, test_blurred = CONDITIONS[name]
        test_set = replace(test, images=blurred_test) if test_blurred else test
        for seed in seeds:
            _, accuracy, seconds = train_on_real(blurred_train if train_blurred else train.images, train.labels, test_set,
                                                 protocol, seed, test.num_classes)
            row = {"data": Path(args.data).name, "resolution": args.resolution, "image_size": list(train.images.shape[1:3]),
                   "train_images": len(train.labels), "test_images": len(test.labels), "condition": name, "seed": seed,
                   "epochs": args.epochs, "accuracy": round(accuracy, 4), "seconds": round(seconds, 1)}
            with args.out.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
