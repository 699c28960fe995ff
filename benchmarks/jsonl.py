"""A screen's result rows: each printed and appended to its JSON-lines file as one line of strict JSON."""

from __future__ import annotations

from typing import Any, TextIO

from fedkr.shared.json_output import dumps


def emit(row: dict[str, Any], sink: TextIO | None = None) -> str:
    """Print `row` as one line of strict JSON (RFC 8259: a NaN or infinite figure becomes null,
    `fedkr.shared.json_output`) and, with `sink`, append the line to it and flush, so that a screen
    cut off later keeps every row it printed. Returns the line. Raises TypeError for a value JSON
    cannot encode."""
    line = dumps(row, indent=None)
    print(line, flush=True)
    if sink is not None:
        sink.write(line + "\n")
        sink.flush()
    return line
