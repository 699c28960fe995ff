"""The site's ledger: one JSON line per item that left the site.

Lines are read through the bounded JSON loader (`shared/json_input.py`) and checked against
`ENTRY_SCHEMA`, so a hostile line is reported, never a crash.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from fedkr.shared.json_input import JSONInputError, Limits, parse_json

#: What one ledger line may cost to read.
LINE_LIMITS = Limits(max_bytes=16 * 1024, max_depth=2)
_SHORT = {"type": "string", "maxLength": 200}
_COUNT = {"type": "integer", "minimum": 0}
_HEX = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
#: JSON Schema of one ledger line (`OutboundGate` writes them).
ENTRY_SCHEMA = {
    "type": "object",
    "required": ["time", "run", "round", "kind", "bytes", "sha256", "recipient"],
    "properties": {"time": _SHORT, "site": _SHORT, "run": _SHORT, "round": {"type": "integer"}, "kind": _SHORT,
                   "bytes": _COUNT, "images": _COUNT, "sha256": _HEX, "recipient": _SHORT, "sealed_to": _SHORT,
                   "signed_by": _SHORT},
}


def _lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(line number from 1, its bytes without the newline, whether it ended with one)."""
    with Path(path).open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            ended = raw.endswith(b"\n")
            yield number, raw[:-1] if ended else raw, ended


def parse_entry(line: bytes, where: str) -> dict:
    """One ledger line as a dict of `ENTRY_SCHEMA`; `JSONInputError` names `where` and the problem."""
    return parse_json(line, where=where, schema=ENTRY_SCHEMA, limits=LINE_LIMITS)


def read_ledger(path: Path) -> tuple[list[dict], int]:
    """The ledger's entries in order, and how many lines could not be read (a torn last line, a hostile one)."""
    entries: list[dict] = []
    skipped = 0
    for number, line, _ in _lines(path):
        try:
            entries.append(parse_entry(line, f"line {number}"))
        except JSONInputError:
            skipped += 1
    return entries, skipped
