"""How much a site's audit can show at its size: the standard error of an attack's AUC, the holdout
that would close an interval, and how often a release that leaks nothing is refused by chance.

The release gate passes an attack only when the upper end of its AUC interval is at most the
policy's limit, and a release only when every attack at every site passes (an intersection-union
test, Berger 1982: each attack at the policy's confidence already bounds the chance of releasing
a leak, so no multiplicity correction is owed there). Its price is power: a site whose holdout is
small has wide intervals, and a release that leaks nothing fails some attack by chance. These
functions estimate that from the sizes alone, with the Hanley-McNeil standard error (Hanley &
McNeil, Radiology 1982) and a normal approximation of the AUC; `benchmarks/gate_null.py` measures
the same rates by simulating whole audits (docs/audit.md, "The gate at small sites").
"""

from __future__ import annotations

import math

from scipy.stats import norm

#: Largest holdout, as a multiple of today's, that a "more holdout" remedy proposes.
MAX_HOLDOUT_FACTOR = 20

#: A site, or a release over all sites, that would fail by chance more often than this is warned at fit.
WARN_NULL_REFUSAL = 0.20

__all__ = ["MAX_HOLDOUT_FACTOR", "WARN_NULL_REFUSAL", "hanley_mcneil_se", "holdout_for_auc_upper", "null_refusal_rate",
           "holdout_for_null_refusal", "small_holdout_warning", "release_null_refusal_warning", "fit_holdout_warnings"]


def hanley_mcneil_se(auc: float, num_members: int, num_nonmembers: int) -> float:
    """Standard error of an AUC estimate (Hanley & McNeil 1982, eq. 2), for `auc` in (0, 1) and counts >= 1."""
    if not 0.0 < auc < 1.0 or num_members < 1 or num_nonmembers < 1:
        raise ValueError("hanley_mcneil_se needs 0 < auc < 1 and at least one member and one non-member")
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (num_members - 1) * (q1 - auc * auc)
                + (num_nonmembers - 1) * (q2 - auc * auc)) / (num_members * num_nonmembers)
    return math.sqrt(max(variance, 0.0))


def holdout_for_auc_upper(auc: float, upper: float, limit: float, num_members: int, num_nonmembers: int,
                          max_factor: int = MAX_HOLDOUT_FACTOR) -> int | None:
    """The smallest holdout whose AUC upper bound would meet `limit` if the AUC stayed at `auc`.

    The measured half-width `upper - auc` is scaled by the ratio of Hanley-McNeil standard errors at
    the larger holdout (members unchanged). Returns None when the point estimate itself exceeds
    `limit` (no holdout helps) or more than `max_factor` times today's holdout would be needed.
    """
    if not auc < limit or not 1 <= num_members <= 10**9 or not 1 <= num_nonmembers <= 10**9 or not 0.0 < auc < 1.0:
        return None
    if upper <= limit:
        return num_nonmembers
    width, base = upper - auc, hanley_mcneil_se(auc, num_members, num_nonmembers)
    low, high = num_nonmembers, num_nonmembers * max_factor
    if auc + width * hanley_mcneil_se(auc, num_members, high) / base > limit:
        return None
    while high - low > 1:  # the predicted bound falls as the holdout grows
        mid = (low + high) // 2
        if auc + width * hanley_mcneil_se(auc, num_members, mid) / base <= limit:
            high = mid
        else:
            low = mid
    return high


def null_refusal_rate(num_members: int, num_holdout: int, limits: tuple[float, ...], confidence: float = 0.95) -> float:
    """The chance that a release that leaks nothing fails at least one of the AUC rules `limits` (one per
    attack, each an upper-bound limit in (0.5, 1)) at a site of `num_members` members and
    `num_holdout` held-out images, in [0, 1].

    Under the null every attack's AUC estimate is taken as normal around 0.5 with the Hanley-McNeil
    standard error, and its interval's upper end as estimate + z * SE (z at `confidence`, two-sided);
    attacks are treated as independent, so for correlated attacks (loss and entropy) this is an upper
    bound. Raises ValueError for counts below 1 or a limit outside (0, 1] (a policy's range).
    """
    if num_members < 1 or num_holdout < 1:
        raise ValueError("null_refusal_rate needs at least one member and one held-out image")
    se = hanley_mcneil_se(0.5, num_members, num_holdout)
    z = float(norm.ppf(0.5 + confidence / 2))
    passing = 1.0
    for limit in limits:
        if not 0.0 < limit <= 1.0:
            raise ValueError(f"an AUC limit must be in (0, 1], got {limit}")
        passing *= float(norm.cdf((limit - 0.5) / se - z))
    return 1.0 - passing


def holdout_for_null_refusal(num_images: int, limits: tuple[float, ...], target: float,
                             confidence: float = 0.95) -> int | None:
    """The smallest holdout, out of a site's `num_images` images, at which `null_refusal_rate` is at most
    `target`; None when no split of those images gets there. The rate falls as the holdout grows up to
    half the images (the product members x holdout grows), so the search stops there."""
    low, high = 1, num_images // 2
    if high < 1 or null_refusal_rate(num_images - high, high, limits, confidence) > target:
        return None
    while low < high:
        middle = (low + high) // 2
        if null_refusal_rate(num_images - middle, middle, limits, confidence) <= target:
            high = middle
        else:
            low = middle + 1
    return low


def small_holdout_warning(site: str, num_members: int, num_holdout: int, limits: tuple[float, ...],
                          confidence: float = 0.95, threshold: float = WARN_NULL_REFUSAL) -> str | None:
    """One line for the operator when a site's holdout is too small for the policy's AUC rules
    (`null_refusal_rate` above `threshold`), naming the holdout that would do; None otherwise."""
    if num_members < 1 or num_holdout < 1:
        return None
    rate = null_refusal_rate(num_members, num_holdout, limits, confidence)
    return _site_warning(site, num_members, num_holdout, rate, limits, confidence, threshold)


def release_null_refusal_warning(sizes: dict[str, tuple[int, int]], limits: tuple[float, ...], confidence: float = 0.95,
                                 threshold: float = WARN_NULL_REFUSAL) -> str | None:
    """One line for the operator when a release that leaks nothing would fail the policy's AUC rules at
    some site by chance in more than `threshold` of audits, over all sites together; None otherwise.

    `sizes` maps each site's id to (members, held-out images), counts; a site with none of either is
    left out, and with fewer than two sites left the result is None (`small_holdout_warning` speaks
    for one site). `limits` holds one AUC upper-bound limit per required attack, each in (0, 1].
    The release's rate is 1 - prod(1 - r_i), r_i the site's `null_refusal_rate` (Hanley-McNeil
    normal approximation, AUC rules only, sites and attacks treated as independent): three sites
    of 240 v 240 give about 19% a site, unwarned, and about 46% a release, where whole simulated
    audits with the TPR rule refused 53.5% (`benchmarks/gate_null.py`; docs/audit.md, "The gate at
    small sites"). Raises ValueError for a limit outside (0, 1] (from `null_refusal_rate`).
    """
    return _release_warning(_site_rates(sizes, limits, confidence), limits, threshold)


def fit_holdout_warnings(sizes: dict[str, tuple[int, int]], limits: tuple[float, ...], confidence: float = 0.95,
                         threshold: float = WARN_NULL_REFUSAL) -> list[str]:
    """Every warning the coordinator logs at the end of fit, in order: `small_holdout_warning` for each
    site in `sizes`' sorted order, then `release_null_refusal_warning` over all of them; each site's
    `null_refusal_rate` is computed once. Arguments and errors as `release_null_refusal_warning`'s."""
    rates = _site_rates(sizes, limits, confidence)
    warnings = [_site_warning(site, *sizes[site], rates[site], limits, confidence, threshold) for site in sorted(rates)]
    return [w for w in [*warnings, _release_warning(rates, limits, threshold)] if w]


def _site_rates(sizes: dict[str, tuple[int, int]], limits: tuple[float, ...], confidence: float) -> dict[str, float]:
    """Each site's `null_refusal_rate`, leaving out a site with no member or no held-out image."""
    return {site: null_refusal_rate(members, holdout, limits, confidence)
            for site, (members, holdout) in sizes.items() if members >= 1 and holdout >= 1}


def _site_warning(site: str, num_members: int, num_holdout: int, rate: float, limits: tuple[float, ...],
                  confidence: float, threshold: float) -> str | None:
    if rate <= threshold:
        return None
    total = num_members + num_holdout
    needed = holdout_for_null_refusal(total, limits, threshold, confidence)
    advice = (f"a holdout of about {needed:,} of its {total:,} images would bring that under {threshold:.0%}"
              if needed is not None else f"no split of its {total:,} images brings that under {threshold:.0%}")
    return (f"{site}: with {num_members:,} members and {num_holdout:,} held-out images, a release that leaks nothing "
            f"fails the policy's AUC rules there by chance in about {rate:.0%} of audits; {advice} "
            "(docs/audit.md, \"The gate at small sites\")")


def _release_warning(rates: dict[str, float], limits: tuple[float, ...], threshold: float) -> str | None:
    if len(rates) < 2:
        return None
    refused = 1.0 - math.prod(1.0 - rate for rate in rates.values())
    if refused <= threshold:
        return None
    each = ", ".join(f"{site} {rate:.0%}" for site, rate in rates.items())
    remedy = ("larger holdouts lower it" if min(limits) > 0.5 else
              "no holdout lowers it under a limit at or below 0.5, where a clean AUC's interval reaches")
    return (f"over these {len(rates)} sites a release that leaks nothing fails the policy's AUC rules at one of them by "
            f"chance in about {refused:.0%} of audits (each site alone: {each}); {remedy} "
            "(docs/audit.md, \"The gate at small sites\")")
