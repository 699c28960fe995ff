"""Hostile values in what fedkr reads and prints: a one-line error or the value shown as it is, never a traceback.

Every JSON document from outside passes one bounded loader (shared/json_input.py) and everything
printed passes the CLI's plain console (fedkr/cli_common.py). These tests drive the `fedkr` command
(typer's CliRunner, and one real process) on small but real release folders: numpy's .npz,
safetensors weights, a PIL image, and a manifest with the true SHA-256 of every file.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fedkr.shared.json_input import JSONInputError, Limits, parse_json, read_json_file
from helpers import one_line_error, run_fedkr
from PIL import Image
from safetensors.numpy import save_file

FILES = ("distilled.npz", "student.safetensors", "student_config.json", "metrics.json", "contact_sheet.png",
         "audit.json", "audit.html")
STUDENT = {"architecture": "CompactCNN", "in_channels": 1, "height": 8, "width": 8, "num_classes": 2, "channels": 32}
METRICS = {"run_id": "r1", "student_test_accuracy": 0.91,
           "audit": {"passed": True, "failures": [], "sites": {"site-0": {"loss": {
               "auc": 0.51, "auc_ci": [0.45, 0.57], "tpr_at_1pct_fpr": 0.01, "control_auc": None,
               "epsilon_lower_bound": 0.0, "num_members": 100, "num_nonmembers": 40}}}}}


def make_release(directory: Path, *, manifest: dict | str | None = None, metrics: dict | str = METRICS,
                 student_config: dict = STUDENT, classes: list = ["a", "b"]) -> Path:  # noqa: B006
    """A release folder as server/release.py lays it out; `manifest` as text replaces the manifest whole."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.savez_compressed(directory / "distilled.npz", images=rng.integers(0, 256, (4, 8, 8, 1), dtype=np.uint8),
                        soft_labels=np.full((4, 2), 0.5, np.float32), hard_labels=np.array([0, 1, 0, 1]),
                        class_names=np.array(["a", "b"]))
    save_file({"head.weight": np.zeros((2, 4), np.float32)}, str(directory / "student.safetensors"))
    (directory / "student_config.json").write_text(json.dumps(student_config))
    (directory / "metrics.json").write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
    Image.new("L", (8, 8)).save(directory / "contact_sheet.png")
    (directory / "audit.json").write_text(json.dumps({"schema": "fedkr.audit/1", "decision": {"passed": True}}))
    (directory / "audit.html").write_text("<html></html>")
    if isinstance(manifest, str):
        (directory / "manifest.json").write_text(manifest)
        return directory
    document = {"release": "r1", "created": "2025-01-01T00:00:00+0000", "fedkr_version": "0.1.0", "classes": classes,
                "ipc": 2, "audit": {"report": "audit.json", "passed": True},
                "files": {name: {"sha256": hashlib.sha256((directory / name).read_bytes()).hexdigest(),
                                 "bytes": (directory / name).stat().st_size} for name in FILES}}
    document.update(manifest or {})
    (directory / "manifest.json").write_text(json.dumps(document))
    return directory


DEEP = "[" * 100_000 + "]" * 100_000
LONG_NUMBER = '{"student_test_accuracy": ' + "9" * 4000 + "}"


@pytest.mark.parametrize("build, expected", [
    (lambda d: make_release(d, classes=[1, 2]), "is not of type 'string'"),
    (lambda d: make_release(d, manifest=DEEP), "nested more than"),
    (lambda d: make_release(d, metrics={**METRICS, "student_test_accuracy": "0.9"}),
     "student_test_accuracy: '0.9' is not of type"),
    (lambda d: make_release(d, metrics=LONG_NUMBER), "a number of 4000 characters"),
    (lambda d: make_release(d, metrics={**METRICS, "audit": {"passed": True, "sites": []}}),
     "audit.sites: [] is not of type 'object'"),
], ids=["integer-class-names", "deep-nesting", "string-accuracy", "4000-digit-accuracy", "sites-as-list"])
def test_inspect_gives_one_line_errors_for_hostile_releases(tmp_path, build, expected):
    one_line_error(run_fedkr("inspect", str(build(tmp_path / "release"))), expected)


def test_a_real_process_prints_one_line_not_a_traceback(tmp_path):
    release = make_release(tmp_path / "release", manifest=DEEP)
    result = subprocess.run([sys.executable, "-m", "fedkr", "inspect", str(release)], capture_output=True, text=True,
                            timeout=300)
    one_line_error(result, "nested more than")


def test_inspect_shows_markup_in_names_and_paths_as_text(tmp_path):
    names = ["[/]", "[link=https://example.org]x[/link]", ":warning: [bold]b"]
    release = make_release(tmp_path / "run[/]x" / "release", classes=names)
    result = run_fedkr("inspect", str(release))
    assert result.exit_code == 0, result.stderr
    assert f"release {release}" in result.stdout
    assert "classes (3): [/], [link=https://example.org]x[/link], :warning: [bold]b" in result.stdout
    assert "\x1b]8;" not in result.stdout, "a class name must not become a terminal hyperlink"


@pytest.mark.parametrize("build, expected", [
    (lambda d: make_release(d, student_config={**STUDENT, "channels": 0}), "channels: 0 is less than the minimum of 1"),
    (lambda d: make_release(d, manifest=DEEP), "nested more than"),
], ids=["zero-channels", "deep-manifest"])
def test_audit_gives_one_line_errors_for_hostile_releases(tmp_path, build, expected):
    result = run_fedkr("audit", str(build(tmp_path / "release")), "--data", "digits", "--out", str(tmp_path / "a"))
    one_line_error(result, expected)
    assert not (tmp_path / "a").exists()


def test_site_ledger_skips_a_line_holding_a_5000_digit_number(tmp_path):
    good = {"time": "2025-01-01T00:00:00+0000", "site": "site-0", "run": "r1", "round": 1, "kind": "shard",
            "bytes": 1234, "sha256": "ab" * 32, "recipient": "coordinator"}
    (tmp_path / "ledger.jsonl").write_text(json.dumps(good) + "\n" + '{"bytes": ' + "7" * 5000 + "}\n")
    result = run_fedkr("site", "ledger", "--state-dir", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert "1 item(s), 1,234 bytes in all; 1 unreadable line(s) skipped" in result.stdout


def test_error_messages_keep_their_brackets(tmp_path):
    folder = tmp_path / "scan[raw]"
    folder.mkdir()
    rng = np.random.default_rng(0)
    np.savez(folder / "blood.npz", train_images=rng.integers(0, 256, (6, 8, 8), dtype=np.uint8),
             train_labels=np.array([0, 1, 0, 1, 0, 1]), test_images=rng.integers(0, 256, (3, 8, 8), dtype=np.uint8),
             test_labels=np.array([0, 1]))
    result = run_fedkr("simulate", "--data", str(folder / "blood.npz"))
    one_line_error(result, f"{folder / 'blood.npz'} [test split]: 3 images but 2 labels")


# --- the loader itself ----------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("[" * 5000 + "]" * 5000, "nested more than 32 levels deep"),
    ('{"n": ' + "1" * 5000 + "}", "a number of 5000 characters"),
    ('{"n": 1.' + "5" * 100 + "}", "a number of 102 characters"),
    ('{"a": 1, "a": 2}', "the key 'a' appears twice"),
    ("[1, 2", "not valid JSON"),
    (b"\xff\xfe", "not UTF-8"),
    ('"' + "x" * 20_000 + '"', "more than the 16384 allowed"),
])
def test_loader_refuses_what_would_cost_too_much(text, expected):
    with pytest.raises(JSONInputError, match=expected) as caught:
        parse_json(text, where="doc", limits=Limits(max_bytes=16_384))
    assert str(caught.value).startswith("doc: ") and "\n" not in str(caught.value)


def test_loader_checks_the_schema_and_names_the_place():
    schema = {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string"}}}}
    assert parse_json('{"a": ["x", "[y]"]}', where="doc", schema=schema) == {"a": ["x", "[y]"]}
    with pytest.raises(JSONInputError, match=r"^doc: a\[1\]: 2 is not of type 'string'$"):
        parse_json('{"a": ["x", 2]}', where="doc", schema=schema)
    assert parse_json('{"s": "[[[[{{{{"}', where="doc", limits=Limits(max_depth=1)) == {"s": "[[[[{{{{"}


def test_loader_never_opens_a_fifo_or_reads_past_its_limit(tmp_path):
    import os

    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(JSONInputError, match="not a regular file"):
        read_json_file(tmp_path / "fifo")
    (tmp_path / "big.json").write_text("[" + "1," * 100 + "1]")
    with pytest.raises(JSONInputError, match="more than the 64 allowed"):
        read_json_file(tmp_path / "big.json", limits=Limits(max_bytes=64))
    with pytest.raises(JSONInputError, match="no such file"):
        read_json_file(tmp_path / "missing.json")
