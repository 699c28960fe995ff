"""A bench's progress on disk, so that an interrupted `fedkr bench` continues (`--resume`) instead of starting over.

A bench of three seeds on BloodMNIST runs for over two hours on 2 cores. `run_bench` writes
OUT/bench-progress.json when it starts and again after every finished seed: the settings it runs
with, the seeds done, every method's figures so far, the coordinator view (first seed) and the
sites' fit (saved as soon as the first seed has fitted them, so that a cut-off later in that seed
does not fit them again). A resumed bench checks that its settings are the file's, restores the
figures and runs the seeds not done; a seed cut off half-way runs again from its start. A bench
resumed where OUT/sites no longer holds the fit (the progress file carried to another machine)
fits the sites again as its first seed did and records whether the refit reproduced the saved fit,
weights and all (`compare_fits`): a seeded fit on the CPU repeats exactly on the same software,
so a refit that differs says the seeds before and after it ran on different fits. The sites'
ledgers may hold that seed's run id by then (a site labels one set per run), so the seed runs
again under a new run id (`bench-seed1-try2`); each seed's bytes are those of its own run id. A
site draws its shards' noise from the run id, so a seed run again is a fresh draw of the same
settings, not the draw that was cut off: `bench.json` lists the run ids (`fedkr_runs`) and, for each
invocation, the seed it started at and a digest of fedkr's source (a resume after the code
changed is allowed, logged, and visible there).

The file is written whole to a temporary name and renamed over the old one, so that a kill during
the write leaves the previous state.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedkr.client.site import Site, has_fit
from fedkr.server.coordinator import FitResult
from fedkr.shared.config import BenchSettings, ConfigError, RunConfig
from fedkr.shared.json_input import JSONInputError, read_json_file
from fedkr.shared.release_inspect import METRICS_LIMITS
from fedkr.shared.reports import FitReport

from .coordinator_view import ViewEntry

log = logging.getLogger(__name__)

PROGRESS_FILE = "bench-progress.json"
SCHEMA = "fedkr.bench-progress/1"

_FIGURES = {"type": "object", "additionalProperties": {"type": "object"}}
#: What `BenchProgress.load` accepts (JSON Schema, checked by `read_json_file`).
PROGRESS_SCHEMA = {
    "type": "object",
    "required": ["schema", "key", "seeds_done", "rows", "fedkr_runs", "views", "fit", "seconds", "invocations"],
    "additionalProperties": False,
    "properties": {
        "schema": {"const": SCHEMA},
        "key": {"type": "object", "required": ["run", "settings"],
                "properties": {"run": {"type": "object"}, "settings": {"type": "object"}}},
        "seeds_done": {"type": "integer", "minimum": 0},
        "rows": _FIGURES,
        "fedkr_runs": {"type": "array", "items": {"type": "object"}},
        "views": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "object"}}},
        "fit": {"anyOf": [{"type": "null"}, {"type": "object", "required": ["run_id", "reports", "failed",
                                                                           "class_names", "image_shape", "seconds"],
                                             "properties": {"weights": {"type": "object",
                                                                        "additionalProperties": {"type": "string"}}}}]},
        "seconds": {"type": "number", "minimum": 0},
        "invocations": {"type": "array", "items": {
            "type": "object", "required": ["started_at_seed", "source_digest"],
            "properties": {"started_at_seed": {"type": "integer", "minimum": 0}, "source_digest": {"type": "string"},
                           "refit": {"type": "object", "required": ["run_id", "reproduced", "differences"],
                                     "properties": {"run_id": {"type": "string"}, "reproduced": {"type": "boolean"},
                                                    "compared": {"enum": ["reports", "reports and weights"]},
                                                    "differences": {"type": "array", "items": {"type": "string"}}}}}}},
    },
}

#: fedkr's packages, whose Python source `source_digest` covers.
SOURCE_PACKAGES = ("fedkr", "fedkr.shared", "fedkr.client", "fedkr.server")


def _files_digest(files: Iterable[tuple[str, Path]]) -> str:
    """SHA-256 (hex, first 16 characters) of (name, file) pairs in the order given: each name and a newline,
    then the file's bytes."""
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(f"{name}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def source_digest() -> str:
    """SHA-256 (hex, first 16 characters) of fedkr's Python source, file names and bytes, in name order: which
    code measured a bench's seeds, without needing a git checkout."""
    folders = [(package, Path(importlib.import_module(package).__file__).parent) for package in SOURCE_PACKAGES]
    return _files_digest((f"{package}/{path.name}", path) for package, folder in folders for path in sorted(folder.glob("*.py")))



def progress_key(config: RunConfig, settings: BenchSettings, profile: str, reuse_dir: Path | None) -> dict[str, Any]:
    """What a resumed bench must share with the one it continues: profile, bench settings, run settings
    (all but the run id; a data file by its absolute path) and the reused fit's folder; as JSON would store it."""
    run = {key: value for key, value in config.to_flat().items() if key != "run-id"}
    if Path(config.data).is_file():
        run["data"] = str(Path(config.data).resolve())
    key = {"profile": profile, "settings": asdict(settings), "run": run,
           "reuse_fit": None if reuse_dir is None else str(Path(reuse_dir).resolve())}
    return json.loads(json.dumps(key, default=str))


@dataclass
class BenchProgress:
    """Everything a bench has measured so far. `rows` are `MethodRow`s as dicts (`dataclasses.asdict`),
    `views` the coordinator view's entries by method (`ViewEntry.to_dict`), `fit` the sites' fit
    (`fit_to_dict`) once known, `seconds` the wall time of the earlier invocations (s), and
    `invocations` one entry per invocation: the seed it started at, its `source_digest` and, where it fitted
    the sites again, `refit` (run id, whether it reproduced the saved fit, and how it differed)."""

    key: dict[str, Any]
    seeds_done: int = 0
    rows: dict[str, dict] = field(default_factory=dict)
    fedkr_runs: list[dict] = field(default_factory=list)
    views: dict[str, list[dict]] = field(default_factory=dict)
    fit: dict[str, Any] | None = None
    seconds: float = 0.0
    invocations: list[dict[str, Any]] = field(default_factory=list)

    def begin(self) -> None:
        """Record this invocation; warn when fedkr's source differs from the earlier invocations'."""
        digest = source_digest()
        earlier = {entry["source_digest"] for entry in self.invocations}
        if earlier and digest not in earlier:
            log.warning("fedkr's source changed since this bench began (%s, now %s): bench.json records which "
                        "invocation measured which seeds", ", ".join(sorted(earlier)), digest)
        self.invocations.append({"started_at_seed": self.seeds_done, "source_digest": digest})

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

        Raises `ConfigError` (one line) when OUT holds no progress file (saying so where it holds a
        finished bench's bench.json instead), when the file is not one (`PROGRESS_SCHEMA`), or when it
        was written by a bench with other settings (naming the first ones that differ).
        """
        path = Path(out) / PROGRESS_FILE
        if not path.is_file() and (Path(out) / "bench.json").is_file():
            raise ConfigError(f"{out} holds a finished bench (bench.json): nothing to resume")
        if not path.is_file():
            raise ConfigError(f"{out}: no {PROGRESS_FILE}, so no interrupted bench to resume")
        try:  # a few seeds' figures: far below a metrics file's limit
            data = read_json_file(path, schema=PROGRESS_SCHEMA, limits=METRICS_LIMITS)
        except JSONInputError as exc:
            raise ConfigError(f"not a bench progress file of this version ({SCHEMA}): {exc}") from None
        saved_key = data["key"]
        if saved_key != key:
            raise ConfigError(f"{out} holds a bench with other settings ({', '.join(_differences(saved_key, key))}): "
                              "resume it with its own options, or give another --out")
        if data["seeds_done"] > int(key["settings"]["seeds"]):
            raise ConfigError(f"{path}: {data['seeds_done']} seeds done, more than the bench's {key['settings']['seeds']}")
        # PROGRESS_SCHEMA requires every field and admits no other, so the fields match the constructor's
        return cls(**{name: value for name, value in data.items() if name != "schema"})

    def view_entries(self) -> dict[str, list[ViewEntry]]:
        """`views` as `ViewEntry`s again."""
        try:
            return {name: [ViewEntry(**{k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()})
                           for entry in entries] for name, entries in self.views.items()}
        except TypeError as exc:
            raise ConfigError(f"{PROGRESS_FILE}: a coordinator-view entry is malformed ({exc})") from None


def _differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """'name: saved -> wanted' for the first few settings that differ (run settings by their own key)."""
    flat_saved = {**{k: v for k, v in saved.items() if k != "run"}, **(saved.get("run") or {})}
    flat_wanted = {**{k: v for k, v in wanted.items() if k != "run"}, **(wanted.get("run") or {})}
    names = sorted(set(flat_saved) | set(flat_wanted))
    differ = [f"{name}: {flat_saved.get(name)!r} there, {flat_wanted.get(name)!r} now" for name in names
              if flat_saved.get(name) != flat_wanted.get(name)]
    return differ[:4] + ([f"and {len(differ) - 4} more"] if len(differ) > 4 else [])


def fit_to_dict(fit: FitResult, fit_dirs: Mapping[str, Path] | None = None) -> dict[str, Any]:
    """The sites' fit as the progress file keeps it: run id, fit reports, failures, label space, image shape,
    seconds and, for the sites whose folder is in `fit_dirs` (site id to the folder of its teacher and
    generator), the digest of their weights (`weights_digest`). The folders are not kept: a fresh fit's
    are OUT/sites/<site>/<run id> (`run_dir`), a reused fit's come from `--reuse-fit` again."""
    weights = {sid: weights_digest(path) for sid, path in sorted((fit_dirs or {}).items()) if has_fit(path)}
    return {"run_id": fit.run_id, "reports": {sid: r.to_dict() for sid, r in fit.reports.items()},
            "failed": dict(fit.failed), "class_names": list(fit.class_names), "image_shape": list(fit.image_shape),
            "seconds": fit.seconds, "weights": weights}


def fit_from_dict(data: dict[str, Any]) -> FitResult:
    """`fit_to_dict` read back. Raises `ConfigError` when a report or field is malformed."""
    try:
        return FitResult(str(data["run_id"]), {sid: FitReport.from_dict(r) for sid, r in data["reports"].items()},
                         dict(data["failed"]), tuple(data["class_names"]), tuple(int(n) for n in data["image_shape"]),
                         float(data["seconds"]))
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise ConfigError(f"{PROGRESS_FILE}: the sites' fit is malformed ({type(exc).__name__}: {exc})") from None


def weights_digest(fit_dir: Path) -> str:
    """SHA-256 (hex, first 16 characters) of a site's fitted weights: every ``.safetensors`` file under
    `fit_dir` (the teacher's and the generator's UNet), relative names and bytes, in name order.
    safetensors writes the same tensors to the same bytes, so two fits with one digest hold the same models."""
    root = Path(fit_dir)
    return _files_digest((path.relative_to(root).as_posix(), path) for path in sorted(root.rglob("*.safetensors")))


#: A fit report's fields that measure time, not what was fitted: a refit may differ in them.
_FIT_TIMINGS = ("teacher_seconds", "generator_seconds")


@dataclass(frozen=True)
class FitComparison:
    """A refit against the saved fit (`compare_fits`): `compared` says what was compared ("reports and
    weights", or "reports" where the saved fit lacks a weights digest for a site, as a progress file
    written before they were kept does), `differences` one line per difference (empty: reproduced)."""

    compared: str
    differences: list[str]

    @property
    def reproduced(self) -> bool:
        return not self.differences


def compare_fits(saved: dict[str, Any], refit: dict[str, Any]) -> FitComparison:
    """How a refit differs from the saved fit (both as `fit_to_dict` gives them): the sites that fitted,
    each site's fit report but its timings, and its weights' digest where both have one."""
    weighed = set(saved.get("weights") or {}) == set(saved["reports"])
    compared = "reports and weights" if weighed else "reports"
    if sorted(saved["reports"]) != sorted(refit["reports"]):
        return FitComparison(compared, [f"sites fitted: {sorted(saved['reports'])} there, {sorted(refit['reports'])} now"])
    differences = []
    for sid in sorted(saved["reports"]):
        before, now = saved["reports"][sid], refit["reports"][sid]
        differences += [f"{sid}: {name} {before.get(name)!r} there, {now.get(name)!r} now"
                        for name in sorted(set(before) | set(now)) if name not in _FIT_TIMINGS and before.get(name) != now.get(name)]
        weights_before, weights_now = (saved.get("weights") or {}).get(sid), (refit.get("weights") or {}).get(sid)
        if weights_before and weights_now and weights_before != weights_now:
            differences.append(f"{sid}: weights {weights_before} there, {weights_now} now")
    return FitComparison(compared, differences)


def unused_run_id(sites: list[Site], stem: str, runs_dir: Path) -> str:
    """`stem` (`bench-seed1`), or `{stem}-try{n}` with the smallest n >= 2 that no site's ledger holds and
    that has no run folder in `runs_dir`: a seed cut off half-way runs again under a run id of its own."""
    used = set().union(*(site.gate.runs_in_ledger() for site in sites))
    run_id, attempt = stem, 1
    while run_id in used or (Path(runs_dir) / run_id).exists():
        attempt += 1
        run_id = f"{stem}-try{attempt}"
    return run_id
