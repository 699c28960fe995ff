"""Print the figures a refactoring must keep: the demo profile's run and the quick bench, same seed.

Run it with the same command in two checkouts (each with its own editable install) and compare the
JSON lines. The demo profile runs in process with a fixed run id (`cmp-demo`), so that the sites
draw the same images (their seeds derive from the run id). Reads `fedkr.shared.config`'s profiles
(checkouts from before them need this file as it was at 2092ade).

    python benchmarks/same_figures.py /tmp/figures-a demo     # or: quick
"""
import json
import sys
import time
from pathlib import Path

import torch
from fedkr.client.site import Site
from fedkr.client.site_data import SiteDataSpec, load_site_data
from fedkr.server.coordinator import Coordinator
from fedkr.shared.config import PROFILES
from fedkr.shared.data import load_digits_splits

from fedkr.inprocess import InProcessLink


def main() -> None:
    torch.set_num_threads(2)
    out = Path(sys.argv[1])
    what = sys.argv[2]
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if what == "demo":
        config = PROFILES["demo"].run_config(out=str(out / "runs"), run_id="cmp-demo")
        sites = [Site(f"site-{i}", load_site_data(SiteDataSpec("digits", i, config.sites, "iid", 0, config.holdout_fraction)),
                      out / "sites" / f"site-{i}") for i in range(config.sites)]
        outcome = Coordinator(config, load_digits_splits().test).run(InProcessLink(sites))
        m = outcome.metrics
        audit = {sid: {a: round(r["auc"], 4) for a, r in v.items() if isinstance(r, dict) and "auc" in r}
                 for sid, v in m["audit"]["sites"].items()}
        print(json.dumps({"accuracy": m["student_test_accuracy"], "pool": m["pool_size"], "released": outcome.released,
                          "audit": audit, "fit": {s: round(r["teacher_holdout_accuracy"], 4) for s, r in m["sites"].items()},
                          "gen_loss": {s: round(r["generator_final_loss"], 5) for s, r in m["sites"].items()},
                          "seconds": round(time.perf_counter() - started)}))
    else:
        from fedkr.bench import run_bench

        profile = PROFILES["quick"]
        result = run_bench(profile.run_config(), profile.bench_settings(), out / "bench", profile="quick")
        d = result.to_dict()
        print(json.dumps({k: {"acc": [round(a, 4) for a in v["accuracy"]], "auc": v["mia_auc"]} for k, v in d["methods"].items()}
                         | {"seconds": round(time.perf_counter() - started)}))


if __name__ == "__main__":
    main()
