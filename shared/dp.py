"""Optional differentially private training (DP-SGD with opacus) for a site's teacher and generator.

A site may promise its members (epsilon, delta)-differential privacy for everything it releases
from a model: each optimisation step clips every example's gradient to `max_grad_norm`, adds
Gaussian noise scaled by a noise multiplier, and draws its batch by Poisson sampling (each example
independently with probability `sample_rate`), which is what the privacy accountants assume.

The private run keeps the step budget of the non-private one: the noise multiplier is chosen so
that exactly that many steps at the Poisson sample rate spend the target epsilon, and training
then runs exactly those steps. Everything computed from the weights afterwards (EMA weights,
samples, predictions) is post-processing and keeps the guarantee.

opacus itself is imported lazily, inside `make_private_training`, so that the non-private path
never pays for it.

Caveats, on purpose:
  * Noise and Poisson sampling come from `torch.Generator`s seeded from `secrets` (63 bits drawn
    from the operating system's CSPRNG), never from the run's seed: the run's seed travels in the
    coordinator's plan, and noise derivable from it is known to whoever holds the plan, which voids
    the guarantee (the sampling must be secret too, or amplification by subsampling does not
    hold). A secret seed is not opacus' `secure_mode`, which draws every number from
    `torchcsprng`'s cryptographic stream and resists an attacker who could recover a Mersenne
    Twister/Philox state from the released weights; torchcsprng has no release for current torch.
    `DPConfig.repeatable` seeds both from the run's seed instead, for experiments and tests that
    must repeat a private run exactly; a plan cannot ask for it (`from_dict` refuses one that
    does), and the site's DP record says which randomness it used (`client.site.dp_summary`).
  * The guarantee covers one training run from initial weights that did not see the data. Training
    the same weights again on the same members composes privacy costs that this module does not
    add up.
"""

from __future__ import annotations

import math
import secrets
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Self

import torch
from torch import nn

from .dp_models import DP_BOTH_MODELS, DP_GENERATOR_ONLY, DP_MODELS

if TYPE_CHECKING:  # opacus is only imported when private training actually starts
    from opacus import PrivacyEngine
    from opacus.grad_sample import GradSampleHooks
    from opacus.optimizers import DPOptimizer
    from torch.utils.data import DataLoader

#: Accountants accepted in `DPConfig.accountant`. RDP is the default: it is analytic, fast and
#: robust at every sample rate (including 1.0, i.e. full batches on tiny sites), at the price of a
#: slightly loose bound (about 5% more noise than PRV for the same epsilon in our settings). PRV is
#: tighter but numerical: it is slow for long runs (tens of seconds for 50k steps) and warns or
#: fails at the edges of its domain. opacus' "gdp" is only an asymptotic approximation, so it is
#: not offered.
ACCOUNTANTS = ("rdp", "prv")



class RefusedDPSetting(ValueError):
    """A plan's DP settings that this site refuses. The text is fedkr's own words, never the plan's,
    so a site may send it back to the coordinator as is."""


class SiteOnlySetting(RefusedDPSetting):
    """A plan tried to set a DP setting that is the site's alone (`DPConfig.repeatable`)."""


class UnknownDPSetting(RefusedDPSetting):
    """A plan carries a DP setting this version of fedkr does not know (a newer coordinator's).

    Its text is fixed, so it may be sent back as is. `names` holds the first `LOGGED_NAMES` unknown
    settings' names, each cut to 40 characters and written by `ascii()` (one printable line), for
    the site's own log only: they are the plan's text, not fedkr's.
    """

    LOGGED_NAMES = 10

    def __init__(self, names: Iterable[str]) -> None:
        super().__init__("the plan sets a DP setting this site's fedkr does not know: update the site, "
                         "or leave the setting out of the plan")
        names = sorted(names)
        self.names = tuple(ascii(name[:40]) for name in names[:self.LOGGED_NAMES])
        if len(names) > self.LOGGED_NAMES:
            self.names += (f"and {len(names) - self.LOGGED_NAMES} more",)


@dataclass(frozen=True)
class DPConfig:
    """The privacy a site asks for; the noise needed to get it is worked out from the data size and step budget.

    `target_delta` None means 1 / (10 N) for N training examples: delta must be well below 1/N
    (a mechanism that leaks one whole record with probability 1/N would satisfy delta = 1/N), and a
    tenth of it is a common, data-size-aware choice.

    `models` (one of `DP_MODELS`) says which of a site's models are trained with DP-SGD:
    "teacher+generator" splits the budget between the two, so everything the site sends is
    covered; "generator" spends it all on the generator, the model that memorizes first at small
    sites, and trains the teacher without DP: the synthetic images are covered, the teacher's soft
    labels (and the student they teach) are not, and only the audit's attacks speak for those.
    """

    target_epsilon: float
    target_delta: float | None = None
    max_grad_norm: float = 1.0
    accountant: str = "rdp"
    models: str = DP_BOTH_MODELS
    #: Seed noise and sampling from the run's seed so that a private run repeats exactly (tests,
    #: experiments). It voids the guarantee against anyone who knows the seed, the coordinator
    #: included, so it never travels in a plan: `to_dict` leaves it out, `from_dict` refuses a plan
    #: that carries it (a coordinator asking for it is asking for the site's noise), and equality
    #: ignores it, so a plan equals itself after the round trip.
    repeatable: bool = field(default=False, compare=False)

    @property
    def generator_only(self) -> bool:
        """True when the whole budget goes to the generator and the teacher trains without DP."""
        return self.models == DP_GENERATOR_ONLY

    def __post_init__(self) -> None:
        if not (isinstance(self.target_epsilon, (int, float)) and math.isfinite(self.target_epsilon)) or self.target_epsilon <= 0:
            raise ValueError(f"target_epsilon must be a finite number > 0, got {self.target_epsilon!r}")
        if self.target_delta is not None and not (0.0 < self.target_delta < 1.0):
            raise ValueError(f"target_delta must be in (0, 1) or None (meaning 1/(10 N)), got {self.target_delta!r}")
        if not (isinstance(self.max_grad_norm, (int, float)) and math.isfinite(self.max_grad_norm)) or self.max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be a finite number > 0, got {self.max_grad_norm!r}")
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {self.accountant!r}")
        if self.models not in DP_MODELS:
            raise ValueError(f"models must be one of {DP_MODELS}, got {self.models!r}")
        if not isinstance(self.repeatable, bool):
            raise ValueError(f"repeatable must be True or False, got {self.repeatable!r}")

    def delta_for(self, num_examples: int) -> float:
        """The delta used for a training set of `num_examples`; refuses one that protects nobody (>= 1/N)."""
        if num_examples <= 0:
            raise ValueError("differentially private training needs at least one example")
        delta = self.target_delta if self.target_delta is not None else 1.0 / (10.0 * num_examples)
        if delta >= 1.0 / num_examples:
            raise ValueError(
                f"target_delta={delta:g} is not below 1/N = {1.0 / num_examples:g} for N={num_examples} examples: "
                "such a guarantee allows leaking a whole record; use a smaller delta (or None for 1/(10 N))"
            )
        return delta

    def to_dict(self) -> dict[str, Any]:
        """The settings a plan carries: everything but `repeatable`, which is the site's alone."""
        settings = asdict(self)
        del settings["repeatable"]
        return settings

    @classmethod
    def from_dict(cls, data: dict) -> DPConfig:
        """The settings a plan carries (`to_dict`). Raises `SiteOnlySetting` for a plan that sets
        `repeatable` (only the site may seed its own noise), and `UnknownDPSetting` for a setting this
        version does not know (a plan from a newer coordinator is refused, not half-followed); both
        are `RefusedDPSetting`s (ValueErrors)."""
        if "repeatable" in data:
            raise SiteOnlySetting("a plan may not set the DP setting 'repeatable': noise seeded from the run's seed is "
                             "known to the coordinator, so only the site itself may choose it")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:  # it could change what the site's DP means: never ignore it
            raise UnknownDPSetting(unknown)
        delta = data.get("target_delta")
        return cls(
            target_epsilon=float(data["target_epsilon"]),
            target_delta=None if delta is None else float(delta),
            max_grad_norm=float(data.get("max_grad_norm", 1.0)),
            accountant=str(data.get("accountant", "rdp")),
            models=str(data.get("models", DP_BOTH_MODELS)),
        )


@dataclass(frozen=True)
class DPReport:
    """What a private run actually spent: `epsilon` is the accountant's figure after the last step, at `delta`.

    `optimizer` names the algorithm the private run stepped with ("sgd", "adamw") and `learning_rate`
    its peak learning rate (before the schedule's warm-up and decay); both are None in reports
    written before they were recorded.
    """

    epsilon: float
    delta: float
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    accountant: str
    num_examples: int
    optimizer: str | None = None
    learning_rate: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DPReport:
        return cls(
            epsilon=float(data["epsilon"]),
            delta=float(data["delta"]),
            noise_multiplier=float(data["noise_multiplier"]),
            max_grad_norm=float(data["max_grad_norm"]),
            sample_rate=float(data["sample_rate"]),
            steps=int(data["steps"]),
            accountant=str(data["accountant"]),
            num_examples=int(data["num_examples"]),
            optimizer=None if data.get("optimizer") is None else str(data["optimizer"]),
            learning_rate=None if data.get("learning_rate") is None else float(data["learning_rate"]),
        )

    def summary(self, prefix: str = "dp_") -> dict[str, str | int | float]:
        """Flat scalar entries for a run summary, e.g. `dp_epsilon`, `dp_delta` (fields not recorded are left out)."""
        return {f"{prefix}{k}": v for k, v in self.to_dict().items() if v is not None}


def poisson_sample_rate(num_examples: int, batch_size: int) -> float:
    """opacus' rate for a loader of `batch_size`: one over the number of batches per pass, so the expected batch is about `batch_size`."""
    return 1.0 / max(1, math.ceil(num_examples / batch_size))


def noise_multiplier_for(config: DPConfig, num_examples: int, batch_size: int, steps: int) -> float:
    """The smallest noise (within opacus' 0.01 epsilon tolerance) that keeps `steps` Poisson steps within the target epsilon."""
    from opacus.accountants.utils import get_noise_multiplier

    if steps <= 0:
        raise ValueError(f"steps must be > 0, got {steps}")
    delta = config.delta_for(num_examples)
    sample_rate = poisson_sample_rate(num_examples, batch_size)
    try:
        with warnings.catch_warnings():
            # the bisection tries very small noise levels whose RDP optimum lies past opacus' orders
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            return float(
                get_noise_multiplier(
                    target_epsilon=config.target_epsilon,
                    target_delta=delta,
                    sample_rate=sample_rate,
                    steps=steps,
                    accountant=config.accountant,
                )
            )
    except ValueError as error:  # opacus: "The privacy budget is too low."
        raise ValueError(
            f"cannot reach epsilon={config.target_epsilon:g} at delta={delta:g} with {steps} steps at sample rate "
            f"{sample_rate:.4g} ({num_examples} examples, batch {batch_size}): no noise multiplier up to opacus' "
            f"limit is enough ({error}). Use a larger epsilon, more examples, or fewer steps."
        ) from error


@dataclass
class PrivateTraining:
    """A module, its optimizer and a Poisson loader made private, plus what is needed to report on them.

    The module itself is not wrapped: opacus attaches its per-sample-gradient hooks to it directly
    (`wrap_model=False`), so callers keep calling the original module and its `state_dict()` keys
    never gain a `_module.` prefix. Call `close()` (or use it as a context manager) when done, so
    the hooks and the `grad_sample` attributes are removed again.
    """

    module: nn.Module
    optimizer: DPOptimizer
    data_loader: DataLoader
    engine: PrivacyEngine
    hooks: GradSampleHooks
    config: DPConfig
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    num_examples: int
    _closed: bool = field(default=False, repr=False)

    def batches(self) -> Iterator[torch.Tensor]:
        """Exactly `steps` index batches, Poisson-sampled, passing over the loader as often as needed.

        A batch may be empty (every example left out): the caller must still take a step, with
        `step_on_empty_batch()`, because the analysis assumes every one of the `steps` releases a
        noisy update; skipping one would reveal that nobody was sampled.
        """
        taken = 0
        while taken < self.steps:
            for (idx,) in self.data_loader:
                yield idx.long()
                taken += 1
                if taken == self.steps:
                    return

    def step_on_empty_batch(self) -> None:
        """The private step for an empty batch: zero clipped gradients plus the same noise as any other step.

        Models with GroupNorm cannot run a forward pass on zero examples, so the per-sample
        gradients are set to empty tensors directly and the optimizer does the rest.
        """
        self.optimizer.zero_grad(set_to_none=True)
        for p in self.optimizer.params:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        self.optimizer.step()

    def average_over_copies(self, copies: int) -> None:
        """Make each example's per-sample gradient the mean over its `copies` rows, before opacus clips it.

        DPDM's noise multiplicity (Dockhorn et al., TMLR 2023, arXiv 2210.09929): each sampled
        example enters the batch `copies` times, its rows consecutive (`repeat_interleave`), each row
        with its own diffusion noise and timestep. opacus computes one gradient per row; averaged
        here in groups of `copies`, they become one gradient per example, which the optimizer then
        clips to `max_grad_norm` and noises as usual. Each example still moves the sum by at most
        the clipping bound, so the accounting (Poisson rate over examples, steps, noise) is
        unchanged: the extra rows cost compute, not privacy. Call after `backward()` and before
        `optimizer.step()`; `copies` 1 does nothing. Raises ValueError for `copies` < 1, a batch
        whose rows are not a multiple of it, or gradients a step has already used.
        """
        if copies < 1:
            raise ValueError(f"copies must be >= 1, got {copies}")
        if copies == 1:
            return
        for p in self.optimizer.params:
            rows = p.grad_sample
            if rows is None:
                continue
            if hasattr(rows, "_processed"):  # opacus' mark of gradients already used in a step
                raise ValueError("these per-sample gradients were already clipped into a step; average before the step")
            if isinstance(rows, list) or rows.shape[0] % copies:
                raise ValueError(f"per-sample gradients of one batch in multiples of {copies} rows expected, got "
                                 f"{[r.shape[0] for r in rows] if isinstance(rows, list) else rows.shape[0]}")
            p.grad_sample = rows.reshape(rows.shape[0] // copies, copies, *rows.shape[1:]).mean(1)

    def steps_taken(self) -> int:
        return int(sum(entry[-1] for entry in self.engine.accountant.history))

    def report(self, optimizer: str | None = None, learning_rate: float | None = None) -> DPReport:
        """The privacy actually spent so far, from the accountant's own history; `optimizer` and
        `learning_rate` (the peak) are recorded as the caller names them."""
        taken = self.steps_taken()
        epsilon = float(self.engine.get_epsilon(self.delta)) if taken > 0 else 0.0
        # opacus' RDP-to-DP conversion (Balle et al. 2020) goes below zero for very large noise and
        # a large delta; that means (0, delta)-DP, so report 0 rather than a negative epsilon
        epsilon = max(0.0, epsilon)
        return DPReport(
            epsilon=epsilon,
            delta=self.delta,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.config.max_grad_norm,
            sample_rate=self.sample_rate,
            steps=taken,
            accountant=self.config.accountant,
            num_examples=self.num_examples,
            optimizer=optimizer,
            learning_rate=learning_rate,
        )

    def close(self) -> None:
        """Detach opacus from the module: hooks and per-sample attributes go, the weights stay."""
        if not self._closed:
            self.optimizer.zero_grad(set_to_none=True)
            self.hooks.cleanup()
            # what cleanup() leaves: the optimizer's sums on parameters, captured inputs on layers
            for p in self.module.parameters():
                for attr in ("summed_grad", "grad_sample", "_processed"):
                    if hasattr(p, attr):
                        delattr(p, attr)
            for m in self.module.modules():
                for attr in ("activations", "max_batch_len", "autograd_grad_sample_hooks"):
                    if attr in vars(m):
                        delattr(m, attr)
            self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_private_training(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    num_examples: int,
    batch_size: int,
    steps: int,
    config: DPConfig,
    seed: int,
    grad_sample_mode: str = "hooks",
    device: torch.device | str = "cpu",
) -> PrivateTraining:
    """Make `module` and `optimizer` private for `steps` Poisson-sampled steps of expected size about `batch_size`.

    The data loader runs over example indices (0..N-1) rather than the examples themselves, so
    that callers keep their tensors, augmentation and label handling as they are and only index
    with each batch. Learning-rate schedulers built on `optimizer` keep working: the private
    optimizer steps the original one.

    Noise and Poisson sampling are seeded from `secrets` (see the module's caveats); `seed` seeds
    both only where `config.repeatable` asks for a run that repeats exactly. The
    noise is drawn on `device`, where the module's gradients are (opacus draws noise where they are).
    `grad_sample_mode` "hooks" (opacus' per-layer rules) covers Conv2d, GroupNorm, Linear and
    Embedding, which is everything with weights in CompactCNN and in diffusers' UNet2DModel
    (attention included: its projections are Linear layers).
    """
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    delta = config.delta_for(num_examples)
    noise_multiplier = noise_multiplier_for(config, num_examples, batch_size, steps)
    with warnings.catch_warnings():
        # documented in this module's docstring: secretly seeded generators, not torchcsprng
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant=config.accountant, secure_mode=False)
    sampling_seed, noise_seed = (seed, seed + 1) if config.repeatable else (secrets.randbits(63), secrets.randbits(63))
    loader = DataLoader(
        TensorDataset(torch.arange(num_examples)),
        batch_size=batch_size,
        generator=torch.Generator().manual_seed(sampling_seed),
    )
    hooks, private_optimizer, private_loader = engine.make_private(
        module=module,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=noise_multiplier,
        max_grad_norm=config.max_grad_norm,
        poisson_sampling=True,
        noise_generator=torch.Generator(device=device).manual_seed(noise_seed),
        grad_sample_mode=grad_sample_mode,
        wrap_model=False,
    )
    sample_rate = float(private_loader.sample_rate)
    if not math.isclose(sample_rate, poisson_sample_rate(num_examples, batch_size)):
        raise RuntimeError(f"opacus chose sample rate {sample_rate} but the noise was computed for another one")
    return PrivateTraining(
        module=module,
        optimizer=private_optimizer,
        data_loader=private_loader,
        engine=engine,
        hooks=hooks,
        config=config,
        delta=delta,
        noise_multiplier=noise_multiplier,
        sample_rate=sample_rate,
        steps=steps,
        num_examples=num_examples,
    )
