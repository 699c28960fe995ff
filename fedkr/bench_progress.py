"""A bench's progress on disk, so that an interrupted `fedkr bench` continues (`--resume`) instead of starting over.

A bench of three seeds on BloodMNIST runs for over two hours on 2 cores. `run_bench` writes
OUT/bench-progress.json when it starts and again after every finished seed: the settings it runs
with, the seeds done, every method's figures so far, the coordinator view (first seed) and the
sites' fit. A resumed bench checks that its settings are the file's, restores the figures and
runs the seeds not done; a seed cut off half-way runs again from its start. The sites' ledgers
already hold that seed's run id by then (a site labels one set per run), so the seed runs again
under a new run id (`bench-seed1-try2`), and each seed's bytes are those of its own run id.

The file is written whole to a temporary name and renamed over the old one, so that a kill during
the write leaves the previous state.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedkr.client.gate import read_ledger
from fedkr.client.site import Site
from fedkr.server.coordinator import FitResult
from fedkr.shared.config import BenchSettings, ConfigError, RunConfig
from fedkr.shared.json_input import JSONInputError, read_json_file
from fedkr.shared.release_inspect import METRICS_LIMITS
from fedkr.shared.reports import FitReport

from .coordinator_view import ViewEntry

PROGRESS_FILE = "bench-progress.json"
SCHEMA = "fedkr.bench-progress/1"



def progress_key(config: RunConfig, settings: BenchSettings, profile: str, reuse_dir: Path | None) -> dict[str, Any]:
    """What a resumed bench must share with the one it continues: profile, bench settings, run settings
    (all but the run id) and the reused fit's folder; as JSON would store it."""
    run = {key: value for key, value in config.to_flat().items() if key != "run-id"}
    key = {"profile": profile, "settings": asdict(settings), "run": run,
           "reuse_fit": None if reuse_dir is None else str(Path(reuse_dir).resolve())}
    return json.loads(json.dumps(key, default=str))


@dataclass
class BenchProgress:
    """Everything a bench has measured so far. `rows` are `MethodRow`s as dicts (`dataclasses.asdict`),
    `views` the coordinator view's entries by method (`ViewEntry.to_dict`), `fit` the sites' fit
    (`fit_to_dict`) once known, `seconds` the wall time of the earlier invocations (s), and
    `resumed_at_seeds` the seed each resumed invocation started at."""

    key: dict[str, Any]
    seeds_done: int = 0
    rows: dict[str, dict] = field(default_factory=dict)
    fedkr_runs: list[dict] = field(default_factory=list)
    views: dict[str, list[dict]] = field(default_factory=dict)
    fit: dict[str, Any] | None = None
    seconds: float = 0.0
    resumed_at_seeds: list[int] = field(default_factory=list)

    def save(self, out: Path) -> Path:
        """Write OUT/bench-progress.json atomically (a temporary file renamed over the old one)."""
        path = Path(out) / PROGRESS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(PROGRESS_FILE + ".tmp")
        staging.write_text(json.dumps({"schema": SCHEMA, **asdict(self)}, indent=1, default=str))
        os.replace(staging, path)
        return path

    @classmethod
    def load(cls, out: Path, key: dict[str, Any]) -> BenchProgress:
        """The progress in OUT, checked against `key` (`progress_key` of the resumed bench).

        Raises `ConfigError` (one line) when OUT holds no progress file, when the file is not one, or
        when it was written by a bench with other settings (naming the first ones that differ).
        """
        path = Path(out) / PROGRESS_FILE
        if not path.is_file():
            raise ConfigError(f"{out}: no {PROGRESS_FILE}, so no unfinished bench to resume")
        try:
            data = read_json_file(path, limits=METRICS_LIMITS)  # a few seeds' figures: far below a metrics file's limit
        except JSONInputError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ConfigError(f"{path}: not a bench progress file of this version ({SCHEMA})")
        saved_key = data.get("key") or {}
        if saved_key != key:
            raise ConfigError(f"{out} holds a bench with other settings ({', '.join(_differences(saved_key, key))}): "
                              "resume it with its own options, or give another --out")
        try:
            return cls(**{name: value for name, value in data.items() if name != "schema"})
        except TypeError as exc:
            raise ConfigError(f"{path}: not a bench progress file of this version ({exc})") from None

    def view_entries(self) -> dict[str, list[ViewEntry]]:
        """`views` as `ViewEntry`s again."""
        return {name: [ViewEntry(**{k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()})
                       for entry in entries] for name, entries in self.views.items()}


def _differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """'name: saved -> wanted' for the first few settings that differ (run settings by their own key)."""
    flat_saved = {**{k: v for k, v in saved.items() if k != "run"}, **(saved.get("run") or {})}
    flat_wanted = {**{k: v for k, v in wanted.items() if k != "run"}, **(wanted.get("run") or {})}
    names = sorted(set(flat_saved) | set(flat_wanted))
    differ = [f"{name}: {flat_saved.get(name)!r} there, {flat_wanted.get(name)!r} now" for name in names
              if flat_saved.get(name) != flat_wanted.get(name)]
    return differ[:4] + ([f"and {len(differ) - 4} more"] if len(differ) > 4 else [])


def fit_to_dict(fit: FitResult, dirs: dict[str, Path]) -> dict[str, Any]:
    """The sites' fit as the progress file keeps it: run id, fit reports, failures, label space, image shape,
    seconds, and each site's fit folder."""
    return {"run_id": fit.run_id, "reports": {sid: r.to_dict() for sid, r in fit.reports.items()},
            "failed": dict(fit.failed), "class_names": list(fit.class_names), "image_shape": list(fit.image_shape),
            "seconds": fit.seconds, "dirs": {sid: str(path) for sid, path in dirs.items()}}


def fit_from_dict(data: dict[str, Any]) -> tuple[FitResult, dict[str, Path]]:
    """`fit_to_dict` read back. Raises `ConfigError` when a report or field is malformed."""
    try:
        fit = FitResult(str(data["run_id"]), {sid: FitReport.from_dict(r) for sid, r in data["reports"].items()},
                        dict(data["failed"]), tuple(data["class_names"]), tuple(int(n) for n in data["image_shape"]),
                        float(data["seconds"]))
        return fit, {sid: Path(path) for sid, path in data["dirs"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{PROGRESS_FILE}: the sites' fit is malformed ({type(exc).__name__}: {exc})") from None


def unused_run_id(sites: list[Site], seed: int) -> str:
    """`bench-seed{seed}`, or `bench-seed{seed}-try{n}` with the smallest n >= 2 that no site's ledger holds:
    a seed cut off half-way runs again under a run id of its own."""
    used: set[str] = set()
    for site in sites:
        path = site.gate.ledger_path
        if path is not None and path.is_file():
            entries, _ = read_ledger(path)
            used.update(str(entry.get("run")) for entry in entries)
    run_id, attempt = f"bench-seed{seed}", 1
    while run_id in used:
        attempt += 1
        run_id = f"bench-seed{seed}-try{attempt}"
    return run_id
