"""The site's ledger: one JSON line per item that left the site, each line chained to the one before.

Every line holds `prev_sha256`, the SHA-256 (hex) of the previous line's exact bytes (without its
newline); the first line holds `GENESIS`, 64 zeros. `verify_ledger` recomputes the chain: a line
that was changed, removed, inserted or moved after later lines were written breaks it where that
happened. What the chain does not show: lines cut from the end, or a ledger rewritten from the
changed line onwards with fresh hashes by someone who can write the file. Against those, keep the
head hash `verify_ledger` reports somewhere the site host cannot rewrite (deploy/site.md, section 7).

Lines are read through the bounded JSON loader (`shared/json_input.py`) and checked against
`ENTRY_SCHEMA`, so a hostile line is reported, never a crash.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fedkr.shared.json_input import JSONInputError, Limits, parse_json

#: `prev_sha256` of the first line.
GENESIS = "0" * 64
#: What one ledger line may cost to read.
LINE_LIMITS = Limits(max_bytes=16 * 1024, max_depth=2)
_SHORT = {"type": "string", "maxLength": 200}
_COUNT = {"type": "integer", "minimum": 0}
_HEX = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
#: JSON Schema of one ledger line (`OutboundGate` writes them); `prev_sha256` is absent only from lines
#: written before the ledger was chained, which `verify_ledger` reports.
ENTRY_SCHEMA = {
    "type": "object",
    "required": ["time", "run", "round", "kind", "bytes", "sha256", "recipient"],
    "properties": {"time": _SHORT, "site": _SHORT, "run": _SHORT, "round": {"type": "integer"}, "kind": _SHORT,
                   "bytes": _COUNT, "images": _COUNT, "sha256": _HEX, "recipient": _SHORT, "sealed_to": _SHORT,
                   "signed_by": _SHORT, "prev_sha256": _HEX},
}
_TAIL_BLOCK = 64 * 1024


def line_hash(line: bytes) -> str:
    """SHA-256 (hex) of one ledger line's bytes, without its newline: what the next line's `prev_sha256` holds."""
    return hashlib.sha256(line).hexdigest()


def append_entry(path: Path, entry: dict) -> str:
    """Append `entry` as one line chained to the last one; return the new line's hash (the ledger's head).

    The file is locked (`fcntl.flock`, exclusive) from reading its last line to writing the new one,
    so two writers never chain to the same line; the line is flushed to disk before returning. A
    last line cut short by a crash is ended with a newline first and chained to as it stands
    (`verify_ledger` reports it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        last, complete = _last_line(fh)
        line = json.dumps({**entry, "prev_sha256": GENESIS if last is None else line_hash(last)}).encode("utf-8")
        fh.write((b"" if complete else b"\n") + line + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    return line_hash(line)


def _last_line(fh) -> tuple[bytes | None, bool]:  # type: ignore[no-untyped-def]
    """The file's last line (None when empty) and whether the file ends with a newline."""
    end = fh.seek(0, os.SEEK_END)
    if end == 0:
        return None, True
    fh.seek(end - 1)
    complete = fh.read(1) == b"\n"
    stop = end - 1 if complete else end  # the last line's bytes end here
    start, tail = stop, b""
    while start > 0:
        start = max(0, start - _TAIL_BLOCK)
        fh.seek(start)
        tail = fh.read(stop - start)
        cut = tail.rfind(b"\n")
        if cut >= 0:
            return tail[cut + 1:], complete
    return tail, complete


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


@dataclass
class LedgerCheck:
    """What `verify_ledger` found: the lines read, the head hash (of the last line), every break in the chain."""

    lines: int = 0
    head: str = GENESIS
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_ledger(path: Path) -> LedgerCheck:
    """Recompute the ledger's hash chain line by line (module docstring: what it shows and what it cannot).

    A problem is reported, with its line number, for a line that is not a ledger entry, a line whose
    `prev_sha256` is not the hash of the line before it (or, for the first, not `GENESIS`), and a last
    line without its newline. Raises `OSError` only if the file cannot be read.
    """
    check = LedgerCheck()
    prev = GENESIS
    for number, line, ended in _lines(path):
        check.lines = number
        try:
            entry = parse_entry(line, f"line {number}")
        except JSONInputError as exc:
            check.problems.append(f"{exc}: not a ledger entry")
        else:
            if entry.get("prev_sha256") is None:
                check.problems.append(f"line {number}: not chained (no prev_sha256)")
            elif entry["prev_sha256"] != prev:
                what = "64 zeros, the start of the chain" if number == 1 else f"the hash of line {number - 1}"
                check.problems.append(f"line {number}: prev_sha256 is not {what}: a line up to here was changed, "
                                      f"removed, inserted or moved")
        if not ended:
            check.problems.append(f"line {number}: cut short (no newline at the end of the file)")
        prev = line_hash(line)
    check.head = prev
    return check
