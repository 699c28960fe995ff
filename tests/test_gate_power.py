"""How much an audit can show at a site's size: the null refusal rate of the gate, against simulation."""

from __future__ import annotations

import numpy as np
import pytest

from fedkr.shared.audit_policy import AuditPolicy
from fedkr.shared.gate_power import (fit_holdout_warnings, holdout_for_null_refusal, null_refusal_rate,
                                     release_null_refusal_warning, small_holdout_warning)
from fedkr.shared.mia_stats import bootstrap_auc_ci

LIMITS = AuditPolicy().auc_limits()


def test_the_policy_has_one_auc_limit_per_required_attack():
    policy = AuditPolicy(max_auc_upper=0.61, max_distance_auc_upper=0.62, max_generator_auc_upper=0.63)
    limits = dict(zip(policy.required_attacks, policy.auc_limits(), strict=True))
    assert limits == {"loss": 0.61, "entropy": 0.61, "rmia": 0.61, "dcr_pixel": 0.62, "dcr_feature": 0.62,
                      "generator_loss": 0.63}


def test_the_null_refusal_rate_matches_simulated_audits():
    """One attack at 400 members v 100 held-out images: the share of null audits whose bootstrap upper
    bound passes 0.6, simulated, against the normal approximation."""
    rng = np.random.default_rng(0)
    trials = 300
    over = sum(bootstrap_auc_ci(rng.normal(size=400), rng.normal(size=100), num_resamples=300, seed=t)[1] > 0.6
               for t in range(trials))
    approx = null_refusal_rate(400, 100, (0.6,))
    assert over / trials == pytest.approx(approx, abs=0.06), (over / trials, approx)


def test_more_holdout_lowers_the_rate_and_the_search_finds_the_smallest():
    assert null_refusal_rate(385, 95, LIMITS) > null_refusal_rate(273, 207, LIMITS)
    needed = holdout_for_null_refusal(480, LIMITS, 0.2)
    assert needed is not None
    assert null_refusal_rate(480 - needed, needed, LIMITS) <= 0.2 < null_refusal_rate(481 - needed, needed - 1, LIMITS)
    assert holdout_for_null_refusal(100, LIMITS, 0.2) is None  # 100 images cannot show AUC <= 0.6 six times
    with pytest.raises(ValueError):
        null_refusal_rate(10, 10, (1.5,))


def test_a_small_site_is_warned_in_one_line_and_a_large_one_is_not():
    warning = small_holdout_warning("site-0", 385, 95, LIMITS)
    assert warning is not None and "\n" not in warning
    assert warning.startswith("site-0: with 385 members and 95 held-out images, a release that leaks nothing fails")
    assert f"a holdout of about {holdout_for_null_refusal(480, LIMITS, 0.2)} of its 480 images" in warning
    assert small_holdout_warning("site-0", 4000, 1000, LIMITS) is None
    assert "no split of its 100 images" in small_holdout_warning("site-0", 80, 20, LIMITS)


def test_a_policy_limit_at_or_below_chance_warns_instead_of_failing():
    warning = small_holdout_warning("site-0", 4000, 1000, (0.5,) * 6)
    assert warning is not None and "about 100% of audits" in warning


def test_sites_each_under_the_threshold_are_warned_together_when_the_release_is_over_it():
    """The three-site demo's sizes (240 v 240): no site alone is warned, the release over the three is."""
    three = {f"site-{i}": (240, 240) for i in range(3)}
    assert all(small_holdout_warning(site, *size, LIMITS) is None for site, size in three.items())
    per_site = null_refusal_rate(240, 240, LIMITS)
    warning = release_null_refusal_warning(three, LIMITS)
    assert warning is not None and "\n" not in warning
    assert f"by chance in about {1 - (1 - per_site) ** 3:.0%} of audits" in warning and "site-2 " in warning
    assert release_null_refusal_warning({f"site-{i}": (360, 360) for i in range(2)}, LIMITS) is None  # today's demo
    assert release_null_refusal_warning({"site-0": (240, 240)}, LIMITS) is None  # one site: its own warning speaks
    assert release_null_refusal_warning({"site-0": (240, 240), "site-1": (0, 0)}, LIMITS) is None  # an empty site is left out
    at_chance = release_null_refusal_warning({f"site-{i}": (4000, 1000) for i in range(2)}, (0.5,) * 6)
    assert at_chance is not None and "no holdout lowers it" in at_chance and "larger holdouts" not in at_chance


def test_the_fit_warnings_are_each_site_s_then_the_release_s_in_one_list():
    sizes = {"site-1": (240, 240), "site-0": (385, 95), "site-2": (0, 0)}
    warnings = fit_holdout_warnings(sizes, LIMITS)
    assert warnings == [small_holdout_warning("site-0", 385, 95, LIMITS),
                        release_null_refusal_warning(sizes, LIMITS)]  # site-1 alone is under the threshold
    assert all(w is not None for w in warnings)
    assert fit_holdout_warnings({f"site-{i}": (360, 360) for i in range(2)}, LIMITS) == []
