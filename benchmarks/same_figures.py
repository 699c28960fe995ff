"""Print the figures a refactoring must keep: the demo profile's run and the quick bench, same seed.

Run it with the same command in two checkouts (each with its own editable install) and compare the
JSON lines. The demo profile runs in process with a fixed run id (`cmp-demo`), so that the sites
draw the same images (their seeds derive from the run id). Reads either API: `fedkr.shared.config`
profiles, or the older `fedkr.server.config` and bench profiles.

    python benchmarks/same_figures.py /tmp/figures-a demo     # or: quick
"""
import json
import sys
import time
from pathlib import Path
import torch
torch.set_num_threads(2)
out = Path(sys.argv[1]); what = sys.argv[2]
out.mkdir(parents=True, exist_ok=True)
from fedkr.client.site import Site
from fedkr.client.site_data import SiteDataSpec, load_site_data
from fedkr.server.coordinator import Coordinator
from fedkr.shared.data import load_digits_splits
try:
    from fedkr.inprocess import InProcessLink
except ImportError:
    from fedkr.server.link import InProcessLink
try:
    from fedkr.shared.config import PROFILES, RunConfig
    new = True
except ImportError:
    from fedkr.server.config import RunConfig
    new = False
started = time.perf_counter()
if what == "demo":
    demo = dict(data="digits", partition="iid", rounds=2, ipc=20, samples_per_class=40, generator_steps=600,
                generator_hflip=False, teacher_epochs=30, student_epochs=60, out=str(out / "runs"), run_id="cmp-demo")
    config = PROFILES["demo"].run_config(out=str(out / "runs"), run_id="cmp-demo") if new else RunConfig(**demo)
    # the profile's own sites and holdout (two sites of 360 v 360 since 7ade12c); the older API's demo: 3 sites, holdout 0.2
    num_sites, holdout = (config.sites, config.holdout_fraction) if new else (3, 0.2)
    sites = [Site(f"site-{i}", load_site_data(SiteDataSpec("digits", i, num_sites, "iid", 0, holdout)), out / "sites" / f"site-{i}")
             for i in range(num_sites)]
    outcome = Coordinator(config, load_digits_splits().test).run(InProcessLink(sites))
    m = outcome.metrics
    audit = {sid: {a: round(r["auc"], 4) for a, r in v.items() if isinstance(r, dict) and "auc" in r} for sid, v in m["audit"]["sites"].items()}
    print(json.dumps({"accuracy": m["student_test_accuracy"], "pool": m["pool_size"], "released": outcome.released,
                      "audit": audit, "fit": {s: round(r["teacher_holdout_accuracy"], 4) for s, r in m["sites"].items()},
                      "gen_loss": {s: round(r["generator_final_loss"], 5) for s, r in m["sites"].items()},
                      "seconds": round(time.perf_counter() - started)}))
else:
    from fedkr.bench import run_bench
    if new:
        p = PROFILES["quick"]
        result = run_bench(p.run_config(), p.bench_settings(), out / "bench", profile="quick")
    else:
        from fedkr.bench import PROFILES as OLD
        result = run_bench("digits", OLD["quick"], out / "bench")
    d = result.to_dict()
    print(json.dumps({k: {"acc": [round(a, 4) for a in v["accuracy"]], "auc": v["mia_auc"]} for k, v in d["methods"].items()}
                     | {"seconds": round(time.perf_counter() - started)}))
