"""The site's generator: a class-conditional pixel diffusion model built from diffusers parts.

A `UNet2DModel` with a class embedding is trained from scratch on the DDPM objective
(v-prediction, cosine schedule) and sampled with DDIM. Settings follow measurements on 2 CPU
cores: working at a lower resolution than the data (16 px for 28 px MedMNIST) and spending the
budget on optimisation steps gives recognisable images in minutes, where larger models give only
texture. Training drops the class label 10% of the time so that classifier-free guidance is
available at sampling time; an exponential moving average of the weights (diffusers' `EMAModel`)
is what samples.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel

from .classifier import resize, to_tensor, to_uint8
from .device import Device, placed
from .dp import DPConfig, DPReport, make_private_training
from .json_input import read_json_file

log = logging.getLogger(__name__)


#: The generator kinds a site can train: the private diffusion UNet (DP-SGD) or DP-MERF (one Gaussian release).
GENERATOR_KINDS = ("diffusion", "dp-merf")


@dataclass(frozen=True)
class GeneratorConfig:
    """The generator's settings, as diffusers models keep theirs: saved with the weights (`generator.json`).

    `resolution` is the working size in pixels (capped by the data's, rounded to the UNet's
    downsampling); `block_channels` the UNet's widths per level; `train_steps` optimisation steps
    of `batch_size` images at learning rate `lr` (linear warm-up over `warmup_steps`, cosine decay);
    `noise_multiplicity` K draws of diffusion noise and timestep per image and step (DPDM, Dockhorn
    et al. 2023, arXiv 2210.09929): the image's loss is the mean over its K draws, so under DP its
    one clipped gradient carries less of the diffusion loss's own variance at no privacy cost; each
    step computes K times the rows (K x the time and the per-sample-gradient memory), each row with
    its own noise, timestep, flip and label dropout; 1 is plain DDPM training.
    `ema_decay` the EMA of the sampling weights; `label_dropout` the share of steps trained
    unconditionally, for classifier-free guidance at `guidance_scale` (1: none; Ho & Salimans 2022);
    `hflip` random horizontal flips; `num_train_timesteps` the DDPM schedule's length and
    `sample_steps` the DDIM steps at sampling, with DDIM's `sample_eta` (0: deterministic DDIM; 1:
    as much fresh noise per step as DDPM's ancestral sampler; Song et al. 2021); `seed` fixes the
    initial weights and batches. `kind` is which generator these settings build
    (`fedkr.shared.generator_kinds`): "diffusion" (this module) or "dp-merf"
    (`fedkr.shared.mean_embedding`, which uses `resolution`, `train_steps`, `batch_size` per class
    and `seed`). `classifier_guidance` is the scale of the guidance by a classifier, the site's own
    teacher, that a diffusion generator samples with when it is given one (`ClassConditionalDiffusion.sample`'s
    `classifier` and `classifier_scale`, which refuses the scale without a classifier; 0: off): a sampling
    setting, like `guidance_scale` and `sample_eta`.
    Raises ValueError for `noise_multiplicity` not an integer >= 1, `sample_eta` outside [0, 1],
    a negative or non-finite `classifier_guidance` or one above 0 for a generator that is not
    "diffusion", or an unknown `kind`.
    """

    resolution: int = 16
    block_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    train_steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 100
    noise_multiplicity: int = 1
    ema_decay: float = 0.999
    label_dropout: float = 0.1
    hflip: bool = False
    num_train_timesteps: int = 1000
    sample_steps: int = 25
    sample_eta: float = 0.0
    guidance_scale: float = 1.0
    seed: int = 0
    kind: str = "diffusion"
    classifier_guidance: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in GENERATOR_KINDS:
            raise ValueError(f"kind must be one of {', '.join(GENERATOR_KINDS)}, got {self.kind!r}")
        if isinstance(self.noise_multiplicity, bool) or not isinstance(self.noise_multiplicity, int) \
                or self.noise_multiplicity < 1:
            raise ValueError(f"noise_multiplicity must be an integer >= 1, got {self.noise_multiplicity!r}")
        if isinstance(self.sample_eta, bool) or not isinstance(self.sample_eta, (int, float)) \
                or not 0.0 <= self.sample_eta <= 1.0:
            raise ValueError(f"sample_eta must be a number in [0, 1], got {self.sample_eta!r}")
        if isinstance(self.classifier_guidance, bool) or not isinstance(self.classifier_guidance, (int, float)) \
                or not 0.0 <= self.classifier_guidance < math.inf:
            raise ValueError(f"classifier_guidance must be a finite number >= 0, got {self.classifier_guidance!r}")
        if self.classifier_guidance > 0 and self.kind != "diffusion":
            raise ValueError(f"classifier_guidance needs a diffusion generator; a {self.kind} generator samples without it")

    def to_dict(self) -> dict:
        """The settings as JSON values; the `LATER_SETTINGS` only where they differ from their
        defaults, so that sites of versions without them still read plans (and generators) that do
        not use them."""
        data = asdict(self)
        data["block_channels"] = list(self.block_channels)
        for name, default in LATER_SETTINGS.items():
            if data[name] == default:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> GeneratorConfig:
        data = dict(data)
        data["block_channels"] = tuple(int(c) for c in data["block_channels"])
        return cls(**data)


class _DDIMScheduler(DDIMScheduler):
    """diffusers' DDIM with each step's variance kept a relative 1e-6 below its exact value.

    At η = 1 a DDIM step takes the square root of 1 - ᾱ_prev - σ_t², which is zero in exact
    arithmetic wherever ᾱ_t / ᾱ_prev rounds to 0 (the first step of a short schedule on the capped
    cosine, ᾱ_999 about 2e-9). float32 rounding can make it -1 ulp, and the whole batch NaN
    (measured: 5 DDIM steps at η 1). The margin keeps it non-negative; at η 0 nothing changes.
    """

    def _get_variance(self, timestep: int, prev_timestep: int) -> torch.Tensor:
        return super()._get_variance(timestep, prev_timestep) * (1 - 1e-6)


#: Settings added after the first plan format, with the defaults that mean "not used".
LATER_SETTINGS: dict[str, object] = {"noise_multiplicity": 1, "sample_eta": 0.0, "kind": "diffusion",
                                     "classifier_guidance": 0.0}


def effective_resolution(requested: int, height: int, width: int, levels: int) -> int:
    """The working size: no larger than the data, and divisible by the UNet's total downsampling."""
    factor = 2 ** (levels - 1)
    size = min(requested, height, width)
    size = max(factor, (size // factor) * factor)
    return size


#: JSON Schema of the generator.json `ClassConditionalDiffusion.save` writes beside the UNet.
META_SCHEMA = {
    "type": "object",
    "required": ["config", "num_classes", "image_shape", "trained_steps", "train_seconds"],
    "properties": {
        "config": {"type": "object", "required": ["block_channels"],
                   "properties": {"block_channels": {"type": "array", "items": {"type": "integer"}},
                                  "hflip": {"type": "boolean"}}},
        "num_classes": {"type": "integer", "minimum": 1},
        "image_shape": {"type": "array", "minItems": 3, "maxItems": 3, "items": {"type": "integer", "minimum": 1}},
        "trained_steps": {"type": "integer", "minimum": 0},
        "train_seconds": {"type": "number"},
        "dp_report": {"type": ["object", "null"]},
    },
}


class ClassConditionalDiffusion:
    """Train once on a site's members, then sample fresh images for any list of classes."""

    def __init__(self, config: GeneratorConfig, num_classes: int, image_shape: tuple[int, int, int]) -> None:
        self.config = config
        self.num_classes = num_classes
        self.image_shape = tuple(int(s) for s in image_shape)
        height, width, channels = self.image_shape
        self.size = effective_resolution(config.resolution, height, width, len(config.block_channels))
        levels = len(config.block_channels)
        with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
            torch.random.default_generator.manual_seed(config.seed)  # initial weights depend on the seed alone
            self.unet = UNet2DModel(
                sample_size=self.size,
                in_channels=channels,
                out_channels=channels,
                layers_per_block=config.layers_per_block,
                block_out_channels=config.block_channels,
                down_block_types=("DownBlock2D",) * levels,
                up_block_types=("UpBlock2D",) * levels,
                norm_num_groups=min(32, math.gcd(*config.block_channels)),
                num_class_embeds=num_classes + 1,  # the last index is the "no label" class for guidance
            )
        #: The EMA weights that sample, keyed as `unet.state_dict()`.
        self.ema = {k: v.detach().clone() for k, v in self.unet.state_dict().items()}
        self.noise_scheduler = DDPMScheduler(
            num_train_timesteps=config.num_train_timesteps,
            beta_schedule="squaredcos_cap_v2",
            prediction_type="v_prediction",
        )
        self.trained_steps = 0
        self.train_seconds = 0.0
        #: What DP training spent, or None if the weights were trained without a guarantee.
        self.dp_report: DPReport | None = None

    @property
    def null_class(self) -> int:
        return self.num_classes

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.unet.parameters())

    def _lr_factor(self, step: int) -> float:
        """Learning-rate multiplier: linear warm-up, then cosine decay to 10% over `train_steps`."""
        cfg = self.config
        warmup = max(1, cfg.warmup_steps)
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, cfg.train_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def _batch_loss(self, x0: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The v-prediction loss of one batch, with flips and label dropout drawn from `gen` in a fixed order."""
        cfg = self.config
        device = x0.device
        if cfg.hflip:
            flip = (torch.rand(x0.shape[0], generator=gen) < 0.5).to(device)
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        y = labels.clone()
        y[(torch.rand(y.shape[0], generator=gen) < cfg.label_dropout).to(device)] = self.null_class
        noise = torch.randn(x0.shape, generator=gen).to(device)
        t = torch.randint(0, cfg.num_train_timesteps, (x0.shape[0],), generator=gen).to(device)
        noisy = self.noise_scheduler.add_noise(x0, noise, t)
        target = self.noise_scheduler.get_velocity(x0, noise, t)
        return F.mse_loss(self.unet(noisy, t, class_labels=y).sample, target)

    def train(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        on_progress: Callable[[int, int, float], None] | None = None,
        dp: DPConfig | None = None,
        device: Device = None,
    ) -> float:
        """Run `train_steps` optimisation steps; returns the mean loss of the last 10% of steps.

        `images` uint8 (N, H, W, C), resized to the working resolution; `labels` int (N,) in
        [0, num_classes). AdamW with linear warm-up and cosine decay (`_lr_factor`), the
        v-prediction DDPM loss (Salimans & Ho 2022) with random flips and 10% label dropout, and an
        EMA of the weights for sampling. `on_progress(step, total, loss)` is called ten times.

        Without `dp` each batch is drawn with replacement from the same seeded generator as the
        flips and noise (so a run repeats exactly), and the whole batch's gradient norm is clipped
        to 1. With `dp` the same UNet, optimizer and loop are made private by opacus'
        `PrivacyEngine` (DP-SGD): Poisson-sampled batches of expected size about `batch_size`
        (an empty one is still taken, as noise only), and every example's gradient clipped to
        `dp.max_grad_norm` (in place of the batch clipping) before noise is added. The EMA is
        post-processing of the private weights, so the sampling weights carry the same guarantee;
        what the run spent is kept in `self.dp_report` (None after non-private training).

        Computes on `device` (`shared/device.py`; None: where the UNet is) and leaves the UNet and
        the EMA weights on the CPU. Batches, flips, label dropout, noise and timesteps are drawn from
        the seeded CPU generator whatever the device, so a seeded run on the CPU repeats exactly
        (with `dp`, the Poisson batches and DP noise are secret unless `dp.repeatable`).
        `on_progress` may raise to stop training (a site's wall-time cap does).
        Raises ValueError for zero images, for private training of an already trained generator
        (the accounting covers one run from fresh weights), and as `make_private_training`.
        """
        num_examples = int(images.shape[0])
        if num_examples == 0:
            raise ValueError("cannot train a generator on zero images")
        if dp is not None and self.trained_steps > 0:
            raise ValueError(
                f"this generator has already been trained for {self.trained_steps} steps; DP accounting here covers "
                "a single run from fresh weights, so build a new ClassConditionalDiffusion for private training"
            )
        self.dp_report = None  # whatever guarantee the weights had, training without one voids it
        with placed(self.unet, device) as where:
            return self._train(images, labels, on_progress, dp, where)

    def _train(
        self, images: np.ndarray, labels: np.ndarray, on_progress: Callable[[int, int, float], None] | None,
        dp: DPConfig | None, device: torch.device,
    ) -> float:
        """`train`'s loop with the UNet already on `device`."""
        cfg = self.config
        num_examples = int(images.shape[0])
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        log.info("generator: %d images of %dx%d px, trained at the working size %dx%d px", num_examples,
                 images.shape[1], images.shape[2], self.size, self.size)
        x_all = resize(to_tensor(images), (self.size, self.size)).to(device)
        y_all = torch.from_numpy(labels.astype(np.int64)).to(device)
        optimizer = torch.optim.AdamW(self.unet.parameters(), lr=cfg.lr, weight_decay=1e-4)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)
        params = list(self.unet.parameters())
        names = [name for name, _ in self.unet.named_parameters()]
        # continues from the current EMA weights. diffusers' EMAModel: the first update copies the
        # weights, the (s + 1)-th decays by min(ema_decay, (1 + s) / (10 + s)). Measured on one core:
        # a 200-step training takes the same time as with a hand-written torch._foreach_lerp_
        # (ratio 0.98; the update itself costs 3.2 ms against 1.5 ms of a 270 ms step).
        ema = EMAModel([self.ema[name] for name in names], decay=cfg.ema_decay, foreach=True)
        ema.to(device)
        self.unet.train()  # before opacus sees it: make_private refuses a model in eval mode (a loaded one is)
        private = None
        if dp is None:
            size = min(cfg.batch_size, num_examples)
            batches = (torch.randint(0, num_examples, (size,), generator=gen) for _ in range(cfg.train_steps))
        else:
            private = make_private_training(
                self.unet, optimizer, num_examples=num_examples, batch_size=cfg.batch_size, steps=cfg.train_steps,
                config=dp, seed=cfg.seed, device=device,
            )
            optimizer, batches = private.optimizer, private.batches()
        started = time.perf_counter()
        tail: list[float] = []
        last = float("nan")
        report_every = max(1, cfg.train_steps // 10)
        with private or contextlib.nullcontext(), warnings.catch_warnings():
            # torch notes once that the noisy inputs need no gradient; per-sample hooks do not need one
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for step, idx in enumerate(batches):
                if idx.numel() == 0:
                    private.step_on_empty_batch()
                else:
                    idx = idx.to(device).repeat_interleave(cfg.noise_multiplicity)  # each image's K rows together
                    loss = self._batch_loss(x_all[idx], y_all[idx], gen)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if private is None:
                        torch.nn.utils.clip_grad_norm_(params, 1.0)
                    else:
                        private.average_over_copies(cfg.noise_multiplicity)
                    optimizer.step()
                    last = loss.item()
                    if step >= cfg.train_steps * 0.9:
                        tail.append(last)
                scheduler.step()
                ema.step(params)
                if on_progress is not None and ((step + 1) % report_every == 0 or step + 1 == cfg.train_steps):
                    on_progress(step + 1, cfg.train_steps, last)
            algorithm = type(optimizer.original_optimizer).__name__.lower() if private is not None else None  # "adamw"
            report = private.report(algorithm, cfg.lr) if private is not None else None
        self.ema.update(zip(names, (p.detach().cpu() for p in ema.shadow_params)))
        self.unet.eval()
        self.trained_steps += report.steps if report is not None else cfg.train_steps
        self.train_seconds += time.perf_counter() - started
        self.dp_report = report
        return float(np.mean(tail)) if tail else float("nan")

    def _sampling_unet(self) -> UNet2DModel:
        unet = UNet2DModel.from_config(self.unet.config)
        unet.load_state_dict(self.ema)
        return unet.eval()

    @torch.no_grad()
    def sample(
        self, labels: np.ndarray, seed: int, batch_size: int = 256, guidance_scale: float | None = None,
        device: Device = None, eta: float | None = None, classifier: torch.nn.Module | None = None,
        classifier_scale: float | None = None,
    ) -> np.ndarray:
        """Fresh images for the given classes: uint8 (N, H, W, C) at the data's own size.

        DDIM on `device` (None: the CPU) with η `eta` (None: the config's `sample_eta`) and
        classifier-free guidance at `guidance_scale` (None: the config's). The starting noise, and
        with η > 0 each step's fresh noise, come from a CPU generator seeded with `seed`, so the
        same seed draws the same images on the CPU; with η > 0 the images also depend on
        `batch_size` (each chunk draws its step noise in turn).

        `classifier` (a module taking float (N, C, H, W) images in [-1, 1] at the data's size to
        (N, classes) logits, such as the site's teacher; the caller puts it on `device`, in eval
        mode) guides every step towards its class at `classifier_scale` (None: the config's
        `classifier_guidance`; 0: off). The gradient is
        taken on the step's predicted clean image x̂0 (before the scheduler clips it to [-1, 1]),
        after universal guidance's forward step for a classifier that never saw noisy images
        (Bansal et al. 2023) but without its pass back through the denoiser; classifier guidance
        is Dhariwal & Nichol 2021. With ᾱ_t the schedule's signal share, the predicted velocity
        becomes v - scale · sqrt(1 - ᾱ_t) · ∇_x̂0 log p(y | x̂0), which moves the step's noise
        estimate by -scale · sqrt(ᾱ_t (1 - ᾱ_t)) · ∇ and x̂0 by scale · (1 - ᾱ_t) · ∇: a
        weighting that vanishes at high noise, so the scale is not comparable with published
        classifier-guidance scales. It is post-processing of the generator and the classifier:
        it spends no privacy budget where both are private (a site's DP teacher and DP
        generator); a classifier trained without DP makes the images depend on data that no
        guarantee covers.

        Raises ValueError for η outside [0, 1], a negative `classifier_scale`, or a scale above 0
        (the config's included) without a `classifier`, and
        FloatingPointError if sampling produced non-finite values.
        """
        scale = self.config.guidance_scale if guidance_scale is None else guidance_scale
        eta = self.config.sample_eta if eta is None else eta
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta!r}")
        classifier_scale = self.config.classifier_guidance if classifier_scale is None else classifier_scale
        if not classifier_scale >= 0.0:
            raise ValueError(f"classifier_scale must be >= 0, got {classifier_scale!r}")
        if classifier_scale > 0 and classifier is None:
            raise ValueError(f"classifier guidance at {classifier_scale:g} needs a classifier (the site's teacher)")
        guide = classifier if classifier is not None and classifier_scale > 0 else None
        where = torch.device("cpu") if device is None else torch.device(device)
        unet = self._sampling_unet().to(where)
        sampler = _DDIMScheduler.from_config(self.noise_scheduler.config, timestep_spacing="trailing")
        sampler.set_timesteps(self.config.sample_steps)
        gen = torch.Generator().manual_seed(int(seed))
        height, width, channels = self.image_shape
        out: list[np.ndarray] = []
        labels_t = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        for start in range(0, labels_t.shape[0], batch_size):
            y = labels_t[start : start + batch_size].to(where)
            x = torch.randn((y.shape[0], channels, self.size, self.size), generator=gen).to(where)
            for t in sampler.timesteps:
                if scale == 1.0:
                    pred = unet(x, t, class_labels=y).sample
                else:
                    both = unet(torch.cat([x, x]), t, class_labels=torch.cat([y, torch.full_like(y, self.null_class)])).sample
                    cond, uncond = both.chunk(2)
                    pred = uncond + scale * (cond - uncond)
                if guide is not None:
                    signal = sampler.alphas_cumprod[int(t)].to(where)
                    gradient = self._class_gradient(guide, signal.sqrt() * x - (1 - signal).sqrt() * pred, y)
                    pred = pred - classifier_scale * (1 - signal).sqrt() * gradient
                x = sampler.step(pred, t, x, eta=eta, generator=gen if eta > 0 else None).prev_sample
            if not torch.isfinite(x).all():  # clamp and uint8 would turn NaN into plausible-looking black images
                raise FloatingPointError("the sampler produced non-finite values; no images were returned")
            x = resize(x.clamp(-1, 1), (height, width)).clamp(-1, 1)
            out.append(to_uint8(x))
        if not out:
            return np.zeros((0, height, width, channels), dtype=np.uint8)
        return np.concatenate(out)

    def _class_gradient(self, classifier: torch.nn.Module, clean: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """∇ of Σ log p(label | image) under `classifier` with respect to the predicted clean images
        `clean` (float (N, C, size, size)), each scaled to the data's size as the samples are."""
        height, width, _ = self.image_shape
        with torch.enable_grad():
            image = clean.detach().requires_grad_(True)
            log_probs = torch.log_softmax(classifier(resize(image, (height, width))), dim=1)
            (gradient,) = torch.autograd.grad(log_probs.gather(1, labels[:, None]).sum(), image)
        return gradient

    def summary(self) -> dict[str, str | int | float]:
        return {
            "generator": "UNet2DModel class-conditional DDPM (v-prediction, cosine), DDIM sampler",
            "generator_resolution": self.size,
            "generator_channels": "-".join(str(c) for c in self.config.block_channels),
            "generator_parameters": self.num_parameters(),
            "generator_steps": self.trained_steps,
            "sample_steps": self.config.sample_steps,
            "sample_eta": self.config.sample_eta,
            "guidance_scale": self.config.guidance_scale,
            # only where it guides, so that unguided summaries stay as they were
            **({"classifier_guidance": self.config.classifier_guidance} if self.config.classifier_guidance > 0 else {}),
            # only for private runs, so that non-private summaries stay as they were
            **(self.dp_report.summary("dp_") if self.dp_report is not None else {}),
        }

    def save(self, directory: Path) -> None:
        """diffusers' own layout for the EMA UNet, plus fedkr's settings beside it."""
        directory = Path(directory)
        unet = self._sampling_unet()
        unet.save_pretrained(directory / "unet", safe_serialization=True)
        meta = {
            "config": self.config.to_dict(),
            "num_classes": self.num_classes,
            "image_shape": list(self.image_shape),
            "trained_steps": self.trained_steps,
            "train_seconds": self.train_seconds,
            "dp_report": None if self.dp_report is None else self.dp_report.to_dict(),
        }
        (directory / "generator.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: Path) -> ClassConditionalDiffusion:
        directory = Path(directory)
        meta = read_json_file(directory / "generator.json", schema=META_SCHEMA)
        model = cls(GeneratorConfig.from_dict(meta["config"]), int(meta["num_classes"]), tuple(meta["image_shape"]))
        unet = UNet2DModel.from_pretrained(directory / "unet", low_cpu_mem_usage=False)
        model.unet.load_state_dict(unet.state_dict())
        model.ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
        model.trained_steps = int(meta["trained_steps"])
        model.train_seconds = float(meta["train_seconds"])
        # absent in files written before DP existed: those runs were not private
        model.dp_report = DPReport.from_dict(meta["dp_report"]) if meta.get("dp_report") else None
        model.unet.eval()
        return model

