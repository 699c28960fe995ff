"""Flower FedAvg tuned as an opponent: test accuracy after every round over a grid of local epochs and learning rates.

`fedkr bench` runs FedAvg with one schedule: the profile's `fedavg-rounds` x `fedavg-local-epochs`
and the one protocol's AdamW learning rate (`fedkr/student_protocol.py`). An honest comparison
tunes the opponent as carefully as fedkr. This script runs the bench's own FedAvg
(`fedkr.bench_fedavg.run_fedavg`: Flower's FedAvg strategy through its simulation engine, the
bench's network, protocol and per-round step floor, `fedkr.bench.fedavg_train_config`) on the
bench's sites (the profile's split at seed 0, as `fedkr bench` draws them) for every pair of
`--local-epochs` and `--lr`, `--rounds` rounds each, for every seed. Each run is one JSON line
in `--out`, written as soon as it ends (a rerun with the same file skips the runs it holds):
the test accuracy after every round and the bytes a site had uploaded by the end of it (mean over
sites), so that FedAvg's best at any budget and its figure at fedkr's upload can be read off.

The grid is scored on the test split, as the bench's other settings were chosen: a tuned FedAvg's
figure here is an upper estimate of what it reaches on new data. A round's accuracy is the run's
own prefix (local steps sized for `--rounds` rounds), not a FedAvg configured to stop there.

    pip install -e ".[bench]"
    python benchmarks/fedavg_grid.py --data ../shared/data/medmnist/bloodmnist.npz --sites 4 \\
        --partition dirichlet:0.5 --local-epochs 4,8 --lr 1e-3,2e-3,4e-3 --rounds 5 --seeds 0 --out fedavg-grid.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from fedkr.bench import fedavg_train_config, load_bench_sites, student_protocol
from fedkr.bench_fedavg import FedAvgSettings, run_fedavg
from fedkr.cli_common import setup_logging
from fedkr.shared.config import PROFILES, ConfigError
from fedkr.shared.data import DataError

from arglists import parse_list

#: What makes two runs the same run (a rerun with the same --out skips one already written).
RUN_KEYS = ("data", "profile", "sites", "partition", "rounds", "local_epochs", "lr", "seed")


def written_runs(path: Path) -> set[tuple]:
    """The runs `path` (JSON lines) already holds, by `RUN_KEYS`; none when it does not exist.

    A last line without its newline is a row whose writing was cut off: it is dropped from the file (that run
    runs again) with a line on stderr. Any other line that is not a row of this script exits with one line.
    """
    if not path.exists():
        return set()
    text = path.read_text()
    if text and not text.endswith("\n"):
        complete = text[: text.rfind("\n") + 1]
        print(f"{path}: its last line was cut off while being written; dropped, that run runs again", file=sys.stderr)
        os.truncate(path, len(complete.encode()))  # in place: a kill now loses no whole row
        text = complete
    done = set()
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            row = json.loads(line)
            done.add(tuple(row[key] for key in RUN_KEYS))
        except (json.JSONDecodeError, KeyError, TypeError):
            sys.exit(f"error: {path}, line {number}: not a row of this script; give another --out")
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="as `fedkr bench --data`")
    parser.add_argument("--profile", default="full", choices=sorted(PROFILES), help="[default: full]")
    parser.add_argument("--sites", type=int, default=None, help="[default: the profile's]")
    parser.add_argument("--partition", default=None, help="'iid' or 'dirichlet:ALPHA' [default: the profile's]")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per run [default: the profile's fedavg-rounds]")
    parser.add_argument("--local-epochs", default=None,
                        help="epochs per site and round, comma-separated [default: the profile's fedavg-local-epochs]")
    parser.add_argument("--lr", default=None, help="AdamW learning rates, comma-separated [default: the protocol's]")
    parser.add_argument("--seeds", default="0", help="comma-separated [default: 0]")
    parser.add_argument("--out", type=Path, default=Path("fedavg-grid.jsonl"), help="JSON lines, appended to")
    args = parser.parse_args()
    setup_logging(verbose=False)
    try:
        config = PROFILES[args.profile].run_config(data=args.data, sites=args.sites, partition=args.partition,
                                                   run_id="fedavg-grid")
        bench = PROFILES[args.profile].bench_settings()
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    protocol = student_protocol(config)
    rounds = args.rounds if args.rounds is not None else bench.fedavg_rounds
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    local_epochs = parse_list(args.local_epochs, int, "--local-epochs", parser) if args.local_epochs is not None \
        else [bench.fedavg_local_epochs]
    rates = parse_list(args.lr, float, "--lr", parser) if args.lr is not None else [protocol.train_config(0, soft=False).lr]
    seeds = parse_list(args.seeds, int, "--seeds", parser, inclusive=True)
    done = written_runs(args.out)
    try:
        sites, test = load_bench_sites(config.with_overrides(seed=0))  # the bench's split
    except DataError as exc:
        sys.exit(f"error: {exc}")
    plans = [(epochs, lr, seed) for seed in seeds for epochs in local_epochs for lr in rates]
    for number, (epochs, lr, seed) in enumerate(plans, start=1):
        run = {"data": args.data, "profile": args.profile, "sites": config.sites, "partition": config.partition,
               "rounds": rounds, "local_epochs": epochs, "lr": lr, "seed": seed}
        if tuple(run[key] for key in RUN_KEYS) in done:
            print(f"[{number}/{len(plans)}] local epochs {epochs}, lr {lr:g}, seed {seed}: in {args.out} already",
                  file=sys.stderr)
            continue
        print(f"[{number}/{len(plans)}] local epochs {epochs}, lr {lr:g}, seed {seed}: {rounds} rounds", file=sys.stderr)
        started = time.perf_counter()
        try:
            result = run_fedavg([s.members for s in sites], test, fedavg_train_config(protocol, seed, rounds, lr),
                                FedAvgSettings(rounds=rounds, local_epochs=epochs, seed=seed, channels=protocol.channels))
        except ValueError as exc:  # the sites or settings do not fit FedAvg; the runs written so far are kept
            sys.exit(f"error: {exc}")
        row = {**run, "accuracy_by_round": result.accuracy_by_round,
               "upload_bytes_by_round": result.upload_bytes_by_round, "test_accuracy": result.test_accuracy,
               "seconds": round(result.seconds, 1), "wall_seconds": round(time.perf_counter() - started, 1)}
        with args.out.open("a") as out:
            out.write(json.dumps(row) + "\n")
        best = max(result.accuracy_by_round)
        print(f"    test accuracy by round {[round(a, 3) for a in result.accuracy_by_round]} (best {best:.3f}); "
              f"{row['seconds']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
