"""The run's settings, validated once at the edge (CLI flags or Flower's run config)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from fedkr.shared.audit_policy import DISTANCE_ATTACKS, STUDENT_ATTACKS, AuditPolicy
from fedkr.shared.classifier import TrainConfig
from fedkr.shared.dp import DPConfig
from fedkr.shared.generator import GeneratorConfig
from fedkr.shared.partition import PartitionSpec
from fedkr.shared.reports import RUN_ID_PATTERN
from fedkr.shared.shard import MAX_OVERSAMPLE

from .distill import SELECTIONS


class ConfigError(ValueError):
    """A bad setting; the message names it."""


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


@dataclass(frozen=True)
class RunConfig:
    """Every setting of a run. `data` is what simulated sites read; `test_data` is the real test split
    the coordinator scores the student on ("" means the test split of `data` in simulation, none
    in deployment, where the coordinator holds no site's data source)."""

    data: str = "digits"
    test_data: str = ""
    partition: str = "iid"
    seed: int = 0
    rounds: int = 3
    ipc: int = 50
    samples_per_class: int = 50
    holdout_fraction: float = 0.2
    temperature: float = 4.0
    min_class_members: int = 5
    drop_fraction: float = 0.3
    # how the distilled set is chosen, whether every site relabels it, how much each site oversamples for its filter
    selection: str = "spectral"
    relabel: bool = True
    oversample: float = 1.0
    audit_max_auc: float = 0.6
    audit_max_tpr: float = 0.03
    audit_max_distance_auc: float = 0.6
    audit_reference_models: int = 2
    audit_lira: bool = False
    # differential privacy at every site: off when dp_epsilon is 0
    dp_epsilon: float = 0.0
    dp_delta: float = 0.0
    dp_max_grad_norm: float = 1.0
    out: str = "runs"
    run_id: str = field(default_factory=new_run_id)
    site_threads: int = 0
    reply_timeout: float = 7200.0
    # deployment: quorum, how many sites to wait for, and the coordinator's key folder ("" in simulation)
    min_sites: int = 1
    expected_sites: int = 0
    wait_for_sites: float = 120.0
    coordinator_dir: str = ""
    # training budgets
    generator_steps: int = 2000
    generator_resolution: int = 16
    generator_channels: str = "32,64,64"
    generator_batch: int = 64
    generator_hflip: bool = False
    #: Classifier-free guidance scale the site's generator samples with (1: plain conditional sampling).
    generator_guidance: float = 1.0
    teacher_epochs: int = 30
    student_epochs: int = 60
    classifier_hflip: bool = False

    def __post_init__(self) -> None:
        checks = [
            (self.rounds >= 1, "rounds must be at least 1"),
            (self.ipc >= 1, "ipc must be at least 1"),
            (self.samples_per_class >= 1, "samples-per-class must be at least 1"),
            (0.0 < self.holdout_fraction < 1.0, "holdout-fraction must be in (0, 1)"),
            (self.temperature > 0, "temperature must be > 0"),
            (0.0 <= self.drop_fraction < 1.0, "drop-fraction must be in [0, 1)"),
            (self.selection in SELECTIONS, f"selection must be one of {', '.join(SELECTIONS)}"),
            (1.0 <= self.oversample <= MAX_OVERSAMPLE, f"oversample must be between 1 and {MAX_OVERSAMPLE}"),
            (0.0 < self.audit_max_auc <= 1.0, "audit-max-auc must be in (0, 1]"),
            (0.0 < self.audit_max_tpr <= 1.0, "audit-max-tpr must be in (0, 1]"),
            (0.0 < self.audit_max_distance_auc <= 1.0, "audit-max-distance-auc must be in (0, 1]"),
            (2 <= self.audit_reference_models <= 8, "audit-reference-models must be between 2 and 8"),
            (0 <= self.dp_epsilon < float("inf"), "dp-epsilon must be a finite number >= 0 (0 turns DP off)"),
            (0.0 <= self.dp_delta < 1.0, "dp-delta must be in [0, 1) (0 means 1/(10 N) at each site)"),
            (0 < self.dp_max_grad_norm < float("inf"), "dp-max-grad-norm must be a finite number > 0"),
            (self.generator_steps >= 1, "generator-steps must be at least 1"),
            (self.teacher_epochs >= 1, "teacher-epochs must be at least 1"),
            (self.student_epochs >= 1, "student-epochs must be at least 1"),
            (RUN_ID_PATTERN.fullmatch(self.run_id) is not None and ".." not in self.run_id,
             "run-id may hold only letters, digits, '.', '_' and '-' (at most 80)"),
            (self.generator_batch >= 1, "generator-batch must be at least 1"),
            (self.generator_resolution >= 8, "generator-resolution must be at least 8"),
            (1.0 <= self.generator_guidance <= 10.0, "generator-guidance must be between 1 (no guidance) and 10"),
            (self.min_class_members >= 1, "min-class-members must be at least 1"),
            (self.reply_timeout > 0, "reply-timeout must be > 0"),
            (self.min_sites >= 1, "min-sites (the quorum) must be at least 1"),
            (self.expected_sites >= 0, "expected-sites must be >= 0 (0: every site in the registry, or whoever connects)"),
            (self.wait_for_sites > 0, "wait-for-sites must be > 0 seconds"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        try:
            PartitionSpec.parse(self.partition)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        try:
            channels = tuple(int(c) for c in self.generator_channels.split(","))
        except ValueError:
            raise ConfigError("generator-channels must be a comma-separated list of integers") from None
        if not channels or any(c < 8 or c % 8 for c in channels):
            raise ConfigError("generator-channels must be multiples of 8, as in 32,64,64")

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.run_id

    def teacher_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.teacher_epochs, seed=self.seed, hflip=self.classifier_hflip)

    def student_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.student_epochs, temperature=self.temperature, seed=self.seed, hflip=self.classifier_hflip)

    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig(
            resolution=self.generator_resolution,
            block_channels=tuple(int(c) for c in self.generator_channels.split(",")),
            train_steps=self.generator_steps,
            batch_size=self.generator_batch,
            hflip=self.generator_hflip,
            guidance_scale=self.generator_guidance,
            seed=self.seed,
        )

    def dp_config(self) -> DPConfig | None:
        if self.dp_epsilon == 0:
            return None
        return DPConfig(self.dp_epsilon, self.dp_delta or None, self.dp_max_grad_norm)

    def audit_policy(self) -> AuditPolicy:
        required = STUDENT_ATTACKS + (("lira",) if self.audit_lira else ()) + DISTANCE_ATTACKS
        return AuditPolicy(max_auc_upper=self.audit_max_auc, max_tpr_at_1pct_fpr=self.audit_max_tpr,
                           max_distance_auc_upper=self.audit_max_distance_auc, required_attacks=required)

    @classmethod
    def from_flat(cls, values: dict[str, object]) -> RunConfig:
        """Build from a flat mapping with dashed keys (Flower run config, CLI); unknown keys are errors."""
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, object] = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name == "run_id" and value == "":
                continue  # Flower's run config needs every key declared; "" asks for a new run id
            if name not in known:
                raise ConfigError(f"unknown setting '{key}'")
            target = known[name].type
            try:
                if target in ("int", int):
                    kwargs[name] = int(value)  # type: ignore[arg-type]
                elif target in ("float", float):
                    kwargs[name] = float(value)  # type: ignore[arg-type]
                elif target in ("bool", bool):
                    kwargs[name] = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
                else:
                    kwargs[name] = str(value)
            except (TypeError, ValueError):
                raise ConfigError(f"setting '{key}' has a bad value {value!r}") from None
        return cls(**kwargs)  # type: ignore[arg-type]

    def with_overrides(self, **changes: object) -> RunConfig:
        return replace(self, **changes)  # type: ignore[arg-type]
