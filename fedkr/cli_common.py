"""What every `fedkr` command shares: the consoles, the one error format, logging set-up, the audit table.

The command modules (`cli.py`, `cli_deploy.py`, `cli_release.py`) import this module and never each
other, except that `cli.py` registers the other two's commands.

Everything fedkr prints goes through `PlainConsole`: a string is printed as the text it is. Rich
markup (`[/]`, `[link=...]`), emoji codes and control characters in a class name, a path or an
error message are shown, never interpreted; styling is applied only to fedkr's own fixed words.
"""

from __future__ import annotations

import logging
import os
import unicodedata
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.status import Status
from rich.table import Table
from rich.text import Text

#: Unicode format characters that reorder text on a terminal (bidirectional overrides and isolates).
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


def printable(text: str, *, newlines: bool = True) -> str:
    """`text` with every control, surrogate and bidirectional-override character written as an escape (`\\x1b`).

    Newlines stay when `newlines` (a table, a multi-line report); tabs always stay.
    """
    def shown(ch: str) -> str:
        if ch == "\t" or (ch == "\n" and newlines):
            return ch
        if ch in _BIDI or unicodedata.category(ch) in ("Cc", "Cs"):
            return ch.encode("unicode_escape").decode("ascii")
        return ch

    return text if text.isprintable() else "".join(map(shown, text))


class PlainConsole(Console):
    """A rich `Console` that prints strings as they are: no markup, no emoji codes, no highlighting.

    Every string it renders (printed, a table cell or title) passes `printable` first. Styled
    output uses `rich.text.Text` objects or `markup=True` on fedkr's own fixed strings.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, **kwargs)

    def render_str(self, text: str, *args: Any, **kwargs: Any) -> Text:
        return super().render_str(printable(text), *args, **kwargs)

    def status(self, status: Any, *args: Any, **kwargs: Any) -> Status:  # type: ignore[override]
        """A spinner whose message is plain text (rich parses a string status as markup otherwise)."""
        return super().status(self.render_str(status) if isinstance(status, str) else status, *args, **kwargs)


class _PlainRichHandler(RichHandler):
    """Rich's log handler, with every message shown through `printable` (a peer's reason may hold anything)."""

    def render_message(self, record: logging.LogRecord, message: str) -> Any:
        return super().render_message(record, printable(message))


console = PlainConsole(stderr=True)
out_console = PlainConsole(soft_wrap=True)  # a line with a long path stays one line; the terminal wraps it


def wide_console(width: int) -> PlainConsole:
    """A `PlainConsole` on stdout at least `width` columns wide, for wide tables."""
    return PlainConsole(width=max(out_console.width, width))


def setup_logging(verbose: bool) -> None:
    """fedkr's own progress at INFO; other libraries only when they warn, unless --verbose."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s", datefmt="%H:%M:%S",
                        handlers=[_PlainRichHandler(console=console, show_path=False, rich_tracebacks=False)], force=True)
    logging.getLogger("fedkr").setLevel(logging.INFO)
    flwr_log = logging.getLogger("flwr")
    if not verbose:
        flwr_log.propagate = False  # Flower prints through its own handler; keep its DEBUG lines out of ours
        flwr_log.addFilter(lambda record: "deprecated" not in str(record.msg) and record.levelno >= logging.INFO)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `error: <message>` on one line to stderr and exit with `code` (2: bad input).

    `message` is plain text: brackets, paths like `scan[raw]` and newlines in it are shown as they are
    (newlines and control characters escaped), never read as markup.
    """
    console.print(Text.assemble(("error:", "bold red"), " ", printable(str(message), newlines=False)), soft_wrap=True)
    raise typer.Exit(code)


def left_out_lines(left_out: dict[str, dict]) -> list[str]:
    """One line per site that left the run (metrics' `sites_left_out`): its name, the stage and the reason."""
    return [f"{sid} left at {entry.get('stage', '?')}: {entry.get('reason', 'no reason given')}" for sid, entry in left_out.items()]


def print_left_out(left_out: dict[str, dict]) -> None:
    """The sites that left the run, under the audit table; nothing when every site stayed."""
    lines = left_out_lines(left_out)
    if lines:
        out_console.print(f"  [bold yellow]{len(lines)} site(s) left the run[/] (not in the release, not audited):")
        for line in lines:
            out_console.print(f"    - {line}", highlight=False, markup=False)


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
            table.add_row(sid, "DP", f"epsilon {attacks['dp'].get('epsilon', float('nan')):.2f}", "", "", "", "")
    out_console.print(table)
