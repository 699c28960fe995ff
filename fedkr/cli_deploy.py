"""`fedkr coordinator init|register-site|sites` and `fedkr site init|ledger`: keys, registry, ledger."""

from __future__ import annotations

import typer


def register(app: typer.Typer, coordinator_app: typer.Typer, site_app: typer.Typer) -> None:
    """Attach this module's commands to the `fedkr` command groups."""
