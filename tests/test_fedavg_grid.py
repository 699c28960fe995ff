"""benchmarks/fedavg_grid.py: its lists and its resumable output (the FedAvg runs themselves are test_bench_fedavg's)."""

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from arglists import parse_list  # noqa: E402
from fedavg_grid import RUN_KEYS, written_runs  # noqa: E402


def _parse(text, kind=float, **bounds):
    return parse_list(text, kind, "--lr", argparse.ArgumentParser(prog="grid"), **bounds)


def test_a_value_given_twice_runs_once_in_the_order_given():
    assert _parse("2e-3,1e-3,2e-3") == [2e-3, 1e-3]
    assert _parse("0,1,0", int, inclusive=True) == [0, 1]


@pytest.mark.parametrize("text", ["nan", "1e-3,inf", "0", "-1e-3", "", "two"])
def test_a_list_out_of_range_or_not_finite_exits_with_one_line(text, capsys):
    with pytest.raises(SystemExit) as stop:
        _parse(text)
    assert stop.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("grid: error: --lr must be")


def _row(lr):
    return {**{key: 0 for key in RUN_KEYS}, "lr": lr, "test_accuracy": 0.5}


def test_a_row_cut_off_while_being_written_is_dropped_and_runs_again(tmp_path, capsys):
    out = tmp_path / "grid.jsonl"
    whole = json.dumps(_row(1e-3)) + "\n"
    out.write_text(whole + json.dumps(_row(2e-3))[:25])
    done = written_runs(out)
    assert [key[RUN_KEYS.index("lr")] for key in done] == [1e-3]
    assert out.read_text() == whole
    assert "cut off" in capsys.readouterr().err


def test_a_file_that_is_not_this_scripts_exits_with_one_line(tmp_path):
    out = tmp_path / "grid.jsonl"
    out.write_text('{"other": 1}\n' + json.dumps(_row(1e-3)) + "\n")
    with pytest.raises(SystemExit, match="line 1: not a row of this script"):
        written_runs(out)
