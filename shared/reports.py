"""Typed messages between coordinator and site, with plain-dict forms for any transport.

Reports are metrics only: scalars, strings and short lists. The outbound gate lets these and
synthetic shards leave a site, nothing else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

from .attack_report import AttackResult
from .classifier import ClassifierConfig, TrainConfig
from .dp import DPConfig, RefusedDPSetting
from .dp_models import teacher_guidance_refusal
from .generator import GeneratorConfig
from .shard import ROW_SUM_TOLERANCE, per_class_request
from .utility import UtilityCounts

RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")


def check_run_id(run_id: str) -> str:
    """Run ids name folders at sites and the coordinator: letters, digits, '.', '_', '-' only."""
    if not isinstance(run_id, str) or RUN_ID_PATTERN.fullmatch(run_id) is None or ".." in run_id:
        raise ValueError(f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-' only")
    return run_id


@dataclass(frozen=True)
class FitPlan:
    run_id: str
    teacher: TrainConfig
    generator: GeneratorConfig
    teacher_channels: int = 32
    #: The site's whole DP budget, or None to train without DP; the site splits it between its two models.
    dp: DPConfig | None = None
    #: What the run will ask after fit, for a site to check against its caps before training (0: not stated):
    #: images per class per shard, for every class with at least `min_class_members` members, and the
    #: audit's reference models.
    samples_per_class: int = 0
    min_class_members: int = 1
    reference_models: int = 0
    #: Whether the teacher resamples every input to the generator's working resolution and back
    #: (`ClassifierConfig.input_resolution`), so that it learns the members at the detail its generator's
    #: samples carry (`RunConfig.teacher_resample`).
    teacher_resample: bool = False

    def __post_init__(self) -> None:
        """Raises `RefusedDPSetting` for teacher guidance (`GeneratorConfig.classifier_guidance`) under DP
        of the generator alone (`teacher_guidance_refusal`): a plan a site must refuse."""
        reason = teacher_guidance_refusal(self.generator.classifier_guidance, None if self.dp is None else self.dp.models)
        if reason is not None:
            raise RefusedDPSetting(reason)

    def shard_images(self, member_class_counts: tuple[int, ...] | list[int]) -> int:
        """The images one shard will ask of a site holding `member_class_counts` members per class."""
        return sum(per_class_request(member_class_counts, self.samples_per_class, self.min_class_members))

    def to_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "teacher": asdict(self.teacher),
            "generator": self.generator.to_dict(),
            "teacher_channels": self.teacher_channels,
            "dp": None if self.dp is None else self.dp.to_dict(),
            "samples_per_class": self.samples_per_class,
            "min_class_members": self.min_class_members,
            "reference_models": self.reference_models,
            "teacher_resample": self.teacher_resample,
        }

    @classmethod
    def from_dict(cls, data: dict) -> FitPlan:
        return cls(
            run_id=str(data["run_id"]),
            teacher=TrainConfig(**data["teacher"]),
            generator=GeneratorConfig.from_dict(data["generator"]),
            teacher_channels=int(data["teacher_channels"]),
            dp=None if data.get("dp") is None else DPConfig.from_dict(data["dp"]),
            samples_per_class=int(data.get("samples_per_class", 0)),
            min_class_members=max(1, int(data.get("min_class_members", 1))),
            reference_models=int(data.get("reference_models", 0)),
            teacher_resample=bool(data.get("teacher_resample", False)),
        )


@dataclass(frozen=True)
class FitReport:
    site_id: str
    num_members: int
    num_holdout: int
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    member_class_counts: tuple[int, ...]
    teacher_holdout_accuracy: float
    generator_final_loss: float
    teacher_seconds: float
    generator_seconds: float
    generator_summary: dict[str, str | int | float] = field(default_factory=dict)
    dp: dict | None = None

    @property
    def empty_classes(self) -> list[int]:
        return [c for c, n in enumerate(self.member_class_counts) if n == 0]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["class_names"] = list(self.class_names)
        data["image_shape"] = list(self.image_shape)
        data["member_class_counts"] = list(self.member_class_counts)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> FitReport:
        return cls(
            site_id=str(data["site_id"]),
            num_members=int(data["num_members"]),
            num_holdout=int(data["num_holdout"]),
            class_names=tuple(str(c) for c in data["class_names"]),
            image_shape=tuple(int(s) for s in data["image_shape"]),  # type: ignore[arg-type]
            member_class_counts=tuple(int(c) for c in data["member_class_counts"]),
            teacher_holdout_accuracy=_float_or_nan(data["teacher_holdout_accuracy"]),
            generator_final_loss=_float_or_nan(data["generator_final_loss"]),
            teacher_seconds=_float_or_nan(data["teacher_seconds"]),
            generator_seconds=_float_or_nan(data["generator_seconds"]),
            generator_summary=dict(data.get("generator_summary", {})),
            dp=None if data.get("dp") is None else _small_dict(data["dp"], "dp"),
        )


def _float_or_nan(value: object) -> float:
    """A figure read back from a report file: null (how strict JSON writes a figure that was NaN,
    `fedkr.shared.json_output`) is NaN again; anything else as `float()` reads it (and raises as it does)."""
    return math.nan if value is None else float(value)  # type: ignore[arg-type]


#: The requests a site answers, as a refusal names them.
REQUESTS = ("fit", "synthesize", "relabel", "audit")
#: The longest reason a refusal carries.
MAX_REASON = 300


@dataclass(frozen=True)
class SiteRefusal:
    """A site's answer in place of the one asked for: why it will not (a cap) or could not answer.

    `request` is one of `REQUESTS`; `reason` one line of at most `MAX_REASON` characters, built
    from settings and counts only, never from the site's paths or data (the site's log has the
    detail); `setting` the node-config key of the site's setting behind a refusal (a cap the request
    is over, `client/caps.py`, or the shard check's limit, `client/shard_check.py`), "" when the site
    could not answer.
    """

    site_id: str
    request: str
    reason: str
    setting: str = ""

    def __str__(self) -> str:
        return f"refused to {self.request}: {self.reason}" if self.setting else f"could not {self.request}: {self.reason}"


class Refused(RuntimeError):
    """A site's refusal, where it stands in for the reply asked for; `refusal` is the message, `str()` its one line."""

    def __init__(self, refusal: SiteRefusal) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


@dataclass(frozen=True)
class AuditCandidate:
    """What the coordinator asks sites to attack: the candidate student and the images it would release."""

    run_id: str
    student_config: ClassifierConfig
    student_weights: dict[str, np.ndarray]
    released_images: np.ndarray  # uint8 (N, H, W, C): the distilled set, for the distance tests
    reference_models: int = 2
    lira: bool = False


@dataclass(frozen=True)
class RelabelRequest:
    """Distilled images for one site's teacher to label at `temperature` (cross-site relabelling)."""

    run_id: str
    images: np.ndarray  # uint8 (N, H, W, C)
    temperature: float


@dataclass(frozen=True)
class RelabelReply:
    """One site's teacher probabilities for the images of a relabelling request, in request order."""

    site_id: str
    probs: np.ndarray  # float32 (N, num_classes)


#: The most images one relabelling request may hold.
MAX_RELABEL_IMAGES = 20_000


def check_relabel(request: RelabelRequest, image_shape: tuple[int, ...] | None = None) -> None:
    """What a site checks before running its teacher on a relabelling request."""
    check_run_id(request.run_id)
    images = request.images
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError("relabel images must be a uint8 (N, H, W, C) array")
    if not 1 <= images.shape[0] <= MAX_RELABEL_IMAGES:
        raise ValueError(f"a relabel request must hold 1 to {MAX_RELABEL_IMAGES} images, got {images.shape[0]}")
    if image_shape is not None and tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(f"relabel images are {tuple(images.shape[1:])}, this site's are {tuple(image_shape)}")
    if not 0 < request.temperature <= 100:
        raise ValueError(f"temperature must be in (0, 100], got {request.temperature}")


def check_relabel_reply(probs: np.ndarray, num_images: int, num_classes: int) -> np.ndarray:
    """A site's labels, accepted only as one probability row per image."""
    probs = np.asarray(probs)
    if probs.shape != (num_images, num_classes) or probs.dtype != np.float32:
        raise ValueError(f"relabel reply must be float32 {(num_images, num_classes)}, got {probs.dtype} {probs.shape}")
    if not np.isfinite(probs).all() or (probs < 0).any() or not np.allclose(probs.sum(1), 1.0, rtol=0.0, atol=ROW_SUM_TOLERANCE):
        raise ValueError("relabel reply rows must be probabilities (finite, non-negative, summing to 1)")
    return probs


def _small_dict(value: object, name: str, depth: int = 3) -> dict:
    """An object of scalars and small nested objects from a remote party, bounded in size and depth."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 64 or depth == 0:
        raise ValueError(f"{name} must be a small object")
    out: dict = {}
    for key, item in value.items():
        if isinstance(item, dict):
            out[str(key)[:64]] = _small_dict(item, name, depth - 1)
        elif item is None or isinstance(item, (bool, int, float)):
            if isinstance(item, int) and abs(item) > 1e15:
                raise ValueError(f"{name}: number out of range")
            out[str(key)[:64]] = item
        elif isinstance(item, str):
            out[str(key)[:64]] = item[:500]
        else:
            raise ValueError(f"{name}: values must be numbers, strings or objects")
    return out


@dataclass(frozen=True)
class AuditReport:
    """A site's audit of one candidate: attack results and synthetic-set checks, metrics only."""

    site_id: str
    results: tuple[AttackResult, ...]
    num_members: int = 0
    num_nonmembers: int = 0
    near_duplicates: dict = field(default_factory=dict)
    dp: dict | None = None
    settings: dict = field(default_factory=dict)
    #: The candidate student's and the site teacher's per-class counts on the site's holdout (fedkr.shared.utility).
    utility: UtilityCounts | None = None

    def result(self, attack: str) -> AttackResult | None:
        return next((r for r in self.results if r.attack == attack), None)

    def to_dict(self) -> dict:
        return {
            "site_id": self.site_id, "results": [r.to_dict() for r in self.results],
            "num_members": self.num_members, "num_nonmembers": self.num_nonmembers,
            "near_duplicates": self.near_duplicates, "dp": self.dp, "settings": self.settings,
            "utility": None if self.utility is None else self.utility.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> AuditReport:
        results = data["results"]
        if not isinstance(results, list) or len(results) > 32:
            raise ValueError("an audit holds a list of at most 32 attack results")
        dp = data.get("dp")
        return cls(
            site_id=str(data["site_id"]),
            results=tuple(AttackResult.from_dict(r) for r in results),
            num_members=int(data.get("num_members", 0)),
            num_nonmembers=int(data.get("num_nonmembers", 0)),
            near_duplicates=_small_dict(data.get("near_duplicates"), "near_duplicates"),
            dp=None if dp is None else _small_dict(dp, "dp"),
            settings=_small_dict(data.get("settings"), "settings"),
            utility=None if data.get("utility") is None else UtilityCounts.from_dict(data["utility"]),
        )


def generator_resolutions(reports: Iterable[FitReport]) -> list[int]:
    """The distinct resolutions (px) the sites' generators drew at, ascending; sites that report none (or one
    that is not positive) are left out."""
    return sorted({int(r.generator_summary["generator_resolution"]) for r in reports
                   if int(r.generator_summary.get("generator_resolution", 0)) > 0})


def working_size(image_shape: tuple[int, int, int], reports: list[FitReport]) -> dict:
    """The sizes a run worked at, as its metrics.json states them: the images' (H, W, C), which the teachers,
    the student and the released images share, and the generators' resolution in pixels (one figure when
    every site's is the same)."""
    resolutions = generator_resolutions(reports)
    return {"images": list(image_shape), "generator_resolution": resolutions[0] if len(resolutions) == 1 else resolutions}
