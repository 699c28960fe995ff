"""`fedkr bench`: fedkr against what a consortium would otherwise do, on the same sites and test split.

Methods, each trained with the one student protocol (`student_protocol.py`):

- centralized: one network on every site's members pooled (the upper bound; real images move);
- local-only: each site alone on its members (mean and worst site);
- FedAvg: Flower's own FedAvg strategy, weights exchanged every round (`bench_fedavg.py`);
- naive pooling: every shard of the fedkr run, hard labels, no distillation, no relabelling;
- fedkr: the full run (filtered synthesis, spectral distillation, cross-site relabelling).

Each is scored on test accuracy over several seeds, the worst site's membership inference (the
auditor's model attacks on the trained network, each site's members against its holdout, on the
first seed), the bytes each site uploaded and the wall time. The centralized reference is trained
on the members only: the holdouts are the audit's non-members and must stay unseen by every method.

Sites fit their teacher and generator once per bench (on the first seed); later seeds draw fresh
shards from them and repeat distillation, relabelling and the student. Seeds therefore measure
the coordinator's variance, not the generators'; the note on a bench says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from fedkr.client.auditor import AuditSettings, ReferenceCache, audit_model
from fedkr.client.site import Site, has_fit, run_dir
from fedkr.client.site_data import SiteData, SiteDataSpec, load_site_data
from fedkr.inprocess import InProcessLink
from fedkr.server.coordinator import Coordinator, FitResult
from fedkr.shared.config import BenchSettings, ConfigError, RunConfig
from fedkr.shared.classifier import (ClassifierConfig, CompactCNN, TrainConfig, accuracy, build_classifier, one_hot,
                                     train_classifier)
from fedkr.shared.data import DataError, ImageSet, load_dataset
from fedkr.shared.device import resolve_device
from fedkr.client.gate import read_ledger
from fedkr.shared import json_output
from fedkr.shared.json_input import JSONInputError, read_json_file
from fedkr.shared.release_inspect import METRICS_LIMITS
from fedkr.shared.reports import FitReport, check_run_id

from .bench_fedavg import FedAvgSettings, run_fedavg
from .bench_progress import (PROGRESS_FILE, BenchProgress, compare_fits, fit_from_dict, fit_to_dict,
                             progress_key, unused_run_id)
from .coordinator_view import ViewEntry, fedavg_view, relabel_view, shard_labels_view, shards_view, worst
from .student_protocol import StudentProtocol

log = logging.getLogger(__name__)

METHODS = ("centralized", "local_mean", "local_worst", "fedavg", "naive_pooling", "fedkr")
#: Attacks on a trained network that every method's model can be put to (the distance attacks need released images).
MODEL_ATTACKS = ("loss", "entropy", "rmia")

Progress = Callable[[str], None]


def bench_run_config(config: RunConfig, out: Path, seed: int, run_id: str | None = None) -> RunConfig:
    """The fedkr run of one bench seed: the profile's settings, this seed, and a policy that never refuses
    (the bench scores what would be released; its attacks are reported in the table instead). Its run id
    is `run_id`, by default `bench-seed{seed}` (a seed run again after an interruption takes another,
    `fedkr.bench_progress.unused_run_id`)."""
    return config.with_overrides(seed=seed, run_id=run_id or f"bench-seed{seed}", out=str(out / "runs"), audit_max_auc=1.0,
                                 audit_max_tpr=1.0, audit_max_distance_auc=1.0, audit_max_generator_auc=1.0,
                                 audit_min_utility=0.0, audit_min_adjusted_balanced_accuracy=0.0)


def student_protocol(config: RunConfig) -> StudentProtocol:
    """The one protocol every method is trained with: the run's student epochs and temperature."""
    return StudentProtocol(epochs=config.student_epochs, temperature=config.temperature)


def fedavg_train_config(protocol: StudentProtocol, seed: int, rounds: int, lr: float | None = None) -> TrainConfig:
    """A FedAvg site's local training per round: the protocol's, one-hot targets, with the protocol's
    floor of optimisation steps (`TrainConfig.min_steps`) spread over the `rounds`, not demanded of
    every round; `lr` (AdamW's) replaces the protocol's where given (`benchmarks/fedavg_grid.py`)."""
    base = protocol.train_config(seed, soft=False)
    return replace(base, min_steps=-(-base.min_steps // rounds), lr=base.lr if lr is None else lr)


@dataclass
class MethodRow:
    """One method's line in the table; `accuracy` holds one figure per seed."""

    method: str
    accuracy: list[float] = field(default_factory=list)
    mia_auc: float | None = None
    mia_tpr_at_1pct_fpr: float | None = None
    mia_tpr_at_01pct_fpr: float | None = None
    #: The lowest FPR the attacked site's holdout resolves (1 / its held-out images).
    mia_lowest_fpr: float | None = None
    mia_attack: str | None = None
    mia_site: str | None = None
    bytes_uploaded_per_site: float | None = None
    seconds: list[float] = field(default_factory=list)
    #: The coordinator view (`fedkr.coordinator_view`): the strongest attack, at the worst site, on
    #: what the coordinator received (`ViewEntry.to_dict`), or {"note": ...} where there is nothing to
    #: attack (local only) or nothing to infer (centralized: the coordinator holds the images).
    coordinator_view: dict | None = None
    #: FedAvg only: per seed, test accuracy after each round (`FedAvgResult.accuracy_by_round`): the
    #: run's first rounds, with local steps sized for all its rounds, not a FedAvg configured for fewer.
    accuracy_by_round: list[list[float]] = field(default_factory=list)
    #: FedAvg only: bytes a site had uploaded by the end of each round, mean over sites (first seed).
    upload_bytes_by_round: list[float] = field(default_factory=list)

    def complete(self, seeds: int) -> bool:
        return (len(self.accuracy) == seeds and len(self.seconds) == seeds and self.mia_auc is not None
                and self.mia_tpr_at_1pct_fpr is not None and self.bytes_uploaded_per_site is not None)

    def summary(self) -> dict:
        acc = np.asarray(self.accuracy, dtype=np.float64)
        by_round = np.asarray(self.accuracy_by_round, dtype=np.float64)
        return {**asdict(self), "accuracy_mean": float(acc.mean()) if acc.size else None,
                "accuracy_std": float(acc.std(ddof=1)) if acc.size > 1 else 0.0,
                "accuracy_by_round_mean": [float(a) for a in by_round.mean(axis=0)] if by_round.size else [],
                "seconds_mean": float(np.mean(self.seconds)) if self.seconds else None}


@dataclass
class BenchResult:
    config: RunConfig
    settings: BenchSettings
    profile: str
    rows: dict[str, MethodRow]
    site_sizes: dict[str, dict[str, int]]
    fit: dict[str, dict]
    fedkr_runs: list[dict]
    seconds: float
    #: Every coordinator-view attack, by method (`ViewEntry.to_dict`), first seed.
    coordinator_view: dict[str, list[dict]] = field(default_factory=dict)
    #: One entry per invocation (`BenchProgress.invocations`): the seed it started at and a digest of fedkr's
    #: source; more than one when the bench was interrupted and resumed.
    invocations: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        central = self.rows["centralized"].summary()["accuracy_mean"]
        fedkr = self.rows["fedkr"].summary()["accuracy_mean"]
        run = {k: v for k, v in self.config.to_flat().items() if k != "run-id"}
        return {
            "schema": "fedkr.bench/2", "data": self.config.data,
            "profile": {"name": self.profile, **asdict(self.settings), "run": run},
            "methods": {name: row.summary() for name, row in self.rows.items()},
            "fedkr_over_centralized": (fedkr / central) if central and fedkr is not None else None,
            "site_sizes": self.site_sizes, "fit": self.fit, "fedkr_runs": self.fedkr_runs, "seconds": self.seconds,
            "coordinator_view": self.coordinator_view, "invocations": self.invocations,
            "fedavg_at_fedkr_upload": fedavg_at_upload(self.rows["fedavg"].summary(),
                                                       self.rows["fedkr"].bytes_uploaded_per_site),
        }


def fedavg_at_upload(fedavg: dict, upload_bytes: float | None) -> dict | None:
    """FedAvg's run read at the last round whose upload per site is at or below `upload_bytes`: that
    round, its upload and its mean test accuracy over seeds (`fedavg` is a `MethodRow.summary()`).
    Earlier rounds are the same run's first rounds (local steps sized for all its rounds), not a
    FedAvg configured to stop there.

    None without a per-round record or an upload to compare; ``{"round": 0, ...}`` with accuracy None
    when even one round uploads more.
    """
    by_round, uploads = fedavg.get("accuracy_by_round_mean") or [], fedavg.get("upload_bytes_by_round") or []
    if upload_bytes is None or not by_round or len(by_round) != len(uploads):
        return None
    within = [r for r, sent in enumerate(uploads) if sent <= upload_bytes]
    if not within:
        return {"round": 0, "upload_bytes": 0.0, "accuracy_mean": None}
    last = within[-1]
    return {"round": last + 1, "upload_bytes": uploads[last], "accuracy_mean": by_round[last]}


def load_bench_sites(config: RunConfig) -> tuple[list[SiteData], ImageSet]:
    """Every site's members and holdout as simulation would split them, and the test split."""
    splits = load_dataset(config.data, seed=config.seed, image_size=config.image_size)
    if splits.test is None:
        raise DataError(f"{config.data}: no test split to score on")
    sites = [load_site_data(SiteDataSpec(config.data, i, config.sites, config.partition, config.seed, config.holdout_fraction,
                                         config.image_size))
             for i in range(config.sites)]
    return sites, splits.test


def train_on_real(images: np.ndarray, labels: np.ndarray, test: ImageSet, protocol: StudentProtocol, seed: int,
                  num_classes: int) -> tuple[CompactCNN, float, float]:
    h, w, c = images.shape[1:]
    model = build_classifier(ClassifierConfig(c, h, w, num_classes, protocol.channels), seed)
    started = time.perf_counter()
    train_classifier(model, images, one_hot(labels, num_classes), protocol.train_config(seed, soft=False))
    return model, accuracy(model, test.images, test.labels), time.perf_counter() - started


def worst_site_mia(models: list[CompactCNN], sites: list[SiteData], settings: AuditSettings,
                   references: list[ReferenceCache] | None = None) -> dict:
    """The auditor's model attacks, each site's members against its holdout: the highest AUC of any
    attack at any site, with that same attack's TPR at 1% and 0.1% FPR and the lowest FPR that
    site's holdout resolves.

    `models[i]` is what site i is attacked through (one shared model, or each site's own);
    `references[i]` keeps site i's reference models from one method's attack to the next.
    """
    worst: dict = {"auc": -1.0, "tpr": 0.0, "tpr_01": 0.0, "lowest_fpr": None, "attack": None, "site": None}
    caches = references or [ReferenceCache() for _ in sites]
    for i, (model, site, cache) in enumerate(zip(models, sites, caches, strict=True)):
        report = audit_model(f"site-{i}", model, site.members, site.holdout, settings, references=cache)
        for result in report.results:
            if result.attack in MODEL_ATTACKS and result.auc > worst["auc"]:  # scores are oriented: higher means member
                worst.update(auc=result.auc, tpr=result.tpr_at_1pct_fpr, tpr_01=result.tpr_at_01pct_fpr,
                             lowest_fpr=result.lowest_fpr, attack=result.attack, site=f"site-{i}")
    return worst


def _set_mia(row: MethodRow, mia: dict) -> None:
    row.mia_auc, row.mia_tpr_at_1pct_fpr = round(mia["auc"], 4), round(mia["tpr"], 4)
    row.mia_tpr_at_01pct_fpr, row.mia_lowest_fpr = round(mia["tpr_01"], 4), mia["lowest_fpr"]
    row.mia_attack, row.mia_site = mia["attack"], mia["site"]


def ledger_bytes(site: Site, run_id: str, kinds: tuple[str, ...] | None = None) -> int:
    """Bytes of everything (or everything of `kinds`) the site's ledger says left it in `run_id`."""
    path = site.gate.ledger_path
    if path is None or not path.is_file():
        return 0
    entries, _ = read_ledger(path)
    return sum(int(e.get("bytes", 0)) for e in entries if e.get("run") == run_id and (kinds is None or e.get("kind") in kinds))


#: Population images (from the test split, no site's member) the coordinator view's density attack uses.
COORDINATOR_REFERENCE_IMAGES = 2000

#: The parts of a finished run's metrics.json that a reused fit reads.
_REUSED_METRICS_SCHEMA = {
    "type": "object",
    "required": ["run_id", "sites", "stage_seconds"],
    "properties": {"run_id": {"type": "string"}, "config": {"type": "object"},
                   "sites": {"type": "object", "additionalProperties": {"type": "object"}},
                   "stage_seconds": {"type": "object", "required": ["fit"], "properties": {"fit": {"type": "number"}}}},
}

#: The parts of a reused generator's generator.json that `check_generator` reads.
_REUSED_GENERATOR_SCHEMA = {
    "type": "object",
    "required": ["config", "trained_steps"],
    "properties": {"config": {"type": "object", "properties": {"hflip": {"type": "boolean"}}},
                   "trained_steps": {"type": "integer", "minimum": 0}},
}


#: Settings that shape the sites' models (their data's working size, teacher and generator training):
#: a fit reused for the later stages fixes them (`ReusedFit`, benchmarks/levers.py).
FIT_SETTINGS = ("teacher_epochs", "teacher_resample", "image_size", "generator_kind", "generator_steps", "generator_resolution",
                "generator_channels", "generator_batch", "generator_noise_multiplicity", "generator_hflip",
                "dp_epsilon", "dp_delta", "dp_max_grad_norm", "dp_models")

#: Settings in FIT_SETTINGS that runs made before them do not record, with the value those runs had.
FIT_SETTINGS_ADDED_LATER = {"generator_noise_multiplicity": 1, "generator_kind": "diffusion", "image_size": 32,
                            "teacher_resample": False}


@dataclass(frozen=True)
class ReusedFit:
    """A finished `fedkr simulate` run whose sites' teachers and generators the bench reuses instead of fitting.

    Valid only when that run used the bench's data, partition, seed 0 and training budgets; its
    fit time is what the bench reports for fitting.
    """

    run_dir: Path

    #: Settings that shape the sites' data or their models' training: a reused fit must share them.
    MUST_MATCH = ("partition", "seed", "holdout_fraction", *FIT_SETTINGS)

    def load(self, expected: RunConfig | None = None) -> tuple[Path, str, dict[str, FitReport], float]:
        """The sites folder, run id, fit reports and fit seconds; with `expected`, refuse a run fitted otherwise.
        `run_dir` is a `fedkr simulate` run's folder or a `fedkr bench` run's (OUT/runs/bench-seed0).

        Raises `DataError` when the folder holds no finished run's metrics.json, when that file is
        malformed, names an invalid run id (`fedkr.shared.reports.check_run_id`) or holds a site's
        fit report that `FitReport.from_dict` cannot read, or when the run was fitted with other
        settings than `expected`.
        """
        metrics_path = self.run_dir / "release" / "metrics.json"
        if not metrics_path.is_file():
            metrics_path = self.run_dir / "metrics.json"
        if not metrics_path.is_file():
            raise DataError(f"{self.run_dir}: no metrics.json of a finished run")
        try:
            metrics = read_json_file(metrics_path, schema=_REUSED_METRICS_SCHEMA, limits=METRICS_LIMITS)
        except JSONInputError as exc:
            raise DataError(f"{self.run_dir}: not a finished run's metrics: {exc}") from None
        try:
            fit_run = check_run_id(metrics["run_id"])
        except ValueError as exc:
            raise DataError(f"{self.run_dir}: not a finished run's metrics: {exc}") from None
        if expected is not None:
            self._check(metrics.get("config") or {}, expected)
        try:
            reports = {sid: FitReport.from_dict(r) for sid, r in metrics["sites"].items()}
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise DataError(f"{self.run_dir}: not a finished run's metrics: a site's fit report is malformed "
                            f"({type(exc).__name__}: {exc})") from None
        return self._sites_dir(), fit_run, reports, float(metrics["stage_seconds"]["fit"])

    def _sites_dir(self) -> Path:
        """The sites folder: beside the run's folder (`fedkr simulate --out OUT`: OUT/<id>, OUT/sites), or
        beside its `runs` folder (`fedkr bench --out OUT`: OUT/runs/<id>, OUT/sites)."""
        beside = self.run_dir.parent / "sites"
        of_bench = self.run_dir.parent.parent / "sites"
        return of_bench if not beside.is_dir() and self.run_dir.parent.name == "runs" and of_bench.is_dir() else beside

    def _check(self, used: dict, expected: RunConfig) -> None:
        # a setting added after the run was made is absent from its config: the run had that setting's first default
        used = {key: value for key, value in FIT_SETTINGS_ADDED_LATER.items() if key not in used} | used
        differ = [f"{key}={used.get(key)!r} (bench: {getattr(expected, key)!r})" for key in self.MUST_MATCH
                  if str(used.get(key)) != str(getattr(expected, key))]
        if not same_data(str(used.get("data")), expected.data):
            differ.insert(0, f"data={used.get('data')!r} (bench: {expected.data!r})")
        if differ:
            raise DataError(f"{self.run_dir} was fitted with other settings: {', '.join(differ)}")
        if str(used.get("classifier_hflip")) != str(expected.classifier_hflip):
            log.warning("%s: its teachers trained with flip augmentation %s; a fresh bench fit uses %s",
                        self.run_dir, used.get("classifier_hflip"), expected.classifier_hflip)


def same_data(a: str, b: str) -> bool:
    """Whether two data settings name the same data: equal, or paths to one file."""
    return a == b or (Path(a).is_file() and Path(b).is_file() and Path(a).resolve() == Path(b).resolve())


def check_generator(generator_dir: Path, config: RunConfig) -> None:
    """Refuse a reused generator not trained on the profile's budget (steps, flips); guidance may differ:
    it changes sampling only, and the sites sample at the profile's (`Site.reuse_fit`)."""
    try:
        meta = read_json_file(generator_dir / "generator.json", schema=_REUSED_GENERATOR_SCHEMA)
    except JSONInputError as exc:
        raise DataError(str(exc)) from None
    trained, hflip = int(meta["trained_steps"]), bool(meta["config"].get("hflip", False))
    if (trained, hflip) != (config.generator_steps, config.generator_hflip):
        raise DataError(f"{generator_dir}: trained {trained} steps with hflip={hflip}, the profile asks for "
                        f"{config.generator_steps} steps with hflip={config.generator_hflip}")


def sampled_summary(summary: dict, config: RunConfig) -> dict:
    """A reused fit's generator summary with the sampling settings the bench's sites sample at
    (`Site.reuse_fit`): guidance, DDIM eta and, where it guides, the teacher's guidance (as
    `ClassConditionalDiffusion.summary` lists it)."""
    out = {key: value for key, value in summary.items() if key != "classifier_guidance"}
    out.update(guidance_scale=config.generator_guidance, sample_eta=config.generator_eta)
    if config.generator_teacher_guidance > 0:
        out["classifier_guidance"] = config.generator_teacher_guidance
    return out


def run_bench(config: RunConfig, settings: BenchSettings, out: Path, progress: Progress | None = None,
              reuse: ReusedFit | None = None, profile: str = "", resume: bool = False) -> BenchResult:
    """Every method on the same sites and test split; writes the fedkr runs' own folders and the bench's
    progress (OUT/bench-progress.json, after every seed: `fedkr.bench_progress`).

    `config` holds the sites' and the fedkr run's settings (a profile's, with the user's options);
    `settings` the seeds and Flower FedAvg's schedule. Sites fit once, on the first seed (or not at
    all with `reuse`); later seeds run the stages after fit on that one fit.

    With `resume`, continues the bench whose progress OUT holds: its figures so far are kept and the
    seeds it did not finish run (a seed cut off half-way runs again from its start, under a run id of its
    own: a fresh draw of its shards, `fedkr.bench_progress`).

    Raises `DataError` for data without a test split or a reused fit that does not load or does not
    match (`ReusedFit.load`), and `ConfigError` for a bad setting or, with `resume`, for progress that is
    missing or was written with other settings (`BenchProgress.load`), before any baseline trains.
    """
    say = progress or (lambda message: log.info("%s", message))
    started = time.perf_counter()
    out = Path(out)
    expected = bench_run_config(config, out, seed=0)  # a bad setting fails here, before any baseline trains
    key = progress_key(config, settings, profile, reuse.run_dir if reuse is not None else None)
    state = BenchProgress.load(out, key) if resume else BenchProgress(key)  # and nothing to resume, before any data loads
    site_data, test = load_bench_sites(config.with_overrides(seed=0))
    num_classes = test.num_classes
    audit = AuditSettings(reference_models=config.audit_reference_models)
    references = [ReferenceCache() for _ in site_data]  # every method is attacked through one architecture
    protocol = student_protocol(config)
    earlier_seconds = state.seconds
    if resume:
        say(f"resuming: {state.seeds_done} of {settings.seeds} seeds done")
    state.begin()
    try:
        rows = {name: MethodRow(**state.rows[name]) if name in state.rows else MethodRow(name) for name in METHODS}
        views: dict[str, list[ViewEntry]] = state.view_entries()
    except TypeError as exc:
        raise ConfigError(f"{out / PROGRESS_FILE}: a method's figures are malformed ({exc})") from None
    members_x = np.concatenate([s.members.images for s in site_data])
    members_y = np.concatenate([s.members.labels for s in site_data])
    sites = [Site(f"site-{i}", d, out / "sites" / f"site-{i}", device=config.device) for i, d in enumerate(site_data)]
    link = InProcessLink(sites)
    fit: FitResult | None = None
    fit_dirs: dict[str, Path] = {}
    if reuse is not None:
        sites_dir, fit_run, reports, reused_seconds = reuse.load(expected)
        reports = {sid: replace(r, generator_summary=sampled_summary(r.generator_summary, config)) for sid, r in reports.items()}
        if sorted(reports) != [s.site_id for s in sites]:
            raise DataError(f"{reuse.run_dir}: its sites {sorted(reports)} are not this bench's {[s.site_id for s in sites]}")
        for site in sites:
            fit_dirs[site.site_id] = run_dir(sites_dir / site.site_id, fit_run)
            check_generator(fit_dirs[site.site_id] / "generator", expected)
        first = next(iter(reports.values()))
        fit = FitResult(fit_run, reports, {}, first.class_names, first.image_shape, reused_seconds)
        state.fit = fit_to_dict(fit, fit_dirs)
    elif state.fit is not None:  # a fresh fit, made by the first seed of the bench this one resumes
        fit = fit_from_dict(state.fit)
        fit_dirs = sites_fit_dirs(sites, fit)
        if state.seeds_done < settings.seeds and not all(has_fit(path) for path in fit_dirs.values()):
            fit = refit_sites(config, out, test, sites, link, state, say)
            fit_dirs = sites_fit_dirs(sites, fit)
    fedkr_runs: list[dict] = list(state.fedkr_runs)
    device = resolve_device(config.device)
    state.save(out)
    for seed in range(state.seeds_done, settings.seeds):
        first_seed = seed == 0
        say(f"seed {seed}: centralized")
        model, acc, secs = train_on_real(members_x, members_y, test, protocol, seed, num_classes)
        rows["centralized"].accuracy.append(acc)
        rows["centralized"].seconds.append(secs)
        if first_seed:
            _set_mia(rows["centralized"], worst_site_mia([model] * len(site_data), site_data, audit, references))
            rows["centralized"].bytes_uploaded_per_site = float(np.mean([s.members.images.nbytes for s in site_data]))
            rows["centralized"].coordinator_view = {"note": "receives the images"}

        say(f"seed {seed}: local-only")
        local = [train_on_real(s.members.images, s.members.labels, test, protocol, seed, num_classes) for s in site_data]
        accs = [a for _, a, _ in local]
        rows["local_mean"].accuracy.append(float(np.mean(accs)))
        rows["local_worst"].accuracy.append(float(np.min(accs)))
        for name in ("local_mean", "local_worst"):
            rows[name].seconds.append(float(sum(s for _, _, s in local)))
        if first_seed:
            mia = worst_site_mia([m for m, _, _ in local], site_data, audit, references)
            for name in ("local_mean", "local_worst"):
                _set_mia(rows[name], mia)
                rows[name].bytes_uploaded_per_site = 0.0
                rows[name].coordinator_view = {"note": "receives nothing"}

        say(f"seed {seed}: Flower FedAvg")
        per_round = fedavg_train_config(protocol, seed, settings.fedavg_rounds)
        fed = run_fedavg([s.members for s in site_data], test, per_round,
                         FedAvgSettings(rounds=settings.fedavg_rounds, local_epochs=settings.fedavg_local_epochs,
                                        seed=seed, channels=protocol.channels, keep_uploads=first_seed))
        rows["fedavg"].accuracy.append(fed.test_accuracy)
        rows["fedavg"].accuracy_by_round.append(fed.accuracy_by_round)
        rows["fedavg"].seconds.append(fed.seconds)
        if first_seed:
            rows["fedavg"].upload_bytes_by_round = fed.upload_bytes_by_round
            _set_mia(rows["fedavg"], worst_site_mia([fed.model] * len(site_data), site_data, audit, references))
            rows["fedavg"].bytes_uploaded_per_site = float(np.mean(fed.bytes_uploaded_per_site))
            say("seed 0: coordinator view of FedAvg (every site's every upload)")
            views["fedavg"] = fedavg_view(fed.uploads, fed.model.config, site_data, audit, references, device)
            del fed.uploads[:]

        say(f"seed {seed}: fedkr" + (" (sites fit their teacher and generator)" if fit is None else ""))
        run_config = bench_run_config(config, out, seed, run_id=unused_run_id(sites, f"bench-seed{seed}", out / "runs"))
        if fit is not None:  # the stages after fit, on the sites' one fit (a site that failed the fit has none)
            for site in sites:
                if site.site_id in fit_dirs:
                    site.reuse_fit(fit_dirs[site.site_id], run_config.run_id, config.generator_guidance, config.generator_eta,
                                   config.generator_teacher_guidance)
        fitted_here = fit is None
        run_started = time.perf_counter()
        outcome = Coordinator(run_config, test).run(link, fit=fit)
        record = outcome.record
        fit = record.need("fit", record.fit)
        if fitted_here:  # kept at once: a cut-off later in this seed must not cost the fit
            fit_dirs = sites_fit_dirs(sites, fit)
            state.fit = fit_to_dict(fit, fit_dirs)
            state.save(out)
        # every seed's wall time counts the fit once, as a fresh run would spend it
        run_seconds = time.perf_counter() - run_started + (0.0 if fitted_here else fit.seconds)
        rows["fedkr"].accuracy.append(float(outcome.metrics["student_test_accuracy"]))
        rows["fedkr"].seconds.append(run_seconds)
        fedkr_runs.append({k2: outcome.metrics[k2] for k2 in ("run_id", "pool_size", "synthesis_quality", "selection",
                                                               "relabelled_by", "stage_seconds", "student_test_accuracy")})

        say(f"seed {seed}: naive pooling")
        pool = record.need("recycle", record.pool).arrays()
        student = record.need("student", record.student)
        naive = build_classifier(student.config, seed)
        naive_started = time.perf_counter()
        train_classifier(naive, pool.images, one_hot(pool.hard_labels, num_classes), protocol.train_config(seed, soft=False))
        rows["naive_pooling"].accuracy.append(accuracy(naive, test.images, test.labels))
        rows["naive_pooling"].seconds.append(fit.seconds + record.timings["synthesis"] + time.perf_counter() - naive_started)
        if first_seed:
            _set_mia(rows["fedkr"], worst_site_mia([student] * len(site_data), site_data, audit, references))
            _set_mia(rows["naive_pooling"], worst_site_mia([naive] * len(site_data), site_data, audit, references))
            run_id = run_config.run_id
            rows["fedkr"].bytes_uploaded_per_site = float(np.mean([ledger_bytes(s, run_id) for s in sites]))
            rows["naive_pooling"].bytes_uploaded_per_site = float(np.mean([ledger_bytes(s, run_id, ("shard",)) for s in sites]))
            say("seed 0: coordinator view of fedkr (shards, their soft labels"
                + (", relabel replies)" if config.relabel else "; relabelling off, so no relabel reply)"))
            reference = test.images[:COORDINATOR_REFERENCE_IMAGES]
            views["naive_pooling"] = (
                shards_view(pool.images, pool.site_ids, site_data, reference, student, audit, device)
                + shard_labels_view(pool.images, pool.soft_labels, pool.site_ids, site_data, student.config,
                                    protocol.train_config(seed, soft=True), audit, references, device))
            views["fedkr"] = list(views["naive_pooling"])
            if config.relabel:
                teachers = [site.teacher(run_id) if site.site_id in fit.reports else None for site in sites]
                views["fedkr"] += relabel_view(teachers, site_data, audit, references, device,
                                               relabelled_by=outcome.metrics["relabelled_by"])
        state.seeds_done, state.fedkr_runs = seed + 1, fedkr_runs
        state.rows = {name: asdict(row) for name, row in rows.items()}
        state.views = {name: [entry.to_dict() for entry in entries] for name, entries in views.items()}
        state.seconds = earlier_seconds + time.perf_counter() - started
        state.save(out)
    for name, entries in views.items():
        top = worst(entries)
        rows[name].coordinator_view = None if top is None else top.to_dict()
    reports = {sid: r.to_dict() for sid, r in fit.reports.items()} if fit is not None else {}
    sizes = {f"site-{i}": {"members": len(d.members), "holdout": len(d.holdout)} for i, d in enumerate(site_data)}
    return BenchResult(config, settings, profile, rows, sizes, reports, fedkr_runs,
                       earlier_seconds + time.perf_counter() - started,
                       {name: [e.to_dict() for e in entries] for name, entries in views.items()},
                       list(state.invocations))


def sites_fit_dirs(sites: list[Site], fit: FitResult) -> dict[str, Path]:
    """Site id to the folder of its teacher and generator (`run_dir`), for the sites that completed `fit`."""
    return {site.site_id: run_dir(site.state_dir, fit.run_id) for site in sites if site.site_id in fit.reports}


def refit_sites(config: RunConfig, out: Path, test: ImageSet, sites: list[Site], link: InProcessLink,
                state: BenchProgress, say: Progress) -> FitResult:
    """Fit the sites again, as the bench's first seed did (seed 0), for a resumed bench whose fit is no
    longer in OUT/sites (its progress file carried to another machine); the refit's run id is
    `bench-refit` (or `bench-refit-tryN`, `unused_run_id`).

    The refit replaces `state.fit`, and this invocation's entry in `state.invocations` records it
    (`refit`: run id, whether it reproduced the saved fit, what was compared: the fit reports, and the
    weights where the saved fit has their digests, and `compare_fits`): seeded fits on the CPU
    repeat exactly on the same software, so the later seeds either ran on the same fit as the
    earlier ones, or the bench says they did not. Raises `RunError` when no site completes fit.
    """
    saved = state.fit or {}
    run_id = unused_run_id(sites, "bench-refit", out / "runs")
    say(f"the sites' fit {saved.get('run_id')} is not in {out / 'sites'}: fitting the sites again ({run_id}) to "
        "compare with it")
    coordinator = Coordinator(bench_run_config(config, out, seed=0, run_id=run_id), test)
    refit = coordinator.fit(coordinator.start(), link)
    state.fit = fit_to_dict(refit, sites_fit_dirs(sites, refit))
    comparison = compare_fits({"reports": {}, **saved}, state.fit)
    differences = comparison.differences
    state.invocations[-1]["refit"] = {"run_id": run_id, "reproduced": comparison.reproduced,
                                      "compared": comparison.compared, "differences": differences}
    if differences:
        log.warning("the refit differs from the saved fit (%s%s): the seeds from %d on run on the refit, and "
                    "bench.json's invocations say so", "; ".join(differences[:3]),
                    f"; and {len(differences) - 3} more" if len(differences) > 3 else "", state.seeds_done)
    else:
        say(f"the refit reproduces the saved fit: the same fit {comparison.compared} at every site")
    return refit


# --- output ---------------------------------------------------------------------------------------

LABELS = {"centralized": "centralized (real images pooled)", "local_mean": "local only, mean site",
          "local_worst": "local only, worst site", "fedavg": "Flower FedAvg (weights)",
          "naive_pooling": "naive synthetic pooling", "fedkr": "fedkr"}


def markdown_table(result: dict) -> str:
    seeds = result["profile"]["seeds"]
    lines = [f"| method | test accuracy (mean ± sd, {seeds} seeds) | worst-site MIA AUC | worst-site TPR@1%FPR "
             "| worst-site TPR@0.1%FPR | coordinator view: worst-site AUC | coordinator view: TPR@0.1%FPR "
             "| bytes uploaded per site | wall time (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, row in result["methods"].items():
        lines.append(
            f"| {LABELS.get(name, name)} | {row['accuracy_mean']:.3f} ± {row['accuracy_std']:.3f} | {row['mia_auc']:.3f} "
            f"({row['mia_attack']}, {row['mia_site']}) | {row['mia_tpr_at_1pct_fpr']:.3f} "
            f"| {_low_fpr_cell(row.get('mia_tpr_at_01pct_fpr'), row.get('mia_lowest_fpr'))} "
            f"| {_view_cells(row.get('coordinator_view'))} "
            f"| {_size(row['bytes_uploaded_per_site'])} | {row['seconds_mean']:.0f} |")
    ratio = result.get("fedkr_over_centralized")
    if ratio is not None:
        lines.append(f"\nfedkr / centralized accuracy: {ratio:.3f}")
    fedavg = result["methods"].get("fedavg", {})
    curve = list(zip(fedavg.get("accuracy_by_round_mean") or [], fedavg.get("upload_bytes_by_round") or [], strict=False))
    if curve:
        lines.append("\nFlower FedAvg by round (test accuracy, mean over seeds; upload per site so far): "
                     + "; ".join(f"round {r}: {acc:.3f} at {_size(sent)}" for r, (acc, sent) in enumerate(curve, 1)))
    equal = result.get("fedavg_at_fedkr_upload")
    if equal is not None:
        fedkr_row = result["methods"]["fedkr"]
        if equal["accuracy_mean"] is None:
            lines.append(f"\nAt fedkr's upload ({_size(fedkr_row['bytes_uploaded_per_site'])} per site) FedAvg "
                         "cannot finish one round.")
        elif equal["round"] == len(curve):
            lines.append(f"\nfedkr's upload ({_size(fedkr_row['bytes_uploaded_per_site'])} per site) covers FedAvg's "
                         f"whole run ({len(curve)} rounds, {_size(equal['upload_bytes'])}): {equal['accuracy_mean']:.3f}, "
                         f"against fedkr's {fedkr_row['accuracy_mean']:.3f}.")
        else:
            lines.append(f"\nAt fedkr's upload ({_size(fedkr_row['bytes_uploaded_per_site'])} per site) FedAvg's run "
                         f"reaches round {equal['round']} ({_size(equal['upload_bytes'])}): {equal['accuracy_mean']:.3f}, "
                         f"against fedkr's {fedkr_row['accuracy_mean']:.3f} (that run's first rounds, local steps "
                         f"sized for {len(curve)} rounds).")
    for entry in result.get("invocations") or []:
        refit = entry.get("refit")
        if refit:
            lines.append(f"\nThe seeds from {entry['started_at_seed']} on ran on a refit of the sites ({refit['run_id']}: "
                         "the first fit's folders were gone), "
                         + (f"which reproduced the first fit's {refit.get('compared', 'reports')} at every site."
                            if refit["reproduced"]
                            else f"which differed from the first fit: {'; '.join(refit['differences'][:3])}."))
    lines.append("\nWall time: training only for centralized and local-only (sum over sites); the whole Flower run, Ray "
                 "start included, less the server's scoring after each round, for FedAvg; fit, synthesis, distillation, relabelling, student and the sites' audit "
                 "for fedkr; fit, synthesis and the student for naive pooling. MIA: the highest AUC of the loss, "
                 "entropy and RMIA attacks on the trained network at any site (first seed), with that attack's TPR; where that "
                 "site's holdout resolves no FPR as low as 0.1% (fewer than 1,000 held-out images), the TPR@0.1%FPR is "
                 "the TPR at zero false positives and the cell gives the lowest FPR it resolves. Coordinator view: the "
                 "strongest attack at the worst site on what the coordinator received from it (FedAvg: every weight "
                 "upload, every round; fedkr: the site's synthetic shards, by distance tests and DOMIAS, a model trained "
                 "on that site's shards and their soft labels, attacked as a model, and its relabel reply, attacked as "
                 "the teacher it reveals, unless relabelling is off; naive pooling: the same shards and soft labels), "
                 "first seed.")
    return "\n".join(lines) + "\n"


def _low_fpr_cell(tpr: float | None, lowest_fpr: float | None) -> str:
    """TPR at 0.1% FPR for the table, with the lowest FPR the holdout resolves where that is above 0.1%."""
    if tpr is None:
        return "n/a"
    return f"{tpr:.3f}" if lowest_fpr is None or lowest_fpr <= 0.001 else f"{tpr:.3f} (FPR floor {lowest_fpr:.2%})"


def _view_cells(view: dict | None) -> str:
    """The two coordinator-view cells: AUC with interval and where, then TPR at 0.1% FPR."""
    if not view:
        return "n/a | n/a"
    if "note" in view:
        return f"{view['note']} | {view['note']}"
    low, high = view["auc_ci"]
    return (f"{view['auc']:.3f} [{low:.3f}, {high:.3f}] ({view['attack']}, {view['site']}, {view['received']}) "
            f"| {_low_fpr_cell(view['tpr_at_01pct_fpr'], view['lowest_fpr'])}")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _bytes_axis(ax) -> None:  # type: ignore[no-untyped-def]
    """A log x-axis of bytes labelled in B, KB and MB (at 1, 2 and 5 of each decade where the axis spans at
    most two decades, else at each power of ten), with no minor labels: matplotlib's own labels every
    minor tick of a range under a decade, and they overlap. Call after plotting (it reads the limits)."""
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    low, high = ax.get_xlim()
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if math.log10(high / low) <= 2 else (1.0,)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: _size(value).replace(".0 ", " ")))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("bytes uploaded per site")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["methods"])
    rows = [result["methods"][n] for n in names]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4))
    ax1.barh(range(len(names)), [r["accuracy_mean"] for r in rows], xerr=[r["accuracy_std"] for r in rows], color="#4a7ab5")
    ax1.set_yticks(range(len(names)), [LABELS.get(n, n) for n in names])
    ax1.set_xlabel("test accuracy")
    ax1.invert_yaxis()
    ax2.scatter([max(r["bytes_uploaded_per_site"], 1.0) for r in rows], [r["mia_auc"] for r in rows], color="#b54a4a")
    for n, r in zip(names, rows, strict=True):
        ax2.annotate(LABELS.get(n, n).split(",")[0], (max(r["bytes_uploaded_per_site"], 1.0), r["mia_auc"]), fontsize=7)
    _bytes_axis(ax2)
    ax2.set_ylabel("worst-site MIA AUC")
    fedavg = result["methods"].get("fedavg", {})
    if fedavg.get("accuracy_by_round_mean") and fedavg.get("upload_bytes_by_round"):
        ax3.plot(fedavg["upload_bytes_by_round"], fedavg["accuracy_by_round_mean"], marker="o", color="#4a7ab5",
                 label="Flower FedAvg, by round")
    for name, colour in (("fedkr", "#b54a4a"), ("naive_pooling", "#888888")):
        row = result["methods"].get(name)
        if row and row.get("bytes_uploaded_per_site"):
            ax3.scatter([row["bytes_uploaded_per_site"]], [row["accuracy_mean"]], color=colour, zorder=3,
                        label=LABELS.get(name, name))
    _bytes_axis(ax3)
    ax3.set_ylabel("test accuracy")
    ax3.legend(fontsize=7)
    fig.suptitle(f"fedkr bench: {Path(result['data']).name}, {result['profile']['name']} profile")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(result: BenchResult, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    data = result.to_dict()
    paths = {"json": out / "bench.json", "markdown": out / "bench.md", "plot": out / "bench.png"}
    paths["json"].write_text(json_output.dumps(data, default=str))
    paths["markdown"].write_text(markdown_table(data))
    plot(data, paths["plot"])
    return paths
