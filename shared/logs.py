"""Logging for processes fedkr does not start itself (Flower's app processes and Ray workers)."""

from __future__ import annotations

import logging


def ensure_fedkr_logging() -> None:
    """Show fedkr's INFO progress where nothing has set logging up; leave a configured process alone."""
    fedkr_log = logging.getLogger("fedkr")
    if not logging.getLogger().handlers and not fedkr_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        fedkr_log.addHandler(handler)
        fedkr_log.setLevel(logging.INFO)
