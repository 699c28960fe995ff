"""The site's check on a shard before it leaves: does it sit closer to the members than to unseen patients?

The release audit tests what everyone receives, after the coordinator already holds every shard.
A generator that memorizes its members sends near-copies of them in its shards, and the outbound
gate refuses only byte-identical copies. On BreastMNIST (sites of 40 to 224 members, the full
profile's generators, no DP) the coordinator view's pixel distance test on the shards reached AUC
0.990 [0.963, 1.000] at one site and 0.874 and 0.749 at two others (docs/audit.md, "What the
coordinator sees").

So before a shard leaves, the site runs the audit's pixel distance test (distance to the closest
record, `client.auditor`'s `dcr_pixel`) on it together with every shard it sent before in the
run: the coordinator holds them all, and a test on more images sees more (on that BreastMNIST fit
one round's 200 images gave 0.666 [0.559, 0.769] at the site whose two rounds gave the
coordinator 0.749 [0.661, 0.837]). Each member's and each held-out image's Euclidean pixel
distance to the closest image sent is its score, a member closer scoring higher; the ROC AUC of
members against holdout comes with its 95% bootstrap percentile interval (`shared.mia_stats`).
The shard is refused when the interval's lower end lies above the site's limit (`max_auc`, node
config `shard-max-distance-auc`, default `RunConfig`'s default audit distance limit, 0.6): the
data then show the AUC above the audit's distance limit, at nominal 97.5% one-sided confidence
(the percentile bootstrap is approximate, and at holdouts of 10 to 20 images its intervals run
narrow). That demands evidence of a leak, where the release gate demands evidence of safety: a
shard whose true AUC is at the limit is refused about 2.5% of the time per check (a run checks
once per round), a clean one (AUC near 0.5) rarely, and a generator that reproduces members is
stopped. A limit of 1 turns the check off: nothing is tested.

The check covers one run: a run that reuses another run's fit (`Site.reuse_fit`) starts its own
record, though the coordinator may hold both runs' shards. A site whose record of what it sent
in a run is missing while its ledger lists shards refuses to send more in that run.

The check is computed on the members: with DP on, the images sent stay post-processing of the
private models, but whether they are sent, round by round, and the figures a refusal carries
(its AUC and interval, the kind of figure the audit reports) are not covered by the accountant's
epsilon (docs/audit.md, "Differential privacy").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedkr.shared.attacks import distance_scores
from fedkr.shared.config import RunConfig
from fedkr.shared.knn import nearest_distances
from fedkr.shared.mia import roc_auc
from fedkr.shared.mia_stats import bootstrap_auc_ci

#: The node-config key of the limit (`flower-supernode --node-config 'shard-max-distance-auc=0.6'`).
SHARD_CHECK_KEY = "shard-max-distance-auc"
#: The audit's default limit on a distance test's AUC (`RunConfig.audit_max_distance_auc`), the site's default here.
DEFAULT_MAX_AUC: float = RunConfig.__dataclass_fields__["audit_max_distance_auc"].default
#: Confidence of the interval whose lower end is compared with the limit (two-sided, as the audit's).
CONFIDENCE = 0.95


@dataclass(frozen=True)
class ShardCheck:
    """The pixel distance test of one shard: AUC of members against holdout, its interval, and the limit.

    `auc` and the interval `auc_ci` (low, high) lie in [0, 1]; `num_images` shard images were tested
    against `num_members` members and `num_holdout` held-out images; `max_auc` in (0.5, 1].
    """

    auc: float
    auc_ci: tuple[float, float]
    num_images: int
    num_members: int
    num_holdout: int
    max_auc: float

    @property
    def leaks(self) -> bool:
        """Whether the interval's lower end lies above the limit (a limit of 1 never refuses)."""
        return self.max_auc < 1.0 and self.auc_ci[0] > self.max_auc

    def describe(self) -> str:
        """One line: images tested, members and held-out images, AUC with its interval, and the limit."""
        low, high = self.auc_ci
        return (f"pixel distance test on {self.num_images} shard images, {self.num_members} members against "
                f"{self.num_holdout} held-out images: AUC {self.auc:.3f} [{low:.3f}, {high:.3f}], limit {self.max_auc:g}")


def check_shard(images: np.ndarray, members: np.ndarray, holdout: np.ndarray, max_auc: float = DEFAULT_MAX_AUC,
                seed: int = 0) -> ShardCheck:
    """The pixel distance test of a shard against the site's members and holdout.

    `images` uint8 (N, H, W, C), the shard's images; `members` and `holdout` uint8 (M, H, W, C) and
    (K, H, W, C), the site's own. Distances are Euclidean on pixel values scaled to [0, 1]; the
    interval is `bootstrap_auc_ci`'s (1000 resamples, `seed`). Returns the `ShardCheck`; its
    `leaks` says whether to refuse. Raises ValueError for an empty set, images that are not uint8
    or of different shapes, or `max_auc` outside (0.5, 1].
    """
    if not 0.5 < max_auc <= 1.0:
        raise ValueError(f"the shard check's limit must be in (0.5, 1] (1: off), got {max_auc!r}")
    if min(len(images), len(members), len(holdout)) == 0:
        raise ValueError("the shard check needs shard, member and held-out images")
    if any(np.asarray(x).dtype != np.uint8 for x in (images, members, holdout)):
        raise ValueError("the shard check compares uint8 images (0-255)")
    shapes = {tuple(np.shape(x)[1:]) for x in (images, members, holdout)}
    if len(shapes) != 1:
        raise ValueError(f"shard, member and held-out images differ in shape: {sorted(shapes)}")
    scale = lambda x: np.asarray(x, dtype=np.float32).reshape(len(x), -1) / 255.0  # noqa: E731
    shard = scale(images)
    member_scores = distance_scores(nearest_distances(scale(members), shard))
    holdout_scores = distance_scores(nearest_distances(scale(holdout), shard))
    low, high = bootstrap_auc_ci(member_scores, holdout_scores, confidence=CONFIDENCE, seed=seed)
    return ShardCheck(roc_auc(member_scores, holdout_scores), (low, high), len(images), len(members), len(holdout),
                      max_auc)
