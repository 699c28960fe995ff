"""The site's membership-inference audit of a candidate release, with its own private data.

Runs inside the hospital: member and holdout images never leave; the `AuditReport` it returns
holds metrics only. Attacks on the model (black-box outputs): loss, modified entropy, offline
RMIA and, optionally, offline LiRA. Attacks on the released images: distance to closest record
in pixel space and in the teacher's feature space, plus a near-duplicate count.

Reference models for RMIA and LiRA are trained here on the site's holdout ("population") data,
cross-fitted: the holdout is cut into K folds and reference model j trains on every fold but j.
Each audited image is then scored against exactly one reference model that never saw it
(members: any one, in turn; holdout images of fold j: model j), so members and holdout images
are treated alike and the holdout still serves, whole, as the audit's non-members.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
from fedkr.shared.attack_report import AttackResult, measure_attack
from fedkr.shared.attacks import (
    distance_scores,
    lira_logit,
    lira_offline_scores,
    loss_scores,
    modified_entropy_scores,
    nearest_distances,
    pixel_rows,
    rmia_scores,
    true_class_probability,
)
from fedkr.shared.config import MAX_REFERENCE_MODELS, MIN_REFERENCE_MODELS
from fedkr.shared.classifier import (
    CompactCNN,
    TrainConfig,
    build_classifier,
    embed,
    one_hot,
    predict_logits,
    train_classifier,
)
from fedkr.shared.data import ImageSet
from fedkr.shared.density_attack import density_ratio_scores
from fedkr.shared.device import Device
from fedkr.shared.generator_kinds import SiteGenerator
from fedkr.shared.mean_embedding import MeanEmbeddingGenerator
from fedkr.shared.generator_attack import cross_fitted_scores, denoising_errors
from fedkr.shared.reports import AuditReport
from fedkr.shared.utility import count_correct

log = logging.getLogger(__name__)

DESCRIPTIONS = {
    "loss": "Yeom et al.: a lower loss on the true class means member",
    "entropy": "Song & Mittal: modified prediction entropy, lower means member",
    "rmia": "Zarifzadeh et al., offline RMIA with cross-fitted reference models",
    "lira": "Carlini et al., offline LiRA (fixed variance) with cross-fitted reference models",
    "dcr_pixel": "distance to the closest released image, pixel space: closer means member",
    "dcr_feature": "distance to the closest released image, the site teacher's feature space: closer means member",
    "generator_loss": "white-box, the site's own generator: a lower denoising error means member (Carlini et al. 2023), "
                      "noise level chosen on one half, scored on the other",
    "generator_loss:dp-merf": "white-box, the site's own DP-MERF generator: a lower loss ||m_y - phi(x)||^2 (the distance of "
                              "the image's random features to its class's mean embedding in the decoder) means member",
    "domias": "van Breugel et al. 2023 (DOMIAS): synthetic over population density in the feature space, higher means member",
}
SCORES = {
    "loss": "log-probability of the true class",
    "entropy": "negated modified entropy",
    "rmia": "share of population samples dominated",
    "lira": "z-score of phi against reference models",
    "dcr_pixel": "negated pixel distance (0-1 scale)",
    "dcr_feature": "negated feature distance",
    "generator_loss": "negated denoising error, in holdout standard deviations",
    "generator_loss:dp-merf": "negated mean-embedding loss",
    "domias": "log density ratio, synthetic over reference",
}
#: A member closer to a released image than this percentile of real-to-real nearest distances is a near duplicate.
NEAR_DUPLICATE_PERCENTILE = 1.0


@dataclass(frozen=True)
class AuditSettings:
    """How a site attacks a candidate.

    `reference_models` models of the target's architecture trained on folds of the site's population
    (RMIA, Zarifzadeh et al. 2024; offline LiRA, Carlini et al. 2022, with `lira`), each for
    `reference_epochs` epochs and at least `reference_min_steps` steps; at most `max_per_side`
    members and as many holdout images are scored; intervals at `confidence`; `delta` for the
    empirical epsilon lower bound; `rmia_offline_a` RMIA's offline scaling; `seed` fixes folds and
    subsampling. Raises `ValueError` for a setting out of range.
    """

    reference_models: int = 2
    reference_epochs: int = 15
    reference_min_steps: int = 300
    lira: bool = False
    max_per_side: int = 10_000
    confidence: float = 0.95
    delta: float = 1e-5
    rmia_offline_a: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        if not MIN_REFERENCE_MODELS <= self.reference_models <= MAX_REFERENCE_MODELS:
            raise ValueError(f"reference models must be between {MIN_REFERENCE_MODELS} (cross-fitting needs two folds) "
                             f"and {MAX_REFERENCE_MODELS}, got {self.reference_models}")
        if self.reference_epochs < 1 or self.max_per_side < 10:
            raise ValueError("reference_epochs must be >= 1 and max_per_side >= 10")


def _subsample(images: ImageSet, limit: int, rng: np.random.Generator) -> ImageSet:
    if len(images) <= limit:
        return images
    return images.subset(np.sort(rng.choice(len(images), limit, replace=False)))


def _train_references(target: CompactCNN, population: ImageSet, folds: np.ndarray, settings: AuditSettings,
                      device: Device = None) -> list[CompactCNN]:
    """Reference model j: the target's architecture trained on the population minus fold j, with hard labels, on `device`."""
    models = []
    for j in range(settings.reference_models):
        keep = folds != j
        model = build_classifier(target.config, settings.seed + 7919 * (j + 1))
        train_classifier(
            model,
            population.images[keep],
            one_hot(population.labels[keep], population.num_classes),
            TrainConfig(epochs=settings.reference_epochs, min_steps=settings.reference_min_steps, seed=settings.seed + j),
            device=device,
        )
        models.append(model)
    return models


class ReferenceCache:
    """Reference models kept for the next audit at the same site.

    They depend on the population, its folds, the target's architecture and the audit settings,
    never on the target's weights, so one site attacking several models of one architecture (a
    bench comparing methods) trains them once; the key holds all four, so a changed input retrains.
    """

    def __init__(self) -> None:
        self._models: dict[tuple, list[CompactCNN]] = {}

    def models(self, target: CompactCNN, population: ImageSet, folds: np.ndarray, settings: AuditSettings,
               device: Device = None) -> list[CompactCNN]:
        """The reference models for these inputs, trained on `device` the first time they are asked for."""
        digest = hashlib.sha256(repr(tuple(population.class_names)).encode())
        for array in (population.images, population.labels, folds):
            digest.update(f"{array.shape}{array.dtype}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        key = (target.config, settings, digest.hexdigest())
        if key not in self._models:
            self._models[key] = _train_references(target, population, folds, settings, device)
        return self._models[key]


def _model_attacks(
    target: CompactCNN, members: ImageSet, holdout: ImageSet, settings: AuditSettings,
    cache: ReferenceCache | None = None, device: Device = None,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Per-example scores (members, holdout) of every black-box attack on `target`, models run on `device`,
    and the holdout's reference logits (N, C): each image's from the reference model that never saw it."""
    k = settings.reference_models
    rng = np.random.default_rng(settings.seed + 1)
    folds = rng.permutation(len(holdout)) % k
    started = time.perf_counter()
    references = (cache or ReferenceCache()).models(target, holdout, folds, settings, device)
    log.info("audit: %d reference models ready in %.0f s", k, time.perf_counter() - started)

    t_m, t_h = predict_logits(target, members.images, device=device), predict_logits(target, holdout.images, device=device)
    member_ref = rng.permutation(len(members)) % k  # each member uses one reference model, as holdout images do
    r_m = np.stack([predict_logits(m, members.images, device=device) for m in references])  # (K, N, C)
    r_h = np.stack([predict_logits(m, holdout.images, device=device) for m in references])
    out_m = r_m[member_ref, np.arange(len(members))]
    out_h = r_h[folds, np.arange(len(holdout))]

    scores = {
        "loss": (loss_scores(t_m, members.labels), loss_scores(t_h, holdout.labels)),
        "entropy": (modified_entropy_scores(t_m, members.labels), modified_entropy_scores(t_h, holdout.labels)),
    }
    p_tm, p_th = true_class_probability(t_m, members.labels), true_class_probability(t_h, holdout.labels)
    p_om, p_oh = true_class_probability(out_m, members.labels), true_class_probability(out_h, holdout.labels)
    # population z: the holdout itself, each image against the reference model that never saw it
    a = settings.rmia_offline_a
    scores["rmia"] = (rmia_scores(p_tm, p_om, p_th, p_oh, offline_a=a),
                      rmia_scores(p_th, p_oh, p_th, p_oh, offline_a=a, x_is_population=True))
    if settings.lira:
        phi_ref = np.concatenate([lira_logit(out_m, members.labels), lira_logit(out_h, holdout.labels)])
        phi_tgt = np.concatenate([lira_logit(t_m, members.labels), lira_logit(t_h, holdout.labels)])
        z = lira_offline_scores(phi_tgt, phi_ref[:, None])
        scores["lira"] = (z[: len(members)], z[len(members) :])
    return scores, out_h


def _distance_attacks(
    released: np.ndarray, feature_model: CompactCNN, members: ImageSet, holdout: ImageSet, device: Device = None,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict]:
    """DCR of members and holdout to the released images, and how many members the release nearly copies."""
    if released.ndim != 4 or released.shape[1:] != members.images.shape[1:]:
        raise ValueError(f"released images have shape {released.shape[1:]}, the site's images {members.images.shape[1:]}")
    spaces = {
        "pixel": (pixel_rows(members.images), pixel_rows(holdout.images), pixel_rows(released)),
        "feature": tuple(embed(feature_model, x, device=device) for x in (members.images, holdout.images, released)),
    }
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    near: dict = {"members_checked": len(members), "percentile": NEAR_DUPLICATE_PERCENTILE}
    for space, (m, h, r) in spaces.items():
        d_m, d_h = nearest_distances(m, r), nearest_distances(h, r)
        scores[f"dcr_{space}"] = (distance_scores(d_m), distance_scores(d_h))
        # how close two distinct real images of this site come: holdout to nearest member
        threshold = float(np.percentile(nearest_distances(h, m), NEAR_DUPLICATE_PERCENTILE))
        # the holdout's count is the baseline: how many images the release comes that close to by chance
        near[space] = {"count": int((d_m <= threshold).sum()), "threshold": threshold,
                       "holdout_count": int((d_h <= threshold).sum()), "holdout_checked": len(holdout)}
    return scores, near


def audit_synthetic(
    site_id: str,
    synthetic: np.ndarray,
    members: ImageSet,
    holdout: ImageSet,
    reference: np.ndarray,
    feature_model: CompactCNN,
    settings: AuditSettings = AuditSettings(),
    target: str = "shards",
    device: Device = None,
) -> tuple[AttackResult, ...]:
    """The attacks on synthetic images a party received from this site: distance to the closest
    synthetic image in pixel and feature space, and the DOMIAS density ratio
    (`fedkr.shared.density_attack`), members against holdout.

    `synthetic` uint8 (N, H, W, C), the site's images; `reference` uint8 (R, H, W, C), a population
    sample holding no member of any site (the density attack's reference); `feature_model` gives
    the feature space (the attacker's own model). Members and holdout are subsampled as in
    `audit_model`. Raises ValueError for images of another shape than the site's.
    """
    rng = np.random.default_rng(settings.seed)
    members = _subsample(members, settings.max_per_side, rng)
    holdout = _subsample(holdout, settings.max_per_side, rng)
    scored, _ = _distance_attacks(synthetic, feature_model, members, holdout, device)
    features = [embed(feature_model, x, device=device) for x in (synthetic, reference, members.images, holdout.images)]
    density = density_ratio_scores(features[0], features[1], np.concatenate(features[2:]), seed=settings.seed)
    scored["domias"] = (density[: len(members)], density[len(members):])
    results = []
    for name, (m_scores, h_scores) in scored.items():
        result = measure_attack(name, target, m_scores, h_scores, members.labels, holdout.labels, members.class_names,
                                description=DESCRIPTIONS[name], score_name=SCORES[name],
                                confidence=settings.confidence, delta=settings.delta, seed=settings.seed)
        log.info("%s: %s attack on %s AUC %.3f [%.3f, %.3f]", site_id, name, target, result.auc, *result.auc_ci)
        results.append(result)
    return tuple(results)


def _generator_attack(
    generator: SiteGenerator, members: ImageSet, holdout: ImageSet, seed: int, device: Device,
) -> tuple[np.ndarray, np.ndarray]:
    """Member and holdout scores of the white-box attack on the site's generator, higher meaning member: the
    generator's own training loss on each image, negated (`generator_attack` for a diffusion generator,
    `MeanEmbeddingGenerator.embedding_losses` for DP-MERF)."""
    if isinstance(generator, MeanEmbeddingGenerator):
        return (-generator.embedding_losses(members.images, members.labels, seed=seed),
                -generator.embedding_losses(holdout.images, holdout.labels, seed=seed))
    member_errors = denoising_errors(generator, members.images, members.labels, seed=seed, device=device)
    holdout_errors = denoising_errors(generator, holdout.images, holdout.labels, seed=seed + 1, device=device)
    scores = cross_fitted_scores(member_errors, holdout_errors, seed=seed)
    log.info("white-box generator attack: noise level chosen per half: %s", ", ".join(scores.chosen))
    return scores.members, scores.holdout


def audit_model(
    site_id: str,
    target: CompactCNN,
    members: ImageSet,
    holdout: ImageSet,
    settings: AuditSettings = AuditSettings(),
    released_images: np.ndarray | None = None,
    feature_model: CompactCNN | None = None,
    target_name: str = "student",
    dp: dict | None = None,
    references: ReferenceCache | None = None,
    comparator: CompactCNN | None = None,
    device: Device = None,
    generator: SiteGenerator | None = None,
) -> AuditReport:
    """Attack `target` (and, given them, the released images) with members against holdout, and
    score it on the holdout next to `comparator` (the utility check, `fedkr.shared.utility`).

    `comparator` is the site's teacher; without it the audit's cross-fitted reference models stand
    in (each holdout image scored by the one that never saw it), and the report says so.
    `generator`, the site's own generator of the run, adds the white-box attack on it: its own training
    loss on the same members and holdout (the denoising error, `fedkr.shared.generator_attack`, or
    DP-MERF's mean-embedding loss, `MeanEmbeddingGenerator.embedding_losses`).
    Reference models train, and every model runs, on `device` (`shared/device.py`; None: the CPU).
    """
    rng = np.random.default_rng(settings.seed)
    members = _subsample(members, settings.max_per_side, rng)
    holdout = _subsample(holdout, settings.max_per_side, rng)
    started = time.perf_counter()
    model_scores, reference_logits = _model_attacks(target, members, holdout, settings, references, device)
    scored: list[tuple[str, str, tuple[np.ndarray, np.ndarray]]] = [
        (name, target_name, pair) for name, pair in model_scores.items()
    ]
    utility = count_correct(
        holdout.labels, predict_logits(target, holdout.images).argmax(1),
        (predict_logits(comparator, holdout.images) if comparator is not None else reference_logits).argmax(1),
        holdout.num_classes, comparator="teacher" if comparator is not None else "reference models",
    )
    near: dict = {}
    if released_images is not None:
        distance, near = _distance_attacks(released_images, feature_model or target, members, holdout, device)
        scored += [(name, "distilled_set", pair) for name, pair in distance.items()]
    if generator is not None:
        scored.append(("generator_loss", "generator", _generator_attack(generator, members, holdout, settings.seed, device)))
    results: list[AttackResult] = []
    kind = "" if generator is None or generator.config.kind == "diffusion" else f":{generator.config.kind}"
    for name, where, (m_scores, h_scores) in scored:
        wording = f"{name}{kind}" if where == "generator" else name
        result = measure_attack(
            name, where, m_scores, h_scores, members.labels, holdout.labels, members.class_names,
            description=DESCRIPTIONS[wording], score_name=SCORES[wording],
            confidence=settings.confidence, delta=settings.delta, seed=settings.seed,
        )
        log.info("%s: %s attack AUC %.3f [%.3f, %.3f], TPR@1%%FPR %.3f, control AUC %s", site_id, name, result.auc,
                 *result.auc_ci, result.tpr_at_1pct_fpr, "n/a" if result.control is None else f"{result.control['auc']:.3f}")
        results.append(result)
    settings_record = {**asdict(settings), "feature_space": "site teacher" if feature_model is not None else target_name,
                       "seconds": round(time.perf_counter() - started, 1)}
    if generator is not None:  # what the white-box attack attacked: the audit's summary names it in a remedy
        settings_record["generator_trained_steps"] = int(generator.trained_steps)
        settings_record["generator_kind"] = generator.config.kind
    return AuditReport(
        site_id=site_id, results=tuple(results), num_members=len(members), num_nonmembers=len(holdout),
        near_duplicates=near, dp=dp, settings=settings_record, utility=utility,
    )
