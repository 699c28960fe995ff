"""The bench's coordinator view: each method attacked through what its coordinator receives.

The release view (`bench.worst_site_mia`) attacks the final model that everyone receives. The
coordinator sees more, and differently per method; here each site's members are attacked against
its holdout, with the auditor's statistics, through exactly that:

- **Flower FedAvg**: every weight upload of every site, every round (the site's model after its
  local training), attacked with the auditor's model attacks (loss, entropy, RMIA with the site's
  cross-fitted reference models; `client.auditor.audit_model`). The most-leaking round is reported.
- **fedkr**: each site's synthetic shards (the images it sent), attacked with the distance tests
  in pixel and feature space and the DOMIAS density ratio (`client.auditor.audit_synthetic`; the
  coordinator's own student gives the feature space, the bench's test split the population
  reference); the soft labels that come with them (its teacher's softened probabilities on its own
  synthetic images), which teach the teacher to whoever trains on them: the coordinator trains a
  model on that site's shards alone, by the student's recipe, and attacks it with the model
  attacks; and its relabel reply (unless the run turned relabelling off): a site answers one request per run with its teacher's
  softened probabilities (float16 on the wire), from which the teacher's logits follow up to a
  constant and half precision's rounding (a probability under about 3e-8 arrives as 0), so a
  coordinator that put patients' images into that request learns what the teacher says about
  them. That reply is attacked as the teacher itself, with the model attacks.
- **naive synthetic pooling**: the same shards, soft labels included, without relabelling.
- **centralized**: the coordinator receives the images themselves; **local only**: nothing.

A `ViewEntry` is one attack on one thing received from one site; `worst` picks the entry with
the highest AUC (scores are oriented: higher means member).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from fedkr.client.auditor import AuditSettings, ReferenceCache, audit_model, audit_synthetic
from fedkr.client.site_data import SiteData
from fedkr.shared.attack_report import AttackResult
from fedkr.shared.classifier import ClassifierConfig, CompactCNN, TrainConfig, build_classifier, train_classifier
from fedkr.shared.device import Device

#: The model attacks of the auditor, the ones a weight upload or a relabel reply is attacked with.
MODEL_ATTACKS = ("loss", "entropy", "rmia", "lira")

__all__ = ["ViewEntry", "fedavg_view", "shards_view", "shard_labels_view", "relabel_view", "worst"]


@dataclass(frozen=True)
class ViewEntry:
    """One attack on one thing the coordinator received from one site."""

    site: str
    received: str  # what was attacked, in words: "round 3 weights", "shards", "shard labels", "relabel reply"
    attack: str
    auc: float
    auc_ci: tuple[float, float]
    tpr_at_1pct_fpr: float
    tpr_at_01pct_fpr: float
    tpr_at_01pct_fpr_ci: tuple[float, float]
    lowest_fpr: float
    num_members: int
    num_nonmembers: int

    @classmethod
    def of(cls, site: str, received: str, result: AttackResult) -> ViewEntry:
        return cls(site, received, result.attack, result.auc, result.auc_ci, result.tpr_at_1pct_fpr,
                   result.tpr_at_01pct_fpr, result.tpr_at_01pct_fpr_ci, result.lowest_fpr, result.num_members,
                   result.num_nonmembers)

    def to_dict(self) -> dict:
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def worst(entries: Iterable[ViewEntry]) -> ViewEntry | None:
    """The entry with the highest AUC, None for none."""
    entries = list(entries)
    return max(entries, key=lambda e: e.auc) if entries else None


def _model_entries(site_index: int, received: str, model: CompactCNN, site: SiteData, settings: AuditSettings,
                   reference: ReferenceCache, device: Device) -> list[ViewEntry]:
    report = audit_model(f"site-{site_index}", model, site.members, site.holdout, settings, references=reference,
                         device=device)
    return [ViewEntry.of(f"site-{site_index}", received, r) for r in report.results if r.attack in MODEL_ATTACKS]


def fedavg_view(uploads: list[list[dict[str, torch.Tensor]]], model_config: ClassifierConfig, sites: list[SiteData],
                settings: AuditSettings, references: list[ReferenceCache], device: Device = None) -> list[ViewEntry]:
    """Every site's every weight upload (`uploads[round][site]`, `FedAvgResult.uploads`) attacked with its own
    members against its holdout. Raises ValueError when a round's uploads do not match the sites."""
    entries: list[ViewEntry] = []
    for round_index, by_site in enumerate(uploads):
        if len(by_site) != len(sites):
            raise ValueError(f"round {round_index + 1} holds {len(by_site)} uploads for {len(sites)} sites")
        for i, (state, site) in enumerate(zip(by_site, sites)):
            model = build_classifier(model_config, 0)
            model.load_state_dict(state)
            model.eval()
            entries += _model_entries(i, f"round {round_index + 1} weights", model, site, settings, references[i], device)
    return entries


def shards_view(images: np.ndarray, site_ids: np.ndarray, sites: list[SiteData], reference: np.ndarray,
                feature_model: CompactCNN, settings: AuditSettings, device: Device = None) -> list[ViewEntry]:
    """Each site's synthetic shards (the pool's `images` whose `site_ids` name it, "site-i") attacked with
    the distance tests and DOMIAS, `reference` (uint8, no member of any site) as the population."""
    entries: list[ViewEntry] = []
    for i, site in enumerate(sites):
        mine = images[np.asarray(site_ids) == f"site-{i}"]
        if len(mine) < 2:
            continue  # the site sent nothing the pool kept: nothing to attack
        results = audit_synthetic(f"site-{i}", mine, site.members, site.holdout, reference, feature_model, settings,
                                  device=device)
        entries += [ViewEntry.of(f"site-{i}", "shards", r) for r in results]
    return entries


def shard_labels_view(images: np.ndarray, soft_labels: np.ndarray, site_ids: np.ndarray, sites: list[SiteData],
                      model_config: ClassifierConfig, train_config: TrainConfig, settings: AuditSettings,
                      references: list[ReferenceCache], device: Device = None) -> list[ViewEntry]:
    """Each site's shards with their soft labels, attacked through the model they teach.

    A shard's soft labels are the site's teacher's softened probabilities on the site's synthetic
    images; trained on, they distil that teacher (knowledge distillation, Hinton et al. 2015), so a
    coordinator learns about the teacher from them even when no relabel reply is sent. Per site,
    a model of `model_config` is trained on that site's shards alone (the pool's `images`, uint8
    (N, H, W, C), and `soft_labels`, float (N, K) rows summing to 1, whose `site_ids` name it,
    "site-i") with `train_config` (the student's recipe), and attacked with the model attacks, its
    members against its holdout, `references[i]` site i's reference models (trained on its real
    holdout, so RMIA here may understate what a coordinator with synthetic references sees). A site
    with fewer than 2 images in the pool is skipped. Returns one `ViewEntry` per attack and site,
    received "shard labels". Raises ValueError when the arrays' lengths differ or `references` does
    not hold one entry per site.
    """
    site_ids = np.asarray(site_ids)
    if not len(images) == len(soft_labels) == len(site_ids):
        raise ValueError(f"{len(images)} images, {len(soft_labels)} soft labels and {len(site_ids)} site ids")
    if len(references) != len(sites):
        raise ValueError(f"{len(references)} reference caches for {len(sites)} sites")
    entries: list[ViewEntry] = []
    for i, site in enumerate(sites):
        mine = site_ids == f"site-{i}"
        if mine.sum() < 2:
            continue  # the site sent nothing the pool kept: nothing to learn from
        model = build_classifier(model_config, train_config.seed)
        train_classifier(model, images[mine], soft_labels[mine], train_config, device=device)
        model.cpu().eval()
        entries += _model_entries(i, "shard labels", model, site, settings, references[i], device)
    return entries


def relabel_view(teachers: list[CompactCNN | None], sites: list[SiteData], settings: AuditSettings,
                 references: list[ReferenceCache], device: Device = None,
                 relabelled_by: Collection[str] | None = None) -> list[ViewEntry]:
    """Each site's relabel reply, for a coordinator that sends patients' images in its one request:
    the site's teacher attacked with the model attacks (the reply's softened probabilities give its
    logits up to a constant). `relabelled_by` names the sites ("site-i") that sent a reply (a site
    left out of the run sent none); None: every site; a name that is no site's selects nothing. A
    site whose teacher is None (it failed the fit) sent no reply."""
    entries: list[ViewEntry] = []
    for i, (teacher, site) in enumerate(zip(teachers, sites, strict=True)):
        if teacher is not None and (relabelled_by is None or f"site-{i}" in relabelled_by):
            entries += _model_entries(i, "relabel reply", teacher, site, settings, references[i], device)
    return entries
