"""What every `fedkr` command shares: the consoles, the one error format, logging set-up, the audit table.

The command modules (`cli.py`, `cli_deploy.py`, `cli_release.py`) import this module and never each
other, except that `cli.py` registers the other two's commands.
"""

from __future__ import annotations

import logging
import os
from typing import NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

console = Console(stderr=True)
out_console = Console()


def setup_logging(verbose: bool) -> None:
    """fedkr's own progress at INFO; other libraries only when they warn, unless --verbose."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s", datefmt="%H:%M:%S",
                        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)], force=True)
    logging.getLogger("fedkr").setLevel(logging.INFO)
    flwr_log = logging.getLogger("flwr")
    if not verbose:
        flwr_log.propagate = False  # Flower prints through its own handler; keep its DEBUG lines out of ours
        flwr_log.addFilter(lambda record: "deprecated" not in str(record.msg) and record.levelno >= logging.INFO)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `error: <message>` on one line to stderr and exit with `code` (2: bad input); brackets in the message print as they are."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True, markup=True)
    raise typer.Exit(code)


def print_audit_sites(sites: dict[str, dict]) -> None:
    """One table row per site and attack: AUC with its interval, TPR at 1% FPR, and the control run's AUC."""
    table = Table("site", "attack", "AUC [95% CI]", "TPR@1%FPR", "control AUC", "eps lower bound", "members v holdout")
    for sid, attacks in sites.items():
        if "error" in attacks:
            table.add_row(sid, "-", f"no audit: {attacks['error']}", "", "", "", "")
            continue
        for name, r in attacks.items():
            if not (isinstance(r, dict) and "auc" in r):
                continue
            ci = r.get("auc_ci") or [float("nan")] * 2
            control = r.get("control_auc")
            table.add_row(sid, name, f"{r['auc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]", f"{r['tpr_at_1pct_fpr']:.3f}",
                          "n/a" if control is None else f"{control:.3f}", f"{r.get('epsilon_lower_bound', 0.0):.2f}",
                          f"{r['num_members']} v {r['num_nonmembers']}")
        if isinstance(attacks.get("dp"), dict):
            table.add_row(sid, "DP-SGD", f"epsilon {attacks['dp'].get('epsilon', float('nan')):.2f}", "", "", "", "")
    out_console.print(table)
