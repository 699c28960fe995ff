"""White-box membership inference on a site's own diffusion generator: its denoising error on members against holdout.

The site holds its generator's weights, so it can run the strongest attack there is on the root of
every leak in fedkr: a diffusion model fits the images it was trained on better than images it
never saw, and its training loss on an image at a given noise level is the membership signal.
This is the loss attack on diffusion models of Carlini et al. (2023, "Extracting Training Data
from Diffusion Models", arXiv 2301.13188, section 6) and Matsumoto et al. (2023, "Membership
Inference Attacks against Diffusion Models"), measured at several noise levels as in Hu & Pang
(2023) and Duan et al. (SecMI, 2023): the most revealing timestep is around t = 100-300 of 1,000
and depends on the model, so the attack chooses it on one half of the data and is scored on the
other (cross-fitting), which keeps the reported figure free of the choice.

Two functions, split so that the scores stay testable without a model:

- `denoising_errors(generator, images, labels, ...)`: float64 (N, T), the v-prediction error of
  each image under its own class label at each of T timesteps, averaged over noise draws.
- `cross_fitted_scores(member_errors, holdout_errors, ...)`: per-image membership scores (higher:
  more likely a member) for the auditor's statistics (`fedkr.shared.attack_report.measure_attack`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .classifier import to_tensor
from .device import Device
from .generator import ClassConditionalDiffusion, resize
from .mia import roc_auc

#: Timesteps of the 1,000-step training schedule the error is measured at (rescaled for other
#: lengths): low noise, where memorised detail shows, to the middle of the schedule.
DEFAULT_TIMESTEPS = (10, 25, 50, 100, 200, 400)
#: Noise draws averaged per image and timestep; the error of one draw is mostly the noise's.
DEFAULT_REPEATS = 4
#: The name of the feature that averages every timestep's standardised error.
MEAN_FEATURE = "mean"


def _check_timesteps(timesteps: tuple[int, ...], schedule_length: int) -> tuple[int, ...]:
    steps = tuple(int(t) for t in timesteps)
    if not steps:
        raise ValueError("need at least one timestep")
    bad = [t for t in steps if not 0 <= t < schedule_length]
    if bad:
        raise ValueError(f"timesteps {bad} outside the generator's schedule [0, {schedule_length})")
    return steps


@torch.no_grad()
def denoising_errors(
    generator: ClassConditionalDiffusion,
    images: np.ndarray,
    labels: np.ndarray,
    timesteps: tuple[int, ...] = DEFAULT_TIMESTEPS,
    repeats: int = DEFAULT_REPEATS,
    seed: int = 0,
    batch_size: int = 256,
    device: Device = None,
) -> np.ndarray:
    """The generator's denoising error on each image: float64 (N, len(timesteps)).

    `images` uint8 (N, H, W, C) at the data's size, resized as the generator trains; `labels` int
    (N,) in [0, num_classes). Entry (i, j) is the mean over `repeats` noise draws of the
    per-pixel squared error of the EMA (sampling) weights' v-prediction for image i, noised to
    `timesteps[j]` and conditioned on its own class: the generator's own training loss
    (`ClassConditionalDiffusion._batch_loss`) for that image, without flips or label dropout.
    Timesteps are on the 1,000-step schedule and rescaled to the generator's
    `num_train_timesteps`. Noise comes from a CPU generator seeded by `seed`, timestep and draw, so
    the result repeats exactly on the CPU. Computes on `device` (None: the CPU).

    Raises ValueError for a shape or label mismatch, labels outside the generator's classes, no
    timesteps, or `repeats` < 1.
    """
    images = np.asarray(images)
    labels = np.asarray(labels).reshape(-1)
    if images.ndim != 4 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"need images (N, H, W, C) and labels (N,), got {images.shape} and {labels.shape}")
    if images.shape[0] and not 0 <= labels.min() <= labels.max() < generator.num_classes:
        raise ValueError(f"labels must be in [0, {generator.num_classes})")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    length = generator.config.num_train_timesteps
    steps = _check_timesteps(tuple(round(t * length / 1000) for t in timesteps), length)
    out = np.zeros((images.shape[0], len(steps)), dtype=np.float64)
    if images.shape[0] == 0:
        return out
    where = torch.device("cpu") if device is None else torch.device(device)
    unet = generator._sampling_unet().to(where)
    scheduler = generator.noise_scheduler
    x_all = resize(to_tensor(images), (generator.size, generator.size))
    y_all = torch.from_numpy(labels.astype(np.int64))
    for j, t in enumerate(steps):
        for r in range(repeats):
            gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + t * 1_009 + r)
            noise_all = torch.randn(x_all.shape, generator=gen)
            for start in range(0, x_all.shape[0], batch_size):
                x0 = x_all[start : start + batch_size].to(where)
                noise = noise_all[start : start + batch_size].to(where)
                y = y_all[start : start + batch_size].to(where)
                tt = torch.full((x0.shape[0],), t, dtype=torch.long, device=where)
                noisy = scheduler.add_noise(x0, noise, tt)
                target = scheduler.get_velocity(x0, noise, tt)
                error = (unet(noisy, tt, class_labels=y).sample - target).pow(2).flatten(1).mean(1)
                out[start : start + x0.shape[0], j] += error.double().cpu().numpy() / repeats
    return out


@dataclass(frozen=True)
class CrossFittedScores:
    """Membership scores from `cross_fitted_scores`, and the feature each half chose.

    `members`, `holdout`: float64 (N_members,), (N_holdout,), in the input's order; higher means
    more likely a member. `chosen`: the feature picked on each half (a timestep such as "t=100",
    or "mean"), the first used to score the second half and the second the first.
    """

    members: np.ndarray
    holdout: np.ndarray
    chosen: tuple[str, str]


def _halves(size: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask of size `size`, True for a random half (rounded down)."""
    mask = np.zeros(size, dtype=bool)
    mask[rng.permutation(size)[: size // 2]] = True
    return mask


def _features(errors: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(N, T + 1) standardised errors, then their mean over timesteps."""
    z = (errors - center) / scale
    return np.concatenate([z, z.mean(axis=1, keepdims=True)], axis=1)


def cross_fitted_scores(
    member_errors: np.ndarray, holdout_errors: np.ndarray, timesteps: tuple[int, ...] = DEFAULT_TIMESTEPS, seed: int = 0
) -> CrossFittedScores:
    """Per-image membership scores from denoising errors, the feature chosen without seeing the scored images.

    `member_errors` float (N_members, T) and `holdout_errors` float (N_holdout, T), as
    `denoising_errors` gives them for the same `timesteps`. Members and holdout are each split in
    two random halves (seeded). On one half every feature (each timestep's error, standardised by
    that half's holdout mean and spread, and the mean of those) is tried as a score (lower error:
    member); the one with the highest AUC scores the other half, standardised by the choosing
    half's holdout, so no scored image took part in the choice. Then the halves swap. Scores of
    both halves are on one scale (holdout standard deviations), so they are read as one attack.

    Raises ValueError for mismatched or non-finite errors, a timestep count that does not match,
    or fewer than 4 images on either side.
    """
    members = np.asarray(member_errors, dtype=np.float64)
    holdout = np.asarray(holdout_errors, dtype=np.float64)
    if members.ndim != 2 or holdout.ndim != 2 or members.shape[1] != len(timesteps) or holdout.shape[1] != len(timesteps):
        raise ValueError(f"need errors (N, {len(timesteps)}) on both sides, got {members.shape} and {holdout.shape}")
    if members.shape[0] < 4 or holdout.shape[0] < 4:
        raise ValueError("the white-box attack needs at least 4 members and 4 holdout images")
    if not (np.isfinite(members).all() and np.isfinite(holdout).all()):
        raise ValueError("denoising errors must be finite")
    names = [f"t={t}" for t in timesteps] + [MEAN_FEATURE]
    rng = np.random.default_rng(seed)
    member_half, holdout_half = _halves(len(members), rng), _halves(len(holdout), rng)
    member_scores = np.zeros(len(members))
    holdout_scores = np.zeros(len(holdout))
    chosen: list[str] = []
    for choose in (True, False):
        m_pick, h_pick = member_half == choose, holdout_half == choose
        center = holdout[h_pick].mean(axis=0)
        scale = np.maximum(holdout[h_pick].std(axis=0), 1e-12)
        m_feat, h_feat = _features(members[m_pick], center, scale), _features(holdout[h_pick], center, scale)
        aucs = [roc_auc(-m_feat[:, f], -h_feat[:, f]) for f in range(len(names))]
        best = int(np.argmax(aucs))
        chosen.append(names[best])
        member_scores[~m_pick] = -_features(members[~m_pick], center, scale)[:, best]
        holdout_scores[~h_pick] = -_features(holdout[~h_pick], center, scale)[:, best]
    return CrossFittedScores(member_scores, holdout_scores, (chosen[0], chosen[1]))
