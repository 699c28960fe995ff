"""What a DP-MERF generator teaches at one site, scored as `dp_generator.py` scores the diffusion generator.

A screen for issue 15's small-site question: would a mean-embedding generator (DP-MERF, Harder et
al., AISTATS 2021, arXiv 2002.11603) draw the requested class more often than fedkr's private
diffusion generator at the same epsilon? It is not part of the product. No maintained package
implements DP-MERF for images, so its core is here:

1. Random Fourier features of a Gaussian kernel (Rahimi & Recht 2007) on images at the working
   resolution, flattened to [-1, 1]: phi(x) = sqrt(2/D) [cos(W x), sin(W x)], W ~ N(0, 1/l^2)
   with D/2 frequencies, so ||phi(x)|| = 1. One more coordinate carries the count:
   psi(x) = [phi(x), 1] / sqrt(2), ||psi(x)|| = 1.
2. One Gaussian mechanism: the per-class sums S_c = sum_{i: y_i = c} psi(x_i) have L2 sensitivity 1
   under adding or removing one member (one row moves by a unit vector); S + N(0, sigma^2 I)
   with sigma from opacus' RDP accountant for one step at sample rate 1 (exact RDP of the Gaussian
   mechanism, about 10% more noise than the analytic Gaussian mechanism would need). `--epsilon` is
   the generator's epsilon, delta the generator's half of the site's default delta, as
   `split_budget` gives it when teacher and generator both train with DP. Everything after is
   post-processing. The noise comes from the script's generator, seeded by `--seed`: a
   screen, not a release.
3. A small conv decoder G(z, c) trained to match each class's noisy mean embedding
   mu_c = sqrt(2) S_c[:D] / n_c (n_c from the noisy count, at least 1), loss
   sum_c p_c ||mu_c - mean phi(G(z, c))||^2, p_c the noisy class shares (the paper's biased
   batch estimate of the MMD).

`--epsilon 0` releases the embedding without noise (the method's ceiling at this site).

`--features` chooses what the release embeds (`FeatureMap`): the paper's random Fourier features
of the pixels, or fixed scattering features (kymatio; Tramer & Boneh 2021 found them the better
input for private learning), pooled to `--pool` x `--pool` so that the release has fewer
dimensions to spread its noise over (243 at pool 1 against 4,000).

    python benchmarks/dp_merf.py --data ../shared/data/medmnist/bloodmnist.npz --site 1 --epsilon 4 \\
        --out /work/screen/out   # same OUT as dp_generator.py: the same cached judge

`--judge RUN_DIR` takes a site's saved non-private teacher as the judge, as dp_generator.py does,
so that the figures sit beside that script's `--saved` rows under one judge. One JSON line per
setting to stdout and OUT/dp_merf.jsonl, with dp_generator.py's figures.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from dp_generator import bench_site, judge_and_row, score  # noqa: E402
from jsonl import emit  # noqa: E402

from fedkr.client.site import split_budget  # noqa: E402
from fedkr.shared.config import PROFILES  # noqa: E402
from fedkr.shared.dp import DPConfig, noise_multiplier_for  # noqa: E402
from fedkr.shared.classifier import to_uint8  # noqa: E402
from fedkr.shared.generator import resize  # noqa: E402
from fedkr.shared.mean_embedding import Decoder, fourier_features  # noqa: E402


class MerfGenerator:
    """A trained decoder behind `ClassConditionalDiffusion.sample`'s call, for dp_generator's `score`."""

    def __init__(self, decoder: Decoder, z_dim: int, image_shape: tuple[int, int, int], seed: int) -> None:
        self.decoder, self.z_dim, self.image_shape = decoder.eval(), z_dim, image_shape
        self.config = type("Config", (), {"seed": seed})

    @torch.no_grad()
    def sample(self, labels: np.ndarray, seed: int, eta: float = 0.0, device: object = None) -> np.ndarray:
        gen = torch.Generator().manual_seed(int(seed))
        y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        x = self.decoder(torch.randn((len(y), self.z_dim), generator=gen), y)
        h, w, _ = self.image_shape
        x = resize(x, (h, w)).clamp(-1, 1)
        return to_uint8(x)


def noisy_embedding(phi: torch.Tensor, labels: np.ndarray, num_classes: int, sigma: float,
                    gen: torch.Generator, feature_weight: float = 1 / math.sqrt(2),
                    refined: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-class mean embeddings float (K, D), class counts float (K,)) from one Gaussian release of
    the per-class sums of psi(x) = [a phi(x), b] for unit-norm features `phi` float (N, D), with
    a = `feature_weight`, b = sqrt(1 - a^2) (||psi|| = 1) and noise `sigma` (sensitivity 1).
    `refined` (post-processing only): each mean is projected to norm <= 1 (the true one's is), and a
    class whose noisy count is below 3 sigma / b gets count 0 (no share in the loss)."""
    a = feature_weight
    b = math.sqrt(1 - a * a)
    psi = torch.cat([a * phi, torch.full((len(phi), 1), b)], 1)
    sums = torch.zeros(num_classes, psi.shape[1])
    sums.index_add_(0, torch.from_numpy(labels.astype(np.int64)), psi)
    sums = sums + sigma * torch.randn(sums.shape, generator=gen)
    noisy_counts = sums[:, -1] / b
    means = sums[:, :-1] / a / noisy_counts.clamp(min=1.0)[:, None]
    if not refined:
        return means, noisy_counts.clamp(min=1.0)
    means = means / means.norm(dim=1, keepdim=True).clamp(min=1.0)
    counts = torch.where(noisy_counts >= 3 * sigma / b, noisy_counts, torch.zeros_like(noisy_counts))
    return means, counts


def scattering_transform(resolution: int) -> nn.Module:
    """kymatio's `Scattering2D` (J 2, L 8) for (N, C, resolution, resolution) images, as
    `dp_scatter_teacher.py` builds it (its scipy 1.17 workaround included)."""
    from dp_scatter_teacher import scattering_transform as build

    return build(resolution, resolution)


class FeatureMap(nn.Module):
    """phi: float (N, C, R, R) images in [-1, 1] to unit-norm features float (N, D), differentiable.

    `kind`: "pixels", the paper's random Fourier features of the flattened pixels (D = 2F);
    "scattering", scattering coefficients (kymatio, J 2, L 8: 81 maps a channel at a quarter of the
    resolution; fixed and data-independent, Tramer & Boneh 2021's features for private learning),
    each image's maps normalised by its own GroupNorm over 27 groups without weights (as their
    models do; per image, so it needs no data), average-pooled to `pool` x `pool` and scaled to
    unit norm, so the release matches each class's mean scattering vector (a linear kernel;
    D = 81 C pool^2); "scattering-rff", random Fourier features of those unit vectors (a Gaussian
    kernel on them; D = 2F). Every member's phi has norm 1 whatever its image, so the release's
    sensitivity stays 1. Fewer dimensions carry less noise: the Gaussian mechanism adds noise of norm
    about sigma sqrt(D) to each class sum.
    """

    def __init__(self, kind: str, resolution: int, channels: int, num_freq: int, length_scale: float,
                 gen: torch.Generator, pool: int = 1) -> None:
        super().__init__()
        self.kind, self.pool = kind, pool
        self.scattering = scattering_transform(resolution) if kind != "pixels" else None
        d = resolution * resolution * channels if kind == "pixels" else 81 * channels * pool * pool
        self.w = torch.randn((d, num_freq), generator=gen) / length_scale if kind != "scattering" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scattering is None:
            return fourier_features(x.flatten(1), self.w)
        s = self.scattering(x.contiguous())
        s = s.reshape(len(s), -1, *s.shape[-2:])
        s = nn.functional.adaptive_avg_pool2d(nn.functional.group_norm(s, 27), self.pool).flatten(1)
        s = s / s.norm(dim=1, keepdim=True).clamp(min=1e-12)
        return s if self.w is None else fourier_features(s, self.w)


def default_length_scale(kind: str, resolution: int, channels: int) -> float:
    """sqrt(d) / 2 for pixels in [-1, 1] (the paper's choice); 0.5 for unit-norm scattering
    vectors, whose distances lie in [0, 2]."""
    return math.sqrt(resolution * resolution * channels) / 2 if kind == "pixels" else 0.5


def train_merf(images: np.ndarray, labels: np.ndarray, num_classes: int, resolution: int, sigma: float,
               num_freq: int, length_scale: float, steps: int, batch_per_class: int, lr: float, seed: int,
               z_dim: int = 16, width: int = 128, refined: bool = False, feature_kind: str = "pixels",
               pool: int = 1) -> Decoder:
    """The decoder matched to one noisy release of `FeatureMap(feature_kind)`'s class means.
    `refined`: the release weighted 0.95 to the features (`noisy_embedding`'s projection and count
    floor) and the unbiased batch estimate of the squared MMD (Gretton et al. 2012), which, unlike
    the biased one, does not penalise diverse batches."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(images).float().permute(0, 3, 1, 2) / 127.5 - 1
    x = resize(x, (resolution, resolution))
    phi = FeatureMap(feature_kind, resolution, images.shape[3], num_freq, length_scale, gen, pool)
    with torch.no_grad():
        member_features = torch.cat([phi(chunk) for chunk in x.split(512)])
    target, counts = noisy_embedding(member_features, labels, num_classes, sigma, gen,
                                     feature_weight=0.95 if refined else 1 / math.sqrt(2), refined=refined)
    share = counts / counts.sum()
    decoder = Decoder(num_classes, images.shape[3], resolution, z_dim, width)
    opt = torch.optim.Adam(decoder.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    classes = torch.arange(num_classes).repeat_interleave(batch_per_class)
    for step in range(1, steps + 1):
        fake = phi(decoder(torch.randn(len(classes), z_dim), classes))
        means = fake.view(num_classes, batch_per_class, -1).mean(1)
        if refined:  # ||phi|| = 1: the unbiased ||mean||^2 is (B ||m||^2 - 1) / (B - 1); t.t is a constant
            per_class = -2 * (target * means).sum(1) + (batch_per_class * (means ** 2).sum(1) - 1) / (batch_per_class - 1)
        else:
            per_class = ((target - means) ** 2).sum(1)
        loss = (share * per_class).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % max(1, steps // 5) == 0:
            print(f"step {step}/{steps}, loss {loss.item():.5f}", file=sys.stderr, flush=True)
    return decoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--profile", default="full", choices=sorted(PROFILES))
    parser.add_argument("--site", type=int, default=1)
    parser.add_argument("--epsilon", type=float, default=4.0, help="the generator's epsilon; 0: no noise [default: 4]")
    parser.add_argument("--num-freq", type=int, default=2000, help="random frequencies F (2F features) [default: 2000]")
    parser.add_argument("--length-scale", type=float, default=None,
                        help="kernel length l [default: sqrt(d)/2 on pixels, 0.5 on unit scattering vectors]")
    parser.add_argument("--features", default="pixels", choices=("pixels", "scattering", "scattering-rff"),
                        help="what the release embeds (FeatureMap) [default: pixels, the paper's]")
    parser.add_argument("--pool", type=int, default=1, choices=(1, 2, 4),
                        help="scattering maps average-pooled to POOL x POOL [default: 1]")
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-per-class", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--refined", action="store_true",
                        help="weight the release 0.95 to the features, project means to norm 1, floor rare classes' counts, "
                             "unbiased MMD (all free in privacy) [default: the paper's method]")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--judge", type=Path, default=None,
                        help="a site's run folder whose teacher.safetensors judges, as in dp_generator.py (default: a judge trained here)")
    parser.add_argument("--out", type=Path, default=Path("dp-merf"))
    args = parser.parse_args()
    if args.resolution < 4 or args.resolution % 4:
        raise SystemExit(f"--resolution must be a multiple of 4 (the decoder upsamples twice), got {args.resolution}")
    if args.epsilon < 0:
        raise SystemExit(f"--epsilon must be >= 0, got {args.epsilon}")
    config = replace(PROFILES[args.profile].run_config(run_id="dp-merf"), data=args.data)
    site = bench_site(config, args.site)
    m = site.members
    sigma, delta = 0.0, None
    if args.epsilon > 0:  # the generator's part of a site budget of twice --epsilon; one step at sample rate 1
        budget = split_budget(DPConfig(2 * args.epsilon, None, 1.0), len(m))[1]
        delta = budget.delta_for(len(m))
        sigma = noise_multiplier_for(budget, len(m), batch_size=len(m), steps=1)
    length = args.length_scale or default_length_scale(args.features, args.resolution, m.images.shape[3])
    judge, common = judge_and_row(args, config, site)
    started = time.perf_counter()
    decoder = train_merf(m.images, m.labels, m.num_classes, args.resolution, sigma, args.num_freq, length, args.steps,
                         args.batch_per_class, args.lr, args.seed, refined=args.refined, feature_kind=args.features,
                         pool=args.pool)
    seconds = time.perf_counter() - started
    generator = MerfGenerator(decoder, decoder.embed.embedding_dim, m.image_shape, args.seed)
    row = {"generator": "dp-merf", "judge": str(args.judge) if args.judge else "trained here", "epsilon_generator": args.epsilon or None, "delta": delta, "noise_multiplier": round(sigma, 3),
           "features": args.features, "pool": args.pool if args.features != "pixels" else None,
           "num_freq": args.num_freq if args.features != "scattering" else None, "length_scale": round(length, 3), "resolution": args.resolution, "steps": args.steps,
           "batch_per_class": args.batch_per_class, "lr": args.lr, "refined": args.refined, "seed": args.seed, "generator_seconds": round(seconds, 1),
           **common, **score(generator, site, judge, args.per_class, args.seed, config.student_config(), 0.0, torch.device("cpu"))}
    with (args.out / "dp_merf.jsonl").open("a") as sink:
        emit(row, sink)


if __name__ == "__main__":
    main()
