"""The site's check on a shard before it leaves: does it sit closer to the members than to unseen patients?

The release audit tests what everyone receives, after the coordinator already holds every shard.
A generator that memorizes its members sends near-copies of them in its shards, and the outbound
gate refuses only byte-identical copies. On BreastMNIST (sites of 40 to 224 members, the full
profile's generators, no DP) the coordinator view's pixel distance test on the shards reached AUC
0.990 [0.963, 1.000] at one site and 0.874 and 0.749 at two others (docs/audit.md, "What the
coordinator sees").

So before a shard leaves, the site runs the audit's pixel distance test (distance to the closest
record, `client.auditor`'s `dcr_pixel`) on it together with every shard it sent before in the run
(the coordinator holds them all) and a probe: one more shard, drawn with the run's first shard by
the same request and filter under its own seed, which never leaves. A test on more images sees
more: on that BreastMNIST fit one shard's 200 images gave 0.666 [0.559, 0.769] at the site whose
two shards gave the coordinator 0.749 [0.661, 0.837], so a check on the shards sent alone lets
through a shard whose run the next round would show leaking; with the probe every check looks one
round ahead (round r tests r + 1 shards' worth). Each member's and each held-out image's
Euclidean pixel distance to the closest image sent or probed is its score, a member closer
scoring higher; the ROC AUC of members against holdout comes with its 95% bootstrap percentile
interval (`shared.mia_stats`). The shard is refused when the interval's lower end lies above the
site's limit (`max_auc`, node config `shard-max-distance-auc`, default `RunConfig`'s default
audit distance limit, 0.6): the data then show the AUC above the audit's distance limit, at
nominal 97.5% one-sided confidence (the percentile bootstrap is approximate, and at holdouts of
10 to 20 images its intervals run narrow). That demands evidence of a leak, where the release
gate demands evidence of safety: a shard whose true AUC is at the limit is refused about 2.5% of
the time per check (a run checks once per round), a clean one (AUC near 0.5) rarely, and a
generator that reproduces members is stopped. A limit of 1 turns the check off: nothing is
tested and no probe is drawn (a run whose first shard left with the check off has no probe if the
check is turned on later).

The site keeps, per run, each member's and each held-out image's distance to the closest image it
sent or probed (`ShardCheckRecord`, `shard_check.npz` in the run's folder, with a SHA-256 of the
member and held-out images those distances belong to): a new shard only lowers those distances,
so each check costs one nearest-neighbour pass over the new images, however many rounds came
before. The check covers one run: a run that reuses another run's fit (`Site.reuse_fit`) starts
its own record, though the coordinator may hold both runs' shards. A site whose record of a run
is missing, unreadable or of other images while its ledger lists shards refuses to send more in
that run.

The check is computed on the members: with DP on, the images sent stay post-processing of the
private models, but whether they are sent, round by round, and the figures a refusal carries
(its AUC and interval, the kind of figure the audit reports) are not covered by the accountant's
epsilon (docs/audit.md, "Differential privacy").
"""

from __future__ import annotations

import hashlib
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
#: The limit that turns the check off: no AUC's interval lies above it, so nothing is tested or probed.
CHECK_OFF = 1.0


def shard_check_on(limit: float) -> bool:
    """Whether a site with this limit (`check_shard_limit`'s) tests its shards: every limit but `CHECK_OFF`."""
    return limit < CHECK_OFF


def check_shard_limit(value: object) -> float:
    """`value` as the shard check's limit: a number in (0.5, 1], 1 meaning off. Raises ValueError for
    anything else, booleans included (one line, naming the range)."""
    try:
        limit = float("nan") if isinstance(value, (bool, np.bool_)) else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        limit = float("nan")
    if not 0.5 < limit <= CHECK_OFF:
        raise ValueError(f"the shard check's limit must be a number in (0.5, 1] (1: off), got {value!r}")
    return limit


def site_images_digest(members: np.ndarray, holdout: np.ndarray) -> str:
    """SHA-256 (hex) of the site's member and held-out images, shapes and bytes: which images a record's
    distances belong to."""
    digest = hashlib.sha256()
    for images in (members, holdout):
        array = np.ascontiguousarray(images)
        digest.update(repr((array.shape, array.dtype.str)).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class ShardCheckRecord:
    """What the coordinator holds of one run, and the probe that looks one shard ahead, as the pixel
    distance test sees them.

    `members` float64 (M,) and `holdout` float64 (K,): each of the site's members' and held-out
    images' Euclidean distance (pixels scaled to [0, 1], `shared.attacks.pixel_rows`) to the closest
    image sent in the run or probed, inf before the first; `num_images` images were sent, and
    `num_probe` drawn for the check alone and kept at the site; `site_digest` names the member and
    held-out images the distances belong to (`site_images_digest`).
    """

    members: np.ndarray
    holdout: np.ndarray
    site_digest: str
    num_images: int = 0
    num_probe: int = 0

    @classmethod
    def nothing_sent(cls, members: np.ndarray, holdout: np.ndarray) -> "ShardCheckRecord":
        """The record before a run's first shard, of the site's `members` uint8 (M, H, W, C) and `holdout`
        uint8 (K, H, W, C): every distance infinite."""
        return cls(np.full(len(members), np.inf), np.full(len(holdout), np.inf), site_images_digest(members, holdout))

    def adding(self, images: np.ndarray, members: np.ndarray, holdout: np.ndarray,
               probe: bool = False) -> "ShardCheckRecord":
        """The record once `images` uint8 (N, H, W, C), N >= 1, are sent too (drawn as the probe, when `probe`);
        `members` uint8 (M, H, W, C) and `holdout` uint8 (K, H, W, C) are the site's own.

        Raises ValueError for images that are not uint8, differ in shape, or members and held-out
        images other than those the record was started with."""
        if any(np.asarray(x).dtype != np.uint8 for x in (images, members, holdout)):
            raise ValueError("the shard check compares uint8 images (0-255)")
        if len(images) == 0 or len(members) == 0 or len(holdout) == 0:
            raise ValueError("the shard check needs shard, member and held-out images")
        shapes = {tuple(np.shape(x)[1:]) for x in (images, members, holdout)}
        if len(shapes) != 1:
            raise ValueError(f"shard, member and held-out images differ in shape: {sorted(shapes)}")
        if site_images_digest(members, holdout) != self.site_digest:
            raise ValueError("the record is of other member and held-out images than the site's")
        return ShardCheckRecord(np.minimum(self.members, closest_pixel_distances(members, images)),
                                np.minimum(self.holdout, closest_pixel_distances(holdout, images)), self.site_digest,
                                self.num_images + (0 if probe else len(images)),
                                self.num_probe + (len(images) if probe else 0))

    def save(self, path: Path) -> None:
        """Write the record to `path` (.npz), its folder created if need be, through a temporary file
        renamed over it: a process that dies while writing leaves the previous record whole."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with partial.open("wb") as handle:
            np.savez(handle, members=self.members, holdout=self.holdout, site_digest=np.str_(self.site_digest),
                     num_images=np.int64(self.num_images), num_probe=np.int64(self.num_probe))
        partial.replace(path)

    @classmethod
    def load(cls, path: Path, members: np.ndarray, holdout: np.ndarray) -> "ShardCheckRecord":
        """The record `save` wrote, of the site's `members` and `holdout` (as in `nothing_sent`).

        Raises ValueError when the file is missing, unreadable or malformed (distances not finite and
        >= 0 once anything was sent or probed, negative counts), or of other member and held-out images.
        """
        try:
            with np.load(path, allow_pickle=False) as saved:
                record = cls(np.asarray(saved["members"], np.float64), np.asarray(saved["holdout"], np.float64),
                             str(saved["site_digest"].item()), int(saved["num_images"].item()),
                             int(saved["num_probe"].item()))
        except Exception as exc:  # an npz can fail in many ways (OSError, EOFError, BadZipFile, KeyError, ...)
            raise ValueError(f"{path.name} is not a readable shard check record ({type(exc).__name__})") from None
        distances = np.concatenate([record.members, record.holdout])
        drawn = record.num_images + record.num_probe
        if (record.members.ndim != 1 or record.holdout.ndim != 1 or min(record.num_images, record.num_probe) < 0
                or not (drawn > 0 and np.isfinite(distances).all() and (distances >= 0).all()
                        or drawn == 0 and np.isposinf(distances).all())):
            raise ValueError(f"{path.name} is not a well-formed shard check record")
        if record.site_digest != site_images_digest(members, holdout):
            raise ValueError(f"{path.name} is a record of other member and held-out images than the site's")
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
        return shard_check_on(self.max_auc) and self.auc_ci[0] > self.max_auc

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
