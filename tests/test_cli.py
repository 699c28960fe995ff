"""The `fedkr` command as a user meets it: one-line errors, exit codes, inspect."""

import shutil
import subprocess
import sys

import numpy as np
import pytest


def fedkr(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedkr", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["simulate", "--data", "/nonexistent/blood.npz"], "no such file"),
        (["simulate", "--data", "digits", "--partition", "zipf"], "expected 'iid' or 'dirichlet:ALPHA'"),
        (["simulate", "--data", "digits", "--rounds", "0"], "rounds must be at least 1"),
        (["simulate", "--data", "digits", "--sites", "500"], "use fewer sites"),
        (["inspect", "/nonexistent"], "no manifest.json"),
    ],
)
def test_bad_input_is_one_line_without_traceback(args, expected):
    result = fedkr(*args)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1


def test_bench_resume_without_an_interrupted_bench_and_a_rerun_over_one_are_one_line(tmp_path):
    finished = tmp_path / "finished"
    finished.mkdir()
    (finished / "bench.json").write_text("{}")
    runs = [fedkr("bench", "--out", str(tmp_path), "--resume"), fedkr("bench", "--out", str(finished), "--resume")]
    (tmp_path / "bench-progress.json").write_text("{}")
    runs += [fedkr("bench", "--out", str(tmp_path)), fedkr("bench", "--out", str(tmp_path), "--resume")]
    expected = ["no interrupted bench to resume", "holds a finished bench (bench.json): nothing to resume",
                "holds an interrupted bench: add --resume", "not a bench progress file"]
    for run, message in zip(runs, expected, strict=True):
        assert run.returncode == 2 and message in run.stderr, run.stderr
        assert "Traceback" not in run.stderr and len([line for line in run.stderr.splitlines() if line.strip()]) == 1


def test_bad_npz_named_in_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    result = fedkr("simulate", "--data", str(bad))
    assert result.returncode == 2 and str(bad) in result.stderr and "Traceback" not in result.stderr


def test_the_leaky_demo_differs_from_the_demo_only_by_its_generators_dp():
    from dataclasses import replace

    from fedkr.cli import demo_config

    demo, leaky = demo_config(None, 3, False), demo_config(None, 3, True)
    assert demo.dp_config() is not None and demo.dp_config().models == "generator" and demo.seed == 3
    assert leaky.dp_config() is None
    assert replace(leaky, run_id=demo.run_id, dp_epsilon=demo.dp_epsilon) == demo


def test_the_leaky_demo_turns_the_sites_shard_check_off_and_the_demo_keeps_it():
    from fedkr.cli import demo_node_config
    from fedkr.client.node_config import SiteSettings
    from fedkr.client.shard_check import DEFAULT_MAX_AUC

    run = {"data": "digits", "out": "/tmp/unused"}
    node = {"partition-id": 0, "num-partitions": 3}
    assert demo_node_config(False) is None
    assert SiteSettings.parse(run, node, 1).shard_max_auc == DEFAULT_MAX_AUC
    assert SiteSettings.parse(run, {**node, **demo_node_config(True)}, 1).shard_max_auc == 1.0


def test_bad_dp_models_is_one_line():
    result = fedkr("simulate", "--dp-models", "teacher")
    assert result.returncode == 2 and "dp-models must be one of" in result.stderr and "Traceback" not in result.stderr


def test_help_lists_commands():
    result = fedkr("--help")
    assert result.returncode == 0
    for command in ("demo", "simulate", "inspect", "audit"):
        assert command in result.stdout


def test_inspect_reports_hashes(inprocess_run, tmp_path):
    _, outcome = inprocess_run
    ok = fedkr("inspect", str(outcome.release_dir))
    assert ok.returncode == 0, ok.stderr
    assert "audit: PASSED" in ok.stdout and "IPC (images per class): 10" in ok.stdout
    rows = {line.split()[1]: line.split()[3] for line in ok.stdout.splitlines() if line.startswith("│")}
    assert rows == {name: "OK" for name in ("distilled.npz", "student.safetensors", "student_config.json", "metrics.json",
                                            "contact_sheet.png", "audit.json", "audit.html")}
    copy = tmp_path / "r"
    shutil.copytree(outcome.release_dir, copy)
    (copy / "distilled.npz").write_bytes(b"tampered")
    bad = fedkr("inspect", str(copy))
    assert bad.returncode == 1 and "HASH MISMATCH" in bad.stdout


def test_standalone_audit_repeats_the_runs_audit_of_a_site(inprocess_run, digits_sites, tmp_path):
    import json

    from fedkr.client.site import dp_summary
    from fedkr.shared.dp import DPConfig, DPReport

    config, outcome = inprocess_run
    site = digits_sites[1]
    # the site's DP record of the run, as a private fit writes it, goes into the standalone audit too
    state_dir = tmp_path / "state"
    shutil.copytree(site.state_dir, state_dir)
    spent = DPReport(3.9, 1e-4, 1.2, 1.0, 0.1, 200, "rdp", 380)
    record = dp_summary(DPConfig(8.0), spent, spent)
    (state_dir / "runs" / config.run_id / "dp.json").write_text(json.dumps(record))
    result = fedkr("audit", str(outcome.release_dir), "--data", "digits", "--sites", "3", "--site-index", "1",
                   "--partition", "iid", "--site-name", "site-1", "--state-dir", str(state_dir),
                   "--out", str(tmp_path / "a"), timeout=300)
    audit = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert result.returncode == (0 if audit["decision"]["passed"] else 3), result.stderr
    assert (tmp_path / "a" / "audit.html").is_file() and "verdict" in result.stdout
    mine = {a["attack"]: a for a in audit["sites"]["site-1"]["attacks"]}
    assert audit["sites"]["site-1"]["settings"]["feature_space"] == "site teacher"
    in_run = outcome.metrics["audit"]["sites"]["site-1"]
    for attack in ("loss", "entropy", "rmia", "dcr_pixel", "dcr_feature"):
        assert mine[attack]["auc"] == in_run[attack]["auc"], attack
    assert audit["sites"]["site-1"]["dp"] == record
    assert "Noise and sampling: secret" in (tmp_path / "a" / "audit.html").read_text()


def test_standalone_audit_refuses_a_tampered_release(inprocess_run, tmp_path):
    _, outcome = inprocess_run
    copy = tmp_path / "r"
    shutil.copytree(outcome.release_dir, copy)
    (copy / "student.safetensors").write_bytes(b"tampered")
    result = fedkr("audit", str(copy), "--data", "digits", "--sites", "3", "--partition", "iid")
    assert result.returncode == 2 and "student.safetensors HASH MISMATCH" in result.stderr
    assert "Traceback" not in result.stderr


def test_standalone_audit_rejects_malformed_release_files_and_its_own_folder(inprocess_run, tmp_path):
    _, outcome = inprocess_run
    copy = tmp_path / "r"
    shutil.copytree(outcome.release_dir, copy)
    same = fedkr("audit", str(copy), "--data", "digits", "--sites", "3", "--partition", "iid", "--out", str(copy))
    assert same.returncode == 2 and "must not be the release folder" in same.stderr
    (copy / "student_config.json").write_text("{}")
    import hashlib
    import json

    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["student_config.json"]["sha256"] = hashlib.sha256(b"{}").hexdigest()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    bad = fedkr("audit", str(copy), "--data", "digits", "--sites", "3", "--partition", "iid", "--out", str(tmp_path / "a"))
    assert bad.returncode == 2 and "do not load" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("labels, expected", [
    (np.array([[i % 2] for i in range(20)], dtype=object), "[train split, train_labels]: holds Python objects"),
    (np.zeros((20, 14), np.uint8), "[train split, train_labels]: 14 labels per image (multi-label"),
])
def test_npz_errors_name_split_and_key_on_one_line(tmp_path, labels, expected):
    path = tmp_path / "data.npz"
    np.savez(path, train_images=np.zeros((20, 28, 28), np.uint8), train_labels=labels)
    result = fedkr("simulate", "--data", str(path))
    assert result.returncode == 2 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len([line for line in result.stderr.splitlines() if line.strip()]) == 1
