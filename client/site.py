"""A hospital site: trains its teacher and generator on members, synthesizes shards, audits candidates.

A `Site` is rebuilt from its data and its state folder on every request, so a transport that
runs each request in a fresh process (Flower's simulation engine does) loses nothing: trained
models live in the state folder, not in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import replace
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from fedkr.shared.classifier import (
    CONFIG_SCHEMA,
    ClassifierConfig,
    CompactCNN,
    accuracy,
    build_classifier,
    embed,
    embed_and_logits,
    one_hot,
    predict_proba,
    probabilities,
    resampling_resolution,
    train_classifier,
)
from fedkr.shared.device import Device, describe, placed, resolve_device
from fedkr.shared.dp import DPConfig, DPReport
from fedkr.shared.dp_models import DP_BOTH_MODELS, teacher_guidance_refusal
from fedkr.shared.image_set import ImageSet
from fedkr.shared.generator_kinds import SiteGenerator, build_generator, generator_resolution, load_generator
from fedkr.shared.reports import (
    AuditCandidate,
    FitPlan,
    FitReport,
    RelabelReply,
    RelabelRequest,
    SiteRefusal,
    check_relabel,
    check_run_id,
)
from fedkr.shared import codec
from fedkr.shared.shard import MAX_OVERSAMPLE, Shard, SynthesisRequest
from fedkr.shared.json_input import read_json_file
from fedkr.shared.shard_wire import open_candidate, open_relabel
from fedkr.shared.site_identity import check_site_name
from safetensors.torch import load_file, save_file

from .auditor import AuditSettings, audit_model
from .caps import FitClock, OverCap, SiteCaps
from .credentials import SiteCredentials
from .gate import OutboundGate
from .shard_check import (DEFAULT_MAX_AUC, SHARD_CHECK_KEY, ShardCheckRecord, check_shard, check_shard_limit,
                          shard_check_on)
from .synthesis_filter import FilterOutcome, MemberManifold, filter_samples
from .site_data import SiteData

log = logging.getLogger(__name__)

#: The shard check's record of a run, in its folder (`shard_check.ShardCheckRecord`).
SHARD_CHECK_RECORD = "shard_check.npz"


def split_budget(dp: DPConfig | None, num_members: int) -> tuple[DPConfig | None, DPConfig | None]:
    """The (teacher, generator) budgets: half the site's epsilon and delta for each model, so that by basic
    composition the two together stay within the budget; with `dp.models` "generator", none for the
    teacher and the whole budget for the generator."""
    if dp is None:
        return None, None
    if dp.generator_only:
        return None, replace(dp, target_delta=dp.delta_for(num_members))
    half = replace(dp, target_epsilon=dp.target_epsilon / 2, target_delta=dp.delta_for(num_members) / 2)
    return half, half


def dp_summary(budget: DPConfig, teacher: DPReport | None, generator: DPReport) -> dict:
    """The site's DP accounting as the audit report shows it: the total and each private model's part
    (the generator's alone when the teacher trained without DP, `DPConfig.models` "generator"), and
    "randomness": "secret" when DP-SGD's noise and sampling came from the operating system's
    randomness, "repeatable" when `DPConfig.repeatable` seeded them from the run's seed (no guarantee
    against anyone who knows the seed, the coordinator included)."""
    parts = {"generator": generator} if teacher is None else {"teacher": teacher, "generator": generator}
    return {
        "epsilon": sum(p.epsilon for p in parts.values()),
        "delta": sum(p.delta for p in parts.values()),
        "target_epsilon": budget.target_epsilon,
        "max_grad_norm": budget.max_grad_norm,
        "accountant": budget.accountant,
        "models": budget.models,
        "randomness": "repeatable" if budget.repeatable else "secret",
        "composition": ("basic: the sum over teacher and generator, both trained on the same members" if teacher is not None
                        else "the generator only: the teacher trained without DP, so its soft labels and the student "
                             "are covered by the audit's attacks, not by epsilon"),
        "parts": {name: p.to_dict() for name, p in parts.items()},
    }


def load_teacher(run_dir: Path) -> CompactCNN:
    """The teacher a site saved for one run (`teacher.json` and `teacher.safetensors` in `run_dir`)."""
    teacher = CompactCNN(ClassifierConfig.from_dict(read_json_file(run_dir / "teacher.json", schema=CONFIG_SCHEMA)))
    teacher.load_state_dict(load_file(run_dir / "teacher.safetensors"))
    teacher.eval()
    return teacher


#: In a run folder: the run answers with another run's models (`Site.reuse_fit`).
REUSED_FIT = "reused_fit.json"
#: The sampling settings a reused fit may replace (`Site.reuse_fit`): they change sampling only, not the weights.
SAMPLING_SETTINGS = ("guidance_scale", "sample_eta", "classifier_guidance")
_REUSED_FIT_SCHEMA = {"type": "object", "required": ["fit_dir"],
                      "properties": {"fit_dir": {"type": "string"},
                                     **{name: {"type": ["number", "null"]} for name in SAMPLING_SETTINGS}}}


def run_dir(state_dir: Path, run_id: str) -> Path:
    """A site's own folder for run `run_id`: ``state_dir/runs/<run_id>`` (need not exist).

    Raises `ValueError` for an invalid run id (`fedkr.shared.reports.check_run_id`).
    """
    return Path(state_dir) / "runs" / check_run_id(run_id)


def teacher_input_resolution(plan: FitPlan, image_shape: tuple[int, int, int]) -> int:
    """The teacher's `ClassifierConfig.input_resolution` (px) under `plan` for uint8 (H, W, C) members: the
    generator's working resolution where the plan asks the teacher to resample (`FitPlan.teacher_resample`)
    and that resolution is below the images' smaller side, else 0 (off)."""
    if not plan.teacher_resample:
        return 0
    return resampling_resolution(generator_resolution(plan.generator, image_shape), image_shape[:2])


def train_teacher(plan: FitPlan, members: ImageSet, dp: DPConfig | None = None, device: Device = None,
                  on_epoch: Callable[[int, float], None] | None = None) -> CompactCNN:
    """The site's teacher under `plan`: a `CompactCNN` of `plan.teacher_channels` channels, seeded by
    `plan.teacher.seed`, resampling its inputs as `teacher_input_resolution` says, trained by
    `shared.classifier.train_classifier` on the members' uint8 (N, H, W, C) images and one-hot labels
    with `plan.teacher`'s protocol (DP-SGD under `dp`, None: without). `on_epoch(epoch, loss)` may raise
    to stop it (the fit's wall-time cap)."""
    h, w, c = members.image_shape
    teacher = build_classifier(ClassifierConfig(c, h, w, members.num_classes, plan.teacher_channels,
                                                teacher_input_resolution(plan, members.image_shape)), plan.teacher.seed)
    train_classifier(teacher, members.images, one_hot(members.labels, members.num_classes), plan.teacher,
                     on_epoch=on_epoch, dp=dp, device=device)
    return teacher


def save_teacher(directory: Path, teacher: CompactCNN) -> None:
    """Write `teacher` to `directory` as a site saves it at fit (``teacher.json``, ``teacher.safetensors``;
    `load_teacher` reads them)."""
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, Path(directory) / "teacher.safetensors")
    (Path(directory) / "teacher.json").write_text(json.dumps(teacher.config.to_dict()))


def has_fit(directory: Path) -> bool:
    """Whether `directory` holds a site's fitted teacher and generator, as a site saves them at fit
    (``teacher.safetensors`` and the ``generator`` folder)."""
    return (Path(directory) / "teacher.safetensors").is_file() and (Path(directory) / "generator").is_dir()


def run_models_dir(state_dir: Path, run_id: str) -> tuple[Path, dict[str, float]]:
    """The folder holding run `run_id`'s models (teacher, generator, dp.json) in a site's `state_dir`, and
    the sampling settings that replace the generator's saved ones (empty: keep them).

    That is `run_dir(state_dir, run_id)`, or the fit a `Site.reuse_fit` pointer names. The folder need
    not exist. Raises `ValueError` for an invalid run id, `JSONInputError` for a pointer that does not load.
    """
    directory = run_dir(state_dir, run_id)
    pointer = directory / REUSED_FIT
    if not pointer.is_file():
        return directory, {}
    meta = read_json_file(pointer, schema=_REUSED_FIT_SCHEMA)
    return Path(meta["fit_dir"]), {name: float(meta[name]) for name in SAMPLING_SETTINGS if meta.get(name) is not None}


class SiteNotFitted(RuntimeError):
    """A synthesis or audit request reached a site that has not been fitted in this run."""


class Site:
    """One hospital: its members and holdout, its trained models, and everything it lets out.

    The four requests a coordinator may make, each answered through the outbound gate
    (`gate.py`), which checks the item, records it in the site's ledger and, with keys, signs
    and seals it:

    - `fit(FitPlan)` -> `FitReport`: train the teacher (`CompactCNN`) and the generator of the plan's
      kind on the members: the class-conditional diffusion generator (diffusers `UNet2DModel`, DDPM
      objective with v-prediction, DDIM sampling; Ho et al. 2020; classifier-free guidance after Ho &
      Salimans 2022), optionally with DP-SGD (opacus), or DP-MERF (`shared/mean_embedding.py`, one
      Gaussian release); metrics only leave.
    - `synthesize(SynthesisRequest)` -> `Shard`: fresh images, uint8 (N, H, W, C), with the teacher's
      soft labels, float32 (N, K), at the requested temperature (knowledge recycling, arXiv
      2407.15526), after the in-distribution filter.
    - `relabel(RelabelRequest)` -> `RelabelReply`: the teacher's probabilities, float32 (N, K), for
      the coordinator's distilled images, once per run.
    - `audit(AuditCandidate)` -> `AuditReport`: every membership-inference attack of the auditor on
      the candidate, members against holdout; only metrics leave.

    Models live in `state_dir/runs/<run id>/`, so a site rebuilt for every request (Flower's
    simulation engine does) loses nothing. Requests for a run the site has not fitted raise
    `SiteNotFitted`; malformed requests raise `ValueError`; the gate's refusals raise `GateRefusal`.

    Each method takes the coordinator's message, as the object or as the bytes that arrived
    (`shared/codec.py`; sealed bytes for candidates and relabelling requests when the site has keys),
    and returns the exact bytes that leave through the site's gate. A request over one of the site's
    caps (`caps.py`), or a shard its shard check stops (`shard_check.py`), is answered with a
    `SiteRefusal` that names the node-config key at issue, through the same gate.
    """

    def __init__(
        self, site_id: str, data: SiteData, state_dir: Path, credentials: SiteCredentials | None = None,
        device: torch.device | str = "cpu", caps: SiteCaps = SiteCaps(), shard_max_auc: float = DEFAULT_MAX_AUC,
    ) -> None:
        """With `credentials` (deployment) every shard leaves sealed and signed, reports and labels signed,
        and only sealed, coordinator-signed audit candidates and relabelling requests are accepted.

        Every model trains and runs on `device` (`auto`, `cpu`, `cuda`, `cuda:N`, or a `torch.device`;
        `shared/device.py`, which raises `DeviceError` for one this machine lacks); `caps` are the most
        the site accepts of a coordinator's requests; `shard_max_auc` is the shard check's limit
        (`shard_check.py`; 1 turns it off).
        Raises `ValueError` (`KeyringError`) if `site_id` is not a site name (`check_site_name`), and
        `ValueError` if `shard_max_auc` is not in (0.5, 1] (`check_shard_limit`).
        """
        check_site_name(site_id)
        if credentials is not None and credentials.site_name != site_id:
            raise ValueError(f"site name {site_id!r} differs from the name in its keys, {credentials.site_name!r}")
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.caps = caps
        self.shard_max_auc = check_shard_limit(shard_max_auc)
        self.site_id = site_id
        self.data = data
        self.state_dir = Path(state_dir)
        self.credentials = credentials
        real = np.concatenate([data.members.images, data.holdout.images])
        self.gate = OutboundGate(site_id, real, self.state_dir / "ledger.jsonl", credentials)
        self._models: tuple[str, CompactCNN, SiteGenerator] | None = None  # (run id, teacher, generator)
        self._manifold: tuple[str, MemberManifold | None] | None = None  # (run id, members in that run's teacher space)

    # -- fit -----------------------------------------------------------------------------------
    def fit(self, plan: FitPlan | bytes) -> bytes:
        """Train the teacher and the generator on the members; the encoded `FitReport` that leaves.

        A plan the site refuses (over one of its caps, or `codec.PlanRefused`: DP settings only the site
        may choose, or ones it does not know) is answered with a `SiteRefusal`, which leaves through the
        gate. Raises `ValueError` (`codec.CodecError`) on plan bytes that do not decode.
        """
        if isinstance(plan, (bytes, bytearray)):
            try:
                plan = codec.decode_fit_plan(plan)
            except codec.PlanRefused as exc:
                if exc.log_detail:
                    log.warning("%s: the refused plan of run %s: %s", self.site_id, exc.run_id, exc.log_detail)
                return self._refuse("fit", exc.run_id, codec.one_line(exc), round=0)
        check_run_id(plan.run_id)
        try:
            self.caps.check_plan(plan, tuple(int(n) for n in self.data.members.class_counts()))
            report = self._fit(plan, self.caps.fit_clock())
        except OverCap as exc:
            return self._refuse("fit", plan.run_id, exc.reason, round=0, setting=exc.cap)
        return self.gate.send(report, run_id=plan.run_id, round=0)

    def _fit(self, plan: FitPlan, clock: FitClock) -> FitReport:
        """Train and save the teacher and the generator; the report. `clock` raises `OverCap` past the wall-time cap."""
        members, holdout = self.data.members, self.data.holdout
        counts = members.class_counts()
        for cls in np.flatnonzero(counts == 0):
            log.warning("%s: class %d (%s) has no member images here", self.site_id, cls, members.class_names[cls])
        teacher_dp, generator_dp = split_budget(plan.dp, len(members))
        log.info("%s: fit on %s", self.site_id, describe(self.device))
        started = time.perf_counter()
        teacher_started = time.monotonic()

        def epoch_done(epoch: int, loss: float) -> None:
            clock.check("teacher", epoch + 1, plan.teacher.epochs, teacher_started)

        teacher = train_teacher(plan, members, dp=teacher_dp, device=self.device, on_epoch=epoch_done)
        teacher_seconds = time.perf_counter() - started
        teacher_acc = accuracy(teacher, holdout.images, holdout.labels, device=self.device)
        log.info("%s: teacher trained in %.0f s, holdout accuracy %.3f", self.site_id, teacher_seconds, teacher_acc)

        generator = build_generator(plan.generator, members.num_classes, members.image_shape)
        generator_started = time.monotonic()

        def progress(step: int, total: int, loss: float) -> None:
            log.info("%s: generator step %d/%d, loss %.4f", self.site_id, step, total, loss)
            clock.check("generator", step, total, generator_started)

        final_loss = generator.train(members.images, members.labels, on_progress=progress, dp=generator_dp, device=self.device)
        self._save(plan.run_id, teacher, generator)
        dp_record = None
        (self._run_dir(plan.run_id) / "dp.json").unlink(missing_ok=True)
        if plan.dp is not None and generator.dp_report is not None and (teacher.dp_report is not None or teacher_dp is None):
            dp_record = dp_summary(plan.dp, teacher.dp_report, generator.dp_report)
            (self._run_dir(plan.run_id) / "dp.json").write_text(json.dumps(dp_record, indent=2))
            log.info("%s: DP spent epsilon %.2f (%s) at delta %.2g", self.site_id, dp_record["epsilon"],
                     " + ".join(f"{name} {part['epsilon']:.2f}" for name, part in dp_record["parts"].items()), dp_record["delta"])
        report = FitReport(
            site_id=self.site_id,
            num_members=len(members),
            num_holdout=len(holdout),
            class_names=members.class_names,
            image_shape=members.image_shape,
            member_class_counts=tuple(int(n) for n in counts),
            teacher_holdout_accuracy=teacher_acc,
            generator_final_loss=final_loss,
            teacher_seconds=teacher_seconds,
            generator_seconds=generator.train_seconds,
            generator_summary=generator.summary(),
            dp=dp_record,
        )
        return report

    def _refuse(self, request: str, run_id: str, reason: str, round: int, setting: str = "") -> bytes:
        """The refusal that leaves, through the gate: `reason` in fedkr's own words (settings and
        counts, never the site's data); `setting` the node-config key of the site's setting at issue
        (a cap, or the shard check's limit), "" when the site could not answer."""
        log.warning("%s: refusing to %s in run %s: %s", self.site_id, request, run_id, reason)
        return self.gate.send(SiteRefusal(self.site_id, request, reason, setting), run_id=run_id, round=round)

    # -- synthesize ----------------------------------------------------------------------------
    def synthesize(self, request: SynthesisRequest | bytes) -> bytes:
        """Fresh images for the requested budget, labelled by the teacher at the requested temperature:
        the encoded shard that leaves (sealed and signed when the site has keys).

        The site draws `oversample` times the request and keeps what its in-distribution filter
        passes (see `synthesis_filter`); the shard's summary carries the filter's four figures. A
        shard does not leave when the pixel distance test of this run's shards with it shows that they
        reproduce the members (`shard_check`): the site answers with a refusal instead. With its
        first shard of a run the site draws a probe of one more shard, which never leaves and which
        every check of the run tests too: each check looks one round ahead. A run whose generator
        samples guided by the teacher (`GeneratorConfig.classifier_guidance`) is refused where the
        run's DP record does not say that the teacher trained with DP (`teacher_guidance_refusal`).
        """
        if isinstance(request, (bytes, bytearray)):
            request = codec.decode_synthesis_request(request)
        teacher, generator = self._load(request.run_id)
        if len(request.per_class) != generator.num_classes:
            raise ValueError(f"request names {len(request.per_class)} classes, the site has {generator.num_classes}")
        if any(n < 0 for n in request.per_class) or request.total == 0:
            raise ValueError("request must ask for a non-negative count per class and at least one image")
        if not request.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {request.temperature}")
        if not 1.0 <= request.oversample <= MAX_OVERSAMPLE:
            raise ValueError(f"oversample must be between 1 and {MAX_OVERSAMPLE}, got {request.oversample}")
        try:
            self.caps.check_shard(request.total)
        except OverCap as exc:
            return self._refuse("synthesize", request.run_id, exc.reason, round=request.round, setting=exc.cap)
        if generator.config.classifier_guidance > 0:
            refusal = self._guidance_refusal(request.run_id, generator)
            if refusal is not None:
                return self._refuse("synthesize", request.run_id, refusal, round=request.round)
        shards_sent, images_sent = self.gate.sent_in_run(request.run_id, "shard")
        seed = self._next_seed(request, generator.config.seed, shards_sent)
        started = time.perf_counter()
        drawn, drawn_labels, logits, outcome = self._draw(request, teacher, generator, seed)
        images, labels = drawn[outcome.keep], drawn_labels[outcome.keep]
        # the coordinator holds every shard of the run, so the check tests them all with this one
        sent_before = self._closest_sent(request.run_id, shards_sent, images_sent)
        if sent_before is None:
            return self._refuse("synthesize", request.run_id, "its record of the images it sent in this run is missing, "
                                "unreadable, of other images or behind its ledger, so its shard check cannot run",
                                round=request.round, setting=SHARD_CHECK_KEY)
        members, holdout = self.data.members.images, self.data.holdout.images
        if shard_check_on(self.shard_max_auc) and sent_before.num_images + sent_before.num_probe == 0:
            # the run's first shard: a probe of one more shard, kept here, lets every check look one round ahead
            probe_seed = self._next_seed(request, generator.config.seed, shards_sent, purpose="probe")
            probe, _, _, probe_outcome = self._draw(request, teacher, generator, probe_seed)
            sent_before = sent_before.adding(probe[probe_outcome.keep], members, holdout, probe=True)
        sent = sent_before.adding(images, members, holdout)
        if shard_check_on(self.shard_max_auc):
            check = check_shard(sent, self.shard_max_auc, seed)
            log.info("%s: round %d shard check, this run's shards with this one: %s", self.site_id, request.round,
                     check.describe())
            if check.leaks:
                return self._refuse("synthesize", request.run_id, f"its shards reproduce its members ({check.describe()}); "
                                    "this one was not sent", round=request.round, setting=SHARD_CHECK_KEY)
        soft = probabilities(logits[outcome.keep], request.temperature)
        shard = Shard(
            site_id=self.site_id,
            round=request.round,
            images=images,
            soft_labels=soft,
            hard_labels=labels,
            declared_count=int(labels.shape[0]),
            summary={
                **generator.summary(),
                "teacher": f"CompactCNN width {teacher.config.channels}",
                "temperature": request.temperature,
                "oversample": request.oversample,
                **outcome.summary(),
                "sample_seconds": time.perf_counter() - started,
            },
        )
        log.info("%s: round %d shard of %d images (drew %d, %.0f%% failed the filter); teacher agrees with the "
                 "requested class on %.1f%%, precision %.2f, recall %.2f", self.site_id, request.round, len(shard),
                 len(drawn), 100 * outcome.rejection_rate, 100 * outcome.teacher_agreement, outcome.precision, outcome.recall)
        # kept before the shard leaves: a record may count a shard the gate then refused, never miss one that left
        sent.save(self._run_dir(request.run_id) / SHARD_CHECK_RECORD)
        return self.gate.send(shard, run_id=request.run_id, round=request.round)

    def _guidance_refusal(self, run_id: str, generator: SiteGenerator) -> str | None:
        """Why this run's generator may not sample guided by its teacher (`teacher_guidance_refusal`), or
        None: the run's DP record (``dp.json``) says which models trained with DP; a generator trained
        with DP whose record is missing is refused too, since nothing then says its teacher was private."""
        record = self.dp_record(run_id)
        if record is None and getattr(generator, "dp_report", None) is not None:
            return "teacher guidance needs the run's DP record, which is missing: nothing says its teacher trained with DP"
        models = None if record is None else record.get("models", DP_BOTH_MODELS)
        return teacher_guidance_refusal(generator.config.classifier_guidance, models)

    def _draw(self, request: SynthesisRequest, teacher: CompactCNN, generator: SiteGenerator,
              seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, FilterOutcome]:
        """`oversample` times the request drawn from the generator: the images uint8 (N, H, W, C), their
        requested classes int64 (N,), the teacher's logits float32 (N, classes), and the in-distribution
        filter's outcome (which to keep). A generator whose `classifier_guidance` is above 0 samples
        guided by `teacher` (`ClassConditionalDiffusion.sample`)."""
        drawn_per_class = [math.ceil(n * request.oversample) for n in request.per_class]
        drawn_labels = np.repeat(np.arange(generator.num_classes), drawn_per_class).astype(np.int64)
        if generator.config.classifier_guidance > 0:
            teacher.eval()
            with placed(teacher, self.device) as where:
                drawn = generator.sample(drawn_labels, seed=seed, device=where, classifier=teacher)
        else:
            drawn = generator.sample(drawn_labels, seed=seed, device=self.device)
        features, logits = embed_and_logits(teacher, drawn, device=self.device)  # one pass serves the filter and the labels
        outcome = filter_samples(drawn_labels, probabilities(logits), features, request.per_class,
                                 self._member_manifold(request.run_id, teacher), seed)
        return drawn, drawn_labels, logits, outcome

    def _closest_sent(self, run_id: str, shards_sent: int, images_sent: int) -> ShardCheckRecord | None:
        """The shard check's record of run `run_id` (`SHARD_CHECK_RECORD` in its folder): the members' and held-out
        images' distances to the closest image sent or probed; empty before the first shard. None when the
        ledger lists shards sent in the run but the record is missing, unreadable, malformed, of other
        member and held-out images, or counts fewer images than the ledger: the check must not start
        afresh nor forget a shard that left. `shards_sent` and `images_sent` are the ledger's counts for the run."""
        path = self._run_dir(run_id) / SHARD_CHECK_RECORD
        members, holdout = self.data.members.images, self.data.holdout.images
        if not path.is_file():
            return None if shards_sent else ShardCheckRecord.nothing_sent(members, holdout)
        try:
            record = ShardCheckRecord.load(path, members, holdout)
        except ValueError as exc:
            log.warning("%s: run %s: %s", self.site_id, run_id, exc)
            return None
        if record.num_images < images_sent:  # an older record (restored from a copy, say) misses shards that left
            log.warning("%s: run %s: the shard check's record counts %d images sent, the ledger %d", self.site_id,
                        run_id, record.num_images, images_sent)
            return None
        return record

    def _member_manifold(self, run_id: str, teacher: CompactCNN) -> MemberManifold | None:
        if self._manifold is None or self._manifold[0] != run_id:
            members = self.data.members
            self._manifold = (run_id, MemberManifold.of(embed(teacher, members.images, device=self.device), members.labels))
        return self._manifold[1]

    # -- relabel -------------------------------------------------------------------------------
    def relabel(self, request: RelabelRequest | bytes) -> bytes:
        """This site's teacher's probabilities for the coordinator's distilled images (cross-site relabelling):
        the encoded `RelabelReply` (probabilities (N, classes), float16 on the wire), bound to the request bytes it answers.

        Once per run: the teacher is not released, and answering any number of chosen images would
        make it a query oracle on the members. With keys the request must arrive sealed and the reply
        is signed.
        """
        received = bytes(request) if isinstance(request, (bytes, bytearray)) else None
        if self.credentials is None:
            if received is not None:
                if not codec.is_plain(received):
                    raise ValueError("sealed relabel request, but this site has no keys (set keys-dir in the node config)")
                request = codec.decode_relabel_request(received, site_id=self.site_id)
        else:
            if received is None or codec.is_plain(received):
                raise ValueError("unsealed relabel request: a site with keys accepts only requests sealed and signed by its coordinator")
            request = open_relabel(received, recipient_key=self.credentials.sealing_key,
                                   coordinator_key=self.credentials.coordinator_verify_key, site_id=self.site_id)
        assert isinstance(request, RelabelRequest)
        check_relabel(request, self.data.members.image_shape)
        if self.gate.count_sent(request.run_id, "labels") > 0:
            raise ValueError(f"run {request.run_id} has had its relabelling already; a site labels one set per run")
        teacher, _ = self._load(request.run_id)
        probs = predict_proba(teacher, request.images, temperature=request.temperature, device=self.device)
        return self.gate.send(RelabelReply(self.site_id, probs), run_id=request.run_id, round=-2, candidate_blob=received)

    # -- audit ---------------------------------------------------------------------------------
    def audit(self, candidate: AuditCandidate | bytes, seed: int = 0) -> bytes:
        """Every attack of the auditor on the candidate, with this site's members against its holdout:
        the encoded `AuditReport`, bound to the candidate bytes it answers (with keys: the candidate
        must arrive sealed, and the report is signed)."""
        received = bytes(candidate) if isinstance(candidate, (bytes, bytearray)) else None
        candidate = self._open_candidate(candidate)
        try:
            self.caps.check_reference_models(candidate.reference_models)
        except OverCap as exc:
            return self._refuse("audit", candidate.run_id, exc.reason, round=-1, setting=exc.cap)
        teacher, generator = self._load(candidate.run_id)
        student = CompactCNN(candidate.student_config)
        student.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in candidate.student_weights.items()})
        student.eval()
        settings = AuditSettings(reference_models=candidate.reference_models, lira=candidate.lira, seed=seed)
        report = audit_model(
            self.site_id, student, self.data.members, self.data.holdout, settings,
            released_images=np.asarray(candidate.released_images), feature_model=teacher,
            dp=self.dp_record(candidate.run_id), comparator=teacher, device=self.device, generator=generator,
        )
        return self.gate.send(report, run_id=candidate.run_id, round=-1, candidate_blob=received)

    def _open_candidate(self, candidate: AuditCandidate | bytes) -> AuditCandidate:
        if self.credentials is None:
            if isinstance(candidate, (bytes, bytearray)):
                if not codec.is_plain(candidate):
                    raise ValueError("sealed audit candidate, but this site has no keys (set keys-dir in the node config)")
                return codec.decode_candidate(bytes(candidate), site_id=self.site_id)
            return candidate
        if not isinstance(candidate, (bytes, bytearray)) or codec.is_plain(candidate):
            raise ValueError("unsealed audit candidate: a site with keys accepts only candidates sealed and signed by its coordinator")
        return open_candidate(bytes(candidate), recipient_key=self.credentials.sealing_key,
                              coordinator_key=self.credentials.coordinator_verify_key, site_id=self.site_id)

    def dp_record(self, run_id: str) -> dict | None:
        """The DP accounting of this run's teacher and generator, as saved at fit; None without DP."""
        path = self._models_dir(run_id)[0] / "dp.json"
        return read_json_file(path, schema={"type": "object"}) if path.is_file() else None

    def reuse_fit(self, fit_dir: Path, run_id: str, guidance_scale: float | None = None,
                  sample_eta: float | None = None, classifier_guidance: float | None = None) -> None:
        """Answer run `run_id` with the teacher and generator another run saved in `fit_dir`, fitting nothing.

        For in-process callers that compare coordinator settings on one fit (the bench,
        `benchmarks/levers.py`): the run folder gets a pointer, not a copy. `guidance_scale` and
        `sample_eta` (DDIM's eta) and `classifier_guidance` (the teacher's guidance), when given,
        replace the generator's own (sampling settings: the weights stay).
        Everything else is per run as usual: fresh seeds, the ledger, relabelling once per run.

        Raises:
            SiteNotFitted: `fit_dir` holds no saved teacher and generator (`has_fit`).
        """
        if not has_fit(fit_dir):
            raise SiteNotFitted(f"{self.site_id}: {fit_dir} holds no fitted teacher and generator")
        directory = self._run_dir(run_id)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / REUSED_FIT).write_text(json.dumps({"fit_dir": str(Path(fit_dir).resolve()), "guidance_scale": guidance_scale,
                                                        "sample_eta": sample_eta, "classifier_guidance": classifier_guidance}))
        self._models = None

    def _models_dir(self, run_id: str) -> tuple[Path, dict[str, float]]:
        """Where run `run_id`'s models are, and the sampling settings that replace the saved ones (absent: keep them)."""
        return run_models_dir(self.state_dir, run_id)

    # -- state ---------------------------------------------------------------------------------
    def _next_seed(self, request: SynthesisRequest, base_seed: int, shards_sent: int, purpose: str = "shard") -> int:
        """A new seed on every call (fresh images), yet reproducible: derived from the run id, the run's
        seed, the site, the round and how many shards the site has sent in this run (`shards_sent`, its ledger says).
        A run repeated under the same run id and seed draws the same images; two runs that share a
        fit but not a run id draw different ones. The shard check's probe (`purpose` "probe") draws
        other images than the shard it is drawn with."""
        tag = "" if purpose == "shard" else f":{purpose}"
        key = f"{request.run_id}:{base_seed}:{self.site_id}:{request.round}:{shards_sent}{tag}".encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1

    def _run_dir(self, run_id: str) -> Path:
        return run_dir(self.state_dir, run_id)

    def _save(self, run_id: str, teacher: CompactCNN, generator: SiteGenerator) -> None:
        directory = self._run_dir(run_id)
        directory.mkdir(parents=True, exist_ok=True)
        save_teacher(directory, teacher)
        generator.save(directory / "generator")
        self._models = (run_id, teacher, generator)

    def teacher(self, run_id: str) -> CompactCNN:
        """The teacher of run `run_id`, the model whose probabilities this site's relabel replies carry.
        Raises `SiteNotFitted` where the site holds none for that run."""
        return self._load(run_id)[0]

    def _load(self, run_id: str) -> tuple[CompactCNN, SiteGenerator]:
        if self._models is not None and self._models[0] == run_id:
            return self._models[1], self._models[2]
        directory, sampling = self._models_dir(run_id)
        if not has_fit(directory):
            raise SiteNotFitted(f"{self.site_id} has not been fitted for run {run_id}")
        teacher = load_teacher(directory)
        generator = load_generator(directory / "generator")
        generator.config = replace(generator.config, **sampling)
        self._models = (run_id, teacher, generator)
        return teacher, generator
