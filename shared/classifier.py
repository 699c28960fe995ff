"""The compact CNN used as a site's teacher and as the coordinator's student, and how to train it.

One architecture for both roles keeps comparisons fair: the student's accuracy against a
centrally trained copy of the same network is the figure that matters. GroupNorm rather than
BatchNorm so that the same network can later be trained with DP-SGD (opacus rejects BatchNorm).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .device import Device, placed
from .dp import DPConfig, DPReport, make_private_training


#: The largest value of each `ClassifierConfig` field that a config read from outside (a release's
#: student_config.json, an audit candidate) may hold: wide enough for any network fedkr builds, small
#: enough that building one cannot exhaust a site's memory. Every field is at least 1.
CONFIG_LIMITS = {"in_channels": 16, "height": 4096, "width": 4096, "num_classes": 10_000, "channels": 1024}

#: The largest `ClassifierConfig.input_resolution` a config read from outside may hold (0: off).
MAX_INPUT_RESOLUTION = 4096

#: JSON Schema (Draft 2020-12) of a saved `ClassifierConfig`: `shared/json_input.py` checks it.
CONFIG_SCHEMA = {
    "type": "object",
    "required": list(CONFIG_LIMITS),
    "properties": {**{key: {"type": "integer", "minimum": 1, "maximum": top} for key, top in CONFIG_LIMITS.items()},
                   "input_resolution": {"type": "integer", "minimum": 0, "maximum": MAX_INPUT_RESOLUTION}},
}


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything needed to rebuild the network from its saved weights.

    `input_resolution` (px; 0: off) is the resolution the network's training images carry: each
    input is resampled to `input_resolution` x `input_resolution` and back to `height` x `width`
    (`resample_input`) before the first layer, at training and at inference alike, so that images
    sharper than the training images (real ones, for a network trained on synthetic images that
    generators drew at 16 px) reach it as sharp as those were. It has no weights: it changes no
    parameter count or state dict. What it does to fedkr's student and to naive pooling is
    measured in docs/audit.md, "The student's input resolution".
    """

    in_channels: int
    height: int
    width: int
    num_classes: int
    channels: int = 32
    input_resolution: int = 0

    def to_dict(self) -> dict[str, int]:
        """The fields as a dict; `input_resolution` only where it is on, so a network without it saves as before."""
        data = asdict(self)
        if not self.input_resolution:
            del data["input_resolution"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ClassifierConfig:
        return cls(**{k: int(data[k]) for k in ("in_channels", "height", "width", "num_classes", "channels")},
                   input_resolution=int(data.get("input_resolution", 0)))

    def out_of_bounds(self) -> str | None:
        """Which field lies outside its range ([1, `CONFIG_LIMITS`], `input_resolution` [0,
        `MAX_INPUT_RESOLUTION`]) as a sentence, or None when all are inside."""
        for key, top in CONFIG_LIMITS.items():
            if not 1 <= getattr(self, key) <= top:
                return f"{key} must lie in [1, {top}], got {getattr(self, key)}"
        if not 0 <= self.input_resolution <= MAX_INPUT_RESOLUTION:
            return f"input_resolution must lie in [0, {MAX_INPUT_RESOLUTION}], got {self.input_resolution}"
        return None


@dataclass(frozen=True)
class TrainConfig:
    """One training protocol: the same object is used for teacher, student and baselines.

    `lr` and `weight_decay` are AdamW's; a private run (DP-SGD) steps with its `PrivateOptimizer`
    instead (by default SGD at a learning rate from its noise multiplier) and uses neither.
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 5e-4
    temperature: float = 1.0
    augment: bool = True
    max_shift: int = 2
    hflip: bool = False
    seed: int = 0
    #: Small sets get several passes per epoch so that training always takes at least this many steps.
    min_steps: int = 600


#: Under DP-SGD the classifier steps with SGD with momentum (not AdamW) at a learning rate of at
#: most `PRIVATE_MAX_LR`, and at most the rate whose step puts noise of this standard deviation on
#: every weight: lr x noise_multiplier x C / B. Under DP-SGD's noise Adam's second moment is the
#: noise variance, so DP-Adam moves by about lr B / (sigma C) on clipped gradients (Tang et al.
#: 2023, DP-AdamBC, arXiv 2312.14334): 0.06-0.13 at the non-private settings on the BloodMNIST
#: bench sites; the smallest site's teacher predicted its majority class at every budget tried,
#: epsilon 100 included. The noise bound: SGD at batch 256 and noise 2.83 predicted one class for
#: 99.6% of the holdout at lr 4.0 (noise step 0.044) and 95% at 2.0 (0.022). It is below
#: `PRIVATE_MAX_LR` only for noise above 4.3 at batch 64, and is not shown to help there: at noise
#: 12.7 that teacher learned nothing at 0.10 or at 0.3. Measured in
#: `benchmarks/results/dp_teacher-*.jsonl`.
PRIVATE_NOISE_STEP = 0.02
#: The largest DP-SGD learning rate: on the four BloodMNIST bench sites at teacher epsilon 4 (batch
#: 64, noise 1.0-2.1) SGD at 0.3 gave 0.72-0.84 holdout accuracy, against 0.72-0.80 at the noise
#: bound alone (0.61-1.28); AdamW at 2e-3 gave 0.66-0.67 on the two sites run with it.
PRIVATE_MAX_LR = 0.3
#: SGD's momentum under DP-SGD (the one-cycle schedule cycles it between 0.85 and 0.95).
PRIVATE_MOMENTUM = 0.9


def private_learning_rate(noise_multiplier: float, batch_size: float, max_grad_norm: float) -> float:
    """The SGD learning rate of a private run: `PRIVATE_NOISE_STEP` x B / (sigma x C), at most `PRIVATE_MAX_LR`.

    `noise_multiplier` sigma (> 0, dimensionless), `batch_size` B (the expected Poisson batch, N x
    opacus' sample rate = N / ceil(N / loader batch), >= 1: the loader's batch when it divides N,
    down to about half of it otherwise, and N on a site with fewer members than one batch),
    `max_grad_norm` C (per-example clipping bound, > 0). Raises ValueError outside those ranges.
    """
    if not noise_multiplier > 0 or batch_size < 1 or not max_grad_norm > 0:
        raise ValueError(
            f"need noise_multiplier > 0, batch_size >= 1 and max_grad_norm > 0, got "
            f"{noise_multiplier!r}, {batch_size!r}, {max_grad_norm!r}"
        )
    return min(PRIVATE_MAX_LR, PRIVATE_NOISE_STEP * batch_size / (noise_multiplier * max_grad_norm))


#: The optimizers a private run can step with (`PrivateOptimizer.algorithm`).
PRIVATE_ALGORITHMS = ("sgd", "adamw")


@dataclass(frozen=True)
class PrivateOptimizer:
    """What a private (DP-SGD) run steps with: the optimizer opacus wraps, and its peak learning rate.

    The default is a site's: SGD with momentum `PRIVATE_MOMENTUM` (the one-cycle schedule cycles it
    between 0.85 and 0.95), no weight decay, at `private_learning_rate` from the run's own noise
    multiplier. `algorithm` "adamw" steps with AdamW instead (the schedule cycles its beta1 alike):
    at `lr` 2e-3 and `weight_decay` 5e-4 it is the non-private protocol under DP (DP-Adam), which
    predicts one class on a small skewed site (`benchmarks/dp_teacher.py`, tests/test_dp.py).

    `lr` (> 0, finite) fixes the peak learning rate; None takes `private_learning_rate`.
    `weight_decay` (>= 0) is the optimizer's (decoupled for AdamW). Raises ValueError for another
    algorithm or a value out of range.
    """

    algorithm: str = "sgd"
    lr: float | None = None
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.algorithm not in PRIVATE_ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(PRIVATE_ALGORITHMS)}, got {self.algorithm!r}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0 or None, got {self.lr!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")

    def build(self, parameters: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """The optimizer to make private. Its learning rate is a placeholder: the one-cycle schedule
        sets it from `peak_learning_rate` once the noise multiplier is known."""
        if self.algorithm == "adamw":
            return torch.optim.AdamW(parameters, lr=PRIVATE_MAX_LR, weight_decay=self.weight_decay)
        return torch.optim.SGD(parameters, lr=PRIVATE_MAX_LR, momentum=PRIVATE_MOMENTUM, weight_decay=self.weight_decay)

    def peak_learning_rate(self, noise_multiplier: float, batch_size: float, max_grad_norm: float) -> float:
        """`lr`, or `private_learning_rate(noise_multiplier, batch_size, max_grad_norm)` when it is None."""
        if self.lr is not None:
            return self.lr
        return private_learning_rate(noise_multiplier, batch_size, max_grad_norm)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    # ReLU not in place: opacus' per-sample-gradient hooks forbid modifying a hooked module's output
    # in place (DP-SGD); the values, and so non-private training, are the same either way.
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(min(8, c_out), c_out), nn.ReLU())


class CompactCNN(nn.Module):
    """Three conv stages and a linear head; about 0.1M parameters at the default width."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        w = config.channels
        self.body = nn.Sequential(
            _block(config.in_channels, w),
            _block(w, w),
            nn.MaxPool2d(2) if min(config.height, config.width) >= 16 else nn.Identity(),
            _block(w, 2 * w),
            nn.MaxPool2d(2),
            _block(2 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * w, config.num_classes)
        #: Set by `train_classifier`: what a private run spent, None after non-private training.
        #: A plain attribute, not a buffer, so `state_dict()` is the same with or without DP.
        self.dp_report: DPReport | None = None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(resample_input(x, self.config.input_resolution))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """float (N, C, H, W) resized to `size` (bilinear, antialiased); the same tensor when it is that size already."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def resampling_resolution(resolution: int, size: tuple[int, int]) -> int:
    """`resolution` (px) where it is positive and below the smaller side of an image of `size` (H, W) px,
    else 0 (off): the resolution an input of that size is resampled at (`resample_input`)."""
    return resolution if 0 < resolution < min(size) else 0


def resample_input(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """float (N, C, H, W) resized to `resolution` x `resolution` and back to H x W (`resize`: bilinear,
    antialiased, as the generators scale their samples): an image as sharp as one drawn at `resolution`.
    The same tensor where `resampling_resolution` says off (`resolution` not positive, or at least the image's
    smaller side). Not a projection: an input resampled once (a generator's sample) changes a little again."""
    height, width = x.shape[-2:]
    if not resampling_resolution(resolution, (height, width)):
        return x
    return resize(resize(x, (resolution, resolution)), (height, width))


def build_classifier(config: ClassifierConfig, seed: int) -> CompactCNN:
    """A freshly initialised network whose weights depend on `seed` alone, not on what ran before."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CompactCNN(config)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N,H,W,C) -> float (N,C,H,W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (N,C,H,W) in [-1, 1] (clamped to it) -> uint8 (N,H,W,C) on the CPU, rounded: `to_tensor` undone."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def augment_batch(x: torch.Tensor, max_shift: int, hflip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to `max_shift` pixels (reflect padding) and optional flips."""
    n, _, h, w = x.shape
    if max_shift > 0:
        padded = F.pad(x, (max_shift,) * 4, mode="reflect")
        dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
        dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
        x = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    if hflip:
        flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


def soft_label_loss(logits: torch.Tensor, target_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(target || softmax(logits / T)) scaled by T^2 (Hinton et al.); equals cross-entropy for one-hot targets at T=1."""
    log_p = F.log_softmax(logits / temperature, dim=1)
    kl = F.kl_div(log_p, target_probs, reduction="batchmean")
    return kl * temperature**2


def train_classifier(
    model: CompactCNN,
    images: np.ndarray,
    target_probs: np.ndarray,
    config: TrainConfig,
    on_epoch: Callable[[int, float], None] | None = None,
    dp: DPConfig | None = None,
    device: Device = None,
    private_optimizer: PrivateOptimizer = PrivateOptimizer(),
) -> list[float]:
    """Train against probability targets (one-hot for real labels, soft for synthetic); returns epoch losses.

    `images` uint8 (N, H, W, C), `target_probs` float (N, num_classes) rows summing to 1. AdamW
    at `config.lr` and `config.weight_decay` (with `dp`: `private_optimizer`, see below) with a
    one-cycle schedule over `config.epochs` epochs of at least `config.min_steps` steps in all,
    random shifts (and flips) per batch, and the loss `soft_label_loss`; returns `config.epochs`
    mean per-example losses. The model is left in eval mode.

    Without `dp` each epoch takes shuffled passes over the data (from the same seeded generator
    as the augmentation, so a run repeats exactly). With `dp` the same model, optimizer and loop
    are made private by opacus' `PrivacyEngine` (DP-SGD, Abadi et al. 2016), except the optimizer:
    `private_optimizer`'s (by default SGD with momentum `PRIVATE_MOMENTUM` at `private_learning_rate`
    from the run's noise multiplier; `config.lr` and `config.weight_decay` are not used); the same
    number of steps, Poisson-sampled batches of expected size about `config.batch_size` (possibly
    empty: such a step is still taken, as noise only), and every example's gradient clipped to
    `dp.max_grad_norm` before noise is added. What a private run spent is left on
    `model.dp_report`; after non-private training it is None.

    Computes on `device` (`shared/device.py`; None: where the model is) and leaves the model where
    it was. Batches and augmentation are drawn from seeded generators whatever the device, so a
    seeded run on the CPU repeats exactly; a private run's sampling and noise are secret unless
    `dp.repeatable` (`shared/dp.py`).
    Raises ValueError for zero images, and as `make_private_training` for an unreachable budget.
    """
    num_examples = int(images.shape[0])
    if num_examples == 0:
        raise ValueError("cannot train a classifier on zero images")
    model.dp_report = None  # whatever guarantee the weights had, further training without one voids it
    with placed(model, device) as where:
        losses, report = _train(model, images, target_probs, config, on_epoch, dp, where, private_optimizer)
    model.eval()
    model.dp_report = report
    return losses


def _train(
    model: CompactCNN, images: np.ndarray, target_probs: np.ndarray, config: TrainConfig,
    on_epoch: Callable[[int, float], None] | None, dp: DPConfig | None, device: torch.device,
    private_optimizer: PrivateOptimizer,
) -> tuple[list[float], DPReport | None]:
    """`train_classifier`'s loop with the model already on `device`: the epoch losses and the DP report (None without DP)."""
    num_examples = int(images.shape[0])
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    x_all = to_tensor(images).to(device)
    y_all = torch.from_numpy(np.asarray(target_probs, dtype=np.float32)).to(device)
    passes, steps_per_epoch = _schedule(num_examples, config)
    total_steps = config.epochs * steps_per_epoch
    # translation scaled to the image: 2 px at 28 px, 1 px at 8 px
    shift = max(1, round(config.max_shift * min(x_all.shape[2:]) / 28)) if config.max_shift > 0 else 0
    model.train()  # before opacus sees it: make_private refuses a model in eval mode
    private = None
    if dp is None:
        lr = config.lr
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay)
        epochs = _shuffled_epochs(num_examples, passes, config.batch_size, gen)
    else:
        # the learning rate waits for the noise multiplier; the one-cycle schedule below sets it
        optimizer = private_optimizer.build(model.parameters())
        private = make_private_training(
            model, optimizer, num_examples=num_examples, batch_size=config.batch_size, steps=total_steps,
            config=dp, seed=config.seed, device=device,
        )
        expected_batch = private.sample_rate * num_examples  # opacus' Poisson rate x N: at most config.batch_size
        lr = private_optimizer.peak_learning_rate(private.noise_multiplier, expected_batch, dp.max_grad_norm)
        epochs = _poisson_epochs(private.batches(), steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps, pct_start=0.15)
    if private is not None:
        optimizer = private.optimizer
    losses: list[float] = []
    with private or contextlib.nullcontext(), warnings.catch_warnings():
        # torch notes once that the input images need no gradient; per-sample hooks do not need one
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for epoch, batches in zip(range(config.epochs), epochs):
            total, seen = 0.0, 0
            for idx in batches:
                if idx.numel() == 0:
                    private.step_on_empty_batch()
                    scheduler.step()
                    continue
                idx = idx.to(device)
                x = x_all[idx]
                if config.augment:
                    x = augment_batch(x, shift, config.hflip, gen)
                loss = soft_label_loss(model(x), y_all[idx], config.temperature)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += loss.item() * idx.shape[0]
                seen += idx.shape[0]
            losses.append(total / max(1, seen))
            if on_epoch is not None:
                on_epoch(epoch, losses[-1])
        report = private.report(private_optimizer.algorithm, lr) if private is not None else None
    return losses, report


def _schedule(num_examples: int, config: TrainConfig) -> tuple[int, int]:
    """(passes over the data per epoch, steps per epoch) of the non-private protocol."""
    batches_per_pass = max(1, int(np.ceil(num_examples / config.batch_size)))
    passes = max(1, int(np.ceil(config.min_steps / (config.epochs * batches_per_pass))))
    return passes, int(np.ceil(passes * num_examples / config.batch_size))


def _shuffled_epochs(
    num_examples: int, passes: int, batch_size: int, gen: torch.Generator
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Each epoch's index batches: `passes` shuffles of 0..N-1, drawn from `gen` when the epoch starts."""
    while True:
        yield torch.cat([torch.randperm(num_examples, generator=gen) for _ in range(passes)]).split(batch_size)


def _poisson_epochs(batches: Iterator[torch.Tensor], steps_per_epoch: int) -> Iterator[Iterator[torch.Tensor]]:
    """The private loader's Poisson index batches, `steps_per_epoch` to an epoch."""
    while True:
        yield itertools.islice(batches, steps_per_epoch)


def train_classifier_private(
    model: CompactCNN,
    images: np.ndarray,
    target_probs: np.ndarray,
    config: TrainConfig,
    dp: DPConfig,
    on_epoch: Callable[[int, float], None] | None = None,
    device: Device = None,
    private_optimizer: PrivateOptimizer = PrivateOptimizer(),
) -> tuple[list[float], DPReport]:
    """`train_classifier` with `dp`: returns the epoch losses and what the run spent (also on `model.dp_report`)."""
    losses = train_classifier(model, images, target_probs, config, on_epoch, dp, device, private_optimizer)
    return losses, model.dp_report


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray, batch_size: int = 512, device: Device = None) -> np.ndarray:
    """float32 (N, classes) logits for uint8 (N, H, W, C) images, computed on `device` (None: where the model is)."""
    model.eval()
    with placed(model, device) as where:
        out = [model(to_tensor(images[i : i + batch_size]).to(where)).cpu() for i in range(0, images.shape[0], batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def predict_proba(model: nn.Module, images: np.ndarray, temperature: float = 1.0, device: Device = None) -> np.ndarray:
    return probabilities(predict_logits(model, images, device=device), temperature)


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax at a temperature, float32: the one way a teacher's logits become labels."""
    return torch.softmax(torch.from_numpy(logits) / temperature, dim=1).numpy().astype(np.float32)


@torch.no_grad()
def embed_and_logits(model: CompactCNN, images: np.ndarray, device: Device = None) -> tuple[np.ndarray, np.ndarray]:
    """Features and logits from one pass (the head reads the features), for callers that need both."""
    with placed(model, device) as where:
        features = embed(model, images, device=where)
        logits = model.head(torch.from_numpy(features).to(where)).cpu()
    return features, logits.numpy()


@torch.no_grad()
def embed(model: CompactCNN, images: np.ndarray, batch_size: int = 512, device: Device = None) -> np.ndarray:
    """float32 (N, features) penultimate-layer features, computed on `device` (None: where the model is)."""
    model.eval()
    with placed(model, device) as where:
        out = [model.features(to_tensor(images[i : i + batch_size]).to(where)).cpu() for i in range(0, images.shape[0], batch_size)]
    return torch.cat(out).numpy()


def per_example_loss(model: nn.Module, images: np.ndarray, labels: np.ndarray, device: Device = None) -> np.ndarray:
    """Cross-entropy of each example at its true label: the loss attack's raw signal."""
    logits = torch.from_numpy(predict_logits(model, images, device=device))
    return F.cross_entropy(logits, torch.from_numpy(labels.astype(np.int64)), reduction="none").numpy()


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, device: Device = None) -> float:
    return float((predict_logits(model, images, device=device).argmax(1) == labels).mean())


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    out = np.zeros((labels.shape[0], num_classes), dtype=np.float32)
    out[np.arange(labels.shape[0]), labels] = 1.0
    return out
