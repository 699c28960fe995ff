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

The site keeps, per run, each member's and each held-out image's distance to the closest image it
sent (`ShardCheckRecord`, in the run's folder): a new shard only lowers those distances, so each check
costs one nearest-neighbour pass over the new images, however many rounds came before. The check
covers one run: a run that reuses another run's fit (`Site.reuse_fit`) starts its own record,
though the coordinator may hold both runs' shards. A site whose record of a run is missing while
its ledger lists shards refuses to send more in that run.

The check is computed on the members: with DP on, the images sent stay post-processing of the
private models, but whether they are sent, round by round, and the figures a refusal carries
(its AUC and interval, the kind of figure the audit reports) are not covered by the accountant's
epsilon (docs/audit.md, "Differential privacy").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedkr.shared.attacks import closest_pixel_distances, distance_scores
from fedkr.shared.config import RunConfig
from fedkr.shared.mia import roc_auc
from fedkr.shared.mia_stats import bootstrap_auc_ci

#: The node-config key of the limit (`flower-supernode --node-config 'shard-max-distance-auc=0.6'`).
SHARD_CHECK_KEY = "shard-max-distance-auc"
#: The audit's default limit on a distance test's AUC (`RunConfig.audit_max_distance_auc`), the site's default here.
DEFAULT_MAX_AUC: float = RunConfig.__dataclass_fields__["audit_max_distance_auc"].default
#: Confidence of the interval whose lower end is compared with the limit (two-sided, as the audit's).
CONFIDENCE = 0.95


def check_shard_limit(value: object) -> float:
    """`value` as the shard check's limit: a number in (0.5, 1], 1 meaning off. Raises ValueError for
    anything else, booleans included (one line, naming the range)."""
    try:
        limit = float("nan") if isinstance(value, bool) else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        limit = float("nan")
    if not 0.5 < limit <= 1.0:
        raise ValueError(f"the shard check's limit must be a number in (0.5, 1] (1: off), got {value!r}")
    return limit


@dataclass(frozen=True)
class ShardCheckRecord:
    """What the coordinator holds of one run, and the probe that looks one shard ahead, as the pixel
    distance test sees them.

    `members` float64 (M,) and `holdout` float64 (K,): each of the site's members' and held-out
    images' Euclidean distance (pixels scaled to [0, 1], `shared.attacks.pixel_rows`) to the closest
    image sent in the run or probed, inf before the first; `num_images` images were sent, and
    `num_probe` drawn for the check alone and kept at the site.
    """

    members: np.ndarray
    holdout: np.ndarray
    num_images: int = 0
    num_probe: int = 0

    @classmethod
    def nothing_sent(cls, num_members: int, num_holdout: int) -> "ShardCheckRecord":
        """The record before a run's first shard: every distance infinite."""
        return cls(np.full(num_members, np.inf), np.full(num_holdout, np.inf))

    def adding(self, images: np.ndarray, members: np.ndarray, holdout: np.ndarray,
               probe: bool = False) -> "ShardCheckRecord":
        """The record once `images` uint8 (N, H, W, C), N >= 1, are sent too (drawn as the probe, when `probe`);
        `members` uint8 (M, H, W, C) and `holdout` uint8 (K, H, W, C) are the site's own, the ones this
        record was started with.

        Raises ValueError for images that are not uint8, differ in shape, or a site whose member or
        holdout count differs from the record's."""
        if any(np.asarray(x).dtype != np.uint8 for x in (images, members, holdout)):
            raise ValueError("the shard check compares uint8 images (0-255)")
        if len(images) == 0 or len(members) == 0 or len(holdout) == 0:
            raise ValueError("the shard check needs shard, member and held-out images")
        shapes = {tuple(np.shape(x)[1:]) for x in (images, members, holdout)}
        if len(shapes) != 1:
            raise ValueError(f"shard, member and held-out images differ in shape: {sorted(shapes)}")
        if (len(members), len(holdout)) != (len(self.members), len(self.holdout)):
            raise ValueError(f"the record is of {len(self.members)} members and {len(self.holdout)} held-out images, "
                             f"the site has {len(members)} and {len(holdout)}")
        return ShardCheckRecord(np.minimum(self.members, closest_pixel_distances(members, images)),
                                np.minimum(self.holdout, closest_pixel_distances(holdout, images)),
                                self.num_images + (0 if probe else len(images)),
                                self.num_probe + (len(images) if probe else 0))

    def save(self, path: Path) -> None:
        """Write the record to `path` (.npz) atomically: a crash leaves the previous record whole."""
        partial = path.with_name(path.name + ".partial")
        with partial.open("wb") as handle:
            np.savez(handle, members=self.members, holdout=self.holdout, num_images=np.int64(self.num_images),
                     num_probe=np.int64(self.num_probe))
        partial.replace(path)

    @classmethod
    def load(cls, path: Path, num_members: int, num_holdout: int) -> "ShardCheckRecord":
        """The record `save` wrote. Raises OSError or ValueError when it is missing, unreadable, or of
        another number of members or held-out images."""
        with np.load(path, allow_pickle=False) as saved:
            record = cls(np.asarray(saved["members"], np.float64), np.asarray(saved["holdout"], np.float64),
                         int(saved["num_images"]), int(saved["num_probe"]))
        if (record.members.shape != (num_members,) or record.holdout.shape != (num_holdout,)
                or min(record.num_images, record.num_probe) < 0):
            raise ValueError(f"{path.name} is not a record of {num_members} members and {num_holdout} held-out images")
        return record


@dataclass(frozen=True)
class ShardCheck:
    """The pixel distance test of one run's shards: AUC of members against holdout, its interval, and the limit.

    `auc` and the interval `auc_ci` (low, high) lie in [0, 1]; `num_images` images sent in the run,
    this shard's included, and `num_probe` probe images were tested against `num_members` members
    and `num_holdout` held-out images; `max_auc` in (0.5, 1].
    """

    auc: float
    auc_ci: tuple[float, float]
    num_images: int
    num_members: int
    num_holdout: int
    max_auc: float
    num_probe: int = 0

    @property
    def leaks(self) -> bool:
        """Whether the interval's lower end lies above the limit (a limit of 1 never refuses)."""
        return self.max_auc < 1.0 and self.auc_ci[0] > self.max_auc

    def describe(self) -> str:
        """One line: images tested, members and held-out images, AUC with its interval, and the limit."""
        low, high = self.auc_ci
        probe = f" and a {self.num_probe}-image probe" if self.num_probe else ""
        return (f"pixel distance test on {self.num_images} shard images{probe}, {self.num_members} members against "
                f"{self.num_holdout} held-out images: AUC {self.auc:.3f} [{low:.3f}, {high:.3f}], limit {self.max_auc:g}")


def check_shard(sent: ShardCheckRecord, max_auc: float = DEFAULT_MAX_AUC, seed: int = 0) -> ShardCheck:
    """The pixel distance test of a run's shards (`sent`, this one's included) against the site's members and holdout.

    Each member's and held-out image's score is minus its distance in `sent` (probe included; a member closer scoring
    higher); the AUC's interval is `bootstrap_auc_ci`'s (1000 resamples, `seed`). Returns the
    `ShardCheck`; its `leaks` says whether to refuse. Raises ValueError before any image was sent, or
    for `max_auc` outside (0.5, 1] (`check_shard_limit`).
    """
    max_auc = check_shard_limit(max_auc)
    if sent.num_images + sent.num_probe == 0:
        raise ValueError("the shard check tests images sent or probed: none were")
    member_scores, holdout_scores = distance_scores(sent.members), distance_scores(sent.holdout)
    low, high = bootstrap_auc_ci(member_scores, holdout_scores, confidence=CONFIDENCE, seed=seed)
    return ShardCheck(roc_auc(member_scores, holdout_scores), (low, high), sent.num_images, len(sent.members),
                      len(sent.holdout), max_auc, sent.num_probe)
