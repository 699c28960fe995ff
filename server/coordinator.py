"""The coordinator's run: fit, recycle, distill, student, audit, release or refuse.

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
from fedkr.shared.audit_policy import decide_release
from fedkr.shared.classifier import CompactCNN, accuracy
from fedkr.shared.data import ImageSet
from fedkr.shared.reports import AuditCandidate, FitPlan, FitReport, RelabelRequest
from fedkr.shared.shard import ShardError, ShardSpec, SynthesisRequest
from fedkr.shared.shard_wire import ReplayGuard

from .audit_document import audit_summary
from .config import RunConfig
from .distill import DistilledSet, distill
from .intake import PlainIntake, SealedIntake
from .keyring import CoordinatorKeys, load_coordinator_keys
from .link import SiteLink
from .pool import Pool, PoolArrays
from .relabel import class_support, combine_labels
from .release import write_refusal, write_release
from .student import pool_features, train_student

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]

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


@dataclass
class RunOutcome:
    run_dir: Path
    released: bool
    release_dir: Path | None
    refusal_path: Path | None
    metrics: dict = field(default_factory=dict)


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


class Coordinator:
    def __init__(
        self, config: RunConfig, test_set: ImageSet | None = None, progress: Progress | None = None, keys: CoordinatorKeys | None = None
    ) -> None:
        """`keys` (or the config's `coordinator_dir`) switches to deployment: sealed shards, signed releases."""
        self.config = config
        self.test_set = test_set
        self.progress = progress or _no_progress
        self.timings: dict[str, float] = {}
        #: What the last run built, for in-process callers that measure it (a benchmark): never written out.
        self.pool_arrays: PoolArrays | None = None
        self.distilled: DistilledSet | None = None
        self.student: CompactCNN | None = None
        if keys is None and config.coordinator_dir:
            keys = load_coordinator_keys(Path(config.coordinator_dir))
        self.keys = keys

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

    def _timed(self, stage: str, started: float) -> None:
        self.timings[stage] = round(time.perf_counter() - started, 2)

    def run(self, link: SiteLink) -> RunOutcome:
        """Run every stage; a run that cannot go on leaves `stopped.json` with the reason, and no release."""
        try:
            return self._run(link)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, RunError) else f"{type(exc).__name__}: {exc}"
            run_dir = self.config.run_dir
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "stopped.json").write_text(json.dumps({"run_id": self.config.run_id, "reason": reason,
                                                              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=2))
            log.error("run %s stopped: %s", self.config.run_id, reason)
            raise

    def _run(self, link: SiteLink) -> RunOutcome:
        cfg = self.config
        run_dir = cfg.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        total_rounds = cfg.rounds + 4  # fit, R rounds, distill+student, audit, release

        # round 0: every site fits its teacher and generator
        self.progress("fit: sites train teacher and generator", 0, total_rounds)
        started = time.perf_counter()
        plan = FitPlan(run_id=cfg.run_id, teacher=cfg.teacher_config(), generator=cfg.generator_config(), dp=cfg.dp_config())
        intake = self._intake(run_dir)
        replies = link.fit(plan)
        reports = {sid: r for sid, r in replies.items() if isinstance(r, FitReport)}
        failed_fit = {sid: str(r) for sid, r in replies.items() if not isinstance(r, FitReport)}
        for sid in sorted(reports):
            refused = intake.check_site(sid)
            if refused:
                log.warning("%s left out: %s", sid, refused)
                failed_fit[sid] = refused
                del reports[sid]
        self._check_dp(reports, failed_fit)
        if not reports:
            raise RunError("no site completed fit: " + "; ".join(f"{s}: {e}" for s, e in failed_fit.items()))
        self._check_quorum(reports, failed_fit, "after fit")
        class_names, image_shape = self._agree_on_data(reports, failed_fit)
        self._check_test_set(class_names, image_shape)
        budget = cfg.samples_per_class * len(class_names)
        if budget > MAX_SHARD_IMAGES:
            raise RunError(f"samples-per-class {cfg.samples_per_class} x {len(class_names)} classes = {budget} images "
                           f"per shard, more than the {MAX_SHARD_IMAGES} a shard may hold")
        self._timed("fit", started)

        # rounds 1..R: a fresh shard from every site, validated into the pool
        spec = ShardSpec(image_shape, len(class_names), MAX_SHARD_IMAGES)
        pool = Pool(spec)
        shard_summaries: list[dict] = []
        dropped: dict[str, str] = {}
        started = time.perf_counter()
        for rnd in range(1, cfg.rounds + 1):
            self.progress(f"round {rnd}/{cfg.rounds}: sites synthesize fresh shards", rnd, total_rounds)
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
                    if isinstance(reply, Exception):
                        raise ShardError(f"no shard: {reply}")
                    shard = intake.open(reply, sid, rnd, spec, requests[sid].total)
                except (ShardError, ValueError) as exc:
                    reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
                    pool.rejections.append({"site": sid, "round": rnd, "reason": reason})
                    self._drop(sid, f"round {rnd}: {reason}", reports, dropped, pool)
                    continue
                if pool.add(shard, expected_count=requests[sid].total):
                    shard_summaries.append({"site": sid, "round": rnd, "images": len(shard), "summary": shard.summary})
                else:
                    self._drop(sid, f"round {rnd}: {pool.rejections[-1]['reason']}", reports, dropped, pool)
            self._check_quorum(reports, {**failed_fit, **dropped}, f"round {rnd}")
        self._timed("synthesis", started)
        if len(pool) == 0:
            raise RunError("no valid shard reached the pool; see the log for each site's reason")

        # distill and train the student
        self.progress("distill and train the student", cfg.rounds + 1, total_rounds)
        started = time.perf_counter()
        distilled = self._distill(pool, reports, class_names, image_shape)
        self._timed("distill", started)
        relabelled_by: list[str] = []
        if cfg.relabel:
            started = time.perf_counter()
            distilled, relabelled_by = self._relabel(link, intake, distilled, reports)
            self._timed("relabel", started)
        started = time.perf_counter()
        student = train_student(distilled, image_shape, cfg.student_config())
        self.distilled, self.student = distilled, student
        self._timed("student", started)
        test_accuracy = None
        if self.test_set is not None:
            test_accuracy = accuracy(student, self.test_set.images, self.test_set.labels)
            log.info("student test accuracy %.4f on %d real test images", test_accuracy, len(self.test_set))

        # audit: every site attacks the candidate with its own members and holdout
        self.progress("audit: sites attack the candidate", cfg.rounds + 2, total_rounds)
        started = time.perf_counter()
        candidate = AuditCandidate(
            run_id=cfg.run_id,
            student_config=student.config,
            student_weights={k: v.detach().numpy().copy() for k, v in student.state_dict().items()},
            released_images=distilled.images,
            reference_models=cfg.audit_reference_models,
            lira=cfg.audit_lira,
        )
        candidates = intake.candidates(sorted(reports), candidate)
        audit_replies = intake.audit_reports(link.audit(sorted(reports), candidates), candidates)  # type: ignore[arg-type]
        self._timed("audit", started)
        decision = decide_release(audit_replies, cfg.audit_policy())

        metrics = {
            "run_id": cfg.run_id,
            "config": {k: v for k, v in vars(cfg).items()},
            "sites": {sid: rep.to_dict() for sid, rep in sorted(reports.items())},
            "sites_failed_fit": failed_fit,
            "contributors": sorted(reports),
            "sites_dropped": dropped,
            "min_sites": cfg.min_sites,
            "sealed_transport": intake.sealed,
            "pool_size_by_round": {str(k): v for k, v in pool.size_by_round().items()},
            "pool_size": len(pool),
            "pool_rejections": pool.rejections,
            "shards": shard_summaries,
            "synthesis_quality": synthesis_quality(shard_summaries),
            "selection": cfg.selection,
            "relabelled_by": relabelled_by,
            "distilled_per_class": {class_names[c]: int(n) for c, n in enumerate(distilled.per_class())},
            "student_test_accuracy": test_accuracy,
            "test_images": None if self.test_set is None else len(self.test_set),
            "audit": audit_summary(decision),
            "stage_seconds": self.timings,
        }
        self.progress("release", cfg.rounds + 3, total_rounds)
        if decision.passed:
            signer = self.keys.signing_key if self.keys is not None else None
            release_dir = write_release(run_dir / "release", distilled, student, metrics, decision, signer=signer)
            outcome = RunOutcome(run_dir, True, release_dir, None, metrics)
        else:
            refusal = write_refusal(run_dir, decision, metrics, distilled, student)
            outcome = RunOutcome(run_dir, False, None, refusal, metrics)
        self.progress("done", total_rounds, total_rounds)
        return outcome

    def _distill(self, pool: Pool, reports: dict[str, FitReport], class_names: tuple[str, ...],
                 image_shape: tuple[int, int, int]) -> DistilledSet:
        """IPC images per class from the pool; spectral matching weighs each row by its site's support for its class."""
        cfg = self.config
        arrays = self.pool_arrays = pool.arrays()
        feats = pool_features(arrays.images, arrays.soft_labels, image_shape, cfg.seed)
        sites = sorted(reports)
        support = class_support(reports, sites)
        row_of_site = {sid: i for i, sid in enumerate(sites)}
        weights = support[[row_of_site[str(s)] for s in arrays.site_ids], arrays.hard_labels]
        holds = np.array([[n >= cfg.min_class_members for n in reports[sid].member_class_counts] for sid in sites])
        return distill(arrays.images, arrays.soft_labels, arrays.hard_labels, feats, class_names, cfg.ipc,
                       cfg.drop_fraction, selection=cfg.selection, class_support=holds.mean(axis=0),
                       sample_weights=np.maximum(weights, 1e-6), seed=cfg.seed)

    def _relabel(self, link: SiteLink, intake: PlainIntake | SealedIntake, distilled: DistilledSet,
                 reports: dict[str, FitReport]) -> tuple[DistilledSet, list[str]]:
        """Every contributing site's teacher labels the distilled images; a site that fails has no say.

        Sites that did not answer are left out of the weights; with no answer at all the shards'
        own labels stay, so relabelling can improve labels but never stop a run.
        """
        sites = sorted(reports)
        request = RelabelRequest(self.config.run_id, distilled.images, self.config.temperature)
        requests = intake.relabel_requests(sites, request)
        shape = (len(distilled), len(distilled.class_names))
        checked = intake.relabel_replies(link.relabel(requests), requests, shape)
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
                raise ValueError("no site relabelled the distilled set")
            labels = combine_labels([answered[s] for s in names], class_support(reports, names))
        except ValueError as exc:
            log.warning("%s; the shards' own labels stay", exc)
            return distilled, []
        return replace(distilled, soft_labels=labels), names

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
        """With DP asked for, a site that reports no accounting, or more than the budget, is left out."""
        budget = self.config.dp_config()
        if budget is None:
            return
        for sid in sorted(reports):
            spent = (reports[sid].dp or {}).get("epsilon")
            if not isinstance(spent, (int, float)) or not spent <= budget.target_epsilon * 1.001:
                reason = f"reports DP epsilon {spent!r}, the run's budget is {budget.target_epsilon}"
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
        per_class = tuple(
            self.config.samples_per_class if n >= self.config.min_class_members else 0
            for n in report.member_class_counts
        )
        return SynthesisRequest(run_id=self.config.run_id, round=rnd, per_class=per_class, temperature=self.config.temperature,
                                oversample=self.config.oversample)

