"""The whole pipeline on digits, in process: fit, recycle, distill, student, audit, release."""

import json
from dataclasses import replace

import numpy as np
import pytest

from fedkr.server import coordinator as coordinator_module
from fedkr.server import relabel as relabel_module
from fedkr.server.coordinator import Coordinator
from fedkr.inprocess import InProcessLink
from fedkr.shared import codec
from fedkr.shared.release_inspect import RELEASE_FILES, inspect_release
from fedkr.shared.data import load_digits_splits
from fedkr.shared.shard import ShardSpec, SynthesisRequest
from helpers import ledger_matches, tiny_run_config

#: Whole runs or many model fits: outside the fast loop (`pytest -m "not slow"`).
pytestmark = pytest.mark.slow


def test_release_bundle_complete_and_consistent(inprocess_run):
    config, outcome = inprocess_run
    assert outcome.released and outcome.refusal_path is None
    release = outcome.release_dir
    assert release == config.run_dir / "release"
    for name in (*RELEASE_FILES, "manifest.json"):
        assert (release / name).is_file(), name
    result = inspect_release(release)
    assert result.all_ok
    with np.load(release / "distilled.npz") as data:
        assert data["images"].dtype == np.uint8 and data["images"].shape[1:] == (8, 8, 1)
        assert np.allclose(data["soft_labels"].sum(1), 1, atol=1e-4)
        assert (np.bincount(data["hard_labels"], minlength=10) == config.ipc).all()
        assert list(data["class_names"]) == [str(i) for i in range(10)]
    metrics = json.loads((release / "metrics.json").read_text())
    assert metrics["pool_size_by_round"] == {"1": 600, "2": 600}
    assert set(metrics["audit"]["sites"]) == {"site-0", "site-1", "site-2"}
    assert metrics["relabelled_by"] == ["site-0", "site-1", "site-2"] and metrics["selection"] == "spectral"
    assert metrics["relabel_combine"] == "support"
    for quality in metrics["synthesis_quality"].values():
        assert set(quality) == {"teacher_agreement", "rejection_rate", "precision", "recall"}
        assert all(0.0 <= v <= 1.0 for v in quality.values()), quality
    for site in metrics["audit"]["sites"].values():
        attacks = {"loss", "entropy", "rmia", "dcr_pixel", "dcr_feature"}
        assert set(site) >= attacks | {"utility"}
        assert all(site[a]["auc_ci"][1] <= config.audit_max_auc for a in attacks)
        # the white-box attack on the site's own generator ran too, under its own rule
        assert site["generator_loss"]["auc_ci"][1] <= config.audit_max_generator_auc
    audit = json.loads((release / "audit.json").read_text())
    assert audit["schema"] == "fedkr.audit/1" and audit["decision"]["passed"] is True
    manifest = json.loads((release / "manifest.json").read_text())
    for name in ("distilled.npz", "student.safetensors", "student_config.json"):
        assert audit["release"]["artefacts"][name] == manifest["files"][name]["sha256"]
    assert manifest["audit"] == {"report": "audit.json", "passed": True}


def test_student_learns_from_synthetic_data_only(inprocess_run):
    _, outcome = inprocess_run
    # 10 classes: chance is 0.1. A student that learned nothing from the distilled set stays near it.
    assert outcome.metrics["student_test_accuracy"] > 0.6
    agreement = [s["summary"]["teacher_agreement"] for s in outcome.metrics["shards"]]
    assert np.mean(agreement) > 0.5, "generated digits look like their class to the site teachers"


def test_each_request_gives_fresh_images(inprocess_run, digits_sites):
    config, _ = inprocess_run
    site = digits_sites[0]
    request = SynthesisRequest(config.run_id, 9, (2,) * 10, 4.0)
    a, b = (codec.decode_shard(site.synthesize(request), site_id="site-0", run_id=config.run_id, round=9,
                               spec=ShardSpec((8, 8, 1), 10)) for _ in range(2))
    assert not (a.images == b.images).all()
    assert len(a) == 20 and (a.hard_labels == np.repeat(np.arange(10), 2)).all()


def test_site_ledger_lists_everything_that_left(inprocess_run, digits_sites):
    entries = [json.loads(line) for line in (digits_sites[1].state_dir / "ledger.jsonl").read_text().splitlines()]
    kinds = [e["kind"] for e in entries if e["run"] == "test-run"]
    assert kinds[:5] == ["metrics", "shard", "shard", "labels", "metrics"]  # fit, 2 rounds, relabel, audit


def test_each_ledger_line_hashes_the_bytes_that_left_the_site(inprocess_run, inprocess_sent, digits_sites):
    config, _ = inprocess_run
    for site in digits_sites:
        sent = inprocess_sent[site.site_id]
        assert len(sent) == 5  # fit, 2 rounds, relabel, audit: each reached the coordinator as these bytes
        entries = ledger_matches(site.state_dir / "ledger.jsonl", config.run_id, sent)
        assert [e["kind"] for e in entries] == ["metrics", "shard", "shard", "labels", "metrics"]


def test_each_site_keeps_its_shard_check_record_of_the_images_it_sent_and_its_probe(inprocess_run, inprocess_sent,
                                                                                    digits_sites):
    """The shard check tests a shard together with the run's earlier ones and a probe of one more shard drawn
    with the first: the site's record holds, for each member and held-out image, the distance to the closest
    image that left or was probed."""
    from fedkr.client.shard_check import ShardCheckRecord
    from fedkr.client.site import SHARD_CHECK_RECORD, run_dir
    from fedkr.shared.attacks import closest_pixel_distances

    config, _ = inprocess_run
    exact = 0
    for site in digits_sites:
        shards = [codec.decode_shard(blob, site_id=site.site_id, run_id=config.run_id, round=rnd,
                                     spec=ShardSpec((8, 8, 1), 10)) for rnd, blob in enumerate(inprocess_sent[site.site_id][1:3], 1)]
        sent = np.concatenate([shard.images for shard in shards])
        members, holdout = site.data.members.images, site.data.holdout.images
        kept = ShardCheckRecord.load(run_dir(site.state_dir, config.run_id) / SHARD_CHECK_RECORD, members, holdout)
        assert kept.num_probe == len(shards[0]), "the probe is one shard as large as the run's first"
        # later tests may send more in this run: the record's distances are at most those to these shards
        assert kept.num_images >= len(sent)
        expected = closest_pixel_distances(members, sent), closest_pixel_distances(holdout, sent)
        assert (kept.members <= expected[0] + 1e-9).all() and (kept.holdout <= expected[1] + 1e-9).all()
        # the probe's images are others than those sent: closer to some member than anything sent
        assert (kept.members < expected[0] - 1e-9).any()
        exact += kept.num_images == len(sent)
    assert exact, "at least one site sent nothing but the run's two shards"


@pytest.mark.parametrize("damage", ["missing", "empty", "behind its ledger"])
def test_a_site_that_lost_its_record_of_sent_images_refuses_to_send_more(inprocess_run, digits_sites, damage):
    """The shard check fails closed: without the run's earlier images it cannot test what the coordinator holds,
    and a record that counts fewer images than the ledger (an older copy) has forgotten some."""
    from fedkr.client.shard_check import SHARD_CHECK_KEY, ShardCheckRecord
    from fedkr.client.site import SHARD_CHECK_RECORD, run_dir

    config, _ = inprocess_run
    site = digits_sites[2]
    path = run_dir(site.state_dir, config.run_id) / SHARD_CHECK_RECORD
    kept = path.read_bytes()
    if damage == "missing":
        path.unlink()
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        members, holdout = site.data.members.images, site.data.holdout.images
        ShardCheckRecord.nothing_sent(members, holdout).adding(members[:5], members, holdout).save(path)
    try:
        reply = site.synthesize(SynthesisRequest(config.run_id, 8, (2,) * 10, 4.0))
        assert codec.kind_of(reply) == codec.KIND_REFUSAL
        refusal, _ = codec.decode_refusal(reply)
        assert refusal.setting == SHARD_CHECK_KEY and "record of the images it sent" in refusal.reason
    finally:
        path.write_bytes(kept)


def test_with_the_check_off_a_site_draws_no_probe_and_still_keeps_its_record(tmp_path, inprocess_run, digits_sites):
    """A limit of 1 tests nothing and draws no probe; the record of what left is kept, so that turning the check
    on later in the run tests every shard sent."""
    from fedkr.client.shard_check import ShardCheckRecord
    from fedkr.client.site import SHARD_CHECK_RECORD, Site, run_dir

    fitted, _ = inprocess_run
    source = digits_sites[0]
    site = Site("site-0", source.data, tmp_path / "site-0", shard_max_auc=1.0)
    site.reuse_fit(run_dir(source.state_dir, fitted.run_id), "check-off")
    for rnd in (1, 2):
        assert codec.kind_of(site.synthesize(SynthesisRequest("check-off", rnd, (2,) * 10, 4.0))) == codec.KIND_SHARD
    record = ShardCheckRecord.load(run_dir(site.state_dir, "check-off") / SHARD_CHECK_RECORD,
                                   source.data.members.images, source.data.holdout.images)
    assert (record.num_images, record.num_probe) == (40, 0)


def test_audit_failure_writes_refusal_and_no_release(tmp_path, digits_sites, inprocess_run):
    config = tiny_run_config(tmp_path, run_id="strict", audit_max_auc=0.01, rounds=1, generator_steps=1)
    outcome = Coordinator(config, load_digits_splits().test).run(InProcessLink(digits_sites))
    assert not outcome.released and not (config.run_dir / "release").exists()
    refusal = json.loads(outcome.refusal_path.read_text())
    assert refusal["released"] is False
    assert any(r.startswith("site-0: loss attack AUC") and "> 0.010" in r for r in refusal["reasons"])
    audit = json.loads((config.run_dir / "audit.json").read_text())
    assert audit["decision"]["passed"] is False and (config.run_dir / "audit.html").is_file()
    assert {"site": "site-0", "attack": "loss", "metric": "auc_upper", "threshold": 0.01} .items() <= next(
        f for f in audit["decision"]["failures"] if f["site"] == "site-0" and f["attack"] == "loss").items()
    leftovers = [p.name for p in config.run_dir.iterdir()]
    assert not any(name.endswith((".npz", ".safetensors")) for name in leftovers), leftovers


class BrokenStudentCoordinator(Coordinator):
    """Trains the student, then swaps it for an untrained network: a candidate that teaches nothing."""

    def train_student(self, record):
        from fedkr.shared.classifier import build_classifier

        trained = super().train_student(record)
        record.student = build_classifier(trained.config, seed=12345)
        return record.student


def test_the_utility_check_passes_a_normal_run_and_refuses_a_student_broken_on_purpose(tmp_path, digits_sites, inprocess_run):
    config, normal = inprocess_run
    utility = normal.metrics["audit"]["utility"]
    assert normal.released and utility["utility_ratio"] >= config.audit_min_utility > 0
    assert utility["num_examples"] == sum(len(s.data.holdout) for s in digits_sites)
    assert set(normal.metrics["audit"]["sites"]["site-0"]["utility"]) >= {"student", "teacher", "utility_ratio"}

    broken = tiny_run_config(tmp_path, run_id="broken-student")
    for site in digits_sites:  # the same sites, models and data: only the student differs
        site.reuse_fit(site.state_dir / "runs" / config.run_id, broken.run_id)
    outcome = BrokenStudentCoordinator(broken, load_digits_splits().test).run(InProcessLink(digits_sites), fit=normal.record.fit)
    assert not outcome.released and not (broken.run_dir / "release").exists()
    reasons = json.loads(outcome.refusal_path.read_text())["reasons"]
    assert len(reasons) == 2, reasons  # below the floor on its own figure, and below the share of the teachers'
    assert reasons[0].startswith("the student's adjusted balanced accuracy is") and reasons[1].startswith("the student keeps")
    assert all("a release that teaches this little is not released" in r for r in reasons)
    audit = json.loads((broken.run_dir / "audit.json").read_text())
    assert audit["utility"]["utility_ratio"] < config.audit_min_utility
    assert "Utility check" in (broken.run_dir / "audit.html").read_text()


def test_failing_site_is_left_out_of_synthesis_but_blocks_nothing_else(tmp_path, digits_sites):
    class BrokenSite:
        site_id = "site-x"

        def fit(self, plan):
            raise RuntimeError("disk full")

    link = InProcessLink([*digits_sites[:2], BrokenSite()])  # type: ignore[list-item]
    config = tiny_run_config(tmp_path, run_id="broken", rounds=1, generator_steps=1, teacher_epochs=1, student_epochs=1)
    outcome = Coordinator(config, None).run(link)
    assert outcome.metrics["sites_failed_fit"] == {"site-x": "disk full"}
    assert set(outcome.metrics["audit"]["sites"]) == {"site-0", "site-1"}


def test_tampered_release_is_detected(inprocess_run, tmp_path):
    import shutil

    _, outcome = inprocess_run
    copy = tmp_path / "release"
    shutil.copytree(outcome.release_dir, copy)
    with open(copy / "student_config.json", "a") as fh:
        fh.write(" ")
    (copy / "contact_sheet.png").unlink()
    checks = inspect_release(copy).file_checks
    assert checks["student_config.json"] == "HASH MISMATCH" and checks["contact_sheet.png"] == "MISSING"
    assert checks["distilled.npz"] == "OK"


def test_release_never_overwritten(inprocess_run):
    from fedkr.server.release import write_release

    _, outcome = inprocess_run
    with pytest.raises(FileExistsError):
        write_release(outcome.release_dir, None, None, {}, None)  # type: ignore[arg-type]


def test_same_seed_same_site_results(tmp_path):
    """Initial weights and synthesis seeds follow the run's seed, whatever ran before in the process."""
    import torch

    from fedkr.client.site import Site
    from fedkr.client.site_data import SiteDataSpec, load_site_data
    from fedkr.shared.reports import FitPlan

    config = tiny_run_config(tmp_path, run_id="repeat", generator_steps=5, teacher_epochs=1)
    plan = FitPlan(run_id="repeat", teacher=config.teacher_config(), generator=config.generator_config())
    data = load_site_data(SiteDataSpec("digits", 0, 3, "iid", 0, 0.2))
    shards = []
    for attempt in range(2):
        torch.rand(attempt + 3)  # disturb the global random state between the two sites
        site = Site("site-0", data, tmp_path / f"state-{attempt}")
        site.fit(plan)
        sent = site.synthesize(codec.encode_synthesis_request(SynthesisRequest("repeat", 1, (2,) * 10, 4.0)))
        shards.append(codec.decode_shard(sent, site_id="site-0", run_id="repeat", round=1, spec=ShardSpec((8, 8, 1), 10)))
    assert (shards[0].images == shards[1].images).all()
    assert (shards[0].soft_labels == shards[1].soft_labels).all()


def test_run_with_dp_reports_each_sites_epsilon(tmp_path, digits_sites):
    config = tiny_run_config(tmp_path, run_id="private", rounds=1, generator_steps=20, teacher_epochs=2,
                             student_epochs=2, dp_epsilon=8.0)
    outcome = Coordinator(config, None).run(InProcessLink(digits_sites))
    audit_dir = outcome.release_dir if outcome.released else config.run_dir
    audit = json.loads((audit_dir / "audit.json").read_text())
    for sid in ("site-0", "site-1", "site-2"):
        dp = audit["sites"][sid]["dp"]
        teacher, generator = dp["parts"]["teacher"], dp["parts"]["generator"]
        assert 0 < teacher["epsilon"] <= 4.0 + 1e-6 and 0 < generator["epsilon"] <= 4.0 + 1e-6
        assert dp["epsilon"] == pytest.approx(teacher["epsilon"] + generator["epsilon"]) and dp["target_epsilon"] == 8.0
        assert teacher["noise_multiplier"] > 0 and dp["delta"] < 1 / 380
        assert outcome.metrics["sites"][sid]["dp"]["epsilon"] == dp["epsilon"]
    assert "DP" in (audit_dir / "audit.html").read_text()


def _coordinator_on_the_fit(tmp_path, digits_sites, inprocess_run, run_id: str, **overrides):
    """A coordinator, its in-process link and a record whose fit is `inprocess_run`'s, the sites reusing
    their fitted models: one round of 12 images per class per site, IPC 4, one student epoch."""
    fitted, outcome = inprocess_run
    config = tiny_run_config(tmp_path, run_id=run_id, rounds=1, samples_per_class=12, student_epochs=1, ipc=4,
                             **overrides)
    for site in digits_sites:
        site.reuse_fit(site.state_dir / "runs" / fitted.run_id, config.run_id)
    coordinator, link = Coordinator(config, None), InProcessLink(digits_sites)
    record = coordinator.start()
    record.fit = outcome.record.fit
    record.active = dict(record.fit.reports)
    return coordinator, link, record


@pytest.mark.parametrize("limit", [None, 50])
def test_by_default_the_student_trains_on_every_pool_image_up_to_what_a_site_relabels(tmp_path, digits_sites, inprocess_run,
                                                                                     monkeypatch, limit):
    """student-ipc 0 (the default): the student's set is the whole pool, or as much of it as fits the
    images a site relabels, and the release holds IPC per class among it (on the fit of `inprocess_run`)."""
    if limit is not None:
        monkeypatch.setattr(coordinator_module, "MAX_RELABEL_IMAGES", limit)
    coordinator, link, record = _coordinator_on_the_fit(tmp_path, digits_sites, inprocess_run, f"whole-pool-{limit}",
                                                        student_ipc=0)
    pool = coordinator.recycle(record, link)
    coordinator.distill(record)
    coordinator.relabel(record, link)
    student_set, released = record.student_set, record.distilled
    if limit is None:
        assert sorted(student_set.source_index.tolist()) == list(range(len(pool)))
    else:
        assert 4 * 10 <= len(student_set) <= limit < len(pool)
    assert (released.per_class() == 4).all() and set(released.source_index) <= set(student_set.source_index)
    assert record.relabelled_by == ["site-0", "site-1", "site-2"]


def test_relabel_combine_chooses_how_the_sites_labels_are_combined(tmp_path, digits_sites, inprocess_run, monkeypatch):
    """relabel-combine label-shift: the coordinator combines the sites' replies by `label_shift_posterior`, given
    every answering site's member counts per class, and records the rule in its metrics (on the fit of `inprocess_run`)."""
    coordinator, link, record = _coordinator_on_the_fit(tmp_path, digits_sites, inprocess_run, "label-shift",
                                                        student_ipc=8, relabel_combine="label-shift")
    coordinator.recycle(record, link)
    coordinator.distill(record)
    counts_given = []
    original = relabel_module.label_shift_posterior
    monkeypatch.setattr(relabel_module, "label_shift_posterior",
                        lambda probs, counts, temperature: counts_given.append(counts) or original(probs, counts, temperature))
    monkeypatch.setattr(relabel_module, "combine_labels", lambda *a, **k: pytest.fail("the support rule ran"))
    coordinator.relabel(record, link)
    expected = np.array([record.fit.reports[sid].member_class_counts for sid in ("site-0", "site-1", "site-2")])
    assert len(counts_given) == 1 and np.array_equal(counts_given[0], expected)
    assert record.relabelled_by == ["site-0", "site-1", "site-2"]
    assert np.allclose(record.student_set.soft_labels.sum(1), 1.0, atol=1e-5)


def test_student_ipc_trains_the_student_on_a_larger_set_than_the_release_holds(tmp_path, digits_sites, inprocess_run,
                                                                                 monkeypatch):
    """student-ipc: the student trains on more images than the distilled set, which is chosen among them,
    and both carry the sites' relabelled soft labels (on the fit of `inprocess_run`); the run's drawn-class-weight
    reaches the student's training."""
    coordinator, link, record = _coordinator_on_the_fit(tmp_path, digits_sites, inprocess_run, "student-ipc", student_ipc=8)
    coordinator.recycle(record, link)
    shard_labels = coordinator.distill(record).soft_labels.copy()
    coordinator.relabel(record, link)
    student_set, released = record.student_set, record.distilled

    assert (student_set.per_class() == 8).all() and (released.per_class() == 4).all()
    assert set(released.source_index) < set(student_set.source_index)
    np.testing.assert_array_equal(released.images, student_set.images[record.released_rows])
    np.testing.assert_array_equal(released.soft_labels, student_set.soft_labels[record.released_rows])
    assert record.relabelled_by == ["site-0", "site-1", "site-2"] and not np.allclose(released.soft_labels, shard_labels)
    trained_on = []
    original = coordinator_module.train_student
    monkeypatch.setattr(coordinator_module, "train_student",
                        lambda distilled, *a, **k: trained_on.append((len(distilled), k.get("drawn_class_weight")))
                        or original(distilled, *a, **k))
    coordinator.train_student(record)
    coordinator.config = replace(coordinator.config, drawn_class_weight=0.5)
    coordinator.train_student(record)
    assert trained_on == [(80, 0.0), (80, 0.5)]
