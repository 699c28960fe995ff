"""JSON that every parser reads: non-finite numbers become null.

Python's `json.dumps` writes NaN and Infinity by default, which RFC 8259 forbids and which strict
parsers (a browser's `JSON.parse`, `jq`, most JSON libraries outside Python) refuse. The reports a
privacy officer or a researcher opens (audit.json, metrics.json, refusal.json) hold figures that
are undefined in edge cases (an interval over a holdout of one class), so they are written here:
every non-finite float becomes null, which `fedkr.shared.audit_view` reads as "not available" and
`FitReport.from_dict` as NaN again. The standard library has no option for this (`allow_nan=False` raises instead).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def finite_json(value: Any) -> Any:
    """`value` with every non-finite float (NaN, +-inf; Python or numpy) replaced by None, numpy scalars
    and arrays turned into Python numbers and lists, tuples into lists; dicts and lists are copied,
    anything else is returned as is. Raises nothing."""
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(item) for item in value]
    if isinstance(value, np.ndarray):
        return finite_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any, *, indent: int | None = 2, default: Any = None) -> str:
    """`json.dumps(finite_json(value), allow_nan=False)`: strict RFC 8259 JSON text.

    `default` as `json.dumps`' (called for objects JSON cannot encode; `str` keeps paths and the
    like readable). Raises TypeError for an object JSON cannot encode when `default` is None.
    """
    return json.dumps(finite_json(value), indent=indent, default=default, allow_nan=False)
