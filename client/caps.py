"""A site's resource caps: the most a coordinator's plan may ask of this site's hardware.

Set in the node config (`flower-supernode --node-config 'max-generator-steps=2000 max-fit-seconds=3600'`);
0, or a key left out, means no cap. A site checks the fit plan against its caps before it trains
and each later request before it computes, and answers a request over a cap with a refusal
(`SiteRefusal`) that names the cap; the coordinator logs it and leaves the site out.

| key | what it caps |
|---|---|
| `max-generator-steps` | the generator's optimisation steps at fit |
| `max-shard-images` | the images one synthesis request asks for (the site draws up to `oversample` times as many for its filter) |
| `max-reference-models` | the reference models the audit trains (RMIA, LiRA) |
| `max-fit-seconds` | fit's wall time, teacher and generator together: training stops, and the site refuses, once it has run past the cap or is projected to |
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields

from fedkr.shared.config import ConfigError
from fedkr.shared.reports import FitPlan

#: Node-config keys of the caps, by `SiteCaps` field.
CAP_KEYS = {
    "max_generator_steps": "max-generator-steps",
    "max_shard_images": "max-shard-images",
    "max_reference_models": "max-reference-models",
    "max_fit_seconds": "max-fit-seconds",
}
#: How far into the generator's training the wall-time cap starts projecting the finish (a share of its steps).
PROJECT_AFTER = 0.1


class OverCap(Exception):
    """A request over one of the site's caps: `cap` is its node-config key, `reason` one line of settings and counts."""

    def __init__(self, cap: str, reason: str) -> None:
        super().__init__(reason)
        self.cap = cap
        self.reason = reason


@dataclass(frozen=True)
class SiteCaps:
    """The most this site accepts; 0 means no cap. `max_fit_seconds` is wall time in seconds."""

    max_generator_steps: int = 0
    max_shard_images: int = 0
    max_reference_models: int = 0
    max_fit_seconds: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"node config '{CAP_KEYS[f.name]}' must be a number >= 0 (0: no cap), got {value!r}")

    @classmethod
    def from_node_config(cls, node: Mapping[str, object]) -> SiteCaps:
        """The caps among a node config's keys. Raises `ConfigError` for a value that is not a number >= 0."""
        values: dict[str, int | float] = {}
        for f in fields(cls):
            key = CAP_KEYS[f.name]
            if key not in node:
                continue
            raw = node[key]
            try:
                number = float(raw)  # type: ignore[arg-type]
                if isinstance(raw, bool) or not math.isfinite(number):
                    raise ValueError(raw)
                values[f.name] = number if f.type in ("float", float) else int(number)
                if f.type not in ("float", float) and number != int(number):
                    raise ValueError(raw)
            except (TypeError, ValueError, OverflowError):
                raise ConfigError(f"node config '{key}' must be a number >= 0 (0: no cap), got {raw!r}") from None
        return cls(**values)  # type: ignore[arg-type]

    def describe(self) -> str:
        """`max-generator-steps=2000, max-fit-seconds=3600`, or "none" without caps: what the site logs at start."""
        set_caps = [f"{CAP_KEYS[f.name]}={getattr(self, f.name):g}" for f in fields(self) if getattr(self, f.name)]
        return ", ".join(set_caps) or "none"

    # -- the checks ---------------------------------------------------------------------------------
    def check_plan(self, plan: FitPlan, member_class_counts: tuple[int, ...] | list[int]) -> None:
        """Raise `OverCap` if the fit plan, or what it says the run will ask later, is over a cap."""
        generator = plan.generator
        steps = generator.train_steps * generator.noise_multiplicity  # a step of K noise draws costs K steps
        if self.max_generator_steps and steps > self.max_generator_steps:
            asked = f"{generator.train_steps} generator steps" + (
                f" x {generator.noise_multiplicity} noise draws" if generator.noise_multiplicity > 1 else "")
            raise _over("max-generator-steps", f"the plan asks {asked}", self.max_generator_steps)
        if plan.samples_per_class:
            self.check_shard(plan.shard_images(member_class_counts))
        if plan.reference_models:
            self.check_reference_models(plan.reference_models)

    def check_shard(self, images: int) -> None:
        """Raise `OverCap` if one synthesis request of `images` images is over the cap."""
        if self.max_shard_images and images > self.max_shard_images:
            raise _over("max-shard-images", f"a shard of {images} images is asked for", self.max_shard_images)

    def check_reference_models(self, count: int) -> None:
        """Raise `OverCap` if an audit with `count` reference models is over the cap."""
        if self.max_reference_models and count > self.max_reference_models:
            raise _over("max-reference-models", f"the audit asks {count} reference models", self.max_reference_models)

    def fit_clock(self) -> FitClock:
        """A clock for one fit, started now, that enforces `max_fit_seconds`."""
        return FitClock(self.max_fit_seconds, time.monotonic())


@dataclass
class FitClock:
    """Fit's wall time against the cap (0: none); `check` raises `OverCap` once fit ran past it or is projected to."""

    limit: float
    started: float

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def check(self, stage: str, done: int = 0, total: int = 0, stage_started: float | None = None) -> None:
        """Call during training: after `done` of `total` steps (or epochs) of `stage`, begun at `stage_started`.

        Raises `OverCap` when the elapsed time is past the limit, or when, past `PROJECT_AFTER` of the
        stage, the elapsed time plus the stage's rate times its remaining steps would be.
        """
        if not self.limit:
            return
        now = time.monotonic()
        elapsed = now - self.started
        if elapsed > self.limit:
            raise _over("max-fit-seconds", f"fit ran {elapsed:.0f} s ({stage})", self.limit)
        if stage_started is not None and total and done >= max(1, PROJECT_AFTER * total):
            projected = elapsed + (now - stage_started) / done * (total - done)
            if projected > self.limit:
                raise _over("max-fit-seconds", f"fit would take about {projected:.0f} s ({stage}: {done} of {total} "
                                               f"done after {now - stage_started:.0f} s)", self.limit)


def _over(cap: str, what: str, limit: float) -> OverCap:
    return OverCap(cap, f"{what}, more than this site accepts ({cap} = {limit:g})")
