"""Typed messages between coordinator and site, with plain-dict forms for any transport.

Reports are metrics only: scalars, strings and short lists. The outbound gate lets these and
synthetic shards leave a site, nothing else.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import numpy as np

from .classifier import ClassifierConfig, TrainConfig
from .generator import GeneratorConfig
from .mia import AttackResult


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

    def to_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "teacher": asdict(self.teacher),
            "generator": self.generator.to_dict(),
            "teacher_channels": self.teacher_channels,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "FitPlan":
        return cls(
            run_id=str(data["run_id"]),
            teacher=TrainConfig(**data["teacher"]),
            generator=GeneratorConfig.from_dict(data["generator"]),
            teacher_channels=int(data["teacher_channels"]),
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
    def from_dict(cls, data: dict) -> "FitReport":
        return cls(
            site_id=str(data["site_id"]),
            num_members=int(data["num_members"]),
            num_holdout=int(data["num_holdout"]),
            class_names=tuple(str(c) for c in data["class_names"]),
            image_shape=tuple(int(s) for s in data["image_shape"]),  # type: ignore[arg-type]
            member_class_counts=tuple(int(c) for c in data["member_class_counts"]),
            teacher_holdout_accuracy=float(data["teacher_holdout_accuracy"]),
            generator_final_loss=float(data["generator_final_loss"]),
            teacher_seconds=float(data["teacher_seconds"]),
            generator_seconds=float(data["generator_seconds"]),
            generator_summary=dict(data.get("generator_summary", {})),
        )


@dataclass(frozen=True)
class AuditCandidate:
    """What the coordinator asks sites to attack: the candidate student's architecture and weights."""

    run_id: str
    student_config: ClassifierConfig
    student_weights: dict[str, np.ndarray]


@dataclass(frozen=True)
class AuditReport:
    site_id: str
    results: tuple[AttackResult, ...]

    def to_dict(self) -> dict:
        return {"site_id": self.site_id, "results": [r.to_dict() for r in self.results]}

    @classmethod
    def from_dict(cls, data: dict) -> "AuditReport":
        return cls(
            site_id=str(data["site_id"]),
            results=tuple(
                AttackResult(
                    attack=str(r["attack"]),
                    auc=float(r["auc"]),
                    tpr_at_1pct_fpr=float(r["tpr_at_1pct_fpr"]),
                    num_members=int(r["num_members"]),
                    num_nonmembers=int(r["num_nonmembers"]),
                )
                for r in data["results"]
            ),
        )
