"""Terminal and JSON rendering shared by CLI commands."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from billing.money import dec_str
from billing.rating.periods import local_dates
from billing.rating.types import RatedInvoice

# Not a terminal (CI logs, pipes): a wide fixed width so tables are not truncated.
console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


def print_json(data: Any, fast: bool = False) -> None:
    """``data`` as indented JSON. ``fast`` (a large report): through orjson's encoder, the same
    document (non-ASCII text as UTF-8 rather than ``\\u`` escapes); Python's where orjson
    cannot encode it (an integer past 64 bits)."""
    if fast:
        import orjson

        try:
            text = orjson.dumps(data, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:
            pass
        else:
            sys.stdout.write(text + "\n")
            return
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def invoice_table(inv: RatedInvoice, title: str | None = None, timezone: str = "UTC") -> Table:
    dates = local_dates(inv.period_start, inv.period_end, timezone)
    table = Table(title=escape(title or f"{inv.customer} — {inv.plan} v{inv.plan_version} — {dates}"),
                  title_justify="left")
    table.add_column("Description")
    table.add_column("Quantity", justify="right")
    table.add_column("Unit price", justify="right")
    table.add_column(f"Amount ({inv.currency})", justify="right")
    for line in inv.lines:
        table.add_row(escape(line.description), dec_str(line.quantity),
                      "" if line.unit_price is None else dec_str(line.unit_price), str(line.amount))
    table.add_section()
    table.add_row("[bold]Total[/bold]", "", "", f"[bold]{inv.total}[/bold]")
    return table
