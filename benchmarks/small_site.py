"""Whole runs under the default release policy, one per variant and seed: does the gate release, and why not.

Each run is a complete fedkr run in this process (fit, synthesis, distillation, relabelling,
student, audit), the default policy's limits unchanged, so the verdict is the one a site operator
would get. A variant is a profile's settings with some changed (RunConfig keys, as
`fedkr config` prints them). Prints one JSON line per run: the verdict and the policy's reasons,
the student's test accuracy, and per site the white-box generator attack's AUC with its 95%
interval, the attack with the highest upper bound and the site's sizes; the run's seconds per
stage. Leave the `audit-*` keys alone to keep the default policy.
Used to choose the small-site mechanism (a variant per candidate) and to measure the demo's
pass rate over seeds.

    python benchmarks/small_site.py --profile demo --seeds 0,1,2,3,4 --out small-site \\
        --variant base: --variant steps300:generator-steps=300

Runs go under OUT/NAME-sSEED; the JSON lines also go to OUT/small_site.jsonl.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from fedkr.bench import load_bench_sites
from fedkr.client.site import Site
from fedkr.inprocess import InProcessLink
from fedkr.server.coordinator import Coordinator
from fedkr.shared.config import PROFILES, RunConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jsonl import emit  # noqa: E402  (sibling scripts, not a package)


def variant_config(profile: str, name: str, changes: str, seed: int, out: Path) -> RunConfig:
    """The profile's run settings with `changes` ("key=value,key=value", dashed RunConfig keys) and this seed."""
    flat = PROFILES[profile].run_config(run_id=f"{name}-s{seed}").to_flat()
    flat.update({"seed": seed, "out": str(out / f"{name}-s{seed}" / "runs")})
    for pair in filter(None, changes.split(",")):
        key, _, value = pair.partition("=")
        flat[key.strip()] = value.strip()
    return RunConfig.from_flat(flat)


def site_summary(attacks: dict) -> dict:
    """One site's audit entry (metrics.json's audit.sites[site]) reduced to the figures a mechanism is chosen by."""
    results = {k: v for k, v in attacks.items() if isinstance(v, dict) and "auc_ci" in v}
    top = max(results, key=lambda k: results[k]["auc_ci"][1]) if results else None
    generator = results.get("generator_loss")
    first = next(iter(results.values()), {})
    return {
        "members": first.get("num_members"), "holdout": first.get("num_nonmembers"),
        "generator_auc": None if generator is None else round(generator["auc"], 3),
        "generator_auc_ci": None if generator is None else [round(v, 3) for v in generator["auc_ci"]],
        "highest_upper": None if top is None else {"attack": top, "auc": round(results[top]["auc"], 3),
                                                   "auc_ci": [round(v, 3) for v in results[top]["auc_ci"]]},
    }


def run_one(config: RunConfig) -> dict:
    site_data, test = load_bench_sites(config)
    out = Path(config.out).parent
    sites = [Site(f"site-{i}", d, out / "sites" / f"site-{i}", device=config.device) for i, d in enumerate(site_data)]
    started = time.perf_counter()
    outcome = Coordinator(config, test).run(InProcessLink(sites))
    m = outcome.metrics
    audit = m.get("audit") or {}
    return {
        "released": bool(outcome.released),
        "reasons": json.loads(outcome.refusal_path.read_text()).get("reasons", []) if outcome.refusal_path else [],
        "student_test_accuracy": m.get("student_test_accuracy"),
        "sites": {sid: site_summary(a) for sid, a in (audit.get("sites") or {}).items()},
        "stage_seconds": m.get("stage_seconds"),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="demo", choices=sorted(PROFILES))
    parser.add_argument("--seeds", default="0", help="comma-separated run seeds [default: 0]")
    parser.add_argument("--variant", action="append", default=None,
                        help="NAME:key=value,key=value (dashed RunConfig keys); repeatable [default: base:]")
    parser.add_argument("--out", type=Path, default=Path("small-site"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "small_site.jsonl").open("a") as sink:
        for spec in args.variant or ["base:"]:
            name, _, changes = spec.partition(":")
            for seed in (int(s) for s in args.seeds.split(",")):
                config = variant_config(args.profile, name, changes, seed, args.out)
                row = {"variant": name, "changes": changes, "profile": args.profile, "seed": seed, **run_one(config)}
                emit(row, sink)


if __name__ == "__main__":
    main()
