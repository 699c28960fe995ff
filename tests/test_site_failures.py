"""Sites that cannot take part: refused before any training where the data is spread over too many
simulated sites, and named by site, with their reason, when they fail or leave a run."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from fedkr.client.site_data import MIN_HOLDOUT, MIN_MEMBERS, SiteDataSpec, load_site_data
from fedkr.shared.config import RunConfig
from fedkr.shared.data import DataError, load_dataset
from fedkr.simulation import check_partition, site_sizes
from helpers import MEDMNIST


def breast_like(path, n_train: int = 546, n_test: int = 156, seed: int = 0):  # type: ignore[no-untyped-def]
    """A BreastMNIST-shaped file (546 training images, two classes at about 27:73), at 8x8 to stay small."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n_train + n_test) > 0.27).astype(np.int64)[:, None]
    images = rng.integers(0, 256, (n_train + n_test, 8, 8), dtype=np.uint8)
    np.savez(path, train_images=images[:n_train], train_labels=labels[:n_train],
             test_images=images[n_train:], test_labels=labels[n_train:])
    return path


def config_for(data, sites: int, partition: str = "iid") -> RunConfig:  # type: ignore[no-untyped-def]
    return RunConfig(data=str(data), sites=sites, partition=partition, run_id="check")


def test_precheck_refuses_sites_below_the_minimum_a_site_needs(tmp_path):
    """12 sites of about 45 images: 10 would hold 9 holdout images, one fewer than a site needs (as BreastMNIST's did)."""
    data = breast_like(tmp_path / "breast_like.npz")
    splits = load_dataset(str(data))
    with pytest.raises(DataError) as caught:
        check_partition(splits, config_for(data, 12))
    message = str(caught.value)
    assert "10 of 12 sites would hold too few images" in message and "use fewer sites or a larger holdout" in message
    assert "site-0 (" in message and "holdout)" in message
    assert f"at least {MIN_MEMBERS} members and {MIN_HOLDOUT} holdout images" in message and "\n" not in message
    assert check_partition(splits, config_for(data, 6)) == [91] * 6


@pytest.mark.parametrize("sites, partition", [(4, "iid"), (12, "iid"), (8, "dirichlet:0.5"), (12, "dirichlet:0.5")])
def test_precheck_agrees_with_every_site(tmp_path, sites, partition):
    """The pre-check accepts exactly when every simulated site loads its data, and with the same sizes."""
    data = breast_like(tmp_path / "breast_like.npz")
    config = config_for(data, sites, partition)
    expected = site_sizes(load_dataset(str(data)), config)
    loaded = []
    for index in range(sites):
        try:
            site = load_site_data(SiteDataSpec(str(data), index, sites, partition, config.seed, config.holdout_fraction))
        except DataError:
            loaded.append(None)
        else:
            loaded.append((len(site.members), len(site.holdout)))
    short = [m < MIN_MEMBERS or h < MIN_HOLDOUT for m, h in expected]
    assert [size is None for size in loaded] == short
    assert [size for size in loaded if size is not None] == [s for s, bad in zip(expected, short) if not bad]
    try:
        check_partition(load_dataset(str(data)), config)
        accepted = True
    except DataError:
        accepted = False
    assert accepted == (not any(short))


@pytest.mark.medmnist
@pytest.mark.skipif(not (MEDMNIST / "breastmnist.npz").is_file(), reason="../shared/data/medmnist not present")
def test_breastmnist_over_12_sites_is_refused_before_training():
    data = MEDMNIST / "breastmnist.npz"
    config = RunConfig(data=str(data), sites=12, run_id="check")  # the default partition, dirichlet:0.5
    with pytest.raises(DataError, match="of 12 sites would hold too few images"):
        check_partition(load_dataset(str(data)), config)
    assert len(check_partition(load_dataset(str(data)), RunConfig(data=str(data), sites=4, run_id="check"))) == 4


def test_cli_refuses_too_many_sites_in_one_line_before_starting(tmp_path):
    data = breast_like(tmp_path / "breast_like.npz")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "fedkr", "simulate", "--data", str(data), "--sites", "12",
                             "--partition", "iid", "--out", str(tmp_path / "runs")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "sites would hold too few images" in lines[0] and "Traceback" not in result.stdout
    assert not (tmp_path / "runs").exists(), "no run started"
    assert time.monotonic() - started < 120


def flower_message(kind: str, content):  # type: ignore[no-untyped-def]
    from flwr.app import Message, Metadata

    metadata = Metadata(run_id=1, message_id="m1", src_node_id=0, dst_node_id=7, reply_to_message_id="", group_id="0",
                        created_at=time.time(), ttl=3600.0, message_type=kind)
    return Message(content, metadata=metadata)


def test_a_site_that_cannot_load_its_data_answers_in_its_own_name(tmp_path):
    """Through the ClientApp, as a SuperNode runs it: the reply names the site and says why, and is ledgered."""
    from flwr.app import Context, RecordDict

    from fedkr import flower_records as rec
    from fedkr.client.flower_app import build_client_app
    from fedkr.server.link import refusal_or
    from fedkr.shared import codec
    from fedkr.shared.classifier import TrainConfig
    from fedkr.shared.generator import GeneratorConfig
    from fedkr.shared.reports import FitPlan, Refused

    small = breast_like(tmp_path / "small.npz", n_train=30, n_test=10)
    state = tmp_path / "state"
    node = {"data-path": str(small), "site-name": "hospital-b", "state-dir": str(state)}
    context = Context(run_id=1, node_id=7, node_config=node, state=RecordDict(), run_config={"run-id": "r1"})
    plan = codec.encode_fit_plan(FitPlan("r1", TrainConfig(), GeneratorConfig()))
    reply = build_client_app()(flower_message("train", rec.to_record(plan)), context)
    assert not reply.has_error(), reply.error
    with pytest.raises(Refused) as caught:
        refusal_or(rec.from_record(reply.content), None)
    refusal = caught.value.refusal
    assert refusal.site_id == "hospital-b" and refusal.request == "fit" and not refusal.setting
    assert str(caught.value) == "could not fit: its data could not be loaded (DataError; details in the site's log)"
    assert str(small) not in refusal.reason, "no path of the site leaves it"
    ledger = [json.loads(line) for line in (state / "ledger.jsonl").read_text().splitlines()]
    assert [(e["kind"], e["run"], e["site"]) for e in ledger] == [("refusal", "r1", "hospital-b")]


def test_a_site_refuses_a_plan_that_sets_its_noise_and_says_why_in_the_run(tmp_path, caplog):
    """A plan asking for repeatable DP noise is refused over Flower with fedkr's reason and the plan's run id;
    one with a DP setting the site does not know is refused too, and only the site's log names the setting."""
    from flwr.app import Context, RecordDict

    from fedkr import flower_records as rec
    from fedkr.client.flower_app import build_client_app
    from fedkr.server.link import refusal_or
    from fedkr.shared import codec
    from fedkr.shared.classifier import TrainConfig
    from fedkr.shared.dp import DPConfig
    from fedkr.shared.generator import GeneratorConfig
    from fedkr.shared.reports import FitPlan, Refused
    from fedkr.v1 import messages_pb2 as pb

    data = breast_like(tmp_path / "breast.npz")
    state = tmp_path / "state"
    node = {"data-path": str(data), "site-name": "hospital-c", "state-dir": str(state)}
    context = Context(run_id=1, node_id=7, node_config=node, state=RecordDict(), run_config={"run-id": "r2"})
    plan = codec.encode_fit_plan(FitPlan("r2", TrainConfig(), GeneratorConfig(), dp=DPConfig(8.0, None, 1.0)))
    message = codec.unwrap(plan, codec.KIND_FIT_PLAN, pb.FitPlan, codec.MAX_PLAN_BYTES)
    message.dp_json = '{"target_epsilon": 8.0, "repeatable": true}'
    plan = codec.wrap(codec.KIND_FIT_PLAN, message)
    reply = build_client_app()(flower_message("train", rec.to_record(plan)), context)
    assert not reply.has_error(), reply.error
    with pytest.raises(Refused) as caught:
        refusal_or(rec.from_record(reply.content), None)
    assert caught.value.refusal.site_id == "hospital-c"
    assert str(caught.value) == ("could not fit: refused fit plan: a plan may not set the DP setting 'repeatable': noise "
                                 "seeded from the run's seed is known to the coordinator, so only the site itself may "
                                 "choose it")
    ledger = [json.loads(line) for line in (state / "ledger.jsonl").read_text().splitlines()]
    assert [(e["kind"], e["run"], e["site"]) for e in ledger] == [("refusal", "r2", "hospital-c")]
    assert not (state / "runs" / "r2").exists(), "nothing was trained"
    message.dp_json = '{"target_epsilon": 8.0, "noise_multiplier": 0.1}'
    with caplog.at_level(logging.WARNING, logger="fedkr.client.site"):
        reply = build_client_app()(flower_message("train", rec.to_record(codec.wrap(codec.KIND_FIT_PLAN, message))),
                                   context)
    with pytest.raises(Refused) as caught:
        refusal_or(rec.from_record(reply.content), None)
    assert "does not know" in str(caught.value) and "noise_multiplier" not in str(caught.value)
    assert "unknown DP settings 'noise_multiplier'" in caplog.text and "the refused plan of run r2" in caplog.text
    assert not (state / "runs" / "r2").exists()


@pytest.mark.slow  # a whole run, in process
def test_a_site_dropped_mid_run_is_named_in_summary_manifest_and_audit(tmp_path):
    """A site that loses its models after fit (its state folder gone, as when its disk or process is lost)
    is dropped in round 1; the release says so wherever a reader looks."""
    from fedkr.cli_common import left_out_lines
    from fedkr.client.site import Site
    from fedkr.inprocess import InProcessLink
    from fedkr.server.coordinator import Coordinator
    from helpers import tiny_run_config

    sites = [Site(f"site-{i}", load_site_data(SiteDataSpec("digits", i, 3, "iid", 0, 0.2)), tmp_path / f"site-{i}")
             for i in range(3)]
    config = tiny_run_config(tmp_path / "runs", run_id="lost", rounds=1, generator_steps=2, teacher_epochs=1,
                             student_epochs=1, samples_per_class=3, ipc=2, audit_max_auc=1.0, audit_max_tpr=1.0,
                             audit_max_distance_auc=1.0, audit_max_generator_auc=1.0, audit_min_utility=0.0,
                             audit_min_adjusted_balanced_accuracy=0.0)  # mechanics, at one epoch
    coordinator = Coordinator(config, None)
    link = InProcessLink(sites)
    record = coordinator.start()
    record.fit = coordinator.fit(record, link)
    record.active = dict(record.fit.reports)
    shutil.rmtree(sites[2].state_dir / "runs")
    sites[2]._models = None  # a process that starts again holds nothing in memory either
    coordinator.recycle(record, link)
    coordinator.distill(record)
    coordinator.relabel(record, link)
    coordinator.train_student(record)
    coordinator.audit(record, link)
    outcome = coordinator.release(record)

    assert outcome.released
    left = outcome.metrics["sites_left_out"]
    assert list(left) == ["site-2"] and left["site-2"]["stage"] == "synthesis"
    assert "round 1" in left["site-2"]["reason"] and "not been fitted" in left["site-2"]["reason"]
    assert any(line.startswith("site-2 left at synthesis: round 1") for line in left_out_lines(left))
    manifest = json.loads((outcome.release_dir / "manifest.json").read_text())
    assert manifest["contributors"] == ["site-0", "site-1"] and manifest["sites_left_out"] == left
    metrics = json.loads((outcome.release_dir / "metrics.json").read_text())
    assert metrics["sites_left_out"] == left
    audit = json.loads((outcome.release_dir / "audit.json").read_text())
    assert audit["sites_left_out"] == left and set(audit["sites"]) == {"site-0", "site-1"}
    page = (outcome.release_dir / "audit.html").read_text()
    assert "1 site(s) left the run before the audit" in page and "<td>site-2</td><td>synthesis</td>" in page
