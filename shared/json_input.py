"""JSON from outside the process, read one way: bounded first, then checked against a JSON Schema.

Every JSON document fedkr reads from a file or a peer (a release's manifest, metrics and student
config, a site or coordinator file, the site registry, a ledger line, a message's JSON fields,
`flwr`'s output) passes `parse_json` or `read_json_file`. Before anything is built from it:

- its size is checked (`Limits.max_bytes`, before reading the rest of a file);
- its nesting depth is measured without recursion (`Limits.max_depth`), so a document of 100,000
  open brackets is refused instead of exhausting Python's stack;
- every number literal is checked for length (`Limits.max_number_chars`) before it is converted,
  so a 5,000-digit integer is refused instead of meeting Python's int-conversion limit;
- an object holding the same key twice is refused (parsers disagree on which one wins);
- the value is then checked against a JSON Schema (Draft 2020-12, with the `jsonschema`
  library), so the code that reads it finds the types it expects.

Whatever is wrong becomes one `JSONInputError` whose message names the source, the place in the
document and the first problem on one line. JSON itself is RFC 8259 as Python's `json` module reads
it (NaN and Infinity included, because Python writes them).
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: A schema: a JSON Schema (Draft 2020-12) document as a Python mapping.
Schema = Mapping[str, Any]

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
_MESSAGE_CHARS = 200


class JSONInputError(ValueError):
    """A JSON document that is too large, too deep, malformed, or not of its schema; one line says where and why.

    `where` names the source, `detail` the problem; `str()` is `"<where>: <detail>"`.
    """

    def __init__(self, where: str, detail: str) -> None:
        super().__init__(f"{where}: {detail}")
        self.where, self.detail = where, detail


@dataclass(frozen=True)
class Limits:
    """What one document may cost: bytes, nesting depth, characters of one number literal."""

    max_bytes: int = 4 * 2**20
    max_depth: int = 32
    #: A float64 needs at most 17 significant digits and an exponent; an int64 at most 20 characters.
    max_number_chars: int = 40


DEFAULT_LIMITS = Limits()


class _NumberTooLong(Exception):
    pass


class _RepeatedKey(Exception):
    pass


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 3] + "..."


def _nesting_depth(text: str, limit: int) -> int:
    """The deepest nesting of arrays and objects in `text`, counted without recursion; stops past `limit`."""
    depth = deepest = 0
    for bracket in _BRACKET.finditer(_STRING.sub('""', text)):
        depth += 1 if bracket.group() in "[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest


def _number(convert: type, limit: int):  # type: ignore[no-untyped-def]
    def parse(literal: str) -> object:
        if len(literal) > limit:
            raise _NumberTooLong(len(literal))
        return convert(literal)

    return parse


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise _RepeatedKey(twice)
    return result


def _place(path: Any) -> str:
    """A schema error's place in the document, as `audit.sites["a b"][0]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{_one_line(repr(part))}]"
    return out


def check_schema(value: object, schema: Schema, where: str) -> None:
    """Raise `JSONInputError` naming the first place where `value` does not follow `schema` (Draft 2020-12)."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(schema).iter_errors(value))
    if error is not None:
        place = _place(error.absolute_path)
        raise JSONInputError(where, f"{place + ': ' if place else ''}{_one_line(error.message)}")


def parse_json(data: bytes | str, *, where: str, schema: Schema | None = None, limits: Limits = DEFAULT_LIMITS) -> Any:
    """The value of the JSON document `data` (UTF-8 bytes or text), checked against `schema` when given.

    `where` names the source in messages (a path, "manifest.json", "a ledger line").

    Raises:
        JSONInputError: larger than `limits.max_bytes` (bytes of UTF-8), not UTF-8, nested deeper
            than `limits.max_depth`, a number literal longer than `limits.max_number_chars`, a
            key repeated in one object, not JSON, or not of `schema`.
    """
    size = len(data) if isinstance(data, (bytes, bytearray)) else len(data.encode("utf-8", "surrogatepass"))
    if size > limits.max_bytes:
        raise JSONInputError(where, f"{size} bytes, more than the {limits.max_bytes} allowed")
    if isinstance(data, (bytes, bytearray)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONInputError(where, f"not UTF-8 text (byte {exc.start})") from None
    else:
        text = data
    if _nesting_depth(text, limits.max_depth) > limits.max_depth:
        raise JSONInputError(where, f"nested more than {limits.max_depth} levels deep")
    try:
        value = json.loads(text, parse_int=_number(int, limits.max_number_chars),
                           parse_float=_number(float, limits.max_number_chars), object_pairs_hook=_unique_keys)
    except _NumberTooLong as exc:
        raise JSONInputError(where, f"a number of {exc.args[0]} characters (at most {limits.max_number_chars})") from None
    except _RepeatedKey as exc:
        raise JSONInputError(where, f"the key {_one_line(repr(exc.args[0]))} appears twice in one object") from None
    except json.JSONDecodeError as exc:
        raise JSONInputError(where, f"not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # depth is bounded above; kept so no parser error escapes as another type
        raise JSONInputError(where, f"not valid JSON ({_one_line(str(exc))})") from None
    if schema is not None:
        check_schema(value, schema, where)
    return value


def read_json_file(path: Path | str, *, schema: Schema | None = None, limits: Limits = DEFAULT_LIMITS,
                   where: str | None = None) -> Any:
    """`parse_json` of a regular file's bytes, reading at most `limits.max_bytes + 1` of them.

    Raises:
        JSONInputError: `path` is missing, not a regular file (a FIFO or device is never read),
            unreadable, or its content fails `parse_json`; the message names `where` (default: the path).
    """
    path = Path(path)
    where = str(path) if where is None else where
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO swapped in must not block the open
    except FileNotFoundError:
        raise JSONInputError(where, "no such file") from None
    except OSError as exc:
        raise JSONInputError(where, f"cannot read it ({exc.strerror or exc.__class__.__name__})") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise JSONInputError(where, "not a regular file")
        if info.st_size > limits.max_bytes:
            raise JSONInputError(where, f"{info.st_size} bytes, more than the {limits.max_bytes} allowed")
        try:
            data = fh.read(limits.max_bytes + 1)
        except OSError as exc:
            raise JSONInputError(where, f"cannot read it ({exc.strerror or exc.__class__.__name__})") from None
    return parse_json(data, where=where, schema=schema, limits=limits)
