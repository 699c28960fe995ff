"""The coordinator's run as named stages: fit, recycle, distill, relabel, student, audit, release (or refuse).

Transport-free: it talks to sites through a `SiteLink`, and reports stage progress through a
callback so that a CLI can show it.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from typing import TypeVar

from fedkr.shared.audit_policy import AuditDecision, decide_release
from fedkr.shared.gate_power import fit_holdout_warnings
from fedkr.shared.classifier import CompactCNN, accuracy
from fedkr.shared.data import ImageSet
from fedkr.shared.device import describe, resolve_device
from fedkr.shared.dp_models import DP_BOTH_MODELS
from fedkr.shared.reports import MAX_RELABEL_IMAGES, AuditCandidate, FitPlan, FitReport, Refused, RelabelRequest, working_size
from fedkr.shared.shard import ShardError, ShardSpec, SynthesisRequest, per_class_request
from fedkr.shared.shard_wire import ReplayGuard

from fedkr.shared.audit_document import audit_summary
from fedkr.shared.config import RunConfig
from .distill import DistilledSet, distill_student_and_release, subset, whole_pool_ipc
from .intake import PlainIntake, SealedIntake
from .keyring import CoordinatorKeys, load_coordinator_keys
from .link import SiteLink
from .pool import Pool
from .relabel import class_counts, class_support, combine
from .release import write_refusal, write_release
from .student import pool_features, student_input_resolution, train_student

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
T = TypeVar("T")

#: The most images one shard may hold; larger requests are refused before any site generates.
MAX_SHARD_IMAGES = 20_000


QUALITY_KEYS = ("teacher_agreement", "rejection_rate", "precision", "recall")


def synthesis_quality(shard_summaries: list[dict]) -> dict[str, dict[str, float | None]]:
    """Per site, the mean over its shards of the four figures its filter reported."""
    out: dict[str, dict[str, float | None]] = {}
    for site in sorted({s["site"] for s in shard_summaries}):
        rows = [s["summary"] for s in shard_summaries if s["site"] == site]
        out[site] = {}
        for key in QUALITY_KEYS:
            values = [float(r[key]) for r in rows if isinstance(r.get(key), (int, float)) and np.isfinite(r[key])]
            out[site][key] = round(float(np.mean(values)), 4) if values else None
    return out


class RunError(RuntimeError):
    """The run cannot go on; the message says why."""


@dataclass(frozen=True)
class FitResult:
    """What the fit stage learned of the sites: their reports, who failed, the label space and image shape.

    `run_id` names the run whose models the sites hold. A later run on the same sites may reuse it
    (the bench does) once each site has been told to answer the new run with those models
    (`Site.reuse_fit`): requests always carry the new run's id.
    """

    run_id: str
    reports: dict[str, FitReport]
    failed: dict[str, str]
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    seconds: float


@dataclass
class RunRecord:
    """What a run has so far; each stage reads it and adds its own output.

    Stages in order: fit (`fit`), recycle (`pool`, `shard_summaries`), distill (`student_set`,
    `released_rows`), relabel (`student_set` with the sites' labels, `relabelled_by`), student
    (`student`, `test_accuracy`), audit (`decision`), release (`metrics`, the outcome). `distilled`
    (derived, never stored) is what the release holds: the rows `released_rows` of `student_set`
    (IPC per class; all of it when `student_ipc` is at or below IPC).
    """

    config: RunConfig
    intake: PlainIntake | SealedIntake
    timings: dict[str, float] = field(default_factory=dict)
    fit: FitResult | None = None
    active: dict[str, FitReport] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    pool: Pool | None = None
    shard_summaries: list[dict] = field(default_factory=list)
    student_set: DistilledSet | None = None
    released_rows: np.ndarray | None = None
    relabelled_by: list[str] = field(default_factory=list)
    student: CompactCNN | None = None
    test_accuracy: float | None = None
    decision: AuditDecision | None = None

    @property
    def run_dir(self) -> Path:
        return self.config.run_dir

    @property
    def distilled(self) -> DistilledSet | None:
        """What the release holds: the rows `released_rows` of `student_set`; None before the distill stage."""
        if self.student_set is None or self.released_rows is None:
            return None
        return subset(self.student_set, self.released_rows)

    def left_out(self) -> dict[str, dict[str, str]]:
        """Every site that left the run, by name: the stage (`fit` or `synthesis`) and the reason.

        A site left out at fit never trained for the run or was not accepted; one dropped during
        synthesis had its shards taken out of the pool. Either way its data reached neither the
        release nor the audit, so the release names it here (metrics, manifest, audit report).
        """
        failed = self.fit.failed if self.fit is not None else {}
        out = {sid: {"stage": "fit", "reason": reason} for sid, reason in failed.items()}
        out.update({sid: {"stage": "synthesis", "reason": reason} for sid, reason in self.dropped.items()})
        return dict(sorted(out.items()))

    def need(self, stage: str, value: T | None) -> T:
        """`value`, which `stage` produces; raises `RunError` when that stage has not run."""
        if value is None:
            raise RunError(f"the {stage} stage has not run")
        return value


@dataclass
class RunOutcome:
    """A finished run: released (`release_dir`) or refused (`refusal_path`), its metrics, and its record."""

    run_dir: Path
    released: bool
    release_dir: Path | None
    refusal_path: Path | None
    metrics: dict = field(default_factory=dict)
    record: RunRecord | None = None


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


def _one_line(exc: object) -> str:
    """A site's failure as the run's records keep it: its first line, at most 300 characters."""
    text = str(exc)
    return text.splitlines()[0][:300] if text.strip() else type(exc).__name__


class Coordinator:
    """The coordinator's side of a run, transport-free: it reaches sites through a `SiteLink`.

    `run` is the sequence of named stages (fit, recycle, distill, relabel, student, audit,
    release); each stage is a method over a `RunRecord`, so a caller that measures (the bench,
    `benchmarks/levers.py`) can reuse a fit and run the later stages again with other settings.
    Stage progress goes to `progress(stage, done, total)`.
    """

    def __init__(
        self, config: RunConfig, test_set: ImageSet | None = None, progress: Progress | None = None, keys: CoordinatorKeys | None = None
    ) -> None:
        """`keys` (or the config's `coordinator_dir`) switches to deployment: sealed shards, signed releases.

        The student trains on the config's `device` (`shared/device.py`). Raises `KeyFileError`/`ValueError`
        (from `load_coordinator_keys`) for an unreadable key folder, and `DeviceError` (a `ValueError`)
        for a device this machine lacks.
        """
        self.config = config
        self.device = resolve_device(config.device)
        self.test_set = test_set
        self.progress = progress or _no_progress
        if keys is None and config.coordinator_dir:
            keys = load_coordinator_keys(Path(config.coordinator_dir))
        self.keys = keys

    # -- the run ---------------------------------------------------------------------------------
    def run(self, link: SiteLink, fit: FitResult | None = None) -> RunOutcome:
        """Every stage in order; with `fit`, the sites' earlier fit stands in for the fit stage.

        A run that cannot go on leaves `stopped.json` with the reason, and no release; the
        exception (`RunError` for a reason the run states) is raised again.
        """
        record = self.start()
        try:
            record.fit = fit if fit is not None else self.fit(record, link)
            record.active = dict(record.fit.reports)
            self.recycle(record, link)
            self.distill(record)
            if self.config.relabel:
                self.relabel(record, link)
            self.train_student(record)
            self.audit(record, link)
            return self.release(record)
        except Exception as exc:
            self._stopped(exc)
            raise

    def start(self) -> RunRecord:
        """A fresh record, with the run folder made and the intake (plain, or sealed with keys) set up."""
        self.config.run_dir.mkdir(parents=True, exist_ok=True)
        return RunRecord(self.config, self._intake(self.config.run_dir))

    def _stopped(self, exc: Exception) -> None:
        reason = str(exc) if isinstance(exc, RunError) else f"{type(exc).__name__}: {exc}"
        run_dir = self.config.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "stopped.json").write_text(json.dumps({"run_id": self.config.run_id, "reason": reason,
                                                          "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=2))
        log.error("run %s stopped: %s", self.config.run_id, reason)

    def _total(self) -> int:
        return self.config.rounds + 4  # fit, R rounds, distill+student, audit, release

    # -- stages ----------------------------------------------------------------------------------
    def fit(self, record: RunRecord, link: SiteLink) -> FitResult:
        """Stage 1: every site trains its teacher and generator; sites that fail or disagree are left out.

        Raises `RunError` when no site, or fewer than the quorum, completed fit.
        """
        cfg = self.config
        self.progress("fit: sites train teacher and generator", 0, self._total())
        started = time.perf_counter()
        plan = FitPlan(run_id=cfg.run_id, teacher=cfg.teacher_config(), generator=cfg.generator_config(), dp=cfg.dp_config(),
                       samples_per_class=cfg.samples_per_class, min_class_members=cfg.min_class_members,
                       reference_models=cfg.audit_reference_models, teacher_resample=cfg.teacher_resample)
        replies = link.fit(plan)
        reports = {sid: r for sid, r in replies.items() if isinstance(r, FitReport)}
        failed = {sid: _one_line(r) for sid, r in replies.items() if not isinstance(r, FitReport)}
        for sid in sorted(failed):
            reply = replies[sid]
            if isinstance(reply, Refused) and reply.refusal.setting:
                log.warning("%s refused the fit plan: over its cap %s: %s", sid, reply.refusal.setting, reply.refusal.reason)
            else:
                log.warning("%s failed fit: %s", sid, failed[sid])
        for sid in sorted(reports):
            refused = record.intake.check_site(sid)
            if refused:
                log.warning("%s left out: %s", sid, refused)
                failed[sid] = refused
                del reports[sid]
        self._check_dp(reports, failed)
        if not reports:
            raise RunError("no site completed fit: " + "; ".join(f"{s}: {failed[s]}" for s in sorted(failed)))
        self._check_quorum(reports, failed, "after fit")
        class_names, image_shape = self._agree_on_data(reports, failed)
        self._check_test_set(class_names, image_shape)
        policy = cfg.audit_policy()
        for warning in fit_holdout_warnings({sid: (r.num_members, r.num_holdout) for sid, r in reports.items()},
                                            policy.auc_limits(), policy.confidence):
            log.warning("%s", warning)
        budget = cfg.samples_per_class * len(class_names)
        if budget > MAX_SHARD_IMAGES:
            raise RunError(f"samples-per-class {cfg.samples_per_class} x {len(class_names)} classes = {budget} images "
                           f"per shard, more than the {MAX_SHARD_IMAGES} a shard may hold")
        self._timed(record, "fit", started)
        return FitResult(cfg.run_id, reports, failed, class_names, image_shape, record.timings["fit"])

    def recycle(self, record: RunRecord, link: SiteLink) -> Pool:
        """Stage 2, rounds 1..R: a fresh shard from every active site, validated into the pool.

        A site whose shard is refused leaves the run with its earlier shards. Raises `RunError`
        below the quorum or when no shard reached the pool.
        """
        cfg, fit = self.config, record.need("fit", record.fit)
        spec = ShardSpec(fit.image_shape, len(fit.class_names), MAX_SHARD_IMAGES)
        pool = record.pool = Pool(spec)
        reports, dropped, intake = record.active, record.dropped, record.intake
        started = time.perf_counter()
        for rnd in range(1, cfg.rounds + 1):
            self.progress(f"round {rnd}/{cfg.rounds}: sites synthesize fresh shards", rnd, self._total())
            requests = {sid: self._request(rnd, rep) for sid, rep in reports.items()}
            for sid in sorted(sid for sid, req in requests.items() if req.total == 0):
                # nothing to ask of it, so it contributes nothing: it must not count towards the quorum
                self._drop(sid, f"holds no class with at least {cfg.min_class_members} members", reports, dropped, pool)
                del requests[sid]
            # Pool in site order, not reply-arrival order, so that a run repeats exactly.
            for sid, reply in sorted(link.synthesize(requests).items()):
                if sid not in requests:
                    continue  # a reply nobody asked for
                try:
                    if isinstance(reply, Refused) and reply.refusal.setting:
                        log.warning("%s refused round %d's request (%s)", sid, rnd, reply.refusal.setting)
                    if isinstance(reply, Exception):
                        raise ShardError(f"no shard: {_one_line(reply)}")
                    shard = intake.open(reply, sid, rnd, spec, requests[sid].total)
                except (ShardError, ValueError) as exc:
                    reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
                    pool.rejections.append({"site": sid, "round": rnd, "reason": reason})
                    self._drop(sid, f"round {rnd}: {reason}", reports, dropped, pool)
                    continue
                if pool.add(shard, expected_count=requests[sid].total):
                    record.shard_summaries.append({"site": sid, "round": rnd, "images": len(shard), "summary": shard.summary})
                else:
                    self._drop(sid, f"round {rnd}: {pool.rejections[-1]['reason']}", reports, dropped, pool)
            self._check_quorum(reports, {**fit.failed, **dropped}, f"round {rnd}")
        self._timed(record, "synthesis", started)
        if len(pool) == 0:
            raise RunError("no valid shard reached the pool; see the log for each site's reason")
        return pool

    def distill(self, record: RunRecord) -> DistilledSet:
        """Stage 3: the student's set (`student_ipc` images per class; by default every pool image, up to
        what a site relabels) from the pool, and the distilled set (IPC per class) chosen from it by the
        same rule, its least confident `drop_fraction` dropped first (`distill_student_and_release`);
        spectral matching weighs each row by its site's support for its class. Returns the distilled set.
        """
        cfg, fit, pool = self.config, record.need("fit", record.fit), record.need("recycle", record.pool)
        self.progress("distill and train the student", cfg.rounds + 1, self._total())
        started = time.perf_counter()
        arrays = pool.arrays()
        feats = pool_features(arrays.images, arrays.soft_labels, fit.image_shape, cfg.seed, device=self.device)
        sites = sorted(record.active)
        support = class_support(record.active, sites)
        row_of_site = {sid: i for i, sid in enumerate(sites)}
        weights = support[[row_of_site[str(s)] for s in arrays.site_ids], arrays.hard_labels]
        holds = np.array([[n >= cfg.min_class_members for n in record.active[sid].member_class_counts] for sid in sites])
        support_share, weights = holds.mean(axis=0), np.maximum(weights, 1e-6)
        per_class = cfg.student_set_ipc or whole_pool_ipc(arrays.hard_labels, len(fit.class_names), cfg.ipc,
                                                          MAX_RELABEL_IMAGES if cfg.relabel else None)
        student_set, rows = distill_student_and_release(
            arrays.images, arrays.soft_labels, arrays.hard_labels, feats, fit.class_names, cfg.ipc, per_class,
            cfg.drop_fraction, selection=cfg.selection, class_support=support_share, sample_weights=weights,
            seed=cfg.seed)
        record.student_set, record.released_rows = student_set, rows
        self._timed(record, "distill", started)
        return record.need("distill", record.distilled)

    def relabel(self, record: RunRecord, link: SiteLink) -> DistilledSet:
        """Stage 4: every contributing site's teacher labels the student's set (the distilled images among
        it); a site that fails has no say. Returns the distilled set, relabelled when a site answered.

        Sites that did not answer are left out of the weights; with no answer at all the shards'
        own labels stay: a site's failure never stops the run.
        Raises `RunError`, before any request goes out, when the set holds more images than a site
        relabels (`MAX_RELABEL_IMAGES`).
        """
        student_set = record.need("distill", record.student_set)
        started = time.perf_counter()
        sites = sorted(record.active)
        if len(student_set) > MAX_RELABEL_IMAGES:
            larger = "student-ipc" if self.config.student_ipc > self.config.ipc else "ipc"
            raise RunError(f"the student's set holds {len(student_set)} images, more than the {MAX_RELABEL_IMAGES} "
                           f"a site relabels; lower {larger} (or turn relabelling off)")
        request = RelabelRequest(self.config.run_id, student_set.images, self.config.temperature)
        requests = record.intake.relabel_requests(sites, request)
        shape = (len(student_set), len(student_set.class_names))
        checked = record.intake.relabel_replies(link.relabel(requests), requests, shape)
        answered: dict[str, np.ndarray] = {}
        for sid in sites:
            reply = checked.get(sid, ValueError("no reply"))
            if isinstance(reply, Exception):
                log.warning("%s: relabelling left out: %s", sid, (str(reply).splitlines() or [type(reply).__name__])[0][:200])
            else:
                answered[sid] = reply
        names = sorted(answered)
        try:
            if not names:
                raise ValueError("no site relabelled the student's set")
            probs = [answered[s] for s in names]
            labels = combine(probs, class_counts(record.active, names), self.config.relabel_combine, self.config.temperature)
        except ValueError as exc:
            log.warning("%s; the shards' own labels stay", exc)
        else:
            record.student_set, record.relabelled_by = replace(student_set, soft_labels=labels), names
        self._timed(record, "relabel", started)
        return record.need("distill", record.distilled)

    def train_student(self, record: RunRecord) -> CompactCNN:
        """Stage 5: the student on its set (by default every pool image; the distilled set alone when
        `student_ipc` is at or below IPC), scored on the test split when the coordinator has one."""
        student_set, fit = record.need("distill", record.student_set), record.need("fit", record.fit)
        started = time.perf_counter()
        log.info("student trains on %s", describe(self.device))
        resolution = student_input_resolution(fit.reports.values(), fit.image_shape) if self.config.student_resample else 0
        student = record.student = train_student(student_set, fit.image_shape, self.config.student_config(), device=self.device,
                                                 drawn_class_weight=self.config.drawn_class_weight,
                                                 input_resolution=resolution)
        self._timed(record, "student", started)
        if self.test_set is not None:
            record.test_accuracy = accuracy(student, self.test_set.images, self.test_set.labels, device=self.device)
            log.info("student test accuracy %.4f on %d real test images", record.test_accuracy, len(self.test_set))
        return student

    def audit(self, record: RunRecord, link: SiteLink) -> AuditDecision:
        """Stage 6: every site attacks the candidate with its own members and holdout; the policy decides."""
        cfg = self.config
        student, distilled = record.need("student", record.student), record.need("distill", record.distilled)
        self.progress("audit: sites attack the candidate", cfg.rounds + 2, self._total())
        started = time.perf_counter()
        candidate = AuditCandidate(
            run_id=cfg.run_id,
            student_config=student.config,
            student_weights={k: v.detach().cpu().numpy().copy() for k, v in student.state_dict().items()},
            released_images=distilled.images,
            reference_models=cfg.audit_reference_models,
            lira=cfg.audit_lira,
        )
        sites = sorted(record.active)
        candidates = record.intake.candidates(sites, candidate)
        replies = record.intake.audit_reports(link.audit(sites, candidates), candidates)  # type: ignore[arg-type]
        self._timed(record, "audit", started)
        record.decision = decide_release(replies, cfg.audit_policy())
        return record.decision

    def release(self, record: RunRecord) -> RunOutcome:
        """Stage 7: write the signed release when the audit passed, the refusal otherwise; metrics.json either way."""
        cfg, fit, pool = self.config, record.need("fit", record.fit), record.need("recycle", record.pool)
        distilled, student = record.need("distill", record.distilled), record.need("student", record.student)
        decision = record.need("audit", record.decision)
        metrics = {
            "run_id": cfg.run_id,
            "config": {k: v for k, v in vars(cfg).items()},
            "fit_run_id": fit.run_id,
            "sites": {sid: rep.to_dict() for sid, rep in sorted(record.active.items())},
            "working_size": working_size(fit.image_shape, list(record.active.values())),
            "sites_failed_fit": fit.failed,
            "contributors": sorted(record.active),
            "sites_dropped": record.dropped,
            "sites_left_out": record.left_out(),
            "coordinator_device": describe(self.device),
            "min_sites": cfg.min_sites,
            "sealed_transport": record.intake.sealed,
            "pool_size_by_round": {str(k): v for k, v in pool.size_by_round().items()},
            "pool_size": len(pool),
            "pool_rejections": pool.rejections,
            "shards": record.shard_summaries,
            "synthesis_quality": synthesis_quality(record.shard_summaries),
            "selection": cfg.selection,
            "relabel_combine": cfg.relabel_combine,
            "relabelled_by": record.relabelled_by,
            "distilled_per_class": {fit.class_names[c]: int(n) for c, n in enumerate(distilled.per_class())},
            "student_images": len(record.need("distill", record.student_set)),
            "student_test_accuracy": record.test_accuracy,
            "test_images": None if self.test_set is None else len(self.test_set),
            "audit": audit_summary(decision),
            "stage_seconds": {"fit": fit.seconds, **record.timings},
        }
        self.progress("release", cfg.rounds + 3, self._total())
        if metrics["sites_left_out"]:
            log.warning("%d site(s) left out of this run: %s", len(metrics["sites_left_out"]), "; ".join(
                f"{sid} ({entry['stage']}: {entry['reason']})" for sid, entry in metrics["sites_left_out"].items()))
        if decision.passed:
            signer = self.keys.signing_key if self.keys is not None else None
            release_dir = write_release(record.run_dir / "release", distilled, student, metrics, decision, signer=signer)
            outcome = RunOutcome(record.run_dir, True, release_dir, None, metrics, record)
        else:
            refusal = write_refusal(record.run_dir, decision, metrics, distilled, student)
            outcome = RunOutcome(record.run_dir, False, None, refusal, metrics, record)
        self.progress("done", self._total(), self._total())
        return outcome

    # -- helpers ---------------------------------------------------------------------------------
    def _intake(self, run_dir: Path) -> PlainIntake | SealedIntake:
        if self.keys is None:
            return PlainIntake(self.config.run_id)
        return SealedIntake(self.keys, self.config.run_id, ReplayGuard(run_dir / "seen_nonces.txt"))

    def _check_quorum(self, active: dict[str, FitReport], dropped: dict[str, str], stage: str) -> None:
        quorum = self.config.min_sites
        if len(active) < quorum:
            why = "; ".join(f"{s}: {r}" for s, r in sorted(dropped.items())) or "no site answered"
            raise RunError(f"{stage}: {len(active)} site(s) remain ({', '.join(sorted(active)) or 'none'}), fewer than "
                           f"the quorum of {quorum}; no release is written. Dropped: {why}")

    @staticmethod
    def _timed(record: RunRecord, stage: str, started: float) -> None:
        record.timings[stage] = round(time.perf_counter() - started, 2)

    def _drop(self, sid: str, reason: str, active: dict[str, FitReport], dropped: dict[str, str], pool: Pool) -> None:
        """A site that fails to deliver leaves the run, and its earlier shards leave the pool.

        Its data then reaches the release by no path, so its audit is not needed; the release
        names the sites that did contribute.
        """
        log.warning("%s dropped from the run: %s", sid, reason)
        dropped[sid] = reason
        active.pop(sid, None)
        pool.drop_site(sid)

    def _agree_on_data(
        self, reports: dict[str, FitReport], failed: dict[str, str]
    ) -> tuple[tuple[str, ...], tuple[int, int, int]]:
        """The label space and image shape most sites share; a site that differs is left out, not fatal."""
        votes = Counter((rep.class_names, rep.image_shape) for rep in reports.values())
        (class_names, image_shape), _ = votes.most_common(1)[0]
        for sid in sorted(reports):
            rep = reports[sid]
            counts = rep.member_class_counts
            reason = None
            if (rep.class_names, rep.image_shape) != (class_names, image_shape):
                reason = (f"holds {len(rep.class_names)} classes of {rep.image_shape} images where the other sites "
                          f"hold {len(class_names)} of {image_shape}")
            elif len(counts) != len(class_names) or min(counts) < 0 or sum(counts) != rep.num_members:
                # the counts weigh its say in distillation and relabelling, so they must be consistent
                reason = "reports member counts per class that do not add up to its members"
            if reason is not None:
                log.warning("%s left out: %s", sid, reason)
                failed[sid] = reason
                del reports[sid]
            elif rep.empty_classes:
                log.warning("%s has no images of class(es) %s", sid, ", ".join(rep.class_names[c] for c in rep.empty_classes))
        return class_names, image_shape

    def _check_dp(self, reports: dict[str, FitReport], failed: dict[str, str]) -> None:
        """With DP asked for, a site that reports no accounting, more than the budget, or DP on other models than
        the run asked for (`DPConfig.models`), is left out."""
        budget = self.config.dp_config()
        if budget is None:
            return
        for sid in sorted(reports):
            spent = (reports[sid].dp or {}).get("epsilon")
            models = (reports[sid].dp or {}).get("models", DP_BOTH_MODELS)
            if not isinstance(spent, (int, float)) or not spent <= budget.target_epsilon * 1.001:
                reason = f"reports DP epsilon {spent!r}, the run's budget is {budget.target_epsilon}"
            elif models != budget.models:
                reason = f"reports DP on {models!r}, the run asked for {budget.models!r}"
            else:
                continue
            log.warning("%s left out: %s", sid, reason)
            failed[sid] = reason
            del reports[sid]

    def _check_test_set(self, class_names: tuple[str, ...], image_shape: tuple[int, int, int]) -> None:
        test = self.test_set
        if test is not None and (test.image_shape != image_shape or test.num_classes != len(class_names)):
            raise RunError(f"the test split holds {test.num_classes} classes of {test.image_shape} images, "
                           f"the sites {len(class_names)} of {image_shape}: give the test split of the sites' dataset")

    def _request(self, rnd: int, report: FitReport) -> SynthesisRequest:
        """Ask each site only for the classes it has enough members of to have learned."""
        per_class = per_class_request(report.member_class_counts, self.config.samples_per_class,
                                      self.config.min_class_members)
        return SynthesisRequest(run_id=self.config.run_id, round=rnd, per_class=per_class, temperature=self.config.temperature,
                                oversample=self.config.oversample)

