"""Class-aware spectral distribution matching: choose the distilled images by characteristic function.

CSDM's idea (long-tailed dataset distillation): a set of images resembles a pool when their
empirical characteristic functions, phi(w) = mean_i exp(i <w, x_i>), agree at many random
frequencies w in a feature space. The gap |phi_S - phi_P|^2 splits exactly into an amplitude term,
(|phi_S| - |phi_P|)^2, which measures spread (diversity), and a phase term,
2 |phi_S| |phi_P| (1 - cos(angle_S - angle_P)), which measures where the mass sits (realism).
Class-aware weighting raises the phase term for classes few sites hold: their images come from
fewer, smaller generators, so keeping the chosen ones where the pool's mass is matters more there.

Selection is greedy (like kernel herding in random-Fourier-feature space): at every step add the
candidate that lowers the weighted gap most. Deterministic given the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_FREQUENCIES = 256


@dataclass(frozen=True)
class SpectralSettings:
    frequencies: int = DEFAULT_FREQUENCIES
    #: Phase weight for a class every site holds; it grows to 1 + `tail_phase_boost` for a class one site holds.
    tail_phase_boost: float = 1.0
    seed: int = 0


def random_frequencies(features: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Gaussian frequencies scaled by the median pairwise distance, so that phases neither wrap
    many times over the data (noise) nor barely move (no information)."""
    rng = np.random.default_rng(seed)
    x = np.asarray(features, dtype=np.float64)
    sample = x[rng.choice(x.shape[0], size=min(x.shape[0], 500), replace=False)]
    d = np.sqrt(np.maximum(((sample[:, None, :] - sample[None, :, :]) ** 2).sum(-1), 0.0))
    scale = float(np.median(d[d > 0])) if (d > 0).any() else 1.0
    return rng.standard_normal((x.shape[1], count)) / scale


def characteristic(features: np.ndarray, freqs: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Empirical characteristic function at each frequency (complex, one per column of `freqs`)."""
    z = np.exp(1j * (np.asarray(features, dtype=np.float64) @ freqs))
    if weights is None:
        return z.mean(axis=0)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (z.shape[0],) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be one finite, non-negative number per point, not all zero")
    return (w[:, None] * z).sum(axis=0) / w.sum()


def spectral_gap(phi_s: np.ndarray, phi_p: np.ndarray, phase_weight: float = 1.0) -> float:
    """Amplitude term plus weighted phase term, averaged over frequencies (phase_weight 1: |phi_S - phi_P|^2)."""
    amp = (np.abs(phi_s) - np.abs(phi_p)) ** 2
    phase = 2 * np.abs(phi_s) * np.abs(phi_p) * (1 - np.cos(np.angle(phi_s) - np.angle(phi_p)))
    return float((amp + phase_weight * phase).mean())


def phase_weight_for(support: float, boost: float) -> float:
    """1 for a class all sites hold (support 1), up to 1 + boost as support falls towards 0."""
    return 1.0 + boost * (1.0 - min(1.0, max(0.0, support)))


def spectral_select(
    features: np.ndarray, k: int, freqs: np.ndarray, phase_weight: float = 1.0, weights: np.ndarray | None = None
) -> np.ndarray:
    """Indices of k points whose characteristic function tracks the (weighted) whole's most closely."""
    n = features.shape[0]
    if k >= n:
        return np.arange(n)
    z = np.exp(1j * (np.asarray(features, dtype=np.float64) @ freqs))  # (n, M)
    target = characteristic(features, freqs, weights)
    t_abs, t_ang = np.abs(target), np.angle(target)
    total = np.zeros(freqs.shape[1], dtype=np.complex128)
    available = np.ones(n, dtype=bool)
    chosen: list[int] = []
    for step in range(1, k + 1):
        phi = (total[None, :] + z) / step  # every candidate's set after adding it
        a = np.abs(phi)
        gap = ((a - t_abs) ** 2 + phase_weight * 2 * a * t_abs * (1 - np.cos(np.angle(phi) - t_ang))).mean(axis=1)
        gap[~available] = np.inf
        nxt = int(gap.argmin())
        chosen.append(nxt)
        available[nxt] = False
        total += z[nxt]
    return np.array(chosen)
