"""Comma-separated lists on a benchmark's command line (`--seeds 0,1,2`, `--lr 1e-3,2e-3`)."""

from __future__ import annotations

import argparse
import math


def parse_list(text: str, kind: type, name: str, parser: argparse.ArgumentParser, *, minimum: float = 0,
               inclusive: bool = False) -> list:
    """`text`, comma-separated, as a list of `kind` (int or float), each finite and above `minimum` (at least
    `minimum` when `inclusive`), in the order given with repeats dropped (a value given twice runs once).

    Exits through `parser.error` with one line naming `name` when an item is not a `kind`, not finite, out of
    range, or the list is empty.
    """
    try:
        values = [kind(item) for item in text.split(",") if item.strip()]
    except ValueError:
        parser.error(f"{name} must be {kind.__name__}s, comma-separated, got {text!r}")
    bound = f"at least {minimum:g}" if inclusive else f"above {minimum:g}"
    in_range = (lambda v: v >= minimum) if inclusive else (lambda v: v > minimum)
    if not values or not all(math.isfinite(v) and in_range(v) for v in values):
        parser.error(f"{name} must be one or more finite values {bound}, got {text!r}")
    return list(dict.fromkeys(values))
